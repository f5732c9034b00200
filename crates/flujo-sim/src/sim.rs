//! One simulated run: a generated pipeline driven to its end over a faulty store, restarted after every crash
//! or stopped walk, pauses answered as a human would; then every invariant is checked against the same
//! pipeline run straight through without faults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flujo_core::{FlujoError, RunStatus, Step, StepKind, StepStatus, Store};
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_store::{MemoryStore, SqliteStore};
use serde_json::Value;

use crate::faults::{FaultPlan, FaultStats, FaultyStore, Sabotage};
use crate::gen::{answer_for, scenario, Scenario};
use crate::serial::SerialStore;
use crate::skills::{registry, LeafParams, SimModels, World, SIM_SKILL};

/// The real store under the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    /// The server at `FLUJO_SIM_POSTGRES_URL` (else `FLUJO_TEST_POSTGRES_URL`, which the test command sets), a
    /// fresh schema per simulation.
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The backend named `name` (`memory`, `sqlite`, `postgres`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "memory" => Some(Backend::Memory),
            "sqlite" => Some(Backend::Sqlite),
            "postgres" => Some(Backend::Postgres),
            _ => None,
        }
    }
}

/// The Postgres server simulations use, if any.
pub fn postgres_url() -> Option<String> {
    ["FLUJO_SIM_POSTGRES_URL", "FLUJO_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

/// How a simulation injects faults.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    pub backend: Backend,
    /// Per-mille chance of a fault on each store write, and on each read.
    pub write_fault_rate: u64,
    pub read_fault_rate: u64,
    /// Most faults injected into one simulated run.
    pub fault_budget: u64,
    /// A deliberate bug (tests of the simulator itself).
    pub sabotage: Sabotage,
    /// A deliberately broken world: every side effect is made twice.
    pub double_effects: bool,
    /// A deliberately broken skill: its output differs after the first walk (a nondeterministic skill).
    pub drifting_skill: bool,
    /// A deliberately hanging skill: calls take a simulated week.
    pub hanging_skill: bool,
    /// Per-mille chance that a second process resumes an interrupted run at the same time as the first.
    pub race_rate: u64,
    /// Per-mille chance that a runner on another host takes a walk's run over while it goes on.
    pub takeover_rate: u64,
    /// A deliberately broken world: costed calls announce less than they cost.
    pub under_estimate: bool,
}

impl SimOptions {
    /// Faults at the default rates on `backend`.
    pub fn new(backend: Backend) -> Self {
        SimOptions {
            backend,
            write_fault_rate: 120,
            read_fault_rate: 40,
            fault_budget: 24,
            sabotage: Sabotage::None,
            double_effects: false,
            drifting_skill: false,
            hanging_skill: false,
            race_rate: 250,
            takeover_rate: 150,
            under_estimate: false,
        }
    }
}

/// What one simulation did.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub seed: u64,
    pub status: RunStatus,
    /// Walks it took (1 when nothing went wrong and nothing paused).
    pub walks: u32,
    /// Walks that ended in a crash or a store failure.
    pub interrupted: u32,
    /// Walks raced by a second process resuming the same run.
    pub races: u32,
    /// Walks another host took over (and walked to a pause or an end) while they went on.
    pub takeovers: u32,
    /// The run's cost budget and what it spent (micro-USD).
    pub limit: Option<u64>,
    /// The budget stopped the run (`usage_limit_exceeded`).
    pub budget_refused: bool,
    pub spent: u64,
    /// What all walks paid together, in micro-USD (more than `spent` when a paid call's record was lost in a
    /// crash and the call was made again).
    pub paid: u64,
    pub faults: FaultStats,
    pub records: usize,
    pub effects: usize,
}

/// A broken invariant: the seed that breaks it and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub backend: &'static str,
    pub invariant: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} ({}): invariant `{}` broken: {}\n  replay: FLUJO_SIM_SEED={} FLUJO_SIM_BACKEND={} cargo test -p flujo-sim --test simulate replay -- --nocapture",
            self.seed, self.backend, self.invariant, self.detail, self.seed, self.backend
        )
    }
}

/// The invariants, by the name a [`Violation`] gives.
pub mod invariant {
    /// The final status and output equal those of the same pipeline run with no faults.
    pub const SAME_RESULT: &str = "same-result";
    /// No step committed before a walk started is executed by that walk; no walk makes a side effect twice
    /// under one idempotency key; every committed side-effecting step made its effect.
    pub const EXACTLY_ONCE: &str = "exactly-once";
    /// The journal's hash chain verifies and the run row commits to it; no step has two completed records.
    pub const JOURNAL: &str = "journal-integrity";
    /// Every walk ends (within a simulated day), every error is a typed store failure caused by a fault, and
    /// the run settles within a bounded number of walks.
    pub const TERMINATES: &str = "terminates";
    /// A run has one live owner: no append lands while the run row names another owner (a walk that lost its
    /// run to another host never writes to its journal again).
    pub const SINGLE_OWNER: &str = "single-owner";
    /// Spending stays within the run's budget: what the run accounts, what each walk paid on top of what the
    /// run had spent when it started, and (without faults) everything paid.
    pub const BUDGET: &str = "budget";
    /// The run pauses with the same pending sets, in the same order, as straight through.
    pub const PAUSES: &str = "same-pauses";
}

/// Most walks of one simulated run.
const MAX_WALKS: u32 = 200;
/// Longest walk, in simulated time.
const MAX_WALK: Duration = Duration::from_secs(24 * 3600);
/// The run id every simulation uses.
pub const RUN_ID: &str = "sim-run";

/// Simulates the run of `seed` with `opts`; `Err` names the first invariant broken.
pub fn simulate(seed: u64, opts: &SimOptions) -> Result<SimReport, Violation> {
    let s = scenario(seed);
    let violation =
        |invariant: &'static str, detail: String| Violation { seed, backend: opts.backend.name(), invariant, detail };
    let broken = |e: String| violation(invariant::TERMINATES, e);
    // The real store under test. SQLite and Postgres live on a runtime of their own, in real time; the
    // simulation reaches them through a `SerialStore`, which keeps the simulated clock still during each call.
    let dir = tempfile::tempdir().map_err(|e| broken(format!("no temp dir: {e}")))?;
    let backend = match opts.backend {
        Backend::Memory => None,
        Backend::Sqlite | Backend::Postgres => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| broken(format!("no backend runtime: {e}")))?,
        ),
    };
    let mut schema = None;
    let inner: Arc<dyn Store> = match (opts.backend, &backend) {
        (Backend::Sqlite, Some(rt)) => {
            let _in = rt.enter();
            let db = SqliteStore::open(dir.path().join("sim.db"), flujo_store::SqliteOptions::default())
                .map_err(|e| broken(format!("cannot open SQLite: {e}")))?;
            Arc::new(SerialStore::new(Arc::new(db), rt.handle().clone()))
        }
        (Backend::Postgres, Some(rt)) => {
            let url = postgres_url().ok_or_else(|| broken("no server: set FLUJO_SIM_POSTGRES_URL".to_owned()))?;
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("sim_{}_{n}_{}", std::process::id(), seed % 1_000_000);
            let sep = if url.contains('?') { '&' } else { '?' };
            let uri = format!("{url}{sep}schema={name}");
            let db = rt
                .block_on(flujo_store::PostgresStore::connect(&uri))
                .map_err(|e| broken(format!("cannot open Postgres: {e}")))?;
            schema = Some((url, name));
            Arc::new(SerialStore::new(Arc::new(db), rt.handle().clone()))
        }
        _ => Arc::new(MemoryStore::new()),
    };
    // Every backend runs in simulated time: timers fire as soon as nothing else can run.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| broken(format!("no runtime: {e}")))?;
    let result = rt.block_on(async {
        // The reference: the same pipeline straight through, in memory, with no faults.
        let reference_opts = SimOptions {
            write_fault_rate: 0,
            read_fault_rate: 0,
            race_rate: 0,
            takeover_rate: 0,
            ..SimOptions::new(Backend::Memory)
        };
        let reference_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let reference_world = Arc::new(World::default());
        reference_world.under_estimate.store(opts.under_estimate, Ordering::SeqCst);
        let reference = drive(&s, reference_store, &reference_opts, reference_world.clone())
            .await
            .map_err(|(inv, d)| violation(inv, format!("the fault-free run: {d}")))?;
        // Without faults every paid call is accounted: the budget bounds what was really paid.
        if let Some(limit) = s.limit {
            let paid: u64 = reference_world.payments().iter().map(|p| p.micros).sum();
            if paid > limit {
                return Err(violation(
                    invariant::BUDGET,
                    format!("the fault-free run paid {paid} µUSD, over its budget of {limit}"),
                ));
            }
        }
        let world = Arc::new(World::default());
        world.double_effects.store(opts.double_effects, Ordering::SeqCst);
        world.under_estimate.store(opts.under_estimate, Ordering::SeqCst);
        let out = drive(&s, inner.clone(), opts, world.clone()).await.map_err(|(inv, d)| violation(inv, d))?;
        check(&s, &inner, &world, &reference, &out).await.map_err(|(inv, d)| violation(inv, d))?;
        Ok(SimReport {
            seed,
            status: out.status,
            walks: out.walks,
            interrupted: out.interrupted,
            races: out.races,
            takeovers: out.takeovers,
            limit: s.limit,
            budget_refused: out.error.as_deref() == Some("usage_limit_exceeded"),
            spent: out.spent,
            paid: world.payments().iter().map(|p| p.micros).sum(),
            faults: out.faults,
            records: out.records,
            effects: world.effects().len(),
        })
    });
    drop(rt);
    drop(inner);
    if let (Some(backend), Some((url, name))) = (&backend, schema) {
        // A long run must not fill the server with schemas: each simulation drops its own.
        if let Err(e) = backend.block_on(drop_schema(&url, &name)) {
            eprintln!("flujo-sim: could not drop schema {name}: {e}");
        }
    }
    result
}

/// Drops the schema `name` of the server at `url` (a simulation's own).
async fn drop_schema(url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let base = url.split('?').next().unwrap_or(url);
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(connection);
    let dropped = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).await;
    drop(client);
    let _ = conn.await;
    dropped
}

/// The engine's wall clock in a simulation: a fixed epoch plus the runtime's time, which is simulated on the
/// memory backend (so timestamps, leases and their expiry are the same on every replay of a seed), plus the
/// jumps the driver makes (a host waiting out a lease, a clock that leaps forward under a walk).
struct SimClock {
    start: tokio::time::Instant,
    jumped_ms: std::sync::atomic::AtomicI64,
}

impl SimClock {
    fn jump(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        self.jumped_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl flujo_core::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        const EPOCH_MS: i64 = 1_800_000_000_000;
        EPOCH_MS
            + i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX / 4)
            + self.jumped_ms.load(Ordering::SeqCst)
    }
}

/// How a drive ended.
#[derive(Debug, Clone)]
struct Driven {
    status: RunStatus,
    output: Option<Value>,
    /// The run's error, when it failed.
    error: Option<String>,
    /// What the run row says the run spent, in micro-USD.
    spent: u64,
    walks: u32,
    interrupted: u32,
    /// Walks that raced a second process resuming the same run.
    races: u32,
    /// Walks another host took over while they went on.
    takeovers: u32,
    faults: FaultStats,
    records: usize,
    /// The pending pauses the driver found, set after set (sorted ids; a set seen twice in a row counts once).
    pauses: Vec<Vec<String>>,
    /// For each runner (by walk id): what the run row said was spent when it started, in micro-USD.
    starts: Vec<(u64, u64)>,
}

type Broken = (&'static str, String);

/// The lease of every simulated runner.
const LEASE: Duration = Duration::from_secs(3600);
/// The host name runners on the "other host" record as owners.
const REMOTE_HOST: &str = "sim-remote-host";

fn micros(usd: f64) -> u64 {
    (usd * 1e6).round().max(0.0) as u64
}

/// Drives the run to a final status: answers pauses, and after a crash or a failed walk starts a new runner
/// (a new incarnation of the process) that resumes from what the store holds. Sometimes a second runner of the
/// same process resumes an interrupted run at the same moment, and sometimes a runner on another host takes the
/// run over while it is walked (the clock jumps past the lease first, as if the walker had stalled).
async fn drive(s: &Scenario, inner: Arc<dyn Store>, opts: &SimOptions, world: Arc<World>) -> Result<Driven, Broken> {
    let mut plan = FaultPlan::new(s.seed, opts.write_fault_rate, opts.read_fault_rate, opts.fault_budget);
    plan.sabotage = opts.sabotage;
    let plan = Arc::new(Mutex::new(plan));
    let mut pipeline = s.pipeline.clone();
    if opts.drifting_skill || opts.hanging_skill {
        break_skills(&mut pipeline.steps, opts);
    }
    let clock = Arc::new(SimClock { start: tokio::time::Instant::now(), jumped_ms: Default::default() });
    let mut race = crate::rng::Rng::new(s.seed, 3);
    let mut races = 0;
    let mut takeovers = 0;
    let mut walks = 0;
    let mut interrupted = 0;
    let mut pauses: Vec<Vec<String>> = Vec::new();
    let mut starts = Vec::new();
    loop {
        if walks >= MAX_WALKS {
            return Err((invariant::TERMINATES, format!("the run did not settle in {MAX_WALKS} walks")));
        }
        if walks > 0 {
            world.restart();
        }
        walks += 1;
        // The driver sees the store as it is (no faults) to decide what a user would do next.
        let row = inner.get_run(RUN_ID).await.map_err(|e| (invariant::TERMINATES, format!("reading the run: {e}")))?;
        let records = inner.load_journal(RUN_ID).await.unwrap_or_default();
        if let Some(r) = row.as_ref().filter(|r| r.status == RunStatus::Paused) {
            let mut ids: Vec<String> = r.pending.iter().map(|p| p.pause_id.clone()).collect();
            ids.sort();
            if pauses.last() != Some(&ids) {
                pauses.push(ids);
            }
        }
        if let Some(r) = row.as_ref().filter(|r| r.status == RunStatus::Running) {
            if r.owner.as_ref().is_some_and(|o| o.host == REMOTE_HOST) {
                // The other host's walk stopped (a store fault): a user waits out its lease.
                clock.jump(LEASE + Duration::from_secs(1));
            }
        }
        let base = u64::from(walks - 1) * 4;
        let spent_at_start = row.as_ref().map_or(0, |r| micros(r.total_cost_usd));
        let mut runner = |index: u64, remote: bool| {
            // Each runner's skills know its walk id (the first walk of the run is 0).
            let walk = base + index;
            starts.push((walk, spent_at_start));
            let store: Arc<dyn Store> = if remote {
                Arc::new(FaultyStore::remote(inner.clone(), plan.clone(), world.clone()))
            } else {
                Arc::new(FaultyStore::new(inner.clone(), plan.clone(), world.clone()))
            };
            let mut b = Flujo::builder(pipeline.clone())
                .store(store)
                .skills(registry(&world, walk, remote))
                .models(SimModels::new(&world, walk, remote))
                .clock(clock.clone())
                .lease(LEASE)
                .usage_limits(s.usage_limits());
            if remote {
                b = b.host(REMOTE_HOST);
            }
            b.build().map_err(|e| (invariant::TERMINATES, format!("the pipeline does not build: {e}")))
        };
        let flujo = runner(0, false)?;
        // Sometimes a second process resumes the same interrupted run at the same moment.
        let rival = match &row {
            Some(r) if r.status == RunStatus::Running && race.chance(opts.race_rate) => Some(runner(1, false)?),
            _ => None,
        };
        let takeover_after = race.chance(opts.takeover_rate).then(|| race.below(3000));
        let remote = match takeover_after {
            Some(_) => Some(runner(2, true)?),
            None => None,
        };
        let walk: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
            match &row {
                None => Box::pin(flujo.run_with(RunOptions::new(s.input.clone()).run_id(RUN_ID))),
                Some(r) if r.status == RunStatus::Paused => {
                    let Some(p) = r.pending.iter().min_by(|a, b| a.pause_id.cmp(&b.pause_id)) else {
                        return Err((invariant::TERMINATES, "the run is paused with nothing pending".into()));
                    };
                    Box::pin(flujo.resume_with(
                        RUN_ID,
                        ResumeRequest::answer(answer_for(&p.pause_id)).pause_id(p.pause_id.clone()),
                    ))
                }
                Some(r) if matches!(r.status, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled) => {
                    let stats = plan.lock().unwrap_or_else(|p| p.into_inner()).stats;
                    return Ok(Driven {
                        status: r.status,
                        output: r.output.clone(),
                        error: r.error.as_ref().map(|e| e.kind.clone()),
                        spent: micros(r.total_cost_usd),
                        walks: walks - 1,
                        interrupted,
                        races,
                        takeovers,
                        faults: stats,
                        records: records.len(),
                        pauses,
                        starts,
                    });
                }
                Some(_) => Box::pin(flujo.resume_with(RUN_ID, ResumeRequest::default())),
            };
        let faults_before = plan.lock().unwrap_or_else(|p| p.into_inner()).stats.total();
        let raced = rival.is_some();
        let both = async {
            match &rival {
                None => walk.await,
                Some(rival) => {
                    races += 1;
                    let (a, b) =
                        tokio::join!(walk, rival.resume_with(RUN_ID, ResumeRequest::default().interrupted_only()));
                    // The loser must have been refused (or stopped) by the store; the winner's answer counts.
                    // Both may answer when the second read the run after the first had finished or paused it
                    // (a finished run's resume returns its result). That both walked it at once would show as
                    // an effect made twice in one incarnation (`exactly-once`).
                    match (a, b) {
                        (Ok(r), Err(e)) | (Err(e), Ok(r)) if store_caused(&e) => Ok(r),
                        (Ok(r), Ok(_)) => Ok(r),
                        (Err(e), Err(f)) if store_caused(&e) && store_caused(&f) => Err(e),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                }
            }
        };
        // Another host takes the run over while it is walked: the walker seems to have stalled past its lease.
        let take = async {
            let (Some(after), Some(remote)) = (takeover_after, &remote) else { return None };
            tokio::time::sleep(Duration::from_millis(after)).await;
            match inner.get_run(RUN_ID).await {
                Ok(Some(r)) if r.status == RunStatus::Running => {}
                _ => return None, // nothing to take over (not created yet, paused or finished)
            }
            clock.jump(LEASE + Duration::from_secs(1));
            // Whichever of this turn's runners walks the run (the first, or its rival if that won the claim).
            world.taking_over(base);
            world.taking_over(base + 1);
            Some(remote.resume_with(RUN_ID, ResumeRequest::default().interrupted_only()).await)
        };
        let ended = tokio::time::timeout(MAX_WALK, async { tokio::join!(both, take) }).await;
        let faults_after = plan.lock().unwrap_or_else(|p| p.into_inner()).stats.total();
        let (main, taken) = match ended {
            Err(_) => {
                return Err((invariant::TERMINATES, format!("walk {walks} did not end within a simulated day")));
            }
            Ok(pair) => pair,
        };
        if crate::dumping() {
            let brief = |r: &Result<flujo_core::RunResult, FlujoError>| match r {
                Ok(r) => format!("{:?} {:?}", r.status, r.error.as_ref().map(|e| &e.kind)),
                Err(e) => format!("error {e}"),
            };
            eprintln!(
                "walk {walks} (ids from {base}): {}; takeover: {:?}; faults {faults_before}→{faults_after}; row {:?}",
                brief(&main),
                taken.as_ref().map(brief),
                row.as_ref().map(|r| r.status)
            );
        }
        let settled = |r: &flujo_core::RunResult| {
            matches!(r.status, RunStatus::Completed | RunStatus::Failed | RunStatus::Paused)
        };
        match &taken {
            None => {}
            Some(Ok(r)) if settled(r) => takeovers += 1,
            Some(Ok(r)) => {
                return Err((
                    invariant::TERMINATES,
                    format!("the takeover of walk {walks} returned status {:?}", r.status),
                ));
            }
            // Refused (the walker's lease was renewed, the run paused or finished meanwhile) or stopped by a fault.
            Some(Err(e)) if store_caused(e) => {}
            Some(Err(e)) => {
                return Err((
                    invariant::TERMINATES,
                    format!("the takeover of walk {walks} failed with an untyped or unexplained error: {e} ({e:?})"),
                ));
            }
        }
        match main {
            Ok(r) => {
                if !settled(&r) {
                    return Err((invariant::TERMINATES, format!("walk {walks} returned status {:?}", r.status)));
                }
                // Answered or final: the next turn of the loop reads the store and goes on (or returns).
            }
            Err(e) => {
                // A walk may stop only because the store failed it (a fault was injected meanwhile), or lost
                // the run to a rival or to another host.
                let expected = (faults_after > faults_before || raced || taken.is_some()) && store_caused(&e);
                if !expected {
                    return Err((
                        invariant::TERMINATES,
                        format!("walk {walks} failed with an untyped or unexplained error: {e} ({e:?})"),
                    ));
                }
                interrupted += 1;
            }
        }
    }
}

/// An error a store fault can cause: the store's own, or a refusal that follows from a write whose answer was
/// lost (the run exists although its creation "failed", or another walk's state is still recorded).
fn store_caused(e: &FlujoError) -> bool {
    matches!(e, FlujoError::Store(_) | FlujoError::RunNotFound(_) | FlujoError::NotResumable { .. })
}

/// Calls `f` on every step sequence nested directly in `step`: bodies, branches, states, a cached step, an
/// imported pipeline's steps.
fn nested(step: &Step, f: &mut dyn FnMut(&[Step])) {
    match &step.kind {
        StepKind::Loop(spec) => f(&spec.body),
        StepKind::Map(spec) => f(&spec.body),
        StepKind::Conditional(spec) => spec.branches.iter().for_each(|b| f(&b.steps)),
        StepKind::Parallel(spec) => spec.branches.iter().for_each(|b| f(&b.steps)),
        StepKind::DynamicRouter(spec) => spec.branches.iter().for_each(|b| f(&b.steps)),
        StepKind::StateMachine(spec) => spec.states.iter().for_each(|b| f(&b.steps)),
        StepKind::Cache(spec) => f(std::slice::from_ref(&*spec.wrapped_step)),
        StepKind::Import(spec) => f(&spec.pipeline.steps),
        _ => {}
    }
}

/// [`nested`], for changing the steps.
fn nested_mut(step: &mut Step, f: &mut dyn FnMut(&mut [Step])) {
    match &mut step.kind {
        StepKind::Loop(spec) => f(&mut spec.body),
        StepKind::Map(spec) => f(&mut spec.body),
        StepKind::Conditional(spec) => spec.branches.iter_mut().for_each(|b| f(&mut b.steps)),
        StepKind::Parallel(spec) => spec.branches.iter_mut().for_each(|b| f(&mut b.steps)),
        StepKind::DynamicRouter(spec) => spec.branches.iter_mut().for_each(|b| f(&mut b.steps)),
        StepKind::StateMachine(spec) => spec.states.iter_mut().for_each(|b| f(&mut b.steps)),
        StepKind::Cache(spec) => f(std::slice::from_mut(&mut *spec.wrapped_step)),
        StepKind::Import(spec) => f(&mut Arc::make_mut(&mut spec.pipeline).steps),
        _ => {}
    }
}

/// The simulator params of a step, if it is a leaf calling [`SIM_SKILL`].
fn sim_params(step: &Step) -> Option<&Value> {
    match &step.kind {
        StepKind::Step { agent: Some(flujo_core::AgentRef::Skill { id, params }) } if id == SIM_SKILL => Some(params),
        _ => None,
    }
}

/// Makes the leaf skills drift (a different output after the first walk) or hang, for tests of the simulator.
fn break_skills(steps: &mut [Step], opts: &SimOptions) {
    for step in steps {
        if sim_params(step).is_some() {
            if let StepKind::Step { agent: Some(flujo_core::AgentRef::Skill { params, .. }) } = &mut step.kind {
                if let Some(obj) = params.as_object_mut() {
                    if opts.hanging_skill {
                        obj.insert("sleep_ms".into(), Value::from(7u64 * 24 * 3600 * 1000));
                    }
                    if opts.drifting_skill {
                        obj.insert("drift".into(), Value::Bool(true));
                    }
                }
            }
        }
        nested_mut(step, &mut |inner| break_skills(inner, opts));
    }
}

/// The leaf params of every simulator step, by step name.
fn leaves(steps: &[Step], out: &mut BTreeMap<String, LeafParams>) {
    for step in steps {
        if let Some(p) = sim_params(step).and_then(crate::skills::leaf_params) {
            out.insert(step.name.clone(), p);
        }
        nested(step, &mut |inner| leaves(inner, out));
    }
}

/// The invariants of a finished simulation.
async fn check(
    s: &Scenario,
    inner: &Arc<dyn Store>,
    world: &Arc<World>,
    reference: &Driven,
    out: &Driven,
) -> Result<(), Broken> {
    // One owner at a time: no append landed while another owner held the run.
    if let Some(b) = world.fence_breaks().first() {
        return Err((invariant::SINGLE_OWNER, format!("an append of a walk that did not own the run landed: {b}")));
    }
    let records = inner.load_journal(RUN_ID).await.map_err(|e| (invariant::JOURNAL, e.to_string()))?;
    if crate::dumping() {
        // A replay's journal and ledgers, for whoever investigates a seed.
        for r in &records {
            eprintln!(
                "record {} g{} {} {} {:?} cost {} {:?} {:?}",
                r.seq,
                r.generation,
                r.path,
                r.kind,
                r.status,
                micros(r.cost_usd),
                r.output,
                r.metadata.get(flujo_engine::executor::META_STOPPED)
            );
        }
        eprintln!("payments {:?}\nstarts {:?}\neffects {:?}", world.payments(), out.starts, world.effects());
    }
    // Journal integrity: the chain and the run row's commitment, as `lens verify` checks them.
    let idle = Arc::new(World::default());
    let flujo = Flujo::builder(s.pipeline.clone())
        .store(inner.clone())
        .skills(registry(&idle, 0, false))
        .models(SimModels::new(&idle, 0, false))
        .build()
        .map_err(|e| (invariant::JOURNAL, format!("cannot build a checker: {e}")))?;
    let client = flujo.client().map_err(|e| (invariant::JOURNAL, format!("no client: {e}")))?;
    let report = client.verify(RUN_ID).await.map_err(|e| (invariant::JOURNAL, format!("verify failed: {e}")))?;
    if let Some(broken) = report.broken {
        return Err((invariant::JOURNAL, format!("the journal does not verify: {broken:?}")));
    }
    let mut completed = HashSet::new();
    for r in &records {
        if r.status == StepStatus::Completed && !completed.insert((r.path.clone(), r.generation)) {
            return Err((invariant::JOURNAL, format!("path {} has two completed records", r.path)));
        }
    }

    // Exactly once: no walk makes an effect twice, and no call starts after its step was committed — except
    // the work a walk started after another host took its run over (a zombie, stopped at its next write).
    let prefix = format!("{RUN_ID}:");
    let path_of = |key: &str| key.strip_prefix(&prefix).unwrap_or(key).to_owned();
    let effects = world.effects();
    let commits = world.commit_marks();
    let takeovers = world.takeovers();
    let mut per_walk: HashMap<(String, u64), u32> = HashMap::new();
    for e in &effects {
        let path = path_of(&e.key);
        let n = per_walk.entry((path.clone(), e.walk)).or_default();
        *n += 1;
        if *n > 1 {
            return Err((invariant::EXACTLY_ONCE, format!("walk {} made the effect of {path} twice", e.walk)));
        }
        let zombie = takeovers.get(&e.walk).is_some_and(|&at| e.started > at);
        if !zombie && commits.get(&path).is_some_and(|&committed| e.started > committed) {
            return Err((
                invariant::EXACTLY_ONCE,
                format!("walk {} executed {path} again after it was committed", e.walk),
            ));
        }
    }
    let mut params = BTreeMap::new();
    leaves(&s.pipeline.steps, &mut params);
    let made: HashSet<String> = effects.iter().map(|e| path_of(&e.key)).collect();
    for r in records.iter().filter(|r| r.status == StepStatus::Completed) {
        let effectful = r.kind == "tool_call" || params.get(&r.step).is_some_and(|p| p.effect);
        if effectful && !made.contains(&r.path) {
            return Err((invariant::EXACTLY_ONCE, format!("{} is committed but its effect never happened", r.path)));
        }
    }

    // The budget: what the run accounts, and what each walk paid on top of what the run had spent before it.
    if let Some(limit) = s.limit {
        if out.spent > limit {
            return Err((
                invariant::BUDGET,
                format!("the run accounts {} µUSD, over its budget of {limit}", out.spent),
            ));
        }
        for &(walk, before) in &out.starts {
            let paid = world.paid_by(walk);
            if before + paid > limit {
                return Err((
                    invariant::BUDGET,
                    format!(
                        "walk {walk} paid {paid} µUSD on top of {before} already spent, over the budget of {limit}"
                    ),
                ));
            }
        }
    }

    // Same result as straight through (checked last: a broken journal or a repeated effect explains a
    // different result better). When an error stops the whole run (a budget, a state machine out of hops) while
    // other branches run, which of them had finished — the run's partial result, even which error came first —
    // depends on timing; which call a budget refuses also depends on the walk when a cache may save a call
    // (every runner starts with an empty cache). Then only the status is compared.
    let stopped = |kinds: &dyn Fn(&str) -> bool| [out, reference].iter().any(|d| d.error.as_deref().is_some_and(kinds));
    let timing_dependent = (s.concurrent && stopped(&|k| k != "step_failed"))
        || (s.limit.is_some() && s.cached && stopped(&|k| k == "usage_limit_exceeded"));
    let same = if timing_dependent {
        out.status == reference.status || [out, reference].iter().all(|d| d.status != RunStatus::Paused)
    } else {
        (out.status, &out.output, &out.error) == (reference.status, &reference.output, &reference.error)
    };
    if !same {
        return Err((
            invariant::SAME_RESULT,
            format!(
                "ended {:?} ({:?}) with {:?}; straight through it ends {:?} ({:?}) with {:?}",
                out.status, out.error, out.output, reference.status, reference.error, reference.output
            ),
        ));
    }
    // The same steps ran, so the run accounts the same spending (a call paid again after its record was lost
    // in a crash is accounted once) — unless the run was stopped while other branches ran (see above) or a
    // cache, which every new runner starts empty, saved a call in one of them.
    if !timing_dependent && !s.cached && out.spent.abs_diff(reference.spent) > 2 {
        return Err((
            invariant::BUDGET,
            format!("the run accounts {} µUSD; straight through it accounts {}", out.spent, reference.spent),
        ));
    }
    if !timing_dependent && out.pauses != reference.pauses {
        return Err((
            invariant::PAUSES,
            format!("paused for {:?}; straight through it pauses for {:?}", out.pauses, reference.pauses),
        ));
    }
    Ok(())
}
