//! `openai-responses:MODEL` — the OpenAI Responses API (`POST {base_url}/responses`, `Authorization: Bearer`),
//! where OpenAI's reasoning models do best. Also any `[providers.NAME]` with `kind = "openai-responses"`.
//!
//! The transcript becomes `input` items: system messages the top-level `instructions`; user messages
//! `{role: user, content: [input_text | input_image | input_file]}`; an assistant turn its `reasoning` items
//! (those that came back with `encrypted_content`: nothing is stored server-side, `store: false`), an
//! `output_text` message and its `function_call` items; tool results `function_call_output` items.
//! Structured output is `text.format: {type: json_schema, name, schema, strict}` (non-object schemas wrapped
//! in `{value: …}`); tools are `{type: function, name, description, parameters, strict}`; reasoning effort is
//! `reasoning: {effort, summary: "auto"}`, and reasoning models (the ones [`TokenLimitParam::for_model`] gives
//! `max_completion_tokens`) get no `temperature`/`top_p` and `include: ["reasoning.encrypted_content"]`.
//!
//! The reply's `output` items are read into text (`output_text`), a refusal (`refusal`), tool calls
//! (`function_call`, id = `call_id`) and [`ReasoningBlock`]s (summary text, the item id as `signature`,
//! `encrypted_content` as `redacted`); `status: incomplete` with `incomplete_details.reason` gives the stop
//! reason (`max_output_tokens`, which [`ChatReply::truncated`] recognises). A stream (`stream: true`) is a
//! sequence of named events: text deltas go to the sink as they arrive and the reply is the response of
//! `response.completed` (or `response.incomplete`), completed from the item events when it lists no output; a
//! stream without that event is [`LlmError::Malformed`], `response.failed` and `error` events are typed errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{DeltaSink, TokenUsage};
use flujo_http::reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use crate::chat::{ChatMessage, ChatModel, ChatReply, ChatSettings, ReasoningBlock, Role, TokenLimitParam};
use crate::config::ResolvedProvider;
use crate::error::LlmError;
use crate::http::{provider_request, HttpClient};
use crate::media::{ContentPart, Inline, MediaSource};
use crate::openai::inline_files;
use crate::stream::StreamedReply;
use crate::structured::repair_json;
use crate::tools::{openai_tools, parse_openai_tool_calls, ToolChoice, ToolSpec};

/// A Responses API model.
#[derive(Debug, Clone)]
pub struct ResponsesModel {
    provider: Arc<ResolvedProvider>,
    model: String,
    http: HttpClient,
}

/// True for OpenAI's reasoning models (o-series, gpt-5): no sampling settings, encrypted reasoning kept.
fn reasoning_model(model: &str) -> bool {
    TokenLimitParam::for_model(model) == TokenLimitParam::MaxCompletionTokens
}

impl ResponsesModel {
    pub fn new(provider: Arc<ResolvedProvider>, model: impl Into<String>, http: HttpClient) -> Self {
        ResponsesModel { provider, model: model.into(), http }
    }

    /// The request body for one turn.
    pub fn request_body(&self, messages: &[ChatMessage], tools: &[ToolSpec], settings: &ChatSettings) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        let (instructions, input) = wire_input(messages);
        body.insert("input".into(), Value::Array(input));
        if let Some(text) = instructions {
            body.insert("instructions".into(), json!(text));
        }
        body.insert("max_output_tokens".into(), json!(settings.effective_max_tokens()));
        let reasoning_model = reasoning_model(&self.model);
        if !reasoning_model {
            if let Some(t) = settings.temperature {
                body.insert("temperature".into(), json!(t));
            }
            if let Some(p) = settings.top_p {
                body.insert("top_p".into(), json!(p));
            }
        }
        if let Some(effort) = settings.reasoning.effort {
            body.insert("reasoning".into(), json!({"effort": effort.as_str(), "summary": "auto"}));
        }
        if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(wire_tools(tools)));
            body.insert("tool_choice".into(), tool_choice(&settings.tool_choice));
            if let Some(parallel) = settings.parallel_tool_calls {
                body.insert("parallel_tool_calls".into(), json!(parallel));
            }
        }
        if let Some(rs) = &settings.response_schema {
            body.insert(
                "text".into(),
                json!({"format": {"type": "json_schema", "name": rs.name, "schema": rs.wire_schema(), "strict": rs.strict}}),
            );
        }
        body.insert("store".into(), json!(false));
        if reasoning_model || settings.reasoning.effort.is_some() {
            // Without storage, reasoning goes back to the model in a tool loop only as encrypted content.
            body.insert("include".into(), json!(["reasoning.encrypted_content"]));
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

/// Function tools in the Responses shape (flat, with `strict` when the schema allows it: the API makes
/// functions strict unless told otherwise).
fn wire_tools(tools: &[ToolSpec]) -> Vec<Value> {
    let chat_tools = openai_tools(tools);
    chat_tools
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let f = &t["function"];
            let strict = crate::chat::ResponseSchema::new(f["parameters"].clone()).strict;
            json!({"type": "function", "name": f["name"], "description": f["description"],
                "parameters": f["parameters"], "strict": strict})
        })
        .collect()
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
    }
}

/// The `instructions` (the system messages) and the `input` items of a transcript.
fn wire_input(messages: &[ChatMessage]) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut items = Vec::new();
    for m in messages {
        match m.role {
            Role::System => system.push(&m.content),
            Role::User => {
                let content: Vec<Value> = if m.parts.is_empty() {
                    vec![json!({"type": "input_text", "text": m.content})]
                } else {
                    m.parts.iter().map(wire_part).collect()
                };
                items.push(json!({"role": "user", "content": content}));
            }
            Role::Assistant => {
                items.extend(m.reasoning.iter().filter_map(reasoning_item));
                if !m.content.is_empty() {
                    items.push(json!({"role": "assistant", "content": [{"type": "output_text", "text": m.content}]}));
                }
                for call in &m.tool_calls {
                    let arguments = match &call.arguments {
                        Value::String(raw) => raw.clone(),
                        other => other.to_string(),
                    };
                    items.push(json!({"type": "function_call", "call_id": call.id, "name": call.name,
                        "arguments": arguments}));
                }
            }
            Role::Tool => items.push(json!({"type": "function_call_output",
                "call_id": m.tool_call_id.clone().unwrap_or_default(), "output": m.content})),
        }
    }
    let instructions = (!system.is_empty()).then(|| system.join("\n\n"));
    (instructions, items)
}

/// A reasoning block sent back: only one that came with `encrypted_content` (the model cannot use the
/// summary alone, and nothing is stored server-side).
fn reasoning_item(r: &ReasoningBlock) -> Option<Value> {
    let encrypted = r.redacted.as_ref()?;
    let summary: Vec<Value> =
        if r.text.is_empty() { Vec::new() } else { vec![json!({"type": "summary_text", "text": r.text})] };
    let mut item = json!({"type": "reasoning", "summary": summary, "encrypted_content": encrypted});
    if let Some(id) = &r.signature {
        item["id"] = json!(id);
    }
    Some(item)
}

/// A content part as a Responses input: `input_text`, `input_image` (a URL or a `data:` URI), `input_file`
/// (a PDF as a `data:` URI, or its URL).
fn wire_part(part: &ContentPart) -> Value {
    match part {
        ContentPart::Text { text } => json!({"type": "input_text", "text": text}),
        ContentPart::Image { source, .. } => {
            let url = match (source, part.inline()) {
                (MediaSource::Url { url }, _) => url.clone(),
                (_, Some((media_type, data))) => format!("data:{media_type};base64,{data}"),
                (_, None) => String::new(),
            };
            json!({"type": "input_image", "image_url": url, "detail": "auto"})
        }
        ContentPart::Document { name, source, .. } => match (source, part.inline()) {
            (_, Some((media_type, data))) => json!({"type": "input_file",
                "filename": name.clone().unwrap_or_else(|| "document.pdf".into()),
                "file_data": format!("data:{media_type};base64,{data}")}),
            (MediaSource::Url { url }, _) => json!({"type": "input_file", "file_url": url}),
            _ => json!({"type": "input_text", "text": part.describe()}),
        },
    }
}

/// The usage of a response: `input_tokens`, `output_tokens` and their details `input_tokens_details.
/// cached_tokens`, `output_tokens_details.reasoning_tokens`.
fn parse_usage(usage: Option<&Value>) -> TokenUsage {
    let count = |p: &str| usage.and_then(|u| u.pointer(p)).and_then(Value::as_u64).unwrap_or(0);
    TokenUsage::new(count("/input_tokens"), count("/output_tokens"))
        .with_cache(count("/input_tokens_details/cached_tokens"), 0)
        .with_reasoning(count("/output_tokens_details/reasoning_tokens"))
}

/// The error of a failed response (`response.error`) or of an `error` stream event: `{code, message}`.
fn response_error(provider: &str, error: Option<&Value>) -> LlmError {
    let provider = provider.to_owned();
    let field = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str);
    let message = field("message").unwrap_or("the response failed without an error message").to_owned();
    match field("code") {
        Some("rate_limit_exceeded") => LlmError::RateLimited { provider, attempts: 1, retry_after: None },
        Some("server_error" | "vector_store_timeout") | None => {
            LlmError::Server { provider, status: 500, attempts: 1, message, retry_after: None }
        }
        Some(code) => LlmError::BadRequest { provider, status: 400, message: format!("{code}: {message}") },
    }
}

/// Parses a Responses API reply (the body of a non-streamed call, or the response a stream rebuilt).
pub(crate) fn parse_reply(provider: &str, v: &Value) -> Result<ChatReply, LlmError> {
    let malformed = |what: &str| LlmError::Malformed { provider: provider.to_owned(), message: what.to_owned() };
    let status = v.get("status").and_then(Value::as_str);
    if status == Some("failed") {
        return Err(response_error(provider, v.get("error")));
    }
    let output =
        v.get("output").and_then(Value::as_array).ok_or_else(|| malformed("no `output` array in the reply"))?;
    let mut text: Option<String> = None;
    let mut refusal: Option<String> = None;
    let mut calls = Vec::new();
    let mut reasoning = Vec::new();
    for item in output {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => {
                            let t = part
                                .get("text")
                                .and_then(Value::as_str)
                                .ok_or_else(|| malformed("an output_text part has no text"))?;
                            text.get_or_insert_with(String::new).push_str(t);
                        }
                        Some("refusal") => {
                            let r = part.get("refusal").and_then(Value::as_str).unwrap_or_default();
                            refusal.get_or_insert_with(String::new).push_str(r);
                        }
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                let field = |k: &str| item.get(k).cloned().unwrap_or(Value::Null);
                calls.push(json!({"id": field("call_id"), "type": "function",
                    "function": {"name": field("name"), "arguments": field("arguments")}}));
            }
            Some("reasoning") => {
                let summary: Vec<&str> = item
                    .get("summary")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.get("text").and_then(Value::as_str))
                    .collect();
                reasoning.push(ReasoningBlock {
                    text: summary.join("\n\n"),
                    signature: item.get("id").and_then(Value::as_str).map(str::to_owned),
                    redacted: item.get("encrypted_content").and_then(Value::as_str).map(str::to_owned),
                });
            }
            _ => {}
        }
    }
    let tool_calls = parse_openai_tool_calls(Some(&Value::Array(calls)))
        .ok_or_else(|| malformed("a function_call item lacks its call_id or name"))?;
    let incomplete = v.pointer("/incomplete_details/reason").and_then(Value::as_str);
    let stop_reason = match (status, incomplete) {
        (Some("incomplete"), Some(reason)) => reason.to_owned(),
        (Some("incomplete"), None) => "incomplete".to_owned(),
        _ if !tool_calls.is_empty() => "tool_calls".to_owned(),
        _ => "stop".to_owned(),
    };
    let refusal = refusal.filter(|r| !r.is_empty()).or_else(|| {
        (incomplete == Some("content_filter")).then(|| "the answer was stopped by the content filter".into())
    });
    Ok(ChatReply {
        content: text,
        tool_calls,
        usage: parse_usage(v.get("usage")),
        stop_reason: Some(stop_reason),
        refusal,
        requests: 0,
        reasoning,
        request_id: v.get("id").and_then(Value::as_str).map(str::to_owned),
        response_model: v.get("model").and_then(Value::as_str).map(str::to_owned),
    })
}

#[async_trait]
impl ChatModel for ResponsesModel {
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
        let mut stream = settings.stream.as_ref().map(|sink| ResponsesStream::new(&p.name, sink));
        let (reply, requests) = provider_request(
            &self.http,
            p,
            "/responses",
            ("authorization", |key| format!("Bearer {key}")),
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

/// Rebuilds a Responses API reply from its stream's named events.
pub(crate) struct ResponsesStream<'a> {
    provider: &'a str,
    sink: &'a DeltaSink,
    /// Output items by `output_index`, as the item events built them.
    items: BTreeMap<u64, Value>,
    /// The response of `response.completed` / `response.incomplete`.
    response: Option<Value>,
}

impl<'a> ResponsesStream<'a> {
    pub fn new(provider: &'a str, sink: &'a DeltaSink) -> Self {
        ResponsesStream { provider, sink, items: BTreeMap::new(), response: None }
    }

    fn malformed(&self, message: impl Into<String>) -> LlmError {
        LlmError::Malformed { provider: self.provider.to_owned(), message: message.into() }
    }

    /// The content part `content_index` of message item `output_index` (a part of type `kind` appended when
    /// the index is past the parts so far); `None` when the server's item is not an object.
    fn part(&mut self, v: &Value, kind: &str) -> Option<&mut Map<String, Value>> {
        let index = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let item = self.items.entry(index("output_index")).or_insert_with(|| json!({"type": "message"}));
        let content = item.as_object_mut()?.entry("content").or_insert_with(|| json!([]));
        if !content.is_array() {
            *content = json!([]);
        }
        let content = content.as_array_mut()?;
        let ci = usize::try_from(index("content_index")).unwrap_or(usize::MAX).min(content.len());
        if ci == content.len() {
            content.push(json!({"type": kind}));
        }
        content[ci].as_object_mut()
    }
}

/// Appends `piece` to the string field `field` of `target`.
fn append(target: Option<&mut Map<String, Value>>, field: &str, piece: &str) {
    if let Some(target) = target {
        match target.get_mut(field) {
            Some(Value::String(whole)) => whole.push_str(piece),
            _ => {
                target.insert(field.to_owned(), Value::String(piece.to_owned()));
            }
        }
    }
}

impl StreamedReply for ResponsesStream<'_> {
    fn on_event(&mut self, event: &str, data: &str) -> Result<(), LlmError> {
        let v: Value =
            serde_json::from_str(data).map_err(|e| self.malformed(format!("a stream event is not JSON ({e})")))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        let output_index = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        let delta = v.get("delta").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = v.get("item").filter(|i| i.is_object()) {
                    self.items.insert(output_index, item.clone());
                }
            }
            "response.content_part.added" => {
                if let Some(part) = v.get("part").and_then(Value::as_object) {
                    if let Some(slot) = self.part(&v, "output_text") {
                        *slot = part.clone();
                    }
                }
            }
            "response.output_text.delta" => {
                self.sink.send(delta);
                append(self.part(&v, "output_text"), "text", delta);
            }
            "response.refusal.delta" => append(self.part(&v, "refusal"), "refusal", delta),
            "response.function_call_arguments.delta" => {
                let item = self.items.entry(output_index).or_insert_with(|| json!({"type": "function_call"}));
                append(item.as_object_mut(), "arguments", delta);
            }
            "response.completed" | "response.incomplete" => {
                let response = v.get("response").filter(|r| r.is_object());
                self.response =
                    Some(response.cloned().ok_or_else(|| self.malformed(format!("`{kind}` without its response")))?);
            }
            "response.failed" => return Err(response_error(self.provider, v.pointer("/response/error"))),
            "error" => return Err(response_error(self.provider, Some(v.get("error").unwrap_or(&v)))),
            // `response.created`, `response.in_progress`, `…done` events, reasoning summaries, future events.
            _ => {}
        }
        Ok(())
    }

    /// The response as a non-streamed call returns it.
    fn finish(&mut self) -> Result<Value, LlmError> {
        let Some(mut response) = self.response.take() else {
            return Err(self.malformed("the stream ended before the reply was complete"));
        };
        let listed = response.get("output").and_then(Value::as_array).is_some_and(|o| !o.is_empty());
        if !listed && !self.items.is_empty() {
            response["output"] = Value::Array(std::mem::take(&mut self.items).into_values().collect());
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::chat::{ReasoningEffort, ReasoningSettings, ResponseSchema};
    use crate::tools::ToolCall;

    fn model(name: &str) -> ResponsesModel {
        ResponsesModel::new(Arc::new(ResolvedProvider::for_tests("openai-responses")), name, HttpClient::new().unwrap())
    }

    #[test]
    fn body_has_input_items_tools_schema_and_reasoning() {
        let call = ToolCall { id: "call_1".into(), name: "add".into(), arguments: json!({"a": 1}) };
        let thought =
            ReasoningBlock { text: "sum".into(), signature: Some("rs_1".into()), redacted: Some("enc".into()) };
        let shown = ReasoningBlock { text: "not sent".into(), ..Default::default() };
        let mut assistant = ChatMessage::assistant_tool_calls("Let me add.", vec![call]);
        assistant.reasoning = vec![thought, shown];
        let msgs = [
            ChatMessage::system("Be brief."),
            ChatMessage::user("1 + 0?"),
            assistant,
            ChatMessage::tool_result("call_1", "1"),
        ];
        let settings = ChatSettings {
            temperature: Some(0.2),
            response_schema: Some(ResponseSchema::new(json!({"type": "array"}))),
            tool_choice: ToolChoice::Tool("add".into()),
            parallel_tool_calls: Some(false),
            extra: [("store".to_owned(), json!(true)), ("user".to_owned(), json!("u1"))].into_iter().collect(),
            ..Default::default()
        };
        let tools = [ToolSpec::new("add", "Adds", json!({"type": "object"}))];
        let b = model("gpt-4.1").request_body(&msgs, &tools, &settings);
        assert_eq!(b["instructions"], "Be brief.");
        assert_eq!(
            b["input"],
            json!([
                {"role": "user", "content": [{"type": "input_text", "text": "1 + 0?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "sum"}],
                    "encrypted_content": "enc"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Let me add."}]},
                {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "1"},
            ])
        );
        assert_eq!(
            b["tools"],
            json!([{"type": "function", "name": "add", "description": "Adds", "parameters": {"type": "object"},
                "strict": false}])
        );
        assert_eq!(b["tool_choice"], json!({"type": "function", "name": "add"}));
        assert_eq!(b["parallel_tool_calls"], false);
        assert_eq!(b["text"]["format"]["type"], "json_schema");
        assert_eq!(b["text"]["format"]["schema"]["required"], json!(["value"]));
        assert_eq!((b["max_output_tokens"].as_u64(), b["temperature"].as_f64()), (Some(4096), Some(0.2)));
        assert_eq!((b["store"].as_bool(), b["user"].as_str()), (Some(false), Some("u1")), "extra never overrides");
        assert!(b.get("include").is_none() && b.get("reasoning").is_none() && b.get("stream").is_none());
        // Reasoning models: no sampling settings, encrypted reasoning included; effort as `reasoning`.
        let settings = ChatSettings {
            temperature: Some(0.2),
            top_p: Some(0.9),
            reasoning: ReasoningSettings { effort: Some(ReasoningEffort::Low), budget_tokens: None },
            ..Default::default()
        };
        let b = model("o4-mini").request_body(&msgs, &[], &settings);
        assert!(b.get("temperature").is_none() && b.get("top_p").is_none() && b.get("tools").is_none());
        assert_eq!(b["reasoning"], json!({"effort": "low", "summary": "auto"}));
        assert_eq!(b["include"], json!(["reasoning.encrypted_content"]));
    }

    #[test]
    fn parses_output_items_usage_and_stop_reasons() {
        let reply = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "o4-mini-2025",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "a"},
                    {"type": "summary_text", "text": "b"}], "encrypted_content": "enc"},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Hi", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{\"x\":1}"}],
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7,
                "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 17}});
        let r = parse_reply("p", &reply).unwrap();
        assert_eq!(r.content.as_deref(), Some("Hi"));
        assert_eq!(r.tool_calls, vec![ToolCall { id: "call_1".into(), name: "f".into(), arguments: json!({"x": 1}) }]);
        assert_eq!(r.usage, TokenUsage::new(10, 7).with_cache(4, 0).with_reasoning(3));
        assert_eq!(
            r.reasoning,
            vec![ReasoningBlock {
                text: "a\n\nb".into(),
                signature: Some("rs_1".into()),
                redacted: Some("enc".into())
            }]
        );
        assert_eq!((r.stop_reason.as_deref(), r.request_id.as_deref()), (Some("tool_calls"), Some("resp_1")));
        assert_eq!(r.response_model.as_deref(), Some("o4-mini-2025"));
        let cut = json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []});
        assert!(parse_reply("p", &cut).unwrap().truncated());
        let refused = json!({"status": "completed", "output": [{"type": "message", "content": [
            {"type": "refusal", "refusal": "No."}]}]});
        assert_eq!(parse_reply("p", &refused).unwrap().refusal.as_deref(), Some("No."));
        let failed = json!({"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow down"}});
        assert!(matches!(parse_reply("p", &failed), Err(LlmError::RateLimited { .. })));
        assert!(matches!(parse_reply("p", &json!({"status": "completed"})), Err(LlmError::Malformed { .. })));
    }

    fn collecting() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned())), seen)
    }

    #[test]
    fn streams_rebuild_from_the_completed_response_or_the_item_events() {
        let events = [
            ("response.created", json!({"type": "response.created", "response": {"id": "resp_1", "output": []}})),
            (
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
            ),
            (
                "response.content_part.added",
                json!({"type": "response.content_part.added", "output_index": 0,
                "content_index": 0, "part": {"type": "output_text", "text": ""}}),
            ),
            (
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "output_index": 0,
                "content_index": 0, "delta": "Hel"}),
            ),
            (
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "output_index": 0,
                "content_index": 0, "delta": "lo"}),
            ),
            (
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 1,
                "item": {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""}}),
            ),
            (
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta",
                "output_index": 1, "delta": "{\"x\":"}),
            ),
            (
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta",
                "output_index": 1, "delta": "2}"}),
            ),
            // A completion event whose response lists no output: the items come from the events.
            (
                "response.completed",
                json!({"type": "response.completed", "response": {"id": "resp_1",
                "status": "completed", "output": [], "usage": {"input_tokens": 3, "output_tokens": 2}}}),
            ),
        ];
        let (sink, seen) = collecting();
        let mut s = ResponsesStream::new("p", &sink);
        for (event, data) in &events {
            s.on_event(event, &data.to_string()).unwrap();
        }
        let r = parse_reply("p", &s.finish().unwrap()).unwrap();
        assert_eq!(r.content.as_deref(), Some("Hello"));
        assert_eq!(r.tool_calls[0].arguments, json!({"x": 2}));
        assert_eq!(r.usage, TokenUsage::new(3, 2));
        assert_eq!(*seen.lock().unwrap(), ["Hel", "lo"]);
        // Without the completion event: malformed.
        let mut s = ResponsesStream::new("p", &sink);
        for (event, data) in &events[..events.len() - 1] {
            s.on_event(event, &data.to_string()).unwrap();
        }
        assert!(matches!(s.finish(), Err(LlmError::Malformed { .. })));
        // Failures are typed.
        let mut s = ResponsesStream::new("p", &sink);
        let e = s.on_event("error", r#"{"type":"error","code":"server_error","message":"boom","param":null}"#);
        assert!(matches!(e, Err(LlmError::Server { status: 500, .. })), "{e:?}");
        let failed = json!({"type": "response.failed", "response": {"status": "failed",
            "error": {"code": "invalid_prompt", "message": "bad"}}});
        let e = s.on_event("response.failed", &failed.to_string()).unwrap_err();
        assert_eq!(
            e,
            LlmError::BadRequest { provider: "p".into(), status: 400, message: "invalid_prompt: bad".into() }
        );
        assert!(matches!(s.on_event("x", "not json"), Err(LlmError::Malformed { .. })));
    }
}
