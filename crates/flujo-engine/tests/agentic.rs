//! `agentic_loop` against a local fake provider (real HTTP on 127.0.0.1): the tool round trip, and a run
//! interrupted between a tool call and the next model turn resumes without repeating any call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_llm::testing::{FakeProvider, ScriptedReply};
use flujo_llm::PricingTable;
use flujo_skills::{BuiltinRegistry, CallCounter, CountingSkill};
use flujo_store::MemoryStore;
use serde_json::json;

fn pipeline() -> Pipeline {
    Pipeline::new(
        "agentic",
        vec![Step::new(
            "solve",
            StepKind::AgenticLoop(AgenticLoopSpec {
                planner: AgentRef::Model {
                    model: "openai:gpt-test".into(),
                    settings: json!({"model": "openai:gpt-test", "system_prompt": "Use tools."}),
                },
                tools: vec!["test.count".into()],
                max_turns: 5,
            }),
        )],
    )
}

fn skills(counter: &CallCounter) -> Arc<BuiltinRegistry> {
    let mut r = BuiltinRegistry::new();
    CountingSkill::new(counter.clone()).register(&mut r, "test.count");
    Arc::new(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_round_trip_is_journaled_turn_by_turn() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 41}) });
    fake.push_reply(ScriptedReply::Text("the answer is 41".into()));
    let counter = CallCounter::default();
    let store = Arc::new(MemoryStore::new());
    let flujo = Flujo::builder(pipeline())
        .store(store.clone())
        .skills(skills(&counter))
        .models(Arc::new(fake.registry(PricingTable::default()).unwrap()))
        .build()
        .unwrap();
    let r = flujo.run(json!("what is it?")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("the answer is 41")));
    assert_eq!(r.step_history[0].metadata["turns"], json!(2));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    let second = calls[1].body.to_string();
    assert!(second.contains("tool") && second.contains("41"), "the tool result is fed back: {second}");
    assert_eq!(CountingSkill::count(&counter, "0/turn:0/tool:0"), 1);
    let records = store.load_journal(&r.run_id).await.unwrap();
    let kinds: Vec<(&str, &str)> = records.iter().map(|r| (r.path.as_str(), r.kind.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            ("0/turn:0", "model_turn"),
            ("0/turn:0/tool:0", "tool_call"),
            ("0/turn:1", "model_turn"),
            ("0", "agentic_loop")
        ]
    );
    assert!(r.total_tokens > 0);
}

/// A store that stops answering right after the first tool call's record is committed: the process is
/// "killed" between the tool call and the next model turn.
struct HangAfterTool(Arc<MemoryStore>);

#[async_trait]
impl RunStore for HangAfterTool {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.0.create_run(run).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.0.get_run(run_id).await
    }
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        self.0.update_run(update).await
    }
    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease: i64) -> Result<(), StoreError> {
        self.0.heartbeat(run_id, owner_id, lease).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.0.list_runs(filter).await
    }
    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.0.find_runs_by_prefix(prefix, limit).await
    }
    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        self.0.delete_runs(older_than_ms, status).await
    }
}

#[async_trait]
impl JournalStore for HangAfterTool {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        self.0.append(record).await?;
        if record.kind == "tool_call" {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.0.load_journal(run_id).await
    }
}

#[async_trait]
impl BlobStore for HangAfterTool {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.0.put_blob(bytes).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get_blob(hash).await
    }
}

#[async_trait]
impl SystemStateStore for HangAfterTool {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.0.get_state(key).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.0.set_state(key, value).await
    }
}

impl Store for HangAfterTool {
    fn describe(&self) -> String {
        "hang-after-tool+memory://".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_a_tool_call_and_the_next_turn_resumes_without_duplicate_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 1}) });
    fake.push_reply(ScriptedReply::Text("done".into()));
    let counter = CallCounter::default();
    let mem = Arc::new(MemoryStore::new());
    let models = Arc::new(fake.registry(PricingTable::default()).unwrap());
    let first = Flujo::builder(pipeline())
        .store(Arc::new(HangAfterTool(mem.clone())))
        .skills(skills(&counter))
        .models(models.clone())
        .build()
        .unwrap();
    let opts = RunOptions { run_id: Some("agentic-1".into()), ..RunOptions::new(json!("go")) };
    // The walk hangs right after the tool record commits; dropping it is the crash.
    assert!(tokio::time::timeout(Duration::from_millis(500), first.run_with(opts)).await.is_err());
    assert_eq!(fake.calls().len(), 1, "only the first model turn was made before the crash");
    let second = Flujo::builder(pipeline()).store(mem.clone()).skills(skills(&counter)).models(models).build().unwrap();
    let r = second.resume_with("agentic-1", ResumeRequest::default()).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("done")));
    assert_eq!(fake.calls().len(), 2, "no model turn was repeated");
    assert_eq!(CountingSkill::count(&counter, "0/turn:0/tool:0"), 1, "the tool call was not repeated");
    verify_chain(&mem.load_journal("agentic-1").await.unwrap()).unwrap();
}
