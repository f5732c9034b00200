//! Template source → compile, render in both undefined modes over a small fixed scope (and as a value); the
//! input parsed as JSON (when it is JSON) → `render_json` / `compile_json`, templates in its strings.
//!
//! Every render may burn up to `MAX_FUEL` instructions (about 0.3 s in a release build, several seconds under
//! the fuzzer's instrumentation), so the target keeps the number of renders per input small: a JSON document
//! with more than `MAX_JSON_TEMPLATES` template strings is not rendered.
#![no_main]

use std::sync::{Arc, LazyLock};

use flujo_core::context::{Context, ContextSnapshot};
use flujo_template::{compile_json, compile_template, is_template, render_json, Scope, UndefinedMode};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const MAX_JSON_TEMPLATES: usize = 2;

static CTX: LazyLock<ContextSnapshot> = LazyLock::new(|| {
    let mut fields = Map::new();
    fields.insert("count".into(), json!(3));
    fields.insert("user".into(), json!({"name": "ada", "tags": ["x", "y"]}));
    let mut c = Context::new("fuzz-run", json!("hello"), fields);
    c.set_step_output("fetch", Arc::new(json!({"title": "T", "n": 5, "list": [{"k": 1}, {"k": 2}]})));
    c.snapshot()
});
static PREV: LazyLock<Value> = LazyLock::new(|| json!({"n": 7, "s": "text", "items": [1, 2, 3]}));
static THIS: LazyLock<Value> = LazyLock::new(|| json!({"k": "v", "i": 2}));

fn templates_in(v: &Value) -> usize {
    match v {
        Value::String(s) => usize::from(is_template(s)),
        Value::Array(items) => items.iter().map(templates_in).sum(),
        Value::Object(map) => map.values().map(templates_in).sum(),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let scope = Scope::new(&PREV).with_context(&CTX).with_this(&THIS);
    if let Ok(t) = compile_template(src) {
        let _ = t.render(&scope, UndefinedMode::Lenient);
        let _ = t.render(&scope, UndefinedMode::Strict);
        let _ = t.render_value(&scope, UndefinedMode::Lenient);
    }
    if let Ok(doc) = serde_json::from_str::<Value>(src) {
        if templates_in(&doc) <= MAX_JSON_TEMPLATES {
            let _ = render_json(&doc, &scope, UndefinedMode::Strict);
            if let Ok(c) = compile_json(&doc) {
                let _ = c.render(&scope, UndefinedMode::Lenient);
            }
        }
    }
});
