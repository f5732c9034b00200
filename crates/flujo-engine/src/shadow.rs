//! Shadow evaluations (SPEC §11): LLM-as-a-judge scores of production runs, taken in the background.
//!
//! A [`ShadowEvaluator`] is told about each finished run ([`ShadowEvaluator::observe`]). A completed run whose
//! id falls in the sample ([`sampled`]: a hash of the run id, so the same run is always in or out) gets one
//! evaluation per scope — the whole run, or each listed step — with an immutable snapshot (input, output,
//! metadata). With the `database` sink each evaluation is first stored `pending` (durable: if this process
//! dies, the next one that opens the store with the same settings takes it over, [`ShadowEvaluator::pick_up`])
//! and then judged on a background task; with the `telemetry` sink it is judged and only reported as a
//! `flujo::shadow_eval` tracing event.
//!
//! The judge is an agent (a model with the rubric as its system prompt and the output schema
//! `{score: 0..1, reason}`); it runs under its own budget (`total_cost_usd_limit`, reserved before each call,
//! separate from every run's quota) and a timeout. Whatever it does — fail, hang, overspend, answer nonsense —
//! the evaluation is marked `failed` with the reason, and nothing about the run changes: its result, exit code
//! and completion are already out when judging starts. [`ShadowEvaluator::drain`] lets a process that is
//! about to exit wait for its evaluations, up to their timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flujo_core::{
    EvaluationRecord, EvaluationStatus, Quota, RunResult, RunStatus, Skill, SkillCall, Store, Usage, UsageLimits,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// `[shadow_eval] scope`: the whole run, or the listed steps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    /// `"run"`.
    Run(String),
    /// Step names.
    Steps(Vec<String>),
}

impl Default for Scope {
    fn default() -> Self {
        Scope::Run("run".to_owned())
    }
}

/// Where results go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sink {
    /// The store's `evaluations` table (durable; `flujo lens evals`).
    #[default]
    Database,
    /// Tracing events only.
    Telemetry,
}

fn default_rate() -> f64 {
    1.0
}

fn default_timeout() -> f64 {
    30.0
}

/// The `[shadow_eval]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ShadowConfig {
    /// Off unless true.
    #[serde(default)]
    pub enabled: bool,
    /// The share of runs judged, 0 to 1 (decided from the run id).
    #[serde(default = "default_rate")]
    pub sample_rate: f64,
    /// The judge: a model (`provider:model`), or an agent of the blueprint (`agents.NAME`; its model and
    /// settings, with the rubric as system prompt when one is given and the score schema as output schema).
    #[serde(default)]
    pub judge: String,
    /// What the judge scores by (its system prompt).
    #[serde(default)]
    pub rubric: Option<String>,
    /// `"run"`, or a list of step names.
    #[serde(default)]
    pub scope: Scope,
    /// The most one judgement may take, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// `database` or `telemetry`.
    #[serde(default)]
    pub sink: Sink,
    /// The judge's own budget for this process, in USD.
    #[serde(default)]
    pub total_cost_usd_limit: Option<f64>,
}

/// The default rubric.
pub const DEFAULT_RUBRIC: &str = "You are a strict reviewer. Score how well the output answers the input: 1 is \
    complete, correct and clear; 0 is wrong or useless. Reply with a JSON object {\"score\": number between 0 \
    and 1, \"reason\": one sentence}.";

impl ShadowConfig {
    /// Reads the `[shadow_eval]` table (as JSON) and checks it; the error names the key.
    pub fn from_json(table: &Value) -> Result<Self, String> {
        let c: ShadowConfig = serde_json::from_value(table.clone()).map_err(|e| format!("[shadow_eval]: {e}"))?;
        if !(c.sample_rate.is_finite() && (0.0..=1.0).contains(&c.sample_rate)) {
            return Err(format!("[shadow_eval] sample_rate must be between 0 and 1, got {}", c.sample_rate));
        }
        flujo_core::limits::duration_from_secs(c.timeout_s).map_err(|e| format!("[shadow_eval] timeout_s {e}"))?;
        if c.enabled && !c.judge.contains(':') && c.judge_agent().is_none() {
            return Err(format!(
                "[shadow_eval] judge must be a model, `provider:model` (e.g. \"openai:gpt-4o-mini\", \"mock:json\"), or \
                 a blueprint agent, `agents.NAME`; got {:?}",
                c.judge
            ));
        }
        if let Scope::Run(s) = &c.scope {
            if s != "run" {
                return Err(format!("[shadow_eval] scope must be \"run\" or a list of step names, got {s:?}"));
            }
        }
        if let Some(l) = c.total_cost_usd_limit {
            if !(l.is_finite() && l >= 0.0) {
                return Err(format!("[shadow_eval] total_cost_usd_limit must be a non-negative number, got {l}"));
            }
        }
        Ok(c)
    }

    /// The agent's name when the judge is `agents.NAME`.
    pub fn judge_agent(&self) -> Option<&str> {
        self.judge.strip_prefix("agents.").filter(|n| !n.is_empty() && !n.contains(':'))
    }

    /// The judge's agent settings (for `ModelRegistry::resolve`): the rubric and the output schema.
    pub fn judge_settings(&self) -> Value {
        self.judge_settings_over(&Value::Null)
    }

    /// A blueprint agent's `settings` made a judge's: the output schema is the score's, the rubric (when
    /// given, else the agent's own system prompt, else the default rubric) is the system prompt, no retries.
    pub fn judge_settings_over(&self, agent: &Value) -> Value {
        let mut settings = agent.as_object().cloned().unwrap_or_default();
        let own_prompt = settings.get("system_prompt").and_then(Value::as_str).map(str::to_owned);
        let prompt = self.rubric.clone().or(own_prompt).unwrap_or_else(|| DEFAULT_RUBRIC.to_owned());
        settings.remove("system_prompt_file");
        settings.remove("model");
        settings.remove("tools");
        settings.insert("system_prompt".into(), Value::String(prompt));
        settings.insert(
            "output_schema".into(),
            json!({
                "type": "object",
                "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}, "reason": {"type": "string"}},
                "required": ["score", "reason"]
            }),
        );
        settings.insert("max_retries".into(), json!(0));
        Value::Object(settings)
    }
}

/// Whether run `run_id` is in a sample of `rate` (0 to 1): the first 8 bytes of the id's blake3 hash as a
/// fraction, below the rate. The same id always gives the same answer.
pub fn sampled(run_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let h = blake3::hash(run_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(b) as f64 / u64::MAX as f64) < rate
}

/// Counters of an evaluator.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct ShadowStats {
    /// Runs that fell in the sample.
    pub sampled: u64,
    /// Evaluations scheduled (or picked up).
    pub queued: u64,
    /// Evaluations judged.
    pub succeeded: u64,
    /// Evaluations that failed (judge error, timeout, budget, bad answer).
    pub failed: u64,
    /// Total judging time of the finished ones, in milliseconds.
    pub latency_ms: u64,
}

#[derive(Default)]
struct Counters {
    sampled: AtomicU64,
    queued: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    latency_ms: AtomicU64,
}

/// Judges sampled runs in the background (see the module documentation).
pub struct ShadowEvaluator {
    config: ShadowConfig,
    judge: Arc<dyn Skill>,
    store: Option<Arc<dyn Store>>,
    quota: Arc<Quota>,
    owner: String,
    tasks: Mutex<JoinSet<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ShadowEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowEvaluator").field("judge", &self.config.judge).field("sink", &self.config.sink).finish()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ShadowEvaluator {
    /// An evaluator with `config`, judging with `judge` (resolved with [`ShadowConfig::judge_settings`]), keeping
    /// results in `store` (the `database` sink needs one).
    pub fn new(config: ShadowConfig, judge: Arc<dyn Skill>, store: Option<Arc<dyn Store>>) -> Self {
        let mut limits = UsageLimits::new();
        if let Some(l) = config.total_cost_usd_limit {
            limits = limits.with_cost_limit(l);
        }
        ShadowEvaluator {
            config,
            judge,
            store,
            quota: Arc::new(Quota::new(limits)),
            owner: format!("shadow-{}", uuid::Uuid::now_v7().simple()),
            tasks: Mutex::new(JoinSet::new()),
            counters: Arc::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ShadowStats {
        let c = &self.counters;
        ShadowStats {
            sampled: c.sampled.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            latency_ms: c.latency_ms.load(Ordering::Relaxed),
        }
    }

    fn timeout(&self) -> Duration {
        flujo_core::limits::duration_from_secs(self.config.timeout_s).unwrap_or(Duration::from_secs(30))
    }

    /// The evaluations of a finished run (none unless it completed and is in the sample).
    pub fn evaluations_of(&self, result: &RunResult, input: &Value) -> Vec<EvaluationRecord> {
        if !self.config.enabled
            || result.status != RunStatus::Completed
            || !sampled(&result.run_id, self.config.sample_rate)
        {
            return Vec::new();
        }
        let now = now_ms();
        let judge = &self.config.judge;
        match &self.config.scope {
            Scope::Run(_) => {
                let snapshot = json!({"input": input, "output": result.output,
                    "metadata": {"pipeline": result.pipeline, "total_tokens": result.total_tokens,
                                 "total_cost_usd": result.total_cost_usd, "steps": result.step_history.len()}});
                vec![EvaluationRecord::pending(&result.run_id, &result.pipeline, None, judge, snapshot, now)]
            }
            Scope::Steps(names) => result
                .step_history
                .iter()
                .filter(|s| names.contains(&s.name))
                .map(|s| {
                    let snapshot = json!({"input": input, "step": s.name, "output": s.output, "metadata": s.metadata});
                    EvaluationRecord::pending(&result.run_id, &result.pipeline, Some(&s.path), judge, snapshot, now)
                })
                .collect(),
        }
    }

    /// Schedules the evaluations of a finished run and returns at once; judging happens on background tasks.
    /// With the `database` sink each one is stored `pending` first (awaited, so it survives this process).
    pub async fn observe(self: &Arc<Self>, result: &RunResult, input: &Value) {
        let evaluations = self.evaluations_of(result, input);
        if evaluations.is_empty() {
            return;
        }
        self.counters.sampled.fetch_add(1, Ordering::Relaxed);
        for mut e in evaluations {
            if let (Sink::Database, Some(store)) = (self.config.sink, &self.store) {
                e.owner = Some(self.owner.clone());
                e.lease_expires_at_ms = Some(now_ms() + self.timeout().as_millis() as i64 + 5_000);
                match store.create_evaluation(&e).await {
                    Ok(true) => {}
                    Ok(false) => continue, // already scheduled (a resumed run observed twice)
                    Err(err) => {
                        tracing::warn!(target: "flujo::shadow_eval", run_id = e.run_id.as_str(), error = %err,
                            "cannot store the evaluation; it is judged but not kept");
                    }
                }
            }
            self.spawn(e);
        }
    }

    /// Takes over up to `limit` pending evaluations left by other (dead) processes and judges them in the
    /// background; returns how many.
    pub async fn pick_up(self: &Arc<Self>, limit: usize) -> usize {
        let (Sink::Database, Some(store), true) = (self.config.sink, &self.store, self.config.enabled) else {
            return 0;
        };
        let now = now_ms();
        let lease = now + self.timeout().as_millis() as i64 + 5_000;
        match store.claim_evaluations(&self.owner, now, lease, limit).await {
            Ok(claimed) => {
                let n = claimed.len();
                for e in claimed {
                    self.spawn(e);
                }
                n
            }
            Err(err) => {
                tracing::warn!(target: "flujo::shadow_eval", error = %err, "cannot pick up pending evaluations");
                0
            }
        }
    }

    fn spawn(self: &Arc<Self>, e: EvaluationRecord) {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget finished tasks, so a long-lived worker's set stays as small as its evaluations in flight.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move { this.judge_one(e).await });
    }

    async fn judge_one(&self, mut e: EvaluationRecord) {
        let t0 = Instant::now();
        e.attempts += 1;
        let outcome = self.call_judge(&e).await;
        let latency = t0.elapsed();
        e.latency_ms = Some(latency.as_secs_f64() * 1000.0);
        e.updated_at_ms = now_ms();
        e.owner = None;
        e.lease_expires_at_ms = None;
        match outcome {
            Ok((score, reason, tokens, cost)) => {
                e.status = EvaluationStatus::Done;
                e.score = Some(score);
                e.reason = Some(reason);
                e.tokens = tokens;
                e.cost_usd = cost;
                self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Err((reason, tokens, cost)) => {
                e.status = EvaluationStatus::Failed;
                e.reason = Some(reason);
                e.tokens = tokens;
                e.cost_usd = cost;
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counters.latency_ms.fetch_add(latency.as_millis() as u64, Ordering::Relaxed);
        tracing::info!(target: "flujo::shadow_eval", run_id = e.run_id.as_str(), path = e.path.as_deref().unwrap_or("run"),
            judge = e.judge.as_str(), status = e.status.as_str(), score = e.score, reason = e.reason.as_deref());
        if let (Sink::Database, Some(store)) = (self.config.sink, &self.store) {
            if let Err(err) = store.update_evaluation(&e).await {
                tracing::warn!(target: "flujo::shadow_eval", run_id = e.run_id.as_str(), error = %err,
                    "cannot store the evaluation's result");
            }
        }
    }

    /// Calls the judge under the budget and the timeout: `(score, reason, tokens, cost)` or why it failed.
    async fn call_judge(&self, e: &EvaluationRecord) -> Result<(f64, String, u64, f64), (String, u64, f64)> {
        let prompt = format!(
            "Judge this {}.\n\n{}",
            e.path.as_ref().map_or("run".to_owned(), |p| format!("step (path {p})")),
            serde_json::to_string_pretty(&e.snapshot).unwrap_or_default()
        );
        let input = Value::String(prompt);
        let planned = self.judge.estimate(&input).unwrap_or_default();
        let reservation =
            self.quota.reserve(planned).map_err(|err| (format!("over the shadow evaluation budget: {err}"), 0, 0.0))?;
        let mut call = SkillCall::new(input);
        call.run_id = Arc::from(e.run_id.as_str());
        call.path = Arc::from(format!("shadow_eval:{}", e.path.as_deref().unwrap_or("run")).as_str());
        call.step = Arc::from("shadow_eval");
        call.idempotency_key = Arc::from(e.evaluation_id.as_str());
        let res = tokio::time::timeout(self.timeout(), self.judge.call(call)).await;
        let (out, actual) = match res {
            Err(_) => {
                self.quota.reconcile(reservation, Usage::default());
                return Err((format!("the judge did not answer within {}s", self.config.timeout_s), 0, 0.0));
            }
            Ok(Err(err)) => {
                let used = Usage { cost_usd: err.cost_usd, tokens: err.tokens.total() };
                self.quota.reconcile(reservation, used);
                return Err((format!("the judge failed: {}", err.message), used.tokens, used.cost_usd));
            }
            Ok(Ok(o)) => {
                let used = Usage { cost_usd: o.cost_usd, tokens: o.tokens.total() };
                (o, used)
            }
        };
        self.quota.reconcile(reservation, actual);
        let score = out.output.get("score").and_then(Value::as_f64).filter(|s| (0.0..=1.0).contains(s));
        match score {
            Some(score) => {
                let reason = out.output.get("reason").and_then(Value::as_str).unwrap_or_default().to_owned();
                Ok((score, reason, actual.tokens, actual.cost_usd))
            }
            None => Err((
                format!("the judge's answer has no score between 0 and 1: {}", out.output),
                actual.tokens,
                actual.cost_usd,
            )),
        }
    }

    /// Waits for the evaluations in flight, at most `limit`; those still running are left `pending` in the
    /// store (their lease expires and another process takes them over). Returns how many were left.
    pub async fn drain(&self, limit: Duration) -> usize {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = tokio::time::Instant::now() + limit;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(_) => {}
                Err(_) => {
                    let left = tasks.len();
                    tasks.abort_all();
                    return left;
                }
            }
        }
        0
    }

    /// The longest a process should wait for its evaluations before exiting (their timeout, plus a margin).
    pub fn drain_limit(&self) -> Duration {
        self.timeout() + Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_near_the_rate() {
        let ids: Vec<String> = (0..1000).map(|i| format!("run-{i:04}")).collect();
        assert_eq!(ids.iter().filter(|id| sampled(id, 0.0)).count(), 0);
        assert_eq!(ids.iter().filter(|id| sampled(id, 1.0)).count(), 1000);
        let n = ids.iter().filter(|id| sampled(id, 0.3)).count();
        assert!((250..=350).contains(&n), "{n} of 1000 at 0.3");
        assert!(ids.iter().all(|id| sampled(id, 0.3) == sampled(id, 0.3)));
    }

    #[test]
    fn settings_are_checked() {
        let ok = ShadowConfig::from_json(&json!({"enabled": true, "judge": "mock:json", "scope": ["draft"]}));
        assert!(ok.is_ok(), "{ok:?}");
        for (bad, says) in [
            (json!({"enabled": true, "judge": "mock:json", "sample_rate": 1.5}), "sample_rate"),
            (json!({"enabled": true, "judge": "writer"}), "provider:model"),
            (json!({"enabled": true, "judge": "agents."}), "agents.NAME"),
            (json!({"enabled": true, "judge": "mock:json", "scope": "steps"}), "scope"),
            (json!({"enabled": true, "judge": "mock:json", "timeout_s": -1}), "timeout_s"),
            (json!({"enabled": true, "judge": "mock:json", "sink": "s3"}), "unknown variant `s3`"),
            (json!({"enabled": true, "judge": "mock:json", "typo": 1}), "typo"),
        ] {
            let err = ShadowConfig::from_json(&bad).err().unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
