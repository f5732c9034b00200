//! `flujo create` (the Architect) through the binary against a local fake provider (OpenAI-shaped, real HTTP):
//! a first draft with errors is sent back with `flujo validate`'s diagnostics, the repaired second draft is
//! written and runs; a draft that never validates writes nothing; side-effect skills are refused
//! non-interactively; an interrupted create continues with `--resume` without repeating its model calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use flujo_llm::testing::{FakeProvider, ScriptedReply};
use serde_json::Value;

fn flujo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flujo"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("FLUJO_STATE_URI")
        .env_remove("FLUJO_CONFIG")
        .env_remove("FLUJO_ARCHITECT_MODEL")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Env {
    _rt: tokio::runtime::Runtime,
    fake: FakeProvider,
    dir: tempfile::TempDir,
}

fn setup(extra_toml: &str) -> Env {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flujo.toml"),
        format!(
            "state_uri = \"sqlite:///.flujo/state.db\"\n[providers.openai]\nbase_url = \"{}\"\napi_key = \"sk-test\"\n[architect]\nmodel = \"openai:gpt-architect\"\n{extra_toml}",
            fake.openai_base_url()
        ),
    )
    .unwrap();
    Env { _rt: rt, fake, dir }
}

const BROKEN: &str = "Here it is:\n```yaml\nversion: \"0.1\"\nname: shouter\nsteps:\n  - name: loud\n    input: \"{{ initial_prompt | shout }}\"\n```\n";
const REPAIRED: &str = "```yaml\nversion: \"0.1\"\nname: shouter\nsteps:\n  - name: loud\n    input: \"{{ initial_prompt | upper }}\"\n  - name: count\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step | length\"}}\n```";

/// The user message of a recorded chat call.
fn user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().map(str::to_owned).unwrap_or_else(|| m["content"].to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_broken_draft_is_repaired_with_the_validators_diagnostics() {
    let env = setup("");
    env.fake.push_reply(ScriptedReply::Text(BROKEN.into()));
    env.fake.push_reply(ScriptedReply::Text(REPAIRED.into()));
    let o = flujo(
        env.dir.path(),
        &[
            "create",
            "--goal",
            "Shout the input and count its letters",
            "--name",
            "shouter",
            "--non-interactive",
            "--budget",
            "0.5",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2, "{}", text(&o));
    // The system prompt lists the step kinds and the skills; the goal and name are in the first request.
    let system = calls[0].body["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(system.contains("kind: loop") && system.contains("flujo.builtins.transform"), "{system}");
    let first = user_message(&calls[0].body);
    assert!(first.contains("Shout the input") && first.contains("Pipeline name: shouter"), "{first}");
    // The second request carries the draft and the validator's findings about it.
    let second = user_message(&calls[1].body);
    assert!(
        second.contains("V-T3") && second.contains("unknown filter `shout`") && second.contains("| shout"),
        "{second}"
    );
    let written = std::fs::read_to_string(env.dir.path().join("pipeline.yaml")).unwrap();
    assert!(written.contains("| upper") && !written.contains("```"), "{written}");
    let toml = std::fs::read_to_string(env.dir.path().join("flujo.toml")).unwrap();
    assert!(toml.contains("[budgets.pipeline.\"shouter\"]\ntotal_cost_usd_limit = 0.5"), "{toml}");
    // The written pipeline runs.
    let o = flujo(env.dir.path(), &["run", "-i", "abc", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["output"], 3);
    // The Architect run is journaled in the project's store.
    let o = flujo(env.dir.path(), &["lens", "list", "--json"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("flujo_architect"), "{}", text(&o));
    // A second create does not overwrite without --force (and calls no model).
    let o = flujo(env.dir.path(), &["create", "--goal", "x", "--non-interactive"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--force"));
    assert_eq!(env.fake.call_count(), 2);
}

#[test]
fn a_draft_that_never_validates_writes_nothing() {
    let env = setup("");
    for _ in 0..2 {
        env.fake.push_reply(ScriptedReply::Text(BROKEN.into()));
    }
    let o = flujo(env.dir.path(), &["create", "--goal", "shout", "--non-interactive", "--max-rounds", "2", "--json"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["status"], "invalid");
    assert!(text(&o).contains("V-T3"), "{}", text(&o));
    assert_eq!(env.fake.call_count(), 2);
    assert!(!env.dir.path().join("pipeline.yaml").exists());
}

#[test]
fn side_effect_skills_are_repaired_away_when_nobody_can_be_asked() {
    let env = setup("");
    std::fs::write(
        env.dir.path().join("skills.yaml"),
        "skills:\n  send_mail:\n    description: Sends an e-mail.\n    command: [\"true\"]\n    side_effects: true\n",
    )
    .unwrap();
    let with_mail = "```yaml\nversion: \"0.1\"\nname: notify\nsteps:\n  - name: mail\n    agent: {id: send_mail}\n```";
    let without = "```yaml\nversion: \"0.1\"\nname: notify\nsteps:\n  - name: note\n    agent: {id: flujo.builtins.stringify}\n```";
    env.fake.push_reply(ScriptedReply::Text(with_mail.into()));
    env.fake.push_reply(ScriptedReply::Text(without.into()));
    let o = flujo(env.dir.path(), &["create", "--goal", "notify me", "--name", "notify", "--non-interactive"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let calls = env.fake.calls();
    // Not offered, and refused when used anyway.
    assert!(!calls[0].body["messages"][0]["content"].as_str().unwrap().contains("send_mail"));
    assert!(user_message(&calls[1].body).contains("side effects are not allowed here: send_mail"));
    // With --allow-side-effects the skill is offered and accepted.
    env.fake.push_reply(ScriptedReply::Text(with_mail.into()));
    let o = flujo(
        env.dir.path(),
        &["create", "--goal", "notify me", "--name", "notify", "--non-interactive", "--allow-side-effects", "--force"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(env.fake.calls()[2].body["messages"][0]["content"].as_str().unwrap().contains("send_mail"));
    assert!(std::fs::read_to_string(env.dir.path().join("pipeline.yaml")).unwrap().contains("send_mail"));
}

#[test]
fn an_interrupted_create_resumes_without_repeating_model_calls() {
    let env = setup("");
    env.fake.push_reply(ScriptedReply::Text(BROKEN.into()));
    // The repair call fails (a provider error that is not retried), so the run fails after one round.
    env.fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
    let o = flujo(env.dir.path(), &["create", "--goal", "shout", "--name", "shouter", "--non-interactive"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    let run_id = out
        .split("flujo create --resume ")
        .nth(1)
        .and_then(|r| r.split(|c: char| c == ')' || c == '`' || c.is_whitespace()).next())
        .expect("the error names the run to resume")
        .to_owned();
    assert!(!env.dir.path().join("pipeline.yaml").exists());
    let before = env.fake.call_count();
    env.fake.push_reply(ScriptedReply::Text(REPAIRED.into()));
    let o = flujo(env.dir.path(), &["create", "--resume", &run_id]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Only the failed repair call is made again; the first draft comes from the journal.
    assert_eq!(env.fake.call_count(), before + 1);
    assert!(user_message(&env.fake.calls()[before].body).contains("V-T3"));
    assert!(std::fs::read_to_string(env.dir.path().join("pipeline.yaml")).unwrap().contains("| upper"));
    // Resuming something that is not an Architect run is refused.
    let o = flujo(env.dir.path(), &["create", "--resume", "no-such-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn create_needs_a_goal_when_nobody_can_be_asked() {
    let env = setup("");
    let o = flujo(env.dir.path(), &["create", "--non-interactive"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--goal"), "{}", text(&o));
    assert_eq!(env.fake.call_count(), 0);
}
