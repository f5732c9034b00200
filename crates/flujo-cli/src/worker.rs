//! `flujo worker`: claims queued runs (`flujo run --queue NAME`) from the shared state store and walks them,
//! several at once; takes over the runs of workers that died (their lease expired); stops cleanly on SIGTERM.
//!
//! The store does the coordination (`RunStore::claim_runs`: `FOR UPDATE SKIP LOCKED` on Postgres, the single
//! writer on SQLite), so any number of workers on any number of machines share the queues without a
//! coordinator. A claimed run is walked by an ordinary runner built from the run's stored definition and
//! skills (as `flujo resume RUN_ID` does), which heartbeats its lease and appends fenced by its owner id: a
//! worker that lost a run (its lease expired and another worker took the run over) cannot append to it again.
//!
//! `[queues.NAME] concurrency = N` in flujo.toml limits a queue to N running runs across every worker, and
//! `rate_limit = {runs = X, period_s = Y}` to X runs started per Y seconds (the store counts and claims
//! atomically); `--concurrency` limits what this worker walks at once.
//!
//! Each poll the worker also fires the schedules of its queues (`flujo schedule add`; see
//! `flujo_engine::schedule`: exactly one run per tick across all workers), and it keeps its registration
//! (`worker/ID` in the store's system state: host, pid, queues, runs in flight, last heartbeat) fresh, for
//! `flujo worker --status`; a clean exit removes it.
//!
//! On SIGTERM or Ctrl-C the worker stops claiming, lets in-flight runs finish for `--grace-s`, then stops
//! them and puts them back on their queue for another worker (a step in flight then runs again there:
//! at-least-once, with the same idempotency key), and exits 0.
//!
//! `--metrics-addr ADDR` serves Prometheus metrics (`GET /metrics`, `flujo_server::metrics`: the runs this
//! worker walks, its store commits, the depth of every queue and the live workers) and `GET /healthz` on
//! ADDR. The endpoint has no authentication of its own on loopback; any other address is refused unless
//! `FLUJO_API_TOKEN` is set, and a set token is then required as `Authorization: Bearer TOKEN` on
//! `/metrics` (as `flujo serve` does).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use flujo_core::{ClaimRequest, FlujoError, RunFilter, RunStatus, Store, StoreError};
use flujo_engine::ResumeRequest;
use flujo_server::metrics::Metrics;
use flujo_server::registration::{is_live, Registration, WORKER_PREFIX};
use tokio::task::JoinSet;

use crate::commands::{build_error, open_store, registry_for_stored_run, runner_builder};
use crate::config::Config;
use crate::CliError;
use crate::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK};

/// `flujo worker` arguments.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// A queue to take runs from (repeatable; default: `default`).
    #[arg(long = "queue", short = 'q', value_name = "NAME")]
    pub queues: Vec<String>,
    /// Runs this worker walks at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// State store URI (default: the configured one); the store the runs were queued on.
    #[arg(long)]
    pub state: Option<String>,
    /// The lease of a claimed run, in seconds: when a worker stops renewing it for this long (it died),
    /// another worker takes the run over.
    #[arg(long = "lease-s", default_value_t = 30.0)]
    pub lease_s: f64,
    /// How often an idle worker looks for runs, in milliseconds.
    #[arg(long = "poll-ms", default_value_t = 200)]
    pub poll_ms: u64,
    /// Exit once no run of the queues is queued or running (batch jobs, tests).
    #[arg(long = "exit-when-idle")]
    pub exit_when_idle: bool,
    /// After SIGTERM or Ctrl-C: how long in-flight runs may finish, in seconds, before they are stopped and
    /// put back on their queue.
    #[arg(long = "grace-s", default_value_t = 30.0)]
    pub grace_s: f64,
    /// One JSON object per line for each run the worker finishes (`run_id`, `pipeline`, `status`, `error`);
    /// with `--status`, one JSON object.
    #[arg(long)]
    pub json: bool,
    /// List the live workers of the store (host, pid, queues, runs in flight, last heartbeat) and exit.
    #[arg(long)]
    pub status: bool,
    /// With `--status`: also list workers that stopped heartbeating without a clean exit.
    #[arg(long, requires = "status")]
    pub all: bool,
    /// Serve Prometheus metrics (`/metrics`) and `/healthz` on this address, e.g. `127.0.0.1:9187` (port 0:
    /// any free port, printed on stderr). A non-loopback address needs `FLUJO_API_TOKEN` (bearer auth).
    #[arg(long = "metrics-addr", value_name = "ADDR", conflicts_with = "status")]
    pub metrics_addr: Option<String>,
}

/// Registrations silent for longer than this are deleted by the next worker that starts.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// A run error as a CLI error (for `run --queue`).
pub(crate) fn flujo_error(e: FlujoError) -> CliError {
    match e {
        FlujoError::Store(StoreError::RunExists(id)) => {
            CliError::usage("run_exists", format!("run '{id}' already exists; choose another --run-id"))
        }
        FlujoError::Store(other) => CliError::new("store_error", EXIT_FAILED, other.to_string()),
        FlujoError::Config(_) | FlujoError::InvalidRunId { .. } | FlujoError::ContextValidation(_) => {
            CliError::usage(e.kind(), e.to_string())
        }
        other => build_error(other),
    }
}

use crate::lens::now_ms;

/// `ms` as `45s`, `12m05s`, `3h07m` or `2d04h`.
fn human_duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The runs this worker walks, with the owner id of each one's runner (to put it back on SIGTERM).
type InFlight = Arc<Mutex<HashMap<String, String>>>;

/// What a finished walk reports.
struct Finished {
    run_id: String,
    pipeline: String,
    status: String,
    error: Option<String>,
}

pub(crate) async fn worker(args: WorkerArgs, cfg: &Config) -> Result<u8, CliError> {
    let queues = if args.queues.is_empty() { vec!["default".to_owned()] } else { args.queues.clone() };
    for q in &queues {
        flujo_core::limits::check_name(q)
            .map_err(|reason| CliError::new("usage_error", EXIT_CONFIG, format!("--queue {q:?}: {reason}")))?;
    }
    if !(1..=1024).contains(&args.concurrency) {
        return Err(CliError::new("usage_error", EXIT_CONFIG, "--concurrency must be 1 to 1024".to_owned()));
    }
    if !(args.lease_s.is_finite() && (0.1..=86_400.0).contains(&args.lease_s)) {
        return Err(CliError::new("usage_error", EXIT_CONFIG, "--lease-s must be 0.1 to 86400".to_owned()));
    }
    if !(args.grace_s.is_finite() && (0.0..=86_400.0).contains(&args.grace_s)) {
        return Err(CliError::new("usage_error", EXIT_CONFIG, "--grace-s must be 0 to 86400".to_owned()));
    }
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    if !crate::commands::keeps_state(&uri) {
        return Err(CliError::config(format!(
            "a worker needs the state store the runs were queued on; {} keeps nothing",
            crate::lens::mask_uri(&uri)
        )));
    }
    let store = open_store(&uri)?;
    if args.status {
        return status(&store, args.json, args.all).await;
    }
    // Before anything is announced: a SIGTERM from now on stops the worker cleanly.
    let mut stop = Box::pin(shutdown_signal());
    let metrics = match &args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, &store).await?),
        None => None,
    };
    // Every runner of this worker shares the one timed store (the engine tells walks apart by store).
    let store = match &metrics {
        Some(m) => m.wrap_store(store),
        None => store,
    };
    let lease = Duration::from_secs_f64(args.lease_s);
    let poll = Duration::from_millis(args.poll_ms.clamp(1, 60_000));
    let me = flujo_engine::ownership::new_owner();
    errln!(
        "worker {} (pid {}) on {}: queues {}, concurrency {}",
        &me.id[..12.min(me.id.len())],
        me.pid,
        crate::lens::mask_uri(&uri),
        queues.join(", "),
        args.concurrency
    );
    let in_flight: InFlight = Arc::default();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut backoff = poll;
    let registration = Registration::new(&me, "worker", &queues, args.concurrency, lease);
    // Shadow evaluations of the runs this worker finishes, and of those other processes left pending.
    let shadow = crate::shadow::evaluator(cfg, &store, None);
    if let Some(ev) = &shadow {
        ev.pick_up(64).await;
    }
    forget_dead_workers(&store).await;
    let beat_every = registration.beat_every();
    let schedule_every = poll.min(Duration::from_secs(1));
    let (mut next_beat, mut next_schedules) = (tokio::time::Instant::now(), tokio::time::Instant::now());
    // When to claim again: at once while claims come back full (the queue has more), a poll later once one
    // comes back short (the queue is drained; claiming after every finished run would only load the store).
    let mut next_claim = tokio::time::Instant::now();
    // Whether the store wakes idle workers when a run is queued (Postgres: LISTEN/NOTIFY); until it says it
    // cannot, an idle worker waits for that as well as for its next poll.
    let mut can_wait = true;
    loop {
        let now_instant = tokio::time::Instant::now();
        if now_instant >= next_beat {
            beat(&registration, &store, &in_flight).await;
            next_beat = now_instant + beat_every;
        }
        if now_instant >= next_schedules {
            fire_schedules(&store, &queues).await;
            next_schedules = now_instant + schedule_every;
        }
        let free = args.concurrency.saturating_sub(tasks.len());
        let mut claimed_any = false;
        if free > 0 && now_instant >= next_claim {
            let now = now_ms();
            let mut claim = ClaimRequest::new(queues.clone(), me.clone(), now, now + lease.as_millis() as i64, free);
            for q in &queues {
                if let Some(max) = cfg.queue_limits.get(q) {
                    claim = claim.with_max_running(q.clone(), *max);
                }
                if let Some((runs, period_s)) = cfg.queue_rates.get(q) {
                    claim = claim.with_rate_limit(q.clone(), *runs, (period_s * 1000.0).round() as i64);
                }
            }
            match store.claim_runs(&claim).await {
                Ok(ids) => {
                    backoff = poll;
                    claimed_any = !ids.is_empty();
                    next_claim = if ids.len() < free { now_instant + poll } else { now_instant };
                    for id in ids {
                        let (store, cfg, in_flight) = (store.clone(), cfg.clone(), in_flight.clone());
                        tasks.spawn(walk(id, store, cfg, lease, in_flight, shadow.clone(), metrics.clone()));
                    }
                }
                Err(e) => {
                    errln!("worker: cannot claim runs: {e}; retrying in {} ms", backoff.as_millis());
                    next_claim = now_instant + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        if args.exit_when_idle && tasks.is_empty() && !claimed_any && idle(&store, &queues).await {
            break;
        }
        let mut wake = next_beat.min(next_schedules);
        let room = tasks.len() < args.concurrency;
        if room {
            wake = wake.min(next_claim);
        }
        let until_wake = wake.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64;
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => report(done, args.json),
            _ = tokio::time::sleep_until(wake) => {}
            woke = store.wait_for_queued(&queues, until_wake), if room && can_wait && until_wake > 0 => {
                match woke {
                    Ok(true) => next_claim = tokio::time::Instant::now(),
                    Ok(false) => can_wait = false,
                    Err(e) => {
                        errln!("worker: cannot wait for queued runs: {e}; polling");
                        can_wait = false;
                    }
                }
            }
            _ = &mut stop => {
                errln!("worker: stopping: no new runs; {} in flight (grace {} s)", tasks.len(), args.grace_s);
                break;
            }
        }
    }
    // Drain: let in-flight runs finish within the grace period, then put the rest back on their queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.grace_s);
    while !tasks.is_empty() {
        tokio::select! {
            Some(done) = tasks.join_next() => report(done, args.json),
            _ = tokio::time::sleep_until(next_beat), if next_beat < deadline => {
                beat(&registration, &store, &in_flight).await;
                next_beat = tokio::time::Instant::now() + beat_every;
            }
            _ = tokio::time::sleep_until(deadline) => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                let left: Vec<(String, String)> =
                    in_flight.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
                for (run_id, owner_id) in left {
                    match flujo_server::pool::requeue(&store, &run_id, &owner_id).await {
                        Ok(()) => errln!("worker: run {run_id} put back on its queue"),
                        Err(e) => errln!("worker: run {run_id} could not be put back ({e}); its lease will expire"),
                    }
                }
            }
        }
    }
    if let Some(ev) = &shadow {
        crate::shadow::finish(ev).await;
    }
    if let Err(e) = registration.remove(&store).await {
        errln!("worker: cannot remove its registration: {e}");
    }
    Ok(EXIT_OK)
}

/// Records the worker's heartbeat with the runs in flight; a failure is reported, not fatal.
async fn beat(registration: &Registration, store: &Arc<dyn Store>, in_flight: &InFlight) {
    let running: Vec<String> = in_flight.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
    if let Err(e) = registration.beat(store, running).await {
        errln!("worker: cannot record its heartbeat: {e}");
    }
}

/// Starts the metrics endpoint of `--metrics-addr` (see the module docs for the address rule).
async fn serve_metrics(addr: &str, store: &Arc<dyn Store>) -> Result<Arc<Metrics>, CliError> {
    let sock: SocketAddr = addr.parse().map_err(|e| {
        CliError::usage("usage_error", format!("--metrics-addr {addr:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:9187)"))
    })?;
    let token = std::env::var("FLUJO_API_TOKEN").ok().filter(|t| !t.is_empty());
    if !sock.ip().is_loopback() && token.is_none() {
        return Err(CliError::usage(
            "usage_error",
            format!(
                "--metrics-addr {sock} is not a loopback address and the metrics endpoint would have no \
                 authentication: set FLUJO_API_TOKEN (scrapers then send `Authorization: Bearer TOKEN`), or use \
                 127.0.0.1"
            ),
        ));
    }
    let metrics = Arc::new(Metrics::new());
    let server =
        flujo_server::metrics::serve(sock, metrics.clone(), Some(store.clone()), token).await.map_err(|e| {
            CliError::usage("metrics_addr_unavailable", format!("--metrics-addr {sock}: cannot listen: {e}"))
        })?;
    errln!("worker: metrics on http://{}/metrics", server.addr);
    Ok(metrics)
}

/// Enqueues the runs of the due ticks of the schedules of `queues`, and says what it did on stderr.
async fn fire_schedules(store: &Arc<dyn Store>, queues: &[String]) {
    match flujo_engine::schedule::fire_due(store.as_ref(), Some(queues), now_ms()).await {
        Ok(report) => {
            for (schedule, run_id) in &report.fired {
                errln!("schedule {schedule}: enqueued run {run_id}");
            }
            if report.skipped > 0 {
                errln!("schedules: {} tick(s) missed by more than their catch-up window were skipped", report.skipped);
            }
            for (schedule, reason) in &report.errors {
                errln!("schedule {schedule}: cannot fire: {reason}");
            }
        }
        Err(e) => errln!("worker: cannot fire schedules: {e}"),
    }
}

/// Deletes the registrations of workers silent for a day (killed without a clean exit).
async fn forget_dead_workers(store: &Arc<dyn Store>) {
    let Ok(entries) = store.list_state(WORKER_PREFIX).await else { return };
    let now = now_ms();
    for (key, entry) in entries {
        let beat = entry.get("heartbeat_at_ms").and_then(serde_json::Value::as_i64).unwrap_or(0);
        if now.saturating_sub(beat) > FORGET_AFTER_MS {
            let _ = store.delete_state(&key).await;
        }
    }
}

/// `flujo worker --status`: the live workers (and, with `all`, the silent ones).
async fn status(store: &Arc<dyn Store>, json: bool, all: bool) -> Result<u8, CliError> {
    let entries = store
        .list_state(WORKER_PREFIX)
        .await
        .map_err(|e| CliError::new("store_error", EXIT_FAILED, format!("cannot list workers: {e}")))?;
    let now = now_ms();
    let mut shown = Vec::new();
    let mut silent = 0usize;
    for (_, mut entry) in entries {
        let live = is_live(&entry, now);
        if !live {
            silent += 1;
        }
        if live || all {
            if let Some(obj) = entry.as_object_mut() {
                obj.insert("live".to_owned(), serde_json::json!(live));
            }
            shown.push(entry);
        }
    }
    if json {
        outln!("{}", serde_json::json!({"workers": shown, "silent": silent}));
        return Ok(EXIT_OK);
    }
    if shown.is_empty() {
        outln!("no live workers");
    } else {
        outln!(
            "{:<14} {:<20} {:>8}  {:<20} {:>9}  {:>10}  {}",
            "WORKER",
            "HOST",
            "PID",
            "QUEUES",
            "RUNNING",
            "SEEN",
            "UP"
        );
    }
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
    let int = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_i64).unwrap_or(0);
    for w in &shown {
        let id = text(w, "id");
        let queues: Vec<&str> = w
            .get("queues")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        let running = w.get("running").and_then(serde_json::Value::as_array).map_or(0, Vec::len);
        let seen = format!("{:.1}s ago", (now - int(w, "heartbeat_at_ms")).max(0) as f64 / 1000.0);
        let up = human_duration((now - int(w, "started_at_ms")).max(0));
        let live = if w.get("live").and_then(serde_json::Value::as_bool) == Some(true) { "" } else { "  (silent)" };
        outln!(
            "{:<14} {:<20} {:>8}  {:<20} {:>9}  {:>10}  {}{}",
            &id[..id.len().min(12)],
            text(w, "host"),
            int(w, "pid"),
            queues.join(","),
            format!("{running}/{}", int(w, "concurrency")),
            seen,
            up,
            live
        );
    }
    if silent > 0 && !all {
        outln!("({silent} silent worker(s) not shown; --all lists them)");
    }
    Ok(EXIT_OK)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the future is
/// first polled: a process that announced itself (its address, its metrics) must already stop cleanly on a
/// SIGTERM sent right after, instead of dying of the signal's default action.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Some(mut term), None) => {
                    term.recv().await;
                }
                (None, Some(mut int)) => {
                    int.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// True when no run of `queues` is queued or running (so nothing can become claimable later).
async fn idle(store: &Arc<dyn Store>, queues: &[String]) -> bool {
    for status in [RunStatus::Queued, RunStatus::Running] {
        match store.list_runs(&RunFilter::new().status(status)).await {
            Ok(runs) => {
                if runs.iter().any(|r| r.queue.as_ref().is_some_and(|q| queues.contains(q))) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// Walks one claimed run to its end (or pause) with a runner built from its stored definition.
async fn walk(
    run_id: String,
    store: Arc<dyn Store>,
    cfg: Config,
    lease: Duration,
    in_flight: InFlight,
    shadow: Option<Arc<flujo_engine::shadow::ShadowEvaluator>>,
    metrics: Option<Arc<Metrics>>,
) -> Finished {
    let fail = |pipeline: String, error: String| Finished {
        run_id: run_id.clone(),
        pipeline,
        status: "error".to_owned(),
        error: Some(error),
    };
    let run = match store.get_run(&run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return fail(String::new(), "the run was deleted".to_owned()),
        Err(e) => return fail(String::new(), e.to_string()),
    };
    let name = run.pipeline_name.clone();
    let Some(def) = run.definition.clone() else {
        return fail(name, "the run has no stored pipeline definition".to_owned());
    };
    let pipeline = match flujo_engine::pipeline_from_definition(&def) {
        Ok(p) => p,
        Err(e) => return fail(name, format!("the stored pipeline definition cannot be read: {e}")),
    };
    let flujo = match registry_for_stored_run(&run)
        .and_then(|reg| runner_builder(pipeline, store.clone(), reg, &cfg, None))
        .map(|b| match &metrics {
            Some(m) => b.telemetry(m.clone()),
            None => b,
        })
        .and_then(|b| b.lease(lease).build().map_err(build_error))
    {
        Ok(f) => f,
        Err(e) => return fail(name, format!("[{}] {}", e.kind, e.message)),
    };
    in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(run_id.clone(), flujo.owner().id.clone());
    let input = run.input.clone();
    let outcome = flujo.resume_with(&run_id, ResumeRequest::default().with_stored_run(run)).await;
    if let (Some(ev), Ok(result)) = (&shadow, &outcome) {
        ev.observe(result, &input).await;
    }
    in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&run_id);
    match outcome {
        Ok(result) => Finished {
            run_id: run_id.clone(),
            pipeline: name,
            status: result.status.as_str().to_owned(),
            error: result.error.map(|e| format!("[{}] {}", e.kind, e.message)),
        },
        Err(e) => fail(name, format!("[{}] {e}", e.kind())),
    }
}

fn report(done: Result<Finished, tokio::task::JoinError>, json: bool) {
    let Ok(f) = done else { return };
    if json {
        outln!(
            "{}",
            serde_json::json!({"run_id": f.run_id, "pipeline": f.pipeline, "status": f.status, "error": f.error})
        );
    } else {
        match &f.error {
            Some(e) => errln!("run {} ({}): {}: {e}", f.run_id, f.pipeline, f.status),
            None => errln!("run {} ({}): {}", f.run_id, f.pipeline, f.status),
        }
    }
}
