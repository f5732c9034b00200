//! The state store traits, split by concern (runs, journal, blobs). Backends: memory (this workspace's
//! `flujo-store`), SQLite and Postgres later; all run one conformance suite.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::journal::JournalRecord;
use crate::result::{PendingPause, RunError, RunStatus};

/// The stored row of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline_name: String,
    pub pipeline_version: String,
    /// Hash of the canonical pipeline definition the run was started with.
    pub pipeline_hash: String,
    /// The canonical pipeline definition (so resume needs no file). Shared, not copied, between runs of one
    /// pipeline; stores keep one copy per distinct definition.
    pub definition: Option<Arc<Value>>,
    pub status: RunStatus,
    pub input: Value,
    pub initial_context: Map<String, Value>,
    pub pending: Vec<PendingPause>,
    pub output: Option<Value>,
    pub error: Option<RunError>,
    /// Incremented each time a failed run is resumed: failed records of older generations run again.
    pub generation: u32,
    pub total_cost_usd: f64,
    pub total_tokens: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A compare-and-set update of a run's lifecycle fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    pub run_id: String,
    /// The update applies only if the stored status is one of these (empty = any).
    pub expected: Vec<RunStatus>,
    pub status: RunStatus,
    pub pending: Vec<PendingPause>,
    pub output: Option<Value>,
    pub error: Option<RunError>,
    pub generation: u32,
    pub total_cost_usd: f64,
    pub total_tokens: u64,
    pub updated_at_ms: i64,
}

/// Filter for [`RunStore::list_runs`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub pipeline: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: Option<usize>,
}

#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Applies `update` atomically if the stored status is expected; `Conflict` otherwise.
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError>;
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;
}

#[async_trait]
pub trait JournalStore: Send + Sync {
    /// Durably appends one record. The record's `seq` must be the run's next position.
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError>;
    /// All records of a run in `seq` order.
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError>;
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores bytes under their blake3 hash (idempotent) and returns the hex hash.
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError>;
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// A complete state store.
pub trait Store: RunStore + JournalStore + BlobStore {
    /// Human-readable description (`memory://`, `sqlite:///…`).
    fn describe(&self) -> String;
    /// Bytes written so far (for benchmarks).
    fn bytes_written(&self) -> u64 {
        0
    }
}
