//! `azure:DEPLOYMENT` (Azure OpenAI) against the fake provider's Azure shape over real HTTP on 127.0.0.1:
//! deployment paths with `api-version`, the v1 API, the `api-key` header and the Entra ID bearer token, the
//! Chat Completions body (structured output, tools, images and PDFs, reasoning effort), streaming, retries,
//! usage details and their cost, content-filter refusals, and keys kept out of errors and `Debug`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flujo_core::{DeltaSink, TokenUsage};
use flujo_llm::testing::{FakeProvider, ScriptedReply, DEFAULT_USAGE, FAKE_API_KEY};
use flujo_llm::{
    ChatMessage, ChatSettings, ContentPart, LlmConfig, LlmError, LlmRegistry, Price, PricingTable, ProviderConfig,
    ProviderKind, ReasoningEffort, ReasoningSettings, ToolChoice, ToolSpec,
};
use serde_json::{json, Value};

const DEPLOYMENT_PATH: &str = "/openai/deployments/gpt4o-prod/chat/completions";

fn schema() -> Value {
    json!({"type": "object", "required": ["city", "population"], "properties": {
        "city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}}})
}

fn collecting_sink() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned())), seen)
}

/// One plain turn of `model`.
async fn ask(registry: &LlmRegistry, model: &str) -> Result<flujo_llm::ChatReply, LlmError> {
    registry.chat_model(model).unwrap().chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await
}

/// A registry whose `azure` provider is the fake with `section` changed by `edit`, reading `env`.
fn azure_registry(
    fake: &FakeProvider,
    key: Option<&str>,
    edit: impl FnOnce(&mut ProviderConfig),
    env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> LlmRegistry {
    let mut section = fake.provider_config(ProviderKind::Azure, key.unwrap_or_default());
    if key.is_none() {
        section.api_key = None;
    }
    edit(&mut section);
    LlmRegistry::with_env(LlmConfig::default().with_provider("azure", section), env).unwrap()
}

#[tokio::test]
async fn text_goes_to_the_deployment_path_with_the_api_version_and_the_api_key_header() {
    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key(FAKE_API_KEY);
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Text("Lima.".into()));
    let agent = registry.resolve_agent("azure:gpt4o-prod", &json!({"system_prompt": "Be brief."})).unwrap();
    let answer = agent.run(&json!("capital of Peru?"), None).await.unwrap();
    assert_eq!(answer.output, json!("Lima."));
    assert_eq!(answer.request_id.as_deref(), Some("chatcmpl-1"));
    let call = &fake.calls()[0];
    assert_eq!(call.path, DEPLOYMENT_PATH);
    assert_eq!(call.headers["x-fake-query"], "api-version=2024-10-21");
    assert_eq!(call.headers["api-key"], "[REDACTED]", "the key travels in `api-key`");
    assert!(!call.headers.contains_key("authorization"));
    assert_eq!(call.body["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(call.body["messages"][1], json!({"role": "user", "content": "capital of Peru?"}));

    // A configured api-version; the v1 API (no dated version, the deployment as `model`); `preview`.
    for (version, path, query) in [
        ("2025-04-01-preview", DEPLOYMENT_PATH, Some("api-version=2025-04-01-preview")),
        ("v1", "/openai/v1/chat/completions", None),
        ("preview", "/openai/v1/chat/completions", Some("api-version=preview")),
    ] {
        let registry =
            azure_registry(&fake, Some(FAKE_API_KEY), |s| s.api_version = Some(version.to_owned()), |_| None);
        fake.push_reply(ScriptedReply::Text("ok".into()));
        let out = registry.resolve_agent("azure:gpt4o-prod", &Value::Null).unwrap().run(&json!("x"), None).await;
        assert_eq!(out.unwrap().output, json!("ok"), "{version}");
        let call = fake.calls().pop().unwrap();
        assert_eq!(call.path, path, "{version}");
        assert_eq!(call.headers.get("x-fake-query").map(String::as_str), query, "{version}");
        assert_eq!(call.body["model"], "gpt4o-prod", "{version}");
    }
}

#[tokio::test]
async fn an_entra_id_token_is_sent_as_a_bearer_token() {
    let fake = FakeProvider::start().await.unwrap();
    let token = "eyJ0eXAiOiJKV1Qi.entra-token.sig";
    fake.require_api_key(token);
    let registry =
        azure_registry(&fake, None, |_| {}, move |k| (k == "AZURE_OPENAI_AD_TOKEN").then(|| token.to_owned()));
    fake.push_reply(ScriptedReply::Text("hello".into()));
    let model = registry.chat_model("azure:gpt4o-prod").unwrap();
    assert!(model.check_ready().is_ok());
    let reply = model.chat(&[ChatMessage::user("hi")], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("hello"));
    let call = &fake.calls()[0];
    assert_eq!(call.path, DEPLOYMENT_PATH);
    assert_eq!(call.headers["authorization"], "[REDACTED]");
    assert!(!call.headers.contains_key("api-key"), "a token is not an API key");
    // An API key wins over the token (and is sent as `api-key`, which the fake refuses here).
    let registry = azure_registry(
        &fake,
        None,
        |_| {},
        move |k| match k {
            "AZURE_OPENAI_AD_TOKEN" => Some(token.to_owned()),
            "AZURE_OPENAI_API_KEY" => Some("az-key-1234".to_owned()),
            _ => None,
        },
    );
    let e = ask(&registry, "azure:d").await.unwrap_err();
    assert!(matches!(e, LlmError::Auth { status: 401, .. }), "{e:?}");
    assert!(fake.calls()[1].headers.contains_key("api-key"));
    assert!(!format!("{e} {e:?} {registry:?}").contains("az-key-1234"));
}

#[tokio::test]
async fn without_a_key_or_token_the_call_fails_naming_both_variables() {
    let env = |k: &str| (k == "AZURE_OPENAI_ENDPOINT").then(|| "https://res.openai.azure.com".to_owned());
    let registry = LlmRegistry::with_env(LlmConfig::default(), env).unwrap();
    let model = registry.chat_model("azure:gpt4o-prod").unwrap();
    let expect_missing = |e: LlmError| match e {
        LlmError::MissingApiKey { provider, env } => {
            assert_eq!((provider.as_str(), env.as_str()), ("azure", "AZURE_OPENAI_API_KEY or AZURE_OPENAI_AD_TOKEN"))
        }
        other => panic!("expected MissingApiKey, got {other:?}"),
    };
    expect_missing(model.check_ready().unwrap_err());
    // Nothing is sent (the endpoint does not exist: a request would be a network error).
    expect_missing(model.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap_err());
    let agent = registry.resolve_agent("azure:gpt4o-prod", &Value::Null).unwrap();
    expect_missing(agent.run(&json!("x"), None).await.unwrap_err());
}

#[tokio::test]
async fn structured_output_object_and_wrapped_schemas() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
    let agent = registry.resolve_agent("azure:gpt4o-prod", &json!({"output_schema": schema()})).unwrap();
    assert_eq!(agent.run(&json!("q"), None).await.unwrap().output, json!({"city": "Lima", "population": 10000000}));
    let format = &fake.calls()[0].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["schema"], schema());

    let list = json!({"type": "array", "items": {"type": "string"}});
    fake.push_reply(ScriptedReply::Json(json!(["a", "b"])));
    let agent = registry.resolve_agent("azure:gpt4o-prod", &json!({"output_schema": list})).unwrap();
    assert_eq!(agent.run(&json!("list"), None).await.unwrap().output, json!(["a", "b"]));
    let format = &fake.calls()[1].body["response_format"]["json_schema"];
    assert_eq!(format["schema"]["properties"]["value"], list);
    assert_eq!(format["schema"]["required"], json!(["value"]));
}

#[tokio::test]
async fn tool_call_round_trip_in_the_chat_completions_format() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let model = registry.chat_model("azure:gpt4o-prod").unwrap();
    let add = ToolSpec::new("add", "Adds", json!({"type": "object", "properties": {"a": {"type": "number"}}}));
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    fake.push_reply(ScriptedReply::Text("5".into()));
    let settings =
        ChatSettings { tool_choice: ToolChoice::Required, parallel_tool_calls: Some(false), ..Default::default() };
    let mut messages = vec![ChatMessage::user("2 + 3?")];
    let reply = model.chat(&messages, std::slice::from_ref(&add), &settings).await.unwrap();
    assert_eq!(reply.stop_reason.as_deref(), Some("tool_calls"));
    let call = reply.tool_calls[0].clone();
    assert_eq!((call.name.as_str(), &call.arguments), ("add", &json!({"a": 2, "b": 3})));
    messages.push(reply.to_message());
    messages.push(ChatMessage::tool_result(call.id.clone(), "5"));
    let last = model.chat(&messages, std::slice::from_ref(&add), &settings).await.unwrap();
    assert_eq!(last.content.as_deref(), Some("5"));

    let calls = fake.calls();
    let first = &calls[0].body;
    assert_eq!(
        first["tools"][0],
        json!({"type": "function", "function": {"name": "add", "description": "Adds",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}})
    );
    assert_eq!(
        (first["tool_choice"].as_str(), first["parallel_tool_calls"].as_bool()),
        (Some("required"), Some(false))
    );
    let msgs = calls[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["tool_calls"][0]["id"], json!(call.id));
    assert_eq!(msgs[1]["tool_calls"][0]["function"], json!({"name": "add", "arguments": "{\"a\":2,\"b\":3}"}));
    assert_eq!(msgs[2], json!({"role": "tool", "tool_call_id": call.id, "content": "5"}));
    assert!(calls.iter().all(|c| c.path == DEPLOYMENT_PATH));
}

#[tokio::test]
async fn streams_arrive_in_pieces_and_rebuild_the_same_reply() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let model = registry.chat_model("azure:gpt4o-prod").unwrap();
    let text = "Lima is the capital of Peru.";
    let messages = [ChatMessage::user("capital?")];
    fake.push_reply(ScriptedReply::Text(text.into()));
    let plain = model.chat(&messages, &[], &ChatSettings::default()).await.unwrap();
    fake.push_reply(ScriptedReply::Text(text.into()));
    let (sink, seen) = collecting_sink();
    let streamed = model.chat(&messages, &[], &ChatSettings { stream: Some(sink), ..Default::default() }).await;
    let streamed = streamed.unwrap();
    let pieces = seen.lock().unwrap().clone();
    assert!(pieces.len() > 3, "several pieces: {pieces:?}");
    assert_eq!(pieces.concat(), text);
    assert_eq!(
        (streamed.content, streamed.usage, streamed.stop_reason, streamed.response_model),
        (plain.content, plain.usage, plain.stop_reason, plain.response_model)
    );
    let body = &fake.calls()[1].body;
    assert_eq!((body["stream"].as_bool(), body["stream_options"]["include_usage"].as_bool()), (Some(true), Some(true)));

    // Structured output streams its JSON text.
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 1})));
    let agent = registry.resolve_agent("azure:gpt4o-prod", &json!({"output_schema": schema()})).unwrap();
    let (sink, seen) = collecting_sink();
    let answer = agent.run_streaming(&json!("q"), None, Some(sink)).await.unwrap();
    assert_eq!(answer.output, json!({"city": "Lima", "population": 1}));
    assert_eq!(serde_json::from_str::<Value>(&seen.lock().unwrap().concat()).unwrap(), answer.output);

    // A stream cut off before its end is malformed, never a short answer.
    fake.push_reply(ScriptedReply::Truncated("one two three four five six".into()));
    let (sink, _) = collecting_sink();
    let e = model.chat(&messages, &[], &ChatSettings { stream: Some(sink), ..Default::default() }).await.unwrap_err();
    assert!(matches!(&e, LlmError::Malformed { message, .. } if message.contains("ended before")), "{e:?}");
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let agent = registry.resolve_agent("azure:gpt4o-prod", &Value::Null).unwrap();
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(1) });
    fake.push_reply(ScriptedReply::Text("after the wait".into()));
    let started = Instant::now();
    assert_eq!(agent.run(&json!("x"), None).await.unwrap().output, json!("after the wait"));
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!(fake.call_count(), 2);
    // Longer than the policy waits (5 s): the call ends at once with the pause.
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(120) });
    let e = agent.run(&json!("x"), None).await.unwrap_err();
    assert_eq!(
        e,
        LlmError::RateLimited { provider: "azure".into(), attempts: 1, retry_after: Some(Duration::from_secs(120)) }
    );
    assert_eq!(fake.call_count(), 3);
    // Azure's error body (`{error: {code, message}}`): the message is kept.
    fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
    let e = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(
        matches!(&e, LlmError::BadRequest { status: 400, message, .. } if message == "scripted error 400"),
        "{e:?}"
    );
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_read_and_priced() {
    let fake = FakeProvider::start().await.unwrap();
    let price = Price::new(2.0, 8.0).with_cache_rates(0.5, 2.0).with_reasoning_rate(10.0);
    let registry = fake.registry(PricingTable::new().with_price("azure", "o4-mini-prod", price)).unwrap();
    let usage = TokenUsage::new(2000, 1000).with_cache(1500, 0).with_reasoning(600);
    fake.push_reply_with_usage(ScriptedReply::Text("ok".into()), usage);
    let answer = registry.resolve_agent("azure:o4-mini-prod", &Value::Null).unwrap().run(&json!("x"), None).await;
    let answer = answer.unwrap();
    assert_eq!(answer.usage, usage);
    // 500 × 2 + 1,500 × 0.5 + 400 × 8 + 600 × 10 per 1,000 = 1 + 0.75 + 3.2 + 6.
    assert!((answer.cost_usd - 10.95).abs() < 1e-9, "{}", answer.cost_usd);
    let body = &fake.calls()[0].body;
    assert_eq!(body["max_completion_tokens"], 4096, "o-series deployments get max_completion_tokens");
}

#[tokio::test]
async fn images_and_pdfs_travel_as_chat_completions_parts() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("chart.png");
    std::fs::write(&png, b"\x89PNG fake").unwrap();
    let parts = vec![
        ContentPart::text("Compare:"),
        ContentPart::image("https://example.test/cat.jpg"),
        ContentPart::image(png.to_str().unwrap()),
        ContentPart::document("data:application/pdf;base64,JVBERi0x"),
    ];
    fake.push_reply(ScriptedReply::Text("done".into()));
    let model = registry.chat_model("azure:gpt4o-prod").unwrap();
    model.chat(&[ChatMessage::user_parts(parts)], &[], &ChatSettings::default()).await.unwrap();
    let content = &fake.calls()[0].body["messages"][0]["content"];
    assert_eq!(content[0], json!({"type": "text", "text": "Compare:"}));
    assert_eq!(content[1], json!({"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}}));
    assert_eq!(content[2], json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORyBmYWtl"}}));
    assert_eq!(
        content[3],
        json!({"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}})
    );
}

#[tokio::test]
async fn reasoning_effort_is_sent_as_reasoning_effort() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Text("ok".into()));
    let settings = ChatSettings {
        reasoning: ReasoningSettings { effort: Some(ReasoningEffort::High), budget_tokens: None },
        ..Default::default()
    };
    registry.chat_model("azure:o3-prod").unwrap().chat(&[ChatMessage::user("x")], &[], &settings).await.unwrap();
    let body = &fake.calls()[0].body;
    assert_eq!(body["reasoning_effort"], "high");
    assert!(body.get("reasoning").is_none());
}

#[tokio::test]
async fn a_content_filter_stop_is_a_refusal_naming_the_category() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Refusal("ignored".into()));
    let reply = registry.chat_model("azure:gpt4o-prod").unwrap();
    let reply = reply.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(reply.stop_reason.as_deref(), Some("content_filter"));
    assert_eq!(reply.refusal.as_deref(), Some("the answer was stopped by the content filter (violence: high)"));
    // An agent fails with the refusal (billed), streamed or not.
    for stream in [false, true] {
        fake.push_reply(ScriptedReply::Refusal("ignored".into()));
        let agent = registry.resolve_agent("azure:gpt4o-prod", &Value::Null).unwrap();
        let sink = stream.then(|| collecting_sink().0);
        let e = agent.run_streaming(&json!("x"), None, sink).await.unwrap_err();
        match e {
            LlmError::Refused { message, usage, .. } => {
                assert!(message.starts_with("the answer was stopped by the content filter"), "{message}");
                assert_eq!(usage, DEFAULT_USAGE);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn keys_never_reach_errors_or_debug_output() {
    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key("the-right-key");
    let wrong = "az-wrong-key-0123456789";
    let registry = azure_registry(&fake, Some(wrong), |_| {}, |_| None);
    let model = registry.chat_model("azure:gpt4o-prod").unwrap();
    let e = model.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap_err();
    assert!(matches!(e, LlmError::Auth { status: 401, .. }), "{e:?}");
    // The fake echoes the offered key in its 401 body, as the service does; it never gets further.
    for text in [e.to_string(), format!("{e:?}"), format!("{registry:?}"), format!("{:?}", fake.calls())] {
        assert!(!text.contains(wrong), "{text}");
    }
    let token = "eyJ-secret-token-abcdef";
    let registry = azure_registry(&fake, None, |_| {}, move |k| (k == "AZURE_OPENAI_AD_TOKEN").then(|| token.into()));
    let e = ask(&registry, "azure:d").await.unwrap_err();
    for text in [e.to_string(), format!("{e:?}"), format!("{registry:?}"), format!("{:?}", fake.calls())] {
        assert!(!text.contains(token), "{text}");
    }
}
