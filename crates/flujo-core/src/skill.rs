//! Skills: registered tools with an id, schemas and a `side_effects` flag (SPEC §7), and the registry trait.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::ContextSnapshot;
use crate::patch::PatchOp;
use crate::result::TokenUsage;
use crate::runtime::Usage;

/// Descriptive facts about a skill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SkillInfo {
    /// The skill's id in its registry (`flujo.builtins.transform`, an id from `skills.yaml`).
    pub id: String,
    /// What the skill does, in a sentence or two (listed by tooling, and offered to models as the tool's
    /// description).
    pub description: String,
    /// JSON Schema of the input the skill accepts; `None` when it declares none.
    pub input_schema: Option<Value>,
    /// JSON Schema of the output the skill returns; `None` when it declares none.
    pub output_schema: Option<Value>,
    /// True when a call changes something outside the run (writes a file, sends a request), so calling it
    /// again is not harmless.
    pub side_effects: bool,
}

impl SkillInfo {
    /// The skill `id`, doing what `description` says: no schemas, no side effects.
    pub fn new(id: impl Into<String>, description: impl Into<String>) -> Self {
        SkillInfo { id: id.into(), description: description.into(), ..Default::default() }
    }

    /// Declares the JSON Schema of the input.
    pub fn with_input_schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
    }

    /// Declares the JSON Schema of the output.
    pub fn with_output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    /// Declares whether a call changes something outside the run ([`SkillInfo::side_effects`]).
    pub fn with_side_effects(mut self, side_effects: bool) -> Self {
        self.side_effects = side_effects;
        self
    }
}

/// Everything a skill invocation may read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SkillCall {
    /// The input of this call (for a `step`, its rendered input), after any governance replacement.
    pub input: Value,
    /// The run's id.
    pub run_id: Arc<str>,
    /// The path of the step execution (or journaled call) making the call.
    pub path: Arc<str>,
    /// The name of the step making the call.
    pub step: Arc<str>,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Stable across re-runs of the same step execution (derived from run id and path).
    pub idempotency_key: Arc<str>,
    /// The run context as it was when the call was made.
    pub context: ContextSnapshot,
    /// The current map item (`this` in templates) when the step runs inside a map body, so that skills
    /// evaluating templates or expressions see the same names as the step's `input:` template (SPEC §3).
    pub this: Option<Arc<Value>>,
    /// Where a model streams its answer as it is generated, when the run streams tokens; skills that do not
    /// stream ignore it.
    pub deltas: Option<DeltaSink>,
}

impl SkillCall {
    /// A first-attempt call with `input`, as a test of a skill makes it: run `run`, path `0`, step `step`,
    /// idempotency key `run/0`, an empty context, no map item, no streaming. The engine sets every field.
    pub fn new(input: Value) -> Self {
        SkillCall {
            input,
            run_id: Arc::from("run"),
            path: Arc::from("0"),
            step: Arc::from("step"),
            attempt: 1,
            idempotency_key: Arc::from("run/0"),
            context: ContextSnapshot::default(),
            this: None,
            deltas: None,
        }
    }
}

/// What a [`DeltaSink`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta<'a> {
    /// A piece of the answer's text.
    Text(&'a str),
    /// A new request of the same call starts (a re-ask of structured output: `2`, `3`, …); the text that
    /// follows belongs to it, not to the previous answer.
    Attempt(u32),
    /// The model asked for a tool call (`name`, arguments as compact JSON).
    ToolCall {
        /// The tool's name, as offered to the model.
        name: &'a str,
        /// The arguments, as compact JSON.
        arguments: &'a str,
    },
    /// A tool call finished (`ok: false`: its error was reported to the model).
    ToolResult {
        /// The tool's name, as offered to the model.
        name: &'a str,
        /// False when the tool call failed.
        ok: bool,
    },
}

/// Receives pieces of text as a model generates them (see [`SkillCall::deltas`]), and the start of each
/// further attempt. Cheap to clone; must not block (it is called on the task reading the provider's stream).
#[derive(Clone)]
pub struct DeltaSink(Arc<dyn Fn(Delta<'_>) + Send + Sync>);

impl DeltaSink {
    /// A sink of text pieces only (attempt marks and tool calls are dropped).
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        DeltaSink(Arc::new(move |d| {
            if let Delta::Text(t) = d {
                f(t)
            }
        }))
    }

    /// A sink of every [`Delta`].
    pub fn with_events(f: impl Fn(Delta<'_>) + Send + Sync + 'static) -> Self {
        DeltaSink(Arc::new(f))
    }

    /// Passes on a non-empty piece.
    pub fn send(&self, delta: &str) {
        if !delta.is_empty() {
            (self.0)(Delta::Text(delta));
        }
    }

    /// Marks the start of attempt `attempt` (≥ 2) of the same call.
    pub fn attempt(&self, attempt: u32) {
        (self.0)(Delta::Attempt(attempt));
    }

    /// Passes on any [`Delta`].
    pub fn event(&self, delta: Delta<'_>) {
        (self.0)(delta);
    }
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeltaSink")
    }
}

/// Two sinks are equal when they are the same sink.
impl PartialEq for DeltaSink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What a skill returns.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SkillOutput {
    /// The value the call produced.
    pub output: Value,
    /// Context writes requested by the skill (e.g. `context_set`), applied with the step's other updates.
    pub context_ops: Vec<PatchOp>,
    /// Tokens the call used (model calls; zero for most other skills).
    pub tokens: TokenUsage,
    /// What the call cost, in USD (model calls; zero for most other skills).
    pub cost_usd: f64,
    /// Facts about the call recorded in the step's metadata (a model's `finish_reason`, `warnings`, …).
    pub metadata: serde_json::Map<String, Value>,
}

impl SkillOutput {
    /// An output of `output` alone: no context writes, no usage, no metadata.
    pub fn value(output: Value) -> Self {
        SkillOutput { output, ..Default::default() }
    }

    /// Adds the usage the call consumed (tokens and cost in USD).
    pub fn with_usage(mut self, tokens: TokenUsage, cost_usd: f64) -> Self {
        self.tokens = tokens;
        self.cost_usd = cost_usd;
        self
    }

    /// Adds context writes, applied with the step's other updates.
    pub fn with_context_ops(mut self, ops: Vec<PatchOp>) -> Self {
        self.context_ops = ops;
        self
    }

    /// Adds facts for the step's metadata.
    pub fn with_metadata(mut self, metadata: serde_json::Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A skill failure (a step failure; retried per the step's config).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SkillError {
    /// What went wrong; it becomes the step's failure feedback.
    pub message: String,
    /// When false, retrying cannot help (e.g. bad input, or the call's own retries were used up); the engine
    /// skips remaining attempts.
    pub retryable: bool,
    /// What the failed call consumed anyway (billed requests before it failed); the quota and the step's
    /// figures are reconciled to it.
    pub tokens: TokenUsage,
    /// What the failed call cost anyway, in USD (see `tokens`).
    pub cost_usd: f64,
    /// The earliest time a retry may be made (a provider's `Retry-After`): a step-level retry waits at least
    /// this long.
    pub retry_after: Option<std::time::Duration>,
    /// Facts about the failed call for the step's metadata (e.g. a model's `finish_reason`); boxed to keep
    /// the error small.
    pub metadata: Box<serde_json::Map<String, Value>>,
    /// The provider failed (unreachable, 5xx or 429 after its retries, timeout, refused key, unknown model),
    /// as opposed to an answer that was wrong: the next model of a fallback chain ([`Skill::fallbacks`]) is
    /// tried.
    pub provider_failure: bool,
}

impl SkillError {
    /// A retryable failure with `message`, no usage and no metadata.
    pub fn new(message: impl Into<String>) -> Self {
        SkillError {
            message: message.into(),
            retryable: true,
            tokens: TokenUsage::default(),
            cost_usd: 0.0,
            retry_after: None,
            metadata: Box::default(),
            provider_failure: false,
        }
    }
    /// A failure that retrying cannot help (`retryable: false`), with `message` and no usage.
    pub fn fatal(message: impl Into<String>) -> Self {
        SkillError { retryable: false, ..SkillError::new(message) }
    }
    /// The usage the failed call consumed.
    pub fn with_usage(mut self, tokens: TokenUsage, cost_usd: f64) -> Self {
        self.tokens = tokens;
        self.cost_usd = cost_usd;
        self
    }
}

/// A callable skill instance (params already bound).
#[async_trait]
pub trait Skill: Send + Sync {
    /// Makes one call. An `Err` fails this attempt; a `step` tries again (per its `max_retries`) only when
    /// [`SkillError::retryable`] is true.
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError>;
    /// Descriptive facts about the skill: id, description, schemas, side effects.
    fn info(&self) -> SkillInfo;

    /// Checks made before any call (and before reserving budget): a typed control-flow interrupt that must stop
    /// the run instead of failing the step — e.g. a model without a price under strict pricing
    /// (`Interrupt::PricingNotConfigured`, SPEC §8). Never retried, never turned into a step failure.
    fn preflight(&self) -> Result<(), crate::error::Interrupt> {
        Ok(())
    }

    /// An upper bound of what one [`Skill::call`] with `input` may spend (cost and tokens), or `None` when the
    /// skill cannot say (most non-model skills). The engine reserves it from the run's quota before the call and
    /// reconciles to the reported usage afterwards (Reserve → Execute → Reconcile, SPEC §8); a reservation that
    /// does not fit refuses the call. Model agents return `(estimated prompt tokens + max_tokens) × price`.
    fn estimate(&self, input: &Value) -> Option<Usage> {
        let _ = input;
        None
    }

    /// The skills to call in order when a call of this one fails with [`SkillError::provider_failure`] — a
    /// model fallback chain (`model: [openai:gpt-4o, anthropic:claude-sonnet-4-5]`). The engine makes each
    /// call like the first: pre-flight checks, a reservation of the candidate's own estimate, the call,
    /// reconciliation; the answer's metadata names the model that answered. Empty by default.
    fn fallbacks(&self) -> Vec<std::sync::Arc<dyn Skill>> {
        Vec::new()
    }
}

/// Resolution failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    /// No skill with this id is registered.
    #[error("unknown skill '{id}'{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    Unknown {
        /// The id asked for.
        id: String,
        /// The closest registered id, when one is close enough to be a likely typo.
        suggestion: Option<String>,
    },
    /// The skill (or model) exists but cannot be set up with the given params or settings: a missing or
    /// mistyped param, an expression that does not compile, an unusable provider configuration.
    #[error("invalid params for skill '{id}': {message}")]
    BadParams {
        /// The skill id (or model id).
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A model id whose provider (or mock model) is not known; `message` says which are.
    #[error("unknown model '{id}': {message}{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    UnknownModel {
        /// The model id asked for (`provider:model`).
        id: String,
        /// Which providers (or mock models) are known.
        message: String,
        /// The closest known id, when one is close enough to be a likely typo.
        suggestion: Option<String>,
    },
    /// The id is a Python import path (`pkg.mod:fn`, or a dotted path close to none of the
    /// registered ids) from a blueprint of the Python original.
    #[error("'{id}' looks like a Python import path; Flujo (Rust) runs Python code as a `command` skill declared in skills.yaml")]
    PythonPath {
        /// The id as given.
        id: String,
    },
}

/// Maps skill ids (+ params) to instances. Resolution happens once, when a runner is built.
pub trait SkillRegistry: Send + Sync {
    /// The skill `id` with `params` bound (params are checked, expressions compiled).
    fn resolve(&self, id: &str, params: &Value) -> Result<Arc<dyn Skill>, ResolveError>;
    /// Facts about every registered skill.
    fn list(&self) -> Vec<SkillInfo>;
}

/// Resolves `provider:model` ids to callable agents (models behave like skills that report usage).
pub trait ModelRegistry: Send + Sync {
    /// The agent for `model` (`provider:model`) with `settings` (the agent's declaration: system
    /// prompt, output schema, model settings, …).
    fn resolve(&self, model: &str, settings: &Value) -> Result<Arc<dyn Skill>, ResolveError>;

    /// A skill for one turn of a tool-using conversation (the planner of an `agentic_loop`): input
    /// `{"messages": [{role, content, tool_calls?, tool_call_id?}], "tools": [{id, description, input_schema}]}`,
    /// output `{"content": string|null, "tool_calls": [{id, name: SKILL_ID, arguments}]}`.
    fn resolve_turn(&self, model: &str, _settings: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        Err(ResolveError::BadParams {
            id: model.to_owned(),
            message: "this model registry cannot drive an agentic loop".into(),
        })
    }
}
