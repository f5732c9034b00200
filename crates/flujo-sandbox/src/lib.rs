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
