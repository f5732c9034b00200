//! `flujo-bench icount WORKLOAD SIZE RUNS`: RUNS runs of a hot-path workload of SIZE units, after building
//! the runner once, on a single-threaded runtime — the program `scripts/icount.sh` runs under
//! `valgrind --tool=callgrind` to count instructions. Instruction counts do not depend on the machine's load,
//! so a committed baseline can guard against regressions that timing noise would hide. The script runs each
//! workload with RUNS and 2×RUNS and divides the difference by RUNS × SIZE: the instructions of one unit of
//! a run, free of start-up and of building the runner.
//!
//! Workloads (unit): `linear_none` and `linear_sqlite` (a step), `loop_sqlite` (an iteration),
//! `parallel_sqlite` (a branch), `resume_sqlite` (a run of SIZE steps paused, then resumed: per step, both
//! walks), `load_yaml` (a step of a blueprint parsed, validated and lowered).

use std::sync::Arc;

use flujo_core::{RunStatus, SkillRegistry, Store};
use serde_json::json;

/// Runs `workload` at size `n`; `Err` names what went wrong (a wrong output included).
pub fn main(args: &[String]) -> Result<(), String> {
    let [workload, size, runs] = args else {
        return Err("usage: flujo-bench icount WORKLOAD SIZE RUNS".into());
    };
    let size: usize = size.parse().map_err(|_| format!("SIZE must be a number, got {size}"))?;
    let runs: usize = runs.parse().map_err(|_| format!("RUNS must be a number, got {runs}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("flujo-icount-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sqlite = || -> Result<Option<Arc<dyn Store>>, String> {
        let uri = format!("sqlite:///{}", dir.join("icount.db").display());
        flujo_store::open_store(&uri).map(Some).map_err(|e| e.to_string())
    };
    let res = rt.block_on(async {
        let (pipeline, store) = match workload.as_str() {
            "linear_none" => (crate::linear(size), None),
            "linear_sqlite" => (crate::linear(size), sqlite()?),
            "loop_sqlite" => (crate::looped(size), sqlite()?),
            "parallel_sqlite" => (crate::parallel(size), sqlite()?),
            "resume_sqlite" => (crate::resume(size), sqlite()?),
            "load_yaml" => return (0..runs).try_for_each(|_| load_yaml(size)),
            other => return Err(format!("unknown icount workload {other}")),
        };
        let flujo = crate::build(&pipeline, store)?;
        for _ in 0..runs {
            let r = flujo.run(json!(0)).await.map_err(|e| e.to_string())?;
            let ok = match workload.as_str() {
                "parallel_sqlite" => r.status == RunStatus::Completed,
                "resume_sqlite" => {
                    let done = flujo.resume(&r.run_id, json!("yes")).await.map_err(|e| e.to_string())?;
                    done.output == Some(json!("yes"))
                }
                _ => r.output == Some(json!(size)),
            };
            if !ok {
                return Err(format!("{workload}: wrong result {:?}", r.error));
            }
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// The YAML of `linear_N` as `shared/bench/gen.py` writes it, loaded against the built-in skills.
fn load_yaml(n: usize) -> Result<(), String> {
    let mut yaml = format!("version: \"0.1\"\nname: bench_linear_{n}\nsteps:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: s{i}\n    agent: {{id: flujo.builtins.transform, params: {{expr: \"previous_step + 1\"}}}}\n"
        ));
    }
    let skills = flujo_skills::BuiltinRegistry::new();
    let registry: &dyn SkillRegistry = &skills;
    // As `flujo validate` and `flujo run` load (no canonical JSON copy).
    let opts = flujo_blueprint::LoadOptions { registry: Some(registry), skip_canonical: true, ..Default::default() };
    let loaded =
        flujo_blueprint::load_str(&yaml, std::path::Path::new("linear.yaml"), &opts).map_err(|e| format!("{e:?}"))?;
    (loaded.pipeline.steps.len() == n).then_some(()).ok_or_else(|| "wrong step count".to_owned())
}
