//! `/healthz`, `/api/approvals`, `/api/pipelines…` and `/api/validate`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use flujo_core::{RunFilter, RunStatus, Value};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{ApiJson, ApiPath, AppState};
use crate::error::{ApiError, ErrorBody};
use crate::factory::{PipelineDetail, PipelineInfo};

/// Whether the server is up (no auth).
#[utoipa::path(get, path = "/healthz", security(), responses((status = 200, body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// A pending pause of some run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Approval {
    /// The run.
    pub run_id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The pause (answer it with `POST /api/runs/{run_id}/resume`).
    pub pause_id: String,
    /// The step that paused.
    pub step: String,
    /// What it asks.
    pub message: String,
    /// The JSON Schema the answer must satisfy.
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
    /// Since when the run waits (ms since the Unix epoch).
    pub since_ms: i64,
}

/// Every pending pause across runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalList {
    /// Oldest first.
    pub approvals: Vec<Approval>,
}

/// The most paused runs the inbox reads.
const MAX_PAUSED: usize = 5000;

/// Every pending pause across runs, oldest first.
#[utoipa::path(get, path = "/api/approvals", responses((status = 200, body = ApprovalList)))]
pub async fn approvals(State(state): State<AppState>) -> Result<Json<ApprovalList>, ApiError> {
    let runs = state.store.list_runs(&RunFilter::new().status(RunStatus::Paused).limit(MAX_PAUSED)).await?;
    let mut approvals: Vec<Approval> = runs
        .iter()
        .flat_map(|run| {
            run.pending.iter().map(move |p| Approval {
                run_id: run.run_id.clone(),
                pipeline: run.pipeline_name.clone(),
                pause_id: p.pause_id.clone(),
                step: p.step.clone(),
                message: p.message.clone(),
                input_schema: p.input_schema.clone(),
                since_ms: run.updated_at_ms,
            })
        })
        .collect();
    approvals.sort_by(|a, b| a.since_ms.cmp(&b.since_ms).then_with(|| a.run_id.cmp(&b.run_id)));
    Ok(Json(ApprovalList { approvals }))
}

/// The pipelines the server offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineList {
    /// By name.
    pub pipelines: Vec<PipelineInfo>,
}

/// The pipelines the server offers (`--pipelines DIR`).
#[utoipa::path(get, path = "/api/pipelines", responses((status = 200, body = PipelineList)))]
pub async fn pipelines(State(state): State<AppState>) -> Json<PipelineList> {
    let factory = state.factory.clone();
    let pipelines = tokio::task::spawn_blocking(move || factory.pipelines()).await.unwrap_or_default();
    Json(PipelineList { pipelines })
}

/// One pipeline: its blueprint, Mermaid graph and step tree.
#[utoipa::path(get, path = "/api/pipelines/{name}", params(("name" = String, Path, description = "pipeline name")),
    responses((status = 200, body = PipelineDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn pipeline(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PipelineDetail>, ApiError> {
    let factory = state.factory.clone();
    let wanted = name.clone();
    tokio::task::spawn_blocking(move || factory.pipeline(&wanted)).await.ok().flatten().map(Json).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "pipeline_not_found", format!("no pipeline named '{name}'"))
    })
}

/// `POST /api/validate`: a blueprint to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The blueprint's YAML text.
    pub yaml: String,
}

/// Validates a blueprint: `{ok, diagnostics}` as `flujo validate --format json` prints them.
#[utoipa::path(post, path = "/api/validate", request_body = ValidateRequest, responses(
    (status = 200, body = Object), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn validate(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Result<Json<Value>, ApiError> {
    let factory = state.factory.clone();
    tokio::task::spawn_blocking(move || factory.validate(&body.yaml))
        .await
        .map(Json)
        .map_err(|e| ApiError::internal("internal_error", e.to_string()))
}

/// Unknown routes: a JSON 404.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route {}", uri.path()))
}

/// Decodes `%XX` escapes and `+` of a query value (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
