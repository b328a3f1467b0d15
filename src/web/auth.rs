//! API keys for the read routes (`/retrieval`, `/mcp`, the REST API).
//!
//! Keys are compared as SHA-256 digests in constant time, against every configured key, so
//! neither timing nor key length tells an attacker anything.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a request's key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// No `Authorization` header, or not `Bearer <key>`.
    Missing,
    /// A key that is not configured.
    Wrong,
}

/// A set of accepted keys; empty means "no authentication".
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Keys from a list (blank entries ignored).
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let digests = keys
            .into_iter()
            .map(|k| k.as_ref().trim().to_string())
            .filter(|k| !k.is_empty())
            .map(|k| digest(k.as_bytes()))
            .collect();
        Self { digests }
    }

    /// No keys configured: every request is accepted.
    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// Keys from both sets.
    pub fn union(&self, other: &ApiKeys) -> ApiKeys {
        let mut digests = self.digests.clone();
        digests.extend(other.digests.iter().copied());
        ApiKeys { digests }
    }

    /// Check an `Authorization` header value.
    pub fn check(&self, header: Option<&HeaderValue>) -> Result<(), KeyError> {
        if self.is_open() {
            return Ok(());
        }
        let presented = header
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(KeyError::Missing)?;
        self.check_key(presented)
    }

    /// Check a bare key.
    pub fn check_key(&self, presented: &str) -> Result<(), KeyError> {
        if self.is_open() {
            return Ok(());
        }
        let presented = digest(presented.as_bytes());
        let mut matched = subtle::Choice::from(0u8);
        for known in &self.digests {
            matched |= known.ct_eq(&presented);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(KeyError::Wrong)
        }
    }
}

/// The 401 answer of the MCP and REST routes: the usual JSON error body plus an RFC 6750
/// `WWW-Authenticate` challenge, which MCP clients (rmcp, Dify) read to report "wrong key"
/// instead of a generic failure. `accepted` names the settings whose keys are valid.
pub fn unauthorized(reason: KeyError, accepted: &str) -> Response {
    let (message, challenge) = match reason {
        KeyError::Missing => (
            format!(
                "missing or malformed Authorization header: send \"Authorization: Bearer <key>\" with a key from {accepted}"
            ),
            r#"Bearer realm="livectx""#,
        ),
        KeyError::Wrong => (
            format!("authorization failed: the key is not one of {accepted}"),
            r#"Bearer realm="livectx", error="invalid_token""#,
        ),
    };
    let body =
        json!({ "error_code": crate::web::error::codes::UNAUTHORIZED, "error_msg": message });
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

impl KeyError {
    /// Short label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Wrong => "wrong",
        }
    }
}

/// HMAC-SHA256 of `message` under `key`, ready to `finalize` or to `verify_slice` (which
/// compares in constant time). Used for webhook signatures and signed identities.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac
}

/// The token of `Bearer <token>` (scheme case-insensitive), if well-formed.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_configured_key_and_refuses_others() {
        let keys = ApiKeys::new(["k1", " k2 ", ""]);
        assert_eq!(
            keys.check(Some(&HeaderValue::from_static("Bearer k2"))),
            Ok(())
        );
        assert_eq!(
            keys.check(Some(&HeaderValue::from_static("bearer k1"))),
            Ok(())
        );
        assert_eq!(
            keys.check(Some(&HeaderValue::from_static("Bearer k3"))),
            Err(KeyError::Wrong)
        );
        assert_eq!(
            keys.check(Some(&HeaderValue::from_static("Basic k1"))),
            Err(KeyError::Missing)
        );
        assert_eq!(
            keys.check(Some(&HeaderValue::from_static("Bearer"))),
            Err(KeyError::Missing)
        );
        assert_eq!(keys.check(None), Err(KeyError::Missing));
    }

    #[test]
    fn no_keys_means_open() {
        assert_eq!(ApiKeys::new(Vec::<String>::new()).check(None), Ok(()));
    }
}
