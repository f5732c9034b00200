//! The conformance suite against [`SqliteStore`] (file, in-memory, and through `open_store`), and
//! SQLite-specific behaviour: persistence across reopen, schema versioning, content-addressed large values,
//! group commit under concurrency, several stores on one file, and surviving a SIGKILLed writer process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flujo_core::journal::GENESIS_HASH;
use flujo_core::{
    verify_chain, BlobStore, JournalRecord, JournalStore, PatchOp, RunFilter, RunStatus, RunStore, RunUpdate, Store,
    StoreError,
};
use flujo_store::conformance::{self, fresh_run, sample_record, sample_run, sealed_chain};
use flujo_store::sqlite::{INLINE_VALUE_LIMIT, SCHEMA_VERSION};
use flujo_store::{open_store, Durability, SqliteOptions, SqliteStore};
use serde_json::{json, Value};
use tempfile::TempDir;

fn options(durability: Durability) -> SqliteOptions {
    SqliteOptions { durability }
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).unwrap()
}

/// A factory of fresh database files in one temporary directory.
struct Files {
    dir: TempDir,
    next: AtomicUsize,
}

impl Files {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), next: AtomicUsize::new(0) }
    }
    fn next(&self) -> PathBuf {
        self.dir.path().join(format!("check-{}.db", self.next.fetch_add(1, Ordering::Relaxed)))
    }
}

/// `n` sealed records of `run_id` whose outputs and patches vary; every third carries `big` (when given) as
/// its output and in its patch.
fn chain_with(run_id: &str, n: u64, big: Option<&Value>) -> Vec<JournalRecord> {
    chain_iter(run_id.to_owned(), big.cloned()).take(n as usize).collect()
}

/// The endless form of [`chain_with`].
fn chain_iter(run_id: String, big: Option<Value>) -> impl Iterator<Item = JournalRecord> {
    let big = big.map(Arc::new);
    let mut prev = GENESIS_HASH.to_owned();
    (0..).map(move |seq| {
        let mut r = sample_record(&run_id, seq);
        if let Some(big) = big.as_ref().filter(|_| seq % 3 == 0) {
            r.output = Arc::clone(big);
            r.patch.push(PatchOp::Set { path: vec!["doc".to_owned()], value: Arc::clone(big) });
        }
        r.seal(&prev);
        prev.clone_from(&r.hash);
        r
    })
}

/// A JSON value of about `bytes` bytes.
fn big_value(bytes: usize, tag: &str) -> Value {
    json!({"tag": tag, "text": "x".repeat(bytes), "nested": {"n": [1, 2.5, -3], "s": "é ✓"}})
}

// ---------------------------------------------------------------------------------------------------------
// Conformance.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_store_passes_the_conformance_suite() {
    let files = Files::new();
    let report = conformance::run_all_async(|| {
        let path = files.next();
        async move { Arc::new(SqliteStore::open_async(path, SqliteOptions::default()).await.unwrap()) as Arc<dyn Store> }
    })
    .await;
    report.assert_ok();
    assert_eq!(report.passed.len(), conformance::checks().len());
    assert!(report.store.starts_with("sqlite:////"), "{}", report.store);
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_strict_store_passes_on_a_current_thread_runtime() {
    let files = Files::new();
    conformance::run_all(|| Arc::new(SqliteStore::open(files.next(), options(Durability::Strict)).unwrap()) as _)
        .await
        .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_store_passes_the_conformance_suite() {
    let report =
        conformance::run_all(|| Arc::new(SqliteStore::open_in_memory(SqliteOptions::default()).unwrap()) as _).await;
    report.assert_ok();
    assert_eq!(report.store, "sqlite://:memory:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_store_sqlite_uri_passes_the_conformance_suite() {
    let files = Files::new();
    let report = conformance::run_all(|| open_store(&format!("sqlite:///{}", files.next().display())).unwrap()).await;
    report.assert_ok();
    assert!(report.store.starts_with("sqlite:///"));
}

// ---------------------------------------------------------------------------------------------------------
// Persistence and schema.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let big = big_value(64 * 1024, "reopen");
    let chain = chain_with("r1", 12, Some(&big));
    let run = sample_run("r1");
    let update = RunUpdate {
        run_id: "r1".into(),
        expected: vec![RunStatus::Running],
        status: RunStatus::Paused,
        pending: run.pending.clone(),
        output: Some(json!({"partial": true})),
        error: None,
        generation: 3,
        total_cost_usd: 1.25,
        total_tokens: 77,
        updated_at_ms: run.updated_at_ms + 10,
        owner: None,
        lease_expires_at_ms: None,
        expected_owner: None,
        journal_head: None,
    };
    let blob = {
        let store = open(&path);
        store.create_run(&run).await.unwrap();
        store.create_run(&fresh_run("r2", "other", RunStatus::Completed, 5)).await.unwrap();
        for r in &chain {
            store.append(r).await.unwrap();
        }
        store.update_run(&update).await.unwrap();
        store.put_blob(b"raw bytes").await.unwrap()
    };

    let store = open(&path);
    let got = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!((got.status, got.generation, got.total_tokens), (RunStatus::Paused, 3, 77));
    assert_eq!((got.input, got.definition, got.initial_context), (run.input, run.definition, run.initial_context));
    let loaded = store.load_journal("r1").await.unwrap();
    assert_eq!(loaded, chain);
    verify_chain(&loaded).unwrap();
    assert_eq!(store.get_blob(&blob).await.unwrap(), Some(b"raw bytes".to_vec()));
    let ids: Vec<String> =
        store.list_runs(&RunFilter::default()).await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(ids, ["r1", "r2"]);
    // The journal goes on where it stopped.
    let mut next = sample_record("r1", 12);
    next.seal(&chain[11].hash);
    store.append(&next).await.unwrap();
    assert!(matches!(store.append(&next).await, Err(StoreError::Conflict { .. })));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.runs, stats.journal_records, stats.schema_version), (2, 13, SCHEMA_VERSION));
    assert_eq!((stats.journal_mode.as_str(), stats.synchronous), ("wal", 1));
}

/// WAL checkpoints run on a thread of their own: a long run's commits ask for one every 1000 writes, the
/// checkpointer copies the WAL's pages into the database file (which grows), and the writer never waits
/// for it; everything committed reads back after the store is reopened.
#[tokio::test]
async fn checkpoints_run_in_the_background_and_lose_nothing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("ckpt.db");
    let records = sealed_chain("long", 2500);
    {
        let store = open(&path);
        store.create_run(&sample_run("long")).await.unwrap();
        let db_size_before = std::fs::metadata(&path).unwrap().len();
        for r in &records {
            store.append(r).await.unwrap();
        }
        // The checkpointer answers no one: wait (bounded) for it to have done its work.
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.group_commit_stats().checkpoints == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = store.group_commit_stats();
        assert!(stats.checkpoints >= 1, "no background checkpoint after 2501 writes: {stats:?}");
        assert!(stats.transactions >= 2, "{stats:?}");
        let db_size_after = std::fs::metadata(&path).unwrap().len();
        assert!(
            db_size_after > db_size_before,
            "the checkpoint copied pages into the file: {db_size_before} → {db_size_after}"
        );
    }
    let store = open(&path);
    assert_eq!(store.load_journal("long").await.unwrap(), records);
    // A short-lived store never starts the thread.
    assert_eq!(store.group_commit_stats().checkpoints, 0);
}

/// A WAL a previous process left large (it exited during a long busy stretch, before any checkpoint caught
/// up) is checkpointed by the next store that opens the file: its pages reach the database file at once,
/// instead of being read again by every later process to recover the WAL index.
#[tokio::test]
async fn a_large_wal_left_behind_is_checkpointed_when_the_file_is_opened() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("big-wal.db");
    drop(open(&path));
    let wal = dir.path().join("big-wal.db-wal");
    // Another process's writes: 6 MB in the WAL, never checkpointed, the connection never closed.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE filler (b BLOB);").unwrap();
    for _ in 0..1500 {
        other.execute("INSERT INTO filler VALUES (zeroblob(4000))", []).unwrap();
    }
    std::mem::forget(other);
    assert!(std::fs::metadata(&wal).unwrap().len() > 6 << 20);
    let db_before = std::fs::metadata(&path).unwrap().len();
    let store = open(&path);
    let db_after = std::fs::metadata(&path).unwrap().len();
    assert!(db_after > db_before + (5 << 20), "the WAL's pages were copied: {db_before} → {db_after}");
    store.create_run(&sample_run("after")).await.unwrap();
    assert!(store.get_run("after").await.unwrap().is_some());
}

/// A definition is stored as its text under its content hash: the text read back is checked against it, so
/// a blob altered in the file fails the run's read with `Corrupt` naming the run, instead of rebuilding
/// another pipeline than the one the run started with.
#[tokio::test]
async fn a_definition_blob_altered_in_the_file_is_reported_corrupt() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("def.db");
    let run = sample_run("tampered");
    let definition = run.definition.clone().expect("the sample run has a definition");
    {
        let store = open(&path);
        store.create_run(&run).await.unwrap();
        assert_eq!(store.get_run("tampered").await.unwrap().unwrap().definition, Some(definition.clone()));
    }
    let altered = definition.json().replacen("demo", "omed", 1);
    assert_ne!(altered, definition.json());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n = conn
        .execute(
            "UPDATE blobs SET bytes = ?1 WHERE hash = ?2",
            rusqlite::params![altered.as_bytes(), definition.hash()],
        )
        .unwrap();
    assert_eq!(n, 1, "the definition is a blob addressed by its hash");
    drop(conn);
    let err = open(&path).get_run("tampered").await.unwrap_err();
    let StoreError::Corrupt(message) = &err else { panic!("expected Corrupt, got {err:?}") };
    assert!(message.contains("run 'tampered'") && message.contains(definition.hash()), "{message}");
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    {
        let store = open(&path);
        store.create_run(&fresh_run("r", "demo", RunStatus::Running, 1)).await.unwrap();
    }
    let newer = SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&path).unwrap().execute_batch(&format!("PRAGMA user_version = {newer}")).unwrap();
    let expected =
        format!("database schema version {newer} is newer than this flujo ({SCHEMA_VERSION}); upgrade flujo");
    match SqliteStore::open(&path, SqliteOptions::default()) {
        Err(StoreError::Unavailable(m)) => assert_eq!(m, expected),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match open_store(&format!("sqlite:///{}", path.display())) {
        Err(e) => assert!(e.to_string().contains(&expected), "{e}"),
        Ok(s) => panic!("opened {}", s.describe()),
    }
}

#[tokio::test]
async fn strict_durability_is_full_synchronous_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("strict.db"), options(Durability::Strict)).unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.journal_mode.as_str(), stats.synchronous), ("wal", 2));
    assert_eq!(store.options().durability, Durability::Strict);
    assert!(format!("{store:?}").contains("sqlite:////"));
}

// ---------------------------------------------------------------------------------------------------------
// Content-addressed large values.

#[tokio::test]
async fn a_large_value_is_stored_once_and_per_step_bytes_do_not_grow_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("big.db"));
    let mib = big_value(1024 * 1024, "mib");
    for id in ["a", "b"] {
        store.create_run(&fresh_run(id, "demo", RunStatus::Running, 0)).await.unwrap();
    }

    // Two records with the same 1 MiB output (in two runs): one blob row.
    let mut first = sample_record("a", 0);
    first.output = Arc::new(mib.clone());
    first.seal(GENESIS_HASH);
    let before = store.bytes_written();
    store.append(&first).await.unwrap();
    let first_cost = store.bytes_written() - before;
    assert!(first_cost > 1024 * 1024, "the first copy is written: {first_cost}");

    let mut second = sample_record("b", 0);
    second.output = Arc::new(mib.clone());
    second.seal(GENESIS_HASH);
    let before = store.bytes_written();
    store.append(&second).await.unwrap();
    let second_cost = store.bytes_written() - before;
    assert!(second_cost < 2048, "a repeated large value costs a reference only: {second_cost} bytes");
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.blobs, 1);
    assert!(stats.blob_bytes > 1024 * 1024 && stats.blob_bytes < 1024 * 1024 + 1024, "{}", stats.blob_bytes);

    // A run whose context holds the 1 MiB value (set by step 0) and whose later steps each re-set it (a loop
    // writing the same document back): every later step writes a few hundred bytes.
    let mut prev = second.hash.clone();
    let mut costs = Vec::new();
    for seq in 1..6 {
        let mut r = sample_record("b", seq);
        r.patch.push(PatchOp::set(vec!["doc".to_owned()], mib.clone()));
        r.seal(&prev);
        prev.clone_from(&r.hash);
        let before = store.bytes_written();
        store.append(&r).await.unwrap();
        costs.push(store.bytes_written() - before);
    }
    assert!(costs.iter().all(|c| *c < 2048), "per-step bytes: {costs:?}");
    assert_eq!(store.stats().await.unwrap().blobs, 1);

    // Loaded records are identical (so their hashes verify), and share one parsed copy of the value.
    let loaded = store.load_journal("b").await.unwrap();
    verify_chain(&loaded).unwrap();
    assert_eq!(loaded[0], second);
    assert_eq!(loaded.len(), 6);
    let PatchOp::Set { value, .. } = loaded[3].patch.last().unwrap() else { panic!("expected a set") };
    assert!(Arc::ptr_eq(value, &loaded[0].output));
    assert_eq!(store.load_journal("a").await.unwrap(), vec![first]);

    // Small values stay inline: no new blobs.
    let just_over = Value::String("y".repeat(INLINE_VALUE_LIMIT));
    let mut r = sample_record("a", 1);
    r.output = Arc::new(just_over);
    r.seal(&store.load_journal("a").await.unwrap()[0].hash);
    store.append(&r).await.unwrap();
    assert_eq!(store.stats().await.unwrap().blobs, 2, "a value just over the limit is a blob");
    verify_chain(&store.load_journal("a").await.unwrap()).unwrap();
}

#[tokio::test]
async fn bytes_written_counts_committed_rows_only() {
    let store = SqliteStore::open_in_memory(SqliteOptions::default()).unwrap();
    assert_eq!(store.bytes_written(), 0);
    store.create_run(&sample_run("r")).await.unwrap();
    let after_create = store.bytes_written();
    assert!(after_create > 300, "{after_create}");
    let chain = sealed_chain("r", 3);
    for r in &chain {
        store.append(r).await.unwrap();
    }
    let after_appends = store.bytes_written();
    assert!(after_appends > after_create + 3 * 200, "{after_appends}");
    assert!(store.append(&chain[0]).await.is_err());
    assert!(store.create_run(&sample_run("r")).await.is_err());
    assert_eq!(store.bytes_written(), after_appends, "rejected writes write nothing");
    store.put_blob(&[7u8; 1000]).await.unwrap();
    store.put_blob(&[7u8; 1000]).await.unwrap();
    assert_eq!(store.bytes_written(), after_appends + 1000, "an existing blob is not written again");
}

#[tokio::test]
async fn non_finite_floats_still_verify() {
    let store = SqliteStore::open_in_memory(SqliteOptions::default()).unwrap();
    store.create_run(&fresh_run("r", "demo", RunStatus::Running, 0)).await.unwrap();
    let mut r = sample_record("r", 0);
    r.cost_usd = f64::NAN;
    r.latency_ms = 0.1 + 0.2;
    r.seal(GENESIS_HASH);
    store.append(&r).await.unwrap();
    let loaded = store.load_journal("r").await.unwrap();
    assert!(loaded[0].cost_usd.is_nan());
    assert_eq!(loaded[0].latency_ms.to_bits(), (0.1f64 + 0.2).to_bits());
    verify_chain(&loaded).unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// Concurrency and group commit.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_from_100_concurrent_tasks_all_land_in_shared_commits() {
    const TASKS: usize = 100;
    const RECORDS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir.path().join("conc.db")));
    let big = big_value(5 * 1024, "shared");
    let chains: Vec<Arc<Vec<JournalRecord>>> =
        (0..TASKS).map(|i| Arc::new(chain_with(&format!("run-{i}"), RECORDS, Some(&big)))).collect();
    let mut tasks = Vec::new();
    for (i, chain) in chains.iter().enumerate() {
        let store = Arc::clone(&store);
        let chain = Arc::clone(chain);
        tasks.push(tokio::spawn(async move {
            let run_id = format!("run-{i}");
            store.create_run(&fresh_run(&run_id, "conc", RunStatus::Running, i as i64)).await.unwrap();
            for r in chain.iter() {
                store.append(r).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (i, chain) in chains.iter().enumerate() {
        let loaded = store.load_journal(&format!("run-{i}")).await.unwrap();
        assert_eq!(&loaded, chain.as_ref());
        verify_chain(&loaded).unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.runs, stats.journal_records, stats.blobs), (TASKS as u64, TASKS as u64 * RECORDS, 1));
    let gc = store.group_commit_stats();
    assert_eq!(gc.writes, TASKS as u64 * (RECORDS + 1));
    assert!(gc.transactions < gc.writes, "concurrent writes share transactions: {gc:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_share_it_and_detect_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = Arc::new(open(&path));
    let b = Arc::new(open(&path));
    a.create_run(&fresh_run("r", "demo", RunStatus::Running, 0)).await.unwrap();
    assert!(matches!(
        b.create_run(&fresh_run("r", "demo", RunStatus::Running, 0)).await,
        Err(StoreError::RunExists(_))
    ));
    // Both race to write every seq of one run: each seq lands once, every other attempt is a Conflict.
    let chain = sealed_chain("r", 30);
    let mut tasks = Vec::new();
    for store in [Arc::clone(&a), Arc::clone(&b)] {
        let chain = chain.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for r in &chain {
                match store.append(r).await {
                    Ok(()) => ok += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 30);
    assert_eq!(a.load_journal("r").await.unwrap(), chain);
    assert_eq!(b.load_journal("r").await.unwrap(), chain);
}

// ---------------------------------------------------------------------------------------------------------
// Crash safety: a child process (this test binary, re-run in child mode) writes until it is SIGKILLed.

const CRASH_CHILD_ENV: &str = "FLUJO_SQLITE_CRASH_CHILD_DB";
const CRASH_TEST: &str = "a_sigkilled_writer_process_leaves_a_database_whose_committed_records_verify";
const CRASH_RUNS: usize = 8;

fn crash_big() -> Value {
    big_value(6 * 1024, "crash")
}

/// The child: appends to [`CRASH_RUNS`] runs concurrently forever, printing each committed record.
fn crash_child(path: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(open(path));
        let mut tasks = Vec::new();
        for i in 0..CRASH_RUNS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let run_id = format!("crash-{i}");
                store.create_run(&fresh_run(&run_id, "crash", RunStatus::Running, i as i64)).await.unwrap();
                println!("created {run_id}");
                for r in chain_iter(run_id.clone(), Some(crash_big())) {
                    store.append(&r).await.unwrap();
                    println!("committed {run_id} {}", r.seq);
                }
            }));
        }
        // Never reached in practice: the parent kills us long before; bounded so a lost parent cannot leak us.
        let _ = tokio::time::timeout(Duration::from_secs(30), futures_join(tasks)).await;
    });
    std::process::exit(0);
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn a_sigkilled_writer_process_leaves_a_database_whose_committed_records_verify() {
    if let Some(path) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pump = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // `committed RUN SEQ` lines (libtest may print its own text before the first one on the same line).
    let mut committed: HashMap<String, u64> = HashMap::new();
    let mut record = |line: &str| {
        if let Some(at) = line.find("committed ") {
            let mut parts = line[at + "committed ".len()..].split_whitespace();
            let (Some(run), Some(seq)) = (parts.next(), parts.next()) else { return 0 };
            let seq: u64 = seq.parse().unwrap();
            let max = committed.entry(run.to_owned()).or_insert(0);
            *max = (*max).max(seq);
            1
        } else {
            0
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = 0;
    while seen < 1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen += record(&line),
            Err(_) => {
                let _ = child.kill();
                panic!("the child reported only {seen} committed records in time");
            }
        }
    }
    // SIGKILL while the child is in the middle of writing.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished: {status:?}");
    pump.join().unwrap();
    // Lines printed before the kill are committed records too.
    for line in rx.try_iter() {
        seen += record(&line);
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = open(&db);
        let mut total = 0;
        for (run_id, max_seq) in &committed {
            let loaded = store.load_journal(run_id).await.unwrap();
            assert!(
                loaded.len() as u64 > *max_seq,
                "{run_id}: seq {max_seq} was reported committed but the journal has {} records",
                loaded.len()
            );
            verify_chain(&loaded).unwrap_or_else(|e| panic!("{run_id}: {e}"));
            assert_eq!(loaded, chain_with(run_id, loaded.len() as u64, Some(&crash_big())));
            total += loaded.len();
        }
        assert!(total >= seen, "{total} records on disk, {seen} reported committed");
        // The database is writable again: the journal continues at the next seq.
        let (run_id, _) = committed.iter().next().unwrap();
        let loaded = store.load_journal(run_id).await.unwrap();
        let mut next = sample_record(run_id, loaded.len() as u64);
        next.seal(&loaded.last().unwrap().hash);
        store.append(&next).await.unwrap();
    });
}
