//! Conversions between `serde_json::Value` and minijinja values, and the lazy objects of a render scope.
//!
//! JSON held by the run context (`Arc<Value>`) is exposed to templates through [`JsonView`], a minijinja
//! object that points into the shared JSON and descends only along the attributes a template actually reads:
//! a 1 MiB context field that a template does not use costs nothing, and one it reads a single key of costs one
//! lookup. Scalars are handed over as native minijinja values so that arithmetic and comparisons behave
//! natively. Values a scope only borrows are converted eagerly by [`from_json`], and only when the template
//! references them. [`to_json`] maps results back faithfully (integers stay `i64`/`u64`, floats `f64`, key
//! order is kept, undefined and none become `null`).

use std::fmt;
use std::sync::{Arc, OnceLock};

use flujo_core::context::ContextSnapshot;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value as MjValue, ValueKind};
use serde_json::{Map, Number, Value};

use crate::error::TemplateError;

/// Values nested deeper than this are refused by [`to_json`] (a guard against pathological structures).
const MAX_DEPTH: usize = 512;

/// Eagerly converts JSON into a native minijinja value.
pub(crate) fn from_json(v: &Value) -> MjValue {
    match v {
        Value::Null => MjValue::from(()),
        Value::Bool(b) => MjValue::from(*b),
        Value::Number(n) => number_to_mj(n),
        Value::String(s) => MjValue::from(s.as_str()),
        Value::Array(items) => MjValue::from(items.iter().map(from_json).collect::<Vec<_>>()),
        Value::Object(map) => map.iter().map(|(k, v)| (MjValue::from(k.as_str()), from_json(v))).collect(),
    }
}

fn number_to_mj(n: &Number) -> MjValue {
    if let Some(i) = n.as_i64() {
        MjValue::from(i)
    } else if let Some(u) = n.as_u64() {
        MjValue::from(u)
    } else {
        MjValue::from(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Exposes `node` (a part of the shared JSON `root` at `path`) as a minijinja value: scalars natively,
/// arrays and objects as a lazy [`JsonView`].
fn view_of(root: &Arc<Value>, path: &[PathSeg], node: &Value) -> MjValue {
    match node {
        Value::Null => MjValue::from(()),
        Value::Bool(b) => MjValue::from(*b),
        Value::Number(n) => number_to_mj(n),
        Value::String(s) => MjValue::from(s.as_str()),
        Value::Array(_) | Value::Object(_) => {
            MjValue::from_object(JsonView { root: Arc::clone(root), path: path.to_vec() })
        }
    }
}

/// Exposes a shared JSON value without copying it.
pub(crate) fn shared(root: &Arc<Value>) -> MjValue {
    view_of(root, &[], root)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PathSeg {
    Key(Arc<str>),
    Index(usize),
}

/// A read-only view of an array or object inside shared JSON.
pub(crate) struct JsonView {
    root: Arc<Value>,
    path: Vec<PathSeg>,
}

impl fmt::Debug for JsonView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonView").field("path", &self.path).finish_non_exhaustive()
    }
}

impl JsonView {
    /// The JSON node this view points at.
    pub(crate) fn node(&self) -> &Value {
        let mut node = &*self.root;
        for seg in &self.path {
            node = match (node, seg) {
                (Value::Object(m), PathSeg::Key(k)) => m.get(&**k).unwrap_or(&Value::Null),
                (Value::Array(a), PathSeg::Index(i)) => a.get(*i).unwrap_or(&Value::Null),
                _ => &Value::Null,
            };
        }
        node
    }

    fn child(&self, seg: PathSeg, node: &Value) -> MjValue {
        match node {
            Value::Array(_) | Value::Object(_) => {
                let mut path = Vec::with_capacity(self.path.len() + 1);
                path.extend_from_slice(&self.path);
                path.push(seg);
                MjValue::from_object(JsonView { root: Arc::clone(&self.root), path })
            }
            _ => view_of(&self.root, &[], node),
        }
    }

    fn lookup_key(&self, key: &str) -> Option<MjValue> {
        match self.node() {
            Value::Object(m) => {
                let (k, v) = m.get_key_value(key)?;
                Some(self.child(PathSeg::Key(Arc::from(k.as_str())), v))
            }
            _ => None,
        }
    }
}

impl Object for JsonView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node() {
            Value::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        match self.node() {
            Value::Array(items) => {
                let i = i64::try_from(key.clone()).ok()?;
                let i = if i < 0 { i.checked_add(i64::try_from(items.len()).ok()?)? } else { i };
                let i = usize::try_from(i).ok()?;
                let item = items.get(i)?;
                Some(self.child(PathSeg::Index(i), item))
            }
            Value::Object(_) => self.lookup_key(key.as_str()?),
            _ => None,
        }
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<MjValue> {
        self.lookup_key(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            Value::Array(items) => Enumerator::Seq(items.len()),
            Value::Object(m) => Enumerator::Values(m.keys().map(|k| MjValue::from(k.as_str())).collect()),
            _ => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match self.node() {
            Value::Array(items) => Some(items.len()),
            Value::Object(m) => Some(m.len()),
            _ => Some(0),
        }
    }
}

/// `context`: the context's fields plus `steps`, looked up lazily.
#[derive(Debug)]
pub(crate) struct ContextObject {
    pub snapshot: ContextSnapshot,
    pub steps: OnceLock<MjValue>,
}

impl ContextObject {
    pub(crate) fn new(snapshot: ContextSnapshot) -> Self {
        ContextObject { snapshot, steps: OnceLock::new() }
    }

    fn lookup(&self, key: &str) -> Option<MjValue> {
        if let Some(v) = self.snapshot.field(key) {
            return Some(shared(v));
        }
        if key == "steps" {
            let snapshot = &self.snapshot;
            return Some(
                self.steps.get_or_init(|| MjValue::from_object(StepsObject { snapshot: snapshot.clone() })).clone(),
            );
        }
        None
    }
}

impl Object for ContextObject {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        self.lookup(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<MjValue> {
        self.lookup(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<MjValue> = self.snapshot.fields().map(|(k, _)| MjValue::from(k.as_str())).collect();
        if self.snapshot.field("steps").is_none() {
            keys.push(MjValue::from("steps"));
        }
        Enumerator::Values(keys)
    }
}

/// `steps`: step outputs by step name, looked up lazily.
#[derive(Debug)]
pub(crate) struct StepsObject {
    pub snapshot: ContextSnapshot,
}

impl Object for StepsObject {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        self.snapshot.step_output(key.as_str()?).map(shared)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<MjValue> {
        self.snapshot.step_output(key).map(shared)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.snapshot.step_outputs().map(|(k, _)| MjValue::from(k.as_str())).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.snapshot.step_count())
    }
}

/// Maps a minijinja value back to JSON: undefined and none become `null`, integers stay integers (`i64`,
/// else `u64`; an integer outside both ranges is an error), a float that is not finite is an error, map keys
/// become strings. The JSON built (strings, the size of a JSON value per item, and a key's and its hash's per
/// map entry) may not exceed [`crate::MAX_BUILT_BYTES`]: a lazy `[s] * n` of a long string `s` would otherwise be
/// copied `n` times, and `[[x] * 10**5] * 10**5` is small until it is converted.
pub(crate) fn to_json(v: &MjValue) -> Result<Value, TemplateError> {
    let mut left = crate::env::built_bytes();
    to_json_at(v, 0, &mut left)
}

/// What one JSON value costs in memory (in an array, or as a map entry's value).
const ITEM_BYTES: usize = std::mem::size_of::<Value>();
/// What a map entry costs beyond its value: the key's `String` and the index map's hash.
const ENTRY_BYTES: usize = std::mem::size_of::<String>() + std::mem::size_of::<u64>();

fn spend(left: &mut usize, bytes: usize) -> Result<(), TemplateError> {
    match left.checked_sub(bytes) {
        Some(rest) => {
            *left = rest;
            Ok(())
        }
        None => Err(TemplateError::render(format!(
            "invalid operation: value too large: the result exceeds {} bytes",
            crate::MAX_BUILT_BYTES
        ))),
    }
}

fn to_json_at(v: &MjValue, depth: usize, left: &mut usize) -> Result<Value, TemplateError> {
    if depth > MAX_DEPTH {
        return Err(TemplateError::render(format!("value nested deeper than {MAX_DEPTH} levels")));
    }
    if let Some(view) = v.downcast_object_ref::<JsonView>() {
        // the run's own data, already in memory: not counted
        return Ok(view.node().clone());
    }
    spend(left, ITEM_BYTES)?;
    Ok(match v.kind() {
        ValueKind::Undefined | ValueKind::None => Value::Null,
        ValueKind::Bool => Value::Bool(v.is_true()),
        ValueKind::Number => number_to_json(v)?,
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            spend(left, s.len())?;
            Value::String(s.to_owned())
        }
        ValueKind::Bytes => Value::Array(v.as_bytes().unwrap_or_default().iter().map(|b| Value::from(*b)).collect()),
        ValueKind::Seq | ValueKind::Iterable => {
            let iter = v.try_iter().map_err(|e| crate::error::from_minijinja(&e))?;
            // never more room than the budget can fill
            let mut items = Vec::with_capacity(iter.size_hint().0.min(*left / ITEM_BYTES));
            for item in iter {
                items.push(to_json_at(&item, depth + 1, left)?);
            }
            Value::Array(items)
        }
        ValueKind::Map => {
            let mut map = Map::new();
            if let Some(obj) = v.as_object() {
                if let Some(pairs) = obj.try_iter_pairs() {
                    for (key, value) in pairs {
                        let key = match key.as_str() {
                            Some(s) => s.to_owned(),
                            None => minijinja::limits::format_bounded(format_args!("{key}"))
                                .map_err(|e| crate::error::from_minijinja(&e))?,
                        };
                        spend(left, ENTRY_BYTES + key.len())?;
                        map.insert(key, to_json_at(&value, depth + 1, left)?);
                    }
                }
            }
            Value::Object(map)
        }
        ValueKind::Plain => Value::String(
            minijinja::limits::format_bounded(format_args!("{v}")).map_err(|e| crate::error::from_minijinja(&e))?,
        ),
        // an invalid value carries an error: surface it
        _ => return Err(TemplateError::render(format!("invalid value: {v}"))),
    })
}

fn number_to_json(v: &MjValue) -> Result<Value, TemplateError> {
    if v.is_integer() {
        if let Ok(i) = i64::try_from(v.clone()) {
            return Ok(Value::from(i));
        }
        if let Ok(u) = u64::try_from(v.clone()) {
            return Ok(Value::from(u));
        }
        return Err(TemplateError::render(format!(
            "invalid operation: integer overflow: {v} does not fit in a 64-bit integer"
        )));
    }
    f64::try_from(v.clone())
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| TemplateError::render(format!("invalid operation: the result {v} is not a finite number")))
}
