//! The `gemini:` provider against the fake server's Gemini API shape over real HTTP on 127.0.0.1: text,
//! structured output, a function-call round trip, streaming, retries, usage and cost, images and PDFs sent
//! inline (a URL fetched from a local server), thinking, tool choice, and the API key kept out of errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use flujo_core::{DeltaSink, TokenUsage};
use flujo_llm::testing::{FakeProvider, ScriptedReply, DEFAULT_USAGE, FAKE_API_KEY};
use flujo_llm::{
    ChatMessage, ChatReply, ChatSettings, ContentPart, LlmError, LlmRegistry, Price, PricingTable, ReasoningEffort,
    ReasoningSettings, ResponseSchema, ToolChoice, ToolSpec,
};
use serde_json::{json, Value};

const MODEL: &str = "gemini:gemini-2.5-flash";
const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";

async fn setup() -> (FakeProvider, LlmRegistry) {
    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key(FAKE_API_KEY);
    let registry = fake.registry(PricingTable::new()).unwrap();
    (fake, registry)
}

fn schema() -> Value {
    json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "additionalProperties": false, "required": ["city", "population"],
        "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}}})
}

fn add_tool() -> ToolSpec {
    ToolSpec::new(
        "add",
        "Adds two numbers",
        json!({"type": "object", "additionalProperties": false, "required": ["a", "b"],
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
    )
}

fn collecting_sink() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned())), seen)
}

/// A reply without what differs from one reply to the next (its id, the fake's thought signatures `sig-N`),
/// to compare a streamed reply with a non-streamed one.
fn without_id(mut r: ChatReply) -> ChatReply {
    r.request_id = None;
    for block in &mut r.reasoning {
        if let Some(s) = &mut block.signature {
            assert!(s.starts_with("sig-"), "{s}");
            s.truncate(4);
        }
    }
    r
}

#[tokio::test]
async fn text_with_system_prompt_and_settings() {
    let (fake, registry) = setup().await;
    fake.push_reply(ScriptedReply::Text("Lima.".into()));
    let agent = registry
        .resolve_agent(
            MODEL,
            &json!({"system_prompt": "You are terse.",
                "model_settings": {"temperature": 0.3, "max_tokens": 64, "top_k": 20, "seed": 7}}),
        )
        .unwrap();
    let answer = agent.run(&json!("capital of Peru?"), None).await.unwrap();
    assert_eq!(answer.output, json!("Lima."));
    assert_eq!(answer.usage, DEFAULT_USAGE);

    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, GENERATE, "the key never travels in the URL");
    let body = &calls[0].body;
    assert_eq!(body["systemInstruction"], json!({"parts": [{"text": "You are terse."}]}));
    assert_eq!(body["contents"], json!([{"role": "user", "parts": [{"text": "capital of Peru?"}]}]));
    assert_eq!(
        body["generationConfig"],
        json!({"maxOutputTokens": 64, "temperature": 0.3, "topK": 20, "seed": 7}),
        "sampling settings go in generationConfig"
    );
    assert!(body.get("model").is_none() && body.get("tools").is_none());

    // The reply's id and model version.
    fake.push_reply(ScriptedReply::Text("hi".into()));
    let model = registry.chat_model(MODEL).unwrap();
    let reply = model.chat(&[ChatMessage::user("hello")], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("hi"));
    assert_eq!(reply.stop_reason.as_deref(), Some("STOP"));
    assert_eq!(reply.request_id.as_deref(), Some("gemini-resp-2"));
    assert_eq!(reply.response_model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(reply.requests, 1);
}

#[tokio::test]
async fn structured_output_object_and_non_object_schemas() {
    let (fake, registry) = setup().await;
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
    let agent = registry.resolve_agent(MODEL, &json!({"output_schema": schema()})).unwrap();
    let answer = agent.run(&json!("largest city of Peru?"), None).await.unwrap();
    assert_eq!(answer.output, json!({"city": "Lima", "population": 10000000}));
    let config = &fake.calls()[0].body["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(
        config["responseSchema"],
        json!({"type": "OBJECT", "required": ["city", "population"], "properties": {
            "city": {"type": "STRING"}, "population": {"type": "INTEGER", "minimum": 0}}}),
        "the OpenAPI subset: no additionalProperties, no $schema"
    );

    // A list schema is wrapped in {value: …} on the wire and unwrapped in the answer.
    let list = json!({"type": "array", "items": {"type": "string"}, "minItems": 1});
    fake.push_reply(ScriptedReply::Json(json!(["Lima", "Arequipa"])));
    let agent = registry.resolve_agent(MODEL, &json!({"output_schema": list})).unwrap();
    let answer = agent.run(&json!("two cities"), None).await.unwrap();
    assert_eq!(answer.output, json!(["Lima", "Arequipa"]));
    let config = &fake.calls()[1].body["generationConfig"];
    assert_eq!(config["responseSchema"]["required"], json!(["value"]));
    assert_eq!(
        config["responseSchema"]["properties"]["value"],
        json!({"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1})
    );

    // A violation is re-asked with the answer and the error in the transcript.
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima"})));
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 1})));
    let agent = registry.resolve_agent(MODEL, &json!({"output_schema": schema()})).unwrap();
    assert_eq!(agent.run(&json!("q"), None).await.unwrap().output, json!({"city": "Lima", "population": 1}));
    let contents = fake.calls()[3].body["contents"].as_array().unwrap().clone();
    assert_eq!(contents.len(), 3);
    assert_eq!(contents[1]["role"], "model");
    assert!(contents[2]["parts"][0]["text"].as_str().unwrap().contains("does not satisfy"));
}

#[tokio::test]
async fn function_call_round_trip() {
    let (fake, registry) = setup().await;
    let model = registry.chat_model(MODEL).unwrap();
    let now = ToolSpec::new("now", "The current time", json!({"type": "object"}));
    let tools = [add_tool(), now];
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    fake.push_reply(ScriptedReply::Text("The sum is 5.".into()));

    let mut messages = vec![ChatMessage::system("Use tools."), ChatMessage::user("2 + 3?")];
    let settings = ChatSettings::default();
    let reply = model.chat(&messages, &tools, &settings).await.unwrap();
    assert_eq!(reply.tool_calls.len(), 1);
    let call = &reply.tool_calls[0];
    assert_eq!((call.name.as_str(), &call.arguments), ("add", &json!({"a": 2, "b": 3})));
    assert_eq!(call.id, "call_0", "Gemini gave no id: one is made up");
    assert_eq!(reply.content, None);

    messages.push(reply.to_message());
    messages.push(ChatMessage::tool_result(call.id.clone(), "5"));
    let last = model.chat(&messages, &tools, &settings).await.unwrap();
    assert_eq!(last.content.as_deref(), Some("The sum is 5."));
    assert!(last.tool_calls.is_empty());

    let calls = fake.calls();
    let first = &calls[0].body;
    assert_eq!(
        first["tools"],
        json!([{"functionDeclarations": [
            {"name": "add", "description": "Adds two numbers", "parameters": {"type": "OBJECT",
                "required": ["a", "b"], "properties": {"a": {"type": "NUMBER"}, "b": {"type": "NUMBER"}}}},
            {"name": "now", "description": "The current time"}]}]),
        "a tool without arguments has no parameters"
    );
    assert_eq!(first["toolConfig"], json!({"functionCallingConfig": {"mode": "AUTO"}}));
    assert_eq!(
        calls[1].body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "2 + 3?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "add", "args": {"a": 2, "b": 3}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "add", "response": {"output": 5}}}]},
        ])
    );
    assert_eq!(calls[1].body["systemInstruction"], json!({"parts": [{"text": "Use tools."}]}));
}

#[tokio::test]
async fn tool_choice_modes() {
    let (fake, registry) = setup().await;
    let model = registry.chat_model(MODEL).unwrap();
    let cases = [
        (ToolChoice::Auto, json!({"mode": "AUTO"})),
        (ToolChoice::None, json!({"mode": "NONE"})),
        (ToolChoice::Required, json!({"mode": "ANY"})),
        (ToolChoice::Tool("add".into()), json!({"mode": "ANY", "allowedFunctionNames": ["add"]})),
    ];
    for (i, (choice, expected)) in cases.into_iter().enumerate() {
        fake.push_reply(ScriptedReply::Text("ok".into()));
        let settings = ChatSettings { tool_choice: choice.clone(), ..Default::default() };
        model.chat(&[ChatMessage::user("x")], &[add_tool()], &settings).await.unwrap();
        assert_eq!(fake.calls()[i].body["toolConfig"]["functionCallingConfig"], expected, "{choice:?}");
    }
}

#[tokio::test]
async fn streaming_delivers_pieces_and_the_same_reply() {
    let (fake, registry) = setup().await;
    let model = registry.chat_model(MODEL).unwrap();
    let usage = TokenUsage::new(12, 7);
    let text = "Lima is the capital of Peru.";
    let ask = [ChatMessage::user("capital of Peru?")];

    fake.push_reply_with_usage(ScriptedReply::Text(text.into()), usage);
    let plain = model.chat(&ask, &[], &ChatSettings::default()).await.unwrap();
    fake.push_reply_with_usage(ScriptedReply::Text(text.into()), usage);
    let (sink, seen) = collecting_sink();
    let streamed = model.chat(&ask, &[], &ChatSettings { stream: Some(sink), ..Default::default() }).await.unwrap();
    let pieces = seen.lock().unwrap().clone();
    assert!(pieces.len() > 3, "several pieces, not one: {pieces:?}");
    assert_eq!(pieces.concat(), text);
    assert_eq!(streamed.usage, usage);
    assert_eq!(without_id(streamed), without_id(plain));
    let calls = fake.calls();
    assert_eq!((calls[0].path.as_str(), calls[1].path.as_str()), (GENERATE, STREAM));
    assert_eq!(calls[0].body, calls[1].body, "the stream is asked for by the path only");

    // Structured output: the JSON text streams.
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima", "population": 10000000})));
    let agent = registry.resolve_agent(MODEL, &json!({"output_schema": schema()})).unwrap();
    let (sink, seen) = collecting_sink();
    let answer = agent.run_streaming(&json!("largest city?"), None, Some(sink)).await.unwrap();
    assert_eq!(answer.output, json!({"city": "Lima", "population": 10000000}));
    let streamed: Value = serde_json::from_str(&seen.lock().unwrap().concat()).unwrap();
    assert_eq!(streamed, answer.output);

    // Function calls arrive whole in their chunk.
    let settings = |sink: Option<DeltaSink>| ChatSettings { stream: sink, ..Default::default() };
    let (sink, _) = collecting_sink();
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    let streamed = model.chat(&[ChatMessage::user("2 + 3?")], &[add_tool()], &settings(Some(sink))).await.unwrap();
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 2, "b": 3}) });
    let plain = model.chat(&[ChatMessage::user("2 + 3?")], &[add_tool()], &settings(None)).await.unwrap();
    assert_eq!(streamed.tool_calls[0].arguments, json!({"a": 2, "b": 3}));
    assert_eq!(without_id(streamed), without_id(plain));

    // Thinking: thought summaries are reasoning, not answer pieces.
    let thinking = |sink: Option<DeltaSink>| ChatSettings {
        stream: sink,
        reasoning: ReasoningSettings { budget_tokens: Some(1024), effort: None },
        ..Default::default()
    };
    fake.push_reply_with_usage(ScriptedReply::Text("Yes.".into()), usage.with_reasoning(3));
    let (sink, seen) = collecting_sink();
    let streamed = model.chat(&ask, &[], &thinking(Some(sink))).await.unwrap();
    fake.push_reply_with_usage(ScriptedReply::Text("Yes.".into()), usage.with_reasoning(3));
    let plain = model.chat(&ask, &[], &thinking(None)).await.unwrap();
    assert_eq!(seen.lock().unwrap().concat(), "Yes.");
    assert_eq!(streamed.reasoning[0].text, "Let me think.");
    assert_eq!(without_id(streamed.clone()), without_id(plain));
}

#[tokio::test]
async fn truncated_streams_are_malformed_and_early_failures_retried() {
    let (fake, registry) = setup().await;
    let agent = registry.resolve_agent(MODEL, &Value::Null).unwrap();
    fake.push_reply(ScriptedReply::Truncated("one two three four five six".into()));
    let (sink, seen) = collecting_sink();
    let err = agent.run_streaming(&json!("count"), None, Some(sink)).await.unwrap_err();
    assert!(matches!(&err, LlmError::Malformed { message, .. } if message.contains("ended before")), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(seen.lock().unwrap().concat(), "one two three ", "the pieces before the cut were passed on");

    fake.push_reply(ScriptedReply::Status { code: 503, retry_after: Some(0) });
    fake.push_reply(ScriptedReply::Text("ok now".into()));
    let (sink, seen) = collecting_sink();
    let answer = agent.run_streaming(&json!("again"), None, Some(sink)).await.unwrap();
    assert_eq!(answer.output, json!("ok now"));
    assert_eq!(seen.lock().unwrap().concat(), "ok now");
    assert_eq!(fake.call_count(), 3);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let (fake, registry) = setup().await;
    let agent = registry.resolve_agent(MODEL, &Value::Null).unwrap();
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(1) });
    fake.push_reply(ScriptedReply::Text("after the wait".into()));
    let started = Instant::now();
    let answer = agent.run(&json!("hi"), None).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!(answer.output, json!("after the wait"));
    assert_eq!(fake.call_count(), 2);

    // A pause longer than the policy waits (5 s for the fake's registry) ends the call at once.
    fake.push_reply(ScriptedReply::Status { code: 429, retry_after: Some(60) });
    let started = Instant::now();
    let err = agent.run(&json!("hi"), None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err, LlmError::RateLimited { attempts: 1, retry_after: Some(d), .. } if d == Duration::from_secs(60)),
        "{err:?}"
    );
    assert_eq!(fake.call_count(), 3);

    // Other errors carry Gemini's message.
    fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
    let err = agent.run(&json!("hi"), None).await.unwrap_err();
    assert!(matches!(&err, LlmError::BadRequest { status: 400, message, .. } if message == "scripted error 400"));
}

#[tokio::test]
async fn usage_with_thoughts_and_cached_tokens_is_priced() {
    let fake = FakeProvider::start().await.unwrap();
    let price = Price::new(1.0, 2.0).with_cache_rates(0.25, 1.0).with_reasoning_rate(3.0);
    let registry = fake.registry(PricingTable::new().with_price("gemini", "gemini-2.5-flash", price)).unwrap();
    let usage = TokenUsage::new(1000, 500).with_cache(400, 0).with_reasoning(200);
    fake.push_reply_with_usage(ScriptedReply::Text("priced".into()), usage);
    let agent = registry.resolve_agent(MODEL, &Value::Null).unwrap();
    let answer = agent.run(&json!("x"), None).await.unwrap();
    // promptTokenCount 1000 (400 cached), candidatesTokenCount 300 + thoughtsTokenCount 200.
    assert_eq!(answer.usage, usage);
    // 600 plain prompt × $1 + 400 cached × $0.25 + 300 answer × $2 + 200 thought × $3, per 1000 tokens.
    assert!((answer.cost_usd - 1.9).abs() < 1e-9, "{}", answer.cost_usd);
    assert!((answer.cost_usd - price.cost(usage)).abs() < 1e-12);
}

/// A one-route HTTP server for the image fetched by URL.
async fn image_server(bytes: &'static [u8]) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/cat", axum::routing::get(move || async move { ([("content-type", "image/png")], bytes) }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}/cat", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test]
async fn images_and_pdfs_are_sent_inline() {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n fake png";
    const SERVED: &[u8] = b"\x89PNG\r\n\x1a\n served by url";
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("chart.png");
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&png, PNG).unwrap();
    std::fs::write(&pdf, b"%PDF-1.4 fake").unwrap();
    let (url, server) = image_server(SERVED).await;

    let (fake, registry) = setup().await;
    fake.push_reply(ScriptedReply::Text("A chart, a report and a cat.".into()));
    let model = registry.chat_model(MODEL).unwrap();
    let message = ChatMessage::user_parts(vec![
        ContentPart::text("Describe these."),
        ContentPart::image(png.to_str().unwrap()),
        ContentPart::document(pdf.to_str().unwrap()),
        ContentPart::image(&url),
    ]);
    let reply = model.chat(&[message], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("A chart, a report and a cat."));
    assert_eq!(
        fake.calls()[0].body["contents"][0]["parts"],
        json!([
            {"text": "Describe these."},
            {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}},
            {"inlineData": {"mimeType": "application/pdf", "data": b64(b"%PDF-1.4 fake")}},
            {"inlineData": {"mimeType": "image/png", "data": b64(SERVED)}},
        ])
    );

    // A URL that cannot be fetched fails before anything is sent to Gemini.
    server.abort();
    let _ = server.await;
    let err =
        model.chat(&[ChatMessage::user_parts(vec![ContentPart::image(&url)])], &[], &ChatSettings::default()).await;
    assert!(matches!(&err, Err(LlmError::Config(m)) if m.contains("cannot download")), "{err:?}");
    assert_eq!(fake.call_count(), 1);
}

#[tokio::test]
async fn thinking_budget_and_signatures_go_back() {
    let (fake, registry) = setup().await;
    let model = registry.chat_model(MODEL).unwrap();
    let settings = ChatSettings {
        reasoning: ReasoningSettings { effort: Some(ReasoningEffort::Medium), budget_tokens: None },
        max_tokens: Some(16_000),
        ..Default::default()
    };
    fake.push_reply_with_usage(
        ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 1, "b": 1}) },
        TokenUsage::new(20, 15).with_reasoning(10),
    );
    fake.push_reply(ScriptedReply::Text("2".into()));
    let mut messages = vec![ChatMessage::user("1 + 1?")];
    let reply = model.chat(&messages, &[add_tool()], &settings).await.unwrap();
    assert_eq!(reply.usage, TokenUsage::new(20, 15).with_reasoning(10));
    assert_eq!(reply.reasoning[0].text, "Let me think.");
    assert_eq!(reply.reasoning[1].signature.as_deref(), Some("sig-1"));
    messages.push(reply.to_message());
    messages.push(ChatMessage::tool_result(reply.tool_calls[0].id.clone(), "{\"sum\": 2}"));
    let last = model.chat(&messages, &[add_tool()], &settings).await.unwrap();
    assert_eq!(last.content.as_deref(), Some("2"), "the thought part is not the answer");

    let calls = fake.calls();
    assert_eq!(
        calls[0].body["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 8192, "includeThoughts": true}),
        "effort medium is a budget of 8,192"
    );
    assert_eq!(
        calls[1].body["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "Let me think.", "thought": true},
            {"functionCall": {"name": "add", "args": {"a": 1, "b": 1}}, "thoughtSignature": "sig-1"}]}),
        "the turn goes back with its thought and signature"
    );
    assert_eq!(
        calls[1].body["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "add", "response": {"output": {"sum": 2}}})
    );
}

#[tokio::test]
async fn refusals_and_cut_off_answers() {
    let (fake, registry) = setup().await;
    fake.push_reply(ScriptedReply::Refusal("no".into()));
    let model = registry.chat_model(MODEL).unwrap();
    let reply = model.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(
        reply.refusal.as_deref(),
        Some("the answer was blocked (finishReason SAFETY: HARM_CATEGORY_DANGEROUS_CONTENT)")
    );
    assert_eq!(reply.content, None);

    fake.push_reply(ScriptedReply::CutOff("{\"city\": \"Li".into()));
    let agent = registry.resolve_agent(MODEL, &json!({"output_schema": schema()})).unwrap();
    let err = agent.run(&json!("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Truncated { .. }), "{err:?}");

    fake.push_reply(ScriptedReply::Garbage);
    let err = model.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap_err();
    assert!(matches!(&err, LlmError::Malformed { message, .. } if message.contains("not JSON")), "{err:?}");
}

#[tokio::test]
async fn a_missing_key_fails_before_any_request() {
    // No configuration, no environment: the public endpoint, which needs a key.
    let registry = LlmRegistry::offline().unwrap();
    let model = registry.chat_model(MODEL).unwrap();
    let missing = |e: &LlmError| matches!(e, LlmError::MissingApiKey { env, .. } if env == "GEMINI_API_KEY");
    assert!(missing(&model.check_ready().unwrap_err()));
    // Even a message whose image would have to be downloaded first: nothing is fetched.
    let message = ChatMessage::user_parts(vec![ContentPart::image("http://127.0.0.1:9/never.png")]);
    let err = model.chat(&[message], &[], &ChatSettings::default()).await.unwrap_err();
    assert!(missing(&err), "{err:?}");
    // GOOGLE_API_KEY is read too.
    let registry =
        LlmRegistry::with_env(Default::default(), |k| (k == "GOOGLE_API_KEY").then(|| "g-key".to_owned())).unwrap();
    assert!(registry.chat_model(MODEL).unwrap().check_ready().is_ok());
}

#[tokio::test]
async fn the_key_never_shows() {
    const WRONG: &str = "AIza-wrong-secret-4242";
    let fake = FakeProvider::start().await.unwrap();
    fake.require_api_key(FAKE_API_KEY);
    let registry = fake.registry_with_key(PricingTable::new(), WRONG).unwrap();
    let model = registry.chat_model(MODEL).unwrap();
    let agent = registry.resolve_agent(MODEL, &Value::Null).unwrap();
    let err = model.chat(&[ChatMessage::user("x")], &[], &ChatSettings::default()).await.unwrap_err();
    assert!(matches!(err, LlmError::Auth { status: 401, .. }), "{err:?}");
    let (sink, _) = collecting_sink();
    let streamed = agent.run_streaming(&json!("x"), None, Some(sink)).await.unwrap_err();
    assert!(matches!(streamed, LlmError::Auth { status: 401, .. }), "{streamed:?}");
    for text in
        [err.to_string(), format!("{err:?}"), streamed.to_string(), format!("{registry:?}"), format!("{agent:?}")]
    {
        assert!(!text.contains("wrong-secret"), "key leaked in {text}");
    }
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "auth failures are not retried");
    // The key was sent in its header (the server saw it), never in the URL; the log redacts it.
    for c in &calls {
        assert!(!c.path.contains("wrong"), "{}", c.path);
        assert_eq!(c.headers.get("x-goog-api-key").map(String::as_str), Some("[REDACTED]"));
    }

    // The right key, in the header.
    let registry = fake.registry(PricingTable::new()).unwrap();
    fake.push_reply(ScriptedReply::Text("in".into()));
    let reply = registry.chat_model(MODEL).unwrap().chat(&[ChatMessage::user("x")], &[], &Default::default()).await;
    assert_eq!(reply.unwrap().content.as_deref(), Some("in"));
}

#[tokio::test]
async fn schemas_gemini_cannot_express_go_as_json_schema() {
    let (fake, registry) = setup().await;
    // A free-form map: no properties, which responseSchema refuses for an object.
    let map = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    fake.push_reply(ScriptedReply::Json(json!({"a": 1, "b": 2})));
    let agent = registry.resolve_agent(MODEL, &json!({"output_schema": map})).unwrap();
    assert_eq!(agent.run(&json!("x"), None).await.unwrap().output, json!({"a": 1, "b": 2}));
    let config = &fake.calls()[0].body["generationConfig"];
    assert!(config.get("responseSchema").is_none());
    assert_eq!(config["responseJsonSchema"], map);

    let settings =
        ChatSettings { response_schema: Some(ResponseSchema::new(json!({"type": "string"}))), ..Default::default() };
    fake.push_reply(ScriptedReply::Json(json!("plain")));
    let reply = registry.chat_model(MODEL).unwrap().chat(&[ChatMessage::user("x")], &[], &settings).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("\"plain\""));
}
