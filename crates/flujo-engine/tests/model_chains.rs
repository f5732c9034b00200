//! Model fallback chains (`model: [a, b]`), multimodal inputs and the reply facts journaled per step, against
//! the fake provider over real HTTP: a provider failure (after its retries) moves to the next model, which is
//! reserved for on its own before it is called; an answer that is wrong (schema violation) does not; the step
//! records which model answered, what the failed ones said, and every model's usage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use flujo_core::*;
use flujo_engine::Flujo;
use flujo_llm::testing::{FakeProvider, ScriptedReply};
use flujo_llm::{LlmConfig, LlmRegistry, Price, PricingTable, ProviderConfig};
use serde_json::json;

fn chain_step(models: &[&str], extra: Value) -> Step {
    let mut settings = json!({"model": models});
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Step::new("ask", StepKind::Step { agent: Some(AgentRef::Model { model: models[0].into(), settings }) })
}

fn runner(step: Step, models: LlmRegistry, limits: Option<UsageLimits>) -> Flujo {
    let mut b = Flujo::builder(Pipeline::new("p", vec![step])).models(Arc::new(models));
    if let Some(l) = limits {
        b = b.usage_limits(l);
    }
    b.build().unwrap()
}

fn pricing() -> PricingTable {
    PricingTable::new().with_price("openai", "*", Price::new(1.0, 2.0)).with_price(
        "anthropic",
        "*",
        Price::new(3.0, 4.0),
    )
}

#[tokio::test]
async fn a_provider_failure_falls_back_to_the_next_model() {
    let fake = FakeProvider::start().await.unwrap();
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Status { code: 503, retry_after: None });
    }
    fake.push_reply_with_usage(ScriptedReply::Text("from claude".into()), TokenUsage::new(100, 10));
    let models = fake.registry(pricing()).unwrap();
    let r = runner(chain_step(&["openai:gpt-test", "anthropic:claude-test"], json!({})), models, None)
        .run(json!("q"))
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("from claude")));
    let paths: Vec<String> = fake.calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/chat/completions", "/v1/chat/completions", "/v1/messages"]);
    let step = &r.step_history[0];
    assert_eq!(step.metadata["model"], "anthropic:claude-test", "the step names the model that answered");
    assert_eq!(step.metadata["request_id"], "msg_4", "the fake numbers every reply it plays");
    let failed = step.metadata["model_fallbacks"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["model"], "openai:gpt-test");
    assert!(failed[0]["error"].as_str().unwrap().contains("HTTP 503"), "{failed:?}");
    // Priced at the model that answered (the 503s billed nothing).
    assert_eq!(step.tokens, TokenUsage::new(100, 10));
    assert!((r.total_cost_usd - (0.3 + 0.04)).abs() < 1e-9, "{}", r.total_cost_usd);
}

#[tokio::test]
async fn a_model_that_answers_ends_the_chain() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::Text("from gpt".into()));
    let models = fake.registry(pricing()).unwrap();
    let r = runner(chain_step(&["openai:gpt-test", "anthropic:claude-test"], json!({})), models, None)
        .run(json!("q"))
        .await
        .unwrap();
    assert_eq!(r.output, Some(json!("from gpt")));
    assert_eq!(fake.call_count(), 1);
    let step = &r.step_history[0];
    assert_eq!(step.metadata["model"], "openai:gpt-test");
    assert_eq!(step.metadata["request_id"], "chatcmpl-1");
    assert!(step.metadata.get("model_fallbacks").is_none());
}

/// A wrong answer is the model's, not the provider's: re-asks happen, the chain does not move on.
#[tokio::test]
async fn a_schema_violation_does_not_fall_back() {
    let fake = FakeProvider::start().await.unwrap();
    for _ in 0..2 {
        fake.push_reply(ScriptedReply::Text("not json".into()));
    }
    let models = fake.registry(pricing()).unwrap();
    let schema = json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    let step =
        chain_step(&["openai:gpt-test", "anthropic:claude-test"], json!({"output_schema": schema, "max_retries": 1}));
    let r = runner(step, models, None).run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(fake.call_count(), 2);
    assert!(fake.calls().iter().all(|c| c.path == "/v1/chat/completions"));
}

/// Each model is reserved for when it is about to be called: a budget that fits the cheap first model runs
/// it (a reservation for the whole chain would not fit), and a fallback whose own reservation does not fit is
/// never called — the run stops with `usage_limit_exceeded`.
#[tokio::test]
async fn each_model_of_the_chain_is_reserved_for_on_its_own() {
    let cheap_then_dear = PricingTable::new().with_price("openai", "*", Price::new(0.001, 0.001)).with_price(
        "anthropic",
        "*",
        Price::new(10.0, 10.0),
    );
    // 4096 completion tokens at $0.01/1k ≈ $0.04 for the first model; ≈ $41 for the second.
    let limits = UsageLimits::new().with_cost_limit(1.0);
    let step = || chain_step(&["openai:gpt-test", "anthropic:claude-test"], json!({}));

    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::Text("cheap".into()));
    let r =
        runner(step(), fake.registry(cheap_then_dear.clone()).unwrap(), Some(limits)).run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);

    let fake = FakeProvider::start().await.unwrap();
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Status { code: 500, retry_after: None });
    }
    fake.push_reply(ScriptedReply::Text("dear".into()));
    let r = runner(step(), fake.registry(cheap_then_dear).unwrap(), Some(limits)).run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.kind, "usage_limit_exceeded", "{e:?}");
    assert!(e.message.contains("anthropic:claude-test"), "{}", e.message);
    assert!(fake.calls().iter().all(|c| c.path == "/v1/chat/completions"), "the fallback was never called");
    assert_eq!(fake.pending_replies(), 1);
}

/// A model whose key is missing does not stop a chain that has a usable model: it fails at the provider
/// (nothing sent) and the next one answers. With no usable model, the run stops before the first step.
#[tokio::test]
async fn a_model_without_its_key_is_skipped_by_the_chain() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::Text("from claude".into()));
    let config = LlmConfig::default()
        .with_pricing(pricing())
        // The public endpoint without a key: MissingApiKey.
        .with_provider("openai", ProviderConfig::default())
        .with_provider("anthropic", fake.provider_config(flujo_llm::ProviderKind::Anthropic, "k"));
    let models = LlmRegistry::with_env(config.clone(), |_| None).unwrap();
    let r = runner(chain_step(&["openai:gpt-test", "anthropic:claude-test"], json!({})), models, None)
        .run(json!("q"))
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.step_history[0].metadata["model"], "anthropic:claude-test");
    let failed = &r.step_history[0].metadata["model_fallbacks"][0];
    assert!(failed["error"].as_str().unwrap().contains("OPENAI_API_KEY"), "{failed}");
    assert_eq!(fake.call_count(), 1);

    let alone = LlmRegistry::with_env(config, |_| None).unwrap();
    let r = runner(chain_step(&["openai:gpt-test"], json!({})), alone, None).run(json!("q")).await.unwrap();
    assert_eq!(r.error.as_ref().unwrap().kind, "missing_api_key");
    assert!(r.step_history.is_empty());
}

/// Strict pricing checks every model of a chain before anything runs.
#[tokio::test]
async fn strict_pricing_covers_the_whole_chain() {
    let fake = FakeProvider::start().await.unwrap();
    let models =
        fake.registry(PricingTable::new().strict(true).with_price("openai", "*", Price::new(1.0, 1.0))).unwrap();
    let r = runner(chain_step(&["openai:gpt-test", "anthropic:claude-test"], json!({})), models, None)
        .run(json!("q"))
        .await
        .unwrap();
    assert_eq!(r.error.as_ref().unwrap().kind, "pricing_not_configured");
    assert_eq!(fake.call_count(), 0);
}

/// `{parts: […]}` inputs reach the providers as their content blocks: URLs as URLs, files read and sent
/// inline; the journal keeps the reference, not the bytes.
#[tokio::test]
async fn multimodal_inputs_reach_each_provider_in_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("cat.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nfake").unwrap();
    let pdf = dir.path().join("r.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 fake").unwrap();
    let input = json!({"parts": [
        "What is in these?",
        {"image": "https://img.test/cat.jpg"},
        {"image": png.to_str().unwrap()},
        {"document": pdf.to_str().unwrap(), "name": "report"},
    ]});
    for (model, path) in [("openai:gpt-test", "/v1/chat/completions"), ("anthropic:claude-test", "/v1/messages")] {
        let fake = FakeProvider::start().await.unwrap();
        fake.push_reply(ScriptedReply::Text("a cat".into()));
        let r = runner(chain_step(&[model], json!({})), fake.registry(pricing()).unwrap(), None)
            .run(input.clone())
            .await
            .unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{model}: {:?}", r.error);
        let call = &fake.calls()[0];
        assert_eq!(call.path, path);
        let content = &call.body["messages"].as_array().unwrap().last().unwrap()["content"];
        let blocks = content.as_array().unwrap_or_else(|| panic!("{model}: {content}"));
        assert_eq!(blocks.len(), 4, "{model}: {content}");
        assert_eq!(blocks[0]["text"], "What is in these?");
        if model.starts_with("openai") {
            assert_eq!(blocks[1], json!({"type": "image_url", "image_url": {"url": "https://img.test/cat.jpg"}}));
            assert!(blocks[2]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,iVBORw0K"));
            assert_eq!(blocks[3]["type"], "file");
            assert!(blocks[3]["file"]["file_data"].as_str().unwrap().starts_with("data:application/pdf;base64,"));
        } else {
            assert_eq!(blocks[1]["source"], json!({"type": "url", "url": "https://img.test/cat.jpg"}));
            assert_eq!(blocks[2]["source"]["type"], "base64");
            assert_eq!(blocks[2]["source"]["media_type"], "image/png");
            assert_eq!(blocks[3]["type"], "document");
            assert_eq!(blocks[3]["source"]["media_type"], "application/pdf");
            assert_eq!(blocks[3]["title"], "report");
        }
    }
    // A missing file fails the step before anything is sent, naming the file.
    let fake = FakeProvider::start().await.unwrap();
    let bad = json!({"parts": [{"image": dir.path().join("nope.png").to_str().unwrap()}]});
    let r = runner(chain_step(&["openai:gpt-test"], json!({})), fake.registry(pricing()).unwrap(), None)
        .run(bad)
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.step_history[0].feedback.as_deref().unwrap().contains("nope.png"), "{:?}", r.step_history[0].feedback);
    assert_eq!(fake.call_count(), 0);
}

/// Reasoning and caching settings from `model_settings` reach the wire: OpenAI `reasoning_effort`,
/// Anthropic `thinking` with `cache_control` on the system prompt; cached and reasoning tokens are read and
/// priced at their own rates.
#[tokio::test]
async fn reasoning_and_cache_settings_and_detailed_usage() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply_with_usage(
        ScriptedReply::Text("deep".into()),
        TokenUsage::new(1000, 500).with_cache(800, 0).with_reasoning(300),
    );
    fake.push_reply_with_usage(ScriptedReply::Text("cached".into()), TokenUsage::new(1000, 100).with_cache(600, 200));
    let pricing = PricingTable::new()
        .with_price("openai", "*", Price::new(1.0, 2.0).with_cache_rates(0.1, 1.0).with_reasoning_rate(4.0))
        .with_price("anthropic", "*", Price::new(1.0, 2.0).with_cache_rates(0.1, 1.25));
    let models = fake.registry(pricing).unwrap();
    let step = chain_step(&["openai:o3-test"], json!({"model_settings": {"reasoning_effort": "high"}}));
    let r = runner(step, models, None).run(json!("q")).await.unwrap();
    assert_eq!(fake.calls()[0].body["reasoning_effort"], "high");
    let t = r.step_history[0].tokens;
    assert_eq!((t.prompt, t.cached, t.completion, t.reasoning), (1000, 800, 500, 300));
    // 200 plain prompt × 1 + 800 cached × 0.1 + 200 plain completion × 2 + 300 reasoning × 4, per 1k.
    assert!((r.total_cost_usd - (0.2 + 0.08 + 0.4 + 1.2)).abs() < 1e-9, "{}", r.total_cost_usd);
    let json = serde_json::to_value(&r.step_history[0]).unwrap();
    assert_eq!(json["tokens"], json!({"prompt": 1000, "completion": 500, "cached": 800, "reasoning": 300}));

    let models = fake
        .registry(PricingTable::new().with_price("anthropic", "*", Price::new(1.0, 2.0).with_cache_rates(0.1, 1.25)))
        .unwrap();
    let step = chain_step(
        &["anthropic:claude-test"],
        json!({"system_prompt": "Be brief.", "model_settings": {"thinking_budget": 2048, "cache_prompt": true, "max_tokens": 8000, "temperature": 0.3}}),
    );
    let r = runner(step, models, None).run(json!("q")).await.unwrap();
    let body = &fake.calls()[1].body;
    assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
    assert!(body.get("temperature").is_none(), "the API refuses sampling settings with thinking");
    assert_eq!(body["system"][0]["cache_control"], json!({"type": "ephemeral"}));
    let t = r.step_history[0].tokens;
    assert_eq!((t.prompt, t.cached, t.cache_write), (1000, 600, 200));
    // 200 plain × 1 + 600 × 0.1 + 200 written × 1.25, + 100 × 2, per 1k.
    assert!((r.total_cost_usd - (0.2 + 0.06 + 0.25 + 0.2)).abs() < 1e-9, "{}", r.total_cost_usd);
}
