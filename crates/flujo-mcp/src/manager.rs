//! The MCP clients of a process: one connection per configured server, shared by every call, living on a
//! small runtime of its own.
//!
//! * **One client per server per process.** [`McpManager::server`] returns the same [`McpServer`] for the
//!   same configuration; its connection is made once (concurrent first calls wait for the same connect) and
//!   every call of every run shares it. [`McpManager::global`] is the process's manager.
//! * **Its own runtime.** Connections, child processes and their stderr readers live on a one-thread Tokio
//!   runtime owned by the manager, so they outlive the runtime (or blocking call) that made them, and
//!   [`McpServer::tools_blocking`] can connect from synchronous code — also from a thread of another runtime
//!   (it waits on a channel, never `block_on`).
//! * **Failures are values.** A server that cannot be started, exits before the handshake, hangs past its
//!   timeout, dies during a call, or answers `isError` is a [`McpError`] naming the server, the tool and
//!   (stdio) the end of its stderr. A connection that broke is dropped; the next call connects again.
//! * **No process left behind.** A stdio server runs in its own process group; a broken or replaced
//!   connection, [`McpManager::shutdown`] and dropping the manager kill the group and reap the child.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError};
use rmcp::ServiceExt;
use serde_json::Value;

use crate::config::{expand, redact, McpServerConfig, McpTransport};
use crate::error::McpError;
use crate::process::{kill_group, reap, ServerProcess};

/// How long a failed connect is remembered by [`McpServer::prepare`] (so that a runner with many steps on
/// an unreachable server does not try again for each of them); calls always try again.
const REMEMBER_FAILURE: Duration = Duration::from_secs(10);

/// A tool a server offers (from its `tools/list`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct McpTool {
    /// The tool's name (the `TOOL` of `mcp.NAME.TOOL`).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments.
    pub input_schema: Value,
    /// The JSON Schema of its structured output, when it declares one.
    pub output_schema: Option<Value>,
    /// The server says the tool only reads (`readOnlyHint`); every other tool is taken to have side effects.
    pub read_only: bool,
}

impl McpTool {
    fn from_rmcp(t: &rmcp::model::Tool) -> Self {
        let description = t.description.as_deref().or(t.title.as_deref()).unwrap_or_default().to_owned();
        McpTool {
            name: t.name.to_string(),
            description,
            input_schema: Value::Object((*t.input_schema).clone()),
            output_schema: t.output_schema.as_ref().map(|s| Value::Object((**s).clone())),
            read_only: t.annotations.as_ref().and_then(|a| a.read_only_hint).unwrap_or(false),
        }
    }
}

/// The MCP clients of a process (see the module documentation). Cheap to clone.
#[derive(Clone, Default)]
pub struct McpManager {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
    servers: Mutex<HashMap<String, Arc<ServerState>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for server in lock(&self.servers).values() {
            server.kill_now();
        }
        if let Some(Ok(rt)) = self.runtime.take() {
            // Never blocks, so dropping the manager on an async task is fine.
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for McpManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = lock(&self.inner.servers).values().map(|s| s.config.name.clone()).collect();
        names.sort();
        f.debug_struct("McpManager").field("servers", &names).finish()
    }
}

impl McpManager {
    /// A manager with no servers; its runtime starts with the first connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's manager (what the `flujo` command uses).
    pub fn global() -> &'static McpManager {
        static GLOBAL: OnceLock<McpManager> = OnceLock::new();
        GLOBAL.get_or_init(McpManager::new)
    }

    /// The server `config` describes: the same handle (and connection) for the same configuration.
    pub fn server(&self, config: McpServerConfig) -> McpServer {
        let key = config.key();
        let state = lock(&self.inner.servers).entry(key).or_insert_with(|| Arc::new(ServerState::new(config))).clone();
        McpServer { state, manager: self.clone() }
    }

    /// Closes every connection (a stdio server gets its stdin closed, then its process group is killed and
    /// the child reaped), waiting at most about three seconds. Later calls connect again. Call it from
    /// synchronous code (the end of `main`), not from a thread of the manager's own runtime.
    pub fn shutdown(&self) {
        let servers: Vec<Arc<ServerState>> = lock(&self.inner.servers).values().cloned().collect();
        if servers.is_empty() {
            return;
        }
        let closing = servers.clone();
        let _ = self.block_on(
            async move {
                futures::future::join_all(closing.iter().map(|s| s.disconnect())).await;
            },
            Duration::from_secs(3),
        );
        for s in &servers {
            s.kill_now();
        }
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, McpError> {
        let rt = self.inner.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("flujo-mcp")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        });
        rt.as_ref().map_err(|e| McpError::Runtime(e.clone()))
    }

    /// Runs `fut` on the manager's runtime; awaitable from any runtime.
    async fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, McpError>> + Send + 'static,
    ) -> Result<T, McpError> {
        let handle = self.runtime()?.spawn(fut);
        handle.await.map_err(|e| McpError::Runtime(format!("an MCP task ended abnormally: {e}")))?
    }

    /// Runs `fut` on the manager's runtime and waits for it on this thread, at most `limit`.
    fn block_on<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
        limit: Duration,
    ) -> Option<T> {
        let rt = self.runtime().ok()?;
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(limit).ok()
    }
}

/// One configured server of a [`McpManager`]. Cheap to clone.
#[derive(Clone)]
pub struct McpServer {
    state: Arc<ServerState>,
    manager: McpManager,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer").field("config", &self.state.config).finish()
    }
}

impl McpServer {
    /// The server's name.
    pub fn name(&self) -> &str {
        &self.state.config.name
    }

    /// The server's configuration.
    pub fn config(&self) -> &McpServerConfig {
        &self.state.config
    }

    /// The tools of the last successful `tools/list`, without connecting.
    pub fn cached_tools(&self) -> Option<Arc<[McpTool]>> {
        lock(&self.state.tools).clone()
    }

    /// Connects (when not connected) and returns the server's tools.
    pub async fn tools(&self) -> Result<Arc<[McpTool]>, McpError> {
        let state = self.state.clone();
        self.manager.run(async move { state.connection().await.map(|c| c.tools()) }).await
    }

    /// [`McpServer::tools`] from synchronous code, waiting at most `limit` (and the server's timeout).
    pub fn tools_blocking(&self, limit: Duration) -> Result<Arc<[McpTool]>, McpError> {
        let state = self.state.clone();
        let limit = limit.min(self.state.config.timeout + Duration::from_secs(1));
        let wait = async move {
            match tokio::time::timeout(limit, state.connection()).await {
                Ok(r) => r.map(|c| c.tools()),
                Err(_) => {
                    Err(state.unavailable(format!("no answer within {}", crate::error_secs(limit)), String::new()))
                }
            }
        };
        self.manager.block_on(wait, limit + Duration::from_secs(2)).unwrap_or_else(|| {
            Err(self.state.unavailable(format!("no answer within {}", crate::error_secs(limit)), String::new()))
        })
    }

    /// Connects now unless connected or a connect failed in the last seconds; waits at most the server's
    /// timeout. A failure is not returned: it is reported by the calls (which try again).
    pub fn prepare(&self) {
        if self.state.is_connected() || self.state.failed_recently() {
            return;
        }
        let _ = self.tools_blocking(self.state.config.timeout);
    }

    /// Calls `tool` with `arguments` (a JSON object; `null` means none), connecting when needed. The output
    /// is the result's structured content when present, else its text content (joined), else the content
    /// array as JSON; `isError: true` is [`McpError::Tool`] with the tool's text.
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<Value, McpError> {
        let args = match arguments {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(McpError::BadArguments {
                    server: self.name().to_owned(),
                    tool: tool.to_owned(),
                    got: flujo_core::json_type_name(&other).to_owned(),
                })
            }
        };
        let state = self.state.clone();
        let tool = tool.to_owned();
        self.manager.run(async move { state.call(&tool, args).await }).await
    }

    /// The skill `mcp.NAME.TOOL` calling `tool` of this server.
    pub fn skill(&self, tool: &str) -> crate::McpSkill {
        crate::McpSkill::new(self.clone(), tool)
    }
}

/// A server's configuration, its connection (when connected) and what is remembered between connections.
struct ServerState {
    config: McpServerConfig,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The tools of the last successful `tools/list` (read by skills' `info()`, which cannot wait).
    tools: Mutex<Option<Arc<[McpTool]>>>,
    last_failure: Mutex<Option<Instant>>,
    /// The process group of the current stdio server, for killing it from synchronous code.
    group: Mutex<Option<i32>>,
}

impl ServerState {
    fn new(config: McpServerConfig) -> Self {
        ServerState {
            config,
            conn: tokio::sync::Mutex::new(None),
            tools: Mutex::new(None),
            last_failure: Mutex::new(None),
            group: Mutex::new(None),
        }
    }

    fn is_connected(&self) -> bool {
        self.conn.try_lock().is_ok_and(|c| c.as_ref().is_some_and(|c| c.alive()))
    }

    fn failed_recently(&self) -> bool {
        lock(&self.last_failure).is_some_and(|t| t.elapsed() < REMEMBER_FAILURE)
    }

    fn unavailable(&self, message: String, stderr: String) -> McpError {
        McpError::Unavailable { server: self.config.name.clone(), target: self.config.describe(), message, stderr }
    }

    /// The live connection, connecting (again) when there is none or it broke.
    async fn connection(&self) -> Result<Arc<Connection>, McpError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.alive() {
                return Ok(c.clone());
            }
        }
        if let Some(old) = guard.take() {
            old.close().await;
        }
        match Connection::open(&self.config).await {
            Ok(c) => {
                let c = Arc::new(c);
                *lock(&self.tools) = Some(c.tools());
                *lock(&self.group) = c.process.as_ref().and_then(|p| p.group);
                *lock(&self.last_failure) = None;
                *guard = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                *lock(&self.last_failure) = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Drops `broken` if it is still the current connection.
    async fn forget(&self, broken: &Arc<Connection>) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            guard.take();
            *lock(&self.group) = None;
        }
        drop(guard);
        broken.close().await;
    }

    async fn disconnect(&self) {
        let old = self.conn.lock().await.take();
        *lock(&self.group) = None;
        if let Some(c) = old {
            c.close().await;
        }
    }

    /// Kills the current stdio server's process group and reaps the server, waiting at most a second
    /// (synchronous: for shutdown and drop, where no runtime may be left to reap it).
    fn kill_now(&self) {
        if let Some(g) = lock(&self.group).take() {
            kill_group(g);
            reap(g, Duration::from_secs(1));
        }
    }

    async fn call(&self, tool: &str, args: serde_json::Map<String, Value>) -> Result<Value, McpError> {
        let server = self.config.name.clone();
        let conn = self.connection().await?;
        if !conn.tools().iter().any(|t| t.name == tool) {
            // The server may have gained the tool since it was listed.
            if let Ok(Ok(list)) = tokio::time::timeout(self.config.timeout, conn.peer.list_all_tools()).await {
                let tools: Arc<[McpTool]> = list.iter().map(McpTool::from_rmcp).collect();
                *lock(&self.tools) = Some(tools.clone());
                *lock(&conn.tools) = tools.clone();
                if !tools.iter().any(|t| t.name == tool) {
                    let mut available: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
                    available.sort();
                    return Err(McpError::UnknownTool { server, tool: tool.to_owned(), available });
                }
            }
        }
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
        let answer = tokio::time::timeout(self.config.timeout, conn.peer.call_tool(params)).await;
        match answer {
            Err(_) => Err(McpError::Timeout { server, tool: tool.to_owned(), timeout: self.config.timeout }),
            Ok(Ok(result)) => output_of(result, &server, tool, &conn.secrets),
            Ok(Err(ServiceError::McpError(e))) if conn.alive() => {
                // -32602 invalid params, -32601 method not found: calling again cannot help.
                let permanent = matches!(e.code.0, -32602 | -32601);
                Err(McpError::Protocol {
                    server,
                    tool: tool.to_owned(),
                    message: redact(&format!("{} (code {})", e.message, e.code.0), &conn.secrets),
                    permanent,
                })
            }
            Ok(Err(e)) => {
                let (message, stderr) = conn.why_broken(&e).await;
                self.forget(&conn).await;
                Err(McpError::Crashed { server, tool: tool.to_owned(), message, stderr })
            }
        }
    }
}

/// The output of a tool call (see [`McpServer::call`]).
fn output_of(result: CallToolResult, server: &str, tool: &str, secrets: &[String]) -> Result<Value, McpError> {
    let texts: Vec<&str> = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.as_str())).collect();
    let all_text = !result.content.is_empty() && texts.len() == result.content.len();
    if result.is_error == Some(true) {
        let message = if !texts.is_empty() {
            texts.join("\n")
        } else if let Some(s) = &result.structured_content {
            s.to_string()
        } else {
            serde_json::to_string(&result.content).unwrap_or_default()
        };
        let message = if message.trim().is_empty() { "(no message)".to_owned() } else { message };
        return Err(McpError::Tool {
            server: server.to_owned(),
            tool: tool.to_owned(),
            message: clip(&redact(&message, secrets), 2000),
        });
    }
    if let Some(s) = result.structured_content {
        return Ok(s);
    }
    if all_text {
        return Ok(Value::String(texts.join("\n")));
    }
    Ok(serde_json::to_value(&result.content).unwrap_or(Value::Array(Vec::new())))
}

/// A live connection: the MCP session, the tools it listed, and (stdio) the server process.
struct Connection {
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, ClientConfig>>>,
    peer: Peer<RoleClient>,
    /// The tools of its `tools/list` (listed again when a call names a tool not in it).
    tools: Mutex<Arc<[McpTool]>>,
    process: Option<Arc<ServerProcess>>,
    /// The expanded `${VAR}` values of the configuration.
    secrets: Arc<Vec<String>>,
}

impl Connection {
    fn tools(&self) -> Arc<[McpTool]> {
        lock(&self.tools).clone()
    }

    fn alive(&self) -> bool {
        !self.peer.is_transport_closed() && self.process.as_ref().is_none_or(|p| p.running())
    }

    async fn open(config: &McpServerConfig) -> Result<Connection, McpError> {
        config.check()?;
        let mut secrets = Vec::new();
        match &config.transport {
            McpTransport::Stdio { command, env, cwd } => {
                let mut vars = Vec::with_capacity(env.len());
                for (k, v) in env {
                    vars.push((k.clone(), expand(v, &format!("env `{k}`"), &config.name, &mut secrets)?));
                }
                let secrets = Arc::new(secrets);
                let (process, stdout, stdin) = ServerProcess::spawn(config, command, &vars, cwd.as_deref(), &secrets)?;
                let process = Arc::new(process);
                let handshake = client_config().serve((stdout, stdin));
                match tokio::time::timeout(config.timeout, handshake).await {
                    Ok(Ok(service)) => Self::finish(config, service, Some(process), secrets).await,
                    Ok(Err(e)) => {
                        let status = process.exit_status(Duration::from_secs(2)).await;
                        let stderr = process.stderr_excerpt(&secrets).await;
                        process.kill();
                        let message = match status {
                            Some(s) => format!("it exited at start ({s})"),
                            None => redact(&format!("the MCP handshake failed: {e}"), &secrets),
                        };
                        Err(unavailable(config, message, stderr))
                    }
                    Err(_) => {
                        process.kill();
                        let stderr = process.stderr_excerpt(&secrets).await;
                        Err(unavailable(
                            config,
                            format!(
                                "it did not complete the MCP handshake within {} (timeout_s)",
                                crate::error_secs(config.timeout)
                            ),
                            stderr,
                        ))
                    }
                }
            }
            McpTransport::Http { url, headers } => {
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                use rmcp::transport::StreamableHttpClientTransport;
                let mut custom = std::collections::HashMap::new();
                for (k, v) in headers {
                    let value = expand(v, &format!("header `{k}`"), &config.name, &mut secrets)?;
                    let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| McpError::Config {
                        server: config.name.clone(),
                        message: format!("headers: `{k}` is not a valid header name"),
                    })?;
                    let value = http::HeaderValue::from_str(&value).map_err(|_| McpError::Config {
                        server: config.name.clone(),
                        message: format!("header `{k}`: its value is not a valid header value"),
                    })?;
                    custom.insert(name, value);
                }
                let secrets = Arc::new(secrets);
                let client = http_client(config.timeout).map_err(|m| unavailable(config, m, String::new()))?;
                let transport_config =
                    StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
                let transport = StreamableHttpClientTransport::with_client(client, transport_config);
                match tokio::time::timeout(config.timeout, client_config().serve(transport)).await {
                    Ok(Ok(service)) => Self::finish(config, service, None, secrets).await,
                    Ok(Err(e)) => Err(unavailable(
                        config,
                        redact(&format!("the MCP handshake failed: {}", error_chain(&e)), &secrets),
                        String::new(),
                    )),
                    Err(_) => Err(unavailable(
                        config,
                        format!("no MCP handshake within {} (timeout_s)", crate::error_secs(config.timeout)),
                        String::new(),
                    )),
                }
            }
        }
    }

    async fn finish(
        config: &McpServerConfig,
        service: RunningService<RoleClient, ClientConfig>,
        process: Option<Arc<ServerProcess>>,
        secrets: Arc<Vec<String>>,
    ) -> Result<Connection, McpError> {
        let peer = service.peer().clone();
        let listed = tokio::time::timeout(config.timeout, peer.list_all_tools()).await;
        let conn = |tools: Arc<[McpTool]>, service| Connection {
            service: tokio::sync::Mutex::new(Some(service)),
            peer: peer.clone(),
            tools: Mutex::new(tools),
            process: process.clone(),
            secrets: secrets.clone(),
        };
        match listed {
            Ok(Ok(list)) => Ok(conn(list.iter().map(McpTool::from_rmcp).collect(), service)),
            Ok(Err(e)) => {
                let c = conn(Arc::from(Vec::new()), service);
                let (message, stderr) = c.why_broken(&e).await;
                c.close().await;
                Err(unavailable(config, format!("tools/list failed: {message}"), stderr))
            }
            Err(_) => {
                let c = conn(Arc::from(Vec::new()), service);
                c.close().await;
                Err(unavailable(
                    config,
                    format!("no answer to tools/list within {} (timeout_s)", crate::error_secs(config.timeout)),
                    String::new(),
                ))
            }
        }
    }

    /// What broke the connection (the exit status of a stdio server, the transport error of an HTTP one),
    /// and the end of the server's stderr.
    async fn why_broken(&self, e: &ServiceError) -> (String, String) {
        match &self.process {
            Some(p) => {
                let status = p.exit_status(Duration::from_secs(2)).await;
                let stderr = p.stderr_excerpt(&self.secrets).await;
                let message = match status {
                    Some(s) => format!("the server process exited ({s})"),
                    None => redact(&format!("the connection broke: {}", error_chain(e)), &self.secrets),
                };
                (message, stderr)
            }
            None => (redact(&format!("the connection broke: {}", error_chain(e)), &self.secrets), String::new()),
        }
    }

    /// Ends the session (a stdio server sees its stdin close) and makes sure the process is gone.
    async fn close(&self) {
        let service = self.service.lock().await.take();
        if let Some(mut s) = service {
            let _ = s.close_with_timeout(Duration::from_secs(1)).await;
        }
        if let Some(p) = &self.process {
            if p.exit_status(Duration::from_millis(500)).await.is_none() {
                p.kill();
                let _ = p.exit_status(Duration::from_secs(1)).await;
            }
        }
    }
}

pub(crate) fn unavailable(config: &McpServerConfig, message: String, stderr: String) -> McpError {
    McpError::Unavailable { server: config.name.clone(), target: config.describe(), message, stderr }
}

fn client_config() -> ClientConfig {
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("flujo", env!("CARGO_PKG_VERSION")))
}

/// The HTTP client of streamable-HTTP servers (`flujo_http`: rustls with the ring provider and the web PKI roots).
fn http_client(timeout: Duration) -> Result<flujo_http::reqwest::Client, String> {
    flujo_http::client_builder()
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .redirect(flujo_http::reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// An error with its sources (`error sending request: connection refused`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// A poisoned lock only means another thread panicked while holding it; the data is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
