//! OpenAPI import (SPEC §12): an OpenAPI 3.0 or 3.1 document → one `http` skill entry per operation, in the
//! shape of a `skills.yaml` entry (plain JSON, so any catalog writer can emit it).
//!
//! For each operation:
//! - the id is `PREFIX + operationId` with characters other than letters, digits, `_`, `-` and `.` replaced
//!   by `_` (an operation without `operationId` is named from its method and path, e.g. `get_pets_petId`);
//! - `input_schema` is an object with one property per path, query and header parameter (named as the
//!   parameter; on a clash, `in_name`) and `body` for an `application/json` (or `+json`) request body;
//!   `additionalProperties: false`, so a model's typo is caught before anything is sent;
//! - `output_schema` is the JSON schema of the first 2xx response with JSON content (none otherwise);
//! - `http.url` is the server URL (`servers[0]` of the operation, else of its path, else of the document,
//!   with server variables at their defaults — or the `base_url` option) joined with the path, whose
//!   `{param}`s become `{{ input.param }}` placeholders (values are percent-encoded when sent);
//! - security: the operation's (else the document's) first security requirement is mapped to headers or
//!   query parameters reading the environment: an `apiKey` in a header → `NAME: "${API_SCHEME}"`, in the
//!   query → a query parameter, in a cookie → a `Cookie` header; `http` `bearer` →
//!   `Authorization: "Bearer ${API_SCHEME_TOKEN}"`. Variable names are upper-case: the API's name (the
//!   `prefix`, else `info.title`) and the scheme's. Other schemes (basic, OAuth 2, OpenID Connect) are left
//!   to the user and noted.
//!
//! Schemas: `$ref`s within the document are inlined (JSON Pointers, including into `components.parameters`,
//! `requestBodies` and `responses`); a reference back into a schema being expanded (a recursive schema) is
//! cut there and replaced by a permissive schema (`{}` with a description saying so), and the entry gets a
//! note. References to other files are not followed (permissive, noted). OpenAPI 3.0's dialect is turned into
//! JSON Schema: `nullable`, boolean `exclusiveMinimum`/`exclusiveMaximum`, `example`; OpenAPI-only keywords
//! (`discriminator`, `xml`, `externalDocs`, `x-*`) are dropped. A schema that is still not valid JSON Schema
//! is replaced by `{}` and noted.

mod operation;
mod schema;

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use operation::OpContext;
use schema::{resolve_ref, Dialect};

/// The value of `x-generated-by` in the entries the importer writes.
pub const GENERATED_BY: &str = "flujo import-openapi";
/// The entry key naming the importer.
pub const GENERATED_BY_KEY: &str = "x-generated-by";
/// The entry key naming the OpenAPI document an entry came from.
pub const SOURCE_KEY: &str = "x-openapi-source";
/// The entry key naming the operation an entry came from.
pub const OPERATION_KEY: &str = "x-openapi-operation";

/// Most schema nodes inlined for one operation; past it, schemas are cut (permissive) and noted.
const MAX_SCHEMA_NODES: usize = 50_000;
/// Deepest `$ref` nesting followed.
const MAX_REF_DEPTH: usize = 64;
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// What to import.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Only operations with one of these tags (or named by `operations`); none: every operation.
    pub tags: Vec<String>,
    /// Only these operations, by `operationId` or generated name (or with one of `tags`).
    pub operations: Vec<String>,
    /// Prepended to each skill id (e.g. `petstore.`).
    pub prefix: String,
    /// Replaces the document's server URL.
    pub base_url: Option<String>,
    /// The document's name, recorded in each entry as `x-openapi-source`.
    pub source: String,
}

/// One imported operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ImportedSkill {
    /// The skill id (`prefix + name`).
    pub id: String,
    /// `operationId`, or the name generated for an operation without one.
    pub operation: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// The path as the document writes it.
    pub path: String,
    /// The `skills.yaml` entry.
    pub entry: Map<String, Value>,
    /// Things the user should know (cut recursive schemas, unmapped security schemes, …), one line each.
    pub notes: Vec<String>,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Import {
    /// `info.title`.
    pub title: String,
    /// The `openapi` version string.
    pub openapi: String,
    /// The imported operations, in document order.
    pub skills: Vec<ImportedSkill>,
}

/// Why a document cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenApiError {
    /// The document is not an OpenAPI 3.0 or 3.1 document (a Swagger 2.0 one, another version, not a
    /// mapping, …).
    NotOpenApi(String),
    /// The document is OpenAPI 3.x but something the import needs is malformed or missing.
    Invalid(String),
    /// The options select nothing, or name operations or tags the document does not have.
    Selection(String),
}

impl fmt::Display for OpenApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenApiError::NotOpenApi(m) | OpenApiError::Invalid(m) | OpenApiError::Selection(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for OpenApiError {}

/// Imports the operations of `doc` (a parsed OpenAPI document) selected by `opts`.
pub fn import(doc: &Value, opts: &ImportOptions) -> Result<Import, OpenApiError> {
    let Some(root) = doc.as_object() else {
        return Err(OpenApiError::NotOpenApi("the document is not a mapping".into()));
    };
    let version = match root.get("openapi") {
        Some(Value::String(v)) => v.clone(),
        // `openapi: 3.1` unquoted in YAML reads as a number
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(OpenApiError::NotOpenApi(format!("`openapi` must be a version string, found {other}")))
        }
        None if root.contains_key("swagger") => {
            return Err(OpenApiError::NotOpenApi(
                "this is a Swagger 2.0 document; only OpenAPI 3.0 and 3.1 are imported (convert it first, e.g. \
                 with swagger2openapi)"
                    .into(),
            ))
        }
        None => {
            return Err(OpenApiError::NotOpenApi(
                "the document has no `openapi` version: not an OpenAPI document".into(),
            ))
        }
    };
    let dialect = if version.starts_with("3.0") {
        Dialect::V30
    } else if version.starts_with("3.1") {
        Dialect::V31
    } else {
        return Err(OpenApiError::NotOpenApi(format!(
            "OpenAPI {version} is not supported; only OpenAPI 3.0 and 3.1 are imported"
        )));
    };
    let title = root.get("info").and_then(|i| i.get("title")).and_then(Value::as_str).unwrap_or_default().to_owned();
    let paths = match root.get("paths") {
        Some(Value::Object(p)) => p,
        None => return Err(OpenApiError::Invalid("the document has no `paths`".into())),
        Some(_) => return Err(OpenApiError::Invalid("`paths` must be a mapping".into())),
    };
    let env_base = env_base(&opts.prefix, &title);
    let mut found: Vec<Found> = Vec::new();
    let mut skills = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    for (path, item) in paths {
        let item = match item.get("$ref").and_then(Value::as_str) {
            Some(r) => resolve_ref(doc, r).unwrap_or(item),
            None => item,
        };
        let Some(item_map) = item.as_object() else { continue };
        for method in METHODS {
            let Some(op) = item_map.get(*method).and_then(Value::as_object) else { continue };
            let operation_id = op.get("operationId").and_then(Value::as_str).map(str::to_owned);
            let tags: Vec<String> = op
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            let mut name = match &operation_id {
                Some(id) => sanitize(id),
                None => {
                    sanitize(&format!("{method}_{}", path.replace(['{', '}'], "").trim_matches('/').replace('/', "_")))
                }
            };
            if name.is_empty() {
                name = format!("{method}_root");
            }
            let base_name = name.clone();
            let mut n = 2;
            while taken.contains(&name) {
                name = format!("{base_name}_{n}");
                n += 1;
            }
            taken.insert(name.clone());
            found.push(Found { name: name.clone(), operation_id: operation_id.clone(), tags: tags.clone() });
            if !selected(opts, &name, operation_id.as_deref(), &tags) {
                continue;
            }
            if *method == "trace" {
                continue;
            }
            let ctx = OpContext { doc, dialect, path, item: item_map, op, method, env_base: &env_base, opts };
            skills.push(ctx.skill(name, operation_id)?);
        }
    }
    check_selection(opts, &found)?;
    if skills.is_empty() {
        return Err(OpenApiError::Selection(if opts.tags.is_empty() && opts.operations.is_empty() {
            "the document has no operations".into()
        } else {
            "no operation matches the given --tag/--operation".into()
        }));
    }
    Ok(Import { title, openapi: version, skills })
}

fn selected(opts: &ImportOptions, name: &str, operation_id: Option<&str>, tags: &[String]) -> bool {
    if opts.tags.is_empty() && opts.operations.is_empty() {
        return true;
    }
    opts.operations.iter().any(|o| o == name || Some(o.as_str()) == operation_id)
        || opts.tags.iter().any(|t| tags.contains(t))
}

/// An operation of the document, selected or not.
struct Found {
    name: String,
    operation_id: Option<String>,
    tags: Vec<String>,
}

/// Every `--operation` and `--tag` must name something the document has.
fn check_selection(opts: &ImportOptions, found: &[Found]) -> Result<(), OpenApiError> {
    for o in &opts.operations {
        if !found.iter().any(|f| &f.name == o || f.operation_id.as_deref() == Some(o)) {
            let known: Vec<&str> = found.iter().map(|f| f.operation_id.as_deref().unwrap_or(&f.name)).collect();
            let close = closest(o, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
            return Err(OpenApiError::Selection(format!(
                "operation `{o}` is not in the document{close}; it has: {}",
                abbreviate(&known)
            )));
        }
    }
    for t in &opts.tags {
        if !found.iter().any(|f| f.tags.contains(t)) {
            let mut known: Vec<&str> = found.iter().flat_map(|f| f.tags.iter().map(String::as_str)).collect();
            known.sort_unstable();
            known.dedup();
            let close = closest(t, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
            return Err(OpenApiError::Selection(format!(
                "no operation has tag `{t}`{close}; the tags are: {}",
                if known.is_empty() { "(none)".to_owned() } else { abbreviate(&known) }
            )));
        }
    }
    Ok(())
}

fn abbreviate(items: &[&str]) -> String {
    let mut s = items.iter().take(20).copied().collect::<Vec<_>>().join(", ");
    if items.len() > 20 {
        s.push_str(&format!(", … ({} in all)", items.len()));
    }
    s
}

fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let max = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (flujo_core::suggest::edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= max)
        .min()
        .map(|(_, c)| c)
}

/// `s` as a skill id part: letters, digits, `_`, `-` and `.` kept, other characters `_`.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches(['_', '.']).to_owned()
}

/// `s` in upper snake case (`bearerAuth` → `BEARER_AUTH`, `Pet Store` → `PET_STORE`).
fn upper_snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev_lower && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    out.trim_matches('_').to_owned()
}

/// The first part of the environment variables of an API: its prefix, else its title.
fn env_base(prefix: &str, title: &str) -> String {
    let base = upper_snake(if prefix.trim_matches(['.', '_', '-']).is_empty() { title } else { prefix });
    let base = if base.is_empty() { "API".to_owned() } else { base };
    if base.starts_with(|c: char| c.is_ascii_digit()) {
        format!("API_{base}")
    } else {
        base
    }
}

fn env_name(base: &str, scheme: &str, suffix: &str) -> String {
    let scheme = upper_snake(scheme);
    let mut name = if scheme.is_empty() || scheme.starts_with(base) { scheme } else { format!("{base}_{scheme}") };
    if name.is_empty() {
        name = base.to_owned();
    }
    if !suffix.is_empty() && !name.ends_with(suffix) {
        name.push('_');
        name.push_str(suffix);
    }
    name
}

/// Whether a `skills.yaml` entry was written by the importer from `source` (any source when `None`).
pub fn is_generated(entry: &Value, source: Option<&str>) -> bool {
    entry.get(GENERATED_BY_KEY).and_then(Value::as_str).is_some_and(|g| g.starts_with(GENERATED_BY))
        && source.is_none_or(|s| entry.get(SOURCE_KEY).and_then(Value::as_str) == Some(s))
}

#[cfg(test)]
mod tests {
    use super::operation::input_ref;
    use super::schema::percent_decode;
    use super::*;
    use serde_json::json;

    fn opts() -> ImportOptions {
        ImportOptions { prefix: "pets.".into(), source: "api.json".into(), ..Default::default() }
    }

    fn petstore() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Pet Store", "version": "1"},
            "servers": [{"url": "https://{host}/v1", "variables": {"host": {"default": "api.example.com"}}}],
            "security": [{"key": []}],
            "paths": {
                "/pets/{petId}": {
                    "parameters": [{"name": "petId", "in": "path", "required": true, "schema": {"type": "integer"}}],
                    "get": {
                        "operationId": "getPet", "tags": ["pets"], "summary": "One pet",
                        "parameters": [
                            {"name": "fields", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                            {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}
                        ],
                        "responses": {"200": {"$ref": "#/components/responses/Pet"}}
                    },
                    "delete": {"tags": ["admin"], "security": [{"bearer": []}], "responses": {"204": {"description": "gone"}}}
                },
                "/pets": {
                    "post": {
                        "operationId": "add pet!",
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
                        "responses": {"201": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}}}
                    }
                }
            },
            "components": {
                "securitySchemes": {
                    "key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "bearer": {"type": "http", "scheme": "bearer"}
                },
                "responses": {"Pet": {"description": "a pet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}}},
                "schemas": {
                    "Pet": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string", "nullable": true, "example": "Rex"},
                        "age": {"type": "integer", "minimum": 0, "exclusiveMinimum": true},
                        "parent": {"$ref": "#/components/schemas/Pet"},
                        "xml_stuff": {"type": "string", "xml": {"name": "x"}}
                    }}
                }
            }
        })
    }

    #[test]
    fn imports_operations_with_schemas_security_and_servers() {
        let imp = import(&petstore(), &opts()).unwrap();
        let ids: Vec<&str> = imp.skills.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["pets.getPet", "pets.delete_pets_petId", "pets.add_pet"]);
        let get = &imp.skills[0].entry;
        assert_eq!(get["http"]["url"], "https://api.example.com/v1/pets/{{ input.petId }}");
        assert_eq!(get["http"]["query"]["fields"], "{{ input.fields }}");
        assert_eq!(get["http"]["headers"]["X-Trace"], "{{ input['X-Trace'] }}");
        assert_eq!(get["http"]["headers"]["X-API-Key"], "${PETS_KEY}");
        assert_eq!(get["input_schema"]["required"], json!(["petId"]));
        assert_eq!(get["side_effects"], false);
        assert_eq!(get[GENERATED_BY_KEY], GENERATED_BY);
        let out = &get["output_schema"];
        assert_eq!(out["properties"]["name"]["type"], json!(["string", "null"]));
        assert_eq!(out["properties"]["name"]["examples"], json!(["Rex"]));
        assert_eq!(out["properties"]["age"], json!({"type": "integer", "exclusiveMinimum": 0}));
        assert!(out["properties"]["xml_stuff"].get("xml").is_none());
        assert!(out["properties"]["parent"]["description"].as_str().unwrap().contains("recursive"));
        assert!(imp.skills[0].notes.iter().any(|n| n.contains("`Pet` is recursive")), "{:?}", imp.skills[0].notes);
        let del = &imp.skills[1].entry;
        assert_eq!(del["http"]["headers"]["Authorization"], "Bearer ${PETS_BEARER_TOKEN}");
        assert!(del["http"].get("body").is_none());
        let post = &imp.skills[2].entry;
        assert_eq!(post["http"]["body"], "{{ input.body }}");
        assert_eq!(post["input_schema"]["required"], json!(["body"]));
        assert_eq!(post["side_effects"], true);
        assert_eq!(post[OPERATION_KEY], "add pet!");
        assert!(jsonschema::validator_for(&post["input_schema"]).is_ok());
    }

    #[test]
    fn selection_and_refusals() {
        let mut o = opts();
        o.tags = vec!["admin".into()];
        o.operations = vec!["getPet".into()];
        let imp = import(&petstore(), &o).unwrap();
        assert_eq!(imp.skills.len(), 2);
        o.operations = vec!["getPett".into()];
        let err = import(&petstore(), &o).unwrap_err();
        assert!(err.to_string().contains("did you mean `getPet`"), "{err}");
        let mut o = opts();
        o.tags = vec!["nope".into()];
        assert!(matches!(import(&petstore(), &o), Err(OpenApiError::Selection(_))));
        assert!(
            matches!(import(&json!({"swagger": "2.0"}), &opts()), Err(OpenApiError::NotOpenApi(m)) if m.contains("Swagger"))
        );
        assert!(matches!(import(&json!({"openapi": "2.5"}), &opts()), Err(OpenApiError::NotOpenApi(_))));
        assert!(matches!(import(&json!([1]), &opts()), Err(OpenApiError::NotOpenApi(_))));
        let mut doc = petstore();
        doc["servers"] = json!([{"url": "/v1"}]);
        assert!(import(&doc, &opts()).unwrap_err().to_string().contains("--base-url"));
        let mut o = opts();
        o.base_url = Some("http://127.0.0.1:9/".into());
        assert_eq!(
            import(&doc, &o).unwrap().skills[0].entry["http"]["url"],
            "http://127.0.0.1:9/pets/{{ input.petId }}"
        );
    }

    #[test]
    fn names() {
        assert_eq!(sanitize("list pets/all"), "list_pets_all");
        assert_eq!(upper_snake("bearerAuth"), "BEARER_AUTH");
        assert_eq!(upper_snake("Pet Store API"), "PET_STORE_API");
        assert_eq!(env_base("petstore.", ""), "PETSTORE");
        assert_eq!(env_name("PETSTORE", "api_key", ""), "PETSTORE_API_KEY");
        assert_eq!(env_name("PETSTORE", "petstore_auth", "TOKEN"), "PETSTORE_AUTH_TOKEN");
        assert_eq!(input_ref("in"), Some("input['in']".into()));
        assert_eq!(input_ref("it's"), None);
        assert_eq!(percent_decode("/a%20b"), "/a b");
    }
}
