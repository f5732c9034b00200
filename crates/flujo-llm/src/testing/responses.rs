//! The fake server's OpenAI Responses API shape (`POST /v1/responses`, `Authorization: Bearer`).
//!
//! A reply is a `response` object (`id: resp_N`, `status`, `output` items, `usage` with
//! `input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`, and the request's
//! settings echoed as the API does). Text is a `message` item with an `output_text` part, a refusal a
//! `refusal` part, a tool call a `function_call` item (`call_id: call_N`). When the request asks for
//! `reasoning.encrypted_content`, a `reasoning` item comes first (id `rs_N`, encrypted content `enc_N`, and
//! a summary when `reasoning.summary` is set). A reply cut off at the bound is `status: incomplete`,
//! `incomplete_details.reason: max_output_tokens`.
//!
//! A stream is the API's named events, each with its `sequence_number`: `response.created`,
//! `response.in_progress`, per item `response.output_item.added`, its parts (`response.content_part.added`,
//! `response.output_text.delta` a word at a time, `response.output_text.done`, `response.content_part.done`;
//! `response.refusal.delta`/`.done`; `response.function_call_arguments.delta` in two halves and `.done`;
//! `response.reasoning_summary_text.delta`/`.done`) and `response.output_item.done`, then
//! `response.completed` (or `response.incomplete`) with the whole response.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use flujo_core::TokenUsage;
use serde_json::{json, Value};

use super::openai::OpenAiWire;
use super::{frames_response, halves, handle, pieces, sse_frames, Content, Req, Shared, WireShape};

pub(crate) struct ResponsesWire;

/// This shape's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/v1/responses", post(responses))
}

async fn responses(State(state): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    handle(&ResponsesWire, state, uri, headers, body).await
}

/// A Responses usage object with its details.
fn usage_json(usage: TokenUsage) -> Value {
    json!({"input_tokens": usage.prompt, "input_tokens_details": {"cached_tokens": usage.cached},
        "output_tokens": usage.completion, "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.total()})
}

impl WireShape for ResponsesWire {
    fn offered_key(&self, req: &Req<'_>) -> String {
        OpenAiWire.offered_key(req)
    }

    fn wire_schema<'r>(&self, req: &'r Req<'_>, _forced: Option<&str>) -> Option<&'r Value> {
        req.body.pointer("/text/format/schema")
    }

    fn message(&self, req: &Req<'_>, id: u64, content: Content, usage: TokenUsage) -> Value {
        let asked = |p: &str| req.body.pointer(p).cloned();
        let mut output = Vec::new();
        let wants_reasoning = req
            .body
            .get("include")
            .and_then(Value::as_array)
            .is_some_and(|i| i.iter().any(|x| x == "reasoning.encrypted_content"));
        if wants_reasoning {
            let summary = match asked("/reasoning/summary") {
                Some(Value::String(_)) => json!([{"type": "summary_text", "text": "**Adding** the two numbers."}]),
                _ => json!([]),
            };
            output.push(json!({"type": "reasoning", "id": format!("rs_{id}"), "summary": summary,
                "encrypted_content": format!("enc_{id}")}));
        }
        let message = |part: Value| {
            json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
                "content": [part]})
        };
        output.push(match content {
            Content::Text(text) => message(json!({"type": "output_text", "text": text, "annotations": []})),
            Content::Refusal(text) => message(json!({"type": "refusal", "refusal": text})),
            Content::Tool { name, arguments } => json!({"type": "function_call", "id": format!("fc_{id}"),
                "call_id": format!("call_{id}"), "name": name, "arguments": arguments.to_string(),
                "status": "completed"}),
        });
        json!({
            "id": format!("resp_{id}"), "object": "response", "created_at": 1_741_476_542, "status": "completed",
            "error": null, "incomplete_details": null,
            "instructions": asked("/instructions").unwrap_or(Value::Null),
            "max_output_tokens": asked("/max_output_tokens").unwrap_or(Value::Null),
            "model": self.model(req), "output": output,
            "parallel_tool_calls": asked("/parallel_tool_calls").unwrap_or(json!(true)),
            "previous_response_id": null,
            "reasoning": {"effort": asked("/reasoning/effort").unwrap_or(Value::Null),
                "summary": asked("/reasoning/summary").unwrap_or(Value::Null)},
            "store": asked("/store").unwrap_or(json!(true)),
            "temperature": asked("/temperature").unwrap_or(json!(1.0)),
            "text": asked("/text").unwrap_or(json!({"format": {"type": "text"}})),
            "tool_choice": asked("/tool_choice").unwrap_or(json!("auto")),
            "tools": asked("/tools").unwrap_or(json!([])),
            "top_p": asked("/top_p").unwrap_or(json!(1.0)),
            "truncation": "disabled", "usage": usage_json(usage), "user": null, "metadata": {},
        })
    }

    fn cut_off(&self, body: &mut Value) {
        body["status"] = json!("incomplete");
        body["incomplete_details"] = json!({"reason": "max_output_tokens"});
        if let Some(items) = body["output"].as_array_mut() {
            for item in items.iter_mut().filter(|i| i["type"] == "message") {
                item["status"] = json!("incomplete");
            }
        }
    }

    fn stream(&self, body: &Value, truncated: bool) -> Response {
        let mut events: Vec<(String, Value)> = Vec::new();
        let mut push = |name: &str, mut data: Value| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(events.len());
            events.push((name.to_owned(), data));
        };
        let mut started = body.clone();
        started["status"] = json!("in_progress");
        started["output"] = json!([]);
        started["usage"] = Value::Null;
        push("response.created", json!({"response": started}));
        push("response.in_progress", json!({"response": started}));
        for (oi, item) in body["output"].as_array().into_iter().flatten().enumerate() {
            let item_id = &item["id"];
            let mut added = item.clone();
            added["status"] = json!("in_progress");
            match item["type"].as_str() {
                Some("message") => {
                    added["content"] = json!([]);
                    push("response.output_item.added", json!({"output_index": oi, "item": added}));
                    for (ci, part) in item["content"].as_array().into_iter().flatten().enumerate() {
                        let at = |mut v: Value| {
                            v["item_id"] = item_id.clone();
                            v["output_index"] = json!(oi);
                            v["content_index"] = json!(ci);
                            v
                        };
                        if part["type"] == "refusal" {
                            let text = part["refusal"].as_str().unwrap_or_default();
                            push(
                                "response.content_part.added",
                                at(json!({"part": {"type": "refusal", "refusal": ""}})),
                            );
                            push("response.refusal.delta", at(json!({"delta": text})));
                            push("response.refusal.done", at(json!({"refusal": text})));
                        } else {
                            let text = part["text"].as_str().unwrap_or_default();
                            let empty = json!({"type": "output_text", "text": "", "annotations": []});
                            push("response.content_part.added", at(json!({"part": empty})));
                            for p in pieces(text) {
                                push("response.output_text.delta", at(json!({"delta": p, "logprobs": []})));
                            }
                            push("response.output_text.done", at(json!({"text": text, "logprobs": []})));
                        }
                        push("response.content_part.done", at(json!({"part": part})));
                    }
                }
                Some("function_call") => {
                    added["arguments"] = json!("");
                    push("response.output_item.added", json!({"output_index": oi, "item": added}));
                    let arguments = item["arguments"].as_str().unwrap_or_default();
                    for p in halves(arguments) {
                        push(
                            "response.function_call_arguments.delta",
                            json!({"item_id": item_id, "output_index": oi, "delta": p}),
                        );
                    }
                    push(
                        "response.function_call_arguments.done",
                        json!({"item_id": item_id, "output_index": oi, "arguments": arguments}),
                    );
                }
                _ => {
                    added["summary"] = json!([]);
                    push("response.output_item.added", json!({"output_index": oi, "item": added}));
                    for (si, s) in item["summary"].as_array().into_iter().flatten().enumerate() {
                        let at = json!({"item_id": item_id, "output_index": oi, "summary_index": si});
                        let mut delta = at.clone();
                        delta["delta"] = s["text"].clone();
                        push("response.reasoning_summary_text.delta", delta);
                        let mut done = at;
                        done["text"] = s["text"].clone();
                        push("response.reasoning_summary_text.done", done);
                    }
                }
            }
            push("response.output_item.done", json!({"output_index": oi, "item": item}));
        }
        let last = if body["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
        push(last, json!({"response": body}));
        let events = events.iter().map(|(name, data)| (Some(name.as_str()), data.clone())).collect();
        frames_response("text/event-stream", sse_frames(events), truncated)
    }

    fn error_body(&self, code: u16, message: &str) -> Value {
        OpenAiWire.error_body(code, message)
    }
}
