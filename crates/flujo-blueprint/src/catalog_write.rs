//! Writing generated entries into a `skills.yaml` (`flujo dev import-openapi`) without disturbing the rest.
//!
//! [`merge_entries`] takes the catalog's current text, drops the entries a predicate says were generated
//! earlier (by the same generator from the same source), and puts the new entries in their place — or at the
//! end of the catalog the first time. Everything else is kept *as written*: the file is edited by lines, so
//! hand-written entries, comments, anchors and the catalog's form (`skills:` mapping or the original's
//! top-level mapping) survive byte for byte. A new entry whose id a hand-written entry already has is not
//! written (the hand-written one wins; the caller is told).
//!
//! Line editing needs block-style YAML. When the catalog is JSON, written in flow style (`skills: {…}`), or
//! the edit would change what a kept entry means (it used an anchor defined in a dropped entry), the whole
//! catalog is emitted again from its parsed values instead: same entries, comments lost ([`Merged::rewritten`]).
//! Either way the result is parsed again and checked: every kept entry has its old value and every new one
//! the given value.

use std::path::Path;

use serde_json::{Map, Value};

use crate::yaml::{self, Node, NodeKind};

/// A generated entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// The skill id.
    pub id: String,
    /// The entry (a JSON object).
    pub value: Value,
    /// Comment lines written inside the entry, above its fields.
    pub comments: Vec<String>,
}

/// The outcome of [`merge_entries`].
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The new catalog text.
    pub text: String,
    /// Ids of dropped entries (generated earlier), whether or not they were written again.
    pub replaced: Vec<String>,
    /// Ids of the entries kept as they were.
    pub kept: Vec<String>,
    /// Ids of new entries not written because a kept entry has the id.
    pub skipped: Vec<String>,
    /// The catalog was emitted again from its values (comments and formatting of kept entries lost).
    pub rewritten: bool,
}

const HEADER: &str =
    "# Flujo skills (SPEC §7). Entries marked `x-generated-by: flujo import-openapi` are rewritten by\n\
                      # `flujo dev import-openapi`; entries written by hand are kept as they are.\n";

/// The entries of a parsed catalog: their mapping, the indentation of their keys (`None` for a flow mapping)
/// and whether they sit under `skills:`.
struct Layout<'n> {
    entries: Vec<(String, &'n Node, &'n Node)>,
    /// The `skills:` key, when the catalog has that form.
    skills_key: Option<&'n Node>,
    /// The top-level key after `skills:` (its line ends the catalog's entries).
    next_top_key: Option<&'n Node>,
    /// Every key of the mapping holding the entries (entries or not, e.g. a top-level `version`): an entry
    /// ends where the next one starts.
    keys: Vec<&'n Node>,
}

fn layout(node: &Node) -> Result<Layout<'_>, String> {
    match &node.kind {
        NodeKind::Null => Ok(Layout { entries: Vec::new(), skills_key: None, next_top_key: None, keys: Vec::new() }),
        NodeKind::Map(top) => {
            let skills = top.iter().position(|(k, _)| k.as_str() == Some("skills"));
            match skills {
                Some(i) => {
                    let (key, value) = &top[i];
                    let (entries, keys) = match &value.kind {
                        NodeKind::Null => (Vec::new(), Vec::new()),
                        NodeKind::Map(e) => (entries_of(e, false), e.iter().map(|(k, _)| k).collect()),
                        _ => return Err("`skills` must be a mapping of skill ids to entries".to_owned()),
                    };
                    let next_top_key = top.get(i + 1).map(|(k, _)| k);
                    Ok(Layout { entries, skills_key: Some(key), next_top_key, keys })
                }
                None => Ok(Layout {
                    entries: entries_of(top, true),
                    skills_key: None,
                    next_top_key: None,
                    keys: top.iter().map(|(k, _)| k).collect(),
                }),
            }
        }
        _ => Err("a skills catalog must be a mapping".to_owned()),
    }
}

fn entries_of(map: &[(Node, Node)], top_level: bool) -> Vec<(String, &Node, &Node)> {
    map.iter()
        .filter_map(|(k, v)| Some((k.key_string()?, k, v)))
        // the original's form: a scalar `version` is not a skill
        .filter(|(k, _, v)| !(top_level && k == "version" && !matches!(v.kind, NodeKind::Map(_))))
        .collect()
}

/// The catalog's skills as JSON, by id, in order.
fn values_of(text: &str) -> Result<Vec<(String, Value)>, String> {
    let node = parse(text)?;
    let l = layout(&node)?;
    Ok(l.entries.iter().map(|(id, _, v)| (id.clone(), v.to_json())).collect())
}

fn parse(text: &str) -> Result<Node, String> {
    yaml::with_parser_stack(|| Some(yaml::parse(text)))
        .unwrap_or_else(|| {
            Err(yaml::ParseError { rule: "", message: "the parser did not run".into(), loc: Default::default() })
        })
        .map_err(|e| format!("{} (line {}, column {})", e.message, e.loc.line, e.loc.col))
}

/// Merges `entries` into the catalog `existing` (`None`: a new file) written to `file` (a `.json` file is
/// written as JSON). Entries of `existing` for which `replaces` is true are dropped.
///
/// Fails when `existing` is not a skills catalog (it does not parse, or is not a mapping); the caller must not
/// overwrite it then.
pub fn merge_entries(
    existing: Option<&str>,
    file: &Path,
    entries: &[NewEntry],
    replaces: impl Fn(&Value) -> bool,
) -> Result<Merged, String> {
    let json_file = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let old: Vec<(String, Value)> = match existing {
        Some(text) => values_of(text)?,
        None => Vec::new(),
    };
    let replaced: Vec<String> = old.iter().filter(|(_, v)| replaces(v)).map(|(id, _)| id.clone()).collect();
    let kept: Vec<String> = old.iter().filter(|(_, v)| !replaces(v)).map(|(id, _)| id.clone()).collect();
    let skipped: Vec<String> = entries.iter().filter(|e| kept.contains(&e.id)).map(|e| e.id.clone()).collect();
    let written: Vec<&NewEntry> = entries.iter().filter(|e| !kept.contains(&e.id)).collect();
    let mut merged = Merged { text: String::new(), replaced, kept, skipped, rewritten: false };

    let by_lines = match existing {
        _ if json_file => None,
        None => Some(format!("{HEADER}skills:\n{}", block(&written, 2))),
        Some(text) => edit_lines(text, &written, &replaces),
    };
    if let Some(text) = by_lines {
        if check(&text, &old, &replaces, &written).is_ok() {
            merged.text = text;
            return Ok(merged);
        }
    }
    // emitted again from the values
    let mut all: Vec<(String, Value)> = Vec::new();
    let mut placed = false;
    for (id, v) in &old {
        if replaces(v) {
            if !placed {
                all.extend(written.iter().map(|e| (e.id.clone(), e.value.clone())));
                placed = true;
            }
        } else {
            all.push((id.clone(), v.clone()));
        }
    }
    if !placed {
        all.extend(written.iter().map(|e| (e.id.clone(), e.value.clone())));
    }
    merged.rewritten = existing.is_some();
    merged.text = if json_file {
        let skills: Map<String, Value> = all.into_iter().collect();
        let mut out = serde_json::to_string_pretty(&serde_json::json!({ "skills": skills }))
            .map_err(|e| format!("cannot encode the catalog: {e}"))?;
        out.push('\n');
        out
    } else {
        let mut out = format!("{HEADER}skills:\n");
        for (id, v) in &all {
            let comments = written.iter().find(|e| &e.id == id).map(|e| e.comments.as_slice()).unwrap_or_default();
            out.push_str(&entry_yaml(id, v, comments, 2));
        }
        out
    };
    check(&merged.text, &old, &replaces, &written)
        .map_err(|e| format!("the merged catalog does not read back as written ({e}); nothing was written"))?;
    Ok(merged)
}

/// The merged text reads back with every kept entry unchanged and every written one as given, nothing else.
fn check(
    text: &str,
    old: &[(String, Value)],
    replaces: &impl Fn(&Value) -> bool,
    written: &[&NewEntry],
) -> Result<(), String> {
    let now = values_of(text)?;
    let mut expected: Vec<(&str, &Value)> =
        old.iter().filter(|(_, v)| !replaces(v)).map(|(id, v)| (id.as_str(), v)).collect();
    expected.extend(written.iter().map(|e| (e.id.as_str(), &e.value)));
    if now.len() != expected.len() {
        return Err(format!("{} entries instead of {}", now.len(), expected.len()));
    }
    for (id, v) in expected {
        match now.iter().find(|(i, _)| i == id) {
            Some((_, got)) if got == v => {}
            Some(_) => return Err(format!("entry `{id}` changed")),
            None => return Err(format!("entry `{id}` is missing")),
        }
    }
    Ok(())
}

/// Edits the catalog by lines; `None` when it is not block-style YAML.
fn edit_lines(text: &str, written: &[&NewEntry], replaces: &impl Fn(&Value) -> bool) -> Option<String> {
    let node = parse(text).ok()?;
    let l = layout(&node).ok()?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let starts_line = |n: &Node| {
        let line = lines.get(n.loc.line.checked_sub(1)?)?;
        let before: String = line.chars().take(n.loc.col.saturating_sub(1)).collect();
        before.chars().all(|c| c == ' ').then_some(n.loc.col - 1)
    };
    // every entry key starts its line, at one indentation
    let mut indent = None;
    for (_, k, _) in &l.entries {
        let col = starts_line(k)?;
        if indent.is_some_and(|i| i != col) {
            return None;
        }
        indent = Some(col);
    }
    if let Some(k) = l.skills_key {
        starts_line(k)?;
        if !l.entries.is_empty() && indent == Some(0) {
            return None;
        }
    }
    let indent = indent.unwrap_or(if l.skills_key.is_some() { 2 } else { 0 });
    // where the entries end: the next top-level key, else the end of the file
    let block_end = l.next_top_key.map_or(lines.len(), |k| k.loc.line.saturating_sub(1)).min(lines.len());
    let is_tail = |line: &str| {
        let t = line.trim_start_matches(' ');
        t.trim().is_empty() || (t.starts_with('#') && line.len() - t.len() <= indent)
    };
    let mut ranges: Vec<(usize, usize, bool)> = Vec::new();
    for (_, k, v) in &l.entries {
        let start = k.loc.line.saturating_sub(1);
        let mut end = l
            .keys
            .iter()
            .map(|nk| nk.loc.line.saturating_sub(1))
            .filter(|&line| line > start)
            .min()
            .unwrap_or(block_end)
            .min(block_end);
        while end > start + 1 && lines.get(end - 1).is_some_and(|line| is_tail(line)) {
            end -= 1;
        }
        ranges.push((start, end, replaces(&v.to_json())));
    }
    let mut out = String::new();
    let new_block = block(written, indent);
    let mut inserted = written.is_empty();
    let mut i = 0;
    let insert_at_end = ranges.last().map(|r| r.1);
    while i < lines.len() {
        if let Some(&(start, end, drop)) = ranges.iter().find(|r| r.0 == i) {
            if drop {
                if !inserted {
                    out.push_str(&new_block);
                    inserted = true;
                }
                // the entry and the blank lines after it
                i = end;
                while lines.get(i).is_some_and(|l| l.trim().is_empty()) {
                    i += 1;
                }
                continue;
            }
            for line in &lines[start..end] {
                out.push_str(line);
            }
            i = end;
            if !inserted && insert_at_end == Some(end) && ranges.iter().all(|r| !r.2) {
                ensure_newline(&mut out);
                out.push_str(&new_block);
                inserted = true;
            }
            continue;
        }
        out.push_str(lines[i]);
        // an empty `skills:`: right after it
        if !inserted && ranges.is_empty() && l.skills_key.is_some_and(|k| k.loc.line == i + 1) {
            ensure_newline(&mut out);
            out.push_str(&new_block);
            inserted = true;
        }
        i += 1;
    }
    if !inserted {
        ensure_newline(&mut out);
        if l.skills_key.is_none()
            && l.entries.is_empty()
            && !text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            // a file of comments only
            out.push_str("skills:\n");
            out.push_str(&block(written, 2));
        } else {
            out.push_str(&new_block);
        }
    }
    Some(out)
}

fn ensure_newline(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// The YAML of `entries` at `indent`, each followed by a blank line.
fn block(entries: &[&NewEntry], indent: usize) -> String {
    entries.iter().map(|e| entry_yaml(&e.id, &e.value, &e.comments, indent)).collect()
}

/// One entry: `id:`, its comments, its fields, a blank line.
fn entry_yaml(id: &str, value: &Value, comments: &[String], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = format!("{pad}{}:", key(id));
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            for c in comments {
                for line in c.lines() {
                    out.push_str(&format!("{pad}  # {}\n", line.trim_end()));
                }
            }
            emit_map(map, indent + 2, &mut out);
        }
        other => {
            out.push(' ');
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

/// A value written on one line: a scalar, or an empty or short list of scalars.
fn inline(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) if m.is_empty() => Some("{}".to_owned()),
        Value::Object(_) => None,
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let s = flow(v);
            (s.len() <= 80).then_some(s)
        }
        Value::Array(_) => None,
        scalar => Some(flow(scalar)),
    }
}

fn flow(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(items) => format!("[{}]", items.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => {
            format!("{{{}}}", m.iter().map(|(k, v)| format!("{}: {}", key(k), flow(v))).collect::<Vec<_>>().join(", "))
        }
    }
}

fn emit_map(map: &Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (k, v) in map {
        match inline(v) {
            Some(s) => out.push_str(&format!("{pad}{}: {s}\n", key(k))),
            None => {
                out.push_str(&format!("{pad}{}:\n", key(k)));
                emit_nested(v, indent + 2, out);
            }
        }
    }
}

fn emit_nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) => emit_map(m, indent, out),
        Value::Array(items) => {
            let pad = " ".repeat(indent);
            for item in items {
                match inline(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        // the item's block with its first line after `- `
                        let mut inner = String::new();
                        emit_nested(item, indent + 2, &mut inner);
                        let inner_pad = " ".repeat(indent + 2);
                        out.push_str(&format!("{pad}- {}", inner.strip_prefix(&inner_pad).unwrap_or(&inner)));
                    }
                }
            }
        }
        scalar => out.push_str(&format!("{}{}\n", " ".repeat(indent), flow(scalar))),
    }
}

/// A mapping key: plain when that reads back as the same string.
fn key(k: &str) -> String {
    scalar(k)
}

/// A string scalar: plain when YAML reads it back as the same string, else double-quoted (JSON escapes are
/// valid YAML escapes).
fn scalar(s: &str) -> String {
    const RESERVED: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"];
    let plain = !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ' '))
        && !s.ends_with(' ')
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gen(id: &str, url: &str) -> NewEntry {
        NewEntry {
            id: id.into(),
            value: json!({
                "x-generated-by": "flujo import-openapi", "x-openapi-source": "api.json",
                "description": "Get: one pet", "side_effects": false,
                "http": {"method": "GET", "url": url, "headers": {"X-Key": "${API_KEY}"}},
                "input_schema": {"type": "object", "properties": {"id": {"type": ["integer", "null"]}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["id"], "additionalProperties": false},
                "list": [{"a": 1, "b": [1, 2]}, {"c": {"d": "yes"}}],
            }),
            comments: vec!["GET /pets/{id}".into(), "schema `Pet` is recursive".into()],
        }
    }

    fn ours(v: &Value) -> bool {
        v.get("x-generated-by").is_some() && v.get("x-openapi-source") == Some(&json!("api.json"))
    }

    const HAND: &str = "# my skills\nskills:\n  # the echo\n  acme.echo:\n    command: [cat]   # keep me\n    description: &d Echo.\n\n  acme.other: {command: [cat], description: *d}\n";

    #[test]
    fn new_files_and_merges_keep_hand_written_entries_byte_for_byte() {
        let m =
            merge_entries(None, Path::new("skills.yaml"), &[gen("a.get", "https://x/{{ input.id }}")], ours).unwrap();
        assert!(m.text.starts_with("# Flujo skills"), "{}", m.text);
        assert!(m.text.contains("    # GET /pets/{id}\n"), "{}", m.text);
        let values = values_of(&m.text).unwrap();
        assert_eq!(values[0].1, gen("a.get", "https://x/{{ input.id }}").value);

        // into a hand-written catalog: appended, the rest untouched
        let m = merge_entries(Some(HAND), Path::new("skills.yaml"), &[gen("a.get", "https://x/1")], ours).unwrap();
        assert!(!m.rewritten);
        assert!(m.text.starts_with(HAND), "{}", m.text);
        assert_eq!(m.kept, vec!["acme.echo", "acme.other"]);
        // again, with another entry: the generated one is replaced in place
        let m2 = merge_entries(
            Some(&m.text),
            Path::new("skills.yaml"),
            &[gen("a.get", "https://x/2"), gen("a.two", "https://x/3"), gen("acme.echo", "https://x/4")],
            ours,
        )
        .unwrap();
        assert!(m2.text.starts_with(HAND), "{}", m2.text);
        assert_eq!(m2.replaced, vec!["a.get"]);
        assert_eq!(m2.skipped, vec!["acme.echo"]);
        assert!(m2.text.contains("https://x/2") && !m2.text.contains("https://x/1"), "{}", m2.text);
        let ids: Vec<String> = values_of(&m2.text).unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec!["acme.echo", "acme.other", "a.get", "a.two"]);
        // running it again gives the same text
        let m3 = merge_entries(
            Some(&m2.text),
            Path::new("skills.yaml"),
            &[gen("a.get", "https://x/2"), gen("a.two", "https://x/3")],
            ours,
        )
        .unwrap();
        assert_eq!(m3.text, m2.text);

        // generated entries first, a hand-written one after them, and a top-level key after the catalog
        let text = format!(
            "version: \"0.1\"\nskills:\n{}  mine:\n    command: [cat]\nextra: 1\n",
            block(&[&gen("a.get", "u")], 2)
        );
        let m = merge_entries(Some(&text), Path::new("skills.yaml"), &[gen("a.get", "https://v")], ours).unwrap();
        assert!(!m.rewritten);
        assert!(m.text.ends_with("  mine:\n    command: [cat]\nextra: 1\n"), "{}", m.text);
        assert!(m.text.starts_with("version: \"0.1\"\nskills:\n  a.get:\n"), "{}", m.text);
    }

    #[test]
    fn the_originals_form_flow_style_and_json() {
        let text = "version: \"0.1\"\nacme.echo:\n  command: [cat]\n";
        let m = merge_entries(Some(text), Path::new("skills.yaml"), &[gen("a.get", "u")], ours).unwrap();
        assert!(m.text.starts_with(text) && m.text.contains("\na.get:\n  # GET /pets/{id}\n"), "{}", m.text);
        // a generated entry before the top-level `version`: the version stays
        let text = format!("{}version: \"0.1\"\n", block(&[&gen("a.get", "u")], 0));
        let m = merge_entries(Some(&text), Path::new("skills.yaml"), &[gen("a.get", "v")], ours).unwrap();
        assert!(!m.rewritten && m.text.ends_with("version: \"0.1\"\n"), "{}", m.text);
        let text = "skills: {acme.echo: {command: [cat]}}\n";
        let m = merge_entries(Some(text), Path::new("skills.yaml"), &[gen("a.get", "u")], ours).unwrap();
        assert!(m.rewritten);
        assert_eq!(values_of(&m.text).unwrap()[0], ("acme.echo".to_owned(), json!({"command": ["cat"]})));
        let m = merge_entries(Some("{\"skills\": {}}"), Path::new("skills.json"), &[gen("a.get", "u")], ours).unwrap();
        let v: Value = serde_json::from_str(&m.text).unwrap();
        assert_eq!(v["skills"]["a.get"], gen("a.get", "u").value);
        // empty `skills:` and comment-only files
        let m =
            merge_entries(Some("skills:\n# later\n"), Path::new("skills.yaml"), &[gen("a.get", "u")], ours).unwrap();
        assert!(m.text.starts_with("skills:\n  a.get:\n") && m.text.ends_with("# later\n"), "{}", m.text);
        let m = merge_entries(Some("# nothing yet\n"), Path::new("skills.yaml"), &[gen("a.get", "u")], ours).unwrap();
        assert!(m.text.starts_with("# nothing yet\nskills:\n  a.get:\n"), "{}", m.text);
        assert!(merge_entries(Some("skills: [1]\n"), Path::new("skills.yaml"), &[], ours).is_err());
        assert!(merge_entries(Some("a: [\n"), Path::new("skills.yaml"), &[], ours).is_err());
    }

    #[test]
    fn scalars_read_back() {
        for s in ["plain", "yes", "No", "1.5", "", "a: b", "#x", "{{ input.id }}", "${KEY}", "it's \"q\"\n", "-x", "x "]
        {
            let text = format!("k: {}\n", scalar(s));
            assert_eq!(crate::yaml_to_json(&text).unwrap()["k"], json!(s), "{text}");
        }
    }
}
