//! Model agents: an [`AgentSpec`] (what a blueprint's `agents:` entry declares) bound to a [`ChatModel`] and a
//! price, as an [`LlmAgent`] that implements [`flujo_core::Skill`]. A call sends the system prompt (rendered
//! with its `variables`, the run context and `previous_step` = the input) and the step input as the user
//! message (JSON inputs serialized), returns the answer — the validated JSON value when an `output_schema` is
//! declared (see [`crate::structured`]), else the text — with its token usage and cost.
//!
//! Pricing is checked *before* any request: [`LlmAgent::check_pricing`] (call it when the runner is built)
//! returns the typed [`PricingError::NotConfigured`], which the engine raises as
//! `Interrupt::PricingNotConfigured`; a call that gets this far anyway fails without sending anything.
//! [`flujo_core::Skill::estimate`] gives the quota reservation of a call (Reserve → Execute → Reconcile).

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{ContextSnapshot, DeltaSink, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, TokenUsage, Usage};
use flujo_template::{compile_template, is_template, CompiledTemplate, Scope, UndefinedMode};
use serde_json::{json, Map, Value};

use crate::chat::{ChatMessage, ChatModel, ChatSettings, ReasoningEffort, ReasoningSettings, TokenLimitParam};
use crate::error::LlmError;
use crate::media::{parts_from_input, ContentPart};
use crate::mock::MockKind;
use crate::pricing::{Price, PricingError};
use crate::structured::{chat_structured_accounted, error_requests, StructuredOutput};
use crate::tools::{tool_name_for, ToolChoice};

/// Re-asks of a schema-violating reply when the agent does not set `max_retries` (as a step's default).
pub const DEFAULT_AGENT_MAX_RETRIES: u32 = 1;

/// Sampling settings (`model_settings:`); keys other than these are passed to the provider as written.
/// `max_tokens` is sent under the name the model needs (`max_completion_tokens` for OpenAI o-series and
/// gpt-5 models); writing `max_completion_tokens` instead sends that name whatever the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSettings {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
    /// Set when `model_settings` chose the parameter name explicitly.
    pub token_limit_param: Option<TokenLimitParam>,
    /// `reasoning_effort` and `thinking_budget` (or Anthropic's `thinking: {budget_tokens}`).
    pub reasoning: ReasoningSettings,
    /// `cache_prompt: true`: the system prompt and tools are marked cacheable (Anthropic, Bedrock).
    pub cache_prompt: bool,
    /// `tool_choice`: `auto`, `none`, `required` or `{tool: SKILL_ID}`; in a tool loop `required` and a
    /// named tool apply to the first turn (later turns are `auto`, so the model can answer).
    pub tool_choice: Option<ToolChoice>,
    /// `parallel_tool_calls: false` asks for one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    pub extra: Map<String, Value>,
}

/// The `model_settings` keys Flujo reads itself (every other key goes to the provider as written).
pub const MODEL_SETTINGS_KEYS: [&str; 11] = [
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "token_limit_param",
    "reasoning_effort",
    "thinking_budget",
    "thinking",
    "cache_prompt",
    "tool_choice",
    "parallel_tool_calls",
];

/// A model agent's declaration (mirrors `flujo_blueprint::AgentDecl`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSpec {
    /// `provider:model` (the first of a fallback chain).
    pub model: String,
    /// The rest of a fallback chain (`model: [a, b, c]` → `[b, c]`), tried in order when the model before
    /// fails at the provider.
    pub fallback_models: Vec<String>,
    pub system_prompt: Option<String>,
    /// Names the system prompt template may use (`system_prompt: {from_file, variables}`).
    pub system_prompt_variables: Map<String, Value>,
    pub output_schema: Option<Value>,
    pub model_settings: ModelSettings,
    /// Per-request timeout (`timeout:`), seconds.
    pub timeout_s: Option<f64>,
    /// Re-asks of a reply that violates `output_schema`.
    pub max_retries: Option<u32>,
    /// Skill ids offered as tools (by the engine's agentic loop; a plain step call offers none).
    pub tools: Vec<String>,
}

fn bad(what: &str, expected: &str) -> LlmError {
    LlmError::Config(format!("`{what}` must be {expected}"))
}

fn opt_f64(v: Option<&Value>, what: &str) -> Result<Option<f64>, LlmError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Some)
            .ok_or_else(|| bad(what, "a non-negative number")),
    }
}

fn opt_u64(v: Option<&Value>, what: &str) -> Result<Option<u64>, LlmError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| bad(what, "a non-negative integer")),
    }
}

impl AgentSpec {
    pub fn new(model: impl Into<String>) -> Self {
        AgentSpec { model: model.into(), ..Default::default() }
    }

    /// Reads the settings the model registry receives (the `agents:` declaration as written, with a
    /// `from_file` prompt replaced by its text). Keys it does not know are left to the blueprint loader, which
    /// reports them.
    pub fn from_settings(model: &str, settings: &Value) -> Result<Self, LlmError> {
        let mut spec = AgentSpec::new(model);
        let obj = match settings {
            Value::Null => return Ok(spec),
            Value::Object(o) => o,
            _ => return Err(LlmError::Config("agent settings must be an object".into())),
        };
        if let Some(Value::Array(chain)) = obj.get("model") {
            let ids: Vec<String> = chain
                .iter()
                .map(|m| m.as_str().map(str::to_owned).ok_or_else(|| bad("model", "a model id or a list of model ids")))
                .collect::<Result<_, _>>()?;
            match ids.split_first() {
                Some((first, rest)) if first == model => spec.fallback_models = rest.to_vec(),
                Some((first, rest)) => {
                    spec.model = first.clone();
                    spec.fallback_models = rest.to_vec();
                }
                None => return Err(bad("model", "a model id or a non-empty list of model ids")),
            }
        }
        spec.system_prompt = match obj.get("system_prompt") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) if o.contains_key("from_file") => {
                return Err(LlmError::Config(
                    "`system_prompt.from_file` must be read by the blueprint loader before the model is resolved"
                        .into(),
                ))
            }
            Some(_) => return Err(bad("system_prompt", "a string")),
        };
        spec.system_prompt_variables = match obj.get("system_prompt_variables") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(bad("system_prompt_variables", "an object")),
        };
        spec.output_schema = match obj.get("output_schema") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::Object(_) | Value::Bool(_))) => Some(v.clone()),
            Some(_) => return Err(bad("output_schema", "a JSON Schema object")),
        };
        match obj.get("model_settings") {
            None | Some(Value::Null) => {}
            Some(Value::Object(ms)) => {
                let s = &mut spec.model_settings;
                s.temperature = opt_f64(ms.get("temperature"), "model_settings.temperature")?;
                s.top_p = opt_f64(ms.get("top_p"), "model_settings.top_p")?;
                s.max_tokens = opt_u64(ms.get("max_tokens"), "model_settings.max_tokens")?;
                if let Some(n) = opt_u64(ms.get("max_completion_tokens"), "model_settings.max_completion_tokens")? {
                    if s.max_tokens.is_some() {
                        return Err(LlmError::Config(
                            "`model_settings` sets both `max_tokens` and `max_completion_tokens`; set one".into(),
                        ));
                    }
                    s.max_tokens = Some(n);
                    s.token_limit_param = Some(TokenLimitParam::MaxCompletionTokens);
                }
                if let Some(v) = ms.get("token_limit_param") {
                    s.token_limit_param = Some(match v.as_str() {
                        Some("max_tokens") => TokenLimitParam::MaxTokens,
                        Some("max_completion_tokens") => TokenLimitParam::MaxCompletionTokens,
                        _ => {
                            return Err(bad(
                                "model_settings.token_limit_param",
                                "\"max_tokens\" or \"max_completion_tokens\"",
                            ))
                        }
                    });
                }
                read_reasoning_and_tools(ms, s)?;
                s.extra = ms
                    .iter()
                    .filter(|(k, _)| !MODEL_SETTINGS_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
            }
            Some(_) => return Err(bad("model_settings", "an object")),
        }
        spec.timeout_s = match opt_f64(obj.get("timeout"), "timeout")? {
            Some(t) => Some(t),
            None => opt_f64(obj.get("timeout_s"), "timeout_s")?,
        };
        spec.max_retries = opt_u64(obj.get("max_retries"), "max_retries")?
            .map(|n| u32::try_from(n).map_err(|_| bad("max_retries", "at most 4294967295")))
            .transpose()?;
        spec.tools = match obj.get("tools") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| t.as_str().map(str::to_owned).ok_or_else(|| bad("tools", "a list of skill ids")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("tools", "a list of skill ids")),
        };
        Ok(spec)
    }

    /// Re-asks allowed for structured output.
    pub fn max_retries(&self) -> u32 {
        self.max_retries.unwrap_or(DEFAULT_AGENT_MAX_RETRIES)
    }

    /// The per-call settings this agent sends.
    pub fn chat_settings(&self) -> ChatSettings {
        ChatSettings {
            temperature: self.model_settings.temperature,
            top_p: self.model_settings.top_p,
            max_tokens: self.model_settings.max_tokens,
            token_limit_param: self.model_settings.token_limit_param,
            timeout: self.timeout_s.and_then(|t| flujo_core::limits::duration_from_secs(t).ok()),
            extra: self.model_settings.extra.clone(),
            reasoning: self.model_settings.reasoning,
            cache_prompt: self.model_settings.cache_prompt,
            tool_choice: self.model_settings.tool_choice.clone().unwrap_or_default(),
            parallel_tool_calls: self.model_settings.parallel_tool_calls,
            ..Default::default()
        }
    }

    /// Every model of the chain, the first one first.
    pub fn chain(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.model.as_str()).chain(self.fallback_models.iter().map(String::as_str))
    }
}

/// Reads the reasoning, caching and tool keys of `model_settings` into `s`.
fn read_reasoning_and_tools(ms: &Map<String, Value>, s: &mut ModelSettings) -> Result<(), LlmError> {
    if let Some(v) = ms.get("reasoning_effort").filter(|v| !v.is_null()) {
        s.reasoning.effort = Some(v.as_str().and_then(ReasoningEffort::parse).ok_or_else(|| {
            bad("model_settings.reasoning_effort", "one of \"minimal\", \"low\", \"medium\", \"high\"")
        })?);
    }
    let budget = opt_u64(ms.get("thinking_budget"), "model_settings.thinking_budget")?;
    let anthropic_form = match ms.get("thinking") {
        None | Some(Value::Null) => None,
        // Anthropic's own shape: `thinking: {type: enabled, budget_tokens: N}` (`type: disabled` turns it off).
        Some(Value::Object(t)) if t.get("type").and_then(Value::as_str) == Some("disabled") => None,
        Some(Value::Object(t)) => Some(
            opt_u64(t.get("budget_tokens"), "model_settings.thinking.budget_tokens")?
                .ok_or_else(|| bad("model_settings.thinking", "`{type: enabled, budget_tokens: N}`"))?,
        ),
        Some(_) => return Err(bad("model_settings.thinking", "`{type: enabled, budget_tokens: N}`")),
    };
    if budget.is_some() && anthropic_form.is_some() {
        return Err(LlmError::Config("`model_settings` sets both `thinking_budget` and `thinking`; set one".into()));
    }
    s.reasoning.budget_tokens = budget.or(anthropic_form);
    if let (Some(b), Some(max)) = (s.reasoning.budget_tokens, s.max_tokens) {
        if b >= max {
            return Err(LlmError::Config(format!(
                "`model_settings` thinking budget ({b}) must be below `max_tokens` ({max}): the thinking is part of \
                 the completion"
            )));
        }
    }
    s.cache_prompt = match ms.get("cache_prompt") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("model_settings.cache_prompt", "true or false")),
    };
    s.parallel_tool_calls = match ms.get("parallel_tool_calls") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad("model_settings.parallel_tool_calls", "true or false")),
    };
    s.tool_choice = match ms.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(match c.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            _ => {
                return Err(bad("model_settings.tool_choice", "\"auto\", \"none\", \"required\" or `{tool: SKILL_ID}`"))
            }
        }),
        Some(Value::Object(o)) if o.len() == 1 => match o.get("tool").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Some(ToolChoice::Tool(tool_name_for(id))),
            _ => {
                return Err(bad("model_settings.tool_choice", "\"auto\", \"none\", \"required\" or `{tool: SKILL_ID}`"))
            }
        },
        Some(_) => {
            return Err(bad("model_settings.tool_choice", "\"auto\", \"none\", \"required\" or `{tool: SKILL_ID}`"))
        }
    };
    Ok(())
}

/// The user message of a step input: parts (text, images, documents) for a `{parts: […]}` input (see
/// [`crate::media`]), else [`render_input`].
pub fn user_message(input: &Value) -> Result<ChatMessage, LlmError> {
    Ok(match parts_from_input(input)? {
        Some(parts) => ChatMessage::user_parts(parts),
        None => ChatMessage::user(render_input(input)),
    })
}

/// Prompt tokens assumed for an image or a document in the quota reservation (the providers bill an image
/// about 1,100–1,600 tokens at the usual sizes; a document a few thousand per page).
const IMAGE_PART_TOKENS: u64 = 1_600;
const DOCUMENT_PART_TOKENS: u64 = 8_000;

/// The user message for a step input: strings as they are, other JSON serialized.
pub fn render_input(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

enum Backend {
    /// `mock:echo`: the input is the output (in a conversation, the model echoes the last user message).
    Echo(Arc<dyn ChatModel>),
    Chat(Arc<dyn ChatModel>),
}

enum Prompt {
    Text(String),
    Template(CompiledTemplate),
}

/// What [`LlmAgent::run`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentAnswer {
    pub output: Value,
    pub usage: TokenUsage,
    pub cost_usd: f64,
    /// Model calls made (structured output re-asks included).
    pub calls: u32,
    /// The provider's stop reason of the answer (`stop`, `length`, `end_turn`, `max_tokens`, …).
    pub finish_reason: Option<String>,
    /// Things the caller should know although the call succeeded (a text answer cut off at `max_tokens`).
    pub warnings: Vec<String>,
    /// The provider's id of the (last) reply.
    pub request_id: Option<String>,
    /// The model as the provider named it in the reply.
    pub response_model: Option<String>,
}

/// A failed agent call with what it consumed: every call is reconciled to the usage the provider reported,
/// including failed ones (0 when nothing was billed).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentFailure {
    pub error: LlmError,
    pub usage: TokenUsage,
    pub cost_usd: f64,
    /// HTTP requests sent (retries included; 0 when the call was refused before sending anything).
    pub requests: u32,
    pub finish_reason: Option<String>,
}

impl AgentFailure {
    fn before_sending(error: LlmError) -> Self {
        AgentFailure { error, usage: TokenUsage::default(), cost_usd: 0.0, requests: 0, finish_reason: None }
    }

    /// A failed request that billed nothing (the transport error names how many requests were sent).
    pub fn before_sending_with_requests(error: LlmError) -> Self {
        AgentFailure { requests: error_requests(&error), ..AgentFailure::before_sending(error) }
    }

    /// The skill error: the message, whether a step-level retry may help, the provider's `Retry-After`, the
    /// usage and the finish reason.
    pub fn into_skill_error(self) -> SkillError {
        // The message names the failing request's attempts; when earlier requests of the call (answers that
        // were re-asked) came before it, say how many were sent in all.
        let counted = match &self.error {
            LlmError::SchemaViolation { attempts, .. } => *attempts,
            other => error_requests(other),
        };
        let extra = self.requests.checked_sub(counted).filter(|n| *n > 0).map(|_| self.requests);
        let mut e = SkillError::from(self.error).with_usage(self.usage, self.cost_usd);
        if let Some(total) = extra {
            e.message.push_str(&format!(" ({total} requests in this call)"));
        }
        if let Some(r) = self.finish_reason {
            e.metadata.insert("finish_reason".into(), Value::String(r));
        }
        e
    }
}

/// A model agent, callable as a skill.
pub struct LlmAgent {
    spec: AgentSpec,
    provider: String,
    backend: Backend,
    pricing: Result<Option<Price>, PricingError>,
    output: Option<StructuredOutput>,
    prompt: Option<Prompt>,
    /// The rest of a fallback chain, resolved (see [`AgentSpec::fallback_models`]).
    fallbacks: Vec<Arc<LlmAgent>>,
}

impl std::fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmAgent").field("spec", &self.spec).field("pricing", &self.pricing).finish_non_exhaustive()
    }
}

/// Message overhead per call in the prompt estimate (role markers, formatting).
const PROMPT_OVERHEAD_TOKENS: u64 = 16;
/// Tokens allowed per re-ask for the validation error message.
const REASK_OVERHEAD_TOKENS: u64 = 256;

impl LlmAgent {
    /// Binds `spec` to `model` with its pricing lookup (`pricing` is the result of
    /// [`crate::PricingTable::price`] for the model). Fails on an invalid `output_schema` or prompt template.
    pub fn new(
        spec: AgentSpec,
        model: Arc<dyn ChatModel>,
        pricing: Result<Option<Price>, PricingError>,
    ) -> Result<Self, LlmError> {
        let provider = model.provider().to_owned();
        let mock = (provider == crate::pricing::MOCK_PROVIDER).then(|| MockKind::from_model(model.model())).flatten();
        let backend = if mock == Some(MockKind::Echo) { Backend::Echo(model) } else { Backend::Chat(model) };
        let output = match (&spec.output_schema, mock) {
            (Some(schema), _) => Some(StructuredOutput::new(schema.clone())?),
            // `mock:json` without a schema still answers JSON (`{}`), not text.
            (None, Some(MockKind::Json)) => Some(StructuredOutput::new(json!({}))?),
            (None, _) => None,
        };
        let prompt = match &spec.system_prompt {
            None => None,
            Some(p) if is_template(p) => Some(Prompt::Template(
                compile_template(p).map_err(|e| LlmError::Config(format!("system_prompt: {e}")))?,
            )),
            Some(p) => Some(Prompt::Text(p.clone())),
        };
        Ok(LlmAgent { spec, provider, backend, pricing, output, prompt, fallbacks: Vec::new() })
    }

    /// This agent as the head of a fallback chain: `fallbacks` are tried in order when a call fails at the
    /// provider (see [`Skill::fallbacks`]).
    pub fn with_fallbacks(mut self, fallbacks: Vec<Arc<LlmAgent>>) -> Self {
        self.fallbacks = fallbacks;
        self
    }

    /// The resolved rest of the fallback chain.
    pub fn fallback_agents(&self) -> &[Arc<LlmAgent>] {
        &self.fallbacks
    }

    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    /// The model, for engines driving an agentic loop (`mock:echo` answers with the last user message and
    /// never calls a tool).
    pub fn chat_model(&self) -> Option<&Arc<dyn ChatModel>> {
        match &self.backend {
            Backend::Echo(m) | Backend::Chat(m) => Some(m),
        }
    }

    /// The compiled output schema, if any.
    pub fn output(&self) -> Option<&StructuredOutput> {
        self.output.as_ref()
    }

    /// `Err(PricingError::NotConfigured)` when pricing is strict and this model has no price. Call it when the
    /// runner is built (and before each call): the engine raises it as `Interrupt::PricingNotConfigured`.
    pub fn check_pricing(&self) -> Result<(), PricingError> {
        self.pricing.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// The model's price (`None`: unknown, lenient mode).
    pub fn price(&self) -> Result<Option<Price>, PricingError> {
        self.pricing.clone()
    }

    /// The opening messages of a call: the rendered system prompt and the input as the user message.
    pub fn messages(
        &self,
        input: &Value,
        context: Option<&ContextSnapshot>,
        this: Option<&Value>,
    ) -> Result<Vec<ChatMessage>, LlmError> {
        let mut out = Vec::with_capacity(2);
        if let Some(text) = self.system_prompt(input, context, this)? {
            out.push(ChatMessage::system(text));
        }
        out.push(user_message(input)?);
        Ok(out)
    }

    /// The system prompt for a call with `input`: rendered with its `variables`, the context (with
    /// `resume_input`), `previous_step` = `input` and, inside a map body, `this` when it is a template —
    /// the names every template of the step sees (SPEC §5).
    pub fn system_prompt(
        &self,
        input: &Value,
        context: Option<&ContextSnapshot>,
        this: Option<&Value>,
    ) -> Result<Option<String>, LlmError> {
        Ok(match &self.prompt {
            None => None,
            Some(Prompt::Text(t)) => Some(t.clone()),
            Some(Prompt::Template(t)) => {
                let vars: Vec<(&str, &Value)> =
                    self.spec.system_prompt_variables.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let mut scope = Scope::new(input).with_extra(&vars);
                if let Some(c) = context {
                    scope = scope.with_context(c);
                    scope.resume_input = c.resume_input();
                }
                scope.this = this;
                let text = t
                    .render(&scope, UndefinedMode::Lenient)
                    .map_err(|e| LlmError::Config(format!("system_prompt: {e}")))?;
                Some(text)
            }
        })
    }

    /// One call with typed errors (what [`Skill::call`] wraps): pricing is checked first, then the model is
    /// asked (with re-asks for structured output).
    pub async fn run(&self, input: &Value, context: Option<&ContextSnapshot>) -> Result<AgentAnswer, LlmError> {
        self.run_streaming(input, context, None).await
    }

    /// [`LlmAgent::run`], streaming the answer's text to `deltas` as it is generated.
    pub async fn run_streaming(
        &self,
        input: &Value,
        context: Option<&ContextSnapshot>,
        deltas: Option<DeltaSink>,
    ) -> Result<AgentAnswer, LlmError> {
        self.run_accounted(input, context, None, deltas).await.map_err(|f| f.error)
    }

    /// `Err` when a call of this agent cannot succeed whatever its input: strict pricing without a price, or
    /// a provider that needs a key and has none. Nothing is sent.
    pub fn check_ready(&self) -> Result<(), LlmError> {
        self.check_pricing()?;
        for f in &self.fallbacks {
            f.check_pricing()?;
        }
        let own = match &self.backend {
            Backend::Echo(_) => Ok(()),
            Backend::Chat(m) => m.check_ready(),
        };
        // A chain can answer when one of its models can: a model without its key fails at the provider and
        // the next one is called.
        match own {
            Err(LlmError::MissingApiKey { .. }) if self.fallbacks.iter().any(|f| f.check_ready().is_ok()) => Ok(()),
            other => other,
        }
    }

    /// [`LlmAgent::run_streaming`] keeping the usage of a failed call (billed re-asks, a refusal, …).
    /// A refusal is an error ([`LlmError::Refused`]); so is a structured answer cut off at `max_tokens`
    /// ([`LlmError::Truncated`]); a text answer cut off there succeeds with a warning.
    pub async fn run_accounted(
        &self,
        input: &Value,
        context: Option<&ContextSnapshot>,
        this: Option<&Value>,
        deltas: Option<DeltaSink>,
    ) -> Result<AgentAnswer, AgentFailure> {
        let model = match &self.backend {
            Backend::Echo(_) => {
                if let Some(sink) = &deltas {
                    sink.send(&render_input(input));
                }
                return Ok(AgentAnswer {
                    output: input.clone(),
                    usage: TokenUsage::default(),
                    cost_usd: 0.0,
                    calls: 0,
                    finish_reason: None,
                    warnings: Vec::new(),
                    request_id: None,
                    response_model: None,
                });
            }
            Backend::Chat(m) => m,
        };
        let price = self.pricing.clone().map_err(|e| AgentFailure::before_sending(e.into()))?;
        let cost = |usage: TokenUsage| price.map_or(0.0, |p| p.cost(usage));
        let messages = self.messages(input, context, this).map_err(AgentFailure::before_sending)?;
        let mut settings = self.spec.chat_settings();
        settings.stream = deltas;
        let mut warnings = Vec::new();
        let (output, usage, calls, finish_reason, ids) = match &self.output {
            Some(schema) => {
                let r = chat_structured_accounted(model.as_ref(), messages, &settings, schema, self.spec.max_retries())
                    .await
                    .map_err(|f| AgentFailure {
                        cost_usd: cost(f.usage),
                        error: f.error,
                        usage: f.usage,
                        requests: f.requests,
                        finish_reason: f.finish_reason,
                    })?;
                (r.value, r.usage, r.attempts, r.finish_reason, (r.request_id, r.response_model))
            }
            None => {
                let r = crate::chat::traced_chat(model.as_ref(), &messages, &[], &settings)
                    .await
                    .map_err(AgentFailure::before_sending_with_requests)?;
                if let Some(message) = r.refusal.clone() {
                    return Err(AgentFailure {
                        error: LlmError::Refused { provider: self.provider.clone(), message, usage: r.usage },
                        usage: r.usage,
                        cost_usd: cost(r.usage),
                        requests: r.requests.max(1),
                        finish_reason: r.stop_reason,
                    });
                }
                if r.truncated() {
                    warnings.push(format!(
                        "the answer was cut off at max_tokens ({}); raise `model_settings.max_tokens` for a complete answer",
                        settings.effective_max_tokens()
                    ));
                }
                (
                    Value::String(r.content.unwrap_or_default()),
                    r.usage,
                    1,
                    r.stop_reason,
                    (r.request_id, r.response_model),
                )
            }
        };
        let (request_id, response_model) = ids;
        Ok(AgentAnswer {
            output,
            usage,
            cost_usd: cost(usage),
            calls,
            finish_reason,
            warnings,
            request_id,
            response_model,
        })
    }

    /// The planned usage of one call with `input`: per attempt, the prompt estimated at 4 characters per token
    /// (system prompt, input, schema, overhead; each re-ask adds the previous answer and the error) plus
    /// `max_tokens` of completion; all `1 + max_retries` attempts when an output schema may cause re-asks.
    pub fn planned_usage(&self, input: &Value) -> TokenUsage {
        if matches!(self.backend, Backend::Echo(_)) {
            return TokenUsage::default();
        }
        let (input_chars, media_tokens) = match parts_from_input(input) {
            Ok(Some(parts)) => parts.iter().fold((0usize, 0u64), |(c, t), p| match p {
                ContentPart::Text { text } => (c + text.len(), t),
                ContentPart::Image { .. } => (c, t + IMAGE_PART_TOKENS),
                ContentPart::Document { .. } => (c, t + DOCUMENT_PART_TOKENS),
            }),
            _ => (render_input(input).len(), 0),
        };
        let chars = self.spec.system_prompt.as_ref().map_or(0, String::len)
            + input_chars
            + self.output.as_ref().map_or(0, |o| o.schema().to_string().len());
        let prompt = (chars as u64).div_ceil(4) + media_tokens + PROMPT_OVERHEAD_TOKENS;
        let max_tokens = self.spec.chat_settings().effective_max_tokens();
        let attempts = if self.output.is_some() { u64::from(self.spec.max_retries()) + 1 } else { 1 };
        let mut usage = TokenUsage::default();
        for k in 0..attempts {
            let reasks = k.saturating_mul(max_tokens.saturating_add(REASK_OVERHEAD_TOKENS));
            usage.prompt = usage.prompt.saturating_add(prompt.saturating_add(reasks));
            usage.completion = usage.completion.saturating_add(max_tokens);
        }
        usage
    }
}

#[async_trait]
impl Skill for LlmAgent {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let answer = self
            .run_accounted(&call.input, Some(&call.context), call.this.as_deref(), call.deltas)
            .await
            .map_err(AgentFailure::into_skill_error)?;
        let mut metadata = answer_metadata(answer.finish_reason, answer.warnings);
        // More than one request: the structured output was repaired (`dev health-check` counts them).
        if answer.calls > 1 {
            metadata.insert("model_requests".into(), answer.calls.into());
        }
        if answer.calls > 0 {
            insert_reply_ids(&mut metadata, &self.spec.model, answer.request_id, answer.response_model);
        }
        Ok(SkillOutput::value(answer.output).with_usage(answer.usage, answer.cost_usd).with_metadata(metadata))
    }

    fn info(&self) -> SkillInfo {
        {
            let mut info = SkillInfo::default();
            info.id = self.spec.model.clone();
            info.description = format!("model agent {} ({})", self.spec.model, self.provider);
            info.input_schema = None;
            info.output_schema = self.spec.output_schema.clone();
            info.side_effects = false;
            info
        }
    }

    /// Strict pricing without a price is `Interrupt::PricingNotConfigured`; a provider that needs a key and
    /// has none is `Interrupt::MissingApiKey` naming the variable to set (both stop the run before anything runs).
    fn preflight(&self) -> Result<(), flujo_core::Interrupt> {
        match self.check_ready() {
            Ok(()) => Ok(()),
            Err(LlmError::Pricing(e)) => match e.to_interrupt() {
                Some(interrupt) => Err(interrupt),
                // An invalid price entry is a configuration problem reported by the call itself.
                None => Ok(()),
            },
            Err(e @ LlmError::MissingApiKey { .. }) => Err(flujo_core::Interrupt::MissingApiKey {
                model: self.spec.model.clone(),
                message: format!("model '{}': {e}", self.spec.model),
            }),
            Err(_) => Ok(()),
        }
    }

    /// `(estimated prompt tokens + max_tokens) × price` over every possible attempt; cost 0 when the price is
    /// unknown (lenient mode) — and when pricing is strict and missing, since the call will not be made.
    fn estimate(&self, input: &Value) -> Option<Usage> {
        let usage = self.planned_usage(input);
        let cost_usd = match &self.pricing {
            Ok(Some(p)) => p.cost(usage),
            _ => 0.0,
        };
        Some(Usage { cost_usd, tokens: usage.total() })
    }

    fn fallbacks(&self) -> Vec<Arc<dyn Skill>> {
        self.fallbacks.iter().map(|f| f.clone() as Arc<dyn Skill>).collect()
    }
}

/// Step metadata naming the answer: `model` (the `provider:model` that answered, which in a fallback chain
/// may not be the first), `request_id` and `response_model` when the provider gave them.
pub(crate) fn insert_reply_ids(
    m: &mut Map<String, Value>,
    model: &str,
    request_id: Option<String>,
    response_model: Option<String>,
) {
    m.insert("model".into(), Value::String(model.to_owned()));
    if let Some(id) = request_id {
        m.insert("request_id".into(), Value::String(id));
    }
    if let Some(r) = response_model {
        m.insert("response_model".into(), Value::String(r));
    }
}

/// The step metadata of a model answer: `finish_reason` and `warnings` when there are any.
pub(crate) fn answer_metadata(finish_reason: Option<String>, warnings: Vec<String>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(r) = finish_reason {
        m.insert("finish_reason".into(), Value::String(r));
    }
    if !warnings.is_empty() {
        m.insert("warnings".into(), Value::Array(warnings.into_iter().map(Value::String).collect()));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockModel;

    #[test]
    fn reads_agent_declarations() {
        let spec = AgentSpec::from_settings(
            "openai:gpt-4o",
            &json!({"model": "openai:gpt-4o", "system_prompt": "Be {{ tone }}.", "system_prompt_variables": {"tone": "brief"},
                "output_schema": {"type": "object"}, "model_settings": {"temperature": 0.2, "max_tokens": 100, "seed": 1},
                "timeout": 30, "max_retries": 3, "tools": ["flujo.builtins.http_get"], "unknown": 1}),
        )
        .unwrap();
        assert_eq!(spec.model_settings.max_tokens, Some(100));
        assert_eq!(spec.model_settings.extra, json!({"seed": 1}).as_object().unwrap().clone());
        assert_eq!((spec.timeout_s, spec.max_retries()), (Some(30.0), 3));
        assert_eq!(spec.tools, vec!["flujo.builtins.http_get"]);
        assert_eq!(spec.chat_settings().timeout, Some(std::time::Duration::from_secs(30)));
        for bad in [
            json!({"tools": "x"}),
            json!({"model_settings": {"temperature": "hot"}}),
            json!({"max_retries": -1}),
            json!({"system_prompt": {"from_file": "p.md"}}),
            json!([1]),
        ] {
            assert!(AgentSpec::from_settings("m:x", &bad).is_err(), "{bad}");
        }
        assert_eq!(AgentSpec::from_settings("mock:echo", &Value::Null).unwrap(), AgentSpec::new("mock:echo"));
    }

    #[test]
    fn renders_prompt_template_and_input() {
        let mut spec = AgentSpec::new("mock:json");
        spec.system_prompt = Some("Be {{ tone }} about {{ previous_step.topic }}.".into());
        spec.system_prompt_variables.insert("tone".into(), json!("brief"));
        let agent = LlmAgent::new(spec, Arc::new(MockModel::new(MockKind::Json)), Ok(None)).unwrap();
        let msgs = agent.messages(&json!({"topic": "rust"}), None, None).unwrap();
        assert_eq!(msgs[0].content, "Be brief about rust.");
        assert_eq!(msgs[1].content, "{\"topic\":\"rust\"}");
    }

    #[test]
    fn the_prompt_template_sees_the_map_item_as_this() {
        let mut spec = AgentSpec::new("mock:json");
        spec.system_prompt = Some("Item {{ this.id }} of {{ previous_step }}.".into());
        let agent = LlmAgent::new(spec, Arc::new(MockModel::new(MockKind::Json)), Ok(None)).unwrap();
        let item = json!({"id": 7});
        let msgs = agent.messages(&json!("list"), None, Some(&item)).unwrap();
        assert_eq!(msgs[0].content, "Item 7 of list.");
    }

    #[test]
    fn estimate_is_prompt_plus_max_tokens_times_price() {
        let mut spec = AgentSpec::new("mock:json");
        spec.system_prompt = Some("x".repeat(40));
        spec.model_settings.max_tokens = Some(100);
        let price = Price::new(1.0, 2.0);
        let agent = LlmAgent::new(spec, Arc::new(MockModel::new(MockKind::Json)), Ok(Some(price))).unwrap();
        // mock:json always has a schema ({}: 2 chars) → 2 attempts by default.
        let input = json!("y".repeat(38));
        let prompt = (40u64 + 38 + 2).div_ceil(4) + PROMPT_OVERHEAD_TOKENS;
        let want = TokenUsage::new(prompt + prompt + 100 + REASK_OVERHEAD_TOKENS, 200);
        assert_eq!(agent.planned_usage(&input), want);
        let est = agent.estimate(&input).unwrap();
        assert_eq!(est.tokens, want.total());
        assert!((est.cost_usd - price.cost(want)).abs() < 1e-12);
        let echo =
            LlmAgent::new(AgentSpec::new("mock:echo"), Arc::new(MockModel::new(MockKind::Echo)), Ok(None)).unwrap();
        assert_eq!(echo.estimate(&input), Some(Usage::default()));
    }
}
