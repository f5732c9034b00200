//! The YAML layer: builds a [`Node`] tree that keeps every node's source location straight from the events
//! of `saphyr-parser` (the YAML 1.2 parser under serde-saphyr).
//!
//! Blueprints are read into this generic, spanned tree first (rather than straight into typed structs) so that
//! one malformed field does not hide the others: the decoder walks the tree and reports *every* problem with
//! its line and column. Parsing is hardened against hostile input: the text size, nesting depth, node count,
//! alias expansions ("billion laughs"), anchored copies and document count are bounded as the events arrive,
//! and a breach is a `BP-LIMIT` diagnostic, never a stack overflow or an out-of-memory abort. Scalars follow
//! the YAML 1.2 core schema with strict booleans (`on:`/`yes:` stay strings); duplicate keys are kept so the
//! decoder can report them with locations; merge keys (`<<`) are expanded in place with YAML's precedence.
//!
//! (Until issue 19 this went through serde-saphyr's `Spanned` deserializer, which cost ≈ 60k instructions
//! per blueprint step; building from events costs ≈ 25k, most of it the scanner.)

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, StrInput, Tag};
use serde_json::{Map, Number, Value};

use crate::rules;

mod fast;

/// Largest blueprint (or `skills.yaml`) accepted, in bytes.
pub const MAX_BLUEPRINT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest YAML nesting (sequences + mappings) accepted: enough for [`crate::MAX_STEP_NESTING`] levels of
/// the most verbose step kinds, small enough that recursive processing cannot exhaust a thread's stack.
pub const MAX_YAML_DEPTH: usize = 384;
/// Most YAML nodes accepted in one document.
const MAX_NODES: usize = 1_500_000;
/// Most nodes copied through aliases in one document (bounds alias bombs).
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
                let mut map = Map::with_capacity(entries.len());
                if entries.iter().any(|(k, _)| k.merged) {
                    for (key, _, v) in resolve_merges(entries) {
                        map.insert(key.into_owned(), v.to_json());
                    }
                } else {
                    // No merge: the first of duplicate keys wins, as in `resolve_merges`.
                    for (k, v) in entries {
                        if let Some(serde_json::map::Entry::Vacant(slot)) = k.key_string().map(|key| map.entry(key)) {
                            slot.insert(v.to_json());
                        }
                    }
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

/// A parse failure: rule (`YAML-PARSE` or `BP-LIMIT`), message and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub rule: &'static str,
    pub message: String,
    pub loc: Loc,
}

impl ParseError {
    fn parse(message: impl Into<String>, loc: Loc) -> ParseError {
        ParseError { rule: rules::YAML_PARSE, message: message.into(), loc }
    }
    fn limit(message: impl Into<String>, loc: Loc) -> ParseError {
        ParseError { rule: rules::BP_LIMIT, message: message.into(), loc }
    }
}

/// Parses one YAML document into a spanned tree. An empty document is `Null`.
pub(crate) fn parse(text: &str) -> Result<Node, ParseError> {
    if text.len() > MAX_BLUEPRINT_BYTES {
        return Err(ParseError::limit(
            format!("file is {} bytes; the limit is {} bytes (4 MiB)", text.len(), MAX_BLUEPRINT_BYTES),
            Loc { line: 1, col: 1 },
        ));
    }
    // Most blueprints are in the fast path's subset; anything else (and every error) takes saphyr-parser.
    if let Some(node) = fast::parse(text) {
        return Ok(node);
    }
    Builder::new(text).document()
}

const MULTI_DOCUMENT: &str = "a blueprint must be a single YAML document (found a `---` separator starting another)";

/// Builds the [`Node`] tree straight from the parser's events: scalars are resolved with the YAML 1.2 core
/// schema (strict booleans), aliases are replayed from the anchored node, merge keys (`<<`) are expanded in
/// place, duplicate keys are kept. Every budget is checked as the events arrive, so a hostile document stops
/// at the first breach.
struct Builder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    /// Anchored nodes by the parser's anchor id (ids are dense, from 1), with their size in nodes.
    anchors: Vec<Option<(Node, usize)>>,
    /// Nodes built so far, replayed ones included (an anchor's size is the difference across its node).
    nodes: usize,
    /// Nodes written in the text (bounded by [`MAX_NODES`]).
    written: usize,
    /// Nodes copied out of anchors through aliases (bounded by [`MAX_ALIAS_REPLAY`]).
    replayed: usize,
    /// Nodes kept for anchors (nested anchors keep copies of their subtrees; bounded by [`MAX_NODES`]).
    anchored: usize,
}

fn loc_of(m: &Marker) -> Loc {
    Loc { line: m.line(), col: m.col() + 1 }
}

fn scan_error(e: &ScanError) -> ParseError {
    let loc = loc_of(e.marker());
    let info = e.info();
    if info.contains("recursion limit") {
        return ParseError::limit("YAML flow collections (`[...]`, `{...}`) are nested more than 255 levels deep", loc);
    }
    ParseError::parse(info, loc)
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Builder<'a> {
        Builder {
            parser: Parser::new_from_str(text),
            anchors: Vec::new(),
            nodes: 0,
            written: 0,
            replayed: 0,
            anchored: 0,
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), ParseError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(scan_error(&e)),
            None => Err(ParseError::parse("unexpected end of input", Loc::default())),
        }
    }

    fn document(mut self) -> Result<Node, ParseError> {
        let (mut ev, mut span) = self.next()?;
        if matches!(ev, Event::StreamStart) {
            (ev, span) = self.next()?;
        }
        let root = match ev {
            Event::StreamEnd => return Ok(Node { kind: NodeKind::Null, loc: loc_of(&span.start), merged: false }),
            Event::DocumentStart(_) => {
                let (ev, span) = self.next()?;
                if matches!(ev, Event::DocumentEnd) {
                    Node { kind: NodeKind::Null, loc: loc_of(&span.start), merged: false }
                } else {
                    let root = self.node(ev, span, 0)?;
                    match self.next()? {
                        (Event::DocumentEnd, _) => {}
                        (_, span) => {
                            return Err(ParseError::parse(
                                "unexpected YAML event after the document",
                                loc_of(&span.start),
                            ))
                        }
                    }
                    root
                }
            }
            _ => return Err(ParseError::parse("unexpected YAML event before the document", loc_of(&span.start))),
        };
        match self.next()? {
            (Event::StreamEnd, _) => Ok(root),
            (Event::DocumentStart(_), span) => {
                // Point at the second document's first node (its `---` line is the separator itself).
                let loc = match self.next() {
                    Ok((Event::DocumentEnd | Event::StreamEnd, _)) | Err(_) => loc_of(&span.start),
                    Ok((_, first)) => loc_of(&first.start),
                };
                Err(ParseError::parse(MULTI_DOCUMENT, loc))
            }
            (_, span) => Err(ParseError::parse("unexpected YAML event after the document", loc_of(&span.start))),
        }
    }

    fn count_written(&mut self, loc: Loc) -> Result<(), ParseError> {
        self.nodes += 1;
        self.written += 1;
        if self.written > MAX_NODES {
            return Err(ParseError::limit(
                format!("the document has too many YAML nodes (more than {MAX_NODES})"),
                loc,
            ));
        }
        Ok(())
    }

    /// The node that starts with `ev`; `depth` is the number of collections around it.
    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, ParseError> {
        let loc = loc_of(&span.start);
        let first = self.nodes;
        let (node, anchor) = match ev {
            Event::Scalar(value, style, anchor, tag) => {
                self.count_written(loc)?;
                (Node { kind: resolve_scalar(value, style, tag.as_deref(), loc)?, loc, merged: false }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.enter(depth, loc)?;
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (Node { kind: NodeKind::Seq(items), loc, merged: false }, anchor)
            }
            Event::MappingStart(anchor, _) => {
                self.enter(depth, loc)?;
                let mut entries = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    match ev {
                        Event::MappingEnd => break,
                        Event::Scalar(ref key, ScalarStyle::Plain, 0, None) if key == "<<" => {
                            let (ev, span) = self.next()?;
                            let value = self.node(ev, span, depth + 1)?;
                            merge_into(&mut entries, value)?;
                        }
                        _ => {
                            let key = self.node(ev, span, depth + 1)?;
                            let (ev, span) = self.next()?;
                            let value = self.node(ev, span, depth + 1)?;
                            entries.push((key, value));
                        }
                    }
                }
                (Node { kind: NodeKind::Map(entries), loc, merged: false }, anchor)
            }
            Event::Alias(id) => (self.alias(id, loc)?, 0),
            _ => return Err(ParseError::parse("unexpected YAML event", loc)),
        };
        if anchor > 0 {
            let size = self.nodes - first;
            self.anchored += size;
            if self.anchored > MAX_NODES {
                return Err(ParseError::limit("too many YAML anchors (anchored nodes nest too deeply)", loc));
            }
            if self.anchors.len() <= anchor {
                self.anchors.resize(anchor + 1, None);
            }
            self.anchors[anchor] = Some((node.clone(), size));
        }
        Ok(node)
    }

    fn enter(&mut self, depth: usize, loc: Loc) -> Result<(), ParseError> {
        if depth >= MAX_YAML_DEPTH {
            return Err(ParseError::limit(
                format!("YAML nesting is too deep (more than {MAX_YAML_DEPTH} levels)"),
                loc,
            ));
        }
        self.count_written(loc)
    }

    /// A copy of the anchored node, located at the alias and marked as not written here.
    fn alias(&mut self, id: usize, loc: Loc) -> Result<Node, ParseError> {
        let Some(Some((node, size))) = self.anchors.get(id) else {
            return Err(ParseError::parse("alias refers to an anchor that is not defined before it", loc));
        };
        self.replayed += size;
        if self.replayed > MAX_ALIAS_REPLAY {
            return Err(ParseError::limit(
                format!(
                    "too many YAML alias expansions (more than {MAX_ALIAS_REPLAY} nodes copied through aliases); is this an alias bomb?"
                ),
                loc,
            ));
        }
        self.nodes += size;
        Ok(replayed(node, loc))
    }
}

/// `node` as an alias at `loc` reproduces it: every node located at the alias and marked `merged` (so its
/// keys lose to keys written beside a merge and are not reported as duplicates twice), each mapping reduced to
/// its effective entries (a merge inside the anchored mapping keeps its precedence).
fn replayed(node: &Node, loc: Loc) -> Node {
    let kind = match &node.kind {
        NodeKind::Seq(items) => NodeKind::Seq(items.iter().map(|n| replayed(n, loc)).collect()),
        NodeKind::Map(entries) => NodeKind::Map(
            resolve_merges(entries).into_iter().map(|(_, k, v)| (replayed(k, loc), replayed(v, loc))).collect(),
        ),
        scalar => scalar.clone(),
    };
    Node { kind, loc, merged: true }
}

/// Expands a merge key's value (`<<: *a`, `<<: [*a, *b]`, `<<: {k: v}`) into `entries`, in order: among
/// merged keys the first wins, so `*a` takes precedence over `*b`, and any key written directly wins over
/// all of them ([`resolve_merges`]).
fn merge_into(entries: &mut Vec<(Node, Node)>, value: Node) -> Result<(), ParseError> {
    fn merged_entries(entries: &mut Vec<(Node, Node)>, map: Vec<(Node, Node)>) {
        for (mut k, v) in map {
            k.merged = true;
            entries.push((k, v));
        }
    }
    let not_mapping = |loc| ParseError::parse("YAML merge value (`<<`) must be a mapping or a list of mappings", loc);
    match value.kind {
        NodeKind::Null => Ok(()),
        NodeKind::Map(map) => {
            merged_entries(entries, map);
            Ok(())
        }
        NodeKind::Seq(items) => {
            for item in items {
                match item.kind {
                    NodeKind::Map(map) => merged_entries(entries, map),
                    _ => return Err(not_mapping(item.loc)),
                }
            }
            Ok(())
        }
        _ => Err(not_mapping(value.loc)),
    }
}

/// What an explicit tag asks a scalar to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TagKind {
    /// No tag, or one Flujo does not know (`!custom`): resolved like an untagged scalar.
    Untyped,
    Str,
    Int,
    Float,
    Bool,
    Null,
    Binary,
}

fn tag_kind(tag: Option<&Tag>) -> TagKind {
    const CORE: &str = "tag:yaml.org,2002:";
    let Some(tag) = tag else { return TagKind::Untyped };
    if (tag.handle.is_empty() && tag.suffix == "!") || (tag.handle == "!" && tag.suffix.is_empty()) {
        return TagKind::Str; // the non-specific tag `!`: a string
    }
    // `!!int` (handle resolved to the core prefix), `!<tag:yaml.org,2002:int>` (verbatim), `!int` (local).
    let (core, suffix) = match tag.suffix.strip_prefix(CORE) {
        Some(suffix) if tag.handle.is_empty() => (true, suffix),
        _ if tag.handle == CORE || tag.handle == "!!" => (true, tag.suffix.as_str()),
        _ if tag.handle == "!" => (false, tag.suffix.as_str()),
        _ => return TagKind::Untyped,
    };
    match suffix {
        "str" => TagKind::Str,
        "int" => TagKind::Int,
        "float" => TagKind::Float,
        "bool" => TagKind::Bool,
        "null" => TagKind::Null,
        "binary" if core => TagKind::Binary,
        _ => TagKind::Untyped,
    }
}

/// Resolves a scalar: quoted and block scalars are strings; plain ones follow the YAML 1.2 core schema
/// (`null`/`~`/empty, `true`/`false` in any case — never `yes`/`on` — integers with `0x`/`0o`/`0b` and `_`
/// separators, floats; `.inf`/`.nan` stay the strings `.inf`, `-.inf`, `.nan` since JSON has no such numbers).
/// An explicit core tag (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!binary`) decides instead.
fn resolve_scalar(
    value: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    loc: Loc,
) -> Result<NodeKind, ParseError> {
    let kind = tag_kind(tag);
    let plain = matches!(style, ScalarStyle::Plain);
    let typed = |what: &str, tag: &str| ParseError::parse(format!("`{value}` is not {what} (tagged !!{tag})"), loc);
    match kind {
        TagKind::Untyped if plain => Ok(resolve_plain(value)),
        TagKind::Untyped | TagKind::Str => Ok(NodeKind::Str(value.into_owned())),
        TagKind::Null => Ok(NodeKind::Null),
        TagKind::Bool => match resolve_plain(Cow::Borrowed(value.trim())) {
            NodeKind::Bool(b) => Ok(NodeKind::Bool(b)),
            _ => Err(typed("a boolean", "bool")),
        },
        TagKind::Int => match resolve_plain(Cow::Borrowed(value.trim())) {
            k @ (NodeKind::Int(_) | NodeKind::UInt(_)) => Ok(k),
            _ => Err(typed("an integer", "int")),
        },
        TagKind::Float => match resolve_plain(Cow::Borrowed(value.trim())) {
            k @ (NodeKind::Int(_) | NodeKind::UInt(_) | NodeKind::Float(_)) => Ok(match k {
                NodeKind::Int(i) => NodeKind::Float(i as f64),
                NodeKind::UInt(u) => NodeKind::Float(u as f64),
                other => other,
            }),
            NodeKind::Str(s) if matches!(s.as_str(), ".inf" | "-.inf" | ".nan") => Ok(NodeKind::Str(s)),
            _ => Err(typed("a number", "float")),
        },
        TagKind::Binary => {
            use base64::Engine as _;
            let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| typed("valid base64", "binary"))?;
            String::from_utf8(bytes).map(NodeKind::Str).map_err(|_| typed("UTF-8 text", "binary"))
        }
    }
}

/// An untagged plain scalar per the YAML 1.2 core schema (see [`resolve_scalar`]).
fn resolve_plain(value: Cow<'_, str>) -> NodeKind {
    let t = value.trim();
    let Some(&first) = t.as_bytes().first() else { return NodeKind::Null };
    match first {
        b'~' if t.len() == 1 => NodeKind::Null,
        b'n' | b'N' if t.eq_ignore_ascii_case("null") => NodeKind::Null,
        b't' | b'T' if t.eq_ignore_ascii_case("true") => NodeKind::Bool(true),
        b'f' | b'F' if t.eq_ignore_ascii_case("false") => NodeKind::Bool(false),
        b'0'..=b'9' | b'+' | b'-' | b'.' => number(t).unwrap_or_else(|| NodeKind::Str(value.into_owned())),
        _ => NodeKind::Str(value.into_owned()),
    }
}

/// A number in YAML 1.2 core form (`None`: not a number, the scalar is a string).
fn number(t: &str) -> Option<NodeKind> {
    let (neg, unsigned) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if let Some(magnitude) = integer(unsigned) {
        if !neg {
            return Some(match u64::try_from(magnitude) {
                Ok(u) => NodeKind::UInt(u),
                Err(_) => NodeKind::Float(magnitude as f64),
            });
        }
        return Some(match i64::try_from(-(magnitude as i128)) {
            Ok(i) => NodeKind::Int(i),
            Err(_) => NodeKind::Float(-(magnitude as f64)),
        });
    }
    if unsigned.eq_ignore_ascii_case(".inf") {
        return Some(NodeKind::Str(if neg { "-.inf" } else { ".inf" }.to_owned()));
    }
    if unsigned.eq_ignore_ascii_case(".nan") {
        return Some(NodeKind::Str(".nan".to_owned()));
    }
    // Only digits, one point and an exponent (Rust would also take `inf`, `nan` and `infinity`).
    let b = unsigned.as_bytes();
    let mantissa_end = b.iter().position(|c| matches!(c, b'e' | b'E')).unwrap_or(b.len());
    let (mantissa, exponent) = b.split_at(mantissa_end);
    let digits = mantissa.iter().filter(|c| c.is_ascii_digit()).count();
    let points = mantissa.iter().filter(|c| **c == b'.').count();
    let exponent_ok = exponent.is_empty() || {
        let e = &exponent[1..];
        let e = e.strip_prefix(b"-").or_else(|| e.strip_prefix(b"+")).unwrap_or(e);
        !e.is_empty() && e.iter().all(u8::is_ascii_digit)
    };
    if digits == 0 || points > 1 || digits + points != mantissa.len() || !exponent_ok {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    Some(if f.is_finite() { NodeKind::Float(f) } else { NodeKind::Str(t.to_owned()) })
}

/// The magnitude of an unsigned integer (`0x`, `0o`, `0b` or decimal; `_` separators allowed).
fn integer(t: &str) -> Option<u128> {
    let (radix, digits) = match t.as_bytes() {
        [b'0', b'x' | b'X', ..] => (16, &t[2..]),
        [b'0', b'o' | b'O', ..] => (8, &t[2..]),
        [b'0', b'b' | b'B', ..] => (2, &t[2..]),
        _ => (10, t),
    };
    let mut value: u128 = 0;
    let mut saw = false;
    for c in digits.bytes() {
        if c == b'_' {
            continue;
        }
        let d = char::from(c).to_digit(radix)?;
        value = value.checked_mul(u128::from(radix))?.checked_add(u128::from(d))?;
        saw = true;
    }
    saw.then_some(value)
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

    fn value(text: &str) -> Result<Value, String> {
        parse(text).map(|n| n.to_json()).map_err(|e| format!("{} {}: {}", e.rule, e.loc, e.message))
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        use serde_json::json;
        let cases: &[(&str, Value)] = &[
            ("~", Value::Null),
            ("null", Value::Null),
            ("NULL", Value::Null),
            ("", Value::Null),
            ("true", json!(true)),
            ("True", json!(true)),
            ("FALSE", json!(false)),
            ("yes", json!("yes")),
            ("on", json!("on")),
            ("n", json!("n")),
            ("12", json!(12)),
            ("-12", json!(-12)),
            ("+12", json!(12)),
            ("0", json!(0)),
            ("-0", json!(0)),
            ("0127", json!(127)),
            ("0x1F", json!(31)),
            ("0o17", json!(15)),
            ("0b101", json!(5)),
            ("1_000", json!(1000)),
            ("18446744073709551615", json!(u64::MAX)),
            ("18446744073709551616", json!(18446744073709551616.0)),
            ("-9223372036854775808", json!(i64::MIN)),
            ("-9223372036854775809", json!(-9223372036854775809.0)),
            ("1.5", json!(1.5)),
            ("-.5", json!(-0.5)),
            ("1.", json!(1.0)),
            ("1e3", json!(1000.0)),
            ("2.5E-1", json!(0.25)),
            (".inf", json!(".inf")),
            ("-.Inf", json!("-.inf")),
            ("+.INF", json!(".inf")),
            (".NaN", json!(".nan")),
            ("nan", json!("nan")),
            ("inf", json!("inf")),
            ("infinity", json!("infinity")),
            ("1e999", json!("1e999")),
            ("1.2.3", json!("1.2.3")),
            ("12abc", json!("12abc")),
            ("0x", json!("0x")),
            ("0xG", json!("0xG")),
            ("-x", json!("-x")),
            ("+", json!("+")),
            (".", json!(".")),
            ("1e", json!("1e")),
            ("e5", json!("e5")),
            ("1_0.5", json!("1_0.5")),
            ("'12'", json!("12")),
            ("\"true\"", json!("true")),
            ("''", json!("")),
            ("!!str 12", json!("12")),
            ("! 12", json!("12")),
            ("!<tag:yaml.org,2002:str> 12", json!("12")),
            ("!<tag:yaml.org,2002:int> '12'", json!(12)),
            ("!!int '12'", json!(12)),
            ("!!float 1", json!(1.0)),
            ("!!float .inf", json!(".inf")),
            ("!!bool 'TRUE'", json!(true)),
            ("!!null whatever", Value::Null),
            ("!!binary aGVs bG8=", json!("hello")),
            ("!custom 5", json!(5)),
            ("previous_step + 1", json!("previous_step + 1")),
        ];
        for (text, want) in cases {
            assert_eq!(value(&format!("k: {text}\n")).map(|v| v["k"].clone()), Ok(want.clone()), "{text}");
        }
        for bad in ["!!int x", "!!int 1.5", "!!float x", "!!bool yes", "!!binary '%%%'", "!<tag:yaml.org,2002:int> x"] {
            let err = parse(&format!("a: 1\nk: {bad}\n")).unwrap_err();
            assert_eq!((err.rule, err.loc.line), (rules::YAML_PARSE, 2), "{bad}: {err:?}");
            assert!(err.message.contains("tagged !!"), "{bad}: {err:?}");
        }
    }

    /// Every plain scalar both parsers resolve the same way, as the serde-saphyr 0.0.14 path it replaced did
    /// (strict booleans); the few deliberate differences are listed in `scalars_follow_the_core_schema`.
    #[test]
    fn scalars_agree_with_serde_saphyr() {
        let options = serde_saphyr::Options { strict_booleans: true, ..serde_saphyr::Options::default() };
        let scalars = [
            "~",
            "null",
            "Null",
            "true",
            "False",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "12",
            "-12",
            "+12",
            "0",
            "0x1F",
            "0o17",
            "0b101",
            "1_000",
            "1.5",
            "-.5",
            "1e3",
            "2.5E-1",
            "abc",
            "a b",
            "1.2.3",
            "12abc",
            "0x",
            "-x",
            "+",
            ".",
            "'quoted'",
            "\"12\"",
            "flujo.builtins.transform",
            "previous_step + 1",
            "http://x:1/y",
            "2026-12-07",
            "1:30",
            "x@y",
            "a#b",
            "|\n  block\n",
            ">\n  folded\n",
            "[1, a, true]",
            "{a: 1, b: [x]}",
        ];
        for text in scalars {
            let doc = format!("k: {text}\n");
            let theirs: Value = serde_saphyr::from_str_with_options(&doc, options.clone()).unwrap();
            assert_eq!(value(&doc).unwrap(), theirs, "{text}");
        }
    }

    #[test]
    fn merges_keep_yaml_precedence() {
        use serde_json::json;
        // Among merged mappings the first wins; a key written in the mapping wins over every merged one.
        let v = value("a: &a {x: 1, y: 1}\nb: &b {x: 2, y: 2, z: 2}\nm:\n  <<: [*a, *b]\n  y: 3\n").unwrap();
        assert_eq!(v["m"], json!({"x": 1, "y": 3, "z": 2}));
        // A merge inside the anchored mapping keeps its precedence when that mapping is merged or aliased.
        let v = value("a: &a {x: 1}\nb: &b\n  <<: *a\n  x: 2\nc: {<<: *b}\nd: *b\n").unwrap();
        assert_eq!((&v["c"], &v["d"]), (&json!({"x": 2}), &json!({"x": 2})));
        // An inline mapping merges too; a null merge adds nothing.
        assert_eq!(value("m: {<<: {x: 1, y: 1}, x: 2}\n").unwrap()["m"], json!({"x": 2, "y": 1}));
        assert_eq!(value("m: {<<: ~, x: 2}\n").unwrap()["m"], json!({"x": 2}));
        // A merge of anything but mappings is an error at the value.
        for bad in ["m:\n  <<: 5\n", "m:\n  <<: [5]\n", "a: &a [1]\nm:\n  <<: *a\n"] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.rule, rules::YAML_PARSE, "{bad}");
            assert!(err.message.contains("merge"), "{bad}: {}", err.message);
            assert!(err.loc.line >= 2, "{bad}: {:?}", err.loc);
        }
        // Duplicate keys of an anchored mapping are reported where they are written, not again at each alias.
        let node = parse("a: &a {x: 1, x: 2}\nb: *a\n").unwrap();
        let NodeKind::Map(top) = &node.kind else { panic!("not a map") };
        let (NodeKind::Map(a), NodeKind::Map(b)) = (&top[0].1.kind, &top[1].1.kind) else { panic!("not maps") };
        assert_eq!((duplicate_keys(a).len(), duplicate_keys(b).len()), (1, 0));
    }

    #[test]
    fn aliases_are_located_at_their_use() {
        let node = parse("a: &a {x: [1]}\nb: *a\n").unwrap();
        let NodeKind::Map(top) = &node.kind else { panic!("not a map") };
        let b = &top[1].1;
        assert_eq!((b.loc, b.merged), (Loc { line: 2, col: 4 }, true));
        let NodeKind::Map(inner) = &b.kind else { panic!("not a map") };
        assert_eq!((inner[0].0.loc, inner[0].1.loc), (b.loc, b.loc));
        assert!(!top[0].1.merged);
        let err = parse("a: 1\nb: *nope\n").unwrap_err();
        assert_eq!((err.rule, err.loc.line), (rules::YAML_PARSE, 2));
    }

    #[test]
    fn documents_and_limits() {
        assert_eq!(parse("").unwrap().kind, NodeKind::Null);
        assert_eq!(parse("# only a comment\n").unwrap().kind, NodeKind::Null);
        assert_eq!(parse("---\n").unwrap().kind, NodeKind::Null);
        assert_eq!(value("--- {a: 1}\n...\n").unwrap(), serde_json::json!({"a": 1}));
        // Block nesting deeper than the limit (flow nesting stops at the scanner's own limit).
        // (on the parser's own thread: test threads have small stacks)
        let big = |text: &str| with_parser_stack(|| Some(parse(text).map(|_| ()))).unwrap();
        let deep = "- ".repeat(MAX_YAML_DEPTH + 1) + "x\n";
        assert_eq!(big(&deep).unwrap_err().rule, rules::BP_LIMIT);
        let fine = "- ".repeat(MAX_YAML_DEPTH - 1) + "x\n";
        assert_eq!(big(&fine), Ok(()));
        // Nested anchors keep copies of their subtrees: bounded, not quadratic memory.
        let levels = 160;
        let mut text = String::new();
        for i in 0..levels {
            text.push_str(&format!("&a{i} ["));
        }
        text.push_str(&vec!["x"; 10_000].join(","));
        text.push_str(&"]".repeat(levels));
        let err = big(&text).unwrap_err();
        assert_eq!(err.rule, rules::BP_LIMIT, "{err:?}");
        assert!(err.message.contains("anchor"), "{}", err.message);
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
