//! Flujo skills: the [`BuiltinRegistry`] (an implementation of [`flujo_core::SkillRegistry`]) and the
//! built-in skills registered under `flujo.builtins.*` (`passthrough`, `transform`, `context_set`, `sleep`,
//! `fail`, …).
//!
//! Skills are resolved once, when a runner is built: [`SkillRegistry::resolve`] binds a skill's params and
//! compiles its expressions and templates, so every configuration error (unknown id, missing or invalid
//! params, an expression that does not parse) surfaces before the first step runs.
//!
//! ```
//! use flujo_core::SkillRegistry;
//! use flujo_skills::BuiltinRegistry;
//! use serde_json::json;
//!
//! let registry = BuiltinRegistry::new();
//! assert!(registry.resolve("flujo.builtins.transform", &json!({"expr": "previous_step + 1"})).is_ok());
//! assert!(registry.resolve("transform", &json!({})).is_err()); // `expr` is required
//! ```
//!
//! Skills declared in `skills.yaml` need no Rust: [`CommandSkill`] runs a program (JSON on stdin and stdout),
//! `HttpSkill` (default feature `http`) makes one HTTP request from templates, with secrets read from the
//! environment per call, safe retries and bounded responses; [`openapi`] turns an OpenAPI 3.0/3.1 document
//! into http skill entries.
//!
//! User code adds skills with [`BuiltinRegistry::register`] (a factory over params) or
//! [`BuiltinRegistry::register_fn`] (an async closure). [`CountingSkill`] is a test-support skill that counts
//! invocations per step path.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod builtins;
mod code_interpreter;
mod command;
mod counting;
#[cfg(feature = "http")]
mod http;
mod memory;
pub mod openapi;
mod registry;

pub use builtins::{builtin_catalog, builtin_ids, BUILTIN_PREFIX};
pub use code_interpreter::{SandboxBackend, WithSandbox, INLINE_ARTIFACT_BYTES};
pub use command::{CommandSkill, CommandSpec, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_OUTPUT_BYTES};
pub use counting::{CallCounter, CountingSkill};
pub use flujo_core::SkillRegistry;
#[cfg(feature = "http")]
pub use http::{
    parse_retry_after, HttpBody, HttpSkill, HttpSpec, BODY_EXCERPT_CHARS, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S, MAX_RETRIES, MAX_RETRY_AFTER, METHODS,
};
pub use memory::{MemoryBackend, WithMemory};
pub use registry::{BoxFuture, BuiltinRegistry, SideEffects, SkillFactory, Skills};
