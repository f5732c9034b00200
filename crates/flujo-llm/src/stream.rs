//! Streamed replies: when a call carries a [`DeltaSink`] (`ChatSettings::stream`), the providers ask for a
//! server-sent-events stream, pass each piece of generated text to the sink as it arrives, and rebuild from
//! the events the same JSON a non-streamed call returns — so one parser (`parse_reply` of each provider) reads
//! both, and usage, tool calls and structured output behave identically.
//!
//! - OpenAI Chat Completions: `data: {choices: [{delta: {content, tool_calls: [{index, id, function: {name,
//!   arguments}}]}, finish_reason}]}` chunks, a last chunk with `usage` (`stream_options.include_usage`),
//!   then `data: [DONE]`.
//! - Anthropic Messages: `message_start` (input usage), `content_block_start` / `content_block_delta`
//!   (`text_delta`, `input_json_delta`) / `content_block_stop`, `message_delta` (stop reason, output usage),
//!   `message_stop`; `error` events carry the provider's error.
//!
//! A stream that ends before its final event is a [`LlmError::Malformed`] reply (never a silently truncated
//! answer).

use std::collections::BTreeMap;

use flujo_core::DeltaSink;
use serde_json::{json, Map, Value};

use crate::error::LlmError;

fn malformed(provider: &str, message: impl Into<String>) -> LlmError {
    LlmError::Malformed { provider: provider.to_owned(), message: message.into() }
}

fn parse_data(provider: &str, data: &str) -> Result<Value, LlmError> {
    serde_json::from_str(data).map_err(|e| malformed(provider, format!("a stream event is not JSON ({e})")))
}

/// An `error` object inside a stream (both shapes: `{error: {type, message}}`).
fn stream_error(provider: &str, v: &Value) -> Option<LlmError> {
    let e = v.get("error")?;
    let message = e.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_owned();
    let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
    let provider = provider.to_owned();
    Some(match kind {
        "overloaded_error" => LlmError::Server { provider, status: 529, attempts: 1, message, retry_after: None },
        "rate_limit_error" => LlmError::RateLimited { provider, attempts: 1, retry_after: None },
        "invalid_request_error" => LlmError::BadRequest { provider, status: 400, message },
        "authentication_error" | "permission_error" => LlmError::Auth { provider, status: 401 },
        _ => LlmError::Server { provider, status: 500, attempts: 1, message, retry_after: None },
    })
}

/// A provider's stream of events turned back into its non-streamed reply.
pub(crate) trait StreamedReply: Send {
    fn on_event(&mut self, event: &str, data: &str) -> Result<(), LlmError>;
    /// The whole reply, once the stream has ended.
    fn finish(&mut self) -> Result<Value, LlmError>;
}

#[derive(Default)]
struct PartialToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// Rebuilds a Chat Completions reply from its chunks.
pub(crate) struct OpenAiStream<'a> {
    provider: &'a str,
    sink: &'a DeltaSink,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, PartialToolCall>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    /// The chunks' `id` and `model`.
    id: Value,
    model: Value,
    done: bool,
}

impl<'a> OpenAiStream<'a> {
    pub fn new(provider: &'a str, sink: &'a DeltaSink) -> Self {
        OpenAiStream {
            provider,
            sink,
            content: None,
            refusal: None,
            tool_calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
            id: Value::Null,
            model: Value::Null,
            done: false,
        }
    }
}

impl StreamedReply for OpenAiStream<'_> {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<(), LlmError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v = parse_data(self.provider, data)?;
        if let Some(e) = stream_error(self.provider, &v) {
            return Err(e);
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        for (key, slot) in [("id", &mut self.id), ("model", &mut self.model)] {
            if let Some(x) = v.get(key).filter(|x| x.is_string()) {
                *slot = x.clone();
            }
        }
        for choice in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(f.to_owned());
            }
            let Some(delta) = choice.get("delta") else { continue };
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.sink.send(text);
                self.content.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
                self.refusal.get_or_insert_with(String::new).push_str(text);
            }
            for tc in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = tc.get("index").and_then(Value::as_u64).unwrap_or(self.tool_calls.len() as u64);
                let entry = self.tool_calls.entry(index).or_default();
                if let Some(id) = tc.get("id").and_then(Value::as_str) {
                    entry.id = id.to_owned();
                }
                if let Some(f) = tc.get("function") {
                    if let Some(n) = f.get("name").and_then(Value::as_str) {
                        entry.name.push_str(n);
                    }
                    if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                        entry.arguments.push_str(a);
                    }
                }
            }
        }
        Ok(())
    }

    /// The reply as a non-streamed call returns it.
    fn finish(&mut self) -> Result<Value, LlmError> {
        if !self.done && self.finish_reason.is_none() {
            return Err(malformed(self.provider, "the stream ended before the reply was complete"));
        }
        let tool_calls: Vec<Value> = std::mem::take(&mut self.tool_calls)
            .into_values()
            .map(|t| json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}))
            .collect();
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), self.content.take().map_or(Value::Null, Value::String));
        if let Some(r) = self.refusal.take() {
            message.insert("refusal".into(), Value::String(r));
        }
        if !tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(tool_calls));
        }
        Ok(json!({
            "id": self.id.take(),
            "model": self.model.take(),
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage.take().unwrap_or(Value::Null),
        }))
    }
}

/// Rebuilds a Messages API reply from its events.
pub(crate) struct AnthropicStream<'a> {
    provider: &'a str,
    sink: &'a DeltaSink,
    /// The forced schema tool of structured output: its JSON input is the answer, so it streams too.
    schema_tool: Option<&'a str>,
    blocks: BTreeMap<u64, Value>,
    /// `input_json_delta` pieces of tool_use blocks.
    partial_json: BTreeMap<u64, String>,
    usage: Map<String, Value>,
    stop_reason: Option<String>,
    /// `message_start`'s `id` and `model`.
    id: Value,
    model: Value,
    done: bool,
}

impl<'a> AnthropicStream<'a> {
    pub fn new(provider: &'a str, sink: &'a DeltaSink, schema_tool: Option<&'a str>) -> Self {
        AnthropicStream {
            provider,
            sink,
            schema_tool,
            blocks: BTreeMap::new(),
            partial_json: BTreeMap::new(),
            usage: Map::new(),
            stop_reason: None,
            id: Value::Null,
            model: Value::Null,
            done: false,
        }
    }

    fn add_usage(&mut self, u: Option<&Value>) {
        for (k, v) in u.and_then(Value::as_object).into_iter().flatten() {
            if v.is_u64() {
                self.usage.insert(k.clone(), v.clone());
            }
        }
    }
}

impl StreamedReply for AnthropicStream<'_> {
    fn on_event(&mut self, event: &str, data: &str) -> Result<(), LlmError> {
        let v = parse_data(self.provider, data)?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "error" => {
                return Err(stream_error(self.provider, &v)
                    .unwrap_or_else(|| malformed(self.provider, "an error event without an error")))
            }
            "message_start" => {
                self.add_usage(v.pointer("/message/usage"));
                self.id = v.pointer("/message/id").cloned().unwrap_or(Value::Null);
                self.model = v.pointer("/message/model").cloned().unwrap_or(Value::Null);
            }
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or(Value::Null);
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    self.sink.send(text);
                }
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let delta = v.get("delta").cloned().unwrap_or(Value::Null);
                let Some(block) = self.blocks.get_mut(&index) else {
                    return Err(malformed(self.provider, format!("a delta for block {index}, which was not started")));
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or_default();
                        self.sink.send(text);
                        let mut whole = block.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
                        whole.push_str(text);
                        block["text"] = Value::String(whole);
                    }
                    Some("input_json_delta") => {
                        let piece = delta.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                        let name = block.get("name").and_then(Value::as_str);
                        if name.is_some() && name == self.schema_tool {
                            self.sink.send(piece);
                        }
                        self.partial_json.entry(index).or_default().push_str(piece);
                    }
                    // Thinking is kept (it goes back to the model in a tool loop) but not streamed as answer.
                    Some(kind @ ("thinking_delta" | "signature_delta")) => {
                        let field = if kind == "thinking_delta" { "thinking" } else { "signature" };
                        let piece = delta.get(field).and_then(Value::as_str).unwrap_or_default();
                        let mut whole = block.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
                        whole.push_str(piece);
                        block[field] = Value::String(whole);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_owned());
                }
                self.add_usage(v.get("usage"));
            }
            "message_stop" => self.done = true,
            // `ping`, `content_block_stop` and future events.
            _ => {}
        }
        Ok(())
    }

    /// The reply as a non-streamed call returns it.
    fn finish(&mut self) -> Result<Value, LlmError> {
        if !self.done {
            return Err(malformed(self.provider, "the stream ended before the reply was complete"));
        }
        for (index, raw) in std::mem::take(&mut self.partial_json) {
            let input = if raw.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str::<Value>(&raw)
                    .ok()
                    .or_else(|| crate::structured::repair_json(&raw))
                    .unwrap_or(Value::String(raw))
            };
            if let Some(block) = self.blocks.get_mut(&index) {
                block["input"] = input;
            }
        }
        Ok(json!({
            "id": self.id.take(),
            "model": self.model.take(),
            "type": "message",
            "role": "assistant",
            "content": std::mem::take(&mut self.blocks).into_values().collect::<Vec<_>>(),
            "stop_reason": self.stop_reason.take(),
            "usage": std::mem::take(&mut self.usage),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn collecting() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned())), seen)
    }

    #[test]
    fn openai_chunks_rebuild_text_tool_calls_and_usage() {
        let (sink, seen) = collecting();
        let mut s = OpenAiStream::new("openai", &sink);
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"add","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
            "[DONE]",
        ] {
            s.on_event("message", data).unwrap();
        }
        let reply = crate::openai::parse_reply("openai", &s.finish().unwrap()).unwrap();
        assert_eq!(reply.content.as_deref(), Some("Hello"));
        assert_eq!(reply.tool_calls[0].name, "add");
        assert_eq!(reply.tool_calls[0].arguments, json!({"a": 1}));
        assert_eq!(reply.usage.prompt, 7);
        assert_eq!(reply.usage.completion, 3);
        assert_eq!(reply.stop_reason.as_deref(), Some("tool_calls"));
        assert_eq!(*seen.lock().unwrap(), ["Hel", "lo"]);
    }

    #[test]
    fn anthropic_events_rebuild_blocks_and_usage() {
        let (sink, seen) = collecting();
        let mut s = AnthropicStream::new("anthropic", &sink, Some("output"));
        for (event, data) in [
            ("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi "}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":"output","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"n\": "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"2}"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":4}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ] {
            s.on_event(event, data).unwrap();
        }
        let rs = crate::chat::ResponseSchema::new(json!({"type": "object"}));
        let reply = crate::anthropic::parse_reply("anthropic", &s.finish().unwrap(), Some(&rs)).unwrap();
        assert_eq!(reply.content.as_deref(), Some(r#"{"n":2}"#));
        assert_eq!(reply.usage.prompt, 9);
        assert_eq!(reply.usage.completion, 4);
        assert_eq!(*seen.lock().unwrap(), ["Hi ", "{\"n\": ", "2}"]);
    }

    #[test]
    fn truncated_streams_and_error_events_are_errors() {
        let (sink, _) = collecting();
        let mut s = OpenAiStream::new("openai", &sink);
        s.on_event("message", r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#).unwrap();
        assert!(matches!(s.finish(), Err(LlmError::Malformed { .. })));
        let mut s = AnthropicStream::new("anthropic", &sink, None);
        let e = s
            .on_event("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .unwrap_err();
        assert!(matches!(e, LlmError::Server { status: 529, .. }), "{e:?}");
        let mut s = OpenAiStream::new("openai", &sink);
        assert!(matches!(s.on_event("message", "not json"), Err(LlmError::Malformed { .. })));
        let mut s = AnthropicStream::new("anthropic", &sink, None);
        s.on_event("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":1}}}"#).unwrap();
        assert!(matches!(s.finish(), Err(LlmError::Malformed { .. })));
    }
}
