//! Model steps in the engine against the fake provider (real HTTP on 127.0.0.1): every call reconciled to the
//! usage the provider reported (failed ones too), one retry budget per call (no step-level multiplication, a
//! provider's `Retry-After` respected), step retries that back off, every model checked before the first
//! step, refusals and cut-off answers in the step's metadata, and the paid work of a step the budget stopped
//! kept in the result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flujo_core::*;
use flujo_engine::Flujo;
use flujo_llm::testing::{FakeProvider, ScriptedReply, DEFAULT_USAGE};
use flujo_llm::{LlmRegistry, Price, PricingTable};
use flujo_skills::{BuiltinRegistry, CallCounter, CountingSkill};
use flujo_store::MemoryStore;
use serde_json::json;

const PRICE: Price = Price::new(1.0, 2.0);

fn model_step(name: &str, settings: Value) -> Step {
    Step::new(name, StepKind::Step { agent: Some(AgentRef::Model { model: "openai:gpt-test".into(), settings }) })
}

fn schema() -> Value {
    json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}})
}

fn runner(pipeline: Pipeline, models: LlmRegistry, counter: &CallCounter) -> Flujo {
    let mut skills = BuiltinRegistry::new();
    CountingSkill::new(counter.clone()).register(&mut skills, "test.effect");
    Flujo::builder(pipeline)
        .store(Arc::new(MemoryStore::new()))
        .skills(Arc::new(skills))
        .models(Arc::new(models))
        .build()
        .unwrap()
}

/// Always-invalid structured output: the agent's re-asks are the call's retries (the step does not multiply
/// them), and the run is charged exactly what the provider reported for them — not the reservation.
#[tokio::test]
async fn a_failed_structured_call_is_charged_its_real_usage_once() {
    let fake = FakeProvider::start().await.unwrap();
    for _ in 0..8 {
        fake.push_reply_with_usage(ScriptedReply::Text("no json".into()), TokenUsage::new(30, 12));
    }
    let models = fake.registry(PricingTable::new().with_price("openai", "*", PRICE)).unwrap();
    // Step max_retries 3, agent max_retries 1: 2 requests in all.
    let step = model_step("ask", json!({"output_schema": schema(), "max_retries": 1})).with_retries(3);
    let flujo = runner(Pipeline::new("p", vec![step]), models, &CallCounter::default());
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(fake.call_count(), 2, "re-asks are not multiplied by step retries");
    let msg = &r.error.as_ref().unwrap().message;
    assert!(msg.contains("after 2 attempt(s)"), "{msg}");
    assert_eq!(r.total_tokens, 84, "the real usage of both answers, not the estimate");
    assert!((r.total_cost_usd - 2.0 * 0.054).abs() < 1e-9, "{}", r.total_cost_usd);
    assert_eq!(r.step_history[0].tokens, TokenUsage::new(60, 24));
    assert_eq!(r.step_history[0].attempts, 1);
}

/// A 500 with nothing billed costs nothing and is not re-sent by the step; an unpriced budget is not used up
/// by the reservation of a failed call (the second step still fits).
#[tokio::test]
async fn a_server_error_costs_nothing_and_is_not_retried_twice() {
    let fake = FakeProvider::start().await.unwrap();
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Status { code: 500, retry_after: None });
    }
    let models = fake.registry(PricingTable::new().with_price("openai", "*", PRICE)).unwrap();
    let first = model_step("first", json!({"model_settings": {"max_tokens": 100}}))
        .with_fallback(model_step("second", json!({"model_settings": {"max_tokens": 100}})));
    fake.push_reply(ScriptedReply::Text("ok".into()));
    let mut step = first;
    step.config.max_retries = 2;
    let flujo = Flujo::builder(Pipeline::new("p", vec![step]))
        .models(Arc::new(models))
        // Room for about one reservation of this size at a time.
        .usage_limits({
            let mut limits = UsageLimits::default();
            limits.total_cost_usd_limit = Some(0.3);
            limits
        })
        .build()
        .unwrap();
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(fake.call_count(), 4, "3 requests of the HTTP client for the failed call, 1 for the fallback");
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.total_tokens, DEFAULT_USAGE.total(), "only the fallback's answer was billed");
    assert!((r.total_cost_usd - 0.02).abs() < 1e-9, "{}", r.total_cost_usd);
}

/// A provider asking for a pause longer than a step waits ends the step: the step does not retry 0.05 s later.
#[tokio::test]
async fn a_long_retry_after_is_not_hammered_by_step_retries() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(120) });
    fake.push_reply(ScriptedReply::Text("too soon".into()));
    let models = fake.registry(PricingTable::new()).unwrap();
    let flujo =
        runner(Pipeline::new("p", vec![model_step("ask", json!({})).with_retries(5)]), models, &CallCounter::default());
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(fake.call_count(), 1);
    let msg = &r.error.as_ref().unwrap().message;
    assert!(msg.contains("retry after 120s"), "{msg}");
}

/// Step-level retries back off (exponentially, with jitter) instead of retrying at once.
#[tokio::test]
async fn step_retries_back_off() {
    let step = Step::skill("boom", "flujo.builtins.fail", json!({})).with_retries(3);
    let flujo = Flujo::builder(Pipeline::new("p", vec![step])).build().unwrap();
    let started = Instant::now();
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.step_history[0].attempts, 4);
    // 100, 200 and 400 ms, each at least halved by the jitter.
    assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
}

/// A model the run can reach that cannot be called (no key; strict pricing without a price) stops the run
/// before its first step: the step with side effects before it never runs.
#[tokio::test]
async fn every_model_is_checked_before_the_first_step() {
    let counter = CallCounter::default();
    let pipeline =
        Pipeline::new("p", vec![Step::skill("effect", "test.effect", json!({})), model_step("ask", json!({}))]);
    // The public endpoint and no key in the (empty) environment.
    let flujo = runner(pipeline.clone(), LlmRegistry::offline().unwrap(), &counter);
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let e = r.error.unwrap();
    assert_eq!(e.kind, "missing_api_key");
    assert!(e.message.contains("OPENAI_API_KEY"), "{}", e.message);
    assert_eq!(CountingSkill::total(&counter), 0, "no step ran");
    assert!(r.step_history.is_empty());

    let fake = FakeProvider::start().await.unwrap();
    let strict = fake.registry(PricingTable::new().strict(true)).unwrap();
    let r = runner(pipeline, strict, &counter).run(json!("q")).await.unwrap();
    assert_eq!(r.error.unwrap().kind, "pricing_not_configured");
    assert_eq!(CountingSkill::total(&counter), 0);
    assert_eq!(fake.call_count(), 0);
}

/// A refusal fails the step; a cut-off text answer completes with a warning; the finish reason is recorded.
#[tokio::test]
async fn refusals_and_cut_off_answers_are_recorded() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::Refusal("I won't.".into()));
    let models = fake.registry(PricingTable::new()).unwrap();
    let flujo = runner(Pipeline::new("p", vec![model_step("ask", json!({}))]), models, &CallCounter::default());
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(fake.call_count(), 1, "a refusal is not retried");
    assert!(r.error.unwrap().message.contains("refused"));
    assert_eq!(r.step_history[0].metadata["finish_reason"], "stop");
    assert_eq!(r.step_history[0].tokens, DEFAULT_USAGE);

    fake.push_reply(ScriptedReply::CutOff("Once upon".into()));
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    let meta = &r.step_history[0].metadata;
    assert_eq!(meta["finish_reason"], "length");
    assert!(meta["warnings"][0].as_str().unwrap().contains("cut off"), "{meta:?}");
}

/// A parallel step stopped by the budget keeps what its finished branches paid for: their outputs, tokens
/// and cost are in the result and its history.
#[tokio::test]
async fn a_parallel_step_stopped_by_the_budget_shows_its_paid_work() {
    let fake = FakeProvider::start().await.unwrap();
    for _ in 0..4 {
        fake.push_reply(ScriptedReply::Text("done".into()));
    }
    let models = fake.registry(PricingTable::new()).unwrap();
    let settings = json!({"model_settings": {"max_tokens": 10}});
    // Input "x": a reservation of 1/4 + 16 prompt tokens + 10 = 27 tokens; three fit in 90, the fourth not.
    let branches: Vec<Branch> =
        ["a", "b", "c", "d"].iter().map(|n| Branch::new(*n, vec![model_step(n, settings.clone())])).collect();
    let spec = {
        let mut spec = ParallelSpec::default();
        spec.branches = branches;
        spec.merge_strategy = Default::default();
        spec.on_branch_failure = Default::default();
        spec
    };
    let par = Step::new("fan", StepKind::Parallel(spec));
    let flujo = Flujo::builder(Pipeline::new("p", vec![par]))
        .models(Arc::new(models))
        .usage_limits({
            let mut limits = UsageLimits::default();
            limits.total_tokens_limit = Some(90);
            limits
        })
        .build()
        .unwrap();
    let r = flujo.run(json!("x")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap().kind, "usage_limit_exceeded");
    assert_eq!(fake.call_count(), 3);
    assert_eq!(r.total_tokens, 3 * DEFAULT_USAGE.total());
    let fan = r.step_history.iter().find(|s| s.name == "fan").expect("the parallel step is in the history");
    assert_eq!(fan.tokens.total(), 3 * DEFAULT_USAGE.total());
    assert_eq!(fan.output.as_object().unwrap().len(), 3, "{}", fan.output);
    assert_eq!(r.output.as_ref().unwrap(), &*fan.output);
}

/// The same for a map (concurrent and sequential) and a loop: the finished items' or iterations' paid work is
/// kept in the stopped step's record.
#[tokio::test]
async fn maps_and_loops_stopped_by_the_budget_show_their_paid_work() {
    for concurrency in [1, 4] {
        let fake = FakeProvider::start().await.unwrap();
        for _ in 0..4 {
            fake.push_reply(ScriptedReply::Text("done".into()));
        }
        let models = fake.registry(PricingTable::new()).unwrap();
        let body = vec![model_step("each", json!({"model_settings": {"max_tokens": 10}}))];
        let map = Step::new(
            "each_item",
            StepKind::Map({
                let mut spec = MapSpec::default();
                spec.body = body;
                spec.concurrency = concurrency;
                spec
            }),
        );
        let flujo = Flujo::builder(Pipeline::new("p", vec![map]))
            .models(Arc::new(models))
            .usage_limits({
                let mut limits = UsageLimits::default();
                limits.total_tokens_limit = Some(90);
                limits
            })
            .build()
            .unwrap();
        // Concurrent: three reservations fit at once; sequential: each call's real 15 tokens are spent
        // before the next reservation of 27, so five would fit — four items, the fourth is refused only
        // concurrently.
        let r = flujo.run(json!(["a", "b", "c", "d"])).await.unwrap();
        if concurrency == 1 {
            assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
            continue;
        }
        assert_eq!(r.error.as_ref().unwrap().kind, "usage_limit_exceeded");
        let m = r.step_history.iter().find(|s| s.name == "each_item").expect("the map step is in the history");
        assert_eq!(m.tokens.total(), 3 * DEFAULT_USAGE.total(), "{concurrency}");
        assert_eq!(r.total_tokens, 3 * DEFAULT_USAGE.total());
        assert_eq!(m.metadata["stopped_by"], "usage_limit_exceeded");
    }
    // A loop: the third iteration's reservation does not fit after two paid iterations.
    let fake = FakeProvider::start().await.unwrap();
    for _ in 0..3 {
        fake.push_reply_with_usage(ScriptedReply::Text("x".into()), TokenUsage::new(20, 10));
    }
    let models = fake.registry(PricingTable::new()).unwrap();
    let body = vec![model_step("turn", json!({"model_settings": {"max_tokens": 10}}))];
    let lp = Step::new("again", StepKind::Loop(serde_json::from_value(json!({"body": [], "max_loops": 5})).unwrap()));
    let lp = match lp.kind {
        StepKind::Loop(mut l) => {
            l.body = body;
            Step::new("again", StepKind::Loop(l))
        }
        _ => unreachable!(),
    };
    let flujo = Flujo::builder(Pipeline::new("p", vec![lp]))
        .models(Arc::new(models))
        .usage_limits({
            let mut limits = UsageLimits::default();
            limits.total_tokens_limit = Some(80);
            limits
        })
        .build()
        .unwrap();
    let r = flujo.run(json!("x")).await.unwrap();
    assert_eq!(r.error.as_ref().unwrap().kind, "usage_limit_exceeded");
    assert_eq!(fake.call_count(), 2);
    let l = r.step_history.iter().find(|s| s.name == "again").expect("the loop step is in the history");
    assert_eq!(l.tokens.total(), 60);
    assert_eq!(l.metadata["iterations"], 2);
    assert_eq!(*l.output, json!("x"));
}

/// A step's own `config: {temperature, top_p, max_tokens}` (SPEC §3) reaches the model call, over the agent's
/// `model_settings`; without them the agent's settings apply.
#[tokio::test]
async fn step_sampling_settings_override_the_agents() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::Text("a".into()));
    fake.push_reply(ScriptedReply::Text("b".into()));
    let models = fake.registry(PricingTable::new().with_price("openai", "*", PRICE)).unwrap();
    let settings = json!({"model_settings": {"temperature": 0.9, "top_p": 0.5, "max_tokens": 50}});
    let mut tuned = model_step("tuned", settings.clone());
    tuned.config.temperature = Some(0.2);
    tuned.config.max_tokens = Some(7);
    let plain = model_step("plain", settings);
    let flujo = runner(Pipeline::new("p", vec![tuned, plain]), models, &CallCounter::default());
    let r = flujo.run(json!("q")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    let calls = fake.calls();
    assert_eq!(calls[0].body["temperature"], json!(0.2));
    assert_eq!(calls[0].body["top_p"], json!(0.5));
    assert_eq!(calls[0].body["max_tokens"], json!(7));
    assert_eq!(calls[1].body["temperature"], json!(0.9));
    assert_eq!(calls[1].body["max_tokens"], json!(50));
}
