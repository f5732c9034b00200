//! What `flujo resume --input-json` does with untrusted text: the input is `SCHEMA\nANSWER`; both halves are
//! parsed with serde_json (as the CLI parses `--input-json`/`--context`), the schema is compiled with
//! `jsonschema::validator_for` and the answer validated with `iter_errors`, errors formatted as the engine does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (schema, answer) = text.split_once('\n').unwrap_or((text, "null"));
    let Ok(schema) = serde_json::from_str::<Value>(schema) else { return };
    let Ok(answer) = serde_json::from_str::<Value>(answer) else { return };
    let Ok(validator) = jsonschema::validator_for(&schema) else { return };
    let errors: Vec<String> =
        validator.iter_errors(&answer).map(|e| format!("{e} (at '{}')", e.instance_path)).collect();
    assert_eq!(errors.is_empty(), validator.is_valid(&answer), "iter_errors and is_valid disagree");
});
