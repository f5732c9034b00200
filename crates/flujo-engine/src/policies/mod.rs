//! The built-in policy of every step kind (SPEC §3).

mod agent;
mod agentic;
mod branching;
mod hitl;
mod looping;
mod nesting;
mod tree_search;

pub use agent::AgentStepPolicy;
pub use agentic::AgenticLoopPolicy;
pub use branching::{ConditionalPolicy, ParallelPolicy, RouterPolicy};
pub use hitl::HitlPolicy;
pub use looping::{LoopPolicy, MapPolicy};
pub use nesting::{CachePolicy, ImportPolicy, StateMachinePolicy};
pub use tree_search::TreeSearchPolicy;
