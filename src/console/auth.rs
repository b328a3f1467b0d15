//! Who may use the console: one operator key, exchanged for a server-side login whose random
//! token is the cookie (the key itself never leaves the login form), a CSRF token per login,
//! and a limit on wrong keys per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::sync::lock;
use crate::web::auth::ApiKeys;

/// The login cookie.
pub const SESSION_COOKIE: &str = "livectx_console";
/// The pre-login CSRF cookie (double submit: the login form carries the same value).
pub const LOGIN_CSRF_COOKIE: &str = "livectx_console_csrf";
/// How long a login lasts.
pub const LOGIN_TTL_SECS: f64 = 12.0 * 3600.0;
/// Logins held at most; beyond, the oldest is dropped.
const MAX_LOGINS: usize = 256;
/// Wrong keys allowed per client address per window...
pub const MAX_FAILURES: u32 = 5;
/// ...of this many seconds.
pub const FAILURE_WINDOW_SECS: f64 = 60.0;
/// Client addresses tracked for wrong keys at most.
const MAX_TRACKED: usize = 10_000;

/// A random token (256 bits from the thread's CSPRNG), hex.
pub fn random_token() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// One operator's login.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    pub csrf: String,
    pub expires_at: f64,
}

/// The console's access rules.
pub struct Access {
    key: ApiKeys,
    /// Logins by the SHA-256 of their cookie token (a memory dump shows no usable token).
    logins: Mutex<HashMap<[u8; 32], Login>>,
    failures: Mutex<HashMap<IpAddr, (u32, f64)>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Access(<key>)")
    }
}

/// Why a login attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    WrongKey,
    /// Too many wrong keys from this address; try again after this many seconds.
    TooMany(u64),
}

impl Access {
    pub fn new(key: &str) -> Self {
        Self {
            key: ApiKeys::new([key]),
            logins: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Check a key typed into the login form; on success, a new login's (token, login).
    pub fn log_in(
        &self,
        presented: &str,
        client: Option<IpAddr>,
        now: f64,
    ) -> Result<(String, Login), LoginError> {
        if let Some(ip) = client
            && let Some((count, since)) = lock(&self.failures).get(&ip).copied()
            && count >= MAX_FAILURES
            && now - since < FAILURE_WINDOW_SECS
        {
            let wait = (FAILURE_WINDOW_SECS - (now - since)).ceil().max(1.0) as u64;
            return Err(LoginError::TooMany(wait));
        }
        if presented.trim().is_empty() || self.key.check_key(presented.trim()).is_err() {
            if let Some(ip) = client {
                let mut failures = lock(&self.failures);
                if failures.len() >= MAX_TRACKED {
                    failures.retain(|_, (_, since)| now - *since < FAILURE_WINDOW_SECS);
                }
                let entry = failures.entry(ip).or_insert((0, now));
                if now - entry.1 >= FAILURE_WINDOW_SECS {
                    *entry = (0, now);
                }
                entry.0 += 1;
            }
            return Err(LoginError::WrongKey);
        }
        if let Some(ip) = client {
            lock(&self.failures).remove(&ip);
        }
        let token = random_token();
        let login = Login {
            csrf: random_token(),
            expires_at: now + LOGIN_TTL_SECS,
        };
        let mut logins = lock(&self.logins);
        logins.retain(|_, l| l.expires_at > now);
        if logins.len() >= MAX_LOGINS
            && let Some(oldest) = logins
                .iter()
                .min_by(|a, b| a.1.expires_at.total_cmp(&b.1.expires_at))
                .map(|(k, _)| *k)
        {
            logins.remove(&oldest);
        }
        logins.insert(token_digest(&token), login.clone());
        Ok((token, login))
    }

    /// The login a request's cookie names, if it is live.
    pub fn login_of(&self, headers: &HeaderMap, now: f64) -> Option<Login> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let logins = lock(&self.logins);
        logins
            .get(&token_digest(token))
            .filter(|l| l.expires_at > now)
            .cloned()
    }

    /// End the login a request's cookie names.
    pub fn log_out(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, SESSION_COOKIE) {
            lock(&self.logins).remove(&token_digest(token));
        }
    }
}

/// Compare two tokens in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of one cookie.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=/console`, `Secure` when the
/// console is reached over HTTPS; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Is the console reached over HTTPS (a TLS-terminating proxy says so, or the public URL)?
pub fn is_https(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    forwarded || public_url.is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_right_key_gives_a_login_its_cookie_finds_and_logout_ends() {
        let access = Access::new("console-key-123456");
        let (token, login) = access.log_in("console-key-123456", None, 100.0).unwrap();
        assert_ne!(token, "console-key-123456");
        assert_eq!(token.len(), 64);
        let headers = with_cookie(&format!("other=1; {SESSION_COOKIE}={token}"));
        assert_eq!(
            access.login_of(&headers, 101.0).map(|l| l.csrf),
            Some(login.csrf)
        );
        assert!(
            access
                .login_of(&headers, 100.0 + LOGIN_TTL_SECS + 1.0)
                .is_none()
        );
        access.log_out(&headers);
        assert!(access.login_of(&headers, 101.0).is_none());
        assert!(
            access
                .login_of(&with_cookie(&format!("{SESSION_COOKIE}=forged")), 101.0)
                .is_none()
        );
    }

    #[test]
    fn wrong_keys_are_limited_per_address() {
        let access = Access::new("console-key-123456");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                access.log_in("nope", Some(ip), 10.0),
                Err(LoginError::WrongKey)
            );
        }
        assert!(matches!(
            access.log_in("console-key-123456", Some(ip), 11.0),
            Err(LoginError::TooMany(_))
        ));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(
            access
                .log_in("console-key-123456", Some(other), 11.0)
                .is_ok()
        );
        assert!(
            access
                .log_in("console-key-123456", Some(ip), 10.0 + FAILURE_WINDOW_SECS)
                .is_ok()
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_https() {
        let plain = set_cookie(SESSION_COOKIE, "t", 60, false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie(SESSION_COOKIE, "t", 60, true).ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        assert!(!is_https(&headers, None));
        assert!(is_https(&headers, Some("https://livectx.example.com")));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(is_https(&headers, None));
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }
}
