//! What a template or expression can see: [`Scope`], and the lazy minijinja root object built from it.
//!
//! Names in scope: `previous_step`, `context` (every context field, plus `context.steps`), `steps` (step
//! outputs by name), `initial_prompt` (the context field of that name), `resume_input`, `this`, and the
//! caller's `extra` names (which shadow the built-in ones). The root object is built per render from the names
//! the compiled template references ([`Refs`], found by static analysis at compile time): borrowed values that
//! are not referenced are never converted, and context data is never copied (see [`crate::convert`]).

use std::sync::{Arc, OnceLock};

use flujo_core::context::ContextSnapshot;
use minijinja::value::{Enumerator, Object, Value as MjValue};
use serde_json::Value;

use crate::convert::{from_json, shared, ContextObject};

/// The names a template or expression can read. Everything is borrowed: building a scope costs nothing, and
/// rendering converts only what the template references.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// `previous_step`: the previous step's output (or the step's input).
    pub previous_step: &'a Value,
    /// The run context: `context.x.y`, `steps.NAME`, `initial_prompt` come from here.
    pub context: Option<&'a ContextSnapshot>,
    /// `resume_input`: the human's answer after a pause.
    pub resume_input: Option<&'a Value>,
    /// `this`: the current item of a map or `{{#each}}`.
    pub this: Option<&'a Value>,
    /// Additional top-level names (e.g. `output` for validators, `item`); they shadow the built-in names.
    pub extra: &'a [(&'a str, &'a Value)],
}

impl<'a> Scope<'a> {
    /// A scope with only `previous_step`.
    pub fn new(previous_step: &'a Value) -> Self {
        Scope { previous_step, context: None, resume_input: None, this: None, extra: &[] }
    }

    /// Sets the run context (`context`, `steps`, `initial_prompt`).
    pub fn with_context(mut self, context: &'a ContextSnapshot) -> Self {
        self.context = Some(context);
        self
    }

    /// Sets `resume_input`.
    pub fn with_resume_input(mut self, resume_input: &'a Value) -> Self {
        self.resume_input = Some(resume_input);
        self
    }

    /// Sets `this`.
    pub fn with_this(mut self, this: &'a Value) -> Self {
        self.this = Some(this);
        self
    }

    /// Sets the additional top-level names.
    pub fn with_extra(mut self, extra: &'a [(&'a str, &'a Value)]) -> Self {
        self.extra = extra;
        self
    }

    /// `true` if `name` resolves to something in this scope.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.extra.iter().any(|(n, _)| *n == name)
            || match name {
                "previous_step" => true,
                "context" | "steps" => self.context.is_some(),
                "initial_prompt" => self.context.is_some_and(|c| c.field("initial_prompt").is_some()),
                "resume_input" => self.resume_input.is_some(),
                "this" => self.this.is_some(),
                _ => false,
            }
    }
}

/// The top-level names a compiled template or expression references.
#[derive(Clone, Debug, Default)]
pub(crate) struct Refs {
    previous_step: bool,
    resume_input: bool,
    this: bool,
    /// `context`, `steps` or `initial_prompt`.
    context: bool,
    /// Every referenced top-level name (for `extra` and error messages).
    names: Box<[Box<str>]>,
}

impl Refs {
    pub(crate) fn new<I: IntoIterator<Item = String>>(names: I) -> Self {
        let mut names: Vec<Box<str>> = names.into_iter().map(String::into_boxed_str).collect();
        names.sort();
        let has = |n: &str| names.iter().any(|x| &**x == n);
        Refs {
            previous_step: has("previous_step"),
            resume_input: has("resume_input"),
            this: has("this"),
            context: has("context") || has("steps") || has("initial_prompt"),
            names: names.into_boxed_slice(),
        }
    }

    fn mentions(&self, name: &str) -> bool {
        self.names.iter().any(|n| &**n == name)
    }

    /// Referenced names the scope does not provide (they may still be globals such as `range`).
    pub(crate) fn missing_in(&self, scope: &Scope<'_>) -> Vec<String> {
        self.names.iter().filter(|n| !scope.has(n)).map(|n| n.to_string()).collect()
    }

    /// The root value for a render of a template with these references.
    pub(crate) fn root(&self, scope: &Scope<'_>) -> MjValue {
        let extra = if scope.extra.is_empty() {
            Vec::new()
        } else {
            scope
                .extra
                .iter()
                .filter(|(name, _)| self.mentions(name))
                .map(|(name, value)| (Box::<str>::from(*name), from_json(value)))
                .collect()
        };
        MjValue::from_object(Root {
            previous_step: self.previous_step.then(|| from_json(scope.previous_step)),
            resume_input: if self.resume_input { scope.resume_input.map(from_json) } else { None },
            this: if self.this { scope.this.map(from_json) } else { None },
            context: if self.context { scope.context.cloned() } else { None },
            context_obj: OnceLock::new(),
            extra,
        })
    }
}

/// The root of a render: resolves top-level names.
#[derive(Debug)]
struct Root {
    previous_step: Option<MjValue>,
    resume_input: Option<MjValue>,
    this: Option<MjValue>,
    context: Option<ContextSnapshot>,
    context_obj: OnceLock<Arc<ContextObject>>,
    extra: Vec<(Box<str>, MjValue)>,
}

impl Root {
    fn context_obj(&self) -> Option<&Arc<ContextObject>> {
        let snapshot = self.context.as_ref()?;
        Some(self.context_obj.get_or_init(|| Arc::new(ContextObject::new(snapshot.clone()))))
    }

    fn lookup(&self, name: &str) -> Option<MjValue> {
        if let Some((_, v)) = self.extra.iter().find(|(n, _)| &**n == name) {
            return Some(v.clone());
        }
        match name {
            "previous_step" => self.previous_step.clone(),
            "resume_input" => self.resume_input.clone(),
            "this" => self.this.clone(),
            "context" => self.context_obj().map(|c| MjValue::from_dyn_object(Arc::clone(c))),
            "steps" => self.context_obj().and_then(|c| c.get_value_by_str("steps")),
            "initial_prompt" => self.context.as_ref()?.field("initial_prompt").map(shared),
            _ => None,
        }
    }
}

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        self.lookup(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<MjValue> {
        self.lookup(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<MjValue> = self.extra.iter().map(|(n, _)| MjValue::from(&**n)).collect();
        for (name, present) in [
            ("previous_step", self.previous_step.is_some()),
            ("resume_input", self.resume_input.is_some()),
            ("this", self.this.is_some()),
            ("context", self.context.is_some()),
            ("steps", self.context.is_some()),
        ] {
            if present {
                keys.push(MjValue::from(name));
            }
        }
        Enumerator::Values(keys)
    }
}
