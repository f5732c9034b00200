//! The simulated world outside the engine: deterministic skills, the ledger of their side effects, and the
//! process "incarnation" they run in (a crash ends one; the next runner is a new one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::{
    ModelRegistry, ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, TokenUsage, Usage,
};
use flujo_skills::{BuiltinRegistry, SkillFactory};
use serde_json::{json, Value};

/// The skill id every generated leaf step calls.
pub const SIM_SKILL: &str = "sim.step";
/// The skill id of the tool simulated agents call.
pub const SIM_TOOL: &str = "sim.tool";

/// One side effect: the idempotency key it was made under, the walk (runner) that made it, and when its call
/// started (a tick of [`World::tick`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub key: String,
    pub walk: u64,
    pub started: u64,
}

/// One paid call: the walk that made it and what it cost, in micro-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub walk: u64,
    pub micros: u64,
}

/// State shared by the skills, the faulty store and the driver of one simulation.
#[derive(Debug, Default)]
pub struct World {
    /// The current process incarnation (0 for the first runner).
    pub incarnation: AtomicU64,
    /// The current incarnation has crashed: nothing it does reaches the store or the outside world any more.
    pub down: AtomicBool,
    /// A logical clock: every call start and every commit takes the next tick, so "this call started after
    /// that commit" is a comparison of ticks.
    pub ticks: AtomicU64,
    /// Every side effect made, in order.
    pub ledger: Mutex<Vec<Effect>>,
    /// For each path, the tick at which a completed record of it was first durable: a call of that path that
    /// started later ran a committed step again.
    pub commits: Mutex<HashMap<String, u64>>,
    /// Every paid call (model turns, costed steps and tools), in order.
    pub payments: Mutex<Vec<Payment>>,
    /// For each walk taken over by another host while it went on, the tick of the takeover: what that walk
    /// starts later is a zombie's work (its own journal cannot tell it the run moved on until its next write is
    /// refused).
    pub taken_over: Mutex<HashMap<u64, u64>>,
    /// The owner id the run row durably names (as the last successful write set it).
    pub owner: Mutex<Option<String>>,
    /// Appends that landed although another owner held the run when they were made.
    pub fence_breaks: Mutex<Vec<String>>,
    /// Calls made (attempts included), for the report.
    pub calls: AtomicU64,
    /// A deliberately broken world (tests of the simulator): every side effect is made twice.
    pub double_effects: AtomicBool,
    /// A deliberately broken world: costed calls estimate less than they cost.
    pub under_estimate: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    /// The next tick of the logical clock.
    pub fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The side effects made so far.
    pub fn effects(&self) -> Vec<Effect> {
        locked(&self.ledger).clone()
    }

    /// The paid calls so far.
    pub fn payments(&self) -> Vec<Payment> {
        locked(&self.payments).clone()
    }

    /// What walk `walk` paid, in micro-USD.
    pub fn paid_by(&self, walk: u64) -> u64 {
        locked(&self.payments).iter().filter(|p| p.walk == walk).map(|p| p.micros).sum()
    }

    /// A new incarnation starts (a fresh process after a crash or a failed walk).
    pub fn restart(&self) {
        self.incarnation.fetch_add(1, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
    }

    /// A completed record of `path` is durable.
    pub fn committed(&self, path: &str) {
        let at = self.tick();
        locked(&self.commits).entry(path.to_owned()).or_insert(at);
    }

    /// The commit ticks (see [`World::commits`]).
    pub fn commit_marks(&self) -> HashMap<String, u64> {
        locked(&self.commits).clone()
    }

    /// Walk `walk` is being taken over by another host from now on.
    pub fn taking_over(&self, walk: u64) {
        let at = self.tick();
        locked(&self.taken_over).entry(walk).or_insert(at);
    }

    /// The takeover ticks (see [`World::taken_over`]).
    pub fn takeovers(&self) -> HashMap<u64, u64> {
        locked(&self.taken_over).clone()
    }

    /// The run row now durably names `owner`.
    pub fn owned_by(&self, owner: Option<&str>) {
        *locked(&self.owner) = owner.map(str::to_owned);
    }

    /// The owner the run row durably names.
    pub fn owner(&self) -> Option<String> {
        locked(&self.owner).clone()
    }

    /// An append by `owner` landed while the row named `holder`.
    pub fn fence_broken(&self, detail: String) {
        locked(&self.fence_breaks).push(detail);
    }

    /// The appends that landed past the fence.
    pub fn fence_breaks(&self) -> Vec<String> {
        locked(&self.fence_breaks).clone()
    }

    fn record(&self, key: &str, walk: u64, started: u64) {
        let effect = Effect { key: key.to_owned(), walk, started };
        let mut ledger = locked(&self.ledger);
        if self.double_effects.load(Ordering::SeqCst) {
            ledger.push(effect.clone());
        }
        ledger.push(effect);
    }

    fn pay(&self, walk: u64, micros: u64) {
        if micros > 0 {
            locked(&self.payments).push(Payment { walk, micros });
        }
    }

    /// The usage a call reports for `micros` micro-USD (tokens: one per micro-USD).
    fn usage(micros: u64) -> (TokenUsage, f64) {
        (TokenUsage::new(micros / 2, micros - micros / 2), usd(micros))
    }

    /// The upper bound a call costing at most `max_micros` announces (lower than the truth in a broken world).
    fn estimate(&self, max_micros: u64) -> Option<Usage> {
        let micros = if self.under_estimate.load(Ordering::SeqCst) { max_micros / 4 } else { max_micros };
        (max_micros > 0).then(|| Usage { cost_usd: usd(micros), tokens: micros })
    }
}

/// Micro-USD as USD.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// A number standing for any JSON value (numbers are themselves; containers sum their members), so every
/// step's output is a deterministic function of its input whatever came before it.
pub fn digest_value(v: &Value) -> i64 {
    match v {
        Value::Null => 0,
        Value::Bool(b) => i64::from(*b),
        Value::Number(n) => n.as_i64().unwrap_or_else(|| n.as_f64().map_or(0, |f| f as i64)),
        Value::String(s) => s.len() as i64,
        Value::Array(items) => items.iter().map(digest_value).fold(0i64, i64::wrapping_add),
        Value::Object(m) => m.values().map(digest_value).fold(7i64, i64::wrapping_add),
    }
}

/// What a generated leaf step does (its params).
#[derive(Debug, Clone, PartialEq)]
pub struct LeafParams {
    /// Added to the input's digest (outputs stay small: modulo 1000).
    pub k: i64,
    /// `list`: the output is a list of `len` numbers (the input of a map), else a number.
    pub list_len: Option<u64>,
    /// The call makes a side effect (recorded in the ledger under its idempotency key).
    pub effect: bool,
    /// Attempts that fail before one succeeds (a retryable error).
    pub fail_attempts: u32,
    /// Simulated time the call takes.
    pub sleep_ms: u64,
    /// What a successful call costs, in micro-USD (a failed attempt costs a quarter of it).
    pub cost: u64,
    /// The upper bound the skill announces before a call (`cost` ≤ `max_cost`).
    pub max_cost: u64,
    /// A deliberately broken skill (tests of the simulator): its output differs in every walk but the first.
    pub drift: bool,
}

impl LeafParams {
    /// As a step's params.
    pub fn to_json(&self) -> Value {
        json!({
            "k": self.k,
            "list_len": self.list_len,
            "effect": self.effect,
            "fail_attempts": self.fail_attempts,
            "sleep_ms": self.sleep_ms,
            "cost": self.cost,
            "max_cost": self.max_cost,
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(LeafParams {
            k: v.get("k")?.as_i64()?,
            list_len: v.get("list_len").and_then(Value::as_u64),
            effect: v.get("effect")?.as_bool()?,
            fail_attempts: u32::try_from(v.get("fail_attempts")?.as_u64()?).ok()?,
            sleep_ms: v.get("sleep_ms")?.as_u64()?,
            cost: v.get("cost").and_then(Value::as_u64).unwrap_or(0),
            max_cost: v.get("max_cost").and_then(Value::as_u64).unwrap_or(0),
            drift: v.get("drift").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The output for `input` (what a fault-free call returns).
    pub fn output(&self, input: &Value) -> Value {
        let base = digest_value(input).wrapping_add(self.k).rem_euclid(1000);
        match self.list_len {
            Some(n) => Value::Array((0..n as i64).map(|i| json!((base + i) % 1000)).collect()),
            None => json!(base),
        }
    }
}

/// Who a skill instance works for: the world, the walk (runner) and whether that runner lives on another host
/// (whose process does not crash with this one).
#[derive(Clone)]
struct Worker {
    world: Arc<World>,
    walk: u64,
    remote: bool,
}

impl Worker {
    /// Whether the process this worker runs in is down (then it does nothing more: no effect, no payment, no
    /// answer that could be journaled).
    fn down(&self) -> bool {
        !self.remote && self.world.down.load(Ordering::SeqCst)
    }

    /// The start of a call: counted, its start tick taken, `sleep_ms` of simulated time spent; an error when
    /// the process went down meanwhile. Returns the start tick.
    async fn begin(&self, sleep_ms: u64) -> Result<u64, SkillError> {
        self.world.calls.fetch_add(1, Ordering::Relaxed);
        let started = self.world.tick();
        if sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
        }
        if self.down() {
            return Err(SkillError::fatal("the process is down"));
        }
        Ok(started)
    }
}

struct SimSkill {
    params: LeafParams,
    w: Worker,
}

#[async_trait]
impl Skill for SimSkill {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let world = &self.w.world;
        let started = self.w.begin(self.params.sleep_ms).await?;
        if call.attempt <= self.params.fail_attempts {
            let billed = self.params.cost / 4;
            world.pay(self.w.walk, billed);
            let (tokens, cost) = World::usage(billed);
            return Err(
                SkillError::new(format!("planned failure of attempt {}", call.attempt)).with_usage(tokens, cost)
            );
        }
        if self.params.effect {
            world.record(&call.idempotency_key, self.w.walk, started);
        }
        world.pay(self.w.walk, self.params.cost);
        let mut output = self.params.output(&call.input);
        if self.params.drift && self.w.walk > 0 {
            output = json!(digest_value(&output) + 1);
        }
        let (tokens, cost) = World::usage(self.params.cost);
        Ok(SkillOutput::value(output).with_usage(tokens, cost))
    }

    fn info(&self) -> SkillInfo {
        SkillInfo::new(SIM_SKILL, "a simulated step").with_side_effects(self.params.effect)
    }

    fn estimate(&self, _input: &Value) -> Option<Usage> {
        self.w.world.estimate(self.params.max_cost)
    }
}

/// The tool every simulated agent may call: a side effect, a small cost, an answer derived from its arguments.
struct SimTool {
    w: Worker,
}

/// What one tool call costs, in micro-USD (its announced upper bound is [`TOOL_MAX_COST`]).
pub const TOOL_COST: u64 = 150;
pub const TOOL_MAX_COST: u64 = 200;

#[async_trait]
impl Skill for SimTool {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let world = &self.w.world;
        let x = digest_value(&call.input);
        let started = self.w.begin(x.rem_euclid(3) as u64 * 700).await?;
        world.record(&call.idempotency_key, self.w.walk, started);
        world.pay(self.w.walk, TOOL_COST);
        let (tokens, cost) = World::usage(TOOL_COST);
        Ok(SkillOutput::value(json!((x * 7 + 3).rem_euclid(1000))).with_usage(tokens, cost))
    }

    fn info(&self) -> SkillInfo {
        SkillInfo::new(SIM_TOOL, "a simulated tool with a side effect").with_side_effects(true)
    }

    fn estimate(&self, _input: &Value) -> Option<Usage> {
        self.w.world.estimate(TOOL_MAX_COST)
    }
}

/// The params of a simulator step (`None` for anything else).
pub fn leaf_params(params: &Value) -> Option<LeafParams> {
    LeafParams::from_json(params)
}

/// The built-in skills plus [`SIM_SKILL`] and [`SIM_TOOL`], bound to `world` for the runner of walk `walk`
/// (on another host than the simulated process when `remote`).
pub fn registry(world: &Arc<World>, walk: u64, remote: bool) -> Arc<BuiltinRegistry> {
    let mut r = BuiltinRegistry::new();
    let w = Worker { world: world.clone(), walk, remote };
    let leaf = w.clone();
    let factory: SkillFactory = Arc::new(move |params: &Value| {
        let params = LeafParams::from_json(params).ok_or_else(|| ResolveError::BadParams {
            id: SIM_SKILL.to_owned(),
            message: format!("not simulator params: {params}"),
        })?;
        Ok(Arc::new(SimSkill { params, w: leaf.clone() }) as Arc<dyn Skill>)
    });
    r.register(SIM_SKILL, SkillInfo::new(SIM_SKILL, "a simulated step"), factory);
    let tool: SkillFactory = Arc::new(move |_params: &Value| Ok(Arc::new(SimTool { w: w.clone() }) as Arc<dyn Skill>));
    r.register(SIM_TOOL, SkillInfo::new(SIM_TOOL, "a simulated tool").with_side_effects(true), tool);
    Arc::new(r)
}

/// A simulated model agent `sim:NAME`: as a step's agent it answers a number derived from its input; as the
/// planner of an agentic loop it calls [`SIM_TOOL`] on its first `calls` turns (read from the agent settings)
/// and then answers with the sum of the tool results. Every turn costs [`MODEL_COST`] and announces
/// [`MODEL_MAX_COST`].
struct SimModel {
    w: Worker,
    /// Tool calls the planner makes before it answers.
    calls: u64,
    k: i64,
    /// As a router: the branch names it picks from.
    branches: Vec<String>,
    /// In a tree search: `propose` (candidates) or `evaluate` (a score from 0 to 1).
    role: Option<String>,
}

pub const MODEL_COST: u64 = 900;
pub const MODEL_MAX_COST: u64 = 1200;

#[async_trait]
impl Skill for SimModel {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let world = &self.w.world;
        self.w.begin(400).await?;
        world.pay(self.w.walk, MODEL_COST);
        let (tokens, cost) = World::usage(MODEL_COST);
        let messages = call.input.get("messages").and_then(Value::as_array);
        let output = match messages {
            // A planner turn: call the tool until `calls` results came back, then answer.
            Some(messages) => {
                let results: Vec<&Value> = messages
                    .iter()
                    .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
                    .filter_map(|m| m.get("content"))
                    .collect();
                let done = results.len() as u64;
                let seen = results.iter().map(|c| text_number(c)).fold(self.k, i64::wrapping_add);
                if done < self.calls {
                    let x = digest_value(call.input.get("input").unwrap_or(&Value::Null)).wrapping_add(seen);
                    json!({"content": null, "tool_calls": [
                        {"id": format!("call_{done}"), "name": SIM_TOOL, "arguments": {"x": x.rem_euclid(1000)}}
                    ]})
                } else {
                    json!({"content": seen.rem_euclid(1000).to_string(), "tool_calls": []})
                }
            }
            None if self.role.is_some() => {
                let text = call.input.as_str().map_or_else(|| call.input.to_string(), str::to_owned);
                let h = crate::rng::digest(&text).wrapping_add(self.k as u64);
                if self.role.as_deref() == Some("propose") {
                    json!((0..3).map(|i| format!("candidate {}", (h + i) % 100)).collect::<Vec<_>>())
                } else {
                    json!({"score": (h % 100) as f64 / 100.0})
                }
            }
            None if !self.branches.is_empty() => {
                let i = digest_value(&call.input).wrapping_add(self.k).rem_euclid(self.branches.len() as i64);
                json!(self.branches[i as usize])
            }
            None => json!(digest_value(&call.input).wrapping_add(self.k).rem_euclid(1000)),
        };
        Ok(SkillOutput::value(output).with_usage(tokens, cost))
    }

    fn info(&self) -> SkillInfo {
        SkillInfo::new("sim:model", "a simulated model")
    }

    fn estimate(&self, _input: &Value) -> Option<Usage> {
        self.w.world.estimate(MODEL_MAX_COST)
    }
}

/// A tool result (text) as a number.
fn text_number(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.trim().parse().unwrap_or(s.len() as i64),
        other => digest_value(other),
    }
}

/// The model registry of the simulated models (`sim:*`).
pub struct SimModels {
    w: Worker,
}

impl SimModels {
    /// Models bound to `world` for the runner of walk `walk` (on another host when `remote`).
    pub fn new(world: &Arc<World>, walk: u64, remote: bool) -> Arc<Self> {
        Arc::new(SimModels { w: Worker { world: world.clone(), walk, remote } })
    }

    fn model(&self, model: &str, settings: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        if !model.starts_with("sim:") {
            return Err(ResolveError::BadParams { id: model.to_owned(), message: "not a simulated model".into() });
        }
        let calls = settings.get("sim_calls").and_then(Value::as_u64).unwrap_or(0);
        let k = settings.get("sim_k").and_then(Value::as_i64).unwrap_or(0);
        let branches = settings
            .get("sim_branches")
            .and_then(Value::as_array)
            .map(|b| b.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let role = settings.get("sim_role").and_then(Value::as_str).map(str::to_owned);
        Ok(Arc::new(SimModel { w: self.w.clone(), calls, k, branches, role }))
    }
}

impl ModelRegistry for SimModels {
    fn resolve(&self, model: &str, settings: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        self.model(model, settings)
    }

    fn resolve_turn(&self, model: &str, settings: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        self.model(model, settings)
    }
}
