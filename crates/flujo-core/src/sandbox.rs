//! Sandboxed code execution (SPEC §11, `flujo.builtins.code_interpreter`): the [`Sandbox`] trait, what one
//! execution asks for ([`ExecRequest`] with its [`Limits`]) and returns ([`ExecResult`]), and the
//! [`Protection`]s a sandbox reports enforcing. No process, container or HTTP code here: the `process`,
//! `docker` and `remote` sandboxes live in `flujo-sandbox`; [`SandboxOff`] (the default) refuses everything.
//!
//! A sandbox is never silently weaker than configured: an implementation that cannot enforce a protection it
//! was asked for refuses the execution with [`SandboxError::Unavailable`] naming it, instead of running the
//! code with less protection. Sizes are bounded both ways: [`Limits`] bounds what the code may use and how
//! much of its output and files come back; [`ExecRequest::check`] bounds what goes in.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Most input files one request may carry.
pub const MAX_FILES: usize = 1000;
/// Longest relative path of an input file or artifact, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Most bytes of code and input files together in one request (64 MiB).
pub const MAX_REQUEST_BYTES: u64 = 64 << 20;
/// Most artifacts one execution returns; files past it are listed in [`ExecResult::artifacts_omitted`].
pub const MAX_ARTIFACTS: usize = 1000;

/// What one execution may use, and how much of what it produces comes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Limits {
    /// Wall-clock time, in seconds; when it runs out, everything the code started is killed and
    /// [`ExecResult::timed_out`] is true.
    pub wall_s: f64,
    /// CPU time, in seconds (the process is killed when it uses more).
    pub cpu_s: f64,
    /// Address space (virtual memory) of each process, in bytes; an allocation beyond it fails.
    pub memory_bytes: u64,
    /// Largest file the code may write, in bytes.
    pub file_bytes: u64,
    /// Most processes (and threads) the code may have at once.
    pub processes: u64,
    /// True to allow network access; false (the default) gives the code no network at all.
    pub network: bool,
    /// Most bytes of stdout (and, separately, of stderr) that come back; the rest is dropped.
    pub output_bytes: u64,
    /// Most bytes of artifacts (files created or changed) that come back, all files together.
    pub artifact_bytes: u64,
}

impl Default for Limits {
    /// 30 s wall clock and CPU, 512 MiB of memory, 64 MiB files, 64 processes, no network, 1 MiB of stdout
    /// and of stderr, 16 MiB of artifacts.
    fn default() -> Self {
        Limits {
            wall_s: 30.0,
            cpu_s: 30.0,
            memory_bytes: 512 << 20,
            file_bytes: 64 << 20,
            processes: 64,
            network: false,
            output_bytes: 1 << 20,
            artifact_bytes: 16 << 20,
        }
    }
}

impl Limits {
    /// The limits with another wall-clock timeout (the CPU limit follows when it was not lower).
    pub fn with_wall_s(mut self, wall_s: f64) -> Self {
        if self.cpu_s >= self.wall_s {
            self.cpu_s = wall_s;
        }
        self.wall_s = wall_s;
        self
    }

    /// Checks that every limit is usable: times finite, above 0 and at most
    /// [`MAX_DURATION_S`](crate::limits::MAX_DURATION_S); sizes and counts above 0.
    pub fn check(&self) -> Result<(), SandboxError> {
        for (name, v) in [("wall_s", self.wall_s), ("cpu_s", self.cpu_s)] {
            if !(v.is_finite() && v > 0.0 && v <= crate::limits::MAX_DURATION_S) {
                return Err(SandboxError::InvalidRequest(format!(
                    "limit {name} must be a number of seconds above 0 and at most {}, got {v}",
                    crate::limits::MAX_DURATION_S
                )));
            }
        }
        for (name, v) in [
            ("memory_bytes", self.memory_bytes),
            ("file_bytes", self.file_bytes),
            ("processes", self.processes),
            ("output_bytes", self.output_bytes),
            ("artifact_bytes", self.artifact_bytes),
        ] {
            if v == 0 {
                return Err(SandboxError::InvalidRequest(format!("limit {name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// A file given to, or returned by, an execution: a path relative to the execution's folder and its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SandboxFile {
    /// Relative, `/`-separated, without `..`, `.` or empty segments.
    pub path: String,
    /// The content.
    pub bytes: Vec<u8>,
}

impl SandboxFile {
    /// The file `path` holding `bytes`.
    pub fn new(path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        SandboxFile { path: path.into(), bytes: bytes.into() }
    }
}

/// Checks that `path` is a relative path that stays inside the execution's folder.
pub fn check_relative_path(path: &str) -> Result<(), SandboxError> {
    let bad = |why: &str| Err(SandboxError::InvalidRequest(format!("file path {path:?} {why}")));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad(&format!("is longer than {MAX_PATH_LEN} bytes"));
    }
    if path.starts_with('/') || path.contains('\\') {
        return bad("must be relative and `/`-separated");
    }
    if path.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("has an empty, `.` or `..` segment");
    }
    Ok(())
}

/// One execution: code in a language, input files, environment variables and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecRequest {
    /// The language (`python`, `bash`, `sh`, `node`, …); the sandbox maps it to an interpreter.
    pub language: String,
    /// The program text.
    pub code: String,
    /// Files written into the execution's folder before the code starts.
    #[serde(default)]
    pub files: Vec<SandboxFile>,
    /// Extra environment variables of the code.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// What the execution may use.
    #[serde(default)]
    pub limits: Limits,
}

impl ExecRequest {
    /// `code` in `language`, with no files, no extra environment and the default [`Limits`].
    pub fn new(language: impl Into<String>, code: impl Into<String>) -> Self {
        ExecRequest {
            language: language.into(),
            code: code.into(),
            files: Vec::new(),
            env: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// The request with these input files.
    pub fn with_files(mut self, files: Vec<SandboxFile>) -> Self {
        self.files = files;
        self
    }

    /// The request with these limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The request with `key` = `value` in the code's environment.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Checks the request: the limits, the number, paths (unique, relative) and total size of the files, and
    /// the environment's names.
    pub fn check(&self) -> Result<(), SandboxError> {
        self.limits.check()?;
        if self.language.is_empty() || !self.language.chars().all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c)) {
            return Err(SandboxError::InvalidRequest(format!("invalid language name {:?}", self.language)));
        }
        if self.files.len() > MAX_FILES {
            return Err(SandboxError::InvalidRequest(format!(
                "{} input files; at most {MAX_FILES} are accepted",
                self.files.len()
            )));
        }
        let mut total = self.code.len() as u64;
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            check_relative_path(&f.path)?;
            if !seen.insert(f.path.as_str()) {
                return Err(SandboxError::InvalidRequest(format!("file path {:?} is given twice", f.path)));
            }
            total += f.bytes.len() as u64;
        }
        // a file may not also be a folder of another (`a` and `a/b`)
        for p in &seen {
            let folder = format!("{p}/");
            if seen
                .range::<str, _>((std::ops::Bound::Included(folder.as_str()), std::ops::Bound::Unbounded))
                .next()
                .is_some_and(|q| q.starts_with(&folder))
            {
                return Err(SandboxError::InvalidRequest(format!("file path {p:?} is also a folder of another file")));
            }
        }
        if total > MAX_REQUEST_BYTES {
            return Err(SandboxError::InvalidRequest(format!(
                "code and files are {total} bytes; at most {MAX_REQUEST_BYTES} are accepted"
            )));
        }
        for (k, _) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SandboxError::InvalidRequest(format!("invalid environment variable name {k:?}")));
            }
        }
        Ok(())
    }
}

/// What an execution produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ExecResult {
    /// Standard output (UTF-8, invalid bytes replaced), at most [`Limits::output_bytes`].
    pub stdout: String,
    /// Standard error, likewise bounded.
    pub stderr: String,
    /// The exit code; `128 + N` when the code was killed by signal N (as a shell reports it).
    pub exit_code: i32,
    /// True when the wall-clock limit ran out and the code was killed.
    pub timed_out: bool,
    /// Files the code created or changed in its folder, at most [`Limits::artifact_bytes`] together.
    pub artifacts: Vec<SandboxFile>,
    /// True when stdout was longer than [`Limits::output_bytes`] and was cut.
    pub stdout_truncated: bool,
    /// True when stderr was cut.
    pub stderr_truncated: bool,
    /// Paths of created or changed files that did not come back (over the artifact limits, or not regular
    /// files).
    pub artifacts_omitted: Vec<String>,
    /// How long the execution took, in milliseconds.
    pub duration_ms: u64,
}

/// A protection a sandbox may enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protection {
    /// A fresh, empty folder per execution, removed afterwards.
    Folder,
    /// The wall-clock limit kills the code.
    Timeout,
    /// Nothing the code started outlives the execution (grandchildren included).
    Cleanup,
    /// The CPU-time limit.
    Cpu,
    /// The memory limit.
    Memory,
    /// The file-size limit.
    FileSize,
    /// The process-count limit.
    Processes,
    /// No network unless [`Limits::network`] allows it.
    Network,
    /// No writes outside the execution's folder.
    Filesystem,
    /// The code runs without administrator rights (no root, no capabilities).
    Privileges,
}

impl Protection {
    /// Every protection, in the order they are listed.
    pub const ALL: [Protection; 10] = [
        Protection::Folder,
        Protection::Timeout,
        Protection::Cleanup,
        Protection::Cpu,
        Protection::Memory,
        Protection::FileSize,
        Protection::Processes,
        Protection::Network,
        Protection::Filesystem,
        Protection::Privileges,
    ];

    /// Its name in configuration and reports (`file_size`, `network`, …).
    pub fn name(self) -> &'static str {
        match self {
            Protection::Folder => "folder",
            Protection::Timeout => "timeout",
            Protection::Cleanup => "cleanup",
            Protection::Cpu => "cpu",
            Protection::Memory => "memory",
            Protection::FileSize => "file_size",
            Protection::Processes => "processes",
            Protection::Network => "network",
            Protection::Filesystem => "filesystem",
            Protection::Privileges => "privileges",
        }
    }

    /// The protection named `name` (as [`Protection::name`] spells it).
    pub fn from_name(name: &str) -> Option<Protection> {
        Protection::ALL.into_iter().find(|p| p.name() == name)
    }

    /// What it guarantees, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Protection::Folder => "a fresh folder per execution, removed afterwards",
            Protection::Timeout => "killed when the wall-clock limit runs out",
            Protection::Cleanup => "nothing it started survives the execution",
            Protection::Cpu => "CPU-time limit",
            Protection::Memory => "memory limit",
            Protection::FileSize => "file-size limit",
            Protection::Processes => "process-count limit",
            Protection::Network => "no network",
            Protection::Filesystem => "no writes outside its folder",
            Protection::Privileges => "no administrator rights",
        }
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a sandbox enforces one protection, and how (or why not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProtectionStatus {
    /// The protection.
    pub protection: Protection,
    /// True when the sandbox enforces it on every execution.
    pub active: bool,
    /// How it is enforced, or why it cannot be.
    pub how: String,
}

impl ProtectionStatus {
    /// `protection`, enforced (`active`) as `how` says.
    pub fn new(protection: Protection, active: bool, how: impl Into<String>) -> Self {
        ProtectionStatus { protection, active, how: how.into() }
    }
}

/// Why an execution did not happen (a program that ran and failed is an [`ExecResult`] with its exit code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// No sandbox is configured.
    #[error("the sandbox is off; configure one with `[sandbox] kind = \"process\"` (or \"docker\", \"remote\") in flujo.toml")]
    Off,
    /// A protection the configuration asks for cannot be enforced here; the code did not run.
    #[error("the sandbox refuses to run: protection '{protection}' ({}) is required but unavailable: {reason}", protection.meaning())]
    Unavailable {
        /// The protection.
        protection: Protection,
        /// Why it is unavailable.
        reason: String,
    },
    /// The sandbox has no interpreter for the language.
    #[error("the sandbox cannot run {language:?} (it runs: {})", if available.is_empty() { "nothing".to_owned() } else { available.join(", ") })]
    UnsupportedLanguage {
        /// The language asked for.
        language: String,
        /// The languages it runs.
        available: Vec<String>,
    },
    /// The request is malformed (a bad path, a limit out of range, too many or too large files).
    #[error("invalid sandbox request: {0}")]
    InvalidRequest(String),
    /// The sandbox itself failed (could not start the process, the container engine or remote service
    /// failed).
    #[error("sandbox failure: {message}")]
    Backend {
        /// What went wrong.
        message: String,
        /// True when trying again may help (a lost connection, a busy service).
        retryable: bool,
    },
}

impl SandboxError {
    /// A failure of the sandbox itself.
    pub fn backend(message: impl Into<String>, retryable: bool) -> Self {
        SandboxError::Backend { message: message.into(), retryable }
    }

    /// True when trying again may help.
    pub fn retryable(&self) -> bool {
        matches!(self, SandboxError::Backend { retryable: true, .. })
    }

    /// A stable code for reports: `sandbox_off`, `protection_unavailable`, `unsupported_language`,
    /// `invalid_request`, `sandbox_failure`.
    pub fn code(&self) -> &'static str {
        match self {
            SandboxError::Off => "sandbox_off",
            SandboxError::Unavailable { .. } => "protection_unavailable",
            SandboxError::UnsupportedLanguage { .. } => "unsupported_language",
            SandboxError::InvalidRequest(_) => "invalid_request",
            SandboxError::Backend { .. } => "sandbox_failure",
        }
    }
}

/// Runs code with limits, away from the machine it runs on. Implementations: `flujo-sandbox` (`process`,
/// `docker`, `remote`) and [`SandboxOff`].
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// Runs one request. The code's own failure (an exception, a non-zero exit, a timeout) is an `Ok`
    /// [`ExecResult`]; `Err` means it did not run, or the sandbox failed.
    async fn exec(&self, request: ExecRequest) -> Result<ExecResult, SandboxError>;
    /// What the sandbox is, for messages (`process (Linux)`, `remote https://…`).
    fn describe(&self) -> String;
    /// Every protection and whether this sandbox enforces it here.
    fn protections(&self) -> Vec<ProtectionStatus>;
    /// The languages it runs (empty when it cannot say).
    fn languages(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The sandbox of kind `none`: every execution is refused with [`SandboxError::Off`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxOff;

#[async_trait]
impl Sandbox for SandboxOff {
    async fn exec(&self, _request: ExecRequest) -> Result<ExecResult, SandboxError> {
        Err(SandboxError::Off)
    }
    fn describe(&self) -> String {
        "none (off)".to_owned()
    }
    fn protections(&self) -> Vec<ProtectionStatus> {
        Protection::ALL
            .into_iter()
            .map(|p| ProtectionStatus::new(p, false, "the sandbox is off: nothing runs"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside_the_folder() {
        for ok in ["a.txt", "data/in.csv", "a b/c"] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "a\nb"] {
            assert!(matches!(check_relative_path(bad), Err(SandboxError::InvalidRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_checked() {
        assert!(ExecRequest::new("python", "print(1)").check().is_ok());
        let twice = ExecRequest::new("python", "")
            .with_files(vec![SandboxFile::new("a", b"1".to_vec()), SandboxFile::new("a", b"2".to_vec())]);
        assert!(twice.check().is_err());
        let nested =
            ExecRequest::new("sh", "").with_files(vec![SandboxFile::new("a", vec![]), SandboxFile::new("a/b", vec![])]);
        assert!(nested.check().is_err());
        let limits = Limits { wall_s: f64::NAN, ..Limits::default() };
        assert!(ExecRequest::new("sh", "").with_limits(limits).check().is_err());
        assert!(ExecRequest::new("sh; rm", "").check().is_err());
        assert!(ExecRequest::new("sh", "").with_env("A=B", "c").check().is_err());
        assert_eq!(Limits::default().with_wall_s(2.0).cpu_s, 2.0);
    }

    #[test]
    fn protections_have_stable_names() {
        for p in Protection::ALL {
            assert_eq!(Protection::from_name(p.name()), Some(p));
            assert_eq!(serde_json::to_value(p).ok(), Some(serde_json::Value::String(p.name().to_owned())));
        }
        assert!(!SandboxError::Off.retryable());
        assert!(SandboxError::backend("x", true).retryable());
    }
}
