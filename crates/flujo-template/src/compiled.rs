//! Compiled templates and expressions, their process-wide caches, and JSON rendering.
//!
//! Compiling translates the Flujo source (see [`crate::lexer`]), compiles it once against the lenient
//! environment (the strict form is compiled on first strict use) and records which top-level names it
//! references. Handles are `Arc`s: cloning is cheap and they are `Send + Sync + 'static`, so the engine compiles
//! at build time and reuses them. [`compile_template`] and [`compile_expression`] also keep a cache keyed by
//! source, so compiling the same source again is a hash lookup.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, LazyLock, OnceLock, PoisonError, RwLock};

use minijinja::{Environment, Expression};
use serde_json::Value;

use crate::convert::to_json;
use crate::env::{env, limits_guard, template_env, KNOWN_FILTERS, MAX_OUTPUT_BYTES, TEMPLATE_NAME};
use crate::error::{from_minijinja, TemplateError};
use crate::fast::{truthy, FastPath};
use crate::guard;
use crate::lexer::{self, has_jinja_syntax, is_template};
use crate::scope::{Refs, Scope};
use crate::UndefinedMode;

/// Each cache is cleared when it reaches this many entries (a guard against unbounded dynamic sources)…
const CACHE_CAPACITY: usize = 4096;
/// … or when the sources it holds reach this many bytes (a compiled form is a small multiple of its source:
/// constant folding keeps only small values, see `vendor/minijinja/src/limits.rs`).
const CACHE_SOURCE_BYTES: usize = 8 << 20;

struct Cache<T> {
    map: RwLock<CacheMap<T>>,
}

struct CacheMap<T> {
    entries: HashMap<Box<str>, T>,
    source_bytes: usize,
}

impl<T: Clone> Cache<T> {
    fn new() -> Self {
        Cache { map: RwLock::new(CacheMap { entries: HashMap::new(), source_bytes: 0 }) }
    }

    fn get_or_try_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<T, TemplateError>,
    ) -> Result<T, TemplateError> {
        if let Some(hit) = self.map.read().unwrap_or_else(PoisonError::into_inner).entries.get(key) {
            return Ok(hit.clone());
        }
        let value = make()?;
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.entries.len() >= CACHE_CAPACITY || map.source_bytes.saturating_add(key.len()) > CACHE_SOURCE_BYTES {
            map.entries.clear();
            map.source_bytes = 0;
        }
        if map.entries.insert(key.into(), value.clone()).is_none() {
            map.source_bytes += key.len();
        }
        Ok(value)
    }
}

static TEMPLATES: LazyLock<Cache<CompiledTemplate>> = LazyLock::new(Cache::new);
static EXPRESSIONS: LazyLock<Cache<CompiledExpr>> = LazyLock::new(Cache::new);

/// Compiles `src` lazily for the strict environment, once.
fn strict_once<T>(
    cell: &OnceLock<Result<T, TemplateError>>,
    make: impl FnOnce() -> Result<T, TemplateError>,
) -> Result<&T, TemplateError> {
    cell.get_or_init(make).as_ref().map_err(Clone::clone)
}

/// Maps a render error, naming the referenced top-level names the scope lacks when something was undefined.
fn render_error(err: &minijinja::Error, refs: &Refs, scope: &Scope<'_>) -> TemplateError {
    match from_minijinja(err) {
        TemplateError::Undefined { message } => {
            TemplateError::Undefined { message: with_missing(message, refs, scope) }
        }
        other => other,
    }
}

fn with_missing(message: String, refs: &Refs, scope: &Scope<'_>) -> String {
    let missing: Vec<String> = refs
        .missing_in(scope)
        .into_iter()
        .filter(|n| env(UndefinedMode::Strict).globals().all(|(g, _)| g != n))
        .collect();
    if missing.is_empty() {
        message
    } else {
        format!("{message} (not in scope: {})", missing.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------------------------

/// A compiled expression (e.g. a branch condition). Cheap to clone, `Send + Sync + 'static`.
#[derive(Clone)]
pub struct CompiledExpr(Arc<ExprInner>);

struct ExprInner {
    source: String,
    translated: String,
    refs: Refs,
    /// Set when the expression is a plain lookup path (resolved without the VM when it exists).
    fast: Option<FastPath>,
    lenient: Expression<'static, 'static>,
    strict: OnceLock<Result<Expression<'static, 'static>, TemplateError>>,
}

impl fmt::Debug for CompiledExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CompiledExpr").field(&self.0.source).finish()
    }
}

/// Compiles an expression (cached by source). A source that is a single `{{ expr }}` is accepted as `expr`.
pub fn compile_expression(src: &str) -> Result<CompiledExpr, TemplateError> {
    EXPRESSIONS.get_or_try_insert(src, || {
        let wrapped = if src.trim_start().starts_with("{{") {
            lexer::translate(src).ok().and_then(|t| t.single_expr)
        } else {
            None
        };
        let translated = wrapped.unwrap_or_else(|| lexer::rewrite_code(src));
        compile_expr_code(src, translated)
    })
}

fn compile_expr_code(source: &str, translated: String) -> Result<CompiledExpr, TemplateError> {
    if let Some(at) = lexer::stray_variable_end(&translated) {
        // minijinja would panic on this (see `stray_variable_end`)
        let line = lexer::line_of(&translated, at);
        return Err(TemplateError::syntax(format!("unexpected `}}}}` in expression (line {line})"), Some(line)));
    }
    guard::check_expression(&translated)?;
    let lenient =
        env(UndefinedMode::Lenient).compile_expression_owned(translated.clone()).map_err(|e| expr_syntax(&e))?;
    let refs = Refs::new(lenient.undeclared_variables(false));
    Ok(CompiledExpr(Arc::new(ExprInner {
        source: source.to_owned(),
        fast: FastPath::parse(&translated),
        translated,
        refs,
        lenient,
        strict: OnceLock::new(),
    })))
}

fn expr_syntax(err: &minijinja::Error) -> TemplateError {
    match from_minijinja(err) {
        e @ TemplateError::Syntax { .. } => e,
        other => TemplateError::syntax(other.to_string(), err.line()),
    }
}

impl CompiledExpr {
    fn expr(&self, mode: UndefinedMode) -> Result<&Expression<'static, 'static>, TemplateError> {
        match mode {
            UndefinedMode::Lenient => Ok(&self.0.lenient),
            UndefinedMode::Strict => strict_once(&self.0.strict, || {
                env(UndefinedMode::Strict)
                    .compile_expression_owned(self.0.translated.clone())
                    .map_err(|e| expr_syntax(&e))
            }),
        }
    }

    /// Evaluates to a minijinja value; in strict mode an undefined result is an error.
    fn eval_raw(&self, scope: &Scope<'_>, mode: UndefinedMode) -> Result<minijinja::Value, TemplateError> {
        let expr = self.expr(mode)?;
        let root = self.0.refs.root(scope);
        let value = expr.eval(root).map_err(|e| render_error(&e, &self.0.refs, scope))?;
        if mode == UndefinedMode::Strict && value.is_undefined() {
            return Err(TemplateError::Undefined {
                message: with_missing(format!("'{}' is undefined", self.0.source.trim()), &self.0.refs, scope),
            });
        }
        Ok(value)
    }

    /// The value of a plain lookup path that exists in `scope` (see [`crate::fast`]).
    fn fast<'a>(&self, scope: &Scope<'a>) -> Option<&'a Value> {
        self.0.fast.as_ref()?.resolve(scope)
    }

    /// Evaluates the expression to JSON (undefined becomes `null` in lenient mode).
    pub fn eval(&self, scope: &Scope<'_>, mode: UndefinedMode) -> Result<Value, TemplateError> {
        if let Some(v) = self.fast(scope) {
            return Ok(v.clone());
        }
        let limits = limits_guard();
        within(&limits, self.eval_raw(scope, mode).and_then(|v| to_json(&v)))
    }

    /// Evaluates the expression for its Jinja truthiness (empty strings, lists and maps, `0`, `none` and
    /// undefined are false).
    pub fn eval_bool(&self, scope: &Scope<'_>, mode: UndefinedMode) -> Result<bool, TemplateError> {
        if let Some(v) = self.fast(scope) {
            return Ok(truthy(v));
        }
        let limits = limits_guard();
        within(&limits, self.eval_raw(scope, mode).map(|v| v.is_true()))
    }

    /// The source as given to [`compile_expression`].
    pub fn source(&self) -> &str {
        &self.0.source
    }

    #[cfg(test)]
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------------------

/// A compiled template. Cheap to clone, `Send + Sync + 'static`.
#[derive(Clone)]
pub struct CompiledTemplate(Arc<TemplateInner>);

struct TemplateInner {
    source: String,
    /// `None` for a source without any template syntax: it renders as itself.
    jinja: Option<Jinja>,
}

struct Jinja {
    translated: String,
    refs: Refs,
    /// Set when the source is one `{{ expr }}` up to surrounding whitespace.
    single: Option<CompiledExpr>,
    /// `single` is set and there is no surrounding whitespace.
    single_exact: bool,
    /// An environment holding only this template, per mode.
    lenient: Environment<'static>,
    strict: OnceLock<Result<Environment<'static>, TemplateError>>,
}

impl fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CompiledTemplate").field(&self.0.source).finish()
    }
}

/// Compiles a template (cached by source): Flujo helpers are translated, `steps.NAME.output` is read as
/// `steps.NAME`, and `include`/`import`/`extends` are refused.
pub fn compile_template(src: &str) -> Result<CompiledTemplate, TemplateError> {
    if !has_jinja_syntax(src) {
        return Ok(CompiledTemplate(Arc::new(TemplateInner { source: src.to_owned(), jinja: None })));
    }
    TEMPLATES.get_or_try_insert(src, || compile_template_uncached(src))
}

fn compile_template_uncached(src: &str) -> Result<CompiledTemplate, TemplateError> {
    let translated = lexer::translate(src)?;
    guard::check_template(&translated.source)?;
    let lenient = template_env(UndefinedMode::Lenient, &translated.source).map_err(|e| from_minijinja(&e))?;
    let refs = {
        let tmpl = lenient.get_template(TEMPLATE_NAME).map_err(|e| from_minijinja(&e))?;
        Refs::new(tmpl.undeclared_variables(false))
    };
    let single = match translated.single_expr {
        Some(code) => compile_expr_code(src, code).ok(),
        None => None,
    };
    Ok(CompiledTemplate(Arc::new(TemplateInner {
        source: src.to_owned(),
        jinja: Some(Jinja {
            single_exact: single.is_some() && translated.single_exact,
            single,
            translated: translated.source,
            refs,
            lenient,
            strict: OnceLock::new(),
        }),
    })))
}

/// An `io::Write` that fails once more than `limit` bytes would be written.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("template output limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CompiledTemplate {
    /// Renders to text, at most [`MAX_OUTPUT_BYTES`] bytes.
    pub fn render(&self, scope: &Scope<'_>, mode: UndefinedMode) -> Result<String, TemplateError> {
        self.render_limited(scope, mode, MAX_OUTPUT_BYTES)
    }

    /// Renders to text, at most `limit` bytes: the limit is enforced while the output is written, so a runaway
    /// loop stops at the limit rather than after filling memory.
    pub fn render_limited(
        &self,
        scope: &Scope<'_>,
        mode: UndefinedMode,
        limit: usize,
    ) -> Result<String, TemplateError> {
        let Some(jinja) = &self.0.jinja else {
            return check_len(self.0.source.clone(), limit);
        };
        if let (Some(expr), true) = (&jinja.single, jinja.single_exact) {
            match expr.fast(scope) {
                Some(Value::String(s)) => return check_len(s.clone(), limit),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => return check_len(n.to_string(), limit),
                _ => {}
            }
        }
        // everything else runs under the value limits
        let limits = limits_guard();
        within(&limits, self.render_jinja(jinja, scope, mode, limit))
    }

    fn render_jinja(
        &self,
        jinja: &Jinja,
        scope: &Scope<'_>,
        mode: UndefinedMode,
        limit: usize,
    ) -> Result<String, TemplateError> {
        if let (Some(expr), true, UndefinedMode::Lenient) = (&jinja.single, jinja.single_exact, mode) {
            // `{{ expr }}` alone: evaluating the expression and formatting it is what the template would do
            let value = expr.eval_raw(scope, mode)?;
            let text = match value.as_str() {
                Some(s) => s.to_owned(),
                None => minijinja::limits::format_bounded(format_args!("{value}")).map_err(|e| from_minijinja(&e))?,
            };
            return check_len(text, limit);
        }
        let env = match mode {
            UndefinedMode::Lenient => &jinja.lenient,
            UndefinedMode::Strict => {
                strict_once(&jinja.strict, || template_env(mode, &jinja.translated).map_err(|e| from_minijinja(&e)))?
            }
        };
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| from_minijinja(&e))?;
        let mut out = LimitedWriter { buf: Vec::with_capacity(jinja.translated.len() + 32), limit, exceeded: false };
        let rendered = tmpl.render_captured_to(jinja.refs.root(scope), &mut out);
        if out.exceeded {
            return Err(TemplateError::OutputTooLarge { limit });
        }
        rendered.map_err(|e| render_error(&e, &jinja.refs, scope))?;
        String::from_utf8(out.buf).map_err(|e| TemplateError::render(format!("rendered output is not UTF-8: {e}")))
    }

    /// If the template is exactly one `{{ expr }}` (ignoring surrounding whitespace), the expression's value as
    /// JSON, type preserved (a number stays a number, a list a list; undefined becomes `null` in lenient mode);
    /// otherwise the rendered text as a JSON string. The output limit applies to rendered text only, not to a
    /// value passed through by a single expression.
    pub fn render_value(&self, scope: &Scope<'_>, mode: UndefinedMode) -> Result<Value, TemplateError> {
        match self.0.jinja.as_ref().and_then(|j| j.single.as_ref()) {
            Some(expr) => expr.eval(scope, mode),
            None => self.render(scope, mode).map(Value::String),
        }
    }

    /// The source as given to [`compile_template`].
    pub fn source(&self) -> &str {
        &self.0.source
    }

    #[cfg(test)]
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// `true` if the source has no template syntax: it renders as itself.
    pub fn is_literal(&self) -> bool {
        self.0.jinja.is_none()
    }
}

/// `result`, unless the render ran out of its iteration budget (then iterations ended early and the result
/// is not to be trusted).
fn within<T>(limits: &minijinja::limits::LimitsGuard, result: Result<T, TemplateError>) -> Result<T, TemplateError> {
    limits.check().map_err(|e| from_minijinja(&e))?;
    result
}

fn check_len(text: String, limit: usize) -> Result<String, TemplateError> {
    if text.len() > limit {
        Err(TemplateError::OutputTooLarge { limit })
    } else {
        Ok(text)
    }
}

// ---------------------------------------------------------------------------------------------------------
// JSON structures
// ---------------------------------------------------------------------------------------------------------

/// Renders every string inside a JSON structure that contains template syntax (strings without `{{`/`{%` are
/// kept as is, without compiling); a string that is exactly one `{{ expr }}` keeps the expression's type.
/// Object keys are not rendered.
pub fn render_json(input: &Value, scope: &Scope<'_>, mode: UndefinedMode) -> Result<Value, TemplateError> {
    match input {
        Value::String(s) if is_template(s) => compile_template(s)?.render_value(scope, mode),
        Value::Array(items) => {
            items.iter().map(|v| render_json(v, scope, mode)).collect::<Result<_, _>>().map(Value::Array)
        }
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), render_json(v, scope, mode)?)))
            .collect::<Result<_, TemplateError>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// A JSON structure with its template strings compiled: [`render_json`] without per-render cache lookups.
#[derive(Clone, Debug)]
pub struct CompiledJson(JsonNode);

#[derive(Clone, Debug)]
enum JsonNode {
    Literal(Value),
    Template(CompiledTemplate),
    Array(Vec<JsonNode>),
    Object(Vec<(String, JsonNode)>),
}

/// Compiles every template string inside `input` (see [`render_json`]).
pub fn compile_json(input: &Value) -> Result<CompiledJson, TemplateError> {
    compile_node(input).map(CompiledJson)
}

fn compile_node(input: &Value) -> Result<JsonNode, TemplateError> {
    if !contains_template(input) {
        return Ok(JsonNode::Literal(input.clone()));
    }
    Ok(match input {
        Value::String(s) => JsonNode::Template(compile_template(s)?),
        Value::Array(items) => JsonNode::Array(items.iter().map(compile_node).collect::<Result<_, _>>()?),
        Value::Object(map) => JsonNode::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), compile_node(v)?))).collect::<Result<_, TemplateError>>()?,
        ),
        other => JsonNode::Literal(other.clone()),
    })
}

fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => is_template(s),
        Value::Array(items) => items.iter().any(contains_template),
        Value::Object(map) => map.values().any(contains_template),
        _ => false,
    }
}

impl CompiledJson {
    /// Renders the structure (see [`render_json`]).
    pub fn render(&self, scope: &Scope<'_>, mode: UndefinedMode) -> Result<Value, TemplateError> {
        render_node(&self.0, scope, mode)
    }

    /// `true` if the structure contains no template: it renders as itself.
    pub fn is_literal(&self) -> bool {
        matches!(self.0, JsonNode::Literal(_))
    }
}

fn render_node(node: &JsonNode, scope: &Scope<'_>, mode: UndefinedMode) -> Result<Value, TemplateError> {
    match node {
        JsonNode::Literal(v) => Ok(v.clone()),
        JsonNode::Template(t) => t.render_value(scope, mode),
        JsonNode::Array(items) => {
            items.iter().map(|n| render_node(n, scope, mode)).collect::<Result<_, _>>().map(Value::Array)
        }
        JsonNode::Object(entries) => entries
            .iter()
            .map(|(k, n)| Ok((k.clone(), render_node(n, scope, mode)?)))
            .collect::<Result<_, TemplateError>>()
            .map(Value::Object),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------------------------

/// Checks the syntax of a template and returns the names of the filters it uses that are not in
/// [`KNOWN_FILTERS`] (in order of first use).
pub fn unknown_filters(src: &str) -> Result<Vec<String>, TemplateError> {
    let compiled = compile_template(src)?;
    Ok(match &compiled.0.jinja {
        None => Vec::new(),
        Some(jinja) => lexer::used_filters(&jinja.translated)
            .into_iter()
            .filter(|f| !KNOWN_FILTERS.contains(&f.as_str()))
            .collect(),
    })
}

/// Like [`unknown_filters`], for an expression.
pub fn unknown_expression_filters(src: &str) -> Result<Vec<String>, TemplateError> {
    let compiled = compile_expression(src)?;
    if !lexer::may_use_filters(&compiled.0.translated) {
        return Ok(Vec::new());
    }
    let wrapped = format!("{{{{ {} }}}}", compiled.0.translated);
    Ok(lexer::used_filters(&wrapped).into_iter().filter(|f| !KNOWN_FILTERS.contains(&f.as_str())).collect())
}
