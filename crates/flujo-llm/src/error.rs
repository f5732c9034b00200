//! Errors of the model layer: one typed [`LlmError`] per way a provider call can fail, each saying whether a
//! retry can help. Messages never contain an API key: authentication failures drop the provider's reply body
//! (providers echo parts of the key there) and every other provider message is scrubbed of the key.

use std::time::Duration;

use flujo_core::{SkillError, TokenUsage};

use crate::pricing::PricingError;

/// A failed model call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// HTTP 401/403: the key is missing, wrong or lacks access. The provider's body is not kept.
    #[error("{provider}: authentication failed (HTTP {status}); check the API key")]
    Auth { provider: String, status: u16 },
    /// The provider needs a key and none is configured; no request was sent.
    #[error("{provider}: no API key configured; set {env} or `api_key_env` under [providers.{provider}]")]
    MissingApiKey { provider: String, env: String },
    /// HTTP 429 on every attempt (or a `Retry-After` longer than the policy waits).
    #[error("{provider}: rate limited (HTTP 429) after {attempts} attempt(s){}",
        retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { provider: String, attempts: u32, retry_after: Option<Duration> },
    /// HTTP 400 (and other 4xx): the request was refused; `message` is the provider's explanation.
    #[error("{provider}: bad request (HTTP {status}): {message}")]
    BadRequest { provider: String, status: u16, message: String },
    /// HTTP 5xx on every attempt.
    #[error("{provider}: server error (HTTP {status}) after {attempts} attempt(s): {message}")]
    Server { provider: String, status: u16, attempts: u32, message: String },
    /// The reply could not be understood (not JSON, or missing the fields of the provider's shape).
    #[error("{provider}: malformed reply: {message}")]
    Malformed { provider: String, message: String },
    /// The request did not finish within its timeout.
    #[error("{provider}: request timed out after {:.1}s", timeout.as_secs_f64())]
    Timeout { provider: String, timeout: Duration },
    /// The connection failed (refused, reset, DNS, TLS).
    #[error("{provider}: network error: {message}")]
    Network { provider: String, message: String },
    /// Structured output still violated the schema after every re-ask. `usage` is what the attempts consumed.
    #[error("output does not match the output schema after {attempts} attempt(s): {violation}")]
    SchemaViolation { attempts: u32, violation: String, usage: TokenUsage },
    /// Strict pricing and no price for the model (no request was sent), or an invalid pricing table.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// Invalid configuration or agent settings.
    #[error("configuration error: {0}")]
    Config(String),
}

impl LlmError {
    /// True when trying the same call again may succeed (rate limits, server errors, timeouts, network,
    /// malformed or schema-violating replies); false for authentication, bad requests, pricing and configuration.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Malformed { .. }
                | LlmError::Timeout { .. }
                | LlmError::Network { .. }
                | LlmError::SchemaViolation { .. }
        )
    }

    /// A short stable name of the error (the `error.type` span attribute).
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Auth { .. } => "auth",
            LlmError::MissingApiKey { .. } => "missing_api_key",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::BadRequest { .. } => "bad_request",
            LlmError::Server { .. } => "server_error",
            LlmError::Malformed { .. } => "malformed_reply",
            LlmError::Timeout { .. } => "timeout",
            LlmError::Network { .. } => "network",
            LlmError::SchemaViolation { .. } => "schema_violation",
            LlmError::Pricing(_) => "pricing",
            LlmError::Config(_) => "config",
        }
    }

    /// Tokens the failed call consumed anyway (billed re-asks of structured output), if any.
    pub fn usage(&self) -> TokenUsage {
        match self {
            LlmError::SchemaViolation { usage, .. } => *usage,
            _ => TokenUsage::default(),
        }
    }

    /// The pricing error inside, if this is one (the engine raises `Interrupt::PricingNotConfigured` for it).
    pub fn as_pricing(&self) -> Option<&PricingError> {
        match self {
            LlmError::Pricing(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LlmError> for SkillError {
    fn from(e: LlmError) -> Self {
        if e.is_retryable() {
            SkillError::new(e.to_string())
        } else {
            SkillError::fatal(e.to_string())
        }
    }
}

/// Replaces every occurrence of `secret` in `text` (no-op for secrets shorter than 4 bytes, which would
/// mangle ordinary text without protecting anything).
pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 4 => text.replace(s, "[REDACTED]"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_kinds() {
        let p = || "openai".to_owned();
        assert!(LlmError::Server { provider: p(), status: 502, attempts: 3, message: String::new() }.is_retryable());
        assert!(!LlmError::Auth { provider: p(), status: 401 }.is_retryable());
        let e: SkillError = LlmError::BadRequest { provider: p(), status: 400, message: "x".into() }.into();
        assert!(!e.retryable);
        assert!(e.message.contains("HTTP 400"));
    }

    #[test]
    fn scrub_removes_the_secret() {
        assert_eq!(scrub("bad key sk-12345", Some("sk-12345")), "bad key [REDACTED]");
        assert_eq!(scrub("a b", Some("a")), "a b");
        let e = LlmError::RateLimited { provider: "x".into(), attempts: 2, retry_after: Some(Duration::from_secs(3)) };
        assert_eq!(e.to_string(), "x: rate limited (HTTP 429) after 2 attempt(s); retry after 3s");
    }
}
