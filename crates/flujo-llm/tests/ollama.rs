//! `ollama:MODEL`: the Chat Completions path with Ollama's defaults — the server found from `OLLAMA_HOST`
//! (as the Ollama CLI writes it), `OLLAMA_BASE_URL` or `[providers.ollama]`, no key needed — against the fake
//! provider's Chat Completions route over real HTTP on 127.0.0.1, with structured output, tools, images,
//! streaming and a zero price.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use flujo_core::{DeltaSink, TokenUsage};
use flujo_llm::config::OLLAMA_BASE_URL;
use flujo_llm::testing::{FakeProvider, ScriptedReply};
use flujo_llm::{
    ChatMessage, ChatSettings, ContentPart, LlmConfig, LlmRegistry, PricingError, PricingTable, ProviderKind, ToolSpec,
};
use serde_json::{json, Value};

const PATH: &str = "/v1/chat/completions";

/// A registry reading only `vars` from the environment.
fn registry_with(config: LlmConfig, vars: &[(&str, String)]) -> LlmRegistry {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    LlmRegistry::with_env(config, move |k| vars.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone())).unwrap()
}

fn host_of(fake: &FakeProvider) -> String {
    fake.base_url().trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn ollama_host_base_url_or_section_without_a_key() {
    let fake = FakeProvider::start().await.unwrap();
    let section: toml::Table =
        format!("[providers.ollama]\nbase_url = \"{}\"\n", fake.openai_base_url()).parse().unwrap();
    let cases = [
        ("OLLAMA_HOST host:port", LlmConfig::default(), vec![("OLLAMA_HOST", host_of(&fake))]),
        ("OLLAMA_HOST with scheme", LlmConfig::default(), vec![("OLLAMA_HOST", fake.base_url())]),
        ("OLLAMA_BASE_URL", LlmConfig::default(), vec![("OLLAMA_BASE_URL", fake.openai_base_url())]),
        ("[providers.ollama]", LlmConfig::from_toml(&section).unwrap(), vec![("OLLAMA_HOST", "nowhere:1".into())]),
    ];
    for (i, (case, config, vars)) in cases.into_iter().enumerate() {
        let registry = registry_with(config, &vars);
        let model = registry.chat_model("ollama:llama3.2").unwrap();
        assert!(model.check_ready().is_ok(), "{case}: no key is needed");
        fake.push_reply(ScriptedReply::Text("Hello from llama.".into()));
        let reply = model.chat(&[ChatMessage::user("hi")], &[], &ChatSettings::default()).await.unwrap();
        assert_eq!(reply.content.as_deref(), Some("Hello from llama."), "{case}");
        let call = &fake.calls()[i];
        assert_eq!(call.path, PATH, "{case}");
        assert!(!call.headers.contains_key("authorization"), "{case}: no key is sent");
        assert_eq!(call.body["model"], "llama3.2", "{case}");
        assert_eq!(call.body["max_tokens"], 4096, "{case}");
    }
    // OLLAMA_API_KEY (Ollama behind an authenticating proxy) is sent as a bearer token.
    fake.require_api_key("ollama-proxy-key");
    let registry = registry_with(
        LlmConfig::default(),
        &[("OLLAMA_HOST", host_of(&fake)), ("OLLAMA_API_KEY", "ollama-proxy-key".into())],
    );
    fake.push_reply(ScriptedReply::Text("ok".into()));
    let model = registry.chat_model("ollama:llama3.2").unwrap();
    model.chat(&[ChatMessage::user("hi")], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(fake.calls().last().unwrap().headers["authorization"], "[REDACTED]");
}

#[test]
fn defaults_to_the_local_server() {
    let registry = registry_with(LlmConfig::default(), &[]);
    let model = registry.chat_model("ollama:qwen3").unwrap();
    assert!(model.check_ready().is_ok());
    let resolved = flujo_llm::ProviderConfig::builtin("ollama").unwrap().resolve("ollama", &|_| None).unwrap();
    assert_eq!((resolved.kind, resolved.base_url.as_str()), (ProviderKind::OpenAi, OLLAMA_BASE_URL));
    assert_eq!(OLLAMA_BASE_URL, "http://localhost:11434/v1");
}

#[tokio::test]
async fn structured_output_tools_images_and_streaming() {
    let fake = FakeProvider::start().await.unwrap();
    let registry = registry_with(LlmConfig::default(), &[("OLLAMA_HOST", host_of(&fake))]);

    // Structured output: `response_format` with the JSON Schema (Ollama turns it into its `format`).
    let schema = json!({"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}});
    fake.push_reply(ScriptedReply::Json(json!({"city": "Lima"})));
    let agent = registry.resolve_agent("ollama:llama3.2", &json!({"output_schema": schema})).unwrap();
    assert_eq!(agent.run(&json!("q"), None).await.unwrap().output, json!({"city": "Lima"}));
    assert_eq!(fake.calls()[0].body["response_format"]["json_schema"]["schema"], schema);

    // Tools.
    let model = registry.chat_model("ollama:llama3.2").unwrap();
    let add = ToolSpec::new("add", "Adds", json!({"type": "object"}));
    fake.push_reply(ScriptedReply::ToolCall { name: "add".into(), arguments: json!({"a": 1}) });
    let reply = model.chat(&[ChatMessage::user("1?")], std::slice::from_ref(&add), &ChatSettings::default()).await;
    let reply = reply.unwrap();
    assert_eq!((reply.tool_calls[0].name.as_str(), &reply.tool_calls[0].arguments), ("add", &json!({"a": 1})));
    assert_eq!(fake.calls()[1].body["tools"][0]["function"]["name"], "add");

    // Images for vision models: inline, as a data URI.
    fake.push_reply(ScriptedReply::Text("a cat".into()));
    let parts = vec![ContentPart::text("What is this?"), ContentPart::image_bytes("image/jpeg", b"\xff\xd8\xff")];
    model.chat(&[ChatMessage::user_parts(parts)], &[], &ChatSettings::default()).await.unwrap();
    assert_eq!(
        fake.calls()[2].body["messages"][0]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}})
    );

    // Streaming.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let sink = DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned()));
    fake.push_reply(ScriptedReply::Text("one two three four".into()));
    let settings = ChatSettings { stream: Some(sink), ..Default::default() };
    let reply = model.chat(&[ChatMessage::user("count")], &[], &settings).await.unwrap();
    assert_eq!(reply.content.as_deref(), Some("one two three four"));
    assert_eq!(*seen.lock().unwrap(), ["one ", "two ", "three ", "four"]);
}

#[tokio::test]
async fn a_zero_price_for_every_local_model() {
    let fake = FakeProvider::start().await.unwrap();
    let file: toml::Table = "[cost]\nstrict = true\n[cost.providers.ollama.\"*\"]\nprompt_tokens_per_1k = 0.0\n\
                             completion_tokens_per_1k = 0.0\n"
        .parse()
        .unwrap();
    let registry = registry_with(LlmConfig::from_toml(&file).unwrap(), &[("OLLAMA_HOST", host_of(&fake))]);
    assert!(registry.check_pricing("ollama:llama3.2").is_ok());
    fake.push_reply_with_usage(ScriptedReply::Text("ok".into()), TokenUsage::new(1200, 300));
    let answer = registry.resolve_agent("ollama:llama3.2", &Value::Null).unwrap().run(&json!("x"), None).await;
    let answer = answer.unwrap();
    assert_eq!((answer.usage, answer.cost_usd), (TokenUsage::new(1200, 300), 0.0));
    // Strict pricing without that section refuses the model before any request.
    let strict = registry_with(
        LlmConfig::default().with_pricing(PricingTable::new().strict(true)),
        &[("OLLAMA_HOST", host_of(&fake))],
    );
    assert!(matches!(strict.check_pricing("ollama:llama3.2"), Err(PricingError::NotConfigured { .. })));
}
