//! The MCP client against the test server (`flujo-mcp-test-server`), over stdio (a child process) and over
//! streamable HTTP (the same server on 127.0.0.1:0): tools and schemas, structured and text output, tool
//! errors, unknown tools, timeouts, a crash and the reconnect after it, servers that cannot start, secrets in
//! headers, the skill registry, and no process left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, SkillRegistry};
use flujo_mcp::{McpError, McpManager, McpServerConfig, McpSkills};
use serde_json::{json, Value};

const SERVER: &str = env!("CARGO_BIN_EXE_flujo-mcp-test-server");

fn stdio(name: &str, extra: &[&str]) -> McpServerConfig {
    let mut command = vec![SERVER.to_owned()];
    command.extend(extra.iter().map(|s| s.to_string()));
    McpServerConfig::stdio(name, command).with_timeout(Duration::from_secs(20))
}

/// A registry of one skill, `flujo.builtins.stringify`, standing for whatever an application registers.
struct Builtins;

impl SkillRegistry for Builtins {
    fn resolve(&self, id: &str, _params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        struct Stringify;
        #[async_trait::async_trait]
        impl Skill for Stringify {
            async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
                Ok(SkillOutput::value(Value::String(call.input.to_string())))
            }
            fn info(&self) -> SkillInfo {
                SkillInfo::new("flujo.builtins.stringify", "JSON text of the input")
            }
        }
        match id {
            "flujo.builtins.stringify" => Ok(Arc::new(Stringify)),
            _ => Err(ResolveError::Unknown { id: id.to_owned(), suggestion: None }),
        }
    }

    fn list(&self) -> Vec<SkillInfo> {
        vec![SkillInfo::new("flujo.builtins.stringify", "JSON text of the input")]
    }
}

fn pid_of(v: &Value) -> u32 {
    v["pid"].as_u64().expect("a pid") as u32
}

/// True while `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).is_some_and(|r| !r.starts_with('Z')),
        Err(_) => false,
    }
}

/// True once `pid` is gone entirely (exited and reaped), waiting up to 5 s.
fn gone_within_5s(pid: u32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn stdio_tools_answer_with_structured_text_and_error_results() {
    let manager = McpManager::new();
    let calc = manager.server(stdio("calc", &[]));
    let tools = calc.tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, flujo_mcp::testing::TOOLS);
    let add = tools.iter().find(|t| t.name == "add").unwrap();
    assert_eq!(add.input_schema["required"], json!(["a", "b"]));
    assert!(add.read_only && add.output_schema.is_some());

    assert_eq!(calc.call("add", json!({"a": 2, "b": 40})).await.unwrap(), json!({"sum": 42}));
    assert_eq!(calc.call("echo", json!({"text": "hello"})).await.unwrap(), json!("hello"));
    let e = calc.call("fail", json!({"message": "no such file"})).await.unwrap_err();
    assert_eq!(e.kind(), "mcp_tool_error");
    assert_eq!(e.to_string(), "MCP tool 'fail' of server 'calc' failed: no such file");
    let e = calc.call("nope", json!({})).await.unwrap_err();
    assert!(matches!(e, McpError::UnknownTool { .. }), "{e}");
    assert!(e.to_string().contains("it offers: add, crash, echo, env, fail, pid, slow"), "{e}");
    let e = calc.call("add", json!({"a": "two", "b": 1})).await.unwrap_err();
    assert_eq!(e.kind(), "mcp_protocol", "{e}");
    assert!(!e.retryable(), "invalid params are not worth retrying: {e}");
    let e = calc.call("add", json!([1, 2])).await.unwrap_err();
    assert_eq!(e.kind(), "mcp_bad_arguments", "{e}");
    manager.shutdown();
}

#[tokio::test]
async fn one_connection_is_shared_by_every_call_and_handle() {
    let manager = McpManager::new();
    let a = manager.server(stdio("shared", &[]));
    let b = manager.server(stdio("shared", &[]));
    let (x, y) = tokio::join!(a.call("pid", Value::Null), b.call("pid", Value::Null));
    assert_eq!(pid_of(&x.unwrap()), pid_of(&y.unwrap()), "one server process for both handles");
    let pid = pid_of(&a.call("pid", json!({})).await.unwrap());
    manager.shutdown();
    assert!(gone_within_5s(pid), "shutdown kills and reaps the server");
}

#[tokio::test]
async fn a_call_past_the_timeout_fails_and_the_connection_stays_usable() {
    let manager = McpManager::new();
    let s = manager.server(stdio("slowpoke", &[]).with_timeout(Duration::from_millis(700)));
    let started = Instant::now();
    let e = s.call("slow", json!({"ms": 5000})).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "gave up at the timeout: {:?}", started.elapsed());
    assert_eq!(e.to_string(), "MCP tool 'slow' of server 'slowpoke' did not answer within 0.7 s (timeout_s)");
    assert!(e.retryable());
    assert_eq!(s.call("echo", json!({"text": "still here"})).await.unwrap(), json!("still here"));
    manager.shutdown();
}

#[tokio::test]
async fn a_crash_during_a_call_is_reported_with_stderr_and_the_next_call_reconnects() {
    let manager = McpManager::new();
    let s = manager.server(stdio("fragile", &[]));
    let first = pid_of(&s.call("pid", json!({})).await.unwrap());
    let e = s.call("crash", json!({"code": 7})).await.unwrap_err();
    assert_eq!(e.kind(), "mcp_crashed", "{e}");
    let text = e.to_string();
    assert!(text.contains("went away during a call to tool 'crash'"), "{text}");
    assert!(text.contains("exit status: 7"), "{text}");
    assert!(text.contains("crashing on purpose (exit code 7)"), "the stderr excerpt: {text}");
    assert!(gone_within_5s(first), "the crashed server was reaped");
    let second = pid_of(&s.call("pid", json!({})).await.unwrap());
    assert_ne!(first, second, "a new server process answers");
    manager.shutdown();
    assert!(gone_within_5s(second));
}

#[tokio::test]
async fn servers_that_cannot_start_say_why() {
    let manager = McpManager::new();
    let e = manager.server(stdio("early", &["--exit-at-start", "4"])).tools().await.unwrap_err();
    assert_eq!(e.kind(), "mcp_unavailable", "{e}");
    let text = e.to_string();
    assert!(text.contains("it exited at start (exit status: 4)"), "{text}");
    assert!(text.contains("refusing to start"), "the stderr excerpt: {text}");

    let missing = McpServerConfig::stdio("ghost", vec!["/nonexistent/flujo-mcp-server".into()]);
    let e = manager.server(missing).call("add", json!({})).await.unwrap_err();
    assert!(e.to_string().contains("`/nonexistent/flujo-mcp-server` was not found"), "{e}");

    let hang = stdio("hang", &["--hang-at-start"]).with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let e = manager.server(hang).tools().await.unwrap_err();
    assert!(e.to_string().contains("did not complete the MCP handshake within 0.5 s"), "{e}");
    assert!(e.to_string().contains("hanging on purpose"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let unset = stdio("needs_env", &[]).with_env("TOKEN", "${FLUJO_MCP_TEST_NEVER_SET}");
    let e = manager.server(unset).tools().await.unwrap_err();
    assert_eq!(e.kind(), "mcp_config");
    assert!(e.to_string().contains("${FLUJO_MCP_TEST_NEVER_SET}, which is not set"), "{e}");
    manager.shutdown();
}

#[tokio::test]
async fn env_references_reach_the_server_and_a_relative_program_runs_from_cwd() {
    std::env::set_var("FLUJO_MCP_TEST_GREETING", "hola");
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("server");
    std::os::unix::fs::symlink(SERVER, &link).unwrap();
    let manager = McpManager::new();
    let cfg = McpServerConfig::stdio("local", vec!["./server".into()])
        .with_cwd(dir.path())
        .with_env("GREETING", "${FLUJO_MCP_TEST_GREETING}!");
    let s = manager.server(cfg);
    assert_eq!(s.call("env", json!({"name": "GREETING"})).await.unwrap(), json!("hola!"));
    manager.shutdown();
}

async fn http_server(bearer: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bearer = bearer.map(str::to_owned);
    tokio::spawn(async move { flujo_mcp::testing::serve_http(listener, bearer).await });
    format!("http://{addr}/mcp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_tools_work_and_header_secrets_stay_out_of_errors() {
    std::env::set_var("FLUJO_MCP_TEST_TOKEN", "tok-5ecret-9f2");
    let url = http_server(Some("tok-5ecret-9f2")).await;
    let manager = McpManager::new();
    let good = McpServerConfig::http("remote", url.clone())
        .with_header("Authorization", "Bearer ${FLUJO_MCP_TEST_TOKEN}")
        .with_timeout(Duration::from_secs(20));
    let s = manager.server(good);
    assert_eq!(s.call("add", json!({"a": 1.5, "b": 2})).await.unwrap(), json!({"sum": 3.5}));
    assert_eq!(s.call("echo", json!({"text": "over http"})).await.unwrap(), json!("over http"));
    let e = s.call("fail", json!({})).await.unwrap_err();
    assert_eq!(e.to_string(), "MCP tool 'fail' of server 'remote' failed: failed on purpose");
    let e = s.call("slow", json!({"ms": 3000})).await;
    assert!(e.is_ok(), "{e:?}");

    std::env::set_var("FLUJO_MCP_TEST_WRONG_TOKEN", "wrong-5ecret-11");
    let bad = McpServerConfig::http("remote_bad", url)
        .with_header("Authorization", "Bearer ${FLUJO_MCP_TEST_WRONG_TOKEN}")
        .with_timeout(Duration::from_secs(20));
    let e = manager.server(bad).tools().await.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.kind(), "mcp_unavailable", "{text}");
    assert!(!text.contains("wrong-5ecret-11") && !text.contains("tok-5ecret-9f2"), "{text}");
    assert!(!format!("{e:?}").contains("wrong-5ecret-11"));

    let refused = McpServerConfig::http("nobody", "http://127.0.0.1:9/mcp").with_timeout(Duration::from_secs(5));
    let e = manager.server(refused).tools().await.unwrap_err();
    assert_eq!(e.kind(), "mcp_unavailable", "{e}");
    assert!(e.to_string().contains("http://127.0.0.1:9/mcp"), "{e}");
    manager.shutdown();
}

#[test]
fn the_registry_resolves_mcp_ids_with_schemas_and_delegates_the_rest() {
    let manager = McpManager::new();
    let calc = manager.server(stdio("calc", &[]));
    let reg = McpSkills::new(Arc::new(Builtins), [calc]);
    let add = reg.resolve("mcp.calc.add", &Value::Null).unwrap();
    let info = add.info();
    assert_eq!(info.id, "mcp.calc.add");
    assert_eq!(info.input_schema.as_ref().unwrap()["properties"]["a"]["type"], "number");
    assert!(!info.side_effects, "add is read-only");
    assert!(reg.resolve("mcp.calc.echo", &json!({})).unwrap().info().side_effects);
    assert!(reg.resolve("flujo.builtins.stringify", &Value::Null).is_ok());
    assert!(reg.list().iter().any(|i| i.id == "mcp.calc.crash"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt.block_on(add.call(SkillCall::new(json!("{\"a\": 1, \"b\": 2}")))).unwrap();
    assert_eq!(out.output, json!({"sum": 3}), "a rendered template holding a JSON object is the arguments");
    let err = rt.block_on(reg.resolve("mcp.calc.nope", &Value::Null).unwrap().call(SkillCall::new(json!({}))));
    let err = err.unwrap_err();
    assert!(!err.retryable && err.message.contains("has no tool 'nope'"), "{err:?}");

    match reg.resolve("mcp.other.add", &Value::Null) {
        Err(ResolveError::BadParams { message, .. }) => {
            assert!(
                message.contains("MCP server 'other' is not declared") && message.contains("declared: calc"),
                "{message}"
            )
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("an undeclared server resolved"),
    }
    assert!(matches!(reg.resolve("mcp.calc", &Value::Null), Err(ResolveError::BadParams { .. })));
    assert!(matches!(reg.resolve("mcp.calc.add", &json!({"x": 1})), Err(ResolveError::BadParams { .. })));
    let pid = pid_of(
        &rt.block_on(reg.resolve("mcp.calc.pid", &Value::Null).unwrap().call(SkillCall::new(Value::Null)))
            .unwrap()
            .output,
    );
    assert!(process_alive(pid));
    drop((rt, add, reg, manager));
    assert!(gone_within_5s(pid), "dropping the manager kills its servers");
}

#[test]
fn an_unreachable_server_still_resolves_and_fails_its_calls() {
    let manager = McpManager::new();
    let down = manager.server(McpServerConfig::stdio("down", vec!["/nonexistent/mcp".into()]));
    let reg = McpSkills::new(Arc::new(Builtins), [down]);
    let skill = reg.resolve("mcp.down.add", &Value::Null).expect("resolves without the server");
    assert_eq!(skill.info().id, "mcp.down.add");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(skill.call(SkillCall::new(json!({})))).unwrap_err();
    assert!(err.message.contains("MCP server 'down' (stdio `/nonexistent/mcp`) is not available"), "{err:?}");
    assert!(err.retryable);
}
