//! HTTP plumbing shared by every route, below both the APIs and the ingest receivers: the JSON
//! error type and its codes, body reading with limits, bearer and HMAC helpers, API keys, the
//! per-IP rate limit and the request timeout. Nothing here knows about sessions or routes.

pub mod auth;
pub mod error;
pub mod limits;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::telemetry::{HttpLabels, Metrics, RouteLabels};
use error::{ApiError, codes};

/// The `Server` header every response carries.
pub const SERVER_HEADER: &str = concat!("livectx/", env!("CARGO_PKG_VERSION"));

/// Middleware: count every request by route pattern and status, and time it.
pub async fn track_http(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .http_request_duration
        .get_or_create(&RouteLabels { route })
        .observe(elapsed);
    response
}

/// The answer to a handler that panicked (for `CatchPanicLayer`): a logged JSON 500.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        codes::INTERNAL,
        "internal error",
    )
    .into_response()
}
