//! HTTP plumbing shared by every route, below both the APIs and the ingest receivers: the JSON
//! error type and its codes, body reading with limits, bearer and HMAC helpers, API keys, the
//! per-IP rate limit and the request timeout. Nothing here knows about sessions or routes.

pub mod auth;
pub mod error;
pub mod guard;
pub mod limits;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use error::{ApiError, codes};

/// The `Server` header every response carries.
pub const SERVER_HEADER: &str = concat!("livectx/", env!("CARGO_PKG_VERSION"));

/// The answer to a handler that panicked (caught by [`guard::guarded`]): a logged JSON 500.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        codes::INTERNAL,
        "internal error",
    )
    .into_response()
}
