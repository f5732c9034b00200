//! Blueprint text → load + validate (decode, check, lower against the built-in skills), then every renderer.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use flujo_blueprint::{load_str, render_json, render_sarif, render_text, validate_str, LoadOptions};
use flujo_skills::BuiltinRegistry;
use libfuzzer_sys::fuzz_target;

static REGISTRY: LazyLock<BuiltinRegistry> = LazyLock::new(BuiltinRegistry::new);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = Path::new("fuzz.yaml");
    let opts = LoadOptions { registry: Some(&*REGISTRY), ..Default::default() };
    let diags = match load_str(text, file, &opts) {
        Ok(loaded) => loaded.diagnostics,
        Err(failure) => failure.diagnostics,
    };
    let _ = render_text(&diags);
    let strict = LoadOptions { strict: true, ..opts };
    let all = validate_str(text, file, &strict);
    let _ = render_text(&all);
    let _ = render_json(&all).to_string();
    let _ = render_sarif(&all).to_string();
});
