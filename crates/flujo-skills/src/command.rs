//! `command` skills: a subprocess declared in `skills.yaml` that reads the step input as JSON on stdin and
//! writes its output as JSON on stdout (SPEC §7). It runs in the blueprint's folder with a timeout; a non-zero
//! exit, invalid JSON or a timeout is a step failure carrying the tail of stderr. The child sees
//! `FLUJO_IDEMPOTENCY_KEY` (stable across re-runs of the same step execution), `FLUJO_RUN_ID`,
//! `FLUJO_STEP_PATH`, `FLUJO_ATTEMPT` and `FLUJO_SKILL_PARAMS` (the step's params as JSON).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flujo_core::{ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::registry::{BuiltinRegistry, SkillFactory};

/// Default timeout of a command skill.
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
const STDERR_TAIL: usize = 2000;

/// A command skill as declared in `skills.yaml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandSpec {
    pub id: String,
    /// Program and arguments (no shell).
    pub command: Vec<String>,
    /// Working directory: the blueprint's folder.
    pub cwd: PathBuf,
    pub timeout_s: Option<f64>,
    pub input_schema: Option<Value>,
    pub output_schema: Option<Value>,
    pub side_effects: bool,
    pub description: String,
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

fn schema_errors(v: &jsonschema::Validator, value: &Value) -> Option<String> {
    let errs: Vec<String> = v.iter_errors(value).map(|e| format!("{e} (at '{}')", e.instance_path)).collect();
    (!errs.is_empty()).then(|| errs.join("; "))
}

impl CommandSkill {
    pub fn new(spec: Arc<CommandSpec>, params: Value) -> Result<Self, ResolveError> {
        if spec.command.is_empty() {
            return Err(ResolveError::BadParams { id: spec.id.clone(), message: "`command` is empty".into() });
        }
        let input_validator = compile(&spec.input_schema, &spec.id, "input_schema")?;
        let output_validator = compile(&spec.output_schema, &spec.id, "output_schema")?;
        Ok(CommandSkill { spec, params, input_validator, output_validator })
    }

    /// Registers `spec` in `registry` under its id.
    pub fn register(spec: CommandSpec, registry: &mut BuiltinRegistry) {
        let spec = Arc::new(spec);
        let info = SkillInfo {
            id: spec.id.clone(),
            description: spec.description.clone(),
            input_schema: spec.input_schema.clone(),
            output_schema: spec.output_schema.clone(),
            side_effects: spec.side_effects,
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
        let mut cmd = tokio::process::Command::new(&self.spec.command[0]);
        cmd.args(&self.spec.command[1..])
            .current_dir(&self.spec.cwd)
            .env("FLUJO_IDEMPOTENCY_KEY", &*call.idempotency_key)
            .env("FLUJO_RUN_ID", &*call.run_id)
            .env("FLUJO_STEP_PATH", &*call.path)
            .env("FLUJO_ATTEMPT", call.attempt.to_string())
            .env("FLUJO_SKILL_PARAMS", self.params.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            SkillError::fatal(format!(
                "command skill '{id}': cannot start {:?} in {}: {e}",
                self.spec.command[0],
                self.spec.cwd.display()
            ))
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that does not read its stdin closes the pipe; that is not an error of ours.
            let _ = stdin.write_all(&stdin_bytes).await;
            let _ = stdin.shutdown().await;
        }
        let timeout = self.spec.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
        let out =
            match tokio::time::timeout(Duration::from_secs_f64(timeout.max(0.001)), child.wait_with_output()).await {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => {
                    return Err(SkillError::new(format!("command skill '{id}': waiting for the process failed: {e}")))
                }
                Err(_) => {
                    // The child is killed when its handle (moved into the timed-out future) is dropped.
                    return Err(SkillError::new(format!("command skill '{id}' timed out after {timeout}s")));
                }
            };
        if !out.status.success() {
            let code = out.status.code().map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
            return Err(SkillError::new(format!(
                "command skill '{id}' exited with {code}; stderr: {}",
                tail(&out.stderr)
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let output: Value = serde_json::from_str(text.trim()).map_err(|e| {
            SkillError::new(format!(
                "command skill '{id}' printed invalid JSON on stdout ({e}): {:?}; stderr: {}",
                text.chars().take(200).collect::<String>(),
                tail(&out.stderr)
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
        SkillInfo {
            id: self.spec.id.clone(),
            description: self.spec.description.clone(),
            input_schema: self.spec.input_schema.clone(),
            output_schema: self.spec.output_schema.clone(),
            side_effects: self.spec.side_effects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::{Context, SkillRegistry};
    use serde_json::json;

    fn call(input: Value) -> SkillCall {
        SkillCall {
            input,
            run_id: Arc::from("r1"),
            path: Arc::from("0"),
            step: Arc::from("s"),
            attempt: 1,
            idempotency_key: Arc::from("r1:0"),
            context: Context::new("r1", Value::Null, Default::default()).snapshot(),
            deltas: None,
            this: None,
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
}
