//! JSON Schemas in the form the Gemini API takes them: the OpenAPI subset of its `Schema` object
//! ([`openapi_schema`]) for `parameters` and `responseSchema`, or — for a schema that subset cannot express —
//! JSON Schema as `parametersJsonSchema` / `responseJsonSchema`.

use serde_json::{json, Map, Value};

use crate::tools::ToolSpec;

/// A tool as a `functionDeclaration`. A tool without arguments has no `parameters` (the API refuses an object
/// schema without properties).
pub(crate) fn function_declaration(tool: &ToolSpec) -> Value {
    let mut decl = json!({"name": tool.name, "description": tool.description});
    let schema = &tool.input_schema;
    let object = schema.get("type").and_then(Value::as_str) == Some("object")
        || (schema.get("type").is_none() && schema.get("properties").is_some());
    if !object || is_empty_object(schema) {
        return decl;
    }
    match openapi_schema(schema) {
        Some(parameters) => decl["parameters"] = parameters,
        None => decl["parametersJsonSchema"] = json_schema(schema),
    }
    decl
}

/// An object schema that constrains nothing: no properties, no map values, no composition.
fn is_empty_object(schema: &Value) -> bool {
    let no_props = schema.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty);
    let open = ["patternProperties", "$ref", "anyOf", "oneOf", "allOf"].iter().all(|k| schema.get(*k).is_none())
        && !schema.get("additionalProperties").is_some_and(Value::is_object);
    no_props && open
}

/// A JSON Schema as `responseJsonSchema` / `parametersJsonSchema` take it (without `$schema`).
pub(crate) fn json_schema(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("$schema");
    }
    s
}

/// How deep [`openapi_schema`] follows nesting and `$ref`s (a recursive schema is not expressible).
const MAX_SCHEMA_DEPTH: usize = 24;

/// Keywords of the OpenAPI subset copied as they are.
const KEPT_KEYWORDS: [&str; 14] = [
    "title",
    "description",
    "pattern",
    "example",
    "default",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "propertyOrdering",
];

/// `schema` (JSON Schema) in the OpenAPI subset of the API's `Schema` object: upper-case `type`s, a
/// `["T", "null"]` type as `nullable`, several types and `oneOf` as `anyOf`, local `$ref`s inlined, `const`
/// as a one-value `enum`, a single `allOf` merged; keywords the API refuses (`additionalProperties`,
/// `$schema`, `$defs`, `exclusiveMinimum`, non-string `enum`s, formats other than `date-time`/`enum`,
/// `float`/`double`, `int32`/`int64`, …) dropped — the answer is validated against the full schema anyway.
/// `None` when the subset cannot express it: an object without properties (a free-form map), an array
/// without `items`, a schema accepting any value, recursion.
pub fn openapi_schema(schema: &Value) -> Option<Value> {
    convert(schema, schema, 0)
}

fn convert(schema: &Value, root: &Value, depth: usize) -> Option<Value> {
    if depth > MAX_SCHEMA_DEPTH {
        return None;
    }
    let obj = schema.as_object()?;
    if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
        let target = reference.strip_prefix('#').and_then(|p| root.pointer(p))?;
        let mut out = convert(target, root, depth + 1)?;
        if let (Some(d), Some(o)) = (obj.get("description"), out.as_object_mut()) {
            o.insert("description".into(), d.clone());
        }
        return Some(out);
    }
    if let Some(Value::Array(all)) = obj.get("allOf") {
        let [only] = all.as_slice() else { return None };
        let mut merged = obj.clone();
        merged.remove("allOf");
        for (k, v) in only.as_object()? {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
        return convert(&Value::Object(merged), root, depth + 1);
    }
    let mut types: Vec<&str> = match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let nullable = types.contains(&"null") || obj.get("nullable") == Some(&Value::Bool(true));
    types.retain(|t| *t != "null");
    let string_values = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
    let enum_values = match obj.get("const") {
        Some(c @ Value::String(_)) => Some(json!([c])),
        _ => obj.get("enum").filter(|e| string_values(e)).cloned(),
    };
    if types.is_empty() {
        if obj.contains_key("properties") {
            types.push("object");
        } else if obj.contains_key("items") {
            types.push("array");
        } else if enum_values.is_some() {
            types.push("string");
        }
    }
    let mut out = Map::new();
    if types.len() > 1 {
        let variants = types
            .iter()
            .map(|t| {
                let mut one = obj.clone();
                one.insert("type".into(), json!(t));
                one.remove("nullable");
                convert(&Value::Object(one), root, depth + 1)
            })
            .collect::<Option<Vec<_>>>()?;
        out.insert("anyOf".into(), Value::Array(variants));
        if let Some(d) = obj.get("description") {
            out.insert("description".into(), d.clone());
        }
        if nullable {
            out.insert("nullable".into(), json!(true));
        }
        return Some(Value::Object(out));
    }
    let kind = types.first().map(|t| t.to_ascii_uppercase());
    if let Some(k) = &kind {
        out.insert("type".into(), json!(k));
    }
    if nullable {
        out.insert("nullable".into(), json!(true));
    }
    for k in KEPT_KEYWORDS {
        if let Some(v) = obj.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(f) = obj.get("format").and_then(Value::as_str) {
        let ok = matches!(
            (kind.as_deref(), f),
            (Some("STRING"), "date-time" | "enum")
                | (Some("NUMBER"), "float" | "double")
                | (Some("INTEGER"), "int32" | "int64")
        );
        if ok {
            out.insert("format".into(), json!(f));
        }
    }
    if kind.as_deref() == Some("STRING") {
        if let Some(e) = enum_values {
            out.insert("enum".into(), e);
        }
    }
    let alternatives = obj.get("anyOf").or_else(|| obj.get("oneOf"));
    if let Some(Value::Array(alts)) = alternatives {
        let alts = alts.iter().map(|a| convert(a, root, depth + 1)).collect::<Option<Vec<_>>>()?;
        out.insert("anyOf".into(), Value::Array(alts));
    }
    match kind.as_deref() {
        Some("OBJECT") => {
            let props = obj.get("properties").and_then(Value::as_object).filter(|p| !p.is_empty())?;
            let mut converted = Map::new();
            for (name, p) in props {
                converted.insert(name.clone(), convert(p, root, depth + 1)?);
            }
            let required: Vec<&Value> = obj
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| r.as_str().is_some_and(|n| converted.contains_key(n)))
                .collect();
            out.insert("properties".into(), Value::Object(converted));
            if !required.is_empty() {
                out.insert("required".into(), json!(required));
            }
        }
        Some("ARRAY") => {
            let items = obj.get("items")?;
            out.insert("items".into(), convert(items, root, depth + 1)?);
        }
        None if !out.contains_key("anyOf") => return None,
        _ => {}
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_in_the_openapi_subset() {
        let s = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "additionalProperties": false, "required": ["name", "tags", "gone"],
            "properties": {
                "name": {"type": ["string", "null"], "format": "email", "minLength": 1},
                "when": {"type": "string", "format": "date-time"},
                "kind": {"enum": ["a", "b"]}, "fixed": {"const": "x"},
                "n": {"type": "integer", "enum": [1, 2], "exclusiveMinimum": 0},
                "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                "multi": {"type": ["string", "integer"]},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "uniqueItems": true},
                "all": {"allOf": [{"type": "boolean"}], "description": "flag"}},
            "$defs": {"tag": {"type": "object", "properties": {"label": {"type": "string"}}}}});
        let g = openapi_schema(&s).unwrap();
        assert_eq!(g["type"], "OBJECT");
        assert!(g.get("additionalProperties").is_none() && g.get("$schema").is_none() && g.get("$defs").is_none());
        assert_eq!(g["required"], json!(["name", "tags"]));
        let p = &g["properties"];
        assert_eq!(p["name"], json!({"type": "STRING", "nullable": true, "minLength": 1}));
        assert_eq!(p["when"], json!({"type": "STRING", "format": "date-time"}));
        assert_eq!(p["kind"], json!({"type": "STRING", "enum": ["a", "b"]}));
        assert_eq!(p["fixed"], json!({"type": "STRING", "enum": ["x"]}));
        assert_eq!(p["n"], json!({"type": "INTEGER"}));
        assert_eq!(p["either"], json!({"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}));
        assert_eq!(p["multi"], json!({"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}));
        assert_eq!(
            p["tags"],
            json!({"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"label": {"type": "STRING"}}}})
        );
        assert_eq!(p["all"], json!({"type": "BOOLEAN", "description": "flag"}));
        // Not expressible: free-form objects, arrays without items, anything-goes, recursion.
        for s in [
            json!({"type": "object"}),
            json!({"type": "object", "properties": {"m": {"type": "object",
            "additionalProperties": {"type": "string"}}}}),
            json!({"type": "array"}),
            json!({}),
            json!({"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}}),
        ] {
            assert_eq!(openapi_schema(&s), None, "{s}");
        }
        let map_tool = ToolSpec::new("m", "", json!({"type": "object", "additionalProperties": {"type": "string"}}));
        assert!(function_declaration(&map_tool).get("parametersJsonSchema").is_some());
    }
}
