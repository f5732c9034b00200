//! A real store (SQLite, Postgres) in simulated time.
//!
//! The simulation runs on a current-thread Tokio runtime with a paused clock: when nothing can run, the clock
//! jumps to the next timer. A store that answers from its own threads or sockets would let the clock jump while
//! a write is under way (a lease expires, a timeout fires: time that never passed), and the moment its answer
//! arrives would decide which task runs next. [`SerialStore`] makes each call synchronously: the simulation's
//! thread hands the call to a thread of the store's own, which drives it on the backend's real-time runtime,
//! and waits for the answer before it goes on. Nothing else runs meanwhile and the simulated clock stands
//! still, so a seed replays the same interleaving of store calls on every backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flujo_core::{
    BlobStore, ClaimRequest, EvaluationStore, JournalRecord, JournalStore, RunFilter, RunRecord, RunStatus, RunStore,
    RunUpdate, Store, StoreError, SystemStateStore,
};
use serde_json::Value;

type Call<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;
type Job = Box<dyn FnOnce() + Send>;

/// A store whose calls are made one at a time, synchronously, on the backend's runtime.
pub struct SerialStore {
    inner: Arc<dyn Store>,
    backend: tokio::runtime::Handle,
    /// The thread that drives each call on `backend` (it ends when this store is dropped).
    jobs: Mutex<Sender<Job>>,
}

impl SerialStore {
    /// `inner`, whose futures run on `backend` (the runtime it was opened on).
    pub fn new(inner: Arc<dyn Store>, backend: tokio::runtime::Handle) -> Self {
        let (jobs, queue) = channel::<Job>();
        std::thread::spawn(move || {
            for job in queue {
                job();
            }
        });
        SerialStore { inner, backend, jobs: Mutex::new(jobs) }
    }

    async fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(Arc<dyn Store>) -> Call<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (inner, backend) = (self.inner.clone(), self.backend.clone());
        let (answer, answered) = sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = answer.send(backend.block_on(op(inner)));
        });
        let lost = || StoreError::Unavailable("the store's thread is gone".into());
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job).map_err(|_| lost())?;
        // Blocks the simulation's thread on purpose: nothing may run, and no simulated time pass, meanwhile.
        answered.recv().map_err(|_| lost())?
    }
}

#[async_trait]
impl RunStore for SerialStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        self.call(move |s| Box::pin(async move { s.create_run(&run).await })).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let id = run_id.to_owned();
        self.call(move |s| Box::pin(async move { s.get_run(&id).await })).await
    }
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        let update = update.clone();
        self.call(move |s| Box::pin(async move { s.update_run(&update).await })).await
    }
    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease_expires_at_ms: i64) -> Result<(), StoreError> {
        let (id, owner) = (run_id.to_owned(), owner_id.to_owned());
        self.call(move |s| Box::pin(async move { s.heartbeat(&id, &owner, lease_expires_at_ms).await })).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let filter = filter.clone();
        self.call(move |s| Box::pin(async move { s.list_runs(&filter).await })).await
    }
    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        self.call(move |s| Box::pin(async move { s.find_runs_by_prefix(&prefix, limit).await })).await
    }
    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        self.call(move |s| Box::pin(async move { s.delete_runs(older_than_ms, status).await })).await
    }
    async fn claim_runs(&self, claim: &ClaimRequest) -> Result<Vec<String>, StoreError> {
        let claim = claim.clone();
        self.call(move |s| Box::pin(async move { s.claim_runs(&claim).await })).await
    }
}

#[async_trait]
impl JournalStore for SerialStore {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.call(move |s| Box::pin(async move { s.append(&record).await })).await
    }
    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        let (record, owner) = (record.clone(), owner_id.to_owned());
        self.call(move |s| Box::pin(async move { s.append_fenced(&record, &owner).await })).await
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        let id = run_id.to_owned();
        self.call(move |s| Box::pin(async move { s.load_journal(&id).await })).await
    }
    async fn load_journal_from(&self, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
        let id = run_id.to_owned();
        self.call(move |s| Box::pin(async move { s.load_journal_from(&id, from_seq).await })).await
    }
}

#[async_trait]
impl BlobStore for SerialStore {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let bytes = bytes.to_vec();
        self.call(move |s| Box::pin(async move { s.put_blob(&bytes).await })).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let hash = hash.to_owned();
        self.call(move |s| Box::pin(async move { s.get_blob(&hash).await })).await
    }
}

#[async_trait]
impl SystemStateStore for SerialStore {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let key = key.to_owned();
        self.call(move |s| Box::pin(async move { s.get_state(&key).await })).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.clone());
        self.call(move |s| Box::pin(async move { s.set_state(&key, &value).await })).await
    }
    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let prefix = prefix.to_owned();
        self.call(move |s| Box::pin(async move { s.list_state(&prefix).await })).await
    }
    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.call(move |s| Box::pin(async move { s.delete_state(&key).await })).await
    }
}

/// Keeps no evaluations (the simulator runs no shadow evaluations).
impl EvaluationStore for SerialStore {}

impl Store for SerialStore {
    fn describe(&self) -> String {
        format!("serial+{}", self.inner.describe())
    }
    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}
