//! Budgets (SPEC §8): Reserve → Execute → Reconcile under parallelism never spends more than the limit, and the
//! run stops as soon as a reservation does not fit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::{Flujo, RunOptions};
use flujo_skills::{BuiltinRegistry, SkillFactory};
use proptest::prelude::*;
use serde_json::json;

/// A stand-in model: its estimate is `params.estimate` USD; a call spends `estimate × params.frac` after a
/// short await (so branches interleave), and counts itself.
struct FakeModel {
    estimate: f64,
    frac: f64,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Skill for FakeModel {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
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
