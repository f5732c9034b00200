//! Governance through the `flujo` binary, against a local fake provider (real HTTP on 127.0.0.1): each
//! built-in policy's allow and deny paths (a denied call is never made: the fake provider records nothing),
//! scrubbing seen in the request body, the external policy program (allow, deny, modify, crash and timeout
//! both deny), decisions in the journal, `lens show` and `lens trace`, `dev governance`, and bad settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
mod common;

use std::process::Output;

use common::{fake_project, flujo, FakeProject};
use flujo_llm::testing::ScriptedReply;
use serde_json::{json, Value};

const PIPELINE: &str = r#"version: "0.1"
name: support_reply
agents:
  writer:
    model: "openai:gpt-test"
    system_prompt: "You answer customers."
steps:
  - name: draft
    uses: agents.writer
    config: {max_retries: 2}
    fallback:
      name: canned
      agent: {id: flujo.builtins.transform, params: {expr: "'canned answer'"}}
"#;

const AGENTIC: &str = r#"version: "0.1"
name: researcher
agents:
  planner:
    model: "openai:gpt-test"
    system_prompt: "Use the tools, then answer."
steps:
  - kind: agentic_loop
    name: solve
    planner: agents.planner
    tools: [flujo.builtins.stringify, flujo.builtins.flatten]
    max_turns: 4
"#;

fn setup(governance: &str) -> FakeProject {
    fake_project(
        &[("pipeline.yaml", PIPELINE), ("agentic.yaml", AGENTIC)],
        &format!("state_uri = \"sqlite:///state.db\"\n{governance}"),
    )
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `pipeline.yaml` with `input` and returns the `--json` object and the exit code.
fn run(env: &FakeProject, input: &str) -> (Value, i32) {
    let o = flujo(env.dir.path(), &["run", "-i", input, "--json"]);
    (json_of(&o), o.status.code().unwrap_or(-1))
}

/// Expects the run to be denied by `policy`: exit 1, kind `governance_denied`, no call made, no fallback.
fn assert_denied(env: &FakeProject, v: &Value, code: i32, policy: &str) {
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["kind"], "governance_denied", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("'{policy}'")), "names the policy: {msg}");
    assert!(env.fake.calls().is_empty(), "a denied call is never made");
    assert_ne!(v["output"], "canned answer", "a denial is not a step failure: no fallback");
}

#[test]
fn pii_is_scrubbed_before_the_model_sees_it_and_the_journal_says_what_kind() {
    let env = setup("[governance]\npolicies = [\"pii_scrub\"]\n");
    env.fake.push_reply(ScriptedReply::Text("Done.".into()));
    let secret = "Mail ana.gomez@example.com, card 4111 1111 1111 1111, or call +34 612 345 678";
    let (v, code) = run(&env, secret);
    assert_eq!(code, 0, "{v}");
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 1);
    let body = calls[0].body.to_string();
    assert!(!body.contains("ana.gomez@example.com") && !body.contains("4111"), "{body}");
    assert!(body.contains("Mail [REDACTED], card [REDACTED], or call [REDACTED]"), "{body}");
    let g = &v["step_history"][0]["metadata"]["governance"][0];
    assert_eq!((g["policy"].as_str(), g["decision"].as_str()), (Some("pii_scrub"), Some("modify")), "{v}");
    assert_eq!(g["note"], "scrubbed: card x1, email x1, phone x1");
    // The journal records the kinds, never the values; `lens show` and `lens trace` show the decision.
    let run_id = v["run_id"].as_str().unwrap();
    let show = flujo(env.dir.path(), &["lens", "show", run_id]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("governance:") && text.contains("pii_scrub modify (scrubbed: card x1, email x1, phone x1)"),
        "{text}"
    );
    let trace = flujo(env.dir.path(), &["lens", "trace", run_id, "--json"]);
    assert!(
        String::from_utf8_lossy(&trace.stdout).contains("\"flujo.governance\":\"pii_scrub modify"),
        "{}",
        String::from_utf8_lossy(&trace.stdout)
    );
    // The run's own input is the user's; no journal record holds a scrubbed value.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(&format!("sqlite:///{}", env.dir.path().join("state.db").display())).unwrap();
    let records = rt.block_on(store.load_journal(run_id)).unwrap();
    assert_eq!(records.len(), 1);
    for r in &records {
        let text = serde_json::to_string(&(&r.output, &r.metadata, &r.patch, &r.feedback)).unwrap();
        assert!(!text.contains("4111") && !text.contains("ana.gomez"), "{text}");
    }
}

#[test]
fn deny_patterns_on_input_and_models_stop_the_run_before_the_call() {
    let env = setup(
        "[governance]\npolicies = [\"deny\"]\n[governance.deny]\ninput_patterns = [\"(?i)drop\\\\s+table\"]\nmodels = [\"openai:gpt-old*\"]\n",
    );
    let (v, code) = run(&env, "please DROP  TABLE users");
    assert_denied(&env, &v, code, "deny");
    assert!(v["error"]["message"].as_str().unwrap().contains("denied pattern"), "{v}");
    // Allowed input: the call is made.
    env.fake.push_reply(ScriptedReply::Text("Fine.".into()));
    let (v, code) = run(&env, "a polite question");
    assert_eq!((code, v["output"].as_str()), (0, Some("Fine.")), "{v}");
    assert_eq!(v["step_history"][0]["metadata"]["governance"], json!([{"policy": "deny", "decision": "allow"}]));
}

#[test]
fn model_allowlist_and_max_input_chars_deny_and_allow() {
    let env = setup(
        "[governance]\npolicies = [\"model_allowlist\"]\n[governance.model_allowlist]\nmodels = [\"anthropic:*\"]\n",
    );
    let (v, code) = run(&env, "hi");
    assert_denied(&env, &v, code, "model_allowlist");
    let env = setup("[governance]\npolicies = [\"model_allowlist\", \"max_input_chars\"]\n[governance.model_allowlist]\nmodels = [\"openai:gpt-*\"]\n[governance.max_input_chars]\nlimit = 10\n");
    let (v, code) = run(&env, "this input is far longer than ten characters");
    assert_denied(&env, &v, code, "max_input_chars");
    env.fake.push_reply(ScriptedReply::Text("ok".into()));
    let (v, code) = run(&env, "short");
    assert_eq!(code, 0, "{v}");
}

#[test]
fn tool_allowlist_governs_the_tools_an_agent_calls() {
    let env = setup(
        "[governance]\npolicies = [\"tool_allowlist\"]\n[governance.tool_allowlist]\ntools = []\nsteps = { solve = [\"flujo.builtins.stringify\"] }\n",
    );
    // An allowed tool, then the answer.
    env.fake
        .push_reply(ScriptedReply::ToolCall { name: "flujo_builtins_stringify".into(), arguments: json!({"x": 1}) });
    env.fake.push_reply(ScriptedReply::Text("{\"answer\": 1}".into()));
    let o = flujo(env.dir.path(), &["run", "agentic.yaml", "-i", "go", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A tool not on the step's list: the run stops at the tool call (the planner was called once).
    env.fake.push_reply(ScriptedReply::ToolCall { name: "flujo_builtins_flatten".into(), arguments: json!([[1]]) });
    env.fake.push_reply(ScriptedReply::Text("{\"answer\": 2}".into()));
    let before = env.fake.calls().len();
    let o = flujo(env.dir.path(), &["run", "agentic.yaml", "-i", "go", "--json"]);
    let v = json_of(&o);
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "governance_denied");
    assert!(v["error"]["message"].as_str().unwrap().contains("flujo.builtins.flatten"), "{v}");
    assert_eq!(env.fake.calls().len(), before + 1, "the planner turn was made; nothing after the denied tool");
}

const POLICY: &str = r#"import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    text = json.dumps(req["input"])
    if "crash" in text:
        sys.exit(3)
    if "slow" in text:
        time.sleep(30)
    if "forbidden" in text:
        out = {"decision": "deny", "reason": "forbidden topic"}
    elif "shout" in text:
        out = {"decision": "modify", "input": req["input"].upper(), "note": "upper-cased"}
    elif "garbage" in text:
        print("not json", flush=True)
        continue
    else:
        out = {"decision": "allow"}
    print(json.dumps(out), flush=True)
"#;

#[test]
fn an_external_policy_program_allows_denies_modifies_and_fails_closed() {
    let env = setup("[governance]\ncommand = [\"python3\", \"policy.py\"]\ntimeout_s = 2\n");
    std::fs::write(env.dir.path().join("policy.py"), POLICY).unwrap();
    env.fake.push_reply(ScriptedReply::Text("fine".into()));
    let (v, code) = run(&env, "hello");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["step_history"][0]["metadata"]["governance"], json!([{"policy": "command", "decision": "allow"}]));
    env.fake.push_reply(ScriptedReply::Text("FINE".into()));
    let (v, code) = run(&env, "please shout");
    assert_eq!(code, 0, "{v}");
    assert!(
        env.fake.calls().last().unwrap().body.to_string().contains("PLEASE SHOUT"),
        "modified input reaches the model"
    );
    let calls = env.fake.calls().len();
    for (input, says) in [
        ("a forbidden question", "forbidden topic"),
        ("crash now", "exited"),
        ("be slow", "did not answer within"),
        ("garbage please", "not JSON"),
    ] {
        let (v, code) = run(&env, input);
        assert_eq!(code, 1, "{input}: {v}");
        assert_eq!(v["error"]["kind"], "governance_denied", "{input}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{input}: {v}");
    }
    assert_eq!(env.fake.calls().len(), calls, "no denied call was made");
}

#[test]
fn dev_governance_shows_the_chain_and_bad_settings_exit_2() {
    let env = setup(
        "[governance]\npolicies = [\"max_input_chars\", \"pii_scrub\"]\n[governance.max_input_chars]\nlimit = 100\n[governance.pipeline.\"support_*\"]\npolicies = [\"pii_scrub\", \"deny\"]\n[governance.pipeline.\"support_*\".deny]\ntargets = [\"shell.*\"]\n",
    );
    let o = flujo(env.dir.path(), &["dev", "governance", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json_of(&o);
    assert_eq!(v["pipeline"], "support_reply");
    assert_eq!(v["policies"], json!(["pii_scrub", "deny"]));
    assert_eq!(v["section"], "[governance.pipeline.\"support_*\"]");
    assert_eq!(v["options"]["deny"], "[governance.pipeline.\"support_*\".deny]");
    let o = flujo(env.dir.path(), &["dev", "governance", "billing", "--name"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("max_input_chars -> pii_scrub") && text.contains("[governance.max_input_chars]"), "{text}");
    for bad in [
        "[governance]\npolicies = [\"nope\"]\n",
        "[governance]\npolicies = [\"deny\"]\n[governance.deny]\ninput_patterns = [\"(\"]\n",
        "[governance]\npolicies = [\"deny\"]\n[governance.deny]\ntargetz = [\"x\"]\n",
    ] {
        let env = setup(bad);
        let o = flujo(env.dir.path(), &["run", "-i", "x", "--json"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(env.fake.calls().is_empty());
    }
}

/// `examples/governance` (docs/governance.md) does what the page says, offline.
#[test]
fn the_documented_example_runs_offline_as_described() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/governance");
    let dir = tempfile::tempdir().unwrap();
    for f in ["flujo.toml", "pipeline.yaml", "policy.py"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let o = flujo(dir.path(), &["run", "-i", "Hi, I am ana@example.com, card 4111 1111 1111 1111", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_of(&o)["output"], "Hi, I am [REDACTED:EMAIL], card [REDACTED:CARD]");
    for (input, policy) in [("please refund everything", "command"), ("x; DROP TABLE users", "deny")] {
        let o = flujo(dir.path(), &["run", "-i", input, "--json"]);
        let v = json_of(&o);
        assert_eq!(o.status.code(), Some(1), "{v}");
        assert_eq!(v["error"]["kind"], "governance_denied");
        assert!(v["error"]["message"].as_str().unwrap().contains(&format!("'{policy}'")), "{v}");
    }
    let o = flujo(dir.path(), &["dev", "governance"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("max_input_chars -> deny -> pii_scrub -> model_allowlist -> command"), "{text}");
}
