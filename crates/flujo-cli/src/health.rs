//! `flujo dev health-check`: where recent runs struggle. The original aggregates its Python agents'
//! output-coercion signals from trace spans; here the same question is answered from the journal, which
//! records every step execution with its attempts, model requests, warnings and finish reason: which steps
//! and models fail, need retries, need their structured output repaired (more than one model request), or
//! are cut off at `max_tokens`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use flujo_core::{JournalRecord, RunFilter, StepStatus, Store};
use serde_json::{json, Value};

use crate::config::Config;
use crate::*;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// At most this many recent runs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only runs of this pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only runs started in the last N hours.
    #[arg(long = "since-hours")]
    pub since_hours: Option<f64>,
    /// Only executions of this step (name).
    #[arg(long)]
    pub step: Option<String>,
    /// Only executions that called this model (`provider:model`).
    #[arg(long)]
    pub model: Option<String>,
    /// Write the figures as JSON or CSV instead of tables.
    #[arg(long, value_enum)]
    pub export: Option<Export>,
    /// Where to write the export (CSV: OUTPUT_steps.csv and OUTPUT_models.csv); stdout when absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// State store URI (default: the project's).
    #[arg(long)]
    pub state: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Export {
    Json,
    Csv,
}

#[derive(Default, Clone)]
struct Agg {
    runs: std::collections::BTreeSet<String>,
    executions: u64,
    failed: u64,
    retried: u64,
    extra_attempts: u64,
    repaired: u64,
    cut_off: u64,
    warnings: u64,
    latency_ms: f64,
    tokens: u64,
    cost_usd: f64,
}

impl Agg {
    fn add(&mut self, r: &JournalRecord) {
        self.runs.insert(r.run_id.clone());
        self.executions += 1;
        self.failed += u64::from(r.status == StepStatus::Failed);
        if r.attempts > 1 {
            self.retried += 1;
            self.extra_attempts += u64::from(r.attempts - 1);
        }
        let requests = r.metadata.get("model_requests").and_then(Value::as_u64).unwrap_or(1);
        self.repaired += u64::from(requests > 1);
        let reason = r.metadata.get("finish_reason").and_then(Value::as_str).unwrap_or("");
        self.cut_off += u64::from(matches!(reason, "length" | "max_tokens"));
        self.warnings += u64::from(r.metadata.get("warnings").and_then(Value::as_array).is_some_and(|w| !w.is_empty()));
        self.latency_ms += r.latency_ms;
        self.tokens += r.tokens.total();
        self.cost_usd += r.cost_usd;
    }

    /// Executions with any trouble (a failure, a retry, a repair, a cut-off answer), for ranking.
    fn trouble(&self) -> u64 {
        self.failed + self.retried + self.repaired + self.cut_off
    }

    fn json(&self, key: &str, name: &str) -> Value {
        json!({
            key: name,
            "runs": self.runs.len(),
            "executions": self.executions,
            "failed": self.failed,
            "retried": self.retried,
            "extra_attempts": self.extra_attempts,
            "repaired_outputs": self.repaired,
            "cut_off": self.cut_off,
            "with_warnings": self.warnings,
            "trouble_rate": if self.executions == 0 { 0.0 } else { self.trouble() as f64 / self.executions as f64 },
            "avg_latency_ms": if self.executions == 0 { 0.0 } else { self.latency_ms / self.executions as f64 },
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
        })
    }
}

pub async fn health_check(args: HealthArgs, cfg: &Config) -> Result<u8, CliError> {
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    if let Some(path) = crate::lens::sqlite_file(&uri) {
        if !std::path::Path::new(&path).exists() {
            return Err(CliError::config(format!(
                "no state store at {path} (state_uri {}): nothing has run with this store yet",
                crate::lens::mask_uri(&uri)
            )));
        }
    }
    let store: Arc<dyn Store> = flujo_store::open_store(&uri)
        .map_err(|e| CliError::config(format!("state store '{}': {e}", crate::lens::mask_uri(&uri))))?;
    if let Some(h) = args.since_hours {
        if !(h.is_finite() && h > 0.0) {
            return Err(CliError::config(format!("--since-hours must be a positive number, got {h}")));
        }
    }
    let since_ms =
        args.since_hours.map(|h| crate::lens::now_ms().saturating_sub((h * 3_600_000.0).min(i64::MAX as f64) as i64));
    let filter = {
        let mut filter = RunFilter::default();
        filter.pipeline = args.pipeline.clone();
        filter.since_ms = since_ms;
        filter.limit = Some(args.limit);
        filter
    };
    let runs = store.list_runs(&filter).await.map_err(|e| CliError::new("store_error", EXIT_FAILED, e.to_string()))?;
    let mut by_step: BTreeMap<String, Agg> = BTreeMap::new();
    let mut by_model: BTreeMap<String, Agg> = BTreeMap::new();
    let mut total = Agg::default();
    for run in &runs {
        let journal = store
            .load_journal(&run.run_id)
            .await
            .map_err(|e| CliError::new("store_error", EXIT_FAILED, e.to_string()))?;
        for r in journal.iter() {
            let model = r.metadata.get("model").and_then(Value::as_str);
            if args.step.as_deref().is_some_and(|s| s != r.step)
                || args.model.as_deref().is_some_and(|m| Some(m) != model)
            {
                continue;
            }
            by_step.entry(format!("{} / {}", run.pipeline_name, r.step)).or_default().add(r);
            if let Some(m) = model {
                by_model.entry(m.to_owned()).or_default().add(r);
            }
            total.add(r);
        }
    }
    let mut steps: Vec<(&String, &Agg)> = by_step.iter().collect();
    steps.sort_by(|a, b| b.1.trouble().cmp(&a.1.trouble()).then_with(|| a.0.cmp(b.0)));
    let report = json!({
        "runs": runs.len(),
        "since_ms": since_ms,
        "total": total.json("scope", "all"),
        "steps": steps.iter().map(|(k, a)| a.json("step", k)).collect::<Vec<_>>(),
        "models": by_model.iter().map(|(k, a)| a.json("model", k)).collect::<Vec<_>>(),
    });
    match args.export {
        Some(Export::Json) => {
            let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
            write_or_print(args.output.as_ref(), &text)?;
        }
        Some(Export::Csv) => {
            let steps_csv = csv(&report["steps"], "step");
            let models_csv = csv(&report["models"], "model");
            match &args.output {
                Some(base) => {
                    for (suffix, text) in [("_steps.csv", &steps_csv), ("_models.csv", &models_csv)] {
                        let mut name = base.as_os_str().to_owned();
                        name.push(suffix);
                        write_or_print(Some(&PathBuf::from(name)), text)?;
                    }
                }
                None => out!("{steps_csv}"),
            }
        }
        None => print_tables(&report, runs.len()),
    }
    Ok(EXIT_OK)
}

fn write_or_print(file: Option<&PathBuf>, text: &str) -> Result<(), CliError> {
    match file {
        Some(f) => {
            std::fs::write(f, text).map_err(|e| CliError::config(format!("cannot write {}: {e}", f.display())))?;
            errln!("wrote {}", f.display());
        }
        None => out!("{text}"),
    }
    Ok(())
}

const COLUMNS: &[&str] = &[
    "runs",
    "executions",
    "failed",
    "retried",
    "extra_attempts",
    "repaired_outputs",
    "cut_off",
    "with_warnings",
    "trouble_rate",
    "avg_latency_ms",
    "tokens",
    "cost_usd",
];

fn csv(rows: &Value, key: &str) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = format!("{key},{}\n", COLUMNS.join(","));
    for row in rows.as_array().into_iter().flatten() {
        let mut cells = vec![quote(row[key].as_str().unwrap_or(""))];
        cells.extend(COLUMNS.iter().map(|c| row[*c].to_string()));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn print_tables(report: &Value, runs: usize) {
    let total = &report["total"];
    outln!(
        "{runs} run(s), {} step execution(s): {} failed, {} retried, {} structured output(s) repaired, {} cut off at max_tokens",
        total["executions"],
        total["failed"],
        total["retried"],
        total["repaired_outputs"],
        total["cut_off"]
    );
    let row = |r: &Value, key: &str| -> String {
        format!(
            "  {:<40} {:>6} {:>6} {:>7} {:>8} {:>7} {:>6.0}%",
            r[key].as_str().unwrap_or(""),
            r["executions"],
            r["failed"],
            r["retried"],
            r["repaired_outputs"],
            r["cut_off"],
            r["trouble_rate"].as_f64().unwrap_or(0.0) * 100.0
        )
    };
    let header = |title: &str| {
        format!(
            "  {title:<40} {:>6} {:>6} {:>7} {:>8} {:>7} {:>7}",
            "EXECS", "FAILED", "RETRIED", "REPAIRED", "CUT OFF", "TROUBLE"
        )
    };
    let steps: Vec<&Value> = report["steps"].as_array().into_iter().flatten().take(15).collect();
    outln!("\nhotspots (pipeline / step, most trouble first):");
    outln!("{}", header("STEP"));
    for s in steps {
        outln!("{}", row(s, "step"));
    }
    if let Some(models) = report["models"].as_array().filter(|m| !m.is_empty()) {
        outln!("\nmodels:");
        outln!("{}", header("MODEL"));
        for m in models {
            outln!("{}", row(m, "model"));
        }
    }
}
