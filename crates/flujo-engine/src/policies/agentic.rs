//! Tool use: `agentic_loop` (a planner model chooses tools turn by turn until it answers, SPEC §3) and a plain
//! `step` whose model agent declares `tools:` share one journaled conversation loop, [`run_tool_loop`].
//!
//! The transcript is rebuilt deterministically from journaled calls: each model turn is a record at
//! `P/turn:N` (its output is the reply: content and tool calls) and each tool call a record at
//! `P/turn:N/tool:J`. A run killed between a tool call and the next model turn resumes by replaying both, so
//! no completed call — model or tool — is made twice. An answer that violates the agent's `output_schema` is
//! re-asked (a further turn, bounded by the agent's `max_retries`).

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{Interrupt, Skill, StepKind, TokenUsage, Value};
use serde_json::json;

use crate::executor::child_path;
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};
use crate::prepare::ToolSet;

/// The policy of `kind: agentic_loop`: a planner model chooses tools turn by turn until it answers; each model
/// turn and tool call is journaled, so a resumed run makes no completed call twice.
pub struct AgenticLoopPolicy;

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl StepPolicy for AgenticLoopPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::AgenticLoop(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "agentic_loop policy used for another kind"));
        };
        let (Some(planner), Some(set)) =
            (f.core.prepared.agent(&spec.planner), f.core.prepared.tool_set(&spec.planner))
        else {
            return Ok(PolicyOutcome::failure(Value::Null, "the planner was not resolved when the runner was built"));
        };
        let target = crate::executor::agent_target(&spec.planner);
        let mut o = run_tool_loop(&f, planner, target, set, f.path).await?;
        o.metadata.entry(crate::executor::META_MODEL).or_insert_with(|| target.into());
        Ok(o)
    }
}

/// Compact JSON of tool arguments for `--live`, at most 120 characters.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 120 {
        return text;
    }
    let mut s: String = text.chars().take(119).collect();
    s.push('…');
    s
}

/// One conversation: model turns at `base/turn:N`, tool calls at `base/turn:N/tool:J`, until the model
/// answers without calling a tool (the step's output), `set.max_turns` is reached, or a turn fails (both a
/// step failure). Tool errors are reported to the model, which may recover.
pub(crate) async fn run_tool_loop(
    f: &ExecutionFrame<'_>,
    planner: &Arc<dyn Skill>,
    target: &str,
    set: &ToolSet,
    base: &str,
) -> Result<PolicyOutcome, Interrupt> {
    let tool_specs: Vec<Value> = set
        .tools
        .iter()
        .map(|(id, skill)| {
            let info = skill.info();
            json!({"id": id, "description": info.description, "input_schema": info.input_schema})
        })
        .collect();
    let ctx: &flujo_core::Context = f.ctx;
    let mut messages = vec![json!({"role": "user", "content": as_text(&f.input)})];
    let mut tokens = TokenUsage::default();
    let mut cost = 0.0;
    let mut tool_calls_made = 0u32;
    let mut reasks = 0u32;
    let mut finish_reason: Option<String> = None;
    let mut warnings: Vec<Value> = Vec::new();
    let finish = |mut o: PolicyOutcome, tokens: TokenUsage, cost: f64, turns: u32, calls: u32| {
        o.tokens = tokens;
        o.cost_usd = cost;
        o.metadata.insert("turns".into(), turns.into());
        o.metadata.insert("tool_calls".into(), calls.into());
        o
    };
    let annotate = |mut o: PolicyOutcome, finish_reason: &Option<String>, warnings: &[Value]| {
        if let Some(r) = finish_reason {
            o.metadata.insert("finish_reason".into(), Value::String(r.clone()));
        }
        if !warnings.is_empty() {
            o.metadata.insert("warnings".into(), Value::Array(warnings.to_vec()));
        }
        o
    };
    for turn in 0..set.max_turns {
        let turn_path = child_path(base, format_args!("turn:{turn}"));
        let input = json!({"input": f.input, "messages": messages, "tools": tool_specs});
        let reply = match f
            .core
            .journaled_call(f.step, planner, target, "model_turn", input, ctx, f.lex.this, turn_path.clone(), f.run)
            .await
        {
            Ok(r) => r,
            // The budget stopped the run: the turns already paid for stay in this step's figures.
            Err(e) => {
                let o = crate::executor::stopped_outcome(f.run, e, Value::Null, tokens, cost)?;
                return Ok(finish(o, tokens, cost, turn, tool_calls_made));
            }
        };
        let (reply, (t, c)) = match reply {
            Ok(r) => r,
            Err((e, (t, c))) => {
                // A failed turn still counts what the provider billed for it.
                tokens.add(t);
                cost += c;
                let o = PolicyOutcome::failure(Value::Null, format!("model turn {turn} failed: {e}"));
                return Ok(finish(o, tokens, cost, turn + 1, tool_calls_made));
            }
        };
        tokens.add(t);
        cost += c;
        if let Some(r) = reply.get("finish_reason").and_then(Value::as_str) {
            finish_reason = Some(r.to_owned());
        }
        for w in reply.get("warnings").and_then(Value::as_array).into_iter().flatten() {
            warnings.push(w.clone());
        }
        let calls = reply.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
        let content = reply.get("content").cloned().unwrap_or(Value::Null);
        if calls.is_empty() {
            if let Some(violation) = reply.get("schema_error").and_then(Value::as_str) {
                if reasks >= set.max_reasks {
                    let o = PolicyOutcome::failure(
                        Value::Null,
                        format!("the answer violates the output schema after {} attempt(s): {violation}", reasks + 1),
                    );
                    return Ok(finish(o, tokens, cost, turn + 1, tool_calls_made));
                }
                reasks += 1;
                f.run.emit_live(|| flujo_core::RunEvent::ModelAttempt {
                    run_id: f.run.run_id.to_string(),
                    path: f.path.to_owned(),
                    step: f.step.name.clone(),
                    attempt: reasks + 1,
                });
                let reask = reply.get("reask").map(as_text).unwrap_or_else(|| violation.to_owned());
                messages.push(json!({"role": "assistant", "content": as_text(&content)}));
                messages.push(json!({"role": "user", "content": reask}));
                continue;
            }
            let output = match &content {
                _ if reply.get("structured") == Some(&Value::Bool(true)) => content.clone(),
                // A JSON answer stays JSON; prose stays a string.
                Value::String(s) => serde_json::from_str::<Value>(s)
                    .ok()
                    .filter(|v| v.is_object() || v.is_array())
                    .unwrap_or(content.clone()),
                other => other.clone(),
            };
            let o = finish(PolicyOutcome::success(output), tokens, cost, turn + 1, tool_calls_made);
            return Ok(annotate(o, &finish_reason, &warnings));
        }
        let mut assistant =
            json!({"role": "assistant", "content": content.as_str().unwrap_or_default(), "tool_calls": calls});
        // The model's reasoning goes back with its tool calls (providers that sign it require it).
        if let Some(r) = reply.get("reasoning").filter(|r| r.as_array().is_some_and(|a| !a.is_empty())) {
            assistant["reasoning"] = r.clone();
        }
        messages.push(assistant);
        for (j, call) in calls.iter().enumerate() {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let call_id = call.get("id").and_then(Value::as_str).unwrap_or_default();
            let args = call.get("arguments").cloned().unwrap_or(Value::Null);
            let found = set.tools.iter().find(|(id, _)| id.as_str() == name);
            let (result, ok) = match found {
                Some((id, skill)) if call.get("unknown") != Some(&Value::Bool(true)) => {
                    let tool_path = child_path(&turn_path, format_args!("tool:{j}"));
                    tool_calls_made += 1;
                    let live = !f.run.has_record(&tool_path);
                    if live {
                        f.run.emit_live(|| flujo_core::RunEvent::ToolCall {
                            run_id: f.run.run_id.to_string(),
                            path: tool_path.clone(),
                            step: f.step.name.clone(),
                            tool: id.clone(),
                            arguments: short(&args),
                        });
                    }
                    let res = f
                        .core
                        .journaled_call(f.step, skill, id, "tool_call", args, ctx, f.lex.this, tool_path.clone(), f.run)
                        .await;
                    let res = match res {
                        Ok(r) => r,
                        Err(e) => {
                            let o = crate::executor::stopped_outcome(f.run, e, Value::Null, tokens, cost)?;
                            return Ok(finish(o, tokens, cost, turn + 1, tool_calls_made));
                        }
                    };
                    let (result, ok) = match res {
                        Ok((v, (t, c))) => {
                            tokens.add(t);
                            cost += c;
                            (as_text(&v), true)
                        }
                        Err((e, (t, c))) => {
                            tokens.add(t);
                            cost += c;
                            (format!("error: {e}"), false)
                        }
                    };
                    if live {
                        f.run.emit_live(|| flujo_core::RunEvent::ToolResult {
                            run_id: f.run.run_id.to_string(),
                            path: tool_path,
                            step: f.step.name.clone(),
                            tool: id.clone(),
                            ok,
                        });
                    }
                    (result, ok)
                }
                _ => {
                    // Named as the model knows the tools: the names it was offered, not skill ids.
                    let available: Vec<String> = match call.get("available").and_then(Value::as_array) {
                        Some(names) => names.iter().map(as_text).collect(),
                        None => set.tools.iter().map(|(id, _)| id.clone()).collect(),
                    };
                    (format!("error: unknown tool '{name}' (available: {})", available.join(", ")), false)
                }
            };
            let mut message = json!({"role": "tool", "tool_call_id": call_id, "content": result});
            if !ok {
                message["is_error"] = Value::Bool(true);
            }
            messages.push(message);
        }
    }
    let o = PolicyOutcome::failure(
        Value::Null,
        format!("no answer within max_turns ({}): the model kept calling tools", set.max_turns),
    );
    Ok(finish(o, tokens, cost, set.max_turns, tool_calls_made))
}
