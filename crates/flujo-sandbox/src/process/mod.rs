//! The `process` sandbox: the code runs as a child process of flujo, in a fresh temporary folder, fenced in by
//! what the kernel offers (Linux only; elsewhere every execution is refused). See `docs/sandbox.md` for the
//! protections table and `linux.rs` for the child's setup.
//!
//! What it enforces is probed once per process ([`ProcessSandbox::protections`]). The configuration names the
//! protections it requires (by default all of them); an execution is refused with
//! [`SandboxError::Unavailable`] when one of them cannot be enforced here — it is never run with less.
//! Protections that are not required but are available are applied all the same.

#[cfg(target_os = "linux")]
mod linux;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flujo_core::{ExecRequest, ExecResult, Protection, ProtectionStatus, Sandbox, SandboxError};

/// How long the code's processes get to vanish after the keeper was asked to kill them, before the whole
/// group is killed outright.
#[cfg(target_os = "linux")]
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long output is still read after the code exited (something it left behind may hold the pipes).
#[cfg(target_os = "linux")]
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The interpreters known by default: language → program and leading arguments (the code's file is
/// appended). A language whose program is not found is not offered.
pub fn default_interpreters() -> BTreeMap<String, Vec<String>> {
    [
        ("python", vec!["python3", "-B"]),
        ("python3", vec!["python3", "-B"]),
        ("bash", vec!["bash"]),
        ("sh", vec!["sh"]),
        ("node", vec!["node"]),
        ("javascript", vec!["node"]),
    ]
    .into_iter()
    .map(|(l, argv)| (l.to_owned(), argv.into_iter().map(str::to_owned).collect()))
    .collect()
}

/// The `PATH` the code sees (and interpreters are looked up in) by default.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Settings of a [`ProcessSandbox`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessSettings {
    /// Language → program and leading arguments; the program is looked up in `path` unless absolute.
    pub interpreters: BTreeMap<String, Vec<String>>,
    /// The protections an execution requires; one that is unavailable refuses the execution. Default: all.
    pub require: BTreeSet<Protection>,
    /// `PATH` of the code.
    pub path: String,
    /// Where temporary folders are made (default: the system's temporary folder).
    pub temp_dir: Option<PathBuf>,
    /// Protections to treat as unavailable even when the kernel offers them (to see what a machine without
    /// them would do; the refusal tests use it). Never makes the sandbox weaker: it only refuses more.
    pub unavailable: BTreeSet<Protection>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            interpreters: default_interpreters(),
            require: Protection::ALL.into_iter().collect(),
            path: DEFAULT_PATH.to_owned(),
            temp_dir: None,
            unavailable: BTreeSet::new(),
        }
    }
}

/// Runs code as a child process, fenced in by namespaces, resource limits and Landlock (Linux).
#[derive(Debug)]
pub struct ProcessSandbox {
    settings: ProcessSettings,
    /// Language → resolved program path and arguments.
    languages: BTreeMap<String, (PathBuf, Vec<String>)>,
    /// Each protection: how it is enforced, or why it cannot be.
    status: BTreeMap<Protection, Result<String, String>>,
    #[cfg(target_os = "linux")]
    seq: std::sync::atomic::AtomicU32,
}

fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.is_absolute() {
        return is_executable(p).then(|| p.to_path_buf());
    }
    if program.contains('/') {
        return None;
    }
    path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(program)).find(|c| is_executable(c))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // executable by everyone: the code may run under a uid of its own
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o001 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

fn extension(language: &str) -> &'static str {
    match language {
        "python" | "python3" => ".py",
        "node" | "javascript" => ".js",
        "bash" | "sh" => ".sh",
        _ => "",
    }
}

impl ProcessSandbox {
    /// A sandbox with `settings`; probes the kernel on first use in this process (a few short-lived child
    /// processes, a few milliseconds).
    pub fn new(settings: ProcessSettings) -> Self {
        let languages = settings
            .interpreters
            .iter()
            .filter_map(|(lang, argv)| {
                let (program, args) = argv.split_first()?;
                Some((lang.clone(), (find_program(program, &settings.path)?, args.to_vec())))
            })
            .collect();
        let status = Protection::ALL
            .into_iter()
            .map(|p| {
                let s = if settings.unavailable.contains(&p) {
                    Err("marked unavailable by configuration (FLUJO_SANDBOX_UNAVAILABLE or `unavailable`)".to_owned())
                } else {
                    probe_status(p)
                };
                (p, s)
            })
            .collect();
        ProcessSandbox {
            settings,
            languages,
            status,
            #[cfg(target_os = "linux")]
            seq: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn available(&self, p: Protection) -> bool {
        self.status.get(&p).is_some_and(Result::is_ok)
    }
}

#[cfg(target_os = "linux")]
fn probe_status(p: Protection) -> Result<String, String> {
    linux::Probe::get().status(p)
}

#[cfg(not(target_os = "linux"))]
fn probe_status(_p: Protection) -> Result<String, String> {
    Err("the process sandbox runs on Linux only; use kind \"docker\" or \"remote\" here".to_owned())
}

#[async_trait]
impl Sandbox for ProcessSandbox {
    async fn exec(&self, request: ExecRequest) -> Result<ExecResult, SandboxError> {
        request.check()?;
        for p in &self.settings.require {
            if *p == Protection::Network && request.limits.network {
                continue; // the request allows network access
            }
            if let Some(Err(reason)) = self.status.get(p) {
                return Err(SandboxError::Unavailable { protection: *p, reason: reason.clone() });
            }
        }
        let Some((program, args)) = self.languages.get(&request.language) else {
            return Err(SandboxError::UnsupportedLanguage {
                language: request.language.clone(),
                available: self.languages(),
            });
        };
        self.run(program, args, request).await
    }

    fn describe(&self) -> String {
        format!("process ({})", std::env::consts::OS)
    }

    fn protections(&self) -> Vec<ProtectionStatus> {
        self.status
            .iter()
            .map(|(p, s)| match s {
                Ok(how) => ProtectionStatus::new(*p, true, how.clone()),
                Err(why) => ProtectionStatus::new(*p, false, why.clone()),
            })
            .collect()
    }

    fn languages(&self) -> Vec<String> {
        self.languages.keys().cloned().collect()
    }
}

#[cfg(not(target_os = "linux"))]
impl ProcessSandbox {
    async fn run(&self, _program: &Path, _args: &[String], _request: ExecRequest) -> Result<ExecResult, SandboxError> {
        Err(SandboxError::Unavailable {
            protection: Protection::Cleanup,
            reason: "the process sandbox runs on Linux only".into(),
        })
    }
}

/// Reads `stream` to its end, keeping at most `limit` bytes (the rest is read and dropped, so the writer never
/// blocks); returns the kept bytes and whether some were dropped.
#[cfg(target_os = "linux")]
async fn read_bounded(stream: Option<impl tokio::io::AsyncRead + Unpin>, limit: u64) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let Some(mut stream) = stream else { return (Vec::new(), false) };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = (limit as usize).saturating_sub(kept.len());
                if n > room {
                    cut = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, cut)
}

/// Kills the code's process group when dropped (the execution ended, or its future was dropped).
#[cfg(target_os = "linux")]
struct GroupGuard(Option<u32>);

#[cfg(target_os = "linux")]
impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            linux::kill_group(pgid);
        }
    }
}

#[cfg(target_os = "linux")]
impl ProcessSandbox {
    async fn run(&self, program: &Path, args: &[String], mut request: ExecRequest) -> Result<ExecResult, SandboxError> {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let limits = request.limits.clone();
        let probe = linux::Probe::get();
        let fail = |what: &str, e: &dyn std::fmt::Display| SandboxError::backend(format!("{what}: {e}"), false);

        let drop_to = (probe.root && self.available(Protection::Privileges))
            .then(|| linux::sandbox_ids(self.seq.fetch_add(1, Ordering::Relaxed)));
        // The folder: ROOT/{work,tmp} and the code file ROOT/code.EXT, private to the code's uid (file system
        // work, so on a blocking thread).
        let (root, inputs, code_file) = {
            let temp_dir = self.settings.temp_dir.clone();
            let code_name = format!("code{}", extension(&request.language));
            let code = std::mem::take(&mut request.code);
            let files = std::mem::take(&mut request.files);
            tokio::task::spawn_blocking(move || -> Result<_, SandboxError> {
                let fail = |what: &str, e: &dyn std::fmt::Display| SandboxError::backend(format!("{what}: {e}"), false);
                let mut builder = tempfile::Builder::new();
                builder.prefix("flujo-sandbox-");
                let root = match &temp_dir {
                    Some(d) => builder.tempdir_in(d),
                    None => builder.tempdir(),
                }
                .map_err(|e| fail("cannot make the sandbox folder", &e))?;
                for d in ["work", "tmp"] {
                    std::fs::create_dir(root.path().join(d)).map_err(|e| fail("cannot make the sandbox folder", &e))?;
                }
                let code_file = root.path().join(code_name);
                std::fs::write(&code_file, code.as_bytes()).map_err(|e| fail("cannot write the code", &e))?;
                let inputs = crate::folder::write_inputs(&root.path().join("work"), &files)?;
                if let Some((uid, gid)) = drop_to {
                    chown_tree(root.path(), uid, gid)
                        .map_err(|e| fail("cannot hand the sandbox folder to its uid", &e))?;
                }
                Ok((root, inputs, code_file))
            })
            .await
            .map_err(|e| fail("preparing the sandbox folder failed", &e))??
        };
        let work = root.path().join("work");
        let tmp = root.path().join("tmp");

        let cpu = crate::cpu_rlimit(&limits);
        let mut rlimits = vec![
            (linux::rlimit_cpu(), cpu, cpu),
            (linux::rlimit_as(), limits.memory_bytes, limits.memory_bytes),
            (linux::rlimit_fsize(), limits.file_bytes, limits.file_bytes),
            (linux::rlimit_core(), 0, 0),
        ];
        if self.available(Protection::Processes) {
            rlimits.push((linux::rlimit_nproc(), limits.processes, limits.processes));
        }
        let no_network = !limits.network;
        let landlock = match &probe.landlock {
            Ok(abi) if self.available(Protection::Filesystem) => {
                Some(linux::ruleset(*abi, &[&work, &tmp], no_network).map_err(|e| fail("Landlock", &e))?)
            }
            _ => None,
        };
        let pid_ns = self.available(Protection::Cleanup);
        let net_ns = no_network && self.available(Protection::Network);
        let plan =
            linux::ChildPlan { user_ns: !probe.root && (pid_ns || net_ns), net_ns, pid_ns, drop_to, rlimits, landlock };

        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .arg(&code_file)
            .current_dir(&work)
            .env_clear()
            .env("PATH", &self.settings.path)
            .env("HOME", &work)
            .env("TMPDIR", &tmp)
            .env("LANG", "C.UTF-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let keep_fd = plan.apply(&mut cmd);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let spawned = cmd.spawn();
        drop(keep_fd);
        let mut child = spawned.map_err(|e| fail(&format!("cannot start {} in the sandbox", program.display()), &e))?;
        let pid = child.id();
        let mut guard = GroupGuard(pid);
        let out = tokio::spawn(read_bounded(child.stdout.take(), limits.output_bytes));
        let err = tokio::spawn(read_bounded(child.stderr.take(), limits.output_bytes));

        let wall = flujo_core::limits::duration_from_secs(limits.wall_s).unwrap_or(Duration::from_secs(30));
        let (status, timed_out) = match tokio::time::timeout(wall, child.wait()).await {
            Ok(status) => (status, false),
            Err(_) => {
                match (pid, pid_ns) {
                    // The keeper kills PID 1 of the namespace and exits once every process in it is gone.
                    (Some(pid), true) => {
                        linux::stop_keeper(pid);
                        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                            if let Some(pgid) = guard.0.take() {
                                linux::kill_group(pgid);
                            }
                        }
                    }
                    (Some(pid), false) => linux::kill_group(pid),
                    (None, _) => {}
                }
                (child.wait().await, true)
            }
        };
        // Whatever is left in the group goes now (without a PID namespace, what the code left behind).
        if let Some(pgid) = guard.0.take() {
            linux::kill_group(pgid);
        }
        let status = status.map_err(|e| fail("waiting for the code failed", &e))?;
        let drained = async {
            let o = out.await.unwrap_or_default();
            let e = err.await.unwrap_or_default();
            (o, e)
        };
        let ((stdout, stdout_cut), (stderr, stderr_cut)) =
            tokio::time::timeout(DRAIN_GRACE, drained).await.unwrap_or_default();

        let exit_code = {
            use std::os::unix::process::ExitStatusExt;
            status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
        };
        let (artifacts, artifacts_omitted) = {
            let work = work.clone();
            let budget = limits.artifact_bytes;
            tokio::task::spawn_blocking(move || crate::folder::collect(&work, &inputs, budget))
                .await
                .map_err(|e| fail("reading the artifacts failed", &e))?
        };
        let root_path = root.path().to_path_buf();
        let _ = tokio::task::spawn_blocking(move || {
            crate::folder::make_removable(&root_path, 0);
            drop(root);
        })
        .await;
        let mut result = ExecResult::default();
        result.stdout = String::from_utf8_lossy(&stdout).into_owned();
        result.stderr = String::from_utf8_lossy(&stderr).into_owned();
        result.exit_code = exit_code;
        result.timed_out = timed_out;
        result.artifacts = artifacts;
        result.stdout_truncated = stdout_cut;
        result.stderr_truncated = stderr_cut;
        result.artifacts_omitted = artifacts_omitted;
        result.duration_ms = started.elapsed().as_millis() as u64;
        Ok(result)
    }
}

/// Gives `dir` and everything in it to `uid`:`gid`, private to them (mode 0700 for folders).
#[cfg(target_os = "linux")]
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for e in std::fs::read_dir(dir)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}
