//! The built-in skills (`flujo.builtins.*`): data shaping, context access, timing and failure injection.
//!
//! Every built-in validates and binds its params when it is resolved (expressions and templates are compiled
//! there, once), so a call only does the work of the step itself. None of them has side effects outside the
//! run: context writes are returned as [`PatchOp`]s and applied by the engine with the step's other updates.
//!
//! | id | params | output |
//! |----|--------|--------|
//! | `passthrough` | – | the input |
//! | `stringify` | – | strings unchanged, other JSON as compact JSON text |
//! | `transform` | `expr`, `strict?` | the expression evaluated with `previous_step` = input and the context |
//! | `render_template` | `template`, `strict?` | the rendered string |
//! | `context_set` | `path`, `value?` | the value (default: the input), also written to `path` |
//! | `context_get` | `path`, `default?` | the context value at `path` (`steps.NAME…` reads step outputs) |
//! | `context_merge` | `path?` | the input object; each key is written under `path` (or at top level) |
//! | `sleep` | `ms` | the input, after sleeping `ms` milliseconds |
//! | `fail` | `message?`, `times?`, `retryable?` | fails (while `attempt <= times` when given), else the input |
//! | `select_fields` | `fields` | the input object restricted to `fields` |
//! | `flatten` | – | the input list with nested lists spliced in one level |
//! | `aggregate` | `op` (`sum`/`count`/`min`/`max`/`avg`) | the aggregate of the input list of numbers |
//!
//! `memory_search` and `memory_add` (the memory skills, module `memory`) are registered beside these; they
//! need a store and an embedder ([`Skills::with_memory`](crate::Skills::with_memory)).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::patch::split_context_path;
use flujo_core::{ContextSnapshot, PatchOp, ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput};
use flujo_template::{
    compile_expression, compile_template, unknown_expression_filters, unknown_filters, CompiledExpr, CompiledTemplate,
    Scope, UndefinedMode,
};
use serde_json::{Map, Number, Value};

use crate::registry::{BuiltinRegistry, SkillFactory};

/// The namespace of the built-in skills; `flujo.builtins.X` may also be referred to as plain `X`.
pub const BUILTIN_PREFIX: &str = "flujo.builtins.";

/// Context fields that `context_set` / `context_merge` may not write (owned by the framework).
const READ_ONLY_FIELDS: &[&str] = &["steps", "hitl_history", "run_id", "initial_prompt", "status"];

type Build = fn(&Params<'_>) -> Result<Arc<dyn Skill>, ResolveError>;

struct Def {
    name: &'static str,
    description: &'static str,
    keys: &'static [&'static str],
    build: Build,
}

const DEFS: &[Def] = &[
    Def { name: "passthrough", description: "Returns its input unchanged.", keys: &[], build: build_passthrough },
    Def {
        name: "stringify",
        description: "Returns its input as a string (other JSON values as compact JSON text).",
        keys: &[],
        build: build_stringify,
    },
    Def {
        name: "transform",
        description: "Evaluates the Jinja expression `expr` over the input and the context.",
        keys: &["expr", "strict"],
        build: build_transform,
    },
    Def {
        name: "render_template",
        description: "Renders the Jinja template `template` over the input and the context.",
        keys: &["template", "strict"],
        build: build_render_template,
    },
    Def {
        name: "context_set",
        description: "Writes `value` (default: the input) to the context at `path` and returns it.",
        keys: &["path", "value"],
        build: build_context_set,
    },
    Def {
        name: "context_get",
        description: "Returns the context value at `path` (or `default`); `steps.NAME` reads outputs.",
        keys: &["path", "default"],
        build: build_context_get,
    },
    Def {
        name: "context_merge",
        description: "Writes each key of the input object under context `path` (or top level).",
        keys: &["path"],
        build: build_context_merge,
    },
    Def {
        name: "sleep",
        description: "Sleeps `ms` milliseconds, then returns its input.",
        keys: &["ms"],
        build: build_sleep,
    },
    Def {
        name: "fail",
        description: "Fails with `message`; with `times: N`, only while `attempt <= N`.",
        keys: &["message", "times", "retryable"],
        build: build_fail,
    },
    Def {
        name: "select_fields",
        description: "Returns the input object restricted to the keys listed in `fields`.",
        keys: &["fields"],
        build: build_select_fields,
    },
    Def {
        name: "flatten",
        description: "Flattens one level of nesting in the input list.",
        keys: &[],
        build: build_flatten,
    },
    Def {
        name: "aggregate",
        description: "Aggregates the input list of numbers with `op`: sum, count, min, max or avg.",
        keys: &["op"],
        build: build_aggregate,
    },
    Def {
        name: "welcome_agent",
        description: "Returns a welcome message for `name` (default Developer); the original's `flujo init` pipeline uses it.",
        keys: &["name"],
        build: build_welcome,
    },
    Def {
        name: "check_user_confirmation",
        description: "Returns \"approved\" when the input text is affirmative (y, yes, ok, empty), else \"denied\".",
        keys: &[],
        build: build_confirmation,
    },
    Def {
        name: "to_csv",
        description: "Returns the input rows (a list of objects, or one object) as CSV text; `headers` fixes the columns (default: every key, sorted).",
        keys: &["headers"],
        build: build_to_csv,
    },
];

/// The full ids of all built-in skills.
pub fn builtin_ids() -> Vec<String> {
    DEFS.iter().map(|d| format!("{BUILTIN_PREFIX}{}", d.name)).collect()
}

/// Every built-in skill: full id, description and the names of its params (for catalogs shown to people and
/// models, e.g. `flujo create`).
pub fn builtin_catalog() -> Vec<(String, &'static str, &'static [&'static str])> {
    DEFS.iter().map(|d| (format!("{BUILTIN_PREFIX}{}", d.name), d.description, d.keys)).collect()
}

pub(crate) fn register_builtins(registry: &mut BuiltinRegistry) {
    for def in DEFS {
        let info = def_info(def);
        let factory: SkillFactory = Arc::new(move |params: &Value| {
            let params = Params::new(def, params)?;
            (def.build)(&params)
        });
        registry.register(info.id.clone(), info, factory);
    }
}

fn def_info(def: &Def) -> SkillInfo {
    {
        let mut info = SkillInfo::default();
        info.id = [BUILTIN_PREFIX, def.name].concat();
        info.description = def.description.to_owned();
        info.input_schema = None;
        info.output_schema = None;
        info.side_effects = false;
        info
    }
}

/// Validated access to a built-in's params.
struct Params<'a> {
    def: &'static Def,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Params<'a> {
    fn new(def: &'static Def, params: &'a Value) -> Result<Self, ResolveError> {
        let this = Params { def, map: None };
        let map = match params {
            Value::Null => return Ok(this),
            Value::Object(map) => map,
            other => return Err(this.bad(format!("params must be an object, got {}", type_name(other)))),
        };
        if let Some(unknown) = map.keys().find(|k| !def.keys.contains(&k.as_str())) {
            let expected = if def.keys.is_empty() {
                "it takes no params".to_owned()
            } else {
                format!("expected one of {:?}", def.keys)
            };
            return Err(this.bad(format!("unknown param '{unknown}' ({expected})")));
        }
        Ok(Params { def, map: Some(map) })
    }

    fn info(&self) -> SkillInfo {
        def_info(self.def)
    }

    fn bad(&self, message: impl Into<String>) -> ResolveError {
        ResolveError::BadParams { id: format!("{BUILTIN_PREFIX}{}", self.def.name), message: message.into() }
    }

    /// A param; explicit `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ResolveError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.bad(format!("`{key}` must be a string, got {}", type_name(other)))),
        }
    }

    fn req_str(&self, key: &str) -> Result<&'a str, ResolveError> {
        self.opt_str(key)?.ok_or_else(|| self.bad(format!("missing required param `{key}`")))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ResolveError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.bad(format!("`{key}` must be a boolean, got {}", type_name(other)))),
        }
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>, ResolveError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(Some).ok_or_else(|| self.bad(format!("`{key}` must be a non-negative integer, got {v}")))
            }
        }
    }

    fn req_path(&self, key: &str) -> Result<Vec<String>, ResolveError> {
        let raw = self.req_str(key)?;
        self.path_from(key, raw)
    }

    fn path_from(&self, key: &str, raw: &str) -> Result<Vec<String>, ResolveError> {
        let path = split_context_path(raw);
        if path.is_empty() {
            return Err(self.bad(format!("`{key}` must be a non-empty dotted context path, got '{raw}'")));
        }
        Ok(path)
    }

    fn mode(&self) -> Result<UndefinedMode, ResolveError> {
        Ok(match self.opt_bool("strict")? {
            Some(true) => UndefinedMode::Strict,
            _ => UndefinedMode::Lenient,
        })
    }

    fn check_filters(&self, key: &str, unknown: Vec<String>) -> Result<(), ResolveError> {
        if unknown.is_empty() {
            return Ok(());
        }
        Err(self.bad(format!("`{key}` uses unknown filter(s): {}", unknown.join(", "))))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// -----------------------------------------------------------------------------------------------
// passthrough / stringify

struct Passthrough {
    info: SkillInfo,
}

fn build_passthrough(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    Ok(Arc::new(Passthrough { info: p.info() }))
}

#[async_trait]
impl Skill for Passthrough {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        Ok(SkillOutput::value(call.input))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct Stringify {
    info: SkillInfo,
}

fn build_stringify(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    Ok(Arc::new(Stringify { info: p.info() }))
}

#[async_trait]
impl Skill for Stringify {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let text = match call.input {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok(SkillOutput::value(Value::String(text)))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

// -----------------------------------------------------------------------------------------------
// transform / render_template

/// The template scope of a call: the names every template and expression of a step sees (SPEC §5):
/// `previous_step` (the input), `context`, `steps`, `initial_prompt`, `resume_input` and, inside a map body,
/// `this`.
fn call_scope(call: &SkillCall) -> Scope<'_> {
    let mut scope = Scope::new(&call.input).with_context(&call.context);
    scope.resume_input = call.context.resume_input();
    scope.this = call.this.as_deref();
    scope
}

struct Transform {
    info: SkillInfo,
    expr: CompiledExpr,
    mode: UndefinedMode,
}

fn build_transform(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let src = p.req_str("expr")?;
    let expr = compile_expression(src).map_err(|e| p.bad(format!("`expr` does not compile: {e}")))?;
    p.check_filters("expr", unknown_expression_filters(src).unwrap_or_default())?;
    Ok(Arc::new(Transform { info: p.info(), expr, mode: p.mode()? }))
}

#[async_trait]
impl Skill for Transform {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        match self.expr.eval(&call_scope(&call), self.mode) {
            Ok(value) => Ok(SkillOutput::value(value)),
            Err(e) => Err(SkillError::fatal(format!("transform: {e}"))),
        }
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct RenderTemplate {
    info: SkillInfo,
    template: CompiledTemplate,
    mode: UndefinedMode,
}

fn build_render_template(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let src = p.req_str("template")?;
    let template = compile_template(src).map_err(|e| p.bad(format!("`template` does not compile: {e}")))?;
    p.check_filters("template", unknown_filters(src).unwrap_or_default())?;
    Ok(Arc::new(RenderTemplate { info: p.info(), template, mode: p.mode()? }))
}

#[async_trait]
impl Skill for RenderTemplate {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        match self.template.render(&call_scope(&call), self.mode) {
            Ok(text) => Ok(SkillOutput::value(Value::String(text))),
            Err(e) => Err(SkillError::fatal(format!("render_template: {e}"))),
        }
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

// -----------------------------------------------------------------------------------------------
// context_set / context_get / context_merge

fn read_only_error(skill: &str, path: &[String]) -> SkillError {
    SkillError::fatal(format!(
        "{skill}: cannot write '{}': '{}' is a framework field and cannot be written by steps",
        path.join("."),
        path.first().map(String::as_str).unwrap_or_default()
    ))
}

fn is_read_only(first: &str) -> bool {
    READ_ONLY_FIELDS.contains(&first)
}

struct ContextSet {
    info: SkillInfo,
    path: Vec<String>,
    value: Option<Arc<Value>>,
    read_only: bool,
}

fn build_context_set(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let path = p.req_path("path")?;
    let read_only = path.first().is_some_and(|f| is_read_only(f));
    // `value: null` sets null explicitly, so read it without the null-as-absent filter.
    let value = p.map.and_then(|m| m.get("value")).cloned().map(Arc::new);
    Ok(Arc::new(ContextSet { info: p.info(), path, value, read_only }))
}

#[async_trait]
impl Skill for ContextSet {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        if self.read_only {
            return Err(read_only_error("context_set", &self.path));
        }
        let (output, value) = match &self.value {
            Some(v) => ((**v).clone(), v.clone()),
            None => {
                let v = Arc::new(call.input);
                ((*v).clone(), v)
            }
        };
        Ok({
            let mut out = SkillOutput::default();
            out.output = output;
            out.context_ops = vec![PatchOp::Set { path: self.path.clone(), value }];
            out
        })
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct ContextGet {
    info: SkillInfo,
    path: Vec<String>,
    default: Value,
}

fn build_context_get(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let path = p.req_path("path")?;
    if path.len() == 1 && path[0] == "steps" {
        return Err(p.bad("`path` must name a step (`steps.NAME`), not the whole `steps` map"));
    }
    let default = p.get("default").cloned().unwrap_or(Value::Null);
    Ok(Arc::new(ContextGet { info: p.info(), path, default }))
}

/// Reads `path` from a context snapshot: `steps.NAME…` reads step outputs, anything else a top-level field.
fn lookup<'a>(ctx: &'a ContextSnapshot, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let (root, rest) = if first == "steps" {
        let (name, rest) = rest.split_first()?;
        (ctx.step_output(name)?, rest)
    } else {
        (ctx.field(first)?, rest)
    };
    let mut v: &Value = root;
    for seg in rest {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[async_trait]
impl Skill for ContextGet {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let value = lookup(&call.context, &self.path).unwrap_or(&self.default).clone();
        Ok(SkillOutput::value(value))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct ContextMerge {
    info: SkillInfo,
    base: Vec<String>,
}

fn build_context_merge(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let base = match p.opt_str("path")? {
        Some(raw) => p.path_from("path", raw)?,
        None => Vec::new(),
    };
    Ok(Arc::new(ContextMerge { info: p.info(), base }))
}

#[async_trait]
impl Skill for ContextMerge {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let Value::Object(map) = &call.input else {
            return Err(SkillError::fatal(format!(
                "context_merge: input must be an object, got {}",
                type_name(&call.input)
            )));
        };
        let mut ops = Vec::with_capacity(map.len());
        for (key, value) in map {
            let mut path = Vec::with_capacity(self.base.len() + 1);
            path.extend_from_slice(&self.base);
            path.push(key.clone());
            if is_read_only(&path[0]) {
                return Err(read_only_error("context_merge", &path));
            }
            ops.push(PatchOp::Set { path, value: Arc::new(value.clone()) });
        }
        Ok({
            let mut out = SkillOutput::default();
            out.output = call.input;
            out.context_ops = ops;
            out
        })
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

// -----------------------------------------------------------------------------------------------
// sleep / fail

struct Sleep {
    info: SkillInfo,
    duration: Duration,
}

fn build_sleep(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let duration = match p.get("ms") {
        None => return Err(p.bad("missing required param `ms`")),
        Some(v) => match v.as_f64() {
            Some(ms) => flujo_core::limits::duration_from_millis(ms).map_err(|e| p.bad(format!("`ms` {e}")))?,
            None => return Err(p.bad(format!("`ms` must be a non-negative number, got {v}"))),
        },
    };
    Ok(Arc::new(Sleep { info: p.info(), duration }))
}

#[async_trait]
impl Skill for Sleep {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        tokio::time::sleep(self.duration).await;
        Ok(SkillOutput::value(call.input))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct Fail {
    info: SkillInfo,
    message: String,
    times: Option<u64>,
    retryable: bool,
}

fn build_fail(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let message = p.opt_str("message")?.unwrap_or("flujo.builtins.fail: intentional failure").to_owned();
    Ok(Arc::new(Fail {
        info: p.info(),
        message,
        times: p.opt_u64("times")?,
        retryable: p.opt_bool("retryable")?.unwrap_or(true),
    }))
}

#[async_trait]
impl Skill for Fail {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        match self.times {
            Some(times) if u64::from(call.attempt) > times => Ok(SkillOutput::value(call.input)),
            _ => Err(SkillError { retryable: self.retryable, ..SkillError::new(self.message.clone()) }),
        }
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

// -----------------------------------------------------------------------------------------------
// select_fields / flatten / aggregate

struct SelectFields {
    info: SkillInfo,
    fields: Vec<String>,
}

fn build_select_fields(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let fields = match p.get("fields") {
        None => return Err(p.bad("missing required param `fields`")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|f| f.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| p.bad("`fields` must be a list of strings"))?,
        Some(other) => return Err(p.bad(format!("`fields` must be a list of strings, got {}", type_name(other)))),
    };
    Ok(Arc::new(SelectFields { info: p.info(), fields }))
}

#[async_trait]
impl Skill for SelectFields {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let Value::Object(mut map) = call.input else {
            return Err(SkillError::fatal(format!(
                "select_fields: input must be an object, got {}",
                type_name(&call.input)
            )));
        };
        let mut out = Map::with_capacity(self.fields.len());
        for field in &self.fields {
            if let Some(v) = map.remove(field) {
                out.insert(field.clone(), v);
            }
        }
        Ok(SkillOutput::value(Value::Object(out)))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct Flatten {
    info: SkillInfo,
}

fn build_flatten(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    Ok(Arc::new(Flatten { info: p.info() }))
}

#[async_trait]
impl Skill for Flatten {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let Value::Array(items) = call.input else {
            return Err(SkillError::fatal(format!("flatten: input must be a list, got {}", type_name(&call.input))));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::Array(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        Ok(SkillOutput::value(Value::Array(out)))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AggOp {
    Sum,
    Count,
    Min,
    Max,
    Avg,
}

struct Aggregate {
    info: SkillInfo,
    op: AggOp,
}

fn build_aggregate(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let op = match p.req_str("op")? {
        "sum" => AggOp::Sum,
        "count" => AggOp::Count,
        "min" => AggOp::Min,
        "max" => AggOp::Max,
        "avg" | "mean" => AggOp::Avg,
        other => return Err(p.bad(format!("`op` must be one of sum, count, min, max, avg; got '{other}'"))),
    };
    Ok(Arc::new(Aggregate { info: p.info(), op }))
}

fn f64_value(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn aggregate(op: AggOp, items: &[Value]) -> Result<Value, SkillError> {
    if op == AggOp::Count {
        return Ok(Value::from(items.len()));
    }
    let mut nums = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Number(n) => nums.push(n),
            other => {
                return Err(SkillError::fatal(format!(
                    "aggregate: item {i} is {}, expected a number",
                    type_name(other)
                )))
            }
        }
    }
    let as_f64 = |n: &Number| n.as_f64().unwrap_or(f64::NAN);
    Ok(match op {
        AggOp::Count => Value::from(nums.len()),
        AggOp::Sum => {
            let int_sum = nums.iter().try_fold(0i64, |acc, n| n.as_i64().and_then(|x| acc.checked_add(x)));
            match int_sum {
                Some(total) => Value::from(total),
                None => f64_value(nums.iter().map(|n| as_f64(n)).sum()),
            }
        }
        AggOp::Avg if nums.is_empty() => Value::Null,
        AggOp::Avg => f64_value(nums.iter().map(|n| as_f64(n)).sum::<f64>() / nums.len() as f64),
        AggOp::Min | AggOp::Max => {
            let pick = |best: &&Number, n: &&Number| {
                let (b, x) = (as_f64(best), as_f64(n));
                if op == AggOp::Min {
                    x < b
                } else {
                    x > b
                }
            };
            let mut best: Option<&Number> = None;
            for n in &nums {
                if best.as_ref().is_none_or(|b| pick(b, n)) {
                    best = Some(n);
                }
            }
            best.map_or(Value::Null, |n| Value::Number(n.clone()))
        }
    })
}

#[async_trait]
impl Skill for Aggregate {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let Value::Array(items) = &call.input else {
            return Err(SkillError::fatal(format!(
                "aggregate: input must be a list of numbers, got {}",
                type_name(&call.input)
            )));
        };
        Ok(SkillOutput::value(aggregate(self.op, items)?))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests;

// -----------------------------------------------------------------------------------------------
// welcome_agent / check_user_confirmation / to_csv (the original's built-ins of the same names)

struct Welcome {
    info: SkillInfo,
    name: String,
}

fn build_welcome(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let name = match p.get("name") {
        None | Some(Value::Null) => "Developer".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(p.bad(format!("`name` must be a string, got {}", type_name(other)))),
    };
    Ok(Arc::new(Welcome { info: p.info(), name }))
}

#[async_trait]
impl Skill for Welcome {
    async fn call(&self, _call: SkillCall) -> Result<SkillOutput, SkillError> {
        Ok(SkillOutput::value(Value::String(format!(
            "Welcome, {}!\n\nF L U J O\n\nYou have successfully run your first pipeline!\n\nThis is a simple workflow \
             defined in `pipeline.yaml`.\nYou can edit it or create a new one from scratch by running:\n\n  flujo create \
             --goal \"Your new workflow goal\"\n\nHappy building!\n",
            self.name
        ))))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct Confirmation {
    info: SkillInfo,
}

fn build_confirmation(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    Ok(Arc::new(Confirmation { info: p.info() }))
}

#[async_trait]
impl Skill for Confirmation {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let text = match &call.input {
            Value::String(s) => s.trim().to_ascii_lowercase(),
            Value::Bool(true) => "yes".to_owned(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let yes = matches!(text.as_str(), "" | "y" | "yes" | "ok" | "true" | "approve" | "approved");
        Ok(SkillOutput::value(Value::String(if yes { "approved" } else { "denied" }.to_owned())))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

struct ToCsv {
    info: SkillInfo,
    headers: Option<Vec<String>>,
}

fn build_to_csv(p: &Params<'_>) -> Result<Arc<dyn Skill>, ResolveError> {
    let headers = match p.get("headers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|h| h.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| p.bad("`headers` must be a list of strings"))?,
        ),
        Some(other) => return Err(p.bad(format!("`headers` must be a list of strings, got {}", type_name(other)))),
    };
    Ok(Arc::new(ToCsv { info: p.info(), headers }))
}

fn csv_cell(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[async_trait]
impl Skill for ToCsv {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let wrap = |v: &Value| match v {
            Value::Object(m) => m.clone(),
            other => Map::from_iter([("value".to_owned(), other.clone())]),
        };
        let rows: Vec<Map<String, Value>> = match &call.input {
            Value::Array(items) => items.iter().map(wrap).collect(),
            other => vec![wrap(other)],
        };
        let cols: Vec<String> = match &self.headers {
            Some(h) => h.clone(),
            None => {
                let keys: std::collections::BTreeSet<&String> = rows.iter().flat_map(|r| r.keys()).collect();
                keys.into_iter().cloned().collect()
            }
        };
        let mut out = String::new();
        if !cols.is_empty() {
            out.push_str(&cols.iter().map(|c| csv_cell(Some(&Value::String(c.clone())))).collect::<Vec<_>>().join(","));
            out.push_str("\r\n");
            for r in &rows {
                out.push_str(&cols.iter().map(|c| csv_cell(r.get(c))).collect::<Vec<_>>().join(","));
                out.push_str("\r\n");
            }
        }
        Ok(SkillOutput::value(Value::String(out)))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}
