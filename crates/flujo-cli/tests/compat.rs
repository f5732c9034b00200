//! Blueprints written as the original (Python) Flujo writes them, through the real binary: every case of
//! `flujo-blueprint/test_data/blueprints/compat/` validates and runs to its expected output, a state machine's
//! `on: pause` transitions and `output` object work across `flujo resume`, and the original's Python-only
//! entries (`skills.yaml` `path:`, a Python reducer) keep a clear error naming what replaces them.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flujo-blueprint/test_data/blueprints/compat")
}

fn header(text: &str, key: &str) -> Option<String> {
    let prefix = format!("# {key}:");
    text.lines().take_while(|l| l.starts_with('#')).find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_owned()))
}

/// Copies a compat case (a file, or a folder with `main.yaml`) into a fresh folder; returns it and the file name.
fn stage(case: &Path) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    if case.is_dir() {
        for entry in std::fs::read_dir(case).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        (dir, "main.yaml".to_owned())
    } else {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(case, dir.path().join(&name)).unwrap();
        (dir, name)
    }
}

#[test]
fn every_compat_blueprint_validates_and_runs_through_the_cli() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(compat_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "{cases:?}");
    for case in cases {
        let (dir, file) = stage(&case);
        let text = std::fs::read_to_string(dir.path().join(&file)).unwrap();
        let o = flujo(dir.path(), &["validate", &file]);
        assert_eq!(code(&o), 0, "{}: {}{}", case.display(), stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(": ok"), "{}: {}", case.display(), stdout(&o));
        if header(&text, "run").is_some_and(|r| r.starts_with("skip")) {
            continue; // model agents: validated above, not run (no provider here)
        }
        let input = header(&text, "input").unwrap_or_else(|| "null".to_owned());
        let o = flujo(dir.path(), &["run", &file, "--input-json", &input, "--state", "memory://", "--json"]);
        let out = json_out(&o);
        assert_eq!(out["status"], "completed", "{}: {out}\n{}", case.display(), stderr(&o));
        if let Some(want) = header(&text, "output") {
            let want: Value = serde_json::from_str(&want).unwrap();
            assert_eq!(out["output"], want, "{}", case.display());
        }
    }
    // the case whose skill is a command of the unwrapped skills.yaml really ran it
    let (dir, file) = stage(&compat_dir().join("skills_unwrapped"));
    let o = flujo(dir.path(), &["run", &file, "-i", "hello", "--state", "memory://", "--json"]);
    assert_eq!(json_out(&o)["output"], "HELLO", "{}", stderr(&o));
}

const REVIEW: &str = r#"version: "0.1"
name: review
steps:
  - kind: StateMachine
    name: flow
    start_state: draft
    end_states: [done]
    states:
      draft: {steps: [{name: write, agent: {id: flujo.builtins.transform, params: {expr: "'draft of ' ~ previous_step"}}}]}
      review:
        - kind: hitl
          name: ask
          message: "Approve {{ previous_step }}?"
      revise: {name: fix, agent: {id: flujo.builtins.transform, params: {expr: "'revised after ' ~ resume_input"}}}
    transitions:
      - {from: draft, on: success, to: review, when: "output.event == 'success' and output.last_step.name == 'write'"}
      - {from: review, on: pause, to: review}
      - {from: review, on: pause, to: done, when: "output.event == 'pause' and resume_input == 'yes'"}
      - {from: review, on: pause, to: revise}
      - {from: revise, on: success, to: done}
      - {from: review, on: success, to: draft}
"#;

#[test]
fn on_pause_transitions_follow_the_answer_across_resume() {
    let dir = project(&[("p.yaml", REVIEW)]);
    let o = flujo(dir.path(), &["validate", "p.yaml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    for (run, answer, output, states) in [
        ("r_yes", "yes", json!("yes"), json!(["draft", "review", "done"])),
        ("r_no", "no", json!("revised after no"), json!(["draft", "review", "revise", "done"])),
    ] {
        let o = flujo(dir.path(), &["run", "p.yaml", "-i", "essay", "--run-id", run, "--json"]);
        assert_eq!(code(&o), 5, "{}", stderr(&o));
        let out = json_out(&o);
        assert_eq!(out["pending"][0]["message"], "Approve draft of essay?", "{out}");
        let o = flujo(dir.path(), &["resume", run, "-i", answer, "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let out = json_out(&o);
        assert_eq!(out["output"], output, "{out}");
        // `on: pause` back to the same state is the state receiving its answer (no new hop, no second pause);
        // without a matching pause rule the `on: success` rule (back to draft) would have looped
        assert_eq!(out["step_history"][0]["metadata"]["states"], states, "{out}");
        // replay of the finished run agrees with the journal
        let o = flujo(dir.path(), &["lens", "replay", run, "--json"]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    }
}

#[test]
fn python_only_entries_keep_a_clear_error_with_the_replacement() {
    // skills.yaml in the original's form naming a Python factory
    let dir = project(&[
        ("skills.yaml", "py.skill:\n  path: \"mypkg.skills:make\"\n  description: x\n"),
        ("p.yaml", "name: p\nsteps:\n  - name: a\n    agent: {id: py.skill}\n"),
    ]);
    let o = flujo(dir.path(), &["run", "p.yaml", "-i", "x"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("BP-SKILL-MISSING") && err.contains("mypkg.skills:make"), "{err}");
    assert!(err.contains("give the skill a `command`"), "{err}");
    // a Python reducer, and the judge_selection mode this engine does not have
    let dir = project(&[(
        "p.yaml",
        "name: p\nsteps:\n  - kind: parallel\n    name: par\n    reduce: {callable: \"mypkg.reducers:pick\"}\n    branches:\n      a: [{name: a}]\n  - kind: parallel\n    name: par2\n    reduce: {mode: judge_selection}\n    branches:\n      a: [{name: b}]\n",
    )]);
    let o = flujo(dir.path(), &["validate", "p.yaml", "--format", "json"]);
    assert_ne!(code(&o), 0);
    let text = stdout(&o);
    assert!(text.contains("mypkg.reducers:pick") && text.contains("BP-SKILL-MISSING"), "{text}");
    assert!(text.contains("judge_selection"), "{text}");
}

/// `flujo.toml` as the original writes it: `env_file`, `[template] undefined_variables`, `[run] json_output`
/// and validation profiles are honoured; its Python-only settings are each reported once as not applicable,
/// never as unknown.
#[test]
fn the_originals_flujo_toml_is_honoured_or_explained() {
    let toml = r#"
state_uri = "sqlite:///state/ops.db"
env_file = ".env.local"
blueprint_allowed_imports = ["skills"]
governance_policy_module = "mypkg.policies:Strict"

[template]
undefined_variables = "strict"

[run]
json_output = true
pipeline_name = "pipeline"

[settings]
default_solution_model = "openai:gpt-4o"

[aros]
coercion_tolerant_level = 1

[lockfile]
enabled = true

[validation.profiles.relaxed]
"BP-UNKNOWN-FIELD" = "off"
"V-T*" = "error"
"#;
    let dir = project(&[
        ("flujo.toml", toml),
        (".env.local", "# comment\nexport GREETING=\"hello\\nthere\"\nEMPTY=\nQUOTED='a # b'\nPLAIN=x # trailing comment\n"),
        ("state/.keep", ""),
        (
            "p.yaml",
            "name: p\nsteps:\n  - name: greet\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step ~ '!'\"}}\n    bogus_key: 1\n",
        ),
        ("strict.yaml", "name: s\nsteps:\n  - name: a\n    input: \"{{ context.missing }}\"\n"),
    ]);
    // [run] json_output: one JSON object without --json; state_uri from the file
    let o = flujo(dir.path(), &["run", "p.yaml", "-i", "hi"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "hi!");
    assert!(dir.path().join("state/ops.db").is_file());
    // each not-applicable setting is named once with its reason; nothing is "unknown"
    let err = stderr(&o);
    for key in [
        "blueprint_allowed_imports",
        "governance_policy_module",
        "[settings]",
        "[aros]",
        "lockfile.enabled",
        "run.pipeline_name",
    ] {
        assert_eq!(err.matches(key).count(), 1, "{key}: {err}");
    }
    assert!(err.contains("has no effect here"), "{err}");
    assert!(!err.contains("unknown setting") && !err.contains("unknown key"), "{err}");
    // env_file: loaded before the run (existing variables win), shown by show-config as names only
    let o = cmd(dir.path(), &["dev", "show-config"]).env("QUOTED", "from the environment").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let shown = stdout(&o);
    assert!(shown.contains("GREETING") && !shown.contains("hello"), "{shown}");
    // [template] undefined_variables = "strict": an undefined name fails the step
    let o = flujo(dir.path(), &["run", "strict.yaml", "-i", "x"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stdout(&o).contains("missing"), "{}", stdout(&o));
    // validate --profile / --rules: `off` drops a rule, globs raise others
    let o = flujo(dir.path(), &["validate", "p.yaml"]);
    assert!(stdout(&o).contains("BP-UNKNOWN-FIELD"), "{}", stdout(&o));
    for flag in ["--profile", "--rules"] {
        let o = flujo(dir.path(), &["validate", "p.yaml", flag, "relaxed"]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        assert!(!stdout(&o).contains("BP-UNKNOWN-FIELD"), "{}", stdout(&o));
    }
    let o = flujo(dir.path(), &["validate", "p.yaml", "--profile", "nope"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("relaxed"), "{}", stderr(&o));
    // a malformed env_file is a configuration error naming the line
    std::fs::write(dir.path().join(".env.local"), "GOOD=1\nthis line is wrong\n").unwrap();
    let o = flujo(dir.path(), &["run", "p.yaml", "-i", "hi"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains(".env.local:2"), "{}", stderr(&o));
}

#[test]
fn env_file_values_reach_command_skills() {
    let dir = project(&[
        ("flujo.toml", "env_file = \"vars.env\"\n"),
        ("vars.env", "FLUJO_COMPAT_GREETING='hi from env_file'\n"),
        (
            "skills.yaml",
            "say:\n  command: [sh, -c, \"cat >/dev/null; printf '\\\"%s\\\"' \\\"$FLUJO_COMPAT_GREETING\\\"\"]\n",
        ),
        ("p.yaml", "name: p\nsteps:\n  - name: a\n    agent: {id: say}\n"),
    ]);
    let o = flujo(dir.path(), &["run", "p.yaml", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "hi from env_file");
}

/// The project folder as the original finds it: `--project`, `FLUJO_PROJECT_ROOT`, or the nearest folder up
/// holding flujo.toml / pipeline.yaml; its flujo.toml and pipeline.yaml are the defaults, and a relative
/// state path in its flujo.toml is relative to that file.
#[test]
fn the_project_folder_is_found_from_below_or_named() {
    let dir = project(&[
        ("proj/flujo.toml", "state_uri = \"sqlite:///data/state.db\"\n"),
        ("proj/data/.keep", ""),
        ("proj/pipeline.yaml", "name: p\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step ~ '!'\"}}\n"),
        ("proj/sub/deeper/.keep", ""),
        ("elsewhere/.keep", ""),
    ]);
    let root = dir.path().join("proj");
    let deeper = root.join("sub/deeper");
    // from a subfolder: the project's pipeline.yaml and flujo.toml, state next to flujo.toml
    let o = flujo(&deeper, &["run", "-i", "x", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "x!");
    assert!(root.join("data/state.db").is_file());
    assert!(!deeper.join("data").exists() && !deeper.join(".flujo").exists());
    let o = flujo(&deeper, &["validate"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("pipeline.yaml: ok"), "{}", stdout(&o));
    // --project and FLUJO_PROJECT_ROOT from an unrelated folder
    let other = dir.path().join("elsewhere");
    let o = flujo(&other, &["--project", root.to_str().unwrap(), "run", "-i", "y", "--json"]);
    assert_eq!(json_out(&o)["output"], "y!", "{}", stderr(&o));
    let o = cmd(&other, &["lens", "list", "--json"]).env("FLUJO_PROJECT_ROOT", &root).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_value(&o).as_array().map(Vec::len), Some(2), "{}", stdout(&o));
    // without a project: no pipeline.yaml is a configuration error naming it
    let o = flujo(&other, &["validate"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("pipeline.yaml"), "{}", stderr(&o));
    let o = flujo(&other, &["--project", "no/such/dir", "run"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no/such/dir"), "{}", stderr(&o));
}

/// `flujo run` as the original's users type it: `--input-data`, `-d/--context-data`, `-f/--context-file`
/// (JSON or YAML), `--json-output`, `--progress`, FLUJO_INPUT and piped stdin as the input, `--dry-run` (everything
/// resolved, nothing called) and `--summary`.
#[test]
fn run_takes_the_originals_options() {
    let dir = project(&[
        ("skills.yaml", "touch:\n  command: [sh, -c, \"cat >/dev/null; echo called >> called.log; echo '\\\"t\\\"'\"]\n"),
        (
            "pipeline.yaml",
            "name: p\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step ~ '/' ~ (context.who | default('-'))\"}}\n",
        ),
        ("touching.yaml", "name: t\nsteps:\n  - name: t\n    agent: {id: touch}\n"),
        ("ctx.json", "{\"who\": \"json\"}"),
        ("ctx.yaml", "who: yaml\n"),
        ("list.yaml", "- 1\n"),
    ]);
    let out = |o: &std::process::Output| json_out(o)["output"].clone();
    let o = flujo(dir.path(), &["run", "--input-data", "a", "-d", "{\"who\": \"d\"}", "--json-output"]);
    assert_eq!(out(&o), "a/d", "{}", stderr(&o));
    let o = flujo(dir.path(), &["run", "-i", "b", "--context-data", "{\"who\": \"cd\"}", "--json", "--progress"]);
    assert_eq!(out(&o), "b/cd", "{}", stderr(&o));
    let o = flujo(dir.path(), &["run", "-i", "c", "-f", "ctx.json", "--json"]);
    assert_eq!(out(&o), "c/json", "{}", stderr(&o));
    // -p/--pipeline-name names a Python file's pipeline variable: accepted, noted when it is not the blueprint's.
    let o = flujo(dir.path(), &["run", "-i", "c", "-p", "p", "--json"]);
    assert_eq!(out(&o), "c/-", "{}", stderr(&o));
    assert!(!stderr(&o).contains("--pipeline-name"), "{}", stderr(&o));
    let o = flujo(dir.path(), &["run", "-i", "c", "--pipeline-name", "pipeline", "--json"]);
    assert_eq!(out(&o), "c/-", "{}", stderr(&o));
    assert!(stderr(&o).contains("--pipeline-name pipeline is ignored"), "{}", stderr(&o));
    // validate's --fix is not a run option.
    let o = flujo(dir.path(), &["run", "-i", "c", "--fix"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = flujo(dir.path(), &["run", "-i", "c", "--context-file", "ctx.yaml", "--json"]);
    assert_eq!(out(&o), "c/yaml", "{}", stderr(&o));
    let o = flujo(dir.path(), &["run", "-i", "c", "-f", "list.yaml", "--json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(json_out(&o)["error"]["kind"], "context_validation");
    let o = flujo(dir.path(), &["run", "-i", "c", "-f", "missing.json", "--json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // FLUJO_INPUT, then piped stdin, are the input when no -i is given; -i wins
    let o = cmd(dir.path(), &["run", "--json"]).env("FLUJO_INPUT", "env").output().unwrap();
    assert_eq!(out(&o), "env/-", "{}", stderr(&o));
    let piped = |input: &str, args: &[&str]| {
        use std::io::Write;
        let mut child = cmd(dir.path(), args)
            .env_remove("FLUJO_INPUT")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    assert_eq!(out(&piped("from a pipe\n", &["run", "--json"])), "from a pipe/-");
    assert_eq!(out(&piped("ignored", &["run", "-i", "given", "--json"])), "given/-");
    // --dry-run: resolves everything, calls nothing, keeps no run
    let o = flujo(dir.path(), &["run", "touching.yaml", "--dry-run", "--json", "--state", "sqlite:///dry.db"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["status"], "dry_run", "{v}");
    assert!(v["plan"].as_str().unwrap_or_default().contains("t"), "{v}");
    assert!(!dir.path().join("called.log").exists());
    assert!(!dir.path().join("dry.db").exists());
    let o = flujo(dir.path(), &["run", "touching.yaml", "--dry-run"]);
    assert!(stdout(&o).contains("nothing was called"), "{}", stdout(&o));
    // a dry run still finds what would stop the run: an unknown skill
    let dir2 = project(&[("p.yaml", "name: p\nsteps:\n  - name: a\n    agent: {id: no.such.skill}\n")]);
    let o = flujo(dir2.path(), &["run", "p.yaml", "--dry-run"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    // --summary always has the totals line
    let o = flujo(dir.path(), &["run", "-i", "s", "--summary", "--state", "memory://"]);
    assert!(stdout(&o).contains("usage: 0 tokens"), "{}", stdout(&o));
}

/// The original's other commands and options: `status`, `dev version`, `dev validate`, `dev budgets show`,
/// `lens get`, `lens show --final-output/--show-output`, `lens spans --status/--name`, `lens stats
/// --pipeline/--hours`, global `--debug` and `-v`.
#[test]
fn the_originals_commands_answer() {
    let dir = project(&[
        ("flujo.toml", "[budgets.pipeline.\"p*\"]\ntotal_cost_usd_limit = 2.5\n"),
        (
            "pipeline.yaml",
            "name: p\nsteps:\n  - name: first\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step ~ '!'\"}}\n  - name: boom\n    agent: {id: flujo.builtins.fail, params: {message: no}}\n    config: {max_retries: 0}\n",
        ),
        ("ok.yaml", "name: q\nsteps:\n  - name: only\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step ~ '?'\"}}\n"),
    ]);
    // status before any run: providers without keys, the store not created
    let o = cmd(dir.path(), &["status", "--format", "json"])
        .env_remove("OPENAI_API_KEY")
        .env("ANTHROPIC_API_KEY", "k")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["command"], "status");
    let status_of =
        |n: &str| v["providers"].as_array().unwrap().iter().find(|p| p["name"] == n).unwrap()["status"].clone();
    assert_eq!(status_of("openai"), "MISSING");
    assert_eq!(status_of("anthropic"), "ENABLED");
    assert_eq!(v["state"]["exists"], false);
    assert!(!dir.path().join(".flujo/state.db").exists(), "status creates no store");
    // a failed and a completed run
    let o = flujo(dir.path(), &["run", "-i", "x", "--run-id", "run-alpha-1", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = flujo(dir.path(), &["run", "ok.yaml", "-i", "y", "--run-id", "run-beta-2", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = flujo(dir.path(), &["status"]);
    assert!(stdout(&o).contains("History: 2 runs"), "{}", stdout(&o));
    // dev version / validate / budgets show
    let o = flujo(dir.path(), &["dev", "version"]);
    assert!(stdout(&o).starts_with("flujo version: "), "{}", stdout(&o));
    let o = flujo(dir.path(), &["dev", "validate", "ok.yaml"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = flujo(dir.path(), &["dev", "budgets", "show", "pretty"]);
    assert_eq!(json_out(&o)["total_cost_usd_limit"], 2.5, "{}", stdout(&o));
    let o = flujo(dir.path(), &["dev", "budgets", "show", "other"]);
    assert_eq!(json_out(&o)["total_cost_usd_limit"], Value::Null);
    // lens get: a part of the id; none or several are errors naming them
    let o = flujo(dir.path(), &["lens", "get", "beta", "--final-output"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "\"y?\"");
    let o = flujo(dir.path(), &["lens", "get", "run-"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("run-alpha-1") && stderr(&o).contains("run-beta-2"), "{}", stderr(&o));
    let o = flujo(dir.path(), &["lens", "get", "gamma"]);
    assert_eq!(code(&o), 2);
    let o = flujo(dir.path(), &["lens", "show", "run-alpha-1", "--show-output"]);
    assert!(stdout(&o).contains("x!"), "{}", stdout(&o));
    // spans filters
    let o = flujo(dir.path(), &["lens", "spans", "run-alpha-1", "--status", "failed", "--json"]);
    let spans = json_value(&o);
    assert_eq!(spans.as_array().map(Vec::len), Some(1), "{spans}");
    let o = flujo(dir.path(), &["lens", "spans", "run-alpha-1", "--name", "fir", "--json"]);
    assert_eq!(json_value(&o).as_array().map(Vec::len), Some(1));
    let o = flujo(dir.path(), &["lens", "spans", "run-alpha-1", "--status", "weird"]);
    assert_eq!(code(&o), 2);
    // stats filters
    let o = flujo(dir.path(), &["lens", "stats", "--pipeline", "q", "--hours", "1", "--json"]);
    assert_eq!(json_out(&o)["runs"], 1, "{}", stdout(&o));
    let o = flujo(dir.path(), &["lens", "stats", "--hours", "-3"]);
    assert_eq!(code(&o), 2);
    // --debug and -v log to stderr; stdout keeps its one JSON object
    let o = flujo(dir.path(), &["--debug", "run", "ok.yaml", "-i", "z", "--json", "--state", "memory://"]);
    assert_eq!(json_out(&o)["output"], "z?");
    assert!(!stderr(&o).is_empty());
    let o = flujo(dir.path(), &["-v", "run", "ok.yaml", "-i", "z", "--json", "--state", "memory://"]);
    assert_eq!(json_out(&o)["output"], "z?");
}

/// `validate --explain`, `--baseline` and `--update-baseline`: known findings are recorded once and not
/// reported again; a new one still is.
#[test]
fn validate_explains_and_keeps_a_baseline() {
    let dir = project(&[(
        "p.yaml",
        "name: p\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.passthrough}\n    bogus: 1\n",
    )]);
    let o = flujo(dir.path(), &["validate", "p.yaml", "--explain"]);
    assert!(stdout(&o).contains("BP-UNKNOWN-FIELD: A key is not a field"), "{}", stdout(&o));
    let o = flujo(dir.path(), &["validate", "p.yaml", "--baseline", "base.json", "--update-baseline"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(dir.path().join("base.json").is_file());
    let o = flujo(dir.path(), &["validate", "p.yaml", "--baseline", "base.json", "--strict"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 finding(s) of the baseline not shown"), "{}", stdout(&o));
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: p\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.passthrough}\n    bogus: 1\n    other: 2\n",
    )
    .unwrap();
    let o = flujo(dir.path(), &["validate", "p.yaml", "--baseline", "base.json", "--strict"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert!(stdout(&o).contains("`other`") && !stdout(&o).contains("`bogus`"), "{}", stdout(&o));
    let o = flujo(dir.path(), &["validate", "p.yaml", "--baseline", "missing.json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = flujo(dir.path(), &["validate", "p.yaml", "--update-baseline"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// Findings travel under the original's ids: `BP-AGENT-MISSING` is `V-A6`, the state machine rules are
/// `V-SM1`, in text, JSON (`rule_id`) and SARIF (`ruleId`); a rules file written with the original's ids
/// (exact and globbed) changes them.
#[test]
fn findings_answer_to_the_originals_ids() {
    let dir = project(&[
        (
            "p.yaml",
            "version: \"0.1\"\nsteps:\n  - {name: s, uses: agents.nope}\n  - kind: StateMachine\n    name: sm\n    start_state: a\n    end_states: [done]\n    states:\n      a: [{name: s_a}]\n      orphan: [{name: s_o}]\n    transitions:\n      - {from: a, on: success, to: done}\n",
        ),
        ("rules.json", r#"{"V-A6": "warning", "V-SM*": "off"}"#),
    ]);
    let o = flujo(dir.path(), &["validate", "p.yaml"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("error[V-A6/BP-AGENT-MISSING]") && text.contains("warning[V-SM1/SM-UNREACHABLE]"), "{text}");
    let o = flujo(dir.path(), &["validate", "p.yaml", "--format", "json"]);
    let v = json_value(&o);
    let ids: Vec<(&str, &str)> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["rule_id"].as_str().unwrap(), d["rule"].as_str().unwrap()))
        .collect();
    assert!(ids.contains(&("V-A6", "BP-AGENT-MISSING")) && ids.contains(&("V-SM1", "SM-UNREACHABLE")), "{ids:?}");
    let o = flujo(dir.path(), &["validate", "p.yaml", "--format", "sarif"]);
    let v = json_value(&o);
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["ruleId"] == "V-A6" && r["properties"]["flujo_rule"] == "BP-AGENT-MISSING"));
    let o = flujo(dir.path(), &["validate", "p.yaml", "--rules", "rules.json"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("warning[V-A6/BP-AGENT-MISSING]") && !text.contains("V-SM1"), "{text}");
    let o = flujo(dir.path(), &["validate", "p.yaml", "--explain"]);
    assert!(stdout(&o).contains("V-A6: Unknown skill id or undeclared agent."), "{}", stdout(&o));
}

/// `validate --fix-dry-run` shows the mechanical fixes without writing; `--fix` applies them (keeping a
/// `.bak`), after which the blueprint validates and runs; `--fix-rules` limits the fixers.
#[test]
fn validate_fixes_what_is_mechanical() {
    let original = "version: \"0.1\"\nname: fixme\nsteps:\n  - step: first\n    agnt: {id: flujo.builtins.transform, params: {expr: \"'x'\"}}\n  - name: second\n    input: \"{{ previous_step.output | uppercase }}\"\n  - kind: parallel\n    name: p\n    merge_strategy: no_merge\n    reduce: values\n    branches:\n      a:\n        description: branch a\n        steps:\n          - name: a1\n      b: {name: b1}\n";
    let dir = project(&[("p.yaml", original)]);
    let o = flujo(dir.path(), &["validate", "p.yaml", "--fix-dry-run"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let err = stderr(&o);
    for rule in ["BP-FIELD-TYPO", "V-T1", "V-T3", "FORM-LEGACY-STEP", "FORM-STEPS-MAPPING", "FORM-SINGLE-STEP"] {
        assert!(err.contains(&format!("  - {rule}: ")), "{rule}: {err}");
    }
    assert!(err.contains("-    5 |     agnt:") && err.contains("+    5 |     agent:"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("p.yaml")).unwrap(), original);
    // Only the template fixers: the typo stays, so the file is still invalid.
    let o = flujo(dir.path(), &["validate", "p.yaml", "--fix", "--fix-rules", "V-T*"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let text = std::fs::read_to_string(dir.path().join("p.yaml")).unwrap();
    assert!(text.contains("{{ previous_step | upper }}") && text.contains("agnt:"), "{text}");
    let o = flujo(dir.path(), &["validate", "p.yaml", "--fix", "--yes"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(dir.path().join("p.yaml.bak").is_file());
    let text = std::fs::read_to_string(dir.path().join("p.yaml")).unwrap();
    assert!(text.contains("  - name: first\n    agent:") && text.contains("b: [{name: b1}]"), "{text}");
    assert!(!text.contains("steps:\n          - name: a1"), "{text}");
    let o = flujo(dir.path(), &["run", "p.yaml", "-i", "x", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], json!(["X", "X"]));
    let o = flujo(dir.path(), &["validate", "p.yaml", "--fix"]);
    assert!(stderr(&o).contains("No fixable issues found."), "{}", stderr(&o));
}

/// `lens from-file` renders a saved run (`run --json`, `lens show --json`) as a step tree without a store;
/// `dev compile-yaml` prints a blueprint as plain YAML with the original's forms normalized (and the result
/// validates and runs the same); the skills catalog may be `skills.yml` or `skills.json` as in the original.
#[test]
fn saved_runs_compiled_yaml_and_catalog_names() {
    let blueprint = "version: \"0.1\"\nname: forms\nsteps:\n  - step: first\n    agent: {id: words}\n  - kind: parallel\n    name: p\n    merge_strategy: no_merge\n    reduce: values\n    branches:\n      a:\n        steps:\n          - name: a1\n      b: {name: b1, agent: {id: flujo.builtins.transform, params: {expr: \"previous_step + 1\"}}}\n";
    let dir = project(&[
        ("p.yaml", blueprint),
        ("skills.json", r#"{"words": {"command": ["sh", "-c", "tr -d '\"' | wc -w"]}}"#),
    ]);
    let p = dir.path();
    let o = flujo(p, &["run", "p.yaml", "-i", "one two three", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], json!([3, 4]));
    std::fs::write(p.join("run.json"), &o.stdout).unwrap();
    let o = flujo(p, &["lens", "from-file", "run.json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let tree = stdout(&o);
    assert!(tree.contains("(pipeline forms): completed") && tree.contains("- first [0] completed"), "{tree}");
    assert!(tree.contains("output: [3,4]"), "{tree}");
    let o = flujo(p, &["lens", "from-file", "p.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // compile-yaml: list forms, `name:` for `step:`, and the compiled blueprint runs to the same output.
    let o = flujo(p, &["dev", "compile-yaml", "p.yaml", "-o", "compiled.yaml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let compiled = std::fs::read_to_string(p.join("compiled.yaml")).unwrap();
    assert!(compiled.contains("- name: first") && !compiled.contains("step: first"), "{compiled}");
    assert!(!compiled.contains("steps:\n          - name: a1") && compiled.contains("- name: b1"), "{compiled}");
    let o = flujo(p, &["run", "compiled.yaml", "-i", "one two three", "--json"]);
    assert_eq!(json_out(&o)["output"], json!([3, 4]), "{}", stderr(&o));
    let o = flujo(p, &["dev", "compile-yaml", "p.yaml", "--no-normalize"]);
    assert!(stdout(&o).contains("step: first"), "{}", stdout(&o));
    // The lock pins whichever catalog file there is.
    let o = flujo(p, &["lock", "generate", "-p", "p.yaml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(std::fs::read_to_string(p.join("flujo.lock")).unwrap().contains("\"skills.json\""));
    // An invalid blueprint is not compiled.
    std::fs::write(p.join("bad.yaml"), "steps:\n  - {name: a, agnt: x}\n").unwrap();
    let o = flujo(p, &["dev", "compile-yaml", "bad.yaml"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    // skills.yml is found too.
    std::fs::rename(p.join("skills.json"), p.join("skills.yml")).unwrap();
    let o = flujo(p, &["run", "p.yaml", "-i", "a b", "--json"]);
    assert_eq!(json_out(&o)["output"], json!([2, 3]), "{}", stderr(&o));
}
