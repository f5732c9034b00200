//! `command`: a governance policy written in any language, as a long-lived program.
//!
//! The program is started on the first call and kept running; for each call Flujo writes one line of JSON to
//! its stdin — `{"run_id", "path", "step", "target", "kind": "model"|"skill"|"tool", "input", "context"}`
//! (`context`, the run's context fields, only with `send_context`) — and reads one line from its stdout:
//! `{"decision": "allow"}`, `{"decision": "deny", "reason": "…"}` or
//! `{"decision": "modify", "input": …, "note": "…"}`. Decisions are asked one at a time. It fails closed: a
//! program that cannot start, exits, answers anything else, or takes longer than the timeout denies the call
//! (and is restarted for the next one). Its stderr is Flujo's.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::{GovernanceDecision, GovernancePolicy, GovernanceRequest};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

/// The default time a decision may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The `command` policy.
pub struct CommandPolicy {
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    send_context: bool,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for CommandPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandPolicy").field("argv", &self.argv).field("timeout", &self.timeout).finish()
    }
}

impl CommandPolicy {
    /// A policy that runs `argv` (in `cwd` when given) and waits at most `timeout` for each decision.
    pub fn new(argv: Vec<String>, cwd: Option<PathBuf>, timeout: Duration, send_context: bool) -> Result<Self, String> {
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            return Err("governance command: the program is empty".to_owned());
        }
        Ok(CommandPolicy { argv, cwd, timeout, send_context, running: Mutex::new(None) })
    }

    fn start(&self) -> Result<Running, String> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", self.argv[0]))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the policy program has no stdin or stdout".to_owned());
        };
        Ok(Running { child, stdin, stdout: BufReader::new(stdout) })
    }

    fn request(&self, req: &GovernanceRequest<'_>) -> String {
        let mut v = json!({"run_id": req.run_id, "path": req.path, "step": req.step, "target": req.target,
                           "kind": req.kind.as_str(), "input": req.input});
        if let (true, Some(ctx), Some(obj)) = (self.send_context, req.context, v.as_object_mut()) {
            let fields: Map<String, Value> = ctx.fields().map(|(k, v)| (k.clone(), (**v).clone())).collect();
            obj.insert("context".to_owned(), Value::Object(fields));
        }
        let mut line = v.to_string();
        line.push('\n');
        line
    }

    async fn ask(&self, running: &mut Running, line: &str) -> Result<String, String> {
        running.stdin.write_all(line.as_bytes()).await.map_err(|e| format!("cannot write to it: {e}"))?;
        running.stdin.flush().await.map_err(|e| format!("cannot write to it: {e}"))?;
        let mut reply = String::new();
        match running.stdout.read_line(&mut reply).await {
            Ok(0) => {
                let status = running.child.try_wait().ok().flatten().map(|s| s.to_string());
                Err(format!("it exited ({})", status.unwrap_or_else(|| "closed its stdout".to_owned())))
            }
            Ok(_) => Ok(reply),
            Err(e) => Err(format!("cannot read from it: {e}")),
        }
    }
}

/// A reply line as a decision.
fn decision(reply: &str) -> Result<GovernanceDecision, String> {
    let v: Value = serde_json::from_str(reply.trim()).map_err(|e| format!("its reply is not JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match v.get("decision").and_then(Value::as_str) {
        Some("allow") => Ok(GovernanceDecision::Allow),
        Some("deny") => {
            Ok(GovernanceDecision::Deny(text("reason").unwrap_or_else(|| "denied by the policy program".to_owned())))
        }
        Some("modify") => match v.get("input") {
            Some(input) => Ok(GovernanceDecision::Modify {
                input: input.clone(),
                note: text("note").unwrap_or_else(|| "modified by the policy program".to_owned()),
            }),
            None => Err("a `modify` reply needs `input`".to_owned()),
        },
        other => Err(format!("its reply's `decision` is {other:?}, not allow, deny or modify")),
    }
}

#[async_trait]
impl GovernancePolicy for CommandPolicy {
    fn name(&self) -> &str {
        "command"
    }

    async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
        let line = self.request(req);
        let mut slot = self.running.lock().await;
        if slot.is_none() {
            match self.start() {
                Ok(r) => *slot = Some(r),
                Err(e) => return GovernanceDecision::Deny(format!("the policy program failed: {e}")),
            }
        }
        let Some(running) = slot.as_mut() else {
            return GovernanceDecision::Deny("the policy program is not running".to_owned());
        };
        let outcome = match tokio::time::timeout(self.timeout, self.ask(running, &line)).await {
            Ok(Ok(reply)) => decision(&reply),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("it did not answer within {:?}", self.timeout)),
        };
        match outcome {
            Ok(d) => d,
            Err(e) => {
                // Fail closed, and start afresh next time (the program may be stuck or out of step).
                if let Some(mut r) = slot.take() {
                    let _ = r.child.start_kill();
                }
                GovernanceDecision::Deny(format!("the policy program failed: {e}"))
            }
        }
    }
}
