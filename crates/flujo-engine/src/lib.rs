//! Flujo engine: the durable executor.
//!
//! A [`Flujo`] runner is built from a [`flujo_core::Pipeline`] with [`Flujo::builder`]; `run` walks the step tree,
//! journaling one record per finished step execution to the store; `resume` walks it again, replaying
//! committed records (no completed step runs twice) and continuing live from the first unfinished step.
//!
//! ```
//! use flujo_core::{Pipeline, Step};
//! use flujo_engine::Flujo;
//! use serde_json::json;
//!
//! let pipeline = Pipeline::new("demo", vec![
//!     Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"})),
//!     Step::skill("twice", "flujo.builtins.transform", json!({"expr": "previous_step * 2"})),
//! ]);
//! let flujo = Flujo::builder(pipeline).build().unwrap();
//! let result = flujo.run_blocking(json!(1)).unwrap();
//! assert_eq!(result.output, Some(json!(4)));
//! ```
//!
//! [`TaskClient`] is the API for apps and tools over a store: inspect, resume, replay, verify and prune runs
//! without the pipeline file.

#![deny(missing_docs)]

pub mod cache;
pub mod client;
pub mod executor;
pub mod governance;
pub mod memory;
pub mod merge;
pub mod ownership;
pub mod policies;
pub mod policy;
pub mod prepare;
pub mod runner;
pub mod schedule;
pub mod shadow;

pub use client::{journal_usage, ClientError, ReplayReport, RunView, TaskClient, VerifyReport};
pub use executor::{ExecutorCore, Lexical, RunState, SeqOutcome};
pub use policy::{ExecutionDispatcher, ExecutionFrame, PolicyOutcome, StepPolicy};
pub use runner::{
    pipeline_from_definition, BlockingFlujo, BlockingRunHandle, Flujo, FlujoRuntimeBuilder, ResumeRequest, RunHandle,
    RunOptions, UuidIds,
};
