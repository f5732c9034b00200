//! # Flujo
//!
//! A durable, type-safe workflow engine for AI agents. Declare a pipeline of steps — skills, model agents,
//! human approvals, loops, branches, parallel work, state machines — in Rust or in YAML, and Flujo runs it
//! with retries, budgets, cost tracking, a journal of every finished step (so a crashed or paused run resumes
//! where it stopped and never repeats a finished step), replay, and a tamper-evident hash chain.
//!
//! This crate is the one to depend on: `use flujo::prelude::*;` brings what a program needs.
//! [`guide`] has a runnable example for every step kind.
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::new("demo", vec![
//!     Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"})),
//!     Step::loop_("double", [Step::skill("x2", "flujo.builtins.transform", json!({"expr": "previous_step * 2"}))])
//!         .max_loops(10)
//!         .exit_when("previous_step >= 20")
//!         .into(),
//!     Step::hitl("approve", "Ship {{ previous_step }}?", None).with_sink_to("decision"),
//! ]);
//! let dir = tempfile::tempdir()?;
//! let store = open_store(&format!("sqlite:///{}", dir.path().join("state.db").display()))?;
//! let flujo = Flujo::builder(pipeline).store(store).build()?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! let paused = runtime.block_on(flujo.run(json!(1)))?;
//! assert_eq!(paused.status, RunStatus::Paused);
//! let done = runtime.block_on(flujo.resume(&paused.run_id, json!("yes")))?;
//! assert_eq!(done.status, RunStatus::Completed);
//! assert_eq!(done.context["decision"], json!("yes"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Runs, handles and clients
//!
//! `flujo.run(input).await` runs to the end (completed, paused or failed); `flujo.start(input)` returns a
//! [`RunHandle`](prelude::RunHandle) at once — read its events (`next_event`, or as a `Stream`), then await it
//! for the result; `start_resume` does the same for a resume. [`BlockingFlujo`](prelude::BlockingFlujo)
//! (`flujo.blocking()?`) is the same API for synchronous code, with an iterator of events.
//! [`TaskClient`](prelude::TaskClient) (`flujo.client()?`) lists, inspects, resumes, replays and verifies
//! stored runs with the runner's skills and policies.
//!
//! ## Step kinds
//!
//! Every kind has a constructor on [`Step`](prelude::Step); the composite ones return a builder that becomes a
//! step with `.into()` (or `.build()`):
//!
//! | kind | constructor |
//! |---|---|
//! | a skill / a model agent / passthrough | `Step::skill(name, id, params)`, `Step::model(name, "provider:model", settings)`, `Step::passthrough(name)` |
//! | human approval | `Step::hitl(name, message, input_schema)` |
//! | loop | `Step::loop_(name, body).max_loops(n).exit_when("expr")` |
//! | map | `Step::map(name, body).over("context.items").concurrency(4)` |
//! | conditional | `Step::conditional(name).when("expr").branch("true", steps).otherwise(steps)` |
//! | parallel | `Step::parallel(name).branch("a", steps).merge(MergeStrategy::NoMerge).reduce(ReduceMode::Values)` |
//! | dynamic router | `Step::router(name, agent).branch("a", steps)` |
//! | cache | `Step::cache(name, step).ttl_s(60.0)` |
//! | state machine | `Step::state_machine(name, "start").state("start", steps).end_state("done").transition(…)` |
//! | agentic loop | `Step::agentic_loop(name, planner).tool("skill.id").max_turns(8)` |
//! | tree search | `Step::tree_search(name, proposer, evaluator).beam_width(3)` |
//! | a kind of your own | `Step::custom(name, "kind", spec).child("body", steps)`, run by a [`StepPolicy`](prelude::StepPolicy) registered with `.policy("kind", …)`; the policy runs its children with [`ExecutionFrame::run_child`](prelude::ExecutionFrame::run_child), journaled at their own paths so a resumed run replays them |
//!
//! A pipeline built here and the same pipeline loaded from YAML (feature `yaml`, [`blueprint::load_file`])
//! are equal values.
//!
//! ## Skills
//!
//! Built-in skills are under `flujo.builtins.*` (`transform`, `render_template`, `context_set`, …). Register
//! your own on [`Skills`](prelude::Skills) (closures with `register_fn(id, SideEffects::No, f)`, or types
//! that implement [`Skill`](prelude::Skill)) and give them to the builder with `.skills(Arc::new(skills))`.
//!
//! ## Features
//!
//! * `sqlite` (default): the SQLite state store (`sqlite://` URIs of [`open_store`](prelude::open_store)).
//! * `postgres`: the Postgres state store (`postgres://` URIs): many processes and machines share one database.
//! * `yaml` (default): YAML blueprints ([`blueprint`]), with the validator and its diagnostics.
//! * `llm`: model agents (OpenAI, Anthropic, compatible servers, `mock:` models) — the `llm` module.

#![deny(missing_docs)]

pub use flujo_core as core;
pub use flujo_engine as engine;
pub use flujo_skills as skills;
pub use flujo_store as store;

pub mod guide;

/// YAML blueprints: loading, validation, diagnostics (feature `yaml`).
#[cfg(feature = "yaml")]
pub use flujo_blueprint as blueprint;

/// Model agents and providers (feature `llm`).
#[cfg(feature = "llm")]
pub use flujo_llm as llm;

/// What a program needs, in one import: `use flujo::prelude::*;`.
pub mod prelude {
    pub use async_trait::async_trait;
    pub use serde_json::{json, Map, Value};

    pub use flujo_core::{
        AgentRef, AgenticLoopBuilder, Branch, CacheBuilder, ConditionalBuilder, CustomBuilder, FlujoError, Interrupt,
        LoopBuilder, MapBuilder, MergeStrategy, OnBranchFailure, OnMaxLoops, ParallelBuilder, PendingPause, Pipeline,
        ReduceMode, RouterBuilder, RunEvent, RunFilter, RunResult, RunStatus, Skill, SkillCall, SkillError, SkillInfo,
        SkillOutput, SkillRegistry, StateMachineBuilder, Step, StepResult, StepStatus, Store, TokenUsage, TransitionOn,
        TreeSearchBuilder, UsageLimits,
    };
    // The store traits (their methods: `load_journal`, `get_run`, `list_runs`, …) and the journal's types.
    pub use flujo_core::{verify_chain, HashScheme, JournalRecord, JournalStore, RunRecord, RunStore};
    // Governance (SPEC §11): policies asked before every model, skill and tool call.
    pub use flujo_core::{CallKind, GovernanceDecision, GovernancePolicy, GovernanceRequest};
    pub use flujo_engine::{
        BlockingFlujo, BlockingRunHandle, ExecutionFrame, Flujo, FlujoRuntimeBuilder, PolicyOutcome, ResumeRequest,
        RunHandle, RunOptions, SeqOutcome, StepPolicy, TaskClient,
    };
    pub use flujo_skills::{BuiltinRegistry, SideEffects, Skills};
    pub use flujo_store::{open_store, MemoryStore};

    #[cfg(feature = "postgres")]
    pub use flujo_store::PostgresStore;
    #[cfg(feature = "sqlite")]
    pub use flujo_store::SqliteStore;
}
