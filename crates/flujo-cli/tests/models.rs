//! Model steps through the `flujo` binary against a local fake provider (OpenAI-shaped, real HTTP on
//! 127.0.0.1): pricing, usage and cost in `--json`, strict pricing stopping before any call, budgets from
//! `flujo.toml` refusing a call that does not fit. Nothing reaches the internet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use common::{fake_project, flujo, FakeProject};
use flujo_core::TokenUsage;
use flujo_llm::testing::ScriptedReply;
use serde_json::Value;

const PIPELINE: &str = r#"version: "0.1"
name: writer_pipeline
agents:
  writer:
    model: "openai:gpt-test"
    system_prompt: "You write one line."
    model_settings: {max_tokens: 100}
steps:
  - name: draft
    uses: agents.writer
    config: {max_retries: 0}
"#;

fn setup(toml_extra: &str) -> FakeProject {
    fake_project(&[("pipeline.yaml", PIPELINE)], &format!("state_uri = \"memory://\"\n{toml_extra}"))
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    })
}

#[test]
fn a_priced_model_step_reports_tokens_and_cost() {
    let env = setup("[cost]\nstrict = true\n[cost.providers.openai.\"gpt-test\"]\nprompt_tokens_per_1k = 1.0\ncompletion_tokens_per_1k = 2.0\n");
    env.fake.push_reply_with_usage(ScriptedReply::Text("A fine line.".into()), TokenUsage::new(100, 50));
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["output"], "A fine line.");
    assert_eq!(v["total_tokens"], 150);
    assert!((v["total_cost_usd"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{v}");
    assert_eq!(v["step_history"][0]["tokens"]["prompt"], 100);
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].headers.get("authorization").map(String::as_str), Some("[REDACTED]"));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("sk-test-key"));
}

#[test]
fn strict_pricing_without_a_price_exits_2_before_any_call() {
    let env = setup("[cost]\nstrict = true\n");
    env.fake.push_reply(ScriptedReply::Text("never".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["kind"], "pricing_not_configured");
    assert!(v["error"]["message"].as_str().unwrap().contains("openai:gpt-test"), "{v}");
    assert!(env.fake.calls().is_empty(), "the fake provider was called: {:?}", env.fake.calls());
}

#[test]
fn a_budget_that_cannot_fit_the_call_refuses_it_before_it_is_made() {
    let env = setup(
        "[cost.providers.openai.\"gpt-test\"]\nprompt_tokens_per_1k = 1.0\ncompletion_tokens_per_1k = 2.0\n\
         [budgets.default]\ntotal_cost_usd_limit = 5.0\n[budgets.pipeline.\"writer_*\"]\ntotal_cost_usd_limit = 0.01\n",
    );
    env.fake.push_reply(ScriptedReply::Text("never".into()));
    let o = flujo(env.dir.path(), &["dev", "budgets"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let b: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["total_cost_usd_limit"], 0.01, "the strictest limit wins: {b}");
    assert!(b["sources"][0].as_str().unwrap().contains("budgets.pipeline.\"writer_*\""), "{b}");
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "usage_limit_exceeded");
    assert!(env.fake.calls().is_empty(), "a call that does not fit is never made");
}

const AGENTIC: &str = r#"version: "0.1"
name: agentic_yaml
agents:
  planner:
    model: "openai:gpt-test"
    system_prompt: "Use the tools, then answer."
steps:
  - kind: agentic_loop
    name: solve
    planner: agents.planner
    tools: [flujo.builtins.stringify]
    max_turns: 4
"#;

#[test]
fn a_yaml_agentic_loop_calls_tools_and_answers() {
    let env = setup("");
    std::fs::write(env.dir.path().join("agentic.yaml"), AGENTIC).unwrap();
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: "flujo_builtins_stringify".into(),
        arguments: serde_json::json!({"x": [1, 2]}),
    });
    env.fake.push_reply(ScriptedReply::Text("{\"answer\": 42}".into()));
    let o = flujo(env.dir.path(), &["run", "agentic.yaml", "-i", "go", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["output"], serde_json::json!({"answer": 42}));
    assert_eq!(v["step_history"][0]["kind"], "agentic_loop");
    assert_eq!(v["step_history"][0]["metadata"]["tool_calls"], 1);
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[1].body.to_string().contains(r#"{\"x\":[1,2]}"#), "the tool result goes back: {}", calls[1].body);
}

/// A plain step whose agent declares `tools:` offers them to the model (SPEC §6): the call is executed,
/// journaled and fed back, and the agent's `output_schema` holds for the final answer.
const TOOL_STEP: &str = r#"version: "0.1"
name: tool_step_yaml
agents:
  helper:
    model: "openai:gpt-test"
    system_prompt: "Answer about {{ previous_step }} using the tools."
    tools: [flujo.builtins.stringify]
    max_turns: 3
    max_retries: 0
    output_schema: {type: object, properties: {answer: {type: integer}}, required: [answer]}
steps:
  - name: ask
    uses: agents.helper
    max_retries: 0
"#;

#[test]
fn a_yaml_step_whose_agent_declares_tools_calls_them() {
    let env = setup("");
    std::fs::write(env.dir.path().join("tool_step.yaml"), TOOL_STEP).unwrap();
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: "flujo_builtins_stringify".into(),
        arguments: serde_json::json!({"x": [1, 2]}),
    });
    env.fake.push_reply(ScriptedReply::Text("```json\n{\"answer\": 42}\n```".into()));
    let o = flujo(env.dir.path(), &["run", "tool_step.yaml", "-i", "lists", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["output"], serde_json::json!({"answer": 42}));
    assert_eq!(v["step_history"][0]["kind"], "step");
    assert_eq!(v["step_history"][0]["metadata"]["tool_calls"], 1);
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2);
    let first = calls[0].body.to_string();
    assert!(first.contains("Answer about lists using the tools."), "the system prompt is rendered: {first}");
    assert!(first.contains("flujo_builtins_stringify"), "the tool is offered: {first}");
    assert!(calls[1].body.to_string().contains(r#"{\"x\":[1,2]}"#), "the tool result goes back: {}", calls[1].body);

    // `max_turns: 0` is refused when the blueprint is validated.
    let bad = TOOL_STEP.replace("max_turns: 3", "max_turns: 0");
    std::fs::write(env.dir.path().join("bad.yaml"), bad).unwrap();
    let o = flujo(env.dir.path(), &["validate", "bad.yaml"]);
    assert_eq!(o.status.code(), Some(4), "validation failed");
    assert!(String::from_utf8_lossy(&o.stdout).contains("`max_turns` of agent `helper` must be at least 1"));
}

/// `flujo run --live` streams the model's answer to stderr as it is generated (SPEC §6); without `--live`
/// the provider is not asked for a stream. The result is the same either way.
#[test]
fn live_runs_stream_token_deltas() {
    let env = setup("");
    env.fake.push_reply(ScriptedReply::Text("Rain taps the tin roof".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "rain", "--live", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("✎ 0 Rain taps the tin roof\n"), "the answer streams under its step path: {stderr}");
    let streamed = stderr.find("✎ 0").unwrap();
    let finished = stderr.find("✓ 0 draft").unwrap();
    assert!(streamed < finished, "tokens arrive before the step finishes: {stderr}");
    assert_eq!(json_of(&o)["output"], "Rain taps the tin roof");
    assert_eq!(env.fake.calls()[0].body["stream"], true);

    env.fake.push_reply(ScriptedReply::Text("Rain taps the tin roof".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "rain", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json_of(&o)["output"], "Rain taps the tin roof");
    assert!(env.fake.calls()[1].body.get("stream").is_none(), "no stream without --live");
}

/// Token and cost figures reach `lens spans` under the GenAI attribute names, and `FLUJO_LOG=info` prints the
/// live `flujo.step` and `gen_ai.chat` spans with the same attributes.
#[test]
fn spans_carry_gen_ai_attributes() {
    let env =
        setup("[cost.providers.openai.\"gpt-test\"]\nprompt_tokens_per_1k = 1.0\ncompletion_tokens_per_1k = 2.0\n");
    env.fake.push_reply_with_usage(ScriptedReply::Text("a line".into()), TokenUsage::new(30, 6));
    let state = format!("sqlite:///{}", env.dir.path().join("state.db").display());
    let o = common::cmd(env.dir.path(), &["run", "-i", "x", "--json", "--state", &state, "--run-id", "spans-1"])
        .env("FLUJO_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let chat = stderr.lines().find(|l| l.contains("gen_ai.chat") && l.contains("close")).unwrap_or_default();
    for attr in ["gen_ai.request.model=\"gpt-test\"", "gen_ai.usage.input_tokens=30", "gen_ai.usage.output_tokens=6"] {
        assert!(chat.contains(attr), "{attr} in {chat:?}\n{stderr}");
    }
    assert!(stderr.lines().any(|l| l.contains("flujo.step") && l.contains("flujo.cost_usd=0.04")), "{stderr}");

    let o = flujo(env.dir.path(), &["lens", "spans", "spans-1", "--state", &state, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let spans = json_of(&o);
    let a = &spans[0]["attributes"];
    assert_eq!(a["gen_ai.provider.name"], "openai", "{spans}");
    assert_eq!(a["gen_ai.request.model"], "gpt-test");
    assert_eq!(a["gen_ai.usage.input_tokens"], 30);
    assert_eq!(a["gen_ai.usage.output_tokens"], 6);
    assert!((a["flujo.cost_usd"].as_f64().unwrap() - 0.042).abs() < 1e-12);
}

/// Always-invalid structured output through the binary: two requests (the agent's re-ask; the step does not
/// multiply them), the message counts them, and the run is charged the real usage — not the reservation.
#[test]
fn a_failed_structured_call_reports_its_real_usage() {
    let env =
        setup("[cost.providers.openai.\"gpt-test\"]\nprompt_tokens_per_1k = 1.0\ncompletion_tokens_per_1k = 2.0\n");
    let p = PIPELINE.replace(
        "    model_settings: {max_tokens: 100}\n",
        "    model_settings: {max_tokens: 100}\n    output_schema: {type: object, required: [n]}\n",
    );
    std::fs::write(env.dir.path().join("pipeline.yaml"), p.replace("max_retries: 0", "max_retries: 3")).unwrap();
    for _ in 0..8 {
        env.fake.push_reply_with_usage(ScriptedReply::Text("nope".into()), TokenUsage::new(30, 12));
    }
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(env.fake.call_count(), 2, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("after 2 attempt(s)"), "{v}");
    assert_eq!(v["total_tokens"], 84);
    assert!((v["total_cost_usd"].as_f64().unwrap() - 0.108).abs() < 1e-9, "{v}");
    assert_eq!(v["step_history"][0]["tokens"]["prompt"], 60);
}

/// A missing API key is found before the first step: exit 2, and the command skill before the model step
/// (a side effect) never runs.
#[test]
fn a_missing_key_exits_2_before_any_step_runs() {
    let env = setup("");
    std::fs::write(
        env.dir.path().join("flujo.toml"),
        "state_uri = \"memory://\"\n[providers.openai]\napi_key_env = \"FLUJO_TEST_KEY_THAT_IS_NOT_SET\"\n",
    )
    .unwrap();
    std::fs::write(
        env.dir.path().join("skills.yaml"),
        "skills:\n  touch:\n    command: [sh, -c, \"echo ran > effect.txt; cat\"]\n    side_effects: true\n",
    )
    .unwrap();
    let p = PIPELINE.replace("steps:\n", "steps:\n  - name: effect\n    agent: touch\n");
    std::fs::write(env.dir.path().join("pipeline.yaml"), p).unwrap();
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "missing_api_key", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("FLUJO_TEST_KEY_THAT_IS_NOT_SET"), "{v}");
    assert!(!env.dir.path().join("effect.txt").exists(), "the step before the model ran");
    assert_eq!(v["step_history"], serde_json::json!([]));
}

/// `--live` shows each attempt of a re-asked answer on its own line, and the tool calls of a loop.
#[test]
fn live_shows_attempts_apart_and_tool_calls() {
    let env = setup("");
    let p = PIPELINE.replace(
        "    model_settings: {max_tokens: 100}\n",
        "    model_settings: {max_tokens: 100}\n    output_schema: {type: object, required: [n]}\n",
    );
    std::fs::write(env.dir.path().join("pipeline.yaml"), p).unwrap();
    env.fake.push_reply(ScriptedReply::Text("first try".into()));
    env.fake.push_reply(ScriptedReply::Text("{\"n\": 1}".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--live", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("✎ 0 first try\n"), "{stderr}");
    assert!(stderr.contains("✎ 0 (attempt 2) {\"n\": 1}\n"), "{stderr}");

    std::fs::write(env.dir.path().join("agentic.yaml"), AGENTIC).unwrap();
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: "flujo_builtins_stringify".into(),
        arguments: serde_json::json!({"x": [1, 2]}),
    });
    env.fake.push_reply(ScriptedReply::ToolCall { name: "no_such_tool".into(), arguments: serde_json::json!({}) });
    env.fake.push_reply(ScriptedReply::Text("{\"answer\": 42}".into()));
    let o = flujo(env.dir.path(), &["run", "agentic.yaml", "-i", "go", "--live"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("⚒ 0/turn:0/tool:0 flujo.builtins.stringify {\"x\":[1,2]}"), "{stderr}");
    assert!(stderr.contains("↳ 0/turn:0/tool:0 flujo.builtins.stringify ok"), "{stderr}");
    // The unknown tool is reported to the model under the names it was offered.
    let third = env.fake.calls()[4].body.to_string();
    assert!(third.contains("unknown tool 'no_such_tool' (available: flujo_builtins_stringify)"), "{third}");
}

/// A refusal fails the step (exit 1) with the finish reason in `--json`; a text answer cut off at max_tokens
/// completes with a warning on stderr and in the step's metadata.
#[test]
fn refusals_fail_and_cut_off_answers_warn() {
    let env = setup("");
    env.fake.push_reply(ScriptedReply::Refusal("I can't help with that.".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert!(v["error"]["message"].as_str().unwrap().contains("refused"), "{v}");
    assert_eq!(v["step_history"][0]["metadata"]["finish_reason"], "stop");

    env.fake.push_reply(ScriptedReply::CutOff("Once upon a".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["step_history"][0]["metadata"]["finish_reason"], "length");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("warning: step 'draft' (0): the answer was cut off at max_tokens (100)"), "{stderr}");
}

/// A provider asking to wait 120 s (longer than Flujo waits) is not asked again 0.05 s later by the step.
#[test]
fn a_long_retry_after_ends_the_step() {
    let env = setup("");
    std::fs::write(env.dir.path().join("pipeline.yaml"), PIPELINE.replace("max_retries: 0", "max_retries: 4")).unwrap();
    env.fake.push_reply(ScriptedReply::Status { code: 503, retry_after: Some(120) });
    env.fake.push_reply(ScriptedReply::Text("too soon".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(env.fake.call_count(), 1, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("after 1 attempt(s)") && msg.contains("retry after 120s"), "{msg}");
}

/// A parallel step stopped by the budget shows the work its finished branches paid for: the parallel step is
/// in `step_history` with their outputs, tokens and cost, and is the run's output.
#[test]
fn a_parallel_step_stopped_by_the_budget_shows_the_paid_branches() {
    let env = setup("[budgets.default]\ntotal_tokens_limit = 90\n");
    let p = r#"version: "0.1"
name: fan_out
agents:
  w:
    model: "openai:gpt-test"
    model_settings: {max_tokens: 10}
steps:
  - kind: parallel
    name: fan
    branches:
      a: [{name: a, uses: agents.w}]
      b: [{name: b, uses: agents.w}]
      c: [{name: c, uses: agents.w}]
      d: [{name: d, uses: agents.w}]
"#;
    std::fs::write(env.dir.path().join("fan.yaml"), p).unwrap();
    // Each call reports exactly its reservation (27 tokens), so three fit in 90 whichever order the branches
    // reserve and finish in; the fourth is refused.
    for _ in 0..4 {
        env.fake.push_reply_with_usage(ScriptedReply::Text("paid".into()), TokenUsage::new(17, 10));
    }
    let o = flujo(env.dir.path(), &["run", "fan.yaml", "-i", "x", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "usage_limit_exceeded", "{v}");
    assert_eq!(env.fake.call_count(), 3);
    assert_eq!(v["total_tokens"], 81);
    let fan = v["step_history"].as_array().unwrap().iter().find(|s| s["name"] == "fan").expect("fan in history");
    assert_eq!(fan["tokens"]["prompt"], 51, "{v}");
    assert_eq!(fan["output"].as_object().unwrap().len(), 3, "{v}");
    assert_eq!(v["output"], fan["output"]);
}

/// `dev health-check` reads the journal of recent runs: a structured answer that needed a repair request, a
/// failed model step, per step and per model, as tables, JSON and CSV.
#[test]
fn health_check_finds_repairs_and_failures() {
    let env = setup("");
    let structured = "version: \"0.1\"\nname: facts\nagents:\n  extractor:\n    model: \"openai:gpt-test\"\n    system_prompt: \"Extract.\"\n    output_schema: {type: object, properties: {n: {type: integer}}, required: [n]}\n    max_retries: 2\nsteps:\n  - name: extract\n    uses: agents.extractor\n    config: {max_retries: 0}\n";
    std::fs::write(env.dir.path().join("facts.yaml"), structured).unwrap();
    let toml =
        std::fs::read_to_string(env.dir.path().join("flujo.toml")).unwrap().replace("memory://", "sqlite:///state.db");
    std::fs::write(env.dir.path().join("flujo.toml"), toml).unwrap();
    env.fake.push_reply(ScriptedReply::Text("no JSON here".into()));
    env.fake.push_reply(ScriptedReply::Json(serde_json::json!({"n": 3})));
    let o = flujo(env.dir.path(), &["run", "facts.yaml", "-i", "x", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    env.fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
    let o = flujo(env.dir.path(), &["run", "-i", "topic", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let o = flujo(env.dir.path(), &["dev", "health-check", "--export", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["runs"], 2);
    assert_eq!(v["total"]["repaired_outputs"], 1, "{v}");
    assert_eq!(v["total"]["failed"], 1, "{v}");
    let steps = v["steps"].as_array().unwrap();
    let extract = steps.iter().find(|s| s["step"] == "facts / extract").unwrap();
    assert_eq!(extract["repaired_outputs"], 1);
    let draft = steps.iter().find(|s| s["step"] == "writer_pipeline / draft").unwrap();
    assert_eq!(draft["failed"], 1);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["model"], "openai:gpt-test");
    assert_eq!(models[0]["executions"], 2);
    // Filters and the other outputs.
    let o = flujo(env.dir.path(), &["dev", "health-check", "--export", "json", "--pipeline", "facts"]);
    assert_eq!(json_of(&o)["total"]["failed"], 0);
    let o = flujo(env.dir.path(), &["dev", "health-check"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("1 structured output(s) repaired") && text.contains("facts / extract"), "{text}");
    let o = flujo(env.dir.path(), &["dev", "health-check", "--export", "csv", "--output", "health"]);
    assert_eq!(o.status.code(), Some(0));
    let csv = std::fs::read_to_string(env.dir.path().join("health_steps.csv")).unwrap();
    assert!(csv.starts_with("step,runs,executions,failed") && csv.contains("facts / extract"), "{csv}");
    assert!(env.dir.path().join("health_models.csv").is_file());
}
