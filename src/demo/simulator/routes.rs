//! The simulator's HTTP surface: the stream, `/personas` and `/healthz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::json;

use super::Shared;
use crate::ingest::webhook;

/// The heartbeat frame, exactly as the connector sends it.
pub const HEARTBEAT_FRAME: &[u8] = b"event: heartbeat\ndata:\n\n";
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/stream/{product_id}", get(stream))
        .route("/personas", get(board))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not found: the stream is GET /stream/<product_id>"})),
            )
        })
        .with_state(shared)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `GET /stream/<product_id>`.
async fn stream(
    State(shared): State<Arc<Shared>>,
    Path(product_id): Path<String>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !webhook::bearer_valid(&shared.token, authorization) {
        tracing::warn!(%peer, "refused a stream subscriber: missing or wrong token");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or invalid token: send Authorization: Bearer <token>",
        );
    }
    if product_id != shared.product_id {
        tracing::warn!(%peer, product = %product_id, "refused a stream subscriber: unknown product");
        return refuse(StatusCode::NOT_FOUND, "unknown product");
    }
    let Some((id, rx)) = shared.hub.subscribe(&peer.to_string()) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the simulator is stopping");
    };
    tracing::info!(subscriber = id, %peer, "a subscriber connected to the stream");
    let mut heartbeat = tokio::time::interval(shared.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let frames =
        futures_util::stream::unfold((rx, heartbeat), |(mut rx, mut heartbeat)| async move {
            let frame = tokio::select! {
                biased;
                frame = rx.recv() => frame?,
                _ = heartbeat.tick() => Bytes::from_static(HEARTBEAT_FRAME),
            };
            Some((Ok::<Bytes, Infallible>(frame), (rx, heartbeat)))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the stream"))
}

/// `GET /personas`: each simulated session and where it is.
async fn board(State(shared): State<Arc<Shared>>) -> Response {
    let personas = crate::sync::lock(&shared.board).clone();
    Json(json!({
        "product_id": shared.product_id,
        "stream": format!("/stream/{}", shared.product_id),
        "load_sessions": shared.sessions,
        "events": shared.counters.emitted.load(Ordering::Relaxed),
        "subscribers": shared.hub.stats(),
        "personas": personas,
    }))
    .into_response()
}
