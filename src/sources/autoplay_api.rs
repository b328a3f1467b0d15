//! Autoplay's hosted pull API: `GET /users/{product_id}/{user_id}/live-activity` answers
//! `{"product_id", "user_id", "count", "as_of", "actions": [...]}`, the user's most recent
//! actions oldest first, in the connector's action format (see `docs/autoplay-api.md`).
//!
//! Decoded leniently and within bounds, like every outside input: a wrongly typed field reads
//! as absent, non-object entries of `actions` are skipped and counted, unknown fields are
//! ignored, a bare array is read as the action list, and the body, the number of actions and
//! every text are capped. Only a body that is not JSON, or JSON with no action list at all,
//! is refused.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::session::model::{
    Action, ActionBatch, ActionParts, MAX_ID_LEN, SessionId, SourceKind, normalize_user_id,
};

/// Largest response body read (Autoplay keeps at most 50 actions per user; this leaves room
/// for a larger `limit` and verbose descriptions).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most actions kept from one response: the newest ones when there are more.
pub const MAX_ACTIONS: usize = 500;
/// Longest kept title.
const MAX_TITLE_CHARS: usize = 500;
/// Longest kept description or URL.
const MAX_TEXT_CHARS: usize = 2000;
/// Prefix of the session id livectx gives a pulled user's actions when the API names none.
pub const SYNTHETIC_SESSION_PREFIX: &str = "autoplay-api:";

/// One decoded `live-activity` answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveActivity {
    pub product_id: Option<String>,
    pub user_id: Option<String>,
    /// A session id on the envelope, if the API ever sends one.
    pub session_id: Option<String>,
    /// The API's own clock when it answered (Unix seconds).
    pub as_of: Option<f64>,
    /// Oldest first.
    pub actions: Vec<PulledAction>,
    /// Entries of `actions` that were not objects.
    pub skipped: usize,
    /// Oldest actions dropped beyond [`MAX_ACTIONS`].
    pub dropped: usize,
}

/// One action and the session it names, if it names one.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledAction {
    pub session_id: Option<String>,
    pub action: Action,
}

/// Why a response body could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("response body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("response body is not valid JSON: {0}")]
    Syntax(String),
    #[error("response body has no \"actions\" array")]
    NoActions,
}

/// Decode one response body.
pub fn decode(bytes: &[u8]) -> Result<LiveActivity, DecodeError> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    let (envelope, items) = match value {
        Value::Array(items) => (Map::new(), items),
        Value::Object(mut envelope) => match envelope.remove("actions") {
            Some(Value::Array(items)) => (envelope, items),
            Some(Value::Null) => (envelope, Vec::new()),
            _ => return Err(DecodeError::NoActions),
        },
        _ => return Err(DecodeError::NoActions),
    };
    let id = |name: &str| text(envelope.get(name)).map(|v| cut(v, MAX_ID_LEN));
    let mut activity = LiveActivity {
        product_id: id("product_id"),
        user_id: id("user_id"),
        session_id: id("session_id"),
        as_of: number(envelope.get("as_of")).filter(plausible_time),
        ..LiveActivity::default()
    };
    let objects: Vec<Map<String, Value>> = items
        .into_iter()
        .filter_map(|item| match item {
            Value::Object(object) => Some(object),
            _ => {
                activity.skipped += 1;
                None
            }
        })
        .collect();
    activity.dropped = objects.len().saturating_sub(MAX_ACTIONS);
    activity.actions = objects
        .into_iter()
        .skip(activity.dropped)
        .map(|object| decode_action(&object))
        .collect();
    Ok(activity)
}

fn decode_action(object: &Map<String, Value>) -> PulledAction {
    let field = |name: &str| text(object.get(name));
    let kind = field("type")
        .map(|k| k.trim().to_ascii_lowercase())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "action".to_string());
    let raw_url = field("raw_url").map(|u| cut(u, MAX_TEXT_CHARS));
    let canonical_url = cut(
        field("canonical_url")
            .or_else(|| raw_url.clone())
            .unwrap_or_default(),
        MAX_TEXT_CHARS,
    );
    let index = match object.get("index") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let action = Action::new(ActionParts {
        index,
        kind,
        title: cut(field("title").unwrap_or_default(), MAX_TITLE_CHARS),
        description: cut(field("description").unwrap_or_default(), MAX_TEXT_CHARS),
        timestamp_start: number(object.get("timestamp_start")).filter(plausible_time),
        timestamp_end: number(object.get("timestamp_end")).filter(plausible_time),
        raw_url: raw_url.filter(|u| *u != canonical_url),
        canonical_url,
        identity: None,
    });
    PulledAction {
        session_id: field("session_id").map(|v| cut(v, MAX_ID_LEN)),
        action,
    }
}

/// The session a pulled user's actions are stored under when neither the action nor the
/// envelope names one: `autoplay-api:<product>:<user id>`, or, when that would be longer than
/// a session id may be, `autoplay-api:` and a SHA-256 of both. Deterministic, so every fetch
/// of one user lands in the same session.
pub fn synthetic_session_id(product_id: &str, user_id: &str) -> SessionId {
    let plain = format!("{SYNTHETIC_SESSION_PREFIX}{product_id}:{user_id}");
    if let Ok(id) = SessionId::parse(&plain)
        && id.as_str() == plain
    {
        return id;
    }
    let mut hash = Sha256::new();
    hash.update(product_id.as_bytes());
    hash.update([0]);
    hash.update(user_id.as_bytes());
    let hashed = format!("{SYNTHETIC_SESSION_PREFIX}{}", hex::encode(hash.finalize()));
    // 77 ASCII characters: always a valid id, whatever the input.
    SessionId::parse(&hashed)
        .unwrap_or_else(|_| unreachable!("a prefixed hex digest is a valid id"))
}

impl LiveActivity {
    /// The answer as storable batches, one per session it names, in order of first
    /// appearance, each stamped with the product and the user id that was asked for (the
    /// path's user id is what the index must find; the envelope's may differ in case or
    /// padding).
    pub fn into_batches(self, product_id: &str, user_id: &str) -> Vec<ActionBatch> {
        let user = normalize_user_id(user_id);
        let fallback = self
            .session_id
            .as_deref()
            .and_then(|raw| SessionId::parse(raw).ok())
            .unwrap_or_else(|| {
                synthetic_session_id(product_id, user.as_deref().unwrap_or(user_id))
            });
        let mut batches: Vec<ActionBatch> = Vec::new();
        for pulled in self.actions {
            let session_id = pulled
                .session_id
                .as_deref()
                .and_then(|raw| SessionId::parse(raw).ok())
                .unwrap_or_else(|| fallback.clone());
            match batches.iter_mut().find(|b| b.session_id == session_id) {
                Some(batch) => batch.actions.push(pulled.action),
                None => batches.push(ActionBatch {
                    session_id,
                    product_id: Some(product_id.to_string()),
                    user_id: user.clone(),
                    email: None,
                    conversation_id: None,
                    actions: vec![pulled.action],
                    forwarded_at: self.as_of,
                    source: Some(SourceKind::AutoplayApi),
                }),
            }
        }
        batches
    }
}

/// A string, or a number written as one; anything else is absent.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A finite number, or a string holding one.
fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

/// Unix seconds between 2000 and 2100; anything else (milliseconds by mistake, zero) is
/// treated as absent.
fn plausible_time(ts: &f64) -> bool {
    (946_684_800.0..4_102_444_800.0).contains(ts)
}

fn cut(text: String, max_chars: usize) -> String {
    if text.len() <= max_chars {
        return text;
    }
    match text.char_indices().nth(max_chars) {
        Some((byte, _)) => {
            let mut cut = text[..byte].to_string();
            cut.push('…');
            cut
        }
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape Autoplay documents for this endpoint (values invented).
    const DOCUMENTED: &str = r#"{
        "product_id": "prod_acme", "user_id": "user_42", "count": 2, "as_of": 1795000100.5,
        "actions": [
          {"type": "pageview", "title": "Page Load: Dashboard", "description": "User landed on the dashboard page",
           "timestamp_start": 1795000000.0, "timestamp_end": 1795000004.0,
           "raw_url": "https://app.acme.io/dashboard?tab=1", "canonical_url": "https://app.acme.io/dashboard", "index": 0},
          {"type": "Click", "title": "Click Export CSV", "description": "User clicked Export CSV",
           "timestamp_start": 1795000004.0, "timestamp_end": 1795000005.0,
           "raw_url": "https://app.acme.io/dashboard", "canonical_url": "https://app.acme.io/dashboard", "index": 1}
        ]}"#;

    #[test]
    fn reads_the_documented_answer() {
        let activity = decode(DOCUMENTED.as_bytes()).unwrap();
        assert_eq!(activity.product_id.as_deref(), Some("prod_acme"));
        assert_eq!(activity.user_id.as_deref(), Some("user_42"));
        assert_eq!(activity.as_of, Some(1_795_000_100.5));
        assert_eq!(activity.actions.len(), 2);
        let first = &activity.actions[0].action;
        assert_eq!(first.kind(), "pageview");
        assert_eq!(first.index(), Some(0));
        assert_eq!(first.raw_url(), "https://app.acme.io/dashboard?tab=1");
        assert_eq!(first.timestamp_end(), Some(1_795_000_004.0));
        assert_eq!(activity.actions[1].action.kind(), "click");
        assert_eq!(activity.actions[1].action.raw_url_if_different(), None);
    }

    #[test]
    fn is_lenient_about_types_and_shapes() {
        let body = br#"{"actions": [
            {"type": 7, "title": null, "timestamp_start": "1795000000", "timestamp_end": 1795000000000, "index": "3"},
            "not an action", 42, null, [1],
            {"canonical_url": "/billing", "session_id": "ps_1", "extra": {"deep": [1, 2]}}
        ], "as_of": "soon", "user_id": {"x": 1}}"#;
        let activity = decode(body).unwrap();
        assert_eq!(activity.skipped, 4);
        assert_eq!(activity.as_of, None);
        assert_eq!(activity.user_id, None);
        let first = &activity.actions[0].action;
        assert_eq!(first.kind(), "7");
        assert_eq!(first.index(), Some(3));
        assert_eq!(first.timestamp_start(), Some(1_795_000_000.0));
        // Milliseconds by mistake read as absent.
        assert_eq!(first.timestamp_end(), None);
        assert_eq!(activity.actions[1].action.kind(), "action");
        assert_eq!(activity.actions[1].session_id.as_deref(), Some("ps_1"));
        // A bare array is the action list; an explicit null is an empty one.
        assert_eq!(decode(br#"[{"title": "x"}]"#).unwrap().actions.len(), 1);
        assert!(decode(br#"{"actions": null}"#).unwrap().actions.is_empty());
    }

    #[test]
    fn refuses_only_what_cannot_be_an_answer() {
        assert!(matches!(decode(b"{nope"), Err(DecodeError::Syntax(_))));
        assert_eq!(decode(br#"{"detail": "x"}"#), Err(DecodeError::NoActions));
        assert_eq!(decode(br#"{"actions": 3}"#), Err(DecodeError::NoActions));
        assert_eq!(decode(b"\"text\""), Err(DecodeError::NoActions));
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(decode(&huge), Err(DecodeError::TooLarge));
    }

    #[test]
    fn bounds_actions_and_texts() {
        // Multi-byte characters, so a cut in the middle of one would panic.
        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        let items: Vec<String> = (0..MAX_ACTIONS + 7)
            .map(|i| format!(r#"{{"index": {i}, "title": "{long}", "description": "d{i}"}}"#))
            .collect();
        let body = format!(r#"{{"actions": [{}]}}"#, items.join(","));
        let activity = decode(body.as_bytes()).unwrap();
        assert_eq!(activity.actions.len(), MAX_ACTIONS);
        assert_eq!(activity.dropped, 7);
        // The newest are kept.
        assert_eq!(activity.actions[0].action.index(), Some(7));
        let action = &activity.actions[0].action;
        assert_eq!(action.title().chars().count(), MAX_TITLE_CHARS + 1);
        let one = format!(r#"[{{"description": "{long}", "canonical_url": "{long}"}}]"#);
        let action = &decode(one.as_bytes()).unwrap().actions[0].action;
        assert_eq!(action.description().chars().count(), MAX_TEXT_CHARS + 1);
        assert_eq!(action.canonical_url().chars().count(), MAX_TEXT_CHARS + 1);
    }

    #[test]
    fn batches_land_in_a_deterministic_session() {
        let activity = decode(DOCUMENTED.as_bytes()).unwrap();
        let batches = activity.clone().into_batches("prod_acme", " user_42 ");
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        assert_eq!(batch.session_id.as_str(), "autoplay-api:prod_acme:user_42");
        assert_eq!(batch.user_id.as_deref(), Some("user_42"));
        assert_eq!(batch.product_id.as_deref(), Some("prod_acme"));
        assert_eq!(batch.actions.len(), 2);
        assert_eq!(
            activity.into_batches("prod_acme", " user_42 ")[0].session_id,
            batch.session_id
        );
    }

    #[test]
    fn named_sessions_are_kept_apart() {
        let body = br#"{"actions": [
            {"title": "a", "session_id": "ps_1"}, {"title": "b", "session_id": "ps_2"},
            {"title": "c", "session_id": "ps_1"}, {"title": "d"}]}"#;
        let batches = decode(body).unwrap().into_batches("p", "u");
        let shape: Vec<(&str, usize)> = batches
            .iter()
            .map(|b| (b.session_id.as_str(), b.actions.len()))
            .collect();
        assert_eq!(
            shape,
            vec![("ps_1", 2), ("ps_2", 1), ("autoplay-api:p:u", 1)]
        );
    }

    #[test]
    fn overlong_ids_hash_into_a_valid_session_id() {
        let user = "u".repeat(MAX_ID_LEN);
        let id = synthetic_session_id("prod", &user);
        assert!(id.as_str().starts_with(SYNTHETIC_SESSION_PREFIX));
        assert!(id.as_str().len() <= MAX_ID_LEN);
        assert_eq!(id, synthetic_session_id("prod", &user));
        assert_ne!(id, synthetic_session_id("prod2", &user));
    }
}
