//! MCP servers for the command line (see `docs/mcp.md`): `[mcp.servers.NAME]` of `flujo.toml`, the blueprint's
//! `mcp_servers:`, the skill registry runs get (`mcp.NAME.TOOL` answered by `flujo_mcp::McpSkills`, every
//! other id by the registry it wraps), and the tool check of `flujo validate`.
//!
//! * **Where servers come from.** `flujo.toml` servers (read once by [`configure`]) and the servers of the
//!   blueprint being run (its `mcp_servers:` and its imports'); `flujo.toml` wins for a name both declare.
//!   A stored run (`flujo resume RUN_ID`, workers) takes its blueprint servers from the blueprint file its
//!   origin recorded.
//! * **When they connect.** When a runner is built: resolving `mcp.NAME.TOOL` connects (bounded by the
//!   server's `timeout_s`), so agents offer the tool's schema; a server that cannot be reached fails the steps
//!   that call it, each call trying again. One connection per server per process, shared by every call.
//! * **Validation.** `flujo validate` asks each server for its tools: an unknown tool is `BP-MCP-TOOL`, an
//!   unreachable server the warning `BP-MCP-UNREACHABLE`. `flujo run` checks only that servers are declared
//!   (`BP-MCP-SERVER`).
//! * **Shutdown.** [`shutdown`] (the end of `main`) closes every connection and kills the server processes.

#![cfg_attr(not(feature = "mcp"), allow(dead_code))]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use flujo_blueprint::McpServerDecl;
use flujo_core::SkillRegistry;
use serde::Deserialize;

use crate::config::Config;
use crate::CliError;

/// `[mcp]` of `flujo.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct McpSection {
    #[serde(default)]
    servers: BTreeMap<String, ServerToml>,
}

/// `[mcp.servers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerToml {
    command: Option<CommandToml>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    timeout_s: Option<f64>,
    #[allow(dead_code)]
    description: Option<String>,
}

/// `command = "prog"` or `command = ["prog", "arg"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum CommandToml {
    Program(String),
    List(Vec<String>),
}

/// One server in a form both sources share.
#[derive(Debug, Clone)]
struct ServerSpec {
    name: String,
    command: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    cwd: std::path::PathBuf,
    url: Option<String>,
    headers: BTreeMap<String, String>,
    timeout_s: Option<f64>,
}

fn parse_section(value: &toml::Value, base: &Path) -> Result<Vec<ServerSpec>, String> {
    let json = serde_json::to_value(value).map_err(|e| format!("[mcp]: {e}"))?;
    let section: McpSection = serde_json::from_value(json).map_err(|e| format!("[mcp]: {e}"))?;
    let mut out = Vec::new();
    for (name, s) in section.servers {
        let what = format!("[mcp.servers.{name}]");
        if let Err(e) = valid_name(&name) {
            return Err(format!("{what}: {e}"));
        }
        let command = match s.command {
            Some(CommandToml::Program(p)) => Some(std::iter::once(p).chain(s.args.iter().cloned()).collect::<Vec<_>>()),
            Some(CommandToml::List(l)) => Some(l.into_iter().chain(s.args.iter().cloned()).collect()),
            None if !s.args.is_empty() => return Err(format!("{what}: `args` needs a `command`")),
            None => None,
        };
        match (&command, &s.url) {
            (Some(_), Some(_)) => {
                return Err(format!("{what}: give `command` (stdio) or `url` (streamable HTTP), not both"))
            }
            (None, None) => return Err(format!("{what}: give `command` (stdio) or `url` (streamable HTTP)")),
            (Some(c), None) if c.first().is_none_or(|p| p.trim().is_empty()) => {
                return Err(format!("{what}: `command` needs at least the program to run"))
            }
            _ => {}
        }
        if let Some(t) = s.timeout_s {
            flujo_core::limits::check_duration_secs(t).map_err(|e| format!("{what}: timeout_s {e}"))?;
        }
        let spec = ServerSpec {
            name: name.clone(),
            command,
            env: s.env,
            cwd: match &s.cwd {
                Some(c) => base.join(c),
                None => base.to_path_buf(),
            },
            url: s.url,
            headers: s.headers,
            timeout_s: s.timeout_s,
        };
        #[cfg(feature = "mcp")]
        spec.config().check().map_err(|e| format!("{what}: {}", strip_server_prefix(&e.to_string(), &name)))?;
        out.push(spec);
    }
    Ok(out)
}

fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err("a server name has 1 to 64 letters, digits, `_` or `-` (tools are named mcp.NAME.TOOL)".into());
    }
    Ok(())
}

#[cfg(feature = "mcp")]
fn strip_server_prefix(message: &str, name: &str) -> String {
    message.strip_prefix(&format!("MCP server '{name}': ")).unwrap_or(message).to_owned()
}

/// Checks `[mcp]` when `flujo.toml` loads (`file` names it; relative `cwd`s are relative to its folder).
pub fn check_toml(value: &toml::Value, file: &Path) -> Result<(), String> {
    parse_section(value, &folder_of(file)).map(|_| ())
}

fn folder_of(file: &Path) -> std::path::PathBuf {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// The `[mcp.servers.*]` of this process's `flujo.toml` (set by [`configure`]).
static CONFIGURED: OnceLock<Vec<ServerSpec>> = OnceLock::new();

/// Reads `[mcp.servers.*]` of `cfg` for the registries and checks of this process.
pub fn configure(cfg: &Config) -> Result<(), CliError> {
    let servers = match (cfg.table.get("mcp"), &cfg.file) {
        (Some(v), Some(file)) => {
            parse_section(v, &folder_of(file)).map_err(|e| CliError::config(format!("{}: {e}", file.display())))?
        }
        _ => Vec::new(),
    };
    let _ = CONFIGURED.set(servers);
    Ok(())
}

fn configured() -> &'static [ServerSpec] {
    CONFIGURED.get().map(Vec::as_slice).unwrap_or_default()
}

/// The names of the `flujo.toml` servers (declared for blueprint validation).
pub fn configured_names(cfg: &Config) -> Vec<String> {
    cfg.table
        .get("mcp")
        .and_then(|m| m.get("servers"))
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

impl ServerSpec {
    fn of_decl(d: &McpServerDecl) -> ServerSpec {
        ServerSpec {
            name: d.name.clone(),
            command: d.command.clone(),
            env: d.env.clone(),
            cwd: std::path::absolute(&d.cwd).unwrap_or_else(|_| d.cwd.clone()),
            url: d.url.clone(),
            headers: d.headers.clone(),
            timeout_s: d.timeout_s,
        }
    }
}

/// The servers of a run: `flujo.toml`'s, then the blueprint's names `flujo.toml` does not declare.
fn servers_for(blueprint: &[McpServerDecl]) -> Vec<ServerSpec> {
    let mut out: Vec<ServerSpec> = configured().to_vec();
    for d in blueprint {
        if !out.iter().any(|s| s.name == d.name) {
            out.push(ServerSpec::of_decl(d));
        }
    }
    out
}

/// The MCP servers of a stored run: those of the blueprint file its origin recorded (and its imports), when
/// its definition uses an MCP tool.
pub fn servers_of_stored_run(run: &flujo_core::RunRecord) -> Vec<McpServerDecl> {
    let (Some(origin), Some(def)) = (&run.origin, &run.definition) else {
        return Vec::new();
    };
    if !def.json().contains("\"mcp.") {
        return Vec::new();
    }
    let opts = flujo_blueprint::LoadOptions {
        allow_imports_outside: true,
        mcp_servers: configured().iter().map(|s| s.name.clone()).collect(),
        ..Default::default()
    };
    match flujo_blueprint::load_file(Path::new(&origin.blueprint), &opts) {
        Ok(loaded) => loaded.mcp_servers,
        Err(_) => {
            errln!(
                "note: the MCP servers of {} could not be read (the file changed or is gone); only those of \
                 flujo.toml are available to run {}",
                origin.blueprint,
                run.run_id
            );
            Vec::new()
        }
    }
}

#[cfg(feature = "mcp")]
mod wired {
    //! The parts that need the MCP client (cargo feature `mcp`).

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use flujo_blueprint::{McpServerDecl, McpToolCheck, McpToolStatus};
    use flujo_core::SkillRegistry;
    use flujo_mcp::{McpManager, McpServerConfig, McpSkills, DEFAULT_TIMEOUT};

    use super::{configured, servers_for, ServerSpec};

    /// How long `flujo validate` waits for a server's tool list (at most its `timeout_s`).
    const VALIDATE_WAIT: Duration = Duration::from_secs(15);

    impl ServerSpec {
        pub(super) fn config(&self) -> McpServerConfig {
            let mut c = match (&self.command, &self.url) {
                (Some(command), _) => {
                    let mut c = McpServerConfig::stdio(&self.name, command.clone()).with_cwd(&self.cwd);
                    for (k, v) in &self.env {
                        c = c.with_env(k, v);
                    }
                    c
                }
                (None, url) => {
                    let mut c = McpServerConfig::http(&self.name, url.clone().unwrap_or_default());
                    for (k, v) in &self.headers {
                        c = c.with_header(k, v);
                    }
                    c
                }
            };
            let timeout = self
                .timeout_s
                .filter(|t| flujo_core::limits::check_duration_secs(*t).is_ok())
                .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
            c = c.with_timeout(timeout);
            c
        }
    }

    pub fn wrap(reg: Arc<dyn SkillRegistry>, blueprint: &[McpServerDecl]) -> Arc<dyn SkillRegistry> {
        let specs = servers_for(blueprint);
        if specs.is_empty() {
            return reg;
        }
        let manager = McpManager::global();
        let servers: Vec<_> = specs.iter().map(|s| manager.server(s.config())).collect();
        Arc::new(McpSkills::new(reg, servers))
    }

    /// The tool check of `flujo validate`: asks each server once for its tools.
    #[derive(Default)]
    pub struct ToolCheck {
        answers: Mutex<HashMap<String, Result<Vec<String>, String>>>,
    }

    impl McpToolCheck for ToolCheck {
        fn check(&self, server: &str, declared: Option<&McpServerDecl>, tool: &str) -> McpToolStatus {
            let mut answers = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let answer = answers.entry(server.to_owned()).or_insert_with(|| {
                let spec = configured()
                    .iter()
                    .find(|s| s.name == server)
                    .cloned()
                    .or_else(|| declared.map(ServerSpec::of_decl));
                let Some(spec) = spec else {
                    return Err("it has no configuration".into());
                };
                let config = spec.config();
                config.check().map_err(|e| e.to_string())?;
                let wait = config.timeout.min(VALIDATE_WAIT);
                McpManager::global()
                    .server(config)
                    .tools_blocking(wait)
                    .map(|tools| tools.iter().map(|t| t.name.clone()).collect())
                    .map_err(|e| e.to_string())
            });
            match answer {
                Ok(names) if names.iter().any(|n| n == tool) => McpToolStatus::Found,
                Ok(names) => {
                    let mut available = names.clone();
                    available.sort();
                    McpToolStatus::Missing { available }
                }
                Err(why) => McpToolStatus::Unreachable(why.clone()),
            }
        }
    }

    pub fn shutdown() {
        McpManager::global().shutdown();
    }
}

#[cfg(not(feature = "mcp"))]
mod wired {
    //! Without the cargo feature `mcp`: MCP tool ids resolve to a clear error.

    use std::sync::Arc;

    use flujo_blueprint::{McpServerDecl, McpToolCheck, McpToolStatus};
    use flujo_core::{ResolveError, Skill, SkillInfo, SkillRegistry};
    use serde_json::Value;

    const WITHOUT: &str = "this flujo was built without MCP support (cargo feature `mcp` of flujo-cli)";

    struct NoMcp(Arc<dyn SkillRegistry>);

    impl SkillRegistry for NoMcp {
        fn resolve(&self, id: &str, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
            if id.starts_with(flujo_mcp_prefix()) {
                return Err(ResolveError::BadParams { id: id.to_owned(), message: WITHOUT.into() });
            }
            self.0.resolve(id, params)
        }

        fn list(&self) -> Vec<SkillInfo> {
            self.0.list()
        }
    }

    fn flujo_mcp_prefix() -> &'static str {
        "mcp."
    }

    pub fn wrap(reg: Arc<dyn SkillRegistry>, _blueprint: &[McpServerDecl]) -> Arc<dyn SkillRegistry> {
        Arc::new(NoMcp(reg))
    }

    #[derive(Default)]
    pub struct ToolCheck {
        _nothing: (),
    }

    impl McpToolCheck for ToolCheck {
        fn check(&self, _server: &str, _declared: Option<&McpServerDecl>, _tool: &str) -> McpToolStatus {
            McpToolStatus::Unreachable(WITHOUT.into())
        }
    }

    pub fn shutdown() {}
}

pub use wired::ToolCheck;

/// `reg` answering `mcp.NAME.TOOL` for the servers of `flujo.toml` and `blueprint` (see the module doc).
pub fn wrap(reg: Arc<dyn SkillRegistry>, blueprint: &[McpServerDecl]) -> Arc<dyn SkillRegistry> {
    wired::wrap(reg, blueprint)
}

/// Closes every MCP connection and kills the server processes (the end of `main`).
pub fn shutdown() {
    wired::shutdown();
}
