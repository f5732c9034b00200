//! End-to-end tests of the `flujo` binary: real processes, real files, a real SQLite state file.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::process::Command;

use serde_json::{json, Value};

#[test]
fn init_then_run_pauses_with_exit_5_and_resume_from_a_new_process_completes() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(code(&flujo(dir.path(), &["init"])), 0);
    assert_eq!(code(&flujo(dir.path(), &["init"])), 2, "refuses to overwrite without --force");
    let o = flujo(dir.path(), &["run", "--input-json", "0", "--json"]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let v = json_out(&o);
    for k in KEYS {
        assert!(v.get(k).is_some(), "--json object lacks {k}");
    }
    assert_eq!(v["status"], "paused");
    let pause = &v["pending"][0];
    assert_eq!(pause["pause_id"], "3");
    assert_eq!(pause["step"], "approve");
    assert_eq!(pause["input_schema"]["enum"], json!(["yes", "no"]));
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert!(dir.path().join(".flujo/state.db").is_file(), "default store is the project's SQLite file");

    // A bad answer is refused and the run stays resumable.
    let bad = flujo(dir.path(), &["resume", &run_id, "-i", "maybe", "--json"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("invalid_resume_input"), "{}", stderr(&bad));

    let done = flujo(dir.path(), &["resume", &run_id, "-i", "yes", "--json"]);
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    let v = json_out(&done);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"], "decision=yes, counted=3");
    assert_eq!(v["context"]["decision"], "yes");
    assert_eq!(v["step_history"][5]["name"], "polish", "the offline mock:echo agent ran last");
    // The parallel step's command skill counted the words of "A BIG NUMBER: 3".
    assert_eq!(v["step_history"][2]["output"], json!({"shout": "A BIG NUMBER: 3", "measure": 4}));

    // Resuming a completed run prints its stored result and exits 0.
    let again = flujo(dir.path(), &["resume", &run_id, "--json"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(json_out(&again)["output"], "decision=yes, counted=3");
}

const EACH_KIND: &str = r#"
version: "0.1"
name: each_kind
steps:
  - name: start
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - kind: loop
    name: loop
    loop:
      max_loops: 5
      exit_expression: "previous_step >= 4"
      body:
        - name: inc
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - kind: conditional
    name: cond
    condition_expression: "previous_step == 4"
    branches:
      "true":
        - name: listify
          agent: {id: flujo.builtins.transform, params: {expr: "[1, 2, previous_step]"}}
  - kind: map
    name: map
    map:
      body:
        - name: double
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step * 2"}}
  - kind: parallel
    name: par
    branches:
      a:
        - name: sum
          agent: {id: flujo.builtins.aggregate, params: {op: sum}}
      b:
        - name: count
          agent: {id: flujo.builtins.aggregate, params: {op: count}}
  - kind: cache
    name: cached
    wrapped_step:
      name: str
      agent: {id: flujo.builtins.stringify}
  - kind: StateMachine
    name: sm
    start_state: first
    end_states: [last]
    states:
      first:
        - name: f
          agent: {id: flujo.builtins.passthrough}
      last:
        - name: l
          agent: {id: flujo.builtins.transform, params: {expr: "'done ' ~ previous_step"}}
    transitions:
      - {from: first, on: success, to: last}
"#;

#[test]
fn run_json_covers_each_kind() {
    let dir = project(&[("p.yaml", EACH_KIND)]);
    let o = flujo(dir.path(), &["run", "p.yaml", "--input-json", "0", "--json", "--state", "memory://"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["status"], "completed");
    let kinds: Vec<&str> = v["step_history"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["step", "loop", "conditional", "map", "parallel", "cache", "state_machine"]);
    assert_eq!(v["step_history"][3]["output"], json!([2, 4, 8]));
    assert_eq!(v["step_history"][4]["output"], json!({"a": 14, "b": 3}));
    assert_eq!(v["output"], r#"done {"a":14,"b":3}"#);
}

#[test]
fn failed_run_exits_1_with_error_kind() {
    let dir = project(&[(
        "p.yaml",
        "name: f\nsteps:\n  - name: boom\n    agent: {id: flujo.builtins.fail, params: {message: kaput}}\n    config: {max_retries: 0}\n",
    )]);
    let o = flujo(dir.path(), &["run", "p.yaml", "--json", "--state", "memory://"]);
    assert_eq!(code(&o), 1);
    let v = json_out(&o);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["kind"], "step_failed");
    assert!(v["error"]["message"].as_str().unwrap().contains("kaput"));
}

#[test]
fn bad_inputs_get_clear_errors_and_documented_exit_codes() {
    let dir = project(&[
        ("malformed.yaml", "name: x\nsteps:\n  - name: a\n    agent: {id: [unclosed\n"),
        ("wrongtype.yaml", "name: x\nsteps:\n  - name: a\n    config: {max_retries: lots}\n"),
        ("unknownkind.yaml", "name: x\nsteps:\n  - name: a\n    kind: paralel\n"),
        (
            "unknownskill.yaml",
            "name: x\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.transfrom, params: {expr: '1'}}\n",
        ),
        ("python.yaml", "name: x\nsteps:\n  - name: a\n    agent: {id: 'my_pkg.tools:summarize'}\n"),
        ("cycle_a.yaml", "name: a\nimports:\n  b: ./cycle_b.yaml\nsteps:\n  - name: s\n    uses: imports.b\n"),
        ("cycle_b.yaml", "name: b\nimports:\n  a: ./cycle_a.yaml\nsteps:\n  - name: s\n    uses: imports.a\n"),
        ("missing_import.yaml", "name: m\nimports:\n  c: ./nope.yaml\nsteps:\n  - name: s\n    uses: imports.c\n"),
    ]);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["run", "malformed.yaml"], 4, "YAML-PARSE"),
        (&["run", "wrongtype.yaml"], 4, "BP-TYPE"),
        (&["run", "unknownkind.yaml"], 4, "parallel"),
        (&["run", "unknownskill.yaml"], 3, "flujo.builtins.transform"),
        (&["run", "python.yaml"], 3, "command"),
        (&["run", "cycle_a.yaml"], 3, "BP-IMPORT-CYCLE"),
        (&["run", "missing_import.yaml"], 3, "BP-IMPORT-MISSING"),
        (&["run", "does_not_exist.yaml"], 2, "not found"),
        (&["validate", "malformed.yaml"], 4, "YAML-PARSE"),
        (&["run", "malformed.yaml", "--input-json", "{oops"], 2, "--input-json"),
    ];
    for (args, want, needle) in cases {
        let o = flujo(dir.path(), args);
        let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
        assert_eq!(code(&o), *want, "{args:?}: {all}");
        assert!(all.contains(needle), "{args:?} should mention {needle:?}: {all}");
        assert!(!all.contains("panicked"), "{args:?} panicked: {all}");
        if args[0] == "run" && *want != 2 {
            assert!(all.contains(':'), "diagnostics carry file:line:col: {all}");
        }
    }
}

#[test]
fn validate_formats_and_locations() {
    let dir = project(&[
        ("w.yaml", "name: x\nsteps:\n  - name: a\n    colour: {id: flujo.builtins.passthrough}\n"),
        ("typo.yaml", "name: x\nsteps:\n  - name: a\n    agnet: {id: flujo.builtins.passthrough}\n"),
    ]);
    let o = flujo(dir.path(), &["validate", "w.yaml", "--format", "json"]);
    assert_eq!(code(&o), 0, "an unknown field near no real field is a warning: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("BP-UNKNOWN-FIELD") && text.contains("colour"), "{text}");
    // A near miss of a real field is an error (audit: `agnt:` ran as a passthrough, exit 0).
    let o = flujo(dir.path(), &["validate", "typo.yaml", "--format", "json"]);
    assert_eq!(code(&o), 4, "a misspelt field is an error");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["diagnostics"][0]["rule"], "BP-FIELD-TYPO");
    assert_eq!(v["diagnostics"][0]["suggestion"], "did you mean `agent`?");
    let o = flujo(dir.path(), &["validate", "w.yaml", "--strict"]);
    assert_eq!(code(&o), 4, "--strict makes warnings errors");
    let o = flujo(dir.path(), &["validate", "w.yaml", "--format", "sarif"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert_eq!(v["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"], 4);
}

#[test]
fn bad_flujo_toml_is_a_configuration_error() {
    let dir = project(&[("flujo.toml", "state_uri = [unclosed\n"), ("p.yaml", "name: x\nsteps:\n  - name: a\n")]);
    let o = flujo(dir.path(), &["run", "p.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("flujo.toml") && stderr(&o).contains("TOML"), "{}", stderr(&o));
    let dir = project(&[
        ("flujo.toml", "state_uri = 5\n[memory]\nenabled = true\n"),
        ("p.yaml", "name: x\nsteps:\n  - name: a\n"),
    ]);
    let o = flujo(dir.path(), &["run", "p.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("state_uri must be a string"), "{}", stderr(&o));
    let dir = project(&[
        ("flujo.toml", "state_uri = \"memory://\"\n[server]\nport = 8000\n"),
        ("p.yaml", "name: x\nsteps:\n  - name: a\n"),
    ]);
    let o = flujo(dir.path(), &["run", "p.yaml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("[server] is not supported"),
        "unused sections are reported, not ignored: {}",
        stderr(&o)
    );
    // `[telemetry]` is read (OTLP export): a key it does not know is a configuration error.
    let dir = project(&[
        ("flujo.toml", "state_uri = \"memory://\"\n[telemetry]\nenabled = true\n"),
        ("p.yaml", "name: x\nsteps:\n  - name: a\n"),
    ]);
    let o = flujo(dir.path(), &["run", "p.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("telemetry.enabled"), "{}", stderr(&o));
    // A key [governance] does not know is an error, not a silent no-op.
    let dir = project(&[
        ("flujo.toml", "state_uri = \"memory://\"\n[governance]\nchain = []\n"),
        ("p.yaml", "name: x\nsteps:\n  - name: a\n"),
    ]);
    let o = flujo(dir.path(), &["run", "p.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("[governance]") && stderr(&o).contains("chain"), "{}", stderr(&o));
}

#[test]
fn command_skills_that_crash_or_print_garbage_fail_the_step_clearly() {
    let dir = project(&[
        (
            "skills.yaml",
            "skills:\n  t.crash:\n    command: [sh, -c, \"echo 'stack trace here' >&2; exit 7\"]\n  t.garbage:\n    command: [sh, -c, \"echo not-json\"]\n  t.ok:\n    command: [sh, -c, \"cat\"]\n",
        ),
        ("crash.yaml", "name: c\nsteps:\n  - name: a\n    agent: t.crash\n    config: {max_retries: 0}\n"),
        ("garbage.yaml", "name: g\nsteps:\n  - name: a\n    agent: t.garbage\n    config: {max_retries: 0}\n"),
        ("ok.yaml", "name: o\nsteps:\n  - name: a\n    agent: t.ok\n"),
    ]);
    let o = flujo(dir.path(), &["run", "crash.yaml", "--json", "--state", "memory://"]);
    assert_eq!(code(&o), 1);
    let msg = json_out(&o)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("exited with 7") && msg.contains("stack trace here"), "{msg}");
    let o = flujo(dir.path(), &["run", "garbage.yaml", "--json", "--state", "memory://"]);
    assert_eq!(code(&o), 1);
    assert!(json_out(&o)["error"]["message"].as_str().unwrap().contains("invalid JSON"));
    let o = flujo(dir.path(), &["run", "ok.yaml", "--input-json", "{\"k\": [1,2]}", "--json", "--state", "memory://"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], json!({"k": [1, 2]}));
}

#[test]
fn dev_tools_explain_visualize_show_config() {
    let dir = project(&[("p.yaml", EACH_KIND)]);
    let o = flujo(dir.path(), &["dev", "explain", "p.yaml"]);
    assert_eq!(code(&o), 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("loop [1]") && out.contains("inc [1/loop:i/0]"), "{out}");
    let o = flujo(dir.path(), &["dev", "visualize", "p.yaml"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("flowchart TD"));
    let o = Command::new(env!("CARGO_BIN_EXE_flujo"))
        .args(["dev", "show-config"])
        .current_dir(dir.path())
        .env("FLUJO_STATE_URI", "memory://")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state_uri"]["value"], "memory://");
    assert_eq!(v["state_uri"]["source"], "env FLUJO_STATE_URI");
}

#[test]
fn logs_go_to_stderr_and_stdout_is_one_json_object() {
    let dir = project(&[("p.yaml", "name: x\nsteps:\n  - name: a\n    colour: oops\n")]);
    let o = flujo(dir.path(), &["run", "p.yaml", "--json", "--live", "--state", "memory://"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json_out(&o);
    assert!(stderr(&o).contains("BP-UNKNOWN-FIELD"), "warnings on stderr");
    assert!(stderr(&o).contains("▶ run"), "live events on stderr");
}
