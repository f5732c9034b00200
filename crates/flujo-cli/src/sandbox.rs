//! The sandbox for the command line (SPEC §11): the `[sandbox]` section of `flujo.toml`, the sandbox runs get
//! from it (`flujo.builtins.code_interpreter` runs code there; its artifacts go to the state store's blobs),
//! and `flujo dev sandbox-check`, which prints what the sandbox enforces on this machine.
//!
//! `kind = "none"` (the default) refuses every execution. `require` names the protections an execution
//! needs (default: all of them); the sandbox refuses to run code when one of them is unavailable here, and
//! `sandbox-check` says which. `FLUJO_SANDBOX_UNAVAILABLE` (comma-separated protection names) treats
//! protections as unavailable, to see what a machine without them would do; it can only make the sandbox
//! refuse more, never enforce less.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use flujo_core::{BlobStore, Limits, Protection, Sandbox, SandboxOff, SkillRegistry, Store, StoreError};
use flujo_skills::{SandboxBackend, WithSandbox};
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::{CliError, EXIT_FAILED, EXIT_OK};

/// `[sandbox] kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Every execution is refused.
    #[default]
    None,
    /// A child process fenced in by the kernel (Linux).
    Process,
    /// A container per execution, through the Docker Engine API.
    Docker,
    /// A service speaking the remote sandbox API.
    Remote,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Process => "process",
            Kind::Docker => "docker",
            Kind::Remote => "remote",
        }
    }
}

/// The `[sandbox]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxToml {
    /// `none` (default), `process`, `docker` or `remote`.
    #[serde(default)]
    pub kind: Kind,
    /// Protections that must be enforced (names, or `"all"`; default all).
    pub require: Option<Vec<String>>,
    /// Protections to treat as unavailable (see the module's documentation).
    pub unavailable: Option<Vec<String>>,
    /// Wall-clock limit of one execution, in seconds (default 30).
    pub timeout_s: Option<f64>,
    /// CPU-time limit, in seconds (default: the timeout).
    pub cpu_s: Option<f64>,
    /// Memory limit, in MiB (default 512).
    pub memory_mb: Option<u64>,
    /// Largest file the code may write, in MiB (default 64).
    pub file_size_mb: Option<u64>,
    /// Most processes at once (default 64).
    pub max_processes: Option<u64>,
    /// Allow network access (default false); steps may then ask for it with `network: true`.
    pub network: Option<bool>,
    /// Most bytes of stdout, and of stderr, kept (default 1 MiB).
    pub max_output_bytes: Option<u64>,
    /// Most bytes of artifacts kept (default 16 MiB).
    pub max_artifact_bytes: Option<u64>,
    /// `process`: language → program and arguments (added to, or replacing, the defaults).
    pub interpreters: Option<BTreeMap<String, Vec<String>>>,
    /// `process`: the code's PATH (default `/usr/local/bin:/usr/bin:/bin`).
    pub path: Option<String>,
    /// `process`: where temporary folders are made.
    pub temp_dir: Option<PathBuf>,
    /// `remote`: the service's URL.
    pub url: Option<String>,
    /// `remote`: the environment variable holding its bearer token.
    pub api_key_env: Option<String>,
    /// `docker`: the image (default `python:3.12-slim`).
    pub image: Option<String>,
    /// `docker`: images per language (`{node = "node:22-slim"}`).
    pub images: Option<BTreeMap<String, String>>,
    /// `docker`: the Engine API's address (`unix:///var/run/docker.sock`, `http://127.0.0.1:2375`; default
    /// `DOCKER_HOST`, else the local socket).
    pub docker_host: Option<String>,
}

fn protections(names: &[String], key: &str) -> Result<BTreeSet<Protection>, String> {
    let mut set = BTreeSet::new();
    for n in names {
        if n == "all" {
            set.extend(Protection::ALL);
            continue;
        }
        match Protection::from_name(n) {
            Some(p) => {
                set.insert(p);
            }
            None => {
                let known: Vec<&str> = Protection::ALL.iter().map(|p| p.name()).collect();
                return Err(format!("[sandbox] {key}: unknown protection '{n}' (known: all, {})", known.join(", ")));
            }
        }
    }
    Ok(set)
}

impl SandboxToml {
    /// Parses and checks the section.
    pub fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let json = serde_json::to_value(value).map_err(|e| format!("[sandbox]: {e}"))?;
        let s: SandboxToml = serde_json::from_value(json).map_err(|e| format!("[sandbox]: {e}"))?;
        s.require()?;
        s.unavailable()?;
        s.limits().check().map_err(|e| format!("[sandbox]: {e}"))?;
        if let Some(i) = &s.interpreters {
            if let Some((lang, _)) = i.iter().find(|(_, argv)| argv.is_empty() || argv[0].is_empty()) {
                return Err(format!("[sandbox] interpreters.{lang}: expected [PROGRAM, ARGS…]"));
            }
        }
        let kind_keys: [(&str, bool, Kind); 8] = [
            ("interpreters", s.interpreters.is_some(), Kind::Process),
            ("path", s.path.is_some(), Kind::Process),
            ("temp_dir", s.temp_dir.is_some(), Kind::Process),
            ("url", s.url.is_some(), Kind::Remote),
            ("api_key_env", s.api_key_env.is_some(), Kind::Remote),
            ("image", s.image.is_some(), Kind::Docker),
            ("images", s.images.is_some(), Kind::Docker),
            ("docker_host", s.docker_host.is_some(), Kind::Docker),
        ];
        if s.kind != Kind::None {
            if let Some((key, _, kind)) = kind_keys.iter().find(|(_, set, kind)| *set && *kind != s.kind) {
                return Err(format!(
                    "[sandbox] {key} is a setting of kind \"{}\", but kind is \"{}\"",
                    kind.name(),
                    s.kind.name()
                ));
            }
        }
        if s.kind == Kind::Remote && s.url.is_none() {
            return Err("[sandbox] kind = \"remote\" needs `url` (the service's base URL)".into());
        }
        Ok(s)
    }

    fn require(&self) -> Result<BTreeSet<Protection>, String> {
        match &self.require {
            None => Ok(Protection::ALL.into_iter().collect()),
            Some(names) => protections(names, "require"),
        }
    }

    fn unavailable(&self) -> Result<BTreeSet<Protection>, String> {
        let mut set = protections(self.unavailable.as_deref().unwrap_or_default(), "unavailable")?;
        if let Ok(v) = std::env::var("FLUJO_SANDBOX_UNAVAILABLE") {
            let names: Vec<String> = v.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
            set.extend(protections(&names, "FLUJO_SANDBOX_UNAVAILABLE")?);
        }
        Ok(set)
    }

    /// The deployment's limits: the defaults of each execution and the most a step may ask for.
    pub fn limits(&self) -> Limits {
        let mut l = Limits::default();
        if let Some(t) = self.timeout_s {
            l = l.with_wall_s(t);
        }
        if let Some(c) = self.cpu_s {
            l.cpu_s = c;
        }
        if let Some(m) = self.memory_mb {
            l.memory_bytes = m.saturating_mul(1 << 20);
        }
        if let Some(m) = self.file_size_mb {
            l.file_bytes = m.saturating_mul(1 << 20);
        }
        if let Some(p) = self.max_processes {
            l.processes = p;
        }
        if let Some(n) = self.network {
            l.network = n;
        }
        if let Some(b) = self.max_output_bytes {
            l.output_bytes = b;
        }
        if let Some(b) = self.max_artifact_bytes {
            l.artifact_bytes = b;
        }
        l
    }
}

/// Sandboxes opened by this process, by configuration: a worker running many runs opens each once.
fn opened() -> &'static Mutex<HashMap<String, Arc<dyn Sandbox>>> {
    static OPENED: OnceLock<Mutex<HashMap<String, Arc<dyn Sandbox>>>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The sandbox of `section` (kind `none`: [`SandboxOff`]).
pub fn open(section: &SandboxToml) -> Result<Arc<dyn Sandbox>, CliError> {
    let require = section.require().map_err(CliError::config)?;
    let unavailable = section.unavailable().map_err(CliError::config)?;
    let key = format!("{section:?}\u{0}{unavailable:?}");
    if let Some(s) = opened().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(s.clone());
    }
    let sandbox: Arc<dyn Sandbox> = match section.kind {
        Kind::None => Arc::new(SandboxOff),
        Kind::Process => {
            let mut s = flujo_sandbox::ProcessSettings::default();
            if let Some(i) = &section.interpreters {
                s.interpreters.extend(i.clone());
            }
            if let Some(p) = &section.path {
                s.path = p.clone();
            }
            s.temp_dir = section.temp_dir.clone();
            s.require = require;
            s.unavailable = unavailable;
            Arc::new(flujo_sandbox::ProcessSandbox::new(s))
        }
        Kind::Remote => {
            let url = section.url.clone().unwrap_or_default();
            let mut s = flujo_sandbox::remote::RemoteSettings::new(url);
            s.require = require.into_iter().filter(|p| !unavailable.contains(p)).collect();
            if !unavailable.is_empty() {
                return Err(CliError::config(
                    "[sandbox] unavailable / FLUJO_SANDBOX_UNAVAILABLE apply to kind \"process\" and \"docker\"; a remote \
                     service reports its own protections",
                ));
            }
            if let Some(var) = &section.api_key_env {
                let key = std::env::var(var).map_err(|_| {
                    CliError::config(format!("[sandbox] api_key_env: the environment variable {var} is not set"))
                })?;
                s.api_key = Some(key);
            }
            Arc::new(
                flujo_sandbox::remote::RemoteSandbox::new(s).map_err(|e| CliError::config(format!("[sandbox] {e}")))?,
            )
        }
        Kind::Docker => docker(section, require, unavailable)?,
    };
    opened().lock().unwrap_or_else(|p| p.into_inner()).insert(key, sandbox.clone());
    Ok(sandbox)
}

fn docker(
    section: &SandboxToml,
    require: BTreeSet<Protection>,
    unavailable: BTreeSet<Protection>,
) -> Result<Arc<dyn Sandbox>, CliError> {
    let mut s = flujo_sandbox::docker::DockerSettings::default();
    if let Some(i) = &section.image {
        s.image = i.clone();
    }
    if let Some(i) = &section.images {
        s.images.extend(i.clone());
    }
    s.host = section.docker_host.clone().or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()));
    s.require = require;
    s.unavailable = unavailable;
    Ok(Arc::new(flujo_sandbox::docker::DockerSandbox::new(s).map_err(|e| CliError::config(format!("[sandbox] {e}")))?))
}

/// The state store as the artifacts' blob store.
struct StoreBlobs(Arc<dyn Store>);

#[async_trait]
impl BlobStore for StoreBlobs {
    async fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.0.put_blob(bytes).await
    }
    async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get_blob(hash).await
    }
}

/// The runner's skills with `code_interpreter` over the configured sandbox (unchanged when it is off).
pub fn wire(
    reg: Arc<dyn SkillRegistry>,
    store: &Arc<dyn Store>,
    cfg: &Config,
) -> Result<Arc<dyn SkillRegistry>, CliError> {
    let Some(section) = cfg.sandbox.as_ref().filter(|s| s.kind != Kind::None) else { return Ok(reg) };
    let backend = SandboxBackend::new(open(section)?)
        .with_limits(section.limits())
        .with_blobs(Arc::new(StoreBlobs(store.clone())));
    Ok(Arc::new(WithSandbox::new(reg, backend)))
}

/// `flujo dev sandbox-check`: the configured sandbox (or `--kind`), the languages it runs and every
/// protection: enforced here or not, required or not. Exit 0 when it would run code, 1 when it would refuse.
pub async fn check(cfg: &Config, kind: Option<Kind>, json: bool) -> Result<u8, CliError> {
    let mut section = cfg.sandbox.clone().unwrap_or_default();
    if let Some(k) = kind {
        if k != section.kind {
            section = SandboxToml { kind: k, require: section.require.clone(), ..Default::default() };
            if k == Kind::Remote {
                return Err(CliError::usage("usage_error", "--kind remote needs [sandbox] url in flujo.toml"));
            }
        }
    }
    let sandbox = open(&section)?;
    let sandbox = match section.kind {
        Kind::Remote => {
            // ask the service what it enforces
            let mut s = flujo_sandbox::remote::RemoteSettings::new(section.url.clone().unwrap_or_default());
            if let Some(var) = &section.api_key_env {
                s.api_key = std::env::var(var).ok();
            }
            let client = flujo_sandbox::remote::RemoteSandbox::new(s).map_err(|e| CliError::config(e.to_string()))?;
            match client.connect().await {
                Ok(c) => Arc::new(c) as Arc<dyn Sandbox>,
                Err(e) => {
                    crate::errln!("note: {e}; showing what each request requires instead");
                    sandbox
                }
            }
        }
        _ => sandbox,
    };
    let require = section.require().map_err(CliError::config)?;
    let status = sandbox.protections();
    let off = section.kind == Kind::None;
    let refused: Vec<&str> = status
        .iter()
        .filter(|p| {
            !p.active
                && require.contains(&p.protection)
                && !(p.protection == Protection::Network && section.network == Some(true))
        })
        .map(|p| p.protection.name())
        .collect();
    let ready = !off && refused.is_empty();
    if json {
        let list: Vec<_> = status
            .iter()
            .map(|p| {
                json!({"protection": p.protection.name(), "active": p.active, "required": require.contains(&p.protection),
                       "how": p.how, "meaning": p.protection.meaning()})
            })
            .collect();
        crate::outln!(
            "{}",
            json!({"kind": section.kind.name(), "sandbox": sandbox.describe(), "languages": sandbox.languages(),
                   "ready": ready, "refuses": refused, "protections": list, "limits": section.limits()})
        );
    } else {
        crate::outln!("sandbox: {}", sandbox.describe());
        if !off {
            crate::outln!("languages: {}", sandbox.languages().join(", "));
        }
        for p in &status {
            let mark = if p.active { "yes" } else { "no " };
            let req = if require.contains(&p.protection) { "required" } else { "optional" };
            crate::outln!("  {:<11} {mark}  {req:<8}  {}", p.protection.name(), p.how);
        }
        if off {
            crate::outln!(
                "code_interpreter refuses to run code (kind = \"none\"); try `flujo dev sandbox-check --kind process`"
            );
        } else if ready {
            crate::outln!("ready: every required protection is enforced here");
        } else {
            crate::outln!(
                "refuses to run code: required but unavailable here: {} (enable them, or leave them out of [sandbox] require)",
                refused.join(", ")
            );
        }
    }
    Ok(if ready { EXIT_OK } else { EXIT_FAILED })
}
