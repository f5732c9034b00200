//! Flujo core: the domain types, traits and errors every other Flujo crate shares.
//!
//! Architecture invariant: this crate knows nothing about tokio, SQL, HTTP or YAML. It defines *what* a
//! pipeline, a step, a run, a journal record and a store are; the engine, stores and loaders implement them.
//!
//! ```
//! use flujo_core::{Pipeline, Step};
//! use serde_json::json;
//! let p = Pipeline::new("demo", vec![
//!     Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"})),
//! ]);
//! assert_eq!(p.steps[0].kind.name(), "step");
//! ```

#![deny(missing_docs)]

pub mod build;
pub mod context;
pub mod error;
pub mod ids;
pub mod journal;
pub mod limits;
pub mod memory;
pub mod patch;
pub mod redact;
pub mod result;
pub mod runtime;
pub mod sandbox;
pub mod skill;
pub mod step;
pub mod store;
pub mod suggest;

pub use build::{
    AgenticLoopBuilder, CacheBuilder, ConditionalBuilder, CustomBuilder, LoopBuilder, MapBuilder, ParallelBuilder,
    RouterBuilder, StateMachineBuilder, TreeSearchBuilder, DEFAULT_MAX_LOOPS,
};
pub use context::{Context, ContextError, ContextSnapshot};
pub use error::{FlujoError, Interrupt, StoreError};
pub use ids::{check_run_id, shorten_for_display, MAX_RUN_ID_CHARS};
pub use journal::{verify_chain, ChainError, HashScheme, JournalRecord};
pub use memory::{
    chunk_text, cosine, Embedder, Embeddings, MemoryDelete, MemoryIndex, MemoryRecord, MemorySettings, ScoredMemory,
    VectorQuery, VectorStore,
};
pub use patch::PatchOp;
pub use redact::{is_secret_key, needs_redaction, redact, redact_at, REDACTED};
pub use result::{PendingPause, RunError, RunResult, RunStatus, StepResult, StepStatus, TokenUsage};
pub use runtime::{
    CallKind, Clock, GovernanceDecision, GovernancePolicy, GovernanceRequest, IdGen, Quota, QuotaManager, RunEvent,
    SystemClock, Telemetry, Usage,
};
pub use sandbox::{
    ExecRequest, ExecResult, Limits, Protection, ProtectionStatus, Sandbox, SandboxError, SandboxFile, SandboxOff,
};
pub use serde_json::{Map, Value};
pub use skill::{
    Delta, DeltaSink, ModelRegistry, ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, SkillRegistry,
};
pub use step::*;
pub use store::{
    BlobStore, ChainHead, ClaimRequest, Definition, EvaluationFilter, EvaluationRecord, EvaluationStatus,
    EvaluationStore, JournalStore, OriginFile, OriginRole, RateLimit, RunFilter, RunOrigin, RunOwner, RunRecord,
    RunStore, RunUpdate, Store, SystemStateStore,
};

/// The JSON type of a value, for messages: `null`, `a boolean`, `a number`, `a string`, `an array`,
/// `an object`.
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
