//! The fake server's Azure OpenAI shape: Chat Completions on the deployment path
//! `/openai/deployments/{deployment}/chat/completions?api-version=…` and on the v1 API's
//! `/openai/v1/chat/completions`. As the service does, a deployment path without `api-version` is a 404
//! `{"error": {"code": "404", "message": "Resource not found"}}` (not logged, no scripted reply used); errors
//! are `{error: {code, message}}` with the code as a string; replies carry `prompt_filter_results` and each
//! choice its `content_filter_results`; a stream opens with a chunk without choices carrying the prompt's
//! filter results. A scripted refusal is an answer stopped by the content filter (`finish_reason:
//! content_filter`, the `violence` category filtered). The key is read from `api-key`, else from
//! `Authorization: Bearer` (an Entra ID token).
//!
//! The request's query string is logged as the pseudo-header `x-fake-query` of its [`super::RecordedCall`],
//! so tests can check the `api-version` sent; `api-key` is logged redacted.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use flujo_core::TokenUsage;
use futures::StreamExt;
use serde_json::{json, Value};

use super::openai::OpenAiWire;
use super::{error_response, handle, Content, Req, Shared, WireShape};

pub(crate) struct AzureWire;

/// This shape's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/openai/deployments/{deployment}/chat/completions", post(deployment_chat))
        .route("/openai/v1/chat/completions", post(v1_chat))
}

fn api_version(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix("api-version=")).map(str::to_owned)
}

/// Logs the query as the pseudo-header `x-fake-query`.
fn prepare(uri: &Uri, headers: &mut HeaderMap) {
    if let Some(q) = uri.query().and_then(|q| HeaderValue::from_str(q).ok()) {
        headers.insert("x-fake-query", q);
    }
}

async fn deployment_chat(State(state): State<Shared>, uri: Uri, mut headers: HeaderMap, body: Bytes) -> Response {
    if api_version(&uri).filter(|v| !v.is_empty()).is_none() {
        return error_response(&AzureWire, 404, None, "Resource not found");
    }
    prepare(&uri, &mut headers);
    handle(&AzureWire, state, uri, headers, body).await
}

async fn v1_chat(State(state): State<Shared>, uri: Uri, mut headers: HeaderMap, body: Bytes) -> Response {
    // The v1 API takes no dated version: none, or `preview`.
    if api_version(&uri).is_some_and(|v| v != "preview") {
        return error_response(&AzureWire, 400, None, "api-version query parameter is not allowed when using /v1 path");
    }
    prepare(&uri, &mut headers);
    handle(&AzureWire, state, uri, headers, body).await
}

/// The filter results of content nothing was filtered in.
fn filter_results() -> Value {
    json!({"hate": {"filtered": false, "severity": "safe"}, "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"}, "violence": {"filtered": false, "severity": "safe"}})
}

impl WireShape for AzureWire {
    fn offered_key(&self, req: &Req<'_>) -> String {
        match req.headers.get("api-key").and_then(|v| v.to_str().ok()) {
            Some(key) => key.to_owned(),
            None => OpenAiWire.offered_key(req),
        }
    }

    fn wire_schema<'r>(&self, req: &'r Req<'_>, forced: Option<&str>) -> Option<&'r Value> {
        OpenAiWire.wire_schema(req, forced)
    }

    fn message(&self, req: &Req<'_>, id: u64, content: Content, usage: TokenUsage) -> Value {
        let filtered = matches!(content, Content::Refusal(_));
        let content = match content {
            // Azure's own refusal: the content filter stopped the answer.
            Content::Refusal(_) => Content::Text(String::new()),
            other => other,
        };
        let mut body = OpenAiWire.message(req, id, content, usage);
        body["prompt_filter_results"] = json!([{"prompt_index": 0, "content_filter_results": filter_results()}]);
        let choice = &mut body["choices"][0];
        choice["content_filter_results"] = filter_results();
        if filtered {
            choice["message"]["content"] = Value::Null;
            choice["finish_reason"] = json!("content_filter");
            choice["content_filter_results"]["violence"] = json!({"filtered": true, "severity": "high"});
        }
        body
    }

    fn cut_off(&self, body: &mut Value) {
        OpenAiWire.cut_off(body);
    }

    fn stream(&self, body: &Value, truncated: bool) -> Response {
        let prelude = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": body["prompt_filter_results"]});
        let first = Bytes::from(format!("data: {prelude}\n\n"));
        let rest = OpenAiWire.stream(body, truncated);
        let (parts, inner) = rest.into_parts();
        let stream = futures::stream::once(async move { Ok::<_, axum::Error>(first) }).chain(inner.into_data_stream());
        Response::from_parts(parts, Body::from_stream(stream))
    }

    fn error_body(&self, code: u16, message: &str) -> Value {
        json!({"error": {"code": code.to_string(), "message": message}})
    }
}
