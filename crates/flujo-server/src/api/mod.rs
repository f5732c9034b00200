//! The HTTP API: the router, its shared state, bearer-token auth, request-body limits, JSON errors and the
//! OpenAPI document (`/api/openapi.json`, generated with utoipa from the handlers' annotations).

mod misc;
mod runs;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flujo_core::Store;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::factory::RunnerFactory;
use crate::hub::EventHub;
use crate::pool::Pool;

pub use misc::{Approval, ApprovalList, PipelineList, ValidateRequest};
pub use runs::{ResumeBody, RunAccepted, RunList, RunSummary, StartRun};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The state store (runs, journals).
    pub store: Arc<dyn Store>,
    /// Runners for pipelines and stored runs.
    pub factory: Arc<dyn RunnerFactory>,
    /// Live events.
    pub hub: Arc<EventHub>,
    /// The server's workers.
    pub pool: Arc<Pool>,
    /// Limits of the API.
    pub limits: Limits,
    /// Prometheus metrics (cancellations are counted here; walks count themselves).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Verification and cancellation of runs.
    pub client: flujo_engine::TaskClient,
    /// Open server-sent-event streams now.
    pub sse_open: Arc<std::sync::atomic::AtomicUsize>,
}

/// Limits against abuse.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// The most server-sent-event streams open at once (503 beyond).
    pub max_sse: usize,
    /// The most runs one `GET /api/runs` page lists.
    pub max_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 1 << 20, max_sse: 1024, max_page: 500 }
    }
}

/// A JSON body whose rejections are API errors: 413 when too large, 400 for anything else malformed.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
                }
                _ => ApiError::bad_request(rejection.body_text()),
            }),
        }
    }
}

/// Query parameters whose rejections are API errors (400 `bad_request` as JSON, not axum's plain text).
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Path parameters whose rejections (a `%`-escape that is not UTF-8) are API errors: 400 `bad_request`.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Flujo API", description = "Runs, approvals and pipelines of a Flujo state store."),
    paths(
        misc::healthz,
        runs::start_run,
        runs::list_runs,
        runs::get_run,
        runs::get_journal,
        runs::verify_run,
        runs::run_events,
        runs::resume_run,
        runs::cancel_run,
        misc::approvals,
        misc::pipelines,
        misc::pipeline,
        misc::validate,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/api/runs", post(runs::start_run).get(runs::list_runs))
        .route("/api/runs/{id}", get(runs::get_run))
        .route("/api/runs/{id}/journal", get(runs::get_journal))
        .route("/api/runs/{id}/verify", get(runs::verify_run))
        .route("/api/runs/{id}/events", get(runs::run_events))
        .route("/api/runs/{id}/resume", post(runs::resume_run))
        .route("/api/runs/{id}/cancel", post(runs::cancel_run))
        .route("/api/approvals", get(misc::approvals))
        .route("/api/pipelines", get(misc::pipelines))
        .route("/api/pipelines/{name}", get(misc::pipeline))
        .route("/api/validate", post(misc::validate))
        .route("/api/openapi.json", get(openapi_json))
        .route("/healthz", get(misc::healthz))
        .fallback(misc::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The bearer token every route but `/healthz` and the UI's static files needs, when one is set.
#[derive(Clone)]
pub struct Token(pub Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// Constant-time comparison, so the time to refuse says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    let hash = |x: &[u8]| blake3::hash(x);
    hash(a) == hash(b)
}

/// Refuses requests without the token (401 `unauthorized`). `/healthz` and the UI's static files (which
/// hold no data) are open; server-sent events also take `?token=` (browsers' EventSource sends no headers).
pub async fn require_token(State(token): State<Token>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/healthz" || path == "/" || path.starts_with("/ui/") {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| {
            if !path.ends_with("/events") {
                return None;
            }
            req.uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(misc::percent_decode))
        });
    match given {
        Some(t) if same(t.as_bytes(), token.0.as_bytes()) => next.run(req).await,
        _ => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid `Authorization: Bearer TOKEN` is required")
                .into_response()
        }
    }
}
