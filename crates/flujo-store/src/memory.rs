//! The in-memory store: runs, journals, blobs and system state in `std::sync::Mutex`-guarded maps.
//!
//! Nothing survives the process, but the semantics are those of every durable backend (and are checked
//! by the same conformance suite): `create_run` rejects duplicates, `update_run` is a compare-and-set on
//! the run's status, `append` only accepts the next gapless `seq` (so two writers on one run are
//! detected), and blobs are content-addressed. Locks are held only for map operations, never across an
//! `.await`. Journal records are cloned in and out; that is cheap because outputs are `Arc<Value>`.
//! Journal values and definitions are held in memory, never as blobs, so deleting runs never makes a blob
//! unreferenced: `delete_runs` leaves the blob map alone.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use flujo_core::store::deletable;
use flujo_core::{
    BlobStore, ClaimRequest, EvaluationFilter, EvaluationRecord, EvaluationStatus, EvaluationStore, JournalRecord,
    JournalStore, RunFilter, RunRecord, RunStatus, RunStore, RunUpdate, Store, StoreError, SystemStateStore, Value,
};
use serde::Serialize;

use crate::{blob_hash, seq_conflict, status_conflict};

/// Fixed per-row overhead counted by [`Store::bytes_written`] for a run row write (ids, status,
/// timestamps, counters), on top of the serialized size of its variable-size fields.
const RUN_ROW_OVERHEAD: u64 = 64;

/// A run and its journal.
struct RunEntry {
    record: RunRecord,
    journal: Vec<JournalRecord>,
    /// When a worker last claimed the run (for queue rate limits).
    claimed_at_ms: Option<i64>,
}

/// A [`Store`] kept entirely in memory. Cheap to create; share it as `Arc<MemoryStore>` or
/// `Arc<dyn Store>` (see [`MemoryStore::shared`]).
#[derive(Default)]
pub struct MemoryStore {
    runs: Mutex<HashMap<String, RunEntry>>,
    blobs: Mutex<HashMap<String, Arc<[u8]>>>,
    state: Mutex<BTreeMap<String, Value>>,
    evaluations: Mutex<BTreeMap<String, EvaluationRecord>>,
    bytes_written: AtomicU64,
}

impl MemoryStore {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty store behind an `Arc`.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Number of runs stored.
    pub fn run_count(&self) -> usize {
        lock(&self.runs).len()
    }

    /// Length of a run's journal (`None` for an unknown run).
    pub fn journal_len(&self, run_id: &str) -> Option<usize> {
        lock(&self.runs).get(run_id).map(|e| e.journal.len())
    }

    /// Number of distinct blobs stored.
    pub fn blob_count(&self) -> usize {
        lock(&self.blobs).len()
    }

    fn count(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("runs", &self.run_count())
            .field("blobs", &self.blob_count())
            .field("bytes_written", &self.bytes_written.load(Ordering::Relaxed))
            .finish()
    }
}

/// Locks a map. A poisoned lock is recovered: no code path panics halfway through a mutation, so the
/// data behind it is consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An `io::Write` that only counts bytes.
struct ByteCounter(u64);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serialized JSON size of `value`, without allocating it.
fn json_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut counter = ByteCounter(0);
    // Serializing plain data into a counter cannot fail; a failure would only under-count.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Rough size of writing a run row after `update`.
fn update_row_size(update: &RunUpdate) -> u64 {
    RUN_ROW_OVERHEAD
        + update.run_id.len() as u64
        + json_len(&update.pending)
        + json_len(&update.output)
        + json_len(&update.error)
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        {
            let mut runs = lock(&self.runs);
            if runs.contains_key(&run.run_id) {
                return Err(StoreError::RunExists(run.run_id.clone()));
            }
            runs.insert(run.run_id.clone(), RunEntry { record: run.clone(), journal: Vec::new(), claimed_at_ms: None });
        }
        self.count(RUN_ROW_OVERHEAD + json_len(run));
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(lock(&self.runs).get(run_id).map(|e| e.record.clone()))
    }

    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        {
            let mut runs = lock(&self.runs);
            let entry = runs.get_mut(&update.run_id).ok_or_else(|| StoreError::RunNotFound(update.run_id.clone()))?;
            let run = &mut entry.record;
            if !update.expected.is_empty() && !update.expected.contains(&run.status) {
                return Err(status_conflict(&update.run_id, &update.expected, run.status));
            }
            if let Some(expected_owner) = &update.expected_owner {
                let actual = run.owner.as_ref().map(|o| o.id.as_str());
                if expected_owner.as_deref() != actual {
                    return Err(crate::owner_conflict(&update.run_id, expected_owner.as_deref(), actual));
                }
            }
            run.owner.clone_from(&update.owner);
            run.lease_expires_at_ms = update.lease_expires_at_ms;
            if let Some(head) = &update.journal_head {
                run.journal_head = Some(head.clone());
            }
            run.status = update.status;
            run.pending.clone_from(&update.pending);
            run.output.clone_from(&update.output);
            run.error.clone_from(&update.error);
            run.generation = update.generation;
            run.total_cost_usd = update.total_cost_usd;
            run.total_tokens = update.total_tokens;
            run.updated_at_ms = update.updated_at_ms;
        }
        self.count(update_row_size(update));
        Ok(())
    }

    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease_expires_at_ms: i64) -> Result<(), StoreError> {
        let mut runs = lock(&self.runs);
        let entry = runs.get_mut(run_id).ok_or_else(|| StoreError::RunNotFound(run_id.to_owned()))?;
        let run = &mut entry.record;
        if run.status != flujo_core::RunStatus::Running {
            return Err(status_conflict(run_id, &[flujo_core::RunStatus::Running], run.status));
        }
        let actual = run.owner.as_ref().map(|o| o.id.as_str());
        if actual != Some(owner_id) {
            return Err(crate::owner_conflict(run_id, Some(owner_id), actual));
        }
        run.lease_expires_at_ms = Some(lease_expires_at_ms);
        Ok(())
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let runs = lock(&self.runs);
        let mut matching: Vec<&RunRecord> = runs
            .values()
            .map(|e| &e.record)
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .filter(|r| filter.pipeline.as_deref().is_none_or(|p| r.pipeline_name == p))
            .filter(|r| filter.since_ms.is_none_or(|since| r.created_at_ms >= since))
            .filter(|r| {
                filter.before.as_ref().is_none_or(|(at, id)| (r.created_at_ms, r.run_id.as_str()) < (*at, id.as_str()))
            })
            .collect();
        // Newest first; ties broken by run id (descending) so the order is total and backend-independent.
        matching.sort_unstable_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.run_id.cmp(&a.run_id)));
        Ok(matching.into_iter().take(limit).cloned().collect())
    }

    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = lock(&self.runs).keys().filter(|id| id.starts_with(prefix)).cloned().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        let mut runs = lock(&self.runs);
        let before = runs.len();
        runs.retain(|_, e| !(e.record.created_at_ms < older_than_ms && deletable(e.record.status, status)));
        Ok((before - runs.len()) as u64)
    }

    async fn claim_runs(&self, claim: &ClaimRequest) -> Result<Vec<String>, StoreError> {
        let mut runs = lock(&self.runs);
        let mut ready: Vec<(i64, String)> = runs
            .values()
            .filter(|e| e.record.queue.as_ref().is_some_and(|q| claim.queues.contains(q)))
            .filter(|e| {
                e.record.status == RunStatus::Queued
                    || (e.record.status == RunStatus::Running
                        && e.record.lease_expires_at_ms.is_some_and(|l| l < claim.now_ms))
            })
            .map(|e| (e.record.created_at_ms, e.record.run_id.clone()))
            .collect();
        ready.sort();
        // Global concurrency per queue: live running runs count against the limit.
        let mut room: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for (queue, max) in &claim.max_running {
            let live = runs
                .values()
                .filter(|e| e.record.queue.as_deref() == Some(queue.as_str()))
                .filter(|e| {
                    e.record.status == RunStatus::Running
                        && e.record.lease_expires_at_ms.is_none_or(|l| l >= claim.now_ms)
                })
                .count() as u64;
            room.insert(queue.clone(), max.saturating_sub(live));
        }
        for (queue, rate) in &claim.rate_limits {
            let recent = runs
                .values()
                .filter(|e| e.record.queue.as_deref() == Some(queue.as_str()))
                .filter(|e| e.claimed_at_ms.is_some_and(|t| t > claim.now_ms - rate.period_ms))
                .count() as u64;
            let left = rate.runs.saturating_sub(recent);
            let slot = room.entry(queue.clone()).or_insert(left);
            *slot = (*slot).min(left);
        }
        ready.retain(|(_, id)| {
            let Some(queue) = runs.get(id).and_then(|e| e.record.queue.clone()) else { return false };
            match room.get_mut(&queue) {
                Some(0) => false,
                Some(n) => {
                    *n -= 1;
                    true
                }
                None => true,
            }
        });
        ready.truncate(claim.limit);
        for (_, id) in &ready {
            if let Some(e) = runs.get_mut(id) {
                e.record.status = RunStatus::Running;
                e.record.owner = Some(claim.owner.clone());
                e.record.lease_expires_at_ms = Some(claim.lease_expires_at_ms);
                e.record.updated_at_ms = claim.now_ms;
                e.claimed_at_ms = Some(claim.now_ms);
            }
        }
        Ok(ready.into_iter().map(|(_, id)| id).collect())
    }
}

#[async_trait]
impl JournalStore for MemoryStore {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        self.append_checked(record, None)
    }

    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        self.append_checked(record, Some(owner_id))
    }

    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        // Records are stored at index == seq (append enforces it), so the vector is already in seq order.
        Ok(lock(&self.runs).get(run_id).map(|e| e.journal.clone()).unwrap_or_default())
    }

    async fn load_journal_from(&self, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
        let from = usize::try_from(from_seq).unwrap_or(usize::MAX);
        Ok(lock(&self.runs).get(run_id).map(|e| e.journal.get(from..).unwrap_or_default().to_vec()).unwrap_or_default())
    }
}

impl MemoryStore {
    /// Appends `record`; with `owner`, only while the run is `running` under that owner.
    fn append_checked(&self, record: &JournalRecord, owner: Option<&str>) -> Result<(), StoreError> {
        // Measured outside the lock: serializing an output can be the most expensive part of an append.
        let size = record.canonical_bytes().len() as u64;
        let owned = record.clone();
        {
            let mut runs = lock(&self.runs);
            let entry = runs.get_mut(&record.run_id).ok_or_else(|| StoreError::RunNotFound(record.run_id.clone()))?;
            if let Some(owner) = owner {
                crate::check_fence(
                    &record.run_id,
                    entry.record.status,
                    entry.record.owner.as_ref().map(|o| o.id.as_str()),
                    owner,
                )?;
            }
            let next = entry.journal.len() as u64;
            if record.seq != next {
                return Err(seq_conflict(&record.run_id, next, record.seq));
            }
            entry.journal.push(owned);
        }
        self.count(size);
        Ok(())
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let hash = blob_hash(bytes);
        let inserted = {
            let mut blobs = lock(&self.blobs);
            if blobs.contains_key(&hash) {
                false
            } else {
                blobs.insert(hash.clone(), Arc::from(bytes));
                true
            }
        };
        if inserted {
            self.count(bytes.len() as u64);
        }
        Ok(hash)
    }

    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.blobs).get(hash).map(|b| b.to_vec()))
    }
}

#[async_trait]
impl SystemStateStore for MemoryStore {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        Ok(lock(&self.state).get(key).cloned())
    }

    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        let size = key.len() as u64 + json_len(value);
        lock(&self.state).insert(key.to_owned(), value.clone());
        self.count(size);
        Ok(())
    }

    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let state = lock(&self.state);
        Ok(state
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.state).remove(key).is_some())
    }
}

#[async_trait]
impl EvaluationStore for MemoryStore {
    async fn create_evaluation(&self, e: &EvaluationRecord) -> Result<bool, StoreError> {
        let mut all = lock(&self.evaluations);
        if all.contains_key(&e.evaluation_id) {
            return Ok(false);
        }
        all.insert(e.evaluation_id.clone(), e.clone());
        self.count(json_len(&e.snapshot) + 128);
        Ok(true)
    }

    async fn update_evaluation(&self, e: &EvaluationRecord) -> Result<bool, StoreError> {
        let mut all = lock(&self.evaluations);
        match all.get_mut(&e.evaluation_id) {
            Some(slot) => {
                *slot = e.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn claim_evaluations(
        &self,
        owner: &str,
        now_ms: i64,
        lease_expires_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<EvaluationRecord>, StoreError> {
        let mut all = lock(&self.evaluations);
        let mut free: Vec<&mut EvaluationRecord> = all
            .values_mut()
            .filter(|e| e.status == EvaluationStatus::Pending && e.lease_expires_at_ms.is_none_or(|l| l < now_ms))
            .collect();
        free.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then_with(|| a.evaluation_id.cmp(&b.evaluation_id)));
        Ok(free
            .into_iter()
            .take(limit)
            .map(|e| {
                e.owner = Some(owner.to_owned());
                e.lease_expires_at_ms = Some(lease_expires_at_ms);
                e.updated_at_ms = now_ms;
                e.clone()
            })
            .collect())
    }

    async fn list_evaluations(&self, filter: &EvaluationFilter) -> Result<Vec<EvaluationRecord>, StoreError> {
        let all = lock(&self.evaluations);
        let mut out: Vec<EvaluationRecord> = all.values().filter(|e| filter.matches(e)).cloned().collect();
        out.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then_with(|| a.evaluation_id.cmp(&b.evaluation_id)));
        out.truncate(filter.limit.unwrap_or(usize::MAX));
        Ok(out)
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory://".to_owned()
    }

    fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }
}
