//! One turn of a tool-using conversation as a [`Skill`], so the engine's `agentic_loop` can journal every
//! model turn like any other call (and replay it instead of calling the model again).
//!
//! Input: `{"messages": [ChatMessage…], "tools": [{"id", "description", "input_schema"}…]}` — tools named by
//! skill id. Output: `{"content": string|null, "tool_calls": [{"id", "name": SKILL_ID, "arguments"}…]}`. The
//! agent's system prompt is prepended when the messages carry none.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{Interrupt, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, Usage, Value};
use serde_json::json;

use crate::agent::LlmAgent;
use crate::chat::{ChatMessage, Role};
use crate::tools::ToolSpec;

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

    fn parse(&self, input: &Value) -> Result<Turn, SkillError> {
        let mut messages: Vec<ChatMessage> =
            serde_json::from_value(input.get("messages").cloned().unwrap_or(json!([])))
                .map_err(|e| SkillError::fatal(format!("agentic turn: bad messages: {e}")))?;
        // Tool calls in the transcript name skills; the provider knows them by their tool names.
        for m in &mut messages {
            for tc in &mut m.tool_calls {
                tc.name = crate::tools::tool_name_for(&tc.name);
            }
        }
        if !messages.iter().any(|m| m.role == Role::System) {
            if let Some(sp) = self.agent.spec().system_prompt.as_deref().filter(|s| !s.is_empty()) {
                messages.insert(0, ChatMessage::system(sp));
            }
        }
        let mut tools = Vec::new();
        let mut names = HashMap::new();
        for t in input.get("tools").and_then(Value::as_array).into_iter().flatten() {
            let id = t.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let info = SkillInfo {
                id: id.clone(),
                description: t.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
                input_schema: t.get("input_schema").cloned().filter(|v| !v.is_null()),
                ..Default::default()
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
        let (messages, tools, names) = self.parse(&call.input)?;
        let Some(model) = self.agent.chat_model() else {
            return Err(SkillError::fatal(format!("model '{}' cannot hold a conversation", self.agent.spec().model)));
        };
        let reply = model
            .chat(&messages, &tools, &self.agent.spec().chat_settings())
            .await
            .map_err(|e| SkillError { message: e.to_string(), retryable: e.is_retryable() })?;
        let cost_usd = match self.agent.price() {
            Ok(Some(p)) => p.cost(reply.usage),
            _ => 0.0,
        };
        let tool_calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .map(|tc| {
                let id = names.get(&tc.name).cloned().unwrap_or_else(|| tc.name.clone());
                json!({"id": tc.id, "name": id, "arguments": tc.arguments})
            })
            .collect();
        Ok(SkillOutput {
            output: json!({"content": reply.content, "tool_calls": tool_calls}),
            tokens: reply.usage,
            cost_usd,
            ..Default::default()
        })
    }

    fn info(&self) -> SkillInfo {
        SkillInfo {
            id: self.agent.spec().model.clone(),
            description: "one turn of a conversation".into(),
            ..Default::default()
        }
    }

    fn preflight(&self) -> Result<(), Interrupt> {
        self.agent.preflight()
    }

    fn estimate(&self, input: &Value) -> Option<Usage> {
        // Upper bound: the whole transcript and tool schemas (≈ 4 characters per token) plus max_tokens.
        let prompt = (input.to_string().len() as u64).div_ceil(4) + 64;
        let completion = self.agent.spec().chat_settings().effective_max_tokens();
        let tokens = flujo_core::TokenUsage { prompt, completion };
        let cost_usd = match self.agent.price() {
            Ok(Some(p)) => p.cost(tokens),
            _ => 0.0,
        };
        Some(Usage { cost_usd, tokens: tokens.total() })
    }
}
