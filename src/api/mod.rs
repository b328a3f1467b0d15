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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use futures_util::future::Either;
use tokio::net::TcpListener;
use tower::Service;

use crate::diagnostics::Diagnostics;
use crate::session::pull::ActivityPuller;
use crate::session::store::SessionStore;
use crate::stream_status::StreamStatus;
use crate::telemetry::Metrics;
use crate::telemetry::http::RouteHandles;
use crate::web::auth::ApiKeys;
use crate::web::error::{ApiError, codes};
use crate::web::guard::{GuardLayer, guarded};
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

/// The paths Dify may call `/retrieval` at (see [`retrieval`]'s docs), each its own route label.
pub const RETRIEVAL_PATHS: [&str; 3] = ["/retrieval", "//retrieval", "/retrieval/retrieval"];

/// [`router`], plus routes the application mounts beside the API's (the analytics receivers
/// of [`crate::ingest::receivers`] and the operator console, which carry their own state),
/// under the same layers.
pub fn router_with(state: ApiState, sources: Router) -> Router {
    let mut app = Router::new();
    for path in RETRIEVAL_PATHS {
        app = app.route(path, post(retrieval::retrieve));
    }
    let app = app
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
}

/// The service the server runs: `POST /retrieval` goes straight to its handler, everything
/// else through `router`.
///
/// Why: Dify and MCP agents call `/retrieval` far more than anything else, and there the
/// router's own work (the path lookup, and a clone and a boxed future for each route layer)
/// was a large share of an answer that costs a few microseconds (docs/benchmarks.md). The
/// direct path keeps everything a request meets through the router: the same API key check
/// and answer ([`retrieval::retrieve_direct`]), and the same guard ([`guarded`]: rate limit,
/// timeout, panic, `Server` header, metrics under the same route label). `Content-Length`,
/// which the router adds to the header map, is written by hyper from the body's exact size, at
/// the same place in the head, so the bytes on the wire are the same (a test over real HTTP
/// compares them). Other methods on those paths go through the router (for its 405).
///
/// The server makes one per connection ([`ApiService::connections`]), which knows its peer's
/// address (the rate limit's key) without putting it in every request's extensions.
#[derive(Clone)]
pub struct ApiService {
    router: Router,
    direct: Arc<DirectRetrieval>,
    /// The connection's peer, when made by [`ApiConnections`].
    peer: Option<SocketAddr>,
}

/// What the direct `/retrieval` path shares between connections.
struct DirectRetrieval {
    state: ApiState,
    /// Each of [`RETRIEVAL_PATHS`]' metric handles, taken on its first request (so `/metrics`
    /// shows a path's series only once it was called, as through the router).
    routes: [OnceLock<Arc<RouteHandles>>; RETRIEVAL_PATHS.len()],
}

impl ApiService {
    /// Serve `router` (built by [`router_with`] on `state`, perhaps with more routes merged).
    pub fn new(router: Router, state: ApiState) -> Self {
        Self {
            router,
            direct: Arc::new(DirectRetrieval {
                state,
                routes: Default::default(),
            }),
            peer: None,
        }
    }

    /// The make-service `axum::serve` takes: this service for each accepted connection, with
    /// its peer's address. The router's routes still find it as `ConnectInfo<SocketAddr>`;
    /// `/retrieval` reads it from here.
    ///
    /// Why not `into_make_service_with_connect_info`: it inserts the address into each
    /// request's extensions, an extension map allocated and dropped on every answer.
    pub fn connections(self) -> ApiConnections {
        ApiConnections(self)
    }
}

/// See [`ApiService::connections`].
#[derive(Clone)]
pub struct ApiConnections(ApiService);

impl Service<IncomingStream<'_, TcpListener>> for ApiConnections {
    type Response = ApiService;
    type Error = Infallible;
    type Future = std::future::Ready<Result<ApiService, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, TcpListener>) -> Self::Future {
        let mut service = self.0.clone();
        service.peer = Some(*stream.remote_addr());
        std::future::ready(Ok(service))
    }
}

impl Service<Request> for ApiService {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
        <Router as Service<Request>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let index = (request.method() == Method::POST)
            .then(|| {
                RETRIEVAL_PATHS
                    .iter()
                    .position(|path| *path == request.uri().path())
            })
            .flatten();
        let Some(index) = index else {
            if let Some(peer) = self.peer {
                request.extensions_mut().insert(ConnectInfo(peer));
            }
            return Either::Right(self.router.call(request));
        };
        // Served through `into_make_service_with_connect_info` instead, the peer is in the
        // request.
        let peer = self.peer.or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        });
        let direct = Arc::clone(&self.direct);
        Either::Left(Box::pin(async move {
            let state = &direct.state;
            let limits = &state.limits;
            let handles = direct.routes[index]
                .get_or_init(|| limits.metrics.http_routes.route(RETRIEVAL_PATHS[index]));
            Ok(guarded(limits, handles, request, peer, |request| {
                retrieval::retrieve_direct(state, request)
            })
            .await)
        }))
    }
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
