//! flujo: limits on the size of the values a template builds (not part of upstream MiniJinja).
//!
//! Fuel bounds the number of instructions, but one instruction can build a value of any size (`s ~ s`,
//! `seq * n`, `x | join`, `'x' | center(10**9)`), and a loop can keep many of them. Every operation that
//! builds a string, a list or a map checks the size of what it is about to build against [`Limits`]:
//!
//! * a single string may have at most [`Limits::max_string_bytes`] bytes;
//! * a single list or map (also a lazy one: `seq * n`, `a + b`) at most [`Limits::max_items`] items;
//! * while a [`LimitsGuard`] is alive (one render or evaluation), the strings and lists built in total may not
//!   exceed [`Limits::budget_bytes`]; this bounds the memory a render can hold and the work it does on bytes.
//!
//! The limits are per thread: a render runs on one thread. Outside a guard, the default limits apply to
//! single values, and the total is not counted.

use std::cell::Cell;
use std::fmt;

use crate::error::{Error, ErrorKind};
use crate::value::namespace_object::Namespace;
use crate::value::{Value, ValueMap, ValueRepr};

/// The bounds on values built by templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest string one operation may build, in bytes.
    pub max_string_bytes: usize,
    /// The most items one list or map may have.
    pub max_items: usize,
    /// The bytes all strings and lists built during one render may add up to (inside a [`LimitsGuard`]).
    pub budget_bytes: usize,
    /// The items all iterations during one render may step through (inside a [`LimitsGuard`]): comparing,
    /// sorting or searching lazily repeated sequences is work that fuel does not see.
    pub max_iterations: u64,
}

impl Limits {
    /// flujo's defaults: 16 MiB strings, 1,000,000 items, 256 MiB per render, 10,000,000 items iterated.
    pub const DEFAULT: Limits = Limits {
        max_string_bytes: 16 << 20,
        max_items: 1_000_000,
        budget_bytes: 256 << 20,
        max_iterations: 10_000_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

thread_local! {
    /// The namespaces created while the current guard is alive (see [`track_namespace`]).
    static NAMESPACES: std::cell::RefCell<Option<Vec<std::sync::Weak<Namespace>>>> =
        const { std::cell::RefCell::new(None) };
    static LIMITS: Cell<Limits> = const { Cell::new(Limits::DEFAULT) };
    /// Bytes left in the budget of the current guard; `None` outside a guard.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    /// Iterations left in the current guard; once it reaches 0 iterations end early and the render fails.
    static STEPS: Cell<Option<u64>> = const { Cell::new(None) };
    /// Set when the iteration budget ran out.
    static EXHAUSTED: Cell<bool> = const { Cell::new(false) };
}

/// Applies `limits` on this thread, with a fresh budget, until dropped.
#[must_use = "the limits apply only while the guard is alive"]
#[derive(Debug)]
pub struct LimitsGuard {
    prev_namespaces: Option<Vec<std::sync::Weak<Namespace>>>,
    prev: Limits,
    prev_left: Option<usize>,
    prev_steps: Option<u64>,
    prev_exhausted: bool,
}

/// Applies `limits` to what templates build on this thread until the guard is dropped.
pub fn enter(limits: Limits) -> LimitsGuard {
    let prev = LIMITS.with(|l| l.replace(limits));
    let prev_left = LEFT.with(|l| l.replace(Some(limits.budget_bytes)));
    let prev_steps = STEPS.with(|l| l.replace(Some(limits.max_iterations)));
    let prev_exhausted = EXHAUSTED.with(|e| e.replace(false));
    let prev_namespaces = NAMESPACES.with(|n| n.replace(Some(Vec::new())));
    LimitsGuard {
        prev_namespaces,
        prev,
        prev_left,
        prev_steps,
        prev_exhausted,
    }
}

impl LimitsGuard {
    /// The error to report if the iteration budget ran out during this guard: iterations then ended early,
    /// so whatever the render produced must be discarded.
    pub fn check(&self) -> Result<(), Error> {
        if EXHAUSTED.with(Cell::get) {
            Err(too_large(format!(
                "the template iterated over more than {} items",
                current().max_iterations
            )))
        } else {
            Ok(())
        }
    }
}

impl Drop for LimitsGuard {
    fn drop(&mut self) {
        // The render is over: nothing it made is used any more, so the namespaces it created are emptied, which
        // breaks any reference cycle through them (`{% set ns.me = ns %}`, `{% set ns.l = [ns] %}`).
        let created = NAMESPACES.with(|n| n.replace(self.prev_namespaces.take()));
        for ns in created.into_iter().flatten() {
            if let Some(ns) = ns.upgrade() {
                ns.clear();
            }
        }
        LIMITS.with(|l| l.set(self.prev));
        LEFT.with(|l| l.set(self.prev_left));
        STEPS.with(|l| l.set(self.prev_steps));
        EXHAUSTED.with(|e| e.set(self.prev_exhausted));
    }
}

/// The limits constant folding runs under: a folded value is kept with the compiled template.
const FOLDING: Limits = Limits {
    max_string_bytes: 4 << 10,
    max_items: Limits::DEFAULT.max_items,
    budget_bytes: 16 << 10,
    max_iterations: 10_000,
};

thread_local! {
    static IN_FOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `fold` (the compiler's constant folding) under the small [`FOLDING`] limits, once for the outermost
/// call; `None` when it would exceed them.
pub(crate) fn folding(fold: impl FnOnce() -> Option<Value>) -> Option<Value> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_FOLDING.with(|f| f.set(false));
        }
    }
    if IN_FOLDING.with(|f| f.replace(true)) {
        return fold();
    }
    let _reset = Reset;
    let guard = enter(FOLDING);
    let value = fold()?;
    guard.check().ok().map(|()| value)
}

thread_local! {
    pub(crate) static LIVE_NAMESPACES: Cell<usize> = const { Cell::new(0) };
}

/// The namespaces created on this thread and not dropped yet (on this thread): a leak check for tests.
#[doc(hidden)]
pub fn live_namespaces() -> usize {
    LIVE_NAMESPACES.with(Cell::get)
}

/// Registers a namespace created during the current guard, to be emptied when the guard is dropped (outside a
/// guard nothing is tracked). Each one counts against the byte budget (its allocation lives until the guard
/// ends).
pub(crate) fn track_namespace(ns: &std::sync::Arc<Namespace>) -> Result<(), Error> {
    charge(64)?;
    NAMESPACES.with(|n| {
        if let Some(list) = n.borrow_mut().as_mut() {
            list.push(std::sync::Arc::downgrade(ns));
        }
    });
    Ok(())
}

type DynIter = Box<dyn Iterator<Item = Value> + Send + Sync>;

/// Counts the items of `iter` against the iteration budget, when a guard is alive.
pub(crate) fn counted(iter: DynIter) -> DynIter {
    if STEPS.with(Cell::get).is_none() {
        return iter;
    }
    Box::new(Counted(iter))
}

struct Counted(DynIter);

impl Iterator for Counted {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        let go_on = STEPS.with(|s| match s.get() {
            Some(0) => {
                EXHAUSTED.with(|e| e.set(true));
                false
            }
            Some(n) => {
                s.set(Some(n - 1));
                true
            }
            None => true,
        });
        if go_on {
            self.0.next()
        } else {
            None
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// The limits in force on this thread.
pub fn current() -> Limits {
    LIMITS.with(Cell::get)
}

fn too_large(what: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("value too large: {what}"))
}

fn charge(bytes: usize) -> Result<(), Error> {
    LEFT.with(|left| match left.get() {
        None => Ok(()),
        Some(n) if bytes <= n => {
            left.set(Some(n - bytes));
            Ok(())
        }
        Some(_) => Err(too_large(format!(
            "the values built by this template exceed {} bytes in total",
            current().budget_bytes
        ))),
    })
}

/// Checks (and counts) a string of `len` bytes about to be built; `None` means its size overflows.
pub(crate) fn string(len: Option<usize>) -> Result<(), Error> {
    let max = current().max_string_bytes;
    match len {
        Some(len) if len <= max => charge(len),
        _ => Err(too_large(format!("a string longer than {max} bytes"))),
    }
}

/// Checks a list or map of `len` items about to be made (lazily: nothing is counted).
pub(crate) fn items(len: Option<usize>) -> Result<(), Error> {
    let max = current().max_items;
    match len {
        Some(len) if len <= max => Ok(()),
        _ => Err(too_large(format!("a list or map of more than {max} items"))),
    }
}

/// Checks (and counts) a list or map of `len` items about to be materialized.
pub(crate) fn materialized_items(len: usize) -> Result<(), Error> {
    items(Some(len))?;
    charge(len.saturating_mul(std::mem::size_of::<Value>()))
}

/// Counts a value that an operation has built (a filter, function or method result).
pub(crate) fn built(value: &Value) -> Result<(), Error> {
    match &value.0 {
        ValueRepr::String(s, _) => string(Some(s.len())),
        ValueRepr::Bytes(b) => string(Some(b.len())),
        ValueRepr::Object(_) => {
            if let Some(v) = value.downcast_object_ref::<Vec<Value>>() {
                materialized_items(v.len())
            } else if let Some(m) = value.downcast_object_ref::<ValueMap>() {
                materialized_items(m.len().saturating_mul(2))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// A `fmt::Write` into a `String` that fails once the string would exceed the string limit.
pub(crate) struct BoundedString {
    pub(crate) buf: String,
    max: usize,
    pub(crate) exceeded: bool,
}

impl BoundedString {
    pub(crate) fn new() -> Self {
        BoundedString {
            buf: String::new(),
            max: current().max_string_bytes,
            exceeded: false,
        }
    }

    /// The string, counted against the budget.
    pub(crate) fn finish(self) -> Result<String, Error> {
        if self.exceeded {
            OVERFLOW.with(Cell::take);
            return Err(too_large(format!("a string longer than {} bytes", self.max)));
        }
        charge(self.buf.len())?;
        Ok(self.buf)
    }
}

impl fmt::Write for BoundedString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.exceeded || self.buf.len().saturating_add(s.len()) > self.max {
            self.exceeded = true;
            OVERFLOW.with(|o| o.set(Some(self.max)));
            return Err(fmt::Error);
        }
        self.buf.push_str(s);
        Ok(())
    }
}

/// Formats `args` into a string within the string limit.
pub fn format_bounded(args: fmt::Arguments<'_>) -> Result<String, Error> {
    let mut out = BoundedString::new();
    let _ = fmt::Write::write_fmt(&mut out, args);
    out.finish()
}

thread_local! {
    /// Set when a [`BoundedString`] refused a write, so that the `fmt::Error` that follows is reported as such.
    static OVERFLOW: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The error for a write a bounded string refused since the last call, if any (see `From<fmt::Error>`).
pub(crate) fn take_overflow() -> Option<Error> {
    OVERFLOW
        .with(Cell::take)
        .map(|max| too_large(format!("a string longer than {max} bytes")))
}
