//! One operation of an OpenAPI document → one `skills.yaml` entry: its URL, parameters, body, security and
//! response, as an `http` skill with input and output schemas.

use serde_json::{json, Map, Value};

use super::schema::{deref, Dialect, SchemaConverter};
use super::{
    env_name, ImportOptions, ImportedSkill, OpenApiError, GENERATED_BY, GENERATED_BY_KEY, OPERATION_KEY, SOURCE_KEY,
};

/// One operation and what converting it needs.
pub(super) struct OpContext<'a> {
    /// The whole document (references resolve against it).
    pub(super) doc: &'a Value,
    pub(super) dialect: Dialect,
    /// The path as the document writes it (`/pets/{petId}`).
    pub(super) path: &'a str,
    /// The path item (its `parameters` and `servers` apply to the operation).
    pub(super) item: &'a Map<String, Value>,
    pub(super) op: &'a Map<String, Value>,
    /// Lower-case method (`get`).
    pub(super) method: &'a str,
    /// The first part of the API's environment variable names.
    pub(super) env_base: &'a str,
    pub(super) opts: &'a ImportOptions,
}

/// A JSON content type (`application/json`, `application/problem+json`, `*/*`).
fn json_media(content: &Map<String, Value>) -> Option<(&str, &Value)> {
    let is_json = |m: &str| {
        let m = m.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        m == "application/json" || m.ends_with("+json")
    };
    content
        .iter()
        .find(|(m, _)| is_json(m))
        .or_else(|| content.iter().find(|(m, _)| m.as_str() == "*/*"))
        .map(|(m, v)| (m.as_str(), v))
}

/// `input.NAME` or `input['NAME']`; `None` for a name a template string cannot quote.
pub(super) fn input_ref(name: &str) -> Option<String> {
    const KEYWORDS: &[&str] =
        &["and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None", "loop"];
    let ident = name.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    if ident && !KEYWORDS.contains(&name) {
        return Some(format!("input.{name}"));
    }
    if name.chars().any(|c| c == '\'' || c == '\\' || c.is_control()) || name.contains("}}") {
        return None;
    }
    Some(format!("input['{name}']"))
}

/// Substitutes a server URL's `{variables}` with their defaults.
fn server_url(server: &Value) -> Option<String> {
    let mut url = server.get("url")?.as_str()?.to_owned();
    if let Some(Value::Object(vars)) = server.get("variables") {
        for (name, var) in vars {
            if let Some(default) = var.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
    }
    Some(url)
}

impl OpContext<'_> {
    fn base_url(&self) -> Result<String, OpenApiError> {
        if let Some(b) = &self.opts.base_url {
            return Ok(b.trim_end_matches('/').to_owned());
        }
        let first = |v: Option<&Value>| v.and_then(Value::as_array).and_then(|a| a.first()).and_then(server_url);
        let url = first(self.op.get("servers"))
            .or_else(|| first(self.item.get("servers")))
            .or_else(|| first(self.doc.get("servers")));
        match url {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(u.trim_end_matches('/').to_owned()),
            Some(u) => Err(OpenApiError::Invalid(format!(
                "the server URL `{u}` is not absolute (http:// or https://); pass --base-url"
            ))),
            None => Err(OpenApiError::Invalid("the document names no server (`servers`); pass --base-url".into())),
        }
    }

    pub(super) fn skill(&self, name: String, operation_id: Option<String>) -> Result<ImportedSkill, OpenApiError> {
        let method = self.method.to_ascii_uppercase();
        let mut notes: Vec<String> = Vec::new();
        let mut conv = SchemaConverter::new(self.doc, self.dialect);
        let base = self.base_url()?;

        // parameters: the path item's, overridden by the operation's (same name and place)
        let mut params: Vec<&Map<String, Value>> = Vec::new();
        for list in [self.item.get("parameters"), self.op.get("parameters")] {
            for p in list.and_then(Value::as_array).into_iter().flatten() {
                let Some(p) = deref(self.doc, p).as_object() else { continue };
                let key = (p.get("name").and_then(Value::as_str), p.get("in").and_then(Value::as_str));
                params.retain(|q| (q.get("name").and_then(Value::as_str), q.get("in").and_then(Value::as_str)) != key);
                params.push(p);
            }
        }
        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        let mut path_refs: Vec<(String, String)> = Vec::new();
        let mut query = Map::new();
        let mut headers = Map::new();
        for p in params {
            let (Some(pname), Some(place)) =
                (p.get("name").and_then(Value::as_str), p.get("in").and_then(Value::as_str))
            else {
                continue;
            };
            if place == "cookie" {
                notes.push(format!("cookie parameter `{pname}` is not sent (cookie parameters are not supported)"));
                continue;
            }
            if place == "header"
                && ["accept", "content-type", "authorization"].contains(&pname.to_ascii_lowercase().as_str())
            {
                continue;
            }
            let prop = if properties.contains_key(pname) { format!("{place}_{pname}") } else { pname.to_owned() };
            let Some(reference) = input_ref(&prop) else {
                notes.push(format!("parameter `{pname}` has a name a template cannot quote; it is not sent"));
                continue;
            };
            let mut schema = match (p.get("schema"), p.get("content").and_then(Value::as_object)) {
                (Some(s), _) => conv.schema(s, &format!("parameter `{pname}`")),
                (None, Some(content)) => match content.values().next().and_then(|m| m.get("schema")) {
                    Some(s) => conv.schema(s, &format!("parameter `{pname}`")),
                    None => json!({}),
                },
                _ => json!({"type": "string"}),
            };
            if let (Some(desc), Value::Object(m)) = (p.get("description"), &mut schema) {
                if !m.contains_key("description") {
                    m.insert("description".into(), desc.clone());
                }
            }
            let is_array = schema.get("type") == Some(&json!("array"));
            let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(place == "query" || place == "cookie");
            let joined = is_array && !(place == "query" && explode);
            let template =
                if joined { format!("{{{{ {reference} | join(',') }}}}") } else { format!("{{{{ {reference} }}}}") };
            if place == "query" && schema.get("type") == Some(&json!("object")) {
                notes.push(format!("query parameter `{pname}` is an object; it is sent as JSON text"));
            }
            properties.insert(prop.clone(), schema);
            let is_required = place == "path" || p.get("required").and_then(Value::as_bool).unwrap_or(false);
            if is_required {
                required.push(Value::String(prop.clone()));
            }
            match place {
                "path" => path_refs.push((pname.to_owned(), template)),
                "query" => {
                    query.insert(pname.to_owned(), Value::String(template));
                }
                "header" => {
                    headers.insert(pname.to_owned(), Value::String(template));
                }
                other => notes.push(format!("parameter `{pname}` in `{other}` is not supported; it is not sent")),
            }
        }

        // the URL: `{param}` → its placeholder
        let mut url = base.clone();
        let mut rest = self.path;
        while let Some(open) = rest.find('{') {
            url.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                url.push_str(&rest[open..]);
                rest = "";
                break;
            };
            let pname = &rest[open + 1..open + close];
            match path_refs.iter().find(|(n, _)| n == pname) {
                Some((_, template)) => url.push_str(template),
                None => {
                    // a placeholder the operation does not declare: a required string
                    let prop = if properties.contains_key(pname) { format!("path_{pname}") } else { pname.to_owned() };
                    match input_ref(&prop) {
                        Some(reference) => {
                            notes.push(format!("path parameter `{pname}` is not declared; it is taken as a string"));
                            properties.insert(prop.clone(), json!({"type": "string"}));
                            required.push(Value::String(prop));
                            url.push_str(&format!("{{{{ {reference} }}}}"));
                        }
                        None => {
                            return Err(OpenApiError::Invalid(format!(
                                "{method} {}: path parameter `{pname}` cannot be written in a template",
                                self.path
                            )))
                        }
                    }
                }
            }
            rest = &rest[open + close + 1..];
        }
        url.push_str(rest);

        // the request body
        let mut body: Option<Value> = None;
        if let Some(rb) = self.op.get("requestBody").map(|rb| deref(self.doc, rb)) {
            let content = rb.get("content").and_then(Value::as_object);
            match content.and_then(json_media) {
                Some((media, m)) => {
                    let prop = if properties.contains_key("body") { "request_body" } else { "body" };
                    let mut schema = match m.get("schema") {
                        Some(s) => conv.schema(s, "the request body"),
                        None => json!({}),
                    };
                    if let (Some(desc), Value::Object(map)) = (rb.get("description"), &mut schema) {
                        if !map.contains_key("description") {
                            map.insert("description".into(), desc.clone());
                        }
                    }
                    properties.insert(prop.to_owned(), schema);
                    if rb.get("required").and_then(Value::as_bool).unwrap_or(false) {
                        required.push(Value::String(prop.to_owned()));
                    }
                    if media != "application/json" && media != "*/*" {
                        headers.insert("Content-Type".into(), Value::String(media.to_owned()));
                    }
                    body = Some(Value::String(format!("{{{{ input.{prop} }}}}")));
                }
                None => {
                    let types: Vec<&str> = content.map(|c| c.keys().map(String::as_str).collect()).unwrap_or_default();
                    notes.push(format!(
                        "the request body ({}) is not JSON and is not sent; edit `http.body` to send one",
                        if types.is_empty() { "no content type".to_owned() } else { types.join(", ") }
                    ));
                    body = Some(Value::Null);
                }
            }
        } else if matches!(self.method, "post" | "put" | "patch") {
            // without this, the whole input would be sent as the body
            body = Some(Value::Null);
        }

        // security
        let requirement = self
            .op
            .get("security")
            .or_else(|| self.doc.get("security"))
            .and_then(Value::as_array)
            .and_then(|alternatives| {
                if alternatives.len() > 1 {
                    notes.push("the operation accepts several security requirements; the first is used".into());
                }
                alternatives.first()
            })
            .and_then(Value::as_object);
        let mut cookies: Vec<String> = Vec::new();
        for scheme_name in requirement.into_iter().flat_map(|r| r.keys()) {
            let scheme = self
                .doc
                .pointer("/components/securitySchemes")
                .and_then(|s| s.get(scheme_name))
                .map(|s| deref(self.doc, s));
            let Some(scheme) = scheme else {
                notes.push(format!("security scheme `{scheme_name}` is not declared in components.securitySchemes"));
                continue;
            };
            let kind = scheme.get("type").and_then(Value::as_str).unwrap_or_default();
            let http_scheme = scheme.get("scheme").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
            match (kind, scheme.get("in").and_then(Value::as_str), scheme.get("name").and_then(Value::as_str)) {
                ("apiKey", Some(place), Some(key_name)) => {
                    let var = env_name(self.env_base, scheme_name, "");
                    let value = Value::String(format!("${{{var}}}"));
                    match place {
                        "header" => {
                            headers.insert(key_name.to_owned(), value);
                        }
                        "query" => {
                            query.insert(key_name.to_owned(), value);
                        }
                        _ => cookies.push(format!("{key_name}=${{{var}}}")),
                    }
                }
                ("http", _, _) if http_scheme == "bearer" => {
                    let var = env_name(self.env_base, scheme_name, "TOKEN");
                    headers.insert("Authorization".into(), Value::String(format!("Bearer ${{{var}}}")));
                }
                _ => {
                    let what = if kind == "http" { format!("http {http_scheme}") } else { kind.to_owned() };
                    notes.push(format!(
                        "security scheme `{scheme_name}` ({what}) is not mapped; add the header it needs under \
                         `http.headers` (e.g. `Authorization: \"… ${{VAR}}\"`)"
                    ));
                }
            }
        }
        if !cookies.is_empty() {
            headers.insert("Cookie".into(), Value::String(cookies.join("; ")));
        }

        // the response
        let responses = self.op.get("responses").and_then(Value::as_object);
        let mut codes: Vec<(&String, &Value)> =
            responses.into_iter().flatten().filter(|(code, _)| code.starts_with('2')).collect();
        codes.sort_by(|a, b| a.0.cmp(b.0));
        let mut output_schema = None;
        if let Some((code, resp)) = codes.first() {
            let resp = deref(self.doc, resp);
            match resp.get("content").and_then(Value::as_object).and_then(json_media) {
                Some((_, m)) => {
                    if let Some(s) = m.get("schema") {
                        output_schema = Some(conv.schema(s, &format!("response {code}")));
                    }
                }
                None if resp.get("content").is_some() => {
                    notes.push(format!("response {code} is not JSON; the output is its text, unchecked"))
                }
                None => {}
            }
        }

        // the entry
        let description = self
            .op
            .get("summary")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .or_else(|| {
                self.op
                    .get("description")
                    .and_then(Value::as_str)
                    .and_then(|d| d.lines().find(|l| !l.trim().is_empty()))
            })
            .map(|s| s.trim().chars().take(1000).collect::<String>())
            .unwrap_or_else(|| format!("{method} {}", self.path));
        let operation = operation_id.clone().unwrap_or_else(|| name.clone());
        let mut http = Map::new();
        http.insert("method".into(), Value::String(method.clone()));
        http.insert("url".into(), Value::String(url));
        if !query.is_empty() {
            http.insert("query".into(), Value::Object(query));
        }
        if !headers.is_empty() {
            http.insert("headers".into(), Value::Object(headers));
        }
        if let Some(b) = body {
            http.insert("body".into(), b);
        }
        let mut input_schema = Map::new();
        input_schema.insert("type".into(), json!("object"));
        input_schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            input_schema.insert("required".into(), Value::Array(required));
        }
        input_schema.insert("additionalProperties".into(), Value::Bool(false));
        let mut entry = Map::new();
        entry.insert(GENERATED_BY_KEY.into(), Value::String(GENERATED_BY.into()));
        entry.insert(SOURCE_KEY.into(), Value::String(self.opts.source.clone()));
        entry.insert(OPERATION_KEY.into(), Value::String(operation.clone()));
        entry.insert("description".into(), Value::String(description));
        entry.insert("side_effects".into(), Value::Bool(!matches!(self.method, "get" | "head" | "options")));
        entry.insert("http".into(), Value::Object(http));
        entry.insert("input_schema".into(), Value::Object(input_schema));
        if let Some(s) = output_schema {
            entry.insert("output_schema".into(), s);
        }
        notes.extend(conv.into_notes());
        Ok(ImportedSkill {
            id: format!("{}{name}", self.opts.prefix),
            operation,
            method,
            path: self.path.to_owned(),
            entry,
            notes,
        })
    }
}
