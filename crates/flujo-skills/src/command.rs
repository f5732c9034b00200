//! `command` skills: a subprocess declared in `skills.yaml` that reads the step input as JSON on stdin and
//! writes its output as JSON on stdout (SPEC §7). It runs in the blueprint's folder with a timeout; a non-zero
//! exit, invalid JSON or a timeout is a step failure carrying the tail of stderr. The child sees the skill's
//! declared `env`, `FLUJO_IDEMPOTENCY_KEY` (stable across re-runs of the same step execution), `FLUJO_RUN_ID`,
//! `FLUJO_STEP_PATH`, `FLUJO_ATTEMPT` and `FLUJO_SKILL_PARAMS` (the step's params as JSON).
//!
//! Each call runs in its own process group. The whole group (the command and everything it started) is killed
//! when the command exits (so a background process holding stdout open cannot hang the read), on timeout, when
//! its output exceeds the limit, and when the call is cancelled (its future dropped). stdout and stderr are read
//! as they are written, at most `max_output_bytes` each ([`DEFAULT_MAX_OUTPUT_BYTES`]); the input written to
//! stdin is at most `max_input_bytes` ([`DEFAULT_MAX_INPUT_BYTES`]). Going over a limit is a step failure
//! naming the limit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::registry::{BuiltinRegistry, SkillFactory};

/// Default timeout of a command skill.
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
/// Default bound on what a command skill may print on stdout (and, separately, on stderr).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 << 20;
/// Default bound on the JSON input written to a command skill's stdin.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 16 << 20;
/// The longest wait a timeout may ask for (a year); longer ones are capped.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
const STDERR_TAIL: usize = 2000;

/// A command skill as declared in `skills.yaml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandSpec {
    /// The skill id that steps use (`uses:`); the skill is registered under it.
    pub id: String,
    /// Program and arguments (no shell).
    pub command: Vec<String>,
    /// Working directory: the blueprint's folder.
    pub cwd: PathBuf,
    /// Longest the command may run, in seconds; `None` means 60 seconds. When set, it must be greater than 0
    /// and at most [`flujo_core::limits::MAX_DURATION_S`] (7 days). When it runs out, the whole process group
    /// is killed and the call fails (retryable).
    pub timeout_s: Option<f64>,
    /// JSON Schema the step input must match. It is checked before the process starts; a mismatch fails the
    /// call without retries. `None`: any input.
    pub input_schema: Option<Value>,
    /// JSON Schema the JSON printed on stdout must match; a mismatch fails the call (retryable). `None`: any
    /// output.
    pub output_schema: Option<Value>,
    /// Whether the command changes something outside the run (see [`SideEffects`](crate::SideEffects)); copied
    /// into the skill's [`SkillInfo`].
    pub side_effects: bool,
    /// One-line description of the skill, copied into its [`SkillInfo`].
    pub description: String,
    /// Extra environment variables (`env:` in `skills.yaml`).
    pub env: BTreeMap<String, String>,
    /// Bound on stdout and on stderr, in bytes (default [`DEFAULT_MAX_OUTPUT_BYTES`]).
    pub max_output_bytes: Option<u64>,
    /// Bound on the input written to stdin, in bytes (default [`DEFAULT_MAX_INPUT_BYTES`]).
    pub max_input_bytes: Option<u64>,
}

/// A resolved command skill.
pub struct CommandSkill {
    spec: Arc<CommandSpec>,
    params: Value,
    input_validator: Option<Arc<jsonschema::Validator>>,
    output_validator: Option<Arc<jsonschema::Validator>>,
}

fn compile(schema: &Option<Value>, id: &str, what: &str) -> Result<Option<Arc<jsonschema::Validator>>, ResolveError> {
    match schema {
        None => Ok(None),
        Some(s) => jsonschema::validator_for(s)
            .map(|v| Some(Arc::new(v)))
            .map_err(|e| ResolveError::BadParams { id: id.to_owned(), message: format!("invalid {what}: {e}") }),
    }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if text.len() <= STDERR_TAIL {
        return text.to_owned();
    }
    let mut start = text.len() - STDERR_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// The process group of a running command: SIGKILLed as a whole by [`Group::kill`] and when dropped.
struct Group {
    #[cfg(unix)]
    pgid: Option<rustix::process::Pid>,
}

impl Group {
    fn of(child: &tokio::process::Child) -> Self {
        #[cfg(unix)]
        {
            let pgid = child.id().and_then(|id| i32::try_from(id).ok()).and_then(rustix::process::Pid::from_raw);
            Group { pgid }
        }
        #[cfg(not(unix))]
        {
            let _ = child;
            Group {}
        }
    }

    fn kill(&self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            // ESRCH (the group is gone) is the usual, harmless answer once everything has exited.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a bounded read of a pipe got.
enum Read {
    /// Everything, up to end of file (or the part kept, for stderr).
    All(Vec<u8>),
    /// More than the limit: the group was killed.
    TooLarge,
}

/// Reads `pipe` to its end, at most `max` bytes; past that, kills `group` and says so. With `tail`, only the
/// last [`STDERR_TAIL`] bytes are kept (the limit still applies to all that was printed).
async fn read_bounded<R: AsyncRead + Unpin>(pipe: Option<R>, max: u64, tail: bool, group: &Group) -> Read {
    let Some(mut pipe) = pipe else { return Read::All(Vec::new()) };
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return Read::All(kept),
            Ok(n) => n,
        };
        total = total.saturating_add(n as u64);
        if total > max {
            group.kill();
            return Read::TooLarge;
        }
        kept.extend_from_slice(&chunk[..n]);
        if tail && kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
}

fn schema_errors(v: &jsonschema::Validator, value: &Value) -> Option<String> {
    let errs: Vec<String> = v.iter_errors(value).map(|e| format!("{e} (at '{}')", e.instance_path)).collect();
    (!errs.is_empty()).then(|| errs.join("; "))
}

impl CommandSkill {
    /// Resolves `spec` for one step, whose `params` reach the process as JSON in `FLUJO_SKILL_PARAMS`.
    /// Compiles the input and output schemas.
    ///
    /// Fails with [`ResolveError::BadParams`] when `command` is empty, `timeout_s` is not a valid duration, or a
    /// schema is not a valid JSON Schema.
    pub fn new(spec: Arc<CommandSpec>, params: Value) -> Result<Self, ResolveError> {
        if spec.command.is_empty() {
            return Err(ResolveError::BadParams { id: spec.id.clone(), message: "`command` is empty".into() });
        }
        if let Some(t) = spec.timeout_s {
            flujo_core::limits::check_duration_secs(t)
                .map_err(|e| ResolveError::BadParams { id: spec.id.clone(), message: format!("`timeout_s` {e}") })?;
        }
        let input_validator = compile(&spec.input_schema, &spec.id, "input_schema")?;
        let output_validator = compile(&spec.output_schema, &spec.id, "output_schema")?;
        Ok(CommandSkill { spec, params, input_validator, output_validator })
    }

    /// Registers `spec` in `registry` under its id.
    pub fn register(spec: CommandSpec, registry: &mut BuiltinRegistry) {
        let spec = Arc::new(spec);
        let info = {
            let mut info = SkillInfo::default();
            info.id = spec.id.clone();
            info.description = spec.description.clone();
            info.input_schema = spec.input_schema.clone();
            info.output_schema = spec.output_schema.clone();
            info.side_effects = spec.side_effects;
            info
        };
        let s = spec.clone();
        let factory: SkillFactory = Arc::new(move |params: &Value| {
            Ok(Arc::new(CommandSkill::new(s.clone(), params.clone())?) as Arc<dyn Skill>)
        });
        registry.register(spec.id.clone(), info, factory);
    }
}

#[async_trait]
impl Skill for CommandSkill {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let id = &self.spec.id;
        if let Some(v) = &self.input_validator {
            if let Some(errs) = schema_errors(v, &call.input) {
                return Err(SkillError::fatal(format!(
                    "command skill '{id}': input does not match input_schema: {errs}"
                )));
            }
        }
        let stdin_bytes = serde_json::to_vec(&call.input)
            .map_err(|e| SkillError::fatal(format!("command skill '{id}': cannot encode input: {e}")))?;
        let max_input = self.spec.max_input_bytes.unwrap_or(DEFAULT_MAX_INPUT_BYTES);
        if stdin_bytes.len() as u64 > max_input {
            return Err(SkillError::fatal(format!(
                "command skill '{id}': its input is {} bytes of JSON, more than max_input_bytes ({max_input})",
                stdin_bytes.len()
            )));
        }
        let max_output = self.spec.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);
        let mut cmd = tokio::process::Command::new(&self.spec.command[0]);
        cmd.args(&self.spec.command[1..])
            .current_dir(&self.spec.cwd)
            .envs(&self.spec.env)
            .env("FLUJO_IDEMPOTENCY_KEY", &*call.idempotency_key)
            .env("FLUJO_RUN_ID", &*call.run_id)
            .env("FLUJO_STEP_PATH", &*call.path)
            .env("FLUJO_ATTEMPT", call.attempt.to_string())
            .env("FLUJO_SKILL_PARAMS", self.params.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // its own process group, so that everything it starts can be killed with it
        #[cfg(unix)]
        cmd.process_group(0);
        // A command never outlives the flujo process that started it, even one killed with SIGKILL (which
        // runs no cleanup): a resumed run would otherwise race the orphan of the killed run's step.
        #[cfg(target_os = "linux")]
        {
            let parent = rustix::process::getpid();
            // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe calls
            // are allowed; it makes two raw system calls (prctl, getppid) through rustix, allocates nothing
            // and takes no lock. (`unsafe_code` is denied everywhere but here and in `flujo-sandbox`'s child setup.)
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
                    // The parent may have died between fork and prctl: then nobody would send the signal.
                    if rustix::process::getppid() != Some(parent) {
                        return Err(std::io::Error::other("the flujo process that started this command is gone"));
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            SkillError::fatal(format!(
                "command skill '{id}': cannot start {:?} in {}: {e}",
                self.spec.command[0],
                self.spec.cwd.display()
            ))
        })?;
        // Dropped (killing the group) whenever this call ends, also when its future is dropped.
        let group = Group::of(&child);
        let stdin = child.stdin.take();
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A child that does not read its stdin closes the pipe; that is not an error of ours.
                let _ = stdin.write_all(&stdin_bytes).await;
                let _ = stdin.shutdown().await;
            }
        };
        let read_out = read_bounded(child.stdout.take(), max_output, false, &group);
        let read_err = read_bounded(child.stderr.take(), max_output, true, &group);
        let exit = async {
            let status = child.wait().await;
            // what it left running (and holding stdout or stderr open) goes with it
            group.kill();
            status
        };
        let timeout = self.spec.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
        let limit = Duration::try_from_secs_f64(timeout.max(0.001)).unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
        let work = async { tokio::join!(write, read_out, read_err, exit) };
        let (stdout, stderr, status) = match tokio::time::timeout(limit, work).await {
            Ok(((), stdout, stderr, status)) => (stdout, stderr, status),
            Err(_) => {
                group.kill();
                return Err(SkillError::new(format!("command skill '{id}' timed out after {timeout}s")));
            }
        };
        let too_large = |stream: &str| {
            SkillError::new(format!(
                "command skill '{id}' printed more than {max_output} bytes on {stream} (max_output_bytes); \
                 it was stopped"
            ))
        };
        let stdout = match stdout {
            Read::All(bytes) => bytes,
            Read::TooLarge => return Err(too_large("stdout")),
        };
        let stderr = match stderr {
            Read::All(bytes) => bytes,
            Read::TooLarge => return Err(too_large("stderr")),
        };
        let status = status
            .map_err(|e| SkillError::new(format!("command skill '{id}': waiting for the process failed: {e}")))?;
        if !status.success() {
            let code = status.code().map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
            return Err(SkillError::new(format!("command skill '{id}' exited with {code}; stderr: {}", tail(&stderr))));
        }
        let text = String::from_utf8_lossy(&stdout);
        let output: Value = serde_json::from_str(text.trim()).map_err(|e| {
            SkillError::new(format!(
                "command skill '{id}' printed invalid JSON on stdout ({e}): {:?}; stderr: {}",
                text.chars().take(200).collect::<String>(),
                tail(&stderr)
            ))
        })?;
        if let Some(v) = &self.output_validator {
            if let Some(errs) = schema_errors(v, &output) {
                return Err(SkillError::new(format!(
                    "command skill '{id}': output does not match output_schema: {errs}"
                )));
            }
        }
        Ok(SkillOutput::value(output))
    }

    fn info(&self) -> SkillInfo {
        {
            let mut info = SkillInfo::default();
            info.id = self.spec.id.clone();
            info.description = self.spec.description.clone();
            info.input_schema = self.spec.input_schema.clone();
            info.output_schema = self.spec.output_schema.clone();
            info.side_effects = self.spec.side_effects;
            info
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::{Context, SkillRegistry};
    use serde_json::json;

    fn call(input: Value) -> SkillCall {
        {
            let mut call = SkillCall::new(input);
            call.run_id = Arc::from("r1");
            call.path = Arc::from("0");
            call.step = Arc::from("s");
            call.attempt = 1;
            call.idempotency_key = Arc::from("r1:0");
            call.context = Context::new("r1", Value::Null, Default::default()).snapshot();
            call.deltas = None;
            call.this = None;
            call
        }
    }

    fn spec(script: &str) -> CommandSpec {
        CommandSpec {
            id: "t.cmd".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            timeout_s: Some(5.0),
            ..Default::default()
        }
    }

    async fn run(spec: CommandSpec, input: Value) -> Result<SkillOutput, SkillError> {
        let mut r = BuiltinRegistry::empty();
        CommandSkill::register(spec, &mut r);
        r.resolve("t.cmd", &json!({"p": 1})).unwrap().call(call(input)).await
    }

    #[tokio::test]
    async fn reads_stdin_writes_stdout_and_sees_env() {
        let out = run(
            spec(r#"read x; printf '{"in": %s, "key": "%s", "params": %s}' "$x" "$FLUJO_IDEMPOTENCY_KEY" "$FLUJO_SKILL_PARAMS""#),
            json!({"a": 1}),
        )
        .await
        .unwrap();
        assert_eq!(out.output, json!({"in": {"a": 1}, "key": "r1:0", "params": {"p": 1}}));
    }

    #[tokio::test]
    async fn nonzero_exit_reports_stderr_tail() {
        let err = run(spec("echo 'kaboom details' >&2; exit 3"), json!(1)).await.unwrap_err();
        assert!(err.message.contains("exited with 3") && err.message.contains("kaboom details"), "{}", err.message);
    }

    #[tokio::test]
    async fn garbage_stdout_is_a_clear_failure() {
        let err = run(spec("echo 'not json'"), json!(1)).await.unwrap_err();
        assert!(err.message.contains("invalid JSON"), "{}", err.message);
    }

    #[tokio::test]
    async fn timeout_kills_the_child() {
        let mut s = spec("sleep 5; echo 1");
        s.timeout_s = Some(0.2);
        let t = std::time::Instant::now();
        let err = run(s, json!(1)).await.unwrap_err();
        assert!(err.message.contains("timed out"), "{}", err.message);
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test]
    async fn missing_program_and_schema_violations() {
        let mut s = spec("");
        s.command = vec!["/definitely/not/here".into()];
        let err = run(s, json!(1)).await.unwrap_err();
        assert!(err.message.contains("cannot start"), "{}", err.message);
        assert!(!err.retryable);
        let mut s = spec("cat");
        s.output_schema = Some(json!({"type": "string"}));
        let err = run(s, json!(5)).await.unwrap_err();
        assert!(err.message.contains("output_schema"), "{}", err.message);
        let mut s = spec("cat");
        s.input_schema = Some(json!({"type": "string"}));
        let err = run(s, json!(5)).await.unwrap_err();
        assert!(err.message.contains("input_schema"), "{}", err.message);
    }

    /// Whether process `pid` is gone (or a zombie waiting for its reaper), within `secs` seconds.
    fn gone_within(pid: &str, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let alive = state.as_deref().is_some_and(|s| {
                s.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).is_some_and(|st| st != "Z")
            });
            if !alive {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gc.pid");
        (dir, file)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn timeout_kills_grandchildren_too() {
        let (_dir, file) = pid_file();
        let mut s = spec(&format!("sleep 1002 & echo $! > {}; wait; echo 1", file.display()));
        s.timeout_s = Some(0.5);
        let err = run(s, json!(1)).await.unwrap_err();
        assert!(err.message.contains("timed out"), "{}", err.message);
        let pid = std::fs::read_to_string(&file).unwrap();
        assert!(gone_within(pid.trim(), 5), "grandchild {pid} survived the timeout");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_background_process_holding_stdout_does_not_hang_the_call() {
        let (_dir, file) = pid_file();
        let t = std::time::Instant::now();
        let out = run(spec(&format!("sleep 1003 & echo $! > {}; echo 42", file.display())), json!(1)).await.unwrap();
        assert_eq!(out.output, json!(42));
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        let pid = std::fs::read_to_string(&file).unwrap();
        assert!(gone_within(pid.trim(), 5), "background process {pid} survived the skill");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn cancelling_the_call_kills_the_group() {
        let (_dir, file) = pid_file();
        let s = spec(&format!("sleep 1004 & echo $! > {}; wait", file.display()));
        let mut r = BuiltinRegistry::empty();
        CommandSkill::register(s, &mut r);
        let skill = r.resolve("t.cmd", &json!({})).unwrap();
        let call = skill.call(call(json!(1)));
        let _ = tokio::time::timeout(Duration::from_millis(500), call).await;
        let pid = std::fs::read_to_string(&file).unwrap();
        assert!(gone_within(pid.trim(), 5), "grandchild {pid} survived the cancelled call");
    }

    #[tokio::test]
    async fn output_is_bounded_while_it_is_read() {
        let mut s = spec("head -c 50000000 /dev/zero");
        s.max_output_bytes = Some(1 << 20);
        let t = std::time::Instant::now();
        let err = run(s, json!(1)).await.unwrap_err();
        assert!(
            err.message.contains("more than 1048576 bytes on stdout (max_output_bytes)")
                && err.message.contains("t.cmd"),
            "{}",
            err.message
        );
        assert!(t.elapsed() < Duration::from_secs(4));
        // an endless writer stops at the limit, not at the timeout
        let mut s = spec("yes");
        s.max_output_bytes = Some(1 << 20);
        s.timeout_s = Some(30.0);
        let t = std::time::Instant::now();
        let err = run(s, json!(1)).await.unwrap_err();
        assert!(err.message.contains("max_output_bytes"), "{}", err.message);
        assert!(t.elapsed() < Duration::from_secs(10));
        let mut s = spec("yes >&2");
        s.max_output_bytes = Some(1 << 20);
        let err = run(s, json!(1)).await.unwrap_err();
        assert!(err.message.contains("on stderr (max_output_bytes)"), "{}", err.message);
        // the default applies without a setting
        let err = run(spec("head -c 17000000 /dev/zero"), json!(1)).await.unwrap_err();
        assert!(err.message.contains(&DEFAULT_MAX_OUTPUT_BYTES.to_string()), "{}", err.message);
        // within the limit, large output is fine
        let mut s = spec("printf '\"'; head -c 900000 /dev/zero | tr '\\0' x; printf '\"'");
        s.max_output_bytes = Some(1 << 20);
        let out = run(s, json!(1)).await.unwrap();
        assert_eq!(out.output.as_str().map(str::len), Some(900_000));
    }

    #[tokio::test]
    async fn input_and_env() {
        let mut s = spec("cat");
        s.max_input_bytes = Some(100);
        let err = run(s, json!("x".repeat(200))).await.unwrap_err();
        assert!(err.message.contains("max_input_bytes (100)"), "{}", err.message);
        assert!(!err.retryable);
        let mut s = spec(r#"printf '"%s"' "$GREETING""#);
        s.env.insert("GREETING".into(), "hola".into());
        assert_eq!(run(s, json!(1)).await.unwrap().output, json!("hola"));
    }
}
