//! `flujo dev gen-context`: the context fields a blueprint writes and reads, with their types, as a
//! `context_schema` to paste into the blueprint, a JSON Schema or a Rust struct.
//!
//! The analysis walks the raw blueprint (the same tree validation checks) with the machinery of the context
//! rules: the writes a step declares come from `check::step_writes` (`sink_to`, `output_keys` with
//! `updates_context`, `context_set` / `context_merge`, import `outputs`) and the templates and expressions it
//! holds from `lint::template_sites`; the reads inside them come from the templates' syntax trees
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
//!
//! Modules: `walk` builds the field tree (what each path is written and read by), `report` turns it into the
//! schema, the field list and the warnings, `types` holds the JSON Schema helpers, `render` the three
//! renderings and `locate` maps templates back to their `file:line:col`.

mod locate;
mod render;
mod report;
#[cfg(test)]
mod tests;
mod types;
mod walk;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use flujo_template::{PathSegment, ReadUse};
use serde::Serialize;
use serde_json::Value;

use crate::check::FRAMEWORK_FIELDS;
use crate::decode::Decoder;
use crate::diagnostic::{Diagnostic, LoadFailure};
use crate::load::{load_str, read_limited, LoadOptions, Loaded};
use crate::raw::RawBlueprint;
use crate::yaml::{self, Loc, Node};
use crate::SkillCatalog;
use locate::Locator;
use types::Ty;

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
}
