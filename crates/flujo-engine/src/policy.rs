//! Step policies and the dispatcher: the code that executes one step kind, looked up by kind name.
//!
//! Every policy receives exactly one argument, the [`ExecutionFrame`]. Users register policies for their own
//! kinds (`StepKind::Custom`) with [`ExecutionDispatcher::register`]; built-in kinds can be overridden the same way.

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{Branch, Context, Interrupt, Map, PatchOp, Step, StepStatus, TokenUsage, Value};

use crate::executor::{ExecutorCore, Lexical, RunState};

/// Everything one step execution needs. The only argument of [`StepPolicy::execute`].
pub struct ExecutionFrame<'a> {
    /// The step being executed; its kind holds the spec the policy reads.
    pub step: &'a Step,
    /// The rendered input of this step.
    pub input: Value,
    /// The context this step reads and writes (already isolated where the parent required it).
    pub ctx: &'a mut Context,
    /// The path of this execution, e.g. `2/loop:3/0`.
    pub path: &'a str,
    /// Lexical scope: map item (`this`), context schema, sibling steps.
    pub lex: &'a Lexical<'a>,
    /// The run: journal, replay index, answers, quota, events.
    pub run: &'a RunState,
    /// The executor, to run child steps and sequences.
    pub core: &'a ExecutorCore,
}

impl ExecutionFrame<'_> {
    /// The names of this step's child sequences (a custom kind's `children`), in declaration order.
    pub fn child_names(&self) -> Vec<&str> {
        match &self.step.kind {
            flujo_core::StepKind::Custom { children, .. } => {
                children.iter().map(|Branch { name: n, .. }| n.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Runs this custom step's child sequence `name` with `input`: its steps run in order (each gets the previous
    /// output), with this step's context, and are journaled at `PATH/NAME:KEY/0`, `…/1`, … like the bodies of the
    /// built-in composites. `key` tells runs of the same child apart (an attempt number, an item index): on a
    /// resumed run, the same key replays what was journaled instead of running it again — so a policy that
    /// derives its keys from its own progress (`0`, `1`, …) resumes exactly where it stopped.
    ///
    /// A pause or a stop inside the child comes back as `Err(Interrupt)`: return it with `?`. A failed child
    /// step is `Ok` with a failed [`SeqOutcome`](crate::SeqOutcome). An unknown `name`, or a `key` containing `/`, is a failed
    /// outcome naming the problem.
    pub async fn run_child(
        &mut self,
        name: &str,
        key: impl std::fmt::Display,
        input: Value,
    ) -> Result<crate::SeqOutcome, Interrupt> {
        let key = key.to_string();
        let failed = |feedback: String| crate::SeqOutcome {
            status: StepStatus::Failed,
            output: Value::Null,
            feedback: Some(feedback),
            tokens: TokenUsage::default(),
            cost_usd: 0.0,
            last_step: None,
        };
        if key.is_empty() || key.contains('/') || key.chars().any(char::is_control) {
            return Ok(failed(format!(
                "child key '{key}' of step '{}' must be non-empty, without `/`",
                self.step.name
            )));
        }
        let flujo_core::StepKind::Custom { children, .. } = &self.step.kind else {
            return Ok(failed(format!("step '{}' is not a custom kind with children", self.step.name)));
        };
        let Some(Branch { steps, .. }) = children.iter().find(|Branch { name: n, .. }| n == name) else {
            let known: Vec<&str> = children.iter().map(|Branch { name: n, .. }| n.as_str()).collect();
            return Ok(failed(format!(
                "step '{}' has no child sequence '{name}' (it has: {})",
                self.step.name,
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            )));
        };
        let base = crate::executor::child_path(self.path, format_args!("{name}:{key}"));
        self.core.run_sequence(steps, input, self.ctx, &base, self.lex, self.run, None).await
    }
}

/// What a policy produced. The executor applies `context_ops`, `updates_context` and `sink_to` (validated
/// against the context schema), journals the record and emits events.
#[derive(Debug, Clone)]
pub struct PolicyOutcome {
    /// Whether the step completed or failed.
    pub status: StepStatus,
    /// The step's output: the next step's input and the step's entry in `steps` of the context. A failed step
    /// may carry one too (for example the output of the child that failed).
    pub output: Value,
    /// Why the step failed; it becomes the `feedback` of the step's record and result. `None` from
    /// [`PolicyOutcome::success`].
    pub feedback: Option<String>,
    /// How many attempts the step made (1 unless the policy retried).
    pub attempts: u32,
    /// Tokens this execution used, those of its child steps included.
    pub tokens: TokenUsage,
    /// What this execution cost, in USD, its child steps included.
    pub cost_usd: f64,
    /// Facts about the execution, kept in the step's record and result (e.g. `cache_hit`, `iterations`,
    /// `branch_key`).
    pub metadata: Map<String, Value>,
    /// Context writes requested by the step itself (e.g. by a skill or a hitl answer).
    pub context_ops: Vec<PatchOp>,
}

impl PolicyOutcome {
    /// A completed outcome of `output`: one attempt, no feedback, no usage, no metadata and no context writes.
    pub fn success(output: Value) -> Self {
        PolicyOutcome {
            status: StepStatus::Completed,
            output,
            feedback: None,
            attempts: 1,
            tokens: TokenUsage::default(),
            cost_usd: 0.0,
            metadata: Map::new(),
            context_ops: Vec::new(),
        }
    }

    /// A failed outcome of `output` with the failure message `feedback`; otherwise like
    /// [`PolicyOutcome::success`].
    pub fn failure(output: Value, feedback: impl Into<String>) -> Self {
        PolicyOutcome { status: StepStatus::Failed, feedback: Some(feedback.into()), ..PolicyOutcome::success(output) }
    }

    /// Sets metadata `key` to `value` (replacing an earlier value) and returns the outcome.
    pub fn with_meta(mut self, key: &str, value: Value) -> Self {
        self.metadata.insert(key.to_owned(), value);
        self
    }
}

/// Executes one step kind.
#[async_trait]
pub trait StepPolicy: Send + Sync {
    /// Executes the step of `frame` (all its attempts) and returns what it produced. A step failure is `Ok`
    /// with a failed outcome. `Err` is an [`Interrupt`] that stops the walk (a pause, a budget stop, a store
    /// error, …); one that comes back from a child execution must be returned as it is.
    async fn execute(&self, frame: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt>;
}

/// Maps kind names to policies.
#[derive(Clone, Default)]
pub struct ExecutionDispatcher {
    policies: foldhash::HashMap<String, Arc<dyn StepPolicy>>,
}

impl ExecutionDispatcher {
    /// A dispatcher with the built-in policy of every step kind.
    pub fn with_builtins() -> Self {
        use crate::policies::*;
        let mut d = ExecutionDispatcher::default();
        d.register("step", Arc::new(AgentStepPolicy));
        d.register("loop", Arc::new(LoopPolicy));
        d.register("map", Arc::new(MapPolicy));
        d.register("conditional", Arc::new(ConditionalPolicy));
        d.register("parallel", Arc::new(ParallelPolicy));
        d.register("dynamic_router", Arc::new(RouterPolicy));
        d.register("hitl", Arc::new(HitlPolicy));
        d.register("cache", Arc::new(CachePolicy));
        d.register("import", Arc::new(ImportPolicy));
        d.register("state_machine", Arc::new(StateMachinePolicy));
        d.register("agentic_loop", Arc::new(AgenticLoopPolicy));
        d.register("tree_search", Arc::new(TreeSearchPolicy));
        d
    }

    /// Registers (or replaces) the policy of `kind`.
    pub fn register(&mut self, kind: impl Into<String>, policy: Arc<dyn StepPolicy>) {
        self.policies.insert(kind.into(), policy);
    }

    /// The policy registered for the step kind named `kind`, or `None`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn StepPolicy>> {
        self.policies.get(kind)
    }

    /// The names of the kinds that have a policy, in no particular order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }
}
