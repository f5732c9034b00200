//! The analysis on blueprints covering each write and read form, the types it infers, the warnings it
//! gives (with locations) and the three renderings.

use std::path::Path;

use serde_json::json;

use super::*;

fn report(yaml: &str) -> ContextReport {
    context_report_str(yaml, Path::new("bp.yaml"), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("the blueprint does not load: {e}"))
}

fn field<'r>(r: &'r ContextReport, path: &str) -> &'r ContextField {
    r.fields
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no field `{path}` in {:?}", r.fields.iter().map(|f| &f.path).collect::<Vec<_>>()))
}

/// The schema of a field without the generated descriptions.
fn ty(r: &ContextReport, path: &str) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, v)| !(*k == "description" && v.is_string()))
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    strip(&field(r, path).schema)
}

fn rules_of(r: &ContextReport) -> Vec<(String, String, usize, usize)> {
    r.warnings.iter().map(|d| (d.rule.clone(), d.message.clone(), d.line, d.column)).collect()
}

fn warned(r: &ContextReport, rule: &str, needle: &str) -> (usize, usize) {
    r.warnings
        .iter()
        .find(|d| d.rule == rule && d.message.contains(needle))
        .map(|d| (d.line, d.column))
        .unwrap_or_else(|| panic!("no {rule} warning about {needle}: {:#?}", rules_of(r)))
}

const TYPES: &str = r#"version: "0.1"
name: onboarding
agents:
  profiler:
    model: "mock:json"
    system_prompt: "Profile the user. Plan: {{ context.plan.tier }}"
    output_schema:
      type: object
      properties:
        name: {type: string}
        age: {type: integer}
      required: [name]
steps:
  - name: seed
    agent: {id: flujo.builtins.context_set, params: {path: plan, value: {tier: gold, seats: 3}}}
  - name: profile
    uses: agents.profiler
    sink_to: user
  - name: greet
    input: "Hello {{ context.user.name }}, seats: {{ context.plan.seats }}"
    sink_to: greeting
  - kind: hitl
    name: approve
    message: "Approve {{ context.greeting }}?"
    input_schema: {type: object, properties: {ok: {type: boolean}}, required: [ok]}
    sink_to: approval
  - name: score
    agent: {id: flujo.builtins.transform, params: {expr: "context.approval.ok and context.user.age > 18"}}
    updates_context: true
    output_keys: [verdict]
"#;

#[test]
fn types_come_from_output_schemas_input_schemas_literals_and_templates() {
    let r = report(TYPES);
    assert_eq!(
        ty(&r, "user"),
        json!({"type": "object", "properties": {"name": {"type": "string"},
        "age": {"type": "integer"}}, "required": ["name"]})
    );
    assert_eq!(
        ty(&r, "plan"),
        json!({"type": "object", "properties": {"tier": {"type": "string"},
        "seats": {"type": "integer"}}, "required": ["tier", "seats"]})
    );
    assert_eq!(ty(&r, "greeting"), json!({"type": "string"}));
    assert_eq!(
        ty(&r, "approval"),
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"]})
    );
    assert_eq!(ty(&r, "verdict"), json!({}));
    for f in ["user", "plan", "greeting", "approval", "verdict"] {
        assert!(field(&r, f).always_written, "{f}");
    }
    // Writes: how and where.
    let hows: Vec<&str> = ["plan", "user", "greeting", "approval", "verdict"]
        .iter()
        .map(|f| field(&r, f).writes[0].how.as_str())
        .collect();
    assert_eq!(hows, ["context_set", "sink_to", "sink_to", "sink_to", "output_keys"]);
    let w = &field(&r, "user").writes[0];
    assert_eq!((w.step.as_str(), w.line, w.column), ("profile", 18, 14));
    let w = &field(&r, "plan").writes[0];
    assert_eq!((w.line, w.column), (15, 60), "the `path` param of context_set");
    // Reads: nested paths, the system prompt, hitl messages, expressions.
    let reads = |p: &str| field(&r, p).reads.iter().map(|s| (s.step.clone(), s.how.clone())).collect::<Vec<_>>();
    assert_eq!(reads("plan.tier"), [("agents.profiler".to_owned(), "system_prompt".to_owned())]);
    assert_eq!(reads("user.name"), [("greet".to_owned(), "input".to_owned())]);
    assert_eq!(reads("greeting"), [("approve".to_owned(), "message".to_owned())]);
    assert_eq!(reads("approval.ok"), [("score".to_owned(), "params".to_owned())]);
    let read = &field(&r, "user.age").reads[0];
    assert_eq!((read.line, read.column), (28, 83), "inside the expression");
    let read = &field(&r, "plan.seats").reads[0];
    assert_eq!((read.line, read.column), (20, 54));
    let read = &field(&r, "plan.tier").reads[0];
    assert_eq!((read.line, read.column), (6, 48));
    // Only the never-read verdict is worth a warning.
    assert_eq!(rules_of(&r).len(), 1, "{:#?}", rules_of(&r));
    assert_eq!(warned(&r, WRITE_UNREAD, "`context.verdict`"), (30, 19));
    // The generated schema: no top-level `required`, fields in the order the blueprint mentions them.
    assert!(r.schema.get("required").is_none());
    let keys: Vec<&String> = r.schema["properties"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["plan", "user", "greeting", "approval", "verdict"]);
    assert!(r.declared.is_none());
}

const LOOPS_AND_MAPS: &str = r#"version: "0.1"
name: loops
steps:
  - name: load
    agent: {id: flujo.builtins.context_set, params: {path: users, value: [{name: a, email: "a@x"}]}}
  - kind: map
    name: each_user
    map:
      iterable_input: users
      body:
        - name: hello
          input: |
            Hi {{ this.name }}
            <{{ this.email }}> {{ this.phone }}
          sink_to: last_greeting
  - kind: loop
    name: retry
    loop:
      max_loops: 3
      exit_expression: "context.done"
      body:
        - name: attempt
          agent: {id: flujo.builtins.context_set, params: {path: done, value: true}}
  - name: each_tag
    input: "{% for t in context.tags %}{{ t.label | upper }}{% endfor %} {{ context.last_greeting }}"
"#;

#[test]
fn loops_map_bodies_and_this() {
    let r = report(LOOPS_AND_MAPS);
    assert_eq!(
        ty(&r, "users"),
        json!({"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"},
            "email": {"type": "string"}}, "required": ["name", "email"]}})
    );
    // `this` in the map body is an item of `context.users`.
    assert_eq!(field(&r, "users[].name").reads[0].step, "hello");
    assert_eq!(field(&r, "users").reads[0].how, "iterable_input");
    // The map body may run zero times; the loop body runs at least once.
    assert!(!field(&r, "last_greeting").always_written);
    assert_eq!(ty(&r, "last_greeting"), json!({"type": "string"}));
    assert!(field(&r, "done").always_written);
    assert_eq!(field(&r, "done").reads[0].how, "exit_expression");
    // A read the written type rules out, found in a block scalar (line after `input: |`).
    assert_eq!(warned(&r, READ_UNWRITTEN, "`context.users[].phone`"), (14, 35));
    // A loop variable over a field nothing writes: the field is read as a list of objects.
    assert_eq!(warned(&r, crate::rules::CTX_UNDECLARED_READ, "`context.tags`"), (25, 25));
    assert_eq!(
        ty(&r, "tags"),
        json!({"type": "array", "items": {"type": "object", "properties": {"label": {"type": "string"}}}})
    );
}

const BRANCHES: &str = r#"version: "0.1"
name: branches
steps:
  - name: seed
    agent: {id: flujo.builtins.context_set, params: {path: mode, value: fast}}
  - kind: conditional
    name: route
    condition_expression: "context.mode == 'fast'"
    branches:
      "true":
        - name: quick
          agent: {id: flujo.builtins.context_set, params: {path: result, value: q}}
        - name: quick_only
          agent: {id: flujo.builtins.context_set, params: {path: quick_note, value: 1}}
      "false":
        - name: slow
          agent: {id: flujo.builtins.context_set, params: {path: result, value: s}}
  - kind: parallel
    name: fan
    branches:
      a:
        - name: pa
          agent: {id: flujo.builtins.context_set, params: {path: results.a, value: 1}}
      b:
        - name: pb
          agent: {id: flujo.builtins.context_set, params: {path: results.b, value: 2.5}}
  - kind: StateMachine
    name: sm
    start_state: s1
    end_states: [done]
    states:
      s1:
        - name: first
          agent: {id: flujo.builtins.context_set, params: {path: sm_start, value: true}}
      s2:
        - name: second
          agent: {id: flujo.builtins.context_set, params: {path: sm_later, value: true}}
    transitions:
      - {from: s1, on: success, to: s2, when: "context.count_hint > 1"}
      - {from: s2, on: success, to: done}
  - name: report
    input: "{{ context.result }} {{ context.results }} {{ context.quick_note }} {{ context.sm_start }} {{ context.sm_later }}"
"#;

#[test]
fn conditionals_parallels_and_state_machines() {
    let r = report(BRANCHES);
    // Written in every branch: always; in one branch only: not.
    assert!(field(&r, "result").always_written);
    assert!(!field(&r, "quick_note").always_written);
    assert_eq!(field(&r, "result").writes.len(), 2);
    // Parallel branches (context_update, propagate) all run and merge.
    assert!(field(&r, "results.a").always_written && field(&r, "results.b").always_written);
    assert_eq!(
        ty(&r, "results"),
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "number"}}})
    );
    // The start state always runs; the others may not.
    assert!(field(&r, "sm_start").always_written);
    assert!(!field(&r, "sm_later").always_written);
    // A transition's `when` reads a field nothing writes.
    assert_eq!(warned(&r, crate::rules::CTX_UNDECLARED_READ, "`context.count_hint`"), (39, 48));
    assert_eq!(ty(&r, "count_hint"), json!({"type": "number"}));
    assert_eq!(field(&r, "mode").reads[0].how, "condition_expression");
    // Every written field is read: `results` as a whole covers `results.a`.
    assert!(!r.warnings.iter().any(|d| d.rule == WRITE_UNREAD), "{:#?}", rules_of(&r));
}

#[test]
fn no_merge_parallels_and_open_writes_are_noted() {
    let r = report(
        r#"version: "0.1"
name: open
agents:
  free: {model: "mock:echo"}
steps:
  - kind: parallel
    name: fan
    merge_strategy: no_merge
    branches:
      a:
        - name: pa
          agent: {id: flujo.builtins.context_set, params: {path: scratch, value: 1}}
  - name: merge_all
    agent: {id: flujo.builtins.transform, params: {expr: "{'x': 1}"}}
    updates_context: true
  - name: show
    input: "{{ context.anything }} {{ context.scratch }}"
"#,
    );
    assert!(!field(&r, "scratch").always_written);
    assert!(r.notes.iter().any(|n| n.contains("no_merge")), "{:?}", r.notes);
    assert!(r.notes.iter().any(|n| n.contains("`merge_all`")), "{:?}", r.notes);
    // An open write may produce any key: no read is reported.
    assert!(!r.warnings.iter().any(|d| d.rule == crate::rules::CTX_UNDECLARED_READ), "{:#?}", rules_of(&r));
}

#[test]
fn updates_context_without_keys_writes_the_output_schema_properties() {
    let r = report(
        r#"version: "0.1"
name: keys
agents:
  extractor:
    model: "mock:json"
    output_schema: {type: object, properties: {city: {type: string}, days: {type: integer}}, required: [city]}
steps:
  - name: extract
    uses: agents.extractor
    updates_context: true
  - name: merge
    input: {budget: 100, note: "for {{ context.city }}"}
    agent: {id: flujo.builtins.context_merge, params: {path: trip}}
  - name: show
    input: "{{ context.days }} {{ context.trip.budget }} {{ context.trip.note }}"
"#,
    );
    assert_eq!(ty(&r, "city"), json!({"type": "string"}));
    assert!(field(&r, "city").always_written);
    assert!(!field(&r, "days").always_written, "not required by the output schema");
    assert_eq!(field(&r, "days").writes[0].how, "updates_context");
    assert_eq!(ty(&r, "trip.budget"), json!({"type": "integer"}));
    assert_eq!(ty(&r, "trip.note"), json!({"type": "string"}));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert!(r.warnings.is_empty(), "{:#?}", rules_of(&r));
}

#[test]
fn imports_sharing_the_context_are_included_and_others_give_their_outputs() {
    let dir = tempfile_dir();
    std::fs::write(
        dir.join("child.yaml"),
        r#"version: "0.1"
name: child
steps:
  - name: shout
    input_keys: [greeting]
    agent: {id: flujo.builtins.render_template, params: {template: "{{ context.greeting | upper }}"}}
    sink_to: shout
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("own.yaml"),
        r#"version: "0.1"
name: own
steps:
  - name: count
    agent: {id: flujo.builtins.context_set, params: {path: total, value: 3}}
"#,
    )
    .unwrap();
    let main = r#"version: "0.1"
name: main
imports:
  child: ./child.yaml
  own: ./own.yaml
steps:
  - name: remember
    input: "{{ initial_prompt }}"
    sink_to: greeting
  - name: read
    uses: imports.child
    config: {inherit_context: true}
  - name: isolated
    uses: imports.own
    config:
      outputs: [{child: total, parent: own_total}]
  - name: show
    input: "{{ context.shout }} {{ context.own_total }}"
"#;
    let path = dir.join("main.yaml");
    std::fs::write(&path, main).unwrap();
    let r = context_report_str(main, &path, &LoadOptions::default()).unwrap();
    let shout = &field(&r, "shout").writes[0];
    assert!(shout.file.ends_with("child.yaml"), "{shout:?}");
    assert_eq!((shout.step.as_str(), shout.line), ("shout", 7));
    assert_eq!(ty(&r, "shout"), json!({"type": "string"}));
    let greeting_reads: Vec<&str> = field(&r, "greeting").reads.iter().map(|s| s.how.as_str()).collect();
    assert_eq!(greeting_reads, ["params", "input_keys"]);
    assert_eq!(ty(&r, "own_total"), json!({"type": "integer"}));
    assert_eq!(field(&r, "own_total").writes[0].how, "import outputs");
    assert!(!r.fields.iter().any(|f| f.path == "total"), "the child's own context stays out");
    assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
    assert!(r.warnings.is_empty(), "{:#?}", rules_of(&r));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_declared_context_schema_is_compared() {
    let r = report(
        r#"version: "0.1"
name: declared
context_schema:
  type: object
  properties:
    count: {type: string}
    legacy: {type: object, properties: {x: {type: string}}}
    given: {type: string}
steps:
  - name: seed
    agent: {id: flujo.builtins.context_set, params: {path: count, value: 3}}
  - name: more
    agent: {id: flujo.builtins.context_set, params: {path: extra, value: true}}
  - name: show
    input: "{{ context.count }} {{ context.extra }} {{ context.given }}"
"#,
    );
    let diff = r.declared.as_ref().unwrap();
    assert_eq!(diff.missing, ["extra"]);
    assert_eq!(diff.unused, ["legacy"]);
    assert_eq!(diff.type_mismatches.len(), 1);
    assert_eq!(diff.type_mismatches[0].path, "count");
    assert_eq!(warned(&r, SCHEMA_TYPE, "`count` as a string, but step `seed` writes an integer"), (6, 5));
    assert_eq!(warned(&r, SCHEMA_UNUSED, "`legacy`"), (7, 5));
    assert_eq!(warned(&r, SCHEMA_MISSING, "`context.extra`"), (13, 60));
    // Declared but never written: the run must be given it.
    assert_eq!(warned(&r, READ_UNWRITTEN, "`given` is declared in context_schema"), (15, 56));
}

#[test]
fn renderings() {
    let r = report(TYPES);
    let yaml = render_yaml(&r);
    assert!(yaml.starts_with("# The context of pipeline `onboarding`"), "{yaml}");
    let parsed = crate::yaml_to_json(&yaml).unwrap();
    assert_eq!(parsed["context_schema"], r.schema);
    let schema = render_json_schema(&r);
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["properties"], r.schema["properties"]);
    let rust = render_rust(&r, &rust_struct_name(&r.pipeline));
    let file = syn::parse_file(&rust).unwrap_or_else(|e| panic!("{e}\n{rust}"));
    let structs: Vec<String> = file
        .items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Struct(s) => Some(s.ident.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(structs, ["OnboardingContext", "Plan", "User", "Approval"]);
    assert!(rust.contains("pub plan: Plan,"), "{rust}");
    assert!(rust.contains("pub name: String,"), "required by the output schema: {rust}");
    assert!(rust.contains("pub age: Option<i64>,"), "{rust}");
    assert!(rust.contains("pub verdict: serde_json::Value,"), "{rust}");
    // Not every run writes the map body's field.
    let r = report(LOOPS_AND_MAPS);
    let rust = render_rust(&r, "Loops");
    syn::parse_file(&rust).unwrap_or_else(|e| panic!("{e}\n{rust}"));
    assert!(rust.contains("pub last_greeting: Option<String>,"), "{rust}");
    assert!(rust.contains("pub users: Vec<UsersItem>,"), "{rust}");
    assert!(rust.contains("pub tags: Option<Vec<TagsItem>>,"), "{rust}");
}

#[test]
fn a_whole_context_read_counts_for_every_field() {
    let r = report(
        r#"version: "0.1"
name: whole
steps:
  - name: a
    agent: {id: flujo.builtins.context_set, params: {path: a, value: 1}}
  - name: dump
    input: "{{ context | tojson }}"
"#,
    );
    assert!(r.warnings.is_empty(), "{:#?}", rules_of(&r));
    assert!(r.notes.iter().any(|n| n.contains("whole context")), "{:?}", r.notes);
}

/// A fresh folder under the system's temporary folder.
fn tempfile_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flujo-gen-context-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
