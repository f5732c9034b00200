//! [`Pool`]: the server's own workers. `POST /api/runs` puts a run on a queue ([`flujo_engine::Flujo::enqueue`],
//! so an accepted run survives a restart of the server); the pool claims the runs of its queues
//! ([`flujo_core::RunStore::claim_runs`], like `flujo worker`) and walks each with a runner for its stored
//! definition, at most `concurrency` at once. `POST` wakes it at once; runs queued by other processes are
//! claimed at the next poll (or at once on Postgres, which notifies). Paused runs without a queue (started by
//! `flujo run`) are resumed in the pool too ([`Pool::spawn_resume`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flujo_core::{ClaimRequest, RunOwner, RunStatus, RunUpdate, Store};
use flujo_engine::ResumeRequest;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::factory::RunnerFactory;
use crate::registration::Registration;

/// The pool's settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The queues the pool claims from (`default` unless configured).
    pub queues: Vec<String>,
    /// The most runs walked at once; 0 turns the pool off (runs wait for `flujo worker`s).
    pub concurrency: usize,
    /// The lease of a claimed run (a crashed server's runs are claimed again after it).
    pub lease: Duration,
    /// How often to look for runs queued by other processes.
    pub poll: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            queues: vec!["default".to_owned()],
            concurrency: 64,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
        }
    }
}

/// A walk in flight: its abort handle and its runner's owner id (to put the run back on its queue).
struct InFlight {
    abort: tokio::task::AbortHandle,
    /// The owner id of the walk's runner once it is built (before: the pool's, which claimed the run).
    owner_id: Option<String>,
}

/// The server's worker pool (see the module docs).
pub struct Pool {
    store: Arc<dyn Store>,
    factory: Arc<dyn RunnerFactory>,
    config: PoolConfig,
    owner: RunOwner,
    wake: Notify,
    in_flight: Mutex<HashMap<String, InFlight>>,
    stopping: std::sync::atomic::AtomicBool,
    /// Walks in flight, claimed or started directly (at most `concurrency`).
    walking: std::sync::atomic::AtomicUsize,
    /// Shadow evaluations of the runs the pool finishes (`[shadow_eval]`; set by the host).
    shadow: std::sync::OnceLock<Arc<flujo_engine::shadow::ShadowEvaluator>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("config", &self.config).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Pool {
    /// A pool over `store` with runners from `factory`.
    pub fn new(store: Arc<dyn Store>, factory: Arc<dyn RunnerFactory>, config: PoolConfig) -> Arc<Self> {
        Arc::new(Pool {
            store,
            factory,
            config,
            owner: flujo_engine::ownership::new_owner(),
            wake: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            walking: std::sync::atomic::AtomicUsize::new(0),
            shadow: std::sync::OnceLock::new(),
        })
    }

    /// Has the runs the pool walks judged by `evaluator` when they end (shadow evaluations; never changes
    /// a run). Set once.
    pub fn set_shadow(&self, evaluator: Arc<flujo_engine::shadow::ShadowEvaluator>) {
        let _ = self.shadow.set(evaluator);
    }

    async fn observe(&self, result: &flujo_core::RunResult, input: &flujo_core::Value) {
        if let Some(ev) = self.shadow.get() {
            ev.observe(result, input).await;
        }
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// True when the pool claims from `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        self.config.concurrency > 0 && self.config.queues.iter().any(|q| q == queue)
    }

    /// Claims at once instead of at the next poll (a run was just queued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs walked now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the walk of `run_id` in this process, if there is one (after it was cancelled in the store).
    pub fn abort(&self, run_id: &str) {
        if let Some(f) = self.lock().remove(run_id) {
            f.abort.abort();
        }
    }

    /// Claims and walks runs until [`Pool::stop`]; then waits up to `grace` for the walks in flight and puts
    /// the rest back on their queue.
    pub async fn run(self: Arc<Self>, grace: Duration) {
        if self.config.concurrency == 0 {
            return;
        }
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut can_wait = true;
        let mut backoff = self.config.poll;
        // Registered like `flujo worker` (role `serve`): `flujo worker --status` and `flujo_workers` see it.
        let registration =
            Registration::new(&self.owner, "serve", &self.config.queues, self.config.concurrency, self.config.lease);
        let mut next_beat = tokio::time::Instant::now();
        while !self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            if tokio::time::Instant::now() >= next_beat {
                let running: Vec<String> = self.lock().keys().cloned().collect();
                if let Err(e) = registration.beat(&self.store, running).await {
                    tracing::warn!("serve: cannot record the pool's heartbeat: {e}");
                }
                next_beat = tokio::time::Instant::now() + registration.beat_every();
            }
            let free = self.config.concurrency.saturating_sub(self.walking.load(Ordering::Acquire));
            let mut full = false;
            if free > 0 {
                let now = now_ms();
                let lease = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
                let claim = ClaimRequest::new(self.config.queues.clone(), self.owner.clone(), now, now + lease, free);
                match self.store.claim_runs(&claim).await {
                    Ok(ids) => {
                        backoff = self.config.poll;
                        full = ids.len() == free;
                        self.walking.fetch_add(ids.len(), Ordering::AcqRel);
                        for id in ids {
                            let pool = Arc::clone(&self);
                            // Under the lock, so the walk cannot remove its entry before it is made.
                            let mut in_flight = self.lock();
                            let abort = tasks.spawn(pool.walk(id.clone()));
                            in_flight.insert(id, InFlight { abort, owner_id: None });
                        }
                    }
                    Err(e) => {
                        tracing::warn!("serve: cannot claim runs: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
            if full {
                // More may wait: claim again as soon as a slot frees.
                tokio::select! {
                    Some(done) = tasks.join_next() => log_join(done),
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep_until(next_beat) => {}
                }
                continue;
            }
            let room = self.walking.load(Ordering::Acquire) < self.config.concurrency;
            let poll_ms = u64::try_from(self.config.poll.as_millis()).unwrap_or(u64::MAX);
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => log_join(done),
                _ = self.wake.notified(), if room => {}
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = tokio::time::sleep_until(next_beat) => {}
                woke = self.store.wait_for_queued(&self.config.queues, poll_ms), if room && can_wait => {
                    if !matches!(woke, Ok(true)) {
                        can_wait = false;
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !tasks.is_empty() || self.walking.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => log_join(done),
                // Runs started directly end on their own tasks.
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let left: Vec<(String, String)> =
            self.lock().drain().map(|(id, f)| (id, f.owner_id.unwrap_or_else(|| self.owner.id.clone()))).collect();
        for (run_id, owner_id) in left {
            if let Err(e) = requeue(&self.store, &run_id, &owner_id).await {
                tracing::warn!(run_id, "serve: cannot put the run back on its queue: {e}");
            }
        }
        if let Err(e) = registration.remove(&self.store).await {
            tracing::warn!("serve: cannot remove the pool's registration: {e}");
        }
    }

    /// Asks [`Pool::run`] to stop claiming and drain.
    pub fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Walks one claimed run to its end or pause (its slot was taken by the claim).
    async fn walk(self: Arc<Self>, run_id: String) {
        let _slot = Slot(Arc::clone(&self));
        let run = match self.store.get_run(&run_id).await {
            Ok(Some(run)) => run,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(run_id, "serve: cannot read the claimed run: {e}");
                return;
            }
        };
        let flujo = match crate::factory::runner_for_off_thread(&self.factory, &run).await {
            Ok(f) => f,
            Err(e) => {
                fail_unbuildable(&self.store, &run, &self.owner.id, &e.kind, &e.message).await;
                return;
            }
        };
        if let Some(f) = self.lock().get_mut(&run_id) {
            f.owner_id = Some(flujo.owner().id.clone());
        }
        let input = run.input.clone();
        let outcome = flujo.resume_with(&run_id, ResumeRequest::default().with_stored_run(run)).await;
        self.lock().remove(&run_id);
        match outcome {
            Ok(result) => self.observe(&result, &input).await,
            Err(e) => tracing::warn!(run_id, "serve: the walk ended with an error: [{}] {e}", e.kind()),
        }
    }

    /// Takes a slot for a run started directly ([`Pool::start_reserved`]); false when all are busy (the
    /// run should be queued instead).
    pub fn try_reserve(&self) -> bool {
        if self.config.concurrency == 0 || self.stopping.load(Ordering::Relaxed) {
            return false;
        }
        self.walking
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.config.concurrency).then_some(n + 1))
            .is_ok()
    }

    /// Starts a new run on `flujo` at once in a slot taken by [`Pool::try_reserve`] (with `opts.queue` set,
    /// so that the queue's workers take it over if this process dies): returns its id once the run is
    /// stored — `running` under this process, one write instead of a queued row, a claim and a takeover —
    /// with the walk going on in the background.
    pub async fn start_reserved(
        self: &Arc<Self>,
        flujo: Arc<flujo_engine::Flujo>,
        opts: flujo_engine::RunOptions,
    ) -> Result<String, flujo_core::FlujoError> {
        let slot = Slot(Arc::clone(self));
        let input = self.shadow.get().map(|_| opts.input.clone());
        let mut handle = flujo.start_with(opts);
        let run_id = handle.run_id().to_owned();
        // The first event (`RunStarted`) comes after the run is stored; none means it never started.
        if handle.next_event().await.is_none() {
            drop(slot);
            return (&mut handle).await.map(|_| run_id);
        }
        let pool = Arc::clone(self);
        let id = run_id.clone();
        let mut in_flight = self.lock();
        let waiter = tokio::spawn(async move {
            let _slot = slot;
            match handle.await {
                Ok(result) => {
                    if let Some(input) = &input {
                        pool.observe(&result, input).await;
                    }
                }
                Err(e) => tracing::warn!(run_id = id, "serve: the walk ended with an error: [{}] {e}", e.kind()),
            }
            pool.lock().remove(&id);
        });
        let owner_id = Some(flujo.owner().id.clone());
        in_flight.insert(run_id.clone(), InFlight { abort: waiter.abort_handle(), owner_id });
        Ok(run_id)
    }

    /// Resumes a paused run that has no queue (started by `flujo run`) in the pool, answering `req`; returns
    /// once its walk has taken the run over (or failed to), with the walk going on in the background.
    pub async fn spawn_resume(
        self: &Arc<Self>,
        run: flujo_core::RunRecord,
        req: ResumeRequest,
    ) -> Result<(), flujo_core::FlujoError> {
        let flujo = crate::factory::runner_for_off_thread(&self.factory, &run)
            .await
            .map_err(|e| flujo_core::FlujoError::Config(format!("[{}] {}", e.kind, e.message)))?;
        let run_id = run.run_id.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool = Arc::clone(self);
        let walker = Arc::clone(&flujo);
        let id = run_id.clone();
        let input = run.input.clone();
        {
            let mut in_flight = self.lock();
            let handle = tokio::spawn(async move {
                let out = walker.resume_with(&id, req).await;
                pool.lock().remove(&id);
                if let Ok(result) = &out {
                    pool.observe(result, &input).await;
                }
                let _ = tx.send(out.map(|_| ()));
            });
            let owner_id = Some(flujo.owner().id.clone());
            in_flight.insert(run_id.clone(), InFlight { abort: handle.abort_handle(), owner_id });
        }
        // Answer once the walk has taken the run over (the row leaves `paused`), or it has failed.
        let mut rx = rx;
        for _ in 0..400 {
            match rx.try_recv() {
                Ok(out) => return out,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return Ok(()),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            if let Ok(Some(now)) = self.store.get_run(&run_id).await {
                if now.status != RunStatus::Paused {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// A walk's slot: given back when the walk ends, however it ends.
struct Slot(Arc<Pool>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.walking.fetch_sub(1, Ordering::AcqRel);
        self.0.wake.notify_one();
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!("serve: a walk panicked: {e}");
        }
    }
}

/// Puts a run this process was walking back on its queue: a compare-and-set from `running` under `owner_id`
/// to `queued` without an owner, keeping its pending pauses (answers recorded while it waited); nothing
/// happens to a run that is no longer running or has no queue. Used by the pool and `flujo worker` on
/// shutdown.
pub async fn requeue(store: &Arc<dyn Store>, run_id: &str, owner_id: &str) -> Result<(), flujo_core::StoreError> {
    let Some(run) = store.get_run(run_id).await? else { return Ok(()) };
    if run.status != RunStatus::Running || run.queue.is_none() {
        return Ok(());
    }
    store
        .update_run(&RunUpdate {
            run_id: run_id.to_owned(),
            expected: vec![RunStatus::Running],
            status: RunStatus::Queued,
            pending: run.pending.clone(),
            output: None,
            error: None,
            generation: run.generation,
            total_cost_usd: run.total_cost_usd,
            total_tokens: run.total_tokens,
            updated_at_ms: now_ms(),
            owner: None,
            lease_expires_at_ms: None,
            expected_owner: Some(Some(owner_id.to_owned())),
            journal_head: None,
        })
        .await
}

/// A claimed run whose runner cannot be built (its skills changed, its definition is unreadable) fails with
/// the reason, instead of being claimed again and again.
async fn fail_unbuildable(
    store: &Arc<dyn Store>,
    run: &flujo_core::RunRecord,
    owner_id: &str,
    kind: &str,
    message: &str,
) {
    let records = store.load_journal(&run.run_id).await.unwrap_or_default();
    let head = flujo_core::ChainHead {
        len: records.len() as u64,
        hash: records.last().map_or_else(|| flujo_core::journal::GENESIS_HASH.to_owned(), |r| r.hash.clone()),
    };
    let update = RunUpdate {
        run_id: run.run_id.clone(),
        expected: vec![RunStatus::Running],
        status: RunStatus::Failed,
        pending: Vec::new(),
        output: None,
        error: Some(flujo_core::RunError::new(kind, message)),
        generation: run.generation,
        total_cost_usd: run.total_cost_usd,
        total_tokens: run.total_tokens,
        updated_at_ms: now_ms(),
        owner: None,
        lease_expires_at_ms: None,
        expected_owner: Some(Some(owner_id.to_owned())),
        journal_head: Some(head),
    };
    if let Err(e) = store.update_run(&update).await {
        tracing::warn!(run_id = run.run_id, "serve: cannot mark the run failed: {e}");
    }
}
