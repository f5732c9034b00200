//! Behaviour tests of the public API: filters, scope names, helpers, undefined modes, JSON rendering,
//! sandboxing and limits.

use std::sync::Arc;

use flujo_core::context::{Context, ContextSnapshot};
use serde_json::{json, Map, Value};

use super::*;

fn ctx() -> ContextSnapshot {
    let mut user = Map::new();
    user.insert("count".into(), json!(3));
    user.insert("user".into(), json!({"name": "ada", "tags": ["x", "y"], "z": 1, "a": 2}));
    user.insert("items".into(), json!([1, 2, 3]));
    user.insert("empty".into(), json!([]));
    let mut c = Context::new("run-1", json!("hello world"), user);
    c.set_step_output("a", Arc::new(json!("x")));
    c.set_step_output("fetch", Arc::new(json!({"title": "T", "n": 5, "list": [{"k": 1}, {"k": 2}]})));
    c.snapshot()
}

fn render(src: &str, scope: &Scope<'_>) -> String {
    match compile_template(src).and_then(|t| t.render(scope, UndefinedMode::Lenient)) {
        Ok(s) => s,
        Err(e) => panic!("{src}: {e}"),
    }
}

fn render_strict(src: &str, scope: &Scope<'_>) -> Result<String, TemplateError> {
    compile_template(src)?.render(scope, UndefinedMode::Strict)
}

fn eval(src: &str, scope: &Scope<'_>) -> Value {
    match compile_expression(src).and_then(|e| e.eval(scope, UndefinedMode::Lenient)) {
        Ok(v) => v,
        Err(e) => panic!("{src}: {e}"),
    }
}

fn value(src: &str, scope: &Scope<'_>) -> Value {
    match compile_template(src).and_then(|t| t.render_value(scope, UndefinedMode::Lenient)) {
        Ok(v) => v,
        Err(e) => panic!("{src}: {e}"),
    }
}

#[test]
fn handles_are_send_sync_static_and_cached() {
    fn assert_shareable<T: Send + Sync + 'static + Clone>() {}
    assert_shareable::<CompiledTemplate>();
    assert_shareable::<CompiledExpr>();
    assert_shareable::<CompiledJson>();
    let (Ok(a), Ok(b)) = (compile_template("{{ previous_step }}!"), compile_template("{{ previous_step }}!")) else {
        panic!("compile failed")
    };
    assert!(a.same_as(&b));
    let (Ok(a), Ok(b)) = (compile_expression("previous_step + 1"), compile_expression("previous_step + 1")) else {
        panic!("compile failed")
    };
    assert!(a.same_as(&b));
    assert_eq!(a.source(), "previous_step + 1");
}

#[test]
fn builtin_filters_work() {
    let c = ctx();
    let prev = json!("  Mixed Case  ");
    let s = Scope::new(&prev).with_context(&c);
    assert_eq!(render("{{ previous_step | upper }}", &s), "  MIXED CASE  ");
    assert_eq!(render("{{ previous_step | lower }}", &s), "  mixed case  ");
    assert_eq!(render("[{{ previous_step | trim }}]", &s), "[Mixed Case]");
    assert_eq!(render("{{ context.items | length }}", &s), "3");
    assert_eq!(render("{{ context.user.name | length }}", &s), "3");
    assert_eq!(render("{{ context.user.tags | join(', ') }}", &s), "x, y");
    assert_eq!(render("{{ context.items | join('-') }}", &s), "1-2-3");
    assert_eq!(render("{{ context.nope | default('dflt') }}", &s), "dflt");
    assert_eq!(render("{{ context.nope or 'fallback' }}", &s), "fallback");
    assert_eq!(render("{{ context.user.name or 'fallback' }}", &s), "ada");
    assert_eq!(render("{{ context.empty or 'none left' }}", &s), "none left");
}

#[test]
fn tojson_is_compact_parseable_and_ordered() {
    let c = ctx();
    let prev = json!({"b": 1, "a": [true, null, 1.5, "it's <b>&"]});
    let s = Scope::new(&prev).with_context(&c);
    let out = render("{{ previous_step | tojson }}", &s);
    assert_eq!(out, r#"{"b":1,"a":[true,null,1.5,"it's <b>&"]}"#);
    assert_eq!(serde_json::from_str::<Value>(&out).ok(), Some(prev.clone()));
    // context data (served lazily) serialises the same way, keeping key order
    let out = render("{{ context.user | tojson }}", &s);
    assert_eq!(out, r#"{"name":"ada","tags":["x","y"],"z":1,"a":2}"#);
    let pretty = render("{{ context.items | tojson(indent=2) }}", &s);
    assert_eq!(serde_json::from_str::<Value>(&pretty).ok(), Some(json!([1, 2, 3])));
    assert!(pretty.contains('\n'));
}

#[test]
fn every_known_filter_is_registered() {
    let prev = json!([1, 2]);
    let s = Scope::new(&prev);
    for name in KNOWN_FILTERS {
        let Ok(t) = compile_template(&format!("{{{{ previous_step | {name} }}}}")) else {
            panic!("{name} does not compile")
        };
        if let Err(TemplateError::Render { message }) = t.render(&s, UndefinedMode::Lenient) {
            assert!(!message.contains("unknown filter"), "{name}: {message}");
        }
    }
    assert!(matches!(
        compile_template("{{ previous_step | frobnicate }}").and_then(|t| t.render(&s, UndefinedMode::Lenient)),
        Err(TemplateError::Render { message }) if message.contains("unknown filter")
    ));
}

#[test]
fn scope_names_resolve() {
    let c = ctx();
    let prev = json!({"v": 7});
    let resume = json!("yes");
    let this = json!({"id": 9});
    let out_v = json!(42);
    let extra = [("output", &out_v)];
    let s = Scope::new(&prev).with_context(&c).with_resume_input(&resume).with_this(&this).with_extra(&extra);
    assert_eq!(
        render(
            "{{ previous_step.v }}|{{ context.count }}|{{ initial_prompt }}|{{ resume_input }}|{{ this.id }}|{{ output }}|{{ context.run_id }}",
            &s
        ),
        "7|3|hello world|yes|9|42|run-1"
    );
    assert_eq!(render("{{ steps.fetch.title }}/{{ context.steps.fetch.n }}", &s), "T/5");
    assert_eq!(render("{{ context.items[0] }}{{ context.items[-1] }}", &s), "13");
    assert_eq!(eval("context.items == [1, 2, 3]", &s), json!(true));
    assert_eq!(eval("3 in context.items", &s), json!(true));
    assert_eq!(eval("'name' in context.user", &s), json!(true));
    assert_eq!(render("{% for k, v in context.user.items() %}{{ k }};{% endfor %}", &s), "name;tags;z;a;");
    assert_eq!(render("{% for x in steps.fetch.list %}{{ x.k }}{% endfor %}", &s), "12");
    // extra names shadow built-in ones
    let shadow = json!("shadowed");
    let extra = [("previous_step", &shadow)];
    assert_eq!(render("{{ previous_step }}", &Scope::new(&prev).with_extra(&extra)), "shadowed");
}

#[test]
fn steps_name_output_means_steps_name() {
    let c = ctx();
    let prev = Value::Null;
    let s = Scope::new(&prev).with_context(&c);
    assert_eq!(render("{{ steps.a.output }}", &s), "x");
    assert_eq!(render("{{ steps.a }}", &s), "x");
    assert_eq!(render("{{ steps.fetch.output.title }}", &s), "T");
    assert_eq!(render("{{ steps['fetch'].output.n }}", &s), "5");
    assert_eq!(render("{{ context.steps.a.output }}", &s), "x");
    assert_eq!(eval("steps.a.output == steps.a", &s), json!(true));
    assert_eq!(value("{{ steps.fetch.output }}", &s), json!({"title": "T", "n": 5, "list": [{"k": 1}, {"k": 2}]}));
    // only code is rewritten, never text or strings
    assert_eq!(render("steps.a.output={{ 'steps.a.output' }}", &s), "steps.a.output=steps.a.output");
}

#[test]
fn flujo_if_and_each_helpers() {
    let c = ctx();
    let prev = json!({"ok": true, "groups": [{"name": "g1", "xs": [1, 2]}, {"name": "g2", "xs": []}]});
    let s = Scope::new(&prev).with_context(&c);
    assert_eq!(render("{{#if previous_step.ok}}yes{{else}}no{{/if}}", &s), "yes");
    assert_eq!(render("{{#if previous_step.missing}}yes{{else}}no{{/if}}", &s), "no");
    assert_eq!(render("{{#unless previous_step.ok}}a{{else}}b{{/unless}}", &s), "b");
    assert_eq!(render("{{#each context.items}}[{{this}}]{{/each}}", &s), "[1][2][3]");
    assert_eq!(render("{{#each context.empty}}x{{else}}empty{{/each}}", &s), "empty");
    assert_eq!(
        render(
            "{{#each previous_step.groups}}{{this.name}}:{{#each this.xs}}{{#if this > 1}}big{{else}}{{this}}{{/if}},{{else}}-{{/each}};{{/each}}",
            &s
        ),
        "g1:1,big,;g2:-;"
    );
    // helpers mix with Jinja tags and whitespace control
    assert_eq!(render("{%- if true -%}  {{#each context.items}}{{ loop.index }}{{/each}}{% endif %}", &s), "123");
    assert!(matches!(compile_template("{{#with x}}{{/with}}"), Err(TemplateError::Syntax { .. })));
}

#[test]
fn lenient_and_strict_undefined() {
    let c = ctx();
    let prev = json!(1);
    let s = Scope::new(&prev).with_context(&c);
    assert_eq!(render("[{{ missing }}]", &s), "[]");
    assert_eq!(render("[{{ context.missing.deeper.still }}]", &s), "[]");
    assert_eq!(render("[{{ resume_input }}{{ this }}]", &s), "[]");
    assert_eq!(eval("missing", &s), Value::Null);
    assert_eq!(value("{{ context.missing }}", &s), Value::Null);
    let lenient_false = compile_expression("context.missing").and_then(|e| e.eval_bool(&s, UndefinedMode::Lenient));
    assert_eq!(lenient_false, Ok(false));

    let err = render_strict("[{{ missing }}]", &s);
    assert!(matches!(&err, Err(TemplateError::Undefined { message }) if message.contains("missing")), "{err:?}");
    assert!(matches!(render_strict("{{ context.missing }}", &s), Err(TemplateError::Undefined { .. })));
    assert!(matches!(render_strict("{{ this }}", &s), Err(TemplateError::Undefined { .. })));
    let strict_eval = compile_expression("nope").and_then(|e| e.eval(&s, UndefinedMode::Strict));
    assert!(matches!(strict_eval, Err(TemplateError::Undefined { .. })));
    let strict_bool = compile_expression("context.nope").and_then(|e| e.eval_bool(&s, UndefinedMode::Strict));
    assert!(matches!(strict_bool, Err(TemplateError::Undefined { .. })));
    let strict_value = compile_template("{{ nope }}").and_then(|t| t.render_value(&s, UndefinedMode::Strict));
    assert!(matches!(strict_value, Err(TemplateError::Undefined { .. })));
    // defined names and definedness tests are fine in strict mode
    assert_eq!(
        render_strict("{{ context.count }}{{ nope is defined }}{{ nope | default('d') }}", &s).ok(),
        Some("3Falsed".into())
    );
    assert_eq!(render_strict("{{#each context.items}}{{ this }}{{/each}}", &s).ok(), Some("123".into()));
}

#[test]
fn render_value_preserves_types() {
    let c = ctx();
    let prev = json!({"n": 5, "f": 2.5, "list": [1, "a", null], "obj": {"k": [true]}, "big": u64::MAX});
    let s = Scope::new(&prev).with_context(&c);
    assert_eq!(value("{{ previous_step.n }}", &s), json!(5));
    assert_eq!(value("  {{ previous_step.n + 1 }}\n", &s), json!(6));
    assert_eq!(value("{{ previous_step.f }}", &s), json!(2.5));
    assert_eq!(value("{{ previous_step.big }}", &s), json!(u64::MAX));
    assert_eq!(value("{{ previous_step.list }}", &s), json!([1, "a", null]));
    assert_eq!(value("{{ previous_step.obj }}", &s), json!({"k": [true]}));
    assert_eq!(value("{{ previous_step }}", &s), prev);
    assert_eq!(value("{{ context.user }}", &s), json!({"name": "ada", "tags": ["x", "y"], "z": 1, "a": 2}));
    assert_eq!(value("{{ {'b': 1, 'a': [1.5, none]} }}", &s), json!({"b": 1, "a": [1.5, null]}));
    assert_eq!(value("{{ previous_step.n }} items", &s), json!("5 items"));
    assert_eq!(value("{{ previous_step.n > 1 }}", &s), json!(true));
    assert_eq!(value("{{ previous_step.n | tojson }}", &s), json!("5"));
    assert_eq!(value("plain text", &s), json!("plain text"));
}

#[test]
fn render_json_renders_nested_templates() {
    let c = ctx();
    let prev = json!({"n": 5, "tags": ["a", "b"]});
    let s = Scope::new(&prev).with_context(&c);
    let input = json!({
        "count": "{{ previous_step.n }}",
        "label": "n={{ previous_step.n }}",
        "tags": "{{ previous_step.tags }}",
        "static": "no {template} here }}",
        "nested": [{"who": "{{ context.user.name | upper }}", "num": 1, "flag": false}, "{% if true %}yes{% endif %}"],
        "{{ key }}": null
    });
    let expected = json!({
        "count": 5,
        "label": "n=5",
        "tags": ["a", "b"],
        "static": "no {template} here }}",
        "nested": [{"who": "ADA", "num": 1, "flag": false}, "yes"],
        "{{ key }}": null
    });
    assert_eq!(render_json(&input, &s, UndefinedMode::Lenient), Ok(expected.clone()));
    let compiled = compile_json(&input).unwrap_or_else(|e| panic!("{e}"));
    assert!(!compiled.is_literal());
    assert_eq!(compiled.render(&s, UndefinedMode::Lenient), Ok(expected));
    assert!(compile_json(&json!({"a": ["b", 1]})).is_ok_and(|c| c.is_literal()));
    assert!(matches!(
        render_json(&json!(["{{ x + }}"]), &s, UndefinedMode::Lenient),
        Err(TemplateError::Syntax { .. })
    ));
}

#[test]
fn expressions() {
    let c = ctx();
    let prev = json!(10);
    let s = Scope::new(&prev).with_context(&c);
    assert_eq!(eval("previous_step + 1", &s), json!(11));
    assert_eq!(eval("previous_step / 4", &s), json!(2.5));
    assert_eq!(eval("previous_step >= 10", &s), json!(true));
    assert_eq!(eval("context.count > 2 and steps.a == 'x'", &s), json!(true));
    assert_eq!(eval("context.count > 5 or steps.a.output != 'x'", &s), json!(false));
    assert_eq!(eval("{{ previous_step * 2 }}", &s), json!(20));
    assert_eq!(eval("[previous_step, 'a', none, {'k': 1.0}]", &s), json!([10, "a", null, {"k": 1.0}]));
    let Value::String(big) = eval("'x' * 1048576", &s) else { panic!("not a string") };
    assert_eq!(big.len(), 1_048_576);
    let word = json!("  abc  ");
    let s = Scope::new(&word);
    assert_eq!(eval("previous_step.strip().startswith('a')", &s), json!(true));
    assert_eq!(eval("previous_step.startswith('a')", &s), json!(false));
    assert_eq!(eval("previous_step.strip().endswith('c')", &s), json!(true));
    assert_eq!(eval("previous_step.upper().strip()", &s), json!("ABC"));
    assert_eq!(eval("'ABC'.lower()", &s), json!("abc"));
    let truthy = |src: &str| compile_expression(src).and_then(|e| e.eval_bool(&s, UndefinedMode::Lenient));
    assert_eq!(truthy("previous_step"), Ok(true));
    assert_eq!(truthy("''"), Ok(false));
    assert_eq!(truthy("[]"), Ok(false));
    assert_eq!(truthy("0"), Ok(false));
    assert_eq!(truthy("none"), Ok(false));
    assert!(matches!(compile_expression("previous_step +"), Err(TemplateError::Syntax { .. })));
    assert!(matches!(
        compile_expression("previous_step + 'a'").and_then(|e| e.eval(&s, UndefinedMode::Lenient)),
        Ok(Value::String(_)) | Err(TemplateError::Render { .. })
    ));
}

#[test]
fn include_import_and_extends_are_refused() {
    for src in [
        "{% include 'secret.txt' %}",
        "a\n{%- include '/etc/passwd' -%}",
        "{% import 'macros.j2' as m %}",
        "{% from 'macros.j2' import m %}",
        "{% extends 'base.j2' %}",
    ] {
        let err = compile_template(src).err();
        assert!(
            matches!(&err, Some(TemplateError::Syntax { message, .. }) if message.contains("no file access")),
            "{src}: {err:?}"
        );
    }
    assert_eq!(compile_template("x\n{% include 'a' %}").err().and_then(|e| e.line()), Some(2));
}

#[test]
fn output_size_is_limited() {
    let prev = Value::Null;
    let s = Scope::new(&prev);
    let looped = compile_template("{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}");
    assert_eq!(
        looped.and_then(|t| t.render(&s, UndefinedMode::Lenient)),
        Err(TemplateError::OutputTooLarge { limit: MAX_OUTPUT_BYTES })
    );
    let single = compile_template("{{ 'x' * 2000000 }}").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        single.render(&s, UndefinedMode::Lenient),
        Err(TemplateError::OutputTooLarge { limit: MAX_OUTPUT_BYTES })
    );
    assert_eq!(
        single.render(&s, UndefinedMode::Strict),
        Err(TemplateError::OutputTooLarge { limit: MAX_OUTPUT_BYTES })
    );
    // exactly at the limit is fine
    let at_limit = compile_template("{{ 'x' * 1048576 }}").and_then(|t| t.render(&s, UndefinedMode::Lenient));
    assert_eq!(at_limit.map(|o| o.len()), Ok(MAX_OUTPUT_BYTES));
    let limited = compile_template("ab{{ 'c' }}").and_then(|t| t.render_limited(&s, UndefinedMode::Lenient, 2));
    assert_eq!(limited, Err(TemplateError::OutputTooLarge { limit: 2 }));
}

#[test]
fn runaway_loops_run_out_of_fuel() {
    let prev = Value::Null;
    let s = Scope::new(&prev);
    let t = compile_template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
    let err = t.and_then(|t| t.render(&s, UndefinedMode::Lenient));
    assert!(matches!(&err, Err(TemplateError::Render { message }) if message.contains("fuel")), "{err:?}");
    let t = compile_template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(matches!(t.and_then(|t| t.render(&s, UndefinedMode::Lenient)), Err(TemplateError::Render { .. })));
}

#[test]
fn large_unreferenced_context_field_is_not_touched() {
    let mut user = Map::new();
    user.insert("big".into(), json!({"blob": "y".repeat(1 << 20), "title": "Big"}));
    user.insert("small".into(), json!(2));
    let c = Context::new("r", json!("p"), user).snapshot();
    let prev = json!(1);
    let s = Scope::new(&prev).with_context(&c);
    assert_eq!(render("{{ context.small + previous_step }}", &s), "3");
    assert_eq!(eval("context.small * 2", &s), json!(4));
    // a single key of the big field is read without copying the rest
    assert_eq!(render("{{ context.big.title }}", &s), "Big");
    assert_eq!(eval("context.big.blob | length", &s), json!(1 << 20));
    // the big field stays shared with the context, untouched
    assert_eq!(c.field("big").and_then(|v| v["blob"].as_str().map(str::len)), Some(1 << 20));
}

#[test]
fn syntax_errors_report_lines() {
    let err = compile_template("line one\nline two {{ previous_step + }}\n").err();
    assert!(matches!(&err, Some(TemplateError::Syntax { line: Some(2), .. })), "{err:?}");
    let err = compile_template("a\nb\n{% if x %}never closed").err();
    assert!(matches!(&err, Some(TemplateError::Syntax { line: Some(_), .. })), "{err:?}");
    let err = compile_template("{{#if x}}\n{{/each}}").err();
    assert!(matches!(&err, Some(TemplateError::Syntax { line: Some(2), .. })), "{err:?}");
    assert!(err.is_some_and(|e| e.to_string().starts_with("template syntax error: ")));
}

#[test]
fn unknown_filters_are_listed() {
    assert_eq!(
        unknown_filters("{{ x | upper | frob }}{{ y | frob | tojson | zap(1) }}"),
        Ok(vec!["frob".into(), "zap".into()])
    );
    assert_eq!(unknown_filters("{{ x | default('a|b') | trim }}"), Ok(vec![]));
    assert_eq!(unknown_filters("no template"), Ok(vec![]));
    assert!(matches!(unknown_filters("{{ x | }}"), Err(TemplateError::Syntax { .. })));
    assert_eq!(unknown_expression_filters("x | lower | nope"), Ok(vec!["nope".into()]));
}

#[test]
fn literal_text_and_whitespace_are_kept() {
    let prev = json!("v");
    let s = Scope::new(&prev);
    let t = compile_template("no syntax here\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(t.is_literal());
    assert_eq!(t.render(&s, UndefinedMode::Lenient).ok().as_deref(), Some("no syntax here\n"));
    assert_eq!(render("a {{ previous_step }}\n", &s), "a v\n");
    assert_eq!(render(" {{ previous_step }} ", &s), " v ");
    assert_eq!(render("{# comment #}x", &s), "x");
    assert_eq!(render("{% raw %}{{ steps.a.output }}{% endraw %}", &s), "{{ steps.a.output }}");
    assert!(is_template("a {{ b }}") && is_template("{% if %}") && !is_template("a { b } }}"));
}

#[test]
fn json_conversion_is_faithful() {
    let prev =
        json!({"i": -3, "u": 18446744073709551615u64, "f": 0.1, "s": "é", "b": false, "n": null, "l": [[1], {}]});
    let s = Scope::new(&prev);
    assert_eq!(eval("previous_step", &s), prev);
    assert_eq!(eval("previous_step.i", &s), json!(-3));
    assert_eq!(eval("previous_step.u", &s), json!(u64::MAX));
    assert_eq!(eval("previous_step.f", &s), json!(0.1));
    assert_eq!(eval("previous_step.n", &s), Value::Null);
    assert_eq!(eval("previous_step.zzz", &s), Value::Null);
    assert_eq!(eval("previous_step.b", &s), json!(false));
    assert_eq!(eval("1 / 0.0 if false else 2.0 ** 70", &s), json!(2f64.powi(70)));
    // an integer JSON cannot hold exactly is an error, not a silently rounded float
    assert!(eval_err("2 ** 70", &s).contains("integer overflow"));
    assert_eq!(eval("range(3) | list", &s), json!([0, 1, 2]));
    assert_eq!(eval("{1: 'a'}", &s), json!({"1": "a"}));
}

#[test]
fn fast_lookup_paths_agree_with_the_vm() {
    let c = ctx();
    let prev =
        json!({"n": 5, "f": 1.0, "t": true, "z": null, "s": "str", "l": [1, {"k": "v"}], "o": {"a": {"b": [2]}}});
    let resume = json!({"answer": "ok"});
    let this = json!(["i0", "i1"]);
    let item = json!({"id": 3});
    let extra = [("item", &item)];
    let s = Scope::new(&prev).with_context(&c).with_resume_input(&resume).with_this(&this).with_extra(&extra);
    for path in [
        "previous_step",
        "previous_step.n",
        "previous_step.f",
        "previous_step.t",
        "previous_step.z",
        "previous_step.s",
        "previous_step.l[1].k",
        "previous_step['o']['a'].b[0]",
        "previous_step.missing",
        "previous_step.s.missing",
        "previous_step.l[9]",
        "resume_input.answer",
        "this[1]",
        "item.id",
        "initial_prompt",
        "steps.a",
        "steps.fetch.list[1].k",
        "steps.nope",
        "context.count",
        "context.user.tags[1]",
        "context.steps.fetch.title",
        "context.nope.deeper",
    ] {
        let vm = format!("({path})");
        assert_eq!(eval(path, &s), eval(&vm, &s), "{path}");
        assert_eq!(value(&format!("{{{{ {path} }}}}"), &s), eval(&vm, &s), "{path}");
        assert_eq!(render(&format!("{{{{ {path} }}}}"), &s), render(&format!("{{{{ {vm} }}}}"), &s), "{path}");
        let truthy = |src: &str| compile_expression(src).and_then(|e| e.eval_bool(&s, UndefinedMode::Lenient));
        assert_eq!(truthy(path), truthy(&vm), "{path}");
        let strict = |src: &str| compile_expression(src).and_then(|e| e.eval(&s, UndefinedMode::Strict)).is_ok();
        assert_eq!(strict(path), strict(&vm), "{path}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Regressions found by fuzzing (`fuzz/`, see fuzz/README.md); each input is the minimized crash.
// ---------------------------------------------------------------------------------------------------------

/// fuzz `expression_eval`: a `}}` outside brackets followed by anything made minijinja's expression lexer
/// panic ("empty lexer stack"). It is a syntax error now, in expressions and in single-`{{ }}` templates.
#[test]
fn fuzz_expression_stray_closing_braces_is_a_syntax_error() {
    let prev = json!(1);
    let s = Scope::new(&prev);
    for src in ["n}}\n;", "a }} b", "previous_step -}} x", "1 +}}}} 2", "(a) }}\n\n{{ b", "{{ a }} }} b }}"] {
        let err = compile_expression(src).map(|_| ());
        assert!(matches!(err, Err(TemplateError::Syntax { .. })), "{src:?}: {err:?}");
    }
    assert_eq!(compile_expression("(a) }}\n\n{{ b").err().and_then(|e| e.line()), Some(1));
    assert!(matches!(compile_expression("a\n}} b").err().and_then(|e| e.line()), Some(2)));
    // the same code reaching the expression compiler through a template
    for src in ["{{ a }} b }}", "{{ (x }} y) }}"] {
        let _ = compile_template(src).and_then(|t| t.render(&s, UndefinedMode::Lenient));
    }
    // `}}` that closes something, or inside a string, is still fine
    assert_eq!(eval("{'a': {'b': previous_step}}", &s), json!({"a": {"b": 1}}));
    assert_eq!(eval("'}} x' ~ \"}}\"", &s), json!("}} x}}"));
    assert_eq!(eval("[{'k': 2}][0]['k']", &s), json!(2));
}

/// fuzz `expression_eval`: minijinja folds constant operations while compiling, and `() * 25555555` is a lazy
/// sequence of 25 million empty copies that `~` then walked — `compile_expression` hung (no fuel is spent at
/// compile time, and repeated sequences have no size limit in minijinja 2.24). Sequence repetition whose size
/// is known from the source is now limited (see `guard.rs`).
#[test]
fn fuzz_expression_huge_constant_repetition_is_refused() {
    let prev = json!(2);
    let s = Scope::new(&prev);
    for src in ["10 ~ () * 25555555", "([1] * 10 ** 12) | join", "('a' * 9999999) ~ ('b' * 9999999)"] {
        let err = compile_expression(src).map(|_| ());
        assert!(matches!(err, Err(TemplateError::Syntax { .. })), "{src:?}: {err:?}");
        let err = compile_template(&format!("{{{{ {src} }}}}")).map(|_| ());
        assert!(matches!(err, Err(TemplateError::Syntax { .. })), "{src:?}: {err:?}");
    }
    let err = compile_template("line 1\n{% for i in () * 25555555 %}{% endfor %}").map(|_| ());
    assert!(matches!(err, Err(TemplateError::Syntax { line: Some(2), .. })), "{err:?}");
    // small repetitions, and repetitions whose size comes from the data, still work
    assert_eq!(eval("[0] * 3", &s), json!([0, 0, 0]));
    assert_eq!(eval("['a'] * previous_step", &s), json!(["a", "a"]));
    assert_eq!(render("{{ 'ab' * 2 }}|{{ previous_step * 1000000 }}", &s), "abab|2000000");
}

fn eval_err(src: &str, scope: &Scope<'_>) -> String {
    match compile_expression(src).and_then(|e| e.eval(scope, UndefinedMode::Lenient)) {
        Ok(v) => panic!("{src}: expected an error, got {:.200}", v.to_string()),
        Err(e) => e.to_string(),
    }
}

fn render_err(src: &str, scope: &Scope<'_>) -> String {
    match compile_template(src).and_then(|t| t.render(scope, UndefinedMode::Lenient)) {
        Ok(v) => panic!("{src}: expected an error, got {} bytes", v.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn arithmetic_errors_are_errors_not_null_or_inf() {
    let prev = json!(7);
    let s = Scope::new(&prev);
    for src in [
        "previous_step / 0",
        "previous_step / 0.0",
        "previous_step // 0",
        "previous_step // 0.0",
        "previous_step % 0",
        "previous_step % 0.0",
        "1 / (previous_step - 7)",
    ] {
        let e = eval_err(src, &s);
        assert!(e.contains("division by zero"), "{src}: {e}");
        let e = render_err(&format!("{{{{ {src} }}}}"), &s);
        assert!(e.contains("division by zero"), "{src}: {e}");
        let e = render_err(&format!("x{{{{ {src} }}}}"), &s);
        assert!(e.contains("division by zero"), "{src}: {e}");
        let cond = compile_expression(src).and_then(|e| e.eval_bool(&s, UndefinedMode::Lenient));
        assert!(cond.is_err(), "{src}");
    }
    for src in ["1e308 * previous_step", "previous_step ** 1000.0", "(previous_step * -1) ** 0.5", "'inf' | float"] {
        let e = eval_err(src, &s);
        assert!(e.contains("not a finite number"), "{src}: {e}");
    }
    for src in
        ["previous_step ** 100", "2 ** 64 * previous_step", "170141183460469231731687303715884105727 + previous_step"]
    {
        let e = eval_err(src, &s);
        assert!(e.contains("overflow") || e.contains("unable to calculate"), "{src}: {e}");
    }
    // exact results still work, in templates too
    assert_eq!(eval("previous_step / 2", &s), json!(3.5));
    assert_eq!(eval("previous_step // 2", &s), json!(3));
    assert_eq!(eval("previous_step % 4", &s), json!(3));
    assert_eq!(eval("2 ** 63", &s), json!(9_223_372_036_854_775_808_u64));
    assert_eq!(render("{{ 2 ** 100 }}", &s), "1267650600228229401496703205376");
}

#[test]
fn built_values_are_bounded() {
    let prev = json!("xy");
    let s = Scope::new(&prev);
    let string_bombs = [
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s=previous_step) %}{% for i in range(40) %}{% set ns.s = ns.s * 2 %}{% endfor %}",
        "{{ (previous_step * 8000000) | replace('x', previous_step * 100) }}",
        "{{ (previous_step * 8000000).replace('x', previous_step * 100) }}",
        "{{ previous_step | indent(100000000) | length }}",
        "{{ ([previous_step * 8000000] * 3) | join }}",
        "{{ (previous_step * 8000000).join([1, 2, 3]) | length }}",
        "{{ ([previous_step * 8000000] * 3) | string | length }}",
        "{{ ([previous_step * 8000000] * 3) | pprint | length }}",
        "{{ '%999999999d' | format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{% set x %}{% for i in range(100000) %}{{ previous_step * 1000 }}{% endfor %}{% endset %}{{ x | length }}",
        "{{ ([previous_step * 8000000] * 3) | upper | length }}",
    ];
    for src in string_bombs {
        let e = render_err(src, &s);
        assert!(e.contains("value too large"), "{src}: {e}");
    }
    let list_bombs = [
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l * 2 %}{% endfor %}{{ ns.l|length }}",
        "{{ ([1] | default([])) * 4 * 1048577 * 1048577 * 1048577 * 77 }}",
        "{{ ([1] | list) * 9223372036854775807 }}",
        "{{ [1] | slice(1000000000000) }}",
        "{{ [1] | batch(1000000000000) }}",
        "{{ (previous_step * 8000000) | list | length }}",
    ];
    for src in list_bombs {
        let e = render_err(src, &s);
        assert!(e.contains("value too large"), "{src}: {e}");
    }
    // many mid-sized values add up to the per-render budget
    let e = render_err(
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [(previous_step * 4000000) ~ i] %}{% endfor %}",
        &s,
    );
    assert!(e.contains("value too large"), "{e}");
    // expressions: the repetition through a filter the fuzzer found, and a result too large to convert
    let e = eval_err("([1] | default([])) * 4 * 1048577 * 1048577 * 1048577 * 77", &s);
    assert!(e.contains("value too large"), "{e}");
    let e = eval_err("[previous_step * 8000000] * 100", &s);
    assert!(e.contains("value too large"), "{e}");
    // work inside single instructions (comparing, searching, sorting lazily repeated sequences) is bounded
    for src in [
        "{% set n = (previous_step | length) * 500000 %}{% set a = [[1] * n] * n %}{% set b = [[1] * n] * n %}{{ a == b }}",
        "{% set n = (previous_step | length) * 500000 %}{% set big = [range(100000)] * n %}{{ (range(99999) | list) in big }}",
    ] {
        let e = render_err(src, &s);
        assert!(e.contains("iterated over more than"), "{src}: {e}");
    }
    // an empty sequence repeated a huge number of times is empty at once (walking the copies yielded nothing)
    assert_eq!(eval("(previous_step | list | reject | list) * 1000000000000000000", &s), json!([]));
    // constant comparisons of sequences are not folded while compiling (that was unbounded work outside any
    // budget); they run, bounded, when evaluated (found by the `expression_eval` fuzz target)
    let e = eval_err("[[1] * 100000] * 100000 == [[1] * 100000] * 100000", &s);
    assert!(e.contains("iterated over more than"), "{e}");
    let e = eval_err("[[10 ] * 11010 ] * 11054", &s);
    assert!(e.contains("value too large"), "{e}");
    // ordinary work is unaffected, and each render has its own budget
    for _ in 0..3 {
        assert_eq!(render("{{ (previous_step * 4000000) | length }}", &s), "8000000");
    }
    assert_eq!(eval("([1, 2] * 3) | length", &s), json!(6));
    assert_eq!(render("{{ ['a', 'b'] | join('-') }}{{ '-'.join(['c', 'd']) }}", &s), "a-bc-d");
    assert_eq!(render("{{ 'abc'.replace('b', 'xx') }}{{ 'abc' | replace('', '.') }}", &s), "axxc.a.b.c.");
}

/// Constant folding runs while compiling, outside any render's budget, and a folded value lives as long as the
/// compiled form (the caches hold thousands): only small values are folded (found by the `expression_eval`
/// fuzz target, whose memory grew by a gigabyte of folded strings). Large constants are built when evaluated,
/// within the render's budget.
#[test]
fn large_constants_are_not_folded() {
    let prev = json!(null);
    let s = Scope::new(&prev);
    // 20 strings of 16 MB: each under the string limit, together over the 256 MiB budget
    let strings = vec!["'x' * 16000000"; 20].join(", ");
    let e = eval_err(&format!("[{strings}] | length"), &s);
    assert!(e.contains("value too large"), "{e}");
    let e = render_err(&format!("{{{{ [{strings}] | length }}}}"), &s);
    assert!(e.contains("value too large"), "{e}");
    // small constants are folded as before and large ones still evaluate when they fit
    assert_eq!(eval("('ab' * 3) ~ 'c'", &s), json!("abababc"));
    assert_eq!(eval("('x' * 100000) | length", &s), json!(100000));
    assert_eq!(eval("[1, 2] + [3] == [1, 2, 3]", &s), json!(true));
}

/// Converting a result to JSON counts what the JSON values really cost: `[[1] * 10**6] * 4` is 4 million
/// values (more than the byte budget once converted), though small while lazy.
#[test]
fn json_conversion_counts_real_sizes() {
    let prev = json!(1000000);
    let s = Scope::new(&prev);
    let e = eval_err("[[1] * previous_step] * 4", &s);
    assert!(e.contains("value too large"), "{e}");
    assert_eq!(eval("([[1] * previous_step] * 4) | length", &s), json!(4));
    assert_eq!(eval("([[1] * 1000] * 1000) | length", &s), json!(1000));
}

/// A namespace that holds itself (directly, through a list, or through another namespace) is a reference
/// cycle; the end of each render breaks it, so rendering such a template leaks nothing (found by the
/// `template_render` fuzz target: `{% set ns.l = ns %}` leaked the namespace on every render).
#[test]
fn namespace_cycles_do_not_leak() {
    let prev = json!(null);
    let s = Scope::new(&prev);
    let before = minijinja::limits::live_namespaces();
    for src in [
        "{% set ns = namespace(l=[1]) %}{% set ns.l = ns %}{{ ns.l.l.l is defined }}",
        "{% set ns = namespace() %}{% set ns.l = [ns, [ns]] %}{{ ns.l | length }}",
        "{% set a = namespace() %}{% set b = namespace(a=a) %}{% set a.b = b %}{{ a.b.a.b is defined }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(80) %}{% set ns.l = ns %}{% endfor %}x",
    ] {
        for _ in 0..3 {
            let _ = render(src, &s);
        }
        assert_eq!(minijinja::limits::live_namespaces(), before, "{src}");
    }
    // expressions too
    let _ = eval("namespace(a=1).a", &s);
    assert_eq!(minijinja::limits::live_namespaces(), before);
    // and a namespace still works within its render
    assert_eq!(
        render(
            "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
            &s
        ),
        "3"
    );
}
