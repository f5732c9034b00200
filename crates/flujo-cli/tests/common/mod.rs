//! Helpers shared by the binary's integration tests: run the real `flujo` in a folder with a clean
//! environment, read its exit code and output, lay out a project.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The keys of the SPEC §13 result object, present in every `--json` answer of run and resume.
pub const KEYS: &[&str] = &[
    "run_id",
    "pipeline",
    "status",
    "output",
    "error",
    "pending",
    "step_history",
    "total_cost_usd",
    "total_tokens",
    "context",
];

/// `flujo ARGS` in `dir`, with none of the caller's `FLUJO_*` settings and an empty stdin.
pub fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flujo"));
    c.args(args)
        .current_dir(dir)
        .env_remove("FLUJO_STATE_URI")
        .env_remove("FLUJO_CONFIG")
        .env_remove("FLUJO_CONFIG_PATH")
        .env_remove("FLUJO_PROJECT_ROOT")
        .env_remove("FLUJO_RULES_PROFILE")
        .env_remove("FLUJO_MAX_INPUT_BYTES")
        .env_remove("FLUJO_STRICT_TEMPLATES")
        .env_remove("FLUJO_LOG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null());
    c
}

/// Runs `flujo ARGS` in `dir` to completion.
pub fn flujo(dir: &Path, args: &[&str]) -> Output {
    cmd(dir, args).output().expect("flujo runs")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout as exactly one JSON value.
pub fn json_value(o: &Output) -> Value {
    let text = stdout(o);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {text:?}\nstderr: {}", stderr(o)))
}

/// Stdout as exactly one JSON object.
pub fn json_out(o: &Output) -> Value {
    let v = json_value(o);
    assert!(v.is_object(), "stdout is not a JSON object: {v}");
    v
}

/// A temporary folder holding `files` (`(relative path, text)`).
pub fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }
    dir
}

/// The Postgres test server's URL with a schema of the calling test's own (`cli_TAG_PID`), or `None` (and a
/// note in the output) when `FLUJO_TEST_POSTGRES_URL` is not set (the test command always sets it).
pub fn postgres(tag: &str) -> Option<String> {
    match std::env::var("FLUJO_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let sep = if url.contains('?') { '&' } else { '?' };
            Some(format!("{url}{sep}schema=cli_{tag}_{}", std::process::id()))
        }
        _ => {
            eprintln!("FLUJO_TEST_POSTGRES_URL is not set: skipping (scripts/test.sh starts a server and sets it)");
            None
        }
    }
}

/// The `(idempotency key, nonce)` lines a side-effecting test skill appended to `DIR/side.log`.
pub fn side_log(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("side.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, n)| (k.to_owned(), n.to_owned())))
        .collect()
}

/// A project whose `flujo.toml` points the `openai` provider at a fake provider server of its own (real HTTP
/// on 127.0.0.1, scripted replies, recorded requests), with `files` and `toml` (more of `flujo.toml`).
pub struct FakeProject {
    /// The runtime the fake server runs on (kept alive with the project).
    pub rt: tokio::runtime::Runtime,
    pub fake: flujo_llm::testing::FakeProvider,
    pub dir: tempfile::TempDir,
}

pub fn fake_project(files: &[(&str, &str)], toml: &str) -> FakeProject {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fake = rt.block_on(flujo_llm::testing::FakeProvider::start()).expect("fake provider");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    std::fs::write(
        dir.path().join("flujo.toml"),
        format!("{toml}\n[providers.openai]\nbase_url = \"{}\"\napi_key = \"sk-test-key\"\n", fake.openai_base_url()),
    )
    .expect("write flujo.toml");
    FakeProject { rt, fake, dir }
}

/// A `flujo serve` process (killed and reaped when dropped) and its base URL.
#[allow(dead_code)]
pub struct Serving {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flujo serve` on a free loopback port over `state`, serving the blueprints of `dir`; returns once it
/// printed its address.
#[allow(dead_code)]
pub fn serve(dir: &Path, state: &str) -> Serving {
    let mut c = cmd(dir, &["serve", "--addr", "127.0.0.1:0", "--state", state, "--pipelines", "."]);
    let mut child = c
        .env_remove("FLUJO_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flujo serve starts");
    let err = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("flujo serve: http://") {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("flujo serve prints its address");
    Serving { child, base: format!("http://{addr}") }
}
