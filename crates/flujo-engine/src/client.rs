//! [`TaskClient`]: a Rust API over a state store for apps and services (and `flujo lens`): list and inspect
//! runs, resolve run-id prefixes, resume a run from its stored pipeline definition, replay a run from its
//! journal without calling any agent, verify a run's hash chain, prune old runs, and read or write system
//! state.
//!
//! A client needs no pipeline file: every run stores the canonical definition it was started with
//! ([`RunRecord::definition`], the serde JSON of a [`Pipeline`]), and the client builds a [`Flujo`] runner
//! from it with the skill registry it was given. Errors are typed ([`ClientError`]) with stable kinds.
//!
//! ```
//! use std::sync::Arc;
//! use flujo_core::{Pipeline, Step, Store};
//! use flujo_engine::{Flujo, TaskClient};
//! use flujo_skills::BuiltinRegistry;
//! use flujo_store::MemoryStore;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let inc = Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"}));
//! let pipeline = Pipeline::new("demo", vec![inc]);
//! let run = Flujo::builder(pipeline).store(store.clone()).build()?.run(json!(1)).await?;
//!
//! let client = TaskClient::new(store, Arc::new(BuiltinRegistry::new()));
//! let id = client.resolve_prefix(&run.run_id[..8]).await?;
//! let view = client.get_run(&id).await?.expect("stored");
//! assert_eq!((view.output, view.journal_len), (Some(json!(2)), 1));
//! assert!(client.verify(&id).await?.is_ok());
//! assert!(client.replay(&id).await?.matches);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{
    verify_chain, ChainError, FlujoError, JournalRecord, Map, ModelRegistry, PendingPause, Pipeline, ResolveError,
    RunError, RunFilter, RunRecord, RunResult, RunStatus, Skill, SkillCall, SkillError, SkillInfo, SkillOutput,
    SkillRegistry, Store, StoreError, Value,
};
use serde::{Deserialize, Serialize};

use crate::runner::{Flujo, ResumeRequest};

/// How many candidates an ambiguous prefix error lists.
pub const MAX_PREFIX_CANDIDATES: usize = 10;

/// Errors of [`TaskClient`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No run has the id it holds, or no run id starts with the prefix given to
    /// [`TaskClient::resolve_prefix`] (an empty prefix matches none).
    #[error("run '{0}' not found")]
    RunNotFound(String),
    /// A run-id prefix matches several runs (at most [`MAX_PREFIX_CANDIDATES`] are listed; `more` says
    /// whether there are others).
    #[error(
        "run id prefix '{prefix}' is ambiguous; it matches {}{}",
        candidates.join(", "),
        if *more { ", …" } else { "" }
    )]
    AmbiguousPrefix {
        /// The prefix as given.
        prefix: String,
        /// Ids of the matching runs, in ascending byte order.
        candidates: Vec<String>,
        /// True when more runs match than are listed.
        more: bool,
    },
    /// The run with the id it holds was stored without its pipeline definition ([`RunRecord::definition`]
    /// is `None`), so no runner can be built to resume or replay it.
    #[error("run '{0}' has no stored pipeline definition")]
    NoDefinition(String),
    /// The run's stored pipeline definition does not deserialize into a [`Pipeline`].
    #[error("the stored pipeline definition of run '{run_id}' cannot be read: {message}")]
    BadDefinition {
        /// The run whose definition cannot be read.
        run_id: String,
        /// The deserializer's error.
        message: String,
    },
    /// [`TaskClient::cancel`] of a run that has ended (`completed`) or was cancelled already.
    #[error("run '{run_id}' cannot be cancelled: it is {}", status.as_str())]
    NotCancellable {
        /// The run's id.
        run_id: String,
        /// Its status.
        status: RunStatus,
    },
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building the runner, resuming or replaying failed.
    #[error(transparent)]
    Run(#[from] FlujoError),
}

impl ClientError {
    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::RunNotFound(_) => "run_not_found",
            ClientError::AmbiguousPrefix { .. } => "ambiguous_run_id",
            ClientError::NoDefinition(_) => "no_definition",
            ClientError::BadDefinition { .. } => "bad_definition",
            ClientError::NotCancellable { .. } => "not_cancellable",
            ClientError::Store(_) => "store_error",
            ClientError::Run(e) => e.kind(),
        }
    }
}

/// A run as a client sees it: the run record's summary fields (without the pipeline definition), its
/// pending pauses and the length of its journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// The name of the pipeline the run executes.
    pub pipeline_name: String,
    /// The version of that pipeline.
    pub pipeline_version: String,
    /// Hash of the canonical pipeline definition the run was started with; only a runner built from that
    /// definition may resume it.
    pub pipeline_hash: String,
    /// Where the run is in its lifecycle.
    pub status: RunStatus,
    /// The run's input, as given.
    pub input: Value,
    /// The user fields the run's context started with, as given.
    pub initial_context: Map<String, Value>,
    /// The run's output once it has ended (redacted as the journal holds it); `None` while it runs or is paused,
    /// and for a failed run that produced none.
    pub output: Option<Value>,
    /// Why the run failed; `None` unless it is `failed`.
    pub error: Option<RunError>,
    /// Pauses awaiting an answer (each with its message and input schema).
    pub pending: Vec<PendingPause>,
    /// How many times the run was resumed after failing (0 if never); failed records of older generations run
    /// again.
    pub generation: u32,
    /// What the run has spent, in USD, as of its last status change; [`RunView::with_journal`] raises it to what
    /// the journal records for a run still `running`.
    pub total_cost_usd: f64,
    /// Tokens the run has used, prompt and completion together, counted like [`RunView::total_cost_usd`].
    pub total_tokens: u64,
    /// When the run was created, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When the run row last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Number of journal records (finished step executions).
    pub journal_len: usize,
    /// The queue the run was enqueued on, if any.
    #[serde(default)]
    pub queue: Option<String>,
    /// The process walking the run while it is `running` (a worker, `flujo run`, …).
    #[serde(default)]
    pub owner: Option<flujo_core::RunOwner>,
    /// When the owner's lease expires unless it heartbeats, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub lease_expires_at_ms: Option<i64>,
}

/// The usage a journal records: the tokens and cost of every record not already counted by an enclosing
/// record. A composite's record carries the usage of all its children and is committed after them, so a
/// record is enclosed when a later record has an ancestor path of its own. Linear in the journal (times
/// path depth).
pub fn journal_usage(records: &[JournalRecord]) -> (u64, f64) {
    let mut later: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let (mut tokens, mut cost) = (0u64, 0.0f64);
    for r in records.iter().rev() {
        let path = r.path.as_str();
        let enclosed = path.char_indices().any(|(i, c)| c == '/' && later.contains(&path[..i]));
        if !enclosed {
            tokens = tokens.saturating_add(r.tokens.total());
            if r.cost_usd.is_finite() {
                cost += r.cost_usd;
            }
        }
        later.insert(path);
    }
    (tokens, cost)
}

impl RunView {
    /// The view of `run` with its journal. A run still marked `running` (in progress, or killed) has not
    /// recorded its totals yet: they are computed from the journal ([`journal_usage`]).
    pub fn with_journal(run: RunRecord, journal: &[JournalRecord]) -> Self {
        let unfinished = run.status == RunStatus::Running;
        let mut view = RunView::from_record(run, journal.len());
        if unfinished {
            let (tokens, cost) = journal_usage(journal);
            view.total_tokens = view.total_tokens.max(tokens);
            view.total_cost_usd = view.total_cost_usd.max(cost);
        }
        view
    }

    /// The view of `run`, whose journal holds `journal_len` records, with the totals as the run row holds them
    /// (see [`RunView::with_journal`] for a `running` run).
    pub fn from_record(run: RunRecord, journal_len: usize) -> Self {
        RunView {
            run_id: run.run_id,
            pipeline_name: run.pipeline_name,
            pipeline_version: run.pipeline_version,
            pipeline_hash: run.pipeline_hash,
            status: run.status,
            input: run.input,
            initial_context: run.initial_context,
            output: run.output,
            error: run.error,
            pending: run.pending,
            generation: run.generation,
            total_cost_usd: run.total_cost_usd,
            total_tokens: run.total_tokens,
            created_at_ms: run.created_at_ms,
            updated_at_ms: run.updated_at_ms,
            journal_len,
            queue: run.queue,
            owner: run.owner,
            lease_expires_at_ms: run.lease_expires_at_ms,
        }
    }
}

/// The outcome of [`TaskClient::replay`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// The replayed run's id.
    pub run_id: String,
    /// True when the walk over the journal reproduced every composite record and the run's status and output.
    pub matches: bool,
    /// The status stored for the run.
    pub recorded_status: RunStatus,
    /// The output stored for the run (`None` while it runs or is paused, or when it produced none).
    pub recorded_output: Option<Value>,
    /// The recomputed result (when the replay matched).
    pub result: Option<RunResult>,
    /// Why the replay did not match (the first difference found).
    pub mismatch: Option<String>,
}

/// The outcome of [`TaskClient::verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// The verified run's id.
    pub run_id: String,
    /// Number of journal records checked.
    pub records: usize,
    /// Hash of the last record (`None` for an empty journal).
    pub last_hash: Option<String>,
    /// The first broken record, if any.
    pub broken: Option<ChainError>,
}

impl VerifyReport {
    /// True when the hash chain and the run row check out ([`VerifyReport::broken`] is `None`).
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// The result of `run` rebuilt from its journal `records` without executing anything: the top-level steps'
/// latest records (`step_history`, in step order) and the context they produced (initial context, their
/// patches and outputs, `status`). See [`TaskClient::result`].
pub fn stored_result(run: &RunRecord, records: &[JournalRecord]) -> RunResult {
    let mut latest: std::collections::BTreeMap<usize, &JournalRecord> = std::collections::BTreeMap::new();
    for r in records {
        if let Ok(i) = r.path.parse::<usize>() {
            latest.insert(i, r);
        }
    }
    let mut ctx = flujo_core::Context::new(&run.run_id, run.input.clone(), run.initial_context.clone());
    let mut history = Vec::with_capacity(latest.len());
    for r in latest.values() {
        for op in &r.patch {
            let _ = ctx.apply_unlogged(op);
        }
        ctx.set_step_output(&r.step, r.output.clone());
        history.push(r.to_step_result());
    }
    let _ =
        ctx.apply_unlogged(&flujo_core::PatchOp::set(vec!["status".into()], Value::String(run.status.as_str().into())));
    let mut result = RunResult::new(run.run_id.clone(), run.pipeline_name.clone(), run.status);
    result.output = run.output.clone();
    result.error = run.error.clone();
    result.pending = run.pending.clone();
    result.step_history = history;
    let (tokens, cost) = if run.status == RunStatus::Running { journal_usage(records) } else { (0, 0.0) };
    result.total_cost_usd = run.total_cost_usd.max(cost);
    result.total_tokens = run.total_tokens.max(tokens);
    result.context = ctx.to_json();
    result
}

fn head_of(records: &[JournalRecord]) -> flujo_core::ChainHead {
    flujo_core::ChainHead {
        len: records.len() as u64,
        hash: records.last().map_or_else(|| flujo_core::journal::GENESIS_HASH.to_owned(), |r| r.hash.clone()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Checks the run row against its (already verified) journal: the committed head, then a completed run's output.
pub(crate) fn check_run_row(run: &RunRecord, records: &[JournalRecord]) -> Option<ChainError> {
    let at = |i: usize, reason: String| {
        let r = records.get(i);
        ChainError { seq: r.map_or(i as u64, |r| r.seq), path: r.map(|r| r.path.clone()).unwrap_or_default(), reason }
    };
    if let Some(head) = &run.journal_head {
        let len = usize::try_from(head.len).unwrap_or(usize::MAX);
        let shorter = records.len() < len;
        let longer = records.len() > len && run.status != RunStatus::Running;
        if shorter || longer {
            return Some(at(
                records.len().min(len),
                format!(
                    "the run row ({}) commits to {} journal record(s), the journal holds {}{}",
                    run.status.as_str(),
                    head.len,
                    records.len(),
                    if shorter { ": records were deleted" } else { ": records were added" }
                ),
            ));
        }
        let committed = match len.checked_sub(1) {
            Some(i) => records.get(i).map(|r| r.hash.as_str()),
            None => Some(flujo_core::journal::GENESIS_HASH),
        };
        if committed != Some(head.hash.as_str()) {
            return Some(at(
                len.saturating_sub(1),
                format!(
                    "the run row commits to last hash {}, the journal has {}",
                    head.hash,
                    committed.unwrap_or("none")
                ),
            ));
        }
    }
    if run.status == RunStatus::Completed {
        let last_top = records.iter().enumerate().rev().find(|(_, r)| !r.path.contains('/'));
        if let Some((i, r)) = last_top {
            if run.output.as_ref() != Some(&*r.output) {
                return Some(at(
                    i,
                    "the run's stored output is not the output of the record that produced it".to_owned(),
                ));
            }
        }
    }
    None
}

/// A client over a state store. Cheap to clone.
#[derive(Clone)]
pub struct TaskClient {
    store: Arc<dyn Store>,
    skills: Arc<dyn SkillRegistry>,
    models: Option<Arc<dyn ModelRegistry>>,
    strict_templates: bool,
    /// The runtime configuration of [`FlujoRuntimeBuilder::client`]: runners for resume and replay are built
    /// from it (custom step policies, governance, clock, cache, …).
    runtime: Option<crate::FlujoRuntimeBuilder>,
}

impl std::fmt::Debug for TaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskClient").field("store", &self.store.describe()).finish_non_exhaustive()
    }
}

impl TaskClient {
    /// A client over `store`; `skills` resolves the skills of stored pipelines when a run is resumed.
    pub fn new(store: Arc<dyn Store>, skills: Arc<dyn SkillRegistry>) -> Self {
        TaskClient { store, skills, models: None, strict_templates: false, runtime: None }
    }

    /// A client over `store` whose resumes and replays build their runners from `runtime` (see
    /// [`FlujoRuntimeBuilder::client`](crate::FlujoRuntimeBuilder::client)).
    pub(crate) fn with_runtime(store: Arc<dyn Store>, runtime: crate::FlujoRuntimeBuilder) -> Self {
        let skills = runtime.skill_registry();
        let models = runtime.model_registry();
        TaskClient { store, skills, models, strict_templates: false, runtime: Some(runtime) }
    }

    /// The model registry used to resume runs whose pipelines call models.
    pub fn with_models(mut self, models: Arc<dyn ModelRegistry>) -> Self {
        self.models = Some(models);
        self
    }

    /// Undefined template variables are errors in resumed runs (as `FlujoRuntimeBuilder::strict_templates`).
    pub fn strict_templates(mut self, strict: bool) -> Self {
        self.strict_templates = strict;
        self
    }

    /// The store this client reads and writes.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs matching `filter` (newest first), each with its journal length. Loads each listed run's
    /// journal: use a `limit`.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunView>, ClientError> {
        let runs = self.store.list_runs(filter).await?;
        let mut views = Vec::with_capacity(runs.len());
        for run in runs {
            let journal = self.store.load_journal(&run.run_id).await?;
            views.push(RunView::with_journal(run, &journal));
        }
        Ok(views)
    }

    /// The run `run_id` (an exact id), or `None`.
    pub async fn get_run(&self, run_id: &str) -> Result<Option<RunView>, ClientError> {
        let Some(run) = self.store.get_run(run_id).await? else { return Ok(None) };
        let journal = self.store.load_journal(run_id).await?;
        Ok(Some(RunView::with_journal(run, &journal)))
    }

    /// The journal of `run_id` in seq order (`RunNotFound` for an unknown run).
    pub async fn journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, ClientError> {
        self.record(run_id).await?;
        Ok(self.store.load_journal(run_id).await?)
    }

    /// The full stored record of `run_id` (`RunNotFound` for an unknown run).
    pub async fn record(&self, run_id: &str) -> Result<RunRecord, ClientError> {
        self.store.get_run(run_id).await?.ok_or_else(|| ClientError::RunNotFound(run_id.to_owned()))
    }

    /// The id of the one run that `prefix` names: an exact id wins; otherwise the prefix must match exactly
    /// one run (`AmbiguousPrefix` lists the candidates, `RunNotFound` when none matches).
    pub async fn resolve_prefix(&self, prefix: &str) -> Result<String, ClientError> {
        if prefix.is_empty() {
            return Err(ClientError::RunNotFound(String::new()));
        }
        if self.store.get_run(prefix).await?.is_some() {
            return Ok(prefix.to_owned());
        }
        let mut ids = self.store.find_runs_by_prefix(prefix, MAX_PREFIX_CANDIDATES + 1).await?;
        match ids.len() {
            0 => Err(ClientError::RunNotFound(prefix.to_owned())),
            1 => Ok(ids.remove(0)),
            n => {
                ids.truncate(MAX_PREFIX_CANDIDATES);
                Err(ClientError::AmbiguousPrefix {
                    prefix: prefix.to_owned(),
                    candidates: ids,
                    more: n > MAX_PREFIX_CANDIDATES,
                })
            }
        }
    }

    /// Continues `run_id` (answers a pause, or continues a crashed or failed run) with a runner built from
    /// the run's stored definition and this client's skill registry.
    pub async fn resume(&self, run_id: &str, req: ResumeRequest) -> Result<RunResult, ClientError> {
        let run = self.record(run_id).await?;
        let flujo = self.runner(&run, Arc::clone(&self.skills), self.models.clone())?;
        Ok(flujo.resume_with(run_id, req).await?)
    }

    /// Re-walks `run_id` over its journal without calling any agent or writing anything (see
    /// [`Flujo::replay`]) and reports whether the recorded composites, status and output are reproduced.
    /// Skills and models the registries cannot resolve are replaced by stand-ins that refuse to be called,
    /// so a replay needs neither the original skills nor model credentials.
    pub async fn replay(&self, run_id: &str) -> Result<ReplayReport, ClientError> {
        let run = self.record(run_id).await?;
        let skills: Arc<dyn SkillRegistry> = Arc::new(ReplaySkills(Arc::clone(&self.skills)));
        let models: Arc<dyn ModelRegistry> = Arc::new(ReplayModels(self.models.clone()));
        let flujo = self.runner(&run, skills, Some(models))?;
        let (result, mismatch) = match flujo.replay(run_id).await {
            Ok(result) => (Some(result), None),
            Err(FlujoError::NotResumable { reason, .. }) => (None, Some(reason)),
            Err(other) => return Err(other.into()),
        };
        Ok(ReplayReport {
            run_id: run.run_id,
            matches: mismatch.is_none(),
            recorded_status: run.status,
            recorded_output: run.output,
            result,
            mismatch,
        })
    }

    /// Recomputes the hash chain of `run_id`'s journal.
    ///
    /// Beyond the chain itself, the run row must agree with it: the row commits to the journal's length and
    /// last hash at every status change (a deleted trailing record is found; a `running` run may have more
    /// records than its last commitment, never fewer), and a completed run's stored output must be the
    /// output of the last top-level record (a forged `runs.output` is found).
    pub async fn verify(&self, run_id: &str) -> Result<VerifyReport, ClientError> {
        let run = self.store.get_run(run_id).await?.ok_or_else(|| ClientError::RunNotFound(run_id.to_owned()))?;
        let records = self.journal(run_id).await?;
        let broken = verify_chain(&records).err().or_else(|| check_run_row(&run, &records));
        Ok(VerifyReport {
            run_id: run_id.to_owned(),
            records: records.len(),
            last_hash: records.last().map(|r| r.hash.clone()),
            broken,
        })
    }

    /// The result of `run_id` as stored — what [`Flujo::run`] returned or would return once it ends: status,
    /// output, error, pending pauses, the top-level steps' results (`step_history`) and the context rebuilt
    /// from the journal. Works for a run in any state (a `running` run shows what has committed so far) and
    /// executes nothing.
    pub async fn result(&self, run_id: &str) -> Result<RunResult, ClientError> {
        let run = self.store.get_run(run_id).await?.ok_or_else(|| ClientError::RunNotFound(run_id.to_owned()))?;
        let records = self.journal(run_id).await?;
        Ok(stored_result(&run, &records))
    }

    /// Cancels `run_id`: a `queued`, `running`, `paused` or `failed` run becomes `cancelled` (final: it can
    /// never be resumed), with the error kind `cancelled`. A running walk — in this process or any other on
    /// the same store — stops at its next journal append, which is fenced on the run's status, so nothing
    /// commits after the cancellation. A run that is `completed` or already `cancelled` is refused with
    /// [`ClientError::NotCancellable`]. Returns the cancelled run's view.
    pub async fn cancel(&self, run_id: &str, reason: &str) -> Result<RunView, ClientError> {
        for _ in 0..16 {
            let run = self.record(run_id).await?;
            if matches!(run.status, RunStatus::Completed | RunStatus::Cancelled) {
                return Err(ClientError::NotCancellable { run_id: run_id.to_owned(), status: run.status });
            }
            let records = self.store.load_journal(run_id).await?;
            let now = now_ms();
            let update = flujo_core::RunUpdate {
                run_id: run_id.to_owned(),
                expected: vec![run.status],
                status: RunStatus::Cancelled,
                pending: Vec::new(),
                output: None,
                error: Some(RunError::new("cancelled", reason)),
                generation: run.generation,
                total_cost_usd: run.total_cost_usd,
                total_tokens: run.total_tokens,
                updated_at_ms: now,
                owner: None,
                lease_expires_at_ms: None,
                expected_owner: (run.status == RunStatus::Running).then(|| run.owner.as_ref().map(|o| o.id.clone())),
                journal_head: Some(head_of(&records)),
            };
            match self.store.update_run(&update).await {
                Ok(()) => {}
                // The run changed under us (a step finished, a walk paused): read it again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            // A walk may have appended between our read of the journal and the update (appends are fenced
            // on the status, so none can follow it): commit the row to the journal as it now stands.
            let after = self.store.load_journal(run_id).await?;
            if after.len() != records.len() {
                let (tokens, cost) = journal_usage(&after);
                let fix = flujo_core::RunUpdate {
                    expected: vec![RunStatus::Cancelled],
                    expected_owner: None,
                    total_cost_usd: run.total_cost_usd.max(cost),
                    total_tokens: run.total_tokens.max(tokens),
                    journal_head: Some(head_of(&after)),
                    ..update.clone()
                };
                self.store.update_run(&fix).await?;
            }
            let run = self.record(run_id).await?;
            return Ok(RunView::with_journal(run, &after));
        }
        Err(ClientError::Store(StoreError::Unavailable(format!(
            "run '{run_id}' kept changing while it was being cancelled; try again"
        ))))
    }

    /// Deletes runs created before `older_than_ms` (see [`flujo_core::RunStore::delete_runs`]).
    pub async fn prune(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, ClientError> {
        Ok(self.store.delete_runs(older_than_ms, status).await?)
    }

    /// The system-state value stored under `key` (installation-wide settings, not tied to a run), or `None`.
    pub async fn system_state_get(&self, key: &str) -> Result<Option<Value>, ClientError> {
        Ok(self.store.get_state(key).await?)
    }

    /// Stores `value` under system-state `key`, replacing any previous value.
    pub async fn system_state_set(&self, key: &str, value: &Value) -> Result<(), ClientError> {
        Ok(self.store.set_state(key, value).await?)
    }

    /// The pipeline `run` was started with.
    pub fn pipeline_of(run: &RunRecord) -> Result<Pipeline, ClientError> {
        let def = run.definition.as_ref().ok_or_else(|| ClientError::NoDefinition(run.run_id.clone()))?;
        crate::pipeline_from_definition(def)
            .map_err(|e| ClientError::BadDefinition { run_id: run.run_id.clone(), message: e.to_string() })
    }

    fn runner(
        &self,
        run: &RunRecord,
        skills: Arc<dyn SkillRegistry>,
        models: Option<Arc<dyn ModelRegistry>>,
    ) -> Result<Flujo, ClientError> {
        let pipeline = Self::pipeline_of(run)?;
        let mut builder = match &self.runtime {
            Some(runtime) => runtime.clone().for_pipeline(pipeline),
            None => Flujo::builder(pipeline).strict_templates(self.strict_templates),
        }
        .store(Arc::clone(&self.store))
        .skills(skills);
        if let Some(models) = models {
            builder = builder.models(models);
        }
        Ok(builder.build()?)
    }
}

/// A skill that stands in for one a replay cannot resolve; a replay never calls it.
struct StandIn {
    id: String,
}

#[async_trait]
impl Skill for StandIn {
    async fn call(&self, _call: SkillCall) -> Result<SkillOutput, SkillError> {
        Err(SkillError::fatal(format!("'{}' is not available in a replay (replays never call agents)", self.id)))
    }

    fn info(&self) -> SkillInfo {
        {
            let mut info = SkillInfo::default();
            info.id = self.id.clone();
            info.description = "replay stand-in".to_owned();
            info
        }
    }
}

/// The client's skills, with stand-ins for what they cannot resolve.
struct ReplaySkills(Arc<dyn SkillRegistry>);

impl SkillRegistry for ReplaySkills {
    fn resolve(&self, id: &str, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        Ok(self.0.resolve(id, params).unwrap_or_else(|_| Arc::new(StandIn { id: id.to_owned() })))
    }

    fn list(&self) -> Vec<SkillInfo> {
        self.0.list()
    }
}

/// The client's models (if any), with stand-ins for what they cannot resolve.
struct ReplayModels(Option<Arc<dyn ModelRegistry>>);

impl ModelRegistry for ReplayModels {
    fn resolve(&self, model: &str, settings: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        let real = self.0.as_ref().and_then(|m| m.resolve(model, settings).ok());
        Ok(real.unwrap_or_else(|| Arc::new(StandIn { id: model.to_owned() })))
    }
}
