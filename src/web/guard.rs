//! The one middleware in front of every route: count and time the request by route and
//! status, apply the per-IP rate limit, and bound the time to the response head.
//!
//! Why one hand-written layer instead of three `axum::middleware::from_fn` layers: each
//! `from_fn` layer clones and boxes the route and boxes its future on every request, and the
//! metrics took an owned label set (an allocation and two hashes under a lock). On
//! `/retrieval`, where the whole answer costs a few microseconds, that was a measurable share
//! (docs/benchmarks.md). Here a request costs one boxed future and a route lookup in
//! [`crate::telemetry::http::HttpRoutes`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service, ServiceExt};

use super::limits::{self, RequestLimits};

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

async fn guard<S>(limits: &RequestLimits, inner: S, mut request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let response = match limits::refusal(limits, &mut request, route) {
        Some(refusal) => refusal,
        None => match tokio::time::timeout(limits.request_timeout, inner.oneshot(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_elapsed) => limits::timed_out(limits, route),
        },
    };
    limits
        .metrics
        .http_routes
        .route(route)
        .observe(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
