//! The example application through its binary: a run pauses at the approval and a second process resumes it;
//! a run killed (SIGKILL) in the middle of the custom kind's attempts is continued by another process, and no
//! finished step runs twice (every side effect is stamped with its idempotency key).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn example(dir: &Path, args: &[&str], slow_ms: Option<u64>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flujo-example"));
    c.args(args).current_dir(dir).stdin(Stdio::null());
    match slow_ms {
        Some(ms) => c.env("FLUJO_EXAMPLE_SLOW_MS", ms.to_string()),
        None => c.env_remove("FLUJO_EXAMPLE_SLOW_MS"),
    };
    c
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stamps(dir: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(dir.join("state.db.stamps")).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn run_id(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).lines().next().and_then(|l| l.strip_prefix("run ")).unwrap().to_owned()
}

/// The stamps of one full run: the parallel branch once, the custom kind's attempts (2025 doubled until it
/// reaches 100000: six attempts).
const STAMPS: usize = 7;

#[test]
fn a_paused_run_is_resumed_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let o = example(dir.path(), &["run", "state.db"], None).output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", out(&o));
    let id = run_id(&o);
    assert!(out(&o).contains("finished 7/attempt:5/1"), "{}", out(&o));
    let o = example(dir.path(), &["resume", "state.db", &id], None).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("output \"decision=yes\""), "{}", out(&o));
    let s = stamps(dir.path());
    assert_eq!(s.len(), STAMPS, "{s:?}");
    assert!(s.values().all(|n| *n == 1), "a finished step ran again: {s:?}");
}

#[test]
fn a_killed_run_continues_without_repeating_finished_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = example(dir.path(), &["run", "state.db"], Some(300)).stdout(Stdio::piped()).spawn().unwrap();
    // Kill it in the middle of the custom kind's attempts.
    let started = Instant::now();
    while stamps(dir.path()).len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "the run did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    let id = run_id(&o);
    let before = stamps(dir.path()).len();
    assert!(before < STAMPS, "the run finished before it was killed");
    let o = example(dir.path(), &["continue", "state.db", &id], None).output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", out(&o));
    let o = example(dir.path(), &["resume", "state.db", &id], None).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let s = stamps(dir.path());
    assert_eq!(s.len(), STAMPS, "{s:?}");
    // Only a call in flight when the process died may have been made twice (same idempotency key).
    let repeated: Vec<_> = s.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.len() <= 1 && repeated.iter().all(|(_, n)| **n == 2), "{repeated:?}");
}
