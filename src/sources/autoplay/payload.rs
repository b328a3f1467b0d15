//! Decoding Autoplay payloads, leniently.
//!
//! Producers differ: old ones send only `title`, `description` and `canonical_url`; ids may be
//! null or absent; `count` may disagree with the array. So every field is optional except
//! `type`, a wrongly typed field reads as absent instead of failing the whole payload, unknown
//! fields and types are ignored, and non-object entries in `actions` are skipped and counted.
//! Only invalid JSON, a non-object, or a missing `type` refuse a payload.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::session::model::{
    Action, ActionBatch, ActionIdentity, ActionParts, InvalidId, MAX_ID_LEN, MAX_SUMMARY_CHARS,
    SessionId,
};

/// Longest kept title; longer ones are cut (the rest adds nothing a chatbot can use).
const MAX_TITLE_CHARS: usize = 500;
/// Longest kept description or URL.
const MAX_TEXT_CHARS: usize = 2000;

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Actions(ActionsPayload),
    Summary(SummaryPayload),
    TourTrigger(TourPayload),
    /// A `type` this version does not know; ignored and counted.
    Unknown {
        kind: String,
    },
}

impl Payload {
    /// The payload's `type`, for metrics.
    pub fn kind(&self) -> &str {
        match self {
            Self::Actions(_) => "actions",
            Self::Summary(_) => "summary",
            Self::TourTrigger(_) => "usertour_trigger",
            Self::Unknown { kind } => kind,
        }
    }

    /// The raw `session_id` field, for every payload type.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::Actions(p) => p.session_id.as_deref(),
            Self::Summary(p) => p.session_id.as_deref(),
            Self::TourTrigger(p) => p.session_id.as_deref(),
            Self::Unknown { .. } => None,
        }
    }
}

/// An `actions` payload: one batch of one session's UI actions.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionsPayload {
    pub product_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub email: Option<String>,
    /// Whether the `email` key was present at all (it is absent before identification).
    pub email_present: bool,
    pub conversation_id: Option<String>,
    pub actions: Vec<Action>,
    /// The producer's own count; the array is trusted when they differ.
    pub count: Option<i64>,
    pub forwarded_at: Option<f64>,
    /// Entries of `actions` that were not objects.
    pub skipped_actions: usize,
}

/// The connector's own summary of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryPayload {
    pub product_id: Option<String>,
    pub session_id: Option<String>,
    pub summary: String,
    pub replaces: usize,
    pub forwarded_at: Option<f64>,
}

/// A product tour was offered or started.
#[derive(Debug, Clone, PartialEq)]
pub struct TourPayload {
    pub product_id: Option<String>,
    pub session_id: Option<String>,
    pub flow_id: String,
    pub reason: Option<String>,
    pub user_id: Option<String>,
}

/// Why a payload was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not valid JSON: {0}")]
    Syntax(String),
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("payload has no \"type\" field")]
    MissingType,
}

impl DecodeError {
    /// Reason label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Syntax(_) | Self::NotObject => "malformed",
            Self::MissingType => "missing_type",
        }
    }
}

/// Decode one payload from its JSON bytes.
pub fn decode(bytes: &[u8]) -> Result<Payload, DecodeError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return match serde_json::from_slice::<IgnoredAny>(bytes) {
            Ok(_) => Err(DecodeError::NotObject),
            Err(e) => Err(DecodeError::Syntax(e.to_string())),
        };
    }
    let mut raw: RawPayload =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    raw.cap_texts();
    let kind = raw.kind.ok_or(DecodeError::MissingType)?;
    Ok(match kind.as_str() {
        "actions" => {
            let envelope = Envelope {
                user_id: raw.user_id.as_deref(),
                email: raw.email.as_ref().and_then(Option::as_deref),
                conversation_id: raw.conversation_id.as_deref(),
            };
            let actions = raw
                .actions
                .items
                .into_iter()
                .map(|a| a.into_action(&envelope))
                .collect();
            Payload::Actions(ActionsPayload {
                product_id: raw.product_id,
                session_id: raw.session_id,
                user_id: raw.user_id,
                email_present: raw.email.is_some(),
                email: raw.email.flatten(),
                conversation_id: raw.conversation_id,
                actions,
                count: raw.count,
                forwarded_at: raw.forwarded_at,
                skipped_actions: raw.actions.skipped,
            })
        }
        "summary" => Payload::Summary(SummaryPayload {
            product_id: raw.product_id,
            session_id: raw.session_id,
            summary: raw.summary.unwrap_or_default(),
            replaces: raw.replaces.map_or(0, |n| usize::try_from(n).unwrap_or(0)),
            forwarded_at: raw.forwarded_at,
        }),
        "usertour_trigger" => Payload::TourTrigger(TourPayload {
            product_id: raw.product_id,
            session_id: raw.session_id,
            flow_id: raw.flow_id.unwrap_or_default(),
            reason: raw.reason,
            user_id: raw.user_id,
        }),
        _ => Payload::Unknown { kind },
    })
}

impl ActionsPayload {
    /// Validate into a storable batch. A payload without a usable session id is refused:
    /// pooling anonymous traffic under one key would show one person's activity to another.
    pub fn into_batch(self, default_product: Option<&str>) -> Result<ActionBatch, InvalidId> {
        let session_id = SessionId::parse(self.session_id.as_deref().unwrap_or(""))?;
        Ok(ActionBatch {
            session_id,
            product_id: self
                .product_id
                .or_else(|| default_product.map(str::to_string)),
            user_id: self.user_id,
            email: self.email,
            conversation_id: self.conversation_id,
            actions: self.actions,
            forwarded_at: self.forwarded_at,
            source: None,
        })
    }
}

struct Envelope<'a> {
    user_id: Option<&'a str>,
    email: Option<&'a str>,
    conversation_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawPayload {
    #[serde(rename = "type", default, deserialize_with = "lenient_string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    product_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "present_lenient_string")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "lenient_string")]
    conversation_id: Option<String>,
    #[serde(default)]
    actions: LenientActions,
    #[serde(default, deserialize_with = "lenient_i64")]
    count: Option<i64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    forwarded_at: Option<f64>,
    #[serde(default, deserialize_with = "lenient_string")]
    summary: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    replaces: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    flow_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(default, deserialize_with = "lenient_i64")]
    index: Option<i64>,
    #[serde(rename = "type", default, deserialize_with = "lenient_string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    title: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    timestamp_start: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    timestamp_end: Option<f64>,
    #[serde(default, deserialize_with = "lenient_string")]
    raw_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    canonical_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    conversation_id: Option<String>,
}

/// Unix seconds between 2000 and 2100. Anything else (milliseconds sent by mistake, zero) is
/// treated as absent, so the batch's own time stands in for it.
fn plausible_time(ts: &f64) -> bool {
    (946_684_800.0..4_102_444_800.0).contains(ts)
}

/// Cap an optional text (identifiers become store keys and prompt text: they stay short).
fn cap(value: &mut Option<String>, max_chars: usize) {
    if let Some(text) = value.take() {
        *value = Some(cut(text, max_chars));
    }
}

impl RawPayload {
    /// Bound every text a payload carries besides the actions' own.
    fn cap_texts(&mut self) {
        for id in [
            &mut self.product_id,
            &mut self.user_id,
            &mut self.conversation_id,
            &mut self.flow_id,
        ] {
            cap(id, MAX_ID_LEN);
        }
        if let Some(Some(email)) = self.email.as_mut() {
            *email = cut(std::mem::take(email), MAX_ID_LEN);
        }
        cap(&mut self.reason, MAX_TITLE_CHARS);
        cap(&mut self.summary, MAX_SUMMARY_CHARS);
    }
}

impl RawAction {
    fn into_action(self, envelope: &Envelope<'_>) -> Action {
        let kind = self
            .kind
            .map(|k| k.trim().to_ascii_lowercase())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "action".to_string());
        let canonical = cut(
            self.canonical_url
                .or_else(|| self.raw_url.clone())
                .unwrap_or_default(),
            MAX_TEXT_CHARS,
        );
        let raw_url = self
            .raw_url
            .map(|u| cut(u, MAX_TEXT_CHARS))
            .filter(|u| *u != canonical);
        let differs = |own: &Option<String>, env: Option<&str>| {
            own.as_deref().is_some_and(|v| Some(v) != env)
        };
        let identity = if differs(&self.user_id, envelope.user_id)
            || differs(&self.email, envelope.email)
            || differs(&self.conversation_id, envelope.conversation_id)
        {
            let keep = |own: Option<String>, env: Option<&str>| {
                own.filter(|v| Some(v.as_str()) != env)
                    .map(|v| cut(v, MAX_ID_LEN).into_boxed_str())
            };
            Some(Box::new(ActionIdentity {
                user_id: keep(self.user_id, envelope.user_id),
                email: keep(self.email, envelope.email),
                conversation_id: keep(self.conversation_id, envelope.conversation_id),
            }))
        } else {
            None
        };
        Action::new(ActionParts {
            index: self.index,
            kind,
            title: cut(self.title.unwrap_or_default(), MAX_TITLE_CHARS),
            description: cut(self.description.unwrap_or_default(), MAX_TEXT_CHARS),
            timestamp_start: self.timestamp_start.filter(plausible_time),
            timestamp_end: self.timestamp_end.filter(plausible_time),
            raw_url,
            canonical_url: canonical,
            identity,
        })
    }
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

/// The `actions` array: objects become actions, anything else is skipped and counted.
#[derive(Default)]
struct LenientActions {
    items: Vec<RawAction>,
    skipped: usize,
}

impl<'de> Deserialize<'de> for LenientActions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ActionsVisitor;
        impl<'de> Visitor<'de> for ActionsVisitor {
            type Value = LenientActions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of actions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = LenientActions::default();
                while let Some(item) = seq.next_element::<MaybeAction>()? {
                    match item.0 {
                        Some(action) => out.items.push(action),
                        None => out.skipped += 1,
                    }
                }
                Ok(out)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LenientActions::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LenientActions::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LenientActions {
                    items: Vec::new(),
                    skipped: 1,
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LenientActions {
                    items: Vec::new(),
                    skipped: 1,
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LenientActions {
                    items: Vec::new(),
                    skipped: 1,
                })
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LenientActions {
                    items: Vec::new(),
                    skipped: 1,
                })
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LenientActions {
                    items: Vec::new(),
                    skipped: 1,
                })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(LenientActions {
                    items: Vec::new(),
                    skipped: 1,
                })
            }
        }
        deserializer.deserialize_any(ActionsVisitor)
    }
}

/// One entry of `actions`: `Some` for an object, `None` for anything else.
struct MaybeAction(Option<RawAction>);

impl<'de> Deserialize<'de> for MaybeAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MaybeVisitor;
        impl<'de> Visitor<'de> for MaybeVisitor {
            type Value = MaybeAction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let action = RawAction::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MaybeAction(Some(action)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeAction(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeAction(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeAction(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeAction(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeAction(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeAction(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeAction(None))
            }
        }
        deserializer.deserialize_any(MaybeVisitor)
    }
}

/// A scalar read leniently: what it became, or `None` for null, objects and arrays.
#[derive(Clone, Copy)]
enum Want {
    Text,
    Float,
    Int,
}

enum Scalar {
    Text(String),
    Float(f64),
    Int(i64),
    Nothing,
}

struct ScalarVisitor(Want);

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(match self.0 {
            Want::Text => Scalar::Text(v.to_string()),
            Want::Float => v
                .trim()
                .parse::<f64>()
                .map_or(Scalar::Nothing, Scalar::Float),
            Want::Int => v.trim().parse::<i64>().map_or(Scalar::Nothing, Scalar::Int),
        })
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        match self.0 {
            Want::Text => Ok(Scalar::Text(v)),
            _ => self.visit_str(&v),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(match self.0 {
            Want::Text => Scalar::Text(v.to_string()),
            Want::Float => Scalar::Float(v as f64),
            Want::Int => Scalar::Int(v),
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(match self.0 {
            Want::Text => Scalar::Text(v.to_string()),
            Want::Float => Scalar::Float(v as f64),
            Want::Int => i64::try_from(v).map_or(Scalar::Nothing, Scalar::Int),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(match self.0 {
            Want::Text => Scalar::Text(v.to_string()),
            Want::Float => Scalar::Float(v),
            Want::Int if v.fract() == 0.0 && v.abs() < 9.0e15 => Scalar::Int(v as i64),
            Want::Int => Scalar::Nothing,
        })
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(match self.0 {
            Want::Text => Scalar::Text(v.to_string()),
            _ => Scalar::Nothing,
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Nothing)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Nothing)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nothing)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nothing)
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match d.deserialize_any(ScalarVisitor(Want::Text))? {
        Scalar::Text(s) => Some(s),
        _ => None,
    })
}

fn present_lenient_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    lenient_string(d).map(Some)
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match d.deserialize_any(ScalarVisitor(Want::Float))? {
        Scalar::Float(v) if v.is_finite() => Some(v),
        _ => None,
    })
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match d.deserialize_any(ScalarVisitor(Want::Int))? {
        Scalar::Int(v) => Some(v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_actions_payload_and_trusts_the_array_over_count() {
        let json = br#"{"type":"actions","product_id":"p","session_id":"s1","user_id":"u","email":null,
            "actions":[{"index":0,"type":"Click","title":"Click A","description":"d","timestamp_start":1785333601.5,
            "timestamp_end":"1785333602.5","raw_url":"https://a/x?q=1","canonical_url":"https://a/x","user_id":"u"}, 7],
            "count":3,"forwarded_at":3.0,"extra":{"ignored":true}}"#;
        let Payload::Actions(p) = decode(json).unwrap() else {
            panic!("not actions")
        };
        assert_eq!(p.session_id.as_deref(), Some("s1"));
        assert!(p.email_present);
        assert_eq!(p.email, None);
        assert_eq!(p.count, Some(3));
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.skipped_actions, 1);
        let a = &p.actions[0];
        assert_eq!(a.kind(), "click");
        assert_eq!(a.timestamp_end(), Some(1785333602.5));
        assert_eq!(a.raw_url_if_different(), Some("https://a/x?q=1"));
        assert_eq!(
            a.identity(),
            None,
            "same user as the envelope is not stored twice"
        );
    }

    #[test]
    fn old_producers_with_three_fields_still_decode() {
        let json = br#"{"type":"actions","session_id":"s","actions":[{"title":"T","description":"D","canonical_url":"/c"}]}"#;
        let Payload::Actions(p) = decode(json).unwrap() else {
            panic!()
        };
        assert!(!p.email_present);
        assert_eq!(p.actions[0].kind(), "action");
        assert_eq!(p.actions[0].raw_url(), "/c");
    }

    #[test]
    fn refuses_what_cannot_be_a_payload() {
        assert!(matches!(decode(b"not json"), Err(DecodeError::Syntax(_))));
        assert_eq!(decode(b"[1,2]"), Err(DecodeError::NotObject));
        assert_eq!(
            decode(br#"{"session_id":"s"}"#),
            Err(DecodeError::MissingType)
        );
        assert!(matches!(
            decode(br#"{"type":"actions","#),
            Err(DecodeError::Syntax(_))
        ));
    }

    #[test]
    fn implausible_timestamps_read_as_absent() {
        let json = br#"{"type":"actions","session_id":"s","actions":[
            {"title":"ms","canonical_url":"/","timestamp_start":1785333602114,"timestamp_end":0},
            {"title":"s","canonical_url":"/","timestamp_start":1785333602.1}]}"#;
        let Payload::Actions(p) = decode(json).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.actions[0].timestamp_start(), p.actions[0].timestamp_end()),
            (None, None)
        );
        assert_eq!(p.actions[1].timestamp_start(), Some(1785333602.1));
    }

    #[test]
    fn every_text_is_bounded() {
        let long = "x".repeat(300_000);
        let json = serde_json::json!({"type": "usertour_trigger", "session_id": "s", "flow_id": long,
            "reason": long, "product_id": long, "user_id": long});
        let Payload::TourTrigger(t) = decode(json.to_string().as_bytes()).unwrap() else {
            panic!()
        };
        assert!(t.flow_id.chars().count() <= MAX_ID_LEN + 1);
        assert!(t.reason.unwrap().chars().count() <= MAX_TITLE_CHARS + 1);
        assert!(t.product_id.unwrap().chars().count() <= MAX_ID_LEN + 1);
        let json = serde_json::json!({"type": "actions", "session_id": "s", "email": long,
            "actions": [{"title": "t", "canonical_url": "/", "email": long, "conversation_id": long}]});
        let Payload::Actions(p) = decode(json.to_string().as_bytes()).unwrap() else {
            panic!()
        };
        assert!(p.email.unwrap().chars().count() <= MAX_ID_LEN + 1);
        let identity = p.actions[0].identity().unwrap();
        assert!(identity.conversation_id.as_ref().unwrap().chars().count() <= MAX_ID_LEN + 1);
    }

    #[test]
    fn unknown_types_are_reported_not_failed() {
        assert_eq!(
            decode(br#"{"type":"future_thing","x":1}"#),
            Ok(Payload::Unknown {
                kind: "future_thing".into()
            })
        );
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let json = br#"{"type":"actions","session_id":{"nested":1},"actions":{"not":"an array"},"count":"x"}"#;
        let Payload::Actions(p) = decode(json).unwrap() else {
            panic!()
        };
        assert_eq!(p.session_id, None);
        assert_eq!(p.skipped_actions, 1);
        assert_eq!(p.count, None);
    }

    #[test]
    fn null_session_is_refused_not_pooled() {
        let json = br#"{"type":"actions","session_id":null,"actions":[]}"#;
        let Payload::Actions(p) = decode(json).unwrap() else {
            panic!()
        };
        assert_eq!(p.into_batch(None), Err(InvalidId::Empty));
    }

    #[test]
    fn summary_and_tour_payloads() {
        let Payload::Summary(s) =
            decode(br#"{"type":"summary","session_id":"s","summary":"x","replaces":12}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.replaces, 12);
        let Payload::TourTrigger(t) =
            decode(br#"{"type":"usertour_trigger","session_id":"s","flow_id":"f"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(t.flow_id, "f");
    }
}
