//! Schemas of an OpenAPI document as JSON Schema: local `$ref`s inlined (recursion cut with a permissive
//! schema and a note), OpenAPI 3.0's dialect translated, OpenAPI-only keywords dropped.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{MAX_REF_DEPTH, MAX_SCHEMA_NODES};

/// Follows a local reference (`#/components/schemas/Pet`); `None` for other documents or a missing target.
pub(super) fn resolve_ref<'d>(doc: &'d Value, reference: &str) -> Option<&'d Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(&percent_decode(pointer))
}

pub(super) fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Follows `$ref`s of a non-schema object (parameter, request body, response), at most a few hops.
pub(super) fn deref<'d>(doc: &'d Value, mut v: &'d Value) -> &'d Value {
    for _ in 0..8 {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| resolve_ref(doc, r)) {
            Some(target) => v = target,
            None => break,
        }
    }
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    V30,
    V31,
}

/// Converts schemas, inlining references; collects notes.
pub(super) struct SchemaConverter<'a> {
    doc: &'a Value,
    dialect: Dialect,
    nodes: usize,
    notes: BTreeSet<String>,
}

impl<'a> SchemaConverter<'a> {
    pub(super) fn new(doc: &'a Value, dialect: Dialect) -> Self {
        SchemaConverter { doc, dialect, nodes: 0, notes: BTreeSet::new() }
    }

    /// What the conversions noted (cut recursion, references not followed, invalid schemas).
    pub(super) fn into_notes(self) -> BTreeSet<String> {
        self.notes
    }

    fn convert(&mut self, schema: &Value, stack: &mut Vec<String>) -> Value {
        self.nodes += 1;
        if self.nodes > MAX_SCHEMA_NODES {
            self.notes.insert(format!(
                "its schemas are larger than {MAX_SCHEMA_NODES} nodes once references are inlined; the rest is \
                 accepted as any value"
            ));
            return json!({});
        }
        let obj = match schema {
            Value::Object(o) => o,
            Value::Bool(b) => return Value::Bool(*b),
            _ => return json!({}),
        };
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap_or(reference).to_owned();
            if stack.iter().any(|r| r == reference) {
                self.notes.insert(format!(
                    "schema `{name}` is recursive: where it repeats inside itself, any value is accepted"
                ));
                return json!({"description": format!("recursive `{name}` (not expanded; any value accepted)")});
            }
            if stack.len() >= MAX_REF_DEPTH {
                self.notes
                    .insert(format!("references nest deeper than {MAX_REF_DEPTH}; deeper schemas accept any value"));
                return json!({});
            }
            let Some(target) = resolve_ref(self.doc, reference) else {
                self.notes.insert(format!(
                    "reference `{reference}` is not followed (another document, or missing); any value accepted there"
                ));
                return json!({});
            };
            stack.push(reference.to_owned());
            let mut out = self.convert(target, stack);
            stack.pop();
            // OpenAPI 3.1 allows keywords beside `$ref`; the annotations are kept
            if let Value::Object(out_map) = &mut out {
                for key in ["description", "title"] {
                    if let Some(v) = obj.get(key) {
                        out_map.insert(key.to_owned(), v.clone());
                    }
                }
            }
            return out;
        }
        let mut out = Map::new();
        for (key, value) in obj {
            match key.as_str() {
                "discriminator" | "xml" | "externalDocs" | "nullable" | "example" => {}
                k if k.starts_with("x-") => {}
                "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                    if let Value::Object(props) = value {
                        let converted: Map<String, Value> =
                            props.iter().map(|(k, v)| (k.clone(), self.convert(v, stack))).collect();
                        out.insert(key.clone(), Value::Object(converted));
                    }
                }
                "items"
                | "additionalProperties"
                | "not"
                | "contains"
                | "propertyNames"
                | "if"
                | "then"
                | "else"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "additionalItems" => match value {
                    Value::Array(items) => {
                        out.insert(key.clone(), Value::Array(items.iter().map(|v| self.convert(v, stack)).collect()));
                    }
                    v => {
                        out.insert(key.clone(), self.convert(v, stack));
                    }
                },
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    if let Value::Array(items) = value {
                        out.insert(key.clone(), Value::Array(items.iter().map(|v| self.convert(v, stack)).collect()));
                    }
                }
                "exclusiveMinimum" | "exclusiveMaximum" if self.dialect == Dialect::V30 => {
                    // 3.0: a boolean that makes `minimum`/`maximum` exclusive
                    let bound = if key == "exclusiveMinimum" { "minimum" } else { "maximum" };
                    match (value, obj.get(bound)) {
                        (Value::Bool(true), Some(b)) => {
                            out.insert(key.clone(), b.clone());
                        }
                        (Value::Number(_), _) => {
                            out.insert(key.clone(), value.clone());
                        }
                        _ => {}
                    }
                }
                "minimum" | "maximum" if self.dialect == Dialect::V30 => {
                    let flag = if key == "minimum" { "exclusiveMinimum" } else { "exclusiveMaximum" };
                    if obj.get(flag) != Some(&Value::Bool(true)) {
                        out.insert(key.clone(), value.clone());
                    }
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        if let Some(example) = obj.get("example") {
            if !out.contains_key("examples") {
                out.insert("examples".into(), Value::Array(vec![example.clone()]));
            }
        }
        if self.dialect == Dialect::V30 && obj.get("nullable") == Some(&Value::Bool(true)) {
            match out.get("type").cloned() {
                Some(Value::String(t)) => {
                    out.insert("type".into(), json!([t, "null"]));
                }
                Some(Value::Array(mut ts)) if !ts.contains(&json!("null")) => {
                    ts.push(json!("null"));
                    out.insert("type".into(), Value::Array(ts));
                }
                None => {
                    let inner = Value::Object(std::mem::take(&mut out));
                    out.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                }
                _ => {}
            }
            if let Some(Value::Array(values)) = out.get_mut("enum") {
                if !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
            }
        }
        Value::Object(out)
    }

    /// `schema` converted and checked; an invalid result is replaced by `{}` and noted.
    pub(super) fn schema(&mut self, schema: &Value, what: &str) -> Value {
        let converted = self.convert(schema, &mut Vec::new());
        match jsonschema::validator_for(&converted) {
            Ok(_) => converted,
            Err(e) => {
                self.notes
                    .insert(format!("the schema of {what} is not valid JSON Schema ({e}); any value is accepted"));
                json!({})
            }
        }
    }
}
