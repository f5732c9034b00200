//! Merging the context changes of parallel branches (merge strategies) and reducing branch outputs.
//!
//! Each branch ran on an isolated copy and recorded its changes as ops. Merging decides which ops reach the
//! parent context. Framework ops (`steps.*`, `hitl_history`) always merge in declaration order; user writes
//! follow the strategy.

use std::collections::HashMap;
use std::sync::Arc;

use flujo_core::{patch::compact, MergeStrategy, PatchOp, ReduceMode, Value};

/// Deep-merges two objects; scalar (or list) leaves that differ are a conflict, reported by dotted key.
fn deep_merge(a: &Value, b: &Value, at: &str) -> Result<Value, String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = x.clone();
            for (k, vb) in y {
                let key = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                let merged = match x.get(k) {
                    Some(va) => deep_merge(va, vb, &key)?,
                    None => vb.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        _ if a == b => Ok(a.clone()),
        _ => Err(at.to_owned()),
    }
}

/// The user writes merged so far, indexed so that finding another branch's overlapping write costs one hash
/// lookup per path component instead of a scan of every earlier write (which made merging N concurrent map
/// items O(N²)). Keys are incremental hashes of path prefixes; candidates are checked against the real path,
/// so a hash collision costs a comparison, never a wrong answer.
#[derive(Default)]
struct Writes {
    /// (path, value, branch, index in the merged ops), in merge order.
    list: Vec<(Vec<String>, Arc<Value>, String, usize)>,
    /// Hash of a full path → indices into `list` of the writes at exactly that path.
    at: foldhash::HashMap<u64, Vec<usize>>,
    /// Hash of a proper prefix → indices of the writes below it.
    below: foldhash::HashMap<u64, Vec<usize>>,
}

/// The hashes of `path[..1]`, `path[..2]`, …, `path[..]`.
fn prefix_hashes(path: &[String]) -> Vec<u64> {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0).build_hasher();
    path.iter()
        .map(|c| {
            c.hash(&mut h);
            h.finish()
        })
        .collect()
}

impl Writes {
    fn push(&mut self, path: Vec<String>, value: Arc<Value>, branch: String, out_index: usize) {
        let i = self.list.len();
        let hashes = prefix_hashes(&path);
        if let Some((full, prefixes)) = hashes.split_last() {
            for h in prefixes {
                self.below.entry(*h).or_default().push(i);
            }
            self.at.entry(*full).or_default().push(i);
        }
        self.list.push((path, value, branch, out_index));
    }

    /// The earliest write of another branch at `path`, above it or below it.
    fn first_overlap(&self, path: &[String], branch: &str) -> Option<usize> {
        let hashes = prefix_hashes(path);
        let first = |ids: Option<&Vec<usize>>, matches: &dyn Fn(&[String]) -> bool| {
            ids?.iter().copied().find(|&i| self.list[i].2 != branch && matches(&self.list[i].0))
        };
        let mut best: Option<usize> = None;
        for (n, h) in hashes.iter().enumerate() {
            let prefix = &path[..=n];
            if let Some(i) = first(self.at.get(h), &|p| p == prefix) {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        }
        if let Some(h) = hashes.last() {
            if let Some(i) = first(self.below.get(h), &|p| p.len() > path.len() && p.starts_with(path)) {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        }
        best
    }
}

/// Merges branch ops (branches in declaration order) into the ops to apply to the parent context.
pub fn merge_branches(strategy: MergeStrategy, branches: &[(String, Vec<PatchOp>)]) -> Result<Vec<PatchOp>, String> {
    if strategy == MergeStrategy::NoMerge {
        return Ok(Vec::new());
    }
    let mut out: Vec<PatchOp> = Vec::new();
    let mut written = Writes::default();
    for (name, ops) in branches {
        let mut ops = ops.clone();
        compact(&mut ops);
        for op in ops {
            if op.is_framework() || matches!(op, PatchOp::Append { .. }) {
                out.push(op);
                continue;
            }
            let PatchOp::Set { path, value } = &op else { continue };
            let prior = written.first_overlap(path, name);
            let written_list = &mut written.list;
            match (strategy, prior) {
                (_, None) | (MergeStrategy::Overwrite, _) => {
                    written.push(path.clone(), value.clone(), name.clone(), out.len());
                    out.push(op);
                }
                (MergeStrategy::KeepFirst, Some(_)) => {}
                (MergeStrategy::ErrorOnConflict, Some(i)) => {
                    return Err(format!(
                        "context conflict on '{}' between branches '{}' and '{name}' (merge_strategy error_on_conflict)",
                        path.join("."),
                        written_list[i].2
                    ));
                }
                (MergeStrategy::ContextUpdate, Some(i)) => {
                    let (prev_path, prev_val, prev_branch, idx) = written_list[i].clone();
                    if prev_path != *path {
                        // Nested write under/over another branch's write: merge only if it agrees.
                        return Err(format!(
                            "context conflict on '{}' between branches '{prev_branch}' and '{name}'",
                            path.join(".")
                        ));
                    }
                    let merged = deep_merge(&prev_val, value, &path.join(".")).map_err(|key| {
                        format!("context conflict on '{key}' between branches '{prev_branch}' and '{name}'")
                    })?;
                    let merged = Arc::new(merged);
                    out[idx] = PatchOp::Set { path: path.clone(), value: merged.clone() };
                    written_list[i].1 = merged;
                }
                (MergeStrategy::NoMerge, _) => {}
                (other, Some(_)) => return Err(format!("merge_strategy {other:?} is not supported by this engine")),
            }
        }
    }
    Ok(out)
}

/// Reduces `{branch: output}` (declaration order) to one value.
pub fn reduce(mode: ReduceMode, outputs: &[(String, Value)]) -> Value {
    match mode {
        ReduceMode::Keys => Value::Array(outputs.iter().map(|(k, _)| Value::String(k.clone())).collect()),
        ReduceMode::Values => Value::Array(outputs.iter().map(|(_, v)| v.clone()).collect()),
        ReduceMode::First => outputs.first().map(|(_, v)| v.clone()).unwrap_or(Value::Null),
        ReduceMode::Last => outputs.last().map(|(_, v)| v.clone()).unwrap_or(Value::Null),
        ReduceMode::Concat => {
            let mut items = Vec::new();
            let mut text = String::new();
            let all_strings = outputs.iter().all(|(_, v)| v.is_string());
            if all_strings && !outputs.is_empty() {
                for (_, v) in outputs {
                    text.push_str(v.as_str().unwrap_or_default());
                }
                return Value::String(text);
            }
            for (_, v) in outputs {
                match v {
                    Value::Array(a) => items.extend(a.iter().cloned()),
                    other => items.push(other.clone()),
                }
            }
            Value::Array(items)
        }
        ReduceMode::Union => {
            if outputs.iter().all(|(_, v)| v.is_object()) {
                let mut m = serde_json::Map::new();
                for (_, v) in outputs {
                    if let Value::Object(o) = v {
                        for (k, x) in o {
                            m.insert(k.clone(), x.clone());
                        }
                    }
                }
                return Value::Object(m);
            }
            let mut items: Vec<Value> = Vec::new();
            for (_, v) in outputs {
                let vs: Vec<Value> = match v {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                for x in vs {
                    if !items.contains(&x) {
                        items.push(x);
                    }
                }
            }
            Value::Array(items)
        }
        ReduceMode::CodeConsensus => {
            let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
            for (i, (_, v)) in outputs.iter().enumerate() {
                if let Some(s) = v.as_str() {
                    let e = counts.entry(s.trim()).or_insert((0, i));
                    e.0 += 1;
                }
            }
            match counts.values().max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1))) {
                Some((n, i)) if *n > 1 => outputs[*i].1.clone(),
                _ => reduce(ReduceMode::MajorityVote, outputs),
            }
        }
        ReduceMode::MajorityVote => {
            let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
            for (i, (_, v)) in outputs.iter().enumerate() {
                let e = counts.entry(v.to_string()).or_insert((0, i));
                e.0 += 1;
            }
            counts
                .values()
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
                .map(|(_, i)| outputs[*i].1.clone())
                .unwrap_or(Value::Null)
        }
        // A mode added to the core after this engine: the outputs as they are, in branch order.
        _ => Value::Array(outputs.iter().map(|(_, v)| v.clone()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::patch::split_context_path as p;
    use serde_json::json;

    fn set(path: &str, v: Value) -> PatchOp {
        PatchOp::set(p(path), v)
    }

    fn two(a: Vec<PatchOp>, b: Vec<PatchOp>) -> Vec<(String, Vec<PatchOp>)> {
        vec![("a".into(), a), ("b".into(), b)]
    }

    #[test]
    fn context_update_conflict_names_key_and_branches() {
        let e = merge_branches(MergeStrategy::ContextUpdate, &two(vec![set("x", json!(1))], vec![set("x", json!(2))]))
            .unwrap_err();
        assert!(e.contains("'x'") && e.contains("'a'") && e.contains("'b'"), "{e}");
    }

    #[test]
    fn context_update_merges_disjoint_objects_and_equal_values() {
        let ops = merge_branches(
            MergeStrategy::ContextUpdate,
            &two(
                vec![set("o", json!({"p": 1})), set("same", json!(3))],
                vec![set("o", json!({"q": 2})), set("same", json!(3))],
            ),
        )
        .unwrap();
        let mut ctx = flujo_core::Context::new("r", json!(null), Default::default());
        for op in ops {
            ctx.apply(op).unwrap();
        }
        assert_eq!(ctx.lookup(&p("o")), Some(&json!({"p": 1, "q": 2})));
        assert_eq!(ctx.lookup(&p("same")), Some(&json!(3)));
    }

    #[test]
    fn overwrite_last_declared_wins_and_keep_first_first_wins() {
        let b = two(vec![set("x", json!(1))], vec![set("x", json!(2))]);
        let apply = |ops: Vec<PatchOp>| {
            let mut ctx = flujo_core::Context::new("r", json!(null), Default::default());
            for op in ops {
                ctx.apply(op).unwrap();
            }
            ctx.lookup(&p("x")).cloned()
        };
        assert_eq!(apply(merge_branches(MergeStrategy::Overwrite, &b).unwrap()), Some(json!(2)));
        assert_eq!(apply(merge_branches(MergeStrategy::KeepFirst, &b).unwrap()), Some(json!(1)));
        assert!(merge_branches(
            MergeStrategy::ErrorOnConflict,
            &two(vec![set("x", json!(1))], vec![set("x", json!(1))])
        )
        .is_err());
        assert!(merge_branches(MergeStrategy::NoMerge, &b).unwrap().is_empty());
    }

    #[test]
    fn reducers() {
        let outs =
            vec![("a".to_owned(), json!([1, 2])), ("b".to_owned(), json!([2, 3])), ("c".to_owned(), json!([2, 3]))];
        assert_eq!(reduce(ReduceMode::Keys, &outs), json!(["a", "b", "c"]));
        assert_eq!(reduce(ReduceMode::Concat, &outs), json!([1, 2, 2, 3, 2, 3]));
        assert_eq!(reduce(ReduceMode::Union, &outs), json!([1, 2, 3]));
        assert_eq!(reduce(ReduceMode::MajorityVote, &outs), json!([2, 3]));
        // code_consensus: trimmed strings that agree win; without agreement, the majority vote
        let code = |vals: Vec<Value>| -> Vec<(String, Value)> {
            vals.into_iter().enumerate().map(|(i, v)| (format!("b{i}"), v)).collect()
        };
        let agreeing = code(vec![json!("x = 1\n"), json!("y = 2"), json!(" x = 1"), json!(7), json!(7), json!(7)]);
        assert_eq!(reduce(ReduceMode::CodeConsensus, &agreeing), json!("x = 1\n"));
        let disagreeing = code(vec![json!("a"), json!("b"), json!(7), json!(7)]);
        assert_eq!(reduce(ReduceMode::CodeConsensus, &disagreeing), json!(7));
        assert_eq!(reduce(ReduceMode::First, &outs), json!([1, 2]));
        assert_eq!(reduce(ReduceMode::Last, &outs), json!([2, 3]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn overlaps(a: &[String], b: &[String]) -> bool {
            let n = a.len().min(b.len());
            a[..n] == b[..n]
        }

        /// The first merge: a linear scan of every earlier write (O(N²) in writes), kept as the model the
        /// indexed merge must agree with.
        fn reference_merge(
            strategy: MergeStrategy,
            branches: &[(String, Vec<PatchOp>)],
        ) -> Result<Vec<PatchOp>, String> {
            if strategy == MergeStrategy::NoMerge {
                return Ok(Vec::new());
            }
            let mut out: Vec<PatchOp> = Vec::new();
            let mut written: Vec<(Vec<String>, Arc<Value>, String, usize)> = Vec::new();
            for (name, ops) in branches {
                let mut ops = ops.clone();
                compact(&mut ops);
                for op in ops {
                    if op.is_framework() || matches!(op, PatchOp::Append { .. }) {
                        out.push(op);
                        continue;
                    }
                    let PatchOp::Set { path, value } = &op else { continue };
                    let prior = written.iter().position(|(p, _, b, _)| b != name && overlaps(p, path));
                    match (strategy, prior) {
                        (_, None) | (MergeStrategy::Overwrite, _) => {
                            written.push((path.clone(), value.clone(), name.clone(), out.len()));
                            out.push(op);
                        }
                        (MergeStrategy::KeepFirst, Some(_)) => {}
                        (MergeStrategy::ErrorOnConflict, Some(i)) => {
                            return Err(format!("conflict {} {}", path.join("."), written[i].2));
                        }
                        (MergeStrategy::ContextUpdate, Some(i)) => {
                            let (prev_path, prev_val, _, idx) = written[i].clone();
                            if prev_path != *path {
                                return Err("nested".into());
                            }
                            let merged = Arc::new(deep_merge(&prev_val, value, "").map_err(|k| k.to_string())?);
                            out[idx] = PatchOp::Set { path: path.clone(), value: merged.clone() };
                            written[i].1 = merged;
                        }
                        (MergeStrategy::NoMerge, _) => {}
                        (_, Some(_)) => return Err("unsupported".into()),
                    }
                }
            }
            Ok(out)
        }

        /// Branches writing small objects or scalars at nested paths over a tiny alphabet (so paths collide
        /// exactly, above and below each other).
        fn nested_branches() -> impl Strategy<Value = Vec<(String, Vec<PatchOp>)>> {
            let path = proptest::collection::vec(prop::sample::select(vec!["x", "y", "z"]), 1..4);
            let value = prop_oneof![(0i64..3).prop_map(|v| json!(v)), (0i64..2).prop_map(|v| json!({"k": v}))];
            proptest::collection::vec(
                proptest::collection::vec((path, value), 0..6).prop_map(|writes| {
                    writes
                        .into_iter()
                        .map(|(p, v)| PatchOp::set(p.into_iter().map(str::to_owned).collect(), v))
                        .collect::<Vec<_>>()
                }),
                1..5,
            )
            .prop_map(|bs| bs.into_iter().enumerate().map(|(i, ops)| (format!("b{i}"), ops)).collect())
        }

        /// Branches writing scalars to keys `a`..`c` (in declared order).
        fn branches() -> impl Strategy<Value = Vec<(String, Vec<PatchOp>)>> {
            proptest::collection::vec(
                proptest::collection::vec((0usize..3, 0i64..3), 0..4).prop_map(|writes| {
                    writes.into_iter().map(|(k, v)| set(["a", "b", "c"][k], json!(v))).collect::<Vec<_>>()
                }),
                1..5,
            )
            .prop_map(|bs| bs.into_iter().enumerate().map(|(i, ops)| (format!("b{i}"), ops)).collect())
        }

        fn apply(ops: &[PatchOp]) -> flujo_core::Context {
            let mut ctx = flujo_core::Context::new("r", json!(null), Default::default());
            for op in ops {
                ctx.apply(op.clone()).unwrap();
            }
            ctx
        }

        /// The value each key ends with in branch `ops` (its last write), per branch.
        fn finals(b: &[(String, Vec<PatchOp>)]) -> Vec<std::collections::BTreeMap<String, Value>> {
            b.iter()
                .map(|(_, ops)| {
                    ops.iter()
                        .filter_map(|op| match op {
                            PatchOp::Set { path, value } => Some((path[0].clone(), (**value).clone())),
                            PatchOp::Append { .. } => None,
                        })
                        .collect()
                })
                .collect()
        }

        proptest! {
            /// The indexed merge makes the same decisions as the linear scan, for every strategy.
            #[test]
            fn indexed_merge_equals_the_linear_scan(b in nested_branches()) {
                for strategy in [MergeStrategy::ContextUpdate, MergeStrategy::Overwrite, MergeStrategy::KeepFirst,
                    MergeStrategy::ErrorOnConflict, MergeStrategy::NoMerge] {
                    let fast = merge_branches(strategy, &b);
                    let slow = reference_merge(strategy, &b);
                    prop_assert_eq!(fast.is_ok(), slow.is_ok(), "{:?}: {:?} vs {:?}", strategy, fast, slow);
                    if let (Ok(f), Ok(s)) = (fast, slow) {
                        prop_assert_eq!(f, s, "{:?}", strategy);
                    }
                }
            }

            #[test]
            fn overwrite_equals_sequential_application(b in branches()) {
                let merged = merge_branches(MergeStrategy::Overwrite, &b).unwrap();
                let all: Vec<PatchOp> = b.iter().flat_map(|(_, ops)| ops.clone()).collect();
                for k in ["a", "b", "c"] {
                    prop_assert_eq!(apply(&merged).lookup(&p(k)).cloned(), apply(&all).lookup(&p(k)).cloned());
                }
            }

            #[test]
            fn keep_first_keeps_the_first_writer(b in branches()) {
                let merged = apply(&merge_branches(MergeStrategy::KeepFirst, &b).unwrap());
                let f = finals(&b);
                for k in ["a", "b", "c"] {
                    let first = f.iter().find_map(|m| m.get(k).cloned());
                    prop_assert_eq!(merged.lookup(&p(k)).cloned(), first);
                }
            }

            #[test]
            fn error_on_conflict_iff_two_branches_write_a_key(b in branches()) {
                let f = finals(&b);
                let shared = ["a", "b", "c"].iter().any(|k| f.iter().filter(|m| m.contains_key(*k)).count() > 1);
                prop_assert_eq!(merge_branches(MergeStrategy::ErrorOnConflict, &b).is_err(), shared);
            }

            #[test]
            fn context_update_fails_iff_branches_disagree(b in branches()) {
                let f = finals(&b);
                let disagree = ["a", "b", "c"].iter().any(|k| {
                    let vals: std::collections::BTreeSet<String> = f.iter().filter_map(|m| m.get(*k)).map(|v| v.to_string()).collect();
                    vals.len() > 1
                });
                let res = merge_branches(MergeStrategy::ContextUpdate, &b);
                prop_assert_eq!(res.is_err(), disagree);
                if let Ok(ops) = res {
                    let ctx = apply(&ops);
                    for k in ["a", "b", "c"] {
                        let agreed = f.iter().find_map(|m| m.get(k).cloned());
                        prop_assert_eq!(ctx.lookup(&p(k)).cloned(), agreed);
                    }
                }
            }

            #[test]
            fn no_merge_writes_nothing(b in branches()) {
                prop_assert!(merge_branches(MergeStrategy::NoMerge, &b).unwrap().is_empty());
            }
        }
    }
}
