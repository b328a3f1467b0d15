//! The REST context API, for chatbot platforms without MCP (Botpress, Ada, Landbot, Rasa,
//! Dify's HTTP Request node, custom bridges).
//!
//! - `GET /users/{product_id}/{user_id}/live-activity?limit=N`: Autoplay's own pull API, so a
//!   client written for Autoplay works unchanged. `{"actions": [...]}`, oldest first, in the
//!   connector's action format: the raw actions this server still holds for the person's newest
//!   session (recently summarised ones included), the newest `limit` of them. Older activity
//!   survives only in the session summary, which `/v1/context` returns.
//! - `GET /v1/context?session_id=…|email=…|user_id=…`: the records `/retrieval` would return,
//!   plus one `text` field with all their contents joined, ready to paste into a prompt.
//!
//! Both take the `/retrieval` keys (`LIVECTX_API_KEY`) and resolve an identifier exactly like
//! `/retrieval` resolves a claim, so signed identifiers and `--no-email-lookup` apply. Unlike
//! `/retrieval` (whose caller, Dify, only understands 403), a bad key is a 401 here.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::ApiContext;
use crate::api::ApiState;
use crate::api::auth::{ApiKey, KeyScope};
use crate::api::identity::{Claim, ClaimKind, ClaimOutcome, IdentityResolver, Rejection, Via};
use crate::api::retrieval::{DEFAULT_TOP_K, MAX_TOP_K, records_for};
use crate::clock;
use crate::diagnostics::{LookupChannel, LookupEntry, LookupMiss, clip};
use crate::render::records::{Record, join_content};
use crate::session::model::{Action, Session};
use crate::session::store::StoreError;
use crate::web::auth::{self, ApiKeys, KeyError};
use crate::web::error::ErrorBody;
use crate::web::error::{ApiError, codes};

/// Where Autoplay's pull API lives (axum path syntax).
pub const LIVE_ACTIVITY_PATH: &str = "/users/{product_id}/{user_id}/live-activity";
/// Where the prompt-ready context lives.
pub const CONTEXT_PATH: &str = "/v1/context";
/// Actions returned when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 50;
/// Most actions one request returns; larger limits are lowered to this.
pub const MAX_LIMIT: usize = 500;
/// The lookup log's name for the live-activity route.
const LIVE_ACTIVITY_ROUTE: &str = "live-activity";

/// The REST routes' keys: `LIVECTX_API_KEY`, refused with `401` and a challenge.
#[derive(Debug)]
pub enum RestKeys {}

impl KeyScope for RestKeys {
    const SURFACE: &'static str = "REST request";

    fn keys(state: &ApiContext) -> &ApiKeys {
        &state.api_keys
    }

    fn refusal(reason: KeyError) -> Response {
        auth::unauthorized(reason, "LIVECTX_API_KEY")
    }

    fn lookup(path: &str) -> Option<LookupEntry> {
        let route = if path == CONTEXT_PATH {
            CONTEXT_PATH
        } else {
            LIVE_ACTIVITY_ROUTE
        };
        Some(LookupEntry::new(LookupChannel::Rest, route))
    }
}

/// One action in Autoplay's wire format (the connector's `actions[]` objects), so clients
/// written for Autoplay's pull API parse it unchanged. Every field is always present; unknown
/// values are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct LiveAction {
    /// Position of the action in its session as the connector numbered it; null when the
    /// producer sent none.
    pub index: Option<i64>,
    /// `pageview`, `click`, `submit`, `type`, `focus`, ... (lower case).
    #[serde(rename = "type")]
    #[schema(example = "click")]
    pub kind: String,
    /// Short label, e.g. "Page Load: Dashboard" or "Click Export CSV".
    pub title: String,
    /// What the user did, in natural language.
    pub description: String,
    /// Unix seconds (float).
    pub timestamp_start: Option<f64>,
    /// Unix seconds (float).
    pub timestamp_end: Option<f64>,
    /// The URL as captured, with its query string.
    pub raw_url: String,
    /// The URL with ids collapsed to `:id`.
    pub canonical_url: String,
    /// The browser session the action belongs to.
    pub session_id: String,
    /// The identified user id (or the analytics tool's anonymous id).
    pub user_id: Option<String>,
    /// The user's email, once they are identified.
    pub email: Option<String>,
    /// The chat conversation the session is linked to, if any.
    pub conversation_id: Option<String>,
}

impl LiveAction {
    /// The wire form of a stored action. Stored actions keep only the identity fields that
    /// differ from their batch, so the rest is taken from the session.
    pub fn of(action: &Action, session: &Session) -> Self {
        let identity = action.identity();
        let own = |field: Option<&str>, session_value: &Option<String>| {
            field.map(str::to_string).or_else(|| session_value.clone())
        };
        Self {
            index: action.index(),
            kind: action.kind().to_string(),
            title: action.title().to_string(),
            description: action.description().to_string(),
            timestamp_start: action.timestamp_start(),
            timestamp_end: action.timestamp_end(),
            raw_url: action.raw_url().to_string(),
            canonical_url: action.canonical_url().to_string(),
            session_id: session.id().to_string(),
            user_id: own(
                identity.and_then(|i| i.user_id.as_deref()),
                session.user_id(),
            ),
            email: own(identity.and_then(|i| i.email.as_deref()), session.email()),
            conversation_id: own(
                identity.and_then(|i| i.conversation_id.as_deref()),
                session.conversation_id(),
            ),
        }
    }
}

/// The newest `limit` actions the store still holds for `session` (recently summarised ones
/// included), oldest first.
pub fn live_actions(session: &Session, limit: usize) -> Vec<LiveAction> {
    let held: Vec<&Action> = session.recent_action_iter().collect();
    let skip = held.len().saturating_sub(limit);
    held[skip..]
        .iter()
        .map(|action| LiveAction::of(action, session))
        .collect()
}

/// Body of `GET /users/{product_id}/{user_id}/live-activity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveActivityResponse {
    /// Oldest first; empty when no recent activity is known for this id.
    pub actions: Vec<LiveAction>,
}

/// Body of `GET /v1/context`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ContextResponse {
    /// The records `/retrieval` would return for this person: the Current User Activity
    /// first, then the summary and action batches by relevance to `query`.
    pub records: Vec<Record>,
    /// Every record's `content`, joined by newlines: paste it into a prompt as is. Empty when
    /// no live activity is known for this person.
    pub text: String,
}

/// How an identifier from the MCP tool or the REST API turned out.
pub(crate) enum Lookup {
    Found(Arc<Session>),
    /// Well-formed, but no live session has it (the console shows why).
    Unknown(LookupMiss),
    /// The person's session belongs to another product than the one asked for.
    OtherProduct,
    /// Refused, and why.
    Rejected(Rejection),
}

/// Resolve one identifier claim the way `/retrieval` does, optionally checking that the
/// session belongs to `product`.
pub(crate) async fn look_up(
    state: &ApiState,
    kind: ClaimKind,
    value: &str,
    via: Via,
    product: Option<&str>,
    now: f64,
) -> Result<Lookup, StoreError> {
    let resolver = IdentityResolver {
        store: state.store.as_ref(),
        policy: &state.identity,
        metrics: &state.metrics,
        puller: state.puller.as_deref(),
    };
    let claim = Claim { kind, value, via };
    let session = match resolver.resolve(&claim, None, now).await? {
        ClaimOutcome::Found(session) => session,
        ClaimOutcome::Unknown(miss) => return Ok(Lookup::Unknown(miss)),
        ClaimOutcome::Rejected(reason) => return Ok(Lookup::Rejected(reason)),
    };
    let Some(product) = product else {
        return Ok(Lookup::Found(session));
    };
    if session
        .product_id()
        .as_deref()
        .is_none_or(|own| own == product)
    {
        return Ok(Lookup::Found(session));
    }
    // The person's newest session is in another product; they may still have one in this one.
    match resolver.resolve(&claim, Some(product), now).await? {
        ClaimOutcome::Found(session) => Ok(Lookup::Found(session)),
        _ => Ok(Lookup::OtherProduct),
    }
}

impl Lookup {
    /// Write the outcome into a lookup-log entry.
    pub(crate) fn note(&self, lookup: &mut LookupEntry, value: &str) {
        lookup.signed = crate::api::identity::looks_signed(value);
        match self {
            Self::Found(session) => lookup.session = Some(session.id().to_string()),
            Self::Unknown(miss) => lookup.miss = Some(*miss),
            Self::OtherProduct => lookup.miss = Some(LookupMiss::OtherProduct),
            Self::Rejected(rejection) => lookup.miss = Some((*rejection).into()),
        }
    }
}

/// The lookup-log outcome of a refused REST request.
fn note_error(lookup: &mut LookupEntry, error: &ApiError) {
    if lookup.miss.is_none() && lookup.session.is_none() {
        lookup.miss = Some(if error.status == StatusCode::SERVICE_UNAVAILABLE {
            LookupMiss::StoreUnavailable
        } else {
            LookupMiss::BadRequest
        });
    }
}

/// A refused identifier as an HTTP error: a template variable nobody filled in is the
/// caller's configuration bug (400); everything else is a refusal (403).
impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::UnresolvedVariable => ApiError::bad_request(rejection.message()),
            _ => ApiError::new(
                StatusCode::FORBIDDEN,
                codes::IDENTITY_REJECTED,
                rejection.message(),
            ),
        }
    }
}

fn store_unavailable(state: &ApiState, error: &StoreError) -> ApiError {
    state.metrics.store_error("rest");
    tracing::warn!(%error, "storage unavailable during a REST request");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        codes::UNAVAILABLE,
        "the session store is unavailable right now; try again shortly",
    )
}

/// Parse a positive whole number from a query string, lowering it to `max`.
fn parse_count(name: &str, raw: &str, max: usize) -> Result<usize, ApiError> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(max)),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be a whole number from 1 to {max}, not {raw:?}"
        ))),
    }
}

fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::bad_request(format!("the query string cannot be read: {e}")))
}

fn refused(route: &str, error: ApiError) -> Response {
    tracing::warn!(route, status = error.status.as_u16(), code = error.code, message = %error.message, "REST request refused");
    error.into_response()
}

/// `GET /users/{product_id}/{user_id}/live-activity`: Autoplay's pull API.
#[utoipa::path(
    get,
    path = "/users/{product_id}/{user_id}/live-activity",
    tag = "context",
    operation_id = "getLiveActivity",
    summary = "Recent actions of one user, oldest first (Autoplay-compatible)",
    description = "The raw UI actions livectx still holds for the person's newest live session (recently summarised ones included), oldest first, in Autoplay's action format: the newest `limit` of them. Older activity survives only in the session summary; use /v1/context for the summary and the Current User Activity text. An empty list means no recent activity is known for this id.",
    params(
        ("product_id" = String, Path, description = "The Autoplay product id the session must belong to."),
        ("user_id" = String, Path, description = "A session id, email or user id (signed when the server requires it)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many of the newest actions to return (default 50, at most 500)."),
    ),
    responses(
        (status = 200, description = "The actions; empty when the id is unknown", body = LiveActivityResponse),
        (status = 400, description = "Bad limit or an unresolved template variable", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The session belongs to another product, or the identifier was refused", body = ErrorBody),
        (status = 503, description = "The session store is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn live_activity(
    _key: ApiKey<RestKeys>,
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    const ROUTE: &str = LIVE_ACTIVITY_ROUTE;
    let started = Instant::now();
    let mut lookup = LookupEntry::new(LookupChannel::Rest, ROUTE);
    let response = match live_activity_inner(&state, path, query, &mut lookup).await {
        Ok(actions) => {
            lookup.records = actions.len();
            Json(LiveActivityResponse { actions }).into_response()
        }
        Err(error) => {
            note_error(&mut lookup, &error);
            refused(ROUTE, error)
        }
    };
    lookup.latency = started.elapsed();
    state.diagnostics.lookups.record(lookup);
    response
}

async fn live_activity_inner(
    state: &ApiState,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    lookup: &mut LookupEntry,
) -> Result<Vec<LiveAction>, ApiError> {
    let Path((product, user)) =
        path.map_err(|e| ApiError::bad_request(format!("the path cannot be read: {e}")))?;
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in query_pairs(query)? {
        if name == "limit" {
            limit = parse_count("limit", &value, MAX_LIMIT)?;
        }
    }
    let product = product.trim();
    lookup.knowledge_id = clip(product);
    lookup.identifier = clip(&user);
    lookup.via = Some("path");
    let now = clock::now();
    let found = look_up(state, ClaimKind::Any, &user, Via::Rest, Some(product), now)
        .await
        .map_err(|e| store_unavailable(state, &e))?;
    found.note(lookup, &user);
    match found {
        Lookup::Found(session) => Ok(live_actions(&session, limit)),
        Lookup::Unknown(_) => Ok(Vec::new()),
        Lookup::OtherProduct => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::PRODUCT_MISMATCH,
            format!("this user's session belongs to another product than {product:?}"),
        )),
        Lookup::Rejected(rejection) => Err(rejection.into()),
    }
}

/// `GET /v1/context`: the `/retrieval` records of one person plus prompt-ready text.
#[utoipa::path(
    get,
    path = "/v1/context",
    tag = "context",
    operation_id = "getContext",
    summary = "Live context of one user, ready for a prompt",
    description = "What livectx knows about one person's live session, as the records Dify's /retrieval returns (the Current User Activity first, then the session summary and recent action batches, ranked by relevance to `query`), plus `text`: all record contents joined, ready to paste into a prompt. Name the person with exactly one of session_id, email or user_id. Unknown people get no records and an empty text.",
    params(
        ("session_id" = Option<String>, Query, description = "The browser session id."),
        ("email" = Option<String>, Query, description = "The user's email (refused when the server disables email lookups)."),
        ("user_id" = Option<String>, Query, description = "The product's user id."),
        ("query" = Option<String>, Query, description = "The user's question, to rank summary and action records by relevance."),
        ("top_k" = Option<u32>, Query, minimum = 1, maximum = 50, description = "Most records to return (default 5, at most 50)."),
    ),
    responses(
        (status = 200, description = "The records and the joined text; empty when the person is unknown", body = ContextResponse),
        (status = 400, description = "Not exactly one identity parameter, a bad top_k, or an unresolved template variable", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The identifier was refused (unsigned, forged, expired, email lookups disabled)", body = ErrorBody),
        (status = 503, description = "The session store is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn context(
    _key: ApiKey<RestKeys>,
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    const ROUTE: &str = "context";
    let started = Instant::now();
    let mut lookup = LookupEntry::new(LookupChannel::Rest, CONTEXT_PATH);
    let response = match context_inner(&state, query, &mut lookup).await {
        Ok(records) => {
            lookup.records = records.len();
            let text = join_content(&records);
            Json(ContextResponse { records, text }).into_response()
        }
        Err(error) => {
            note_error(&mut lookup, &error);
            refused(ROUTE, error)
        }
    };
    lookup.latency = started.elapsed();
    state.diagnostics.lookups.record(lookup);
    response
}

const IDENTITY_PARAMS: [(&str, ClaimKind); 3] = [
    ("session_id", ClaimKind::SessionId),
    ("email", ClaimKind::Email),
    ("user_id", ClaimKind::UserId),
];

async fn context_inner(
    state: &ApiState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    lookup: &mut LookupEntry,
) -> Result<Vec<Record>, ApiError> {
    let pairs = query_pairs(query)?;
    let mut identities: Vec<(&str, ClaimKind, &str)> = Vec::new();
    let mut question = "";
    let mut top_k = DEFAULT_TOP_K;
    for (name, value) in &pairs {
        if let Some((param, kind)) = IDENTITY_PARAMS.iter().find(|(p, _)| p == name) {
            // An empty value is a template variable the caller left blank: absent.
            if !value.trim().is_empty() {
                identities.push((param, *kind, value.as_str()));
            }
        } else if name == "query" {
            question = value;
        } else if name == "top_k" {
            top_k = parse_count("top_k", value, MAX_TOP_K)?;
        }
    }
    let (kind, value) = match identities.as_slice() {
        [(param, kind, value)] => {
            lookup.via = Some(param);
            lookup.identifier = clip(value);
            lookup.query_line = clip(question.lines().next().unwrap_or(""));
            (*kind, *value)
        }
        [] => {
            return Err(ApiError::bad_request(
                "name the user with exactly one of session_id, email or user_id (none was given, or it was empty)",
            ));
        }
        several => {
            let names: Vec<&str> = several.iter().map(|(name, _, _)| *name).collect();
            return Err(ApiError::bad_request(format!(
                "name the user with exactly one of session_id, email or user_id, not {}",
                names.join(" and ")
            )));
        }
    };
    let now = clock::now();
    let found = look_up(state, kind, value, Via::Rest, None, now)
        .await
        .map_err(|e| store_unavailable(state, &e))?;
    found.note(lookup, value);
    match found {
        Lookup::Found(session) => Ok(records_for(
            state, &session, question, None, 0.0, top_k, now,
        )),
        Lookup::Unknown(_) | Lookup::OtherProduct => Ok(Vec::new()),
        Lookup::Rejected(rejection) => Err(rejection.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};
    use crate::session::model::{ActionIdentity, SessionId, SessionLimits};

    #[test]
    fn actions_come_oldest_first_with_identity_filled_from_the_session() {
        let mut session = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        let limits = SessionLimits { max_chunks: 50 };
        let mut other = action("click", "B", "/b", 2.0).parts();
        other.identity = Some(Box::new(ActionIdentity {
            email: Some("other@example.com".into()),
            ..ActionIdentity::default()
        }));
        other.raw_url = Some("/b?x=1".into());
        let other = Action::new(other);
        session.append(
            batch("s1", vec![action("pageview", "A", "/a", 1.0), other]),
            1.0,
            limits,
        );
        session.append(
            batch("s1", vec![action("click", "C", "/c", 3.0)]),
            3.0,
            limits,
        );

        let all = live_actions(&session, 10);
        let titles: Vec<&str> = all.iter().map(|a| a.title.as_str()).collect();
        assert_eq!(titles, ["A", "B", "C"]);
        assert_eq!(all[0].email.as_deref(), Some("a@example.com"));
        assert_eq!(all[0].user_id.as_deref(), Some("u1"));
        assert_eq!(all[1].email.as_deref(), Some("other@example.com"));
        assert_eq!(all[1].user_id.as_deref(), Some("u1"));
        assert_eq!(all[1].raw_url, "/b?x=1");
        assert_eq!(all[1].canonical_url, "/b");
        assert_eq!(all[2].raw_url, "/c");

        let newest: Vec<String> = live_actions(&session, 2)
            .into_iter()
            .map(|a| a.title)
            .collect();
        assert_eq!(newest, ["B", "C"]);
    }

    #[test]
    fn counts_are_bounded_and_garbage_is_a_400() {
        assert_eq!(parse_count("limit", "7", 500), Ok(7));
        assert_eq!(parse_count("limit", "9000", 500), Ok(500));
        for bad in ["0", "-1", "ten", "", "1.5"] {
            let error = parse_count("limit", bad, 500).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
