//! The one middleware in front of every route: count and time the request by route and
//! status, apply the per-IP rate limit, bound the time to the response head, answer a
//! panicking handler with a JSON 500, and stamp the `Server` header.
//!
//! Why one hand-written layer instead of a stack of `from_fn`, `CatchPanicLayer` and
//! `SetResponseHeaderLayer`: each layer a `Router` applies clones and boxes the route and boxes
//! its future on every request, and the metrics took an owned label set (an allocation and two
//! hashes under a lock). On `/retrieval`, where the whole answer costs a few microseconds, that
//! was a measurable share (docs/benchmarks.md). Here a request costs one boxed future and a
//! route lookup in [`crate::telemetry::http::HttpRoutes`], and [`guarded`] serves a route
//! that is dispatched without the router at all (`api::ApiService`) with the very same rules,
//! on the route's metric handles that its caller keeps.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::FutureExt;
use tower::{Layer, Service, ServiceExt};

use super::limits::{self, RequestLimits};
use super::{SERVER_HEADER, panic_response};
use crate::telemetry::http::RouteHandles;

/// Route label of requests no route matched (404s, wrong methods answered by the fallback).
pub const UNMATCHED: &str = "unmatched";

/// Wraps each route in a [`Guard`].
#[derive(Clone)]
pub struct GuardLayer {
    limits: Arc<RequestLimits>,
}

impl GuardLayer {
    /// A layer enforcing `limits` and counting into `limits.metrics`.
    pub fn new(limits: Arc<RequestLimits>) -> Self {
        Self { limits }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            limits: Arc::clone(&self.limits),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    limits: Arc<RequestLimits>,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is checked on the clone that serves the request (`oneshot` below).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let limits = Arc::clone(&self.limits);
        Box::pin(async move { Ok(guard(&limits, inner, request).await) })
    }
}

async fn guard<S>(limits: &RequestLimits, inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str);
    let handles = limits.metrics.http_routes.route(route);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    guarded(limits, &handles, request, peer, |request| async move {
        match inner.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    })
    .await
}

/// Serve `request` from `peer` with `serve` under every route's rules (see the module docs),
/// counted on `handles` and under their route's label. The router's routes look their handles
/// up per request and their peer in the request's `ConnectInfo`; `api::ApiService` keeps
/// those of `/retrieval` and its connection's peer, sparing a hash of the route under a lock
/// and an extension map on every request.
pub async fn guarded<F, Fut>(
    limits: &RequestLimits,
    handles: &RouteHandles,
    mut request: Request,
    peer: Option<SocketAddr>,
    serve: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let route = handles.route();
    let started = Instant::now();
    let mut response = match limits::refusal(limits, &mut request, peer, route) {
        Some(refusal) => refusal,
        None => {
            // Building the future inside the caught one: a panic while starting is caught too.
            let served = AssertUnwindSafe(async move { serve(request).await }).catch_unwind();
            let mut served = std::pin::pin!(served);
            // Most answers are ready at their first poll (a body that arrived whole, a session
            // in memory): the timer is set only for one that is not, with the deadline counted
            // from the start all the same. Setting it costs a runtime handle and a timer entry.
            let outcome = match futures_util::poll!(served.as_mut()) {
                Poll::Ready(outcome) => Ok(outcome),
                Poll::Pending => {
                    let deadline = tokio::time::Instant::from_std(started) + limits.request_timeout;
                    tokio::time::timeout_at(deadline, served).await
                }
            };
            match outcome {
                Ok(Ok(response)) => response,
                Ok(Err(panic)) => panic_response(panic),
                Err(_elapsed) => limits::timed_out(limits, route),
            }
        }
    };
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
    handles.observe(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::http::StatusCode;
    use axum::routing::get;
    use serde_json::Value;

    use super::*;
    use crate::telemetry::Metrics;

    fn limits(timeout: Duration) -> Arc<RequestLimits> {
        Arc::new(RequestLimits::new(None, timeout, Arc::new(Metrics::new())))
    }

    async fn call(router: Router, path: &str) -> (StatusCode, Option<String>, Value) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let Ok(response) = router.oneshot(request).await;
        let server = response
            .headers()
            .get(header::SERVER)
            .map(|v| v.to_str().unwrap().to_string());
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, server, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_counted_json_500_with_the_server_header() {
        let limits = limits(Duration::from_secs(5));
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let router = Router::new()
            .route("/boom", get(boom))
            .layer(GuardLayer::new(Arc::clone(&limits)));
        let (status, server, body) = call(router, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(server.as_deref(), Some(SERVER_HEADER));
        assert_eq!(body["error_msg"], "internal error", "{body}");
        let metrics = limits.metrics.encode();
        assert!(
            metrics.contains("livectx_http_requests_total{route=\"/boom\",status=\"500\"} 1"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_slow_handler_is_cut_off_at_the_timeout_and_unmatched_paths_are_labelled() {
        let limits = limits(Duration::from_millis(20));
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }
        let router = Router::new()
            .route("/slow", get(slow))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(GuardLayer::new(Arc::clone(&limits)));
        let (status, server, _) = call(router.clone(), "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(server.as_deref(), Some(SERVER_HEADER));
        let request = Request::builder().uri("/none").body(Body::empty()).unwrap();
        let Ok(response) = router.oneshot(request).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let metrics = limits.metrics.encode();
        for line in [
            "livectx_http_requests_total{route=\"/slow\",status=\"503\"} 1",
            "livectx_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        ] {
            assert!(metrics.contains(line), "{line}\n{metrics}");
        }
    }
}
