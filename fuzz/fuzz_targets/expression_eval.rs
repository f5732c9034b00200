//! Expression source → compile, evaluate (value and truthiness) in both undefined modes.
#![no_main]

use std::sync::{Arc, LazyLock};

use flujo_core::context::{Context, ContextSnapshot};
use flujo_template::{compile_expression, unknown_expression_filters, Scope, UndefinedMode};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

static CTX: LazyLock<ContextSnapshot> = LazyLock::new(|| {
    let mut fields = Map::new();
    fields.insert("count".into(), json!(3));
    fields.insert("done".into(), json!(false));
    fields.insert("user".into(), json!({"name": "ada", "tags": ["x", "y"]}));
    let mut c = Context::new("fuzz-run", json!("hello"), fields);
    c.set_step_output("fetch", Arc::new(json!({"title": "T", "n": 5})));
    c.snapshot()
});
static PREV: LazyLock<Value> = LazyLock::new(|| json!(10));
static THIS: LazyLock<Value> = LazyLock::new(|| json!({"k": "v", "i": 2}));
static ANSWER: LazyLock<Value> = LazyLock::new(|| json!({"approved": true}));

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let scope = Scope::new(&PREV).with_context(&CTX).with_this(&THIS).with_resume_input(&ANSWER);
    if let Ok(e) = compile_expression(src) {
        for mode in [UndefinedMode::Lenient, UndefinedMode::Strict] {
            let _ = e.eval(&scope, mode);
            let _ = e.eval_bool(&scope, mode);
        }
        let _ = unknown_expression_filters(src);
    }
});
