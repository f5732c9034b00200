//! Static analysis of templates and expressions: the variable paths they read, from minijinja's syntax tree.
//!
//! [`template_reads`] and [`expression_reads`] translate the source as compiling does (Flujo helpers,
//! `steps.NAME.output`), parse it with minijinja's parser and walk the tree with the template's scopes:
//! names bound by `{% for %}`, `{% set %}`, `{% with %}`, macros and `{{#each}}` are local, and a local bound
//! to a path stands for that path (`{% for u in context.users %}{{ u.name }}` reads `context.users[].name`).
//! Each read is a top-level name with the chain of attribute lookups, constant subscripts and `.get('key')`
//! calls applied to it, the way the value is used when that says something about its type (iterated,
//! treated as text, as a number, as a mapping), and where it is written. Tooling (`flujo dev gen-context`)
//! uses it to list the context fields a blueprint reads; nothing here evaluates anything.

use std::collections::HashMap;

use minijinja::machinery::ast::{self, BinOpKind, CallArg, CompareOpKind, Expr, Stmt, UnaryOpKind};
use minijinja::machinery::WhitespaceConfig;
use minijinja::value::ValueKind;

use crate::error::{from_minijinja, TemplateError};
use crate::lexer;

/// One step of a read path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    /// An attribute or a constant string key: `.name`, `['name']`, `.get('name')`.
    Key(String),
    /// An item of a list (a number or a computed subscript, or the variable of a loop over it).
    Item,
}

/// How a read value is used, when that says something about its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadUse {
    /// Rendered, compared for equality, passed on: nothing is known.
    Value,
    /// Iterated by a `for` loop (or `{{#each}}`) or given to a filter over sequences (`join`, `first`, …).
    Iterated,
    /// Given to a string method (`startswith`, `strip`, …) or filter (`upper`, `trim`, …).
    Text,
    /// Used in arithmetic or compared with a number by order (`<`, `>=`).
    Number,
    /// Given to a mapping method (`items`, `keys`, `values`).
    Mapping,
}

/// A path a template or expression reads, e.g. `context.user.name`.
#[derive(Debug, Clone, PartialEq)]
pub struct VarRead {
    /// The top-level name: `context`, `previous_step`, `steps`, `this`, …
    pub root: String,
    /// The lookups applied to it, in order (empty when the whole value is read).
    pub path: Vec<PathSegment>,
    /// How the value at the end of the path is used.
    pub usage: ReadUse,
    /// The 1-based line of the read in the source.
    pub line: usize,
    /// The 1-based column of the read in its line (in characters; Flujo helpers such as `{{#each}}` shift
    /// the columns of what follows them on their line).
    pub col: usize,
    /// The text of the read as written (`context.user.name`, `context['plan']`).
    pub text: String,
}

impl VarRead {
    /// The path as dotted text, with `[]` for list items: `user.name`, `users[].name`.
    pub fn dotted(&self) -> String {
        dotted(&self.path)
    }
}

/// `a.b[].c` for a path.
pub fn dotted(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSegment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSegment::Item => out.push_str("[]"),
        }
    }
    out
}

/// Every variable path a template reads (see the module docs), in source order.
pub fn template_reads(src: &str) -> Result<Vec<VarRead>, TemplateError> {
    if !lexer::has_jinja_syntax(src) {
        return Ok(Vec::new());
    }
    let translated = lexer::translate(src)?;
    let parsed =
        minijinja::machinery::parse(&translated.source, "<template>", Default::default(), WhitespaceConfig::default())
            .map_err(|e| from_minijinja(&e))?;
    let mut w = Walker::new(&translated.source);
    w.stmt(&parsed);
    Ok(w.out)
}

/// Every variable path an expression reads (a source that is a single `{{ expr }}` is read as `expr`, as
/// [`crate::compile_expression`] does).
pub fn expression_reads(src: &str) -> Result<Vec<VarRead>, TemplateError> {
    let wrapped =
        if src.trim_start().starts_with("{{") { lexer::translate(src).ok().and_then(|t| t.single_expr) } else { None };
    let code = wrapped.unwrap_or_else(|| lexer::rewrite_code(src));
    let expr = minijinja::machinery::parse_expr(&code).map_err(|e| match from_minijinja(&e) {
        syntax @ TemplateError::Syntax { .. } => syntax,
        other => TemplateError::syntax(other.to_string(), e.line()),
    })?;
    let mut w = Walker::new(&code);
    w.expr(&expr, ReadUse::Value);
    Ok(w.out)
}

/// What a local name stands for.
#[derive(Clone)]
enum Local {
    /// A value computed inside the template (`loop`, a macro argument, `{% set x = 1 %}`).
    Own,
    /// Another path: `{% for u in context.users %}` binds `u` to `context.users[]`.
    Alias(String, Vec<PathSegment>),
}

struct Walker<'s> {
    src: &'s str,
    scopes: Vec<HashMap<String, Local>>,
    out: Vec<VarRead>,
}

/// String methods (minijinja-contrib's pycompat) that say the value is text.
const TEXT_METHODS: &[&str] = &[
    "startswith",
    "endswith",
    "lower",
    "upper",
    "strip",
    "lstrip",
    "rstrip",
    "split",
    "splitlines",
    "replace",
    "title",
    "capitalize",
    "find",
    "isdigit",
    "isalpha",
    "isalnum",
    "isspace",
    "islower",
    "isupper",
    "join",
];
/// Mapping methods.
const MAPPING_METHODS: &[&str] = &["items", "keys", "values"];
/// Filters that take a sequence.
const SEQUENCE_FILTERS: &[&str] = &[
    "join",
    "first",
    "last",
    "sort",
    "unique",
    "batch",
    "slice",
    "map",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "sum",
    "min",
    "max",
    "reverse",
    "groupby",
];
/// Filters that take text.
const TEXT_FILTERS: &[&str] = &[
    "upper",
    "lower",
    "trim",
    "capitalize",
    "title",
    "replace",
    "wordcount",
    "truncate",
    "indent",
    "striptags",
    "urlencode",
    "split",
    "lines",
    "format",
];

impl<'s> Walker<'s> {
    fn new(src: &'s str) -> Self {
        Walker { src, scopes: vec![HashMap::new()], out: Vec::new() }
    }

    fn local(&self, name: &str) -> Option<&Local> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn bind(&mut self, name: &str, local: Local) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_owned(), local);
        }
    }

    /// Binds the names of an assignment target (`x`, `(k, v)`); a single name assigned a path aliases it.
    fn bind_target(&mut self, target: &Expr<'_>, value: Option<(String, Vec<PathSegment>)>) {
        match target {
            Expr::Var(v) => {
                let local = value.map_or(Local::Own, |(root, path)| Local::Alias(root, path));
                self.bind(v.id, local);
            }
            Expr::List(l) => {
                for item in &l.items {
                    self.bind_target(item, None);
                }
            }
            _ => {}
        }
    }

    fn scoped(&mut self, f: impl FnOnce(&mut Self)) {
        self.scopes.push(HashMap::new());
        f(self);
        self.scopes.pop();
    }

    /// The path an expression stands for (a name and lookups on it, through aliases), with the non-constant
    /// subscripts met on the way. `None` for a local value or another kind of expression.
    fn path_of<'e>(&self, e: &'e Expr<'s>) -> Option<(String, Vec<PathSegment>, Vec<&'e Expr<'s>>)> {
        match e {
            Expr::Var(v) => match self.local(v.id) {
                Some(Local::Own) => None,
                Some(Local::Alias(root, path)) => Some((root.clone(), path.clone(), Vec::new())),
                None => Some((v.id.to_owned(), Vec::new(), Vec::new())),
            },
            Expr::GetAttr(g) => {
                let (root, mut path, dynamic) = self.path_of(&g.expr)?;
                path.push(PathSegment::Key(g.name.to_owned()));
                Some((root, path, dynamic))
            }
            Expr::GetItem(g) => {
                let (root, mut path, mut dynamic) = self.path_of(&g.expr)?;
                match const_str(&g.subscript_expr) {
                    Some(key) => path.push(PathSegment::Key(key)),
                    None => {
                        path.push(PathSegment::Item);
                        if !matches!(g.subscript_expr, Expr::Const(_)) {
                            dynamic.push(&g.subscript_expr);
                        }
                    }
                }
                Some((root, path, dynamic))
            }
            Expr::Call(c) => {
                // `x.get('key')` reads `x.key`
                let Expr::GetAttr(g) = &c.expr else { return None };
                if g.name != "get" {
                    return None;
                }
                let key = match c.args.first() {
                    Some(CallArg::Pos(arg)) => const_str(arg)?,
                    _ => return None,
                };
                let (root, mut path, mut dynamic) = self.path_of(&g.expr)?;
                path.push(PathSegment::Key(key));
                dynamic.extend(c.args.iter().skip(1).filter_map(|a| match a {
                    CallArg::Pos(e) | CallArg::Kwarg(_, e) => Some(e),
                    _ => None,
                }));
                Some((root, path, dynamic))
            }
            _ => None,
        }
    }

    fn record(&mut self, root: String, path: Vec<PathSegment>, usage: ReadUse, e: &Expr<'_>) {
        // A lookup's span starts at its `.` or `[`: the read starts where the name it is applied to does.
        let start = base(e).span();
        let end = e.span();
        let text = self.src.get(start.start_offset as usize..end.end_offset as usize).unwrap_or("").to_owned();
        self.out.push(VarRead {
            root,
            path,
            usage,
            line: usize::from(start.start_line).max(1),
            col: usize::from(start.start_col) + 1,
            text,
        });
    }

    /// Records the read `e` stands for, if it is a path; otherwise walks it. Returns the path read.
    fn expr(&mut self, e: &Expr<'s>, usage: ReadUse) -> Option<(String, Vec<PathSegment>)> {
        if let Some((root, path, dynamic)) = self.path_of(e) {
            self.record(root.clone(), path.clone(), usage, e);
            for d in dynamic {
                self.expr(d, ReadUse::Value);
            }
            return Some((root, path));
        }
        match e {
            Expr::Var(_) | Expr::Const(_) => {}
            Expr::GetAttr(g) => {
                self.expr(&g.expr, ReadUse::Value);
            }
            Expr::GetItem(g) => {
                self.expr(&g.expr, ReadUse::Value);
                self.expr(&g.subscript_expr, ReadUse::Value);
            }
            Expr::Slice(s) => {
                self.expr(&s.expr, ReadUse::Value);
                for x in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(x, ReadUse::Number);
                }
            }
            Expr::UnaryOp(u) => {
                let usage = if matches!(u.op, UnaryOpKind::Neg) { ReadUse::Number } else { ReadUse::Value };
                self.expr(&u.expr, usage);
            }
            Expr::BinOp(b) => {
                let usage = match b.op {
                    BinOpKind::Sub
                    | BinOpKind::Mul
                    | BinOpKind::Div
                    | BinOpKind::FloorDiv
                    | BinOpKind::Rem
                    | BinOpKind::Pow => ReadUse::Number,
                    BinOpKind::Lt | BinOpKind::Lte | BinOpKind::Gt | BinOpKind::Gte
                        if is_number(&b.left) || is_number(&b.right) =>
                    {
                        ReadUse::Number
                    }
                    _ => ReadUse::Value,
                };
                self.expr(&b.left, usage);
                self.expr(&b.right, usage);
            }
            Expr::Compare(c) => {
                let mut operands: Vec<&Expr<'s>> = vec![&c.expr];
                operands.extend(c.ops.iter().map(|o| &o.expr));
                let ordered = c.ops.iter().any(|o| {
                    matches!(o.op, CompareOpKind::Lt | CompareOpKind::Lte | CompareOpKind::Gt | CompareOpKind::Gte)
                });
                let usage =
                    if ordered && operands.iter().any(|o| is_number(o)) { ReadUse::Number } else { ReadUse::Value };
                for o in operands {
                    self.expr(o, usage);
                }
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr, ReadUse::Value);
                self.expr(&i.true_expr, ReadUse::Value);
                if let Some(f) = &i.false_expr {
                    self.expr(f, ReadUse::Value);
                }
            }
            Expr::Filter(f) => {
                let usage = if SEQUENCE_FILTERS.contains(&f.name) {
                    ReadUse::Iterated
                } else if TEXT_FILTERS.contains(&f.name) {
                    ReadUse::Text
                } else if f.name == "items" || f.name == "dictsort" {
                    ReadUse::Mapping
                } else {
                    ReadUse::Value
                };
                if let Some(inner) = &f.expr {
                    self.expr(inner, usage);
                }
                self.args(&f.args);
            }
            Expr::Test(t) => {
                self.expr(&t.expr, ReadUse::Value);
                self.args(&t.args);
            }
            Expr::Call(c) => self.call(c),
            Expr::List(l) => {
                for item in &l.items {
                    self.expr(item, ReadUse::Value);
                }
            }
            Expr::Map(m) => {
                for x in m.keys.iter().chain(&m.values) {
                    self.expr(x, ReadUse::Value);
                }
            }
        }
        None
    }

    fn call(&mut self, c: &ast::Call<'s>) {
        match &c.expr {
            // A method call: the object is read and used the way the method says; the method is no field.
            Expr::GetAttr(g) => {
                let usage = if TEXT_METHODS.contains(&g.name) {
                    ReadUse::Text
                } else if MAPPING_METHODS.contains(&g.name) {
                    ReadUse::Mapping
                } else {
                    ReadUse::Value
                };
                self.expr(&g.expr, usage);
            }
            other => {
                self.expr(other, ReadUse::Value);
            }
        }
        self.args(&c.args);
    }

    fn args(&mut self, args: &[CallArg<'s>]) {
        for a in args {
            match a {
                CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
                    self.expr(e, ReadUse::Value);
                }
            }
        }
    }

    fn body(&mut self, stmts: &[Stmt<'s>]) {
        for s in stmts {
            self.stmt(s);
        }
    }

    #[allow(unreachable_patterns)] // `Continue`/`Break` exist when another crate enables `loop_controls`
    fn stmt(&mut self, stmt: &Stmt<'s>) {
        match stmt {
            Stmt::Template(t) => self.body(&t.children),
            Stmt::EmitExpr(e) => {
                self.expr(&e.expr, ReadUse::Value);
            }
            Stmt::EmitRaw(_) => {}
            Stmt::ForLoop(f) => {
                let iterated = self.expr(&f.iter, ReadUse::Iterated);
                self.scoped(|w| {
                    let item = iterated.map(|(root, mut path)| {
                        path.push(PathSegment::Item);
                        (root, path)
                    });
                    w.bind_target(&f.target, item);
                    w.bind("loop", Local::Own);
                    if let Some(filter) = &f.filter_expr {
                        w.expr(filter, ReadUse::Value);
                    }
                    w.body(&f.body);
                });
                self.body(&f.else_body);
            }
            Stmt::IfCond(c) => {
                self.expr(&c.expr, ReadUse::Value);
                self.body(&c.true_body);
                self.body(&c.false_body);
            }
            Stmt::WithBlock(b) => self.scoped(|w| {
                for (target, value) in &b.assignments {
                    let read = w.expr(value, ReadUse::Value);
                    w.bind_target(target, read);
                }
                w.body(&b.body);
            }),
            Stmt::Set(s) => {
                let read = self.expr(&s.expr, ReadUse::Value);
                self.bind_target(&s.target, read);
            }
            Stmt::SetBlock(s) => {
                if let Some(filter) = &s.filter {
                    self.expr(filter, ReadUse::Value);
                }
                self.body(&s.body);
                self.bind_target(&s.target, None);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled, ReadUse::Value);
                self.body(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter, ReadUse::Value);
                self.body(&f.body);
            }
            Stmt::Macro(m) => {
                self.bind(m.name, Local::Own);
                self.macro_decl(m, false);
            }
            Stmt::CallBlock(c) => {
                self.call(&c.call);
                self.macro_decl(&c.macro_decl, true);
            }
            Stmt::Do(d) => self.call(&d.call),
            _ => {}
        }
    }

    fn macro_decl(&mut self, m: &ast::Macro<'s>, caller: bool) {
        for d in &m.defaults {
            self.expr(d, ReadUse::Value);
        }
        self.scoped(|w| {
            for a in &m.args {
                w.bind_target(a, None);
            }
            if caller {
                w.bind("caller", Local::Own);
            }
            w.body(&m.body);
        });
    }
}

/// The innermost expression of a chain of lookups (`context` in `context.a['b'].get('c')`).
fn base<'e, 's>(e: &'e Expr<'s>) -> &'e Expr<'s> {
    match e {
        Expr::GetAttr(g) => base(&g.expr),
        Expr::GetItem(g) => base(&g.expr),
        Expr::Call(c) => match &c.expr {
            Expr::GetAttr(g) => base(&g.expr),
            other => base(other),
        },
        other => other,
    }
}

fn const_str(e: &Expr<'_>) -> Option<String> {
    match e {
        Expr::Const(c) if c.value.kind() == ValueKind::String => c.value.as_str().map(str::to_owned),
        _ => None,
    }
}

fn is_number(e: &Expr<'_>) -> bool {
    match e {
        Expr::Const(c) => c.value.kind() == ValueKind::Number,
        Expr::UnaryOp(u) => matches!(u.op, UnaryOpKind::Neg) && is_number(&u.expr),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> PathSegment {
        PathSegment::Key(k.to_owned())
    }

    /// `root.dotted` of every read of `src` (a template).
    fn reads(src: &str) -> Vec<String> {
        template_reads(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .iter()
            .map(|r| if r.path.is_empty() { r.root.clone() } else { format!("{}.{}", r.root, r.dotted()) })
            .collect()
    }

    #[test]
    fn attribute_chains_subscripts_and_get() {
        assert_eq!(reads("Hi {{ context.user.name | upper }}"), ["context.user.name"]);
        assert_eq!(reads("{{ context['plan'].steps[0] }}"), ["context.plan.steps[]"]);
        assert_eq!(reads("{{ context.get('mode', 'x') }}"), ["context.mode"]);
        assert_eq!(reads("{{ context.a[context.b] }}"), ["context.a[]", "context.b"]);
        assert_eq!(reads("{{ context }}"), ["context"]);
        assert_eq!(reads("plain text"), Vec::<String>::new());
        // a method is not a field
        assert_eq!(reads("{{ context.title.startswith('A') }}"), ["context.title"]);
        let r = &template_reads("{{ context.title.strip() }}").unwrap()[0];
        assert_eq!(r.usage, ReadUse::Text);
    }

    #[test]
    fn scopes_and_aliases() {
        assert_eq!(
            reads("{% for u in context.users %}{{ u.name }}{{ loop.index }}{% endfor %}"),
            ["context.users", "context.users[].name"]
        );
        assert_eq!(
            reads("{% set p = context.plan %}{{ p.title }}{% set n = 3 %}{{ n }}"),
            ["context.plan", "context.plan.title"]
        );
        assert_eq!(reads("{{#each context.items}}{{ this.id }}{{/each}}"), ["context.items", "context.items[].id"]);
        // outside a loop, `this` is the map item: a free name
        assert_eq!(reads("{{ this.id }}"), ["this.id"]);
        assert_eq!(reads("{% for k, v in context.tags.items() %}{{ k }}={{ v }}{% endfor %}"), ["context.tags"]);
        assert_eq!(reads("{% macro m(x) %}{{ x.y }}{{ context.z }}{% endmacro %}{{ m(1) }}"), ["context.z"]);
        assert_eq!(
            reads("{% with a = context.a %}{{ a.b }}{% endwith %}{{ a.c }}"),
            ["context.a", "context.a.b", "a.c"]
        );
    }

    #[test]
    fn usage_hints() {
        let usage = |src: &str| template_reads(src).unwrap()[0].usage;
        assert_eq!(usage("{% for x in context.xs %}{% endfor %}"), ReadUse::Iterated);
        assert_eq!(usage("{{ context.xs | join(', ') }}"), ReadUse::Iterated);
        assert_eq!(usage("{{ context.n * 2 }}"), ReadUse::Number);
        assert_eq!(usage("{% if context.n >= 3 %}{% endif %}"), ReadUse::Number);
        assert_eq!(usage("{% if context.n == 3 %}{% endif %}"), ReadUse::Value);
        assert_eq!(usage("{{ context.m.keys() }}"), ReadUse::Mapping);
        assert_eq!(usage("{{ context.s | trim }}"), ReadUse::Text);
    }

    #[test]
    fn expressions() {
        let r = expression_reads("context.count >= 3 and previous_step.done").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].root.as_str(), r[0].path.clone(), r[0].usage),
            ("context", vec![key("count")], ReadUse::Number)
        );
        assert_eq!((r[1].root.as_str(), r[1].path.clone()), ("previous_step", vec![key("done")]));
        assert_eq!(expression_reads("{{ context.ok }}").unwrap()[0].path, vec![key("ok")]);
        // `steps.NAME.output` is `steps.NAME`
        assert_eq!(expression_reads("steps.fetch.output").unwrap()[0].path, vec![key("fetch")]);
        assert!(expression_reads("context.").is_err());
    }

    #[test]
    fn locations() {
        let r = template_reads("line one\n  and {{ context.user.name }} here").unwrap();
        assert_eq!((r[0].line, r[0].col, r[0].text.as_str()), (2, 10, "context.user.name"));
        let r = expression_reads("a or context['x']").unwrap();
        assert_eq!((r[1].line, r[1].col, r[1].text.as_str()), (1, 6, "context['x']"));
    }
}
