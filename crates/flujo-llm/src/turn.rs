//! One turn of a tool-using conversation as a [`Skill`], so the engine's tool loop (`agentic_loop`, or a plain
//! step whose agent declares `tools:`) can journal every model turn like any other call (and replay it instead
//! of calling the model again).
//!
//! Input: `{"input": STEP_INPUT?, "messages": [ChatMessage…], "tools": [{"id", "description", "input_schema"}…]}`
//! — tools named by skill id. When the messages carry no system message, the agent's system prompt is
//! prepended, rendered like a plain call's (`previous_step` = `input`, the context, its `variables`).
//!
//! Output: `{"content": string|null, "tool_calls": [{"id", "name": SKILL_ID, "arguments"}…], "finish_reason"?,
//! "warnings"?}` — a call of a tool that was not offered keeps the name the model used, with `"unknown": true`
//! and the offered tool names as `"available"`. A refusal is an error; so is a final answer cut off at
//! `max_tokens` when an output schema is declared (a cut-off text answer is a warning). When the agent
//! declares an `output_schema` and the reply is an answer (no tool calls), the answer is repaired and
//! validated: a valid one is returned as `{"content": VALUE, "tool_calls": [], "structured": true}`, an
//! invalid one as `{"content": TEXT, "tool_calls": [], "schema_error": "…", "reask": "…"}` — the engine
//! re-asks with `reask` as the next user message, bounded by the agent's `max_retries`. With tools offered the
//! schema is stated in the system prompt (a provider's native schema mode would compete with the tools);
//! without, it is sent natively.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{Interrupt, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, Usage, Value};
use serde_json::json;

use crate::agent::LlmAgent;
use crate::chat::{ChatMessage, Role};
use crate::structured::reask_message;
use crate::tools::{ToolChoice, ToolSpec};

/// A parsed turn: the messages, the tools offered, and tool name → skill id.
type Turn = (Vec<ChatMessage>, Vec<ToolSpec>, HashMap<String, String>);

/// A chat-turn skill over a resolved agent.
pub struct TurnSkill {
    agent: Arc<LlmAgent>,
}

impl TurnSkill {
    pub fn new(agent: Arc<LlmAgent>) -> Self {
        TurnSkill { agent }
    }

    fn parse(
        &self,
        input: &Value,
        context: &flujo_core::ContextSnapshot,
        call_this: Option<&Value>,
    ) -> Result<Turn, SkillError> {
        let mut messages: Vec<ChatMessage> =
            serde_json::from_value(input.get("messages").cloned().unwrap_or(json!([])))
                .map_err(|e| SkillError::fatal(format!("agentic turn: bad messages: {e}")))?;
        // Tool calls in the transcript name skills; the provider knows them by their tool names.
        for m in &mut messages {
            for tc in &mut m.tool_calls {
                tc.name = crate::tools::tool_name_for(&tc.name);
            }
        }
        let offers_tools = input.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
        // A multimodal step input: the opening user message carries its parts.
        if let Some(parts) = input
            .get("input")
            .map(crate::media::parts_from_input)
            .transpose()
            .map_err(|e| SkillError::fatal(e.to_string()))?
            .flatten()
        {
            if let Some(first) = messages.iter_mut().find(|m| m.role == Role::User).filter(|m| m.parts.is_empty()) {
                *first = ChatMessage::user_parts(parts);
            }
        }
        if !messages.iter().any(|m| m.role == Role::System) {
            let step_input = input.get("input").unwrap_or(&Value::Null);
            let mut prompt = self
                .agent
                .system_prompt(step_input, Some(context), call_this)
                .map_err(|e| SkillError::fatal(e.to_string()))?
                .unwrap_or_default();
            if let (Some(out), true) = (self.agent.output(), offers_tools) {
                if !prompt.is_empty() {
                    prompt.push_str("\n\n");
                }
                prompt.push_str(&format!(
                    "When you give your final answer (instead of calling a tool), reply with only a JSON value \
                     satisfying this JSON Schema, no prose and no code fences: {}",
                    out.schema()
                ));
            }
            if !prompt.is_empty() {
                messages.insert(0, ChatMessage::system(prompt));
            }
        }
        let mut tools = Vec::new();
        let mut names = HashMap::new();
        for t in input.get("tools").and_then(Value::as_array).into_iter().flatten() {
            let id = t.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let info = {
                let mut info = SkillInfo::default();
                info.id = id.clone();
                info.description = t.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
                info.input_schema = t.get("input_schema").cloned().filter(|v| !v.is_null());
                info
            };
            let spec = ToolSpec::from_skill(&info);
            names.insert(spec.name.clone(), id);
            tools.push(spec);
        }
        Ok((messages, tools, names))
    }
}

#[async_trait]
impl Skill for TurnSkill {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let (messages, tools, names) = self.parse(&call.input, &call.context, call.this.as_deref())?;
        let Some(model) = self.agent.chat_model() else {
            return Err(SkillError::fatal(format!("model '{}' cannot hold a conversation", self.agent.spec().model)));
        };
        let mut settings = self.agent.spec().chat_settings();
        settings.stream = call.deltas.clone();
        // A forced tool choice applies to the opening turn; after tool results the model may answer.
        if messages.iter().any(|m| m.role == Role::Tool)
            && matches!(settings.tool_choice, ToolChoice::Required | ToolChoice::Tool(_))
        {
            settings.tool_choice = ToolChoice::Auto;
        }
        if tools.is_empty() {
            settings.response_schema = self.agent.output().map(|o| o.response_schema().clone());
        }
        let reply = crate::chat::traced_chat(model.as_ref(), &messages, &tools, &settings)
            .await
            .map_err(|e| crate::agent::AgentFailure::before_sending_with_requests(e).into_skill_error())?;
        let price = self.agent.price().ok().flatten();
        let cost_usd = price.map_or(0.0, |p| p.cost(reply.usage));
        let provider = model.provider().to_owned();
        // A failed turn still carries what the provider billed for it.
        let (usage, requests, finish_reason) = (reply.usage, reply.requests.max(1), reply.stop_reason.clone());
        let fail = |error| {
            crate::agent::AgentFailure { error, usage, cost_usd, requests, finish_reason: finish_reason.clone() }
                .into_skill_error()
        };
        if let Some(message) = reply.refusal.clone() {
            return Err(fail(crate::error::LlmError::Refused { provider, message, usage }));
        }
        let offered: Vec<Value> = tools.iter().map(|t| Value::String(t.name.clone())).collect();
        let tool_calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .map(|tc| match names.get(&tc.name) {
                Some(id) => json!({"id": tc.id, "name": id, "arguments": tc.arguments}),
                // A tool that was not offered: the engine reports it to the model under the name it used.
                None => json!({"id": tc.id, "name": tc.name, "arguments": tc.arguments, "unknown": true,
                    "available": offered}),
            })
            .collect();
        let mut warnings = Vec::new();
        let output = match (self.agent.output(), tool_calls.is_empty()) {
            (Some(_), true) if reply.truncated() => {
                return Err(fail(crate::error::LlmError::Truncated {
                    provider,
                    max_tokens: settings.effective_max_tokens(),
                    usage,
                }));
            }
            (Some(schema), true) => {
                let text = reply.content.unwrap_or_default();
                match schema.parse(&text) {
                    Ok(value) => json!({"content": value, "tool_calls": [], "structured": true}),
                    Err(violation) => json!({"content": text, "tool_calls": [], "reask": reask_message(&violation),
                        "schema_error": violation}),
                }
            }
            _ => {
                if reply.truncated() {
                    warnings.push(format!(
                        "the answer was cut off at max_tokens ({}); raise `model_settings.max_tokens` for a complete answer",
                        settings.effective_max_tokens()
                    ));
                }
                json!({"content": reply.content, "tool_calls": tool_calls})
            }
        };
        let mut output = output;
        if let Some(r) = &reply.stop_reason {
            output["finish_reason"] = Value::String(r.clone());
        }
        // Reasoning blocks go back to the model with the tool results (Anthropic requires them there).
        if !reply.reasoning.is_empty() && !reply.tool_calls.is_empty() {
            output["reasoning"] = json!(reply.reasoning);
        }
        if !warnings.is_empty() {
            output["warnings"] = json!(warnings);
        }
        let mut metadata = crate::agent::answer_metadata(reply.stop_reason.clone(), warnings);
        crate::agent::insert_reply_ids(&mut metadata, &self.agent.spec().model, reply.request_id, reply.response_model);
        Ok({
            let mut out = SkillOutput::default();
            out.output = output;
            out.tokens = reply.usage;
            out.cost_usd = cost_usd;
            out.metadata = metadata;
            out
        })
    }

    fn info(&self) -> SkillInfo {
        {
            let mut info = SkillInfo::default();
            info.id = self.agent.spec().model.clone();
            info.description = "one turn of a conversation".into();
            info
        }
    }

    fn preflight(&self) -> Result<(), Interrupt> {
        self.agent.preflight()
    }

    fn fallbacks(&self) -> Vec<Arc<dyn Skill>> {
        self.agent.fallback_agents().iter().map(|a| Arc::new(TurnSkill::new(a.clone())) as Arc<dyn Skill>).collect()
    }

    fn estimate(&self, input: &Value) -> Option<Usage> {
        // Upper bound: the whole transcript and tool schemas (≈ 4 characters per token) plus max_tokens.
        let prompt = (input.to_string().len() as u64).div_ceil(4) + 64;
        let completion = self.agent.spec().chat_settings().effective_max_tokens();
        let tokens = flujo_core::TokenUsage::new(prompt, completion);
        let cost_usd = match self.agent.price() {
            Ok(Some(p)) => p.cost(tokens),
            _ => 0.0,
        };
        Some(Usage { cost_usd, tokens: tokens.total() })
    }
}
