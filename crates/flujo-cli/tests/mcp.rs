//! MCP tools through the `flujo` binary, against the test server of `flujo-mcp` (`flujo-mcp-test-server`)
//! over stdio and streamable HTTP: tools as steps and as agent tools (fake model provider), servers from the
//! blueprint and from `flujo.toml`, validation (undeclared servers, unknown tools, offline servers), crashes,
//! timeouts, servers that cannot start, secrets in headers, resuming a stored run, and no process left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{code, fake_project, flujo, json_out, project, stderr, stdout};
use flujo_llm::testing::ScriptedReply;
use serde_json::{json, Value};

/// The test server binary: built beside `flujo` by `cargo test --workspace`; built here when this test runs
/// alone (`cargo test -p flujo-cli --test mcp`).
fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_flujo")).with_file_name("flujo-mcp-test-server");
        if !bin.is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "flujo-mcp", "--features", "test-server", "--bin", "flujo-mcp-test-server"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building flujo-mcp-test-server failed");
        }
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// `mcp_servers:` declaring the stdio test server as `calc` (with `extra` lines for it).
fn servers_yaml(extra: &str) -> String {
    format!("mcp_servers:\n  calc:\n    command: [\"{}\"]\n{extra}", server_bin().display())
}

fn run_json(dir: &Path, args: &[&str]) -> (Output, Value) {
    let o = flujo(dir, args);
    let v = json_out(&o);
    (o, v)
}

const ADD_AND_ECHO: &str = r#"
steps:
  - name: add
    agent: {id: mcp.calc.add}
    input: {a: 2, b: 40}
  - name: say
    agent: {id: mcp.calc.echo}
    input: '{"text": "the sum is {{ previous_step.sum }}"}'
  - name: pid
    agent: {id: mcp.calc.pid}
    input: {}
"#;

#[test]
fn mcp_tools_run_as_steps_over_stdio_and_are_journaled() {
    let bp = format!("version: \"0.1\"\nname: mcp_steps\n{}{ADD_AND_ECHO}", servers_yaml(""));
    let dir = project(&[("pipeline.yaml", &bp)]);
    let (o, v) = run_json(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(v["status"], "completed");
    assert_eq!(v["step_history"][0]["output"], json!({"sum": 42}), "structured content");
    assert_eq!(v["step_history"][1]["output"], json!("the sum is 42"), "text content");
    let pid = v["output"]["pid"].as_u64().unwrap() as u32;
    assert!(gone_within(pid, Duration::from_secs(5)), "the server process is gone after flujo exits");

    // The outputs are in the journal like any skill call's.
    let run_id = v["run_id"].as_str().unwrap();
    let shown = flujo(dir.path(), &["lens", "show", run_id, "--show-output", "--json"]);
    assert_eq!(code(&shown), 0, "{}", stderr(&shown));
    let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["steps"][0]["output"], json!({"sum": 42}), "{shown}");
    assert_eq!(shown["steps"][1]["output"], json!("the sum is 42"), "{shown}");
}

#[test]
fn servers_from_flujo_toml_over_streamable_http_keep_their_header_secrets() {
    let secret = "hdr-5ecret-7c1e";
    let server = HttpServer::start(secret);
    let bp = r#"version: "0.1"
name: mcp_http
steps:
  - name: add
    agent: {id: mcp.remote.add}
    input: {a: 1, b: 2}
    config: {max_retries: 0}
"#;
    let toml = format!(
        "state_uri = \"sqlite:///state.db\"\n[mcp.servers.remote]\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer ${{MCP_TEST_TOKEN}}\" }}\ntimeout_s = 20\n",
        server.url
    );
    let dir = project(&[("pipeline.yaml", bp), ("flujo.toml", &toml)]);
    let o = common::cmd(dir.path(), &["run", "--json"]).env("MCP_TEST_TOKEN", secret).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["output"], json!({"sum": 3}));
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    let mut seen = stdout(&o) + &stderr(&o);
    for args in [vec!["lens", "show", &run_id, "--json"], vec!["lens", "trace", &run_id, "--json"]] {
        let o = flujo(dir.path(), &args);
        seen += &(stdout(&o) + &stderr(&o));
    }
    assert!(!seen.contains(secret), "the header's value leaked: {seen}");
    let db = std::fs::read(dir.path().join("state.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(secret), "the header's value is in the state store");

    // A wrong token: the step fails, and neither token appears in what flujo prints.
    let o = common::cmd(dir.path(), &["run", "--json"]).env("MCP_TEST_TOKEN", "wrong-5ecret-00").output().unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v = json_out(&o);
    let printed = stdout(&o) + &stderr(&o);
    assert!(v["error"]["message"].as_str().unwrap().contains("MCP server 'remote'"), "{v}");
    assert!(!printed.contains("wrong-5ecret-00") && !printed.contains(secret), "{printed}");

    // An unset variable is named, never guessed.
    let o = flujo(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stdout(&o).contains("${MCP_TEST_TOKEN}, which is not set"), "{}", stdout(&o));
}

#[test]
fn an_agent_calls_an_mcp_tool_with_the_schema_the_server_gave() {
    let bp = format!(
        r#"version: "0.1"
name: mcp_agent
{}agents:
  helper:
    model: "openai:gpt-test"
    system_prompt: "Use the calculator."
    tools: [mcp.calc.add]
    max_retries: 0
steps:
  - name: ask
    uses: agents.helper
"#,
        servers_yaml("")
    );
    let env = fake_project(&[("pipeline.yaml", &bp)], "state_uri = \"memory://\"\n");
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: flujo_llm::tools::tool_name_for("mcp.calc.add"),
        arguments: json!({"a": 20, "b": 22}),
    });
    env.fake.push_reply(ScriptedReply::Text("It is 42.".into()));
    let o = flujo(env.dir.path(), &["run", "-i", "what is 20 + 22?", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["output"], "It is 42.");
    assert_eq!(v["step_history"][0]["metadata"]["tool_calls"], 1, "{v}");
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2);
    let offered = calls[0].body.to_string();
    assert!(offered.contains("Adds two numbers") && offered.contains(r#""required":["a","b"]"#), "{offered}");
    assert!(calls[1].body.to_string().contains(r#"{\"sum\":42}"#), "the result goes back: {}", calls[1].body);
}

#[test]
fn a_crash_fails_the_step_clearly_and_the_next_call_reconnects() {
    let bp = format!(
        r#"version: "0.1"
name: mcp_crash
{}steps:
  - name: before
    agent: {{id: mcp.calc.pid}}
    input: {{}}
  - name: boom
    agent: {{id: mcp.calc.crash}}
    input: {{code: 9}}
    config: {{max_retries: 0}}
    fallback:
      name: after
      agent: {{id: mcp.calc.pid}}
      input: {{}}
"#,
        servers_yaml("")
    );
    let dir = project(&[("pipeline.yaml", &bp)]);
    let (o, v) = run_json(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let steps = v["step_history"].as_array().unwrap();
    let before = steps[0]["output"]["pid"].as_u64().unwrap();
    let after = steps[1]["output"]["pid"].as_u64().unwrap();
    assert_ne!(before, after, "the fallback's call started the server again");
    assert_eq!(steps[1]["metadata"]["fallback_triggered"], true, "{v}");

    // Without a fallback the run fails with the server's exit status and stderr.
    let bp = format!(
        "version: \"0.1\"\nname: mcp_crash2\n{}steps:\n  - name: boom\n    agent: {{id: mcp.calc.crash}}\n    input: {{code: 9}}\n    config: {{max_retries: 0}}\n",
        servers_yaml("")
    );
    std::fs::write(dir.path().join("crash.yaml"), bp).unwrap();
    let (o, v) = run_json(dir.path(), &["run", "crash.yaml", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("MCP server 'calc' went away during a call to tool 'crash'"), "{message}");
    assert!(message.contains("exit status: 9") && message.contains("crashing on purpose"), "{message}");
    // The next run works.
    let (o, v) = run_json(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(v["status"], "completed");
}

#[test]
fn a_hanging_tool_fails_at_the_timeout_and_tool_errors_fail_the_step() {
    let bp = format!(
        r#"version: "0.1"
name: mcp_slow
{}steps:
  - name: wait
    agent: {{id: mcp.calc.slow}}
    input: {{ms: 20000}}
    config: {{max_retries: 0}}
"#,
        servers_yaml("    timeout_s: 1\n")
    );
    let fail = format!(
        "version: \"0.1\"\nname: mcp_fail\n{}steps:\n  - name: f\n    agent: {{id: mcp.calc.fail}}\n    input: {{message: \"disk full\"}}\n    config: {{max_retries: 0}}\n  - name: unknown\n    agent: {{id: mcp.calc.nope}}\n",
        servers_yaml("")
    );
    let dir = project(&[("pipeline.yaml", &bp), ("fail.yaml", &fail)]);
    let started = Instant::now();
    let (o, v) = run_json(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("MCP tool 'slow' of server 'calc' did not answer within 1 s (timeout_s)"), "{message}");

    let (o, v) = run_json(dir.path(), &["run", "fail.yaml", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(v["step_history"][0]["status"], "failed");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("MCP tool 'fail' of server 'calc' failed: disk full"), "{message}");
}

#[test]
fn a_server_that_cannot_start_gives_its_stderr_and_validation_warns_offline() {
    let bp = format!(
        "version: \"0.1\"\nname: mcp_early\nmcp_servers:\n  calc:\n    command: [\"{}\", \"--exit-at-start\", \"4\"]\nsteps:\n  - name: add\n    agent: {{id: mcp.calc.add}}\n    input: {{a: 1, b: 1}}\n    config: {{max_retries: 0}}\n",
        server_bin().display()
    );
    let dir = project(&[("pipeline.yaml", &bp)]);
    let (o, v) = run_json(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("MCP server 'calc'") && message.contains("exited at start (exit status: 4)"), "{message}");
    assert!(message.contains("refusing to start"), "the server's stderr: {message}");

    // Validation cannot reach it: a warning, and exit 0 (offline validation works).
    let o = flujo(dir.path(), &["validate", "pipeline.yaml", "--format", "json"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let diags: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let text = diags.to_string();
    assert!(text.contains("BP-MCP-UNREACHABLE") && text.contains("warning"), "{text}");
}

#[test]
fn validation_checks_servers_and_tool_names() {
    let bp = format!(
        "version: \"0.1\"\nname: mcp_validate\n{}steps:\n  - name: add\n    agent: {{id: mcp.calc.add}}\n",
        servers_yaml("")
    );
    let typo = bp.replace("mcp.calc.add", "mcp.calc.ad");
    let undeclared = bp.replace("mcp.calc.add", "mcp.calculator.add");
    let dir = project(&[("ok.yaml", &bp), ("typo.yaml", &typo), ("undeclared.yaml", &undeclared)]);
    let o = flujo(dir.path(), &["validate", "ok.yaml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok.yaml: ok"), "{}", stdout(&o));

    let o = flujo(dir.path(), &["validate", "typo.yaml"]);
    assert_eq!(code(&o), 4, "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("BP-MCP-TOOL") && text.contains("MCP server `calc` has no tool `ad`"), "{text}");
    assert!(text.contains("did you mean `mcp.calc.add`?"), "{text}");

    let o = flujo(dir.path(), &["validate", "undeclared.yaml"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert!(stdout(&o).contains("BP-MCP-SERVER"), "{}", stdout(&o));
    assert!(stdout(&o).contains("[mcp.servers.calculator] in flujo.toml"), "how to declare it: {}", stdout(&o));
    // `run` refuses it as a resolution error (exit 3) before anything runs.
    let (o, v) = run_json(dir.path(), &["run", "undeclared.yaml", "--json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(v["error"]["kind"], "resolution_error");
    assert!(v.to_string().contains("BP-MCP-SERVER"), "{v}");

    // A server of flujo.toml is declared for every blueprint of the project.
    std::fs::write(
        dir.path().join("flujo.toml"),
        format!("[mcp.servers.calculator]\ncommand = [\"{}\"]\n", server_bin().display()),
    )
    .unwrap();
    let o = flujo(dir.path(), &["validate", "undeclared.yaml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // A bad [mcp] section is a configuration error (exit 2).
    std::fs::write(dir.path().join("flujo.toml"), "[mcp.servers.\"a.b\"]\ncommand = [\"x\"]\n").unwrap();
    let o = flujo(dir.path(), &["validate", "ok.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("[mcp.servers.a.b]"), "{}", stderr(&o));
    std::fs::write(dir.path().join("flujo.toml"), "[mcp.servers.x]\ncommand = [\"x\"]\nurl = \"http://h\"\n").unwrap();
    let o = flujo(dir.path(), &["validate", "ok.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not both"), "{}", stderr(&o));
}

#[test]
fn a_resumed_run_reaches_the_servers_of_its_blueprint() {
    let bp = format!(
        r#"version: "0.1"
name: mcp_resume
{}steps:
  - name: add
    agent: {{id: mcp.calc.add}}
    input: {{a: 1, b: 1}}
  - kind: hitl
    name: approve
    message: "go on?"
  - name: say
    agent: {{id: mcp.calc.echo}}
    input: '{{"text": "approved: {{{{ previous_step }}}}"}}'
"#,
        servers_yaml("")
    );
    let dir = project(&[("pipeline.yaml", &bp)]);
    let (o, v) = run_json(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    let elsewhere = tempfile::tempdir().unwrap();
    let state = format!("sqlite:///{}", dir.path().join(".flujo/state.db").display());
    let o = flujo(elsewhere.path(), &["resume", &run_id, "-i", "yes", "--state", &state, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "approved: yes");
}

/// The test server over streamable HTTP, requiring `Authorization: Bearer TOKEN`; killed on drop.
struct HttpServer {
    child: Child,
    url: String,
}

impl HttpServer {
    fn start(token: &str) -> Self {
        let mut child = Command::new(server_bin())
            .args(["--http", "127.0.0.1:0", "--bearer-env", "MCP_TEST_TOKEN"])
            .env("MCP_TEST_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
        HttpServer { child, url }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once `pid` is gone (or a zombie of a process that is not ours), waiting up to `limit`.
fn gone_within(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) => {
                return true
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}
