//! What a run is given before any step runs: the initial context is validated like every update (framework
//! fields refused, `context_schema` applied), a chosen run id is bounded, and both are typed errors of the
//! Rust API with nothing recorded. Also: the usage of an unfinished run is computed from its journal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::sync::Arc;

use flujo_core::*;
use flujo_engine::{journal_usage, Flujo, RunOptions, TaskClient};
use flujo_skills::BuiltinRegistry;
use flujo_store::MemoryStore;
use harness::{looped, tf};
use serde_json::json;

fn runner(schema: Option<Value>, store: Arc<dyn Store>) -> Flujo {
    let mut p = Pipeline::new("ctx", vec![tf("a", "context.name")]);
    p.context_schema = schema;
    Flujo::builder(p).store(store).build().unwrap()
}

fn opts(context: Value) -> RunOptions {
    let Value::Object(context) = context else { panic!("an object") };
    RunOptions::new(json!(null)).context(context)
}

#[tokio::test]
async fn the_initial_context_is_validated_before_the_run_is_recorded() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["name"],
    });
    let f = runner(Some(schema), store.clone());
    for (ctx, needle) in
        [(json!({"name": "x", "n": "three"}), "integer"), (json!({"n": 1}), "required"), (json!({}), "required")]
    {
        match f.run_with(opts(ctx.clone())).await {
            Err(e @ FlujoError::ContextValidation(_)) => {
                assert_eq!(e.kind(), "context_validation");
                assert!(e.to_string().contains(needle), "{ctx}: {e}");
            }
            other => panic!("{ctx}: expected a context validation error, got {other:?}"),
        }
    }
    for key in context::FRAMEWORK_FIELDS {
        let e = runner(None, store.clone()).run_with(opts(json!({ *key: "mine" }))).await.unwrap_err();
        assert!(matches!(e, FlujoError::ContextValidation(_)), "{key}: {e:?}");
        assert!(e.to_string().contains(&format!("'{key}'")), "{e}");
    }
    assert!(store.list_runs(&RunFilter::default()).await.unwrap().is_empty(), "nothing was recorded");
    let ok = f.run_with(opts(json!({"name": "bo", "n": 2}))).await.unwrap();
    assert_eq!((ok.status, ok.output), (RunStatus::Completed, Some(json!("bo"))));
}

#[tokio::test]
async fn chosen_run_ids_are_bounded() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let f = runner(None, store.clone());
    for bad in [String::new(), "a\nb".into(), "x".repeat(MAX_RUN_ID_CHARS + 1), "a b".into()] {
        let o = RunOptions::new(json!(null)).run_id(bad.clone());
        let e = f.run_with(o).await.unwrap_err();
        assert_eq!(e.kind(), "invalid_run_id", "{bad:?}: {e}");
        assert!(e.to_string().len() < 300, "the message does not echo a huge id: {e}");
    }
    assert!(store.list_runs(&RunFilter::default()).await.unwrap().is_empty());
    let o = RunOptions::new(json!(null)).run_id("x".repeat(MAX_RUN_ID_CHARS));
    assert_eq!(f.run_with(o).await.unwrap().status, RunStatus::Completed);
}

#[tokio::test]
async fn an_unfinished_run_reports_the_usage_of_its_records() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = Pipeline::new(
        "tally",
        vec![looped("twice", vec![tf("inc", "previous_step + 1")], 5, Some("previous_step >= 2")), tf("last", "1")],
    );
    let run = Flujo::builder(p).store(store.clone()).build().unwrap().run(json!(0)).await.unwrap();
    let mut records = store.load_journal(&run.run_id).await.unwrap();
    assert_eq!(records.len(), 4, "two iterations, the loop, the last step");
    for r in &mut records {
        let (p, c, cost) = match r.path.as_str() {
            "0" => (16, 4, 0.02),
            "1" => (20, 10, 0.03),
            _ => (8, 2, 0.01),
        };
        r.tokens = TokenUsage::new(p, c);
        r.cost_usd = cost;
    }
    let (tokens, cost) = journal_usage(&records);
    assert_eq!(tokens, 50, "the loop's record stands for its iterations");
    assert!((cost - 0.05).abs() < 1e-12);
    // Killed before the loop's record was written: the iterations count on their own.
    let partial: Vec<JournalRecord> = records.iter().filter(|r| r.path != "0").cloned().collect();
    assert_eq!(journal_usage(&partial).0, 50);
    assert_eq!(journal_usage(&records[..2]).0, 20);

    let client = TaskClient::new(store.clone(), Arc::new(BuiltinRegistry::new()));
    let view = client.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(view.total_tokens, 0, "a finished run reports its recorded totals");
}
