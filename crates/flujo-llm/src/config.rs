//! Provider configuration: `[providers.NAME]` sections of `flujo.toml` plus the environment, resolved into a
//! [`ResolvedProvider`] (kind, base URL, key, timeout, retry policy).
//!
//! ```toml
//! [providers.openai]                 # OPENAI_API_KEY / OPENAI_BASE_URL work without this section
//! base_url = "http://localhost:11434/v1"
//! [providers.vllm]                   # another OpenAI-compatible server, used as `vllm:MODEL`
//! kind = "openai"
//! base_url = "http://gpu-box:8000/v1"
//! api_key_env = "VLLM_KEY"
//! timeout_s = 300
//! max_attempts = 5
//! ```
//!
//! Precedence: the section, then the environment (`{NAME}_API_KEY`, `{NAME}_BASE_URL`, with `NAME` upper-cased),
//! then the provider's public endpoint. A key is required only for the public endpoints; local servers
//! usually need none. Prefer `api_key_env` over a literal `api_key` in a file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::anthropic::DEFAULT_ANTHROPIC_VERSION;
use crate::error::LlmError;
use crate::http::{ApiKey, RetryPolicy};
use crate::pricing::PricingTable;

/// The wire protocol of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProviderKind {
    /// Chat Completions (OpenAI and compatible servers).
    #[serde(rename = "openai")]
    OpenAi,
    /// The Anthropic Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
}

impl ProviderKind {
    /// The public endpoint.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The kind of a built-in provider name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(ProviderKind::OpenAi),
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }
}

/// One `[providers.NAME]` section (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Required for names other than `openai` and `anthropic`.
    pub kind: Option<ProviderKind>,
    pub base_url: Option<String>,
    /// A literal key (its `Debug` is redacted); prefer `api_key_env`.
    pub api_key: Option<ApiKey>,
    /// The environment variable holding the key (default `{NAME}_API_KEY`).
    pub api_key_env: Option<String>,
    /// Request timeout in seconds (default 120); an agent's `timeout` overrides it.
    pub timeout_s: Option<f64>,
    /// Attempts per request for 429/5xx/connection failures (default 4).
    pub max_attempts: Option<u32>,
    /// `anthropic-version` header (default `2023-06-01`).
    pub anthropic_version: Option<String>,
    /// The full retry policy (from code; overrides `max_attempts`).
    #[serde(skip)]
    pub retry: Option<RetryPolicy>,
}

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A provider ready to be called.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedProvider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing `/`.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// Where the key is read from (named in [`LlmError::MissingApiKey`]).
    pub key_env: String,
    /// True for the public endpoints: calling without a key fails before any request.
    pub key_required: bool,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub anthropic_version: String,
}

fn env_prefix(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

impl ProviderConfig {
    /// A config pointing at `base_url` with `api_key` (tests, programmatic setup).
    pub fn new(kind: ProviderKind, base_url: impl Into<String>, api_key: Option<&str>) -> Self {
        ProviderConfig {
            kind: Some(kind),
            base_url: Some(base_url.into()),
            api_key: api_key.map(ApiKey::new),
            ..Default::default()
        }
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Resolves the section for provider `name`, reading the environment through `env`.
    pub fn resolve(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ResolvedProvider, LlmError> {
        let kind = self.kind.or_else(|| ProviderKind::from_name(name)).ok_or_else(|| {
            LlmError::Config(format!("[providers.{name}] needs `kind = \"openai\"` or `kind = \"anthropic\"`"))
        })?;
        let prefix = env_prefix(name);
        let key_env = self.api_key_env.clone().unwrap_or_else(|| format!("{prefix}_API_KEY"));
        let api_key = self
            .api_key
            .clone()
            .or_else(|| env(&key_env).filter(|k| !k.trim().is_empty()).map(|k| ApiKey::new(k.trim())));
        let base_url = self
            .base_url
            .clone()
            .or_else(|| env(&format!("{prefix}_BASE_URL")).filter(|u| !u.trim().is_empty()))
            .unwrap_or_else(|| kind.default_base_url().to_owned());
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(LlmError::Config(format!("providers.{name}.base_url must start with http:// or https://")));
        }
        let timeout = match self.timeout_s {
            None => DEFAULT_TIMEOUT,
            Some(s) => flujo_core::limits::duration_from_secs(s)
                .map_err(|e| LlmError::Config(format!("providers.{name}.timeout_s {e}")))?,
        };
        let mut retry = self.retry.unwrap_or_default();
        if let Some(n) = self.max_attempts {
            if n == 0 {
                return Err(LlmError::Config(format!("providers.{name}.max_attempts must be at least 1")));
            }
            if self.retry.is_none() {
                retry.max_attempts = n;
            }
        }
        Ok(ResolvedProvider {
            name: name.to_owned(),
            kind,
            key_required: base_url == kind.default_base_url(),
            base_url,
            api_key,
            key_env,
            timeout,
            retry,
            anthropic_version: self.anthropic_version.clone().unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_owned()),
        })
    }
}

impl ResolvedProvider {
    /// [`LlmError::MissingApiKey`] when this provider needs a key and has none (nothing is sent then).
    pub fn check_key(&self) -> Result<(), LlmError> {
        if self.key_required && self.api_key.is_none() {
            return Err(LlmError::MissingApiKey { provider: self.name.clone(), env: self.key_env.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
impl ResolvedProvider {
    pub(crate) fn for_tests(name: &str) -> Self {
        ProviderConfig::default().resolve(name, &|_| None).unwrap()
    }
}

/// Everything the model layer reads from `flujo.toml`: pricing and providers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmConfig {
    pub pricing: PricingTable,
    pub providers: BTreeMap<String, ProviderConfig>,
}

impl LlmConfig {
    /// Reads `[cost]` and `[providers.*]` from a parsed `flujo.toml` (other sections are not this crate's).
    pub fn from_toml(file: &toml::Table) -> Result<Self, LlmError> {
        let pricing = PricingTable::from_toml(file)?;
        let providers = match file.get("providers") {
            None => BTreeMap::new(),
            Some(v) => v
                .clone()
                .try_into::<BTreeMap<String, ProviderConfig>>()
                .map_err(|e| LlmError::Config(format!("invalid [providers]: {}", e.message())))?,
        };
        // What the file alone decides (kind, URL scheme, timeout, attempts) is checked now, not when a model
        // of the provider is first resolved.
        for (name, section) in &providers {
            section.resolve(name, &|_| None)?;
        }
        Ok(LlmConfig { pricing, providers })
    }

    pub fn with_pricing(mut self, pricing: PricingTable) -> Self {
        self.pricing = pricing;
        self
    }

    pub fn with_provider(mut self, name: impl Into<String>, config: ProviderConfig) -> Self {
        self.providers.insert(name.into(), config);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_sections_are_checked_when_read() {
        let file: toml::Table = "[providers.local]\nbase_url = \"http://127.0.0.1:9/v1\"\n".parse().unwrap();
        let e = LlmConfig::from_toml(&file).unwrap_err().to_string();
        assert!(e.contains("[providers.local] needs `kind"), "{e}");
        let file: toml::Table = "[providers.local]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n".parse().unwrap();
        assert!(LlmConfig::from_toml(&file).is_err());
    }

    #[test]
    fn env_and_defaults() {
        let env = |k: &str| match k {
            "OPENAI_API_KEY" => Some("sk-env".to_owned()),
            "OPENAI_BASE_URL" => Some("http://localhost:11434/v1/".to_owned()),
            _ => None,
        };
        let p = ProviderConfig::default().resolve("openai", &env).unwrap();
        assert_eq!(p.base_url, "http://localhost:11434/v1");
        assert_eq!(p.api_key, Some(ApiKey::new("sk-env")));
        assert!(!p.key_required);
        assert!(!format!("{p:?}").contains("sk-env"));
        let a = ProviderConfig::default().resolve("anthropic", &|_| None).unwrap();
        assert_eq!(a.base_url, "https://api.anthropic.com");
        assert!(a.key_required);
        assert_eq!(a.key_env, "ANTHROPIC_API_KEY");
        assert!(ProviderConfig::default().resolve("ollama", &|_| None).is_err());
    }

    #[test]
    fn parses_providers_section() {
        let file: toml::Table = r#"
            [providers.vllm]
            kind = "openai"
            base_url = "http://gpu:8000/v1"
            api_key_env = "VLLM_KEY"
            max_attempts = 2
            [cost]
            strict = true
        "#
        .parse()
        .unwrap();
        let c = LlmConfig::from_toml(&file).unwrap();
        assert!(c.pricing.is_strict());
        let p = c.providers["vllm"].resolve("vllm", &|k| (k == "VLLM_KEY").then(|| "k1".to_owned())).unwrap();
        assert_eq!((p.kind, p.retry.max_attempts), (ProviderKind::OpenAi, 2));
        assert_eq!(p.api_key, Some(ApiKey::new("k1")));
        let bad: toml::Table = "[providers.openai]\nbase_ur = \"x\"\n".parse().unwrap();
        assert!(LlmConfig::from_toml(&bad).unwrap_err().to_string().contains("base_ur"));
    }
}
