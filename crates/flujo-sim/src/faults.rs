//! A fault-injecting wrapper over any real store, driven by the simulation's seed.
//!
//! Each write may fail before it reaches the store, fail after it is durable (the caller is told it failed),
//! crash the process before or after it is durable (from then on the incarnation reaches nothing), or be slow;
//! each read may fail. Which call gets which fault is decided by the seeded plan in call order, so one seed
//! replays the same faults.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::BlobStore;
use flujo_core::{
    ClaimRequest, EvaluationStore, JournalRecord, JournalStore, RunFilter, RunRecord, RunStatus, RunStore, RunUpdate,
    Store, StoreError, SystemStateStore,
};
use serde_json::Value;

use crate::rng::Rng;
use crate::skills::World;

/// What happens to one store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write fails; nothing was written.
    FailBefore,
    /// The write is durable, but the caller is told it failed.
    FailAfter,
    /// The process crashes before the write reaches the store.
    CrashBefore,
    /// The process crashes right after the write is durable.
    CrashAfter,
    /// The call takes this many (simulated) milliseconds.
    Slow(u64),
    /// A read fails.
    ReadError,
}

/// Deliberate bugs, for tests that check the simulator catches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sabotage {
    /// None: the store is what it wraps.
    #[default]
    None,
    /// Stored records get a different output than the one their hash covers.
    CorruptRecords,
    /// The journal reads back empty after a restart (a store that forgets what it committed).
    ForgetJournal,
    /// Appends ignore who owns the run (a store without fencing: a walk that lost its run keeps writing).
    NoFence,
    /// A paused run keeps only its first pending pause (a store that loses part of a run row).
    DropPending,
}

/// Counts of the faults injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub writes: u64,
    pub reads: u64,
    pub fail_before: u64,
    pub fail_after: u64,
    pub crash_before: u64,
    pub crash_after: u64,
    pub slow: u64,
    pub read_errors: u64,
}

impl FaultStats {
    /// Every fault injected (slow calls included).
    pub fn total(&self) -> u64 {
        self.fail_before + self.fail_after + self.crash_before + self.crash_after + self.slow + self.read_errors
    }
}

/// The seeded decisions of one simulation.
#[derive(Debug)]
pub struct FaultPlan {
    rng: Rng,
    /// Per-mille chance of a fault on a write, and on a read.
    write_rate: u64,
    read_rate: u64,
    /// Faults left (so every simulated run can finish).
    budget: u64,
    pub stats: FaultStats,
    pub sabotage: Sabotage,
}

impl FaultPlan {
    /// The plan of `seed`: no faults when `rate` is 0.
    pub fn new(seed: u64, write_rate: u64, read_rate: u64, budget: u64) -> Self {
        FaultPlan {
            rng: Rng::new(seed, 2),
            write_rate,
            read_rate,
            budget,
            stats: FaultStats::default(),
            sabotage: Sabotage::None,
        }
    }

    fn write(&mut self) -> Option<Fault> {
        self.stats.writes += 1;
        if self.budget == 0 || !self.rng.chance(self.write_rate) {
            return None;
        }
        self.budget -= 1;
        let fault = match self.rng.below(5) {
            0 => Fault::FailBefore,
            1 => Fault::FailAfter,
            2 => Fault::CrashBefore,
            3 => Fault::CrashAfter,
            _ => Fault::Slow(self.rng.range(1, 5000)),
        };
        match fault {
            Fault::FailBefore => self.stats.fail_before += 1,
            Fault::FailAfter => self.stats.fail_after += 1,
            Fault::CrashBefore => self.stats.crash_before += 1,
            Fault::CrashAfter => self.stats.crash_after += 1,
            Fault::Slow(_) => self.stats.slow += 1,
            Fault::ReadError => {}
        }
        Some(fault)
    }

    fn read(&mut self) -> bool {
        self.stats.reads += 1;
        if self.budget == 0 || !self.rng.chance(self.read_rate) {
            return false;
        }
        self.budget -= 1;
        self.stats.read_errors += 1;
        true
    }
}

/// One incarnation's view of the store: faults from the shared plan, and nothing at all once it crashed.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    plan: Arc<Mutex<FaultPlan>>,
    world: Arc<World>,
    /// The incarnation this view belongs to (a later one may not use it).
    incarnation: u64,
    /// The view of a process on another host: it does not crash with the simulated process (its crash faults
    /// become plain failures).
    remote: bool,
}

impl FaultyStore {
    /// A view of `inner` for the world's current incarnation.
    pub fn new(inner: Arc<dyn Store>, plan: Arc<Mutex<FaultPlan>>, world: Arc<World>) -> Self {
        let incarnation = world.incarnation.load(Ordering::SeqCst);
        FaultyStore { inner, plan, world, incarnation, remote: false }
    }

    /// A view of `inner` for a process on another host.
    pub fn remote(inner: Arc<dyn Store>, plan: Arc<Mutex<FaultPlan>>, world: Arc<World>) -> Self {
        FaultyStore { remote: true, ..FaultyStore::new(inner, plan, world) }
    }

    fn alive(&self) -> Result<(), StoreError> {
        if self.remote {
            return Ok(());
        }
        if self.world.down.load(Ordering::SeqCst) || self.world.incarnation.load(Ordering::SeqCst) != self.incarnation {
            return Err(StoreError::Unavailable("simulated crash: the process is down".into()));
        }
        Ok(())
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, FaultPlan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a write under the plan's next fault.
    async fn write<T, F>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.alive()?;
        let fault = match self.plan().write() {
            Some(Fault::CrashBefore) if self.remote => Some(Fault::FailBefore),
            Some(Fault::CrashAfter) if self.remote => Some(Fault::FailAfter),
            f => f,
        };
        if crate::dumping() {
            eprintln!("write {what} by incarnation {}: {fault:?}", self.incarnation);
        }
        let injected = |what: &str| StoreError::Unavailable(format!("injected fault: {what}"));
        match fault {
            None => op.await,
            Some(Fault::FailBefore) => Err(injected("the write failed before it was committed")),
            Some(Fault::FailAfter) => {
                op.await?;
                Err(injected("the write was committed, but its answer was lost"))
            }
            Some(Fault::CrashBefore) => {
                self.world.down.store(true, Ordering::SeqCst);
                Err(injected("crash before the write was committed"))
            }
            Some(Fault::CrashAfter) => {
                let r = op.await;
                self.world.down.store(true, Ordering::SeqCst);
                r?;
                Err(injected("crash after the write was committed"))
            }
            Some(Fault::Slow(ms)) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.alive()?;
                op.await
            }
            Some(Fault::ReadError) => op.await,
        }
    }

    /// Runs a read, unless the plan fails it.
    async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.alive()?;
        if self.plan().read() {
            return Err(StoreError::Unavailable("injected fault: the read failed".into()));
        }
        op.await
    }

    fn sabotage(&self) -> Sabotage {
        self.plan().sabotage
    }
}

#[async_trait]
impl RunStore for FaultyStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let owner = run.owner.as_ref().map(|o| o.id.as_str());
        self.write("create_run", self.owning(owner, self.inner.create_run(run))).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read(self.inner.get_run(run_id)).await
    }
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        let owner = update.owner.as_ref().map(|o| o.id.as_str());
        if self.sabotage() == Sabotage::DropPending && update.pending.len() > 1 {
            let mut update = update.clone();
            update.pending.truncate(1);
            return self.write("update_run", self.owning(owner, self.inner.update_run(&update))).await;
        }
        self.write("update_run", self.owning(owner, self.inner.update_run(update))).await
    }
    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease_expires_at_ms: i64) -> Result<(), StoreError> {
        self.write("heartbeat", self.inner.heartbeat(run_id, owner_id, lease_expires_at_ms)).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.read(self.inner.list_runs(filter)).await
    }
    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(self.inner.find_runs_by_prefix(prefix, limit)).await
    }
    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        self.write("delete_runs", self.inner.delete_runs(older_than_ms, status)).await
    }
    async fn claim_runs(&self, claim: &ClaimRequest) -> Result<Vec<String>, StoreError> {
        self.write("claim_runs", self.inner.claim_runs(claim)).await
    }
}

#[async_trait]
impl JournalStore for FaultyStore {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        let record = self.sabotaged(record);
        self.write("append", self.committing(&record, self.inner.append(&record))).await
    }
    async fn append_fenced(&self, record: &JournalRecord, owner_id: &str) -> Result<(), StoreError> {
        let record = self.sabotaged(record);
        let fenced = async {
            // Who held the run when this append was made: if it lands although another owner held it, two
            // walks wrote one journal.
            let holder = self.world.owner();
            if self.sabotage() == Sabotage::NoFence {
                self.inner.append(&record).await?;
            } else {
                self.inner.append_fenced(&record, owner_id).await?;
            }
            if holder.as_deref() != Some(owner_id) {
                self.world.fence_broken(format!(
                    "{} (seq {}) by owner {owner_id} landed while the run was held by {}",
                    record.path,
                    record.seq,
                    holder.as_deref().unwrap_or("nobody")
                ));
            }
            Ok(())
        };
        self.write("append_fenced", self.committing(&record, fenced)).await
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        let records = self.read(self.inner.load_journal(run_id)).await?;
        Ok(self.forgotten(records))
    }
    async fn load_journal_from(&self, run_id: &str, from_seq: u64) -> Result<Vec<JournalRecord>, StoreError> {
        let records = self.read(self.inner.load_journal_from(run_id, from_seq)).await?;
        Ok(self.forgotten(records))
    }
}

impl FaultyStore {
    /// A run write that tells the world which owner the run row names once it is durable.
    async fn owning(
        &self,
        owner: Option<&str>,
        write: impl std::future::Future<Output = Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        write.await?;
        self.world.owned_by(owner);
        Ok(())
    }

    /// `append` that tells the world when a completed record became durable.
    async fn committing(
        &self,
        record: &JournalRecord,
        append: impl std::future::Future<Output = Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        let r = append.await;
        if crate::dumping() {
            eprintln!(
                "append {} {} {:?} cost {} by incarnation {}{}: {:?}",
                record.seq,
                record.path,
                record.status,
                record.cost_usd,
                self.incarnation,
                if self.remote { " (remote)" } else { "" },
                r.as_ref().err()
            );
        }
        r?;
        if record.status == flujo_core::StepStatus::Completed {
            self.world.committed(&record.path);
        }
        Ok(())
    }

    fn sabotaged(&self, record: &JournalRecord) -> JournalRecord {
        let mut record = record.clone();
        if self.sabotage() == Sabotage::CorruptRecords {
            record.output = Arc::new(Value::String("tampered".into()));
        }
        record
    }

    fn forgotten(&self, records: Vec<JournalRecord>) -> Vec<JournalRecord> {
        if self.sabotage() == Sabotage::ForgetJournal && self.incarnation > 0 {
            return Vec::new();
        }
        records
    }
}

#[async_trait]
impl BlobStore for FaultyStore {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.write("put_blob", self.inner.put_blob(bytes)).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(self.inner.get_blob(hash)).await
    }
}

#[async_trait]
impl SystemStateStore for FaultyStore {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.read(self.inner.get_state(key)).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.write("set_state", self.inner.set_state(key, value)).await
    }
    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        self.read(self.inner.list_state(prefix)).await
    }
    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        self.write("delete_state", self.inner.delete_state(key)).await
    }
}

/// Keeps no evaluations (the simulator runs no shadow evaluations).
impl EvaluationStore for FaultyStore {}

impl Store for FaultyStore {
    fn describe(&self) -> String {
        format!("faulty+{}", self.inner.describe())
    }
    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}
