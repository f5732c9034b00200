//! `flujo serve` as users start it: the real binary over a SQLite file and a folder of blueprints with a
//! skills catalog. Runs started through the API use the catalog's command skills (real subprocesses); a
//! run queued by `flujo run --queue` is walked by the server's pool; a run paused by `flujo run` (no queue)
//! is answered through the API and finished by the server; SIGTERM stops it cleanly; beyond loopback it
//! refuses to start without `FLUJO_API_TOKEN`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{cmd, code, flujo, json_out, project, serve, stderr};
use serde_json::{json, Value};

const SHOUT: &str = r#"name: shout
steps:
  - name: upper
    agent: {id: acme.upper}
"#;

const ASK: &str = r#"name: ask
steps:
  - name: approve
    kind: hitl
    message: "ok?"
    input_schema: {type: string, enum: ["yes", "no"]}
  - name: after
    agent: {id: flujo.builtins.transform, params: {expr: "'answer: ' ~ previous_step"}}
"#;

const SKILLS: &str = "acme.upper:\n  command: [sh, -c, \"tr a-z A-Z\"]\n";

fn http() -> flujo_http::reqwest::blocking::Client {
    flujo_http::blocking_client_builder().build().unwrap()
}

fn get(base: &str, path: &str) -> (u16, Value) {
    let r = http().get(format!("{base}{path}")).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = http().post(format!("{base}{path}")).json(body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn wait_status(base: &str, run_id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (c, run) = get(base, &format!("/api/runs/{run_id}"));
        if c == 200 && run["status"] == want {
            return run;
        }
        assert!(Instant::now() < deadline, "{run_id} never became {want}: {run}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn serves_the_folder_runs_its_skills_and_finishes_runs_of_other_processes() {
    let dir = project(&[
        ("shout.yaml", SHOUT),
        ("ask.yaml", ASK),
        ("skills.yaml", SKILLS),
        ("broken.yaml", "name: broken\nsteps:\n  - name: x\n    kind: nope\n"),
        ("notes.yaml", "just: some yaml\n"),
    ]);
    let db = dir.path().join("state.db");
    let state = format!("sqlite://{}", db.display());
    let s = serve(dir.path(), &state);
    let (c, list) = get(&s.base, "/api/pipelines");
    let names: Vec<&str> = list["pipelines"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!((c, names), (200, vec!["ask", "shout"]), "{list}");
    let (c, detail) = get(&s.base, "/api/pipelines/ask");
    assert_eq!(c, 200);
    assert!(detail["source"].as_str().unwrap().contains("kind: hitl"));
    assert!(detail["mermaid"].as_str().unwrap().starts_with("flowchart TD"));
    assert_eq!(detail["tree"][0]["kind"], "hitl");
    assert_eq!(detail["file"], "ask.yaml", "files are shown relative to --pipelines");

    // A command skill of the folder's catalog, run by the server's pool.
    let (c, v) = post(&s.base, "/api/runs", &json!({"pipeline": "shout", "input": "hello", "run_id": "api-1"}));
    assert_eq!(c, 202, "{v}");
    let done = wait_status(&s.base, "api-1", "completed");
    assert_eq!(done["output"], "HELLO");

    // Queued by another process: the pool claims it.
    let o =
        flujo(dir.path(), &["run", "shout.yaml", "-i", "queued", "--queue", "default", "--json", "--state", &state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let queued = json_out(&o)["run_id"].as_str().unwrap().to_owned();
    assert_eq!(wait_status(&s.base, &queued, "completed")["output"], "QUEUED");

    // Paused by `flujo run` (no queue): answered through the API, finished by the server.
    let o = flujo(dir.path(), &["run", "ask.yaml", "--run-id", "cli-1", "--json", "--state", &state]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let (c, inbox) = get(&s.base, "/api/approvals");
    assert_eq!((c, inbox["approvals"][0]["run_id"].as_str()), (200, Some("cli-1")), "{inbox}");
    let (c, err) = post(&s.base, "/api/runs/cli-1/resume", &json!({"answer": "maybe"}));
    assert_eq!((c, err["error"]["kind"].as_str()), (422, Some("invalid_answer")), "{err}");
    let (c, v) = post(&s.base, "/api/runs/cli-1/resume", &json!({"pause_id": "0", "answer": "yes"}));
    assert_eq!(c, 202, "{v}");
    let done = wait_status(&s.base, "cli-1", "completed");
    assert_eq!(done["output"], "answer: yes");
    // The CLI sees the same run.
    let o = flujo(dir.path(), &["lens", "verify", "cli-1", "--state", &state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // SIGTERM: a clean stop.
    let mut s = s;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(s.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "flujo serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn beyond_loopback_it_needs_a_token() {
    let dir = project(&[("shout.yaml", SHOUT)]);
    let state = format!("sqlite://{}", dir.path().join("s.db").display());
    let o = cmd(dir.path(), &["serve", "--addr", "0.0.0.0:0", "--state", &state])
        .env_remove("FLUJO_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("FLUJO_API_TOKEN"), "{}", stderr(&o));
    let o = cmd(dir.path(), &["serve", "--addr", "not-an-address"]).output().unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = cmd(dir.path(), &["serve", "--state", "memory://"]).output().unwrap();
    assert_eq!(code(&o), 2, "a store that keeps nothing is refused: {}", stderr(&o));
}

#[test]
fn the_documented_example_runs_as_written() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/approvals/pipeline.yaml"))
        .unwrap();
    let dir = project(&[("pipeline.yaml", &src)]);
    let state = format!("sqlite://{}", dir.path().join("state.db").display());
    let s = serve(dir.path(), &state);
    let (c, v) = post(&s.base, "/api/runs", &json!({"pipeline": "approval", "input": "1.2", "run_id": "rel-1"}));
    assert_eq!(c, 202, "{v}");
    wait_status(&s.base, "rel-1", "paused");
    let (_, inbox) = get(&s.base, "/api/approvals");
    assert_eq!(inbox["approvals"][0]["input_schema"]["required"], json!(["approved"]), "{inbox}");
    let (c, v) = post(&s.base, "/api/runs/rel-1/resume", &json!({"pause_id": "1", "answer": {"approved": true}}));
    assert_eq!(c, 202, "{v}");
    let done = wait_status(&s.base, "rel-1", "completed");
    assert_eq!(done["output"], "Release notes for 1.2 — published");
}
