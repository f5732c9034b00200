//! MCP tools as Flujo skills: [`McpSkill`] calls one tool, and [`McpSkills`] is a [`SkillRegistry`] that answers
//! the ids `mcp.NAME.TOOL` of its servers and hands every other id to the registry it wraps — so steps
//! (`agent: {id: mcp.fs.read_file}`) and agents' `tools:` reach MCP tools the same way.
//!
//! Resolving `mcp.NAME.TOOL` (when a runner is built) connects to the server, waiting at most its timeout, so
//! that the skill's [`SkillInfo`] carries the tool's description and input schema (offered to models). A
//! server that cannot be reached does not stop the runner from being built: its calls fail, each trying to
//! connect again. An unknown tool is a failure of the call that names it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, SkillRegistry};
use serde_json::Value;

use crate::manager::{McpServer, McpTool};
use crate::McpError;

/// The prefix of MCP skill ids.
pub const MCP_PREFIX: &str = "mcp.";

/// `("NAME", "TOOL")` of `mcp.NAME.TOOL` (the tool's name may contain dots); `None` for other ids. A
/// `mcp.NAME` without a tool gives `("NAME", "")`.
pub fn split_skill_id(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix(MCP_PREFIX)?;
    Some(rest.split_once('.').unwrap_or((rest, "")))
}

/// The skill id of `tool` of server `server`.
pub fn skill_id(server: &str, tool: &str) -> String {
    format!("{MCP_PREFIX}{server}.{tool}")
}

/// One tool of one MCP server, as a skill. Its input is the tool's arguments: a JSON object, or a string
/// holding one (a rendered template), or `null` for none.
#[derive(Debug, Clone)]
pub struct McpSkill {
    server: McpServer,
    tool: String,
}

impl McpSkill {
    pub(crate) fn new(server: McpServer, tool: &str) -> Self {
        McpSkill { server, tool: tool.to_owned() }
    }

    fn tool_info(&self) -> Option<McpTool> {
        self.server.cached_tools().and_then(|tools| tools.iter().find(|t| t.name == self.tool).cloned())
    }
}

#[async_trait]
impl Skill for McpSkill {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let args = match call.input {
            // A template renders to text: a JSON object in it is the arguments.
            Value::String(s) => match serde_json::from_str::<Value>(s.trim()) {
                Ok(v @ Value::Object(_)) => v,
                _ => Value::String(s),
            },
            other => other,
        };
        match self.server.call(&self.tool, args).await {
            Ok(output) => Ok(SkillOutput::value(output)),
            Err(e) => Err(skill_error(&e)),
        }
    }

    fn info(&self) -> SkillInfo {
        let id = skill_id(self.server.name(), &self.tool);
        match self.tool_info() {
            Some(t) => {
                let mut info = SkillInfo::new(id, t.description).with_input_schema(t.input_schema);
                if let Some(out) = t.output_schema {
                    info = info.with_output_schema(out);
                }
                info.with_side_effects(!t.read_only)
            }
            None => SkillInfo::new(id, format!("tool '{}' of MCP server '{}'", self.tool, self.server.name()))
                .with_side_effects(true),
        }
    }
}

/// A step failure for `e`: its message, retryable unless calling again cannot help.
pub fn skill_error(e: &McpError) -> SkillError {
    if e.retryable() {
        SkillError::new(e.to_string())
    } else {
        SkillError::fatal(e.to_string())
    }
}

/// A [`SkillRegistry`] answering `mcp.NAME.TOOL` for its servers and delegating every other id.
#[derive(Clone)]
pub struct McpSkills {
    inner: Arc<dyn SkillRegistry>,
    servers: BTreeMap<String, McpServer>,
}

impl std::fmt::Debug for McpSkills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpSkills").field("servers", &self.servers.keys().collect::<Vec<_>>()).finish()
    }
}

impl McpSkills {
    /// `inner` plus the tools of `servers` (a later server of the same name replaces an earlier one).
    pub fn new(inner: Arc<dyn SkillRegistry>, servers: impl IntoIterator<Item = McpServer>) -> Self {
        let servers = servers.into_iter().map(|s| (s.name().to_owned(), s)).collect();
        McpSkills { inner, servers }
    }

    /// The servers, by name.
    pub fn servers(&self) -> &BTreeMap<String, McpServer> {
        &self.servers
    }
}

impl SkillRegistry for McpSkills {
    fn resolve(&self, id: &str, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        let Some((name, tool)) = split_skill_id(id) else {
            return self.inner.resolve(id, params);
        };
        let Some(server) = self.servers.get(name) else {
            // A registry below may know it (another layer of servers); otherwise say what is missing.
            return self.inner.resolve(id, params).map_err(|e| match e {
                ResolveError::Unknown { .. } => ResolveError::BadParams {
                    id: id.to_owned(),
                    message: format!(
                        "MCP server '{name}' is not declared (declare it under `mcp_servers:` in the blueprint or as \
                         [mcp.servers.{name}] in flujo.toml){}",
                        known_servers(&self.servers)
                    ),
                },
                other => other,
            });
        };
        if tool.is_empty() {
            return Err(ResolveError::BadParams {
                id: id.to_owned(),
                message: format!("name a tool of MCP server '{name}': mcp.{name}.TOOL"),
            });
        }
        let empty = match params {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            _ => false,
        };
        if !empty {
            return Err(ResolveError::BadParams {
                id: id.to_owned(),
                message: "MCP tools take no params: their arguments are the step's input (a JSON object)".into(),
            });
        }
        server.prepare();
        Ok(Arc::new(server.skill(tool)))
    }

    fn list(&self) -> Vec<SkillInfo> {
        let mut infos = self.inner.list();
        for server in self.servers.values() {
            for tool in server.cached_tools().iter().flat_map(|t| t.iter()) {
                infos.push(server.skill(&tool.name).info());
            }
        }
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        infos
    }
}

fn known_servers(servers: &BTreeMap<String, McpServer>) -> String {
    if servers.is_empty() {
        String::new()
    } else {
        format!("; declared: {}", servers.keys().cloned().collect::<Vec<_>>().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_at_the_first_dot_after_the_prefix() {
        assert_eq!(split_skill_id("mcp.fs.read_file"), Some(("fs", "read_file")));
        assert_eq!(split_skill_id("mcp.fs.ns.tool"), Some(("fs", "ns.tool")));
        assert_eq!(split_skill_id("mcp.fs"), Some(("fs", "")));
        assert_eq!(split_skill_id("flujo.builtins.stringify"), None);
        assert_eq!(skill_id("fs", "read_file"), "mcp.fs.read_file");
    }
}
