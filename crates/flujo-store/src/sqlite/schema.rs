//! Opening SQLite connections and migrating the schema.
//!
//! The schema version lives in `PRAGMA user_version`; [`MIGRATIONS`]`[i]` takes a database from version `i` to
//! `i + 1`. Migrations run in one `BEGIN IMMEDIATE` transaction, which also serializes two processes opening
//! a new database at once (the second re-reads the version under the lock and finds nothing to do). A
//! database whose version is newer than [`SCHEMA_VERSION`] is refused rather than misread, and so is a
//! database that has tables but was not made by Flujo.

use std::path::Path;
use std::time::Duration;

use flujo_core::StoreError;
use rusqlite::{Connection, OpenFlags};

use super::Durability;

/// The schema version this build of flujo-store reads and writes.
pub const SCHEMA_VERSION: i32 = 10;

/// `PRAGMA application_id` of a Flujo database ("FLJO").
pub(crate) const APPLICATION_ID: i32 = 0x464c_4a4f;

/// How long a connection waits for another process's lock before failing with `Unavailable`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// `MIGRATIONS[i]` upgrades schema version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
    MIGRATION_10,
];

/// Version 10: a compact journal. The table is keyed by `(run_id, seq)` itself (`WITHOUT ROWID`: the run id
/// is stored once per record, not three times); `prev_hash` is gone (it is the previous record's `hash`,
/// which each hash covers); `hash` is its 32 bytes instead of 64 hex digits; `status` is a code (0 completed,
/// 1 failed, -1 for a value no Flujo wrote, which reads back as corrupt); `hash_scheme` says how it was
/// computed (records written before are scheme 1, `flujo_core::HashScheme::V1`, and still verify); the
/// `(run_id, path)` index, which no query used, is dropped. A hash that is not 64 lowercase hex digits (a
/// damaged journal) is kept as its bytes, so verification still reports it.
const MIGRATION_10: &str = "
CREATE TABLE journal_v10 (
    run_id             TEXT    NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq                INTEGER NOT NULL,
    path               TEXT    NOT NULL,
    step               TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    status             INTEGER NOT NULL,
    generation         INTEGER NOT NULL,
    output             TEXT,
    output_ref         TEXT    REFERENCES blobs (hash),
    patch              TEXT    NOT NULL,
    attempts           INTEGER NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost_usd           REAL,
    started_at_ms      INTEGER NOT NULL,
    latency_ms         REAL,
    metadata           TEXT,
    feedback           TEXT,
    hash               BLOB    NOT NULL,
    hash_scheme        INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq),
    CHECK ((output IS NULL) <> (output_ref IS NULL))
) STRICT, WITHOUT ROWID;
INSERT INTO journal_v10 (run_id, seq, path, step, kind, status, generation, output, output_ref, patch, attempts,
    prompt_tokens, completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, feedback, hash, hash_scheme,
    cached_tokens, cache_write_tokens, reasoning_tokens)
SELECT run_id, seq, path, step, kind, CASE status WHEN 'completed' THEN 0 WHEN 'failed' THEN 1 ELSE -1 END,
    generation, output, output_ref, patch, attempts, prompt_tokens,
    completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, feedback,
    CASE WHEN length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*' THEN unhex(hash) ELSE CAST(hash AS BLOB) END, 1,
    cached_tokens, cache_write_tokens, reasoning_tokens
FROM journal;
DROP INDEX journal_run_path;
DROP TABLE journal;
ALTER TABLE journal_v10 RENAME TO journal;
";

/// Version 9: a journal record's usage details (`flujo_core::TokenUsage`'s `cached`, `cache_write`,
/// `reasoning`). Records written before have none: 0, which is what their hash covered (zero details are
/// not part of a record's canonical bytes).
const MIGRATION_9: &str = "
ALTER TABLE journal ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE journal ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE journal ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
";

/// Version 8: memories (the SQLite vector store). `memories_version` counts committed changes of the
/// table, so that a store's in-memory index notices another connection's writes without reloading on every
/// unrelated commit to the file.
const MIGRATION_8: &str = "
CREATE TABLE memories (
    seq           INTEGER NOT NULL PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    text          TEXT    NOT NULL,
    embedding     BLOB    NOT NULL,
    metadata      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE memories_version (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 0),
    version   INTEGER NOT NULL
) STRICT;
INSERT INTO memories_version (singleton, version) VALUES (0, 0);
";

/// Version 7: shadow evaluations. The `evaluations` table of version 1 was never written; it is replaced by
/// one whose columns are what claims and filters read, and the whole record as JSON (`record`).
const MIGRATION_7: &str = "
DROP TABLE evaluations;
CREATE TABLE evaluations (
    evaluation_id       TEXT    NOT NULL PRIMARY KEY,
    run_id              TEXT    NOT NULL,
    pipeline            TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    lease_expires_at_ms INTEGER,
    created_at_ms       INTEGER NOT NULL,
    record              TEXT    NOT NULL
) STRICT;
CREATE INDEX evaluations_run ON evaluations (run_id);
CREATE INDEX evaluations_status ON evaluations (status, created_at_ms);
CREATE INDEX evaluations_pipeline ON evaluations (pipeline, created_at_ms);
";

/// Version 6: claims find runs whose lease expired by their own index, not by scanning live running runs.
const MIGRATION_6: &str = "
CREATE INDEX runs_queue_lease ON runs (queue, status, lease_expires_at_ms) WHERE queue IS NOT NULL;
";

/// Version 5: when a worker last claimed a run (queue rate limits).
const MIGRATION_5: &str = "
ALTER TABLE runs ADD COLUMN claimed_at_ms INTEGER;
";

/// Version 4: queues — the queue a run waits on for a worker (`flujo run --queue`), and the index claims use.
const MIGRATION_4: &str = "
ALTER TABLE runs ADD COLUMN queue TEXT;
CREATE INDEX runs_queue ON runs (queue, status, created_at_ms) WHERE queue IS NOT NULL;
";

/// Version 3: where a run's blueprint came from (`origin`, JSON: folder and file hashes) and the run row's
/// commitment to its journal (`journal_head`, JSON: record count and last hash).
const MIGRATION_3: &str = "
ALTER TABLE runs ADD COLUMN origin TEXT;
ALTER TABLE runs ADD COLUMN journal_head TEXT;
";

/// Version 2: run ownership — the process walking a run (`owner_id`, `owner` as JSON) and its lease.
const MIGRATION_2: &str = "
ALTER TABLE runs ADD COLUMN owner_id TEXT;
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at_ms INTEGER;
";

/// Version 1: runs, journal, blobs; spans, evaluations and system state (empty until later versions use them).
const MIGRATION_1: &str = "
CREATE TABLE runs (
    run_id           TEXT    NOT NULL PRIMARY KEY,
    pipeline_name    TEXT    NOT NULL,
    pipeline_version TEXT    NOT NULL,
    pipeline_hash    TEXT    NOT NULL,
    definition       TEXT,
    status           TEXT    NOT NULL,
    input            TEXT    NOT NULL,
    initial_context  TEXT    NOT NULL,
    pending          TEXT    NOT NULL,
    output           TEXT,
    error            TEXT,
    generation       INTEGER NOT NULL,
    total_cost_usd   REAL,
    total_tokens     INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_pipeline_name ON runs (pipeline_name);
CREATE INDEX runs_created_at_ms ON runs (created_at_ms);

CREATE TABLE blobs (
    hash  TEXT NOT NULL PRIMARY KEY,
    bytes BLOB NOT NULL
) STRICT;

CREATE TABLE journal (
    run_id            TEXT    NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq               INTEGER NOT NULL,
    path              TEXT    NOT NULL,
    step              TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    generation        INTEGER NOT NULL,
    output            TEXT,
    output_ref        TEXT    REFERENCES blobs (hash),
    patch             TEXT    NOT NULL,
    attempts          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd          REAL,
    started_at_ms     INTEGER NOT NULL,
    latency_ms        REAL,
    metadata          TEXT,
    feedback          TEXT,
    prev_hash         TEXT    NOT NULL,
    hash              TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq),
    CHECK ((output IS NULL) <> (output_ref IS NULL))
) STRICT;
CREATE INDEX journal_run_path ON journal (run_id, path);

CREATE TABLE spans (
    span_id        TEXT    NOT NULL PRIMARY KEY,
    run_id         TEXT    NOT NULL,
    parent_span_id TEXT,
    path           TEXT,
    name           TEXT    NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    ended_at_ms    INTEGER,
    status         TEXT,
    attributes     TEXT
) STRICT;
CREATE INDEX spans_run ON spans (run_id);

CREATE TABLE evaluations (
    evaluation_id TEXT    NOT NULL PRIMARY KEY,
    run_id        TEXT    NOT NULL,
    path          TEXT,
    name          TEXT    NOT NULL,
    score         REAL,
    passed        INTEGER,
    feedback      TEXT,
    metadata      TEXT,
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX evaluations_run ON evaluations (run_id);

CREATE TABLE system_state (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// Maps a SQLite error to the store's error type: damaged files are `Corrupt`, everything else (I/O, locks,
/// permissions) is `Unavailable`.
pub(crate) fn sql_error(what: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("sqlite: {what}: {e}"))
        }
        _ => StoreError::Unavailable(format!("sqlite: {what}: {e}")),
    }
}

/// Where a database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location<'a> {
    File(&'a Path),
    Memory,
}

/// Opens the writer connection: creates the file (and its parent directories), enables WAL, sets the
/// durability and migrates the schema.
pub(crate) fn open_writer(location: Location<'_>, durability: Durability) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = match location {
        Location::File(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create directory {}: {e}", parent.display()))
                })?;
            }
            Connection::open_with_flags(path, flags)
                .map_err(|e| sql_error(&format!("cannot open {}", path.display()), e))?
        }
        Location::Memory => Connection::open_in_memory_with_flags(flags)
            .map_err(|e| sql_error("cannot open an in-memory database", e))?,
    };
    configure(&conn)?;
    // Persistent, and must be set outside a transaction. An in-memory database reports `memory`.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| sql_error("cannot enable WAL mode", e))?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Strict => "FULL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))
        .map_err(|e| sql_error("cannot set synchronous", e))?;
    // Checkpoints run in the background (`worker::Checkpointer`); the writer's own is a backstop.
    // A WAL that grew during a long busy stretch is cut back to this size when SQLite restarts it.
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = {}; PRAGMA journal_size_limit = {};",
        super::worker::WRITER_CHECKPOINT_PAGES,
        super::worker::WAL_CHECKPOINT_ON_OPEN
    ))
    .map_err(|e| sql_error("cannot set wal_autocheckpoint", e))?;
    migrate(&mut conn)?;
    if let Location::File(path) = location {
        checkpoint_a_large_wal(&conn, path);
    }
    Ok(conn)
}

/// Opens a second, query-only connection to a migrated file database (WAL lets it read while the writer
/// writes).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| sql_error(&format!("cannot open {} for reading", path.display()), e))?;
    configure(&conn)?;
    conn.execute_batch("PRAGMA query_only = ON;").map_err(|e| sql_error("cannot set query_only", e))?;
    Ok(conn)
}

/// Checkpoints a WAL a previous process left large (it exited during a long busy stretch): opening the
/// file has just read all of it to recover its index, and every later process would read it again. Passive:
/// it never waits for another process using the file, and a failure only leaves the WAL as it was.
fn checkpoint_a_large_wal(conn: &Connection, path: &Path) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let large = std::fs::metadata(&wal).is_ok_and(|m| m.len() > super::worker::WAL_CHECKPOINT_ON_OPEN);
    if large {
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

/// Opens the background checkpointer's connection to a migrated file database (it writes only by
/// checkpointing; `synchronous` as SQLite's default, FULL, so a checkpoint syncs what it copies).
pub(crate) fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| sql_error(&format!("cannot open {} for checkpoints", path.display()), e))?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_error("cannot set busy_timeout", e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch("PRAGMA foreign_keys = ON;").map_err(|e| sql_error("cannot enable foreign keys", e))
}

fn pragma_int(conn: &Connection, name: &str) -> Result<i32, StoreError> {
    conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
        .map_err(|e| sql_error(&format!("cannot read {name}"), e))
}

/// The error for a database written by a newer Flujo.
fn too_new(found: i32) -> StoreError {
    StoreError::Unavailable(format!(
        "database schema version {found} is newer than this flujo ({SCHEMA_VERSION}); upgrade flujo"
    ))
}

/// Brings the schema to [`SCHEMA_VERSION`], or refuses the database.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = pragma_int(conn, "user_version")?;
    if version > SCHEMA_VERSION {
        return Err(too_new(version));
    }
    if version == SCHEMA_VERSION {
        return check_application_id(conn);
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| sql_error("cannot start the migration", e))?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let version = pragma_int(&tx, "user_version")?;
    if version > SCHEMA_VERSION {
        return Err(too_new(version));
    }
    if version == 0 {
        let app_id = pragma_int(&tx, "application_id")?;
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sql_error("cannot list tables", e))?;
        if app_id != APPLICATION_ID && tables > 0 {
            return Err(not_flujo());
        }
    } else {
        check_application_id(&tx)?;
    }
    let from =
        usize::try_from(version).map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.execute_batch(sql).map_err(|e| sql_error(&format!("migration to schema version {}", i + 1), e))?;
    }
    tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"))
        .map_err(|e| sql_error("cannot record the schema version", e))?;
    tx.commit().map_err(|e| sql_error("cannot commit the migration", e))
}

fn not_flujo() -> StoreError {
    StoreError::Unavailable("the database exists but was not created by flujo (foreign application_id)".to_owned())
}

fn check_application_id(conn: &Connection) -> Result<(), StoreError> {
    if pragma_int(conn, "application_id")? == APPLICATION_ID {
        Ok(())
    } else {
        Err(not_flujo())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_cover_every_version() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    }

    #[test]
    fn a_fresh_database_gets_every_table_and_the_current_version() {
        let conn = open_writer(Location::Memory, Durability::Normal).unwrap();
        assert_eq!(pragma_int(&conn, "user_version").unwrap(), SCHEMA_VERSION);
        assert_eq!(pragma_int(&conn, "application_id").unwrap(), APPLICATION_ID);
        assert_eq!(pragma_int(&conn, "foreign_keys").unwrap(), 1);
        let mut stmt = conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").unwrap();
        let names: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            names,
            ["blobs", "evaluations", "journal", "memories", "memories_version", "runs", "spans", "system_state"]
        );
    }

    #[test]
    fn durability_sets_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        let normal = open_writer(Location::File(&dir.path().join("n.db")), Durability::Normal).unwrap();
        assert_eq!(pragma_int(&normal, "synchronous").unwrap(), 1);
        let strict = open_writer(Location::File(&dir.path().join("s.db")), Durability::Strict).unwrap();
        assert_eq!(pragma_int(&strict, "synchronous").unwrap(), 2);
        let mode: String = strict.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let err = open_writer(Location::File(&path), Durability::Normal).unwrap_err();
        assert!(err.to_string().contains("not created by flujo"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(open_writer(Location::File(&path), Durability::Normal).unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
        let err = open_writer(Location::File(&path), Durability::Normal).unwrap_err();
        assert_eq!(
            err,
            StoreError::Unavailable(format!(
                "database schema version 99 is newer than this flujo ({SCHEMA_VERSION}); upgrade flujo"
            ))
        );
    }

    /// A database made by the Flujo of schema version 8 (its DDL, its rows as that version wrote them: hex
    /// hashes of scheme 1, `prev_hash` stored) opens, migrates to the compact journal of version 10, reads its
    /// old records unchanged with their chain intact, and continues the chain with records of the current
    /// scheme that carry usage details; a second run whose stored hash was damaged still reports it.
    #[tokio::test]
    async fn a_version_8_database_migrates_and_its_old_records_still_verify() {
        use crate::codec::{encode_record, encode_run};
        use crate::conformance::{sample_run, sealed_chain};
        use crate::sqlite::{SqliteOptions, SqliteStore};
        use flujo_core::{verify_chain, JournalStore, RunStore, TokenUsage};
        use rusqlite::params;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v8.db");
        let run = sample_run("r-old");
        let mut old = sealed_chain("r-old", 5);
        let mut prev = flujo_core::journal::GENESIS_HASH.to_owned();
        for r in &mut old {
            if r.seq == 1 {
                r.status = flujo_core::StepStatus::Failed;
                r.feedback = Some("boom".into());
            }
            r.seal_with(&prev, flujo_core::HashScheme::V1);
            prev.clone_from(&r.hash);
        }
        let mut damaged = old.clone();
        let mut prev = flujo_core::journal::GENESIS_HASH.to_owned();
        for r in &mut damaged {
            r.run_id = "r-damaged".into();
            r.seal_with(&prev, flujo_core::HashScheme::V1);
            prev.clone_from(&r.hash);
        }
        damaged[2].hash = "not a hash".into();
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..8] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 8;")).unwrap();
            let mut damaged_run = run.clone();
            damaged_run.run_id = "r-damaged".into();
            for run in [&run, &damaged_run] {
                let r = encode_run(run).unwrap();
                if let Some(b) = &r.definition_blob {
                    conn.execute(
                        "INSERT OR IGNORE INTO blobs (hash, bytes) VALUES (?1, ?2)",
                        params![b.hash, &*b.bytes],
                    )
                    .unwrap();
                }
                conn.execute(
                "INSERT INTO runs (run_id, pipeline_name, pipeline_version, pipeline_hash, definition, status, input, \
                 initial_context, pending, output, error, generation, total_cost_usd, total_tokens, created_at_ms, \
                 updated_at_ms, owner_id, owner, lease_expires_at_ms, origin, journal_head, queue) VALUES (?1, ?2, ?3, \
                 ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
                params![
                    r.run_id,
                    r.pipeline_name,
                    r.pipeline_version,
                    r.pipeline_hash,
                    r.definition,
                    r.status,
                    r.input,
                    r.initial_context,
                    r.pending,
                    r.output,
                    r.error,
                    r.generation,
                    r.total_cost_usd,
                    r.total_tokens,
                    r.created_at_ms,
                    r.updated_at_ms,
                    r.owner_id,
                    r.owner,
                    r.lease_expires_at_ms,
                    r.origin,
                    r.journal_head,
                    r.queue,
                ],
            )
            .unwrap();
            }
            for record in old.iter().chain(&damaged) {
                let j = encode_record(record).unwrap();
                conn.execute(
                    "INSERT INTO journal (run_id, seq, path, step, kind, status, generation, output, output_ref, \
                     patch, attempts, prompt_tokens, completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, \
                     feedback, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                     ?15, ?16, ?17, ?18, ?19, ?20)",
                    params![
                        j.run_id,
                        j.seq,
                        j.path,
                        j.step,
                        j.kind,
                        j.status,
                        j.generation,
                        j.output,
                        j.output_ref,
                        j.patch,
                        j.attempts,
                        j.prompt_tokens,
                        j.completion_tokens,
                        j.cost_usd,
                        j.started_at_ms,
                        j.latency_ms,
                        j.metadata,
                        j.feedback,
                        record.prev_hash,
                        record.hash,
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(pragma_int(&conn, "user_version").unwrap(), SCHEMA_VERSION);
        assert_eq!(store.get_run("r-old").await.unwrap(), Some(run));
        let loaded = store.load_journal("r-old").await.unwrap();
        assert_eq!(loaded, old);
        assert!(loaded.iter().all(|r| r.hash_scheme == flujo_core::HashScheme::V1));
        verify_chain(&loaded).unwrap();
        let tail = store.load_journal_from("r-old", 3).await.unwrap();
        assert_eq!(tail, old[3..]);
        let hashes: Vec<Vec<u8>> = conn
            .prepare("SELECT hash FROM journal WHERE run_id = 'r-old' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(hashes.iter().all(|h| h.len() == 32), "hashes are stored as 32 bytes");
        let damaged_loaded = store.load_journal("r-damaged").await.unwrap();
        assert_eq!(damaged_loaded[2].hash, "not a hash");
        let err = verify_chain(&damaged_loaded).unwrap_err();
        assert_eq!(err.seq, 2, "{err}");
        // The chain continues with a record that carries details.
        let mut next = crate::conformance::sample_record("r-old", 5);
        next.tokens = TokenUsage::new(900, 300).with_cache(500, 100).with_reasoning(200);
        next.seal(&old[4].hash);
        store.append(&next).await.unwrap();
        let loaded = store.load_journal("r-old").await.unwrap();
        assert_eq!(loaded.last(), Some(&next));
        assert_eq!(next.hash_scheme, flujo_core::HashScheme::V2);
        verify_chain(&loaded).unwrap();
        let details: (i64, i64, i64) = conn
            .query_row(
                "SELECT cached_tokens, cache_write_tokens, reasoning_tokens FROM journal WHERE seq = 5",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(details, (500, 100, 200));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = open_writer(Location::File(&path), Durability::Normal).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }
}
