//! Property-based test of the HTTP API against its own OpenAPI document: a real `flujo serve` process on a
//! SQLite state file, with runs that completed, paused (at a `hitl` step with an object `input_schema`) and
//! were cancelled, is exercised by [schemathesis](https://schemathesis.readthedocs.io) (PyPI) through
//! `/api/openapi.json`: generated valid and invalid requests for every operation (the event stream
//! included: its runs end at once or after a few steps), and chains of them following the links it infers.
//! Every response must be no server error, have a status code and content type the document declares, and a
//! body its schema accepts. The run is bounded (a fixed number of examples per operation, a fixed seed, one
//! worker, a deadline) and a failure shows schemathesis's report with a `curl` line to reproduce it.
//!
//! Schemathesis lives in its own virtualenv (`scripts/schemathesis.sh install`, which scripts/test.sh runs;
//! `FLUJO_SCHEMATHESIS_VENV` overrides /opt/flujo-schemathesis-venv). Without it the test says it skipped,
//! unless `CI` is set: then it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flujo_http::reqwest::blocking::Client;
use serde_json::{json, Value};

/// Waits for the server and for runs: generous, so a loaded CI machine does not make the test flaky.
const PATIENCE: Duration = Duration::from_secs(60);

/// The most schemathesis may take (it needs about 10 s against a debug build on an idle machine).
const DEADLINE: Duration = Duration::from_secs(100);

/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "40";

/// The seed of the generated requests, so a failure reproduces.
const SEED: &str = "20261207";

/// The checks that matter: no 5xx, and status code, content type and body as the document declares.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

const ADD: &str = r#"name: add
description: "Adds two to its input."
steps:
  - name: one
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - name: two
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
"#;

const REVIEW: &str = r#"name: review
description: "Doubles the input, asks a human, publishes with their comment."
steps:
  - name: draft
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step * 2"}}
  - kind: hitl
    name: approve
    message: "Publish draft {{ previous_step }}?"
    input_schema:
      type: object
      properties:
        approved: {type: boolean}
        comment: {type: string, minLength: 3}
      required: [approved, comment]
  - name: publish
    agent: {id: flujo.builtins.transform, params: {expr: "{'published': previous_step.approved, 'note': previous_step.comment}"}}
"#;

/// A child process killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The schemathesis executable, or `None` (with the reason printed) when it is not installed; under `CI`
/// its absence fails the test.
fn schemathesis() -> Option<PathBuf> {
    let venv = std::env::var_os("FLUJO_SCHEMATHESIS_VENV")
        .map_or_else(|| PathBuf::from("/opt/flujo-schemathesis-venv"), PathBuf::from);
    let exe = venv.join("bin").join("schemathesis");
    if exe.exists() {
        return Some(exe);
    }
    let what = format!("{} not installed (scripts/schemathesis.sh install; scripts/test.sh runs it)", exe.display());
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and the API schema test cannot run: {what}");
    }
    println!("skipped: the API's schemathesis test: {what}");
    eprintln!("skipped: the API's schemathesis test: {what}");
    None
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

/// `flujo serve` on a free port over `state`, serving `pipelines`; returns it and its base URL once
/// `/healthz` answers.
fn serve(dir: &Path, state: &str, pipelines: &Path, http: &Client) -> (Killed, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = common::cmd(dir, &["serve", "--addr", &addr, "--state", state, "--pipelines"])
        .arg(pipelines)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("flujo serve starts");
    let mut server = Killed(child);
    let base = format!("http://{addr}");
    let start = Instant::now();
    loop {
        if http.get(format!("{base}/healthz")).send().is_ok_and(|r| r.status().is_success()) {
            return (server, base);
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("flujo serve exited ({status}): {}", log_of(dir));
        }
        assert!(start.elapsed() < PATIENCE, "flujo serve did not answer /healthz: {}", log_of(dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a run of `pipeline` on `input`; returns its id.
fn start(http: &Client, base: &str, pipeline: &str, input: Value) -> String {
    let res =
        http.post(format!("{base}/api/runs")).json(&json!({"pipeline": pipeline, "input": input})).send().unwrap();
    assert_eq!(res.status().as_u16(), 202, "POST /api/runs {pipeline}");
    let body: Value = res.json().unwrap();
    body["run_id"].as_str().unwrap().to_owned()
}

/// Waits until run `id` has `status`; returns its object.
fn wait_status(http: &Client, base: &str, id: &str, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let run: Value = http.get(format!("{base}/api/runs/{id}")).send().unwrap().json().unwrap();
        if run["status"] == status {
            return run;
        }
        assert!(start.elapsed() < PATIENCE, "run {id} never became {status}: {run}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The schemathesis configuration: known run ids, pipeline names and the served queue as values to draw
/// from (besides generated ones), so requests reach the handlers' logic and not only their 404s. The body's
/// `queue` is always the served one: a run on a queue nobody serves would keep its event stream open.
fn config(runs: &[&str], paused: &[&str]) -> String {
    let list = |xs: &[&str]| xs.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"[dictionaries]
runs = {{ values = [{runs}] }}
paused = {{ values = [{paused}] }}
pipelines = {{ values = ["add", "review"] }}
queues = {{ values = ["default"] }}

[parameters]
"path.id" = {{ dictionary = "runs", probability = 0.7 }}
"path.name" = {{ dictionary = "pipelines", probability = 0.7 }}
"body.pipeline" = {{ dictionary = "pipelines", probability = 0.7 }}
"body.queue" = {{ dictionary = "queues", probability = 1.0 }}

[[operations]]
include-name = "POST /api/runs/{{id}}/resume"
parameters = {{ "path.id" = {{ dictionary = "paused", probability = 0.9 }} }}
"#,
        runs = list(runs),
        paused = list(paused),
    )
}

/// Runs schemathesis against `base` with `config` from `dir`; returns its exit status and its report, or
/// fails the test once it passes [`DEADLINE`].
fn run_schemathesis(exe: &Path, dir: &Path, config: &Path, base: &str) -> (bool, String) {
    let out_path = dir.join("schemathesis.log");
    let out = std::fs::File::create(&out_path).unwrap();
    let schema = format!("{base}/api/openapi.json");
    let child = Command::new(exe)
        .arg("--config-file")
        .arg(config)
        .args(["run", &schema, "--checks", CHECKS, "--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "20", "--generation-database", "none", "--no-color"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("schemathesis starts");
    let mut child = Killed(child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            drop(child);
            panic!(
                "schemathesis did not finish within {DEADLINE:?}:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), std::fs::read_to_string(&out_path).unwrap_or_default())
}

#[test]
fn every_operation_answers_as_its_openapi_document_says() {
    let Some(exe) = schemathesis() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(pipelines.join("add.yaml"), ADD).unwrap();
    std::fs::write(pipelines.join("review.yaml"), REVIEW).unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let http = flujo_http::blocking_client_builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (mut server, base) = serve(dir.path(), &state, &pipelines, &http);

    // Runs in every state the handlers tell apart.
    let completed = start(&http, &base, "add", json!(1));
    let done = wait_status(&http, &base, &completed, "completed");
    assert_eq!(done["output"], json!(3), "{done}");
    let paused: Vec<String> = (0..3).map(|i| start(&http, &base, "review", json!(i))).collect();
    for id in &paused {
        let run = wait_status(&http, &base, id, "paused");
        assert_eq!(run["pending"][0]["input_schema"]["required"], json!(["approved", "comment"]), "{run}");
    }
    let cancelled = start(&http, &base, "review", json!(5));
    wait_status(&http, &base, &cancelled, "paused");
    let res = http.post(format!("{base}/api/runs/{cancelled}/cancel")).send().unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let doc: Value = http.get(format!("{base}/api/openapi.json")).send().unwrap().json().unwrap();
    let operations: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert!(operations >= 13, "the document lists {operations} operations: {doc}");

    let mut runs: Vec<&str> = vec![completed.as_str(), cancelled.as_str()];
    runs.extend(paused.iter().map(String::as_str));
    let paused_ids: Vec<&str> = paused.iter().map(String::as_str).collect();
    let cfg = dir.path().join("schemathesis.toml");
    std::fs::write(&cfg, config(&runs, &paused_ids)).unwrap();

    let (ok, report) = run_schemathesis(&exe, dir.path(), &cfg, &base);
    println!("{report}");
    let exited = server.0.try_wait().unwrap();
    assert!(
        ok,
        "schemathesis found problems (seed {SEED}):\n{report}\nflujo serve log (tail):\n{}",
        tail(&log_of(dir.path()), 40)
    );
    // It tested every operation, and the server survived it.
    assert!(report.contains(&format!("Tested: {operations}")), "not every operation was tested:\n{report}");
    assert!(exited.is_none(), "flujo serve exited during the test: {}", log_of(dir.path()));
    assert!(!log_of(dir.path()).contains("panicked"), "a handler panicked:\n{}", log_of(dir.path()));
    let health = http.get(format!("{base}/healthz")).send().unwrap();
    assert!(health.status().is_success());
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
