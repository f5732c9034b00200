//! The pass-through store of [`super::Metrics::wrap_store`]: times journal appends and run-row commits, and
//! delegates every method of every store trait — the defaulted ones too (`claim_runs`, `wait_for_queued`,
//! `append_fenced`, system state, evaluations), since a default left in place would silently turn a
//! feature of the wrapped store off. The store conformance suite runs against it (`tests/metrics.rs`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use flujo_core::{
    BlobStore, ClaimRequest, EvaluationFilter, EvaluationRecord, EvaluationStore, JournalRecord, JournalStore,
    RunFilter, RunRecord, RunStatus, RunStore, RunUpdate, Store, StoreError, SystemStateStore,
};
use serde_json::Value;

use super::{CommitOp, Metrics};

/// A store whose commits are timed into a [`Metrics`].
pub(super) struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    pub(super) fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        TimedStore { inner, metrics }
    }

    fn record<T>(&self, op: CommitOp, t0: Instant, res: Result<T, StoreError>) -> Result<T, StoreError> {
        self.metrics.observe_commit(op, t0.elapsed(), res.is_ok());
        res
    }
}

#[async_trait]
impl RunStore for TimedStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let res = self.inner.create_run(run).await;
        self.record(CommitOp::CreateRun, t0, res)
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.inner.get_run(run_id).await
    }
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let res = self.inner.update_run(update).await;
        self.record(CommitOp::UpdateRun, t0, res)
    }
    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease_expires_at_ms: i64) -> Result<(), StoreError> {
        self.inner.heartbeat(run_id, owner_id, lease_expires_at_ms).await
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
    async fn claim_runs(&self, claim: &ClaimRequest) -> Result<Vec<String>, StoreError> {
        self.inner.claim_runs(claim).await
    }
    async fn wait_for_queued(&self, queues: &[String], timeout_ms: u64) -> Result<bool, StoreError> {
        self.inner.wait_for_queued(queues, timeout_ms).await
    }
}

#[async_trait]
impl JournalStore for TimedStore {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let res = self.inner.append(record).await;
        self.record(CommitOp::Append, t0, res)
    }
    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let res = self.inner.append_fenced(record, owner_id).await;
        self.record(CommitOp::Append, t0, res)
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.inner.load_journal(run_id).await
    }
    async fn load_journal_from(&self, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
        self.inner.load_journal_from(run_id, from_seq).await
    }
}

#[async_trait]
impl BlobStore for TimedStore {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.inner.put_blob(bytes).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(hash).await
    }
}

#[async_trait]
impl SystemStateStore for TimedStore {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get_state(key).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.inner.set_state(key, value).await
    }
    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        self.inner.list_state(prefix).await
    }
    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete_state(key).await
    }
}

#[async_trait]
impl EvaluationStore for TimedStore {
    async fn create_evaluation(&self, evaluation: &EvaluationRecord) -> Result<bool, StoreError> {
        self.inner.create_evaluation(evaluation).await
    }
    async fn update_evaluation(&self, evaluation: &EvaluationRecord) -> Result<bool, StoreError> {
        self.inner.update_evaluation(evaluation).await
    }
    async fn claim_evaluations(
        &self,
        owner: &str,
        now_ms: i64,
        lease_expires_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<EvaluationRecord>, StoreError> {
        self.inner.claim_evaluations(owner, now_ms, lease_expires_at_ms, limit).await
    }
    async fn list_evaluations(&self, filter: &EvaluationFilter) -> Result<Vec<EvaluationRecord>, StoreError> {
        self.inner.list_evaluations(filter).await
    }
}

impl Store for TimedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}
