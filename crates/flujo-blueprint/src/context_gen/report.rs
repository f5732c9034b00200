//! The report: the generated schema and field list from the field tree, the warnings about reads nothing
//! writes and writes nothing reads, and the comparison with a declared `context_schema`.

use std::collections::HashSet;

use flujo_template::{dotted, PathSegment};
use serde_json::{json, Map, Value};

use super::types::{self, Lookup, Ty};
use super::walk::descend;
use super::{
    keys, Analysis, ContextField, ContextReport, Field, FieldSite, FileCtx, SchemaDiff, TypeMismatch, READ_UNWRITTEN,
    SCHEMA_MISSING, SCHEMA_TYPE, SCHEMA_UNUSED, WRITE_UNREAD,
};
use crate::check::schema_paths;
use crate::diagnostic::{Diagnostic, Severity};

fn warning(rule: &str, site: &FieldSite, message: String, suggestion: Option<String>) -> Diagnostic {
    let mut d = Diagnostic::new(rule, &site.file, site.line, site.column, message);
    d.severity = Severity::Warning;
    d.suggestion = suggestion;
    d
}

impl Analysis<'_> {
    pub(super) fn report(mut self, pipeline: &str, f: &FileCtx<'_>) -> ContextReport {
        let mut fields = Vec::new();
        let mut props = Map::new();
        for c in &self.root.children {
            if let Some(PathSegment::Key(k)) = &c.key {
                props.insert(k.clone(), field_schema(c, &mut Vec::new(), &mut fields));
            }
        }
        let schema = json!({"type": "object", "properties": props});
        let mut warnings = Vec::new();
        let declared_roots = crate::check::context_schema_roots(f.bp.context_schema.as_ref());
        self.read_warnings(&declared_roots, &mut warnings);
        if self.whole_reads.is_empty() {
            for c in &self.root.children {
                unread(c, &mut Vec::new(), false, &mut warnings);
            }
        } else {
            let s = &self.whole_reads[0];
            self.note(format!(
                "step `{}` ({}:{}) reads the whole context: every field counts as read",
                s.step, s.line, s.column
            ));
        }
        let declared = f.bp.context_schema.as_ref().map(|d| self.diff(d, f, &mut warnings));
        warnings.sort_by(|a, b| (&a.file, a.line, a.column, &a.rule).cmp(&(&b.file, b.line, b.column, &b.rule)));
        ContextReport {
            pipeline: pipeline.to_owned(),
            file: f.file.clone(),
            schema,
            fields,
            warnings,
            declared,
            notes: self.notes,
        }
    }

    /// `CTX-UNDECLARED-READ` / `CTX-READ-UNWRITTEN` for each path read that nothing writes.
    fn read_warnings(&self, declared_roots: &[String], out: &mut Vec<Diagnostic>) {
        let mut reads: Vec<(Vec<PathSegment>, &FieldSite)> = Vec::new();
        collect_reads(&self.root, &mut Vec::new(), &mut reads);
        let mut reported_roots: HashSet<String> = HashSet::new();
        for (path, site) in reads {
            if self.open.iter().any(|(base, _)| path.starts_with(base)) {
                continue;
            }
            let Some(PathSegment::Key(root)) = path.first() else { continue };
            let shown = format!("context.{}", dotted(&path));
            let root_node = self.root.get(&path[..1]);
            if !root_node.is_some_and(Field::has_writes) {
                if !reported_roots.insert(root.clone()) {
                    continue;
                }
                if declared_roots.contains(root) {
                    out.push(warning(
                        READ_UNWRITTEN,
                        site,
                        format!("step `{}` reads `{shown}`; `{root}` is declared in context_schema, but no step writes it", site.step),
                        Some(format!("give it when starting the run (`flujo run --context '{{\"{root}\": …}}'`), or write it in an earlier step")),
                    ));
                } else {
                    out.push(warning(
                        crate::rules::CTX_UNDECLARED_READ,
                        site,
                        format!("step `{}` reads `{shown}`, but no step writes `{root}` and `context_schema` does not declare it", site.step),
                        Some(format!("write it in an earlier step (`output_keys`, `sink_to`), declare it in `context_schema`, or pass it with `flujo run --context '{{\"{root}\": …}}'`")),
                    ));
                }
                continue;
            }
            if let Some(reason) = self.uncovered(&path) {
                out.push(warning(
                    READ_UNWRITTEN,
                    site,
                    format!("step `{}` reads `{shown}`, but no step writes it: {reason}", site.step),
                    None,
                ));
            }
        }
    }

    /// Why nothing written covers the read `path`, or `None` when something does.
    fn uncovered(&self, path: &[PathSegment]) -> Option<String> {
        if self.root.get(path).is_some_and(Field::has_writes) {
            return None;
        }
        let mut reason = None;
        for n in 1..path.len() {
            let Some(node) = self.root.get(&path[..n]) else { break };
            match node.written() {
                None => {}
                Some(None) => return None,
                Some(Some(ty)) => match types::lookup(&ty, &path[n..]) {
                    Lookup::Found => return None,
                    Lookup::Missing(why) => {
                        let by = node.writes.first().map(|(s, _)| s.step.as_str()).unwrap_or("?");
                        reason = Some(format!("`{}` is written by step `{by}` and {why}", dotted(&path[..n])));
                    }
                },
            }
        }
        Some(reason.unwrap_or_else(|| format!("nothing writes `{}` or a field containing it", dotted(path))))
    }

    /// Compares the declared `context_schema` with what the pipeline writes and reads.
    fn diff(&self, declared: &Value, f: &FileCtx<'_>, out: &mut Vec<Diagnostic>) -> SchemaDiff {
        let mut diff = SchemaDiff::default();
        // Missing: fields used here that the declared schema rules out.
        let mut stack: Vec<(Vec<PathSegment>, &Field)> =
            self.root.children.iter().rev().map(|c| (c.key.iter().cloned().collect(), c)).collect();
        while let Some((path, node)) = stack.pop() {
            if path.last() == Some(&PathSegment::Item) {
                continue;
            }
            if let Lookup::Missing(_) = types::lookup(declared, &path) {
                let site = node_site(node);
                diff.missing.push(dotted(&path));
                if let Some(site) = site {
                    out.push(warning(
                        SCHEMA_MISSING,
                        site,
                        format!(
                            "`context.{}` is {} here, but the blueprint's context_schema does not declare it",
                            dotted(&path),
                            if node.has_writes() { "written" } else { "read" }
                        ),
                        Some("add it to context_schema (see the generated schema)".to_owned()),
                    ));
                }
                continue;
            }
            if let (Some(Some(inferred)), Some(decl)) = (node.written(), declared_at(declared, &path)) {
                if types::disjoint(decl, &inferred) {
                    diff.type_mismatches.push(TypeMismatch {
                        path: dotted(&path),
                        declared: decl.clone(),
                        inferred: inferred.clone(),
                    });
                    let keys: Vec<String> = path
                        .iter()
                        .filter_map(|p| match p {
                            PathSegment::Key(k) => Some(k.clone()),
                            PathSegment::Item => None,
                        })
                        .collect();
                    let loc = f.loc.schema_property(&keys).unwrap_or_default();
                    let by = node.writes.first().map(|(s, _)| s.step.as_str()).unwrap_or("?");
                    let site = f.site(loc, "context_schema", "declared");
                    out.push(warning(
                        SCHEMA_TYPE,
                        &site,
                        format!(
                            "context_schema declares `{}` as {}, but step `{by}` writes {}",
                            dotted(&path),
                            types::describe(decl),
                            types::describe(&inferred)
                        ),
                        None,
                    ));
                }
            }
            for c in node.children.iter().rev() {
                let mut p = path.clone();
                p.extend(c.key.iter().cloned());
                stack.push((p, c));
            }
        }
        // Unused: declared fields nothing here writes or reads.
        if self.whole_reads.is_empty() {
            let mut paths = Vec::new();
            schema_paths(declared, &mut Vec::new(), &mut paths, 0);
            let mut reported: Vec<Vec<String>> = Vec::new();
            for p in paths {
                if reported.iter().any(|r| p.starts_with(r)) {
                    continue;
                }
                let segs = keys(&p);
                let used_below = self.root.get(&segs).is_some_and(|n| n.has_writes() || n.has_reads());
                let used_above = (1..segs.len())
                    .any(|n| self.root.get(&segs[..n]).is_some_and(|a| !a.writes.is_empty() || !a.reads.is_empty()));
                if used_below || used_above {
                    continue;
                }
                let loc = f.loc.schema_property(&p).unwrap_or_default();
                let site = f.site(loc, "context_schema", "declared");
                out.push(warning(
                    SCHEMA_UNUSED,
                    &site,
                    format!("context_schema declares `{}`, but no step writes or reads it", p.join(".")),
                    Some("remove it, or keep it for values given with `flujo run --context`".to_owned()),
                ));
                diff.unused.push(p.join("."));
                reported.push(p);
            }
        }
        diff
    }
}

/// The declared schema of a path, when the declaration lists it.
fn declared_at<'v>(schema: &'v Value, path: &[PathSegment]) -> Option<&'v Value> {
    let mut cur = schema;
    for seg in path {
        cur = match seg {
            PathSegment::Key(k) => cur.get("properties")?.get(k)?,
            PathSegment::Item => cur.get("items")?,
        };
    }
    Some(cur)
}

/// The first place a field (or one of its own fields) is written, else read.
fn node_site(node: &Field) -> Option<&FieldSite> {
    fn first_write(n: &Field) -> Option<&FieldSite> {
        n.writes.first().map(|(s, _)| s).or_else(|| n.children.iter().find_map(first_write))
    }
    fn first_read(n: &Field) -> Option<&FieldSite> {
        n.reads.first().map(|(s, _)| s).or_else(|| n.children.iter().find_map(first_read))
    }
    first_write(node).or_else(|| first_read(node))
}

/// Every distinct path read, with its first site, parents first.
fn collect_reads<'a>(node: &'a Field, path: &mut Vec<PathSegment>, out: &mut Vec<(Vec<PathSegment>, &'a FieldSite)>) {
    for c in &node.children {
        path.extend(c.key.iter().cloned());
        if let Some((site, _)) = c.reads.first() {
            out.push((path.clone(), site));
        }
        collect_reads(c, path, out);
        path.pop();
    }
}

/// `CTX-WRITE-UNREAD` for the fields written and never read (the topmost of them).
fn unread(node: &Field, path: &mut Vec<PathSegment>, read_above: bool, out: &mut Vec<Diagnostic>) {
    path.extend(node.key.iter().cloned());
    let read_here = read_above || !node.reads.is_empty();
    if !node.writes.is_empty() && !read_here && !node.has_reads() {
        let (site, _) = &node.writes[0];
        out.push(warning(
            WRITE_UNREAD,
            site,
            format!(
                "step `{}` writes `context.{}` ({}), but no template, expression or input key reads it",
                site.step,
                dotted(path),
                site.how
            ),
            Some("fine if the run's context is its result; otherwise the write can go".to_owned()),
        ));
    } else {
        for c in &node.children {
            unread(c, path, read_here, out);
        }
    }
    path.pop();
}

/// The generated schema of a field (and its fields), with the field list entries (parents first).
fn field_schema(node: &Field, path: &mut Vec<PathSegment>, fields: &mut Vec<ContextField>) -> Value {
    path.extend(node.key.iter().cloned());
    let written = node.written();
    let authoritative = matches!(written, Some(Some(_)));
    let mut schema = match &written {
        Some(Some(t)) => t.clone(),
        Some(None) => json!({}),
        None => types::from_uses(&node.reads.iter().map(|(_, u)| *u).collect::<Vec<_>>()),
    };
    let index = fields.len();
    fields.push(ContextField {
        path: dotted(path),
        schema: Value::Null,
        always_written: node.always,
        writes: node.writes.iter().map(|(s, _)| s.clone()).collect(),
        reads: node.reads.iter().map(|(s, _)| s.clone()).collect(),
    });
    for c in &node.children {
        // Below a field written with a known type, the type says what exists; reads are checked against it.
        if authoritative && !c.has_writes() {
            let below = c.key.as_ref().and_then(|k| descend(&schema, std::slice::from_ref(k)));
            list_read_only(c, path, below, fields);
            continue;
        }
        let sub = field_schema(c, path, fields);
        let is_item = c.key == Some(PathSegment::Item);
        let want = if is_item { "array" } else { "object" };
        let names = types::type_names(&schema);
        if !(names.is_empty() || names.contains(&want)) || schema.get("anyOf").is_some() {
            continue;
        }
        let Some(obj) = schema.as_object_mut() else { continue };
        obj.entry("type").or_insert_with(|| json!(want));
        match &c.key {
            Some(PathSegment::Item) => {
                let merged = match obj.get("items") {
                    Some(prev) if c.has_writes() && prev != &json!({}) => types::merge(prev, &sub),
                    Some(prev) if prev != &json!({}) => prev.clone(),
                    _ => sub,
                };
                obj.insert("items".into(), merged);
            }
            Some(PathSegment::Key(k)) => {
                let props = obj.entry("properties").or_insert_with(|| json!({}));
                if let Some(props) = props.as_object_mut() {
                    let merged = match props.get(k) {
                        Some(prev) => types::merge(prev, &sub),
                        None => sub,
                    };
                    props.insert(k.clone(), merged);
                }
            }
            None => {}
        }
    }
    if let (Some(obj), Some(text)) = (schema.as_object_mut(), description(node)) {
        obj.entry("description").or_insert(json!(text));
    }
    if let Some(entry) = fields.get_mut(index) {
        entry.schema = schema.clone();
    }
    path.pop();
    schema
}

/// Lists a field that is only read below a field written with a known type, with the type found there.
fn list_read_only(node: &Field, path: &mut Vec<PathSegment>, schema: Ty, fields: &mut Vec<ContextField>) {
    path.extend(node.key.iter().cloned());
    fields.push(ContextField {
        path: dotted(path),
        schema: schema.clone().unwrap_or_else(|| json!({})),
        always_written: false,
        writes: Vec::new(),
        reads: node.reads.iter().map(|(s, _)| s.clone()).collect(),
    });
    for c in &node.children {
        let below = match (&schema, &c.key) {
            (Some(t), Some(k)) => descend(t, std::slice::from_ref(k)),
            _ => None,
        };
        list_read_only(c, path, below, fields);
    }
    path.pop();
}

/// `Written by `a` (sink_to); read by `b`.`
fn description(node: &Field) -> Option<String> {
    let names = |sites: Vec<(&str, &str)>| -> String {
        let mut seen: Vec<String> = Vec::new();
        for (step, how) in sites {
            let s = if how.is_empty() { format!("`{step}`") } else { format!("`{step}` ({how})") };
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        seen.join(", ")
    };
    let mut parts = Vec::new();
    if !node.writes.is_empty() {
        parts.push(format!(
            "Written by {}",
            names(node.writes.iter().map(|(s, _)| (s.step.as_str(), s.how.as_str())).collect())
        ));
    }
    if !node.reads.is_empty() {
        let by = names(node.reads.iter().map(|(s, _)| (s.step.as_str(), "")).collect());
        parts.push(if parts.is_empty() { format!("Read by {by}") } else { format!("read by {by}") });
    }
    (!parts.is_empty()).then(|| parts.join("; ") + ".")
}
