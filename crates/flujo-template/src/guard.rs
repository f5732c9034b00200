//! Static limits on what minijinja 2.24 would compute without any bound: repeated sequences.
//!
//! `seq * n` makes a lazy sequence of `len(seq) × n` items, with no limit (minijinja caps repeated *strings* at
//! 100 MB, not sequences; minijinja 3 caps both). Anything that walks it afterwards — `~`, `join`, `tojson`,
//! `==`, `in` — is one VM instruction, so fuel does not stop it, and minijinja folds constant operations while
//! *compiling*: `10 ~ () * 25555555` hung `compile_expression` itself (found by the `expression_eval` fuzz
//! target). So before minijinja compiles a template or an expression, its syntax tree is checked: a sequence
//! literal (or constant) repeated into more than [`MAX_REPEATED_ITEMS`] items, or a constant string built to
//! more than [`MAX_CONST_STRING_BYTES`] bytes, is a syntax error.
//!
//! Only sizes known from the source are checked here; every size is also checked while rendering, by the
//! patched minijinja of `vendor/minijinja` (see `crate::env`): a sequence that comes from the scope, a
//! `{% set %}` variable or a filter (`([1] | default([])) * 10**18`), repeated by a large number, is an error
//! there.

use minijinja::machinery::ast::{self, BinOpKind, CallArg, Expr, Stmt, UnaryOpKind};
use minijinja::machinery::WhitespaceConfig;
use minijinja::value::ValueKind;

use crate::error::TemplateError;

/// The most items a sequence repeated with `*` may have (minijinja's `range()` has the same limit).
pub(crate) const MAX_REPEATED_ITEMS: u128 = 100_000;

/// The longest string a constant expression (`'x' * n`, `a ~ b`) may build: well above
/// [`crate::MAX_OUTPUT_BYTES`], so such a template still fails with `OutputTooLarge` when rendered.
pub(crate) const MAX_CONST_STRING_BYTES: u128 = 16 << 20;

/// What is known, from the source alone, about the size of an expression's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    Unknown,
    /// A sequence of (at least) this many items (for a repeated one: the steps it takes to walk it).
    Seq(u128),
    /// A string of (at least) this many bytes.
    Str(u128),
}

/// Checks expression code (already translated) before minijinja compiles it. A source minijinja cannot parse
/// passes: compiling it reports the syntax error.
pub(crate) fn check_expression(code: &str) -> Result<(), TemplateError> {
    match minijinja::machinery::parse_expr(code) {
        Ok(expr) => visit(&expr).map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// Checks a (translated) template source before minijinja compiles it.
pub(crate) fn check_template(source: &str) -> Result<(), TemplateError> {
    let parsed = minijinja::machinery::parse(source, "<template>", Default::default(), WhitespaceConfig::default());
    match parsed {
        Ok(stmt) => visit_stmt(&stmt),
        Err(_) => Ok(()),
    }
}

fn too_large(what: &str, limit: u128, line: u16) -> TemplateError {
    TemplateError::syntax(
        format!("{what} would be larger than {limit} (line {line}); templates cannot build values that large"),
        Some(usize::from(line)),
    )
}

#[allow(unreachable_patterns)] // `Continue`/`Break` exist when another crate enables `loop_controls`
fn visit_stmt(stmt: &Stmt<'_>) -> Result<(), TemplateError> {
    let body = |stmts: &[Stmt<'_>]| stmts.iter().try_for_each(visit_stmt);
    match stmt {
        Stmt::Template(t) => body(&t.children),
        Stmt::EmitExpr(e) => visit(&e.expr).map(|_| ()),
        Stmt::EmitRaw(_) => Ok(()),
        Stmt::ForLoop(f) => {
            visit(&f.target)?;
            visit(&f.iter)?;
            f.filter_expr.as_ref().map(visit).transpose()?;
            body(&f.body)?;
            body(&f.else_body)
        }
        Stmt::IfCond(c) => {
            visit(&c.expr)?;
            body(&c.true_body)?;
            body(&c.false_body)
        }
        Stmt::WithBlock(w) => {
            for (target, value) in &w.assignments {
                visit(target)?;
                visit(value)?;
            }
            body(&w.body)
        }
        Stmt::Set(s) => {
            visit(&s.target)?;
            visit(&s.expr).map(|_| ())
        }
        Stmt::SetBlock(s) => {
            visit(&s.target)?;
            s.filter.as_ref().map(visit).transpose()?;
            body(&s.body)
        }
        Stmt::AutoEscape(a) => {
            visit(&a.enabled)?;
            body(&a.body)
        }
        Stmt::FilterBlock(f) => {
            visit(&f.filter)?;
            body(&f.body)
        }
        Stmt::Block(b) => body(&b.body),
        Stmt::Import(i) => {
            visit(&i.expr)?;
            visit(&i.name).map(|_| ())
        }
        Stmt::FromImport(i) => {
            visit(&i.expr)?;
            for (name, alias) in &i.names {
                visit(name)?;
                alias.as_ref().map(visit).transpose()?;
            }
            Ok(())
        }
        Stmt::Extends(e) => visit(&e.name).map(|_| ()),
        Stmt::Include(i) => visit(&i.name).map(|_| ()),
        Stmt::Macro(m) => visit_macro(m),
        Stmt::CallBlock(c) => {
            visit_call(&c.call)?;
            visit_macro(&c.macro_decl)
        }
        Stmt::Do(d) => visit_call(&d.call),
        _ => Ok(()),
    }
}

fn visit_macro(m: &ast::Macro<'_>) -> Result<(), TemplateError> {
    m.args.iter().chain(&m.defaults).try_for_each(|e| visit(e).map(|_| ()))?;
    m.body.iter().try_for_each(visit_stmt)
}

fn visit_call(c: &ast::Call<'_>) -> Result<(), TemplateError> {
    visit(&c.expr)?;
    visit_args(&c.args)
}

fn visit_args(args: &[CallArg<'_>]) -> Result<(), TemplateError> {
    args.iter().try_for_each(|a| match a {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => visit(e).map(|_| ()),
    })
}

/// Checks every node under `expr` and returns what is known about the size of its value.
fn visit(expr: &Expr<'_>) -> Result<Size, TemplateError> {
    Ok(match expr {
        Expr::Const(c) => match c.value.kind() {
            ValueKind::String => Size::Str(c.value.as_str().map_or(0, |s| s.len() as u128)),
            ValueKind::Seq => Size::Seq(c.value.len().unwrap_or(0) as u128),
            _ => Size::Unknown,
        },
        Expr::List(l) => {
            for item in &l.items {
                visit(item)?;
            }
            Size::Seq(l.items.len() as u128)
        }
        Expr::BinOp(b) => {
            let (left, right) = (visit(&b.left)?, visit(&b.right)?);
            let line = b.span().start_line;
            match b.op {
                BinOpKind::Mul => {
                    let repeated = match (left, right) {
                        (Size::Seq(_) | Size::Str(_), _) => const_int(&b.right).map(|n| (left, n)),
                        (_, Size::Seq(_) | Size::Str(_)) => const_int(&b.left).map(|n| (right, n)),
                        _ => None,
                    };
                    match repeated {
                        Some((size, n)) => limit(scale(size, u128::try_from(n).unwrap_or(0)), line)?,
                        None => Size::Unknown,
                    }
                }
                BinOpKind::Add => match (left, right) {
                    (Size::Seq(a), Size::Seq(b)) => limit(Size::Seq(a.saturating_add(b)), line)?,
                    (Size::Str(a), Size::Str(b)) => limit(Size::Str(a.saturating_add(b)), line)?,
                    _ => Size::Unknown,
                },
                BinOpKind::Concat => limit(Size::Str(text_len(left).saturating_add(text_len(right))), line)?,
                _ => Size::Unknown,
            }
        }
        Expr::Var(_) => Size::Unknown,
        Expr::Slice(s) => {
            visit(&s.expr)?;
            for e in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                visit(e)?;
            }
            Size::Unknown
        }
        Expr::UnaryOp(u) => {
            visit(&u.expr)?;
            Size::Unknown
        }
        Expr::Compare(c) => {
            visit(&c.expr)?;
            for op in &c.ops {
                visit(&op.expr)?;
            }
            Size::Unknown
        }
        Expr::IfExpr(i) => {
            visit(&i.test_expr)?;
            visit(&i.true_expr)?;
            i.false_expr.as_ref().map(visit).transpose()?;
            Size::Unknown
        }
        Expr::Filter(f) => {
            f.expr.as_ref().map(visit).transpose()?;
            visit_args(&f.args)?;
            Size::Unknown
        }
        Expr::Test(t) => {
            visit(&t.expr)?;
            visit_args(&t.args)?;
            Size::Unknown
        }
        Expr::GetAttr(g) => {
            visit(&g.expr)?;
            Size::Unknown
        }
        Expr::GetItem(g) => {
            visit(&g.expr)?;
            visit(&g.subscript_expr)?;
            Size::Unknown
        }
        Expr::Call(c) => {
            visit_call(c)?;
            Size::Unknown
        }
        Expr::Map(m) => {
            for e in m.keys.iter().chain(&m.values) {
                visit(e)?;
            }
            Size::Unknown
        }
    })
}

fn scale(size: Size, n: u128) -> Size {
    match size {
        // walking `() * n` still steps through `n` empty copies: count at least one item per copy
        Size::Seq(len) => Size::Seq(len.max(1).saturating_mul(n)),
        Size::Str(len) => Size::Str(len.saturating_mul(n)),
        Size::Unknown => Size::Unknown,
    }
}

fn limit(size: Size, line: u16) -> Result<Size, TemplateError> {
    match size {
        Size::Seq(n) if n > MAX_REPEATED_ITEMS => Err(too_large("a repeated sequence", MAX_REPEATED_ITEMS, line)),
        Size::Str(n) if n > MAX_CONST_STRING_BYTES => {
            Err(too_large("a string built from constants", MAX_CONST_STRING_BYTES, line))
        }
        other => Ok(other),
    }
}

/// The least number of bytes a value of this size prints as (`[]` aside, each item takes at least 3).
fn text_len(size: Size) -> u128 {
    match size {
        Size::Str(n) => n,
        Size::Seq(n) => n.saturating_mul(3),
        Size::Unknown => 0,
    }
}

/// The value of an integer constant expression (literals, `-`, `+`, `*`, `**`, `//`), when it is one.
fn const_int(expr: &Expr<'_>) -> Option<i128> {
    match expr {
        Expr::Const(c) => match c.value.kind() {
            ValueKind::Number | ValueKind::Bool => c.value.as_i64().map(i128::from),
            _ => None,
        },
        Expr::UnaryOp(u) if matches!(u.op, UnaryOpKind::Neg) => const_int(&u.expr)?.checked_neg(),
        Expr::BinOp(b) => {
            let (l, r) = (const_int(&b.left)?, const_int(&b.right)?);
            match b.op {
                BinOpKind::Add => l.checked_add(r),
                BinOpKind::Sub => l.checked_sub(r),
                BinOpKind::Mul => l.checked_mul(r),
                BinOpKind::FloorDiv => l.checked_div_euclid(r),
                // an overflowing power is far beyond any limit: say so with the largest value
                BinOpKind::Pow => Some(u32::try_from(r).ok().and_then(|r| l.checked_pow(r)).unwrap_or(i128::MAX)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr_ok(code: &str) -> bool {
        check_expression(code).is_ok()
    }

    #[test]
    fn repeated_sequences_are_limited() {
        assert!(expr_ok("[1, 2] * 3"));
        assert!(expr_ok("[0] * 100000"));
        assert!(!expr_ok("[0] * 100001"));
        assert!(!expr_ok("[1, 2] * 50001"));
        assert!(!expr_ok("10 ~ () * 25555555"));
        assert!(!expr_ok("[x] * 10 ** 12"));
        assert!(!expr_ok("1000000 * [x]"));
        assert!(!expr_ok("([1] * 1000) * 1000"));
        assert!(!expr_ok("([1] * 60000 + [2] * 60000)"));
        assert!(!expr_ok("f(a=[1] * 999999)"));
        assert!(!expr_ok("x | join([1] * 2 ** 64)"));
        // sizes not known from the source are not judged
        assert!(expr_ok("previous_step * 1000000"));
        assert!(expr_ok("[1] * previous_step"));
        assert!(expr_ok("previous_step.items * 3"));
    }

    #[test]
    fn constant_strings_are_limited() {
        assert!(expr_ok("'x' * 2000000"));
        assert!(!expr_ok("'x' * 99999999"));
        assert!(!expr_ok("('x' * 9000000) ~ ('y' * 9000000)"));
        assert!(expr_ok("'ab' ~ previous_step"));
    }

    #[test]
    fn every_statement_is_checked() {
        assert!(check_template("{{ [1] * 3 }}{% for i in [1] * 3 %}{{ i }}{% endfor %}").is_ok());
        for src in [
            "{{ [1] * 999999 }}",
            "{% for i in [1] * 999999 %}{% endfor %}",
            "{% if x %}{% else %}{% set y = [1] * 999999 %}{% endif %}",
            "{% macro m(a=[1] * 999999) %}{% endmacro %}",
            "{% with a = [0] * 999999 %}{% endwith %}",
            "{% filter replace('a', 'b' * 99999999) %}x{% endfilter %}",
        ] {
            let err = check_template(src);
            assert!(matches!(err, Err(TemplateError::Syntax { .. })), "{src}: {err:?}");
        }
    }
}
