//! The Postgres store (feature `postgres`): the same [`Store`] as SQLite, shared by many processes and
//! machines.
//!
//! * **Connections.** A deadpool pool of tokio-postgres clients (`pool_size`, default 8). Statements are
//!   prepared once per connection; concurrent calls on one connection are pipelined by tokio-postgres, so
//!   commits of concurrent runs share round trips.
//! * **One round trip per step.** [`JournalStore::append`] is a single statement: it inserts the record's new
//!   blobs and the record, only if the record's `seq` is the run's next position (the previous record exists,
//!   or `seq` is 0 and the run exists). The primary key `(run_id, seq)` settles races: of two writers
//!   appending the same position, one fails, and is told it lost the run.
//! * **Group commit.** While an append is in flight, the appends of other runs go to a batching task that
//!   writes all waiting rows in one multi-row statement and one transaction (`group`): one WAL flush for many
//!   steps. A row the batch does not insert is appended alone, which says exactly why it is refused.
//! * **Lost connections.** When an append's connection fails mid-statement, the store cannot know whether the
//!   record committed; it reconnects (with backoff) and reads the record at that position: the same hash
//!   means committed, none means not committed, and the append is retried; anything else is a conflict. A
//!   step is never reported committed unless it is.
//! * **Same bytes as SQLite.** Rows are encoded by the shared codec: JSON as `TEXT` (not `jsonb`, which would
//!   reorder keys under the journal hash), large values as content-addressed blobs, definitions stored once.
//! * **Schema.** Versioned migrations in the `flujo_schema` table, applied on open under an advisory lock; a
//!   newer schema is refused. Tables live in the URI's `schema=` (default `public`).
//! * **Secrets.** The password is read from the URI and handed to the driver only; [`Store::describe`], the
//!   `Debug` output and every error name user, host, port and database, never the password.

mod config;
mod group;
mod listen;
mod schema;
mod tls;
mod vector;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use flujo_core::{
    BlobStore, ClaimRequest, JournalRecord, JournalStore, RunFilter, RunRecord, RunStatus, RunStore, RunUpdate, Store,
    StoreError, SystemStateStore, Value,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

pub use config::SslMode;
pub use schema::SCHEMA_VERSION;
pub use vector::{open_vector_store_blocking, PostgresVectorStore, DEFAULT_EF_SEARCH, VECTOR_SCHEMA_VERSION};

use crate::codec::{
    self, decode_journal, decode_run, hash_from_column, patch_value_refs, prefix_upper_bound, BlobResolver, NewBlob,
    StoredRecord, StoredRun, DEFINITION_REF,
};
use crate::{blob_hash, owner_conflict, seq_conflict, status_conflict};
use config::PgConfig;

/// Counts an append in flight for as long as it lives; `others` were in flight when it started.
struct Appending<'a> {
    count: &'a AtomicUsize,
    others: usize,
}

impl<'a> Appending<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let others = count.fetch_add(1, Ordering::SeqCst);
        Appending { count, others }
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often an append whose connection failed is retried (after checking whether it committed): with the
/// back-off, about 5 s, enough for a server restart.
const APPEND_ATTEMPTS: u32 = 8;

/// The longest back-off between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The first back-off before reconnecting; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// A Postgres error as a [`StoreError`], saying what was being done. Database errors keep their SQLSTATE.
pub(crate) fn pg_error(doing: &str, e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!("{doing}: {} (SQLSTATE {})", db.message(), db.code().code())),
        None => StoreError::Unavailable(format!("{doing}: {e}")),
    }
}

/// The SQL text of every statement, with the schema name filled in.
pub(crate) struct Sql {
    /// The quoted schema name (`"public"`).
    pub schema: String,
    create_run: String,
    get_run: String,
    update_run: String,
    run_state: String,
    heartbeat: String,
    append: String,
    record_hash: String,
    next_seq: String,
    load_journal: String,
    put_blob: String,
    get_blob: String,
    get_blobs: String,
    set_state: String,
    get_state: String,
    list_state: String,
    delete_state: String,
    prefix_bounded: String,
    prefix_open: String,
    claim: String,
}

const RUN_COLUMNS: &str = "run_id, pipeline_name, pipeline_version, pipeline_hash, definition, status, input, \
                           initial_context, pending, output, error, generation, total_cost_usd, total_tokens, \
                           created_at_ms, updated_at_ms, owner, lease_expires_at_ms, origin, journal_head, queue";

const RECORD_COLUMNS: &str = "run_id, seq, path, step, kind, status, generation, output, output_ref, patch, attempts, \
                              prompt_tokens, completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, \
                              feedback, hash, hash_scheme, cached_tokens, cache_write_tokens, reasoning_tokens";

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Sql {
            create_run: format!(
                "WITH def AS (INSERT INTO {s}.blobs (hash, bytes) SELECT $22::text, $23::bytea WHERE $22::text IS NOT \
                 NULL ON CONFLICT (hash) DO NOTHING RETURNING octet_length(bytes) AS n) \
                 INSERT INTO {s}.runs (run_id, pipeline_name, pipeline_version, pipeline_hash, definition, status, \
                 input, initial_context, pending, output, error, generation, total_cost_usd, total_tokens, \
                 created_at_ms, updated_at_ms, owner_id, owner, lease_expires_at_ms, origin, journal_head, queue) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
                 $21, $24) RETURNING (SELECT coalesce(sum(n), 0)::bigint FROM def)"
            ),
            get_run: format!(
                "SELECT {RUN_COLUMNS}, b.bytes FROM {s}.runs r LEFT JOIN {s}.blobs b ON r.definition LIKE 'blob:%' \
                 AND b.hash = substr(r.definition, 6) WHERE r.run_id = $1"
            )
            .replace("SELECT run_id,", "SELECT r.run_id,"),
            update_run: format!(
                "UPDATE {s}.runs SET status = $2, pending = $3, output = $4, error = $5, generation = $6, \
                 total_cost_usd = $7, total_tokens = $8, updated_at_ms = $9, owner_id = $10, owner = $11, \
                 lease_expires_at_ms = $12, journal_head = COALESCE($13, journal_head) \
                 WHERE run_id = $1 AND (cardinality($14::text[]) = 0 OR status = ANY($14::text[])) \
                 AND (NOT $15::bool OR owner_id IS NOT DISTINCT FROM $16::text)"
            ),
            run_state: format!("SELECT status, owner_id FROM {s}.runs WHERE run_id = $1"),
            heartbeat: format!(
                "UPDATE {s}.runs SET lease_expires_at_ms = $3 WHERE run_id = $1 AND owner_id = $2 AND status = \
                 'running'"
            ),
            append: format!(
                "WITH nb AS (INSERT INTO {s}.blobs (hash, bytes) SELECT * FROM unnest($21::text[], $22::bytea[]) \
                 ON CONFLICT (hash) DO NOTHING RETURNING octet_length(bytes) AS n), \
                 ins AS (INSERT INTO {s}.journal ({RECORD_COLUMNS}) SELECT $1::text, $2::bigint, $3::text, $4::text, \
                 $5::text, $6::text, $7::bigint, $8::text, $9::text, $10::text, $11::bigint, $12::bigint, $13::bigint, \
                 $14::float8, $15::bigint, $16::float8, $17::text, $18::text, $19::bytea, $20::smallint, $24::bigint, \
                 $25::bigint, $26::bigint \
                 WHERE EXISTS (SELECT 1 FROM {s}.runs WHERE run_id = $1 AND ($23::text IS NULL OR \
                 (owner_id = $23::text AND status = 'running')) FOR SHARE) \
                 AND ($2::bigint = 0 OR EXISTS (SELECT 1 FROM {s}.journal WHERE run_id = $1 AND seq = $2::bigint - 1)) \
                 RETURNING 1) \
                 SELECT (SELECT count(*) FROM ins), (SELECT coalesce(sum(n), 0)::bigint FROM nb)"
            ),
            record_hash: format!("SELECT hash FROM {s}.journal WHERE run_id = $1 AND seq = $2"),
            next_seq: format!(
                "SELECT (SELECT coalesce(max(seq) + 1, 0) FROM {s}.journal WHERE run_id = $1), \
                 EXISTS (SELECT 1 FROM {s}.runs WHERE run_id = $1)"
            ),
            load_journal: format!(
                "SELECT {RECORD_COLUMNS} FROM {s}.journal WHERE run_id = $1 AND seq >= $2 ORDER BY seq"
            ),
            put_blob: format!(
                "INSERT INTO {s}.blobs (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING RETURNING 1"
            ),
            get_blob: format!("SELECT bytes FROM {s}.blobs WHERE hash = $1"),
            get_blobs: format!("SELECT hash, bytes FROM {s}.blobs WHERE hash = ANY($1::text[])"),
            set_state: format!(
                "INSERT INTO {s}.system_state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = \
                 excluded.value"
            ),
            get_state: format!("SELECT value FROM {s}.system_state WHERE key = $1"),
            list_state: format!(
                "SELECT key, value FROM {s}.system_state WHERE left(key, char_length($1)) = $1 ORDER BY key COLLATE \"C\""
            ),
            delete_state: format!("DELETE FROM {s}.system_state WHERE key = $1"),
            prefix_bounded: format!(
                "SELECT run_id FROM {s}.runs WHERE run_id >= $1 AND run_id < $2 ORDER BY run_id LIMIT $3"
            ),
            prefix_open: format!("SELECT run_id FROM {s}.runs WHERE run_id >= $1 ORDER BY run_id LIMIT $2"),
            // `SKIP LOCKED`: concurrent claimers take disjoint runs without waiting for each other. Queued runs
            // and runs whose lease expired are looked up apart, each by its own index (`runs_queue`,
            // `runs_queue_lease`), so a claim never scans the queue's live running runs.
            claim: format!(
                "WITH queued AS (SELECT run_id, created_at_ms FROM {s}.runs WHERE queue = ANY($1::text[]) \
                 AND status = 'queued' ORDER BY created_at_ms, run_id LIMIT $6 FOR UPDATE SKIP LOCKED), \
                 expired AS (SELECT run_id, created_at_ms FROM {s}.runs WHERE queue = ANY($1::text[]) \
                 AND status = 'running' AND lease_expires_at_ms < $5 ORDER BY created_at_ms, run_id LIMIT $6 \
                 FOR UPDATE SKIP LOCKED), \
                 pick AS (SELECT run_id FROM (SELECT * FROM queued UNION ALL SELECT * FROM expired) AS c \
                 ORDER BY created_at_ms, run_id LIMIT $6) \
                 UPDATE {s}.runs SET status = 'running', owner_id = $2, owner = $3, lease_expires_at_ms = $4, \
                 updated_at_ms = $5, claimed_at_ms = $5 WHERE run_id IN (SELECT run_id FROM pick) \
                 RETURNING run_id, created_at_ms"
            ),
            schema: s,
        }
    }
}

/// A durable [`Store`] in a Postgres database. Cloning is not needed: share it as `Arc<dyn Store>`.
pub struct PostgresStore {
    pool: Pool,
    sql: Sql,
    config: PgConfig,
    bytes_written: AtomicU64,
    /// The multi-row append of group commit (`group`).
    batch_sql: Arc<String>,
    /// The batching task's queue, started on first need (on the runtime that appends).
    batch_tx: Mutex<Option<mpsc::UnboundedSender<group::Pending>>>,
    /// Appends in flight: while one is, others go through the batching task.
    appending: AtomicUsize,
    /// `LISTEN flujo_queued`, started on the first `wait_for_queued` (`listen`).
    queued_events: tokio::sync::OnceCell<Arc<tokio::sync::broadcast::Sender<String>>>,
    definitions: codec::DefinitionCache,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("uri", &self.config.describe)
            .field("ssl", &self.config.ssl)
            .field("pool_size", &self.config.pool_size)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database `uri` names, creates or migrates Flujo's tables, and returns the store.
    ///
    /// An unreachable server, a refused password or a missing database is [`StoreError::Unavailable`] with a
    /// message naming the host, port, database and user (never the password).
    pub async fn connect(uri: &str) -> Result<Self, StoreError> {
        let config = PgConfig::parse(uri)?;
        let tls = tls::connector(config.ssl, config.root_cert.as_deref())?;
        // One direct connection creates or migrates the tables, and proves the server, the credentials
        // and the database are right before any run starts.
        let (mut client, connection) = config.pg.connect(tls.clone()).await.map_err(|e| connect_error(&config, e))?;
        let driver = tokio::spawn(connection);
        let sql = Sql::new(&config.schema);
        let migrated = schema::migrate(&mut client, &sql, &config.schema).await;
        drop(client);
        let _ = driver.await;
        migrated?;
        let manager =
            Manager::from_config(config.pg.clone(), tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(60)))
            .create_timeout(config.pg.get_connect_timeout().copied())
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the connection pool: {e}")))?;
        Ok(PostgresStore {
            pool,
            batch_sql: Arc::new(group::batch_sql(&sql.schema)),
            sql,
            config,
            bytes_written: AtomicU64::new(0),
            batch_tx: Mutex::new(None),
            appending: AtomicUsize::new(0),
            queued_events: tokio::sync::OnceCell::new(),
            definitions: codec::DefinitionCache::default(),
        })
    }

    /// [`PostgresStore::connect`] for synchronous callers ([`crate::open_store`]): connects on a helper thread
    /// with its own runtime, so it works inside and outside an async runtime. Connections of the pool are
    /// made later, on the runtime that uses the store.
    pub fn connect_blocking(uri: &str) -> Result<Self, StoreError> {
        let uri = uri.to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Unavailable(format!("cannot start a runtime to connect: {e}")))?;
            rt.block_on(PostgresStore::connect(&uri))
        })
        .join()
        .unwrap_or_else(|_| Err(StoreError::Unavailable("the connecting thread panicked".to_owned())))
    }

    /// The Postgres schema holding Flujo's tables.
    pub fn schema(&self) -> &str {
        &self.config.schema
    }

    /// A pooled connection; waits for a free one, and reconnects a broken one.
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => connect_error(&self.config, e),
            other => StoreError::Unavailable(format!(
                "no connection to {} (database {}): {other}",
                self.config.endpoint, self.config.database
            )),
        })
    }

    fn count(&self, bytes: i64) {
        self.bytes_written.fetch_add(bytes.unsigned_abs(), Ordering::Relaxed);
    }

    /// One attempt of an append; `Err(None)` when the connection failed (the outcome is unknown).
    async fn try_append(&self, r: &codec::RecordRow) -> Result<(), Option<StoreError>> {
        let conn = self.conn().await.map_err(Some)?;
        let st = conn.prepare_cached(&self.sql.append).await.map_err(|e| lost_or(e, "append"))?;
        let hashes: Vec<&str> = r.blobs.iter().map(|b| b.hash.as_str()).collect();
        let bytes: Vec<&[u8]> = r.blobs.iter().map(|b| &*b.bytes).collect();
        let scheme = i16::try_from(r.hash_scheme).unwrap_or(i16::MAX);
        let params: [&(dyn ToSql + Sync); 26] = [
            &r.run_id,
            &r.seq,
            &r.path,
            &r.step,
            &r.kind,
            &r.status,
            &r.generation,
            &r.output,
            &r.output_ref,
            &r.patch,
            &r.attempts,
            &r.prompt_tokens,
            &r.completion_tokens,
            &r.cost_usd,
            &r.started_at_ms,
            &r.latency_ms,
            &r.metadata,
            &r.feedback,
            &r.hash,
            &scheme,
            &hashes,
            &bytes,
            &r.fence_owner,
            &r.cached_tokens,
            &r.cache_write_tokens,
            &r.reasoning_tokens,
        ];
        match conn.query_one(&st, &params).await {
            Ok(row) => {
                if row.get::<_, i64>(0) == 1 {
                    self.count(row.get::<_, i64>(1) + i64::try_from(r.payload_len()).unwrap_or(0));
                    return Ok(());
                }
                Err(Some(self.append_refused(&conn, r).await))
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(Some(self.append_refused(&conn, r).await)),
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                let constraint = e.as_db_error().and_then(|db| db.constraint()).unwrap_or_default();
                if constraint.contains("output_ref") {
                    // A retention run deleted the blob between our insert and our row: insert it again.
                    Err(None)
                } else {
                    Err(Some(StoreError::RunNotFound(r.run_id.clone())))
                }
            }
            Err(e) => Err(lost_or(e, "append")),
        }
    }

    /// Why an append was not applied: the run is unknown, it is not `running` under the fencing owner, or
    /// another writer holds a different position.
    async fn append_refused(&self, conn: &Object, r: &codec::RecordRow) -> StoreError {
        if let Some(owner) = &r.fence_owner {
            match conn.query_opt(&self.sql.run_state, &[&r.run_id]).await {
                Ok(None) => return StoreError::RunNotFound(r.run_id.clone()),
                Ok(Some(row)) => {
                    let status: String = row.get(0);
                    let stored: Option<String> = row.get(1);
                    let Some(status) = RunStatus::parse(&status) else {
                        return StoreError::Corrupt(format!("run '{}': column `status`: unknown `{status}`", r.run_id));
                    };
                    if let Err(e) = crate::check_fence(&r.run_id, status, stored.as_deref(), owner) {
                        return e;
                    }
                }
                Err(e) => return pg_error("append", e),
            }
        }
        let row = match conn.query_one(&self.sql.next_seq, &[&r.run_id]).await {
            Ok(row) => row,
            Err(e) => return pg_error("append", e),
        };
        if !row.get::<_, bool>(1) {
            return StoreError::RunNotFound(r.run_id.clone());
        }
        let next: i64 = row.get(0);
        seq_conflict(&r.run_id, next.unsigned_abs(), r.seq.unsigned_abs())
    }

    /// After a lost connection: whether the record at `(run_id, seq)` is this one (`Some(true)`), another
    /// (`Some(false)`), or absent (`None`).
    async fn committed(&self, r: &codec::RecordRow) -> Result<Option<bool>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(&self.sql.record_hash, &[&r.run_id, &r.seq])
            .await
            .map_err(|e| pg_error("append (checking a record after a lost connection)", e))?;
        Ok(row.map(|row| row.get::<_, Vec<u8>>(0) == r.hash))
    }

    /// Appends a row: through the batching task while another append is in flight (group commit), else
    /// alone; after a lost connection, finds out whether it committed (see the module docs).
    async fn append_row(&self, r: codec::RecordRow) -> Result<(), StoreError> {
        let r = Arc::new(r);
        let _appending = Appending::enter(&self.appending);
        let mut lost = false;
        if _appending.others > 0 {
            match self.batched(&r).await {
                group::Outcome::Committed(bytes) => {
                    self.count(i64::try_from(bytes).unwrap_or(0));
                    return Ok(());
                }
                group::Outcome::Alone => {}
                group::Outcome::Lost => lost = true,
            }
        }
        let mut backoff = FIRST_BACKOFF;
        for _ in 0..APPEND_ATTEMPTS {
            if lost {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // The connection went away mid-statement: did the record commit?
                match self.committed(&r).await {
                    Ok(Some(true)) => {
                        self.count(i64::try_from(r.payload_len()).unwrap_or(0));
                        return Ok(());
                    }
                    Ok(Some(false)) => {
                        return Err(seq_conflict(&r.run_id, r.seq.unsigned_abs() + 1, r.seq.unsigned_abs()))
                    }
                    Ok(None) => {}
                    // Still unreachable: wait and check again.
                    Err(_) => continue,
                }
            }
            match self.try_append(&r).await {
                Ok(()) => return Ok(()),
                Err(Some(e)) => return Err(e),
                Err(None) => lost = true,
            }
        }
        // Not reported as committed: it may or may not be. The run is left as it is (`running`, its lease
        // expiring); resuming it replays whatever committed.
        Err(StoreError::Unavailable(format!(
            "append to run '{}' (seq {}): the connection to {} was lost {APPEND_ATTEMPTS} times; whether the record \
             committed is unknown (resuming the run replays it if it did)",
            r.run_id, r.seq, self.config.endpoint
        )))
    }

    /// Hands `r` to the batching task (starting it on this runtime when there is none) and waits for it.
    async fn batched(&self, r: &Arc<codec::RecordRow>) -> group::Outcome {
        let tx = {
            let mut slot = self.batch_tx.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(group::batcher(self.pool.clone(), self.batch_sql.clone(), rx));
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(group::Pending { row: r.clone(), reply }).is_err() {
            return group::Outcome::Alone;
        }
        // The task gone mid-batch (its runtime shut down): the batch may or may not have committed.
        rx.await.unwrap_or(group::Outcome::Lost)
    }

    async fn fetch_blobs(&self, conn: &Object, hashes: Vec<String>) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        if hashes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = conn.query(&self.sql.get_blobs, &[&hashes]).await.map_err(|e| pg_error("read blobs", e))?;
        Ok(rows.into_iter().map(|row| (row.get::<_, String>(0), row.get::<_, Vec<u8>>(1))).collect())
    }
}

/// The error of a failed first connection, naming server, database and user.
fn connect_error(config: &PgConfig, e: tokio_postgres::Error) -> StoreError {
    let place = format!("{} (database {}, user {})", config.endpoint, config.database, config.user);
    let why = match e.code() {
        Some(code) if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            format!("the server refused the credentials: {}", db_message(&e))
        }
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
            format!("database {} does not exist on the server", config.database)
        }
        Some(_) => db_message(&e),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    StoreError::Unavailable(format!("cannot connect to Postgres at {place}: {why}"))
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// A database error is a refusal (`Some`); an I/O or closed-connection error leaves the outcome unknown (`None`).
fn lost_or(e: tokio_postgres::Error, doing: &str) -> Option<StoreError> {
    if e.as_db_error().is_some() {
        Some(pg_error(doing, e))
    } else if e.is_closed() || std::error::Error::source(&e).is_some() {
        None
    } else {
        Some(pg_error(doing, e))
    }
}

fn stored_run(row: &Row) -> Result<StoredRun, StoreError> {
    let text = |i: usize| row.try_get::<_, String>(i);
    let opt = |i: usize| row.try_get::<_, Option<String>>(i);
    let int = |i: usize| row.try_get::<_, i64>(i);
    let conv = |e: tokio_postgres::Error| StoreError::Corrupt(format!("runs row: {e}"));
    Ok(StoredRun {
        run_id: text(0).map_err(conv)?,
        pipeline_name: text(1).map_err(conv)?,
        pipeline_version: text(2).map_err(conv)?,
        pipeline_hash: text(3).map_err(conv)?,
        definition: opt(4).map_err(conv)?,
        definition_value: None,
        status: text(5).map_err(conv)?,
        input: text(6).map_err(conv)?,
        initial_context: text(7).map_err(conv)?,
        pending: text(8).map_err(conv)?,
        output: opt(9).map_err(conv)?,
        error: opt(10).map_err(conv)?,
        generation: int(11).map_err(conv)?,
        total_cost_usd: row.try_get::<_, f64>(12).map_err(conv)?,
        total_tokens: int(13).map_err(conv)?,
        created_at_ms: int(14).map_err(conv)?,
        updated_at_ms: int(15).map_err(conv)?,
        owner: opt(16).map_err(conv)?,
        lease_expires_at_ms: row.try_get::<_, Option<i64>>(17).map_err(conv)?,
        origin: opt(18).map_err(conv)?,
        journal_head: opt(19).map_err(conv)?,
        queue: opt(20).map_err(conv)?,
    })
}

fn stored_record(row: &Row) -> Result<StoredRecord<'_>, StoreError> {
    let conv = |e: tokio_postgres::Error| StoreError::Corrupt(format!("journal row: {e}"));
    Ok(StoredRecord {
        seq: row.try_get(1).map_err(conv)?,
        path: row.try_get(2).map_err(conv)?,
        step: row.try_get(3).map_err(conv)?,
        kind: row.try_get(4).map_err(conv)?,
        status: std::borrow::Cow::Borrowed(row.try_get(5).map_err(conv)?),
        generation: row.try_get(6).map_err(conv)?,
        output: row.try_get(7).map_err(conv)?,
        output_ref: row.try_get(8).map_err(conv)?,
        patch: row.try_get(9).map_err(conv)?,
        attempts: row.try_get(10).map_err(conv)?,
        prompt_tokens: row.try_get(11).map_err(conv)?,
        completion_tokens: row.try_get(12).map_err(conv)?,
        cost_usd: row.try_get(13).map_err(conv)?,
        started_at_ms: row.try_get(14).map_err(conv)?,
        latency_ms: row.try_get(15).map_err(conv)?,
        metadata: row.try_get(16).map_err(conv)?,
        feedback: row.try_get(17).map_err(conv)?,
        hash: row.try_get(18).map_err(conv)?,
        hash_scheme: i64::from(row.try_get::<_, i16>(19).map_err(conv)?),
        cached_tokens: row.try_get(20).map_err(conv)?,
        cache_write_tokens: row.try_get(21).map_err(conv)?,
        reasoning_tokens: row.try_get(22).map_err(conv)?,
    })
}

/// Puts a definition blob's text in place of its `blob:HASH` reference.
/// Resolves a `blob:HASH` definition reference into the parsed definition (parsed once per hash: the store's
/// [`codec::DefinitionCache`] holds the last one).
fn with_definition(
    mut s: StoredRun,
    blobs: &HashMap<String, Vec<u8>>,
    definitions: &codec::DefinitionCache,
) -> Result<StoredRun, StoreError> {
    if let Some(hash) = s.definition.as_deref().and_then(|d| d.strip_prefix(DEFINITION_REF)) {
        let value = match definitions.value(hash) {
            Some(v) => v,
            None => {
                let bytes = blobs.get(hash).ok_or_else(|| {
                    StoreError::Corrupt(format!("run '{}': definition blob {hash} is missing", s.run_id))
                })?;
                definitions.decode(&s.run_id, hash, bytes)?
            }
        };
        s.definition_value = Some(value);
    }
    Ok(s)
}

fn definition_hash(s: &StoredRun) -> Option<String> {
    s.definition.as_deref().and_then(|d| d.strip_prefix(DEFINITION_REF)).map(str::to_owned)
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let r = codec::encode_run(run)?;
        let conn = self.conn().await?;
        let st = conn.prepare_cached(&self.sql.create_run).await.map_err(|e| pg_error("create_run", e))?;
        let def_hash = r.definition_blob.as_ref().map(|b| b.hash.as_str());
        let def_bytes = r.definition_blob.as_ref().map(|b| &*b.bytes);
        let params: [&(dyn ToSql + Sync); 24] = [
            &r.run_id,
            &r.pipeline_name,
            &r.pipeline_version,
            &r.pipeline_hash,
            &r.definition,
            &r.status,
            &r.input,
            &r.initial_context,
            &r.pending,
            &r.output,
            &r.error,
            &r.generation,
            &r.total_cost_usd,
            &r.total_tokens,
            &r.created_at_ms,
            &r.updated_at_ms,
            &r.owner_id,
            &r.owner,
            &r.lease_expires_at_ms,
            &r.origin,
            &r.journal_head,
            &def_hash,
            &def_bytes,
            &r.queue,
        ];
        match conn.query_one(&st, &params).await {
            Ok(row) => {
                self.count(row.get::<_, i64>(0) + i64::try_from(r.payload_len()).unwrap_or(0));
                Ok(())
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(StoreError::RunExists(r.run_id)),
            Err(e) => Err(pg_error("create_run", e)),
        }
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let conn = self.conn().await?;
        let st = conn.prepare_cached(&self.sql.get_run).await.map_err(|e| pg_error("get_run", e))?;
        let Some(row) = conn.query_opt(&st, &[&run_id]).await.map_err(|e| pg_error("get_run", e))? else {
            return Ok(None);
        };
        let stored = stored_run(&row)?;
        let mut blobs = HashMap::new();
        if let (Some(hash), Some(bytes)) =
            (definition_hash(&stored), row.try_get::<_, Option<Vec<u8>>>(21).ok().flatten())
        {
            blobs.insert(hash, bytes);
        }
        with_definition(stored, &blobs, &self.definitions).and_then(decode_run).map(Some)
    }

    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        let u = codec::encode_update(update)?;
        let conn = self.conn().await?;
        let st = conn.prepare_cached(&self.sql.update_run).await.map_err(|e| pg_error("update_run", e))?;
        let expected: Vec<&str> = u.expected.iter().map(|s| s.as_str()).collect();
        let check_owner = u.expected_owner.is_some();
        let expected_owner: Option<&str> = u.expected_owner.as_ref().and_then(|o| o.as_deref());
        let params: [&(dyn ToSql + Sync); 16] = [
            &u.run_id,
            &u.status,
            &u.pending,
            &u.output,
            &u.error,
            &u.generation,
            &u.total_cost_usd,
            &u.total_tokens,
            &u.updated_at_ms,
            &u.owner_id,
            &u.owner,
            &u.lease_expires_at_ms,
            &u.journal_head,
            &expected,
            &check_owner,
            &expected_owner,
        ];
        let n = conn.execute(&st, &params).await.map_err(|e| pg_error("update_run", e))?;
        if n == 1 {
            self.count(i64::try_from(u.payload_len()).unwrap_or(0));
            return Ok(());
        }
        // Not applied: say why, as the other stores do (status first, then owner).
        let row = conn.query_opt(&self.sql.run_state, &[&u.run_id]).await.map_err(|e| pg_error("update_run", e))?;
        let Some(row) = row else { return Err(StoreError::RunNotFound(u.run_id)) };
        let status: String = row.get(0);
        let owner: Option<String> = row.get(1);
        let actual = RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run '{}': column `status`: unknown `{status}`", u.run_id)))?;
        if !u.expected.is_empty() && !u.expected.contains(&actual) {
            return Err(status_conflict(&u.run_id, &u.expected, actual));
        }
        Err(owner_conflict(&u.run_id, expected_owner, owner.as_deref()))
    }

    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease_expires_at_ms: i64) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let st = conn.prepare_cached(&self.sql.heartbeat).await.map_err(|e| pg_error("heartbeat", e))?;
        let n = conn
            .execute(&st, &[&run_id, &owner_id, &lease_expires_at_ms])
            .await
            .map_err(|e| pg_error("heartbeat", e))?;
        if n == 1 {
            return Ok(());
        }
        let row = conn.query_opt(&self.sql.run_state, &[&run_id]).await.map_err(|e| pg_error("heartbeat", e))?;
        let Some(row) = row else { return Err(StoreError::RunNotFound(run_id.to_owned())) };
        let status: String = row.get(0);
        let owner: Option<String> = row.get(1);
        if status != RunStatus::Running.as_str() {
            let actual = RunStatus::parse(&status).unwrap_or(RunStatus::Running);
            return Err(status_conflict(run_id, &[RunStatus::Running], actual));
        }
        Err(owner_conflict(run_id, Some(owner_id), owner.as_deref()))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        if filter.limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM {}.runs WHERE true", self.sql.schema);
        let status = filter.status.map(|s| s.as_str());
        let since = filter.since_ms;
        let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        if let Some(pipeline) = &filter.pipeline {
            params.push(pipeline);
            sql.push_str(&format!(" AND pipeline_name = ${}", params.len()));
        }
        if let Some(since) = &since {
            params.push(since);
            sql.push_str(&format!(" AND created_at_ms >= ${}", params.len()));
        }
        let before_at = filter.before.as_ref().map(|(at, _)| *at);
        let before_id = filter.before.as_ref().map(|(_, id)| id.as_str());
        if let (Some(at), Some(id)) = (&before_at, &before_id) {
            params.push(at);
            let at_n = params.len();
            params.push(id);
            sql.push_str(&format!(
                " AND (created_at_ms < ${at_n} OR (created_at_ms = ${at_n} AND run_id < ${}))",
                params.len()
            ));
        }
        // Newest first; ties by run id descending (byte order: `run_id` has the C collation).
        sql.push_str(" ORDER BY created_at_ms DESC, run_id DESC");
        if let Some(limit) = &limit {
            params.push(limit);
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        let conn = self.conn().await?;
        let st = conn.prepare_cached(&sql).await.map_err(|e| pg_error("list_runs", e))?;
        let rows = conn.query(&st, &params).await.map_err(|e| pg_error("list_runs", e))?;
        let stored = rows.iter().map(stored_run).collect::<Result<Vec<_>, _>>()?;
        let mut hashes: Vec<String> = stored.iter().filter_map(definition_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let blobs = self.fetch_blobs(&conn, hashes).await?;
        stored.into_iter().map(|s| with_definition(s, &blobs, &self.definitions).and_then(decode_run)).collect()
    }

    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn().await?;
        let rows = match prefix_upper_bound(prefix) {
            Some(upper) => conn.query(&self.sql.prefix_bounded, &[&prefix, &upper, &limit]).await,
            None => conn.query(&self.sql.prefix_open, &[&prefix, &limit]).await,
        }
        .map_err(|e| pg_error("find_runs_by_prefix", e))?;
        Ok(rows.into_iter().map(|r| r.get::<_, String>(0)).filter(|id| id.starts_with(prefix)).collect())
    }

    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        let s = &self.sql.schema;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| pg_error("delete_runs", e))?;
        let fail = |e| pg_error("delete_runs", e);
        // Appends wait while blobs are judged unreferenced and deleted: an append that re-used a blob this
        // transaction is about to delete either committed before (and its reference is seen) or inserts the
        // blob again after.
        tx.batch_execute(&format!("LOCK TABLE {s}.blobs IN SHARE ROW EXCLUSIVE MODE")).await.map_err(fail)?;
        let doomed = match status {
            Some(st) => {
                tx.query(
                    &format!(
                        "SELECT run_id, definition FROM {s}.runs WHERE created_at_ms < $1 AND status = $2 FOR UPDATE"
                    ),
                    &[&older_than_ms, &st.as_str()],
                )
                .await
            }
            None => {
                tx.query(
                    &format!(
                        "SELECT run_id, definition FROM {s}.runs WHERE created_at_ms < $1 \
                         AND status NOT IN ('running', 'paused') FOR UPDATE"
                    ),
                    &[&older_than_ms],
                )
                .await
            }
        }
        .map_err(fail)?;
        if doomed.is_empty() {
            tx.commit().await.map_err(fail)?;
            return Ok(0);
        }
        let ids: Vec<String> = doomed.iter().map(|r| r.get::<_, String>(0)).collect();
        // The blobs the doomed runs reference: candidates for deletion.
        let mut candidates: Vec<String> = doomed
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(1))
            .filter_map(|d| d.strip_prefix(DEFINITION_REF).map(str::to_owned))
            .collect();
        let refs = tx
            .query(
                &format!(
                    "SELECT output_ref, patch FROM {s}.journal WHERE run_id = ANY($1::text[]) \
                     AND (output_ref IS NOT NULL OR strpos(patch, '\"value_ref\"') > 0)"
                ),
                &[&ids],
            )
            .await
            .map_err(fail)?;
        for row in &refs {
            candidates.extend(row.get::<_, Option<String>>(0));
            candidates.extend(patch_value_refs(&row.get::<_, String>(1)));
        }
        candidates.sort_unstable();
        candidates.dedup();
        // Journal rows go with their runs (ON DELETE CASCADE).
        let deleted =
            tx.execute(&format!("DELETE FROM {s}.runs WHERE run_id = ANY($1::text[])"), &[&ids]).await.map_err(fail)?;
        if !candidates.is_empty() {
            // A candidate still referenced by a remaining definition, output or patch stays. Keeping every
            // candidate whose hash occurs in a remaining patch is exact for real references (a 64-digit hash
            // occurs nowhere else by chance) and safe when a patch does not parse.
            tx.execute(
                &format!(
                    "DELETE FROM {s}.blobs b WHERE b.hash = ANY($1::text[]) \
                     AND NOT EXISTS (SELECT 1 FROM {s}.runs r WHERE r.definition = 'blob:' || b.hash) \
                     AND NOT EXISTS (SELECT 1 FROM {s}.journal j WHERE j.output_ref = b.hash) \
                     AND NOT EXISTS (SELECT 1 FROM {s}.journal j WHERE strpos(j.patch, b.hash) > 0)"
                ),
                &[&candidates],
            )
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(deleted)
    }

    /// Waits for a `flujo_queued` notification of one of `queues` in this schema (see `listen`).
    async fn wait_for_queued(&self, queues: &[String], timeout_ms: u64) -> Result<bool, StoreError> {
        let events = self.queued_events.get_or_init(|| async { listen::start(self.config.clone()) }).await;
        let mut rx = events.subscribe();
        let wanted: Vec<String> = queues.iter().map(|q| format!("{}/{q}", self.config.schema)).collect();
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(p) if p == listen::EVERYONE || wanted.contains(&p) => return,
                    Ok(_) => {}
                    // Missed some: one of them may have been ours.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(timeout_ms), wait).await;
        Ok(true)
    }

    async fn claim_runs(&self, claim: &ClaimRequest) -> Result<Vec<String>, StoreError> {
        if claim.limit == 0 || claim.queues.is_empty() {
            return Ok(Vec::new());
        }
        let owner = serde_json::to_string(&claim.owner)
            .map_err(|e| StoreError::Unavailable(format!("cannot serialize the owner: {e}")))?;
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        let fail = |e| pg_error("claim_runs", e);
        let mut conn = self.conn().await?;
        let limited: Vec<(&String, u64)> = claim
            .queues
            .iter()
            .filter(|q| claim.max_running.contains_key(*q) || claim.rate_limits.contains_key(*q))
            .map(|q| (q, claim.max_running.get(q).copied().unwrap_or(u64::MAX)))
            .collect();
        let mut claimed: Vec<(i64, String)> = Vec::new();
        if limited.is_empty() {
            let st = conn.prepare_cached(&self.sql.claim).await.map_err(fail)?;
            let rows = conn
                .query(
                    &st,
                    &[&claim.queues, &claim.owner.id, &owner, &claim.lease_expires_at_ms, &claim.now_ms, &limit],
                )
                .await
                .map_err(fail)?;
            claimed.extend(rows.iter().map(|r| (r.get(1), r.get(0))));
        } else {
            // A queue with a global limit: count its live runs and claim within one transaction, under an
            // advisory lock on the queue, so concurrent workers never exceed the limit together.
            let tx = conn.transaction().await.map_err(fail)?;
            let mut left = limit;
            let mut sorted = limited.clone();
            sorted.sort();
            for (queue, max) in sorted {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    &[&format!("flujo-queue:{}:{queue}", self.config.schema)],
                )
                .await
                .map_err(fail)?;
                let live: i64 = tx
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM {}.runs WHERE queue = $1 AND status = 'running' \
                             AND (lease_expires_at_ms IS NULL OR lease_expires_at_ms >= $2)",
                            self.sql.schema
                        ),
                        &[queue, &claim.now_ms],
                    )
                    .await
                    .map_err(fail)?
                    .get(0);
                let mut room = i64::try_from(max).unwrap_or(i64::MAX).saturating_sub(live).clamp(0, left);
                if let Some(rate) = claim.rate_limits.get(queue) {
                    let recent: i64 = tx
                        .query_one(
                            &format!(
                                "SELECT count(*) FROM {}.runs WHERE queue = $1 AND claimed_at_ms > $2",
                                self.sql.schema
                            ),
                            &[queue, &(claim.now_ms - rate.period_ms)],
                        )
                        .await
                        .map_err(fail)?
                        .get(0);
                    room = room.min(i64::try_from(rate.runs).unwrap_or(i64::MAX).saturating_sub(recent).max(0));
                }
                if room == 0 {
                    continue;
                }
                let one = vec![queue.clone()];
                let rows = tx
                    .query(
                        &self.sql.claim,
                        &[&one, &claim.owner.id, &owner, &claim.lease_expires_at_ms, &claim.now_ms, &room],
                    )
                    .await
                    .map_err(fail)?;
                left -= rows.len() as i64;
                claimed.extend(rows.iter().map(|r| (r.get(1), r.get(0))));
            }
            let free: Vec<String> = claim
                .queues
                .iter()
                .filter(|q| !claim.max_running.contains_key(*q) && !claim.rate_limits.contains_key(*q))
                .cloned()
                .collect();
            if !free.is_empty() && left > 0 {
                let rows = tx
                    .query(
                        &self.sql.claim,
                        &[&free, &claim.owner.id, &owner, &claim.lease_expires_at_ms, &claim.now_ms, &left],
                    )
                    .await
                    .map_err(fail)?;
                claimed.extend(rows.iter().map(|r| (r.get(1), r.get(0))));
            }
            tx.commit().await.map_err(fail)?;
        }
        claimed.sort();
        Ok(claimed.into_iter().map(|(_, id)| id).collect())
    }
}

#[async_trait]
impl JournalStore for PostgresStore {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        self.append_row(codec::encode_record(record)?).await
    }

    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        let mut r = codec::encode_record(record)?;
        r.fence_owner = Some(owner_id.to_owned());
        self.append_row(r).await
    }

    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.load_journal_from(run_id, 0).await
    }

    async fn load_journal_from(&self, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        // One snapshot for the records and the blobs they reference.
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| pg_error("load_journal", e))?;
        let st = tx.prepare_cached(&self.sql.load_journal).await.map_err(|e| pg_error("load_journal", e))?;
        let rows = tx.query(&st, &[&run_id, &from]).await.map_err(|e| pg_error("load_journal", e))?;
        let stored = rows.iter().map(stored_record).collect::<Result<Vec<_>, _>>()?;
        let mut hashes: Vec<String> = Vec::new();
        for s in &stored {
            hashes.extend(s.output_ref.map(str::to_owned));
            hashes.extend(patch_value_refs(s.patch));
        }
        hashes.sort_unstable();
        hashes.dedup();
        let blobs = if hashes.is_empty() {
            HashMap::new()
        } else {
            let rows = tx.query(&self.sql.get_blobs, &[&hashes]).await.map_err(|e| pg_error("load_journal", e))?;
            rows.into_iter().map(|row| (row.get::<_, String>(0), row.get::<_, Vec<u8>>(1))).collect()
        };
        // The first record's predecessor: its hash is the first record's `prev_hash` (not stored twice).
        let prev_hash = match from.checked_sub(1) {
            Some(prev) if prev >= 0 && !stored.is_empty() => tx
                .query_opt(&self.sql.record_hash, &[&run_id, &prev])
                .await
                .map_err(|e| pg_error("load_journal", e))?
                .map_or_else(String::new, |row| hash_from_column(&row.get::<_, Vec<u8>>(0))),
            _ => flujo_core::journal::GENESIS_HASH.to_owned(),
        };
        let _ = tx.commit().await;
        let mut resolver = BlobResolver::new(|hash: &str| Ok(blobs.get(hash).cloned()));
        decode_journal(run_id, stored.into_iter().map(Ok), prev_hash, &mut resolver)
    }
}

#[async_trait]
impl BlobStore for PostgresStore {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let hash = blob_hash(bytes);
        let blob = NewBlob { hash, bytes: bytes.into() };
        let conn = self.conn().await?;
        let st = conn.prepare_cached(&self.sql.put_blob).await.map_err(|e| pg_error("put_blob", e))?;
        let inserted = conn.execute(&st, &[&blob.hash, &&*blob.bytes]).await.map_err(|e| pg_error("put_blob", e))?;
        if inserted == 1 {
            self.count(i64::try_from(blob.bytes.len()).unwrap_or(0));
        }
        Ok(blob.hash)
    }

    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn().await?;
        let st = conn.prepare_cached(&self.sql.get_blob).await.map_err(|e| pg_error("get_blob", e))?;
        let row = conn.query_opt(&st, &[&hash]).await.map_err(|e| pg_error("get_blob", e))?;
        Ok(row.map(|r| r.get(0)))
    }
}

#[async_trait]
impl SystemStateStore for PostgresStore {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let conn = self.conn().await?;
        let row = conn.query_opt(&self.sql.get_state, &[&key]).await.map_err(|e| pg_error("get_state", e))?;
        row.map(|r| {
            let text: String = r.get(0);
            codec::parse_json(text.as_bytes())
                .map_err(|e| StoreError::Corrupt(format!("system_state '{key}': column `value`: {e}")))
        })
        .transpose()
    }

    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        let text = serde_json::to_string(value)
            .map_err(|e| StoreError::Unavailable(format!("cannot serialize state '{key}': {e}")))?;
        let conn = self.conn().await?;
        conn.execute(&self.sql.set_state, &[&key, &text]).await.map_err(|e| pg_error("set_state", e))?;
        self.count(i64::try_from(key.len() + text.len()).unwrap_or(0));
        Ok(())
    }

    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn.query(&self.sql.list_state, &[&prefix]).await.map_err(|e| pg_error("list_state", e))?;
        rows.into_iter()
            .map(|r| {
                let (key, text): (String, String) = (r.get(0), r.get(1));
                let value = codec::parse_json(text.as_bytes())
                    .map_err(|e| StoreError::Corrupt(format!("system_state '{key}': column `value`: {e}")))?;
                Ok((key, value))
            })
            .collect()
    }

    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let n = conn.execute(&self.sql.delete_state, &[&key]).await.map_err(|e| pg_error("delete_state", e))?;
        Ok(n > 0)
    }
}

fn evaluation_from(text: &str) -> Result<flujo_core::EvaluationRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("evaluations: column `record`: {e}")))
}

#[async_trait]
impl flujo_core::EvaluationStore for PostgresStore {
    async fn create_evaluation(&self, e: &flujo_core::EvaluationRecord) -> Result<bool, StoreError> {
        let r = crate::codec::EvaluationRow::of(e)?;
        let conn = self.conn().await?;
        let n = conn
            .execute(
                &format!(
                    "INSERT INTO {}.evaluations (evaluation_id, run_id, pipeline, status, lease_expires_at_ms, \
                     created_at_ms, record) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (evaluation_id) DO NOTHING",
                    self.sql.schema
                ),
                &[&r.id, &r.run_id, &r.pipeline, &r.status, &r.lease_expires_at_ms, &r.created_at_ms, &r.record],
            )
            .await
            .map_err(|e| pg_error("create_evaluation", e))?;
        Ok(n > 0)
    }

    async fn update_evaluation(&self, e: &flujo_core::EvaluationRecord) -> Result<bool, StoreError> {
        let r = crate::codec::EvaluationRow::of(e)?;
        let conn = self.conn().await?;
        let n = conn
            .execute(
                &format!(
                    "UPDATE {}.evaluations SET run_id = $2, pipeline = $3, status = $4, lease_expires_at_ms = $5, \
                     created_at_ms = $6, record = $7 WHERE evaluation_id = $1",
                    self.sql.schema
                ),
                &[&r.id, &r.run_id, &r.pipeline, &r.status, &r.lease_expires_at_ms, &r.created_at_ms, &r.record],
            )
            .await
            .map_err(|e| pg_error("update_evaluation", e))?;
        Ok(n > 0)
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
        let fail = |e| pg_error("claim_evaluations", e);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(fail)?;
        let s = &self.sql.schema;
        // `SKIP LOCKED`: concurrent claimers take disjoint evaluations.
        let rows = tx
            .query(
                &format!(
                    "SELECT record FROM {s}.evaluations WHERE status = 'pending' AND (lease_expires_at_ms IS NULL \
                     OR lease_expires_at_ms < $1) ORDER BY created_at_ms, evaluation_id LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                &[&now_ms, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(fail)?;
        let mut claimed = Vec::new();
        for row in rows {
            let text: String = row.get(0);
            let mut e = evaluation_from(&text)?;
            e.owner = Some(owner.to_owned());
            e.lease_expires_at_ms = Some(lease_expires_at_ms);
            e.updated_at_ms = now_ms;
            let r = crate::codec::EvaluationRow::of(&e)?;
            tx.execute(
                &format!("UPDATE {s}.evaluations SET lease_expires_at_ms = $2, record = $3 WHERE evaluation_id = $1"),
                &[&r.id, &lease_expires_at_ms, &r.record],
            )
            .await
            .map_err(fail)?;
            claimed.push(e);
        }
        tx.commit().await.map_err(fail)?;
        Ok(claimed)
    }

    async fn list_evaluations(
        &self,
        filter: &flujo_core::EvaluationFilter,
    ) -> Result<Vec<flujo_core::EvaluationRecord>, StoreError> {
        let conn = self.conn().await?;
        let limit = filter.limit.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let status = filter.status.map(|s| s.as_str());
        let rows = conn
            .query(
                &format!(
                    "SELECT record FROM {}.evaluations WHERE ($1::text IS NULL OR run_id = $1) \
                     AND ($2::text IS NULL OR pipeline = $2) AND ($3::bigint IS NULL OR created_at_ms >= $3) \
                     AND ($4::text IS NULL OR status = $4) ORDER BY created_at_ms, evaluation_id LIMIT $5",
                    self.sql.schema
                ),
                &[&filter.run_id, &filter.pipeline, &filter.since_ms, &status, &limit],
            )
            .await
            .map_err(|e| pg_error("list_evaluations", e))?;
        rows.iter().map(|r| evaluation_from(&r.get::<_, String>(0))).collect()
    }
}

impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.config.describe.clone()
    }

    fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }
}
