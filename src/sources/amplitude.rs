//! Amplitude event streaming (webhook destination): one export-format event, an array of
//! them, or the HTTP API's `{"events": [...]}`.
//!
//! `session_id` is epoch milliseconds as a number (`-1`: no session), `event_time` is UTC
//! `YYYY-MM-DD HH:MM:SS.ffffff`, `$insert_id` is the dedupe key. Browser SDK 2 autocapture
//! (`[Amplitude] Page Viewed`, `Element Clicked`, `Element Changed`, `Form Started`,
//! `Form Submitted`, `Rage Click`, `Dead Click`) maps onto the same actions as PostHog's.

use serde_json::Value;

use super::json::{self, str_at, str_path};
use super::naming::{self, Happened, PageUrl, Target};
use super::{BodyError, Decoded, EventRefusal, Privacy, SourceEvent};
use crate::session::model::SourceKind;

const EXPECTED: &str = "Amplitude event (an object with \"event_type\"), or an array of them";

/// Decode an Amplitude body. `product_id` is the ingest URL's product (naming does not vary
/// by product today).
pub fn decode(body: &[u8], product_id: &str, privacy: &Privacy) -> Result<Decoded, BodyError> {
    let _ = product_id;
    let value = json::parse_body(body)?;
    let value = match value {
        Value::Object(mut map) if map.get("events").is_some_and(Value::is_array) => {
            map.remove("events").unwrap_or(Value::Null)
        }
        other => other,
    };
    let mut decoded = Decoded::default();
    match value {
        Value::Array(items) => {
            for (index, item) in json::within_limit(items)?.iter().enumerate() {
                match decode_event(item, privacy) {
                    Some(event) => decoded.events.push(event),
                    None => decoded.refused.push(EventRefusal {
                        index,
                        reason: "unknown_shape",
                        detail: format!("event {index} is not an {EXPECTED}"),
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

fn decode_event(value: &Value, privacy: &Privacy) -> Option<SourceEvent> {
    let name = str_at(value, "event_type")?;
    let empty = Value::Null;
    let props = json::object_at(value, "event_properties").unwrap_or(&empty);
    let prop = |key: &str| str_at(props, &format!("[Amplitude] {key}"));
    let url = page_url(props, privacy);
    let time = value
        .get("event_time")
        .and_then(json::time_of)
        .or_else(|| value.get("client_event_time").and_then(json::time_of));
    let dedupe_key = str_at(value, "$insert_id")
        .or_else(|| str_at(value, "uuid"))
        .map(json::dedupe_id)
        .unwrap_or_else(|| json::canonical_hash(value));
    let mut event = SourceEvent {
        source: SourceKind::Amplitude,
        session_id: session_id(value),
        sessionless_person: None,
        user_id: json::user_id(str_at(value, "user_id")),
        email: json::email(
            str_path(value, &["user_properties", "email"]).or_else(|| str_at(props, "email")),
        ),
        dedupe_key,
        timestamp: time,
        action: None,
        left_page: None,
    };
    let element = || element_target(props);
    let form = || Target {
        label: [prop("Form Name"), prop("Form ID")]
            .into_iter()
            .flatten()
            .find_map(naming::identifier_name),
        noun: Some("form"),
    };
    let happened = match name {
        "[Amplitude] Page Viewed" => Happened::PageView {
            page: naming::page_name(prop("Page Title"), url.as_ref()),
        },
        "[Amplitude] Element Clicked" => Happened::Click(element()),
        "[Amplitude] Element Changed" => Happened::Change(element()),
        "[Amplitude] Form Started" => Happened::FormStarted(form()),
        "[Amplitude] Form Submitted" => Happened::Submit(form()),
        "[Amplitude] Rage Click" => Happened::RageClick(element()),
        "[Amplitude] Dead Click" => Happened::DeadClick(element()),
        // Other autocapture (`[Amplitude] Network Request`, `Web Vitals`, ...), sessions and
        // identity bookkeeping: no action of their own.
        other
            if other.starts_with("[Amplitude]")
                || other.starts_with('$')
                || matches!(other, "session_start" | "session_end") =>
        {
            return Some(event);
        }
        custom => Happened::Custom(naming::humanise_event(custom)),
    };
    event.action = Some(happened.action(url.as_ref(), time));
    Some(event)
}

/// `session_id`: epoch ms as a number (or a string of one); `-1` (or any non-positive) is none.
fn session_id(value: &Value) -> Option<String> {
    let id = json::id_at(value, "session_id")?;
    match id.parse::<i64>() {
        Ok(n) if n <= 0 => None,
        _ => Some(id),
    }
}

/// The page: `Page Location` (the full URL), else `Page URL`, else domain plus path.
fn page_url(props: &Value, privacy: &Privacy) -> Option<PageUrl> {
    let prop = |key: &str| str_at(props, &format!("[Amplitude] {key}"));
    if let Some(url) = [prop("Page Location"), prop("Page URL")]
        .into_iter()
        .flatten()
        .find_map(|u| naming::clean_url(u, privacy))
    {
        return Some(url);
    }
    let path = prop("Page Path")?;
    match prop("Page Domain") {
        Some(domain) => naming::clean_url(&format!("https://{domain}{path}"), privacy),
        None => naming::clean_url(path, privacy),
    }
}

/// The element of an `Element Clicked`/`Changed`/`Rage Click`/`Dead Click` event.
fn element_target(props: &Value) -> Target {
    let prop = |key: &str| str_at(props, &format!("[Amplitude] {key}"));
    let mut attributes: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(map)) = props.get("[Amplitude] Element Attributes") {
        for (name, value) in map.iter().take(32) {
            if let Some(value) = value.as_str() {
                attributes.push((name.to_ascii_lowercase(), value.to_string()));
            }
        }
    }
    if let Some(label) = prop("Element Aria Label") {
        attributes.push(("aria-label".into(), label.into()));
    }
    let tag = prop("Element Tag");
    let mut target = naming::target_from_fields(
        tag,
        prop("Element Text"),
        attributes,
        prop("Element Parent Label"),
    );
    if target.noun.is_none() && prop("Element Href").is_some() {
        target.noun = Some("link");
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_and_shapes() {
        let p = Privacy::default();
        let body = br#"{"event_type":"Invoice Downloaded","session_id":1764585508000,"event_time":"2025-12-01 10:38:28.250000","$insert_id":"i-1","user_id":"u-9"}"#;
        let event = &decode(body, "p", &p).unwrap().events[0];
        assert_eq!(event.session_id.as_deref(), Some("1764585508000"));
        assert_eq!(event.timestamp, Some(1_764_585_508.25));
        assert_eq!(event.dedupe_key, "i-1");
        assert_eq!(event.action.as_ref().unwrap().title(), "Invoice downloaded");
        for none in [r#"-1"#, r#""-1""#, r#"null"#, r#"0"#, r#""""#] {
            let body = format!(r#"{{"event_type":"x","session_id":{none}}}"#);
            let event = &decode(body.as_bytes(), "p", &p).unwrap().events[0];
            assert_eq!(event.session_id, None, "{none}");
        }
        let wrapped = br#"{"api_key":"k","events":[{"event_type":"a","uuid":"u"},{"nope":1}]}"#;
        let d = decode(wrapped, "p", &p).unwrap();
        assert_eq!((d.events.len(), d.refused.len()), (1, 1));
        assert_eq!(d.events[0].dedupe_key, "u");
        assert_eq!(
            decode(b"{}", "p", &p).unwrap_err().reason(),
            "unknown_shape"
        );
        let internal = br#"{"event_type":"session_start","session_id":5,"user_id":"u"}"#;
        assert_eq!(decode(internal, "p", &p).unwrap().events[0].action, None);
    }
}
