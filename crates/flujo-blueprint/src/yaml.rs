//! The YAML layer: parses text with serde-saphyr into a [`Node`] tree that keeps every node's source location.
//!
//! Blueprints are read into this generic, spanned tree first (rather than straight into typed structs) so that
//! one malformed field does not hide the others: the decoder walks the tree and reports *every* problem with
//! its line and column. Parsing is hardened against hostile input: the text size, nesting depth, node count,
//! alias expansions ("billion laughs") and document count are bounded by serde-saphyr budgets, and a breach
//! is a `BP-LIMIT` diagnostic, never a stack overflow or an out-of-memory abort. Booleans are YAML 1.2 strict
//! (`on:`/`yes:` stay strings), and duplicate keys are kept so the decoder can report them with locations.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::Spanned;

use crate::rules;

/// Largest blueprint (or `skills.yaml`) accepted, in bytes.
pub const MAX_BLUEPRINT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest YAML nesting (sequences + mappings) accepted: enough for [`crate::MAX_STEP_NESTING`] levels of
/// the most verbose step kinds, small enough that recursive processing cannot exhaust a thread's stack.
pub const MAX_YAML_DEPTH: usize = 384;
/// Most YAML nodes accepted in one document.
const MAX_NODES: usize = 1_500_000;
/// Most events replayed through aliases in one document (bounds alias bombs).
const MAX_ALIAS_REPLAY: usize = 200_000;

/// Stack size of the thread that parses and decodes (deeply nested YAML recurses; debug builds need ~16 KiB
/// per level). The memory is reserved, not committed: only the pages a document actually uses are touched.
const PARSER_STACK_BYTES: usize = 64 << 20;

/// Runs `f` on a scoped thread with a stack large enough for [`MAX_YAML_DEPTH`] levels of recursive
/// processing, whatever the caller's stack (test threads have 2 MiB). Falls back to the current thread when
/// no thread can be started. A panic inside `f` is propagated.
pub(crate) fn with_parser_stack<T: Send + Default>(f: impl FnOnce() -> T + Send) -> T {
    let job = std::sync::Mutex::new(Some(f));
    let take = || job.lock().ok().and_then(|mut guard| guard.take());
    let ran = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("flujo-blueprint".into())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || take().map(|f| f()));
        match spawned {
            Ok(handle) => match handle.join() {
                Ok(out) => out,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Err(_) => None,
        }
    });
    // `None`: the thread could not be started; run here (the job is still in its slot).
    ran.or_else(|| take().map(|f| f())).unwrap_or_default()
}

/// A 1-based source position (`0:0` when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML node with its location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub loc: Loc,
    /// True when the node comes from a merge key (`<<: *a`) rather than being written at this place.
    pub merged: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The YAML type name used in messages (`a mapping`, `a string`, …).
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) | NodeKind::UInt(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The node as a mapping key: scalars are spelled as YAML would (`true`, `1`), so `true:`/`false:` branch
    /// keys become the names `"true"`/`"false"`. `None` for collections. Borrowed for strings.
    pub fn key_str(&self) -> Option<Cow<'_, str>> {
        Some(match &self.kind {
            NodeKind::Str(s) => Cow::Borrowed(s.as_str()),
            NodeKind::Null => Cow::Borrowed("null"),
            NodeKind::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            NodeKind::Int(i) => Cow::Owned(i.to_string()),
            NodeKind::UInt(u) => Cow::Owned(u.to_string()),
            NodeKind::Float(f) => Cow::Owned(f.to_string()),
            NodeKind::Seq(_) | NodeKind::Map(_) => return None,
        })
    }

    /// [`Node::key_str`], owned.
    pub fn key_string(&self) -> Option<String> {
        self.key_str().map(Cow::into_owned)
    }

    /// The node as JSON (mapping keys through [`Node::key_str`]; entries with collection keys are dropped,
    /// the decoder reports them).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::Number((*i).into()),
            NodeKind::UInt(u) => Value::Number((*u).into()),
            NodeKind::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut map = Map::new();
                for (key, _, v) in resolve_merges(entries) {
                    map.insert(key.into_owned(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }
}

/// Mappings up to this size are searched linearly (no hashing) when resolving keys.
const SMALL_MAP: usize = 16;

/// The effective entries of a mapping with their keys: a key written directly wins over a merged one
/// (`<<: *a`), the first merged occurrence wins among merged ones, and among duplicate direct keys the first
/// wins (the decoder reports those duplicates as `BP-DUP-KEY`). Collection keys are dropped.
pub(crate) fn resolve_merges(entries: &[(Node, Node)]) -> Vec<(Cow<'_, str>, &Node, &Node)> {
    let mut out: Vec<(Cow<'_, str>, &Node, &Node)> = Vec::with_capacity(entries.len());
    let mut index: HashMap<Cow<'_, str>, usize> = HashMap::new();
    let large = entries.len() > SMALL_MAP;
    for (k, v) in entries {
        let Some(key) = k.key_str() else { continue };
        let found = if large { index.get(&key).copied() } else { out.iter().position(|(o, _, _)| *o == key) };
        match found {
            None => {
                if large {
                    index.insert(key.clone(), out.len());
                }
                out.push((key, k, v));
            }
            Some(i) => {
                if out[i].1.merged && !k.merged {
                    out[i] = (key, k, v);
                }
            }
        }
    }
    out
}

/// The direct keys of a mapping that occur more than once (their second and later occurrences).
pub(crate) fn duplicate_keys(entries: &[(Node, Node)]) -> Vec<&Node> {
    let mut dups = Vec::new();
    if entries.len() <= SMALL_MAP {
        for (i, (k, _)) in entries.iter().enumerate() {
            let Some(key) = k.key_str().filter(|_| !k.merged) else { continue };
            if entries[..i].iter().any(|(o, _)| !o.merged && o.key_str().as_ref() == Some(&key)) {
                dups.push(k);
            }
        }
        return dups;
    }
    let mut seen = HashSet::new();
    for (k, _) in entries {
        if let Some(key) = k.key_str().filter(|_| !k.merged) {
            if !seen.insert(key) {
                dups.push(k);
            }
        }
    }
    dups
}

fn loc_of(l: &serde_saphyr::Location) -> Loc {
    Loc { line: usize::try_from(l.line()).unwrap_or(0), col: usize::try_from(l.column()).unwrap_or(0) }
}

fn from_spanned(s: Spanned<NodeKind>) -> Node {
    let merged = s.referenced != s.defined;
    Node { kind: s.value, loc: loc_of(&s.referenced), merged }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = NodeKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_none<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeKind, D::Error> {
        NodeKind::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<NodeKind, E> {
        Ok(NodeKind::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<NodeKind, E> {
        Ok(NodeKind::UInt(u))
    }
    fn visit_i128<E>(self, i: i128) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(i as f64))
    }
    fn visit_u128<E>(self, u: u128) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(u as f64))
    }
    fn visit_f64<E>(self, f: f64) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(String::from_utf8_lossy(b).into_owned()))
    }
    fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(String::from_utf8_lossy(&b).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<NodeKind>>()? {
            items.push(from_spanned(item));
        }
        Ok(NodeKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<NodeKind>>()? {
            let value = map.next_value::<Spanned<NodeKind>>()?;
            entries.push((from_spanned(key), from_spanned(value)));
        }
        Ok(NodeKind::Map(entries))
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NodeKind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

/// A parse failure: rule (`YAML-PARSE` or `BP-LIMIT`), message and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub rule: &'static str,
    pub message: String,
    pub loc: Loc,
}

fn options() -> serde_saphyr::Options {
    let budget = serde_saphyr::Budget {
        max_reader_input_bytes: Some(MAX_BLUEPRINT_BYTES),
        max_depth: MAX_YAML_DEPTH,
        max_nodes: MAX_NODES,
        max_events: MAX_NODES * 2 + 16,
        max_total_scalar_bytes: MAX_BLUEPRINT_BYTES * 2,
        ..serde_saphyr::Budget::default()
    };
    let alias_limits = serde_saphyr::options::AliasLimits {
        max_total_replayed_events: MAX_ALIAS_REPLAY,
        ..serde_saphyr::options::AliasLimits::default()
    };
    serde_saphyr::Options {
        budget: Some(budget),
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        strict_booleans: true,
        with_snippet: false,
        alias_limits,
        ..serde_saphyr::Options::default()
    }
}

/// Parses one YAML document into a spanned tree. An empty document is `Null`.
pub(crate) fn parse(text: &str) -> Result<Node, ParseError> {
    if text.len() > MAX_BLUEPRINT_BYTES {
        return Err(ParseError {
            rule: rules::BP_LIMIT,
            message: format!("file is {} bytes; the limit is {} bytes (4 MiB)", text.len(), MAX_BLUEPRINT_BYTES),
            loc: Loc { line: 1, col: 1 },
        });
    }
    match serde_saphyr::from_str_with_options::<Spanned<NodeKind>>(text, options()) {
        Ok(node) => Ok(from_spanned(node)),
        Err(err) => Err(describe_error(err.without_snippet())),
    }
}

fn describe_error(err: &serde_saphyr::Error) -> ParseError {
    use serde_saphyr::Error as E;
    let loc = err.location().map(|l| loc_of(&l)).unwrap_or_default();
    let parse = |message: String| ParseError { rule: rules::YAML_PARSE, message, loc };
    let limit = |message: String| ParseError { rule: rules::BP_LIMIT, message, loc };
    match err {
        E::Budget { breach, .. } => limit(describe_breach(breach)),
        E::Message { msg, .. } if msg.contains("recursion limit") => {
            limit("YAML flow collections (`[...]`, `{...}`) are nested more than 255 levels deep".to_owned())
        }
        E::Message { msg, .. } if msg.starts_with("alias") => {
            limit(format!("too many YAML alias expansions ({msg}); is this an alias bomb?"))
        }
        E::Message { msg, .. } if msg.starts_with("multiple YAML documents") => {
            parse("a blueprint must be a single YAML document (found a `---` separator starting another)".into())
        }
        E::Message { msg, .. } | E::HookError { msg, .. } => parse(msg.clone()),
        E::Eof { .. } => parse("unexpected end of input".into()),
        E::Unexpected { expected, .. } => parse(format!("unexpected YAML event: expected {expected}")),
        E::ContainerEndMismatch { .. } => parse("a list or mapping ends without a start".into()),
        E::UnknownAnchor { .. } => parse("alias refers to an anchor that is not defined before it".into()),
        E::QuotingRequired { value, .. } => parse(format!("the value `{value}` must be quoted")),
        E::IOError { cause } => parse(format!("I/O error: {cause}")),
        other => {
            let text = other.to_string();
            let text = match text.rfind(" at line ") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            parse(text)
        }
    }
}

fn describe_breach(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { .. } => format!("YAML nesting is too deep (more than {MAX_YAML_DEPTH} levels)"),
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
            format!("the document has too many YAML nodes (more than {MAX_NODES})")
        }
        BudgetBreach::Aliases { .. } | BudgetBreach::AliasAnchorRatio { .. } | BudgetBreach::MergeKeys { .. } => {
            "too many YAML aliases or merge keys; is this an alias bomb?".to_owned()
        }
        BudgetBreach::Anchors { .. } => "too many YAML anchors".to_owned(),
        BudgetBreach::Documents { .. } => {
            "a blueprint must be a single YAML document (found a `---` separator starting another)".to_owned()
        }
        BudgetBreach::ScalarBytes { .. } | BudgetBreach::InputBytes { .. } => {
            format!("the document is too large (limit {MAX_BLUEPRINT_BYTES} bytes)")
        }
        BudgetBreach::SequenceUnbalanced => "unbalanced YAML structure".to_owned(),
    }
}

/// Decodes file bytes as UTF-8 (a leading BOM is dropped); invalid bytes are a `YAML-PARSE` error at their
/// position.
pub(crate) fn decode_utf8(bytes: &[u8]) -> Result<&str, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let col = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        ParseError {
            rule: rules::YAML_PARSE,
            message: format!("the file is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
            loc: Loc { line, col },
        }
    })
}

/// Parses one YAML document (with the blueprint parser's budgets: size, depth, alias expansion) into JSON;
/// the error names the line and column.
pub fn yaml_to_json(text: &str) -> Result<Value, String> {
    let out: Option<Result<Value, String>> = with_parser_stack(|| {
        Some(match parse(text) {
            Ok(node) => Ok(node.to_json()),
            Err(e) => Err(format!("{} (line {}, column {})", e.message, e.loc.line, e.loc.col)),
        })
    });
    out.unwrap_or_else(|| Err("the YAML parser did not run".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_locations_and_strict_booleans() {
        let node = parse("a: 1\non: yes\ntrue: x\n").unwrap();
        let NodeKind::Map(entries) = &node.kind else { panic!("not a map") };
        assert_eq!(entries[0].1.loc, Loc { line: 1, col: 4 });
        assert_eq!(entries[1].0.key_string().as_deref(), Some("on"));
        assert_eq!(entries[1].1.as_str(), Some("yes"));
        assert_eq!(entries[2].0.key_string().as_deref(), Some("true"));
    }

    #[test]
    fn duplicate_keys_are_kept_and_merges_resolved() {
        let node = parse("a: 1\na: 2\n").unwrap();
        let NodeKind::Map(entries) = &node.kind else { panic!("not a map") };
        assert_eq!(duplicate_keys(entries).len(), 1);
        let node = parse("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\n").unwrap();
        assert_eq!(node.to_json()["m"], serde_json::json!({"x": 3, "y": 2}));
    }

    #[test]
    fn errors_have_rule_and_location() {
        let err = parse("a: [1, 2\n").unwrap_err();
        assert_eq!(err.rule, rules::YAML_PARSE);
        assert!(err.loc.line >= 1);
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert_eq!(parse(&deep).unwrap_err().rule, rules::BP_LIMIT);
        let multi = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(multi.rule, rules::YAML_PARSE);
        assert_eq!(multi.loc.line, 3);
        let err = decode_utf8(b"a: 1\nb: \xff\n").unwrap_err();
        assert_eq!(err.loc, Loc { line: 2, col: 4 });
    }
}
