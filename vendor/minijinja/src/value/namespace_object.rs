use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::value::{Enumerator, Object, Value};

/// This object exists for the `namespace` function.
///
/// It's special in that it behaves like a dictionary in many ways but it's the only
/// object that can be used with `{% set %}` assignments.  This is used internally
/// in the vm via downcasting.
#[derive(Debug, Default)]
pub(crate) struct Namespace {
    data: Mutex<BTreeMap<Arc<str>, Value>>,
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.data.lock().unwrap().get(some!(key.as_str())).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let data = self.data.lock().unwrap();
        let keys = data.keys().cloned().map(Value::from);
        Enumerator::Values(keys.collect())
    }
}

impl Namespace {
    /// flujo: a namespace, counted by [`crate::limits::live_namespaces`].
    pub(crate) fn new() -> Namespace {
        crate::limits::LIVE_NAMESPACES.with(|n| n.set(n.get() + 1));
        Namespace::default()
    }

    pub(crate) fn set_value(&self, key: &str, value: Value) {
        self.data.lock().unwrap().insert(key.into(), value);
    }

    /// flujo: drops the values, breaking reference cycles (`{% set ns.me = ns %}` kept the namespace alive
    /// forever: a leak per render, found by the `template_render` fuzz target); see `limits::track_namespace`.
    pub(crate) fn clear(&self) {
        let values = std::mem::take(&mut *self.data.lock().unwrap());
        drop(values);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        crate::limits::LIVE_NAMESPACES.with(|n| n.set(n.get().saturating_sub(1)));
    }
}
