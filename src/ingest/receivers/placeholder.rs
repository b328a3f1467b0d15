//! DEVELOPMENT PLACEHOLDER for `crate::sources::{posthog, amplitude, segment}` until the sources
//! helper's decoders land on main. Removed at the merge.
#![allow(dead_code)]

use serde_json::Value;

use crate::session::model::{Action, ActionParts, SourceKind};
use crate::sources::{Decoded, EventRefusal, SourceEvent};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privacy {
    pub keep_query_params: Vec<String>,
}

impl Privacy {
    pub fn from_list(list: &str) -> Self {
        Self {
            keep_query_params: list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error("body is not a {expected}")]
    UnknownShape { expected: &'static str },
}

impl BodyError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownShape { .. } => "unknown_shape",
        }
    }
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|s| !s.is_empty())
}

fn ts(raw: Option<String>) -> Option<f64> {
    let raw = raw?;
    raw.parse::<f64>().ok().or_else(|| {
        humantime::parse_rfc3339_weak(raw.trim_end_matches('Z'))
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    })
}

fn strip(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or("").to_string()
}

fn action(kind: &str, title: &str, url: &str, t: Option<f64>) -> Action {
    Action::new(ActionParts {
        kind: kind.into(),
        title: title.into(),
        description: title.into(),
        timestamp_start: t,
        timestamp_end: t,
        canonical_url: strip(url),
        ..ActionParts::default()
    })
}

fn items(body: &[u8]) -> Result<Vec<Value>, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    Ok(match v {
        Value::Array(a) => a,
        Value::Object(ref o) if o.contains_key("batch") => {
            o["batch"].as_array().cloned().unwrap_or_default()
        }
        v => vec![v],
    })
}

pub mod posthog {
    use super::*;
    pub fn decode(body: &[u8], _product: &str, _p: &Privacy) -> Result<Decoded, BodyError> {
        let mut out = Decoded::default();
        for (index, item) in items(body)?.into_iter().enumerate() {
            let (ev, person) = match item.get("event") {
                Some(e) if e.is_object() => (e.clone(), item.get("person").cloned()),
                Some(Value::String(_)) => (item.clone(), None),
                _ => {
                    out.refused.push(EventRefusal {
                        index,
                        reason: "unknown_shape",
                        detail: "not a PostHog event".into(),
                    });
                    continue;
                }
            };
            let props = ev.get("properties").cloned().unwrap_or(Value::Null);
            let name = s(&ev, "event").unwrap_or_default();
            let url = s(&props, "$current_url")
                .or(s(&ev, "current_url"))
                .unwrap_or_default();
            let t = ts(s(&ev, "timestamp"));
            let email = person
                .as_ref()
                .and_then(|p| p.get("properties"))
                .and_then(|p| s(p, "email"))
                .or(s(&ev, "email"));
            let (act, left) = match name.as_str() {
                "$pageleave" => (None, Some(strip(&url))),
                "$pageview" => (
                    Some(action(
                        "pageview",
                        &s(&props, "title").unwrap_or("Page".into()),
                        &url,
                        t,
                    )),
                    None,
                ),
                other => (Some(action("click", other, &url, t)), None),
            };
            out.events.push(SourceEvent {
                source: SourceKind::PostHog,
                session_id: s(&props, "$session_id").or(s(&ev, "session_id")),
                sessionless_person: None,
                user_id: s(&ev, "distinct_id"),
                email,
                dedupe_key: s(&ev, "uuid").unwrap_or_else(|| format!("{item}")),
                timestamp: t,
                action: act,
                left_page: left,
            });
        }
        Ok(out)
    }
}

pub mod amplitude {
    use super::*;
    pub fn decode(body: &[u8], _product: &str, _p: &Privacy) -> Result<Decoded, BodyError> {
        let mut out = Decoded::default();
        for item in items(body)? {
            let props = item.get("event_properties").cloned().unwrap_or(Value::Null);
            let url = s(&props, "[Amplitude] Page URL").unwrap_or_default();
            let sid = item
                .get("session_id")
                .and_then(Value::as_i64)
                .filter(|v| *v > 0);
            out.events.push(SourceEvent {
                source: SourceKind::Amplitude,
                session_id: sid.map(|v| v.to_string()),
                sessionless_person: None,
                user_id: s(&item, "user_id"),
                email: None,
                dedupe_key: s(&item, "$insert_id").unwrap_or_default(),
                timestamp: None,
                action: Some(action(
                    "click",
                    &s(&item, "event_type").unwrap_or_default(),
                    &url,
                    None,
                )),
                left_page: None,
            });
        }
        Ok(out)
    }
}

pub mod segment {
    use super::*;
    pub fn decode(body: &[u8], _product: &str, _p: &Privacy) -> Result<Decoded, BodyError> {
        let mut out = Decoded::default();
        for item in items(body)? {
            let ctx = item.get("context").cloned().unwrap_or(Value::Null);
            let props = item.get("properties").cloned().unwrap_or(Value::Null);
            let kind = s(&item, "type").unwrap_or_default();
            let url = s(&props, "url").unwrap_or_default();
            let act = match kind.as_str() {
                "page" => Some(action(
                    "pageview",
                    &s(&item, "name").unwrap_or_default(),
                    &url,
                    None,
                )),
                "track" => Some(action(
                    "click",
                    &s(&item, "event").unwrap_or_default(),
                    &url,
                    None,
                )),
                _ => None,
            };
            out.events.push(SourceEvent {
                source: SourceKind::Segment,
                session_id: s(&ctx, "sessionId").or(s(&props, "session_id")),
                sessionless_person: s(&item, "userId").or(s(&item, "anonymousId")),
                user_id: s(&item, "userId"),
                email: item.get("traits").and_then(|t| s(t, "email")),
                dedupe_key: s(&item, "messageId").unwrap_or_default(),
                timestamp: ts(s(&item, "timestamp")),
                action: act,
                left_page: None,
            });
        }
        Ok(out)
    }
}
