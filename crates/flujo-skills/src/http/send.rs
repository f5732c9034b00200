//! Sending an http skill's request: the process's client (same-origin redirects only), one attempt with its
//! outcome classified (done, transient, final), bounded reading of bodies, `Retry-After` and back-off.

use std::sync::OnceLock;
use std::time::Duration;

use flujo_http::reqwest;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use super::template::{mask_userinfo_text, Prepared};
use super::{HttpSkill, BASE_BACKOFF, BODY_EXCERPT_CHARS, ERROR_BODY_READ, MAX_BACKOFF};

/// The process's HTTP client for http skills (one connection pool), or why it cannot be built.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // Redirects within the same origin only: a header carrying a secret never reaches another host.
            let policy = reqwest::redirect::Policy::custom(|attempt| {
                let same_origin =
                    attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() > 5 || !same_origin {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            });
            flujo_http::client_builder()
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(90))
                .redirect(policy)
                .user_agent(concat!("flujo/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A `Retry-After` value: delay seconds, or an HTTP date measured from `now` (a date in the past means no
/// wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

pub(super) fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The start of a body, at most [`BODY_EXCERPT_CHARS`] characters.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut s: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    if text.chars().count() > BODY_EXCERPT_CHARS {
        s.push('…');
    }
    s
}

/// What one attempt came to.
pub(super) enum Attempt {
    Done(reqwest::Response),
    /// A failure a retry may cure (if the request may be repeated): the message and the wait the server asked
    /// for. `sent`: the request may have reached the server.
    Transient {
        message: String,
        retry_after: Option<Duration>,
        sent: bool,
        status: Option<u16>,
    },
    Final {
        message: String,
        status: Option<u16>,
    },
}

/// Reads at most `max` bytes of `resp`'s body; `Err(true)` when it is larger, `Err(false)` with the message
/// on a read failure.
async fn read_body(resp: &mut reqwest::Response, max: u64) -> Result<Vec<u8>, Result<String, ()>> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(Err(()));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > max {
                    return Err(Err(()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(Ok(error_chain(&e.without_url()))),
        }
    }
}

/// Whether a `Content-Type` is JSON (`application/json`, `application/problem+json`, …).
fn is_json_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

impl HttpSkill {
    pub(super) async fn attempt(&self, p: &Prepared) -> Attempt {
        let c = &self.compiled;
        let method = c.method.as_str();
        let shown = &p.shown;
        let client = match client() {
            Ok(c) => c,
            Err(message) => return Attempt::Final { message, status: None },
        };
        let mut req = client.request(c.method.clone(), p.url.clone()).headers(p.headers.clone()).timeout(c.timeout);
        if let Some((bytes, content_type)) = &p.body {
            if !c.has_content_type {
                req = req.header(CONTENT_TYPE, *content_type);
            }
            req = req.body(bytes.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let connect = e.is_connect();
                let what = if e.is_timeout() {
                    format!("timed out after {}s", c.timeout_s)
                } else if e.is_connect() {
                    format!("could not connect: {}", error_chain(&e.without_url()))
                } else {
                    format!("failed: {}", error_chain(&e.without_url()))
                };
                return Attempt::Transient {
                    message: format!("{method} {shown} {what}"),
                    retry_after: None,
                    sent: !connect,
                    status: None,
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Attempt::Done(resp);
        }
        let code = status.as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| parse_retry_after(s, std::time::SystemTime::now()));
        let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = match read_body(&mut resp, ERROR_BODY_READ).await {
            Ok(b) => excerpt(&b),
            Err(Err(())) => "(a body too large to quote)".to_owned(),
            Err(Ok(e)) => format!("(the body could not be read: {e})"),
        };
        let reason = status.canonical_reason().map(|r| format!(" {r}")).unwrap_or_default();
        let mut message = format!("{method} {shown} returned HTTP {code}{reason}");
        if status.is_redirection() {
            let to = location.map(|l| format!(" to {}", mask_userinfo_text(&l))).unwrap_or_default();
            message.push_str(&format!(
                " (a redirect{to}; redirects are followed only within the same scheme, host and port)"
            ));
        } else if !body.is_empty() {
            message.push_str(&format!(": {body}"));
        }
        if code == 429 || status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            Attempt::Transient { message, retry_after, sent: true, status: Some(code) }
        } else {
            Attempt::Final { message, status: Some(code) }
        }
    }

    /// Turns a successful response into the call's output.
    pub(super) async fn output_of(&self, mut resp: reqwest::Response, p: &Prepared) -> Result<Value, String> {
        let c = &self.compiled;
        let method = c.method.as_str();
        let shown = &p.shown;
        let content_type =
            resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_default();
        let body = match read_body(&mut resp, c.max_response_bytes).await {
            Ok(b) => b,
            Err(Err(())) => {
                return Err(format!(
                    "{method} {shown}: the response is larger than max_response_bytes ({} bytes)",
                    c.max_response_bytes
                ))
            }
            Err(Ok(e)) => return Err(format!("{method} {shown}: reading the response failed: {e}")),
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        if is_json_type(&content_type) {
            return serde_json::from_slice(&body).map_err(|e| {
                format!("{method} {shown}: the response says it is JSON but is not ({e}): {}", excerpt(&body))
            });
        }
        if content_type.is_empty() {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                return Ok(v);
            }
        }
        Ok(Value::String(String::from_utf8_lossy(&body).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
