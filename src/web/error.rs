//! Error responses: always a status and a readable JSON body.
//!
//! The body follows Dify's documented convention `{"error_code": N, "error_msg": "..."}` on every
//! route, so one client-side check fits all. Newer Dify shows the raw body to the operator, so
//! messages say what to fix. Permanent problems are 4xx: a 5xx makes Dify and the connector retry.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The error body every route answers with, as `/openapi.json` documents it (the routes write
/// it through [`ApiError`]).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Dify's codes 1001 and 1002, or livectx's 4xxx / 5xxx (see docs/operations.md#errors).
    pub error_code: u32,
    /// What went wrong and what to fix.
    pub error_msg: String,
}

/// Error codes beyond Dify's own (1001, 1002, 2001).
pub mod codes {
    /// Authorization header missing or not `Bearer <key>` (Dify's code).
    pub const MALFORMED_AUTHORIZATION: u32 = 1001;
    /// The key is not one of the configured keys (Dify's code).
    pub const AUTHORIZATION_FAILED: u32 = 1002;
    /// The request body is not what the route accepts.
    pub const INVALID_REQUEST: u32 = 4000;
    /// Webhook signature missing or wrong.
    pub const INVALID_SIGNATURE: u32 = 4010;
    /// MCP / REST key missing or wrong.
    pub const UNAUTHORIZED: u32 = 4011;
    /// The key does not cover the requested product.
    pub const PRODUCT_MISMATCH: u32 = 4030;
    /// The identifier was refused (unsigned where signing is required, forged, expired,
    /// email lookups disabled).
    pub const IDENTITY_REJECTED: u32 = 4031;
    /// No such route.
    pub const NOT_FOUND: u32 = 4040;
    /// Route exists, method does not.
    pub const METHOD_NOT_ALLOWED: u32 = 4050;
    /// Body larger than the route's limit.
    pub const PAYLOAD_TOO_LARGE: u32 = 4130;
    /// Per-IP rate limit exceeded.
    pub const RATE_LIMITED: u32 = 4290;
    /// A bug: the request was not handled.
    pub const INTERNAL: u32 = 5000;
    /// The storage backend is unavailable; try again.
    pub const UNAVAILABLE: u32 = 5030;
    /// The request took longer than `LIVECTX_REQUEST_TIMEOUT`.
    pub const TIMED_OUT: u32 = 5031;
}

/// An error that becomes an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the {limit}-byte limit"),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error_code": self.code, "error_msg": self.message })),
        )
            .into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

/// Read a request body up to `limit` bytes (413 beyond, checked before reading when
/// `Content-Length` says so).
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}
