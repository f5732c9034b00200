//! The conformance suite against [`PostgresStore`], and Postgres-specific behaviour: schema versioning,
//! content-addressed large values, concurrent writers, connection errors that never print the password, and
//! a server restart in the middle of appends.
//!
//! The tests need a server: `FLUJO_TEST_POSTGRES_URL` (the test command, `scripts/test.sh`, starts a
//! throwaway one with `scripts/postgres.sh` and sets it). Each test works in schemas of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flujo_core::journal::GENESIS_HASH;
use flujo_core::{verify_chain, BlobStore, JournalStore, PatchOp, RunStore, Store, StoreError};
use flujo_store::conformance::{self, fresh_run, sample_record, sample_run};
use flujo_store::postgres::SCHEMA_VERSION;
use flujo_store::{open_store, PostgresStore};
use serde_json::json;

/// The test server's URL, or `None` (and a note in the output) when there is none.
fn server() -> Option<String> {
    match std::env::var("FLUJO_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("FLUJO_TEST_POSTGRES_URL is not set: skipping (scripts/test.sh starts a server and sets it)");
            None
        }
    }
}

/// `url` with `schema=NAME` for a schema no other test uses.
fn fresh_schema(url: &str, tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema=t_{tag}_{}_{n}", std::process::id())
}

/// A direct client to the server, for reaching under the store.
async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_conformance_suite() {
    let Some(url) = server() else { return };
    let report = conformance::run_all_async(|| {
        let uri = fresh_schema(&url, "conf");
        async move { Arc::new(PostgresStore::connect(&uri).await.unwrap()) as Arc<dyn Store> }
    })
    .await;
    report.assert_ok();
    assert_eq!(report.passed.len(), conformance::checks().len());
    assert!(report.store.starts_with("postgres://flujo@127.0.0.1:"), "{}", report.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_store_postgres_uri_passes_the_conformance_suite() {
    let Some(url) = server() else { return };
    // `open_store` connects on a helper thread: it works from inside a runtime.
    let report = conformance::run_all(|| open_store(&fresh_schema(&url, "open")).unwrap()).await;
    report.assert_ok();
    assert!(!report.store.contains("flujo-"), "the password leaked into {}", report.store);
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_store_passes_on_a_current_thread_runtime() {
    let Some(url) = server() else { return };
    let checks: Vec<_> = conformance::checks().into_iter().filter(|c| !c.name.contains("concurrent")).collect();
    conformance::run_checks(&checks, || {
        let uri = fresh_schema(&url, "ct");
        async move { Arc::new(PostgresStore::connect(&uri).await.unwrap()) as Arc<dyn Store> }
    })
    .await
    .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_reopening_and_its_chain_verifies() {
    let Some(url) = server() else { return };
    let uri = fresh_schema(&url, "reopen");
    let big = Arc::new(json!({"text": "y".repeat(20_000), "n": [1, 2.5, -3], "s": "é ✓"}));
    {
        let store = PostgresStore::connect(&uri).await.unwrap();
        store.create_run(&sample_run("r1")).await.unwrap();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 0..6 {
            let mut r = sample_record("r1", seq);
            if seq % 2 == 0 {
                r.output = big.clone();
                r.patch.push(PatchOp::Set { path: vec!["doc".into()], value: big.clone() });
            }
            r.seal(&prev);
            prev.clone_from(&r.hash);
            store.append(&r).await.unwrap();
        }
    }
    let store = PostgresStore::connect(&uri).await.unwrap();
    let journal = store.load_journal("r1").await.unwrap();
    assert_eq!(journal.len(), 6);
    verify_chain(&journal).unwrap();
    assert_eq!(journal[0].output, big);
    assert_eq!(store.get_run("r1").await.unwrap().unwrap(), sample_run("r1"));
    // The big value is stored once, however many records carry it.
    let client = admin(&url).await;
    let schema = store.schema().to_owned();
    let row = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".blobs WHERE octet_length(bytes) > 20000"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
}

/// A schema at version 5 (the journal without the usage-detail columns of version 6, with hex hashes of
/// scheme 1 and a stored `prev_hash`, as before version 7) with records written then opens, migrates, reads
/// those records unchanged with their chain intact, and continues the chain with records of the current
/// scheme that carry usage details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_5_schema_migrates_and_its_old_records_still_verify() {
    let Some(url) = server() else { return };
    let uri = fresh_schema(&url, "v5");
    let mut old = conformance::sealed_chain("r-old", 5);
    let mut prev = GENESIS_HASH.to_owned();
    for r in &mut old {
        r.seal_with(&prev, flujo_core::HashScheme::V1);
        prev.clone_from(&r.hash);
    }
    let schema = {
        let store = PostgresStore::connect(&uri).await.unwrap();
        store.create_run(&sample_run("r-old")).await.unwrap();
        for r in &old {
            store.append(r).await.unwrap();
        }
        store.schema().to_owned()
    };
    // Back to version 5: the journal table as its DDL had it, and the version it recorded.
    let client = admin(&url).await;
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".journal DROP COLUMN cached_tokens, DROP COLUMN cache_write_tokens, \
             DROP COLUMN reasoning_tokens, DROP COLUMN hash_scheme, ADD COLUMN prev_hash TEXT, \
             ALTER COLUMN hash TYPE TEXT USING encode(hash, 'hex'); \
             UPDATE \"{schema}\".journal j SET prev_hash = coalesce((SELECT p.hash FROM \"{schema}\".journal p \
             WHERE p.run_id = j.run_id AND p.seq = j.seq - 1), ''); \
             ALTER TABLE \"{schema}\".journal ALTER COLUMN prev_hash SET NOT NULL; \
             UPDATE \"{schema}\".flujo_schema SET version = 5"
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect(&uri).await.unwrap();
    let version: i32 =
        client.query_one(&format!("SELECT version FROM \"{schema}\".flujo_schema"), &[]).await.unwrap().get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let loaded = store.load_journal("r-old").await.unwrap();
    assert_eq!(loaded, old);
    verify_chain(&loaded).unwrap();
    assert_eq!(store.load_journal_from("r-old", 2).await.unwrap(), old[2..]);
    let width: i32 = client
        .query_one(&format!("SELECT max(octet_length(hash)) FROM \"{schema}\".journal"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(width, 32, "hashes are stored as their 32 bytes");
    let mut next = sample_record("r-old", 5);
    next.tokens = flujo_core::TokenUsage::new(900, 300).with_cache(500, 100).with_reasoning(200);
    next.seal(&old[4].hash);
    store.append(&next).await.unwrap();
    let loaded = store.load_journal("r-old").await.unwrap();
    assert_eq!(loaded.last(), Some(&next));
    assert_eq!(next.hash_scheme, flujo_core::HashScheme::CURRENT);
    verify_chain(&loaded).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_and_foreign_tables_are_refused() {
    let Some(url) = server() else { return };
    let uri = fresh_schema(&url, "newer");
    let store = PostgresStore::connect(&uri).await.unwrap();
    let schema = store.schema().to_owned();
    drop(store);
    let client = admin(&url).await;
    client
        .execute(&format!("UPDATE \"{schema}\".flujo_schema SET version = $1"), &[&(SCHEMA_VERSION + 1)])
        .await
        .unwrap();
    let err = PostgresStore::connect(&uri).await.unwrap_err().to_string();
    assert!(err.contains("newer than this Flujo reads"), "{err}");

    let uri = fresh_schema(&url, "foreign");
    let schema = uri.rsplit("schema=").next().unwrap().to_owned();
    client.batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.runs (id int)")).await.unwrap();
    let err = PostgresStore::connect(&uri).await.unwrap_err().to_string();
    assert!(err.contains("Flujo did not make"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_openers_of_a_new_schema_migrate_once() {
    let Some(url) = server() else { return };
    let uri = fresh_schema(&url, "race");
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let uri = uri.clone();
            tokio::spawn(async move { PostgresStore::connect(&uri).await.map(drop) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_missing_database_and_no_server_are_named_without_the_password() {
    let Some(url) = server() else { return };
    let (head, tail) = url.split_once('@').unwrap();
    let user = head.rsplit_once(':').unwrap().0;
    let wrong = format!("{user}:not-the-password-42@{tail}");
    let err = PostgresStore::connect(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("refused the credentials") && err.contains("user flujo"), "{err}");
    assert!(!err.contains("not-the-password-42"), "{err}");

    let base = url.rsplit_once('/').unwrap().0;
    let err = PostgresStore::connect(&format!("{base}/no_such_db_here")).await.unwrap_err().to_string();
    assert!(err.contains("database no_such_db_here does not exist"), "{err}");
    assert!(!err.contains(head.rsplit(':').next().unwrap()), "{err}");

    let err = PostgresStore::connect("postgres://flujo:pw-xyz@127.0.0.1:1/db").await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1") && err.contains("database db"), "{err}");
    assert!(!err.contains("pw-xyz"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_racing_for_one_position_exactly_one_wins() {
    let Some(url) = server() else { return };
    let store = Arc::new(PostgresStore::connect(&fresh_schema(&url, "racepos")).await.unwrap());
    store.create_run(&fresh_run("r", "p", flujo_core::RunStatus::Running, 1)).await.unwrap();
    for seq in 0..20u64 {
        let tasks: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut r = sample_record("r", seq);
                    r.step = format!("writer{w}");
                    store.append(&r).await
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => won += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("seq {seq}: {e}"),
            }
        }
        assert_eq!(won, 1, "seq {seq}");
    }
    assert_eq!(store.load_journal("r").await.unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_system_state_round_trip() {
    let Some(url) = server() else { return };
    let store = PostgresStore::connect(&fresh_schema(&url, "blobs")).await.unwrap();
    let bytes = vec![0u8, 1, 2, 255];
    let hash = store.put_blob(&bytes).await.unwrap();
    assert_eq!(store.put_blob(&bytes).await.unwrap(), hash);
    assert_eq!(store.get_blob(&hash).await.unwrap(), Some(bytes));
    assert!(store.bytes_written() >= 4);
}

/// A run queued by another connection (another process, in real use) wakes a worker waiting on its queue
/// (LISTEN/NOTIFY, delivered at commit); a run queued on another queue, or in another schema, does not;
/// the memory and SQLite stores say they cannot wait (the worker polls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_wakes_waiters_on_its_queue_only() {
    let Some(url) = server() else { return };
    let uri = fresh_schema(&url, "notify");
    let waiter = Arc::new(PostgresStore::connect(&uri).await.unwrap());
    let writer = PostgresStore::connect(&uri).await.unwrap();
    let elsewhere = PostgresStore::connect(&fresh_schema(&url, "notify_other")).await.unwrap();
    // Start listening, then let the listener settle.
    assert!(waiter.wait_for_queued(&["jobs".to_owned()], 200).await.unwrap());
    let queued = |id: &str, queue: &str| {
        let mut run = fresh_run(id, "p", flujo_core::RunStatus::Queued, 1);
        run.queue = Some(queue.to_owned());
        run
    };
    // Runs queued on another queue and in another schema's `jobs`: the wait runs to its (short) timeout.
    let w = waiter.clone();
    let wait = tokio::spawn(async move {
        let t = std::time::Instant::now();
        w.wait_for_queued(&["jobs".to_owned()], 1500).await.unwrap();
        t.elapsed()
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    writer.create_run(&queued("other-queue", "mail")).await.unwrap();
    elsewhere.create_run(&queued("other-schema", "jobs")).await.unwrap();
    let waited = wait.await.unwrap();
    assert!(waited >= std::time::Duration::from_millis(1400), "woken by another queue or schema after {waited:?}");
    // A run queued on `jobs`: the waiter wakes long before its timeout.
    let w = waiter.clone();
    let wait = tokio::spawn(async move {
        let t = std::time::Instant::now();
        w.wait_for_queued(&["mail".to_owned(), "jobs".to_owned()], 60_000).await.unwrap();
        t.elapsed()
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    writer.create_run(&queued("ours", "jobs")).await.unwrap();
    let waited = wait.await.unwrap();
    assert!(waited < std::time::Duration::from_secs(30), "not woken by the queued run ({waited:?})");
    // Stores that cannot be told.
    let memory = flujo_store::MemoryStore::new();
    assert!(!memory.wait_for_queued(&["jobs".to_owned()], 60_000).await.unwrap());
}
