//! `flujo resume RUN_ID` runs a run's command skills from the catalog it started with, whatever the current
//! folder holds, and refuses when that catalog (or a program it runs) changed since (`pipeline_mismatch`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn flujo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flujo"))
        .args(args)
        .current_dir(dir)
        .env_remove("FLUJO_STATE_URI")
        .env_remove("FLUJO_CONFIG")
        .output()
        .expect("flujo runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json_out(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&o.stderr))
    })
}

const PIPELINE: &str =
    "name: p\nsteps:\n  - kind: hitl\n    name: ask\n    message: go?\n  - name: use\n    agent: eff\n";

fn skills(letter: &str) -> String {
    format!("skills:\n  eff:\n    command: [sh, ./eff.sh]\n    side_effects: true\n    timeout_s: 10\n  other:\n    command: [sh, -c, \"echo '\\\"{letter}\\\"'\"]\n")
}

/// Folders A and B each with a skills.yaml declaring `eff` (A's prints "A", B's prints "B"), a third
/// folder C with none, and one state file shared by all.
fn setup() -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().unwrap();
    for letter in ["A", "B"] {
        let d = root.path().join(letter);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("skills.yaml"), skills(letter)).unwrap();
        std::fs::write(d.join("eff.sh"), format!("cat >/dev/null; echo '\"{letter}\"'\n")).unwrap();
        std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    }
    std::fs::create_dir_all(root.path().join("C")).unwrap();
    let state = format!("sqlite:///{}", root.path().join("state.db").display());
    (root, state)
}

#[test]
fn resume_uses_the_skills_of_the_blueprints_folder_from_any_folder() {
    let (root, state) = setup();
    let a = root.path().join("A");
    let o = flujo(&a, &["run", "p.yaml", "--run-id", "r1", "--state", &state, "--json"]);
    assert_eq!(code(&o), 5, "{}", String::from_utf8_lossy(&o.stderr));

    // From B (whose skills.yaml has its own `eff`): A's skill runs.
    let o = flujo(&root.path().join("B"), &["resume", "r1", "-i", "go", "--state", &state, "--json"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json_out(&o)["output"], "A");

    // From a folder without skills.yaml too.
    let o = flujo(&a, &["run", "p.yaml", "--run-id", "r2", "--state", &state]);
    assert_eq!(code(&o), 5);
    let o = flujo(&root.path().join("C"), &["resume", "r2", "-i", "go", "--state", &state, "--json"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json_out(&o)["output"], "A");
    let o = flujo(&root.path().join("C"), &["lens", "verify", "r2", "--state", &state]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn resume_refuses_when_the_catalog_or_a_skill_program_changed() {
    let (root, state) = setup();
    let a = root.path().join("A");
    for id in ["c1", "c2", "c3"] {
        let o = flujo(&a, &["run", "p.yaml", "--run-id", id, "--state", &state]);
        assert_eq!(code(&o), 5);
    }
    // The catalog changes: a pipeline mismatch, exit 2, nothing run.
    std::fs::write(a.join("skills.yaml"), skills("A").replace("timeout_s: 10", "timeout_s: 11")).unwrap();
    let o = flujo(&root.path().join("B"), &["resume", "c1", "-i", "go", "--state", &state, "--json"]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pipeline_mismatch") && err.contains("skills.yaml"), "{err}");
    // The run is still paused and resumable once the catalog is restored.
    std::fs::write(a.join("skills.yaml"), skills("A")).unwrap();
    let o = flujo(&root.path().join("B"), &["resume", "c1", "-i", "go", "--state", &state, "--json"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json_out(&o)["output"], "A");

    // The script the skill runs changes.
    std::fs::write(a.join("eff.sh"), "cat >/dev/null; echo '\"evil\"'\n").unwrap();
    let o = flujo(&a, &["resume", "c2", "-i", "go", "--state", &state]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("eff.sh"), "{}", String::from_utf8_lossy(&o.stderr));

    // The whole folder is gone.
    std::fs::remove_dir_all(&a).unwrap();
    let o = flujo(&root.path().join("C"), &["resume", "c3", "-i", "go", "--state", &state]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is missing"), "{}", String::from_utf8_lossy(&o.stderr));
}
