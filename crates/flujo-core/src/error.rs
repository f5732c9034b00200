//! Errors. Control flow (pause, abort, infinite fallback/redirect, usage limit, pricing) is a distinct
//! [`Interrupt`] that propagates to the caller; it is never a step failure, never swallowed, never matched
//! by string. Step failures are ordinary [`crate::StepResult`]s with status `failed`.

use thiserror::Error;

use crate::result::PendingPause;

/// Errors from a state store.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum StoreError {
    #[error("run '{0}' not found")]
    RunNotFound(String),
    #[error("run '{0}' already exists")]
    RunExists(String),
    #[error("run '{run_id}' is {actual}, expected {expected}")]
    Conflict { run_id: String, expected: String, actual: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
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
    #[error("aborted at {path}: {reason}")]
    Aborted { path: String, reason: String },
    #[error("infinite fallback at {path}: chain {}", chain.join(" -> "))]
    InfiniteFallback { path: String, chain: Vec<String> },
    #[error("infinite redirect at {path}: {message}")]
    InfiniteRedirect { path: String, message: String },
    #[error("usage limit exceeded at {path}: {message}")]
    UsageLimitExceeded { path: String, message: String },
    #[error("pricing not configured for {provider}:{model}")]
    PricingNotConfigured { provider: String, model: String },
    /// A model the run can reach cannot be called: its provider needs an API key and none is configured.
    /// Found before the first step runs (like `PricingNotConfigured`).
    #[error("{message}")]
    MissingApiKey { model: String, message: String },
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
            Interrupt::Store(_) => "store_error",
        }
    }
}

/// Errors of the run API (`run`, `resume`, building a runner).
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum FlujoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("configuration error: {0}")]
    Config(String),
    /// A skill, model or custom kind could not be resolved when building the runner.
    #[error("resolution error at step '{step}': {message}")]
    Resolution { step: String, message: String },
    #[error("run '{0}' not found")]
    RunNotFound(String),
    #[error("run '{run_id}' cannot be resumed: {reason}")]
    NotResumable { run_id: String, reason: String },
    #[error("invalid resume input for pause '{pause_id}': {message}")]
    InvalidResumeInput { pause_id: String, message: String },
    #[error("the pipeline differs from the one run '{run_id}' was started with (stored hash {stored}, given {given})")]
    PipelineMismatch { run_id: String, stored: String, given: String },
    #[error("resume needs a state store; this runner has none")]
    NoStore,
    #[error("runtime error: {0}")]
    Runtime(String),
    /// A run id chosen by the caller is unusable (empty, too long, control characters; see [`crate::ids`]).
    #[error("invalid run id '{shown}': {reason}")]
    InvalidRunId { shown: String, reason: String },
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
            FlujoError::Runtime(_) => "runtime_error",
            FlujoError::InvalidRunId { .. } => "invalid_run_id",
            FlujoError::ContextValidation(_) => "context_validation",
        }
    }
}
