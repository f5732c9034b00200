//! The store conformance suite: backend-independent checks of the [`Store`] contract (feature `test-suite`).
//!
//! Every check is a separate `async fn(Arc<dyn Store>) -> Result<(), String>` listed by [`checks`]; a check
//! returns `Err` with a description of the first thing that went wrong. [`run_all`] gives each check a
//! fresh, empty store from a factory, runs them all (a panicking check counts as a failure), and returns a
//! [`Report`] naming every failure. A backend's test is one line:
//!
//! ```
//! # use std::sync::Arc;
//! # use flujo_core::Store;
//! # use flujo_store::{conformance, MemoryStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! conformance::run_all(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>).await.assert_ok();
//! # }
//! ```
//!
//! Contract details the suite pins down (each backend must agree):
//! * the factory returns an *empty* store (no runs, no blobs);
//! * `load_journal` of an unknown run is `Ok(vec![])`, `get_run` of one is `Ok(None)`;
//! * a failed compare-and-set is `Conflict { actual: <stored status> }`, built by [`crate::status_conflict`];
//!   an append at the wrong position is `Conflict` built by [`crate::seq_conflict`];
//! * `load_journal_from` returns the journal's tail from a position;
//! * `list_runs` orders by `created_at_ms` descending (ties: `run_id` descending), and pages with `before`;
//! * `find_runs_by_prefix` matches byte-wise (no wildcards) and orders by `run_id` ascending;
//! * `delete_runs` deletes runs with `created_at_ms < cutoff`, never `running`/`paused` ones unless asked
//!   by name, takes their journals along, and removes exactly the blobs nothing else references (a blob
//!   stored with `put_blob` that no run referenced is kept);
//! * all fields round-trip exactly (JSON values, floats, timestamps, usage details), in runs, journals and
//!   system state.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flujo_core::journal::GENESIS_HASH;
use flujo_core::{
    verify_chain, ChainHead, ClaimRequest, Definition, JournalRecord, Map, OriginFile, OriginRole, PatchOp,
    PendingPause, RunError, RunFilter, RunOrigin, RunOwner, RunRecord, RunStatus, RunUpdate, StepStatus, Store,
    StoreError, TokenUsage,
};
use serde_json::json;

use crate::blob_hash;

/// What a check returns: `Err` describes the first violation found.
pub type CheckResult = Result<(), String>;

/// The future of one running check.
pub type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send + 'static>>;

/// One named conformance check.
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's function name (e.g. `append_is_gapless`), used in [`Report`]s.
    pub name: &'static str,
    /// Makes the check's future for the given store; awaiting it runs the check.
    pub run: fn(Arc<dyn Store>) -> CheckFuture,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        vec![$(Check { name: stringify!($name), run: |store| Box::pin($name(store)) }),*]
    };
}

/// Every conformance check, in a stable order.
pub fn checks() -> Vec<Check> {
    checks![
        create_get_round_trip,
        get_unknown_run_is_none,
        duplicate_create_is_rejected,
        update_cas_success,
        update_with_empty_expected_applies_to_any_status,
        update_cas_conflict_leaves_run_unchanged,
        update_unknown_run_is_not_found,
        append_is_gapless,
        append_rejects_out_of_order_seq,
        append_to_unknown_run_is_not_found,
        load_journal_returns_seq_order,
        journal_survives_and_chain_verifies,
        usage_details_round_trip_and_verify,
        journals_are_isolated_per_run,
        load_journal_of_unknown_run_is_empty,
        loaded_records_are_independent_copies,
        update_run_does_not_touch_journal,
        list_runs_newest_first,
        list_runs_filters,
        list_runs_limit,
        find_runs_by_prefix_is_exact_and_ordered,
        delete_runs_respects_cutoff_and_status,
        delete_runs_removes_journals_and_frees_the_run_id,
        delete_runs_keeps_blobs_still_referenced,
        a_definition_deleted_with_its_runs_is_stored_again,
        system_state_round_trip,
        system_state_lists_by_prefix_and_deletes,
        evaluations_are_created_once_updated_and_listed,
        evaluation_claims_are_exclusive_and_expire,
        update_cas_on_owner,
        heartbeat_extends_only_the_owners_lease,
        fenced_appends_need_the_running_owner,
        claims_take_queued_runs_oldest_first,
        claims_take_over_expired_leases_only,
        concurrent_claims_never_share_a_run,
        claims_respect_a_queues_global_limit,
        claims_respect_a_queues_rate_limit,
        a_taken_over_run_fences_its_old_owner_out,
        blob_round_trip_and_idempotency,
        get_unknown_blob_is_none,
        concurrent_appends_to_different_runs_all_land,
        concurrent_writers_on_one_run_are_detected,
        describe_is_not_empty,
    ]
}

/// Outcome of [`run_all`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The store's [`Store::describe`] (of the first store made).
    pub store: String,
    /// Names of the checks that passed, in the order they ran.
    pub passed: Vec<&'static str>,
    /// `(check name, failure)` for every failed check.
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// Whether every check passed (no entry in [`Report::failed`]).
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Panics, listing every failed check, unless all passed.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.passed.len() + self.failed.len();
        write!(f, "store conformance on {}: {}/{} checks passed", self.store, self.passed.len(), total)?;
        for (name, why) in &self.failed {
            write!(f, "\n  FAILED {name}: {why}")?;
        }
        Ok(())
    }
}

/// Longest a single check may take before it is reported as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every check of [`checks`] against a fresh store from `make`. Must be called inside a tokio runtime.
pub async fn run_all<F>(make: F) -> Report
where
    F: Fn() -> Arc<dyn Store>,
{
    run_all_async(|| {
        let store = make();
        async move { store }
    })
    .await
}

/// Like [`run_all`], for backends whose stores are made asynchronously (connect, migrate, create a schema).
pub async fn run_all_async<F, Fut>(make: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    run_checks(&checks(), make).await
}

/// Runs the given checks, each against a fresh store from `make`.
pub async fn run_checks<F, Fut>(checks: &[Check], make: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut report = Report::default();
    for check in checks {
        let store = make().await;
        if report.store.is_empty() {
            report.store = store.describe();
        }
        // Spawned so that a panicking check is reported rather than aborting the whole suite.
        let task = tokio::spawn(tokio::time::timeout(CHECK_TIMEOUT, (check.run)(store)));
        let outcome = match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => Err(format!("did not finish within {CHECK_TIMEOUT:?}")),
            Err(join) if join.is_panic() => Err(format!("panicked: {}", panic_message(join.into_panic()))),
            Err(join) => Err(format!("task failed: {join}")),
        };
        match outcome {
            Ok(()) => report.passed.push(check.name),
            Err(why) => report.failed.push((check.name, why)),
        }
    }
    report
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Fixtures (public: engine and backend tests can build the same records).

/// A run record with every field set to a non-default value.
pub fn sample_run(run_id: &str) -> RunRecord {
    let mut initial_context = Map::new();
    initial_context.insert("user".into(), json!({"name": "Ada", "tags": ["a", "b"], "n": 3}));
    initial_context.insert("flag".into(), json!(true));
    RunRecord {
        run_id: run_id.to_owned(),
        pipeline_name: "demo".to_owned(),
        pipeline_version: "1.2.3".to_owned(),
        pipeline_hash: blob_hash(b"pipeline definition"),
        definition: Some(Arc::new(Definition::from_json(
            json!({"name": "demo", "steps": [{"name": "a", "uses": "x"}]}).to_string(),
        ))),
        status: RunStatus::Running,
        input: json!({"q": "héllo ✓", "nums": [1, 2.5, -3], "nested": {"z": null, "a": false}}),
        initial_context,
        pending: vec![PendingPause::new(
            "0.1",
            "approve",
            "Approve?",
            Some(json!({"type": "object", "properties": {"ok": {"type": "boolean"}}})),
        )],
        output: Some(json!({"answer": 42})),
        error: Some(RunError::new("step_failed", "boom")),
        generation: 2,
        total_cost_usd: 0.125,
        total_tokens: 1234,
        created_at_ms: 1_700_000_000_123,
        updated_at_ms: 1_700_000_000_456,
        owner: Some(sample_owner("owner-a")),
        lease_expires_at_ms: Some(1_700_000_030_456),
        origin: Some(RunOrigin {
            blueprint: "/home/ada/proj/pipeline.yaml".to_owned(),
            base_dir: "/home/ada/proj".to_owned(),
            files: vec![
                OriginFile {
                    role: OriginRole::SkillsCatalog,
                    path: "/home/ada/proj/skills.yaml".to_owned(),
                    blake3: blob_hash(b"skills"),
                },
                OriginFile {
                    role: OriginRole::Prompt,
                    path: "/home/ada/proj/prompts/sys é.md".to_owned(),
                    blake3: blob_hash(b"prompt"),
                },
            ],
        }),
        journal_head: Some(ChainHead { len: 3, hash: blob_hash(b"head") }),
        queue: Some("reports é".to_owned()),
    }
}

/// An owner with every field set.
pub fn sample_owner(id: &str) -> RunOwner {
    RunOwner { id: id.to_owned(), host: "host-1".to_owned(), pid: 4242, pid_start: Some(987_654) }
}

/// A fresh running run: no pending pauses, output or error.
pub fn fresh_run(run_id: &str, pipeline: &str, status: RunStatus, created_at_ms: i64) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        pipeline_name: pipeline.to_owned(),
        pipeline_version: "1".to_owned(),
        pipeline_hash: blob_hash(pipeline.as_bytes()),
        definition: None,
        status,
        input: json!(null),
        initial_context: Map::new(),
        pending: Vec::new(),
        output: None,
        error: None,
        generation: 0,
        total_cost_usd: 0.0,
        total_tokens: 0,
        created_at_ms,
        updated_at_ms: created_at_ms,
        owner: None,
        lease_expires_at_ms: None,
        origin: None,
        queue: None,
        journal_head: None,
    }
}

/// An unsealed journal record whose fields vary with `seq` (failed records, patches, metadata, feedback).
pub fn sample_record(run_id: &str, seq: u64) -> JournalRecord {
    let failed = seq % 3 == 2;
    let mut metadata = Map::new();
    if seq % 2 == 1 {
        metadata.insert("attempt_notes".into(), json!(["retry", seq]));
    }
    JournalRecord {
        run_id: run_id.to_owned(),
        seq,
        generation: (seq / 4) as u32,
        path: format!("{seq}"),
        step: format!("step_{seq}"),
        kind: if seq % 2 == 0 { "step" } else { "loop" }.to_owned(),
        status: if failed { StepStatus::Failed } else { StepStatus::Completed },
        output: Arc::new(json!({"seq": seq, "text": format!("out {seq}"), "f": 0.5})),
        feedback: failed.then(|| format!("failure at {seq}")),
        patch: vec![
            PatchOp::set(vec!["counter".to_owned()], json!(seq)),
            PatchOp::Append { path: vec!["log".to_owned()], value: Arc::new(json!(format!("s{seq}"))) },
        ],
        attempts: 1 + (seq % 3) as u32,
        tokens: TokenUsage::new(10 * seq, seq),
        cost_usd: 0.25 * seq as f64,
        started_at_ms: 1_700_000_000_000 + seq as i64,
        latency_ms: 1.5,
        metadata,
        prev_hash: String::new(),
        hash: String::new(),
        hash_scheme: flujo_core::HashScheme::CURRENT,
    }
}

/// `n` records of `run_id`, sealed into a valid hash chain from the genesis hash.
pub fn sealed_chain(run_id: &str, n: u64) -> Vec<JournalRecord> {
    let mut prev = GENESIS_HASH.to_owned();
    (0..n)
        .map(|seq| {
            let mut r = sample_record(run_id, seq);
            r.seal(&prev);
            prev.clone_from(&r.hash);
            r
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Helpers.

trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Context<T> for Result<T, StoreError> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: unexpected error: {e}"))
    }
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> CheckResult {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn ensure_eq<T: PartialEq + fmt::Debug>(what: &str, actual: &T, expected: &T) -> CheckResult {
    ensure(actual == expected, || format!("{what}: expected {expected:?}, got {actual:?}"))
}

/// Succeeds when `result` is the error `matches` accepts.
fn ensure_err<T: fmt::Debug>(
    what: &str,
    result: Result<T, StoreError>,
    wanted: &str,
    matches: impl FnOnce(&StoreError) -> bool,
) -> CheckResult {
    match result {
        Err(e) if matches(&e) => Ok(()),
        Err(e) => Err(format!("{what}: expected {wanted}, got error {e:?}")),
        Ok(v) => Err(format!("{what}: expected {wanted}, got Ok({v:?})")),
    }
}

async fn get(store: &Arc<dyn Store>, run_id: &str) -> Result<RunRecord, String> {
    store.get_run(run_id).await.ctx("get_run")?.ok_or_else(|| format!("get_run({run_id}): run missing"))
}

async fn append_all(store: &Arc<dyn Store>, records: &[JournalRecord]) -> CheckResult {
    for r in records {
        store.append(r).await.ctx(&format!("append seq {}", r.seq))?;
    }
    Ok(())
}

pub(crate) fn update_of(run: &RunRecord, expected: Vec<RunStatus>, status: RunStatus) -> RunUpdate {
    RunUpdate {
        run_id: run.run_id.clone(),
        expected,
        status,
        pending: run.pending.clone(),
        output: run.output.clone(),
        error: run.error.clone(),
        generation: run.generation,
        total_cost_usd: run.total_cost_usd,
        total_tokens: run.total_tokens,
        updated_at_ms: run.updated_at_ms + 1,
        owner: run.owner.clone(),
        lease_expires_at_ms: run.lease_expires_at_ms,
        expected_owner: None,
        journal_head: None,
    }
}

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.run_id.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Runs.

/// Checks that `get_run` returns a created run exactly as given, both with every field set and with the
/// optional fields empty.
pub async fn create_get_round_trip(store: Arc<dyn Store>) -> CheckResult {
    let run = sample_run("r-round-trip");
    store.create_run(&run).await.ctx("create_run")?;
    ensure_eq("get_run after create_run (all fields)", &get(&store, &run.run_id).await?, &run)?;
    let bare = fresh_run("r-bare", "other", RunStatus::Paused, 5);
    store.create_run(&bare).await.ctx("create_run (bare)")?;
    ensure_eq("get_run of a run with empty optional fields", &get(&store, "r-bare").await?, &bare)
}

/// Checks that `get_run` of an id no run has is `Ok(None)`.
pub async fn get_unknown_run_is_none(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&sample_run("r-known")).await.ctx("create_run")?;
    ensure_eq("get_run of an unknown run", &store.get_run("r-unknown").await.ctx("get_run")?, &None)
}

/// Checks that `create_run` with an existing run id fails with [`StoreError::RunExists`] and leaves the
/// stored run unchanged.
pub async fn duplicate_create_is_rejected(store: Arc<dyn Store>) -> CheckResult {
    let run = sample_run("r-dup");
    store.create_run(&run).await.ctx("first create_run")?;
    let mut second = fresh_run("r-dup", "intruder", RunStatus::Completed, 99);
    second.input = json!("other");
    ensure_err("second create_run with the same id", store.create_run(&second).await, "RunExists", |e| {
        *e == StoreError::RunExists("r-dup".to_owned())
    })?;
    ensure_eq("the original run after a rejected duplicate", &get(&store, "r-dup").await?, &run)
}

/// Checks that an `update_run` whose expected statuses include the stored one sets every updated field,
/// keeps `input`, `definition` and `created_at_ms`, and keeps the journal head when the update names none.
pub async fn update_cas_success(store: Arc<dyn Store>) -> CheckResult {
    let mut run = fresh_run("r-cas", "demo", RunStatus::Running, 10);
    run.input = json!({"keep": "me"});
    run.definition = Some(Arc::new(Definition::from_json(json!({"steps": []}).to_string())));
    store.create_run(&run).await.ctx("create_run")?;

    let update = RunUpdate {
        run_id: run.run_id.clone(),
        expected: vec![RunStatus::Running],
        status: RunStatus::Paused,
        pending: sample_run("x").pending,
        output: Some(json!([1, {"two": 2}])),
        error: Some(RunError::new("k", "m")),
        generation: 7,
        total_cost_usd: 3.75,
        total_tokens: 99,
        updated_at_ms: 20,
        owner: Some(sample_owner("owner-b")),
        lease_expires_at_ms: Some(25),
        expected_owner: None,
        journal_head: Some(ChainHead { len: 4, hash: blob_hash(b"four") }),
    };
    store.update_run(&update).await.ctx("update_run (expected running)")?;
    let mut want = run.clone();
    want.status = update.status;
    want.pending.clone_from(&update.pending);
    want.output.clone_from(&update.output);
    want.error.clone_from(&update.error);
    want.generation = update.generation;
    want.total_cost_usd = update.total_cost_usd;
    want.total_tokens = update.total_tokens;
    want.updated_at_ms = update.updated_at_ms;
    want.owner.clone_from(&update.owner);
    want.lease_expires_at_ms = update.lease_expires_at_ms;
    want.journal_head.clone_from(&update.journal_head);
    ensure_eq("run after update (updated fields set, others kept)", &get(&store, "r-cas").await?, &want)?;

    // A second transition, expecting one of several statuses; clears pending/output/error again, and keeps
    // the journal head (the update names none).
    let back = RunUpdate {
        expected: vec![RunStatus::Failed, RunStatus::Paused],
        status: RunStatus::Running,
        pending: vec![],
        output: None,
        error: None,
        updated_at_ms: 30,
        journal_head: None,
        ..update
    };
    store.update_run(&back).await.ctx("update_run (expected failed or paused)")?;
    let got = get(&store, "r-cas").await?;
    ensure_eq("status after second update", &got.status, &RunStatus::Running)?;
    ensure(got.pending.is_empty() && got.output.is_none() && got.error.is_none(), || {
        format!("second update must clear pending/output/error, got {got:?}")
    })?;
    ensure_eq("updated_at_ms after second update", &got.updated_at_ms, &30)?;
    ensure_eq("journal head kept by an update without one", &got.journal_head, &want.journal_head)?;
    ensure_eq("created_at_ms is never updated", &got.created_at_ms, &10)
}

/// Checks that an `update_run` with an empty `expected` list applies whatever the stored status is.
pub async fn update_with_empty_expected_applies_to_any_status(store: Arc<dyn Store>) -> CheckResult {
    for (i, status) in
        [RunStatus::Running, RunStatus::Paused, RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled]
            .into_iter()
            .enumerate()
    {
        let run = fresh_run(&format!("r-any-{i}"), "demo", status, i as i64);
        store.create_run(&run).await.ctx("create_run")?;
        store
            .update_run(&update_of(&run, vec![], RunStatus::Cancelled))
            .await
            .ctx(&format!("update_run with empty expected from {}", status.as_str()))?;
        ensure_eq("status after unconditional update", &get(&store, &run.run_id).await?.status, &RunStatus::Cancelled)?;
    }
    Ok(())
}

/// Checks that an `update_run` whose expected statuses do not include the stored one fails with
/// [`StoreError::Conflict`] naming the stored status, and changes nothing.
pub async fn update_cas_conflict_leaves_run_unchanged(store: Arc<dyn Store>) -> CheckResult {
    let mut run = sample_run("r-conflict");
    run.status = RunStatus::Completed;
    store.create_run(&run).await.ctx("create_run")?;
    let mut update = update_of(&run, vec![RunStatus::Running, RunStatus::Paused], RunStatus::Failed);
    update.output = Some(json!("overwritten"));
    update.generation = 9;
    ensure_err(
        "update_run expecting running|paused on a completed run",
        store.update_run(&update).await,
        "Conflict { actual: \"completed\" }",
        |e| matches!(e, StoreError::Conflict { run_id, actual, .. } if run_id == "r-conflict" && actual == "completed"),
    )?;
    ensure_eq("run after a conflicting update", &get(&store, "r-conflict").await?, &run)
}

/// Checks that `update_run` of an unknown run fails with [`StoreError::RunNotFound`] (with or without
/// expected statuses) and does not create the run.
pub async fn update_unknown_run_is_not_found(store: Arc<dyn Store>) -> CheckResult {
    let ghost = fresh_run("r-ghost", "demo", RunStatus::Running, 0);
    ensure_err(
        "update_run of an unknown run (expected empty)",
        store.update_run(&update_of(&ghost, vec![], RunStatus::Paused)).await,
        "RunNotFound",
        |e| *e == StoreError::RunNotFound("r-ghost".to_owned()),
    )?;
    ensure_err(
        "update_run of an unknown run (expected running)",
        store.update_run(&update_of(&ghost, vec![RunStatus::Running], RunStatus::Paused)).await,
        "RunNotFound",
        |e| *e == StoreError::RunNotFound("r-ghost".to_owned()),
    )?;
    ensure_eq("get_run after a failed update of an unknown run", &store.get_run("r-ghost").await.ctx("get_run")?, &None)
}

// ---------------------------------------------------------------------------------------------------------
// Journal.

/// Checks that `append` accepts only the next seq: skipping a seq or repeating one is a
/// [`StoreError::Conflict`] that leaves the journal unchanged, and the next seq is still accepted after.
pub async fn append_is_gapless(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-gapless", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    let chain = sealed_chain("r-gapless", 4);
    append_all(&store, &chain[..3]).await?;
    let is_conflict = |e: &StoreError| matches!(e, StoreError::Conflict { run_id, .. } if run_id == "r-gapless");
    ensure_err(
        "append skipping seq 3 (seq 5)",
        store.append(&sample_record("r-gapless", 5)).await,
        "Conflict",
        is_conflict,
    )?;
    ensure_err("append of an existing seq (1)", store.append(&chain[1]).await, "Conflict", is_conflict)?;
    ensure_eq(
        "journal after rejected appends",
        &store.load_journal("r-gapless").await.ctx("load_journal")?,
        &chain[..3].to_vec(),
    )?;
    store.append(&chain[3]).await.ctx("append of the next seq (3) after rejections")?;
    ensure_eq("journal after appending seq 3", &store.load_journal("r-gapless").await.ctx("load_journal")?, &chain)
}

/// Checks that a run's first record must have seq 0, and that a repeated or skipped seq after it is a
/// [`StoreError::Conflict`].
pub async fn append_rejects_out_of_order_seq(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-order", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    let is_conflict = |e: &StoreError| matches!(e, StoreError::Conflict { run_id, .. } if run_id == "r-order");
    ensure_err(
        "first append with seq 1 (not 0)",
        store.append(&sample_record("r-order", 1)).await,
        "Conflict",
        is_conflict,
    )?;
    ensure_eq(
        "journal after a rejected first append",
        &store.load_journal("r-order").await.ctx("load_journal")?.len(),
        &0,
    )?;
    store.append(&sample_record("r-order", 0)).await.ctx("append seq 0")?;
    ensure_err("append seq 0 twice", store.append(&sample_record("r-order", 0)).await, "Conflict", is_conflict)?;
    ensure_err("append seq 2 after 0", store.append(&sample_record("r-order", 2)).await, "Conflict", is_conflict)?;
    ensure_eq("journal length", &store.load_journal("r-order").await.ctx("load_journal")?.len(), &1)
}

/// Checks that `append` to an unknown run fails with [`StoreError::RunNotFound`] and does not create the run.
pub async fn append_to_unknown_run_is_not_found(store: Arc<dyn Store>) -> CheckResult {
    ensure_err("append to an unknown run", store.append(&sample_record("r-nobody", 0)).await, "RunNotFound", |e| {
        *e == StoreError::RunNotFound("r-nobody".to_owned())
    })?;
    ensure_eq("get_run after append to an unknown run", &store.get_run("r-nobody").await.ctx("get_run")?, &None)
}

/// Checks that `load_journal` returns records in ascending seq order.
pub async fn load_journal_returns_seq_order(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-load", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    let chain = sealed_chain("r-load", 25);
    append_all(&store, &chain).await?;
    let loaded = store.load_journal("r-load").await.ctx("load_journal")?;
    let seqs: Vec<u64> = loaded.iter().map(|r| r.seq).collect();
    ensure_eq("seqs of the loaded journal", &seqs, &(0..25).collect::<Vec<u64>>())?;
    // The tail from a position: equal to the whole journal's records from there, field for field.
    for from in [0u64, 1, 24, 25, 1000] {
        let tail = store.load_journal_from("r-load", from).await.ctx("load_journal_from")?;
        let expected: Vec<JournalRecord> = loaded.iter().filter(|r| r.seq >= from).cloned().collect();
        ensure_eq(&format!("load_journal_from({from})"), &tail, &expected)?;
    }
    ensure_eq(
        "load_journal_from of an unknown run",
        &store.load_journal_from("r-none", 3).await.ctx("load_journal_from")?.len(),
        &0,
    )
}

/// Checks that loaded records equal the appended ones field for field, that their hash chain verifies, and
/// that loading twice gives the same journal.
pub async fn journal_survives_and_chain_verifies(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-chain", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    let chain = sealed_chain("r-chain", 12);
    verify_chain(&chain).map_err(|e| format!("fixture chain is broken: {e}"))?;
    append_all(&store, &chain).await?;
    let loaded = store.load_journal("r-chain").await.ctx("load_journal")?;
    ensure_eq("journal record count", &loaded.len(), &chain.len())?;
    for (got, want) in loaded.iter().zip(&chain) {
        ensure_eq(&format!("record seq {}", want.seq), got, want)?;
    }
    verify_chain(&loaded).map_err(|e| format!("hash chain of the loaded journal: {e}"))?;
    // Loading twice gives the same journal.
    ensure_eq("second load_journal", &store.load_journal("r-chain").await.ctx("load_journal")?, &loaded)
}

/// `n` records of `run_id` whose usage carries details, sealed into a valid chain: cache reads, cache writes
/// and reasoning tokens in turn, all three, and none (every fourth record), each a different count.
pub fn sealed_chain_with_usage_details(run_id: &str, n: u64) -> Vec<JournalRecord> {
    let mut prev = GENESIS_HASH.to_owned();
    (0..n)
        .map(|seq| {
            let mut r = sample_record(run_id, seq);
            let base = TokenUsage::new(1000 + seq, 500 + seq);
            r.tokens = match seq % 4 {
                0 => base.with_cache(600 + seq, 0),
                1 => base.with_cache(0, 300 + seq),
                2 => base.with_cache(200 + seq, 100 + seq).with_reasoning(400 + seq),
                _ => base,
            };
            r.seal(&prev);
            prev.clone_from(&r.hash);
            r
        })
        .collect()
}

/// Checks that records whose usage carries details (cached, cache-write and reasoning tokens) load back
/// equal to the appended ones and their hash chain verifies (as `flujo lens verify` checks it), whether
/// appended one run at a time or from several runs at once (stores that batch appends write them together).
pub async fn usage_details_round_trip_and_verify(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-usage", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    let chain = sealed_chain_with_usage_details("r-usage", 8);
    append_all(&store, &chain).await?;
    let loaded = store.load_journal("r-usage").await.ctx("load_journal")?;
    ensure_eq("journal record count", &loaded.len(), &chain.len())?;
    for (got, want) in loaded.iter().zip(&chain) {
        ensure_eq(&format!("usage of record seq {}", want.seq), &got.tokens, &want.tokens)?;
        ensure_eq(&format!("record seq {}", want.seq), got, want)?;
    }
    verify_chain(&loaded).map_err(|e| format!("hash chain of the loaded journal: {e}"))?;
    ensure_eq(
        "tail from seq 2",
        &store.load_journal_from("r-usage", 2).await.ctx("load_journal_from")?,
        &chain[2..].to_vec(),
    )?;

    const RUNS: usize = 6;
    let mut tasks = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let run_id = format!("r-usage-{i}");
            store.create_run(&fresh_run(&run_id, "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
            for r in sealed_chain_with_usage_details(&run_id, 6) {
                store.append(&r).await.ctx(&format!("append {run_id} seq {}", r.seq))?;
            }
            Ok::<_, String>(())
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        task.await.map_err(|e| format!("writer task {i}: {e}"))??;
    }
    for i in 0..RUNS {
        let run_id = format!("r-usage-{i}");
        let loaded = store.load_journal(&run_id).await.ctx("load_journal")?;
        ensure_eq(&format!("journal of {run_id}"), &loaded, &sealed_chain_with_usage_details(&run_id, 6))?;
        verify_chain(&loaded).map_err(|e| format!("chain of {run_id}: {e}"))?;
    }
    Ok(())
}

/// Checks that interleaved appends to two runs land in separate journals, each with its own seq space.
pub async fn journals_are_isolated_per_run(store: Arc<dyn Store>) -> CheckResult {
    for id in ["r-a", "r-b"] {
        store.create_run(&fresh_run(id, "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    }
    let a = sealed_chain("r-a", 3);
    let b = sealed_chain("r-b", 5);
    // Interleaved: each run has its own seq space.
    for (i, rb) in b.iter().enumerate() {
        if let Some(ra) = a.get(i) {
            store.append(ra).await.ctx("append r-a")?;
        }
        store.append(rb).await.ctx("append r-b")?;
    }
    ensure_eq("journal of r-a", &store.load_journal("r-a").await.ctx("load_journal")?, &a)?;
    ensure_eq("journal of r-b", &store.load_journal("r-b").await.ctx("load_journal")?, &b)
}

/// Checks that `load_journal` is `Ok(vec![])` both for a run without records and for an unknown run.
pub async fn load_journal_of_unknown_run_is_empty(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-empty", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    ensure_eq("journal of a run with no records", &store.load_journal("r-empty").await.ctx("load_journal")?, &vec![])?;
    ensure_eq("journal of an unknown run", &store.load_journal("r-unknown").await.ctx("load_journal")?, &vec![])
}

/// Checks that changing a record after appending it, or a record or run after loading it, does not change
/// what the store holds.
pub async fn loaded_records_are_independent_copies(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-copy", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    let chain = sealed_chain("r-copy", 2);
    let mut appended = chain.clone();
    append_all(&store, &appended).await?;
    appended[0].step = "mutated after append".to_owned();
    let mut loaded = store.load_journal("r-copy").await.ctx("load_journal")?;
    loaded[1].output = Arc::new(json!("mutated after load"));
    ensure_eq(
        "journal after mutating caller copies",
        &store.load_journal("r-copy").await.ctx("load_journal")?,
        &chain,
    )?;

    let run = sample_run("r-copy-run");
    store.create_run(&run).await.ctx("create_run")?;
    let mut got = get(&store, "r-copy-run").await?;
    got.input = json!("mutated");
    ensure_eq("run after mutating a loaded copy", &get(&store, "r-copy-run").await?, &run)
}

/// Checks that `update_run` leaves the journal as it was, and that a paused run's journal still accepts
/// appends.
pub async fn update_run_does_not_touch_journal(store: Arc<dyn Store>) -> CheckResult {
    let run = fresh_run("r-both", "demo", RunStatus::Running, 0);
    store.create_run(&run).await.ctx("create_run")?;
    let chain = sealed_chain("r-both", 3);
    append_all(&store, &chain[..2]).await?;
    store.update_run(&update_of(&run, vec![RunStatus::Running], RunStatus::Paused)).await.ctx("update_run")?;
    store.append(&chain[2]).await.ctx("append after update_run (a paused run's journal still grows)")?;
    ensure_eq("journal across a status update", &store.load_journal("r-both").await.ctx("load_journal")?, &chain)
}

// ---------------------------------------------------------------------------------------------------------
// Listing.

async fn seed_runs(store: &Arc<dyn Store>) -> CheckResult {
    let runs = [
        ("r1", "alpha", RunStatus::Completed, 100),
        ("r2", "beta", RunStatus::Running, 200),
        ("r3", "alpha", RunStatus::Failed, 300),
        ("r4", "alpha", RunStatus::Running, 400),
        ("r5", "beta", RunStatus::Paused, 500),
        ("r6", "alpha", RunStatus::Running, 600),
    ];
    // Created out of time order: listing must sort, not rely on insertion order.
    for i in [3, 0, 5, 1, 4, 2] {
        let (id, pipeline, status, at) = runs[i];
        store.create_run(&fresh_run(id, pipeline, status, at)).await.ctx("create_run")?;
    }
    Ok(())
}

async fn list(store: &Arc<dyn Store>, filter: RunFilter) -> Result<Vec<String>, String> {
    let runs = store.list_runs(&filter).await.ctx(&format!("list_runs({filter:?})"))?;
    Ok(ids(&runs).into_iter().map(str::to_owned).collect())
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Checks that `list_runs` of an empty store is empty, and that without a filter it returns every run,
/// newest `created_at_ms` first, with the stored fields.
pub async fn list_runs_newest_first(store: Arc<dyn Store>) -> CheckResult {
    ensure_eq("list_runs of an empty store", &list(&store, RunFilter::default()).await?, &vec![])?;
    seed_runs(&store).await?;
    ensure_eq(
        "list_runs with no filter (newest first)",
        &list(&store, RunFilter::default()).await?,
        &strs(&["r6", "r5", "r4", "r3", "r2", "r1"]),
    )?;
    let all = store.list_runs(&RunFilter::default()).await.ctx("list_runs")?;
    let r3 = all.iter().find(|r| r.run_id == "r3").ok_or("r3 missing from list_runs")?;
    ensure_eq("listed record equals the stored one", r3, &fresh_run("r3", "alpha", RunStatus::Failed, 300))
}

/// Checks the `status`, `pipeline` and `since_ms` (inclusive) filters of `list_runs`, alone and combined,
/// and that the status filter sees a run's current status.
pub async fn list_runs_filters(store: Arc<dyn Store>) -> CheckResult {
    seed_runs(&store).await?;
    let f = |status, pipeline: Option<&str>, since_ms| {
        let mut filter = RunFilter::default();
        filter.status = status;
        filter.pipeline = pipeline.map(str::to_owned);
        filter.since_ms = since_ms;
        filter.limit = None;
        filter
    };
    ensure_eq(
        "status=running",
        &list(&store, f(Some(RunStatus::Running), None, None)).await?,
        &strs(&["r6", "r4", "r2"]),
    )?;
    ensure_eq("status=cancelled", &list(&store, f(Some(RunStatus::Cancelled), None, None)).await?, &vec![])?;
    ensure_eq("pipeline=alpha", &list(&store, f(None, Some("alpha"), None)).await?, &strs(&["r6", "r4", "r3", "r1"]))?;
    ensure_eq("pipeline=gamma", &list(&store, f(None, Some("gamma"), None)).await?, &vec![])?;
    ensure_eq(
        "since_ms=300 (inclusive)",
        &list(&store, f(None, None, Some(300))).await?,
        &strs(&["r6", "r5", "r4", "r3"]),
    )?;
    ensure_eq("since_ms=601", &list(&store, f(None, None, Some(601))).await?, &vec![])?;
    ensure_eq(
        "status=running, pipeline=alpha",
        &list(&store, f(Some(RunStatus::Running), Some("alpha"), None)).await?,
        &strs(&["r6", "r4"]),
    )?;
    ensure_eq(
        "status=running, pipeline=alpha, since_ms=450",
        &list(&store, f(Some(RunStatus::Running), Some("alpha"), Some(450))).await?,
        &strs(&["r6"]),
    )?;
    // Filters see the current status, not the one the run was created with.
    let r2 = fresh_run("r2", "beta", RunStatus::Running, 200);
    store.update_run(&update_of(&r2, vec![RunStatus::Running], RunStatus::Completed)).await.ctx("update_run r2")?;
    ensure_eq(
        "status=completed after an update",
        &list(&store, f(Some(RunStatus::Completed), None, None)).await?,
        &strs(&["r2", "r1"]),
    )
}

/// Checks that the `limit` of `list_runs` keeps the newest runs, that 0 returns none, and that it applies
/// after filtering.
pub async fn list_runs_limit(store: Arc<dyn Store>) -> CheckResult {
    seed_runs(&store).await?;
    let lim = |limit, pipeline: Option<&str>| {
        let mut filter = RunFilter::default();
        filter.limit = Some(limit);
        filter.pipeline = pipeline.map(str::to_owned);
        filter
    };
    ensure_eq("limit=2", &list(&store, lim(2, None)).await?, &strs(&["r6", "r5"]))?;
    ensure_eq("limit=0", &list(&store, lim(0, None)).await?, &vec![])?;
    ensure_eq("limit=100", &list(&store, lim(100, None)).await?.len(), &6)?;
    ensure_eq(
        "limit applies after filtering",
        &list(&store, lim(3, Some("alpha"))).await?,
        &strs(&["r6", "r4", "r3"]),
    )?;
    // Keyset pages (`before`), with a tie on `created_at_ms` across a page boundary.
    store.create_run(&fresh_run("r7", "alpha", RunStatus::Completed, 600)).await.ctx("create_run r7")?;
    let mut pages = Vec::new();
    let mut filter = lim(2, None);
    loop {
        let runs = store.list_runs(&filter).await.ctx(&format!("list_runs({filter:?})"))?;
        let Some(last) = runs.last() else { break };
        filter.before = Some((last.created_at_ms, last.run_id.clone()));
        pages.push(ids(&runs).into_iter().map(str::to_owned).collect::<Vec<_>>());
        if pages.len() > 10 {
            return Err("keyset pagination does not end".to_owned());
        }
    }
    let expected: Vec<Vec<String>> = vec![strs(&["r7", "r6"]), strs(&["r5", "r4"]), strs(&["r3", "r2"]), strs(&["r1"])];
    ensure_eq("pages of 2 with `before`", &pages, &expected)?;
    let mut filter = lim(10, Some("alpha"));
    filter.before = Some((600, "r7".to_owned()));
    ensure_eq("`before` with a filter", &list(&store, filter).await?, &strs(&["r6", "r4", "r3", "r1"]))
}

// ---------------------------------------------------------------------------------------------------------
// Blobs.

/// Checks that `put_blob` returns the 64-character blake3 hex of the bytes (see [`crate::blob_hash`]), that
/// storing the same bytes again returns the same hash, and that `get_blob` returns the bytes, the empty blob
/// included.
pub async fn blob_round_trip_and_idempotency(store: Arc<dyn Store>) -> CheckResult {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let h1 = store.put_blob(&data).await.ctx("put_blob")?;
    ensure_eq("put_blob returns the blake3 hex of the bytes", &h1, &blob_hash(&data))?;
    ensure_eq("hash length", &h1.len(), &64)?;
    let h2 = store.put_blob(&data).await.ctx("put_blob again")?;
    ensure_eq("put_blob is idempotent", &h2, &h1)?;
    ensure_eq("get_blob", &store.get_blob(&h1).await.ctx("get_blob")?, &Some(data.clone()))?;

    let empty = store.put_blob(b"").await.ctx("put_blob of empty bytes")?;
    ensure_eq("empty blob hash", &empty, &blob_hash(b""))?;
    ensure_eq("get_blob of the empty blob", &store.get_blob(&empty).await.ctx("get_blob")?, &Some(vec![]))?;

    let other = store.put_blob(b"other").await.ctx("put_blob other")?;
    ensure(other != h1, || "different bytes must get different hashes".to_owned())?;
    ensure_eq("get_blob other", &store.get_blob(&other).await.ctx("get_blob")?, &Some(b"other".to_vec()))?;
    ensure_eq("first blob is unaffected", &store.get_blob(&h1).await.ctx("get_blob")?, &Some(data))
}

/// Checks that `get_blob` of an unknown or malformed hash is `Ok(None)`.
pub async fn get_unknown_blob_is_none(store: Arc<dyn Store>) -> CheckResult {
    store.put_blob(b"present").await.ctx("put_blob")?;
    ensure_eq("get_blob of an unknown hash", &store.get_blob(&blob_hash(b"absent")).await.ctx("get_blob")?, &None)?;
    ensure_eq("get_blob of a malformed hash", &store.get_blob("not-a-hash").await.ctx("get_blob")?, &None)
}

// ---------------------------------------------------------------------------------------------------------
// Concurrency.

/// Checks that 16 tasks, each appending 40 records to its own run at the same time, all succeed and leave
/// complete journals whose chains verify.
pub async fn concurrent_appends_to_different_runs_all_land(store: Arc<dyn Store>) -> CheckResult {
    const RUNS: usize = 16;
    const RECORDS: u64 = 40;
    let mut tasks = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let run_id = format!("r-conc-{i}");
            store.create_run(&fresh_run(&run_id, "conc", RunStatus::Running, i as i64)).await.ctx("create_run")?;
            for r in sealed_chain(&run_id, RECORDS) {
                store.append(&r).await.ctx(&format!("append {run_id} seq {}", r.seq))?;
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(())
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        task.await.map_err(|e| format!("writer task {i}: {e}"))??;
    }
    for i in 0..RUNS {
        let run_id = format!("r-conc-{i}");
        let loaded = store.load_journal(&run_id).await.ctx("load_journal")?;
        ensure_eq(&format!("journal of {run_id}"), &loaded, &sealed_chain(&run_id, RECORDS))?;
        verify_chain(&loaded).map_err(|e| format!("chain of {run_id}: {e}"))?;
    }
    ensure_eq("run count", &store.list_runs(&RunFilter::default()).await.ctx("list_runs")?.len(), &RUNS)
}

/// Checks that when two tasks append every seq of one run at the same time, each seq lands exactly once and
/// every other attempt is a [`StoreError::Conflict`].
pub async fn concurrent_writers_on_one_run_are_detected(store: Arc<dyn Store>) -> CheckResult {
    const RECORDS: u64 = 30;
    store.create_run(&fresh_run("r-race", "demo", RunStatus::Running, 0)).await.ctx("create_run")?;
    // Two writers each try to write every seq. Because the journal only grows and only its next position
    // is accepted, every seq lands exactly once and every other attempt is a Conflict.
    let mut tasks = Vec::new();
    for writer in 0..2u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut conflicts) = (0u64, 0u64);
            for seq in 0..RECORDS {
                let mut r = sample_record("r-race", seq);
                r.step = format!("writer{writer}");
                match store.append(&r).await {
                    Ok(()) => ok += 1,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => return Err(format!("writer {writer} seq {seq}: unexpected error {e}")),
                }
                tokio::task::yield_now().await;
            }
            Ok((ok, conflicts))
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for task in tasks {
        let (o, c) = task.await.map_err(|e| format!("writer task: {e}"))??;
        ok += o;
        conflicts += c;
    }
    ensure_eq("successful appends across both writers", &ok, &RECORDS)?;
    ensure_eq("conflicting appends across both writers", &conflicts, &RECORDS)?;
    let loaded = store.load_journal("r-race").await.ctx("load_journal")?;
    let seqs: Vec<u64> = loaded.iter().map(|r| r.seq).collect();
    ensure_eq("seqs after the race", &seqs, &(0..RECORDS).collect::<Vec<_>>())
}

/// Checks that [`Store::describe`] returns a non-blank name.
pub async fn describe_is_not_empty(store: Arc<dyn Store>) -> CheckResult {
    let d = store.describe();
    ensure(!d.trim().is_empty(), || "describe() must name the store".to_owned())
}

// ---------------------------------------------------------------------------------------------------------
// Prefix lookup.

/// Checks that `find_runs_by_prefix` matches run ids byte-wise from their start (`%` and `_` are not
/// wildcards, non-ASCII prefixes work), orders them by `run_id` ascending, honours the limit, and that the
/// empty prefix matches every run.
pub async fn find_runs_by_prefix_is_exact_and_ordered(store: Arc<dyn Store>) -> CheckResult {
    let ids = ["abc2", "abd", "ab", "xabc", "ab%_", "abc1", "ab_x", "é2", "é1", "a\u{10FFFF}b", "b"];
    for (i, id) in ids.iter().enumerate() {
        store.create_run(&fresh_run(id, "demo", RunStatus::Completed, i as i64)).await.ctx("create_run")?;
    }
    let find = |prefix: &'static str, limit: usize| {
        let store = Arc::clone(&store);
        async move { store.find_runs_by_prefix(prefix, limit).await.ctx(&format!("find_runs_by_prefix({prefix:?})")) }
    };
    ensure_eq("prefix abc", &find("abc", 10).await?, &strs(&["abc1", "abc2"]))?;
    ensure_eq("prefix ab (byte order)", &find("ab", 10).await?, &strs(&["ab", "ab%_", "ab_x", "abc1", "abc2", "abd"]))?;
    ensure_eq("prefix ab, limit 2", &find("ab", 2).await?, &strs(&["ab", "ab%_"]))?;
    ensure_eq("limit 0", &find("ab", 0).await?, &vec![])?;
    ensure_eq("`%` is not a wildcard", &find("ab%", 10).await?, &strs(&["ab%_"]))?;
    ensure_eq("`_` is not a wildcard", &find("ab_", 10).await?, &strs(&["ab_x"]))?;
    ensure_eq("an exact id is its own prefix", &find("abd", 10).await?, &strs(&["abd"]))?;
    ensure_eq("no match", &find("zzz", 10).await?, &vec![])?;
    ensure_eq("not a substring search", &find("bc", 10).await?, &vec![])?;
    ensure_eq("non-ASCII prefix", &find("é", 10).await?, &strs(&["é1", "é2"]))?;
    ensure_eq("prefix ending in the last code point", &find("a\u{10FFFF}", 10).await?, &strs(&["a\u{10FFFF}b"]))?;
    let mut all: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    all.sort_unstable();
    ensure_eq("empty prefix matches every run", &find("", 100).await?, &all)
}

// ---------------------------------------------------------------------------------------------------------
// Retention.

async fn exists(store: &Arc<dyn Store>, run_id: &str) -> Result<bool, String> {
    Ok(store.get_run(run_id).await.ctx("get_run")?.is_some())
}

/// Checks that `delete_runs(cutoff, None)` deletes only finished runs created strictly before `cutoff`
/// together with their journals, that `running` and `paused` runs are deleted only when that status is
/// named, and that the returned count is the number of runs deleted.
pub async fn delete_runs_respects_cutoff_and_status(store: Arc<dyn Store>) -> CheckResult {
    ensure_eq("delete_runs on an empty store", &store.delete_runs(i64::MAX, None).await.ctx("delete_runs")?, &0)?;
    let runs = [
        ("old-completed", RunStatus::Completed, 10),
        ("old-failed", RunStatus::Failed, 20),
        ("old-cancelled", RunStatus::Cancelled, 30),
        ("old-running", RunStatus::Running, 10),
        ("old-paused", RunStatus::Paused, 10),
        ("at-cutoff", RunStatus::Completed, 50),
        ("new-completed", RunStatus::Completed, 100),
    ];
    for (id, status, at) in runs {
        store.create_run(&fresh_run(id, "demo", status, at)).await.ctx("create_run")?;
        append_all(&store, &sealed_chain(id, 2)).await?;
    }
    ensure_eq("finished runs created before 50", &store.delete_runs(50, None).await.ctx("delete_runs")?, &3)?;
    for (id, _, _) in &runs[..3] {
        ensure(!exists(&store, id).await?, || format!("{id} should have been deleted"))?;
        ensure_eq(&format!("journal of deleted {id}"), &store.load_journal(id).await.ctx("load_journal")?, &vec![])?;
    }
    for (id, status, at) in &runs[3..] {
        ensure_eq(&format!("kept run {id}"), &get(&store, id).await?, &fresh_run(id, "demo", *status, *at))?;
        ensure_eq(
            &format!("journal of kept run {id}"),
            &store.load_journal(id).await.ctx("load_journal")?,
            &sealed_chain(id, 2),
        )?;
    }
    ensure_eq("again: nothing left to delete", &store.delete_runs(50, None).await.ctx("delete_runs")?, &0)?;
    ensure_eq(
        "status=completed before 50 (the run at the cutoff is not before it)",
        &store.delete_runs(50, Some(RunStatus::Completed)).await.ctx("delete_runs")?,
        &0,
    )?;
    ensure_eq(
        "status=running names running runs explicitly",
        &store.delete_runs(50, Some(RunStatus::Running)).await.ctx("delete_runs")?,
        &1,
    )?;
    ensure(!exists(&store, "old-running").await?, || "old-running should have been deleted".to_owned())?;
    ensure(exists(&store, "old-paused").await?, || "status=running must not delete a paused run".to_owned())?;
    ensure_eq("status=paused", &store.delete_runs(50, Some(RunStatus::Paused)).await.ctx("delete_runs")?, &1)?;
    ensure_eq(
        "status=completed before 51",
        &store.delete_runs(51, Some(RunStatus::Completed)).await.ctx("delete_runs")?,
        &1,
    )?;
    ensure_eq("remaining runs", &list(&store, RunFilter::default()).await?, &strs(&["new-completed"]))
}

/// Checks that a deleted run can no longer be found or appended to, and that its id can then be used for a
/// new run whose journal starts empty.
pub async fn delete_runs_removes_journals_and_frees_the_run_id(store: Arc<dyn Store>) -> CheckResult {
    store.create_run(&fresh_run("r-gone", "demo", RunStatus::Completed, 1)).await.ctx("create_run")?;
    append_all(&store, &sealed_chain("r-gone", 3)).await?;
    ensure_eq("delete_runs", &store.delete_runs(2, None).await.ctx("delete_runs")?, &1)?;
    ensure_eq("find_runs_by_prefix after delete", &store.find_runs_by_prefix("r-", 10).await.ctx("find")?, &vec![])?;
    ensure_err("append to a deleted run", store.append(&sealed_chain("r-gone", 4)[3]).await, "RunNotFound", |e| {
        *e == StoreError::RunNotFound("r-gone".to_owned())
    })?;
    // The id can be used again, and the new run's journal starts from scratch.
    let again = fresh_run("r-gone", "again", RunStatus::Running, 5);
    store.create_run(&again).await.ctx("create_run with a deleted run's id")?;
    ensure_eq("recreated run", &get(&store, "r-gone").await?, &again)?;
    let chain = sealed_chain("r-gone", 2);
    append_all(&store, &chain).await?;
    ensure_eq("journal of the recreated run", &store.load_journal("r-gone").await.ctx("load_journal")?, &chain)
}

/// A JSON value of more than `bytes` bytes (large enough for a backend to store it as a blob).
fn large_value(tag: &str, bytes: usize) -> serde_json::Value {
    json!({"tag": tag, "text": "x".repeat(bytes), "n": [1, 2.5, -3]})
}

fn json_hash(v: &serde_json::Value) -> Result<String, String> {
    serde_json::to_vec(v).map(|b| blob_hash(&b)).map_err(|e| format!("serialize: {e}"))
}

/// Seals `records` into a chain from the genesis hash.
fn seal_all(mut records: Vec<JournalRecord>) -> Vec<JournalRecord> {
    let mut prev = GENESIS_HASH.to_owned();
    for r in &mut records {
        r.seal(&prev);
        prev.clone_from(&r.hash);
    }
    records
}

/// Checks that a run created after retention deleted every earlier run of its pipeline (and with them the
/// definition's blob) stores the definition again: a store that remembers which definitions it wrote (the SQL
/// stores keep the last one encoded) must not skip writing the blob.
pub async fn a_definition_deleted_with_its_runs_is_stored_again(store: Arc<dyn Store>) -> CheckResult {
    let def = Arc::new(Definition::from_json(
        json!({"name": "again", "steps": [{"name": "a"}], "doc": "x".repeat(100)}).to_string(),
    ));
    let mut first = fresh_run("def-1", "again", RunStatus::Completed, 1);
    first.definition = Some(Arc::clone(&def));
    store.create_run(&first).await.ctx("create_run")?;
    ensure_eq("deleted runs", &store.delete_runs(10, None).await.ctx("delete_runs")?, &1)?;
    ensure(store.get_blob(def.hash()).await.ctx("get_blob")?.is_none(), || {
        "the definition's blob must be deleted with its only run".to_owned()
    })?;
    let mut second = fresh_run("def-2", "again", RunStatus::Completed, 20);
    second.definition = Some(Arc::clone(&def));
    store.create_run(&second).await.ctx("create_run of the second run")?;
    // The SQL stores read the definition back from its blob: a missing blob fails here.
    ensure_eq("the second run, with its definition", &get(&store, "def-2").await?, &second)
}

/// Checks that `delete_runs` removes the blobs (large outputs, patch values, definitions) only the deleted
/// runs referenced, keeps those a remaining run still references, and keeps a blob stored with `put_blob`
/// that no run references.
pub async fn delete_runs_keeps_blobs_still_referenced(store: Arc<dyn Store>) -> CheckResult {
    const BIG: usize = 20_000;
    let shared_out = large_value("shared-output", BIG);
    let shared_patch = large_value("shared-patch", BIG);
    let only_old = large_value("only-old", BIG);
    let only_old_patch = large_value("only-old-patch", BIG);
    let shared_def =
        Arc::new(Definition::from_json(json!({"name": "shared", "steps": [], "doc": "d".repeat(BIG)}).to_string()));
    let own_def =
        Arc::new(Definition::from_json(json!({"name": "own", "steps": [], "doc": "o".repeat(BIG)}).to_string()));

    // `keep` is new; `old-a` shares its definition and large values; `old-b` has only values of its own.
    let mut keep = fresh_run("keep", "shared", RunStatus::Completed, 100);
    keep.definition = Some(Arc::clone(&shared_def));
    let mut old_a = fresh_run("old-a", "shared", RunStatus::Completed, 1);
    old_a.definition = Some(Arc::clone(&shared_def));
    let mut old_b = fresh_run("old-b", "own", RunStatus::Failed, 2);
    old_b.definition = Some(Arc::clone(&own_def));

    let with = |run_id: &str, seq: u64, output: &serde_json::Value, patch: Option<&serde_json::Value>| {
        let mut r = sample_record(run_id, seq);
        r.output = Arc::new(output.clone());
        if let Some(p) = patch {
            r.patch = vec![PatchOp::Set { path: vec!["doc".to_owned()], value: Arc::new(p.clone()) }];
        }
        r
    };
    let keep_chain =
        seal_all(vec![with("keep", 0, &shared_out, None), with("keep", 1, &json!(1), Some(&shared_patch))]);
    let a_chain = seal_all(vec![
        with("old-a", 0, &only_old, Some(&shared_out)),
        with("old-a", 1, &shared_patch, Some(&only_old_patch)),
    ]);
    let b_chain = seal_all(vec![with("old-b", 0, &json!("small"), Some(&only_old_patch))]);
    for (run, chain) in [(&keep, &keep_chain), (&old_a, &a_chain), (&old_b, &b_chain)] {
        store.create_run(run).await.ctx("create_run")?;
        append_all(&store, chain).await?;
    }
    let user_blob = store.put_blob(b"a blob no run references").await.ctx("put_blob")?;

    ensure_eq("deleted runs", &store.delete_runs(50, None).await.ctx("delete_runs")?, &2)?;
    ensure_eq("kept run (its shared definition survives)", &get(&store, "keep").await?, &keep)?;
    let loaded = store.load_journal("keep").await.ctx("load_journal of the kept run")?;
    ensure_eq("kept journal (values shared with deleted runs survive)", &loaded, &keep_chain)?;
    verify_chain(&loaded).map_err(|e| format!("chain of the kept run: {e}"))?;
    ensure(store.get_blob(&user_blob).await.ctx("get_blob")?.is_some(), || {
        "a blob stored with put_blob that no run referenced must survive delete_runs".to_owned()
    })?;
    for (what, hash) in [
        ("an output only a deleted run had", json_hash(&only_old)?),
        ("a patch value only deleted runs had", json_hash(&only_old_patch)?),
        ("a definition only a deleted run had", own_def.hash().to_owned()),
    ] {
        ensure(store.get_blob(&hash).await.ctx("get_blob")?.is_none(), || {
            format!("the blob of {what} must be deleted with its runs")
        })?;
    }

    ensure_eq("deleting the last run", &store.delete_runs(i64::MAX, None).await.ctx("delete_runs")?, &1)?;
    for (what, hash) in [
        ("shared output", json_hash(&shared_out)?),
        ("shared patch value", json_hash(&shared_patch)?),
        ("shared definition", shared_def.hash().to_owned()),
    ] {
        ensure(store.get_blob(&hash).await.ctx("get_blob")?.is_none(), || {
            format!("the blob of the {what} must be deleted once no run references it")
        })?;
    }
    ensure(store.get_blob(&user_blob).await.ctx("get_blob")?.is_some(), || "the unreferenced user blob".to_owned())
}

// ---------------------------------------------------------------------------------------------------------
// System state.

/// Checks that `set_state` then `get_state` returns the value exactly, that a second `set_state` replaces
/// it, that a stored `null` is present, and that keys are exact (non-ASCII allowed, no prefix match).
pub async fn system_state_round_trip(store: Arc<dyn Store>) -> CheckResult {
    ensure_eq("get_state of an unknown key", &store.get_state("nope").await.ctx("get_state")?, &None)?;
    let value = json!({"version": 3, "f": 0.1 + 0.2, "s": "héllo ✓", "list": [null, true, {"z": 1, "a": 2}]});
    store.set_state("config", &value).await.ctx("set_state")?;
    ensure_eq("get_state after set_state", &store.get_state("config").await.ctx("get_state")?, &Some(value))?;
    store.set_state("config", &json!("replaced")).await.ctx("set_state again")?;
    ensure_eq("set_state replaces", &store.get_state("config").await.ctx("get_state")?, &Some(json!("replaced")))?;
    store.set_state("null-valued", &serde_json::Value::Null).await.ctx("set_state null")?;
    ensure_eq(
        "a stored null is present",
        &store.get_state("null-valued").await.ctx("get_state")?,
        &Some(serde_json::Value::Null),
    )?;
    store.set_state("ключ/🔑", &json!(7)).await.ctx("set_state with a non-ASCII key")?;
    ensure_eq("non-ASCII key", &store.get_state("ключ/🔑").await.ctx("get_state")?, &Some(json!(7)))?;
    ensure_eq("keys are isolated", &store.get_state("config").await.ctx("get_state")?, &Some(json!("replaced")))?;
    ensure_eq("keys are exact (no prefix match)", &store.get_state("conf").await.ctx("get_state")?, &None)
}

/// Checks `list_state`: exactly the keys starting with the prefix (a `%` or `_` in it is literal, non-ASCII
/// keys included), in key order, with their values; and `delete_state`: true once, then false, and the key
/// is gone from both `get_state` and `list_state`.
pub async fn system_state_lists_by_prefix_and_deletes(store: Arc<dyn Store>) -> CheckResult {
    for (key, value) in [
        ("worker/b", json!({"n": 2})),
        ("worker/a", json!({"n": 1})),
        ("worker/é", json!(null)),
        ("workers", json!("not under worker/")),
        ("schedule/x", json!(3)),
        ("work%/z", json!(4)),
    ] {
        store.set_state(key, &value).await.ctx("set_state")?;
    }
    let listed = store.list_state("worker/").await.ctx("list_state")?;
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    ensure_eq("keys under worker/, in order", &keys, &vec!["worker/a", "worker/b", "worker/é"])?;
    ensure_eq("values come with their keys", &listed[0].1, &json!({"n": 1}))?;
    let literal = store.list_state("work%").await.ctx("list_state with %")?;
    ensure_eq("% is literal", &literal.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), &vec!["work%/z"])?;
    ensure_eq("no match", &store.list_state("nothing/").await.ctx("list_state")?.len(), &0)?;
    ensure_eq("delete_state of a present key", &store.delete_state("worker/a").await.ctx("delete_state")?, &true)?;
    ensure_eq("delete_state again", &store.delete_state("worker/a").await.ctx("delete_state")?, &false)?;
    ensure_eq("deleted key is gone", &store.get_state("worker/a").await.ctx("get_state")?, &None)?;
    let after = store.list_state("worker/").await.ctx("list_state")?;
    ensure_eq(
        "list after delete",
        &after.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        &vec!["worker/b", "worker/é"],
    )
}

// ---------------------------------------------------------------------------------------------------------
// Evaluations.

fn evaluation(run: &str, pipeline: &str, path: Option<&str>, at: i64) -> flujo_core::EvaluationRecord {
    flujo_core::EvaluationRecord::pending(run, pipeline, path, "mock:json", json!({"input": "in", "output": at}), at)
}

/// Checks `create_evaluation` (true once, false for the same id, nothing changed), `update_evaluation`
/// (replaces, false for an unknown id), and `list_evaluations` (oldest first; by run, pipeline, time, status;
/// limited), with the record round-tripping exactly.
pub async fn evaluations_are_created_once_updated_and_listed(store: Arc<dyn Store>) -> CheckResult {
    let a = evaluation("run-a", "p1", None, 1_000);
    let b = evaluation("run-a", "p1", Some("0/1"), 2_000);
    let c = evaluation("run-b", "p2", None, 3_000);
    for e in [&c, &a, &b] {
        ensure_eq("create_evaluation of a new id", &store.create_evaluation(e).await.ctx("create_evaluation")?, &true)?;
    }
    let mut twice = a.clone();
    twice.snapshot = json!("other");
    ensure_eq("create_evaluation of an existing id", &store.create_evaluation(&twice).await.ctx("create")?, &false)?;
    let all = store.list_evaluations(&flujo_core::EvaluationFilter::new()).await.ctx("list_evaluations")?;
    ensure_eq("list: oldest first, exact records", &all, &vec![a.clone(), b.clone(), c.clone()])?;
    let mut done = b.clone();
    done.status = flujo_core::EvaluationStatus::Done;
    done.score = Some(0.75);
    done.reason = Some("clear and polite ✓".into());
    done.tokens = 42;
    done.cost_usd = 0.001;
    done.updated_at_ms = 5_000;
    ensure_eq("update_evaluation", &store.update_evaluation(&done).await.ctx("update_evaluation")?, &true)?;
    let unknown = evaluation("run-z", "p9", None, 9);
    ensure_eq("update of an unknown id", &store.update_evaluation(&unknown).await.ctx("update")?, &false)?;
    let list = |f: flujo_core::EvaluationFilter| {
        let store = store.clone();
        async move { store.list_evaluations(&f).await.map(|v| v.into_iter().map(|e| e.evaluation_id).collect::<Vec<_>>()) }
    };
    use flujo_core::{EvaluationFilter as F, EvaluationStatus as S};
    ensure_eq(
        "by run",
        &list(F::new().run("run-a")).await.ctx("list")?,
        &vec![a.evaluation_id.clone(), b.evaluation_id.clone()],
    )?;
    ensure_eq("by pipeline", &list(F::new().pipeline("p2")).await.ctx("list")?, &vec![c.evaluation_id.clone()])?;
    ensure_eq(
        "since",
        &list(F::new().since_ms(2_000)).await.ctx("list")?,
        &vec![b.evaluation_id.clone(), c.evaluation_id.clone()],
    )?;
    ensure_eq("by status", &list(F::new().status(S::Done)).await.ctx("list")?, &vec![b.evaluation_id.clone()])?;
    ensure_eq("limit", &list(F::new().limit(1)).await.ctx("list")?, &vec![a.evaluation_id.clone()])?;
    let got = store.list_evaluations(&F::new().status(S::Done)).await.ctx("list")?;
    ensure_eq("an updated record round-trips", &got, &vec![done])
}

/// Checks `claim_evaluations`: pending ones only, oldest first, up to the limit, each with the owner and
/// lease; a held one is not claimed again until its lease expires; concurrent claims never share one.
pub async fn evaluation_claims_are_exclusive_and_expire(store: Arc<dyn Store>) -> CheckResult {
    for i in 0..6 {
        store.create_evaluation(&evaluation(&format!("r{i}"), "p", None, 100 + i)).await.ctx("create")?;
    }
    let mut finished = evaluation("r9", "p", None, 1);
    finished.status = flujo_core::EvaluationStatus::Failed;
    store.create_evaluation(&finished).await.ctx("create")?;
    let first = store.claim_evaluations("w1", 1_000, 2_000, 2).await.ctx("claim")?;
    let ids: Vec<&str> = first.iter().map(|e| e.run_id.as_str()).collect();
    ensure_eq("oldest pending first, up to the limit", &ids, &vec!["r0", "r1"])?;
    ensure_eq("owner set", &first[0].owner.as_deref(), &Some("w1"))?;
    ensure_eq("lease set", &first[0].lease_expires_at_ms, &Some(2_000))?;
    // Concurrent claims take disjoint evaluations.
    let tasks: Vec<_> = ["w2", "w3"]
        .into_iter()
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_evaluations(w, 1_000, 2_000, 3).await })
        })
        .collect();
    let mut taken: Vec<String> = Vec::new();
    for t in tasks {
        let got = t.await.map_err(|e| format!("a claiming task failed: {e}"))?.ctx("claim")?;
        taken.extend(got.into_iter().map(|e| e.run_id));
    }
    taken.sort();
    ensure_eq(
        "concurrent claims share nothing",
        &taken,
        &vec!["r2".to_owned(), "r3".into(), "r4".into(), "r5".into()],
    )?;
    ensure_eq(
        "nothing left while leases hold",
        &store.claim_evaluations("w4", 1_500, 3_000, 10).await.ctx("claim")?.len(),
        &0,
    )?;
    let again = store.claim_evaluations("w4", 2_500, 9_000, 10).await.ctx("claim after expiry")?;
    ensure_eq("expired leases are claimed again (never a finished one)", &again.len(), &6)?;
    ensure_eq("new owner", &again[0].owner.as_deref(), &Some("w4"))
}

// ---------------------------------------------------------------------------------------------------------
// Ownership.

/// Checks `update_run` with `expected_owner`: expecting another owner, or no owner while one is stored, is a
/// [`StoreError::Conflict`] (the stored owner is kept); expecting the stored owner applies the update.
pub async fn update_cas_on_owner(store: Arc<dyn Store>) -> CheckResult {
    let mut run = fresh_run("r-own", "demo", RunStatus::Running, 1);
    run.owner = Some(sample_owner("a"));
    run.lease_expires_at_ms = Some(100);
    store.create_run(&run).await.ctx("create_run")?;
    let mut steal = update_of(&run, vec![RunStatus::Running], RunStatus::Running);
    steal.owner = Some(sample_owner("b"));
    steal.expected_owner = Some(Some("someone-else".to_owned()));
    ensure_err("update expecting another owner", store.update_run(&steal).await, "Conflict", |e| {
        matches!(e, StoreError::Conflict { .. })
    })?;
    ensure_eq("owner after a rejected steal", &get(&store, "r-own").await?.owner, &run.owner)?;
    steal.expected_owner = Some(Some("a".to_owned()));
    store.update_run(&steal).await.ctx("update expecting the stored owner")?;
    ensure_eq("owner after the takeover", &get(&store, "r-own").await?.owner, &Some(sample_owner("b")))?;
    // Expecting "no owner" fails while someone owns it, and works once the owner is cleared.
    let mut claim = update_of(&run, vec![RunStatus::Running], RunStatus::Paused);
    claim.owner = None;
    claim.lease_expires_at_ms = None;
    claim.expected_owner = Some(None);
    ensure_err("update expecting no owner", store.update_run(&claim).await, "Conflict", |e| {
        matches!(e, StoreError::Conflict { .. })
    })?;
    claim.expected_owner = Some(Some("b".to_owned()));
    store.update_run(&claim).await.ctx("release by the owner")?;
    let got = get(&store, "r-own").await?;
    ensure_eq("owner after release", &got.owner, &None)?;
    ensure_eq("lease after release", &got.lease_expires_at_ms, &None)
}

fn queued(run_id: &str, queue: &str, created_at_ms: i64) -> RunRecord {
    let mut run = fresh_run(run_id, "demo", RunStatus::Queued, created_at_ms);
    run.queue = Some(queue.to_owned());
    run.owner = None;
    run.lease_expires_at_ms = None;
    run
}

/// Checks that `claim_runs` takes `queued` runs of the asked queues only, oldest first, at most `limit`, and
/// makes them `running` under the claimer's owner and lease; claimed runs are not claimed again.
pub async fn claims_take_queued_runs_oldest_first(store: Arc<dyn Store>) -> CheckResult {
    for (id, queue, at) in [("q-3", "a", 30), ("q-1", "a", 10), ("q-2", "b", 20), ("q-x", "other", 5), ("q-4", "a", 40)]
    {
        store.create_run(&queued(id, queue, at)).await.ctx("create_run")?;
    }
    // A run without a queue, and a paused run of the queue, are never claimed.
    store.create_run(&fresh_run("q-none", "demo", RunStatus::Running, 1)).await.ctx("create_run")?;
    let mut paused = queued("q-paused", "a", 2);
    paused.status = RunStatus::Paused;
    store.create_run(&paused).await.ctx("create_run")?;
    let queues = vec!["a".to_owned(), "b".to_owned()];
    let claim = ClaimRequest::new(queues.clone(), sample_owner("w1"), 1000, 5000, 3);
    let got = store.claim_runs(&claim).await.ctx("claim")?;
    ensure_eq("claimed, oldest first", &got, &vec!["q-1".to_owned(), "q-2".to_owned(), "q-3".to_owned()])?;
    let run = get(&store, "q-2").await?;
    ensure_eq("claimed status", &run.status, &RunStatus::Running)?;
    ensure_eq("claimed owner", &run.owner, &Some(sample_owner("w1")))?;
    ensure_eq("claimed lease", &run.lease_expires_at_ms, &Some(5000))?;
    ensure_eq("claimed queue kept", &run.queue, &Some("b".to_owned()))?;
    let again = store.claim_runs(&ClaimRequest::new(queues, sample_owner("w2"), 1000, 5000, 10)).await.ctx("claim")?;
    ensure_eq("second claim", &again, &vec!["q-4".to_owned()])?;
    ensure_eq("unlisted queue untouched", &get(&store, "q-x").await?.status, &RunStatus::Queued)?;
    ensure_eq("paused untouched", &get(&store, "q-paused").await?.status, &RunStatus::Paused)?;
    let none = store
        .claim_runs(&ClaimRequest::new(vec!["a".to_owned()], sample_owner("w3"), 1000, 5000, 0))
        .await
        .ctx("claim with limit 0")?;
    ensure_eq("limit 0", &none, &Vec::<String>::new())
}

/// Checks that a `running` run of a queue is claimed only once its lease has expired (its owner is gone),
/// and that the new owner's fenced appends land while the old owner's fail.
pub async fn claims_take_over_expired_leases_only(store: Arc<dyn Store>) -> CheckResult {
    let mut live = queued("l-live", "a", 1);
    live.status = RunStatus::Running;
    live.owner = Some(sample_owner("old"));
    live.lease_expires_at_ms = Some(2000);
    store.create_run(&live).await.ctx("create_run")?;
    let claim = |now| ClaimRequest::new(vec!["a".to_owned()], sample_owner("new"), now, now + 1000, 10);
    ensure_eq("claim before expiry", &store.claim_runs(&claim(1999)).await.ctx("claim")?, &Vec::<String>::new())?;
    ensure_eq("claim after expiry", &store.claim_runs(&claim(2001)).await.ctx("claim")?, &vec!["l-live".to_owned()])?;
    let chain = sealed_chain("l-live", 2);
    ensure_err("append by the expired owner", store.append_fenced(&chain[0], "old").await, "Conflict", |e| {
        matches!(e, StoreError::Conflict { .. })
    })?;
    store.append_fenced(&chain[0], "new").await.ctx("append by the new owner")?;
    ensure_eq("owner", &get(&store, "l-live").await?.owner, &Some(sample_owner("new")))
}

/// Checks that concurrent claims of one queue never return the same run, and together take them all.
pub async fn concurrent_claims_never_share_a_run(store: Arc<dyn Store>) -> CheckResult {
    for i in 0..40 {
        store.create_run(&queued(&format!("c-{i:02}"), "a", i)).await.ctx("create_run")?;
    }
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claim = ClaimRequest::new(vec!["a".to_owned()], sample_owner(&format!("w{w}")), 100, 10_000, 3);
                    let got = store.claim_runs(&claim).await?;
                    if got.is_empty() {
                        return Ok::<_, StoreError>(mine);
                    }
                    mine.extend(got);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| format!("claimer task: {e}"))?.ctx("claim")?);
    }
    all.sort();
    let expected: Vec<String> = (0..40).map(|i| format!("c-{i:02}")).collect();
    ensure_eq("every run claimed exactly once", &all, &expected)
}

/// Checks [`ClaimRequest::max_running`]: concurrent claimers of a queue limited to 3 running runs take 3
/// together; a finished run makes room for one more; an expired lease does not count as running; other queues
/// are not limited.
pub async fn claims_respect_a_queues_global_limit(store: Arc<dyn Store>) -> CheckResult {
    for i in 0..10 {
        store.create_run(&queued(&format!("m-{i:02}"), "limited", i)).await.ctx("create_run")?;
        store.create_run(&queued(&format!("f-{i:02}"), "free", i)).await.ctx("create_run")?;
    }
    let claim = |w: usize| {
        ClaimRequest::new(vec!["limited".to_owned()], sample_owner(&format!("w{w}")), 100, 10_000, 2)
            .with_max_running("limited", 3)
    };
    let tasks: Vec<_> = (0..6)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_runs(&claim(w)).await })
        })
        .collect();
    let mut got = 0;
    for t in tasks {
        got += t.await.map_err(|e| format!("claimer task: {e}"))?.ctx("claim")?.len();
    }
    ensure_eq("runs claimed together under a limit of 3", &got, &3)?;
    ensure_eq("no room left", &store.claim_runs(&claim(9)).await.ctx("claim")?.len(), &0)?;
    // One finishes: room for one more.
    let done = get(&store, "m-00").await?;
    let mut finish = update_of(&done, vec![RunStatus::Running], RunStatus::Completed);
    finish.owner = None;
    finish.lease_expires_at_ms = None;
    store.update_run(&finish).await.ctx("finish")?;
    ensure_eq("room after a run finished", &store.claim_runs(&claim(9)).await.ctx("claim")?.len(), &1)?;
    // Leases that expired do not count: at a time after them, three more can run.
    let later = ClaimRequest::new(vec!["limited".to_owned()], sample_owner("late"), 20_000, 30_000, 10)
        .with_max_running("limited", 3);
    ensure_eq("claims after every lease expired", &store.claim_runs(&later).await.ctx("claim")?.len(), &3)?;
    let free =
        ClaimRequest::new(vec!["free".to_owned()], sample_owner("w"), 100, 10_000, 10).with_max_running("limited", 3);
    ensure_eq("an unlimited queue", &store.claim_runs(&free).await.ctx("claim")?.len(), &10)
}

/// Checks [`ClaimRequest::rate_limits`]: a queue limited to 2 claims per second yields 2 runs, then none
/// within the second (even with runs waiting and room to run them), then 2 more once it has passed.
pub async fn claims_respect_a_queues_rate_limit(store: Arc<dyn Store>) -> CheckResult {
    for i in 0..6 {
        store.create_run(&queued(&format!("r-{i:02}"), "paced", i)).await.ctx("create_run")?;
    }
    let claim = |now: i64| {
        ClaimRequest::new(vec!["paced".to_owned()], sample_owner("w"), now, now + 100_000, 10)
            .with_rate_limit("paced", 2, 1000)
    };
    ensure_eq("first claim", &store.claim_runs(&claim(10_000)).await.ctx("claim")?.len(), &2)?;
    ensure_eq("within the period", &store.claim_runs(&claim(10_500)).await.ctx("claim")?.len(), &0)?;
    ensure_eq("the next period", &store.claim_runs(&claim(11_001)).await.ctx("claim")?.len(), &2)?;
    ensure_eq("within it", &store.claim_runs(&claim(11_900)).await.ctx("claim")?.len(), &0)
}

/// Checks that `append_fenced` appends while the run is `running` under the given owner, and otherwise is a
/// [`StoreError::Conflict`] (another owner, no owner, a paused run) or [`StoreError::RunNotFound`] that writes
/// nothing.
pub async fn fenced_appends_need_the_running_owner(store: Arc<dyn Store>) -> CheckResult {
    let mut run = fresh_run("r-fence", "demo", RunStatus::Running, 1);
    run.owner = Some(sample_owner("a"));
    store.create_run(&run).await.ctx("create_run")?;
    let chain = sealed_chain("r-fence", 3);
    store.append_fenced(&chain[0], "a").await.ctx("fenced append by the owner")?;
    ensure_err("fenced append by another owner", store.append_fenced(&chain[1], "b").await, "Conflict", |e| {
        matches!(e, StoreError::Conflict { .. })
    })?;
    ensure_eq("records after a stranger's append", &store.load_journal("r-fence").await.ctx("load")?.len(), &1)?;
    store.append_fenced(&chain[1], "a").await.ctx("second fenced append by the owner")?;
    let mut pause = update_of(&run, vec![RunStatus::Running], RunStatus::Paused);
    pause.owner = None;
    pause.lease_expires_at_ms = None;
    store.update_run(&pause).await.ctx("pause")?;
    ensure_err("fenced append to a paused run", store.append_fenced(&chain[2], "a").await, "Conflict", |e| {
        matches!(e, StoreError::Conflict { .. })
    })?;
    ensure_err(
        "fenced append to an unknown run",
        store.append_fenced(&sample_record("r-none", 0), "a").await,
        "RunNotFound",
        |e| matches!(e, StoreError::RunNotFound(_)),
    )?;
    ensure_eq("records at the end", &store.load_journal("r-fence").await.ctx("load")?.len(), &2)
}

/// Checks fencing across a takeover: once another owner has taken the run over (a compare-and-set on the
/// owner), the old owner's appends fail while the new owner's land, whatever their order.
pub async fn a_taken_over_run_fences_its_old_owner_out(store: Arc<dyn Store>) -> CheckResult {
    let mut run = fresh_run("r-take", "demo", RunStatus::Running, 1);
    run.owner = Some(sample_owner("old"));
    store.create_run(&run).await.ctx("create_run")?;
    let chain = sealed_chain("r-take", 3);
    store.append_fenced(&chain[0], "old").await.ctx("append by the first owner")?;
    let mut take = update_of(&run, vec![RunStatus::Running], RunStatus::Running);
    take.owner = Some(sample_owner("new"));
    take.expected_owner = Some(Some("old".to_owned()));
    store.update_run(&take).await.ctx("takeover")?;
    ensure_err(
        "append by the old owner after the takeover",
        store.append_fenced(&chain[1], "old").await,
        "Conflict",
        |e| matches!(e, StoreError::Conflict { .. }),
    )?;
    store.append_fenced(&chain[1], "new").await.ctx("append by the new owner")?;
    store.append_fenced(&chain[2], "new").await.ctx("second append by the new owner")?;
    let journal = store.load_journal("r-take").await.ctx("load")?;
    ensure_eq("records", &journal.len(), &3)?;
    verify_chain(&journal).map_err(|e| format!("chain: {e}"))
}

/// Checks that `heartbeat` by the owner of a `running` run moves its lease expiry; by another owner it is a
/// [`StoreError::Conflict`] that leaves the lease as it was; on a paused run it is a
/// [`StoreError::Conflict`]; on an unknown run it is [`StoreError::RunNotFound`].
pub async fn heartbeat_extends_only_the_owners_lease(store: Arc<dyn Store>) -> CheckResult {
    let mut run = fresh_run("r-hb", "demo", RunStatus::Running, 1);
    run.owner = Some(sample_owner("a"));
    run.lease_expires_at_ms = Some(100);
    store.create_run(&run).await.ctx("create_run")?;
    store.heartbeat("r-hb", "a", 200).await.ctx("heartbeat by the owner")?;
    ensure_eq("lease after heartbeat", &get(&store, "r-hb").await?.lease_expires_at_ms, &Some(200))?;
    ensure_err("heartbeat by another owner", store.heartbeat("r-hb", "b", 300).await, "Conflict", |e| {
        matches!(e, StoreError::Conflict { .. })
    })?;
    ensure_eq("lease after a stranger's heartbeat", &get(&store, "r-hb").await?.lease_expires_at_ms, &Some(200))?;
    ensure_err("heartbeat of an unknown run", store.heartbeat("r-none", "a", 1).await, "RunNotFound", |e| {
        matches!(e, StoreError::RunNotFound(_))
    })?;
    let mut pause = update_of(&run, vec![RunStatus::Running], RunStatus::Paused);
    pause.owner = None;
    pause.lease_expires_at_ms = None;
    store.update_run(&pause).await.ctx("pause")?;
    ensure_err("heartbeat of a paused run", store.heartbeat("r-hb", "a", 400).await, "Conflict", |e| {
        matches!(e, StoreError::Conflict { .. })
    })
}
