//! `anthropic:MODEL` — the Messages API (`POST {base_url}/v1/messages`, `x-api-key`, `anthropic-version`).
//! System messages go to the top-level `system` field, tool results travel as `tool_result` blocks of a user
//! turn, adjacent turns of one role are merged (the API wants them alternating). Structured output is a
//! single forced tool whose `input_schema` is the schema (wrapped in `{value: …}` when the schema is not an
//! object schema); its input is returned as the reply's JSON content.

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::TokenUsage;
use flujo_http::reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use crate::chat::{ChatMessage, ChatModel, ChatReply, ChatSettings, ReasoningBlock, ResponseSchema, Role};
use crate::config::ResolvedProvider;
use crate::error::LlmError;
use crate::http::{provider_request, HttpClient};
use crate::media::{ContentPart, Inline, MediaSource};
use crate::stream::{AnthropicStream, StreamedReply};
use crate::tools::{
    anthropic_tool_choice, anthropic_tool_use_block, anthropic_tools, parse_anthropic_tool_use, ToolChoice, ToolSpec,
};

/// The `anthropic-version` header sent unless configured otherwise.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// A Messages API model.
#[derive(Debug, Clone)]
pub struct AnthropicModel {
    provider: Arc<ResolvedProvider>,
    model: String,
    http: HttpClient,
}

fn schema_tool(rs: &ResponseSchema) -> Value {
    json!({"name": rs.name, "description": "Answer with a value matching this schema.", "input_schema": rs.wire_schema()})
}

impl AnthropicModel {
    pub fn new(provider: Arc<ResolvedProvider>, model: impl Into<String>, http: HttpClient) -> Self {
        AnthropicModel { provider, model: model.into(), http }
    }

    /// The request body for one turn.
    pub fn request_body(&self, messages: &[ChatMessage], tools: &[ToolSpec], settings: &ChatSettings) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        let max_tokens = settings.effective_max_tokens();
        body.insert("max_tokens".into(), json!(max_tokens));
        let system: Vec<&str> =
            messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        if !system.is_empty() {
            let text = system.join("\n\n");
            body.insert(
                "system".into(),
                if settings.cache_prompt {
                    json!([{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}])
                } else {
                    json!(text)
                },
            );
        }
        body.insert("messages".into(), wire_messages(messages));
        // Extended thinking: a budget below `max_tokens` (at least the API's 1,024); the API refuses
        // sampling settings and forced tool choices alongside it.
        let thinking = settings.reasoning.budget().map(|b| b.max(1024).min(max_tokens.saturating_sub(1)));
        if let Some(budget) = thinking {
            body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
        } else {
            if let Some(t) = settings.temperature {
                body.insert("temperature".into(), json!(t));
            }
            if let Some(p) = settings.top_p {
                body.insert("top_p".into(), json!(p));
            }
        }
        let (wire, choice) = match &settings.response_schema {
            Some(rs) => {
                let offered: &[ToolSpec] = if settings.tool_choice == ToolChoice::None { &[] } else { tools };
                let mut wire = anthropic_tools(offered);
                wire.push(schema_tool(rs));
                let choice = match &settings.tool_choice {
                    _ if thinking.is_some() => json!({"type": "auto"}),
                    _ if offered.is_empty() => json!({"type": "tool", "name": rs.name}),
                    ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
                    _ => json!({"type": "any"}),
                };
                (wire, Some(choice))
            }
            None if !tools.is_empty() => {
                let choice = match &settings.tool_choice {
                    ToolChoice::Required | ToolChoice::Tool(_) if thinking.is_some() => json!({"type": "auto"}),
                    other => anthropic_tool_choice(other),
                };
                (anthropic_tools(tools), Some(choice))
            }
            None => (Vec::new(), None),
        };
        if let Some(mut choice) = choice {
            let mut wire = wire;
            if settings.cache_prompt {
                if let Some(last) = wire.last_mut() {
                    last["cache_control"] = json!({"type": "ephemeral"});
                }
            }
            if settings.parallel_tool_calls == Some(false) && choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
            body.insert("tools".into(), Value::Array(wire));
            body.insert("tool_choice".into(), choice);
        }
        if settings.stream.is_some() {
            body.insert("stream".into(), json!(true));
        }
        for (k, v) in &settings.extra {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(body)
    }
}

fn wire_messages(messages: &[ChatMessage]) -> Value {
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User if !m.parts.is_empty() => ("user", m.parts.iter().map(wire_part).collect()),
            Role::User => ("user", text_block(&m.content)),
            Role::Assistant => {
                let mut blocks: Vec<Value> = m.reasoning.iter().map(thinking_block).collect();
                blocks.extend(text_block(&m.content));
                blocks.extend(m.tool_calls.iter().map(anthropic_tool_use_block));
                ("assistant", blocks)
            }
            Role::Tool => {
                let mut block = json!({"type": "tool_result", "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content});
                if m.is_error {
                    block["is_error"] = json!(true);
                }
                ("user", vec![block])
            }
        };
        crate::chat::push_turn(&mut out, role, blocks);
    }
    Value::Array(
        out.into_iter()
            .map(|(role, blocks)| match blocks.as_slice() {
                [b] if b["type"] == "text" => json!({"role": role, "content": b["text"]}),
                _ => json!({"role": role, "content": blocks}),
            })
            .collect(),
    )
}

/// A reasoning block as the API returned it: `thinking` with its signature, or `redacted_thinking`.
fn thinking_block(r: &ReasoningBlock) -> Value {
    match &r.redacted {
        Some(data) => json!({"type": "redacted_thinking", "data": data}),
        None => json!({"type": "thinking", "thinking": r.text, "signature": r.signature.clone().unwrap_or_default()}),
    }
}

/// A content part as a Messages API block: `text`, `image` or `document` with a `url` or `base64` source.
fn wire_part(part: &ContentPart) -> Value {
    let source = |s: &MediaSource| match (s, part.inline()) {
        (MediaSource::Url { url }, _) => json!({"type": "url", "url": url}),
        (_, Some((media_type, data))) => json!({"type": "base64", "media_type": media_type, "data": data}),
        (_, None) => Value::Null,
    };
    match part {
        ContentPart::Text { text } => json!({"type": "text", "text": text}),
        ContentPart::Image { source: s, .. } => json!({"type": "image", "source": source(s)}),
        ContentPart::Document { source: s, name, .. } => {
            let mut block = json!({"type": "document", "source": source(s)});
            if let Some(n) = name {
                block["title"] = json!(n);
            }
            block
        }
    }
}

fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

/// Parses a Messages API reply; with a response schema, the schema tool's input becomes the JSON content.
pub(crate) fn parse_reply(provider: &str, v: &Value, schema: Option<&ResponseSchema>) -> Result<ChatReply, LlmError> {
    let malformed = |what: &str| LlmError::Malformed { provider: provider.to_owned(), message: what.to_owned() };
    let blocks =
        v.get("content").and_then(Value::as_array).ok_or_else(|| malformed("no `content` array in the reply"))?;
    let mut text: Option<String> = None;
    let mut structured: Option<Value> = None;
    let mut tool_calls = Vec::new();
    let mut reasoning = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => reasoning.push(ReasoningBlock {
                text: block.get("thinking").and_then(Value::as_str).unwrap_or_default().to_owned(),
                signature: block.get("signature").and_then(Value::as_str).map(str::to_owned),
                redacted: None,
            }),
            Some("redacted_thinking") => reasoning.push(ReasoningBlock {
                redacted: Some(block.get("data").and_then(Value::as_str).unwrap_or_default().to_owned()),
                ..Default::default()
            }),
            Some("text") => {
                let t =
                    block.get("text").and_then(Value::as_str).ok_or_else(|| malformed("a text block has no text"))?;
                text.get_or_insert_with(String::new).push_str(t);
            }
            Some("tool_use") => {
                let call =
                    parse_anthropic_tool_use(block).ok_or_else(|| malformed("a tool_use block lacks id or name"))?;
                match schema {
                    Some(rs) if call.name == rs.name => {
                        structured = Some(rs.unwrap_answer(call.arguments));
                    }
                    _ => tool_calls.push(call),
                }
            }
            _ => {}
        }
    }
    let usage = v.get("usage");
    let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    let stop_reason = v.get("stop_reason").and_then(Value::as_str).map(str::to_owned);
    let refusal = (stop_reason.as_deref() == Some("refusal"))
        .then(|| text.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "(no explanation given)".to_owned()));
    Ok(ChatReply {
        refusal,
        requests: 0,
        content: structured.map(|s| s.to_string()).or(text),
        tool_calls,
        // `input_tokens` excludes the cached prefix: the prompt is all three; thinking is billed as output and
        // not counted apart by the API.
        usage: TokenUsage::new(
            count("input_tokens") + count("cache_creation_input_tokens") + count("cache_read_input_tokens"),
            count("output_tokens"),
        )
        .with_cache(count("cache_read_input_tokens"), count("cache_creation_input_tokens")),
        stop_reason,
        reasoning,
        request_id: v.get("id").and_then(Value::as_str).map(str::to_owned),
        response_model: v.get("model").and_then(Value::as_str).map(str::to_owned),
    })
}

#[async_trait]
impl ChatModel for AnthropicModel {
    fn provider(&self) -> &str {
        &self.provider.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn check_ready(&self) -> Result<(), LlmError> {
        self.provider.check_key()
    }

    async fn chat(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        settings: &ChatSettings,
    ) -> Result<ChatReply, LlmError> {
        let p = &self.provider;
        let mut headers = HeaderMap::new();
        let version = HeaderValue::from_str(&p.anthropic_version)
            .map_err(|_| LlmError::Config(format!("invalid anthropic_version '{}'", p.anthropic_version)))?;
        headers.insert(HeaderName::from_static("anthropic-version"), version);
        let messages = crate::openai::inline_files(messages, Inline::Files, &self.http).await?;
        let body = self.request_body(&messages, tools, settings);
        let schema_tool = settings.response_schema.as_ref().map(|rs| rs.name.as_str());
        let mut stream = settings.stream.as_ref().map(|sink| AnthropicStream::new(&p.name, sink, schema_tool));
        let (reply, requests) = provider_request(
            &self.http,
            p,
            "/v1/messages",
            ("x-api-key", str::to_owned),
            headers,
            &body,
            settings.timeout,
            stream.as_mut().map(|s| s as &mut dyn StreamedReply),
        )
        .await?;
        let mut reply = parse_reply(&p.name, &reply, settings.response_schema.as_ref())?;
        reply.requests = requests;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolCall;

    fn model() -> AnthropicModel {
        AnthropicModel::new(Arc::new(ResolvedProvider::for_tests("anthropic")), "claude-x", HttpClient::new().unwrap())
    }

    #[test]
    fn body_moves_system_and_merges_tool_results() {
        let call = |id: &str| ToolCall { id: id.into(), name: "f".into(), arguments: json!({}) };
        let msgs = [
            ChatMessage::system("be brief"),
            ChatMessage::user("hi"),
            ChatMessage::assistant_tool_calls("", vec![call("a"), call("b")]),
            ChatMessage::tool_result("a", "1"),
            ChatMessage::tool_error("b", "error: no such file"),
        ];
        let b =
            model().request_body(&msgs, &[ToolSpec::new("f", "", json!({"type": "object"}))], &ChatSettings::default());
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["messages"][0], json!({"role": "user", "content": "hi"}));
        assert_eq!(b["messages"][1]["content"].as_array().unwrap().len(), 2);
        assert_eq!(b["messages"][2]["role"], "user");
        assert_eq!(b["messages"][2]["content"][1]["tool_use_id"], "b");
        assert_eq!(b["messages"][2]["content"][1]["is_error"], true, "a failed tool result says so");
        assert!(b["messages"][2]["content"][0].get("is_error").is_none());
        assert_eq!(b["tool_choice"], json!({"type": "auto"}));
    }

    #[test]
    fn structured_output_is_a_forced_tool() {
        let rs = ResponseSchema::new(json!({"type": "array", "items": {"type": "integer"}}));
        let settings = ChatSettings { response_schema: Some(rs.clone()), ..Default::default() };
        let b = model().request_body(&[ChatMessage::user("x")], &[], &settings);
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "output"}));
        assert_eq!(b["tools"][0]["input_schema"]["properties"]["value"]["type"], "array");
        let reply = json!({"content": [{"type": "tool_use", "id": "t", "name": "output", "input": {"value": [1, 2]}}],
            "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 1}, "stop_reason": "tool_use"});
        let r = parse_reply("anthropic", &reply, Some(&rs)).unwrap();
        assert_eq!(r.content.as_deref(), Some("[1,2]"));
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.usage, TokenUsage::new(6, 2).with_cache(1, 0));
    }

    #[test]
    fn malformed_replies() {
        assert!(matches!(parse_reply("a", &json!({"x": 1}), None), Err(LlmError::Malformed { .. })));
        assert!(parse_reply("a", &json!({"content": [{"type": "text"}]}), None).is_err());
    }
}
