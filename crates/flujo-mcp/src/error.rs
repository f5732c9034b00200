//! What can go wrong with an MCP server or one of its tools. Each failure has a stable [`McpError::kind`]; its
//! message names the server (and tool) and, for a server process that died, ends with an excerpt of its
//! stderr. Messages never contain the values of `${VAR}` references (see [`crate::config`]).

use std::time::Duration;

/// A failure to reach an MCP server or to call one of its tools.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The server's configuration cannot work (bad name, empty command, unset `${VAR}`, …).
    #[error("MCP server '{server}': {message}")]
    Config {
        /// The server's name.
        server: String,
        /// What is wrong.
        message: String,
    },
    /// The server could not be started or reached, or it exited (or hung) before the MCP handshake finished.
    #[error("MCP server '{server}' ({target}) is not available: {message}{}", excerpt(stderr))]
    Unavailable {
        /// The server's name.
        server: String,
        /// The command or URL.
        target: String,
        /// Why.
        message: String,
        /// The end of what the server wrote on stderr (stdio servers).
        stderr: String,
    },
    /// The connection broke during a call: the server process exited, or the HTTP endpoint went away.
    #[error("MCP server '{server}' went away during a call to tool '{tool}': {message}{}", excerpt(stderr))]
    Crashed {
        /// The server's name.
        server: String,
        /// The tool being called.
        tool: String,
        /// What was observed (the exit status, the transport error).
        message: String,
        /// The end of what the server wrote on stderr (stdio servers).
        stderr: String,
    },
    /// The call took longer than the server's timeout.
    #[error("MCP tool '{tool}' of server '{server}' did not answer within {} (timeout_s)", crate::error_secs(*timeout))]
    Timeout {
        /// The server's name.
        server: String,
        /// The tool.
        tool: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The tool answered with `isError: true`; `message` is its text.
    #[error("MCP tool '{tool}' of server '{server}' failed: {message}")]
    Tool {
        /// The server's name.
        server: String,
        /// The tool.
        tool: String,
        /// The tool's own error text.
        message: String,
    },
    /// The server has no tool of that name.
    #[error("MCP server '{server}' has no tool '{tool}'{}", known(available))]
    UnknownTool {
        /// The server's name.
        server: String,
        /// The tool asked for.
        tool: String,
        /// The tools it has.
        available: Vec<String>,
    },
    /// The server refused the request (a JSON-RPC error: invalid arguments, internal error, …).
    #[error("MCP server '{server}' refused the call to tool '{tool}': {message}")]
    Protocol {
        /// The server's name.
        server: String,
        /// The tool.
        tool: String,
        /// The server's error.
        message: String,
        /// True when retrying cannot help (invalid params, unknown method).
        permanent: bool,
    },
    /// The arguments of a call are not a JSON object.
    #[error("MCP tool '{tool}' of server '{server}' takes a JSON object of arguments; got {got}")]
    BadArguments {
        /// The server's name.
        server: String,
        /// The tool.
        tool: String,
        /// The JSON type given.
        got: String,
    },
    /// The MCP client's own runtime could not be started.
    #[error("the MCP client cannot start: {0}")]
    Runtime(String),
}

impl McpError {
    /// A stable name of the failure: `mcp_config`, `mcp_unavailable`, `mcp_crashed`, `mcp_timeout`,
    /// `mcp_tool_error`, `mcp_unknown_tool`, `mcp_protocol`, `mcp_bad_arguments`, `mcp_runtime`.
    pub fn kind(&self) -> &'static str {
        match self {
            McpError::Config { .. } => "mcp_config",
            McpError::Unavailable { .. } => "mcp_unavailable",
            McpError::Crashed { .. } => "mcp_crashed",
            McpError::Timeout { .. } => "mcp_timeout",
            McpError::Tool { .. } => "mcp_tool_error",
            McpError::UnknownTool { .. } => "mcp_unknown_tool",
            McpError::Protocol { .. } => "mcp_protocol",
            McpError::BadArguments { .. } => "mcp_bad_arguments",
            McpError::Runtime(_) => "mcp_runtime",
        }
    }

    /// False when calling again cannot help: a bad configuration or arguments, an unknown tool, a request
    /// the server refuses as invalid. Crashes, timeouts, unavailable servers and tool errors may pass.
    pub fn retryable(&self) -> bool {
        match self {
            McpError::Config { .. } | McpError::UnknownTool { .. } | McpError::BadArguments { .. } => false,
            McpError::Protocol { permanent, .. } => !permanent,
            _ => true,
        }
    }
}

fn excerpt(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with: {t}")
    }
}

fn known(available: &[String]) -> String {
    if available.is_empty() {
        " (it offers no tools)".to_owned()
    } else {
        format!(" (it offers: {})", available.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_server_tool_and_stderr() {
        let e = McpError::Crashed {
            server: "calc".into(),
            tool: "crash".into(),
            message: "the server exited (exit status: 3)".into(),
            stderr: "boom\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "MCP server 'calc' went away during a call to tool 'crash': the server exited (exit status: 3); its \
             stderr ends with: boom"
        );
        assert_eq!(e.kind(), "mcp_crashed");
        let t = McpError::Timeout { server: "s".into(), tool: "slow".into(), timeout: Duration::from_millis(1500) };
        assert_eq!(t.to_string(), "MCP tool 'slow' of server 's' did not answer within 1.5 s (timeout_s)");
        let u = McpError::UnknownTool { server: "s".into(), tool: "x".into(), available: vec!["a".into(), "b".into()] };
        assert_eq!(u.to_string(), "MCP server 's' has no tool 'x' (it offers: a, b)");
        assert!(!u.retryable());
    }
}
