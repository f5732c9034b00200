//! Models, round 2, through the `flujo` binary against the fake provider (real HTTP on 127.0.0.1): a YAML
//! fallback chain across providers, a multimodal `{parts}` input with a local image, reasoning settings from
//! `model_settings`, and the model that answered in `--json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fake_project, flujo};
use flujo_core::TokenUsage;
use flujo_llm::testing::{ScriptedReply, FAKE_API_KEY};
use serde_json::Value;

const PIPELINE: &str = r#"version: "0.1"
name: round2
agents:
  looker:
    model: ["openai:gpt-test", "gemini:gemini-2.5-flash"]
    system_prompt: "Describe what you are given."
    model_settings: {max_tokens: 4000, reasoning_effort: low}
steps:
  - name: look
    uses: agents.looker
    input:
      parts:
        - "What is in {{ initial_prompt }}?"
        - {image: "cat.png"}
    config: {max_retries: 0}
"#;

#[test]
fn a_yaml_fallback_chain_with_an_image_answers_from_the_second_provider() {
    let toml = format!(
        "state_uri = \"memory://\"\n[cost.providers.gemini.\"*\"]\nprompt_tokens_per_1k = 1.0\ncompletion_tokens_per_1k = 2.0\n\
         [providers.gemini]\nbase_url = \"{{BASE}}\"\napi_key = \"{FAKE_API_KEY}\"\n"
    );
    let env = fake_project(&[("pipeline.yaml", PIPELINE)], "");
    // The OpenAI section fake_project writes, with one attempt (no back-off wait), and a Gemini section.
    let path = env.dir.path().join("flujo.toml");
    let written = std::fs::read_to_string(&path).unwrap();
    let toml = toml.replace("{BASE}", &env.fake.base_url());
    std::fs::write(&path, format!("{toml}{}max_attempts = 1\n", written.trim_start())).unwrap();
    std::fs::write(env.dir.path().join("cat.png"), b"\x89PNG\r\n\x1a\nfake image").unwrap();
    env.fake.push_reply(ScriptedReply::Status { code: 503, retry_after: None });
    env.fake.push_reply_with_usage(ScriptedReply::Text("A cat.".into()), TokenUsage::new(1000, 100).with_reasoning(40));

    let o = flujo(env.dir.path(), &["run", "-i", "the picture", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    });
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["output"], "A cat.");
    let step = &v["step_history"][0];
    assert_eq!(step["metadata"]["model"], "gemini:gemini-2.5-flash", "{step}");
    assert_eq!(step["metadata"]["model_fallbacks"][0]["model"], "openai:gpt-test");
    assert_eq!(step["tokens"]["reasoning"], 40);
    assert!((v["total_cost_usd"].as_f64().unwrap() - (1.0 + 0.2)).abs() < 1e-9, "{v}");

    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2);
    // OpenAI got the image inline (a file) and the effort; Gemini the same content in its own shape.
    let openai = &calls[0].body;
    assert_eq!(openai["reasoning_effort"], "low");
    let parts = openai["messages"][1]["content"].as_array().unwrap();
    assert_eq!(parts[0]["text"], "What is in the picture?");
    assert!(parts[1]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));
    assert!(calls[1].path.ends_with("gemini-2.5-flash:generateContent"), "{}", calls[1].path);
    let gemini_parts = calls[1].body["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(gemini_parts[1]["inlineData"]["mimeType"], "image/png");
    // The journal keeps the reference, never the bytes.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("iVBORw0KGgo"), "image bytes leaked into the result");
}

#[test]
fn validate_reports_every_model_of_a_chain() {
    let bad = PIPELINE.replace("gemini:gemini-2.5-flash", "gemni:gemini-2.5-flash");
    let env = fake_project(&[("pipeline.yaml", &bad)], "state_uri = \"memory://\"\n");
    let o = flujo(env.dir.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stdout));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("BP-MODEL") && text.contains("did you mean `gemini:gemini-2.5-flash`"), "{text}");
}

/// `flujo status` checks every built-in provider without sending anything.
#[test]
fn status_lists_every_provider() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flujo.toml"), "state_uri = \"memory://\"\n").unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut c = common::cmd(dir.path(), &["status", "--format", "json"]);
        c.env("HOME", dir.path());
        for k in [
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "AZURE_OPENAI_API_KEY",
            "AZURE_OPENAI_AD_TOKEN",
            "AZURE_OPENAI_ENDPOINT",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_CONFIG_FILE",
            "OLLAMA_HOST",
            "OLLAMA_BASE_URL",
        ] {
            c.env_remove(k);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let status = |n: &str| {
            v["providers"].as_array().unwrap().iter().find(|p| p["name"] == n).unwrap_or_else(|| panic!("{n}: {v}"))
                ["status"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let all: Vec<String> =
            ["openai", "openai-responses", "anthropic", "gemini", "azure", "bedrock", "ollama"].map(status).to_vec();
        assert!(!String::from_utf8_lossy(&o.stdout).contains("secret-value"), "a secret leaked");
        all
    };
    assert_eq!(run(&[]), ["MISSING", "MISSING", "MISSING", "MISSING", "NOT_CONFIGURED", "MISSING", "NO_KEY_NEEDED"]);
    let with = run(&[
        ("OPENAI_API_KEY", "secret-value"),
        ("GEMINI_API_KEY", "secret-value"),
        ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
        ("AZURE_OPENAI_AD_TOKEN", "secret-value"),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret-value"),
    ]);
    // Bedrock has credentials but no region: it cannot be called.
    assert_eq!(with, ["ENABLED", "ENABLED", "MISSING", "ENABLED", "ENABLED", "NOT_CONFIGURED", "NO_KEY_NEEDED"]);
    let with_region = run(&[
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret-value"),
        ("AWS_REGION", "us-east-1"),
    ]);
    assert_eq!(with_region[5], "ENABLED");
}
