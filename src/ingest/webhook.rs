//! `POST /webhooks/autoplay`: the connector's push mode.
//!
//! Off (404) unless `AUTOPLAY_WEBHOOK_SECRET` is set — never open. The connector signs the raw
//! body: `X-Connector-Signature: sha256=<hex HMAC-SHA256(secret, body)>`, and also sends
//! `Authorization: Bearer <secret>`; either, checked in constant time, authenticates. The
//! connector retries on 5xx and timeouts, so deliveries are deduplicated by body hash, and a
//! storage failure answers 503 (and forgets the hash) so the retry is not lost.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::Mac;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock;
use crate::ingest::{Channel, Ingested, Ingestor, Source};
use crate::sources::autoplay::payload;
use crate::telemetry::OutcomeLabels;
use crate::web::auth::{bearer_token, hmac_sha256};
use crate::web::error::{ApiError, codes, read_body};
use crate::web::limits::{self, OverRateLimit, RequestLimits};

/// Where the receiver listens.
pub const PATH: &str = "/webhooks/autoplay";
/// Largest accepted body.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// The signature header the connector sends.
pub const SIGNATURE_HEADER: &str = "x-connector-signature";

/// Receiver settings.
#[derive(Clone)]
pub struct WebhookSettings {
    pub secret: String,
    /// Deliveries with the same body within this window are duplicates.
    pub dedupe_window: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("secret", &"<redacted>")
            .field("dedupe_window", &self.dedupe_window)
            .finish()
    }
}

/// `sha256=<lower-case hex>` of the body, as the connector computes it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let tag = hmac_sha256(secret.as_bytes(), body).finalize().into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// Does `header` (`sha256=<hex>`) sign `body` with `secret`? Constant time.
pub fn signature_valid(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header
        .map(str::trim)
        .and_then(|h| h.strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    hmac_sha256(secret.as_bytes(), body)
        .verify_slice(&tag)
        .is_ok()
}

/// Does the `Authorization` header carry the shared secret? Constant time.
pub fn bearer_valid(secret: &str, header: Option<&str>) -> bool {
    let Some(token) = header.and_then(bearer_token) else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let expected: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    presented.ct_eq(&expected).into()
}

/// What the receiver needs, and nothing of the API's: it sits below it.
pub struct WebhookState {
    pub settings: WebhookSettings,
    pub ingestor: Arc<Ingestor>,
    /// For the `429` of a forged delivery over the rate.
    pub limits: Arc<RequestLimits>,
}

/// The route, ready to merge into the application's router (mounted only with a secret).
pub fn routes(state: Arc<WebhookState>) -> Router {
    Router::new().route(PATH, post(receive)).with_state(state)
}

fn outcome(state: &WebhookState, outcome: &'static str) {
    state
        .ingestor
        .metrics()
        .webhook_deliveries
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

/// The webhook handler. A delivery over its sender's rate limit ([`OverRateLimit`]) is refused
/// with `429` only if it is not authentic: the connector never retries a 4xx.
pub async fn receive(
    State(state): State<Arc<WebhookState>>,
    over_limit: Option<Extension<OverRateLimit>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let settings = &state.settings;
    let store = state.ingestor.store();
    let metrics = state.ingestor.metrics();
    let bytes = match read_body(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(error) => {
            outcome(&state, "too_large");
            metrics.refuse("webhook", "oversize");
            return error.into_response();
        }
    };
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authentic = signature_valid(&settings.secret, &bytes, header_text(SIGNATURE_HEADER))
        || bearer_valid(
            &settings.secret,
            header_text(header::AUTHORIZATION.as_str()),
        );
    if !authentic {
        if let Some(Extension(over)) = over_limit {
            outcome(&state, "rate_limited");
            return limits::rate_limited(&state.limits, PATH, over);
        }
        outcome(&state, "bad_signature");
        tracing::warn!("refused a webhook delivery: missing or invalid signature");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::INVALID_SIGNATURE,
            "missing or invalid X-Connector-Signature (sha256=<hex HMAC-SHA256 of the raw body with AUTOPLAY_WEBHOOK_SECRET>)",
        )
        .into_response();
    }
    let decoded = match payload::decode(&bytes) {
        Ok(decoded) => decoded,
        Err(error) => {
            outcome(&state, "malformed");
            metrics.refuse("webhook", error.reason());
            tracing::warn!(%error, "refused a webhook delivery");
            return ApiError::bad_request(error.to_string()).into_response();
        }
    };
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    let now = clock::now();
    match store
        .first_delivery(hash, now, settings.dedupe_window)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            outcome(&state, "duplicate");
            tracing::debug!("ignored a repeated webhook delivery");
            return Json(json!({ "status": "duplicate" })).into_response();
        }
        Err(error) => {
            // Better to risk a duplicate than to lose the delivery.
            metrics.store_error("first_delivery");
            tracing::warn!(%error, "could not check webhook deduplication; storing anyway");
        }
    }
    match state
        .ingestor
        .ingest_raw(Source::Webhook, decoded, Channel::default(), Some(&bytes))
        .await
    {
        Ingested::Stored => {
            outcome(&state, "ok");
            Json(json!({ "status": "ok" })).into_response()
        }
        Ingested::Ignored { reason } | Ingested::Refused { reason } => {
            outcome(&state, "ignored");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "ignored", "reason": reason })),
            )
                .into_response()
        }
        Ingested::Failed => {
            outcome(&state, "failed");
            if let Err(error) = store.forget_delivery(hash).await {
                tracing::warn!(%error, "could not forget a failed delivery's hash; its retry may be ignored");
            }
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                "storage is unavailable; the delivery was not stored, please retry",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_signatures_and_bearer_secrets() {
        let body = br#"{"type":"actions"}"#;
        let sig = sign("s3cret", body);
        assert!(signature_valid("s3cret", body, Some(&sig)));
        assert!(!signature_valid("other", body, Some(&sig)));
        assert!(!signature_valid("s3cret", b"{}", Some(&sig)));
        assert!(!signature_valid("s3cret", body, Some("sha256=zz")));
        assert!(!signature_valid("s3cret", body, None));
        assert!(bearer_valid("s3cret", Some("Bearer s3cret")));
        assert!(!bearer_valid("s3cret", Some("Bearer s3cre")));
    }
}
