//! `cache`, `import` (sub-pipelines) and `state_machine`: kinds that run other steps in a new frame.

use async_trait::async_trait;
use flujo_core::{
    Branch, Context, InputTo, Interrupt, OnImportFailure, PatchOp, StepKind, StepStatus, TransitionOn, Value,
};

use crate::executor::{child_path, Lexical};
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};

/// The policy of `kind: cache`: returns the cached output of the wrapped step for the same step and input,
/// or runs the wrapped step and caches a successful output (with the spec's `ttl_s`). A journaled execution
/// of the wrapped step wins over the cache on replay.
pub struct CachePolicy;

#[async_trait]
impl StepPolicy for CachePolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Cache(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "cache policy used for another kind"));
        };
        let mut h = blake3::Hasher::new();
        h.update(f.core.prepared.fingerprint(&spec.wrapped_step).as_bytes());
        h.update(&serde_json::to_vec(&f.input).unwrap_or_default());
        let key: [u8; 32] = *h.finalize().as_bytes();
        let path = child_path(f.path, "wrapped");
        // A journaled wrapped execution wins over the cache: replay must reproduce what was committed.
        let hit = if f.run.has_record(&path) { None } else { f.core.cache.get(&key) };
        if let Some(hit) = hit {
            return Ok(PolicyOutcome::success((*hit).clone())
                .with_meta("cache_hit", Value::Bool(true))
                .with_meta("cache_key", Value::String(blake3::Hash::from(key).to_hex().to_string())));
        }
        let r = f.core.execute_step(&spec.wrapped_step, f.input, f.ctx, path, f.lex, f.run).await?;
        if r.succeeded() {
            f.core.cache.put(key, r.output.clone(), spec.ttl_s);
        }
        let mut o = if r.succeeded() {
            PolicyOutcome::success((*r.output).clone())
        } else {
            PolicyOutcome::failure((*r.output).clone(), r.feedback.clone().unwrap_or_default())
        };
        o.attempts = r.attempts;
        o.tokens = r.tokens;
        o.cost_usd = r.cost_usd;
        o.metadata.insert("cache_hit".into(), Value::Bool(false));
        Ok(o)
    }
}

/// The policy of `kind: import`: runs an imported pipeline's steps, on the step's context
/// (`inherit_context`) or on a new one whose chosen fields are copied back by the output mappings; on failure
/// it fails, or passes its input on, or outputs its default, as `on_failure` says.
pub struct ImportPolicy;

#[async_trait]
impl StepPolicy for ImportPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Import(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "import policy used for another kind"));
        };
        let child = &spec.pipeline;
        let schema = child.context_schema.as_ref().and_then(|s| f.core.prepared.schema(s));
        let lex = Lexical { this: f.lex.this, schema, siblings: &[] };
        let base = child_path(f.path, "import");
        let input = f.input.clone();
        let seq = if spec.inherit_context {
            f.core.run_sequence(&child.steps, f.input, f.ctx, &base, &lex, f.run, None).await?
        } else {
            let prompt = match spec.input_to {
                InputTo::ImportArtifacts => Value::String(String::new()),
                _ => f.input.clone(),
            };
            let mut child_ctx = Context::new(&f.run.run_id, prompt, Default::default());
            if matches!(spec.input_to, InputTo::ImportArtifacts | InputTo::Both) {
                let _ = child_ctx.apply(PatchOp::set(vec!["import_artifacts".into()], f.input.clone()));
            }
            let seq = f.core.run_sequence(&child.steps, f.input, &mut child_ctx, &base, &lex, f.run, None).await?;
            if seq.succeeded() {
                for m in &spec.outputs {
                    let value = child_ctx
                        .lookup(&flujo_core::patch::split_context_path(&m.child))
                        .cloned()
                        .unwrap_or(Value::Null);
                    if let Err(e) = f.ctx.apply(PatchOp::set(flujo_core::patch::split_context_path(&m.parent), value)) {
                        // The child's paid work is the step's all the same.
                        let mut o =
                            PolicyOutcome::failure(Value::Null, format!("import output mapping '{}': {e}", m.parent));
                        o.tokens = seq.tokens;
                        o.cost_usd = seq.cost_usd;
                        return Ok(o);
                    }
                }
            }
            seq
        };
        let mut o = if seq.succeeded() {
            PolicyOutcome::success(seq.output)
        } else {
            let msg = format!("import '{}' failed: {}", spec.alias, seq.feedback.unwrap_or_default());
            match spec.on_failure {
                OnImportFailure::Skip => PolicyOutcome::success(input).with_meta("import_failure", Value::String(msg)),
                OnImportFailure::ContinueWithDefault => {
                    PolicyOutcome::success(spec.default_output.clone()).with_meta("import_failure", Value::String(msg))
                }
                _ => PolicyOutcome::failure(seq.output, msg),
            }
        };
        o.tokens = seq.tokens;
        o.cost_usd = seq.cost_usd;
        Ok(o)
    }
}

/// The policy of `kind: state_machine`: runs the steps of the current state, then follows the first matching
/// transition, until an end state completes; more than `max_hops` hops stop the run with
/// [`Interrupt::InfiniteRedirect`].
pub struct StateMachinePolicy;

/// How many answers to pauses the run has received so far (`hitl_history`, appended by each answered `hitl`
/// step, also when it is replayed).
fn answers(ctx: &flujo_core::Context) -> usize {
    ctx.field("hitl_history").and_then(|v| v.as_array()).map_or(0, Vec::len)
}

/// The original's `output` object of a transition's `when`: `{event, last_output, last_step: {name, success,
/// feedback}}`.
fn transition_payload(event: TransitionOn, seq: &crate::executor::SeqOutcome) -> Value {
    let event = match event {
        TransitionOn::Success => "success",
        TransitionOn::Failure => "failure",
        TransitionOn::Pause => "pause",
        _ => "other",
    };
    let last_step = match &seq.last_step {
        Some((name, feedback)) => serde_json::json!({
            "name": name,
            "success": seq.succeeded(),
            "feedback": feedback,
        }),
        None => Value::Null,
    };
    serde_json::json!({"event": event, "last_output": seq.output, "last_step": last_step})
}

#[async_trait]
impl StepPolicy for StateMachinePolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::StateMachine(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "state machine policy used for another kind"));
        };
        let mut current = spec.start_state.clone();
        let mut input = f.input;
        let mut visited: Vec<Value> = Vec::new();
        let mut tokens = flujo_core::TokenUsage::default();
        let mut cost = 0.0;
        for hop in 0..=spec.max_hops {
            let Some(Branch { steps, .. }) = spec.states.iter().find(|Branch { name: n, .. }| *n == current) else {
                let mut o = PolicyOutcome::failure(Value::Null, format!("unknown state '{current}'"));
                o.tokens = tokens;
                o.cost_usd = cost;
                return Ok(o);
            };
            visited.push(Value::String(current.clone()));
            let base = child_path(f.path, format_args!("state:{current}@{hop}"));
            let answers_before = answers(f.ctx);
            let seq = f.core.run_sequence(steps, input, f.ctx, &base, f.lex, f.run, None).await?;
            tokens.add(seq.tokens);
            cost += seq.cost_usd;
            let on = if seq.succeeded() { TransitionOn::Success } else { TransitionOn::Failure };
            let is_end = spec.end_states.contains(&current);
            let mut next = None;
            if !is_end {
                // A human answered a pause during this state: `on: pause` rules come first (a rule back to the
                // same state is the state receiving its answer, which has happened: it is not a new hop).
                let answered = answers(f.ctx) > answers_before;
                let events: &[TransitionOn] =
                    if answered { &[TransitionOn::Pause, on] } else { std::slice::from_ref(&on) };
                'events: for &event in events {
                    let payload = transition_payload(event, &seq);
                    for t in &spec.transitions {
                        if !((t.from == current || t.from == "*") && t.on == event) {
                            continue;
                        }
                        if event == TransitionOn::Pause && t.to == current {
                            continue;
                        }
                        let take = match &t.when {
                            None => true,
                            Some(w) => {
                                match f.core.eval_bool_with(w, &seq.output, f.ctx, f.lex, &[("output", &payload)]) {
                                    Ok(b) => b,
                                    Err(e) => {
                                        // The states' paid work is the step's all the same.
                                        let mut o = PolicyOutcome::failure(seq.output, format!("transition when: {e}"));
                                        o.tokens = tokens;
                                        o.cost_usd = cost;
                                        return Ok(o);
                                    }
                                }
                            }
                        };
                        if take {
                            next = Some(t.to.clone());
                            break 'events;
                        }
                    }
                }
            }
            let finish = |status: StepStatus, output: Value, feedback: Option<String>, visited: Vec<Value>| {
                let mut o = PolicyOutcome::success(output);
                o.status = status;
                o.feedback = feedback;
                o.tokens = tokens;
                o.cost_usd = cost;
                o.metadata.insert("states".into(), Value::Array(visited));
                o
            };
            match (next, on) {
                (Some(to), _) => {
                    current = to;
                    input = seq.output;
                }
                (None, TransitionOn::Success) if is_end => {
                    return Ok(finish(StepStatus::Completed, seq.output, None, visited));
                }
                (None, TransitionOn::Success) => {
                    return Ok(finish(
                        StepStatus::Failed,
                        seq.output,
                        Some(format!("no transition from state '{current}' on success, and it is not an end state")),
                        visited,
                    ));
                }
                (None, _) => {
                    return Ok(finish(
                        StepStatus::Failed,
                        seq.output,
                        Some(format!("state '{current}' failed: {}", seq.feedback.unwrap_or_default())),
                        visited,
                    ));
                }
            }
        }
        Err(Interrupt::InfiniteRedirect {
            path: f.path.to_owned(),
            message: format!("state machine '{}' exceeded max_hops ({})", f.step.name, spec.max_hops),
        })
    }
}
