//! Context patches: the journaled description of what a step changed in the run context.
//!
//! A patch is an ordered list of [`PatchOp`]s. Applying the same patch to the same context always yields the
//! same result, which is what makes replay deterministic. Patches of composite steps (loops, parallel, …) are
//! the concatenation of their children's patches, compacted so that their size is bounded by the number of
//! distinct paths written, not by the number of iterations.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One change to the context. `path[0]` is a top-level context field; `["steps", NAME]` addresses the
/// outputs-by-step-name map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PatchOp {
    /// Set the value at `path`, creating intermediate objects.
    Set {
        /// The segments of the target: a top-level field (or `steps` and a step name), then keys below it.
        path: Vec<String>,
        /// The value written.
        value: Arc<Value>,
    },
    /// Append `value` to the array at `path` (created when absent).
    Append {
        /// The segments of the array: a top-level field, then keys below it.
        path: Vec<String>,
        /// The item appended.
        value: Arc<Value>,
    },
}

impl PatchOp {
    /// The path the op writes.
    pub fn path(&self) -> &[String] {
        match self {
            PatchOp::Set { path, .. } | PatchOp::Append { path, .. } => path,
        }
    }

    /// A [`PatchOp::Set`] of `value` at `path`.
    pub fn set(path: Vec<String>, value: impl Into<Arc<Value>>) -> Self {
        PatchOp::Set { path, value: value.into() }
    }

    /// True when the op writes a framework bookkeeping field rather than user data.
    pub fn is_framework(&self) -> bool {
        matches!(self.path().first().map(String::as_str), Some("steps" | "hitl_history"))
    }
}

/// Splits a dotted context path (`a.b.c`, optionally prefixed with `context.`) into segments.
pub fn split_context_path(path: &str) -> Vec<String> {
    let trimmed = path.strip_prefix("context.").unwrap_or(path);
    trimmed.split('.').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Removes ops made redundant by later ops: a `Set` followed by a `Set` (or prefix `Set`) of the same path.
/// `Append`s are kept in order, except when a later `Set` replaces their whole array.
/// The result applied to any context gives the same context as the input list.
pub fn compact(ops: &mut Vec<PatchOp>) {
    if ops.len() < 2 {
        return;
    }
    // Walk backwards; remember paths that a later Set fully overwrites. A step's patch usually holds a few
    // ops: a list is searched then (hashing every prefix would cost more), a map beyond that.
    const SCAN: usize = 16;
    let mut few: Vec<&[String]> = Vec::new();
    let mut many: foldhash::HashMap<&[String], ()> = foldhash::HashMap::default();
    let mut keep = vec![true; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        let path = op.path();
        // Covered if this path or any prefix was Set later.
        let covered = if many.is_empty() {
            few.iter().any(|set| !set.is_empty() && path.starts_with(set))
        } else {
            (1..=path.len()).any(|n| many.contains_key(&path[..n]))
        };
        if covered {
            keep[i] = false;
            continue;
        }
        if let PatchOp::Set { .. } = op {
            if many.is_empty() && few.len() < SCAN {
                few.push(path);
            } else {
                if many.is_empty() {
                    many.extend(few.drain(..).map(|p| (p, ())));
                }
                many.insert(path, ());
            }
        }
    }
    drop(many);
    drop(few);
    let mut idx = 0;
    ops.retain(|_| {
        let k = keep[idx];
        idx += 1;
        k
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Vec<String> {
        split_context_path(s)
    }

    /// The list and the map give the same result: many distinct paths (past the list's size), each set twice,
    /// children under a later parent set, appends.
    #[test]
    fn compact_is_the_same_past_the_small_list() {
        let mut ops = Vec::new();
        for round in 0..2 {
            for i in 0..40 {
                ops.push(PatchOp::set(p(&format!("k{i}")), json!(round)));
                ops.push(PatchOp::set(p(&format!("parent.c{i}")), json!(i)));
            }
        }
        ops.push(PatchOp::set(p("parent"), json!({})));
        let mut compacted = ops.clone();
        compact(&mut compacted);
        // Only the second round of `k*` and the parent survive.
        assert_eq!(compacted.len(), 41);
        assert!(compacted[..40].iter().all(|op| matches!(op, PatchOp::Set { value, .. } if **value == json!(1))));
        assert_eq!(compacted[40].path(), p("parent").as_slice());
    }

    #[test]
    fn compact_keeps_last_set_per_path() {
        let mut ops =
            vec![PatchOp::set(p("a"), json!(1)), PatchOp::set(p("b"), json!(1)), PatchOp::set(p("a"), json!(2))];
        compact(&mut ops);
        assert_eq!(ops, vec![PatchOp::set(p("b"), json!(1)), PatchOp::set(p("a"), json!(2))]);
    }

    #[test]
    fn compact_drops_child_writes_under_later_parent_set() {
        let mut ops = vec![
            PatchOp::set(p("a.x"), json!(1)),
            PatchOp::Append { path: p("a.list"), value: Arc::new(json!(1)) },
            PatchOp::set(p("a"), json!({})),
            PatchOp::set(p("a.y"), json!(3)),
        ];
        compact(&mut ops);
        assert_eq!(ops, vec![PatchOp::set(p("a"), json!({})), PatchOp::set(p("a.y"), json!(3))]);
    }

    #[test]
    fn compact_keeps_appends_in_order() {
        let mut ops = vec![
            PatchOp::Append { path: p("h"), value: Arc::new(json!(1)) },
            PatchOp::Append { path: p("h"), value: Arc::new(json!(2)) },
        ];
        let before = ops.clone();
        compact(&mut ops);
        assert_eq!(ops, before);
    }

    #[test]
    fn split_path_strips_context_prefix() {
        assert_eq!(split_context_path("context.a.b"), vec!["a", "b"]);
        assert_eq!(split_context_path("a"), vec!["a"]);
    }
}
