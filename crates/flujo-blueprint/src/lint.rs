//! The original project's catalogue lints that have a meaning for a YAML-only engine, under the original's
//! ids: `V-A5` (an output nobody reads), `V-P1-W` / `V-P3` (parallel branches), `V-S1` / `V-S2` / `V-S3`
//! (output schemas), `V-C1` / `V-C3` (context merges, huge literals), `V-T2` (`this` outside a map body), and
//! this project's `CTX-UNDECLARED-READ` (a template reads a context key nothing writes or declares).
//!
//! Each is a warning except `V-C1`, which here only fires when the merge fails on every run. `RULES.md` says,
//! rule by rule, where the condition differs from the original's and why.

use std::collections::HashSet;

use flujo_core::patch::split_context_path;
use flujo_core::MergeStrategy;
use serde_json::Value;

use crate::check::{collect_refs, collect_writes, context_schema_roots, writes_unknown_keys, FRAMEWORK_FIELDS};
use crate::decode::Decoder;
use crate::raw::{RawAgent, RawAgentDecl, RawBlueprint, RawKind, RawParallel, RawStep};
use crate::rules;
use crate::suggest::closest;
use crate::yaml::Loc;

/// The original's threshold for `V-C3` (characters), overridable as there with
/// `FLUJO_VALIDATE_LARGE_LITERAL_THRESHOLD`.
const LARGE_LITERAL: usize = 50_000;

pub(crate) fn lint(bp: &RawBlueprint, d: &mut Decoder<'_>, inherits_context: bool) {
    schema_rules(bp, d);
    let threshold = std::env::var("FLUJO_VALIDATE_LARGE_LITERAL_THRESHOLD")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(LARGE_LITERAL);
    let mut later_reads = HashSet::new();
    all_step_reads(&bp.steps, &mut later_reads);
    let ctx = Ctx { bp, threshold, step_reads: later_reads };
    ctx.sequence(&bp.steps, false, d);
    if !inherits_context {
        undeclared_reads(bp, d);
    }
}

struct Ctx<'a> {
    bp: &'a RawBlueprint,
    threshold: usize,
    /// Every `steps.NAME` read anywhere in the blueprint.
    step_reads: HashSet<String>,
}

impl Ctx<'_> {
    fn agent(&self, s: &RawStep) -> Option<(&str, &RawAgentDecl)> {
        let RawKind::Step { agent: Some(RawAgent::Declared(name)) } = &s.kind else { return None };
        self.bp.agents.iter().find(|(n, _)| n.v == name.v).map(|(n, a)| (n.v.as_str(), a))
    }

    fn sequence(&self, steps: &[RawStep], in_map: bool, d: &mut Decoder<'_>) {
        for pair in steps.windows(2) {
            self.unused_output(&pair[0], &pair[1], d);
            self.stringified(&pair[0], &pair[1], d);
        }
        for s in steps {
            self.step(s, in_map, d);
        }
    }

    fn step(&self, s: &RawStep, in_map: bool, d: &mut Decoder<'_>) {
        let label = format!("step `{}`", s.name.v);
        if let Some(input) = &s.input {
            self.large_literal(&label, s.name.loc, input, d);
            if !in_map && mentions_name(input, "this") {
                d.report_with(
                    rules::V_T2,
                    s.name.loc,
                    format!(
                        "the input of {label} reads `this`, which only exists inside a map body (the current item)"
                    ),
                    Some("use `previous_step` or a context key here, or move the step into a `map` body".to_owned()),
                );
            }
        }
        self.merge_type(s, &label, d);
        match &s.kind {
            RawKind::Parallel(p) => parallel_rules(&label, p, d),
            RawKind::Router { parallel, .. } => parallel_rules(&label, parallel, d),
            _ => {}
        }
        let body_in_map = in_map || matches!(s.kind, RawKind::Map { .. });
        for seq in s.child_sequences() {
            self.sequence(seq, body_in_map, d);
        }
        for c in s.single_children() {
            self.step(c, in_map, d);
        }
    }

    /// `V-A5`: `prev`'s output goes nowhere — `cur` has an input of its own that reads neither `previous_step`
    /// nor `steps.PREV`, `prev` writes nothing to the context, and no step anywhere reads `steps.PREV`.
    fn unused_output(&self, prev: &RawStep, cur: &RawStep, d: &mut Decoder<'_>) {
        let Some(input) = &cur.input else { return };
        if prev.updates_context
            || prev.sink_to.is_some()
            || matches!(prev.kind, RawKind::Invalid | RawKind::Hitl { .. })
            || mentions_name(input, "previous_step")
            || self.step_reads.contains(&prev.name.v)
            || flujo_template::compile_json(input).is_err()
        {
            return;
        }
        d.report_with(
            rules::V_A5,
            prev.name.loc,
            format!(
                "the output of step `{}` is not used by `{}` (its input reads neither `previous_step` nor `steps.{}`) nor by any other step",
                prev.name.v, cur.name.v, prev.name.v
            ),
            Some(format!(
                "read it in `{}`'s input (`{{{{ previous_step }}}}`), store it with `sink_to` / `updates_context`, or remove the step",
                cur.name.v
            )),
        );
    }

    /// `V-S2`: a structured output (an agent whose `output_schema` is an object or array) is rendered into the
    /// text of the next step's input as a whole (`"Summary: {{ previous_step }}"`), which turns it into a string.
    fn stringified(&self, prev: &RawStep, cur: &RawStep, d: &mut Decoder<'_>) {
        let Some((_, agent)) = self.agent(prev) else { return };
        let Some(schema) = &agent.output_schema else { return };
        if !matches!(schema_type(schema), Some("object" | "array")) {
            return;
        }
        let Some(Value::String(text)) = &cur.input else { return };
        let whole: [String; 3] =
            ["previous_step".to_owned(), format!("steps.{}", prev.name.v), format!("steps.{}.output", prev.name.v)];
        let mut tags = 0;
        let mut hit = false;
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let end = after.find("}}").unwrap_or(after.len());
            tags += 1;
            hit |= whole.iter().any(|w| after[..end].trim() == w);
            rest = &after[end..];
        }
        let only_tag = tags == 1 && text.trim().starts_with("{{") && text.trim().ends_with("}}");
        if hit && !only_tag {
            d.report_with(
                rules::V_S2,
                cur.name.loc,
                format!(
                    "the structured output of step `{}` is rendered into the text of `{}`'s input, which turns it into a string",
                    prev.name.v, cur.name.v
                ),
                Some("read the fields you need (`{{ previous_step.FIELD }}`), or render it as JSON with `| tojson`".to_owned()),
            );
        }
    }

    /// `V-C1`: `updates_context: true` on an agent whose output is never an object (no `output_schema`: text;
    /// or a schema of another type) and no single key or `sink_to` to put it under: every run fails the merge.
    fn merge_type(&self, s: &RawStep, label: &str, d: &mut Decoder<'_>) {
        if !s.updates_context || s.sink_to.is_some() || s.output_keys.len() == 1 {
            return;
        }
        let Some((name, agent)) = self.agent(s) else { return };
        let ty = match &agent.output_schema {
            None => "text",
            Some(schema) => match schema_type(schema) {
                Some(t) if t != "object" => t,
                _ => return,
            },
        };
        d.report_with(
            rules::V_C1,
            s.name.loc,
            format!("{label} has `updates_context: true`, but `agents.{name}` returns {ty}, which cannot be merged into the context"),
            Some("name the one key to store it under (`output_keys: [KEY]`), use `sink_to: PATH`, or give the agent an object `output_schema`".to_owned()),
        );
    }

    /// `V-C3`: a very large literal input, or a template repeating a literal into a very large string.
    fn large_literal(&self, label: &str, loc: Loc, input: &Value, d: &mut Decoder<'_>) {
        let mut strings = Vec::new();
        strings_of(input, &mut strings);
        for text in strings {
            let message = if text.len() >= self.threshold {
                format!("the input of {label} is a literal of {} characters (>= {})", text.len(), self.threshold)
            } else if let Some(est) = repeated_literal(text).filter(|e| *e >= self.threshold) {
                format!("the input of {label} builds a string of about {est} characters by repeating a literal")
            } else {
                continue;
            };
            d.report_with(
                rules::V_C3,
                loc,
                message,
                Some("keep large data out of the blueprint: read it from the context or a file".to_owned()),
            );
            return;
        }
    }
}

/// `V-S1` / `V-S3` over every agent's `output_schema`.
fn schema_rules(bp: &RawBlueprint, d: &mut Decoder<'_>) {
    for (name, agent) in &bp.agents {
        let Some(schema) = &agent.output_schema else { continue };
        let mut problems = Vec::new();
        schema_problems(schema, "output_schema", &mut problems, 0);
        for p in problems {
            d.report_with(rules::V_S1, name.loc, format!("agent `{}`: {p}", name.v), None);
        }
        if schema_type(schema) == Some("string") {
            d.report_with(
                rules::V_S3,
                name.loc,
                format!("agent `{}`: output_schema has type string; steps after it get text, not fields", name.v),
                Some("use an object schema with properties if later steps read fields of its output".to_owned()),
            );
        }
    }
}

const SCHEMA_TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array", "null"];

/// Structure problems of a JSON schema (the original's three, at every level of `properties` and `items`).
fn schema_problems(schema: &Value, at: &str, out: &mut Vec<String>, depth: usize) {
    let Some(obj) = schema.as_object() else { return };
    if depth > 32 {
        return;
    }
    let types: Vec<&Value> = match obj.get("type") {
        Some(Value::Array(ts)) => ts.iter().collect(),
        Some(t) => vec![t],
        None => Vec::new(),
    };
    for t in &types {
        match t.as_str() {
            Some(s) if SCHEMA_TYPES.contains(&s) => {}
            _ => {
                let shown = t.as_str().map_or_else(|| t.to_string(), str::to_owned);
                let hint = t
                    .as_str()
                    .and_then(|s| closest(s, SCHEMA_TYPES.iter().copied()))
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                out.push(format!("{at} has an unknown type `{shown}`{hint}"));
            }
        }
    }
    let has = |t: &str| types.iter().any(|v| v.as_str() == Some(t));
    if obj.get("required").is_some_and(Value::is_array) && !obj.get("properties").is_some_and(Value::is_object) {
        out.push(format!("{at} lists `required` but has no `properties` object"));
    }
    if let (Some(Value::Array(req)), Some(Value::Object(props))) = (obj.get("required"), obj.get("properties")) {
        for r in req.iter().filter_map(Value::as_str).filter(|r| !props.contains_key(*r)) {
            out.push(format!("{at} requires `{r}`, which is not one of its properties"));
        }
    }
    if has("array") && !obj.get("items").is_some_and(|i| i.is_object() || i.is_boolean()) {
        out.push(format!("{at} is an array type without an `items` schema"));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            schema_problems(v, &format!("{at}.properties.{k}"), out, depth + 1);
        }
    }
    if let Some(items) = obj.get("items") {
        schema_problems(items, &format!("{at}.items"), out, depth + 1);
    }
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

/// `V-P1-W` and `V-P3` for one parallel (or dynamic router).
fn parallel_rules(label: &str, p: &RawParallel, d: &mut Decoder<'_>) {
    // V-P1-W: with context_update, two or more branches merge keys nobody declared: conflicts cannot be
    // ruled out statically (declared overlaps are `PAR-CONFLICT-RISK`, the original's V-P1).
    if p.merge_strategy == MergeStrategy::ContextUpdate {
        let blind: Vec<&str> = p
            .branches
            .iter()
            .filter(|b| b.steps.iter().any(writes_unknown_anywhere))
            .map(|b| b.name.v.as_str())
            .collect();
        if blind.len() >= 2 {
            let loc = p.branches.first().map(|b| b.name.loc).unwrap_or_default();
            d.report_with(
                rules::V_P1_W,
                loc,
                format!(
                    "branches {} of parallel {label} merge context keys they do not declare (merge_strategy context_update): a conflict can only show at run time",
                    blind.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
                ),
                Some("declare what each branch writes (`output_keys`, `sink_to`), or choose merge_strategy overwrite / no_merge".to_owned()),
            );
        }
    }
    // V-P3: the first steps of the branches take literal inputs of different JSON types.
    let mut kinds: Vec<(&str, &str)> = Vec::new();
    for b in &p.branches {
        let Some(first) = b.steps.first() else { continue };
        let kind = match &first.input {
            None => "the parallel's input",
            Some(Value::String(s)) if s.contains("{{") || s.contains("{%") => "the parallel's input",
            Some(Value::String(_)) => "string",
            Some(Value::Number(_)) => "number",
            Some(Value::Bool(_)) => "boolean",
            Some(Value::Object(_)) => "object",
            Some(Value::Array(_)) => "array",
            Some(Value::Null) => "null",
        };
        kinds.push((b.name.v.as_str(), kind));
    }
    let distinct: HashSet<&str> = kinds.iter().map(|(_, k)| *k).collect();
    if distinct.len() > 1 {
        let loc = p.branches.first().map(|b| b.name.loc).unwrap_or_default();
        d.report(
            rules::V_P3,
            loc,
            format!(
                "the branches of parallel {label} start from different kinds of input ({}), though every branch receives the same input",
                kinds.iter().map(|(b, k)| format!("`{b}`: {k}")).collect::<Vec<_>>().join(", ")
            ),
        );
    }
}

fn writes_unknown_anywhere(s: &RawStep) -> bool {
    writes_unknown_keys(s)
        || s.child_sequences().into_iter().flatten().any(writes_unknown_anywhere)
        || s.single_children().into_iter().any(writes_unknown_anywhere)
}

/// `CTX-UNDECLARED-READ`: a template reads `context.KEY` where no step writes `KEY`, `context_schema` does not
/// declare it and it is not a framework field. Skipped when some step merges undeclared keys.
fn undeclared_reads(bp: &RawBlueprint, d: &mut Decoder<'_>) {
    let mut writes = Vec::new();
    let mut blind = false;
    for s in &bp.steps {
        collect_writes(s, &mut writes);
        blind |= writes_unknown_anywhere(s);
    }
    if blind {
        return;
    }
    let mut known: HashSet<String> = writes.into_iter().filter_map(|(p, _)| p.into_iter().next()).collect();
    known.extend(FRAMEWORK_FIELDS.iter().map(|f| (*f).to_owned()));
    known.extend(context_schema_roots(bp.context_schema.as_ref()));
    let mut reported = HashSet::new();
    read_walk(&bp.steps, &known, &mut reported, d);
}

fn read_walk(steps: &[RawStep], known: &HashSet<String>, reported: &mut HashSet<String>, d: &mut Decoder<'_>) {
    for s in steps {
        let mut roots = Vec::new();
        for text in step_templates(s, "context") {
            context_roots(&text, &mut roots);
        }
        for k in &s.input_keys {
            // input_keys are V-CTX1's business.
            roots.retain(|r| split_context_path(&k.v).first() != Some(r));
        }
        for root in roots {
            if known.contains(&root) || !reported.insert(root.clone()) {
                continue;
            }
            let suggestion = closest(&root, known.iter().map(String::as_str))
                .map(|c| format!("did you mean `context.{c}`?"))
                .unwrap_or_else(|| {
                    format!("declare `{root}` in `context_schema`, write it in an earlier step (`output_keys`, `sink_to`), or pass it with `flujo run --context-data`")
                });
            d.report_with(
                rules::CTX_UNDECLARED_READ,
                s.name.loc,
                format!("step `{}` reads `context.{root}`, but no step writes `{root}` and `context_schema` does not declare it", s.name.v),
                Some(suggestion),
            );
        }
        for seq in s.child_sequences() {
            read_walk(seq, known, reported, d);
        }
        for c in s.single_children() {
            read_walk(std::slice::from_ref(c), known, reported, d);
        }
    }
}

/// What a template site of a step holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SiteKind {
    /// A template (`{{ … }}` inside text).
    Template,
    /// A Jinja expression (`exit_expression`, `condition_expression`, a transition's `when`, a validator,
    /// `params.expr`).
    Expression,
    /// A context path (a map's `iterable_input` without template syntax).
    ContextPath,
}

/// A template, expression or context path a step itself holds (not its children), and in which field.
#[derive(Debug, Clone)]
pub(crate) struct TemplateSite<'a> {
    pub text: &'a str,
    pub kind: SiteKind,
    pub field: &'static str,
}

/// The template, expression and context-path strings of a step itself (not its children): the one list the
/// context rules and `flujo dev gen-context` read.
pub(crate) fn template_sites(s: &RawStep) -> Vec<TemplateSite<'_>> {
    let mut out = Vec::new();
    fn strings_in<'a>(v: &'a Value, kind: SiteKind, field: &'static str, out: &mut Vec<TemplateSite<'a>>) {
        match v {
            Value::String(text) => out.push(TemplateSite { text, kind, field }),
            Value::Array(items) => items.iter().for_each(|i| strings_in(i, kind, field, out)),
            Value::Object(m) => m.values().for_each(|i| strings_in(i, kind, field, out)),
            _ => {}
        }
    }
    if let Some(input) = &s.input {
        strings_in(input, SiteKind::Template, "input", &mut out);
    }
    // A skill's params: `expr` (transform) is an expression, other strings may be templates.
    if let RawKind::Step { agent: Some(RawAgent::Skill { params: Value::Object(m), .. }) } = &s.kind {
        for (k, v) in m {
            let kind = if k == "expr" { SiteKind::Expression } else { SiteKind::Template };
            strings_in(v, kind, "params", &mut out);
        }
    }
    let expr = |text, field| TemplateSite { text, kind: SiteKind::Expression, field };
    match &s.kind {
        RawKind::Loop { exit_expression, iteration_input, output, .. } => {
            if let Some(e) = exit_expression {
                out.push(expr(&e.v, "exit_expression"));
            }
            if let Some(v) = iteration_input {
                strings_in(v, SiteKind::Template, "iteration_input", &mut out);
            }
            if let Some(v) = output {
                strings_in(v, SiteKind::Template, "output", &mut out);
            }
        }
        RawKind::Conditional { condition_expression: Some(e), .. } => out.push(expr(e, "condition_expression")),
        RawKind::Map { iterable_input: Some(e), .. } => {
            let kind = if e.contains("{{") { SiteKind::Template } else { SiteKind::ContextPath };
            out.push(TemplateSite { text: e, kind, field: "iterable_input" });
        }
        RawKind::Hitl { message, .. } => {
            out.push(TemplateSite { text: message, kind: SiteKind::Template, field: "message" })
        }
        RawKind::StateMachine { transitions, .. } => {
            out.extend(transitions.iter().filter_map(|t| t.when.as_deref()).map(|w| expr(w, "when")));
        }
        _ => {}
    }
    out.extend(s.validators.iter().map(|v| expr(&v.expression, "validators")));
    out
}

/// The template and expression strings of a step itself (not its children) that mention `word` (the only
/// ones that can read the root `word`; the rest are not parsed at all), expressions as `{{ expr }}`.
fn step_templates(s: &RawStep, word: &str) -> Vec<String> {
    template_sites(s)
        .into_iter()
        .filter(|t| t.text.contains(word))
        .map(|t| match t.kind {
            SiteKind::Template => t.text.to_owned(),
            SiteKind::Expression | SiteKind::ContextPath => format!("{{{{ {} }}}}", t.text),
        })
        .collect()
}

/// The roots `KEY` of `context.KEY` and `context['KEY']` that the template `text` reads, from its syntax tree
/// (a template that does not parse, already reported, is scanned as text).
fn context_roots(text: &str, out: &mut Vec<String>) {
    match flujo_template::template_reads(text) {
        Ok(reads) => {
            for r in reads.into_iter().filter(|r| r.root == "context") {
                if let Some(flujo_template::PathSegment::Key(k)) = r.path.into_iter().next() {
                    out.push(k);
                }
            }
            out.sort();
            out.dedup();
        }
        Err(_) => context_roots_in_text(text, out),
    }
}

/// [`context_roots`] for a template that does not parse: the names after `context.` / `context['` in tags.
fn context_roots_in_text(text: &str, out: &mut Vec<String>) {
    collect_refs(&Value::String(text.to_owned()), "context.", out);
    // `context['KEY']`:
    for (open, close) in [("{{", "}}"), ("{%", "%}")] {
        let mut rest = text;
        while let Some(start) = rest.find(open) {
            let after = &rest[start + 2..];
            let end = after.find(close).unwrap_or(after.len());
            let code = &after[..end];
            let mut from = 0;
            while let Some(pos) = code[from..].find("context[") {
                let at = from + pos + "context[".len();
                from = at;
                let tail = code[at..].trim_start();
                let Some(q) = tail.chars().next().filter(|c| *c == '\'' || *c == '"') else { continue };
                if let Some(close_q) = tail[1..].find(q) {
                    out.push(tail[1..1 + close_q].to_owned());
                }
            }
            rest = &after[end..];
        }
    }
    out.sort();
    out.dedup();
}

/// Every `NAME` of `steps.NAME` / `steps['NAME']` read anywhere (inputs and expressions, nested steps too).
fn all_step_reads(steps: &[RawStep], out: &mut HashSet<String>) {
    for s in steps {
        for text in step_templates(s, "steps") {
            let value = Value::String(text.clone());
            let mut names = Vec::new();
            collect_refs(&value, "steps.", &mut names);
            out.extend(names);
            for q in ["steps['", "steps[\""] {
                let mut rest = text.as_str();
                while let Some(pos) = rest.find(q) {
                    rest = &rest[pos + q.len()..];
                    let name: String = rest.chars().take_while(|c| *c != '\'' && *c != '"').collect();
                    out.insert(name);
                }
            }
        }
        for seq in s.child_sequences() {
            all_step_reads(seq, out);
        }
        for c in s.single_children() {
            all_step_reads(std::slice::from_ref(c), out);
        }
    }
}

/// True when `name` is read as a top-level name inside a tag of some string of `v`.
fn mentions_name(v: &Value, name: &str) -> bool {
    let mut strings = Vec::new();
    strings_of(v, &mut strings);
    strings.iter().any(|text| {
        let mut found = false;
        for (open, close) in [("{{", "}}"), ("{%", "%}")] {
            let mut rest = *text;
            while let Some(start) = rest.find(open) {
                let after = &rest[start + 2..];
                let end = after.find(close).unwrap_or(after.len());
                found |= has_word(&after[..end], name);
                rest = &after[end..];
            }
        }
        found
    })
}

/// `word` occurs in `code` as a whole identifier that is not an attribute (`x.word`).
fn has_word(code: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = code[from..].find(word) {
        let at = from + pos;
        from = at + word.len();
        let before = code[..at].chars().next_back();
        let after = code[from..].chars().next();
        if !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident) {
            return true;
        }
    }
    false
}

pub(crate) fn strings_of<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| strings_of(i, out)),
        Value::Object(m) => m.values().for_each(|i| strings_of(i, out)),
        _ => {}
    }
}

/// The size of the largest `'literal' * N` (or `N * 'literal'`) inside the tags of `text`.
fn repeated_literal(text: &str) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        let code = &after[..end];
        let chars: Vec<char> = code.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let q = chars[i];
            if q != '\'' && q != '"' {
                i += 1;
                continue;
            }
            let Some(len) = chars[i + 1..].iter().position(|c| *c == q) else { break };
            let close = i + 1 + len;
            // `'lit' * N`
            let tail: String = chars[close + 1..].iter().collect();
            let tail = tail.trim_start();
            let mut count = None;
            if let Some(t) = tail.strip_prefix('*') {
                count =
                    t.trim_start().chars().take_while(char::is_ascii_digit).collect::<String>().parse::<usize>().ok();
            }
            // `N * 'lit'`
            if count.is_none() {
                let head: String = chars[..i].iter().collect();
                if let Some(h) = head.trim_end().strip_suffix('*') {
                    let digits: String = h
                        .trim_end()
                        .chars()
                        .rev()
                        .take_while(char::is_ascii_digit)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    count = digits.parse::<usize>().ok();
                }
            }
            if let Some(n) = count {
                let est = len.saturating_mul(n);
                best = Some(best.map_or(est, |b| b.max(est)));
            }
            i = close + 1;
        }
        rest = &after[end..];
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_literals() {
        assert_eq!(repeated_literal("{{ 'x' * 60000 }}"), Some(60000));
        assert_eq!(repeated_literal("{{ 3 * 'ab' }}"), Some(6));
        assert_eq!(repeated_literal("{{ 'x' }} * 5"), None);
        assert_eq!(repeated_literal("{{ 'it''s' }}"), None);
    }

    #[test]
    fn words() {
        assert!(has_word("previous_step.x", "previous_step"));
        assert!(!has_word("my_previous_step", "previous_step"));
        assert!(!has_word("x.this", "this"));
        assert!(has_word("this | upper", "this"));
        assert!(!has_word("thistle", "this"));
    }

    #[test]
    fn context_roots_in_tags() {
        let mut out = Vec::new();
        context_roots(
            "{{ context.user.name }} {{ context['plan'] }} context.outside {% if context.flag %}{% endif %}",
            &mut out,
        );
        assert_eq!(out, vec!["flag", "plan", "user"]);
    }

    #[test]
    fn schema_structure() {
        let mut out = Vec::new();
        let schema = serde_json::json!({"type": "object", "required": ["a", "b"], "properties": {
            "a": {"type": "array"}, "c": {"type": "strng"}}});
        schema_problems(&schema, "output_schema", &mut out, 0);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out.iter().any(|p| p.contains("requires `b`")));
        assert!(out.iter().any(|p| p.contains("properties.a is an array")));
        assert!(out.iter().any(|p| p.contains("unknown type `strng` (did you mean `string`?)")));
    }
}
