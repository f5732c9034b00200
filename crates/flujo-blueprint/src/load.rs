//! Loading: reads a blueprint file and everything it pulls in (imports, `skills.yaml`, prompt files), runs
//! decode → check → lower on each file, and gathers every diagnostic.
//!
//! Imports are resolved relative to the importing file and loaded recursively; each file is loaded once per
//! load (diamond imports share the child pipeline), cycles are reported with their chain (`BP-IMPORT-CYCLE`)
//! and the chain depth is bounded (`BP-LIMIT`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use flujo_core::{Pipeline, SkillRegistry};
use serde_json::{Map, Value};

use crate::catalog::SkillCatalog;
use crate::decode::Decoder;
use crate::diagnostic::{Diagnostic, LoadFailure, Severity};
use crate::lower::Lowerer;
use crate::raw::{RawAgentDecl, RawKind, RawPrompt, RawStep, Sp};
use crate::rules;
use crate::yaml::{self, Loc};
use crate::{check, AgentDecl};

/// Deepest chain of imports (a blueprint importing a blueprint importing …).
pub const MAX_IMPORT_DEPTH: usize = 32;

/// How to load a blueprint.
#[derive(Clone, Default)]
pub struct LoadOptions<'a> {
    /// The skill registry to check skill ids and params against. `None` checks only the skills catalog and
    /// Python import paths (unknown ids are not reported).
    pub registry: Option<&'a dyn SkillRegistry>,
    /// Treat warnings as errors.
    pub strict: bool,
    /// Step kinds registered by the user (each needs a `StepPolicy` in the engine); such steps become
    /// [`flujo_core::StepKind::Custom`] with their kind-specific fields as `spec`.
    pub custom_kinds: Vec<String>,
    /// Allow imports outside the importing blueprint's folder (`--allow-imports-outside`, `[imports]
    /// allow_outside = true`). By default an import must lie in the folder of the blueprint that declares it,
    /// or below it, like `system_prompt.from_file` (`BP-IMPORT-OUTSIDE`).
    pub allow_imports_outside: bool,
    /// Model providers configured besides [`flujo_core::limits::BUILTIN_PROVIDERS`] (`[providers.NAME]`).
    pub providers: Vec<String>,
    /// MCP servers declared by the caller's configuration (`[mcp.servers.NAME]` of `flujo.toml`), which
    /// `mcp.NAME.TOOL` ids may name besides the blueprint's own `mcp_servers:`.
    pub mcp_servers: Vec<String>,
    /// Asks MCP servers whether they offer the tools `mcp.NAME.TOOL` ids name (`flujo validate`); `None`
    /// checks only that the server is declared.
    pub mcp_tools: Option<&'a dyn crate::McpToolCheck>,
    /// Leave [`Loaded::canonical`] `Null` instead of building it (a JSON copy of every file: a fifth of the
    /// loading time of a large blueprint). `flujo validate` and `flujo run` do not read it; `flujo lock` and
    /// `flujo serve` do.
    pub skip_canonical: bool,
}

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("registry", &self.registry.map(|_| "dyn SkillRegistry"))
            .field("strict", &self.strict)
            .field("custom_kinds", &self.custom_kinds)
            .field("allow_imports_outside", &self.allow_imports_outside)
            .field("providers", &self.providers)
            .field("mcp_servers", &self.mcp_servers)
            .field("mcp_tools", &self.mcp_tools.map(|_| "dyn McpToolCheck"))
            .field("skip_canonical", &self.skip_canonical)
            .finish()
    }
}

/// A successfully loaded blueprint.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub pipeline: Pipeline,
    /// Warnings and notes (there are no errors, or loading would have failed).
    pub diagnostics: Vec<Diagnostic>,
    /// The skills declared in `skills.yaml` next to the blueprint and next to each imported blueprint.
    pub catalog: SkillCatalog,
    /// The root blueprint's `agents:`.
    pub agents: BTreeMap<String, AgentDecl>,
    /// The blueprint as canonical JSON: the document with each import's path replaced by
    /// `{"path": PATH, "blueprint": CHILD_CANONICAL}`. `Null` when loaded with
    /// [`LoadOptions::skip_canonical`].
    pub canonical: Value,
    /// The folder of the blueprint (imports, prompt files and command skills are relative to it).
    pub base_dir: PathBuf,
    /// The MCP servers declared under `mcp_servers:` by the blueprint and its imports (the first
    /// declaration of a name; a different one is `BP-MCP-SERVER`).
    pub mcp_servers: Vec<crate::McpServerDecl>,
}

/// Loads and validates a blueprint file; any error diagnostic makes it a [`LoadFailure`].
pub fn load_file(path: &Path, opts: &LoadOptions<'_>) -> Result<Loaded, LoadFailure> {
    finish(run(Source::File(path), opts), opts)
}

/// Loads and validates blueprint text; `file` names it in diagnostics and its folder anchors relative paths.
pub fn load_str(yaml: &str, file: &Path, opts: &LoadOptions<'_>) -> Result<Loaded, LoadFailure> {
    finish(run(Source::Text(yaml, file), opts), opts)
}

/// Every diagnostic of a blueprint file (errors, warnings, notes), for `flujo validate`.
pub fn validate_file(path: &Path, opts: &LoadOptions<'_>) -> Vec<Diagnostic> {
    let out = run(Source::File(path), opts);
    apply_strict(out.diagnostics, opts)
}

/// Every diagnostic of blueprint text.
pub fn validate_str(yaml: &str, file: &Path, opts: &LoadOptions<'_>) -> Vec<Diagnostic> {
    let out = run(Source::Text(yaml, file), opts);
    apply_strict(out.diagnostics, opts)
}

#[derive(Clone, Copy)]
enum Source<'s> {
    File(&'s Path),
    Text(&'s str, &'s Path),
}

#[derive(Default)]
struct Outcome {
    loaded: Option<Loaded>,
    diagnostics: Vec<Diagnostic>,
}

fn apply_strict(mut diags: Vec<Diagnostic>, opts: &LoadOptions<'_>) -> Vec<Diagnostic> {
    if opts.strict {
        for d in &mut diags {
            if d.severity == Severity::Warning {
                d.severity = Severity::Error;
            }
        }
    }
    diags
}

fn finish(out: Outcome, opts: &LoadOptions<'_>) -> Result<Loaded, LoadFailure> {
    let diagnostics = apply_strict(out.diagnostics, opts);
    match out.loaded {
        Some(mut loaded) if !diagnostics.iter().any(Diagnostic::is_error) => {
            loaded.diagnostics = diagnostics;
            Ok(loaded)
        }
        _ => Err(LoadFailure { diagnostics }),
    }
}

/// Loads on a thread with a stack sized for the deepest accepted YAML (see [`yaml::with_parser_stack`]).
fn run(source: Source<'_>, opts: &LoadOptions<'_>) -> Outcome {
    yaml::with_parser_stack(|| run_here(source, opts))
}

fn run_here(source: Source<'_>, opts: &LoadOptions<'_>) -> Outcome {
    let path = match &source {
        Source::File(p) | Source::Text(_, p) => *p,
    };
    let base_dir = parent_dir(path);
    let mut loader = Loader {
        opts,
        diags: Vec::new(),
        catalog: SkillCatalog::default(),
        catalog_dirs: HashSet::new(),
        stack: Vec::new(),
        cache: HashMap::new(),
        root_dir: base_dir.clone(),
        mcp_servers: Vec::new(),
    };
    let result = match source {
        Source::File(p) => loader.load_path(p, None, false),
        Source::Text(text, p) => {
            loader.stack.push(canonical_or_same(p));
            let r = loader.load_text(text, p, false);
            loader.stack.pop();
            Some(r)
        }
    };
    // Release the loader's references to the pipelines so the root one is not deep-copied below.
    drop(std::mem::take(&mut loader.cache));
    let diagnostics = sort_diagnostics(loader.diags);
    let loaded = result.and_then(|r| {
        let FileResult { pipeline, canonical, agents } = r;
        Some(Loaded {
            pipeline: Arc::try_unwrap(pipeline).unwrap_or_else(|arc| (*arc).clone()),
            diagnostics: Vec::new(),
            catalog: loader.catalog,
            agents: agents?,
            canonical,
            base_dir,
            mcp_servers: loader.mcp_servers,
        })
    });
    Outcome { loaded, diagnostics }
}

/// Orders diagnostics by file (in order of first appearance), then position; drops exact duplicates.
fn sort_diagnostics(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut files: HashMap<PathBuf, usize> = HashMap::new();
    for d in &diags {
        let next = files.len();
        files.entry(d.file.clone()).or_insert(next);
    }
    let mut keyed: Vec<(usize, Diagnostic)> =
        diags.into_iter().map(|d| (files.get(&d.file).copied().unwrap_or(0), d)).collect();
    keyed.sort_by(|(fa, a), (fb, b)| {
        (fa, a.line, a.column, &a.rule, &a.message, &a.suggestion).cmp(&(
            fb,
            b.line,
            b.column,
            &b.rule,
            &b.message,
            &b.suggestion,
        ))
    });
    keyed.dedup_by(|(_, a), (_, b)| a == b);
    keyed.into_iter().map(|(_, d)| d).collect()
}

#[derive(Clone)]
struct FileResult {
    pipeline: Arc<Pipeline>,
    canonical: Value,
    /// `None` when the file could not be parsed at all.
    agents: Option<BTreeMap<String, AgentDecl>>,
}

struct Loader<'o> {
    opts: &'o LoadOptions<'o>,
    diags: Vec<Diagnostic>,
    catalog: SkillCatalog,
    catalog_dirs: HashSet<PathBuf>,
    /// Canonical paths of the files being loaded (the import chain).
    stack: Vec<PathBuf>,
    /// Canonical path → result, so each file is loaded once.
    cache: HashMap<(PathBuf, bool), FileResult>,
    /// The folder of the root blueprint: imports (at any depth) must lie inside it unless allowed.
    root_dir: PathBuf,
    /// The `mcp_servers:` of every file loaded so far (the first declaration of each name).
    mcp_servers: Vec<crate::McpServerDecl>,
}

impl Loader<'_> {
    /// Loads a file from disk. `from` is the import declaration that pulls it in (for diagnostics).
    /// `from` is the importing file, the location of the import and the path as written there; `inherits`
    /// is set when an importing step passes its context down (`inherit_context: true`).
    fn load_path(&mut self, path: &Path, from: Option<(&Path, Loc, &str)>, inherits: bool) -> Option<FileResult> {
        let report = |loader: &mut Self, rule: &str, message: String, suggestion: Option<String>| {
            let d = match from {
                Some((file, loc, _)) => Diagnostic::at(rule, file, loc, message),
                None => Diagnostic::new(rule, path, 0, 0, message),
            };
            loader.diags.push(Diagnostic { suggestion, ..d });
        };
        let shown = match from {
            Some((_, _, written)) => format!("import `{written}`"),
            None => path.display().to_string(),
        };
        let canonical = match std::fs::canonicalize(path) {
            Ok(c) => c,
            Err(e) => {
                let rule = if from.is_some() { rules::BP_IMPORT_MISSING } else { rules::BP_IO };
                report(self, rule, format!("cannot open {shown}: {}", io_message(&e)), None);
                return None;
            }
        };
        if let Some(pos) = self.stack.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.stack[pos..].iter().chain([&canonical]).map(|p| display_name(p)).collect();
            report(self, rules::BP_IMPORT_CYCLE, format!("import cycle: {}", chain.join(" → ")), None);
            return None;
        }
        if self.stack.len() > MAX_IMPORT_DEPTH {
            report(self, rules::BP_LIMIT, format!("imports are nested deeper than {MAX_IMPORT_DEPTH} levels"), None);
            return None;
        }
        if let Some(done) = self.cache.get(&(canonical.clone(), inherits)) {
            return Some(done.clone());
        }
        let bytes = match read_limited(path) {
            Ok(b) => b,
            Err(ReadError::TooLarge(n)) => {
                self.diags.push(Diagnostic::new(
                    rules::BP_LIMIT,
                    path,
                    1,
                    1,
                    format!("file is {n} bytes; the limit is {} bytes (4 MiB)", yaml::MAX_BLUEPRINT_BYTES),
                ));
                return None;
            }
            Err(ReadError::Io(e)) => {
                let rule = if from.is_some() { rules::BP_IMPORT_MISSING } else { rules::BP_IO };
                report(self, rule, format!("cannot read {shown}: {}", io_message(&e)), None);
                return None;
            }
        };
        let text = match yaml::decode_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(Diagnostic::at(e.rule, path, e.loc, e.message));
                return None;
            }
        };
        self.stack.push(canonical.clone());
        let result = self.load_text(text, path, inherits);
        self.stack.pop();
        self.cache.insert((canonical, inherits), result.clone());
        Some(result)
    }

    /// Decodes, checks and lowers one blueprint text (its imports loaded recursively). `inherits`: the
    /// context comes from an importing pipeline, so keys it reads may exist without being produced here.
    fn load_text(&mut self, text: &str, file: &Path, inherits: bool) -> FileResult {
        let dir = parent_dir(file);
        self.load_catalog(&dir);
        let default_name =
            file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into());
        let node = match yaml::parse(text) {
            Ok(node) => node,
            Err(e) => {
                self.diags.push(Diagnostic::at(e.rule, file, e.loc, e.message));
                return FileResult {
                    pipeline: Arc::new(Pipeline::new(default_name, Vec::new())),
                    canonical: Value::Null,
                    agents: None,
                };
            }
        };
        let mut d = Decoder::new(file, &self.opts.custom_kinds);
        let raw = d.blueprint(&node);
        check::check(&raw, &mut d, inherits);
        for decl in &raw.mcp_servers {
            match self.mcp_servers.iter().find(|s| s.name == decl.name) {
                None => self.mcp_servers.push(decl.clone()),
                Some(first) if first.file == decl.file || same_server(first, decl) => {}
                Some(first) => d.report(
                    rules::BP_MCP_SERVER,
                    decl.loc,
                    format!(
                        "MCP server `{}` is declared differently in {} (one process keeps one server per name)",
                        decl.name,
                        display_name(&first.file)
                    ),
                ),
            }
        }

        // Imports: alias → child pipeline (+ canonical form for this file's canonical JSON).
        let mut imports: HashMap<String, Arc<Pipeline>> = HashMap::new();
        let mut import_canon: Map<String, Value> = Map::new();
        for (alias, path) in &raw.imports {
            let child_path = normalize(&dir.join(&path.v));
            if !self.opts.allow_imports_outside && !within(&self.root_dir, &child_path) {
                d.report_with(
                    rules::BP_IMPORT_OUTSIDE,
                    path.loc,
                    format!(
                        "import `{}` (`{}`) is outside the folder of the blueprint being loaded",
                        alias.v, path.v
                    ),
                    Some(
                        "move the imported blueprint into this folder or below it, or allow it explicitly: \
                         `flujo run/validate --allow-imports-outside`, or `[imports] allow_outside = true` in flujo.toml"
                            .to_owned(),
                    ),
                );
                imports.insert(alias.v.clone(), Arc::new(Pipeline::new(alias.v.clone(), Vec::new())));
                import_canon.insert(alias.v.clone(), serde_json::json!({"path": path.v, "blueprint": Value::Null}));
                continue;
            }
            let inherited = raw.steps.iter().any(|s| inherits_import(s, &alias.v));
            let child = self.load_path(&child_path, Some((file, path.loc, &path.v)), inherited);
            let (pipeline, canon) = match child {
                Some(c) => (c.pipeline, c.canonical),
                None => (Arc::new(Pipeline::new(alias.v.clone(), Vec::new())), Value::Null),
            };
            imports.insert(alias.v.clone(), pipeline);
            import_canon.insert(alias.v.clone(), serde_json::json!({"path": path.v, "blueprint": canon}));
        }

        let agents = self.agents(&raw.agents, &dir, &mut d);
        for (name, decl) in &raw.agents {
            for model in decl.model.iter().chain(&decl.fallback_models) {
                check_model_id(&model.v, model.loc, &name.v, &self.opts.providers, &mut d);
            }
        }
        let mcp = crate::decode::mcp::McpScope::new(&self.mcp_servers, &self.opts.mcp_servers, self.opts.mcp_tools);
        let pipeline = {
            let mut lower = Lowerer {
                d: &mut d,
                agents: &agents,
                imports: &imports,
                registry: self.opts.registry,
                catalog: &self.catalog,
                mcp: &mcp,
            };
            for (name, decl) in &raw.agents {
                for tool in &decl.tools {
                    lower.check_skill(tool, &Value::Null, &format!("a tool of agent `{}`", name.v), true);
                }
            }
            lower.pipeline(&raw, &default_name)
        };
        self.diags.append(&mut d.diags);

        let mut canonical = if self.opts.skip_canonical { Value::Null } else { node.to_json() };
        if let (Some(obj), false) = (canonical.as_object_mut(), import_canon.is_empty()) {
            obj.insert("imports".to_owned(), Value::Object(import_canon));
        }
        FileResult { pipeline: Arc::new(pipeline), canonical, agents: Some(agents) }
    }

    fn load_catalog(&mut self, dir: &Path) {
        let key = canonical_or_same(dir);
        if !self.catalog_dirs.insert(key) {
            return;
        }
        let (catalog, mut diags) = SkillCatalog::load_dir_here(dir);
        self.catalog.merge(&catalog);
        self.diags.append(&mut diags);
    }

    fn agents(
        &mut self,
        raw: &[(Sp<String>, RawAgentDecl)],
        dir: &Path,
        d: &mut Decoder<'_>,
    ) -> BTreeMap<String, AgentDecl> {
        let mut out = BTreeMap::new();
        for (name, decl) in raw {
            let Some(model) = &decl.model else { continue };
            let mut agent = AgentDecl {
                name: name.v.clone(),
                model: model.v.clone(),
                fallback_models: decl.fallback_models.iter().map(|m| m.v.clone()).collect(),
                system_prompt: None,
                system_prompt_file: None,
                system_prompt_variables: Map::new(),
                output_schema: decl.output_schema.clone(),
                model_settings: decl.model_settings.clone(),
                timeout_s: decl.timeout_s,
                max_retries: decl.max_retries,
                tools: decl.tools.iter().map(|t| t.v.clone()).collect(),
                declaration: decl.json.clone(),
            };
            match &decl.system_prompt {
                Some(RawPrompt::Text(t)) => agent.system_prompt = Some(t.clone()),
                Some(RawPrompt::File { path, variables }) => {
                    let full = normalize(&dir.join(&path.v));
                    if !inside_folder(dir, Path::new(&path.v)) {
                        d.report_with(
                            rules::BP_PROMPT_FILE,
                            path.loc,
                            format!(
                                "the system prompt file of agent `{}` (`{}`) is outside the blueprint's folder",
                                name.v, path.v
                            ),
                            Some("put the prompt file in the blueprint's folder or below it".to_owned()),
                        );
                    } else {
                        match read_limited(&full) {
                            Ok(bytes) => match String::from_utf8(bytes) {
                                Ok(text) => {
                                    d.check_template(
                                        &text,
                                        path.loc,
                                        &format!("the system prompt file of agent `{}`", name.v),
                                    );
                                    agent.system_prompt = Some(text);
                                }
                                Err(_) => d.report(
                                    rules::BP_PROMPT_FILE,
                                    path.loc,
                                    format!("`{}` is not valid UTF-8", path.v),
                                ),
                            },
                            Err(e) => d.report(
                                rules::BP_PROMPT_FILE,
                                path.loc,
                                format!("cannot read the system prompt of agent `{}` from `{}`: {e}", name.v, path.v),
                            ),
                        }
                    }
                    agent.system_prompt_file = Some(full);
                    agent.system_prompt_variables = variables.clone();
                }
                None => {}
            }
            out.insert(name.v.clone(), agent);
        }
        out
    }
}

/// Two declarations of one MCP server that start the same server.
fn same_server(a: &crate::McpServerDecl, b: &crate::McpServerDecl) -> bool {
    (&a.command, &a.env, &a.url, &a.headers, a.timeout_s) == (&b.command, &b.env, &b.url, &b.headers, b.timeout_s)
        && (a.command.is_none() || a.cwd == b.cwd)
}

/// `BP-MODEL` unless `model` is `provider:model` with a known provider (built in or configured).
fn check_model_id(model: &str, loc: Loc, agent: &str, configured: &[String], d: &mut Decoder<'_>) {
    let providers: Vec<&str> =
        flujo_core::limits::BUILTIN_PROVIDERS.iter().copied().chain(configured.iter().map(String::as_str)).collect();
    let known = providers.join(", ");
    match model.split_once(':') {
        Some((provider, name)) if providers.contains(&provider) => {
            if name.trim().is_empty() {
                d.report_with(
                    rules::BP_MODEL,
                    loc,
                    format!("the model of agent `{agent}` (`{model}`) names no model after `{provider}:`"),
                    Some(format!("e.g. `{provider}:{}`", if provider == "mock" { "echo" } else { "MODEL" })),
                );
            }
        }
        Some((provider, name)) => {
            let suggestion = crate::suggest::closest(provider, providers.iter().copied())
                .map(|p| format!("did you mean `{p}:{name}`?"))
                .unwrap_or_else(|| format!("known providers: {known} (add others as [providers.NAME] in flujo.toml)"));
            d.report_with(
                rules::BP_MODEL,
                loc,
                format!("the model of agent `{agent}` (`{model}`) has an unknown provider `{provider}`"),
                Some(suggestion),
            );
        }
        None => {
            let lower = model.to_lowercase();
            let provider = if lower.starts_with("claude") {
                "anthropic"
            } else if lower.starts_with("gpt")
                || lower.starts_with("o1")
                || lower.starts_with("o3")
                || lower.starts_with("o4")
                || lower.starts_with("chatgpt")
            {
                "openai"
            } else {
                ""
            };
            let suggestion = if provider.is_empty() || model.trim().is_empty() {
                format!("write `provider:model`; known providers: {known}")
            } else {
                format!("did you mean `{provider}:{model}`?")
            };
            d.report_with(
                rules::BP_MODEL,
                loc,
                format!(
                    "the model of agent `{agent}` (`{model}`) has no provider; models are written `provider:model`"
                ),
                Some(suggestion),
            );
        }
    }
}

pub(crate) enum ReadError {
    TooLarge(u64),
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(n) => write!(f, "file is {n} bytes (limit {} bytes)", yaml::MAX_BLUEPRINT_BYTES),
            ReadError::Io(e) => f.write_str(&io_message(e)),
        }
    }
}

/// An I/O error in words that do not depend on the platform for the common cases.
pub(crate) fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "file not found".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => e.to_string(),
    }
}

/// Reads a regular file of at most [`yaml::MAX_BLUEPRINT_BYTES`] (checked before reading it whole). Anything
/// else is refused before it is opened: opening a FIFO blocks until a writer appears, and reading a terminal
/// or `/dev/stdin` waits for input, so an import or prompt file naming one would hang the load.
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if meta.is_dir() {
        return Err(ReadError::Io(std::io::ErrorKind::IsADirectory.into()));
    }
    if !meta.is_file() {
        return Err(ReadError::Io(std::io::Error::other("not a regular file")));
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let limit = yaml::MAX_BLUEPRINT_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(limit + 1);
        return Err(ReadError::TooLarge(size));
    }
    Ok(bytes)
}

/// True when `step` (or a step inside it) imports `alias` with `inherit_context: true`.
fn inherits_import(step: &RawStep, alias: &str) -> bool {
    if let RawKind::Import { alias: a, inherit_context: true, .. } = &step.kind {
        if a.v == alias {
            return true;
        }
    }
    step.child_sequences().iter().any(|seq| seq.iter().any(|s| inherits_import(s, alias)))
        || step.single_children().iter().any(|s| inherits_import(s, alias))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn canonical_or_same(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether `rel` (as written in a blueprint in `dir`) names a file inside `dir`: not absolute, no `..` that
/// climbs out, and — when the file exists — its real path (symbolic links followed) under `dir`'s real path.
fn inside_folder(dir: &Path, rel: &Path) -> bool {
    let mut depth = 0usize;
    for c in rel.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    match (std::fs::canonicalize(dir), std::fs::canonicalize(dir.join(rel))) {
        (Ok(d), Ok(f)) => f.starts_with(d),
        // A file that does not exist is reported by the read.
        _ => true,
    }
}

/// Whether `path` lies in `root` or below it: by real paths (symbolic links followed) when both exist, else
/// lexically (`..` resolved against the absolute path).
fn within(root: &Path, path: &Path) -> bool {
    if let (Ok(r), Ok(p)) = (std::fs::canonicalize(root), std::fs::canonicalize(path)) {
        return p.starts_with(r);
    }
    let lexical = |p: &Path| -> Option<PathBuf> {
        let abs = std::path::absolute(p).ok()?;
        let mut out = PathBuf::new();
        for c in abs.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        Some(out)
    };
    match (lexical(root), lexical(path)) {
        (Some(r), Some(p)) => p.starts_with(r),
        _ => false,
    }
}

/// Removes `.` components (`dir/./child.yaml` → `dir/child.yaml`) for readable diagnostics.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        if c != Component::CurDir {
            out.push(c);
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// A file's name for cycle chains.
fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
