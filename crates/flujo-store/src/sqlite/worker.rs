//! The SQLite threads: one writer thread that owns the read-write connection and group-commits, and (for a
//! file database) one reader thread that owns a second, query-only connection, and a checkpoint thread
//! with a third connection that copies the WAL into the database file in the background
//! ([`Checkpointer`]), started by the writer at its first request.
//!
//! Async callers never touch SQLite. They encode their rows on their own task, send a command over a
//! `std::sync::mpsc` channel (never blocks: it is unbounded, and bounded in practice because every caller
//! awaits its reply) and await a `tokio::sync::oneshot` reply.
//!
//! **Group commit.** The writer blocks for one command, then drains every command already queued (up to
//! [`MAX_BATCH`]) and executes them all in one `BEGIN IMMEDIATE … COMMIT` transaction, then replies to each.
//! A caller's future therefore resolves only once the transaction holding its write has committed, and
//! concurrent runs share one commit (and, with `synchronous=FULL`, one fsync). Each command validates
//! before it writes (run exists, next gapless `seq`, compare-and-set status); a rejected command writes
//! nothing and gets its own error while the rest of the batch commits. If a statement fails unexpectedly,
//! the batch is rolled back and its commands are retried one per transaction, so only the culprit fails.
//! A failed `BEGIN` or `COMMIT` fails the whole batch.
//!
//! **Deleting runs** (`delete_runs`) is a write like the others, so it commits atomically with its batch: it
//! collects the blob hashes the doomed rows reference (journal `output_ref`s, patch `value_ref`s, run
//! definitions), deletes the journal rows and runs, then deletes those candidate blobs that no remaining
//! run or journal row references. Finding the remaining references scans the journal once per prune
//! (there is no index on blob references); prune is a maintenance operation.
//!
//! **Cancellation.** A command runs once it is queued, whether or not its caller still waits: a cancelled
//! `append` may or may not have committed, which the next `append` (a seq `Conflict`) or a `load_journal`
//! reveals. Dropping the store closes the channels; the threads finish what is queued and exit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use flujo_core::{
    ClaimRequest, Definition, EvaluationFilter, EvaluationRecord, JournalRecord, RunFilter, RunRecord, RunStatus,
    StoreError, Value,
};
use rusqlite::{params, Connection, OptionalExtension, Row, Statement};
use tokio::sync::oneshot;

use super::schema::sql_error;
use super::SqliteStats;
use crate::codec::{
    decode_record, decode_run, hash_from_column, patch_value_refs, prefix_upper_bound, real_or_nan, BlobResolver,
    DefinitionCache, EvaluationRow, NewBlob, RecordRow, RunRow, StoredRecord, StoredRun, UpdateRow, DEFINITION_REF,
};
use crate::{seq_conflict, status_conflict};

/// Most write commands committed in one transaction.
pub(crate) const MAX_BATCH: usize = 2048;

/// The reply half of a request.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write, executed inside a group-commit transaction.
#[derive(Debug)]
pub(crate) enum Write {
    CreateRun(RunRow),
    UpdateRun(UpdateRow),
    Append(RecordRow),
    PutBlob(NewBlob),
    /// Deletes finished (or explicitly named) runs created before a cutoff; replies with the number deleted.
    DeleteRuns {
        older_than_ms: i64,
        status: Option<RunStatus>,
    },
    /// Inserts or replaces a `system_state` row (the value is JSON text).
    SetState {
        key: String,
        value: String,
    },
    /// Removes a `system_state` row; replies with 1 when it was there, 0 otherwise.
    DeleteState(String),
    /// Inserts an evaluation unless its id exists (1 inserted, 0 not) or, with `replace`, replaces an existing
    /// one (1 replaced, 0 none).
    PutEvaluation {
        row: EvaluationRow,
        replace: bool,
    },
    /// Claims pending evaluations for `owner`; their ids go to `out`.
    ClaimEvaluations {
        owner: String,
        now_ms: i64,
        lease_expires_at_ms: i64,
        limit: usize,
        out: Arc<Mutex<Vec<EvaluationRecord>>>,
    },
    /// Extends the lease of a running run held by `owner_id`.
    Heartbeat {
        run_id: String,
        owner_id: String,
        lease_expires_at_ms: i64,
    },
    /// Claims runs of queues for a worker; the claimed ids are put in `out` (read after the commit reply).
    Claim {
        claim: ClaimRequest,
        owner: String,
        out: Arc<Mutex<Vec<String>>>,
    },
}

#[derive(Debug)]
pub(crate) struct WriteCommand {
    pub write: Write,
    /// Replies, once committed, with the write's count (runs deleted for `DeleteRuns`, otherwise 0).
    pub reply: Reply<u64>,
}

/// A read, executed outside any write transaction.
#[derive(Debug)]
pub(crate) enum Read {
    GetRun(String, Arc<DefinitionCache>, Reply<Option<RunRecord>>),
    ListRuns(RunFilter, Arc<DefinitionCache>, Reply<Vec<RunRecord>>),
    /// The records of a run from a `seq` on.
    LoadJournal(String, u64, Reply<Vec<JournalRecord>>),
    GetBlob(String, Reply<Option<Vec<u8>>>),
    /// Run ids starting with a prefix, ascending, at most `limit`.
    FindRunsByPrefix {
        prefix: String,
        limit: usize,
        reply: Reply<Vec<String>>,
    },
    GetState(String, Reply<Option<Value>>),
    /// `system_state` rows whose key starts with a prefix, in key order.
    ListState(String, Reply<Vec<(String, Value)>>),
    ListEvaluations(EvaluationFilter, Reply<Vec<EvaluationRecord>>),
    /// Served by the writer thread (it reports the writer connection's settings).
    Stats(Reply<SqliteStats>),
}

/// What the writer thread receives. Reads reach it for in-memory databases (which have no second
/// connection) and for [`Read::Stats`].
#[derive(Debug)]
pub(crate) enum Command {
    Write(Box<WriteCommand>),
    Read(Read),
}

/// Counters shared between the store handle and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_written: AtomicU64,
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
    /// WAL checkpoints the background checkpointer completed.
    pub checkpoints: AtomicU64,
}

// ---------------------------------------------------------------------------------------------------------
// Thread loops.

/// The writer thread: group-commits writes until every sender is gone. `checkpoints` (a file database)
/// moves WAL checkpoints off this thread.
pub(crate) fn run_writer(
    conn: Connection,
    commands: Receiver<Command>,
    counters: &Arc<Counters>,
    mut checkpoints: Option<Checkpointer>,
) {
    let mut batch: Vec<WriteCommand> = Vec::new();
    let mut cache = AppendCache::default();
    let mut held = Held::new(&conn);
    let spin = writer_spin();
    while let Some(first) = next_command(&commands, spin) {
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Write(w) => {
                    batch.push(*w);
                    if batch.len() >= MAX_BATCH {
                        commit_batch(&mut held, &mut batch, counters, &mut cache);
                    }
                }
                Command::Read(r) => {
                    // Commit first: a read must never see (or be answered before) an uncommitted write.
                    commit_batch(&mut held, &mut batch, counters, &mut cache);
                    serve_read(&conn, r);
                }
            }
            next = commands.try_recv().ok();
        }
        commit_batch(&mut held, &mut batch, counters, &mut cache);
        if let Some(c) = checkpoints.as_mut() {
            c.after_commits(counters);
        }
    }
}

/// Writes between two requests to the background checkpointer.
const CHECKPOINT_EVERY: u64 = 1000;

/// The WAL size (in pages) at which the writer checkpoints by itself, as SQLite's automatic checkpoint
/// would (its default is 1000): the background checkpoint copies pages while the writer goes on appending,
/// so during a long busy stretch it never catches up with the end of the WAL, which SQLite then cannot
/// restart; this bounds the WAL (≈ 16 MB) and finds most pages already copied. A WAL left larger than
/// [`WAL_CHECKPOINT_ON_OPEN`] by a process that exited mid-stretch is checkpointed by the next writer to
/// open the file (`schema::open_writer`), so later processes do not each read it again to recover it.
pub(crate) const WRITER_CHECKPOINT_PAGES: u32 = 4_000;

/// A WAL file larger than this (bytes) when a writer opens the database is checkpointed at once.
pub(crate) const WAL_CHECKPOINT_ON_OPEN: u64 = 4 << 20;

/// WAL checkpoints on a thread of their own. With `synchronous=NORMAL`, a commit only writes the WAL; the
/// checkpoint that copies WAL pages into the database file is where SQLite syncs to disk (the WAL, then
/// the database) — milliseconds that an automatic checkpoint spends on the writer thread while every
/// waiting commit waits (≈ 12 µs per step of `linear_1000` on the benchmark machine). The writer instead
/// asks this thread, every [`CHECKPOINT_EVERY`] writes, for a `PASSIVE` checkpoint on its own connection,
/// which never waits for (or blocks) the writer or readers; the writer's own checkpoint remains, at
/// [`WRITER_CHECKPOINT_PAGES`], as a bound. The thread and its connection start at the
/// first request (short-lived stores never pay for them) and end with the writer.
pub(crate) struct Checkpointer {
    path: std::path::PathBuf,
    requested_at: u64,
    requests: Option<std::sync::mpsc::SyncSender<()>>,
    failed: bool,
}

impl Checkpointer {
    pub(crate) fn new(path: std::path::PathBuf) -> Self {
        Checkpointer { path, requested_at: 0, requests: None, failed: false }
    }

    /// After a commit: asks for a checkpoint once [`CHECKPOINT_EVERY`] writes were committed since the last
    /// request (a request while one is pending is dropped: that checkpoint will copy these pages too).
    fn after_commits(&mut self, counters: &Arc<Counters>) {
        let writes = counters.writes.load(Ordering::Relaxed);
        if writes.saturating_sub(self.requested_at) < CHECKPOINT_EVERY || self.failed {
            return;
        }
        self.requested_at = writes;
        if self.requests.is_none() {
            match self.spawn(counters) {
                Ok(requests) => self.requests = Some(requests),
                Err(e) => {
                    // The writer's own automatic checkpoint (at WRITER_CHECKPOINT_PAGES) still bounds the WAL.
                    tracing::warn!(path = %self.path.display(), error = %e, "no background WAL checkpoints");
                    self.failed = true;
                    return;
                }
            }
        }
        if let Some(requests) = &self.requests {
            let _ = requests.try_send(());
        }
    }

    fn spawn(&self, counters: &Arc<Counters>) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
        let conn = super::schema::open_checkpointer(&self.path)?;
        let (requests, pending) = std::sync::mpsc::sync_channel(1);
        let counters = Arc::clone(counters);
        std::thread::Builder::new()
            .name("flujo-sqlite-checkpoint".to_owned())
            .spawn(move || run_checkpointer(&conn, &pending, &counters))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the sqlite checkpoint thread: {e}")))?;
        Ok(requests)
    }
}

/// The checkpoint thread: one `PASSIVE` checkpoint per request, until the writer is gone.
fn run_checkpointer(conn: &Connection, requests: &Receiver<()>, counters: &Counters) {
    while requests.recv().is_ok() {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => {
                counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "background WAL checkpoint failed"),
        }
    }
}

/// How long the writer polls for the next command before it sleeps (default 50 µs): a walk's next record
/// usually follows its previous commit within a few microseconds of engine work, and waking a sleeping
/// thread costs more than that on a virtual machine. `FLUJO_SQLITE_WRITER_SPIN_US` sets it (0: sleep at
/// once; `scripts/icount.sh` does, since instructions spent waiting depend on the clock).
pub(crate) fn writer_spin() -> std::time::Duration {
    let micros = std::env::var("FLUJO_SQLITE_WRITER_SPIN_US").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(50);
    std::time::Duration::from_micros(micros)
}

/// The next command: polled for `spin`, then waited for; `None` once every sender is gone.
fn next_command(commands: &Receiver<Command>, spin: std::time::Duration) -> Option<Command> {
    let start = std::time::Instant::now();
    loop {
        match commands.try_recv() {
            Ok(command) => return Some(command),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            Err(std::sync::mpsc::TryRecvError::Empty) if start.elapsed() < spin => std::hint::spin_loop(),
            Err(std::sync::mpsc::TryRecvError::Empty) => return commands.recv().ok(),
        }
    }
}

/// The reader thread: serves reads on its own connection until every sender is gone.
pub(crate) fn run_reader(conn: Connection, reads: Receiver<Read>) {
    while let Ok(read) = reads.recv() {
        serve_read(&conn, read);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Group commit.

/// What a successful write did: bytes written (for `bytes_written`) and its count (see [`WriteCommand`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Done {
    bytes: u64,
    count: u64,
}

impl Done {
    fn bytes(bytes: u64) -> Self {
        Done { bytes, count: 0 }
    }
}

/// Why a command failed.
enum ExecError {
    /// Validation refused it before it wrote anything.
    Rejected(StoreError),
    /// SQLite failed; the command may have written part of its rows.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for ExecError {
    fn from(e: rusqlite::Error) -> Self {
        ExecError::Sql(e)
    }
}

/// Why a whole transaction failed (it has been rolled back).
enum BatchError {
    Begin(rusqlite::Error),
    Statement(rusqlite::Error),
    Commit(rusqlite::Error),
}

impl BatchError {
    fn into_store_error(self) -> StoreError {
        match self {
            BatchError::Begin(e) => sql_error("cannot begin a write transaction", e),
            BatchError::Statement(e) => sql_error("write failed", e),
            BatchError::Commit(e) => sql_error("commit failed", e),
        }
    }
}

/// Executes and commits the queued writes, then replies to each.
fn commit_batch(held: &mut Held<'_>, batch: &mut Vec<WriteCommand>, counters: &Counters, cache: &mut AppendCache) {
    if batch.is_empty() {
        return;
    }
    let commands = std::mem::take(batch);
    match transact(held, &commands, cache) {
        Ok(outcomes) => finish(commands, outcomes, counters),
        Err(BatchError::Statement(_)) if commands.len() > 1 => {
            for command in commands {
                match transact(held, std::slice::from_ref(&command), cache) {
                    Ok(outcomes) => finish(vec![command], outcomes, counters),
                    Err(e) => {
                        let _ = command.reply.send(Err(e.into_store_error()));
                    }
                }
            }
        }
        Err(e) => {
            let err = e.into_store_error();
            for command in commands {
                let _ = command.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Runs `commands` in one transaction. `Ok` holds each command's outcome (what it did, or its rejection).
fn transact(
    held: &mut Held<'_>,
    commands: &[WriteCommand],
    cache: &mut AppendCache,
) -> Result<Vec<Result<Done, StoreError>>, BatchError> {
    let conn = held.conn;
    held.get(Held::BEGIN).and_then(|s| s.execute([])).map_err(BatchError::Begin)?;
    // Holding the write lock: if another connection committed since this one's last transaction, what the
    // cache knows of runs may be stale.
    match held.get(Held::DATA_VERSION).and_then(|s| s.query_row([], |row| row.get::<_, i64>(0))) {
        Ok(version) => cache.begin(version),
        Err(e) => {
            rollback(conn);
            cache.clear();
            return Err(BatchError::Begin(e));
        }
    }
    let mut outcomes = Vec::with_capacity(commands.len());
    for command in commands {
        match execute_write(held, &command.write, cache) {
            Ok(done) => outcomes.push(Ok(done)),
            Err(ExecError::Rejected(e)) => outcomes.push(Err(e)),
            Err(ExecError::Sql(e)) => {
                rollback(conn);
                cache.clear();
                return Err(BatchError::Statement(e));
            }
        }
    }
    if let Err(e) = held.get(Held::COMMIT).and_then(|s| s.execute([])) {
        rollback(conn);
        cache.clear();
        return Err(BatchError::Commit(e));
    }
    Ok(outcomes)
}

/// The writer's statements run for every transaction or every record, prepared on first use and held for
/// the connection's life. rusqlite's statement cache hashes the SQL text at each lookup and resets, clears
/// and re-files the statement after each use (≈ 7k instructions per durable step); a held statement is
/// only bound, stepped and reset. SQLite re-prepares a held statement itself after a schema change.
struct Held<'c> {
    conn: &'c Connection,
    statements: [Option<Statement<'c>>; Held::SQL.len()],
}

impl<'c> Held<'c> {
    const BEGIN: usize = 0;
    const DATA_VERSION: usize = 1;
    const COMMIT: usize = 2;
    const INSERT_RECORD: usize = 3;
    const SQL: [&'static str; 4] = [
        "BEGIN IMMEDIATE",
        "PRAGMA data_version",
        "COMMIT",
        "INSERT INTO journal (run_id, seq, path, step, kind, status, generation, output, output_ref, patch, \
         attempts, prompt_tokens, completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, feedback, \
         hash, hash_scheme, cached_tokens, cache_write_tokens, reasoning_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
         ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
    ];

    fn new(conn: &'c Connection) -> Self {
        Held { conn, statements: Default::default() }
    }

    /// The statement `which` (one of the constants above), prepared if it is not yet.
    fn get(&mut self, which: usize) -> rusqlite::Result<&mut Statement<'c>> {
        let statement = match self.statements[which].take() {
            Some(s) => s,
            None => self.conn.prepare(Self::SQL[which])?,
        };
        Ok(self.statements[which].insert(statement))
    }
}

/// What the writer connection knows of the runs it appended to — status, owner and next sequence number —
/// so that an append checks its fence and its sequence without querying. It is only trusted while no other
/// connection has committed (`PRAGMA data_version`, read under the write lock at the start of every
/// transaction, is unchanged) and no other write of this connection has touched runs; a rolled-back
/// transaction clears it. Bounded: cleared when it holds [`AppendCache::MAX_RUNS`] runs.
#[derive(Default)]
pub(crate) struct AppendCache {
    data_version: Option<i64>,
    runs: foldhash::HashMap<String, CachedRun>,
}

struct CachedRun {
    status: RunStatus,
    owner_id: Option<String>,
    next_seq: i64,
}

impl AppendCache {
    const MAX_RUNS: usize = 4096;

    fn begin(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.runs.clear();
            self.data_version = Some(data_version);
        }
    }

    fn clear(&mut self) {
        self.runs.clear();
        self.data_version = None;
    }
}

fn rollback(conn: &Connection) {
    // Some errors (I/O, full disk) have already rolled the transaction back.
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Replies after a commit, counting what was written first so that a caller sees its bytes once it resumes.
fn finish(commands: Vec<WriteCommand>, outcomes: Vec<Result<Done, StoreError>>, counters: &Counters) {
    counters.transactions.fetch_add(1, Ordering::Relaxed);
    for (command, outcome) in commands.into_iter().zip(outcomes) {
        let reply = match outcome {
            Ok(done) => {
                counters.bytes_written.fetch_add(done.bytes, Ordering::Relaxed);
                counters.writes.fetch_add(1, Ordering::Relaxed);
                Ok(done.count)
            }
            Err(e) => Err(e),
        };
        let _ = command.reply.send(reply);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Writes. Each validates before its first write, so a rejection needs no rollback.

fn execute_write(held: &mut Held<'_>, write: &Write, cache: &mut AppendCache) -> Result<Done, ExecError> {
    let conn = held.conn;
    if !matches!(write, Write::Append(_) | Write::PutBlob(_)) {
        // Anything else may change a run's status, owner or journal.
        cache.runs.clear();
    }
    match write {
        Write::CreateRun(row) => create_run(conn, row).map(Done::bytes),
        Write::UpdateRun(row) => update_run(conn, row).map(Done::bytes),
        Write::Append(row) => append(held, row, cache).map(Done::bytes),
        Write::PutBlob(blob) => insert_blob(conn, blob).map(Done::bytes),
        Write::DeleteRuns { older_than_ms, status } => {
            delete_runs(conn, *older_than_ms, *status).map(|count| Done { bytes: 0, count })
        }
        Write::SetState { key, value } => set_state(conn, key, value).map(Done::bytes),
        Write::PutEvaluation { row, replace } => {
            let sql = if *replace {
                "UPDATE evaluations SET run_id = ?2, pipeline = ?3, status = ?4, lease_expires_at_ms = ?5, \
                 created_at_ms = ?6, record = ?7 WHERE evaluation_id = ?1"
            } else {
                "INSERT INTO evaluations (evaluation_id, run_id, pipeline, status, lease_expires_at_ms, created_at_ms, \
                 record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (evaluation_id) DO NOTHING"
            };
            let n = conn.prepare_cached(sql)?.execute(params![
                row.id,
                row.run_id,
                row.pipeline,
                row.status,
                row.lease_expires_at_ms,
                row.created_at_ms,
                row.record
            ])?;
            Ok(Done { bytes: row.record.len() as u64, count: n as u64 })
        }
        Write::ClaimEvaluations { owner, now_ms, lease_expires_at_ms, limit, out } => {
            claim_evaluations(conn, owner, *now_ms, *lease_expires_at_ms, *limit, out).map(Done::bytes)
        }
        Write::DeleteState(key) => {
            let count = conn.prepare_cached("DELETE FROM system_state WHERE key = ?1")?.execute([key])?;
            Ok(Done { bytes: 0, count: count as u64 })
        }
        Write::Heartbeat { run_id, owner_id, lease_expires_at_ms } => {
            heartbeat(conn, run_id, owner_id, *lease_expires_at_ms).map(Done::bytes)
        }
        Write::Claim { claim, owner, out } => claim_runs(conn, claim, owner, out).map(Done::bytes),
    }
}

/// Claims runs (see [`flujo_core::RunStore::claim_runs`]); the writer thread serializes it with every other
/// write, so two claims never take the same run.
fn claim_runs(
    conn: &Connection,
    claim: &ClaimRequest,
    owner: &str,
    out: &Mutex<Vec<String>>,
) -> Result<u64, ExecError> {
    let mut ids = Vec::new();
    let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
    for queue in &claim.queues {
        // Global concurrency: live running runs of the queue count against its limit.
        let room = match claim.max_running.get(queue) {
            Some(max) => {
                let live: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM runs WHERE queue = ?1 AND status = 'running' \
                         AND (lease_expires_at_ms IS NULL OR lease_expires_at_ms >= ?2)",
                    )?
                    .query_row(params![queue, claim.now_ms], |row| row.get(0))?;
                i64::try_from(*max).unwrap_or(i64::MAX).saturating_sub(live).max(0)
            }
            None => limit,
        };
        // Rate limit: claims of the queue's runs within the period count against it.
        let room = match claim.rate_limits.get(queue) {
            Some(rate) => {
                let recent: i64 = conn
                    .prepare_cached("SELECT count(*) FROM runs WHERE queue = ?1 AND claimed_at_ms > ?2")?
                    .query_row(params![queue, claim.now_ms - rate.period_ms], |row| row.get(0))?;
                room.min(i64::try_from(rate.runs).unwrap_or(i64::MAX).saturating_sub(recent).max(0))
            }
            None => room,
        };
        if room == 0 {
            continue;
        }
        // Queued runs and runs whose lease expired, each by its own index (never a scan of the live ones).
        let take = limit.min(room);
        let row = |row: &rusqlite::Row<'_>| Ok((row.get(0)?, row.get(1)?));
        let mut found: Vec<(String, i64)> = conn
            .prepare_cached(
                "SELECT run_id, created_at_ms FROM runs WHERE queue = ?1 AND status = 'queued' \
                 ORDER BY created_at_ms, run_id LIMIT ?2",
            )?
            .query_map(params![queue, take], row)?
            .collect::<Result<_, _>>()?;
        let expired: Vec<(String, i64)> = conn
            .prepare_cached(
                "SELECT run_id, created_at_ms FROM runs WHERE queue = ?1 AND status = 'running' \
                 AND lease_expires_at_ms < ?2 ORDER BY created_at_ms, run_id LIMIT ?3",
            )?
            .query_map(params![queue, claim.now_ms, take], row)?
            .collect::<Result<_, _>>()?;
        found.extend(expired);
        found.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        found.truncate(usize::try_from(take).unwrap_or(usize::MAX));
        ids.extend(found);
    }
    // Oldest first across the queues, at most `limit`.
    ids.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    ids.truncate(claim.limit);
    let mut update = conn.prepare_cached(
        "UPDATE runs SET status = 'running', owner_id = ?2, owner = ?3, lease_expires_at_ms = ?4, updated_at_ms = ?5, \
         claimed_at_ms = ?5 WHERE run_id = ?1",
    )?;
    for (id, _) in &ids {
        update.execute(params![id, claim.owner.id, owner, claim.lease_expires_at_ms, claim.now_ms])?;
    }
    let n = ids.len() as u64;
    *out.lock().unwrap_or_else(|p| p.into_inner()) = ids.into_iter().map(|(id, _)| id).collect();
    Ok(n * 32)
}

fn heartbeat(conn: &Connection, run_id: &str, owner_id: &str, lease: i64) -> Result<u64, ExecError> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT status, owner_id FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((status, owner)) = row else {
        return Err(ExecError::Rejected(StoreError::RunNotFound(run_id.to_owned())));
    };
    if status != RunStatus::Running.as_str() {
        let actual = RunStatus::parse(&status).unwrap_or(RunStatus::Running);
        return Err(ExecError::Rejected(status_conflict(run_id, &[RunStatus::Running], actual)));
    }
    if owner.as_deref() != Some(owner_id) {
        return Err(ExecError::Rejected(crate::owner_conflict(run_id, Some(owner_id), owner.as_deref())));
    }
    conn.prepare_cached("UPDATE runs SET lease_expires_at_ms = ?2 WHERE run_id = ?1")?
        .execute(params![run_id, lease])?;
    Ok(16)
}

fn create_run(conn: &Connection, r: &RunRow) -> Result<u64, ExecError> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")?
        .query_row([&r.run_id], |row| row.get(0))
        .optional()?;
    if exists.is_some() {
        return Err(ExecError::Rejected(StoreError::RunExists(r.run_id.clone())));
    }
    // A pipeline's definition is usually stored already (by its previous run): checked first, so that its
    // text (≈ 150 bytes per step) is not bound and copied for a conflict.
    let blob_bytes = match &r.definition_blob {
        Some(b) if !blob_exists(conn, &b.hash)? => insert_blob(conn, b)?,
        _ => 0,
    };
    let inserted = conn
        .prepare_cached(
            "INSERT INTO runs (run_id, pipeline_name, pipeline_version, pipeline_hash, definition, status, input, \
             initial_context, pending, output, error, generation, total_cost_usd, total_tokens, created_at_ms, \
             updated_at_ms, owner_id, owner, lease_expires_at_ms, origin, journal_head, queue) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
             ?22) \
             ON CONFLICT (run_id) DO NOTHING",
        )?
        .execute(params![
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
        ])?;
    if inserted == 0 {
        return Err(ExecError::Rejected(StoreError::RunExists(r.run_id.clone())));
    }
    Ok(r.payload_len() + blob_bytes)
}

fn update_run(conn: &Connection, u: &UpdateRow) -> Result<u64, ExecError> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM runs WHERE run_id = ?1")?
        .query_row([&u.run_id], |row| row.get(0))
        .optional()?;
    let Some(status) = status else {
        return Err(ExecError::Rejected(StoreError::RunNotFound(u.run_id.clone())));
    };
    let actual = RunStatus::parse(&status).ok_or_else(|| {
        ExecError::Rejected(StoreError::Corrupt(format!("run '{}': column `status`: unknown `{status}`", u.run_id)))
    })?;
    if !u.expected.is_empty() && !u.expected.contains(&actual) {
        return Err(ExecError::Rejected(status_conflict(&u.run_id, &u.expected, actual)));
    }
    if let Some(expected_owner) = &u.expected_owner {
        let stored: Option<String> = conn
            .prepare_cached("SELECT owner_id FROM runs WHERE run_id = ?1")?
            .query_row([&u.run_id], |row| row.get(0))?;
        if stored.as_deref() != expected_owner.as_deref() {
            return Err(ExecError::Rejected(crate::owner_conflict(
                &u.run_id,
                expected_owner.as_deref(),
                stored.as_deref(),
            )));
        }
    }
    conn.prepare_cached(
        "UPDATE runs SET status = ?2, pending = ?3, output = ?4, error = ?5, generation = ?6, total_cost_usd = ?7, \
         total_tokens = ?8, updated_at_ms = ?9, owner_id = ?10, owner = ?11, lease_expires_at_ms = ?12, \
         journal_head = COALESCE(?13, journal_head) WHERE run_id = ?1",
    )?
    .execute(params![
        u.run_id,
        u.status,
        u.pending,
        u.output,
        u.error,
        u.generation,
        u.total_cost_usd,
        u.total_tokens,
        u.updated_at_ms,
        u.owner_id,
        u.owner,
        u.lease_expires_at_ms,
        u.journal_head,
    ])?;
    Ok(u.payload_len())
}

fn append(held: &mut Held<'_>, r: &RecordRow, cache: &mut AppendCache) -> Result<u64, ExecError> {
    let conn = held.conn;
    let (status, owner_id, next) = match cache.runs.get(&r.run_id) {
        Some(c) => (c.status, c.owner_id.clone(), c.next_seq),
        None => {
            // One query for the run's status, owner and last sequence number (read in the write transaction:
            // the writer thread serializes every write of this process, the lock every other connection's).
            let row: Option<(String, Option<String>, Option<i64>)> = conn
                .prepare_cached(
                    "SELECT status, owner_id, (SELECT max(seq) FROM journal WHERE run_id = ?1) FROM runs \
                     WHERE run_id = ?1",
                )?
                .query_row([&r.run_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()?;
            let Some((status, owner_id, last)) = row else {
                return Err(ExecError::Rejected(StoreError::RunNotFound(r.run_id.clone())));
            };
            let status = RunStatus::parse(&status).ok_or_else(|| {
                ExecError::Rejected(StoreError::Corrupt(format!(
                    "run '{}': column `status`: unknown `{status}`",
                    r.run_id
                )))
            })?;
            (status, owner_id, last.map_or(0, |l| l + 1))
        }
    };
    if let Some(owner) = &r.fence_owner {
        crate::check_fence(&r.run_id, status, owner_id.as_deref(), owner).map_err(ExecError::Rejected)?;
    }
    if r.seq != next {
        // Both are non-negative: `seq` came from a u64 and `next` from stored seqs.
        return Err(ExecError::Rejected(seq_conflict(&r.run_id, next.unsigned_abs(), r.seq.unsigned_abs())));
    }
    let mut bytes = 0;
    for blob in &r.blobs {
        bytes += insert_blob(conn, blob)?;
    }
    held.get(Held::INSERT_RECORD)?.execute(params![
        r.run_id,
        r.seq,
        r.path,
        r.step,
        r.kind,
        status_code(r.status),
        r.generation,
        r.output,
        r.output_ref,
        r.patch,
        r.attempts,
        r.prompt_tokens,
        r.completion_tokens,
        r.cost_usd,
        r.started_at_ms,
        r.latency_ms,
        r.metadata,
        r.feedback,
        r.hash,
        r.hash_scheme,
        r.cached_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
    ])?;
    if cache.runs.len() >= AppendCache::MAX_RUNS {
        cache.runs.clear();
    }
    cache.runs.insert(r.run_id.clone(), CachedRun { status, owner_id, next_seq: next + 1 });
    Ok(bytes + r.payload_len())
}

fn blob_exists(conn: &Connection, hash: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM blobs WHERE hash = ?1")?
        .query_row([hash], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// Inserts a blob unless its hash is already stored; counts its bytes only when inserted.
fn insert_blob(conn: &Connection, blob: &NewBlob) -> Result<u64, ExecError> {
    let inserted = conn
        .prepare_cached("INSERT INTO blobs (hash, bytes) VALUES (?1, ?2) ON CONFLICT (hash) DO NOTHING")?
        .execute(params![blob.hash, &*blob.bytes])?;
    Ok(if inserted == 0 { 0 } else { blob.bytes.len() as u64 })
}

/// Deletes the runs `delete_runs` selects, their journal rows, and the blobs only they referenced.
fn delete_runs(conn: &Connection, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, ExecError> {
    // The runs to delete and the blobs they reference (candidates for deletion).
    let doomed: Vec<(String, Option<String>)> = match status {
        Some(s) => conn
            .prepare_cached("SELECT run_id, definition FROM runs WHERE created_at_ms < ?1 AND status = ?2")?
            .query_map(params![older_than_ms, s.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?,
        None => conn
            .prepare_cached("SELECT run_id, definition FROM runs WHERE created_at_ms < ?1 AND status NOT IN (?2, ?3)")?
            .query_map(params![older_than_ms, RunStatus::Running.as_str(), RunStatus::Paused.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?,
    };
    if doomed.is_empty() {
        return Ok(0);
    }
    let mut candidates: HashSet<String> = HashSet::new();
    for (run_id, definition) in &doomed {
        if let Some(hash) = definition.as_deref().and_then(|d| d.strip_prefix(DEFINITION_REF)) {
            candidates.insert(hash.to_owned());
        }
        let mut refs = conn.prepare_cached(
            "SELECT output_ref, patch FROM journal WHERE run_id = ?1 \
             AND (output_ref IS NOT NULL OR instr(patch, '\"value_ref\"') > 0)",
        )?;
        let mut rows = refs.query([run_id])?;
        while let Some(row) = rows.next()? {
            if let Some(hash) = row.get::<_, Option<String>>(0)? {
                candidates.insert(hash);
            }
            let patch: String = row.get(1)?;
            // A patch that does not parse only hides candidates (their blobs are kept), never deletes one.
            candidates.extend(patch_value_refs(&patch));
        }
    }
    let mut deleted = 0u64;
    for (run_id, _) in &doomed {
        conn.prepare_cached("DELETE FROM journal WHERE run_id = ?1")?.execute([run_id])?;
        deleted += conn.prepare_cached("DELETE FROM runs WHERE run_id = ?1")?.execute([run_id])? as u64;
    }
    if !candidates.is_empty() {
        remove_referenced(conn, &mut candidates)?;
        let mut delete = conn.prepare_cached("DELETE FROM blobs WHERE hash = ?1")?;
        for hash in &candidates {
            delete.execute([hash])?;
        }
    }
    Ok(deleted)
}

/// Removes from `candidates` every hash a remaining run definition or journal row references.
fn remove_referenced(conn: &Connection, candidates: &mut HashSet<String>) -> rusqlite::Result<()> {
    let mut defs = conn.prepare_cached("SELECT definition FROM runs WHERE definition IS NOT NULL")?;
    let mut rows = defs.query([])?;
    while let Some(row) = rows.next()? {
        let definition: String = row.get(0)?;
        if let Some(hash) = definition.strip_prefix(DEFINITION_REF) {
            candidates.remove(hash);
        }
    }
    let mut outputs = conn.prepare_cached("SELECT output_ref FROM journal WHERE output_ref IS NOT NULL")?;
    let mut rows = outputs.query([])?;
    while let Some(row) = rows.next()? {
        if candidates.is_empty() {
            return Ok(());
        }
        let hash: String = row.get(0)?;
        candidates.remove(&hash);
    }
    // Patch references are JSON inside the `patch` text. Keeping every candidate whose hash occurs in such a
    // patch is exact for real references (a 64-digit hash occurs nowhere else by chance) and stays safe
    // when a patch does not parse.
    let mut patches = conn.prepare_cached("SELECT patch FROM journal WHERE instr(patch, '\"value_ref\"') > 0")?;
    let mut rows = patches.query([])?;
    while let Some(row) = rows.next()? {
        if candidates.is_empty() {
            return Ok(());
        }
        let patch: String = row.get(0)?;
        candidates.retain(|hash| !patch.contains(hash.as_str()));
    }
    Ok(())
}

fn set_state(conn: &Connection, key: &str, value: &str) -> Result<u64, ExecError> {
    conn.prepare_cached(
        "INSERT INTO system_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok((key.len() + value.len()) as u64)
}

// ---------------------------------------------------------------------------------------------------------
// Reads.

fn serve_read(conn: &Connection, read: Read) {
    match read {
        Read::GetRun(run_id, definitions, reply) => {
            let _ = reply.send(get_run(conn, &run_id, &definitions));
        }
        Read::ListRuns(filter, definitions, reply) => {
            let _ = reply.send(list_runs(conn, &filter, &definitions));
        }
        Read::LoadJournal(run_id, from_seq, reply) => {
            let _ = reply.send(load_journal(conn, &run_id, from_seq));
        }
        Read::GetBlob(hash, reply) => {
            let _ = reply.send(get_blob(conn, &hash).map_err(|e| sql_error("get_blob", e)));
        }
        Read::FindRunsByPrefix { prefix, limit, reply } => {
            let _ =
                reply.send(find_runs_by_prefix(conn, &prefix, limit).map_err(|e| sql_error("find_runs_by_prefix", e)));
        }
        Read::GetState(key, reply) => {
            let _ = reply.send(get_state(conn, &key));
        }
        Read::ListState(prefix, reply) => {
            let _ = reply.send(list_state(conn, &prefix));
        }
        Read::ListEvaluations(filter, reply) => {
            let _ = reply.send(list_evaluations(conn, &filter));
        }
        Read::Stats(reply) => {
            let _ = reply.send(stats(conn).map_err(|e| sql_error("stats", e)));
        }
    }
}

const RUN_COLUMNS: &str = "run_id, pipeline_name, pipeline_version, pipeline_hash, definition, status, input, \
                           initial_context, pending, output, error, generation, total_cost_usd, total_tokens, \
                           created_at_ms, updated_at_ms, owner, lease_expires_at_ms, origin, journal_head, queue";

fn stored_run(row: &Row<'_>) -> rusqlite::Result<StoredRun> {
    Ok(StoredRun {
        run_id: row.get(0)?,
        pipeline_name: row.get(1)?,
        pipeline_version: row.get(2)?,
        pipeline_hash: row.get(3)?,
        definition: row.get(4)?,
        definition_value: None,
        status: row.get(5)?,
        input: row.get(6)?,
        initial_context: row.get(7)?,
        pending: row.get(8)?,
        output: row.get(9)?,
        error: row.get(10)?,
        generation: row.get(11)?,
        total_cost_usd: real_or_nan(row.get(12)?),
        total_tokens: row.get(13)?,
        created_at_ms: row.get(14)?,
        updated_at_ms: row.get(15)?,
        owner: row.get(16)?,
        lease_expires_at_ms: row.get(17)?,
        origin: row.get(18)?,
        journal_head: row.get(19)?,
        queue: row.get(20)?,
    })
}

fn get_run(conn: &Connection, run_id: &str, definitions: &DefinitionCache) -> Result<Option<RunRecord>, StoreError> {
    let stored = conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"))
        .and_then(|mut s| s.query_row([run_id], stored_run).optional())
        .map_err(|e| sql_error("get_run", e))?;
    stored.map(|s| resolve_definition(conn, s, &mut HashMap::new(), definitions).and_then(decode_run)).transpose()
}

/// Resolves a `blob:HASH` definition reference into the parsed definition: from `seen` (this read's runs),
/// from the store's [`DefinitionCache`], or by reading and parsing the blob (once per read and hash).
fn resolve_definition(
    conn: &Connection,
    mut s: StoredRun,
    seen: &mut HashMap<String, Arc<Definition>>,
    definitions: &DefinitionCache,
) -> Result<StoredRun, StoreError> {
    let Some(hash) = s.definition.as_deref().and_then(|d| d.strip_prefix(DEFINITION_REF)).map(str::to_owned) else {
        return Ok(s);
    };
    if let Some(value) = seen.get(&hash).cloned().or_else(|| definitions.value(&hash)) {
        seen.insert(hash, Arc::clone(&value));
        s.definition_value = Some(value);
        return Ok(s);
    }
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT bytes FROM blobs WHERE hash = ?1")
        .and_then(|mut st| st.query_row([&hash], |row| row.get(0)).optional())
        .map_err(|e| sql_error("get_run definition", e))?;
    let bytes =
        bytes.ok_or_else(|| StoreError::Corrupt(format!("run '{}': definition blob {hash} is missing", s.run_id)))?;
    let value = definitions.decode(&s.run_id, &hash, &bytes)?;
    seen.insert(hash, Arc::clone(&value));
    s.definition_value = Some(value);
    Ok(s)
}

fn list_runs(
    conn: &Connection,
    filter: &RunFilter,
    definitions: &DefinitionCache,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        args.push(status.as_str().to_owned().into());
    }
    if let Some(pipeline) = &filter.pipeline {
        sql.push_str(" AND pipeline_name = ?");
        args.push(pipeline.clone().into());
    }
    if let Some(since) = filter.since_ms {
        sql.push_str(" AND created_at_ms >= ?");
        args.push(since.into());
    }
    if let Some((at, id)) = &filter.before {
        sql.push_str(" AND (created_at_ms < ? OR (created_at_ms = ? AND run_id < ?))");
        args.push((*at).into());
        args.push((*at).into());
        args.push(id.clone().into());
    }
    // Newest first; ties by run id descending (byte order, as in every backend).
    sql.push_str(" ORDER BY created_at_ms DESC, run_id DESC LIMIT ?");
    args.push(filter.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)).into());
    let stored = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_map(rusqlite::params_from_iter(args), stored_run)?.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sql_error("list_runs", e))?;
    let mut cache = HashMap::new();
    stored.into_iter().map(|s| resolve_definition(conn, s, &mut cache, definitions).and_then(decode_run)).collect()
}

/// A journal row of `LOAD_JOURNAL` (its columns without `run_id`), borrowed from the row.
fn stored_record<'r>(row: &'r Row<'_>) -> rusqlite::Result<StoredRecord<'r>> {
    let text = |i: usize| {
        row.get_ref(i)?
            .as_str()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    };
    let opt_text = |i: usize| {
        row.get_ref(i)?
            .as_str_or_null()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    };
    Ok(StoredRecord {
        seq: row.get(0)?,
        path: text(1)?,
        step: text(2)?,
        kind: text(3)?,
        status: status_from_code(row.get(4)?),
        generation: row.get(5)?,
        output: opt_text(6)?,
        output_ref: opt_text(7)?,
        patch: text(8)?,
        attempts: row.get(9)?,
        prompt_tokens: row.get(10)?,
        completion_tokens: row.get(11)?,
        cost_usd: real_or_nan(row.get(12)?),
        started_at_ms: row.get(13)?,
        latency_ms: real_or_nan(row.get(14)?),
        metadata: opt_text(15)?,
        feedback: opt_text(16)?,
        hash: row
            .get_ref(17)?
            .as_blob()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Blob, Box::new(e)))?,
        hash_scheme: row.get(18)?,
        cached_tokens: row.get(19)?,
        cache_write_tokens: row.get(20)?,
        reasoning_tokens: row.get(21)?,
    })
}

/// A journal row's `status` as stored (schema 10): 0 completed, 1 failed.
fn status_code(status: &str) -> i64 {
    match status {
        "completed" => 0,
        "failed" => 1,
        _ => -1,
    }
}

/// The inverse of [`status_code`]; a code no Flujo wrote becomes a name the decoder reports as corrupt.
fn status_from_code(code: i64) -> std::borrow::Cow<'static, str> {
    match code {
        0 => "completed".into(),
        1 => "failed".into(),
        other => format!("status code {other}").into(),
    }
}

fn load_journal(conn: &Connection, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
    let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
    // One read transaction: the records and the blobs they reference come from the same snapshot.
    let tx = conn.unchecked_transaction().map_err(|e| sql_error("load_journal", e))?;
    let records = decode_rows(&tx, run_id, from)?;
    // Read-only: ending it either way releases the snapshot.
    let _ = tx.finish();
    Ok(records)
}

/// The journal rows of `run_id` from seq `from`, decoded as they are read (inside the caller's read
/// transaction, so the rows and the blobs they reference come from one snapshot).
fn decode_rows(conn: &Connection, run_id: &str, from: i64) -> Result<Vec<JournalRecord>, StoreError> {
    let sql_err = |e| sql_error("load_journal", e);
    let mut statement = conn
        .prepare_cached(
            "SELECT seq, path, step, kind, status, generation, output, output_ref, patch, attempts, \
             prompt_tokens, completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, feedback, hash, \
             hash_scheme, cached_tokens, cache_write_tokens, reasoning_tokens FROM journal WHERE run_id = ?1 AND seq >= ?2 \
             ORDER BY seq",
        )
        .map_err(sql_err)?;
    let mut rows = statement.query(params![run_id, from]).map_err(sql_err)?;
    let mut blobs = BlobResolver::new(|hash: &str| get_blob(conn, hash).map_err(sql_err));
    let mut records: Vec<JournalRecord> = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let prev_hash = match records.last() {
            Some(r) => r.hash.clone(),
            // The first record's predecessor: its hash is the first record's `prev_hash` (not stored twice).
            None => match from.checked_sub(1) {
                Some(prev) if prev >= 0 => conn
                    .prepare_cached("SELECT hash FROM journal WHERE run_id = ?1 AND seq = ?2")
                    .and_then(|mut s| s.query_row(params![run_id, prev], |row| row.get::<_, Vec<u8>>(0)).optional())
                    .map_err(sql_err)?
                    .map_or_else(String::new, |h| hash_from_column(&h)),
                _ => flujo_core::journal::GENESIS_HASH.to_owned(),
            },
        };
        let stored = stored_record(row).map_err(sql_err)?;
        records.push(decode_record(run_id, stored, prev_hash, &mut blobs)?);
    }
    Ok(records)
}

fn find_runs_by_prefix(conn: &Connection, prefix: &str, limit: usize) -> rusqlite::Result<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let ids: Vec<String> = match prefix_upper_bound(prefix) {
        Some(upper) => conn
            .prepare_cached("SELECT run_id FROM runs WHERE run_id >= ?1 AND run_id < ?2 ORDER BY run_id LIMIT ?3")?
            .query_map(params![prefix, upper, limit], |row| row.get(0))?
            .collect::<Result<_, _>>()?,
        None => conn
            .prepare_cached("SELECT run_id FROM runs WHERE run_id >= ?1 ORDER BY run_id LIMIT ?2")?
            .query_map(params![prefix, limit], |row| row.get(0))?
            .collect::<Result<_, _>>()?,
    };
    // The range is exact; the filter only guards against a collation surprise.
    Ok(ids.into_iter().filter(|id| id.starts_with(prefix)).collect())
}

fn get_state(conn: &Connection, key: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM system_state WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
        .map_err(|e| sql_error("get_state", e))?;
    text.map(|t| {
        crate::codec::parse_json(t.as_bytes())
            .map_err(|e| StoreError::Corrupt(format!("system_state '{key}': column `value`: {e}")))
    })
    .transpose()
}

fn list_state(conn: &Connection, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
    let rows: Vec<(String, String)> = conn
        .prepare_cached("SELECT key, value FROM system_state WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")
        .and_then(|mut s| s.query_map([prefix], |row| Ok((row.get(0)?, row.get(1)?)))?.collect())
        .map_err(|e| sql_error("list_state", e))?;
    rows.into_iter()
        .map(|(key, text)| {
            let value = crate::codec::parse_json(text.as_bytes())
                .map_err(|e| StoreError::Corrupt(format!("system_state '{key}': column `value`: {e}")))?;
            Ok((key, value))
        })
        .collect()
}

fn evaluation_from(text: &str) -> Result<EvaluationRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("evaluations: column `record`: {e}")))
}

fn list_evaluations(conn: &Connection, filter: &EvaluationFilter) -> Result<Vec<EvaluationRecord>, StoreError> {
    let limit = filter.limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let status = filter.status.map(|s| s.as_str());
    let texts: Vec<String> = conn
        .prepare_cached(
            "SELECT record FROM evaluations WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR pipeline = ?2) \
             AND (?3 IS NULL OR created_at_ms >= ?3) AND (?4 IS NULL OR status = ?4) \
             ORDER BY created_at_ms, evaluation_id LIMIT ?5",
        )
        .and_then(|mut s| {
            s.query_map(params![filter.run_id, filter.pipeline, filter.since_ms, status, limit], |row| row.get(0))?
                .collect()
        })
        .map_err(|e| sql_error("list_evaluations", e))?;
    texts.iter().map(|t| evaluation_from(t)).collect()
}

/// Claims pending evaluations (see [`flujo_core::EvaluationStore::claim_evaluations`]); serialized with every
/// other write by the writer thread.
fn claim_evaluations(
    conn: &Connection,
    owner: &str,
    now_ms: i64,
    lease: i64,
    limit: usize,
    out: &Mutex<Vec<EvaluationRecord>>,
) -> Result<u64, ExecError> {
    let texts: Vec<String> = conn
        .prepare_cached(
            "SELECT record FROM evaluations WHERE status = 'pending' \
             AND (lease_expires_at_ms IS NULL OR lease_expires_at_ms < ?1) ORDER BY created_at_ms, evaluation_id LIMIT ?2",
        )?
        .query_map(params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut claimed = Vec::new();
    let mut bytes = 0u64;
    for text in texts {
        let mut e = evaluation_from(&text).map_err(ExecError::Rejected)?;
        e.owner = Some(owner.to_owned());
        e.lease_expires_at_ms = Some(lease);
        e.updated_at_ms = now_ms;
        let record = serde_json::to_string(&e).map_err(|err| {
            ExecError::Rejected(StoreError::Unavailable(format!("cannot serialize an evaluation: {err}")))
        })?;
        bytes += record.len() as u64;
        conn.prepare_cached("UPDATE evaluations SET lease_expires_at_ms = ?2, record = ?3 WHERE evaluation_id = ?1")?
            .execute(params![e.evaluation_id, lease, record])?;
        claimed.push(e);
    }
    *out.lock().unwrap_or_else(|p| p.into_inner()) = claimed;
    Ok(bytes)
}

fn get_blob(conn: &Connection, hash: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT bytes FROM blobs WHERE hash = ?1")?.query_row([hash], |row| row.get(0)).optional()
}

fn stats(conn: &Connection) -> rusqlite::Result<SqliteStats> {
    let count = |sql: &str| -> rusqlite::Result<u64> {
        conn.query_row(sql, [], |row| row.get::<_, i64>(0)).map(i64::unsigned_abs)
    };
    Ok(SqliteStats {
        runs: count("SELECT count(*) FROM runs")?,
        journal_records: count("SELECT count(*) FROM journal")?,
        blobs: count("SELECT count(*) FROM blobs")?,
        blob_bytes: count("SELECT coalesce(sum(length(bytes)), 0) FROM blobs")?,
        schema_version: conn.query_row("PRAGMA user_version", [], |row| row.get(0))?,
        journal_mode: conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?,
        synchronous: conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?,
    })
}
