//! The HTTP plumbing shared by the providers: one pooled `reqwest` client (rustls, no OpenSSL), per-request
//! timeouts, bounded retries with exponential backoff on 429/5xx and connection failures (a `Retry-After` in
//! seconds is honoured), and the mapping of HTTP outcomes to [`LlmError`]. API keys travel in headers marked
//! sensitive and are scrubbed from every message; [`ApiKey`]'s `Debug` never shows the key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flujo_http::reqwest;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{scrub, LlmError};

/// An API key. `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(Arc::from(key.into()))
    }

    /// The key itself (for the request header only).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(ApiKey::new)
    }
}

/// Bounded retries of transient failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (≥ 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a longer one ends the call at once (the error carries it, and no
    /// level above retries sooner).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// One pooled client; cheap to clone (all clones share the connection pool).
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client with a 10 s connect timeout and a pool of idle connections per host.
    pub fn new() -> Result<Self, LlmError> {
        let client = flujo_http::client_builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("flujo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {}", e.without_url())))?;
        Ok(HttpClient { client })
    }
}

impl HttpClient {
    /// GETs `url` (an image or document to send inline), at most `max_bytes`; returns the bytes and the
    /// `Content-Type` without parameters. Errors are plain messages (the caller names the part).
    pub(crate) async fn fetch_bytes(&self, url: &str, max_bytes: usize) -> Result<(Vec<u8>, Option<String>), String> {
        let mut resp = self
            .client
            .get(url)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| error_chain(&e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e.without_url()))? {
            if bytes.len() + chunk.len() > max_bytes {
                return Err(format!("larger than the {max_bytes} bytes allowed"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, content_type))
    }
}

/// What one provider call sends.
pub(crate) struct JsonPost<'a> {
    pub provider: &'a str,
    pub url: &'a str,
    pub headers: HeaderMap,
    pub body: &'a Value,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub secret: Option<&'a ApiKey>,
}

/// One provider request, as both providers send it: the key in header `key_header` (its value made by
/// `key_value`; no key where one is required is [`LlmError::MissingApiKey`] before anything is sent), the
/// provider's timeout (or the call's) and retry policy, and the reply read whole or rebuilt from its stream.
pub(crate) async fn provider_request(
    http: &HttpClient,
    p: &crate::config::ResolvedProvider,
    path: &str,
    (key_header, key_value): (&'static str, fn(&str) -> String),
    mut headers: HeaderMap,
    body: &Value,
    timeout: Option<Duration>,
    stream: Option<&mut dyn crate::stream::StreamedReply>,
) -> Result<(Value, u32), LlmError> {
    match &p.api_key {
        Some(key) => {
            let (name, value) = secret_header(key_header, &key_value(key.expose()))?;
            headers.insert(name, value);
        }
        None => p.check_key()?,
    }
    let url = format!("{}{path}", p.base_url);
    let post = JsonPost {
        provider: &p.name,
        url: &url,
        headers,
        body,
        timeout: timeout.unwrap_or(p.timeout),
        retry: p.retry,
        secret: p.api_key.as_ref(),
    };
    http.post_reply(post, stream).await
}

/// A header carrying a secret: marked sensitive so it never shows in `Debug` output of the request.
pub(crate) fn secret_header(name: &'static str, value: &str) -> Result<(HeaderName, HeaderValue), LlmError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| LlmError::Config(format!("the API key contains characters not allowed in the {name} header")))?;
    v.set_sensitive(true);
    Ok((HeaderName::from_static(name), v))
}

/// Signs each attempt of a request just before it is sent (AWS SigV4: the signature covers the time, so
/// every retry is signed anew). It may add headers; it sees the final URL, headers and body bytes.
pub(crate) trait SignRequest: Send + Sync {
    fn sign(&self, request: &mut reqwest::Request) -> Result<(), LlmError>;
}

/// Handles one chunk of a streamed body as it arrives.
pub(crate) type ChunkHandler<'a> = &'a mut (dyn FnMut(&[u8]) -> Result<(), LlmError> + Send);

enum Outcome<T> {
    Done(T),
    Retry { error: LlmError, wait: Duration },
    Fail(LlmError),
}

/// The most a single server-sent-events line may hold before the stream is refused as malformed.
const MAX_SSE_LINE: usize = 16 << 20;

impl HttpClient {
    /// POSTs `req.body` (which asks for a stream) and feeds each server-sent event to `on_event(event name,
    /// data)` as it arrives, until the server ends the stream or `on_event` returns an error. Failures before
    /// the stream starts are retried like a whole reply's; a stream that breaks off is not (its
    /// pieces were already passed on).
    pub(crate) async fn post_sse(
        &self,
        req: JsonPost<'_>,
        on_event: &mut (dyn FnMut(&str, &str) -> Result<(), LlmError> + Send),
    ) -> Result<u32, LlmError> {
        let (resp, requests) = self.send_with_retries(&req, None).await?;
        let provider = req.provider.to_owned();
        let mut parser = SseParser::default();
        let mut on_chunk = |bytes: &[u8]| {
            parser.push(bytes, on_event).map_err(|e| match e {
                SseError::TooLong => LlmError::Malformed {
                    provider: provider.clone(),
                    message: format!("a stream line is longer than {MAX_SSE_LINE} bytes"),
                },
                SseError::Handler(e) => e,
            })
        };
        read_chunks(&req, resp, &mut on_chunk).await?;
        parser.finish(on_event).map(|()| requests).map_err(|e| match e {
            SseError::Handler(e) => e,
            SseError::TooLong => LlmError::Malformed { provider, message: "stream line too long".into() },
        })
    }

    /// POSTs `req.body`, each attempt signed by `signer` when given, and returns the JSON reply with the
    /// response headers (request ids) and the number of requests sent.
    #[cfg_attr(not(feature = "bedrock"), allow(dead_code))]
    pub(crate) async fn post_json_with_headers(
        &self,
        req: JsonPost<'_>,
        signer: Option<&dyn SignRequest>,
    ) -> Result<(Value, HeaderMap, u32), LlmError> {
        let (resp, requests) = self.send_with_retries(&req, signer).await?;
        let headers = resp.headers().clone();
        self.read_json(&req, resp).await.map(|v| (v, headers, requests))
    }

    /// POSTs `req.body` (which asks for a stream), each attempt signed by `signer` when given, and feeds the
    /// raw body to `on_chunk` as it arrives (a binary stream: the caller frames it). Returns the response
    /// headers and the number of requests sent. Retries as [`HttpClient::post_sse`] does.
    #[cfg_attr(not(feature = "bedrock"), allow(dead_code))]
    pub(crate) async fn post_byte_stream(
        &self,
        req: JsonPost<'_>,
        signer: Option<&dyn SignRequest>,
        on_chunk: ChunkHandler<'_>,
    ) -> Result<(HeaderMap, u32), LlmError> {
        let (resp, requests) = self.send_with_retries(&req, signer).await?;
        let headers = resp.headers().clone();
        read_chunks(&req, resp, on_chunk).await.map(|()| (headers, requests))
    }

    /// POSTs `req.body` as JSON and returns the JSON reply (retrying transient failures per `req.retry`), or
    /// with `stream`, [`HttpClient::post_sse`] with the events rebuilt into the same JSON reply. Also returns how many requests were sent (retries included).
    pub(crate) async fn post_reply(
        &self,
        req: JsonPost<'_>,
        stream: Option<&mut dyn crate::stream::StreamedReply>,
    ) -> Result<(Value, u32), LlmError> {
        match stream {
            None => {
                let (resp, requests) = self.send_with_retries(&req, None).await?;
                self.read_json(&req, resp).await.map(|v| (v, requests))
            }
            Some(s) => {
                let requests = self.post_sse(req, &mut |event, data| s.on_event(event, data)).await?;
                s.finish().map(|v| (v, requests))
            }
        }
    }

    /// Reads a successful reply's JSON body.
    async fn read_json(&self, req: &JsonPost<'_>, resp: reqwest::Response) -> Result<Value, LlmError> {
        let provider = req.provider.to_owned();
        let secret = req.secret.map(ApiKey::expose);
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err(LlmError::Timeout { provider, timeout: req.timeout }),
            Err(e) => {
                let message = scrub(&error_chain(&e.without_url()), secret);
                return Err(LlmError::Network { provider, message });
            }
        };
        serde_json::from_slice::<Value>(&body).map_err(|e| LlmError::Malformed {
            provider,
            message: format!("the reply is not JSON ({e}): {}", scrub(&snippet(&body), secret)),
        })
    }

    /// Sends until a reply comes, a failure is final, or the policy's attempts are used up; returns the
    /// response and the number of requests sent. Errors name the real number of requests.
    async fn send_with_retries(
        &self,
        req: &JsonPost<'_>,
        signer: Option<&dyn SignRequest>,
    ) -> Result<(reqwest::Response, u32), LlmError> {
        let attempts = req.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.attempt(req, signer, attempt).await {
                Outcome::Done(v) => return Ok((v, attempt)),
                Outcome::Fail(e) => return Err(e),
                Outcome::Retry { error, wait } => {
                    if attempt >= attempts {
                        return Err(error);
                    }
                    tracing::debug!(provider = req.provider, attempt, wait_ms = wait.as_millis() as u64, %error, "retrying model call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Sends once; a successful status gives the response with its body unread.
    async fn attempt(
        &self,
        req: &JsonPost<'_>,
        signer: Option<&dyn SignRequest>,
        attempt: u32,
    ) -> Outcome<reqwest::Response> {
        let provider = req.provider.to_owned();
        let secret = req.secret.map(ApiKey::expose);
        let built = self.client.post(req.url).headers(req.headers.clone()).json(req.body).timeout(req.timeout).build();
        let sent = match built {
            Ok(mut request) => {
                if let Some(signer) = signer {
                    if let Err(e) = signer.sign(&mut request) {
                        return Outcome::Fail(e);
                    }
                }
                self.client.execute(request).await
            }
            Err(e) => Err(e),
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::Fail(LlmError::Timeout { provider, timeout: req.timeout }),
            Err(e) => {
                let transient = e.is_connect() || e.is_request();
                let message = scrub(&error_chain(&e.without_url()), secret);
                let error = LlmError::Network { provider, message };
                return if transient {
                    Outcome::Retry { error, wait: req.retry.backoff(attempt) }
                } else {
                    Outcome::Fail(error)
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Done(resp);
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| parse_retry_after(s, std::time::SystemTime::now()));
        // AWS services name the error in a header (`ThrottlingException`, `ValidationException`, …).
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|t| t.split(':').next().unwrap_or(t).trim().to_owned())
            .filter(|t| !t.is_empty());
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Outcome::Fail(LlmError::Timeout { provider, timeout: req.timeout }),
            Err(e) => {
                let message = scrub(&error_chain(&e.without_url()), secret);
                return Outcome::Retry {
                    error: LlmError::Network { provider, message },
                    wait: req.retry.backoff(attempt),
                };
            }
        };
        // Google APIs give the pause in the body instead of a header (`RetryInfo.retryDelay: "30s"`).
        let retry_after = retry_after.or_else(|| body_retry_delay(&body));
        let message = match error_type {
            Some(t) => format!("{t}: {}", provider_message(&body)),
            None => provider_message(&body),
        };
        let message = scrub(&message, secret);
        let code = status.as_u16();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Outcome::Fail(LlmError::Auth { provider, status: code })
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let error = LlmError::RateLimited { provider, attempts: attempt, retry_after };
                match retry_after {
                    Some(wait) if wait > req.retry.max_retry_after => Outcome::Fail(error),
                    Some(wait) => Outcome::Retry { error, wait },
                    None => Outcome::Retry { error, wait: req.retry.backoff(attempt) },
                }
            }
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                let error = LlmError::Server { provider, status: code, attempts: attempt, message, retry_after };
                match retry_after {
                    // The server asked for a longer pause than this call waits: stop now, carrying the pause.
                    Some(wait) if wait > req.retry.max_retry_after => Outcome::Fail(error),
                    Some(wait) => Outcome::Retry { error, wait },
                    None => Outcome::Retry { error, wait: req.retry.backoff(attempt) },
                }
            }
            _ => Outcome::Fail(LlmError::BadRequest { provider, status: code, message }),
        }
    }
}

/// Reads a successful streamed reply's body into `on_chunk`, piece by piece, until it ends.
async fn read_chunks(
    req: &JsonPost<'_>,
    mut resp: reqwest::Response,
    on_chunk: ChunkHandler<'_>,
) -> Result<(), LlmError> {
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => on_chunk(&bytes)?,
            Ok(None) => return Ok(()),
            Err(e) if e.is_timeout() => {
                return Err(LlmError::Timeout { provider: req.provider.to_owned(), timeout: req.timeout })
            }
            Err(e) => {
                let message = scrub(&error_chain(&e.without_url()), req.secret.map(ApiKey::expose));
                return Err(LlmError::Network {
                    provider: req.provider.to_owned(),
                    message: format!("the stream broke off: {message}"),
                });
            }
        }
    }
}

/// A `Retry-After` value: delay seconds, or an HTTP-date (IMF-fixdate, RFC 850 or asctime form) measured
/// from `now` (a date in the past means no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

enum SseError {
    TooLong,
    Handler(LlmError),
}

/// An incremental parser of `text/event-stream` (the subset providers use: `event:` and `data:` fields,
/// `:` comments, events ended by a blank line; `\n`, `\r\n` or `\r` line ends).
#[derive(Default)]
struct SseParser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r` (a following `\n` belongs to it).
    after_cr: bool,
}

type Handler<'a> = &'a mut (dyn FnMut(&str, &str) -> Result<(), LlmError> + Send);

impl SseParser {
    fn push(&mut self, bytes: &[u8], on_event: Handler<'_>) -> Result<(), SseError> {
        for &b in bytes {
            let after_cr = std::mem::take(&mut self.after_cr);
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&String::from_utf8_lossy(&line), on_event)?;
                }
                _ => {
                    if self.line.len() >= MAX_SSE_LINE {
                        return Err(SseError::TooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    fn line_done(&mut self, line: &str, on_event: Handler<'_>) -> Result<(), SseError> {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                if self.data.len() + value.len() > MAX_SSE_LINE {
                    return Err(SseError::TooLong);
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: Handler<'_>) -> Result<(), SseError> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if std::mem::take(&mut self.has_data) {
            on_event(if event.is_empty() { "message" } else { &event }, &data).map_err(SseError::Handler)?;
        }
        Ok(())
    }

    /// The end of the stream: a last event without its blank line still counts.
    fn finish(mut self, on_event: Handler<'_>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&String::from_utf8_lossy(&line), on_event)?;
        }
        self.dispatch(on_event)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The provider's error message: `error.message` (OpenAI and Anthropic shapes), a top-level `message` (AWS
/// shape), else the body's start.
/// The `retryDelay` of a `google.rpc.RetryInfo` detail in an error body (`{"error": {"details": [{"@type":
/// "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]}}`), if any.
fn body_retry_delay(body: &[u8]) -> Option<Duration> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let details = v.pointer("/error/details")?.as_array()?;
    details
        .iter()
        .filter(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))
        .find_map(|d| d.get("retryDelay")?.as_str()?.strip_suffix('s')?.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

fn provider_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            if let Some(e) = v.get("error") {
                return e.get("message").and_then(Value::as_str).or_else(|| e.as_str()).map(str::to_owned);
            }
            v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).map(str::to_owned)
        })
        .unwrap_or_else(|| snippet(body))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_debug_is_redacted() {
        let k = ApiKey::new("sk-very-secret");
        assert_eq!(format!("{k:?} {k}"), "ApiKey([REDACTED]) [REDACTED]");
        let (_, v) = secret_header("x-api-key", k.expose()).unwrap();
        assert!(!format!("{v:?}").contains("secret"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            ..Default::default()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(350));
        assert_eq!(p.backoff(60), Duration::from_millis(350));
    }

    fn parse_sse(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        let mut handler = |e: &str, d: &str| {
            seen.push((e.to_owned(), d.to_owned()));
            Ok(())
        };
        let mut p = SseParser::default();
        for c in chunks {
            assert!(p.push(c, &mut handler).is_ok());
        }
        assert!(p.finish(&mut handler).is_ok());
        seen
    }

    #[test]
    fn sse_events_across_chunk_boundaries() {
        let whole: &[u8] = b": keep-alive\nevent: delta\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let expected = vec![
            ("delta".to_owned(), "{\"a\":1}".to_owned()),
            ("message".to_owned(), "x\ny".to_owned()),
            ("message".to_owned(), "[DONE]".to_owned()),
        ];
        assert_eq!(parse_sse(&[whole]), expected);
        // Every split point, including inside a `\r\n`.
        for i in 0..whole.len() {
            assert_eq!(parse_sse(&[&whole[..i], &whole[i..]]), expected, "split at {i}");
        }
        // A last event without its blank line.
        assert_eq!(parse_sse(&[b"data: end"]), vec![("message".to_owned(), "end".to_owned())]);
    }

    #[test]
    fn retry_after_in_seconds_and_as_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn google_retry_info_in_the_body() {
        let body = br#"{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]}}"#;
        assert_eq!(body_retry_delay(body), Some(Duration::from_secs(31)));
        assert_eq!(
            body_retry_delay(br#"{"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "1.5s"}]}}"#),
            None
        );
        assert_eq!(
            body_retry_delay(br#"{"error": {"details": [{"@type": "google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}"#),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            body_retry_delay(br#"{"error": {"details": [{"@type": "google.rpc.RetryInfo", "retryDelay": "-3s"}]}}"#),
            None
        );
        assert_eq!(body_retry_delay(b"not json"), None);
    }

    #[test]
    fn provider_messages() {
        assert_eq!(provider_message(br#"{"error": {"message": "bad model"}}"#), "bad model");
        assert_eq!(provider_message(br#"{"type":"error","error":{"type":"x","message":"m"}}"#), "m");
        assert_eq!(provider_message(b"oops"), "oops");
        assert_eq!(provider_message(br#"{"message": "Too many requests"}"#), "Too many requests");
    }
}
