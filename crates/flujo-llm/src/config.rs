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
    /// Chat Completions (OpenAI and compatible servers: Ollama, vLLM, llama.cpp, …).
    #[serde(rename = "openai")]
    OpenAi,
    /// The OpenAI Responses API (`POST /responses`), where OpenAI's reasoning models live.
    #[serde(rename = "openai-responses")]
    OpenAiResponses,
    /// The Anthropic Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Google AI `generateContent` (Gemini API, API key).
    #[serde(rename = "gemini")]
    Gemini,
    /// Azure OpenAI: Chat Completions on deployment paths, `api-key` header or an Entra ID bearer token.
    #[serde(rename = "azure")]
    Azure,
    /// The Amazon Bedrock Converse API, SigV4-signed.
    #[serde(rename = "bedrock")]
    Bedrock,
}

/// Every kind, as `kind = "…"` names it.
pub const PROVIDER_KINDS: [&str; 6] = ["openai", "openai-responses", "anthropic", "gemini", "azure", "bedrock"];

/// Ollama's OpenAI-compatible endpoint on this machine (`ollama:MODEL` without configuration).
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434/v1";

impl ProviderKind {
    /// The public endpoint, for kinds that have a fixed one (Azure's is the resource's, Bedrock's the
    /// region's: see [`ProviderConfig::resolve`]).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi | ProviderKind::OpenAiResponses => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Azure | ProviderKind::Bedrock => None,
        }
    }

    /// The kind of a built-in provider name (`ollama` is `openai` with Ollama's defaults).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "openai" | "ollama" => Some(ProviderKind::OpenAi),
            "openai-responses" => Some(ProviderKind::OpenAiResponses),
            "anthropic" => Some(ProviderKind::Anthropic),
            "gemini" => Some(ProviderKind::Gemini),
            "azure" => Some(ProviderKind::Azure),
            "bedrock" => Some(ProviderKind::Bedrock),
            _ => None,
        }
    }

    /// The name `kind = "…"` uses.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiResponses => "openai-responses",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
            ProviderKind::Bedrock => "bedrock",
        }
    }
}

/// The built-in provider names (besides `mock`).
pub const BUILTIN_PROVIDERS: [&str; 7] =
    ["openai", "openai-responses", "anthropic", "gemini", "azure", "bedrock", "ollama"];

/// One `[providers.NAME]` section (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Required for names other than the built-in ones (`openai`, `openai-responses`, `anthropic`, `gemini`,
    /// `azure`, `bedrock`, `ollama`).
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
    /// Azure OpenAI `api-version` query parameter (default `OPENAI_API_VERSION`, then
    /// [`DEFAULT_AZURE_API_VERSION`]); `v1` or `preview` for the v1 API.
    pub api_version: Option<String>,
    /// Bedrock: the AWS region (default `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's `region`).
    pub region: Option<String>,
    /// Bedrock: the AWS profile of `~/.aws/credentials` and `~/.aws/config` (default `AWS_PROFILE`, then
    /// `default`).
    pub profile: Option<String>,
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
    /// Azure `api-version` (`v1` or `preview`: the v1 API, without deployment paths).
    pub api_version: String,
    /// Azure: `api_key` is a Microsoft Entra ID access token (from [`AZURE_AD_TOKEN_ENV`], read when no API
    /// key is configured), sent as `Authorization: Bearer` instead of the `api-key` header.
    pub entra_token: bool,
    /// Bedrock: the configured region (`None`: found from the environment and profile when called).
    pub region: Option<String>,
    /// Bedrock: the configured profile.
    pub profile: Option<String>,
}

/// The Azure OpenAI `api-version` sent unless configured (the current GA version of the data-plane API).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// Where an Azure provider without an API key reads a Microsoft Entra ID token (the variable the official
/// OpenAI SDKs read).
pub const AZURE_AD_TOKEN_ENV: &str = "AZURE_OPENAI_AD_TOKEN";

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

    /// The section a built-in provider has without one in `flujo.toml`; `None` for unknown names.
    pub fn builtin(name: &str) -> Option<ProviderConfig> {
        ProviderKind::from_name(name).map(|kind| ProviderConfig { kind: Some(kind), ..Default::default() })
    }

    /// What the file alone decides, checked without the environment: the kind, the URL scheme, the timeout,
    /// the attempts.
    pub fn check(&self, name: &str) -> Result<(), LlmError> {
        let placeholder =
            |k: &str| (k.ends_with("_BASE_URL") || k.ends_with("_ENDPOINT")).then(|| "https://x".to_owned());
        self.resolve(name, &placeholder).map(|_| ())
    }

    /// Resolves the section for provider `name`, reading the environment through `env`.
    pub fn resolve(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ResolvedProvider, LlmError> {
        let kind = self.kind.or_else(|| ProviderKind::from_name(name)).ok_or_else(|| {
            LlmError::Config(format!("[providers.{name}] needs `kind` (one of: {})", PROVIDER_KINDS.join(", ")))
        })?;
        let nonempty = |k: &str| env(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let prefix = env_prefix(name);
        // The environment names of the built-in providers: what the vendors' own SDKs read.
        let (key_env, url_env): (String, Vec<String>) = match (name, kind) {
            ("openai-responses", _) => ("OPENAI_API_KEY".into(), vec!["OPENAI_BASE_URL".into()]),
            ("gemini", _) => {
                let key = if nonempty("GEMINI_API_KEY").is_none() && nonempty("GOOGLE_API_KEY").is_some() {
                    "GOOGLE_API_KEY"
                } else {
                    "GEMINI_API_KEY"
                };
                (key.into(), vec!["GEMINI_BASE_URL".into()])
            }
            ("azure", _) => {
                ("AZURE_OPENAI_API_KEY".into(), vec!["AZURE_OPENAI_ENDPOINT".into(), "AZURE_OPENAI_BASE_URL".into()])
            }
            ("bedrock", _) => ("AWS_ACCESS_KEY_ID".into(), vec!["BEDROCK_BASE_URL".into()]),
            ("ollama", _) => ("OLLAMA_API_KEY".into(), vec!["OLLAMA_BASE_URL".into()]),
            _ => (format!("{prefix}_API_KEY"), vec![format!("{prefix}_BASE_URL")]),
        };
        let key_env = self.api_key_env.clone().unwrap_or(key_env);
        let api_key = match kind {
            // Bedrock signs with AWS credentials, read when called (see `crate::bedrock`).
            ProviderKind::Bedrock => None,
            _ => self.api_key.clone().or_else(|| nonempty(&key_env).map(ApiKey::new)),
        };
        // Azure without an API key: a Microsoft Entra ID token from the environment, if there is one.
        let (api_key, entra_token) = match (kind, api_key) {
            (ProviderKind::Azure, None) => match nonempty(AZURE_AD_TOKEN_ENV) {
                Some(token) => (Some(ApiKey::new(token)), true),
                None => (None, false),
            },
            (_, key) => (key, false),
        };
        let region = self.region.clone().filter(|r| !r.trim().is_empty());
        let base_url = match self.base_url.clone().or_else(|| url_env.iter().find_map(|k| nonempty(k))) {
            Some(url) => url,
            // Ollama's own variable is a host (`OLLAMA_HOST=0.0.0.0:11434`), with or without a scheme.
            None if name == "ollama" => match nonempty("OLLAMA_HOST") {
                Some(h) if h.starts_with("http://") || h.starts_with("https://") => format!("{h}/v1"),
                Some(h) => format!("http://{h}/v1"),
                None => OLLAMA_BASE_URL.to_owned(),
            },
            None => match (kind.default_base_url(), kind) {
                (Some(url), _) => url.to_owned(),
                (None, ProviderKind::Bedrock) => String::new(),
                (None, _) => {
                    return Err(LlmError::Config(format!(
                        "provider '{name}' needs `base_url` in [providers.{name}] (or {}), e.g. \
                         https://RESOURCE.openai.azure.com",
                        url_env.join(" or ")
                    )))
                }
            },
        };
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        if !(base_url.is_empty() || base_url.starts_with("http://") || base_url.starts_with("https://")) {
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
        let key_required = match kind {
            ProviderKind::Azure => base_url.ends_with(".openai.azure.com") || base_url.ends_with(".azure.com"),
            ProviderKind::Bedrock => false,
            _ => Some(base_url.as_str()) == kind.default_base_url(),
        };
        Ok(ResolvedProvider {
            name: name.to_owned(),
            kind,
            key_required,
            base_url,
            api_key,
            key_env,
            timeout,
            retry,
            anthropic_version: self.anthropic_version.clone().unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_owned()),
            // Azure: the section, else `OPENAI_API_VERSION` (what the official SDKs' Azure clients read).
            api_version: self
                .api_version
                .clone()
                .or_else(|| (kind == ProviderKind::Azure).then(|| nonempty("OPENAI_API_VERSION")).flatten())
                .unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_owned()),
            entra_token,
            region,
            profile: self.profile.clone().filter(|p| !p.trim().is_empty()),
        })
    }
}

impl ResolvedProvider {
    /// [`LlmError::MissingApiKey`] when this provider needs a key and has none (nothing is sent then).
    pub fn check_key(&self) -> Result<(), LlmError> {
        if self.key_required && self.api_key.is_none() {
            let env = match self.kind {
                ProviderKind::Azure => format!("{} or {AZURE_AD_TOKEN_ENV}", self.key_env),
                _ => self.key_env.clone(),
            };
            return Err(LlmError::MissingApiKey { provider: self.name.clone(), env });
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
            section.check(name)?;
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
        assert!(e.contains("[providers.local] needs `kind` (one of: openai, openai-responses"), "{e}");
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
        assert!(ProviderConfig::default().resolve("llama", &|_| None).is_err());
        // Built-in sections: Ollama's local endpoint (OLLAMA_HOST as the CLI writes it), no key needed.
        let ollama = ProviderConfig::builtin("ollama").unwrap().resolve("ollama", &|_| None).unwrap();
        assert_eq!(
            (ollama.kind, ollama.base_url.as_str(), ollama.key_required),
            (ProviderKind::OpenAi, OLLAMA_BASE_URL, false)
        );
        let host = |k: &str| (k == "OLLAMA_HOST").then(|| "gpu:11434".to_owned());
        let ollama = ProviderConfig::default().resolve("ollama", &host).unwrap();
        assert_eq!(ollama.base_url, "http://gpu:11434/v1");
        // The vendors' SDK variables.
        let env = |k: &str| match k {
            "OPENAI_API_KEY" => Some("sk-o".to_owned()),
            "GOOGLE_API_KEY" => Some("g-1".to_owned()),
            "AZURE_OPENAI_ENDPOINT" => Some("https://res.openai.azure.com/".to_owned()),
            _ => None,
        };
        let r = ProviderConfig::default().resolve("openai-responses", &env).unwrap();
        assert_eq!((r.kind, r.api_key.clone()), (ProviderKind::OpenAiResponses, Some(ApiKey::new("sk-o"))));
        let g = ProviderConfig::default().resolve("gemini", &env).unwrap();
        assert_eq!((g.key_env.as_str(), g.key_required), ("GOOGLE_API_KEY", true));
        let a = ProviderConfig::default().resolve("azure", &env).unwrap();
        assert_eq!(
            (a.base_url.as_str(), a.api_version.as_str(), a.key_required),
            ("https://res.openai.azure.com", DEFAULT_AZURE_API_VERSION, true)
        );
        assert!(!a.entra_token);
        let e = a.check_key().unwrap_err().to_string();
        assert!(e.contains("set AZURE_OPENAI_API_KEY or AZURE_OPENAI_AD_TOKEN"), "{e}");
        // No API key: the Entra ID token, sent as a bearer token; an API key wins over it.
        let with_token = |k: &str| match k {
            "AZURE_OPENAI_AD_TOKEN" => Some("eyJ-token".to_owned()),
            other => env(other),
        };
        let t = ProviderConfig::default().resolve("azure", &with_token).unwrap();
        assert_eq!((t.api_key.clone(), t.entra_token), (Some(ApiKey::new("eyJ-token")), true));
        assert!(t.check_key().is_ok() && !format!("{t:?}").contains("eyJ-token"));
        let versioned =
            |k: &str| if k == "OPENAI_API_VERSION" { Some("2025-04-01-preview".to_owned()) } else { env(k) };
        assert_eq!(ProviderConfig::default().resolve("azure", &versioned).unwrap().api_version, "2025-04-01-preview");
        let both = |k: &str| if k == "AZURE_OPENAI_API_KEY" { Some("az-key".to_owned()) } else { with_token(k) };
        let k = ProviderConfig::default().resolve("azure", &both).unwrap();
        assert_eq!((k.api_key.clone(), k.entra_token), (Some(ApiKey::new("az-key")), false));
        let e = ProviderConfig::default().resolve("azure", &|_| None).unwrap_err().to_string();
        assert!(e.contains("needs `base_url`") && e.contains("AZURE_OPENAI_ENDPOINT"), "{e}");
        // A file section leaving the endpoint to the environment is fine when the file is read.
        let file: toml::Table = "[providers.azure]\napi_version = \"2025-01-01-preview\"\n".parse().unwrap();
        assert!(LlmConfig::from_toml(&file).is_ok());
        let b = ProviderConfig::default().resolve("bedrock", &|_| None).unwrap();
        assert_eq!((b.kind, b.base_url.as_str(), b.api_key.clone()), (ProviderKind::Bedrock, "", None));
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
