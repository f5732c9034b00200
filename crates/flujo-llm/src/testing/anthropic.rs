//! The fake server's Anthropic Messages shape (`/v1/messages`).

use axum::response::Response;
use flujo_core::TokenUsage;
use serde_json::{json, Value};

use super::{frames_response, halves, pieces, sse_frames, Content, Req, WireShape};

pub(crate) struct AnthropicWire;

impl WireShape for AnthropicWire {
    fn offered_key(&self, req: &Req<'_>) -> String {
        req.headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    fn forced_tool(&self, req: &Req<'_>) -> Option<String> {
        req.body
            .get("tool_choice")
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool"))
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn wire_schema<'r>(&self, req: &'r Req<'_>, forced: Option<&str>) -> Option<&'r Value> {
        req.body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.iter().find(|t| t.get("name").and_then(Value::as_str) == forced))
            .and_then(|t| t.get("input_schema"))
    }

    fn message(&self, req: &Req<'_>, id: u64, content: Content, usage: TokenUsage) -> Value {
        let (blocks, stop) = match content {
            Content::Text(text) => (json!([{"type": "text", "text": text}]), "end_turn"),
            Content::Refusal(text) => (json!([{"type": "text", "text": text}]), "refusal"),
            Content::Tool { name, arguments } => (
                json!([{"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": arguments}]),
                "tool_use",
            ),
        };
        // `input_tokens` excludes the cached prefix, as the API reports it.
        let input = usage.prompt.saturating_sub(usage.cached + usage.cache_write);
        json!({"id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": self.model(req),
            "content": blocks, "stop_reason": stop,
            "usage": {"input_tokens": input, "output_tokens": usage.completion,
                "cache_read_input_tokens": usage.cached, "cache_creation_input_tokens": usage.cache_write}})
    }

    fn cut_off(&self, body: &mut Value) {
        body["stop_reason"] = json!("max_tokens");
    }

    fn stream(&self, body: &Value, truncated: bool) -> Response {
        let mut events: Vec<(Option<&str>, Value)> = Vec::new();
        let mut start = body.clone();
        start["content"] = json!([]);
        start["stop_reason"] = Value::Null;
        start["usage"]["output_tokens"] = json!(1);
        events.push((Some("message_start"), json!({"type": "message_start", "message": start})));
        for (i, block) in body["content"].as_array().into_iter().flatten().enumerate() {
            let (started, deltas): (Value, Vec<Value>) = match block["type"].as_str() {
                Some("tool_use") => (
                    json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                    halves(&block["input"].to_string())
                        .into_iter()
                        .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                        .collect(),
                ),
                _ => (
                    json!({"type": "text", "text": ""}),
                    pieces(block["text"].as_str().unwrap_or_default())
                        .into_iter()
                        .map(|p| json!({"type": "text_delta", "text": p}))
                        .collect(),
                ),
            };
            events.push((
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": i, "content_block": started}),
            ));
            for d in deltas {
                events.push((
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": i, "delta": d}),
                ));
            }
            events.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": i})));
        }
        events.push((
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": body["stop_reason"]},
                "usage": {"output_tokens": body["usage"]["output_tokens"]}}),
        ));
        events.push((Some("message_stop"), json!({"type": "message_stop"})));
        frames_response("text/event-stream", sse_frames(events), truncated)
    }

    fn error_body(&self, _code: u16, message: &str) -> Value {
        json!({"type": "error", "error": {"type": "fake_error", "message": message}})
    }
}
