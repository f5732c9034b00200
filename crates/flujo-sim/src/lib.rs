//! Deterministic simulation testing of the Flujo engine.
//!
//! A seed decides everything: a random valid pipeline ([`gen`]) of leaf steps (some with side effects, some
//! failing their first attempts, some slow), loops, maps, conditionals, parallel steps and human pauses,
//! nested up to three levels; and the faults ([`faults`]) a wrapper injects into a real store (memory or
//! SQLite): writes that fail before or after they are durable, crashes before or after a commit, slow writes,
//! failed reads. The driver ([`sim`]) runs the pipeline to its end on a runtime in simulated time, starting
//! a new runner (a new incarnation of the process) after every crash or stopped walk and answering pauses as
//! a human would, then checks the invariants against the same pipeline run straight through without faults:
//! the same result, exactly-once side effects, an intact journal, and termination.
//!
//! `FLUJO_SIM_SEED=… cargo test -p flujo-sim --test simulate replay` replays one seed;
//! `scripts/simulate.sh HOURS` runs fresh seeds and keeps failing ones in `crates/flujo-sim/regressions.txt`.

pub mod faults;
pub mod gen;
pub mod rng;
pub mod serial;
pub mod sim;
pub mod skills;

pub use faults::{FaultStats, Sabotage};
pub use sim::{simulate, Backend, SimOptions, SimReport, Violation};

/// Whether `FLUJO_SIM_DUMP` asks for a trace of the simulation (walks, writes, appends, the journal), read once.
pub fn dumping() -> bool {
    static DUMP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DUMP.get_or_init(|| std::env::var_os("FLUJO_SIM_DUMP").is_some())
}
