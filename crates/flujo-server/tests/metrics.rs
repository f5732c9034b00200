//! The metrics of real runs: pipelines run through real runners on a SQLite store (in a temporary folder)
//! whose telemetry is a `Metrics` (tee'd with a recorder of the events), with model steps against the fake
//! provider, a pause and its resume, a budget refusal and a governance denial; the rendered counters are
//! exact, histogram counts equal the live steps, store commits equal the journal records. The timed store
//! passes the store conformance suite; `/metrics` is served over real HTTP with and without a token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_llm::testing::{FakeProvider, ScriptedReply};
use flujo_llm::{Price, PricingTable};
use flujo_server::metrics::{serve, tee, Metrics, CONTENT_TYPE};
use flujo_skills::BuiltinRegistry;
use flujo_store::{conformance, MemoryStore};
use serde_json::json;

/// The value of the series `name{labels}` (labels as rendered, in order), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Counts the live `StepFinished` events by kind.
#[derive(Default)]
struct Recorder(Mutex<HashMap<String, u64>>);

impl Telemetry for Recorder {
    fn on_event(&self, event: &RunEvent) {
        if let RunEvent::StepFinished { result, replayed: false, .. } = event {
            *self.0.lock().unwrap().entry(result.kind.clone()).or_default() += 1;
        }
    }
}

/// Denies every call.
struct DenyAll;

#[async_trait]
impl GovernancePolicy for DenyAll {
    fn name(&self) -> &str {
        "deny_all"
    }
    async fn evaluate(&self, _req: &GovernanceRequest<'_>) -> GovernanceDecision {
        GovernanceDecision::Deny("nothing is allowed".into())
    }
}

fn model_step(name: &str) -> Step {
    Step::new(
        name,
        StepKind::Step {
            agent: Some(AgentRef::Model {
                model: "openai:gpt-test".into(),
                settings: json!({"model_settings": {"max_tokens": 1000}}),
            }),
        },
    )
}

fn transform(name: &str, expr: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({"expr": expr}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_through_real_runners_are_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let bare = flujo_store::open_store(&format!("sqlite:///{}", dir.path().join("state.db").display())).unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = metrics.wrap_store(bare.clone());
    let recorder = Arc::new(Recorder::default());
    let telemetry = tee(metrics.clone(), recorder.clone());
    let fake = FakeProvider::start().await.unwrap();
    let price = Price::new(1.0, 2.0);
    let models = Arc::new(fake.registry(PricingTable::new().with_price("openai", "*", price)).unwrap());
    let skills = Arc::new(BuiltinRegistry::new());
    let runner = |pipeline: Pipeline| {
        Flujo::builder(pipeline)
            .store(store.clone())
            .skills(skills.clone())
            .models(models.clone())
            .telemetry(telemetry.clone())
    };

    // Two completed runs, each one model call (30 + 12 tokens: 0.03 + 0.024 USD) and one transform.
    let work = runner(Pipeline::new("work", vec![model_step("ask"), transform("t", "previous_step")])).build().unwrap();
    for _ in 0..2 {
        fake.push_reply_with_usage(ScriptedReply::Text("hello".into()), TokenUsage::new(30, 12));
        let r = work.run(json!("q")).await.unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    }
    // A run that pauses, then is resumed: the replayed step is not counted again.
    let hitl = Step::new("approve", StepKind::Hitl(HitlSpec::new("ok?", None)));
    let approve =
        runner(Pipeline::new("approve", vec![transform("a", "1"), hitl, transform("b", "2")])).build().unwrap();
    let paused = approve.run(json!(0)).await.unwrap();
    assert_eq!(paused.status, RunStatus::Paused);
    let done = approve.resume_with(&paused.run_id, ResumeRequest::answer(json!("yes"))).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    // A governance denial: the call is never made.
    let gated =
        runner(Pipeline::new("gated", vec![transform("g", "1")])).governance(Arc::new(DenyAll)).build().unwrap();
    let r = gated.run(json!(0)).await.unwrap();
    assert_eq!(r.error.map(|e| e.kind).as_deref(), Some("governance_denied"));
    // A budget refusal: the reservation (1,000 completion tokens) does not fit 0.001 USD.
    let budget = runner(Pipeline::new("budget", vec![transform("first", "1"), model_step("ask")]))
        .usage_limits(UsageLimits::new().with_cost_limit(0.001))
        .build()
        .unwrap();
    let r = budget.run(json!(0)).await.unwrap();
    assert_eq!(r.error.map(|e| e.kind).as_deref(), Some("usage_limit_exceeded"));
    assert_eq!(fake.call_count(), 2, "the refused and the denied calls were never made");

    // Queues and workers, read from the store when scraped: 3 runs queued on `jobs`, 1 on `other`; one live
    // worker of both queues, one live worker of `jobs`, one dead worker.
    for q in ["jobs", "jobs", "jobs", "other"] {
        work.enqueue(RunOptions::new(json!("later")), q).await.unwrap();
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let reg = |queues: &[&str], beat: i64| json!({"queues": queues, "heartbeat_at_ms": beat, "lease_ms": 60_000});
    store.set_state("worker/a", &reg(&["jobs", "other"], now)).await.unwrap();
    store.set_state("worker/b", &reg(&["jobs"], now)).await.unwrap();
    store.set_state("worker/dead", &reg(&["jobs"], now - 120_000)).await.unwrap();

    let text = metrics.render(Some(&store)).await;
    let v = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(v(r#"flujo_runs_started_total{pipeline="work"}"#), 2.0);
    assert_eq!(v(r#"flujo_runs_started_total{pipeline="approve"}"#), 2.0);
    assert_eq!(v(r#"flujo_runs_resumed_total{pipeline="approve"}"#), 1.0);
    assert_eq!(v(r#"flujo_runs_started_total{pipeline="gated"}"#), 1.0);
    assert_eq!(v(r#"flujo_runs_started_total{pipeline="budget"}"#), 1.0);
    assert_eq!(v(r#"flujo_runs_finished_total{pipeline="work",status="completed"}"#), 2.0);
    assert_eq!(v(r#"flujo_runs_finished_total{pipeline="approve",status="paused"}"#), 1.0);
    assert_eq!(v(r#"flujo_runs_finished_total{pipeline="approve",status="completed"}"#), 1.0);
    assert_eq!(v(r#"flujo_runs_finished_total{pipeline="gated",status="failed"}"#), 1.0);
    assert_eq!(v(r#"flujo_runs_finished_total{pipeline="budget",status="failed"}"#), 1.0);
    assert_eq!(value(&text, r#"flujo_runs_finished_total{pipeline="work",status="failed"}"#), None);
    assert_eq!(v(r#"flujo_budget_refusals_total{pipeline="budget"}"#), 1.0);
    assert_eq!(v(r#"flujo_governance_denials_total{pipeline="gated"}"#), 1.0);
    assert_eq!(value(&text, r#"flujo_budget_refusals_total{pipeline="gated"}"#), None);
    assert_eq!(v(r#"flujo_run_errors_total{pipeline="budget",kind="usage_limit_exceeded"}"#), 1.0);
    assert_eq!(v(r#"flujo_model_tokens_total{provider="openai",model="gpt-test",type="prompt"}"#), 60.0);
    assert_eq!(v(r#"flujo_model_tokens_total{provider="openai",model="gpt-test",type="completion"}"#), 24.0);
    let cost = v(r#"flujo_model_cost_usd_total{provider="openai",model="gpt-test"}"#);
    assert!((cost - 0.108).abs() < 1e-9, "{cost}");
    // Live steps: work 2 x 2, approve a (first walk) + approve and b (resume), budget's first step.
    let live = recorder.0.lock().unwrap().clone();
    assert_eq!(live, HashMap::from([("step".to_owned(), 7), ("hitl".to_owned(), 1)]));
    for (kind, n) in &live {
        assert_eq!(v(&format!("flujo_step_duration_seconds_count{{kind=\"{kind}\"}}")), *n as f64, "{kind}");
        assert_eq!(v(&format!("flujo_step_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}}")), *n as f64);
    }
    assert_eq!(v(r#"flujo_steps_total{kind="step",status="completed"}"#), 7.0);
    // Every journal record was one timed append; every run one timed create.
    let runs = bare.list_runs(&RunFilter::new()).await.unwrap();
    assert_eq!(runs.len(), 9);
    let mut records = 0;
    for r in &runs {
        records += bare.load_journal(&r.run_id).await.unwrap().len();
    }
    assert_eq!(v(r#"flujo_store_commit_seconds_count{op="append"}"#), records as f64);
    assert_eq!(v(r#"flujo_store_commit_seconds_count{op="create_run"}"#), 9.0);
    assert!(v(r#"flujo_store_commit_seconds_count{op="update_run"}"#) >= 6.0);
    assert_eq!(v(r#"flujo_store_commit_errors_total{op="append"}"#), 0.0);
    assert_eq!(v(r#"flujo_queue_depth{queue="jobs"}"#), 3.0);
    assert_eq!(v(r#"flujo_queue_depth{queue="other"}"#), 1.0);
    assert_eq!(v("flujo_queue_depth_capped"), 0.0);
    assert_eq!(v(r#"flujo_workers{queue="jobs"}"#), 2.0);
    assert_eq!(v(r#"flujo_workers{queue="other"}"#), 1.0);
    assert_eq!(v("flujo_store_scrape_ok"), 1.0);

    // Served over HTTP: the same text, with the exposition content type; a token guards /metrics only.
    let server = serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), Some(store.clone()), Some("s3cret".into()))
        .await
        .unwrap();
    let client = flujo_http::client_builder().build().unwrap();
    let url = format!("http://{}/metrics", server.addr);
    let denied = client.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = client.get(&url).bearer_auth("s3cre").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], CONTENT_TYPE);
    let body = ok.text().await.unwrap();
    assert_eq!(value(&body, r#"flujo_runs_started_total{pipeline="work"}"#), Some(2.0));
    assert_eq!(value(&body, r#"flujo_queue_depth{queue="jobs"}"#), Some(3.0));
    let health = client.get(format!("http://{}/healthz", server.addr)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timed_store_passes_the_store_conformance_suite() {
    let metrics = Arc::new(Metrics::new());
    let report = conformance::run_all(|| metrics.wrap_store(Arc::new(MemoryStore::new()))).await;
    report.assert_ok();
    assert_eq!(report.passed.len(), conformance::checks().len());
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let report = conformance::run_all(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let uri = format!("sqlite:///{}", dir.path().join(format!("s{i}.db")).display());
        metrics.wrap_store(flujo_store::open_store(&uri).unwrap())
    })
    .await;
    report.assert_ok();
    assert!(report.store.starts_with("sqlite:///"), "{}", report.store);
    let text = metrics.render(None).await;
    assert!(value(&text, r#"flujo_store_commit_seconds_count{op="append"}"#).unwrap() > 0.0);
    assert!(value(&text, r#"flujo_store_commit_errors_total{op="append"}"#).unwrap() > 0.0, "conflicts are counted");
}

#[tokio::test]
async fn an_unserved_address_is_an_error_not_a_panic() {
    let metrics = Arc::new(Metrics::new());
    let first = serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), None, None).await.unwrap();
    let again = serve(first.addr, metrics, None, None).await;
    assert!(again.is_err(), "the port is taken");
}
