//! Builders for the composite step kinds: pipelines written as ordinary Rust, with the defaults a blueprint
//! gets (a pipeline built here and the same pipeline loaded from YAML compare equal).
//!
//! ```
//! use flujo_core::{AgentRef, MergeStrategy, Pipeline, ReduceMode, Step};
//! use serde_json::json;
//!
//! let add = |n: i64| Step::skill(format!("add_{n}"), "flujo.builtins.transform", json!({"expr": format!("previous_step + {n}")}));
//! let pipeline = Pipeline::new("demo", vec![
//!     Step::loop_("count", [add(1)]).max_loops(10).exit_when("previous_step >= 3").into(),
//!     Step::parallel("fan_out")
//!         .branch("a", [add(10)])
//!         .branch("b", [add(20)])
//!         .merge(MergeStrategy::NoMerge)
//!         .reduce(ReduceMode::Values)
//!         .into(),
//!     Step::conditional("pick")
//!         .when("previous_step | length == 2")
//!         .branch("true", [Step::passthrough("yes")])
//!         .otherwise([Step::passthrough("no")])
//!         .into(),
//! ]);
//! assert_eq!(pipeline.steps.len(), 3);
//! ```
//!
//! Each builder turns into a [`Step`] with `.into()` or [`build`](LoopBuilder::build); the common fields
//! (`with_retries`, `with_sink_to`, `with_input`, …) are [`Step`] methods, chained after that.

use serde_json::Value;

use crate::step::{
    AgentRef, AgenticLoopSpec, Branch, CacheSpec, ConditionalSpec, LoopSpec, MapSpec, MergeStrategy, OnBranchFailure,
    OnMaxLoops, ParallelSpec, ReduceMode, RouterSpec, StateMachineSpec, Step, StepKind, Transition, TransitionOn,
    TreeSearchSpec,
};

/// A loop's `max_loops` when it does not set one (the blueprint default, Flujo's historical one).
pub const DEFAULT_MAX_LOOPS: u32 = 5;

impl Default for LoopSpec {
    fn default() -> Self {
        LoopSpec {
            body: Vec::new(),
            max_loops: DEFAULT_MAX_LOOPS,
            exit_expression: None,
            exit_condition: None,
            iteration_input: None,
            output: None,
            on_max_loops: OnMaxLoops::default(),
        }
    }
}

impl Default for MapSpec {
    fn default() -> Self {
        MapSpec { iterable_input: None, body: Vec::new(), concurrency: 1, max_items: None }
    }
}

impl Default for StateMachineSpec {
    fn default() -> Self {
        StateMachineSpec {
            states: Vec::new(),
            start_state: String::new(),
            end_states: Vec::new(),
            transitions: Vec::new(),
            max_hops: 100,
        }
    }
}

macro_rules! into_step {
    ($builder:ident) => {
        impl From<$builder> for Step {
            fn from(b: $builder) -> Step {
                b.build()
            }
        }
    };
}

/// [`Step::loop_`]: a body run again and again until its exit condition holds or `max_loops` is reached.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct LoopBuilder {
    name: String,
    spec: LoopSpec,
}

impl LoopBuilder {
    /// The most iterations (default [`DEFAULT_MAX_LOOPS`]).
    pub fn max_loops(mut self, n: u32) -> Self {
        self.spec.max_loops = n;
        self
    }
    /// Exit after an iteration for which this expression is true (`previous_step` is the iteration's output).
    pub fn exit_when(mut self, expression: impl Into<String>) -> Self {
        self.spec.exit_expression = Some(expression.into());
        self
    }
    /// Exit when this skill (given the iteration's output) returns a truthy value; the call is journaled.
    pub fn exit_condition(mut self, agent: AgentRef) -> Self {
        self.spec.exit_condition = Some(agent);
        self
    }
    /// The input of the iterations after the first (a template; default: the previous iteration's output).
    pub fn iteration_input(mut self, template: Value) -> Self {
        self.spec.iteration_input = Some(template);
        self
    }
    /// The loop's output (a template; default: the last iteration's output).
    pub fn output(mut self, template: Value) -> Self {
        self.spec.output = Some(template);
        self
    }
    /// What reaching `max_loops` without exiting means (default: the step fails).
    pub fn on_max_loops(mut self, on: OnMaxLoops) -> Self {
        self.spec.on_max_loops = on;
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::Loop(self.spec))
    }
}
into_step!(LoopBuilder);

/// [`Step::map`]: a body run once per item of a list (the item is `this` in templates).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct MapBuilder {
    name: String,
    spec: MapSpec,
}

impl MapBuilder {
    /// The list: a context path (`context.items`) or a template yielding a list (default: the step's input).
    pub fn over(mut self, iterable: impl Into<String>) -> Self {
        self.spec.iterable_input = Some(iterable.into());
        self
    }
    /// How many items run at once (default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.spec.concurrency = n;
        self
    }
    /// The most items accepted (a longer list fails the step before any item runs).
    pub fn max_items(mut self, n: usize) -> Self {
        self.spec.max_items = Some(n);
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::Map(self.spec))
    }
}
into_step!(MapBuilder);

/// [`Step::conditional`]: one branch chosen by an expression or a skill.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct ConditionalBuilder {
    name: String,
    spec: ConditionalSpec,
}

impl ConditionalBuilder {
    /// The expression whose value (as a string: `true`, `false`, a name) picks the branch.
    pub fn when(mut self, expression: impl Into<String>) -> Self {
        self.spec.condition_expression = Some(expression.into());
        self
    }
    /// A skill whose output picks the branch (journaled).
    pub fn condition(mut self, agent: AgentRef) -> Self {
        self.spec.condition = Some(agent);
        self
    }
    /// A branch.
    pub fn branch(mut self, key: impl Into<String>, steps: impl IntoIterator<Item = Step>) -> Self {
        self.spec.branches.push(Branch::new(key.into(), steps.into_iter().collect()));
        self
    }
    /// The branch taken when no key matches.
    pub fn otherwise(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.spec.default_branch = Some(steps.into_iter().collect());
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::Conditional(self.spec))
    }
}
into_step!(ConditionalBuilder);

/// [`Step::parallel`]: branches run at once on the same input.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct ParallelBuilder {
    name: String,
    spec: ParallelSpec,
}

impl ParallelBuilder {
    /// A branch.
    pub fn branch(mut self, name: impl Into<String>, steps: impl IntoIterator<Item = Step>) -> Self {
        self.spec.branches.push(Branch::new(name.into(), steps.into_iter().collect()));
        self
    }
    /// How the branches' context writes come together (default: `context_update`).
    pub fn merge(mut self, strategy: MergeStrategy) -> Self {
        self.spec.merge_strategy = strategy;
        self
    }
    /// What a failed branch does to the step (default: it fails the step).
    pub fn on_branch_failure(mut self, on: OnBranchFailure) -> Self {
        self.spec.on_branch_failure = on;
        self
    }
    /// Only these context keys reach the branches.
    pub fn context_include_keys(mut self, keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.spec.context_include_keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }
    /// How the branch outputs become the step's output (default: an object of branch name → output).
    pub fn reduce(mut self, mode: ReduceMode) -> Self {
        self.spec.reduce = Some(mode);
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::Parallel(self.spec))
    }
}
into_step!(ParallelBuilder);

/// [`Step::router`]: a skill or model picks which branches run.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct RouterBuilder {
    name: String,
    spec: RouterSpec,
}

impl RouterBuilder {
    /// A branch.
    pub fn branch(mut self, name: impl Into<String>, steps: impl IntoIterator<Item = Step>) -> Self {
        self.spec.branches.push(Branch::new(name.into(), steps.into_iter().collect()));
        self
    }
    /// How the chosen branches' context writes come together (default: `context_update`).
    pub fn merge(mut self, strategy: MergeStrategy) -> Self {
        self.spec.merge_strategy = strategy;
        self
    }
    /// What a failed branch does to the step.
    pub fn on_branch_failure(mut self, on: OnBranchFailure) -> Self {
        self.spec.on_branch_failure = on;
        self
    }
    /// How the branch outputs become the step's output.
    pub fn reduce(mut self, mode: ReduceMode) -> Self {
        self.spec.reduce = Some(mode);
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::DynamicRouter(self.spec))
    }
}
into_step!(RouterBuilder);

/// [`Step::cache`]: a step whose output is cached by input.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct CacheBuilder {
    name: String,
    spec: CacheSpec,
}

impl CacheBuilder {
    /// How long an entry stays valid, in seconds (default: forever).
    pub fn ttl_s(mut self, seconds: f64) -> Self {
        self.spec.ttl_s = Some(seconds);
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::Cache(self.spec))
    }
}
into_step!(CacheBuilder);

/// [`Step::state_machine`]: named states (lists of steps) and transitions between them.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct StateMachineBuilder {
    name: String,
    spec: StateMachineSpec,
}

impl StateMachineBuilder {
    /// A state.
    pub fn state(mut self, name: impl Into<String>, steps: impl IntoIterator<Item = Step>) -> Self {
        self.spec.states.push(Branch::new(name.into(), steps.into_iter().collect()));
        self
    }
    /// An end state (it may also be declared with [`state`](Self::state) to run steps).
    pub fn end_state(mut self, name: impl Into<String>) -> Self {
        self.spec.end_states.push(name.into());
        self
    }
    /// A transition (`from` may be `*`).
    pub fn transition(mut self, from: impl Into<String>, on: TransitionOn, to: impl Into<String>) -> Self {
        self.spec.transitions.push(Transition { from: from.into(), on, to: to.into(), when: None });
        self
    }
    /// A transition taken only when `when` is true (it sees `output.event`, `output.last_output`, …).
    pub fn transition_when(
        mut self,
        from: impl Into<String>,
        on: TransitionOn,
        to: impl Into<String>,
        when: impl Into<String>,
    ) -> Self {
        self.spec.transitions.push(Transition { from: from.into(), on, to: to.into(), when: Some(when.into()) });
        self
    }
    /// The most state changes before the step fails (default 100).
    pub fn max_hops(mut self, n: u32) -> Self {
        self.spec.max_hops = n;
        self
    }
    /// The step. An end state that was not declared with [`state`](Self::state) becomes a state without
    /// steps (as in a blueprint).
    pub fn build(mut self) -> Step {
        for end in &self.spec.end_states {
            if !self.spec.states.iter().any(|b| &b.name == end) {
                self.spec.states.push(Branch::new(end.clone(), Vec::new()));
            }
        }
        Step::new(self.name, StepKind::StateMachine(self.spec))
    }
}
into_step!(StateMachineBuilder);

/// [`Step::agentic_loop`]: a planner model calls tools (skills) turn by turn until it answers.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct AgenticLoopBuilder {
    name: String,
    spec: AgenticLoopSpec,
}

impl AgenticLoopBuilder {
    /// A tool (a skill id) offered to the planner.
    pub fn tool(mut self, skill_id: impl Into<String>) -> Self {
        self.spec.tools.push(skill_id.into());
        self
    }
    /// The most model turns (default 10).
    pub fn max_turns(mut self, n: u32) -> Self {
        self.spec.max_turns = n;
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::AgenticLoop(self.spec))
    }
}
into_step!(AgenticLoopBuilder);

/// [`Step::tree_search`]: a beam search over candidates a proposer suggests and an evaluator scores.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct TreeSearchBuilder {
    name: String,
    spec: TreeSearchSpec,
}

impl TreeSearchBuilder {
    /// Candidates proposed per expansion (default 3).
    pub fn branching_factor(mut self, n: u32) -> Self {
        self.spec.branching_factor = n;
        self
    }
    /// Nodes kept on the frontier (default 3).
    pub fn beam_width(mut self, n: u32) -> Self {
        self.spec.beam_width = n;
        self
    }
    /// The deepest path (default 5).
    pub fn max_depth(mut self, n: u32) -> Self {
        self.spec.max_depth = n;
        self
    }
    /// The most expansions (default: bounded by depth and beam only).
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.spec.max_iterations = Some(n);
        self
    }
    /// The score (0–1) at which a candidate is the goal (default 1.0).
    pub fn goal_score_threshold(mut self, score: f64) -> Self {
        self.spec.goal_score_threshold = score;
        self
    }
    /// Fail when no candidate reaches the goal (default: the best candidate is the output).
    pub fn require_goal(mut self, required: bool) -> Self {
        self.spec.require_goal = required;
        self
    }
    /// An expression every candidate must satisfy (`output` is the candidate).
    pub fn invariant(mut self, expression: impl Into<String>) -> Self {
        self.spec.static_invariants.push(expression.into());
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::TreeSearch(self.spec))
    }
}
into_step!(TreeSearchBuilder);

/// [`Step::custom`]: a step of your own kind, with named child sequences its policy runs.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it is turned into a Step (`.into()` or `.build()`)"]
pub struct CustomBuilder {
    name: String,
    kind: String,
    spec: Value,
    children: Vec<Branch>,
}

impl CustomBuilder {
    /// A named child sequence (run by the kind's policy with `ExecutionFrame::run_child(name, key, input)`).
    pub fn child(mut self, name: impl Into<String>, steps: impl IntoIterator<Item = Step>) -> Self {
        self.children.push(Branch::new(name.into(), steps.into_iter().collect()));
        self
    }
    /// The step.
    pub fn build(self) -> Step {
        Step::new(self.name, StepKind::Custom { custom_kind: self.kind, spec: self.spec, children: self.children })
    }
}
into_step!(CustomBuilder);

impl Step {
    /// A `step` running a model agent `provider:model` with its settings (as `agents:` declares them:
    /// `system_prompt`, `output_schema`, `model_settings`, …).
    pub fn model(name: impl Into<String>, model: impl Into<String>, settings: Value) -> Step {
        Step::new(name, StepKind::Step { agent: Some(AgentRef::Model { model: model.into(), settings }) })
    }

    /// A loop over `body`.
    pub fn loop_(name: impl Into<String>, body: impl IntoIterator<Item = Step>) -> LoopBuilder {
        LoopBuilder { name: name.into(), spec: LoopSpec { body: body.into_iter().collect(), ..LoopSpec::default() } }
    }

    /// A map of `body` over a list.
    pub fn map(name: impl Into<String>, body: impl IntoIterator<Item = Step>) -> MapBuilder {
        MapBuilder { name: name.into(), spec: MapSpec { body: body.into_iter().collect(), ..MapSpec::default() } }
    }

    /// A conditional; add branches with [`ConditionalBuilder::branch`].
    pub fn conditional(name: impl Into<String>) -> ConditionalBuilder {
        ConditionalBuilder { name: name.into(), spec: ConditionalSpec::default() }
    }

    /// A parallel step; add branches with [`ParallelBuilder::branch`].
    pub fn parallel(name: impl Into<String>) -> ParallelBuilder {
        ParallelBuilder { name: name.into(), spec: ParallelSpec::default() }
    }

    /// A dynamic router: `router_agent` returns the name (or names) of the branches to run.
    pub fn router(name: impl Into<String>, router_agent: AgentRef) -> RouterBuilder {
        RouterBuilder {
            name: name.into(),
            spec: RouterSpec {
                router_agent,
                branches: Vec::new(),
                merge_strategy: MergeStrategy::default(),
                on_branch_failure: OnBranchFailure::default(),
                context_include_keys: None,
                reduce: None,
            },
        }
    }

    /// A cache around `wrapped`.
    pub fn cache(name: impl Into<String>, wrapped: impl Into<Step>) -> CacheBuilder {
        CacheBuilder { name: name.into(), spec: CacheSpec { wrapped_step: Box::new(wrapped.into()), ttl_s: None } }
    }

    /// A state machine starting in `start_state`.
    pub fn state_machine(name: impl Into<String>, start_state: impl Into<String>) -> StateMachineBuilder {
        StateMachineBuilder {
            name: name.into(),
            spec: StateMachineSpec { start_state: start_state.into(), ..StateMachineSpec::default() },
        }
    }

    /// An agentic loop driven by `planner` (a model agent).
    pub fn agentic_loop(name: impl Into<String>, planner: AgentRef) -> AgenticLoopBuilder {
        AgenticLoopBuilder { name: name.into(), spec: AgenticLoopSpec { planner, tools: Vec::new(), max_turns: 10 } }
    }

    /// A tree search with a proposer and an evaluator (agents returning candidates and 0–1 scores).
    pub fn tree_search(name: impl Into<String>, proposer: AgentRef, evaluator: AgentRef) -> TreeSearchBuilder {
        TreeSearchBuilder { name: name.into(), spec: TreeSearchSpec::new(proposer, evaluator) }
    }

    /// A step of a kind registered by the user (its `StepPolicy` runs it); `spec` is the kind's own settings.
    /// Add child sequences with [`CustomBuilder::child`].
    pub fn custom(name: impl Into<String>, kind: impl Into<String>, spec: Value) -> CustomBuilder {
        CustomBuilder { name: name.into(), kind: kind.into(), spec, children: Vec::new() }
    }
}
