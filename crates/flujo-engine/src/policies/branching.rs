//! `conditional`, `parallel` and `dynamic_router`.
//!
//! Parallel branches run concurrently (on one task, interleaved at every await) on isolated context copies.
//! When a branch pauses, finished siblings are *not* merged yet: their records are committed, so on resume
//! they replay and the merge happens once, when every branch has finished.

use async_trait::async_trait;
use flujo_core::{
    Branch, Interrupt, MergeStrategy, OnBranchFailure, ReduceMode, StepKind, StepStatus, TokenUsage, Value,
};

use crate::executor::{child_path, stopped_outcome, SeqOutcome};
use crate::merge::{merge_branches, reduce};
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};

/// The policy of `kind: conditional`: computes a branch key (from `condition_expression`, the `condition`
/// agent, or else the input) and runs the branch of that name, or the default branch; with neither, the step
/// fails.
pub struct ConditionalPolicy;

/// The branch key of a condition value: strings as is, booleans `true`/`false`, others as JSON text.
fn branch_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

#[async_trait]
impl StepPolicy for ConditionalPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Conditional(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "conditional policy used for another kind"));
        };
        // What the condition agent's call used (the step's own usage, with its branch's).
        let mut decided = (TokenUsage::default(), 0.0);
        let key_value = if let Some(expr) = &spec.condition_expression {
            match f.core.eval_expr(expr, &f.input, f.ctx, f.lex, &[]) {
                Ok(v) => v,
                Err(e) => return Ok(PolicyOutcome::failure(Value::Null, format!("condition_expression: {e}"))),
            }
        } else if let Some(agent) = &spec.condition {
            let path = child_path(f.path, "condition");
            match f.core.journaled_decision(f.step, agent, f.input.clone(), f.ctx, f.lex.this, path, f.run).await? {
                Ok((v, used)) => {
                    decided = used;
                    v
                }
                Err((e, used)) => {
                    let o = PolicyOutcome::failure(Value::Null, format!("condition: {e}"));
                    return Ok(with_usage(o, used));
                }
            }
        } else {
            f.input.clone()
        };
        let key = branch_key(&key_value);
        let (label, steps) = match spec.branches.iter().find(|Branch { name: n, .. }| *n == key) {
            Some(Branch { name: n, steps: s, .. }) => (format!("branch:{n}"), s),
            None => match &spec.default_branch {
                Some(d) => ("default".to_owned(), d),
                None => {
                    let o = PolicyOutcome::failure(Value::Null, format!("no branch for key '{key}'"))
                        .with_meta("branch_key", Value::String(key));
                    return Ok(with_usage(o, decided));
                }
            },
        };
        let base = child_path(f.path, &label);
        let seq = f.core.run_sequence(steps, f.input, f.ctx, &base, f.lex, f.run, None).await?;
        let mut o = if seq.succeeded() {
            PolicyOutcome::success(seq.output)
        } else {
            PolicyOutcome::failure(seq.output, format!("branch '{key}' failed: {}", seq.feedback.unwrap_or_default()))
        };
        o.tokens = seq.tokens;
        o.cost_usd = seq.cost_usd;
        let mut o = with_usage(o, decided);
        o.metadata.insert("branch_key".into(), Value::String(key));
        o.metadata.insert("executed_branch".into(), Value::String(label));
        Ok(o)
    }
}

/// The policy of `kind: parallel`: runs every branch concurrently on an isolated copy of the context, then
/// merges the context changes of the branches that succeeded by `merge_strategy`. The output is an object of
/// branch outputs by branch name, or what `reduce` makes of them. With `on_branch_failure: propagate` (the
/// default), a failed branch fails the step.
pub struct ParallelPolicy;

#[async_trait]
impl StepPolicy for ParallelPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Parallel(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "parallel policy used for another kind"));
        };
        let branches: Vec<&Branch> = spec.branches.iter().collect();
        run_branches(
            f,
            &branches,
            spec.merge_strategy,
            spec.on_branch_failure,
            spec.context_include_keys.as_deref(),
            spec.reduce,
        )
        .await
    }
}

/// The policy of `kind: dynamic_router`: asks the router agent (a journaled decision) for one branch name or a
/// list of names, and runs those branches like [`ParallelPolicy`].
pub struct RouterPolicy;

#[async_trait]
impl StepPolicy for RouterPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::DynamicRouter(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "router policy used for another kind"));
        };
        let path = child_path(f.path, "router");
        let decision = match f
            .core
            .journaled_decision(f.step, &spec.router_agent, f.input.clone(), f.ctx, f.lex.this, path, f.run)
            .await?
        {
            Ok(v) => v,
            Err((e, used)) => {
                return Ok(with_usage(PolicyOutcome::failure(Value::Null, format!("router_agent failed: {e}")), used))
            }
        };
        let (decision, decided) = decision;
        let chosen: Vec<String> = match &decision {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => {
                items.iter().map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).collect()
            }
            other => {
                let o = PolicyOutcome::failure(
                    Value::Null,
                    format!("router_agent must return a branch name or a list of names, got {other}"),
                );
                return Ok(with_usage(o, decided));
            }
        };
        let known: Vec<&str> = spec.branches.iter().map(|Branch { name: n, .. }| n.as_str()).collect();
        let unknown: Vec<&String> = chosen.iter().filter(|c| !known.contains(&c.as_str())).collect();
        if !unknown.is_empty() {
            return Ok(with_usage(
                PolicyOutcome::failure(
                    Value::Null,
                    format!(
                        "router chose unknown branch(es) {} (known: {})",
                        unknown.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(", "),
                        known.join(", ")
                    ),
                ),
                decided,
            ));
        }
        let branches: Vec<&Branch> = spec.branches.iter().filter(|Branch { name: n, .. }| chosen.contains(n)).collect();
        let mut o = run_branches(
            f,
            &branches,
            spec.merge_strategy,
            spec.on_branch_failure,
            spec.context_include_keys.as_deref(),
            spec.reduce,
        )
        .await?;
        o.metadata.insert("routed_to".into(), Value::Array(chosen.into_iter().map(Value::String).collect()));
        Ok(with_usage(o, decided))
    }
}

/// `o` with a decision's usage added to its own.
pub(crate) fn with_usage(mut o: PolicyOutcome, (tokens, cost): (TokenUsage, f64)) -> PolicyOutcome {
    o.tokens.add(tokens);
    o.cost_usd += cost;
    o
}

/// Runs `branches` concurrently on isolated contexts, then merges and reduces.
pub(crate) async fn run_branches(
    f: ExecutionFrame<'_>,
    branches: &[&Branch],
    merge: MergeStrategy,
    on_failure: OnBranchFailure,
    include_keys: Option<&[String]>,
    reduce_mode: Option<ReduceMode>,
) -> Result<PolicyOutcome, Interrupt> {
    let core = f.core;
    let run = f.run;
    let lex = f.lex;
    let path = f.path;
    let input = &f.input;
    let futs = branches.iter().map(|Branch { name, steps, .. }| {
        let mut ctx = f.ctx.isolated(include_keys);
        let base = child_path(path, format_args!("branch:{name}"));
        async move {
            let r = core.run_sequence(steps, input.clone(), &mut ctx, &base, lex, run, None).await;
            (name.as_str(), r, ctx)
        }
    });
    let results: Vec<(&str, Result<SeqOutcome, Interrupt>, flujo_core::Context)> =
        futures::future::join_all(futs).await;

    let mut pauses = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut ok: Vec<(String, Value)> = Vec::new();
    let mut branch_ops = Vec::new();
    let mut tokens = TokenUsage::default();
    let mut cost = 0.0;
    let mut hard_error = None;
    for (name, r, ctx) in results {
        match r {
            Err(Interrupt::Paused(p)) => pauses.extend(p),
            Err(other) => {
                if hard_error.is_none() {
                    hard_error = Some(other);
                }
            }
            Ok(seq) => {
                tokens.add(seq.tokens);
                cost += seq.cost_usd;
                if seq.succeeded() {
                    ok.push((name.to_owned(), seq.output));
                    branch_ops.push((name.to_owned(), ctx.log().to_vec()));
                } else {
                    failed.push((name.to_owned(), seq.feedback.unwrap_or_default()));
                }
            }
        }
    }
    if let Some(e) = hard_error {
        // The budget (or pricing) stopped the run: keep what the finished branches paid for in this step's
        // record and result (the executor then stops the run).
        let mut o = stopped_outcome(run, e, Value::Object(ok.into_iter().collect()), tokens, cost)?;
        if !failed.is_empty() {
            o.metadata.insert(
                "failed_branches".into(),
                Value::Object(failed.into_iter().map(|(n, m)| (n, Value::String(m))).collect()),
            );
        }
        return Ok(o);
    }
    if on_failure == OnBranchFailure::Propagate && !failed.is_empty() {
        let msg = failed.iter().map(|(n, m)| format!("branch '{n}' failed: {m}")).collect::<Vec<_>>().join("; ");
        let mut o = PolicyOutcome::failure(Value::Null, msg);
        o.tokens = tokens;
        o.cost_usd = cost;
        o.metadata.insert(
            "failed_branches".into(),
            Value::Array(failed.into_iter().map(|(n, _)| Value::String(n)).collect()),
        );
        return Ok(o);
    }
    if !pauses.is_empty() {
        return Err(Interrupt::Paused(pauses));
    }
    let ops = match merge_branches(merge, &branch_ops) {
        Ok(ops) => ops,
        Err(msg) => {
            let mut o = PolicyOutcome::failure(Value::Null, msg);
            o.tokens = tokens;
            o.cost_usd = cost;
            return Ok(o);
        }
    };
    for op in ops {
        if let Err(e) = f.ctx.apply(op) {
            let mut o = PolicyOutcome::failure(Value::Null, format!("merging branch contexts: {e}"));
            o.tokens = tokens;
            o.cost_usd = cost;
            return Ok(o);
        }
    }
    let output = match reduce_mode {
        Some(mode) => reduce(mode, &ok),
        None => Value::Object(ok.into_iter().collect()),
    };
    let mut o = PolicyOutcome { status: StepStatus::Completed, ..PolicyOutcome::success(output) };
    o.tokens = tokens;
    o.cost_usd = cost;
    if !failed.is_empty() {
        o.metadata.insert(
            "failed_branches".into(),
            Value::Object(failed.into_iter().map(|(n, m)| (n, Value::String(m))).collect()),
        );
    }
    Ok(o)
}
