//! A stdio MCP server's process: started in its own process group, its stderr read into a bounded tail (for
//! error messages, secrets redacted), its exit status kept, and the whole group killed when it is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

use crate::config::{redact, McpServerConfig};
use crate::error::McpError;
use crate::manager::{lock, unavailable};

/// How much of a server's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;
/// How much of it an error message shows.
const STDERR_EXCERPT_CHARS: usize = 1200;

/// A stdio server's process: its own process group, its stderr kept in a bounded tail.
pub(crate) struct ServerProcess {
    child: tokio::sync::Mutex<tokio::process::Child>,
    pub(crate) group: Option<i32>,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    stderr_done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    exited: Mutex<Option<std::process::ExitStatus>>,
}

pub(crate) type Spawned = (ServerProcess, tokio::process::ChildStdout, tokio::process::ChildStdin);

impl ServerProcess {
    pub(crate) fn spawn(
        config: &McpServerConfig,
        command: &[String],
        env: &[(String, String)],
        cwd: Option<&std::path::Path>,
        secrets: &[String],
    ) -> Result<Spawned, McpError> {
        let Some((program, args)) = command.split_first() else {
            return Err(McpError::Config { server: config.name.clone(), message: "`command` is empty".into() });
        };
        // A program given with a path is relative to the server's folder, whatever the platform does.
        let path = std::path::Path::new(program);
        let program_path = match cwd {
            Some(dir) if path.is_relative() && path.components().count() > 1 => dir.join(path),
            _ => path.to_path_buf(),
        };
        let mut cmd = tokio::process::Command::new(&program_path);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        // Its own process group, so that whatever it starts is killed with it.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => match cwd {
                    Some(dir) if !dir.is_dir() => format!("its folder {} does not exist", dir.display()),
                    _ => format!("`{program}` was not found"),
                },
                std::io::ErrorKind::PermissionDenied => format!("`{program}` cannot be executed (permission denied)"),
                _ => format!("`{program}` cannot be started: {e}"),
            };
            unavailable(config, redact(&why, secrets), String::new())
        })?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        let (Some(stdout), Some(stdin), Some(stderr)) = (child.stdout.take(), child.stdin.take(), child.stderr.take())
        else {
            return Err(unavailable(config, "its standard streams could not be opened".into(), String::new()));
        };
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(1024)));
        let reader = {
            let tail = tail.clone();
            let name = config.name.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    tracing::debug!(server = %name, "mcp server stderr: {}", String::from_utf8_lossy(&line));
                    let mut t = lock(&tail);
                    t.extend(line.iter().copied().chain(std::iter::once(b'\n')));
                    let excess = t.len().saturating_sub(STDERR_TAIL_BYTES);
                    t.drain(..excess);
                }
            })
        };
        let process = ServerProcess {
            child: tokio::sync::Mutex::new(child),
            group,
            stderr: tail,
            stderr_done: tokio::sync::Mutex::new(Some(reader)),
            exited: Mutex::new(None),
        };
        Ok((process, stdout, stdin))
    }

    pub(crate) fn running(&self) -> bool {
        if lock(&self.exited).is_some() {
            return false;
        }
        match self.child.try_lock() {
            Ok(mut c) => match c.try_wait() {
                Ok(Some(status)) => {
                    *lock(&self.exited) = Some(status);
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            },
            // Someone is waiting for it: it is being closed or checked.
            Err(_) => true,
        }
    }

    /// The exit status, waiting at most `limit` for the process to end (and reaping it).
    pub(crate) async fn exit_status(&self, limit: Duration) -> Option<std::process::ExitStatus> {
        if let Some(s) = *lock(&self.exited) {
            return Some(s);
        }
        let mut child = self.child.lock().await;
        let status = tokio::time::timeout(limit, child.wait()).await.ok()?.ok()?;
        *lock(&self.exited) = Some(status);
        Some(status)
    }

    /// The end of the server's stderr (after its stderr closed, or half a second), secrets redacted.
    pub(crate) async fn stderr_excerpt(&self, secrets: &[String]) -> String {
        if let Some(reader) = self.stderr_done.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
        }
        let bytes: Vec<u8> = lock(&self.stderr).iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let text = redact(text.trim(), secrets);
        let n = text.chars().count();
        if n <= STDERR_EXCERPT_CHARS {
            return text;
        }
        let tail: String = text.chars().skip(n - STDERR_EXCERPT_CHARS).collect();
        format!("…{tail}")
    }

    pub(crate) fn kill(&self) {
        if let Some(g) = self.group {
            kill_group(g);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The child itself is killed by `kill_on_drop` (and reaped by Tokio); this ends whatever it started.
        if lock(&self.exited).is_none() {
            self.kill();
        }
    }
}

pub(crate) fn kill_group(group: i32) {
    #[cfg(unix)]
    if let Some(pid) = rustix::process::Pid::from_raw(group) {
        // ESRCH (the group is gone) is the usual, harmless answer once everything has exited.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    #[cfg(not(unix))]
    let _ = group;
}

/// Waits (polling) at most `limit` for the exited child `pid` and reaps it.
pub(crate) fn reap(pid: i32, limit: Duration) {
    #[cfg(unix)]
    {
        let Some(pid) = rustix::process::Pid::from_raw(pid) else { return };
        let start = Instant::now();
        while start.elapsed() < limit {
            match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
                // Not exited yet.
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                // Reaped, or not ours to reap (already reaped by Tokio).
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (pid, limit);
}
