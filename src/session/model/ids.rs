//! Identifiers: browser session ids and the person keys of the identity index.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest identifier we accept. PostHog session ids are 36 characters; emails rarely pass 100.
pub const MAX_ID_LEN: usize = 256;

/// A browser session id, as the connector delivers it: never empty, never padded, bounded.
///
/// It is an `Arc<str>` because the same id sits in the store map, the recency list, the identity
/// index and every request that looks it up; cloning must be free.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(Arc<str>);

/// Why a string cannot be an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("identifier contains control characters")]
    ControlCharacters,
}

impl SessionId {
    /// Parse a session id, trimming surrounding whitespace.
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidId::Empty);
        }
        if trimmed.len() > MAX_ID_LEN {
            return Err(InvalidId::TooLong);
        }
        if has_control_character(trimmed) {
            return Err(InvalidId::ControlCharacters);
        }
        Ok(Self(Arc::from(trimmed)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `text.chars().any(char::is_control)`, without decoding an ASCII text (the common case)
/// character by character: every `/retrieval` request parses an id.
fn has_control_character(text: &str) -> bool {
    if text.is_ascii() {
        text.bytes().any(|b| b.is_ascii_control())
    } else {
        text.chars().any(char::is_control)
    }
}

impl TryFrom<String> for SessionId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SessionId> for String {
    fn from(value: SessionId) -> Self {
        value.0.to_string()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", &self.0)
    }
}

/// Normalise an email for indexing: trimmed and lower-cased, so `Maria@X.com ` finds `maria@x.com`.
pub fn normalize_email(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_ID_LEN || trimmed.chars().any(char::is_control) {
        return None;
    }
    Some(trimmed.to_lowercase())
}

/// Normalise a user id for indexing: trimmed, case kept (user ids are opaque and case-sensitive).
pub fn normalize_user_id(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_ID_LEN || trimmed.chars().any(char::is_control) {
        return None;
    }
    Some(trimmed.to_string())
}

/// One person-level key of the identity index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PersonKey {
    Email(String),
    UserId(String),
}

impl PersonKey {
    /// Build a normalised email key; `None` when the raw value cannot be an identifier.
    pub fn email(raw: &str) -> Option<Self> {
        normalize_email(raw).map(Self::Email)
    }

    /// Build a normalised user-id key.
    pub fn user_id(raw: &str) -> Option<Self> {
        normalize_user_id(raw).map(Self::UserId)
    }

    /// Stable text form used as a map key and a Redis key suffix.
    pub fn index_key(&self) -> String {
        match self {
            Self::Email(e) => format!("email:{e}"),
            Self::UserId(u) => format!("user:{u}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_in_any_text() {
        for text in [
            "s-1",
            "s\u{7f}1",
            "s\u{1f}",
            "é\u{85}",
            "é\u{9f}x",
            "é\u{a0}",
            "东\u{0}",
            "東京",
        ] {
            assert_eq!(
                has_control_character(text),
                text.chars().any(char::is_control),
                "{text:?}"
            );
        }
    }

    #[test]
    fn session_id_rejects_empty_and_control_characters() {
        assert_eq!(SessionId::parse("  "), Err(InvalidId::Empty));
        assert_eq!(
            SessionId::parse("a\u{0}b"),
            Err(InvalidId::ControlCharacters)
        );
        assert_eq!(SessionId::parse(&"x".repeat(300)), Err(InvalidId::TooLong));
        assert_eq!(SessionId::parse(" ps_1 ").unwrap().as_str(), "ps_1");
    }
}
