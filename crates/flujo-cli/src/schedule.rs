//! `flujo schedule add|list|remove`: cron schedules that enqueue runs of a pipeline on a queue. The schedule
//! (the pipeline's definition, skills, input and context, checked now as `flujo run --queue` checks them) is
//! kept in the state store; the workers of its queue fire it, exactly once per tick however many there are
//! (`flujo_engine::schedule`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use flujo_core::Store;
use flujo_engine::schedule;
use flujo_engine::RunOptions;
use serde_json::{json, Value};

use crate::commands::{load, open_store, pipeline_path, read_context, read_input, registry_for, runner};
use crate::config::Config;
use crate::lens::{mask_uri, now_ms};
use crate::{CliError, InputArgs, EXIT_CONFIG, EXIT_FAILED, EXIT_OK};

/// `flujo schedule` subcommands.
#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Add a schedule: at every tick of `--cron`, a run of PIPELINE is put on `--queue` for a worker.
    Add(AddArgs),
    /// List the schedules with their last and next ticks.
    List(StoreArgs),
    /// Remove a schedule (runs it already enqueued stay queued).
    Remove {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the schedules are kept, and the output format.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// State store URI (default: the configured one); the store the workers use.
    #[arg(long)]
    pub state: Option<String>,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `flujo schedule add` arguments.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The schedule's name (its runs are `sched-NAME-YYYYMMDDTHHMMSSZ`).
    pub name: String,
    /// The blueprint (default: pipeline.yaml).
    pub pipeline: Option<PathBuf>,
    /// When to run: five cron fields (`*/5 * * * *`), six with seconds first (`*/10 * * * * *`), or an alias
    /// (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    #[arg(long)]
    pub cron: String,
    /// The time zone the expression is read in: `UTC` or an IANA name (`Europe/Madrid`).
    #[arg(long = "tz", default_value = "UTC")]
    pub timezone: String,
    /// The queue the runs are put on.
    #[arg(long, default_value = "default")]
    pub queue: String,
    #[command(flatten)]
    pub input: InputArgs,
    /// Initial context fields of every run, a JSON object.
    #[arg(long, short = 'd')]
    pub context: Option<String>,
    /// A tick missed (no worker running) by longer than this many seconds is skipped instead of run late.
    #[arg(long = "catchup-s", default_value_t = 60.0)]
    pub catchup_s: f64,
    /// Replace a schedule of the same name (its ticks count from now).
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl ScheduleCommand {
    /// Whether the command prints JSON.
    pub fn json(&self) -> bool {
        match self {
            ScheduleCommand::Add(a) => a.store.json,
            ScheduleCommand::List(s) | ScheduleCommand::Remove { store: s, .. } => s.json,
        }
    }
}

pub(crate) async fn dispatch(cmd: ScheduleCommand, cfg: &Config) -> Result<u8, CliError> {
    match cmd {
        ScheduleCommand::Add(args) => add(args, cfg).await,
        ScheduleCommand::List(args) => list(args, cfg).await,
        ScheduleCommand::Remove { name, store } => remove(&name, store, cfg).await,
    }
}

fn shared_store(args: &StoreArgs, cfg: &Config) -> Result<(Arc<dyn Store>, String), CliError> {
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    if !crate::commands::keeps_state(&uri) {
        return Err(CliError::config(format!(
            "schedules live in the state store the workers share; {} keeps nothing after this process exits",
            mask_uri(&uri)
        )));
    }
    Ok((open_store(&uri)?, uri))
}

fn store_error(what: &str, e: flujo_core::StoreError) -> CliError {
    CliError::new("store_error", EXIT_FAILED, format!("cannot {what}: {e}"))
}

/// A Unix-ms time as `2026-12-07T01:45:00Z`.
fn utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| ms.to_string(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

async fn add(args: AddArgs, cfg: &Config) -> Result<u8, CliError> {
    if !(args.catchup_s.is_finite() && (0.0..=31_536_000.0).contains(&args.catchup_s)) {
        return Err(CliError::new("usage_error", EXIT_CONFIG, "--catchup-s must be 0 to 31536000".to_owned()));
    }
    let path = pipeline_path(args.pipeline.clone())?;
    let input = read_input(&args.input, Some(Value::String(String::new())), cfg)?.unwrap_or(Value::Null);
    let context = read_context(args.context.as_deref(), cfg)?;
    let loaded = load(&path, false)?;
    let pipeline_name = loaded.pipeline.name.clone();
    let reg = registry_for(Some(&loaded), None)?;
    let origin = flujo_blueprint::origin::origin_of(&loaded, &path);
    let (store, _) = shared_store(&args.store, cfg)?;
    let flujo = runner(loaded.pipeline, store.clone(), reg, cfg, Some(origin))?;
    let opts = RunOptions::new(input).context(context);
    let made = flujo
        .new_schedule(&args.name, &args.cron, &args.timezone, opts, &args.queue)
        .map_err(|e| match e {
            flujo_core::FlujoError::Config(msg) => CliError::usage("schedule_invalid", msg),
            other => crate::worker::flujo_error(other),
        })?
        .with_catchup_ms((args.catchup_s * 1000.0).round() as i64);
    if args.replace {
        schedule::replace(store.as_ref(), &made).await.map_err(|e| store_error("save the schedule", e))?;
    } else if !schedule::insert(store.as_ref(), &made).await.map_err(|e| store_error("save the schedule", e))? {
        return Err(CliError::usage(
            "schedule_exists",
            format!("a schedule named '{}' exists; pass --replace to replace it", args.name),
        ));
    }
    let next = made.next_tick(now_ms());
    if args.store.json {
        outln!(
            "{}",
            json!({"name": made.name, "cron": made.cron, "timezone": made.timezone, "queue": made.queue,
                "pipeline": pipeline_name, "catchup_s": args.catchup_s, "next_tick": next.map(utc),
                "status": if args.replace { "replaced" } else { "added" }})
        );
    } else {
        outln!(
            "schedule {}: `{}` ({}) puts a run of {} on queue `{}`; next tick {} (a `flujo worker --queue {}` fires it)",
            made.name,
            made.cron,
            made.timezone,
            pipeline_name,
            made.queue,
            next.map_or_else(|| "none".to_owned(), utc),
            made.queue
        );
    }
    Ok(EXIT_OK)
}

fn view(stored: &schedule::StoredSchedule, now: i64) -> Value {
    match &stored.schedule {
        Ok(s) => json!({
            "name": s.name, "cron": s.cron, "timezone": s.timezone, "queue": s.queue,
            "pipeline": s.template.pipeline_name, "catchup_s": s.catchup_ms as f64 / 1000.0,
            "created_at": utc(s.created_at_ms), "last_tick": stored.last_tick_ms.filter(|t| *t > s.created_at_ms).map(utc),
            "next_tick": s.next_tick(now).map(utc), "error": null,
        }),
        Err(reason) => json!({"name": stored.name, "error": reason}),
    }
}

async fn list(args: StoreArgs, cfg: &Config) -> Result<u8, CliError> {
    let (store, _) = shared_store(&args, cfg)?;
    let all = schedule::list(store.as_ref()).await.map_err(|e| store_error("list schedules", e))?;
    let now = now_ms();
    let views: Vec<Value> = all.iter().map(|s| view(s, now)).collect();
    if args.json {
        outln!("{}", json!({"schedules": views}));
        return Ok(EXIT_OK);
    }
    if views.is_empty() {
        outln!("no schedules");
        return Ok(EXIT_OK);
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    outln!(
        "{:<20} {:<18} {:<14} {:<12} {:<20} {:<21} {}",
        "NAME",
        "CRON",
        "TZ",
        "QUEUE",
        "PIPELINE",
        "LAST TICK",
        "NEXT TICK"
    );
    for v in &views {
        if let Some(err) = v.get("error").and_then(Value::as_str) {
            outln!("{:<20} (unreadable: {err})", text(v, "name"));
            continue;
        }
        outln!(
            "{:<20} {:<18} {:<14} {:<12} {:<20} {:<21} {}",
            text(v, "name"),
            text(v, "cron"),
            text(v, "timezone"),
            text(v, "queue"),
            text(v, "pipeline"),
            text(v, "last_tick"),
            text(v, "next_tick")
        );
    }
    Ok(EXIT_OK)
}

async fn remove(name: &str, args: StoreArgs, cfg: &Config) -> Result<u8, CliError> {
    let (store, uri) = shared_store(&args, cfg)?;
    if !schedule::remove(store.as_ref(), name).await.map_err(|e| store_error("remove the schedule", e))? {
        return Err(CliError::usage("schedule_not_found", format!("no schedule named '{name}' in {}", mask_uri(&uri))));
    }
    if args.json {
        outln!("{}", json!({"name": name, "status": "removed"}));
    } else {
        outln!("schedule {name}: removed");
    }
    Ok(EXIT_OK)
}
