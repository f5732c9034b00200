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
        o.metadata.insert(crate::executor::META_MODEL.into(), target.into());
        Ok(o)
    }
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
    let finish = |mut o: PolicyOutcome, tokens: TokenUsage, cost: f64, turns: u32, calls: u32| {
        o.tokens = tokens;
        o.cost_usd = cost;
        o.metadata.insert("turns".into(), turns.into());
        o.metadata.insert("tool_calls".into(), calls.into());
        o
    };
    for turn in 0..set.max_turns {
        let turn_path = child_path(base, format_args!("turn:{turn}"));
        let input = json!({"input": f.input, "messages": messages, "tools": tool_specs});
        let reply = f
            .core
            .journaled_call(f.step, planner, target, "model_turn", input, ctx, f.lex.this, turn_path.clone(), f.run)
            .await?;
        let (reply, (t, c)) = match reply {
            Ok(r) => r,
            Err(e) => {
                let o = PolicyOutcome::failure(Value::Null, format!("model turn {turn} failed: {e}"));
                return Ok(finish(o, tokens, cost, turn + 1, tool_calls_made));
            }
        };
        tokens.add(t);
        cost += c;
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
            return Ok(finish(PolicyOutcome::success(output), tokens, cost, turn + 1, tool_calls_made));
        }
        messages
            .push(json!({"role": "assistant", "content": content.as_str().unwrap_or_default(), "tool_calls": calls}));
        for (j, call) in calls.iter().enumerate() {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let call_id = call.get("id").and_then(Value::as_str).unwrap_or_default();
            let args = call.get("arguments").cloned().unwrap_or(Value::Null);
            let result = match set.tools.iter().find(|(id, _)| id.as_str() == name) {
                None => {
                    let available: Vec<&str> = set.tools.iter().map(|(id, _)| id.as_str()).collect();
                    format!("error: unknown tool '{name}' (available: {})", available.join(", "))
                }
                Some((id, skill)) => {
                    let tool_path = child_path(&turn_path, format_args!("tool:{j}"));
                    tool_calls_made += 1;
                    match f
                        .core
                        .journaled_call(f.step, skill, id, "tool_call", args, ctx, f.lex.this, tool_path, f.run)
                        .await?
                    {
                        Ok((v, (t, c))) => {
                            tokens.add(t);
                            cost += c;
                            as_text(&v)
                        }
                        Err(e) => format!("error: {e}"),
                    }
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": result}));
        }
    }
    let o = PolicyOutcome::failure(
        Value::Null,
        format!("no answer within max_turns ({}): the model kept calling tools", set.max_turns),
    );
    Ok(finish(o, tokens, cost, set.max_turns, tool_calls_made))
}
