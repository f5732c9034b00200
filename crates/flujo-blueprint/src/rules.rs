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
pub const BP_MEMORY_STEP: &str = "BP-MEMORY-STEP";
pub const BP_MCP_SERVER: &str = "BP-MCP-SERVER";
pub const BP_MCP_TOOL: &str = "BP-MCP-TOOL";
pub const BP_MCP_UNREACHABLE: &str = "BP-MCP-UNREACHABLE";
pub const TEMPLATE: &str = "TEMPLATE";
pub const V_T1: &str = "V-T1";
pub const V_T3: &str = "V-T3";
pub const V_T4: &str = "V-T4";
pub const V_T5: &str = "V-T5";
pub const V_CF1: &str = "V-CF1";
pub const V_A5: &str = "V-A5";
pub const V_P1_W: &str = "V-P1-W";
pub const V_P3: &str = "V-P3";
pub const V_S1: &str = "V-S1";
pub const V_S2: &str = "V-S2";
pub const V_S3: &str = "V-S3";
pub const V_C1: &str = "V-C1";
pub const V_C3: &str = "V-C3";
pub const V_T2: &str = "V-T2";
pub const CTX_UNDECLARED_READ: &str = "CTX-UNDECLARED-READ";
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
    (BP_MEMORY_STEP, "`memory.index` names a step the pipeline does not have (at any depth)."),
    (BP_MCP_SERVER, "`mcp.NAME.TOOL` names an MCP server that is not declared, or an `mcp_servers:` entry cannot work."),
    (BP_MCP_TOOL, "The MCP server answered `flujo validate` and has no tool of that name."),
    (BP_MCP_UNREACHABLE, "`flujo validate` could not reach an MCP server, so its tool names were not checked (warning)."),
    (TEMPLATE, "A template or expression does not parse."),
    (V_T1, "A template uses `previous_step.output`, a Python-era habit: `previous_step` is already the output (warning)."),
    (V_T3, "A template or expression uses an unknown filter."),
    (V_T4, "A step's input reads `steps.NAME` where no step NAME is declared before it (warning; the original's rule)."),
    (V_CF1, "A loop declares max_loops of 1,000 or more (warning; the original's rule, an error there)."),
    (V_T5, "A step's input reads `previous_step.FIELD` that the previous agent's output_schema does not have (warning; the original's rule)."),
    (V_A5, "A step's output is read by nobody: the next step's input reads neither previous_step nor steps.NAME (warning; the original's rule)."),
    (V_P1_W, "Two or more branches of a context_update parallel merge keys they do not declare (warning; the original's rule)."),
    (V_P3, "The first steps of a parallel's branches take literal inputs of different JSON types (warning; the original's rule)."),
    (V_S1, "An agent's output_schema is malformed: unknown type, `required` without `properties` or naming no property, array without `items` (warning)."),
    (V_S2, "An agent's structured output is rendered into the text of the next step's input, which stringifies it (warning; the original's rule)."),
    (V_S3, "An agent's output_schema has type string (warning; the original's rule)."),
    (V_C1, "`updates_context: true` on an agent whose output is never an object, with no single output key or sink_to: every run fails the merge."),
    (V_C3, "A step's input is a very large literal, or repeats a literal into a very large string (warning; the original's rule)."),
    (V_T2, "A template outside a map body reads `this` (warning; the original's rule)."),
    (CTX_UNDECLARED_READ, "A template reads `context.KEY` that no step writes and context_schema does not declare (warning)."),
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
        BP_UNKNOWN_FIELD | V_T1 | V_T2 | V_T4 | V_T5 | V_CF1 | V_CTX2 | V_A5 | V_P1_W | V_P3 | V_S1 | V_S2 | V_S3
        | V_C3 | CTX_OUTPUT_KEYS | CTX_UNDECLARED_READ | LOOP_NO_EXIT | SM_UNREACHABLE | PAR_CONFLICT_RISK
        | BP_MCP_UNREACHABLE => Severity::Warning,
        _ => Severity::Error,
    }
}

/// The description of a rule id (this project's, or one of the original's catalogue), if it is one.
pub fn describe(rule: &str) -> Option<&'static str> {
    RULES
        .iter()
        .find(|(id, _)| *id == rule)
        .map(|(_, d)| *d)
        .or_else(|| ORIGINAL_CATALOGUE.iter().find(|r| r.id == rule).map(|r| r.here))
}

/// The id of the original project's catalogue (Flujo 0.6.11, Python) that a finding of `rule` is reported
/// under, where this project's rule checks the same thing under an id of its own. Rules that already use the
/// original's id (`V-T1`, `V-CTX1`, …) and rules the original has no counterpart for map to `None`.
pub fn original_id(rule: &str) -> Option<&'static str> {
    Some(match rule {
        BP_SKILL_MISSING | BP_AGENT_MISSING => "V-A6",
        BP_IMPORT_MISSING => "V-I1",
        BP_IMPORT_CYCLE => "V-I3",
        SM_UNKNOWN_STATE | SM_UNREACHABLE | SM_NO_END => "V-SM1",
        PAR_CONFLICT_RISK => "V-P1",
        LOOP_NO_EXIT => "V-L1",
        _ => return None,
    })
}

/// True when a finding of `rule` answers to `id`: its own id or the original's id it is reported under.
pub fn answers_to(rule: &str, id: &str) -> bool {
    rule == id || original_id(rule) == Some(id)
}

/// One rule of the original's catalogue and what this project does with it.
#[derive(Debug, Clone, Copy)]
pub struct OriginalRule {
    pub id: &'static str,
    /// The rules of this project that report it (their findings carry `id`), empty when it is not built.
    pub ours: &'static [&'static str],
    /// What it checks here, or why it has no meaning here.
    pub here: &'static str,
}

/// The original's rule catalogue (`flujo/validation/rules_catalog.py` and the rules emitted beside it), rule by
/// rule. `RULES.md` has the same table with the reasons in full.
pub const ORIGINAL_CATALOGUE: &[OriginalRule] = &[
    OriginalRule {
        id: "V-A1",
        ours: &[],
        here: "Not applicable: a step without an agent is a passthrough here, not an error.",
    },
    OriginalRule {
        id: "V-A2",
        ours: &[],
        here: "Not built: compares Python type annotations; the original fails every two-step YAML pipeline with it.",
    },
    OriginalRule { id: "V-A5", ours: &[V_A5], here: "A step's output is read by nobody." },
    OriginalRule {
        id: "V-A6",
        ours: &[BP_SKILL_MISSING, BP_AGENT_MISSING],
        here: "Unknown skill id or undeclared agent.",
    },
    OriginalRule {
        id: "V-A7",
        ours: &[],
        here: "Not applicable: a malformed max_retries or timeout is refused (BP-TYPE, BP-RANGE), never coerced.",
    },
    OriginalRule {
        id: "V-A8",
        ours: &[],
        here: "Not applicable: an agent with an output_schema always asks for JSON output.",
    },
    OriginalRule {
        id: "V-F1",
        ours: &[],
        here: "Not applicable: compares Python input types of a step and its fallback.",
    },
    OriginalRule {
        id: "V-P1",
        ours: &[PAR_CONFLICT_RISK],
        here: "Two branches of a context_update parallel write the same key.",
    },
    OriginalRule {
        id: "V-P1-W",
        ours: &[V_P1_W],
        here: "Branches of a context_update parallel merge undeclared keys.",
    },
    OriginalRule {
        id: "V-P2",
        ours: &[PAR_CONFLICT_RISK],
        here: "Import outputs of two branches map to the same key (reported as V-P1).",
    },
    OriginalRule { id: "V-P3", ours: &[V_P3], here: "Branches start from literal inputs of different types." },
    OriginalRule { id: "V-S1", ours: &[V_S1], here: "Malformed output_schema." },
    OriginalRule { id: "V-S2", ours: &[V_S2], here: "Structured output stringified into the next input." },
    OriginalRule { id: "V-S3", ours: &[V_S3], here: "output_schema of type string." },
    OriginalRule {
        id: "V-L1",
        ours: &[LOOP_NO_EXIT],
        here: "A loop's exit condition cannot change between iterations.",
    },
    OriginalRule { id: "V-CF1", ours: &[V_CF1], here: "A loop allows 1,000 iterations or more." },
    OriginalRule {
        id: "V-SM1",
        ours: &[SM_UNKNOWN_STATE, SM_UNREACHABLE, SM_NO_END],
        here: "State machine: unknown or unreachable states, no path to an end state.",
    },
    OriginalRule { id: "V-C1", ours: &[V_C1], here: "updates_context on an output that is never an object." },
    OriginalRule {
        id: "V-C2",
        ours: &[],
        here: "Not applicable: there is no scratchpad; writes to framework fields are CTX-READONLY.",
    },
    OriginalRule { id: "V-C3", ours: &[V_C3], here: "Very large literal in an input." },
    OriginalRule { id: "V-I1", ours: &[BP_IMPORT_MISSING], here: "Import missing or unreadable." },
    OriginalRule { id: "V-I2", ours: &[], here: "Not applicable: compares Python context types of parent and child." },
    OriginalRule { id: "V-I3", ours: &[BP_IMPORT_CYCLE], here: "Import cycle." },
    OriginalRule {
        id: "V-I4",
        ours: &[],
        here: "Not applicable: an imported blueprint's findings are reported directly, at their own file and line.",
    },
    OriginalRule { id: "V-I5", ours: &[], here: "Not applicable: input_to is checked when decoding (BP-TYPE)." },
    OriginalRule { id: "V-I6", ours: &[], here: "Not applicable: there is no inherit_conversation." },
    OriginalRule { id: "V-T1", ours: &[V_T1], here: "previous_step.output." },
    OriginalRule { id: "V-T2", ours: &[V_T2], here: "`this` outside a map body." },
    OriginalRule { id: "V-T3", ours: &[V_T3], here: "Unknown filter (an error here)." },
    OriginalRule { id: "V-T4", ours: &[V_T4], here: "steps.NAME before NAME has run." },
    OriginalRule {
        id: "V-T5",
        ours: &[V_T5],
        here: "previous_step.FIELD missing from the previous agent's output_schema.",
    },
    OriginalRule {
        id: "V-T6",
        ours: &[],
        here: "Not applicable: inputs are never parsed as JSON by type, so JSON-looking text stays text.",
    },
    OriginalRule { id: "V-CTX1", ours: &[V_CTX1], here: "input_keys never produced upstream." },
    OriginalRule { id: "V-CTX2", ours: &[V_CTX2], here: "Only the root of an input_keys path is produced." },
    OriginalRule {
        id: "V-EX1",
        ours: &[],
        here: "Not applicable: skills run out of process and cannot swallow the engine's control flow.",
    },
    OriginalRule {
        id: "CTX-OUTPUT-KEYS",
        ours: &[CTX_OUTPUT_KEYS],
        here: "updates_context without output_keys or sink_to (a warning here).",
    },
    OriginalRule {
        id: "HITL-NESTED-001",
        ours: &[HITL_NESTED_001],
        here: "Never emitted: a pause resumes at any depth.",
    },
    OriginalRule {
        id: "LOOP-001",
        ours: &[],
        here: "Not applicable: steps.NAME inside a loop body reads the current iteration's output.",
    },
    OriginalRule {
        id: "TEMPLATE-001",
        ours: &[],
        here: "Not applicable: {% if %} and {% for %} are supported in templates.",
    },
];

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
        for r in ORIGINAL_CATALOGUE {
            assert!(doc.contains(&format!("| `{}` |", r.id)), "{} missing from the catalogue table of RULES.md", r.id);
            for ours in r.ours {
                assert!(
                    *ours == r.id || original_id(ours) == Some(r.id) || r.id == "V-P2",
                    "{ours} should report {}",
                    r.id
                );
            }
        }
    }
}
