//! Tool use against a local fake provider (real HTTP on 127.0.0.1), in both forms — `agentic_loop` and a plain
//! `step` whose model agent declares `tools:` — : the tool round trip, a run interrupted between a tool call
//! and the next model turn resumes without repeating any call, schema re-asks and the turn bound.

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

/// The two ways to give a model tools.
#[derive(Debug, Clone, Copy)]
enum Form {
    AgenticLoop,
    ToolStep,
}

const FORMS: [Form; 2] = [Form::AgenticLoop, Form::ToolStep];

fn pipeline(form: Form) -> Pipeline {
    pipeline_with(form, json!({"model": "openai:gpt-test", "system_prompt": "Use tools."}), 5)
}

fn pipeline_with(form: Form, mut settings: Value, max_turns: u32) -> Pipeline {
    let step = match form {
        Form::AgenticLoop => Step::new(
            "solve",
            StepKind::AgenticLoop({
                let mut spec = AgenticLoopSpec::new(AgentRef::Model { model: "openai:gpt-test".into(), settings });
                spec.tools = vec!["test.count".into()];
                spec.max_turns = max_turns;
                spec
            }),
        ),
        Form::ToolStep => {
            settings["tools"] = json!(["test.count"]);
            settings["max_turns"] = json!(max_turns);
            Step::new(
                "solve",
                StepKind::Step { agent: Some(AgentRef::Model { model: "openai:gpt-test".into(), settings }) },
            )
            // Like the loop: one conversation (whole-conversation retries are tested on their own).
            .with_retries(0)
        }
    };
    Pipeline::new("agentic", vec![step])
}

fn step_kind(form: Form) -> &'static str {
    match form {
        Form::AgenticLoop => "agentic_loop",
        Form::ToolStep => "step",
    }
}

fn skills(counter: &CallCounter) -> Arc<BuiltinRegistry> {
    let mut r = BuiltinRegistry::new();
    CountingSkill::new(counter.clone()).register(&mut r, "test.count");
    Arc::new(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_round_trip_is_journaled_turn_by_turn() {
    for form in FORMS {
        tool_round_trip(form).await;
    }
}

async fn tool_round_trip(form: Form) {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 41}) });
    fake.push_reply(ScriptedReply::Text("the answer is 41".into()));
    let counter = CallCounter::default();
    let store = Arc::new(MemoryStore::new());
    let flujo = Flujo::builder(pipeline(form))
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
            ("0", step_kind(form))
        ],
        "{form:?}"
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

/// Keeps no evaluations (the trait's defaults refuse).
impl flujo_core::EvaluationStore for HangAfterTool {}

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
    for form in FORMS {
        killed_between_tool_and_turn(form).await;
    }
}

async fn killed_between_tool_and_turn(form: Form) {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 1}) });
    fake.push_reply(ScriptedReply::Text("done".into()));
    let counter = CallCounter::default();
    let mem = Arc::new(MemoryStore::new());
    let models = Arc::new(fake.registry(PricingTable::default()).unwrap());
    let first = Flujo::builder(pipeline(form))
        .store(Arc::new(HangAfterTool(mem.clone())))
        .skills(skills(&counter))
        .models(models.clone())
        .build()
        .unwrap();
    let opts = RunOptions::new(json!("go")).run_id("agentic-1");
    // The walk hangs right after the tool record commits; dropping it is the crash.
    assert!(tokio::time::timeout(Duration::from_millis(500), first.run_with(opts)).await.is_err());
    assert_eq!(fake.calls().len(), 1, "only the first model turn was made before the crash");
    let second =
        Flujo::builder(pipeline(form)).store(mem.clone()).skills(skills(&counter)).models(models).build().unwrap();
    let r = second.resume_with("agentic-1", ResumeRequest::default()).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("done")));
    assert_eq!(fake.calls().len(), 2, "no model turn was repeated");
    assert_eq!(CountingSkill::count(&counter, "0/turn:0/tool:0"), 1, "the tool call was not repeated");
    verify_chain(&mem.load_journal("agentic-1").await.unwrap()).unwrap();
}

async fn build(form: Form, fake: &FakeProvider, settings: Value, max_turns: u32) -> (Flujo, CallCounter) {
    let counter = CallCounter::default();
    let flujo = Flujo::builder(pipeline_with(form, settings, max_turns))
        .store(Arc::new(MemoryStore::new()))
        .skills(skills(&counter))
        .models(Arc::new(fake.registry(PricingTable::default()).unwrap()))
        .build()
        .unwrap();
    (flujo, counter)
}

/// With an `output_schema`, the final answer is repaired and validated; a violating answer is re-asked (a
/// further journaled turn) with the validation error, and the output is the validated JSON value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_use_answers_are_validated_and_re_asked() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    for form in FORMS {
        let fake = FakeProvider::start().await.unwrap();
        fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 2}) });
        fake.push_reply(ScriptedReply::Text("{\"n\": \"two\"}".into()));
        fake.push_reply(ScriptedReply::Text("```json\n{\"n\": 2,}\n```".into()));
        let settings = json!({"model": "openai:gpt-test", "output_schema": schema, "max_retries": 1});
        let (flujo, _) = build(form, &fake, settings, 5).await;
        let r = flujo.run(json!("count")).await.unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{form:?}: {:?}", r.error);
        assert_eq!(r.output, Some(json!({"n": 2})), "{form:?}");
        assert_eq!(r.step_history[0].metadata["turns"], json!(3), "{form:?}");
        let calls = fake.calls();
        assert_eq!(calls.len(), 3, "{form:?}");
        let first = calls[0].body.to_string();
        assert!(first.contains("JSON Schema") && first.contains("integer"), "the schema is stated: {first}");
        let reask = calls[2].body.to_string();
        assert!(reask.contains("does not satisfy") && reask.contains("/n"), "{form:?}: {reask}");

        // Retries exhausted: the step fails naming the violation.
        let fake = FakeProvider::start().await.unwrap();
        fake.push_reply(ScriptedReply::Text("{\"n\": \"two\"}".into()));
        fake.push_reply(ScriptedReply::Text("{\"n\": \"still two\"}".into()));
        let settings = json!({"model": "openai:gpt-test", "output_schema": schema, "max_retries": 1});
        let (flujo, _) = build(form, &fake, settings, 5).await;
        let r = flujo.run(json!("count")).await.unwrap();
        assert_eq!(r.status, RunStatus::Failed, "{form:?}");
        let feedback = r.step_history[0].feedback.clone().unwrap_or_default();
        assert!(feedback.contains("violates the output schema after 2 attempt(s)"), "{form:?}: {feedback}");
        assert!(feedback.contains("/n"), "{form:?}: {feedback}");
        assert_eq!(fake.calls().len(), 2, "{form:?}");
    }
}

/// A model that keeps calling tools stops at `max_turns` with a step failure; every tool call it made ran
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_use_stops_at_max_turns() {
    for form in FORMS {
        let fake = FakeProvider::start().await.unwrap();
        for n in 0..3 {
            fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": n}) });
        }
        let (flujo, counter) = build(form, &fake, json!({"model": "openai:gpt-test"}), 3).await;
        let r = flujo.run(json!("loop forever")).await.unwrap();
        assert_eq!(r.status, RunStatus::Failed, "{form:?}");
        let feedback = r.step_history[0].feedback.clone().unwrap_or_default();
        assert!(feedback.contains("max_turns (3)"), "{form:?}: {feedback}");
        assert_eq!(fake.calls().len(), 3, "{form:?}");
        for turn in 0..3 {
            assert_eq!(CountingSkill::count(&counter, &format!("0/turn:{turn}/tool:0")), 1, "{form:?}");
        }
    }
}

/// A plain tool step keeps its step semantics: a failed conversation is retried (`max_retries`) under
/// `P/attempt:N`, and the output passes through validators.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_steps_retry_whole_conversations() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 1}) });
    fake.push_reply(ScriptedReply::Text("nope".into()));
    fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 2}) });
    fake.push_reply(ScriptedReply::Text("yes".into()));
    let counter = CallCounter::default();
    let mut p = pipeline_with(Form::ToolStep, json!({"model": "openai:gpt-test"}), 4);
    p.steps[0].config.max_retries = 1;
    p.steps[0].validators = vec![Validator::new("previous_step == 'yes'", None)];
    let store = Arc::new(MemoryStore::new());
    let flujo = Flujo::builder(p)
        .store(store.clone())
        .skills(skills(&counter))
        .models(Arc::new(fake.registry(PricingTable::default()).unwrap()))
        .build()
        .unwrap();
    let r = flujo.run(json!("say yes")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("yes")));
    assert_eq!(r.step_history[0].attempts, 2);
    assert_eq!(CountingSkill::count(&counter, "0/turn:0/tool:0"), 1);
    assert_eq!(CountingSkill::count(&counter, "0/attempt:2/turn:0/tool:0"), 1);
    let paths: Vec<String> = store.load_journal(&r.run_id).await.unwrap().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "0/turn:0",
            "0/turn:0/tool:0",
            "0/turn:1",
            "0/attempt:2/turn:0",
            "0/attempt:2/turn:0/tool:0",
            "0/attempt:2/turn:1",
            "0"
        ]
    );
}

/// `RunOptions::stream_tokens` turns model answers into `RunEvent::TokenDelta` events naming the call's
/// path (each model turn of a conversation has its own), delivered before the step finishes; without it no
/// delta is sent and the provider is not asked for a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_deltas_stream_as_run_events() {
    for stream_tokens in [true, false] {
        let fake = FakeProvider::start().await.unwrap();
        fake.push_reply(ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 1}) });
        fake.push_reply(ScriptedReply::Text("the count is one".into()));
        let (flujo, _) = build(Form::ToolStep, &fake, json!({"model": "openai:gpt-test"}), 4).await;
        let opts = RunOptions::new(json!("count")).stream_tokens(stream_tokens);
        let (mut events, fut) = flujo.run_streaming(opts).await;
        let r = fut.await.unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
        let mut deltas = Vec::new();
        let mut order = Vec::new();
        while let Ok(ev) = events.try_recv() {
            match ev {
                RunEvent::TokenDelta { path, step, delta, .. } => {
                    assert_eq!(step, "solve");
                    order.push("delta");
                    deltas.push((path, delta));
                }
                RunEvent::StepFinished { .. } => order.push("finished"),
                _ => {}
            }
        }
        let bodies: Vec<Value> = fake.calls().into_iter().map(|c| c.body).collect();
        if stream_tokens {
            let text: String = deltas.iter().filter(|(p, _)| p == "0/turn:1").map(|(_, d)| d.as_str()).collect();
            assert_eq!(text, "the count is one");
            assert!(deltas.iter().all(|(p, _)| p == "0/turn:1"), "the tool-call turn has no text: {deltas:?}");
            assert_eq!(order.last(), Some(&"finished"), "{order:?}");
            assert!(bodies.iter().all(|b| b["stream"] == true));
        } else {
            assert!(deltas.is_empty());
            assert!(bodies.iter().all(|b| b.get("stream").is_none()));
        }
    }
}

/// An `agentic_loop` offers its own `tools:` and those its planner agent declares (the union); a call of a tool
/// that was not offered is reported to the model under the offered tool names, as a failed tool result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_agents_own_tools_are_offered_too() {
    planner_tools("openai").await;
    planner_tools("anthropic").await;
}

async fn planner_tools(provider: &str) {
    let fake = FakeProvider::start().await.unwrap();
    fake.push_reply(ScriptedReply::ToolCall { name: "flujo_builtins_stringify".into(), arguments: json!({"x": 1}) });
    fake.push_reply(ScriptedReply::ToolCall { name: "made_up".into(), arguments: json!({}) });
    fake.push_reply(ScriptedReply::Text("done".into()));
    let model = format!("{provider}:gpt-test");
    let settings = json!({"model": model, "tools": ["flujo.builtins.stringify"]});
    let step = Step::new(
        "solve",
        StepKind::AgenticLoop({
            let mut spec = AgenticLoopSpec::new(AgentRef::Model { model: model.clone(), settings });
            spec.tools = vec!["test.count".into()];
            spec.max_turns = 5;
            spec
        }),
    );
    let counter = CallCounter::default();
    let flujo = Flujo::builder(Pipeline::new("agentic", vec![step]))
        .skills(skills(&counter))
        .models(Arc::new(fake.registry(PricingTable::default()).unwrap()))
        .build()
        .unwrap();
    let r = flujo.run(json!("go")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    let calls = fake.calls();
    let offered: Vec<&str> = calls[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().or(t["name"].as_str()).unwrap())
        .collect();
    assert_eq!(offered, ["test_count", "flujo_builtins_stringify"], "{provider}");
    let third = &calls[2].body["messages"];
    let last = third.as_array().unwrap().last().unwrap();
    let message = "error: unknown tool 'made_up' (available: test_count, flujo_builtins_stringify)";
    if provider == "openai" {
        assert_eq!(last["role"], "tool");
        assert_eq!(last["content"], message);
    } else {
        // Anthropic: the failed call's tool_result block says `is_error: true`; the successful one does not.
        let block = last["content"].as_array().unwrap().last().unwrap();
        assert_eq!(block["type"], "tool_result", "{last}");
        assert_eq!(block["content"], message);
        assert_eq!(block["is_error"], true, "{last}");
        let first_result = &calls[1].body["messages"].as_array().unwrap().last().unwrap()["content"][0];
        assert!(first_result.get("is_error").is_none(), "{first_result}");
    }
}

/// A tool loop stopped by the budget between turns keeps the turns it paid for in the step's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_loop_stopped_by_the_budget_keeps_its_paid_turns() {
    for form in FORMS {
        let fake = FakeProvider::start().await.unwrap();
        fake.push_reply_with_usage(
            ScriptedReply::ToolCall { name: "test_count".into(), arguments: json!({"n": 1}) },
            TokenUsage::new(400, 100),
        );
        fake.push_reply(ScriptedReply::Text("never".into()));
        let settings = json!({"model": "openai:gpt-test", "model_settings": {"max_tokens": 1000}});
        let counter = CallCounter::default();
        let flujo = Flujo::builder(pipeline_with(form, settings, 5))
            .skills(skills(&counter))
            .models(Arc::new(fake.registry(PricingTable::default()).unwrap()))
            // The first turn's reservation (~1,100 tokens) fits; after its 500 real tokens the second does not.
            .usage_limits({
                let mut limits = UsageLimits::default();
                limits.total_tokens_limit = Some(1200);
                limits
            })
            .build()
            .unwrap();
        let r = flujo.run(json!("go")).await.unwrap();
        assert_eq!(r.error.as_ref().unwrap().kind, "usage_limit_exceeded", "{form:?}");
        assert_eq!(fake.call_count(), 1, "{form:?}");
        let s = r.step_history.iter().find(|s| s.name == "solve").expect("the step is in the history");
        assert_eq!(s.tokens.total(), 500, "{form:?}");
        assert_eq!(s.metadata["stopped_by"], "usage_limit_exceeded", "{form:?}");
        assert_eq!(r.total_tokens, 500);
    }
}
