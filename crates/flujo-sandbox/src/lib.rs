//! Flujo sandboxes: where `flujo.builtins.code_interpreter` runs code. Each implements
//! [`flujo_core::Sandbox`]:
//!
//! * [`ProcessSandbox`] (`kind = "process"`, Linux): a child process in a fresh temporary folder, in its own
//!   session, PID and network namespaces, with CPU, memory, file-size and process-count limits, a wall-clock
//!   timeout, Landlock keeping its writes inside its folder, and (as root) an unprivileged uid of its own.
//!   It probes what the kernel allows and refuses to run when a required protection is unavailable.
//! * [`remote::RemoteSandbox`] (`kind = "remote"`, feature `remote`): a small documented HTTP JSON API
//!   (`POST /exec`), with [`remote::router`] serving it over any sandbox (feature `remote-server`).
//! * `docker::DockerSandbox` (`kind = "docker"`, feature `docker`): a container per execution through the
//!   Docker Engine API, with no network, memory and pids limits.
//!
//! ```no_run
//! use flujo_core::{ExecRequest, Sandbox};
//! use flujo_sandbox::{ProcessSandbox, ProcessSettings};
//! # async fn demo() -> Result<(), flujo_core::SandboxError> {
//! let sandbox = ProcessSandbox::new(ProcessSettings::default());
//! let result = sandbox.exec(ExecRequest::new("python", "print(6 * 7)")).await?;
//! assert_eq!(result.stdout, "42\n");
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod folder;
mod process;

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(any(feature = "remote", feature = "remote-server"))]
pub mod remote;

pub use process::{default_interpreters, ProcessSandbox, ProcessSettings, DEFAULT_PATH};

/// The CPU-time limit (whole seconds, as `RLIMIT_CPU` counts) for `limits`. A CPU limit below the wall-clock
/// limit is enforced as given (rounded up); one that is not lower gets a second more than the wall clock, so
/// that a busy program is stopped by the timeout (and reported `timed_out`) rather than racing it.
pub(crate) fn cpu_rlimit(limits: &flujo_core::Limits) -> u64 {
    if limits.cpu_s < limits.wall_s {
        limits.cpu_s.ceil().max(1.0) as u64
    } else {
        limits.wall_s.ceil().max(1.0) as u64 + 1
    }
}
