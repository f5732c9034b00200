//! The simulated world outside the engine: deterministic skills, the ledger of their side effects, and the
//! process "incarnation" they run in (a crash ends one; the next runner is a new one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput};
use flujo_skills::{BuiltinRegistry, SkillFactory};
use serde_json::{json, Value};

/// The skill id every generated leaf step calls.
pub const SIM_SKILL: &str = "sim.step";

/// One side effect: the idempotency key it was made under and the walk (runner) that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub key: String,
    pub walk: u64,
}

/// State shared by the skills, the faulty store and the driver of one simulation.
#[derive(Debug, Default)]
pub struct World {
    /// The current process incarnation (0 for the first runner).
    pub incarnation: AtomicU64,
    /// The current incarnation has crashed: nothing it does reaches the store or the outside world any more.
    pub down: AtomicBool,
    /// Every side effect made, in order.
    pub ledger: Mutex<Vec<Effect>>,
    /// For each path, the ledger's length when a completed record of it was first committed: an effect of
    /// that path at a later position ran a committed step again.
    pub commits: Mutex<HashMap<String, usize>>,
    /// Calls made (attempts included), for the report.
    pub calls: AtomicU64,
    /// A deliberately broken world (tests of the simulator): every side effect is made twice.
    pub double_effects: AtomicBool,
    /// Simulated durations are divided by this (0 or 1: as they are) when the runtime runs in real time.
    pub time_divisor: AtomicU64,
}

impl World {
    /// The side effects made so far.
    pub fn effects(&self) -> Vec<Effect> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `d` of simulated time as the runtime's time.
    pub fn scaled(&self, d: Duration) -> Duration {
        match self.time_divisor.load(Ordering::Relaxed) {
            0 | 1 => d,
            n => d / u32::try_from(n).unwrap_or(u32::MAX),
        }
    }

    /// A new incarnation starts (a fresh process after a crash or a failed walk).
    pub fn restart(&self) {
        self.incarnation.fetch_add(1, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
    }

    /// A completed record of `path` is durable.
    pub fn committed(&self, path: &str) {
        let at = self.ledger.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.commits.lock().unwrap_or_else(|p| p.into_inner()).entry(path.to_owned()).or_insert(at);
    }

    /// The commit positions (see [`World::commits`]).
    pub fn commit_marks(&self) -> HashMap<String, usize> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, key: &str, walk: u64) {
        let effect = Effect { key: key.to_owned(), walk };
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if self.double_effects.load(Ordering::SeqCst) {
            ledger.push(effect.clone());
        }
        ledger.push(effect);
    }
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
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(LeafParams {
            k: v.get("k")?.as_i64()?,
            list_len: v.get("list_len").and_then(Value::as_u64),
            effect: v.get("effect")?.as_bool()?,
            fail_attempts: u32::try_from(v.get("fail_attempts")?.as_u64()?).ok()?,
            sleep_ms: v.get("sleep_ms")?.as_u64()?,
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

struct SimSkill {
    params: LeafParams,
    world: Arc<World>,
    /// The walk (runner) this skill instance belongs to.
    walk: u64,
}

#[async_trait]
impl Skill for SimSkill {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        self.world.calls.fetch_add(1, Ordering::Relaxed);
        if self.params.sleep_ms > 0 {
            tokio::time::sleep(self.world.scaled(Duration::from_millis(self.params.sleep_ms))).await;
        }
        // A crashed process does nothing more: no effect, no answer that could be journaled.
        if self.world.down.load(Ordering::SeqCst) {
            return Err(SkillError::fatal("the process is down"));
        }
        if call.attempt <= self.params.fail_attempts {
            return Err(SkillError::new(format!("planned failure of attempt {}", call.attempt)));
        }
        if self.params.effect {
            self.world.record(&call.idempotency_key, self.walk);
        }
        let mut output = self.params.output(&call.input);
        if self.params.drift && self.walk > 0 {
            output = json!(digest_value(&output) + 1);
        }
        Ok(SkillOutput::value(output))
    }

    fn info(&self) -> SkillInfo {
        SkillInfo::new(SIM_SKILL, "a simulated step").with_side_effects(self.params.effect)
    }
}

/// The params of a simulator step (`None` for anything else).
pub fn leaf_params(params: &Value) -> Option<LeafParams> {
    LeafParams::from_json(params)
}

/// The built-in skills plus [`SIM_SKILL`], bound to `world` for the runner of walk `walk`.
pub fn registry(world: &Arc<World>, walk: u64) -> Arc<BuiltinRegistry> {
    let mut r = BuiltinRegistry::new();
    let world = world.clone();
    let factory: SkillFactory = Arc::new(move |params: &Value| {
        let params = LeafParams::from_json(params).ok_or_else(|| ResolveError::BadParams {
            id: SIM_SKILL.to_owned(),
            message: format!("not simulator params: {params}"),
        })?;
        Ok(Arc::new(SimSkill { params, world: world.clone(), walk }) as Arc<dyn Skill>)
    });
    r.register(SIM_SKILL, SkillInfo::new(SIM_SKILL, "a simulated step"), factory);
    Arc::new(r)
}
