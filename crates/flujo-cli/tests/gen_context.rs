//! `flujo dev gen-context` through the binary: the `context_schema:` block pasted back into the blueprint
//! validates and the offline run's context satisfies it (and a schema contradicting the run makes it fail),
//! the JSON Schema and Rust renderings, `-o` and `--json`, warnings with `file:line:col`, the comparison with a
//! declared `context_schema`, imports sharing the context, and the exit codes (0, 2, 3, 4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{code, flujo, json_out, project, stderr, stdout};
use serde_json::Value;

/// An offline pipeline (mock model, built-ins) writing fields every way the analysis types them.
const TRIP: &str = r#"version: "0.1"
name: trip_planner
agents:
  extractor:
    model: "mock:json"
    output_schema:
      type: object
      properties:
        city: {type: string}
        days: {type: integer}
      required: [city, days]
steps:
  - name: extract
    uses: agents.extractor
    sink_to: request
  - name: stops
    agent: {id: flujo.builtins.context_set, params: {path: stops, value: [{name: museum, hours: 2}, {name: park, hours: 1}]}}
  - kind: map
    name: describe
    sink_to: lines
    map:
      iterable_input: stops
      body:
        - name: line
          input: "{{ this.name }} ({{ this.hours }}h) in {{ context.request.city }}"
  - kind: conditional
    name: size
    condition_expression: "context.request.days > 3"
    branches:
      "true":
        - name: long
          agent: {id: flujo.builtins.context_set, params: {path: plan_kind, value: long}}
      "false":
        - name: short
          agent: {id: flujo.builtins.context_set, params: {path: plan_kind, value: short}}
  - name: summary
    input: "{{ context.plan_kind }} trip: {{ context.lines | join('; ') }}"
    sink_to: summary
"#;

/// The JSON type names a value has (`integer` values are numbers too).
fn json_types(v: &Value) -> Vec<&'static str> {
    match v {
        Value::Null => vec!["null"],
        Value::Bool(_) => vec!["boolean"],
        Value::Number(n) if n.is_i64() || n.is_u64() => vec!["integer", "number"],
        Value::Number(_) => vec!["number"],
        Value::String(_) => vec!["string"],
        Value::Array(_) => vec!["array"],
        Value::Object(_) => vec!["object"],
    }
}

/// Checks `value` against the `type`, `properties`, `items` and `required` of `schema` (what gen-context
/// generates); returns the problems.
fn violations(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        if !json_types(value).contains(&t) {
            out.push(format!("{at}: {value} is not {t}"));
            return;
        }
    }
    if let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), value.as_object()) {
        for (k, sub) in props {
            if let Some(v) = obj.get(k) {
                violations(v, sub, &format!("{at}.{k}"), out);
            }
        }
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap_or_default()) {
                out.push(format!("{at}: required {r} is missing"));
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            violations(v, items, &format!("{at}[{i}]"), out);
        }
    }
}

#[test]
fn the_yaml_block_pasted_back_validates_and_the_runs_context_satisfies_it() {
    let dir = project(&[("pipeline.yaml", TRIP)]);
    let o = flujo(dir.path(), &["dev", "gen-context"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let block = stdout(&o);
    assert!(block.contains("\ncontext_schema:\n"), "{block}");
    // Pasted at the top of the blueprint.
    let pasted = format!("{block}{TRIP}");
    std::fs::write(dir.path().join("pasted.yaml"), &pasted).unwrap();
    let o = flujo(dir.path(), &["validate", "pasted.yaml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = flujo(dir.path(), &["run", "pasted.yaml", "--json", "-i", "a trip", "--state", "memory://"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let result = json_out(&o);
    assert_eq!(result["status"], "completed");
    let context = &result["context"];
    // Every field the pipeline writes is in the final context and has the generated type.
    let generated = flujo_blueprint::yaml_to_json(&block).unwrap()["context_schema"].clone();
    let mut problems = Vec::new();
    for (field, schema) in generated["properties"].as_object().unwrap() {
        let value = context.get(field).unwrap_or_else(|| panic!("`{field}` is not in the context: {context}"));
        violations(value, schema, field, &mut problems);
    }
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(generated["properties"]["plan_kind"]["type"], "string");
    assert_eq!(generated["properties"]["lines"]["items"]["type"], "string");
    assert_eq!(generated["properties"]["request"]["required"], serde_json::json!(["city", "days"]));
    // The engine enforces the pasted schema: contradicting what a step writes fails the run there.
    let mut wrong = generated.clone();
    wrong["properties"]["plan_kind"]["type"] = "integer".into();
    std::fs::write(dir.path().join("wrong.yaml"), format!("context_schema: {wrong}\n{TRIP}")).unwrap();
    let o = flujo(dir.path(), &["run", "wrong.yaml", "--json", "-i", "a trip", "--state", "memory://"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let failed = json_out(&o);
    assert!(failed["error"]["message"].as_str().unwrap().contains("context validation failed"), "{failed}");
    // Run again, gen-context now compares with the declared schema: nothing differs.
    let o = flujo(dir.path(), &["dev", "gen-context", "pasted.yaml"]);
    assert_eq!(code(&o), 0);
    assert!(stderr(&o).contains("declares every field it writes and reads"), "{}", stderr(&o));
}

#[test]
fn json_schema_rust_out_file_and_json_object() {
    let dir = project(&[("pipeline.yaml", TRIP)]);
    let o = flujo(dir.path(), &["dev", "gen-context", "--format", "json-schema"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let schema: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["stops"]["items"]["properties"]["hours"]["type"], "integer");

    let o = flujo(dir.path(), &["dev", "gen-context", "--format", "rust", "--name", "Trip"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rust = stdout(&o);
    for line in [
        "use serde::{Deserialize, Serialize};",
        "pub struct Trip {",
        "pub request: Request,",
        "pub stops: Vec<StopsItem>,",
        "pub lines: Vec<String>,",
        "pub plan_kind: String,",
        "pub summary: String,",
        "pub struct StopsItem {",
        "pub hours: i64,",
    ] {
        assert!(rust.contains(line), "{line} not in\n{rust}");
    }
    // The default name comes from the pipeline's.
    let o = flujo(dir.path(), &["dev", "gen-context", "--format", "rust"]);
    assert!(stdout(&o).contains("pub struct TripPlannerContext {"), "{}", stdout(&o));

    let o = flujo(dir.path(), &["dev", "gen-context", "-o", "context.yaml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let written = std::fs::read_to_string(dir.path().join("context.yaml")).unwrap();
    assert!(written.contains("context_schema:"), "{written}");
    assert!(stderr(&o).contains("wrote context.yaml"), "{}", stderr(&o));

    let o = flujo(dir.path(), &["dev", "gen-context", "--json", "--format", "rust"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    for key in ["pipeline", "file", "format", "schema", "output", "fields", "warnings", "declared", "notes"] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    assert_eq!(v["format"], "rust");
    assert!(v["output"].as_str().unwrap().contains("pub struct TripPlannerContext"));
    let lines = v["fields"].as_array().unwrap().iter().find(|f| f["path"] == "lines").unwrap();
    assert_eq!(lines["writes"][0]["how"], "sink_to");
    assert_eq!(lines["always_written"], true);
    let name = v["fields"].as_array().unwrap().iter().find(|f| f["path"] == "stops[].name").unwrap();
    assert_eq!(name["reads"][0]["step"], "line");
    assert_eq!(v["warnings"][0]["rule"], "CTX-WRITE-UNREAD");
    assert!(v["declared"].is_null());
}

#[test]
fn warnings_name_the_rule_and_the_exact_position() {
    let yaml = r#"version: "0.1"
name: warn
steps:
  - name: seed
    agent: {id: flujo.builtins.context_set, params: {path: user, value: {name: ada}}}
  - name: greet
    input: |
      Dear {{ context.user.name }},
      your plan is {{ context.plan }} and your mail {{ context.user.email }}
  - name: unused
    sink_to: notes
"#;
    let dir = project(&[("pipeline.yaml", yaml)]);
    let o = flujo(dir.path(), &["dev", "gen-context"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("pipeline.yaml:9:23: warning[CTX-UNDECLARED-READ]: step `greet` reads `context.plan`"),
        "{err}"
    );
    assert!(
        err.contains(
            "pipeline.yaml:9:56: warning[CTX-READ-UNWRITTEN]: step `greet` reads `context.user.email`, but no step \
             writes it: `user` is written by step `seed` and it has no property `email` (it has: name)"
        ),
        "{err}"
    );
    assert!(
        err.contains("pipeline.yaml:11:14: warning[CTX-WRITE-UNREAD]: step `unused` writes `context.notes`"),
        "{err}"
    );
    // Validation's own CTX-UNDECLARED-READ (at the step's name) is not printed a second time.
    assert_eq!(err.matches("CTX-UNDECLARED-READ").count(), 1, "{err}");
    assert!(err.contains("3 context fields (2 written, 1 only read), 3 warnings"), "{err}");
}

#[test]
fn a_declared_context_schema_is_compared_with_the_generated_one() {
    let yaml = r#"version: "0.1"
name: declared
context_schema:
  type: object
  properties:
    count: {type: string}
    legacy: {type: boolean}
steps:
  - name: seed
    agent: {id: flujo.builtins.context_set, params: {path: count, value: 3}}
  - name: more
    agent: {id: flujo.builtins.context_set, params: {path: extra, value: true}}
  - name: show
    input: "{{ context.count }} {{ context.extra }}"
"#;
    let dir = project(&[("pipeline.yaml", yaml)]);
    let o = flujo(dir.path(), &["dev", "gen-context", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("pipeline.yaml:6:5: warning[CTX-SCHEMA-TYPE]"), "{err}");
    assert!(err.contains("pipeline.yaml:7:5: warning[CTX-SCHEMA-UNUSED]"), "{err}");
    assert!(err.contains("pipeline.yaml:12:60: warning[CTX-SCHEMA-MISSING]"), "{err}");
    assert!(
        err.contains(
            "differs from the generated one: missing from it: `extra`; declared but unused: `legacy`; declared with \
             another type: `count`"
        ),
        "{err}"
    );
    let v = json_out(&o);
    assert_eq!(v["declared"]["missing"], serde_json::json!(["extra"]));
    assert_eq!(v["declared"]["unused"], serde_json::json!(["legacy"]));
    assert_eq!(v["declared"]["type_mismatches"][0]["declared"]["type"], "string");
    assert_eq!(v["declared"]["type_mismatches"][0]["inferred"]["type"], "integer");
}

#[test]
fn imports_that_share_the_context_contribute_their_fields() {
    let main = r#"version: "0.1"
name: main
imports:
  shouter: ./shouter.yaml
steps:
  - name: remember
    input: "{{ initial_prompt }}"
    sink_to: greeting
  - name: shout
    uses: imports.shouter
    config: {inherit_context: true}
  - name: show
    input: "{{ context.loud }}"
"#;
    let child = r#"version: "0.1"
name: shouter
steps:
  - name: upper
    agent: {id: flujo.builtins.render_template, params: {template: "{{ context.greeting | upper }}"}}
    sink_to: loud
"#;
    let dir = project(&[("pipeline.yaml", main), ("shouter.yaml", child)]);
    let o = flujo(dir.path(), &["dev", "gen-context", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["schema"]["properties"]["loud"]["type"], "string");
    let loud = v["fields"].as_array().unwrap().iter().find(|f| f["path"] == "loud").unwrap();
    assert!(loud["writes"][0]["file"].as_str().unwrap().ends_with("shouter.yaml"), "{loud}");
    assert_eq!(loud["writes"][0]["line"], 6);
    assert_eq!(v["warnings"], serde_json::json!([]), "{}", stderr(&o));
    assert!(stderr(&o).contains("note: import `shouter` (./shouter.yaml) shares the context"), "{}", stderr(&o));
    // The run agrees with the pasted schema.
    let o = flujo(dir.path(), &["dev", "gen-context"]);
    std::fs::write(dir.path().join("pasted.yaml"), format!("{}{main}", stdout(&o))).unwrap();
    let o = flujo(dir.path(), &["run", "pasted.yaml", "--json", "-i", "hi", "--state", "memory://"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json_out(&o)["context"]["loud"], "HI");
}

#[test]
fn exit_codes() {
    // Not valid: the diagnostics as `flujo validate` prints them, exit 4.
    let dir = project(&[("pipeline.yaml", "version: \"0.1\"\nname: bad\nsteps:\n  - name: a\n    kind: paralel\n")]);
    let o = flujo(dir.path(), &["dev", "gen-context"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("pipeline.yaml:5:11: error[BP-UNKNOWN-KIND]"), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let o = flujo(dir.path(), &["dev", "gen-context", "--json"]);
    assert_eq!(code(&o), 4);
    let v = json_out(&o);
    assert_eq!(v["error"]["kind"], "validation_failed");
    assert_eq!(v["error"]["diagnostics"][0]["rule"], "BP-UNKNOWN-KIND");
    // An import that cannot be found is a resolution error (exit 3), as for `flujo run`.
    let missing = "version: \"0.1\"\nname: m\nimports:\n  x: ./nope.yaml\nsteps:\n  - name: a\n    uses: imports.x\n";
    let dir = project(&[("pipeline.yaml", missing)]);
    assert_eq!(code(&flujo(dir.path(), &["dev", "gen-context"])), 3);
    // Usage errors: exit 2.
    let dir = project(&[("pipeline.yaml", TRIP)]);
    let o = flujo(dir.path(), &["dev", "gen-context", "--format", "toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = flujo(dir.path(), &["dev", "gen-context", "missing.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.yaml"), "{}", stderr(&o));
}
