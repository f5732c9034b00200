//! Test harness shared by the engine's integration tests: scenario drivers, a store that "crashes" after a
//! chosen number of committed records, and helpers to build pipelines concisely.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::cache::MemoryCache;
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_skills::{BuiltinRegistry, CallCounter, CountingSkill};
use flujo_store::MemoryStore;
use serde_json::{json, Value};

/// A store wrapper that lets `budget` journal appends through, then fails every write (a simulated crash).
pub struct CrashingStore {
    pub inner: Arc<MemoryStore>,
    budget: AtomicU64,
    crashed: AtomicBool,
    pub rejected_paths: Mutex<Vec<String>>,
    /// The append of this path commits, then reports a failure (a commit whose answer was lost).
    lost_answer: Option<String>,
}

impl CrashingStore {
    pub fn new(inner: Arc<MemoryStore>, budget: u64) -> Self {
        CrashingStore {
            inner,
            budget: AtomicU64::new(budget),
            crashed: AtomicBool::new(false),
            rejected_paths: Mutex::default(),
            lost_answer: None,
        }
    }
    /// The same store, except that the append of `path` commits and then reports a failure.
    pub fn losing_the_answer_of(mut self, path: &str) -> Self {
        self.lost_answer = Some(path.to_owned());
        self
    }
    fn down(&self) -> StoreError {
        StoreError::Unavailable("simulated crash".into())
    }
}

#[async_trait]
impl RunStore for CrashingStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        self.inner.create_run(run).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.inner.get_run(run_id).await
    }
    async fn update_run(&self, update: &RunUpdate) -> Result<(), StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        self.inner.update_run(update).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.list_runs(filter).await
    }
    async fn heartbeat(&self, run_id: &str, owner_id: &str, lease: i64) -> Result<(), StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        self.inner.heartbeat(run_id, owner_id, lease).await
    }
    async fn find_runs_by_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.find_runs_by_prefix(prefix, limit).await
    }
    async fn delete_runs(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<u64, StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        self.inner.delete_runs(older_than_ms, status).await
    }
}

#[async_trait]
impl JournalStore for CrashingStore {
    async fn append(&self, record: &JournalRecord) -> Result<(), StoreError> {
        let ok = self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1)).is_ok();
        if !ok || self.crashed.load(Ordering::SeqCst) {
            self.crashed.store(true, Ordering::SeqCst);
            self.rejected_paths.lock().unwrap().push(record.path.clone());
            return Err(self.down());
        }
        self.inner.append(record).await?;
        if self.lost_answer.as_deref() == Some(record.path.as_str()) {
            return Err(StoreError::Unavailable("the commit's answer was lost".into()));
        }
        Ok(())
    }
    async fn load_journal(&self, run_id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        self.inner.load_journal(run_id).await
    }
}

#[async_trait]
impl BlobStore for CrashingStore {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.inner.put_blob(bytes).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(hash).await
    }
}

/// Keeps no evaluations (the trait's defaults refuse).
impl flujo_core::EvaluationStore for CrashingStore {}

#[async_trait]
impl SystemStateStore for CrashingStore {
    async fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get_state(key).await
    }
    async fn set_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        self.inner.set_state(key, value).await
    }
}

impl Store for CrashingStore {
    fn describe(&self) -> String {
        "crashing+memory://".into()
    }
}

/// The registry used by scenarios: built-ins plus `test.count` (counts calls per path; params `{add: N}`)
/// and `test.flaky_once` (fails its first call in the process per path, then passes through).
pub fn registry(counter: &CallCounter, flaky: &Arc<Mutex<HashMap<String, u32>>>) -> Arc<BuiltinRegistry> {
    let mut r = BuiltinRegistry::new();
    CountingSkill::new(counter.clone()).register(&mut r, "test.count");
    let flaky = flaky.clone();
    r.register_fn("test.flaky_once", false, move |call: SkillCall| {
        let flaky = flaky.clone();
        async move {
            let mut m = flaky.lock().unwrap();
            let n = m.entry(call.path.to_string()).or_insert(0);
            *n += 1;
            if *n == 1 {
                Err(SkillError::fatal("flaky: first call fails"))
            } else {
                Ok(SkillOutput::value(call.input))
            }
        }
    });
    r.register_fn("test.tokens", false, |call: SkillCall| async move {
        Ok({
            let mut out = SkillOutput::default();
            out.output = call.input;
            out.tokens = TokenUsage::new(10, 5);
            out.cost_usd = 0.01;
            out
        })
    });
    Arc::new(r)
}

// ---- pipeline construction helpers ----

pub fn count(name: &str) -> Step {
    Step::skill(name, "test.count", json!({"add": 1}))
}
pub fn tf(name: &str, expr: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({ "expr": expr }))
}
pub fn fail(name: &str) -> Step {
    Step::skill(name, "flujo.builtins.fail", json!({"message": "boom"}))
}
pub fn kind(name: &str, k: StepKind) -> Step {
    Step::new(name, k)
}
pub fn branch(name: &str, steps: Vec<Step>) -> Branch {
    Branch::new(name, steps)
}
pub fn par(name: &str, branches: Vec<Branch>, merge: MergeStrategy, on_fail: OnBranchFailure) -> Step {
    kind(
        name,
        StepKind::Parallel({
            let mut spec = ParallelSpec::default();
            spec.branches = branches;
            spec.merge_strategy = merge;
            spec.on_branch_failure = on_fail;
            spec
        }),
    )
}
pub fn looped(name: &str, body: Vec<Step>, max: u32, exit: Option<&str>) -> Step {
    kind(
        name,
        StepKind::Loop({
            let mut spec = LoopSpec::default();
            spec.body = body;
            spec.max_loops = max;
            spec.exit_expression = exit.map(str::to_owned);
            spec.on_max_loops = OnMaxLoops::Fail;
            spec
        }),
    )
}
pub fn cond(name: &str, expr: Option<&str>, branches: Vec<Branch>, default: Option<Vec<Step>>) -> Step {
    kind(
        name,
        StepKind::Conditional({
            let mut spec = ConditionalSpec::default();
            spec.condition_expression = expr.map(str::to_owned);
            spec.branches = branches;
            spec.default_branch = default;
            spec
        }),
    )
}
pub fn map(name: &str, iterable: Option<&str>, body: Vec<Step>, concurrency: usize) -> Step {
    kind(
        name,
        StepKind::Map({
            let mut spec = MapSpec::default();
            spec.iterable_input = iterable.map(str::to_owned);
            spec.body = body;
            spec.concurrency = concurrency;
            spec
        }),
    )
}
pub fn hitl(name: &str, schema: Option<Value>) -> Step {
    Step::hitl(name, format!("approve {name}? input={{{{ previous_step }}}}"), schema)
}

// ---- scenarios ----

/// What a scenario must end with.
#[derive(Default, Clone)]
pub struct Expect {
    pub status: Option<RunStatus>,
    pub output: Option<Value>,
    pub error_kind: Option<&'static str>,
    pub error_contains: Option<&'static str>,
    /// Extra checks on the final result.
    pub check: Option<fn(&RunResult)>,
}

#[derive(Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub pipeline: Pipeline,
    pub input: Value,
    pub context: Map<String, Value>,
    /// Answers by pause_id; a pause is answered whenever it is pending.
    pub answers: Vec<(&'static str, Value)>,
    pub expect: Expect,
}

impl Scenario {
    pub fn new(name: &'static str, steps: Vec<Step>, input: Value, expect: Expect) -> Self {
        Scenario { name, pipeline: Pipeline::new(name, steps), input, context: Map::new(), answers: Vec::new(), expect }
    }
    pub fn answers(mut self, a: Vec<(&'static str, Value)>) -> Self {
        self.answers = a;
        self
    }
    pub fn schema(mut self, s: Value) -> Self {
        self.pipeline.context_schema = Some(s);
        self
    }
    pub fn context(mut self, c: Value) -> Self {
        self.context = c.as_object().cloned().unwrap_or_default();
        self
    }
}

pub struct Outcome {
    pub result: RunResult,
    /// path → (status, output, feedback) of the latest record per path.
    pub journal: BTreeMap<String, (StepStatus, Value, Option<String>)>,
    pub records: Vec<JournalRecord>,
    pub counts: HashMap<String, u32>,
    pub crashes: usize,
    pub rejected_paths: Vec<String>,
    /// The paths with a record when the store crashed (`None` without a crash).
    pub committed_at_crash: Option<std::collections::HashSet<String>>,
    pub pauses_seen: usize,
    pub run_record: Option<RunRecord>,
}

/// Builds a runner. The cache backend is shared across "crashes", as a store-backed cache would be.
fn build(s: &Scenario, store: Arc<dyn Store>, reg: Arc<BuiltinRegistry>, cache: &Arc<MemoryCache>) -> Flujo {
    Flujo::builder(s.pipeline.clone()).store(store).skills(reg).cache(cache.clone()).build().expect("pipeline builds")
}

/// Drives a scenario to its end: answers pauses from `s.answers`; when `budget` is set, the store crashes
/// after that many journal appends and the run is resumed (by a fresh runner) from the store.
pub async fn drive(s: &Scenario, budget: Option<u64>) -> Outcome {
    let counter = CallCounter::default();
    let flaky = Arc::default();
    let reg = registry(&counter, &flaky);
    let mem = Arc::new(MemoryStore::new());
    let crashing = Arc::new(CrashingStore::new(mem.clone(), budget.unwrap_or(u64::MAX)));
    let answers: HashMap<&str, Value> = s.answers.iter().cloned().collect();
    let run_id = "run-under-test";
    let cache = Arc::new(MemoryCache::new(Arc::new(SystemClock)));
    let mut flujo = build(s, crashing.clone(), reg.clone(), &cache);
    let mut crashes = 0;
    let mut pauses_seen = 0;
    let mut res = flujo.run_with(RunOptions::new(s.input.clone()).run_id(run_id).context(s.context.clone())).await;
    let mut committed_at_crash = None;
    for _round in 0..1000 {
        match res {
            Err(FlujoError::Store(_)) => {
                // Crash: a new runner over the healthy store resumes from what was committed.
                crashes += 1;
                if committed_at_crash.is_none() {
                    let records = mem.load_journal(run_id).await.unwrap();
                    committed_at_crash = Some(records.into_iter().map(|r| r.path).collect());
                }
                flujo = build(s, mem.clone(), reg.clone(), &cache);
                res = flujo.resume_with(run_id, ResumeRequest::default()).await;
            }
            Err(e) if crashes == 0 => panic!("{}: run error {e}", s.name),
            Err(e) => panic!("{}: error after crash: {e}", s.name),
            Ok(r) if r.status == RunStatus::Paused => {
                pauses_seen += 1;
                let Some(p) = r.pending.iter().find(|p| answers.contains_key(p.pause_id.as_str())) else {
                    return finish(r, &mem, &counter, crashes, &crashing, pauses_seen, committed_at_crash).await;
                };
                let answer = answers[p.pause_id.as_str()].clone();
                res = flujo.resume_with(run_id, ResumeRequest::answer(answer).pause_id(p.pause_id.clone())).await;
            }
            Ok(r) => return finish(r, &mem, &counter, crashes, &crashing, pauses_seen, committed_at_crash).await,
        }
    }
    panic!("{}: did not settle", s.name)
}

async fn finish(
    result: RunResult,
    mem: &Arc<MemoryStore>,
    counter: &CallCounter,
    crashes: usize,
    crashing: &CrashingStore,
    pauses_seen: usize,
    committed_at_crash: Option<std::collections::HashSet<String>>,
) -> Outcome {
    let records = mem.load_journal(&result.run_id).await.unwrap();
    verify_chain(&records).expect("hash chain verifies");
    let mut journal = BTreeMap::new();
    for r in &records {
        journal.insert(r.path.clone(), (r.status, (*r.output).clone(), r.feedback.clone()));
    }
    let counts = counter.lock().unwrap().clone();
    let run_record = mem.get_run(&result.run_id).await.unwrap();
    Outcome {
        run_record,
        result,
        journal,
        records,
        counts,
        crashes,
        rejected_paths: crashing.rejected_paths.lock().unwrap().clone(),
        committed_at_crash,
        pauses_seen,
    }
}

/// Checks the scenario's expectations on a final result.
pub fn check_expect(s: &Scenario, r: &RunResult) {
    let e = &s.expect;
    if let Some(st) = e.status {
        assert_eq!(r.status, st, "{}: status (error: {:?})", s.name, r.error);
    }
    if let Some(o) = &e.output {
        assert_eq!(r.output.as_ref(), Some(o), "{}: output", s.name);
    }
    if let Some(k) = e.error_kind {
        assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some(k), "{}: error kind ({:?})", s.name, r.error);
    }
    if let Some(c) = e.error_contains {
        let msg = r.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert!(msg.contains(c), "{}: error message {msg:?} should contain {c:?}", s.name);
    }
    if let Some(f) = e.check {
        f(r);
    }
}

/// Runs a scenario straight, then interrupted after every possible number of committed records, and checks
/// each interrupted run ends like the straight one without re-executing committed steps.
pub async fn run_scenario(s: &Scenario) {
    let straight = drive(s, None).await;
    check_expect(s, &straight.result);
    // A replay from the journal (no agent called) recomputes every composite and matches the run.
    if straight.result.status != RunStatus::Paused {
        let mem = Arc::new(MemoryStore::new());
        replay_into(&mem, &straight).await;
        let counter = CallCounter::default();
        let flujo =
            Flujo::builder(s.pipeline.clone()).store(mem).skills(registry(&counter, &Arc::default())).build().unwrap();
        let replayed =
            flujo.replay(&straight.result.run_id).await.unwrap_or_else(|e| panic!("{}: replay: {e}", s.name));
        assert_eq!(replayed.output, straight.result.output, "{}: replay output", s.name);
        assert_eq!(replayed.status, straight.result.status, "{}: replay status", s.name);
        assert!(counter.lock().unwrap().is_empty(), "{}: replay called a skill", s.name);
    }
    let total = straight.records.len() as u64;
    for k in 0..=total {
        let o = drive(s, Some(k)).await;
        let ctx = |r: &RunResult| {
            let mut c = r.context.clone();
            if let Some(m) = c.as_object_mut() {
                m.remove("run_id");
            }
            c
        };
        assert_eq!(o.result.status, straight.result.status, "{} k={k}: status", s.name);
        assert_eq!(o.result.output, straight.result.output, "{} k={k}: output", s.name);
        assert_eq!(o.result.error, straight.result.error, "{} k={k}: error", s.name);
        assert_eq!(ctx(&o.result), ctx(&straight.result), "{} k={k}: context", s.name);
        assert_eq!(o.journal, straight.journal, "{} k={k}: journal (latest record per path)", s.name);
        // Exactly-once for committed work: a path may run again only if its record had not landed when the walk
        // stopped (the store rejected it, or the walk's writer refused it after an earlier append failed).
        for (path, n) in &o.counts {
            let base = straight.counts.get(path).copied().unwrap_or(0);
            let rejected = o.rejected_paths.iter().any(|p| p == path)
                || o.committed_at_crash.as_ref().is_some_and(|c| !c.contains(path));
            let allowed = base + u32::from(rejected);
            assert!(
                *n <= allowed && *n >= base,
                "{} k={k}: path {path} ran {n} times (straight {base}, rejected {rejected})",
                s.name
            );
        }
        if k < total {
            assert!(o.crashes >= 1, "{} k={k}: expected a crash", s.name);
        }
    }
}

/// Copies a finished run (row and journal) into `mem`.
pub async fn replay_into(mem: &Arc<MemoryStore>, o: &Outcome) {
    let run = o.run_record.clone().expect("run record");
    mem.create_run(&run).await.unwrap();
    for r in &o.records {
        mem.append(r).await.unwrap();
    }
}
