//! [`LlmRegistry`]: resolves `provider:model` ids to agents, implementing [`flujo_core::ModelRegistry`] for the
//! runtime builder. Providers are `openai`, `anthropic`, `mock` and every `[providers.NAME]` of the
//! configuration; all agents share one pooled HTTP client. An unknown provider or mock is a
//! [`ResolveError::UnknownModel`] naming the known providers, with the closest valid id as suggestion.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use flujo_core::{ModelRegistry, ResolveError, Skill, Value};

use crate::agent::{AgentSpec, LlmAgent};
use crate::anthropic::AnthropicModel;
use crate::chat::ChatModel;
use crate::config::{LlmConfig, ProviderConfig, ProviderKind};
use crate::error::LlmError;
use crate::http::HttpClient;
use crate::mock::{MockKind, MockModel, MOCK_MODELS};
use crate::openai::OpenAiModel;
use crate::pricing::{PricingError, PricingTable, MOCK_PROVIDER};

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Resolves model ids; cheap to share (`Arc`).
pub struct LlmRegistry {
    config: LlmConfig,
    http: HttpClient,
    env: Arc<EnvFn>,
}

impl fmt::Debug for LlmRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmRegistry").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Splits `provider:model`.
pub fn parse_model_id(id: &str) -> Option<(&str, &str)> {
    let (provider, model) = id.split_once(':')?;
    (!provider.is_empty() && !model.is_empty()).then_some((provider, model))
}

impl LlmRegistry {
    /// A registry reading keys and base URLs from the process environment.
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        LlmRegistry::with_env(config, |name| std::env::var(name).ok())
    }

    /// A registry reading the "environment" through `env` (tests, embedding).
    pub fn with_env(
        config: LlmConfig,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self, LlmError> {
        Ok(LlmRegistry { config, http: HttpClient::new()?, env: Arc::new(env) })
    }

    /// Only `mock:` models and configured providers (no environment), lenient pricing.
    pub fn offline() -> Result<Self, LlmError> {
        LlmRegistry::with_env(LlmConfig::default(), |_| None)
    }

    pub fn pricing(&self) -> &PricingTable {
        &self.config.pricing
    }

    /// Provider names this registry knows.
    pub fn providers(&self) -> Vec<String> {
        let mut names: BTreeSet<String> =
            crate::config::BUILTIN_PROVIDERS.into_iter().chain([MOCK_PROVIDER]).map(str::to_owned).collect();
        names.extend(self.config.providers.keys().cloned());
        names.into_iter().collect()
    }

    /// `Err(NotConfigured)` when pricing is strict and `model_id` has no price (checked without resolving the
    /// model, so a CLI can check a whole pipeline's models before running it; for a fallback chain, check each).
    pub fn check_pricing(&self, model_id: &str) -> Result<(), PricingError> {
        match parse_model_id(model_id) {
            Some((provider, model)) => self.config.pricing.check(provider, model),
            None => Ok(()),
        }
    }

    fn unknown(&self, id: &str, provider: &str, model: &str) -> ResolveError {
        let (candidates, message): (Vec<String>, String) = if provider == MOCK_PROVIDER {
            let c: Vec<String> = MOCK_MODELS.iter().map(|m| format!("mock:{m}")).collect();
            let message = format!("no such mock model (known: {})", c.join(", "));
            (c, message)
        } else {
            let known = self.providers();
            let message = format!(
                "provider '{provider}' is not known (known: {}); another compatible server is added as \
                 [providers.{provider}] with `kind` and `base_url` in flujo.toml",
                known.join(", ")
            );
            (known.into_iter().filter(|p| p != MOCK_PROVIDER).map(|p| format!("{p}:{model}")).collect(), message)
        };
        ResolveError::UnknownModel { id: id.to_owned(), message, suggestion: closest(id, &candidates) }
    }

    /// The chat model of `model_id` (for agentic loops and direct use).
    pub fn chat_model(&self, model_id: &str) -> Result<Arc<dyn ChatModel>, ResolveError> {
        let Some((provider, model)) = parse_model_id(model_id) else {
            // Most often the provider prefix is missing.
            let provider = if model_id.starts_with("claude") { "anthropic" } else { "openai" };
            let suggestion =
                (!model_id.is_empty() && !model_id.contains(':')).then(|| format!("{provider}:{model_id}"));
            let message =
                "a model is named `provider:model` (e.g. `openai:gpt-4o`, `anthropic:claude-sonnet-4-5`)".into();
            return Err(ResolveError::UnknownModel { id: model_id.to_owned(), message, suggestion });
        };
        if provider == MOCK_PROVIDER {
            return MockKind::from_model(model)
                .map(|k| Arc::new(MockModel::new(k)) as Arc<dyn ChatModel>)
                .ok_or_else(|| self.unknown(model_id, provider, model));
        }
        let section = match self.config.providers.get(provider) {
            Some(s) => s.clone(),
            None => match ProviderConfig::builtin(provider) {
                Some(s) => s,
                None => return Err(self.unknown(model_id, provider, model)),
            },
        };
        let resolved = section
            .resolve(provider, self.env.as_ref())
            .map_err(|e| ResolveError::BadParams { id: model_id.to_owned(), message: e.to_string() })?;
        let resolved = Arc::new(resolved);
        Ok(match resolved.kind {
            ProviderKind::OpenAi | ProviderKind::Azure => {
                Arc::new(OpenAiModel::new(resolved, model, self.http.clone()))
            }
            ProviderKind::OpenAiResponses => {
                Arc::new(crate::responses::ResponsesModel::new(resolved, model, self.http.clone()))
            }
            ProviderKind::Anthropic => Arc::new(AnthropicModel::new(resolved, model, self.http.clone())),
            ProviderKind::Gemini => Arc::new(crate::gemini::GeminiModel::new(resolved, model, self.http.clone())),
            #[cfg(feature = "bedrock")]
            ProviderKind::Bedrock => {
                Arc::new(crate::bedrock::BedrockModel::with_env(resolved, model, self.http.clone(), self.env.as_ref()))
            }
            #[cfg(not(feature = "bedrock"))]
            ProviderKind::Bedrock => {
                return Err(ResolveError::BadParams {
                    id: model_id.to_owned(),
                    message: "Amazon Bedrock support is not built in (cargo feature `bedrock` of flujo-llm)".into(),
                })
            }
        })
    }

    /// The agent for `model_id` with `settings` (the agent declaration), typed. A declaration whose `model`
    /// is a list (`[openai:gpt-4o, anthropic:claude-sonnet-4-5]`) is a fallback chain: every model is
    /// resolved now (an unknown one is an error here, not when the first fails), each bound to the same
    /// settings and its own price.
    pub fn resolve_agent(&self, model_id: &str, settings: &Value) -> Result<Arc<LlmAgent>, ResolveError> {
        let bad = |e: LlmError| ResolveError::BadParams { id: model_id.to_owned(), message: e.to_string() };
        let spec = AgentSpec::from_settings(model_id, settings).map_err(bad)?;
        let mut fallbacks = Vec::with_capacity(spec.fallback_models.len());
        for id in &spec.fallback_models {
            let model = self.chat_model(id)?;
            let pricing = self.config.pricing.price(model.provider(), model.model());
            let own = AgentSpec { model: id.clone(), fallback_models: Vec::new(), ..spec.clone() };
            let agent = LlmAgent::new(own, model, pricing)
                .map_err(|e| ResolveError::BadParams { id: id.clone(), message: e.to_string() })?;
            fallbacks.push(Arc::new(agent));
        }
        let model = self.chat_model(&spec.model)?;
        let pricing = self.config.pricing.price(model.provider(), model.model());
        LlmAgent::new(spec, model, pricing).map(|a| Arc::new(a.with_fallbacks(fallbacks))).map_err(bad)
    }
}

impl LlmRegistry {
    /// The embedder `id` with `settings`: `mock:hash`, `mock:hash:DIM`, `openai:MODEL`, `ollama:MODEL` or
    /// `NAME:MODEL` of a `[providers.NAME]` with `kind = "openai"`, configured and priced like the chat models
    /// of the same provider (see [`crate::embed`]). A provider without an embeddings API (Anthropic) or an
    /// unknown one is [`ResolveError::UnknownModel`] listing the usable ones; invalid settings or provider
    /// configuration is [`ResolveError::BadParams`]. Like agents, resolution needs no key: a missing one is
    /// reported by [`flujo_core::Embedder::preflight`].
    pub fn embedder(
        &self,
        id: &str,
        settings: &crate::embed::EmbedderSettings,
    ) -> Result<Arc<dyn flujo_core::Embedder>, ResolveError> {
        crate::embed::resolve_embedder(id, settings, &self.config, &self.http, self.env.as_ref())
    }

    /// [`LlmRegistry::embedder`] for an OpenAI-compatible embedder (not `mock:`), typed.
    pub fn openai_embedder(
        &self,
        id: &str,
        settings: &crate::embed::EmbedderSettings,
    ) -> Result<crate::embed::OpenAiEmbedder, ResolveError> {
        crate::embed::resolve_openai_embedder(id, settings, &self.config, &self.http, self.env.as_ref())
    }
}

impl ModelRegistry for LlmRegistry {
    fn resolve(&self, model: &str, settings: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        self.resolve_agent(model, settings).map(|a| a as Arc<dyn Skill>)
    }

    fn resolve_turn(&self, model: &str, settings: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        self.resolve_agent(model, settings).map(|a| Arc::new(crate::turn::TurnSkill::new(a)) as Arc<dyn Skill>)
    }
}

/// The candidate closest to `word` by edit distance, if reasonably close.
pub(crate) fn closest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 2).max(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Price;
    use serde_json::json;

    fn registry() -> LlmRegistry {
        LlmRegistry::offline().unwrap()
    }

    #[test]
    fn unknown_providers_get_suggestions() {
        let r = registry();
        let err = |id: &str| match r.resolve(id, &Value::Null) {
            Err(ResolveError::UnknownModel { suggestion, .. }) => suggestion,
            other => panic!("{id}: {:?}", other.map(|_| ())),
        };
        assert_eq!(err("opnai:gpt-4o").as_deref(), Some("openai:gpt-4o"));
        assert_eq!(err("antropic:claude-x").as_deref(), Some("anthropic:claude-x"));
        assert_eq!(err("mock:jsno").as_deref(), Some("mock:json"));
        assert_eq!(err("gpt-4o").as_deref(), Some("openai:gpt-4o"));
        assert_eq!(err("claude-sonnet-4").as_deref(), Some("anthropic:claude-sonnet-4"));
        assert_eq!(err("zzzzzz:q"), None);
        let msg = r.resolve("mock:ech", &Value::Null).err().unwrap().to_string();
        assert!(msg.contains("did you mean 'mock:echo'"), "{msg}");
        let msg = r.resolve("gemni:pro", &Value::Null).err().unwrap().to_string();
        assert!(msg.starts_with("unknown model 'gemni:pro': provider 'gemni' is not known"), "{msg}");
        assert!(msg.contains("[providers.gemni]") && !msg.contains("skill"), "{msg}");
        assert!(msg.contains("did you mean 'gemini:pro'"), "{msg}");
    }

    #[test]
    fn resolves_builtin_and_configured_providers() {
        let config = LlmConfig::default()
            .with_provider("local", ProviderConfig::new(ProviderKind::OpenAi, "http://127.0.0.1:9/v1", None))
            .with_pricing(PricingTable::new().strict(true).with_price("local", "*", Price::FREE));
        let r = LlmRegistry::with_env(config, |_| None).unwrap();
        assert!(r.resolve("mock:echo", &Value::Null).is_ok());
        assert!(r.resolve("local:llama3", &json!({"output_schema": {"type": "object"}})).is_ok());
        // Resolution succeeds without a key: the call fails with MissingApiKey (replay never needs one).
        let agent = r.resolve_agent("openai:gpt-4o", &Value::Null).unwrap();
        assert!(matches!(agent.check_pricing(), Err(PricingError::NotConfigured { .. })));
        assert!(r.check_pricing("local:anything").is_ok());
        assert!(r.check_pricing("openai:gpt-4o").is_err());
        assert!(r.check_pricing("mock:echo").is_ok());
        let bad = r.resolve("local:x", &json!({"output_schema": {"type": 5}})).err().unwrap();
        assert!(matches!(bad, ResolveError::BadParams { .. }), "{bad}");
        assert!(r.providers().contains(&"local".to_owned()));
    }
}
