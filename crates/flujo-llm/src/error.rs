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
    /// HTTP 5xx on every attempt (or a `Retry-After` longer than the policy waits).
    #[error("{provider}: server error (HTTP {status}) after {attempts} attempt(s): {message}{}",
        retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    Server { provider: String, status: u16, attempts: u32, message: String, retry_after: Option<Duration> },
    /// The reply could not be understood (not JSON, or missing the fields of the provider's shape).
    #[error("{provider}: malformed reply: {message}")]
    Malformed { provider: String, message: String },
    /// The request did not finish within its timeout.
    #[error("{provider}: request timed out after {:.1}s", timeout.as_secs_f64())]
    Timeout { provider: String, timeout: Duration },
    /// The connection failed (refused, reset, DNS, TLS).
    #[error("{provider}: network error: {message}")]
    Network { provider: String, message: String },
    /// Structured output still violated the schema after every re-ask. `attempts` counts the requests sent;
    /// `usage` is what they consumed.
    #[error("output does not match the output schema after {attempts} attempt(s): {violation}")]
    SchemaViolation { attempts: u32, violation: String, usage: TokenUsage },
    /// The model refused to answer (OpenAI `refusal`, Anthropic `stop_reason: refusal`).
    #[error("{provider}: the model refused to answer: {message}")]
    Refused { provider: String, message: String, usage: TokenUsage },
    /// A structured answer was cut off at the completion bound (`finish_reason: length`, Anthropic
    /// `stop_reason: max_tokens`): the JSON is incomplete.
    #[error(
        "{provider}: the structured answer was cut off at max_tokens ({max_tokens}); raise `model_settings.max_tokens`"
    )]
    Truncated { provider: String, max_tokens: u64, usage: TokenUsage },
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

    /// True when a step-level retry (the step's `max_retries`) may try the call again: only failures no
    /// level below already retried. Rate limits, server and connection errors were retried by the HTTP client
    /// (one retry budget per call, `Retry-After` honoured there), schema violations were re-asked by the agent;
    /// retrying them again would multiply requests. Timeouts and malformed replies were not retried below.
    pub fn retry_at_step_level(&self) -> bool {
        matches!(self, LlmError::Timeout { .. } | LlmError::Malformed { .. })
    }

    /// True when the provider failed rather than the answer: unreachable, 5xx or 429 after the retries, a
    /// timeout, a refused or missing key, a refused request (an unknown model, a parameter this provider does
    /// not take), an unreadable reply. The next model of a fallback chain is tried on these; not on a
    /// schema violation, a refusal, a cut-off answer, pricing or configuration errors.
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            LlmError::Auth { .. }
                | LlmError::MissingApiKey { .. }
                | LlmError::RateLimited { .. }
                | LlmError::BadRequest { .. }
                | LlmError::Server { .. }
                | LlmError::Malformed { .. }
                | LlmError::Timeout { .. }
                | LlmError::Network { .. }
        )
    }

    /// The pause a provider asked for (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } | LlmError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
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
            LlmError::Refused { .. } => "refusal",
            LlmError::Truncated { .. } => "truncated",
            LlmError::Pricing(_) => "pricing",
            LlmError::Config(_) => "config",
        }
    }

    /// Tokens the failed call consumed anyway (billed re-asks of structured output), if any.
    pub fn usage(&self) -> TokenUsage {
        match self {
            LlmError::SchemaViolation { usage, .. }
            | LlmError::Refused { usage, .. }
            | LlmError::Truncated { usage, .. } => *usage,
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

/// Without usage (see [`crate::AgentFailure`] for the accounted form); retryable per
/// [`LlmError::retry_at_step_level`], with the provider's `Retry-After`.
impl From<LlmError> for SkillError {
    fn from(e: LlmError) -> Self {
        let mut out = SkillError::new(e.to_string());
        out.retryable = e.retry_at_step_level();
        out.retry_after = e.retry_after();
        out.provider_failure = e.is_provider_failure();
        out.metadata.insert("error_type".into(), e.kind().into());
        out
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
        let server =
            LlmError::Server { provider: p(), status: 502, attempts: 3, message: String::new(), retry_after: None };
        assert!(server.is_retryable());
        // The HTTP client already retried it: a step-level retry would multiply the requests.
        assert!(!SkillError::from(server).retryable);
        let timeout = LlmError::Timeout { provider: p(), timeout: Duration::from_secs(1) };
        assert!(SkillError::from(timeout).retryable);
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
