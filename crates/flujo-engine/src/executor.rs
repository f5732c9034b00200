//! The executor core: walks the step tree, replays committed records, runs live steps through their
//! policies, applies context effects, handles fallbacks and journals one record per finished execution.
//!
//! Replay model (SPEC §2): a step whose path has a replayable record is not executed — its patch and output
//! are applied and the walk moves on. A record is replayable when it completed, or when it failed in the
//! current resume generation (resuming a *failed* run bumps the generation, so the failed step runs again).
//! A failed record marked `fallback_pending` means the primary already failed: replay re-applies it and
//! continues with the fallback, so the primary never runs twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flujo_core::journal::{GENESIS_HASH, META_FALLBACK_PENDING};
use flujo_core::{
    CallKind, Clock, Context, Fallback, Interrupt, JournalRecord, PatchOp, Quota, RunEvent, Skill, SkillCall,
    SkillOutput, Step, StepResult, StepStatus, Store, StoreError, Telemetry, TokenUsage, Usage, Value,
};
use flujo_template::{Scope, UndefinedMode};
use futures::future::BoxFuture;

use crate::cache::CacheBackend;
use crate::policy::{ExecutionDispatcher, ExecutionFrame, PolicyOutcome};
use crate::prepare::Prepared;

/// Metadata key on the record of a step whose failure closed a fallback cycle (the run stopped there).
pub const META_INFINITE_FALLBACK: &str = "infinite_fallback";

/// Metadata key (value: the interrupt's kind) on the failed record of a step the budget stopped after it had
/// paid for work: the record keeps that work (outputs, tokens, cost), no fallback runs, and the run stops.
pub const META_STOPPED: &str = "stopped_by";

/// Maximum length of a fallback chain before it is reported as `InfiniteFallback`.
pub const MAX_FALLBACK_DEPTH: usize = 16;

/// The back-off before a step's second attempt (doubled for each further one; see `RunState::retry_delay`).
pub const RETRY_BASE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest back-off between step attempts; a provider asking for a longer pause ends the retries.
pub const RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// Framework fields steps may not write through `sink_to` / `updates_context` / skills.
const READ_ONLY_FIELDS: &[&str] = &["run_id", "initial_prompt", "steps", "hitl_history", "status"];

/// Lexical scope of a step execution.
#[derive(Clone, Copy)]
pub struct Lexical<'a> {
    /// The current map item (`this` in templates).
    pub this: Option<&'a Value>,
    /// The context schema of the pipeline this step belongs to.
    pub schema: Option<&'a jsonschema::Validator>,
    /// The sequence this step is part of (for sibling fallbacks).
    pub siblings: &'a [Step],
}

impl<'a> Lexical<'a> {
    /// The scope of a pipeline's top-level steps: no map item, no siblings yet (each sequence sets its own), and
    /// `schema` as the context schema.
    pub fn root(schema: Option<&'a jsonschema::Validator>) -> Self {
        Lexical { this: None, schema, siblings: &[] }
    }
}

struct Tail {
    next_seq: u64,
    last_hash: String,
    /// The output of the last top-level record committed by this writer, as journaled (redacted).
    last_top_output: Option<Arc<Value>>,
    /// Why an append of this walk failed. Its record may be durable all the same (a commit whose answer was
    /// lost), so the walk's view of the journal is no longer certain: nothing more is appended and the run row
    /// is not finalized; the next walk reads the journal as it is.
    broken: Option<String>,
}

/// Appends hash-chained records for one run, one at a time, in commit order, fenced by the walk's owner id
/// (`JournalStore::append_fenced`): once another process has taken the run over, no append of this walk lands.
pub(crate) struct JournalWriter {
    store: Arc<dyn Store>,
    owner_id: String,
    tail: tokio::sync::Mutex<Tail>,
}

impl JournalWriter {
    pub(crate) fn new(store: Arc<dyn Store>, owner_id: String, next_seq: u64, last_hash: String) -> Self {
        JournalWriter {
            store,
            owner_id,
            tail: tokio::sync::Mutex::new(Tail { next_seq, last_hash, last_top_output: None, broken: None }),
        }
    }

    /// The journal as committed so far: record count and last hash (what the run row commits to), and the
    /// output of the last top-level record this writer committed, as journaled.
    /// Fails once an append of this walk failed (see [`Tail::broken`]).
    pub(crate) async fn head(&self) -> Result<(flujo_core::ChainHead, Option<Arc<Value>>), StoreError> {
        let tail = self.tail.lock().await;
        if let Some(why) = &tail.broken {
            return Err(broken_walk(why));
        }
        Ok((flujo_core::ChainHead { len: tail.next_seq, hash: tail.last_hash.clone() }, tail.last_top_output.clone()))
    }

    /// Redacts, seals and durably appends `record`; returns it sealed, with its original (unredacted) patch so
    /// the live context is not affected by what the journal hides.
    async fn commit(&self, mut record: JournalRecord) -> Result<JournalRecord, StoreError> {
        let original_patch = redact_record(&mut record);
        let mut tail = self.tail.lock().await;
        if let Some(why) = &tail.broken {
            return Err(broken_walk(why));
        }
        record.seq = tail.next_seq;
        record.seal(&tail.last_hash);
        if let Err(e) = self.store.append_fenced(&record, &self.owner_id).await {
            tail.broken = Some(e.to_string());
            return Err(e);
        }
        tail.next_seq += 1;
        tail.last_hash.clone_from(&record.hash);
        if !record.path.contains('/') {
            tail.last_top_output = Some(record.output.clone());
        }
        drop(tail);
        if let Some(p) = original_patch {
            record.patch = p;
        }
        Ok(record)
    }
}

/// The error of a walk whose journal writer saw an append fail.
fn broken_walk(why: &str) -> StoreError {
    StoreError::Unavailable(format!("an append of this walk failed ({why}); the walk stops without writing more"))
}

/// Secrets never reach the journal (SPEC §14): values under secret-named keys are recorded as `[REDACTED]`.
/// Returns the original patch when it had to be changed.
fn redact_record(record: &mut JournalRecord) -> Option<Vec<PatchOp>> {
    let output_path = ["steps", record.step.as_str()];
    if flujo_core::needs_redaction(&output_path, &record.output) {
        record.output = Arc::new(flujo_core::redact_at(&output_path, &record.output));
    }
    let dirty = record.patch.iter().any(|op| {
        let (PatchOp::Set { path, value } | PatchOp::Append { path, value }) = op;
        flujo_core::needs_redaction(path, value)
    });
    if !dirty {
        return None;
    }
    let original = record.patch.clone();
    let mut output_hidden = false;
    for op in &mut record.patch {
        let (PatchOp::Set { path, value } | PatchOp::Append { path, value }) = op;
        if flujo_core::needs_redaction(path, value) {
            // The same value sunk into a secret-named key (`sink_to: credentials.password`) is hidden as output too.
            output_hidden |= **value == *record.output;
            *value = Arc::new(flujo_core::redact_at(path, value));
        }
    }
    if output_hidden {
        record.output = Arc::new(Value::String(flujo_core::REDACTED.to_owned()));
    }
    Some(original)
}

/// Per-run state shared by every frame of the run.
pub struct RunState {
    /// The id of the run being walked.
    pub run_id: Arc<str>,
    pub(crate) journal: Option<JournalWriter>,
    replay: foldhash::HashMap<String, Arc<JournalRecord>>,
    generation: u32,
    answers: Mutex<HashMap<String, Value>>,
    /// The run's budget: every agent call reserves and reconciles its usage here, and replayed records count
    /// against it.
    pub quota: Arc<Quota>,
    telemetry: Option<Arc<dyn Telemetry>>,
    clock: Arc<dyn Clock>,
    /// Verification walk (`lens replay`): composites are recomputed from their children's records and
    /// compared with their own; a step without a record is an error instead of a live call.
    verify_only: bool,
    /// Set by the first budget or pricing interrupt: concurrent branches make no further calls.
    stop: Mutex<Option<Interrupt>>,
    /// See [`RunState::take_stopped_results`].
    stopped_results: Mutex<Vec<StepResult>>,
    /// Model calls stream their answers as `RunEvent::TokenDelta` (`RunOptions::stream_tokens`).
    stream_tokens: bool,
}

impl RunState {
    pub(crate) fn new(
        run_id: Arc<str>,
        journal: Option<JournalWriter>,
        records: Vec<JournalRecord>,
        generation: u32,
        answers: HashMap<String, Value>,
        quota: Arc<Quota>,
        telemetry: Option<Arc<dyn Telemetry>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // What the journal already spent counts before anything runs: a live call of one branch must not reserve
        // budget a sibling branch spent before the crash just because that sibling's replay comes later.
        if !records.is_empty() {
            quota.record(journaled_spend(&records));
        }
        let mut replay = foldhash::HashMap::with_capacity_and_hasher(records.len(), Default::default());
        for r in records {
            replay.insert(r.path.clone(), Arc::new(r));
        }
        RunState {
            run_id,
            journal,
            replay,
            generation,
            answers: Mutex::new(answers),
            quota,
            telemetry,
            clock,
            verify_only: false,
            stop: Mutex::new(None),
            stopped_results: Mutex::new(Vec::new()),
            stream_tokens: false,
        }
    }

    /// Streams model answers as `RunEvent::TokenDelta` events (when there is telemetry to receive them).
    pub(crate) fn stream_tokens(mut self, on: bool) -> Self {
        self.stream_tokens = on && self.telemetry.is_some();
        self
    }

    /// The sink of a model call at `path` of `step`, when this run streams tokens.
    fn delta_sink(&self, path: &Arc<str>, step: &Arc<str>) -> Option<flujo_core::DeltaSink> {
        if !self.stream_tokens {
            return None;
        }
        let telemetry = self.telemetry.clone()?;
        let (run_id, path, step) = (self.run_id.clone(), path.clone(), step.clone());
        Some(flujo_core::DeltaSink::with_events(move |delta| {
            let (run_id, path, step) = (run_id.to_string(), path.to_string(), step.to_string());
            let event = match delta {
                flujo_core::Delta::Text(t) => RunEvent::TokenDelta { run_id, path, step, delta: t.to_owned() },
                flujo_core::Delta::Attempt(attempt) => RunEvent::ModelAttempt { run_id, path, step, attempt },
                flujo_core::Delta::ToolCall { name, arguments } => {
                    RunEvent::ToolCall { run_id, path, step, tool: name.to_owned(), arguments: arguments.to_owned() }
                }
                flujo_core::Delta::ToolResult { name, ok } => {
                    RunEvent::ToolResult { run_id, path, step, tool: name.to_owned(), ok }
                }
            };
            telemetry.on_event(&event)
        }))
    }

    /// Emits `event` when this run streams tokens (`--live`): model attempts and tool calls.
    pub(crate) fn emit_live(&self, event: impl FnOnce() -> RunEvent) {
        if self.stream_tokens {
            self.emit(event);
        }
    }

    /// The back-off before step attempt `attempt + 1` at `path`: exponential from [`RETRY_BASE_DELAY`],
    /// capped at [`RETRY_MAX_DELAY`], with jitter (between half and all of it) drawn from the injected clock
    /// and the path, and never shorter than a provider's `Retry-After`. `None` when that pause is longer than
    /// [`RETRY_MAX_DELAY`]: retrying sooner would only hammer the provider.
    pub(crate) fn retry_delay(
        &self,
        path: &str,
        attempt: u32,
        retry_after: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        if retry_after.is_some_and(|r| r > RETRY_MAX_DELAY) {
            return None;
        }
        let exp = RETRY_BASE_DELAY.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
        let capped = exp.min(RETRY_MAX_DELAY);
        let seed = blake3::hash(format!("{}|{path}|{attempt}|{}", self.run_id, self.clock.now_ms()).as_bytes());
        let b = seed.as_bytes();
        let frac = f64::from(u16::from_le_bytes([b[0], b[1]])) / f64::from(u16::MAX);
        let jittered = capped.mul_f64(0.5 + 0.5 * frac);
        Some(jittered.max(retry_after.unwrap_or_default()))
    }

    /// Results of steps the budget stopped after they had paid for work (see [`META_STOPPED`]), in the
    /// order they finished; the run's result shows them.
    pub(crate) fn take_stopped_results(&self) -> Vec<StepResult> {
        std::mem::take(&mut *self.stopped_results.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The interrupt that stops the whole run, if one happened (see [`RunState::stop_with`]).
    pub(crate) fn stopped(&self) -> Option<Interrupt> {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records `interrupt` as the run's stop reason (first one wins) and returns it.
    pub(crate) fn stop_with(&self, interrupt: Interrupt) -> Interrupt {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        stop.get_or_insert(interrupt).clone()
    }

    /// Turns this run state into a verification walk (see [`RunState::is_verify_only`]).
    pub(crate) fn verify_only(mut self) -> Self {
        self.verify_only = true;
        self.journal = None;
        self
    }

    /// True for a verification walk: nothing is executed or journaled.
    pub fn is_verify_only(&self) -> bool {
        self.verify_only
    }

    /// The record to replay at `path`, if any.
    fn replayable(&self, path: &str) -> Option<&Arc<JournalRecord>> {
        if self.replay.is_empty() {
            return None;
        }
        let rec = self.replay.get(path)?;
        (rec.status == StepStatus::Completed || rec.generation >= self.generation).then_some(rec)
    }

    /// True when `path` has a record that replay will use: live decisions (such as a cache lookup) must then
    /// defer to the journal.
    pub fn has_record(&self, path: &str) -> bool {
        self.replayable(path).is_some()
    }

    /// Takes the resume answer addressed to `pause_id`, if one was given.
    pub fn take_answer(&self, pause_id: &str) -> Option<Value> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner()).remove(pause_id)
    }

    /// Sends the event that `event` builds to the run's telemetry. Without telemetry, `event` is not called.
    pub fn emit(&self, event: impl FnOnce() -> RunEvent) {
        if let Some(t) = &self.telemetry {
            t.on_event(&event());
        }
    }

    /// The current time by the runner's [`Clock`], in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Journals a finished execution (no-op without a store). Returns the patch back for absorption.
    async fn journal(&self, record: impl FnOnce() -> JournalRecord) -> Result<Vec<PatchOp>, Interrupt> {
        match &self.journal {
            None => Ok(Vec::new()),
            Some(j) => {
                let mut rec = j.commit(record()).await?;
                Ok(std::mem::take(&mut rec.patch))
            }
        }
    }
}

/// Stack left below which a step's future is polled on a fresh stack segment.
const STACK_RED_ZONE: usize = 256 * 1024;
/// The size of such a segment.
const STACK_SEGMENT: usize = 4 * 1024 * 1024;

/// A step execution's future. Nested steps are polled through one poll frame per level, and a level takes
/// kilobytes of stack (tens in debug builds), so a pipeline nested a hundred levels deep would overflow a
/// 2 MiB tokio worker stack; each poll checks the stack left and, when it is low, continues on a fresh
/// heap-allocated segment (`stacker`), so nesting depth is bounded by the pipeline limits, not the thread's
/// stack. The check is a comparison against a thread-local bound: free at shallow depths.
pub struct GrowStack<'a, T>(BoxFuture<'a, T>);

impl<T> std::future::Future for GrowStack<'_, T> {
    type Output = T;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let fut = &mut self.0;
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || fut.as_mut().poll(cx))
    }
}

/// The outcome of running a list of steps.
#[derive(Debug, Clone)]
pub struct SeqOutcome {
    /// [`StepStatus::Completed`] when every step completed; [`StepStatus::Failed`] when one failed (the sequence
    /// stops there).
    pub status: StepStatus,
    /// The output of the last step that ran: the last step's output when the sequence completed, the failed
    /// step's output when it failed, the input for an empty sequence, and `Null` for a child sequence that
    /// could not start (see [`ExecutionFrame::run_child`]).
    pub output: Value,
    /// Why the sequence failed (`step 'NAME' failed: …` for a failed step); `None` when it completed.
    pub feedback: Option<String>,
    /// Tokens used by the steps that ran, summed.
    pub tokens: TokenUsage,
    /// What the steps that ran cost, in USD, summed.
    pub cost_usd: f64,
    /// The name and (raw) feedback of the last step that ran; `None` for an empty sequence.
    pub last_step: Option<(String, Option<String>)>,
}

impl SeqOutcome {
    /// True when [`SeqOutcome::status`] is [`StepStatus::Completed`].
    pub fn succeeded(&self) -> bool {
        self.status == StepStatus::Completed
    }
}

/// The executor: built once per pipeline by the runtime builder, shared by all its runs.
pub struct ExecutorCore {
    pub(crate) dispatcher: ExecutionDispatcher,
    pub(crate) prepared: Prepared,
    pub(crate) governance: crate::governance::GovernanceChain,
    pub(crate) cache: Arc<dyn CacheBackend>,
    pub(crate) undefined: UndefinedMode,
    pub(crate) memory: Option<Arc<crate::memory::MemoryIndexing>>,
}

pub(crate) fn child_path(base: &str, seg: impl std::fmt::Display) -> String {
    if base.is_empty() {
        seg.to_string()
    } else {
        format!("{base}/{seg}")
    }
}

fn into_owned(v: Arc<Value>) -> Value {
    Arc::try_unwrap(v).unwrap_or_else(|a| (*a).clone())
}

/// The value of the last hitl answer in the context (`resume_input` in templates).
pub(crate) fn last_answer(ctx: &flujo_core::ContextSnapshot) -> Option<Value> {
    ctx.resume_input().cloned()
}

impl ExecutorCore {
    /// How templates and expressions treat undefined names: [`UndefinedMode::Strict`] (an error) when the runner
    /// was built with `strict_templates(true)`, else [`UndefinedMode::Lenient`].
    pub fn undefined_mode(&self) -> UndefinedMode {
        self.undefined
    }

    /// Runs `steps` in order; the first step gets `input`, each next step the previous output. Stops at the
    /// first failed step. `history` collects the results of these steps (used for the top level).
    pub fn run_sequence<'a>(
        &'a self,
        steps: &'a [Step],
        input: Value,
        ctx: &'a mut Context,
        base: &'a str,
        lex: &'a Lexical<'a>,
        run: &'a RunState,
        mut history: Option<&'a mut Vec<StepResult>>,
    ) -> BoxFuture<'a, Result<SeqOutcome, Interrupt>> {
        Box::pin(async move {
            let seq_lex = Lexical { siblings: steps, ..*lex };
            let mut prev = input;
            let mut tokens = TokenUsage::default();
            let mut cost = 0.0;
            for (i, step) in steps.iter().enumerate() {
                let path = child_path(base, i);
                let result = self.execute_step(step, prev, ctx, path, &seq_lex, run).await?;
                tokens.add(result.tokens);
                cost += result.cost_usd;
                let failed = !result.succeeded();
                let feedback = result.feedback.clone();
                let output = match &mut history {
                    Some(h) => {
                        let o = (*result.output).clone();
                        h.push(result);
                        o
                    }
                    None => into_owned(result.output),
                };
                if failed {
                    return Ok(SeqOutcome {
                        status: StepStatus::Failed,
                        output,
                        feedback: Some(format!(
                            "step '{}' failed: {}",
                            step.name,
                            feedback.as_deref().unwrap_or_default()
                        )),
                        tokens,
                        cost_usd: cost,
                        last_step: Some((step.name.clone(), feedback)),
                    });
                }
                prev = output;
            }
            Ok(SeqOutcome {
                status: StepStatus::Completed,
                output: prev,
                feedback: None,
                tokens,
                cost_usd: cost,
                last_step: steps.last().map(|s| (s.name.clone(), None)),
            })
        })
    }

    /// Executes (or replays) one step at `path`.
    pub fn execute_step<'a>(
        &'a self,
        step: &'a Step,
        input: Value,
        ctx: &'a mut Context,
        path: String,
        lex: &'a Lexical<'a>,
        run: &'a RunState,
    ) -> GrowStack<'a, Result<StepResult, Interrupt>> {
        GrowStack(Box::pin(self.execute_step_inner(step, input, ctx, path, lex, run, Vec::new())))
    }

    async fn execute_step_inner<'a>(
        &'a self,
        step: &'a Step,
        input: Value,
        ctx: &'a mut Context,
        path: String,
        lex: &'a Lexical<'a>,
        run: &'a RunState,
        chain: Vec<String>,
    ) -> Result<StepResult, Interrupt> {
        let mut pending_fallback = None;
        let mut verify_against = None;
        if let Some(rec) = run.replayable(&path) {
            if rec.is_fallback_pending() && step.fallback.is_some() {
                pending_fallback = Some(rec.clone());
            } else if let Some(chain) = rec.metadata.get(META_INFINITE_FALLBACK).and_then(Value::as_array) {
                // This execution ended the run with a fallback cycle: replay reproduces the typed error.
                let chain = chain.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
                return Err(Interrupt::InfiniteFallback { path, chain });
            } else if run.verify_only && step.kind.is_composite() {
                // Recompute the composite from its children's records and compare below.
                verify_against = Some(rec.clone());
            } else if let Some(interrupt) = stopped_interrupt(rec) {
                // The budget stopped the run here (a crash came before the run row said so): replay stops it the
                // same way, with the same typed error, after counting what the step paid.
                let result = apply_record(step, rec, ctx, run);
                let stop = run.stop_with(interrupt);
                run.stopped_results.lock().unwrap_or_else(|p| p.into_inner()).push(result);
                return Err(stop);
            } else {
                return Ok(apply_record(step, rec, ctx, run));
            }
        } else if run.verify_only && !matches!(step.kind, flujo_core::StepKind::Hitl(_)) && !step.kind.is_composite() {
            return Err(Interrupt::Aborted {
                path,
                reason: format!("step '{}' has no journal record; a replay never calls agents", step.name),
            });
        }
        let kind = step.kind.name();
        run.emit(|| RunEvent::StepStarted {
            run_id: run.run_id.to_string(),
            path: path.clone(),
            step: step.name.clone(),
            kind: kind.to_owned(),
        });
        let started_ms = run.now_ms();
        let t0 = Instant::now();
        let scope = ctx.open_scope();
        let fallback_input = step.fallback.as_ref().map(|_| input.clone());

        let mut outcome = if let Some(rec) = &pending_fallback {
            // Its usage was counted with the journal's (`journaled_spend`).
            for op in &rec.patch {
                if let Err(e) = ctx.apply(op.clone()) {
                    tracing::warn!(path = %path, error = %e, "replaying a recorded patch failed");
                }
            }
            outcome_from_record(rec)
        } else {
            let live = self.run_live(step, input, ctx, &path, lex, run).await;
            match live {
                Ok(o) => o,
                Err(interrupt) => {
                    let ops = ctx.close_scope(scope, false);
                    ctx.absorb(ops);
                    return Err(interrupt);
                }
            }
        };

        // A step the budget stopped keeps its paid work in the record and the result; nothing else runs.
        let stop = match outcome.metadata.contains_key(META_STOPPED) {
            true => run.stopped(),
            false => None,
        };
        // Fallback: journal the primary failure first, so a crash or pause inside the fallback never re-runs it.
        if outcome.status == StepStatus::Failed && stop.is_none() {
            if let (Some(fallback), Some(fb_input)) = (&step.fallback, fallback_input) {
                let fb_step = match fallback {
                    Fallback::Step(s) => Some(&**s),
                    Fallback::Sibling(name) => lex.siblings.iter().find(|s| &s.name == name),
                };
                match fb_step {
                    None => {
                        outcome.feedback = Some(format!(
                            "{}; fallback step '{}' not found among siblings",
                            outcome.feedback.unwrap_or_default(),
                            match fallback {
                                Fallback::Sibling(n) => n.as_str(),
                                Fallback::Step(s) => s.name.as_str(),
                            }
                        ));
                    }
                    Some(fb_step) => {
                        let mut chain = chain;
                        chain.push(step.name.clone());
                        if chain.contains(&fb_step.name) || chain.len() >= MAX_FALLBACK_DEPTH {
                            chain.push(fb_step.name.clone());
                            // The failed execution is part of the audit trail even though the run stops here.
                            if pending_fallback.is_none() {
                                outcome.metadata.insert(
                                    META_INFINITE_FALLBACK.to_owned(),
                                    Value::Array(chain.iter().cloned().map(Value::String).collect()),
                                );
                                let ops = ctx.log().to_vec();
                                let o = &outcome;
                                run.journal(|| make_record(run, step, &path, o, ops, started_ms, t0)).await?;
                            }
                            let ops = ctx.close_scope(scope, false);
                            ctx.absorb(ops);
                            return Err(Interrupt::InfiniteFallback { path, chain });
                        }
                        if pending_fallback.is_none() {
                            outcome.metadata.insert(META_FALLBACK_PENDING.to_owned(), Value::Bool(true));
                            let ops = ctx.log().to_vec();
                            let o = &outcome;
                            run.journal(|| make_record(run, step, &path, o, ops, started_ms, t0)).await?;
                            outcome.metadata.remove(META_FALLBACK_PENDING);
                        }
                        let fb_path = format!("{path}/fallback");
                        let fb_res =
                            Box::pin(self.execute_step_inner(fb_step, fb_input, ctx, fb_path, lex, run, chain)).await?;
                        outcome = PolicyOutcome {
                            status: fb_res.status,
                            output: (*fb_res.output).clone(),
                            feedback: match (&fb_res.feedback, &outcome.feedback) {
                                (Some(f), Some(p)) => Some(format!("{f} (after primary failure: {p})")),
                                (f, _) => f.clone(),
                            },
                            attempts: outcome.attempts + fb_res.attempts,
                            tokens: {
                                let mut t = outcome.tokens;
                                t.add(fb_res.tokens);
                                t
                            },
                            cost_usd: outcome.cost_usd + fb_res.cost_usd,
                            metadata: {
                                let mut m = outcome.metadata;
                                m.insert("fallback_triggered".to_owned(), Value::Bool(true));
                                m.insert("fallback_step".to_owned(), Value::String(fb_step.name.clone()));
                                m
                            },
                            context_ops: Vec::new(),
                        };
                    }
                }
            }
        }

        if let Some(rec) = verify_against {
            if rec.status != outcome.status || *rec.output != outcome.output {
                return Err(Interrupt::Aborted {
                    path,
                    reason: format!(
                        "replay mismatch at step '{}': recorded {} {}, recomputed {} {}",
                        step.name,
                        if rec.status == StepStatus::Completed { "completed" } else { "failed" },
                        rec.output,
                        if outcome.status == StepStatus::Completed { "completed" } else { "failed" },
                        outcome.output
                    ),
                });
            }
        }
        // Memory indexing belongs to the step's execution: its result is in the record committed below.
        if let Some(memory) = self.memory.as_ref().filter(|m| {
            outcome.status == StepStatus::Completed && stop.is_none() && !run.verify_only && m.selects(step)
        }) {
            if let Some(indexed) = memory.index(run, step, &path, &outcome.output).await {
                outcome.metadata.insert(META_MEMORY.to_owned(), indexed.metadata);
                outcome.tokens.add(indexed.tokens);
                outcome.cost_usd += indexed.cost_usd;
            }
        }
        let ops = ctx.close_scope(scope, step.kind.is_composite() || pending_fallback.is_some());
        let o = &outcome;
        let ops = match &run.journal {
            None => ops,
            Some(_) => run.journal(|| make_record(run, step, &path, o, ops, started_ms, t0)).await?,
        };
        ctx.absorb(ops);
        let output = Arc::new(outcome.output);
        ctx.set_step_output(&step.name, output.clone());
        let mut result = StepResult::new(&step.name, path, kind, outcome.status, output);
        result.attempts = outcome.attempts;
        result.latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
        result.tokens = outcome.tokens;
        result.cost_usd = outcome.cost_usd;
        result.feedback = outcome.feedback;
        result.metadata = outcome.metadata;
        run.emit(|| RunEvent::StepFinished { run_id: run.run_id.to_string(), result: result.clone(), replayed: false });
        if let Some(stop) = stop {
            run.stopped_results.lock().unwrap_or_else(|p| p.into_inner()).push(result);
            return Err(stop);
        }
        Ok(result)
    }

    /// Renders the input, runs the policy, then validators and context effects (which may turn a success
    /// into a failure, leaving the context unchanged).
    async fn run_live(
        &self,
        step: &Step,
        input: Value,
        ctx: &mut Context,
        path: &str,
        lex: &Lexical<'_>,
        run: &RunState,
    ) -> Result<PolicyOutcome, Interrupt> {
        let rendered = match self.render_input(step, input, ctx, lex) {
            Ok(v) => v,
            Err(msg) => return Ok(PolicyOutcome::failure(Value::Null, msg)),
        };
        let Some(policy) = self.dispatcher.get(step.kind.name()) else {
            return Ok(PolicyOutcome::failure(
                Value::Null,
                format!("no policy registered for step kind '{}'", step.kind.name()),
            ));
        };
        let frame = ExecutionFrame { step, input: rendered, ctx, path, lex, run, core: self };
        // One span per live step execution (nested executions nest), with the OpenTelemetry GenAI usage
        // attributes; model calls inside open their own `gen_ai` spans (flujo_llm::traced_chat).
        let span = tracing::info_span!(
            "flujo.step",
            otel.name = %step.name,
            flujo.run_id = %run.run_id,
            flujo.step.name = %step.name,
            flujo.step.path = path,
            flujo.step.kind = step.kind.name(),
            flujo.step.status = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            flujo.cost_usd = tracing::field::Empty,
        );
        let mut outcome = tracing::Instrument::instrument(policy.execute(frame), span.clone()).await?;
        if !span.is_disabled() {
            span.record(
                "flujo.step.status",
                if outcome.status == StepStatus::Completed { "completed" } else { "failed" },
            );
            // Integers as i64: OpenTelemetry has no unsigned attributes (a u64 would be exported as text).
            span.record("gen_ai.usage.input_tokens", i64::try_from(outcome.tokens.prompt).unwrap_or(i64::MAX));
            span.record("gen_ai.usage.output_tokens", i64::try_from(outcome.tokens.completion).unwrap_or(i64::MAX));
            span.record("flujo.cost_usd", outcome.cost_usd);
        }
        if outcome.status != StepStatus::Completed {
            return Ok(outcome);
        }
        // Validators of `step` kinds run per attempt inside the agent policy; others run here.
        if !matches!(step.kind, flujo_core::StepKind::Step { .. }) {
            if let Err(msg) = self.check_validators(step, &outcome.output, ctx, lex) {
                outcome.status = StepStatus::Failed;
                outcome.feedback = Some(msg);
                return Ok(outcome);
            }
        }
        if let Err(msg) = self.apply_effects(step, &mut outcome, ctx, lex) {
            outcome.status = StepStatus::Failed;
            outcome.feedback = Some(msg);
        }
        Ok(outcome)
    }

    /// Calls `f` with the template scope of a step: `previous_step` = `prev`, the context, `resume_input`,
    /// `this` and `extra` names.
    fn with_scope<R>(
        &self,
        prev: &Value,
        ctx: &Context,
        lex: &Lexical<'_>,
        extra: &[(&str, &Value)],
        f: impl FnOnce(&Scope<'_>) -> R,
    ) -> R {
        let snap = ctx.snapshot();
        let resume = last_answer(&snap);
        let mut scope = Scope::new(prev);
        scope.context = Some(&snap);
        scope.resume_input = resume.as_ref();
        scope.this = lex.this;
        scope.extra = extra;
        f(&scope)
    }

    /// Renders the step's `input` template (or passes `input` through when there is none).
    pub fn render_input(&self, step: &Step, input: Value, ctx: &Context, lex: &Lexical<'_>) -> Result<Value, String> {
        let Some(tpl) = &step.input else { return Ok(input) };
        self.with_scope(&input, ctx, lex, &[], |scope| flujo_template::render_json(tpl, scope, self.undefined))
            .map_err(|e| format!("input template: {e}"))
    }

    /// Evaluates an expression with the usual names (`previous_step` = `prev`).
    pub fn eval_expr(
        &self,
        src: &str,
        prev: &Value,
        ctx: &Context,
        lex: &Lexical<'_>,
        extra: &[(&str, &Value)],
    ) -> Result<Value, String> {
        self.with_expr(src, prev, ctx, lex, extra, |expr, scope| expr.eval(scope, self.undefined))
    }

    /// Compiles `src` (cached) and applies `f` to it in the usual scope; errors name the expression.
    fn with_expr<R>(
        &self,
        src: &str,
        prev: &Value,
        ctx: &Context,
        lex: &Lexical<'_>,
        extra: &[(&str, &Value)],
        f: impl FnOnce(&flujo_template::CompiledExpr, &Scope<'_>) -> Result<R, flujo_template::TemplateError>,
    ) -> Result<R, String> {
        let expr = flujo_template::compile_expression(src).map_err(|e| format!("expression '{src}': {e}"))?;
        self.with_scope(prev, ctx, lex, extra, |scope| f(&expr, scope)).map_err(|e| format!("expression '{src}': {e}"))
    }

    /// Evaluates an expression for its truthiness.
    pub fn eval_bool(&self, src: &str, prev: &Value, ctx: &Context, lex: &Lexical<'_>) -> Result<bool, String> {
        self.eval_bool_with(src, prev, ctx, lex, &[])
    }

    /// [`Self::eval_bool`] with additional top-level names.
    pub fn eval_bool_with(
        &self,
        src: &str,
        prev: &Value,
        ctx: &Context,
        lex: &Lexical<'_>,
        extra: &[(&str, &Value)],
    ) -> Result<bool, String> {
        self.with_expr(src, prev, ctx, lex, extra, |expr, scope| expr.eval_bool(scope, self.undefined))
    }

    /// Renders a template value (string or JSON) with `previous_step` = `prev`.
    pub fn render_value(&self, tpl: &Value, prev: &Value, ctx: &Context, lex: &Lexical<'_>) -> Result<Value, String> {
        self.with_scope(prev, ctx, lex, &[], |scope| flujo_template::render_json(tpl, scope, self.undefined))
            .map_err(|e| format!("template: {e}"))
    }

    /// Runs the step's validators against `output`; the first failing one gives the failure message.
    pub fn check_validators(
        &self,
        step: &Step,
        output: &Value,
        ctx: &Context,
        lex: &Lexical<'_>,
    ) -> Result<(), String> {
        for v in &step.validators {
            let ok = self
                .eval_expr(&v.expression, output, ctx, lex, &[("output", output)])
                .map(|r| truthy(&r))
                .map_err(|e| format!("validator error: {e}"))?;
            if !ok {
                return Err(v.message.clone().unwrap_or_else(|| format!("validation failed: {}", v.expression)));
            }
        }
        Ok(())
    }

    /// Applies the outcome's context ops, `updates_context` and `sink_to` atomically: all or nothing, and
    /// validated against the context schema.
    fn apply_effects(
        &self,
        step: &Step,
        outcome: &mut PolicyOutcome,
        ctx: &mut Context,
        lex: &Lexical<'_>,
    ) -> Result<(), String> {
        let mut ops = std::mem::take(&mut outcome.context_ops);
        if step.updates_context {
            match &outcome.output {
                Value::Object(m) => {
                    for (k, v) in m {
                        if step.output_keys.is_empty() || step.output_keys.iter().any(|o| o == k) {
                            ops.push(PatchOp::set(vec![k.clone()], v.clone()));
                        }
                    }
                }
                other if step.output_keys.len() == 1 => {
                    ops.push(PatchOp::set(flujo_core::patch::split_context_path(&step.output_keys[0]), other.clone()));
                }
                _ if step.sink_to.is_some() => {}
                other => {
                    return Err(format!(
                        "updates_context needs an object output (or exactly one output_key), got {}",
                        flujo_core::json_type_name(other)
                    ))
                }
            }
        }
        if let Some(sink) = &step.sink_to {
            let path = flujo_core::patch::split_context_path(sink);
            if path.is_empty() {
                return Err(format!("sink_to '{sink}' is not a context path"));
            }
            ops.push(PatchOp::set(path, outcome.output.clone()));
        }
        if ops.is_empty() {
            return Ok(());
        }
        for op in &ops {
            if let Some(first) = op.path().first() {
                if READ_ONLY_FIELDS.contains(&first.as_str())
                    && !matches!(op, PatchOp::Append { .. } if first == "hitl_history")
                {
                    return Err(format!("context update failed: '{first}' is a framework field and cannot be written"));
                }
            }
        }
        let snapshot = ctx.snapshot();
        let mark = ctx.log_len();
        for op in ops {
            if let Err(e) = ctx.apply(op) {
                ctx.restore_data(&snapshot);
                ctx.truncate_log(mark);
                return Err(format!("context update failed: {e}"));
            }
        }
        if let Some(schema) = lex.schema {
            let user = ctx.user_json();
            if let Err(e) = schema.validate(&user) {
                let msg = format!("context validation failed: {e} (at {})", e.instance_path);
                ctx.restore_data(&snapshot);
                ctx.truncate_log(mark);
                return Err(msg);
            }
        }
        Ok(())
    }

    /// Calls a resolved agent for one attempt: governance chain, quota reservation, the call, reconciliation.
    pub async fn call_agent(
        &self,
        agent: &Arc<dyn Skill>,
        target: &str,
        kind: CallKind,
        mut call: SkillCall,
        run: &RunState,
        timeout_s: Option<f64>,
    ) -> Result<Result<SkillOutput, flujo_core::SkillError>, Interrupt> {
        // Governance (SPEC §11): a denial stops the run before anything is reserved or called.
        let decisions = if self.governance.is_empty() {
            None
        } else {
            let view = crate::governance::CallView {
                run_id: &call.run_id,
                path: &call.path,
                step: &call.step,
                target,
                kind,
                context: &call.context,
            };
            let input = std::mem::take(&mut call.input);
            let (input, decisions) = self.governance.check(view, input).await.map_err(|i| run.stop_with(i))?;
            call.input = input;
            Some(Value::Array(decisions.iter().map(crate::governance::DecisionRecord::to_json).collect()))
        };
        if call.deltas.is_none() {
            call.deltas = run.delta_sink(&call.path, &call.step);
        }
        // A model fallback chain: on a provider failure (after its retries) the next candidate is called the
        // same way; what the failed ones billed is added to the answer's figures.
        let fallbacks = agent.fallbacks();
        let mut billed = (TokenUsage::default(), 0.0_f64);
        let mut failures: Vec<Value> = Vec::new();
        let mut candidate = agent.clone();
        let mut label = target.to_owned();
        let mut next = fallbacks.into_iter().peekable();
        let mut call = Some(call);
        let res = loop {
            // The call is cloned only while a fallback may still need it (never for a plain agent).
            let this_call = match (next.peek().is_some(), call.take()) {
                (true, Some(c)) => {
                    call = Some(c.clone());
                    c
                }
                (_, Some(c)) => c,
                (_, None) => break Err(flujo_core::SkillError::fatal("internal: the call was already made")),
            };
            let res = self.call_reserved(&candidate, &label, this_call, run, timeout_s).await?;
            match res {
                Err(e) if e.provider_failure => match next.next() {
                    Some(fallback) => {
                        failures.push(serde_json::json!({"model": candidate.info().id, "error": e.message}));
                        billed.0.add(e.tokens);
                        billed.1 += e.cost_usd;
                        label = fallback.info().id;
                        candidate = fallback;
                    }
                    None => break Err(e),
                },
                other => break other,
            }
        };
        let res = match res {
            _ if failures.is_empty() => res,
            Ok(mut o) => {
                o.tokens.add(billed.0);
                o.cost_usd += billed.1;
                o.metadata.insert(META_MODEL_FALLBACKS.into(), Value::Array(failures));
                Ok(o)
            }
            Err(mut e) => {
                e.tokens.add(billed.0);
                e.cost_usd += billed.1;
                e.metadata.insert(META_MODEL_FALLBACKS.into(), Value::Array(failures));
                Err(e)
            }
        };
        Ok(match (res, decisions) {
            (Ok(mut o), Some(d)) => {
                o.metadata.insert(META_GOVERNANCE.into(), d);
                Ok(o)
            }
            (Err(mut e), Some(d)) => {
                e.metadata.insert(META_GOVERNANCE.into(), d);
                Err(e)
            }
            (res, None) => res,
        })
    }

    /// One call of `agent` under the quota: typed pre-flight checks first (pricing, keys), then a reservation
    /// of the call's upper bound — one that does not fit refuses the call before it is made and stops the run
    /// — then the call (bounded by `timeout_s`), reconciled to the usage it reported, a failed call's too (its
    /// error carries what the provider billed before the failure, 0 when nothing was).
    async fn call_reserved(
        &self,
        agent: &Arc<dyn Skill>,
        target: &str,
        call: SkillCall,
        run: &RunState,
        timeout_s: Option<f64>,
    ) -> Result<Result<SkillOutput, flujo_core::SkillError>, Interrupt> {
        // Reserve → Execute → Reconcile (SPEC §8).
        if let Some(stop) = run.stopped() {
            return Err(stop);
        }
        agent.preflight().map_err(|i| run.stop_with(i))?;
        let planned = agent.estimate(&call.input).unwrap_or_default();
        let reservation = run.quota.reserve(planned).map_err(|e| {
            run.stop_with(Interrupt::UsageLimitExceeded {
                path: call.path.to_string(),
                message: format!("the call to '{target}' was not made: {e}"),
            })
        })?;
        let fut = agent.call(call);
        // Bounds were checked when the runner was built (`prepare`); an unusable value never panics here.
        let res = match timeout_s.map(|t| (t, flujo_core::limits::duration_from_secs(t))) {
            Some((t, Ok(limit))) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Err(flujo_core::SkillError::new(format!("timed out after {t}s"))),
            },
            Some((t, Err(e))) => Err(flujo_core::SkillError::fatal(format!("timeout_s {t} {e}"))),
            None => fut.await,
        };
        let actual = match &res {
            Ok(o) => Usage { cost_usd: o.cost_usd, tokens: o.tokens.total() },
            Err(e) => Usage { cost_usd: e.cost_usd, tokens: e.tokens.total() },
        };
        run.quota.reconcile(reservation, actual);
        Ok(res)
    }

    /// Runs an agent whose decision steers the walk (router, condition skill, loop exit skill) as a journaled
    /// leaf at `path`, so replay reuses its recorded answer instead of calling it again. Returns the decision
    /// (or failure message) and the call's usage, which the deciding step adds to its own: a composite's record
    /// stands for everything paid under it, so a resumed run that replays it counts the decision too.
    #[allow(clippy::too_many_arguments)]
    pub async fn journaled_decision(
        &self,
        step: &Step,
        agent: &flujo_core::AgentRef,
        input: Value,
        ctx: &Context,
        this: Option<&Value>,
        path: String,
        run: &RunState,
    ) -> Result<Result<(Value, (TokenUsage, f64)), (String, (TokenUsage, f64))>, Interrupt> {
        let Some(skill) = self.prepared.agent(agent) else {
            return Ok(Err((format!("agent for '{path}' was not resolved"), (TokenUsage::default(), 0.0))));
        };
        self.journaled_call(step, skill, agent_target(agent), "decision", input, ctx, this, path, run).await
    }

    /// Calls `skill` once as a journaled leaf at `path` (record kind `kind`): on replay the recorded answer is
    /// returned and nothing is called. Returns the output (or failure message) and the call's usage.
    #[allow(clippy::too_many_arguments)]
    pub async fn journaled_call(
        &self,
        step: &Step,
        skill: &Arc<dyn Skill>,
        target: &str,
        kind: &str,
        input: Value,
        ctx: &Context,
        this: Option<&Value>,
        path: String,
        run: &RunState,
    ) -> Result<Result<(Value, (TokenUsage, f64)), (String, (TokenUsage, f64))>, Interrupt> {
        if let Some(rec) = run.replayable(&path) {
            // Its usage was counted with the journal's (`journaled_spend`).
            return Ok(match rec.status {
                StepStatus::Completed => Ok(((*rec.output).clone(), (rec.tokens, rec.cost_usd))),
                StepStatus::Failed => Err((rec.feedback.clone().unwrap_or_default(), (rec.tokens, rec.cost_usd))),
            });
        }
        if run.verify_only {
            return Err(Interrupt::Aborted {
                reason: format!("{kind} of step '{}' has no journal record; a replay never calls agents", step.name),
                path,
            });
        }
        let started_ms = run.now_ms();
        let t0 = Instant::now();
        let call = {
            let mut call = SkillCall::new(input);
            call.run_id = run.run_id.clone();
            call.path = Arc::from(path.as_str());
            call.step = Arc::from(step.name.as_str());
            call.attempt = 1;
            call.idempotency_key = Arc::from(format!("{}:{}", run.run_id, path).as_str());
            call.context = ctx.snapshot();
            call.deltas = None;
            call.this = this.map(|v| Arc::new(v.clone()));
            call
        };
        let call_kind = if kind == "tool_call" {
            CallKind::Tool
        } else if target.contains(':') {
            CallKind::Model
        } else {
            CallKind::Skill
        };
        let res = self.call_agent(skill, target, call_kind, call, run, step.config.timeout_s).await?;
        let mut outcome = match &res {
            Ok(o) => {
                let mut p = PolicyOutcome::success(o.output.clone());
                p.tokens = o.tokens;
                p.cost_usd = o.cost_usd;
                p
            }
            Err(e) => {
                let mut p = PolicyOutcome::failure(Value::Null, e.message.clone());
                p.tokens = e.tokens;
                p.cost_usd = e.cost_usd;
                p.metadata.extend((*e.metadata).clone());
                p
            }
        };
        if let Ok(o) = &res {
            outcome.metadata.extend(o.metadata.clone());
        }
        if kind == "model_turn" {
            outcome.metadata.entry(META_MODEL).or_insert_with(|| Value::String(target.to_owned()));
        }
        let leaf = Step::passthrough(format!("{}#{kind}", step.name));
        let o = &outcome;
        run.journal(|| {
            let mut r = make_record(run, &leaf, &path, o, Vec::new(), started_ms, t0);
            r.kind = kind.to_owned();
            r
        })
        .await?;
        Ok(res.map(|o| (o.output, (o.tokens, o.cost_usd))).map_err(|e| (e.message, (e.tokens, e.cost_usd))))
    }
}

/// When `e` is the budget (or pricing) stopping the run, the failed outcome of a composite that keeps the paid
/// work of its finished children (`output`, `tokens`, `cost`), marked [`META_STOPPED`]; any other interrupt is
/// passed on.
pub(crate) fn stopped_outcome(
    run: &RunState,
    e: Interrupt,
    output: Value,
    tokens: TokenUsage,
    cost_usd: f64,
) -> Result<PolicyOutcome, Interrupt> {
    let budget = matches!(e, Interrupt::UsageLimitExceeded { .. } | Interrupt::PricingNotConfigured { .. });
    if !budget && run.stopped().as_ref() != Some(&e) {
        return Err(e);
    }
    let i = run.stop_with(e);
    let mut o = PolicyOutcome::failure(output, i.to_string());
    o.tokens = tokens;
    o.cost_usd = cost_usd;
    o.metadata.insert(META_STOPPED.into(), Value::String(i.kind().into()));
    Ok(o)
}

/// Record metadata saying what memory indexing did with the step's output (`{indexed, ids}` or `{error}`).
pub(crate) const META_MEMORY: &str = "memory";

/// Record metadata naming the model (`provider:model`) a record's usage comes from (read by `lens` for the
/// `gen_ai.*` span attributes).
pub const META_MODEL: &str = "model";

/// Record metadata listing the governance decisions about the record's call (`[{policy, decision, reason |
/// note}]`), when a governance chain is configured.
pub const META_GOVERNANCE: &str = "governance";

/// Step metadata key: the models of a fallback chain that failed before one answered (`[{model, error}]`).
pub const META_MODEL_FALLBACKS: &str = "model_fallbacks";

pub(crate) fn agent_target(agent: &flujo_core::AgentRef) -> &str {
    agent.target()
}

/// Jinja-like truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(true),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn outcome_from_record(rec: &JournalRecord) -> PolicyOutcome {
    let mut metadata = rec.metadata.clone();
    metadata.remove(META_FALLBACK_PENDING);
    PolicyOutcome {
        status: rec.status,
        output: (*rec.output).clone(),
        feedback: rec.feedback.clone(),
        attempts: rec.attempts,
        tokens: rec.tokens,
        cost_usd: rec.cost_usd,
        metadata,
        context_ops: Vec::new(),
    }
}

fn make_record(
    run: &RunState,
    step: &Step,
    path: &str,
    o: &PolicyOutcome,
    patch: Vec<PatchOp>,
    started_ms: i64,
    t0: Instant,
) -> JournalRecord {
    JournalRecord {
        run_id: run.run_id.to_string(),
        seq: 0,
        generation: run.generation,
        path: path.to_owned(),
        step: step.name.clone(),
        kind: step.kind.name().to_owned(),
        status: o.status,
        output: Arc::new(o.output.clone()),
        feedback: o.feedback.clone(),
        patch,
        attempts: o.attempts,
        tokens: o.tokens,
        cost_usd: o.cost_usd,
        started_at_ms: started_ms,
        latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
        metadata: o.metadata.clone(),
        prev_hash: String::new(),
        hash: String::new(),
        hash_scheme: flujo_core::HashScheme::CURRENT,
    }
}

/// Kinds of records of one call journaled inside a step (a decision, a model turn, a tool call, a proposal, an
/// evaluation): such a record stands for that call alone, not for the records below its path (a model turn's
/// tool calls are journaled under the turn).
fn is_call_kind(kind: &str) -> bool {
    matches!(kind, "decision" | "model_turn" | "tool_call" | "proposer" | "evaluator")
}

/// What the journal's records spent, each paid call once. A record's own spend is its cost minus what the
/// records it used already account for: the latest record at each path below it that its execution used (a
/// completed one, or one of its generation). So a plain step's own spend is its cost, a step with tool calls
/// or a composite adds nothing beyond its children (a router's decision, a model turn and a tool call are
/// records of their own), a fallback's final record adds nothing beyond the pending record and the fallback,
/// and records of failed generations count too: a failed run resumed keeps what it spent. Every record counts,
/// whether replay will use it or not; a composite whose figures miss something (a branch that paused has no
/// figures to give) never subtracts more than its cost. Journaled calls (decisions, model turns, tool calls,
/// proposals, evaluations) stand only for themselves: a turn's tool calls are recorded below it.
pub(crate) fn journaled_spend(records: &[JournalRecord]) -> Usage {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_unstable_by_key(|&i| records[i].seq);
    // Record indices sorted by (path, seq): the records of one path are adjacent, and those below `P` (paths
    // from "P/" up to "P0", '0' following '/') form one run of the list.
    let mut by_path = order.clone();
    by_path
        .sort_by(|&x, &y| (records[x].path.as_str(), records[x].seq).cmp(&(records[y].path.as_str(), records[y].seq)));
    let first_at_or_after = |key: &str| by_path.partition_point(|&j| records[j].path.as_str() < key);
    let mut own = vec![(0.0f64, 0u64); records.len()];
    let mut spent = Usage::default();
    let (mut from, mut to) = (String::new(), String::new());
    for &i in &order {
        let r = &records[i];
        let (mut cost, mut tokens) = (r.cost_usd, r.tokens.total());
        if !is_call_kind(&r.kind) {
            from.clear();
            from.push_str(&r.path);
            from.push('/');
            to.clear();
            to.push_str(&r.path);
            to.push('0');
            let below = &by_path[first_at_or_after(&from)..first_at_or_after(&to)];
            // For each path below, the latest record written before this one.
            let mut k = 0;
            while k < below.len() {
                let path = records[below[k]].path.as_str();
                let end = k + below[k..].iter().take_while(|&&j| records[j].path == path).count();
                if let Some(&j) = below[k..end].iter().rev().find(|&&j| records[j].seq < r.seq) {
                    let d = &records[j];
                    if d.status == StepStatus::Completed || d.generation >= r.generation {
                        cost -= own[j].0;
                        tokens = tokens.saturating_sub(own[j].1);
                    }
                }
                k = end;
            }
            // A fallback's final record repeats the pending record's figures.
            let same = &by_path[first_at_or_after(&r.path)..];
            let earlier = same.iter().take_while(|&&j| records[j].path == r.path && records[j].seq < r.seq).last();
            if let Some(&p) = earlier {
                if records[p].is_fallback_pending() && records[p].generation == r.generation {
                    cost -= own[p].0;
                    tokens = tokens.saturating_sub(own[p].1);
                }
            }
        }
        own[i] = (cost.max(0.0), tokens);
        spent.cost_usd += own[i].0;
        spent.tokens += own[i].1;
    }
    spent
}

/// The interrupt a record marked [`META_STOPPED`] stopped its run with, rebuilt from its kind and feedback (the
/// interrupt's text) — for the kinds a paid step can be stopped by.
fn stopped_interrupt(rec: &JournalRecord) -> Option<Interrupt> {
    let kind = rec.metadata.get(META_STOPPED)?.as_str()?;
    let feedback = rec.feedback.as_deref().unwrap_or_default();
    match kind {
        "usage_limit_exceeded" => {
            // `usage limit exceeded at {path}: {message}` (the path is where the limit was hit, maybe a child).
            let rest = feedback.strip_prefix("usage limit exceeded at ").unwrap_or(feedback);
            let (path, message) = rest.split_once(": ").unwrap_or((rec.path.as_str(), rest));
            Some(Interrupt::UsageLimitExceeded { path: path.to_owned(), message: message.to_owned() })
        }
        "pricing_not_configured" => {
            let rest = feedback.strip_prefix("pricing not configured for ")?;
            let (provider, model) = rest.split_once(':')?;
            Some(Interrupt::PricingNotConfigured { provider: provider.to_owned(), model: model.to_owned() })
        }
        _ => None,
    }
}

/// Applies a committed record instead of executing the step.
fn apply_record(step: &Step, rec: &Arc<JournalRecord>, ctx: &mut Context, run: &RunState) -> StepResult {
    for op in &rec.patch {
        if let Err(e) = ctx.apply(op.clone()) {
            tracing::warn!(path = %rec.path, error = %e, "replaying a recorded patch failed");
        }
    }
    ctx.set_step_output(&step.name, rec.output.clone());
    // Its usage (for a composite: its children's, which are not walked) was counted with the journal's
    // (`journaled_spend`).
    let result = rec.to_step_result();
    run.emit(|| RunEvent::StepFinished { run_id: run.run_id.to_string(), result: result.clone(), replayed: true });
    result
}

/// The first record hash of a run (for writers starting a journal).
pub(crate) fn genesis() -> String {
    GENESIS_HASH.to_owned()
}
