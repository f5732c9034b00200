//! Prometheus metrics: what the runs of this process did (runs by pipeline and outcome, step latency by kind,
//! model tokens and cost by provider and model, budget refusals, governance denials), how long the store
//! takes to commit, and — read from the store when scraped — the depth of each queue and its live workers.
//!
//! [`Metrics`] is a [`Telemetry`]: install it on a runner (`FlujoRuntimeBuilder::telemetry`, with [`tee`]
//! when the runner has another telemetry too) and it counts the [`RunEvent`]s of every run. The hot path is
//! atomics only: each labelled metric is a [`Family`] of values in a fixed, append-only table of
//! `OnceLock` slots (no lock is taken to find or bump a value; a label set's slot is filled once, the first
//! time it is seen), and histograms have fixed buckets. A family holds at most [`LABEL_SETS_PER_FAMILY`]
//! label sets; later ones are counted under the label value `_other`, so a flood of pipeline or model
//! names cannot grow memory or the scrape without bound. [`Metrics::wrap_store`] times the store's commits.
//! [`Metrics::render`] writes the text exposition format 0.0.4; [`router`] serves it as `GET /metrics`,
//! and [`serve`] runs a small standalone server (`flujo worker --metrics-addr`). The metrics are listed in
//! `docs/metrics.md`.

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flujo_core::{RunEvent, RunFilter, RunStatus, StepStatus, Store, Telemetry};
use serde_json::Value;

mod store;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The most label sets one metric family keeps; further label sets are counted under `_other`.
pub const LABEL_SETS_PER_FAMILY: usize = 1000;

/// The most queued runs a scrape reads to compute `flujo_queue_depth` (the store has no count query): a
/// deeper backlog is reported as this many in all, and `flujo_queue_depth_capped` says so.
pub const QUEUE_SCAN_LIMIT: usize = 10_000;

/// How long a scrape waits for each store query before it leaves the queue metrics out.
const STORE_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bucket upper bounds of `flujo_step_duration_seconds`: steps range from a transform (microseconds) to
/// a long model call or a loop of them (minutes).
pub const STEP_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Bucket upper bounds of `flujo_store_commit_seconds`: a commit is sub-millisecond in memory, a few
/// milliseconds on SQLite or Postgres, and slow only when something is wrong.
pub const COMMIT_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A monotonically increasing sum of floats (an `f64` kept as bits in an atomic).
#[derive(Debug, Default)]
pub struct FloatCounter(AtomicU64);

impl FloatCounter {
    /// Adds `v` (ignored unless finite and positive: a counter never goes down).
    pub fn add(&self, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            return;
        }
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((f64::from_bits(b) + v).to_bits()));
    }
    /// The sum so far.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A histogram with fixed buckets: one counter per bucket (the last one past every bound, `+Inf`) and the
/// sum of the observed values. The count is the sum of the buckets, so a scrape never shows a count that
/// disagrees with its `+Inf` bucket.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum: FloatCounter,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: FloatCounter::default(),
        }
    }
    /// Records one value (a negative or NaN value counts as 0).
    pub fn observe(&self, v: f64) {
        let v = if v.is_nan() || v < 0.0 { 0.0 } else { v };
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.add(v);
    }
    /// The bucket bounds with their cumulative counts (`le` semantics), the `+Inf` one last, and the sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64) {
        let mut acc = 0u64;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Ordering::Relaxed);
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), acc));
        }
        (out, self.sum.get())
    }
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// One label set of a [`Family`] and its value.
#[derive(Debug)]
struct Entry<V> {
    labels: Box<[Box<str>]>,
    value: V,
}

impl<V> Entry<V> {
    fn matches(&self, labels: &[&str]) -> bool {
        self.labels.len() == labels.len() && self.labels.iter().zip(labels).all(|(a, b)| **a == **b)
    }
}

/// The values of one metric by label set: an open-addressed table of `OnceLock` slots, twice as many as
/// the label sets it may hold, so a lookup ends at the value or at an empty slot after a few probes. A
/// slot is written once and never moved, so lookups take no lock; two threads seeing a new label set at
/// once race for a slot through `OnceLock` (the loser probes on).
pub struct Family<V> {
    names: &'static [&'static str],
    slots: Box<[OnceLock<Entry<V>>]>,
    used: AtomicUsize,
    cap: usize,
    overflow: OnceLock<Entry<V>>,
    make: fn() -> V,
}

impl<V> Family<V> {
    /// A family with these label names, holding up to `cap` label sets, making values with `make`.
    pub fn new(names: &'static [&'static str], cap: usize, make: fn() -> V) -> Self {
        let size = (cap.max(1) * 2).next_power_of_two();
        Family {
            names,
            slots: (0..size).map(|_| OnceLock::new()).collect(),
            used: AtomicUsize::new(0),
            cap: cap.max(1),
            overflow: OnceLock::new(),
            make,
        }
    }

    /// The value of this label set (one value per label name, in order), created at its first use.
    pub fn get(&self, labels: &[&str]) -> &V {
        let mut h = DefaultHasher::new();
        labels.hash(&mut h);
        let mask = self.slots.len() - 1;
        let mut i = (h.finish() as usize) & mask;
        for _ in 0..self.slots.len() {
            let slot = &self.slots[i];
            let entry = match slot.get() {
                Some(e) => e,
                None => {
                    if self.used.load(Ordering::Relaxed) >= self.cap {
                        return self.other();
                    }
                    let mut mine = false;
                    let e = slot.get_or_init(|| {
                        mine = true;
                        Entry { labels: labels.iter().map(|l| Box::from(*l)).collect(), value: (self.make)() }
                    });
                    if mine {
                        self.used.fetch_add(1, Ordering::Relaxed);
                    }
                    e
                }
            };
            if entry.matches(labels) {
                return &entry.value;
            }
            i = (i + 1) & mask;
        }
        self.other()
    }

    fn other(&self) -> &V {
        &self
            .overflow
            .get_or_init(|| Entry {
                labels: self.names.iter().map(|_| Box::from("_other")).collect(),
                value: (self.make)(),
            })
            .value
    }

    /// Every label set and its value, sorted by labels (the `_other` set last).
    pub fn entries(&self) -> Vec<(&[Box<str>], &V)> {
        let mut out: Vec<_> = self.slots.iter().filter_map(OnceLock::get).map(|e| (&*e.labels, &e.value)).collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(self.overflow.get().map(|e| (&*e.labels, &e.value)));
        out
    }
}

/// Model usage of one `provider:model`.
#[derive(Debug, Default)]
pub struct ModelUsage {
    /// Prompt (input) tokens.
    pub prompt: Counter,
    /// Completion (output) tokens.
    pub completion: Counter,
    /// Cost in USD.
    pub cost_usd: FloatCounter,
}

/// The store operations timed by [`Metrics::wrap_store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitOp {
    /// A journal append (fenced or not): one step execution's record.
    Append,
    /// A new run's row.
    CreateRun,
    /// A run row's compare-and-set update (status changes).
    UpdateRun,
}

impl CommitOp {
    const ALL: [CommitOp; 3] = [CommitOp::Append, CommitOp::CreateRun, CommitOp::UpdateRun];

    /// The `op` label: `append`, `create_run` or `update_run`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitOp::Append => "append",
            CommitOp::CreateRun => "create_run",
            CommitOp::UpdateRun => "update_run",
        }
    }
}

/// The metrics of one process. Cheap to update from any thread; see the module docs.
pub struct Metrics {
    start_time_s: f64,
    runs_started: Family<Counter>,
    runs_resumed: Family<Counter>,
    runs_finished: Family<Counter>,
    run_errors: Family<Counter>,
    budget_refusals: Family<Counter>,
    governance_denials: Family<Counter>,
    steps: Family<Counter>,
    step_seconds: Family<Histogram>,
    models: Family<ModelUsage>,
    commit_seconds: [Histogram; 3],
    commit_errors: [Counter; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("start_time_s", &self.start_time_s).finish_non_exhaustive()
    }
}

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

impl Metrics {
    /// Empty metrics; the process start time is now.
    pub fn new() -> Self {
        let start_time_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let cap = LABEL_SETS_PER_FAMILY;
        Metrics {
            start_time_s,
            runs_started: Family::new(&["pipeline"], cap, Counter::default),
            runs_resumed: Family::new(&["pipeline"], cap, Counter::default),
            runs_finished: Family::new(&["pipeline", "status"], cap, Counter::default),
            run_errors: Family::new(&["pipeline", "kind"], cap, Counter::default),
            budget_refusals: Family::new(&["pipeline"], cap, Counter::default),
            governance_denials: Family::new(&["pipeline"], cap, Counter::default),
            steps: Family::new(&["kind", "status"], cap, Counter::default),
            step_seconds: Family::new(&["kind"], cap, step_histogram),
            models: Family::new(&["provider", "model"], cap, ModelUsage::default),
            commit_seconds: CommitOp::ALL.map(|_| Histogram::new(COMMIT_BUCKETS)),
            commit_errors: CommitOp::ALL.map(|_| Counter::default()),
        }
    }

    /// Counts a run cancelled outside a walk (the API's cancel): `flujo_runs_finished_total{status="cancelled"}`.
    pub fn run_cancelled(&self, pipeline: &str) {
        self.runs_finished.get(&[pipeline, RunStatus::Cancelled.as_str()]).inc();
    }

    /// Records one store operation that took `elapsed` (`ok: false` when it failed).
    pub fn observe_commit(&self, op: CommitOp, elapsed: Duration, ok: bool) {
        let i = op as usize;
        self.commit_seconds[i].observe(elapsed.as_secs_f64());
        if !ok {
            self.commit_errors[i].inc();
        }
    }

    /// `store`, with its commits timed into `flujo_store_commit_seconds{op}`; every other call is passed
    /// through unchanged (every method of every store trait, defaulted ones included). Wrap once and give
    /// the wrapped store to every runner of the process: the engine tells walks of the same run apart by
    /// store instance, so a run walked through the wrapper and through the bare store would look like two.
    pub fn wrap_store(self: &Arc<Self>, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(store::TimedStore::new(store, self.clone()))
    }

    /// The walks started of `pipeline` so far (for tests and embedders).
    pub fn runs_started(&self, pipeline: &str) -> u64 {
        self.runs_started.get(&[pipeline]).get()
    }

    /// The walks of `pipeline` that ended with `status` so far.
    pub fn runs_finished(&self, pipeline: &str, status: RunStatus) -> u64 {
        self.runs_finished.get(&[pipeline, status.as_str()]).get()
    }

    /// The live step executions of `kind` observed so far.
    pub fn steps_observed(&self, kind: &str) -> u64 {
        self.step_seconds.get(&[kind]).count()
    }

    /// The whole registry in the Prometheus text exposition format 0.0.4. With a store, the queue and
    /// worker gauges are read from it first (bounded: [`QUEUE_SCAN_LIMIT`] queued runs at most, each
    /// query given 5 s).
    pub async fn render(&self, store: Option<&Arc<dyn Store>>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.render_process(&mut out);
        self.render_runs(&mut out);
        if let Some(store) = store {
            render_store(&mut out, store).await;
        }
        out
    }

    fn render_process(&self, out: &mut String) {
        header(out, "flujo_build_info", "gauge", "The version of Flujo this process runs (always 1).");
        sample(out, "flujo_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        header(
            out,
            "process_start_time_seconds",
            "gauge",
            "When this process started, in seconds since the Unix epoch.",
        );
        sample(out, "process_start_time_seconds", &[], self.start_time_s);
    }

    fn render_runs(&self, out: &mut String) {
        counters(
            out,
            &self.runs_started,
            "flujo_runs_started_total",
            "Walks of runs started by this process: new runs, resumes, and queued runs claimed by a worker.",
        );
        counters(
            out,
            &self.runs_resumed,
            "flujo_runs_resumed_total",
            "Walks that continued a stored run (resumes, claims).",
        );
        counters(
            out,
            &self.runs_finished,
            "flujo_runs_finished_total",
            "Walks of runs that ended, by the run's status after the walk: completed, failed, paused, cancelled.",
        );
        counters(
            out,
            &self.run_errors,
            "flujo_run_errors_total",
            "Failed runs by error kind (step_failed, usage_limit_exceeded, ...).",
        );
        counters(
            out,
            &self.budget_refusals,
            "flujo_budget_refusals_total",
            "Runs stopped because a call did not fit the budget (usage_limit_exceeded).",
        );
        counters(
            out,
            &self.governance_denials,
            "flujo_governance_denials_total",
            "Runs stopped because a governance policy denied a call (governance_denied).",
        );
        counters(out, &self.steps, "flujo_steps_total", "Step executions run live (not replayed), by kind and status.");
        header(out, "flujo_step_duration_seconds", "histogram", "Duration of live step executions, by kind.");
        for (labels, h) in self.step_seconds.entries() {
            histogram(out, "flujo_step_duration_seconds", &zip(self.step_seconds.names, labels), h);
        }
        let models = self.models.entries();
        header(
            out,
            "flujo_model_tokens_total",
            "counter",
            "Model tokens used by live model steps, by provider, model and type.",
        );
        for (labels, u) in &models {
            let base = zip(self.models.names, labels);
            for (kind, n) in [("prompt", u.prompt.get()), ("completion", u.completion.get())] {
                let mut l = base.clone();
                l.push(("type", kind));
                sample(out, "flujo_model_tokens_total", &l, n as f64);
            }
        }
        header(out, "flujo_model_cost_usd_total", "counter", "Cost in USD of live model steps, by provider and model.");
        for (labels, u) in &models {
            sample(out, "flujo_model_cost_usd_total", &zip(self.models.names, labels), u.cost_usd.get());
        }
        header(out, "flujo_store_commit_seconds", "histogram", "Duration of store commits, by operation.");
        for op in CommitOp::ALL {
            histogram(out, "flujo_store_commit_seconds", &[("op", op.as_str())], &self.commit_seconds[op as usize]);
        }
        header(out, "flujo_store_commit_errors_total", "counter", "Store commits that failed, by operation.");
        for op in CommitOp::ALL {
            sample(
                out,
                "flujo_store_commit_errors_total",
                &[("op", op.as_str())],
                self.commit_errors[op as usize].get() as f64,
            );
        }
    }
}

impl Telemetry for Metrics {
    fn on_event(&self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted { pipeline, resumed, .. } => {
                self.runs_started.get(&[pipeline]).inc();
                if *resumed {
                    self.runs_resumed.get(&[pipeline]).inc();
                }
            }
            RunEvent::StepFinished { result, replayed: false, .. } => {
                let status = match result.status {
                    StepStatus::Completed => "completed",
                    StepStatus::Failed => "failed",
                };
                self.steps.get(&[&result.kind, status]).inc();
                self.step_seconds.get(&[&result.kind]).observe(result.latency_ms / 1000.0);
                // Model steps, tool steps and agentic loops name their model; composites that contain model
                // steps do not (their children are counted), and a step whose fallback ran carries the
                // fallback's usage, which the fallback's own event counts.
                let fell_back = result.metadata.get("fallback_triggered") == Some(&Value::Bool(true));
                if let (Some(Value::String(target)), false) =
                    (result.metadata.get(flujo_engine::executor::META_MODEL), fell_back)
                {
                    let (provider, model) = target.split_once(':').unwrap_or((target.as_str(), ""));
                    let u = self.models.get(&[provider, model]);
                    u.prompt.add(result.tokens.prompt);
                    u.completion.add(result.tokens.completion);
                    u.cost_usd.add(result.cost_usd);
                }
            }
            RunEvent::RunFinished { pipeline, status, error, .. } => {
                self.runs_finished.get(&[pipeline, status.as_str()]).inc();
                if let Some(e) = error {
                    self.run_errors.get(&[pipeline, &e.kind]).inc();
                    match e.kind.as_str() {
                        "usage_limit_exceeded" => self.budget_refusals.get(&[pipeline]).inc(),
                        "governance_denied" => self.governance_denials.get(&[pipeline]).inc(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sends every event to both telemetries, `a` first (`FlujoRuntimeBuilder::telemetry` keeps one).
pub fn tee(a: Arc<dyn Telemetry>, b: Arc<dyn Telemetry>) -> Arc<dyn Telemetry> {
    Arc::new(Tee(a, b))
}

struct Tee(Arc<dyn Telemetry>, Arc<dyn Telemetry>);

impl Telemetry for Tee {
    fn on_event(&self, event: &RunEvent) {
        self.0.on_event(event);
        self.1.on_event(event);
    }
}

use crate::registration::{is_live as worker_is_live, WORKER_PREFIX};

/// The queue gauges, read from the store now.
async fn render_store(out: &mut String, store: &Arc<dyn Store>) {
    let t0 = std::time::Instant::now();
    let mut ok = true;
    let queued = tokio::time::timeout(
        STORE_SCRAPE_TIMEOUT,
        store.list_runs(&RunFilter::new().status(RunStatus::Queued).limit(QUEUE_SCAN_LIMIT)),
    )
    .await;
    match queued {
        Ok(Ok(runs)) => {
            let mut depth: std::collections::BTreeMap<&str, u64> = Default::default();
            for r in &runs {
                if let Some(q) = &r.queue {
                    *depth.entry(q.as_str()).or_default() += 1;
                }
            }
            header(out, "flujo_queue_depth", "gauge", "Runs waiting in each queue (status queued).");
            for (q, n) in depth {
                sample(out, "flujo_queue_depth", &[("queue", q)], n as f64);
            }
            header(
                out,
                "flujo_queue_depth_capped",
                "gauge",
                "1 when the scrape stopped counting queued runs at its limit (the depths are lower bounds).",
            );
            sample(out, "flujo_queue_depth_capped", &[], if runs.len() >= QUEUE_SCAN_LIMIT { 1.0 } else { 0.0 });
        }
        _ => ok = false,
    }
    match tokio::time::timeout(STORE_SCRAPE_TIMEOUT, store.list_state(WORKER_PREFIX)).await {
        Ok(Ok(entries)) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let mut workers: std::collections::BTreeMap<String, u64> = Default::default();
            for (_, entry) in entries.iter().filter(|(_, e)| worker_is_live(e, now)) {
                let queues = entry.get("queues").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                for q in queues.iter().filter_map(Value::as_str) {
                    *workers.entry(q.to_owned()).or_default() += 1;
                }
            }
            header(
                out,
                "flujo_workers",
                "gauge",
                "Live workers (heartbeat younger than their lease) taking runs from each queue.",
            );
            for (q, n) in workers {
                sample(out, "flujo_workers", &[("queue", &q)], n as f64);
            }
        }
        // A store that keeps no system state has no workers.
        Ok(Err(flujo_core::StoreError::Unavailable(_))) => {}
        _ => ok = false,
    }
    header(out, "flujo_store_scrape_ok", "gauge", "1 when the queue and worker gauges could be read from the store.");
    sample(out, "flujo_store_scrape_ok", &[], if ok { 1.0 } else { 0.0 });
    header(out, "flujo_store_scrape_seconds", "gauge", "How long reading the queue and worker gauges took.");
    sample(out, "flujo_store_scrape_seconds", &[], t0.elapsed().as_secs_f64());
}

fn zip<'a>(names: &'static [&'static str], values: &'a [Box<str>]) -> Vec<(&'static str, &'a str)> {
    names.iter().copied().zip(values.iter().map(|v| &**v)).collect()
}

fn counters(out: &mut String, family: &Family<Counter>, name: &str, help: &str) {
    header(out, name, "counter", help);
    for (labels, c) in family.entries() {
        sample(out, name, &zip(family.names, labels), c.get() as f64);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let (buckets, sum) = h.snapshot();
    let bucket_name = format!("{name}_bucket");
    let mut count = 0;
    for (le, n) in buckets {
        let le = format_value(le);
        let mut l = labels.to_vec();
        l.push(("le", &le));
        sample(out, &bucket_name, &l, n as f64);
        count = n;
    }
    sample(out, &format!("{name}_sum"), labels, sum);
    sample(out, &format!("{name}_count"), labels, count as f64);
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

/// A sample value as the format writes floats: `+Inf`, `-Inf`, `NaN`, or the shortest decimal that
/// reads back as the same `f64`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// A label value escaped for the text format: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A HELP text escaped for the text format: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `GET /metrics`: the registry in the text format, with the queue and worker gauges read from `store`.
/// Carries no authentication of its own: the host puts it behind its auth (as `flujo serve` does) or
/// serves it on loopback (see [`serve`]).
pub fn router<S>(metrics: Arc<Metrics>, store: Option<Arc<dyn Store>>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, store) = (metrics.clone(), store.clone());
            async move {
                let body = metrics.render(store.as_ref()).await;
                ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], body)
            }
        }),
    )
}

/// A running standalone metrics server (see [`serve`]); dropping it does not stop the server (it lives as
/// long as its runtime).
#[derive(Debug)]
pub struct MetricsServer {
    /// The address it listens on (the port chosen when asked for port 0).
    pub addr: SocketAddr,
}

/// Serves `GET /metrics` and `GET /healthz` (`{"status":"ok"}`) on `addr`, on a task of the current
/// runtime. With a `token`, `/metrics` needs `Authorization: Bearer TOKEN` (401 otherwise); `/healthz`
/// never does. The caller decides when an address needs a token (`flujo worker` refuses a non-loopback
/// address without `FLUJO_API_TOKEN`).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: Option<Arc<dyn Store>>,
    token: Option<String>,
) -> std::io::Result<MetricsServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let mut app: Router = router(metrics, store);
    if let Some(token) = token {
        let token: Arc<str> = Arc::from(token);
        app = app.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { bearer(&token, req, next).await }
        }));
    }
    let app = app.route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok(MetricsServer { addr })
}

async fn bearer(token: &str, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return next.run(req).await;
    }
    let body = serde_json::json!({"error": {"kind": "unauthorized", "message": "missing or wrong bearer token"}});
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response()
}

/// Compares without an early exit on the first differing byte (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
