//! `flujo dev prices` through the real binary: the dated built-in table, `[cost]` overrides marked, strict and
//! lenient modes, `builtin_prices = false`, `--provider`, `--json`; and a lenient run against the fake
//! provider charged at the built-in list price, cached and reasoning tokens included, as `dev prices` shows it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{code, fake_project, flujo, json_out, project, stderr, stdout};
use flujo_core::TokenUsage;
use flujo_llm::pricing::builtin::BUILTIN_PRICES_AS_OF;
use flujo_llm::testing::ScriptedReply;
use serde_json::Value;

fn entry<'a>(v: &'a Value, provider: &str, model: &str, source: &str) -> &'a Value {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["provider"] == provider && e["model"] == model && e["source"] == source)
        .unwrap_or_else(|| panic!("no {source} entry {provider}:{model} in {v}"))
}

#[test]
fn without_cost_the_builtin_table_applies_and_is_dated() {
    let dir = project(&[]);
    let o = flujo(dir.path(), &["dev", "prices", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["as_of"], BUILTIN_PRICES_AS_OF);
    assert_eq!((v["currency"].as_str(), v["unit"].as_str()), (Some("USD"), Some("per_1k_tokens")));
    assert_eq!((v["strict"].as_bool(), v["builtin_prices"].as_bool()), (Some(false), Some(true)));
    assert_eq!(v["builtin_applies"], true);
    let providers: std::collections::BTreeSet<&str> =
        v["entries"].as_array().unwrap().iter().map(|e| e["provider"].as_str().unwrap()).collect();
    for p in ["openai", "openai-responses", "azure", "anthropic", "gemini", "bedrock", "ollama"] {
        assert!(providers.contains(p), "{p} missing: {providers:?}");
    }
    let gpt4o = entry(&v, "openai", "gpt-4o", "builtin");
    assert_eq!(gpt4o["price"]["prompt_tokens_per_1k"], 0.0025);
    assert_eq!(gpt4o["price"]["cached_prompt_tokens_per_1k"], 0.00125);
    assert!(gpt4o["price"].get("reasoning_tokens_per_1k").is_none(), "{gpt4o}");
    assert_eq!((gpt4o["applies"].as_bool(), gpt4o["overridden_by"].is_null()), (Some(true), true));
    let sonnet = entry(&v, "anthropic", "claude-sonnet-4-5", "builtin");
    assert_eq!(sonnet["price"]["cache_write_tokens_per_1k"], 0.00375);
    assert_eq!(entry(&v, "ollama", "*", "builtin")["price"]["prompt_tokens_per_1k"], 0.0);

    let o = flujo(dir.path(), &["dev", "prices"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(&format!("as of {BUILTIN_PRICES_AS_OF}")), "{text}");
    assert!(text.contains("pricing: lenient: models without a [cost] price take the built-in price"), "{text}");
    assert!(text.contains("anthropic.claude-sonnet-4-5-20250929-v1:0"), "{text}");
}

#[test]
fn cost_entries_override_builtin_ones_and_are_marked() {
    let dir = project(&[(
        "flujo.toml",
        "[cost.providers.openai.\"gpt-4o\"]\nprompt_tokens_per_1k = 0.002\ncompletion_tokens_per_1k = 0.008\n\
         [cost.providers.anthropic.\"*\"]\nprompt_tokens_per_1k = 0.001\ncompletion_tokens_per_1k = 0.002\n\
         [cost.providers.local.\"my-model\"]\nprompt_tokens_per_1k = 0\ncompletion_tokens_per_1k = 0\n",
    )]);
    let o = flujo(dir.path(), &["dev", "prices", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    let gpt4o = entry(&v, "openai", "gpt-4o", "builtin");
    assert_eq!((gpt4o["overridden_by"].as_str(), gpt4o["applies"].as_bool()), (Some("gpt-4o"), Some(false)));
    let mini = entry(&v, "openai", "gpt-4o-mini", "builtin");
    assert_eq!((mini["overridden_by"].is_null(), mini["applies"].as_bool()), (true, Some(true)));
    let cost = entry(&v, "openai", "gpt-4o", "cost");
    assert_eq!((cost["price"]["prompt_tokens_per_1k"].as_f64(), cost["applies"].as_bool()), (Some(0.002), Some(true)));
    // The provider's "*" overrides every built-in entry of that provider.
    let haiku = entry(&v, "anthropic", "claude-haiku-4-5", "builtin");
    assert_eq!(haiku["overridden_by"], "*");
    entry(&v, "local", "my-model", "cost");

    let o = flujo(dir.path(), &["dev", "prices", "--provider", "openai"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    let line = text.lines().find(|l| l.starts_with("openai") && l.contains(" gpt-4o ")).unwrap();
    assert!(line.contains("overridden by [cost] \"gpt-4o\""), "{text}");
    assert!(!text.contains("anthropic"), "--provider filters: {text}");
    assert!(text.lines().any(|l| l.contains(" gpt-4o ") && l.ends_with("[cost]")), "{text}");

    let o = flujo(dir.path(), &["dev", "prices", "--provider", "local", "--json"]);
    let v = json_out(&o);
    assert_eq!(v["entries"].as_array().unwrap().len(), 1, "{v}");
    let o = flujo(dir.path(), &["dev", "prices", "--provider", "opnai"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("no prices for opnai"), "{}", stdout(&o));
}

#[test]
fn strict_mode_and_builtin_prices_off_say_the_table_does_not_apply() {
    let dir = project(&[(
        "flujo.toml",
        "[cost]\nstrict = true\n[cost.providers.openai.\"gpt-4o\"]\nprompt_tokens_per_1k = 1\ncompletion_tokens_per_1k = 1\n",
    )]);
    let v = json_out(&flujo(dir.path(), &["dev", "prices", "--json"]));
    assert_eq!((v["strict"].as_bool(), v["builtin_applies"].as_bool()), (Some(true), Some(false)));
    assert_eq!(entry(&v, "openai", "gpt-4o-mini", "builtin")["applies"], false);
    assert_eq!(entry(&v, "openai", "gpt-4o", "cost")["applies"], true);
    let text = stdout(&flujo(dir.path(), &["dev", "prices", "--provider", "openai"]));
    assert!(text.contains("pricing: strict: only [cost] prices count"), "{text}");
    assert!(text.contains("built-in (not used: strict)"), "{text}");

    let dir = project(&[("flujo.toml", "[cost]\nbuiltin_prices = false\n")]);
    let v = json_out(&flujo(dir.path(), &["dev", "prices", "--json"]));
    assert_eq!((v["strict"].as_bool(), v["builtin_prices"].as_bool()), (Some(false), Some(false)));
    assert_eq!(v["builtin_applies"], false);
    let text = stdout(&flujo(dir.path(), &["dev", "prices"]));
    assert!(text.contains("built-in prices off"), "{text}");
    assert!(text.contains("built-in (off)"), "{text}");

    let dir = project(&[("flujo.toml", "[cost]\nbuiltin_prices = \"yes\"\n")]);
    let o = flujo(dir.path(), &["dev", "prices", "--json"]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert_eq!(json_out(&o)["error"]["kind"], "config_error", "{}", stdout(&o));
}

const PIPELINE: &str = r#"version: "0.1"
name: priced
agents:
  writer:
    model: "openai:gpt-4o-mini-2024-07-18"
    system_prompt: "You write one line."
    model_settings: {max_tokens: 100}
steps:
  - name: draft
    uses: agents.writer
    config: {max_retries: 0}
"#;

/// Lenient pricing, no `[cost]` price for the model: the run is charged the built-in list price of its base
/// name, its cached prompt tokens at the cached rate, and `--json` shows the usage details.
#[test]
fn a_lenient_run_is_charged_the_builtin_price_with_usage_details() {
    let env = fake_project(&[("pipeline.yaml", PIPELINE)], "state_uri = \"memory://\"\n");
    let usage = TokenUsage::new(10_000, 2_000).with_cache(4_000, 0).with_reasoning(500);
    env.fake.push_reply_with_usage(ScriptedReply::Text("A fine line.".into()), usage);
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    let prices = json_out(&flujo(env.dir.path(), &["dev", "prices", "--provider", "openai", "--json"]));
    let p = &entry(&prices, "openai", "gpt-4o-mini", "builtin")["price"];
    let rate = |k: &str| p[k].as_f64().unwrap();
    let want = 6.0 * rate("prompt_tokens_per_1k")
        + 4.0 * rate("cached_prompt_tokens_per_1k")
        + 2.0 * rate("completion_tokens_per_1k");
    let got = v["total_cost_usd"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-12, "charged {got}, want {want}: {v}");
    assert!(got > 0.0);
    let tokens = &v["step_history"][0]["tokens"];
    assert_eq!(tokens["prompt"], 10_000);
    assert_eq!(tokens["completion"], 2_000);
    assert_eq!(tokens["cached"], 4_000);
    assert_eq!(tokens["reasoning"], 500);
    assert!(tokens.get("cache_write").is_none(), "zero details are left out: {tokens}");
    assert_eq!(v["total_tokens"], 12_000);
}
