//! `flujo dev import-openapi SPEC`: reads an OpenAPI 3.0/3.1 document (JSON or YAML), converts its operations
//! to `http` skills (`flujo_skills::openapi`) and merges them into a `skills.yaml`
//! (`flujo_blueprint::catalog_write`): entries this command wrote earlier from the same document are
//! replaced, everything else is kept as written.
//!
//! Exit codes follow `flujo validate`: a document that cannot be found or read is a configuration error (2);
//! one that is not valid JSON/YAML or not OpenAPI 3.x, or a catalog that cannot be merged into, is invalid
//! input (4); `--tag`/`--operation` that select nothing are usage errors (2).

use std::path::{Component, Path, PathBuf};

use clap::Args;
use flujo_blueprint::catalog_write::{merge_entries, NewEntry};
use flujo_skills::openapi::{self, ImportOptions, OpenApiError};
use serde_json::Value;

use crate::commands::check_regular_file;
use crate::*;

/// Largest OpenAPI document read.
const MAX_SPEC_BYTES: u64 = 64 << 20;

#[derive(Args, Debug)]
pub struct ImportOpenApiArgs {
    /// The OpenAPI 3.0 or 3.1 document (JSON or YAML).
    pub spec: PathBuf,
    /// Import only operations with this tag (repeatable; with --operation, either matches).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Import only this operation, by operationId (repeatable).
    #[arg(long = "operation", value_name = "ID")]
    pub operations: Vec<String>,
    /// Prepended to every skill id (e.g. `petstore.`); also names the environment variables of API keys.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// The catalog to write (default: the current folder's skills.yaml); a folder writes its skills.yaml.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The API's base URL, instead of the document's `servers[0]` (may be a template such as
    /// `{{ context.api_base }}`).
    #[arg(long = "base-url", value_name = "URL")]
    pub base_url: Option<String>,
}

fn invalid(message: impl Into<String>) -> CliError {
    CliError::new("validation_failed", EXIT_VALIDATION, message)
}

/// The catalog file `-o` names.
fn output_path(output: Option<PathBuf>) -> PathBuf {
    match output {
        None => flujo_blueprint::catalog_path(Path::new("."))
            .and_then(|p| p.file_name().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("skills.yaml")),
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => {
            flujo_blueprint::catalog_path(&p).unwrap_or_else(|| p.join("skills.yaml"))
        }
        Some(p) => p,
    }
}

/// `path` relative to `base` when both resolve, else absolute (or as given).
fn relative_to(path: &Path, base: &Path) -> String {
    let (Ok(path), Ok(base)) = (path.canonicalize(), base.canonicalize()) else {
        return path.display().to_string();
    };
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return path.display().to_string();
    }
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &p[common..] {
        rel.push(c.as_os_str());
    }
    rel.display().to_string()
}

fn parse_document(text: &str, path: &Path) -> Result<Value, CliError> {
    let shown = path.display();
    let looks_json =
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) || text.trim_start().starts_with('{');
    if looks_json {
        return serde_json::from_str(text).map_err(|e| invalid(format!("{shown} is not valid JSON: {e}")));
    }
    let options = serde_saphyr::Options {
        budget: Some(serde_saphyr::Budget {
            max_reader_input_bytes: Some(MAX_SPEC_BYTES as usize),
            max_total_scalar_bytes: (MAX_SPEC_BYTES as usize) * 2,
            ..serde_saphyr::Budget::default()
        }),
        with_snippet: false,
        ..serde_saphyr::Options::default()
    };
    serde_saphyr::from_str_with_options::<Value>(text, options)
        .map_err(|e| invalid(format!("{shown} is not valid YAML: {}", e.without_snippet())))
}

pub fn import_openapi(args: ImportOpenApiArgs) -> Result<u8, CliError> {
    check_regular_file(&args.spec, "OpenAPI document", "").map_err(CliError::config)?;
    let bytes = {
        use std::io::Read;
        let file = std::fs::File::open(&args.spec)
            .map_err(|e| CliError::config(format!("cannot read {}: {e}", args.spec.display())))?;
        let mut bytes = Vec::new();
        file.take(MAX_SPEC_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::config(format!("cannot read {}: {e}", args.spec.display())))?;
        bytes
    };
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(invalid(format!("{} is larger than {} MiB", args.spec.display(), MAX_SPEC_BYTES >> 20)));
    }
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes))
        .map_err(|e| invalid(format!("{} is not UTF-8 text ({e})", args.spec.display())))?;
    let doc = parse_document(text, &args.spec)?;

    let output = output_path(args.output);
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut opts = ImportOptions::default();
    opts.tags = args.tags;
    opts.operations = args.operations;
    opts.prefix = args.prefix;
    opts.base_url = args.base_url;
    opts.source = relative_to(&args.spec, &out_dir);
    let import = openapi::import(&doc, &opts).map_err(|e| match e {
        OpenApiError::Selection(m) => CliError::usage("usage_error", m),
        other => invalid(format!("{}: {other}", args.spec.display())),
    })?;

    let existing = if output.exists() {
        check_regular_file(&output, "skills catalog", "").map_err(CliError::config)?;
        Some(
            std::fs::read_to_string(&output)
                .map_err(|e| CliError::config(format!("cannot read {}: {e}", output.display())))?,
        )
    } else {
        None
    };
    let entries: Vec<NewEntry> = import
        .skills
        .iter()
        .map(|s| {
            let mut comments = vec![format!("{} {}", s.method, s.path)];
            comments.extend(s.notes.iter().cloned());
            NewEntry { id: s.id.clone(), value: Value::Object(s.entry.clone()), comments }
        })
        .collect();
    let source = opts.source.clone();
    let merged = merge_entries(existing.as_deref(), &output, &entries, |v| openapi::is_generated(v, Some(&source)))
        .map_err(|e| invalid(format!("cannot merge into {}: {e}; it was not changed", output.display())))?;

    // the generated entries must validate as written
    let (_, diags) = flujo_blueprint::SkillCatalog::parse(&merged.text, &output);
    let generated_errors: Vec<_> = diags
        .iter()
        .filter(|d| d.is_error() && entries.iter().any(|e| d.message.contains(&format!("`{}`", e.id))))
        .collect();
    if !generated_errors.is_empty() {
        let list: Vec<flujo_blueprint::Diagnostic> = generated_errors.into_iter().cloned().collect();
        err!("{}", flujo_blueprint::render_text(&list));
        return Err(invalid(format!("the generated skills do not validate; {} was not changed", output.display())));
    }
    write_atomically(&output, &merged.text)?;

    for s in &import.skills {
        if merged.skipped.contains(&s.id) {
            errln!(
                "warning: {} ({} {}) was not written: {} has a hand-written entry `{}`",
                s.operation,
                s.method,
                s.path,
                output.display(),
                s.id
            );
            continue;
        }
        outln!("{}\t{} {}", s.id, s.method, s.path);
        for note in &s.notes {
            errln!("note: {}: {note}", s.id);
        }
    }
    if merged.rewritten {
        errln!(
            "warning: {} is not block-style YAML, so it was written again from its values: its comments and formatting are gone",
            output.display()
        );
    }
    let written = import.skills.len() - merged.skipped.len();
    let gone: Vec<&String> = merged.replaced.iter().filter(|id| !import.skills.iter().any(|s| &s.id == *id)).collect();
    errln!(
        "{written} skill(s) from {} (OpenAPI {}) written to {}; {} hand-written or other entr{} kept{}",
        args.spec.display(),
        import.openapi,
        output.display(),
        merged.kept.len(),
        if merged.kept.len() == 1 { "y" } else { "ies" },
        if gone.is_empty() {
            String::new()
        } else {
            format!("; removed, no longer imported: {}", gone.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
        }
    );
    for d in diags.iter().filter(|d| d.is_error()) {
        errln!("warning: {}:{}:{}: {} [{}]", output.display(), d.line, d.column, d.message, d.rule);
    }
    Ok(EXIT_OK)
}

/// Writes `text` to `path` through a temporary file in the same folder, so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "skills.yaml".into());
    let tmp = dir.join(format!(".{name}.flujo-tmp-{}", std::process::id()));
    let fail = |e: std::io::Error| CliError::config(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, text).map_err(fail)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}
