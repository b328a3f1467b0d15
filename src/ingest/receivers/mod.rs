//! The analytics receivers: PostHog, Amplitude and Segment-spec tools POST their events here.
//!
//! | route | body | authentication |
//! |---|---|---|
//! | `POST /ingest/{product_id}` | PostHog: Autoplay's flat destination body, the stock HTTP Webhook body, or an array of either | `X-PostHog-Secret: <secret>` or `Authorization: Bearer <secret>` |
//! | `POST /ingest/amplitude/{product_id}` | Amplitude event streaming: one event or an array | `Authorization: Bearer <secret>` |
//! | `POST /ingest/segment/{product_id}` | Segment spec `track`/`page`/`identify`, alone or `{"batch": [...]}` | `X-Signature: <hex HMAC-SHA1 of the body>` or `Authorization: Bearer <secret>` |
//!
//! The secret is `LIVECTX_INGEST_SECRET`; without it these routes are not mounted. A `2xx`
//! means every accepted event is in the store: events are grouped per session (group commit,
//! see [`crate::ingest::Ingestor::commit`]) and the answer waits for the write. A failed write
//! answers `503` and forgets the events' dedupe keys, so the tool's retry is stored. `4xx`
//! only for what can never succeed (PostHog and Segment do not retry them): `401` bad or
//! missing secret, `400` malformed body or unknown shape, `413` too large, `422` no usable
//! session id.
//!
//! Receivers see only [`Receivers`], never the API's state: data flows from here down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock;
use crate::ingest::dedupe::{DeliveryKey, DeliveryLog};
use crate::ingest::idle_sessions::IdleSessions;
use crate::ingest::{Ingested, Ingestor};
use crate::session::model::{
    Action, ActionBatch, ActionParts, MAX_ID_LEN, PAGE_LEAVE_KIND, SessionId, SourceKind,
};
use crate::sources::{self, BodyError, Decoded, Privacy, SourceEvent};
use crate::telemetry::SourceEventLabels;
use crate::web::auth::bearer_token;
use crate::web::error::{ApiError, codes};

/// PostHog's route (and Autoplay's `ingest_url`, so an Autoplay destination needs one URL
/// changed).
pub const POSTHOG_PATH: &str = "/ingest/{product_id}";
/// Amplitude event streaming.
pub const AMPLITUDE_PATH: &str = "/ingest/amplitude/{product_id}";
/// Segment-spec webhooks (Segment, RudderStack, Jitsu, ...).
pub const SEGMENT_PATH: &str = "/ingest/segment/{product_id}";

/// Largest PostHog or Amplitude body (one event, or a replay array).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Largest Segment body: its batches hold up to 4 000 events.
pub const SEGMENT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// PostHog's secret header (Autoplay's destination sends it; the stock HTTP Webhook
/// destination is configured to).
pub const POSTHOG_SECRET_HEADER: &str = "x-posthog-secret";
/// Segment's Webhooks (Actions) signature header.
pub const SEGMENT_SIGNATURE_HEADER: &str = "x-signature";

/// Error code of a body none of whose events has a usable session id (`422`).
pub const NO_SESSION_CODE: u32 = 4220;

/// What the receivers are configured with.
#[derive(Clone)]
pub struct ReceiverSettings {
    /// `LIVECTX_INGEST_SECRET`, trimmed and non-empty.
    pub secret: String,
    /// `LIVECTX_KEEP_QUERY_PARAMS`.
    pub privacy: Privacy,
}

impl std::fmt::Debug for ReceiverSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverSettings")
            .field("secret", &"<redacted>")
            .field("privacy", &self.privacy)
            .finish()
    }
}

/// Everything the receivers need, and nothing of the API's.
pub struct Receivers {
    settings: ReceiverSettings,
    secret_digest: [u8; 32],
    ingestor: Arc<Ingestor>,
    deliveries: Arc<dyn DeliveryLog>,
    idle_sessions: Arc<dyn IdleSessions>,
}

impl Receivers {
    pub fn new(
        settings: ReceiverSettings,
        ingestor: Arc<Ingestor>,
        deliveries: Arc<dyn DeliveryLog>,
        idle_sessions: Arc<dyn IdleSessions>,
    ) -> Arc<Self> {
        let secret_digest = Sha256::digest(settings.secret.as_bytes()).into();
        Arc::new(Self {
            settings,
            secret_digest,
            ingestor,
            deliveries,
            idle_sessions,
        })
    }

    /// Does `presented` equal the secret? Constant time (digests of equal length).
    fn is_secret(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest.ct_eq(&self.secret_digest).into()
    }
}

/// The three routes, ready to merge into the application's router.
pub fn routes(receivers: Arc<Receivers>) -> Router {
    Router::new()
        .route(POSTHOG_PATH, post(posthog))
        .route(AMPLITUDE_PATH, post(amplitude))
        .route(SEGMENT_PATH, post(segment))
        .with_state(receivers)
}

async fn posthog(
    State(receivers): State<Arc<Receivers>>,
    Path(product_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&receivers, SourceKind::PostHog, product_id, &headers, body).await
}

async fn amplitude(
    State(receivers): State<Arc<Receivers>>,
    Path(product_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(
        &receivers,
        SourceKind::Amplitude,
        product_id,
        &headers,
        body,
    )
    .await
}

async fn segment(
    State(receivers): State<Arc<Receivers>>,
    Path(product_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&receivers, SourceKind::Segment, product_id, &headers, body).await
}

/// A refusal as the JSON error every route answers with.
fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    header_text(headers, header::AUTHORIZATION.as_str()).and_then(bearer_token)
}

/// `hex(HMAC-SHA1(secret, body))`, as Segment's Webhooks destination signs.
pub fn segment_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha1(secret, body).finalize().into_bytes())
}

fn hmac_sha1(secret: &str, body: &[u8]) -> Hmac<Sha1> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthFailure {
    Missing,
    Wrong,
}

/// Check the source's credentials: a constant-time comparison of the secret (or the Segment
/// signature over the raw body).
fn authenticate(
    receivers: &Receivers,
    source: SourceKind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthFailure> {
    let mut presented = false;
    if let Some(token) = bearer(headers) {
        presented = true;
        if receivers.is_secret(token) {
            return Ok(());
        }
    }
    match source {
        SourceKind::PostHog => {
            if let Some(secret) = header_text(headers, POSTHOG_SECRET_HEADER) {
                presented = true;
                if receivers.is_secret(secret) {
                    return Ok(());
                }
            }
        }
        SourceKind::Segment => {
            if let Some(signature) = header_text(headers, SEGMENT_SIGNATURE_HEADER) {
                presented = true;
                let signature = signature.trim();
                let signature = signature.strip_prefix("sha1=").unwrap_or(signature);
                if let Ok(tag) = hex::decode(signature)
                    && hmac_sha1(&receivers.settings.secret, body)
                        .verify_slice(&tag)
                        .is_ok()
                {
                    return Ok(());
                }
            }
        }
        _ => {}
    }
    Err(if presented {
        AuthFailure::Wrong
    } else {
        AuthFailure::Missing
    })
}

fn credentials_hint(source: SourceKind) -> &'static str {
    match source {
        SourceKind::PostHog => {
            "send the secret as \"X-PostHog-Secret: <LIVECTX_INGEST_SECRET>\" or \"Authorization: Bearer <LIVECTX_INGEST_SECRET>\""
        }
        SourceKind::Segment => {
            "sign the body as \"X-Signature: <hex HMAC-SHA1 of the body with LIVECTX_INGEST_SECRET>\" or send \"Authorization: Bearer <LIVECTX_INGEST_SECRET>\""
        }
        _ => "send \"Authorization: Bearer <LIVECTX_INGEST_SECRET>\"",
    }
}

fn decode(
    receivers: &Receivers,
    source: SourceKind,
    body: &[u8],
    product_id: &str,
) -> Result<Decoded, BodyError> {
    let privacy = &receivers.settings.privacy;
    match source {
        SourceKind::Amplitude => sources::amplitude::decode(body, product_id, privacy),
        SourceKind::Segment => sources::segment::decode(body, product_id, privacy),
        _ => sources::posthog::decode(body, product_id, privacy),
    }
}

/// Count events by outcome (`stored`, `duplicate`, `refused`).
fn count(receivers: &Receivers, source: SourceKind, outcome: &'static str, n: usize) {
    if n > 0 && outcome == "stored" {
        let events = &receivers.ingestor.diagnostics().events;
        events.record(source.as_str(), n as u64, crate::clock::now());
    }
    if n > 0 {
        receivers
            .ingestor
            .metrics()
            .source_events
            .get_or_create(&SourceEventLabels {
                source: source.as_str(),
                outcome,
            })
            .inc_by(n as u64);
    }
}

/// One refused event of a body, as the answer lists it.
struct Refusal {
    index: usize,
    reason: &'static str,
    detail: String,
}

/// The events of one session in this body, and the keys to forget if its write fails.
struct SessionEvents {
    batch: ActionBatch,
    /// Events accepted into it.
    events: usize,
    keys: Vec<DeliveryKey>,
    /// Time of the event the identity was taken from.
    identity_time: f64,
}

async fn receive(
    receivers: &Arc<Receivers>,
    source: SourceKind,
    product_id: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let ingestor = &receivers.ingestor;
    let limit = if source == SourceKind::Segment {
        SEGMENT_BODY_LIMIT
    } else {
        BODY_LIMIT
    };
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        ingestor.refuse_event(source, "too_large", "a body over the size limit");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the {limit}-byte limit"),
        );
    };
    if let Err(failure) = authenticate(receivers, source, headers, &bytes) {
        ingestor.refuse_event(
            source,
            "unauthorized",
            "a delivery with a missing or wrong secret",
        );
        let what = match failure {
            AuthFailure::Missing => "missing credentials",
            AuthFailure::Wrong => "wrong secret or signature",
        };
        return error(
            StatusCode::UNAUTHORIZED,
            codes::INVALID_SIGNATURE,
            format!("{what}: {}", credentials_hint(source)),
        );
    }
    let product_id = product_id.trim().to_string();
    if product_id.is_empty()
        || product_id.len() > MAX_ID_LEN
        || product_id.chars().any(char::is_control)
    {
        ingestor.refuse_event(
            source,
            "invalid_product",
            "a delivery with an unusable product id",
        );
        return error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            format!("the product id in the path must be 1 to {MAX_ID_LEN} printable characters"),
        );
    }
    let decoded = match decode(receivers, source, &bytes, &product_id) {
        Ok(decoded) => decoded,
        Err(problem) => {
            ingestor.refuse_event(source, problem.reason(), &problem.to_string());
            return error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                format!("{problem}{}", shape_hint(source)),
            );
        }
    };
    let mut refusals: Vec<Refusal> = decoded
        .refused
        .into_iter()
        .map(|r| Refusal {
            index: r.index,
            reason: r.reason,
            detail: r.detail,
        })
        .collect();
    for refusal in &refusals {
        ingestor.refuse_event(source, refusal.reason, &refusal.detail);
    }

    let mut sessions: HashMap<SessionId, SessionEvents> = HashMap::new();
    let mut duplicates = 0usize;
    let now = clock::now();
    for (index, event) in decoded.events.into_iter().enumerate() {
        let session_id = match session_of(receivers, &product_id, &event, now).await {
            Ok(Ok(id)) => id,
            Ok(Err((reason, detail))) => {
                ingestor.refuse_event(source, reason, detail);
                refusals.push(Refusal {
                    index,
                    reason,
                    detail: detail.to_string(),
                });
                continue;
            }
            Err(unavailable) => return unavailable,
        };
        let key = (!event.dedupe_key.is_empty())
            .then(|| DeliveryKey::new(source, &product_id, &event.dedupe_key));
        if let Some(key) = key {
            match receivers.deliveries.first_seen(key).await {
                Ok(true) => {}
                Ok(false) => {
                    duplicates += 1;
                    continue;
                }
                Err(problem) => {
                    // Better a possible duplicate than a lost event.
                    ingestor.metrics().store_error("ingest_dedupe");
                    tracing::warn!(%problem, source = source.as_str(), "could not check deduplication; storing anyway");
                }
            }
        }
        add_event(
            &mut sessions,
            session_id,
            &product_id,
            source,
            event,
            key,
            now,
        );
    }

    let accepted: usize = sessions.values().map(|s| s.events).sum();
    let writes = sessions.into_values().map(|mut events| {
        let ingestor = Arc::clone(ingestor);
        // Tools deliver out of order: the chunk holds its actions in time order.
        events
            .batch
            .actions
            .sort_by(|a, b| a.time().unwrap_or(now).total_cmp(&b.time().unwrap_or(now)));
        async move {
            let outcome = ingestor.commit(events.batch).await;
            (outcome, events.events, events.keys)
        }
    });
    let mut failed_keys = Vec::new();
    let mut stored = 0usize;
    for (outcome, events, keys) in futures_util::future::join_all(writes).await {
        if outcome == Ingested::Stored {
            stored += events;
        } else {
            failed_keys.extend(keys);
        }
    }
    if !failed_keys.is_empty() {
        for key in failed_keys {
            if let Err(problem) = receivers.deliveries.forget(key).await {
                tracing::warn!(%problem, "could not forget a failed event's dedupe key; its retry may be taken for a duplicate");
            }
        }
        count(receivers, source, "failed", accepted.saturating_sub(stored));
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "storage is unavailable; the events were not all stored, please retry",
        );
    }
    count(receivers, source, "stored", stored);
    count(receivers, source, "duplicate", duplicates);
    count(receivers, source, "refused", refusals.len());
    let refused: Vec<Value> = refusals
        .iter()
        .map(|r| json!({ "index": r.index, "reason": r.reason, "detail": r.detail }))
        .collect();
    if accepted == 0 && duplicates == 0 && !refusals.is_empty() {
        // Nothing in the body can ever be stored: a 4xx, which the tools do not retry.
        let no_session = refusals
            .iter()
            .all(|r| matches!(r.reason, "no_session" | "invalid_session"));
        let (status, code) = if no_session {
            (StatusCode::UNPROCESSABLE_ENTITY, NO_SESSION_CODE)
        } else {
            (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST)
        };
        let message = refusals
            .first()
            .map(|r| r.detail.clone())
            .unwrap_or_default();
        return (
            status,
            axum::Json(json!({ "error_code": code, "error_msg": message, "refused": refused })),
        )
            .into_response();
    }
    axum::Json(json!({
        "status": "ok",
        "stored": stored,
        "duplicates": duplicates,
        "refused": refused,
    }))
    .into_response()
}

fn shape_hint(source: SourceKind) -> &'static str {
    match source {
        SourceKind::PostHog => {
            " (expected PostHog's HTTP Webhook body {\"event\": {...}, \"person\": {...}}, Autoplay's flat destination body, or an array of either)"
        }
        SourceKind::Amplitude => {
            " (expected an Amplitude event-streaming event or an array of them)"
        }
        SourceKind::Segment => {
            " (expected a Segment-spec track, page or identify call, or {\"batch\": [...]})"
        }
        _ => "",
    }
}

/// The session an event belongs to: its own id, or for a sessionless Segment event the
/// person's session by the 30-minute idle rule. `Ok(Err(..))` is a refusal (never pooled);
/// `Err` a backend outage (503).
async fn session_of(
    receivers: &Receivers,
    product_id: &str,
    event: &SourceEvent,
    now: f64,
) -> Result<Result<SessionId, (&'static str, &'static str)>, Response> {
    if let Some(raw) = event.session_id.as_deref().filter(|s| !s.trim().is_empty()) {
        return Ok(SessionId::parse(raw).map_err(|_| {
            (
                "invalid_session",
                "an event whose session id is too long or holds control characters",
            )
        }));
    }
    let Some(person) = event
        .sessionless_person
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    else {
        return Ok(Err((
            "no_session",
            "an event without a session id (never pooled with other people's)",
        )));
    };
    let at = event.timestamp.filter(|t| t.is_finite()).unwrap_or(now);
    match receivers
        .idle_sessions
        .session_for(product_id, person.trim(), at)
        .await
    {
        Ok(id) => {
            Ok(SessionId::parse(&id).map_err(|_| ("invalid_session", "a derived session id")))
        }
        Err(problem) => {
            receivers
                .ingestor
                .metrics()
                .store_error("ingest_idle_sessions");
            tracing::error!(%problem, "could not place a sessionless event in a session");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                "storage is unavailable; please retry",
            ))
        }
    }
}

/// Add an accepted event to its session's batch: actions in time order, identity from the
/// newest event that carries one.
fn add_event(
    sessions: &mut HashMap<SessionId, SessionEvents>,
    session_id: SessionId,
    product_id: &str,
    source: SourceKind,
    event: SourceEvent,
    key: Option<DeliveryKey>,
    now: f64,
) {
    let entry = sessions
        .entry(session_id.clone())
        .or_insert_with(|| SessionEvents {
            batch: ActionBatch {
                session_id,
                product_id: Some(product_id.to_string()),
                user_id: None,
                email: None,
                conversation_id: None,
                actions: Vec::new(),
                forwarded_at: None,
                source: Some(source),
            },
            events: 0,
            keys: Vec::new(),
            identity_time: f64::NEG_INFINITY,
        });
    entry.events += 1;
    let time = event.timestamp.unwrap_or(now);
    if (event.user_id.is_some() || event.email.is_some()) && time >= entry.identity_time {
        entry.identity_time = time;
        if event.user_id.is_some() {
            entry.batch.user_id = event.user_id;
        }
        if event.email.is_some() {
            entry.batch.email = event.email;
        }
    }
    if let Some(action) = event.action {
        entry.batch.actions.push(action);
    } else if let Some(url) = event.left_page {
        // Not an action of its own: the session model takes it out of the batch and ends
        // time on the page with it.
        entry.batch.actions.push(Action::new(ActionParts {
            kind: PAGE_LEAVE_KIND.to_string(),
            title: "Page Leave".to_string(),
            timestamp_start: Some(time),
            canonical_url: url,
            ..ActionParts::default()
        }));
    }
    entry.keys.extend(key);
}

/// How long a deduplication key is kept by default (as the webhook's).
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_signatures_are_hex_hmac_sha1() {
        // RFC 2202 test case 2.
        assert_eq!(
            segment_signature("Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }
}
