//! Tracing spans of steps and model calls, in a test binary of its own: `tracing`'s per-callsite interest
//! cache is process-wide, so a thread-local capture subscriber can miss spans whose callsites other tests,
//! running in parallel threads without a subscriber, registered first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use flujo_core::*;
use flujo_engine::Flujo;
use flujo_llm::testing::{FakeProvider, ScriptedReply};
use flujo_llm::PricingTable;
use flujo_skills::{BuiltinRegistry, CallCounter, CountingSkill};
use flujo_store::MemoryStore;
use serde_json::json;

fn pipeline() -> Pipeline {
    let settings = json!({"model": "openai:gpt-test", "tools": ["test.count"], "max_turns": 5});
    let agent = AgentRef::Model { model: "openai:gpt-test".into(), settings };
    Pipeline::new("traced", vec![Step::new("solve", StepKind::Step { agent: Some(agent) }).with_retries(0)])
}

fn skills(counter: &CallCounter) -> Arc<BuiltinRegistry> {
    let mut r = BuiltinRegistry::new();
    CountingSkill::new(counter.clone()).register(&mut r, "test.count");
    Arc::new(r)
}

/// Each live step execution opens a `flujo.step` span carrying the step's usage and cost under the GenAI
/// attribute names; the model calls inside are `gen_ai.chat` spans nested in it; the step's journal record
/// names the model (for `lens spans`); the walk is a `flujo.run` span, the steps' parent.
#[tokio::test]
async fn steps_and_model_calls_are_traced_with_gen_ai_attributes() {
    use flujo_llm::testing::SpanCapture;
    use flujo_llm::Price;
    let (capture, spans) = SpanCapture::new();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply_with_usage(
        ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 1}) },
        TokenUsage::new(100, 10),
    );
    fake.push_reply_with_usage(ScriptedReply::Text("one".into()), TokenUsage::new(120, 3));
    let price = Price::new(1.0, 2.0);
    let counter = CallCounter::default();
    let store = Arc::new(MemoryStore::new());
    let flujo = Flujo::builder(pipeline())
        .store(store.clone())
        .skills(skills(&counter))
        .models(Arc::new(fake.registry(PricingTable::new().with_price("openai", "gpt-test", price)).unwrap()))
        .build()
        .unwrap();
    let r = flujo.run(json!("count")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    let spans = spans.lock().unwrap().clone();
    let step = spans.iter().find(|s| s.name == "flujo.step").expect("a step span");
    assert_eq!(step.fields["flujo.step.name"], "solve");
    assert_eq!(step.fields["flujo.step.kind"], "step");
    assert_eq!(step.fields["flujo.step.status"], "completed");
    assert_eq!(step.parent.as_deref(), Some("flujo.run"), "the walk's run span is the step span's parent");
    let run = spans.iter().find(|s| s.name == "flujo.run").expect("a run span");
    assert_eq!(run.fields["flujo.run_id"], r.run_id.as_str());
    assert_eq!(run.fields["flujo.pipeline"], "traced");
    assert_eq!(run.fields["flujo.resumed"], false);
    assert_eq!(run.fields["flujo.status"], "completed");
    assert_eq!(run.fields["flujo.total_tokens"], 233);
    assert_eq!(run.parent, None);
    assert_eq!(step.fields["gen_ai.usage.input_tokens"], 220);
    assert_eq!(step.fields["gen_ai.usage.output_tokens"], 13);
    let cost = step.fields["flujo.cost_usd"].as_f64().unwrap();
    assert!((cost - (0.22 + 0.026)).abs() < 1e-9, "{cost}");
    let chats: Vec<_> = spans.iter().filter(|s| s.name == "gen_ai.chat").collect();
    assert_eq!(chats.len(), 2);
    assert!(chats.iter().all(|c| c.parent.as_deref() == Some("flujo.step")), "{chats:?}");
    assert_eq!(chats[0].fields["gen_ai.request.model"], "gpt-test");
    let records = store.load_journal(&r.run_id).await.unwrap();
    let models: Vec<(&str, Option<&Value>)> =
        records.iter().map(|r| (r.kind.as_str(), r.metadata.get("model"))).collect();
    let m = json!("openai:gpt-test");
    assert_eq!(models, [("model_turn", Some(&m)), ("tool_call", None), ("model_turn", Some(&m)), ("step", Some(&m))]);
}
