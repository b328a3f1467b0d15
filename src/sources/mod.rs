//! Activity sources: each module turns one tool's wire format into the common model.
//!
//! A source knows its tool's body shapes and vocabulary and nothing about storage or HTTP:
//! it decodes bytes into [`SourceEvent`]s whose [`Action`] is already *named* the way a person
//! would describe it ("clicked the link \"Invoices\""). The receivers in `ingest` authenticate,
//! deduplicate, group and store them.

pub mod autoplay;
pub mod autoplay_api;

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
