//! Activity sources: each module turns one tool's wire format into the common model.
//!
//! A source knows its tool's body shapes and vocabulary and nothing about storage or HTTP:
//! it decodes bytes into [`SourceEvent`]s whose [`Action`] is already *named* the way a person
//! would describe it ("clicked the link \"Invoices\""). The receivers in `ingest` authenticate,
//! deduplicate, group and store them.

pub mod amplitude;
pub mod autoplay;
pub mod autoplay_api;
pub mod elements_chain;
#[cfg(test)]
mod fixtures;
mod json;
pub mod naming;
pub mod posthog;
pub mod segment;

use crate::session::model::{Action, SourceKind};

/// One analytics event, decoded and named, before ingest validates its session.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceEvent {
    pub source: SourceKind,
    /// The session id exactly as the tool sent it; absent or blank is refused by ingest,
    /// never pooled.
    pub session_id: Option<String>,
    /// For Segment-spec events without a session id: the person (`userId`, else
    /// `anonymousId`) that ingest cuts into sessions by the 30-minute idle rule.
    pub sessionless_person: Option<String>,
    pub user_id: Option<String>,
    pub email: Option<String>,
    /// Stable per-delivery key for deduplication: PostHog `uuid`, Amplitude `$insert_id`,
    /// Segment `messageId`, or a hash of the body for Autoplay's flat destination body.
    pub dedupe_key: String,
    /// Event time, Unix seconds (`None` when the event carried no usable time).
    pub timestamp: Option<f64>,
    /// What the user did, named; `None` for events that are not actions of their own
    /// (`identify`, `$pageleave`).
    pub action: Option<Action>,
    /// `$pageleave` (and Amplitude/Segment equivalents): the user left this canonical URL at
    /// `timestamp`; it ends time on that page.
    pub left_page: Option<String>,
}

/// Why one event of a body was refused (the rest of the body is still stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRefusal {
    /// Position of the event in the body (0 for a single event).
    pub index: usize,
    /// A metrics label: `malformed`, `unknown_shape`, `no_session`, ...
    pub reason: &'static str,
    /// A human-readable explanation for the JSON error body and the log.
    pub detail: String,
}

/// The result of decoding one request body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<SourceEvent>,
    pub refused: Vec<EventRefusal>,
}

/// Most events one body may hold (Segment's own batch limit); a bigger body is refused whole.
pub const MAX_EVENTS_PER_BODY: usize = 4000;

/// What may be kept of URLs; everything else in a query string or fragment is dropped.
///
/// Query strings carry secrets (reset tokens, OAuth codes, signed links) and personal data, so
/// the default keeps none. A product whose pages differ only by a parameter (`?tab=billing`)
/// lists it in `LIVECTX_KEEP_QUERY_PARAMS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privacy {
    /// Query parameter names kept (compared ASCII case-insensitively).
    pub keep_query_params: Vec<String>,
}

impl Privacy {
    /// Read a comma-separated allow-list such as `tab, utm_source` (blanks ignored).
    pub fn from_list(list: &str) -> Self {
        Self {
            keep_query_params: list
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Whether a query parameter of this name is kept.
    pub fn keeps(&self, param: &str) -> bool {
        self.keep_query_params
            .iter()
            .any(|kept| kept.eq_ignore_ascii_case(param))
    }
}

/// Why a whole body was refused: nothing in it can ever be stored, so the answer is a 4xx
/// (which PostHog and Segment do not retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error("body is not a {expected}")]
    UnknownShape { expected: &'static str },
    #[error("body holds {count} events; at most {MAX_EVENTS_PER_BODY} are accepted per request")]
    TooManyEvents { count: usize },
}

impl BodyError {
    /// Reason label for metrics and the JSON error body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownShape { .. } => "unknown_shape",
            Self::TooManyEvents { .. } => "too_many_events",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_allow_list_from_the_environment_value() {
        assert_eq!(Privacy::default().keep_query_params, Vec::<String>::new());
        let privacy = Privacy::from_list(" tab, ,utm_source ,");
        assert_eq!(privacy.keep_query_params, vec!["tab", "utm_source"]);
        assert!(privacy.keeps("TAB"));
        assert!(!privacy.keeps("token"));
        assert_eq!(Privacy::from_list(""), Privacy::default());
    }

    #[test]
    fn body_errors_have_metric_labels_and_messages() {
        let errors = [
            BodyError::Malformed("EOF".into()),
            BodyError::UnknownShape { expected: "thing" },
            BodyError::TooManyEvents { count: 5000 },
        ];
        let reasons: Vec<&str> = errors.iter().map(BodyError::reason).collect();
        assert_eq!(reasons, ["malformed", "unknown_shape", "too_many_events"]);
        assert_eq!(
            errors[2].to_string(),
            "body holds 5000 events; at most 4000 are accepted per request"
        );
    }
}
