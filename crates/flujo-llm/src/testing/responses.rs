//! The fake server's OpenAI Responses API shape (being built: issue 18).

use axum::Router;

use super::Shared;

/// This shape's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
}
