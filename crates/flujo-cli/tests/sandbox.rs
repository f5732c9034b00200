//! `flujo.builtins.code_interpreter` and `[sandbox]` through the real `flujo` binary: the `process` sandbox's
//! protections on this machine (each test asserts the protection when `flujo dev sandbox-check` reports it
//! active, and the refusal naming it otherwise — never a silent skip), `none` refusing, a configured but
//! unavailable protection refusing, artifacts stored as blobs in the state store, `remote` against the
//! reference server, and an agent (fake provider) calling `code_interpreter` as a tool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{code, fake_project, json_out, project, stderr, stdout};
use flujo_llm::testing::ScriptedReply;
use serde_json::{json, Value};

/// `flujo ARGS` in `dir` (see `common::cmd`), without the caller's `FLUJO_SANDBOX_UNAVAILABLE`.
fn cmd(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = common::cmd(dir, args);
    c.env_remove("FLUJO_SANDBOX_UNAVAILABLE");
    c
}

fn flujo(dir: &Path, args: &[&str]) -> std::process::Output {
    cmd(dir, args).output().expect("flujo runs")
}

/// Sandboxed runs of this binary one at a time, so that "nothing is left afterwards" sees only its own run.
fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // cargo-nextest runs each test in a process of its own: the tests that count the sandbox's processes
    // must not see another test's, so they also hold a lock on a file every process shares.
    let file = std::fs::File::create(std::env::temp_dir().join("flujo-cli-sandbox-tests.lock")).unwrap();
    file.lock().unwrap();
    Serial { _file: file, _guard: guard }
}

/// Held while a test runs sandboxed processes (released on drop, the file's lock with it).
struct Serial {
    _file: std::fs::File,
    _guard: MutexGuard<'static, ()>,
}

const PROCESS: &str = "state_uri = \"sqlite:///state.db\"\n[sandbox]\nkind = \"process\"\ntimeout_s = 20\n";

/// A pipeline of one `code_interpreter` step with `params`; its input (`{code, files?}`, or the code text)
/// is the run's input.
fn pipeline(params: &str) -> String {
    format!(
        "version: \"0.1\"\nname: sbx\nsteps:\n  - name: run\n    agent: {{id: flujo.builtins.code_interpreter, params: {params}}}\n"
    )
}

/// Runs `input` (JSON of `{code, files?}`) through the pipeline in `dir`; the result object.
fn run(dir: &Path, input: &Value) -> Value {
    let o = flujo(dir, &["run", "--json", "--input-json", &input.to_string()]);
    let v = json_out(&o);
    assert!(code(&o) == 0 || v["status"] == "failed", "{}", stderr(&o));
    v
}

/// The protections `flujo dev sandbox-check --json` reports active in `dir`.
fn active(dir: &Path) -> Vec<String> {
    let v = json_out(&flujo(dir, &["dev", "sandbox-check", "--json"]));
    v["protections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["active"] == json!(true))
        .map(|p| p["protection"].as_str().unwrap().to_owned())
        .collect()
}

/// The step's output when every one of `needs` is active here; otherwise asserts that the run failed
/// refusing to run (naming an unavailable protection) and returns `None`.
fn output_or_refused(dir: &Path, needs: &[&str], input: &Value) -> Option<Value> {
    // the project requires exactly what the test exercises (`[sandbox]` is the file's last section)
    let toml = std::fs::read_to_string(dir.join("flujo.toml")).unwrap();
    let list: Vec<String> = needs.iter().map(|n| format!("{n:?}")).collect();
    std::fs::write(dir.join("flujo.toml"), format!("{toml}require = [{}]\n", list.join(", "))).unwrap();
    let on = active(dir);
    let v = run(dir, input);
    match needs.iter().find(|n| !on.iter().any(|a| a == *n)) {
        None => {
            assert_eq!(v["status"], "completed", "{v}");
            Some(v["output"].clone())
        }
        Some(missing) => {
            let msg = v["error"]["message"].as_str().unwrap_or_default().to_owned();
            assert_eq!(v["status"], "failed", "{v}");
            assert!(msg.contains("refuses to run") && msg.contains("required but unavailable"), "{msg}");
            eprintln!("{missing} is unavailable here; the sandbox refused as it must: {msg}");
            None
        }
    }
}

fn process_project(params: &str) -> tempfile::TempDir {
    project(&[("flujo.toml", PROCESS), ("pipeline.yaml", &pipeline(params))])
}

/// Processes of the uids the process sandbox gives its executions as root.
fn sandbox_processes() -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if uid.is_some_and(|u| (0x6000_0000..0x6100_0000).contains(&u)) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn without_a_sandbox_code_interpreter_validates_and_refuses_to_run() {
    let dir = project(&[("pipeline.yaml", &pipeline("{language: python}"))]);
    let o = flujo(dir.path(), &["validate"]);
    assert_eq!(code(&o), 0, "blueprints using it validate anywhere: {}", stderr(&o));
    let v = run(dir.path(), &json!({"code": "print(1)"}));
    assert_eq!(v["status"], "failed");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("the sandbox is off") && msg.contains("[sandbox]"), "{msg}");
    assert_eq!(v["step_history"][0]["attempts"], 1, "not retried: {v}");
    let o = flujo(dir.path(), &["dev", "sandbox-check", "--json"]);
    assert_eq!(code(&o), 1, "off: it would not run code");
    let c = json_out(&o);
    assert_eq!((c["kind"].as_str(), c["ready"].as_bool()), (Some("none"), Some(false)));
}

#[test]
fn python_runs_and_its_artifacts_are_blobs_in_the_state_store() {
    let _s = serial();
    let dir = process_project("{language: python, timeout_s: 10}");
    let input = json!({
        "code": "data = open('in/data.csv').read()\nprint(len(data.splitlines()))\nopen('report.txt', 'w').write(data.upper())\n",
        "files": {"in/data.csv": "a,b\n1,2\n"}
    });
    let Some(out) = output_or_refused(
        dir.path(),
        &[
            "folder",
            "timeout",
            "cleanup",
            "cpu",
            "memory",
            "file_size",
            "processes",
            "network",
            "filesystem",
            "privileges",
        ],
        &input,
    ) else {
        return;
    };
    assert_eq!(
        (out["stdout"].as_str(), out["exit_code"].as_i64(), out["timed_out"].as_bool()),
        (Some("2\n"), Some(0), Some(false))
    );
    let artifacts = out["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{out}");
    assert_eq!((artifacts[0]["path"].as_str(), artifacts[0]["size"].as_u64()), (Some("report.txt"), Some(8)));
    let hash = artifacts[0]["blob"].as_str().unwrap();
    assert_eq!(hash, blake3::hash(b"A,B\n1,2\n").to_hex().as_str());
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let bytes: Vec<u8> = db.query_row("SELECT bytes FROM blobs WHERE hash = ?1", [hash], |r| r.get(0)).unwrap();
    assert_eq!(bytes, b"A,B\n1,2\n");
    // bash and a plain string input (the code) work too
    let dir = process_project("{language: bash}");
    if let Some(out) = output_or_refused(dir.path(), &["timeout", "folder"], &json!("echo $((6 * 7))")) {
        assert_eq!(out["stdout"], "42\n");
    }
}

#[test]
fn an_infinite_loop_is_killed_at_the_timeout() {
    let _s = serial();
    let dir = process_project("{timeout_s: 1}");
    let t = Instant::now();
    let Some(out) = output_or_refused(dir.path(), &["timeout"], &json!({"code": "while True:\n    pass\n"})) else {
        return;
    };
    assert_eq!(out["timed_out"], true, "{out}");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    // with fail_on_error the timeout is a step failure
    let dir = process_project("{timeout_s: 1, fail_on_error: true}");
    std::fs::write(dir.path().join("flujo.toml"), format!("{PROCESS}require = [\"timeout\"]\n")).unwrap();
    let v = run(dir.path(), &json!({"code": "while True:\n    pass\n"}));
    assert_eq!(v["status"], "failed");
    let msg = v["error"]["message"].as_str().unwrap();
    if active(dir.path()).iter().any(|p| p == "timeout") {
        assert!(msg.contains("timed out"), "{v}");
    } else {
        assert!(msg.contains("required but unavailable"), "{v}");
    }
}

#[test]
fn a_fork_bomb_is_contained_and_nothing_is_left() {
    let _s = serial();
    let dir = process_project("{language: bash, timeout_s: 3, processes: 32}");
    let t = Instant::now();
    let input = json!({"code": "bomb() { bomb | bomb & }; bomb; sleep 1000"});
    let Some(out) = output_or_refused(dir.path(), &["processes", "cleanup", "timeout"], &input) else { return };
    assert_eq!(out["timed_out"], true, "{out}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    let err = out["stderr"].as_str().unwrap();
    assert!(err.contains("fork") || err.contains("Resource temporarily unavailable"), "{err}");
    assert_eq!(sandbox_processes(), Vec::<u32>::new(), "every process of the run is gone");
    // the machine survives: flujo still runs
    assert_eq!(code(&flujo(dir.path(), &["dev", "version"])), 0);
}

#[test]
fn a_10_gb_allocation_fails_inside() {
    let _s = serial();
    let dir = process_project("{}");
    let code_text = "try:\n    b = bytearray(10 * 1024 ** 3)\n    print('allocated')\nexcept MemoryError:\n    print('MemoryError')\n";
    let Some(out) = output_or_refused(dir.path(), &["memory"], &json!({"code": code_text})) else { return };
    assert_eq!(out["stdout"], "MemoryError\n", "{out}");
}

#[test]
fn a_connection_to_a_local_listener_fails() {
    let _s = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = process_project("{}");
    let code_text = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n    print('connected')\nexcept OSError as e:\n    print('refused', e)\n"
    );
    let Some(out) = output_or_refused(dir.path(), &["network"], &json!({"code": code_text})) else { return };
    assert!(out["stdout"].as_str().unwrap().starts_with("refused"), "{out}");
    // a step may not ask for the network the deployment does not allow
    let dir = process_project("{network: true}");
    let o = flujo(dir.path(), &["run", "--json", "--input-json", "\"print(1)\""]);
    assert_eq!(code(&o), 4, "refused when the runner is built: {}", stderr(&o));
    assert!(stderr(&o).contains("[sandbox] network = true"), "{}", stderr(&o));
}

#[test]
fn writing_outside_the_folder_fails() {
    let _s = serial();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("escaped.txt");
    let dir = process_project("{}");
    let code_text = format!(
        "import os\nfor p in [{:?}, os.path.expanduser('~/../../escaped.txt'), '/tmp/flujo-cli-escape.txt']:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n    except OSError as e:\n        print('denied', e.errno)\n",
        target.display().to_string()
    );
    let Some(out) = output_or_refused(dir.path(), &["filesystem"], &json!({"code": code_text})) else { return };
    let text = out["stdout"].as_str().unwrap();
    assert!(!text.contains("wrote") && text.matches("denied").count() == 3, "{text}");
    assert!(!target.exists());
    assert!(!Path::new("/tmp/flujo-cli-escape.txt").exists());
}

#[test]
fn the_grandchildren_of_a_timed_out_run_are_gone() {
    let _s = serial();
    let dir = process_project("{language: sh, timeout_s: 1.5}");
    // a background process in a session of its own prints its pid as flujo sees it (/proc is the host's)
    let code_text =
        "setsid sh -c 'read pid rest < /proc/self/stat; echo \"PID=$pid\"; exec sleep 1000' &\nsleep 1000\n";
    let Some(out) = output_or_refused(dir.path(), &["cleanup", "timeout"], &json!({"code": code_text})) else { return };
    assert_eq!(out["timed_out"], true, "{out}");
    let pid: u32 = out["stdout"].as_str().unwrap().trim().strip_prefix("PID=").and_then(|p| p.parse().ok()).unwrap();
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')));
    assert!(!alive, "the grandchild {pid} outlived the run");
}

#[test]
fn a_configured_protection_that_is_unavailable_refuses_to_run() {
    let dir = process_project("{}");
    for (how, env) in [("env", Some("network,filesystem")), ("config", None)] {
        let mut c = cmd(dir.path(), &["run", "--json", "--input-json", &json!({"code": "print(1)"}).to_string()]);
        if let Some(v) = env {
            c.env("FLUJO_SANDBOX_UNAVAILABLE", v);
        } else {
            std::fs::write(dir.path().join("flujo.toml"), format!("{PROCESS}unavailable = [\"filesystem\"]\n"))
                .unwrap();
        }
        let o = c.output().unwrap();
        assert_eq!(code(&o), 1, "{how}: {}", stderr(&o));
        let v = json_out(&o);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("refuses to run") && msg.contains("'filesystem'") | msg.contains("'network'"),
            "{how}: {msg}"
        );
        assert_eq!(v["step_history"][0]["attempts"], 1, "a refusal is not retried");
        let mut c = cmd(dir.path(), &["dev", "sandbox-check", "--json"]);
        if let Some(v) = env {
            c.env("FLUJO_SANDBOX_UNAVAILABLE", v);
        }
        let o = c.output().unwrap();
        assert_eq!(code(&o), 1, "{how}");
        let check = json_out(&o);
        assert_eq!(check["ready"], false);
        assert!(check["refuses"].as_array().unwrap().contains(&json!("filesystem")), "{check}");
    }
    // leaving it out of `require` is the explicit way to run without it
    std::fs::write(
        dir.path().join("flujo.toml"),
        format!("{PROCESS}unavailable = [\"filesystem\"]\nrequire = [\"timeout\", \"folder\"]\n"),
    )
    .unwrap();
    let o = flujo(dir.path(), &["dev", "sandbox-check"]);
    assert!(stdout(&o).contains("filesystem  no   optional"), "{}", stdout(&o));
    if active(dir.path()).iter().any(|p| p == "timeout") {
        let _s = serial();
        let v = run(dir.path(), &json!({"code": "print(1)"}));
        assert_eq!(v["output"]["stdout"], "1\n", "{v}");
    }
}

#[test]
fn sandbox_check_reports_every_protection_of_this_machine() {
    let dir = process_project("{}");
    let o = flujo(dir.path(), &["dev", "sandbox-check", "--json"]);
    let v = json_out(&o);
    let list = v["protections"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|p| p["protection"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "folder",
            "timeout",
            "cleanup",
            "cpu",
            "memory",
            "file_size",
            "processes",
            "network",
            "filesystem",
            "privileges"
        ]
    );
    let all = list.iter().all(|p| p["active"] == json!(true));
    assert_eq!(v["ready"], json!(all));
    assert_eq!(code(&o), if all { 0 } else { 1 });
    assert!(v["languages"].as_array().unwrap().contains(&json!("python")), "{v}");
    let text = stdout(&flujo(dir.path(), &["dev", "sandbox-check"]));
    assert!(text.contains("network") && text.contains("required"), "{text}");
    // `--kind` checks a kind that is not configured
    let plain = project(&[]);
    let v = json_out(&flujo(plain.path(), &["dev", "sandbox-check", "--kind", "process", "--json"]));
    assert_eq!(v["kind"], "process");
}

#[test]
fn bad_sandbox_settings_are_configuration_errors() {
    for (toml, needle) in [
        ("[sandbox]\nkind = \"vm\"\n", "`vm`"),
        ("[sandbox]\nkind = \"process\"\nrequire = [\"teleport\"]\n", "teleport"),
        ("[sandbox]\nkind = \"process\"\ntimeout_s = -1\n", "wall_s"),
        ("[sandbox]\nkind = \"process\"\nmemroy_mb = 1\n", "memroy_mb"),
        ("[sandbox]\nkind = \"remote\"\n", "url"),
        ("[sandbox]\nkind = \"process\"\nimage = \"python:3\"\n", "docker"),
    ] {
        let dir = project(&[("flujo.toml", toml), ("pipeline.yaml", &pipeline("{}"))]);
        let o = flujo(dir.path(), &["dev", "sandbox-check"]);
        assert_eq!(code(&o), 2, "{toml}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{toml}: {}", stderr(&o));
    }
}

#[test]
fn docker_without_an_engine_fails_clearly() {
    let toml = "[sandbox]\nkind = \"docker\"\ndocker_host = \"http://127.0.0.1:9\"\n";
    let dir = project(&[("flujo.toml", toml), ("pipeline.yaml", &pipeline("{}"))]);
    let v = run(dir.path(), &json!({"code": "print(1)"}));
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("docker"), "{v}");
}

/// The remote kind against the reference server (`flujo_sandbox::remote::router`) over this machine's
/// process sandbox, with a bearer token read from the environment.
#[test]
fn remote_runs_code_on_the_reference_server() {
    use flujo_core::Sandbox;
    let _s = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox: Arc<dyn Sandbox> =
        Arc::new(flujo_sandbox::ProcessSandbox::new(flujo_sandbox::ProcessSettings::default()));
    let all_active = sandbox.protections().iter().all(|p| p.active);
    let url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, flujo_sandbox::remote::router(sandbox)).await });
        format!("http://{addr}")
    });
    let toml = format!("[sandbox]\nkind = \"remote\"\nurl = \"{url}\"\napi_key_env = \"SANDBOX_TOKEN\"\n");
    let dir = project(&[("flujo.toml", &toml), ("pipeline.yaml", &pipeline("{language: sh}"))]);
    let o = cmd(
        dir.path(),
        &["run", "--json", "--input-json", &json!({"code": "echo remote; echo x > f.txt"}).to_string()],
    )
    .env("SANDBOX_TOKEN", "t0ken")
    .output()
    .unwrap();
    let v = json_out(&o);
    if all_active {
        assert_eq!(v["output"]["stdout"], "remote\n", "{v}");
        assert_eq!(v["output"]["artifacts"][0]["path"], "f.txt", "{v}");
    } else {
        assert!(v["error"]["message"].as_str().unwrap().contains("unavailable"), "{v}");
    }
    let o = cmd(dir.path(), &["dev", "sandbox-check", "--json"]).env("SANDBOX_TOKEN", "t0ken").output().unwrap();
    let c = json_out(&o);
    assert!(c["sandbox"].as_str().unwrap().starts_with(&format!("remote {url}")), "{c}");
    assert_eq!(c["ready"], json!(all_active), "{c}");
    // the key's variable must be set
    let o = flujo(dir.path(), &["run", "--json", "--input-json", "{}"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("SANDBOX_TOKEN"), "{}", stderr(&o));
}

#[test]
fn an_agent_calls_code_interpreter_as_a_tool() {
    const AGENT: &str = r#"version: "0.1"
name: analyst
agents:
  analyst:
    model: "openai:gpt-test"
    system_prompt: "Compute with Python, then answer."
    tools: [flujo.builtins.code_interpreter]
    max_turns: 3
steps:
  - name: ask
    uses: agents.analyst
"#;
    let _s = serial();
    let env = fake_project(
        &[("pipeline.yaml", AGENT)],
        "state_uri = \"sqlite:///state.db\"\n[sandbox]\nkind = \"process\"\n",
    );
    let d = env.dir.path();
    let ready = code(&flujo(d, &["dev", "sandbox-check"])) == 0;
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: "flujo_builtins_code_interpreter".into(),
        arguments: json!({"code": "print(sum(range(1, 101)))"}),
    });
    env.fake.push_reply(ScriptedReply::Text("The sum is 5050.".into()));
    let o = flujo(d, &["run", "-i", "What is 1 + 2 + ... + 100?", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "The sum is 5050.");
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2);
    let first = calls[0].body.to_string();
    assert!(
        first.contains("flujo_builtins_code_interpreter") && first.contains("\"code\""),
        "offered with its schema: {first}"
    );
    let second = calls[1].body.to_string();
    if ready {
        assert!(second.contains("5050"), "the tool's output goes back to the model: {second}");
    } else {
        assert!(second.contains("required but unavailable"), "the refusal goes back to the model: {second}");
    }
}
