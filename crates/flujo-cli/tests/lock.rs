//! `flujo lock`: a lockfile pins the blueprint, its imports, the skill catalog and the programs of command
//! skills, prompts and prompt files, model ids, settings and prices, and chosen external files; `verify`
//! exits 4 naming each drifted entry, `compare` diffs two lockfiles, `show` summarises one.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use serde_json::Value;

const PIPELINE: &str = r#"version: "0.1"
name: locked
imports: {child: ./child.yaml}
agents:
  writer: {model: "mock:echo", system_prompt: {from_file: prompts/writer.md}, model_settings: {temperature: 0.2}}
steps:
  - {name: w, uses: agents.writer}
  - {name: c, uses: imports.child}
  - {name: t, agent: {id: words}}
"#;

fn locked_project() -> tempfile::TempDir {
    project(&[
        ("flujo.toml", "[cost.providers.openai.\"gpt-4o\"]\nprompt_tokens_per_1k = 0.0025\ncompletion_tokens_per_1k = 0.01\n[lockfile]\nexternal_files = [\"data/*.csv\"]\n"),
        ("pipeline.yaml", PIPELINE),
        ("child.yaml", "version: \"0.1\"\nname: child\nagents:\n  reviewer: {model: \"openai:gpt-4o\", system_prompt: \"review\"}\nsteps:\n  - {name: r, uses: agents.reviewer}\n"),
        ("prompts/writer.md", "You write.\n"),
        ("skills.yaml", "skills:\n  words:\n    command: [\"sh\", \"tools/words.sh\"]\n"),
        ("tools/words.sh", "wc -w\n"),
        ("data/a.csv", "x,y\n"),
        ("data/deep/b.csv", "not matched by data/*.csv\n"),
    ])
}

fn changes(o: &std::process::Output) -> Vec<String> {
    let v = json_value(o);
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}.{}",
                c["change"].as_str().unwrap(),
                c["section"].as_str().unwrap(),
                c["key"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn lock_pins_everything_a_run_depends_on_and_verify_catches_drift() {
    let dir = locked_project();
    let p = dir.path();
    let o = flujo(p, &["lock", "generate"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lock: Value = serde_json::from_str(&std::fs::read_to_string(p.join("flujo.lock")).unwrap()).unwrap();
    let paths: Vec<&str> = lock["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for f in ["pipeline.yaml", "child.yaml", "skills.yaml", "prompts/writer.md", "tools/words.sh"] {
        assert!(paths.contains(&f), "{f} not pinned: {paths:?}");
    }
    let models = lock["models"].as_array().unwrap();
    let reviewer = models.iter().find(|m| m["agent"] == "child.reviewer").expect("imported agent pinned");
    assert_eq!(reviewer["model_id"], "openai:gpt-4o");
    assert_eq!(reviewer["price"]["completion_tokens_per_1k"], 0.01);
    let ext: Vec<&str> =
        lock["external_files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(ext, ["data/a.csv"]);
    // A second generate refuses to overwrite without --force.
    let o = flujo(p, &["lock", "generate"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    // Nothing changed: verify passes.
    let o = flujo(p, &["lock", "verify"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // Drift everywhere: a prompt file, a price, a command skill's program, an external file, an import.
    std::fs::write(p.join("prompts/writer.md"), "You write poems.\n").unwrap();
    let toml = std::fs::read_to_string(p.join("flujo.toml")).unwrap().replace("0.01", "0.02");
    std::fs::write(p.join("flujo.toml"), toml).unwrap();
    std::fs::write(p.join("tools/words.sh"), "wc -c\n").unwrap();
    std::fs::write(p.join("data/new.csv"), "1\n").unwrap();
    let o = flujo(p, &["lock", "verify", "--format", "json"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let found = changes(&o);
    for c in [
        "changed files.prompts/writer.md",
        "changed prompts.writer",
        "changed models.child.reviewer",
        "changed files.tools/words.sh",
        "changed skills.words",
        "added external_files.data/new.csv",
    ] {
        assert!(found.iter().any(|f| f == c), "{c} missing from {found:?}");
    }
    assert!(!found.iter().any(|f| f.contains("models.writer")), "{found:?}");
    // Text names each entry; --ignore-fields drops sections or entries.
    let o = flujo(p, &["lock", "verify"]);
    assert_eq!(code(&o), 4);
    assert!(stdout(&o).contains("prompts.writer"), "{}", stdout(&o));
    let o = flujo(
        p,
        &["lock", "verify", "--ignore-fields", "files,prompts,models,skills.words,external_files", "--format", "json"],
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // compare: the old lockfile against a new one.
    let o = flujo(p, &["lock", "generate", "-o", "new.lock"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = flujo(p, &["lock", "compare", "flujo.lock", "new.lock", "--format", "json"]);
    assert_eq!(code(&o), 0);
    assert!(changes(&o).iter().any(|c| c == "changed prompts.writer"), "{:?}", changes(&o));
    let o = flujo(p, &["lock", "compare", "new.lock", "new.lock", "--format", "markdown"]);
    assert!(stdout(&o).contains("No differences"), "{}", stdout(&o));
    let o = flujo(p, &["lock", "generate", "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = flujo(p, &["lock", "verify", "--strict"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = flujo(p, &["lock", "show"]);
    assert!(stdout(&o).contains("locked") && stdout(&o).contains("models          2"), "{}", stdout(&o));
}

#[test]
fn lock_errors_are_clear() {
    let dir = locked_project();
    let p = dir.path();
    // No lockfile yet.
    let o = flujo(p, &["lock", "verify"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("flujo lock generate"), "{}", stderr(&o));
    // An invalid blueprint cannot be locked.
    std::fs::write(p.join("bad.yaml"), "version: \"0.1\"\nsteps:\n  - {name: a, uses: agents.nope}\n").unwrap();
    let o = flujo(p, &["lock", "generate", "-p", "bad.yaml", "-o", "bad.lock"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("V-A6"), "{}", stderr(&o));
    assert!(!p.join("bad.lock").exists());
    // A lockfile of another format version.
    std::fs::write(p.join("old.lock"), "{\"schema_version\": 2}").unwrap();
    let o = flujo(p, &["lock", "show", "-l", "old.lock"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("schema_version 2"), "{}", stderr(&o));
}
