//! Tool calling at the provider level: the tools offered to a model ([`ToolSpec`]: name, description, input
//! JSON Schema), the calls it makes ([`ToolCall`]), and their translation to and from each provider's wire
//! format. Executing the calls, journaling each turn and feeding results back is the engine's loop (see
//! [`crate::ChatModel`]).
//!
//! Tool names must match `^[A-Za-z0-9_-]{1,64}$` for OpenAI, so skill ids such as `flujo.builtins.http_get`
//! are offered under [`tool_name_for`] (`flujo_builtins_http_get`); the engine keeps the name → skill map.

use flujo_core::SkillInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::sanitize_name;
use crate::structured::repair_json;

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Value,
}

impl ToolSpec {
    pub fn new(name: impl Into<String>, description: impl Into<String>, input_schema: Value) -> Self {
        ToolSpec { name: name.into(), description: description.into(), input_schema }
    }

    /// The tool for a skill: its id made a valid tool name, its description, its input schema (an open
    /// object when the skill declares none).
    pub fn from_skill(info: &SkillInfo) -> Self {
        ToolSpec {
            name: tool_name_for(&info.id),
            description: info.description.clone(),
            input_schema: info.input_schema.clone().unwrap_or_else(|| json!({"type": "object"})),
        }
    }

    fn schema_object(&self) -> Value {
        // Both APIs require an object schema for tool arguments.
        match self.input_schema.get("type").and_then(Value::as_str) {
            Some("object") => self.input_schema.clone(),
            None if self.input_schema.get("properties").is_some() => self.input_schema.clone(),
            _ => json!({"type": "object"}),
        }
    }
}

/// The tool name under which skill `id` is offered (`.` and other characters become `_`, at most 64).
pub fn tool_name_for(id: &str) -> String {
    sanitize_name(id)
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call; the tool result must name it.
    pub id: String,
    pub name: String,
    /// The arguments. Arguments the model wrote as invalid JSON are repaired when possible, else kept as the
    /// raw string, so validating them against the tool's schema reports the problem to the model.
    pub arguments: Value,
}

/// Whether and which tools the model may call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Tool(String),
}

// --- OpenAI Chat Completions ---------------------------------------------------------------------------------

pub(crate) fn openai_tools(tools: &[ToolSpec]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.schema_object()}})
            })
            .collect(),
    )
}

pub(crate) fn openai_tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

pub(crate) fn openai_tool_call_to_wire(call: &ToolCall) -> Value {
    let arguments = match &call.arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    };
    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
}

/// Parses `choices[0].message.tool_calls`; `None` when an entry lacks its id or name.
pub(crate) fn parse_openai_tool_calls(calls: Option<&Value>) -> Option<Vec<ToolCall>> {
    let Some(calls) = calls.filter(|c| !c.is_null()) else {
        return Some(Vec::new());
    };
    calls
        .as_array()?
        .iter()
        .map(|c| {
            let id = c.get("id")?.as_str()?.to_owned();
            let function = c.get("function")?;
            let name = function.get("name")?.as_str()?.to_owned();
            let arguments = match function.get("arguments") {
                Some(Value::String(raw)) => parse_arguments(raw),
                Some(v) => v.clone(),
                None => json!({}),
            };
            Some(ToolCall { id, name, arguments })
        })
        .collect()
}

fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(raw).ok().or_else(|| repair_json(raw)).unwrap_or_else(|| Value::String(raw.to_owned()))
}

// --- Anthropic Messages --------------------------------------------------------------------------------------

pub(crate) fn anthropic_tools(tools: &[ToolSpec]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema_object()}))
        .collect()
}

pub(crate) fn anthropic_tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    }
}

pub(crate) fn anthropic_tool_use_block(call: &ToolCall) -> Value {
    let input = match &call.arguments {
        Value::Object(_) => call.arguments.clone(),
        _ => json!({}),
    };
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

/// Parses one `tool_use` content block.
pub(crate) fn parse_anthropic_tool_use(block: &Value) -> Option<ToolCall> {
    Some(ToolCall {
        id: block.get("id")?.as_str()?.to_owned(),
        name: block.get("name")?.as_str()?.to_owned(),
        arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_tools_get_valid_names() {
        let info = {
            let mut info = SkillInfo::default();
            info.id = "flujo.builtins.http_get".into();
            info.description = "GET a URL".into();
            info
        };
        let t = ToolSpec::from_skill(&info);
        assert_eq!(t.name, "flujo_builtins_http_get");
        assert_eq!(t.input_schema, json!({"type": "object"}));
    }

    #[test]
    fn openai_wire_format() {
        let tools = [ToolSpec::new("add", "adds", json!({"type": "object", "properties": {"a": {"type": "number"}}}))];
        let v = openai_tools(&tools);
        assert_eq!(v[0]["function"]["name"], "add");
        assert_eq!(v[0]["function"]["parameters"]["properties"]["a"]["type"], "number");
        assert_eq!(openai_tool_choice(&ToolChoice::Tool("add".into()))["function"]["name"], "add");
        let calls = parse_openai_tool_calls(Some(&json!([
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1,}"}},
            {"id": "c2", "type": "function", "function": {"name": "add", "arguments": "not json"}}
        ])))
        .unwrap();
        assert_eq!(calls[0].arguments, json!({"a": 1}));
        assert_eq!(calls[1].arguments, json!("not json"));
        assert_eq!(openai_tool_call_to_wire(&calls[0])["function"]["arguments"], "{\"a\":1}");
        assert!(parse_openai_tool_calls(Some(&json!([{"function": {}}]))).is_none());
        assert_eq!(parse_openai_tool_calls(None), Some(vec![]));
    }

    #[test]
    fn anthropic_wire_format() {
        let tools = [ToolSpec::new("t", "d", json!({"type": "string"}))];
        assert_eq!(anthropic_tools(&tools)[0]["input_schema"], json!({"type": "object"}));
        assert_eq!(anthropic_tool_choice(&ToolChoice::Required), json!({"type": "any"}));
        let call = parse_anthropic_tool_use(&json!({"type": "tool_use", "id": "tu1", "name": "t", "input": {"x": 1}}));
        let call = call.unwrap();
        assert_eq!(anthropic_tool_use_block(&call)["input"], json!({"x": 1}));
    }
}
