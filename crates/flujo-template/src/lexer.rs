//! Lexical pre-processing of template sources before minijinja compiles them.
//!
//! A light lexer splits a source into text, comments, raw blocks and code tags (`{{ … }}`, `{% … %}`),
//! honouring string literals and bracket nesting inside tags the way minijinja does. On top of it this module:
//! translates Flujo's Handlebars-style helpers (`{{#if}}`, `{{#unless}}`, `{{#each}}`, `{{else}}`, `{{/if}}`,
//! `{{/unless}}`, `{{/each}}`) into Jinja tags; rewrites `steps.NAME.output` to `steps.NAME` inside code
//! (never in text or string literals); refuses `include`/`import`/`from`/`extends` tags; detects templates that
//! are a single `{{ expr }}`; and lists the filters a template uses. Translation never adds or removes lines, so
//! line numbers of minijinja errors still point into the original source.

use crate::error::TemplateError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegKind {
    Text,
    Comment,
    Raw,
    Var,
    Block,
}

/// One lexical segment. For `Var`/`Block`, `code` is the tag's inner range without delimiters and without
/// whitespace-control markers; for other kinds it equals `start..end`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    pub kind: SegKind,
    pub start: usize,
    pub end: usize,
    pub code_start: usize,
    pub code_end: usize,
}

impl Seg {
    fn plain(kind: SegKind, start: usize, end: usize) -> Seg {
        Seg { kind, start, end, code_start: start, code_end: end }
    }
}

/// `true` if `s` contains template syntax (`{{` or `{%`).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// `true` if `s` contains any Jinja delimiter (`{{`, `{%` or `{#`): such a source must go through the engine.
pub(crate) fn has_jinja_syntax(s: &str) -> bool {
    is_template(s) || s.contains("{#")
}

/// Splits `src` into segments. An unterminated tag or comment becomes text (minijinja reports it later).
pub(crate) fn lex(src: &str) -> Vec<Seg> {
    let b = src.as_bytes();
    let len = b.len();
    let mut segs = Vec::new();
    let mut i = 0;
    let mut text_start = 0;
    while i + 1 < len {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        let kind = match b[i + 1] {
            b'{' => SegKind::Var,
            b'%' => SegKind::Block,
            b'#' => SegKind::Comment,
            _ => {
                i += 1;
                continue;
            }
        };
        if text_start < i {
            segs.push(Seg::plain(SegKind::Text, text_start, i));
        }
        let start = i;
        if kind == SegKind::Comment {
            match src[i + 2..].find("#}") {
                Some(p) => {
                    i = i + 2 + p + 2;
                    segs.push(Seg::plain(SegKind::Comment, start, i));
                }
                None => {
                    segs.push(Seg::plain(SegKind::Text, start, len));
                    i = len;
                }
            }
            text_start = i;
            continue;
        }
        let mut code_start = i + 2;
        if code_start < len && matches!(b[code_start], b'-' | b'+') {
            code_start += 1;
        }
        let closer: &[u8] = if kind == SegKind::Var { b"}}" } else { b"%}" };
        let Some(close_at) = scan_code(b, code_start, closer) else {
            segs.push(Seg::plain(SegKind::Text, start, len));
            i = len;
            text_start = i;
            break;
        };
        let mut code_end = close_at;
        if code_end > code_start && matches!(b[code_end - 1], b'-' | b'+') {
            code_end -= 1;
        }
        let end = close_at + 2;
        if kind == SegKind::Block && src[code_start..code_end].trim() == "raw" {
            let raw_end = find_endraw(src, end).unwrap_or(len);
            segs.push(Seg::plain(SegKind::Raw, start, raw_end));
            i = raw_end;
        } else {
            segs.push(Seg { kind, start, end, code_start, code_end });
            i = end;
        }
        text_start = i;
    }
    if text_start < len {
        segs.push(Seg::plain(SegKind::Text, text_start, len));
    }
    segs
}

/// Position of `closer` ending the tag whose code starts at `from`, skipping string literals and nested
/// brackets.
fn scan_code(b: &[u8], from: usize, closer: &[u8]) -> Option<usize> {
    let mut j = from;
    let mut depth: isize = 0;
    while j < b.len() {
        match b[j] {
            b'\'' | b'"' => {
                j = skip_string(b, j);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' => depth -= 1,
            b'}' | b'%' if depth <= 0 && b[j..].starts_with(closer) => return Some(j),
            b'}' => depth -= 1,
            _ => {}
        }
        j += 1;
    }
    None
}

/// Index just past the string literal starting at `at` (or the end of input if unterminated).
fn skip_string(b: &[u8], at: usize) -> usize {
    let quote = b[at];
    let mut j = at + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// End (exclusive) of the `{% endraw %}` tag at or after `from`.
fn find_endraw(src: &str, from: usize) -> Option<usize> {
    let mut pos = from;
    while let Some(p) = src[pos..].find("{%") {
        let tag_start = pos + p;
        let mut k = tag_start + 2;
        let rest = &src[k..];
        if rest.starts_with('-') || rest.starts_with('+') {
            k += 1;
        }
        let after_ws = src[k..].trim_start();
        if let Some(after_kw) = after_ws.strip_prefix("endraw") {
            let tail = after_kw.trim_start();
            let tail = tail.strip_prefix('-').or_else(|| tail.strip_prefix('+')).unwrap_or(tail);
            if tail.starts_with("%}") {
                return Some(src.len() - tail.len() + 2);
            }
        }
        pos = tag_start + 2;
    }
    None
}

/// Byte offset of a `}}` that closes nothing in expression code: outside string literals and at bracket depth 0,
/// the way minijinja's expression lexer sees it (it treats such a `}}` as the end of a `{{ … }}` tag).
///
/// minijinja 2.24 panics ("empty lexer stack") when an expression has anything after such a `}}` (`a }} b`),
/// so [`crate::compile_expression`] refuses these before minijinja sees them. Never true of a valid expression.
pub(crate) fn stray_variable_end(code: &str) -> Option<usize> {
    let b = code.as_bytes();
    let mut depth: isize = 0;
    let mut j = 0;
    while j < b.len() {
        match b[j] {
            b'\'' | b'"' => {
                j = skip_string(b, j);
                continue;
            }
            b'}' if depth == 0 && b[j..].starts_with(b"}}") => return Some(j),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        j += 1;
    }
    None
}

pub(crate) fn line_of(src: &str, at: usize) -> usize {
    src[..at].bytes().filter(|&c| c == b'\n').count() + 1
}

// ---------------------------------------------------------------------------------------------------------
// Code tokens
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokKind {
    Ws,
    Str,
    Ident,
    Punct(u8),
}

#[derive(Clone, Copy, Debug)]
struct Tok {
    kind: TokKind,
    start: usize,
    end: usize,
}

fn tokenize(code: &str) -> Vec<Tok> {
    let b = code.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let kind = match b[i] {
            c if c.is_ascii_whitespace() => {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                TokKind::Ws
            }
            b'\'' | b'"' => {
                i = skip_string(b, i).min(b.len());
                TokKind::Str
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                TokKind::Ident
            }
            c if c.is_ascii_digit() => {
                // numbers (including `1.5`, `1e3`) are one token so that `.` inside them is not an attribute dot
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                    i += 1;
                }
                TokKind::Punct(b'0')
            }
            c if c.is_ascii() => {
                i += 1;
                TokKind::Punct(c)
            }
            _ => {
                // a non-ASCII character (only valid inside strings in Jinja): keep it whole
                i += 1;
                while i < b.len() && !code.is_char_boundary(i) {
                    i += 1;
                }
                TokKind::Punct(0)
            }
        };
        toks.push(Tok { kind, start, end: i });
    }
    toks
}

/// Rewrites `steps.NAME.output` (and `steps['NAME'].output`, `context.steps.NAME.output`) to `steps.NAME`.
pub(crate) fn rewrite_code(code: &str) -> String {
    if !code.contains("output") || !code.contains("steps") {
        return code.to_owned();
    }
    let toks = tokenize(code);
    let sig: Vec<Tok> = toks.into_iter().filter(|t| t.kind != TokKind::Ws).collect();
    let text = |t: &Tok| &code[t.start..t.end];
    let is_ident = |t: Option<&Tok>, word: Option<&str>| {
        t.is_some_and(|t| t.kind == TokKind::Ident && word.is_none_or(|w| text(t) == w))
    };
    let is_punct = |t: Option<&Tok>, c: u8| t.is_some_and(|t| t.kind == TokKind::Punct(c));
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for k in 0..sig.len() {
        if !is_ident(sig.get(k), Some("steps")) {
            continue;
        }
        // `steps` must be a top-level name or `context.steps`
        let prev_dot = k > 0 && is_punct(sig.get(k - 1), b'.');
        if prev_dot {
            let via_context =
                k >= 2 && is_ident(sig.get(k - 2), Some("context")) && !(k >= 3 && is_punct(sig.get(k - 3), b'.'));
            if !via_context {
                continue;
            }
        }
        // the token before `.output` and the index of `output`
        let (keep_until, output_at) =
            if is_punct(sig.get(k + 1), b'.') && is_ident(sig.get(k + 2), None) && is_punct(sig.get(k + 3), b'.') {
                (k + 2, k + 4)
            } else if is_punct(sig.get(k + 1), b'[')
                && sig.get(k + 2).is_some_and(|t| t.kind == TokKind::Str)
                && is_punct(sig.get(k + 3), b']')
                && is_punct(sig.get(k + 4), b'.')
            {
                (k + 3, k + 5)
            } else {
                continue;
            };
        if !is_ident(sig.get(output_at), Some("output")) || is_punct(sig.get(output_at + 1), b'(') {
            continue;
        }
        if let (Some(a), Some(b)) = (sig.get(keep_until), sig.get(output_at)) {
            cuts.push((a.end, b.end));
        }
    }
    if cuts.is_empty() {
        return code.to_owned();
    }
    let mut out = String::with_capacity(code.len());
    let mut pos = 0;
    for (from, to) in cuts {
        out.push_str(&code[pos..from]);
        pos = to;
    }
    out.push_str(&code[pos..]);
    out
}

/// The result of translating a Flujo template source into a minijinja source.
#[derive(Debug)]
pub(crate) struct Translated {
    /// The minijinja source.
    pub source: String,
    /// If the (original) source is exactly one `{{ expr }}` up to surrounding whitespace: the translated
    /// expression code.
    pub single_expr: Option<String>,
    /// `single_expr` is set and the source has no surrounding whitespace at all.
    pub single_exact: bool,
}

/// Names that may not start a `{% … %}` tag: they would load other templates.
const FORBIDDEN_TAGS: &[&str] = &["include", "import", "from", "extends"];

/// Translates Flujo helpers, rewrites `steps.NAME.output` and refuses template-loading tags.
pub(crate) fn translate(src: &str) -> Result<Translated, TemplateError> {
    let segs = lex(src);
    let mut out = String::with_capacity(src.len() + 16);
    for seg in &segs {
        match seg.kind {
            SegKind::Text | SegKind::Comment | SegKind::Raw => out.push_str(&src[seg.start..seg.end]),
            SegKind::Var => translate_var(src, seg, &mut out)?,
            SegKind::Block => {
                let code = &src[seg.code_start..seg.code_end];
                let first = code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).find(|w| !w.is_empty());
                if let Some(kw) = first.filter(|w| FORBIDDEN_TAGS.contains(w)) {
                    if code.trim_start().starts_with(kw) {
                        return Err(TemplateError::syntax(
                            format!(
                                "'{{% {kw} %}}' is not allowed: templates cannot load other templates (no file \
                                 access) (line {})",
                                line_of(src, seg.start)
                            ),
                            Some(line_of(src, seg.start)),
                        ));
                    }
                }
                out.push_str(&src[seg.start..seg.code_start]);
                out.push_str(&rewrite_code(code));
                out.push_str(&src[seg.code_end..seg.end]);
            }
        }
    }
    let mut meaningful = segs.iter().filter(|s| !(s.kind == SegKind::Text && src[s.start..s.end].trim().is_empty()));
    let (single_expr, single_exact) = match (meaningful.next(), meaningful.next()) {
        (Some(seg), None) if seg.kind == SegKind::Var && helper(&src[seg.code_start..seg.code_end]).is_none() => {
            (Some(rewrite_code(&src[seg.code_start..seg.code_end])), segs.len() == 1)
        }
        _ => (None, false),
    };
    Ok(Translated { source: out, single_expr, single_exact })
}

/// A Flujo block helper recognised in a `{{ … }}` tag.
#[derive(Debug, PartialEq, Eq)]
enum Helper<'s> {
    If(&'s str),
    Unless(&'s str),
    Each(&'s str),
    Else,
    EndIf,
    EndEach,
    Unknown(&'s str),
}

fn helper(code: &str) -> Option<Helper<'_>> {
    let t = code.trim();
    if t == "else" {
        return Some(Helper::Else);
    }
    if let Some(rest) = t.strip_prefix('#') {
        let name_len = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        let (name, arg) = rest.split_at(name_len);
        let arg = arg.trim();
        return Some(match name {
            "if" => Helper::If(arg),
            "unless" => Helper::Unless(arg),
            "each" => Helper::Each(arg),
            _ => Helper::Unknown(t),
        });
    }
    if let Some(rest) = t.strip_prefix('/') {
        return Some(match rest.trim() {
            "if" | "unless" => Helper::EndIf,
            "each" => Helper::EndEach,
            _ => Helper::Unknown(t),
        });
    }
    None
}

fn translate_var(src: &str, seg: &Seg, out: &mut String) -> Result<(), TemplateError> {
    let code = &src[seg.code_start..seg.code_end];
    let open_marker = &src[seg.start + 2..seg.code_start];
    let close_marker = &src[seg.code_end..seg.end - 2];
    let Some(h) = helper(code) else {
        out.push_str(&src[seg.start..seg.code_start]);
        out.push_str(&rewrite_code(code));
        out.push_str(&src[seg.code_end..seg.end]);
        return Ok(());
    };
    let line = line_of(src, seg.start);
    let needs_arg = |arg: &str, name: &str| {
        if arg.is_empty() {
            Err(TemplateError::syntax(format!("{{{{#{name}}}}} needs an expression (line {line})"), Some(line)))
        } else {
            Ok(())
        }
    };
    let tag = match h {
        Helper::If(arg) => {
            needs_arg(arg, "if")?;
            format!(" if {} ", rewrite_code(arg))
        }
        Helper::Unless(arg) => {
            needs_arg(arg, "unless")?;
            format!(" if not ({}) ", rewrite_code(arg))
        }
        Helper::Each(arg) => {
            needs_arg(arg, "each")?;
            format!(" for this in {} ", rewrite_code(arg))
        }
        Helper::Else => " else ".to_owned(),
        Helper::EndIf => " endif ".to_owned(),
        Helper::EndEach => " endfor ".to_owned(),
        Helper::Unknown(t) => {
            return Err(TemplateError::syntax(
                format!("unknown block helper '{{{{{t}}}}}' (supported: #if, #unless, #each, else) (line {line})"),
                Some(line),
            ))
        }
    };
    out.push_str("{%");
    out.push_str(open_marker);
    out.push_str(&tag);
    out.push_str(close_marker);
    out.push_str("%}");
    Ok(())
}

/// Whether `src` can apply a filter at all: every filter use needs a `|` or a `{% filter %}` block.
pub(crate) fn may_use_filters(src: &str) -> bool {
    src.contains('|') || src.contains("filter")
}

/// Names of the filters applied in a (translated) source, in order of first use, without duplicates.
pub(crate) fn used_filters(src: &str) -> Vec<String> {
    if !may_use_filters(src) {
        return Vec::new();
    }
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    };
    for seg in lex(src) {
        if !matches!(seg.kind, SegKind::Var | SegKind::Block) {
            continue;
        }
        let code = &src[seg.code_start..seg.code_end];
        let sig: Vec<Tok> = tokenize(code).into_iter().filter(|t| t.kind != TokKind::Ws).collect();
        for (k, tok) in sig.iter().enumerate() {
            let next_ident = sig.get(k + 1).filter(|t| t.kind == TokKind::Ident);
            let is_filter_pos = tok.kind == TokKind::Punct(b'|')
                || (seg.kind == SegKind::Block && k == 0 && &code[tok.start..tok.end] == "filter");
            if let (true, Some(name)) = (is_filter_pos, next_ident) {
                add(&code[name.start..name.end]);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<SegKind> {
        lex(src).iter().map(|s| s.kind).collect()
    }

    #[test]
    fn lexes_tags_strings_and_nested_braces() {
        assert_eq!(kinds("a {{ x }} b"), vec![SegKind::Text, SegKind::Var, SegKind::Text]);
        assert_eq!(kinds("{{ '}}' }}"), vec![SegKind::Var]);
        assert_eq!(kinds("{{ {'a': {'b': 1}} }}!"), vec![SegKind::Var, SegKind::Text]);
        assert_eq!(
            kinds("{# c #}{% if x %}y{% endif %}"),
            vec![SegKind::Comment, SegKind::Block, SegKind::Text, SegKind::Block]
        );
        assert_eq!(kinds("{% raw %}{{ x }}{% endraw %}z"), vec![SegKind::Raw, SegKind::Text]);
        assert_eq!(kinds("{{ x"), vec![SegKind::Text]);
    }

    #[test]
    fn rewrites_step_output_only_in_code() {
        assert_eq!(rewrite_code(" steps.a.output "), " steps.a ");
        assert_eq!(rewrite_code("steps.a.output.x + steps['b'].output"), "steps.a.x + steps['b']");
        assert_eq!(rewrite_code("context.steps.a.output"), "context.steps.a");
        assert_eq!(rewrite_code("x.steps.a.output"), "x.steps.a.output");
        assert_eq!(rewrite_code("'steps.a.output'"), "'steps.a.output'");
        let t = translate("steps.a.output {{ steps.a.output }}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.source, "steps.a.output {{ steps.a }}");
    }

    #[test]
    fn translates_helpers() {
        let t = translate("{{#if x}}a{{else}}b{{/if}}{{#each xs}}{{this}}{{/each}}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.source, "{% if x %}a{% else %}b{% endif %}{% for this in xs %}{{this}}{% endfor %}");
        assert!(t.single_expr.is_none());
        let err = translate("\n{{#with x}}{{/with}}").unwrap_err();
        assert_eq!(err.line(), Some(2));
    }

    #[test]
    fn detects_single_expressions() {
        let t = translate("  {{ previous_step }}\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.single_expr.as_deref(), Some(" previous_step "));
        assert!(!t.single_exact);
        let t = translate("{{ steps.a.output }}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.single_expr.as_deref(), Some(" steps.a "));
        assert!(t.single_exact);
        assert!(translate("{{ a }}{{ b }}").unwrap_or_else(|e| panic!("{e}")).single_expr.is_none());
    }

    #[test]
    fn refuses_loading_tags() {
        for src in ["{% include 'x' %}", "{% import 'x' as y %}", "{%- from 'x' import y %}", "{% extends 'x' %}"] {
            assert!(matches!(translate(src), Err(TemplateError::Syntax { .. })), "{src}");
        }
        assert!(translate("{% set include = 1 %}").is_ok());
    }

    #[test]
    fn finds_used_filters() {
        assert_eq!(
            used_filters("{{ x | upper | foo(1) }}{% filter bar %}{% endfilter %}{{ '|nope' }}"),
            vec!["upper", "foo", "bar"]
        );
    }
}
