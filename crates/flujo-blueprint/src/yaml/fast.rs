//! A fast path for the YAML most blueprints are written in: block mappings and sequences, single-line plain
//! and quoted scalars, single-line flow collections, literal and folded block scalars, comments.
//!
//! It builds the same [`Node`] tree (kinds, locations) as the event builder in the parent module, in one pass
//! over the bytes with no token queue, and gives up — `None` — on anything outside that subset (anchors,
//! aliases, tags, merge keys, multi-line plain or quoted scalars, multi-line flow collections, complex keys,
//! tabs, carriage returns, directives and document markers, empty values, deep nesting) and on every
//! malformed line. The caller then parses the whole text with saphyr-parser, which also produces every
//! error, so this path never decides what is valid; the differential tests in the parent module check that
//! whatever it accepts, saphyr-parser accepts the same way.

use std::borrow::Cow;

use super::{resolve_plain, Loc, Node, NodeKind, MAX_NODES};

/// Deeper documents take the full parser (which enforces [`super::MAX_YAML_DEPTH`]).
const MAX_DEPTH: usize = 100;
/// Longest implicit key YAML allows.
const MAX_KEY: usize = 1024;

/// The tree of `text` when it is in the fast path's subset; `None` otherwise (including when it is invalid).
pub(super) fn parse(text: &str) -> Option<Node> {
    if !plain_text(text) {
        return None;
    }
    let mut p = Fast {
        s: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
        line_start: 0,
        nodes: 0,
        ascii: text.is_ascii(),
        col_cache: std::cell::Cell::new((0, 0, 0)),
    };
    p.skip_blank_lines()?;
    if p.eof() {
        return None;
    }
    let ind = p.indent();
    let root = p.block_collection(ind, 0)?;
    p.eof().then_some(root)
}

/// No byte the fast path leaves to the full parser: control characters (tabs and carriage returns included),
/// DEL, a byte-order mark, and non-ASCII characters YAML treats specially or forbids.
fn plain_text(text: &str) -> bool {
    if text.bytes().any(|b| (b < 0x20 && b != b'\n') || b == 0x7f) {
        return false;
    }
    text.is_ascii()
        || text.chars().all(|c| {
            c.is_ascii() || matches!(c, '\u{a0}'..='\u{2027}' | '\u{202a}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..)
        })
}

struct Fast<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    /// 1-based line of `pos`.
    line: usize,
    /// Byte offset where `pos`'s line starts.
    line_start: usize,
    nodes: usize,
    /// The whole text is ASCII (columns are byte offsets).
    ascii: bool,
    /// The last column computed on a non-ASCII text: (line start, byte offset, column), so that the columns
    /// of the nodes of one long line cost the line once, not once per node.
    col_cache: std::cell::Cell<(usize, usize, usize)>,
}

/// Characters that cannot start a plain scalar in the subset (YAML's indicators; `-` only before a space).
fn starts_special(c: u8) -> bool {
    matches!(
        c,
        b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' | b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#'
    )
}

impl<'a> Fast<'a> {
    fn eof(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> u8 {
        self.s.get(self.pos).copied().unwrap_or(b'\n')
    }

    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(b'\n')
    }

    /// Column of `pos` on its line, 0-based (spaces only before it when used as an indent).
    fn indent(&self) -> usize {
        self.pos - self.line_start
    }

    fn loc(&self, pos: usize) -> Loc {
        let col = if self.ascii {
            pos - self.line_start
        } else {
            let (line_start, at, col) = self.col_cache.get();
            let (from, base) =
                if line_start == self.line_start && at <= pos { (at, col) } else { (self.line_start, 0) };
            let col = base + self.text[from..pos].chars().count();
            self.col_cache.set((self.line_start, pos, col));
            col
        };
        Loc { line: self.line, col: col + 1 }
    }

    fn count(&mut self) -> Option<()> {
        self.nodes += 1;
        (self.nodes <= MAX_NODES).then_some(())
    }

    fn skip_spaces(&mut self) {
        while self.peek() == b' ' && !self.eof() {
            self.pos += 1;
        }
    }

    /// At a line start: skips empty and comment-only lines, leaving `pos` on the first content character of
    /// the next content line (or at the end). `None` on a document marker or directive.
    fn skip_blank_lines(&mut self) -> Option<()> {
        loop {
            self.line_start = self.pos;
            self.skip_spaces();
            match self.peek() {
                _ if self.eof() => return Some(()),
                b'\n' => {}
                b'#' => self.skip_to_eol(),
                b'-' | b'.' if self.indent() == 0 && self.s[self.pos..].starts_with(b"---") => return None,
                b'.' if self.indent() == 0 && self.s[self.pos..].starts_with(b"...") => return None,
                b'%' if self.indent() == 0 => return None,
                _ => return Some(()),
            }
            if self.eof() {
                return Some(());
            }
            self.pos += 1; // the newline
            self.line += 1;
        }
    }

    fn skip_to_eol(&mut self) {
        self.pos = memchr(b'\n', &self.s[self.pos..]).map_or(self.s.len(), |i| self.pos + i);
    }

    /// After a node on its line: only spaces and a comment may follow; then on to the next content line.
    fn end_line(&mut self) -> Option<()> {
        // A comment needs a space before it (the caller may have skipped it already).
        let had_space = self.peek() == b' ' || (self.pos > self.line_start && self.s[self.pos - 1] == b' ');
        self.skip_spaces();
        match self.peek() {
            _ if self.eof() => return Some(()),
            b'\n' => {}
            b'#' if had_space => self.skip_to_eol(),
            _ => return None,
        }
        if self.eof() {
            return Some(());
        }
        self.pos += 1;
        self.line += 1;
        self.skip_blank_lines()
    }

    /// Whether a plain scalar may start at `i` in the subset: not an indicator, not `- `, and not `---` or
    /// `...` (which saphyr-parser reads as document markers in more places than column 1).
    fn plain_start(&self, i: usize) -> bool {
        let c = self.at(i);
        !(starts_special(c)
            || c == b'\n'
            || (c == b'-' && matches!(self.at(i + 1), b' ' | b'\n'))
            || self.s[i..].starts_with(b"---")
            || self.s[i..].starts_with(b"..."))
    }

    /// `-` followed by a space or the end of the line at `i`: a block sequence entry.
    fn seq_entry_at(&self, i: usize) -> bool {
        self.at(i) == b'-' && matches!(self.at(i + 1), b' ' | b'\n')
    }

    /// A block mapping or sequence whose first entry is at `pos`, in column `ind`.
    fn block_collection(&mut self, ind: usize, depth: usize) -> Option<Node> {
        if self.seq_entry_at(self.pos) {
            self.block_sequence(ind, depth, false)
        } else if self.key_ahead() {
            self.block_mapping(ind, depth)
        } else {
            None
        }
    }

    /// Whether the line from `pos` starts with an implicit key (`key:` followed by a space or line end).
    fn key_ahead(&mut self) -> bool {
        let c = self.peek();
        if c == b'"' || c == b'\'' {
            // A quoted key is followed by its colon; a quoted scalar is not (look ahead, then come back).
            let start = self.pos;
            let key = self.quoted().is_some() && {
                self.skip_spaces();
                self.peek() == b':' && matches!(self.at(self.pos + 1), b' ' | b'\n')
            };
            self.pos = start;
            return key;
        }
        if !self.plain_start(self.pos) {
            return false;
        }
        matches!(self.scan_plain(self.pos, false), Some((_, Stop::Colon)))
    }

    /// Scans a plain scalar starting at `start` (block or flow context): where its text ends (trailing
    /// spaces excluded) and what ended it. `None` on what the subset leaves to the full parser.
    fn scan_plain(&self, start: usize, flow: bool) -> Option<(usize, Stop)> {
        let mut i = start;
        let stop = loop {
            match self.at(i) {
                b'\n' if flow => return None,
                b'\n' => break Stop::Eol,
                b'[' | b'{' if flow => return None,
                b',' | b']' | b'}' if flow => break Stop::Flow,
                b':' => match self.at(i + 1) {
                    b' ' => break Stop::Colon,
                    b'\n' if !flow => break Stop::Colon,
                    b',' | b']' | b'}' | b'\n' | b'[' | b'{' if flow => return None,
                    _ => i += 1,
                },
                b'#' if i > start && self.s[i - 1] == b' ' => {
                    if flow {
                        return None;
                    }
                    break Stop::Comment;
                }
                // saphyr-parser rejects `-` before a flow indicator in more places than YAML does.
                b'-' if matches!(self.at(i + 1), b',' | b'[' | b']' | b'{' | b'}') => return None,
                _ => i += 1,
            }
        };
        Some((start + self.text[start..i].trim_end_matches(' ').len(), stop))
    }

    fn block_mapping(&mut self, ind: usize, depth: usize) -> Option<Node> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.count()?;
        let loc = self.loc(self.pos);
        let mut entries = Vec::new();
        loop {
            let key = self.key()?;
            let value = self.block_value(ind, depth + 1)?;
            entries.push((key, value));
            if self.eof() || self.indent() < ind {
                break;
            }
            if self.indent() > ind {
                return None;
            }
        }
        Some(Node { kind: NodeKind::Map(entries), loc, merged: false })
    }

    /// An implicit key at `pos` and its `:`; leaves `pos` after the colon.
    fn key(&mut self) -> Option<Node> {
        self.count()?;
        let start = self.pos;
        let loc = self.loc(start);
        let kind = match self.peek() {
            b'"' | b'\'' => {
                let s = self.quoted()?;
                self.skip_spaces();
                NodeKind::Str(s)
            }
            _ if !self.plain_start(self.pos) => return None,
            _ => {
                let Some((end, Stop::Colon)) = self.scan_plain(start, false) else { return None };
                let raw = &self.text[start..end];
                if raw == "<<" {
                    return None; // merge keys: the full parser expands them
                }
                self.pos = end;
                self.skip_spaces();
                resolve_plain(Cow::Borrowed(raw))
            }
        };
        if self.pos - start > MAX_KEY || self.peek() != b':' || !matches!(self.at(self.pos + 1), b' ' | b'\n') {
            return None;
        }
        self.pos += 1;
        Some(Node { kind, loc, merged: false })
    }

    /// The value after a block mapping key's `:` (parent mapping in column `ind`); leaves `pos` on the next
    /// content line.
    fn block_value(&mut self, ind: usize, depth: usize) -> Option<Node> {
        self.skip_spaces();
        if matches!(self.peek(), b'\n' | b'#') {
            // The value is on the following lines: a nested collection (a sequence may sit at the key's column).
            self.end_line()?;
            if self.eof() {
                return None;
            }
            let col = self.indent();
            if col > ind {
                return self.block_collection(col, depth);
            }
            if col == ind && self.seq_entry_at(self.pos) {
                return self.block_sequence(col, depth, true);
            }
            return None; // an empty value
        }
        self.inline_value(ind, depth)
    }

    /// A value that starts on the current line at `pos`, inside a block collection in column `ind`: a flow
    /// collection, a quoted or plain scalar, or a block scalar. Leaves `pos` on the next content line.
    fn inline_value(&mut self, ind: usize, depth: usize) -> Option<Node> {
        let start = self.pos;
        let loc = self.loc(start);
        let node = match self.peek() {
            b'{' | b'[' => self.flow(depth)?,
            b'"' | b'\'' => {
                self.count()?;
                Node { kind: NodeKind::Str(self.quoted()?), loc, merged: false }
            }
            b'|' | b'>' => return self.block_scalar(ind),
            _ if !self.plain_start(start) => return None,
            _ => {
                self.count()?;
                let (end, stop) = self.scan_plain(start, false)?;
                if stop == Stop::Colon {
                    return None; // `a: b: c`
                }
                self.pos = end;
                Node { kind: resolve_plain(Cow::Borrowed(&self.text[start..end])), loc, merged: false }
            }
        };
        self.end_line()?;
        // A more indented line after a scalar continues it (or is an error): the full parser decides.
        if !self.eof() && self.indent() > ind {
            return None;
        }
        Some(node)
    }

    /// A block sequence whose first `-` is at `pos`, in column `ind`; `indentless` when it is a mapping value
    /// in the mapping's own column (`key:` then `- item` below it).
    fn block_sequence(&mut self, ind: usize, depth: usize, indentless: bool) -> Option<Node> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.count()?;
        // saphyr-parser locates a block sequence at its first `-`, an indentless one at its first entry's
        // content.
        let mut loc = (!indentless).then(|| self.loc(self.pos));
        let mut items = Vec::new();
        loop {
            // At the `-` in column `ind`.
            self.pos += 1;
            self.skip_spaces();
            if loc.is_none() {
                if matches!(self.peek(), b'\n' | b'#') {
                    return None;
                }
                loc = Some(self.loc(self.pos));
            }
            let item = if matches!(self.peek(), b'\n' | b'#') {
                self.end_line()?;
                if self.eof() || self.indent() <= ind {
                    return None; // an empty entry
                }
                let col = self.indent();
                self.block_collection(col, depth + 1)?
            } else {
                let col = self.indent();
                if self.seq_entry_at(self.pos) || self.key_ahead() {
                    self.block_collection(col, depth + 1)?
                } else {
                    self.inline_value(ind, depth + 1)?
                }
            };
            items.push(item);
            if self.eof() || self.indent() < ind {
                break;
            }
            if self.indent() > ind {
                return None;
            }
            if !self.seq_entry_at(self.pos) {
                break; // the next key of a mapping whose value this sequence is
            }
        }
        Some(Node { kind: NodeKind::Seq(items), loc: loc?, merged: false })
    }

    /// A literal (`|`) or folded (`>`) block scalar whose header is at `pos`, under a collection in column
    /// `ind`. Only the plain forms: an optional chomping indicator (`-`/`+`) and no explicit indentation.
    fn block_scalar(&mut self, ind: usize) -> Option<Node> {
        self.count()?;
        let literal = self.peek() == b'|';
        self.pos += 1;
        let chomp = match self.peek() {
            b'-' => {
                self.pos += 1;
                Chomp::Strip
            }
            b'+' => {
                self.pos += 1;
                Chomp::Keep
            }
            _ => Chomp::Clip,
        };
        // The rest of the header line: spaces and a comment only.
        let had_space = self.peek() == b' ';
        self.skip_spaces();
        match self.peek() {
            b'\n' => {}
            b'#' if had_space => self.skip_to_eol(),
            _ => return None,
        }
        if self.eof() {
            return None;
        }
        // Content lines: indented more than `ind`; the first non-empty one sets the indentation.
        let mut lines: Vec<&'a str> = Vec::new();
        let mut content_indent = 0;
        let mut loc = None;
        let mut next = self.pos + 1;
        let mut line = self.line + 1;
        let end_of_scalar;
        loop {
            if next >= self.s.len() {
                end_of_scalar = self.s.len();
                break;
            }
            let eol = memchr(b'\n', &self.s[next..]).map_or(self.s.len(), |i| next + i);
            let body = &self.text[next..eol];
            let spaces = body.len() - body.trim_start_matches(' ').len();
            if spaces == body.len() {
                // An empty (or all-space) line belongs to the scalar, unless more spaces than the content
                // indentation come before the first content line (YAML makes that an error).
                if (content_indent == 0 && spaces > ind + 1) || (content_indent > 0 && spaces > content_indent) {
                    return None; // spaces that are content (or an error)
                }
                lines.push(body);
            } else {
                if content_indent == 0 {
                    if spaces <= ind {
                        end_of_scalar = next;
                        break;
                    }
                    if lines.iter().any(|l| l.len() > spaces) {
                        return None;
                    }
                    content_indent = spaces;
                    // saphyr-parser locates a block scalar at its first content character.
                    loc = Some(Loc { line, col: spaces + 1 });
                } else if spaces < content_indent {
                    if spaces > ind {
                        return None; // a less indented line still in the scalar's range
                    }
                    end_of_scalar = next;
                    break;
                }
                lines.push(body);
            }
            if eol >= self.s.len() {
                end_of_scalar = self.s.len();
                break;
            }
            next = eol + 1;
            line += 1;
        }
        // Trailing empty lines after the content belong to chomping, not to the following node.
        if end_of_scalar == self.s.len() && !self.text.ends_with('\n') {
            return None; // the last line without its line break
        }
        let value = block_text(&lines, content_indent, literal, chomp);
        self.pos = end_of_scalar;
        self.line = line;
        self.line_start = end_of_scalar;
        if end_of_scalar < self.s.len() {
            // `line` counted the line that ended the scalar; it is the current line now.
            self.skip_blank_lines()?;
        } else {
            self.line_start = self.s.len();
        }
        if !self.eof() && self.indent() > ind {
            return None;
        }
        Some(Node { kind: NodeKind::Str(value), loc: loc?, merged: false })
    }

    /// A flow collection at `pos` (`{` or `[`), on one line.
    fn flow(&mut self, depth: usize) -> Option<Node> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.count()?;
        let loc = self.loc(self.pos);
        let open = self.peek();
        self.pos += 1;
        let close = if open == b'{' { b'}' } else { b']' };
        let mut entries = Vec::new();
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            if self.peek() == close {
                self.pos += 1;
                break;
            }
            let quoted_key = matches!(self.peek(), b'"' | b'\'');
            let item = self.flow_node(depth + 1)?;
            if open == b'{' {
                if !quoted_key && item.as_str() == Some("<<") {
                    return None; // merge keys: the full parser expands them
                }
                // `key: value` (a plain key needs a space after its colon; a quoted one may be followed by
                // its colon directly, as in JSON).
                if !quoted_key {
                    self.skip_spaces();
                }
                if self.peek() != b':' || (!quoted_key && self.at(self.pos + 1) != b' ') {
                    return None;
                }
                self.pos += 1;
                self.skip_spaces();
                if matches!(self.peek(), b',' | b'}' | b'\n') {
                    return None; // an empty value
                }
                let value = self.flow_node(depth + 1)?;
                entries.push((item, value));
            } else {
                self.skip_spaces();
                if self.peek() == b':' {
                    return None; // a single-pair mapping inside a sequence
                }
                items.push(item);
            }
            self.skip_spaces();
            match self.peek() {
                b',' => self.pos += 1,
                c if c == close => {
                    self.pos += 1;
                    break;
                }
                _ => return None,
            }
        }
        let kind = if open == b'{' { NodeKind::Map(entries) } else { NodeKind::Seq(items) };
        Some(Node { kind, loc, merged: false })
    }

    /// A node inside a flow collection: a nested collection, a quoted scalar or a plain scalar (which ends at
    /// `,`, `]`, `}` or `: `).
    fn flow_node(&mut self, depth: usize) -> Option<Node> {
        let start = self.pos;
        let loc = self.loc(start);
        match self.peek() {
            b'{' | b'[' => self.flow(depth),
            b'"' | b'\'' => {
                self.count()?;
                Some(Node { kind: NodeKind::Str(self.quoted()?), loc, merged: false })
            }
            b'-' if matches!(self.at(start + 1), b',' | b']' | b'}') => None,
            _ if !self.plain_start(start) => None,
            _ => {
                self.count()?;
                let (end, _) = self.scan_plain(start, true)?;
                self.pos = end;
                Some(Node { kind: resolve_plain(Cow::Borrowed(&self.text[start..end])), loc, merged: false })
            }
        }
    }

    /// A single-line quoted scalar at `pos`; leaves `pos` after the closing quote.
    fn quoted(&mut self) -> Option<String> {
        let quote = self.peek();
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.s[self.pos..];
            let stop = rest.iter().position(|&c| c == quote || c == b'\n' || (quote == b'"' && c == b'\\'))?;
            out.push_str(&self.text[self.pos..self.pos + stop]);
            self.pos += stop;
            match self.s[self.pos] {
                b'\n' => return None,
                b'\'' if quote == b'\'' => {
                    if self.at(self.pos + 1) == b'\'' {
                        out.push('\'');
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        return Some(out);
                    }
                }
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                _ => {
                    // A backslash escape.
                    let (c, len) = self.escape(self.pos + 1)?;
                    out.push(c);
                    self.pos += 1 + len;
                }
            }
        }
    }

    /// The escape after a backslash at `i`: the character and how many bytes it took.
    fn escape(&self, i: usize) -> Option<(char, usize)> {
        let hex = |n: usize| -> Option<(char, usize)> {
            let digits = self.text.get(i + 1..i + 1 + n)?;
            if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            Some((char::from_u32(u32::from_str_radix(digits, 16).ok()?)?, n + 1))
        };
        Some(match self.at(i) {
            b'0' => ('\0', 1),
            b'a' => ('\u{7}', 1),
            b'b' => ('\u{8}', 1),
            b't' => ('\t', 1),
            b'n' => ('\n', 1),
            b'v' => ('\u{b}', 1),
            b'f' => ('\u{c}', 1),
            b'r' => ('\r', 1),
            b'e' => ('\u{1b}', 1),
            b' ' => (' ', 1),
            b'"' => ('"', 1),
            b'/' => ('/', 1),
            b'\\' => ('\\', 1),
            b'x' => hex(2)?,
            b'u' => hex(4)?,
            b'U' => hex(8)?,
            _ => return None,
        })
    }
}

/// What ended a plain scalar.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The end of the line.
    Eol,
    /// A comment (` #`).
    Comment,
    /// `: ` (or `:` at the end of the line in block context): the scalar is a key.
    Colon,
    /// `,`, `]` or `}` in a flow collection.
    Flow,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chomp {
    Strip,
    Clip,
    Keep,
}

/// The value of a block scalar from its lines (content lines indented by `indent`, empty lines as written).
fn block_text(lines: &[&str], indent: usize, literal: bool, chomp: Chomp) -> String {
    // Split off trailing empty lines (chomping decides about them).
    let content = lines.iter().rposition(|l| !l.trim_start_matches(' ').is_empty()).map_or(0, |i| i + 1);
    let mut out = String::new();
    let mut prev_more_indented = false;
    let mut pending_breaks = 0usize; // empty lines since the last content line (folded scalars)
    for (n, l) in lines[..content].iter().enumerate() {
        let body = l.get(indent..).unwrap_or("");
        if literal {
            out.push_str(body);
            out.push('\n');
            continue;
        }
        if body.is_empty() {
            pending_breaks += 1;
            continue;
        }
        let more_indented = body.starts_with(' ');
        if n > 0 {
            if pending_breaks > 0 {
                // A line break followed by empty lines: the empty lines are kept, the break is folded away
                // (unless a more indented line is involved).
                if prev_more_indented || more_indented {
                    out.push('\n');
                }
                for _ in 0..pending_breaks {
                    out.push('\n');
                }
            } else if prev_more_indented || more_indented {
                out.push('\n');
            } else {
                out.push(' ');
            }
        } else {
            for _ in 0..pending_breaks {
                out.push('\n');
            }
        }
        pending_breaks = 0;
        out.push_str(body);
        prev_more_indented = more_indented;
    }
    if !literal && content > 0 {
        out.push('\n');
    }
    match chomp {
        Chomp::Strip => {
            while out.ends_with('\n') {
                out.pop();
            }
        }
        Chomp::Clip => {}
        Chomp::Keep => {
            for _ in content..lines.len() {
                out.push('\n');
            }
        }
    }
    out
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::super::{Builder, ParseError};
    use super::*;
    use proptest::prelude::*;

    fn full(text: &str) -> Result<Node, ParseError> {
        Builder::new(text).document()
    }

    /// Whatever the fast path accepts, the full parser accepts as the same tree (kinds, locations).
    fn agrees(text: &str) -> Result<bool, String> {
        let Some(fast) = parse(text) else { return Ok(false) };
        match full(text) {
            Ok(node) if node == fast => Ok(true),
            Ok(node) => {
                let (a, b) = (format!("{fast:#?}"), format!("{node:#?}"));
                let at = a.lines().zip(b.lines()).position(|(x, y)| x != y).unwrap_or(0);
                let show = |t: &str| t.lines().skip(at.saturating_sub(6)).take(8).collect::<Vec<_>>().join("\n");
                Err(format!("different trees for {text:?}:\nfast …{}\nfull …{}", show(&a), show(&b)))
            }
            Err(e) => Err(format!("fast path accepted what the full parser rejects ({e:?}): {text:?}")),
        }
    }

    fn corpus() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut out = Vec::new();
        let mut dirs = vec![root.join("crates"), root.join("fuzz/seeds"), root.join("examples")];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() && !path.ends_with("target") {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    if let Ok(text) = std::fs::read_to_string(&path) {
                        out.push(text);
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn agrees_with_the_full_parser_on_every_blueprint_in_the_repository() {
        let docs = corpus();
        assert!(docs.len() > 200, "found only {} YAML files", docs.len());
        let mut fast = 0;
        for doc in &docs {
            if agrees(doc).unwrap_or_else(|e| panic!("{e}")) {
                fast += 1;
            }
        }
        // Most of them are in the subset (the rest are tags, anchors, errors, multi-line scalars…).
        eprintln!("{fast} of {} YAML files in the repository took the fast path", docs.len());
        assert!(fast * 2 > docs.len(), "only {fast} of {} took the fast path", docs.len());
    }

    #[test]
    fn takes_the_common_forms() {
        let docs = [
            "version: \"0.1\"\nname: bench\nsteps:\n  - name: s0\n    agent: {id: flujo.builtins.transform, params: {expr: \"previous_step + 1\"}}\n",
            "a:\n- 1\n- [x, 'y''s', \"\\u00e9\\n\"]\nb: {k: v, n: [1, {m: 2}]}  # comment\n# last\n",
            "- - a\n  - b\n-   k: v\n    j: w\n- c\n",
            "prompt: |\n  line one\n    indented\n\n  after a gap\nnext: >-\n  folded\n  text\n",
            "ñ: 'dónde'\n\"q k\": x:y\nk2: http://a.b/c?d=e#f\n",
            "a:  # the value follows\n  b: 1\nc:\n  - # an item follows\n    d: 2\n",
            "- \"x\"\n- 'y'\n- \"k\": v\n",
            "é: [1, 2, {ü: 3}, 'ñ', [4]]  # long lines of a non-ASCII text\n",
        ];
        for doc in docs {
            assert_eq!(agrees(doc), Ok(true), "{doc}");
        }
        // Left to the full parser: every one of these.
        for doc in [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a:\n  <<: {b: 1}\n",
            "a: b\n  c\n",
            "a: 'multi\n  line'\n",
            "a: [1,\n  2]\n",
            "a:\n",
            "a:\tb\n",
            "a: 1\r\n",
            "--- a: 1\n",
            "%YAML 1.2\n---\na: 1\n",
            "? a\n: b\n",
            "a: b: c\n",
            "a: 1\n  b: 2\n",
            "just a scalar\n",
            "",
            "a: |2\n   x\n",
        ] {
            assert_eq!(parse(doc), None, "{doc:?}");
        }
    }

    /// Pieces that exercise the subset's edges when spliced into documents.
    const PIECES: &[&str] = &[
        " ",
        "  ",
        "\n",
        "\n  ",
        "\n- ",
        "- ",
        ":",
        ": ",
        "#",
        " #",
        "'",
        "''",
        "\"",
        "\\",
        "\\n",
        "\\x4",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "!",
        "|",
        "|-",
        ">",
        ">+",
        "?",
        "%",
        "@",
        "`",
        "~",
        "---",
        "...",
        "<<",
        "null",
        "true",
        "0x1F",
        "1e3",
        ".inf",
        "-",
        "é",
        "\t",
        "\r",
        "a",
        "key: value\n",
        "  nested: {a: [1, 2]}\n",
    ];

    /// Documents in the subset's style, generated from a seed.
    fn generated(seed: u64) -> String {
        let mut rng = seed | 1;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        const SCALARS: &[&str] = &[
            "x",
            "a b",
            "1",
            "-2",
            "0o17",
            "1.5",
            "true",
            "False",
            "~",
            "null",
            "'q'",
            "'it''s'",
            "\"d\\\"q\"",
            "\"\\t\"",
            "http://h:1/p",
            "a#b",
            "a, b",
            "-x",
            ".nan",
            "\"\"",
            "ü",
            "x  # c",
        ];
        fn value(out: &mut String, ind: usize, depth: usize, next: &mut dyn FnMut(usize) -> usize) {
            let pad = " ".repeat(ind);
            match if depth > 3 { 0 } else { next(6) } {
                0 | 1 => {
                    out.push(' ');
                    out.push_str(SCALARS[next(SCALARS.len())]);
                    out.push('\n');
                }
                2 => {
                    out.push_str(" {a: 1, \"b\": [x, {c: d}], e: 'f'}\n");
                }
                3 => {
                    out.push_str(if next(2) == 0 { " |\n" } else { " >-\n" });
                    for _ in 0..=next(3) {
                        out.push_str(&pad);
                        out.push_str(&"  ".repeat(1 + next(2)));
                        out.push_str(SCALARS[next(SCALARS.len())]);
                        out.push('\n');
                        if next(3) == 0 {
                            out.push('\n');
                        }
                    }
                }
                4 => {
                    out.push('\n');
                    let inner = ind + 1 + next(3);
                    for i in 0..=next(3) {
                        out.push_str(&" ".repeat(inner));
                        out.push_str(&format!("k{i}:"));
                        value(out, inner, depth + 1, next);
                    }
                }
                _ => {
                    out.push('\n');
                    let inner = ind + next(3);
                    for _ in 0..=next(3) {
                        out.push_str(&" ".repeat(inner));
                        out.push('-');
                        if next(2) == 0 {
                            out.push_str(" m: 1\n");
                            out.push_str(&" ".repeat(inner + 2));
                            out.push_str("n:");
                            value(out, inner + 2, depth + 1, next);
                        } else {
                            value(out, inner, depth + 1, next);
                        }
                    }
                }
            }
        }
        let mut out = String::new();
        for i in 0..=next(4) {
            if next(4) == 0 {
                out.push_str("# comment\n");
            }
            out.push_str(&format!("top{i}:"));
            value(&mut out, 0, 0, &mut next);
        }
        out
    }

    #[test]
    fn generated_documents_take_the_fast_path_the_same_way() {
        let mut fast = 0;
        for seed in 0..3000u64 {
            let doc = generated(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            if agrees(&doc).unwrap_or_else(|e| panic!("seed {seed}: {e}")) {
                fast += 1;
            }
        }
        assert!(fast > 1500, "only {fast} of 3000 generated documents took the fast path");
    }

    proptest! {
        // `FLUJO_YAML_FUZZ_CASES=1000000 cargo test -p flujo-blueprint --lib yaml::fast` for a long run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("FLUJO_YAML_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000),
            ..ProptestConfig::default()
        })]

        /// Documents damaged by splicing YAML's special characters in: accepted alike or left to the full
        /// parser.
        #[test]
        fn damaged_documents_never_disagree(
            seed in any::<u64>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..PIECES.len(), 0usize..3), 1..4),
        ) {
            static CORPUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            let corpus = CORPUS.get_or_init(corpus);
            let mut doc = if seed % 3 == 0 { corpus[(seed / 3) as usize % corpus.len()].clone() } else { generated(seed) };
            for (at, piece, del) in edits {
                let mut i = at.index(doc.len() + 1);
                while !doc.is_char_boundary(i) {
                    i -= 1;
                }
                let mut end = (i + del).min(doc.len());
                while !doc.is_char_boundary(end) {
                    end += 1;
                }
                doc.replace_range(i..end, PIECES[piece]);
            }
            if let Err(e) = agrees(&doc) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
