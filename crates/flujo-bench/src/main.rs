//! `flujo-bench`: runs the standard benchmark workloads (shared/bench/README.md) in-process, after a
//! warm-up, under each persistence mode, and prints one JSON object per line:
//! `{"workload","n","persist","runs","median_s","min_s","per_unit_us","peak_rss_kb","store_bytes","correct"}`.
//!
//! Usage: `cargo run --release -p flujo-bench -- [WORKLOAD…] [--persist none,memory,sqlite,postgres] [--runs N]`
//! Workloads: linear_10 linear_100 linear_1000 linear_10000 loop_1000 loop_100000 parallel_50 parallel_1000
//! big_context_1000 resume_100 many_runs_1000 startup (default: all; `startup` needs `cargo build --release -p flujo-cli`). The pipelines are built in Rust with exactly the shapes
//! `shared/bench/gen.py` writes as YAML. Fleet workloads, with real `flujo worker` processes on SQLite or
//! Postgres (not in `all`): workers_1000 claim_latency failover (see `fleet.rs`). Vector stores (not in `all`):
//! `vectors`, `vectors_uniform`, `vectors_clustered` (memory, SQLite and pgvector at 10k and 100k records of dimension
//! 384; see `vectors.rs`). `api_sse --base URL --pipeline NAME`: event fan-out of a running `flujo serve` to 100
//! subscribers (see `api.rs`; scripts/bench_api.sh runs it).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
mod fleet;
mod icount;
mod vectors;

use std::sync::Arc;
use std::time::Instant;

use flujo_core::{AgentRef, Pipeline, RunStatus, Step, StepKind, Store};
use flujo_engine::Flujo;
use serde_json::{json, Value};

fn inc(name: &str) -> Step {
    Step::new(
        name,
        StepKind::Step {
            agent: Some(AgentRef::skill("flujo.builtins.transform", json!({"expr": "previous_step + 1"}))),
        },
    )
}

fn linear(n: usize) -> Pipeline {
    Pipeline::new(format!("bench_linear_{n}"), (0..n).map(|i| inc(&format!("s{i}"))).collect())
}

fn counting_loop(name: &str, iters: usize) -> Step {
    Step::loop_(name, [inc("body")]).max_loops(iters as u32 + 1).exit_when(format!("previous_step >= {iters}")).build()
}

fn looped(iters: usize) -> Pipeline {
    Pipeline::new(format!("bench_loop_{iters}"), vec![counting_loop("loop", iters)])
}

fn parallel(b: usize) -> Pipeline {
    let par = (0..b).fold(Step::parallel("par"), |par, i| par.branch(format!("b{i}"), [inc(&format!("b{i}"))]));
    Pipeline::new(format!("bench_parallel_{b}"), vec![par.build()])
}

fn big_context(iters: usize) -> Pipeline {
    Pipeline::new(
        format!("bench_big_context_{iters}"),
        vec![
            Step::skill("fill", "flujo.builtins.transform", json!({"expr": "'x' * 1048576"})).with_sink_to("blob"),
            Step::skill("zero", "flujo.builtins.transform", json!({"expr": "0"})),
            counting_loop("loop", iters),
        ],
    )
}

fn resume(k: usize) -> Pipeline {
    let mut steps: Vec<Step> = (0..k).map(|i| inc(&format!("s{i}"))).collect();
    steps.push(Step::hitl("approve", "continue?", None));
    steps.push(Step::skill("after", "flujo.builtins.stringify", Value::Null));
    Pipeline::new(format!("bench_resume_{k}"), steps)
}

#[derive(Clone, Copy, PartialEq)]
enum Persist {
    None,
    Memory,
    Sqlite,
    /// `FLUJO_BENCH_POSTGRES_URL`, a fresh schema per run.
    Postgres,
}

impl Persist {
    fn name(self) -> &'static str {
        match self {
            Persist::None => "none",
            Persist::Memory => "memory",
            Persist::Sqlite => "sqlite",
            Persist::Postgres => "postgres",
        }
    }
    fn store(self) -> Option<Arc<dyn Store>> {
        self.store_with_uri().map(|(s, _)| s)
    }

    /// A fresh store and the URI that opens it again (for other processes).
    fn store_with_uri(self) -> Option<(Arc<dyn Store>, String)> {
        match self {
            Persist::None => None,
            Persist::Memory => Some((Arc::new(flujo_store::MemoryStore::new()), "memory://".to_owned())),
            Persist::Postgres => {
                let Ok(url) = std::env::var("FLUJO_BENCH_POSTGRES_URL") else {
                    eprintln!("--persist postgres needs FLUJO_BENCH_POSTGRES_URL (see BENCHMARKS.md)");
                    return None;
                };
                let n = NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sep = if url.contains('?') { '&' } else { '?' };
                let uri = format!("{url}{sep}schema=bench_{}_{n}", std::process::id());
                match flujo_store::open_store(&uri) {
                    Ok(s) => Some((s, uri)),
                    Err(e) => {
                        eprintln!("cannot open the Postgres store: {e}");
                        None
                    }
                }
            }
            Persist::Sqlite => {
                // A fresh file per run, default durability (WAL, synchronous=NORMAL); the folder is removed
                // after each workload (`remove_sqlite_files`).
                let dir = sqlite_dir();
                let _ = std::fs::create_dir_all(&dir);
                let n = NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = dir.join(format!("bench-{n}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                let uri = format!("sqlite:///{}", path.display());
                match flujo_store::open_store(&uri) {
                    Ok(s) => Some((s, uri)),
                    Err(e) => {
                        eprintln!("cannot open {}: {e}", path.display());
                        None
                    }
                }
            }
        }
    }
}

static NEXT_DB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Sample {
    secs: f64,
    store_bytes: u64,
    correct: bool,
    /// p99 latency of one run (many_runs only).
    p99_run_s: Option<f64>,
}

fn build(p: &Pipeline, store: Option<Arc<dyn Store>>) -> Result<Flujo, String> {
    let mut b = Flujo::builder(p.clone());
    if let Some(s) = store {
        b = b.store(s);
    }
    b.build().map_err(|e| e.to_string())
}

async fn run_once(workload: &str, n: usize, p: &Pipeline, persist: Persist) -> Result<Sample, String> {
    let store = persist.store();
    let flujo = build(p, store.clone())?;
    let bytes = |s: &Option<Arc<dyn Store>>| s.as_ref().map(|s| s.bytes_written()).unwrap_or(0);
    match workload {
        "resume" => {
            // Time from resume to completion (replay of n records + 1 live step).
            let r = flujo.run(json!(0)).await.map_err(|e| e.to_string())?;
            if persist == Persist::None {
                return Ok(Sample {
                    secs: f64::NAN,
                    store_bytes: 0,
                    correct: r.status == RunStatus::Paused,
                    p99_run_s: None,
                });
            }
            let before = bytes(&store);
            let t = Instant::now();
            let done = flujo.resume(&r.run_id, json!("yes")).await.map_err(|e| e.to_string())?;
            let secs = t.elapsed().as_secs_f64();
            Ok(Sample {
                secs,
                store_bytes: bytes(&store) - before,
                correct: done.status == RunStatus::Completed && done.output == Some(json!("yes")),
                p99_run_s: None,
            })
        }
        "many_runs" => {
            let t = Instant::now();
            let futs = (0..n).map(|_| async {
                let start = Instant::now();
                let r = flujo.run(json!(0)).await;
                (r, start.elapsed().as_secs_f64())
            });
            let results = futures::future::join_all(futs).await;
            let secs = t.elapsed().as_secs_f64();
            let correct = results.iter().all(|(r, _)| matches!(r, Ok(r) if r.output == Some(json!(10))));
            let mut lat: Vec<f64> = results.iter().map(|(_, l)| *l).collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            let p99 = lat.get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
            Ok(Sample { secs, store_bytes: bytes(&store), correct, p99_run_s: Some(p99) })
        }
        _ => {
            let t = Instant::now();
            let r = flujo.run(json!(0)).await.map_err(|e| e.to_string())?;
            let secs = t.elapsed().as_secs_f64();
            let correct = match workload {
                "linear" | "loop" | "big_context" => r.output == Some(json!(n)),
                "parallel" => r
                    .output
                    .as_ref()
                    .and_then(Value::as_object)
                    .map(|o| o.len() == n && o.values().all(|v| v == &json!(1)))
                    .unwrap_or(false),
                _ => false,
            };
            Ok(Sample { secs, store_bytes: bytes(&store), correct, p99_run_s: None })
        }
    }
}

/// The folder of this process's SQLite files.
fn sqlite_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("flujo-bench-{}", std::process::id()))
}

/// Removes this process's SQLite files (a workload's runs leave one file each: `loop_100000`'s are large).
fn remove_sqlite_files() {
    let _ = std::fs::remove_dir_all(sqlite_dir());
}

fn workload(name: &str) -> Option<(&'static str, usize, Pipeline, usize)> {
    // (kind, n, pipeline, units per run)
    let (kind, n) = name.rsplit_once('_')?;
    let n: usize = n.parse().ok()?;
    Some(match kind {
        "linear" => ("linear", n, linear(n), n),
        "loop" => ("loop", n, looped(n), n),
        "parallel" => ("parallel", n, parallel(n), n),
        "big_context" => ("big_context", n, big_context(n), n),
        "resume" => ("resume", n, resume(n), n + 1),
        "many_runs" => ("many_runs", n, linear(10), n * 10),
        _ => return None,
    })
}

/// Workloads of `flujo worker` processes on a shared store (`fleet.rs`); not part of `all`.
const FLEET: &[&str] = &["workers_1000", "claim_latency", "failover"];

const ALL: &[&str] = &[
    "linear_10",
    "linear_100",
    "linear_1000",
    "linear_10000",
    "loop_1000",
    "loop_100000",
    "parallel_50",
    "parallel_1000",
    "big_context_1000",
    "resume_100",
    "many_runs_1000",
];

/// Whole-process start-up of the `flujo` binary next to this one: `flujo --version` and
/// `flujo run linear_10.yaml` (the standard blueprint, written to a temp dir), each `reps` times.
fn startup(reps: usize) -> bool {
    let Some(flujo) =
        std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("flujo"))).filter(|p| p.is_file())
    else {
        eprintln!("startup: build the CLI first (cargo build --release -p flujo-cli)");
        return false;
    };
    let dir = std::env::temp_dir().join(format!("flujo-bench-startup-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut yaml = String::from("version: \"0.1\"\nname: bench_linear_10\nsteps:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - name: s{i}\n    agent: {{id: flujo.builtins.transform, params: {{expr: \"previous_step + 1\"}}}}\n"
        ));
    }
    let file = dir.join("linear_10.yaml");
    if std::fs::write(&file, yaml).is_err() {
        return false;
    }
    let cases: [(&str, Vec<String>); 3] = [
        ("startup_version", vec!["--version".into()]),
        (
            "startup_run_linear_10",
            vec![
                "run".into(),
                file.display().to_string(),
                "--input-json".into(),
                "0".into(),
                "--state".into(),
                "memory://".into(),
                "--json".into(),
            ],
        ),
        (
            "startup_run_linear_10",
            vec!["run".into(), file.display().to_string(), "--input-json".into(), "0".into(), "--json".into()],
        ),
    ];
    let mut ok = true;
    for (i, (name, args)) in cases.iter().enumerate() {
        let persist = match i {
            0 => "none",
            1 => "memory",
            _ => "sqlite",
        };
        let mut secs = Vec::new();
        let mut correct = true;
        for _ in 0..reps + 1 {
            let t = Instant::now();
            let out = std::process::Command::new(&flujo).args(args).current_dir(&dir).output();
            secs.push(t.elapsed().as_secs_f64());
            match out {
                Ok(o) if o.status.success() => {
                    if i > 0 {
                        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
                        correct &= v["output"] == json!(10);
                    }
                }
                _ => correct = false,
            }
        }
        secs.remove(0); // warm-up
        secs.sort_by(|a, b| a.total_cmp(b));
        let median = secs[secs.len() / 2];
        println!(
            "{}",
            json!({"workload": name, "n": 10, "persist": persist, "runs": secs.len(), "median_s": median,
                   "min_s": secs[0], "per_unit_us": median * 1e6, "peak_rss_kb": null, "store_bytes": null, "correct": correct})
        );
        ok &= correct;
    }
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

fn main() {
    // `api_sse` (`api.rs`): event fan-out of a running `flujo serve`; its own arguments.
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("api_sse") {
        std::process::exit(i32::from(!api::main(&all[1..])));
    }
    // `icount WORKLOAD N` (`icount.rs`): one run for scripts/icount.sh to count under callgrind.
    if all.first().map(String::as_str) == Some("icount") {
        if let Err(e) = icount::main(&all[1..]) {
            eprintln!("icount: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut names: Vec<String> = Vec::new();
    let mut persists = vec![Persist::None, Persist::Memory, Persist::Sqlite];
    let mut runs: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--persist" => {
                persists = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|p| match p {
                        "none" => Some(Persist::None),
                        "memory" => Some(Persist::Memory),
                        "sqlite" => Some(Persist::Sqlite),
                        "postgres" => Some(Persist::Postgres),
                        other => {
                            eprintln!("unknown persistence mode '{other}' (known: none, memory, sqlite, postgres)");
                            None
                        }
                    })
                    .collect()
            }
            "--runs" => runs = args.next().and_then(|r| r.parse().ok()),
            "all" => {
                names.extend(ALL.iter().map(|s| s.to_string()));
                names.push("startup".into());
            }
            "-h" | "--help" => {
                println!(
                    "usage: flujo-bench [all|WORKLOAD…] [--persist none,memory,sqlite,postgres] [--runs N]\nworkloads: {}\nfleet workloads (worker processes; sqlite and postgres): {}\nvector stores: vectors (vectors_uniform, vectors_clustered)",
                    ALL.join(" "),
                    FLEET.join(" ")
                );
                return;
            }
            other => names.push(other.to_owned()),
        }
    }
    if names.is_empty() {
        names = ALL.iter().map(|s| s.to_string()).collect();
        names.push("startup".into());
    }
    if let Some(i) = names.iter().position(|n| n == "startup") {
        names.remove(i);
        let ok = startup(runs.unwrap_or(20));
        if names.is_empty() {
            std::process::exit(i32::from(!ok));
        }
        if !ok {
            eprintln!("startup measurement failed");
        }
    }
    // Vector stores (`vectors.rs`): their own stores, not `--persist`.
    let mut sets = Vec::new();
    names.retain(|n| match n.as_str() {
        "vectors" => {
            sets.extend([vectors::Data::Uniform, vectors::Data::Clustered]);
            false
        }
        "vectors_uniform" => {
            sets.push(vectors::Data::Uniform);
            false
        }
        "vectors_clustered" => {
            sets.push(vectors::Data::Clustered);
            false
        }
        _ => true,
    });
    if !sets.is_empty() {
        let ok = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(vectors::run(&sets, runs.unwrap_or(1))),
            Err(e) => {
                eprintln!("cannot start runtime: {e}");
                false
            }
        };
        if names.is_empty() {
            std::process::exit(i32::from(!ok));
        }
    }
    // Fleet workloads (worker processes on a shared store): SQLite and Postgres only.
    let fleet: Vec<String> = names.iter().filter(|n| FLEET.contains(&n.as_str())).cloned().collect();
    if !fleet.is_empty() {
        names.retain(|n| !FLEET.contains(&n.as_str()));
        let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cannot start runtime: {e}");
                std::process::exit(1);
            }
        };
        let mut ok = true;
        for name in &fleet {
            for &p in persists.iter().filter(|p| matches!(p, Persist::Sqlite | Persist::Postgres)) {
                let reps = runs.unwrap_or(3);
                let outcome = rt.block_on(async {
                    match name.as_str() {
                        "workers_1000" => fleet::workers(p, reps).await,
                        "claim_latency" => fleet::claim_latency(p, reps).await,
                        _ => fleet::failover(p, reps).await,
                    }
                });
                if let Err(e) = &outcome {
                    eprintln!("{name} ({}): {e}", p.name());
                }
                ok &= outcome.unwrap_or(false);
            }
        }
        if names.is_empty() {
            std::process::exit(i32::from(!ok));
        }
    }
    // Several (workload, persistence) pairs: run each in its own process so peak RSS is its own.
    if names.len() * persists.len() > 1 {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("cannot find own executable: {e}");
                std::process::exit(1);
            }
        };
        let mut failed = false;
        for name in &names {
            for p in &persists {
                let mut cmd = std::process::Command::new(&exe);
                cmd.arg(name).arg("--persist").arg(p.name());
                if let Some(r) = runs {
                    cmd.arg("--runs").arg(r.to_string());
                }
                match cmd.status() {
                    Ok(s) if s.success() => {}
                    _ => failed = true,
                }
            }
        }
        std::process::exit(i32::from(failed));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let mut failed = false;
    for name in &names {
        let Some((kind, n, pipeline, units)) = workload(name) else {
            eprintln!("unknown workload '{name}' (known: {})", ALL.join(" "));
            failed = true;
            continue;
        };
        for &persist in &persists {
            let reps = runs.unwrap_or(if units >= 50_000 { 3 } else { 5 });
            // Warm-up (not timed).
            if let Err(e) = rt.block_on(run_once(kind, n, &pipeline, persist)) {
                eprintln!("{name} ({}): {e}", persist.name());
                failed = true;
                continue;
            }
            let mut samples = Vec::new();
            for _ in 0..reps {
                match rt.block_on(run_once(kind, n, &pipeline, persist)) {
                    Ok(s) => samples.push(s),
                    Err(e) => {
                        eprintln!("{name} ({}): {e}", persist.name());
                        failed = true;
                    }
                }
            }
            if samples.is_empty() {
                continue;
            }
            let mut secs: Vec<f64> = samples.iter().map(|s| s.secs).collect();
            secs.sort_by(|a, b| a.total_cmp(b));
            let median = secs[secs.len() / 2];
            let mut line = json!({
                "workload": name,
                "n": n,
                "persist": persist.name(),
                "runs": samples.len(),
                "median_s": median,
                "min_s": secs[0],
                "per_unit_us": median * 1e6 / units as f64,
                "peak_rss_kb": peak_rss_kb(),
                "store_bytes": samples.last().map(|s| s.store_bytes).unwrap_or(0),
                "correct": samples.iter().all(|s| s.correct),
            });
            if kind == "many_runs" {
                let mut p99: Vec<f64> = samples.iter().filter_map(|s| s.p99_run_s).collect();
                p99.sort_by(|a, b| a.total_cmp(b));
                line["steps_per_s"] = json!(units as f64 / median);
                line["p99_run_ms"] = json!(p99.get(p99.len() / 2).map(|v| v * 1000.0));
            }
            println!("{line}");
            if !samples.iter().all(|s| s.correct) {
                failed = true;
            }
        }
        remove_sqlite_files();
    }
    remove_sqlite_files();
    if failed {
        std::process::exit(1);
    }
}
