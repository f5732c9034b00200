//! `flujo dev gen-context [PIPELINE] [--format yaml|json-schema|rust]`: the context fields a pipeline writes
//! and reads, with their types, as a `context_schema:` block to paste into the blueprint (the default), the JSON
//! Schema, or a Rust struct with serde derives. The analysis is `flujo_blueprint::context_gen`; this module
//! loads the blueprint (exit 4, or 3 for an import or skill that cannot be resolved, when it does not
//! validate, with the diagnostics as `flujo validate` prints them), prints the rendering on stdout (or into
//! `-o FILE`) and the warnings, notes and a summary on stderr; `--json` prints one JSON object instead.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use flujo_blueprint::context_gen::{self, ContextReport};
use flujo_blueprint::Diagnostic;
use flujo_skills::BuiltinRegistry;
use serde_json::{json, Value};

use crate::{CliError, EXIT_OK, EXIT_RESOLUTION, EXIT_VALIDATION};

#[derive(Args, Debug)]
pub struct GenContextArgs {
    /// The blueprint (default: the project's pipeline.yaml).
    pub pipeline: Option<PathBuf>,
    /// `yaml`: the `context_schema:` block to paste into the blueprint; `json-schema`: the JSON Schema of the
    /// context; `rust`: a Rust struct with serde derives.
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: GenFormat,
    /// The name of the Rust struct (default: the pipeline's name in PascalCase, then `Context`).
    #[arg(long, short = 'm', alias = "model-name", value_name = "NAME")]
    pub name: Option<String>,
    /// Write the schema or struct to this file instead of stdout.
    #[arg(long, short = 'o', alias = "output", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print one JSON object: the schema, the rendering, every field with where it is written and read, the
    /// warnings and the differences with the blueprint's own context_schema.
    #[arg(long)]
    pub json: bool,
}

/// What `gen-context` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenFormat {
    Yaml,
    JsonSchema,
    Rust,
}

impl GenFormat {
    fn as_str(self) -> &'static str {
        match self {
            GenFormat::Yaml => "yaml",
            GenFormat::JsonSchema => "json-schema",
            GenFormat::Rust => "rust",
        }
    }
}

/// Context rule ids that validation reports too: `gen-context` gives them with the read's exact position, so
/// validation's own finding (at the step) is not printed twice.
const REPORTED_HERE: &[&str] = &["CTX-UNDECLARED-READ"];

pub fn gen_context(args: GenContextArgs) -> Result<u8, CliError> {
    let path = crate::commands::pipeline_path(args.pipeline.clone())?;
    let builtins = BuiltinRegistry::new();
    let opts = crate::commands::load_options(&builtins, false);
    let loaded = match flujo_blueprint::load_file(&path, &opts) {
        Ok(loaded) => loaded,
        Err(failure) => return Err(not_valid(&path, &failure.diagnostics)),
    };
    let shown: Vec<Diagnostic> =
        loaded.diagnostics.iter().filter(|d| !REPORTED_HERE.contains(&d.rule.as_str())).cloned().collect();
    if !shown.is_empty() {
        err!("{}", flujo_blueprint::render_text(&shown));
    }
    let report = context_gen::context_report(&loaded, &path, &opts).map_err(CliError::config)?;
    let rendered = match args.format {
        GenFormat::Yaml => context_gen::render_yaml(&report),
        GenFormat::JsonSchema => {
            serde_json::to_string_pretty(&context_gen::render_json_schema(&report)).unwrap_or_default() + "\n"
        }
        GenFormat::Rust => {
            let name = args.name.clone().unwrap_or_else(|| context_gen::rust_struct_name(&report.pipeline));
            context_gen::render_rust(&report, &name)
        }
    };
    print_findings(&report);
    if let Some(file) = &args.out {
        std::fs::write(file, &rendered)
            .map_err(|e| CliError::config(format!("cannot write {}: {e}", file.display())))?;
        errln!("wrote {}", file.display());
    }
    if args.json {
        outln!("{}", to_json(&report, args.format, &rendered));
    } else if args.out.is_none() {
        out!("{rendered}");
    }
    Ok(EXIT_OK)
}

/// A blueprint that does not validate: its diagnostics on stderr, exit 3 (an import or skill that cannot be
/// resolved) or 4, the diagnostics in the `--json` object.
fn not_valid(path: &std::path::Path, diagnostics: &[Diagnostic]) -> CliError {
    if !diagnostics.is_empty() {
        err!("{}", flujo_blueprint::render_text(diagnostics));
    }
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    let resolution = errors.iter().any(|d| crate::commands::is_resolution_rule(&d.rule));
    let (kind, code) =
        if resolution { ("resolution_error", EXIT_RESOLUTION) } else { ("validation_failed", EXIT_VALIDATION) };
    let mut e = CliError::new(kind, code, format!("{} has {} error(s); see above", path.display(), errors.len()));
    e.diagnostics = serde_json::to_value(diagnostics).ok().map(Box::new);
    e
}

/// Warnings, notes, the comparison with a declared `context_schema` and a summary, on stderr.
fn print_findings(report: &ContextReport) {
    if !report.warnings.is_empty() {
        err!("{}", flujo_blueprint::render_text(&report.warnings));
    }
    for note in &report.notes {
        errln!("note: {note}");
    }
    if let Some(diff) = &report.declared {
        if diff.missing.is_empty() && diff.unused.is_empty() && diff.type_mismatches.is_empty() {
            errln!("the blueprint's context_schema declares every field it writes and reads");
        } else {
            let list = |v: &[String]| v.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ");
            let mut parts = Vec::new();
            if !diff.missing.is_empty() {
                parts.push(format!("missing from it: {}", list(&diff.missing)));
            }
            if !diff.unused.is_empty() {
                parts.push(format!("declared but unused: {}", list(&diff.unused)));
            }
            if !diff.type_mismatches.is_empty() {
                let paths: Vec<String> = diff.type_mismatches.iter().map(|m| m.path.clone()).collect();
                parts.push(format!("declared with another type: {}", list(&paths)));
            }
            errln!("the blueprint's context_schema differs from the generated one: {}", parts.join("; "));
        }
    }
    let top = report.schema.get("properties").and_then(Value::as_object).map_or(0, |p| p.len());
    let written = report.fields.iter().filter(|f| !f.path.contains(['.', '[']) && !f.writes.is_empty()).count();
    errln!(
        "{}: {top} context field{} ({written} written, {} only read), {} warning{}",
        report.file.display(),
        if top == 1 { "" } else { "s" },
        top.saturating_sub(written),
        report.warnings.len(),
        if report.warnings.len() == 1 { "" } else { "s" }
    );
}

fn to_json(report: &ContextReport, format: GenFormat, rendered: &str) -> Value {
    json!({
        "pipeline": report.pipeline,
        "file": report.file,
        "format": format.as_str(),
        "schema": report.schema,
        "output": rendered,
        "fields": report.fields,
        "warnings": report.warnings,
        "declared": report.declared,
        "notes": report.notes,
    })
}
