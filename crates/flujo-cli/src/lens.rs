//! `flujo lens`: inspect the runs in a state store (SPEC §13): `list`, `show`, `trace`, `spans`, `replay`,
//! `verify`, `stats` and `prune`, all over [`flujo_engine::TaskClient`].
//!
//! Every subcommand takes `--state URI` (default: the configured `state_uri`) and `--json`, which prints
//! exactly one JSON object or array on stdout (logs and errors go to stderr; a failure prints the error
//! object of `CliError::to_json`). Run-id arguments accept a unique prefix; an ambiguous prefix is a usage
//! error (exit 2) listing the candidates, and so is an unknown one (`run_not_found`). Table cells are cut to
//! 200 characters with control characters escaped, so no stored value can break a table. Spans are derived from the journal: one per finished step execution, nested by
//! path. Every value lens prints goes through [`flujo_core::redact()`], so secret-named keys never show.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use flujo_core::{
    redact, redact_at, FlujoError, JournalRecord, PatchOp, RunFilter, RunRecord, RunStatus, StepStatus, Store, Value,
};
use flujo_engine::{ClientError, RunView, TaskClient};
use flujo_skills::BuiltinRegistry;
use serde_json::{json, Map};

use crate::config::Config;
use crate::{CliError, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_RESOLUTION};

mod usage;

/// Options every lens subcommand takes.
#[derive(Args, Debug, Clone, Default)]
pub struct LensOpts {
    /// Print exactly one JSON value on stdout.
    #[arg(long)]
    pub json: bool,
    /// State store URI (default: `state_uri` from flujo.toml or FLUJO_STATE_URI).
    #[arg(long)]
    pub state: Option<String>,
}

/// A run named by its id or a unique prefix of it.
#[derive(Args, Debug, Clone)]
pub struct RunArg {
    /// Run id, or a unique prefix of one.
    pub run_id: String,
    #[command(flatten)]
    pub opts: LensOpts,
}

/// What `lens show` / `lens get` print besides the summary (the original's flags).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ShowOpts {
    /// Also print each record's output and context patch.
    #[arg(short, long)]
    pub verbose: bool,
    /// Each step's output (as `--verbose`).
    #[arg(long = "show-output")]
    pub show_output: bool,
    /// The run's input (always shown) and each step's output (as `--verbose`).
    #[arg(long = "show-input")]
    pub show_input: bool,
    /// Each failed step's error (always in the step table's feedback; with the records as `--verbose`).
    #[arg(long = "show-error")]
    pub show_error: bool,
    /// Print only the run's final output (JSON).
    #[arg(long = "final-output")]
    pub final_output: bool,
}

impl ShowOpts {
    fn records(&self) -> bool {
        self.verbose || self.show_output || self.show_input || self.show_error
    }
}

#[derive(Subcommand, Debug)]
pub enum LensCommand {
    /// List runs, newest first.
    List {
        /// Only runs with this status (running, paused, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only runs created since then: a duration back from now (30m, 2h, 7d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        opts: LensOpts,
    },
    /// Shadow evaluations (`[shadow_eval]`): each one, and per pipeline and step the average score and the
    /// distribution of scores.
    Evals {
        /// Only evaluations of this run.
        #[arg(long)]
        run: Option<String>,
        /// Only evaluations of runs of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only those scheduled since then: a duration back from now (30m, 2h, 7d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        opts: LensOpts,
    },
    /// A run's summary, pending pauses and step table.
    Show {
        /// Run id, or a unique prefix of one.
        run_id: String,
        #[command(flatten)]
        show: ShowOpts,
        #[command(flatten)]
        opts: LensOpts,
    },
    /// `show` for the one run among the latest 100 whose id contains PARTIAL (the original's `lens get`).
    Get {
        /// A part of a run id.
        partial: String,
        #[command(flatten)]
        show: ShowOpts,
        #[command(flatten)]
        opts: LensOpts,
    },
    /// The spans of a run as a tree, with start offsets and durations.
    Trace(RunArg),
    /// The spans of a run as a flat list.
    Spans {
        /// Run id, or a unique prefix of one.
        run_id: String,
        /// Only spans with this status (completed, failed).
        #[arg(long)]
        status: Option<String>,
        /// Only spans whose step name contains this text.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        opts: LensOpts,
    },
    /// Re-walk a run over its journal (no agent is called) and check that it reproduces; exit 1 if not.
    Replay(RunArg),
    /// Recompute a run's hash chain; exit 1 naming the first broken record.
    Verify(RunArg),
    /// Run counts and durations by status and by pipeline.
    Stats {
        /// Only runs created since then (30m, 2h, 7d or an RFC 3339 time).
        #[arg(long, conflicts_with = "hours")]
        since: Option<String>,
        /// Only runs created in the last H hours (the original's option).
        #[arg(long)]
        hours: Option<f64>,
        /// Only runs of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        #[command(flatten)]
        opts: LensOpts,
    },
    /// Render a run saved to a file (`flujo run --json > run.json`, or `flujo lens show RUN --json`) as a step
    /// tree, without a state store (the original's `lens from-file`).
    FromFile {
        /// The JSON file.
        path: std::path::PathBuf,
        /// Characters of each input and output shown (0: none).
        #[arg(long = "prompt-preview-len", default_value_t = 200)]
        preview: usize,
        #[command(flatten)]
        opts: LensOpts,
    },
    /// Delete finished runs (and their journals) older than a duration.
    Prune {
        /// Age of the runs to delete: 30d, 12h, 90m, …
        #[arg(long = "older-than", allow_hyphen_values = true)]
        older_than: Option<String>,
        /// Only runs with this status; `running` and `paused` runs are deleted only when named here.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        opts: LensOpts,
    },
}

impl LensCommand {
    /// The options every subcommand takes.
    pub fn opts(&self) -> &LensOpts {
        match self {
            LensCommand::List { opts, .. }
            | LensCommand::Evals { opts, .. }
            | LensCommand::Show { opts, .. }
            | LensCommand::Get { opts, .. }
            | LensCommand::Spans { opts, .. }
            | LensCommand::Stats { opts, .. }
            | LensCommand::FromFile { opts, .. }
            | LensCommand::Prune { opts, .. } => opts,
            LensCommand::Trace(a) | LensCommand::Replay(a) | LensCommand::Verify(a) => &a.opts,
        }
    }

    /// The run id (or prefix) the subcommand names, if any.
    fn run_arg(&self) -> Option<&str> {
        match self {
            LensCommand::Show { run_id, .. } | LensCommand::Spans { run_id, .. } => Some(run_id),
            LensCommand::Get { partial, .. } => Some(partial),
            LensCommand::Trace(a) | LensCommand::Replay(a) | LensCommand::Verify(a) => Some(&a.run_id),
            _ => None,
        }
    }
}

pub async fn dispatch(cmd: LensCommand, cfg: &Config) -> Result<u8, CliError> {
    if let Some(id) = cmd.run_arg() {
        crate::commands::check_run_id_arg(id)?;
        let uri = cmd.opts().state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
        if let Some(path) = sqlite_file(&uri) {
            if !std::path::Path::new(&path).exists() {
                let place = format!("{} (there is no state store file {path} yet)", mask_uri(&uri));
                return Err(crate::commands::run_not_found(id, &place));
            }
        }
    }
    dispatch_inner(cmd, cfg).await
}

async fn dispatch_inner(cmd: LensCommand, cfg: &Config) -> Result<u8, CliError> {
    match cmd {
        LensCommand::List { status, pipeline, since, limit, opts } => {
            let lens = Lens::open(&opts, cfg)?;
            let filter = {
                let mut filter = RunFilter::default();
                filter.status = status.as_deref().map(parse_status).transpose()?;
                filter.pipeline = pipeline;
                filter.since_ms = since.as_deref().map(|s| parse_since(s, now_ms())).transpose()?;
                filter.limit = Some(limit);
                filter
            };
            lens.list(&filter).await
        }
        LensCommand::Show { run_id, show, opts } => Lens::open(&opts, cfg)?.show(&run_id, show).await,
        LensCommand::Evals { run, pipeline, since, limit, opts } => {
            let lens = Lens::open(&opts, cfg)?;
            let mut filter = flujo_core::EvaluationFilter::new().limit(limit);
            if let Some(r) = run {
                filter = filter.run(r);
            }
            if let Some(p) = pipeline {
                filter = filter.pipeline(p);
            }
            if let Some(s) = since.as_deref() {
                filter = filter.since_ms(parse_since(s, now_ms())?);
            }
            crate::evals::evals(lens.client.store(), &filter, lens.json).await
        }
        LensCommand::Get { partial, show, opts } => {
            let lens = Lens::open(&opts, cfg)?;
            let id = lens.get(&partial).await?;
            lens.show(&id, show).await
        }
        LensCommand::Trace(a) => Lens::open(&a.opts, cfg)?.trace(&a.run_id).await,
        LensCommand::Spans { run_id, status, name, opts } => {
            let status = status.as_deref().map(parse_step_status).transpose()?;
            Lens::open(&opts, cfg)?.spans(&run_id, status, name.as_deref()).await
        }
        LensCommand::Replay(a) => Lens::open(&a.opts, cfg)?.replay(&a.run_id).await,
        LensCommand::Verify(a) => Lens::open(&a.opts, cfg)?.verify(&a.run_id).await,
        LensCommand::Stats { since, hours, pipeline, opts } => {
            let mut since_ms = since.as_deref().map(|s| parse_since(s, now_ms())).transpose()?;
            if let Some(h) = hours {
                if !(h.is_finite() && h > 0.0) {
                    return Err(CliError::config(format!("--hours must be a positive number, got {h}")));
                }
                since_ms = Some(now_ms().saturating_sub((h * 3_600_000.0).min(i64::MAX as f64) as i64));
            }
            Lens::open(&opts, cfg)?.stats(since_ms, pipeline).await
        }
        LensCommand::FromFile { path, preview, opts } => from_file(&path, preview, opts.json),
        LensCommand::Prune { older_than, status, opts } => {
            let Some(older_than) = older_than else {
                return Err(CliError::config("prune needs --older-than DURATION (for example 30d, 12h or 90m)"));
            };
            let age = parse_duration(&older_than).ok_or_else(|| {
                CliError::config(format!("--older-than '{older_than}' is not a duration (for example 30d, 12h or 90m)"))
            })?;
            let status = status.as_deref().map(parse_status).transpose()?;
            Lens::open(&opts, cfg)?.prune(&older_than, now_ms().saturating_sub(age), status).await
        }
    }
}

/// An open store and how to print.
struct Lens {
    client: TaskClient,
    uri: String,
    /// The URI was given with `--state` (so resume commands must name it).
    explicit_state: bool,
    json: bool,
}

impl Lens {
    fn open(opts: &LensOpts, cfg: &Config) -> Result<Self, CliError> {
        let uri = opts.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
        if let Some(path) = sqlite_file(&uri) {
            if std::path::Path::new(&path).exists() {
                crate::commands::check_regular_file(std::path::Path::new(&path), "state store", "")
                    .map_err(CliError::config)?;
            } else {
                return Err(CliError::config(format!(
                    "no state store at {path} (state_uri {}): nothing has run with this store yet",
                    mask_uri(&uri)
                )));
            }
        }
        let store: Arc<dyn Store> = flujo_store::open_store(&uri)
            .map_err(|e| CliError::config(format!("state store '{}': {e}", mask_uri(&uri))))?;
        let client = TaskClient::new(store, Arc::new(BuiltinRegistry::new())).strict_templates(cfg.strict_templates.0);
        Ok(Lens { client, uri, explicit_state: opts.state.is_some(), json: opts.json })
    }

    fn error(&self, e: ClientError) -> CliError {
        match e {
            ClientError::RunNotFound(id)
            | ClientError::Run(FlujoError::RunNotFound(id))
            | ClientError::Store(flujo_core::StoreError::RunNotFound(id)) => {
                crate::commands::run_not_found(&id, &mask_uri(&self.uri))
            }
            e @ ClientError::AmbiguousPrefix { .. } => CliError::new("ambiguous_run_id", EXIT_CONFIG, e.to_string()),
            ClientError::Run(e @ FlujoError::Config(_)) => CliError::config(e.to_string()),
            ClientError::Run(e @ FlujoError::Resolution { .. }) => {
                CliError::new("resolution_error", EXIT_RESOLUTION, e.to_string())
            }
            other => CliError::new(other.kind(), EXIT_FAILED, other.to_string()),
        }
    }

    async fn resolve(&self, prefix: &str) -> Result<String, CliError> {
        self.client.resolve_prefix(prefix).await.map_err(|e| self.error(e))
    }

    async fn run_and_journal(&self, prefix: &str) -> Result<(RunRecord, Vec<JournalRecord>), CliError> {
        let id = self.resolve(prefix).await?;
        let run = self.client.record(&id).await.map_err(|e| self.error(e))?;
        let journal = self.client.journal(&id).await.map_err(|e| self.error(e))?;
        Ok((run, journal))
    }

    async fn list(&self, filter: &RunFilter) -> Result<u8, CliError> {
        let runs = self.client.list_runs(filter).await.map_err(|e| self.error(e))?;
        if self.json {
            print_json(&Value::Array(runs.iter().map(list_entry).collect()));
            return Ok(EXIT_OK);
        }
        if runs.is_empty() {
            outln!("no runs");
            return Ok(EXIT_OK);
        }
        let mut t = Table::new(&["RUN ID", "PIPELINE", "STATUS", "CREATED", "STEPS", "TOKENS", "COST"], &[4, 5, 6]);
        for r in &runs {
            t.row(vec![
                r.run_id.clone(),
                r.pipeline_name.clone(),
                r.status.as_str().to_owned(),
                format_ts_short(r.created_at_ms),
                r.journal_len.to_string(),
                r.total_tokens.to_string(),
                format_cost(r.total_cost_usd),
            ]);
        }
        out!("{}", t.render());
        Ok(EXIT_OK)
    }

    /// The one run among the latest 100 whose id contains `partial`.
    async fn get(&self, partial: &str) -> Result<String, CliError> {
        let filter = {
            let mut filter = RunFilter::default();
            filter.limit = Some(100);
            filter
        };
        let runs = self.client.list_runs(&filter).await.map_err(|e| self.error(e))?;
        let found: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).filter(|id| id.contains(partial)).collect();
        match found.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(CliError::usage(
                "run_not_found",
                format!("no run among the latest 100 has an id containing '{partial}'"),
            )),
            many => Err(CliError::usage(
                "ambiguous_run_id",
                format!(
                    "{} runs have an id containing '{partial}': {}; give more of the id",
                    many.len(),
                    many.iter().take(10).copied().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    async fn show(&self, prefix: &str, show: ShowOpts) -> Result<u8, CliError> {
        let verbose = show.records();
        let id = self.resolve(prefix).await?;
        let view = self.client.get_run(&id).await.map_err(|e| self.error(e))?;
        let view = view.ok_or_else(|| self.error(ClientError::RunNotFound(id.clone())))?;
        let journal = self.client.journal(&id).await.map_err(|e| self.error(e))?;
        if show.final_output {
            let output = view.output.as_ref().map(|o| redact_run_output(o, &journal));
            outln!("{}", serde_json::to_string(&output).unwrap_or_else(|_| "null".into()));
            return Ok(EXIT_OK);
        }
        let pending: Vec<Value> = view
            .pending
            .iter()
            .map(|p| {
                json!({
                    "pause_id": p.pause_id,
                    "step": p.step,
                    "message": p.message,
                    "input_schema": p.input_schema.as_ref().map(redact),
                    "resume_command": self.resume_command(&view.run_id, &p.pause_id, p.input_schema.as_ref()),
                })
            })
            .collect();
        let steps: Vec<Value> = journal.iter().map(|r| step_entry(r, verbose)).collect();
        let output = view.output.as_ref().map(|o| redact_run_output(o, &journal));
        if self.json {
            print_json(&json!({
                "run_id": view.run_id,
                "pipeline": view.pipeline_name,
                "pipeline_version": view.pipeline_version,
                "pipeline_hash": view.pipeline_hash,
                "status": view.status.as_str(),
                "created_at": format_ts(view.created_at_ms),
                "created_at_ms": view.created_at_ms,
                "updated_at": format_ts(view.updated_at_ms),
                "updated_at_ms": view.updated_at_ms,
                "duration_ms": view.updated_at_ms.saturating_sub(view.created_at_ms),
                "generation": view.generation,
                "input": redact(&view.input),
                "output": output,
                "error": view.error,
                "pending": pending,
                "total_tokens": view.total_tokens,
                "total_cost_usd": view.total_cost_usd,
                "journal_len": view.journal_len,
                "queue": view.queue,
                "owner": view.owner.as_ref().map(|o| json!({"id": o.id, "host": o.host, "pid": o.pid})),
                "lease_expires_at": view.lease_expires_at_ms.map(format_ts),
                "steps": steps,
            }));
            return Ok(EXIT_OK);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {} (pipeline {} {}): {}",
            cell(&view.run_id),
            cell(&view.pipeline_name),
            cell(&view.pipeline_version),
            view.status.as_str()
        );
        let _ = writeln!(
            out,
            "  created {}   updated {}   ({} ms)",
            format_ts(view.created_at_ms),
            format_ts(view.updated_at_ms),
            view.updated_at_ms.saturating_sub(view.created_at_ms)
        );
        let _ = writeln!(
            out,
            "  {} journal records   generation {}   tokens {}   cost {}",
            view.journal_len,
            view.generation,
            view.total_tokens,
            format_cost(view.total_cost_usd)
        );
        if let Some(q) = &view.queue {
            let _ = writeln!(out, "  queue {}", cell(q));
        }
        if let Some(o) = &view.owner {
            let _ = writeln!(
                out,
                "  walked by pid {} on {} (owner {}){}",
                o.pid,
                cell(&o.host),
                cell(&o.id),
                view.lease_expires_at_ms.map(|l| format!("   lease until {}", format_ts(l))).unwrap_or_default()
            );
        }
        let _ = writeln!(out, "input:  {}", compact(&redact(&view.input)));
        if let Some(o) = &output {
            let _ = writeln!(out, "output: {}", compact(o));
        }
        if let Some(e) = &view.error {
            let _ = writeln!(out, "error [{}]: {}", e.kind, e.message);
        }
        if !view.pending.is_empty() {
            let _ = writeln!(out, "pending:");
            for p in &pending {
                let _ = writeln!(out, "  {} ({}): {}", text(&p["pause_id"]), text(&p["step"]), text(&p["message"]));
                if !p["input_schema"].is_null() {
                    let _ = writeln!(out, "    answer must match: {}", compact(&p["input_schema"]));
                }
                let _ = writeln!(out, "    answer with: {}", text(&p["resume_command"]));
            }
        }
        if journal.is_empty() {
            let _ = writeln!(out, "steps: none finished yet");
        } else {
            let _ = writeln!(out, "steps:");
            let mut t = Table::new(
                &["SEQ", "PATH", "STEP", "KIND", "STATUS", "ATTEMPTS", "LATENCY MS", "TOKENS P/C", "COST"],
                &[0, 5, 6, 7, 8],
            );
            for r in &journal {
                t.row(vec![
                    r.seq.to_string(),
                    r.path.clone(),
                    r.step.clone(),
                    r.kind.clone(),
                    step_status(r.status).to_owned(),
                    r.attempts.to_string(),
                    format!("{:.1}", r.latency_ms),
                    format!("{}/{}", r.tokens.prompt, r.tokens.completion),
                    format_cost(r.cost_usd),
                ]);
            }
            out.push_str(&t.render());
            let calls: Vec<&JournalRecord> = journal.iter().filter(|r| usage::is_model_call(r)).collect();
            if !calls.is_empty() {
                let _ = writeln!(out, "model calls:");
                for r in calls {
                    let line = usage::model_call_line(r, cell, format_cost);
                    let _ = writeln!(out, "  [{}] {} ({}): {line}", r.seq, cell(&r.path), cell(&r.step));
                }
            }
            let governed: Vec<(u64, String, String)> =
                journal.iter().filter_map(|r| governance_summary(r).map(|g| (r.seq, r.path.clone(), g))).collect();
            if !governed.is_empty() {
                let _ = writeln!(out, "governance:");
                for (seq, path, g) in governed {
                    let _ = writeln!(out, "  [{seq}] {}: {}", cell(&path), cell(&g));
                }
            }
            let indexed: Vec<(u64, String, String)> =
                journal.iter().filter_map(|r| memory_summary(r).map(|m| (r.seq, r.path.clone(), m))).collect();
            if !indexed.is_empty() {
                let _ = writeln!(out, "memory:");
                for (seq, path, m) in indexed {
                    let _ = writeln!(out, "  [{seq}] {}: {}", cell(&path), cell(&m));
                }
            }
            if verbose {
                for (r, s) in journal.iter().zip(&steps) {
                    let _ = writeln!(out, "[{}] {} ({}):", r.seq, cell(&r.path), cell(&r.step));
                    let _ = writeln!(out, "    output: {}", compact(&s["output"]));
                    if let Some(f) = &r.feedback {
                        let _ = writeln!(out, "    feedback: {f}");
                    }
                    let _ = writeln!(out, "    patch:  {}", compact(&s["patch"]));
                }
            }
        }
        out!("{out}");
        Ok(EXIT_OK)
    }

    /// The `flujo resume` command that answers a pause.
    fn resume_command(&self, run_id: &str, pause_id: &str, schema: Option<&Value>) -> String {
        let state = self.explicit_state.then(|| mask_uri(&self.uri));
        crate::commands::resume_command(run_id, pause_id, schema, state.as_deref())
    }

    async fn trace(&self, prefix: &str) -> Result<u8, CliError> {
        let (run, journal) = self.run_and_journal(prefix).await?;
        let spans = Spans::new(&run, &journal);
        if self.json {
            print_json(&json!({
                "run_id": run.run_id,
                "pipeline": run.pipeline_name,
                "status": run.status.as_str(),
                "started_at_ms": spans.base_ms,
                "started_at": format_ts(spans.base_ms),
                "spans": spans.roots.iter().map(|&i| spans.tree_json(i)).collect::<Vec<_>>(),
            }));
            return Ok(EXIT_OK);
        }
        let mut out = format!(
            "trace of run {} (pipeline {}, {}), {} spans, from {}\n",
            cell(&run.run_id),
            cell(&run.pipeline_name),
            run.status.as_str(),
            journal.len(),
            format_ts(spans.base_ms)
        );
        let _ = writeln!(out, "{:>10} {:>11}  SPAN", "START", "DURATION");
        for &i in &spans.roots {
            spans.tree_text(i, 0, &mut out);
        }
        out!("{out}");
        Ok(EXIT_OK)
    }

    async fn spans(&self, prefix: &str, status: Option<StepStatus>, name: Option<&str>) -> Result<u8, CliError> {
        let (run, journal) = self.run_and_journal(prefix).await?;
        let spans = Spans::new(&run, &journal);
        let keep = |r: &JournalRecord| status.is_none_or(|s| r.status == s) && name.is_none_or(|n| r.step.contains(n));
        if self.json {
            print_json(&Value::Array(
                (0..journal.len()).filter(|i| keep(&journal[*i])).map(|i| spans.flat_json(i)).collect(),
            ));
            return Ok(EXIT_OK);
        }
        let mut t = Table::new(
            &["RUN ID", "PATH", "NAME", "KIND", "STATUS", "START MS", "DURATION MS", "ATTEMPTS", "TOKENS", "COST"],
            &[5, 6, 7, 8, 9],
        );
        for r in journal.iter().filter(|r| keep(r)) {
            t.row(vec![
                r.run_id.clone(),
                r.path.clone(),
                r.step.clone(),
                r.kind.clone(),
                step_status(r.status).to_owned(),
                r.started_at_ms.saturating_sub(spans.base_ms).to_string(),
                format!("{:.1}", r.latency_ms),
                r.attempts.to_string(),
                r.tokens.total().to_string(),
                format_cost(r.cost_usd),
            ]);
        }
        out!("{}", t.render());
        Ok(EXIT_OK)
    }

    async fn replay(&self, prefix: &str) -> Result<u8, CliError> {
        let id = self.resolve(prefix).await?;
        let report = self.client.replay(&id).await.map_err(|e| self.error(e))?;
        let journal = self.client.journal(&id).await.map_err(|e| self.error(e))?;
        let recomputed = report.result.as_ref();
        if self.json {
            print_json(&json!({
                "run_id": report.run_id,
                "matches": report.matches,
                "recorded_status": report.recorded_status.as_str(),
                "recomputed_status": recomputed.map(|r| r.status.as_str()),
                "output": recomputed.and_then(|r| r.output.as_ref()).map(|o| redact_run_output(o, &journal)),
                "mismatch": report.mismatch,
            }));
        } else if let Some(r) = recomputed {
            outln!(
                "replay of run {}: matches (status {}, output {}); no agent was called",
                report.run_id,
                r.status.as_str(),
                r.output.as_ref().map_or_else(|| "none".to_owned(), |o| compact(&redact_run_output(o, &journal)))
            );
        } else {
            outln!(
                "replay of run {}: MISMATCH: {}",
                report.run_id,
                report.mismatch.as_deref().unwrap_or("the journal does not reproduce the run")
            );
        }
        Ok(if report.matches { EXIT_OK } else { EXIT_FAILED })
    }

    async fn verify(&self, prefix: &str) -> Result<u8, CliError> {
        let id = self.resolve(prefix).await?;
        let report = self.client.verify(&id).await.map_err(|e| self.error(e))?;
        if self.json {
            print_json(&json!({
                "run_id": report.run_id,
                "ok": report.is_ok(),
                "records": report.records,
                "last_hash": report.last_hash,
                "broken": report.broken.as_ref().map(|b| json!({"seq": b.seq, "path": b.path, "reason": b.reason})),
            }));
        } else {
            match &report.broken {
                None => outln!(
                    "journal of run {} verified: {} records, last hash {}",
                    report.run_id,
                    report.records,
                    report.last_hash.as_deref().unwrap_or("(none)")
                ),
                Some(b) => outln!(
                    "journal of run {} is BROKEN at seq {} (path {}): {}",
                    report.run_id,
                    b.seq,
                    b.path,
                    b.reason
                ),
            }
        }
        Ok(if report.is_ok() { EXIT_OK } else { EXIT_FAILED })
    }

    async fn stats(&self, since_ms: Option<i64>, pipeline: Option<String>) -> Result<u8, CliError> {
        let filter = {
            let mut filter = RunFilter::default();
            filter.since_ms = since_ms;
            filter.pipeline = pipeline;
            filter
        };
        let runs = self.client.store().list_runs(&filter).await.map_err(|e| self.error(e.into()))?;
        let mut by_status: BTreeMap<&str, Agg> = BTreeMap::new();
        let mut by_pipeline: BTreeMap<&str, Agg> = BTreeMap::new();
        let mut total = Agg::default();
        for r in &runs {
            let d = r.updated_at_ms.saturating_sub(r.created_at_ms);
            // A run still marked running has not recorded its totals: they come from its journal.
            let (tokens, cost) = if r.status == RunStatus::Running {
                let journal = self.client.store().load_journal(&r.run_id).await.map_err(|e| self.error(e.into()))?;
                let (t, c) = flujo_engine::journal_usage(&journal);
                (t.max(r.total_tokens), c.max(r.total_cost_usd))
            } else {
                (r.total_tokens, r.total_cost_usd)
            };
            for agg in [
                by_status.entry(r.status.as_str()).or_default(),
                by_pipeline.entry(r.pipeline_name.as_str()).or_default(),
                &mut total,
            ] {
                agg.add(d, tokens, cost);
            }
        }
        if self.json {
            let obj = |m: &BTreeMap<&str, Agg>| -> Value {
                Value::Object(m.iter().map(|(k, a)| ((*k).to_owned(), a.json())).collect::<Map<_, _>>())
            };
            print_json(&json!({
                "since_ms": since_ms,
                "runs": total.count,
                "total": total.json(),
                "by_status": obj(&by_status),
                "by_pipeline": obj(&by_pipeline),
            }));
            return Ok(EXIT_OK);
        }
        let plural = if total.count == 1 { "" } else { "s" };
        let mut out = match since_ms {
            Some(s) => format!("{} run{plural} since {}\n", total.count, format_ts(s)),
            None => format!("{} run{plural}\n", total.count),
        };
        for (title, m) in [("STATUS", &by_status), ("PIPELINE", &by_pipeline)] {
            let mut t = Table::new(
                &[title, "RUNS", "TOTAL DURATION MS", "AVG DURATION MS", "TOKENS", "COST"],
                &[1, 2, 3, 4, 5],
            );
            for (k, a) in m {
                t.row(vec![
                    (*k).to_owned(),
                    a.count.to_string(),
                    a.total_ms.to_string(),
                    format!("{:.1}", a.avg_ms()),
                    a.tokens.to_string(),
                    format_cost(a.cost),
                ]);
            }
            out.push('\n');
            out.push_str(&t.render());
        }
        out!("{out}");
        Ok(EXIT_OK)
    }

    async fn prune(&self, older_than: &str, cutoff_ms: i64, status: Option<RunStatus>) -> Result<u8, CliError> {
        let deleted = self.client.prune(cutoff_ms, status).await.map_err(|e| self.error(e))?;
        if self.json {
            print_json(&json!({
                "deleted": deleted,
                "older_than": older_than,
                "cutoff_ms": cutoff_ms,
                "cutoff": format_ts(cutoff_ms),
                "status": status.map(RunStatus::as_str),
            }));
        } else {
            let which = status.map_or_else(|| "finished".to_owned(), |s| s.as_str().to_owned());
            outln!(
                "pruned {deleted} {which} run{} created before {} (older than {older_than})",
                if deleted == 1 { "" } else { "s" },
                format_ts(cutoff_ms)
            );
        }
        Ok(EXIT_OK)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Entries.

fn list_entry(r: &RunView) -> Value {
    json!({
        "run_id": r.run_id,
        "pipeline": r.pipeline_name,
        "pipeline_version": r.pipeline_version,
        "status": r.status.as_str(),
        "created_at": format_ts(r.created_at_ms),
        "created_at_ms": r.created_at_ms,
        "updated_at_ms": r.updated_at_ms,
        "steps": r.journal_len,
        "pending": r.pending.len(),
        "queue": r.queue,
        "owner": r.owner.as_ref().map(|o| json!({"id": o.id, "host": o.host, "pid": o.pid})),
        "lease_expires_at_ms": r.lease_expires_at_ms,
        "total_tokens": r.total_tokens,
        "total_cost_usd": r.total_cost_usd,
    })
}

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Completed => "completed",
        StepStatus::Failed => "failed",
    }
}

/// A journal record's context patch, redacted by path.
fn redacted_patch(patch: &[PatchOp]) -> Value {
    Value::Array(
        patch
            .iter()
            .map(|op| {
                let (name, path, value) = match op {
                    PatchOp::Set { path, value } => ("set", path, value),
                    PatchOp::Append { path, value } => ("append", path, value),
                };
                json!({"op": name, "path": path, "value": redact_at(path, value)})
            })
            .collect(),
    )
}

/// A run's output is the output of its last top-level step, so it is redacted as that step's output is.
fn redact_run_output(output: &Value, journal: &[JournalRecord]) -> Value {
    match journal.iter().rev().find(|r| !r.path.contains('/')) {
        Some(last) if *last.output == *output => redact_at(&["steps", last.step.as_str()], output),
        _ => redact(output),
    }
}

fn step_entry(r: &JournalRecord, verbose: bool) -> Value {
    let mut v = json!({
        "seq": r.seq,
        "path": r.path,
        "step": r.step,
        "kind": r.kind,
        "status": step_status(r.status),
        "attempts": r.attempts,
        "latency_ms": r.latency_ms,
        "tokens": usage::tokens_json(&r.tokens),
        "cost_usd": r.cost_usd,
        "feedback": r.feedback,
        "generation": r.generation,
    });
    if let Value::Object(m) = &mut v {
        // A model call's facts (`model`, `response_model`, `finish_reason`, `request_id`), when recorded.
        m.extend(usage::model_call_fields(r));
    }
    if verbose {
        if let Value::Object(m) = &mut v {
            m.insert("output".into(), redact_at(&["steps", r.step.as_str()], &r.output));
            m.insert("patch".into(), redacted_patch(&r.patch));
            m.insert("metadata".into(), redact(&Value::Object(r.metadata.clone())));
        }
    }
    v
}

/// A record's usage under the OpenTelemetry GenAI attribute names (as the live `flujo.step` and
/// `gen_ai.chat` tracing spans carry them): the model from the record's `model` metadata
/// (`provider:model`), tokens, and Flujo's cost.
fn gen_ai_attributes(r: &JournalRecord) -> Value {
    let mut a = Map::new();
    if let Some(model) = r.metadata.get("model").and_then(Value::as_str) {
        let (provider, name) = model.split_once(':').unwrap_or(("", model));
        if !provider.is_empty() {
            a.insert("gen_ai.provider.name".into(), json!(provider));
        }
        a.insert("gen_ai.request.model".into(), json!(name));
        if r.kind == "model_turn" {
            a.insert("gen_ai.operation.name".into(), json!("chat"));
        }
    }
    if a.contains_key("gen_ai.request.model") || r.tokens.total() > 0 {
        a.insert("gen_ai.usage.input_tokens".into(), json!(r.tokens.prompt));
        a.insert("gen_ai.usage.output_tokens".into(), json!(r.tokens.completion));
    }
    if r.cost_usd > 0.0 {
        a.insert("flujo.cost_usd".into(), json!(r.cost_usd));
    }
    if let Some(g) = governance_summary(r) {
        a.insert("flujo.governance".into(), json!(g));
    }
    Value::Object(a)
}

/// The governance decisions journaled with a record (`metadata.governance`), as one line:
/// `pii_scrub modify (scrubbed: email x1), deny allow`.
fn governance_summary(r: &JournalRecord) -> Option<String> {
    let decisions = r.metadata.get("governance")?.as_array()?;
    let parts: Vec<String> = decisions
        .iter()
        .map(|d| {
            let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
            let detail = [text("reason"), text("note")].into_iter().find(|t| !t.is_empty());
            match detail {
                Some(t) => format!("{} {} ({t})", text("policy"), text("decision")),
                None => format!("{} {}", text("policy"), text("decision")),
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What memory indexing did with a record's output (`metadata.memory`), as one line.
fn memory_summary(r: &JournalRecord) -> Option<String> {
    let m = r.metadata.get("memory")?;
    if let Some(e) = m.get("error").and_then(Value::as_str) {
        return Some(format!("not indexed: {e}"));
    }
    let n = m.get("indexed")?.as_u64()?;
    Some(format!("indexed {n} chunk{}", if n == 1 { "" } else { "s" }))
}

/// The journal's records as spans: each nested under the record of its nearest ancestor path.
struct Spans<'a> {
    run_id: &'a str,
    records: &'a [JournalRecord],
    /// Offsets are measured from here: the run's creation (or its first record, if earlier).
    base_ms: i64,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
}

/// `a/b/c` → `a/b`, `a` → `None`.
fn parent_path(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

impl<'a> Spans<'a> {
    fn new(run: &'a RunRecord, records: &'a [JournalRecord]) -> Self {
        let base_ms =
            records.iter().map(|r| r.started_at_ms).min().map_or(run.created_at_ms, |m| m.min(run.created_at_ms));
        let mut by_path: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            by_path.entry(r.path.as_str()).or_default().push(i);
        }
        // A composite's record is committed after its children's, so the execution that encloses a record is
        // the first record of an ancestor path that comes after it.
        let parent: Vec<Option<usize>> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut p = parent_path(&r.path);
                while let Some(path) = p {
                    if let Some(&j) = by_path.get(path).and_then(|v| v.iter().find(|&&j| j > i)) {
                        return Some(j);
                    }
                    p = parent_path(path);
                }
                None
            })
            .collect();
        let mut children = vec![Vec::new(); records.len()];
        let mut roots = Vec::new();
        for (i, p) in parent.iter().enumerate() {
            match p {
                Some(j) => children[*j].push(i),
                None => roots.push(i),
            }
        }
        let order = |v: &mut Vec<usize>| v.sort_by_key(|&i| (records[i].started_at_ms, i));
        order(&mut roots);
        children.iter_mut().for_each(order);
        Spans { run_id: &run.run_id, records, base_ms, parent, children, roots }
    }

    fn base(&self, i: usize) -> Map<String, Value> {
        let r = &self.records[i];
        let v = json!({
            "seq": r.seq,
            "path": r.path,
            "name": r.step,
            "kind": r.kind,
            "status": step_status(r.status),
            "start_ms": r.started_at_ms,
            "offset_ms": r.started_at_ms.saturating_sub(self.base_ms),
            "duration_ms": r.latency_ms,
            "attempts": r.attempts,
            "tokens": {"prompt": r.tokens.prompt, "completion": r.tokens.completion, "total": r.tokens.total()},
            "cost_usd": r.cost_usd,
            "attributes": gen_ai_attributes(r),
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn flat_json(&self, i: usize) -> Value {
        let mut m = Map::new();
        m.insert("run_id".into(), json!(self.run_id));
        m.extend(self.base(i));
        m.insert("parent_seq".into(), json!(self.parent[i].map(|j| self.records[j].seq)));
        Value::Object(m)
    }

    fn tree_json(&self, i: usize) -> Value {
        let mut m = self.base(i);
        m.insert("children".into(), Value::Array(self.children[i].iter().map(|&c| self.tree_json(c)).collect()));
        Value::Object(m)
    }

    fn tree_text(&self, i: usize, depth: usize, out: &mut String) {
        let r = &self.records[i];
        let mark = if r.status == StepStatus::Completed { "✓" } else { "✗" };
        let _ = writeln!(
            out,
            "{:>10} {:>11}  {}{mark} {} ({}) [{}]{}",
            format!("+{} ms", r.started_at_ms.saturating_sub(self.base_ms)),
            format!("{:.1} ms", r.latency_ms),
            "  ".repeat(depth),
            cell(&r.step),
            cell(&r.kind),
            cell(&r.path),
            if r.attempts > 1 { format!(" ×{}", r.attempts) } else { String::new() }
        );
        if let Some(g) = governance_summary(r) {
            let _ = writeln!(out, "{:>10} {:>11}  {}  governance: {}", "", "", "  ".repeat(depth), cell(&g));
        }
        for &c in &self.children[i] {
            self.tree_text(c, depth + 1, out);
        }
    }
}

/// Counts and sums of a group of runs.
#[derive(Default)]
struct Agg {
    count: u64,
    total_ms: i64,
    tokens: u64,
    cost: f64,
}

impl Agg {
    fn add(&mut self, duration_ms: i64, tokens: u64, cost: f64) {
        self.count += 1;
        self.total_ms = self.total_ms.saturating_add(duration_ms);
        self.tokens = self.tokens.saturating_add(tokens);
        if cost.is_finite() {
            self.cost += cost;
        }
    }
    fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_ms as f64 / self.count as f64
        }
    }
    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "total_duration_ms": self.total_ms,
            "avg_duration_ms": self.avg_ms(),
            "total_tokens": self.tokens,
            "total_cost_usd": self.cost,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Rendering helpers.

fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string(v).unwrap_or_else(|_| "null".into()));
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A string value as text (other values as JSON).
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| compact(v), str::to_owned)
}

fn format_cost(c: f64) -> String {
    format!("${c:.6}")
}

/// A text table with left-aligned columns except the `right` ones.
pub(crate) struct Table {
    header: Vec<String>,
    right: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str], right: &[usize]) -> Self {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), right: right.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; each cell is made printable and cut to [`MAX_CELL_CHARS`] (see [`cell`]).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| cell(c)).collect());
    }

    pub(crate) fn render(&self) -> String {
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                // Padding by hand: a formatting width is limited to 65,535.
                let pad = " ".repeat(widths.get(i).copied().unwrap_or(0).saturating_sub(c.chars().count()));
                if self.right.contains(&i) {
                    line.push_str(&pad);
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The longest table cell shown; longer stored values (a 70,000-character step name) are cut with `…`.
const MAX_CELL_CHARS: usize = 200;

/// A stored value as a table cell: control characters escaped (they would break the table or drive the
/// terminal), at most [`MAX_CELL_CHARS`] characters.
fn cell(s: &str) -> String {
    flujo_core::shorten_for_display(s, MAX_CELL_CHARS)
}

/// Quotes a word for a POSIX shell when it needs it.
pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The URI with any password of its userinfo masked (`postgres://u:***@h/db`).
pub(crate) fn mask_uri(uri: &str) -> String {
    flujo_store::mask_uri(uri)
}

/// The database file a `sqlite://` URI names (`None` for other stores and `:memory:`).
pub(crate) fn sqlite_file(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.trim().split_once("://")?;
    if !scheme.eq_ignore_ascii_case("sqlite") {
        return None;
    }
    let target = rest.split_once('?').map_or(rest, |(t, _)| t);
    target.strip_prefix('/').filter(|p| !p.is_empty() && *p != "/").map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------------------
// Statuses, durations and times.

/// `completed` | `failed`: the status of a journal record (a span).
fn parse_step_status(s: &str) -> Result<StepStatus, CliError> {
    match s.to_ascii_lowercase().as_str() {
        "completed" | "success" | "ok" => Ok(StepStatus::Completed),
        "failed" | "failure" | "error" => Ok(StepStatus::Failed),
        other => Err(CliError::config(format!("--status '{other}' is not a span status (completed, failed)"))),
    }
}

fn parse_status(s: &str) -> Result<RunStatus, CliError> {
    RunStatus::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
        CliError::config(format!("unknown run status '{s}' (expected running, paused, completed, failed or cancelled)"))
    })
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `90s`, `30m`, `2h`, `7d`, `2w`, `500ms` → milliseconds (`None` when malformed).
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let factor: i64 = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "secs" => 1_000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hr" | "hrs" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `--since`: a duration back from `now_ms`, or an RFC 3339 time (or a plain `YYYY-MM-DD`, in UTC).
fn parse_since(s: &str, now_ms: i64) -> Result<i64, CliError> {
    if let Some(d) = parse_duration(s) {
        return Ok(now_ms.saturating_sub(d));
    }
    parse_rfc3339(s).ok_or_else(|| {
        CliError::config(format!("--since '{s}' is neither a duration (30m, 2h, 7d) nor an RFC 3339 time"))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn num(s: &str, digits: usize, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| range.contains(n))
}

/// `2024-05-01T12:30:00Z`, `…T12:30:00.250+02:00`, or `2024-05-01` (UTC midnight) → epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let date = s.get(..10)?;
    let (y, m, d) =
        (num(date.get(..4)?, 4, 0..=9999)?, num(date.get(5..7)?, 2, 1..=12)?, num(date.get(8..)?, 2, 1..=31)?);
    if date.as_bytes().get(4) != Some(&b'-') || date.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return None; // e.g. February 30th
    }
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(days * 86_400_000);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (hh, mm, ss) =
        (num(rest.get(..2)?, 2, 0..=23)?, num(rest.get(3..5)?, 2, 0..=59)?, num(rest.get(6..8)?, 2, 0..=60)?);
    if rest.as_bytes().get(2) != Some(&b':') || rest.as_bytes().get(5) != Some(&b':') {
        return None;
    }
    let mut rest = &rest[8..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
        if n == 0 {
            return None;
        }
        let digits = &frac[..n];
        millis = digits.chars().chain(std::iter::repeat('0')).take(3).collect::<String>().parse::<i64>().ok()?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let (oh, om) = (num(rest.get(1..3)?, 2, 0..=23)?, num(rest.get(4..)?, 2, 0..=59)?);
            sign * (oh * 60 + om)
        }
    };
    Some(((days * 24 + hh) * 60 + mm - offset_min) * 60_000 + ss * 1000 + millis)
}

/// Epoch milliseconds as RFC 3339 in UTC with milliseconds (`2024-05-01T12:30:00.250Z`).
pub fn format_ts(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Epoch milliseconds as `2024-05-01 12:30:00` (UTC), for tables.
fn format_ts_short(ms: i64) -> String {
    let full = format_ts(ms);
    full.get(..19).map_or(full.clone(), |s| s.replace('T', " "))
}

/// `flujo status`: each model provider's readiness (its API key present; providers are not contacted), the
/// state store, and the latest three runs. Never creates the store.
pub async fn status(args: crate::StatusArgs, cfg: &Config) -> Result<u8, CliError> {
    let llm = flujo_llm::LlmConfig::from_toml(&cfg.table).map_err(|e| CliError::config(format!("flujo.toml: {e}")))?;
    let providers = provider_status(&llm, |k| std::env::var(k).ok());
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    let file = sqlite_file(&uri);
    let store_json = json!({
        "uri": mask_uri(&uri),
        "durable": crate::commands::keeps_state(&uri),
        "path": file,
        "exists": file.as_deref().map(|f| std::path::Path::new(f).exists()),
    });
    // The latest runs, when the store exists (opening a SQLite store would create its file).
    let mut history = json!({"available": false, "items": [], "total": 0});
    let can_open = match &file {
        Some(f) => std::path::Path::new(f).exists(),
        None => crate::commands::keeps_state(&uri),
    };
    if can_open {
        let store = crate::commands::open_store(&uri)?;
        let filter = {
            let mut filter = RunFilter::default();
            filter.limit = Some(3);
            filter
        };
        let runs =
            store.list_runs(&filter).await.map_err(|e| CliError::new("store_error", EXIT_FAILED, e.to_string()))?;
        let total = store
            .list_runs(&RunFilter::default())
            .await
            .map_err(|e| CliError::new("store_error", EXIT_FAILED, e.to_string()))?
            .len();
        let items: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({"run_id": r.run_id, "pipeline": r.pipeline_name, "status": r.status.as_str(),
                       "created_at": format_ts(r.created_at_ms), "updated_at": format_ts(r.updated_at_ms),
                       "duration_ms": r.updated_at_ms.saturating_sub(r.created_at_ms),
                       "error": r.error.as_ref().map(|e| e.message.clone())})
            })
            .collect();
        history = json!({"available": true, "items": items, "total": total});
    }
    if args.format == crate::StatusFormat::Json {
        outln!(
            "{}",
            json!({"command": "status", "timestamp_utc": format_ts(now_ms()), "providers": providers,
                   "state": store_json, "history": history})
        );
        return Ok(EXIT_OK);
    }
    let parts: Vec<String> = providers
        .iter()
        .map(|p| format!("{}: {}", p["name"].as_str().unwrap_or_default(), p["status"].as_str().unwrap_or_default()))
        .collect();
    outln!("Providers: {}", parts.join(", "));
    outln!(
        "State: {} ({}{})",
        store_json["uri"].as_str().unwrap_or_default(),
        if store_json["durable"] == Value::Bool(true) { "durable" } else { "not kept after the process" },
        match store_json["exists"].as_bool() {
            Some(false) => ", not created yet",
            _ => "",
        }
    );
    match history["items"].as_array() {
        Some(items) if !items.is_empty() => {
            let runs: Vec<String> = items
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r["run_id"].as_str().unwrap_or_default(),
                        r["status"].as_str().unwrap_or_default(),
                        r["created_at"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            outln!("History: {} runs; latest: {}", history["total"], runs.join("; "));
        }
        _ => outln!("History: no runs"),
    }
    Ok(EXIT_OK)
}

/// Whether each provider can be called, checked without sending anything: every built-in provider and every
/// `[providers.NAME]`. `ENABLED` (a key or credentials found), `NO_KEY_NEEDED` (a local server), `MISSING` (no
/// key where one is needed), `NOT_CONFIGURED` (a provider that needs an endpoint or region and has none),
/// `INVALID_CONFIG`.
fn provider_status(
    llm: &flujo_llm::LlmConfig,
    env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> Vec<Value> {
    let mut names: Vec<String> = flujo_llm::BUILTIN_PROVIDERS.iter().map(|n| (*n).to_owned()).collect();
    for n in llm.providers.keys() {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let env = std::sync::Arc::new(env);
    let registry = {
        let env = env.clone();
        flujo_llm::LlmRegistry::with_env(llm.clone(), move |k| env(k))
    };
    names
        .iter()
        .map(|name| {
            let section = llm
                .providers
                .get(name)
                .cloned()
                .or_else(|| flujo_llm::ProviderConfig::builtin(name))
                .unwrap_or_default();
            let resolved = match section.resolve(name, &|k| env(k)) {
                Ok(p) => p,
                Err(e) => {
                    // Azure without an endpoint (or another provider missing what only the user can give).
                    let status = if llm.providers.contains_key(name) { "INVALID_CONFIG" } else { "NOT_CONFIGURED" };
                    return json!({"name": name, "enabled": false, "status": status, "message": e.to_string()});
                }
            };
            let ready = match &registry {
                Ok(r) => r.chat_model(&format!("{name}:status")).map_err(|e| e.to_string()).and_then(|m| {
                    m.check_ready().map_err(|e| match e {
                        flujo_llm::LlmError::MissingApiKey { .. } => "MISSING".to_owned(),
                        other => other.to_string(),
                    })
                }),
                Err(e) => Err(e.to_string()),
            };
            let status = match ready {
                Ok(()) if resolved.api_key.is_some() || resolved.kind == flujo_llm::ProviderKind::Bedrock => "ENABLED",
                Ok(()) if !resolved.key_required => "NO_KEY_NEEDED",
                Ok(()) => "ENABLED",
                Err(m) if m == "MISSING" => "MISSING",
                Err(m) => {
                    return json!({"name": name, "enabled": false, "status": "NOT_CONFIGURED", "message": m,
                                  "key_env": resolved.key_env})
                }
            };
            let mut v =
                json!({"name": name, "enabled": status != "MISSING", "status": status, "key_env": resolved.key_env});
            if !resolved.base_url.is_empty() {
                v["base_url"] = json!(resolved.base_url);
            }
            v
        })
        .collect()
}

/// `lens from-file`: a saved run (the `--json` object of `flujo run`/`resume`, or of `lens show`) as a summary
/// and a step tree indented by path depth.
fn from_file(path: &std::path::Path, preview: usize, json_out: bool) -> Result<u8, CliError> {
    let raw =
        std::fs::read_to_string(path).map_err(|e| CliError::config(format!("cannot read {}: {e}", path.display())))?;
    let v: Value =
        serde_json::from_str(&raw).map_err(|e| CliError::config(format!("{} is not JSON: {e}", path.display())))?;
    // `flujo run --json` has `step_history`; `lens show --json` has `steps` (journal records).
    let steps = v.get("steps").or_else(|| v.get("step_history")).and_then(Value::as_array);
    let (Some(run_id), Some(steps)) = (v.get("run_id").and_then(Value::as_str), steps) else {
        return Err(CliError::config(format!(
            "{} is not a saved run (expected the --json object of `flujo run` or `flujo lens show`: run_id and steps)",
            path.display()
        )));
    };
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    let mut entries: Vec<(String, String, String, Value, Value)> = Vec::new();
    for s in steps {
        let path = s
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_else(|| s.get("name").and_then(Value::as_str).unwrap_or("?"));
        let name = s.get("step").or_else(|| s.get("name")).and_then(Value::as_str).unwrap_or("?");
        let status =
            s.get("status").map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).unwrap_or_default();
        entries.push((
            path.to_owned(),
            name.to_owned(),
            status,
            s.get("input").cloned().unwrap_or(Value::Null),
            s.get("output").cloned().unwrap_or(Value::Null),
        ));
    }
    // A tree: parents before their children (the journal commits children first), siblings in path order.
    let key = |p: &str| -> Vec<(u64, String)> {
        p.split('/').map(|seg| (seg.parse::<u64>().unwrap_or(u64::MAX), seg.to_owned())).collect()
    };
    entries.sort_by_cached_key(|e| key(&e.0));
    let depth = |p: &str| p.split('/').filter(|seg| seg.parse::<u64>().is_ok()).count().saturating_sub(1);
    if json_out {
        let items: Vec<Value> = entries
            .iter()
            .map(|(p, n, st, i, o)| json!({"path": p, "step": n, "status": st, "depth": depth(p), "input": redact(i), "output": redact(o)}))
            .collect();
        print_json(
            &json!({"run_id": run_id, "pipeline": field("pipeline"), "status": field("status"), "steps": items}),
        );
        return Ok(EXIT_OK);
    }
    let clip = |v: &Value| -> String {
        let s = compact(&redact(v));
        if s.chars().count() > preview {
            format!("{}…", s.chars().take(preview).collect::<String>())
        } else {
            s
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "run {} (pipeline {}): {}", cell(run_id), cell(&field("pipeline")), field("status"));
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        let _ = writeln!(out, "error [{}]: {}", text(&e["kind"]), text(&e["message"]));
    }
    for (p, n, st, i, o) in &entries {
        let depth = depth(p);
        let _ = writeln!(out, "{}- {} [{}] {}", "  ".repeat(depth), cell(n), cell(p), st);
        if preview > 0 {
            if !i.is_null() {
                let _ = writeln!(out, "{}    input:  {}", "  ".repeat(depth), clip(i));
            }
            let _ = writeln!(out, "{}    output: {}", "  ".repeat(depth), clip(o));
        }
    }
    if let Some(o) = v.get("output").filter(|o| !o.is_null()) {
        let _ = writeln!(out, "output: {}", clip(o));
    }
    out!("{out}");
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Some(1_800_000));
        assert_eq!(parse_duration("2h"), Some(7_200_000));
        assert_eq!(parse_duration("7d"), Some(604_800_000));
        assert_eq!(parse_duration("0d"), Some(0));
        assert_eq!(parse_duration("500ms"), Some(500));
        for bad in ["", "d", "30", "-1d", "1.5h", "3 fortnights", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29T12:30:00.25Z"), Some(1_709_209_800_250));
        assert_eq!(parse_rfc3339("2024-02-29T14:30:00.250+02:00"), Some(1_709_209_800_250));
        assert_eq!(parse_rfc3339("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(format_ts(1_709_209_800_250), "2024-02-29T12:30:00.250Z");
        assert_eq!(format_ts(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ts_short(1_709_209_800_250), "2024-02-29 12:30:00");
        for bad in ["2023-02-29", "2024-13-01", "2024-01-01T25:00:00Z", "2024-01-01T10:00:00", "yesterday"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for ms in [0, 951_782_400_000, 1_709_209_800_250, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&format_ts(ms)), Some(ms));
        }
        assert_eq!(parse_since("2h", 10_000_000).ok(), Some(2_800_000));
        assert!(parse_since("soon", 0).is_err());
    }

    #[test]
    fn uris_and_quoting() {
        assert_eq!(mask_uri("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(mask_uri("sqlite:///tmp/a@b.db"), "sqlite:///tmp/a@b.db");
        assert_eq!(sqlite_file("sqlite:////tmp/s.db?durability=strict").as_deref(), Some("/tmp/s.db"));
        assert_eq!(sqlite_file("sqlite:///.flujo/state.db").as_deref(), Some(".flujo/state.db"));
        assert_eq!(sqlite_file("sqlite://:memory:"), None);
        assert_eq!(sqlite_file("memory://"), None);
        assert_eq!(shell_quote("1/loop:2/0"), "1/loop:2/0");
        assert_eq!(shell_quote("branch:it's"), r"'branch:it'\''s'");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["A", "N"], &[1]);
        t.row(vec!["long".into(), "1".into()]);
        t.row(vec!["x".into(), "100".into()]);
        assert_eq!(t.render(), "A       N\nlong    1\nx     100\n");
    }

    #[test]
    fn parents_are_the_enclosing_executions() {
        assert_eq!(parent_path("1/loop:2/0"), Some("1/loop:2"));
        assert_eq!(parent_path("1"), None);
    }
}
