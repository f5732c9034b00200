//! The simulator's fixed budget of seeds (part of the test command), the saved regression seeds, a replay of
//! one seed (`FLUJO_SIM_SEED`), and one test per invariant that breaks it on purpose and sees it caught.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flujo_sim::sim::invariant;
use flujo_sim::{simulate, Backend, Sabotage, SimOptions, SimReport, Violation};

/// Runs `seeds` and returns the reports; panics with every violation found.
fn run_seeds(seeds: impl IntoIterator<Item = u64>, opts: &SimOptions) -> Vec<SimReport> {
    let mut reports = Vec::new();
    let mut broken: Vec<Violation> = Vec::new();
    for seed in seeds {
        match simulate(seed, opts) {
            Ok(r) => reports.push(r),
            Err(v) => broken.push(v),
        }
    }
    assert!(broken.is_empty(), "{} violation(s):\n{}", broken.len(), render(&broken));
    reports
}

fn render(vs: &[Violation]) -> String {
    vs.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
}

fn summary(name: &str, reports: &[SimReport]) -> String {
    let faults: u64 = reports.iter().map(|r| r.faults.total()).sum();
    let interrupted: u32 = reports.iter().map(|r| r.interrupted).sum();
    let races: u32 = reports.iter().map(|r| r.races).sum();
    let takeovers: u32 = reports.iter().map(|r| r.takeovers).sum();
    let budgeted = reports.iter().filter(|r| r.limit.is_some()).count();
    let refused = reports.iter().filter(|r| r.budget_refused).count();
    let walks: u32 = reports.iter().map(|r| r.walks).sum();
    let records: usize = reports.iter().map(|r| r.records).sum();
    let effects: usize = reports.iter().map(|r| r.effects).sum();
    let completed = reports.iter().filter(|r| r.status == flujo_core::RunStatus::Completed).count();
    format!(
        "{name}: {} runs ({completed} completed, {budgeted} with a budget, {refused} stopped by it), {walks} walks, \
         {interrupted} interrupted, {races} raced by a second process, {takeovers} taken over by another host, \
         {faults} faults injected, {records} records, {effects} side effects",
        reports.len()
    )
}

/// Seeds of the fixed budget: derived from an index, so the budget covers different seeds than `replay`'s.
fn budget_seed(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED
}

/// The seeds of `indexes` on `backend` at the default fault rates: the reports and their summary (printed).
fn budget(backend: Backend, indexes: std::ops::Range<u64>) -> (Vec<SimReport>, String) {
    let reports = run_seeds(indexes.map(budget_seed), &SimOptions::new(backend));
    let line = summary(backend.name(), &reports);
    eprintln!("{line}");
    (reports, line)
}

#[test]
fn memory_store_under_faults() {
    let (reports, line) = budget(Backend::Memory, 0..400);
    // The budget is not idle: faults were injected and walks interrupted.
    assert!(reports.iter().map(|r| r.faults.total()).sum::<u64>() > 400, "{line}");
    assert!(reports.iter().map(|r| r.interrupted).sum::<u32>() > 100, "{line}");
    assert!(reports.iter().any(|r| r.status == flujo_core::RunStatus::Failed), "{line}");
    assert!(reports.iter().any(|r| r.status == flujo_core::RunStatus::Completed), "{line}");
    assert!(reports.iter().map(|r| r.races).sum::<u32>() > 20, "{line}");
    assert!(reports.iter().map(|r| r.takeovers).sum::<u32>() > 20, "{line}");
    assert!(reports.iter().filter(|r| r.budget_refused).count() > 20, "{line}");
}

#[test]
fn sqlite_store_under_faults() {
    let (reports, line) = budget(Backend::Sqlite, 1000..1300);
    assert!(reports.iter().map(|r| r.interrupted).sum::<u32>() > 20, "{line}");
}

/// Over the test command's throwaway server (skipped, saying so, when there is none).
#[test]
fn postgres_store_under_faults() {
    if flujo_sim::sim::postgres_url().is_none() {
        eprintln!("FLUJO_TEST_POSTGRES_URL is not set: skipping (scripts/test.sh starts a server and sets it)");
        return;
    }
    let (reports, line) = budget(Backend::Postgres, 2000..2120);
    assert!(reports.iter().map(|r| r.interrupted).sum::<u32>() > 10, "{line}");
}

#[test]
fn one_seed_replays_exactly() {
    // Every backend runs in simulated time with its store calls in a fixed order: a seed is one run.
    let mut backends = vec![(Backend::Memory, 20), (Backend::Sqlite, 8)];
    if flujo_sim::sim::postgres_url().is_some() {
        backends.push((Backend::Postgres, 4));
    }
    for (backend, seeds) in backends {
        let opts = SimOptions::new(backend);
        for seed in (0..seeds).map(budget_seed) {
            let (a, b) = (simulate(seed, &opts).unwrap(), simulate(seed, &opts).unwrap());
            let key = |r: &SimReport| {
                (
                    r.status,
                    r.walks,
                    r.interrupted,
                    r.races,
                    r.takeovers,
                    r.faults,
                    r.records,
                    r.effects,
                    r.spent,
                    r.paid,
                )
            };
            assert_eq!(key(&a), key(&b), "{backend:?} seed {seed}");
        }
    }
}

/// Seeds that once broke an invariant (kept by `scripts/simulate.sh`): each must pass now.
#[test]
fn saved_regressions() {
    let text = include_str!("../regressions.txt");
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let seed: u64 = parts.next().and_then(|s| s.parse().ok()).expect("a seed");
        let backend = parts.next().and_then(Backend::parse).unwrap_or(Backend::Memory);
        if backend == Backend::Postgres && flujo_sim::sim::postgres_url().is_none() {
            eprintln!("seed {seed}: no Postgres server, skipped");
            continue;
        }
        if let Err(v) = simulate(seed, &SimOptions::new(backend)) {
            panic!("{v}");
        }
    }
}

/// `FLUJO_SIM_SEED=N [FLUJO_SIM_BACKEND=sqlite] cargo test -p flujo-sim --test simulate replay -- --nocapture`
#[test]
fn replay() {
    let Ok(seed) = std::env::var("FLUJO_SIM_SEED") else { return };
    let seed: u64 = seed.trim().parse().expect("FLUJO_SIM_SEED is a number");
    let backend = std::env::var("FLUJO_SIM_BACKEND").ok().and_then(|b| Backend::parse(&b)).unwrap_or(Backend::Memory);
    let s = flujo_sim::gen::scenario(seed);
    eprintln!("pipeline of seed {seed}: {}", serde_json::to_string_pretty(&s.pipeline).unwrap());
    match simulate(seed, &SimOptions::new(backend)) {
        Ok(r) => eprintln!("{r:?}"),
        Err(v) => panic!("{v}"),
    }
}

/// Runs up to `seeds` seeds with a deliberate bug until `want` catches one; returns the invariants that caught
/// something meanwhile.
fn caught_by(opts: &SimOptions, seeds: u64, want: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    for seed in (0..seeds).map(budget_seed) {
        if let Err(v) = simulate(seed, opts) {
            found.push(v.invariant);
            if v.invariant == want {
                break;
            }
        }
    }
    found
}

/// Runs seeds with a deliberate bug until one is caught; returns the invariants that caught it.
fn caught(opts: &SimOptions, seeds: u64) -> Vec<&'static str> {
    (0..seeds).map(budget_seed).filter_map(|seed| simulate(seed, opts).err()).map(|v| v.invariant).collect()
}

#[test]
fn a_skill_with_a_different_result_after_a_crash_is_caught() {
    let opts = SimOptions { drifting_skill: true, ..SimOptions::new(Backend::Memory) };
    let found = caught(&opts, 40);
    assert!(found.contains(&invariant::SAME_RESULT), "{found:?}");
}

#[test]
fn a_side_effect_made_twice_is_caught() {
    let opts = SimOptions { double_effects: true, ..SimOptions::new(Backend::Memory) };
    let found = caught(&opts, 20);
    assert!(!found.is_empty() && found.iter().all(|i| *i == invariant::EXACTLY_ONCE), "{found:?}");
}

#[test]
fn a_store_that_forgets_commits_is_caught() {
    let opts = SimOptions { sabotage: Sabotage::ForgetJournal, ..SimOptions::new(Backend::Memory) };
    let found = caught(&opts, 40);
    assert!(found.contains(&invariant::EXACTLY_ONCE) || found.contains(&invariant::TERMINATES), "{found:?}");
    assert!(found.len() > 5, "{found:?}");
}

#[test]
fn a_store_that_corrupts_records_is_caught() {
    let mut backends = vec![Backend::Memory, Backend::Sqlite];
    if flujo_sim::sim::postgres_url().is_some() {
        backends.push(Backend::Postgres);
    }
    for backend in backends {
        let opts = SimOptions { sabotage: Sabotage::CorruptRecords, ..SimOptions::new(backend) };
        let found = caught(&opts, 10);
        assert!(found.len() == 10 && found.iter().all(|i| *i == invariant::JOURNAL), "{backend:?}: {found:?}");
    }
}

#[test]
fn a_hanging_walk_is_caught_in_simulated_time() {
    // Every walk would take a simulated week; the bound is a simulated day (the test ends at once).
    let opts = SimOptions { hanging_skill: true, ..SimOptions::new(Backend::Memory) };
    let found = caught(&opts, 5);
    assert!(found.len() == 5 && found.iter().all(|i| *i == invariant::TERMINATES), "{found:?}");
}

#[test]
fn a_store_without_fencing_is_caught() {
    // Another host takes over every walk; a store that lets the old walker append makes two owners write.
    let opts = SimOptions { sabotage: Sabotage::NoFence, takeover_rate: 1000, ..SimOptions::new(Backend::Memory) };
    let found = caught_by(&opts, 200, invariant::SINGLE_OWNER);
    assert!(found.contains(&invariant::SINGLE_OWNER), "{found:?}");
}

#[test]
fn calls_that_cost_more_than_they_announce_are_caught() {
    // Reservations of a quarter of the real cost fit where the real cost does not: the budget is overspent.
    let opts = SimOptions { under_estimate: true, ..SimOptions::new(Backend::Memory) };
    let found = caught_by(&opts, 200, invariant::BUDGET);
    assert!(found.contains(&invariant::BUDGET), "{found:?}");
}

#[test]
fn a_store_that_loses_pending_pauses_is_caught() {
    let opts = SimOptions { sabotage: Sabotage::DropPending, ..SimOptions::new(Backend::Memory) };
    let found = caught_by(&opts, 2000, invariant::PAUSES);
    assert!(found.contains(&invariant::PAUSES), "{found:?}");
}
