//! `openai:MODEL` — the Chat Completions API (`POST {base_url}/chat/completions`), which OpenAI and every
//! compatible server (Ollama, vLLM, llama.cpp, LM Studio, …) speak. Structured output is sent as
//! `response_format: {type: json_schema, json_schema: {name, schema, strict}}`; tools as `function` tools.
//!
//! `azure:DEPLOYMENT` (Azure OpenAI) is the same API on other paths and headers: `POST {endpoint}/openai/
//! deployments/{DEPLOYMENT}/chat/completions?api-version=…`, or with `api_version = "v1"` (or `"preview"`)
//! the v1 API's `{endpoint}/openai/v1/chat/completions` with the deployment as `model`; the key goes in the
//! `api-key` header, a Microsoft Entra ID token (`AZURE_OPENAI_AD_TOKEN`) in `Authorization: Bearer`. An
//! answer stopped by Azure's content filter (`finish_reason: content_filter`) is a refusal naming the
//! filtered categories.

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::TokenUsage;
use flujo_http::reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use crate::chat::{ChatMessage, ChatModel, ChatReply, ChatSettings, ReasoningBlock, Role, TokenLimitParam};
use crate::config::{ProviderKind, ResolvedProvider};
use crate::error::LlmError;
use crate::http::{provider_request, HttpClient};
use crate::media::{resolve_parts, ContentPart, Inline, MediaSource};
use crate::stream::{OpenAiStream, StreamedReply};
use crate::structured::repair_json;
use crate::tools::{openai_tool_call_to_wire, openai_tool_choice, openai_tools, parse_openai_tool_calls, ToolSpec};

/// A Chat Completions model.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    provider: Arc<ResolvedProvider>,
    model: String,
    http: HttpClient,
}

impl OpenAiModel {
    pub fn new(provider: Arc<ResolvedProvider>, model: impl Into<String>, http: HttpClient) -> Self {
        OpenAiModel { provider, model: model.into(), http }
    }

    /// The request body for one turn.
    pub fn request_body(&self, messages: &[ChatMessage], tools: &[ToolSpec], settings: &ChatSettings) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("messages".into(), Value::Array(messages.iter().map(wire_message).collect()));
        let limit = settings.token_limit_param.unwrap_or_else(|| TokenLimitParam::for_model(&self.model));
        body.insert(limit.name().into(), json!(settings.effective_max_tokens()));
        if let Some(t) = settings.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = settings.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !tools.is_empty() {
            body.insert("tools".into(), openai_tools(tools));
            body.insert("tool_choice".into(), openai_tool_choice(&settings.tool_choice));
            if let Some(parallel) = settings.parallel_tool_calls {
                body.insert("parallel_tool_calls".into(), json!(parallel));
            }
        }
        if let Some(effort) = settings.reasoning.effort {
            body.insert("reasoning_effort".into(), json!(effort.as_str()));
        }
        if let Some(rs) = &settings.response_schema {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": rs.name, "schema": rs.wire_schema(), "strict": rs.strict}}),
            );
        }
        if settings.stream.is_some() {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        for (k, v) in &settings.extra {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(body)
    }
}

fn wire_message(m: &ChatMessage) -> Value {
    match m.role {
        Role::System => json!({"role": "system", "content": m.content}),
        Role::User if !m.parts.is_empty() => {
            json!({"role": "user", "content": m.parts.iter().map(wire_part).collect::<Vec<_>>()})
        }
        Role::User => json!({"role": "user", "content": m.content}),
        Role::Assistant if m.tool_calls.is_empty() => json!({"role": "assistant", "content": m.content}),
        Role::Assistant => json!({
            "role": "assistant",
            "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
            "tool_calls": m.tool_calls.iter().map(openai_tool_call_to_wire).collect::<Vec<_>>(),
        }),
        Role::Tool => {
            json!({"role": "tool", "tool_call_id": m.tool_call_id.clone().unwrap_or_default(), "content": m.content})
        }
    }
}

/// A content part in the Chat Completions shape: `text`, `image_url` (a URL or a `data:` URI), `file`
/// (a PDF as a `data:` URI).
pub(crate) fn wire_part(part: &ContentPart) -> Value {
    match part {
        ContentPart::Text { text } => json!({"type": "text", "text": text}),
        ContentPart::Image { source, .. } => {
            let url = match (source, part.inline()) {
                (MediaSource::Url { url }, _) => url.clone(),
                (_, Some((media_type, data))) => format!("data:{media_type};base64,{data}"),
                (_, None) => String::new(),
            };
            json!({"type": "image_url", "image_url": {"url": url}})
        }
        ContentPart::Document { name, source, .. } => match (source, part.inline()) {
            (_, Some((media_type, data))) => json!({"type": "file", "file": {
                "filename": name.clone().unwrap_or_else(|| "document.pdf".into()),
                "file_data": format!("data:{media_type};base64,{data}")}}),
            (MediaSource::Url { url }, _) => json!({"type": "text", "text": format!("[document {url}]")}),
            _ => json!({"type": "text", "text": part.describe()}),
        },
    }
}

/// The usage of a Chat Completions (or Azure) reply: `prompt_tokens`, `completion_tokens`, and the details
/// `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`.
pub(crate) fn parse_usage(usage: Option<&Value>) -> TokenUsage {
    let count = |p: &str| usage.and_then(|u| u.pointer(p)).and_then(Value::as_u64).unwrap_or(0);
    TokenUsage::new(count("/prompt_tokens"), count("/completion_tokens"))
        .with_cache(count("/prompt_tokens_details/cached_tokens"), 0)
        .with_reasoning(count("/completion_tokens_details/reasoning_tokens"))
}

/// Parses a Chat Completions reply.
pub(crate) fn parse_reply(provider: &str, v: &Value) -> Result<ChatReply, LlmError> {
    let malformed = |what: &str| LlmError::Malformed { provider: provider.to_owned(), message: what.to_owned() };
    let choice = v.get("choices").and_then(|c| c.get(0)).ok_or_else(|| malformed("no `choices[0]` in the reply"))?;
    let message = choice.get("message").ok_or_else(|| malformed("no `choices[0].message` in the reply"))?;
    let content = match message.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(_) => return Err(malformed("`message.content` is not a string")),
    };
    let stop_reason = choice.get("finish_reason").and_then(Value::as_str).map(str::to_owned);
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| (stop_reason.as_deref() == Some("content_filter")).then(|| content_filter_refusal(choice)));
    let tool_calls =
        parse_openai_tool_calls(message.get("tool_calls")).ok_or_else(|| malformed("invalid `message.tool_calls`"))?;
    // Some compatible servers (DeepSeek, vLLM with a reasoning parser) return the reasoning text.
    let reasoning = message
        .get("reasoning_content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| vec![ReasoningBlock { text: t.to_owned(), ..Default::default() }])
        .unwrap_or_default();
    Ok(ChatReply {
        content,
        tool_calls,
        usage: parse_usage(v.get("usage")),
        stop_reason,
        refusal,
        requests: 0,
        reasoning,
        request_id: v.get("id").and_then(Value::as_str).map(str::to_owned),
        response_model: v.get("model").and_then(Value::as_str).map(str::to_owned),
    })
}

/// The refusal of an answer stopped by a content filter (Azure `finish_reason: content_filter`), naming the
/// categories `content_filter_results` marks as filtered (`violence: high`), in alphabetical order.
fn content_filter_refusal(choice: &Value) -> String {
    let mut filtered: Vec<String> = choice
        .get("content_filter_results")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.get("filtered").and_then(Value::as_bool) == Some(true))
        .map(|(category, r)| match r.get("severity").and_then(Value::as_str) {
            Some(severity) => format!("{category}: {severity}"),
            None => category.clone(),
        })
        .collect();
    filtered.sort();
    if filtered.is_empty() {
        "the answer was stopped by the content filter".to_owned()
    } else {
        format!("the answer was stopped by the content filter ({})", filtered.join(", "))
    }
}

/// The key in `Authorization: Bearer` (OpenAI, an Azure Entra ID token).
fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// The key as it is (Azure's `api-key` header).
fn plain(key: &str) -> String {
    key.to_owned()
}

/// The path (after the endpoint) of Azure OpenAI's Chat Completions for `deployment`: the deployment path
/// with `api-version`, or the v1 API's path when `api_version` is `v1` or `preview` (or the endpoint already
/// ends in `/openai/v1`, as the OpenAI SDKs write it).
pub(crate) fn azure_chat_path(base_url: &str, api_version: &str, deployment: &str) -> String {
    let v1 = api_version == "v1" || api_version == "preview" || base_url.ends_with("/openai/v1");
    let query = match api_version {
        "v1" => String::new(),
        v => format!("?api-version={}", percent_encode(v)),
    };
    // An endpoint written with its `/openai` (or `/openai/v1`) suffix is taken as it is.
    let prefix = match (base_url.ends_with("/openai/v1"), base_url.ends_with("/openai"), v1) {
        (true, _, _) | (false, true, false) => "",
        (false, true, true) => "/v1",
        (false, false, true) => "/openai/v1",
        (false, false, false) => "/openai",
    };
    if v1 {
        format!("{prefix}/chat/completions{query}")
    } else {
        format!("{prefix}/deployments/{}/chat/completions{query}", percent_encode(deployment))
    }
}

/// `s` with every byte outside RFC 3986's unreserved set percent-encoded (a path segment or query value).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `messages` with the media of their parts made ready to send (see [`resolve_parts`]); borrowed as they
/// are when no message has parts.
pub(crate) async fn inline_files<'m>(
    messages: &'m [ChatMessage],
    inline: Inline,
    http: &HttpClient,
) -> Result<std::borrow::Cow<'m, [ChatMessage]>, LlmError> {
    if messages.iter().all(|m| m.parts.is_empty()) {
        return Ok(std::borrow::Cow::Borrowed(messages));
    }
    let mut out = messages.to_vec();
    for m in &mut out {
        if !m.parts.is_empty() {
            m.parts = resolve_parts(&m.parts, inline, http).await?;
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

#[async_trait]
impl ChatModel for OpenAiModel {
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
        let messages = inline_files(messages, Inline::Files, &self.http).await?;
        let body = self.request_body(&messages, tools, settings);
        let mut stream = settings.stream.as_ref().map(|sink| OpenAiStream::new(&p.name, sink));
        let (path, key_header): (String, (&'static str, fn(&str) -> String)) = match p.kind {
            ProviderKind::Azure if p.entra_token => {
                (azure_chat_path(&p.base_url, &p.api_version, &self.model), ("authorization", bearer))
            }
            ProviderKind::Azure => (azure_chat_path(&p.base_url, &p.api_version, &self.model), ("api-key", plain)),
            _ => ("/chat/completions".to_owned(), ("authorization", bearer)),
        };
        let (reply, requests) = provider_request(
            &self.http,
            p,
            &path,
            key_header,
            HeaderMap::new(),
            &body,
            settings.timeout,
            stream.as_mut().map(|s| s as &mut dyn StreamedReply),
        )
        .await?;
        let mut reply = parse_reply(&p.name, &reply)?;
        reply.requests = requests;
        if let (Some(rs), Some(text)) = (&settings.response_schema, &reply.content) {
            if !rs.is_object() {
                // Undo the `{value: …}` wrapping of a non-object schema (repairing the text first if needed).
                let parsed = serde_json::from_str(text).ok().or_else(|| repair_json(text));
                if let Some(v) = parsed {
                    reply.content = Some(rs.unwrap_answer(v).to_string());
                }
            }
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ResponseSchema;
    use crate::tools::ToolCall;

    #[test]
    fn parses_text_tool_calls_and_usage() {
        let r = parse_reply(
            "openai",
            &json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
                "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}),
        )
        .unwrap();
        assert_eq!(r.content, None);
        assert_eq!(r.tool_calls[0].arguments, json!({"x": 1}));
        assert_eq!(r.usage, TokenUsage::new(7, 3));
        assert_eq!(r.stop_reason.as_deref(), Some("tool_calls"));
        assert!(matches!(parse_reply("openai", &json!({"x": 1})), Err(LlmError::Malformed { .. })));
    }

    #[test]
    fn azure_paths_and_content_filter_refusals() {
        let base = "https://res.openai.azure.com";
        assert_eq!(
            azure_chat_path(base, "2024-10-21", "gpt 4o/prod"),
            "/openai/deployments/gpt%204o%2Fprod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(azure_chat_path(base, "v1", "gpt-4o"), "/openai/v1/chat/completions");
        assert_eq!(azure_chat_path(base, "preview", "gpt-4o"), "/openai/v1/chat/completions?api-version=preview");
        assert_eq!(azure_chat_path(&format!("{base}/openai/v1"), "v1", "d"), "/chat/completions");
        assert_eq!(
            azure_chat_path(&format!("{base}/openai"), "2025-01-01-preview", "d"),
            "/deployments/d/chat/completions?api-version=2025-01-01-preview"
        );
        let r = parse_reply(
            "azure",
            &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null},
                "finish_reason": "content_filter", "content_filter_results": {
                    "hate": {"filtered": false, "severity": "safe"},
                    "violence": {"filtered": true, "severity": "high"},
                    "protected_material_text": {"filtered": true, "detected": true}}}]}),
        )
        .unwrap();
        assert_eq!(
            r.refusal.as_deref(),
            Some("the answer was stopped by the content filter (protected_material_text, violence: high)")
        );
        assert_eq!(r.stop_reason.as_deref(), Some("content_filter"));
    }

    #[test]
    fn body_has_schema_tools_and_messages() {
        let m = OpenAiModel::new(Arc::new(ResolvedProvider::for_tests("openai")), "gpt-x", HttpClient::new().unwrap());
        let settings = ChatSettings {
            temperature: Some(0.5),
            response_schema: Some(ResponseSchema::new(json!({"type": "object"}))),
            extra: [("seed".to_owned(), json!(7)), ("model".to_owned(), json!("evil"))].into_iter().collect(),
            ..Default::default()
        };
        let call = ToolCall { id: "c1".into(), name: "f".into(), arguments: json!({"a": 1}) };
        let msgs = [
            ChatMessage::system("s"),
            ChatMessage::user("u"),
            ChatMessage::assistant_tool_calls("", vec![call]),
            ChatMessage::tool_result("c1", "42"),
        ];
        let b = m.request_body(&msgs, &[ToolSpec::new("f", "", json!({"type": "object"}))], &settings);
        assert_eq!(b["model"], "gpt-x");
        assert_eq!(b["seed"], 7);
        assert_eq!(b["max_tokens"], 4096);
        assert!(b.get("max_completion_tokens").is_none());
        // Reasoning models need `max_completion_tokens` (and refuse `max_tokens`); settings may choose.
        for (model, param) in [
            ("o3-mini", "max_completion_tokens"),
            ("gpt-5", "max_completion_tokens"),
            ("o1", "max_completion_tokens"),
            ("gpt-4.1", "max_tokens"),
            ("omni-x", "max_tokens"),
        ] {
            let m =
                OpenAiModel::new(Arc::new(ResolvedProvider::for_tests("openai")), model, HttpClient::new().unwrap());
            let b = m.request_body(&msgs, &[], &ChatSettings::default());
            assert_eq!(b[param], 4096, "{model}");
            assert_eq!(b.as_object().unwrap().keys().filter(|k| k.starts_with("max_")).count(), 1, "{model}");
        }
        let forced = ChatSettings {
            token_limit_param: Some(TokenLimitParam::MaxCompletionTokens),
            max_tokens: Some(9),
            ..Default::default()
        };
        assert_eq!(m.request_body(&msgs, &[], &forced)["max_completion_tokens"], 9);
        assert_eq!(b["response_format"]["type"], "json_schema");
        assert_eq!(b["response_format"]["json_schema"]["name"], "output");
        assert_eq!(b["messages"][2]["content"], Value::Null);
        assert_eq!(b["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(b["messages"][3], json!({"role": "tool", "tool_call_id": "c1", "content": "42"}));
        assert_eq!(b["tool_choice"], "auto");
    }
}
