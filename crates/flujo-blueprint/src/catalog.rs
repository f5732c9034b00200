//! The skills catalog: `skills.yaml` next to a blueprint declares skills that need no Rust code (SPEC §7).
//!
//! ```yaml
//! skills:
//!   acme.summarize:
//!     command: ["python3", "summarize.py"]   # run in the folder of skills.yaml; JSON on stdin/stdout
//!     input_schema: {type: string}
//!     output_schema: {type: string}
//!     timeout_s: 30
//!     max_output_bytes: 1048576              # bound on stdout and on stderr (default 16 MiB)
//!     max_input_bytes: 1048576               # bound on the JSON written to stdin (default 16 MiB)
//!     side_effects: false
//!     description: Summarizes text.
//!   acme.get_pet:
//!     http:
//!       method: GET
//!       url: "https://api.example.com/pets/{{ input.id }}"
//!       headers: {Authorization: "Bearer ${ACME_TOKEN}"}   # `${NAME}`: read from the environment per call
//!       query: {verbose: "{{ input.verbose }}"}
//!       timeout_s: 10
//!       retries: 2
//!     input_schema: {type: object, properties: {id: {type: integer}}, required: [id]}
//! ```
//!
//! `http:` is validated into an [`HttpOperation`] (method, URL template, header and query templates with
//! well-formed `${NAME}` references, body, limits). Keys starting with `x-` are extension keys: kept in the
//! declaration, otherwise ignored (`flujo dev import-openapi` marks its entries with them).
//!
//! This module only parses and validates the catalog into a [`SkillCatalog`]; running `command` and `http`
//! skills is the skills crate's job. Skill ids a blueprint uses are checked against the registry *and* the
//! catalog (`BP-SKILL-MISSING`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flujo_core::SkillInfo;
use serde::Serialize;
use serde_json::Value;

use crate::decode::Decoder;
use crate::diagnostic::Diagnostic;
use crate::rules;
use crate::yaml::{self, NodeKind};

/// The file name of the catalog looked up next to a blueprint.
pub const CATALOG_FILE: &str = "skills.yaml";
/// The catalog file names looked for in a folder, in this order (the original's lookup): the first that
/// exists is read. JSON is read as YAML (it is a subset).
pub const CATALOG_FILES: &[&str] = &[CATALOG_FILE, "skills.yml", "skills.json"];

/// The skills catalog file of `dir`, if it has one.
pub fn catalog_path(dir: &Path) -> Option<std::path::PathBuf> {
    CATALOG_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

const SKILL_FIELDS: &[&str] = &[
    "command",
    "http",
    "env",
    "input_schema",
    "output_schema",
    "timeout_s",
    "max_output_bytes",
    "max_input_bytes",
    "side_effects",
    "description",
    // the original's entries: `path` (refused: a Python import path), `arg_schema` (= `input_schema`), and
    // descriptive metadata its registry keeps and Flujo (Rust) accepts without using
    "path",
    "arg_schema",
    "capabilities",
    "safety_level",
    "auth_required",
    "auth_scope",
];

/// Skills declared in `skills.yaml` files, by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SkillCatalog {
    pub skills: BTreeMap<String, CatalogSkill>,
}

/// One declared skill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogSkill {
    pub id: String,
    pub description: String,
    /// `command` skills: the program and its arguments (no shell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `http` skills: the operation (method, url, headers, …), validated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOperation>,
    /// Extra environment variables for `command` skills.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// `command` skills: the most bytes read from stdout (and from stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// `command` skills: the most bytes of JSON written to stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_input_bytes: Option<u64>,
    pub side_effects: bool,
    /// The folder of the `skills.yaml` that declares the skill: `command` skills run there.
    pub dir: PathBuf,
    /// The declaring file.
    pub file: PathBuf,
    /// The declaration as written.
    pub declaration: Value,
}

/// The request body of an `http` skill.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpBodyDecl {
    /// No `body:`: POST, PUT and PATCH send the input as JSON, other methods nothing.
    #[default]
    Default,
    /// `body: null`: nothing is sent.
    Empty,
    /// A template string.
    Template(String),
    /// A JSON value whose string leaves are templates.
    Json(Value),
}

/// The `http:` operation of a skill, validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpOperation {
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS` (upper case).
    pub method: String,
    /// The URL template.
    pub url: String,
    /// Header names and value templates (`${NAME}` reads the environment), in declaration order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Query parameter names and value templates, in declaration order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    pub body: HttpBodyDecl,
    /// Seconds per request (`http.timeout_s`, else the entry's `timeout_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
}

/// The methods an `http` skill may use.
pub const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Most retries an `http` skill may ask for.
pub const HTTP_MAX_RETRIES: u64 = 10;

const HTTP_FIELDS: &[&str] =
    &["method", "url", "headers", "query", "body", "timeout_s", "retries", "idempotent", "max_response_bytes"];

impl CatalogSkill {
    /// The registry-style description of this skill.
    pub fn info(&self) -> SkillInfo {
        {
            let mut info = SkillInfo::default();
            info.id = self.id.clone();
            info.description = self.description.clone();
            info.input_schema = self.input_schema.clone();
            info.output_schema = self.output_schema.clone();
            info.side_effects = self.side_effects;
            info
        }
    }
}

impl SkillCatalog {
    pub fn get(&self, id: &str) -> Option<&CatalogSkill> {
        self.skills.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.skills.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.skills.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.skills.keys().map(String::as_str)
    }

    /// Adds the skills of `other` that this catalog does not declare (the first declaration wins).
    pub fn merge(&mut self, other: &SkillCatalog) {
        for (id, skill) in &other.skills {
            self.skills.entry(id.clone()).or_insert_with(|| skill.clone());
        }
    }

    /// Loads the catalog of `dir` (`skills.yaml`, else `skills.yml`, else `skills.json`; an empty catalog when
    /// there is none), with its diagnostics.
    pub fn load_dir(dir: &Path) -> (SkillCatalog, Vec<Diagnostic>) {
        yaml::with_parser_stack(|| SkillCatalog::load_dir_here(dir))
    }

    pub(crate) fn load_dir_here(dir: &Path) -> (SkillCatalog, Vec<Diagnostic>) {
        let Some(path) = catalog_path(dir) else {
            return (SkillCatalog::default(), Vec::new());
        };
        let shown = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match crate::load::read_limited(&path) {
            Ok(bytes) => match yaml::decode_utf8(&bytes) {
                Ok(text) => SkillCatalog::parse_here(text, &path),
                Err(e) => (SkillCatalog::default(), vec![Diagnostic::at(e.rule, &path, e.loc, e.message)]),
            },
            Err(e) => {
                let rule = match e {
                    crate::load::ReadError::TooLarge(_) => rules::BP_LIMIT,
                    crate::load::ReadError::Io(_) => rules::BP_IO,
                };
                (SkillCatalog::default(), vec![Diagnostic::new(rule, &path, 0, 0, format!("cannot read {shown}: {e}"))])
            }
        }
    }

    /// Parses catalog text; `file` names it in diagnostics and its folder is the skills' working folder.
    pub fn parse(text: &str, file: &Path) -> (SkillCatalog, Vec<Diagnostic>) {
        yaml::with_parser_stack(|| SkillCatalog::parse_here(text, file))
    }

    fn parse_here(text: &str, file: &Path) -> (SkillCatalog, Vec<Diagnostic>) {
        let mut catalog = SkillCatalog::default();
        let node = match yaml::parse(text) {
            Ok(node) => node,
            Err(e) => return (catalog, vec![Diagnostic::at(e.rule, file, e.loc, e.message)]),
        };
        let custom: Vec<String> = Vec::new();
        let mut d = Decoder::new(file, &custom);
        if matches!(node.kind, NodeKind::Null) {
            return (catalog, Vec::new());
        }
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        if let Some(mut top) = d.fields(&node, "a skills catalog") {
            if let Some(skills) = top.take("skills") {
                // `skills: {id: entry, …}` (with an optional `version`)
                if let Some(entries) = d.fields(skills, "`skills`") {
                    let list: Vec<_> = entries.all().map(|(k, _, v)| (k.to_owned(), v)).collect();
                    for (id, value) in list {
                        if let Some(skill) = skill(&mut d, &id, value, &dir, file) {
                            catalog.skills.insert(id, skill);
                        }
                    }
                }
                d.finish(top, &["version", "skills"], "the skills catalog", |_| None);
            } else {
                // the original's form: the top-level mapping is `id: entry` (a scalar `version` is not a skill)
                let list: Vec<_> = top
                    .all()
                    .filter(|(k, _, v)| *k != "version" || matches!(v.kind, NodeKind::Map(_)))
                    .map(|(k, _, v)| (k.to_owned(), v))
                    .collect();
                for (id, value) in list {
                    if let Some(skill) = skill(&mut d, &id, value, &dir, file) {
                        catalog.skills.insert(id, skill);
                    }
                }
            }
        }
        (catalog, d.diags)
    }
}

fn skill(d: &mut Decoder<'_>, id: &str, node: &yaml::Node, dir: &Path, file: &Path) -> Option<CatalogSkill> {
    let what = format!("skill `{id}`");
    let mut f = d.fields(node, &what)?;
    let mut out = CatalogSkill {
        id: id.to_owned(),
        description: String::new(),
        command: None,
        http: None,
        env: BTreeMap::new(),
        input_schema: None,
        output_schema: None,
        timeout_s: None,
        max_output_bytes: None,
        max_input_bytes: None,
        side_effects: false,
        dir: dir.to_owned(),
        file: file.to_owned(),
        declaration: node.to_json(),
    };
    if let Some(n) = f.take("command") {
        match &n.kind {
            NodeKind::Seq(items) if !items.is_empty() => {
                let parts: Vec<String> = items.iter().filter_map(|i| i.key_string()).collect();
                if parts.len() == items.len() && !parts[0].is_empty() {
                    out.command = Some(parts);
                } else {
                    d.report(rules::BP_TYPE, n.loc, format!("`command` of {what} must be a non-empty list of strings"));
                }
            }
            NodeKind::Str(s) => d.report_with(
                rules::BP_TYPE,
                n.loc,
                format!("`command` of {what} must be a list (program and arguments, no shell)"),
                Some(format!(
                    "write `command: [{}]`",
                    s.split_whitespace().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
                )),
            ),
            _ => d.report(rules::BP_TYPE, n.loc, format!("`command` of {what} must be a non-empty list of strings")),
        }
    }
    if let Some(n) = f.take("http") {
        match n.kind {
            NodeKind::Map(_) => out.http = http_operation(d, n, &what),
            _ => d.report(rules::BP_TYPE, n.loc, format!("`http` of {what} must be a mapping")),
        }
    }
    if f.has("command") && f.has("http") {
        d.report(rules::BP_TYPE, f.loc, format!("{what} declares both `command` and `http`; use one"));
    }
    if let Some(n) = f.take("path") {
        // the original's entries name a Python factory (`path: pkg.mod:make_agent`)
        d.report_with(
            rules::BP_SKILL_MISSING,
            n.loc,
            format!(
                "{what} is a Python import path (`path: {}`); Flujo (Rust) cannot import Python code",
                n.as_str().unwrap_or("…")
            ),
            Some("give the skill a `command` (a program that reads JSON on stdin and writes JSON on stdout) or an `http` operation instead of `path`".to_owned()),
        );
    } else if !f.has("command") && !f.has("http") {
        d.report(rules::BP_MISSING_FIELD, f.loc, format!("{what} has neither `command` nor `http`"));
    }
    if let Some(n) = f.take("env") {
        if let Some(map) = d.fields(n, "`env`") {
            for (k, _, v) in map.all() {
                match v.key_string() {
                    Some(val) if !matches!(v.kind, NodeKind::Null) => {
                        out.env.insert(k.to_owned(), val);
                    }
                    _ => d.report(rules::BP_TYPE, v.loc, format!("`env.{k}` of {what} must be a string")),
                }
            }
        }
    }
    // `arg_schema` is the original's other name of `input_schema`
    let arg_schema = f.take("arg_schema");
    for key in ["input_schema", "output_schema"] {
        let node = match f.take(key) {
            None if key == "input_schema" => arg_schema,
            n => n,
        };
        if let Some(n) = node {
            let value = n.to_json();
            if !matches!(n.kind, NodeKind::Map(_) | NodeKind::Bool(_)) {
                d.report(rules::BP_TYPE, n.loc, format!("`{key}` of {what} must be a JSON Schema (a mapping)"));
            } else if let Err(e) = jsonschema::validator_for(&value) {
                d.report(rules::BP_TYPE, n.loc, format!("`{key}` of {what} is not a valid JSON Schema: {e}"));
            } else if key == "input_schema" {
                out.input_schema = Some(value);
            } else {
                out.output_schema = Some(value);
            }
        }
    }
    if let Some(n) = f.take("timeout_s") {
        match n.to_json().as_f64() {
            Some(t) => match flujo_core::limits::check_duration_secs(t) {
                Ok(()) => out.timeout_s = Some(t),
                Err(e) => d.report(rules::BP_RANGE, n.loc, format!("`timeout_s` of {what} {e}")),
            },
            None if matches!(n.kind, NodeKind::Float(_)) => {
                d.report(rules::BP_RANGE, n.loc, format!("`timeout_s` of {what} must be a finite number of seconds"))
            }
            None => d.report(rules::BP_TYPE, n.loc, format!("`timeout_s` of {what} must be a positive number")),
        }
    }
    for key in ["max_output_bytes", "max_input_bytes"] {
        if let Some(n) = f.take(key) {
            match n.to_json().as_u64() {
                Some(b) if b > 0 => {
                    if key == "max_output_bytes" {
                        out.max_output_bytes = Some(b);
                    } else {
                        out.max_input_bytes = Some(b);
                    }
                }
                _ => d.report(rules::BP_TYPE, n.loc, format!("`{key}` of {what} must be a positive integer (bytes)")),
            }
        }
    }
    if let Some(n) = f.take("side_effects") {
        match n.kind {
            NodeKind::Bool(b) => out.side_effects = b,
            _ => d.report(rules::BP_TYPE, n.loc, format!("`side_effects` of {what} must be `true` or `false`")),
        }
    } else if let Some(http) = &out.http {
        // an http skill that does not say: what its method promises
        out.side_effects = !matches!(http.method.as_str(), "GET" | "HEAD" | "OPTIONS");
    }
    if let Some(http) = &mut out.http {
        // the entry's `timeout_s` applies to an http skill whose `http:` does not set one
        if http.timeout_s.is_none() {
            http.timeout_s = out.timeout_s;
        }
    }
    if let Some(n) = f.take("description") {
        match n.as_str() {
            Some(s) => out.description = s.to_owned(),
            None => d.report(rules::BP_TYPE, n.loc, format!("`description` of {what} must be a string")),
        }
    }
    for key in ["capabilities", "safety_level", "auth_required", "auth_scope"] {
        f.take(key);
    }
    // extension keys (`x-generated-by`, …): kept in the declaration, not read
    let extensions: Vec<String> = f.all().map(|(k, _, _)| k.to_owned()).filter(|k| k.starts_with("x-")).collect();
    for key in &extensions {
        f.take(key);
    }
    d.finish(f, SKILL_FIELDS, &what, |_| None);
    Some(out)
}

/// Validates an `http:` mapping; `None` when it has errors (they are reported).
fn http_operation(d: &mut Decoder<'_>, node: &yaml::Node, what: &str) -> Option<HttpOperation> {
    let before = d.diags.len();
    let mut f = d.fields(node, &format!("`http` of {what}"))?;
    let mut op = HttpOperation::default();
    match f.take("method") {
        None => d.report(rules::BP_MISSING_FIELD, f.loc, format!("`http` of {what} has no `method`")),
        Some(n) => match n.as_str() {
            Some(m) if HTTP_METHODS.contains(&m.trim().to_ascii_uppercase().as_str()) => {
                op.method = m.trim().to_ascii_uppercase();
            }
            Some(m) => {
                let upper = m.trim().to_ascii_uppercase();
                let suggestion = crate::suggest::closest(&upper, HTTP_METHODS.iter().copied())
                    .map(|c| format!("did you mean `{c}`?"))
                    .or_else(|| Some(format!("use one of {}", HTTP_METHODS.join(", "))));
                d.report_with(
                    rules::BP_TYPE,
                    n.loc,
                    format!("`http.method` of {what} is `{m}`, not an HTTP method Flujo sends"),
                    suggestion,
                );
            }
            None => d.report(rules::BP_TYPE, n.loc, format!("`http.method` of {what} must be a string (GET, POST, …)")),
        },
    }
    match f.take("url") {
        None => d.report(rules::BP_MISSING_FIELD, f.loc, format!("`http` of {what} has no `url`")),
        Some(n) => match n.as_str() {
            Some(url) => {
                if let Err(e) = check_url_template(url) {
                    d.report(rules::TEMPLATE, n.loc, format!("`http.url` of {what}: {e}"));
                } else if !url.trim_start().starts_with("{{") {
                    let lower = url.trim_start().to_ascii_lowercase();
                    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                        d.report(
                            rules::BP_TYPE,
                            n.loc,
                            format!("`http.url` of {what} must start with http:// or https:// (or a `{{{{ … }}}}` placeholder)"),
                        );
                    }
                }
                op.url = url.to_owned();
            }
            None => d.report(rules::BP_TYPE, n.loc, format!("`http.url` of {what} must be a string")),
        },
    }
    for key in ["headers", "query"] {
        let Some(n) = f.take(key) else { continue };
        let Some(map) = d.fields(n, &format!("`http.{key}` of {what}")) else { continue };
        let mut pairs = Vec::new();
        for (name, k, v) in map.all() {
            let place = format!("`http.{key}.{name}` of {what}");
            if key == "headers" && !is_header_name(name) {
                d.report(rules::BP_TYPE, k.loc, format!("{place}: `{name}` is not a valid header name"));
                continue;
            }
            let text = match &v.kind {
                NodeKind::Str(s) => s.clone(),
                NodeKind::Int(_) | NodeKind::UInt(_) | NodeKind::Float(_) | NodeKind::Bool(_) if key == "query" => {
                    v.key_string().unwrap_or_default()
                }
                NodeKind::Int(_) | NodeKind::UInt(_) | NodeKind::Float(_) | NodeKind::Bool(_) => {
                    let shown = v.key_string().unwrap_or_default();
                    d.report_with(
                        rules::BP_TYPE,
                        v.loc,
                        format!("{place} must be a string, found {}", v.type_name()),
                        Some(format!("quote it: `{name}: \"{shown}\"`")),
                    );
                    continue;
                }
                _ => {
                    d.report(rules::BP_TYPE, v.loc, format!("{place} must be a string, found {}", v.type_name()));
                    continue;
                }
            };
            match env_parts(&text) {
                Err(e) => d.report(rules::BP_TYPE, v.loc, format!("{place}: {e}")),
                Ok(templates) => {
                    for t in templates {
                        d.check_template(&t, v.loc, &place);
                    }
                }
            }
            pairs.push((name.to_owned(), text));
        }
        if key == "headers" {
            op.headers = pairs;
        } else {
            op.query = pairs;
        }
    }
    if let Some(n) = f.take("body") {
        let place = format!("`http.body` of {what}");
        op.body = match &n.kind {
            NodeKind::Null => HttpBodyDecl::Empty,
            NodeKind::Str(s) => {
                d.check_template(s, n.loc, &place);
                HttpBodyDecl::Template(s.clone())
            }
            _ => {
                check_templates_in(d, n, &place);
                HttpBodyDecl::Json(n.to_json())
            }
        };
    }
    if let Some(n) = f.take("timeout_s") {
        match n.to_json().as_f64() {
            Some(t) => match flujo_core::limits::check_duration_secs(t) {
                Ok(()) => op.timeout_s = Some(t),
                Err(e) => d.report(rules::BP_RANGE, n.loc, format!("`http.timeout_s` of {what} {e}")),
            },
            None => d.report(rules::BP_TYPE, n.loc, format!("`http.timeout_s` of {what} must be a number of seconds")),
        }
    }
    if let Some(n) = f.take("retries") {
        match &n.kind {
            NodeKind::Int(_) | NodeKind::UInt(_) => match n.to_json().as_u64() {
                Some(r) if r <= HTTP_MAX_RETRIES => op.retries = u32::try_from(r).ok(),
                _ => d.report(
                    rules::BP_RANGE,
                    n.loc,
                    format!("`http.retries` of {what} must be between 0 and {HTTP_MAX_RETRIES}"),
                ),
            },
            _ => d.report(rules::BP_TYPE, n.loc, format!("`http.retries` of {what} must be an integer")),
        }
    }
    if let Some(n) = f.take("idempotent") {
        match n.kind {
            NodeKind::Bool(b) => op.idempotent = Some(b),
            _ => d.report(rules::BP_TYPE, n.loc, format!("`http.idempotent` of {what} must be `true` or `false`")),
        }
    }
    if let Some(n) = f.take("max_response_bytes") {
        match n.to_json().as_u64() {
            Some(b) if b > 0 && matches!(n.kind, NodeKind::Int(_) | NodeKind::UInt(_)) => {
                op.max_response_bytes = Some(b)
            }
            _ => d.report(
                rules::BP_TYPE,
                n.loc,
                format!("`http.max_response_bytes` of {what} must be a positive integer (bytes)"),
            ),
        }
    }
    d.finish(f, HTTP_FIELDS, &format!("`http` of {what}"), |_| None);
    (d.diags[before..].iter().all(|x| !x.is_error())).then_some(op)
}

/// Checks every template string inside a JSON-like node.
fn check_templates_in(d: &mut Decoder<'_>, node: &yaml::Node, what: &str) {
    match &node.kind {
        NodeKind::Str(s) => d.check_template(s, node.loc, what),
        NodeKind::Seq(items) => items.iter().for_each(|i| check_templates_in(d, i, what)),
        NodeKind::Map(entries) => entries.iter().for_each(|(_, v)| check_templates_in(d, v, what)),
        _ => {}
    }
}

/// A header name: an HTTP token (RFC 9110).
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The template pieces of a header or query value around its `${NAME}` references (`$${` is a literal
/// `${`), or why a reference is malformed.
fn env_parts(src: &str) -> Result<Vec<String>, String> {
    let mut texts = Vec::new();
    let mut text = String::new();
    let mut rest = src;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            text.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err("`${` without its closing `}` (write `$${` for a literal `${`)".to_owned());
            };
            let name = &tail[..end];
            let mut chars = name.chars();
            let ok = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
            if !ok {
                return Err(format!(
                    "`${{{name}}}` is not an environment variable reference (letters, digits and `_`, not \
                     starting with a digit)"
                ));
            }
            texts.push(std::mem::take(&mut text));
            rest = &tail[end + 1..];
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    texts.push(text);
    Ok(texts.into_iter().filter(|t| !t.is_empty()).collect())
}

/// Checks a URL template: only `{{ expr }}` placeholders (each one's value is encoded on its own), each of
/// which compiles.
fn check_url_template(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("the URL is empty".to_owned());
    }
    if url.contains("{%") || url.contains("{#") {
        return Err("a URL template may only use `{{ expr }}` placeholders (no `{% %}` blocks or comments)".to_owned());
    }
    let mut rest = url;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start..];
        let Some(end) = after.find("}}") else {
            return Err("a `{{` without its closing `}}`".to_owned());
        };
        let placeholder = &after[..end + 2];
        let inner = placeholder[2..placeholder.len() - 2].trim();
        if inner.starts_with('#') || inner.starts_with('/') || inner.starts_with("else") {
            return Err(format!("`{placeholder}`: a URL template may only use `{{{{ expr }}}}` placeholders"));
        }
        if let Err(e) = flujo_template::compile_template(placeholder) {
            return Err(format!("`{placeholder}`: {e}"));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_command_skills() {
        let text = "skills:\n  acme.echo:\n    command: [\"python3\", \"echo.py\"]\n    timeout_s: 5\n    side_effects: true\n    description: Echo.\n";
        let (cat, diags) = SkillCatalog::parse(text, Path::new("/p/skills.yaml"));
        assert!(diags.is_empty(), "{diags:?}");
        let s = cat.get("acme.echo").unwrap();
        assert_eq!(s.command.as_deref(), Some(&["python3".to_owned(), "echo.py".to_owned()][..]));
        assert_eq!(s.dir, PathBuf::from("/p"));
        assert!(s.info().side_effects);
    }

    #[test]
    fn the_originals_unwrapped_form_is_read() {
        let text = "version: \"0.1\"\nacme.echo:\n  command: [\"cat\"]\n  arg_schema: {type: string}\n  capabilities: [text]\n  safety_level: none\n  auth_required: false\nother:\n  http: {method: GET, url: \"http://x\"}\n";
        let (cat, diags) = SkillCatalog::parse(text, Path::new("/p/skills.yaml"));
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(cat.ids().collect::<Vec<_>>(), vec!["acme.echo", "other"]);
        assert_eq!(cat.get("acme.echo").unwrap().input_schema, Some(serde_json::json!({"type": "string"})));
        // a Python factory is refused with what replaces it
        let (_, diags) = SkillCatalog::parse("py:\n  path: \"mypkg.skills:make\"\n", Path::new("skills.yaml"));
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].rule, "BP-SKILL-MISSING");
        assert!(diags[0].message.contains("mypkg.skills:make"), "{diags:?}");
        assert!(diags[0].suggestion.as_deref().unwrap_or_default().contains("command"), "{diags:?}");
    }

    #[test]
    fn reports_problems() {
        let text = "skills:\n  a:\n    command: python3 a.py\n    timout_s: 3\n  b: {description: x}\n";
        let (_, diags) = SkillCatalog::parse(text, Path::new("skills.yaml"));
        let rules: Vec<&str> = diags.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, vec!["BP-TYPE", "BP-FIELD-TYPO", "BP-MISSING-FIELD"], "{diags:?}");
        assert_eq!(diags[1].suggestion.as_deref(), Some("did you mean `timeout_s`?"));
    }

    #[test]
    fn http_operations_are_typed() {
        let text = r#"skills:
  acme.get:
    x-generated-by: flujo import-openapi
    timeout_s: 7
    http:
      method: get
      url: "https://api.example.com/pets/{{ input.id }}"
      headers: {Authorization: "Bearer ${ACME_TOKEN}", X-Trace: "{{ input.trace }}"}
      query: {limit: 10, q: "{{ input.q }}"}
      retries: 3
  acme.post:
    http:
      method: POST
      url: "{{ context.base }}/pets"
      body: {name: "{{ input.name }}"}
      idempotent: true
      max_response_bytes: 1024
  acme.none:
    side_effects: false
    http: {method: DELETE, url: "https://x/y", body: null}
"#;
        let (cat, diags) = SkillCatalog::parse(text, Path::new("/p/skills.yaml"));
        assert!(diags.is_empty(), "{diags:?}");
        let get = cat.get("acme.get").unwrap();
        let op = get.http.as_ref().unwrap();
        assert_eq!(op.method, "GET");
        assert_eq!(op.headers[0], ("Authorization".to_owned(), "Bearer ${ACME_TOKEN}".to_owned()));
        assert_eq!(op.query[0], ("limit".to_owned(), "10".to_owned()));
        assert_eq!((op.retries, op.timeout_s, op.body.clone()), (Some(3), Some(7.0), HttpBodyDecl::Default));
        assert!(!get.side_effects, "a GET has none unless it says so");
        let post = cat.get("acme.post").unwrap();
        assert!(post.side_effects);
        let op = post.http.as_ref().unwrap();
        assert_eq!(op.body, HttpBodyDecl::Json(serde_json::json!({"name": "{{ input.name }}"})));
        assert_eq!((op.idempotent, op.max_response_bytes), (Some(true), Some(1024)));
        let none = cat.get("acme.none").unwrap();
        assert_eq!(none.http.as_ref().unwrap().body, HttpBodyDecl::Empty);
        assert!(!none.side_effects, "an explicit `side_effects` wins");
    }

    #[test]
    fn http_problems_are_reported_with_rules() {
        let text = r#"skills:
  a:
    http:
      method: PUTT
      url: "https://x/{{ input.id"
      headres: {}
      headers: {X-Version: 2, "bad header": "x", X-Env: "${1BAD}", X-T: "{{ a | nope }}"}
      timeout_s: 0
      retries: 11
  b:
    http: {url: "ftp://x/y"}
  c:
    http: {method: GET, url: "https://x/{% if a %}y{% endif %}", idempotent: maybe}
"#;
        let (cat, diags) = SkillCatalog::parse(text, Path::new("skills.yaml"));
        let got: Vec<(String, String)> = diags.iter().map(|d| (d.rule.clone(), d.message.clone())).collect();
        let has = |rule: &str, part: &str| got.iter().any(|(r, m)| r == rule && m.contains(part));
        assert!(has("BP-TYPE", "`PUTT`, not an HTTP method"), "{got:?}");
        assert!(diags.iter().any(|d| d.suggestion.as_deref() == Some("did you mean `PUT`?")), "{diags:?}");
        assert!(has("TEMPLATE", "`http.url` of skill `a`"), "{got:?}");
        assert!(has("BP-FIELD-TYPO", "`headres`"), "{got:?}");
        assert!(has("BP-TYPE", "`http.headers.X-Version` of skill `a` must be a string"), "{got:?}");
        assert!(has("BP-TYPE", "`bad header` is not a valid header name"), "{got:?}");
        assert!(has("BP-TYPE", "`${1BAD}` is not an environment variable reference"), "{got:?}");
        assert!(has("V-T3", "unknown filter `nope`"), "{got:?}");
        assert!(has("BP-RANGE", "`http.timeout_s` of skill `a`"), "{got:?}");
        assert!(has("BP-RANGE", "`http.retries` of skill `a` must be between 0 and 10"), "{got:?}");
        assert!(has("BP-MISSING-FIELD", "`http` of skill `b` has no `method`"), "{got:?}");
        assert!(has("BP-TYPE", "must start with http:// or https://"), "{got:?}");
        assert!(has("TEMPLATE", "only use `{{ expr }}` placeholders"), "{got:?}");
        assert!(has("BP-TYPE", "`http.idempotent` of skill `c`"), "{got:?}");
        assert!(cat.get("a").unwrap().http.is_none(), "an operation with errors is not kept");
    }
}
