//! `agentic_loop`: a planner model chooses tools (skills) turn by turn until it answers (SPEC §3).
//!
//! The transcript is rebuilt deterministically from journaled calls: each model turn is a record at
//! `P/turn:N` (its output is the reply: content and tool calls) and each tool call a record at
//! `P/turn:N/tool:J`. A run killed between a tool call and the next model turn resumes by replaying both, so
//! no completed call — model or tool — is made twice.

use async_trait::async_trait;
use flujo_core::{Interrupt, StepKind, TokenUsage, Value};
use serde_json::json;

use crate::executor::child_path;
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};

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
        let Some(planner) = f.core.prepared.agent(&spec.planner) else {
            return Ok(PolicyOutcome::failure(Value::Null, "the planner was not resolved when the runner was built"));
        };
        let mut tools = Vec::with_capacity(spec.tools.len());
        for id in &spec.tools {
            let Some(skill) = f.core.prepared.tool(id) else {
                return Ok(PolicyOutcome::failure(Value::Null, format!("tool '{id}' was not resolved")));
            };
            let info = skill.info();
            tools.push((
                id,
                skill,
                json!({"id": id, "description": info.description, "input_schema": info.input_schema}),
            ));
        }
        let tool_specs: Vec<Value> = tools.iter().map(|(_, _, s)| s.clone()).collect();
        let target = crate::executor::agent_target(&spec.planner);
        let mut messages = vec![json!({"role": "user", "content": as_text(&f.input)})];
        let mut tokens = TokenUsage::default();
        let mut cost = 0.0;
        let mut tool_calls_made = 0u32;
        for turn in 0..spec.max_turns {
            let turn_path = child_path(f.path, format_args!("turn:{turn}"));
            let input = json!({"messages": messages, "tools": tool_specs});
            let reply = f
                .core
                .journaled_call(f.step, planner, target, "model_turn", input, f.ctx, turn_path.clone(), f.run)
                .await?;
            let (reply, (t, c)) = match reply {
                Ok(r) => r,
                Err(e) => {
                    let mut o = PolicyOutcome::failure(Value::Null, format!("planner turn {turn} failed: {e}"));
                    o.tokens = tokens;
                    o.cost_usd = cost;
                    return Ok(o);
                }
            };
            tokens.add(t);
            cost += c;
            let calls = reply.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
            let content = reply.get("content").cloned().unwrap_or(Value::Null);
            if calls.is_empty() {
                let output = match &content {
                    // A JSON answer stays JSON; prose stays a string.
                    Value::String(s) => serde_json::from_str::<Value>(s)
                        .ok()
                        .filter(|v| v.is_object() || v.is_array())
                        .unwrap_or(content.clone()),
                    other => other.clone(),
                };
                let mut o = PolicyOutcome::success(output);
                o.tokens = tokens;
                o.cost_usd = cost;
                o.metadata.insert("turns".into(), (turn + 1).into());
                o.metadata.insert("tool_calls".into(), tool_calls_made.into());
                return Ok(o);
            }
            messages.push(
                json!({"role": "assistant", "content": content.as_str().unwrap_or_default(), "tool_calls": calls}),
            );
            for (j, call) in calls.iter().enumerate() {
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                let call_id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                let args = call.get("arguments").cloned().unwrap_or(Value::Null);
                let result = match tools.iter().find(|(id, _, _)| id.as_str() == name) {
                    None => format!("error: unknown tool '{name}' (available: {})", spec.tools.join(", ")),
                    Some((id, skill, _)) => {
                        let tool_path = child_path(&turn_path, format_args!("tool:{j}"));
                        tool_calls_made += 1;
                        match f
                            .core
                            .journaled_call(f.step, skill, id, "tool_call", args, f.ctx, tool_path, f.run)
                            .await?
                        {
                            Ok((v, (t, c))) => {
                                tokens.add(t);
                                cost += c;
                                as_text(&v)
                            }
                            // Tool errors are reported to the planner, which may recover.
                            Err(e) => format!("error: {e}"),
                        }
                    }
                };
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": result}));
            }
        }
        let mut o = PolicyOutcome::failure(
            Value::Null,
            format!("agentic_loop reached max_turns ({}) without an answer", spec.max_turns),
        );
        o.tokens = tokens;
        o.cost_usd = cost;
        Ok(o)
    }
}
