//! `openai-responses:MODEL` (the OpenAI Responses API) against the fake provider's Responses shape over real
//! HTTP on 127.0.0.1: input items, instructions, structured output as `text.format`, function calls and their
//! outputs with encrypted reasoning sent back, images and PDFs, reasoning effort, named-event streams,
//! retries, usage details and their cost, truncation and refusals, and keys kept out of errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flujo_core::{DeltaSink, TokenUsage};
use flujo_llm::testing::{FakeProvider, ScriptedReply, DEFAULT_USAGE, FAKE_API_KEY};
use flujo_llm::{
    ChatMessage, ChatSettings, ContentPart, LlmConfig, LlmError, LlmRegistry, Price, PricingTable, ReasoningBlock,
    ReasoningEffort, ReasoningSettings, ToolChoice, ToolSpec,
};
use serde_json::{json, Value};

const PATH: &str = "/v1/responses";

fn schema() -> Value {
    json!({"type": "object", "required": ["city", "population"], "properties": {
        "city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}}})
}

fn collecting_sink() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned())), seen)
}

fn effort(e: ReasoningEffort) -> ChatSettings {
    ChatSettings { reasoning: ReasoningSettings { effort: Some(e), budget_tokens: None }, ..Default::default() }
}

#[tokio::test]
async fn text_with_instructions_and_the_bearer_key() {
    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key(FAKE_API_KEY);
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Text("Lima.".into()));
    let agent = registry
        .resolve_agent(
            "openai-responses:gpt-4.1",
            &json!({"system_prompt": "Be brief.", "model_settings": {"temperature": 0.3, "max_tokens": 200}}),
        )
        .unwrap();
    let answer = agent.run(&json!("capital of Peru?"), None).await.unwrap();
    assert_eq!(answer.output, json!("Lima."));
    assert_eq!(answer.request_id.as_deref(), Some("resp_1"));
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    let call = &fake.calls()[0];
    assert_eq!(call.path, PATH);
    assert_eq!(call.headers["authorization"], "[REDACTED]");
    let b = &call.body;
    assert_eq!(b["model"], "gpt-4.1");
    assert_eq!(b["instructions"], "Be brief.");
    assert_eq!(b["input"], json!([{"role": "user", "content": [{"type": "input_text", "text": "capital of Peru?"}]}]));
    assert_eq!((b["max_output_tokens"].as_u64(), b["temperature"].as_f64()), (Some(200), Some(0.3)));
    assert_eq!(b["store"], false);
    assert!(b.get("messages").is_none() && b.get("max_tokens").is_none() && b.get("include").is_none());
}

/// `[providers.NAME] kind = "openai-responses"` is the same API at another base URL.
#[tokio::test]
async fn a_configured_provider_of_the_responses_kind() {
    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key("proxy-key-123");
    let file: toml::Table = format!(
        "[providers.proxy]\nkind = \"openai-responses\"\nbase_url = \"{}\"\napi_key_env = \"PROXY_KEY\"\n",
        fake.openai_base_url()
    )
    .parse()
    .unwrap();
    let registry = LlmRegistry::with_env(LlmConfig::from_toml(&file).unwrap(), |k| {
        (k == "PROXY_KEY").then(|| "proxy-key-123".into())
    })
    .unwrap();
    fake.push_reply(ScriptedReply::Text("hi".into()));
    let reply = registry.chat_model("proxy:gpt-5-mini").unwrap();
    let reply = reply.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("hi"));
    assert_eq!(fake.calls()[0].path, PATH);
}

#[tokio::test]
async fn structured_output_as_text_format() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
    let agent = registry.resolve_agent("openai-responses:gpt-4.1", &json!({"output_schema": schema()})).unwrap();
    assert_eq!(agent.run(&json!("q"), None).await.unwrap().output, json!({"city": "Lima", "population": 10000000}));
    let format = &fake.calls()[0].body["text"]["format"];
    assert_eq!(format, &json!({"type": "json_schema", "name": "output", "schema": schema(), "strict": false}));

    let list = json!({"type": "array", "items": {"type": "string"}});
    fake.push_reply(ScriptedReply::Json(json!(["a", "b"])));
    let agent = registry.resolve_agent("openai-responses:gpt-4.1", &json!({"output_schema": list})).unwrap();
    assert_eq!(agent.run(&json!("list"), None).await.unwrap().output, json!(["a", "b"]));
    let format = &fake.calls()[1].body["text"]["format"];
    assert_eq!(format["schema"]["properties"]["value"], list);
    assert_eq!(format["strict"], true);
}

/// A reasoning model calls a tool; the next request carries its encrypted reasoning, the `function_call` and
/// the `function_call_output`, and the model answers.
#[tokio::test]
async fn tool_call_round_trip_with_encrypted_reasoning_sent_back() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let model = registry.chat_model("openai-responses:o4-mini").unwrap();
    let add = ToolSpec::new(
        "add",
        "Adds two numbers",
        json!({"type": "object", "required": ["a", "b"], "additionalProperties": false,
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
    );
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    fake.push_reply(ScriptedReply::Text("The sum is 5.".into()));
    let settings = ChatSettings {
        tool_choice: ToolChoice::Tool("add".into()),
        parallel_tool_calls: Some(false),
        ..effort(ReasoningEffort::Medium)
    };
    let mut messages = vec![ChatMessage::system("Use tools."), ChatMessage::user("2 + 3?")];
    let reply = model.chat(&messages, std::slice::from_ref(&add), &settings).await.unwrap();
    assert_eq!(reply.stop_reason.as_deref(), Some("tool_calls"));
    let call = reply.tool_calls[0].clone();
    assert_eq!((call.id.as_str(), call.name.as_str(), &call.arguments), ("call_1", "add", &json!({"a": 2, "b": 3})));
    assert_eq!(
        reply.reasoning,
        vec![ReasoningBlock {
            text: "**Adding** the two numbers.".into(),
            signature: Some("rs_1".into()),
            redacted: Some("enc_1".into())
        }]
    );
    messages.push(reply.to_message());
    messages.push(ChatMessage::tool_result(call.id.clone(), "5"));
    let last = model.chat(&messages, std::slice::from_ref(&add), &settings).await.unwrap();
    assert_eq!(last.content.as_deref(), Some("The sum is 5."));
    assert_eq!(last.stop_reason.as_deref(), Some("stop"));

    let calls = fake.calls();
    let first = &calls[0].body;
    assert_eq!(
        first["tools"],
        json!([{"type": "function", "name": "add", "description": "Adds two numbers",
            "parameters": add.input_schema, "strict": true}])
    );
    assert_eq!(first["tool_choice"], json!({"type": "function", "name": "add"}));
    assert_eq!(first["parallel_tool_calls"], false);
    assert_eq!(first["include"], json!(["reasoning.encrypted_content"]));
    let input = calls[1].body["input"].as_array().unwrap().clone();
    assert_eq!(input.len(), 4, "{input:?}");
    assert_eq!(input[0]["role"], "user");
    assert_eq!(
        input[1],
        json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
            "text": "**Adding** the two numbers."}], "encrypted_content": "enc_1"})
    );
    assert_eq!(
        input[2],
        json!({"type": "function_call", "call_id": "call_1", "name": "add",
        "arguments": "{\"a\":2,\"b\":3}"})
    );
    assert_eq!(input[3], json!({"type": "function_call_output", "call_id": "call_1", "output": "5"}));
    assert_eq!(calls[1].body["instructions"], "Use tools.");
}

#[tokio::test]
async fn streams_arrive_in_pieces_and_rebuild_the_same_reply() {
    let fake = FakeProvider::start().await.unwrap();
    let price = Price::new(1.0, 2.0);
    let registry = fake.registry(PricingTable::new().with_price("openai-responses", "*", price)).unwrap();
    let model = registry.chat_model("openai-responses:gpt-4.1").unwrap();
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
        (&streamed.content, streamed.usage, &streamed.stop_reason, &streamed.response_model),
        (&plain.content, plain.usage, &plain.stop_reason, &plain.response_model)
    );
    assert_eq!(streamed.request_id.as_deref(), Some("resp_2"));
    assert_eq!(fake.calls()[1].body["stream"], true);

    // Structured output streams its JSON text; the cost is the same as without streaming.
    fake.push_reply_with_usage(ScriptedReply::Json(json!({"city": "Lima", "population": 1})), TokenUsage::new(12, 7));
    let agent = registry.resolve_agent("openai-responses:gpt-4.1", &json!({"output_schema": schema()})).unwrap();
    let (sink, seen) = collecting_sink();
    let answer = agent.run_streaming(&json!("q"), None, Some(sink)).await.unwrap();
    assert_eq!(answer.output, json!({"city": "Lima", "population": 1}));
    assert_eq!(serde_json::from_str::<Value>(&seen.lock().unwrap().concat()).unwrap(), answer.output);
    assert!((answer.cost_usd - price.cost(TokenUsage::new(12, 7))).abs() < 1e-12);

    // A tool call and the reasoning item rebuilt from their events.
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    let (sink, _) = collecting_sink();
    let reasoning = registry.chat_model("openai-responses:o3").unwrap();
    let settings = ChatSettings { stream: Some(sink), ..effort(ReasoningEffort::Low) };
    let add = ToolSpec::new("add", "Adds", json!({"type": "object"}));
    let reply = reasoning.chat(&messages, &[add], &settings).await.unwrap();
    assert_eq!(reply.tool_calls[0].arguments, json!({"a": 2, "b": 3}));
    assert_eq!(reply.tool_calls[0].id, "call_4");
    assert_eq!(reply.reasoning[0].redacted.as_deref(), Some("enc_4"));
    assert_eq!(reply.usage, DEFAULT_USAGE);

    // A stream cut off before `response.completed` is malformed, never a short answer.
    fake.push_reply(ScriptedReply::Truncated("one two three four five six".into()));
    let (sink, _) = collecting_sink();
    let e = model.chat(&messages, &[], &ChatSettings { stream: Some(sink), ..Default::default() }).await.unwrap_err();
    assert!(matches!(&e, LlmError::Malformed { message, .. } if message.contains("ended before")), "{e:?}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let agent = registry.resolve_agent("openai-responses:gpt-4.1", &Value::Null).unwrap();
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(1) });
    fake.push_reply(ScriptedReply::Text("after the wait".into()));
    let started = Instant::now();
    assert_eq!(agent.run(&json!("x"), None).await.unwrap().output, json!("after the wait"));
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!(fake.call_count(), 2);
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(120) });
    let e = agent.run(&json!("x"), None).await.unwrap_err();
    assert_eq!(
        e,
        LlmError::RateLimited {
            provider: "openai-responses".into(),
            attempts: 1,
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(fake.call_count(), 3);
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_read_and_priced() {
    let fake = FakeProvider::start().await.unwrap();
    let price = Price::new(1.1, 4.4).with_cache_rates(0.275, 1.1).with_reasoning_rate(5.0);
    let registry = fake.registry(PricingTable::new().with_price("openai-responses", "o4-mini", price)).unwrap();
    let usage = TokenUsage::new(3000, 2000).with_cache(2000, 0).with_reasoning(1500);
    fake.push_reply_with_usage(ScriptedReply::Text("ok".into()), usage);
    let agent = registry.resolve_agent("openai-responses:o4-mini", &Value::Null).unwrap();
    let answer = agent.run(&json!("x"), None).await.unwrap();
    assert_eq!(answer.usage, usage);
    // 1,000 × 1.1 + 2,000 × 0.275 + 500 × 4.4 + 1,500 × 5 per 1,000 = 1.1 + 0.55 + 2.2 + 7.5.
    assert!((answer.cost_usd - 11.35).abs() < 1e-9, "{}", answer.cost_usd);
}

#[tokio::test]
async fn images_and_pdfs_travel_as_input_parts() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 fake").unwrap();
    let parts = vec![
        ContentPart::text("Summarize:"),
        ContentPart::image("https://example.test/cat.jpg"),
        ContentPart::image_bytes("image/png", b"\x89PNG"),
        ContentPart::Document {
            source: flujo_llm::MediaSource::parse(pdf.to_str().unwrap()),
            media_type: None,
            name: Some("report.pdf".into()),
        },
        ContentPart::document("https://example.test/paper.pdf"),
    ];
    fake.push_reply(ScriptedReply::Text("done".into()));
    let model = registry.chat_model("openai-responses:gpt-4.1").unwrap();
    model.chat(&[ChatMessage::user_parts(parts)], &[], &ChatSettings::default()).await.unwrap();
    let content = &fake.calls()[0].body["input"][0]["content"];
    assert_eq!(
        content,
        &json!([
            {"type": "input_text", "text": "Summarize:"},
            {"type": "input_image", "image_url": "https://example.test/cat.jpg", "detail": "auto"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw==", "detail": "auto"},
            {"type": "input_file", "filename": "report.pdf",
                "file_data": "data:application/pdf;base64,JVBERi0xLjQgZmFrZQ=="},
            {"type": "input_file", "file_url": "https://example.test/paper.pdf"},
        ])
    );
}

#[tokio::test]
async fn reasoning_effort_and_no_sampling_settings_for_reasoning_models() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Text("ok".into()));
    let settings = ChatSettings { temperature: Some(0.7), top_p: Some(0.5), ..effort(ReasoningEffort::High) };
    let reply = registry.chat_model("openai-responses:gpt-5").unwrap();
    let reply = reply.chat(&[ChatMessage::user("x")], &[], &settings).await.unwrap();
    assert_eq!(reply.reasoning[0].text, "**Adding** the two numbers.");
    let b = &fake.calls()[0].body;
    assert_eq!(b["reasoning"], json!({"effort": "high", "summary": "auto"}));
    assert_eq!(b["include"], json!(["reasoning.encrypted_content"]));
    assert!(b.get("temperature").is_none() && b.get("top_p").is_none());
    assert!(b.get("reasoning_effort").is_none());
}

#[tokio::test]
async fn cut_off_answers_and_refusals_are_not_silent() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.registry(PricingTable::new()).unwrap();
    for stream in [false, true] {
        let sink = || stream.then(|| collecting_sink().0);
        let text = registry.resolve_agent("openai-responses:gpt-4.1", &Value::Null).unwrap();
        fake.push_reply(ScriptedReply::CutOff("The answer is".into()));
        let answer = text.run_streaming(&json!("x"), None, sink()).await.unwrap();
        assert_eq!(answer.output, json!("The answer is"));
        assert_eq!(answer.finish_reason.as_deref(), Some("max_output_tokens"), "stream: {stream}");
        assert!(answer.warnings[0].contains("cut off at max_tokens"), "{:?}", answer.warnings);

        let structured =
            registry.resolve_agent("openai-responses:gpt-4.1", &json!({"output_schema": schema()})).unwrap();
        fake.push_reply(ScriptedReply::CutOff("{\"city\": \"Li".into()));
        let e = structured.run_streaming(&json!("x"), None, sink()).await.unwrap_err();
        assert!(matches!(e, LlmError::Truncated { .. }), "stream: {stream}: {e:?}");

        fake.push_reply(ScriptedReply::Refusal("I can't help with that.".into()));
        let e = text.run_streaming(&json!("x"), None, sink()).await.unwrap_err();
        assert!(
            matches!(&e, LlmError::Refused { message, usage, .. } if message == "I can't help with that." && *usage == DEFAULT_USAGE),
            "stream: {stream}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_key_fails_before_any_request_and_keys_stay_out_of_errors() {
    let registry = LlmRegistry::offline().unwrap();
    let model = registry.chat_model("openai-responses:gpt-5").unwrap();
    let e = model.check_ready().unwrap_err();
    assert_eq!(e, LlmError::MissingApiKey { provider: "openai-responses".into(), env: "OPENAI_API_KEY".into() });
    let e = model.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap_err();
    assert!(matches!(e, LlmError::MissingApiKey { .. }), "{e:?}");

    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key("the-right-key");
    let wrong = "sk-wrong-responses-key-0123";
    let registry = fake.registry_with_key(PricingTable::new(), wrong).unwrap();
    let model = registry.chat_model("openai-responses:gpt-4.1").unwrap();
    let e = model.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap_err();
    assert!(matches!(e, LlmError::Auth { status: 401, .. }), "{e:?}");
    for text in [e.to_string(), format!("{e:?}"), format!("{registry:?}"), format!("{:?}", fake.calls())] {
        assert!(!text.contains(wrong), "{text}");
    }
}
