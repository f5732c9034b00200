//! [`EventHub`]: live events of runs for `GET /api/runs/{id}/events`, whoever walks them.
//!
//! A run walked by this process tells the hub through [`flujo_core::Telemetry`] (step starts at once; a
//! finished step pokes the run's watcher). What subscribers receive about finished steps and status changes
//! comes from the **store**: one watcher task per watched run reads the run row and the journal's new tail
//! (`load_journal_from`: the cost of what changed, not of the journal) — 2 ms after a poke, else every poll
//! interval — and broadcasts the records it has not sent yet, with their `seq` as the event id. So runs walked by other processes (workers, `flujo run`) on the same store stream the same
//! way, a subscriber never sees a step twice, and any number of subscribers of one run cost one reader.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flujo_core::{RunEvent, RunStatus, Store, Telemetry};
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

/// One server-sent event: its name, JSON data and (for journal records) the record's `seq` as its id.
#[derive(Debug, Clone, PartialEq)]
pub struct HubEvent {
    /// `step_started`, `step_finished`, `status` or `end`.
    pub event: &'static str,
    /// The event's data.
    pub data: Value,
    /// The journal position the event reports (`step_finished`), for `Last-Event-ID`.
    pub seq: Option<u64>,
}

struct Watch {
    tx: broadcast::Sender<HubEvent>,
    poke: Arc<Notify>,
}

/// Fans out the live events of runs to subscribers (see the module docs).
pub struct EventHub {
    store: Arc<dyn Store>,
    watches: RwLock<HashMap<String, Watch>>,
    poll: Duration,
    watching: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").field("poll", &self.poll).finish_non_exhaustive()
    }
}

/// What a subscription starts from: the run's status now and the records after the asked position.
#[derive(Debug)]
pub struct Subscription {
    /// Events after the snapshot.
    pub rx: broadcast::Receiver<HubEvent>,
}

/// Whether a run in `status` can still produce events (its walk goes on, or a worker will claim it).
pub fn is_live(status: RunStatus) -> bool {
    matches!(status, RunStatus::Running | RunStatus::Queued)
}

/// The `step_finished` data of a journal record.
pub fn record_event(r: &flujo_core::JournalRecord) -> HubEvent {
    HubEvent {
        event: "step_finished",
        data: json!({
            "seq": r.seq, "path": r.path, "step": r.step, "kind": r.kind, "status": r.status,
            "attempts": r.attempts, "latency_ms": r.latency_ms, "tokens": r.tokens, "cost_usd": r.cost_usd,
        }),
        seq: Some(r.seq),
    }
}

/// The `status` data of a run row.
pub fn status_event(run: &flujo_core::RunRecord) -> HubEvent {
    HubEvent {
        event: "status",
        data: json!({"status": run.status, "pending": run.pending, "error": run.error,
            "total_cost_usd": run.total_cost_usd, "total_tokens": run.total_tokens}),
        seq: None,
    }
}

impl EventHub {
    /// A hub over `store`, reading watched runs every `poll` (and at once when this process pokes).
    pub fn new(store: Arc<dyn Store>, poll: Duration) -> Arc<Self> {
        Arc::new(EventHub {
            store,
            watches: RwLock::new(HashMap::new()),
            poll,
            watching: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Subscribes to the events of `run_id` after journal position `after_seq` (records up to it are known
    /// to the subscriber). Starts the run's watcher if it has none.
    pub fn subscribe(self: &Arc<Self>, run_id: &str, after_seq: Option<u64>) -> Subscription {
        let mut watches = self.watches.write().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watches.get(run_id) {
            let rx = w.tx.subscribe();
            w.poke.notify_one();
            return Subscription { rx };
        }
        let (tx, rx) = broadcast::channel(1024);
        let poke = Arc::new(Notify::new());
        watches.insert(run_id.to_owned(), Watch { tx: tx.clone(), poke: poke.clone() });
        self.watching.store(watches.len(), std::sync::atomic::Ordering::Relaxed);
        drop(watches);
        let hub = Arc::clone(self);
        let run_id = run_id.to_owned();
        tokio::spawn(async move { hub.watch(run_id, tx, poke, after_seq).await });
        Subscription { rx }
    }

    /// The watcher of one run: sends what changed in the store until the run ends or nobody listens.
    async fn watch(
        self: Arc<Self>,
        run_id: String,
        tx: broadcast::Sender<HubEvent>,
        poke: Arc<Notify>,
        after_seq: Option<u64>,
    ) {
        let mut next_seq: u64 = after_seq.map_or(0, |s| s + 1);
        let mut last_status: Option<(RunStatus, usize, i64)> = None;
        let mut failures = 0u32;
        loop {
            if tx.receiver_count() == 0 {
                break;
            }
            match self.store.get_run(&run_id).await {
                Ok(Some(run)) => {
                    failures = 0;
                    match self.store.load_journal_from(&run_id, next_seq).await {
                        Ok(records) => {
                            for r in &records {
                                let _ = tx.send(record_event(r));
                                next_seq = r.seq + 1;
                            }
                        }
                        Err(e) => tracing::warn!(run_id, "events: cannot read the journal: {e}"),
                    }
                    let seen = (run.status, run.pending.len(), run.updated_at_ms);
                    if last_status != Some(seen) {
                        last_status = Some(seen);
                        let _ = tx.send(status_event(&run));
                    }
                    if !is_live(run.status) {
                        let _ = tx.send(HubEvent { event: "end", data: json!({"status": run.status}), seq: None });
                        break;
                    }
                }
                Ok(None) => {
                    let _ = tx.send(HubEvent { event: "end", data: json!({"status": null}), seq: None });
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(run_id, "events: cannot read the run: {e}");
                    if failures > 20 {
                        break;
                    }
                }
            }
            tokio::select! {
                _ = poke.notified() => {
                    // Steps finishing together (parallel branches, a burst): read once for all of them.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        let mut watches = self.watches.write().unwrap_or_else(|p| p.into_inner());
        watches.remove(&run_id);
        self.watching.store(watches.len(), std::sync::atomic::Ordering::Relaxed);
    }

    fn with_watch(&self, run_id: &str, f: impl FnOnce(&Watch)) {
        if self.watching.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return;
        }
        let watches = self.watches.read().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watches.get(run_id) {
            f(w);
        }
    }

    /// How many runs are watched now.
    pub fn watched(&self) -> usize {
        self.watching.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Telemetry for EventHub {
    fn on_event(&self, event: &RunEvent) {
        match event {
            RunEvent::StepStarted { run_id, path, step, kind, .. } => self.with_watch(run_id, |w| {
                let _ = w.tx.send(HubEvent {
                    event: "step_started",
                    data: json!({"path": path, "step": step, "kind": kind}),
                    seq: None,
                });
            }),
            RunEvent::StepFinished { run_id, replayed: false, .. }
            | RunEvent::Paused { run_id, .. }
            | RunEvent::RunFinished { run_id, .. } => self.with_watch(run_id, |w| w.poke.notify_one()),
            _ => {}
        }
    }
}
