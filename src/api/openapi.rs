//! `GET /openapi.json`: an OpenAPI 3.1 description of the HTTP routes, generated with utoipa
//! from the handlers' annotations and the response types themselves, so it cannot drift from
//! what the server answers. Import it into Dify as a custom tool (`?tag=context` keeps only
//! the two chatbot routes), or into any platform that reads OpenAPI.
//!
//! The document is fitted to this server: `servers` is `LIVECTX_PUBLIC_URL`, else the URL the
//! request came in on (Host and `X-Forwarded-Proto` / `X-Forwarded-Host`); the webhook route
//! is listed only when the webhook is enabled.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::api::ApiState;
use crate::api::rest::{ContextResponse, LiveAction, LiveActivityResponse};
use crate::render::records::Record;
use crate::web::error::{ApiError, ErrorBody};

/// Where the document is served.
pub const PATH: &str = "/openapi.json";
/// The Autoplay webhook's route as documented below (the receiver is `ingest::webhook`, mounted
/// by the app; `tests/api/rest.rs` checks every documented route is served).
const WEBHOOK_PATH: &str = "/webhooks/autoplay";

/// `POST /retrieval` body, as Dify sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetrievalBody {
    /// The External Knowledge ID set in Dify (a product id, or an identifier).
    pub knowledge_id: String,
    /// The user's question; its first line may name the user (`session_id: ...`).
    pub query: String,
    pub retrieval_setting: Option<RetrievalSetting>,
    /// Dify's metadata filter; conditions on `session_id`, `email` or `user_id` name the user.
    #[schema(value_type = Option<Object>)]
    pub metadata_condition: Option<Value>,
}

/// Dify's retrieval settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetrievalSetting {
    /// Most records (default 5, at most 50).
    pub top_k: Option<u32>,
    /// Records scoring below this are dropped (the activity record never is).
    pub score_threshold: Option<f64>,
}

/// `POST /retrieval` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetrievalResponse {
    pub records: Vec<Record>,
}

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    #[schema(example = "ok")]
    pub status: String,
    pub version: String,
}

#[utoipa::path(
    post,
    path = "/retrieval",
    tag = "dify",
    operation_id = "retrieval",
    summary = "Dify External Knowledge API",
    description = "Dify calls this when a knowledge base registered as External Knowledge is queried. The user is named by a metadata condition on session_id, email or user_id, by the first line of the query, or by the knowledge id. Bad keys are 403 with Dify's codes 1001/1002. Register only the base URL in Dify: it appends /retrieval itself.",
    request_body(content = RetrievalBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Records, the Current User Activity first; empty when the user is unknown", body = RetrievalResponse),
        (status = 400, description = "The body is not a retrieval request", body = ErrorBody),
        (status = 403, description = "Missing or wrong key", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn retrieval() {}

#[utoipa::path(
    post,
    path = "/webhooks/autoplay",
    tag = "ingest",
    operation_id = "autoplayWebhook",
    summary = "Autoplay connector push (webhook mode)",
    description = "One connector payload (actions, summary or usertour_trigger) per request, signed with AUTOPLAY_WEBHOOK_SECRET. Served only when that secret is set. Repeated deliveries of the same body are ignored.",
    params(
        ("X-Connector-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256(secret, raw body)>; or send Authorization: Bearer <secret>"),
    ),
    request_body(content = serde_json::Value, description = "A connector payload", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored, ignored or a duplicate", body = serde_json::Value),
        (status = 400, description = "Not a connector payload", body = ErrorBody),
        (status = 401, description = "Signature missing or wrong", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 503, description = "Storage unavailable; the connector retries", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn autoplay_webhook() {}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Liveness",
    responses((status = 200, description = "The process serves HTTP", body = HealthBody))
)]
#[allow(dead_code)]
fn healthz() {}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    summary = "Readiness",
    description = "200 when the store answers and every stream this replica consumes is connected, 503 otherwise; the body reports each part.",
    responses(
        (status = 200, description = "Ready", body = serde_json::Value),
        (status = 503, description = "Not ready", body = serde_json::Value),
    )
)]
#[allow(dead_code)]
fn readyz() {}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
#[allow(dead_code)]
fn metrics() {}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This document",
    params(
        ("tag" = Option<String>, Query, description = "Keep only the operations with this tag (context: the chatbot routes)."),
    ),
    responses((status = 200, description = "OpenAPI 3.1", body = serde_json::Value))
)]
pub async fn openapi_json(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let tag = match query {
        Ok(Query(pairs)) => pairs
            .into_iter()
            .find(|(name, _)| name == "tag")
            .map(|(_, value)| value),
        Err(error) => {
            let error = ApiError::bad_request(format!("the query string cannot be read: {error}"));
            tracing::warn!(message = %error.message, "openapi request refused");
            return error.into_response();
        }
    };
    let mut document = match serde_json::to_value(ApiDoc::openapi()) {
        Ok(document) => document,
        Err(error) => {
            tracing::error!(%error, "the OpenAPI document does not serialize");
            return ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                crate::web::error::codes::INTERNAL,
                "the OpenAPI document could not be generated",
            )
            .into_response();
        }
    };
    if let Some(base) = public_base_url(state.public_url.as_deref(), &headers) {
        document["servers"] = json!([{ "url": base }]);
    }
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        if !state.webhook_enabled {
            paths.remove(WEBHOOK_PATH);
        }
        if let Some(tag) = tag.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            keep_tag(paths, tag);
        }
    }
    Json(document).into_response()
}

/// Drop every operation without `tag`, and paths left empty.
fn keep_tag(paths: &mut serde_json::Map<String, Value>, tag: &str) {
    for item in paths.values_mut() {
        if let Some(operations) = item.as_object_mut() {
            operations.retain(|_, operation| {
                operation
                    .get("tags")
                    .and_then(Value::as_array)
                    .is_some_and(|tags| tags.iter().any(|t| t == tag))
            });
        }
    }
    paths.retain(|_, item| item.as_object().is_some_and(|o| !o.is_empty()));
}

/// The first value of a possibly comma-separated forwarding header.
fn forwarded<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The base URL clients use: the configured one, else the request's own. Only a well-formed
/// authority is echoed, so a forged Host cannot inject text into the document.
pub fn public_base_url(configured: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = configured.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(url.trim_end_matches('/').to_string());
    }
    let host = forwarded(headers, "x-forwarded-host").or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })?;
    let authority = Authority::try_from(host).ok()?;
    let scheme = match forwarded(headers, "x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{authority}"))
}

/// Declares the `bearer` security scheme the operations refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // utoipa copies Cargo.toml's (empty) license, which would be an invalid license object.
        openapi.info.license = None;
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Authorization: Bearer <key>. /retrieval and the REST routes take LIVECTX_API_KEY; /mcp also takes LIVECTX_MCP_KEY.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole document; [`openapi_json`] fits it to the running server.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "livectx",
        description = "Live, per-session user activity for support chatbots: Dify's External Knowledge API, an MCP server, and an Autoplay-compatible REST API, fed by PostHog, Amplitude or Segment-spec events, or by an Autoplay connector's stream or webhooks."
    ),
    paths(
        retrieval,
        crate::api::rest::live_activity,
        crate::api::rest::context,
        crate::api::mcp::endpoint_doc,
        autoplay_webhook,
        healthz,
        readyz,
        metrics,
        openapi_json,
    ),
    components(schemas(
        LiveAction,
        LiveActivityResponse,
        ContextResponse,
        Record,
        ErrorBody,
        RetrievalBody,
        RetrievalSetting,
        RetrievalResponse,
        HealthBody,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "context", description = "Live context of one user, for chatbots without MCP (Botpress, Ada, Landbot, Rasa, Dify's HTTP Request node)"),
        (name = "mcp", description = "Model Context Protocol server"),
        (name = "dify", description = "Dify's External Knowledge API"),
        (name = "ingest", description = "Receiving activity from Autoplay"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn base_url_prefers_configuration_then_forwarding_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("10.0.0.5:8000"));
        assert_eq!(
            public_base_url(None, &headers).as_deref(),
            Some("http://10.0.0.5:8000")
        );
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("ctx.example.com"),
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert_eq!(
            public_base_url(None, &headers).as_deref(),
            Some("https://ctx.example.com")
        );
        assert_eq!(
            public_base_url(Some("https://livectx.example.com/"), &headers).as_deref(),
            Some("https://livectx.example.com")
        );
        let mut forged = HeaderMap::new();
        forged.insert(header::HOST, HeaderValue::from_static("evil\"}, {\"x"));
        assert_eq!(public_base_url(None, &forged), None);
    }

    #[test]
    fn document_has_bearer_scheme_and_typed_parameters() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // Dify's importer reads `schema.type` of each parameter as a single string.
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    assert!(
                        parameter["schema"]["type"].is_string(),
                        "{method} {path}: {parameter}"
                    );
                }
                assert!(operation["operationId"].is_string(), "{method} {path}");
            }
        }
    }
}
