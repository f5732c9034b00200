//! Worker registrations: the system-state entries `worker/OWNER_ID` that `flujo worker` and the pool of
//! `flujo serve` keep while they claim runs (host, pid, queues, concurrency, the runs in flight, a heartbeat
//! and its lease). `flujo worker --status` lists the live ones, `/metrics` counts them (`flujo_workers`).

use std::sync::Arc;
use std::time::Duration;

use flujo_core::{RunOwner, Store, StoreError};
use serde_json::{json, Value};

/// The system-state key prefix of worker registrations.
pub const WORKER_PREFIX: &str = "worker/";

/// Whether a registration is live: its last heartbeat is younger than its lease.
pub fn is_live(entry: &Value, now_ms: i64) -> bool {
    let beat = entry.get("heartbeat_at_ms").and_then(Value::as_i64).unwrap_or(0);
    let lease = entry.get("lease_ms").and_then(Value::as_i64).unwrap_or(0);
    beat.saturating_add(lease) > now_ms
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One process's registration.
#[derive(Debug, Clone)]
pub struct Registration {
    key: String,
    base: Value,
    lease_ms: i64,
}

impl Registration {
    /// The registration of the claimer `me` of `queues`; `role` is `worker` or `serve`.
    pub fn new(me: &RunOwner, role: &str, queues: &[String], concurrency: usize, lease: Duration) -> Self {
        Registration {
            key: format!("{WORKER_PREFIX}{}", me.id),
            base: json!({"id": me.id, "pid": me.pid, "host": me.host, "role": role, "queues": queues,
                "concurrency": concurrency, "started_at_ms": now_ms(), "version": env!("CARGO_PKG_VERSION")}),
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// How often to beat so the entry stays live: a third of the lease (100 ms to 10 s).
    pub fn beat_every(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.lease_ms / 3).unwrap_or(0))
            .clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Writes the entry with `running` (the runs in flight) and the time now.
    pub async fn beat(&self, store: &Arc<dyn Store>, mut running: Vec<String>) -> Result<(), StoreError> {
        running.sort();
        let mut entry = self.base.clone();
        if let Some(obj) = entry.as_object_mut() {
            obj.insert("running".to_owned(), json!(running));
            obj.insert("heartbeat_at_ms".to_owned(), json!(now_ms()));
            obj.insert("lease_ms".to_owned(), json!(self.lease_ms));
        }
        store.set_state(&self.key, &entry).await
    }

    /// Removes the entry (a clean exit).
    pub async fn remove(&self, store: &Arc<dyn Store>) -> Result<bool, StoreError> {
        store.delete_state(&self.key).await
    }
}
