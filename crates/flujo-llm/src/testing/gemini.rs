//! The fake server's Gemini API shape: `POST /v1beta/models/MODEL:generateContent` and
//! `:streamGenerateContent?alt=sse` (the model and the stream choice come from the path, the key from
//! `x-goog-api-key`). Replies are `GenerateContentResponse`s: `candidates[0].content.parts` (`text`,
//! `functionCall`), `finishReason`, `usageMetadata` with the thought and cached token counts when non-zero,
//! `modelVersion`, `responseId`. A request with `thinkingConfig.includeThoughts` gets a thought summary part
//! and a `thoughtSignature` on its last part; a refusal is a candidate stopped for `SAFETY`. Streams are SSE
//! chunks, one text piece each, the last carrying `finishReason` and the full `usageMetadata`. Errors are
//! `{error: {code, message, status}}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use flujo_core::TokenUsage;
use serde_json::{json, Value};

use super::{frames_response, handle, pieces, Content, Req, Shared, WireShape};

pub(crate) struct GeminiWire;

/// This shape's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/v1beta/models/{*rest}", post(generate))
}

async fn generate(State(state): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let refuse = |code: StatusCode, message: &str| {
        (code, axum::Json(GeminiWire.error_body(code.as_u16(), message))).into_response()
    };
    match method(&uri) {
        Some("generateContent") => handle(&GeminiWire, state, uri, headers, body).await,
        // The API streams a JSON array without `alt=sse`; this fake speaks only the SSE form Flujo asks for.
        Some("streamGenerateContent") if uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse")) => {
            handle(&GeminiWire, state, uri, headers, body).await
        }
        Some("streamGenerateContent") => refuse(StatusCode::BAD_REQUEST, "this fake serves only alt=sse streams"),
        _ => refuse(StatusCode::NOT_FOUND, "no such method"),
    }
}

/// `models/MODEL:METHOD` of the path: the method.
fn method(uri: &Uri) -> Option<&str> {
    uri.path().rsplit_once(':').map(|(_, m)| m)
}

/// The `google.rpc.Code` name the API gives with an HTTP status.
fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// `usageMetadata` for `usage`: `candidatesTokenCount` excludes the thoughts, as the API counts them.
fn usage_json(usage: TokenUsage) -> Value {
    let mut u = json!({"promptTokenCount": usage.prompt,
        "candidatesTokenCount": usage.completion.saturating_sub(usage.reasoning),
        "totalTokenCount": usage.total(),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt}]});
    if usage.reasoning > 0 {
        u["thoughtsTokenCount"] = json!(usage.reasoning);
    }
    if usage.cached > 0 {
        u["cachedContentTokenCount"] = json!(usage.cached);
    }
    u
}

impl WireShape for GeminiWire {
    fn offered_key(&self, req: &Req<'_>) -> String {
        req.headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    fn wants_stream(&self, req: &Req<'_>) -> bool {
        method(req.uri) == Some("streamGenerateContent")
    }

    fn model(&self, req: &Req<'_>) -> Value {
        let path = req.uri.path();
        let rest = path.strip_prefix("/v1beta/models/").unwrap_or(path);
        json!(rest.rsplit_once(':').map_or(rest, |(m, _)| m))
    }

    fn wire_schema<'r>(&self, req: &'r Req<'_>, _forced: Option<&str>) -> Option<&'r Value> {
        let config = req.body.get("generationConfig")?;
        config.get("responseSchema").or_else(|| config.get("responseJsonSchema"))
    }

    fn message(&self, req: &Req<'_>, id: u64, content: Content, usage: TokenUsage) -> Value {
        let thinking = req.body.pointer("/generationConfig/thinkingConfig/includeThoughts") == Some(&json!(true));
        let mut parts = Vec::new();
        if thinking {
            parts.push(json!({"text": "Let me think.", "thought": true}));
        }
        let mut candidate = json!({"index": 0});
        match content {
            Content::Text(text) => {
                parts.push(json!({"text": text}));
                candidate["finishReason"] = json!("STOP");
            }
            Content::Tool { name, arguments } => {
                parts.push(json!({"functionCall": {"name": name, "args": arguments}}));
                candidate["finishReason"] = json!("STOP");
            }
            // A blocked answer has no content, only the reason and the ratings.
            Content::Refusal(_) => {
                parts.clear();
                candidate["finishReason"] = json!("SAFETY");
                candidate["safetyRatings"] = json!([
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true},
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]);
            }
        }
        if thinking {
            if let Some(last) = parts.last_mut().filter(|p| p.get("thought").is_none()) {
                last["thoughtSignature"] = json!(format!("sig-{id}"));
            }
        }
        if !parts.is_empty() {
            candidate["content"] = json!({"role": "model", "parts": parts});
        }
        json!({"candidates": [candidate], "usageMetadata": usage_json(usage), "modelVersion": self.model(req),
            "responseId": format!("gemini-resp-{id}")})
    }

    fn cut_off(&self, body: &mut Value) {
        body["candidates"][0]["finishReason"] = json!("MAX_TOKENS");
    }

    fn stream(&self, body: &Value, truncated: bool) -> Response {
        let candidate = &body["candidates"][0];
        let prompt = &body["usageMetadata"]["promptTokenCount"];
        let chunk = |parts: Vec<Value>| {
            json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                "modelVersion": body["modelVersion"], "responseId": body["responseId"]})
        };
        let mut chunks = Vec::new();
        for part in candidate["content"]["parts"].as_array().into_iter().flatten() {
            match part.get("text").and_then(Value::as_str) {
                Some(text) => {
                    let split = pieces(text);
                    let n = split.len();
                    for (i, piece) in split.into_iter().enumerate() {
                        let mut p = part.clone();
                        p["text"] = json!(piece);
                        if i + 1 < n {
                            if let Some(o) = p.as_object_mut() {
                                o.remove("thoughtSignature");
                            }
                        }
                        chunks.push(chunk(vec![p]));
                    }
                }
                None => chunks.push(chunk(vec![part.clone()])),
            }
        }
        if chunks.is_empty() {
            chunks.push(chunk(Vec::new()));
        }
        if let Some(last) = chunks.last_mut() {
            for key in ["finishReason", "safetyRatings"] {
                if let Some(v) = candidate.get(key) {
                    last["candidates"][0][key] = v.clone();
                }
            }
            if candidate.get("content").is_none() {
                if let Some(c) = last["candidates"][0].as_object_mut() {
                    c.remove("content");
                }
            }
            last["usageMetadata"] = body["usageMetadata"].clone();
        }
        // The API ends each event with a blank line written as CRLF.
        let frames = chunks.into_iter().map(|c| Bytes::from(format!("data: {c}\r\n\r\n"))).collect();
        frames_response("text/event-stream", frames, truncated)
    }

    fn error_body(&self, code: u16, message: &str) -> Value {
        json!({"error": {"code": code, "message": message, "status": status_name(code)}})
    }
}
