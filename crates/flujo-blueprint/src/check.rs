//! Semantic checks over the raw blueprint: rules that need more than one value at a time.
//!
//! Sibling names (`BP-DUP-NAME`), sibling fallbacks (`BP-FALLBACK-MISSING`, `BP-FALLBACK-CYCLE`), context data
//! flow (`V-CTX1`, `V-CTX2`, `CTX-OUTPUT-KEYS`, `CTX-READONLY`), loops whose exit can never change
//! (`LOOP-NO-EXIT`), state machine graphs (`SM-UNKNOWN-STATE`, `SM-UNREACHABLE`, `SM-NO-END`) and parallel
//! branches that race for the same context key (`PAR-CONFLICT-RISK`).
//!
//! `HITL-NESTED-001` is defined but never emitted: because resume is replay (SPEC §2), a `hitl` step
//! resumes correctly at any depth — inside loops, conditionals, maps, parallel branches, state machines,
//! imports and cache-wrapped steps alike — so there is no construct today that must be rejected.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use flujo_core::patch::split_context_path;
use flujo_core::MergeStrategy;
use serde_json::Value;

use crate::decode::Decoder;
use crate::raw::{RawAgent, RawBlueprint, RawFallback, RawKind, RawParallel, RawStep, Sp};
use crate::rules;
use crate::suggest::closest;
use crate::yaml::Loc;

/// Context fields the framework owns; steps may read them but not write them.
pub const READ_ONLY_FIELDS: &[&str] = &["run_id", "initial_prompt", "steps", "hitl_history", "status"];
/// Context fields that always exist.
pub(crate) const FRAMEWORK_FIELDS: &[&str] =
    &["run_id", "initial_prompt", "steps", "hitl_history", "import_artifacts", "status"];

/// Names a loop's exit expression must read (one of them) to be able to change between iterations.
const DYNAMIC_NAMES: &[&str] =
    &["previous_step", "context", "steps", "initial_prompt", "resume_input", "this", "output"];

/// Runs every semantic rule. `inherits_context`: the blueprint is imported with `inherit_context: true`, so
/// its context comes from the importing pipeline and the data-flow rules (`V-CTX1/2`) cannot judge it.
pub(crate) fn check(bp: &RawBlueprint, d: &mut Decoder<'_>, inherits_context: bool) {
    sequence_rules(&bp.steps, d);
    step_references(&bp.steps, &mut Vec::new(), d);
    previous_fields(bp, &bp.steps, d);
    let mut flow = Flow::new(bp.context_schema.as_ref());
    flow.wildcard = inherits_context;
    flow.sequence(&bp.steps, d);
    crate::lint::lint(bp, d, inherits_context);
}

/// The top-level property names of a `context_schema`.
pub(crate) fn context_schema_roots(schema: Option<&Value>) -> Vec<String> {
    schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// V-T4: references to steps that have not run
// ---------------------------------------------------------------------------------------------------------

/// `V-T4` (the original's rule): a step's `input` reads `steps.NAME` (or `context.steps.NAME`) where no step
/// of that name is declared before it, in document order (nested steps included; `seen` collects the names).
fn step_references(steps: &[RawStep], seen: &mut Vec<String>, d: &mut Decoder<'_>) {
    for s in steps {
        if let Some(input) = &s.input {
            let mut refs = Vec::new();
            collect_refs(input, "steps.", &mut refs);
            refs.sort();
            refs.dedup();
            for r in refs {
                if !seen.contains(&r) {
                    let suggestion = closest(&r, seen.iter().map(String::as_str))
                        .map(|c| format!("did you mean `steps.{c}`?"))
                        .or_else(|| Some("a step's output is in `steps` once that step has run".to_owned()));
                    d.report_with(
                        rules::V_T4,
                        s.name.loc,
                        format!("step `{}` reads `steps.{r}`, but no step `{r}` is declared before it", s.name.v),
                        suggestion,
                    );
                }
            }
        }
        for seq in s.child_sequences() {
            step_references(seq, seen, d);
        }
        for child in s.single_children() {
            step_references(std::slice::from_ref(child), seen, d);
        }
        seen.push(s.name.v.clone());
    }
}

/// `V-T5` (the original's rule): a step's `input` reads `previous_step.FIELD` where the previous step is an
/// agent whose `output_schema` is an object listing its `properties` (and not `additionalProperties: true`)
/// without FIELD.
fn previous_fields(bp: &RawBlueprint, steps: &[RawStep], d: &mut Decoder<'_>) {
    for pair in steps.windows(2) {
        let (prev, cur) = (&pair[0], &pair[1]);
        let RawKind::Step { agent: Some(crate::raw::RawAgent::Declared(name)) } = &prev.kind else { continue };
        let Some(schema) = bp.agents.iter().find(|(n, _)| n.v == name.v).and_then(|(_, a)| a.output_schema.as_ref())
        else {
            continue;
        };
        let Some(props) = schema.get("properties").and_then(Value::as_object) else { continue };
        if schema.get("additionalProperties").is_some_and(|a| a != &Value::Bool(false)) {
            continue;
        }
        let Some(input) = &cur.input else { continue };
        let mut refs = Vec::new();
        collect_refs(input, "previous_step.", &mut refs);
        refs.sort();
        refs.dedup();
        for field in refs.into_iter().filter(|f| f != "output" && !props.contains_key(f)) {
            let suggestion = closest(&field, props.keys().map(String::as_str))
                .map(|c| format!("did you mean `previous_step.{c}`?"))
                .or_else(|| {
                    Some(format!("its output_schema has: {}", props.keys().cloned().collect::<Vec<_>>().join(", ")))
                });
            d.report_with(
                rules::V_T5,
                cur.name.loc,
                format!(
                    "step `{}` reads `previous_step.{field}`, but the output_schema of `agents.{}` (step `{}`) has no property `{field}`",
                    cur.name.v, name.v, prev.name.v
                ),
                suggestion,
            );
        }
    }
    for s in steps {
        for seq in s.child_sequences() {
            previous_fields(bp, seq, d);
        }
    }
}

/// The `NAME`s of `PREFIXNAME` (e.g. `steps.NAME`) inside the `{{ … }}` and `{% … %}` tags of every string in
/// `v`.
pub(crate) fn collect_refs(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::String(text) => {
            for (open, close) in [("{{", "}}"), ("{%", "%}")] {
                let mut rest = text.as_str();
                while let Some(start) = rest.find(open) {
                    let after = &rest[start + 2..];
                    let end = after.find(close).unwrap_or(after.len());
                    refs_in(&after[..end], prefix, out);
                    rest = &after[end..];
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, prefix, out)),
        Value::Object(m) => m.values().for_each(|i| collect_refs(i, prefix, out)),
        _ => {}
    }
}

fn refs_in(code: &str, prefix: &str, out: &mut Vec<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = code[from..].find(prefix) {
        let at = from + pos;
        from = at + prefix.len();
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue; // `my_steps.x`
        }
        let name: String = code[from..].chars().take_while(|c| is_ident(*c)).collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Per-sequence and per-step structural rules
// ---------------------------------------------------------------------------------------------------------

fn sequence_rules(steps: &[RawStep], d: &mut Decoder<'_>) {
    let mut seen: HashMap<&str, Loc> = HashMap::new();
    for s in steps {
        if s.name.v.is_empty() {
            continue;
        }
        if let Some(first) = seen.get(s.name.v.as_str()) {
            d.report_with(
                rules::BP_DUP_NAME,
                s.name.loc,
                format!("step name `{}` is already used by a sibling step (line {})", s.name.v, first.line),
                Some("sibling steps need unique names: `steps.NAME` and fallbacks refer to them".to_owned()),
            );
        } else {
            seen.insert(&s.name.v, s.name.loc);
        }
    }
    fallback_rules(steps, d);
    for s in steps {
        step_rules(s, d);
    }
}

fn sibling_target(s: &RawStep) -> Option<&Sp<String>> {
    match &s.fallback {
        Some(RawFallback::Sibling(n)) => Some(n),
        _ => None,
    }
}

fn fallback_rules(steps: &[RawStep], d: &mut Decoder<'_>) {
    let target = sibling_target;
    let names: Vec<&str> = steps.iter().map(|s| s.name.v.as_str()).collect();
    let name_set: HashSet<&str> = names.iter().copied().collect();
    for s in steps {
        let Some(fb) = target(s) else { continue };
        if !name_set.contains(fb.v.as_str()) {
            let suggestion = closest(&fb.v, names.iter().copied()).map(|c| format!("did you mean `{c}`?"));
            d.report_with(
                rules::BP_FALLBACK_MISSING,
                fb.loc,
                format!("fallback of step `{}` names `{}`, which is not a sibling step", s.name.v, fb.v),
                suggestion,
            );
        }
    }
    // Cycles among sibling fallbacks: follow each chain.
    let by_name: HashMap<&str, &RawStep> = steps.iter().map(|s| (s.name.v.as_str(), s)).collect();
    let mut reported: HashSet<Vec<&str>> = HashSet::new();
    for s in steps {
        let mut chain: Vec<&str> = vec![s.name.v.as_str()];
        let mut cur = s;
        while let Some(fb) = target(cur) {
            let Some(next) = by_name.get(fb.v.as_str()) else { break };
            if let Some(pos) = chain.iter().position(|n| *n == fb.v) {
                let mut members = chain[pos..].to_vec();
                members.sort_unstable();
                if reported.insert(members) {
                    let cycle: Vec<&str> = chain[pos..].iter().copied().chain([fb.v.as_str()]).collect();
                    d.report(
                        rules::BP_FALLBACK_CYCLE,
                        fb.loc,
                        format!("fallbacks form a cycle: {}", cycle.join(" → ")),
                    );
                }
                break;
            }
            chain.push(&next.name.v);
            cur = next;
        }
    }
}

/// `max_loops` from which `V-CF1` warns (the original's threshold).
const V_CF1_MAX_LOOPS: u32 = 1_000;

fn step_rules(s: &RawStep, d: &mut Decoder<'_>) {
    let label = format!("step `{}`", s.name.v);
    if s.updates_context && !declares_writes(s) {
        d.report_with(
            rules::CTX_OUTPUT_KEYS,
            s.name.loc,
            format!("{label} has `updates_context: true` but no `output_keys` or `sink_to`: every key of its output is merged into the context"),
            Some("list the keys it writes in `output_keys: [...]`, or use `sink_to: PATH`".to_owned()),
        );
    }
    let mut writes: Vec<&Sp<String>> = s.sink_to.iter().collect();
    if s.updates_context {
        writes.extend(&s.output_keys);
    }
    for w in writes {
        if let Some(root) = split_context_path(&w.v).first() {
            if READ_ONLY_FIELDS.contains(&root.as_str()) {
                d.report(
                    rules::CTX_READONLY,
                    w.loc,
                    format!(
                        "{label} writes `{}`, but `{root}` is a framework field of the context and cannot be written",
                        w.v
                    ),
                );
            }
        }
    }
    // V-CF1 (the original's rule): a loop allowed 1,000 iterations or more.
    if let RawKind::Loop { max_loops, .. } = &s.kind {
        if *max_loops >= V_CF1_MAX_LOOPS {
            d.report_with(
                rules::V_CF1,
                s.name.loc,
                format!("loop {label} declares max_loops={max_loops}; a loop that never meets its exit runs that many times"),
                Some(format!("keep max_loops under {V_CF1_MAX_LOOPS} unless the loop really needs them")),
            );
        }
    }
    match &s.kind {
        RawKind::Loop { exit_expression: Some(e), max_loops, .. }
            if !reads_dynamic_name(&e.v) && !constant_truthy(&e.v) =>
        {
            // A constant true exit (`"true"`, `"1 == 1"`) exits after the first iteration: that is an exit.
            d.report_with(
                rules::LOOP_NO_EXIT,
                e.loc,
                format!(
                    "the exit_expression `{}` of loop {label} reads nothing the loop changes and is never true, so \
                     the loop always runs max_loops ({max_loops}) times",
                    e.v
                ),
                Some("test the iteration's output (`previous_step`) or the context (`context.KEY`)".to_owned()),
            );
        }
        RawKind::StateMachine { states, start_state, end_states, transitions, .. } if !states.is_empty() => {
            state_machine_rules(&label, states, start_state.as_ref(), end_states, transitions, d);
        }
        RawKind::Parallel(p) if p.merge_strategy == MergeStrategy::ContextUpdate => parallel_conflicts(&label, p, d),
        RawKind::Router { parallel, .. } if parallel.merge_strategy == MergeStrategy::ContextUpdate => {
            parallel_conflicts(&label, parallel, d)
        }
        _ => {}
    }
    for seq in s.child_sequences() {
        sequence_rules(seq, d);
    }
    for child in s.single_children() {
        step_rules(child, d);
    }
}

/// True when a constant expression (one that reads no name the loop can change) evaluates to a true value.
fn constant_truthy(src: &str) -> bool {
    let Ok(expr) = flujo_template::compile_expression(src) else { return false };
    let input = Value::Null;
    expr.eval_bool(&flujo_template::Scope::new(&input), flujo_template::UndefinedMode::Lenient).unwrap_or(false)
}

/// True when an expression reads one of [`DYNAMIC_NAMES`] as a top-level name (outside string literals and
/// not as an attribute).
fn reads_dynamic_name(src: &str) -> bool {
    let mut chars = src.char_indices().peekable();
    let mut prev_sig: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        if c == '"' || c == '\'' {
            // Skip the string literal.
            let mut escaped = false;
            for (_, n) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if n == '\\' {
                    escaped = true;
                } else if n == c {
                    break;
                }
            }
            prev_sig = Some(c);
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, n)) = chars.peek() {
                if n.is_alphanumeric() || n == '_' {
                    end = j + n.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &src[i..end];
            if prev_sig != Some('.') && DYNAMIC_NAMES.contains(&word) {
                return true;
            }
            prev_sig = Some('a');
            continue;
        }
        if !c.is_whitespace() {
            prev_sig = Some(c);
        }
    }
    false
}

fn state_machine_rules(
    label: &str,
    states: &[crate::raw::RawBranch],
    start: Option<&Sp<String>>,
    end_states: &[Sp<String>],
    transitions: &[crate::raw::RawTransition],
    d: &mut Decoder<'_>,
) {
    // An end state need not be declared under `states` (as in the original): it is a state without steps.
    let mut names: Vec<&str> = states.iter().map(|b| b.name.v.as_str()).collect();
    for e in end_states {
        if !names.contains(&e.v.as_str()) {
            names.push(&e.v);
        }
    }
    let unknown = |name: &Sp<String>, role: &str, d: &mut Decoder<'_>| {
        if !names.contains(&name.v.as_str()) {
            let suggestion = closest(&name.v, names.iter().copied())
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| Some(format!("declared states: {}", names.join(", "))));
            d.report_with(
                rules::SM_UNKNOWN_STATE,
                name.loc,
                format!("{role} `{}` of state machine {label} is not a declared state", name.v),
                suggestion,
            );
            true
        } else {
            false
        }
    };
    let start_ok = match start {
        Some(s) => !unknown(s, "start_state", d),
        None => false,
    };
    for t in transitions {
        if t.from.v != "*" {
            unknown(&t.from, "transition source", d);
        }
        unknown(&t.to, "transition target", d);
    }
    if end_states.is_empty() {
        d.report_with(
            rules::SM_NO_END,
            start.map_or(states[0].name.loc, |s| s.loc),
            format!("state machine {label} has no `end_states`, so it can never finish successfully"),
            Some("add `end_states: [STATE]`".to_owned()),
        );
    }
    // An end state only named in `end_states` that nothing leads to is likely a typo of a declared state.
    let declared: Vec<&str> = states.iter().map(|b| b.name.v.as_str()).collect();
    for e in end_states {
        let targeted = transitions.iter().any(|t| t.to.v == e.v) || start.is_some_and(|s| s.v == e.v);
        if !declared.contains(&e.v.as_str()) && !targeted {
            let suggestion = closest(&e.v, declared.iter().copied())
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| Some(format!("declared states: {}", declared.join(", "))));
            d.report_with(
                rules::SM_UNREACHABLE,
                e.loc,
                format!(
                    "end state `{}` of state machine {label} is not declared under `states` and no transition leads to it",
                    e.v
                ),
                suggestion,
            );
        }
    }
    let (Some(start), true) = (start, start_ok) else { return };
    // Reachability from the start state over every transition (any `on`, any `when`).
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut queue: VecDeque<&str> = VecDeque::from([start.v.as_str()]);
    while let Some(s) = queue.pop_front() {
        if !reached.insert(s) {
            continue;
        }
        if end_states.iter().any(|e| e.v == s) {
            continue; // the machine stops at an end state
        }
        for t in transitions {
            if (t.from.v == s || t.from.v == "*")
                && names.contains(&t.to.v.as_str())
                && !reached.contains(t.to.v.as_str())
            {
                queue.push_back(&t.to.v);
            }
        }
    }
    for b in states {
        if !reached.contains(b.name.v.as_str()) {
            d.report(
                rules::SM_UNREACHABLE,
                b.name.loc,
                format!(
                    "state `{}` of state machine {label} cannot be reached from start_state `{}`",
                    b.name.v, start.v
                ),
            );
        }
    }
    if !end_states.is_empty() && !end_states.iter().any(|e| reached.contains(e.v.as_str())) {
        let ends: Vec<&str> = end_states.iter().map(|e| e.v.as_str()).collect();
        d.report(
            rules::SM_NO_END,
            start.loc,
            format!(
                "no end state ({}) of state machine {label} can be reached from start_state `{}`",
                ends.join(", "),
                start.v
            ),
        );
    }
}

/// A context path a step writes, and where.
type Write = (Vec<String>, Loc);

fn parallel_conflicts(label: &str, p: &RawParallel, d: &mut Decoder<'_>) {
    // What earlier branches wrote: exact paths, and every prefix of them ("something at or below").
    let mut exact: HashMap<Vec<String>, usize> = HashMap::new();
    let mut below: HashMap<Vec<String>, usize> = HashMap::new();
    let mut reported: HashSet<Vec<String>> = HashSet::new();
    let mut from_imports = HashSet::new();
    p.branches.iter().flat_map(|b| &b.steps).for_each(|s| import_writes(s, &mut from_imports));
    for (j, branch) in p.branches.iter().enumerate() {
        let mut writes = Vec::new();
        for s in &branch.steps {
            collect_writes(s, &mut writes);
        }
        for (path, loc) in &writes {
            // An earlier branch wrote this path or a prefix of it (`a` vs `a.b`), or something below it.
            let hit = (1..=path.len())
                .find_map(|n| exact.get(&path[..n]).map(|&i| (i, path[..n].to_vec())))
                .or_else(|| below.get(path.as_slice()).map(|&i| (i, path.clone())));
            let Some((i, key)) = hit else { continue };
            if reported.insert(key.clone()) {
                let first = &p.branches[i].name.v;
                // Import outputs on both sides: the original's V-P2 rather than V-P1.
                let both_imports = from_imports.contains(path) && from_imports.iter().any(|w| w.starts_with(&key));
                let before = d.diags.len();
                d.report_with(
                    rules::PAR_CONFLICT_RISK,
                    *loc,
                    format!(
                        "branches `{first}` and `{}` of parallel {label} both write context key `{}`; with \
                         merge_strategy context_update conflicting writes fail the step",
                        branch.name.v,
                        key.join(".")
                    ),
                    Some(
                        "write distinct keys per branch, or choose merge_strategy overwrite / keep_first / no_merge"
                            .to_owned(),
                    ),
                );
                if both_imports && d.diags.len() > before {
                    if let Some(last) = d.diags.last_mut() {
                        "V-P2".clone_into(&mut last.rule_id);
                    }
                }
            }
        }
        for (path, _) in writes {
            for n in 1..=path.len() {
                below.entry(path[..n].to_vec()).or_insert(j);
            }
            exact.entry(path).or_insert(j);
        }
    }
}

/// The context paths a step (and everything inside it) writes.
pub(crate) fn collect_writes(s: &RawStep, out: &mut Vec<Write>) {
    for (path, loc) in own_writes(s) {
        out.push((path, loc));
    }
    for seq in s.child_sequences() {
        for c in seq {
            collect_writes(c, out);
        }
    }
    for c in s.single_children() {
        collect_writes(c, out);
    }
}

/// How a step writes a context path (see [`step_writes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteSource {
    /// `sink_to: PATH` (a `hitl` step's too).
    SinkTo,
    /// One of `output_keys` (meaningful with `updates_context: true`).
    OutputKey,
    /// `flujo.builtins.context_set` with `params.path`.
    ContextSet,
    /// `flujo.builtins.context_merge` with `params.path`: keys of the input are written below it.
    ContextMerge,
    /// An import's `outputs: [{child, parent}]` (the `parent` path).
    ImportOutput,
}

/// One context path a step itself declares it writes.
#[derive(Debug, Clone)]
pub(crate) struct StepWrite {
    pub path: Vec<String>,
    pub loc: Loc,
    pub source: WriteSource,
    /// The path as written.
    pub written: String,
}

/// The context paths a step itself declares it writes (not its children's), with how: the one list the data
/// flow rules and `flujo dev gen-context` read.
pub(crate) fn step_writes(s: &RawStep) -> Vec<StepWrite> {
    let mut out = Vec::new();
    let mut push = |written: &str, loc: Loc, source: WriteSource| {
        out.push(StepWrite { path: split_context_path(written), loc, source, written: written.to_owned() });
    };
    if let Some(sink) = &s.sink_to {
        push(&sink.v, sink.loc, WriteSource::SinkTo);
    }
    for k in &s.output_keys {
        push(&k.v, k.loc, WriteSource::OutputKey);
    }
    if let RawKind::Step { agent: Some(RawAgent::Skill { id, params }) } = &s.kind {
        if let Some(path) = context_skill_path(&id.v, params) {
            let short = id.v.strip_prefix("flujo.builtins.").unwrap_or(&id.v);
            let source = if short == "context_set" { WriteSource::ContextSet } else { WriteSource::ContextMerge };
            push(path, id.loc, source);
        }
    }
    if let RawKind::Import { outputs, alias, .. } = &s.kind {
        for o in outputs {
            push(&o.parent, alias.loc, WriteSource::ImportOutput);
        }
    }
    out.retain(|w| !w.path.is_empty());
    out
}

/// The context paths a step itself writes (not its children).
fn own_writes(s: &RawStep) -> Vec<Write> {
    step_writes(s).into_iter().map(|w| (w.path, w.loc)).collect()
}

/// The `path` param of the built-in context-writing skills.
pub(crate) fn context_skill_path<'v>(id: &str, params: &'v Value) -> Option<&'v str> {
    let short = id.strip_prefix("flujo.builtins.").unwrap_or(id);
    matches!(short, "context_set" | "context_merge").then(|| params.get("path").and_then(Value::as_str)).flatten()
}

/// True when the step says which context keys it writes: `output_keys`, `sink_to`, or an import's `outputs`.
fn declares_writes(s: &RawStep) -> bool {
    !s.output_keys.is_empty()
        || s.sink_to.is_some()
        || matches!(&s.kind, RawKind::Import { outputs, .. } if !outputs.is_empty())
}

/// The context paths the import steps inside `s` (itself included) map their outputs to.
fn import_writes(s: &RawStep, out: &mut HashSet<Vec<String>>) {
    if let RawKind::Import { outputs, .. } = &s.kind {
        out.extend(outputs.iter().map(|o| split_context_path(&o.parent)));
    }
    s.child_sequences().into_iter().flatten().chain(s.single_children()).for_each(|c| import_writes(c, out));
}

/// True when the step merges keys nobody declared (`updates_context` without keys, `context_merge` without a
/// path): after it, any key may exist.
pub(crate) fn writes_unknown_keys(s: &RawStep) -> bool {
    if s.updates_context && !declares_writes(s) {
        return true;
    }
    matches!(&s.kind, RawKind::Step { agent: Some(RawAgent::Skill { id, params }) }
        if id.v.strip_prefix("flujo.builtins.").unwrap_or(&id.v) == "context_merge" && params.get("path").is_none())
}

// ---------------------------------------------------------------------------------------------------------
// Context data flow (V-CTX1 / V-CTX2)
// ---------------------------------------------------------------------------------------------------------

struct Flow {
    /// Every prefix of every path known to exist (framework fields, schema properties, upstream writes):
    /// a read of `a.b` is fully known when `a.b` is in here.
    prefixes: HashSet<Vec<String>>,
    /// Set once an upstream step may write keys nobody declared.
    wildcard: bool,
}

impl Flow {
    fn new(schema: Option<&Value>) -> Self {
        let mut flow = Flow { prefixes: HashSet::new(), wildcard: false };
        for f in FRAMEWORK_FIELDS {
            flow.add(vec![(*f).to_owned()]);
        }
        if let Some(schema) = schema {
            let mut paths = Vec::new();
            schema_paths(schema, &mut Vec::new(), &mut paths, 0);
            paths.into_iter().for_each(|p| flow.add(p));
        }
        flow
    }

    fn add(&mut self, path: Vec<String>) {
        for n in 1..=path.len() {
            self.prefixes.insert(path[..n].to_vec());
        }
    }

    fn sequence(&mut self, steps: &[RawStep], d: &mut Decoder<'_>) {
        for s in steps {
            self.step(s, d);
        }
    }

    fn step(&mut self, s: &RawStep, d: &mut Decoder<'_>) {
        for key in &s.input_keys {
            self.check_key(&s.name.v, key, d);
        }
        // Loops and state machines repeat: everything written inside is visible inside.
        if matches!(s.kind, RawKind::Loop { .. } | RawKind::StateMachine { .. }) {
            let mut writes = Vec::new();
            collect_writes(s, &mut writes);
            writes.into_iter().for_each(|(p, _)| self.add(p));
        }
        for seq in s.child_sequences() {
            self.sequence(seq, d);
        }
        for c in s.single_children() {
            self.step(c, d);
        }
        own_writes(s).into_iter().for_each(|(p, _)| self.add(p));
        if writes_unknown_keys(s) {
            self.wildcard = true;
        }
    }

    fn check_key(&self, step: &str, key: &Sp<String>, d: &mut Decoder<'_>) {
        let path = split_context_path(&key.v);
        let Some(root) = path.first() else {
            d.report(rules::BP_TYPE, key.loc, format!("input key `{}` of step `{step}` is not a context path", key.v));
            return;
        };
        if self.wildcard || self.prefixes.contains(&path) {
            return;
        }
        if self.prefixes.contains(&path[..1]) {
            // Below a framework field (`steps.NAME`, `import_artifacts.X`) the shape is the run's business.
            if FRAMEWORK_FIELDS.contains(&root.as_str()) {
                return;
            }
            d.report(
                rules::V_CTX2,
                key.loc,
                format!("input key `{}` of step `{step}`: only `{root}` is known to be produced upstream, not the full path", key.v),
            );
        } else {
            let roots: BTreeSet<&str> = self.prefixes.iter().filter(|p| p.len() == 1).map(|p| p[0].as_str()).collect();
            let suggestion =
                closest(root, roots.iter().copied()).map(|c| format!("did you mean `{c}`?")).or_else(|| {
                    Some("produce it upstream (output_keys / sink_to) or declare it in `context_schema`".to_owned())
                });
            d.report_with(
                rules::V_CTX1,
                key.loc,
                format!("input key `{}` of step `{step}`: `{root}` is never produced upstream", key.v),
                suggestion,
            );
        }
    }
}

/// Collects property paths of an object schema (`properties`, recursively, bounded depth).
pub(crate) fn schema_paths(schema: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>, depth: usize) {
    if depth > 16 {
        return;
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
    for (name, sub) in props {
        prefix.push(name.clone());
        out.push(prefix.clone());
        schema_paths(sub, prefix, out, depth + 1);
        prefix.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_names() {
        assert!(reads_dynamic_name("previous_step >= 3"));
        assert!(reads_dynamic_name("context.done"));
        assert!(reads_dynamic_name("steps.x | length > 2"));
        assert!(!reads_dynamic_name("false"));
        assert!(!reads_dynamic_name("1 > 2"));
        assert!(!reads_dynamic_name("'previous_step' == 'x'"));
        assert!(!reads_dynamic_name("x.previous_step"));
    }
}
