//! Flujo blueprints: YAML → a validated [`flujo_core::Pipeline`], with every problem reported at once.
//!
//! A blueprint is Flujo's YAML pipeline format (the Python project's format, kept as is). Loading is
//! *parse, then validate into a richer type*:
//!
//! 1. the YAML layer parses the text into a spanned tree (hardened: size, depth, alias-bomb and node budgets);
//! 2. the decoder turns it into raw structs that mirror the YAML, reporting wrong types, out-of-range numbers,
//!    names that cannot be journal path segments, unknown fields (warnings, never silently ignored; a near
//!    miss of a real field is an error), missing fields, unknown kinds and template syntax;
//! 3. the checker runs the rules that look at several values: duplicate names, context data flow, state
//!    machine graphs, parallel write conflicts, loops that cannot exit;
//! 4. lowering resolves agents, imports (recursively, cycle-checked) and skills (registry + `skills.yaml`)
//!    into the core types the engine runs.
//!
//! Every finding is a [`Diagnostic`] with a stable rule id (see [`RULES`] and `RULES.md`), a severity, a
//! message, `file:line:column` and often a suggestion; [`render_text`], [`render_json`] and
//! [`render_sarif`] print them.
//!
//! ```
//! use std::path::Path;
//! use flujo_blueprint::{load_str, LoadOptions};
//!
//! let yaml = r#"
//! version: "0.1"
//! name: demo
//! steps:
//!   - name: inc
//!     agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
//!   - name: twice
//!     agent: {id: flujo.builtins.transform, params: {expr: "previous_step * 2"}}
//! "#;
//! let loaded = load_str(yaml, Path::new("demo.yaml"), &LoadOptions::default()).unwrap();
//! assert_eq!(loaded.pipeline.steps.len(), 2);
//!
//! let bad = "name: x\nsteps:\n  - name: a\n    kind: paralel\n";
//! let failure = load_str(bad, Path::new("bad.yaml"), &LoadOptions::default()).unwrap_err();
//! assert_eq!(failure.diagnostics[0].rule, "BP-UNKNOWN-KIND");
//! assert_eq!(failure.diagnostics[0].suggestion.as_deref(), Some("did you mean `parallel`?"));
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod catalog;
pub mod catalog_write;
mod check;
pub mod context_gen;
mod decode;
mod diagnostic;
pub mod fix;
mod lint;
mod load;
mod lower;
pub mod origin;
mod raw;
pub mod rules;
mod suggest;
mod yaml;

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

pub use catalog::{
    catalog_path, CatalogSkill, HttpBodyDecl, HttpOperation, SkillCatalog, CATALOG_FILE, CATALOG_FILES,
    HTTP_MAX_RETRIES, HTTP_METHODS,
};
pub use check::READ_ONLY_FIELDS;
pub use decode::mcp::{McpServerDecl, McpToolCheck, McpToolStatus};
pub use decode::{KNOWN_KINDS, MAX_STEPS, MAX_STEP_NESTING, SUPPORTED_VERSIONS};
pub use diagnostic::{render_json, render_sarif, render_text, Diagnostic, LoadFailure, Severity};
pub use load::{load_file, load_str, validate_file, validate_str, LoadOptions, Loaded, MAX_IMPORT_DEPTH};
pub use rules::{describe as describe_rule, RULES};
pub use yaml::{yaml_to_json, MAX_BLUEPRINT_BYTES, MAX_YAML_DEPTH};

/// A model agent declared under `agents:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentDecl {
    pub name: String,
    /// `provider:model`, e.g. `openai:gpt-4o`, `mock:echo` (the first of a fallback chain).
    pub model: String,
    /// The rest of a fallback chain (`model: [openai:gpt-4o, anthropic:claude-sonnet-4-5]`), tried in order
    /// when the model before fails at the provider.
    pub fallback_models: Vec<String>,
    /// The system prompt text (read from `from_file` when declared that way).
    pub system_prompt: Option<String>,
    /// The file the prompt was read from (`system_prompt: {from_file: …}`), resolved against the blueprint.
    pub system_prompt_file: Option<PathBuf>,
    /// `system_prompt.variables`, for the model layer to render the prompt with.
    pub system_prompt_variables: Map<String, Value>,
    pub output_schema: Option<Value>,
    pub model_settings: Option<Value>,
    /// `timeout` (seconds).
    pub timeout_s: Option<f64>,
    pub max_retries: Option<u32>,
    /// Skill ids offered to the model as tools.
    pub tools: Vec<String>,
    /// The declaration as written.
    pub declaration: Value,
}

impl AgentDecl {
    /// The settings passed to the model registry ([`flujo_core::AgentRef::Model`]): the declaration as written,
    /// except that a `system_prompt` read from a file is replaced by its text (with `system_prompt_file` and,
    /// when given, `system_prompt_variables` added).
    pub fn settings(&self) -> Value {
        let mut settings = self.declaration.clone();
        if let (Some(file), Some(obj)) = (&self.system_prompt_file, settings.as_object_mut()) {
            obj.insert("system_prompt".into(), self.system_prompt.clone().map_or(Value::Null, Value::String));
            obj.insert("system_prompt_file".into(), Value::String(file.to_string_lossy().into_owned()));
            if !self.system_prompt_variables.is_empty() {
                obj.insert("system_prompt_variables".into(), Value::Object(self.system_prompt_variables.clone()));
            }
        }
        settings
    }
}
