//! The stable rule ids of blueprint diagnostics, with their default severity and a one-line description.
//!
//! Rule ids are a public contract: scripts filter on them, SARIF viewers group by them and `RULES.md`
//! documents them. Never rename one; retire it instead.

use crate::diagnostic::Severity;

pub const YAML_PARSE: &str = "YAML-PARSE";
pub const BP_IO: &str = "BP-IO";
pub const BP_LIMIT: &str = "BP-LIMIT";
pub const BP_TYPE: &str = "BP-TYPE";
pub const BP_UNKNOWN_KIND: &str = "BP-UNKNOWN-KIND";
pub const BP_UNKNOWN_FIELD: &str = "BP-UNKNOWN-FIELD";
pub const BP_MISSING_FIELD: &str = "BP-MISSING-FIELD";
pub const BP_DUP_KEY: &str = "BP-DUP-KEY";
pub const BP_DUP_NAME: &str = "BP-DUP-NAME";
pub const BP_SKILL_MISSING: &str = "BP-SKILL-MISSING";
pub const BP_SKILL_PARAMS: &str = "BP-SKILL-PARAMS";
pub const BP_AGENT_MISSING: &str = "BP-AGENT-MISSING";
pub const BP_IMPORT_MISSING: &str = "BP-IMPORT-MISSING";
pub const BP_IMPORT_CYCLE: &str = "BP-IMPORT-CYCLE";
pub const BP_FALLBACK_MISSING: &str = "BP-FALLBACK-MISSING";
pub const BP_FALLBACK_CYCLE: &str = "BP-FALLBACK-CYCLE";
pub const BP_PROMPT_FILE: &str = "BP-PROMPT-FILE";
pub const BP_NAME: &str = "BP-NAME";
pub const BP_RANGE: &str = "BP-RANGE";
pub const BP_FIELD_TYPO: &str = "BP-FIELD-TYPO";
pub const BP_VERSION: &str = "BP-VERSION";
pub const BP_MODEL: &str = "BP-MODEL";
pub const BP_IMPORT_OUTSIDE: &str = "BP-IMPORT-OUTSIDE";
pub const TEMPLATE: &str = "TEMPLATE";
pub const V_T1: &str = "V-T1";
pub const V_T3: &str = "V-T3";
pub const V_T4: &str = "V-T4";
pub const V_T5: &str = "V-T5";
pub const V_CF1: &str = "V-CF1";
pub const V_CTX1: &str = "V-CTX1";
pub const V_CTX2: &str = "V-CTX2";
pub const CTX_OUTPUT_KEYS: &str = "CTX-OUTPUT-KEYS";
pub const CTX_READONLY: &str = "CTX-READONLY";
pub const LOOP_NO_EXIT: &str = "LOOP-NO-EXIT";
pub const HITL_NESTED_001: &str = "HITL-NESTED-001";
pub const SM_UNKNOWN_STATE: &str = "SM-UNKNOWN-STATE";
pub const SM_UNREACHABLE: &str = "SM-UNREACHABLE";
pub const SM_NO_END: &str = "SM-NO-END";
pub const PAR_CONFLICT_RISK: &str = "PAR-CONFLICT-RISK";

/// Every rule id with a one-line description (the same table as `RULES.md`).
pub const RULES: &[(&str, &str)] = &[
    (YAML_PARSE, "The file is not valid YAML (or not UTF-8, or not a single document)."),
    (BP_IO, "The blueprint file cannot be read."),
    (BP_LIMIT, "The blueprint exceeds a hard limit: 4 MiB, YAML nesting, step nesting (64), 100k steps, import depth, alias expansion."),
    (BP_TYPE, "A field has the wrong type or an invalid value."),
    (BP_UNKNOWN_KIND, "A step's `kind` is not a known step kind."),
    (BP_UNKNOWN_FIELD, "A key is not a field Flujo knows at this place, nor a near miss of one; it is ignored (warning)."),
    (BP_MISSING_FIELD, "A required field is missing."),
    (BP_DUP_KEY, "A mapping repeats a key."),
    (BP_DUP_NAME, "Two sibling steps have the same name."),
    (BP_SKILL_MISSING, "A skill id is neither registered nor declared in skills.yaml (Python import paths included)."),
    (BP_SKILL_PARAMS, "A registered skill rejects the step's params."),
    (BP_AGENT_MISSING, "`uses: agents.NAME` names an agent that is not declared under `agents:`."),
    (BP_IMPORT_MISSING, "`uses: imports.NAME` names an undeclared import, or an import's file cannot be read."),
    (BP_IMPORT_CYCLE, "Blueprints import each other in a cycle."),
    (BP_FALLBACK_MISSING, "A fallback names a sibling step that does not exist."),
    (BP_FALLBACK_CYCLE, "Sibling fallbacks refer to each other in a cycle."),
    (BP_PROMPT_FILE, "An agent's `system_prompt.from_file` cannot be read, or lies outside the blueprint's folder."),
    (BP_NAME, "A step, branch or state name is empty, too long (256), has `/`, `:`, control characters or edge whitespace."),
    (BP_RANGE, "A number is out of its range: timeouts and TTLs (0 < s <= 7 days), max_retries (<= 100), model settings."),
    (BP_FIELD_TYPO, "An unknown key is a near miss of a real field (e.g. `agnt` for `agent`); it would be ignored."),
    (BP_VERSION, "The blueprint's `version` is not one this Flujo reads (\"0.1\")."),
    (BP_MODEL, "An agent's `model` is not `provider:model` with a known provider."),
    (BP_IMPORT_OUTSIDE, "An import lies outside the blueprint's folder (lift with --allow-imports-outside or [imports])."),
    (TEMPLATE, "A template or expression does not parse."),
    (V_T1, "A template uses `previous_step.output`, a Python-era habit: `previous_step` is already the output (warning)."),
    (V_T3, "A template or expression uses an unknown filter."),
    (V_T4, "A step's input reads `steps.NAME` where no step NAME is declared before it (warning; the original's rule)."),
    (V_CF1, "A loop declares max_loops of 1,000 or more (warning; the original's rule, an error there)."),
    (V_T5, "A step's input reads `previous_step.FIELD` that the previous agent's output_schema does not have (warning; the original's rule)."),
    (V_CTX1, "An `input_keys` entry's root is never produced upstream (output_keys, sink_to, context_schema, …)."),
    (V_CTX2, "Only the root of an `input_keys` entry is known to be produced upstream (warning)."),
    (CTX_OUTPUT_KEYS, "`updates_context: true` without `output_keys` or `sink_to` merges the whole output (warning)."),
    (CTX_READONLY, "A step writes a framework field of the context (run_id, initial_prompt, steps, hitl_history, status)."),
    (LOOP_NO_EXIT, "A loop's exit_expression reads nothing the loop can change and is not true (warning)."),
    (HITL_NESTED_001, "A hitl step is nested where a pause cannot be resumed safely (no such construct exists today)."),
    (SM_UNKNOWN_STATE, "A state machine names a state that is neither declared nor an end state."),
    (SM_UNREACHABLE, "A state cannot be reached from start_state, or an undeclared end state from anywhere (warning)."),
    (SM_NO_END, "No end state can be reached from start_state."),
    (PAR_CONFLICT_RISK, "Two branches of a context_update parallel write the same context key (warning)."),
];

/// The severity a rule's diagnostics have (before `strict` turns warnings into errors).
pub fn default_severity(rule: &str) -> Severity {
    match rule {
        BP_UNKNOWN_FIELD | V_T1 | V_T4 | V_T5 | V_CF1 | V_CTX2 | CTX_OUTPUT_KEYS | LOOP_NO_EXIT | SM_UNREACHABLE
        | PAR_CONFLICT_RISK => Severity::Warning,
        _ => Severity::Error,
    }
}

/// The description of a rule id, if it is one.
pub fn describe(rule: &str) -> Option<&'static str> {
    RULES.iter().find(|(id, _)| *id == rule).map(|(_, d)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_and_documented() {
        let mut ids: Vec<&str> = RULES.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
        let doc = include_str!("../RULES.md");
        for (id, _) in RULES {
            assert!(doc.contains(&format!("`{id}`")), "{id} missing from RULES.md");
        }
    }
}
