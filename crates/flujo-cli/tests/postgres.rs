//! The CLI on a Postgres state store: run, pause, resume from another process, `lens`, and the errors of a
//! server that cannot be reached or refuses the credentials (exit 2, and the password is never printed).
//!
//! Needs `FLUJO_TEST_POSTGRES_URL` (set by `scripts/test.sh`, which starts a throwaway server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{code, flujo, json_out, postgres, project, stderr, stdout};
use serde_json::json;

/// The password of a `postgres://user:password@…` URI.
fn password(uri: &str) -> String {
    let userinfo = uri.split_once("://").unwrap().1.split_once('@').unwrap().0;
    userinfo.split_once(':').unwrap().1.to_owned()
}

const PIPELINE: &str = r#"name: approve_on_pg
steps:
  - name: double
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step * 2"}}
  - kind: hitl
    name: ask
    message: "publish {{ previous_step }}?"
    input_schema: {type: string, enum: ["yes", "no"]}
  - name: done
    agent: {id: flujo.builtins.transform, params: {expr: "'answer=' ~ previous_step ~ ', doubled=' ~ steps.double"}}
"#;

#[test]
fn run_pause_resume_from_another_process_and_lens_on_postgres() {
    let Some(state) = postgres("flow") else { return };
    let dir = project(&[("p.yaml", PIPELINE)]);
    let o = flujo(dir.path(), &["run", "p.yaml", "--input-json", "21", "--json", "--state", &state]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let paused = json_out(&o);
    assert_eq!(paused["status"], "paused");
    let run_id = paused["run_id"].as_str().unwrap().to_owned();
    assert_eq!(paused["pending"][0]["message"], "publish 42?");

    // A wrong answer is refused; the run stays paused.
    let o = flujo(dir.path(), &["resume", &run_id, "-i", "maybe", "--state", &state]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));

    let o = flujo(dir.path(), &["resume", &run_id, "-i", "yes", "--json", "--state", &state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let done = json_out(&o);
    assert_eq!(done["output"], json!("answer=yes, doubled=42"));

    let o = flujo(dir.path(), &["lens", "verify", &run_id, "--state", &state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("verified: 3 records"), "{}", stdout(&o));
    let o = flujo(dir.path(), &["lens", "list", "--json", "--state", &state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(list.as_array().unwrap().iter().any(|r| r["run_id"] == run_id.as_str() && r["status"] == "completed"));
    let o = flujo(dir.path(), &["lens", "show", &run_id[..8], "--state", &state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("completed"), "{}", stdout(&o));
    for out in [stdout(&o), stderr(&o)] {
        assert!(!out.contains(&password(&state)), "the password was printed: {out}");
    }
}

#[test]
fn an_unreachable_server_or_a_wrong_password_exits_2_without_the_password() {
    let Some(state) = postgres("errors") else { return };
    let dir = project(&[("p.yaml", PIPELINE)]);
    let secret = password(&state);
    let wrong = state.replacen(&secret, "not-the-password-7", 1);
    for (uri, needle, pw) in [
        (wrong.as_str(), "refused the credentials", "not-the-password-7"),
        ("postgres://flujo:pw-unreachable-9@127.0.0.1:1/flows", "127.0.0.1:1", "pw-unreachable-9"),
    ] {
        for args in [
            vec!["run", "p.yaml", "--input-json", "1", "--json", "--state", uri],
            vec!["run", "p.yaml", "--input-json", "1", "--state", uri],
            vec!["lens", "list", "--state", uri],
            vec!["resume", "some-run", "-i", "yes", "--state", uri],
        ] {
            let o = flujo(dir.path(), &args);
            assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
            let all = format!("{}{}", stdout(&o), stderr(&o));
            assert!(all.contains(needle), "{args:?}: {all}");
            assert!(all.contains("database"), "{args:?}: {all}");
            assert!(!all.contains(pw), "{args:?}: the password was printed: {all}");
        }
    }
    let o = common::cmd(dir.path(), &["dev", "show-config"]).env("FLUJO_STATE_URI", &state).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("postgres://flujo:***@"), "{}", stdout(&o));
    assert!(!stdout(&o).contains(&secret), "{}", stdout(&o));
}
