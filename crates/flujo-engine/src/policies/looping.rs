//! `kind: loop` and `kind: map`.
//!
//! Loop iterations run on the step's context directly (every change is journaled as it happens, so a
//! committed change is a fact on replay); map items with `concurrency > 1` run on isolated copies merged back
//! in item order.

use async_trait::async_trait;
use flujo_core::{Interrupt, MergeStrategy, OnMaxLoops, StepKind, StepStatus, TokenUsage, Value};
use futures::StreamExt;

use crate::executor::{child_path, stopped_outcome, truthy, Lexical};
use crate::merge::merge_branches;
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};

/// The policy of `kind: loop`: runs the body on the step's own context up to `max_loops` times, until the exit
/// expression or exit agent says stop; each iteration's input is the previous output (or
/// `iteration_input`).
pub struct LoopPolicy;

#[async_trait]
impl StepPolicy for LoopPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Loop(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "loop policy used for another kind"));
        };
        let has_exit = spec.exit_expression.is_some() || spec.exit_condition.is_some();
        let mut iter_input = f.input;
        let mut last = Value::Null;
        let mut tokens = TokenUsage::default();
        let mut cost = 0.0;
        let mut exited = false;
        let mut iterations = 0u32;
        while iterations < spec.max_loops {
            let base = child_path(f.path, format_args!("loop:{iterations}"));
            let seq = match f.core.run_sequence(&spec.body, iter_input, f.ctx, &base, f.lex, f.run, None).await {
                Ok(seq) => seq,
                // The budget stopped the run: the finished iterations' paid work stays in the result.
                Err(e) => {
                    let mut o = stopped_outcome(f.run, e, last, tokens, cost)?;
                    o.metadata.insert("iterations".into(), iterations.into());
                    return Ok(o);
                }
            };
            iterations += 1;
            tokens.add(seq.tokens);
            cost += seq.cost_usd;
            if !seq.succeeded() {
                let mut o = PolicyOutcome::failure(
                    seq.output,
                    format!("loop iteration {} failed: {}", iterations - 1, seq.feedback.unwrap_or_default()),
                );
                o.tokens = tokens;
                o.cost_usd = cost;
                o.metadata.insert("iterations".into(), iterations.into());
                return Ok(o);
            }
            last = seq.output;
            // A failure from here on still carries what the iterations so far used.
            let failed = |out: Value, message: String, tokens: TokenUsage, cost: f64| {
                let mut o = PolicyOutcome::failure(out, message);
                o.tokens = tokens;
                o.cost_usd = cost;
                o.metadata.insert("iterations".into(), iterations.into());
                o
            };
            if let Some(expr) = &spec.exit_expression {
                match f.core.eval_bool(expr, &last, f.ctx, f.lex) {
                    Ok(true) => exited = true,
                    Ok(false) => {}
                    Err(e) => return Ok(failed(last, format!("exit_expression: {e}"), tokens, cost)),
                }
            } else if let Some(agent) = &spec.exit_condition {
                let path = format!("{base}/exit");
                // The exit agent's usage is the loop's too.
                let decision =
                    f.core.journaled_decision(f.step, agent, last.clone(), f.ctx, f.lex.this, path, f.run).await?;
                let (Ok((_, (t, c))) | Err((_, (t, c)))) = &decision;
                tokens.add(*t);
                cost += c;
                match decision {
                    Ok((v, _)) => exited = truthy(&v),
                    Err((e, _)) => return Ok(failed(last, format!("exit_condition: {e}"), tokens, cost)),
                }
            }
            if exited {
                break;
            }
            iter_input = match &spec.iteration_input {
                Some(tpl) => match f.core.render_value(tpl, &last, f.ctx, f.lex) {
                    Ok(v) => v,
                    Err(e) => return Ok(failed(last, format!("iteration_input: {e}"), tokens, cost)),
                },
                None => last.clone(),
            };
        }
        let reached_max = has_exit && !exited;
        let output = match &spec.output {
            Some(tpl) => match f.core.render_value(tpl, &last, f.ctx, f.lex) {
                Ok(v) => v,
                Err(e) => {
                    let mut o = PolicyOutcome::failure(last, format!("output template: {e}"));
                    o.tokens = tokens;
                    o.cost_usd = cost;
                    return Ok(o);
                }
            },
            None => last,
        };
        let mut o = if reached_max && spec.on_max_loops == OnMaxLoops::Fail {
            PolicyOutcome::failure(
                output,
                format!("reached max_loops ({}) without meeting the exit condition", spec.max_loops),
            )
        } else {
            PolicyOutcome::success(output)
        };
        o.tokens = tokens;
        o.cost_usd = cost;
        o.metadata.insert("iterations".into(), iterations.into());
        o.metadata.insert(
            "exit_reason".into(),
            Value::String(
                if exited {
                    "condition"
                } else if has_exit {
                    "max_loops"
                } else {
                    "count"
                }
                .into(),
            ),
        );
        Ok(o)
    }
}

/// The policy of `kind: map`: runs the body once per item of a list (the input, or `iterable_input`), with
/// `this` bound to the item, one at a time or `concurrency` at a time on isolated contexts; the output is the
/// list of the items' outputs.
pub struct MapPolicy;

#[async_trait]
impl StepPolicy for MapPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Map(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "map policy used for another kind"));
        };
        let items = match &spec.iterable_input {
            None => f.input.clone(),
            Some(src) if flujo_template::is_template(src) => {
                match f.core.render_value(&Value::String(src.clone()), &f.input, f.ctx, f.lex) {
                    Ok(v) => v,
                    Err(e) => return Ok(PolicyOutcome::failure(Value::Null, format!("iterable_input: {e}"))),
                }
            }
            Some(path) => f.ctx.lookup(&flujo_core::patch::split_context_path(path)).cloned().unwrap_or(Value::Null),
        };
        let Value::Array(items) = items else {
            return Ok(PolicyOutcome::failure(
                Value::Null,
                format!(
                    "map input is not a list (iterable_input: {})",
                    spec.iterable_input.as_deref().unwrap_or("<input>")
                ),
            ));
        };
        let max_items = spec.max_items.unwrap_or(flujo_core::DEFAULT_MAX_MAP_ITEMS);
        if items.len() > max_items {
            return Ok(PolicyOutcome::failure(
                Value::Null,
                format!(
                    "map input has {} items, more than max_items ({max_items}); set `max_items` on the map to allow \
                     more",
                    items.len()
                ),
            ));
        }
        let mut outputs = Vec::with_capacity(items.len());
        let mut tokens = TokenUsage::default();
        let mut cost = 0.0;
        if spec.concurrency <= 1 {
            for (i, item) in items.iter().enumerate() {
                let lex = Lexical { this: Some(item), ..*f.lex };
                let base = child_path(f.path, format_args!("map:{i}"));
                let seq = match f.core.run_sequence(&spec.body, item.clone(), f.ctx, &base, &lex, f.run, None).await {
                    Ok(seq) => seq,
                    // The budget stopped the run: the items that finished (and were paid for) stay in the result.
                    Err(e) => return stopped_outcome(f.run, e, Value::Array(outputs), tokens, cost),
                };
                tokens.add(seq.tokens);
                cost += seq.cost_usd;
                if !seq.succeeded() {
                    let mut o = PolicyOutcome::failure(
                        seq.output,
                        format!("map item {i} failed: {}", seq.feedback.unwrap_or_default()),
                    );
                    o.tokens = tokens;
                    o.cost_usd = cost;
                    return Ok(o);
                }
                outputs.push(seq.output);
            }
        } else {
            let base_ctx = f.ctx.isolated(None);
            let core = f.core;
            let run = f.run;
            let lex0 = *f.lex;
            let path = f.path;
            let body = &spec.body;
            let futs: Vec<_> = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let mut ctx = base_ctx.isolated(None);
                    async move {
                        let lex = Lexical { this: Some(item), ..lex0 };
                        let base = child_path(path, format_args!("map:{i}"));
                        let r = core.run_sequence(body, item.clone(), &mut ctx, &base, &lex, run, None).await;
                        (i, r, ctx)
                    }
                })
                .collect();
            let results: Vec<_> = futures::stream::iter(futs).buffered(spec.concurrency).collect().await;
            let mut pauses = Vec::new();
            let mut branch_ops = Vec::new();
            let mut failure = None;
            let mut hard_error = None;
            for (i, r, ctx) in results {
                match r {
                    Err(Interrupt::Paused(p)) => pauses.extend(p),
                    Err(other) => {
                        hard_error.get_or_insert(other);
                    }
                    Ok(seq) => {
                        tokens.add(seq.tokens);
                        cost += seq.cost_usd;
                        if !seq.succeeded() && failure.is_none() {
                            failure =
                                Some(format!("map item {i} failed: {}", seq.feedback.clone().unwrap_or_default()));
                        }
                        outputs.push(seq.output);
                        branch_ops.push((format!("item {i}"), ctx.log().to_vec()));
                    }
                }
            }
            if let Some(e) = hard_error {
                return stopped_outcome(f.run, e, Value::Array(outputs), tokens, cost);
            }
            if let Some(msg) = failure {
                let mut o = PolicyOutcome::failure(Value::Null, msg);
                o.tokens = tokens;
                o.cost_usd = cost;
                return Ok(o);
            }
            if !pauses.is_empty() {
                return Err(Interrupt::Paused(pauses));
            }
            let ops = merge_branches(MergeStrategy::Overwrite, &branch_ops).unwrap_or_default();
            for op in ops {
                if let Err(e) = f.ctx.apply(op) {
                    let mut o = PolicyOutcome::failure(Value::Null, format!("merging map item context: {e}"));
                    o.tokens = tokens;
                    o.cost_usd = cost;
                    return Ok(o);
                }
            }
        }
        let mut o = PolicyOutcome { status: StepStatus::Completed, ..PolicyOutcome::success(Value::Array(outputs)) };
        o.tokens = tokens;
        o.cost_usd = cost;
        o.metadata.insert("items".into(), items.len().into());
        Ok(o)
    }
}
