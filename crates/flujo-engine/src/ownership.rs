//! Run ownership: who is walking a run, and whether a `running` run may be taken over.
//!
//! A walk records its owner (a per-runner id, the host, the pid and the process start time) and a lease that a
//! heartbeat task extends while the walk goes on. `resume` of a `running` run then decides:
//! - same host: the owner is alive iff its pid exists with the same start time (and, for this very process, iff
//!   the run is in the process-wide registry of active walks) — so `flujo resume` right after `kill -9` works;
//! - other host: the owner is alive while its lease has not expired.
//!
//! The takeover itself is a compare-and-set on (status, owner id), so of two concurrent resumes exactly one wins.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flujo_core::{FlujoError, RunOwner, Store};

/// (store instance, run id) of every walk in this process.
type WalkKey = (usize, String);

fn active() -> &'static Mutex<HashSet<WalkKey>> {
    static ACTIVE: OnceLock<Mutex<HashSet<WalkKey>>> = OnceLock::new();
    ACTIVE.get_or_init(Default::default)
}

/// (run id, owner id) of every walk in this process: a run row owned by this process is alive exactly while
/// the runner named in it walks the run — whichever store instance it walks it through (two instances of
/// one database in one process must not both walk a run; found by the simulator, `flujo-sim`).
fn walking() -> &'static Mutex<HashSet<(String, String)>> {
    static WALKING: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    WALKING.get_or_init(Default::default)
}

/// Marks a run of one store as being walked in this process, by the runner `owner_id`, until dropped.
pub(crate) struct ActiveWalk {
    key: WalkKey,
    owner: (String, String),
}

impl ActiveWalk {
    /// `store` identifies the store instance (runs of different stores may share ids); `None` for no store.
    pub(crate) fn claim(store: Option<&Arc<dyn Store>>, run_id: &str, owner_id: &str) -> Result<Self, FlujoError> {
        let store_key = store.map(|s| Arc::as_ptr(s) as *const () as usize).unwrap_or(0);
        let key = (store_key, run_id.to_owned());
        let mut set = active().lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.clone()) {
            return Err(FlujoError::NotResumable {
                run_id: run_id.to_owned(),
                reason: "it is running in this process right now".into(),
            });
        }
        let owner = (run_id.to_owned(), owner_id.to_owned());
        walking().lock().unwrap_or_else(|p| p.into_inner()).insert(owner.clone());
        Ok(ActiveWalk { key, owner })
    }
}

impl Drop for ActiveWalk {
    fn drop(&mut self) {
        active().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
        walking().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.owner);
    }
}

/// The host name (Linux: the kernel's; else `HOSTNAME`; else `localhost`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A process's start time in clock ticks since boot (Linux `/proc/PID/stat` field 22); `None` when the
/// process does not exist, is a zombie, or the platform has no `/proc`.
pub fn pid_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); field 22 is rest[19].
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// This runner's identity as a run owner.
pub fn new_owner() -> RunOwner {
    let pid = std::process::id();
    RunOwner { id: uuid::Uuid::now_v7().simple().to_string(), host: host_name(), pid, pid_start: pid_start(pid) }
}

/// `Some(description)` when `owner` may still be walking the run, as seen from a runner on host `here`. The
/// caller holds the run's [`ActiveWalk`] claim, so an owner in this very process is not walking it any more
/// (that walk ended, e.g. on a store error).
pub(crate) fn owner_alive(
    owner: &RunOwner,
    here: &str,
    run_id: &str,
    lease_expires_at_ms: Option<i64>,
    now_ms: i64,
) -> Option<String> {
    let lease_alive = lease_expires_at_ms.is_some_and(|l| l > now_ms);
    if owner.host != here {
        return lease_alive.then(|| {
            format!(
                "process {} on host {} (lease valid for {} ms more)",
                owner.pid,
                owner.host,
                lease_expires_at_ms.unwrap_or(0) - now_ms
            )
        });
    }
    let me = std::process::id();
    if owner.pid == me && owner.pid_start == pid_start(me) {
        // This process: alive while that runner walks the run.
        let key = (run_id.to_owned(), owner.id.clone());
        let walks = walking().lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
        return walks.then(|| "another runner of this process".to_owned());
    }
    if !std::path::Path::new("/proc/self/stat").exists() {
        // No way to inspect processes here: trust the lease.
        return lease_alive.then(|| format!("process {} (lease still valid)", owner.pid));
    }
    match (pid_start(owner.pid), owner.pid_start) {
        (Some(now_start), Some(then_start)) if now_start == then_start => {
            Some(format!("process {} on this host", owner.pid))
        }
        (Some(_), None) => Some(format!("process {} on this host", owner.pid)),
        _ => None,
    }
}

/// Extends the lease periodically while a walk goes on; aborted when dropped, so it never outlives the walk.
pub(crate) struct Heartbeat {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Heartbeat {
    pub(crate) fn start(
        store: Arc<dyn Store>,
        run_id: String,
        owner_id: String,
        lease: Duration,
        clock: Arc<dyn flujo_core::Clock>,
    ) -> Self {
        let period = (lease / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let until = clock.now_ms() + lease.as_millis() as i64;
                if let Err(e) = store.heartbeat(&run_id, &owner_id, until).await {
                    tracing::warn!(run_id = %run_id, error = %e, "lost the run's lease; its next commit will fail");
                    return;
                }
            }
        });
        Heartbeat { task: Some(task) }
    }

    pub(crate) fn none() -> Self {
        Heartbeat { task: None }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_is_claimed_once_per_process_and_an_ended_walk_of_this_process_is_dead() {
        let me = new_owner();
        let walk = ActiveWalk::claim(None, "r-x", &me.id).unwrap();
        assert!(ActiveWalk::claim(None, "r-x", "other").is_err(), "a second walk of the same run is refused");
        // Another runner of this process (through another store instance) sees this walk's owner alive.
        assert!(owner_alive(&me, &host_name(), "r-x", Some(i64::MAX), 0).is_some());
        drop(walk);
        let _again = ActiveWalk::claim(None, "r-x", "other").unwrap();
        assert!(
            owner_alive(&me, &host_name(), "r-x", Some(i64::MAX), 0).is_none(),
            "an ended walk of this process is dead"
        );
    }

    #[test]
    fn dead_pid_on_this_host_is_not_alive_and_other_hosts_use_the_lease() {
        let mut dead = new_owner();
        dead.pid = u32::MAX - 7;
        assert!(
            owner_alive(&dead, &host_name(), "r", Some(i64::MAX), 0).is_none(),
            "a dead pid is dead whatever its lease"
        );
        let mut remote = new_owner();
        remote.host = "elsewhere".into();
        assert!(owner_alive(&remote, &host_name(), "r", Some(1000), 999).is_some());
        assert!(owner_alive(&remote, &host_name(), "r", Some(1000), 1000).is_none());
        assert!(owner_alive(&remote, &host_name(), "r", None, 0).is_none());
    }

    #[test]
    fn a_runner_named_as_another_host_trusts_only_the_lease() {
        let me = new_owner();
        let _walk = ActiveWalk::claim(None, "r-host", &me.id).unwrap();
        // Walking in this process, but seen from a runner that calls itself another host: the lease decides.
        assert!(owner_alive(&me, "elsewhere", "r-host", Some(1000), 999).is_some());
        assert!(owner_alive(&me, "elsewhere", "r-host", Some(1000), 1000).is_none());
        assert!(owner_alive(&me, &host_name(), "r-host", Some(1000), 1000).is_some(), "this host: the walk decides");
    }

    #[test]
    fn reused_pid_with_another_start_time_is_not_the_owner() {
        let mut other = new_owner();
        other.pid = 1; // init exists, but started at another time than recorded
        other.pid_start = Some(u64::MAX);
        assert!(owner_alive(&other, &host_name(), "r", None, 0).is_none());
    }
}
