//! The Segment spec (Segment, RudderStack, Jitsu, Snowplow's Segment adapter): `track`,
//! `page` (and `screen`) and `identify` events, alone, as a JSON array, or as
//! `{"batch": [...]}`.
//!
//! The session is RudderStack's `context.sessionId` (epoch ms) or `properties.session_id`.
//! Plain Segment has neither: such an event gets `session_id: None` and names the person
//! (`userId`, else `anonymousId`) in `sessionless_person`, and ingest cuts that person's
//! events into sessions by a 30-minute idle rule. `messageId` is the dedupe key.

use serde_json::Value;

use super::json::{self, str_at, str_path};
use super::naming::{self, Happened};
use super::{BodyError, Decoded, EventRefusal, Privacy, SourceEvent};
use crate::session::model::SourceKind;

const EXPECTED: &str =
    "Segment-spec event (an object with \"type\"), an array of them, or {\"batch\": [...]}";

/// Decode a Segment-spec body. `product_id` is the ingest URL's product (naming does not vary
/// by product today).
pub fn decode(body: &[u8], product_id: &str, privacy: &Privacy) -> Result<Decoded, BodyError> {
    let _ = product_id;
    let value = json::parse_body(body)?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        Value::Object(mut map) if map.get("batch").is_some_and(Value::is_array) => {
            match map.remove("batch") {
                Some(Value::Array(items)) => (items, false),
                _ => (Vec::new(), false),
            }
        }
        other => (vec![other], true),
    };
    let items = json::within_limit(items)?;
    let mut decoded = Decoded::default();
    for (index, item) in items.iter().enumerate() {
        match decode_event(item, privacy) {
            Ok(event) => decoded.events.push(event),
            Err(_) if single => return Err(BodyError::UnknownShape { expected: EXPECTED }),
            Err(refusal) => decoded.refused.push(EventRefusal { index, ..refusal }),
        }
    }
    Ok(decoded)
}

fn decode_event(value: &Value, privacy: &Privacy) -> Result<SourceEvent, EventRefusal> {
    let refuse = |reason: &'static str, detail: String| EventRefusal {
        index: 0,
        reason,
        detail,
    };
    if !value.is_object() {
        return Err(refuse("unknown_shape", format!("not a {EXPECTED}")));
    }
    let Some(kind) = str_at(value, "type") else {
        return Err(refuse("unknown_shape", "event has no \"type\"".to_string()));
    };
    let kind = kind.to_ascii_lowercase();
    if !matches!(
        kind.as_str(),
        "track" | "page" | "screen" | "identify" | "group" | "alias"
    ) {
        return Err(refuse(
            "unknown_type",
            format!(
                "event type {:?} is not track, page, screen or identify",
                truncate(&kind)
            ),
        ));
    }
    let empty = Value::Null;
    let props = json::object_at(value, "properties").unwrap_or(&empty);
    let context = json::object_at(value, "context").unwrap_or(&empty);
    let session_id = json::id_at(context, "sessionId").or_else(|| json::id_at(props, "session_id"));
    let user_id = str_at(value, "userId");
    let sessionless_person = match session_id {
        Some(_) => None,
        None => user_id
            .or_else(|| str_at(value, "anonymousId"))
            .map(str::to_string),
    };
    let email = str_path(value, &["traits", "email"])
        .or_else(|| str_path(context, &["traits", "email"]))
        .or_else(|| str_at(props, "email"));
    let time = ["timestamp", "originalTimestamp", "sentAt", "receivedAt"]
        .iter()
        .find_map(|key| value.get(*key).and_then(json::time_of));
    let url = [
        str_at(props, "url"),
        str_path(context, &["page", "url"]),
        str_at(props, "path"),
        str_path(context, &["page", "path"]),
    ]
    .into_iter()
    .flatten()
    .find_map(|u| naming::clean_url(u, privacy));
    let mut event = SourceEvent {
        source: SourceKind::Segment,
        session_id,
        sessionless_person,
        user_id: json::user_id(user_id),
        email: json::email(email),
        dedupe_key: str_at(value, "messageId")
            .map(json::dedupe_id)
            .unwrap_or_else(|| json::canonical_hash(value)),
        timestamp: time,
        action: None,
        left_page: None,
    };
    let happened = match kind.as_str() {
        "page" | "screen" => {
            let title = str_at(value, "name")
                .or_else(|| str_at(props, "title"))
                .or_else(|| str_at(props, "name"))
                .or_else(|| str_path(context, &["page", "title"]));
            Happened::PageView {
                page: naming::page_name(title, url.as_ref()),
            }
        }
        "track" => match str_at(value, "event") {
            Some(name) => Happened::Custom(naming::humanise_event(name)),
            None => {
                return Err(refuse(
                    "unknown_shape",
                    "track event has no \"event\" name".into(),
                ));
            }
        },
        // identify, group, alias: identity only.
        _ => return Ok(event),
    };
    event.action = Some(happened.action(url.as_ref(), time));
    Ok(event)
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_from_rudderstack_properties_or_none() {
        let p = Privacy::default();
        let rudder = br#"{"type":"track","event":"Report Exported","messageId":"m1","anonymousId":"a1","context":{"sessionId":1764585508000}}"#;
        let e = &decode(rudder, "p", &p).unwrap().events[0];
        assert_eq!(e.session_id.as_deref(), Some("1764585508000"));
        assert_eq!(e.sessionless_person, None);
        let props = br#"{"type":"track","event":"x","properties":{"session_id":"s-9"}}"#;
        assert_eq!(
            decode(props, "p", &p).unwrap().events[0]
                .session_id
                .as_deref(),
            Some("s-9")
        );
        let anon = br#"{"type":"page","name":"Pricing","anonymousId":"a1","messageId":"m2"}"#;
        let e = &decode(anon, "p", &p).unwrap().events[0];
        assert_eq!(e.session_id, None);
        assert_eq!(e.sessionless_person.as_deref(), Some("a1"));
        let known = br#"{"type":"page","userId":"u1","anonymousId":"a1"}"#;
        assert_eq!(
            decode(known, "p", &p).unwrap().events[0]
                .sessionless_person
                .as_deref(),
            Some("u1")
        );
    }

    #[test]
    fn unknown_types_are_refused_per_event() {
        let p = Privacy::default();
        let body = br#"{"batch":[{"type":"track","event":"A"},{"type":"bogus"},{"event":"no type"},{"type":"track"}]}"#;
        let d = decode(body, "p", &p).unwrap();
        assert_eq!(d.events.len(), 1);
        let reasons: Vec<(usize, &str)> = d.refused.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (1, "unknown_type"),
                (2, "unknown_shape"),
                (3, "unknown_shape")
            ]
        );
        assert_eq!(
            decode(br#"{"type":"bogus"}"#, "p", &p)
                .unwrap_err()
                .reason(),
            "unknown_shape"
        );
        assert_eq!(decode(b"[1,2", "p", &p).unwrap_err().reason(), "malformed");
    }
}
