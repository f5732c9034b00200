//! `flujo serve`: one process serving the HTTP API over a state store, the web UI and Prometheus metrics.
//!
//! The host (the `flujo` binary) hands the server a [`RunnerFactory`] that builds runners for the pipelines
//! it offers and for stored runs; everything else (routes, the embedded worker pool, live events, auth and
//! limits) lives here.

pub mod metrics;
pub mod ui;
