//! The state store traits, split by concern (runs, journal, blobs, system state). Backends: memory and SQLite
//! (this workspace's `flujo-store`), Postgres later; all run one conformance suite.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::journal::JournalRecord;
use crate::result::{PendingPause, RunError, RunStatus};

/// A pipeline definition as runs store it: its canonical JSON text and the blake3 hash of that text (hex),
/// which stores use as its content address. A runner serializes its pipeline once into a `Definition` and
/// every run shares it; nothing parses the text until a stored run's pipeline is rebuilt from it
/// (`flujo_engine::pipeline_from_definition`).
///
/// It serializes as the JSON value it holds (parsed on the way: only the rare serialization of a whole
/// [`RunRecord`] pays for it) and compares by its text.
///
/// ```
/// use flujo_core::Definition;
/// let d = Definition::of(&serde_json::json!({"name": "p", "steps": []})).unwrap();
/// assert_eq!(d.json(), r#"{"name":"p","steps":[]}"#);
/// assert_eq!(d.hash(), blake3::hash(d.json().as_bytes()).to_hex().as_str());
/// assert_eq!(d, Definition::from_json(d.json()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Definition {
    json: Arc<str>,
    hash: String,
}

impl Definition {
    /// The definition of `value`: its JSON text (as `serde_json::to_string` writes it) and that text's hash.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Self::from_json)
    }

    /// A definition from JSON text as stored (its hash is computed here; the text is not parsed).
    pub fn from_json(json: impl Into<Arc<str>>) -> Self {
        let json = json.into();
        let hash = blake3::hash(json.as_bytes()).to_hex().to_string();
        Definition { json, hash }
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The JSON text, shared.
    pub fn shared_json(&self) -> Arc<str> {
        Arc::clone(&self.json)
    }

    /// blake3 of the text, 64 lowercase hex digits.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The text parsed (any depth: a definition nests as deep as its pipeline).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        self.parse()
    }

    /// The text parsed into `T` (any depth, on a stack that grows as deep nesting needs).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(&self.json);
        de.disable_recursion_limit();
        let value = T::deserialize(serde_stacker::Deserializer::new(&mut de))?;
        de.end()?;
        Ok(value)
    }
}

impl std::fmt::Debug for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definition").field("hash", &self.hash).field("bytes", &self.json.len()).finish()
    }
}

impl Serialize for Definition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().map_err(serde::ser::Error::custom)?.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Definition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Definition::of(&value).map_err(serde::de::Error::custom)
    }
}

/// The stored row of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (unique in the store; generated, or chosen by the caller).
    pub run_id: String,
    /// The name of the pipeline the run executes ([`crate::step::Pipeline::name`]); `list_runs` filters on it.
    pub pipeline_name: String,
    /// The version of that pipeline ([`crate::step::Pipeline::version`]).
    pub pipeline_version: String,
    /// Hash of the canonical pipeline definition the run was started with.
    pub pipeline_hash: String,
    /// The canonical pipeline definition (so resume needs no file): its JSON text and content hash. Shared,
    /// not copied, between runs of one pipeline; stores keep one copy per distinct definition.
    pub definition: Option<Arc<Definition>>,
    /// Where the run is in its lifecycle.
    pub status: RunStatus,
    /// The run's input, as given (stored unredacted: replay needs it).
    pub input: Value,
    /// The user fields the run's context started with (e.g. from `--context`), as given.
    pub initial_context: Map<String, Value>,
    /// The pauses awaiting an answer while the run is `paused`; empty otherwise.
    pub pending: Vec<PendingPause>,
    /// The run's output once it has ended (redacted as the journal holds it); `None` while it runs or is
    /// paused, and for a failed run that produced none.
    pub output: Option<Value>,
    /// Why the run failed (a `failed` run); `None` otherwise.
    pub error: Option<RunError>,
    /// Incremented each time a failed run is resumed: failed records of older generations run again.
    pub generation: u32,
    /// What the run has spent so far, in USD (recorded at each status change).
    pub total_cost_usd: f64,
    /// Tokens the run has used so far, prompt and completion together (recorded at each status change).
    pub total_tokens: u64,
    /// When the run was created, in milliseconds since the Unix epoch (the runner's [`crate::runtime::Clock`]).
    pub created_at_ms: i64,
    /// When the run row last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Who is walking the run (set while `running`, cleared when it pauses or ends).
    #[serde(default)]
    pub owner: Option<RunOwner>,
    /// The owner's lease: it heartbeats before this time, or another process may take the run over.
    #[serde(default)]
    pub lease_expires_at_ms: Option<i64>,
    /// Where the blueprint came from and the files besides the definition the run depends on (set by the
    /// CLI; `None` for pipelines built in code).
    #[serde(default)]
    pub origin: Option<RunOrigin>,
    /// The journal as of the run's last status change: the run row commits to the hash chain, so a deleted
    /// trailing record is detected (`None` for runs stored before this was recorded).
    #[serde(default)]
    pub journal_head: Option<ChainHead>,
    /// The queue the run was enqueued on (`flujo run --queue NAME`); workers of that queue claim it
    /// ([`RunStore::claim_runs`]). `None`: the run is walked by the process that started it.
    #[serde(default)]
    pub queue: Option<String>,
}

/// The run row's commitment to its journal: how many records it had and the hash of the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Number of records.
    pub len: u64,
    /// Hash of the last record (the genesis hash when `len` is 0).
    pub hash: String,
}

/// Where a run's blueprint came from: what `flujo resume RUN_ID` needs to run the run's skills from any
/// folder, and the content hashes that tell whether those files changed since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunOrigin {
    /// The blueprint file, absolute.
    pub blueprint: String,
    /// The blueprint's folder, absolute (imports, prompt files and command skills are relative to it).
    pub base_dir: String,
    /// Files the run depends on besides its stored definition.
    #[serde(default)]
    pub files: Vec<OriginFile>,
}

/// One file a run depends on, with its content hash when the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginFile {
    /// What the file is to the run.
    pub role: OriginRole,
    /// Absolute path.
    pub path: String,
    /// blake3 of the content, hex.
    pub blake3: String,
}

/// What an [`OriginFile`] is to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginRole {
    /// A `skills.yaml`: resume reads the run's command skills from it.
    SkillsCatalog,
    /// A file a command skill runs (its program or script argument).
    SkillProgram,
    /// A `system_prompt.from_file` (its text is part of the stored definition).
    Prompt,
}

/// The process walking a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOwner {
    /// Unique per runner instance.
    pub id: String,
    /// The host name of the machine the process runs on.
    pub host: String,
    /// The process's id on its host.
    pub pid: u32,
    /// The process's start time (Linux `/proc/PID/stat` field 22), so a reused pid is not mistaken for the owner.
    #[serde(default)]
    pub pid_start: Option<u64>,
}

/// A compare-and-set update of a run's lifecycle fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    /// The run to update.
    pub run_id: String,
    /// The update applies only if the stored status is one of these (empty = any).
    pub expected: Vec<RunStatus>,
    /// The new status.
    pub status: RunStatus,
    /// The new pending pauses (non-empty when the new status is `paused`).
    pub pending: Vec<PendingPause>,
    /// The new output (see [`RunRecord::output`]).
    pub output: Option<Value>,
    /// The new error (see [`RunRecord::error`]).
    pub error: Option<RunError>,
    /// The new generation (see [`RunRecord::generation`]).
    pub generation: u32,
    /// The run's new cost total, in USD.
    pub total_cost_usd: f64,
    /// The run's new token total.
    pub total_tokens: u64,
    /// The time of the update, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// The new owner (`None` clears it).
    pub owner: Option<RunOwner>,
    /// The new lease expiry, in milliseconds since the Unix epoch (`None` clears it).
    pub lease_expires_at_ms: Option<i64>,
    /// When set, the update applies only if the stored owner id equals this (`Some(None)`: no owner).
    pub expected_owner: Option<Option<String>>,
    /// The journal head to record with the new status (`None` leaves the stored one unchanged).
    pub journal_head: Option<ChainHead>,
}

/// What a worker asks of [`RunStore::claim_runs`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// The queues to claim from.
    pub queues: Vec<String>,
    /// The claiming worker: the claimed runs' new owner.
    pub owner: RunOwner,
    /// The time of the claim, in milliseconds since the Unix epoch; a `running` run whose lease expired
    /// before it is abandoned and may be claimed.
    pub now_ms: i64,
    /// The claimed runs' lease expiry.
    pub lease_expires_at_ms: i64,
    /// The most runs to claim.
    pub limit: usize,
    /// Per-queue global concurrency: at most this many runs of the queue are `running` with a live lease
    /// (on any worker) once the claim is done. Queues without an entry have no limit.
    pub max_running: std::collections::BTreeMap<String, u64>,
    /// Per-queue rate limit: at most `runs` claims of the queue's runs in any `period_ms` (counted by each run's
    /// latest claim). Queues without an entry have no rate limit.
    pub rate_limits: std::collections::BTreeMap<String, RateLimit>,
}

/// A queue's rate limit ([`ClaimRequest::rate_limits`]): at most `runs` runs claimed per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The most runs claimed in one period.
    pub runs: u64,
    /// The period, in milliseconds (at least 1).
    pub period_ms: i64,
}

impl ClaimRequest {
    /// Claims up to `limit` runs of `queues` for `owner` at `now_ms`, leased until `lease_expires_at_ms`.
    pub fn new(queues: Vec<String>, owner: RunOwner, now_ms: i64, lease_expires_at_ms: i64, limit: usize) -> Self {
        ClaimRequest {
            queues,
            owner,
            now_ms,
            lease_expires_at_ms,
            limit,
            max_running: Default::default(),
            rate_limits: Default::default(),
        }
    }

    /// Limits `queue` to `max` runs running at once across every worker ([`ClaimRequest::max_running`]).
    pub fn with_max_running(mut self, queue: impl Into<String>, max: u64) -> Self {
        self.max_running.insert(queue.into(), max);
        self
    }

    /// Limits `queue` to `runs` claims per `period_ms` across every worker ([`ClaimRequest::rate_limits`]).
    pub fn with_rate_limit(mut self, queue: impl Into<String>, runs: u64, period_ms: i64) -> Self {
        self.rate_limits.insert(queue.into(), RateLimit { runs, period_ms: period_ms.max(1) });
        self
    }
}

/// Filter for [`RunStore::list_runs`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RunFilter {
    /// Only runs of this status (`None`: any).
    pub status: Option<RunStatus>,
    /// Only runs of the pipeline with this name (`None`: any).
    pub pipeline: Option<String>,
    /// Only runs created at or after this time, in milliseconds since the Unix epoch (`None`: any).
    pub since_ms: Option<i64>,
    /// At most this many runs, counted after filtering (`None`: no limit).
    pub limit: Option<usize>,
    /// Only runs listed after this one in the newest-first order: `(created_at_ms, run_id)` of the last run
    /// of the previous page (keyset pagination: a page costs the same however deep it is, and runs created
    /// meanwhile never shift a page).
    pub before: Option<(i64, String)>,
}

impl RunFilter {
    /// Every run.
    pub fn new() -> Self {
        RunFilter::default()
    }

    /// Only runs of `status`.
    pub fn status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only runs of the pipeline named `name`.
    pub fn pipeline(mut self, name: impl Into<String>) -> Self {
        self.pipeline = Some(name.into());
        self
    }

    /// Only runs created at or after `ms` (milliseconds since the Unix epoch).
    pub fn since_ms(mut self, ms: i64) -> Self {
        self.since_ms = Some(ms);
        self
    }

    /// At most `n` runs.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Only runs after the run created at `created_at_ms` with id `run_id` in the newest-first order (the
    /// next page after that run).
    pub fn before(mut self, created_at_ms: i64, run_id: impl Into<String>) -> Self {
        self.before = Some((created_at_ms, run_id.into()));
        self
    }
}

#[async_trait]
/// The run rows: creating, reading, updating (compare-and-set), listing and deleting runs.
pub trait RunStore: Send + Sync {
    /// Stores a new run; [`StoreError::RunExists`] when its id is taken.
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// The run with this id, or `None` when there is none.
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Applies `update` atomically if the stored status is expected; `Conflict` otherwise.
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError>;
    /// Extends the lease of a `running` run owned by `owner_id`; `Conflict` when the run is not (or no longer)
    /// running under that owner — the caller has lost the run and must stop.
    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease_expires_at_ms: i64) -> Result<(), StoreError>;
    /// The runs that match `filter` (every condition set must hold), newest first: by `created_at_ms`
    /// descending, ties by `run_id` descending.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;
    /// Ids of the runs whose id starts with `prefix` (byte-wise), in ascending byte order, at most `limit`.
    /// An empty prefix matches every run.
    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Deletes the runs created before `older_than_ms` (`created_at_ms < older_than_ms`), with their journal
    /// records, and returns how many runs were deleted.
    ///
    /// With `status: None`, only finished runs (`completed`, `failed`, `cancelled`) are deleted: a `running`
    /// or `paused` run is deleted only when `status` names that status explicitly. Blobs that only the
    /// deleted runs referenced (journal values, pipeline definitions) are deleted too; blobs still referenced
    /// elsewhere, and blobs no run ever referenced, are kept. The deletion is atomic.
    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError>;
    /// Claims runs for a worker, atomically: up to `limit` runs of the request's queues that are `queued`, or
    /// `running` with a lease that expired before `now_ms` (their owner is gone: failover), oldest first
    /// (`created_at_ms`, then `run_id`). Each becomes `running` under the request's owner and lease. Two
    /// concurrent claims never return the same run. A queue in [`ClaimRequest::max_running`] never has more
    /// than that many runs running with a live lease, however many workers claim at once. Returns the
    /// claimed run ids.
    ///
    /// The default says the store has no queues ([`StoreError::Unavailable`]).
    async fn claim_runs(&self, claim: &ClaimRequest) -> Result<Vec<String>, StoreError> {
        let _ = claim;
        Err(StoreError::Unavailable("this store has no queues".to_owned()))
    }
    /// Waits until a run may have been queued on one of `queues` (by any process), or `timeout_ms` passes, so
    /// an idle worker claims a new run at once rather than at its next poll. `Ok(true)` after a wake-up or
    /// the timeout (a wake-up may be spurious: claim and see); `Ok(false)` at once when the store cannot be
    /// told (the default): the caller polls.
    async fn wait_for_queued(&self, queues: &[String], timeout_ms: u64) -> Result<bool, StoreError> {
        let _ = (queues, timeout_ms);
        Ok(false)
    }
}

#[async_trait]
/// The journal: each run's append-only list of [`JournalRecord`]s.
pub trait JournalStore: Send + Sync {
    /// Durably appends one record. The record's `seq` must be the run's next position.
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError>;
    /// [`JournalStore::append`], fenced: the record is appended only while the run is `running` under the
    /// owner `owner_id`, checked atomically with the append, so a process that lost its run (its lease
    /// expired and another took the run over) can never append to its journal again. Otherwise
    /// [`StoreError::Conflict`] (status or owner) and nothing is written. The engine appends this way.
    ///
    /// The default appends without the check; the stores of `flujo-store` all fence, and the store
    /// conformance suite checks it.
    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        let _ = owner_id;
        self.append(record).await
    }
    /// All records of a run in `seq` order.
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError>;
    /// The records of a run from position `from_seq` on, in `seq` order (what a follower of a run has not
    /// read yet): the cost is that of the records returned, not of the journal. The default reads the whole
    /// journal and drops the rest; the stores of `flujo-store` read only the tail.
    async fn load_journal_from(&self, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
        let mut records = self.load_journal(run_id).await?;
        records.retain(|r| r.seq >= from_seq);
        Ok(records)
    }
}

#[async_trait]
/// Content-addressed bytes (large values, pipeline definitions), stored once per distinct content.
pub trait BlobStore: Send + Sync {
    /// Stores bytes under their blake3 hash (idempotent) and returns the hex hash.
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError>;
    /// The bytes stored under `hash` (as [`BlobStore::put_blob`] returned it), or `None` when there are none.
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Small, durable key → JSON value settings of the installation (schema notes, worker registrations, UI
/// preferences, …); not tied to a run.
#[async_trait]
pub trait SystemStateStore: Send + Sync {
    /// The value stored under `key`, if any.
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError>;
    /// Stores `value` under `key`, replacing any previous value.
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError>;
    /// Every `(key, value)` whose key starts with `prefix`, in key order (schedules under `schedule/`, live
    /// workers under `worker/`). The default refuses, for stores written before this method existed.
    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let _ = prefix;
        Err(StoreError::Unavailable("this store cannot list its system state".to_owned()))
    }
    /// Removes `key`; true when it was there. The default refuses, as [`SystemStateStore::list_state`].
    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        let _ = key;
        Err(StoreError::Unavailable("this store cannot delete system state".to_owned()))
    }
}

/// Whether [`RunStore::delete_runs`] deletes a run of status `run` when asked to delete `requested`.
pub fn deletable(run: RunStatus, requested: Option<RunStatus>) -> bool {
    match requested {
        Some(s) => run == s,
        None => !matches!(run, RunStatus::Running | RunStatus::Paused),
    }
}

/// Where an evaluation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EvaluationStatus {
    /// Waiting for a judge (durable: any process that opens the store may take it).
    Pending,
    /// Judged: `score` and `reason` are set.
    Done,
    /// The judge failed, timed out or was over its budget; `reason` says which.
    Failed,
}

impl EvaluationStatus {
    /// `pending`, `done` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluationStatus::Pending => "pending",
            EvaluationStatus::Done => "done",
            EvaluationStatus::Failed => "failed",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(EvaluationStatus::Pending),
            "done" => Some(EvaluationStatus::Done),
            "failed" => Some(EvaluationStatus::Failed),
            _ => None,
        }
    }
}

/// A shadow evaluation (SPEC §11): a judge's score of a run's (or one step's) result, kept in the store's
/// `evaluations` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvaluationRecord {
    /// The evaluation's id: `RUN_ID:PATH:JUDGE` (`run` for the whole run), so scheduling twice makes one.
    pub evaluation_id: String,
    /// The run judged.
    pub run_id: String,
    /// The run's pipeline.
    pub pipeline: String,
    /// The step judged (its path), or `None` for the whole run.
    pub path: Option<String>,
    /// The judge (a model, `provider:model`).
    pub judge: String,
    /// Where it stands.
    pub status: EvaluationStatus,
    /// The score, 0 to 1, once judged.
    pub score: Option<f64>,
    /// The judge's reason, or why it failed.
    pub reason: Option<String>,
    /// What is judged: `{input, output, metadata}` as they were when the run (or step) completed.
    pub snapshot: Value,
    /// Tokens the judge used.
    pub tokens: u64,
    /// What the judge cost, in USD.
    pub cost_usd: f64,
    /// How long judging took, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Judging attempts made.
    pub attempts: u32,
    /// The process judging it now, while its lease lasts.
    pub owner: Option<String>,
    /// Until when `owner` holds it (Unix ms).
    pub lease_expires_at_ms: Option<i64>,
    /// When it was scheduled (Unix ms).
    pub created_at_ms: i64,
    /// When it last changed (Unix ms).
    pub updated_at_ms: i64,
}

impl EvaluationRecord {
    /// A pending evaluation of `path` (`None`: the whole run) of `run_id` by `judge`, of `snapshot`.
    pub fn pending(
        run_id: &str,
        pipeline: &str,
        path: Option<&str>,
        judge: &str,
        snapshot: Value,
        now_ms: i64,
    ) -> Self {
        EvaluationRecord {
            evaluation_id: format!("{run_id}:{}:{judge}", path.unwrap_or("run")),
            run_id: run_id.to_owned(),
            pipeline: pipeline.to_owned(),
            path: path.map(str::to_owned),
            judge: judge.to_owned(),
            status: EvaluationStatus::Pending,
            score: None,
            reason: None,
            snapshot,
            tokens: 0,
            cost_usd: 0.0,
            latency_ms: None,
            attempts: 0,
            owner: None,
            lease_expires_at_ms: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }
}

/// Filter for [`EvaluationStore::list_evaluations`]; results are oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct EvaluationFilter {
    /// Only evaluations of this run.
    pub run_id: Option<String>,
    /// Only evaluations of runs of this pipeline.
    pub pipeline: Option<String>,
    /// Only evaluations scheduled at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only evaluations in this status.
    pub status: Option<EvaluationStatus>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl EvaluationFilter {
    /// Every evaluation.
    pub fn new() -> Self {
        EvaluationFilter::default()
    }
    /// Only those of `run_id`.
    pub fn run(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }
    /// Only those of pipeline `name`.
    pub fn pipeline(mut self, name: impl Into<String>) -> Self {
        self.pipeline = Some(name.into());
        self
    }
    /// Only those scheduled at or after `ms`.
    pub fn since_ms(mut self, ms: i64) -> Self {
        self.since_ms = Some(ms);
        self
    }
    /// Only those in `status`.
    pub fn status(mut self, status: EvaluationStatus) -> Self {
        self.status = Some(status);
        self
    }
    /// At most `n`.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether `e` passes the filter (for stores that filter in memory).
    pub fn matches(&self, e: &EvaluationRecord) -> bool {
        self.run_id.as_ref().is_none_or(|r| *r == e.run_id)
            && self.pipeline.as_ref().is_none_or(|p| *p == e.pipeline)
            && self.since_ms.is_none_or(|t| e.created_at_ms >= t)
            && self.status.is_none_or(|s| s == e.status)
    }
}

fn no_evaluations() -> StoreError {
    StoreError::Unavailable("this store keeps no evaluations".to_owned())
}

/// Shadow evaluations (SPEC §11). The defaults refuse, for stores written before this trait existed.
#[async_trait]
pub trait EvaluationStore: Send + Sync {
    /// Stores a new evaluation; `Ok(false)` (and nothing written) when one with its id exists.
    async fn create_evaluation(&self, evaluation: &EvaluationRecord) -> Result<bool, StoreError> {
        let _ = evaluation;
        Err(no_evaluations())
    }
    /// Replaces the stored evaluation of the same id (its status, result, usage, owner); `Ok(false)` when none
    /// has that id.
    async fn update_evaluation(&self, evaluation: &EvaluationRecord) -> Result<bool, StoreError> {
        let _ = evaluation;
        Err(no_evaluations())
    }
    /// Claims up to `limit` pending evaluations that no live owner holds (no owner, or a lease that expired
    /// before `now_ms`), oldest first: each gets `owner` and the lease, atomically (two claims never share
    /// one). Returns them as claimed.
    async fn claim_evaluations(
        &self,
        owner: &str,
        now_ms: i64,
        lease_expires_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<EvaluationRecord>, StoreError> {
        let _ = (owner, now_ms, lease_expires_at_ms, limit);
        Err(no_evaluations())
    }
    /// The evaluations that pass `filter`, oldest first.
    async fn list_evaluations(&self, filter: &EvaluationFilter) -> Result<Vec<EvaluationRecord>, StoreError> {
        let _ = filter;
        Err(no_evaluations())
    }
}

/// A complete state store.
pub trait Store: RunStore + JournalStore + BlobStore + SystemStateStore + EvaluationStore {
    /// Human-readable description (`memory://`, `sqlite:///…`).
    fn describe(&self) -> String;
    /// Bytes written so far (for benchmarks).
    fn bytes_written(&self) -> u64 {
        0
    }
}
