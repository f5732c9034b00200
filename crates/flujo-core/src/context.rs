//! The run context: the run's mutable JSON state, with cheap isolated copies and a change log.
//!
//! Top-level fields live in a persistent map (`imbl`), so an isolated copy for a parallel branch or a loop
//! iteration costs O(1) and a write costs O(log n), whatever the size of the values stored. Every write goes
//! through [`Context::apply`], which also appends the op to the change log of the current *scope*; the engine
//! opens a scope per step execution and journals the ops of that scope as the step's patch.

use std::sync::Arc;

use imbl::OrdMap;
use serde_json::{Map, Value};

use crate::patch::{compact, PatchOp};

/// Framework fields that are always present in a context. They are not user data: context schemas are not
/// applied to them.
pub const FRAMEWORK_FIELDS: &[&str] =
    &["run_id", "initial_prompt", "steps", "hitl_history", "import_artifacts", "status"];

/// A failed context write.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContextError {
    /// A `set` or `append` has to go through a value that is neither an object nor `null` to reach its path.
    #[error("cannot write '{path}': '{segment}' is not an object")]
    NotAnObject {
        /// The op's whole path, dotted.
        path: String,
        /// The segment that could not be entered: the value that should hold it is not an object.
        segment: String,
    },
    /// An `append` targets a value that is neither an array nor `null`.
    #[error("cannot append to '{path}': it is not an array")]
    NotAnArray {
        /// The op's whole path, dotted.
        path: String,
    },
    /// The op's path has no segment.
    #[error("empty context path")]
    EmptyPath,
    /// The op writes a field steps may not write; [`Context::apply`] returns it for the bare `steps` path
    /// (the outputs map as a whole).
    #[error("'{0}' is a framework field and cannot be written by steps")]
    ReadOnly(String),
}

/// The run context. Cloning is O(1) (structural sharing) and the clone starts with the same log;
/// use [`Context::isolated`] for a copy with an empty log.
#[derive(Debug, Clone, Default)]
pub struct Context {
    fields: OrdMap<String, Arc<Value>>,
    steps: OrdMap<String, Arc<Value>>,
    log: Vec<PatchOp>,
    compact_at: usize,
}

/// A read-only, cheaply cloneable view of a context's data at one moment.
#[derive(Debug, Clone, Default)]
pub struct ContextSnapshot {
    fields: OrdMap<String, Arc<Value>>,
    steps: OrdMap<String, Arc<Value>>,
}

impl ContextSnapshot {
    /// A top-level field (`steps` is not a field; see [`ContextSnapshot::step_output`]).
    pub fn field(&self, key: &str) -> Option<&Arc<Value>> {
        self.fields.get(key)
    }
    /// `resume_input` in templates: the answer to the latest pause (the last `hitl_history` entry).
    pub fn resume_input(&self) -> Option<&Value> {
        self.field("hitl_history")?.as_array()?.last()?.get("answer")
    }
    /// The top-level fields (framework fields included), in key order.
    pub fn fields(&self) -> impl Iterator<Item = (&String, &Arc<Value>)> {
        self.fields.iter()
    }
    /// The output step `name` produced (the `steps.NAME` entry), if it has run.
    pub fn step_output(&self, name: &str) -> Option<&Arc<Value>> {
        self.steps.get(name)
    }
    /// The step outputs by step name, in name order.
    pub fn step_outputs(&self) -> impl Iterator<Item = (&String, &Arc<Value>)> {
        self.steps.iter()
    }
    /// How many top-level fields there are (framework fields included).
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }
    /// How many steps have an output recorded.
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }
}

/// The saved outer log while a nested scope is open (see [`Context::open_scope`]).
#[derive(Debug)]
#[must_use = "a scope must be closed with Context::close_scope"]
pub struct LogScope {
    outer: Vec<PatchOp>,
    outer_compact_at: usize,
}

const MIN_COMPACT: usize = 64;

impl Context {
    /// A fresh context for a run. `user` holds the initial user fields (e.g. from `--context`).
    pub fn new(run_id: &str, initial_prompt: Value, user: Map<String, Value>) -> Self {
        let mut fields = OrdMap::new();
        for (k, v) in user {
            fields.insert(k, Arc::new(v));
        }
        fields.insert("run_id".to_owned(), Arc::new(Value::String(run_id.to_owned())));
        fields.insert("initial_prompt".to_owned(), Arc::new(initial_prompt));
        fields.insert("hitl_history".to_owned(), Arc::new(Value::Array(Vec::new())));
        fields.entry("import_artifacts".to_owned()).or_insert_with(|| Arc::new(Value::Object(Map::new())));
        fields.insert("status".to_owned(), Arc::new(Value::String("running".to_owned())));
        Context { fields, steps: OrdMap::new(), log: Vec::new(), compact_at: MIN_COMPACT }
    }

    /// A copy sharing all data, with an empty change log. With `include_keys`, only those user fields (plus
    /// the framework fields) are visible in the copy.
    pub fn isolated(&self, include_keys: Option<&[String]>) -> Context {
        let fields = match include_keys {
            None => self.fields.clone(),
            Some(keys) => self
                .fields
                .iter()
                .filter(|(k, _)| FRAMEWORK_FIELDS.contains(&k.as_str()) || keys.iter().any(|i| i == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        Context { fields, steps: self.steps.clone(), log: Vec::new(), compact_at: MIN_COMPACT }
    }

    /// A read-only O(1) snapshot of the data (no change log), e.g. for template scopes that must be `'static`.
    pub fn snapshot(&self) -> ContextSnapshot {
        ContextSnapshot { fields: self.fields.clone(), steps: self.steps.clone() }
    }

    /// A top-level field (`steps` is not a field; see [`Context::step_output`]).
    pub fn field(&self, key: &str) -> Option<&Arc<Value>> {
        self.fields.get(key)
    }

    /// The top-level fields (framework fields included), in key order.
    pub fn fields(&self) -> impl Iterator<Item = (&String, &Arc<Value>)> {
        self.fields.iter()
    }

    /// The output step `name` produced (the `steps.NAME` entry), if it has run.
    pub fn step_output(&self, name: &str) -> Option<&Arc<Value>> {
        self.steps.get(name)
    }

    /// The step outputs by step name, in name order.
    pub fn step_outputs(&self) -> impl Iterator<Item = (&String, &Arc<Value>)> {
        self.steps.iter()
    }

    /// The `run_id` field (empty when it is missing or not a string).
    pub fn run_id(&self) -> &str {
        self.fields.get("run_id").and_then(|v| v.as_str()).unwrap_or("")
    }

    /// Reads a value by path segments (`["steps", "name", …]` reads step outputs).
    pub fn lookup(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let root: &Value = if first == "steps" {
            let (name, rest2) = rest.split_first()?;
            return descend(self.steps.get(name)?, rest2);
        } else {
            self.fields.get(first)?
        };
        descend(root, rest)
    }

    /// Applies an op and records it in the current scope's change log.
    pub fn apply(&mut self, op: PatchOp) -> Result<(), ContextError> {
        self.apply_unlogged(&op)?;
        self.log.push(op);
        if self.log.len() >= self.compact_at {
            compact(&mut self.log);
            self.compact_at = (self.log.len() * 2).max(MIN_COMPACT);
        }
        Ok(())
    }

    /// Records that step `name` produced `output` (the `steps.NAME` entry).
    pub fn set_step_output(&mut self, name: &str, output: Arc<Value>) {
        self.steps.insert(name.to_owned(), output.clone());
        self.log.push(PatchOp::Set { path: vec!["steps".to_owned(), name.to_owned()], value: output });
        if self.log.len() >= self.compact_at {
            compact(&mut self.log);
            self.compact_at = (self.log.len() * 2).max(MIN_COMPACT);
        }
    }

    /// Applies an op without logging it.
    pub fn apply_unlogged(&mut self, op: &PatchOp) -> Result<(), ContextError> {
        let path = op.path();
        let (first, rest) = path.split_first().ok_or(ContextError::EmptyPath)?;
        let (map, key, rest) = if first == "steps" {
            match rest.split_first() {
                Some((name, rest2)) => (&mut self.steps, name, rest2),
                None => return Err(ContextError::ReadOnly("steps".to_owned())),
            }
        } else {
            (&mut self.fields, first, rest)
        };
        match op {
            PatchOp::Set { value, .. } if rest.is_empty() => {
                map.insert(key.clone(), value.clone());
                Ok(())
            }
            PatchOp::Set { value, .. } => {
                let slot = map.entry(key.clone()).or_insert_with(|| Arc::new(Value::Object(Map::new())));
                let target = navigate_create(Arc::make_mut(slot), rest, path)?;
                *target = (**value).clone();
                Ok(())
            }
            PatchOp::Append { value, .. } => {
                let slot = map.entry(key.clone()).or_insert_with(|| Arc::new(Value::Array(Vec::new())));
                let root = Arc::make_mut(slot);
                let target = if rest.is_empty() { root } else { navigate_create(root, rest, path)? };
                if target.is_null() {
                    *target = Value::Array(Vec::new());
                }
                match target {
                    Value::Array(items) => {
                        items.push((**value).clone());
                        Ok(())
                    }
                    _ => Err(ContextError::NotAnArray { path: path.join(".") }),
                }
            }
        }
    }

    /// Opens a nested change-log scope: ops applied until [`Context::close_scope`] belong to it.
    pub fn open_scope(&mut self) -> LogScope {
        LogScope {
            outer: std::mem::take(&mut self.log),
            outer_compact_at: std::mem::replace(&mut self.compact_at, MIN_COMPACT),
        }
    }

    /// Closes a scope and returns its ops (compacted when `compact_ops`). The outer log is restored *without*
    /// the scope's ops: call [`Context::absorb`] to add them once they have been journaled.
    pub fn close_scope(&mut self, scope: LogScope, compact_ops: bool) -> Vec<PatchOp> {
        let mut ops = std::mem::replace(&mut self.log, scope.outer);
        self.compact_at = scope.outer_compact_at;
        if compact_ops {
            compact(&mut ops);
        }
        ops
    }

    /// Appends already-applied ops to the current scope's log (after a nested scope was closed).
    pub fn absorb(&mut self, ops: Vec<PatchOp>) {
        if self.log.is_empty() {
            self.log = ops;
        } else {
            self.log.extend(ops);
        }
        if self.log.len() >= self.compact_at {
            compact(&mut self.log);
            self.compact_at = (self.log.len() * 2).max(MIN_COMPACT);
        }
    }

    /// Drops the current scope's log entries after index `len` (used to roll back a rejected update
    /// together with restoring a snapshot).
    pub fn truncate_log(&mut self, len: usize) {
        self.log.truncate(len);
    }

    /// The number of ops in the current scope's log (a mark for [`Context::truncate_log`]).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The ops recorded in the current scope so far.
    pub fn log(&self) -> &[PatchOp] {
        &self.log
    }

    /// Replaces data (not the log) with a snapshot's: used to roll back a rejected update.
    pub fn restore_data(&mut self, snapshot: &ContextSnapshot) {
        self.fields = snapshot.fields.clone();
        self.steps = snapshot.steps.clone();
    }

    /// The user fields only (framework fields excluded), as a JSON object: what a context schema validates.
    pub fn user_json(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .filter(|(k, _)| !FRAMEWORK_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect(),
        )
    }

    /// The whole context as JSON: all fields plus `steps`.
    pub fn to_json(&self) -> Value {
        let mut out: Map<String, Value> = self.fields.iter().map(|(k, v)| (k.clone(), (**v).clone())).collect();
        out.insert(
            "steps".to_owned(),
            Value::Object(self.steps.iter().map(|(k, v)| (k.clone(), (**v).clone())).collect()),
        );
        Value::Object(out)
    }
}

fn descend<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn navigate_create<'a>(mut v: &'a mut Value, rest: &[String], full: &[String]) -> Result<&'a mut Value, ContextError> {
    for seg in rest {
        if v.is_null() {
            *v = Value::Object(Map::new());
        }
        v = match v {
            Value::Object(m) => m.entry(seg.clone()).or_insert(Value::Null),
            _ => return Err(ContextError::NotAnObject { path: full.join("."), segment: seg.clone() }),
        };
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::split_context_path as p;
    use serde_json::json;

    fn ctx() -> Context {
        Context::new("r1", json!("hi"), Map::new())
    }

    #[test]
    fn nested_set_creates_objects_and_is_logged() {
        let mut c = ctx();
        c.apply(PatchOp::set(p("a.b.c"), json!(1))).unwrap();
        assert_eq!(c.lookup(&p("a.b.c")), Some(&json!(1)));
        assert_eq!(c.log().len(), 1);
    }

    #[test]
    fn isolated_copy_does_not_see_later_writes() {
        let mut c = ctx();
        c.apply(PatchOp::set(p("a"), json!({"x": 1}))).unwrap();
        let copy = c.isolated(None);
        c.apply(PatchOp::set(p("a.x"), json!(2))).unwrap();
        assert_eq!(copy.lookup(&p("a.x")), Some(&json!(1)));
        assert_eq!(c.lookup(&p("a.x")), Some(&json!(2)));
        assert!(copy.log().is_empty());
    }

    #[test]
    fn include_keys_narrow_the_copy() {
        let mut c = ctx();
        c.apply(PatchOp::set(p("a"), json!(1))).unwrap();
        c.apply(PatchOp::set(p("b"), json!(2))).unwrap();
        let copy = c.isolated(Some(&["a".to_owned()]));
        assert!(copy.field("a").is_some());
        assert!(copy.field("b").is_none());
        assert!(copy.field("run_id").is_some());
    }

    #[test]
    fn set_through_scalar_is_an_error() {
        let mut c = ctx();
        c.apply(PatchOp::set(p("a"), json!(1))).unwrap();
        let err = c.apply(PatchOp::set(p("a.b"), json!(1))).unwrap_err();
        assert!(matches!(err, ContextError::NotAnObject { .. }));
    }

    #[test]
    fn scopes_collect_their_own_ops() {
        let mut c = ctx();
        c.apply(PatchOp::set(p("outer"), json!(1))).unwrap();
        let s = c.open_scope();
        c.apply(PatchOp::set(p("inner"), json!(1))).unwrap();
        c.set_step_output("s", Arc::new(json!(5)));
        let ops = c.close_scope(s, true);
        assert_eq!(ops.len(), 2);
        assert_eq!(c.log().len(), 1);
        c.absorb(ops);
        assert_eq!(c.log().len(), 3);
        assert_eq!(c.lookup(&p("steps.s")), Some(&json!(5)));
    }

    #[test]
    fn log_stays_bounded_under_repeated_writes() {
        let mut c = ctx();
        for i in 0..10_000 {
            c.set_step_output("body", Arc::new(json!(i)));
        }
        assert!(c.log().len() <= MIN_COMPACT);
    }

    #[test]
    fn append_creates_and_extends_arrays() {
        let mut c = ctx();
        c.apply(PatchOp::Append { path: p("hitl_history"), value: Arc::new(json!(1)) }).unwrap();
        c.apply(PatchOp::Append { path: p("hitl_history"), value: Arc::new(json!(2)) }).unwrap();
        assert_eq!(c.field("hitl_history").map(|v| (**v).clone()), Some(json!([1, 2])));
    }
}
