//! `http` skills: one HTTP operation declared in `skills.yaml` (SPEC §7), usable as a step and as an agent tool.
//!
//! An [`HttpSpec`] names a method, a URL template, header and query templates, a body and limits. It is
//! compiled once, when a step resolves the skill ([`HttpSkill::new`]): templates are parsed, header names and
//! the method checked, schemas compiled. Each call then:
//!
//! 1. checks the input against `input_schema` (a mismatch fails at once, nothing is sent);
//! 2. renders the URL, headers, query and body with the call's names in scope — `input` (the step input or
//!    the tool call's arguments; also `previous_step`), `params` (the step's params), `context`, `steps`,
//!    `this`, `resume_input`. Values rendered into the URL's path and query are percent-encoded; a value at the
//!    very start of the URL or in its host (`{{ context.base_url }}/v1`) is inserted as is. A path placeholder
//!    that renders empty fails the call rather than sending `/pets/` for `/pets/{{ input.id }}`;
//! 3. reads `${NAME}` references in header and query values from the environment *at call time*. Their
//!    values are sent and nowhere else: headers carrying one are marked sensitive, every message is scrubbed
//!    of them (they show as `***`), and so is the output should the server echo one back. The URL's user
//!    info is masked the same way in every message;
//! 4. sends the request with `timeout_s` per attempt (default [`DEFAULT_TIMEOUT_S`]) and retries it at most
//!    `retries` times (default [`DEFAULT_RETRIES`]) after a connection failure, a timeout, 408, 429 or 5xx —
//!    honouring `Retry-After` (seconds or an HTTP date, at most [`MAX_RETRY_AFTER`]), else backing off
//!    exponentially — but only when a retry cannot repeat an effect: for idempotent methods (GET, HEAD, PUT,
//!    DELETE, OPTIONS) or a request carrying an `Idempotency-Key` header. `idempotent: true` on a POST or
//!    PATCH sends `Idempotency-Key: <the call's idempotency key>` (stable across re-runs of the same step
//!    execution) and so makes it retryable; `idempotent: false` turns retries off for any method. A
//!    connection that could not be opened is retried for every method (nothing was sent);
//! 5. reads the response, at most `max_response_bytes` (default [`DEFAULT_MAX_RESPONSE_BYTES`]): JSON when the
//!    content type says so (or when there is none and the body parses), text otherwise, `null` when empty;
//!    checks it against `output_schema`. A status ≥ 400 fails the call with the method, the masked URL, the
//!    status and the start of the body (at most [`BODY_EXCERPT_CHARS`] characters).
//!
//! Failures are final for the step (`retryable: false`): the skill has already retried what could be retried,
//! and a step-level retry would multiply the requests. Redirects are followed only within the same origin
//! (scheme, host and port), so a header carrying a secret never reaches another host.

mod send;
mod template;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput};
use flujo_http::reqwest::header::{HeaderName, CONTENT_TYPE};
use flujo_http::reqwest::Method;
use flujo_template::{compile_json, compile_template, CompiledJson, CompiledTemplate};
use serde_json::{Map, Value};

use crate::registry::{BuiltinRegistry, SkillFactory};
pub use send::parse_retry_after;
use send::{backoff, Attempt};
use template::{compile_url, compile_value, UrlPart, ValueTemplate};

/// Default timeout of one request of an http skill, in seconds.
pub const DEFAULT_TIMEOUT_S: f64 = 30.0;
/// Default number of retries of an http skill (so at most 3 requests).
pub const DEFAULT_RETRIES: u32 = 2;
/// Most retries an http skill may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Default bound on a response body, in bytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// The longest `Retry-After` waited for; a server asking for longer ends the call at once (the error carries
/// the wait).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Most characters of a failed response's body quoted in the error.
pub const BODY_EXCERPT_CHARS: usize = 500;
/// The methods an http skill may use.
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Back-off before the first retry when the server gives no `Retry-After`; doubled for each further one.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Back-off cap.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest a timeout may ask for (7 days, as every Flujo duration); longer ones are capped.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How much of a failed response's body is read for the excerpt.
const ERROR_BODY_READ: u64 = 64 << 10;
/// What a secret looks like in messages and in the displayed URL.
const MASK: &str = "***";

/// The body of an http skill's request.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub enum HttpBody {
    /// No `body:` declared: POST, PUT and PATCH send the input as JSON; other methods send nothing.
    #[default]
    Default,
    /// `body: null`: nothing is sent.
    Empty,
    /// A template string. Exactly one `{{ expr }}` whose value is not a string sends that value as JSON;
    /// other text is sent as is (`text/plain` unless a `Content-Type` header is declared); `null` sends
    /// nothing.
    Template(String),
    /// A JSON value (mapping, list, number, …) whose string leaves are templates; sent as JSON.
    Json(Value),
}

/// An http skill as declared in `skills.yaml`. Made with `Default` and field assignment.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct HttpSpec {
    /// The skill id that steps use (`uses:`) and agents list in `tools:`.
    pub id: String,
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS` (any case).
    pub method: String,
    /// The URL template, e.g. `https://api.example.com/pets/{{ input.id }}`.
    pub url: String,
    /// Header names and value templates, in order; values may reference the environment (`${TOKEN}`;
    /// `$${` writes a literal `${`).
    pub headers: Vec<(String, String)>,
    /// Query parameter names and value templates, in order; values may reference the environment. A value
    /// that renders empty or `null` is left out; a single `{{ expr }}` that is a list repeats the parameter.
    pub query: Vec<(String, String)>,
    /// The request body.
    pub body: HttpBody,
    /// Timeout of each request in seconds (default [`DEFAULT_TIMEOUT_S`]).
    pub timeout_s: Option<f64>,
    /// Retries after transient failures (default [`DEFAULT_RETRIES`], at most [`MAX_RETRIES`]).
    pub retries: Option<u32>,
    /// `Some(true)`: POST and PATCH send an `Idempotency-Key` header and may be retried; `Some(false)`: no
    /// retries whatever the method; `None`: retries for idempotent methods only.
    pub idempotent: Option<bool>,
    /// Bound on the response body in bytes (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: Option<u64>,
    /// JSON Schema the input must match (checked before anything is sent); offered to models as the tool's
    /// parameters.
    pub input_schema: Option<Value>,
    /// JSON Schema the response must match.
    pub output_schema: Option<Value>,
    /// Whether the operation changes something outside the run.
    pub side_effects: bool,
    /// One-line description, offered to models as the tool's description.
    pub description: String,
}

/// A resolved http skill.
pub struct HttpSkill {
    spec: Arc<HttpSpec>,
    params: Value,
    compiled: Arc<Compiled>,
    input_validator: Option<Arc<jsonschema::Validator>>,
    output_validator: Option<Arc<jsonschema::Validator>>,
}

impl fmt::Debug for HttpSkill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The spec holds templates and `${NAME}` references, never their values.
        f.debug_struct("HttpSkill").field("id", &self.spec.id).field("method", &self.compiled.method).finish()
    }
}

#[derive(Debug)]
enum CompiledBody {
    None,
    Input,
    Template(CompiledTemplate),
    Json(CompiledJson),
}

#[derive(Debug)]
struct Compiled {
    method: Method,
    url: Vec<UrlPart>,
    /// Header name, as declared (for messages), and value.
    headers: Vec<(HeaderName, String, ValueTemplate)>,
    query: Vec<(String, ValueTemplate)>,
    body: CompiledBody,
    /// A `Content-Type` header is declared.
    has_content_type: bool,
    timeout: Duration,
    timeout_s: f64,
    retries: u32,
    /// A retry cannot repeat an effect (idempotent method, or an `Idempotency-Key` header).
    retry_safe: bool,
    /// Send `Idempotency-Key: <call key>`.
    send_idempotency_key: bool,
    max_response_bytes: u64,
}

/// Whether requests of `method` may be repeated without repeating an effect.
fn idempotent_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS)
}

impl Compiled {
    fn new(spec: &HttpSpec) -> Result<Compiled, String> {
        let upper = spec.method.trim().to_ascii_uppercase();
        if !METHODS.contains(&upper.as_str()) {
            return Err(format!("`method` {:?} is not one of {}", spec.method, METHODS.join(", ")));
        }
        let method = Method::from_bytes(upper.as_bytes()).map_err(|e| format!("`method`: {e}"))?;
        let url = compile_url(&spec.url).map_err(|e| format!("`url` does not compile: {e}"))?;
        let mut headers = Vec::new();
        let mut has_idempotency_header = false;
        let mut has_content_type = false;
        for (name, value) in &spec.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("`headers`: {name:?} is not a valid header name"))?;
            has_idempotency_header |= header.as_str() == "idempotency-key";
            has_content_type |= header == CONTENT_TYPE;
            let template = compile_value(value).map_err(|e| format!("`headers.{name}`: {e}"))?;
            headers.push((header, name.trim().to_owned(), template));
        }
        let mut query = Vec::new();
        for (name, value) in &spec.query {
            let template = compile_value(value).map_err(|e| format!("`query.{name}`: {e}"))?;
            query.push((name.clone(), template));
        }
        let body = match &spec.body {
            HttpBody::Default if matches!(method, Method::POST | Method::PUT | Method::PATCH) => CompiledBody::Input,
            HttpBody::Default | HttpBody::Empty => CompiledBody::None,
            HttpBody::Template(t) => {
                CompiledBody::Template(compile_template(t).map_err(|e| format!("`body` does not compile: {e}"))?)
            }
            HttpBody::Json(v) => {
                CompiledBody::Json(compile_json(v).map_err(|e| format!("`body` does not compile: {e}"))?)
            }
        };
        let timeout_s = spec.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
        flujo_core::limits::check_duration_secs(timeout_s).map_err(|e| format!("`timeout_s` {e}"))?;
        let timeout = Duration::try_from_secs_f64(timeout_s).unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
        let retries = spec.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > MAX_RETRIES {
            return Err(format!("`retries` is {retries}; the limit is {MAX_RETRIES}"));
        }
        let max_response_bytes = spec.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes == 0 {
            return Err("`max_response_bytes` must be a positive number of bytes".into());
        }
        let send_idempotency_key =
            spec.idempotent == Some(true) && matches!(method, Method::POST | Method::PATCH) && !has_idempotency_header;
        let retry_safe = match spec.idempotent {
            Some(false) => false,
            Some(true) => true,
            None => idempotent_method(&method) || has_idempotency_header,
        };
        Ok(Compiled {
            method,
            url,
            headers,
            query,
            body,
            has_content_type,
            timeout,
            timeout_s,
            retries,
            retry_safe,
            send_idempotency_key,
            max_response_bytes,
        })
    }
}

fn compile_schema(
    schema: &Option<Value>,
    id: &str,
    what: &str,
) -> Result<Option<Arc<jsonschema::Validator>>, ResolveError> {
    match schema {
        None => Ok(None),
        Some(s) => jsonschema::validator_for(s)
            .map(|v| Some(Arc::new(v)))
            .map_err(|e| ResolveError::BadParams { id: id.to_owned(), message: format!("invalid {what}: {e}") }),
    }
}

fn schema_errors(v: &jsonschema::Validator, value: &Value) -> Option<String> {
    let errs: Vec<String> = v.iter_errors(value).map(|e| format!("{e} (at '{}')", e.instance_path)).collect();
    (!errs.is_empty()).then(|| errs.join("; "))
}

impl HttpSkill {
    /// Resolves `spec` for one step (whose `params` templates can read as `params`): checks the method,
    /// compiles the templates and schemas.
    ///
    /// Fails with [`ResolveError::BadParams`] naming what is wrong.
    pub fn new(spec: Arc<HttpSpec>, params: Value) -> Result<Self, ResolveError> {
        let compiled =
            Compiled::new(&spec).map_err(|message| ResolveError::BadParams { id: spec.id.clone(), message })?;
        let input_validator = compile_schema(&spec.input_schema, &spec.id, "input_schema")?;
        let output_validator = compile_schema(&spec.output_schema, &spec.id, "output_schema")?;
        Ok(HttpSkill { spec, params, compiled: Arc::new(compiled), input_validator, output_validator })
    }

    /// Registers `spec` in `registry` under its id.
    pub fn register(spec: HttpSpec, registry: &mut BuiltinRegistry) {
        let spec = Arc::new(spec);
        let info = info_of(&spec);
        let s = spec.clone();
        let factory: SkillFactory =
            Arc::new(move |params: &Value| Ok(Arc::new(HttpSkill::new(s.clone(), params.clone())?) as Arc<dyn Skill>));
        registry.register(spec.id.clone(), info, factory);
    }
}

fn info_of(spec: &HttpSpec) -> SkillInfo {
    let mut info = SkillInfo::default();
    info.id = spec.id.clone();
    info.description = if spec.description.is_empty() {
        format!("HTTP {} {}", spec.method.to_ascii_uppercase(), spec.url)
    } else {
        spec.description.clone()
    };
    info.input_schema = spec.input_schema.clone();
    info.output_schema = spec.output_schema.clone();
    info.side_effects = spec.side_effects;
    info
}

#[async_trait]
impl Skill for HttpSkill {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let id = &self.spec.id;
        if let Some(v) = &self.input_validator {
            if let Some(errs) = schema_errors(v, &call.input) {
                return Err(SkillError::fatal(format!("http skill '{id}': input does not match input_schema: {errs}")));
            }
        }
        let prepared = self.prepare(&call)?;
        let c = &self.compiled;
        let attempts = c.retries + 1;
        let mut attempt = 1;
        let fail = |message: String, status: Option<u16>, attempt: u32, retry_after: Option<Duration>| {
            let mut e = SkillError::fatal(prepared.secrets.scrub(&format!("http skill '{id}': {message}")));
            e.retry_after = retry_after;
            let mut meta = Map::new();
            meta.insert("http_attempts".into(), Value::from(attempt));
            if let Some(s) = status {
                meta.insert("http_status".into(), Value::from(s));
            }
            e.metadata = Box::new(meta);
            e
        };
        loop {
            match self.attempt(&prepared).await {
                Attempt::Done(resp) => {
                    let status = resp.status().as_u16();
                    let output =
                        self.output_of(resp, &prepared).await.map_err(|m| fail(m, Some(status), attempt, None))?;
                    let output = prepared.secrets.scrub_value(output);
                    if let Some(v) = &self.output_validator {
                        if let Some(errs) = schema_errors(v, &output) {
                            let m = format!(
                                "{} {}: the response does not match output_schema: {errs}",
                                c.method, prepared.shown
                            );
                            return Err(fail(m, Some(status), attempt, None));
                        }
                    }
                    let mut meta = Map::new();
                    meta.insert("http_status".into(), Value::from(status));
                    meta.insert("http_attempts".into(), Value::from(attempt));
                    return Ok(SkillOutput::value(output).with_metadata(meta));
                }
                Attempt::Final { message, status } => return Err(fail(message, status, attempt, None)),
                Attempt::Transient { message, retry_after, sent, status } => {
                    if sent && !c.retry_safe {
                        let m = format!(
                            "{message} (not retried: a {} may have taken effect; declare `idempotent: true` to send \
                             an Idempotency-Key and allow retries)",
                            c.method
                        );
                        return Err(fail(m, status, attempt, retry_after));
                    }
                    if attempt >= attempts {
                        let m = format!("{message} (after {attempt} attempt(s))");
                        return Err(fail(m, status, attempt, retry_after));
                    }
                    let wait = match retry_after {
                        Some(w) if w > MAX_RETRY_AFTER => {
                            let m = format!(
                                "{message} (the server asks to retry after {}s, longer than the {}s Flujo waits)",
                                w.as_secs(),
                                MAX_RETRY_AFTER.as_secs()
                            );
                            return Err(fail(m, status, attempt, retry_after));
                        }
                        Some(w) => w,
                        None => backoff(attempt),
                    };
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    fn info(&self) -> SkillInfo {
        info_of(&self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::SkillRegistry;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use template::url_form_encode;

    #[test]
    fn compile_errors_are_bad_params() {
        let mk = |f: &dyn Fn(&mut HttpSpec)| {
            let mut s =
                HttpSpec { id: "t.h".into(), method: "GET".into(), url: "http://x/".into(), ..Default::default() };
            f(&mut s);
            HttpSkill::new(Arc::new(s), Value::Null).err().map(|e| e.to_string())
        };
        assert_eq!(mk(&|_| {}), None);
        assert!(mk(&|s| s.method = "FETCH".into()).unwrap().contains("not one of"));
        assert!(mk(&|s| s.headers = vec![("bad header".into(), "x".into())]).unwrap().contains("header name"));
        assert!(mk(&|s| s.retries = Some(11)).unwrap().contains("retries"));
        assert!(mk(&|s| s.timeout_s = Some(0.0)).unwrap().contains("timeout_s"));
        assert!(mk(&|s| s.body = HttpBody::Template("{{ x".into())).unwrap().contains("body"));
        assert!(mk(&|s| s.input_schema = Some(json!({"type": 5}))).unwrap().contains("input_schema"));
    }

    /// A tiny HTTP/1.1 server: each connection gets the next canned response; requests are recorded.
    async fn serve(responses: Vec<String>) -> (String, Arc<std::sync::Mutex<Vec<String>>>, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (seen.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let n = h.fetch_add(1, Ordering::SeqCst);
                let reply = responses.get(n).or(responses.last()).cloned().unwrap_or_default();
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    loop {
                        let Ok(k) = sock.read(&mut buf).await else { return };
                        if k == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..k]);
                        let text = String::from_utf8_lossy(&got);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    s.lock().unwrap().push(String::from_utf8_lossy(&got).into_owned());
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (format!("http://{addr}"), seen, hits)
    }

    fn reply(status: &str, headers: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}", body.len())
    }

    async fn call_spec(spec: HttpSpec, input: Value) -> Result<SkillOutput, SkillError> {
        let mut r = BuiltinRegistry::empty();
        HttpSkill::register(spec, &mut r);
        let mut call = SkillCall::new(input);
        call.idempotency_key = Arc::from("run-1/0");
        r.resolve("t.h", &json!({"p": 1})).unwrap().call(call).await
    }

    fn spec(method: &str, url: String) -> HttpSpec {
        HttpSpec { id: "t.h".into(), method: method.into(), url, ..Default::default() }
    }

    #[tokio::test]
    async fn renders_url_query_headers_and_body() {
        let (base, seen, _) =
            serve(vec![reply("200 OK", "content-type: application/json\r\n", r#"{"ok": true}"#)]).await;
        let mut s = spec("POST", format!("{base}/items/{{{{ input.id }}}}"));
        s.query = vec![("tag".into(), "{{ input.tags }}".into()), ("none".into(), "{{ input.missing }}".into())];
        s.headers = vec![("X-P".into(), "{{ params.p }}".into())];
        s.body = HttpBody::Json(json!({"name": "{{ input.name }}", "n": "{{ input.n }}"}));
        s.idempotent = Some(true);
        let out = call_spec(s, json!({"id": "a b/c", "tags": ["x", "y"], "name": "Rex", "n": 3})).await.unwrap();
        assert_eq!(out.output, json!({"ok": true}));
        assert_eq!(out.metadata["http_status"], 200);
        let req = seen.lock().unwrap()[0].clone();
        assert!(req.starts_with("POST /items/a%20b%2Fc?tag=x&tag=y HTTP/1.1"), "{req}");
        assert!(req.contains("x-p: 1"), "{req}");
        assert!(req.contains("idempotency-key: run-1/0"), "{req}");
        assert!(req.contains("content-type: application/json"), "{req}");
        assert!(req.ends_with(r#"{"name":"Rex","n":3}"#), "{req}");
    }

    #[tokio::test]
    async fn retries_idempotent_requests_and_honours_retry_after() {
        let (base, _, hits) = serve(vec![
            reply("503 Service Unavailable", "retry-after: 0\r\n", "busy"),
            reply("200 OK", "content-type: text/plain\r\n", "fine"),
        ])
        .await;
        let out = call_spec(spec("GET", format!("{base}/x")), Value::Null).await.unwrap();
        assert_eq!(out.output, json!("fine"));
        assert_eq!(out.metadata["http_attempts"], 2);
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // a POST is not repeated
        let (base, _, hits) = serve(vec![reply("503 Service Unavailable", "retry-after: 0\r\n", "busy")]).await;
        let err = call_spec(spec("POST", format!("{base}/x")), json!({})).await.unwrap_err();
        assert!(err.message.contains("HTTP 503") && err.message.contains("not retried"), "{}", err.message);
        assert!(!err.retryable);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // a long Retry-After ends the call at once, carrying the wait
        let (base, _, hits) = serve(vec![reply("429 Too Many Requests", "retry-after: 3600\r\n", "")]).await;
        let err = call_spec(spec("GET", format!("{base}/x")), Value::Null).await.unwrap_err();
        assert_eq!(err.retry_after, Some(Duration::from_secs(3600)));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_name_status_and_body_and_hide_secrets() {
        // `PATH` stands in for a secret: always set, and no test has to change the environment.
        let secret = std::env::var("PATH").unwrap();
        assert!(secret.len() >= 4);
        let long = "x".repeat(2000);
        let (base, seen, _) =
            serve(vec![reply("404 Not Found", "", &format!("no such pet; you sent {secret} {long}"))]).await;
        let mut s = spec("GET", format!("{base}/pets/{{{{ input.id }}}}"));
        s.headers = vec![("X-Key".into(), "${PATH}".into())];
        s.query = vec![("api_key".into(), "${PATH}".into())];
        let err = call_spec(s, json!({"id": 7})).await.unwrap_err();
        assert!(err.message.contains("GET ") && err.message.contains("/pets/7?api_key=***"), "{}", err.message);
        assert!(err.message.contains("HTTP 404"), "{}", err.message);
        assert!(!err.message.contains(&secret), "{}", err.message);
        assert!(err.message.len() < 1000, "the body is quoted in part: {}", err.message.len());
        let req = seen.lock().unwrap()[0].clone();
        assert!(req.contains(&format!("x-key: {secret}")), "{req}");
        assert!(req.contains(&format!("api_key={}", url_form_encode(&secret))), "{req}");

        let mut s = spec("GET", format!("{base}/x"));
        s.headers = vec![("X-Key".into(), "${FLUJO_HTTP_TEST_UNSET_VAR}".into())];
        let err = call_spec(s, Value::Null).await.unwrap_err();
        assert!(
            err.message.contains("FLUJO_HTTP_TEST_UNSET_VAR") && err.message.contains("not set"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn input_output_and_size_limits() {
        let (base, _, hits) = serve(vec![reply("200 OK", "content-type: application/json\r\n", r#"{"n": "x"}"#)]).await;
        let mut s = spec("GET", format!("{base}/x"));
        s.input_schema = Some(json!({"type": "object", "required": ["id"]}));
        let err = call_spec(s.clone(), json!({})).await.unwrap_err();
        assert!(err.message.contains("input_schema"), "{}", err.message);
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing is sent");
        s.input_schema = None;
        s.output_schema = Some(json!({"type": "object", "properties": {"n": {"type": "integer"}}}));
        let err = call_spec(s.clone(), json!({})).await.unwrap_err();
        assert!(err.message.contains("output_schema"), "{}", err.message);
        s.output_schema = None;
        s.max_response_bytes = Some(4);
        let err = call_spec(s, json!({})).await.unwrap_err();
        assert!(err.message.contains("max_response_bytes (4 bytes)"), "{}", err.message);
        // an empty path segment is refused before sending
        let err = call_spec(spec("GET", format!("{base}/p/{{{{ input.id }}}}")), json!({})).await.unwrap_err();
        assert!(err.message.contains("rendered empty"), "{}", err.message);
    }

    #[tokio::test]
    async fn connection_failures_are_retried_then_reported() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut s = spec("POST", format!("http://{addr}/x"));
        s.retries = Some(1);
        let t = std::time::Instant::now();
        let err = call_spec(s, json!({})).await.unwrap_err();
        assert!(
            err.message.contains("could not connect") && err.message.contains("after 2 attempt(s)"),
            "{}",
            err.message
        );
        assert!(t.elapsed() >= BASE_BACKOFF);
    }
}
