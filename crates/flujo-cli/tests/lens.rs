//! End-to-end tests of `flujo lens`: real processes on a real SQLite state file, including a journal row
//! tampered with behind flujo's back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::process::Output;

use serde_json::{json, Value};

/// A project folder with the test pipelines and a SQLite state URI inside it.
struct Project {
    dir: tempfile::TempDir,
    state: String,
}

const APPROVAL: &str = r#"
name: demo
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
  - kind: hitl
    name: approve
    message: "Approve {{ previous_step }}?"
    input_schema: {enum: ["yes", "no"]}
"#;

const QUICK: &str = r#"
name: quick
steps:
  - name: a
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - name: b
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step * 10"}}
  - name: c
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step - 1"}}
"#;

const SECRETS: &str = r#"
name: secrets
steps:
  - name: login
    agent: {id: flujo.builtins.transform, params: {expr: "{'user': 'ada', 'password': 'hunter2', 'usage': {'total_tokens': 5}}"}}
    updates_context: true
  - name: api_key
    agent: {id: flujo.builtins.transform, params: {expr: "'sk-live-999'"}}
"#;

impl Project {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("approval.yaml", APPROVAL), ("quick.yaml", QUICK), ("secrets.yaml", SECRETS)] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let state = format!("sqlite:///{}", dir.path().join("state.db").display());
        Project { dir, state }
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    /// `flujo ARGS --state STATE`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--state", self.state.as_str()]);
        flujo(self.dir.path(), &all)
    }

    /// Runs `pipeline` with `run_id` and checks the exit code.
    fn start(&self, pipeline: &str, run_id: &str, want: i32) {
        let o = self.run(&["run", pipeline, "--input-json", "0", "--run-id", run_id, "--json"]);
        assert_eq!(code(&o), want, "{}", stderr(&o));
    }

    /// `flujo lens ARGS --json --state STATE`: exit code and the single JSON value on stdout.
    fn lens(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["lens"];
        all.extend(args);
        all.push("--json");
        let o = self.run(&all);
        (code(&o), json_value(&o))
    }
}

#[test]
fn lens_inspects_a_run_through_pause_and_resume() {
    let p = Project::new();
    p.start("approval.yaml", "alpha-1", 5);

    let (rc, list) = p.lens(&["list"]);
    assert_eq!(rc, 0);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let entry = &list[0];
    assert_eq!((entry["run_id"].as_str(), entry["pipeline"].as_str()), (Some("alpha-1"), Some("demo")));
    assert_eq!((entry["status"].as_str(), entry["steps"].as_u64()), (Some("paused"), Some(5)));
    for key in ["created_at", "total_tokens", "total_cost_usd"] {
        assert!(entry.get(key).is_some(), "list entry lacks {key}: {entry}");
    }

    // A prefix names the run; the pending pause says how to answer it.
    let (rc, show) = p.lens(&["show", "alp"]);
    assert_eq!(rc, 0);
    assert_eq!(show["status"], "paused");
    let pause = &show["pending"][0];
    assert_eq!((pause["pause_id"].as_str(), pause["message"].as_str()), (Some("2"), Some("Approve 4?")));
    assert_eq!(pause["input_schema"], json!({"enum": ["yes", "no"]}));
    let command = pause["resume_command"].as_str().unwrap();
    assert!(command.starts_with("flujo resume alpha-1 --pause-id 2 -i ANSWER --state "), "{command}");
    let steps = show["steps"].as_array().unwrap();
    let paths: Vec<&str> = steps.iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["0", "1/loop:0/0", "1/loop:1/0", "1/loop:2/0", "1"]);
    assert_eq!(steps[4]["kind"], "loop");
    for key in ["step", "status", "attempts", "latency_ms", "tokens", "cost_usd"] {
        assert!(steps[0].get(key).is_some(), "step entry lacks {key}");
    }
    assert!(steps[0].get("output").is_none(), "outputs only with -v");
    let (_, verbose) = p.lens(&["show", "alpha-1", "-v"]);
    assert_eq!(verbose["steps"][0]["output"], 1);
    assert_eq!(verbose["steps"][4]["patch"][0]["path"], json!(["steps", "inc"]));

    // Text mode prints the same command, which answers the pause.
    let text = p.run(&["lens", "show", "alpha-1"]);
    assert_eq!(code(&text), 0);
    assert!(stdout(&text).contains(command), "{}", stdout(&text));
    let args: Vec<&str> = command.split(' ').skip(1).map(|a| if a == "ANSWER" { "yes" } else { a }).collect();
    let resumed = flujo(p.dir.path(), &args);
    assert_eq!(code(&resumed), 0, "{}", stderr(&resumed));

    let (_, show) = p.lens(&["show", "alpha-1"]);
    assert_eq!((show["status"].as_str(), show["journal_len"].as_u64()), (Some("completed"), Some(6)));
    assert_eq!(show["pending"], json!([]));
    assert_eq!(show["output"], "yes");

    let (rc, trace) = p.lens(&["trace", "alpha"]);
    assert_eq!(rc, 0);
    let roots = trace["spans"].as_array().unwrap();
    let names: Vec<&str> = roots.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["start", "loop", "approve"]);
    let kids: Vec<&str> =
        roots[1]["children"].as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(kids, ["1/loop:0/0", "1/loop:1/0", "1/loop:2/0"]);
    for span in roots {
        assert!(span["offset_ms"].as_i64().unwrap() >= 0 && span["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    let text = stdout(&p.run(&["lens", "trace", "alpha-1"]));
    let inc_line = text.lines().find(|l| l.contains("[1/loop:0/0]")).unwrap();
    let loop_line = text.lines().find(|l| l.contains("[1]")).unwrap();
    let indent = |l: &str| l.find('✓').unwrap();
    assert!(indent(inc_line) > indent(loop_line), "children are indented under their parent:\n{text}");

    let (rc, spans) = p.lens(&["spans", "alpha-1"]);
    assert_eq!(rc, 0);
    let spans = spans.as_array().unwrap();
    assert_eq!(spans.len(), 6);
    for key in ["run_id", "path", "name", "kind", "status", "start_ms", "duration_ms", "attempts", "tokens", "cost_usd"]
    {
        assert!(spans[0].get(key).is_some(), "span lacks {key}: {}", spans[0]);
    }
    assert_eq!(spans[0]["run_id"], "alpha-1");

    let (rc, verify) = p.lens(&["verify", "alpha-1"]);
    assert_eq!(rc, 0);
    assert_eq!((verify["ok"].as_bool(), verify["records"].as_u64()), (Some(true), Some(6)));
    assert_eq!(verify["last_hash"].as_str().unwrap().len(), 64);

    let (rc, replay) = p.lens(&["replay", "alpha-1"]);
    assert_eq!(rc, 0, "{replay}");
    assert_eq!((replay["matches"].as_bool(), replay["recomputed_status"].as_str()), (Some(true), Some("completed")));
    assert_eq!(replay["output"], "yes");

    p.start("quick.yaml", "quick-1", 0);
    let (rc, stats) = p.lens(&["stats"]);
    assert_eq!(rc, 0);
    assert_eq!(stats["runs"], 2);
    assert_eq!(stats["by_status"]["completed"]["count"], 2);
    assert_eq!(stats["by_pipeline"]["demo"]["count"], 1);
    assert_eq!(stats["by_pipeline"]["quick"]["count"], 1);
    let demo = &stats["by_pipeline"]["demo"];
    assert!(demo["total_duration_ms"].as_i64().unwrap() >= 0 && demo["avg_duration_ms"].as_f64().is_some());
}

#[test]
fn list_filters_and_text_tables() {
    let p = Project::new();
    p.start("approval.yaml", "wait-1", 5);
    p.start("quick.yaml", "quick-1", 0);
    let ids = |v: &Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&p.lens(&["list"]).1), ["quick-1", "wait-1"], "newest first");
    assert_eq!(ids(&p.lens(&["list", "--status", "paused"]).1), ["wait-1"]);
    assert_eq!(ids(&p.lens(&["list", "--pipeline", "quick"]).1), ["quick-1"]);
    assert_eq!(ids(&p.lens(&["list", "--limit", "1"]).1), ["quick-1"]);
    assert_eq!(ids(&p.lens(&["list", "--since", "1h"]).1).len(), 2);
    assert!(ids(&p.lens(&["list", "--since", "2999-01-01T00:00:00Z"]).1).is_empty());
    assert_eq!(ids(&p.lens(&["list", "--since", "2000-01-01"]).1).len(), 2);

    let o = p.run(&["lens", "list", "--status", "sleeping"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("sleeping"), "{}", stderr(&o));
    let o = p.run(&["lens", "list", "--since", "the dawn of time"]);
    assert_eq!(code(&o), 2);

    let o = p.run(&["lens", "list"]);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    let header = text.lines().next().unwrap();
    for col in ["RUN ID", "PIPELINE", "STATUS", "CREATED", "STEPS", "TOKENS", "COST"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(text.contains("quick-1") && text.contains("paused"), "{text}");
    let o = p.run(&["lens", "stats"]);
    assert!(stdout(&o).contains("2 runs") && stdout(&o).contains("quick"), "{}", stdout(&o));
}

#[test]
fn run_ids_accept_unique_prefixes_only() {
    let p = Project::new();
    for id in ["abc-1", "abc-2", "abd-1"] {
        p.start("quick.yaml", id, 0);
    }
    let (rc, show) = p.lens(&["show", "abd"]);
    assert_eq!((rc, show["run_id"].as_str()), (0, Some("abd-1")));
    assert_eq!(p.lens(&["verify", "abc-2"]).0, 0, "an exact id");

    for sub in ["show", "trace", "spans", "replay", "verify"] {
        let o = p.run(&["lens", sub, "abc", "--json"]);
        assert_eq!(code(&o), 2, "{sub}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("ambiguous") && err.contains("abc-1") && err.contains("abc-2"), "{sub}: {err}");
        let v: Value = serde_json::from_str(stdout(&o).trim()).expect("--json: one error object on stdout");
        assert_eq!(v["error"]["kind"], "ambiguous_run_id", "{sub}: {v}");

        let o = p.run(&["lens", sub, "zzz"]);
        assert_eq!(code(&o), 2, "an unknown run id is a usage error: {sub}");
        assert!(stderr(&o).contains("run_not_found"), "{sub}: {}", stderr(&o));
    }
}

#[test]
fn prune_deletes_finished_runs_and_refuses_bad_durations() {
    let p = Project::new();
    p.start("quick.yaml", "done-1", 0);
    p.start("approval.yaml", "wait-1", 5);

    for args in
        [&["lens", "prune"][..], &["lens", "prune", "--older-than", "soon"], &["lens", "prune", "--older-than", "-3d"]]
    {
        let o = p.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("older-than"), "{}", stderr(&o));
    }
    let o = p.run(&["lens", "prune", "--older-than", "1d", "--status", "bogus"]);
    assert_eq!(code(&o), 2);

    let (rc, pruned) = p.lens(&["prune", "--older-than", "30d"]);
    assert_eq!((rc, pruned["deleted"].as_u64()), (0, Some(0)), "both runs are younger than 30 days");
    let (rc, pruned) = p.lens(&["prune", "--older-than", "0s"]);
    assert_eq!((rc, pruned["deleted"].as_u64()), (0, Some(1)), "{pruned}");
    let (_, list) = p.lens(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["run_id"], "wait-1", "a paused run is kept unless named");
    let o = p.run(&["lens", "show", "done-1"]);
    assert_eq!(code(&o), 2, "a pruned run is an unknown run id: {}", stderr(&o));

    let o = p.run(&["lens", "prune", "--older-than", "0s", "--status", "paused"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("pruned 1 paused run"), "{}", stdout(&o));
    assert_eq!(p.lens(&["list"]).1, json!([]));
}

#[test]
fn verify_names_a_tampered_journal_row() {
    let p = Project::new();
    p.start("quick.yaml", "t-1", 0);
    assert_eq!(p.lens(&["verify", "t-1"]).0, 0);

    let conn = rusqlite::Connection::open(p.db()).unwrap();
    let path: String =
        conn.query_row("SELECT path FROM journal WHERE run_id = 't-1' AND seq = 2", [], |r| r.get(0)).unwrap();
    let changed = conn.execute("UPDATE journal SET output = '999' WHERE run_id = 't-1' AND seq = 2", []).unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let (rc, verify) = p.lens(&["verify", "t-1"]);
    assert_eq!(rc, 1);
    assert_eq!(verify["ok"], false);
    assert_eq!((verify["broken"]["seq"].as_u64(), verify["broken"]["path"].as_str()), (Some(2), Some(path.as_str())));
    assert!(verify["broken"]["reason"].as_str().unwrap().contains("hash"), "{verify}");

    let o = p.run(&["lens", "verify", "t-1"]);
    assert_eq!(code(&o), 1);
    let text = stdout(&o);
    assert!(text.contains("seq 2") && text.contains(&format!("path {path}")), "{text}");

    // A row that no longer decodes at all is named too.
    let conn = rusqlite::Connection::open(p.db()).unwrap();
    conn.execute("UPDATE journal SET output = 'not json' WHERE run_id = 't-1' AND seq = 1", []).unwrap();
    drop(conn);
    let o = p.run(&["lens", "verify", "t-1", "--json"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("seq 1"), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("--json: one error object on stdout");
    assert_eq!(v["error"]["kind"], "store_error", "{v}");
}

#[test]
fn replay_exits_1_when_the_journal_does_not_reproduce_the_run() {
    let p = Project::new();
    p.start("approval.yaml", "r-1", 5);
    assert_eq!(p.lens(&["replay", "r-1"]).0, 0);
    // Change the loop's own record (path 1): replay recomputes the loop from its children and compares.
    let conn = rusqlite::Connection::open(p.db()).unwrap();
    conn.execute("UPDATE journal SET output = '40' WHERE run_id = 'r-1' AND path = '1'", []).unwrap();
    drop(conn);
    let (rc, replay) = p.lens(&["replay", "r-1"]);
    assert_eq!(rc, 1, "{replay}");
    assert_eq!(replay["matches"], false);
    assert!(replay["mismatch"].as_str().unwrap().contains("40"), "{replay}");
    let o = p.run(&["lens", "replay", "r-1"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("MISMATCH"), "{}", stdout(&o));
}

#[test]
fn secrets_never_appear_in_lens_output() {
    let p = Project::new();
    let o = p.run(&[
        "run",
        "secrets.yaml",
        "--input-json",
        r#"{"authorization": "Bearer abc", "q": 1}"#,
        "--run-id",
        "s-1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for args in [
        &["lens", "show", "s-1", "-v", "--json"][..],
        &["lens", "show", "s-1", "-v"],
        &["lens", "replay", "s-1", "--json"],
        &["lens", "replay", "s-1"],
        &["lens", "trace", "s-1", "--json"],
        &["lens", "spans", "s-1", "--json"],
        &["lens", "list", "--json"],
    ] {
        let o = p.run(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        for secret in ["hunter2", "Bearer abc", "sk-live-999"] {
            assert!(!all.contains(secret), "{args:?} printed {secret}: {all}");
        }
    }
    let (_, show) = p.lens(&["show", "s-1", "-v"]);
    assert_eq!(show["input"], json!({"authorization": "[REDACTED]", "q": 1}));
    assert_eq!(
        show["steps"][0]["output"],
        json!({"user": "ada", "password": "[REDACTED]", "usage": {"total_tokens": 5}})
    );
    let patch = &show["steps"][0]["patch"];
    assert!(patch
        .as_array()
        .unwrap()
        .iter()
        .any(|op| op["path"] == json!(["password"]) && op["value"] == "[REDACTED]"));
    assert_eq!(show["steps"][1]["output"], "[REDACTED]", "the output of a step named api_key");
    assert_eq!(show["output"], "[REDACTED]", "the run's output is that step's output");
}

#[test]
fn a_missing_state_file_is_not_created() {
    let p = Project::new();
    let o = p.run(&["lens", "list"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no state store"), "{}", stderr(&o));
    assert!(!p.db().exists(), "lens must not create a state store");
}

#[test]
fn verify_finds_a_deleted_last_record_and_a_forged_run_output() {
    let p = Project::new();
    p.start("quick.yaml", "t-del", 0);
    p.start("quick.yaml", "t-out", 0);
    let conn = rusqlite::Connection::open(p.db()).unwrap();
    let changed = conn.execute("DELETE FROM journal WHERE run_id = 't-del' AND seq = 2", []).unwrap();
    assert_eq!(changed, 1);
    let changed = conn.execute("UPDATE runs SET output = '1000000' WHERE run_id = 't-out'", []).unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    // The remaining chain is intact, but the run row commits to three records.
    let (rc, verify) = p.lens(&["verify", "t-del"]);
    assert_eq!(rc, 1, "{verify}");
    assert_eq!(verify["ok"], false);
    let reason = verify["broken"]["reason"].as_str().unwrap();
    assert!(reason.contains("commits to 3") && reason.contains("holds 2"), "{reason}");

    // The chain is intact, but the stored output is not the last record's.
    let (rc, verify) = p.lens(&["verify", "t-out"]);
    assert_eq!(rc, 1, "{verify}");
    assert!(verify["broken"]["reason"].as_str().unwrap().contains("stored output"), "{verify}");
    // Resume of the completed run does not print the forged output as the result.
    let o = p.run(&["resume", "t-out"]);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(!stdout(&o).contains("1000000"), "{}", stdout(&o));
    assert!(stderr(&o).contains("lens verify"), "{}", stderr(&o));
}

const MODEL_PIPELINE: &str = r#"version: "0.1"
name: writer
agents:
  writer:
    model: "openai:gpt-test"
    system_prompt: "You write one line."
    model_settings: {max_tokens: 100}
steps:
  - name: draft
    uses: agents.writer
    config: {max_retries: 0}
"#;

/// `lens show` of a run with a model step (the fake provider, real HTTP): the step's usage with its cached
/// and reasoning parts, cost and finish reason in the text and `--json`; a copy of the run whose records
/// carry every model-call fact (model, response model, request id; an agentic `model_turn`), written through
/// the store API, shows them all; `lens verify` holds, and fails once a usage detail is changed behind
/// flujo's back (the record hash covers it).
#[test]
fn show_reports_each_model_calls_usage_and_facts() {
    use flujo_core::{JournalStore, RunStore};

    let env = fake_project(&[("pipeline.yaml", MODEL_PIPELINE)], "state_uri = \"sqlite:///state.db\"\n");
    // OpenAI reports cache reads and reasoning tokens (cache writes are Anthropic's and Bedrock's).
    let usage = flujo_core::TokenUsage::new(10_000, 2_000).with_cache(4_000, 0).with_reasoning(500);
    env.fake.push_reply_with_usage(flujo_llm::testing::ScriptedReply::Text("A line.".into()), usage);
    let dir = env.dir.path();
    let o = flujo(dir, &["run", "-i", "topic", "--run-id", "m-1", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = flujo(dir, &["lens", "show", "m-1", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    let step = &v["steps"][0];
    assert_eq!(step["tokens"], json!({"prompt": 10_000, "completion": 2_000, "cached": 4_000, "reasoning": 500}));
    assert_eq!(step["finish_reason"], "stop", "{step}");
    let o = flujo(dir, &["lens", "show", "m-1"]);
    let text = stdout(&o);
    assert!(text.contains("model calls:"), "{text}");
    let line = text.lines().find(|l| l.starts_with("  [0] 0 (draft): ")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("tokens prompt 10000 · completion 2000 · cached 4000 · cache write 0 · reasoning 500"),
        "{line}"
    );
    assert!(line.contains("finish stop"), "{line}");
    assert_eq!(code(&flujo(dir, &["lens", "verify", "m-1"])), 0);

    // The same run, its records carrying every fact a model call journals, and an agentic loop's turn.
    let db = dir.join("state.db");
    env.rt.block_on(async {
        let store = flujo_store::SqliteStore::open(&db, flujo_store::SqliteOptions::default()).unwrap();
        let mut run = store.get_run("m-1").await.unwrap().unwrap();
        let mut prev = flujo_core::journal::GENESIS_HASH.to_owned();
        let mut records = store.load_journal("m-1").await.unwrap();
        let mut turn = records[0].clone();
        turn.path = "0/turn:0".into();
        turn.kind = "model_turn".into();
        turn.metadata.clear();
        turn.metadata.insert("model".into(), json!("anthropic:claude-haiku-4-5"));
        turn.tokens = flujo_core::TokenUsage::new(300, 20);
        records.insert(0, turn);
        for (seq, r) in records.iter_mut().enumerate() {
            r.run_id = "m-2".into();
            r.seq = seq as u64;
            if r.kind != "model_turn" {
                r.metadata.insert("model".into(), json!("openai:gpt-test"));
                r.metadata.insert("response_model".into(), json!("gpt-test-2026-01-01"));
                r.metadata.insert("request_id".into(), json!("req_abc123"));
                r.tokens.cache_write = 1_000;
            }
            r.seal(&prev);
            prev.clone_from(&r.hash);
        }
        run.run_id = "m-2".into();
        run.journal_head = Some(flujo_core::ChainHead { len: records.len() as u64, hash: prev });
        store.create_run(&run).await.unwrap();
        for r in &records {
            store.append(r).await.unwrap();
        }
    });
    let v = json_out(&flujo(dir, &["lens", "show", "m-2", "--json"]));
    let step = &v["steps"][1];
    assert_eq!(
        (step["model"].as_str(), step["response_model"].as_str(), step["request_id"].as_str()),
        (Some("openai:gpt-test"), Some("gpt-test-2026-01-01"), Some("req_abc123")),
        "{step}"
    );
    assert_eq!(step["tokens"]["cache_write"], 1_000, "{step}");
    assert_eq!(v["steps"][0]["model"], "anthropic:claude-haiku-4-5");
    assert!(v["steps"][0].get("request_id").is_none(), "absent facts are left out: {}", v["steps"][0]);
    let text = stdout(&flujo(dir, &["lens", "show", "m-2"]));
    assert!(
        text.contains("[0] 0/turn:0 (draft): anthropic:claude-haiku-4-5  tokens prompt 300 · completion 20"),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("  [1] 0 (draft): ")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("  [1] 0 (draft): openai:gpt-test (answered as gpt-test-2026-01-01)  tokens"), "{line}");
    assert!(line.contains("cached 4000 · cache write 1000 · reasoning 500"), "{line}");
    assert!(line.contains("finish stop  request req_abc123"), "{line}");
    assert_eq!(code(&flujo(dir, &["lens", "verify", "m-2"])), 0);

    // A usage detail changed behind flujo's back breaks the chain.
    let conn = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(
        conn.execute("UPDATE journal SET reasoning_tokens = 7 WHERE run_id = 'm-1' AND seq = 0", []).unwrap(),
        1
    );
    drop(conn);
    let o = flujo(dir, &["lens", "verify", "m-1", "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert_eq!(json_out(&o)["broken"]["seq"], 0);
}

const LOOP_PIPELINE: &str = r#"version: "0.1"
name: looped
agents:
  writer:
    model: "openai:gpt-test"
    system_prompt: "You write one line."
steps:
  - kind: loop
    name: twice
    loop:
      max_loops: 2
      exit_expression: "false"
      body:
        - name: draft
          uses: agents.writer
          config: {max_retries: 0}
"#;

/// A composite's usage adds up its children's, details included, in `--json` and in `lens show`; the run's
/// `total_tokens` counts prompt and completion tokens once (details are parts of them).
#[test]
fn usage_details_add_up_in_composites() {
    let env = fake_project(&[("pipeline.yaml", LOOP_PIPELINE)], "state_uri = \"sqlite:///state.db\"\n");
    for (cached, reasoning) in [(100, 10), (300, 30)] {
        let usage = flujo_core::TokenUsage::new(1_000, 200).with_cache(cached, 0).with_reasoning(reasoning);
        env.fake.push_reply_with_usage(flujo_llm::testing::ScriptedReply::Text("A line.".into()), usage);
    }
    let dir = env.dir.path();
    let o = flujo(dir, &["run", "-i", "topic", "--run-id", "l-1", "--json"]);
    let v = json_out(&o);
    assert_eq!(v["total_tokens"], 2_400, "{v}");
    let history = v["step_history"].as_array().unwrap();
    let loop_entry = history.iter().find(|s| s["name"] == "twice").unwrap_or_else(|| panic!("{v}"));
    assert_eq!(loop_entry["tokens"], json!({"prompt": 2_000, "completion": 400, "cached": 400, "reasoning": 40}));
    let shown = json_out(&flujo(dir, &["lens", "show", "l-1", "--json"]));
    let loop_record = shown["steps"].as_array().unwrap().iter().find(|s| s["step"] == "twice").unwrap();
    assert_eq!(loop_record["tokens"], loop_entry["tokens"]);
    let drafts: Vec<&Value> = shown["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "draft").collect();
    assert_eq!(drafts.len(), 2, "{shown}");
    assert_eq!(drafts[1]["tokens"]["cached"], 300);
}
