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
#[non_exhaustive]
pub struct Pipeline {
    /// The pipeline's name: stored with each run ([`crate::store::RunRecord::pipeline_name`]) and reported
    /// in results.
    pub name: String,
    #[serde(default = "default_version")]
    /// The pipeline's version (a blueprint's `version:`; default `0.1`), stored with each run.
    pub version: String,
    /// The top-level steps, run in order; each step's output is the next one's input.
    pub steps: Vec<Step>,
    /// JSON Schema for the user fields of the context; every update is validated against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_schema: Option<Value>,
    /// What the pipeline indexes into memory (a blueprint's `memory:`), when anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::memory::MemorySettings>,
}

fn default_version() -> String {
    "0.1".to_owned()
}

impl Pipeline {
    /// A pipeline named `name` running `steps`, with version `0.1` and no context schema.
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Self {
        Pipeline { name: name.into(), version: default_version(), steps, context_schema: None, memory: None }
    }

    /// Sets the JSON Schema the context's user fields must satisfy (see [`Pipeline::context_schema`]).
    pub fn with_context_schema(mut self, schema: Value) -> Self {
        self.context_schema = Some(schema);
        self
    }

    /// The names of every step of the pipeline, at any depth (bodies, branches, states, fallbacks, wrapped
    /// and imported steps).
    pub fn step_names(&self) -> std::collections::BTreeSet<String> {
        fn walk(v: &Value, out: &mut std::collections::BTreeSet<String>) {
            match v {
                Value::Object(o) => {
                    if let (Some(Value::String(name)), true) = (o.get("name"), o.contains_key("kind")) {
                        out.insert(name.clone());
                    }
                    o.values().for_each(|x| walk(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = std::collections::BTreeSet::new();
        if let Ok(v) = serde_json::to_value(&self.steps) {
            walk(&v, &mut out);
        }
        out
    }

    /// blake3 of the canonical JSON form: identifies the definition a run was started with (the hash of
    /// [`crate::Definition::of`] the pipeline).
    pub fn definition_hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// The per-step execution settings (`config:` in YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepConfig {
    /// Retries after the first attempt (default 1 → 2 attempts).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The longest each agent call of the step may take, in seconds (every attempt separately); a call
    /// that takes longer fails the attempt with `timed out`. `None`: no timeout. At most 7 days.
    pub timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The sampling temperature of the step's model calls (`config.temperature`, 0–2 in a blueprint); it
    /// overrides the agent's `model_settings.temperature`. `None`: the agent's setting. Skills ignore it.
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The nucleus sampling `top_p` of the step's model calls (`config.top_p`, 0–1 in a blueprint); it
    /// overrides the agent's `model_settings.top_p`. `None`: the agent's setting.
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The most completion tokens of the step's model calls (`config.max_tokens`, at least 1); it overrides
    /// the agent's `model_settings.max_tokens` (and `max_completion_tokens`). `None`: the agent's setting.
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
#[non_exhaustive]
pub struct UsageLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The most that may be spent, in USD; `None`: no cost limit.
    pub total_cost_usd_limit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The most tokens that may be used, prompt and completion together; `None`: no token limit.
    pub total_tokens_limit: Option<u64>,
}

impl UsageLimits {
    /// No limits.
    pub fn new() -> Self {
        UsageLimits::default()
    }

    /// Limits the cost to `usd`.
    pub fn with_cost_limit(mut self, usd: f64) -> Self {
        self.total_cost_usd_limit = Some(usd);
        self
    }

    /// Limits the tokens (prompt and completion together) to `tokens`.
    pub fn with_token_limit(mut self, tokens: u64) -> Self {
        self.total_tokens_limit = Some(tokens);
        self
    }
}

/// What a `step` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentRef {
    /// A registered skill (`agent: {id, params}`).
    Skill {
        /// The skill's registry id (`flujo.builtins.transform`, an id from `skills.yaml`).
        id: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        /// The skill's params, checked and bound when the runner is built (default `null`).
        params: Value,
    },
    /// A model agent (`uses: agents.NAME` resolved to `provider:model`), resolved by the model registry.
    Model {
        /// The model, `provider:model` (`openai:gpt-4o`, `mock:echo`).
        model: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        /// The agent's declaration (system prompt, output schema, `model_settings`, tools, …) as the model
        /// registry reads it (default `null`).
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
#[non_exhaustive]
pub struct Validator {
    /// The expression; the output passes when its value is truthy. `output` and `previous_step` name the
    /// output being checked.
    pub expression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The failure message when the expression is false; `None`: `validation failed: EXPRESSION`.
    pub message: Option<String>,
}

impl Validator {
    /// A validator checking `expression`, failing with `message` (or `validation failed: EXPRESSION`).
    pub fn new(expression: impl Into<String>, message: Option<String>) -> Self {
        Validator { expression: expression.into(), message }
    }
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
#[non_exhaustive]
pub struct Step {
    /// The step's name; unique among its siblings, it keys `steps.NAME` in templates and the context, and
    /// names the step in results. 1–256 characters, without `/`, `:`, control characters or surrounding
    /// whitespace.
    pub name: String,
    /// What the step does: its kind and the kind-specific settings.
    pub kind: StepKind,
    /// Input template (string or JSON with templates in strings); `None` = the previous step's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default)]
    /// Retries, timeout and sampling settings (`config:`).
    pub config: StepConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// What runs when the step fails (after its retries): its result replaces the failure, with
    /// `metadata.fallback_triggered` set and attempts, tokens and cost added up. `None`: no fallback.
    pub fallback: Option<Fallback>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Checks of the step's output, in order; the first that fails fails the step with its message. A
    /// `step` checks each attempt's output, so a failed check is retried.
    pub validators: Vec<Validator>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    /// Write the output into the context: an object output's keys become top-level fields (only those
    /// in `output_keys` when it is set), a non-object output goes to the one `output_keys` path. Default false.
    pub updates_context: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A context path (`a.b`, a `context.` prefix allowed) the output is written to; `None`: none.
    pub sink_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Context paths the step reads. Blueprint validation checks that each is produced upstream
    /// (`V-CTX1`, `V-CTX2`); the engine ignores them.
    pub input_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Context paths the step writes with `updates_context`: the keys of an object output to keep, or
    /// the one path a non-object output is written to. Blueprint validation also reads them as produced.
    pub output_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The step's own budget, checked for a `step` as its agent calls report usage: going past it stops
    /// the run with `usage_limit_exceeded`. `None`: only the run's budget applies.
    pub usage_limits: Option<UsageLimits>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    /// Free-form metadata (`meta:`), kept with the definition; the engine does not read it.
    pub meta: Map<String, Value>,
}

/// A named list of steps: a branch of a `conditional`, `parallel` or `dynamic_router`, a state of a
/// `state_machine`, a child sequence of a custom kind. Serialized as the pair `[name, steps]`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Branch {
    /// The branch's name: unique among its siblings, it is the key a conditional or router chooses and the
    /// key of a parallel step's output object.
    pub name: String,
    /// The steps the branch runs, in order.
    pub steps: Vec<Step>,
}

impl Branch {
    /// The branch `name` running `steps`.
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Self {
        Branch { name: name.into(), steps }
    }
}

impl Serialize for Branch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.name, &self.steps).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Branch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, steps) = <(String, Vec<Step>)>::deserialize(deserializer)?;
        Ok(Branch { name, steps })
    }
}

/// The kind-specific part of a step (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepKind {
    /// `kind: step` — runs an agent (or passes its input through when `agent` is `None`).
    Step {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        /// The agent to call; `None` passes the input through.
        agent: Option<AgentRef>,
    },
    /// `kind: loop` — runs a body again and again until an exit condition holds or `max_loops` is reached.
    Loop(LoopSpec),
    /// `kind: map` — runs a body once per item of a list.
    Map(MapSpec),
    /// `kind: conditional` — runs the branch whose name matches a key computed from the input.
    Conditional(ConditionalSpec),
    /// `kind: parallel` — runs branches concurrently on isolated copies of the context, then merges them.
    Parallel(ParallelSpec),
    /// `kind: dynamic_router` — an agent picks branches, which then run as in `parallel`.
    DynamicRouter(RouterSpec),
    /// `kind: hitl` — pauses the run until a human answers; the answer is the step's output.
    Hitl(HitlSpec),
    /// `kind: cache` — runs a wrapped step, reusing its output for the same step and input.
    Cache(CacheSpec),
    /// The engine side of `import` (a sub-pipeline).
    Import(ImportSpec),
    /// `kind: state_machine` — runs named states, moving between them by transitions.
    StateMachine(StateMachineSpec),
    /// A planner model chooses tools (skills) turn by turn until it answers.
    AgenticLoop(AgenticLoopSpec),
    /// A beam search: a proposer suggests candidates, an evaluator scores them (the original's `TreeSearchStep`).
    TreeSearch(TreeSearchSpec),
    /// A kind registered by the user with its own `StepPolicy`. `children` are named sequences of steps the
    /// policy runs (`ExecutionFrame::run_child`); they are prepared and journaled like the bodies and branches
    /// of the built-in composites.
    Custom {
        /// The kind's name, as registered with its `StepPolicy` (and written as `kind:` in YAML).
        custom_kind: String,
        #[serde(default)]
        /// The kind's own settings, as its policy reads them (default `null`).
        spec: Value,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        /// Named step sequences the policy runs (YAML `children:`); default none.
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
/// What a loop with an exit condition does when it reaches `max_loops` without meeting it
/// (`on_max_loops`).
pub enum OnMaxLoops {
    #[default]
    /// The step fails with `reached max_loops` (the default).
    Fail,
    /// The step succeeds with the last iteration's output (or its `output` template).
    Succeed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// `kind: loop`: `body` runs again and again; the first iteration's input is the step's input, each
/// later one's the previous iteration's output (or `iteration_input`). A failed iteration fails the step.
#[non_exhaustive]
pub struct LoopSpec {
    /// The steps of one iteration, run in order; iteration `i` runs at `P/loop:i/…`.
    pub body: Vec<Step>,
    /// The most iterations (at most 1,000,000; [`crate::build::DEFAULT_MAX_LOOPS`] in blueprints and
    /// builders). A loop without `exit_expression` or `exit_condition` runs this many iterations and succeeds.
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
    /// What reaching `max_loops` without meeting the exit condition means (default: the step fails).
    pub on_max_loops: OnMaxLoops,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// `kind: map`: `body` runs once per item of a list (the item is the body's input and `this` in
/// templates); the output is the list of the body's outputs, in item order. A failed item fails the step.
#[non_exhaustive]
pub struct MapSpec {
    /// A context path (`context.items` / `items`) or a template yielding a list; `None` = the step input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterable_input: Option<String>,
    /// The steps run for each item; item `i` runs at `P/map:i/…`.
    pub body: Vec<Step>,
    #[serde(default = "one")]
    /// How many items run at once, at least 1 (default 1: one after another, on the step's context). Above
    /// 1, items run on isolated copies of the context, merged back in item order (later items win).
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
/// `kind: conditional`: a key is computed (by `condition_expression`, else the `condition` skill,
/// else the input itself) and the branch of that name runs with the step's input, else `default_branch`;
/// with neither the step fails with `no branch for key 'K'`.
#[non_exhaustive]
pub struct ConditionalSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// An expression over the step's input (`previous_step`) whose value is the branch key: a string
    /// as is, a boolean as `true`/`false`, another value as its JSON text. Takes precedence over `condition`.
    pub condition_expression: Option<String>,
    /// A skill whose output is the branch key (journaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<AgentRef>,
    /// The branches by name, in declaration order; branch `NAME` runs at `P/branch:NAME/…`.
    pub branches: Vec<Branch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The steps run when no branch has the key's name (at `P/default/…`); `None`: the step fails.
    pub default_branch: Option<Vec<Step>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
/// How the context changes of parallel branches reach the parent context (`merge_strategy`).
/// Except under `no_merge`, framework writes (`steps.*`, `hitl_history`) and appends always merge, in branch
/// order.
pub enum MergeStrategy {
    #[default]
    /// Writes to distinct paths all apply; writes of two branches to one path are deep-merged (objects
    /// combine, equal values agree). Differing values, or one branch writing inside another's value, fail the
    /// step, naming the key and the branches. The default.
    ContextUpdate,
    /// Every write applies, in branch declaration order: the last declared branch wins.
    Overwrite,
    /// A write overlapping an earlier branch's write is dropped: the first declared branch wins.
    KeepFirst,
    /// Two branches writing overlapping paths fail the step, whatever the values.
    ErrorOnConflict,
    /// No change made by a branch reaches the parent context.
    NoMerge,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
/// What a failed branch of a `parallel` or `dynamic_router` step means (`on_branch_failure`).
pub enum OnBranchFailure {
    #[default]
    /// The step fails, naming the failed branches (the default).
    Propagate,
    /// The step goes on with the branches that succeeded; the failed ones are listed in
    /// `metadata.failed_branches`.
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
/// How the outputs of the successful branches (in declaration order) become the step's one output
/// (`reduce`).
pub enum ReduceMode {
    /// The branch names, as a list.
    Keys,
    /// The outputs, as a list.
    Values,
    /// When every output is an object, one object with all their keys (later branches win); otherwise a
    /// list of the distinct values (a list output contributes its items).
    Union,
    /// When every output is a string, their concatenation; otherwise one list (a list output contributes
    /// its items, any other output itself).
    Concat,
    /// The first branch's output (`null` when there is none).
    First,
    /// The last branch's output (`null` when there is none).
    Last,
    /// The most frequent output (compared as JSON); a tie goes to the output seen first.
    MajorityVote,
    /// The most frequent string output (compared with surrounding whitespace trimmed) when at least two agree;
    /// otherwise `majority_vote` over all outputs (the original's `code_consensus`).
    CodeConsensus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
/// `kind: parallel`: every branch runs concurrently with the step's input, on an isolated copy of the
/// context; the output is the object `{branch: output}`, or the `reduce`d value.
#[non_exhaustive]
pub struct ParallelSpec {
    /// The branches by name, in declaration order; branch `NAME` runs at `P/branch:NAME/…`.
    pub branches: Vec<Branch>,
    #[serde(default)]
    /// How the branches' context changes reach the parent context (default `context_update`).
    pub merge_strategy: MergeStrategy,
    #[serde(default)]
    /// What a failed branch means (default `propagate`: the step fails).
    pub on_branch_failure: OnBranchFailure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The user fields the branches' copies of the context hold (framework fields are always there);
    /// `None`: all of them.
    pub context_include_keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// How the branch outputs become one value; `None`: the object `{branch: output}`.
    pub reduce: Option<ReduceMode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// `kind: dynamic_router`: `router_agent` picks branches by name, and those run as in a `parallel`
/// step (a name that is not a branch fails the step). The choice is journaled.
#[non_exhaustive]
pub struct RouterSpec {
    /// Returns a branch name or a list of branch names.
    pub router_agent: AgentRef,
    /// The branches the router may choose, by name; branch `NAME` runs at `P/branch:NAME/…`.
    pub branches: Vec<Branch>,
    #[serde(default)]
    /// How the chosen branches' context changes reach the parent context (default `context_update`).
    pub merge_strategy: MergeStrategy,
    #[serde(default)]
    /// What a failed branch means (default `propagate`: the step fails).
    pub on_branch_failure: OnBranchFailure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The user fields the branches' copies of the context hold (framework fields are always there);
    /// `None`: all of them.
    pub context_include_keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// How the branch outputs become one value; `None`: the object `{branch: output}`.
    pub reduce: Option<ReduceMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
/// `kind: hitl`: pauses the run at the step's path (the `pause_id`) until an answer arrives; the
/// answer is the step's output and is appended to the context's `hitl_history`.
#[non_exhaustive]
pub struct HitlSpec {
    /// Template shown to the human.
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// JSON Schema the answer must satisfy (checked when the run is resumed); `None`: any answer.
    pub input_schema: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// `kind: cache`: runs `wrapped_step` and keeps its successful output under a key made of the wrapped
/// step's fingerprint and its input; a later execution with the same key reuses the output
/// (`metadata.cache_hit`). Nothing else is cached.
#[non_exhaustive]
pub struct CacheSpec {
    /// The step whose output is cached; it runs at `P/wrapped`.
    pub wrapped_step: Box<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// How long a cached output stays valid, in seconds (at most 7 days); `None`: it does not expire.
    pub ttl_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
/// Where an `import` without `inherit_context` puts its input in the child's fresh context
/// (`input_to`). The child's first step gets the input either way.
pub enum InputTo {
    #[default]
    /// In the child's `initial_prompt` (the default).
    InitialPrompt,
    /// In the child's `import_artifacts` (its `initial_prompt` is empty).
    ImportArtifacts,
    /// In both.
    Both,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
/// What a failed child pipeline means for its `import` step (`on_failure`).
pub enum OnImportFailure {
    #[default]
    /// The step fails (the default).
    Abort,
    /// The step succeeds with its own input as output; the failure is in `metadata.import_failure`.
    Skip,
    /// The step succeeds with `default_output`; the failure is in `metadata.import_failure`.
    ContinueWithDefault,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// One value copied from an import's child context to the parent's when the child succeeds
/// (`outputs: [{child, parent}]`).
#[non_exhaustive]
pub struct OutputMapping {
    /// The context path read in the child's context (`null` when absent).
    pub child: String,
    /// The context path written in the parent's context.
    pub parent: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// `kind: import` (`uses: imports.ALIAS`): runs another pipeline's steps at `P/import/…`, the first
/// with the step's input; the output is the child's last output.
#[non_exhaustive]
pub struct ImportSpec {
    /// The import's alias in the blueprint (`imports.ALIAS`); failure messages name it.
    pub alias: String,
    /// The imported pipeline.
    pub pipeline: Arc<Pipeline>,
    #[serde(default)]
    /// True: the child runs on the parent's context. False (the default): on a fresh context of its own.
    pub inherit_context: bool,
    #[serde(default)]
    /// Where the input goes in a fresh child context (default `initial_prompt`; unused with
    /// `inherit_context`).
    pub input_to: InputTo,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Values copied from the child's context to the parent's when the child succeeds (unused with
    /// `inherit_context`).
    pub outputs: Vec<OutputMapping>,
    #[serde(default)]
    /// What a failed child means (default `abort`: the step fails).
    pub on_failure: OnImportFailure,
    /// Output used with `on_failure: continue_with_default`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub default_output: Value,
}

/// `agentic_loop`: each model turn and each tool call is journaled at its own path (`P/turn:N`,
/// `P/turn:N/tool:J`), so a resumed run replays them instead of calling again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgenticLoopSpec {
    /// The planner: a model agent (`AgentRef::Model`).
    pub planner: AgentRef,
    /// Skill ids offered to the planner as tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    #[serde(default = "default_max_turns")]
    /// The most model turns; a planner still calling tools after them fails the step. Default 10, at
    /// most 1,000.
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
#[non_exhaustive]
pub struct TreeSearchSpec {
    /// The agent that proposes candidates from a node (a model agent or a skill).
    pub proposer: AgentRef,
    /// The agent that scores a candidate from 0 to 1 (a model agent or a skill).
    pub evaluator: AgentRef,
    #[serde(default = "three")]
    /// The candidates asked of the proposer per expansion (extra ones are dropped); default 3, 1 to 100.
    pub branching_factor: u32,
    #[serde(default = "three")]
    /// The nodes the frontier keeps after each expansion; default 3, 1 to 100.
    pub beam_width: u32,
    #[serde(default = "five")]
    /// Nodes this deep are not expanded (the step's input, the root, is depth 0); default 5, 1 to 1,000.
    pub max_depth: u32,
    /// The most nodes expanded (taken off the frontier). When `None`, the depth and the beam bound the search,
    /// and the engine's iteration limit (`limits::MAX_ITERATIONS`) caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    #[serde(default = "full_score")]
    /// The score (0–1) at which a candidate is the goal and the search ends; default 1.0.
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

impl TreeSearchSpec {
    /// A search with `proposer` and `evaluator` and the defaults of a blueprint: branching factor 3, beam width
    /// 3, depth 5, no expansion limit, goal score 1.0, goal not required, a 2,000-token path summary.
    pub fn new(proposer: AgentRef, evaluator: AgentRef) -> Self {
        TreeSearchSpec {
            proposer,
            evaluator,
            branching_factor: three(),
            beam_width: three(),
            max_depth: five(),
            max_iterations: None,
            goal_score_threshold: full_score(),
            require_goal: false,
            path_max_tokens: two_thousand(),
            static_invariants: Vec::new(),
        }
    }
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
/// The event a state machine transition reacts to (`on:`).
pub enum TransitionOn {
    /// The state's steps succeeded.
    Success,
    /// A step of the state failed.
    Failure,
    /// After a state in which a human answered a pause (a `hitl` step of the state paused the run and was
    /// resumed): the original's `on: pause`.
    Pause,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// A state machine rule: when state `from` ends with event `on` and `when` holds, go to state `to`.
/// The first matching rule, in declaration order, applies.
#[non_exhaustive]
pub struct Transition {
    /// A state name or `*` for any state.
    pub from: String,
    /// The event the rule reacts to.
    pub on: TransitionOn,
    /// The state to go to.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// An expression that must also be true (`previous_step` is the state's output, `output` the object
    /// `{event, last_output, last_step}`); `None`: always.
    pub when: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// `kind: state_machine`: runs the steps of `start_state`, then follows transitions from state to
/// state (each state's output is the next one's input) until an end state finishes. A state that fails with
/// no matching `failure` rule, or succeeds with no rule and is not an end state, fails the step.
#[non_exhaustive]
pub struct StateMachineSpec {
    /// The states by name, each a list of steps; state `NAME` on hop `H` runs at `P/state:NAME@H/…`.
    pub states: Vec<Branch>,
    /// The state that runs first.
    pub start_state: String,
    /// States after which the machine finishes (successfully when the state succeeded); no transition
    /// is taken from them.
    pub end_states: Vec<String>,
    /// The rules that choose the next state, tried in declaration order.
    pub transitions: Vec<Transition>,
    #[serde(default = "default_max_hops")]
    /// The most transitions taken; one more stops the run with
    /// [`crate::error::Interrupt::InfiniteRedirect`]. Default 100, at most 1,000,000.
    pub max_hops: u32,
}

fn default_max_hops() -> u32 {
    100
}

impl RouterSpec {
    /// A router choosing with `router_agent` among no branches yet, with the defaults of a blueprint
    /// (`context_update`, `propagate`, the whole context, no reduce).
    pub fn new(router_agent: AgentRef) -> Self {
        RouterSpec {
            router_agent,
            branches: Vec::new(),
            merge_strategy: MergeStrategy::default(),
            on_branch_failure: OnBranchFailure::default(),
            context_include_keys: None,
            reduce: None,
        }
    }
}

impl HitlSpec {
    /// A pause asking `message` (a template), with an optional `input_schema` for the answer.
    pub fn new(message: impl Into<String>, input_schema: Option<Value>) -> Self {
        HitlSpec { message: message.into(), input_schema }
    }
}

impl CacheSpec {
    /// Caches the output of `wrapped_step`, without expiry.
    pub fn new(wrapped_step: Step) -> Self {
        CacheSpec { wrapped_step: Box::new(wrapped_step), ttl_s: None }
    }
}

impl OutputMapping {
    /// Copies the child's context path `child` to the parent's `parent`.
    pub fn new(child: impl Into<String>, parent: impl Into<String>) -> Self {
        OutputMapping { child: child.into(), parent: parent.into() }
    }
}

impl ImportSpec {
    /// Runs `pipeline` (imported as `alias`) on a fresh context with the defaults of a blueprint
    /// (`input_to: initial_prompt`, no outputs copied, `on_failure: abort`).
    pub fn new(alias: impl Into<String>, pipeline: Arc<Pipeline>) -> Self {
        ImportSpec {
            alias: alias.into(),
            pipeline,
            inherit_context: false,
            input_to: InputTo::default(),
            outputs: Vec::new(),
            on_failure: OnImportFailure::default(),
            default_output: Value::Null,
        }
    }
}

impl AgenticLoopSpec {
    /// A loop driven by the model agent `planner`, with no tools yet and at most 10 turns.
    pub fn new(planner: AgentRef) -> Self {
        AgenticLoopSpec { planner, tools: Vec::new(), max_turns: default_max_turns() }
    }
}

impl Transition {
    /// Goes from state `from` (or `*`) to `to` on event `on`, unconditionally.
    pub fn new(from: impl Into<String>, on: TransitionOn, to: impl Into<String>) -> Self {
        Transition { from: from.into(), on, to: to.into(), when: None }
    }

    /// Also requires the expression `when` to hold.
    pub fn with_when(mut self, when: impl Into<String>) -> Self {
        self.when = Some(when.into());
        self
    }
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

    /// A `hitl` step showing `message` (a template) and accepting answers valid against `input_schema`
    /// (any answer when `None`).
    pub fn hitl(name: impl Into<String>, message: impl Into<String>, input_schema: Option<Value>) -> Self {
        Step::new(name, StepKind::Hitl(HitlSpec { message: message.into(), input_schema }))
    }

    /// Sets the input template (see [`Step::input`]).
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = Some(input);
        self
    }

    /// Replaces the step's config.
    pub fn with_config(mut self, config: StepConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets `config.max_retries`: the retries after the first attempt.
    pub fn with_retries(mut self, max_retries: u32) -> Self {
        self.config.max_retries = max_retries;
        self
    }

    /// Sets an inline fallback step, run at `P/fallback` when this step fails.
    pub fn with_fallback(mut self, fallback: Step) -> Self {
        self.fallback = Some(Fallback::Step(Box::new(fallback)));
        self
    }

    /// Sets the fallback to the sibling step named `name` (in the same sequence).
    pub fn with_sibling_fallback(mut self, name: impl Into<String>) -> Self {
        self.fallback = Some(Fallback::Sibling(name.into()));
        self
    }

    /// Writes the output to the context path `path` (see [`Step::sink_to`]).
    pub fn with_sink_to(mut self, path: impl Into<String>) -> Self {
        self.sink_to = Some(path.into());
        self
    }

    /// Turns `updates_context` on, with `output_keys` (see [`Step::updates_context`]).
    pub fn with_updates_context(mut self, output_keys: Vec<String>) -> Self {
        self.updates_context = true;
        self.output_keys = output_keys;
        self
    }

    /// Adds a validator: `expression` must be true of the output; `message` is the failure message
    /// (`None`: `validation failed: EXPRESSION`).
    pub fn with_validator(mut self, expression: impl Into<String>, message: Option<String>) -> Self {
        self.validators.push(Validator { expression: expression.into(), message });
        self
    }

    /// Canonical JSON bytes: the step's fingerprint (cache keys).
    pub fn fingerprint(&self) -> blake3::Hash {
        blake3::hash(&serde_json::to_vec(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs store their pipeline's serde JSON and its hash; a branch keeps the pair form it had when it was a
    /// tuple, so the stored definitions of older runs still load and hash the same.
    #[test]
    fn a_branch_serializes_as_the_pair_name_steps() {
        let spec =
            ParallelSpec { branches: vec![Branch::new("a", vec![Step::passthrough("p")])], ..Default::default() };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["branches"],
            serde_json::json!([["a", [{"name": "p", "kind": {"kind": "step"}, "config": {"max_retries": 1}}]]])
        );
        let back: ParallelSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
        let not_a_pair = serde_json::json!({"branches": [{"name": "a", "steps": []}]});
        assert!(serde_json::from_value::<ParallelSpec>(not_a_pair).is_err());
    }
}
