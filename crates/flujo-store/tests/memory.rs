//! The conformance suite against [`MemoryStore`], a check that the suite catches a broken store, and
//! MemoryStore-specific behaviour (byte accounting, `open_store`, sharing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{
    BlobStore, JournalRecord, JournalStore, RunFilter, RunRecord, RunStatus, RunStore, RunUpdate, Store, StoreError,
    SystemStateStore, Value,
};
use flujo_store::conformance::{self, fresh_run, sealed_chain};
use flujo_store::{open_store, MemoryStore};

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_conformance_suite() {
    let report = conformance::run_all(memory).await;
    report.assert_ok();
    assert_eq!(report.passed.len(), conformance::checks().len());
    assert_eq!(report.store, "memory://");
}

#[tokio::test(flavor = "current_thread")]
async fn memory_store_passes_on_a_current_thread_runtime() {
    conformance::run_all(memory).await.assert_ok();
}

#[tokio::test]
async fn open_store_memory_passes_the_async_factory_suite() {
    conformance::run_all_async(|| async { open_store("memory://").unwrap() }).await.assert_ok();
}

#[test]
fn check_names_are_unique() {
    let mut names: Vec<_> = conformance::checks().iter().map(|c| c.name).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n);
}

/// A store that forgets to enforce compare-and-set and gapless appends, and ignores duplicates.
struct Sloppy(MemoryStore);

#[async_trait]
impl RunStore for Sloppy {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        match self.0.create_run(run).await {
            Err(StoreError::RunExists(_)) => Ok(()),
            other => other,
        }
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.0.get_run(run_id).await
    }
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        self.0.update_run(&RunUpdate { expected: vec![], ..update.clone() }).await
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
impl JournalStore for Sloppy {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        // Renumbers instead of rejecting: silently accepts a second writer.
        let len = self.0.journal_len(&record.run_id).unwrap_or(0) as u64;
        self.0.append(&JournalRecord { seq: len, ..record.clone() }).await
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.0.load_journal(run_id).await
    }
}

#[async_trait]
impl BlobStore for Sloppy {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.0.put_blob(bytes).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get_blob(hash).await
    }
}

/// Keeps no evaluations (the trait's defaults refuse).
impl flujo_core::EvaluationStore for Sloppy {}

#[async_trait]
impl SystemStateStore for Sloppy {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.0.get_state(key).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.0.set_state(key, value).await
    }
}

impl Store for Sloppy {
    fn describe(&self) -> String {
        "sloppy://".to_owned()
    }
}

/// A store whose `get_run` panics: the suite reports it instead of aborting.
struct Panicky(MemoryStore);

#[async_trait]
impl RunStore for Panicky {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.0.create_run(run).await
    }
    async fn get_run(&self, _run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        panic!("get_run exploded")
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
impl JournalStore for Panicky {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        self.0.append(record).await
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.0.load_journal(run_id).await
    }
}

#[async_trait]
impl BlobStore for Panicky {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.0.put_blob(bytes).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get_blob(hash).await
    }
}

/// Keeps no evaluations (the trait's defaults refuse).
impl flujo_core::EvaluationStore for Panicky {}

#[async_trait]
impl SystemStateStore for Panicky {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.0.get_state(key).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.0.set_state(key, value).await
    }
}

impl Store for Panicky {
    fn describe(&self) -> String {
        "panicky://".to_owned()
    }
}

#[tokio::test]
async fn the_suite_reports_every_violation_of_a_sloppy_store_by_name() {
    let report = conformance::run_all(|| Arc::new(Sloppy(MemoryStore::new())) as Arc<dyn Store>).await;
    assert!(!report.is_ok());
    let failed: Vec<&str> = report.failed.iter().map(|(n, _)| *n).collect();
    for expected in [
        "duplicate_create_is_rejected",
        "update_cas_conflict_leaves_run_unchanged",
        "append_is_gapless",
        "append_rejects_out_of_order_seq",
        "concurrent_writers_on_one_run_are_detected",
    ] {
        assert!(failed.contains(&expected), "{expected} should fail:\n{report}");
    }
    assert!(report.passed.contains(&"blob_round_trip_and_idempotency"), "{report}");
    let text = report.to_string();
    assert!(text.contains("sloppy://") && text.contains("FAILED append_is_gapless"), "{text}");
}

#[tokio::test]
async fn the_suite_reports_a_panicking_check_and_keeps_going() {
    let report = conformance::run_all(|| Arc::new(Panicky(MemoryStore::new())) as Arc<dyn Store>).await;
    let (_, why) = report.failed.iter().find(|(n, _)| *n == "create_get_round_trip").unwrap();
    assert!(why.contains("get_run exploded"), "{why}");
    assert!(report.passed.contains(&"append_is_gapless"), "{report}");
    assert_eq!(report.passed.len() + report.failed.len(), conformance::checks().len());
}

#[tokio::test]
async fn bytes_written_counts_runs_records_and_new_blobs() {
    let store = MemoryStore::shared();
    assert_eq!(store.bytes_written(), 0);

    let run = fresh_run("r", "demo", RunStatus::Running, 1);
    store.create_run(&run).await.unwrap();
    let after_create = store.bytes_written();
    assert!(after_create > serde_json::to_vec(&run).unwrap().len() as u64 / 2, "{after_create}");

    let chain = sealed_chain("r", 3);
    for r in &chain {
        store.append(r).await.unwrap();
    }
    let canonical: u64 = chain.iter().map(|r| r.canonical_bytes().len() as u64).sum();
    assert_eq!(store.bytes_written(), after_create + canonical);

    // A rejected append writes nothing.
    assert!(store.append(&chain[0]).await.is_err());
    assert_eq!(store.bytes_written(), after_create + canonical);

    let before_blob = store.bytes_written();
    store.put_blob(&[7u8; 1000]).await.unwrap();
    assert_eq!(store.bytes_written(), before_blob + 1000);
    store.put_blob(&[7u8; 1000]).await.unwrap();
    assert_eq!(store.bytes_written(), before_blob + 1000, "an existing blob is not written again");

    let before_update = store.bytes_written();
    let update = RunUpdate {
        run_id: "r".into(),
        expected: vec![RunStatus::Running],
        status: RunStatus::Completed,
        pending: vec![],
        output: Some(serde_json::json!("x".repeat(500))),
        error: None,
        generation: 0,
        total_cost_usd: 0.0,
        total_tokens: 0,
        updated_at_ms: 2,
        owner: None,
        lease_expires_at_ms: None,
        expected_owner: None,
        journal_head: None,
    };
    store.update_run(&update).await.unwrap();
    assert!(store.bytes_written() >= before_update + 500);
    // A conflicting update writes nothing.
    let after_update = store.bytes_written();
    assert!(store.update_run(&update).await.is_err());
    assert_eq!(store.bytes_written(), after_update);
}

#[tokio::test]
async fn inspection_helpers_and_debug() {
    let store = MemoryStore::new();
    assert_eq!((store.run_count(), store.blob_count(), store.journal_len("r")), (0, 0, None));
    store.create_run(&fresh_run("r", "demo", RunStatus::Running, 1)).await.unwrap();
    for r in sealed_chain("r", 2) {
        store.append(&r).await.unwrap();
    }
    store.put_blob(b"x").await.unwrap();
    assert_eq!((store.run_count(), store.blob_count(), store.journal_len("r")), (1, 1, Some(2)));
    let dbg = format!("{store:?}");
    assert!(dbg.contains("MemoryStore") && dbg.contains("runs: 1"), "{dbg}");
}

#[tokio::test]
async fn clones_of_one_arc_share_state_and_open_store_gives_fresh_stores() {
    let shared: Arc<dyn Store> = MemoryStore::shared();
    let other = Arc::clone(&shared);
    shared.create_run(&fresh_run("r", "demo", RunStatus::Running, 1)).await.unwrap();
    assert!(other.get_run("r").await.unwrap().is_some());

    let a = open_store("memory://").unwrap();
    let b = open_store("memory://").unwrap();
    a.create_run(&fresh_run("r", "demo", RunStatus::Running, 1)).await.unwrap();
    assert!(b.get_run("r").await.unwrap().is_none());
}

#[test]
fn memory_store_is_send_sync_and_default() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<MemoryStore>();
    let store = MemoryStore::default();
    assert_eq!(store.describe(), "memory://");
}
