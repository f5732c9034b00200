//! Errors. Control flow (pause, abort, infinite fallback/redirect, usage limit, pricing) is a distinct
//! [`Interrupt`] that propagates to the caller; it is never a step failure, never swallowed, never matched
//! by string. Step failures are ordinary [`crate::StepResult`]s with status `failed`.

use thiserror::Error;

use crate::result::PendingPause;

/// Errors from a state store.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum StoreError {
    /// No run with this id is in the store, for an operation that needs one (an update, a heartbeat, an
    /// append).
    #[error("run '{0}' not found")]
    RunNotFound(String),
    /// `create_run` was given a run id the store already holds.
    #[error("run '{0}' already exists")]
    RunExists(String),
    /// A compare-and-set did not apply: the stored run is not as the writer expected (its status, its owner
    /// or its next journal `seq`). The writer has lost a race (another process resumed or took over the run)
    /// and must stop writing to it.
    #[error("run '{run_id}' is {actual}, expected {expected}")]
    Conflict {
        /// The run the write was for.
        run_id: String,
        /// What the write required, as text: a status (`running`, or several joined by ` or `), `owner ID`,
        /// or `next journal seq N`.
        expected: String,
        /// What was found instead, as text: the stored status (`completed`), `owner ID` (`owner none`), or
        /// the seq being appended (`appending seq N`).
        actual: String,
    },
    /// The backend cannot do the operation: it cannot be opened or reached, its worker thread has stopped,
    /// a value cannot be serialized, or the database refused the work. The message says which.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back (a missing blob, a malformed row or column, an unknown status);
    /// the message names the row and the column.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
}

/// A typed interruption of normal step flow. Propagates up through every policy to the run.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum Interrupt {
    /// One or more hitl steps are waiting for answers.
    #[error("paused: awaiting human input at {}", .0.iter().map(|p| p.pause_id.as_str()).collect::<Vec<_>>().join(", "))]
    Paused(Vec<PendingPause>),
    /// The run was stopped at `path` for `reason`. The engine raises it in a verify-only replay
    /// (`Flujo::replay`) that finds a step without a journal record, or a recomputed composite that differs from
    /// its record.
    #[error("aborted at {path}: {reason}")]
    Aborted {
        /// The path of the step execution where the run stopped.
        path: String,
        /// Why the run stopped.
        reason: String,
    },
    /// A fallback chain comes back to a step already in it, or grows past the engine's bound (16 steps).
    /// The failed execution is journaled, then the run stops.
    #[error("infinite fallback at {path}: chain {}", chain.join(" -> "))]
    InfiniteFallback {
        /// The path of the step whose fallback would continue the chain.
        path: String,
        /// The step names of the chain in order, ending with the fallback that repeats a name (or is one too
        /// many).
        chain: Vec<String>,
    },
    /// A state machine made more than its `max_hops` hops without finishing.
    #[error("infinite redirect at {path}: {message}")]
    InfiniteRedirect {
        /// The path of the state machine step.
        path: String,
        /// What went past its bound (names the step and its `max_hops`).
        message: String,
    },
    /// A budget is used up: a call's reservation does not fit the run's quota, the run's spending passed a
    /// limit, or a step passed its own `usage_limits`. The run ends `failed` and keeps its partial result.
    #[error("usage limit exceeded at {path}: {message}")]
    UsageLimitExceeded {
        /// The path of the step execution that hit the limit.
        path: String,
        /// Which limit, and the spending that went past it.
        message: String,
    },
    /// Strict pricing is on and a model the run calls has no price, so its cost cannot be reserved
    /// (SPEC §8). Found before the call is made; never a step failure.
    #[error("pricing not configured for {provider}:{model}")]
    PricingNotConfigured {
        /// The model's provider (`openai`, `anthropic`, …).
        provider: String,
        /// The model's name at that provider.
        model: String,
    },
    /// A model the run can reach cannot be called: its provider needs an API key and none is configured.
    /// Found before the first step runs (like `PricingNotConfigured`).
    #[error("{message}")]
    MissingApiKey {
        /// The model (`provider:model`).
        model: String,
        /// The whole message: the model and the setting or environment variable the key is read from.
        message: String,
    },
    /// A governance policy denied a call (SPEC §11): the call was not made and the run stops — no retry, no
    /// fallback.
    #[error("governance policy '{policy}' denied the call of '{target}' at {path}: {reason}")]
    GovernanceDenied {
        /// The path of the step execution that would have made the call.
        path: String,
        /// The policy that denied it.
        policy: String,
        /// The skill, tool or model that was not called.
        target: String,
        /// The policy's reason.
        reason: String,
    },
    /// The store failed while committing: the run stops; resume continues from the last committed record.
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
}

impl Interrupt {
    /// Stable machine-readable kind (the `error.kind` of `--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Interrupt::Paused(_) => "paused",
            Interrupt::Aborted { .. } => "aborted",
            Interrupt::InfiniteFallback { .. } => "infinite_fallback",
            Interrupt::InfiniteRedirect { .. } => "infinite_redirect",
            Interrupt::UsageLimitExceeded { .. } => "usage_limit_exceeded",
            Interrupt::PricingNotConfigured { .. } => "pricing_not_configured",
            Interrupt::MissingApiKey { .. } => "missing_api_key",
            Interrupt::GovernanceDenied { .. } => "governance_denied",
            Interrupt::Store(_) => "store_error",
        }
    }
}

/// Errors of the run API (`run`, `resume`, building a runner).
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum FlujoError {
    /// A state store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration is unusable. Building a runner reports it for an invalid JSON Schema, a model
    /// whose provider is unknown, or a pipeline name that is too long or holds control characters.
    #[error("configuration error: {0}")]
    Config(String),
    /// A skill, model or custom kind could not be resolved when building the runner.
    #[error("resolution error at step '{step}': {message}")]
    Resolution {
        /// The name of the step whose skill, model or kind could not be resolved.
        step: String,
        /// What could not be resolved, and why.
        message: String,
    },
    /// No run with this id is in the store.
    #[error("run '{0}' not found")]
    RunNotFound(String),
    /// The run exists but cannot be resumed now: it was cancelled, it is paused and no answer was given,
    /// it is still running in a live process, another process took it over first, it is complete and a
    /// different answer was given, or its journal does not prove its stored result.
    #[error("run '{run_id}' cannot be resumed: {reason}")]
    NotResumable {
        /// The run that was to be resumed.
        run_id: String,
        /// Why it cannot be resumed.
        reason: String,
    },
    /// The answer given to a paused run is refused: no pending pause has the given id, several pauses are
    /// pending and none was named, or the answer does not satisfy the pause's `input_schema`.
    #[error("invalid resume input for pause '{pause_id}': {message}")]
    InvalidResumeInput {
        /// The pause the answer was for; empty when none was named.
        pause_id: String,
        /// Why the answer was refused (the schema violations, or the pending pause ids).
        message: String,
    },
    /// `resume` was given a pipeline whose definition differs from the one the run was started with.
    #[error("the pipeline differs from the one run '{run_id}' was started with (stored hash {stored}, given {given})")]
    PipelineMismatch {
        /// The run that was to be resumed.
        run_id: String,
        /// The definition hash stored with the run ([`crate::step::Pipeline::definition_hash`]).
        stored: String,
        /// The definition hash of the pipeline the runner was built with.
        given: String,
    },
    /// The call needs a state store (`resume`, reading a stored run) and the runner was built without one.
    #[error("resume needs a state store; this runner has none")]
    NoStore,
    /// A blocking call (`run_blocking`, or a method of `BlockingFlujo`) was made on an async task, inside a
    /// Tokio runtime, where blocking would stall the runtime (SPEC §2). Inside `tokio::task::spawn_blocking`
    /// the blocking calls work.
    #[error("a blocking Flujo call was made from an async task; use the async API there (`run(..).await`), or make the call inside `tokio::task::spawn_blocking`")]
    BlockingInsideRuntime,
    /// The async runtime failed: the run's task stopped (a panic), or the blocking facade could not start
    /// its runtime or lost it.
    #[error("runtime error: {0}")]
    Runtime(String),
    /// A run id chosen by the caller is unusable (empty, too long, control characters; see [`crate::ids`]).
    #[error("invalid run id '{shown}': {reason}")]
    InvalidRunId {
        /// The id as given, shortened to 40 characters with control characters escaped (for messages).
        shown: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The initial context of a run is refused before any step runs: it sets a framework field, or it
    /// violates the pipeline's `context_schema`.
    #[error("context validation failed: {0}")]
    ContextValidation(String),
}

impl FlujoError {
    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            FlujoError::Store(_) => "store_error",
            FlujoError::Config(_) => "config_error",
            FlujoError::Resolution { .. } => "resolution_error",
            FlujoError::RunNotFound(_) => "run_not_found",
            FlujoError::NotResumable { .. } => "not_resumable",
            FlujoError::InvalidResumeInput { .. } => "invalid_resume_input",
            FlujoError::PipelineMismatch { .. } => "pipeline_mismatch",
            FlujoError::NoStore => "no_store",
            FlujoError::BlockingInsideRuntime => "blocking_inside_runtime",
            FlujoError::Runtime(_) => "runtime_error",
            FlujoError::InvalidRunId { .. } => "invalid_run_id",
            FlujoError::ContextValidation(_) => "context_validation",
        }
    }
}
