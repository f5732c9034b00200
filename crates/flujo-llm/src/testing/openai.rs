//! The fake server's OpenAI Chat Completions shape (`/v1/chat/completions`, `/v1/embeddings` errors).

use axum::response::Response;
use flujo_core::TokenUsage;
use serde_json::{json, Value};

use super::{frames_response, halves, pieces, sse_frames, Content, Req, WireShape};

pub(crate) struct OpenAiWire;

/// A Chat Completions usage object with its details.
pub(crate) fn usage_json(usage: TokenUsage) -> Value {
    json!({"prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "total_tokens": usage.total(),
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning}})
}

impl WireShape for OpenAiWire {
    fn offered_key(&self, req: &Req<'_>) -> String {
        req.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned()
    }

    fn wire_schema<'r>(&self, req: &'r Req<'_>, _forced: Option<&str>) -> Option<&'r Value> {
        req.body.pointer("/response_format/json_schema/schema")
    }

    fn message(&self, req: &Req<'_>, id: u64, content: Content, usage: TokenUsage) -> Value {
        let (message, finish) = match content {
            Content::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
            Content::Refusal(text) => (json!({"role": "assistant", "content": null, "refusal": text}), "stop"),
            Content::Tool { name, arguments } => (
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{id}"),
                    "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]}),
                "tool_calls",
            ),
        };
        json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion", "model": self.model(req),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage_json(usage)})
    }

    fn cut_off(&self, body: &mut Value) {
        body["choices"][0]["finish_reason"] = json!("length");
    }

    fn stream(&self, body: &Value, truncated: bool) -> Response {
        let mut events: Vec<(Option<&str>, Value)> = Vec::new();
        let chunk = |choices: Value| json!({"id": body["id"], "object": "chat.completion.chunk", "model": body["model"], "choices": choices});
        let delta = |d: Value| chunk(json!([{"index": 0, "delta": d, "finish_reason": null}]));
        let message = &body["choices"][0]["message"];
        events.push((None, delta(json!({"role": "assistant", "content": ""}))));
        if let Some(text) = message["content"].as_str() {
            for p in pieces(text) {
                events.push((None, delta(json!({"content": p}))));
            }
        }
        if let Some(text) = message["refusal"].as_str() {
            events.push((None, delta(json!({"refusal": text}))));
        }
        for (i, tc) in message["tool_calls"].as_array().into_iter().flatten().enumerate() {
            events.push((
                None,
                delta(json!({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                "function": {"name": tc["function"]["name"], "arguments": ""}}]})),
            ));
            for p in halves(tc["function"]["arguments"].as_str().unwrap_or_default()) {
                events.push((None, delta(json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}))));
            }
        }
        let finish = &body["choices"][0]["finish_reason"];
        events.push((None, chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]))));
        let mut usage = chunk(json!([]));
        usage["usage"] = body["usage"].clone();
        events.push((None, usage));
        let mut frames = sse_frames(events);
        frames.push(axum::body::Bytes::from("data: [DONE]\n\n"));
        frames_response("text/event-stream", frames, truncated)
    }

    fn error_body(&self, code: u16, message: &str) -> Value {
        json!({"error": {"message": message, "type": "fake_error", "code": code}})
    }
}
