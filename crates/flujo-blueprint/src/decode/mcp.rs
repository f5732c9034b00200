//! MCP servers in blueprints: decoding `mcp_servers:` and checking the skill ids `mcp.NAME.TOOL`.
//!
//! ```yaml
//! mcp_servers:
//!   files:                                   # the NAME of mcp.files.TOOL
//!     command: ["npx", "-y", "@modelcontextprotocol/server-filesystem", "."]
//!     env: {LOG_LEVEL: debug}                # values may reference the environment: ${HOME}
//!     cwd: tools                             # relative to the blueprint's folder (the default)
//!     timeout_s: 30                          # per call (default 60)
//!   search:
//!     url: https://mcp.example.com/mcp       # streamable HTTP
//!     headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
//! ```
//!
//! A server is a `command` (a list, or a program with `args:`) or a `url`, never both. A skill id
//! `mcp.NAME.TOOL` (a step's `agent: {id: …}`, an agent's `tools:`) must name a server declared here, in an
//! imported blueprint, or in `flujo.toml` ([`crate::LoadOptions::mcp_servers`]): otherwise `BP-MCP-SERVER`.
//! The blueprint crate never connects to a server; a caller that can (the `flujo validate` command) passes
//! an [`McpToolCheck`], and then an unknown tool is `BP-MCP-TOOL` and an unreachable server the warning
//! `BP-MCP-UNREACHABLE` (so validation works offline).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::Decoder;
use crate::raw::Sp;
use crate::rules;
use crate::suggest::closest;
use crate::yaml::{Loc, Node, NodeKind};

/// The fields of one server under `mcp_servers:`.
const SERVER_FIELDS: &[&str] = &["command", "args", "env", "cwd", "url", "headers", "timeout_s", "description"];

/// One server declared under a blueprint's `mcp_servers:`.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct McpServerDecl {
    /// The server's name (the `NAME` of `mcp.NAME.TOOL`).
    pub name: String,
    /// A stdio server's program and arguments (`args:` appended), as written.
    pub command: Option<Vec<String>>,
    /// A stdio server's extra environment; values may hold `${VAR}` references.
    pub env: BTreeMap<String, String>,
    /// The folder a stdio server starts in: `cwd` resolved against the blueprint's folder (by default the
    /// blueprint's folder).
    pub cwd: PathBuf,
    /// A streamable-HTTP server's URL.
    pub url: Option<String>,
    /// A streamable-HTTP server's headers; values may hold `${VAR}` references.
    pub headers: BTreeMap<String, String>,
    /// The per-call timeout in seconds, when set.
    pub timeout_s: Option<f64>,
    /// The blueprint that declares it.
    pub file: PathBuf,
    /// Where its name is written.
    pub(crate) loc: Loc,
}

/// Header and environment values are not shown (they may hold credentials written in the blueprint).
impl std::fmt::Debug for McpServerDecl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServerDecl")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_s", &self.timeout_s)
            .field("file", &self.file)
            .finish()
    }
}

/// What a caller that can reach MCP servers says about a tool (see [`McpToolCheck`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum McpToolStatus {
    /// The server offers the tool.
    Found,
    /// The server answered and does not offer the tool; `available` are the tools it does offer.
    Missing {
        /// The server's tools.
        available: Vec<String>,
    },
    /// The server could not be asked (offline, not installed, …): why.
    Unreachable(String),
}

/// Asks MCP servers whether they offer a tool (implemented by callers that can connect, e.g. `flujo
/// validate`; the blueprint crate never connects). Called once per `mcp.NAME.TOOL` reference; an
/// implementation should remember each server's answer.
pub trait McpToolCheck: Send + Sync {
    /// Whether `server` offers `tool`. `declared` is the blueprint's declaration of the server, `None` when
    /// only the caller's configuration declares it ([`crate::LoadOptions::mcp_servers`]).
    fn check(&self, server: &str, declared: Option<&McpServerDecl>, tool: &str) -> McpToolStatus;
}

/// The MCP servers a file's skill ids may name, and the checker to ask about their tools.
pub(crate) struct McpScope<'a> {
    /// Name → the blueprint declaration (`None`: declared by the caller's configuration only).
    pub declared: BTreeMap<String, Option<McpServerDecl>>,
    pub check: Option<&'a dyn McpToolCheck>,
    /// Servers already reported unreachable in this file (one warning each).
    pub reported: RefCell<BTreeSet<String>>,
}

impl<'a> McpScope<'a> {
    pub fn new(decls: &[McpServerDecl], configured: &[String], check: Option<&'a dyn McpToolCheck>) -> McpScope<'a> {
        let mut declared: BTreeMap<String, Option<McpServerDecl>> =
            configured.iter().map(|n| (n.clone(), None)).collect();
        for d in decls {
            declared.insert(d.name.clone(), Some(d.clone()));
        }
        McpScope { declared, check, reported: RefCell::new(BTreeSet::new()) }
    }

    /// Checks the skill id `mcp.…` at `id`: a declared server and a tool name, and (with a checker) a tool
    /// the server offers.
    pub fn check_id(&self, d: &mut Decoder<'_>, id: &Sp<String>, label: &str) {
        let Some(rest) = id.v.strip_prefix("mcp.") else { return };
        let (name, tool) = rest.split_once('.').unwrap_or((rest, ""));
        let Some(decl) = self.declared.get(name) else {
            let suggestion = closest(name, self.declared.keys().map(String::as_str))
                .map(|c| format!("did you mean `mcp.{c}.{tool}`?"))
                .or_else(|| {
                    Some(format!(
                        "declare the server under `mcp_servers:` (`mcp_servers: {{{name}: {{command: [\"my-mcp-server\"]}}}}`) \
                         or as [mcp.servers.{name}] in flujo.toml"
                    ))
                });
            d.report_with(
                rules::BP_MCP_SERVER,
                id.loc,
                format!("{label}: `{}` names MCP server `{name}`, which is not declared", id.v),
                suggestion,
            );
            return;
        };
        if tool.is_empty() {
            d.report_with(
                rules::BP_MCP_SERVER,
                id.loc,
                format!("{label}: `{}` names no tool of MCP server `{name}`", id.v),
                Some(format!("write `mcp.{name}.TOOL`")),
            );
            return;
        }
        let Some(check) = self.check else { return };
        match check.check(name, decl.as_ref(), tool) {
            McpToolStatus::Found => {}
            McpToolStatus::Missing { available } => {
                let suggestion = closest(tool, available.iter().map(String::as_str))
                    .map(|c| format!("did you mean `mcp.{name}.{c}`?"))
                    .or_else(|| {
                        Some(if available.is_empty() {
                            format!("MCP server `{name}` offers no tools")
                        } else {
                            format!("MCP server `{name}` offers: {}", available.join(", "))
                        })
                    });
                d.report_with(
                    rules::BP_MCP_TOOL,
                    id.loc,
                    format!("{label}: MCP server `{name}` has no tool `{tool}`"),
                    suggestion,
                );
            }
            McpToolStatus::Unreachable(why) => {
                if self.reported.borrow_mut().insert(name.to_owned()) {
                    d.report(
                        rules::BP_MCP_UNREACHABLE,
                        id.loc,
                        format!("MCP server `{name}` could not be reached, so its tools were not checked: {why}"),
                    );
                }
            }
        }
    }
}

/// `Ok` when `name` can be an MCP server's name: 1 to 64 letters, digits, `_` or `-`.
fn valid_server_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What is wrong with the `${VAR}` references of `value`, if anything.
fn reference_problem(value: &str) -> Option<String> {
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Some("`${` without a closing `}`".into());
        };
        let name = &after[..end];
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            let shown: String = name.chars().take(40).collect();
            return Some(format!("`${{{shown}}}` is not a variable reference (write ${{NAME}})"));
        }
        rest = &after[end + 1..];
    }
    None
}

/// An HTTP header name (RFC 9110 token).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Decoder<'_> {
    /// `mcp_servers: {NAME: {command | url, …}}`.
    pub(crate) fn mcp_servers(&mut self, node: &Node) -> Vec<McpServerDecl> {
        let Some(fields) = self.fields(node, "`mcp_servers`") else {
            return Vec::new();
        };
        let entries: Vec<(String, &Node, &Node)> = fields.all().map(|(k, kn, v)| (k.to_owned(), kn, v)).collect();
        let mut out = Vec::new();
        for (name, key, value) in entries {
            if !valid_server_name(&name) {
                self.report_with(
                    rules::BP_MCP_SERVER,
                    key.loc,
                    format!("`{}` cannot be an MCP server name", name.chars().take(80).collect::<String>()),
                    Some("use 1 to 64 letters, digits, `_` or `-` (no dots: tools are named mcp.NAME.TOOL)".into()),
                );
                continue;
            }
            if let Some(decl) = self.mcp_server(&name, key.loc, value) {
                out.push(decl);
            }
        }
        out
    }

    fn mcp_server(&mut self, name: &str, loc: Loc, node: &Node) -> Option<McpServerDecl> {
        let what = format!("MCP server `{name}`");
        let mut f = self.fields(node, &format!("`mcp_servers.{name}`"))?;
        let dir = self.file.parent().map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p });
        let dir = dir.map(std::path::Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let mut decl = McpServerDecl {
            name: name.to_owned(),
            command: None,
            env: BTreeMap::new(),
            cwd: dir.clone(),
            url: None,
            headers: BTreeMap::new(),
            timeout_s: None,
            file: self.file.to_path_buf(),
            loc,
        };
        let mut ok = true;
        if let Some(n) = f.take("command") {
            decl.command = match &n.kind {
                NodeKind::Str(s) if !s.trim().is_empty() => Some(vec![s.clone()]),
                NodeKind::Seq(items) if !items.is_empty() => self.scalar_list(items, &format!("`command` of {what}")),
                _ => {
                    self.type_error(
                        n,
                        &format!("`command` of {what}"),
                        "a program, or a non-empty list of a program and its arguments",
                    );
                    None
                }
            };
            ok &= decl.command.is_some();
        }
        if let Some(n) = f.take("args") {
            let args = match &n.kind {
                NodeKind::Seq(items) => self.scalar_list(items, &format!("`args` of {what}")),
                _ => {
                    self.type_error(n, &format!("`args` of {what}"), "a list");
                    None
                }
            };
            // A bad argument was reported; the server cannot be used.
            let args = args?;
            match &mut decl.command {
                Some(c) => c.extend(args),
                None if ok => {
                    self.report(rules::BP_MCP_SERVER, n.loc, format!("{what}: `args` needs a `command`"));
                    ok = false;
                }
                None => {}
            }
        }
        if let Some(n) = f.take("env") {
            decl.env = self.string_map(n, &format!("`env` of {what}"), &mut ok, false);
        }
        if let Some(n) = f.take("cwd") {
            if let Some(c) = self.string(n, &format!("`cwd` of {what}")) {
                decl.cwd = dir.join(&c.v);
            }
        }
        if let Some(n) = f.take("url") {
            if let Some(u) = self.string(n, &format!("`url` of {what}")) {
                let lower = u.v.to_ascii_lowercase();
                if lower.starts_with("http://") || lower.starts_with("https://") {
                    decl.url = Some(u.v);
                } else {
                    self.report_with(
                        rules::BP_MCP_SERVER,
                        n.loc,
                        format!("{what}: `url` must start with http:// or https://"),
                        Some("MCP servers are reached over streamable HTTP (`url`) or stdio (`command`)".into()),
                    );
                    ok = false;
                }
            } else {
                ok = false;
            }
        }
        if let Some(n) = f.take("headers") {
            decl.headers = self.string_map(n, &format!("`headers` of {what}"), &mut ok, true);
        }
        if let Some(n) = f.take("timeout_s") {
            decl.timeout_s = self.duration_secs(n, &format!("`timeout_s` of {what}"));
        }
        if let Some(n) = f.take("description") {
            self.scalar(n, &format!("`description` of {what}"));
        }
        let (has_command, has_url) = (f.has("command"), f.has("url"));
        self.finish(f, SERVER_FIELDS, &format!("`mcp_servers.{name}`"), |_| None);
        match (has_command, has_url) {
            (true, true) => {
                self.report(rules::BP_MCP_SERVER, loc, format!("{what} has both `command` and `url`; give one"));
                return None;
            }
            (false, false) => {
                self.report_with(
                    rules::BP_MCP_SERVER,
                    loc,
                    format!("{what} has neither `command` (stdio) nor `url` (streamable HTTP)"),
                    Some(format!("e.g. `{name}: {{command: [\"my-mcp-server\", \"--stdio\"]}}`")),
                );
                return None;
            }
            (false, true) if !decl.env.is_empty() => {
                self.report(rules::BP_MCP_SERVER, loc, format!("{what}: `env` is for stdio servers (`command`)"));
            }
            (true, false) if !decl.headers.is_empty() => {
                self.report(rules::BP_MCP_SERVER, loc, format!("{what}: `headers` are for HTTP servers (`url`)"));
            }
            _ => {}
        }
        ok.then_some(decl)
    }

    /// Each item as a string (numbers and booleans as written); `None` after reporting a non-scalar.
    fn scalar_list(&mut self, items: &[Node], what: &str) -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(self.scalar(item, &format!("each entry of {what}"))?.v);
        }
        Some(out)
    }

    /// A mapping of names to scalar values with well-formed `${VAR}` references (`headers`: names must be
    /// header names).
    fn string_map(&mut self, node: &Node, what: &str, ok: &mut bool, headers: bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(fields) = self.fields(node, what) else {
            *ok = false;
            return out;
        };
        let entries: Vec<(String, &Node, &Node)> = fields.all().map(|(k, kn, v)| (k.to_owned(), kn, v)).collect();
        for (k, key, v) in entries {
            if headers && !valid_header_name(&k) {
                self.report(rules::BP_MCP_SERVER, key.loc, format!("{what}: `{k}` is not a valid header name"));
                *ok = false;
                continue;
            }
            if !headers && (k.is_empty() || k.contains(['=', '\0'])) {
                self.report(rules::BP_MCP_SERVER, key.loc, format!("{what}: `{k}` is not a valid variable name"));
                *ok = false;
                continue;
            }
            let Some(value) = self.scalar(v, &format!("{what}: `{k}`")) else {
                *ok = false;
                continue;
            };
            if let Some(problem) = reference_problem(&value.v) {
                self.report(rules::BP_MCP_SERVER, v.loc, format!("{what}: `{k}`: {problem}"));
                *ok = false;
                continue;
            }
            out.insert(k, value.v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::{load_str, validate_str, LoadOptions, Severity};

    #[test]
    fn names_references_and_header_names() {
        assert!(valid_server_name("fs_1-a") && !valid_server_name("a.b") && !valid_server_name(""));
        assert_eq!(reference_problem("Bearer ${TOKEN}"), None);
        assert!(reference_problem("${TOKEN").is_some());
        assert!(reference_problem("${9}").is_some());
        assert!(valid_header_name("X-Api-Key") && !valid_header_name("bad header"));
    }

    const BP: &str = r#"
name: tools
mcp_servers:
  calc:
    command: "calc-mcp"
    args: ["--stdio", 2]
    env: {LEVEL: debug, TOKEN: "${CALC_TOKEN}"}
    cwd: servers
    timeout_s: 2.5
  remote:
    url: https://mcp.example.test/mcp
    headers: {Authorization: "Bearer ${REMOTE_TOKEN}"}
agents:
  helper:
    model: "mock:echo"
    tools: [mcp.remote.search]
steps:
  - name: add
    agent: {id: mcp.calc.add}
  - name: shared
    agent: {id: mcp.shared.lookup}
"#;

    #[test]
    fn declared_and_configured_servers_are_accepted_and_exposed() {
        let opts = LoadOptions { mcp_servers: vec!["shared".into()], ..Default::default() };
        let loaded = load_str(BP, Path::new("dir/bp.yaml"), &opts).unwrap();
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let calc = &loaded.mcp_servers[0];
        assert_eq!(calc.name, "calc");
        assert_eq!(calc.command.as_deref(), Some(&["calc-mcp".to_owned(), "--stdio".into(), "2".into()][..]));
        assert_eq!(calc.env["TOKEN"], "${CALC_TOKEN}");
        assert_eq!(calc.cwd, Path::new("dir/servers"));
        assert_eq!(calc.timeout_s, Some(2.5));
        let remote = &loaded.mcp_servers[1];
        assert_eq!(remote.url.as_deref(), Some("https://mcp.example.test/mcp"));
        assert!(!format!("{remote:?}").contains("REMOTE_TOKEN"), "Debug shows no header values");

        let without = validate_str(BP, Path::new("bp.yaml"), &LoadOptions::default());
        assert_eq!(without.len(), 1, "{without:?}");
        assert_eq!(without[0].rule, rules::BP_MCP_SERVER);
        assert!(without[0].message.contains("`mcp.shared.lookup` names MCP server `shared`"), "{}", without[0].message);
    }

    /// A checker that knows `calc` (tools `add`, `sub`) and cannot reach anything else.
    #[derive(Default)]
    struct Fake {
        asked: Mutex<Vec<(String, bool, String)>>,
    }

    impl McpToolCheck for Fake {
        fn check(&self, server: &str, declared: Option<&McpServerDecl>, tool: &str) -> McpToolStatus {
            self.asked.lock().unwrap().push((server.into(), declared.is_some(), tool.into()));
            match server {
                "calc" if ["add", "sub"].contains(&tool) => McpToolStatus::Found,
                "calc" => McpToolStatus::Missing { available: vec!["add".into(), "sub".into()] },
                _ => McpToolStatus::Unreachable("connection refused".into()),
            }
        }
    }

    #[test]
    fn a_checker_reports_unknown_tools_and_unreachable_servers_once() {
        let bp = BP.replace("mcp.calc.add}", "mcp.calc.ad}") + "  - name: again\n    agent: {id: mcp.remote.other}\n";
        let fake = Fake::default();
        let opts = LoadOptions { mcp_servers: vec!["shared".into()], mcp_tools: Some(&fake), ..Default::default() };
        let diags = validate_str(&bp, Path::new("bp.yaml"), &opts);
        let rules: Vec<(&str, Severity)> = diags.iter().map(|d| (d.rule.as_str(), d.severity)).collect();
        assert_eq!(
            rules,
            [
                (rules::BP_MCP_UNREACHABLE, Severity::Warning),
                (rules::BP_MCP_TOOL, Severity::Error),
                (rules::BP_MCP_UNREACHABLE, Severity::Warning),
            ],
            "{diags:?}"
        );
        assert_eq!(diags[1].message, "step `add`: MCP server `calc` has no tool `ad`");
        assert_eq!(diags[1].suggestion.as_deref(), Some("did you mean `mcp.calc.add`?"));
        assert!(diags[0].message.contains("MCP server `remote` could not be reached"), "{}", diags[0].message);
        assert!(diags[2].message.contains("MCP server `shared`"), "{}", diags[2].message);
        let asked = fake.asked.lock().unwrap().clone();
        assert!(asked.contains(&("shared".into(), false, "lookup".into())), "configured only: no declaration");
        assert!(asked.contains(&("calc".into(), true, "ad".into())));
    }
}
