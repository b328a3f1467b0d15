//! HTTP plumbing shared by every route, below both the APIs and the ingest receivers: the JSON
//! error type and its codes, body reading with limits, bearer and HMAC helpers, API keys, the
//! per-IP rate limit and the request timeout. Nothing here knows about sessions or routes.

pub mod auth;
pub mod error;
pub mod limits;
