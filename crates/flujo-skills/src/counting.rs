//! Test support: [`CountingSkill`], a skill that counts its invocations per step path.
//!
//! Engine tests use it to prove exactly-once behaviour (a committed step is never re-run on resume or
//! replay): register it under an id, run a pipeline, then read the per-path counts from the shared
//! [`CallCounter`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput};
use serde_json::{Number, Value};

use crate::registry::{BuiltinRegistry, SkillFactory};

/// Invocation counts by `SkillCall::path`, shared between a test and the skills it registered.
pub type CallCounter = Arc<Mutex<HashMap<String, u32>>>;

/// A skill that increments `counter[call.path]` on every call (every attempt counts), then either delegates
/// to an inner skill or returns its input — plus `N` when resolved with params `{"add": N}` and the input is
/// a number.
///
/// ```
/// use flujo_core::SkillRegistry;
/// use flujo_skills::{BuiltinRegistry, CallCounter, CountingSkill};
/// use serde_json::json;
///
/// let counter = CallCounter::default();
/// let mut registry = BuiltinRegistry::new();
/// CountingSkill::new(counter.clone()).register(&mut registry, "test.count");
/// // Steps using skill `test.count` (here with params `{"add": 1}`) now count their calls:
/// assert!(registry.resolve("test.count", &json!({"add": 1})).is_ok());
/// // … run the pipeline, then read the count of the step at path "0":
/// assert_eq!(CountingSkill::count(&counter, "0"), 0);
/// ```
#[derive(Clone)]
pub struct CountingSkill {
    counter: CallCounter,
    add: Option<Number>,
    inner: Option<Arc<dyn Skill>>,
    id: String,
}

impl CountingSkill {
    /// A counting passthrough skill (id `test.counting` until registered under another id).
    pub fn new(counter: CallCounter) -> Self {
        CountingSkill { counter, add: None, inner: None, id: "test.counting".to_owned() }
    }

    /// Delegates each call to `inner` after counting it (instead of returning the input).
    pub fn with_inner(mut self, inner: Arc<dyn Skill>) -> Self {
        self.inner = Some(inner);
        self
    }

    /// Adds `n` to numeric inputs (same as resolving with params `{"add": n}`).
    pub fn with_add(mut self, n: impl Into<Number>) -> Self {
        self.add = Some(n.into());
        self
    }

    /// Registers this skill under `id`. Each resolution shares the counter; params `{"add": N}` (a number)
    /// override the added amount, any other param is a resolve error.
    pub fn register(self, registry: &mut BuiltinRegistry, id: &str) {
        let template = CountingSkill { id: id.to_owned(), ..self };
        let info = template.info();
        let factory: SkillFactory = Arc::new(move |params: &Value| {
            let mut skill = template.clone();
            let bad = |message: String| ResolveError::BadParams { id: skill.id.clone(), message };
            match params {
                Value::Null => {}
                Value::Object(map) => {
                    for (key, value) in map {
                        match (key.as_str(), value) {
                            ("add", Value::Number(n)) => skill.add = Some(n.clone()),
                            ("add", Value::Null) => {}
                            ("add", other) => return Err(bad(format!("`add` must be a number, got {other}"))),
                            (other, _) => return Err(bad(format!("unknown param '{other}' (expected `add`)"))),
                        }
                    }
                }
                other => return Err(bad(format!("params must be an object, got {other}"))),
            }
            Ok(Arc::new(skill) as Arc<dyn Skill>)
        });
        registry.register(id, info, factory);
    }

    /// How many times the skill was called at step path `path`.
    pub fn count(counter: &CallCounter, path: &str) -> u32 {
        lock(counter).get(path).copied().unwrap_or(0)
    }

    /// The total number of calls over all paths.
    pub fn total(counter: &CallCounter) -> u32 {
        lock(counter).values().sum()
    }

    /// A copy of all per-path counts.
    pub fn counts(counter: &CallCounter) -> HashMap<String, u32> {
        lock(counter).clone()
    }
}

fn lock(counter: &CallCounter) -> MutexGuard<'_, HashMap<String, u32>> {
    // A panicking test thread must not hide the counts from the assertions that follow.
    counter.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn add_numbers(a: &Number, b: &Number) -> Option<Number> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        if let Some(sum) = x.checked_add(y) {
            return Some(Number::from(sum));
        }
    }
    Number::from_f64(a.as_f64()? + b.as_f64()?)
}

#[async_trait]
impl Skill for CountingSkill {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        *lock(&self.counter).entry(call.path.to_string()).or_insert(0) += 1;
        if let Some(inner) = &self.inner {
            return inner.call(call).await;
        }
        match (&self.add, call.input) {
            (None, input) => Ok(SkillOutput::value(input)),
            (Some(n), Value::Number(x)) => add_numbers(&x, n)
                .map(|sum| SkillOutput::value(Value::Number(sum)))
                .ok_or_else(|| SkillError::fatal(format!("{}: {x} + {n} is not a finite number", self.id))),
            (Some(_), other) => {
                Err(SkillError::fatal(format!("{}: `add` needs a numeric input, got {other}", self.id)))
            }
        }
    }

    fn info(&self) -> SkillInfo {
        {
            let mut info = SkillInfo::default();
            info.id = self.id.clone();
            info.description = "Test support: counts calls per step path; returns the input (+ `add`).".to_owned();
            info
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::{ContextSnapshot, SkillRegistry};
    use serde_json::json;

    fn call(path: &str, input: Value, attempt: u32) -> SkillCall {
        {
            let mut call = SkillCall::new(input);
            call.run_id = Arc::from("r");
            call.path = Arc::from(path);
            call.step = Arc::from("s");
            call.attempt = attempt;
            call.idempotency_key = Arc::from("k");
            call.context = ContextSnapshot::default();
            call.deltas = None;
            call.this = None;
            call
        }
    }

    #[tokio::test]
    async fn counts_per_path_and_adds() {
        let counter = CallCounter::default();
        let mut registry = BuiltinRegistry::new();
        CountingSkill::new(counter.clone()).register(&mut registry, "test.count");
        let plus_one = registry.resolve("test.count", &json!({"add": 1})).unwrap();
        let plain = registry.resolve("test.count", &Value::Null).unwrap();

        assert_eq!(plus_one.call(call("0", json!(41), 1)).await.unwrap().output, json!(42));
        assert_eq!(plus_one.call(call("0", json!(1.5), 2)).await.unwrap().output, json!(2.5));
        assert_eq!(plain.call(call("1", json!("x"), 1)).await.unwrap().output, json!("x"));

        assert_eq!(CountingSkill::count(&counter, "0"), 2);
        assert_eq!(CountingSkill::count(&counter, "1"), 1);
        assert_eq!(CountingSkill::count(&counter, "2"), 0);
        assert_eq!(CountingSkill::total(&counter), 3);
        assert_eq!(CountingSkill::counts(&counter).len(), 2);
        assert_eq!(plain.info().id, "test.count");
    }

    #[tokio::test]
    async fn add_on_non_number_is_fatal() {
        let counter = CallCounter::default();
        let skill = CountingSkill::new(counter.clone()).with_add(2);
        let err = skill.call(call("0", json!("x"), 1)).await.unwrap_err();
        assert!(!err.retryable);
        assert_eq!(CountingSkill::count(&counter, "0"), 1);
    }

    #[tokio::test]
    async fn wraps_inner_skill() {
        let counter = CallCounter::default();
        let inner = BuiltinRegistry::new().resolve("stringify", &Value::Null).unwrap();
        let skill = CountingSkill::new(counter.clone()).with_inner(inner);
        assert_eq!(skill.call(call("a", json!([1]), 1)).await.unwrap().output, json!("[1]"));
        assert_eq!(CountingSkill::count(&counter, "a"), 1);
    }

    #[test]
    fn bad_params_are_resolve_errors() {
        let mut registry = BuiltinRegistry::empty();
        CountingSkill::new(CallCounter::default()).register(&mut registry, "test.count");
        assert!(matches!(registry.resolve("test.count", &json!({"add": "1"})), Err(ResolveError::BadParams { .. })));
        assert!(matches!(registry.resolve("test.count", &json!({"ad": 1})), Err(ResolveError::BadParams { .. })));
    }
}
