//! [`RunnerFactory`]: what the server asks of its host — the pipelines it offers, and runners for new runs
//! and for stored ones (with the host's skills, models, budgets and governance).

use std::sync::Arc;

use flujo_core::RunRecord;
use flujo_engine::Flujo;
use serde::Serialize;
use serde_json::Value;

/// A pipeline the server offers (`GET /api/pipelines`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PipelineInfo {
    /// The pipeline's name (what `POST /api/runs` names).
    pub name: String,
    /// The blueprint file it was loaded from.
    pub file: String,
    /// Number of top-level steps.
    pub steps: usize,
    /// The pipeline's description, if the blueprint has one.
    pub description: Option<String>,
}

/// One pipeline in detail (`GET /api/pipelines/{name}`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PipelineDetail {
    /// The summary.
    #[serde(flatten)]
    pub info: PipelineInfo,
    /// The blueprint's YAML text.
    pub source: String,
    /// The graph as Mermaid text (`flujo dev visualize`).
    pub mermaid: String,
    /// The step tree: `[{name, kind, children: [{label, steps}]}]`.
    #[schema(value_type = Vec<Object>)]
    pub tree: Value,
}

/// A failure of the factory: a stable kind and a message (e.g. `pipeline_not_found`, `config_error`,
/// `pipeline_mismatch`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FactoryError {
    /// Stable kind.
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl FactoryError {
    /// An error of `kind`.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        FactoryError { kind: kind.to_owned(), message: message.into() }
    }
}

/// Builds the runners of the server. Implementations cache what is expensive; the server calls
/// [`RunnerFactory::runner`] for every `POST /api/runs` and [`RunnerFactory::runner_for`] for every run its
/// pool walks.
pub trait RunnerFactory: Send + Sync {
    /// The pipelines offered, by name.
    fn pipelines(&self) -> Vec<PipelineInfo>;
    /// One pipeline in detail; `None` when there is no such pipeline.
    fn pipeline(&self, name: &str) -> Option<PipelineDetail>;
    /// A runner for new runs of the pipeline `name` (`pipeline_not_found` when there is none).
    fn runner(&self, name: &str) -> Result<Arc<Flujo>, FactoryError>;
    /// A runner that can continue the stored run `run` (built from its stored definition).
    fn runner_for(&self, run: &RunRecord) -> Result<Arc<Flujo>, FactoryError>;
    /// Validates a blueprint's text: `{ok, diagnostics: [...]}` as `flujo validate --format json` prints it.
    fn validate(&self, yaml: &str) -> Value;
}

/// [`RunnerFactory::runner`] on a blocking thread: a factory may read blueprint files when its folder
/// changed, which must not happen on an async worker thread.
pub async fn runner_off_thread(factory: &Arc<dyn RunnerFactory>, name: &str) -> Result<Arc<Flujo>, FactoryError> {
    let (factory, name) = (Arc::clone(factory), name.to_owned());
    tokio::task::spawn_blocking(move || factory.runner(&name))
        .await
        .unwrap_or_else(|e| Err(FactoryError::new("internal_error", e.to_string())))
}

/// [`RunnerFactory::runner_for`] on a blocking thread (a factory re-hashes the skill files a stored run
/// recorded).
pub async fn runner_for_off_thread(
    factory: &Arc<dyn RunnerFactory>,
    run: &RunRecord,
) -> Result<Arc<Flujo>, FactoryError> {
    let (factory, run) = (Arc::clone(factory), run.clone());
    tokio::task::spawn_blocking(move || factory.runner_for(&run))
        .await
        .unwrap_or_else(|e| Err(FactoryError::new("internal_error", e.to_string())))
}
