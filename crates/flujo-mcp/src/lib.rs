//! MCP (Model Context Protocol) servers' tools as Flujo skills, over the official Rust SDK (`rmcp`).
//!
//! A server is configured by an [`McpServerConfig`] — a command speaking MCP on stdin/stdout, or a
//! streamable-HTTP URL — and registered with a [`McpManager`], which keeps one connection per server for the
//! whole process. Its tools become skills `mcp.NAME.TOOL` through [`McpSkills`], a registry wrapping any other
//! [`flujo_core::SkillRegistry`]; a step (`agent: {id: mcp.calc.add}`) or an agent's `tools:` use them like
//! any skill, and the engine journals their outputs like any skill call's.
//!
//! ```
//! use std::sync::Arc;
//! use flujo_core::SkillRegistry;
//! use flujo_mcp::{McpManager, McpServerConfig, McpSkills};
//!
//! /// `builtins` plus the tools of the `calc` server (connected when `mcp.calc.TOOL` is first resolved).
//! fn with_calc(builtins: Arc<dyn SkillRegistry>) -> McpSkills {
//!     let calc = McpManager::global().server(McpServerConfig::stdio("calc", vec!["my-mcp-server".into()]));
//!     McpSkills::new(builtins, [calc])
//! }
//! ```
//!
//! The output of a call is the tool's structured content when present, else its text content (joined), else
//! its content array as JSON. Failures — a server that cannot start (with the end of its stderr), a crash
//! during a call, a call past the timeout (60 s unless configured), `isError: true`, an unknown tool — are
//! [`McpError`]s, and step failures with their message when called as skills.
//!
//! With the feature `test-server`, the module `testing` holds a small MCP server for tests (binary
//! `flujo-mcp-test-server`).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod error;
mod manager;
mod process;
mod skill;
#[cfg(feature = "test-server")]
pub mod testing;

pub use config::{check_server_name, references, McpServerConfig, McpTransport, DEFAULT_TIMEOUT};
pub use error::McpError;
pub use manager::{McpManager, McpServer, McpTool};
pub use skill::{skill_error, skill_id, split_skill_id, McpSkill, McpSkills, MCP_PREFIX};

/// `60 s`, `1.5 s`: a duration in messages.
pub(crate) fn error_secs(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}
