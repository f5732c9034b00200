//! A small MCP server for tests (feature `test-server`; binary `flujo-mcp-test-server`), written with the same
//! SDK the client uses. Its tools:
//!
//! | tool | arguments | answer |
//! |---|---|---|
//! | `add` | `{a: number, b: number}` | structured `{"sum": a + b}` (read-only; declares an output schema) |
//! | `echo` | `{text: string}` | the text |
//! | `fail` | `{message?: string}` | `isError: true` with the message |
//! | `slow` | `{ms: integer}` | sleeps, then `slept N ms` |
//! | `crash` | `{code?: integer}` | writes `crashing on purpose` on stderr and exits the process (code 3) |
//! | `pid` | `{}` | structured `{"pid": …}`: which process answered |
//! | `env` | `{name: string}` | the value of an environment variable of the server |
//!
//! It serves stdio ([`serve_stdio`]) or streamable HTTP on a listener ([`serve_http`]), optionally requiring
//! `Authorization: Bearer TOKEN`.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};

/// The names of the test server's tools.
pub const TOOLS: &[&str] = &["add", "echo", "fail", "slow", "crash", "pid", "env"];

/// The test server (stateless: every session gets its own value).
#[derive(Debug, Clone, Copy, Default)]
pub struct TestServer;

fn schema(v: Value) -> Arc<Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    }
}

fn tools() -> Vec<Tool> {
    let number = json!({"type": "number"});
    vec![
        Tool::new(
            "add",
            "Adds two numbers; the sum is structured output.",
            schema(json!({"type": "object", "properties": {"a": number, "b": number}, "required": ["a", "b"]})),
        )
        .with_raw_output_schema(schema(json!({"type": "object", "properties": {"sum": {"type": "number"}}})))
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "echo",
            "Returns its text.",
            schema(json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})),
        ),
        Tool::new(
            "fail",
            "Always fails (isError) with its message.",
            schema(json!({"type": "object", "properties": {"message": {"type": "string"}}})),
        ),
        Tool::new(
            "slow",
            "Sleeps ms milliseconds.",
            schema(json!({"type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]})),
        ),
        Tool::new(
            "crash",
            "Exits the server process.",
            schema(json!({"type": "object", "properties": {"code": {"type": "integer"}}})),
        ),
        Tool::new("pid", "The server's process id.", schema(json!({"type": "object", "properties": {}}))),
        Tool::new(
            "env",
            "The value of one of the server's environment variables.",
            schema(json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})),
        ),
    ]
}

fn arg_f64(args: &Map<String, Value>, key: &str) -> Result<f64, ErrorData> {
    args.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` must be a number"), None))
}

fn arg_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, ErrorData> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` must be a string"), None))
}

impl TestServer {
    async fn run(&self, name: &str, args: Map<String, Value>) -> Result<CallToolResult, ErrorData> {
        match name {
            "add" => {
                let sum = arg_f64(&args, "a")? + arg_f64(&args, "b")?;
                let sum = if sum.fract() == 0.0 && sum.abs() < 1e15 { json!(sum as i64) } else { json!(sum) };
                Ok(CallToolResult::structured(json!({"sum": sum})))
            }
            "echo" => Ok(CallToolResult::success(vec![ContentBlock::text(arg_str(&args, "text")?)])),
            "fail" => {
                let message = args.get("message").and_then(Value::as_str).unwrap_or("failed on purpose");
                Ok(CallToolResult::error(vec![ContentBlock::text(message)]))
            }
            "slow" => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(CallToolResult::success(vec![ContentBlock::text(format!("slept {ms} ms"))]))
            }
            "crash" => {
                let code = args.get("code").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok()).unwrap_or(3);
                eprintln!("crashing on purpose (exit code {code})");
                std::process::exit(code);
            }
            "pid" => Ok(CallToolResult::structured(json!({"pid": std::process::id()}))),
            "env" => {
                let var = arg_str(&args, "name")?;
                match std::env::var(var) {
                    Ok(v) => Ok(CallToolResult::success(vec![ContentBlock::text(v)])),
                    Err(_) => Ok(CallToolResult::error(vec![ContentBlock::text(format!("{var} is not set"))])),
                }
            }
            other => Err(ErrorData::invalid_params(format!("unknown tool `{other}`"), None)),
        }
    }
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("flujo's MCP test server")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        self.run(&request.name, args).await.map(CallToolResponse::from)
    }
}

/// Serves MCP on this process's stdin/stdout until stdin closes.
pub async fn serve_stdio() -> Result<(), String> {
    let service = TestServer.serve(rmcp::transport::stdio()).await.map_err(|e| e.to_string())?;
    service.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Serves streamable HTTP at `/mcp` on `listener` until the process ends. With `bearer`, a request without
/// `Authorization: Bearer BEARER` gets 401.
pub async fn serve_http(listener: tokio::net::TcpListener, bearer: Option<String>) -> Result<(), String> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let service: StreamableHttpService<TestServer, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(TestServer), Default::default(), StreamableHttpServerConfig::default());
    let mut router = axum::Router::new().nest_service("/mcp", service);
    if let Some(token) = bearer {
        let expected = Arc::new(format!("Bearer {token}"));
        router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let expected = expected.clone();
                async move {
                    let ok = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v == expected.as_str());
                    if ok {
                        next.run(req).await
                    } else {
                        axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            "missing or wrong bearer token",
                        ))
                    }
                }
            },
        ));
    }
    axum::serve(listener, router).await.map_err(|e| e.to_string())
}
