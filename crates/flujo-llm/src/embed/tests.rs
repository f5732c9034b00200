//! The OpenAI embedder against the fake provider server over real HTTP on 127.0.0.1: batching and order,
//! retries, typed errors, secrets, checks of the reply, usage and cost.

use std::time::{Duration, Instant};

use flujo_core::{Embedder, TokenUsage};
use serde_json::json;

use super::*;
use crate::pricing::{Price, PricingTable};
use crate::testing::{FakeProvider, ScriptedEmbedding, FAKE_API_KEY};
use crate::LlmError;

const MODEL: &str = "openai:text-embedding-3-small";
const PRICE: Price = Price::new(0.02, 0.0);

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn setup(settings: EmbedderSettings) -> (FakeProvider, OpenAiEmbedder) {
    let fake = FakeProvider::start().await.unwrap();
    let pricing = PricingTable::new().strict(true).with_price("openai", "text-embedding-3-small", PRICE);
    let embedder = fake.registry(pricing).unwrap().openai_embedder(MODEL, &settings).unwrap();
    (fake, embedder)
}

#[tokio::test]
async fn batches_keep_the_order_and_account_usage_and_cost() {
    let (fake, e) = setup(EmbedderSettings::new().with_batch_size(2)).await;
    fake.require_api_key(FAKE_API_KEY);
    let input = texts(&["reset my password", "shipping to Madrid", "a", "b c", "the last one here"]);
    let estimate = e.estimate(&input).unwrap();
    let out = e.embed(&input).await.unwrap();
    // Three requests of at most two texts, in order; the fake lists its items in reverse index order.
    assert_eq!(fake.embedding_inputs(), vec![input[0..2].to_vec(), input[2..4].to_vec(), input[4..5].to_vec()]);
    let hash = HashEmbedder::default();
    assert_eq!(out.vectors, input.iter().map(|t| hash.embed_one(t)).collect::<Vec<_>>());
    assert_eq!(e.dimension(), Some(HASH_DIMENSION));
    // One token per word at the fake: 3 + 3 + 1 + 2 + 4.
    assert_eq!(out.tokens, 13);
    assert!((out.cost_usd - 13.0 / 1000.0 * 0.02).abs() < 1e-15, "{}", out.cost_usd);
    assert!(estimate.tokens >= out.tokens && estimate.cost_usd >= out.cost_usd, "{estimate:?} vs {out:?}");
    let call = &fake.calls()[0];
    assert_eq!(call.path, "/v1/embeddings");
    assert_eq!(call.body["model"], "text-embedding-3-small");
    assert_eq!(call.body["encoding_format"], "float");
    assert!(call.body.get("dimensions").is_none());
    // The key was sent (the fake requires it) and the log redacts it.
    assert_eq!(call.headers.get("authorization").map(String::as_str), Some("[REDACTED]"));
    // No texts, no request.
    assert_eq!(e.embed(&[]).await.unwrap().vectors.len(), 0);
    assert_eq!(fake.call_count(), 3);
}

#[tokio::test]
async fn dimensions_are_asked_for_and_checked() {
    let (fake, e) = setup(EmbedderSettings::new().with_dimensions(64).with_max_batch_chars(10)).await;
    let out = e.embed(&texts(&["twelve chars", "x"])).await.unwrap();
    assert_eq!(fake.embedding_inputs().len(), 2, "12 characters do not fit a batch of 10 with another text");
    assert_eq!(fake.calls()[0].body["dimensions"], 64);
    assert!(out.vectors.iter().all(|v| v.len() == 64));
    // A server that ignores `dimensions`.
    fake.push_embedding(ScriptedEmbedding::Body(json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}]})));
    let err = e.embed(&texts(&["x"])).await.unwrap_err();
    assert!(err.message.contains("64 dimensions were asked and the server returned 2"), "{}", err.message);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let (fake, e) = setup(EmbedderSettings::new()).await;
    fake.push_embedding(ScriptedEmbedding::Status { code: 429, retry_after: Some(1) });
    let started = Instant::now();
    let out = e.embed(&texts(&["after the wait"])).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!((out.vectors.len(), fake.call_count()), (1, 2));

    fake.push_embedding(ScriptedEmbedding::Status { code: 500, retry_after: None });
    fake.push_embedding(ScriptedEmbedding::Status { code: 503, retry_after: None });
    assert_eq!(e.embed(&texts(&["x"])).await.unwrap().vectors.len(), 1);
    assert_eq!(fake.call_count(), 5);

    // Three attempts at the fake's policy, then a typed error naming the server.
    for _ in 0..3 {
        fake.push_embedding(ScriptedEmbedding::Status { code: 500, retry_after: None });
    }
    let failure = e.embed_accounted(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(failure.error, LlmError::Server { status: 500, attempts: 3, .. }), "{failure:?}");
    assert_eq!(fake.call_count(), 8);
    let err = failure.into_skill_error();
    assert!(err.message.contains(&fake.openai_base_url()), "{}", err.message);
    assert!(!err.retryable, "the HTTP client already retried");
}

#[tokio::test]
async fn bad_requests_are_not_retried_and_earlier_batches_stay_accounted() {
    let (fake, e) = setup(EmbedderSettings::new().with_batch_size(1)).await;
    fake.push_embedding(ScriptedEmbedding::Vectors);
    fake.push_embedding(ScriptedEmbedding::Status { code: 400, retry_after: None });
    let failure = e.embed_accounted(&texts(&["one two", "three"])).await.unwrap_err();
    assert!(
        matches!(&failure.error, LlmError::BadRequest { status: 400, message, .. } if message == "scripted error 400"),
        "{failure:?}"
    );
    assert_eq!(fake.call_count(), 2);
    assert_eq!((failure.tokens, failure.cost_usd), (2, 2.0 / 1000.0 * 0.02));
    let err = failure.into_skill_error();
    assert!(!err.retryable);
    assert_eq!(err.tokens, TokenUsage::new(2, 0));
}

#[tokio::test]
async fn the_key_never_reaches_an_error() {
    const WRONG: &str = "sk-wrong-secret-4242";
    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key(FAKE_API_KEY);
    let registry = fake.registry_with_key(PricingTable::new(), WRONG).unwrap();
    let e = registry.openai_embedder(MODEL, &EmbedderSettings::new()).unwrap();
    let failure = e.embed_accounted(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(failure.error, LlmError::Auth { status: 401, .. }), "{failure:?}");
    let err = e.embed(&texts(&["x"])).await.unwrap_err();
    assert!(!err.retryable);
    for text in [failure.to_string(), format!("{failure:?}"), err.message.clone(), format!("{err:?}"), format!("{e:?}")]
    {
        assert!(!text.contains(WRONG) && !text.contains("wrong-secret"), "key leaked in {text}");
    }
    assert_eq!(fake.call_count(), 2, "authentication failures are not retried");
}

#[tokio::test]
async fn malformed_replies_are_clear_errors_that_are_not_retried() {
    let (fake, e) = setup(EmbedderSettings::new()).await;
    let server = fake.openai_base_url();
    // The usage the reply reported is kept for the budget; a reply without usage counts at the plan.
    let reported = 3;
    let planned = e.planned_tokens(&texts(&["a b", "c"]));
    for (scripted, expected, tokens) in [
        (ScriptedEmbedding::MissingVector, "the server returned 1 embedding(s) for 2 text(s)", reported),
        (ScriptedEmbedding::NonFinite, "not a finite 32-bit number", reported),
        (ScriptedEmbedding::Body(json!({"object": "list"})), "no `data` list", planned),
    ] {
        fake.push_embedding(scripted);
        let before = fake.call_count();
        let err = e.embed(&texts(&["a b", "c"])).await.unwrap_err();
        assert!(err.message.contains(expected), "{}", err.message);
        assert!(err.message.contains(&server) && err.message.contains(MODEL), "{}", err.message);
        assert!(!err.retryable, "{}", err.message);
        assert_eq!(fake.call_count(), before + 1);
        assert_eq!(err.tokens, TokenUsage::new(tokens, 0));
    }
}

#[tokio::test]
async fn a_reply_without_usage_counts_at_the_plan() {
    let (fake, e) = setup(EmbedderSettings::new()).await;
    fake.push_embedding(ScriptedEmbedding::NoUsage);
    let input = texts(&["four bytes", "x"]);
    let out = e.embed(&input).await.unwrap();
    assert_eq!(out.tokens, e.planned_tokens(&input));
    assert_eq!(out.tokens, (5 + 1) + (1 + 1));
}

#[tokio::test]
async fn strict_pricing_refuses_an_unpriced_model_before_any_request() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new().strict(true)).unwrap();
    let e = registry.openai_embedder("openai:unpriced-embedder", &EmbedderSettings::new()).unwrap();
    assert!(matches!(e.preflight(), Err(flujo_core::Interrupt::PricingNotConfigured { .. })));
    let err = e.embed(&texts(&["x"])).await.unwrap_err();
    assert!(err.message.contains("pricing not configured for openai:unpriced-embedder"), "{}", err.message);
    assert!(!err.retryable);
    assert_eq!(fake.call_count(), 0);
}
