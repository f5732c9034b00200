//! The provider-neutral conversation model: [`ChatMessage`]s in, a [`ChatReply`] out, through the one
//! [`ChatModel`] trait every provider implements. The engine drives agentic loops with it: call
//! [`ChatModel::chat`] with the transcript and the offered tools, journal the reply, execute its
//! [`ToolCall`]s, append [`ChatReply::to_message`] and one [`ChatMessage::tool_result`] per call, repeat.
//! Messages and replies are serde types so each turn can be journaled as is.

use std::time::Duration;

use async_trait::async_trait;
use flujo_core::TokenUsage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::LlmError;
use crate::media::ContentPart;
use crate::tools::{ToolCall, ToolChoice, ToolSpec};

/// `max_tokens` sent when an agent does not set one. Always sending a bound keeps the quota reservation
/// (prompt estimate + `max_tokens`) an upper bound of the completion.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call (`tool_call_id` names the call).
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    /// Tool calls the assistant made in this message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For [`Role::Tool`]: the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For [`Role::Tool`]: the call failed and `content` is its error (Anthropic `is_error: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    /// For [`Role::User`]: the message as parts (text, images, documents), sent instead of `content`
    /// (which then holds the text parts, for logs and providers without media). Empty: `content` is the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ContentPart>,
    /// For [`Role::Assistant`]: the model's reasoning blocks, sent back as they came (Anthropic requires its
    /// signed `thinking` blocks before tool results in a tool loop with thinking on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<ReasoningBlock>,
}

/// A piece of a model's reasoning, as the provider returned it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasoningBlock {
    /// The reasoning text (or its summary), when the provider shows it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// The provider's signature of the block (Anthropic `signature`, Bedrock `reasoningText.signature`,
    /// Gemini `thoughtSignature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Encrypted reasoning the provider hides (Anthropic `redacted_thinking.data`, OpenAI Responses
    /// `encrypted_content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
}

impl ChatMessage {
    fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            is_error: false,
            parts: Vec::new(),
            reasoning: Vec::new(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage::new(Role::User, content)
    }
    /// A user message made of `parts` (text, images, documents); `content` holds its text parts.
    pub fn user_parts(parts: Vec<ContentPart>) -> Self {
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        ChatMessage { parts: parts.clone(), ..ChatMessage::new(Role::User, text.join("\n")) }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage::new(Role::Assistant, content)
    }
    /// An assistant message that called tools.
    pub fn assistant_tool_calls(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        ChatMessage { tool_calls, ..ChatMessage::new(Role::Assistant, content) }
    }
    /// The result of the tool call `call_id` (a JSON result is passed serialized).
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { tool_call_id: Some(call_id.into()), ..ChatMessage::new(Role::Tool, content) }
    }
    /// The error of the failed tool call `call_id`.
    pub fn tool_error(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { is_error: true, ..ChatMessage::tool_result(call_id, content) }
    }
}

/// Appends a turn of content blocks to a transcript being built for an API that wants the roles alternating
/// (Anthropic, Gemini, Bedrock): merged into the previous turn when it has the same role; nothing when empty.
pub(crate) fn push_turn(out: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match out.last_mut() {
        Some((last, prev)) if *last == role => prev.extend(blocks),
        _ => out.push((role, blocks)),
    }
}

/// A model's answer to one [`ChatModel::chat`] call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    /// The text of the answer (with a response schema: the JSON text of the structured answer). `None` when
    /// the model only called tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
    /// The provider's stop reason (`stop`, `length`, `tool_calls`, `end_turn`, `tool_use`, `max_tokens`,
    /// `refusal`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The model's refusal (OpenAI `message.refusal`; Anthropic's text when `stop_reason` is `refusal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// HTTP requests this reply took (retries of 429/5xx included; 0 when unknown).
    #[serde(default, skip)]
    pub requests: u32,
    /// The model's reasoning (thinking) blocks, when it returned any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<ReasoningBlock>,
    /// The provider's id of this answer (OpenAI `chatcmpl-…`/`resp_…`, Anthropic `msg_…`, Gemini
    /// `responseId`, Bedrock the `x-amzn-RequestId` header), for looking it up in the provider's console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The model that answered as the provider names it (`gpt-4o-2024-08-06`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_model: Option<String>,
}

impl ChatReply {
    /// True when the answer was cut off at the completion bound: OpenAI `finish_reason: length`, Anthropic
    /// and Bedrock `max_tokens`, Gemini `MAX_TOKENS`, Responses `max_output_tokens` (the
    /// `incomplete_details.reason` a provider module puts in `stop_reason`).
    pub fn truncated(&self) -> bool {
        matches!(self.stop_reason.as_deref(), Some("length" | "max_tokens" | "MAX_TOKENS" | "max_output_tokens"))
    }

    /// The assistant message to append to the transcript before sending tool results back.
    pub fn to_message(&self) -> ChatMessage {
        ChatMessage {
            reasoning: self.reasoning.clone(),
            ..ChatMessage::assistant_tool_calls(self.content.clone().unwrap_or_default(), self.tool_calls.clone())
        }
    }
}

/// A JSON Schema the answer must satisfy, sent in the provider's native form (OpenAI `response_format`,
/// Anthropic a forced tool).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSchema {
    /// `^[A-Za-z0-9_-]{1,64}$` (the schema's `title`, sanitized, or `output`).
    pub name: String,
    pub schema: Value,
    /// OpenAI strict mode; only set when the schema meets its rules (every object closed, every property
    /// required), since the API refuses strict mode otherwise.
    pub strict: bool,
}

impl ResponseSchema {
    pub fn new(schema: Value) -> Self {
        let name = schema.get("title").and_then(Value::as_str).map(sanitize_name).unwrap_or_else(|| "output".into());
        let strict = strict_compatible(&schema, 0);
        ResponseSchema { name, schema, strict }
    }
}

impl ResponseSchema {
    /// True when the schema describes an object (what both APIs require at the root).
    pub fn is_object(&self) -> bool {
        match self.schema.get("type") {
            Some(Value::String(t)) => t == "object",
            Some(_) => false,
            None => self.schema.get("properties").is_some(),
        }
    }

    /// The schema as sent: object schemas as they are, others wrapped as `{value: SCHEMA}` (both APIs want an
    /// object at the root); [`ResponseSchema::unwrap_answer`] undoes the wrapping.
    pub fn wire_schema(&self) -> Value {
        if self.is_object() {
            self.schema.clone()
        } else {
            serde_json::json!({"type": "object", "properties": {"value": self.schema}, "required": ["value"],
                "additionalProperties": false})
        }
    }

    /// The answer inside a wrapped reply (`{"value": X}` → `X`); other values are returned as they are.
    pub fn unwrap_answer(&self, answer: Value) -> Value {
        match answer {
            Value::Object(mut m) if !self.is_object() && m.len() == 1 && m.contains_key("value") => {
                m.remove("value").unwrap_or(Value::Null)
            }
            other => other,
        }
    }
}

/// Keeps `[A-Za-z0-9_-]`, replaces everything else by `_`, at most 64 characters (the OpenAI rule for
/// function and schema names).
pub fn sanitize_name(s: &str) -> String {
    let out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).take(64).collect();
    if out.is_empty() {
        "output".into()
    } else {
        out
    }
}

fn strict_compatible(schema: &Value, depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    let Some(obj) = schema.as_object() else {
        return false;
    };
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let closed = obj.get("additionalProperties") == Some(&Value::Bool(false));
        let required: Vec<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !closed || props.keys().any(|k| !required.contains(&k.as_str())) {
            return false;
        }
        if !props.values().all(|p| strict_compatible(p, depth + 1)) {
            return false;
        }
    } else if obj.get("type").and_then(Value::as_str) == Some("object") {
        return false;
    }
    if let Some(items) = obj.get("items") {
        if !strict_compatible(items, depth + 1) {
            return false;
        }
    }
    for key in ["anyOf", "$defs", "definitions"] {
        let subs: Vec<&Value> = match obj.get(key) {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(Value::Object(m)) => m.values().collect(),
            _ => continue,
        };
        if !subs.into_iter().all(|s| strict_compatible(s, depth + 1)) {
            return false;
        }
    }
    true
}

/// Under which name the completion bound is sent to a Chat Completions API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLimitParam {
    /// `max_tokens` (most models and every compatible server).
    MaxTokens,
    /// `max_completion_tokens` (OpenAI o-series and gpt-5 models refuse `max_tokens`).
    MaxCompletionTokens,
}

impl TokenLimitParam {
    /// The parameter a model needs: `max_completion_tokens` for OpenAI reasoning models (`o1`, `o3`, `o4-mini`,
    /// … and `gpt-5*`), else `max_tokens`.
    pub fn for_model(model: &str) -> Self {
        let m = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        let o_series = m.len() >= 2 && m.starts_with('o') && m.as_bytes()[1].is_ascii_digit();
        if o_series || m.starts_with("gpt-5") {
            TokenLimitParam::MaxCompletionTokens
        } else {
            TokenLimitParam::MaxTokens
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenLimitParam::MaxTokens => "max_tokens",
            TokenLimitParam::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// How hard a reasoning model thinks (OpenAI `reasoning_effort`, Responses `reasoning.effort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    Minimal,
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }

    /// `minimal`, `low`, `medium` or `high`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "minimal" => ReasoningEffort::Minimal,
            "low" => ReasoningEffort::Low,
            "medium" => ReasoningEffort::Medium,
            "high" => ReasoningEffort::High,
            _ => return None,
        })
    }

    /// A thinking budget in tokens for providers that take one instead (Gemini, Anthropic): 1,024 / 2,048 /
    /// 8,192 / 24,576.
    pub fn budget_tokens(self) -> u64 {
        match self {
            ReasoningEffort::Minimal => 1024,
            ReasoningEffort::Low => 2048,
            ReasoningEffort::Medium => 8192,
            ReasoningEffort::High => 24576,
        }
    }
}

/// Reasoning ("thinking") settings; each provider sends what it understands (see the provider docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasoningSettings {
    /// OpenAI `reasoning_effort` (Chat Completions, Azure), `reasoning.effort` (Responses); for Anthropic,
    /// Gemini and Bedrock without `budget_tokens`, a budget of [`ReasoningEffort::budget_tokens`].
    pub effort: Option<ReasoningEffort>,
    /// Anthropic `thinking: {type: enabled, budget_tokens}` (≥ 1024, below `max_tokens`), Gemini
    /// `thinkingConfig.thinkingBudget`, Bedrock (Claude models) the same as Anthropic.
    pub budget_tokens: Option<u64>,
}

impl ReasoningSettings {
    /// True when nothing is set (the provider's default).
    pub fn is_unset(&self) -> bool {
        self.effort.is_none() && self.budget_tokens.is_none()
    }

    /// The thinking budget for budget-based providers: `budget_tokens`, else the effort's budget.
    pub fn budget(&self) -> Option<u64> {
        self.budget_tokens.or_else(|| self.effort.map(ReasoningEffort::budget_tokens))
    }
}

/// Per-call settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatSettings {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Completion bound; [`DEFAULT_MAX_TOKENS`] when unset.
    pub max_tokens: Option<u64>,
    /// The name the bound is sent under (Chat Completions only); chosen from the model name when unset
    /// ([`TokenLimitParam::for_model`]).
    pub token_limit_param: Option<TokenLimitParam>,
    /// Request timeout; the provider's default when unset.
    pub timeout: Option<Duration>,
    pub tool_choice: ToolChoice,
    /// Whether the model may call several tools in one turn (OpenAI `parallel_tool_calls`, Anthropic
    /// `disable_parallel_tool_use`); the provider's default (on) when unset. Sent only with tools.
    pub parallel_tool_calls: Option<bool>,
    pub response_schema: Option<ResponseSchema>,
    pub reasoning: ReasoningSettings,
    /// Mark the system prompt and the tools as a cacheable prefix (Anthropic `cache_control: ephemeral`,
    /// Bedrock `cachePoint`); OpenAI and Gemini cache long prefixes by themselves.
    pub cache_prompt: bool,
    /// Further body fields passed to the provider as written (`seed`, `stop`, …); never override the ones
    /// Flujo sets.
    pub extra: Map<String, Value>,
    /// Stream the answer: the provider is asked for a stream and each piece of text goes here as it arrives
    /// (see [`crate::stream`]); the returned reply is the same as without.
    pub stream: Option<flujo_core::DeltaSink>,
}

impl ChatSettings {
    /// The completion bound actually sent.
    pub fn effective_max_tokens(&self) -> u64 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }
}

/// A chat-completion model (one provider, one model).
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The provider name (`openai`, `anthropic`, `mock`, or a configured alias).
    fn provider(&self) -> &str;
    /// The model name (after `provider:`).
    fn model(&self) -> &str;
    /// `Err` when no call can succeed, checked without sending anything (a provider that needs an API key
    /// and has none: [`LlmError::MissingApiKey`]).
    fn check_ready(&self) -> Result<(), LlmError> {
        Ok(())
    }
    /// One turn: sends `messages` offering `tools`, returns the reply with its usage. Transient failures
    /// (429, 5xx, connection errors) are retried inside, with backoff, a bounded number of times.
    async fn chat(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        settings: &ChatSettings,
    ) -> Result<ChatReply, LlmError>;
}

/// One model call inside a `gen_ai.chat` tracing span carrying the OpenTelemetry GenAI semantic-convention
/// attributes: `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
/// `gen_ai.request.max_tokens` / `temperature` / `top_p`, and once the reply is in, `gen_ai.usage.input_tokens`,
/// `gen_ai.usage.output_tokens`, `gen_ai.response.finish_reasons` (or `error.type`). Every model call Flujo
/// makes goes through here.
pub async fn traced_chat(
    model: &dyn ChatModel,
    messages: &[ChatMessage],
    tools: &[ToolSpec],
    settings: &ChatSettings,
) -> Result<ChatReply, LlmError> {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "gen_ai.chat",
        otel.name = %format_args!("chat {}", model.model()),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = model.provider(),
        gen_ai.request.model = model.model(),
        gen_ai.request.max_tokens = i64::try_from(settings.effective_max_tokens()).unwrap_or(i64::MAX),
        gen_ai.request.temperature = Empty,
        gen_ai.request.top_p = Empty,
        gen_ai.request.stream = settings.stream.is_some(),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        error.type = Empty,
    );
    if span.is_disabled() {
        return model.chat(messages, tools, settings).await;
    }
    if let Some(t) = settings.temperature {
        span.record("gen_ai.request.temperature", t);
    }
    if let Some(p) = settings.top_p {
        span.record("gen_ai.request.top_p", p);
    }
    let res = tracing::Instrument::instrument(model.chat(messages, tools, settings), span.clone()).await;
    match &res {
        Ok(reply) => {
            // Integers as i64: OpenTelemetry has no unsigned attributes (a u64 would be exported as text).
            span.record("gen_ai.usage.input_tokens", i64::try_from(reply.usage.prompt).unwrap_or(i64::MAX));
            span.record("gen_ai.usage.output_tokens", i64::try_from(reply.usage.completion).unwrap_or(i64::MAX));
            if let Some(r) = &reply.stop_reason {
                span.record("gen_ai.response.finish_reasons", r.as_str());
            }
        }
        Err(e) => {
            span.record("error.type", e.kind());
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn response_schema_name_and_strictness() {
        let s = ResponseSchema::new(json!({"title": "My Answer!", "type": "object",
            "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false}));
        assert_eq!(s.name, "My_Answer_");
        assert!(s.strict);
        let s = ResponseSchema::new(json!({"type": "object", "properties": {"a": {"type": "string"}}}));
        assert_eq!(s.name, "output");
        assert!(!s.strict);
        assert!(!ResponseSchema::new(json!({"type": "object"})).strict);
    }

    #[test]
    fn messages_round_trip_through_json() {
        let m = ChatMessage::tool_result("call_1", "{\"ok\":true}");
        let back: ChatMessage = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(serde_json::to_value(ChatMessage::user("hi")).unwrap(), json!({"role": "user", "content": "hi"}));
    }
}
