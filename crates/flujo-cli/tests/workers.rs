//! Queues and workers, with the real binary: `flujo run --queue` enqueues and returns at once; `flujo worker`
//! processes claim the runs; workers killed with SIGKILL lose their runs to the others once their lease
//! expires, and every run still completes with the right output, its committed steps' side effects exactly
//! once; SIGTERM puts in-flight runs back on the queue. On SQLite (one file, several processes) and on
//! Postgres (`FLUJO_TEST_POSTGRES_URL`, set by the test command).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{cmd, code, flujo, json_out, postgres, side_log, stderr};
use flujo_core::{verify_chain, RunStatus, StepStatus};
use serde_json::Value;

const SKILLS: &str = r#"skills:
  slow.inc:
    description: add one, slowly, leaving a side effect
    command: ["sh", "-c", "read n; nonce=$$-$(date +%s%N); echo \"$FLUJO_IDEMPOTENCY_KEY $nonce\" >> side.log; sleep 0.05; echo \"{\\\"n\\\": $((n+1)), \\\"nonce\\\": \\\"$nonce\\\"}\""]
    timeout_s: 30
    side_effects: true
"#;

/// Five side-effecting steps, each followed by a transform: the output is the input plus five.
fn pipeline() -> String {
    let mut steps = String::new();
    for i in 0..5 {
        steps.push_str(&format!(
            "  - name: inc{i}\n    agent: slow.inc\n    config: {{max_retries: 0}}\n  - name: n{i}\n    agent: {{id: flujo.builtins.transform, params: {{expr: \"previous_step.n\"}}}}\n"
        ));
    }
    format!("name: queued_work\nsteps:\n{steps}")
}

fn worker(dir: &Path, state: &str, extra: &[&str]) -> Child {
    let mut args = vec!["worker", "--queue", "jobs", "--state", state, "--lease-s", "1", "--poll-ms", "20", "--json"];
    args.extend_from_slice(extra);
    cmd(dir, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn enqueue(dir: &Path, state: &str, n: usize) -> Vec<(String, i64)> {
    (0..n)
        .map(|i| {
            let input = (i as i64) * 100;
            let o = flujo(
                dir,
                &["run", "p.yaml", "--queue", "jobs", "--input-json", &input.to_string(), "--json", "--state", state],
            );
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            let v = json_out(&o);
            assert_eq!(v["status"], "queued");
            (v["run_id"].as_str().unwrap().to_owned(), input)
        })
        .collect()
}

/// Every run completed with input + 5, its chain verifies, and each committed step's side effect is the
/// last one logged for its key (a committed step never ran again); a step ran at most once more per worker
/// killed (or stopped) while it was in flight.
fn check_all_done(dir: &Path, state: &str, runs: &[(String, i64)], kills: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(state).unwrap();
    let log = side_log(dir);
    let mut last: HashMap<&str, &str> = HashMap::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (k, n) in &log {
        last.insert(k, n);
        *count.entry(k).or_default() += 1;
    }
    for (run_id, input) in runs {
        let run = rt.block_on(store.get_run(run_id)).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Completed, "run {run_id}: {:?}", run.error);
        assert_eq!(run.output, Some(Value::from(input + 5)), "run {run_id}");
        assert_eq!(run.owner, None, "run {run_id}: a finished run has no owner");
        let records = rt.block_on(store.load_journal(run_id)).unwrap();
        verify_chain(&records).unwrap_or_else(|e| panic!("run {run_id}: {e}"));
        for r in records.iter().filter(|r| r.status == StepStatus::Completed) {
            if let Some(nonce) = r.output.get("nonce").and_then(Value::as_str) {
                let key = format!("{run_id}:{}", r.path);
                assert_eq!(last.get(key.as_str()).copied(), Some(nonce), "{key} ran again after it committed");
                assert!(count[key.as_str()] <= 1 + kills, "{key} ran {} times ({kills} kills)", count[key.as_str()]);
            }
        }
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a worker did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failover(state: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline()).unwrap();
    let runs = enqueue(dir.path(), state, 36);
    let mut workers: Vec<Child> =
        (0..3).map(|_| worker(dir.path(), state, &["--concurrency", "4", "--exit-when-idle"])).collect();
    // Kill one worker while it is busy, then another; the last one finishes everything, taking over the
    // killed workers' runs once their leases expire.
    std::thread::sleep(Duration::from_millis(900));
    workers[0].kill().unwrap();
    workers[0].wait().unwrap();
    std::thread::sleep(Duration::from_millis(900));
    workers[1].kill().unwrap();
    workers[1].wait().unwrap();
    let survivor = workers.pop().unwrap();
    let mut survivor = survivor;
    assert_eq!(wait(&mut survivor, Duration::from_secs(180)), Some(0));
    let out = survivor.wait_with_output().unwrap();
    let finished: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!finished.is_empty(), "the surviving worker finished no run: {}", String::from_utf8_lossy(&out.stderr));
    check_all_done(dir.path(), state, &runs, 2);
}

#[test]
fn workers_share_a_queue_and_take_over_from_killed_workers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    failover(&state);
}

#[test]
fn workers_share_a_queue_and_take_over_from_killed_workers_on_postgres() {
    let Some(state) = postgres("failover") else { return };
    failover(&state);
}

#[test]
fn sigterm_puts_in_flight_runs_back_on_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline()).unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let runs = enqueue(dir.path(), &state, 2);
    let mut w = worker(dir.path(), &state, &["--concurrency", "2", "--grace-s", "0"]);
    // Wait until both runs are under way, then ask the worker to stop.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(&state).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while side_log(dir.path()).len() < 2 {
        assert!(Instant::now() < deadline, "the worker never started the runs");
        std::thread::sleep(Duration::from_millis(10));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(w.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(wait(&mut w, Duration::from_secs(20)), Some(0), "a stopped worker exits 0");
    let err = String::from_utf8_lossy(&w.wait_with_output().unwrap().stderr).into_owned();
    for (run_id, _) in &runs {
        let run = rt.block_on(store.get_run(run_id)).unwrap().unwrap();
        assert!(
            matches!(run.status, RunStatus::Queued | RunStatus::Completed),
            "run {run_id} is {:?} after SIGTERM: {err}",
            run.status
        );
        assert_eq!(run.owner, None);
    }
    // A new worker finishes them.
    let mut w = worker(dir.path(), &state, &["--exit-when-idle"]);
    assert_eq!(wait(&mut w, Duration::from_secs(60)), Some(0));
    check_all_done(dir.path(), &state, &runs, 1);
}

#[test]
fn queue_needs_a_durable_store_and_a_valid_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline()).unwrap();
    let o = flujo(dir.path(), &["run", "p.yaml", "--queue", "jobs", "--input-json", "1", "--state", "memory://"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("keeps nothing"), "{}", stderr(&o));
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let o = flujo(dir.path(), &["run", "p.yaml", "--queue", "a/b", "--input-json", "1", "--state", &state]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = flujo(dir.path(), &["worker", "--queue", "jobs", "--concurrency", "0", "--state", &state]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = flujo(dir.path(), &["worker", "--state", "memory://"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

const APPROVAL: &str = r#"name: queued_approval
steps:
  - name: double
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step * 2"}}
  - kind: hitl
    name: ask
    message: "publish {{ previous_step }}?"
    input_schema: {type: string, enum: ["yes", "no"]}
  - name: done
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step ~ '/' ~ steps.double"}}
"#;

fn answered_pause_goes_back_to_the_queue(state: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), APPROVAL).unwrap();
    let o = flujo(dir.path(), &["run", "p.yaml", "--queue", "jobs", "--input-json", "21", "--json", "--state", state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let run_id = json_out(&o)["run_id"].as_str().unwrap().to_owned();
    let mut w = worker(dir.path(), state, &["--exit-when-idle"]);
    assert_eq!(wait(&mut w, Duration::from_secs(60)), Some(0));
    let o = flujo(dir.path(), &["lens", "show", &run_id, "--state", state]);
    assert!(common::stdout(&o).contains("paused"), "{}", common::stdout(&o));
    // A wrong answer is refused and the run stays paused; a right one puts it back on its queue.
    let o = flujo(dir.path(), &["resume", &run_id, "-i", "maybe", "--state", state]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = flujo(dir.path(), &["resume", &run_id, "-i", "yes", "--json", "--state", state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["pending"], serde_json::json!([]));
    // `lens` shows the queue (and, while a worker walks it, the owner and its lease).
    let o = flujo(dir.path(), &["lens", "show", &run_id, "--json", "--state", state]);
    let shown = json_out(&o);
    assert_eq!((shown["status"].as_str(), shown["queue"].as_str()), (Some("queued"), Some("jobs")), "{shown}");
    assert!(common::stdout(&flujo(dir.path(), &["lens", "show", &run_id, "--state", state])).contains("queue jobs"));
    // A worker (here another process, as on another machine) continues it with the answer.
    let mut w = worker(dir.path(), state, &["--exit-when-idle"]);
    assert_eq!(wait(&mut w, Duration::from_secs(60)), Some(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(state).unwrap();
    let run = rt.block_on(store.get_run(&run_id)).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.error);
    assert_eq!(run.output, Some(Value::from("yes/42")));
    verify_chain(&rt.block_on(store.load_journal(&run_id)).unwrap()).unwrap();
}

#[test]
fn an_answered_pause_goes_back_to_the_queue_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    answered_pause_goes_back_to_the_queue(&format!("sqlite:///{}", dir.path().join("state.db").display()));
}

#[test]
fn an_answered_pause_goes_back_to_the_queue_on_postgres() {
    let Some(state) = postgres("answer") else { return };
    answered_pause_goes_back_to_the_queue(&state);
}

/// A server of the test's own (so that restarting it disturbs no other test), stopped when dropped.
struct OwnServer {
    dir: tempfile::TempDir,
    url: String,
}

impl OwnServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let o = std::process::Command::new(script()).arg("start").arg(dir.path().join("pg")).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let url = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        OwnServer { dir, url }
    }

    /// Crashes the server (`pg_ctl stop -m immediate`), keeps it down for `down`, and starts it again.
    fn crash_and_restart(&self, down: Duration) {
        let o = std::process::Command::new(script())
            .arg("restart")
            .arg(self.dir.path().join("pg"))
            .arg(format!("{}", down.as_secs_f64()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script()).arg("stop").arg(self.dir.path().join("pg")).output();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

#[test]
fn a_postgres_crash_in_the_middle_of_runs_loses_nothing() {
    // Runs where the test command provides Postgres (it sets the variable); this test starts its own server.
    if postgres("restart").is_none() {
        return;
    }
    let server = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline()).unwrap();
    let runs = enqueue(dir.path(), &server.url, 24);
    let mut workers: Vec<Child> =
        (0..2).map(|_| worker(dir.path(), &server.url, &["--concurrency", "6", "--exit-when-idle"])).collect();
    // Crash the server twice while the workers are busy: once briefly, once for a second.
    std::thread::sleep(Duration::from_millis(600));
    server.crash_and_restart(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(600));
    server.crash_and_restart(Duration::from_secs(1));
    for w in &mut workers {
        assert_eq!(wait(w, Duration::from_secs(180)), Some(0));
    }
    // Both workers were running steps during each crash: at most one more execution per crash per step.
    check_all_done(dir.path(), &server.url, &runs, 2);
}

#[test]
fn a_queue_limit_in_flujo_toml_holds_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline()).unwrap();
    std::fs::write(dir.path().join("flujo.toml"), "[queues.jobs]\nconcurrency = 2\n").unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let runs = enqueue(dir.path(), &state, 8);
    let mut workers: Vec<Child> =
        (0..3).map(|_| worker(dir.path(), &state, &["--concurrency", "4", "--exit-when-idle"])).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(&state).unwrap();
    let mut most = 0;
    while workers.iter_mut().any(|w| w.try_wait().unwrap().is_none()) {
        let running = rt.block_on(store.list_runs(&flujo_core::RunFilter::new().status(RunStatus::Running))).unwrap();
        most = most.max(running.len());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(most <= 2, "{most} runs of a queue limited to 2 ran at once");
    assert!(most >= 1, "no run was ever seen running");
    check_all_done(dir.path(), &state, &runs, 0);
}

#[test]
fn a_queue_rate_limit_in_flujo_toml_paces_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: quick\nsteps:\n  - name: inc\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step + 1\"}}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("flujo.toml"), "[queues.jobs]\nrate_limit = {runs = 2, period_s = 1}\n").unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let runs = enqueue(dir.path(), &state, 4);
    let mut w = worker(dir.path(), &state, &["--concurrency", "8", "--exit-when-idle"]);
    assert_eq!(wait(&mut w, Duration::from_secs(60)), Some(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(&state).unwrap();
    let mut finished: Vec<i64> = runs
        .iter()
        .map(|(id, input)| {
            let run = rt.block_on(store.get_run(id)).unwrap().unwrap();
            assert_eq!(run.status, RunStatus::Completed);
            assert_eq!(run.output, Some(Value::from(input + 1)));
            run.updated_at_ms
        })
        .collect();
    finished.sort();
    // Two runs in the first second, the other two only once it has passed.
    assert!(finished[2] - finished[0] >= 900, "runs were not paced: finished at {finished:?}");

    std::fs::write(dir.path().join("flujo.toml"), "[queues.jobs]\nrate_limit = {runs = 0, period_s = 1}\n").unwrap();
    let o = flujo(dir.path(), &["worker", "--queue", "jobs", "--state", &state, "--exit-when-idle"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("rate_limit"), "{}", stderr(&o));
}
