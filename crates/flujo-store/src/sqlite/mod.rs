//! The SQLite store (feature `sqlite`): a durable [`Store`] in one local file.
//!
//! * **Threads.** All SQLite work happens off the async runtime: a dedicated writer thread owns the
//!   read-write connection, and for a file database a reader thread owns a second, query-only connection
//!   (WAL lets it read while the writer writes). Async methods encode their rows on the caller's task,
//!   send a command over a channel and await a oneshot reply (details in the `worker` module).
//! * **Group commit.** The writer drains every queued write (appends from many concurrent runs, run
//!   updates, blobs) into one transaction and replies to each caller after it commits, so an `append`
//!   resolves only once its record is committed, and concurrent runs share commits.
//! * **Durability.** WAL mode; [`Durability::Normal`] (`synchronous=NORMAL`) survives a killed process,
//!   [`Durability::Strict`] (`synchronous=FULL`) also survives power loss.
//! * **Checkpoints.** A file database's WAL is copied into the file by a checkpoint thread of the store
//!   (a `PASSIVE` checkpoint every 1000 writes), not on the writer thread, where copying and syncing would
//!   stall every waiting commit; the writer's own automatic checkpoint remains as a bound at 4000 pages.
//! * **Blobs.** Outputs and patch values larger than [`INLINE_VALUE_LIMIT`] bytes of JSON are stored once in
//!   the content-addressed `blobs` table and referenced from journal rows, so the bytes a step writes do not
//!   grow with the size of values it merely repeats. Loaded records are identical to the appended ones, so
//!   their hash chain verifies.
//! * **Retention.** `delete_runs` runs on the writer thread like every write: runs, their journal rows and
//!   the blobs only they referenced go in one transaction.
//! * **Schema.** Versioned migrations in `PRAGMA user_version` ([`SCHEMA_VERSION`]); a database from a newer
//!   Flujo is refused.
//!
//! ```
//! # use flujo_core::{RunStore, Store};
//! # use flujo_store::{SqliteOptions, SqliteStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flujo_core::StoreError> {
//! let dir = tempfile::tempdir().map_err(|e| flujo_core::StoreError::Unavailable(e.to_string()))?;
//! let store = SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default())?;
//! assert!(store.get_run("nope").await?.is_none());
//! assert!(store.describe().starts_with("sqlite:///"));
//! # Ok(())
//! # }
//! ```

mod schema;
mod vector;
mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;

use async_trait::async_trait;
use flujo_core::{
    BlobStore, ClaimRequest, JournalRecord, JournalStore, RunFilter, RunRecord, RunStatus, RunStore, RunUpdate, Store,
    StoreError, SystemStateStore, Value,
};
use tokio::sync::oneshot;

pub use crate::codec::INLINE_VALUE_LIMIT;
pub use schema::SCHEMA_VERSION;

use crate::blob_hash;
use crate::codec::{self, NewBlob};
use schema::Location;
pub use vector::SqliteVectorStore;
use worker::{Command, Counters, Read, Reply, Write, WriteCommand};

/// How hard a commit tries to survive failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: a committed record survives the process being killed; the last
    /// commits before a power loss or OS crash may be lost (the database stays consistent).
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced; committed records survive power loss.
    Strict,
}

impl Durability {
    /// Parses `normal` or `strict` (`full` is a synonym), as in the `durability=` option of a `sqlite://` URI.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Some(Durability::Normal),
            "strict" | "full" => Some(Durability::Strict),
            _ => None,
        }
    }
}

/// Options of [`SqliteStore::open`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How hard each commit tries to survive a crash (default [`Durability::Normal`]).
    pub durability: Durability,
}

/// Counts and settings of an open database (for `flujo lens`, tests and benchmarks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteStats {
    /// Rows in the `runs` table: every stored run, whatever its status.
    pub runs: u64,
    /// Journal records of all runs together.
    pub journal_records: u64,
    /// Distinct blobs, and their total size in bytes.
    pub blobs: u64,
    /// The total size of those blobs, in bytes.
    pub blob_bytes: u64,
    /// `PRAGMA user_version`.
    pub schema_version: i32,
    /// `PRAGMA journal_mode` (`wal` for a file, `memory` in memory).
    pub journal_mode: String,
    /// `PRAGMA synchronous` of the writer connection: 1 = NORMAL, 2 = FULL.
    pub synchronous: i64,
}

/// How well writes were grouped: `writes` committed in `transactions` transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions this store's writer thread has committed since the store was opened.
    pub transactions: u64,
    /// Writes committed in those transactions (rejected writes are not counted).
    pub writes: u64,
    /// WAL checkpoints done in the background (a file database asks for one every 1000 writes, on a thread
    /// of its own, so that copying and syncing pages does not stall commits).
    pub checkpoints: u64,
}

impl GroupCommitStats {
    /// Average writes per transaction (0 before the first commit).
    pub fn writes_per_transaction(&self) -> f64 {
        if self.transactions == 0 {
            0.0
        } else {
            self.writes as f64 / self.transactions as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    File(PathBuf),
    Memory,
}

/// A [`Store`] in a SQLite database. Share it as `Arc<SqliteStore>` or `Arc<dyn Store>`; several stores
/// (even in several processes) may open one file, each with its own writer thread — SQLite serializes their
/// transactions.
pub struct SqliteStore {
    target: Target,
    options: SqliteOptions,
    writer: mpsc::Sender<Command>,
    /// `None` for an in-memory database: its reads go to the writer thread.
    reader: Option<mpsc::Sender<Read>>,
    counters: Arc<Counters>,
    definitions: Arc<codec::DefinitionCache>,
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) and migrates the database at `path`, and
    /// starts its threads.
    ///
    /// This blocks while the file is opened and migrated (milliseconds); from async code prefer
    /// [`SqliteStore::open_async`].
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if path.as_os_str() == ":memory:" {
            return Self::open_in_memory(options);
        }
        let writer = schema::open_writer(Location::File(path), options.durability)?;
        let reader = schema::open_reader(path)?;
        Self::start(Target::File(path.to_path_buf()), options, writer, Some(reader))
    }

    /// [`SqliteStore::open`] on a blocking thread of the current tokio runtime.
    pub async fn open_async(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open(path, options))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the sqlite store failed: {e}")))?
    }

    /// A private in-memory database (gone when the store is dropped): the SQLite code paths without a file.
    pub fn open_in_memory(options: SqliteOptions) -> Result<Self, StoreError> {
        let writer = schema::open_writer(Location::Memory, options.durability)?;
        Self::start(Target::Memory, options, writer, None)
    }

    fn start(
        target: Target,
        options: SqliteOptions,
        writer_conn: rusqlite::Connection,
        reader_conn: Option<rusqlite::Connection>,
    ) -> Result<Self, StoreError> {
        let counters = Arc::new(Counters::default());
        let (writer, commands) = mpsc::channel();
        let writer_counters = Arc::clone(&counters);
        let checkpoints = match &target {
            Target::File(path) => Some(worker::Checkpointer::new(path.clone())),
            Target::Memory => None,
        };
        thread::Builder::new()
            .name("flujo-sqlite-writer".to_owned())
            .spawn(move || worker::run_writer(writer_conn, commands, &writer_counters, checkpoints))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the sqlite writer thread: {e}")))?;
        let reader = match reader_conn {
            Some(conn) => {
                let (reader, reads) = mpsc::channel();
                thread::Builder::new()
                    .name("flujo-sqlite-reader".to_owned())
                    .spawn(move || worker::run_reader(conn, reads))
                    .map_err(|e| StoreError::Unavailable(format!("cannot start the sqlite reader thread: {e}")))?;
                Some(reader)
            }
            None => None,
        };
        Ok(Self { target, options, writer, reader, counters, definitions: Arc::default() })
    }

    /// The database file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        match &self.target {
            Target::File(p) => Some(p),
            Target::Memory => None,
        }
    }

    /// The options the store was opened with.
    pub fn options(&self) -> SqliteOptions {
        self.options
    }

    /// Row counts and settings, read on the writer thread after every write queued before it committed.
    pub async fn stats(&self) -> Result<SqliteStats, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Command::Read(Read::Stats(reply))).map_err(|_| stopped("writer"))?;
        rx.await.map_err(|_| stopped("writer"))?
    }

    /// How many transactions committed how many writes so far (rejected writes are not counted).
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Queues a write and awaits its commit; returns the write's count (see `WriteCommand`).
    async fn write(&self, write: Write) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Command::Write(Box::new(WriteCommand { write, reply }))).map_err(|_| stopped("writer"))?;
        rx.await.map_err(|_| stopped("writer"))?
    }

    async fn read<T>(&self, make: impl FnOnce(Reply<T>) -> Read) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let read = make(reply);
        let sent = match &self.reader {
            Some(reader) => reader.send(read).is_ok(),
            None => self.writer.send(Command::Read(read)).is_ok(),
        };
        if !sent {
            return Err(stopped("reader"));
        }
        rx.await.map_err(|_| stopped("reader"))?
    }
}

fn stopped(which: &str) -> StoreError {
    StoreError::Unavailable(format!("the sqlite {which} thread has stopped"))
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("uri", &self.describe())
            .field("options", &self.options)
            .field("bytes_written", &self.bytes_written())
            .field("group_commit", &self.group_commit_stats())
            .finish()
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(Write::CreateRun(codec::encode_run(run)?)).await.map(drop)
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read(|reply| Read::GetRun(run_id.to_owned(), Arc::clone(&self.definitions), reply)).await
    }

    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        self.write(Write::UpdateRun(codec::encode_update(update)?)).await.map(drop)
    }

    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease_expires_at_ms: i64) -> Result<(), StoreError> {
        self.write(Write::Heartbeat { run_id: run_id.to_owned(), owner_id: owner_id.to_owned(), lease_expires_at_ms })
            .await
            .map(drop)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        if filter.limit == Some(0) {
            return Ok(Vec::new());
        }
        self.read(|reply| Read::ListRuns(filter.clone(), Arc::clone(&self.definitions), reply)).await
    }

    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read(|reply| Read::FindRunsByPrefix { prefix: prefix.to_owned(), limit, reply }).await
    }

    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        self.write(Write::DeleteRuns { older_than_ms, status }).await
    }

    async fn claim_runs(&self, claim: &ClaimRequest) -> Result<Vec<String>, StoreError> {
        if claim.limit == 0 || claim.queues.is_empty() {
            return Ok(Vec::new());
        }
        let owner = serde_json::to_string(&claim.owner)
            .map_err(|e| StoreError::Unavailable(format!("cannot serialize the owner: {e}")))?;
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        self.write(Write::Claim { claim: claim.clone(), owner, out: out.clone() }).await?;
        let ids = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(ids)
    }
}

#[async_trait]
impl flujo_core::EvaluationStore for SqliteStore {
    async fn create_evaluation(&self, e: &flujo_core::EvaluationRecord) -> Result<bool, StoreError> {
        let row = crate::codec::EvaluationRow::of(e)?;
        self.write(Write::PutEvaluation { row, replace: false }).await.map(|n| n > 0)
    }

    async fn update_evaluation(&self, e: &flujo_core::EvaluationRecord) -> Result<bool, StoreError> {
        let row = crate::codec::EvaluationRow::of(e)?;
        self.write(Write::PutEvaluation { row, replace: true }).await.map(|n| n > 0)
    }

    async fn claim_evaluations(
        &self,
        owner: &str,
        now_ms: i64,
        lease_expires_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<flujo_core::EvaluationRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        self.write(Write::ClaimEvaluations {
            owner: owner.to_owned(),
            now_ms,
            lease_expires_at_ms,
            limit,
            out: out.clone(),
        })
        .await?;
        let claimed = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(claimed)
    }

    async fn list_evaluations(
        &self,
        filter: &flujo_core::EvaluationFilter,
    ) -> Result<Vec<flujo_core::EvaluationRecord>, StoreError> {
        self.read(|reply| Read::ListEvaluations(filter.clone(), reply)).await
    }
}

#[async_trait]
impl JournalStore for SqliteStore {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        self.write(Write::Append(codec::encode_record(record)?)).await.map(drop)
    }

    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        let mut row = codec::encode_record(record)?;
        row.fence_owner = Some(owner_id.to_owned());
        self.write(Write::Append(row)).await.map(drop)
    }

    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.read(|reply| Read::LoadJournal(run_id.to_owned(), 0, reply)).await
    }

    async fn load_journal_from(&self, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
        self.read(|reply| Read::LoadJournal(run_id.to_owned(), from_seq, reply)).await
    }
}

#[async_trait]
impl BlobStore for SqliteStore {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let hash = blob_hash(bytes);
        self.write(Write::PutBlob(NewBlob { hash: hash.clone(), bytes: bytes.into() })).await?;
        Ok(hash)
    }

    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|reply| Read::GetBlob(hash.to_owned(), reply)).await
    }
}

#[async_trait]
impl SystemStateStore for SqliteStore {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.read(|reply| Read::GetState(key.to_owned(), reply)).await
    }

    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        let value = serde_json::to_string(value)
            .map_err(|e| StoreError::Unavailable(format!("cannot serialize system state '{key}': {e}")))?;
        self.write(Write::SetState { key: key.to_owned(), value }).await.map(drop)
    }

    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        self.read(|reply| Read::ListState(prefix.to_owned(), reply)).await
    }

    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        self.write(Write::DeleteState(key.to_owned())).await.map(|n| n > 0)
    }
}

impl Store for SqliteStore {
    /// `sqlite:///relative.db`, `sqlite:////absolute.db` or `sqlite://:memory:` (the URI that opens it).
    fn describe(&self) -> String {
        match &self.target {
            Target::File(p) => format!("sqlite:///{}", p.display()),
            Target::Memory => "sqlite://:memory:".to_owned(),
        }
    }

    /// Bytes of committed row payloads: run rows, journal rows, and each distinct blob once.
    fn bytes_written(&self) -> u64 {
        self.counters.bytes_written.load(Ordering::Relaxed)
    }
}

/// The usage line of `sqlite://` URIs.
const URI_FORMS: &str =
    "use `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or `sqlite://:memory:`, optionally with \
     `?durability=normal|strict`";

/// Opens the store named by the part of a `sqlite://` URI after `://`.
pub(crate) fn open_uri(rest: &str) -> Result<SqliteStore, StoreError> {
    let (target, query) = match rest.split_once('?') {
        Some((target, query)) => (target, Some(query)),
        None => (rest, None),
    };
    let mut options = SqliteOptions::default();
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("durability", value)) => {
                options.durability = Durability::parse(value).ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "unknown sqlite:// durability `{value}`; expected `normal` or `strict`"
                    ))
                })?;
            }
            _ => {
                let key = pair.split_once('=').map_or(pair, |(k, _)| k);
                return Err(StoreError::Unavailable(format!(
                    "unknown sqlite:// option `{key}`; supported: durability=normal|strict"
                )));
            }
        }
    }
    if target == ":memory:" {
        return SqliteStore::open_in_memory(options);
    }
    match target.strip_prefix('/') {
        Some(path) if !path.is_empty() && path != "/" => SqliteStore::open(path, options),
        _ => Err(StoreError::Unavailable(format!("sqlite:// URI names no database file; {URI_FORMS}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms_resolve_to_paths() {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("nested/dir/state.db");
        let uri_rest = format!("/{}", abs.display());
        let store = open_uri(&uri_rest).unwrap();
        assert_eq!(store.path(), Some(abs.as_path()));
        assert_eq!(store.describe(), format!("sqlite:///{}", abs.display()));
        assert!(store.describe().starts_with("sqlite:////"));
        assert!(abs.exists(), "parent directories are created");

        let strict = open_uri(&format!("/{}?durability=strict", dir.path().join("s.db").display())).unwrap();
        assert_eq!(strict.options().durability, Durability::Strict);

        let mem = open_uri(":memory:").unwrap();
        assert_eq!((mem.path(), mem.describe().as_str()), (None, "sqlite://:memory:"));
    }

    #[test]
    fn bad_uris_are_explained() {
        for rest in ["", "/", "//", "relative.db"] {
            let Err(StoreError::Unavailable(m)) = open_uri(rest) else { panic!("{rest:?} should fail") };
            assert!(m.contains("sqlite:///relative/path.db"), "{m}");
        }
        let Err(StoreError::Unavailable(m)) = open_uri(":memory:?durability=eventually") else { panic!() };
        assert!(m.contains("eventually"), "{m}");
        let Err(StoreError::Unavailable(m)) = open_uri(":memory:?cache=shared") else { panic!() };
        assert!(m.contains("`cache`"), "{m}");
    }

    #[test]
    fn durability_parses() {
        assert_eq!(Durability::parse("NORMAL"), Some(Durability::Normal));
        assert_eq!(Durability::parse("strict"), Some(Durability::Strict));
        assert_eq!(Durability::parse("full"), Some(Durability::Strict));
        assert_eq!(Durability::parse("off"), None);
        assert_eq!(Durability::default(), Durability::Normal);
    }

    #[test]
    fn prefix_upper_bounds() {
        use crate::codec::prefix_upper_bound as up;
        assert_eq!(up("abc").as_deref(), Some("abd"));
        assert_eq!(up("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(up("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(up("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(up(""), None);
    }

    #[tokio::test]
    async fn delete_runs_deletes_unreferenced_blobs_in_the_file() {
        use flujo_core::{PatchOp, RunStatus};
        use std::sync::Arc;

        let store = SqliteStore::open_in_memory(SqliteOptions::default()).unwrap();
        let big = |tag: &str| serde_json::json!({"tag": tag, "text": "x".repeat(2 * INLINE_VALUE_LIMIT)});
        let definition =
            Arc::new(flujo_core::Definition::from_json(serde_json::json!({"name": "p", "steps": []}).to_string()));
        for (id, at) in [("old", 1), ("new", 100)] {
            let mut run = crate::conformance::fresh_run(id, "p", RunStatus::Completed, at);
            run.definition = Some(Arc::clone(&definition));
            store.create_run(&run).await.unwrap();
            let mut r = crate::conformance::sample_record(id, 0);
            r.output = Arc::new(big(id));
            r.patch = vec![PatchOp::Set { path: vec!["shared".into()], value: Arc::new(big("shared")) }];
            r.seal("");
            store.append(&r).await.unwrap();
        }
        // One definition, two outputs, one shared patch value.
        assert_eq!(store.stats().await.unwrap().blobs, 4);
        assert_eq!(store.delete_runs(50, None).await.unwrap(), 1);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.runs, stats.journal_records, stats.blobs), (1, 1, 3), "only the old output goes");
        assert_eq!(store.load_journal("new").await.unwrap().len(), 1);
        assert_eq!(store.delete_runs(i64::MAX, None).await.unwrap(), 1);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.runs, stats.journal_records, stats.blobs), (0, 0, 0));
    }

    /// The writer's append cache (fence and sequence checked without a query) never hides another
    /// connection's commit: a second store on the same file takes the run over and appends, and the first
    /// one's next fenced append is refused, then its append at a stale sequence number too.
    #[tokio::test]
    async fn another_connections_commits_are_seen_by_the_append_cache() {
        use crate::conformance::{fresh_run, sample_owner, sealed_chain, update_of};
        use flujo_core::{RunStatus, StoreError};

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shared.db");
        let a = SqliteStore::open(&file, SqliteOptions::default()).unwrap();
        let b = SqliteStore::open(&file, SqliteOptions::default()).unwrap();
        let mut run = fresh_run("r", "p", RunStatus::Running, 1);
        run.owner = Some(sample_owner("old"));
        a.create_run(&run).await.unwrap();
        let chain = sealed_chain("r", 4);
        a.append_fenced(&chain[0], "old").await.unwrap();
        a.append_fenced(&chain[1], "old").await.unwrap();
        // The other connection takes the run over and appends.
        let mut take = update_of(&run, vec![RunStatus::Running], RunStatus::Running);
        take.owner = Some(sample_owner("new"));
        take.expected_owner = Some(Some("old".to_owned()));
        b.update_run(&take).await.unwrap();
        let e = a.append_fenced(&chain[2], "old").await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
        b.append_fenced(&chain[2], "new").await.unwrap();
        // The first store's idea of the next sequence number is stale too.
        let e = a.append(&chain[2]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
        a.append_fenced(&chain[3], "new").await.unwrap();
        assert_eq!(b.load_journal("r").await.unwrap().len(), 4);
    }

    #[test]
    fn group_commit_average() {
        assert_eq!(GroupCommitStats::default().writes_per_transaction(), 0.0);
        assert_eq!(GroupCommitStats { transactions: 2, writes: 5, checkpoints: 0 }.writes_per_transaction(), 2.5);
    }
}
