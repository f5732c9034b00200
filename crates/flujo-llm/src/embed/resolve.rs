//! Embedder ids to embedders ([`crate::LlmRegistry::embedder`]): `mock:hash[:DIM]`, `openai:MODEL`, any
//! `[providers.NAME]` of `kind = "openai"`, and `ollama:MODEL`; everything else is a
//! [`ResolveError::UnknownModel`] listing the usable providers.

use std::collections::BTreeSet;
use std::sync::Arc;

use flujo_core::{Embedder, ResolveError};
use serde::Deserialize;
use serde_json::Value;

use super::hash::{HashEmbedder, HASH_DIMENSION, MIN_HASH_DIMENSION};
use super::openai::OpenAiEmbedder;
use crate::config::{LlmConfig, ProviderConfig, ProviderKind};
use crate::error::LlmError;
use crate::http::HttpClient;
use crate::pricing::MOCK_PROVIDER;
use crate::registry::{closest, parse_model_id};

pub use crate::config::OLLAMA_BASE_URL;

/// How an embedder is set up (every field optional). Deserializes from a table of exactly these keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EmbedderSettings {
    /// The embeddings' dimension: sent as `dimensions` (models that can shorten their embeddings, like
    /// OpenAI's `text-embedding-3-*`), and checked in every reply; for `mock:hash`, its dimension.
    pub dimensions: Option<usize>,
    /// Texts per request (default [`super::DEFAULT_BATCH_SIZE`]).
    pub batch_size: Option<usize>,
    /// Characters per request (default [`super::DEFAULT_MAX_BATCH_CHARS`]; a longer text goes alone).
    pub max_batch_chars: Option<usize>,
}

impl EmbedderSettings {
    /// No settings: the model's own dimension, default batches.
    pub fn new() -> Self {
        EmbedderSettings::default()
    }

    /// Asks for embeddings of `dimensions`.
    pub fn with_dimensions(mut self, dimensions: usize) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// At most `batch_size` texts per request.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// At most `max_batch_chars` characters per request.
    pub fn with_max_batch_chars(mut self, max_batch_chars: usize) -> Self {
        self.max_batch_chars = Some(max_batch_chars);
        self
    }

    /// The settings in a JSON object (`null`: none), e.g. `{"dimensions": 512, "batch_size": 64}`.
    pub fn from_value(value: &Value) -> Result<Self, LlmError> {
        let settings: EmbedderSettings = match value {
            Value::Null => EmbedderSettings::default(),
            v => serde_json::from_value(v.clone())
                .map_err(|e| LlmError::Config(format!("invalid embedder settings: {e}")))?,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Every number set is at least 1.
    pub(crate) fn validate(&self) -> Result<(), LlmError> {
        for (name, value) in [
            ("dimensions", self.dimensions),
            ("batch_size", self.batch_size),
            ("max_batch_chars", self.max_batch_chars),
        ] {
            if value == Some(0) {
                return Err(LlmError::Config(format!("embedder setting `{name}` must be at least 1")));
            }
        }
        Ok(())
    }
}

type Env<'a> = &'a (dyn Fn(&str) -> Option<String> + Send + Sync);

/// The embedder `id` (see [`crate::embed`]).
pub(crate) fn resolve_embedder(
    id: &str,
    settings: &EmbedderSettings,
    config: &LlmConfig,
    http: &HttpClient,
    env: Env<'_>,
) -> Result<Arc<dyn Embedder>, ResolveError> {
    match parse_model_id(id) {
        Some((MOCK_PROVIDER, model)) => mock_embedder(id, model, settings).map(|e| Arc::new(e) as Arc<dyn Embedder>),
        _ => resolve_openai_embedder(id, settings, config, http, env).map(|e| Arc::new(e) as Arc<dyn Embedder>),
    }
}

/// `mock:hash` (dimension `settings.dimensions` or 256) and `mock:hash:DIM`.
fn mock_embedder(id: &str, model: &str, settings: &EmbedderSettings) -> Result<HashEmbedder, ResolveError> {
    let bad = |message: String| ResolveError::BadParams { id: id.to_owned(), message };
    settings.validate().map_err(|e| bad(e.to_string()))?;
    let dimension = match model.strip_prefix("hash") {
        Some("") => settings.dimensions.unwrap_or(HASH_DIMENSION),
        Some(rest) if rest.starts_with(':') => {
            let dim: usize = rest[1..]
                .parse()
                .map_err(|_| bad(format!("`{}` is not a dimension (mock:hash:DIM, e.g. mock:hash:384)", &rest[1..])))?;
            if let Some(asked) = settings.dimensions.filter(|d| *d != dim) {
                return Err(bad(format!("the id says dimension {dim} and `dimensions` says {asked}")));
            }
            dim
        }
        _ => {
            return Err(ResolveError::UnknownModel {
                id: id.to_owned(),
                message: "no such mock embedder (known: mock:hash, mock:hash:DIM)".into(),
                suggestion: Some("mock:hash".into()),
            })
        }
    };
    if dimension < MIN_HASH_DIMENSION {
        return Err(bad(format!("the dimension of mock:hash must be at least {MIN_HASH_DIMENSION}")));
    }
    Ok(HashEmbedder::new(dimension))
}

/// The OpenAI-compatible embedder `id` (`openai:`, `ollama:` or a configured provider of kind `openai`).
pub(crate) fn resolve_openai_embedder(
    id: &str,
    settings: &EmbedderSettings,
    config: &LlmConfig,
    http: &HttpClient,
    env: Env<'_>,
) -> Result<OpenAiEmbedder, ResolveError> {
    let Some((provider, model)) = parse_model_id(id) else {
        let suggestion = (!id.is_empty() && !id.contains(':')).then(|| format!("openai:{id}"));
        let message =
            "an embedder is named `provider:model` (e.g. `openai:text-embedding-3-small`, `mock:hash`)".into();
        return Err(ResolveError::UnknownModel { id: id.to_owned(), message, suggestion });
    };
    let section = match config.providers.get(provider) {
        Some(s) => s.clone(),
        None if provider == "openai" => ProviderConfig::default(),
        None if provider == "ollama" => ProviderConfig::default(),
        None => return Err(unknown(id, provider, model, config)),
    };
    if section.kind.or_else(|| ProviderKind::from_name(provider)) == Some(ProviderKind::Anthropic) {
        return Err(unknown(id, provider, model, config));
    }
    let bad = |e: LlmError| ResolveError::BadParams { id: id.to_owned(), message: e.to_string() };
    let resolved = section.resolve(provider, env).map_err(bad)?;
    let pricing = config.pricing.price(provider, model);
    OpenAiEmbedder::new(Arc::new(resolved), model, http.clone(), pricing, settings).map_err(bad)
}

/// The providers with an embeddings API here, as id patterns.
fn usable(config: &LlmConfig) -> Vec<String> {
    let mut names: BTreeSet<String> = ["openai", "ollama"].into_iter().map(str::to_owned).collect();
    for (name, section) in &config.providers {
        if section.kind.or_else(|| ProviderKind::from_name(name)) == Some(ProviderKind::OpenAi) {
            names.insert(name.clone());
        }
    }
    let mut out = vec!["mock:hash".to_owned(), "mock:hash:DIM".to_owned()];
    out.extend(names.into_iter().map(|n| format!("{n}:MODEL")));
    out
}

fn unknown(id: &str, provider: &str, model: &str, config: &LlmConfig) -> ResolveError {
    let usable = usable(config);
    let anthropic =
        provider == "anthropic" || config.providers.get(provider).and_then(|s| s.kind) == Some(ProviderKind::Anthropic);
    let (why, suggestion) = if anthropic {
        (format!("provider '{provider}' speaks the Anthropic Messages API, which has no embeddings"), None)
    } else {
        let candidates: Vec<String> =
            usable.iter().filter_map(|u| u.strip_suffix(":MODEL")).map(|p| format!("{p}:{model}")).collect();
        (format!("provider '{provider}' is not known"), closest(id, &candidates))
    };
    let message = format!(
        "{why} (embedders: {}); another OpenAI-compatible server is added as [providers.NAME] with \
         `kind = \"openai\"` and `base_url` in flujo.toml",
        usable.join(", ")
    );
    ResolveError::UnknownModel { id: id.to_owned(), message, suggestion }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{Price, PricingTable};
    use crate::LlmRegistry;
    use flujo_core::Interrupt;
    use serde_json::json;

    fn registry(config: LlmConfig, env: &'static [(&'static str, &'static str)]) -> LlmRegistry {
        LlmRegistry::with_env(config, move |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())).unwrap()
    }

    #[test]
    fn mock_hash_and_its_dimension() {
        let r = registry(LlmConfig::default(), &[]);
        let none = EmbedderSettings::new();
        let e = r.embedder("mock:hash", &none).unwrap();
        assert_eq!((e.name(), e.dimension()), ("mock:hash", Some(HASH_DIMENSION)));
        let e = r.embedder("mock:hash:384", &none).unwrap();
        assert_eq!((e.name(), e.dimension()), ("mock:hash:384", Some(384)));
        let e = r.embedder("mock:hash", &EmbedderSettings::new().with_dimensions(32)).unwrap();
        assert_eq!(e.dimension(), Some(32));
        assert!(r.embedder("mock:hash:384", &EmbedderSettings::new().with_dimensions(384)).is_ok());
        for bad in ["mock:hash:abc", "mock:hash:4", "mock:hash:"] {
            assert!(matches!(r.embedder(bad, &none), Err(ResolveError::BadParams { .. })), "{bad}");
        }
        let conflict = r.embedder("mock:hash:384", &EmbedderSettings::new().with_dimensions(128)).err().unwrap();
        assert!(conflict.to_string().contains("384"), "{conflict}");
        let e = r.embedder("mock:echo", &none).err().unwrap();
        assert!(matches!(&e, ResolveError::UnknownModel { suggestion: Some(s), .. } if s == "mock:hash"), "{e}");
        assert!(r.embedder("mock:hash", &EmbedderSettings::new().with_batch_size(0)).is_err());
    }

    #[test]
    fn providers_without_embeddings_list_the_usable_ones() {
        let config = LlmConfig::default()
            .with_provider("vllm", ProviderConfig::new(ProviderKind::OpenAi, "http://gpu:8000/v1", None))
            .with_provider("claude2", ProviderConfig::new(ProviderKind::Anthropic, "http://c/", None));
        let r = registry(config, &[]);
        let none = EmbedderSettings::new();
        for id in ["anthropic:claude-x", "claude2:m"] {
            let e = r.embedder(id, &none).err().unwrap().to_string();
            assert!(e.contains("Anthropic Messages API, which has no embeddings"), "{e}");
            assert!(e.contains("mock:hash, mock:hash:DIM, ollama:MODEL, openai:MODEL, vllm:MODEL"), "{e}");
        }
        let e = r.embedder("opnai:text-embedding-3-small", &none).err().unwrap();
        assert!(
            matches!(&e, ResolveError::UnknownModel { suggestion: Some(s), .. } if s == "openai:text-embedding-3-small"),
            "{e}"
        );
        let e = r.embedder("text-embedding-3-small", &none).err().unwrap().to_string();
        assert!(e.contains("did you mean 'openai:text-embedding-3-small'"), "{e}");
        assert_eq!(r.embedder("vllm:e5", &none).unwrap().name(), "vllm:e5");
    }

    #[test]
    fn providers_come_from_the_chat_configuration() {
        let r = registry(LlmConfig::default(), &[("OLLAMA_BASE_URL", "http://box:11434/v1")]);
        let none = EmbedderSettings::new();
        assert_eq!(r.openai_embedder("ollama:nomic-embed-text", &none).unwrap().server(), "http://box:11434/v1");
        let r = registry(LlmConfig::default(), &[]);
        let ollama = r.openai_embedder("ollama:nomic-embed-text", &none).unwrap();
        assert_eq!(ollama.server(), OLLAMA_BASE_URL);
        // A local server needs no key.
        assert_eq!(ollama.preflight(), Ok(()));
        // The public endpoint does: the same variable as the chat models, named before any request.
        let openai = r.openai_embedder("openai:text-embedding-3-small", &none).unwrap();
        assert_eq!(openai.dimension(), Some(1536));
        match openai.preflight() {
            Err(Interrupt::MissingApiKey { model, message }) => {
                assert_eq!(model, "openai:text-embedding-3-small");
                assert!(message.contains("OPENAI_API_KEY"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let r = registry(LlmConfig::default(), &[("OPENAI_API_KEY", "sk-env-key-123")]);
        let openai = r.openai_embedder("openai:text-embedding-3-small", &none).unwrap();
        assert_eq!(openai.preflight(), Ok(()));
        assert!(!format!("{openai:?}").contains("sk-env-key-123"));
    }

    #[test]
    fn strict_pricing_refuses_unpriced_models_in_preflight() {
        let pricing =
            PricingTable::new().strict(true).with_price("openai", "text-embedding-3-small", Price::new(0.00002, 0.0));
        let r = registry(LlmConfig::default().with_pricing(pricing), &[("OPENAI_API_KEY", "sk-x-1234")]);
        let none = EmbedderSettings::new();
        assert_eq!(r.embedder("openai:text-embedding-3-small", &none).unwrap().preflight(), Ok(()));
        let unpriced = r.embedder("openai:text-embedding-3-large", &none).unwrap();
        assert_eq!(
            unpriced.preflight(),
            Err(Interrupt::PricingNotConfigured { provider: "openai".into(), model: "text-embedding-3-large".into() })
        );
        // Free of charge, and never refused: mock:hash.
        assert_eq!(r.embedder("mock:hash", &none).unwrap().preflight(), Ok(()));
        assert_eq!(unpriced.estimate(&["abcd".to_owned()]).map(|u| u.cost_usd), Some(0.0));
    }

    #[test]
    fn settings_from_json() {
        let s = EmbedderSettings::from_value(&json!({"dimensions": 512, "batch_size": 16})).unwrap();
        assert_eq!(s, EmbedderSettings::new().with_dimensions(512).with_batch_size(16));
        assert_eq!(EmbedderSettings::from_value(&Value::Null).unwrap(), EmbedderSettings::new());
        let e = EmbedderSettings::from_value(&json!({"dimension": 5})).unwrap_err().to_string();
        assert!(e.contains("dimension"), "{e}");
        assert!(EmbedderSettings::from_value(&json!({"batch_size": 0})).is_err());
    }
}
