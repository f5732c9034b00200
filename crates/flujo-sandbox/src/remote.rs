//! The `remote` sandbox: code runs on a service that speaks a small HTTP JSON API, documented here and in
//! `docs/sandbox.md`. [`RemoteSandbox`] is its client (feature `remote`); [`router`] serves the same API over
//! any [`Sandbox`](flujo_core::Sandbox) (feature `remote-server`), as a reference implementation and for tests.
//!
//! `POST {url}/exec` with `Authorization: Bearer KEY` when a key is configured:
//!
//! ```json
//! {"language": "python", "code": "print(1)",
//!  "files": [{"path": "data/in.csv", "content_base64": "YSxiCg=="}],
//!  "env": {"NAME": "value"},
//!  "limits": {"wall_s": 30, "cpu_s": 30, "memory_bytes": 536870912, "file_bytes": 67108864,
//!             "processes": 64, "network": false, "output_bytes": 1048576, "artifact_bytes": 16777216},
//!  "require": ["timeout", "network", "filesystem"]}
//! ```
//!
//! answers `200` with
//!
//! ```json
//! {"stdout": "1\n", "stderr": "", "exit_code": 0, "timed_out": false,
//!  "artifacts": [{"path": "out.png", "content_base64": "iVBORw0..."}],
//!  "stdout_truncated": false, "stderr_truncated": false, "artifacts_omitted": [], "duration_ms": 41}
//! ```
//!
//! (`artifacts` may also be an object `{path: base64}`, as the Python original's remote sandbox reads it).
//! A request the service will not run answers `4xx` with `{"error": {"code": CODE, "message": TEXT}}`, CODE
//! one of `sandbox_off`, `protection_unavailable` (a protection in `require` it cannot enforce; `protection`
//! names it), `unsupported_language`, `invalid_request`; a failure of the service itself answers `5xx` (the
//! client retries the step when the code is 502, 503 or 504, or on a lost connection). `GET {url}/info`
//! answers `{"describe": TEXT, "languages": [..], "protections": [{"protection", "active", "how"}]}`.

use serde::{Deserialize, Serialize};

use flujo_core::{ExecRequest, ExecResult, Limits, Protection, ProtectionStatus, SandboxError, SandboxFile};

#[cfg(feature = "remote")]
pub use client::{RemoteSandbox, RemoteSettings};
#[cfg(feature = "remote-server")]
pub use server::router;

/// A file on the wire: its path and its bytes in base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFile {
    /// Relative path.
    pub path: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub content_base64: String,
}

/// `artifacts` as a list of [`WireFile`]s, or an object `{path: base64}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireFiles {
    /// `[{path, content_base64}]`.
    List(Vec<WireFile>),
    /// `{path: base64}`.
    Map(std::collections::BTreeMap<String, String>),
}

impl Default for WireFiles {
    fn default() -> Self {
        WireFiles::List(Vec::new())
    }
}

/// The body of `POST /exec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRequest {
    /// The language.
    pub language: String,
    /// The program text.
    pub code: String,
    /// Input files.
    #[serde(default)]
    pub files: Vec<WireFile>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The limits.
    #[serde(default)]
    pub limits: Limits,
    /// Protections the service must enforce (or refuse).
    #[serde(default)]
    pub require: Vec<Protection>,
}

/// The body of a `200` answer to `POST /exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WireResult {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code.
    pub exit_code: i32,
    /// Killed at the wall-clock limit.
    pub timed_out: bool,
    /// Files created or changed.
    pub artifacts: WireFiles,
    /// stdout was cut.
    pub stdout_truncated: bool,
    /// stderr was cut.
    pub stderr_truncated: bool,
    /// Files that did not come back.
    pub artifacts_omitted: Vec<String>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

/// The body of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    /// `{code, message, protection?}`.
    pub error: WireErrorBody,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireErrorBody {
    /// A stable code ([`SandboxError::code`]).
    pub code: String,
    /// For people.
    pub message: String,
    /// The unavailable protection, for `protection_unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<Protection>,
}

/// The body of `GET /info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WireInfo {
    /// What the service's sandbox is.
    pub describe: String,
    /// Languages it runs.
    pub languages: Vec<String>,
    /// Its protections.
    pub protections: Vec<ProtectionStatus>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn encode(bytes: &[u8]) -> String {
    use base64::Engine;
    b64().encode(bytes)
}

fn decode(what: &str, text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    b64().decode(text.trim()).map_err(|e| format!("{what}: invalid base64: {e}"))
}

impl WireRequest {
    /// The wire form of `request`, asking the service to enforce `require`.
    pub fn from_request(request: &ExecRequest, require: Vec<Protection>) -> Self {
        WireRequest {
            language: request.language.clone(),
            code: request.code.clone(),
            files: request
                .files
                .iter()
                .map(|f| WireFile { path: f.path.clone(), content_base64: encode(&f.bytes) })
                .collect(),
            env: request.env.iter().cloned().collect(),
            limits: request.limits.clone(),
            require,
        }
    }

    /// The request it carries (checked).
    pub fn into_request(self) -> Result<(ExecRequest, Vec<Protection>), SandboxError> {
        let mut files = Vec::with_capacity(self.files.len());
        for f in self.files {
            let bytes = decode(&f.path, &f.content_base64).map_err(SandboxError::InvalidRequest)?;
            files.push(SandboxFile::new(f.path, bytes));
        }
        let mut request = ExecRequest::new(self.language, self.code).with_files(files).with_limits(self.limits);
        request.env = self.env.into_iter().collect();
        request.check()?;
        Ok((request, self.require))
    }
}

impl WireResult {
    /// The wire form of `result`.
    pub fn from_result(result: ExecResult) -> Self {
        WireResult {
            stdout: result.stdout,
            stderr: result.stderr,
            exit_code: result.exit_code,
            timed_out: result.timed_out,
            artifacts: WireFiles::List(
                result
                    .artifacts
                    .iter()
                    .map(|f| WireFile { path: f.path.clone(), content_base64: encode(&f.bytes) })
                    .collect(),
            ),
            stdout_truncated: result.stdout_truncated,
            stderr_truncated: result.stderr_truncated,
            artifacts_omitted: result.artifacts_omitted,
            duration_ms: result.duration_ms,
        }
    }

    /// The result it carries; artifact paths are checked (a service cannot name files outside the folder).
    pub fn into_result(self) -> Result<ExecResult, String> {
        let pairs: Vec<(String, String)> = match self.artifacts {
            WireFiles::List(l) => l.into_iter().map(|f| (f.path, f.content_base64)).collect(),
            WireFiles::Map(m) => m.into_iter().collect(),
        };
        let mut artifacts = Vec::with_capacity(pairs.len());
        for (path, text) in pairs {
            flujo_core::sandbox::check_relative_path(&path).map_err(|e| format!("artifact: {e}"))?;
            artifacts.push(SandboxFile::new(path.clone(), decode(&path, &text)?));
        }
        let mut r = ExecResult::default();
        r.stdout = self.stdout;
        r.stderr = self.stderr;
        r.exit_code = self.exit_code;
        r.timed_out = self.timed_out;
        r.artifacts = artifacts;
        r.stdout_truncated = self.stdout_truncated;
        r.stderr_truncated = self.stderr_truncated;
        r.artifacts_omitted = self.artifacts_omitted;
        r.duration_ms = self.duration_ms;
        Ok(r)
    }
}

impl WireError {
    /// The wire form of `e`.
    pub fn from_error(e: &SandboxError) -> Self {
        let protection = match e {
            SandboxError::Unavailable { protection, .. } => Some(*protection),
            _ => None,
        };
        WireError { error: WireErrorBody { code: e.code().to_owned(), message: e.to_string(), protection } }
    }

    /// The error it carries (a service's message is prefixed with where it came from).
    pub fn into_error(self, status: u16, from: &str) -> SandboxError {
        let message = format!("{from}: {}", self.error.message);
        match (self.error.code.as_str(), self.error.protection) {
            ("sandbox_off", _) => SandboxError::backend(message, false),
            ("protection_unavailable", Some(protection)) => SandboxError::Unavailable { protection, reason: message },
            ("unsupported_language", _) => SandboxError::UnsupportedLanguage { language: message, available: vec![] },
            ("invalid_request", _) => SandboxError::InvalidRequest(message),
            _ => SandboxError::backend(format!("{message} (HTTP {status})"), matches!(status, 429 | 502..=504)),
        }
    }
}

#[cfg(feature = "remote")]
mod client {
    use std::time::Duration;

    use async_trait::async_trait;
    use flujo_core::{ExecRequest, ExecResult, Protection, ProtectionStatus, Sandbox, SandboxError};
    use flujo_http::reqwest;

    use super::{WireError, WireInfo, WireRequest, WireResult};

    /// Settings of a [`RemoteSandbox`].
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct RemoteSettings {
        /// The service's base URL (`https://sandbox.internal:8080`); `/exec` and `/info` are appended.
        pub url: String,
        /// A bearer token, sent as `Authorization: Bearer …` (never printed).
        pub api_key: Option<String>,
        /// Protections the service must enforce (sent as `require`; it refuses when it cannot).
        pub require: Vec<Protection>,
        /// How much longer than the execution's wall-clock limit the client waits for an answer.
        pub grace_s: f64,
    }

    impl RemoteSettings {
        /// The service at `url`, without a key, requiring every protection, waiting 30 s past the limit.
        pub fn new(url: impl Into<String>) -> Self {
            RemoteSettings { url: url.into(), api_key: None, require: Protection::ALL.to_vec(), grace_s: 30.0 }
        }
    }

    /// The client of a remote sandbox service (see the [module](super) for the API).
    #[derive(Debug)]
    pub struct RemoteSandbox {
        settings: RemoteSettings,
        client: reqwest::Client,
        info: Option<WireInfo>,
    }

    impl RemoteSandbox {
        /// A client of the service in `settings` (no request is made yet).
        pub fn new(settings: RemoteSettings) -> Result<Self, SandboxError> {
            let url = reqwest::Url::parse(&settings.url)
                .map_err(|e| SandboxError::InvalidRequest(format!("remote sandbox url {:?}: {e}", settings.url)))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(SandboxError::InvalidRequest(format!(
                    "remote sandbox url {:?}: expected http:// or https://",
                    settings.url
                )));
            }
            let client = flujo_http::client_builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| SandboxError::backend(format!("HTTP client: {e}"), false))?;
            Ok(RemoteSandbox { settings, client, info: None })
        }

        /// The same client, having asked the service what it enforces (`GET /info`).
        pub async fn connect(mut self) -> Result<Self, SandboxError> {
            let url = self.endpoint("info");
            let mut req = self.client.get(&url).timeout(Duration::from_secs(10));
            if let Some(key) = &self.settings.api_key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.map_err(|e| SandboxError::backend(format!("{url}: {e}"), true))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(SandboxError::backend(format!("{url}: HTTP {status}"), status.is_server_error()));
            }
            let body = read_limited(resp, 1 << 20, &url).await?;
            self.info = Some(
                serde_json::from_slice(&body)
                    .map_err(|e| SandboxError::backend(format!("{url}: not the sandbox API's answer: {e}"), false))?,
            );
            Ok(self)
        }

        fn endpoint(&self, name: &str) -> String {
            format!("{}/{name}", self.settings.url.trim_end_matches('/'))
        }
    }

    /// The body of `resp`, at most `limit` bytes.
    async fn read_limited(mut resp: reqwest::Response, limit: u64, url: &str) -> Result<Vec<u8>, SandboxError> {
        let mut body = Vec::new();
        while let Some(chunk) =
            resp.chunk().await.map_err(|e| SandboxError::backend(format!("{url}: reading the answer: {e}"), true))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(SandboxError::backend(format!("{url}: the answer is larger than {limit} bytes"), false));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    #[async_trait]
    impl Sandbox for RemoteSandbox {
        async fn exec(&self, request: ExecRequest) -> Result<ExecResult, SandboxError> {
            request.check()?;
            let limits = request.limits.clone();
            let body = WireRequest::from_request(&request, self.settings.require.clone());
            let url = self.endpoint("exec");
            let wait = flujo_core::limits::duration_from_secs(limits.wall_s + self.settings.grace_s.max(0.0))
                .unwrap_or(Duration::from_secs(3600));
            let mut req = self.client.post(&url).json(&body).timeout(wait);
            if let Some(key) = &self.settings.api_key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.map_err(|e| {
                let e =
                    if e.is_timeout() { format!("no answer within {}s", wait.as_secs_f64()) } else { e.to_string() };
                SandboxError::backend(format!("{url}: {e}"), true)
            })?;
            let status = resp.status();
            // stdout and stderr, and the artifacts in base64, with room for the JSON around them
            let limit = limits.output_bytes.saturating_mul(2).saturating_mul(6)
                + limits.artifact_bytes.saturating_mul(2)
                + (1 << 20);
            let bytes = read_limited(resp, limit, &url).await?;
            if !status.is_success() {
                return Err(match serde_json::from_slice::<WireError>(&bytes) {
                    Ok(e) => e.into_error(status.as_u16(), &url),
                    Err(_) => {
                        let excerpt: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                        SandboxError::backend(
                            format!("{url}: HTTP {status}: {excerpt}"),
                            matches!(status.as_u16(), 429 | 502..=504),
                        )
                    }
                });
            }
            let wire: WireResult = serde_json::from_slice(&bytes)
                .map_err(|e| SandboxError::backend(format!("{url}: not the sandbox API's answer: {e}"), false))?;
            let mut result = wire.into_result().map_err(|e| SandboxError::backend(format!("{url}: {e}"), false))?;
            // the service's bounds are its own: hold it to ours
            let cut = |s: &mut String, limit: u64| {
                if s.len() as u64 > limit {
                    let mut end = limit as usize;
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    s.truncate(end);
                    true
                } else {
                    false
                }
            };
            result.stdout_truncated |= cut(&mut result.stdout, limits.output_bytes);
            result.stderr_truncated |= cut(&mut result.stderr, limits.output_bytes);
            let mut left = limits.artifact_bytes;
            let mut kept = Vec::new();
            for a in std::mem::take(&mut result.artifacts) {
                if a.bytes.len() as u64 <= left && kept.len() < flujo_core::sandbox::MAX_ARTIFACTS {
                    left -= a.bytes.len() as u64;
                    kept.push(a);
                } else {
                    result.artifacts_omitted.push(a.path);
                }
            }
            result.artifacts = kept;
            Ok(result)
        }

        fn describe(&self) -> String {
            match &self.info {
                Some(i) if !i.describe.is_empty() => format!("remote {} ({})", self.settings.url, i.describe),
                _ => format!("remote {}", self.settings.url),
            }
        }

        fn protections(&self) -> Vec<ProtectionStatus> {
            match &self.info {
                Some(i) => i.protections.clone(),
                None => Protection::ALL
                    .into_iter()
                    .map(|p| {
                        let required = self.settings.require.contains(&p);
                        ProtectionStatus::new(
                            p,
                            required,
                            if required {
                                "required of the service with each request (it refuses when it cannot)"
                            } else {
                                "not required of the service"
                            },
                        )
                    })
                    .collect(),
            }
        }

        fn languages(&self) -> Vec<String> {
            self.info.as_ref().map(|i| i.languages.clone()).unwrap_or_default()
        }
    }
}

#[cfg(feature = "remote-server")]
mod server {
    use std::sync::Arc;

    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use flujo_core::{Sandbox, SandboxError};

    use super::{WireError, WireInfo, WireRequest, WireResult};

    /// The remote sandbox API (`POST /exec`, `GET /info`) over `sandbox`. Requests larger than the core's
    /// request bound (in base64) are refused; nothing else (authentication, TLS) is done here — put it behind
    /// a proxy that does.
    pub fn router(sandbox: Arc<dyn Sandbox>) -> Router {
        let limit = (flujo_core::sandbox::MAX_REQUEST_BYTES as usize) / 3 * 4 + (1 << 20);
        Router::new()
            .route("/exec", post(exec))
            .route("/info", get(info))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(sandbox)
    }

    fn error(e: SandboxError) -> Response {
        let status = match &e {
            SandboxError::Backend { retryable: true, .. } => StatusCode::SERVICE_UNAVAILABLE,
            SandboxError::Backend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            SandboxError::Off | SandboxError::Unavailable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(WireError::from_error(&e))).into_response()
    }

    async fn exec(State(sandbox): State<Arc<dyn Sandbox>>, Json(body): Json<WireRequest>) -> Response {
        let (request, require) = match body.into_request() {
            Ok(r) => r,
            Err(e) => return error(e),
        };
        let status = sandbox.protections();
        for p in require {
            if p == flujo_core::Protection::Network && request.limits.network {
                continue;
            }
            match status.iter().find(|s| s.protection == p) {
                Some(s) if s.active => {}
                other => {
                    let reason = other.map_or("the service does not know it".to_owned(), |s| s.how.clone());
                    return error(SandboxError::Unavailable { protection: p, reason });
                }
            }
        }
        match sandbox.exec(request).await {
            Ok(r) => Json(WireResult::from_result(r)).into_response(),
            Err(e) => error(e),
        }
    }

    async fn info(State(sandbox): State<Arc<dyn Sandbox>>) -> Json<WireInfo> {
        Json(WireInfo {
            describe: sandbox.describe(),
            languages: sandbox.languages(),
            protections: sandbox.protections(),
        })
    }
}
