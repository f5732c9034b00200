//! `flujo lens evals`: the shadow evaluations kept in the store — each one, and per pipeline and step the
//! count, the average score and the distribution of scores (five bins of 0.2).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use flujo_core::{EvaluationFilter, EvaluationRecord, EvaluationStatus, Store};
use serde_json::{json, Value};

use crate::{CliError, EXIT_FAILED, EXIT_OK};

/// One pipeline and step's summary.
#[derive(Default)]
struct Group {
    count: u64,
    done: u64,
    failed: u64,
    pending: u64,
    sum: f64,
    bins: [u64; 5],
    cost: f64,
}

fn bin(score: f64) -> usize {
    ((score * 5.0).floor() as usize).min(4)
}

fn summarize(evals: &[EvaluationRecord]) -> BTreeMap<(String, String), Group> {
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for e in evals {
        let g = groups.entry((e.pipeline.clone(), e.path.clone().unwrap_or_else(|| "run".to_owned()))).or_default();
        g.count += 1;
        g.cost += e.cost_usd;
        match e.status {
            EvaluationStatus::Done => {
                g.done += 1;
                if let Some(s) = e.score {
                    g.sum += s;
                    g.bins[bin(s)] += 1;
                }
            }
            EvaluationStatus::Failed => g.failed += 1,
            _ => g.pending += 1,
        }
    }
    groups
}

/// Prints the evaluations that pass `filter`, and their summary.
pub(crate) async fn evals(store: &Arc<dyn Store>, filter: &EvaluationFilter, json_out: bool) -> Result<u8, CliError> {
    let evals = store
        .list_evaluations(filter)
        .await
        .map_err(|e| CliError::new("store_error", EXIT_FAILED, format!("cannot read evaluations: {e}")))?;
    let groups = summarize(&evals);
    let avg = |g: &Group| (g.done > 0).then(|| g.sum / g.done as f64);
    if json_out {
        let summary: Vec<Value> = groups
            .iter()
            .map(|((pipeline, path), g)| {
                json!({"pipeline": pipeline, "path": path, "count": g.count, "done": g.done, "failed": g.failed,
                       "pending": g.pending, "average_score": avg(g), "histogram": g.bins, "cost_usd": g.cost})
            })
            .collect();
        let list: Vec<Value> = evals
            .iter()
            .map(|e| {
                json!({"evaluation_id": e.evaluation_id, "run_id": e.run_id, "pipeline": e.pipeline,
                       "path": e.path.clone().unwrap_or_else(|| "run".to_owned()), "judge": e.judge,
                       "status": e.status.as_str(), "score": e.score, "reason": e.reason, "tokens": e.tokens,
                       "cost_usd": e.cost_usd, "latency_ms": e.latency_ms, "created_at_ms": e.created_at_ms})
            })
            .collect();
        outln!("{}", json!({"evaluations": list, "summary": summary}));
        return Ok(EXIT_OK);
    }
    if evals.is_empty() {
        outln!("no evaluations");
        return Ok(EXIT_OK);
    }
    let mut out = String::new();
    let _ = writeln!(out, "{:<34} {:<10} {:<8} {:>6}  REASON", "RUN", "PATH", "STATUS", "SCORE");
    for e in &evals {
        let reason: String = e.reason.clone().unwrap_or_default().chars().take(60).collect();
        let _ = writeln!(
            out,
            "{:<34} {:<10} {:<8} {:>6}  {}",
            e.run_id,
            e.path.clone().unwrap_or_else(|| "run".to_owned()),
            e.status.as_str(),
            e.score.map_or("-".to_owned(), |s| format!("{s:.2}")),
            reason.replace('\n', " ")
        );
    }
    let _ = writeln!(out, "\nsummary:");
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>5} {:>5} {:>6} {:>7} {:>7}  0-.2 .2-.4 .4-.6 .6-.8 .8-1",
        "PIPELINE", "PATH", "N", "DONE", "FAILED", "PENDING", "AVG"
    );
    for ((pipeline, path), g) in &groups {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:>5} {:>5} {:>6} {:>7} {:>7}  {:>4} {:>5} {:>5} {:>5} {:>4}",
            pipeline,
            path,
            g.count,
            g.done,
            g.failed,
            g.pending,
            avg(g).map_or("-".to_owned(), |a| format!("{a:.3}")),
            g.bins[0],
            g.bins[1],
            g.bins[2],
            g.bins[3],
            g.bins[4]
        );
    }
    out!("{out}");
    Ok(EXIT_OK)
}
