//! Times template and expression evaluation on the engine's hot path.
//!
//! Run with `cargo run --release -p flujo-template --example template_speed`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use flujo_core::context::Context;
use flujo_template::{compile_expression, compile_json, compile_template, render_json, Scope, UndefinedMode};
use serde_json::{json, Map};

const N: u32 = 100_000;

fn time(label: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        black_box(f());
    }
    let start = Instant::now();
    let mut ok = true;
    for _ in 0..N {
        ok &= black_box(f());
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
    println!("{label:<58} {ns:>8.0} ns/eval{}", if ok { "" } else { "  (FAILED)" });
}

fn main() {
    let mut user = Map::new();
    user.insert("count".into(), json!(3));
    user.insert("user".into(), json!({"name": "ada"}));
    user.insert(
        "items".into(),
        json!((0..100).map(|i| json!({"id": i, "title": format!("item {i}")})).collect::<Vec<_>>()),
    );
    user.insert("big".into(), json!({"blob": "y".repeat(1 << 20)}));
    let mut ctx = Context::new("run", json!("hello"), user);
    ctx.set_step_output("a", Arc::new(json!("x")));
    let snap = ctx.snapshot();
    let prev = json!(41);
    let scope = Scope::new(&prev).with_context(&snap);
    let lenient = UndefinedMode::Lenient;

    let (Ok(plus), Ok(cond), Ok(hello), Ok(single), Ok(each)) = (
        compile_expression("previous_step + 1"),
        compile_expression("context.count > 2 and steps.a == 'x'"),
        compile_template("Hello {{ context.user.name | upper }}, step a said {{ steps.a.output }}."),
        compile_template("{{ previous_step }}"),
        compile_template("{{#each [1, 2, 3]}}{{#if this > 1}}{{ this }}{{/if}}{{/each}}"),
    ) else {
        eprintln!("compile failed");
        std::process::exit(1);
    };
    let input = json!({"n": "{{ previous_step }}", "msg": "hi {{ context.user.name }}", "fixed": [1, 2, "three"]});
    let Ok(compiled_input) = compile_json(&input) else {
        eprintln!("compile failed");
        std::process::exit(1);
    };

    time("expr  previous_step + 1", || plus.eval(&scope, lenient).is_ok_and(|v| v == json!(42)));
    time("expr  context.count > 2 and steps.a == 'x' (eval_bool)", || cond.eval_bool(&scope, lenient) == Ok(true));
    time("tmpl  {{ previous_step }} (render_value)", || single.render_value(&scope, lenient).is_ok());
    time("tmpl  {{ previous_step }} (render)", || single.render(&scope, lenient).is_ok());
    time("tmpl  Hello {{ context.user.name | upper }}, … (render)", || hello.render(&scope, lenient).is_ok());
    time("tmpl  {{#each}}{{#if}} (render)", || each.render(&scope, lenient).is_ok_and(|s| s == "23"));
    let (Ok(each100), Ok(concat)) = (
        compile_template("{{#each context.items}}- {{ this.title }}\n{{/each}}"),
        compile_template("{% for i in range(100) %}{{ 'item ' ~ i ~ ',' }}{% endfor %}{{ [1, 2] * 50 | join('') }}"),
    ) else {
        eprintln!("compile failed");
        std::process::exit(1);
    };
    time("tmpl  {{#each context.items}} 100 items (render)", || each100.render(&scope, lenient).is_ok());
    time("tmpl  100 x `~`, repeat, join (render)", || concat.render(&scope, lenient).is_ok());
    time("json  compiled input (3 fields)", || compiled_input.render(&scope, lenient).is_ok());
    time("json  render_json input (cache lookups)", || render_json(&input, &scope, lenient).is_ok());
    time("compile_expression (cache hit)", || compile_expression("previous_step + 1").is_ok());
}
