//! The `docker` sandbox (feature `docker`): a fresh container per execution, through the Docker Engine API
//! (bollard). The container has no network (`NetworkMode: none`), a memory limit (swap included), a pids
//! limit, CPU-time, file-size and core ulimits, runs as `nobody` (65534:65534) with every capability dropped
//! and `no-new-privileges`, and nothing of the host mounted. The code and input files are copied in as a tar
//! archive (`PUT /containers/{id}/archive`) before it starts; the artifacts are read back the same way
//! (`GET /containers/{id}/archive?path=/sandbox/work`); the container is killed at the timeout and always
//! removed (`DELETE /containers/{id}?force=true`), also when the call is cancelled.
//!
//! The engine reports limits it cannot apply as warnings when the container is created (a kernel without the
//! memory or pids cgroup); such a warning refuses the execution, naming the protection, rather than running
//! the code without it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use flujo_core::{ExecRequest, ExecResult, Protection, ProtectionStatus, Sandbox, SandboxError, SandboxFile};
use futures::StreamExt;

/// Where the code, its folder (`work`) and its temporary folder (`tmp`) are inside the container.
const ROOT: &str = "/sandbox";
/// The user the code runs as (`nobody`).
const USER: &str = "65534:65534";

/// Settings of a [`DockerSandbox`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DockerSettings {
    /// The image of languages without one in `images` (default `python:3.12-slim`).
    pub image: String,
    /// Images per language (`node` → `node:22-slim`).
    pub images: BTreeMap<String, String>,
    /// Language → program and leading arguments inside the image (the code's file is appended).
    pub interpreters: BTreeMap<String, Vec<String>>,
    /// The Engine API: `unix:///var/run/docker.sock`, `http://HOST:PORT` or `tcp://HOST:PORT`; `None`: the
    /// local socket.
    pub host: Option<String>,
    /// Protections an execution requires (default all).
    pub require: BTreeSet<Protection>,
    /// Protections to treat as unavailable (see the process sandbox's setting of the same name).
    pub unavailable: BTreeSet<Protection>,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            image: "python:3.12-slim".into(),
            images: BTreeMap::new(),
            interpreters: crate::default_interpreters(),
            host: None,
            require: Protection::ALL.into_iter().collect(),
            unavailable: BTreeSet::new(),
        }
    }
}

/// Runs code in a fresh Docker container per execution.
#[derive(Debug)]
pub struct DockerSandbox {
    settings: DockerSettings,
    /// The client, or why none could be made (no local socket): then every execution fails, retryably.
    docker: Result<Docker, String>,
}

fn engine_error(what: &str, e: bollard::errors::Error) -> SandboxError {
    let retryable = match &e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => *status_code >= 500,
        _ => true, // the engine could not be reached
    };
    SandboxError::backend(format!("docker: {what}: {e}"), retryable)
}

impl DockerSandbox {
    /// A sandbox talking to the engine in `settings` (no request is made yet).
    pub fn new(settings: DockerSettings) -> Result<Self, SandboxError> {
        let unreachable = |e: bollard::errors::Error| format!("docker: the engine cannot be reached: {e}");
        let docker = match settings.host.as_deref() {
            None => Docker::connect_with_local_defaults().map_err(unreachable),
            Some(h) if h.starts_with("unix://") => {
                Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION).map_err(unreachable)
            }
            Some(h) if h.starts_with("http://") || h.starts_with("tcp://") => {
                Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION).map_err(unreachable)
            }
            Some(h) => {
                return Err(SandboxError::InvalidRequest(format!(
                    "docker host {h:?}: expected unix://PATH, http://HOST:PORT or tcp://HOST:PORT"
                )))
            }
        };
        Ok(DockerSandbox { settings, docker })
    }

    fn how(p: Protection) -> &'static str {
        match p {
            Protection::Folder => "a fresh container per execution, removed afterwards",
            Protection::Timeout => "the container is killed at the wall-clock limit",
            Protection::Cleanup => "removing the container ends every process in it",
            Protection::Cpu => "ulimit cpu",
            Protection::Memory => "container memory limit (swap included)",
            Protection::FileSize => "ulimit fsize",
            Protection::Processes => "container pids limit",
            Protection::Network => "NetworkMode none",
            Protection::Filesystem => "the container's own filesystem, nothing of the host mounted",
            Protection::Privileges => "user nobody, every capability dropped, no-new-privileges",
            _ => "unknown",
        }
    }
}

/// A tar archive of `sandbox/` (code, `work/` with the input files, `tmp/`), writable by the code's user.
fn input_archive(code_name: &str, code: &str, files: &[SandboxFile]) -> Result<Vec<u8>, SandboxError> {
    let fail = |e: std::io::Error| SandboxError::backend(format!("docker: building the archive: {e}"), false);
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = BTreeSet::from(["sandbox".to_owned(), "sandbox/work".to_owned(), "sandbox/tmp".to_owned()]);
    for f in files {
        let mut parent = std::path::Path::new(&f.path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(format!("sandbox/work/{}", p.display()));
            parent = p.parent();
        }
    }
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(65534);
        h.set_gid(65534);
        h.set_mtime(0);
        h
    };
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0, 0o777);
        b.append_data(&mut h, format!("{d}/"), std::io::empty()).map_err(fail)?;
    }
    let mut h = header(tar::EntryType::Regular, code.len() as u64, 0o644);
    b.append_data(&mut h, format!("sandbox/{code_name}"), code.as_bytes()).map_err(fail)?;
    for f in files {
        let mut h = header(tar::EntryType::Regular, f.bytes.len() as u64, 0o666);
        b.append_data(&mut h, format!("sandbox/work/{}", f.path), f.bytes.as_slice()).map_err(fail)?;
    }
    b.into_inner().map_err(fail)
}

/// The regular files of the archive of `/sandbox/work` (entries `work/…`) that are new or changed, bounded
/// like the process sandbox's.
fn artifacts_of(
    archive: &[u8],
    inputs: &BTreeMap<String, blake3::Hash>,
    budget: u64,
) -> (Vec<SandboxFile>, Vec<String>) {
    use std::io::Read;
    let mut artifacts = Vec::new();
    let mut omitted = Vec::new();
    let mut left = budget;
    let mut tar = tar::Archive::new(archive);
    let Ok(entries) = tar.entries() else { return (artifacts, omitted) };
    for entry in entries.flatten().take(100_000) {
        let Ok(path) = entry.path().map(|p| p.to_string_lossy().into_owned()) else { continue };
        let Some(rel) = path.strip_prefix("work/").map(|r| r.trim_end_matches('/').to_owned()) else { continue };
        if rel.is_empty() || entry.header().entry_type().is_dir() {
            continue;
        }
        if flujo_core::sandbox::check_relative_path(&rel).is_err() || !entry.header().entry_type().is_file() {
            omitted.push(rel);
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > left || artifacts.len() >= flujo_core::sandbox::MAX_ARTIFACTS {
            omitted.push(rel);
            continue;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        if entry.take(size).read_to_end(&mut bytes).is_err() {
            omitted.push(rel);
            continue;
        }
        if inputs.get(&rel) == Some(&blake3::hash(&bytes)) {
            continue;
        }
        left -= bytes.len() as u64;
        artifacts.push(SandboxFile::new(rel, bytes));
    }
    artifacts.sort_by(|a, b| a.path.cmp(&b.path));
    (artifacts, omitted)
}

/// Removes the container when dropped (also when the execution's future is dropped).
struct Container {
    docker: Docker,
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = docker.remove_container(&id, Some(opts)).await;
            });
        }
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    async fn exec(&self, request: ExecRequest) -> Result<ExecResult, SandboxError> {
        request.check()?;
        for p in &self.settings.require {
            if self.settings.unavailable.contains(p) && !(*p == Protection::Network && request.limits.network) {
                return Err(SandboxError::Unavailable {
                    protection: *p,
                    reason: "marked unavailable by configuration".into(),
                });
            }
        }
        let docker = self.docker.as_ref().map_err(|e| SandboxError::backend(e.clone(), true))?;
        let Some(argv) = self.settings.interpreters.get(&request.language) else {
            return Err(SandboxError::UnsupportedLanguage {
                language: request.language.clone(),
                available: self.languages(),
            });
        };
        let started = Instant::now();
        let limits = request.limits.clone();
        let image = self.settings.images.get(&request.language).unwrap_or(&self.settings.image).clone();
        let ext = match request.language.as_str() {
            "python" | "python3" => ".py",
            "node" | "javascript" => ".js",
            "bash" | "sh" => ".sh",
            _ => "",
        };
        let code_name = format!("code{ext}");
        let mut cmd = argv.clone();
        cmd.push(format!("{ROOT}/{code_name}"));
        let mut env: Vec<String> =
            vec![format!("HOME={ROOT}/work"), format!("TMPDIR={ROOT}/tmp"), "LANG=C.UTF-8".into()];
        env.extend(request.env.iter().map(|(k, v)| format!("{k}={v}")));
        let cpu = i64::try_from(crate::cpu_rlimit(&limits)).unwrap_or(i64::MAX);
        let ulimit = |name: &str, v: i64| ResourcesUlimits { name: Some(name.into()), soft: Some(v), hard: Some(v) };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let host_config = HostConfig {
            network_mode: Some(if limits.network { "bridge" } else { "none" }.into()),
            memory: Some(clamp(limits.memory_bytes)),
            memory_swap: Some(clamp(limits.memory_bytes)),
            pids_limit: Some(clamp(limits.processes)),
            ulimits: Some(vec![ulimit("cpu", cpu), ulimit("fsize", clamp(limits.file_bytes)), ulimit("core", 0)]),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(cmd),
            working_dir: Some(format!("{ROOT}/work")),
            env: Some(env),
            user: Some(USER.into()),
            network_disabled: Some(!limits.network),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!(
            "flujo-sandbox-{}",
            &blake3::hash(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes()).to_hex()[..16]
        );
        let created = docker
            .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
            .await
            .map_err(|e| engine_error(&format!("creating a container of {image}"), e))?;
        let container = Container { docker: docker.clone(), id: created.id.clone() };
        for w in &created.warnings {
            let lower = w.to_lowercase();
            let hit = [
                ("memory", Protection::Memory),
                ("swap", Protection::Memory),
                ("pids", Protection::Processes),
                ("ulimit", Protection::Cpu),
                ("network", Protection::Network),
            ]
            .into_iter()
            .find(|(word, _)| lower.contains(word));
            if let Some((_, p)) = hit.filter(|(_, p)| self.settings.require.contains(p)) {
                return Err(SandboxError::Unavailable {
                    protection: p,
                    reason: format!("the Docker engine warns: {w}"),
                });
            }
        }
        let id = container.id.clone();
        let archive = input_archive(&code_name, &request.code, &request.files)?;
        let inputs: BTreeMap<String, blake3::Hash> =
            request.files.iter().map(|f| (f.path.clone(), blake3::hash(&f.bytes))).collect();
        docker
            .upload_to_container(
                &id,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(|e| engine_error("copying the code in", e))?;
        docker.start_container(&id, None).await.map_err(|e| engine_error("starting the container", e))?;
        let wall = flujo_core::limits::duration_from_secs(limits.wall_s).unwrap_or(Duration::from_secs(30));
        let waited = tokio::time::timeout(wall, async {
            let mut wait = docker.wait_container(&id, None);
            wait.next().await
        })
        .await;
        let (exit_code, timed_out) = match waited {
            Ok(Some(Ok(r))) => (i32::try_from(r.status_code).unwrap_or(-1), false),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                (i32::try_from(code).unwrap_or(-1), false)
            }
            Ok(Some(Err(e))) => return Err(engine_error("waiting for the container", e)),
            Ok(None) => return Err(SandboxError::backend("docker: the wait ended without a status", true)),
            Err(_) => {
                let opts = KillContainerOptionsBuilder::default().signal("KILL").build();
                let _ = docker.kill_container(&id, Some(opts)).await;
                (128 + 9, true)
            }
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (mut stdout_cut, mut stderr_cut) = (false, false);
        let mut logs = docker.logs(&id, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).build()));
        let keep = |buf: &mut Vec<u8>, cut: &mut bool, bytes: &[u8]| {
            let room = (limits.output_bytes as usize).saturating_sub(buf.len());
            if bytes.len() > room {
                *cut = true;
            }
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        };
        while let Some(item) = logs.next().await {
            match item.map_err(|e| engine_error("reading the output", e))? {
                bollard::container::LogOutput::StdOut { message } => keep(&mut stdout, &mut stdout_cut, &message),
                bollard::container::LogOutput::StdErr { message } => keep(&mut stderr, &mut stderr_cut, &message),
                _ => {}
            }
        }
        let mut tarball = Vec::new();
        let opts = DownloadFromContainerOptionsBuilder::default().path(&format!("{ROOT}/work")).build();
        let mut download = docker.download_from_container(&id, Some(opts));
        let cap = limits.artifact_bytes.saturating_mul(2).saturating_add(16 << 20);
        let mut artifacts_complete = true;
        while let Some(chunk) = download.next().await {
            let chunk = chunk.map_err(|e| engine_error("reading the artifacts", e))?;
            if (tarball.len() + chunk.len()) as u64 > cap {
                artifacts_complete = false;
                break;
            }
            tarball.extend_from_slice(&chunk);
        }
        let (artifacts, mut artifacts_omitted) = artifacts_of(&tarball, &inputs, limits.artifact_bytes);
        if !artifacts_complete {
            artifacts_omitted.push("(the folder's archive was larger than the artifact limit allows)".into());
        }
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = docker.remove_container(&id, Some(opts)).await;
        drop(container);
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

    fn describe(&self) -> String {
        format!("docker {} ({})", self.settings.host.as_deref().unwrap_or("local socket"), self.settings.image)
    }

    fn protections(&self) -> Vec<ProtectionStatus> {
        Protection::ALL
            .into_iter()
            .map(|p| {
                if self.settings.unavailable.contains(&p) {
                    ProtectionStatus::new(p, false, "marked unavailable by configuration")
                } else {
                    ProtectionStatus::new(
                        p,
                        true,
                        format!("{} (the engine's warnings at container creation refuse the run)", Self::how(p)),
                    )
                }
            })
            .collect()
    }

    fn languages(&self) -> Vec<String> {
        self.settings.interpreters.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_archive_holds_code_and_files_for_nobody() {
        let tar = input_archive("code.py", "print(1)", &[SandboxFile::new("d/in.txt", b"x".to_vec())]).unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let names: Vec<(String, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().uid().unwrap())
            })
            .collect();
        let paths: Vec<&str> = names.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sandbox/",
                "sandbox/tmp/",
                "sandbox/work/",
                "sandbox/work/d/",
                "sandbox/code.py",
                "sandbox/work/d/in.txt"
            ]
        );
        assert!(names.iter().all(|(_, uid)| *uid == 65534));
    }
}
