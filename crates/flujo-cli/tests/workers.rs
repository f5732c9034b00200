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
    command: ["sh", "-c", "read n; nonce=$$-$(date +%s%N); echo \"$FLUJO_IDEMPOTENCY_KEY $nonce $PPID\" >> side.log; sleep 0.05; echo \"{\\\"n\\\": $((n+1)), \\\"nonce\\\": \\\"$nonce\\\"}\""]
    timeout_s: 30
    side_effects: true
"#;

/// Five side-effecting steps, each followed by a transform: the output is the input plus five.
fn pipeline() -> String {
    pipeline_of(5)
}

/// `n` side-effecting steps, each followed by a transform (2n steps): the output is the input plus `n`.
fn pipeline_of(n: usize) -> String {
    let mut steps = String::new();
    for i in 0..n {
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
    check_all_done_of(dir, state, runs, kills, 5);
}

/// `check_all_done` for runs of `pipeline_of(side_steps)`; also checks, from the journal, that no run ever
/// had two live owners: its records form one gapless chain (`verify_chain`) in which each step is committed
/// once — two owners walking a run at once would both commit its steps. (A worker's pid may legitimately
/// come back to a run: a worker that lost a run when the store failed may claim it again later.)
fn check_all_done_of(dir: &Path, state: &str, runs: &[(String, i64)], kills: usize, side_steps: i64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(state).unwrap();
    let log = side_log(dir);
    let mut last: HashMap<&str, &str> = HashMap::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (k, rest) in &log {
        let nonce = rest.split_once(' ').map_or(rest.as_str(), |(n, _pid)| n);
        last.insert(k, nonce);
        *count.entry(k).or_default() += 1;
    }
    for (run_id, input) in runs {
        let run = rt.block_on(store.get_run(run_id)).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Completed, "run {run_id}: {:?}", run.error);
        assert_eq!(run.output, Some(Value::from(input + side_steps)), "run {run_id}");
        assert_eq!(run.owner, None, "run {run_id}: a finished run has no owner");
        let records = rt.block_on(store.load_journal(run_id)).unwrap();
        verify_chain(&records).unwrap_or_else(|e| panic!("run {run_id}: {e}"));
        let mut paths = std::collections::HashSet::new();
        for r in records.iter().filter(|r| r.status == StepStatus::Completed) {
            assert!(paths.insert(r.path.clone()), "run {run_id}: step {} committed twice", r.path);
        }
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

/// The issue's failover case: 3 workers, 200 queued runs of 20 steps (10 with a side effect); one worker
/// is killed with SIGKILL, then another, while busy; the last one finishes everything.
fn failover(state: &str) {
    const RUNS: usize = 200;
    const SIDE_STEPS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline_of(SIDE_STEPS)).unwrap();
    let runs = enqueue(dir.path(), state, RUNS);
    let mut workers: Vec<Child> =
        (0..3).map(|_| worker(dir.path(), state, &["--concurrency", "8", "--exit-when-idle"])).collect();
    // Kill one worker while it is busy, then another; the last one finishes everything, taking over the
    // killed workers' runs once their leases expire.
    std::thread::sleep(Duration::from_millis(2500));
    workers[0].kill().unwrap();
    workers[0].wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    workers[1].kill().unwrap();
    workers[1].wait().unwrap();
    let survivor = workers.pop().unwrap();
    let mut survivor = survivor;
    assert_eq!(wait(&mut survivor, Duration::from_secs(180)), Some(0));
    let out = survivor.wait_with_output().unwrap();
    let finished: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!finished.is_empty(), "the surviving worker finished no run: {}", String::from_utf8_lossy(&out.stderr));
    check_all_done_of(dir.path(), state, &runs, 2, SIDE_STEPS as i64);
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

/// The ticks (Unix seconds) of the runs of schedule `name` found in the store, sorted, each checked
/// completed with `input + 1` and its side effect once.
fn scheduled_runs(dir: &Path, state: &str, name: &str, input: i64) -> Vec<i64> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(state).unwrap();
    let prefix = format!("sched-{name}-");
    let ids = rt.block_on(store.find_runs_by_prefix(&prefix, 10_000)).unwrap();
    let runs: Vec<(String, i64)> = ids.iter().map(|id| (id.clone(), input)).collect();
    check_all_done_of(dir, state, &runs, 0, 1);
    let mut ticks: Vec<i64> = ids
        .iter()
        .map(|id| {
            let stamp = &id[prefix.len()..];
            let t: jiff::civil::DateTime =
                jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).unwrap_or_else(|e| panic!("run id {id}: {e}"));
            t.to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp().as_second()
        })
        .collect();
    ticks.sort_unstable();
    ticks
}

fn stop(child: &mut Child) -> String {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(wait(child, Duration::from_secs(60)), Some(0), "a stopped worker exits 0");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    err
}

/// Three workers fire a per-second schedule for `secs` seconds: exactly one run per tick (no tick twice,
/// none skipped), each enqueued by exactly one worker and run once.
fn schedule_fires_once_per_tick(state: &str, secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline_of(1)).unwrap();
    let o = flujo(
        dir.path(),
        &["schedule", "add", "tick", "p.yaml", "--cron", "* * * * * *", "--queue", "jobs", "--input-json", "41"]
            .into_iter()
            .chain(["--json", "--state", state])
            .collect::<Vec<_>>(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["status"], "added");
    let added = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut workers: Vec<Child> = (0..3).map(|_| worker(dir.path(), state, &["--concurrency", "4"])).collect();
    std::thread::sleep(Duration::from_secs(secs));
    let o = flujo(dir.path(), &["schedule", "remove", "tick", "--state", state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let removed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // Let the last runs finish, then stop the workers.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = flujo_store::open_store(state).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let busy = [RunStatus::Queued, RunStatus::Running]
            .iter()
            .map(|s| rt.block_on(store.list_runs(&flujo_core::RunFilter::new().status(*s))).unwrap().len())
            .sum::<usize>();
        if busy == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{busy} scheduled runs never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs: Vec<String> = workers.iter_mut().map(stop).collect();
    let ticks = scheduled_runs(dir.path(), state, "tick", 41);
    assert!(ticks.len() as u64 + 3 >= secs, "{} runs in {secs} s: {ticks:?}", ticks.len());
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "a tick was skipped or repeated: {ticks:?}");
    assert!(ticks[0] > added - 1 && *ticks.last().unwrap() <= removed, "ticks outside the schedule's life: {ticks:?}");
    // Each run was enqueued by exactly one worker, and the three workers shared the firing.
    let mut enqueued: HashMap<String, usize> = HashMap::new();
    for log in &logs {
        for line in log.lines().filter_map(|l| l.strip_prefix("schedule tick: enqueued run ")) {
            *enqueued.entry(line.trim().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(enqueued.len(), ticks.len(), "{enqueued:?}");
    assert!(enqueued.values().all(|n| *n == 1), "a tick was enqueued by two workers: {enqueued:?}");
}

#[test]
fn a_per_second_schedule_fires_once_per_tick_across_three_workers_on_postgres() {
    let Some(state) = postgres("schedule") else { return };
    schedule_fires_once_per_tick(&state, 20);
}

#[test]
fn a_per_second_schedule_fires_once_per_tick_across_three_workers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    schedule_fires_once_per_tick(&format!("sqlite:///{}", dir.path().join("state.db").display()), 8);
}

#[test]
fn schedules_are_checked_listed_replaced_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline()).unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let add = |extra: &[&str]| {
        let mut args = vec!["schedule", "add", "nightly", "p.yaml", "--state", &state, "--json"];
        args.extend_from_slice(extra);
        flujo(dir.path(), &args)
    };
    // Bad expressions, zones and names: exit 2 with the reason; nothing is stored.
    for (extra, kind, says) in [
        (&["--cron", "61 * * * *"][..], "schedule_invalid", "cron expression"),
        (&["--cron", "0 0 30 2 *"][..], "schedule_invalid", "never fires"),
        (&["--cron", "0 3 * * *", "--tz", "Mars/Olympus"][..], "schedule_invalid", "time zone"),
        (&["--cron", "0 3 * * *", "--queue", "a/b"][..], "schedule_invalid", "queue name"),
        (&["--cron", "0 3 * * *", "--catchup-s=-1"][..], "usage_error", "catchup"),
    ] {
        let o = add(extra);
        assert_eq!(code(&o), 2, "{extra:?}: {}", stderr(&o));
        let err = &common::json_value(&o)["error"];
        assert_eq!(err["kind"], kind, "{extra:?}: {err}");
        assert!(err["message"].as_str().unwrap().contains(says), "{extra:?}: {err}");
    }
    let listed = json_out(&flujo(dir.path(), &["schedule", "list", "--json", "--state", &state]));
    assert_eq!(listed["schedules"], serde_json::json!([]));
    // A daily 03:00 in Madrid.
    let o = add(&["--cron", "0 3 * * *", "--tz", "Europe/Madrid", "--queue", "nightly", "--input-json", "7"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!((v["status"].as_str(), v["pipeline"].as_str()), (Some("added"), Some("queued_work")), "{v}");
    let next = v["next_tick"].as_str().unwrap();
    assert!(next.ends_with(":00:00Z") && (next.contains("T02:") || next.contains("T01:")), "03:00 Madrid: {next}");
    // The same name again: refused unless --replace.
    let o = add(&["--cron", "0 4 * * *"]);
    assert_eq!(code(&o), 2);
    assert_eq!(common::json_value(&o)["error"]["kind"], "schedule_exists");
    let o = add(&["--cron", "0 4 * * *", "--replace"]);
    assert_eq!(json_out(&o)["status"], "replaced");
    let listed = json_out(&flujo(dir.path(), &["schedule", "list", "--json", "--state", &state]));
    let s = &listed["schedules"][0];
    assert_eq!(
        (s["name"].as_str(), s["cron"].as_str(), s["timezone"].as_str()),
        (Some("nightly"), Some("0 4 * * *"), Some("UTC"))
    );
    assert_eq!(s["queue"], "default");
    assert!(s["next_tick"].as_str().unwrap().contains("T04:00:00Z"), "{s}");
    assert!(common::stdout(&flujo(dir.path(), &["schedule", "list", "--state", &state])).contains("nightly"));
    // Removing: once; then unknown (exit 2). A memory store cannot keep schedules.
    let o = flujo(dir.path(), &["schedule", "remove", "nightly", "--state", &state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = flujo(dir.path(), &["schedule", "remove", "nightly", "--state", &state, "--json"]);
    assert_eq!(code(&o), 2);
    assert_eq!(common::json_value(&o)["error"]["kind"], "schedule_not_found");
    let o = flujo(dir.path(), &["schedule", "add", "x", "p.yaml", "--cron", "@hourly", "--state", "memory://"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("keeps nothing"), "{}", stderr(&o));
}

#[test]
fn worker_status_lists_live_workers() {
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let status = |all: bool| {
        let mut args = vec!["worker", "--status", "--json", "--state", state.as_str()];
        if all {
            args.push("--all");
        }
        let o = flujo(dir.path(), &args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        json_out(&o)
    };
    assert_eq!(status(false)["workers"], serde_json::json!([]));
    let mut a = cmd(dir.path(), &["worker", "--queue", "a", "--queue", "b", "--state", &state, "--lease-s", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut b = cmd(dir.path(), &["worker", "--queue", "c", "--concurrency", "2", "--state", &state, "--lease-s", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let v = status(false);
        if v["workers"].as_array().unwrap().len() == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "the workers never registered: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut pids: Vec<i64> = live["workers"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap()).collect();
    pids.sort_unstable();
    let mut want = vec![i64::from(a.id()), i64::from(b.id())];
    want.sort_unstable();
    assert_eq!(pids, want);
    let wa = live["workers"].as_array().unwrap().iter().find(|w| w["pid"] == a.id()).unwrap();
    assert_eq!(wa["queues"], serde_json::json!(["a", "b"]));
    assert_eq!(wa["concurrency"], 4);
    assert_eq!(wa["live"], true);
    let text = common::stdout(&flujo(dir.path(), &["worker", "--status", "--state", &state]));
    assert!(text.contains(&a.id().to_string()) && text.contains("a,b"), "{text}");
    // A clean stop removes the registration; a killed worker goes silent once its lease has passed.
    stop(&mut a);
    b.kill().unwrap();
    b.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let v = status(false);
    assert_eq!(v["workers"], serde_json::json!([]), "{v}");
    assert_eq!(v["silent"], 1, "{v}");
    let all = status(true);
    assert_eq!(all["workers"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all["workers"][0]["pid"], b.id());
    assert_eq!(all["workers"][0]["live"], false);
}
