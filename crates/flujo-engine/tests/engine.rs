//! Engine conformance suite: every step kind's success and failure paths, each run straight and interrupted
//! after every possible number of committed records (then resumed from the store), plus API-level tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::sync::Arc;

use flujo_core::*;
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use harness::*;
use serde_json::{json, Value};

fn ok(output: Value) -> Expect {
    Expect { status: Some(RunStatus::Completed), output: Some(output), ..Default::default() }
}
fn failed(contains: &'static str) -> Expect {
    Expect {
        status: Some(RunStatus::Failed),
        error_kind: Some("step_failed"),
        error_contains: Some(contains),
        ..Default::default()
    }
}
fn meta(r: &RunResult, step: usize, key: &str) -> Value {
    r.step_history[step].metadata.get(key).cloned().unwrap_or(Value::Null)
}

fn scenarios() -> Vec<Scenario> {
    let mut v = vec![
        Scenario::new("linear", vec![count("a"), count("b"), tf("c", "previous_step * 10")], json!(1), ok(json!(30))),
        Scenario::new(
            "retry_then_success",
            vec![Step::skill("flaky", "flujo.builtins.fail", json!({"times": 1})).with_retries(2)],
            json!("x"),
            Expect { check: Some(|r| assert_eq!(r.step_history[0].attempts, 2)), ..ok(json!("x")) },
        ),
        Scenario::new(
            "exhausted_retries",
            vec![count("a"), fail("b").with_retries(2), count("never")],
            json!(1),
            Expect {
                check: Some(|r| {
                    assert_eq!(r.step_history.len(), 2);
                    assert_eq!(r.step_history[1].attempts, 3);
                    assert_eq!(r.step_history[1].feedback.as_deref(), Some("boom"));
                }),
                ..failed("boom")
            },
        ),
        Scenario::new(
            "fallback_output",
            vec![count("a"), fail("primary").with_retries(0).with_fallback(tf("fb", "'fallback:' ~ previous_step"))],
            json!(1),
            Expect {
                check: Some(|r| {
                    assert_eq!(meta(r, 1, "fallback_triggered"), json!(true));
                    assert_eq!(r.step_history[1].attempts, 2);
                }),
                ..ok(json!("fallback:2"))
            },
        ),
        Scenario::new(
            "fallback_cycle",
            vec![
                fail("a").with_retries(0).with_sibling_fallback("b"),
                fail("b").with_retries(0).with_sibling_fallback("a"),
            ],
            json!(1),
            Expect {
                status: Some(RunStatus::Failed),
                error_kind: Some("infinite_fallback"),
                error_contains: Some("a -> b -> a"),
                ..Default::default()
            },
        ),
        Scenario::new(
            "validator_failure",
            vec![tf("a", "previous_step + 1").with_validator("output > 100", Some("too small".into())).with_retries(0)],
            json!(1),
            failed("too small"),
        ),
        Scenario::new(
            "loop_exit_expression",
            vec![looped("loop", vec![count("body")], 10, Some("previous_step >= 3"))],
            json!(0),
            Expect {
                check: Some(|r| {
                    assert_eq!(meta(r, 0, "iterations"), json!(3));
                    assert_eq!(meta(r, 0, "exit_reason"), json!("condition"));
                }),
                ..ok(json!(3))
            },
        ),
        Scenario::new(
            "loop_max_loops",
            vec![looped("loop", vec![count("body")], 3, Some("previous_step > 100"))],
            json!(0),
            failed("reached max_loops"),
        ),
        Scenario::new("loop_counted", vec![looped("loop", vec![count("body")], 4, None)], json!(0), ok(json!(4))),
        Scenario::new("map_items", vec![map("m", None, vec![count("inc")], 1)], json!([1, 2, 3]), ok(json!([2, 3, 4]))),
        Scenario::new("map_empty", vec![map("m", None, vec![count("inc")], 1)], json!([]), ok(json!([]))),
        Scenario::new(
            "map_concurrent",
            vec![map(
                "m",
                None,
                vec![count("inc"), tf("sq", "previous_step").with_input(json!("{{ previous_step * this }}"))],
                3,
            )],
            json!([1, 2, 3, 4]),
            ok(json!([2, 6, 12, 20])),
        ),
        Scenario::new("map_not_a_list", vec![map("m", None, vec![count("inc")], 1)], json!(5), failed("not a list")),
        Scenario::new(
            "conditional_match",
            vec![cond(
                "c",
                Some("previous_step > 5"),
                vec![branch("true", vec![tf("big", "'big'")]), branch("false", vec![tf("small", "'small'")])],
                None,
            )],
            json!(7),
            ok(json!("big")),
        ),
        Scenario::new(
            "conditional_default",
            vec![cond(
                "c",
                Some("previous_step"),
                vec![branch("a", vec![tf("x", "'A'")])],
                Some(vec![tf("d", "'default'")]),
            )],
            json!("zzz"),
            ok(json!("default")),
        ),
        Scenario::new(
            "conditional_no_match",
            vec![cond("c", Some("previous_step"), vec![branch("a", vec![tf("x", "'A'")])], None)],
            json!("zzz"),
            failed("no branch for key 'zzz'"),
        ),
        Scenario::new(
            "parallel_success",
            vec![par(
                "p",
                vec![branch("x", vec![count("a")]), branch("y", vec![count("b"), count("c")])],
                MergeStrategy::ContextUpdate,
                OnBranchFailure::Propagate,
            )],
            json!(1),
            ok(json!({"x": 2, "y": 3})),
        ),
        Scenario::new(
            "parallel_conflict_context_update",
            vec![par(
                "p",
                vec![
                    branch("x", vec![tf("a", "1").with_sink_to("k")]),
                    branch("y", vec![tf("b", "2").with_sink_to("k")]),
                ],
                MergeStrategy::ContextUpdate,
                OnBranchFailure::Propagate,
            )],
            json!(0),
            failed("context conflict on 'k' between branches 'x' and 'y'"),
        ),
        Scenario::new(
            "parallel_overwrite",
            vec![
                par(
                    "p",
                    vec![
                        branch("x", vec![tf("a", "1").with_sink_to("k")]),
                        branch("y", vec![tf("b", "2").with_sink_to("k")]),
                    ],
                    MergeStrategy::Overwrite,
                    OnBranchFailure::Propagate,
                ),
                tf("read", "context.k"),
            ],
            json!(0),
            ok(json!(2)),
        ),
        Scenario::new(
            "parallel_ignore_failure",
            vec![par(
                "p",
                vec![branch("good", vec![count("a")]), branch("bad", vec![fail("f").with_retries(0)])],
                MergeStrategy::ContextUpdate,
                OnBranchFailure::Ignore,
            )],
            json!(1),
            Expect {
                check: Some(|r| assert!(meta(r, 0, "failed_branches").get("bad").is_some())),
                ..ok(json!({"good": 2}))
            },
        ),
        Scenario::new(
            "parallel_propagate_failure",
            vec![par(
                "p",
                vec![branch("good", vec![count("a")]), branch("bad", vec![fail("f").with_retries(0)])],
                MergeStrategy::ContextUpdate,
                OnBranchFailure::Propagate,
            )],
            json!(1),
            failed("branch 'bad' failed"),
        ),
        Scenario::new(
            "parallel_reduce_values",
            vec![{
                let mut p = par(
                    "p",
                    vec![branch("x", vec![count("a")]), branch("y", vec![count("b")])],
                    MergeStrategy::ContextUpdate,
                    OnBranchFailure::Propagate,
                );
                if let StepKind::Parallel(spec) = &mut p.kind {
                    spec.reduce = Some(ReduceMode::Values);
                }
                p
            }],
            json!(1),
            ok(json!([2, 2])),
        ),
        Scenario::new(
            "router",
            vec![kind(
                "r",
                StepKind::DynamicRouter({
                    let mut x =
                        RouterSpec::new(AgentRef::skill("flujo.builtins.transform", json!({"expr": "['b', 'c']"})));
                    x.branches = vec![
                        branch("a", vec![tf("a1", "'A'")]),
                        branch("b", vec![tf("b1", "'B'")]),
                        branch("c", vec![count("c1")]),
                    ];
                    x.merge_strategy = MergeStrategy::ContextUpdate;
                    x.on_branch_failure = OnBranchFailure::Propagate;
                    x
                }),
            )],
            json!(1),
            ok(json!({"b": "B", "c": 2})),
        ),
        Scenario::new(
            "router_unknown_branch",
            vec![kind(
                "r",
                StepKind::DynamicRouter({
                    let mut spec =
                        RouterSpec::new(AgentRef::skill("flujo.builtins.transform", json!({"expr": "'nope'"})));
                    spec.branches = vec![branch("a", vec![tf("a1", "'A'")])];
                    spec.merge_strategy = MergeStrategy::ContextUpdate;
                    spec.on_branch_failure = OnBranchFailure::Propagate;
                    spec
                }),
            )],
            json!(1),
            failed("unknown branch(es) 'nope'"),
        ),
        Scenario::new(
            "cache_hit",
            vec![
                kind("c1", StepKind::Cache(CacheSpec::new(count("w")))),
                tf("back", "previous_step - 1"),
                kind("c2", StepKind::Cache(CacheSpec::new(count("w")))),
            ],
            json!(1),
            Expect {
                check: Some(|r| {
                    assert_eq!(meta(r, 0, "cache_hit"), json!(false));
                    assert_eq!(meta(r, 2, "cache_hit"), json!(true));
                }),
                ..ok(json!(2))
            },
        ),
        Scenario::new(
            "context_schema_violation",
            vec![tf("a", "'not a number'").with_sink_to("count"), count("never")],
            json!(1),
            Expect {
                check: Some(|r| assert_eq!(r.context.get("count"), Some(&json!(1)), "context unchanged")),
                ..failed("context validation failed")
            },
        )
        .schema(json!({"type": "object", "properties": {"count": {"type": "integer"}}}))
        .context(json!({"count": 1})),
        Scenario::new(
            "updates_context",
            vec![
                tf("a", "{'x': previous_step, 'y': 2, 'z': 3}").with_updates_context(vec!["x".into(), "y".into()]),
                tf("sum", "context.x + context.y"),
            ],
            json!(5),
            Expect { check: Some(|r| assert!(r.context.get("z").is_none())), ..ok(json!(7)) },
        ),
        Scenario::new(
            "hitl_simple",
            vec![
                count("a"),
                hitl("approve", Some(json!({"type": "string"}))).with_sink_to("decision"),
                tf("after", "context.decision ~ '!'"),
            ],
            json!(1),
            Expect {
                check: Some(|r| assert_eq!(r.context["hitl_history"].as_array().unwrap().len(), 1)),
                ..ok(json!("yes!"))
            },
        )
        .answers(vec![("1", json!("yes"))]),
        Scenario::new(
            "hitl_nested_loop_conditional",
            vec![looped(
                "loop",
                vec![cond("c", Some("true"), vec![branch("true", vec![hitl("ask", None)])], None), count("after")],
                3,
                None,
            )],
            json!(0),
            Expect {
                check: Some(|r| {
                    let h = r.context["hitl_history"].as_array().unwrap();
                    assert_eq!(h.len(), 3);
                    assert_eq!(h[2]["answer"], json!(30));
                }),
                ..ok(json!(31))
            },
        )
        .answers(vec![
            ("0/loop:0/0/branch:true/0", json!(10)),
            ("0/loop:1/0/branch:true/0", json!(20)),
            ("0/loop:2/0/branch:true/0", json!(30)),
        ]),
        Scenario::new(
            "hitl_two_parallel_branches",
            vec![par(
                "p",
                vec![
                    branch("x", vec![count("x0"), hitl("hx", None), count("x2")]),
                    branch("y", vec![hitl("hy", None), count("y1")]),
                ],
                MergeStrategy::ContextUpdate,
                OnBranchFailure::Propagate,
            )],
            json!(1),
            ok(json!({"x": 101, "y": 201})),
        )
        .answers(vec![("0/branch:x/1", json!(100)), ("0/branch:y/0", json!(200))]),
        Scenario::new(
            "hitl_in_map",
            vec![map("m", None, vec![hitl("h", None), count("c")], 1)],
            json!([1, 2]),
            ok(json!([11, 21])),
        )
        .answers(vec![("0/map:0/0", json!(10)), ("0/map:1/0", json!(20))]),
        Scenario::new(
            "hitl_in_concurrent_map",
            vec![map("m", None, vec![hitl("h", None), count("c")], 2)],
            json!([1, 2]),
            ok(json!([11, 21])),
        )
        .answers(vec![("0/map:0/0", json!(10)), ("0/map:1/0", json!(20))]),
        Scenario::new(
            "import_with_outputs_and_hitl",
            vec![
                kind(
                    "sub",
                    StepKind::Import({
                        let mut spec = ImportSpec::new(
                            "child",
                            Arc::new(Pipeline::new(
                                "child",
                                vec![count("c0"), hitl("ch", None).with_sink_to("answer"), count("c2")],
                            )),
                        );
                        spec.inherit_context = false;
                        spec.input_to = InputTo::InitialPrompt;
                        spec.outputs = vec![OutputMapping::new("answer", "from_child")];
                        spec.on_failure = OnImportFailure::Abort;
                        spec.default_output = Value::Null;
                        spec
                    }),
                ),
                tf("after", "context.from_child + previous_step"),
            ],
            json!(1),
            ok(json!(15)),
        )
        .answers(vec![("0/import/1", json!(7))]),
        Scenario::new(
            "import_failure_continue_with_default",
            vec![kind(
                "sub",
                StepKind::Import({
                    let mut x =
                        ImportSpec::new("child", Arc::new(Pipeline::new("child", vec![fail("f").with_retries(0)])));
                    x.inherit_context = true;
                    x.input_to = InputTo::InitialPrompt;
                    x.outputs = vec![];
                    x.on_failure = OnImportFailure::ContinueWithDefault;
                    x.default_output = json!("dflt");
                    x
                }),
            )],
            json!(1),
            ok(json!("dflt")),
        ),
        Scenario::new(
            "state_machine",
            vec![kind(
                "sm",
                StepKind::StateMachine({
                    let mut spec = StateMachineSpec::default();
                    spec.states = vec![
                        branch("start", vec![count("s")]),
                        branch("review", vec![hitl("approve", None)]),
                        branch("retry", vec![Step::skill("r", "test.count", json!(null))]),
                        branch("done", vec![tf("d", "'done:' ~ previous_step")]),
                    ];
                    spec.start_state = "start".into();
                    spec.end_states = vec!["done".into()];
                    spec.transitions = vec![
                        Transition::new("start", TransitionOn::Success, "review"),
                        {
                            let mut spec = Transition::new("review", TransitionOn::Success, "done");
                            spec.when = Some("previous_step == 'ok'".into());
                            spec
                        },
                        Transition::new("review", TransitionOn::Success, "retry"),
                        Transition::new("retry", TransitionOn::Success, "review"),
                    ];
                    spec.max_hops = 20;
                    spec
                }),
            )],
            json!(1),
            Expect {
                check: Some(|r| {
                    assert_eq!(meta(r, 0, "states"), json!(["start", "review", "retry", "review", "done"]))
                }),
                ..ok(json!("done:ok"))
            },
        )
        .answers(vec![("0/state:review@1/0", json!("no")), ("0/state:review@3/0", json!("ok"))]),
        Scenario::new(
            "state_machine_no_transition",
            vec![kind(
                "sm",
                StepKind::StateMachine({
                    let mut spec = StateMachineSpec::default();
                    spec.states = vec![branch("a", vec![count("x")])];
                    spec.start_state = "a".into();
                    spec.end_states = vec![];
                    spec.transitions = vec![];
                    spec.max_hops = 5;
                    spec
                }),
            )],
            json!(1),
            failed("no transition from state 'a'"),
        ),
        Scenario::new(
            "state_machine_infinite",
            vec![kind(
                "sm",
                StepKind::StateMachine({
                    let mut spec = StateMachineSpec::default();
                    spec.states = vec![branch("a", vec![count("x")])];
                    spec.start_state = "a".into();
                    spec.end_states = vec![];
                    spec.transitions = vec![Transition::new("a", TransitionOn::Success, "a")];
                    spec.max_hops = 5;
                    spec
                }),
            )],
            json!(1),
            Expect { status: Some(RunStatus::Failed), error_kind: Some("infinite_redirect"), ..Default::default() },
        ),
    ];
    // A hitl nested in a fallback of a loop body inside a parallel branch: the deepest case.
    v.push(
        Scenario::new(
            "hitl_in_fallback_in_loop_in_parallel",
            vec![par(
                "p",
                vec![
                    branch(
                        "x",
                        vec![looped(
                            "l",
                            vec![fail("f").with_retries(0).with_fallback(hitl("fix", None)), count("c")],
                            2,
                            None,
                        )],
                    ),
                    branch("y", vec![count("y")]),
                ],
                MergeStrategy::ContextUpdate,
                OnBranchFailure::Propagate,
            )],
            json!(0),
            ok(json!({"x": 6, "y": 1})),
        )
        .answers(vec![("0/branch:x/0/loop:0/0/fallback", json!(2)), ("0/branch:x/0/loop:1/0/fallback", json!(5))]),
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_straight_and_interrupted() {
    let all = scenarios();
    assert!(all.len() >= 30);
    for s in &all {
        run_scenario(s).await;
    }
}

#[tokio::test]
async fn hitl_nested_pauses_three_times() {
    let s = scenarios().into_iter().find(|s| s.name == "hitl_nested_loop_conditional").unwrap();
    let o = drive(&s, None).await;
    assert_eq!(o.pauses_seen, 3);
    assert_eq!(o.result.context["hitl_history"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn parallel_hitl_pauses_together_and_resumes_independently() {
    let s = scenarios().into_iter().find(|s| s.name == "hitl_two_parallel_branches").unwrap();
    let counter = flujo_skills::CallCounter::default();
    let reg = registry(&counter, &Arc::default());
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(s.pipeline.clone()).store(store.clone()).skills(reg).build().unwrap();
    let r = f.run(json!(1)).await.unwrap();
    assert_eq!(r.status, RunStatus::Paused);
    let ids: Vec<_> = r.pending.iter().map(|p| p.pause_id.as_str()).collect();
    assert_eq!(ids, vec!["0/branch:x/1", "0/branch:y/0"]);
    // Without naming the pause, the answer is ambiguous.
    let err = f.resume(&r.run_id, json!(1)).await.unwrap_err();
    assert!(matches!(err, FlujoError::InvalidResumeInput { .. }), "{err}");
    // Answer y first: x stays pending, y's branch finishes.
    let r2 = f.resume_with(&r.run_id, ResumeRequest::answer(json!(200)).pause_id("0/branch:y/0")).await.unwrap();
    assert_eq!(r2.status, RunStatus::Paused);
    assert_eq!(r2.pending.len(), 1);
    assert_eq!(r2.pending[0].pause_id, "0/branch:x/1");
    assert_eq!(flujo_skills::CountingSkill::count(&counter, "0/branch:y/1"), 1);
    let r3 = f.resume_with(&r.run_id, ResumeRequest::answer(json!(100)).pause_id("0/branch:x/1")).await.unwrap();
    assert_eq!(r3.status, RunStatus::Completed);
    assert_eq!(r3.output, Some(json!({"x": 101, "y": 201})));
    // Finished siblings never re-run.
    assert_eq!(flujo_skills::CountingSkill::count(&counter, "0/branch:x/0"), 1);
    assert_eq!(flujo_skills::CountingSkill::count(&counter, "0/branch:y/1"), 1);
}

#[tokio::test]
async fn hitl_answer_is_validated_and_run_stays_resumable() {
    let p = Pipeline::new("v", vec![hitl("h", Some(json!({"type": "object", "required": ["ok"]})))]);
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(p).store(store.clone()).build().unwrap();
    let r = f.run(json!(null)).await.unwrap();
    let err = f.resume(&r.run_id, json!("nope")).await.unwrap_err();
    match err {
        FlujoError::InvalidResumeInput { pause_id, message } => {
            assert_eq!(pause_id, "0");
            assert!(message.contains("object"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(store.get_run(&r.run_id).await.unwrap().unwrap().status, RunStatus::Paused);
    let done = f.resume(&r.run_id, json!({"ok": true})).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!({"ok": true})));
}

#[tokio::test]
async fn resuming_a_failed_run_reruns_only_the_failed_step() {
    let counter = flujo_skills::CallCounter::default();
    let flaky = Arc::default();
    let reg = registry(&counter, &flaky);
    let p = Pipeline::new(
        "f",
        vec![count("a"), Step::skill("b", "test.flaky_once", json!(null)).with_retries(0), count("c")],
    );
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(p).store(store.clone()).skills(reg).build().unwrap();
    let r = f.run(json!(1)).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let r2 = f.resume_with(&r.run_id, ResumeRequest::default()).await.unwrap();
    assert_eq!(r2.status, RunStatus::Completed, "{:?}", r2.error);
    assert_eq!(r2.output, Some(json!(3)));
    assert_eq!(flujo_skills::CountingSkill::count(&counter, "0"), 1, "completed step replayed, not re-run");
    assert_eq!(flujo_skills::CountingSkill::count(&counter, "2"), 1);
    // Resuming a completed run returns its stored result.
    let r3 = f.resume_with(&r.run_id, ResumeRequest::default()).await.unwrap();
    assert_eq!(r3.output, Some(json!(3)));
    assert_eq!(flujo_skills::CountingSkill::count(&counter, "2"), 1);
    verify_chain(&store.load_journal(&r.run_id).await.unwrap()).unwrap();
}

#[tokio::test]
async fn concurrent_resumes_exactly_one_wins() {
    let p = Pipeline::new("c", vec![hitl("h", None), Step::skill("s", "flujo.builtins.sleep", json!({"ms": 50}))]);
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(p).store(store.clone()).build().unwrap();
    let r = f.run(json!(null)).await.unwrap();
    let (a, b) = tokio::join!(f.resume(&r.run_id, json!(1)), f.resume(&r.run_id, json!(2)));
    let wins = [&a, &b].iter().filter(|x| x.is_ok()).count();
    assert_eq!(wins, 1, "{a:?} {b:?}");
    let loser = match (a, b) {
        (Err(e), _) | (_, Err(e)) => e,
        _ => unreachable!(),
    };
    assert!(matches!(loser, FlujoError::NotResumable { .. }), "{loser}");
}

#[tokio::test]
async fn resume_refuses_a_different_pipeline() {
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(Pipeline::new("p", vec![hitl("h", None)])).store(store.clone()).build().unwrap();
    let r = f.run(json!(null)).await.unwrap();
    let other = Flujo::builder(Pipeline::new("p", vec![hitl("h", None), tf("x", "1")])).store(store).build().unwrap();
    let err = other.resume(&r.run_id, json!(1)).await.unwrap_err();
    assert!(matches!(err, FlujoError::PipelineMismatch { .. }), "{err}");
}

#[tokio::test]
async fn no_store_runs_but_cannot_resume() {
    let f = Flujo::builder(Pipeline::new("p", vec![hitl("h", None)])).build().unwrap();
    let r = f.run(json!(null)).await.unwrap();
    assert_eq!(r.status, RunStatus::Paused);
    assert_eq!(f.resume(&r.run_id, json!(1)).await.unwrap_err(), FlujoError::NoStore);
}

/// The blocking facade (SPEC §2): on an async task it refuses with an error, not a panic (on either runtime
/// flavour); inside `spawn_blocking` it runs; dropping it on an async task does not panic (a runtime dropped
/// there would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_facade_refuses_async_tasks_runs_in_spawn_blocking_and_drops_anywhere() {
    let f = Flujo::builder(Pipeline::new("p", vec![tf("a", "previous_step + 1")])).build().unwrap();
    assert_eq!(f.run_blocking(json!(0)).unwrap_err(), FlujoError::BlockingInsideRuntime);
    assert_eq!(f.blocking().unwrap_err(), FlujoError::BlockingInsideRuntime);
    let g = f.clone();
    let (out, facade) = tokio::task::spawn_blocking(move || {
        let b = g.blocking().unwrap();
        (b.run(json!(1)).unwrap().output, b)
    })
    .await
    .unwrap();
    assert_eq!(out, Some(json!(2)));
    assert_eq!(facade.run(json!(5)).unwrap_err(), FlujoError::BlockingInsideRuntime);
    assert!(FlujoError::BlockingInsideRuntime.to_string().contains("spawn_blocking"));
    drop(facade);
    let g = f.clone();
    let out = tokio::task::spawn_blocking(move || g.run_blocking(json!(10)).unwrap().output).await.unwrap();
    assert_eq!(out, Some(json!(11)));
}

#[tokio::test]
async fn blocking_facade_refuses_a_current_thread_runtime_too() {
    let f = Flujo::builder(Pipeline::new("p", vec![tf("a", "1")])).build().unwrap();
    assert_eq!(f.run_blocking(json!(0)).unwrap_err(), FlujoError::BlockingInsideRuntime);
}

#[tokio::test]
async fn a_completed_run_takes_its_own_answer_again_but_no_other() {
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(Pipeline::new("p", vec![hitl("h", None), tf("t", "previous_step ~ '!'")]))
        .store(store.clone())
        .build()
        .unwrap();
    let r = f.run(json!(null)).await.unwrap();
    let done = f.resume(&r.run_id, json!("yes")).await.unwrap();
    assert_eq!(done.output, Some(json!("yes!")));
    // The same answer again (a retried resume) and a plain continue return the result.
    assert_eq!(f.resume(&r.run_id, json!("yes")).await.unwrap().output, Some(json!("yes!")));
    assert_eq!(f.resume_with(&r.run_id, ResumeRequest::default()).await.unwrap().output, Some(json!("yes!")));
    // Another answer is refused, naming what the pause was answered.
    let err = f.resume(&r.run_id, json!("no")).await.unwrap_err();
    let FlujoError::NotResumable { reason, .. } = &err else { panic!("{err}") };
    assert!(reason.contains("already complete") && reason.contains("\"yes\""), "{reason}");
    // A run without pauses has nothing to answer.
    let plain = Flujo::builder(Pipeline::new("q", vec![tf("t", "1")])).store(store.clone()).build().unwrap();
    let r = plain.run(json!(null)).await.unwrap();
    let err = plain.resume(&r.run_id, json!("x")).await.unwrap_err();
    assert!(err.to_string().contains("no pause to answer"), "{err}");
}

#[test]
fn blocking_facade_runs_outside_a_runtime() {
    let f = Flujo::builder(Pipeline::new("p", vec![tf("a", "previous_step + 1")])).build().unwrap();
    let b = f.blocking().unwrap();
    assert_eq!(b.run(json!(1)).unwrap().output, Some(json!(2)));
}

#[test]
fn unknown_skill_fails_at_build_with_the_step_name() {
    let err =
        Flujo::builder(Pipeline::new("p", vec![Step::skill("s", "flujo.builtins.transfrom", json!({"expr": "1"}))]))
            .build()
            .err()
            .unwrap();
    match err {
        FlujoError::Resolution { step, message } => {
            assert_eq!(step, "s");
            assert!(message.contains("transform"), "suggests the right id: {message}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn events_stream_in_order() {
    let f = Flujo::builder(Pipeline::new("p", vec![tf("a", "1"), tf("b", "2")])).build().unwrap();
    let (mut rx, fut) = f.run_streaming(RunOptions::new(json!(0))).await;
    let r = fut.await.unwrap();
    assert_eq!(r.output, Some(json!(2)));
    let mut kinds = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        kinds.push(match ev {
            RunEvent::RunStarted { .. } => "run_started".to_owned(),
            RunEvent::StepStarted { step, .. } => format!("start:{step}"),
            RunEvent::StepFinished { result, .. } => format!("end:{}", result.name),
            RunEvent::RunFinished { status, .. } => format!("run:{}", status.as_str()),
            _ => "other".to_owned(),
        });
    }
    assert_eq!(kinds, vec!["run_started", "start:a", "end:a", "start:b", "end:b", "run:completed"]);
}

#[tokio::test]
async fn custom_step_kind_with_user_policy() {
    struct Double;
    #[async_trait::async_trait]
    impl flujo_engine::StepPolicy for Double {
        async fn execute(&self, f: flujo_engine::ExecutionFrame<'_>) -> Result<flujo_engine::PolicyOutcome, Interrupt> {
            let n = f.input.as_i64().unwrap_or(0);
            Ok(flujo_engine::PolicyOutcome::success(json!(n * 2)))
        }
    }
    let p = Pipeline::new(
        "p",
        vec![kind("d", StepKind::Custom { custom_kind: "double".into(), spec: Value::Null, children: Vec::new() })],
    );
    assert!(Flujo::builder(p.clone()).build().is_err(), "unregistered custom kind is a build error");
    let f = Flujo::builder(p).policy("double", Arc::new(Double)).build().unwrap();
    assert_eq!(f.run(json!(21)).await.unwrap().output, Some(json!(42)));
}

/// A `TaskClient` made from the runner (`Flujo::client`) resumes and replays runs of custom kinds: it has the
/// runner's policies. One made from a store and a skill registry alone cannot.
#[tokio::test]
async fn task_client_from_the_runner_resumes_and_replays_custom_kinds() {
    struct Double;
    #[async_trait::async_trait]
    impl flujo_engine::StepPolicy for Double {
        async fn execute(&self, f: flujo_engine::ExecutionFrame<'_>) -> Result<flujo_engine::PolicyOutcome, Interrupt> {
            Ok(flujo_engine::PolicyOutcome::success(json!(f.input.as_i64().unwrap_or(0) * 2)))
        }
    }
    let p = Pipeline::new(
        "p",
        vec![
            hitl("h", None),
            kind("d", StepKind::Custom { custom_kind: "double".into(), spec: Value::Null, children: Vec::new() }),
        ],
    );
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(p).store(store.clone()).policy("double", Arc::new(Double)).build().unwrap();
    let r = f.run(json!(null)).await.unwrap();
    let bare = flujo_engine::TaskClient::new(store.clone(), Arc::new(flujo_skills::Skills::new()));
    assert!(bare.resume(&r.run_id, ResumeRequest::answer(json!(4))).await.is_err());
    let client = f.client().unwrap();
    let done = client.resume(&r.run_id, ResumeRequest::answer(json!(4))).await.unwrap();
    assert_eq!(done.output, Some(json!(8)));
    let replay = client.replay(&r.run_id).await.unwrap();
    assert!(replay.matches, "{replay:?}");
    // A runner without a store has no client.
    let p = Pipeline::new("q", vec![tf("a", "1")]);
    assert_eq!(Flujo::builder(p).build().unwrap().client().unwrap_err(), FlujoError::NoStore);
}

#[tokio::test]
async fn usage_is_totalled_once_and_limits_stop_the_run() {
    let counter = flujo_skills::CallCounter::default();
    let reg = registry(&counter, &Arc::default());
    let p = Pipeline::new(
        "u",
        vec![
            looped("l", vec![Step::skill("t", "test.tokens", json!(null))], 3, None),
            Step::skill("t2", "test.tokens", json!(null)),
        ],
    );
    let store = Arc::new(flujo_store::MemoryStore::new());
    let f = Flujo::builder(p.clone()).store(store).skills(reg.clone()).build().unwrap();
    let r = f.run(json!(0)).await.unwrap();
    assert_eq!(r.total_tokens, 60, "4 calls x 15 tokens, composite not double counted");
    assert!((r.total_cost_usd - 0.04).abs() < 1e-9);
    let limited = Flujo::builder(p).skills(reg).build().unwrap();
    let r = limited
        .run_with(RunOptions::new(json!(0)).usage_limits({
            let mut limits = UsageLimits::default();
            limits.total_tokens_limit = Some(40);
            limits
        }))
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.unwrap().kind, "usage_limit_exceeded");
}

#[tokio::test]
async fn replay_detects_a_tampered_journal() {
    let s = scenarios().into_iter().find(|s| s.name == "loop_exit_expression").unwrap();
    let o = drive(&s, None).await;
    let mem = Arc::new(flujo_store::MemoryStore::new());
    let mut tampered = o.records.clone();
    // Change what the loop body returned in iteration 1 (and re-seal so the chain itself looks fine).
    let i = tampered.iter().position(|r| r.path == "0/loop:1/0").unwrap();
    tampered[i].output = Arc::new(json!(41));
    let mut prev = String::new();
    for r in &mut tampered {
        r.seal(&prev);
        prev = r.hash.clone();
    }
    mem.create_run(o.run_record.as_ref().unwrap()).await.unwrap();
    for r in &tampered {
        mem.append(r).await.unwrap();
    }
    let counter = flujo_skills::CallCounter::default();
    let f = Flujo::builder(s.pipeline.clone()).store(mem).skills(registry(&counter, &Arc::default())).build().unwrap();
    let err = f.replay("run-under-test").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("replay mismatch at step 'loop'"), "{msg}");
}

#[tokio::test]
async fn secrets_never_reach_the_store_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = flujo_store::open_store(&format!("sqlite:///{}", db.display())).unwrap();
    let p = Pipeline::new(
        "secrets",
        vec![
            // Secrets made at run time (as a login skill would return them), not literals of the definition.
            tf("login", "{'api_key': 'sk-live-' ~ (123000 + 456), 'user': 'ada', 'tokens': 7}")
                .with_updates_context(vec![]),
            tf("pw", "'hunter' ~ 2 ~ '-hunter' ~ 2").with_sink_to("credentials.password"),
            tf("use", "context.user ~ ':' ~ (context.api_key | length)"),
        ],
    );
    let f = Flujo::builder(p).store(store.clone()).build().unwrap();
    let r = f.run(json!(null)).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.output, Some(json!("ada:14")), "the live run sees the secret");
    let records = store.load_journal(&r.run_id).await.unwrap();
    verify_chain(&records).unwrap();
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("sk-live-123456") && !text.contains("hunter2"), "{text}");
    assert!(text.contains("[REDACTED]") && text.contains("\"user\":\"ada\""), "{text}");
    assert!(text.contains("\"tokens\":7"), "usage counters are not secrets");
    drop(store);
    drop(f);
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", db.display());
        if let Ok(bytes) = std::fs::read(&path) {
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains("sk-live-123456") && !hay.contains("hunter2"), "secret found in {path}");
        }
    }
}

/// A map refuses a list longer than its `max_items` (default `DEFAULT_MAX_MAP_ITEMS`) before any item runs:
/// a clear step failure, not unbounded work; `max_items: 0` is refused when the runner is built.
#[tokio::test]
async fn map_items_are_bounded() {
    let map = |max_items: Option<usize>| {
        let body = vec![Step::skill("double", "flujo.builtins.transform", json!({"expr": "previous_step * 2"}))];
        Pipeline::new(
            "bounded",
            vec![Step::new(
                "each",
                StepKind::Map({
                    let mut spec = MapSpec::default();
                    spec.body = body;
                    spec.concurrency = 2;
                    spec.max_items = max_items;
                    spec
                }),
            )],
        )
    };
    let flujo = Flujo::builder(map(Some(3))).build().unwrap();
    let r = flujo.run(json!([1, 2, 3])).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.output, Some(json!([2, 4, 6])));
    let r = flujo.run(json!([1, 2, 3, 4])).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let feedback = r.step_history[0].feedback.clone().unwrap_or_default();
    assert!(feedback.contains("4 items, more than max_items (3)"), "{feedback}");

    let big: Vec<Value> = (0..=DEFAULT_MAX_MAP_ITEMS as u64).map(Value::from).collect();
    let r = Flujo::builder(map(None)).build().unwrap().run(Value::Array(big)).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let feedback = r.step_history[0].feedback.clone().unwrap_or_default();
    assert!(feedback.contains(&format!("more than max_items ({DEFAULT_MAX_MAP_ITEMS})")), "{feedback}");

    let err = Flujo::builder(map(Some(0))).build().err().expect("max_items 0 is refused");
    assert!(err.to_string().contains("max_items must be at least 1"), "{err}");
}

fn nested_loops(depth: usize) -> Pipeline {
    let mut step = Step::skill("leaf", "flujo.builtins.transform", json!({"expr": "previous_step + 1"}));
    for i in 1..depth {
        step = Step::new(
            format!("l{i}"),
            StepKind::Loop({
                let mut spec = LoopSpec::default();
                spec.body = vec![step];
                spec.max_loops = 1;
                spec.on_max_loops = OnMaxLoops::Succeed;
                spec
            }),
        );
    }
    Pipeline::new("deep", vec![step])
}

/// A pipeline nested to the limit runs to completion on a tokio worker thread (2 MiB of stack; a level of
/// step futures takes tens of KiB in a debug build, so this overflowed near 50 levels before step futures
/// learned to continue on a fresh stack segment); one level more is refused when the runner is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_runs_on_worker_threads_and_has_a_bound() {
    let limit = flujo_engine::prepare::MAX_NESTING_DEPTH;
    let dir = tempfile::tempdir().unwrap();
    let store = flujo_store::open_store(&format!("sqlite:///{}", dir.path().join("deep.db").display())).unwrap();
    let flujo = Flujo::builder(nested_loops(limit)).store(store.clone()).build().unwrap();
    let r = tokio::spawn(async move {
        let r = flujo.run(json!(0)).await.map(|r| (r.run_id, r.status, r.output)).unwrap();
        // The stored definition (JSON nested far beyond serde_json's default 128 levels) reads back, and a
        // verification replay walks the whole depth again.
        let replayed = flujo.replay(&r.0).await.map(|v| v.output).unwrap();
        (r, replayed)
    })
    .await
    .unwrap();
    assert_eq!((r.0 .1, r.0 .2.clone()), (RunStatus::Completed, Some(json!(1))));
    assert_eq!(r.1, Some(json!(1)));
    let run = store.get_run(&r.0 .0).await.unwrap().unwrap();
    let definition = flujo_engine::pipeline_from_definition(&run.definition.unwrap()).unwrap();
    // Hashing recurses too; give this test thread's work the stack a release build would not need.
    let hashes = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || (definition.definition_hash(), nested_loops(limit).definition_hash()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(hashes.0, hashes.1);
    assert_eq!(run.pipeline_hash, hashes.0);

    let err = Flujo::builder(nested_loops(limit + 1)).build().err().expect("one level too deep");
    assert!(err.to_string().contains(&format!("nested deeper than {limit} levels")), "{err}");
}

/// One handle per run: `start` returns at once with the run id; the handle yields the run's events, then
/// resolves to its result; the same for `start_resume`, and for blocking code (an iterator of events).
#[tokio::test]
async fn run_handles_stream_events_and_resolve_to_the_result() {
    let store = Arc::new(flujo_store::MemoryStore::new());
    let p = Pipeline::new("h", vec![tf("a", "previous_step + 1"), hitl("ask", None), tf("b", "previous_step ~ '!'")]);
    let f = Flujo::builder(p).store(store.clone()).build().unwrap();
    let mut handle = f.start(json!(1));
    let run_id = handle.run_id().to_owned();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(std::time::Duration::from_secs(10), handle.next_event()).await.unwrap() {
        events.push(e);
    }
    assert!(!events.is_empty());
    let paused = tokio::time::timeout(std::time::Duration::from_secs(10), handle).await.unwrap().unwrap();
    assert_eq!(paused.status, RunStatus::Paused);
    assert_eq!(paused.run_id, run_id);
    // Resume through a handle, reading it as a Stream.
    use futures::StreamExt;
    let mut handle = f.start_resume(&run_id, ResumeRequest::answer(json!("go")));
    let mut count = 0;
    while tokio::time::timeout(std::time::Duration::from_secs(10), handle.next()).await.unwrap().is_some() {
        count += 1;
    }
    assert!(count > 0);
    let done = handle.await.unwrap();
    assert_eq!(done.output, Some(json!("go!")));
    // Blocking code: an iterator of events, then the result.
    let g = f.clone();
    let (n, result) = tokio::task::spawn_blocking(move || {
        let b = g.blocking().unwrap();
        let h = b.start(json!(5)).unwrap();
        let n = h.events().count();
        (n, h.wait().unwrap())
    })
    .await
    .unwrap();
    assert!(n > 0);
    assert_eq!(result.status, RunStatus::Paused);
}
