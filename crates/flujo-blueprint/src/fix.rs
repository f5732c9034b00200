//! `flujo validate --fix`: the mechanical repairs of a blueprint, as line-local text edits that keep comments,
//! quoting and layout everywhere else.
//!
//! Fixers, each under the rule id it answers to (`--fix-rules` filters on these):
//! * `BP-FIELD-TYPO` — a misspelt key renamed to the field it is a near miss of (`agnt:` → `agent:`).
//! * `V-T1` — `previous_step.output` → `previous_step`.
//! * `V-T3` — an unknown filter replaced by the known one it is a near miss of (`| lenght` → `| length`), and
//!   the original's common spellings (`to_json`, `jsonify` → `tojson`, `uppercase` → `upper`, …).
//! * `FORM-LEGACY-STEP` — the original's legacy `- step: NAME` spelled `- name: NAME`.
//! * `FORM-STEPS-MAPPING` — a sub-pipeline written `{steps: [...]}` (block style) becomes the list itself.
//! * `FORM-SINGLE-STEP` — a sub-pipeline written as one step mapping becomes a list of that one step.
//!
//! Only the root file is edited (imported files are reported, not changed). Every edit checks that the text it
//! replaces is still what the plan saw, so a stale plan changes nothing.

use std::path::Path;

use crate::diagnostic::Diagnostic;
use crate::rules;
use crate::yaml::{self, Node, NodeKind};

/// One kind of repair and its edits in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// The rule id the fix answers to (`V-T1`, `BP-FIELD-TYPO`, `FORM-…`).
    pub rule: &'static str,
    pub title: &'static str,
    pub edits: Vec<Edit>,
}

/// A line-local edit. Lines and columns are 1-based; columns count characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace `old` at `line:col` with `new`.
    Replace { line: usize, col: usize, old: String, new: String },
    /// Delete a line whose trimmed text starts with `starts`.
    DeleteLine { line: usize, starts: String },
    /// Turn the block mapping starting at `line:col` into a one-item block sequence: `- ` before its first key,
    /// two more spaces of indentation on each of its following lines.
    BlockToItem { line: usize, col: usize },
    /// Wrap the flow mapping `{…}` starting at `line:col` (and ending on the same line) in `[…]`.
    WrapFlow { line: usize, col: usize },
}

impl Edit {
    fn line(&self) -> usize {
        match self {
            Edit::Replace { line, .. }
            | Edit::DeleteLine { line, .. }
            | Edit::BlockToItem { line, .. }
            | Edit::WrapFlow { line, .. } => *line,
        }
    }

    fn col(&self) -> usize {
        match self {
            Edit::Replace { col, .. } | Edit::BlockToItem { col, .. } | Edit::WrapFlow { col, .. } => *col,
            Edit::DeleteLine { .. } => 0,
        }
    }
}

/// The fixes of the blueprint `text` (the root file `file`), given its diagnostics.
pub fn plan_fixes(text: &str, file: &Path, diags: &[Diagnostic]) -> Vec<Fix> {
    let mut typo = Vec::new();
    let mut t1 = Vec::new();
    let mut t3 = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for d in diags.iter().filter(|d| d.file == file && d.line > 0) {
        match d.rule.as_str() {
            rules::BP_FIELD_TYPO => {
                if let (Some(old), Some(new)) =
                    (quoted(&d.message, 0), d.suggestion.as_deref().and_then(|s| quoted(s, 0)))
                {
                    if text_at(&lines, d.line, d.column).is_some_and(|t| t.starts_with(&old)) {
                        typo.push(Edit::Replace { line: d.line, col: d.column, old, new });
                    }
                }
            }
            rules::V_T1 => {
                t1.extend(occurrences(&lines, d.line, d.column, "previous_step.output").map(|col| Edit::Replace {
                    line: d.line,
                    col,
                    old: "previous_step.output".to_owned(),
                    new: "previous_step".to_owned(),
                }))
            }
            rules::V_T3 => {
                let Some(bad) = d.message.rsplit('`').nth(1).map(str::to_owned) else { continue };
                let good = common_filter_typo(&bad).map(str::to_owned).or_else(|| {
                    d.suggestion.as_deref().filter(|s| s.starts_with("did you mean")).and_then(|s| quoted(s, 0))
                });
                let Some(good) = good else { continue };
                for col in filter_uses(&lines, d.line, &bad) {
                    t3.push(Edit::Replace { line: d.line, col, old: bad.clone(), new: good.clone() });
                }
            }
            _ => {}
        }
    }
    let mut fixes = Vec::new();
    let mut push = |rule, title, mut edits: Vec<Edit>| {
        edits.sort_by_key(|e| (e.line(), e.col()));
        edits.dedup();
        if !edits.is_empty() {
            fixes.push(Fix { rule, title, edits });
        }
    };
    push(rules::BP_FIELD_TYPO, "rename misspelt keys", typo);
    push(rules::V_T1, "previous_step.output → previous_step", t1);
    push(rules::V_T3, "fix misspelt template filters", t3);
    if let Ok(root) = yaml::parse(text) {
        let mut forms = Forms::default();
        forms.walk(&root, &lines, false, "");
        push(FORM_LEGACY_STEP, "`- step: NAME` → `- name: NAME`", forms.legacy);
        push(FORM_STEPS_MAPPING, "sub-pipelines `{steps: [...]}` → the list of steps", forms.steps_mappings);
        push(FORM_SINGLE_STEP, "a single step mapping → a list of one step", forms.single);
    }
    fixes
}

pub const FORM_LEGACY_STEP: &str = "FORM-LEGACY-STEP";
pub const FORM_STEPS_MAPPING: &str = "FORM-STEPS-MAPPING";
pub const FORM_SINGLE_STEP: &str = "FORM-SINGLE-STEP";

/// Applies `fixes` to `text`. Returns the new text and the number of edits applied (an edit whose text no
/// longer matches is skipped).
pub fn apply_fixes(text: &str, fixes: &[Fix]) -> (String, usize) {
    let ends_with_newline = text.ends_with('\n');
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut edits: Vec<&Edit> = fixes.iter().flat_map(|f| &f.edits).collect();
    // Bottom-up, right to left: every edit only touches its own line and the lines below it.
    edits.sort_by_key(|e| std::cmp::Reverse((e.line(), e.col())));
    let mut applied = 0;
    for e in edits {
        let Some(idx) = e.line().checked_sub(1).filter(|i| *i < lines.len()) else { continue };
        let ok = match e {
            Edit::Replace { col, old, new, .. } => {
                let line = &lines[idx];
                let at = char_to_byte(line, *col);
                match at {
                    Some(b) if line[b..].starts_with(old.as_str()) => {
                        lines[idx] = format!("{}{}{}", &line[..b], new, &line[b + old.len()..]);
                        true
                    }
                    _ => false,
                }
            }
            Edit::DeleteLine { starts, .. } => {
                if lines[idx].trim_start().starts_with(starts.as_str()) {
                    lines.remove(idx);
                    true
                } else {
                    false
                }
            }
            Edit::BlockToItem { col, .. } => match char_to_byte(&lines[idx], *col) {
                Some(b) => {
                    let indent = col - 1;
                    lines[idx].insert_str(b, "- ");
                    for l in lines.iter_mut().skip(idx + 1) {
                        let blank = l.trim().is_empty() || l.trim_start().starts_with('#');
                        if !blank && leading_spaces(l) < indent {
                            break;
                        }
                        if !l.is_empty() {
                            l.insert_str(0, "  ");
                        }
                    }
                    true
                }
                None => false,
            },
            Edit::WrapFlow { col, .. } => {
                let line = &lines[idx];
                match (char_to_byte(line, *col), char_to_byte(line, *col).and_then(|b| flow_end(&line[b..]))) {
                    (Some(b), Some(len)) if line[b..].starts_with('{') => {
                        lines[idx] = format!("{}[{}]{}", &line[..b], &line[b..b + len], &line[b + len..]);
                        true
                    }
                    _ => false,
                }
            }
        };
        applied += usize::from(ok);
    }
    let mut out = lines.join("\n");
    if ends_with_newline {
        out.push('\n');
    }
    (out, applied)
}

/// `flujo dev compile-yaml`: the blueprint as plain YAML — anchors, aliases and merge keys expanded, comments
/// dropped — with, when `normalize`, the original's alternative forms rewritten as this project writes them
/// (the `FORM-*` fixes: sub-pipelines as lists, `name:` for the legacy `step:`).
pub fn compile_yaml(text: &str, file: &Path, normalize: bool) -> Result<String, String> {
    let text = if normalize {
        let fixes: Vec<Fix> = plan_fixes(text, file, &[]).into_iter().filter(|f| f.rule.starts_with("FORM-")).collect();
        apply_fixes(text, &fixes).0
    } else {
        text.to_owned()
    };
    let json = yaml::yaml_to_json(&text)?;
    let mut out = serde_saphyr::to_string(&json).map_err(|e| format!("cannot write the YAML: {e}"))?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// A unified-style diff of two texts (whole-line changes, with line numbers), for `--fix-dry-run`.
pub fn diff_lines(file: &str, before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    // Longest common subsequence over lines (blueprints are small; bounded by the 4 MiB file limit anyway).
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > 25_000_000 {
        return format!("--- {file}\n+++ {file} (fixed)\n(too large to show)\n");
    }
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut out = format!("--- {file}\n+++ {file} (fixed)\n");
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("-{:>5} | {}\n", i + 1, a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{:>5} | {}\n", j + 1, b[j]));
            j += 1;
        }
    }
    out
}

/// The original's fixer map of common filter spellings.
fn common_filter_typo(bad: &str) -> Option<&'static str> {
    Some(match bad {
        "to_json" | "to-json" | "toJson" | "jsonify" => "tojson",
        "lowercase" => "lower",
        "uppercase" => "upper",
        "len" => "length",
        "joiner" => "join",
        _ => return None,
    })
}

/// The `n`th backquoted word of a message.
fn quoted(text: &str, n: usize) -> Option<String> {
    text.split('`').nth(2 * n + 1).map(str::to_owned).filter(|s| !s.is_empty())
}

fn char_to_byte(line: &str, col: usize) -> Option<usize> {
    let c = col.checked_sub(1)?;
    if c == line.chars().count() {
        return Some(line.len());
    }
    line.char_indices().nth(c).map(|(b, _)| b)
}

fn text_at<'l>(lines: &[&'l str], line: usize, col: usize) -> Option<&'l str> {
    let l = lines.get(line.checked_sub(1)?)?;
    char_to_byte(l, col).map(|b| &l[b..])
}

fn leading_spaces(l: &str) -> usize {
    l.chars().take_while(|c| *c == ' ').count()
}

/// The columns of `needle` on `line` at or after `col`, outside of a following identifier.
fn occurrences<'a>(lines: &'a [&'a str], line: usize, col: usize, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    let text = text_at(lines, line, col).unwrap_or("");
    let start_chars = col.saturating_sub(1);
    text.match_indices(needle)
        .filter(move |(b, _)| {
            !text[b + needle.len()..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(move |(b, _)| start_chars + text[..b].chars().count() + 1)
}

/// The columns of the filter name `bad` after a `|` on `line`.
fn filter_uses(lines: &[&str], line: usize, bad: &str) -> Vec<usize> {
    let Some(text) = line.checked_sub(1).and_then(|i| lines.get(i)) else { return Vec::new() };
    let mut out = Vec::new();
    for (b, _) in text.match_indices(bad) {
        let before = text[..b].trim_end();
        let after = text[b + bad.len()..].chars().next();
        if before.ends_with('|') && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(text[..b].chars().count() + 1);
        }
    }
    out
}

/// The byte length of the flow collection starting at the start of `s` (`{…}`), if it ends on this line.
fn flow_end(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '{' | '[' => depth += 1,
                '}' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

#[derive(Default)]
struct Forms {
    legacy: Vec<Edit>,
    steps_mappings: Vec<Edit>,
    single: Vec<Edit>,
}

/// Keys beside which `body` is a loop's or map's body.
const LOOP_KEYS: &[&str] =
    &["max_loops", "max_iterations", "exit_expression", "exit_condition", "iterable_input", "iteration_input"];

impl Forms {
    /// `pipeline`: `node` sits where a sub-pipeline is expected; `parent`: the key `node` is the value of.
    fn walk(&mut self, node: &Node, lines: &[&str], pipeline: bool, parent: &str) {
        match &node.kind {
            NodeKind::Seq(items) => {
                for item in items {
                    if pipeline {
                        self.step_item(item);
                    }
                    self.walk(item, lines, false, "");
                }
            }
            NodeKind::Map(entries) => {
                if pipeline && parent != "steps" {
                    self.pipeline_mapping(node, entries, lines);
                }
                let has = |key: &str| entries.iter().any(|(k, _)| k.as_str() == Some(key));
                let looping = matches!(parent, "loop" | "map") || LOOP_KEYS.iter().any(|k| has(k));
                for (k, v) in entries {
                    let key = k.as_str().unwrap_or("");
                    let named = match key {
                        "branches" => true,
                        // A custom kind's named child sequences.
                        "children" => has("kind"),
                        "states" => has("start_state") || has("transitions") || has("end_states"),
                        _ => false,
                    };
                    let one = match key {
                        "steps" => true,
                        "body" => looping,
                        "default_branch" => has("branches"),
                        _ => false,
                    };
                    if named {
                        if let NodeKind::Map(named) = &v.kind {
                            for (_, p) in named {
                                self.walk(p, lines, true, "");
                            }
                            continue;
                        }
                    }
                    self.walk(v, lines, one, key);
                }
            }
            _ => {}
        }
    }

    /// A step in a list: `step: NAME` without `name`.
    fn step_item(&mut self, item: &Node) {
        let NodeKind::Map(entries) = &item.kind else { return };
        let has = |key: &str| entries.iter().any(|(k, _)| k.as_str() == Some(key));
        if has("name") {
            return;
        }
        if let Some((k, v)) = entries.iter().find(|(k, _)| k.as_str() == Some("step")) {
            if v.as_str().is_some() && !k.merged {
                self.legacy.push(Edit::Replace {
                    line: k.loc.line,
                    col: k.loc.col,
                    old: "step".to_owned(),
                    new: "name".to_owned(),
                });
            }
        }
    }

    /// A sub-pipeline given as a mapping: `{steps: [...]}` or one step.
    fn pipeline_mapping(&mut self, node: &Node, entries: &[(Node, Node)], lines: &[&str]) {
        let flow = text_at(lines, node.loc.line, node.loc.col).is_some_and(|t| t.starts_with('{'));
        if let Some((k, v)) = entries.iter().find(|(k, _)| k.as_str() == Some("steps")) {
            // Block style only, with `steps:` alone on its line followed by a block list; `name:` /
            // `description:` beside it (documentation in the original) must be one-line scalars to be dropped.
            let key_alone = text_at(lines, k.loc.line, k.loc.col).is_some_and(|t| {
                let rest = t.trim_start_matches("steps").trim_start();
                rest.starts_with(':') && rest[1..].trim().split('#').next().is_some_and(|r| r.trim().is_empty())
            });
            if flow || !key_alone || !matches!(v.kind, NodeKind::Seq(_)) || v.loc.line <= k.loc.line {
                return;
            }
            let mut edits = vec![Edit::DeleteLine { line: k.loc.line, starts: "steps".to_owned() }];
            for (dk, dv) in entries.iter().filter(|(dk, _)| dk.as_str() != Some("steps")) {
                let doc = matches!(dk.as_str(), Some("name" | "description"));
                let one_line = dv.loc.line == dk.loc.line
                    && matches!(dv.kind, NodeKind::Str(_) | NodeKind::Null)
                    && !text_at(lines, dv.loc.line, dv.loc.col)
                        .is_some_and(|t| t.starts_with('|') || t.starts_with('>'))
                    && entries.iter().all(|(o, _)| o.loc.line != dk.loc.line || std::ptr::eq(o, dk));
                let next_line_is_key = lines
                    .get(dk.loc.line)
                    .is_none_or(|l| l.trim().is_empty() || leading_spaces(l) <= dk.loc.col.saturating_sub(1));
                if !(doc && one_line && next_line_is_key) {
                    return;
                }
                edits.push(Edit::DeleteLine { line: dk.loc.line, starts: dk.as_str().unwrap_or("").to_owned() });
            }
            self.steps_mappings.extend(edits);
        } else if flow {
            self.single.push(Edit::WrapFlow { line: node.loc.line, col: node.loc.col });
        } else if let Some((first, _)) = entries.first() {
            self.single.push(Edit::BlockToItem { line: first.loc.line, col: first.loc.col });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix_all(text: &str) -> String {
        let fixes = plan_fixes(text, Path::new("p.yaml"), &[]);
        apply_fixes(text, &fixes).0
    }

    #[test]
    fn mapping_forms_become_lists() {
        let text = "steps:\n  - kind: parallel\n    name: p\n    branches:\n      a:\n        name: doc\n        steps:\n          - name: a1\n      b:\n        name: b1\n        agent: x\n      c: {name: c1}\n  - step: legacy\n";
        let fixed = fix_all(text);
        assert_eq!(
            fixed,
            "steps:\n  - kind: parallel\n    name: p\n    branches:\n      a:\n          - name: a1\n      b:\n        - name: b1\n          agent: x\n      c: [{name: c1}]\n  - name: legacy\n"
        );
        // Fixed text has nothing left to fix.
        assert!(plan_fixes(&fixed, Path::new("p.yaml"), &[]).is_empty());
    }

    #[test]
    fn custom_kind_children_are_normalized_too() {
        let text = "steps:\n  - kind: twice\n    name: t\n    children:\n      body: {name: inc}\n";
        assert_eq!(fix_all(text), "steps:\n  - kind: twice\n    name: t\n    children:\n      body: [{name: inc}]\n");
    }

    #[test]
    fn a_multi_line_description_is_left_alone() {
        let text = "steps:\n  - kind: loop\n    name: l\n    loop:\n      body:\n        description: |\n          two\n          lines\n        steps:\n          - name: b\n";
        assert_eq!(fix_all(text), text);
    }

    #[test]
    fn stale_edits_change_nothing() {
        let fixes = vec![Fix {
            rule: "V-T1",
            title: "t",
            edits: vec![Edit::Replace { line: 1, col: 1, old: "zzz".into(), new: "y".into() }],
        }];
        assert_eq!(apply_fixes("abc\n", &fixes), ("abc\n".to_owned(), 0));
    }
}
