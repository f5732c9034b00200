//! Budgets (SPEC §8): Reserve → Execute → Reconcile under parallelism never spends more than the limit, and the
//! run stops as soon as a reservation does not fit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_skills::{BuiltinRegistry, SkillFactory};
use flujo_store::MemoryStore;
use harness::CrashingStore;
use proptest::prelude::*;
use serde_json::json;

/// A stand-in model: its estimate is `params.estimate` USD; a call spends `estimate × params.frac` after a
/// short await (so branches interleave), and counts itself.
struct FakeModel {
    estimate: f64,
    frac: f64,
    /// The first attempt fails (retryably), billed like a success.
    fail_first: bool,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Skill for FakeModel {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if self.fail_first && call.attempt == 1 {
            return Err(SkillError::new("flaky").with_usage(TokenUsage::new(10, 5), self.estimate * self.frac));
        }
        Ok({
            let mut out = SkillOutput::default();
            out.output = call.input;
            out.tokens = TokenUsage::new(10, 5);
            out.cost_usd = self.estimate * self.frac;
            out
        })
    }
    fn info(&self) -> SkillInfo {
        {
            let mut info = SkillInfo::default();
            info.id = "test.model".into();
            info
        }
    }
    fn estimate(&self, _input: &Value) -> Option<Usage> {
        Some(Usage { cost_usd: self.estimate, tokens: 15 })
    }
}

fn registry(calls: &Arc<AtomicU64>) -> Arc<BuiltinRegistry> {
    let mut r = BuiltinRegistry::new();
    let calls = calls.clone();
    let factory: SkillFactory = Arc::new(move |params: &Value| {
        Ok(Arc::new(FakeModel {
            estimate: params["estimate"].as_f64().unwrap_or(0.0),
            frac: params["frac"].as_f64().unwrap_or(1.0),
            fail_first: params["fail_first"].as_bool().unwrap_or(false),
            calls: calls.clone(),
        }) as Arc<dyn Skill>)
    });
    r.register("test.model", SkillInfo::default(), factory);
    Arc::new(r)
}

fn pipeline(branches: &[Vec<(f64, f64)>]) -> Pipeline {
    let branches = branches
        .iter()
        .enumerate()
        .map(|(b, steps)| {
            let steps = steps
                .iter()
                .enumerate()
                .map(|(i, (e, f))| Step::skill(format!("m{b}_{i}"), "test.model", json!({"estimate": e, "frac": f})))
                .collect();
            Branch::new(format!("b{b}"), steps)
        })
        .collect();
    Pipeline::new(
        "budget",
        vec![Step::new(
            "par",
            StepKind::Parallel({
                let mut spec = ParallelSpec::default();
                spec.branches = branches;
                spec.merge_strategy = MergeStrategy::NoMerge;
                spec.on_branch_failure = OnBranchFailure::Propagate;
                spec
            }),
        )],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn parallel_spend_never_exceeds_the_limit(
        branches in proptest::collection::vec(proptest::collection::vec((0.0f64..1.0, 0.0f64..=1.0), 1..5), 1..6),
        limit in 0.0f64..4.0,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let total_steps: usize = branches.iter().map(Vec::len).sum();
        let sum_estimates: f64 = branches.iter().flatten().map(|(e, _)| e).sum();
        let flujo = Flujo::builder(pipeline(&branches)).skills(registry(&calls)).build().unwrap();
        let r = rt.block_on(flujo.run_with(RunOptions::new(json!(0)).usage_limits(UsageLimits::new().with_cost_limit(limit)))).unwrap();
        prop_assert!(r.total_cost_usd <= limit + 1e-9, "spent {} over limit {}", r.total_cost_usd, limit);
        let made = calls.load(Ordering::SeqCst) as usize;
        if sum_estimates <= limit {
            prop_assert_eq!(r.status, RunStatus::Completed, "every reservation fits");
            prop_assert_eq!(made, total_steps);
        }
        if r.status == RunStatus::Failed {
            prop_assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("usage_limit_exceeded"));
            prop_assert!(made < total_steps, "a refused reservation stops the run: {made} of {total_steps} calls made");
        }
    }
}

#[tokio::test]
async fn a_call_that_does_not_fit_is_never_made_and_the_partial_result_is_kept() {
    let calls = Arc::new(AtomicU64::new(0));
    let p = Pipeline::new(
        "seq",
        vec![
            Step::skill("a", "test.model", json!({"estimate": 0.4, "frac": 1.0})),
            Step::skill("b", "test.model", json!({"estimate": 0.4, "frac": 1.0})),
            Step::skill("c", "test.model", json!({"estimate": 0.4, "frac": 1.0})),
        ],
    );
    let flujo = Flujo::builder(p).skills(registry(&calls)).build().unwrap();
    let r = flujo
        .run_with(RunOptions::new(json!(0)).usage_limits({
            let mut limits = UsageLimits::default();
            limits.total_cost_usd_limit = Some(1.0);
            limits
        }))
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let err = r.error.unwrap();
    assert_eq!(err.kind, "usage_limit_exceeded");
    assert!(err.message.contains("'test.model' was not made"), "{}", err.message);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the third call (0.8 + 0.4 > 1.0) was refused before it was made");
    assert_eq!(r.step_history.len(), 2, "the partial result is kept");
    assert!((r.total_cost_usd - 0.8).abs() < 1e-9);
}

/// A runner of `p` over `mem`, limited to `usd`, with its call counter.
fn limited(p: Pipeline, usd: f64, mem: &Arc<MemoryStore>) -> (Flujo, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let flujo = Flujo::builder(p)
        .skills(registry(&calls))
        .store(mem.clone())
        .usage_limits(UsageLimits::new().with_cost_limit(usd))
        .build()
        .unwrap();
    (flujo, calls)
}

/// [`limited`] over a new memory store, returned too.
fn durable_with_limit(p: Pipeline, usd: f64) -> (Flujo, Arc<MemoryStore>, Arc<AtomicU64>) {
    let mem = Arc::new(MemoryStore::new());
    let (flujo, calls) = limited(p, usd, &mem);
    (flujo, mem, calls)
}

fn model(name: &str, estimate: f64, frac: f64) -> Step {
    Step::skill(name, "test.model", json!({"estimate": estimate, "frac": frac}))
}

/// Runs `p` over a store that crashes after `appends` journal records (the walk ends with a store error),
/// then resumes it over the same records with a new runner limited to `limit` USD; returns the journal's paths
/// after the crash and the resumed result.
async fn crash_then_resume(
    p: Pipeline,
    appends: u64,
    first_limit: Option<f64>,
    limit: f64,
) -> (Vec<String>, RunResult) {
    let calls = Arc::new(AtomicU64::new(0));
    let mem = Arc::new(MemoryStore::new());
    let crashing: Arc<dyn Store> = Arc::new(CrashingStore::new(mem.clone(), appends));
    let mut first = Flujo::builder(p.clone()).skills(registry(&calls)).store(crashing);
    if let Some(l) = first_limit {
        first = first.usage_limits(UsageLimits::new().with_cost_limit(l));
    }
    let err = first.build().unwrap().run_with(RunOptions::new(json!("b0")).run_id("r")).await.unwrap_err();
    assert!(matches!(err, FlujoError::Store(_)), "{err:?}");
    let paths = mem.load_journal("r").await.unwrap().into_iter().map(|r| r.path).collect();
    let (second, _) = limited(p, limit, &mem);
    (paths, second.resume_with("r", ResumeRequest::default()).await.unwrap())
}

#[tokio::test]
async fn a_routers_decision_is_paid_by_its_step_and_counted_again_on_resume() {
    let router = |name: &str| {
        let mut spec = RouterSpec::new(AgentRef::skill("test.model", json!({"estimate": 0.3, "frac": 1.0})));
        spec.branches.push(Branch::new("b0", vec![model("inside", 0.2, 1.0)]));
        Step::new(name, StepKind::DynamicRouter(spec))
    };
    let p = Pipeline::new("routed", vec![router("route"), model("after", 0.2, 1.0)]);
    // Straight through: the decision (0.3) is part of the router step's cost, with its branch's (0.2).
    let calls = Arc::new(AtomicU64::new(0));
    let r = Flujo::builder(p.clone()).skills(registry(&calls)).build().unwrap().run(json!("b0")).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert!((r.step_history[0].cost_usd - 0.5).abs() < 1e-9, "{}", r.step_history[0].cost_usd);
    assert!((r.total_cost_usd - 0.7).abs() < 1e-9);
    // Crash after the router's record: the resumed run counts the decision from the router's record.
    let (paths, r) = crash_then_resume(p, 3, None, 10.0).await;
    assert_eq!(paths, ["0/router", "0/branch:b0/0", "0"]);
    assert_eq!(r.status, RunStatus::Completed);
    assert!((r.total_cost_usd - 0.7).abs() < 1e-9, "spent {}", r.total_cost_usd);
}

#[tokio::test]
async fn a_resumed_branch_cannot_spend_what_a_sibling_spent_before_the_crash() {
    // b0: a cheap call, then a dear one; b1: one call. The first walk (no limit) records `a` and `y`, then
    // crashes on `x`'s record; the resumed walk (limit 1.0) must count `y` before `x` reserves, so `x`
    // (0.05 + 0.5 + 0.6 > 1.0) is refused although b1's replay comes after b0's.
    let mut spec = ParallelSpec::default();
    spec.branches = vec![
        Branch::new("b0", vec![model("a", 0.05, 1.0), model("x", 0.6, 1.0)]),
        Branch::new("b1", vec![model("y", 0.5, 1.0)]),
    ];
    let p = Pipeline::new("par", vec![Step::new("par", StepKind::Parallel(spec))]);
    let (paths, r) = crash_then_resume(p, 2, None, 1.0).await;
    assert_eq!(paths, ["0/branch:b0/0", "0/branch:b1/0"]);
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("usage_limit_exceeded"));
    assert!(r.total_cost_usd <= 1.0 + 1e-9, "spent {} over the limit", r.total_cost_usd);
    assert!((r.total_cost_usd - 0.55).abs() < 1e-9, "spent {}", r.total_cost_usd);
}

#[tokio::test]
async fn a_run_the_budget_stopped_stops_the_same_way_when_resumed() {
    // `b` costs twice what it announced: the run is over its limit after it, and stops with
    // `usage_limit_exceeded`. The crash comes on the loop's record, before the run row says `failed`.
    let body = vec![model("a", 0.4, 1.0), model("b", 0.4, 2.0)];
    let p = Pipeline::new("stopped", vec![Step::loop_("loop", body).max_loops(1).build()]);
    let (paths, r) = crash_then_resume(p, 2, Some(1.0), 1.0).await;
    assert_eq!(paths, ["0/loop:0/0", "0/loop:0/1"]);
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("usage_limit_exceeded"), "{:?}", r.error);
    assert!((r.total_cost_usd - 1.2).abs() < 1e-9, "spent {}", r.total_cost_usd);
}

#[tokio::test]
async fn attempts_paid_before_the_budget_refuses_a_retry_stay_in_the_journal() {
    // The first attempt bills 0.6 and fails; the retry's reservation (0.6 + 0.6 > 1.0) is refused.
    let step =
        Step::skill("flaky", "test.model", json!({"estimate": 0.6, "frac": 1.0, "fail_first": true})).with_retries(1);
    let (flujo, mem, calls) = durable_with_limit(Pipeline::new("retry", vec![step]), 1.0);
    let r = flujo.run_with(RunOptions::new(json!(0)).run_id("r")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("usage_limit_exceeded"));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the retry was never made");
    assert!((r.total_cost_usd - 0.6).abs() < 1e-9);
    let journal = mem.load_journal("r").await.unwrap();
    assert_eq!(journal.len(), 1, "the paid attempt is journaled");
    assert!((journal[0].cost_usd - 0.6).abs() < 1e-9);
    assert_eq!(journal[0].attempts, 1);
    assert_eq!(r.step_history.len(), 1);
}

#[tokio::test]
async fn a_state_machine_that_fails_on_a_transition_keeps_what_its_states_paid() {
    // The state's call is paid (0.3); the transition's condition cannot be evaluated on a string and fails the
    // step: its record still carries the 0.3, so a resumed run counts it.
    let machine = Step::state_machine("machine", "a")
        .state("a", [model("paid", 0.3, 1.0)])
        .end_state("end")
        .state("end", [Step::passthrough("done")])
        .transition_when("a", TransitionOn::Success, "end", "previous_step % 2 == 0")
        .build();
    let mem = Arc::new(MemoryStore::new());
    let calls = Arc::new(AtomicU64::new(0));
    let flujo = Flujo::builder(Pipeline::new("sm", vec![machine])).skills(registry(&calls)).store(mem.clone()).build();
    let r = flujo.unwrap().run_with(RunOptions::new(json!("text")).run_id("r")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.step_history[0].feedback.as_deref().unwrap_or_default().contains("transition when"), "{r:?}");
    assert!((r.step_history[0].cost_usd - 0.3).abs() < 1e-9, "{}", r.step_history[0].cost_usd);
    let journal = mem.load_journal("r").await.unwrap();
    let record = journal.iter().find(|rec| rec.path == "0").unwrap();
    assert!((record.cost_usd - 0.3).abs() < 1e-9);
}

#[tokio::test]
async fn a_failed_run_resumed_keeps_what_it_spent() {
    // `b` fails and bills 0.4; the run fails having spent 0.8 of 1.0. Resuming it retries `b`, whose
    // reservation (0.8 + 0.4 > 1.0) must be refused: what the failed attempt paid still counts.
    let p = Pipeline::new(
        "retry_failed",
        vec![
            model("a", 0.4, 1.0),
            Step::skill("b", "test.model", json!({"estimate": 0.4, "frac": 1.0, "fail_first": true})).with_retries(0),
        ],
    );
    let (flujo, _mem, calls) = durable_with_limit(p, 1.0);
    let r = flujo.run_with(RunOptions::new(json!(0)).run_id("r")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("step_failed"));
    assert!((r.total_cost_usd - 0.8).abs() < 1e-9);
    let r = flujo.resume_with("r", ResumeRequest::default()).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("usage_limit_exceeded"), "{:?}", r.error);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the retry of `b` was refused before it was made");
    assert!(r.total_cost_usd <= 1.0 + 1e-9, "spent {}", r.total_cost_usd);
}
