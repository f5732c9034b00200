//! `bedrock:` models against the fake Bedrock Converse server over real HTTP on 127.0.0.1: every request is
//! SigV4-signed and the fake checks the signature with its own implementation; text, structured output, a
//! tool round trip, binary event-stream replies (pieces, truncation, a corrupt CRC, exception frames),
//! 429 with Retry-After, usage with cache reads and writes priced, images and PDFs, thinking, credentials
//! from the environment or from profile files, and secrets kept out of errors and Debug output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flujo_core::{DeltaSink, TokenUsage};
use flujo_llm::testing::{FakeProvider, ScriptedReply, DEFAULT_USAGE};
use flujo_llm::{
    ChatMessage, ChatSettings, ContentPart, LlmError, LlmRegistry, Price, PricingTable, ProviderConfig, ResponseSchema,
    ToolSpec,
};
use serde_json::{json, Value};

const CLAUDE: &str = "bedrock:anthropic.claude-3-5-sonnet-20240620-v1:0";
const CLAUDE_PATH: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0";

async fn fake() -> (FakeProvider, LlmRegistry) {
    let fake = FakeProvider::start().await.unwrap();
    let registry = fake.bedrock_registry(PricingTable::new()).unwrap();
    (fake, registry)
}

fn collecting_sink() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned())), seen)
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |k: &str| map.get(k).cloned()
}

fn schema() -> Value {
    json!({"type": "object", "required": ["city", "population"], "properties": {
        "city": {"type": "string"}, "population": {"type": "integer"}}})
}

#[tokio::test]
async fn text_reply_over_a_signed_request() {
    let (fake, registry) = fake().await;
    fake.push_reply(ScriptedReply::Text("Lima.".into()));
    let model = registry.chat_model(CLAUDE).unwrap();
    assert!(model.check_ready().is_ok());
    let settings = ChatSettings { temperature: Some(0.3), max_tokens: Some(300), ..Default::default() };
    let msgs = [ChatMessage::system("Answer in one word."), ChatMessage::user("Capital of Peru?")];
    let reply = model.chat(&msgs, &[], &settings).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("Lima."));
    assert_eq!(reply.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(reply.usage, DEFAULT_USAGE);
    assert_eq!(reply.requests, 1);
    assert!(reply.request_id.as_deref().is_some_and(|id| id.starts_with("fa4e0000-")), "{:?}", reply.request_id);

    let calls = fake.calls();
    assert_eq!(calls[0].path, format!("{CLAUDE_PATH}/converse"));
    assert_eq!(calls[0].headers["authorization"], "[REDACTED]");
    assert!(calls[0].headers.contains_key("x-amz-date"));
    assert!(!calls[0].headers.contains_key("x-amz-security-token"));
    let body = &calls[0].body;
    assert_eq!(body["system"], json!([{"text": "Answer in one word."}]));
    assert_eq!(body["messages"], json!([{"role": "user", "content": [{"text": "Capital of Peru?"}]}]));
    assert_eq!(body["inferenceConfig"], json!({"maxTokens": 300, "temperature": 0.3}));
    assert!(body.get("toolConfig").is_none() && body.get("model").is_none());

    // Through an agent too.
    fake.push_reply(ScriptedReply::Text("Quito.".into()));
    let agent = registry.resolve_agent("bedrock:amazon.nova-pro-v1:0", &Value::Null).unwrap();
    assert_eq!(agent.run(&json!("Capital of Ecuador?"), None).await.unwrap().output, json!("Quito."));
    assert_eq!(fake.calls()[1].path, "/model/amazon.nova-pro-v1%3A0/converse");
}

#[tokio::test]
async fn structured_output_is_a_forced_tool() {
    let (fake, registry) = fake().await;
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
    let agent = registry.resolve_agent(CLAUDE, &json!({"output_schema": schema()})).unwrap();
    let answer = agent.run(&json!("largest city of Peru?"), None).await.unwrap();
    assert_eq!(answer.output, json!({"city": "Lima", "population": 10000000}));
    let body = &fake.calls()[0].body;
    assert_eq!(body["toolConfig"]["toolChoice"], json!({"tool": {"name": "output"}}));
    assert_eq!(body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"], schema());

    // A schema that is not an object travels wrapped in `{value: …}` and comes back unwrapped.
    fake.push_reply(ScriptedReply::Json(json!([3, 1, 2])));
    let model = registry.chat_model(CLAUDE).unwrap();
    let rs = ResponseSchema::new(json!({"type": "array", "items": {"type": "integer"}}));
    let settings = ChatSettings { response_schema: Some(rs), ..Default::default() };
    let reply = model.chat(&[ChatMessage::user("three numbers")], &[], &settings).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("[3,1,2]"));
    assert!(reply.tool_calls.is_empty());
    let spec = &fake.calls()[1].body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"];
    assert_eq!(spec["required"], json!(["value"]));
}

#[tokio::test]
async fn tool_call_round_trip() {
    let (fake, registry) = fake().await;
    let model = registry.chat_model(CLAUDE).unwrap();
    let add = ToolSpec::new("add", "Adds two numbers", json!({"type": "object", "properties": {"a": {}, "b": {}}}));
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    let mut transcript = vec![ChatMessage::user("2 + 3?")];
    let first = model.chat(&transcript, std::slice::from_ref(&add), &ChatSettings::default()).await.unwrap();
    assert_eq!(first.stop_reason.as_deref(), Some("tool_use"));
    let call = first.tool_calls[0].clone();
    assert_eq!((call.id.as_str(), call.name.as_str(), &call.arguments), ("tooluse_1", "add", &json!({"a": 2, "b": 3})));
    let body = &fake.calls()[0].body;
    assert_eq!(
        body["toolConfig"],
        json!({"tools": [{"toolSpec": {"name": "add", "description": "Adds two numbers",
            "inputSchema": {"json": {"type": "object", "properties": {"a": {}, "b": {}}}}}}], "toolChoice": {"auto": {}}})
    );

    transcript.push(first.to_message());
    transcript.push(ChatMessage::tool_result(&call.id, "{\"sum\": 5}"));
    fake.push_reply(ScriptedReply::Text("5".into()));
    let second = model.chat(&transcript, &[add], &ChatSettings::default()).await.unwrap();
    assert_eq!(second.content.as_deref(), Some("5"));
    let messages = &fake.calls()[1].body["messages"];
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "add", "input": {"a": 2, "b": 3}}}]})
    );
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1",
            "content": [{"json": {"sum": 5}}], "status": "success"}}]})
    );
}

#[tokio::test]
async fn streamed_replies_arrive_in_pieces_and_equal_the_plain_reply() {
    let (fake, registry) = fake().await;
    let model = registry.chat_model(CLAUDE).unwrap();
    let msgs = [ChatMessage::user("capital of Peru?")];
    let usage = TokenUsage::new(40, 9).with_cache(20, 5);
    fake.push_reply_with_usage(ScriptedReply::Text("Lima is the capital of Peru.".into()), usage);
    let plain = model.chat(&msgs, &[], &ChatSettings::default()).await.unwrap();
    fake.push_reply_with_usage(ScriptedReply::Text("Lima is the capital of Peru.".into()), usage);
    let (sink, seen) = collecting_sink();
    let settings = ChatSettings { stream: Some(sink), ..Default::default() };
    let streamed = model.chat(&msgs, &[], &settings).await.unwrap();
    let pieces = seen.lock().unwrap().clone();
    assert!(pieces.len() > 3, "several pieces, not one: {pieces:?}");
    assert_eq!(pieces.concat(), "Lima is the capital of Peru.");
    assert_eq!(fake.calls()[1].path, format!("{CLAUDE_PATH}/converse-stream"));
    assert!(streamed.request_id.is_some() && streamed.request_id != plain.request_id);
    let same = |r: &flujo_llm::ChatReply| (r.content.clone(), r.usage, r.stop_reason.clone(), r.tool_calls.clone());
    assert_eq!(same(&streamed), same(&plain));
    assert_eq!(streamed.usage, usage);

    // A tool call and structured output rebuilt from their streamed pieces (the schema tool's JSON streams).
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    let (sink, _) = collecting_sink();
    let add = ToolSpec::new("add", "Adds", json!({"type": "object"}));
    let reply = model.chat(&msgs, &[add], &ChatSettings { stream: Some(sink), ..Default::default() }).await.unwrap();
    assert_eq!(reply.tool_calls[0].arguments, json!({"a": 2, "b": 3}));
    assert_eq!(reply.tool_calls[0].id, "tooluse_3");
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
    let agent = registry.resolve_agent(CLAUDE, &json!({"output_schema": schema()})).unwrap();
    let (sink, seen) = collecting_sink();
    let answer = agent.run_streaming(&json!("largest city?"), None, Some(sink)).await.unwrap();
    assert_eq!(answer.output, json!({"city": "Lima", "population": 10000000}));
    let streamed: Value = serde_json::from_str(&seen.lock().unwrap().concat()).unwrap();
    assert_eq!(streamed, answer.output);
}

#[tokio::test]
async fn broken_streams_are_typed_errors() {
    let (fake, registry) = fake().await;
    let model = registry.chat_model(CLAUDE).unwrap();
    let msgs = [ChatMessage::user("count")];
    let stream = || ChatSettings { stream: Some(collecting_sink().0), ..Default::default() };

    fake.push_reply(ScriptedReply::Truncated("one two three four five six".into()));
    let err = model.chat(&msgs, &[], &stream()).await.unwrap_err();
    assert!(matches!(&err, LlmError::Malformed { message, .. } if message.contains("ended before")), "{err:?}");
    assert!(err.is_retryable());

    fake.corrupt_next_bedrock_stream();
    fake.push_reply(ScriptedReply::Text("one two three four five six".into()));
    let err = model.chat(&msgs, &[], &stream()).await.unwrap_err();
    assert!(matches!(&err, LlmError::Malformed { message, .. } if message.contains("corrupt")), "{err:?}");

    fake.bedrock_stream_exception("throttlingException", "Too many tokens, please wait.");
    fake.push_reply(ScriptedReply::Text("one two three four five six".into()));
    let err = model.chat(&msgs, &[], &stream()).await.unwrap_err();
    assert!(matches!(err, LlmError::RateLimited { .. }), "{err:?}");

    fake.bedrock_stream_exception("validationException", "Input is too long.");
    fake.push_reply(ScriptedReply::Text("one two three four five six".into()));
    let err = model.chat(&msgs, &[], &stream()).await.unwrap_err();
    assert!(matches!(&err, LlmError::BadRequest { message, .. } if message.contains("Input is too long")), "{err:?}");

    // A stream that is whole after all that.
    fake.push_reply(ScriptedReply::Text("fine".into()));
    assert_eq!(model.chat(&msgs, &[], &stream()).await.unwrap().content.as_deref(), Some("fine"));
}

#[tokio::test]
async fn throttling_with_retry_after_is_retried_and_signed_anew() {
    let (fake, registry) = fake().await;
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(1) });
    fake.push_reply(ScriptedReply::Text("after the wait".into()));
    let agent = registry.resolve_agent(CLAUDE, &Value::Null).unwrap();
    let started = Instant::now();
    let answer = agent.run(&json!("hi"), None).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!(answer.output, json!("after the wait"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    // The retry carries its own date (and so its own signature, which the fake checked).
    assert_ne!(calls[0].headers["x-amz-date"], calls[1].headers["x-amz-date"]);

    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(3600) });
    let err = agent.run(&json!("hi"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::RateLimited { attempts: 1, retry_after: Some(d), .. } if d.as_secs() == 3600));

    // Bedrock's error shape: `{"message"}` and the type in `x-amzn-ErrorType`.
    fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
    let err = agent.run(&json!("hi"), None).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::BadRequest { status: 400, message, .. } if message == "ValidationException: scripted error 400"),
        "{err:?}"
    );
}

#[tokio::test]
async fn usage_with_cache_reads_and_writes_is_priced() {
    let fake = FakeProvider::start().await.unwrap();
    let price = Price {
        cached_prompt_tokens_per_1k: Some(0.3),
        cache_write_tokens_per_1k: Some(3.75),
        ..Price::new(3.0, 15.0)
    };
    let model_name = "anthropic.claude-3-5-sonnet-20240620-v1:0";
    let registry = fake.bedrock_registry(PricingTable::new().with_price("bedrock", model_name, price)).unwrap();
    let usage = TokenUsage::new(1000, 200).with_cache(600, 100);
    fake.push_reply_with_usage(ScriptedReply::Text("ok".into()), usage);
    let agent = registry
        .resolve_agent(CLAUDE, &json!({"system_prompt": "You are terse.", "model_settings": {"cache_prompt": true}}))
        .unwrap();
    let answer = agent.run(&json!("hi"), None).await.unwrap();
    assert_eq!(answer.usage, usage);
    // 300 plain prompt tokens at 3.0, 600 cached at 0.3, 100 written at 3.75, 200 completion at 15.0 (per 1k).
    assert!((answer.cost_usd - 4.455).abs() < 1e-9, "{}", answer.cost_usd);
    let body = &fake.calls()[0].body;
    assert_eq!(body["system"][1], json!({"cachePoint": {"type": "default"}}));
    assert_eq!(body["system"][0]["text"], "You are terse.");
}

/// A one-shot HTTP server on 127.0.0.1 answering every request with `body` as `content_type`.
async fn serve_bytes(content_type: &'static str, body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(&body).await;
        }
    });
    format!("http://{addr}/picture")
}

#[tokio::test]
async fn images_and_pdfs_are_sent_as_bytes() {
    let (fake, registry) = fake().await;
    let model = registry.chat_model(CLAUDE).unwrap();
    let png = b"\x89PNG\r\n\x1a\n-fake-png".to_vec();
    let url = serve_bytes("image/png", png.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("Q3 report.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 fake").unwrap();
    let doc = match ContentPart::document(pdf.to_str().unwrap()) {
        ContentPart::Document { source, media_type, .. } => {
            ContentPart::Document { source, media_type, name: Some("Q3 report.pdf".into()) }
        }
        other => other,
    };
    let parts = vec![
        ContentPart::text("Describe both."),
        ContentPart::image(&url),
        doc,
        ContentPart::image_bytes("image/webp", b"RIFF-webp"),
    ];
    fake.push_reply(ScriptedReply::Text("A picture and a report.".into()));
    let reply = model.chat(&[ChatMessage::user_parts(parts)], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("A picture and a report."));
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let content = &fake.calls()[0].body["messages"][0]["content"];
    assert_eq!(content[0], json!({"text": "Describe both."}));
    assert_eq!(content[1], json!({"image": {"format": "png", "source": {"bytes": b64(&png)}}}));
    assert_eq!(
        content[2],
        json!({"document": {"format": "pdf", "name": "Q3 report", "source": {"bytes": b64(b"%PDF-1.4 fake")}}})
    );
    assert_eq!(content[3]["image"]["format"], "webp");
}

#[tokio::test]
async fn thinking_goes_to_additional_fields_and_comes_back() {
    let (fake, registry) = fake().await;
    let model = registry.chat_model("bedrock:us.anthropic.claude-sonnet-4-20250514-v1:0").unwrap();
    let mut settings = ChatSettings { temperature: Some(0.7), max_tokens: Some(8000), ..Default::default() };
    settings.reasoning.budget_tokens = Some(2048);
    settings.extra.insert("top_k".into(), json!(50));
    let add = ToolSpec::new("add", "Adds", json!({"type": "object"}));
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 1, "b": 1}) });
    let msgs = vec![ChatMessage::user("1 + 1?")];
    let first = model.chat(&msgs, std::slice::from_ref(&add), &settings).await.unwrap();
    assert_eq!(first.reasoning.len(), 1);
    assert_eq!(first.reasoning[0].text, "Let me think about this.");
    assert_eq!(first.reasoning[0].signature.as_deref(), Some("fake-signature-1"));
    let body = &fake.calls()[0].body;
    assert_eq!(
        body["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 2048}, "top_k": 50})
    );
    assert_eq!(body["inferenceConfig"], json!({"maxTokens": 8000}), "no sampling settings with thinking");
    // The signed reasoning goes back before the tool use (Claude requires it in a tool loop).
    let mut transcript = msgs.clone();
    transcript.push(first.to_message());
    transcript.push(ChatMessage::tool_result(&first.tool_calls[0].id, "2"));
    fake.push_reply(ScriptedReply::Text("2".into()));
    let (sink, _) = collecting_sink();
    let second =
        model.chat(&transcript, &[add], &ChatSettings { stream: Some(sink), ..settings.clone() }).await.unwrap();
    assert_eq!(second.content.as_deref(), Some("2"));
    assert_eq!(second.reasoning[0].signature.as_deref(), Some("fake-signature-2"), "streamed reasoning is kept");
    let assistant = &fake.calls()[1].body["messages"][1]["content"];
    assert_eq!(
        assistant[0],
        json!({"reasoningContent": {"reasoningText": {"text": "Let me think about this.", "signature": "fake-signature-1"}}})
    );
    assert!(assistant[1].get("toolUse").is_some());
    assert_eq!(fake.calls()[1].body["messages"][2]["content"][0]["toolResult"]["content"], json!([{"text": "2"}]));
}

#[tokio::test]
async fn credentials_from_profile_files_with_a_session_token() {
    let fake = FakeProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let config = dir.path().join("config");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = default-secret\n\n\
         [work]\naws_access_key_id = ASIAWORK0001\naws_secret_access_key = work/secret+key\n\
         aws_session_token = IQoJb3JpZ2luX2VjEXAMPLETOKEN\n",
    )
    .unwrap();
    std::fs::write(&config, "[default]\nregion = us-east-1\n\n[profile work]\nregion = eu-west-1\n").unwrap();
    fake.expect_aws_credentials("ASIAWORK0001", "work/secret+key", Some("IQoJb3JpZ2luX2VjEXAMPLETOKEN"), "eu-west-1");
    let files =
        [("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()), ("AWS_CONFIG_FILE", config.to_str().unwrap())];

    // AWS_PROFILE names the profile; its region comes from the config file.
    let mut env = files.to_vec();
    env.push(("AWS_PROFILE", "work"));
    let registry = fake.bedrock_registry_with_env(PricingTable::new(), env_of(&env)).unwrap();
    fake.push_reply(ScriptedReply::Text("from the profile".into()));
    let agent = registry.resolve_agent(CLAUDE, &Value::Null).unwrap();
    assert_eq!(agent.run(&json!("hi"), None).await.unwrap().output, json!("from the profile"));
    assert_eq!(fake.calls()[0].headers["x-amz-security-token"], "IQoJb3JpZ2luX2VjEXAMPLETOKEN");

    // `[providers.bedrock] profile` does the same without AWS_PROFILE.
    let section = ProviderConfig { profile: Some("work".into()), ..fake.bedrock_config() };
    let config_with_profile = flujo_llm::LlmConfig::default().with_provider("bedrock", section);
    let registry = LlmRegistry::with_env(config_with_profile, env_of(&files)).unwrap();
    fake.push_reply(ScriptedReply::Text("again".into()));
    let agent = registry.resolve_agent(CLAUDE, &Value::Null).unwrap();
    assert_eq!(agent.run(&json!("hi"), None).await.unwrap().output, json!("again"));

    // Environment credentials come first (the default profile's would be refused).
    let mut env = files.to_vec();
    env.extend([
        ("AWS_ACCESS_KEY_ID", "AKIAENV0001"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ("AWS_DEFAULT_REGION", "ap-south-1"),
    ]);
    fake.expect_aws_credentials("AKIAENV0001", "env-secret", None, "ap-south-1");
    let registry = fake.bedrock_registry_with_env(PricingTable::new(), env_of(&env)).unwrap();
    fake.push_reply(ScriptedReply::Text("from the environment".into()));
    let agent = registry.resolve_agent(CLAUDE, &Value::Null).unwrap();
    assert_eq!(agent.run(&json!("hi"), None).await.unwrap().output, json!("from the environment"));
    assert!(!fake.calls()[2].headers.contains_key("x-amz-security-token"));
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_never_shown() {
    const WRONG: &str = "wRoNg/SeCrEt+0123456789abcdefghijkLMNOP";
    let fake = FakeProvider::start().await.unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", FakeProvider::AWS_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", WRONG),
        ("AWS_REGION", FakeProvider::AWS_REGION),
    ];
    let registry = fake.bedrock_registry_with_env(PricingTable::new(), env_of(&env)).unwrap();
    let agent = registry.resolve_agent(CLAUDE, &Value::Null).unwrap();
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Auth { status: 403, .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(fake.call_count(), 1, "auth failures are not retried");
    let model = registry.chat_model(CLAUDE).unwrap();
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{registry:?}"),
        format!("{agent:?}"),
        format!("{:?}", model.check_ready()),
    ] {
        assert!(!text.contains(WRONG) && !text.contains("wRoNg"), "secret leaked in {text}");
        assert!(!text.contains(FakeProvider::AWS_ACCESS_KEY_ID), "key id leaked in {text}");
    }
    // An unexpected session token is refused the same way (and not shown either).
    let with_token = [
        ("AWS_ACCESS_KEY_ID", FakeProvider::AWS_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", FakeProvider::AWS_SECRET_ACCESS_KEY),
        ("AWS_SESSION_TOKEN", "tOkEnThAtIsNoTeXpEcTeD"),
        ("AWS_REGION", FakeProvider::AWS_REGION),
    ];
    let registry = fake.bedrock_registry_with_env(PricingTable::new(), env_of(&with_token)).unwrap();
    let err = registry.resolve_agent(CLAUDE, &Value::Null).unwrap().run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Auth { status: 403, .. }), "{err:?}");
    assert!(!format!("{err:?} {registry:?}").contains("tOkEn"));
    assert_eq!(fake.calls()[1].headers["x-amz-security-token"], "tOkEnThAtIsNoTeXpEcTeD", "the token was sent");
}

#[tokio::test]
async fn missing_credentials_or_region_fail_before_any_request() {
    let fake = FakeProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    // No credentials anywhere (an empty HOME): MissingApiKey naming the variable and the profile.
    let registry = fake
        .bedrock_registry_with_env(PricingTable::new(), env_of(&[("HOME", home), ("AWS_REGION", "us-east-1")]))
        .unwrap();
    let agent = registry.resolve_agent(CLAUDE, &Value::Null).unwrap();
    let err = agent.check_ready().unwrap_err();
    assert!(
        matches!(&err, LlmError::MissingApiKey { env, .. } if env.contains("AWS_ACCESS_KEY_ID") && env.contains("'default'")),
        "{err:?}"
    );
    fake.push_reply(ScriptedReply::Text("never".into()));
    assert!(matches!(agent.run(&json!("x"), None).await.unwrap_err(), LlmError::MissingApiKey { .. }));
    // Credentials but no region.
    let env = [("HOME", home), ("AWS_ACCESS_KEY_ID", "AKIAX"), ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")];
    let registry = fake.bedrock_registry_with_env(PricingTable::new(), env_of(&env)).unwrap();
    let agent = registry.resolve_agent(CLAUDE, &Value::Null).unwrap();
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(&err, LlmError::Config(m) if m.contains("no AWS region") && m.contains("AWS_REGION")), "{err:?}");
    assert!(agent.check_ready().is_err());
    assert_eq!(fake.call_count(), 0, "nothing was sent");
    assert_eq!(fake.pending_replies(), 1);
}
