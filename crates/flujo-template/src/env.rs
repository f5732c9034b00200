//! The sandboxed minijinja environments shared by every template and expression.
//!
//! There are two process-wide environments, one per [`UndefinedMode`]: minijinja fixes the undefined behaviour
//! per environment. Both are configured identically otherwise:
//!
//! * no file, network or environment access: there is no template loader (a loader that refuses every name is
//!   installed, so `{% include %}`, `{% import %}` and `{% extends %}` fail even if they got past the
//!   compile-time check) and no function reads environment variables or the clock;
//! * Python string/dict/list methods (`startswith`, `strip`, `items`, …) through minijinja-contrib's `pycompat`;
//! * a compact, non-HTML-escaping `tojson` filter whose output any JSON parser accepts;
//! * runaway evaluation is guarded by *fuel* ([`MAX_FUEL`] instructions per render or evaluation, so nested
//!   loops end) and by minijinja's recursion limit (macros calling themselves); rendered text is capped at
//!   [`MAX_OUTPUT_BYTES`] while it is written (see [`crate::CompiledTemplate::render`]);
//! * every value a render builds is bounded by the patched minijinja of `vendor/minijinja` (`limits.rs`):
//!   one string at most [`MAX_STRING_BYTES`], one list or map at most [`MAX_ITEMS`] items (lazy ones too:
//!   `seq * n`), and all of them together at most [`MAX_BUILT_BYTES`] per render or evaluation, checked
//!   *before* the value is built (`~`, `+`, `*`, `join`, `replace`, `indent`, `format` widths, `list`,
//!   `string`, …) so that an over-limit render is an error, never an allocation failure;
//! * arithmetic: division (`/`, `//`, `%`) by zero, integer overflow and float results that are not finite
//!   are errors, never `inf`, `NaN` or `null`.

use std::sync::LazyLock;

use minijinja::value::{Kwargs, Value as MjValue};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use crate::UndefinedMode;

/// The largest rendered text, in bytes, a template may produce ([`crate::TemplateError::OutputTooLarge`]).
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// The number of VM instructions one render or evaluation may execute before it fails with a render error.
pub const MAX_FUEL: u64 = 10_000_000;

/// The fuel a render gets: [`MAX_FUEL`], except in fuzzing builds (`--cfg fuzzing`, set by cargo-fuzz), where
/// coverage instrumentation makes each VM instruction some 20 times slower: there it is a twentieth, so that a
/// template that runs out of fuel costs about what it costs in a release build and the fuzzer's timeout still
/// catches work that fuel does not bound.
#[allow(unexpected_cfgs)]
const fn fuel() -> u64 {
    if cfg!(fuzzing) {
        MAX_FUEL / 20
    } else {
        MAX_FUEL
    }
}

/// The longest string one template operation may build (`~`, `+`, `*`, `join`, …), in bytes.
pub const MAX_STRING_BYTES: usize = 16 << 20;

/// The most items one list or map built by a template may have (lazy repetitions such as `seq * n` too).
pub const MAX_ITEMS: usize = 1_000_000;

/// The bytes all strings and lists built during one render or evaluation may add up to (including the JSON
/// value an expression evaluates to).
pub const MAX_BUILT_BYTES: usize = 256 << 20;

/// The items all iterations of one render or evaluation may step through (loops, comparisons, searches and
/// conversions and formatting of sequences): work inside one instruction that fuel does not count. Like
/// [`MAX_FUEL`], about 0.2 s of work in a release build.
pub const MAX_ITERATIONS: u64 = 10_000_000;

/// The limits every render and evaluation runs under (see the module docs).
pub(crate) const LIMITS: minijinja::limits::Limits = minijinja::limits::Limits {
    max_string_bytes: fuzz_scaled(MAX_STRING_BYTES as u64) as usize,
    max_items: MAX_ITEMS,
    budget_bytes: built_bytes(),
    max_iterations: iterations(),
};

/// `n`, or a twentieth of it in fuzzing builds (see [`fuel`]): the budgets that bound work (a string is
/// built, formatted or searched in time proportional to its length, so its limit is one of them).
#[allow(unexpected_cfgs)]
const fn fuzz_scaled(n: u64) -> u64 {
    if cfg!(fuzzing) {
        n / 20
    } else {
        n
    }
}

/// The iteration budget in force: [`MAX_ITERATIONS`], a hundredth of it in fuzzing builds, where an item
/// iterated costs some 50 times more (coverage instrumentation and AddressSanitizer: ~1 µs against ~22 ns in a
/// release build, measured on comparisons of lazily repeated sequences).
#[allow(unexpected_cfgs)]
const fn iterations() -> u64 {
    if cfg!(fuzzing) {
        MAX_ITERATIONS / 100
    } else {
        MAX_ITERATIONS
    }
}

/// The per-render byte budget in force ([`MAX_BUILT_BYTES`], scaled in fuzzing builds).
pub(crate) const fn built_bytes() -> usize {
    fuzz_scaled(MAX_BUILT_BYTES as u64) as usize
}

/// Applies [`LIMITS`] with a fresh budget until dropped: held for the whole of one render or evaluation.
pub(crate) fn limits_guard() -> minijinja::limits::LimitsGuard {
    minijinja::limits::enter(LIMITS)
}

/// The maximum nesting of blocks, loops and macro calls.
pub const MAX_RECURSION: usize = 200;

/// The name every compiled template has inside its environment.
pub(crate) const TEMPLATE_NAME: &str = "<template>";

/// Filters available in templates and expressions (minijinja's built-ins, with Flujo's `tojson`).
pub const KNOWN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "zip",
];

static LENIENT: LazyLock<Environment<'static>> = LazyLock::new(|| build(UndefinedBehavior::Chainable));
static STRICT: LazyLock<Environment<'static>> = LazyLock::new(|| build(UndefinedBehavior::Strict));

/// The shared environment for `mode`.
pub(crate) fn env(mode: UndefinedMode) -> &'static Environment<'static> {
    match mode {
        UndefinedMode::Lenient => &LENIENT,
        UndefinedMode::Strict => &STRICT,
    }
}

fn build(undefined: UndefinedBehavior) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(undefined);
    env.set_unknown_method_callback(bounded_methods);
    env.set_fuel(Some(fuel()));
    env.set_recursion_limit(MAX_RECURSION);
    env.set_keep_trailing_newline(true);
    env.set_debug(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_loader(|name| {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot load template '{name}': templates have no file access (include/import/extends are not supported)"),
        ))
    });
    // `debug()` dumps the whole render state (the entire context): not useful in a workflow, and large.
    env.remove_global("debug");
    env.add_filter("tojson", tojson);
    env
}

/// Python methods (minijinja-contrib's `pycompat`), with the growing ones bounded like the filters:
/// `str.replace` is checked before it runs, `str.join` is done here with a bounded buffer.
fn bounded_methods(
    state: &minijinja::State,
    value: &MjValue,
    method: &str,
    args: &[MjValue],
) -> Result<MjValue, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "replace" => {
                if let (Some(old), Some(new)) =
                    (args.first().and_then(MjValue::as_str), args.get(1).and_then(MjValue::as_str))
                {
                    let count = if old.is_empty() { s.chars().count() + 1 } else { s.matches(old).count() };
                    let len = count.checked_mul(new.len()).and_then(|n| n.checked_add(s.len()));
                    if len.is_none_or(|n| n > MAX_STRING_BYTES) {
                        return Err(too_large(format!("a string longer than {MAX_STRING_BYTES} bytes")));
                    }
                }
            }
            "join" => {
                let [items] = args else {
                    return Err(Error::new(ErrorKind::InvalidOperation, "join() takes exactly one argument"));
                };
                let mut out = String::new();
                for (i, item) in items.try_iter()?.enumerate() {
                    if i > 0 {
                        out.push_str(s);
                    }
                    match item.as_str() {
                        Some(text) => out.push_str(text),
                        None => out.push_str(&minijinja::limits::format_bounded(format_args!("{item}"))?),
                    }
                    if out.len() > MAX_STRING_BYTES {
                        return Err(too_large(format!("a string longer than {MAX_STRING_BYTES} bytes")));
                    }
                }
                return Ok(MjValue::from(out));
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

fn too_large(what: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("value too large: {what}"))
}

/// `tojson`: compact JSON (`indent=N` or `indent=true` for pretty output), without HTML escaping.
fn tojson(value: &MjValue, indent: Option<MjValue>, kwargs: Kwargs) -> Result<MjValue, Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<MjValue>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match bool::try_from(v.clone()) {
            Ok(true) => Some(2),
            Ok(false) => None,
            Err(_) => Some(usize::try_from(v)?),
        },
    };
    let json = crate::convert::to_json(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("cannot serialize to JSON: {e}")))?;
    let text = match indent {
        None => serde_json::to_string(&json),
        Some(width) => {
            let spaces = " ".repeat(width.min(16));
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(&json, &mut ser).map(|()| String::from_utf8_lossy(&out).into_owned())
        }
    }
    .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("cannot serialize to JSON: {e}")))?;
    Ok(MjValue::from_safe_string(text))
}

/// A clone of the `mode` environment holding exactly one template, `source`, named [`TEMPLATE_NAME`].
pub(crate) fn template_env(mode: UndefinedMode, source: &str) -> Result<Environment<'static>, Error> {
    let mut env = env(mode).clone();
    env.add_template_owned(TEMPLATE_NAME, source.to_owned())?;
    Ok(env)
}
