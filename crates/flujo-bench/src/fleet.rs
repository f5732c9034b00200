//! Fleet workloads: real `flujo worker` processes (the binary next to this one) on a shared store.
//!
//! - `workers_1000`: 1000 queued `linear_10` runs, walked by 1, 2 and 4 worker processes; durable steps/s
//!   from the workers' start to the last one's exit (`--exit-when-idle`).
//! - `claim_latency`: one idle worker (poll 200 ms, the default, and 20 ms); a run is enqueued at a random
//!   moment; the time from its creation to its first step's start.
//! - `failover`: a worker walking a long run is killed with SIGKILL; the time until another worker (already
//!   running) starts the run's next step. The lease is 1 s; the target is under lease + 100 ms.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flujo_core::{RunStatus, Store};
use flujo_engine::{Flujo, RunOptions};
use serde_json::json;

use crate::{linear, Persist};

/// The `flujo` binary next to this one.
fn flujo_bin() -> Result<PathBuf, String> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("flujo")))
        .filter(|p| p.is_file())
        .ok_or_else(|| "build the CLI first (cargo build --release -p flujo-cli)".to_owned())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

fn worker(bin: &Path, dir: &Path, uri: &str, extra: &[&str]) -> Result<Child, String> {
    Command::new(bin)
        .current_dir(dir)
        .args(["worker", "--queue", "bench", "--state", uri])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A fresh store for one measurement, and its URI (for the workers).
fn fresh(persist: Persist) -> Result<(Arc<dyn Store>, String), String> {
    persist.store_with_uri().ok_or_else(|| format!("no {} store", persist.name()))
}

async fn enqueue(store: &Arc<dyn Store>, runs: usize) -> Result<(), String> {
    let flujo = Flujo::builder(linear(10)).store(store.clone()).build().map_err(|e| e.to_string())?;
    for _ in 0..runs {
        flujo.enqueue(RunOptions::new(json!(0)), "bench").await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn all_done(store: &Arc<dyn Store>, runs: usize) -> Result<bool, String> {
    let done = store
        .list_runs(&flujo_core::RunFilter::new().status(RunStatus::Completed).limit(runs + 1))
        .await
        .map_err(|e| e.to_string())?;
    Ok(done.len() == runs && done.iter().all(|r| r.output == Some(json!(10))))
}

/// `workers_1000`: one JSON line per worker count.
pub async fn workers(persist: Persist, reps: usize) -> Result<bool, String> {
    const RUNS: usize = 1000;
    let bin = flujo_bin()?;
    let dir = std::env::temp_dir().join(format!("flujo-bench-fleet-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut ok = true;
    for n in [1usize, 2, 4] {
        let mut secs = Vec::new();
        let mut correct = true;
        for _ in 0..reps {
            let (store, uri) = fresh(persist)?;
            enqueue(&store, RUNS).await?;
            let concurrency = RUNS.div_ceil(n).to_string();
            let t = Instant::now();
            let mut children = (0..n)
                .map(|_| {
                    worker(&bin, &dir, &uri, &["--concurrency", &concurrency, "--poll-ms", "20", "--exit-when-idle"])
                })
                .collect::<Result<Vec<_>, _>>()?;
            for c in &mut children {
                correct &= c.wait().map(|s| s.success()).unwrap_or(false);
            }
            secs.push(t.elapsed().as_secs_f64());
            correct &= all_done(&store, RUNS).await?;
        }
        let m = median(secs.clone());
        println!(
            "{}",
            json!({"workload": "workers_1000", "workers": n, "persist": persist.name(), "runs": secs.len(),
                   "median_s": m, "min_s": secs.iter().copied().fold(f64::INFINITY, f64::min),
                   "steps_per_s": (RUNS * 10) as f64 / m, "correct": correct})
        );
        ok &= correct;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

/// The first journal record's start minus the run's creation, once the run has one.
async fn first_step_delay(store: &Arc<dyn Store>, run_id: &str, limit: Duration) -> Result<f64, String> {
    let deadline = Instant::now() + limit;
    loop {
        let records = store.load_journal(run_id).await.map_err(|e| e.to_string())?;
        if let Some(first) = records.first() {
            let run = store.get_run(run_id).await.map_err(|e| e.to_string())?.ok_or("run vanished")?;
            return Ok((first.started_at_ms - run.created_at_ms) as f64 / 1000.0);
        }
        if Instant::now() > deadline {
            return Err(format!("run {run_id} never started"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `claim_latency`: one JSON line per poll interval.
pub async fn claim_latency(persist: Persist, reps: usize) -> Result<bool, String> {
    let bin = flujo_bin()?;
    let dir = std::env::temp_dir().join(format!("flujo-bench-claim-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    for poll in ["200", "20"] {
        let (store, uri) = fresh(persist)?;
        let mut w = worker(&bin, &dir, &uri, &["--poll-ms", poll])?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let flujo = Flujo::builder(linear(10)).store(store.clone()).build().map_err(|e| e.to_string())?;
        let mut lat = Vec::new();
        for i in 0..reps.max(5) * 4 {
            // Enqueue at varied phases of the worker's polling.
            tokio::time::sleep(Duration::from_millis(37 + (i as u64 * 53) % 211)).await;
            let id = flujo.enqueue(RunOptions::new(json!(0)), "bench").await.map_err(|e| e.to_string())?;
            lat.push(first_step_delay(&store, &id, Duration::from_secs(10)).await?);
        }
        let _ = w.kill();
        let _ = w.wait();
        let mut sorted = lat.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{}",
            json!({"workload": "claim_latency", "poll_ms": poll.parse::<u64>().unwrap_or(0), "persist": persist.name(),
                   "runs": lat.len(), "median_ms": median(lat) * 1000.0,
                   "p90_ms": sorted[sorted.len() * 9 / 10] * 1000.0, "correct": true})
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(true)
}

/// `failover`: SIGKILL of the worker walking a run, to the first step another worker starts.
pub async fn failover(persist: Persist, reps: usize) -> Result<bool, String> {
    let bin = flujo_bin()?;
    let dir = std::env::temp_dir().join(format!("flujo-bench-failover-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // Steps that each take ~10 ms, so the run is long enough to be killed in the middle.
    let skills =
        "skills:\n  nap:\n    description: sleep 10 ms\n    command: [\"sh\", \"-c\", \"sleep 0.01; echo 1\"]\n";
    let mut pipeline = String::from("name: long\nsteps:\n");
    for i in 0..400 {
        pipeline.push_str(&format!("  - name: s{i}\n    agent: nap\n"));
    }
    std::fs::write(dir.join("skills.yaml"), skills).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("long.yaml"), pipeline).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let (store, uri) = fresh(persist)?;
        let out = Command::new(&bin)
            .current_dir(&dir)
            .args(["run", "long.yaml", "--queue", "bench", "--json", "--state", &uri])
            .output()
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("run --queue: {e}"))?;
        let run_id = v["run_id"].as_str().ok_or("no run id")?.to_owned();
        let lease = ["--lease-s", "1", "--poll-ms", "20"];
        let mut first = worker(&bin, &dir, &uri, &lease)?;
        // Wait until it is walking the run, then start the standby worker and let both settle.
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.load_journal(&run_id).await.map_err(|e| e.to_string())?.len() < 5 {
            if Instant::now() > deadline {
                return Err("the first worker never started the run".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut standby = worker(&bin, &dir, &uri, &lease)?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed_at = now_ms();
        let _ = first.kill();
        let _ = first.wait();
        let before = store.load_journal(&run_id).await.map_err(|e| e.to_string())?.len();
        let deadline = Instant::now() + Duration::from_secs(20);
        let taken = loop {
            let records = store.load_journal(&run_id).await.map_err(|e| e.to_string())?;
            if let Some(r) = records.get(before) {
                break r.started_at_ms;
            }
            if Instant::now() > deadline {
                return Err("no worker took the run over".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        times.push((taken - killed_at) as f64 / 1000.0);
        let _ = standby.kill();
        let _ = standby.wait();
    }
    let m = median(times.clone());
    println!(
        "{}",
        json!({"workload": "failover", "lease_s": 1.0, "persist": persist.name(), "runs": times.len(),
               "median_ms": m * 1000.0, "max_ms": times.iter().copied().fold(0.0, f64::max) * 1000.0,
               "correct": m < 1.1})
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(true)
}
