//! The skill registry: maps skill ids (plus params) to callable skill instances.
//!
//! A registry entry is a [`SkillInfo`] and a [`SkillFactory`] that binds params into a skill instance. Lookup
//! accepts the full id (`flujo.builtins.transform`) and, for built-ins, the short id (`transform`). Unknown ids
//! get a "did you mean" suggestion by edit distance, and ids that look like Python import paths
//! (`pkg.mod:func`, `pkg.module.func`) get a dedicated error explaining how Python code is run instead.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, SkillRegistry};
use serde_json::Value;

use crate::builtins::{register_builtins, BUILTIN_PREFIX};

/// Builds a skill instance from its params. Called once per step when a runner is built; invalid params must
/// be reported here as [`ResolveError::BadParams`].
pub type SkillFactory = Arc<dyn Fn(&Value) -> Result<Arc<dyn Skill>, ResolveError> + Send + Sync>;

/// A boxed, sendable future (the return type accepted by [`Skills::register_fn`] closures, among
/// others).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

#[derive(Clone)]
struct Entry {
    info: SkillInfo,
    factory: SkillFactory,
}

/// The skills a runner can call: the Flujo built-ins plus the ones you register (closures with
/// [`register_fn`](Skills::register_fn), or factories with [`register`](Skills::register)). It is the
/// [`SkillRegistry`] handed to the runner's builder (`.skills(Arc::new(skills))`).
#[derive(Clone)]
pub struct Skills {
    entries: HashMap<String, Entry>,
}

/// The former name of [`Skills`], kept so existing code compiles.
pub type BuiltinRegistry = Skills;

/// Whether a skill changes something outside the run (sends a message, writes a file, charges a card):
/// such skills get an idempotency key and are never retried blindly, and `flujo create` asks before using
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SideEffects {
    /// It only computes its output.
    #[default]
    No,
    /// It changes something outside the run.
    Yes,
}

impl From<bool> for SideEffects {
    fn from(has: bool) -> Self {
        if has {
            SideEffects::Yes
        } else {
            SideEffects::No
        }
    }
}

impl fmt::Debug for Skills {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("Skills").field("ids", &ids).finish()
    }
}

impl Default for Skills {
    fn default() -> Self {
        Self::new()
    }
}

impl Skills {
    /// A registry with every `flujo.builtins.*` skill registered.
    pub fn new() -> Self {
        let mut registry = Self::empty();
        register_builtins(&mut registry);
        crate::memory::register_memory_off(&mut registry);
        crate::code_interpreter::register_code_interpreter_off(&mut registry);
        registry
    }

    /// A registry with no skills at all.
    pub fn empty() -> Self {
        Skills { entries: HashMap::new() }
    }

    /// Registers (or replaces) skill `id`. `info.id` is set to `id`. The factory receives the step's params
    /// and must return [`ResolveError::BadParams`] for invalid ones.
    pub fn register(&mut self, id: impl Into<String>, info: SkillInfo, factory: SkillFactory) -> &mut Self {
        let id = id.into();
        let info = {
            let mut info = info;
            info.id = id.clone();
            info
        };
        self.entries.insert(id, Entry { info, factory });
        self
    }

    /// Registers an async closure as skill `id` (params are ignored). The closure is shared by every step
    /// that uses the skill.
    ///
    /// ```
    /// use flujo_core::{SkillOutput, SkillRegistry};
    /// use flujo_skills::{SideEffects, Skills};
    /// use serde_json::json;
    ///
    /// let mut skills = Skills::new();
    /// skills.register_fn("acme.echo", SideEffects::No, |call| async move { Ok(SkillOutput::value(call.input)) });
    /// assert!(skills.resolve("acme.echo", &json!(null)).is_ok());
    /// ```
    pub fn register_fn<F, Fut>(
        &mut self,
        id: impl Into<String>,
        side_effects: impl Into<SideEffects>,
        f: F,
    ) -> &mut Self
    where
        F: Fn(SkillCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SkillOutput, SkillError>> + Send + 'static,
    {
        let id = id.into();
        let info = {
            let mut info = SkillInfo::default();
            info.id = id.clone();
            info.description = format!("user skill '{id}'");
            info.side_effects = side_effects.into() == SideEffects::Yes;
            info
        };
        let skill: Arc<dyn Skill> = Arc::new(FnSkill { info: info.clone(), f });
        self.register(id, info, Arc::new(move |_params: &Value| Ok(skill.clone())))
    }

    /// True when `id` (full or short built-in form) resolves to a registered skill.
    pub fn contains(&self, id: &str) -> bool {
        self.lookup(id).is_some()
    }

    fn lookup(&self, id: &str) -> Option<&Entry> {
        if let Some(entry) = self.entries.get(id) {
            return Some(entry);
        }
        if id.contains(['.', ':']) {
            return None;
        }
        let mut full = String::with_capacity(BUILTIN_PREFIX.len() + id.len());
        full.push_str(BUILTIN_PREFIX);
        full.push_str(id);
        self.entries.get(&full)
    }

    /// The closest registered id (full form, or short form for built-ins when `id` is short), if close enough.
    fn suggest(&self, id: &str) -> Option<String> {
        let max = (id.chars().count() / 3).clamp(1, 3);
        let mut best: Option<(usize, &str)> = None;
        for known in self.entries.keys() {
            let mut candidates = vec![known.as_str()];
            if let Some(short) = known.strip_prefix(BUILTIN_PREFIX) {
                candidates.push(short);
            }
            for cand in candidates {
                let d = edit_distance(id, cand);
                if d <= max && best.is_none_or(|(bd, bs)| d < bd || (d == bd && cand < bs)) {
                    best = Some((d, cand));
                }
            }
        }
        best.map(|(_, s)| s.to_owned())
    }
}

impl SkillRegistry for BuiltinRegistry {
    fn resolve(&self, id: &str, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        if let Some(entry) = self.lookup(id) {
            return (entry.factory)(params);
        }
        if looks_like_python_import(id) {
            return Err(ResolveError::PythonPath { id: id.to_owned() });
        }
        let suggestion = self.suggest(id);
        if suggestion.is_none() && looks_like_python_dotted(id) {
            return Err(ResolveError::PythonPath { id: id.to_owned() });
        }
        Err(ResolveError::Unknown { id: id.to_owned(), suggestion })
    }

    fn list(&self) -> Vec<SkillInfo> {
        let mut infos: Vec<SkillInfo> = self.entries.values().map(|e| e.info.clone()).collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        infos
    }
}

/// A skill backed by a Rust closure.
struct FnSkill<F> {
    info: SkillInfo,
    f: F,
}

#[async_trait]
impl<F, Fut> Skill for FnSkill<F>
where
    F: Fn(SkillCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SkillOutput, SkillError>> + Send + 'static,
{
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        (self.f)(call).await
    }

    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn is_dotted_ident(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_ident)
}

/// `pkg.mod:func` / `pkg.mod:Class.method` (not under `flujo.builtins.`).
fn looks_like_python_import(id: &str) -> bool {
    if id.starts_with(BUILTIN_PREFIX) {
        return false;
    }
    match id.split_once(':') {
        Some((module, attr)) => is_dotted_ident(module) && is_dotted_ident(attr),
        None => false,
    }
}

/// `pkg.module.func`: three or more identifier segments, not under `flujo.builtins.`.
fn looks_like_python_dotted(id: &str) -> bool {
    !id.starts_with(BUILTIN_PREFIX) && id.split('.').count() >= 3 && is_dotted_ident(id)
}

use flujo_core::suggest::edit_distance;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("transform", "transfrom"), 1);
        assert_eq!(edit_distance("fail", "fial"), 1);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn python_path_detection() {
        assert!(looks_like_python_import("pkg.mod:fn"));
        assert!(looks_like_python_import("pkg:Class.method"));
        assert!(!looks_like_python_import("openai:gpt-4o"));
        assert!(looks_like_python_dotted("pkg.module.func"));
        assert!(!looks_like_python_dotted("acme.search"));
        assert!(!looks_like_python_dotted("flujo.builtins.nope"));
    }

    #[test]
    fn unknown_short_id_suggests_short_form() {
        let r = BuiltinRegistry::new();
        let err = r.resolve("transfrom", &json!({"expr": "1"})).err();
        assert_eq!(err, Some(ResolveError::Unknown { id: "transfrom".into(), suggestion: Some("transform".into()) }));
    }

    #[test]
    fn short_typos_get_suggestions() {
        let r = BuiltinRegistry::new();
        let suggestion = |id: &str| match r.resolve(id, &Value::Null) {
            Err(ResolveError::Unknown { suggestion, .. }) => suggestion,
            _ => None,
        };
        assert_eq!(suggestion("fial").as_deref(), Some("fail"));
        assert_eq!(suggestion("slep").as_deref(), Some("sleep"));
        assert_eq!(suggestion("context_sett").as_deref(), Some("context_set"));
    }

    #[test]
    fn unknown_full_id_suggests_full_form() {
        let r = BuiltinRegistry::new();
        let err = r.resolve("flujo.builtins.passthru", &Value::Null).err();
        assert_eq!(
            err,
            Some(ResolveError::Unknown {
                id: "flujo.builtins.passthru".into(),
                suggestion: Some("flujo.builtins.passthrough".into())
            })
        );
    }

    #[test]
    fn unknown_far_id_has_no_suggestion() {
        let r = BuiltinRegistry::new();
        let err = r.resolve("completely_different_thing", &Value::Null).err();
        assert_eq!(err, Some(ResolveError::Unknown { id: "completely_different_thing".into(), suggestion: None }));
    }

    #[test]
    fn python_paths_are_rejected_with_dedicated_error() {
        let r = BuiltinRegistry::new();
        for id in ["my_pkg.skills:summarize", "my_pkg.skills.summarize", "flujo_ext.tools:Search.run"] {
            let err = r.resolve(id, &Value::Null).err();
            assert_eq!(err, Some(ResolveError::PythonPath { id: id.into() }), "{id}");
        }
        // Under the built-in namespace a typo is an unknown id, not a Python path.
        assert!(matches!(
            r.resolve("flujo.builtins.contxt_set", &json!({"path": "a"})),
            Err(ResolveError::Unknown { suggestion: Some(_), .. })
        ));
    }

    #[test]
    fn registered_dotted_and_colon_ids_resolve_exactly() {
        let mut r = BuiltinRegistry::empty();
        r.register_fn("acme.tools:search", true, |call| async move { Ok(SkillOutput::value(call.input)) });
        let skill = r.resolve("acme.tools:search", &Value::Null).ok();
        assert!(skill.is_some_and(|s| s.info().side_effects));
        assert!(!r.contains("search"));
    }

    #[test]
    fn list_is_sorted_and_contains_builtins() {
        let r = BuiltinRegistry::new();
        let ids: Vec<String> = r.list().into_iter().map(|i| i.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().any(|i| i == "flujo.builtins.transform"));
        assert!(r.list().iter().all(|i| !i.description.is_empty()));
        // Only the built-ins that change something outside the run have side effects.
        let effects: Vec<String> = r.list().into_iter().filter(|i| i.side_effects).map(|i| i.id).collect();
        assert_eq!(effects, ["flujo.builtins.code_interpreter", "flujo.builtins.memory_add"]);
    }

    #[test]
    fn register_factory_sees_params() {
        let mut r = BuiltinRegistry::empty();
        let factory: SkillFactory = Arc::new(|params: &Value| {
            if params.get("ok").and_then(Value::as_bool) == Some(true) {
                Ok(Arc::new(Echo) as Arc<dyn Skill>)
            } else {
                Err(ResolveError::BadParams { id: "acme.echo".into(), message: "`ok` must be true".into() })
            }
        });
        r.register(
            "acme.echo",
            {
                let mut info = SkillInfo::default();
                info.description = "echo".into();
                info
            },
            factory,
        );
        assert!(r.resolve("acme.echo", &json!({"ok": true})).is_ok());
        assert!(matches!(r.resolve("acme.echo", &json!({})), Err(ResolveError::BadParams { .. })));
        assert_eq!(r.list()[0].id, "acme.echo");
    }

    struct Echo;

    #[async_trait]
    impl Skill for Echo {
        async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
            Ok(SkillOutput::value(call.input))
        }
        fn info(&self) -> SkillInfo {
            SkillInfo::default()
        }
    }
}
