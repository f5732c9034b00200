//! A fake model provider for tests (feature `test-server`): an axum server on `127.0.0.1:0` speaking the
//! OpenAI Chat Completions (`/v1/chat/completions`) and Anthropic Messages (`/v1/messages`) shapes. Replies
//! are scripted in order ([`FakeProvider::push_reply`]), each with usage numbers; every request is logged
//! (path, headers with secrets redacted, JSON body) for the test to inspect. Nothing leaves the machine.
//! A request asking for a stream (`"stream": true`) gets the same reply as server-sent events in the
//! provider's stream shape, sent piece by piece (a word of text per event).
//!
//! `POST /v1/embeddings` (the OpenAI shape) answers without a script: `mock:hash` vectors of the request's
//! `dimensions` (default 256), one token per word of each text (at least one), the `data` items listed in
//! *reverse* index order (clients must order them by `index`, as the API asks). Failures and odd replies are
//! scripted in order with [`FakeProvider::push_embedding`]; the requests are logged with the others.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use flujo_llm::testing::{FakeProvider, ScriptedReply};
//! use flujo_llm::PricingTable;
//! use flujo_core::ModelRegistry;
//!
//! let fake = FakeProvider::start().await?;
//! fake.push_reply(ScriptedReply::Text("hello".into()));
//! let registry = fake.registry(PricingTable::new())?;
//! let agent = registry.resolve("openai:gpt-test", &serde_json::Value::Null)?;
//! // … call the agent; then inspect fake.calls()
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use flujo_core::TokenUsage;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::config::{LlmConfig, ProviderConfig, ProviderKind};
use crate::embed::{HashEmbedder, HASH_DIMENSION};
use crate::error::LlmError;
use crate::http::RetryPolicy;
use crate::pricing::PricingTable;
use crate::registry::LlmRegistry;

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod openai;
mod responses;

/// The key [`FakeProvider::registry`] configures.
pub const FAKE_API_KEY: &str = "sk-fake-0123456789abcdef";

/// Usage reported by [`FakeProvider::push_reply`].
pub const DEFAULT_USAGE: TokenUsage = TokenUsage::new(10, 5);

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptedReply {
    /// A text answer.
    Text(String),
    /// A JSON answer: the content text for OpenAI; for Anthropic the input of the forced schema tool when the
    /// request forces one, else the text.
    Json(Value),
    /// A call of tool `name` with `arguments`.
    ToolCall { name: String, arguments: Value },
    /// An HTTP error in the provider's error shape, with an optional `Retry-After` (seconds).
    Status { code: u16, retry_after: Option<u64> },
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// The reply, sent after a delay (for timeouts).
    Delayed(Duration, Box<ScriptedReply>),
    /// A text answer cut off halfway: a stream ends without its final events, a plain reply is half a JSON
    /// body.
    Truncated(String),
    /// An HTTP error with `Retry-After` written as given (an HTTP-date, say).
    StatusRetryAfter { code: u16, retry_after: String },
    /// A refusal: OpenAI `message.refusal` (content null), Anthropic `stop_reason: refusal` with the text.
    Refusal(String),
    /// A complete reply whose answer stopped at the completion bound: OpenAI `finish_reason: length`,
    /// Anthropic `stop_reason: max_tokens` (for a forced schema tool: the tool call with an empty input).
    CutOff(String),
}

/// One scripted answer of `POST /v1/embeddings` (when none is queued: [`ScriptedEmbedding::Vectors`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScriptedEmbedding {
    /// The usual answer: one `mock:hash` vector per text.
    Vectors,
    /// An HTTP error in the OpenAI error shape, with an optional `Retry-After` (seconds).
    Status {
        /// The HTTP status.
        code: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
    /// The usual answer without its last vector.
    MissingVector,
    /// The usual answer with the first value of the first vector out of the range of `f32` (`1e300`).
    NonFinite,
    /// The usual answer without `usage`.
    NoUsage,
    /// HTTP 200 with this JSON body.
    Body(Value),
    /// The answer, sent after a delay (for timeouts).
    Delayed(Duration, Box<ScriptedEmbedding>),
}

/// A logged request.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub path: String,
    /// Lower-case names; values of `authorization`, `x-api-key`, `api-key` (Azure), `x-goog-api-key` (Gemini),
    /// `cookie` are `[REDACTED]`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (the raw text as a string when it is not JSON).
    pub body: Value,
}

#[derive(Default)]
pub(crate) struct FakeState {
    script: VecDeque<(ScriptedReply, TokenUsage)>,
    embed_script: VecDeque<ScriptedEmbedding>,
    calls: Vec<RecordedCall>,
    api_key: Option<String>,
    next_id: u64,
    bedrock: bedrock::BedrockState,
}

pub(crate) type Shared = Arc<Mutex<FakeState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, FakeState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running fake server; stopped when dropped.
pub struct FakeProvider {
    addr: SocketAddr,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProvider {
    /// Binds `127.0.0.1:0` and serves in a task of the current runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/v1/embeddings", post(embeddings))
            .merge(gemini::routes())
            .merge(azure::routes())
            .merge(bedrock::routes())
            .merge(responses::routes())
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake provider stopped");
            }
        });
        Ok(FakeProvider { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL of the OpenAI shape (`…/v1`, as `OPENAI_BASE_URL` is written).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// The base URL of the Anthropic shape (as `ANTHROPIC_BASE_URL` is written).
    pub fn anthropic_base_url(&self) -> String {
        self.base_url()
    }

    /// From now on, requests without this key get 401 (with the offered key echoed in the message, as real
    /// providers do — so tests can check it never reaches an error).
    pub fn require_api_key(&self, key: &str) {
        lock(&self.state).api_key = Some(key.to_owned());
    }

    /// Queues a reply reporting [`DEFAULT_USAGE`].
    pub fn push_reply(&self, reply: ScriptedReply) {
        self.push_reply_with_usage(reply, DEFAULT_USAGE);
    }

    /// Queues a reply reporting `usage`.
    pub fn push_reply_with_usage(&self, reply: ScriptedReply, usage: TokenUsage) {
        lock(&self.state).script.push_back((reply, usage));
    }

    /// Queues an answer of `POST /v1/embeddings`.
    pub fn push_embedding(&self, reply: ScriptedEmbedding) {
        lock(&self.state).embed_script.push_back(reply);
    }

    /// The `input` texts of every `POST /v1/embeddings` so far, one list per request, in order.
    pub fn embedding_inputs(&self) -> Vec<Vec<String>> {
        lock(&self.state)
            .calls
            .iter()
            .filter(|c| c.path == "/v1/embeddings")
            .map(|c| embedding_texts(&c.body))
            .collect()
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.state).calls.clone()
    }

    pub fn call_count(&self) -> usize {
        lock(&self.state).calls.len()
    }

    /// Replies still queued.
    pub fn pending_replies(&self) -> usize {
        lock(&self.state).script.len()
    }

    /// A provider section pointing at this server with `api_key`, retrying after 10 ms (3 attempts).
    pub fn provider_config(&self, kind: ProviderKind, api_key: &str) -> ProviderConfig {
        let base = match kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiResponses => self.openai_base_url(),
            _ => self.base_url(),
        };
        ProviderConfig::new(kind, base, Some(api_key)).with_retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        })
    }

    /// A registry whose `openai:`, `anthropic:`, `openai-responses:`, `gemini:` and `azure:` providers are
    /// this server (key [`FAKE_API_KEY`]); the
    /// environment is not read.
    pub fn registry(&self, pricing: PricingTable) -> Result<LlmRegistry, LlmError> {
        self.registry_with_key(pricing, FAKE_API_KEY)
    }

    /// Like [`FakeProvider::registry`] with another key.
    pub fn registry_with_key(&self, pricing: PricingTable, api_key: &str) -> Result<LlmRegistry, LlmError> {
        let config = LlmConfig::default()
            .with_pricing(pricing)
            .with_provider("openai", self.provider_config(ProviderKind::OpenAi, api_key))
            .with_provider("anthropic", self.provider_config(ProviderKind::Anthropic, api_key))
            .with_provider("openai-responses", self.provider_config(ProviderKind::OpenAiResponses, api_key))
            .with_provider("gemini", self.provider_config(ProviderKind::Gemini, api_key))
            .with_provider("azure", self.provider_config(ProviderKind::Azure, api_key));
        LlmRegistry::with_env(config, |_| None)
    }
}

async fn openai(State(state): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    handle(&openai::OpenAiWire, state, uri, headers, body).await
}

async fn anthropic(State(state): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    handle(&anthropic::AnthropicWire, state, uri, headers, body).await
}

const SECRET_HEADERS: [&str; 6] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "proxy-authorization"];

/// One provider's wire format, as the fake server speaks it. Each shape lives in its own module; the
/// scripting, logging and key checks are shared ([`handle`]).
pub(crate) trait WireShape: Sync {
    /// The API key the request offers (empty when none).
    fn offered_key(&self, req: &Req<'_>) -> String;
    /// True when the request asks for a stream.
    fn wants_stream(&self, req: &Req<'_>) -> bool {
        req.body.get("stream") == Some(&Value::Bool(true))
    }
    /// The model the request names.
    fn model(&self, req: &Req<'_>) -> Value {
        req.body.get("model").cloned().unwrap_or(Value::Null)
    }
    /// The name of the tool the request forces (structured output through a forced tool), if any.
    fn forced_tool(&self, _req: &Req<'_>) -> Option<String> {
        None
    }
    /// The JSON Schema the request asks the answer to follow (a forced tool's input schema or the native
    /// response schema); a `{value: …}`-wrapped one is answered wrapped, as the real APIs do.
    fn wire_schema<'r>(&self, req: &'r Req<'_>, forced: Option<&str>) -> Option<&'r Value>;
    /// A complete reply with `content`, reporting `usage`.
    fn message(&self, req: &Req<'_>, id: u64, content: Content, usage: TokenUsage) -> Value;
    /// Turns a complete reply into one cut off at the completion bound.
    fn cut_off(&self, body: &mut Value);
    /// A complete reply as the provider's stream; `truncated` stops halfway, without the final events.
    fn stream(&self, body: &Value, truncated: bool) -> Response;
    /// The error body for `code`.
    fn error_body(&self, code: u16, message: &str) -> Value;
}

/// A request as the fake server received it.
pub(crate) struct Req<'a> {
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a Value,
}

/// Serves one request in `shape`: logs it, checks the key, plays the next scripted reply.
pub(crate) async fn handle(
    shape: &dyn WireShape,
    state: Shared,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let req = Req { uri: &uri, headers: &headers, body: &request };
    let (mut reply, usage, id) = match next_reply(shape, &state, &req) {
        Ok(next) => next,
        Err((code, message)) => return error_response(shape, code, None, &message),
    };
    while let ScriptedReply::Delayed(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    let stream = shape.wants_stream(&req);
    let ok = |body: Value| if stream { shape.stream(&body, false) } else { ok(body) };
    match reply {
        ScriptedReply::Delayed(..) => error_response(shape, 500, None, "unreachable"),
        ScriptedReply::Status { code, retry_after } => {
            error_response(shape, code, retry_after.map(|s| s.to_string()), &format!("scripted error {code}"))
        }
        ScriptedReply::StatusRetryAfter { code, retry_after } => {
            error_response(shape, code, Some(retry_after), &format!("scripted error {code}"))
        }
        ScriptedReply::Refusal(text) => ok(shape.message(&req, id, Content::Refusal(text), usage)),
        ScriptedReply::CutOff(text) => {
            let content = match shape.forced_tool(&req) {
                Some(name) => Content::Tool { name, arguments: json!({}) },
                None => Content::Text(text),
            };
            let mut body = shape.message(&req, id, content, usage);
            shape.cut_off(&mut body);
            ok(body)
        }
        ScriptedReply::Garbage => {
            (StatusCode::OK, [("content-type", "text/html")], "<html>this is not JSON").into_response()
        }
        ScriptedReply::Text(text) => ok(shape.message(&req, id, Content::Text(text), usage)),
        ScriptedReply::Truncated(text) => {
            let body = shape.message(&req, id, Content::Text(text), usage);
            if stream {
                shape.stream(&body, true)
            } else {
                let whole = body.to_string();
                let cut: String = whole.chars().take(whole.chars().count() / 2).collect();
                (StatusCode::OK, [("content-type", "application/json")], cut).into_response()
            }
        }
        ScriptedReply::Json(value) => {
            let forced = shape.forced_tool(&req);
            let wrapped =
                shape.wire_schema(&req, forced.as_deref()).and_then(|s| s.get("required")) == Some(&json!(["value"]));
            let value = if wrapped { json!({"value": value}) } else { value };
            match forced {
                Some(name) => ok(shape.message(&req, id, Content::Tool { name, arguments: value }, usage)),
                None => ok(shape.message(&req, id, Content::Text(value.to_string()), usage)),
            }
        }
        ScriptedReply::ToolCall { name, arguments } => {
            ok(shape.message(&req, id, Content::Tool { name, arguments }, usage))
        }
    }
}

/// The headers as logged: lower-case names, secrets redacted.
fn logged_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().to_ascii_lowercase();
            let value = if SECRET_HEADERS.contains(&name.as_str()) {
                "[REDACTED]".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

/// The 401 message when a key is required and the request offers another (echoing the offered key, as real
/// providers do).
fn key_refusal(shape: &dyn WireShape, expected: Option<&str>, req: &Req<'_>) -> Option<String> {
    let expected = expected?;
    let offered = shape.offered_key(req);
    (offered != expected).then(|| format!("Incorrect API key provided: {offered}"))
}

/// Logs the request and takes the next scripted reply (or the status and message of an immediate 401/500).
fn next_reply(
    shape: &dyn WireShape,
    state: &Shared,
    req: &Req<'_>,
) -> Result<(ScriptedReply, TokenUsage, u64), (u16, String)> {
    let mut st = lock(state);
    st.calls.push(RecordedCall {
        path: req.uri.path().to_owned(),
        headers: logged_headers(req.headers),
        body: req.body.clone(),
    });
    if let Some(message) = key_refusal(shape, st.api_key.as_deref(), req) {
        return Err((401, message));
    }
    let Some((reply, usage)) = st.script.pop_front() else {
        return Err((500, "fake provider: no scripted reply left".to_owned()));
    };
    st.next_id += 1;
    let id = st.next_id;
    Ok((reply, usage, id))
}

/// The texts of an embeddings request (`input` as a list or a single string).
fn embedding_texts(request: &Value) -> Vec<String> {
    match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
        }
        _ => Vec::new(),
    }
}

async fn embeddings(State(state): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut reply = {
        let mut st = lock(&state);
        st.calls.push(RecordedCall {
            path: uri.path().to_owned(),
            headers: logged_headers(&headers),
            body: request.clone(),
        });
        let req = Req { uri: &uri, headers: &headers, body: &request };
        if let Some(message) = key_refusal(&openai::OpenAiWire, st.api_key.as_deref(), &req) {
            return error_response(&openai::OpenAiWire, 401, None, &message);
        }
        st.embed_script.pop_front().unwrap_or(ScriptedEmbedding::Vectors)
    };
    while let ScriptedEmbedding::Delayed(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    let texts = embedding_texts(&request);
    let dimension = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(HASH_DIMENSION);
    let embedder = HashEmbedder::new(dimension);
    let mut vectors: Vec<Value> = texts.iter().map(|t| json!(embedder.embed_one(t))).collect();
    let tokens: usize = texts.iter().map(|t| t.split_whitespace().count().max(1)).sum();
    let mut usage = Some(json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    match reply {
        ScriptedEmbedding::Status { code, retry_after } => {
            return error_response(
                &openai::OpenAiWire,
                code,
                retry_after.map(|s| s.to_string()),
                &format!("scripted error {code}"),
            )
        }
        ScriptedEmbedding::Body(body) => return ok(body),
        ScriptedEmbedding::MissingVector => {
            vectors.pop();
        }
        ScriptedEmbedding::NonFinite => {
            if let Some(first) = vectors.first_mut().and_then(|v| v.get_mut(0)) {
                *first = json!(1e300);
            }
        }
        ScriptedEmbedding::NoUsage => usage = None,
        ScriptedEmbedding::Vectors | ScriptedEmbedding::Delayed(..) => {}
    }
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .rev()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    let mut body =
        json!({"object": "list", "data": data, "model": request.get("model").cloned().unwrap_or(Value::Null)});
    if let Some(u) = usage {
        body["usage"] = u;
    }
    ok(body)
}

/// What a scripted reply answers with.
pub(crate) enum Content {
    Text(String),
    Tool { name: String, arguments: Value },
    Refusal(String),
}

pub(crate) fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Text in pieces of one word (with its following whitespace).
pub(crate) fn pieces(text: &str) -> Vec<String> {
    text.split_inclusive(char::is_whitespace).map(str::to_owned).collect()
}

/// A string in two halves (on a character boundary).
pub(crate) fn halves(text: &str) -> [String; 2] {
    let mid = text.char_indices().map(|(i, _)| i).nth(text.chars().count() / 2).unwrap_or(text.len());
    [text[..mid].to_owned(), text[mid..].to_owned()]
}

/// A stream response of `frames` (each written on its own, a moment apart, so the client sees the pieces
/// arrive separately); `truncated` keeps only the first half.
pub(crate) fn frames_response(content_type: &'static str, mut frames: Vec<Bytes>, truncated: bool) -> Response {
    if truncated {
        frames.truncate(frames.len() / 2);
    }
    let stream = futures::stream::iter(frames).then(|frame| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, std::convert::Infallible>(frame)
    });
    (StatusCode::OK, [("content-type", content_type)], axum::body::Body::from_stream(stream)).into_response()
}

/// Server-sent events (`event:` lines where a name is given).
pub(crate) fn sse_frames(events: Vec<(Option<&str>, Value)>) -> Vec<Bytes> {
    events
        .into_iter()
        .map(|(name, data)| match name {
            Some(n) => Bytes::from(format!("event: {n}\ndata: {data}\n\n")),
            None => Bytes::from(format!("data: {data}\n\n")),
        })
        .collect()
}

fn error_response(shape: &dyn WireShape, code: u16, retry_after: Option<String>, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(shape.error_body(code, message))).into_response();
    if let Some(value) = retry_after {
        if let Ok(v) = value.parse() {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp
}

/// A finished tracing span as [`SpanCapture`] saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedSpan {
    pub name: String,
    /// Every field recorded on the span (at creation or later), as JSON values.
    pub fields: serde_json::Map<String, Value>,
    /// The name of the enclosing span, if any.
    pub parent: Option<String>,
}

/// A `tracing` layer that keeps every closed span with its fields, for tests of span attributes:
/// `let (capture, spans) = SpanCapture::new(); let _g = tracing::subscriber::set_default(capture.subscriber());`.
#[derive(Clone, Default)]
pub struct SpanCapture {
    closed: Arc<Mutex<Vec<CapturedSpan>>>,
}

impl std::fmt::Debug for SpanCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanCapture")
    }
}

struct FieldVisitor<'a>(&'a mut serde_json::Map<String, Value>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), json!(value));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), json!(format!("{value:?}")));
    }
}

struct Fields(serde_json::Map<String, Value>);

impl SpanCapture {
    /// The layer and the list it fills.
    pub fn new() -> (Self, Arc<Mutex<Vec<CapturedSpan>>>) {
        let c = SpanCapture::default();
        let list = c.closed.clone();
        (c, list)
    }

    /// A subscriber with only this layer.
    pub fn subscriber(self) -> impl tracing::Subscriber + Send + Sync {
        use tracing_subscriber::layer::SubscriberExt;
        tracing_subscriber::registry().with(self)
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanCapture
where
    S: tracing::Subscriber + for<'l> tracing_subscriber::registry::LookupSpan<'l>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = serde_json::Map::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Fields(fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            if let Some(f) = span.extensions_mut().get_mut::<Fields>() {
                values.record(&mut FieldVisitor(&mut f.0));
            }
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let fields = span.extensions().get::<Fields>().map(|f| f.0.clone()).unwrap_or_default();
        let parent = span.parent().map(|p| p.name().to_owned());
        let captured = CapturedSpan { name: span.name().to_owned(), fields, parent };
        self.closed.lock().unwrap_or_else(|p| p.into_inner()).push(captured);
    }
}
