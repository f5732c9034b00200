//! `kind: step`: runs its agent with retries, per-attempt timeout and validators (fallbacks are handled by
//! the executor for every kind).

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{Interrupt, RunEvent, SkillCall, StepKind, StepStatus, Value};

use crate::executor::{agent_target, META_MODEL, META_STOPPED};
use crate::policies::agentic::run_tool_loop;
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};

/// The policy of `kind: step`: calls the step's agent (skill or model) with up to `max_retries` retries
/// and back-off, a per-attempt timeout and the step's validators; a model agent that offers tools runs a
/// tool-calling conversation. A step without an agent passes its input through.
pub struct AgentStepPolicy;

#[async_trait]
impl StepPolicy for AgentStepPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Step { agent } = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "agent policy used for a non-step kind"));
        };
        let Some(agent) = agent else {
            // No agent: passthrough (still subject to validators).
            return Ok(match f.core.check_validators(f.step, &f.input, f.ctx, f.lex) {
                Ok(()) => PolicyOutcome::success(f.input),
                Err(msg) => PolicyOutcome::failure(f.input, msg),
            });
        };
        let Some(skill) = f.core.prepared.agent(agent) else {
            return Ok(PolicyOutcome::failure(Value::Null, "agent was not resolved when the runner was built"));
        };
        let max_attempts = f.step.config.max_retries.saturating_add(1);
        if let Some(set) = f.core.prepared.tool_set(agent) {
            // Boxed: the tool loop's large future would otherwise be part of every plain step's.
            let mut o = Box::pin(tool_step(&f, skill, agent_target(agent), set, max_attempts)).await?;
            tag_model(&mut o, Some(agent_target(agent)));
            return Ok(o);
        }
        let model = matches!(agent, flujo_core::AgentRef::Model { .. }).then(|| agent_target(agent));
        let path: Arc<str> = Arc::from(f.path);
        let step_name: Arc<str> = Arc::from(f.step.name.as_str());
        // `RUN_ID:PATH`, concatenated (a `format!` here cost ≈ 750 instructions per step).
        let key: Arc<str> = Arc::from([&f.run.run_id[..], ":", f.path].concat());
        let this = f.lex.this.map(|v| Arc::new(v.clone()));
        let mut input = Some(f.input);
        let mut last_error = String::new();
        let mut retry_after = None;
        let mut tokens = flujo_core::TokenUsage::default();
        let mut cost = 0.0;
        let mut metadata = flujo_core::Map::new();
        let fail = |msg: String, attempts: u32, tokens, cost, metadata: flujo_core::Map<String, Value>| {
            let mut o = PolicyOutcome::failure(Value::Null, msg);
            o.attempts = attempts;
            o.tokens = tokens;
            o.cost_usd = cost;
            o.metadata = metadata;
            tag_model(&mut o, model);
            o
        };
        for attempt in 1..=max_attempts {
            if attempt > 1 {
                match f.run.retry_delay(f.path, attempt - 1, retry_after) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => {
                        let wait = retry_after.map_or(0, |d: std::time::Duration| d.as_secs());
                        let msg = format!("{last_error} (not retried: the provider asked to wait {wait}s)");
                        return Ok(fail(msg, attempt - 1, tokens, cost, metadata));
                    }
                }
                if model.is_some() {
                    f.run.emit_live(|| RunEvent::ModelAttempt {
                        run_id: f.run.run_id.to_string(),
                        path: f.path.to_owned(),
                        step: f.step.name.clone(),
                        attempt,
                    });
                }
            }
            let this_input = if attempt < max_attempts {
                input.clone().unwrap_or(Value::Null)
            } else {
                input.take().unwrap_or(Value::Null)
            };
            let call = {
                let mut call = SkillCall::new(this_input);
                call.run_id = f.run.run_id.clone();
                call.path = path.clone();
                call.step = step_name.clone();
                call.attempt = attempt;
                call.idempotency_key = key.clone();
                call.context = f.ctx.snapshot();
                call.deltas = None;
                call.this = this.clone();
                call
            };
            let kind = match agent {
                flujo_core::AgentRef::Model { .. } => flujo_core::CallKind::Model,
                _ => flujo_core::CallKind::Skill,
            };
            let res =
                match f.core.call_agent(skill, agent_target(agent), kind, call, f.run, f.step.config.timeout_s).await {
                    Ok(res) => res,
                    // The budget refused a retry: what the earlier attempts paid stays in the step's record, so a
                    // resumed run still counts it.
                    Err(e) if cost > 0.0 || tokens.total() > 0 => {
                        let mut o = crate::executor::stopped_outcome(f.run, e, Value::Null, tokens, cost)?;
                        o.attempts = attempt - 1;
                        for (k, v) in metadata {
                            o.metadata.entry(k).or_insert(v);
                        }
                        tag_model(&mut o, model);
                        return Ok(o);
                    }
                    Err(e) => return Err(e),
                };
            match res {
                Ok(out) => {
                    tokens.add(out.tokens);
                    cost += out.cost_usd;
                    metadata.extend(out.metadata);
                    if let Some(i) = over_limits((f.step, f.run, f.path), tokens, cost) {
                        let o = PolicyOutcome {
                            output: out.output,
                            tokens,
                            cost_usd: cost,
                            metadata,
                            attempts: attempt,
                            ..PolicyOutcome::success(Value::Null)
                        };
                        return Ok(stopped((f.step, f.run, f.path), i, o, model));
                    }
                    retry_after = None;
                    match f.core.check_validators(f.step, &out.output, f.ctx, f.lex) {
                        Ok(()) => {
                            let mut o = PolicyOutcome {
                                status: StepStatus::Completed,
                                output: out.output,
                                feedback: None,
                                attempts: attempt,
                                tokens,
                                cost_usd: cost,
                                metadata,
                                context_ops: out.context_ops,
                            };
                            tag_model(&mut o, model);
                            return Ok(o);
                        }
                        Err(msg) => last_error = msg,
                    }
                }
                Err(e) => {
                    // What the failed call billed counts for the step (and was reconciled in the quota).
                    tokens.add(e.tokens);
                    cost += e.cost_usd;
                    metadata.extend(*e.metadata);
                    if let Some(i) = over_limits((f.step, f.run, f.path), tokens, cost) {
                        let o = PolicyOutcome {
                            tokens,
                            cost_usd: cost,
                            metadata,
                            attempts: attempt,
                            ..PolicyOutcome::success(Value::Null)
                        };
                        return Ok(stopped((f.step, f.run, f.path), i, o, model));
                    }
                    last_error = e.message;
                    retry_after = e.retry_after;
                    if !e.retryable {
                        return Ok(fail(last_error, attempt, tokens, cost, metadata));
                    }
                }
            }
        }
        Ok(fail(last_error, max_attempts, tokens, cost, metadata))
    }
}

/// Names the model whose usage the record carries (see [`META_MODEL`]), unless the agent named it (the
/// model of a fallback chain that answered).
fn tag_model(o: &mut PolicyOutcome, model: Option<&str>) {
    if let Some(m) = model {
        o.metadata.entry(META_MODEL).or_insert_with(|| m.into());
    }
}

/// A step whose model agent offers tools: each attempt is one journaled conversation (attempt `a > 1` under
/// `P/attempt:a`), validated like any step output.
async fn tool_step(
    f: &ExecutionFrame<'_>,
    turn: &Arc<dyn flujo_core::Skill>,
    target: &str,
    set: &crate::prepare::ToolSet,
    max_attempts: u32,
) -> Result<PolicyOutcome, Interrupt> {
    let mut tokens = flujo_core::TokenUsage::default();
    let mut cost = 0.0;
    let mut last = PolicyOutcome::failure(Value::Null, "no attempt was made");
    for attempt in 1..=max_attempts {
        if attempt > 1 {
            if let Some(wait) = f.run.retry_delay(f.path, attempt - 1, None) {
                tokio::time::sleep(wait).await;
            }
        }
        let base = if attempt == 1 {
            f.path.to_owned()
        } else {
            crate::executor::child_path(f.path, format_args!("attempt:{attempt}"))
        };
        let mut o = match run_tool_loop(f, turn, target, set, &base).await {
            Ok(o) => o,
            // The budget refused this attempt's first call: the earlier attempts' paid work stays recorded.
            Err(e) if cost > 0.0 || tokens.total() > 0 => {
                let mut o = crate::executor::stopped_outcome(f.run, e, Value::Null, tokens, cost)?;
                o.attempts = attempt - 1;
                tag_model(&mut o, Some(target));
                return Ok(o);
            }
            Err(e) => return Err(e),
        };
        tokens.add(o.tokens);
        cost += o.cost_usd;
        o.attempts = attempt;
        o.tokens = tokens;
        o.cost_usd = cost;
        if let Some(i) = over_limits((f.step, f.run, f.path), tokens, cost) {
            return Ok(stopped((f.step, f.run, f.path), i, o, Some(target)));
        }
        if o.metadata.contains_key(META_STOPPED) {
            return Ok(o);
        }
        if o.status == StepStatus::Completed {
            if let Err(msg) = f.core.check_validators(f.step, &o.output, f.ctx, f.lex) {
                o = PolicyOutcome { status: StepStatus::Failed, feedback: Some(msg), output: Value::Null, ..o };
            }
        }
        if o.status == StepStatus::Completed {
            return Ok(o);
        }
        last = o;
    }
    Ok(last)
}

/// The interrupt that stops the run when the step's own limits or the run's budget are used up.
fn over_limits(f: Frame<'_>, tokens: flujo_core::TokenUsage, cost: f64) -> Option<Interrupt> {
    let (step, run, path) = f;
    if let Err(i) = check_step_limits(step, tokens, cost, path) {
        return Some(i);
    }
    run.quota.exhausted().map(|message| Interrupt::UsageLimitExceeded { path: path.to_owned(), message })
}

/// The parts of an [`ExecutionFrame`] the limit checks read (its input may have been moved).
type Frame<'a> = (&'a flujo_core::Step, &'a crate::executor::RunState, &'a str);

/// The step's paid work when the budget stops the run after its call: a failed outcome marked
/// [`META_STOPPED`] (the executor journals it, keeps it in the result and then stops the run).
fn stopped(f: Frame<'_>, interrupt: Interrupt, mut o: PolicyOutcome, model: Option<&str>) -> PolicyOutcome {
    let i = f.1.stop_with(interrupt);
    o.status = StepStatus::Failed;
    o.feedback = Some(i.to_string());
    o.metadata.insert(META_STOPPED.into(), Value::String(i.kind().into()));
    tag_model(&mut o, model);
    o
}

fn check_step_limits(
    step: &flujo_core::Step,
    tokens: flujo_core::TokenUsage,
    cost: f64,
    path: &str,
) -> Result<(), Interrupt> {
    let Some(limits) = &step.usage_limits else { return Ok(()) };
    if let Some(l) = limits.total_cost_usd_limit {
        if cost > l + 1e-12 {
            return Err(Interrupt::UsageLimitExceeded {
                path: path.to_owned(),
                message: format!("step '{}' cost {cost:.6} USD exceeds its limit {l}", step.name),
            });
        }
    }
    if let Some(l) = limits.total_tokens_limit {
        if tokens.total() > l {
            return Err(Interrupt::UsageLimitExceeded {
                path: path.to_owned(),
                message: format!("step '{}' used {} tokens, over its limit {l}", step.name, tokens.total()),
            });
        }
    }
    Ok(())
}
