//! [`OpenAiEmbedder`]: the embeddings API (`POST {base_url}/embeddings`) that OpenAI and every compatible
//! server speak, over the chat providers' request path ([`crate::http`]: the key as a bearer header, the
//! provider's timeout and retry policy, typed [`LlmError`]s scrubbed of the key).
//!
//! Request `{model, input: [texts], encoding_format: "float", dimensions?}`; reply `{data: [{index,
//! embedding}], usage: {prompt_tokens, total_tokens}}`, put in order by `index`. A reply that is not one finite
//! vector per text, all of one dimension (the asked one, and the same as earlier replies), is a
//! non-retryable [`LlmError::Malformed`] naming the server.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use flujo_core::{Embedder, Embeddings, Interrupt, SkillError, TokenUsage, Usage};
use flujo_http::reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use super::resolve::EmbedderSettings;
use crate::config::{ProviderKind, ResolvedProvider};
use crate::error::{scrub, LlmError};
use crate::http::{provider_request, HttpClient};
use crate::pricing::{Price, PricingError};

/// Texts per request unless [`EmbedderSettings::batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 128;

/// Characters per request unless [`EmbedderSettings::max_batch_chars`] says otherwise (a text longer than this
/// goes alone).
pub const DEFAULT_MAX_BATCH_CHARS: usize = 100_000;

/// Tokens a text is planned at, per byte, in [`Embedder::estimate`]: one token per two bytes (about twice what
/// English text takes) plus one per text.
const ESTIMATE_BYTES_PER_TOKEN: usize = 2;

/// A failed [`OpenAiEmbedder::embed_accounted`]: the typed error and what the requests before it (earlier
/// batches, a reply that was billed but unusable) consumed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("embedder {embedder} at {server}: {error}")]
#[non_exhaustive]
pub struct EmbedFailure {
    /// The embedder (`openai:text-embedding-3-small`).
    pub embedder: String,
    /// The server's base URL (without credentials).
    pub server: String,
    /// What went wrong.
    pub error: LlmError,
    /// Tokens the provider counted before the failure.
    pub tokens: u64,
    /// What those tokens cost, in USD.
    pub cost_usd: f64,
}

impl EmbedFailure {
    /// The step failure: the message names the embedder and the server; a malformed reply is not retried (a
    /// server answering a batch wrongly answers it wrongly again), other errors are retryable as for chat
    /// models ([`LlmError::retry_at_step_level`]); the usage so far is kept for the budget.
    pub fn into_skill_error(self) -> SkillError {
        let message = self.to_string();
        let malformed = matches!(self.error, LlmError::Malformed { .. });
        let mut e = SkillError::from(self.error).with_usage(TokenUsage::new(self.tokens, 0), self.cost_usd);
        e.message = message;
        if malformed {
            e.retryable = false;
        }
        e
    }
}

impl From<EmbedFailure> for SkillError {
    fn from(f: EmbedFailure) -> Self {
        f.into_skill_error()
    }
}

/// An embedding model behind an OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    /// `provider:model`.
    id: String,
    provider: Arc<ResolvedProvider>,
    model: String,
    http: HttpClient,
    pricing: Result<Option<Price>, PricingError>,
    /// Sent as `dimensions` when set.
    dimensions: Option<usize>,
    batch_size: usize,
    max_batch_chars: usize,
    /// Asked for, known for the model, or seen in the first reply; every later reply must match it.
    dimension: OnceLock<usize>,
}

impl OpenAiEmbedder {
    /// `model` of `provider` (which must speak the OpenAI API), with its price (the result of
    /// [`crate::PricingTable::price`]) and `settings`. Fails on invalid settings or an Anthropic provider.
    pub fn new(
        provider: Arc<ResolvedProvider>,
        model: impl Into<String>,
        http: HttpClient,
        pricing: Result<Option<Price>, PricingError>,
        settings: &EmbedderSettings,
    ) -> Result<Self, LlmError> {
        settings.validate()?;
        if provider.kind != ProviderKind::OpenAi {
            return Err(LlmError::Config(format!(
                "provider '{}' speaks the Anthropic Messages API, which has no embeddings",
                provider.name
            )));
        }
        let model = model.into();
        let dimension = OnceLock::new();
        if let Some(d) = settings.dimensions.or_else(|| known_dimension(&provider, &model)) {
            let _ = dimension.set(d);
        }
        Ok(OpenAiEmbedder {
            id: format!("{}:{model}", provider.name),
            model,
            http,
            pricing,
            dimensions: settings.dimensions,
            batch_size: settings.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            max_batch_chars: settings.max_batch_chars.unwrap_or(DEFAULT_MAX_BATCH_CHARS),
            dimension,
            provider,
        })
    }

    /// The model's name at its provider.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The provider this embedder calls.
    pub fn provider(&self) -> &ResolvedProvider {
        &self.provider
    }

    /// The server's base URL without credentials (what errors name).
    pub fn server(&self) -> String {
        let secret = self.provider.api_key.as_ref().map(|k| k.expose());
        scrub(&without_userinfo(&self.provider.base_url), secret)
    }

    /// The model's price (`Ok(None)`: unknown, lenient pricing; `Err`: strict pricing without a price).
    pub fn price(&self) -> Result<Option<Price>, PricingError> {
        self.pricing.clone()
    }

    /// `Err` when no call can succeed whatever the texts: strict pricing without a price, or a provider that
    /// needs a key and has none. Nothing is sent.
    pub fn check_ready(&self) -> Result<(), LlmError> {
        self.pricing.as_ref().map_err(|e| LlmError::Pricing(e.clone()))?;
        self.provider.check_key()
    }

    /// The texts of each request, as index ranges: at most `batch_size` texts and `max_batch_chars`
    /// characters each (a longer text alone), in order.
    pub fn batches(&self, texts: &[String]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut chars) = (0, 0usize);
        for (i, text) in texts.iter().enumerate() {
            let n = text.chars().count();
            if i > start && (i - start >= self.batch_size || chars.saturating_add(n) > self.max_batch_chars) {
                out.push(start..i);
                start = i;
                chars = 0;
            }
            chars = chars.saturating_add(n);
        }
        if start < texts.len() {
            out.push(start..texts.len());
        }
        out
    }

    /// The request body for one batch.
    pub fn request_body(&self, batch: &[String]) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("input".into(), json!(batch));
        body.insert("encoding_format".into(), json!("float"));
        if let Some(d) = self.dimensions {
            body.insert("dimensions".into(), json!(d));
        }
        Value::Object(body)
    }

    /// The tokens `texts` are planned at (an upper bound for ordinary text: one per two bytes, plus one per
    /// text); also what a reply without `usage` is counted as.
    pub fn planned_tokens(&self, texts: &[String]) -> u64 {
        texts.iter().fold(0u64, |sum, t| sum.saturating_add((t.len().div_ceil(ESTIMATE_BYTES_PER_TOKEN) + 1) as u64))
    }

    /// The cost in USD of `tokens` prompt tokens (0 without a price).
    pub fn cost(&self, tokens: u64) -> f64 {
        match &self.pricing {
            Ok(Some(p)) => p.cost(TokenUsage::new(tokens, 0)),
            _ => 0.0,
        }
    }

    /// [`Embedder::embed`] with typed errors that keep the usage of the requests before the failure.
    pub async fn embed_accounted(&self, texts: &[String]) -> Result<Embeddings, EmbedFailure> {
        let fail = |error: LlmError, tokens: u64| EmbedFailure {
            embedder: self.id.clone(),
            server: self.server(),
            error,
            tokens,
            cost_usd: self.cost(tokens),
        };
        if let Err(e) = &self.pricing {
            return Err(fail(LlmError::Pricing(e.clone()), 0));
        }
        if texts.is_empty() {
            return Ok(Embeddings::new(Vec::new()));
        }
        let batches = self.batches(texts);
        tracing::debug!(embedder = %self.id, texts = texts.len(), batches = batches.len(), "embedding texts");
        let mut vectors = Vec::with_capacity(texts.len());
        let mut tokens = 0u64;
        for range in batches {
            let batch = &texts[range];
            let body = self.request_body(batch);
            let (reply, _requests) = provider_request(
                &self.http,
                &self.provider,
                "/embeddings",
                ("authorization", |key| format!("Bearer {key}")),
                HeaderMap::new(),
                &body,
                None,
                None,
            )
            .await
            .map_err(|e| fail(e, tokens))?;
            // A reply without usage (some local servers) is counted at the plan, so the budget never sees less.
            tokens = tokens.saturating_add(reply_tokens(&reply).unwrap_or_else(|| self.planned_tokens(batch)));
            let batch_vectors = self.check_reply(&reply, batch.len()).map_err(|message| {
                fail(LlmError::Malformed { provider: self.provider.name.clone(), message }, tokens)
            })?;
            vectors.extend(batch_vectors);
        }
        Ok(Embeddings::new(vectors).with_usage(tokens, self.cost(tokens)))
    }

    /// The vectors of a reply to `expected` texts, in order, or what is wrong with it.
    fn check_reply(&self, reply: &Value, expected: usize) -> Result<Vec<Vec<f32>>, String> {
        let data = reply.get("data").and_then(Value::as_array).ok_or("the reply has no `data` list")?;
        if data.len() != expected {
            return Err(format!("the server returned {} embedding(s) for {expected} text(s)", data.len()));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in data.iter().enumerate() {
            let index = match item.get("index") {
                None => position,
                Some(i) => i
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|i| *i < expected)
                    .ok_or_else(|| format!("`data[{position}].index` is {i}, not an index below {expected}"))?,
            };
            let values = match item.get("embedding") {
                Some(Value::Array(values)) => values,
                Some(Value::String(_)) => {
                    return Err(
                        "the embedding is a base64 string although `encoding_format: \"float\"` was asked".into()
                    )
                }
                _ => return Err(format!("`data[{position}].embedding` is not a list of numbers")),
            };
            let mut vector = Vec::with_capacity(values.len());
            for v in values {
                let x = v
                    .as_f64()
                    .map(|x| x as f32)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("embedding {index} holds {v}, which is not a finite 32-bit number"))?;
                vector.push(x);
            }
            let slot = &mut slots[index];
            if slot.is_some() {
                return Err(format!("two embeddings have index {index}"));
            }
            *slot = Some(vector);
        }
        // Every index below `expected` appeared once: `expected` items, none out of range or repeated.
        let vectors: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
        let dimension = vectors.first().map_or(0, Vec::len);
        if dimension == 0 {
            return Err("the embeddings are empty".into());
        }
        if let Some(other) = vectors.iter().map(Vec::len).find(|n| *n != dimension) {
            return Err(format!("the embeddings have different dimensions ({dimension} and {other})"));
        }
        if let Some(asked) = self.dimensions.filter(|d| *d != dimension) {
            return Err(format!(
                "{asked} dimensions were asked and the server returned {dimension} (does the model support `dimensions`?)"
            ));
        }
        let known = *self.dimension.get_or_init(|| dimension);
        if known != dimension {
            return Err(format!("the embeddings had dimension {known} and now have {dimension}"));
        }
        Ok(vectors)
    }
}

/// The tokens a reply reports: `usage.prompt_tokens`, else `usage.total_tokens`.
fn reply_tokens(reply: &Value) -> Option<u64> {
    let usage = reply.get("usage")?;
    usage.get("prompt_tokens").or_else(|| usage.get("total_tokens")).and_then(Value::as_u64)
}

/// The dimension of OpenAI's own embedding models at their default size (public endpoint only).
fn known_dimension(provider: &ResolvedProvider, model: &str) -> Option<usize> {
    if Some(provider.base_url.as_str()) != ProviderKind::OpenAi.default_base_url() {
        return None;
    }
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// `url` without a `user:password@` part.
fn without_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_owned()
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, SkillError> {
        self.embed_accounted(texts).await.map_err(EmbedFailure::into_skill_error)
    }

    fn dimension(&self) -> Option<usize> {
        self.dimension.get().copied()
    }

    fn name(&self) -> &str {
        &self.id
    }

    /// [`OpenAiEmbedder::planned_tokens`] × the price (cost 0 when unknown, or when strict pricing will refuse
    /// the call anyway).
    fn estimate(&self, texts: &[String]) -> Option<Usage> {
        let tokens = self.planned_tokens(texts);
        Some(Usage { cost_usd: self.cost(tokens), tokens })
    }

    /// Strict pricing without a price is `Interrupt::PricingNotConfigured`; a provider that needs a key and
    /// has none is `Interrupt::MissingApiKey` (as for chat agents).
    fn preflight(&self) -> Result<(), Interrupt> {
        match self.check_ready() {
            Ok(()) => Ok(()),
            Err(LlmError::Pricing(e)) => e.to_interrupt().map_or(Ok(()), Err),
            Err(e @ LlmError::MissingApiKey { .. }) => Err(Interrupt::MissingApiKey {
                model: self.id.clone(),
                message: format!("embedder '{}': {e}", self.id),
            }),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;

    fn embedder(settings: &EmbedderSettings) -> OpenAiEmbedder {
        let provider = ProviderConfig::new(ProviderKind::OpenAi, "http://user:pw@gpu:8000/v1", Some("sk-test-1234"))
            .resolve("vllm", &|_| None)
            .unwrap();
        let price = Price::new(0.5, 9.0);
        OpenAiEmbedder::new(Arc::new(provider), "e5", HttpClient::new().unwrap(), Ok(Some(price)), settings).unwrap()
    }

    fn texts(lens: &[usize]) -> Vec<String> {
        lens.iter().map(|n| "x".repeat(*n)).collect()
    }

    #[test]
    fn batches_bound_texts_and_characters() {
        let e = embedder(&EmbedderSettings::new().with_batch_size(2).with_max_batch_chars(10));
        assert_eq!(e.batches(&[]), Vec::<Range<usize>>::new());
        assert_eq!(e.batches(&texts(&[1, 1, 1, 1, 1])), vec![0..2, 2..4, 4..5]);
        // 4 + 7 > 10 starts a new batch; a text over the bound goes alone.
        assert_eq!(e.batches(&texts(&[4, 7, 30, 3])), vec![0..1, 1..2, 2..3, 3..4]);
        assert_eq!(e.batches(&texts(&[5, 5, 1])), vec![0..2, 2..3]);
    }

    #[test]
    fn body_names_and_prices() {
        let e = embedder(&EmbedderSettings::new().with_dimensions(64));
        let b = e.request_body(&["a".to_owned(), "b".to_owned()]);
        assert_eq!(b, json!({"model": "e5", "input": ["a", "b"], "encoding_format": "float", "dimensions": 64}));
        assert_eq!(e.dimension(), Some(64));
        assert_eq!(e.name(), "vllm:e5");
        assert_eq!(e.server(), "http://gpu:8000/v1");
        // Two texts of 3 bytes: 2 + 1 tokens each; only the prompt price counts.
        let est = e.estimate(&texts(&[3, 3])).unwrap();
        assert_eq!(est.tokens, 6);
        assert!((est.cost_usd - 0.003).abs() < 1e-12, "{}", est.cost_usd);
        assert!(embedder(&EmbedderSettings::new()).dimension().is_none());
    }

    #[test]
    fn replies_are_ordered_by_index_and_checked() {
        let e = embedder(&EmbedderSettings::new());
        let reply = json!({"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}});
        assert_eq!(e.check_reply(&reply, 2).unwrap(), vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(reply_tokens(&reply), Some(4));
        assert_eq!(e.dimension(), Some(2));
        let bad = |data: Value, n: usize| e.check_reply(&json!({"data": data}), n).unwrap_err();
        assert!(bad(json!([{"index": 0, "embedding": [1.0, 0.0]}]), 2).contains("1 embedding(s) for 2 text(s)"));
        assert!(bad(json!([{"index": 0, "embedding": [1.0, null]}]), 1).contains("not a finite"));
        assert!(bad(json!([{"index": 0, "embedding": [1e300, 0.0]}]), 1).contains("not a finite"));
        assert!(bad(json!([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]), 2)
            .contains("two embeddings have index 0"));
        assert!(bad(json!([{"index": 5, "embedding": [1.0, 0.0]}]), 1).contains("not an index below 1"));
        assert!(bad(json!([{"index": 0, "embedding": "AAAA"}]), 1).contains("base64"));
        assert!(bad(json!([{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [1.0]}]), 2)
            .contains("different dimensions"));
        assert!(bad(json!([{"index": 0, "embedding": [1.0, 0.0, 0.0]}]), 1).contains("dimension 2 and now have 3"));
        assert!(e.check_reply(&json!({"object": "list"}), 1).unwrap_err().contains("no `data`"));
    }

    #[test]
    fn malformed_failures_are_not_retried_and_keep_usage() {
        let f = EmbedFailure {
            embedder: "openai:e".into(),
            server: "http://h/v1".into(),
            error: LlmError::Malformed { provider: "openai".into(), message: "bad".into() },
            tokens: 7,
            cost_usd: 0.5,
        };
        let e = f.into_skill_error();
        assert!(!e.retryable);
        assert_eq!(e.message, "embedder openai:e at http://h/v1: openai: malformed reply: bad");
        assert_eq!((e.tokens, e.cost_usd), (TokenUsage::new(7, 0), 0.5));
        assert_eq!(without_userinfo("https://a:b@host:1/x@y"), "https://host:1/x@y");
        assert_eq!(without_userinfo("http://host/v1"), "http://host/v1");
    }
}
