//! The model layer against the fake provider server over real HTTP on 127.0.0.1 (nothing reaches the
//! internet): structured output (repair, re-ask, exhaustion), retries, typed errors, secrets, tool calling,
//! both wire formats, pricing and the mock models.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flujo_core::{ContextSnapshot, Interrupt, ModelRegistry, Skill, SkillCall, TokenUsage};
use flujo_llm::testing::{FakeProvider, ScriptedReply, DEFAULT_USAGE, FAKE_API_KEY};
use flujo_llm::{
    ChatMessage, ChatSettings, LlmConfig, LlmError, LlmRegistry, Price, PricingError, PricingTable, ProviderConfig,
    ProviderKind, RetryPolicy, StructuredOutput, ToolChoice, ToolSpec,
};
use serde_json::{json, Value};

const PROVIDERS: [&str; 2] = ["openai", "anthropic"];

fn schema() -> Value {
    json!({"type": "object", "required": ["city", "population"], "properties": {
        "city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}}})
}

fn call(input: Value) -> SkillCall {
    {
        let mut call = SkillCall::new(input);
        call.run_id = Arc::from("run-1");
        call.path = Arc::from("0");
        call.step = Arc::from("ask");
        call.attempt = 1;
        call.idempotency_key = Arc::from("run-1/0");
        call.context = ContextSnapshot::default();
        call.deltas = None;
        call.this = None;
        call
    }
}

fn endpoint(provider: &str) -> &'static str {
    if provider == "openai" {
        "/v1/chat/completions"
    } else {
        "/v1/messages"
    }
}

/// The text of every message of a logged request, in order (both wire shapes).
fn message_texts(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = body.get("system").and_then(Value::as_str) {
        out.push(s.to_owned());
    }
    for m in body["messages"].as_array().unwrap() {
        match &m["content"] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(blocks) => {
                for b in blocks {
                    for key in ["text", "content"] {
                        if let Some(s) = b.get(key).and_then(Value::as_str) {
                            out.push(s.to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn structured_output_is_repaired_from_a_fenced_reply() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Text(
        "Here is the data you asked for:\n```json\n{\"city\": \"Lima\", \"population\": 10000000,}\n```".into(),
    ));
    let agent = registry.resolve_agent("openai:gpt-test", &json!({"output_schema": schema()})).unwrap();
    let answer = agent.run(&json!("largest city of Peru?"), None).await.unwrap();
    assert_eq!(answer.output, json!({"city": "Lima", "population": 10000000}));
    assert_eq!(answer.calls, 1);
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let format = &calls[0].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["schema"], schema());
    assert_eq!(format["json_schema"]["strict"], false);
    assert_eq!(format["json_schema"]["name"], "output");
}

#[tokio::test]
async fn schema_violation_is_reasked_with_the_error_then_accepted() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let price = Price::new(1.0, 2.0);
        let registry = fake.registry(PricingTable::new().with_price(provider, "m", price)).unwrap();
        fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": "ten million"})));
        fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
        let agent = registry.resolve_agent(&format!("{provider}:m"), &json!({"output_schema": schema()})).unwrap();
        let out = agent.call(call(json!({"country": "Peru"}))).await.unwrap();
        assert_eq!(out.output, json!({"city": "Lima", "population": 10000000}), "{provider}");
        assert_eq!(out.tokens, TokenUsage::new(20, 10), "{provider}");
        assert!((out.cost_usd - price.cost(out.tokens)).abs() < 1e-12);

        let calls = fake.calls();
        assert_eq!(calls.len(), 2, "{provider}");
        assert!(calls.iter().all(|c| c.path == endpoint(provider)));
        let first = message_texts(&calls[0].body);
        let second = message_texts(&calls[1].body);
        assert!(!first.iter().any(|t| t.contains("does not satisfy")), "{provider}: {first:?}");
        let reask = second.last().unwrap();
        assert!(reask.contains("does not satisfy the required JSON Schema"), "{provider}: {reask}");
        assert!(reask.contains("/population") && reask.contains("integer"), "{provider}: {reask}");
        // The rejected answer is in the transcript, before the re-ask.
        assert!(second.iter().any(|t| t.contains("ten million")), "{provider}: {second:?}");
    }
}

#[tokio::test]
async fn exhausted_reasks_fail_naming_the_schema_error() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Json(json!({"city": "Lima"})));
    }
    let agent = registry.resolve_agent("anthropic:m", &json!({"output_schema": schema(), "max_retries": 2})).unwrap();
    let err = agent.run(&json!("q"), None).await.unwrap_err();
    match &err {
        LlmError::SchemaViolation { attempts, violation, usage } => {
            assert_eq!(*attempts, 3);
            assert!(violation.contains("\"population\" is a required property"), "{violation}");
            assert_eq!(usage.total(), 3 * DEFAULT_USAGE.total());
        }
        other => panic!("expected a schema violation, got {other:?}"),
    }
    assert_eq!(fake.call_count(), 3);
    // Through the Skill interface: a step failure carrying the same message and the usage of the three
    // billed answers; not retried at the step level (the re-asks were this call's retries).
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Text("not json at all".into()));
    }
    let skill_err = agent.call(call(json!("q"))).await.unwrap_err();
    assert!(skill_err.message.contains("not valid JSON"), "{}", skill_err.message);
    assert!(skill_err.message.contains("after 3 attempt(s)"), "{}", skill_err.message);
    assert!(!skill_err.retryable);
    assert_eq!(skill_err.tokens.total(), 3 * DEFAULT_USAGE.total());
}

/// A failed call is reconciled to what the provider billed: the usage of every answer before the failure
/// (priced), nothing for requests that failed, and nothing at all when no request was sent.
#[tokio::test]
async fn failed_calls_carry_the_usage_the_provider_reported() {
    let fake = FakeProvider::start().await.unwrap();
    let price = Price::new(1.0, 2.0);
    let registry = fake.registry(PricingTable::new().with_price("openai", "*", price)).unwrap();
    let agent = registry.resolve_agent("openai:m", &json!({"output_schema": schema(), "max_retries": 1})).unwrap();
    // One billed invalid answer, then the re-ask fails with 500s: the error keeps the first answer's usage.
    fake.push_reply_with_usage(ScriptedReply::Json(json!({"city": "Lima"})), TokenUsage::new(100, 20));
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Status { code: 500, retry_after: None });
    }
    let e = agent.call(call(json!("q"))).await.unwrap_err();
    assert_eq!(e.tokens, TokenUsage::new(100, 20));
    assert!((e.cost_usd - 0.14).abs() < 1e-9, "{}", e.cost_usd);
    assert!(
        e.message.contains("after 3 attempt(s)") && e.message.contains("(4 requests in this call)"),
        "{}",
        e.message
    );
    assert_eq!(fake.call_count(), 4);
    // A 500 with nothing billed costs nothing.
    let plain = registry.resolve_agent("openai:m", &Value::Null).unwrap();
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Status { code: 500, retry_after: None });
    }
    let e = plain.call(call(json!("q"))).await.unwrap_err();
    assert_eq!((e.tokens.total(), e.cost_usd), (0, 0.0));
    assert!(!e.retryable, "the HTTP client already retried it");
    // No key: no request, no usage.
    let offline = LlmRegistry::offline().unwrap().resolve_agent("openai:gpt-4o", &Value::Null).unwrap();
    let e = offline.call(call(json!("q"))).await.unwrap_err();
    assert_eq!((e.tokens.total(), e.cost_usd), (0, 0.0));
}

/// A `Retry-After` given as an HTTP-date is honoured like one in seconds; one longer than the policy waits
/// ends the call at once and is carried to the step (which must not retry sooner).
#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let agent = registry.resolve_agent("openai:m", &Value::Null).unwrap();
    let in_two_s = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    fake.push_reply(ScriptedReply::StatusRetryAfter { code: 503, retry_after: in_two_s });
    fake.push_reply(ScriptedReply::Text("later".into()));
    let started = Instant::now();
    assert_eq!(agent.run(&json!("x"), None).await.unwrap().output, json!("later"));
    assert!(started.elapsed() >= Duration::from_millis(900), "the date was not honoured: {:?}", started.elapsed());
    // 120 s is longer than the policy waits (5 s): one request, and the pause travels with the error.
    fake.push_reply(ScriptedReply::Status { code: 503, retry_after: Some(120) });
    let before = fake.call_count();
    let e = agent.call(call(json!("x"))).await.unwrap_err();
    assert_eq!(fake.call_count(), before + 1);
    assert_eq!(e.retry_after, Some(Duration::from_secs(120)));
    assert!(e.message.contains("after 1 attempt(s)") && e.message.contains("retry after 120s"), "{}", e.message);
    assert!(!e.retryable);
}

/// Refusals fail the call; an answer cut off at max_tokens fails structured output and warns for text;
/// the finish reason is reported in the skill's metadata.
#[tokio::test]
async fn refusals_and_cut_off_answers_are_not_silent() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let registry = fake.registry(PricingTable::new()).unwrap();
        let text = registry.resolve_agent(&format!("{provider}:m"), &Value::Null).unwrap();
        fake.push_reply(ScriptedReply::Refusal("I can't help with that.".into()));
        let e = text.call(call(json!("x"))).await.unwrap_err();
        assert!(e.message.contains("refused") && e.message.contains("I can't help with that."), "{}", e.message);
        assert!(!e.retryable);
        assert_eq!(e.tokens, DEFAULT_USAGE, "{provider}: a refusal is billed");

        fake.push_reply(ScriptedReply::CutOff("The answer is".into()));
        let out = text.call(call(json!("x"))).await.unwrap();
        assert_eq!(out.output, json!("The answer is"));
        let reason = if provider == "openai" { "length" } else { "max_tokens" };
        assert_eq!(out.metadata["finish_reason"], reason, "{provider}");
        assert!(out.metadata["warnings"][0].as_str().unwrap().contains("cut off at max_tokens"), "{provider}");

        let structured = registry
            .resolve_agent(&format!("{provider}:m"), &json!({"output_schema": schema(), "max_retries": 2}))
            .unwrap();
        fake.push_reply(ScriptedReply::CutOff("{\"city\": \"Li".into()));
        let before = fake.call_count();
        let e = structured.call(call(json!("x"))).await.unwrap_err();
        assert!(e.message.contains("cut off at max_tokens"), "{provider}: {}", e.message);
        assert_eq!(fake.call_count(), before + 1, "{provider}: a cut-off answer is not re-asked");
        assert_eq!(e.metadata["finish_reason"], reason);

        fake.push_reply(ScriptedReply::Text("fine".into()));
        let out = text.call(call(json!("x"))).await.unwrap();
        assert!(out.metadata.get("warnings").is_none());
        assert!(out.metadata.contains_key("finish_reason"));
    }
}

/// OpenAI reasoning models get `max_completion_tokens` (they refuse `max_tokens`); `model_settings` may choose.
#[tokio::test]
async fn reasoning_models_get_max_completion_tokens() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    for (model, settings, field, value) in [
        ("openai:o3-mini", json!({}), "max_completion_tokens", 4096),
        ("openai:gpt-5-mini", json!({"model_settings": {"max_tokens": 50}}), "max_completion_tokens", 50),
        ("openai:gpt-4o", json!({"model_settings": {"max_completion_tokens": 70}}), "max_completion_tokens", 70),
        (
            "openai:o1",
            json!({"model_settings": {"max_tokens": 30, "token_limit_param": "max_tokens"}}),
            "max_tokens",
            30,
        ),
        ("openai:gpt-4o", json!({}), "max_tokens", 4096),
        ("anthropic:claude-x", json!({"model_settings": {"max_completion_tokens": 80}}), "max_tokens", 80),
    ] {
        fake.push_reply(ScriptedReply::Text("ok".into()));
        registry.resolve_agent(model, &settings).unwrap().run(&json!("x"), None).await.unwrap();
        let body = fake.calls().last().unwrap().body.clone();
        assert_eq!(body[field], value, "{model} {settings}: {body}");
        let bounds = body.as_object().unwrap().keys().filter(|k| k.starts_with("max_")).count();
        assert_eq!(bounds, 1, "{model}: exactly one bound is sent: {body}");
    }
    let both = json!({"model_settings": {"max_tokens": 1, "max_completion_tokens": 2}});
    assert!(registry.resolve_agent("openai:o1", &both).is_err());
}

#[tokio::test]
async fn rate_limit_with_retry_after_then_success() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let registry = fake.registry(PricingTable::new()).unwrap();
        fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(1) });
        fake.push_reply(ScriptedReply::Text("after the wait".into()));
        let agent = registry.resolve_agent(&format!("{provider}:m"), &Value::Null).unwrap();
        let started = Instant::now();
        let answer = agent.run(&json!("hi"), None).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
        assert_eq!(answer.output, json!("after the wait"));
        assert_eq!(fake.call_count(), 2);
    }
}

#[tokio::test]
async fn transient_errors_are_retried_a_bounded_number_of_times() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let agent = registry.resolve_agent("openai:m", &Value::Null).unwrap();
    // 503 twice, then success (3 attempts allowed).
    fake.push_reply(ScriptedReply::Status { code: 503, retry_after: None });
    fake.push_reply(ScriptedReply::Status { code: 502, retry_after: None });
    fake.push_reply(ScriptedReply::Text("ok".into()));
    assert_eq!(agent.run(&json!("x"), None).await.unwrap().output, json!("ok"));
    assert_eq!(fake.call_count(), 3);
    // Three 500s: a Server error after 3 attempts.
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Status { code: 500, retry_after: None });
    }
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Server { status: 500, attempts: 3, .. }), "{err:?}");
    assert_eq!(fake.call_count(), 6);
    // Persistent 429: RateLimited.
    for _ in 0..3 {
        fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(0) });
    }
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::RateLimited { attempts: 3, .. }), "{err:?}");
    // A Retry-After longer than the policy allows ends the call at once.
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(3600) });
    let before = fake.call_count();
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::RateLimited { attempts: 1, retry_after: Some(d), .. } if d.as_secs() == 3600));
    assert_eq!(fake.call_count(), before + 1);
}

#[tokio::test]
async fn bad_request_carries_the_provider_message_and_is_not_retried() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let registry = fake.registry(PricingTable::new()).unwrap();
        fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
        let agent = registry.resolve_agent(&format!("{provider}:m"), &Value::Null).unwrap();
        let err = agent.run(&json!("x"), None).await.unwrap_err();
        assert!(
            matches!(&err, LlmError::BadRequest { status: 400, message, .. } if message == "scripted error 400"),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        assert_eq!(fake.call_count(), 1);
        let skill_err = agent.call(call(json!("x"))).await;
        assert!(skill_err.is_err());
    }
}

#[tokio::test]
async fn auth_errors_never_show_the_key() {
    const WRONG: &str = "sk-wrong-secret-4242";
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        fake.require_api_key(FAKE_API_KEY);
        let registry = fake.registry_with_key(PricingTable::new(), WRONG).unwrap();
        let agent = registry.resolve_agent(&format!("{provider}:m"), &Value::Null).unwrap();
        let err = agent.run(&json!("x"), None).await.unwrap_err();
        assert!(matches!(err, LlmError::Auth { status: 401, .. }), "{err:?}");
        assert!(!err.is_retryable());
        let skill_err = agent.call(call(json!("x"))).await.unwrap_err();
        assert!(!skill_err.retryable);
        for text in
            [err.to_string(), format!("{err:?}"), skill_err.message, format!("{registry:?}"), format!("{agent:?}")]
        {
            assert!(!text.contains(WRONG) && !text.contains("wrong-secret"), "{provider}: key leaked in {text}");
        }
        // The key was sent (the server saw it), but the log redacts it.
        let calls = fake.calls();
        assert_eq!(calls.len(), 2, "auth failures are not retried");
        let header = if provider == "openai" { "authorization" } else { "x-api-key" };
        assert_eq!(calls[0].headers.get(header).map(String::as_str), Some("[REDACTED]"));
    }
}

#[tokio::test]
async fn the_right_key_and_headers_are_sent() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        fake.require_api_key(FAKE_API_KEY);
        let registry = fake.registry(PricingTable::new()).unwrap();
        fake.push_reply(ScriptedReply::Text("hello".into()));
        let agent = registry
            .resolve_agent(
                &format!("{provider}:m-1"),
                &json!({"system_prompt": "You are terse.", "model_settings": {"temperature": 0.3, "max_tokens": 64}}),
            )
            .unwrap();
        let out = agent.call(call(json!({"q": "hi"}))).await.unwrap();
        assert_eq!(out.output, json!("hello"));
        assert_eq!(out.tokens, DEFAULT_USAGE);
        let body = &fake.calls()[0].body;
        assert_eq!(body["model"], "m-1");
        assert_eq!(body["temperature"], 0.3);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(message_texts(body), vec!["You are terse.".to_owned(), "{\"q\":\"hi\"}".to_owned()]);
        if provider == "anthropic" {
            assert_eq!(fake.calls()[0].headers["anthropic-version"], "2023-06-01");
            assert_eq!(body["system"], "You are terse.");
        } else {
            assert_eq!(body["messages"][0]["role"], "system");
        }
    }
}

#[tokio::test]
async fn malformed_replies_timeouts_and_network_errors_are_typed() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let agent = registry.resolve_agent("openai:m", &Value::Null).unwrap();
    fake.push_reply(ScriptedReply::Garbage);
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(&err, LlmError::Malformed { message, .. } if message.contains("not JSON")), "{err:?}");

    let slow = registry.resolve_agent("anthropic:m", &json!({"timeout": 0.2})).unwrap();
    fake.push_reply(ScriptedReply::Delayed(Duration::from_secs(2), Box::new(ScriptedReply::Text("late".into()))));
    let started = Instant::now();
    let err = slow.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A port nothing listens on: connection refused, retried, then Network.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let retry = RetryPolicy { max_attempts: 2, base_delay: Duration::from_millis(5), ..RetryPolicy::default() };
    let config = LlmConfig::default().with_provider(
        "openai",
        ProviderConfig::new(ProviderKind::OpenAi, format!("http://127.0.0.1:{closed}/v1"), Some("k")).with_retry(retry),
    );
    let offline = LlmRegistry::with_env(config, |_| None).unwrap();
    let err = offline.resolve_agent("openai:m", &Value::Null).unwrap().run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Network { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn missing_key_for_a_public_endpoint_fails_without_a_request() {
    // No config, no environment: `openai:` points at the public endpoint, which needs a key.
    let registry = LlmRegistry::offline().unwrap();
    let agent = registry.resolve_agent("openai:gpt-4o", &Value::Null).unwrap();
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(&err, LlmError::MissingApiKey { env, .. } if env == "OPENAI_API_KEY"), "{err:?}");
}

#[tokio::test]
async fn tool_call_round_trip() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let registry = fake.registry(PricingTable::new()).unwrap();
        let model = registry.chat_model(&format!("{provider}:m")).unwrap();
        let add = ToolSpec::new(
            "add",
            "Adds two numbers",
            json!({"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
        );
        fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
        fake.push_reply(ScriptedReply::Text("The sum is 5.".into()));

        let mut messages = vec![ChatMessage::system("Use tools."), ChatMessage::user("2 + 3?")];
        let settings = ChatSettings { tool_choice: ToolChoice::Auto, ..Default::default() };
        let reply = model.chat(&messages, std::slice::from_ref(&add), &settings).await.unwrap();
        assert_eq!(reply.tool_calls.len(), 1, "{provider}");
        let tool_call = &reply.tool_calls[0];
        assert_eq!((tool_call.name.as_str(), &tool_call.arguments), ("add", &json!({"a": 2, "b": 3})));
        assert_eq!(reply.usage, DEFAULT_USAGE);

        messages.push(reply.to_message());
        messages.push(ChatMessage::tool_result(tool_call.id.clone(), "5"));
        let final_reply = model.chat(&messages, std::slice::from_ref(&add), &settings).await.unwrap();
        assert_eq!(final_reply.content.as_deref(), Some("The sum is 5."));
        assert!(final_reply.tool_calls.is_empty());

        let calls = fake.calls();
        let (first, second) = (&calls[0].body, &calls[1].body);
        if provider == "openai" {
            assert_eq!(first["tools"][0]["type"], "function");
            assert_eq!(first["tools"][0]["function"]["name"], "add");
            assert_eq!(first["tool_choice"], "auto");
            let msgs = second["messages"].as_array().unwrap();
            let n = msgs.len();
            assert_eq!(msgs[n - 2]["tool_calls"][0]["id"], json!(tool_call.id));
            assert_eq!(msgs[n - 2]["tool_calls"][0]["function"]["arguments"], "{\"a\":2,\"b\":3}");
            assert_eq!(msgs[n - 1], json!({"role": "tool", "tool_call_id": tool_call.id, "content": "5"}));
        } else {
            assert_eq!(first["tools"][0]["name"], "add");
            assert_eq!(first["tools"][0]["input_schema"]["required"], json!(["a", "b"]));
            assert_eq!(first["tool_choice"], json!({"type": "auto"}));
            let msgs = second["messages"].as_array().unwrap();
            let n = msgs.len();
            assert_eq!(msgs[n - 2]["role"], "assistant");
            assert_eq!(msgs[n - 2]["content"][0]["type"], "tool_use");
            assert_eq!(msgs[n - 2]["content"][0]["input"], json!({"a": 2, "b": 3}));
            assert_eq!(msgs[n - 1]["role"], "user");
            assert_eq!(msgs[n - 1]["content"][0]["type"], "tool_result");
            assert_eq!(msgs[n - 1]["content"][0]["tool_use_id"], json!(tool_call.id));
        }
    }
}

#[tokio::test]
async fn non_object_schemas_are_wrapped_and_unwrapped() {
    let list = json!({"type": "array", "items": {"type": "string"}, "minItems": 1});
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let registry = fake.registry(PricingTable::new()).unwrap();
        fake.push_reply(ScriptedReply::Json(json!(["a", "b"])));
        let agent = registry.resolve_agent(&format!("{provider}:m"), &json!({"output_schema": list})).unwrap();
        assert_eq!(agent.run(&json!("list"), None).await.unwrap().output, json!(["a", "b"]), "{provider}");
        let body = &fake.calls()[0].body;
        if provider == "anthropic" {
            // Structured output is a single forced tool.
            assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "output"}));
            assert_eq!(body["tools"].as_array().unwrap().len(), 1);
            assert_eq!(body["tools"][0]["input_schema"]["properties"]["value"], list);
        } else {
            assert_eq!(body["response_format"]["json_schema"]["schema"]["properties"]["value"], list);
            assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        }
    }
}

#[tokio::test]
async fn strict_pricing_without_a_price_fails_before_any_call() {
    let fake = FakeProvider::start().await.unwrap();
    let strict = PricingTable::new().strict(true).with_price("openai", "priced", Price::FREE);
    let registry = fake.registry(strict).unwrap();
    fake.push_reply(ScriptedReply::Text("should never be sent".into()));

    // Build time: typed, and maps to the run-level interrupt.
    let err = registry.check_pricing("anthropic:unpriced").unwrap_err();
    assert_eq!(err, PricingError::NotConfigured { provider: "anthropic".into(), model: "unpriced".into() });
    assert_eq!(
        err.to_interrupt(),
        Some(Interrupt::PricingNotConfigured { provider: "anthropic".into(), model: "unpriced".into() })
    );
    let agent = registry.resolve_agent("anthropic:unpriced", &json!({"output_schema": schema()})).unwrap();
    assert!(matches!(agent.check_pricing(), Err(PricingError::NotConfigured { .. })));
    assert!(registry.resolve_agent("openai:priced", &Value::Null).unwrap().check_pricing().is_ok());

    // Call time: refused without a request.
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err.as_pricing(), Some(PricingError::NotConfigured { .. })), "{err:?}");
    let skill_err = agent.call(call(json!("x"))).await.unwrap_err();
    assert!(!skill_err.retryable);
    assert_eq!(fake.call_count(), 0, "no request may reach the provider");
    assert_eq!(fake.pending_replies(), 1);
}

#[tokio::test]
async fn mock_models_work_offline() {
    let registry = LlmRegistry::offline().unwrap();
    let models: &dyn ModelRegistry = &registry;
    let echo = models.resolve("mock:echo", &json!({"system_prompt": "ignored"})).unwrap();
    let input = json!({"nested": [1, {"x": "y"}]});
    let out = echo.call(call(input.clone())).await.unwrap();
    assert_eq!(out.output, input);
    assert_eq!((out.tokens.total(), out.cost_usd), (0, 0.0));

    let schema = json!({"type": "object", "required": ["id", "tags", "kind", "when"], "properties": {
        "id": {"type": "integer", "minimum": 10}, "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "kind": {"enum": ["a", "b"]}, "when": {"type": "string", "format": "date"}}, "additionalProperties": false});
    let json_agent = models.resolve("mock:json", &json!({"output_schema": schema})).unwrap();
    let out = json_agent.call(call(json!("anything"))).await.unwrap();
    let validator = StructuredOutput::new(schema).unwrap();
    validator.validate(&out.output).unwrap();
    assert_eq!(out.output["kind"], "a");
    assert_eq!(out.output["id"], 10);
    // Without a schema: an empty object, as JSON.
    let bare = models.resolve("mock:json", &Value::Null).unwrap();
    assert_eq!(bare.call(call(json!("x"))).await.unwrap().output, json!({}));
    assert_eq!(bare.estimate(&json!("x")).unwrap().cost_usd, 0.0);
}

#[tokio::test]
async fn cost_is_usage_times_price_and_the_estimate_bounds_it() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let price = Price::new(0.01, 0.03);
        let registry = fake.registry(PricingTable::new().strict(true).with_price(provider, "m", price)).unwrap();
        fake.push_reply_with_usage(ScriptedReply::Text("ok".into()), TokenUsage::new(1000, 500));
        let skill =
            registry.resolve(&format!("{provider}:m"), &json!({"model_settings": {"max_tokens": 500}})).unwrap();
        let input = json!("x".repeat(4000));
        let estimate = skill.estimate(&input).unwrap();
        let out = skill.call(call(input)).await.unwrap();
        assert_eq!(out.tokens, TokenUsage::new(1000, 500));
        assert!((out.cost_usd - 0.025).abs() < 1e-12, "{}", out.cost_usd);
        // ≈ 1000 prompt + 16 overhead + 500 max_tokens.
        assert_eq!(estimate.tokens, 1000 + 16 + 500);
        assert!(estimate.cost_usd >= out.cost_usd, "the reservation must bound the call");
    }
}

fn collecting_sink() -> (flujo_core::DeltaSink, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    (flujo_core::DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned())), seen)
}

/// With a delta sink the provider is asked for a stream; the text arrives piece by piece, in order, and the
/// reply (content, tool calls, usage, cost, structured output) is the same as without streaming.
#[tokio::test]
async fn streamed_replies_deliver_deltas_and_the_same_reply() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let price = Price::new(1.0, 2.0);
        let registry = fake.registry(PricingTable::new().with_price(provider, "m", price)).unwrap();

        // Text.
        fake.push_reply_with_usage(ScriptedReply::Text("Lima is the capital of Peru.".into()), TokenUsage::new(12, 7));
        let agent = registry.resolve_agent(&format!("{provider}:m"), &Value::Null).unwrap();
        let (sink, seen) = collecting_sink();
        let answer = agent.run_streaming(&json!("capital of Peru?"), None, Some(sink)).await.unwrap();
        assert_eq!(answer.output, json!("Lima is the capital of Peru."), "{provider}");
        assert_eq!(answer.usage, TokenUsage::new(12, 7), "{provider}");
        assert!((answer.cost_usd - price.cost(answer.usage)).abs() < 1e-12, "{provider}");
        let pieces = seen.lock().unwrap().clone();
        assert!(pieces.len() > 3, "{provider}: several pieces, not one: {pieces:?}");
        assert_eq!(pieces.concat(), "Lima is the capital of Peru.", "{provider}");
        let body = &fake.calls()[0].body;
        assert_eq!(body["stream"], true, "{provider}");
        if provider == "openai" {
            assert_eq!(body["stream_options"]["include_usage"], true);
        }

        // Structured output (Anthropic: the forced schema tool's JSON streams).
        fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
        let agent = registry.resolve_agent(&format!("{provider}:m"), &json!({"output_schema": schema()})).unwrap();
        let (sink, seen) = collecting_sink();
        let answer = agent.run_streaming(&json!("largest city?"), None, Some(sink)).await.unwrap();
        assert_eq!(answer.output, json!({"city": "Lima", "population": 10000000}), "{provider}");
        let streamed: Value = serde_json::from_str(&seen.lock().unwrap().concat()).unwrap();
        assert_eq!(streamed, json!({"city": "Lima", "population": 10000000}), "{provider}");

        // Tool calls rebuilt from their streamed pieces.
        let model = registry.chat_model(&format!("{provider}:m")).unwrap();
        fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
        let (sink, _) = collecting_sink();
        let settings = ChatSettings { stream: Some(sink), ..Default::default() };
        let add = ToolSpec::new("add", "Adds", json!({"type": "object"}));
        let reply = model.chat(&[ChatMessage::user("2 + 3?")], &[add], &settings).await.unwrap();
        assert_eq!(reply.tool_calls.len(), 1, "{provider}");
        assert_eq!(reply.tool_calls[0].name, "add");
        assert_eq!(reply.tool_calls[0].arguments, json!({"a": 2, "b": 3}), "{provider}");
        assert!(!reply.tool_calls[0].id.is_empty());
        assert_eq!(reply.usage, DEFAULT_USAGE, "{provider}");
    }
}

/// A stream cut off before its final event is a malformed reply (retryable at the step level), never a
/// silently truncated answer; errors before the stream starts are retried as usual.
#[tokio::test]
async fn truncated_streams_are_errors_and_early_failures_are_retried() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start().await.unwrap();
        let registry = fake.registry(PricingTable::new()).unwrap();
        let agent = registry.resolve_agent(&format!("{provider}:m"), &Value::Null).unwrap();
        fake.push_reply(ScriptedReply::Truncated("one two three four five six".into()));
        let (sink, _) = collecting_sink();
        let err = agent.run_streaming(&json!("count"), None, Some(sink)).await.unwrap_err();
        assert!(matches!(&err, LlmError::Malformed { message, .. } if message.contains("ended before")), "{err:?}");
        assert!(err.is_retryable());

        fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(0) });
        fake.push_reply(ScriptedReply::Text("ok now".into()));
        let (sink, seen) = collecting_sink();
        let answer = agent.run_streaming(&json!("again"), None, Some(sink)).await.unwrap();
        assert_eq!(answer.output, json!("ok now"), "{provider}");
        assert_eq!(seen.lock().unwrap().concat(), "ok now");
        assert_eq!(fake.call_count(), 3, "{provider}");
    }
}
