//! Pipelines and steps: the immutable tree a run walks.
//!
//! A [`Pipeline`] is a list of [`Step`]s; every step has the common fields of SPEC §3 and a [`StepKind`] that
//! carries the kind-specific spec. The tree is plain data (serde), so it can be fingerprinted (cache keys),
//! hashed (the run's pipeline hash) and stored with the run.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A named, versioned tree of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    pub steps: Vec<Step>,
    /// JSON Schema for the user fields of the context; every update is validated against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_schema: Option<Value>,
}

fn default_version() -> String {
    "0.1".to_owned()
}

impl Pipeline {
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Self {
        Pipeline { name: name.into(), version: default_version(), steps, context_schema: None }
    }

    pub fn with_context_schema(mut self, schema: Value) -> Self {
        self.context_schema = Some(schema);
        self
    }

    /// blake3 of the canonical JSON form: identifies the definition a run was started with.
    pub fn definition_hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// The per-step execution settings (`config:` in YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepConfig {
    /// Retries after the first attempt (default 1 → 2 attempts).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

fn default_retries() -> u32 {
    1
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig { max_retries: 1, timeout_s: None, temperature: None, top_p: None, max_tokens: None }
    }
}

/// Run or step budget (SPEC §8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cost_usd_limit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens_limit: Option<u64>,
}

/// What a `step` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentRef {
    /// A registered skill (`agent: {id, params}`).
    Skill {
        id: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        params: Value,
    },
    /// A model agent (`uses: agents.NAME` resolved to `provider:model`), resolved by the model registry.
    Model {
        model: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        settings: Value,
    },
}

impl AgentRef {
    /// A registered skill with `params`.
    pub fn skill(id: impl Into<String>, params: Value) -> Self {
        AgentRef::Skill { id: id.into(), params }
    }

    /// What the agent calls: the skill id, or the model (`provider:model`).
    pub fn target(&self) -> &str {
        match self {
            AgentRef::Skill { id, .. } => id,
            AgentRef::Model { model, .. } => model,
        }
    }
}

/// A step validator: a Jinja expression over `output` (and the usual names) that must be true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validator {
    pub expression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a step's fallback comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// An inline step.
    Step(Box<Step>),
    /// A sibling step (same sequence) by name. References can form cycles, which the engine reports as
    /// `InfiniteFallback`.
    Sibling(String),
}

/// A node of the pipeline tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    /// Input template (string or JSON with templates in strings); `None` = the previous step's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default)]
    pub config: StepConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<Validator>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub updates_context: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_limits: Option<UsageLimits>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

/// A named list of steps (a branch, a state, a loop body).
pub type Branch = (String, Vec<Step>);

/// The kind-specific part of a step (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepKind {
    /// `kind: step` — runs an agent (or passes its input through when `agent` is `None`).
    Step {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<AgentRef>,
    },
    Loop(LoopSpec),
    Map(MapSpec),
    Conditional(ConditionalSpec),
    Parallel(ParallelSpec),
    DynamicRouter(RouterSpec),
    Hitl(HitlSpec),
    Cache(CacheSpec),
    /// The engine side of `import` (a sub-pipeline).
    Import(ImportSpec),
    StateMachine(StateMachineSpec),
    /// A planner model chooses tools (skills) turn by turn until it answers.
    AgenticLoop(AgenticLoopSpec),
    /// A beam search: a proposer suggests candidates, an evaluator scores them (the original's `TreeSearchStep`).
    TreeSearch(TreeSearchSpec),
    /// A kind registered by the user with its own `StepPolicy`. `children` are named sequences of steps the
    /// policy runs (`ExecutionFrame::run_child`); they are prepared and journaled like the bodies and branches
    /// of the built-in composites.
    Custom {
        custom_kind: String,
        #[serde(default)]
        spec: Value,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        children: Vec<Branch>,
    },
}

impl StepKind {
    /// The kind name the dispatcher uses (`step`, `loop`, …, or the custom kind's name).
    pub fn name(&self) -> &str {
        match self {
            StepKind::Step { .. } => "step",
            StepKind::Loop(_) => "loop",
            StepKind::Map(_) => "map",
            StepKind::Conditional(_) => "conditional",
            StepKind::Parallel(_) => "parallel",
            StepKind::DynamicRouter(_) => "dynamic_router",
            StepKind::Hitl(_) => "hitl",
            StepKind::Cache(_) => "cache",
            StepKind::Import(_) => "import",
            StepKind::StateMachine(_) => "state_machine",
            StepKind::AgenticLoop(_) => "agentic_loop",
            StepKind::TreeSearch(_) => "tree_search",
            StepKind::Custom { custom_kind, .. } => custom_kind,
        }
    }

    /// True for kinds whose execution contains other steps.
    pub fn is_composite(&self) -> bool {
        !matches!(self, StepKind::Step { .. } | StepKind::Hitl(_))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnMaxLoops {
    #[default]
    Fail,
    Succeed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSpec {
    pub body: Vec<Step>,
    pub max_loops: u32,
    /// Evaluated after each iteration with `previous_step` = the iteration's output; true → exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_expression: Option<String>,
    /// A skill returning a truthy value to exit (journaled, so replay is deterministic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_condition: Option<AgentRef>,
    /// Template for the input of iterations after the first (default: the previous iteration's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration_input: Option<Value>,
    /// Template for the loop's output (default: the last iteration's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default)]
    pub on_max_loops: OnMaxLoops,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapSpec {
    /// A context path (`context.items` / `items`) or a template yielding a list; `None` = the step input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterable_input: Option<String>,
    pub body: Vec<Step>,
    #[serde(default = "one")]
    pub concurrency: usize,
    /// The most items the map accepts (a list longer than this fails the step before any item runs);
    /// [`DEFAULT_MAX_MAP_ITEMS`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
}

/// The item bound of a map that does not set `max_items`: a runaway list (a template or an upstream step
/// producing millions of items) fails with a clear error instead of journaling without end.
pub const DEFAULT_MAX_MAP_ITEMS: usize = 100_000;

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionalSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_expression: Option<String>,
    /// A skill whose output is the branch key (journaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<AgentRef>,
    pub branches: Vec<Branch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<Vec<Step>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MergeStrategy {
    #[default]
    ContextUpdate,
    Overwrite,
    KeepFirst,
    ErrorOnConflict,
    NoMerge,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnBranchFailure {
    #[default]
    Propagate,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReduceMode {
    Keys,
    Values,
    Union,
    Concat,
    First,
    Last,
    MajorityVote,
    /// The most frequent string output (compared with surrounding whitespace trimmed) when at least two agree;
    /// otherwise `majority_vote` over all outputs (the original's `code_consensus`).
    CodeConsensus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParallelSpec {
    pub branches: Vec<Branch>,
    #[serde(default)]
    pub merge_strategy: MergeStrategy,
    #[serde(default)]
    pub on_branch_failure: OnBranchFailure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_include_keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<ReduceMode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterSpec {
    /// Returns a branch name or a list of branch names.
    pub router_agent: AgentRef,
    pub branches: Vec<Branch>,
    #[serde(default)]
    pub merge_strategy: MergeStrategy,
    #[serde(default)]
    pub on_branch_failure: OnBranchFailure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_include_keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<ReduceMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HitlSpec {
    /// Template shown to the human.
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub wrapped_step: Box<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InputTo {
    #[default]
    InitialPrompt,
    ImportArtifacts,
    Both,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnImportFailure {
    #[default]
    Abort,
    Skip,
    ContinueWithDefault,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputMapping {
    pub child: String,
    pub parent: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSpec {
    pub alias: String,
    pub pipeline: Arc<Pipeline>,
    #[serde(default)]
    pub inherit_context: bool,
    #[serde(default)]
    pub input_to: InputTo,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputMapping>,
    #[serde(default)]
    pub on_failure: OnImportFailure,
    /// Output used with `on_failure: continue_with_default`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub default_output: Value,
}

/// `agentic_loop`: each model turn and each tool call is journaled at its own path (`P/turn:N`,
/// `P/turn:N/tool:J`), so a resumed run replays them instead of calling again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgenticLoopSpec {
    /// The planner: a model agent (`AgentRef::Model`).
    pub planner: AgentRef,
    /// Skill ids offered to the planner as tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
}

fn default_max_turns() -> u32 {
    10
}

/// `tree_search`: a best-first beam search. From each node taken off the frontier (the best by `f = g + h`), the
/// proposer suggests up to `branching_factor` candidates; the evaluator scores each (0–1); the frontier keeps the
/// best `beam_width` nodes; the search ends at a candidate scoring at least `goal_score_threshold`, or when the
/// frontier is empty, `max_iterations` nodes were expanded or every node is `max_depth` deep. Each proposer and
/// evaluator call is journaled at its own path (`P/node:N/propose`, `P/node:N/eval:J`), so a resumed run repeats
/// none of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeSearchSpec {
    pub proposer: AgentRef,
    pub evaluator: AgentRef,
    #[serde(default = "three")]
    pub branching_factor: u32,
    #[serde(default = "three")]
    pub beam_width: u32,
    #[serde(default = "five")]
    pub max_depth: u32,
    /// The most nodes expanded (taken off the frontier); unbounded when `None` (the depth and beam bound it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    #[serde(default = "full_score")]
    pub goal_score_threshold: f64,
    /// Without a candidate reaching the threshold the step fails (else the best candidate is the output).
    #[serde(default)]
    pub require_goal: bool,
    /// The budget of the path summary given to the proposer and evaluator, in estimated tokens.
    #[serde(default = "two_thousand")]
    pub path_max_tokens: u32,
    /// Expressions every candidate must satisfy (`output` is the candidate); a violating one is dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_invariants: Vec<String>,
}

fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn full_score() -> f64 {
    1.0
}
fn two_thousand() -> u32 {
    2000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransitionOn {
    Success,
    Failure,
    /// After a state in which a human answered a pause (a `hitl` step of the state paused the run and was
    /// resumed): the original's `on: pause`.
    Pause,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// A state name or `*` for any state.
    pub from: String,
    pub on: TransitionOn,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMachineSpec {
    pub states: Vec<Branch>,
    pub start_state: String,
    pub end_states: Vec<String>,
    pub transitions: Vec<Transition>,
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
}

fn default_max_hops() -> u32 {
    100
}

impl Step {
    /// A step of kind `kind` with default common fields.
    pub fn new(name: impl Into<String>, kind: StepKind) -> Self {
        Step {
            name: name.into(),
            kind,
            input: None,
            config: StepConfig::default(),
            fallback: None,
            validators: Vec::new(),
            updates_context: false,
            sink_to: None,
            input_keys: Vec::new(),
            output_keys: Vec::new(),
            usage_limits: None,
            meta: Map::new(),
        }
    }

    /// A `step` running skill `id` with `params`.
    pub fn skill(name: impl Into<String>, id: impl Into<String>, params: Value) -> Self {
        Step::new(name, StepKind::Step { agent: Some(AgentRef::skill(id, params)) })
    }

    /// A `step` without agent: passes its input through.
    pub fn passthrough(name: impl Into<String>) -> Self {
        Step::new(name, StepKind::Step { agent: None })
    }

    pub fn hitl(name: impl Into<String>, message: impl Into<String>, input_schema: Option<Value>) -> Self {
        Step::new(name, StepKind::Hitl(HitlSpec { message: message.into(), input_schema }))
    }

    pub fn with_input(mut self, input: Value) -> Self {
        self.input = Some(input);
        self
    }

    pub fn with_config(mut self, config: StepConfig) -> Self {
        self.config = config;
        self
    }

    pub fn with_retries(mut self, max_retries: u32) -> Self {
        self.config.max_retries = max_retries;
        self
    }

    pub fn with_fallback(mut self, fallback: Step) -> Self {
        self.fallback = Some(Fallback::Step(Box::new(fallback)));
        self
    }

    pub fn with_sibling_fallback(mut self, name: impl Into<String>) -> Self {
        self.fallback = Some(Fallback::Sibling(name.into()));
        self
    }

    pub fn with_sink_to(mut self, path: impl Into<String>) -> Self {
        self.sink_to = Some(path.into());
        self
    }

    pub fn with_updates_context(mut self, output_keys: Vec<String>) -> Self {
        self.updates_context = true;
        self.output_keys = output_keys;
        self
    }

    pub fn with_validator(mut self, expression: impl Into<String>, message: Option<String>) -> Self {
        self.validators.push(Validator { expression: expression.into(), message });
        self
    }

    /// Canonical JSON bytes: the step's fingerprint (cache keys).
    pub fn fingerprint(&self) -> blake3::Hash {
        blake3::hash(&serde_json::to_vec(self).unwrap_or_default())
    }
}
