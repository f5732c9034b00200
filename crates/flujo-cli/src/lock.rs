//! `flujo lock generate|verify|compare|show`: a lockfile pinning what a pipeline's behaviour depends on, by
//! content hash — the blueprint and every imported blueprint, the skill catalogs and the programs of command
//! skills, the agents' prompts (and prompt files), model ids, settings and prices, and chosen external files —
//! so that `flujo lock verify` in CI catches drift before a run does.
//!
//! The file is JSON with sorted keys (stable diffs). Hashes are BLAKE3 of the exact bytes (`blake3:HEX`);
//! structured entries (a skill's catalog entry, a model's settings) are hashed over their canonical JSON.
//! The original's lockfile names are kept where they mean the same (`schema_version`, `pipeline`, `skills`,
//! `prompts`, `models`, `external_files`); entries are keyed by what they pin (agent, skill id, path) rather
//! than by step, since one agent or skill serves many steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::*;

/// The lockfile format version this Flujo writes and reads.
pub const LOCK_SCHEMA_VERSION: u64 = 1;
/// The file name, in the project folder.
pub const LOCK_FILE: &str = "flujo.lock";
/// External-file globs match at most this many files (a guard against `**` over a huge tree).
const MAX_EXTERNAL_FILES: usize = 10_000;

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Write the lockfile of a pipeline (nothing is run).
    Generate(GenerateArgs),
    /// Compare the lockfile with the pipeline as it is now; exit 4 when anything drifted.
    Verify(VerifyArgs),
    /// The differences between two lockfiles.
    Compare(CompareArgs),
    /// A summary of a lockfile.
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The blueprint (default: the project's pipeline.yaml).
    #[arg(long, short = 'p')]
    pub pipeline: Option<PathBuf>,
    /// Where to write it (default: flujo.lock in the project folder).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Also pin files matching this glob, relative to the project folder (repeatable; adds to
    /// `[lockfile] external_files`).
    #[arg(long = "include-external", value_name = "GLOB")]
    pub include_external: Vec<String>,
    /// Leave models (ids, settings, prices) out (`[lockfile] include_model_info = false`).
    #[arg(long = "no-model-info")]
    pub no_model_info: bool,
    /// Overwrite an existing lockfile.
    #[arg(long, short = 'f')]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The lockfile (default: flujo.lock in the project folder).
    #[arg(long, short = 'l')]
    pub lockfile: Option<PathBuf>,
    /// The blueprint (default: the one the lockfile names, else the project's pipeline.yaml).
    #[arg(long, short = 'p')]
    pub pipeline: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text", alias = "output-format")]
    pub format: DiffFormat,
    /// Differences to ignore: entry kinds or keys, comma-separated (`models`, `prompts.writer`, `files.notes.md`).
    #[arg(long = "ignore-fields", value_name = "FIELDS")]
    pub ignore_fields: Option<String>,
    /// Accepted for the original's scripts: drift always fails `verify` here (exit 4).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    pub first: PathBuf,
    pub second: PathBuf,
    #[arg(long, value_enum, default_value = "text", alias = "output-format")]
    pub format: DiffFormat,
    #[arg(long = "ignore-fields", value_name = "FIELDS")]
    pub ignore_fields: Option<String>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[arg(long, short = 'l')]
    pub lockfile: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table", alias = "output-format")]
    pub format: ShowFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ShowFormat {
    Table,
    Json,
}

/// `[lockfile]` of flujo.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct LockSettings {
    pub external_files: Vec<String>,
    pub include_model_info: bool,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings { external_files: Vec::new(), include_model_info: true }
    }
}

pub async fn dispatch(cmd: LockCommand, config: &Config) -> Result<u8, CliError> {
    match cmd {
        LockCommand::Generate(args) => generate(args, config),
        LockCommand::Verify(args) => verify(args, config),
        LockCommand::Compare(args) => compare(args),
        LockCommand::Show(args) => show(args, config),
    }
}

fn project_dir(config: &Config) -> PathBuf {
    config.project_root.clone().unwrap_or_else(|| PathBuf::from("."))
}

fn default_lockfile(config: &Config) -> PathBuf {
    project_dir(config).join(LOCK_FILE)
}

fn generate(args: GenerateArgs, config: &Config) -> Result<u8, CliError> {
    let pipeline = args.pipeline.unwrap_or_else(|| config.default_pipeline());
    let output = args.output.unwrap_or_else(|| default_lockfile(config));
    if output.exists() && !args.force {
        return Err(CliError::config(format!(
            "lockfile already exists: {} (use --force to overwrite)",
            output.display()
        )));
    }
    let mut settings = config.lockfile.clone();
    settings.external_files.extend(args.include_external);
    if args.no_model_info {
        settings.include_model_info = false;
    }
    let lock = build(&pipeline, config, &settings)?;
    write_json(&output, &lock)?;
    errln!("lockfile generated: {}", output.display());
    Ok(EXIT_OK)
}

fn verify(args: VerifyArgs, config: &Config) -> Result<u8, CliError> {
    let file = args.lockfile.unwrap_or_else(|| default_lockfile(config));
    let old = read_lock(&file)?;
    // The blueprint the lockfile names (relative to the lockfile's folder), unless one is given.
    let pipeline = args.pipeline.unwrap_or_else(|| {
        old.pointer("/pipeline/file")
            .and_then(Value::as_str)
            .map(|f| file.parent().unwrap_or(Path::new(".")).join(f))
            .unwrap_or_else(|| config.default_pipeline())
    });
    let settings = LockSettings {
        external_files: old
            .pointer("/settings/external_files")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_else(|| config.lockfile.external_files.clone()),
        include_model_info: old.get("models").is_some(),
    };
    let new = build(&pipeline, config, &settings)?;
    let diff = diff_locks(&old, &new, &ignored(args.ignore_fields.as_deref()));
    print_diff(&diff, args.format, &file.display().to_string(), &pipeline.display().to_string());
    Ok(if diff.is_empty() { EXIT_OK } else { EXIT_VALIDATION })
}

fn compare(args: CompareArgs) -> Result<u8, CliError> {
    let a = read_lock(&args.first)?;
    let b = read_lock(&args.second)?;
    let diff = diff_locks(&a, &b, &ignored(args.ignore_fields.as_deref()));
    print_diff(&diff, args.format, &args.first.display().to_string(), &args.second.display().to_string());
    Ok(EXIT_OK)
}

fn show(args: ShowArgs, config: &Config) -> Result<u8, CliError> {
    let file = args.lockfile.unwrap_or_else(|| default_lockfile(config));
    let lock = read_lock(&file)?;
    match args.format {
        ShowFormat::Json => outln!("{}", serde_json::to_string_pretty(&lock).unwrap_or_default()),
        ShowFormat::Table => {
            let s = |p: &str| lock.pointer(p).and_then(Value::as_str).unwrap_or("-").to_owned();
            let n = |k: &str| lock.get(k).and_then(Value::as_array).map_or(0, Vec::len);
            outln!("lockfile        {}", file.display());
            outln!("schema version  {}", lock.get("schema_version").and_then(Value::as_u64).unwrap_or(0));
            outln!("pipeline        {} (version {})", s("/pipeline/name"), s("/pipeline/version"));
            outln!("blueprint       {} {}", s("/pipeline/file"), s("/pipeline/hash"));
            outln!("generated       {} by {}", s("/generated_at"), s("/generator"));
            outln!("files           {}", n("files"));
            outln!("skills          {}", n("skills"));
            outln!("prompts         {}", n("prompts"));
            if lock.get("models").is_some() {
                outln!("models          {}", n("models"));
            } else {
                outln!("models          (not pinned)");
            }
            outln!("external files  {}", n("external_files"));
        }
    }
    Ok(EXIT_OK)
}

fn read_lock(file: &Path) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        let hint =
            if e.kind() == std::io::ErrorKind::NotFound { " (create it with `flujo lock generate`)" } else { "" };
        CliError::config(format!("cannot read lockfile {}: {e}{hint}", file.display()))
    })?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::config(format!("lockfile {} is not valid JSON: {e}", file.display())))?;
    match v.get("schema_version").and_then(Value::as_u64) {
        Some(LOCK_SCHEMA_VERSION) => Ok(v),
        Some(other) => Err(CliError::config(format!(
            "lockfile {} has schema_version {other}; this Flujo reads version {LOCK_SCHEMA_VERSION}",
            file.display()
        ))),
        None => Err(CliError::config(format!("lockfile {} has no schema_version", file.display()))),
    }
}

fn write_json(file: &Path, v: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| CliError::config(format!("cannot write {}: {e}", file.display())))
}

pub fn hash_bytes(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

fn hash_json(v: &Value) -> String {
    // serde_json keeps map order as inserted (preserve_order); canonical form sorts keys.
    hash_bytes(canonical(v).to_string().as_bytes())
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A path as written into the lockfile: relative to `base` where it lies below it, with `/` separators.
fn rel(path: &Path, base: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (p, b) = (abs(path), abs(base));
    let shown = p.strip_prefix(&b).map(Path::to_path_buf).unwrap_or(p);
    shown.to_string_lossy().replace('\\', "/")
}

struct Builder<'a> {
    root: PathBuf,
    config: &'a Config,
    files: BTreeMap<String, Value>,
    prompts: BTreeMap<String, Value>,
    models: BTreeMap<String, Value>,
}

impl Builder<'_> {
    fn file(&mut self, path: &Path, role: &str) -> Result<String, CliError> {
        let bytes = std::fs::read(path)
            .map_err(|e| CliError::config(format!("cannot read {} to pin it: {e}", path.display())))?;
        let key = rel(path, &self.root);
        let hash = hash_bytes(&bytes);
        self.files.insert(key.clone(), json!({"path": key, "role": role, "hash": hash, "size": bytes.len()}));
        Ok(hash)
    }

    /// The agents of one blueprint level (`prefix` names the import chain: `child.`), then its imports.
    fn level(&mut self, bp: &Value, dir: &Path, prefix: &str, models: bool) -> Result<(), CliError> {
        if let Some(agents) = bp.get("agents").and_then(Value::as_object) {
            for (name, decl) in agents {
                let key = format!("{prefix}{name}");
                match decl.get("system_prompt") {
                    Some(Value::String(text)) => {
                        self.prompts.insert(key.clone(), json!({"agent": key, "hash": hash_bytes(text.as_bytes())}));
                    }
                    Some(Value::Object(spec)) => {
                        if let Some(f) = spec.get("from_file").and_then(Value::as_str) {
                            let path = dir.join(f);
                            let hash = self.file(&path, "prompt")?;
                            let mut entry = json!({"agent": key, "file": rel(&path, &self.root), "hash": hash});
                            if let Some(vars) = spec.get("variables") {
                                entry["variables_hash"] = json!(hash_json(vars));
                            }
                            self.prompts.insert(key.clone(), entry);
                        }
                    }
                    _ => {}
                }
                if models {
                    let model_id = decl.get("model").and_then(Value::as_str).unwrap_or("").to_owned();
                    let settings = decl.get("model_settings").cloned().unwrap_or(Value::Null);
                    let price = self.price(&model_id);
                    let mut entry =
                        json!({"agent": key, "model_id": model_id, "hyperparameters": settings, "price": price});
                    if let Some(schema) = decl.get("output_schema") {
                        entry["output_schema_hash"] = json!(hash_json(schema));
                    }
                    entry["hash"] = json!(hash_json(&entry));
                    self.models.insert(key, entry);
                }
            }
        }
        if let Some(imports) = bp.get("imports").and_then(Value::as_object) {
            for (alias, imp) in imports {
                let Some(path) = imp.get("path").and_then(Value::as_str) else { continue };
                let child = dir.join(path);
                self.file(&child, "import")?;
                let child_dir = child.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
                self.catalog_file(&child_dir)?;
                if let Some(child_bp) = imp.get("blueprint") {
                    self.level(child_bp, &child_dir, &format!("{prefix}{alias}."), models)?;
                }
            }
        }
        Ok(())
    }

    fn catalog_file(&mut self, dir: &Path) -> Result<(), CliError> {
        if let Some(path) = flujo_blueprint::catalog_path(dir) {
            self.file(&path, "skills")?;
        }
        Ok(())
    }

    /// The model's price as the run would charge it: `{prompt_tokens_per_1k, completion_tokens_per_1k}`, or
    /// `null` when it has none (lenient pricing).
    fn price(&self, model_id: &str) -> Value {
        let Some((provider, model)) = model_id.split_once(':') else { return Value::Null };
        let table = flujo_llm::PricingTable::from_toml(&self.config.table).unwrap_or_default();
        match table.price(provider, model) {
            Ok(Some(p)) => {
                json!({"prompt_tokens_per_1k": p.prompt_tokens_per_1k, "completion_tokens_per_1k": p.completion_tokens_per_1k})
            }
            _ => Value::Null,
        }
    }
}

/// Builds the lockfile of `pipeline` as it is now (nothing is run).
fn build(pipeline: &Path, config: &Config, settings: &LockSettings) -> Result<Value, CliError> {
    let builtins = flujo_skills::BuiltinRegistry::new();
    let opts =
        flujo_blueprint::LoadOptions { skip_canonical: false, ..crate::commands::load_options(&builtins, false) };
    let loaded = flujo_blueprint::load_file(pipeline, &opts).map_err(|f| {
        let text = flujo_blueprint::render_text(&f.diagnostics);
        CliError::new(
            "validation_failed",
            EXIT_VALIDATION,
            format!("{} does not validate, so it cannot be locked:\n{}", pipeline.display(), text.trim_end()),
        )
    })?;
    let root = project_dir(config);
    let mut b = Builder {
        root: root.clone(),
        config,
        files: BTreeMap::new(),
        prompts: BTreeMap::new(),
        models: BTreeMap::new(),
    };
    let bp_hash = b.file(pipeline, "blueprint")?;
    let dir = pipeline.parent().map(Path::to_path_buf).unwrap_or_default();
    b.catalog_file(&dir)?;
    b.level(&loaded.canonical, &dir, "", settings.include_model_info)?;

    // Skills: every catalog entry (the root's and the imports'), and the programs of command skills that are
    // files of the project.
    let mut skills = Vec::new();
    for skill in loaded.catalog.ids().filter_map(|id| loaded.catalog.get(id)) {
        let entry = serde_json::to_value(skill).unwrap_or(Value::Null);
        let kind = if skill.command.is_some() {
            "command"
        } else if skill.http.is_some() {
            "http"
        } else {
            "declared"
        };
        let mut item = json!({"skill_id": skill.id, "kind": kind, "hash": hash_json(&entry)});
        if let Some(cmd) = &skill.command {
            let mut programs = Vec::new();
            for arg in cmd {
                let p = loaded.base_dir.join(arg);
                if (arg.contains('/') || arg.contains('.')) && p.is_file() {
                    programs.push(json!({"path": rel(&p, &root), "hash": b.file(&p, "program")?}));
                }
            }
            if !programs.is_empty() {
                item["programs"] = Value::Array(programs);
            }
        }
        skills.push(item);
    }
    skills.sort_by(|a, b| a["skill_id"].as_str().cmp(&b["skill_id"].as_str()));

    let mut external = Vec::new();
    for (path, size, hash) in external_files(&root, &settings.external_files)? {
        external.push(json!({"path": path, "size": size, "hash": hash}));
    }

    let name = loaded.pipeline.name.clone();
    let mut lock = Map::new();
    lock.insert("schema_version".into(), json!(LOCK_SCHEMA_VERSION));
    lock.insert("generator".into(), json!(format!("flujo {}", env!("CARGO_PKG_VERSION"))));
    lock.insert("generated_at".into(), json!(crate::lens::format_ts(crate::lens::now_ms())));
    lock.insert(
        "pipeline".into(),
        json!({
            "name": name,
            "version": loaded.canonical.get("version").and_then(Value::as_str).unwrap_or("0.1"),
            "file": rel(pipeline, &root),
            "hash": bp_hash,
            "canonical_hash": hash_json(&loaded.canonical),
        }),
    );
    lock.insert("files".into(), Value::Array(b.files.into_values().collect()));
    lock.insert("skills".into(), Value::Array(skills));
    lock.insert("prompts".into(), Value::Array(b.prompts.into_values().collect()));
    if settings.include_model_info {
        lock.insert("models".into(), Value::Array(b.models.into_values().collect()));
    }
    lock.insert("external_files".into(), Value::Array(external));
    lock.insert("settings".into(), json!({"external_files": settings.external_files}));
    Ok(Value::Object(lock))
}

/// `(relative path, size, hash)` of every file under `root` matching one of `globs` (sorted).
fn external_files(root: &Path, globs: &[String]) -> Result<Vec<(String, u64, String)>, CliError> {
    if globs.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                    stack.push(path);
                }
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let relp = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            if globs.iter().any(|g| glob_path(g.trim_start_matches("./"), &relp)) {
                seen += 1;
                if seen > MAX_EXTERNAL_FILES {
                    return Err(CliError::config(format!(
                        "external file globs match more than {MAX_EXTERNAL_FILES} files; narrow them"
                    )));
                }
                let bytes = std::fs::read(&path)
                    .map_err(|e| CliError::config(format!("cannot read {} to pin it: {e}", path.display())))?;
                out.insert(relp, (bytes.len() as u64, hash_bytes(&bytes)));
            }
        }
    }
    Ok(out.into_iter().map(|(p, (s, h))| (p, s, h)).collect())
}

/// A path glob: `**` crosses folders, `*` and `?` stay within one.
fn glob_path(glob: &str, path: &str) -> bool {
    fn go(g: &[u8], p: &[u8]) -> bool {
        match g.first() {
            None => p.is_empty(),
            Some(b'*') if g.get(1) == Some(&b'*') => {
                let rest = g[2..].strip_prefix(b"/").unwrap_or(&g[2..]);
                (0..=p.len()).any(|i| (i == 0 || p[i - 1] == b'/') && go(rest, &p[i..])) || go(rest, p)
            }
            Some(b'*') => (0..=p.len()).take_while(|&i| i == 0 || p[i - 1] != b'/').any(|i| go(&g[1..], &p[i..])),
            Some(b'?') => p.first().is_some_and(|c| *c != b'/') && go(&g[1..], &p[1..]),
            Some(c) => p.first() == Some(c) && go(&g[1..], &p[1..]),
        }
    }
    go(glob.as_bytes(), path.as_bytes())
}

/// One difference between two lockfiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `pipeline`, `files`, `skills`, `prompts`, `models`, `external_files`.
    pub section: &'static str,
    pub key: String,
    /// `changed`, `added` (only in the second), `removed` (only in the first).
    pub what: &'static str,
    pub old: Option<String>,
    pub new: Option<String>,
}

const SECTIONS: &[(&str, &str)] =
    &[("files", "path"), ("skills", "skill_id"), ("prompts", "agent"), ("models", "agent"), ("external_files", "path")];

fn ignored(fields: Option<&str>) -> Vec<String> {
    fields.map(|f| f.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
}

fn diff_locks(a: &Value, b: &Value, ignore: &[String]) -> Vec<Change> {
    let skip = |section: &str, key: &str| {
        let full = format!("{section}.{key}");
        ignore.iter().any(|i| *i == section || full == *i || full.starts_with(&format!("{i}.")))
    };
    let mut out = Vec::new();
    // (The blueprint's own hash is compared as `files.PATH`.)
    for field in ["name", "version"] {
        let (x, y) = (a.pointer(&format!("/pipeline/{field}")), b.pointer(&format!("/pipeline/{field}")));
        if x != y && !skip("pipeline", field) {
            out.push(Change {
                section: "pipeline",
                key: field.to_owned(),
                what: "changed",
                old: x.map(short),
                new: y.map(short),
            });
        }
    }
    for (section, key_field) in SECTIONS {
        let index = |v: &Value| -> BTreeMap<String, Value> {
            v.get(*section)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.get(*key_field).and_then(Value::as_str).map(|k| (k.to_owned(), i.clone())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (x, y) = (index(a), index(b));
        for (k, old) in &x {
            if skip(section, k) {
                continue;
            }
            match y.get(k) {
                None => {
                    out.push(Change { section, key: k.clone(), what: "removed", old: Some(summary(old)), new: None })
                }
                Some(new) if new.get("hash") != old.get("hash") || new.get("programs") != old.get("programs") => out
                    .push(Change {
                        section,
                        key: k.clone(),
                        what: "changed",
                        old: Some(summary(old)),
                        new: Some(summary(new)),
                    }),
                Some(_) => {}
            }
        }
        for (k, new) in &y {
            if !x.contains_key(k) && !skip(section, k) {
                out.push(Change { section, key: k.clone(), what: "added", old: None, new: Some(summary(new)) });
            }
        }
    }
    out
}

fn short(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// What an entry pins, in a few words: the model id for models, else the hash.
fn summary(v: &Value) -> String {
    let hash = v.get("hash").and_then(Value::as_str).unwrap_or("");
    let hash = hash.get(..19).unwrap_or(hash);
    match v.get("model_id").and_then(Value::as_str) {
        Some(m) => format!("{m} {hash}"),
        None => hash.to_owned(),
    }
}

fn print_diff(diff: &[Change], format: DiffFormat, a: &str, b: &str) {
    match format {
        DiffFormat::Json => {
            let changes: Vec<Value> = diff
                .iter()
                .map(|c| json!({"section": c.section, "key": c.key, "change": c.what, "old": c.old, "new": c.new}))
                .collect();
            outln!("{}", json!({"has_differences": !diff.is_empty(), "changes": changes}));
        }
        DiffFormat::Text if diff.is_empty() => outln!("no differences: {b} matches {a}"),
        DiffFormat::Markdown if diff.is_empty() => outln!("No differences between `{a}` and `{b}`."),
        DiffFormat::Text => {
            outln!("{} difference(s) between {a} and {b}:", diff.len());
            for c in diff {
                let detail = match (c.what, &c.old, &c.new) {
                    ("changed", Some(o), Some(n)) => format!("{o} -> {n}"),
                    (_, Some(o), None) => o.clone(),
                    (_, None, Some(n)) => n.clone(),
                    _ => String::new(),
                };
                outln!("  {:<8} {}.{}  {detail}", c.what, c.section, c.key);
            }
        }
        DiffFormat::Markdown => {
            outln!("| change | entry | before | after |\n|---|---|---|---|");
            for c in diff {
                out!(
                    "| {} | `{}.{}` | {} | {} |\n",
                    c.what,
                    c.section,
                    c.key,
                    c.old.as_deref().unwrap_or(""),
                    c.new.as_deref().unwrap_or("")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs() {
        assert!(glob_path("docs/*.md", "docs/a.md"));
        assert!(!glob_path("docs/*.md", "docs/x/a.md"));
        assert!(glob_path("docs/**/*.md", "docs/x/y/a.md"));
        assert!(glob_path("docs/**/*.md", "docs/a.md"));
        assert!(glob_path("**/*.json", "a/b/c.json"));
        assert!(glob_path("data?.csv", "data1.csv"));
        assert!(!glob_path("*.csv", "x/data1.csv"));
    }

    #[test]
    fn diffs_by_entry() {
        let a = json!({"pipeline": {"name": "p", "version": "0.1"}, "prompts": [{"agent": "w", "hash": "a"}], "models": [{"agent": "w", "model_id": "openai:gpt-4o", "hash": "m"}]});
        let b = json!({"pipeline": {"name": "p", "version": "0.2"}, "prompts": [{"agent": "w", "hash": "b"}, {"agent": "r", "hash": "c"}]});
        let d = diff_locks(&a, &b, &[]);
        let kinds: Vec<(&str, &str, &str)> = d.iter().map(|c| (c.section, c.key.as_str(), c.what)).collect();
        assert_eq!(
            kinds,
            [
                ("pipeline", "version", "changed"),
                ("prompts", "w", "changed"),
                ("prompts", "r", "added"),
                ("models", "w", "removed")
            ]
        );
        assert_eq!(diff_locks(&a, &b, &["prompts".into(), "models.w".into(), "pipeline".into()]), []);
    }
}
