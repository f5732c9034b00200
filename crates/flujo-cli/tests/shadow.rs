//! Shadow evaluations through the `flujo` binary: the run walks offline (`mock:echo`), the judge is a model
//! behind a local fake provider (real HTTP on 127.0.0.1). A judged run keeps its result and exit code whatever
//! the judge does; evaluations are stored and listed by `lens evals`; sampling at 0 judges nothing; a CLI
//! killed while its evaluation was pending leaves it to the next `flujo` process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{cmd, fake_project, flujo, FakeProject};
use flujo_core::{EvaluationFilter, EvaluationStatus};
use flujo_llm::testing::ScriptedReply;
use serde_json::{json, Value};

const PIPELINE: &str = r#"version: "0.1"
name: support_reply
agents:
  writer:
    model: "mock:echo"
    system_prompt: "You answer customers."
steps:
  - name: draft
    uses: agents.writer
"#;

fn setup(shadow: &str) -> FakeProject {
    fake_project(
        &[("pipeline.yaml", PIPELINE)],
        &format!(
            "state_uri = \"sqlite:///state.db\"\n[shadow_eval]\nenabled = true\njudge = \"openai:gpt-judge\"\n\
             rubric = \"Be strict about politeness.\"\n{shadow}"
        ),
    )
}

/// The evaluations in the project's store.
fn evals(env: &FakeProject) -> Vec<flujo_core::EvaluationRecord> {
    let store = flujo_store::open_store(&format!("sqlite:///{}", env.dir.path().join("state.db").display())).unwrap();
    env.rt.block_on(store.list_evaluations(&EvaluationFilter::new())).unwrap()
}

fn run(env: &FakeProject, input: &str) -> (Value, i32) {
    let o = flujo(env.dir.path(), &["run", "-i", input, "--json"]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (v, o.status.code().unwrap_or(-1))
}

#[test]
fn a_sampled_run_is_judged_stored_and_listed() {
    let env = setup("");
    env.fake.push_reply(ScriptedReply::Json(json!({"score": 0.8, "reason": "polite and complete"})));
    let (v, code) = run(&env, "Where is my parcel?");
    assert_eq!((code, v["output"].as_str()), (0, Some("Where is my parcel?")), "{v}");
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 1, "one judge call");
    let body = calls[0].body.to_string();
    assert!(body.contains("Be strict about politeness.") && body.contains("Where is my parcel?"), "{body}");
    let evals = evals(&env);
    assert_eq!(evals.len(), 1);
    let e = &evals[0];
    assert_eq!(
        (e.status, e.score, e.reason.as_deref()),
        (EvaluationStatus::Done, Some(0.8), Some("polite and complete"))
    );
    assert_eq!(
        (e.run_id.as_str(), e.path.as_deref(), e.judge.as_str()),
        (v["run_id"].as_str().unwrap(), None, "openai:gpt-judge")
    );
    assert!(e.tokens > 0, "the judge's usage is recorded");
    let o = flujo(env.dir.path(), &["lens", "evals", "--json"]);
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed["evaluations"][0]["score"], 0.8);
    assert_eq!(listed["summary"][0]["average_score"], 0.8);
    assert_eq!(listed["summary"][0]["histogram"], json!([0, 0, 0, 0, 1]));
    let text = String::from_utf8_lossy(&flujo(env.dir.path(), &["lens", "evals"]).stdout).into_owned();
    assert!(text.contains("polite and complete") && text.contains("0.800"), "{text}");
    let o = flujo(env.dir.path(), &["lens", "evals", "--pipeline", "other", "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["evaluations"], json!([]));
}

#[test]
fn a_failing_or_slow_judge_never_changes_the_run() {
    let env = setup("timeout_s = 1\n");
    env.fake.push_reply(ScriptedReply::Status { code: 400, retry_after: None });
    let (v, code) = run(&env, "one");
    assert_eq!((code, v["status"].as_str(), v["output"].as_str()), (0, Some("completed"), Some("one")), "{v}");
    env.fake.push_reply(ScriptedReply::Delayed(
        Duration::from_secs(10),
        Box::new(ScriptedReply::Json(json!({"score": 1, "reason": "late"}))),
    ));
    let (v, code) = run(&env, "two");
    assert_eq!((code, v["output"].as_str()), (0, Some("two")), "{v}");
    env.fake.push_reply(ScriptedReply::Json(json!({"score": 7, "reason": "out of range"})));
    let (_, code) = run(&env, "three");
    assert_eq!(code, 0);
    let evals = evals(&env);
    assert_eq!(evals.len(), 3);
    let reasons: Vec<String> = evals.iter().map(|e| e.reason.clone().unwrap_or_default()).collect();
    assert!(evals.iter().all(|e| e.status == EvaluationStatus::Failed), "{evals:?}");
    assert!(reasons[0].contains("the judge failed"), "{reasons:?}");
    assert!(reasons[1].contains("did not answer within 1s"), "{reasons:?}");
    assert!(reasons[2].contains("greater than the maximum of 1"), "an answer outside the schema fails: {reasons:?}");
}

#[test]
fn sampling_at_zero_judges_nothing_and_bad_settings_exit_2() {
    let env = setup("sample_rate = 0.0\n");
    let (_, code) = run(&env, "hello");
    assert_eq!(code, 0);
    assert!(env.fake.calls().is_empty() && evals(&env).is_empty());
    for bad in ["sample_rate = 2.0\n", "scope = \"everything\"\n", "sink = \"s3\"\n", "colour = \"red\"\n"] {
        let env = setup(bad);
        let o = flujo(env.dir.path(), &["run", "-i", "x", "--json"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("[shadow_eval]"), "{bad}");
    }
}

#[test]
fn a_killed_clis_pending_evaluation_is_finished_by_the_next_process() {
    let env = setup("timeout_s = 1\n");
    // The first judge call never answers in time; the process is killed while the evaluation is pending.
    env.fake.push_reply(ScriptedReply::Delayed(
        Duration::from_secs(60),
        Box::new(ScriptedReply::Json(json!({"score": 0, "reason": "x"}))),
    ));
    let mut child = cmd(env.dir.path(), &["run", "-i", "first", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while evals(&env).is_empty() || env.fake.calls().is_empty() {
        assert!(Instant::now() < deadline, "the evaluation was never scheduled");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let pending = evals(&env);
    assert_eq!(pending[0].status, EvaluationStatus::Pending, "{pending:?}");
    // Its lease (the judge's timeout plus a margin) expires; the next flujo process takes it over.
    std::thread::sleep(Duration::from_millis(
        u64::try_from(pending[0].lease_expires_at_ms.unwrap() - flujo_lens_now()).unwrap_or(0) + 200,
    ));
    env.fake.push_reply(ScriptedReply::Json(json!({"score": 0.5, "reason": "judged later"})));
    env.fake.push_reply(ScriptedReply::Json(json!({"score": 0.5, "reason": "judged later"})));
    let (_, code) = run(&env, "second");
    assert_eq!(code, 0);
    let evals = evals(&env);
    assert_eq!(evals.len(), 2, "{evals:?}");
    assert!(
        evals.iter().all(|e| e.status == EvaluationStatus::Done && e.reason.as_deref() == Some("judged later")),
        "{evals:?}"
    );
}

fn flujo_lens_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn the_telemetry_sink_stores_nothing() {
    let env = setup("sink = \"telemetry\"\n");
    env.fake.push_reply(ScriptedReply::Json(json!({"score": 0.9, "reason": "fine"})));
    let (_, code) = run(&env, "hello");
    assert_eq!(code, 0);
    assert_eq!(env.fake.calls().len(), 1, "judged");
    assert!(evals(&env).is_empty(), "not stored");
}

/// The judge's own budget refuses a call that does not fit, and the run is untouched.
#[test]
fn the_judges_budget_is_its_own_and_refuses_before_the_call() {
    let env = setup(
        "total_cost_usd_limit = 0.0\n[cost.providers.openai.\"gpt-judge\"]\nprompt_tokens_per_1k = 1.0\ncompletion_tokens_per_1k = 1.0\n",
    );
    let (v, code) = run(&env, "hello");
    assert_eq!((code, v["status"].as_str()), (0, Some("completed")), "{v}");
    assert!(env.fake.calls().is_empty(), "the over-budget judge call is never made");
    let evals = evals(&env);
    assert_eq!(evals[0].status, EvaluationStatus::Failed);
    assert!(evals[0].reason.as_deref().unwrap_or("").contains("budget"), "{evals:?}");
}

/// `examples/shadow_eval` (docs/shadow-evaluations.md) does what the page says, offline.
#[test]
fn the_documented_example_runs_offline_as_described() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shadow_eval");
    let dir = tempfile::tempdir().unwrap();
    for f in ["flujo.toml", "pipeline.yaml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let o = flujo(dir.path(), &["run", "-i", "Where is my parcel?", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let o = flujo(dir.path(), &["lens", "evals", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["evaluations"][0]["status"], "done", "{v}");
    assert_eq!(v["evaluations"][0]["path"], "0");
    assert_eq!(v["summary"][0]["pipeline"], "support_reply");
}

/// `judge = "agents.NAME"`: the blueprint's agent judges, with its own system prompt when no rubric is set.
#[test]
fn a_blueprint_agent_can_be_the_judge() {
    let pipeline = r#"version: "0.1"
name: with_reviewer
agents:
  writer:
    model: "mock:echo"
    system_prompt: "You answer customers."
  reviewer:
    model: "openai:gpt-judge"
    system_prompt: "Review like a careful editor."
steps:
  - name: draft
    uses: agents.writer
"#;
    let env = fake_project(
        &[("pipeline.yaml", pipeline)],
        "state_uri = \"sqlite:///state.db\"\n[shadow_eval]\nenabled = true\njudge = \"agents.reviewer\"\n",
    );
    env.fake.push_reply(ScriptedReply::Json(json!({"score": 0.6, "reason": "fine"})));
    let (_, code) = run(&env, "hello");
    assert_eq!(code, 0);
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].body.to_string().contains("Review like a careful editor."), "{}", calls[0].body);
    let e = &evals(&env)[0];
    assert_eq!((e.status, e.score, e.judge.as_str()), (EvaluationStatus::Done, Some(0.6), "agents.reviewer"));
    // An unknown agent: a warning, the run unchanged, nothing judged.
    let env = fake_project(
        &[("pipeline.yaml", pipeline)],
        "state_uri = \"sqlite:///state.db\"\n[shadow_eval]\nenabled = true\njudge = \"agents.nobody\"\n",
    );
    let o = flujo(env.dir.path(), &["run", "-i", "hello", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no agent `nobody`"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(evals(&env).is_empty());
}

#[test]
fn runs_walked_by_flujo_serve_are_judged_too() {
    let env = setup("");
    env.fake.push_reply(ScriptedReply::Json(json!({"score": 0.6, "reason": "fine"})));
    let state = format!("sqlite:///{}", env.dir.path().join("state.db").display());
    let s = common::serve(env.dir.path(), &state);
    let client = flujo_http::blocking_client_builder().build().unwrap();
    let r = client
        .post(format!("{}/api/runs", s.base))
        .json(&json!({"pipeline": "support_reply", "input": "Hello?", "run_id": "srv-1"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = evals(&env);
        if done.first().is_some_and(|e| e.status == EvaluationStatus::Done) {
            assert_eq!((done.len(), done[0].run_id.as_str(), done[0].score), (1, "srv-1", Some(0.6)));
            break;
        }
        assert!(Instant::now() < deadline, "the served run was never judged: {done:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let run: Value = client.get(format!("{}/api/runs/srv-1", s.base)).send().unwrap().json().unwrap();
    assert_eq!((run["status"].as_str(), run["output"].as_str()), (Some("completed"), Some("Hello?")));
}
