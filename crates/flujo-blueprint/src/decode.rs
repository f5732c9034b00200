//! Decoding: the spanned YAML tree → the raw blueprint ([`crate::raw`]), reporting every structural problem.
//!
//! The decoder never stops at the first problem. A field with the wrong type is reported (`BP-TYPE`) and
//! skipped, an out-of-range number too (`BP-RANGE`); an unknown key is a warning (`BP-UNKNOWN-FIELD`), or an
//! error with the suggestion when it is a near miss of a real field (`BP-FIELD-TYPO`); a step, branch or state
//! name that cannot be a journal path segment is `BP-NAME`; a missing
//! required field is `BP-MISSING-FIELD`; an unknown kind is `BP-UNKNOWN-KIND` with the closest kind. Local
//! checks that only need one value run here too: template and expression syntax (`TEMPLATE`), unknown
//! filters (`V-T3`), `previous_step.output` (`V-T1`), JSON Schemas, and the nesting and size limits
//! (`BP-LIMIT`).

use std::borrow::Cow;
use std::path::Path;

use flujo_core::{
    InputTo, MergeStrategy, OnBranchFailure, OnImportFailure, OnMaxLoops, OutputMapping, ReduceMode, StepConfig,
    TransitionOn, UsageLimits, Validator,
};
use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::raw::{
    RawAgent, RawAgentDecl, RawBlueprint, RawBranch, RawFallback, RawKind, RawParallel, RawPrompt, RawStep,
    RawTransition, RawTreeSearch, Sp,
};
use crate::rules;
use crate::suggest::closest;
use crate::yaml::{duplicate_keys, resolve_merges, Loc, Node, NodeKind};

pub(crate) mod mcp;

/// Deepest nesting of steps inside steps (loop bodies, branches, states, fallbacks, wrapped steps).
pub const MAX_STEP_NESTING: usize = 64;
/// Most steps one blueprint file may declare (nested ones included).
pub const MAX_STEPS: usize = 100_000;

/// The step kinds the YAML format knows (`StateMachine` is accepted as a spelling of `state_machine`).
pub const KNOWN_KINDS: &[&str] = &[
    "step",
    "loop",
    "map",
    "conditional",
    "parallel",
    "dynamic_router",
    "hitl",
    "cache",
    "state_machine",
    "agentic_loop",
    "tree_search",
];

const TOP_FIELDS: &[&str] =
    &["version", "name", "description", "context_schema", "agents", "imports", "memory", "mcp_servers", "steps"];

/// The fields of the blueprint's `memory:`.
const MEMORY_FIELDS: &[&str] = &["index", "chunk_size", "chunk_overlap", "embedder"];
const COMMON_FIELDS: &[&str] = &[
    "name",
    "kind",
    "input",
    "config",
    "fallback",
    "validators",
    "updates_context",
    "sink_to",
    "input_keys",
    "output_keys",
    "usage_limits",
    "meta",
];
const CONFIG_FIELDS: &[&str] = &["max_retries", "timeout_s", "temperature", "top_p", "max_tokens"];
const IMPORT_CONFIG_FIELDS: &[&str] = &["inherit_context", "input_to", "outputs", "on_failure", "default_output"];
const PARALLEL_FIELDS: &[&str] = &["branches", "merge_strategy", "on_branch_failure", "context_include_keys", "reduce"];
const ROUTER_FIELDS: &[&str] = &[
    "router",
    "router_agent",
    "uses",
    "branches",
    "merge_strategy",
    "on_branch_failure",
    "context_include_keys",
    "reduce",
];
const LOOP_FIELDS: &[&str] =
    &["body", "max_loops", "exit_expression", "exit_condition", "iteration_input", "output", "on_max_loops"];
const MAP_FIELDS: &[&str] = &["iterable_input", "body", "concurrency", "max_items"];
const TREE_SEARCH_FIELDS: &[&str] = &[
    "proposer",
    "evaluator",
    "branching_factor",
    "beam_width",
    "max_depth",
    "max_iterations",
    "goal_score_threshold",
    "require_goal",
    "path_max_tokens",
    "static_invariants",
    "discovery_agent",
    "cost_function",
    "candidate_validator",
];
const AGENT_FIELDS: &[&str] =
    &["model", "system_prompt", "output_schema", "model_settings", "timeout", "max_retries", "tools", "max_turns"];

/// The kind-specific fields of each step kind (besides [`COMMON_FIELDS`]).
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "step" => &["agent", "uses"],
        "loop" => &["loop"],
        "map" => &["map"],
        "conditional" => &["condition_expression", "condition", "branches", "default_branch"],
        "parallel" => PARALLEL_FIELDS,
        "dynamic_router" => ROUTER_FIELDS,
        "hitl" => &["message", "input_schema"],
        "cache" => &["wrapped_step", "ttl_s"],
        "state_machine" => &["states", "start_state", "end_states", "transitions", "max_hops"],
        "agentic_loop" => &["planner", "tools", "max_turns"],
        "tree_search" => TREE_SEARCH_FIELDS,
        _ => &[],
    }
}

/// The blueprint format versions this loader reads (the Python project's loader documents `"0.1"` as the
/// only version; an absent `version` means `"0.1"`).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1"];

/// Known `model_settings` keys (passed to the provider; the first three are typed and checked here).
const MODEL_SETTINGS_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "token_limit_param",
    "top_k",
    "seed",
    "stop",
    "stop_sequences",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "reasoning_effort",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "n",
    "user",
    "metadata",
    "parallel_tool_calls",
    "tool_choice",
    "service_tier",
    "thinking",
    "thinking_budget",
    "cache_prompt",
];

/// How to replace a Python import path (`pkg.mod:fn`) from an old blueprint.
pub(crate) const PYTHON_REPLACEMENT: &str = "declare a `command` skill in skills.yaml next to the blueprint, e.g. \
     `skills: {my.skill: {command: [\"python3\", \"my_skill.py\"]}}`, and use `agent: {id: my.skill}`";

/// The default `max_loops` of a loop that does not set it (Flujo's historical default).
use flujo_core::DEFAULT_MAX_LOOPS;

/// The fields of one YAML mapping, with "was it read?" marks for the unknown-field check.
pub(crate) struct Fields<'n> {
    pub loc: Loc,
    entries: Vec<(Cow<'n, str>, &'n Node, &'n Node, bool)>,
}

impl<'n> Fields<'n> {
    /// The value of `key` (marking it as read).
    pub fn take(&mut self, key: &str) -> Option<&'n Node> {
        let entry = self.entries.iter_mut().find(|e| e.0 == key)?;
        entry.3 = true;
        Some(entry.2)
    }

    /// The location of `key`'s key.
    pub fn key_loc(&self, key: &str) -> Option<Loc> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.1.loc)
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.0 == key)
    }

    fn mark_all(&mut self) {
        for e in &mut self.entries {
            e.3 = true;
        }
    }

    /// Every entry in declaration order.
    pub fn all(&self) -> impl Iterator<Item = (&str, &'n Node, &'n Node)> {
        self.entries.iter().map(|e| (&*e.0, e.1, e.2))
    }
}

/// The decoder of one file: accumulates diagnostics.
pub(crate) struct Decoder<'a> {
    pub file: &'a Path,
    pub diags: Vec<Diagnostic>,
    custom_kinds: &'a [String],
    steps_seen: usize,
    steps_limit_reported: bool,
    nesting_limit_reported: bool,
}

impl<'a> Decoder<'a> {
    pub fn new(file: &'a Path, custom_kinds: &'a [String]) -> Self {
        Decoder {
            file,
            diags: Vec::new(),
            custom_kinds,
            steps_seen: 0,
            steps_limit_reported: false,
            nesting_limit_reported: false,
        }
    }

    pub fn report(&mut self, rule: &str, loc: Loc, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(rule, self.file, loc, message));
    }

    pub fn report_with(&mut self, rule: &str, loc: Loc, message: impl Into<String>, suggestion: Option<String>) {
        let mut d = Diagnostic::at(rule, self.file, loc, message);
        d.suggestion = suggestion;
        self.diags.push(d);
    }

    fn type_error(&mut self, node: &Node, what: &str, expected: &str) {
        self.report(rules::BP_TYPE, node.loc, format!("{what} must be {expected}, found {}", node.type_name()));
    }

    // -----------------------------------------------------------------------------------------------------
    // Generic helpers
    // -----------------------------------------------------------------------------------------------------

    /// The fields of a mapping node (duplicate keys reported); `None` (after a `BP-TYPE`) for other nodes.
    pub fn fields<'n>(&mut self, node: &'n Node, what: &str) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.type_error(node, what, "a mapping");
            return None;
        };
        for dup in duplicate_keys(entries) {
            let key = dup.key_string().unwrap_or_default();
            self.report(rules::BP_DUP_KEY, dup.loc, format!("duplicate key `{key}` in {what}"));
        }
        for (k, _) in entries {
            if k.key_str().is_none() {
                self.report(rules::BP_TYPE, k.loc, format!("keys in {what} must be scalars, found {}", k.type_name()));
            }
        }
        let out = resolve_merges(entries).into_iter().map(|(key, k, v)| (key, k, v, false)).collect();
        Some(Fields { loc: node.loc, entries: out })
    }

    /// Reports every entry of `fields` that was not read as an unknown field, suggesting the closest of
    /// `known`. `hint` may name another place where the field is valid.
    pub fn finish(&mut self, fields: Fields<'_>, known: &[&str], what: &str, hint: impl Fn(&str) -> Option<String>) {
        for (key, k, _, used) in fields.entries {
            if used {
                continue;
            }
            if let Some(h) = hint(&key) {
                self.report_with(
                    rules::BP_UNKNOWN_FIELD,
                    k.loc,
                    format!("unknown field `{key}` in {what}; it is ignored"),
                    Some(h),
                );
            } else if let Some(c) = closest(&key, known.iter().copied()) {
                // A near miss of a real field is a typo: ignoring it would silently change what runs.
                self.report_with(
                    rules::BP_FIELD_TYPO,
                    k.loc,
                    format!("unknown field `{key}` in {what}; it looks like a misspelling of `{c}`"),
                    Some(format!("did you mean `{c}`?")),
                );
            } else {
                self.report(rules::BP_UNKNOWN_FIELD, k.loc, format!("unknown field `{key}` in {what}; it is ignored"));
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.kind {
            NodeKind::Str(s) => Some(Sp::new(s.clone(), node.loc)),
            _ => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    /// A scalar spelled as a string (`version: 0.1`, `name: 42`, `exit_expression: true`).
    fn scalar(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.kind {
            NodeKind::Seq(_) | NodeKind::Map(_) | NodeKind::Null => {
                self.type_error(node, what, "a string");
                None
            }
            _ => node.key_string().map(|s| Sp::new(s, node.loc)),
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.kind {
            NodeKind::Bool(b) => Some(b),
            _ => {
                self.type_error(node, what, "`true` or `false`");
                None
            }
        }
    }

    fn unsigned(&mut self, node: &Node, what: &str, max: u64) -> Option<u64> {
        match node.kind {
            NodeKind::UInt(u) if u <= max => Some(u),
            NodeKind::UInt(_) => {
                self.report(rules::BP_TYPE, node.loc, format!("{what} is too large (at most {max})"));
                None
            }
            NodeKind::Int(_) => {
                self.report(rules::BP_TYPE, node.loc, format!("{what} must not be negative"));
                None
            }
            _ => {
                self.type_error(node, what, "a non-negative integer");
                None
            }
        }
    }

    fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        match node.kind {
            NodeKind::UInt(u) => Some(u as f64),
            NodeKind::Int(i) => Some(i as f64),
            NodeKind::Float(f) if f.is_finite() => Some(f),
            _ => {
                self.type_error(node, what, "a number");
                None
            }
        }
    }

    fn non_negative(&mut self, node: &Node, what: &str) -> Option<f64> {
        let n = self.number(node, what)?;
        if n < 0.0 {
            self.report(rules::BP_TYPE, node.loc, format!("{what} must not be negative"));
            return None;
        }
        Some(n)
    }

    /// A duration in seconds: a number, greater than 0, at most [`flujo_core::limits::MAX_DURATION_S`]
    /// (`BP-RANGE` otherwise).
    fn duration_secs(&mut self, node: &Node, what: &str) -> Option<f64> {
        let n = match node.kind {
            NodeKind::Float(f) if !f.is_finite() => f,
            _ => self.number(node, what)?,
        };
        match flujo_core::limits::check_duration_secs(n) {
            Ok(()) => Some(n),
            Err(e) => {
                self.report_with(
                    rules::BP_RANGE,
                    node.loc,
                    format!("{what} {e}"),
                    Some(format!(
                        "give a number of seconds between 0 (exclusive) and {} (7 days); leave it out for no timeout",
                        flujo_core::limits::MAX_DURATION_S
                    )),
                );
                None
            }
        }
    }

    /// A retry count: a non-negative integer, at most [`flujo_core::limits::MAX_RETRIES`].
    fn retries(&mut self, node: &Node, what: &str) -> Option<u32> {
        let n = self.unsigned(node, what, u64::MAX)?;
        match flujo_core::limits::check_retries(n) {
            Ok(()) => u32::try_from(n).ok(),
            Err(e) => {
                self.report(rules::BP_RANGE, node.loc, format!("{what} {e}"));
                None
            }
        }
    }

    /// A count in `1..=max` (`BP-RANGE` when out of range).
    fn count(&mut self, node: &Node, what: &str, max: u32) -> Option<u32> {
        let n = self.unsigned(node, what, u64::MAX)?;
        match flujo_core::limits::check_count(n, max) {
            Ok(()) => u32::try_from(n).ok(),
            Err(e) => {
                self.report(rules::BP_RANGE, node.loc, format!("{what} {e}"));
                None
            }
        }
    }

    /// A name that becomes a journal path segment (step, branch, state): `BP-NAME` when it cannot be one.
    pub fn check_segment_name(&mut self, name: &str, loc: Loc, what: &str) {
        if let Err(e) = flujo_core::limits::check_name(name) {
            let shown: String = name.chars().take(60).collect();
            let shown = if shown.len() < name.len() { format!("{shown}…") } else { shown };
            self.report_with(
                rules::BP_NAME,
                loc,
                format!("{what} {shown:?} {e}"),
                Some(format!("rename it, e.g. {:?}", flujo_core::limits::suggest_name(name))),
            );
        }
    }

    /// A number in `lo..=hi` (`BP-RANGE` otherwise).
    fn ranged(&mut self, node: &Node, what: &str, lo: f64, hi: f64) -> Option<f64> {
        let n = self.number(node, what)?;
        if !(lo..=hi).contains(&n) {
            let n = flujo_core::limits::show_number(n);
            self.report(rules::BP_RANGE, node.loc, format!("{what} must be between {lo} and {hi}, got {n}"));
            return None;
        }
        Some(n)
    }

    /// Checks an agent's `model_settings`: the typed keys' types and ranges, and unknown keys (a warning, or
    /// `BP-FIELD-TYPO` near a known key). Every other key is passed to the provider as is.
    fn model_settings(&mut self, node: &Node, agent: &str) {
        let what = format!("`model_settings` of {agent}");
        let NodeKind::Map(entries) = &node.kind else { return };
        let mut f = Fields {
            loc: node.loc,
            entries: resolve_merges(entries).into_iter().map(|(key, k, v)| (key, k, v, false)).collect(),
        };
        // A thinking budget is part of the completion: it must be below `max_tokens`.
        let uint = |key: &str| {
            f.entries.iter().find(|e| e.0 == key).and_then(|e| match e.2.kind {
                NodeKind::UInt(u) => Some((u, e.2.loc)),
                _ => None,
            })
        };
        let budget = uint("thinking_budget").or_else(|| {
            let t = f.entries.iter().find(|e| e.0 == "thinking")?;
            let NodeKind::Map(items) = &t.2.kind else { return None };
            items.iter().find(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == "budget_tokens")).and_then(
                |(_, v)| match v.kind {
                    NodeKind::UInt(u) => Some((u, v.loc)),
                    _ => None,
                },
            )
        });
        if let (Some((b, loc)), Some((max, _))) = (budget, uint("max_tokens").or_else(|| uint("max_completion_tokens")))
        {
            if b >= max {
                self.report_with(
                    rules::BP_RANGE,
                    loc,
                    format!("the thinking budget ({b}) in {what} must be below `max_tokens` ({max})"),
                    Some("thinking is part of the completion: raise `max_tokens` or lower the budget".to_owned()),
                );
            }
        }
        if let Some(n) = f.take("temperature") {
            self.ranged(n, &format!("`temperature` in {what}"), 0.0, 2.0);
        }
        if let Some(n) = f.take("top_p") {
            self.ranged(n, &format!("`top_p` in {what}"), 0.0, 1.0);
        }
        if let (true, Some(n)) = (f.has("max_tokens"), f.entries.iter().find(|e| e.0 == "max_completion_tokens")) {
            let loc = n.1.loc;
            self.report(
                rules::BP_TYPE,
                loc,
                format!("{what} sets both `max_tokens` and `max_completion_tokens`; set one"),
            );
        }
        if let Some(n) = f.take("token_limit_param") {
            self.choice(
                n,
                &format!("`token_limit_param` in {what}"),
                &[("max_tokens", ()), ("max_completion_tokens", ())],
            );
        }
        for key in ["max_tokens", "max_completion_tokens"] {
            if let Some(n) = f.take(key) {
                match n.kind {
                    NodeKind::UInt(u) if u >= 1 && u <= u64::from(u32::MAX) => {}
                    NodeKind::UInt(_) | NodeKind::Int(_) => self.report(
                        rules::BP_RANGE,
                        n.loc,
                        format!("`{key}` in {what} must be between 1 and {}", u32::MAX),
                    ),
                    _ => self.type_error(n, &format!("`{key}` in {what}"), "a positive integer"),
                }
            }
        }
        for key in ["presence_penalty", "frequency_penalty"] {
            if let Some(n) = f.take(key) {
                self.ranged(n, &format!("`{key}` in {what}"), -2.0, 2.0);
            }
        }
        if let Some(n) = f.take("seed") {
            if !matches!(n.kind, NodeKind::UInt(_) | NodeKind::Int(_)) {
                self.type_error(n, &format!("`seed` in {what}"), "an integer");
            }
        }
        for key in ["top_k", "n"] {
            if let Some(n) = f.take(key) {
                self.count(n, &format!("`{key}` in {what}"), u32::MAX);
            }
        }
        if let Some(n) = f.take("top_logprobs") {
            self.ranged(n, &format!("`top_logprobs` in {what}"), 0.0, 20.0);
        }
        for key in ["logprobs", "parallel_tool_calls", "cache_prompt"] {
            if let Some(n) = f.take(key) {
                self.boolean(n, &format!("`{key}` in {what}"));
            }
        }
        if let Some(n) = f.take("thinking_budget") {
            self.count(n, &format!("`thinking_budget` in {what}"), u32::MAX);
        }
        if let Some(n) = f.take("thinking") {
            // Anthropic's shape: `{type: enabled, budget_tokens: N}` or `{type: disabled}`.
            if let Some(mut t) = self.fields(n, &format!("`thinking` in {what}")) {
                if let Some(k) = t.take("type") {
                    self.choice(k, &format!("`thinking.type` in {what}"), &[("enabled", ()), ("disabled", ())]);
                }
                if let Some(b) = t.take("budget_tokens") {
                    self.count(b, &format!("`thinking.budget_tokens` in {what}"), u32::MAX);
                }
                self.finish(t, &["type", "budget_tokens"], &format!("`thinking` in {what}"), |_| None);
            }
        }
        if let Some(n) = f.take("tool_choice") {
            let label = format!("`tool_choice` in {what}");
            match &n.kind {
                NodeKind::Map(_) => {
                    if let Some(mut t) = self.fields(n, &label) {
                        match t.take("tool") {
                            Some(id) => {
                                self.string(id, &format!("`tool_choice.tool` in {what}"));
                            }
                            None => self.report_with(
                                rules::BP_MISSING_FIELD,
                                t.loc,
                                format!("{label} has no `tool`"),
                                Some("e.g. `tool_choice: {tool: flujo.builtins.http_get}`".to_owned()),
                            ),
                        }
                        self.finish(t, &["tool"], &label, |_| None);
                    }
                }
                _ => {
                    self.choice(n, &label, &[("auto", ()), ("none", ()), ("required", ()), ("any", ())]);
                }
            }
        }
        for key in ["stop", "stop_sequences"] {
            if let Some(n) = f.take(key) {
                let ok = match &n.kind {
                    NodeKind::Str(_) => true,
                    NodeKind::Seq(items) => items.iter().all(|i| matches!(i.kind, NodeKind::Str(_))),
                    _ => false,
                };
                if !ok {
                    self.type_error(n, &format!("`{key}` in {what}"), "a string or a list of strings");
                }
            }
        }
        if let Some(n) = f.take("reasoning_effort") {
            self.choice(
                n,
                &format!("`reasoning_effort` in {what}"),
                &[("minimal", ()), ("low", ()), ("medium", ()), ("high", ())],
            );
        }
        for key in MODEL_SETTINGS_FIELDS {
            f.take(key);
        }
        for (key, k, _, used) in f.entries {
            if used {
                continue;
            }
            match closest(&key, MODEL_SETTINGS_FIELDS.iter().copied()) {
                Some(c) => self.report_with(
                    rules::BP_FIELD_TYPO,
                    k.loc,
                    format!("unknown key `{key}` in {what}; it looks like a misspelling of `{c}`"),
                    Some(format!("did you mean `{c}`?")),
                ),
                None => self.report(
                    rules::BP_UNKNOWN_FIELD,
                    k.loc,
                    format!("unknown key `{key}` in {what}; it is passed to the provider as is"),
                ),
            }
        }
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<Sp<String>> {
        match &node.kind {
            NodeKind::Seq(items) => {
                items.iter().filter_map(|i| self.string(i, &format!("each entry of {what}"))).collect()
            }
            _ => {
                self.type_error(node, what, "a list of strings");
                Vec::new()
            }
        }
    }

    fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let s = self.string(node, what)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s.v) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let suggestion = closest(&s.v, names.iter().copied()).map(|c| format!("did you mean `{c}`?"));
        self.report_with(
            rules::BP_TYPE,
            s.loc,
            format!("invalid {what} `{}`; expected one of: {}", s.v, names.join(", ")),
            suggestion,
        );
        None
    }

    fn object(&mut self, node: &Node, what: &str) -> Option<Map<String, Value>> {
        match node.to_json() {
            Value::Object(m) if matches!(node.kind, NodeKind::Map(_)) => {
                self.fields(node, what);
                Some(m)
            }
            _ => {
                self.type_error(node, what, "a mapping");
                None
            }
        }
    }

    /// A JSON Schema value: must be a mapping (or a boolean) and compile.
    fn schema(&mut self, node: &Node, what: &str) -> Option<Value> {
        if !matches!(node.kind, NodeKind::Map(_) | NodeKind::Bool(_)) {
            self.type_error(node, what, "a JSON Schema (a mapping)");
            return None;
        }
        let value = node.to_json();
        if let Err(e) = jsonschema::validator_for(&value) {
            self.report(rules::BP_TYPE, node.loc, format!("{what} is not a valid JSON Schema: {e}"));
            return None;
        }
        Some(value)
    }

    // -----------------------------------------------------------------------------------------------------
    // Templates and expressions
    // -----------------------------------------------------------------------------------------------------

    /// Checks a template string: syntax (`TEMPLATE`), unknown filters (`V-T3`), `previous_step.output`
    /// (`V-T1`).
    pub fn check_template(&mut self, src: &str, loc: Loc, what: &str) {
        if !flujo_template::is_template(src) && !src.contains("{#") {
            return;
        }
        match flujo_template::unknown_filters(src) {
            Err(e) => self.report(rules::TEMPLATE, loc, format!("{what}: {e}")),
            Ok(filters) => self.report_filters(&filters, loc, what),
        }
        self.check_previous_output(src, loc, what);
    }

    /// Checks every template string inside a JSON-like node.
    fn check_templates_in(&mut self, node: &Node, what: &str) {
        match &node.kind {
            NodeKind::Str(s) => self.check_template(s, node.loc, what),
            NodeKind::Seq(items) => items.iter().for_each(|i| self.check_templates_in(i, what)),
            NodeKind::Map(entries) => entries.iter().for_each(|(_, v)| self.check_templates_in(v, what)),
            _ => {}
        }
    }

    /// Checks an expression: syntax (`TEMPLATE`), unknown filters (`V-T3`), `previous_step.output` (`V-T1`).
    pub fn check_expression(&mut self, src: &str, loc: Loc, what: &str) {
        if src.trim().is_empty() {
            self.report(rules::TEMPLATE, loc, format!("{what} is empty"));
            return;
        }
        match flujo_template::unknown_expression_filters(src) {
            Err(e) => self.report(rules::TEMPLATE, loc, format!("{what}: {e}")),
            Ok(filters) => self.report_filters(&filters, loc, what),
        }
        self.check_previous_output(src, loc, what);
    }

    fn report_filters(&mut self, filters: &[String], loc: Loc, what: &str) {
        for f in filters {
            let suggestion = closest(f, flujo_template::KNOWN_FILTERS.iter().copied())
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| Some(format!("known filters: {}", flujo_template::KNOWN_FILTERS.join(", "))));
            self.report_with(rules::V_T3, loc, format!("{what} uses unknown filter `{f}`"), suggestion);
        }
    }

    fn check_previous_output(&mut self, src: &str, loc: Loc, what: &str) {
        if mentions_previous_step_output(src) {
            self.report_with(
                rules::V_T1,
                loc,
                format!(
                    "{what} reads `previous_step.output`, but `previous_step` is already the previous step's output"
                ),
                Some("write `previous_step` (or `steps.NAME` for a named step's output)".to_owned()),
            );
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Blueprint
    // -----------------------------------------------------------------------------------------------------

    pub fn blueprint(&mut self, root: &Node) -> RawBlueprint {
        let mut bp = RawBlueprint::default();
        if matches!(root.kind, NodeKind::Null) {
            self.report(rules::BP_MISSING_FIELD, Loc { line: 1, col: 1 }, "the blueprint is empty; it needs `steps:`");
            return bp;
        }
        let Some(mut f) = self.fields(root, "a blueprint") else {
            return bp;
        };
        if let Some(n) = f.take("version") {
            bp.version = self.scalar(n, "`version`").map(|s| s.v);
            if let Some(v) = bp.version.as_deref().filter(|v| !SUPPORTED_VERSIONS.contains(v)) {
                let shown: String = v.chars().take(40).collect();
                self.report_with(
                    rules::BP_VERSION,
                    n.loc,
                    format!(
                        "unsupported blueprint version `{shown}`; this Flujo reads version {}",
                        SUPPORTED_VERSIONS.join(", ")
                    ),
                    Some("write `version: \"0.1\"` (or leave `version` out)".to_owned()),
                );
            }
        }
        if let Some(n) = f.take("name") {
            bp.name = self.scalar(n, "`name`").map(|s| s.v);
            if let Some(name) = &bp.name {
                let len = name.chars().count();
                if len > flujo_core::limits::MAX_NAME_LEN || name.chars().any(char::is_control) {
                    self.report(
                        rules::BP_NAME,
                        n.loc,
                        format!(
                            "the pipeline name must be at most {} characters without control characters ({len} given)",
                            flujo_core::limits::MAX_NAME_LEN
                        ),
                    );
                }
            }
        }
        if let Some(n) = f.take("description") {
            self.scalar(n, "`description`");
        }
        if let Some(n) = f.take("context_schema") {
            bp.context_schema = self.schema(n, "`context_schema`");
        }
        if let Some(n) = f.take("agents") {
            bp.agents = self.agents(n);
        }
        if let Some(n) = f.take("imports") {
            if let Some(imports) = self.fields(n, "`imports`") {
                let entries: Vec<(String, &Node, &Node)> =
                    imports.all().map(|(k, kn, v)| (k.to_owned(), kn, v)).collect();
                for (alias, key, value) in entries {
                    if let Some(path) = self.string(value, &format!("import `{alias}`")) {
                        bp.imports.push((Sp::new(alias, key.loc), path));
                    }
                }
            }
        }
        if let Some(n) = f.take("memory") {
            bp.memory = self.memory(n);
        }
        if let Some(n) = f.take("mcp_servers") {
            bp.mcp_servers = self.mcp_servers(n);
        }
        match f.take("steps") {
            Some(n) => bp.steps = self.steps(n, 1, "`steps`"),
            None => self.report(rules::BP_MISSING_FIELD, f.loc, "the blueprint has no `steps:` list"),
        }
        self.finish(f, TOP_FIELDS, "the blueprint", |_| None);
        bp
    }

    /// `memory: {index: all | [step names], chunk_size, chunk_overlap, embedder}`.
    fn memory(&mut self, node: &Node) -> Option<crate::raw::RawMemory> {
        let mut f = self.fields(node, "`memory`")?;
        let mut out = crate::raw::RawMemory::default();
        if let Some(n) = f.take("index") {
            match &n.kind {
                NodeKind::Str(s) if s == "all" => out.settings.index = Some(flujo_core::MemoryIndex::All),
                NodeKind::Bool(true) => out.settings.index = Some(flujo_core::MemoryIndex::All),
                NodeKind::Bool(false) => {}
                NodeKind::Seq(_) => {
                    let names = self.string_list(n, "`memory.index`");
                    out.settings.index =
                        Some(flujo_core::MemoryIndex::Steps(names.iter().map(|s| s.v.clone()).collect()));
                    out.index_names = names;
                }
                _ => self.type_error(n, "`memory.index`", "`all`, `true`, `false` or a list of step names"),
            }
        }
        if let Some(n) = f.take("chunk_size") {
            match self.unsigned(n, "`memory.chunk_size`", 1_000_000) {
                Some(0) => self.report(rules::BP_RANGE, n.loc, "`memory.chunk_size` must be at least 1"),
                Some(v) => out.settings.chunk_size = Some(v as usize),
                None => {}
            }
        }
        if let Some(n) = f.take("chunk_overlap") {
            if let Some(v) = self.unsigned(n, "`memory.chunk_overlap`", 1_000_000) {
                if out.settings.chunk_size.is_some_and(|size| v as usize * 2 > size) {
                    self.report(
                        rules::BP_RANGE,
                        n.loc,
                        "`memory.chunk_overlap` must be at most half of `memory.chunk_size`",
                    );
                } else {
                    out.settings.chunk_overlap = Some(v as usize);
                }
            }
        }
        if let Some(n) = f.take("embedder") {
            out.settings.embedder = self.string(n, "`memory.embedder`").map(|s| s.v);
        }
        self.finish(f, MEMORY_FIELDS, "`memory`", |_| None);
        Some(out)
    }

    fn agents(&mut self, node: &Node) -> Vec<(Sp<String>, RawAgentDecl)> {
        let Some(fields) = self.fields(node, "`agents`") else {
            return Vec::new();
        };
        let entries: Vec<(String, &Node, &Node)> = fields.all().map(|(k, kn, v)| (k.to_owned(), kn, v)).collect();
        let mut out = Vec::new();
        for (name, key, value) in entries {
            if let Some(decl) = self.agent_decl(value, &name) {
                out.push((Sp::new(name, key.loc), decl));
            }
        }
        out
    }

    fn agent_decl(&mut self, node: &Node, name: &str) -> Option<RawAgentDecl> {
        let what = format!("agent `{name}`");
        let mut f = self.fields(node, &what)?;
        let mut decl = RawAgentDecl { json: node.to_json(), ..RawAgentDecl::default() };
        match f.take("model") {
            Some(n @ Node { kind: NodeKind::Seq(items), .. }) => {
                // A fallback chain: tried in order when a model fails at the provider.
                let ids = self.string_list(n, &format!("`model` of {what}"));
                if items.is_empty() {
                    self.report_with(
                        rules::BP_MODEL,
                        n.loc,
                        format!("the `model` list of {what} is empty"),
                        Some("name one model, or several to fall back on in order".to_owned()),
                    );
                }
                let mut ids = ids.into_iter();
                decl.model = ids.next();
                decl.fallback_models = ids.collect();
            }
            Some(n) => decl.model = self.string(n, &format!("`model` of {what}")),
            None => self.report_with(
                rules::BP_MISSING_FIELD,
                f.loc,
                format!("{what} has no `model`"),
                Some("e.g. `model: \"openai:gpt-4o\"` or `model: \"mock:echo\"`".to_owned()),
            ),
        }
        if let Some(n) = f.take("system_prompt") {
            decl.system_prompt = self.system_prompt(n, &what);
        }
        if let Some(n) = f.take("output_schema") {
            decl.output_schema = self.schema(n, &format!("`output_schema` of {what}"));
        }
        if let Some(n) = f.take("model_settings") {
            decl.model_settings = self.object(n, &format!("`model_settings` of {what}")).map(Value::Object);
            if decl.model_settings.is_some() {
                self.model_settings(n, &what);
            }
        }
        if let Some(n) = f.take("timeout") {
            decl.timeout_s = self.duration_secs(n, &format!("`timeout` of {what}"));
        }
        if let Some(n) = f.take("timeout_s") {
            // The model layer reads `timeout_s` when `timeout` is absent: check it the same way.
            let t = self.duration_secs(n, &format!("`timeout_s` of {what}"));
            decl.timeout_s = decl.timeout_s.or(t);
        }
        if let Some(n) = f.take("max_retries") {
            decl.max_retries = self.retries(n, &format!("`max_retries` of {what}"));
        }
        if let Some(n) = f.take("tools") {
            decl.tools = self.string_list(n, &format!("`tools` of {what}"));
        }
        if let Some(n) = f.take("max_turns") {
            // Model turns of a plain step that offers `tools` (an extension; `agentic_loop` has its own).
            self.count(n, &format!("`max_turns` of {what}"), flujo_core::limits::MAX_TURNS);
        }
        self.finish(f, AGENT_FIELDS, &what, |_| None);
        Some(decl)
    }

    fn system_prompt(&mut self, node: &Node, what: &str) -> Option<RawPrompt> {
        match &node.kind {
            NodeKind::Str(s) => {
                self.check_template(s, node.loc, &format!("the system prompt of {what}"));
                Some(RawPrompt::Text(s.clone()))
            }
            NodeKind::Map(_) => {
                let mut f = self.fields(node, &format!("`system_prompt` of {what}"))?;
                let path = match f.take("from_file") {
                    Some(n) => self.string(n, "`from_file`"),
                    None => {
                        self.report(
                            rules::BP_MISSING_FIELD,
                            f.loc,
                            format!("`system_prompt` of {what} has no `from_file`"),
                        );
                        None
                    }
                };
                let variables = match f.take("variables") {
                    Some(n) => self.object(n, "`variables`").unwrap_or_default(),
                    None => Map::new(),
                };
                self.finish(f, &["from_file", "variables"], &format!("`system_prompt` of {what}"), |_| None);
                path.map(|path| RawPrompt::File { path, variables })
            }
            _ => {
                self.type_error(node, &format!("`system_prompt` of {what}"), "a string or `{from_file: PATH}`");
                None
            }
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Steps
    // -----------------------------------------------------------------------------------------------------

    fn steps(&mut self, node: &Node, depth: usize, what: &str) -> Vec<RawStep> {
        match &node.kind {
            NodeKind::Seq(items) => {
                // Sized up front: `filter_map` would grow the vector by doubling, moving every (large) step.
                let mut steps = Vec::with_capacity(items.len());
                steps.extend(items.iter().filter_map(|i| self.step(i, depth)));
                steps
            }
            _ => {
                self.type_error(node, what, "a list of steps");
                Vec::new()
            }
        }
    }

    /// A sub-pipeline (a branch, a state, a loop or map body, a default branch) in any of the original's three
    /// forms: a list of steps; `{steps: [...]}` (with an optional `name` or `description`, which are only
    /// documentation); or a single step given as a mapping (`"true": {name: big, agent: …}`).
    fn pipeline(&mut self, node: &Node, depth: usize, what: &str) -> Vec<RawStep> {
        let NodeKind::Map(entries) = &node.kind else {
            return self.steps(node, depth, what);
        };
        if !entries.iter().any(|(k, _)| k.as_str() == Some("steps")) {
            return self.step(node, depth).into_iter().collect();
        }
        let Some(mut f) = self.fields(node, what) else {
            return Vec::new();
        };
        let steps = match f.take("steps") {
            Some(n) => self.steps(n, depth, &format!("`steps` of {what}")),
            None => Vec::new(),
        };
        for key in ["name", "description"] {
            if let Some(n) = f.take(key) {
                let _ = self.scalar(n, &format!("`{key}` of {what}"));
            }
        }
        self.finish(f, &["steps", "name", "description"], what, |_| None);
        steps
    }

    /// Named lists of steps (`branches:`, `states:`), in declaration order.
    fn branches(&mut self, node: &Node, depth: usize, what: &str) -> Vec<RawBranch> {
        let Some(fields) = self.fields(node, what) else {
            return Vec::new();
        };
        let entries: Vec<(String, &Node, &Node)> = fields.all().map(|(k, kn, v)| (k.to_owned(), kn, v)).collect();
        entries
            .into_iter()
            .map(|(name, key, value)| {
                let kind = if what.starts_with("`states`") { "the state name" } else { "the branch name" };
                self.check_segment_name(&name, key.loc, kind);
                let steps = self.pipeline(value, depth, &format!("`{name}` of {what}"));
                RawBranch { name: Sp::new(name, key.loc), steps }
            })
            .collect()
    }

    fn step(&mut self, node: &Node, depth: usize) -> Option<RawStep> {
        if depth > MAX_STEP_NESTING {
            if !self.nesting_limit_reported {
                self.nesting_limit_reported = true;
                self.report(
                    rules::BP_LIMIT,
                    node.loc,
                    format!("steps are nested deeper than {MAX_STEP_NESTING} levels"),
                );
            }
            return None;
        }
        self.steps_seen += 1;
        if self.steps_seen > MAX_STEPS {
            if !self.steps_limit_reported {
                self.steps_limit_reported = true;
                self.report(rules::BP_LIMIT, node.loc, format!("the blueprint declares more than {MAX_STEPS} steps"));
            }
            return None;
        }
        let mut f = self.fields(node, "a step")?;

        // `step: NAME` is the original's legacy spelling of `name` (`name` wins when both are given).
        let legacy_name = f.take("step");
        let name_node = match f.take("name") {
            Some(n) => {
                if let Some(l) = legacy_name {
                    self.report(
                        rules::BP_UNKNOWN_FIELD,
                        l.loc,
                        "the step has both `name` and the legacy `step`; `step` is ignored".to_owned(),
                    );
                }
                Some(n)
            }
            None => legacy_name,
        };
        let name = match name_node {
            Some(n) => match self.scalar(n, "a step's `name`") {
                Some(name) => {
                    self.check_segment_name(&name.v, name.loc, "the step name");
                    name
                }
                None => Sp::new(String::new(), n.loc),
            },
            None => {
                self.report(rules::BP_MISSING_FIELD, f.loc, "the step has no `name`");
                Sp::new(String::new(), f.loc)
            }
        };
        let label = if name.v.is_empty() {
            "the step".to_owned()
        } else if name.v.chars().count() > 80 || name.v.chars().any(char::is_control) {
            format!("step {:?}…", name.v.chars().take(60).collect::<String>())
        } else {
            format!("step `{}`", name.v)
        };

        // The kind decides which fields are valid.
        let kind_name: Option<String> = match f.take("kind") {
            None => Some("step".to_owned()),
            Some(n) => match self.string(n, &format!("`kind` of {label}")) {
                Some(k) => match normalize_kind(&k.v, self.custom_kinds) {
                    Some(kind) => Some(kind),
                    None => {
                        let candidates: Vec<&str> = KNOWN_KINDS
                            .iter()
                            .copied()
                            .chain(["StateMachine"])
                            .chain(self.custom_kinds.iter().map(String::as_str))
                            .collect();
                        let suggestion =
                            closest(&k.v, candidates).map(|c| format!("did you mean `{c}`?")).or_else(|| {
                                Some(format!(
                                    "known kinds: {} (other kinds must be registered with a step policy)",
                                    KNOWN_KINDS.join(", ")
                                ))
                            });
                        self.report_with(
                            rules::BP_UNKNOWN_KIND,
                            k.loc,
                            format!("unknown step kind `{}`", k.v),
                            suggestion,
                        );
                        None
                    }
                },
                None => None,
            },
        };

        let mut step = RawStep {
            name,
            kind: RawKind::Invalid,
            input: None,
            config: StepConfig::default(),
            fallback: None,
            validators: Vec::new(),
            updates_context: false,
            sink_to: None,
            input_keys: Vec::new(),
            output_keys: Vec::new(),
            usage_limits: None,
            meta: Map::new(),
        };

        // `kind: step` with `uses: imports.X` is an import; decide before reading `config`.
        let mut agent = None;
        let mut import_alias = None;
        if kind_name.as_deref() == Some("step") {
            let agent_node = f.take("agent");
            let uses_node = f.take("uses");
            if let (Some(_), Some(u)) = (agent_node, uses_node) {
                self.report(rules::BP_TYPE, u.loc, format!("{label} has both `agent` and `uses`; use one"));
            }
            if let Some(u) = uses_node {
                match self.uses(u, &label) {
                    Some(Uses::Agent(a)) => agent = Some(RawAgent::Declared(a)),
                    Some(Uses::Import(alias)) => import_alias = Some(alias),
                    None => {}
                }
            } else if let Some(a) = agent_node {
                agent = self.agent_ref(a, &format!("`agent` of {label}"));
            }
        }

        self.common_fields(&mut f, &mut step, &label, depth, import_alias.is_some());
        let import_cfg = if import_alias.is_some() { self.import_config(&mut f, &label) } else { None };

        step.kind = match kind_name.as_deref() {
            None => {
                f.mark_all();
                RawKind::Invalid
            }
            Some("step") => match (import_alias, import_cfg) {
                (Some(alias), Some(cfg)) => RawKind::Import {
                    alias,
                    inherit_context: cfg.inherit_context,
                    input_to: cfg.input_to,
                    outputs: cfg.outputs,
                    on_failure: cfg.on_failure,
                    default_output: cfg.default_output,
                },
                (Some(alias), None) => RawKind::Import {
                    alias,
                    inherit_context: false,
                    input_to: InputTo::default(),
                    outputs: Vec::new(),
                    on_failure: OnImportFailure::default(),
                    default_output: Value::Null,
                },
                _ => RawKind::Step { agent },
            },
            Some("loop") => self.loop_kind(&mut f, &label, depth),
            Some("map") => self.map_kind(&mut f, &label, depth),
            Some("conditional") => self.conditional_kind(&mut f, &label, depth),
            Some("parallel") => RawKind::Parallel(self.parallel_fields(&mut f, &label, depth, true)),
            Some("dynamic_router") => self.router_kind(&mut f, &label, depth),
            Some("hitl") => {
                let message = match f.take("message") {
                    Some(n) => match self.string(n, &format!("`message` of {label}")) {
                        Some(m) => {
                            self.check_template(&m.v, m.loc, &format!("the message of {label}"));
                            m.v
                        }
                        None => String::new(),
                    },
                    None => String::new(),
                };
                let input_schema =
                    f.take("input_schema").and_then(|n| self.schema(n, &format!("`input_schema` of {label}")));
                RawKind::Hitl { message, input_schema }
            }
            Some("cache") => {
                let wrapped = match f.take("wrapped_step") {
                    Some(n) => self.step(n, depth + 1).map(Box::new),
                    None => {
                        self.report(rules::BP_MISSING_FIELD, f.loc, format!("cache {label} has no `wrapped_step`"));
                        None
                    }
                };
                let ttl_s = f.take("ttl_s").and_then(|n| self.duration_secs(n, &format!("`ttl_s` of {label}")));
                RawKind::Cache { wrapped, ttl_s }
            }
            Some("state_machine") => self.state_machine_kind(&mut f, &label, depth),
            Some("agentic_loop") => {
                // `planner: agents.NAME` (or `{uses: agents.NAME}`), `tools: [skill ids]`, `max_turns`.
                let planner = match f.take("planner") {
                    Some(n) if matches!(n.kind, NodeKind::Str(_)) => match self.uses(n, &label) {
                        Some(Uses::Agent(a)) => Some(RawAgent::Declared(a)),
                        _ => {
                            self.report(rules::BP_TYPE, n.loc, format!("the planner of {label} must be `agents.NAME`"));
                            None
                        }
                    },
                    Some(n) => self.agent_ref(n, &format!("the planner of {label}")),
                    None => {
                        self.report(rules::BP_MISSING_FIELD, f.loc, format!("agentic_loop {label} has no `planner`"));
                        None
                    }
                };
                let tools =
                    f.take("tools").map(|n| self.string_list(n, &format!("`tools` of {label}"))).unwrap_or_default();
                let mut max_turns = 10;
                if let Some(n) = f.take("max_turns") {
                    if let Some(v) = self.count(n, &format!("`max_turns` of {label}"), flujo_core::limits::MAX_TURNS) {
                        max_turns = v;
                    }
                }
                RawKind::AgenticLoop { planner, tools, max_turns }
            }
            Some("tree_search") => self.tree_search_kind(&mut f, &label),
            Some(custom) => {
                // `children:` (name → sub-pipeline) are steps like any others; every other key is the kind's spec.
                let children = match f.take("children") {
                    Some(n) => self.branches(n, depth + 1, &format!("`children` of {label}")),
                    None => Vec::new(),
                };
                let mut spec = Map::new();
                for (key, _, value) in f.all() {
                    if !COMMON_FIELDS.contains(&key) && key != "children" {
                        spec.insert(key.to_owned(), value.to_json());
                    }
                }
                f.mark_all();
                RawKind::Custom { kind: custom.to_owned(), spec: Value::Object(spec), children }
            }
        };

        if let Some(kind) = kind_name.as_deref() {
            let own = kind_fields(kind);
            let known: Vec<&str> = COMMON_FIELDS.iter().chain(own.iter()).copied().collect();
            let what = format!("{label} (kind `{kind}`)");
            self.finish(f, &known, &what, |key| other_kind_hint(key, kind, own));
        }
        Some(step)
    }

    fn common_fields(&mut self, f: &mut Fields<'_>, step: &mut RawStep, label: &str, depth: usize, is_import: bool) {
        if let Some(n) = f.take("input") {
            self.check_templates_in(n, &format!("the input of {label}"));
            step.input = Some(n.to_json());
        }
        if let Some(n) = f.take("config") {
            if let Some(cfg) = self.config(n, label, is_import) {
                step.config = cfg;
            }
        }
        if let Some(n) = f.take("fallback") {
            step.fallback = match &n.kind {
                NodeKind::Str(s) => Some(RawFallback::Sibling(Sp::new(s.clone(), n.loc))),
                NodeKind::Map(_) => self.step(n, depth + 1).map(|s| RawFallback::Step(Box::new(s))),
                _ => {
                    self.type_error(n, &format!("`fallback` of {label}"), "a step (mapping) or a sibling step's name");
                    None
                }
            };
        }
        if let Some(n) = f.take("validators") {
            step.validators = self.validators(n, label);
        }
        if let Some(n) = f.take("updates_context") {
            step.updates_context = self.boolean(n, &format!("`updates_context` of {label}")).unwrap_or(false);
        }
        if let Some(n) = f.take("sink_to") {
            step.sink_to = self.string(n, &format!("`sink_to` of {label}"));
            if let Some(s) = &step.sink_to {
                if s.v.trim().is_empty() || s.v.split('.').any(str::is_empty) {
                    self.report(
                        rules::BP_TYPE,
                        s.loc,
                        format!("`sink_to` of {label} is not a context path: `{}`", s.v),
                    );
                }
            }
        }
        if let Some(n) = f.take("input_keys") {
            step.input_keys = self.string_list(n, &format!("`input_keys` of {label}"));
        }
        if let Some(n) = f.take("output_keys") {
            step.output_keys = self.string_list(n, &format!("`output_keys` of {label}"));
        }
        if let Some(n) = f.take("usage_limits") {
            step.usage_limits = self.usage_limits(n, label);
        }
        if let Some(n) = f.take("meta") {
            step.meta = self.object(n, &format!("`meta` of {label}")).unwrap_or_default();
        }
    }

    fn config(&mut self, node: &Node, label: &str, is_import: bool) -> Option<StepConfig> {
        let what = format!("`config` of {label}");
        let mut f = self.fields(node, &what)?;
        let mut cfg = StepConfig::default();
        if let Some(n) = f.take("max_retries") {
            cfg.max_retries = self.retries(n, &format!("`max_retries` of {label}")).unwrap_or(cfg.max_retries);
        }
        if let Some(n) = f.take("timeout_s") {
            cfg.timeout_s = self.duration_secs(n, &format!("`timeout_s` of {label}"));
        }
        if let Some(n) = f.take("temperature") {
            cfg.temperature = self.ranged(n, &format!("`temperature` of {label}"), 0.0, 2.0);
        }
        if let Some(n) = f.take("top_p") {
            cfg.top_p = self.ranged(n, &format!("`top_p` of {label}"), 0.0, 1.0);
        }
        if let Some(n) = f.take("max_tokens") {
            cfg.max_tokens = self.unsigned(n, "`max_tokens`", u64::from(u32::MAX));
            if cfg.max_tokens == Some(0) {
                self.report(rules::BP_RANGE, n.loc, format!("`max_tokens` of {label} must be at least 1"));
                cfg.max_tokens = None;
            }
        }
        if is_import {
            // The import's own settings are read by `import_config`; leave them marked unread here.
            let known: Vec<&str> = CONFIG_FIELDS.iter().chain(IMPORT_CONFIG_FIELDS).copied().collect();
            for key in IMPORT_CONFIG_FIELDS {
                f.take(key);
            }
            self.finish(f, &known, &what, |_| None);
        } else {
            self.finish(f, CONFIG_FIELDS, &what, |k| {
                IMPORT_CONFIG_FIELDS
                    .contains(&k)
                    .then(|| "this is an import setting; it applies to `uses: imports.NAME` steps".to_owned())
            });
        }
        Some(cfg)
    }

    fn import_config(&mut self, f: &mut Fields<'_>, label: &str) -> Option<ImportConfig> {
        let node = f.take("config")?;
        let NodeKind::Map(entries) = &node.kind else { return None };
        // Duplicate keys and unknown keys of this mapping were reported by `config`.
        let mut decoder_fields = Fields {
            loc: node.loc,
            entries: resolve_merges(entries).into_iter().map(|(key, k, v)| (key, k, v, false)).collect(),
        };
        let mut cfg = ImportConfig::default();
        let g = &mut decoder_fields;
        if let Some(n) = g.take("inherit_context") {
            cfg.inherit_context = self.boolean(n, &format!("`inherit_context` of {label}")).unwrap_or(false);
        }
        if let Some(n) = g.take("input_to") {
            cfg.input_to = self
                .choice(
                    n,
                    "`input_to`",
                    &[
                        ("initial_prompt", InputTo::InitialPrompt),
                        ("import_artifacts", InputTo::ImportArtifacts),
                        ("both", InputTo::Both),
                    ],
                )
                .unwrap_or_default();
        }
        if let Some(n) = g.take("on_failure") {
            cfg.on_failure = self
                .choice(
                    n,
                    "`on_failure`",
                    &[
                        ("abort", OnImportFailure::Abort),
                        ("skip", OnImportFailure::Skip),
                        ("continue_with_default", OnImportFailure::ContinueWithDefault),
                    ],
                )
                .unwrap_or_default();
        }
        if let Some(n) = g.take("default_output") {
            cfg.default_output = n.to_json();
        }
        if let Some(n) = g.take("outputs") {
            match &n.kind {
                NodeKind::Seq(items) => {
                    for item in items {
                        if let Some(mut m) = self.fields(item, "an `outputs` mapping") {
                            let child = m.take("child").and_then(|c| self.string(c, "`child`"));
                            let parent = m.take("parent").and_then(|p| self.string(p, "`parent`"));
                            match (child, parent) {
                                (Some(child), Some(parent)) => cfg.outputs.push(OutputMapping::new(child.v, parent.v)),
                                _ => self.report(
                                    rules::BP_MISSING_FIELD,
                                    item.loc,
                                    "each `outputs` entry needs `child` and `parent` context paths",
                                ),
                            }
                            self.finish(m, &["child", "parent"], "an `outputs` mapping", |_| None);
                        }
                    }
                }
                NodeKind::Map(entries) => {
                    // `{child_path: parent_path}` shorthand.
                    for (child, _, v) in resolve_merges(entries) {
                        match v.as_str() {
                            Some(parent) => cfg.outputs.push(OutputMapping::new(child.into_owned(), parent)),
                            _ => self.type_error(v, "an `outputs` entry", "a context path string"),
                        }
                    }
                }
                _ => self.type_error(n, &format!("`outputs` of {label}"), "a list of `{child, parent}` mappings"),
            }
        }
        Some(cfg)
    }

    fn validators(&mut self, node: &Node, label: &str) -> Vec<Validator> {
        let NodeKind::Seq(items) = &node.kind else {
            self.type_error(node, &format!("`validators` of {label}"), "a list of `{expression, message}` mappings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(mut f) = self.fields(item, &format!("a validator of {label}")) else { continue };
            let expression = match f.take("expression") {
                Some(n) => self.scalar(n, "`expression`"),
                None => {
                    self.report(rules::BP_MISSING_FIELD, f.loc, format!("a validator of {label} has no `expression`"));
                    None
                }
            };
            let message = f.take("message").and_then(|n| self.string(n, "`message`")).map(|m| m.v);
            self.finish(f, &["expression", "message"], &format!("a validator of {label}"), |_| None);
            if let Some(e) = expression {
                self.check_expression(&e.v, e.loc, &format!("a validator of {label}"));
                out.push(Validator::new(e.v, message));
            }
        }
        out
    }

    fn usage_limits(&mut self, node: &Node, label: &str) -> Option<UsageLimits> {
        let what = format!("`usage_limits` of {label}");
        let mut f = self.fields(node, &what)?;
        let mut limits = UsageLimits::default();
        if let Some(n) = f.take("total_cost_usd_limit") {
            limits.total_cost_usd_limit = self.non_negative(n, "`total_cost_usd_limit`");
        }
        if let Some(n) = f.take("total_tokens_limit") {
            limits.total_tokens_limit = self.unsigned(n, "`total_tokens_limit`", u64::MAX);
        }
        self.finish(f, &["total_cost_usd_limit", "total_tokens_limit"], &what, |_| None);
        Some(limits)
    }

    /// `uses: agents.NAME` / `uses: imports.NAME`.
    fn uses(&mut self, node: &Node, label: &str) -> Option<Uses> {
        let s = self.string(node, &format!("`uses` of {label}"))?;
        if let Some(name) = s.v.strip_prefix("agents.") {
            return Some(Uses::Agent(Sp::new(name.to_owned(), s.loc)));
        }
        if let Some(alias) = s.v.strip_prefix("imports.") {
            return Some(Uses::Import(Sp::new(alias.to_owned(), s.loc)));
        }
        if looks_like_python_path(&s.v) {
            self.report_with(
                rules::BP_SKILL_MISSING,
                s.loc,
                format!(
                    "`uses` of {label} is a Python import path (`{}`); Flujo (Rust) cannot import Python code",
                    s.v
                ),
                Some(PYTHON_REPLACEMENT.to_owned()),
            );
        } else {
            self.report_with(
                rules::BP_TYPE,
                s.loc,
                format!("`uses` of {label} must be `agents.NAME` or `imports.NAME`, found `{}`", s.v),
                Some(format!("to run a skill, write `agent: {{id: {}}}`", s.v)),
            );
        }
        None
    }

    /// An agent-like value: `"skill.id"`, `{id, params}` or `{uses: agents.NAME}`.
    /// `agents.NAME` (an import is refused here: `what` needs an agent or a skill).
    fn declared_agent(&mut self, node: &Node, what: &str) -> Option<RawAgent> {
        match self.uses(node, what)? {
            Uses::Agent(a) => Some(RawAgent::Declared(a)),
            Uses::Import(alias) => {
                self.report(
                    rules::BP_TYPE,
                    alias.loc,
                    format!("{what} cannot be an import; use `agents.NAME` or a skill"),
                );
                None
            }
        }
    }

    fn agent_ref(&mut self, node: &Node, what: &str) -> Option<RawAgent> {
        match &node.kind {
            NodeKind::Str(s) => {
                if s.trim().is_empty() {
                    self.report(rules::BP_TYPE, node.loc, format!("{what} is an empty skill id"));
                    return None;
                }
                Some(RawAgent::Skill { id: Sp::new(s.clone(), node.loc), params: Value::Null })
            }
            NodeKind::Map(_) => {
                let mut f = self.fields(node, what)?;
                if let Some(u) = f.take("uses") {
                    let out = self.declared_agent(u, what);
                    self.finish(f, &["uses"], what, |_| None);
                    return out;
                }
                let id = match f.take("id") {
                    Some(Node { kind: NodeKind::Str(s), loc, .. }) => Some(Sp::new(s.clone(), *loc)),
                    Some(n) => self.string(n, &format!("`id` of {what}")),
                    None => {
                        self.report(rules::BP_MISSING_FIELD, f.loc, format!("{what} has no skill `id`"));
                        None
                    }
                };
                let params = f.take("params").map(Node::to_json).unwrap_or(Value::Null);
                self.finish(f, &["id", "params"], what, |_| None);
                id.map(|id| RawAgent::Skill { id, params })
            }
            _ => {
                self.type_error(node, what, "a skill id or `{id: SKILL, params: {...}}`");
                None
            }
        }
    }

    fn loop_kind(&mut self, f: &mut Fields<'_>, label: &str, depth: usize) -> RawKind {
        let Some(node) = f.take("loop") else {
            self.report_with(
                rules::BP_MISSING_FIELD,
                f.loc,
                format!("loop {label} has no `loop:` block"),
                Some("write `loop: {body: [...], max_loops: N, exit_expression: \"...\"}`".to_owned()),
            );
            return RawKind::Invalid;
        };
        let what = format!("`loop` of {label}");
        let Some(mut g) = self.fields(node, &what) else { return RawKind::Invalid };
        let body = match g.take("body") {
            Some(n) => self.pipeline(n, depth + 1, &format!("`body` of {label}")),
            None => {
                self.report(rules::BP_MISSING_FIELD, g.loc, format!("loop {label} has no `body`"));
                Vec::new()
            }
        };
        let mut max_loops = DEFAULT_MAX_LOOPS;
        if let Some(n) = g.take("max_loops") {
            if let Some(m) = self.count(n, &format!("`max_loops` of {label}"), flujo_core::limits::MAX_ITERATIONS) {
                max_loops = m;
            }
        }
        let exit_expression = g.take("exit_expression").and_then(|n| self.scalar(n, "`exit_expression`"));
        if let Some(e) = &exit_expression {
            self.check_expression(&e.v, e.loc, &format!("the exit_expression of {label}"));
        }
        let exit_condition =
            g.take("exit_condition").and_then(|n| self.agent_ref(n, &format!("`exit_condition` of {label}")));
        let iteration_input = g.take("iteration_input").map(|n| {
            self.check_templates_in(n, &format!("the iteration_input of {label}"));
            n.to_json()
        });
        let output = g.take("output").map(|n| {
            self.check_templates_in(n, &format!("the output of {label}"));
            n.to_json()
        });
        let on_max_loops = g
            .take("on_max_loops")
            .and_then(|n| {
                self.choice(n, "`on_max_loops`", &[("fail", OnMaxLoops::Fail), ("succeed", OnMaxLoops::Succeed)])
            })
            .unwrap_or_default();
        self.finish(g, LOOP_FIELDS, &what, |_| None);
        RawKind::Loop { body, max_loops, exit_expression, exit_condition, iteration_input, output, on_max_loops }
    }

    fn map_kind(&mut self, f: &mut Fields<'_>, label: &str, depth: usize) -> RawKind {
        let Some(node) = f.take("map") else {
            self.report_with(
                rules::BP_MISSING_FIELD,
                f.loc,
                format!("map {label} has no `map:` block"),
                Some("write `map: {iterable_input: items, body: [...]}`".to_owned()),
            );
            return RawKind::Invalid;
        };
        let what = format!("`map` of {label}");
        let Some(mut g) = self.fields(node, &what) else { return RawKind::Invalid };
        let iterable_input = g.take("iterable_input").and_then(|n| self.string(n, "`iterable_input`"));
        if let Some(i) = &iterable_input {
            self.check_template(&i.v, i.loc, &format!("the iterable_input of {label}"));
        }
        let body = match g.take("body") {
            Some(n) => self.pipeline(n, depth + 1, &format!("`body` of {label}")),
            None => {
                self.report(rules::BP_MISSING_FIELD, g.loc, format!("map {label} has no `body`"));
                Vec::new()
            }
        };
        let mut concurrency = 1;
        if let Some(n) = g.take("concurrency") {
            match self.unsigned(n, "`concurrency`", 1_000_000) {
                Some(0) => self.report(rules::BP_TYPE, n.loc, "`concurrency` must be at least 1"),
                Some(c) => concurrency = usize::try_from(c).unwrap_or(1),
                None => {}
            }
        }
        let mut max_items = None;
        if let Some(n) = g.take("max_items") {
            match self.unsigned(n, "`max_items`", u64::from(u32::MAX)) {
                Some(0) => self.report(rules::BP_TYPE, n.loc, "`max_items` must be at least 1"),
                Some(m) => max_items = usize::try_from(m).ok(),
                None => {}
            }
        }
        self.finish(g, MAP_FIELDS, &what, |_| None);
        RawKind::Map { iterable_input: iterable_input.map(|i| i.v), body, concurrency, max_items }
    }

    fn conditional_kind(&mut self, f: &mut Fields<'_>, label: &str, depth: usize) -> RawKind {
        let condition_expression =
            f.take("condition_expression").and_then(|n| self.scalar(n, "`condition_expression`"));
        if let Some(e) = &condition_expression {
            self.check_expression(&e.v, e.loc, &format!("the condition_expression of {label}"));
        }
        let condition = f.take("condition").and_then(|n| self.agent_ref(n, &format!("`condition` of {label}")));
        let branches = match f.take("branches") {
            Some(n) => self.branches(n, depth + 1, &format!("`branches` of {label}")),
            None => {
                self.report(rules::BP_MISSING_FIELD, f.loc, format!("conditional {label} has no `branches`"));
                Vec::new()
            }
        };
        let default_branch =
            f.take("default_branch").map(|n| self.pipeline(n, depth + 1, &format!("`default_branch` of {label}")));
        RawKind::Conditional {
            condition_expression: condition_expression.map(|e| e.v),
            condition,
            branches,
            default_branch,
        }
    }

    fn parallel_fields(&mut self, f: &mut Fields<'_>, label: &str, depth: usize, required: bool) -> RawParallel {
        let mut p = RawParallel::default();
        match f.take("branches") {
            Some(n) => p.branches = self.branches(n, depth + 1, &format!("`branches` of {label}")),
            None if required => self.report(rules::BP_MISSING_FIELD, f.loc, format!("{label} has no `branches`")),
            None => {}
        }
        if let Some(n) = f.take("merge_strategy") {
            p.merge_strategy = self
                .choice(
                    n,
                    "`merge_strategy`",
                    &[
                        ("context_update", MergeStrategy::ContextUpdate),
                        ("overwrite", MergeStrategy::Overwrite),
                        ("keep_first", MergeStrategy::KeepFirst),
                        ("error_on_conflict", MergeStrategy::ErrorOnConflict),
                        ("no_merge", MergeStrategy::NoMerge),
                    ],
                )
                .unwrap_or_default();
        }
        if let Some(n) = f.take("on_branch_failure") {
            p.on_branch_failure = self
                .choice(
                    n,
                    "`on_branch_failure`",
                    &[("propagate", OnBranchFailure::Propagate), ("ignore", OnBranchFailure::Ignore)],
                )
                .unwrap_or_default();
        }
        if let Some(n) = f.take("context_include_keys") {
            p.context_include_keys =
                Some(self.string_list(n, "`context_include_keys`").into_iter().map(|s| s.v).collect());
        }
        if let Some(n) = f.take("reduce") {
            p.reduce = self.reduce(n, label);
        }
        p
    }

    /// `reduce: MODE` or the original's mapping form `reduce: {mode: MODE}`; a Python reducer
    /// (`{callable: pkg.mod:fn}`, `{path: …}`, or an import path as the mode) is refused with its replacement.
    fn reduce(&mut self, node: &Node, label: &str) -> Option<ReduceMode> {
        const MODES: &[(&str, ReduceMode)] = &[
            ("keys", ReduceMode::Keys),
            ("values", ReduceMode::Values),
            ("union", ReduceMode::Union),
            ("concat", ReduceMode::Concat),
            ("first", ReduceMode::First),
            ("last", ReduceMode::Last),
            ("majority_vote", ReduceMode::MajorityVote),
            ("code_consensus", ReduceMode::CodeConsensus),
        ];
        let what = format!("`reduce` of {label}");
        let mode_node = if let NodeKind::Map(_) = node.kind {
            let mut g = self.fields(node, &what)?;
            for key in ["callable", "path"] {
                if let Some(c) = g.take(key) {
                    let shown = c.as_str().unwrap_or("…").to_owned();
                    self.report_with(
                        rules::BP_SKILL_MISSING,
                        c.loc,
                        format!(
                            "{what} names a Python reducer (`{key}: {shown}`); Flujo (Rust) cannot import Python code"
                        ),
                        Some(format!(
                            "use one of the built-in modes ({}), or reduce in a following step: {PYTHON_REPLACEMENT}",
                            MODES.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", ")
                        )),
                    );
                }
            }
            let mode = g.take("mode");
            if let Some(e) = g.take("evaluator") {
                self.report(
                    rules::BP_UNKNOWN_FIELD,
                    e.loc,
                    format!("`evaluator` of {what} is only read by the `judge_selection` mode, which Flujo (Rust) does not have; it is ignored"),
                );
            }
            self.finish(g, &["mode", "callable", "path", "evaluator"], &what, |_| None);
            mode?
        } else {
            node
        };
        let text = mode_node.as_str().map(str::trim).unwrap_or_default();
        if text == "judge_selection" {
            self.report_with(
                rules::BP_TYPE,
                mode_node.loc,
                format!("{what}: the `judge_selection` mode is not available in Flujo (Rust)"),
                Some("use `majority_vote` or `code_consensus`, or a following step with a judge agent that picks from the branch outputs".to_owned()),
            );
            return None;
        }
        if looks_like_python_path(text) {
            self.report_with(
                rules::BP_SKILL_MISSING,
                mode_node.loc,
                format!("{what} is a Python import path (`{text}`); Flujo (Rust) cannot import Python code"),
                Some(PYTHON_REPLACEMENT.to_owned()),
            );
            return None;
        }
        self.choice(mode_node, &format!("`reduce` mode of {label}"), MODES)
    }

    fn router_kind(&mut self, f: &mut Fields<'_>, label: &str, depth: usize) -> RawKind {
        let mut router_agent = None;
        let mut parallel = RawParallel::default();
        let mut found_agent = false;
        if let Some(node) = f.take("router") {
            let what = format!("`router` of {label}");
            if let Some(mut g) = self.fields(node, &what) {
                let (agent_node, uses_node) = (g.take("router_agent"), g.take("uses"));
                if let (Some(_), Some(u)) = (agent_node, uses_node) {
                    self.report(rules::BP_TYPE, u.loc, format!("{what} has both `router_agent` and `uses`; use one"));
                }
                if let Some(n) = agent_node {
                    found_agent = true;
                    router_agent = self.agent_ref(n, &format!("`router_agent` of {label}"));
                } else if let Some(u) = uses_node {
                    found_agent = true;
                    match self.uses(u, &what) {
                        Some(Uses::Agent(a)) => router_agent = Some(RawAgent::Declared(a)),
                        Some(Uses::Import(a)) => self.report(
                            rules::BP_TYPE,
                            a.loc,
                            "a router agent cannot be an import; use `agents.NAME` or a skill",
                        ),
                        None => {}
                    }
                }
                parallel = self.parallel_fields(&mut g, label, depth, false);
                self.finish(g, &ROUTER_FIELDS[1..], &what, |_| None);
            }
        }
        if let Some(n) = f.take("router_agent") {
            if found_agent {
                self.report(rules::BP_TYPE, n.loc, format!("{label} declares its router agent twice"));
            }
            found_agent = true;
            router_agent = self.agent_ref(n, &format!("`router_agent` of {label}"));
        }
        let (has_merge, has_failure) = (f.has("merge_strategy"), f.has("on_branch_failure"));
        let outer = self.parallel_fields(f, label, depth, false);
        if !outer.branches.is_empty() {
            if !parallel.branches.is_empty() {
                self.report(
                    rules::BP_TYPE,
                    f.key_loc("branches").unwrap_or(f.loc),
                    format!("{label} declares `branches` twice"),
                );
            }
            parallel.branches = outer.branches;
        }
        if has_merge {
            parallel.merge_strategy = outer.merge_strategy;
        }
        if has_failure {
            parallel.on_branch_failure = outer.on_branch_failure;
        }
        if outer.context_include_keys.is_some() {
            parallel.context_include_keys = outer.context_include_keys;
        }
        if outer.reduce.is_some() {
            parallel.reduce = outer.reduce;
        }
        if !found_agent {
            self.report(rules::BP_MISSING_FIELD, f.loc, format!("dynamic_router {label} has no `router_agent`"));
        }
        if parallel.branches.is_empty() && !f.has("branches") {
            self.report(rules::BP_MISSING_FIELD, f.loc, format!("dynamic_router {label} has no `branches`"));
        }
        RawKind::Router { router_agent, parallel }
    }

    /// An agent of a composite step: `agents.NAME`, `{uses: agents.NAME}`, a skill id or `{id, params}`.
    fn agent_field(&mut self, f: &mut Fields<'_>, key: &str, label: &str, required: bool) -> Option<RawAgent> {
        let what = format!("the {key} of {label}");
        match f.take(key) {
            Some(n) if n.as_str().is_some_and(|s| s.starts_with("agents.") || s.starts_with("imports.")) => {
                self.declared_agent(n, &what)
            }
            Some(n) => self.agent_ref(n, &what),
            None => {
                if required {
                    self.report(rules::BP_MISSING_FIELD, f.loc, format!("{label} has no `{key}`"));
                }
                None
            }
        }
    }

    fn tree_search_kind(&mut self, f: &mut Fields<'_>, label: &str) -> RawKind {
        let proposer = self.agent_field(f, "proposer", label, true);
        let evaluator = self.agent_field(f, "evaluator", label, true);
        let mut spec = RawTreeSearch { proposer, evaluator, ..RawTreeSearch::default() };
        for (key, max, slot) in [
            ("branching_factor", 100, &mut spec.branching_factor),
            ("beam_width", 100, &mut spec.beam_width),
            ("max_depth", 1_000, &mut spec.max_depth),
        ] {
            if let Some(n) = f.take(key) {
                if let Some(v) = self.count(n, &format!("`{key}` of {label}"), max) {
                    *slot = v;
                }
            }
        }
        if let Some(n) = f.take("max_iterations") {
            if !matches!(n.kind, NodeKind::Null) {
                spec.max_iterations =
                    self.count(n, &format!("`max_iterations` of {label}"), flujo_core::limits::MAX_ITERATIONS);
            }
        }
        if let Some(n) = f.take("path_max_tokens") {
            if let Some(v) = self.count(n, &format!("`path_max_tokens` of {label}"), 1_000_000) {
                if v < 200 {
                    self.report(rules::BP_RANGE, n.loc, format!("`path_max_tokens` of {label} must be at least 200"));
                } else {
                    spec.path_max_tokens = v;
                }
            }
        }
        if let Some(n) = f.take("goal_score_threshold") {
            if let Some(t) = self.number(n, &format!("`goal_score_threshold` of {label}")) {
                if (0.0..=1.0).contains(&t) {
                    spec.goal_score_threshold = t;
                } else {
                    self.report(
                        rules::BP_RANGE,
                        n.loc,
                        format!("`goal_score_threshold` of {label} must be between 0 and 1"),
                    );
                }
            }
        }
        if let Some(n) = f.take("require_goal") {
            if let Some(b) = self.boolean(n, &format!("`require_goal` of {label}")) {
                spec.require_goal = b;
            }
        }
        if let Some(n) = f.take("static_invariants") {
            match &n.kind {
                NodeKind::Seq(items) => {
                    for item in items {
                        match item.as_str() {
                            Some(e) if looks_like_python_path(e) => self.report_with(
                                rules::BP_SKILL_MISSING,
                                item.loc,
                                format!("a static invariant of {label} is a Python import path (`{e}`); Flujo (Rust) cannot import Python code"),
                                Some("write the invariant as an expression over `output` (the candidate) and `context`".to_owned()),
                            ),
                            Some(e) => {
                                self.check_expression(e, item.loc, &format!("a static invariant of {label}"));
                                spec.static_invariants.push(e.to_owned());
                            }
                            None => self.type_error(item, &format!("a static invariant of {label}"), "an expression (a string)"),
                        }
                    }
                }
                _ => self.type_error(n, &format!("`static_invariants` of {label}"), "a list of expressions"),
            }
        }
        for key in ["cost_function", "candidate_validator"] {
            if let Some(n) = f.take(key) {
                self.report_with(
                    rules::BP_SKILL_MISSING,
                    n.loc,
                    format!("`{key}` of {label} is a Python callable; Flujo (Rust) cannot import Python code"),
                    Some(if key == "cost_function" {
                        "the cost of a node here is its depth".to_owned()
                    } else {
                        "empty candidates are dropped; express other rules as `static_invariants`".to_owned()
                    }),
                );
            }
        }
        if let Some(n) = f.take("discovery_agent") {
            self.report(
                rules::BP_UNKNOWN_FIELD,
                n.loc,
                format!("`discovery_agent` of {label} is not supported by this version (invariants a model deduces); it is ignored: list the invariants in `static_invariants`"),
            );
        }
        RawKind::TreeSearch(Box::new(spec))
    }

    fn state_machine_kind(&mut self, f: &mut Fields<'_>, label: &str, depth: usize) -> RawKind {
        let states = match f.take("states") {
            Some(n) => self.branches(n, depth + 1, &format!("`states` of {label}")),
            None => {
                self.report(rules::BP_MISSING_FIELD, f.loc, format!("state machine {label} has no `states`"));
                Vec::new()
            }
        };
        let start_state = match f.take("start_state") {
            Some(n) => self.scalar(n, "`start_state`"),
            None => {
                self.report(rules::BP_MISSING_FIELD, f.loc, format!("state machine {label} has no `start_state`"));
                None
            }
        };
        let end_states: Vec<Sp<String>> = match f.take("end_states") {
            Some(n) if n.as_str().is_some() => self.scalar(n, "`end_states`").into_iter().collect(),
            Some(n) => self.string_list(n, "`end_states`"),
            None => Vec::new(),
        };
        // an end state need not be declared under `states`, so its name is checked here too
        for e in &end_states {
            if !states.iter().any(|b| b.name.v == e.v) {
                self.check_segment_name(&e.v, e.loc, "the state name");
            }
        }
        let mut transitions = Vec::new();
        if let Some(n) = f.take("transitions") {
            match &n.kind {
                NodeKind::Seq(items) => {
                    for item in items {
                        if let Some(t) = self.transition(item, label) {
                            transitions.push(t);
                        }
                    }
                }
                _ => self.type_error(
                    n,
                    &format!("`transitions` of {label}"),
                    "a list of `{from, on, to, when}` mappings",
                ),
            }
        }
        let mut max_hops = 100;
        if let Some(n) = f.take("max_hops") {
            if let Some(m) = self.count(n, &format!("`max_hops` of {label}"), flujo_core::limits::MAX_ITERATIONS) {
                max_hops = m;
            }
        }
        RawKind::StateMachine { states, start_state, end_states, transitions, max_hops }
    }

    fn transition(&mut self, node: &Node, label: &str) -> Option<RawTransition> {
        let what = format!("a transition of {label}");
        let mut f = self.fields(node, &what)?;
        let mut missing = Vec::new();
        let from = f.take("from").and_then(|n| self.scalar(n, "`from`"));
        let to = f.take("to").and_then(|n| self.scalar(n, "`to`"));
        let on = match f.take("on") {
            Some(n) => self.choice(
                n,
                "`on`",
                &[
                    ("success", TransitionOn::Success),
                    ("failure", TransitionOn::Failure),
                    ("pause", TransitionOn::Pause),
                ],
            ),
            None => {
                missing.push("on");
                None
            }
        };
        let when = f.take("when").and_then(|n| self.scalar(n, "`when`"));
        if let Some(w) = &when {
            self.check_expression(&w.v, w.loc, &format!("the `when` of {what}"));
        }
        if !f.has("from") {
            missing.insert(0, "from");
        }
        if !f.has("to") {
            missing.push("to");
        }
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
            self.report(rules::BP_MISSING_FIELD, f.loc, format!("{what} has no {}", list.join(", ")));
        }
        self.finish(f, &["from", "on", "to", "when"], &what, |_| None);
        Some(RawTransition { from: from?, on: on?, to: to?, when: when.map(|w| w.v) })
    }
}

enum Uses {
    Agent(Sp<String>),
    Import(Sp<String>),
}

#[derive(Default)]
struct ImportConfig {
    inherit_context: bool,
    input_to: InputTo,
    outputs: Vec<OutputMapping>,
    on_failure: OnImportFailure,
    default_output: Value,
}

/// The canonical kind name of a YAML `kind:` value, if it is a known or registered kind.
fn normalize_kind(kind: &str, custom: &[String]) -> Option<String> {
    match kind {
        "StateMachine" | "state_machine" => Some("state_machine".to_owned()),
        k if KNOWN_KINDS.contains(&k) => Some(k.to_owned()),
        k if custom.iter().any(|c| c == k) => Some(k.to_owned()),
        _ => None,
    }
}

/// "`branches` is a field of kind `parallel`" when an unknown field belongs to another kind.
fn other_kind_hint(key: &str, kind: &str, own: &[&str]) -> Option<String> {
    if own.contains(&key) {
        return None;
    }
    if kind == "loop" && key == "max_iterations" {
        return Some(
            "a loop's bound is `max_loops` inside the `loop:` block (the original ignores `max_iterations` on loops too)"
                .to_owned(),
        );
    }
    if matches!(kind, "loop" | "map") && (LOOP_FIELDS.contains(&key) || MAP_FIELDS.contains(&key)) {
        return Some(format!("`{key}` belongs inside the `{kind}:` block"));
    }
    let owners: Vec<&str> =
        KNOWN_KINDS.iter().copied().filter(|k| *k != kind && kind_fields(k).contains(&key)).collect();
    if owners.is_empty() {
        None
    } else {
        Some(format!(
            "`{key}` is a field of kind {}; this step is kind `{kind}`",
            owners.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(" / ")
        ))
    }
}

/// `pkg.mod:attr` with identifier segments (and not `provider:model`-like: the module part is dotted or the
/// attribute part is an identifier).
pub(crate) fn looks_like_python_path(id: &str) -> bool {
    let is_ident = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let is_dotted = |s: &str| !s.is_empty() && s.split('.').all(is_ident);
    match id.split_once(':') {
        Some((module, attr)) => is_dotted(module) && is_dotted(attr),
        None => false,
    }
}

/// True when `src` reads `previous_step.output` (as code, i.e. not preceded by an identifier character).
pub(crate) fn mentions_previous_step_output(src: &str) -> bool {
    const NEEDLE: &str = "previous_step.output";
    let mut start = 0;
    while let Some(pos) = src[start..].find(NEEDLE) {
        let at = start + pos;
        let before_ok = src[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let after_ok = src[at + NEEDLE.len()..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if before_ok && after_ok {
            return true;
        }
        start = at + NEEDLE.len();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_paths() {
        assert!(looks_like_python_path("pkg.mod:fn"));
        assert!(looks_like_python_path("my_pkg.skills:Search.run"));
        assert!(!looks_like_python_path("openai:gpt-4o"));
        assert!(!looks_like_python_path("flujo.builtins.transform"));
    }

    #[test]
    fn previous_step_output_detection() {
        assert!(mentions_previous_step_output("{{ previous_step.output }}"));
        assert!(mentions_previous_step_output("previous_step.output > 1"));
        assert!(!mentions_previous_step_output("{{ previous_step.outputs }}"));
        assert!(!mentions_previous_step_output("{{ my_previous_step.output }}"));
    }
}
