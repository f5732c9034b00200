//! `gen_ai.chat` spans of model calls, in a test binary of its own: `tracing`'s per-callsite interest cache
//! is process-wide, so a thread-local capture subscriber can miss spans whose callsites other tests, running
//! in parallel threads without a subscriber, registered first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flujo_core::TokenUsage;
use flujo_llm::testing::{FakeProvider, ScriptedReply};
use flujo_llm::PricingTable;
use serde_json::json;

const PROVIDERS: [&str; 2] = ["openai", "anthropic"];

/// Every model call opens a `gen_ai.chat` span with the OpenTelemetry GenAI attributes: provider, model,
/// request settings, and the usage and finish reason of the reply (or `error.type`).
#[tokio::test]
async fn model_calls_open_gen_ai_spans() {
    use flujo_llm::testing::SpanCapture;
    let (capture, spans) = SpanCapture::new();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let registry = fake.registry(PricingTable::new()).unwrap();
        let settings = json!({"model_settings": {"temperature": 0.25, "max_tokens": 64}});
        let agent = registry.resolve_agent(&format!("{provider}:gpt-span"), &settings).unwrap();
        fake.push_reply_with_usage(ScriptedReply::Text("hi".into()), TokenUsage::new(11, 4));
        agent.run(&json!("hello"), None).await.unwrap();
        fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
        agent.run(&json!("hello"), None).await.unwrap_err();
    }
    let spans = spans.lock().unwrap().clone();
    let chats: Vec<_> = spans.iter().filter(|s| s.name == "gen_ai.chat").collect();
    assert_eq!(chats.len(), 4, "{spans:?}");
    for (i, provider) in PROVIDERS.iter().enumerate() {
        let ok = &chats[2 * i].fields;
        assert_eq!(ok["gen_ai.operation.name"], "chat");
        assert_eq!(ok["gen_ai.provider.name"], *provider);
        assert_eq!(ok["gen_ai.request.model"], "gpt-span");
        assert_eq!(ok["gen_ai.request.max_tokens"], 64);
        assert_eq!(ok["gen_ai.request.temperature"], 0.25);
        assert_eq!(ok["gen_ai.usage.input_tokens"], 11, "{provider}: {ok:?}");
        assert_eq!(ok["gen_ai.usage.output_tokens"], 4);
        assert!(ok["gen_ai.response.finish_reasons"].is_string(), "{ok:?}");
        assert!(!ok.contains_key("error.type"));
        let failed = &chats[2 * i + 1].fields;
        assert_eq!(failed["error.type"], "bad_request", "{provider}: {failed:?}");
        assert!(!failed.contains_key("gen_ai.usage.input_tokens"));
    }
}
