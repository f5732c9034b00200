//! Journal paths are injective: two distinct step executions never share a path.
//!
//! Replay is keyed by path (`0/branch:a/0`, `1/loop:2/0`, `2/state:s@1/0`, …), so a collision makes one
//! execution replay another's output. The audit found one: a parallel branch literally named `a/0/branch:b`
//! wrote the same path as branch `b` of a parallel nested in branch `a`. Names that become path segments
//! (step, branch and state names) are now checked when the runner is built (`flujo_core::limits::check_name`,
//! `BP-NAME` in blueprints) and branch/state names must be unique, which makes every path parse back to one
//! execution. The property test builds random nested pipelines (parallel, conditional, loop, map, state
//! machine) with adversarial names: the build refuses exactly the pipelines with a bad or repeated segment name,
//! and a run of every accepted one journals no path twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use flujo_core::*;
use flujo_engine::Flujo;
use flujo_store::MemoryStore;
use proptest::prelude::*;
use serde_json::json;

/// Valid names, some looking like path syntax.
const GOOD_NAMES: &[&str] = &["a", "b", "h", "0", "1", "default", "wrapped", "b@1", "state s", "loop 0", "ü ✓", "a.b"];
/// Names that would make paths ambiguous (or are unprintable).
const BAD_NAMES: &[&str] =
    &["a/0", "a/0/branch:b", "branch:a", "loop:0", "map:1", "state:s@0", " a", "a ", "", "x\ny", "tab\t"];

fn leaf(name: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({"expr": "previous_step"}))
}

/// Mostly valid names, so that many generated pipelines pass the build and run.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => prop::sample::select(GOOD_NAMES).prop_map(str::to_owned),
        1 => prop::sample::select(BAD_NAMES).prop_map(str::to_owned),
    ]
}

fn branches(inner: impl Strategy<Value = Step> + Clone) -> impl Strategy<Value = Vec<Branch>> {
    prop::collection::vec((name(), prop::collection::vec(inner, 1..3)).prop_map(|(n, s)| Branch::new(n, s)), 1..4)
}

fn step() -> impl Strategy<Value = Step> {
    let leaf = name().prop_map(|n| leaf(&n));
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            (name(), branches(inner.clone())).prop_map(|(n, branches)| Step::new(
                n,
                StepKind::Parallel({
                    let mut spec = ParallelSpec::default();
                    spec.branches = branches;
                    spec.merge_strategy = MergeStrategy::NoMerge;
                    spec.on_branch_failure = OnBranchFailure::Propagate;
                    spec
                })
            )),
            (name(), branches(inner.clone()), any::<prop::sample::Index>()).prop_map(|(n, branches, pick)| {
                // Take a branch that exists (JSON string syntax is a valid expression string literal).
                let key = &branches[pick.index(branches.len())].name;
                let expr = serde_json::to_string(key).unwrap();
                Step::new(
                    n,
                    StepKind::Conditional({
                        let mut spec = ConditionalSpec::default();
                        spec.condition_expression = Some(expr);
                        spec.branches = branches;
                        spec
                    }),
                )
            }),
            (name(), prop::collection::vec(inner.clone(), 1..3)).prop_map(|(n, body)| Step::new(
                n,
                StepKind::Loop({
                    let mut spec = LoopSpec::default();
                    spec.body = body;
                    spec.max_loops = 2;
                    spec.on_max_loops = OnMaxLoops::Succeed;
                    spec
                })
            )),
            (name(), prop::collection::vec(inner.clone(), 1..3)).prop_map(|(n, body)| Step::new(
                n,
                StepKind::Map({
                    let mut spec = MapSpec::default();
                    spec.body = body;
                    spec.concurrency = 2;
                    spec
                })
            )
            .with_input(json!([1, 2]))),
            (name(), branches(inner)).prop_map(|(n, states)| {
                // A chain through every state: s0 → s1 → … → the last (the end state).
                let names: Vec<String> = states.iter().map(|Branch { name: s, .. }| s.clone()).collect();
                let transitions = names
                    .windows(2)
                    .map(|w| Transition::new(w[0].clone(), TransitionOn::Success, w[1].clone()))
                    .collect();
                Step::new(
                    n,
                    StepKind::StateMachine({
                        let mut spec = StateMachineSpec::default();
                        spec.start_state = names[0].clone();
                        spec.end_states = vec![names[names.len() - 1].clone()];
                        spec.states = states;
                        spec.transitions = transitions;
                        spec.max_hops = 10;
                        spec
                    }),
                )
            }),
        ]
    })
}

/// True when every step, branch and state name is a valid path segment and branch/state names are unique
/// among their siblings: the pipelines the build must accept.
fn names_ok(steps: &[Step]) -> bool {
    steps.iter().all(|s| {
        let unique =
            |bs: &[Branch]| bs.iter().map(|Branch { name: n, .. }| n).collect::<HashSet<_>>().len() == bs.len();
        let branches_ok = |bs: &[Branch]| {
            unique(bs) && bs.iter().all(|Branch { name: n, steps: b, .. }| limits::check_name(n).is_ok() && names_ok(b))
        };
        limits::check_name(&s.name).is_ok()
            && match &s.kind {
                StepKind::Parallel(p) => branches_ok(&p.branches),
                StepKind::Conditional(c) => branches_ok(&c.branches),
                StepKind::StateMachine(sm) => branches_ok(&sm.states),
                StepKind::Loop(l) => names_ok(&l.body),
                StepKind::Map(m) => names_ok(&m.body),
                _ => true,
            }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn distinct_step_executions_never_share_a_path(steps in prop::collection::vec(step(), 1..4)) {
        let pipeline = Pipeline::new("paths", steps);
        let expect_ok = names_ok(&pipeline.steps);
        let store = Arc::new(MemoryStore::new());
        let built = Flujo::builder(pipeline).store(store.clone()).build();
        match built {
            Err(e) => {
                prop_assert!(!expect_ok, "a pipeline with valid names was refused: {e}");
                prop_assert!(matches!(e, FlujoError::Resolution { .. }), "{e:?}");
            }
            Ok(flujo) => {
                prop_assert!(expect_ok, "a pipeline with a bad or repeated segment name was accepted");
                let rt = runtime();
                let result = rt.block_on(flujo.run(json!("in"))).unwrap();
                prop_assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
                let records = rt.block_on(store.load_journal(&result.run_id)).unwrap();
                let mut seen = HashSet::new();
                for r in &records {
                    prop_assert!(seen.insert(r.path.clone()), "path {} journaled twice", r.path);
                }
                prop_assert!(records.len() >= result.step_history.len());
            }
        }
    }
}

/// The property's generator exercises both outcomes (accepted and refused pipelines), or it proves little.
#[test]
fn the_generator_produces_accepted_and_refused_pipelines() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..200 {
        let steps = prop::collection::vec(step(), 1..4).new_tree(&mut runner).unwrap().current();
        if names_ok(&steps) {
            ok += 1;
        } else {
            bad += 1;
        }
    }
    assert!(ok >= 40 && bad >= 40, "accepted {ok}, refused {bad}");
}

/// The audit's collision: branch `a` holds a parallel with branch `b`, and a sibling branch is literally named
/// `a/0/branch:b`; both wrote `0/branch:a/0/branch:b/0`. Such a pipeline is refused when it is built.
#[test]
fn the_audit_collision_is_refused_at_build_time() {
    let inner = Step::new(
        "inner",
        StepKind::Parallel({
            let mut spec = ParallelSpec::default();
            spec.branches = vec![Branch::new("b", vec![leaf("x")]), Branch::new("h", vec![leaf("y")])];
            spec.merge_strategy = MergeStrategy::NoMerge;
            spec.on_branch_failure = OnBranchFailure::Propagate;
            spec
        }),
    );
    let outer = Step::new(
        "outer",
        StepKind::Parallel({
            let mut spec = ParallelSpec::default();
            spec.branches = vec![Branch::new("a", vec![inner]), Branch::new("a/0/branch:b", vec![leaf("z")])];
            spec.merge_strategy = MergeStrategy::NoMerge;
            spec.on_branch_failure = OnBranchFailure::Propagate;
            spec
        }),
    );
    let err =
        Flujo::builder(Pipeline::new("p", vec![outer])).store(Arc::new(MemoryStore::new())).build().err().unwrap();
    let text = err.to_string();
    assert!(text.contains("a/0/branch:b") && text.contains("may not contain"), "{text}");
}

/// Bounds a Rust-built pipeline cannot bypass: retries, timeouts, TTLs, name length, duplicate branch names.
#[test]
fn rust_built_pipelines_are_bounded_like_blueprints() {
    let build = |step: Step| Flujo::builder(Pipeline::new("p", vec![step])).store(Arc::new(MemoryStore::new())).build();
    let cases: Vec<(Step, &str)> = vec![
        (leaf("a").with_retries(1_000_000_000), "max_retries"),
        (
            leaf("a").with_config({
                let mut config = StepConfig::default();
                config.timeout_s = Some(1e20);
                config
            }),
            "timeout_s",
        ),
        (
            leaf("a").with_config({
                let mut config = StepConfig::default();
                config.timeout_s = Some(0.0);
                config
            }),
            "timeout_s",
        ),
        (
            leaf("a").with_config({
                let mut config = StepConfig::default();
                config.timeout_s = Some(f64::NAN);
                config
            }),
            "timeout_s",
        ),
        (leaf(&"n".repeat(70_000)), "characters long"),
        (
            Step::new(
                "c",
                StepKind::Cache({
                    let mut spec = CacheSpec::new(leaf("w"));
                    spec.ttl_s = Some(1e300);
                    spec
                }),
            ),
            "ttl_s",
        ),
        (
            Step::new(
                "p",
                StepKind::Parallel({
                    let mut spec = ParallelSpec::default();
                    spec.branches = vec![Branch::new("a", vec![leaf("x")]), Branch::new("a", vec![leaf("y")])];
                    spec.merge_strategy = MergeStrategy::NoMerge;
                    spec.on_branch_failure = OnBranchFailure::Propagate;
                    spec
                }),
            ),
            "used twice",
        ),
        (
            Step::new(
                "l",
                StepKind::Loop({
                    let mut spec = LoopSpec::default();
                    spec.body = vec![leaf("b")];
                    spec.max_loops = 4_000_000_000;
                    spec.on_max_loops = OnMaxLoops::Succeed;
                    spec
                }),
            ),
            "max_loops",
        ),
    ];
    for (step, needle) in cases {
        let err = build(step).err().unwrap_or_else(|| panic!("{needle}: accepted"));
        assert!(matches!(err, FlujoError::Resolution { .. }), "{needle}: {err:?}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    assert!(build(leaf("a").with_retries(100)).is_ok());
}
