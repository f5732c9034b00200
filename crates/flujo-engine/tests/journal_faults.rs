//! A journal append whose answer is lost although it committed: the walk must stop without finalizing the run
//! (found by the simulator, `flujo-sim`: a concurrent branch's typed error used to finalize the run with a row
//! committing to one record fewer than the journal held, so `lens verify` failed for good).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_store::MemoryStore;
use serde_json::{json, Value};

/// The memory store, except that the append of `path` commits and then reports a failure.
struct LostAnswer {
    inner: Arc<MemoryStore>,
    path: String,
}

#[async_trait]
impl RunStore for LostAnswer {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.inner.create_run(run).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.inner.get_run(run_id).await
    }
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        self.inner.update_run(update).await
    }
    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease: i64) -> Result<(), StoreError> {
        self.inner.heartbeat(run_id, owner_id, lease).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.list_runs(filter).await
    }
    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.find_runs_by_prefix(prefix, limit).await
    }
    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        self.inner.delete_runs(older_than_ms, status).await
    }
}

#[async_trait]
impl JournalStore for LostAnswer {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        self.inner.append(record).await?;
        if record.path == self.path {
            return Err(StoreError::Unavailable("the commit's answer was lost".into()));
        }
        Ok(())
    }
    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        self.inner.append_fenced(record, owner_id).await?;
        if record.path == self.path {
            return Err(StoreError::Unavailable("the commit's answer was lost".into()));
        }
        Ok(())
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.inner.load_journal(run_id).await
    }
}

#[async_trait]
impl BlobStore for LostAnswer {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.inner.put_blob(bytes).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(hash).await
    }
}

#[async_trait]
impl SystemStateStore for LostAnswer {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get_state(key).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.inner.set_state(key, value).await
    }
}

impl EvaluationStore for LostAnswer {}

impl Store for LostAnswer {
    fn describe(&self) -> String {
        "lost-answer".into()
    }
}

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
    let lossy = Arc::new(LostAnswer { inner: mem.clone(), path: "0/branch:b1/0".into() });
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
