//! Where things are written in a blueprint file: the YAML scalar of a step's template, of a schema property,
//! and the line and column of one read inside a template.
//!
//! The raw blueprint keeps the location of names and keys but not of every template string, so the locator
//! goes back to the spanned YAML tree: a step is the mapping whose `name` value sits where the raw step's name
//! does, and a template of that step is the string scalar with the same text inside that mapping (not inside
//! the steps nested in it). A read at line `l`, column `c` of a template is then found on the matching line of
//! the file; a column that cannot be matched falls back to the scalar's own position.

use std::collections::{HashMap, HashSet};

use flujo_template::VarRead;

use crate::raw::{RawBlueprint, RawStep};
use crate::yaml::{resolve_merges, Loc, Node, NodeKind};

pub(super) struct Locator<'n> {
    lines: Vec<&'n str>,
    root: &'n Node,
    /// Step mappings by the location of their `name` value.
    steps: HashMap<Loc, &'n Node>,
    /// The name locations of the raw steps (a mapping found there is a step, not a params object).
    step_names: HashSet<Loc>,
}

impl<'n> Locator<'n> {
    pub fn new(text: &'n str, root: &'n Node, bp: &RawBlueprint) -> Self {
        let mut step_names = HashSet::new();
        collect_names(&bp.steps, &mut step_names);
        let mut steps = HashMap::new();
        index_steps(root, &step_names, &mut steps, 0);
        Locator { lines: text.lines().collect(), root, steps, step_names }
    }

    /// The location of a string scalar `text` in step `s`'s own mapping (not in nested steps).
    pub fn scalar_in_step(&self, s: &RawStep, text: &str) -> Option<Loc> {
        let node = self.steps.get(&s.name.loc)?;
        self.scalar_in(node, text, true)
    }

    /// The location of the key `key` of step `s`'s mapping.
    pub fn key_in_step(&self, s: &RawStep, key: &str) -> Option<Loc> {
        let NodeKind::Map(entries) = &self.steps.get(&s.name.loc)?.kind else { return None };
        resolve_merges(entries).into_iter().find(|(k, _, _)| k == key).map(|(_, k, _)| k.loc)
    }

    /// The location of a string scalar `text` under the top-level key `section` (`agents`).
    pub fn scalar_in_section(&self, section: &str, text: &str) -> Option<Loc> {
        let node = child(self.root, section)?;
        self.scalar_in(node, text, false)
    }

    /// The location of the key of `context_schema.properties.A.properties.B…` for the path `[A, B, …]`.
    pub fn schema_property(&self, path: &[String]) -> Option<Loc> {
        let mut node = child(self.root, "context_schema")?;
        let mut loc = None;
        for seg in path {
            let props = child(node, "properties")?;
            let NodeKind::Map(entries) = &props.kind else { return None };
            let (_, k, v) = resolve_merges(entries).into_iter().find(|(k, _, _)| k == seg.as_str())?;
            loc = Some(k.loc);
            node = v;
        }
        loc
    }

    fn scalar_in(&self, node: &Node, text: &str, skip_steps: bool) -> Option<Loc> {
        match &node.kind {
            NodeKind::Str(s) if s == text => Some(node.loc),
            NodeKind::Seq(items) => items.iter().find_map(|i| self.scalar_in_nested(i, text, skip_steps)),
            NodeKind::Map(entries) => entries.iter().find_map(|(_, v)| self.scalar_in_nested(v, text, skip_steps)),
            _ => None,
        }
    }

    fn scalar_in_nested(&self, node: &Node, text: &str, skip_steps: bool) -> Option<Loc> {
        if skip_steps && self.is_step(node) {
            return None;
        }
        self.scalar_in(node, text, skip_steps)
    }

    fn is_step(&self, node: &Node) -> bool {
        child(node, "name").is_some_and(|n| self.step_names.contains(&n.loc))
    }

    /// The position of `read` (a read of the template written at `scalar`) in the file.
    pub fn refine(&self, scalar: Loc, read: &VarRead) -> Loc {
        let Some(first) = scalar.line.checked_sub(1).and_then(|i| self.lines.get(i)) else { return scalar };
        // A block scalar (`|`, `>`) starts on the line after its indicator.
        let at: String = first.chars().skip(scalar.col.saturating_sub(1)).collect();
        let block = at.starts_with('|') || at.starts_with('>');
        let line = if block { scalar.line + read.line } else { scalar.line + read.line - 1 };
        let Some(text) = line.checked_sub(1).and_then(|i| self.lines.get(i)) else { return scalar };
        // On the scalar's own line, search from the scalar on.
        let from = if line == scalar.line { scalar.col.saturating_sub(1) } else { 0 };
        let chars: Vec<char> = text.chars().collect();
        let needle: Vec<char> = read.text.chars().collect();
        if !needle.is_empty() && from <= chars.len() {
            if let Some(pos) = chars[from..].windows(needle.len()).position(|w| w == needle.as_slice()) {
                return Loc { line, col: from + pos + 1 };
            }
        }
        if line == scalar.line {
            scalar
        } else {
            Loc { line, col: text.chars().take_while(|c| c.is_whitespace()).count() + 1 }
        }
    }
}

/// The value of `key` in a mapping node.
fn child<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    let NodeKind::Map(entries) = &node.kind else { return None };
    resolve_merges(entries).into_iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v)
}

fn collect_names(steps: &[RawStep], out: &mut HashSet<Loc>) {
    for s in steps {
        out.insert(s.name.loc);
        for seq in s.child_sequences() {
            collect_names(seq, out);
        }
        for c in s.single_children() {
            collect_names(std::slice::from_ref(c), out);
        }
    }
}

fn index_steps<'n>(node: &'n Node, names: &HashSet<Loc>, out: &mut HashMap<Loc, &'n Node>, depth: usize) {
    if depth > crate::MAX_YAML_DEPTH {
        return;
    }
    match &node.kind {
        NodeKind::Map(entries) => {
            if let Some(name) = child(node, "name").filter(|n| names.contains(&n.loc)) {
                out.entry(name.loc).or_insert(node);
            }
            for (_, v) in entries {
                index_steps(v, names, out, depth + 1);
            }
        }
        NodeKind::Seq(items) => items.iter().for_each(|i| index_steps(i, names, out, depth + 1)),
        _ => {}
    }
}
