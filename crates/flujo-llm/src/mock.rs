//! `mock:` models: offline and deterministic, for tests and examples. `mock:echo` answers with the last user
//! message (an agent using it returns its input unchanged); `mock:json` answers with [`example_for_schema`]
//! of the response schema (or `{}` without one). Both report zero usage and cost nothing.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::chat::{ChatMessage, ChatModel, ChatReply, ChatSettings, Role};
use crate::error::LlmError;
use crate::pricing::MOCK_PROVIDER;
use crate::tools::ToolSpec;

/// Which mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockKind {
    Echo,
    Json,
}

impl MockKind {
    /// The mock named `model` (`echo` or `json`).
    pub fn from_model(model: &str) -> Option<Self> {
        match model {
            "echo" => Some(MockKind::Echo),
            "json" => Some(MockKind::Json),
            _ => None,
        }
    }
}

/// The names `mock:` accepts.
pub const MOCK_MODELS: [&str; 2] = ["echo", "json"];

/// A `mock:` chat model.
#[derive(Debug, Clone)]
pub struct MockModel {
    kind: MockKind,
    model: &'static str,
}

impl MockModel {
    pub fn new(kind: MockKind) -> Self {
        MockModel { kind, model: if kind == MockKind::Echo { "echo" } else { "json" } }
    }

    pub fn kind(&self) -> MockKind {
        self.kind
    }
}

#[async_trait]
impl ChatModel for MockModel {
    fn provider(&self) -> &str {
        MOCK_PROVIDER
    }

    fn model(&self) -> &str {
        self.model
    }

    async fn chat(
        &self,
        messages: &[ChatMessage],
        _tools: &[ToolSpec],
        settings: &ChatSettings,
    ) -> Result<ChatReply, LlmError> {
        let content = match self.kind {
            MockKind::Echo => {
                messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone()).unwrap_or_default()
            }
            MockKind::Json => match &settings.response_schema {
                Some(rs) => example_for_schema(&rs.schema).to_string(),
                None => "{}".to_owned(),
            },
        };
        if let Some(sink) = &settings.stream {
            sink.send(&content);
        }
        Ok(ChatReply { content: Some(content), stop_reason: Some("stop".into()), ..Default::default() })
    }
}

const MAX_DEPTH: usize = 24;

/// A deterministic value satisfying `schema` in the common cases: `const`, the first `enum` value, `default`,
/// objects with their required properties, arrays of `minItems` items, strings honouring `minLength`,
/// `maxLength` and common `format`s, numbers within their bounds, the first branch of `anyOf`/`oneOf`, merged
/// `allOf`, and local `$ref`s. Unconstrained schemas give `{}`.
pub fn example_for_schema(schema: &Value) -> Value {
    Gen { root: schema }.value(schema, 0)
}

struct Gen<'a> {
    root: &'a Value,
}

impl<'a> Gen<'a> {
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn value(&self, schema: &Value, depth: usize) -> Value {
        let Some(s) = schema.as_object() else {
            return if schema == &Value::Bool(false) { Value::Null } else { json!({}) };
        };
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        if let Some(v) = s.get("const") {
            return v.clone();
        }
        if let Some(v) = s.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
            return v.clone();
        }
        if let Some(v) = s.get("default") {
            return v.clone();
        }
        if let Some(target) = s.get("$ref").and_then(Value::as_str).and_then(|r| self.resolve(r)) {
            return self.value(target, depth + 1);
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            return self.value_all_of(s, all, depth);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(first) = s.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
                return self.value(first, depth + 1);
            }
        }
        let ty = match s.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            Some(Value::Array(ts)) => {
                let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
                names.iter().copied().find(|t| *t != "null").or(names.first().copied())
            }
            _ => None,
        };
        let ty = ty.or_else(|| {
            if s.contains_key("properties") || s.contains_key("required") {
                Some("object")
            } else if s.contains_key("items") || s.contains_key("prefixItems") {
                Some("array")
            } else {
                None
            }
        });
        match ty {
            Some("object") | None => self.object(s, depth),
            Some("array") => self.array(s, depth),
            Some("string") => string(s),
            Some("integer") => number(s, true),
            Some("number") => number(s, false),
            Some("boolean") => Value::Bool(false),
            _ => Value::Null,
        }
    }

    fn value_all_of(&self, s: &Map<String, Value>, all: &[Value], depth: usize) -> Value {
        let mut merged = s.clone();
        merged.remove("allOf");
        let mut properties = merged.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut required = merged.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
        for sub in all {
            let sub = match sub.get("$ref").and_then(Value::as_str).and_then(|r| self.resolve(r)) {
                Some(target) => target,
                None => sub,
            };
            let Some(sub) = sub.as_object() else { continue };
            for (k, v) in sub {
                match k.as_str() {
                    "properties" => properties.extend(v.as_object().cloned().unwrap_or_default()),
                    "required" => required.extend(v.as_array().cloned().unwrap_or_default()),
                    _ => {
                        merged.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        if !properties.is_empty() {
            merged.insert("properties".into(), Value::Object(properties));
        }
        if !required.is_empty() {
            merged.insert("required".into(), Value::Array(required));
        }
        self.value(&Value::Object(merged), depth + 1)
    }

    fn object(&self, s: &Map<String, Value>, depth: usize) -> Value {
        let props = s.get("properties").and_then(Value::as_object);
        let mut out = Map::new();
        let required = s.get("required").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for key in required.iter().filter_map(Value::as_str) {
            let sub =
                props.and_then(|p| p.get(key)).or_else(|| s.get("additionalProperties").filter(|a| a.is_object()));
            let v = match sub {
                Some(sub) => self.value(sub, depth + 1),
                None => Value::String(String::new()),
            };
            out.insert(key.to_owned(), v);
        }
        Value::Object(out)
    }

    fn array(&self, s: &Map<String, Value>, depth: usize) -> Value {
        let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(0).min(64) as usize;
        let prefix = s.get("prefixItems").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let items = s.get("items").filter(|i| i.is_object());
        let mut out = Vec::new();
        for i in 0..min {
            let v = match (prefix.get(i), items) {
                (Some(p), _) => self.value(p, depth + 1),
                (None, Some(item)) => self.value(item, depth + 1),
                (None, None) => Value::Null,
            };
            out.push(v);
        }
        Value::Array(out)
    }
}

fn string(s: &Map<String, Value>) -> Value {
    let base = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => "1970-01-01T00:00:00Z",
        Some("date") => "1970-01-01",
        Some("time") => "00:00:00Z",
        Some("email") => "user@example.com",
        Some("uri") | Some("url") => "https://example.com",
        Some("uuid") => "00000000-0000-0000-0000-000000000000",
        Some("ipv4") => "127.0.0.1",
        Some("hostname") => "example.com",
        _ => "",
    };
    let mut out = base.to_owned();
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0).min(4096) as usize;
    while out.chars().count() < min {
        out.push('x');
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
        out = out.chars().take(max as usize).collect();
    }
    Value::String(out)
}

fn number(s: &Map<String, Value>, integer: bool) -> Value {
    let get = |k: &str| s.get(k).and_then(Value::as_f64);
    let mut lo = get("minimum");
    if let Some(x) = get("exclusiveMinimum") {
        let step = if integer { 1.0 } else { 1e-6_f64.max(x.abs() * 1e-9) };
        lo = Some(lo.map_or(x + step, |l| l.max(x + step)));
    }
    let mut hi = get("maximum");
    if let Some(x) = get("exclusiveMaximum") {
        let step = if integer { 1.0 } else { 1e-6_f64.max(x.abs() * 1e-9) };
        hi = Some(hi.map_or(x - step, |h| h.min(x - step)));
    }
    let mut v = 0.0_f64;
    if let Some(l) = lo {
        v = v.max(l);
    }
    if let Some(h) = hi {
        v = v.min(h);
    }
    if let Some(m) = get("multipleOf").filter(|m| *m > 0.0) {
        v = (v / m).ceil() * m;
    }
    if integer {
        let n = if lo.is_some_and(|l| v.ceil() >= l) || lo.is_none() { v.ceil() } else { v.floor() };
        json!(n as i64)
    } else {
        json!(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(schema: Value) -> Value {
        let v = example_for_schema(&schema);
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(validator.is_valid(&v), "{v} does not satisfy {schema}");
        v
    }

    #[test]
    fn generates_valid_values() {
        let v = check(json!({
            "type": "object",
            "required": ["name", "tags", "status", "score", "when", "nested", "pick"],
            "properties": {
                "name": {"type": "string", "minLength": 3},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "status": {"enum": ["open", "closed"]},
                "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "when": {"type": "string", "format": "date-time"},
                "nested": {"$ref": "#/$defs/inner"},
                "pick": {"anyOf": [{"type": "integer", "minimum": 5, "multipleOf": 3}, {"type": "null"}]},
                "optional": {"type": "string"}
            },
            "additionalProperties": false,
            "$defs": {"inner": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}}
        }));
        assert_eq!(v["status"], "open");
        assert_eq!(v["pick"], 6);
        assert!(v.get("optional").is_none());
        check(json!({"allOf": [{"type": "object", "required": ["a"], "properties": {"a": {"const": 1}}},
            {"required": ["b"], "properties": {"b": {"type": "integer", "exclusiveMaximum": 0}}}]}));
        check(json!({"type": ["null", "integer"], "minimum": 2}));
        check(json!({"type": "string", "maxLength": 0}));
        assert_eq!(check(json!({})), json!({}));
        check(json!(true));
    }

    #[tokio::test]
    async fn echo_and_json_models() {
        let echo = MockModel::new(MockKind::Echo);
        let r = echo.chat(&[ChatMessage::system("s"), ChatMessage::user("hello")], &[], &ChatSettings::default()).await;
        assert_eq!(r.unwrap().content.as_deref(), Some("hello"));
        let json_model = MockModel::new(MockKind::Json);
        let r = json_model.chat(&[], &[], &ChatSettings::default()).await.unwrap();
        assert_eq!(r.content.as_deref(), Some("{}"));
        assert_eq!(r.usage.total(), 0);
    }
}
