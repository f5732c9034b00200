//! `flujo.builtins.code_interpreter` (SPEC §7, §11): runs code in the configured [`Sandbox`] and returns what
//! it printed, its exit code and the files it made. The sandbox is given with [`Skills::with_sandbox`] (or
//! [`WithSandbox`] around any registry); without one the skill is still registered, so blueprints that use it
//! validate anywhere, and a call fails (not retried) saying the sandbox is off.
//!
//! | params | input | output |
//! |--------|-------|--------|
//! | `language?` (`python`), `timeout_s?`, `cpu_s?`, `memory_bytes?`, `file_bytes?`, `processes?`, `network?`, `output_bytes?`, `artifact_bytes?`, `fail_on_error?` (false) | the code text, or `{code, language?, files?}` (as an agent's tool); `files` is `{path: text}` or `[{path, content}]` / `[{path, content_base64}]` | `{stdout, stderr, exit_code, timed_out, stdout_truncated, stderr_truncated, artifacts: [{path, size, blob}], artifacts_omitted}` |
//!
//! Limits in params may only tighten the deployment's ([`SandboxBackend::limits`]); asking for more (or for
//! network access the deployment does not allow) is a configuration error when the runner is built. The
//! artifacts' bytes are stored as content-addressed blobs (blake3, `blob` is the hex hash) in the run's
//! state store when the backend has one ([`SandboxBackend::with_blobs`]), before the step's record commits;
//! without one, artifacts of at most [`INLINE_ARTIFACT_BYTES`] come inline as `content_base64`. Like every
//! skill call, the output is journaled: a resumed run reads it instead of running the code again.

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{
    BlobStore, ExecRequest, ExecResult, Limits, ResolveError, Sandbox, SandboxError, SandboxFile, Skill, SkillCall,
    SkillError, SkillInfo, SkillOutput,
};
use serde_json::{json, Map, Value};

use crate::builtins::BUILTIN_PREFIX;
use crate::registry::{SkillFactory, Skills};

const NAME: &str = "code_interpreter";

/// Largest artifact returned inline (base64) when there is no blob store.
pub const INLINE_ARTIFACT_BYTES: usize = 64 * 1024;

/// Where code runs, the deployment's limits, and where artifacts are kept.
#[derive(Clone)]
#[non_exhaustive]
pub struct SandboxBackend {
    /// The sandbox.
    pub sandbox: Arc<dyn Sandbox>,
    /// The default and largest limits of an execution (params may only lower them).
    pub limits: Limits,
    /// Where artifacts' bytes are stored (the run's state store), if anywhere.
    pub blobs: Option<Arc<dyn BlobStore>>,
}

impl SandboxBackend {
    /// `sandbox` with the default [`Limits`] and no blob store.
    pub fn new(sandbox: Arc<dyn Sandbox>) -> Self {
        SandboxBackend { sandbox, limits: Limits::default(), blobs: None }
    }

    /// The backend with these limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The backend storing artifacts in `blobs`.
    pub fn with_blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }
}

impl std::fmt::Debug for SandboxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxBackend")
            .field("sandbox", &self.sandbox.describe())
            .field("limits", &self.limits)
            .field("blobs", &self.blobs.is_some())
            .finish()
    }
}

fn info() -> SkillInfo {
    SkillInfo::new(
        format!("{BUILTIN_PREFIX}{NAME}"),
        "Runs a program (Python by default; also bash, sh, node where the sandbox has them) in a sandbox with no \
         network and returns {stdout, stderr, exit_code, timed_out, artifacts}. Files written in the current \
         folder come back as artifacts.",
    )
    .with_input_schema(json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "The program text."},
            "language": {"type": "string", "description": "python (default), bash, sh, node, …"},
            "files": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Input files: relative path -> text content, written before the code runs."
            }
        },
        "required": ["code"]
    }))
    .with_output_schema(json!({
        "type": "object",
        "properties": {
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "exit_code": {"type": "integer"},
            "timed_out": {"type": "boolean"},
            "stdout_truncated": {"type": "boolean"},
            "stderr_truncated": {"type": "boolean"},
            "artifacts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "size": {"type": "integer"},
                        "blob": {"type": "string"},
                        "content_base64": {"type": "string"}
                    },
                    "required": ["path", "size", "blob"]
                }
            },
            "artifacts_omitted": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["stdout", "stderr", "exit_code", "timed_out", "artifacts"]
    }))
    .with_side_effects(true)
}

/// Registers the skill without a sandbox: it resolves, and a call says the sandbox is off.
pub(crate) fn register_code_interpreter_off(registry: &mut Skills) {
    let factory: SkillFactory = Arc::new(|params: &Value| {
        let backend = Arc::new(SandboxBackend::new(Arc::new(flujo_core::SandboxOff)));
        build(backend, params)
    });
    let info = info();
    registry.register(info.id.clone(), info, factory);
}

impl Skills {
    /// Gives `flujo.builtins.code_interpreter` its sandbox (without this, a call fails with "the sandbox is
    /// off").
    pub fn with_sandbox(&mut self, backend: SandboxBackend) -> &mut Self {
        let backend = Arc::new(backend);
        let factory: SkillFactory = Arc::new(move |params: &Value| build(backend.clone(), params));
        let info = info();
        self.register(info.id.clone(), info, factory);
        self
    }
}

/// A [`SkillRegistry`](flujo_core::SkillRegistry) that answers `code_interpreter` with `backend` and every
/// other id from `inner` — how a runner built from any registry gets a sandbox.
pub struct WithSandbox {
    inner: Arc<dyn flujo_core::SkillRegistry>,
    backend: Arc<SandboxBackend>,
}

impl WithSandbox {
    /// `inner`, with `code_interpreter` over `backend`.
    pub fn new(inner: Arc<dyn flujo_core::SkillRegistry>, backend: SandboxBackend) -> Self {
        WithSandbox { inner, backend: Arc::new(backend) }
    }
}

impl flujo_core::SkillRegistry for WithSandbox {
    fn resolve(&self, id: &str, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        if id.strip_prefix(BUILTIN_PREFIX).unwrap_or(id) == NAME {
            build(self.backend.clone(), params)
        } else {
            self.inner.resolve(id, params)
        }
    }
    fn list(&self) -> Vec<SkillInfo> {
        self.inner.list()
    }
}

fn bad(message: impl Into<String>) -> ResolveError {
    ResolveError::BadParams { id: format!("{BUILTIN_PREFIX}{NAME}"), message: message.into() }
}

struct CodeInterpreter {
    backend: Arc<SandboxBackend>,
    language: String,
    limits: Limits,
    fail_on_error: bool,
}

const PARAMS: &[&str] = &[
    "language",
    "timeout_s",
    "cpu_s",
    "memory_bytes",
    "file_bytes",
    "processes",
    "network",
    "output_bytes",
    "artifact_bytes",
    "fail_on_error",
];

fn build(backend: Arc<SandboxBackend>, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
    let map = match params {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        other => return Err(bad(format!("params must be an object, got {other}"))),
    };
    if let Some(k) = map.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(bad(format!("unknown param '{k}' (expected one of {PARAMS:?})")));
    }
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    let language = match get("language") {
        None => "python".to_owned(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => return Err(bad(format!("`language` must be a non-empty string, got {other}"))),
    };
    let ceiling = &backend.limits;
    let mut limits = ceiling.clone();
    let secs = |k: &str, max: f64| -> Result<Option<f64>, ResolveError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(s) if s.is_finite() && s > 0.0 && s <= max => Ok(Some(s)),
                _ => Err(bad(format!(
                    "`{k}` must be a number of seconds above 0 and at most {max} (the sandbox's limit), got {v}"
                ))),
            },
        }
    };
    if let Some(s) = secs("timeout_s", ceiling.wall_s)? {
        limits = limits.with_wall_s(s);
    }
    if let Some(s) = secs("cpu_s", ceiling.cpu_s)? {
        limits.cpu_s = s;
    }
    let count = |k: &str, max: u64| -> Result<Option<u64>, ResolveError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 && n <= max => Ok(Some(n)),
                _ => Err(bad(format!("`{k}` must be an integer from 1 to {max} (the sandbox's limit), got {v}"))),
            },
        }
    };
    for (k, slot, max) in [
        ("memory_bytes", &mut limits.memory_bytes, ceiling.memory_bytes),
        ("file_bytes", &mut limits.file_bytes, ceiling.file_bytes),
        ("processes", &mut limits.processes, ceiling.processes),
        ("output_bytes", &mut limits.output_bytes, ceiling.output_bytes),
        ("artifact_bytes", &mut limits.artifact_bytes, ceiling.artifact_bytes),
    ] {
        if let Some(n) = count(k, max)? {
            *slot = n;
        }
    }
    match get("network") {
        None => {}
        Some(Value::Bool(false)) => limits.network = false,
        Some(Value::Bool(true)) if ceiling.network => limits.network = true,
        Some(Value::Bool(true)) => {
            return Err(bad("`network: true` needs the sandbox to allow network access ([sandbox] network = true)"))
        }
        Some(other) => return Err(bad(format!("`network` must be a boolean, got {other}"))),
    }
    let fail_on_error = match get("fail_on_error") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(bad(format!("`fail_on_error` must be a boolean, got {other}"))),
    };
    Ok(Arc::new(CodeInterpreter { backend, language, limits, fail_on_error }))
}

/// The input files of a call: `{path: text}`, or a list of `{path, content}` / `{path, content_base64}`.
fn files_of(v: &Value) -> Result<Vec<SandboxFile>, SkillError> {
    let bad = |m: String| SkillError::fatal(format!("{NAME}: `files`: {m}"));
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) => m
            .iter()
            .map(|(path, content)| match content {
                Value::String(s) => Ok(SandboxFile::new(path.clone(), s.as_bytes().to_vec())),
                other => Ok(SandboxFile::new(path.clone(), other.to_string().into_bytes())),
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let path = item
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("each file needs a string `path`, got {item}")))?;
                let bytes = match (item.get("content"), item.get("content_base64")) {
                    (Some(Value::String(s)), None) => s.as_bytes().to_vec(),
                    (None, Some(Value::String(b))) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD
                            .decode(b.trim())
                            .map_err(|e| bad(format!("{path}: invalid base64: {e}")))?
                    }
                    _ => return Err(bad(format!("{path}: give exactly one of `content` (text) or `content_base64`"))),
                };
                Ok(SandboxFile::new(path.to_owned(), bytes))
            })
            .collect(),
        other => Err(bad(format!("expected an object {{path: text}} or a list, got {other}"))),
    }
}

fn sandbox_error(e: SandboxError) -> SkillError {
    let retryable = e.retryable();
    let message = format!("{NAME}: {e}");
    if retryable {
        SkillError::new(message)
    } else {
        SkillError::fatal(message)
    }
}

impl CodeInterpreter {
    async fn output(&self, result: ExecResult) -> Result<Value, SkillError> {
        let mut artifacts = Vec::with_capacity(result.artifacts.len());
        let mut omitted = result.artifacts_omitted;
        for a in result.artifacts {
            let hash = blake3::hash(&a.bytes).to_hex().to_string();
            let mut entry = json!({"path": a.path, "size": a.bytes.len(), "blob": hash});
            match &self.backend.blobs {
                Some(blobs) => {
                    let stored = blobs
                        .put_blob(&a.bytes)
                        .await
                        .map_err(|e| SkillError::new(format!("{NAME}: storing artifact {}: {e}", a.path)))?;
                    entry["blob"] = json!(stored);
                }
                None if a.bytes.len() <= INLINE_ARTIFACT_BYTES => {
                    use base64::Engine;
                    entry["content_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&a.bytes));
                }
                None => {
                    omitted.push(a.path);
                    continue;
                }
            }
            artifacts.push(entry);
        }
        Ok(json!({
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "stdout_truncated": result.stdout_truncated,
            "stderr_truncated": result.stderr_truncated,
            "artifacts": artifacts,
            "artifacts_omitted": omitted,
        }))
    }
}

#[async_trait]
impl Skill for CodeInterpreter {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let (code, language, files) = match &call.input {
            Value::String(code) => (code.clone(), self.language.clone(), Vec::new()),
            Value::Object(o) => {
                let Some(code) = o.get("code").and_then(Value::as_str) else {
                    return Err(SkillError::fatal(format!(
                        "{NAME}: the input object needs a string `code` (got keys {:?})",
                        o.keys().collect::<Vec<_>>()
                    )));
                };
                let language = match o.get("language") {
                    None | Some(Value::Null) => self.language.clone(),
                    Some(Value::String(l)) => l.clone(),
                    Some(other) => {
                        return Err(SkillError::fatal(format!("{NAME}: `language` must be a string, got {other}")))
                    }
                };
                (code.to_owned(), language, files_of(o.get("files").unwrap_or(&Value::Null))?)
            }
            other => {
                return Err(SkillError::fatal(format!(
                    "{NAME}: expected the code text or {{code, language?, files?}}, got {}",
                    flujo_core::json_type_name(other)
                )))
            }
        };
        let request = ExecRequest::new(language, code)
            .with_files(files)
            .with_limits(self.limits.clone())
            .with_env("FLUJO_RUN_ID", &*call.run_id)
            .with_env("FLUJO_STEP_PATH", &*call.path)
            .with_env("FLUJO_IDEMPOTENCY_KEY", &*call.idempotency_key);
        let result = self.backend.sandbox.exec(request).await.map_err(sandbox_error)?;
        let (exit_code, timed_out) = (result.exit_code, result.timed_out);
        let stderr_tail: String = {
            let chars: Vec<char> = result.stderr.chars().collect();
            chars[chars.len().saturating_sub(500)..].iter().collect()
        };
        let output = self.output(result).await?;
        if self.fail_on_error && (timed_out || exit_code != 0) {
            let what = if timed_out {
                format!("timed out after {}s", self.limits.wall_s)
            } else {
                format!("exited with {exit_code}")
            };
            return Err(SkillError::fatal(format!("{NAME}: the code {what}; stderr: {stderr_tail}")));
        }
        Ok(SkillOutput::value(output))
    }

    fn info(&self) -> SkillInfo {
        info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::{ProtectionStatus, SkillRegistry};
    use std::sync::Mutex;

    /// Records the request; prints the code back and writes one artifact.
    #[derive(Default)]
    struct Fake(Mutex<Vec<ExecRequest>>);

    #[async_trait]
    impl Sandbox for Fake {
        async fn exec(&self, request: ExecRequest) -> Result<ExecResult, SandboxError> {
            self.0.lock().unwrap().push(request.clone());
            if request.code == "refuse" {
                return Err(SandboxError::Unavailable {
                    protection: flujo_core::Protection::Network,
                    reason: "no namespaces".into(),
                });
            }
            let mut r = ExecResult::default();
            r.stdout = request.code.clone();
            r.exit_code = if request.code == "exit 1" { 1 } else { 0 };
            r.artifacts = vec![SandboxFile::new("out.txt", b"made".to_vec())];
            Ok(r)
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        fn protections(&self) -> Vec<ProtectionStatus> {
            vec![]
        }
    }

    #[derive(Default)]
    struct Blobs(Mutex<Vec<Vec<u8>>>);

    #[async_trait]
    impl BlobStore for Blobs {
        async fn put_blob(&self, bytes: &[u8]) -> Result<String, flujo_core::StoreError> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(blake3::hash(bytes).to_hex().to_string())
        }
        async fn get_blob(&self, _hash: &str) -> Result<Option<Vec<u8>>, flujo_core::StoreError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn runs_in_the_sandbox_and_stores_artifacts_as_blobs() {
        let fake = Arc::new(Fake::default());
        let blobs = Arc::new(Blobs::default());
        let mut skills = Skills::new();
        skills.with_sandbox(SandboxBackend::new(fake.clone()).with_blobs(blobs.clone()));
        let skill = skills.resolve("code_interpreter", &json!({"timeout_s": 2, "language": "bash"})).unwrap();
        assert!(skill.info().side_effects && skill.info().input_schema.is_some());
        let out =
            skill.call(SkillCall::new(json!({"code": "echo hi", "files": {"in.txt": "x"}}))).await.unwrap().output;
        assert_eq!(out["stdout"], json!("echo hi"));
        assert_eq!(out["artifacts"][0]["path"], json!("out.txt"));
        assert_eq!(out["artifacts"][0]["size"], json!(4));
        assert_eq!(out["artifacts"][0]["blob"], json!(blake3::hash(b"made").to_hex().to_string()));
        assert!(out["artifacts"][0].get("content_base64").is_none());
        assert_eq!(blobs.0.lock().unwrap().as_slice(), [b"made".to_vec()]);
        let req = fake.0.lock().unwrap()[0].clone();
        assert_eq!((req.language.as_str(), req.limits.wall_s), ("bash", 2.0));
        assert_eq!(req.files, [SandboxFile::new("in.txt", b"x".to_vec())]);
        // a plain string is the code, in the params' language; without blobs artifacts come inline
        let mut inline = Skills::new();
        inline.with_sandbox(SandboxBackend::new(fake.clone()));
        let out = inline
            .resolve("code_interpreter", &Value::Null)
            .unwrap()
            .call(SkillCall::new(json!("print(1)")))
            .await
            .unwrap();
        assert_eq!(out.output["artifacts"][0]["content_base64"], json!("bWFkZQ=="));
        assert_eq!(fake.0.lock().unwrap()[1].language, "python");
    }

    #[tokio::test]
    async fn limits_only_tighten_and_failures_are_clear() {
        let mut skills = Skills::new();
        skills.with_sandbox(SandboxBackend::new(Arc::new(Fake::default())));
        for params in [
            json!({"timeout_s": 3600}),
            json!({"memory_bytes": u64::MAX}),
            json!({"network": true}),
            json!({"processes": 0}),
            json!({"nope": 1}),
            json!({"language": 3}),
        ] {
            assert!(
                matches!(skills.resolve("code_interpreter", &params), Err(ResolveError::BadParams { .. })),
                "{params}"
            );
        }
        let strict = skills.resolve("code_interpreter", &json!({"fail_on_error": true})).unwrap();
        let e = strict.call(SkillCall::new(json!("exit 1"))).await.unwrap_err();
        assert!(!e.retryable && e.message.contains("exited with 1"), "{e}");
        let e = strict.call(SkillCall::new(json!("refuse"))).await.unwrap_err();
        assert!(!e.retryable && e.message.contains("network"), "{e}");
        let e = strict.call(SkillCall::new(json!(3))).await.unwrap_err();
        assert!(e.message.contains("expected the code text"), "{e}");
        // without a sandbox: registered (so blueprints validate), and a call says it is off
        let off = Skills::new().resolve("flujo.builtins.code_interpreter", &json!({"language": "bash"})).unwrap();
        let e = off.call(SkillCall::new(json!("echo"))).await.unwrap_err();
        assert!(!e.retryable && e.message.contains("sandbox is off"), "{e}");
    }
}
