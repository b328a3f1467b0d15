//! Actions as the connector delivers them, and the batches and chunks that carry them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{PersonKey, SessionId};

/// One UI action, in the connector's vocabulary.
///
/// Compact on purpose: a store holds tens of thousands of sessions of twenty or more actions,
/// so per-action overhead decides memory use. All texts share one allocation (kind, title,
/// description, canonical URL, then the raw URL when it differs), and absent times are NaN
/// instead of `Option` tags: 64 bytes plus one heap block per action. Serialised exactly as
/// the plain [`ActionParts`] (what Redis and `--data-dir` store).
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "ActionParts", into = "ActionParts")]
pub struct Action {
    /// kind | title | description | canonical URL | raw URL (empty when the same).
    texts: Box<str>,
    /// Ends of kind, title, description and canonical URL within `texts`.
    ends: [u32; 4],
    index: i64,
    timestamp_start: f64,
    timestamp_end: f64,
    identity: Option<Box<ActionIdentity>>,
}

/// The fields of an [`Action`], one by one: how actions are built and serialised.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ActionParts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    /// `pageview`, `click`, `submit`, `type`, ... (lower-cased).
    pub kind: String,
    pub title: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_start: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_end: Option<f64>,
    /// `None` when equal to `canonical_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_url: Option<String>,
    pub canonical_url: String,
    /// Per-action identity, kept only when it differs from the session's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Box<ActionIdentity>>,
}

/// `index` value meaning "none" (the connector's indexes are small and non-negative).
const NO_INDEX: i64 = i64::MIN;

fn time_or_nan(time: Option<f64>) -> f64 {
    time.filter(|t| t.is_finite()).unwrap_or(f64::NAN)
}

fn nan_to_none(time: f64) -> Option<f64> {
    (!time.is_nan()).then_some(time)
}

impl From<ActionParts> for Action {
    fn from(parts: ActionParts) -> Self {
        Self::new(parts)
    }
}

impl From<Action> for ActionParts {
    fn from(action: Action) -> Self {
        action.parts()
    }
}

impl PartialEq for Action {
    fn eq(&self, other: &Self) -> bool {
        // Times compare as options: two absent (NaN) times are equal.
        self.texts == other.texts
            && self.ends == other.ends
            && self.index == other.index
            && self.timestamp_start() == other.timestamp_start()
            && self.timestamp_end() == other.timestamp_end()
            && self.identity == other.identity
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.parts(), f)
    }
}

impl Action {
    /// Build an action from its fields. Texts longer than 4 GiB cannot occur (payloads are
    /// bounded far below), so the offsets always fit.
    pub fn new(parts: ActionParts) -> Self {
        let raw = parts
            .raw_url
            .as_deref()
            .filter(|raw| *raw != parts.canonical_url)
            .unwrap_or("");
        let mut texts = String::with_capacity(
            parts.kind.len()
                + parts.title.len()
                + parts.description.len()
                + parts.canonical_url.len()
                + raw.len(),
        );
        let mut ends = [0u32; 4];
        for (end, text) in ends.iter_mut().zip([
            &parts.kind,
            &parts.title,
            &parts.description,
            &parts.canonical_url,
        ]) {
            texts.push_str(text);
            *end = u32::try_from(texts.len()).unwrap_or(u32::MAX);
        }
        texts.push_str(raw);
        Self {
            texts: texts.into_boxed_str(),
            ends,
            index: parts.index.unwrap_or(NO_INDEX),
            timestamp_start: time_or_nan(parts.timestamp_start),
            timestamp_end: time_or_nan(parts.timestamp_end),
            identity: parts.identity,
        }
    }

    /// The fields one by one.
    pub fn parts(&self) -> ActionParts {
        ActionParts {
            index: self.index(),
            kind: self.kind().to_string(),
            title: self.title().to_string(),
            description: self.description().to_string(),
            timestamp_start: self.timestamp_start(),
            timestamp_end: self.timestamp_end(),
            raw_url: self.raw_url_if_different().map(str::to_string),
            canonical_url: self.canonical_url().to_string(),
            identity: self.identity.clone(),
        }
    }

    fn text(&self, field: usize) -> &str {
        let start = if field == 0 {
            0
        } else {
            self.ends[field - 1] as usize
        };
        let end = self
            .ends
            .get(field)
            .map_or(self.texts.len(), |e| *e as usize);
        self.texts.get(start..end).unwrap_or("")
    }

    /// `pageview`, `click`, `submit`, `type`, ... (lower-cased).
    pub fn kind(&self) -> &str {
        self.text(0)
    }

    pub fn title(&self) -> &str {
        self.text(1)
    }

    pub fn description(&self) -> &str {
        self.text(2)
    }

    /// The URL with ids collapsed (`/projects/:id`).
    pub fn canonical_url(&self) -> &str {
        self.text(3)
    }

    /// The URL as captured, when it differs from the canonical one.
    pub fn raw_url_if_different(&self) -> Option<&str> {
        Some(self.text(4)).filter(|raw| !raw.is_empty())
    }

    /// The connector's index of the action in its session, if it sent one.
    pub fn index(&self) -> Option<i64> {
        (self.index != NO_INDEX).then_some(self.index)
    }

    pub fn timestamp_start(&self) -> Option<f64> {
        nan_to_none(self.timestamp_start)
    }

    pub fn timestamp_end(&self) -> Option<f64> {
        nan_to_none(self.timestamp_end)
    }

    /// Identity fields this action carries that differ from its session's.
    pub fn identity(&self) -> Option<&ActionIdentity> {
        self.identity.as_deref()
    }
}

/// Identity fields an action carries that differ from its envelope's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ActionIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Box<str>>,
}

impl Action {
    /// The URL as captured (falls back to the canonical one, which is how it was stored).
    pub fn raw_url(&self) -> &str {
        self.raw_url_if_different().unwrap_or(self.canonical_url())
    }

    /// Best single time for ordering and windows: start, else end.
    pub fn time(&self) -> Option<f64> {
        self.timestamp_start().or(self.timestamp_end())
    }

    /// Latest time the action touches.
    pub fn end_time(&self) -> Option<f64> {
        self.timestamp_end().or(self.timestamp_start())
    }

    pub fn is_pageview(&self) -> bool {
        self.kind() == "pageview"
    }

    /// Clicks and submits are what the activity record lists as "what they did".
    pub fn is_click_or_submit(&self) -> bool {
        matches!(self.kind(), "click" | "submit")
    }

    /// The person's phrase an analytics source named this action with
    /// (`clicked the link "Invoices"`), if it did; see [`is_phrase`].
    pub fn phrase(&self) -> Option<&str> {
        Some(self.description()).filter(|d| is_phrase(d))
    }

    /// Rage clicks, dead clicks and errors: signs that the user is stuck.
    pub fn is_frustration(&self) -> bool {
        matches!(self.kind(), "rageclick" | "dead_click" | "error")
    }

    /// One line for prompts and records:
    /// `14:00:02 UTC click "Click Projects link": User clicked ... (https://app/dashboard)`.
    pub fn describe(&self) -> String {
        let when = self
            .time()
            .map(|t| format!("{} UTC ", crate::clock::format_utc_time(t)))
            .unwrap_or_default();
        let description = self.description().trim();
        let detail = if description.is_empty() || description == self.title().trim() {
            String::new()
        } else {
            format!(": {description}")
        };
        format!(
            "{when}{} \"{}\"{detail} ({})",
            self.kind(),
            self.title().trim(),
            self.canonical_url()
        )
    }

    /// The page (canonical URL, label) this action puts the user on, when it is not `current`:
    /// a page load of another page — the same canonical URL with another title counts, since
    /// two consultants' profiles share `/consultants/:id` — or any action on another URL. A
    /// reload of the current page is not a move.
    pub fn arrives_at(&self, current: Option<(&str, &str)>) -> Option<(String, String)> {
        let url = self.canonical_url();
        // A source's event without a page (an Amplitude custom event) happened wherever the
        // user already was.
        if url.is_empty() && !self.is_pageview() && self.phrase().is_some() {
            return None;
        }
        let moved = match current {
            None => true,
            Some((current_url, current_label)) => {
                current_url != url || (self.is_pageview() && current_label != self.page_label())
            }
        };
        moved.then(|| (url.to_string(), self.page_label()))
    }

    /// A readable page name for this action: the title of a page load, else the URL's path.
    pub fn page_label(&self) -> String {
        if self.is_pageview() {
            if let Some(name) = self.title().strip_prefix("Page Load:") {
                let name = name.trim();
                if !name.is_empty() {
                    return name.to_string();
                }
            }
            if !self.title().trim().is_empty() {
                return self.title().trim().to_string();
            }
        }
        url_path_label(self.canonical_url())
    }
}

/// How the descriptions written by analytics sources (`sources::naming`) begin. The Autoplay
/// connector writes sentences ("User clicked the Projects link"), so a description opening
/// with one of these is a person's phrase, which the activity view shows as it is.
pub const PHRASE_OPENINGS: [&str; 7] = [
    "viewed ",
    "clicked ",
    "changed ",
    "started filling in ",
    "submitted ",
    "saw an error",
    "did ",
];

/// Whether a description is a person's phrase (`clicked the link "Invoices"`).
pub fn is_phrase(description: &str) -> bool {
    PHRASE_OPENINGS
        .iter()
        .any(|opening| description.starts_with(opening))
}

/// A short label from a URL: its path (`https://h/a/b?x` → `/a/b`).
pub fn url_path_label(url: &str) -> String {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = if url.contains("://") {
        without_scheme
            .find('/')
            .map_or("/", |i| &without_scheme[i..])
    } else {
        without_scheme
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

/// One delivered batch of actions. Immutable once stored (shared by `Arc` between the store and
/// readers), identified by a per-session sequence number that never repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub seq: u64,
    pub actions: Box<[Action]>,
    /// Server clock (Unix seconds) when the batch was stored.
    pub received_at: f64,
    /// Earliest and latest action time; the connector's `forwarded_at` or `received_at` when
    /// actions carry no timestamps.
    pub first_ts: f64,
    pub last_ts: f64,
}

/// Where a session's activity comes from: shown by the operator console, and a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    PostHog,
    Amplitude,
    Segment,
    AutoplayStream,
    AutoplayWebhook,
    /// Pulled on demand from Autoplay's hosted live-activity API.
    AutoplayApi,
}

impl SourceKind {
    /// PostHog, Amplitude and Segment: one event per request, named by livectx itself.
    pub fn is_analytics(self) -> bool {
        matches!(self, Self::PostHog | Self::Amplitude | Self::Segment)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PostHog => "posthog",
            Self::Amplitude => "amplitude",
            Self::Segment => "segment",
            Self::AutoplayStream => "autoplay_stream",
            Self::AutoplayWebhook => "autoplay_webhook",
            Self::AutoplayApi => "autoplay_api",
        }
    }
}

/// A batch of actions ready to be stored: already validated (the session id exists).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionBatch {
    pub session_id: SessionId,
    pub product_id: Option<String>,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub conversation_id: Option<String>,
    pub actions: Vec<Action>,
    pub forwarded_at: Option<f64>,
    /// Which tool delivered it (recorded on the session for the operator console).
    pub source: Option<SourceKind>,
}

impl ActionBatch {
    /// Identity keys this batch feeds into the index (envelope and per-action, deduplicated).
    pub fn person_keys(&self) -> Vec<PersonKey> {
        let mut keys = Vec::new();
        let mut add = |key: Option<PersonKey>| {
            if let Some(key) = key
                && !keys.contains(&key)
            {
                keys.push(key);
            }
        };
        add(self.email.as_deref().and_then(PersonKey::email));
        add(self.user_id.as_deref().and_then(PersonKey::user_id));
        for action in &self.actions {
            if let Some(identity) = &action.identity {
                add(identity.email.as_deref().and_then(PersonKey::email));
                add(identity.user_id.as_deref().and_then(PersonKey::user_id));
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_labels() {
        assert_eq!(
            url_path_label("https://app.acme.io/projects/:id?x=1"),
            "/projects/:id"
        );
        assert_eq!(url_path_label("https://app.acme.io"), "/");
        assert_eq!(url_path_label("/settings"), "/settings");
    }
}
