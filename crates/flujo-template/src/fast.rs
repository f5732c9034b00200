//! A fast path for expressions that are a plain lookup path, such as `previous_step`, `steps.fetch` or
//! `context.user['name'].tags[0]`: the most common step inputs.
//!
//! Such a path is resolved directly on the scope's JSON, without running the template VM. The fast path only
//! answers when every segment resolves to an existing value (an object key or an in-range array index); in any
//! other case (a missing key, a lookup on a scalar, a name that is not a scope name) it declines and the VM
//! evaluates the expression, so results and errors are exactly the VM's.

use serde_json::Value;

use crate::scope::Scope;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(Box<str>),
    Index(usize),
}

/// A parsed lookup path: a top-level name followed by attribute and index lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FastPath {
    root: Box<str>,
    segs: Vec<Seg>,
}

/// Names that are literals or keywords, never variables.
const RESERVED: &[&str] =
    &["true", "false", "none", "True", "False", "None", "not", "and", "or", "in", "is", "if", "else"];

fn ident(s: &str) -> Option<(&str, &str)> {
    let first = s.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    Some(s.split_at(end))
}

impl FastPath {
    /// Parses `code` if it is exactly a lookup path.
    pub(crate) fn parse(code: &str) -> Option<FastPath> {
        let code = code.trim();
        let (root, mut rest) = ident(code)?;
        if RESERVED.contains(&root) {
            return None;
        }
        let mut segs = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let (name, tail) = ident(after)?;
                segs.push(Seg::Key(name.into()));
                rest = tail;
            } else if let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']')?;
                let inner = after[..close].trim();
                rest = &after[close + 1..];
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                match quoted {
                    Some(key) if !key.contains(['\\', '\'', '"']) => segs.push(Seg::Key(key.into())),
                    Some(_) => return None,
                    None if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) => {
                        segs.push(Seg::Index(inner.parse().ok()?));
                    }
                    None => return None,
                }
            } else {
                return None;
            }
        }
        Some(FastPath { root: root.into(), segs })
    }

    /// The value the path designates in `scope`, if every step of it exists.
    pub(crate) fn resolve<'a>(&self, scope: &Scope<'a>) -> Option<&'a Value> {
        if let Some((_, v)) = scope.extra.iter().find(|(n, _)| *n == &*self.root) {
            return descend(v, &self.segs);
        }
        let key_at = |i: usize| match self.segs.get(i) {
            Some(Seg::Key(k)) => Some(&**k),
            _ => None,
        };
        let (root, rest): (&'a Value, &[Seg]) = match &*self.root {
            "previous_step" => (scope.previous_step, &self.segs),
            "resume_input" => (scope.resume_input?, &self.segs),
            "this" => (scope.this?, &self.segs),
            "initial_prompt" => (&**scope.context?.field("initial_prompt")?, &self.segs),
            "steps" => (&**scope.context?.step_output(key_at(0)?)?, self.segs.get(1..)?),
            "context" => {
                let ctx = scope.context?;
                let first = key_at(0)?;
                match ctx.field(first) {
                    Some(v) => (&**v, self.segs.get(1..)?),
                    None if first == "steps" => (&**ctx.step_output(key_at(1)?)?, self.segs.get(2..)?),
                    None => return None,
                }
            }
            _ => return None,
        };
        descend(root, rest)
    }
}

fn descend<'a>(mut v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for seg in segs {
        v = match (v, seg) {
            (Value::Object(m), Seg::Key(k)) => m.get(&**k)?,
            (Value::Array(a), Seg::Index(i)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Jinja truthiness of a JSON value.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_paths_only() {
        assert!(FastPath::parse(" previous_step ").is_some());
        assert!(FastPath::parse("context.user['name'].tags[0]").is_some());
        for not_a_path in ["none", "a + 1", "a.b()", "a[-1]", "a[b]", "a | upper", "1", "a.b.", "a['x\\'y']", "x if y"]
        {
            assert_eq!(FastPath::parse(not_a_path), None, "{not_a_path}");
        }
    }

    #[test]
    fn resolves_existing_values_only() {
        let prev = json!({"a": [10, {"b": "x"}]});
        let s = Scope::new(&prev);
        let get = |p: &str| FastPath::parse(p).and_then(|f| f.resolve(&s).cloned());
        assert_eq!(get("previous_step.a[1].b"), Some(json!("x")));
        assert_eq!(get("previous_step['a'][0]"), Some(json!(10)));
        assert_eq!(get("previous_step.a[5]"), None);
        assert_eq!(get("previous_step.a.b"), None);
        assert_eq!(get("range"), None);
        assert_eq!(get("context.x"), None);
    }
}
