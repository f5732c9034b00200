//! A journal append whose answer is lost although it committed: the walk must stop without finalizing the run
//! (found by the simulator, `flujo-sim`: a concurrent branch's typed error used to finalize the run with a row
//! committing to one record fewer than the journal held, so `lens verify` failed for good).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::sync::Arc;

use flujo_core::*;
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_store::MemoryStore;
use harness::CrashingStore;
use serde_json::json;

#[tokio::test]
async fn a_lost_commit_answer_in_one_branch_is_not_covered_by_another_branchs_error() {
    // b0's state machine goes round once too often, a typed error that fails the run; b1 records one step
    // (its answer is lost). The walk must stop on the store error instead of failing the run with a row that
    // commits to a journal without b1's record.
    let machine = Step::state_machine("machine", "a")
        .state("a", [Step::passthrough("inner")])
        .transition("a", TransitionOn::Success, "a")
        .max_hops(1)
        .build();
    let mut spec = ParallelSpec::default();
    spec.branches = vec![Branch::new("b0", vec![machine]), Branch::new("b1", vec![Step::passthrough("lost")])];
    let p = Pipeline::new("lost", vec![Step::new("par", StepKind::Parallel(spec))]);
    let mem = Arc::new(MemoryStore::new());
    let lossy = Arc::new(CrashingStore::new(mem.clone(), u64::MAX).losing_the_answer_of("0/branch:b1/0"));
    let first = Flujo::builder(p.clone()).store(lossy).build().unwrap();
    let err = first.run_with(RunOptions::new(json!(1)).run_id("r")).await.unwrap_err();
    assert!(matches!(err, FlujoError::Store(_)), "{err:?}");
    let row = mem.get_run("r").await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Running, "the run is left for the next walk");

    // The next walk finds b1's record, reaches the same typed error and finalizes a journal that verifies.
    let second = Flujo::builder(p).store(mem.clone()).build().unwrap();
    let r = second.resume_with("r", ResumeRequest::default()).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("infinite_redirect"));
    let report = second.client().unwrap().verify("r").await.unwrap();
    assert!(report.broken.is_none(), "{:?}", report.broken);
}

#[tokio::test]
async fn a_recovery_resume_takes_over_interrupted_runs_only() {
    let p = Pipeline::new("two", vec![Step::passthrough("a"), Step::passthrough("b")]);
    let mem = Arc::new(MemoryStore::new());
    // Interrupted: the store goes down after the first record.
    let crashing = Arc::new(CrashingStore::new(mem.clone(), 1));
    let first = Flujo::builder(p.clone()).store(crashing).build().unwrap();
    assert!(first.run_with(RunOptions::new(json!(1)).run_id("r")).await.is_err());
    let second = Flujo::builder(p.clone()).store(mem.clone()).build().unwrap();
    let r = second.resume_with("r", ResumeRequest::default().interrupted_only()).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    // Finished (or failed, or paused): refused, and left as it is.
    let err = second.resume_with("r", ResumeRequest::default().interrupted_only()).await.unwrap_err();
    assert!(matches!(&err, FlujoError::NotResumable { reason, .. } if reason.contains("completed")), "{err:?}");
    let failing = Pipeline::new("failing", vec![harness::fail("f")]);
    let third = Flujo::builder(failing).store(mem.clone()).build().unwrap();
    let r = third.run_with(RunOptions::new(json!(1)).run_id("f")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(third.resume_with("f", ResumeRequest::default().interrupted_only()).await.is_err());
    assert_eq!(mem.get_run("f").await.unwrap().unwrap().generation, 0, "a failed run is not retried");
}
