//! `flujo dev gen-context`: the context fields a blueprint writes and reads, with their types, as a
//! `context_schema` to paste into the blueprint, a JSON Schema or a Rust struct.
//!
//! The analysis walks the raw blueprint (the same tree validation checks) with the machinery of the context
//! rules: the writes a step declares come from [`crate::check::step_writes`] (`sink_to`, `output_keys` with
//! `updates_context`, `context_set` / `context_merge`, import `outputs`) and the templates and expressions it
//! holds from [`crate::lint::template_sites`]; the reads inside them come from the templates' syntax trees
//! ([`flujo_template::template_reads`]), never from a text search. A map body's `this` stands for the items
//! of its `iterable_input` (`context.users[]`), and an import with `inherit_context: true` shares the
//! context, so its fields are walked as the parent's.
//!
//! Types come from what is written: the `output_schema` of the agent whose output is stored, a hitl step's
//! `input_schema`, the literal `value` of `context_set`, `string` for text (a model without an output schema,
//! a template), the output schema of a `skills.yaml` skill; anything else is unconstrained (`{}`). A field
//! that nothing writes gets a type from the way templates use it (iterated: a list). The generated schema
//! never lists `required` keys at its top level: the context is validated after every update, when later
//! fields are not written yet. [`ContextField::always_written`] says which fields every successful run
//! writes (outside conditional branches, map bodies, fallbacks, …): the Rust rendering makes the others
//! `Option`s.
//!
//! Findings are warnings with locations: a read of a field nothing writes (`CTX-UNDECLARED-READ`, the
//! validation rule, when `context_schema` does not declare it either; `CTX-READ-UNWRITTEN` otherwise), a
//! write nothing reads (`CTX-WRITE-UNREAD`), and, when the blueprint declares a `context_schema`, its
//! differences with the generated one (`CTX-SCHEMA-MISSING`, `CTX-SCHEMA-UNUSED`, `CTX-SCHEMA-TYPE`).

mod locate;
mod render;
#[cfg(test)]
mod tests;
mod types;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use flujo_core::patch::split_context_path;
use flujo_core::{MergeStrategy, OnBranchFailure, OnImportFailure};
use flujo_template::{dotted, PathSegment, ReadUse, VarRead};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::check::{schema_paths, step_writes, WriteSource, FRAMEWORK_FIELDS};
use crate::decode::Decoder;
use crate::diagnostic::{Diagnostic, LoadFailure, Severity};
use crate::lint::{template_sites, SiteKind, TemplateSite};
use crate::load::{load_str, read_limited, LoadOptions, Loaded};
use crate::raw::{RawAgent, RawBlueprint, RawFallback, RawKind, RawPrompt, RawStep};
use crate::yaml::{self, Loc, Node};
use crate::SkillCatalog;
use locate::Locator;
use types::{Lookup, Ty};

pub use render::{render_json_schema, render_rust, render_yaml, rust_struct_name};

/// `gen-context`'s rule ids (besides `CTX-UNDECLARED-READ`, the validation rule) with what they report.
pub const GEN_CONTEXT_RULES: &[(&str, &str)] = &[
    (READ_UNWRITTEN, "A template reads a context field that no step writes (declared in context_schema, or below a written field whose type does not have it)."),
    (WRITE_UNREAD, "A step writes a context field that no template, expression or input key reads."),
    (SCHEMA_MISSING, "The pipeline writes or reads a field that its context_schema does not declare."),
    (SCHEMA_UNUSED, "The context_schema declares a field that nothing writes or reads."),
    (SCHEMA_TYPE, "The context_schema declares a field with a type other than the one written."),
];

const READ_UNWRITTEN: &str = "CTX-READ-UNWRITTEN";
const WRITE_UNREAD: &str = "CTX-WRITE-UNREAD";
const SCHEMA_MISSING: &str = "CTX-SCHEMA-MISSING";
const SCHEMA_UNUSED: &str = "CTX-SCHEMA-UNUSED";
const SCHEMA_TYPE: &str = "CTX-SCHEMA-TYPE";

/// One place a context field is written or read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldSite {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The step, or `agents.NAME` for a system prompt.
    pub step: String,
    /// How the field is written (`sink_to`, `output_keys`, `updates_context`, `context_set`, `context_merge`,
    /// `import outputs`) or where it is read (`input`, `exit_expression`, `system_prompt`, `input_keys`, …).
    pub how: String,
}

/// A context field the pipeline writes or reads.
#[derive(Debug, Clone, Serialize)]
pub struct ContextField {
    /// The path: `user.name`, `items[].id` (`[]`: every item of a list).
    pub path: String,
    /// The field's schema as generated (`{}` when nothing is known).
    pub schema: Value,
    /// Every successful run writes it (it is not only written in a conditional branch, a map body, a fallback,
    /// a dynamic router's branch, a state other than the start state, a cache-wrapped step, …).
    pub always_written: bool,
    pub writes: Vec<FieldSite>,
    pub reads: Vec<FieldSite>,
}

/// A field declared in `context_schema` with a type other than the one written.
#[derive(Debug, Clone, Serialize)]
pub struct TypeMismatch {
    pub path: String,
    pub declared: Value,
    pub inferred: Value,
}

/// The differences between a declared `context_schema` and the generated one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchemaDiff {
    /// Fields the pipeline writes or reads that the declared schema does not list.
    pub missing: Vec<String>,
    /// Fields the declared schema lists that nothing writes or reads.
    pub unused: Vec<String>,
    pub type_mismatches: Vec<TypeMismatch>,
}

/// What `flujo dev gen-context` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContextReport {
    pub pipeline: String,
    pub file: PathBuf,
    /// The generated `context_schema` (a JSON Schema of the context's user fields).
    pub schema: Value,
    /// Every field written or read, parents before their fields, in the order the blueprint first mentions
    /// them.
    pub fields: Vec<ContextField>,
    pub warnings: Vec<Diagnostic>,
    /// The differences with the blueprint's own `context_schema`, when it declares one.
    pub declared: Option<SchemaDiff>,
    /// What the analysis could not see, or chose: imports with a context of their own, steps that merge keys
    /// nobody declared, parallels whose writes are not merged.
    pub notes: Vec<String>,
}

/// Loads (validates) blueprint text and analyses its context.
pub fn context_report_str(yaml: &str, file: &Path, opts: &LoadOptions<'_>) -> Result<ContextReport, LoadFailure> {
    let loaded = load_str(yaml, file, opts)?;
    Ok(analyze(yaml, file, &loaded, opts))
}

/// Analyses the context of a blueprint file that loaded as `loaded`.
pub fn context_report(loaded: &Loaded, file: &Path, opts: &LoadOptions<'_>) -> Result<ContextReport, String> {
    let bytes = read_limited(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let text = yaml::decode_utf8(&bytes).map_err(|e| format!("{}: {}", file.display(), e.message))?;
    Ok(analyze(text, file, loaded, opts))
}

fn analyze(text: &str, file: &Path, loaded: &Loaded, opts: &LoadOptions<'_>) -> ContextReport {
    yaml::with_parser_stack(|| {
        let Ok(node) = yaml::parse(text) else { return ContextReport::default() };
        let bp = decode(&node, file, opts);
        let mut a = Analysis::new(&loaded.catalog, opts);
        a.stack.push(canonical(file));
        let f = FileCtx::new(file, text, &node, &bp);
        a.sequence(&f, &bp.steps, &Scope::top());
        a.report(&loaded.pipeline.name, &f)
    })
}

fn decode(node: &Node, file: &Path, opts: &LoadOptions<'_>) -> RawBlueprint {
    let mut d = Decoder::new(file, &opts.custom_kinds);
    d.blueprint(node)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One blueprint file being walked.
struct FileCtx<'f> {
    file: PathBuf,
    dir: PathBuf,
    bp: &'f RawBlueprint,
    loc: Locator<'f>,
}

impl<'f> FileCtx<'f> {
    fn new(file: &Path, text: &'f str, node: &'f Node, bp: &'f RawBlueprint) -> Self {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        FileCtx { file: file.to_path_buf(), dir, bp, loc: Locator::new(text, node, bp) }
    }

    fn site(&self, loc: Loc, step: &str, how: &str) -> FieldSite {
        FieldSite {
            file: self.file.clone(),
            line: loc.line,
            column: loc.col,
            step: step.to_owned(),
            how: how.to_owned(),
        }
    }
}

/// Where in the pipeline the walk is.
#[derive(Clone)]
struct Scope {
    /// Every successful run gets here.
    always: bool,
    /// Every successful pass through the innermost conditional branch gets here.
    certain: bool,
    /// The context path of the current map item (`this`), when it is one.
    this: Option<Vec<PathSegment>>,
    /// The type of the previous step's output (a step's default input).
    prev: Ty,
}

impl Scope {
    fn top() -> Self {
        Scope { always: true, certain: true, this: None, prev: None }
    }

    /// The scope of something that may not run on every pass (a map body, a fallback, …).
    fn maybe(&self, prev: Ty) -> Self {
        Scope { always: false, certain: false, this: self.this.clone(), prev }
    }

    fn with_prev(&self, prev: Ty) -> Self {
        Scope { prev, ..self.clone() }
    }
}

/// A node of the field tree: a context path, what writes and reads it, and its own fields.
#[derive(Default)]
struct Field {
    key: Option<PathSegment>,
    writes: Vec<(FieldSite, Ty)>,
    always: bool,
    reads: Vec<(FieldSite, ReadUse)>,
    children: Vec<Field>,
}

impl Field {
    fn at(&mut self, path: &[PathSegment]) -> &mut Field {
        let Some((first, rest)) = path.split_first() else { return self };
        let i = match self.children.iter().position(|c| c.key.as_ref() == Some(first)) {
            Some(i) => i,
            None => {
                self.children.push(Field { key: Some(first.clone()), ..Field::default() });
                self.children.len() - 1
            }
        };
        self.children[i].at(rest)
    }

    fn get(&self, path: &[PathSegment]) -> Option<&Field> {
        let Some((first, rest)) = path.split_first() else { return Some(self) };
        self.children.iter().find(|c| c.key.as_ref() == Some(first))?.get(rest)
    }

    /// The type of what is written here: `None` when nothing is, `Some(None)` when some write is unknown.
    fn written(&self) -> Option<Ty> {
        let mut out: Option<Value> = None;
        for (_, ty) in &self.writes {
            let ty = ty.as_ref()?;
            out = Some(match out {
                None => ty.clone(),
                Some(prev) => types::merge(&prev, ty),
            });
        }
        if self.writes.is_empty() {
            None
        } else {
            Some(out)
        }
    }

    fn has_writes(&self) -> bool {
        !self.writes.is_empty() || self.children.iter().any(Field::has_writes)
    }

    fn has_reads(&self) -> bool {
        !self.reads.is_empty() || self.children.iter().any(Field::has_reads)
    }
}

struct Analysis<'o> {
    root: Field,
    /// Writes of keys nobody declared, below a path (empty: anywhere), and where.
    open: Vec<(Vec<PathSegment>, FieldSite)>,
    /// Reads of the whole context (`{{ context }}`, `context[key]`).
    whole_reads: Vec<FieldSite>,
    /// The paths written on every pass through the conditional branches being walked (innermost last).
    frames: Vec<HashSet<Vec<PathSegment>>>,
    notes: Vec<String>,
    /// The files being walked (imports).
    stack: Vec<PathBuf>,
    /// System prompts already read, by file and agent.
    prompts: HashSet<(PathBuf, String)>,
    catalog: &'o SkillCatalog,
    opts: &'o LoadOptions<'o>,
}

fn keys(path: &[String]) -> Vec<PathSegment> {
    path.iter().cloned().map(PathSegment::Key).collect()
}

fn is_framework(path: &[PathSegment]) -> bool {
    matches!(path.first(), Some(PathSegment::Key(k)) if FRAMEWORK_FIELDS.contains(&k.as_str()))
}

impl<'o> Analysis<'o> {
    fn new(catalog: &'o SkillCatalog, opts: &'o LoadOptions<'o>) -> Self {
        Analysis {
            root: Field::default(),
            open: Vec::new(),
            whole_reads: Vec::new(),
            frames: vec![HashSet::new()],
            notes: Vec::new(),
            stack: Vec::new(),
            prompts: HashSet::new(),
            catalog,
            opts,
        }
    }

    fn note(&mut self, note: String) {
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
                let loc = f.loc.scalar_in_step(s, &site.text).unwrap_or(s.name.loc);
                self.read(keys(&split_context_path(&site.text)), f.site(loc, name, site.field), ReadUse::Iterated);
                return;
            }
            SiteKind::Template => flujo_template::template_reads(&site.text),
            SiteKind::Expression => flujo_template::expression_reads(&site.text),
        };
        // A template that does not parse was reported by validation.
        let Ok(reads) = reads else { return };
        let scalar = f.loc.scalar_in_step(s, &site.text);
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
    fn sequence(&mut self, f: &FileCtx<'_>, steps: &[RawStep], scope: &Scope) -> Ty {
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
fn descend(ty: &Value, path: &[PathSegment]) -> Ty {
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

// ---------------------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------------------

fn warning(rule: &str, site: &FieldSite, message: String, suggestion: Option<String>) -> Diagnostic {
    let mut d = Diagnostic::new(rule, &site.file, site.line, site.column, message);
    d.severity = Severity::Warning;
    d.suggestion = suggestion;
    d
}

impl Analysis<'_> {
    fn report(mut self, pipeline: &str, f: &FileCtx<'_>) -> ContextReport {
        let mut fields = Vec::new();
        let mut props = Map::new();
        for c in &self.root.children {
            if let Some(PathSegment::Key(k)) = &c.key {
                props.insert(k.clone(), field_schema(c, &mut Vec::new(), &mut fields));
            }
        }
        let schema = json!({"type": "object", "properties": props});
        let mut warnings = Vec::new();
        let declared_roots = crate::check::context_schema_roots(f.bp.context_schema.as_ref());
        self.read_warnings(&declared_roots, &mut warnings);
        if self.whole_reads.is_empty() {
            for c in &self.root.children {
                unread(c, &mut Vec::new(), false, &mut warnings);
            }
        } else {
            let s = &self.whole_reads[0];
            self.note(format!(
                "step `{}` ({}:{}) reads the whole context: every field counts as read",
                s.step, s.line, s.column
            ));
        }
        let declared = f.bp.context_schema.as_ref().map(|d| self.diff(d, f, &mut warnings));
        warnings.sort_by(|a, b| (&a.file, a.line, a.column, &a.rule).cmp(&(&b.file, b.line, b.column, &b.rule)));
        ContextReport {
            pipeline: pipeline.to_owned(),
            file: f.file.clone(),
            schema,
            fields,
            warnings,
            declared,
            notes: self.notes,
        }
    }

    /// `CTX-UNDECLARED-READ` / `CTX-READ-UNWRITTEN` for each path read that nothing writes.
    fn read_warnings(&self, declared_roots: &[String], out: &mut Vec<Diagnostic>) {
        let mut reads: Vec<(Vec<PathSegment>, &FieldSite)> = Vec::new();
        collect_reads(&self.root, &mut Vec::new(), &mut reads);
        let mut reported_roots: HashSet<String> = HashSet::new();
        for (path, site) in reads {
            if self.open.iter().any(|(base, _)| path.starts_with(base)) {
                continue;
            }
            let Some(PathSegment::Key(root)) = path.first() else { continue };
            let shown = format!("context.{}", dotted(&path));
            let root_node = self.root.get(&path[..1]);
            if !root_node.is_some_and(Field::has_writes) {
                if !reported_roots.insert(root.clone()) {
                    continue;
                }
                if declared_roots.contains(root) {
                    out.push(warning(
                        READ_UNWRITTEN,
                        site,
                        format!("step `{}` reads `{shown}`; `{root}` is declared in context_schema, but no step writes it", site.step),
                        Some(format!("give it when starting the run (`flujo run --context '{{\"{root}\": …}}'`), or write it in an earlier step")),
                    ));
                } else {
                    out.push(warning(
                        crate::rules::CTX_UNDECLARED_READ,
                        site,
                        format!("step `{}` reads `{shown}`, but no step writes `{root}` and `context_schema` does not declare it", site.step),
                        Some(format!("write it in an earlier step (`output_keys`, `sink_to`), declare it in `context_schema`, or pass it with `flujo run --context '{{\"{root}\": …}}'`")),
                    ));
                }
                continue;
            }
            if let Some(reason) = self.uncovered(&path) {
                out.push(warning(
                    READ_UNWRITTEN,
                    site,
                    format!("step `{}` reads `{shown}`, but no step writes it: {reason}", site.step),
                    None,
                ));
            }
        }
    }

    /// Why nothing written covers the read `path`, or `None` when something does.
    fn uncovered(&self, path: &[PathSegment]) -> Option<String> {
        if self.root.get(path).is_some_and(Field::has_writes) {
            return None;
        }
        let mut reason = None;
        for n in 1..path.len() {
            let Some(node) = self.root.get(&path[..n]) else { break };
            match node.written() {
                None => {}
                Some(None) => return None,
                Some(Some(ty)) => match types::lookup(&ty, &path[n..]) {
                    Lookup::Found => return None,
                    Lookup::Missing(why) => {
                        let by = node.writes.first().map(|(s, _)| s.step.as_str()).unwrap_or("?");
                        reason = Some(format!("`{}` is written by step `{by}` and {why}", dotted(&path[..n])));
                    }
                },
            }
        }
        Some(reason.unwrap_or_else(|| format!("nothing writes `{}` or a field containing it", dotted(path))))
    }

    /// Compares the declared `context_schema` with what the pipeline writes and reads.
    fn diff(&self, declared: &Value, f: &FileCtx<'_>, out: &mut Vec<Diagnostic>) -> SchemaDiff {
        let mut diff = SchemaDiff::default();
        // Missing: fields used here that the declared schema rules out.
        let mut stack: Vec<(Vec<PathSegment>, &Field)> =
            self.root.children.iter().rev().map(|c| (c.key.iter().cloned().collect(), c)).collect();
        while let Some((path, node)) = stack.pop() {
            if path.last() == Some(&PathSegment::Item) {
                continue;
            }
            if let Lookup::Missing(_) = types::lookup(declared, &path) {
                let site = node_site(node);
                diff.missing.push(dotted(&path));
                if let Some(site) = site {
                    out.push(warning(
                        SCHEMA_MISSING,
                        site,
                        format!(
                            "`context.{}` is {} here, but the blueprint's context_schema does not declare it",
                            dotted(&path),
                            if node.has_writes() { "written" } else { "read" }
                        ),
                        Some("add it to context_schema (see the generated schema)".to_owned()),
                    ));
                }
                continue;
            }
            if let (Some(Some(inferred)), Some(decl)) = (node.written(), declared_at(declared, &path)) {
                if types::disjoint(decl, &inferred) {
                    diff.type_mismatches.push(TypeMismatch {
                        path: dotted(&path),
                        declared: decl.clone(),
                        inferred: inferred.clone(),
                    });
                    let keys: Vec<String> = path
                        .iter()
                        .filter_map(|p| match p {
                            PathSegment::Key(k) => Some(k.clone()),
                            PathSegment::Item => None,
                        })
                        .collect();
                    let loc = f.loc.schema_property(&keys).unwrap_or_default();
                    let by = node.writes.first().map(|(s, _)| s.step.as_str()).unwrap_or("?");
                    let site = f.site(loc, "context_schema", "declared");
                    out.push(warning(
                        SCHEMA_TYPE,
                        &site,
                        format!(
                            "context_schema declares `{}` as {}, but step `{by}` writes {}",
                            dotted(&path),
                            types::describe(decl),
                            types::describe(&inferred)
                        ),
                        None,
                    ));
                }
            }
            for c in node.children.iter().rev() {
                let mut p = path.clone();
                p.extend(c.key.iter().cloned());
                stack.push((p, c));
            }
        }
        // Unused: declared fields nothing here writes or reads.
        if self.whole_reads.is_empty() {
            let mut paths = Vec::new();
            schema_paths(declared, &mut Vec::new(), &mut paths, 0);
            let mut reported: Vec<Vec<String>> = Vec::new();
            for p in paths {
                if reported.iter().any(|r| p.starts_with(r)) {
                    continue;
                }
                let segs = keys(&p);
                let used_below = self.root.get(&segs).is_some_and(|n| n.has_writes() || n.has_reads());
                let used_above = (1..segs.len())
                    .any(|n| self.root.get(&segs[..n]).is_some_and(|a| !a.writes.is_empty() || !a.reads.is_empty()));
                if used_below || used_above {
                    continue;
                }
                let loc = f.loc.schema_property(&p).unwrap_or_default();
                let site = f.site(loc, "context_schema", "declared");
                out.push(warning(
                    SCHEMA_UNUSED,
                    &site,
                    format!("context_schema declares `{}`, but no step writes or reads it", p.join(".")),
                    Some("remove it, or keep it for values given with `flujo run --context`".to_owned()),
                ));
                diff.unused.push(p.join("."));
                reported.push(p);
            }
        }
        diff
    }
}

/// The declared schema of a path, when the declaration lists it.
fn declared_at<'v>(schema: &'v Value, path: &[PathSegment]) -> Option<&'v Value> {
    let mut cur = schema;
    for seg in path {
        cur = match seg {
            PathSegment::Key(k) => cur.get("properties")?.get(k)?,
            PathSegment::Item => cur.get("items")?,
        };
    }
    Some(cur)
}

/// The first place a field (or one of its own fields) is written, else read.
fn node_site(node: &Field) -> Option<&FieldSite> {
    fn first_write(n: &Field) -> Option<&FieldSite> {
        n.writes.first().map(|(s, _)| s).or_else(|| n.children.iter().find_map(first_write))
    }
    fn first_read(n: &Field) -> Option<&FieldSite> {
        n.reads.first().map(|(s, _)| s).or_else(|| n.children.iter().find_map(first_read))
    }
    first_write(node).or_else(|| first_read(node))
}

/// Every distinct path read, with its first site, parents first.
fn collect_reads<'a>(node: &'a Field, path: &mut Vec<PathSegment>, out: &mut Vec<(Vec<PathSegment>, &'a FieldSite)>) {
    for c in &node.children {
        path.extend(c.key.iter().cloned());
        if let Some((site, _)) = c.reads.first() {
            out.push((path.clone(), site));
        }
        collect_reads(c, path, out);
        path.pop();
    }
}

/// `CTX-WRITE-UNREAD` for the fields written and never read (the topmost of them).
fn unread(node: &Field, path: &mut Vec<PathSegment>, read_above: bool, out: &mut Vec<Diagnostic>) {
    path.extend(node.key.iter().cloned());
    let read_here = read_above || !node.reads.is_empty();
    if !node.writes.is_empty() && !read_here && !node.has_reads() {
        let (site, _) = &node.writes[0];
        out.push(warning(
            WRITE_UNREAD,
            site,
            format!(
                "step `{}` writes `context.{}` ({}), but no template, expression or input key reads it",
                site.step,
                dotted(path),
                site.how
            ),
            Some("fine if the run's context is its result; otherwise the write can go".to_owned()),
        ));
    } else {
        for c in &node.children {
            unread(c, path, read_here, out);
        }
    }
    path.pop();
}

/// The generated schema of a field (and its fields), with the field list entries (parents first).
fn field_schema(node: &Field, path: &mut Vec<PathSegment>, fields: &mut Vec<ContextField>) -> Value {
    path.extend(node.key.iter().cloned());
    let written = node.written();
    let authoritative = matches!(written, Some(Some(_)));
    let mut schema = match &written {
        Some(Some(t)) => t.clone(),
        Some(None) => json!({}),
        None => types::from_uses(&node.reads.iter().map(|(_, u)| *u).collect::<Vec<_>>()),
    };
    let index = fields.len();
    fields.push(ContextField {
        path: dotted(path),
        schema: Value::Null,
        always_written: node.always,
        writes: node.writes.iter().map(|(s, _)| s.clone()).collect(),
        reads: node.reads.iter().map(|(s, _)| s.clone()).collect(),
    });
    for c in &node.children {
        // Below a field written with a known type, the type says what exists; reads are checked against it.
        if authoritative && !c.has_writes() {
            let below = c.key.as_ref().and_then(|k| descend(&schema, std::slice::from_ref(k)));
            list_read_only(c, path, below, fields);
            continue;
        }
        let sub = field_schema(c, path, fields);
        let is_item = c.key == Some(PathSegment::Item);
        let want = if is_item { "array" } else { "object" };
        let names = types::type_names(&schema);
        if !(names.is_empty() || names.contains(&want)) || schema.get("anyOf").is_some() {
            continue;
        }
        let Some(obj) = schema.as_object_mut() else { continue };
        obj.entry("type").or_insert_with(|| json!(want));
        match &c.key {
            Some(PathSegment::Item) => {
                let merged = match obj.get("items") {
                    Some(prev) if c.has_writes() && prev != &json!({}) => types::merge(prev, &sub),
                    Some(prev) if prev != &json!({}) => prev.clone(),
                    _ => sub,
                };
                obj.insert("items".into(), merged);
            }
            Some(PathSegment::Key(k)) => {
                let props = obj.entry("properties").or_insert_with(|| json!({}));
                if let Some(props) = props.as_object_mut() {
                    let merged = match props.get(k) {
                        Some(prev) => types::merge(prev, &sub),
                        None => sub,
                    };
                    props.insert(k.clone(), merged);
                }
            }
            None => {}
        }
    }
    if let (Some(obj), Some(text)) = (schema.as_object_mut(), description(node)) {
        obj.entry("description").or_insert(json!(text));
    }
    if let Some(entry) = fields.get_mut(index) {
        entry.schema = schema.clone();
    }
    path.pop();
    schema
}

/// Lists a field that is only read below a field written with a known type, with the type found there.
fn list_read_only(node: &Field, path: &mut Vec<PathSegment>, schema: Ty, fields: &mut Vec<ContextField>) {
    path.extend(node.key.iter().cloned());
    fields.push(ContextField {
        path: dotted(path),
        schema: schema.clone().unwrap_or_else(|| json!({})),
        always_written: false,
        writes: Vec::new(),
        reads: node.reads.iter().map(|(s, _)| s.clone()).collect(),
    });
    for c in &node.children {
        let below = match (&schema, &c.key) {
            (Some(t), Some(k)) => descend(t, std::slice::from_ref(k)),
            _ => None,
        };
        list_read_only(c, path, below, fields);
    }
    path.pop();
}

/// `Written by `a` (sink_to); read by `b`.`
fn description(node: &Field) -> Option<String> {
    let names = |sites: Vec<(&str, &str)>| -> String {
        let mut seen: Vec<String> = Vec::new();
        for (step, how) in sites {
            let s = if how.is_empty() { format!("`{step}`") } else { format!("`{step}` ({how})") };
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        seen.join(", ")
    };
    let mut parts = Vec::new();
    if !node.writes.is_empty() {
        parts.push(format!(
            "Written by {}",
            names(node.writes.iter().map(|(s, _)| (s.step.as_str(), s.how.as_str())).collect())
        ));
    }
    if !node.reads.is_empty() {
        let by = names(node.reads.iter().map(|(s, _)| (s.step.as_str(), "")).collect());
        parts.push(if parts.is_empty() { format!("Read by {by}") } else { format!("read by {by}") });
    }
    (!parts.is_empty()).then(|| parts.join("; ") + ".")
}
