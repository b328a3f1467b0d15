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
///
/// Why not `axum::body::to_bytes`: a small request's body arrives as one frame, and collecting
/// it through `Limited` and `Collect` (a list of buffers, then a copy) cost about a thousand
/// instructions on every `/retrieval` (docs/benchmarks.md). Here a body of one frame is that
/// frame, with no copy; only a body of several frames is joined.
pub async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use axum::body::HttpBody as _;
    use http_body_util::BodyExt as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::too_large(limit));
    }
    let mut first = bytes::Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        // A body that cannot be read to its end is refused as one over the limit was, so a
        // client that drops mid-body is never answered as if it had sent less.
        let Ok(data) = frame.map_err(|_| ApiError::too_large(limit))?.into_data() else {
            // Trailers carry no body bytes.
            continue;
        };
        let read = first.len() + joined.as_ref().map_or(0, |j| j.len());
        if data.len() > limit.saturating_sub(read) {
            return Err(ApiError::too_large(limit));
        }
        match joined.as_mut() {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let first = std::mem::take(&mut first);
                let mut both = bytes::BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(&first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(joined.map_or(first, bytes::BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    /// A body that arrives in these frames, with no size hint.
    fn frames(parts: Vec<Result<Frame<Bytes>, std::io::Error>>) -> Body {
        Body::new(StreamBody::new(futures_util::stream::iter(parts)))
    }

    fn data(text: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_in_one_frame_or_many() {
        assert_eq!(read_body(Body::from("{}"), 2).await.unwrap(), "{}");
        assert_eq!(read_body(Body::empty(), 0).await.unwrap(), "");
        let many = frames(vec![data("ab"), data(""), data("cd"), data("e")]);
        assert_eq!(read_body(many, 5).await.unwrap(), "abcde");
        // An empty first frame, then the data.
        let late = frames(vec![data(""), data("xyz")]);
        assert_eq!(read_body(late, 3).await.unwrap(), "xyz");
        // Trailers carry no body bytes.
        let mut trailers = axum::http::HeaderMap::new();
        trailers.insert("x-check", axum::http::HeaderValue::from_static("1"));
        let with_trailers = frames(vec![data("ab"), Ok(Frame::trailers(trailers))]);
        assert_eq!(read_body(with_trailers, 2).await.unwrap(), "ab");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_or_cut_off_is_refused() {
        // Known from its length before reading, and found while reading.
        let error = read_body(Body::from("abc"), 2).await.unwrap_err();
        assert_eq!(error, ApiError::too_large(2));
        let streamed = frames(vec![data("ab"), data("c")]);
        assert_eq!(
            read_body(streamed, 2).await.unwrap_err(),
            ApiError::too_large(2)
        );
        let cut = frames(vec![data("ab"), Err(std::io::Error::other("reset"))]);
        assert_eq!(
            read_body(cut, 10).await.unwrap_err(),
            ApiError::too_large(10)
        );
    }
}
