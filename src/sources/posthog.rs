//! PostHog: Autoplay's flat destination body, PostHog's stock HTTP Webhook body, or a JSON
//! array of either, told apart by shape.
//!
//! - Flat (activity-sources.md §1): `{"event": "$autocapture", "session_id": "…",
//!   "current_url": "…", "elements_chain": "…", …}`, every value a string, `''` when absent,
//!   no uuid and no page title. Deduplicated on a hash of the event's canonical bytes.
//! - Stock (§2): `{"event": {"uuid", "event", "distinct_id", "timestamp", "elements_chain",
//!   "properties": {…}}, "person": {"properties": {…}}}`. Deduplicated on `event.uuid`.
//!   PostHog's raw capture shape (`{"event": "…", "properties": {…}}`) reads the same way.
//!
//! Only the fields naming needs are read; every other property is dropped here.

use serde_json::Value;

use super::elements_chain::{self, Element};
use super::json::{self, str_at, str_path};
use super::naming::{self, Happened, PageUrl};
use super::{BodyError, Decoded, EventRefusal, Privacy, SourceEvent};
use crate::session::model::SourceKind;

/// What the error names when a body fits no PostHog shape.
const EXPECTED: &str = "PostHog event (Autoplay's flat destination body or the HTTP Webhook body {\"event\": {...}, \"person\": {...}})";

/// Decode a PostHog body. `product_id` is the ingest URL's product (naming does not vary by
/// product today).
pub fn decode(body: &[u8], product_id: &str, privacy: &Privacy) -> Result<Decoded, BodyError> {
    let _ = product_id;
    let value = json::parse_body(body)?;
    let mut decoded = Decoded::default();
    match value {
        Value::Array(items) => {
            let items = json::within_limit(items)?;
            for (index, item) in items.iter().enumerate() {
                match decode_event(item, privacy) {
                    Some(event) => decoded.events.push(event),
                    None => decoded.refused.push(EventRefusal {
                        index,
                        reason: "unknown_shape",
                        detail: format!("event {index} is not a {EXPECTED}"),
                    }),
                }
            }
        }
        single => match decode_event(&single, privacy) {
            Some(event) => decoded.events.push(event),
            None => return Err(BodyError::UnknownShape { expected: EXPECTED }),
        },
    }
    Ok(decoded)
}

/// One event of either shape; `None` when it is neither.
fn decode_event(value: &Value, privacy: &Privacy) -> Option<SourceEvent> {
    match value.get("event")? {
        Value::Object(_) => decode_stock(value, privacy),
        Value::String(_) if json::object_at(value, "properties").is_some() => {
            decode_capture(value, value, None, privacy)
        }
        Value::String(_) => decode_flat(value, privacy),
        _ => None,
    }
}

/// The fields of a PostHog event that naming uses, from whichever shape.
struct Fields<'a> {
    name: &'a str,
    event_type: Option<&'a str>,
    elements: Vec<Element>,
    title: Option<&'a str>,
    url: Option<PageUrl>,
    exception: (Option<&'a str>, Option<&'a str>),
}

fn decode_flat(value: &Value, privacy: &Privacy) -> Option<SourceEvent> {
    let name = str_at(value, "event")?;
    let mut elements = elements_chain::parse(str_at(value, "elements_chain").unwrap_or(""));
    if elements.is_empty() {
        elements = fallback_element(
            str_at(value, "button_or_link_text"),
            str_at(value, "link_destination"),
            str_at(value, "input_field_name"),
        );
    }
    let fields = Fields {
        name,
        event_type: str_at(value, "event_type"),
        elements,
        title: None,
        url: str_at(value, "current_url").and_then(|u| naming::clean_url(u, privacy)),
        exception: (None, None),
    };
    let time = value.get("timestamp").and_then(json::time_of);
    Some(finish(
        &fields,
        SourceEvent {
            source: SourceKind::PostHog,
            session_id: str_at(value, "session_id").map(str::to_string),
            sessionless_person: None,
            user_id: json::user_id(str_at(value, "distinct_id")),
            email: json::email(str_at(value, "email")),
            dedupe_key: json::canonical_hash(value),
            timestamp: time,
            action: None,
            left_page: None,
        },
    ))
}

fn decode_stock(value: &Value, privacy: &Privacy) -> Option<SourceEvent> {
    let event = value.get("event")?;
    let person = value.get("person").filter(|p| p.is_object());
    decode_capture(value, event, person, privacy)
}

/// The stock webhook's `event` object, or a raw capture body (the same fields at top level).
fn decode_capture(
    whole: &Value,
    event: &Value,
    person: Option<&Value>,
    privacy: &Privacy,
) -> Option<SourceEvent> {
    let name = str_at(event, "event")?;
    let empty = Value::Null;
    let props = json::object_at(event, "properties").unwrap_or(&empty);
    let chain = str_at(event, "elements_chain").or_else(|| str_at(props, "$elements_chain"));
    let mut elements = elements_chain::parse(chain.unwrap_or(""));
    if elements.is_empty() {
        elements = fallback_element(str_at(props, "$el_text"), None, None);
    }
    let url = str_at(props, "$current_url")
        .or_else(|| str_at(props, "$pathname"))
        .or_else(|| str_at(props, "$screen_name").filter(|s| s.starts_with('/')))
        .and_then(|u| naming::clean_url(u, privacy));
    let title = match name {
        "$screen" => str_at(props, "$screen_name"),
        _ => str_at(props, "title"),
    };
    let fields = Fields {
        name,
        event_type: str_at(props, "$event_type"),
        elements,
        title,
        url,
        exception: exception_of(props),
    };
    let email = str_at(props, "email")
        .or_else(|| str_path(props, &["$set", "email"]))
        .or_else(|| person.and_then(|p| str_path(p, &["properties", "email"])));
    let dedupe_key = str_at(event, "uuid")
        .map(json::dedupe_id)
        .unwrap_or_else(|| json::canonical_hash(whole));
    Some(finish(
        &fields,
        SourceEvent {
            source: SourceKind::PostHog,
            session_id: str_at(props, "$session_id").map(str::to_string),
            sessionless_person: None,
            user_id: json::user_id(str_at(event, "distinct_id")),
            email: json::email(email),
            dedupe_key,
            timestamp: event.get("timestamp").and_then(json::time_of),
            action: None,
            left_page: None,
        },
    ))
}

/// `$exception_list[0]`'s type and value, else the older `$exception_type`/`_message`.
fn exception_of(props: &Value) -> (Option<&str>, Option<&str>) {
    let first = props
        .get("$exception_list")
        .and_then(Value::as_array)
        .and_then(|list| list.first());
    match first {
        Some(exception) => (str_at(exception, "type"), str_at(exception, "value")),
        None => (
            str_at(props, "$exception_type"),
            str_at(props, "$exception_message"),
        ),
    }
}

/// An element from the flat body's substring fields, when the chain gave nothing.
fn fallback_element(text: Option<&str>, href: Option<&str>, name: Option<&str>) -> Vec<Element> {
    if text.is_none() && href.is_none() && name.is_none() {
        return Vec::new();
    }
    let mut element = Element {
        tag: if href.is_some() { "a" } else { "" }.to_string(),
        text: text.map(str::to_string),
        href: href.map(str::to_string),
        ..Element::default()
    };
    if let Some(name) = name {
        element.tag = "input".to_string();
        element
            .attributes
            .push(("name".to_string(), name.to_string()));
    }
    vec![element]
}

/// Name the event and fill in its action (or the page it left).
fn finish(fields: &Fields<'_>, mut event: SourceEvent) -> SourceEvent {
    let url = fields.url.as_ref();
    let happened = match fields.name {
        "$pageview" | "$screen" => Happened::PageView {
            page: naming::page_name(fields.title, url),
        },
        "$pageleave" => {
            event.left_page = url.map(|u| u.canonical.clone());
            return event;
        }
        "$autocapture" => match fields.event_type {
            Some("change") => Happened::Change(naming::name_target(&fields.elements, false)),
            Some("submit") => Happened::Submit(naming::name_target(&fields.elements, true)),
            _ => Happened::Click(naming::name_target(&fields.elements, false)),
        },
        "$rageclick" => Happened::RageClick(naming::name_target(&fields.elements, false)),
        "$dead_click" => Happened::DeadClick(naming::name_target(&fields.elements, false)),
        "$exception" => Happened::Error(naming::error_message(
            fields.exception.0,
            fields.exception.1,
        )),
        // PostHog's own bookkeeping (`$identify`, `$set`, `$feature_flag_called`, ...): no
        // action, but identity still counts.
        internal if internal.starts_with('$') => return event,
        custom => Happened::Custom(naming::humanise_event(custom)),
    };
    event.action = Some(happened.action(url, event.timestamp));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privacy() -> Privacy {
        Privacy::default()
    }

    #[test]
    fn flat_body_hash_is_the_same_alone_or_in_an_array() {
        let one = br#"{"event":"$pageview","session_id":"s1","current_url":"https://x.io/a","timestamp":"2025-12-01T10:00:00Z"}"#;
        let spaced = br#"[ { "timestamp":"2025-12-01T10:00:00Z", "current_url":"https://x.io/a", "session_id":"s1", "event":"$pageview" } ]"#;
        let a = decode(one, "p", &privacy()).unwrap();
        let b = decode(spaced, "p", &privacy()).unwrap();
        assert_eq!(a.events[0].dedupe_key, b.events[0].dedupe_key);
        assert_eq!(a.events[0].dedupe_key.len(), 64);
    }

    #[test]
    fn shapes_are_told_apart_and_bad_ones_refused() {
        assert_eq!(
            decode(b"not json", "p", &privacy()).unwrap_err().reason(),
            "malformed"
        );
        assert_eq!(
            decode(b"{\"x\":1}", "p", &privacy()).unwrap_err().reason(),
            "unknown_shape"
        );
        assert_eq!(
            decode(b"42", "p", &privacy()).unwrap_err().reason(),
            "unknown_shape"
        );
        let mixed = br#"[{"event":"$pageview","session_id":"s","current_url":"https://x.io/"}, 7, {"event":{"event":"$pageview","uuid":"u1","properties":{"$session_id":"s"}}}]"#;
        let d = decode(mixed, "p", &privacy()).unwrap();
        assert_eq!(d.events.len(), 2);
        assert_eq!(d.refused.len(), 1);
        assert_eq!(d.refused[0].index, 1);
        assert_eq!(d.refused[0].reason, "unknown_shape");
        assert_eq!(d.events[1].dedupe_key, "u1");
        let many = format!(
            "[{}]",
            vec!["{}"; crate::sources::MAX_EVENTS_PER_BODY + 1].join(",")
        );
        assert_eq!(
            decode(many.as_bytes(), "p", &privacy())
                .unwrap_err()
                .reason(),
            "too_many_events"
        );
        assert_eq!(decode(b"[]", "p", &privacy()).unwrap(), Decoded::default());
    }

    #[test]
    fn wrongly_typed_optional_fields_read_as_absent() {
        let body = br#"{"event":{"event":"$pageview","uuid":7,"timestamp":true,"distinct_id":["x"],"elements_chain":5,"properties":{"$session_id":"s","$current_url":42,"title":{"a":1}}},"person":"nobody"}"#;
        let d = decode(body, "p", &privacy()).unwrap();
        let event = &d.events[0];
        assert_eq!(event.session_id.as_deref(), Some("s"));
        assert_eq!(event.user_id, None);
        assert_eq!(event.timestamp, None);
        assert_eq!(event.dedupe_key.len(), 64);
        let action = event.action.as_ref().unwrap();
        assert_eq!(action.title(), "Page Load: an unknown page");
        assert_eq!(action.canonical_url(), "");
    }

    #[test]
    fn internal_events_carry_identity_only() {
        let body = br#"{"event":{"event":"$identify","uuid":"u","distinct_id":"user-7","properties":{"$session_id":"s","$set":{"email":"Maria@Acme.io"}}}}"#;
        let event = &decode(body, "p", &privacy()).unwrap().events[0];
        assert_eq!(event.action, None);
        assert_eq!(event.left_page, None);
        assert_eq!(event.user_id.as_deref(), Some("user-7"));
        assert_eq!(event.email.as_deref(), Some("maria@acme.io"));
    }
}
