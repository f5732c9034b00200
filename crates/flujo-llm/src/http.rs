//! The HTTP plumbing shared by the providers: one pooled `reqwest` client (rustls, no OpenSSL), per-request
//! timeouts, bounded retries with exponential backoff on 429/5xx and connection failures (a `Retry-After` in
//! seconds is honoured), and the mapping of HTTP outcomes to [`LlmError`]. API keys travel in headers marked
//! sensitive and are scrubbed from every message; [`ApiKey`]'s `Debug` never shows the key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// The longest `Retry-After` honoured; a longer one ends the call with [`LlmError::RateLimited`].
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
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("flujo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {}", e.without_url())))?;
        Ok(HttpClient { client })
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

/// A header carrying a secret: marked sensitive so it never shows in `Debug` output of the request.
pub(crate) fn secret_header(name: &'static str, value: &str) -> Result<(HeaderName, HeaderValue), LlmError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| LlmError::Config(format!("the API key contains characters not allowed in the {name} header")))?;
    v.set_sensitive(true);
    Ok((HeaderName::from_static(name), v))
}

enum Outcome {
    Done(Value),
    Retry { error: LlmError, wait: Duration },
    Fail(LlmError),
}

impl HttpClient {
    /// POSTs `req.body` as JSON and returns the JSON reply, retrying transient failures per `req.retry`.
    pub(crate) async fn post_json(&self, req: JsonPost<'_>) -> Result<Value, LlmError> {
        let attempts = req.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.attempt(&req, attempt).await {
                Outcome::Done(v) => return Ok(v),
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

    async fn attempt(&self, req: &JsonPost<'_>, attempt: u32) -> Outcome {
        let provider = req.provider.to_owned();
        let secret = req.secret.map(ApiKey::expose);
        let sent =
            self.client.post(req.url).headers(req.headers.clone()).json(req.body).timeout(req.timeout).send().await;
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
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
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
        if status.is_success() {
            return match serde_json::from_slice::<Value>(&body) {
                Ok(v) => Outcome::Done(v),
                Err(e) => Outcome::Fail(LlmError::Malformed {
                    provider,
                    message: format!("the reply is not JSON ({e}): {}", scrub(&snippet(&body), secret)),
                }),
            };
        }
        let message = scrub(&provider_message(&body), secret);
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
                let error = LlmError::Server { provider, status: code, attempts: attempt, message };
                let wait =
                    retry_after.filter(|w| *w <= req.retry.max_retry_after).unwrap_or(req.retry.backoff(attempt));
                Outcome::Retry { error, wait }
            }
            _ => Outcome::Fail(LlmError::BadRequest { provider, status: code, message }),
        }
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

/// The provider's error message: `error.message` (OpenAI and Anthropic shapes), else the body's start.
fn provider_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.get("message").and_then(Value::as_str).or_else(|| e.as_str()).map(str::to_owned)
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

    #[test]
    fn provider_messages() {
        assert_eq!(provider_message(br#"{"error": {"message": "bad model"}}"#), "bad model");
        assert_eq!(provider_message(br#"{"type":"error","error":{"type":"x","message":"m"}}"#), "m");
        assert_eq!(provider_message(b"oops"), "oops");
    }
}
