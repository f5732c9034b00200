//! What `flujo lens show` says about each model call: the usage of a record (prompt, completion, and the
//! cached, cache-write and reasoning parts), its cost, and the facts the agent journals in its metadata —
//! the model that answered (`model`, `provider:model`: with a fallback chain it may not be the declared one),
//! the provider's name for it (`response_model`), the provider's request id (`request_id`) and why the
//! answer ended (`finish_reason`). Agentic loops journal each `model_turn` with the same keys.

use flujo_core::{JournalRecord, TokenUsage};
use serde_json::{json, Map, Value};

/// The metadata keys of a model call, in display order.
pub(super) const MODEL_CALL_KEYS: [&str; 4] = ["model", "response_model", "finish_reason", "request_id"];

/// A record's tokens as JSON: `prompt` and `completion`, and `cached`, `cache_write`, `reasoning` when not
/// zero (as `step_history[].tokens` of `flujo run --json`).
pub(super) fn tokens_json(tokens: &TokenUsage) -> Value {
    serde_json::to_value(tokens).unwrap_or_else(|_| json!({"prompt": tokens.prompt, "completion": tokens.completion}))
}

/// The model-call facts a record's metadata holds (string values only), by key.
pub(super) fn model_call_fields(r: &JournalRecord) -> Map<String, Value> {
    MODEL_CALL_KEYS
        .iter()
        .filter_map(|k| r.metadata.get(*k).and_then(Value::as_str).map(|v| ((*k).to_owned(), json!(v))))
        .collect()
}

/// Whether a record is a model call: it names a model, a request id or a finish reason, or it is an agentic
/// loop's `model_turn`.
pub(super) fn is_model_call(r: &JournalRecord) -> bool {
    r.kind == "model_turn" || !model_call_fields(r).is_empty()
}

/// One line about a model call: `openai:gpt-4o (answered as gpt-4o-2024-08-06)  tokens prompt 1200 · completion
/// 300 · cached 1000 · cache write 0 · reasoning 200  cost $0.004100  finish stop  request req_1`.
pub(super) fn model_call_line(
    r: &JournalRecord,
    cell: impl Fn(&str) -> String,
    cost: impl Fn(f64) -> String,
) -> String {
    let fields = model_call_fields(r);
    let field = |k: &str| fields.get(k).and_then(Value::as_str).map(&cell);
    let t = &r.tokens;
    let mut line = field("model").unwrap_or_else(|| "model not recorded".to_owned());
    if let Some(answered) = field("response_model") {
        line.push_str(&format!(" (answered as {answered})"));
    }
    line.push_str(&format!(
        "  tokens prompt {} · completion {} · cached {} · cache write {} · reasoning {}  cost {}",
        t.prompt,
        t.completion,
        t.cached,
        t.cache_write,
        t.reasoning,
        cost(r.cost_usd)
    ));
    if let Some(finish) = field("finish_reason") {
        line.push_str(&format!("  finish {finish}"));
    }
    if let Some(id) = field("request_id") {
        line.push_str(&format!("  request {id}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::StepStatus;
    use std::sync::Arc;

    fn record(metadata: Value, tokens: TokenUsage) -> JournalRecord {
        JournalRecord {
            run_id: "r".into(),
            seq: 0,
            generation: 0,
            path: "0".into(),
            step: "draft".into(),
            kind: "step".into(),
            status: StepStatus::Completed,
            output: Arc::new(Value::Null),
            feedback: None,
            patch: Vec::new(),
            attempts: 1,
            tokens,
            cost_usd: 0.0041,
            started_at_ms: 0,
            latency_ms: 1.0,
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            prev_hash: String::new(),
            hash: String::new(),
            hash_scheme: flujo_core::HashScheme::CURRENT,
        }
    }

    #[test]
    fn a_model_call_line_names_everything_recorded() {
        let r = record(
            json!({"model": "openai:gpt-4o", "response_model": "gpt-4o-2024-08-06", "finish_reason": "stop",
                   "request_id": "req_1", "other": 1}),
            TokenUsage::new(1200, 300).with_cache(1000, 0).with_reasoning(200),
        );
        assert!(is_model_call(&r));
        let line = model_call_line(&r, str::to_owned, |c| format!("${c:.6}"));
        assert_eq!(
            line,
            "openai:gpt-4o (answered as gpt-4o-2024-08-06)  tokens prompt 1200 · completion 300 · cached 1000 · \
             cache write 0 · reasoning 200  cost $0.004100  finish stop  request req_1"
        );
        assert_eq!(model_call_fields(&r).len(), 4);
        assert_eq!(
            tokens_json(&r.tokens),
            json!({"prompt": 1200, "completion": 300, "cached": 1000, "reasoning": 200})
        );
    }

    #[test]
    fn other_records_are_not_model_calls() {
        let r = record(json!({"iterations": 3, "model": 7}), TokenUsage::new(10, 5).with_reasoning(2));
        assert!(!is_model_call(&r), "a composite's added-up usage is not a call");
        assert_eq!(tokens_json(&r.tokens), json!({"prompt": 10, "completion": 5, "reasoning": 2}));
        let mut turn = record(json!({}), TokenUsage::default());
        turn.kind = "model_turn".into();
        assert!(is_model_call(&turn));
        assert!(model_call_line(&turn, str::to_owned, |c| c.to_string()).starts_with("model not recorded"));
    }
}
