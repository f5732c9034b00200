//! `flujo serve`: one process serving the HTTP API over a state store, the web UI and Prometheus metrics.
//!
//! The host (the `flujo` binary) hands the server a [`RunnerFactory`] that builds runners for the pipelines
//! it offers and for stored runs; everything else — routes ([`api`]), the embedded worker pool ([`pool`]),
//! live events ([`hub`]), auth, limits, CORS, metrics ([`metrics`]) and the UI ([`ui`]) — lives here.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn demo(store: Arc<dyn flujo_core::Store>, factory: Arc<dyn flujo_server::RunnerFactory>) -> std::io::Result<()> {
//! use flujo_server::{Observers, Server, ServerConfig};
//! // Runners must report to the server's telemetry and commit through its (timed) store.
//! let observers = Observers::new(store);
//! let server = Server::new(observers, factory, ServerConfig::default()).map_err(std::io::Error::other)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8088").await?;
//! server.serve(listener, std::future::pending()).await
//! # }
//! ```

pub mod api;
pub mod error;
pub mod factory;
pub mod hub;
pub mod metrics;
pub mod pool;
pub mod registration;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use flujo_core::{Store, Telemetry};

pub use api::{AppState, Limits};
pub use error::ApiError;
pub use factory::{FactoryError, PipelineDetail, PipelineInfo, RunnerFactory};
pub use hub::EventHub;
pub use metrics::Metrics;
pub use pool::{Pool, PoolConfig};

/// What watches the runs of a server: its event hub, its metrics, the store wrapped to time commits, and
/// the telemetry every runner of the server must be built with (hub and metrics together).
#[derive(Clone)]
pub struct Observers {
    /// The state store, wrapped to time journal commits (`flujo_store_commit_seconds`).
    pub store: Arc<dyn Store>,
    /// Live events for `/api/runs/{id}/events`.
    pub hub: Arc<EventHub>,
    /// Prometheus metrics for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The telemetry for runners: events go to the hub and the metrics.
    pub telemetry: Arc<dyn Telemetry>,
}

impl Observers {
    /// Observers over `store`, with event watchers polling every 250 ms for runs of other processes.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_poll(store, Duration::from_millis(250))
    }

    /// [`Observers::new`] with the watchers' poll interval.
    pub fn with_poll(store: Arc<dyn Store>, poll: Duration) -> Self {
        let metrics = Arc::new(Metrics::new());
        let store = metrics.wrap_store(store);
        let hub = EventHub::new(store.clone(), poll);
        let telemetry = metrics::tee(hub.clone(), metrics.clone());
        Observers { store, hub, metrics, telemetry }
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The bearer token every route but `/healthz` and the UI's files needs; required beyond loopback.
    pub token: Option<String>,
    /// Origins allowed by CORS (none: CORS is off).
    pub cors_origins: Vec<String>,
    /// Limits of the API.
    pub limits: Limits,
    /// The embedded worker pool.
    pub pool: PoolConfig,
    /// How long a stopping server lets its runs finish before it puts them back on their queue.
    pub grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            cors_origins: Vec::new(),
            limits: Limits::default(),
            pool: PoolConfig::default(),
            grace: Duration::from_secs(10),
        }
    }
}

/// Refuses an address beyond loopback without a token (the API runs pipelines: it must not be open to
/// the network by accident).
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    Err(format!(
        "refusing to serve on {addr} without a token: set FLUJO_API_TOKEN (every request then needs \
         `Authorization: Bearer TOKEN`), or bind to 127.0.0.1"
    ))
}

/// The server: API, UI, metrics and the worker pool over one store.
pub struct Server {
    state: AppState,
    metrics: Arc<Metrics>,
    config: ServerConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("limits", &self.config.limits).finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `observers.store`, with runners from `factory` (which must build them with
    /// `observers.telemetry` and `observers.store`).
    pub fn new(observers: Observers, factory: Arc<dyn RunnerFactory>, config: ServerConfig) -> Result<Self, String> {
        for o in &config.cors_origins {
            axum::http::HeaderValue::from_str(o)
                .map_err(|_| format!("CORS origin {o:?} is not a valid header value"))?;
        }
        let pool = Pool::new(observers.store.clone(), factory.clone(), config.pool.clone());
        let client = flujo_engine::TaskClient::new(observers.store.clone(), Arc::new(NoSkills));
        let state = AppState {
            store: observers.store,
            factory,
            hub: observers.hub,
            pool,
            client,
            metrics: observers.metrics.clone(),
            limits: config.limits.clone(),
            sse_open: Arc::default(),
        };
        Ok(Server { state, metrics: observers.metrics, config })
    }

    /// Has the runs the server's pool walks judged by `evaluator` (shadow evaluations).
    pub fn with_shadow(self, evaluator: Arc<flujo_engine::shadow::ShadowEvaluator>) -> Self {
        self.state.pool.set_shadow(evaluator);
        self
    }

    /// The shared state of the handlers.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Every route: API, UI, `/metrics`, `/healthz`, behind the token and CORS when configured.
    pub fn router(&self) -> Router {
        let mut app = api::router(self.state.clone())
            .merge(ui::router())
            .merge(metrics::router(self.metrics.clone(), Some(self.state.store.clone())));
        if let Some(token) = self.config.token.as_deref().filter(|t| !t.is_empty()) {
            app = app.layer(axum::middleware::from_fn_with_state(api::Token(Arc::from(token)), api::require_token));
        }
        if !self.config.cors_origins.is_empty() {
            let origins: Vec<axum::http::HeaderValue> =
                self.config.cors_origins.iter().filter_map(|o| axum::http::HeaderValue::from_str(o).ok()).collect();
            app = app.layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(origins)
                    .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                    .allow_headers([axum::http::header::AUTHORIZATION, axum::http::header::CONTENT_TYPE]),
            );
        }
        app
    }

    /// Serves on `listener` until `shutdown` completes, with the pool walking runs; then stops taking
    /// requests and runs, lets walks finish for the grace period and puts the rest back on their queue.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let pool = self.state.pool.clone();
        let pool_task = tokio::spawn(pool.clone().run(self.config.grace));
        let app = self.router();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stopper = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(());
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await;
        stopper.abort();
        pool.stop();
        let _ = pool_task.await;
        served
    }
}

/// Verification and cancellation need no skills.
struct NoSkills;

impl flujo_core::SkillRegistry for NoSkills {
    fn resolve(
        &self,
        id: &str,
        _params: &flujo_core::Value,
    ) -> Result<Arc<dyn flujo_core::Skill>, flujo_core::ResolveError> {
        Err(flujo_core::ResolveError::Unknown { id: id.to_owned(), suggestion: None })
    }

    fn list(&self) -> Vec<flujo_core::SkillInfo> {
        Vec::new()
    }
}
