//! How to reach one MCP server: a command whose stdin/stdout speak MCP, or a streamable-HTTP URL, plus the
//! per-call timeout. Values may reference the environment (`${TOKEN}`); the references are expanded only when
//! the server is connected, and the expanded values are *secrets*: they are never printed by `Debug`, and
//! every error message and stderr excerpt of the server has them replaced by `[REDACTED]`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::McpError;

/// The per-call timeout when a server sets none (also bounds connecting: start, handshake, tool list).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a server is reached.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum McpTransport {
    /// A child process speaking MCP on its stdin/stdout (its stderr is kept for error messages).
    Stdio {
        /// The program and its arguments (`["npx", "-y", "@modelcontextprotocol/server-everything"]`). A
        /// program given with a path (`./server.py`) is relative to `cwd`.
        command: Vec<String>,
        /// Variables added to the server's environment; values may reference others (`${HOME}`).
        env: BTreeMap<String, String>,
        /// The folder the server starts in (absolute, or relative to the current folder).
        cwd: Option<PathBuf>,
    },
    /// A streamable-HTTP endpoint (`http://127.0.0.1:8931/mcp`).
    Http {
        /// The endpoint's URL.
        url: String,
        /// Headers sent with every request; values may reference the environment (`Bearer ${TOKEN}`).
        headers: BTreeMap<String, String>,
    },
}

/// One MCP server: its name (the `NAME` of `mcp.NAME.TOOL`), transport and per-call timeout.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct McpServerConfig {
    /// The server's name: letters, digits, `_` and `-` (no dots: skill ids are `mcp.NAME.TOOL`).
    pub name: String,
    /// How it is reached.
    pub transport: McpTransport,
    /// How long one tool call (and connecting) may take.
    pub timeout: Duration,
}

impl McpServerConfig {
    /// A server started as `command` (program and arguments), with no extra environment, in the current
    /// folder, with the default timeout.
    pub fn stdio(name: impl Into<String>, command: Vec<String>) -> Self {
        McpServerConfig {
            name: name.into(),
            transport: McpTransport::Stdio { command, env: BTreeMap::new(), cwd: None },
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A server at the streamable-HTTP endpoint `url`, without extra headers, with the default timeout.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        McpServerConfig {
            name: name.into(),
            transport: McpTransport::Http { url: url.into(), headers: BTreeMap::new() },
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds an environment variable of a stdio server (no effect on an HTTP server).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Stdio { env, .. } = &mut self.transport {
            env.insert(key.into(), value.into());
        }
        self
    }

    /// Sets the folder a stdio server starts in (no effect on an HTTP server).
    pub fn with_cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        if let McpTransport::Stdio { cwd, .. } = &mut self.transport {
            *cwd = Some(dir.into());
        }
        self
    }

    /// Adds a header of an HTTP server (no effect on a stdio server).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Http { headers, .. } = &mut self.transport {
            headers.insert(name.into(), value.into());
        }
        self
    }

    /// Checks what can be checked without connecting: the name, a non-empty command, an `http(s)://` URL,
    /// header names, a positive timeout, and that every `${VAR}` reference is well formed.
    pub fn check(&self) -> Result<(), McpError> {
        let bad = |message: String| McpError::Config { server: self.name.clone(), message };
        check_server_name(&self.name).map_err(|m| McpError::Config { server: self.name.clone(), message: m })?;
        if self.timeout.is_zero() {
            return Err(bad("timeout_s must be greater than 0".into()));
        }
        match &self.transport {
            McpTransport::Stdio { command, env, .. } => {
                if command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(bad("`command` needs at least the program to run".into()));
                }
                for (k, v) in env {
                    if k.is_empty() || k.contains(['=', '\0']) {
                        return Err(bad(format!("env: `{k}` is not a valid variable name")));
                    }
                    references(v).map_err(|m| bad(format!("env `{k}`: {m}")))?;
                }
            }
            McpTransport::Http { url, headers } => {
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(bad(format!("url must start with http:// or https:// (got `{}`)", short(url))));
                }
                for (k, v) in headers {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                        return Err(bad(format!("headers: `{}` is not a valid header name", short(k))));
                    }
                    references(v).map_err(|m| bad(format!("header `{k}`: {m}")))?;
                }
            }
        }
        Ok(())
    }

    /// A key that tells configurations apart (the same name may be configured differently by two
    /// blueprints run by one process).
    pub(crate) fn key(&self) -> String {
        let transport = match &self.transport {
            McpTransport::Stdio { command, env, cwd } => {
                serde_json::json!({"command": command, "env": env, "cwd": cwd})
            }
            McpTransport::Http { url, headers } => serde_json::json!({"url": url, "headers": headers}),
        };
        format!("{}\u{0}{transport}\u{0}{}", self.name, self.timeout.as_millis())
    }

    /// What to call the server in messages: `stdio `prog`` or the URL.
    pub fn describe(&self) -> String {
        match &self.transport {
            McpTransport::Stdio { command, .. } => {
                format!("stdio `{}`", command.first().map(String::as_str).unwrap_or_default())
            }
            McpTransport::Http { url, .. } => format!("`{}`", short(url)),
        }
    }
}

/// Header and environment values are never shown: they may hold credentials.
impl fmt::Debug for McpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |m: &BTreeMap<String, String>| m.keys().map(|k| (k.clone(), "[REDACTED]")).collect::<Vec<_>>();
        match self {
            McpTransport::Stdio { command, env, cwd } => {
                f.debug_struct("Stdio").field("command", command).field("env", &hidden(env)).field("cwd", cwd).finish()
            }
            McpTransport::Http { url, headers } => {
                f.debug_struct("Http").field("url", url).field("headers", &hidden(headers)).finish()
            }
        }
    }
}

impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServerConfig")
            .field("name", &self.name)
            .field("transport", &self.transport)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `Ok` when `name` can be the `NAME` of `mcp.NAME.TOOL`: 1 to 64 letters, digits, `_` or `-`.
pub fn check_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "`{}` cannot be an MCP server name: use 1 to 64 letters, digits, `_` or `-` (tools are named \
             mcp.NAME.TOOL)",
            short(name)
        ));
    }
    Ok(())
}

/// The names of the `${VAR}` references in `value`, or what is malformed.
pub fn references(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let name = &after[..end];
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("`${{{}}}` is not a variable reference (use ${{NAME}})", short(name)));
        }
        out.push(name.to_owned());
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// `value` with every `${VAR}` replaced by the variable's value; the values substituted are added to
/// `secrets`. A variable that is not set is an error naming it (never a value).
pub(crate) fn expand(value: &str, what: &str, server: &str, secrets: &mut Vec<String>) -> Result<String, McpError> {
    let names = references(value)
        .map_err(|m| McpError::Config { server: server.to_owned(), message: format!("{what}: {m}") })?;
    if names.is_empty() {
        return Ok(value.to_owned());
    }
    let mut out = value.to_owned();
    for name in names {
        let v = std::env::var(&name).map_err(|_| McpError::Config {
            server: server.to_owned(),
            message: format!("{what} references ${{{name}}}, which is not set in the environment"),
        })?;
        out = out.replacen(&format!("${{{name}}}"), &v, 1);
        secrets.push(v);
    }
    // The whole expanded value is a secret too (`Bearer abc` as well as `abc`).
    secrets.push(out.clone());
    Ok(out)
}

/// `text` with every secret (of four characters or more) replaced by `[REDACTED]`.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| s.chars().count() >= 4).collect();
    // Longest first, so that `Bearer abcd` is hidden whole before `abcd`.
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[REDACTED]");
        }
    }
    out
}

/// At most 80 characters of `s`, for messages.
pub(crate) fn short(s: &str) -> String {
    if s.chars().count() <= 80 {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(79).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn references_are_found_and_malformed_ones_refused() {
        assert_eq!(references("Bearer ${TOKEN}").unwrap(), vec!["TOKEN"]);
        assert_eq!(references("${A}-${B_2}").unwrap(), vec!["A", "B_2"]);
        assert!(references("plain $HOME").unwrap().is_empty());
        assert!(references("${OPEN").is_err());
        assert!(references("${1X}").is_err());
        assert!(references("${}").is_err());
    }

    #[test]
    fn expansion_records_secrets_and_a_missing_variable_is_named_not_shown() {
        std::env::set_var("FLUJO_MCP_TEST_SECRET_A", "s3cr3t-value");
        let mut secrets = Vec::new();
        let v = expand("Bearer ${FLUJO_MCP_TEST_SECRET_A}", "header `Authorization`", "x", &mut secrets).unwrap();
        assert_eq!(v, "Bearer s3cr3t-value");
        assert!(secrets.contains(&"s3cr3t-value".to_owned()));
        let e = expand("${FLUJO_MCP_TEST_UNSET_B}", "header `X`", "x", &mut secrets).unwrap_err().to_string();
        assert!(e.contains("${FLUJO_MCP_TEST_UNSET_B}") && e.contains("not set"), "{e}");
        assert_eq!(redact("got Bearer s3cr3t-value back", &secrets), "got [REDACTED] back");
        assert_eq!(redact("id 12", &["12".to_owned()]), "id 12", "short values are not redacted");
    }

    #[test]
    fn debug_hides_header_and_env_values() {
        let c = McpServerConfig::http("api", "https://example.test/mcp").with_header("Authorization", "Bearer literal");
        let d = format!("{c:?}");
        assert!(!d.contains("literal") && d.contains("Authorization"), "{d}");
        let c = McpServerConfig::stdio("s", vec!["prog".into()]).with_env("KEY", "hunter22");
        assert!(!format!("{c:?}").contains("hunter22"));
    }

    #[test]
    fn check_refuses_what_cannot_work() {
        assert!(McpServerConfig::stdio("ok_name-1", vec!["p".into()]).check().is_ok());
        assert!(McpServerConfig::stdio("a.b", vec!["p".into()]).check().is_err());
        assert!(McpServerConfig::stdio("x", vec![]).check().is_err());
        assert!(McpServerConfig::http("x", "ftp://h").check().is_err());
        assert!(McpServerConfig::http("x", "http://h").with_header("bad header", "v").check().is_err());
        assert!(McpServerConfig::http("x", "http://h").with_timeout(Duration::ZERO).check().is_err());
    }
}
