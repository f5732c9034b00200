//! Crash harness: a child `flujo run` is killed with SIGKILL at random moments, then up to two `flujo resume`
//! processes of the same run are killed too; a last `flujo resume RUN_ID` from a new process must finish the run with the same output as an uninterrupted run, no step whose record was
//! committed may execute again, and the journal's hash chain must verify.
//!
//! Side effects are observable: the command skill appends `IDEMPOTENCY_KEY NONCE` to `side.log` before it
//! answers, and returns the nonce in its output. For every step execution the journal committed, the
//! committed nonce must be the *last* line logged for that key — a committed step that ran again would log
//! a later nonce. (A step killed before its record committed may run twice: at-least-once, as documented.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flujo_core::{verify_chain, RunStatus};
use serde_json::{json, Value};

use common::{postgres, side_log};

const SKILLS: &str = r#"skills:
  slow.inc:
    description: add one, slowly, leaving a side effect
    command: ["sh", "-c", "read n; nonce=$$-$(date +%s%N); echo \"$FLUJO_IDEMPOTENCY_KEY $nonce\" >> side.log; sleep 0.03; echo \"{\\\"n\\\": $((n+1)), \\\"nonce\\\": \\\"$nonce\\\"}\""]
    timeout_s: 10
    side_effects: true
"#;

const PIPELINE: &str = r#"version: "0.1"
name: crashy
steps:
  - kind: loop
    name: count
    loop:
      max_loops: 10
      exit_expression: "previous_step >= 4"
      body:
        - name: inc
          agent: slow.inc
          config: {max_retries: 0}
        - name: unwrap
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step.n"}}
  - kind: parallel
    name: fan
    branches:
      a:
        - name: a1
          agent: slow.inc
          config: {max_retries: 0}
        - name: a2
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step.n * 10"}}
      b:
        - name: b1
          agent: slow.inc
          config: {max_retries: 0}
        - name: b2
          agent: slow.inc
          input: "{{ previous_step.n }}"
          config: {max_retries: 0}
        - name: b3
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step.n"}}
  - name: total
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step.a + previous_step.b"}}
"#;

fn flujo(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flujo"));
    // stdin closed: without `-i`, `flujo run` reads piped stdin as its input
    c.current_dir(dir).env_remove("FLUJO_STATE_URI").env_remove("FLUJO_CONFIG").stdin(Stdio::null());
    c
}

/// A small deterministic PRNG (xorshift) so failures are reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_at_random_points_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    crash_harness(dir.path(), &state, 50);
}

#[test]
fn sigkill_at_random_points_then_resume_on_postgres() {
    let Some(state) = postgres("crash") else { return };
    let dir = tempfile::tempdir().unwrap();
    crash_harness(dir.path(), &state, 30);
}

fn crash_harness(dir: &Path, state: &str, default_kills: usize) {
    std::fs::write(dir.join("skills.yaml"), SKILLS).unwrap();
    std::fs::write(dir.join("pipeline.yaml"), PIPELINE).unwrap();
    let state = state.to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The uninterrupted run: the expected output and its duration.
    let t = Instant::now();
    let o = flujo(dir)
        .args(["run", "--input-json", "0", "--json", "--state", &state, "--run-id", "straight"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let straight: Value = serde_json::from_slice(&o.stdout).unwrap();
    let expected = straight["output"].clone();
    assert_eq!(expected, json!(50 + 6));
    let full = t.elapsed();
    // The walk alone (from the run's creation to its completion): start-up (connecting to a server, migrating)
    // can be most of `full`, so kills meant to land mid-run are timed against this.
    let walk = {
        let store = flujo_store::open_store(&state).unwrap();
        let run = rt.block_on(store.get_run("straight")).unwrap().expect("the straight run is stored");
        Duration::from_millis(u64::try_from(run.updated_at_ms - run.created_at_ms).unwrap_or(0).max(1))
    };

    // Soak mode: `FLUJO_CRASH_MINUTES=N` keeps killing and resuming for N minutes (scripts/soak.sh), with a
    // seed from the clock unless `FLUJO_CRASH_SEED` is given; otherwise `FLUJO_CRASH_KILLS` kills (50).
    let soak = std::env::var("FLUJO_CRASH_MINUTES").ok().and_then(|s| s.parse::<f64>().ok()).filter(|m| *m > 0.0);
    let default_seed = match soak {
        Some(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        }
        None => 0x5eed_f00d_u64,
    };
    let seed = std::env::var("FLUJO_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seed) | 1;
    let kills: usize = std::env::var("FLUJO_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_kills);
    let deadline = soak.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    eprintln!("crash harness: seed {seed}, {}", soak.map_or(format!("{kills} kills"), |m| format!("soak for {m} min")));
    let mut rng = Rng(seed);
    let mut killed_mid_run = 0;
    let mut killed_in_resume = 0;
    let mut double_runs = 0;
    let mut done = 0;
    for i in 0.. {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            Some(_) if i > 0 && i % 100 == 0 => {
                eprintln!(
                    "  … {i} runs killed, {killed_mid_run} mid-run, {killed_in_resume} kills during resume, \
                     {double_runs} at-least-once re-runs"
                )
            }
            Some(_) => {}
            None if i >= kills => break,
            None => {}
        }
        done = i + 1;
        let run_id = format!("crash-{i}");
        let after_start = !rng.next().is_multiple_of(5);
        let span = if after_start { walk } else { full };
        let delay = Duration::from_micros(rng.next() % (span.as_micros() as u64).max(1));
        let mut child = flujo(dir)
            .args(["run", "--input-json", "0", "--json", "--state", &state, "--run-id", &run_id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // One kill in five lands at a random moment from the start (start-up included); the others at a
        // random moment of the walk after the run exists, so most land mid-run however long start-up takes
        // (connecting to a server, a loaded machine) and however fast the walk is.
        let store = flujo_store::open_store(&state).unwrap();
        if after_start {
            let deadline = Instant::now() + Duration::from_secs(20);
            while rt.block_on(store.get_run(&run_id)).unwrap().is_none()
                && child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let run = rt.block_on(store.get_run(&run_id)).unwrap();
        if run.is_none() {
            // Killed before the run record was created: nothing may have happened.
            assert!(side_log(dir).iter().all(|(k, _)| !k.starts_with(&format!("{run_id}:"))), "seed {seed} kill {i}");
            continue;
        }
        if status.code().is_none() && run.as_ref().map(|r| r.status) == Some(RunStatus::Running) {
            killed_mid_run += 1;
        }
        drop(store);
        // Up to two more kills, each during a `flujo resume` of the same run.
        for _ in 0..rng.next() % 3 {
            let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64).max(1));
            let mut child = flujo(dir)
                .args(["resume", &run_id, "--json", "--state", &state])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            if child.wait().unwrap().code().is_none() {
                killed_in_resume += 1;
            }
        }
        let o = flujo(dir).args(["resume", &run_id, "--json", "--state", &state]).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "seed {seed} kill {i} after {delay:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["output"], expected, "seed {seed} kill {i}: output");

        let store = flujo_store::open_store(&state).unwrap();
        let records = rt.block_on(store.load_journal(&run_id)).unwrap();
        verify_chain(&records).unwrap_or_else(|e| panic!("seed {seed} kill {i}: chain: {e}"));
        if i % 10 == 0 {
            let o = flujo(dir).args(["lens", "verify", &run_id, "--state", &state]).output().unwrap();
            assert_eq!(
                o.status.code(),
                Some(0),
                "seed {seed} kill {i}: lens verify: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        // Exactly-once for committed executions: the committed nonce is the last one logged for its key.
        let log = side_log(dir);
        let mut last: HashMap<&str, &str> = HashMap::new();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (k, n) in &log {
            last.insert(k, n);
            *count.entry(k).or_default() += 1;
        }
        for r in records.iter().filter(|r| r.status == flujo_core::StepStatus::Completed) {
            if let Some(nonce) = r.output.get("nonce").and_then(Value::as_str) {
                let key = format!("{run_id}:{}", r.path);
                assert_eq!(
                    last.get(key.as_str()).copied(),
                    Some(nonce),
                    "seed {seed} kill {i}: {key} ran after its record committed"
                );
                if count[key.as_str()] > 1 {
                    double_runs += 1;
                }
            }
        }
    }
    eprintln!(
        "seed {seed}: {done} runs killed, {killed_mid_run} mid-run, {killed_in_resume} more kills during resume; \
         {double_runs} uncommitted executions re-ran (at-least-once)"
    );
    assert!(soak.is_some() || done < 20 || killed_in_resume > 0, "some kills should land during a resume");
    assert!(killed_mid_run >= done / 2, "most kills should land mid-run ({killed_mid_run}/{done})");
}

const SLOW: &str = r#"skills:
  slow.echo:
    command: ["sh", "-c", "sleep 1; cat"]
    timeout_s: 30
"#;

#[test]
fn two_processes_resuming_one_paused_run_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    resume_race(dir.path(), &state);
}

#[test]
fn two_processes_resuming_one_paused_run_exactly_one_wins_on_postgres() {
    let Some(state) = postgres("race") else { return };
    let dir = tempfile::tempdir().unwrap();
    resume_race(dir.path(), &state);
}

fn resume_race(dir: &Path, state: &str) {
    std::fs::write(dir.join("skills.yaml"), SLOW).unwrap();
    std::fs::write(
        dir.join("p.yaml"),
        "name: race\nsteps:\n  - kind: hitl\n    name: ask\n    message: go?\n  - name: slow\n    agent: slow.echo\n",
    )
    .unwrap();
    for round in 0..3 {
        let run_id = format!("race-{round}");
        let o = flujo(dir).args(["run", "p.yaml", "--state", state, "--run-id", &run_id]).output().unwrap();
        assert_eq!(o.status.code(), Some(5));
        let spawn = |answer: &str| {
            flujo(dir)
                .args(["resume", &run_id, "-i", answer, "--json", "--state", state])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn("a"), spawn("b"));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [a.status.code(), b.status.code()];
        assert!(codes.contains(&Some(0)) && codes.contains(&Some(2)), "round {round}: exit codes {codes:?}");
        let loser = if a.status.code() == Some(2) { &a } else { &b };
        let err = String::from_utf8_lossy(&loser.stderr);
        assert!(err.contains("not_resumable") && err.contains("cannot be resumed"), "round {round}: {err}");
        let winner = if a.status.code() == Some(0) { &a } else { &b };
        let v: Value = serde_json::from_slice(&winner.stdout).unwrap();
        assert_eq!(v["status"], "completed");
        assert!(v["output"] == "a" || v["output"] == "b");
    }
}

#[test]
fn a_live_run_is_not_stolen_and_a_killed_one_resumes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SLOW).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: live\nsteps:\n  - name: s1\n    agent: slow.echo\n  - name: s2\n    agent: slow.echo\n  - name: s3\n    agent: slow.echo\n",
    )
    .unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let mut child = flujo(dir.path())
        .args(["run", "p.yaml", "-i", "x", "--state", &state, "--run-id", "live-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run exists and its first step is under way.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let store = flujo_store::open_store(&state).unwrap();
        if rt.block_on(store.get_run("live-1")).unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = flujo(dir.path()).args(["resume", "live-1", "--state", &state]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("process {}", child.id())), "names the live owner: {err}");

    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    let o = flujo(dir.path()).args(["resume", "live-1", "--json", "--state", &state]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["output"], "x");
    assert!(t.elapsed() < Duration::from_secs(20), "no lease wait for a dead owner on this host");
    let store = flujo_store::open_store(&state).unwrap();
    let run = rt.block_on(store.get_run("live-1")).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert!(run.owner.is_none() && run.lease_expires_at_ms.is_none(), "a finished run has no owner");
}

/// A command skill's process dies with the `flujo` process that started it, even when that one is killed
/// with SIGKILL: a resumed run never races the orphan of the killed run's step.
#[cfg(target_os = "linux")]
#[test]
fn a_skill_process_dies_with_a_killed_flujo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("skills.yaml"),
        "skills:\n  hang:\n    command: [sh, -c, \"echo $$ > skill.pid; sleep 30; echo 1\"]\n    timeout_s: 60\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("p.yaml"), "name: orphan\nsteps:\n  - name: s\n    agent: hang\n").unwrap();
    let mut child = flujo(dir.path())
        .args(["run", "p.yaml", "--state", "memory://"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("skill.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the skill never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    child.kill().unwrap(); // SIGKILL: no cleanup code of flujo runs
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Gone, or a zombie waiting for init to reap it.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false)
    };
    while alive() {
        assert!(Instant::now() < deadline, "the skill process {pid} outlived the killed flujo");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tree_search`: the proposer and the evaluator are command skills that log each call; killing the run at
/// random moments of the search and resuming it gives the same winner, and no call whose record was
/// committed is made again.
#[test]
fn tree_search_killed_mid_search_resumes_without_repeating_calls() {
    const SEARCH_SKILLS: &str = r#"skills:
  propose:
    command: ["sh", "-c", "in=$(cat); c=$(printf %s \"$in\" | sed -n 's/.*\"candidate\":\"\\([a-z]*\\)\".*/\\1/p'); nonce=$$-$(date +%s%N); echo \"$FLUJO_IDEMPOTENCY_KEY $nonce\" >> side.log; sleep 0.02; echo \"{\\\"candidates\\\": [\\\"${c}a\\\", \\\"${c}b\\\"], \\\"nonce\\\": \\\"$nonce\\\"}\""]
    side_effects: true
  judge:
    command: ["sh", "-c", "in=$(cat); c=$(printf %s \"$in\" | sed -n 's/.*\"candidate\":\"\\([a-z]*\\)\".*/\\1/p'); nb=$(printf %s \"$c\" | tr -cd b | wc -c); nonce=$$-$(date +%s%N); echo \"$FLUJO_IDEMPOTENCY_KEY $nonce\" >> side.log; sleep 0.02; echo \"{\\\"score\\\": $(awk \"BEGIN{print $nb/3}\"), \\\"nonce\\\": \\\"$nonce\\\"}\""]
    side_effects: true
"#;
    const SEARCH: &str = r#"version: "0.1"
name: search
steps:
  - kind: tree_search
    name: search
    proposer: propose
    evaluator: judge
    branching_factor: 2
    beam_width: 2
    max_depth: 6
    config: {max_retries: 0}
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skills.yaml"), SEARCH_SKILLS).unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), SEARCH).unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    let o = flujo(dir.path())
        .args(["run", "-i", "a", "--json", "--state", &state, "--run-id", "straight"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let straight: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(straight["output"], "abbb", "{straight}");
    let full = t.elapsed();
    let calls = side_log(dir.path()).len();
    assert_eq!(calls, 4 + 8, "four expansions of one proposal and two evaluations each");

    let seed = std::env::var("FLUJO_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7ee5_u64) | 1;
    let mut rng = Rng(seed);
    let mut mid_search = 0;
    for i in 0..12 {
        let run_id = format!("search-{i}");
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64).max(1));
        let mut child = flujo(dir.path())
            .args(["run", "-i", "a", "--json", "--state", &state, "--run-id", &run_id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        if child.wait().unwrap().code().is_none() {
            let logged = side_log(dir.path()).iter().filter(|(k, _)| k.starts_with(&format!("{run_id}:"))).count();
            if logged > 0 && logged < calls {
                mid_search += 1;
            }
        }
        let store = flujo_store::open_store(&state).unwrap();
        let exists = rt.block_on(store.get_run(&run_id)).unwrap().is_some();
        drop(store);
        if !exists {
            continue;
        }
        let o = flujo(dir.path()).args(["resume", &run_id, "--json", "--state", &state]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "seed {seed} kill {i}: {}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["output"], "abbb", "seed {seed} kill {i}");
        let store = flujo_store::open_store(&state).unwrap();
        let records = rt.block_on(store.load_journal(&run_id)).unwrap();
        verify_chain(&records).unwrap_or_else(|e| panic!("seed {seed} kill {i}: chain: {e}"));
        let log = side_log(dir.path());
        let mut last: HashMap<&str, &str> = HashMap::new();
        for (k, n) in &log {
            last.insert(k, n);
        }
        let mut committed = 0;
        for r in records.iter().filter(|r| r.status == flujo_core::StepStatus::Completed) {
            if let Some(nonce) = r.output.get("nonce").and_then(Value::as_str) {
                committed += 1;
                let key = format!("{run_id}:{}", r.path);
                assert_eq!(
                    last.get(key.as_str()).copied(),
                    Some(nonce),
                    "seed {seed} kill {i}: {key} ran after its record committed"
                );
            }
        }
        assert_eq!(committed, calls, "seed {seed} kill {i}: every call has its record");
    }
    assert!(mid_search >= 3, "some kills should land mid-search ({mid_search}/12)");
}
