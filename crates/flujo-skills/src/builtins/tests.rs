//! Behaviour of every built-in through `resolve` + `call`, and resolve-time param validation.

use std::sync::Arc;
use std::time::Instant;

use flujo_core::patch::split_context_path as p;
use flujo_core::{Context, ContextSnapshot, PatchOp, ResolveError, SkillCall, SkillError, SkillOutput, SkillRegistry};
use serde_json::{json, Map, Value};

use crate::{builtin_ids, BuiltinRegistry};

fn call_with(input: Value, attempt: u32, context: ContextSnapshot) -> SkillCall {
    {
        let mut call = SkillCall::new(input);
        call.run_id = Arc::from("run-1");
        call.path = Arc::from("0");
        call.step = Arc::from("step");
        call.attempt = attempt;
        call.idempotency_key = Arc::from("run-1/0");
        call.context = context;
        call.deltas = None;
        call.this = None;
        call
    }
}

async fn run_ctx(id: &str, params: Value, input: Value, ctx: ContextSnapshot) -> Result<SkillOutput, SkillError> {
    let skill = BuiltinRegistry::new().resolve(id, &params).unwrap();
    skill.call(call_with(input, 1, ctx)).await
}

async fn run(id: &str, params: Value, input: Value) -> Result<SkillOutput, SkillError> {
    run_ctx(id, params, input, ContextSnapshot::default()).await
}

async fn out(id: &str, params: Value, input: Value) -> Value {
    run(id, params, input).await.unwrap().output
}

fn bad_params(id: &str, params: Value) -> String {
    match BuiltinRegistry::new().resolve(id, &params) {
        Err(ResolveError::BadParams { message, .. }) => message,
        Err(other) => panic!("{id} {params}: expected BadParams, got {other:?}"),
        Ok(_) => panic!("{id} {params}: expected BadParams, resolved fine"),
    }
}

/// A context with user field `x = {"y": 7}`, `name = "ada"` and step output `steps.a = 41`.
fn sample_context() -> ContextSnapshot {
    let mut user = Map::new();
    user.insert("name".into(), json!("ada"));
    let mut ctx = Context::new("run-1", json!("hello"), user);
    ctx.apply(PatchOp::set(p("x"), json!({"y": 7}))).unwrap();
    ctx.apply(PatchOp::set(p("steps.a"), json!(41))).unwrap();
    ctx.snapshot()
}

#[test]
fn all_builtins_resolve_by_full_and_short_id() {
    let registry = BuiltinRegistry::new();
    let params = |id: &str| match id {
        "transform" => json!({"expr": "1"}),
        "render_template" => json!({"template": "x"}),
        "context_set" | "context_get" => json!({"path": "a"}),
        "sleep" => json!({"ms": 0}),
        "select_fields" => json!({"fields": []}),
        "aggregate" => json!({"op": "sum"}),
        _ => Value::Null,
    };
    let ids = builtin_ids();
    assert_eq!(ids.len(), 15);
    for full in ids {
        let short = full.strip_prefix("flujo.builtins.").unwrap();
        let skill = registry.resolve(&full, &params(short)).unwrap();
        assert_eq!(skill.info().id, full);
        assert!(!skill.info().side_effects);
        assert_eq!(registry.resolve(short, &params(short)).unwrap().info().id, full);
    }
}

#[tokio::test]
async fn passthrough_and_stringify() {
    assert_eq!(out("passthrough", Value::Null, json!({"a": [1, 2]})).await, json!({"a": [1, 2]}));
    assert_eq!(out("flujo.builtins.passthrough", json!({}), json!(3)).await, json!(3));
    assert_eq!(out("stringify", Value::Null, json!("plain")).await, json!("plain"));
    assert_eq!(
        out("stringify", Value::Null, json!({"a": 1, "b": [true, null]})).await,
        json!(r#"{"a":1,"b":[true,null]}"#)
    );
    assert_eq!(out("stringify", Value::Null, json!(2.5)).await, json!("2.5"));
}

#[tokio::test]
async fn transform_evaluates_against_input() {
    assert_eq!(out("transform", json!({"expr": "previous_step + 1"}), json!(41)).await, json!(42));
    assert_eq!(
        out("transform", json!({"expr": "previous_step.items | length"}), json!({"items": [1, 2, 3]})).await,
        json!(3)
    );
}

#[tokio::test]
async fn transform_reads_context_fields_and_step_outputs() {
    let ctx = sample_context();
    let got = run_ctx("transform", json!({"expr": "context.x.y + steps.a"}), json!(null), ctx.clone()).await.unwrap();
    assert_eq!(got.output, json!(48));
    assert!(got.context_ops.is_empty());
    let got = run_ctx("transform", json!({"expr": "context.name"}), json!(null), ctx).await.unwrap();
    assert_eq!(got.output, json!("ada"));
}

#[test]
fn transform_bad_params_fail_at_resolve() {
    assert!(bad_params("transform", json!({})).contains("expr"));
    assert!(bad_params("transform", Value::Null).contains("expr"));
    assert!(bad_params("transform", json!({"expr": 5})).contains("string"));
    assert!(bad_params("transform", json!({"expr": "previous_step +"})).contains("compile"));
    assert!(bad_params("transform", json!({"expr": "1", "exp": "2"})).contains("exp"));
    assert!(bad_params("transform", json!(["expr"])).contains("object"));
    let err = BuiltinRegistry::new().resolve("transform", &json!({})).err().unwrap();
    assert!(matches!(err, ResolveError::BadParams { ref id, .. } if id == "flujo.builtins.transform"));
}

#[test]
fn unknown_filters_fail_at_resolve() {
    assert!(bad_params("transform", json!({"expr": "previous_step | no_such_filter"})).contains("no_such_filter"));
    assert!(bad_params("render_template", json!({"template": "{{ x | bogus }}"})).contains("bogus"));
    assert!(bad_params("transform", json!({"expr": "1", "strict": "yes"})).contains("boolean"));
}

#[tokio::test]
async fn strict_mode_makes_undefined_names_fatal() {
    let lenient = run("transform", json!({"expr": "context.missing"}), json!(1)).await.unwrap();
    assert_eq!(lenient.output, Value::Null);
    let err = run("transform", json!({"expr": "context.missing", "strict": true}), json!(1)).await.unwrap_err();
    assert!(!err.retryable);
    let err = run("render_template", json!({"template": "{{ nope }}", "strict": true}), json!(1)).await.unwrap_err();
    assert!(!err.retryable && err.message.starts_with("render_template"));
}

#[tokio::test]
async fn render_template_renders_with_context() {
    let got = run_ctx(
        "render_template",
        json!({"template": "Hi {{ context.name }}, got {{ previous_step }} and {{ steps.a }}"}),
        json!(5),
        sample_context(),
    )
    .await
    .unwrap();
    assert_eq!(got.output, json!("Hi ada, got 5 and 41"));
    assert!(bad_params("render_template", json!({})).contains("template"));
    assert!(bad_params("render_template", json!({"template": "{{ unclosed"})).contains("compile"));
}

#[tokio::test]
async fn context_set_returns_value_and_set_op() {
    let got = run("context_set", json!({"path": "context.result.score"}), json!(9)).await.unwrap();
    assert_eq!(got.output, json!(9));
    assert_eq!(got.context_ops, vec![PatchOp::set(vec!["result".into(), "score".into()], json!(9))]);

    let got = run("context_set", json!({"path": "flag", "value": true}), json!("ignored")).await.unwrap();
    assert_eq!(got.output, json!(true));
    assert_eq!(got.context_ops, vec![PatchOp::set(p("flag"), json!(true))]);

    // Explicit null is a value, not "use the input".
    let got = run("context_set", json!({"path": "flag", "value": null}), json!(1)).await.unwrap();
    assert_eq!(got.context_ops, vec![PatchOp::set(p("flag"), Value::Null)]);

    // The ops apply cleanly to a real context.
    let mut ctx = Context::new("r", Value::Null, Map::new());
    for op in run("context_set", json!({"path": "a.b"}), json!([1])).await.unwrap().context_ops {
        ctx.apply(op).unwrap();
    }
    assert_eq!(ctx.lookup(&p("a.b")), Some(&json!([1])));
}

#[tokio::test]
async fn context_set_on_framework_fields_is_fatal() {
    for path in ["steps.a", "hitl_history", "run_id", "context.initial_prompt", "status.x"] {
        let err = run("context_set", json!({"path": path}), json!(1)).await.unwrap_err();
        assert!(!err.retryable, "{path}");
        assert!(err.message.contains("framework field"), "{path}: {}", err.message);
    }
    assert!(bad_params("context_set", json!({})).contains("path"));
    assert!(bad_params("context_set", json!({"path": ""})).contains("non-empty"));
    assert!(bad_params("context_set", json!({"path": "context."})).contains("non-empty"));
}

#[tokio::test]
async fn context_get_reads_fields_steps_and_defaults() {
    let ctx = sample_context();
    let get = |params: Value| run_ctx("context_get", params, json!("in"), ctx.clone());
    assert_eq!(get(json!({"path": "x.y"})).await.unwrap().output, json!(7));
    assert_eq!(get(json!({"path": "context.name"})).await.unwrap().output, json!("ada"));
    assert_eq!(get(json!({"path": "steps.a"})).await.unwrap().output, json!(41));
    assert_eq!(get(json!({"path": "initial_prompt"})).await.unwrap().output, json!("hello"));
    assert_eq!(get(json!({"path": "missing.deep"})).await.unwrap().output, Value::Null);
    assert_eq!(get(json!({"path": "steps.nope", "default": 0})).await.unwrap().output, json!(0));
    assert_eq!(get(json!({"path": "x.y.z", "default": "d"})).await.unwrap().output, json!("d"));
    assert!(bad_params("context_get", json!({})).contains("path"));
    assert!(bad_params("context_get", json!({"path": "steps"})).contains("steps"));
}

#[tokio::test]
async fn context_get_indexes_arrays() {
    let mut ctx = Context::new("r", Value::Null, Map::new());
    ctx.apply(PatchOp::set(p("list"), json!([{"v": 1}, {"v": 2}]))).unwrap();
    let got = run_ctx("context_get", json!({"path": "list.1.v"}), Value::Null, ctx.snapshot()).await.unwrap();
    assert_eq!(got.output, json!(2));
}

#[tokio::test]
async fn context_merge_sets_each_key() {
    let input = json!({"a": 1, "b": {"c": 2}});
    let got = run("context_merge", Value::Null, input.clone()).await.unwrap();
    assert_eq!(got.output, input);
    assert_eq!(got.context_ops, vec![PatchOp::set(p("a"), json!(1)), PatchOp::set(p("b"), json!({"c": 2}))]);

    let got = run("context_merge", json!({"path": "ns.inner"}), json!({"k": "v"})).await.unwrap();
    assert_eq!(got.context_ops, vec![PatchOp::set(p("ns.inner.k"), json!("v"))]);

    let err = run("context_merge", Value::Null, json!([1])).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("object"));
    let err = run("context_merge", Value::Null, json!({"ok": 1, "run_id": "x"})).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("run_id"));
    let err = run("context_merge", json!({"path": "steps"}), json!({"a": 1})).await.unwrap_err();
    assert!(!err.retryable);
}

#[tokio::test]
async fn sleep_waits_then_passes_input() {
    let start = Instant::now();
    assert_eq!(out("sleep", json!({"ms": 20}), json!("x")).await, json!("x"));
    assert!(start.elapsed().as_millis() >= 20);
    assert_eq!(out("sleep", json!({"ms": 0.5}), json!(1)).await, json!(1));
    assert!(bad_params("sleep", json!({})).contains("ms"));
    assert!(bad_params("sleep", json!({"ms": -1})).contains("non-negative"));
    assert!(bad_params("sleep", json!({"ms": "10"})).contains("non-negative"));
}

#[tokio::test]
async fn fail_always_fails_without_times() {
    let skill = BuiltinRegistry::new().resolve("fail", &json!({"message": "boom"})).unwrap();
    for attempt in 1..=3 {
        let err = skill.call(call_with(json!(1), attempt, ContextSnapshot::default())).await.unwrap_err();
        assert_eq!(err, SkillError::new("boom"));
    }
    let err = run("fail", Value::Null, json!(1)).await.unwrap_err();
    assert!(err.retryable && err.message.contains("intentional"));
    let err = run("fail", json!({"retryable": false}), json!(1)).await.unwrap_err();
    assert!(!err.retryable);
}

#[tokio::test]
async fn fail_with_times_fails_only_first_attempts() {
    let skill = BuiltinRegistry::new().resolve("fail", &json!({"times": 2})).unwrap();
    let ctx = ContextSnapshot::default;
    assert!(skill.call(call_with(json!("v"), 1, ctx())).await.is_err());
    assert!(skill.call(call_with(json!("v"), 2, ctx())).await.is_err());
    assert_eq!(skill.call(call_with(json!("v"), 3, ctx())).await.unwrap().output, json!("v"));
    let zero = BuiltinRegistry::new().resolve("fail", &json!({"times": 0})).unwrap();
    assert!(zero.call(call_with(json!(1), 1, ctx())).await.is_ok());
    assert!(bad_params("fail", json!({"times": -1})).contains("times"));
    assert!(bad_params("fail", json!({"message": 3})).contains("message"));
}

#[tokio::test]
async fn select_fields_keeps_listed_keys_in_order() {
    let got = out("select_fields", json!({"fields": ["c", "a", "zz"]}), json!({"a": 1, "b": 2, "c": 3})).await;
    assert_eq!(got, json!({"c": 3, "a": 1}));
    assert_eq!(serde_json::to_string(&got).unwrap(), r#"{"c":3,"a":1}"#);
    assert!(!run("select_fields", json!({"fields": ["a"]}), json!(1)).await.unwrap_err().retryable);
    assert!(bad_params("select_fields", json!({})).contains("fields"));
    assert!(bad_params("select_fields", json!({"fields": ["a", 1]})).contains("strings"));
    assert!(bad_params("select_fields", json!({"fields": "a"})).contains("strings"));
}

#[tokio::test]
async fn flatten_one_level() {
    assert_eq!(out("flatten", Value::Null, json!([[1, 2], 3, [], [[4]]])).await, json!([1, 2, 3, [4]]));
    assert_eq!(out("flatten", Value::Null, json!([])).await, json!([]));
    assert!(!run("flatten", Value::Null, json!({"a": 1})).await.unwrap_err().retryable);
    assert!(bad_params("flatten", json!({"depth": 2})).contains("takes no params"));
}

#[tokio::test]
async fn aggregate_ops() {
    let agg = |op: &str, input: Value| out("aggregate", json!({"op": op}), input);
    assert_eq!(agg("sum", json!([1, 2, 3])).await, json!(6));
    assert_eq!(agg("sum", json!([1, 2.5])).await, json!(3.5));
    assert_eq!(agg("sum", json!([])).await, json!(0));
    assert_eq!(agg("sum", json!([i64::MAX, 1])).await, json!(i64::MAX as f64 + 1.0));
    assert_eq!(agg("count", json!([1, "x", null])).await, json!(3));
    assert_eq!(agg("min", json!([3, -1.5, 2])).await, json!(-1.5));
    assert_eq!(agg("max", json!([3, -1.5, 2])).await, json!(3));
    assert_eq!(agg("min", json!([])).await, Value::Null);
    assert_eq!(agg("avg", json!([1, 2, 3, 4])).await, json!(2.5));
    assert_eq!(agg("avg", json!([])).await, Value::Null);

    let err = run("aggregate", json!({"op": "sum"}), json!([1, "2"])).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("item 1"));
    assert!(!run("aggregate", json!({"op": "sum"}), json!(5)).await.unwrap_err().retryable);
    assert!(bad_params("aggregate", json!({})).contains("op"));
    assert!(bad_params("aggregate", json!({"op": "median"})).contains("median"));
}

#[tokio::test]
async fn transform_and_render_template_see_every_scope_name() {
    // `this` (the map item), `resume_input` (the latest answer), `context`, `steps`, `initial_prompt`
    let mut ctx = Context::new("run-1", json!("hello"), Map::new());
    ctx.apply(PatchOp::set(p("hitl_history"), json!([{"answer": "first"}, {"answer": "yes"}]))).unwrap();
    let ctx = ctx.snapshot();
    for (id, key, src) in [
        ("flujo.builtins.transform", "expr", "[this, resume_input, initial_prompt, previous_step] | join(',')"),
        (
            "flujo.builtins.render_template",
            "template",
            "{{ this }},{{ resume_input }},{{ initial_prompt }},{{ previous_step }}",
        ),
    ] {
        let skill = BuiltinRegistry::new().resolve(id, &json!({ key: src, "strict": true })).unwrap();
        let mut call = call_with(json!("in"), 1, ctx.clone());
        call.this = Some(Arc::new(json!(7)));
        let out = skill.call(call).await.unwrap().output;
        assert_eq!(out, json!("7,yes,hello,in"), "{id}");
    }
}

#[tokio::test]
async fn arithmetic_errors_fail_the_transform() {
    for expr in ["previous_step / 0", "previous_step % 0", "previous_step // 0", "previous_step * 1e308 * 10"] {
        let err = run("flujo.builtins.transform", json!({ "expr": expr }), json!(5)).await.unwrap_err();
        assert!(
            err.message.contains("division by zero") || err.message.contains("not a finite number"),
            "{expr}: {}",
            err.message
        );
    }
}

#[tokio::test]
async fn the_originals_welcome_confirmation_and_csv() {
    let text = out("welcome_agent", json!({"name": "Ana"}), Value::Null).await;
    assert!(text.as_str().unwrap().starts_with("Welcome, Ana!\n"));
    assert!(out("welcome_agent", Value::Null, json!("ignored"))
        .await
        .as_str()
        .unwrap()
        .starts_with("Welcome, Developer!"));
    assert!(bad_params("welcome_agent", json!({"name": 3})).contains("`name` must be a string"));
    for (answer, want) in
        [("Y", "approved"), ("", "approved"), ("yes ", "approved"), ("no", "denied"), ("later", "denied")]
    {
        assert_eq!(out("check_user_confirmation", Value::Null, json!(answer)).await, json!(want), "{answer}");
    }
    let rows = json!([{"b": "x,y", "a": 1}, {"a": 2, "c": "say \"hi\""}, 7]);
    assert_eq!(
        out("to_csv", Value::Null, rows.clone()).await,
        json!("a,b,c,value\r\n1,\"x,y\",,\r\n2,,\"say \"\"hi\"\"\",\r\n,,,7\r\n")
    );
    assert_eq!(out("to_csv", json!({"headers": ["a"]}), rows).await, json!("a\r\n1\r\n2\r\n\r\n"));
    assert_eq!(out("to_csv", Value::Null, json!([])).await, json!(""));
    assert!(bad_params("to_csv", json!({"headers": "a"})).contains("`headers` must be a list of strings"));
}
