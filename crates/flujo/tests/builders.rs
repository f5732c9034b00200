//! The step builders: a pipeline of every kind built in Rust equals the same pipeline loaded from YAML, and it
//! runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flujo::prelude::*;

const YAML: &str = r#"
version: "0.1"
name: every_kind
steps:
  - name: inc
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - kind: loop
    name: count
    loop:
      max_loops: 10
      exit_expression: "previous_step >= 5"
      body:
        - name: add
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - kind: map
    name: each
    map:
      iterable_input: "{{ [previous_step, previous_step * 10] }}"
      concurrency: 2
      body:
        - name: half
          agent: {id: flujo.builtins.transform, params: {expr: "this / 2"}}
  - kind: conditional
    name: pick
    condition_expression: "previous_step | length == 2"
    branches:
      "true":
        - name: first
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step[0]"}}
    default_branch:
      - name: none
  - kind: parallel
    name: fan_out
    merge_strategy: no_merge
    reduce: values
    branches:
      a:
        - name: a1
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 100"}}
      b:
        - name: b1
  - kind: cache
    name: cached
    wrapped_step:
      name: sum
      agent: {id: flujo.builtins.aggregate, params: {op: sum}}
    ttl_s: 60
  - kind: StateMachine
    name: machine
    start_state: work
    end_states: [done]
    states:
      work:
        - name: noop
    transitions:
      - {from: work, on: success, to: done}
      - {from: work, on: failure, to: done, when: "output.event == 'failure'"}
  - kind: hitl
    name: approve
    message: "Ship {{ previous_step }}?"
    sink_to: decision
"#;

fn rust_pipeline() -> Pipeline {
    let t = |name: &str, expr: &str| Step::skill(name, "flujo.builtins.transform", json!({ "expr": expr }));
    Pipeline::new(
        "every_kind",
        vec![
            t("inc", "previous_step + 1"),
            Step::loop_("count", [t("add", "previous_step + 1")]).max_loops(10).exit_when("previous_step >= 5").into(),
            Step::map("each", [t("half", "this / 2")])
                .over("{{ [previous_step, previous_step * 10] }}")
                .concurrency(2)
                .into(),
            Step::conditional("pick")
                .when("previous_step | length == 2")
                .branch("true", [t("first", "previous_step[0]")])
                .otherwise([Step::passthrough("none")])
                .into(),
            Step::parallel("fan_out")
                .branch("a", [t("a1", "previous_step + 100")])
                .branch("b", [Step::passthrough("b1")])
                .merge(MergeStrategy::NoMerge)
                .reduce(ReduceMode::Values)
                .into(),
            Step::cache("cached", Step::skill("sum", "flujo.builtins.aggregate", json!({"op": "sum"})))
                .ttl_s(60.0)
                .into(),
            Step::state_machine("machine", "work")
                .state("work", [Step::passthrough("noop")])
                .end_state("done")
                .transition("work", TransitionOn::Success, "done")
                .transition_when("work", TransitionOn::Failure, "done", "output.event == 'failure'")
                .into(),
            Step::hitl("approve", "Ship {{ previous_step }}?", None).with_sink_to("decision"),
        ],
    )
}

#[test]
fn a_pipeline_built_in_rust_equals_its_yaml() {
    let registry = BuiltinRegistry::new();
    let opts = flujo::blueprint::LoadOptions { registry: Some(&registry), ..Default::default() };
    let loaded = flujo::blueprint::load_str(YAML, std::path::Path::new("every_kind.yaml"), &opts).unwrap();
    let built = rust_pipeline();
    for (y, r) in loaded.pipeline.steps.iter().zip(&built.steps) {
        assert_eq!(y, r, "step {}", r.name);
    }
    assert_eq!(loaded.pipeline, built);
}

#[test]
fn the_built_pipeline_runs_pauses_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&format!("sqlite:///{}", dir.path().join("state.db").display())).unwrap();
    let flujo = Flujo::builder(rust_pipeline()).store(store).build().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let paused = rt.block_on(flujo.run(json!(1))).unwrap();
    assert_eq!(paused.status, RunStatus::Paused, "{:?}", paused.error);
    // inc: 2; loop: 5; map: [2.5, 25]; pick: 2.5; fan_out: [102.5, 2.5]; sum: 105; machine: 105.
    let done = rt.block_on(flujo.resume(&paused.run_id, json!("ship it"))).unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.context["decision"], json!("ship it"));
    let sum = done.step_history.iter().find(|s| s.name == "cached").unwrap();
    assert_eq!(*sum.output, json!(105.0));
}

/// The kinds that take agents: a dynamic router (a skill picks branches), an agentic loop and a tree search
/// (model agents declared under `agents:` in YAML, `AgentRef::Model` in Rust).
#[test]
fn agent_driven_kinds_equal_their_yaml() {
    let yaml = r#"
version: "0.1"
name: agents
agents:
  planner: {model: "mock:echo", system_prompt: "Plan."}
  judge: {model: "mock:echo", system_prompt: "Score."}
steps:
  - kind: dynamic_router
    name: route
    router_agent: {id: flujo.builtins.transform, params: {expr: "['a']"}}
    branches:
      a: [{name: a1}]
      b: [{name: b1}]
  - kind: agentic_loop
    name: plan
    planner: agents.planner
    tools: [flujo.builtins.stringify]
    max_turns: 4
  - kind: tree_search
    name: search
    proposer: agents.planner
    evaluator: agents.judge
    beam_width: 2
    max_depth: 3
    goal_score_threshold: 0.9
"#;
    let registry = BuiltinRegistry::new();
    let opts = flujo::blueprint::LoadOptions { registry: Some(&registry), ..Default::default() };
    let loaded = flujo::blueprint::load_str(yaml, std::path::Path::new("agents.yaml"), &opts).unwrap();
    let model = |prompt: &str| AgentRef::Model {
        model: "mock:echo".into(),
        settings: json!({"model": "mock:echo", "system_prompt": prompt}),
    };
    let built = Pipeline::new(
        "agents",
        vec![
            Step::router("route", AgentRef::skill("flujo.builtins.transform", json!({"expr": "['a']"})))
                .branch("a", [Step::passthrough("a1")])
                .branch("b", [Step::passthrough("b1")])
                .into(),
            Step::agentic_loop("plan", model("Plan.")).tool("flujo.builtins.stringify").max_turns(4).into(),
            Step::tree_search("search", model("Plan."), model("Score."))
                .beam_width(2)
                .max_depth(3)
                .goal_score_threshold(0.9)
                .into(),
        ],
    );
    for (y, r) in loaded.pipeline.steps.iter().zip(&built.steps) {
        assert_eq!(y, r, "step {}", r.name);
    }
    assert_eq!(loaded.pipeline, built);
}

/// A custom kind's `children:` in YAML are steps like any others (checked, lowered); they equal
/// `Step::custom(..).child(..)`, and a policy runs them with `ExecutionFrame::run_child`, journaled at their own
/// paths.
#[test]
fn custom_kinds_hold_child_steps() {
    let yaml = r#"
version: "0.1"
name: custom
steps:
  - kind: twice
    name: t
    label: demo
    children:
      body:
        - name: inc
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
"#;
    let registry = BuiltinRegistry::new();
    let kinds = vec!["twice".to_owned()];
    let opts = flujo::blueprint::LoadOptions { registry: Some(&registry), custom_kinds: kinds, ..Default::default() };
    let loaded = flujo::blueprint::load_str(yaml, std::path::Path::new("custom.yaml"), &opts).unwrap();
    let built = Pipeline::new(
        "custom",
        vec![Step::custom("t", "twice", json!({"label": "demo"}))
            .child("body", [Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"}))])
            .into()],
    );
    assert_eq!(loaded.pipeline, built);
    // A typo inside the children is found like anywhere else.
    let bad = yaml.replace("agent:", "agnt:");
    let err = flujo::blueprint::load_str(&bad, std::path::Path::new("custom.yaml"), &opts).unwrap_err();
    assert!(err.diagnostics.iter().any(|d| d.rule == "BP-FIELD-TYPO"), "{err}");

    struct Twice;
    #[async_trait]
    impl StepPolicy for Twice {
        async fn execute(&self, mut f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
            let first = f.run_child("body", 0, f.input.clone()).await?;
            let second = f.run_child("body", 1, first.output).await?;
            let missing = f.run_child("nope", 0, Value::Null).await?;
            assert!(!missing.succeeded() && missing.feedback.unwrap_or_default().contains("it has: body"));
            Ok(PolicyOutcome::success(second.output))
        }
    }
    let store = std::sync::Arc::new(MemoryStore::new());
    let flujo = Flujo::builder(built).store(store.clone()).policy("twice", std::sync::Arc::new(Twice)).build().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(flujo.run(json!(1))).unwrap();
    assert_eq!(r.output, Some(json!(3)));
    let journal = rt.block_on(store.load_journal(&r.run_id)).unwrap();
    let paths: Vec<&str> = journal.iter().map(|j| j.path.as_str()).collect();
    assert_eq!(paths, ["0/body:0/0", "0/body:1/0", "0"]);
}
