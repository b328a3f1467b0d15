//! Operator routes: `/healthz` (alive), `/readyz` (ready to answer), `/metrics` (Prometheus).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::ApiState;
use crate::clock;

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })).into_response()
}

/// `GET /readyz`: 200 when the store answers and every stream this replica consumes is
/// connected; 503 otherwise. The body always reports each part, for operators (with Redis, also
/// how many ingestion writes wait in memory for it).
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let now = clock::now();
    let mut store = match state.store.stats().await {
        Ok(stats) => {
            json!({ "backend": state.store.backend(), "ok": true, "sessions": stats.sessions, "chunks": stats.chunks })
        }
        Err(error) => {
            json!({ "backend": state.store.backend(), "ok": false, "error": error.to_string() })
        }
    };
    if state.store.backend() == "redis" {
        // Ingestion writes waiting in memory for Redis (see session::buffered).
        store["buffered_writes"] = json!(state.metrics.redis_buffered.get());
    }
    // A cluster reports its own state: a master down and not yet replaced is not ready.
    match state.store.health().await {
        Ok(Some(health)) => {
            store["health"] = json!(health.details);
            if !health.ok {
                store["ok"] = json!(false);
            }
        }
        Ok(None) => {}
        Err(error) => {
            store["ok"] = json!(false);
            store["health"] = json!({ "error": error.to_string() });
        }
    }
    let store_ok = store["ok"].as_bool().unwrap_or(false);
    let streams: Vec<_> = state.streams.iter().map(|s| s.view(now)).collect();
    let streams_ok = streams.iter().all(|s| s.connected || !s.leading);
    let (calls, failures) = state.metrics.llm_totals();
    let pull = state.puller.as_ref().map(|p| p.status());
    let pull_ok = pull
        .as_ref()
        .is_none_or(|p| p["ok"].as_bool().unwrap_or(false));
    let ready = store_ok && streams_ok && pull_ok;
    let body = json!({
        "ready": ready,
        "store": store,
        "streams": streams,
        "summarizer": {
            "engine": state.summarizer_engine,
            "llm_calls": calls,
            "llm_failures": failures,
            "llm_error_rate": if calls == 0 { 0.0 } else { failures as f64 / calls as f64 },
        },
        "webhook_enabled": state.webhook_enabled,
        "autoplay_api": pull,
        "uptime_seconds": (now - state.started_at).max(0.0).round(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    if let Ok(stats) = state.store.stats().await {
        state
            .metrics
            .sessions
            .set(i64::try_from(stats.sessions).unwrap_or(i64::MAX));
        state
            .metrics
            .chunks
            .set(i64::try_from(stats.chunks).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
