//! `gemini:MODEL` — the Gemini API of Google AI: `POST {base_url}/v1beta/models/{MODEL}:generateContent`
//! with the key in the `x-goog-api-key` header (never in the URL), and `:streamGenerateContent?alt=sse` for
//! streams, whose chunks are rebuilt into the reply `generateContent` gives (`stream.rs`). System messages become
//! `systemInstruction`; the transcript is `user`/`model` contents of parts: text, `inlineData` for images and
//! PDFs (files read and URLs fetched by Flujo: the API takes bytes), `functionCall` in model turns and
//! `functionResponse` in user turns (named after the call they answer); adjacent turns of one role are merged.
//! JSON Schemas (tool parameters, the response schema) are converted to the OpenAPI subset the API accepts
//! ([`openapi_schema`]); a schema that subset cannot express is sent as JSON Schema (`parametersJsonSchema`,
//! `responseJsonSchema`). Thinking is `thinkingConfig`; thought summaries come back as reasoning blocks, and
//! thought signatures go back with the turn that carried them.

mod schema;
mod stream;

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::TokenUsage;
use flujo_http::reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

pub use schema::openapi_schema;
use schema::{function_declaration, json_schema};
use stream::GeminiStream;

use crate::chat::{ChatMessage, ChatModel, ChatReply, ChatSettings, ReasoningBlock, ResponseSchema, Role};
use crate::config::ResolvedProvider;
use crate::error::{scrub, LlmError};
use crate::http::{provider_request, HttpClient};
use crate::media::{ContentPart, Inline, MediaSource};
use crate::stream::StreamedReply;
use crate::structured::repair_json;
use crate::tools::{ToolCall, ToolChoice, ToolSpec};

/// A Gemini API model.
#[derive(Debug, Clone)]
pub struct GeminiModel {
    provider: Arc<ResolvedProvider>,
    model: String,
    http: HttpClient,
}

/// `finishReason`s (and `promptFeedback.blockReason`s) that mean the answer was withheld: a refusal.
const BLOCKED: [&str; 8] = [
    "SAFETY",
    "RECITATION",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "OTHER",
];

/// `generationConfig` fields a `model_settings` key may name (camelCase or snake_case): such keys go into
/// `generationConfig`, every other one to the top level of the body.
const GENERATION_CONFIG_FIELDS: [&str; 14] = [
    "stopSequences",
    "candidateCount",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "responseModalities",
    "speechConfig",
    "mediaResolution",
    "thinkingConfig",
    "imageConfig",
    "enableEnhancedCivicAnswers",
];

impl GeminiModel {
    pub fn new(provider: Arc<ResolvedProvider>, model: impl Into<String>, http: HttpClient) -> Self {
        GeminiModel { provider, model: model.into(), http }
    }

    /// The request path: `/v1beta/models/MODEL:generateContent`, or the SSE stream form (a base URL that
    /// already ends in `/v1beta` or `/v1` keeps its version).
    fn path(&self, stream: bool) -> String {
        let model = self.model.strip_prefix("models/").unwrap_or(&self.model);
        let base = &self.provider.base_url;
        let version = if base.ends_with("/v1beta") || base.ends_with("/v1") { "" } else { "/v1beta" };
        if stream {
            format!("{version}/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{version}/models/{model}:generateContent")
        }
    }

    /// The request body for one turn.
    pub fn request_body(&self, messages: &[ChatMessage], tools: &[ToolSpec], settings: &ChatSettings) -> Value {
        let mut body = Map::new();
        let system: Vec<&str> = messages
            .iter()
            .filter(|m| m.role == Role::System && !m.content.is_empty())
            .map(|m| m.content.as_str())
            .collect();
        if !system.is_empty() {
            body.insert("systemInstruction".into(), json!({"parts": [{"text": system.join("\n\n")}]}));
        }
        body.insert("contents".into(), wire_contents(messages));
        if !tools.is_empty() {
            let declarations: Vec<Value> = tools.iter().map(function_declaration).collect();
            body.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
            body.insert("toolConfig".into(), json!({"functionCallingConfig": calling_config(&settings.tool_choice)}));
        }
        let mut config = Map::new();
        let max_tokens = settings.effective_max_tokens();
        config.insert("maxOutputTokens".into(), json!(max_tokens));
        if let Some(t) = settings.temperature {
            config.insert("temperature".into(), json!(t));
        }
        if let Some(p) = settings.top_p {
            config.insert("topP".into(), json!(p));
        }
        if let Some(rs) = &settings.response_schema {
            config.insert("responseMimeType".into(), json!("application/json"));
            let wire = rs.wire_schema();
            match openapi_schema(&wire) {
                Some(schema) => config.insert("responseSchema".into(), schema),
                None => config.insert("responseJsonSchema".into(), json_schema(&wire)),
            };
        }
        // Thought tokens count against `maxOutputTokens`: the budget stays below it. A budget of 0 turns
        // thinking off (where the model allows it).
        if let Some(budget) = settings.reasoning.budget() {
            let budget = budget.min(max_tokens.saturating_sub(1));
            config.insert("thinkingConfig".into(), json!({"thinkingBudget": budget, "includeThoughts": budget > 0}));
        }
        body.insert("generationConfig".into(), Value::Object(config));
        for (key, value) in &settings.extra {
            let camel = camel_case(key);
            let (target, key, value) = if GENERATION_CONFIG_FIELDS.contains(&camel.as_str()) {
                ("generationConfig", camel, value.clone())
            } else if key == "stop" {
                // The OpenAI name: a string or a list.
                let list = if value.is_string() { json!([value]) } else { value.clone() };
                ("generationConfig", "stopSequences".to_owned(), list)
            } else {
                ("", key.clone(), value.clone())
            };
            let map = match target {
                "" => &mut body,
                t => match body.get_mut(t) {
                    Some(Value::Object(m)) => m,
                    _ => continue,
                },
            };
            match map.get_mut(&key) {
                Some(ours) => merge_missing(ours, value),
                None => {
                    map.insert(key, value);
                }
            }
        }
        Value::Object(body)
    }
}

/// `snake_case` → `camelCase` (other names unchanged).
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds the keys of `extra` that `ours` lacks (objects merged recursively); never overrides a value of ours.
fn merge_missing(ours: &mut Value, extra: Value) {
    if let (Value::Object(o), Value::Object(e)) = (ours, extra) {
        for (k, v) in e {
            match o.get_mut(&k) {
                Some(slot) => merge_missing(slot, v),
                None => {
                    o.insert(k, v);
                }
            }
        }
    }
}

/// `functionCallingConfig` for a tool choice: `AUTO`, `NONE`, `ANY` (a named tool: `ANY` limited to it).
fn calling_config(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    }
}

/// True for tool-call ids Flujo made up (`call_N`), which are not sent back: the API matches by name then.
fn local_call_id(id: &str) -> bool {
    id.strip_prefix("call_").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn wire_contents(messages: &[ChatMessage]) -> Value {
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System => continue,
            Role::User if !m.parts.is_empty() => ("user", m.parts.iter().filter_map(wire_part).collect()),
            Role::User => ("user", text_part(&m.content)),
            Role::Assistant => ("model", model_parts(m)),
            Role::Tool => ("user", vec![function_response(m, &messages[..i])]),
        };
        crate::chat::push_turn(&mut out, role, parts);
    }
    Value::Array(out.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect())
}

fn text_part(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"text": text})]
    }
}

/// A content part: `text`, or `inlineData` for an inline image or PDF (a URL left as it is — only when the
/// body is built without [`crate::media::resolve_parts`] — is a `fileData` part).
fn wire_part(part: &ContentPart) -> Option<Value> {
    match (part, part.inline()) {
        (ContentPart::Text { text }, _) => (!text.is_empty()).then(|| json!({"text": text})),
        (_, Some((mime_type, data))) => Some(json!({"inlineData": {"mimeType": mime_type, "data": data}})),
        (_, None) => match part.source() {
            Some(MediaSource::Url { url }) => Some(json!({"fileData": {
                "mimeType": part.media_type().unwrap_or_default(), "fileUri": url}})),
            _ => Some(json!({"text": part.describe()})),
        },
    }
}

/// The parts of a model turn as the API returned them: thought summaries (with their signatures), the text,
/// the function calls. Signatures that came on other parts go back on the function calls in order, then on
/// the text.
fn model_parts(m: &ChatMessage) -> Vec<Value> {
    let mut parts: Vec<Value> = m
        .reasoning
        .iter()
        .filter(|r| !r.text.is_empty())
        .map(|r| {
            let mut p = json!({"text": r.text, "thought": true});
            if let Some(s) = &r.signature {
                p["thoughtSignature"] = json!(s);
            }
            p
        })
        .collect();
    let mut signatures =
        m.reasoning.iter().filter(|r| r.text.is_empty() && r.redacted.is_none()).filter_map(|r| r.signature.clone());
    let mut calls: Vec<Value> = m.tool_calls.iter().map(function_call).collect();
    let mut text = text_part(&m.content);
    for slot in calls.iter_mut().chain(text.iter_mut()) {
        match signatures.next() {
            Some(s) => slot["thoughtSignature"] = json!(s),
            None => break,
        }
    }
    parts.extend(text);
    parts.extend(calls);
    parts
}

fn function_call(call: &ToolCall) -> Value {
    let args = match &call.arguments {
        Value::Object(_) => call.arguments.clone(),
        Value::Null => json!({}),
        other => json!({"value": other}),
    };
    let mut fc = json!({"name": call.name, "args": args});
    if !local_call_id(&call.id) && !call.id.is_empty() {
        fc["id"] = json!(call.id);
    }
    json!({"functionCall": fc})
}

/// A tool result as a `functionResponse` part, named after the call it answers (found in the assistant
/// messages before it); the result is `{output: …}` (or `{error: …}` for a failed call), JSON results kept
/// as JSON.
fn function_response(m: &ChatMessage, before: &[ChatMessage]) -> Value {
    let id = m.tool_call_id.as_deref().unwrap_or_default();
    let name = before
        .iter()
        .rev()
        .filter(|p| p.role == Role::Assistant)
        .find_map(|p| p.tool_calls.iter().find(|c| c.id == id))
        .map_or_else(|| id.to_owned(), |c| c.name.clone());
    let result = serde_json::from_str::<Value>(&m.content).unwrap_or_else(|_| Value::String(m.content.clone()));
    let response = if m.is_error { json!({"error": result}) } else { json!({"output": result}) };
    let mut fr = json!({"name": name, "response": response});
    if !id.is_empty() && !local_call_id(id) {
        fr["id"] = json!(id);
    }
    json!({"functionResponse": fr})
}

/// The usage of a reply: `promptTokenCount` (cached tokens included; plus `toolUsePromptTokenCount`, billed
/// as input) and `candidatesTokenCount + thoughtsTokenCount` (the API counts thoughts apart).
pub(crate) fn parse_usage(usage: Option<&Value>) -> TokenUsage {
    let n = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    TokenUsage::new(n("promptTokenCount") + n("toolUsePromptTokenCount"), n("candidatesTokenCount") + thoughts)
        .with_cache(n("cachedContentTokenCount"), 0)
        .with_reasoning(thoughts)
}

/// `" (CATEGORY, …)"` for the safety ratings that blocked (or rated high/medium), else empty.
fn blocked_categories(ratings: Option<&Value>) -> String {
    let cats: Vec<&str> = ratings
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| {
            r.get("blocked") == Some(&Value::Bool(true))
                || matches!(r.get("probability").and_then(Value::as_str), Some("HIGH" | "MEDIUM"))
        })
        .filter_map(|r| r.get("category").and_then(Value::as_str))
        .collect();
    if cats.is_empty() {
        String::new()
    } else {
        format!(": {}", cats.join(", "))
    }
}

/// Parses a `GenerateContentResponse`. A blocked prompt (`promptFeedback.blockReason`) or a blocked answer
/// (`finishReason` `SAFETY`, `RECITATION`, `PROHIBITED_CONTENT`, `BLOCKLIST`, …) is a refusal;
/// `MALFORMED_FUNCTION_CALL` is a malformed reply. With a non-object response schema the `{value: …}` wrapping
/// is undone.
pub(crate) fn parse_reply(provider: &str, v: &Value, schema: Option<&ResponseSchema>) -> Result<ChatReply, LlmError> {
    let malformed = |what: String| LlmError::Malformed { provider: provider.to_owned(), message: what };
    let text_of = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut reply = ChatReply {
        usage: parse_usage(v.get("usageMetadata")),
        request_id: text_of("responseId"),
        response_model: text_of("modelVersion"),
        ..Default::default()
    };
    let Some(candidate) = v.get("candidates").and_then(|c| c.get(0)) else {
        let feedback = v.get("promptFeedback");
        return match feedback.and_then(|f| f.get("blockReason")).and_then(Value::as_str) {
            Some(reason) => {
                let cats = blocked_categories(feedback.and_then(|f| f.get("safetyRatings")));
                reply.refusal = Some(format!("the prompt was blocked (blockReason {reason}{cats})"));
                reply.stop_reason = Some(reason.to_owned());
                Ok(reply)
            }
            None => Err(malformed("no `candidates` in the reply".into())),
        };
    };
    reply.stop_reason = candidate.get("finishReason").and_then(Value::as_str).map(str::to_owned);
    let parts = match candidate.pointer("/content/parts") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(p)) => p.as_slice(),
        Some(_) => return Err(malformed("`content.parts` is not a list".into())),
    };
    let mut text: Option<String> = None;
    for part in parts {
        let signature = part.get("thoughtSignature").and_then(Value::as_str).map(str::to_owned);
        if part.get("thought") == Some(&Value::Bool(true)) {
            let t = part.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
            reply.reasoning.push(ReasoningBlock { text: t, signature, redacted: None });
            continue;
        }
        if let Some(fc) = part.get("functionCall") {
            let name = fc
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("a functionCall part has no name".into()))?;
            let id = fc
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map_or_else(|| format!("call_{}", reply.tool_calls.len()), str::to_owned);
            let arguments = fc.get("args").cloned().filter(|a| !a.is_null()).unwrap_or_else(|| json!({}));
            reply.tool_calls.push(ToolCall { id, name: name.to_owned(), arguments });
        } else if let Some(t) = part.get("text") {
            let t = t.as_str().ok_or_else(|| malformed("a text part's text is not a string".into()))?;
            text.get_or_insert_with(String::new).push_str(t);
        }
        if signature.is_some() {
            reply.reasoning.push(ReasoningBlock { signature, ..Default::default() });
        }
    }
    match reply.stop_reason.as_deref() {
        Some("MALFORMED_FUNCTION_CALL") => {
            let detail = candidate.get("finishMessage").and_then(Value::as_str).unwrap_or("no detail given");
            return Err(malformed(format!("the model wrote a malformed function call ({detail})")));
        }
        Some(reason) if BLOCKED.contains(&reason) => {
            let cats = blocked_categories(candidate.get("safetyRatings"));
            reply.refusal = Some(format!("the answer was blocked (finishReason {reason}{cats})"));
        }
        _ => {}
    }
    reply.content = text.filter(|t| !t.is_empty() || reply.tool_calls.is_empty());
    if let (Some(rs), Some(t)) = (schema, &reply.content) {
        if !rs.is_object() {
            if let Some(v) = serde_json::from_str(t).ok().or_else(|| repair_json(t)) {
                reply.content = Some(rs.unwrap_answer(v).to_string());
            }
        }
    }
    Ok(reply)
}

/// An `error` object of the API (`{code, message, status}`) as the typed error.
pub(crate) fn api_error(provider: &str, e: &Value, secret: Option<&str>) -> LlmError {
    let provider = provider.to_owned();
    let message = scrub(e.get("message").and_then(Value::as_str).unwrap_or("unknown error"), secret);
    let code = e.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    match (e.get("status").and_then(Value::as_str).unwrap_or_default(), code) {
        ("RESOURCE_EXHAUSTED", _) | (_, Some(429)) => {
            LlmError::RateLimited { provider, attempts: 1, retry_after: None }
        }
        ("UNAUTHENTICATED" | "PERMISSION_DENIED", _) | (_, Some(401 | 403)) => {
            LlmError::Auth { provider, status: code.unwrap_or(401) }
        }
        (_, Some(c)) if (400..500).contains(&c) => LlmError::BadRequest { provider, status: c, message },
        (_, c) => LlmError::Server { provider, status: c.unwrap_or(500), attempts: 1, message, retry_after: None },
    }
}

/// The API answers an invalid key with HTTP 400 (`API_KEY_INVALID`): an authentication failure.
fn key_refused(e: LlmError) -> LlmError {
    match e {
        LlmError::BadRequest { provider, status, message }
            if message.contains("API key not valid") || message.contains("API key expired") =>
        {
            LlmError::Auth { provider, status }
        }
        other => other,
    }
}

#[async_trait]
impl ChatModel for GeminiModel {
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
        // Before any download of the message's media.
        p.check_key()?;
        let messages = crate::openai::inline_files(messages, Inline::FilesAndUrls, &self.http).await?;
        let body = self.request_body(&messages, tools, settings);
        let secret = p.api_key.as_ref().map(|k| k.expose());
        let mut stream = settings.stream.as_ref().map(|sink| GeminiStream::new(&p.name, sink, secret));
        let (reply, requests) = provider_request(
            &self.http,
            p,
            &self.path(stream.is_some()),
            ("x-goog-api-key", str::to_owned),
            HeaderMap::new(),
            &body,
            settings.timeout,
            stream.as_mut().map(|s| s as &mut dyn StreamedReply),
        )
        .await
        .map_err(key_refused)?;
        let mut reply = parse_reply(&p.name, &reply, settings.response_schema.as_ref())?;
        reply.requests = requests;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ReasoningSettings;

    fn model() -> GeminiModel {
        GeminiModel::new(Arc::new(ResolvedProvider::for_tests("gemini")), "gemini-x", HttpClient::new().unwrap())
    }

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments: json!({"a": 1}) }
    }

    #[test]
    fn replies_without_candidates_blocked_prompts_and_safety_stops() {
        let e = parse_reply("gemini", &json!({"usageMetadata": {"promptTokenCount": 3}}), None).unwrap_err();
        assert!(matches!(&e, LlmError::Malformed { message, .. } if message.contains("candidates")), "{e:?}");
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"},
            {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}]},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "responseId": "r1"});
        let r = parse_reply("gemini", &blocked, None).unwrap();
        assert_eq!(r.refusal.as_deref(), Some("the prompt was blocked (blockReason SAFETY: HARM_CATEGORY_HARASSMENT)"));
        assert_eq!((r.content, r.stop_reason.as_deref(), r.usage), (None, Some("SAFETY"), TokenUsage::new(7, 0)));
        assert_eq!(r.request_id.as_deref(), Some("r1"));
        let safety = json!({"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "MEDIUM", "blocked": true}]}]});
        let r = parse_reply("gemini", &safety, None).unwrap();
        assert_eq!(
            r.refusal.as_deref(),
            Some("the answer was blocked (finishReason SAFETY: HARM_CATEGORY_DANGEROUS_CONTENT)")
        );
        assert_eq!(r.content, None);
        for reason in ["RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST"] {
            let v = json!({"candidates": [{"content": {"parts": [{"text": "partial"}]}, "finishReason": reason}]});
            let r = parse_reply("gemini", &v, None).unwrap();
            assert_eq!(r.refusal, Some(format!("the answer was blocked (finishReason {reason})")));
        }
        let v = json!({"candidates": [{"content": {"parts": [{"text": "cut"}]}, "finishReason": "MAX_TOKENS"}]});
        let r = parse_reply("gemini", &v, None).unwrap();
        assert!(r.truncated() && r.refusal.is_none());
        let v = json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": "bad args"}]});
        let e = parse_reply("gemini", &v, None).unwrap_err();
        assert!(matches!(&e, LlmError::Malformed { message, .. } if message.contains("bad args")), "{e:?}");
        let v = json!({"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]});
        assert!(parse_reply("gemini", &v, None).is_err());
        let v = json!({"candidates": [{"content": {"parts": "x"}}]});
        assert!(parse_reply("gemini", &v, None).is_err());
    }

    #[test]
    fn thoughts_calls_usage_and_ids() {
        let v = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "Weighing it.", "thought": true, "thoughtSignature": "s0"},
            {"text": "Calling."},
            {"functionCall": {"name": "add", "args": {"a": 2}}, "thoughtSignature": "s1"},
            {"functionCall": {"id": "fc-9", "name": "mul"}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                "cachedContentTokenCount": 60, "totalTokenCount": 150},
            "modelVersion": "gemini-2.5-flash-001", "responseId": "abc"});
        let r = parse_reply("gemini", &v, None).unwrap();
        assert_eq!(r.content.as_deref(), Some("Calling."));
        assert_eq!(
            r.tool_calls,
            vec![
                ToolCall { id: "call_0".into(), name: "add".into(), arguments: json!({"a": 2}) },
                ToolCall { id: "fc-9".into(), name: "mul".into(), arguments: json!({}) },
            ]
        );
        assert_eq!(
            r.reasoning,
            vec![
                ReasoningBlock { text: "Weighing it.".into(), signature: Some("s0".into()), redacted: None },
                ReasoningBlock { signature: Some("s1".into()), ..Default::default() },
            ]
        );
        assert_eq!(r.usage, TokenUsage::new(100, 50).with_cache(60, 0).with_reasoning(30));
        assert_eq!(r.response_model.as_deref(), Some("gemini-2.5-flash-001"));
        // Sent back: the thought, the text, the calls (the signature on the first call; local ids not sent).
        let parts = &model().request_body(&[ChatMessage::user("q"), r.to_message()], &[], &Default::default())
            ["contents"][1]["parts"];
        assert_eq!(parts[0], json!({"text": "Weighing it.", "thought": true, "thoughtSignature": "s0"}));
        assert_eq!(parts[1], json!({"text": "Calling."}));
        assert_eq!(parts[2], json!({"functionCall": {"name": "add", "args": {"a": 2}}, "thoughtSignature": "s1"}));
        assert_eq!(parts[3], json!({"functionCall": {"name": "mul", "args": {}, "id": "fc-9"}}));
    }

    #[test]
    fn body_has_system_merged_turns_and_named_function_responses() {
        let msgs = [
            ChatMessage::system("be brief"),
            ChatMessage::user("hi"),
            ChatMessage::assistant_tool_calls("", vec![call("call_0", "add"), call("call_1", "mul")]),
            ChatMessage::tool_result("call_0", "{\"sum\": 3}"),
            ChatMessage::tool_error("call_1", "boom"),
            ChatMessage::assistant_tool_calls("", vec![call("call_0", "neg")]),
            ChatMessage::tool_result("call_0", "-1"),
        ];
        let settings = ChatSettings {
            temperature: Some(0.2),
            tool_choice: ToolChoice::Tool("add".into()),
            extra: json!({"top_k": 40, "stop": "END", "safetySettings": [], "generationConfig": {"maxOutputTokens": 1, "seed": 3},
                "contents": "evil"}).as_object().unwrap().clone(),
            ..Default::default()
        };
        let tools = [
            ToolSpec::new("add", "Adds", json!({"type": "object", "properties": {"a": {"type": "integer"}}})),
            ToolSpec::new("now", "The time", json!({"type": "object"})),
        ];
        let b = model().request_body(&msgs, &tools, &settings);
        assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
        let contents = b["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 5, "{contents:?}");
        assert_eq!(contents[1]["role"], "model");
        assert_eq!(contents[1]["parts"][1], json!({"functionCall": {"name": "mul", "args": {"a": 1}}}));
        assert_eq!(contents[2]["role"], "user");
        assert_eq!(
            contents[2]["parts"],
            json!([
            {"functionResponse": {"name": "add", "response": {"output": {"sum": 3}}}},
            {"functionResponse": {"name": "mul", "response": {"error": "boom"}}}])
        );
        // The id `call_0` is reused by a later turn: the nearest call before the result names it.
        assert_eq!(contents[4]["parts"][0]["functionResponse"]["name"], "neg");
        assert_eq!(b["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["add"]}}));
        let decls = &b["tools"][0]["functionDeclarations"];
        assert_eq!(decls[0]["parameters"], json!({"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}}));
        assert_eq!(decls[1], json!({"name": "now", "description": "The time"}));
        let config = &b["generationConfig"];
        assert_eq!(config["maxOutputTokens"], 4096, "ours win over extra");
        assert_eq!(
            (config["temperature"].clone(), config["topK"].clone(), config["seed"].clone()),
            (json!(0.2), json!(40), json!(3))
        );
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(b["safetySettings"], json!([]));
        assert!(b["contents"].is_array());
        assert!(config.get("thinkingConfig").is_none() && config.get("responseSchema").is_none());
    }

    #[test]
    fn thinking_budget_and_paths() {
        let settings = |budget: Option<u64>, max: Option<u64>| ChatSettings {
            reasoning: ReasoningSettings { budget_tokens: budget, effort: Some(crate::chat::ReasoningEffort::Low) },
            max_tokens: max,
            ..Default::default()
        };
        let b = model().request_body(&[ChatMessage::user("x")], &[], &settings(None, None));
        assert_eq!(b["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 2048, "includeThoughts": true}));
        let b = model().request_body(&[ChatMessage::user("x")], &[], &settings(Some(0), None));
        assert_eq!(b["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 0, "includeThoughts": false}));
        let b = model().request_body(&[ChatMessage::user("x")], &[], &settings(Some(50_000), Some(1000)));
        assert_eq!(b["generationConfig"]["thinkingConfig"]["thinkingBudget"], 999);
        assert_eq!(model().path(false), "/v1beta/models/gemini-x:generateContent");
        assert_eq!(model().path(true), "/v1beta/models/gemini-x:streamGenerateContent?alt=sse");
        let mut p = ResolvedProvider::for_tests("gemini");
        p.base_url = "https://proxy.test/v1".into();
        let m = GeminiModel::new(Arc::new(p), "models/gemini-y", HttpClient::new().unwrap());
        assert_eq!(m.path(false), "/models/gemini-y:generateContent", "the base URL keeps its version");
    }

    #[test]
    fn non_object_answers_are_unwrapped() {
        let rs = ResponseSchema::new(json!({"type": "array", "items": {"type": "integer"}}));
        let b = model().request_body(
            &[ChatMessage::user("x")],
            &[],
            &ChatSettings { response_schema: Some(rs.clone()), ..Default::default() },
        );
        assert_eq!(
            b["generationConfig"]["responseSchema"],
            json!({"type": "OBJECT", "required": ["value"],
            "properties": {"value": {"type": "ARRAY", "items": {"type": "INTEGER"}}}})
        );
        let v =
            json!({"candidates": [{"content": {"parts": [{"text": "{\"value\": [1, 2]}"}]}, "finishReason": "STOP"}]});
        assert_eq!(parse_reply("gemini", &v, Some(&rs)).unwrap().content.as_deref(), Some("[1,2]"));
    }

    #[test]
    fn api_errors_are_typed() {
        let e = |v: Value| api_error("gemini", &v, None);
        assert!(matches!(e(json!({"code": 429, "status": "RESOURCE_EXHAUSTED"})), LlmError::RateLimited { .. }));
        assert!(matches!(e(json!({"code": 403, "status": "PERMISSION_DENIED"})), LlmError::Auth { status: 403, .. }));
        assert!(matches!(
            e(json!({"code": 400, "status": "INVALID_ARGUMENT", "message": "m"})),
            LlmError::BadRequest { status: 400, .. }
        ));
        assert!(matches!(e(json!({"code": 500, "status": "INTERNAL"})), LlmError::Server { status: 500, .. }));
        let bad_key = LlmError::BadRequest {
            provider: "gemini".into(),
            status: 400,
            message: "API key not valid. Please pass a valid API key.".into(),
        };
        assert_eq!(key_refused(bad_key), LlmError::Auth { provider: "gemini".into(), status: 400 });
        let other = LlmError::BadRequest { provider: "gemini".into(), status: 400, message: "bad schema".into() };
        assert!(matches!(key_refused(other), LlmError::BadRequest { .. }));
    }

    #[test]
    fn schemas_beyond_the_subset_are_sent_as_json_schema() {
        let rs =
            ResponseSchema::new(json!({"$schema": "x", "type": "object", "additionalProperties": {"type": "integer"}}));
        let settings = ChatSettings { response_schema: Some(rs), ..Default::default() };
        let b = model().request_body(&[ChatMessage::user("x")], &[], &settings);
        let config = &b["generationConfig"];
        assert_eq!(
            config["responseJsonSchema"],
            json!({"type": "object", "additionalProperties": {"type": "integer"}})
        );
        assert_eq!(config["responseMimeType"], "application/json");
        assert!(config.get("responseSchema").is_none());
    }
}
