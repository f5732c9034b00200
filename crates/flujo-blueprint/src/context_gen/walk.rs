//! The walk over a blueprint's steps: what each step reads (its template sites, input keys, its agent's
//! system prompt) and writes (its declared writes, typed from its input and output), through loops, maps
//! (`this`), conditional branches (fields written by every branch), parallels, state machines, fallbacks and
//! imports.

use std::collections::HashSet;
use std::path::Path;

use flujo_core::patch::split_context_path;
use flujo_core::{MergeStrategy, OnBranchFailure, OnImportFailure};
use flujo_template::{dotted, PathSegment, ReadUse, VarRead};
use serde_json::{json, Map, Value};

use super::types::{self, Ty};
use super::{canonical, decode, is_framework, keys, Analysis, Field, FieldSite, FileCtx, Scope};
use crate::check::{step_writes, WriteSource};
use crate::lint::{template_sites, SiteKind, TemplateSite};
use crate::load::{read_limited, LoadOptions};
use crate::raw::{RawAgent, RawBlueprint, RawFallback, RawKind, RawPrompt, RawStep};
use crate::yaml::{self, Loc, Node};

impl<'o> Analysis<'o> {
    pub(super) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Writes and reads
    // -----------------------------------------------------------------------------------------------------

    /// Records a write; `certain`: the step always writes it when it succeeds (a key an output schema
    /// requires, a `sink_to`, …).
    fn write(&mut self, path: Vec<PathSegment>, site: FieldSite, ty: Ty, scope: &Scope, certain: bool) {
        if path.is_empty() || is_framework(&path) {
            return;
        }
        let node = self.root.at(&path);
        node.writes.push((site, ty));
        if certain && scope.always {
            node.always = true;
        }
        if certain && scope.certain {
            if let Some(frame) = self.frames.last_mut() {
                frame.insert(path);
            }
        }
    }

    /// Records that a step writes keys nobody declared below `base`.
    fn open_write(&mut self, base: Vec<PathSegment>, site: FieldSite) {
        let at = if base.is_empty() { "the context".to_owned() } else { format!("`{}`", dotted(&base)) };
        self.note(format!(
            "step `{}` ({}:{}) writes keys of its output that it does not name into {at}: they cannot be listed",
            site.step, site.line, site.column
        ));
        self.open.push((base, site));
    }

    fn read(&mut self, path: Vec<PathSegment>, site: FieldSite, usage: ReadUse) {
        if path.is_empty() || path.first() == Some(&PathSegment::Item) {
            self.whole_reads.push(site);
            return;
        }
        if is_framework(&path) {
            return;
        }
        self.root.at(&path).reads.push((site, usage));
    }

    /// The type written at a context path, when it is known.
    fn known_type(&self, path: &[PathSegment]) -> Ty {
        for n in (1..=path.len()).rev() {
            if let Some(Some(ty)) = self.root.get(&path[..n]).and_then(Field::written) {
                return descend(&ty, &path[n..]);
            }
        }
        None
    }

    /// The reads of one template site of step `s`.
    fn site_reads(&mut self, f: &FileCtx<'_>, s: &RawStep, site: &TemplateSite, scope: &Scope) {
        let name = &s.name.v;
        let reads = match site.kind {
            SiteKind::ContextPath => {
                let loc = f.loc.scalar_in_step(s, site.text).unwrap_or(s.name.loc);
                self.read(keys(&split_context_path(site.text)), f.site(loc, name, site.field), ReadUse::Iterated);
                return;
            }
            SiteKind::Template => flujo_template::template_reads(site.text),
            SiteKind::Expression => flujo_template::expression_reads(site.text),
        };
        // A template that does not parse was reported by validation.
        let Ok(reads) = reads else { return };
        let scalar = f.loc.scalar_in_step(s, site.text);
        for r in reads {
            let Some(path) = context_path(&r, scope) else { continue };
            let loc = scalar.map_or(s.name.loc, |l| f.loc.refine(l, &r));
            let usage = if site.field == "iterable_input" { ReadUse::Iterated } else { r.usage };
            self.read(path, f.site(loc, name, site.field), usage);
        }
    }

    /// The reads of an agent's system prompt (once per agent and file).
    fn prompt_reads(&mut self, f: &FileCtx<'_>, agent: &str) {
        if !self.prompts.insert((f.file.clone(), agent.to_owned())) {
            return;
        }
        let Some((_, decl)) = f.bp.agents.iter().find(|(n, _)| n.v == agent) else { return };
        let step = format!("agents.{agent}");
        match &decl.system_prompt {
            Some(RawPrompt::Text(t)) => {
                let Ok(reads) = flujo_template::template_reads(t) else { return };
                let scalar = f.loc.scalar_in_section("agents", t);
                for r in reads {
                    let Some(path) = context_path(&r, &Scope::top()) else { continue };
                    let loc = scalar.map_or(Loc::default(), |l| f.loc.refine(l, &r));
                    self.read(path, f.site(loc, &step, "system_prompt"), r.usage);
                }
            }
            Some(RawPrompt::File { path, .. }) => {
                let file = f.dir.join(&path.v);
                let Ok(bytes) = read_limited(&file) else { return };
                let Ok(text) = String::from_utf8(bytes) else { return };
                let Ok(reads) = flujo_template::template_reads(&text) else { return };
                for r in reads {
                    let Some(p) = context_path(&r, &Scope::top()) else { continue };
                    let site = FieldSite {
                        file: file.clone(),
                        line: r.line,
                        column: r.col,
                        step: step.clone(),
                        how: "system_prompt".to_owned(),
                    };
                    self.read(p, site, r.usage);
                }
            }
            None => {}
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // The walk
    // -----------------------------------------------------------------------------------------------------

    /// Walks a sequence; returns the type of its last output.
    pub(super) fn sequence(&mut self, f: &FileCtx<'_>, steps: &[RawStep], scope: &Scope) -> Ty {
        let mut prev = scope.prev.clone();
        for s in steps {
            prev = self.step(f, s, &scope.with_prev(prev));
        }
        prev
    }

    /// Walks a step (and what is nested in it); returns the type of its output.
    fn step(&mut self, f: &FileCtx<'_>, s: &RawStep, scope: &Scope) -> Ty {
        let name = s.name.v.clone();
        for site in template_sites(s) {
            self.site_reads(f, s, &site, scope);
        }
        for k in &s.input_keys {
            self.read(keys(&split_context_path(&k.v)), f.site(k.loc, &name, "input_keys"), ReadUse::Value);
        }
        match &s.kind {
            RawKind::Step { agent: Some(RawAgent::Declared(agent)) } => self.prompt_reads(f, &agent.v),
            RawKind::Step { agent: Some(RawAgent::Skill { id, params }) } if builtin(&id.v) == Some("context_get") => {
                if let Some(path) = params.get("path").and_then(Value::as_str) {
                    let loc = f.loc.scalar_in_step(s, path).unwrap_or(id.loc);
                    self.read(keys(&split_context_path(path)), f.site(loc, &name, "context_get"), ReadUse::Value);
                }
            }
            _ => {}
        }
        let input = match &s.input {
            None => scope.prev.clone(),
            Some(v) => self.value_type(v, scope),
        };
        let out = self.kind(f, s, scope, &input);
        if let Some(RawFallback::Step(fb)) = &s.fallback {
            self.step(f, fb, &scope.maybe(input.clone()));
        }
        self.own_writes(f, s, scope, &input, &out);
        out
    }

    /// Walks what a step's kind nests; returns the step's output type.
    fn kind(&mut self, f: &FileCtx<'_>, s: &RawStep, scope: &Scope, input: &Ty) -> Ty {
        match &s.kind {
            RawKind::Step { agent } => self.agent_output(f, agent.as_ref(), input),
            RawKind::Hitl { input_schema, .. } => input_schema.clone(),
            RawKind::Loop { body, output, .. } => {
                let last = self.sequence(f, body, &scope.with_prev(input.clone()));
                match output {
                    Some(v) => self.value_type(v, &scope.with_prev(last)),
                    None => last,
                }
            }
            RawKind::Map { iterable_input, body, .. } => {
                let items = iterable_input.as_deref().and_then(|src| iterable_path(src, scope));
                let this = items.as_ref().map(|p| {
                    let mut p = p.clone();
                    p.push(PathSegment::Item);
                    p
                });
                let item_ty = match (&this, iterable_input) {
                    (Some(p), _) => self.known_type(p),
                    (None, None) => input.as_ref().and_then(|t| t.get("items").cloned()),
                    (None, Some(_)) => None,
                };
                let inner = Scope { always: false, certain: false, this, prev: item_ty };
                let last = self.sequence(f, body, &inner);
                Some(json!({"type": "array", "items": last.unwrap_or_else(|| json!({}))}))
            }
            RawKind::Conditional { .. } => {
                let mut sets: Vec<HashSet<Vec<PathSegment>>> = Vec::new();
                let mut outs = Vec::new();
                for seq in s.child_sequences() {
                    self.frames.push(HashSet::new());
                    let inner = Scope { always: false, certain: true, this: scope.this.clone(), prev: input.clone() };
                    outs.push(self.sequence(f, seq, &inner));
                    sets.push(self.frames.pop().unwrap_or_default());
                }
                let mut every = sets.first().cloned().unwrap_or_default();
                for set in &sets[1.min(sets.len())..] {
                    every.retain(|p| set.contains(p));
                }
                for p in every {
                    if scope.always {
                        self.root.at(&p).always = true;
                    }
                    if scope.certain {
                        if let Some(frame) = self.frames.last_mut() {
                            frame.insert(p);
                        }
                    }
                }
                outs.into_iter().try_fold(None::<Value>, |acc, o| {
                    let o = o?;
                    Some(Some(match acc {
                        None => o,
                        Some(a) => types::merge(&a, &o),
                    }))
                })?
            }
            RawKind::Parallel(p) => {
                let merged =
                    p.on_branch_failure == OnBranchFailure::Propagate && p.merge_strategy != MergeStrategy::NoMerge;
                if p.merge_strategy == MergeStrategy::NoMerge {
                    self.note(format!(
                        "parallel `{}` has merge_strategy no_merge: what its branches write never reaches the context after it",
                        s.name.v
                    ));
                }
                if let Some(include) = &p.context_include_keys {
                    let loc = f.loc.key_in_step(s, "context_include_keys").unwrap_or(s.name.loc);
                    for k in include {
                        self.read(
                            keys(&split_context_path(k)),
                            f.site(loc, &s.name.v, "context_include_keys"),
                            ReadUse::Value,
                        );
                    }
                }
                let inner = if merged { scope.with_prev(input.clone()) } else { scope.maybe(input.clone()) };
                let mut props = Map::new();
                for b in &p.branches {
                    let out = self.sequence(f, &b.steps, &inner);
                    props.insert(b.name.v.clone(), out.unwrap_or_else(|| json!({})));
                }
                p.reduce.is_none().then(|| json!({"type": "object", "properties": props}))
            }
            RawKind::Router { parallel, .. } => {
                for b in &parallel.branches {
                    self.sequence(f, &b.steps, &scope.maybe(input.clone()));
                }
                None
            }
            RawKind::Cache { wrapped: Some(w), .. } => self.step(f, w, &scope.maybe(input.clone())),
            RawKind::StateMachine { states, start_state, .. } => {
                for b in states {
                    let start = start_state.as_ref().is_some_and(|st| st.v == b.name.v);
                    let inner = if start { scope.with_prev(input.clone()) } else { scope.maybe(input.clone()) };
                    self.sequence(f, &b.steps, &inner);
                }
                None
            }
            RawKind::Custom { children, .. } => {
                for b in children {
                    self.sequence(f, &b.steps, &scope.maybe(input.clone()));
                }
                None
            }
            RawKind::Import { .. } => {
                self.import(f, s, scope);
                None
            }
            RawKind::Cache { wrapped: None, .. }
            | RawKind::AgenticLoop { .. }
            | RawKind::TreeSearch(_)
            | RawKind::Invalid => None,
        }
    }

    /// The writes a step itself declares, typed from its input and output.
    fn own_writes(&mut self, f: &FileCtx<'_>, s: &RawStep, scope: &Scope, input: &Ty, out: &Ty) {
        let name = s.name.v.clone();
        for w in step_writes(s) {
            let path = keys(&w.path);
            match w.source {
                WriteSource::SinkTo => self.write(path, f.site(w.loc, &name, "sink_to"), out.clone(), scope, true),
                WriteSource::OutputKey if s.updates_context => {
                    let (ty, certain) = output_key_type(out, &w.written, s.output_keys.len());
                    self.write(path, f.site(w.loc, &name, "output_keys"), ty, scope, certain);
                }
                WriteSource::OutputKey | WriteSource::ImportOutput => {}
                WriteSource::ContextSet => {
                    let loc = f.loc.scalar_in_step(s, &w.written).unwrap_or(w.loc);
                    let value = match &s.kind {
                        RawKind::Step { agent: Some(RawAgent::Skill { params, .. }) } => params.get("value"),
                        _ => None,
                    };
                    let ty = match value {
                        Some(v) => Some(types::literal(v)),
                        None => input.clone(),
                    };
                    self.write(path, f.site(loc, &name, "context_set"), ty, scope, true);
                }
                WriteSource::ContextMerge => {
                    let loc = f.loc.scalar_in_step(s, &w.written).unwrap_or(w.loc);
                    self.merge_keys(path, f.site(loc, &name, "context_merge"), input, scope);
                }
            }
        }
        // Keys merged without being named: `updates_context` without `output_keys`, `context_merge` without a
        // path. An output schema listing its properties names them.
        if s.updates_context && s.output_keys.is_empty() {
            let loc = f.loc.key_in_step(s, "updates_context").unwrap_or(s.name.loc);
            let site = f.site(loc, &name, "updates_context");
            match out {
                Some(t) if !types::type_names(t).contains(&"object") && !types::type_names(t).is_empty() => {}
                _ if s.sink_to.is_some() && out.is_none() => {}
                _ => self.merge_keys(Vec::new(), site, out, scope),
            }
        }
        if let RawKind::Step { agent: Some(RawAgent::Skill { id, params }) } = &s.kind {
            if builtin(&id.v) == Some("context_merge") && params.get("path").is_none() {
                self.merge_keys(Vec::new(), f.site(id.loc, &name, "context_merge"), input, scope);
            }
        }
    }

    /// Writes each key of an object of type `ty` below `base`; keys the type does not name are open writes.
    fn merge_keys(&mut self, base: Vec<PathSegment>, site: FieldSite, ty: &Ty, scope: &Scope) {
        let props = ty.as_ref().and_then(|t| t.get("properties")).and_then(Value::as_object);
        let Some(props) = props else {
            if !base.is_empty() {
                self.write(base.clone(), site.clone(), Some(types::of_type("object")), scope, true);
            }
            self.open_write(base, site);
            return;
        };
        let required = required_keys(ty.as_ref());
        for (k, sub) in props {
            let mut path = base.clone();
            path.push(PathSegment::Key(k.clone()));
            self.write(path, site.clone(), Some(sub.clone()), scope, required.contains(k));
        }
        let closed = ty.as_ref().and_then(|t| t.get("additionalProperties")).is_none_or(|a| a == &Value::Bool(false));
        if !closed {
            self.open_write(base, site);
        }
    }

    /// An import: with `inherit_context`, the child's fields are the parent's; its `outputs` write the parent.
    fn import(&mut self, f: &FileCtx<'_>, s: &RawStep, scope: &Scope) {
        let RawKind::Import { alias, inherit_context, outputs, on_failure, .. } = &s.kind else { return };
        let Some((_, written)) = f.bp.imports.iter().find(|(a, _)| a.v == alias.v) else { return };
        let child_file = f.dir.join(&written.v);
        let aborts = *on_failure == OnImportFailure::Abort;
        let inner = if aborts { scope.with_prev(None) } else { scope.maybe(None) };
        let inner = Scope { this: None, ..inner };
        let child = Parsed::read(&child_file, self.opts);
        let mut own: Option<Analysis<'o>> = None;
        match &child {
            Some(c) if !self.stack.contains(&canonical(&child_file)) && self.stack.len() <= crate::MAX_IMPORT_DEPTH => {
                let cf = FileCtx::new(&child_file, &c.text, &c.node, &c.bp);
                self.stack.push(canonical(&child_file));
                if *inherit_context {
                    self.note(format!(
                        "import `{}` ({}) shares the context (inherit_context: true): its fields are included",
                        alias.v, written.v
                    ));
                    self.sequence(&cf, &c.bp.steps, &inner);
                } else {
                    self.note(format!(
                        "import `{}` ({}) runs with a context of its own: only its `outputs` write this one",
                        alias.v, written.v
                    ));
                    let mut sub = Analysis::new(self.catalog, self.opts);
                    sub.stack = self.stack.clone();
                    sub.sequence(&cf, &c.bp.steps, &Scope::top());
                    own = Some(sub);
                }
                self.stack.pop();
            }
            _ => {}
        }
        for o in outputs {
            let child_path = keys(&split_context_path(&o.child));
            let ty = match &own {
                Some(sub) => sub.known_type(&child_path),
                None => self.known_type(&child_path),
            };
            let loc = f.loc.scalar_in_step(s, &o.parent).unwrap_or(alias.loc);
            self.write(
                keys(&split_context_path(&o.parent)),
                f.site(loc, &s.name.v, "import outputs"),
                ty,
                &inner,
                true,
            );
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Types
    // -----------------------------------------------------------------------------------------------------

    /// The type of an `input` (or `output`) value: literals by their value, text templates as strings, a
    /// template that is one `{{ path }}` as what the path holds.
    fn value_type(&self, v: &Value, scope: &Scope) -> Ty {
        if let Value::String(s) = v {
            if let Some(expr) = types::single_expression(s) {
                let reads = flujo_template::expression_reads(expr).ok()?;
                let [r] = reads.as_slice() else { return None };
                if r.text.trim() != expr {
                    return None;
                }
                if r.root == "previous_step" && r.path.is_empty() {
                    return scope.prev.clone();
                }
                return context_path(r, scope).and_then(|p| self.known_type(&p));
            }
        }
        Some(types::literal(v))
    }

    /// The output type of a step's agent given its input type.
    fn agent_output(&self, f: &FileCtx<'_>, agent: Option<&RawAgent>, input: &Ty) -> Ty {
        match agent {
            None => input.clone(),
            Some(RawAgent::Declared(name)) => {
                let (_, decl) = f.bp.agents.iter().find(|(n, _)| n.v == name.v)?;
                if let Some(schema) = &decl.output_schema {
                    return Some(schema.clone());
                }
                match decl.model.as_ref().map(|m| m.v.as_str()) {
                    Some("mock:echo") => input.clone(),
                    _ => Some(types::of_type("string")),
                }
            }
            Some(RawAgent::Skill { id, params }) => match builtin(&id.v) {
                Some("passthrough" | "sleep" | "fail" | "context_merge") => input.clone(),
                Some("stringify" | "render_template" | "to_csv" | "welcome_agent" | "check_user_confirmation") => {
                    Some(types::of_type("string"))
                }
                Some("context_set") => match params.get("value") {
                    Some(v) => Some(types::literal(v)),
                    None => input.clone(),
                },
                Some("context_get") => {
                    let path = params.get("path").and_then(Value::as_str)?;
                    self.known_type(&keys(&split_context_path(path)))
                }
                Some("flatten") => Some(types::of_type("array")),
                Some("aggregate") => Some(types::of_type("number")),
                Some("select_fields") => Some(types::of_type("object")),
                Some(_) => None,
                None => self.catalog.get(&id.v).and_then(|c| c.output_schema.clone()),
            },
        }
    }
}

/// The short name of a built-in skill id (`flujo.builtins.X` or plain `X`), `None` for other skills.
fn builtin(id: &str) -> Option<&str> {
    const BUILTINS: &[&str] = &[
        "passthrough",
        "stringify",
        "transform",
        "render_template",
        "context_set",
        "context_get",
        "context_merge",
        "select_fields",
        "flatten",
        "aggregate",
        "to_csv",
        "http_get",
        "fs_write_file",
        "sleep",
        "fail",
        "code_interpreter",
        "retrieve",
        "memory_search",
        "memory_add",
        "welcome_agent",
        "check_user_confirmation",
    ];
    let short = id.strip_prefix("flujo.builtins.").unwrap_or(id);
    (id.starts_with("flujo.builtins.") || BUILTINS.contains(&short)).then_some(short)
}

/// The context path a read stands for: `context.…`, or `this.…` inside a map over a context list.
fn context_path(r: &VarRead, scope: &Scope) -> Option<Vec<PathSegment>> {
    match r.root.as_str() {
        "context" => Some(r.path.clone()),
        "this" => scope.this.as_ref().map(|base| base.iter().chain(&r.path).cloned().collect()),
        _ => None,
    }
}

/// The context path a map's `iterable_input` names: a plain path, or a template that is one `{{ path }}`.
fn iterable_path(src: &str, scope: &Scope) -> Option<Vec<PathSegment>> {
    if !flujo_template::is_template(src) {
        return Some(keys(&split_context_path(src)));
    }
    let expr = types::single_expression(src.trim())?;
    let reads = flujo_template::expression_reads(expr).ok()?;
    let [r] = reads.as_slice() else { return None };
    (r.text.trim() == expr).then(|| context_path(r, scope)).flatten()
}

/// The type a step's output has below `path`.
pub(super) fn descend(ty: &Value, path: &[PathSegment]) -> Ty {
    let mut cur = ty;
    for seg in path {
        cur = match seg {
            PathSegment::Key(k) => cur.get("properties")?.get(k)?,
            PathSegment::Item => cur.get("items")?,
        };
    }
    Some(cur.clone())
}

fn required_keys(ty: Option<&Value>) -> Vec<String> {
    ty.and_then(|t| t.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// What `output_keys: [.., key, ..]` writes: the output's property (written when the output has it), or the
/// whole output when it is not an object and there is one key.
fn output_key_type(out: &Ty, key: &str, count: usize) -> (Ty, bool) {
    let Some(schema) = out else { return (None, true) };
    let names = types::type_names(schema);
    if names.contains(&"object") || schema.get("properties").is_some() {
        let prop = schema.get("properties").and_then(|p| p.get(key)).cloned();
        let required = required_keys(Some(schema)).iter().any(|r| r == key);
        return (prop, required);
    }
    if count == 1 {
        (Some(schema.clone()), true)
    } else {
        (None, false)
    }
}

/// A blueprint file read for its steps (an import).
struct Parsed {
    text: String,
    node: Node,
    bp: RawBlueprint,
}

impl Parsed {
    fn read(path: &Path, opts: &LoadOptions<'_>) -> Option<Self> {
        let bytes = read_limited(path).ok()?;
        let text = yaml::decode_utf8(&bytes).ok()?.to_owned();
        let node = yaml::parse(&text).ok()?;
        let bp = decode(&node, path, opts);
        Some(Parsed { text, node, bp })
    }
}
