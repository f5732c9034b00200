//! The public run API: [`FlujoRuntimeBuilder`] wires injectable parts into an [`ExecutorCore`]; [`Flujo`]
//! starts and resumes runs and keeps the run record's lifecycle (running → paused/completed/failed).

use std::collections::HashMap;
use std::sync::Arc;

use flujo_core::runtime::{PerRunQuotas, SystemClock};
use flujo_core::{
    ChainHead, Clock, Context, Definition, FlujoError, GovernancePolicy, IdGen, Interrupt, Map, ModelRegistry,
    Pipeline, QuotaManager, RunError, RunEvent, RunOrigin, RunOwner, RunRecord, RunResult, RunStatus, RunUpdate,
    SkillRegistry, StepStatus, Store, StoreError, Telemetry, UsageLimits, Value,
};
use flujo_template::UndefinedMode;

use crate::cache::{CacheBackend, MemoryCache};
use crate::executor::{genesis, ExecutorCore, JournalWriter, Lexical, RunState};
use crate::ownership::{owner_alive, ActiveWalk, Heartbeat};
use crate::policy::{ExecutionDispatcher, StepPolicy};
use crate::prepare::Preparer;

/// The run output as stored: redacted like the journal record of the step that produced it (SPEC §14).
fn stored_output(output: &Value, history: &[flujo_core::StepResult]) -> Value {
    let last = history.last().map(|r| r.name.as_str()).unwrap_or_default();
    flujo_core::redact_at(&["steps", last], output)
}

/// Run ids from UUIDv7 (time-ordered).
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidIds;

impl IdGen for UuidIds {
    fn new_run_id(&self) -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }
}

/// Builds a [`Flujo`] runner from injectable parts. Every part has a default; tests swap in fakes.
#[derive(Clone)]
pub struct FlujoRuntimeBuilder {
    pipeline: Pipeline,
    store: Option<Arc<dyn Store>>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    quotas: Arc<dyn QuotaManager>,
    skills: Option<Arc<dyn SkillRegistry>>,
    models: Option<Arc<dyn ModelRegistry>>,
    governance: Vec<Arc<dyn GovernancePolicy>>,
    memory: Option<crate::memory::MemoryIndexing>,
    telemetry: Option<Arc<dyn Telemetry>>,
    dispatcher: ExecutionDispatcher,
    cache: Option<Arc<dyn CacheBackend>>,
    undefined: UndefinedMode,
    usage_limits: UsageLimits,
    lease: std::time::Duration,
    origin: Option<RunOrigin>,
    host: Option<String>,
}

/// Default lease of a run's owner; the heartbeat renews it every third of it.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

impl FlujoRuntimeBuilder {
    /// A builder for `pipeline` with every part at its default: no store (runs are not durable), the
    /// [`SystemClock`], UUIDv7 run ids ([`UuidIds`]), an independent quota per run ([`PerRunQuotas`]), the
    /// built-in skills, no model registry, no governance, no telemetry, the built-in step policies, an in-memory
    /// cache, lenient templates, no usage limits and a lease of [`DEFAULT_LEASE`].
    pub fn new(pipeline: Pipeline) -> Self {
        FlujoRuntimeBuilder {
            pipeline,
            store: None,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidIds),
            quotas: Arc::new(PerRunQuotas),
            skills: None,
            models: None,
            governance: Vec::new(),
            memory: None,
            telemetry: None,
            dispatcher: ExecutionDispatcher::with_builtins(),
            cache: None,
            undefined: UndefinedMode::Lenient,
            usage_limits: UsageLimits::default(),
            lease: DEFAULT_LEASE,
            origin: None,
            host: None,
        }
    }

    /// The host name this runner records as the owner of the runs it walks (default: the machine's, see
    /// [`crate::ownership::host_name`]). A runner takes over a `running` run owned on another host only once
    /// that owner's lease has expired; on its own host it checks whether the owning process is still there.
    /// Give runners distinct names when they should treat each other as separate hosts (workers sharing a
    /// host name, simulations of a multi-host deployment).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// How long another host must wait before taking over a run whose owner stopped heartbeating.
    pub fn lease(mut self, lease: std::time::Duration) -> Self {
        self.lease = lease.max(std::time::Duration::from_millis(30));
        self
    }

    /// The skill registry runners built here use (the built-ins unless one was given).
    pub(crate) fn skill_registry(&self) -> Arc<dyn SkillRegistry> {
        self.skills.clone().unwrap_or_else(|| Arc::new(flujo_skills::BuiltinRegistry::new()))
    }

    /// The model registry runners built here use, if any.
    pub(crate) fn model_registry(&self) -> Option<Arc<dyn ModelRegistry>> {
        self.models.clone()
    }

    /// The state store (none = runs are not durable and cannot be resumed).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    /// The time source of run timestamps, leases, cache expiry and retry jitter (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// The source of run ids for runs started without [`RunOptions::run_id`] (default: [`UuidIds`]).
    pub fn id_generator(mut self, ids: Arc<dyn IdGen>) -> Self {
        self.ids = ids;
        self
    }
    /// Makes the quota (the budget tracker) of each run, resume and replay (default: [`PerRunQuotas`], one
    /// independent quota per run).
    pub fn quota_manager(mut self, quotas: Arc<dyn QuotaManager>) -> Self {
        self.quotas = quotas;
        self
    }
    /// The skill registry (default: the built-in skills).
    pub fn skills(mut self, skills: Arc<dyn SkillRegistry>) -> Self {
        self.skills = Some(skills);
        self
    }
    /// The model registry that resolves `provider:model` agents (default: none, and then a pipeline with a
    /// model agent fails to build).
    pub fn models(mut self, models: Arc<dyn ModelRegistry>) -> Self {
        self.models = Some(models);
        self
    }
    /// Appends a policy to the governance chain (evaluated in order before every agent/skill call).
    pub fn governance(mut self, policy: Arc<dyn GovernancePolicy>) -> Self {
        self.governance.push(policy);
        self
    }
    /// Indexes chosen step outputs into a vector store (default: none; see [`crate::memory`]).
    pub fn memory(mut self, indexing: crate::memory::MemoryIndexing) -> Self {
        self.memory = Some(indexing);
        self
    }
    /// Receives the [`RunEvent`]s of every run (default: none).
    pub fn telemetry(mut self, telemetry: Arc<dyn Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }
    /// Registers a policy for a (custom or built-in) step kind.
    pub fn policy(mut self, kind: impl Into<String>, policy: Arc<dyn StepPolicy>) -> Self {
        self.dispatcher.register(kind, policy);
        self
    }
    /// The backend of `cache` steps (default: a new [`MemoryCache`] on the builder's clock for each runner
    /// built).
    pub fn cache(mut self, cache: Arc<dyn CacheBackend>) -> Self {
        self.cache = Some(cache);
        self
    }
    /// Undefined template variables are errors instead of empty strings.
    pub fn strict_templates(mut self, strict: bool) -> Self {
        self.undefined = if strict { UndefinedMode::Strict } else { UndefinedMode::Lenient };
        self
    }
    /// Where the pipeline came from (blueprint folder and content hashes of the files it depends on), stored
    /// with every run so `flujo resume RUN_ID` can find the run's skills from any folder.
    pub fn origin(mut self, origin: RunOrigin) -> Self {
        self.origin = Some(origin);
        self
    }
    /// Default budget of every run (a run may pass stricter limits in [`RunOptions`]).
    pub fn usage_limits(mut self, limits: UsageLimits) -> Self {
        self.usage_limits = limits;
        self
    }

    /// A [`TaskClient`](crate::TaskClient) over this configuration: its store, and for resuming and replaying
    /// stored runs the same skills, models, step policies (custom kinds included), governance, clock, cache
    /// and template mode as the runners built here. Needs a store.
    pub fn client(self) -> Result<crate::TaskClient, FlujoError> {
        let store = self.store.clone().ok_or(FlujoError::NoStore)?;
        Ok(crate::TaskClient::with_runtime(store, self))
    }

    /// The same configuration for another pipeline.
    pub fn for_pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipeline = pipeline;
        self
    }

    /// Resolves every skill and compiles every template, expression and schema; fails on the first problem.
    pub fn build(mut self) -> Result<Flujo, FlujoError> {
        let pipeline = std::mem::replace(&mut self.pipeline, Pipeline::new(String::new(), Vec::new()));
        // The configuration without the pipeline, for `Flujo::client`.
        let template = self.clone();
        let skills: Arc<dyn SkillRegistry> = match self.skills {
            Some(s) => s,
            None => Arc::new(flujo_skills::BuiltinRegistry::new()),
        };
        let pipeline = Arc::new(pipeline);
        // Preparing, hashing and serializing recurse once per nesting level (up to MAX_NESTING_DEPTH); on a
        // thread with little stack left (a 2 MiB worker, a debug build) this continues on a fresh segment.
        let (prepared, definition) = stacker::maybe_grow(4 << 20, 16 << 20, || {
            let mut prep = Preparer::new(&*skills, self.models.as_deref(), &self.dispatcher);
            prep.pipeline(&pipeline)?;
            // Serialized once: the text every run stores and its hash, which identifies the definition.
            let definition = Definition::of(&*pipeline).ok().map(Arc::new);
            Ok::<_, FlujoError>((prep.out, definition))
        })?;
        let hash = match &definition {
            Some(d) => d.hash().to_owned(),
            None => pipeline.definition_hash(),
        };
        let cache = self.cache.unwrap_or_else(|| Arc::new(MemoryCache::new(self.clock.clone())));
        let core = ExecutorCore {
            dispatcher: self.dispatcher,
            prepared,
            governance: crate::governance::GovernanceChain::new(self.governance),
            cache,
            undefined: self.undefined,
            memory: self.memory.map(|mut m| {
                m.pipeline = Arc::from(pipeline.name.as_str());
                if let Some(own) = &pipeline.memory {
                    m.apply(own);
                }
                Arc::new(m)
            }),
        };
        Ok(Flujo {
            inner: Arc::new(Inner {
                core,
                pipeline,
                pipeline_hash: hash,
                store: self.store,
                clock: self.clock,
                ids: self.ids,
                quotas: self.quotas,
                telemetry: self.telemetry,
                usage_limits: self.usage_limits,
                _skills: skills,
                definition,
                owner: match self.host {
                    Some(host) => RunOwner { host, ..crate::ownership::new_owner() },
                    None => crate::ownership::new_owner(),
                },
                lease: self.lease,
                origin: self.origin,
                template,
            }),
        })
    }
}

/// Reads a stored pipeline definition (`RunRecord::definition`) back into a [`Pipeline`], straight from its
/// text. Deserializing recurses once per nesting level (steps buffer their fields, so some of it below the
/// JSON reader), so this continues on a fresh stack segment when the current thread has little left.
pub fn pipeline_from_definition(definition: &Definition) -> Result<Pipeline, serde_json::Error> {
    stacker::maybe_grow(4 << 20, 16 << 20, || definition.parse())
}

/// Options of one run: `RunOptions::new(input).run_id("…").context(fields)`. More options may come, so it is
/// built with these methods rather than a struct literal.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// The run's input: the first step receives it.
    pub input: Value,
    /// Use this run id instead of a generated one.
    pub run_id: Option<String>,
    /// Initial user fields of the context.
    pub context: Map<String, Value>,
    /// Budget of this run (combined with the runner's default; the stricter limit wins).
    pub usage_limits: Option<UsageLimits>,
    /// Model answers stream as `RunEvent::TokenDelta` events while they are generated (providers are asked
    /// for a stream). Off by default: a streamed call costs the same but sends more events.
    pub stream_tokens: bool,
    /// The queue the run belongs to while this process walks it (`None`: none). A run started with a queue
    /// is walked at once by this process like any other, but if the process dies its run — left `running`
    /// with a lease that expires — is claimed by a worker of that queue and resumed by replay, as a queued
    /// run would be (`flujo serve` starts the runs it accepts this way).
    pub queue: Option<String>,
}

impl RunOptions {
    /// Options with `input` and every other option at its default: a generated run id, no initial context
    /// fields, the runner's budget, no token streaming.
    pub fn new(input: Value) -> Self {
        RunOptions { input, ..Default::default() }
    }

    /// Use this run id instead of a generated one.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// The initial user fields of the context.
    pub fn context(mut self, fields: Map<String, Value>) -> Self {
        self.context = fields;
        self
    }

    /// A budget for this run (combined with the runner's; the stricter limit wins).
    pub fn usage_limits(mut self, limits: UsageLimits) -> Self {
        self.usage_limits = Some(limits);
        self
    }

    /// Stream model answers as `RunEvent::TokenDelta` events while they are generated.
    pub fn stream_tokens(mut self, on: bool) -> Self {
        self.stream_tokens = on;
        self
    }

    /// The queue whose workers take the run over if this process dies while it walks it (see
    /// [`RunOptions::queue`]).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

/// How to continue a run: `ResumeRequest::answer(value)` (optionally `.pause_id("…")`) answers a pause;
/// `ResumeRequest::default()` continues a crashed or failed run. Built with these methods rather than a struct
/// literal, since more options may come.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ResumeRequest {
    /// The pause to answer (optional when exactly one pause is pending).
    pub pause_id: Option<String>,
    /// The human's answer; `None` continues a crashed or failed run.
    pub answer: Option<Value>,
    /// As [`RunOptions::stream_tokens`].
    pub stream_tokens: bool,
    /// The run's row as the caller just read it (see [`with_stored_run`](Self::with_stored_run)).
    pub stored_run: Option<Arc<RunRecord>>,
    /// Take the run over only if it was left running (see [`interrupted_only`](Self::interrupted_only)).
    pub interrupted_only: bool,
}

impl ResumeRequest {
    /// Answers the pending pause with `answer` (the only one, or the one named with [`pause_id`](Self::pause_id)).
    pub fn answer(answer: Value) -> Self {
        ResumeRequest { answer: Some(answer), ..Default::default() }
    }

    /// The pause to answer, when several are pending.
    pub fn pause_id(mut self, pause_id: impl Into<String>) -> Self {
        self.pause_id = Some(pause_id.into());
        self
    }

    /// Stream model answers as `RunEvent::TokenDelta` events while they are generated.
    pub fn stream_tokens(mut self, on: bool) -> Self {
        self.stream_tokens = on;
        self
    }

    /// Continues the run only if it was left `running` (its process died): a run that is paused, failed,
    /// finished or waiting in its queue is refused (`FlujoError::NotResumable`) and left as it is. For recovery
    /// that must never retry a failed run by accident — e.g. a process resuming interrupted runs while another
    /// may finish them meanwhile.
    pub fn interrupted_only(mut self) -> Self {
        self.interrupted_only = true;
        self
    }

    /// The run's row, as the caller has just read it (a worker reads it to build the runner): the resume
    /// does not read it again. Safe with a stale row: the resume's first write is a compare-and-set on the
    /// status and owner it read, so a row that changed meanwhile makes the resume fail, never overwrite.
    pub fn with_stored_run(mut self, run: RunRecord) -> Self {
        self.stored_run = Some(Arc::new(run));
        self
    }
}

struct Inner {
    core: ExecutorCore,
    pipeline: Arc<Pipeline>,
    pipeline_hash: String,
    store: Option<Arc<dyn Store>>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    quotas: Arc<dyn QuotaManager>,
    telemetry: Option<Arc<dyn Telemetry>>,
    usage_limits: UsageLimits,
    _skills: Arc<dyn SkillRegistry>,
    /// The canonical definition stored with every run (computed once).
    definition: Option<Arc<Definition>>,
    /// This runner's identity as the owner of the runs it walks.
    owner: RunOwner,
    lease: std::time::Duration,
    origin: Option<RunOrigin>,
    /// The configuration it was built with (without the pipeline), for [`Flujo::client`].
    template: FlujoRuntimeBuilder,
}

/// A runner for one pipeline. Cheap to clone; safe to share between tasks.
#[derive(Clone)]
pub struct Flujo {
    inner: Arc<Inner>,
}

fn stricter(a: UsageLimits, b: Option<UsageLimits>) -> UsageLimits {
    let Some(b) = b else { return a };
    fn min_opt<T: PartialOrd>(x: Option<T>, y: Option<T>) -> Option<T> {
        match (x, y) {
            (Some(x), Some(y)) => Some(if y < x { y } else { x }),
            (x, None) => x,
            (None, y) => y,
        }
    }
    let mut limits = UsageLimits::new();
    limits.total_cost_usd_limit = min_opt(a.total_cost_usd_limit, b.total_cost_usd_limit);
    limits.total_tokens_limit = min_opt(a.total_tokens_limit, b.total_tokens_limit);
    limits
}

/// A telemetry sink that forwards to the runner's telemetry and to a per-run channel.
struct Fanout {
    base: Option<Arc<dyn Telemetry>>,
    tx: tokio::sync::mpsc::UnboundedSender<RunEvent>,
}

impl Telemetry for Fanout {
    fn on_event(&self, event: &RunEvent) {
        if let Some(b) = &self.base {
            b.on_event(event);
        }
        let _ = self.tx.send(event.clone());
    }
}

/// A run in progress, started with [`Flujo::start`] (or [`Flujo::start_with`], [`Flujo::start_resume`]): await it
/// for the [`RunResult`], and before that read its [`RunEvent`]s with [`next_event`](RunHandle::next_event) or
/// as a `Stream`. The run goes on when the handle is dropped (it is a spawned task); it has its id from the
/// start, so it can be resumed or inspected by id whatever happens to the handle.
pub struct RunHandle {
    run_id: String,
    events: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    task: tokio::task::JoinHandle<Result<RunResult, FlujoError>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle").field("run_id", &self.run_id).finish_non_exhaustive()
    }
}

impl RunHandle {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The next event of the run, in order; `None` once the run has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// The run's result (the same as awaiting the handle).
    pub async fn result(self) -> Result<RunResult, FlujoError> {
        self.await
    }
}

impl std::future::Future for RunHandle {
    type Output = Result<RunResult, FlujoError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| joined.unwrap_or_else(|e| Err(FlujoError::Runtime(format!("the run's task stopped: {e}")))))
    }
}

impl futures::Stream for RunHandle {
    type Item = RunEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RunEvent>> {
        self.events.poll_recv(cx)
    }
}

impl Flujo {
    /// Starts a run on the current Tokio runtime and returns at once with its [`RunHandle`].
    ///
    /// # Panics
    /// Outside a Tokio runtime (like `tokio::spawn`).
    pub fn start(&self, input: Value) -> RunHandle {
        self.start_with(RunOptions::new(input))
    }

    /// [`Flujo::start`] with options (run id, context, budget, token streaming).
    pub fn start_with(&self, mut opts: RunOptions) -> RunHandle {
        let run_id = opts.run_id.get_or_insert_with(|| self.inner.ids.new_run_id()).clone();
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let sink: Arc<dyn Telemetry> = Arc::new(Fanout { base: self.inner.telemetry.clone(), tx });
        let this = self.clone();
        let task = tokio::spawn(async move { this.start_run(opts, Some(sink)).await });
        RunHandle { run_id, events, task }
    }

    /// Continues run `run_id` (answering a pause, or after a crash) on the current Tokio runtime; its events
    /// include the replayed steps.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start_resume(&self, run_id: &str, req: ResumeRequest) -> RunHandle {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let sink: Arc<dyn Telemetry> = Arc::new(Fanout { base: self.inner.telemetry.clone(), tx });
        let this = self.clone();
        let id = run_id.to_owned();
        let task = tokio::spawn(async move { this.resume_inner(&id, req, Some(sink)).await });
        RunHandle { run_id: run_id.to_owned(), events, task }
    }

    /// Starts building a runner for `pipeline`.
    pub fn builder(pipeline: Pipeline) -> FlujoRuntimeBuilder {
        FlujoRuntimeBuilder::new(pipeline)
    }

    /// The pipeline this runner runs.
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// The runner's store; `None` when its runs are not durable.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.inner.store.as_ref()
    }

    /// The checks every model agent (and skill) the pipeline can reach must pass before a run starts:
    /// under strict pricing each model has a price, each provider that needs an API key has one. The first
    /// failure, in pipeline order (`PricingNotConfigured`, `MissingApiKey`); a run that fails them runs no
    /// step at all.
    pub fn preflight(&self) -> Result<(), Interrupt> {
        // Each skill once: `reachable` has no duplicates.
        for skill in self.inner.core.prepared.reachable() {
            skill.preflight()?;
        }
        Ok(())
    }

    /// Runs the pipeline on `input`.
    pub async fn run(&self, input: Value) -> Result<RunResult, FlujoError> {
        self.run_with(RunOptions::new(input)).await
    }

    /// Runs with options, streaming events to `events` as well as the runner's telemetry.
    pub async fn run_streaming(
        &self,
        opts: RunOptions,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
        impl std::future::Future<Output = Result<RunResult, FlujoError>> + '_,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sink: Arc<dyn Telemetry> = Arc::new(Fanout { base: self.inner.telemetry.clone(), tx });
        (rx, self.start_run(opts, Some(sink)))
    }

    /// Runs the pipeline with `opts` (run id, initial context, budget, token streaming) and returns its result.
    /// A failed step or a pause is not an error: the result's status says so.
    ///
    /// Errors: [`FlujoError::InvalidRunId`] for an unusable `run_id`, [`FlujoError::ContextValidation`] for an
    /// initial context that sets a framework field or does not match the context schema,
    /// [`FlujoError::NotResumable`] when this process is already walking a run with that id, and
    /// [`FlujoError::Store`] when the store fails (for example, the run id is already taken).
    pub async fn run_with(&self, opts: RunOptions) -> Result<RunResult, FlujoError> {
        self.start_run(opts, self.inner.telemetry.clone()).await
    }

    /// Puts a run of the pipeline on `queue` instead of walking it, and returns its id at once: a worker of
    /// that queue (`flujo worker`, or [`RunStore::claim_runs`] with [`Flujo::resume_with`]) claims and runs it.
    /// The run is stored `queued` with its input, context and definition; the same checks as
    /// [`Flujo::run_with`] apply first (run id, initial context). Needs a store.
    ///
    /// [`RunStore::claim_runs`]: flujo_core::RunStore::claim_runs
    pub async fn enqueue(&self, opts: RunOptions, queue: &str) -> Result<String, FlujoError> {
        let inner = &*self.inner;
        let store = inner.store.as_ref().ok_or(FlujoError::NoStore)?;
        if let Err(reason) = flujo_core::limits::check_name(queue) {
            return Err(FlujoError::Config(format!("queue name {queue:?}: {reason}")));
        }
        self.check_options(&opts)?;
        let run_id = opts.run_id.unwrap_or_else(|| inner.ids.new_run_id());
        let now = inner.clock.now_ms();
        let mut record = self.new_record(run_id.clone(), opts.input, opts.context, now);
        record.queue = Some(queue.to_owned());
        store.create_run(&record).await?;
        Ok(run_id)
    }

    /// A schedule that enqueues a run of this pipeline on `queue` at every tick of `cron` (read in
    /// `timezone`, an IANA name or `UTC`), with the input and context of `opts` (checked now, as
    /// [`Flujo::enqueue`] does; `opts.run_id` is refused: each tick's run has its own id). Save it with
    /// [`crate::schedule::insert`]; workers fire it ([`crate::schedule::fire_due`]).
    pub fn new_schedule(
        &self,
        name: &str,
        cron: &str,
        timezone: &str,
        opts: RunOptions,
        queue: &str,
    ) -> Result<crate::schedule::Schedule, FlujoError> {
        if opts.run_id.is_some() {
            return Err(FlujoError::Config(
                "a schedule's runs get their ids from its ticks; drop the run id".to_owned(),
            ));
        }
        self.check_options(&opts)?;
        let now = self.inner.clock.now_ms();
        let template = self.new_record(String::new(), opts.input, opts.context, now);
        crate::schedule::Schedule::new(name, cron, timezone, queue, template, now).map_err(FlujoError::Config)
    }

    /// The row of a new run of this pipeline: `queued`, no owner, an empty journal.
    fn new_record(&self, run_id: String, input: Value, context: Map<String, Value>, now: i64) -> RunRecord {
        let inner = &*self.inner;
        RunRecord {
            run_id,
            pipeline_name: inner.pipeline.name.clone(),
            pipeline_version: inner.pipeline.version.clone(),
            pipeline_hash: inner.pipeline_hash.clone(),
            definition: inner.definition.clone(),
            status: RunStatus::Queued,
            input,
            initial_context: context,
            pending: Vec::new(),
            output: None,
            error: None,
            generation: 0,
            total_cost_usd: 0.0,
            total_tokens: 0,
            created_at_ms: now,
            updated_at_ms: now,
            owner: None,
            lease_expires_at_ms: None,
            origin: inner.origin.clone(),
            journal_head: Some(ChainHead { len: 0, hash: genesis() }),
            queue: None,
        }
    }

    /// The governance decisions this runner's chain made so far (allowed, denied, modified calls).
    pub fn governance_stats(&self) -> crate::governance::GovernanceStats {
        self.inner.core.governance.stats()
    }

    /// The names of this runner's governance policies, in the order they are asked.
    pub fn governance_policies(&self) -> Vec<String> {
        self.inner.core.governance.names()
    }

    /// This runner's identity as the owner of the runs it walks (the owner of their rows while they run).
    pub fn owner(&self) -> &RunOwner {
        &self.inner.owner
    }

    fn check_options(&self, opts: &RunOptions) -> Result<(), FlujoError> {
        if let Some(queue) = &opts.queue {
            flujo_core::limits::check_name(queue)
                .map_err(|reason| FlujoError::Config(format!("queue name {queue:?}: {reason}")))?;
        }
        if let Some(id) = &opts.run_id {
            flujo_core::check_run_id(id).map_err(|reason| FlujoError::InvalidRunId {
                shown: flujo_core::shorten_for_display(id, 40),
                reason,
            })?;
        }
        self.check_initial_context(&opts.context)
    }

    async fn start_run(
        &self,
        opts: RunOptions,
        telemetry: Option<Arc<dyn Telemetry>>,
    ) -> Result<RunResult, FlujoError> {
        let inner = &*self.inner;
        self.check_options(&opts)?;
        let run_id: Arc<str> = Arc::from(opts.run_id.unwrap_or_else(|| inner.ids.new_run_id()).as_str());
        let limits = stricter(inner.usage_limits, opts.usage_limits);
        // A walk of this id in this process means the run exists (its row may not be written yet).
        let _active = ActiveWalk::claim(inner.store.as_ref(), &run_id, &inner.owner.id)
            .map_err(|_| FlujoError::Store(StoreError::RunExists(run_id.to_string())))?;
        let now = inner.clock.now_ms();
        let journal = match &inner.store {
            Some(store) => {
                let mut record = self.new_record(run_id.to_string(), opts.input.clone(), opts.context.clone(), now);
                record.status = RunStatus::Running;
                record.owner = Some(inner.owner.clone());
                record.lease_expires_at_ms = Some(now + inner.lease.as_millis() as i64);
                record.queue = opts.queue.clone();
                store.create_run(&record).await?;
                Some(JournalWriter::new(store.clone(), inner.owner.id.clone(), 0, genesis()))
            }
            None => None,
        };
        let quota = inner.quotas.quota_for_run(&run_id, limits);
        let state = RunState::new(
            run_id.clone(),
            journal,
            Vec::new(),
            0,
            HashMap::new(),
            quota,
            telemetry,
            inner.clock.clone(),
        )
        .stream_tokens(opts.stream_tokens);
        let ctx = Context::new(&run_id, opts.input.clone(), opts.context);
        self.walk(state, ctx, opts.input, 0, false).await
    }

    /// The initial context is validated like every update (SPEC §4), before the run is recorded: it may not
    /// set a framework field (`run_id`, `initial_prompt`, `steps`, `hitl_history`, `import_artifacts`,
    /// `status`), and with a `context_schema` the user fields must satisfy it (types and `required` keys).
    fn check_initial_context(&self, context: &Map<String, Value>) -> Result<(), FlujoError> {
        let reserved: Vec<&str> =
            context.keys().map(String::as_str).filter(|k| flujo_core::context::FRAMEWORK_FIELDS.contains(k)).collect();
        if !reserved.is_empty() {
            return Err(FlujoError::ContextValidation(format!(
                "{} {} framework field{} that the run sets itself and cannot be given (framework fields: {})",
                reserved.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", "),
                if reserved.len() == 1 { "is a" } else { "are" },
                if reserved.len() == 1 { "" } else { "s" },
                flujo_core::context::FRAMEWORK_FIELDS.join(", ")
            )));
        }
        let inner = &*self.inner;
        let Some(schema) = inner.pipeline.context_schema.as_ref().and_then(|s| inner.core.prepared.schema(s)) else {
            return Ok(());
        };
        let user = Value::Object(context.clone());
        let errors: Vec<String> = schema
            .iter_errors(&user)
            .take(20)
            .map(|e| {
                let at = e.instance_path.to_string();
                let e = flujo_core::shorten_for_display(&e.to_string(), 300);
                format!("{e} (at {})", if at.is_empty() { "the context root" } else { at.as_str() })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FlujoError::ContextValidation(format!(
                "the initial context does not match the pipeline's context_schema: {}",
                errors.join("; ")
            )))
        }
    }

    /// Answers the single pending pause of `run_id` with `answer`.
    pub async fn resume(&self, run_id: &str, answer: Value) -> Result<RunResult, FlujoError> {
        self.resume_with(run_id, ResumeRequest::answer(answer)).await
    }

    /// Continues a run: answers a pause, or (without answer) continues a crashed or failed run from its first
    /// unfinished step. A completed run returns its stored result.
    pub async fn resume_with(&self, run_id: &str, req: ResumeRequest) -> Result<RunResult, FlujoError> {
        self.resume_inner(run_id, req, self.inner.telemetry.clone()).await
    }

    /// [`Flujo::resume_with`], streaming events (replayed steps included) to the returned receiver.
    pub fn resume_streaming<'a>(
        &'a self,
        run_id: &'a str,
        req: ResumeRequest,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
        impl std::future::Future<Output = Result<RunResult, FlujoError>> + 'a,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sink: Arc<dyn Telemetry> = Arc::new(Fanout { base: self.inner.telemetry.clone(), tx });
        (rx, self.resume_inner(run_id, req, Some(sink)))
    }

    async fn resume_inner(
        &self,
        run_id: &str,
        req: ResumeRequest,
        telemetry: Option<Arc<dyn Telemetry>>,
    ) -> Result<RunResult, FlujoError> {
        let inner = &*self.inner;
        let stream_tokens = req.stream_tokens;
        let store = inner.store.as_ref().ok_or(FlujoError::NoStore)?;
        let _active = ActiveWalk::claim(Some(store), run_id, &inner.owner.id)?;
        let run = match req.stored_run {
            Some(run) if run.run_id == run_id => Arc::unwrap_or_clone(run),
            _ => store.get_run(run_id).await?.ok_or_else(|| FlujoError::RunNotFound(run_id.to_owned()))?,
        };
        if run.pipeline_hash != inner.pipeline_hash {
            return Err(FlujoError::PipelineMismatch {
                run_id: run_id.to_owned(),
                stored: run.pipeline_hash,
                given: inner.pipeline_hash.clone(),
            });
        }
        if req.interrupted_only && run.status != RunStatus::Running {
            return Err(FlujoError::NotResumable {
                run_id: run_id.to_owned(),
                reason: format!("it is {}, not interrupted", run.status.as_str()),
            });
        }
        let mut answers = HashMap::new();
        let mut generation = run.generation;
        // Answers given while the run waited in its queue (see the `Paused` branch).
        if matches!(run.status, RunStatus::Queued | RunStatus::Running) {
            for p in &run.pending {
                if let Some(a) = &p.answer {
                    answers.insert(p.pause_id.clone(), a.clone());
                }
            }
        }
        if !matches!(run.status, RunStatus::Completed | RunStatus::Cancelled) {
            // Nothing runs (and the run is left as it is) when a model it can reach cannot be called.
            if let Err(i) = self.preflight() {
                let mut result = self.stored_result(&run).await?;
                result.status = RunStatus::Failed;
                result.error = Some(RunError::new(
                    i.kind(),
                    format!("{i} (nothing was run; the run is unchanged and can be resumed once this is fixed)"),
                ));
                return Ok(result);
            }
        }
        match run.status {
            RunStatus::Completed => {
                // Continuing a completed run, or answering again with the answer it was given (a retried
                // resume), returns its result; another answer is refused: nothing can take it any more.
                if let Some(answer) = &req.answer {
                    let journal = store.load_journal(run_id).await?;
                    let answered: Vec<&flujo_core::JournalRecord> = journal
                        .iter()
                        .filter(|r| r.kind == "hitl" && req.pause_id.as_ref().is_none_or(|p| &r.path == p))
                        .collect();
                    if !answered.iter().any(|r| *r.output == *answer) {
                        let given = answered
                            .iter()
                            .map(|r| format!("{} was answered {}", r.path, r.output))
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(FlujoError::NotResumable {
                            run_id: run_id.to_owned(),
                            reason: if given.is_empty() {
                                "it is already complete; there is no pause to answer".to_owned()
                            } else {
                                format!("it is already complete ({given}); a different answer cannot be taken")
                            },
                        });
                    }
                }
                return self.stored_result(&run).await;
            }
            RunStatus::Cancelled => {
                return Err(FlujoError::NotResumable { run_id: run_id.to_owned(), reason: "it was cancelled".into() })
            }
            RunStatus::Paused => {
                let Some(answer) = req.answer else {
                    return Err(FlujoError::NotResumable {
                        run_id: run_id.to_owned(),
                        reason: format!(
                            "it is paused awaiting input at {}; give an answer",
                            run.pending.iter().map(|p| p.pause_id.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    });
                };
                let pending = match &req.pause_id {
                    Some(id) => run.pending.iter().find(|p| &p.pause_id == id).ok_or_else(|| {
                        FlujoError::InvalidResumeInput {
                            pause_id: id.clone(),
                            message: format!(
                                "no such pending pause (pending: {})",
                                run.pending.iter().map(|p| p.pause_id.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        }
                    })?,
                    None if run.pending.len() == 1 => &run.pending[0],
                    None => {
                        return Err(FlujoError::InvalidResumeInput {
                            pause_id: String::new(),
                            message: format!(
                                "{} pauses are pending ({}); say which one to answer",
                                run.pending.len(),
                                run.pending.iter().map(|p| p.pause_id.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        })
                    }
                };
                if let Some(schema) = &pending.input_schema {
                    let validator = jsonschema::validator_for(schema).map_err(|e| FlujoError::InvalidResumeInput {
                        pause_id: pending.pause_id.clone(),
                        message: format!("the stored input_schema is invalid: {e}"),
                    })?;
                    let errors: Vec<String> =
                        validator.iter_errors(&answer).map(|e| format!("{e} (at '{}')", e.instance_path)).collect();
                    if !errors.is_empty() {
                        return Err(FlujoError::InvalidResumeInput {
                            pause_id: pending.pause_id.clone(),
                            message: errors.join("; "),
                        });
                    }
                }
                if run.queue.is_some() {
                    // A run of a queue goes back to it with the answer; a worker continues it.
                    return self.requeue_answered(&run, pending.pause_id.clone(), answer).await;
                }
                answers.insert(pending.pause_id.clone(), answer);
            }
            RunStatus::Failed => generation += 1,
            // Waiting in its queue: this process walks it instead of a worker.
            RunStatus::Queued => {}
            RunStatus::Running => {
                // Left `running`: take it over only if its owner is gone (see `ownership`).
                if let Some(owner) = &run.owner {
                    if let Some(alive) =
                        owner_alive(owner, &inner.owner.host, run_id, run.lease_expires_at_ms, inner.clock.now_ms())
                    {
                        return Err(FlujoError::NotResumable {
                            run_id: run_id.to_owned(),
                            reason: format!("it is running in {alive}; it can be resumed once that process is gone"),
                        });
                    }
                }
            }
        }
        let now = inner.clock.now_ms();
        let expected_owner = (run.status == RunStatus::Running).then(|| run.owner.as_ref().map(|o| o.id.clone()));
        store
            .update_run(&RunUpdate {
                owner: Some(inner.owner.clone()),
                lease_expires_at_ms: Some(now + inner.lease.as_millis() as i64),
                expected_owner,
                run_id: run_id.to_owned(),
                expected: vec![run.status],
                status: RunStatus::Running,
                pending: Vec::new(),
                output: None,
                error: None,
                generation,
                total_cost_usd: run.total_cost_usd,
                total_tokens: run.total_tokens,
                updated_at_ms: now,
                journal_head: None,
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict { actual, .. } => FlujoError::NotResumable {
                    run_id: run_id.to_owned(),
                    reason: format!("another process resumed it first ({actual})"),
                },
                other => other.into(),
            })?;
        let records = store.load_journal(run_id).await?;
        let (next_seq, last_hash) = match records.last() {
            Some(r) => (r.seq + 1, r.hash.clone()),
            None => (0, genesis()),
        };
        let rid: Arc<str> = Arc::from(run_id);
        let quota = inner.quotas.quota_for_run(run_id, inner.usage_limits);
        let state = RunState::new(
            rid.clone(),
            Some(JournalWriter::new(store.clone(), inner.owner.id.clone(), next_seq, last_hash)),
            records,
            generation,
            answers,
            quota,
            telemetry,
            inner.clock.clone(),
        )
        .stream_tokens(stream_tokens);
        let ctx = Context::new(run_id, run.input.clone(), run.initial_context.clone());
        self.walk(state, ctx, run.input, generation, true).await
    }

    /// Puts a paused run of a queue back on it with `answer` recorded on its pause (the claiming worker's
    /// walk reads it from there); returns the run's result with status `queued`.
    async fn requeue_answered(
        &self,
        run: &RunRecord,
        pause_id: String,
        answer: Value,
    ) -> Result<RunResult, FlujoError> {
        let inner = &*self.inner;
        let store = inner.store.as_ref().ok_or(FlujoError::NoStore)?;
        let mut pending = run.pending.clone();
        for p in &mut pending {
            if p.pause_id == pause_id {
                p.answer = Some(answer.clone());
            }
        }
        store
            .update_run(&RunUpdate {
                run_id: run.run_id.clone(),
                expected: vec![RunStatus::Paused],
                status: RunStatus::Queued,
                pending: pending.clone(),
                output: None,
                error: None,
                generation: run.generation,
                total_cost_usd: run.total_cost_usd,
                total_tokens: run.total_tokens,
                updated_at_ms: inner.clock.now_ms(),
                owner: None,
                lease_expires_at_ms: None,
                expected_owner: None,
                journal_head: None,
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict { actual, .. } => FlujoError::NotResumable {
                    run_id: run.run_id.clone(),
                    reason: format!("another process answered it first ({actual})"),
                },
                other => other.into(),
            })?;
        let mut result = self.stored_result(run).await?;
        result.status = RunStatus::Queued;
        result.pending = pending.into_iter().filter(|p| p.answer.is_none()).collect();
        result.output = None;
        Ok(result)
    }

    /// Re-runs a stored run from its journal without calling any agent or writing anything: every composite
    /// step is recomputed from its children's records and must match its own record, and the final status and
    /// output must match the run's. Returns the recomputed result, or `NotResumable` naming the first mismatch.
    pub async fn replay(&self, run_id: &str) -> Result<RunResult, FlujoError> {
        let inner = &*self.inner;
        let store = inner.store.as_ref().ok_or(FlujoError::NoStore)?;
        let run = store.get_run(run_id).await?.ok_or_else(|| FlujoError::RunNotFound(run_id.to_owned()))?;
        if run.pipeline_hash != inner.pipeline_hash {
            return Err(FlujoError::PipelineMismatch {
                run_id: run_id.to_owned(),
                stored: run.pipeline_hash,
                given: inner.pipeline_hash.clone(),
            });
        }
        let records = store.load_journal(run_id).await?;
        let quota = inner.quotas.quota_for_run(run_id, UsageLimits::default());
        let state = RunState::new(
            Arc::from(run_id),
            None,
            records,
            run.generation,
            HashMap::new(),
            quota,
            None,
            inner.clock.clone(),
        )
        .verify_only();
        let ctx = Context::new(run_id, run.input.clone(), run.initial_context.clone());
        let result = self.walk_inner(state, ctx, run.input.clone(), run.generation, true, false).await?;
        let mismatch = |what: &str, recorded: String, recomputed: String| FlujoError::NotResumable {
            run_id: run_id.to_owned(),
            reason: format!("replay mismatch: recorded {what} {recorded}, recomputed {recomputed}"),
        };
        if let Some(err) = &result.error {
            if err.kind == "aborted" {
                return Err(FlujoError::NotResumable { run_id: run_id.to_owned(), reason: err.message.clone() });
            }
        }
        if result.status != run.status && run.status != RunStatus::Running {
            return Err(mismatch("status", run.status.as_str().into(), result.status.as_str().into()));
        }
        if run.status == RunStatus::Completed && result.output != run.output {
            return Err(mismatch("output", format!("{:?}", run.output), format!("{:?}", result.output)));
        }
        Ok(result)
    }

    /// Walks the pipeline from the root (replaying what is journaled) and records the run's outcome. Every
    /// walk of a run (new, resumed, claimed by a worker) runs inside a `flujo.run` span, the parent of its
    /// `flujo.step` spans; its outcome is recorded on it when it ends (nothing when no subscriber wants it).
    async fn walk(
        &self,
        state: RunState,
        ctx: Context,
        input: Value,
        generation: u32,
        resumed: bool,
    ) -> Result<RunResult, FlujoError> {
        let span = tracing::info_span!(
            "flujo.run",
            flujo.run_id = %state.run_id,
            flujo.pipeline = %self.inner.pipeline.name,
            flujo.resumed = resumed,
            flujo.generation = i64::from(generation),
            flujo.status = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            flujo.total_tokens = tracing::field::Empty,
            flujo.cost_usd = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let walk = self.walk_inner(state, ctx, input, generation, resumed, true);
        let result = tracing::Instrument::instrument(walk, span.clone()).await;
        if !span.is_disabled() {
            match &result {
                Ok(r) => {
                    let tokens = r.step_history.iter().fold(flujo_core::TokenUsage::default(), |mut t, s| {
                        t.add(s.tokens);
                        t
                    });
                    span.record("flujo.status", r.status.as_str());
                    // Integers as i64: OpenTelemetry has no unsigned attributes (u64 is exported as text).
                    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                    span.record("gen_ai.usage.input_tokens", int(tokens.prompt));
                    span.record("gen_ai.usage.output_tokens", int(tokens.completion));
                    span.record("flujo.total_tokens", int(r.total_tokens));
                    span.record("flujo.cost_usd", r.total_cost_usd);
                    if let Some(e) = &r.error {
                        span.record("error.type", e.kind.as_str());
                    }
                }
                Err(e) => {
                    span.record("flujo.status", "error");
                    span.record("error.type", e.kind());
                }
            }
        }
        result
    }

    async fn walk_inner(
        &self,
        state: RunState,
        mut ctx: Context,
        input: Value,
        generation: u32,
        resumed: bool,
        persist: bool,
    ) -> Result<RunResult, FlujoError> {
        let inner = &*self.inner;
        let pipeline = &inner.pipeline;
        let _heartbeat = match (&inner.store, persist) {
            (Some(store), true) => Heartbeat::start(
                store.clone(),
                state.run_id.to_string(),
                inner.owner.id.clone(),
                inner.lease,
                inner.clock.clone(),
            ),
            _ => Heartbeat::none(),
        };
        state.emit(|| RunEvent::RunStarted {
            run_id: state.run_id.to_string(),
            pipeline: pipeline.name.clone(),
            resumed,
        });
        let schema = pipeline.context_schema.as_ref().and_then(|s| inner.core.prepared.schema(s));
        let lex = Lexical::root(schema);
        let mut history = Vec::with_capacity(pipeline.steps.len());
        // A new run checks every model it can reach before its first step (a resumed run did so before it
        // was taken over; a replay calls nothing).
        let preflight = if resumed || state.is_verify_only() { Ok(()) } else { self.preflight() };
        let outcome = match preflight {
            Err(i) => Err(i),
            Ok(()) => {
                inner.core.run_sequence(&pipeline.steps, input, &mut ctx, "", &lex, &state, Some(&mut history)).await
            }
        };
        let (status, output, error, pending) = match outcome {
            Ok(seq) if seq.status == StepStatus::Completed => {
                (RunStatus::Completed, Some(seq.output), None, Vec::new())
            }
            Ok(seq) => (
                RunStatus::Failed,
                Some(seq.output),
                Some(RunError::new("step_failed", seq.feedback.unwrap_or_default())),
                Vec::new(),
            ),
            Err(Interrupt::Paused(p)) => (RunStatus::Paused, None, None, p),
            Err(Interrupt::Store(e)) => return Err(FlujoError::Store(e)),
            Err(other) => {
                // Steps the budget stopped after they had paid for work are part of the result.
                let stopped = state.take_stopped_results();
                let output = stopped.last().map(|r| (*r.output).clone());
                history.extend(stopped);
                (RunStatus::Failed, output, Some(RunError::new(other.kind(), other.to_string())), Vec::new())
            }
        };
        let spent = state.quota.spent();
        if let (true, Some(store)) = (persist, &inner.store) {
            let (journal_head, last_top_output) = match &state.journal {
                Some(w) => {
                    // A walk that saw an append fail leaves the run as it is (the next walk resumes it): its
                    // view of the journal is uncertain, and a final status given on another branch's account
                    // would commit the row to the wrong journal.
                    let (head, out) = w.head().await.map_err(FlujoError::Store)?;
                    (Some(head), out)
                }
                None => (None, None),
            };
            // The run output is stored as the journal holds it (a secret output stays hidden), so `lens
            // verify` can check it against the record that produced it.
            let stored = match (&output, last_top_output) {
                (Some(_), Some(journaled)) if status == RunStatus::Completed => Some((*journaled).clone()),
                (Some(o), _) => Some(stored_output(o, &history)),
                (None, _) => None,
            };
            store
                .update_run(&RunUpdate {
                    owner: None,
                    lease_expires_at_ms: None,
                    expected_owner: Some(Some(inner.owner.id.clone())),
                    run_id: state.run_id.to_string(),
                    expected: vec![RunStatus::Running],
                    status,
                    pending: pending.clone(),
                    output: stored,
                    error: error.clone(),
                    generation,
                    total_cost_usd: spent.cost_usd,
                    total_tokens: spent.tokens,
                    updated_at_ms: inner.clock.now_ms(),
                    journal_head,
                })
                .await?;
        }
        if !pending.is_empty() {
            state.emit(|| RunEvent::Paused { run_id: state.run_id.to_string(), pending: pending.clone() });
        }
        let tokens: flujo_core::TokenUsage = history.iter().fold(Default::default(), |mut t, r| {
            t.add(r.tokens);
            t
        });
        state.emit(|| RunEvent::RunFinished {
            run_id: state.run_id.to_string(),
            pipeline: pipeline.name.clone(),
            status,
            error: error.clone(),
            tokens,
            cost_usd: spent.cost_usd,
        });
        let _ =
            ctx.apply_unlogged(&flujo_core::PatchOp::set(vec!["status".into()], Value::String(status.as_str().into())));
        let mut result = RunResult::new(state.run_id.to_string(), pipeline.name.clone(), status);
        result.output = output;
        result.error = error;
        result.pending = pending;
        result.step_history = history;
        result.total_cost_usd = spent.cost_usd;
        result.total_tokens = spent.tokens;
        result.context = ctx.to_json();
        Ok(result)
    }

    /// The result of a finished run rebuilt from the store (top-level records, no execution).
    async fn stored_result(&self, run: &RunRecord) -> Result<RunResult, FlujoError> {
        let inner = &*self.inner;
        let store = inner.store.as_ref().ok_or(FlujoError::NoStore)?;
        let records = store.load_journal(&run.run_id).await?;
        // A finished run is only reported as what its journal proves (see `lens verify`).
        if let Some(broken) =
            flujo_core::verify_chain(&records).err().or_else(|| crate::client::check_run_row(run, &records))
        {
            return Err(FlujoError::NotResumable {
                run_id: run.run_id.clone(),
                reason: format!("its stored state does not match its journal ({broken}); see `flujo lens verify`"),
            });
        }
        Ok(crate::client::stored_result(run, &records))
    }

    /// A [`TaskClient`](crate::TaskClient) over this runner's store and configuration: resume and replay of any
    /// stored run use the same skills, models, policies and governance as this runner.
    pub fn client(&self) -> Result<crate::TaskClient, FlujoError> {
        self.inner.template.clone().client()
    }

    /// A blocking facade that owns its own runtime.
    pub fn blocking(&self) -> Result<BlockingFlujo, FlujoError> {
        BlockingFlujo::new(self.clone())
    }
}

/// True when the current thread is running an async task (or a `block_on`) of a Tokio runtime: blocking here
/// would stall the runtime, and Tokio panics on a nested `block_on` or on dropping a runtime. Inside
/// `spawn_blocking`, and outside any runtime, it is false.
///
/// Tokio has no public API for this; the probe asks the current runtime to `block_on` an empty future, which
/// Tokio refuses (with a panic, caught here and kept quiet) exactly in that case.
pub(crate) fn in_async_context() -> bool {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return false };
    quiet_probe_panics();
    QUIET_PROBE.with(|q| q.set(true));
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.block_on(async {}))).is_err();
    QUIET_PROBE.with(|q| q.set(false));
    refused
}

thread_local! {
    static QUIET_PROBE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent for the probe's own panic on this thread and passes every
/// other panic to the hook that was there before.
fn quiet_probe_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PROBE.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Blocking API for scripts and synchronous code (SPEC §2): it owns a runtime. It works outside any runtime
/// and inside `tokio::task::spawn_blocking`; called on an async task it returns
/// [`FlujoError::BlockingInsideRuntime`] instead of stalling or panicking, and dropping it there does not
/// panic either.
pub struct BlockingFlujo {
    flujo: Flujo,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for BlockingFlujo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingFlujo").field("pipeline", &self.flujo.pipeline().name).finish_non_exhaustive()
    }
}

impl Drop for BlockingFlujo {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Dropping a runtime blocks until its threads stop, which Tokio forbids on an async task.
            if in_async_context() {
                rt.shutdown_background();
            }
        }
    }
}

impl BlockingFlujo {
    /// A blocking facade over `flujo`, with a runtime of its own (one worker thread, so that a run started with
    /// [`BlockingFlujo::start`] goes on while the caller reads its events).
    pub fn new(flujo: Flujo) -> Result<Self, FlujoError> {
        if in_async_context() {
            return Err(FlujoError::BlockingInsideRuntime);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flujo-blocking")
            .enable_all()
            .build()
            .map_err(|e| FlujoError::Runtime(format!("cannot start a runtime: {e}")))?;
        Ok(BlockingFlujo { flujo, rt: Some(rt) })
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, FlujoError> {
        if in_async_context() {
            return Err(FlujoError::BlockingInsideRuntime);
        }
        self.rt.as_ref().ok_or_else(|| FlujoError::Runtime("the blocking runtime is gone".into()))
    }

    /// Starts a run and returns at once: iterate [`events`](BlockingRunHandle::events) while it runs, then
    /// [`wait`](BlockingRunHandle::wait) for the result.
    pub fn start(&self, input: Value) -> Result<BlockingRunHandle, FlujoError> {
        self.start_with(RunOptions::new(input))
    }

    /// [`BlockingFlujo::start`] with options.
    pub fn start_with(&self, mut opts: RunOptions) -> Result<BlockingRunHandle, FlujoError> {
        let run_id = opts.run_id.get_or_insert_with(|| self.flujo.inner.ids.new_run_id()).clone();
        self.spawn_handle(run_id, move |f| f.start_with(opts))
    }

    /// [`Flujo::start_resume`], for blocking code.
    pub fn start_resume(&self, run_id: &str, req: ResumeRequest) -> Result<BlockingRunHandle, FlujoError> {
        let id = run_id.to_owned();
        self.spawn_handle(run_id.to_owned(), move |f| f.start_resume(&id, req))
    }

    fn spawn_handle(
        &self,
        run_id: String,
        start: impl FnOnce(&Flujo) -> RunHandle + Send + 'static,
    ) -> Result<BlockingRunHandle, FlujoError> {
        let rt = self.runtime()?;
        let (event_tx, events) = std::sync::mpsc::channel();
        let (result_tx, result) = std::sync::mpsc::sync_channel(1);
        let flujo = self.flujo.clone();
        rt.spawn(async move {
            let mut handle = start(&flujo);
            while let Some(event) = handle.next_event().await {
                let _ = event_tx.send(event);
            }
            let _ = result_tx.send(handle.await);
        });
        Ok(BlockingRunHandle { run_id, events, result })
    }

    /// [`Flujo::run`], blocking.
    pub fn run(&self, input: Value) -> Result<RunResult, FlujoError> {
        self.runtime()?.block_on(self.flujo.run(input))
    }

    /// [`Flujo::run_with`], blocking.
    pub fn run_with(&self, opts: RunOptions) -> Result<RunResult, FlujoError> {
        self.runtime()?.block_on(self.flujo.run_with(opts))
    }

    /// [`Flujo::resume`], blocking.
    pub fn resume(&self, run_id: &str, answer: Value) -> Result<RunResult, FlujoError> {
        self.runtime()?.block_on(self.flujo.resume(run_id, answer))
    }

    /// [`Flujo::resume_with`], blocking.
    pub fn resume_with(&self, run_id: &str, req: ResumeRequest) -> Result<RunResult, FlujoError> {
        self.runtime()?.block_on(self.flujo.resume_with(run_id, req))
    }
}

/// A run started by [`BlockingFlujo::start`]: its events as an iterator, then its result.
pub struct BlockingRunHandle {
    run_id: String,
    events: std::sync::mpsc::Receiver<RunEvent>,
    result: std::sync::mpsc::Receiver<Result<RunResult, FlujoError>>,
}

impl std::fmt::Debug for BlockingRunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingRunHandle").field("run_id", &self.run_id).finish_non_exhaustive()
    }
}

impl BlockingRunHandle {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's events as they happen; the iterator ends when the run ends.
    pub fn events(&self) -> impl Iterator<Item = RunEvent> + '_ {
        self.events.iter()
    }

    /// Waits for the run's result (events not read are dropped).
    pub fn wait(self) -> Result<RunResult, FlujoError> {
        self.result
            .recv()
            .map_err(|_| FlujoError::Runtime("the blocking runtime stopped (a panic inside the run?)".into()))?
    }
}

impl Flujo {
    /// Runs to completion on a private runtime (see [`BlockingFlujo`]).
    pub fn run_blocking(&self, input: Value) -> Result<RunResult, FlujoError> {
        BlockingFlujo::new(self.clone())?.run(input)
    }
}
