//! Bounded, in-memory evidence for the operator console: the last lookups the chatbot APIs
//! answered, the last few refused payloads per reason, and events per minute per ingest route.
//!
//! This sits at the foundation (beside [`crate::telemetry`]) so that the layers that record
//! (ingest, the APIs) never import the console that reads it. Every buffer has a fixed bound;
//! recording is a push under a short lock, and anything costly (redacting a payload) runs at
//! most once per second per reason.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::sync::lock;

/// Lookups kept by default.
pub const DEFAULT_LOOKUPS: usize = 500;
/// Redacted examples kept per refusal reason.
pub const SAMPLES_PER_REASON: usize = 3;
/// Minutes of history kept per ingest route.
pub const RATE_MINUTES: usize = 30;
/// Longest identifier text kept per lookup field.
const MAX_FIELD_CHARS: usize = 300;

/// Everything the console reads, held once in the application state.
#[derive(Debug)]
pub struct Diagnostics {
    pub lookups: LookupLog,
    pub refusals: RefusalSamples,
    pub events: EventRates,
}

impl Default for Diagnostics {
    fn default() -> Self {
        Self::new(DEFAULT_LOOKUPS)
    }
}

impl Diagnostics {
    pub fn new(lookups: usize) -> Self {
        Self {
            lookups: LookupLog::new(lookups),
            refusals: RefusalSamples::default(),
            events: EventRates::default(),
        }
    }
}

/// Which API answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupChannel {
    /// Dify's `POST /retrieval`.
    Retrieval,
    /// The MCP tool `get_live_user_activity`.
    Mcp,
    /// `GET /v1/context` or Autoplay's pull API.
    Rest,
}

impl LookupChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrieval => "retrieval",
            Self::Mcp => "mcp",
            Self::Rest => "rest",
        }
    }
}

/// Why a lookup matched no session: the troubleshooting table's answers, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupMiss {
    /// Dify's registration probe: nobody was asked about.
    Probe,
    /// No channel carried an identifier.
    NoIdentifier,
    /// A session id (or bare token) no live session has.
    UnknownId,
    /// An email or user id no live session carries yet.
    NoActivityYet,
    /// A `{{variable}}` the chatbot platform never filled in.
    UnfilledVariable,
    /// Signed identifiers are required and this one was not signed.
    Unsigned,
    BadSignature,
    Expired,
    /// The person's session belongs to another product than the one asked about.
    OtherProduct,
    /// Email lookups are turned off on this server.
    EmailLookupDisabled,
    /// The session store could not be read.
    StoreUnavailable,
    /// The API key was missing or wrong.
    BadKey,
    /// The request could not be read.
    BadRequest,
}

impl LookupMiss {
    /// A short label (also what tests and filters match on).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "registration probe",
            Self::NoIdentifier => "no identifier",
            Self::UnknownId => "unknown id",
            Self::NoActivityYet => "no activity yet",
            Self::UnfilledVariable => "unfilled {{variable}}",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad signature",
            Self::Expired => "expired",
            Self::OtherProduct => "another product",
            Self::EmailLookupDisabled => "email lookups off",
            Self::StoreUnavailable => "store unavailable",
            Self::BadKey => "bad API key",
            Self::BadRequest => "bad request",
        }
    }

    /// What the operator should check.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Probe => {
                "Dify checks the endpoint when the knowledge base is saved; no user is involved."
            }
            Self::NoIdentifier => {
                "Neither metadata_condition, the query's first line nor knowledge_id named a user: wire the session id (or email) into the External Knowledge ID or the query."
            }
            Self::UnknownId => {
                "No live session has this id: compare it with the session ids in the Sessions table; they must be identical strings."
            }
            Self::NoActivityYet => {
                "No session carries this email or user id yet: the chatbot asked before the first identified event arrived."
            }
            Self::UnfilledVariable => {
                "The chatbot platform sent the variable's name instead of its value: define the variable in the app and pass it in inputs."
            }
            Self::Unsigned => {
                "LIVECTX_IDENTITY_SECRET is set, so end-user identifiers must be signed by your backend."
            }
            Self::BadSignature => {
                "The signature does not match: the id was altered or signed with another secret."
            }
            Self::Expired => {
                "The signed identifier has expired: issue a fresh one per conversation."
            }
            Self::OtherProduct => {
                "This person's session belongs to another product than the knowledge_id names."
            }
            Self::EmailLookupDisabled => {
                "LIVECTX_NO_EMAIL_LOOKUP is set: pass the session id or user id instead."
            }
            Self::StoreUnavailable => {
                "The session store could not be read; livectx answered with no records."
            }
            Self::BadKey => "The Authorization header is missing or not one of LIVECTX_API_KEY.",
            Self::BadRequest => "The request body or query string could not be read.",
        }
    }
}

/// One lookup, as the console lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupEntry {
    /// Increases by one per recorded lookup; the console links and polls by it.
    pub seq: u64,
    /// Server clock, Unix seconds.
    pub at: f64,
    pub channel: LookupChannel,
    /// `/retrieval`, `/v1/context`, `live-activity`, `get_live_user_activity`.
    pub route: &'static str,
    /// The identifier as sent, per field (empty when absent), each cut to 300 characters.
    pub knowledge_id: String,
    pub query_line: String,
    pub metadata_condition: String,
    /// The identifier the MCP tool or REST route was given (`email=…`, a user id).
    pub identifier: String,
    /// How the identifier was read: `query`, `metadata`, `knowledge_id`, `email`, `user_id`, ...
    pub via: Option<&'static str>,
    /// Did the identifier that decided carry a signature?
    pub signed: bool,
    /// The session matched, or why none was.
    pub session: Option<String>,
    pub miss: Option<LookupMiss>,
    pub records: usize,
    pub latency: Duration,
}

impl LookupEntry {
    /// An entry for a lookup starting now, with nothing known yet.
    pub fn new(channel: LookupChannel, route: &'static str) -> Self {
        Self {
            seq: 0,
            at: crate::clock::now(),
            channel,
            route,
            knowledge_id: String::new(),
            query_line: String::new(),
            metadata_condition: String::new(),
            identifier: String::new(),
            via: None,
            signed: false,
            session: None,
            miss: None,
            records: 0,
            latency: Duration::ZERO,
        }
    }
}

/// Cut a field to [`MAX_FIELD_CHARS`] characters (on a character boundary).
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_FIELD_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The last N lookups, oldest dropped first.
#[derive(Debug)]
pub struct LookupLog {
    capacity: usize,
    inner: Mutex<LookupRing>,
}

#[derive(Debug, Default)]
struct LookupRing {
    next_seq: u64,
    entries: VecDeque<LookupEntry>,
}

impl LookupLog {
    /// A ring of `capacity` lookups; 0 records nothing (no console to read them), so a
    /// server without the console pays nothing for it on the request path.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(LookupRing {
                next_seq: 1,
                entries: VecDeque::with_capacity(capacity),
            }),
        }
    }

    /// Record one lookup (its `seq` is assigned here). The entry it pushes out is dropped
    /// after the lock is released.
    pub fn record(&self, mut entry: LookupEntry) {
        if self.capacity == 0 {
            return;
        }
        let evicted = {
            let mut ring = lock(&self.inner);
            entry.seq = ring.next_seq;
            ring.next_seq += 1;
            let evicted = if ring.entries.len() >= self.capacity {
                ring.entries.pop_front()
            } else {
                None
            };
            ring.entries.push_back(entry);
            evicted
        };
        drop(evicted);
    }

    /// The newest first, at most `limit`.
    pub fn newest(&self, limit: usize) -> Vec<LookupEntry> {
        lock(&self.inner)
            .entries
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// One entry by its `seq`, while it is still held.
    pub fn get(&self, seq: u64) -> Option<LookupEntry> {
        lock(&self.inner)
            .entries
            .iter()
            .find(|e| e.seq == seq)
            .cloned()
    }

    /// Does this log keep anything? (A capacity of 0, without the console, keeps nothing, so
    /// callers need not build entries.)
    pub fn is_recording(&self) -> bool {
        self.capacity > 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// One refused payload, redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalSample {
    pub at: f64,
    /// What was refused, in words.
    pub what: String,
    /// The payload with identities and secrets blanked, cut short; empty when none was at hand.
    pub excerpt: String,
}

/// Refusals of one source and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalGroup {
    pub source: &'static str,
    pub reason: &'static str,
    pub count: u64,
    pub last_at: f64,
    /// Newest last.
    pub samples: Vec<RefusalSample>,
}

/// Counts and the last few redacted examples of refused payloads, per source and reason.
#[derive(Debug, Default)]
pub struct RefusalSamples {
    inner: Mutex<HashMap<(&'static str, &'static str), RefusalGroup>>,
}

/// A new example of a reason is taken at most this often (redaction costs a parse).
const SAMPLE_INTERVAL_SECS: f64 = 1.0;

impl RefusalSamples {
    /// Count one refusal; keep it as an example when the last one of its reason is older
    /// than a second. `raw` is the payload, when the caller has it.
    pub fn record(
        &self,
        source: &'static str,
        reason: &'static str,
        what: &str,
        raw: Option<&[u8]>,
        now: f64,
    ) {
        let take_sample = {
            let mut groups = lock(&self.inner);
            let group = groups
                .entry((source, reason))
                .or_insert_with(|| RefusalGroup {
                    source,
                    reason,
                    count: 0,
                    last_at: 0.0,
                    samples: Vec::new(),
                });
            group.count += 1;
            group.last_at = now;
            group
                .samples
                .last()
                .is_none_or(|s| now - s.at >= SAMPLE_INTERVAL_SECS)
        };
        if !take_sample {
            return;
        }
        let sample = RefusalSample {
            at: now,
            what: clip(what),
            excerpt: raw.map(redact_excerpt).unwrap_or_default(),
        };
        let mut groups = lock(&self.inner);
        if let Some(group) = groups.get_mut(&(source, reason)) {
            if group.samples.len() >= SAMPLES_PER_REASON {
                group.samples.remove(0);
            }
            group.samples.push(sample);
        }
    }

    /// Every group, the most frequent first.
    pub fn groups(&self) -> Vec<RefusalGroup> {
        let mut groups: Vec<RefusalGroup> = lock(&self.inner).values().cloned().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(b.reason)));
        groups
    }
}

/// Keys whose values are identities or secrets.
const SECRET_KEYS: [&str; 16] = [
    "email",
    "user_id",
    "userid",
    "distinct_id",
    "anonymous_id",
    "anonymousid",
    "$ip",
    "ip",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "password",
    "secret",
    "phone",
    "name",
];
const MAX_EXCERPT_CHARS: usize = 1200;
const MAX_STRING_CHARS: usize = 80;
const MAX_ITEMS: usize = 4;

/// A payload as an operator may see it: JSON with identity and secret fields blanked, emails
/// masked everywhere, long strings and lists cut; anything else as cut, masked text.
pub fn redact_excerpt(raw: &[u8]) -> String {
    let head = &raw[..raw.len().min(64 * 1024)];
    let text = match serde_json::from_slice::<Value>(head) {
        Ok(mut value) => {
            redact_value(&mut value);
            serde_json::to_string(&value).unwrap_or_default()
        }
        Err(_) => mask_emails(&String::from_utf8_lossy(&head[..head.len().min(400)])),
    };
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let lower = key.to_ascii_lowercase();
                if SECRET_KEYS.contains(&lower.as_str()) && !item.is_null() {
                    *item = Value::String("‹redacted›".to_string());
                } else {
                    redact_value(item);
                }
            }
        }
        Value::Array(items) => {
            let extra = items.len().saturating_sub(MAX_ITEMS);
            items.truncate(MAX_ITEMS);
            for item in items.iter_mut() {
                redact_value(item);
            }
            if extra > 0 {
                items.push(Value::String(format!("… {extra} more")));
            }
        }
        Value::String(text) => {
            let masked = mask_emails(text);
            *text = match masked.char_indices().nth(MAX_STRING_CHARS) {
                Some((end, _)) => format!("{}…", &masked[..end]),
                None => masked,
            };
        }
        _ => {}
    }
}

/// Replace every word that looks like an email with `‹email›`.
pub fn mask_emails(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') && word.contains('.') {
            out.push_str("‹email›");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ',' | ';' | '(' | ')') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Events accepted per minute, per ingest route, for the last [`RATE_MINUTES`] minutes.
#[derive(Debug, Default)]
pub struct EventRates {
    inner: Mutex<HashMap<&'static str, RouteRate>>,
}

#[derive(Debug, Clone, Default)]
struct RouteRate {
    /// The Unix minute each slot of `counts` currently counts (slot = minute mod window).
    minutes: [u64; RATE_MINUTES],
    counts: [u64; RATE_MINUTES],
    last_at: f64,
    total: u64,
}

/// One route's history, for the console's chart.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteHistory {
    pub route: &'static str,
    /// Oldest first, one per minute, the current minute last.
    pub per_minute: Vec<u64>,
    pub last_at: f64,
    pub total: u64,
}

impl EventRates {
    /// Count `n` events accepted on `route` (`sse`, `webhook`, `posthog`, ...).
    pub fn record(&self, route: &'static str, n: u64, now: f64) {
        let minute = (now / 60.0).floor().max(0.0) as u64;
        let slot = (minute % RATE_MINUTES as u64) as usize;
        let mut routes = lock(&self.inner);
        let rate = routes.entry(route).or_default();
        if rate.minutes[slot] != minute {
            rate.minutes[slot] = minute;
            rate.counts[slot] = 0;
        }
        rate.counts[slot] += n;
        rate.total += n;
        rate.last_at = now;
    }

    /// Every route's last [`RATE_MINUTES`] minutes, by route name.
    pub fn history(&self, now: f64) -> Vec<RouteHistory> {
        let current = (now / 60.0).floor().max(0.0) as u64;
        let mut out: Vec<RouteHistory> = lock(&self.inner)
            .iter()
            .map(|(route, rate)| {
                let per_minute = (0..RATE_MINUTES as u64)
                    .rev()
                    .map(|back| {
                        let minute = current.saturating_sub(back);
                        let slot = (minute % RATE_MINUTES as u64) as usize;
                        if rate.minutes[slot] == minute && back <= current {
                            rate.counts[slot]
                        } else {
                            0
                        }
                    })
                    .collect();
                RouteHistory {
                    route,
                    per_minute,
                    last_at: rate.last_at,
                    total: rate.total,
                }
            })
            .collect();
        out.sort_by_key(|h| h.route);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(knowledge_id: &str) -> LookupEntry {
        LookupEntry {
            knowledge_id: knowledge_id.to_string(),
            miss: Some(LookupMiss::UnknownId),
            ..LookupEntry::new(LookupChannel::Retrieval, "/retrieval")
        }
    }

    #[test]
    fn the_lookup_log_keeps_the_newest_and_numbers_them() {
        let log = LookupLog::new(3);
        for id in ["a", "b", "c", "d", "e"] {
            log.record(entry(id));
        }
        let newest: Vec<(u64, String)> = log
            .newest(10)
            .into_iter()
            .map(|e| (e.seq, e.knowledge_id))
            .collect();
        assert_eq!(newest, [(5, "e".into()), (4, "d".into()), (3, "c".into())]);
        assert_eq!(log.get(4).map(|e| e.knowledge_id), Some("d".to_string()));
        assert_eq!(log.get(1), None);
        assert_eq!(log.newest(1).len(), 1);
    }

    #[test]
    fn a_log_of_no_capacity_records_nothing() {
        let log = LookupLog::new(0);
        log.record(entry("a"));
        assert!(log.newest(10).is_empty());
        assert_eq!(log.get(1), None);
    }

    #[test]
    fn fields_are_clipped_on_character_boundaries() {
        let long = "é".repeat(400);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_FIELD_CHARS + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn refusals_are_counted_and_sampled_at_most_once_a_second() {
        let samples = RefusalSamples::default();
        for i in 0..10 {
            samples.record(
                "sse",
                "no_session",
                "actions without a session id",
                None,
                100.0 + f64::from(i) * 0.1,
            );
        }
        samples.record("sse", "no_session", "again", None, 102.0);
        samples.record("sse", "no_session", "again", None, 103.0);
        samples.record("sse", "no_session", "last", None, 104.0);
        samples.record("webhook", "malformed", "bad json", Some(b"{oops"), 104.0);
        let groups = samples.groups();
        assert_eq!(groups[0].reason, "no_session");
        assert_eq!(groups[0].count, 13);
        assert_eq!(groups[0].samples.len(), SAMPLES_PER_REASON);
        assert_eq!(
            groups[0].samples.last().map(|s| s.what.as_str()),
            Some("last")
        );
        assert_eq!(groups[1].samples[0].excerpt, "{oops");
    }

    #[test]
    fn excerpts_hide_identities_and_secrets() {
        let raw = br#"{"type":"actions","session_id":"ps_1","email":"maria@example.com","actions":[{"title":"Sent to bob@acme.io now","user_id":"u1"},{},{},{},{},{}],"token":"s3cret"}"#;
        let excerpt = redact_excerpt(raw);
        assert!(!excerpt.contains("maria"), "{excerpt}");
        assert!(!excerpt.contains("bob@acme.io"), "{excerpt}");
        assert!(!excerpt.contains("s3cret"), "{excerpt}");
        assert!(!excerpt.contains("u1"), "{excerpt}");
        assert!(excerpt.contains("ps_1"), "{excerpt}");
        assert!(excerpt.contains("Sent to ‹email› now"), "{excerpt}");
        assert!(excerpt.contains("… 2 more"), "{excerpt}");
        let text = redact_excerpt(b"not json, from eve@example.org");
        assert_eq!(text, "not json, from ‹email›");
    }

    #[test]
    fn event_rates_fill_minute_slots_and_forget_old_minutes() {
        let rates = EventRates::default();
        let t0 = 60.0 * 1_000_000.0;
        rates.record("sse", 2, t0);
        rates.record("sse", 3, t0 + 30.0);
        rates.record("sse", 1, t0 + 60.0);
        rates.record("webhook", 7, t0 + 60.0);
        let history = rates.history(t0 + 61.0);
        assert_eq!(history[0].route, "sse");
        assert_eq!(history[0].per_minute.len(), RATE_MINUTES);
        assert_eq!(history[0].per_minute[RATE_MINUTES - 1], 1);
        assert_eq!(history[0].per_minute[RATE_MINUTES - 2], 5);
        assert_eq!(history[0].total, 6);
        assert_eq!(history[1].per_minute[RATE_MINUTES - 1], 7);
        // Half an hour later the old minutes read as zero, even in reused slots.
        let later_t = t0 + 60.0 * (RATE_MINUTES as f64 + 1.0);
        let later = rates.history(later_t + 1.0);
        assert!(later[0].per_minute.iter().all(|&n| n == 0), "{later:?}");
        rates.record("sse", 4, later_t);
        let reused = rates.history(later_t + 1.0);
        assert_eq!(reused[0].per_minute.iter().sum::<u64>(), 4);
    }
}
