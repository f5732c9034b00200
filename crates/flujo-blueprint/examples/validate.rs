//! Validates blueprint files and prints their diagnostics, like `flujo validate`:
//!
//! ```text
//! cargo run -p flujo-blueprint --example validate -- PIPELINE.yaml [--format text|json|sarif] [--strict]
//! ```
//!
//! Skill ids are checked against the built-in skills. The exit code is 4 when any file has an error. The
//! time each load took goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use flujo_blueprint::{render_json, render_sarif, render_text, validate_file, LoadOptions};
use flujo_skills::BuiltinRegistry;

fn main() -> ExitCode {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut format = "text".to_owned();
    let mut strict = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--format" => format = args.next().unwrap_or_default(),
            "--strict" => strict = true,
            _ => files.push(arg.into()),
        }
    }
    if files.is_empty() {
        eprintln!("usage: validate PIPELINE.yaml... [--format text|json|sarif] [--strict]");
        return ExitCode::from(2);
    }
    let registry = BuiltinRegistry::new();
    let opts = LoadOptions { registry: Some(&registry), strict, ..LoadOptions::default() };
    let mut failed = false;
    for file in &files {
        let start = Instant::now();
        let diags = validate_file(file, &opts);
        eprintln!("{}: validated in {:?}", file.display(), start.elapsed());
        failed |= diags.iter().any(|d| d.is_error());
        match format.as_str() {
            "json" => println!("{}", render_json(&diags)),
            "sarif" => println!("{}", render_sarif(&diags)),
            _ => print!("{}", render_text(&diags)),
        }
    }
    if failed {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    }
}
