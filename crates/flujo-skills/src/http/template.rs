//! The templates of an http skill: header and query values with `${NAME}` environment references, URL
//! templates whose placeholders are encoded by where they sit, and the rendering of one call's request with
//! its secrets collected for masking.

use flujo_core::{SkillCall, SkillError};
use flujo_http::reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use flujo_http::reqwest::Url;
use flujo_template::{compile_template, CompiledTemplate, Scope, UndefinedMode};
use serde_json::Value;

use super::{CompiledBody, HttpSkill, MASK};

/// A header or query value: text pieces and environment references.
#[derive(Debug, Clone)]
pub(super) enum Piece {
    Text(CompiledTemplate),
    Env(String),
}

#[derive(Debug, Clone)]
pub(super) struct ValueTemplate(Vec<Piece>);

/// Where a URL placeholder sits, which decides how its value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UrlPlace {
    /// The start of the URL or its host: inserted as is.
    Origin,
    /// The path: percent-encoded as one segment; an empty value is an error.
    Path,
    /// The query or fragment: percent-encoded as a component.
    Query,
}

#[derive(Debug, Clone)]
pub(super) enum UrlPart {
    Lit(String),
    Value { template: CompiledTemplate, place: UrlPlace, source: String },
}

/// Splits a header or query value into template text and `${NAME}` references (`$${` is a literal `${`).
fn split_env(src: &str) -> Result<Vec<(bool, String)>, String> {
    let mut parts: Vec<(bool, String)> = Vec::new();
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
                return Err(format!("`${{` without a closing `}}` in {src:?}"));
            };
            let name = &tail[..end];
            if !is_env_name(name) {
                return Err(format!(
                    "`${{{name}}}` is not an environment variable reference (letters, digits and `_`, not starting \
                     with a digit)"
                ));
            }
            if !text.is_empty() {
                parts.push((false, std::mem::take(&mut text)));
            }
            parts.push((true, name.to_owned()));
            rest = &tail[end + 1..];
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() || parts.is_empty() {
        parts.push((false, text));
    }
    Ok(parts)
}

/// `NAME` of `${NAME}`: letters, digits and `_`, not starting with a digit.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

pub(super) fn compile_value(src: &str) -> Result<ValueTemplate, String> {
    split_env(src)?
        .into_iter()
        .map(|(env, text)| {
            if env {
                Ok(Piece::Env(text))
            } else {
                compile_template(&text).map(Piece::Text).map_err(|e| e.to_string())
            }
        })
        .collect::<Result<_, _>>()
        .map(ValueTemplate)
}

/// Splits a URL template into literal text and `{{ … }}` placeholders, each with its place in the URL.
/// Only `{{ expr }}` placeholders are allowed (no `{% %}` blocks or `{{#if}}` helpers): each one's value is
/// encoded on its own.
fn split_url(src: &str) -> Result<Vec<(Option<UrlPlace>, String)>, String> {
    if src.contains("{%") || src.contains("{#") {
        return Err("a URL template may only use `{{ expr }}` placeholders (no `{% %}` blocks or comments)".into());
    }
    let mut out = Vec::new();
    let mut literal_so_far = String::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let lit = &rest[..start];
        if !lit.is_empty() {
            literal_so_far.push_str(lit);
            out.push((None, lit.to_owned()));
        }
        let after = &rest[start..];
        let Some(end) = after.find("}}") else {
            return Err("a `{{` without its closing `}}`".into());
        };
        let placeholder = &after[..end + 2];
        let inner = placeholder[2..placeholder.len() - 2].trim();
        if inner.starts_with('#') || inner.starts_with('/') || inner.starts_with("else") {
            return Err(format!("`{placeholder}`: a URL template may only use `{{{{ expr }}}}` placeholders"));
        }
        out.push((Some(url_place(&literal_so_far)), placeholder.to_owned()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push((None, rest.to_owned()));
    }
    Ok(out)
}

/// Where a placeholder after the literal URL text `before` sits.
fn url_place(before: &str) -> UrlPlace {
    if before.contains('?') || before.contains('#') {
        return UrlPlace::Query;
    }
    let after_scheme = match before.find("://") {
        Some(i) => &before[i + 3..],
        None => before,
    };
    if after_scheme.contains('/') {
        UrlPlace::Path
    } else {
        UrlPlace::Origin
    }
}

pub(super) fn compile_url(src: &str) -> Result<Vec<UrlPart>, String> {
    if src.trim().is_empty() {
        return Err("the URL is empty".into());
    }
    split_url(src)?
        .into_iter()
        .map(|(place, text)| match place {
            None => Ok(UrlPart::Lit(text)),
            Some(place) => compile_template(&text)
                .map(|template| UrlPart::Value { template, place, source: text.clone() })
                .map_err(|e| format!("`{text}`: {e}")),
        })
        .collect()
}

/// The secret values of one call, masked in everything it reports.
#[derive(Default)]
pub(super) struct Secrets(Vec<String>);

impl Secrets {
    pub(super) fn add(&mut self, value: &str) {
        if value.len() >= 4 && !self.0.iter().any(|s| s == value) {
            self.0.push(value.to_owned());
            // as it appears in an encoded query
            let encoded: String = url_form_encode(value);
            if encoded != value {
                self.0.push(encoded);
            }
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    pub(super) fn scrub_value(&self, value: Value) -> Value {
        if self.0.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.scrub(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.scrub_value(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (self.scrub(&k), self.scrub_value(v))).collect())
            }
            other => other,
        }
    }
}

pub(super) fn url_form_encode(value: &str) -> String {
    let mut u = Url::parse("http://x/").ok();
    match &mut u {
        Some(u) => {
            u.query_pairs_mut().append_pair("v", value);
            u.query().and_then(|q| q.strip_prefix("v=")).unwrap_or(value).to_owned()
        }
        None => value.to_owned(),
    }
}

/// Percent-encodes `value` as one path segment (everything but RFC 3986 unreserved characters).
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A value rendered to text: strings as they are, other JSON as JSON text.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What an environment variable holds, read at call time.
fn read_env(name: &str, id: &str, place: &str) -> Result<String, SkillError> {
    match std::env::var(name) {
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => Err(SkillError::fatal(format!(
            "http skill '{id}': environment variable {name} (read by {place}) is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(SkillError::fatal(format!(
            "http skill '{id}': environment variable {name} (read by {place}) is not valid UTF-8"
        ))),
    }
}

/// The rendered values of a header or query template: nothing (left out), or one or more texts.
fn render_value(
    t: &ValueTemplate,
    scope: &Scope<'_>,
    secrets: &mut Secrets,
    id: &str,
    place: &str,
) -> Result<(Vec<String>, bool), SkillError> {
    let bad = |e: flujo_template::TemplateError| SkillError::fatal(format!("http skill '{id}': {place}: {e}"));
    if let [Piece::Text(template)] = t.0.as_slice() {
        let values = match template.render_value(scope, UndefinedMode::Lenient).map_err(bad)? {
            Value::Null => Vec::new(),
            Value::Array(items) => items.iter().filter(|v| !v.is_null()).map(value_text).collect(),
            other => vec![value_text(&other)],
        };
        return Ok((values.into_iter().filter(|v| !v.is_empty()).collect(), false));
    }
    let mut text = String::new();
    let mut secret = false;
    for piece in &t.0 {
        match piece {
            Piece::Text(template) => text.push_str(&template.render(scope, UndefinedMode::Lenient).map_err(bad)?),
            Piece::Env(name) => {
                let value = read_env(name, id, place)?;
                secrets.add(&value);
                text.push_str(&value);
                secret = true;
            }
        }
    }
    Ok((if text.is_empty() { Vec::new() } else { vec![text] }, secret))
}

/// A request ready to send (and to send again).
pub(super) struct Prepared {
    pub(super) url: Url,
    /// The URL as messages show it: user info and secret query values masked.
    pub(super) shown: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<(Vec<u8>, &'static str)>,
    pub(super) secrets: Secrets,
}

impl HttpSkill {
    pub(super) fn prepare(&self, call: &SkillCall) -> Result<Prepared, SkillError> {
        let id = &self.spec.id;
        let c = &self.compiled;
        let extra: [(&str, &Value); 2] = [("input", &call.input), ("params", &self.params)];
        let mut scope = Scope::new(&call.input).with_context(&call.context).with_extra(&extra);
        scope.resume_input = call.context.resume_input();
        scope.this = call.this.as_deref();
        let mut secrets = Secrets::default();

        // the URL
        let mut url_text = String::new();
        for part in &c.url {
            match part {
                UrlPart::Lit(s) => url_text.push_str(s),
                UrlPart::Value { template, place, source } => {
                    let value = template
                        .render_value(&scope, UndefinedMode::Lenient)
                        .map_err(|e| SkillError::fatal(format!("http skill '{id}': `url` {source}: {e}")))?;
                    let text = match &value {
                        Value::Null => String::new(),
                        v => value_text(v),
                    };
                    match place {
                        UrlPlace::Origin => url_text.push_str(&text),
                        UrlPlace::Path => {
                            if text.is_empty() {
                                return Err(SkillError::fatal(format!(
                                    "http skill '{id}': `url` placeholder {source} rendered empty; a path \
                                     segment needs a value (is it missing from the input?)"
                                )));
                            }
                            url_text.push_str(&encode_component(&text));
                        }
                        UrlPlace::Query => url_text.push_str(&encode_component(&text)),
                    }
                }
            }
        }
        let mut url = Url::parse(url_text.trim()).map_err(|e| {
            SkillError::fatal(format!(
                "http skill '{id}': the URL {:?} is not valid: {e}",
                mask_userinfo_text(&url_text)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SkillError::fatal(format!(
                "http skill '{id}': the URL {} is not http or https",
                show_url(&url)
            )));
        }
        let mut shown_pairs: Vec<(String, String)> = Vec::new();
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, t) in &c.query {
            let (values, secret) = render_value(t, &scope, &mut secrets, id, &format!("`query.{name}`"))?;
            for v in values {
                shown_pairs.push((name.clone(), if secret { MASK.to_owned() } else { v.clone() }));
                pairs.push((name.clone(), v));
            }
        }
        let mut shown_url = url.clone();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs.iter());
            shown_url.query_pairs_mut().extend_pairs(shown_pairs.iter());
        }
        let shown = show_url(&shown_url);

        // headers
        let mut headers = HeaderMap::new();
        for (header, name, t) in &c.headers {
            let (values, secret) = render_value(t, &scope, &mut secrets, id, &format!("header `{name}`"))?;
            for v in values {
                let mut value = HeaderValue::from_str(&v).map_err(|_| {
                    SkillError::fatal(format!(
                        "http skill '{id}': header `{name}` has characters a header value cannot hold (line breaks \
                         or control characters)"
                    ))
                })?;
                value.set_sensitive(secret || sensitive_header(header));
                headers.append(header.clone(), value);
            }
        }
        if c.send_idempotency_key {
            if let Ok(v) = HeaderValue::from_str(&call.idempotency_key) {
                headers.insert(HeaderName::from_static("idempotency-key"), v);
            }
        }

        // the body
        let json_body = |v: &Value| -> Result<Option<(Vec<u8>, &'static str)>, SkillError> {
            serde_json::to_vec(v)
                .map(|b| Some((b, "application/json")))
                .map_err(|e| SkillError::fatal(format!("http skill '{id}': cannot encode the body as JSON: {e}")))
        };
        let bad_body = |e: flujo_template::TemplateError| SkillError::fatal(format!("http skill '{id}': `body`: {e}"));
        let body = match &c.body {
            CompiledBody::None => None,
            CompiledBody::Input => json_body(&call.input)?,
            CompiledBody::Json(j) => match j.render(&scope, UndefinedMode::Lenient).map_err(bad_body)? {
                Value::Null => None,
                v => json_body(&v)?,
            },
            CompiledBody::Template(t) => match t.render_value(&scope, UndefinedMode::Lenient).map_err(bad_body)? {
                Value::Null => None,
                Value::String(s) => Some((s.into_bytes(), "text/plain; charset=utf-8")),
                v => json_body(&v)?,
            },
        };
        Ok(Prepared { url, shown, headers, body, secrets })
    }
}

/// Header names whose values are secret even when written literally.
fn sensitive_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || n.contains("token")
        || n.contains("secret")
        || n.contains("key")
        || n.contains("password")
}

/// `url` for messages: user info masked.
pub(super) fn show_url(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username(MASK);
        let _ = u.set_password(None);
    }
    u.to_string()
}

/// A URL that did not parse, for messages: anything between `://` and an `@` of its authority masked.
pub(super) fn mask_userinfo_text(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else { return text.to_owned() };
    let authority_end = text[start..].find(['/', '?', '#']).map_or(text.len(), |i| start + i);
    match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}{MASK}{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env_references(src: &str) -> Result<Vec<String>, String> {
        Ok(split_env(src)?.into_iter().filter(|(env, _)| *env).map(|(_, n)| n).collect())
    }

    fn check_url_template(src: &str) -> Result<(), String> {
        compile_url(src).map(|_| ())
    }

    #[test]
    fn env_references_are_split_out() {
        assert_eq!(env_references("Bearer ${TOKEN}").unwrap(), vec!["TOKEN"]);
        assert_eq!(env_references("$${NOT} ${A}-${B_2}").unwrap(), vec!["A", "B_2"]);
        assert!(env_references("${1X}").is_err());
        assert!(env_references("${OPEN").is_err());
        assert_eq!(env_references("$5 {{ input.x }}").unwrap(), Vec::<String>::new());
        let parts = split_env("$${X}").unwrap();
        assert_eq!(parts, vec![(false, "${X}".to_owned())]);
    }

    #[test]
    fn url_placeholders_know_their_place() {
        let parts = split_url("{{ context.base }}/pets/{{ input.id }}?q={{ input.q }}").unwrap();
        let places: Vec<_> = parts.iter().filter_map(|(p, _)| *p).collect();
        assert_eq!(places, vec![UrlPlace::Origin, UrlPlace::Path, UrlPlace::Query]);
        let parts = split_url("https://{{ input.host }}/x/{{ input.id }}").unwrap();
        let places: Vec<_> = parts.iter().filter_map(|(p, _)| *p).collect();
        assert_eq!(places, vec![UrlPlace::Origin, UrlPlace::Path]);
        assert!(check_url_template("https://x/{% if a %}b{% endif %}").is_err());
        assert!(check_url_template("https://x/{{#if a}}b{{/if}}").is_err());
        assert!(check_url_template("https://x/{{ input.id").is_err());
        assert!(check_url_template("https://x/{{ input.id | nope( }}").is_err());
        assert!(check_url_template("  ").is_err());
        assert_eq!(encode_component("a b/c?d%é"), "a%20b%2Fc%3Fd%25%C3%A9");
    }

    #[test]
    fn masking() {
        assert_eq!(mask_userinfo_text("https://u:p@h/x@y"), "https://***@h/x@y");
        assert_eq!(mask_userinfo_text("https://h/x@y"), "https://h/x@y");
        let u = Url::parse("https://user:pw@example.com/a").unwrap();
        assert_eq!(show_url(&u), "https://***@example.com/a");
        let mut s = Secrets::default();
        s.add("s3cr3t value");
        assert_eq!(s.scrub("got s3cr3t value and s3cr3t+value"), "got *** and ***");
        assert_eq!(s.scrub_value(json!({"k": ["s3cr3t value"]})), json!({"k": ["***"]}));
    }
}
