//! The HTTP surface: Dify's `/retrieval`, the MCP server (`/mcp`), the REST context API
//! (`/users/.../live-activity`, `/v1/context`), operator routes, and the OpenAPI document of
//! them all (`/openapi.json`, which also lists the receivers the app mounts beside them).

pub mod admin;
pub mod auth;
pub mod filter;
pub mod identity;
pub mod mcp;
pub mod openapi;
pub mod rest;
pub mod retrieval;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::diagnostics::Diagnostics;
use crate::session::pull::ActivityPuller;
use crate::session::store::SessionStore;
use crate::stream_status::StreamStatus;
use crate::telemetry::Metrics;
use crate::web;
use crate::web::auth::ApiKeys;
use crate::web::error::{ApiError, codes};
use crate::web::guard::GuardLayer;
use crate::web::limits::RequestLimits;
use identity::IdentityPolicy;
use mcp::McpSettings;

pub use crate::web::SERVER_HEADER;

/// Operator routes, never rate limited: probes and scrapers must always get through.
pub const OPERATOR_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Everything the API's handlers share. The ingest side is not here: its receivers are mounted
/// by the app with their own narrow states.
pub struct ApiContext {
    pub store: Arc<dyn SessionStore>,
    pub metrics: Arc<Metrics>,
    /// Keys for `/retrieval` and the REST routes (empty: open).
    pub api_keys: ApiKeys,
    /// Keys and Host allow-list of `/mcp`.
    pub mcp: McpSettings,
    /// `LIVECTX_PUBLIC_URL`, for `/openapi.json`.
    pub public_url: Option<String>,
    pub identity: IdentityPolicy,
    /// How far back the activity record looks.
    pub activity_window: Duration,
    /// Is the Autoplay webhook receiver mounted (by the app, beside these routes)?
    pub webhook_enabled: bool,
    /// The Autoplay streams' live state, written by their consumers.
    pub streams: Vec<Arc<StreamStatus>>,
    pub summarizer_engine: String,
    /// Server clock at start.
    pub started_at: f64,
    /// The per-IP rate limit and the request timeout.
    pub limits: Arc<RequestLimits>,
    /// The lookup log and refusal samples the operator console shows.
    pub diagnostics: Arc<Diagnostics>,
    /// Reads Autoplay's hosted API before user-id lookups (`AUTOPLAY_API_KEY`), if set.
    pub puller: Option<Arc<dyn ActivityPuller>>,
}

/// Shared handler state.
pub type ApiState = Arc<ApiContext>;

/// The full router, with metrics, the per-IP rate limit, the request timeout, the `Server`
/// header, and JSON errors for unknown routes, wrong methods and panics.
pub fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// [`router`], plus routes the application mounts beside the API's (the analytics receivers
/// of [`crate::ingest::receivers`], which carry their own state), under the same layers.
pub fn router_with(state: ApiState, sources: Router) -> Router {
    let app = Router::new()
        .route("/retrieval", post(retrieval::retrieve))
        .route("//retrieval", post(retrieval::retrieve))
        .route("/retrieval/retrieval", post(retrieval::retrieve))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route(rest::LIVE_ACTIVITY_PATH, get(rest::live_activity))
        .route(rest::CONTEXT_PATH, get(rest::context))
        .route(openapi::PATH, get(openapi::openapi_json))
        .merge(mcp::routes(&state));
    app.with_state(Arc::clone(&state))
        .merge(sources)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(GuardLayer::new(Arc::clone(&state.limits)))
        .layer(SetResponseHeaderLayer::overriding(
            header::SERVER,
            HeaderValue::from_static(SERVER_HEADER),
        ))
        .layer(CatchPanicLayer::custom(web::panic_response))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let hint = if uri.path().ends_with("/retrieval") {
        "; Dify's External Knowledge API is POST /retrieval: register only the base URL in Dify"
    } else if uri.path().starts_with("/mcp") {
        "; the MCP endpoint is exactly /mcp (no trailing slash)"
    } else if uri.path().starts_with("/users/") {
        "; Autoplay's pull API is GET /users/{product_id}/{user_id}/live-activity"
    } else if uri.path().starts_with("/webhooks/") {
        "; the webhook receiver is off until AUTOPLAY_WEBHOOK_SECRET is set"
    } else if uri.path().starts_with("/ingest/") {
        "; the PostHog, Amplitude and Segment receivers are off until LIVECTX_INGEST_SECRET is set (routes: POST /ingest/{product_id}, /ingest/amplitude/{product_id}, /ingest/segment/{product_id})"
    } else {
        ""
    };
    ApiError::not_found(format!("no route for {method} {}{hint}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
