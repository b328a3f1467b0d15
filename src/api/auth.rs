//! The one API-key check of the read routes, as an extractor: `/retrieval`, the REST routes and
//! `/mcp` differ only in which keys they accept and how they answer a refusal (Dify expects a
//! `403` with its own codes; MCP and REST clients read a `401` with a `WWW-Authenticate`
//! challenge), so each is a [`KeyScope`] and [`ApiKey`] does the rest: check in constant time,
//! log, note the refusal in the console's lookup log, answer. Refusals are also counted by
//! `livectx_http_requests_total{status}`.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{ApiContext, ApiState};
use crate::diagnostics::{LookupChannel, LookupEntry, LookupMiss};
use crate::web::auth::{self, ApiKeys, KeyError};
use crate::web::error::{ApiError, codes};

/// Which keys a group of routes accepts, and how it answers a request without one.
pub trait KeyScope: Send + Sync + 'static {
    /// Names the surface in the log line ("{SURFACE} refused: bad key").
    const SURFACE: &'static str;
    /// The accepted keys (none configured: every request passes).
    fn keys(state: &ApiContext) -> &ApiKeys;
    /// The answer to a missing or wrong key.
    fn refusal(reason: KeyError) -> Response;
    /// The console's lookup-log entry for a refused request to `path`, if the route keeps one.
    fn lookup(_path: &str) -> Option<LookupEntry> {
        None
    }
}

/// Proof that the request carried a key of `S`. Put it first among a handler's extractors
/// so a refusal comes before the body is read.
pub struct ApiKey<S>(PhantomData<S>);

/// The answer to a refused key (already logged and noted when this is built), boxed: a
/// refusal is rare and an accepted key's `Result` stays small.
#[derive(Debug)]
pub struct KeyRefused(Box<Response>);

impl IntoResponse for KeyRefused {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl<S: KeyScope> ApiKey<S> {
    /// The check the extractor makes, for a route that is served without the router
    /// (`api::ApiService`'s `/retrieval`): the same keys, log line, lookup-log note and answer.
    pub fn check(state: &ApiContext, headers: &HeaderMap, path: &str) -> Result<Self, KeyRefused> {
        let Err(reason) = S::keys(state).check(headers.get(header::AUTHORIZATION)) else {
            return Ok(Self(PhantomData));
        };
        tracing::warn!(
            route = path,
            reason = reason.as_str(),
            "{} refused: bad key",
            S::SURFACE
        );
        if let Some(mut lookup) = S::lookup(path) {
            lookup.miss = Some(LookupMiss::BadKey);
            state.diagnostics.lookups.record(lookup);
        }
        Err(KeyRefused(Box::new(S::refusal(reason))))
    }
}

impl<S: KeyScope> FromRequestParts<ApiState> for ApiKey<S> {
    type Rejection = KeyRefused;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, KeyRefused> {
        Self::check(state, &parts.headers, parts.uri.path())
    }
}

/// `/retrieval`: `LIVECTX_API_KEY`, refused the way Dify expects (`403` for every key problem).
#[derive(Debug)]
pub enum RetrievalKeys {}

impl KeyScope for RetrievalKeys {
    const SURFACE: &'static str = "retrieval";

    fn keys(state: &ApiContext) -> &ApiKeys {
        &state.api_keys
    }

    fn refusal(reason: KeyError) -> Response {
        let error = match reason {
            KeyError::Missing => ApiError::new(
                StatusCode::FORBIDDEN,
                codes::MALFORMED_AUTHORIZATION,
                "missing or malformed Authorization header: expected \"Authorization: Bearer <key>\"",
            ),
            KeyError::Wrong => ApiError::new(
                StatusCode::FORBIDDEN,
                codes::AUTHORIZATION_FAILED,
                "authorization failed: the API key is not one of LIVECTX_API_KEY",
            ),
        };
        error.into_response()
    }

    fn lookup(_path: &str) -> Option<LookupEntry> {
        Some(LookupEntry::new(LookupChannel::Retrieval, "/retrieval"))
    }
}

/// `/mcp`: `LIVECTX_API_KEY` or `LIVECTX_MCP_KEY`, refused with `401` and a challenge before
/// rmcp sees the request.
#[derive(Debug)]
pub enum McpKeys {}

impl KeyScope for McpKeys {
    const SURFACE: &'static str = "MCP request";

    fn keys(state: &ApiContext) -> &ApiKeys {
        &state.mcp.keys
    }

    fn refusal(reason: KeyError) -> Response {
        auth::unauthorized(reason, "LIVECTX_API_KEY or LIVECTX_MCP_KEY")
    }
}
