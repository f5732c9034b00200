//! [`ApiError`]: every failure of the API as `{"error": {"kind", "message"}}` with its HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flujo_engine::ClientError;
use serde::Serialize;
use serde_json::json;

/// An API failure: the HTTP status and the body's stable `kind` and human `message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable kind (`bad_request`, `run_not_found`, `conflict`, …).
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
}

/// The JSON body of an error (for the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `kind` and `message` of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable kind.
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `kind` and `message`.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        ApiError { status, kind: kind.to_owned(), message: message.into() }
    }
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 404 `run_not_found`.
    pub fn run_not_found(run_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "run_not_found", format!("run '{run_id}' not found"))
    }
    /// 409 with `kind`.
    pub fn conflict(kind: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, message)
    }
    /// 500 `internal_error` (store failures and the like).
    pub fn internal(kind: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, kind, message)
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::RunNotFound(id) => ApiError::run_not_found(id),
            ClientError::NotCancellable { .. } => ApiError::conflict("not_cancellable", e.to_string()),
            ClientError::Store(_) => ApiError::internal("store_error", e.to_string()),
            other => ApiError::internal(other.kind(), other.to_string()),
        }
    }
}

impl From<flujo_core::StoreError> for ApiError {
    fn from(e: flujo_core::StoreError) -> Self {
        ApiError::internal("store_error", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"kind": self.kind, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
