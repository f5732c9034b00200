//! The JSON Schema side of `gen-context`: the schema of literal values, merging the schemas of several writes
//! of one field, and looking a read path up in the schema of what was written.

use flujo_template::{PathSegment, ReadUse};
use serde_json::{json, Map, Value};

/// What is known about a value's type: its JSON Schema, or `None` when nothing is.
pub(super) type Ty = Option<Value>;

/// A schema naming one JSON type: `{"type": "string"}`.
pub(super) fn of_type(t: &str) -> Value {
    json!({ "type": t })
}

/// The schema of a literal JSON value. Strings with template syntax render to text, except a template that is
/// one `{{ expr }}` and nothing else, which keeps the expression's value (unknown here).
pub(super) fn literal(v: &Value) -> Value {
    match v {
        Value::Null => of_type("null"),
        Value::Bool(_) => of_type("boolean"),
        Value::Number(n) if n.is_i64() || n.is_u64() => of_type("integer"),
        Value::Number(_) => of_type("number"),
        Value::String(s) if single_expression(s).is_some() => json!({}),
        Value::String(_) => of_type("string"),
        Value::Array(items) => {
            let mut schema = of_type("array");
            let mut item: Option<Value> = None;
            for i in items {
                let s = literal(i);
                item = Some(match item {
                    None => s,
                    Some(prev) => merge(&prev, &s),
                });
            }
            if let (Some(item), Some(obj)) = (item, schema.as_object_mut()) {
                obj.insert("items".into(), item);
            }
            schema
        }
        Value::Object(m) => {
            let props: Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), literal(v))).collect();
            json!({ "type": "object", "properties": props, "required": m.keys().collect::<Vec<_>>() })
        }
    }
}

/// The expression of a template that is exactly one `{{ expr }}` (rendered to the expression's value rather
/// than to text).
pub(super) fn single_expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.trim_start().starts_with('#')).then_some(inner.trim())
}

/// The `type` names a schema allows (empty when it does not say).
pub(super) fn type_names(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// True when a schema allows an object (it says `object`, or it names no type).
fn allows(schema: &Value, t: &str) -> bool {
    let names = type_names(schema);
    names.is_empty() || names.contains(&t) || (t == "number" && names.contains(&"integer"))
}

/// One schema for a field written in several ways.
pub(super) fn merge(a: &Value, b: &Value) -> Value {
    if without_descriptions(a) == without_descriptions(b) {
        return a.clone();
    }
    let (ta, tb) = (type_names(a), type_names(b));
    match (ta.as_slice(), tb.as_slice()) {
        (["integer"], ["number"]) | (["number"], ["integer"]) => of_type("number"),
        (["object"], ["object"]) => {
            let mut props = a.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
            if let Some(more) = b.get("properties").and_then(Value::as_object) {
                for (k, v) in more {
                    let merged = match props.get(k) {
                        Some(prev) => merge(prev, v),
                        None => v.clone(),
                    };
                    props.insert(k.clone(), merged);
                }
            }
            let required = |s: &Value| -> Vec<String> {
                s.get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default()
            };
            let rb = required(b);
            let both: Vec<String> = required(a).into_iter().filter(|r| rb.contains(r)).collect();
            let mut out = json!({ "type": "object", "properties": props });
            if !both.is_empty() {
                out["required"] = json!(both);
            }
            out
        }
        (["array"], ["array"]) => match (a.get("items"), b.get("items")) {
            (Some(x), Some(y)) => json!({ "type": "array", "items": merge(x, y) }),
            _ => of_type("array"),
        },
        _ => {
            let mut options: Vec<Value> = Vec::new();
            for s in [a, b] {
                match s.get("anyOf").and_then(Value::as_array) {
                    Some(list) => options.extend(list.iter().cloned()),
                    None => options.push(s.clone()),
                }
            }
            let mut distinct: Vec<Value> = Vec::new();
            for o in options {
                if !distinct.contains(&o) {
                    distinct.push(o);
                }
            }
            json!({ "anyOf": distinct })
        }
    }
}

/// A schema with its `description`s removed (for comparing what two schemas allow).
fn without_descriptions(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !(*k == "description" && v.is_string()))
                .map(|(k, v)| (k.clone(), without_descriptions(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_descriptions).collect()),
        other => other.clone(),
    }
}

/// What looking a path up in the schema of a written value gives.
#[derive(Debug, PartialEq)]
pub(super) enum Lookup {
    /// The path exists (or may exist: the schema does not close it).
    Found,
    /// The schema rules it out, for this reason.
    Missing(String),
}

/// Looks `path` up in `schema`. An object schema that lists `properties` without `additionalProperties` is
/// taken as closed, as `V-T5` does.
pub(super) fn lookup(schema: &Value, path: &[PathSegment]) -> Lookup {
    let Some((first, rest)) = path.split_first() else { return Lookup::Found };
    if let Some(options) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        let mut reason = None;
        for o in options {
            match lookup(o, path) {
                Lookup::Found => return Lookup::Found,
                Lookup::Missing(r) => reason = Some(r),
            }
        }
        return Lookup::Missing(reason.unwrap_or_else(|| "none of its alternatives has it".to_owned()));
    }
    match first {
        PathSegment::Key(k) => {
            if !allows(schema, "object") {
                return Lookup::Missing(format!("it is {}", describe(schema)));
            }
            match schema.get("properties").and_then(Value::as_object) {
                Some(props) => match props.get(k) {
                    Some(sub) => lookup(sub, rest),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(true)) => Lookup::Found,
                        Some(extra @ Value::Object(_)) => lookup(extra, rest),
                        _ => Lookup::Missing(format!(
                            "it has no property `{k}` (it has: {})",
                            props.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    },
                },
                None => Lookup::Found,
            }
        }
        PathSegment::Item => {
            if !allows(schema, "array") {
                return Lookup::Missing(format!("it is {}, not a list", describe(schema)));
            }
            match schema.get("items") {
                Some(items) => lookup(items, rest),
                None => Lookup::Found,
            }
        }
    }
}

/// `a string`, `an object`, … for messages.
pub(super) fn describe(schema: &Value) -> String {
    let names = type_names(schema);
    match names.as_slice() {
        [] => "a value of any type".to_owned(),
        [t] => article(t),
        many => many.iter().map(|t| article(t)).collect::<Vec<_>>().join(" or "),
    }
}

fn article(t: &str) -> String {
    match t {
        "object" | "array" | "integer" => format!("an {t}"),
        _ => format!("a {t}"),
    }
}

/// The schema a field that nothing writes gets from the way templates use it.
pub(super) fn from_uses(uses: &[ReadUse]) -> Value {
    let mut kinds: Vec<&str> = Vec::new();
    for u in uses {
        let t = match u {
            ReadUse::Value => continue,
            ReadUse::Iterated => "array",
            ReadUse::Text => "string",
            ReadUse::Number => "number",
            ReadUse::Mapping => "object",
        };
        if !kinds.contains(&t) {
            kinds.push(t);
        }
    }
    match kinds.as_slice() {
        [t] => of_type(t),
        _ => json!({}),
    }
}

/// True when two declared types cannot describe the same value (`integer` fits `number`).
pub(super) fn disjoint(declared: &Value, inferred: &Value) -> bool {
    let (d, i) = (type_names(declared), type_names(inferred));
    if d.is_empty() || i.is_empty() {
        return false;
    }
    !i.iter().any(|t| d.contains(t) || (*t == "integer" && d.contains(&"number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> PathSegment {
        PathSegment::Key(k.to_owned())
    }

    #[test]
    fn literals() {
        assert_eq!(literal(&json!(3)), of_type("integer"));
        assert_eq!(literal(&json!(1.5)), of_type("number"));
        assert_eq!(literal(&json!("hi {{ x }}")), of_type("string"));
        assert_eq!(literal(&json!("{{ previous_step }}")), json!({}));
        assert_eq!(
            literal(&json!({"a": [1, 2.5], "b": true})),
            json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"}},
                "b": {"type": "boolean"}}, "required": ["a", "b"]})
        );
    }

    #[test]
    fn merging() {
        assert_eq!(merge(&of_type("integer"), &of_type("number")), of_type("number"));
        assert_eq!(
            merge(&of_type("string"), &of_type("integer")),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]})
        );
        let a = json!({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]});
        let b = json!({"type": "object", "properties": {"y": {"type": "string"}}, "required": ["y"]});
        assert_eq!(
            merge(&a, &b),
            json!({"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "string"}}})
        );
    }

    #[test]
    fn lookups() {
        let user = json!({"type": "object", "properties": {"name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}}}});
        assert_eq!(lookup(&user, &[key("name")]), Lookup::Found);
        assert_eq!(lookup(&user, &[key("tags"), PathSegment::Item]), Lookup::Found);
        assert!(matches!(lookup(&user, &[key("email")]), Lookup::Missing(r) if r.contains("no property `email`")));
        assert!(matches!(lookup(&user, &[key("name"), key("first")]), Lookup::Missing(r) if r.contains("a string")));
        assert_eq!(lookup(&json!({"type": "object"}), &[key("anything")]), Lookup::Found);
        assert_eq!(lookup(&json!({}), &[key("a"), PathSegment::Item]), Lookup::Found);
    }

    #[test]
    fn type_conflicts() {
        assert!(disjoint(&of_type("string"), &of_type("integer")));
        assert!(!disjoint(&of_type("number"), &of_type("integer")));
        assert!(!disjoint(&json!({}), &of_type("integer")));
    }
}
