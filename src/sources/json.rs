//! Lenient reading of analytics JSON, shared by the decoders.
//!
//! Analytics tools send optional fields with the wrong type often enough (a number where a
//! string was documented, `''` for "absent"), so every accessor here reads a wrongly typed or
//! blank field as absent instead of failing the event.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{BodyError, MAX_EVENTS_PER_BODY};
use crate::session::model::{MAX_ID_LEN, normalize_email, normalize_user_id};

/// Parse a body as JSON, mapping syntax errors to [`BodyError::Malformed`].
pub(super) fn parse_body(body: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))
}

/// Refuse an array over [`MAX_EVENTS_PER_BODY`].
pub(super) fn within_limit(items: Vec<Value>) -> Result<Vec<Value>, BodyError> {
    if items.len() > MAX_EVENTS_PER_BODY {
        return Err(BodyError::TooManyEvents { count: items.len() });
    }
    Ok(items)
}

/// A non-blank string field, trimmed.
pub(super) fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A nested non-blank string field (`path` of object keys).
pub(super) fn str_path<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut node = value;
    for key in parents {
        node = node.get(*key)?;
    }
    str_at(node, last)
}

/// An identifier that may arrive as a string or an integer (session ids, user ids).
pub(super) fn id_at(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => n
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| n.as_u64().map(|u| u.to_string())),
        _ => None,
    }
}

/// An object field, if it is one.
pub(super) fn object_at<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).filter(|v| v.is_object())
}

/// A user id fit for the identity index.
pub(super) fn user_id(raw: Option<&str>) -> Option<String> {
    raw.and_then(normalize_user_id)
}

/// An email fit for the identity index (it must look like one).
pub(super) fn email(raw: Option<&str>) -> Option<String> {
    raw.filter(|e| e.contains('@')).and_then(normalize_email)
}

/// A time as Unix seconds from an ISO 8601 / RFC 3339 string (`Z`, `±HH:MM` or no offset,
/// `T` or a space, any fraction), or from a number of seconds or milliseconds.
pub(super) fn time_of(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) => parse_time(s),
        Value::Number(n) => n.as_f64().map(epoch_seconds),
        _ => None,
    }
    .filter(|t| t.is_finite() && *t > 0.0)
}

/// Epoch numbers past year 2286 in seconds are milliseconds.
fn epoch_seconds(n: f64) -> f64 {
    if n > 1e10 { n / 1000.0 } else { n }
}

pub(super) fn parse_time(raw: &str) -> Option<f64> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 64 {
        return None;
    }
    if raw.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return raw.parse::<f64>().ok().map(epoch_seconds);
    }
    let (local, offset_secs) = split_offset(raw);
    let time = humantime::parse_rfc3339_weak(local).ok()?;
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(secs - offset_secs)
}

/// Split a trailing `+HH:MM` / `-HHMM` offset off a timestamp (humantime reads UTC only).
fn split_offset(raw: &str) -> (&str, f64) {
    let bytes = raw.as_bytes();
    // The offset sign comes after the time, so after position 10 (`YYYY-MM-DD`).
    let Some(sign_at) = bytes
        .iter()
        .rposition(|b| *b == b'+' || *b == b'-')
        .filter(|i| *i > 10)
    else {
        return (raw, 0.0);
    };
    let digits: String = raw[sign_at + 1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return (raw, 0.0);
    }
    let hours: f64 = digits[..2].parse().unwrap_or(0.0);
    let minutes: f64 = digits[2..].parse().unwrap_or(0.0);
    let sign = if bytes[sign_at] == b'-' { -1.0 } else { 1.0 };
    (&raw[..sign_at], sign * (hours * 3600.0 + minutes * 60.0))
}

/// A dedupe key from a tool's own event id; an id too long to be one is hashed.
pub(super) fn dedupe_id(id: &str) -> String {
    if id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control) {
        id.to_string()
    } else {
        hex_sha256(id.as_bytes())
    }
}

/// SHA-256 hex of a JSON value's canonical bytes (object keys sorted, no whitespace), so the
/// same event hashes the same whether it came alone or inside an array, however formatted.
pub(super) fn canonical_hash(value: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(value, &mut hasher);
    hex::encode(hasher.finalize())
}

fn write_canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_canonical(&Value::String(key.clone()), hasher);
                hasher.update(b":");
                if let Some(v) = map.get(key) {
                    write_canonical(v, hasher);
                }
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_canonical(item, hasher);
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_every_shape_the_tools_send() {
        let t = 1_764_585_508.0; // 2025-12-01T10:38:28Z
        assert_eq!(parse_time("2025-12-01T10:38:28Z"), Some(t));
        assert_eq!(parse_time("2025-12-01T10:38:28.250Z"), Some(t + 0.25));
        assert_eq!(parse_time("2025-12-01 10:38:28.250000"), Some(t + 0.25));
        assert_eq!(parse_time("2025-12-01T11:38:28+01:00"), Some(t));
        assert_eq!(parse_time("2025-12-01T05:38:28-0500"), Some(t));
        assert_eq!(parse_time("2025-12-01T10:38:28+00:00"), Some(t));
        assert_eq!(time_of(&json!(1_764_585_508_000u64)), Some(t));
        assert_eq!(time_of(&json!(1_764_585_508)), Some(t));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time(""), None);
        assert_eq!(time_of(&json!(null)), None);
        assert_eq!(time_of(&json!(-5)), None);
    }

    #[test]
    fn canonical_hash_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        let c: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[2,1]},"b":1}"#).unwrap();
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
        assert_eq!(canonical_hash(&a).len(), 64);
    }

    #[test]
    fn lenient_accessors_read_wrong_types_as_absent() {
        let v = json!({"s": " x ", "blank": " ", "n": 5, "neg": -1, "o": {"k": "v"}, "f": 1.5});
        assert_eq!(str_at(&v, "s"), Some("x"));
        assert_eq!(str_at(&v, "blank"), None);
        assert_eq!(str_at(&v, "n"), None);
        assert_eq!(id_at(&v, "n").as_deref(), Some("5"));
        assert_eq!(id_at(&v, "f"), None);
        assert_eq!(str_path(&v, &["o", "k"]), Some("v"));
        assert_eq!(str_path(&v, &["s", "k"]), None);
        assert_eq!(email(Some("Maria@X.com")).as_deref(), Some("maria@x.com"));
        assert_eq!(email(Some("not-an-email")), None);
    }

    #[test]
    fn long_ids_are_hashed() {
        assert_eq!(dedupe_id("abc"), "abc");
        assert_eq!(dedupe_id(&"x".repeat(1000)).len(), 64);
    }
}
