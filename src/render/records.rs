//! Turning one session into knowledge records, the way Dify consumes them.
//!
//! Dify joins only each record's `content` into the prompt, sorted by score, so every record
//! carries its own header line (what it is, when). The activity record always comes first with
//! score 1.0; the summary and the raw chunks are scored by how well their text matches the
//! question, blended with recency, and every score stays inside 0..1.

use serde::Serialize;
use serde_json::{Map, Value, json};
use smallvec::SmallVec;

use crate::clock::{format_rfc3339, format_utc, format_utc_time};
use crate::render::activity::{ACTIVITY_HEADER, render_activity};
use crate::session::model::{Chunk, Session, Summary};

/// Score of the activity record: it always ranks first and survives any threshold.
pub const ACTIVITY_SCORE: f64 = 1.0;
/// Scores of other records: `BASE + RELEVANCE_WEIGHT * relevance + RECENCY_WEIGHT * recency`.
const BASE: f64 = 0.45;
const RELEVANCE_WEIGHT: f64 = 0.35;
const RECENCY_WEIGHT: f64 = 0.19;
/// Each older chunk's recency is this factor of the next newer one.
const RECENCY_DECAY: f64 = 0.85;
/// The summary's recency: older than the newest raw chunk, but it covers everything.
const SUMMARY_RECENCY: f64 = 0.6;

/// Which kind of record (metadata `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Activity,
    Summary,
    Actions,
}

/// One record as Dify's External Knowledge API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Record {
    /// Self-describing text; the only part Dify puts into the prompt.
    pub content: String,
    /// 0..1; the Current User Activity record is always 1.0.
    pub score: f64,
    pub title: String,
    /// `kind` (activity, summary, actions), `session_id`, `document_id`, times, ...
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl Record {
    pub fn kind(&self) -> Option<&str> {
        self.metadata.get("kind").and_then(Value::as_str)
    }
}

/// Every candidate record of a session, best first (activity, then by score).
pub fn session_records(
    session: &Session,
    question: &str,
    now: f64,
    window_secs: f64,
) -> Vec<Record> {
    let terms = terms_of(question);
    let mut records = Vec::with_capacity(session.chunks().len() + 2);
    records.push(activity_record(session, now, window_secs));
    for (mut record, recency) in scored_candidates(session) {
        record.score = blend(relevance(&terms, &record.content), recency);
        records.push(record);
    }
    records[1..].sort_by(|a, b| b.score.total_cmp(&a.score));
    records
}

/// The records after the activity record, in their order before sorting (the summary, then
/// the chunks newest first), each with its recency and a score of 0: what neither the question
/// nor the time changes, so the read path can prepare it once per session snapshot.
pub fn scored_candidates(session: &Session) -> Vec<(Record, f64)> {
    let mut out = Vec::with_capacity(session.chunks().len() + 1);
    if let Some(summary) = &session.summary() {
        let content = summary_content(summary);
        out.push((
            summary_record(session, summary, content, 0.0),
            SUMMARY_RECENCY,
        ));
    }
    for (age, chunk) in session.chunks().iter().rev().enumerate() {
        let content = chunk_content(chunk);
        let recency = RECENCY_DECAY.powi(age.min(200) as i32);
        out.push((chunk_record(session, chunk, content, 0.0), recency));
    }
    out
}

/// The score of a record whose content has relevance `relevance` to the question and the
/// given recency, as [`session_records`] computes it.
pub fn score(relevance: f64, recency: f64) -> f64 {
    blend(relevance, recency)
}

/// Apply Dify's `score_threshold` (never to the activity record) and `top_k`.
pub fn select(mut records: Vec<Record>, score_threshold: f64, top_k: usize) -> Vec<Record> {
    records.retain(|r| r.kind() == Some("activity") || r.score >= score_threshold);
    records.sort_by(|a, b| b.score.total_cmp(&a.score));
    records.truncate(top_k);
    records
}

/// All the text a chatbot needs, joined the way Dify joins records (newline-separated).
pub fn join_content(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| r.content.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn blend(relevance: f64, recency: f64) -> f64 {
    let score = BASE + RELEVANCE_WEIGHT * relevance + RECENCY_WEIGHT * recency;
    (score.clamp(0.0, 0.99) * 10_000.0).round() / 10_000.0
}

fn base_metadata(
    session: &Session,
    kind: RecordKind,
    id_suffix: &str,
    from: f64,
    to: f64,
) -> Map<String, Value> {
    let document_id = format!("{}:{id_suffix}", session.id());
    let mut m = Map::new();
    m.insert("document_id".into(), json!(document_id));
    m.insert("doc_id".into(), json!(document_id));
    m.insert("session_id".into(), json!(session.id().as_str()));
    m.insert("kind".into(), json!(kind));
    if let Some(product) = &session.product_id() {
        m.insert("product_id".into(), json!(product));
    }
    m.insert("start_time".into(), json!(format_rfc3339(from)));
    m.insert("end_time".into(), json!(format_rfc3339(to)));
    m.insert("start_ts".into(), json!(from.floor() as i64));
    m.insert("end_ts".into(), json!(to.ceil() as i64));
    m
}

/// The activity record's metadata but for `generated_at` (the only part that changes with
/// the time of the answer).
pub fn activity_metadata(session: &Session, window_secs: f64) -> Map<String, Value> {
    let last = session.last_activity();
    base_metadata(
        session,
        RecordKind::Activity,
        "activity",
        last - window_secs,
        last,
    )
}

/// The metadata key of the time an activity record was generated.
pub const GENERATED_AT: &str = "generated_at";

fn activity_record(session: &Session, now: f64, window_secs: f64) -> Record {
    let content = render_activity(session, now, window_secs);
    let mut metadata = activity_metadata(session, window_secs);
    metadata.insert(GENERATED_AT.into(), json!(format_rfc3339(now)));
    Record {
        content,
        score: ACTIVITY_SCORE,
        title: ACTIVITY_HEADER.to_string(),
        metadata,
    }
}

fn summary_content(summary: &Summary) -> String {
    format!(
        "Summary of this user's earlier activity in this session ({} summarizer, {} actions, {} to {}):\n{}",
        summary.source.as_str(),
        summary.covered_actions,
        format_utc(summary.first_ts),
        format_utc(summary.last_ts),
        summary.text.trim()
    )
}

fn summary_record(session: &Session, summary: &Summary, content: String, score: f64) -> Record {
    let mut metadata = base_metadata(
        session,
        RecordKind::Summary,
        &format!("summary:{}", summary.generation),
        summary.first_ts,
        summary.last_ts,
    );
    metadata.insert("summarizer".into(), json!(summary.source.as_str()));
    metadata.insert(
        "covers_through_seq".into(),
        json!(summary.covers_through_seq),
    );
    metadata.insert("action_count".into(), json!(summary.covered_actions));
    Record {
        content,
        score,
        title: format!("Session summary ({})", summary.source.as_str()),
        metadata,
    }
}

fn chunk_content(chunk: &Chunk) -> String {
    let mut content = format!(
        "User actions in this session from {} to {} UTC ({} on {}, batch {}):",
        format_utc_time(chunk.first_ts),
        format_utc_time(chunk.last_ts),
        plural(chunk.actions.len(), "action"),
        format_utc(chunk.first_ts)
            .split(' ')
            .next()
            .unwrap_or_default(),
        chunk.seq
    );
    for action in chunk.actions.iter() {
        content.push_str("\n- ");
        content.push_str(&action.describe());
    }
    if chunk.actions.is_empty() {
        content.push_str("\n(no actions in this batch)");
    }
    content
}

fn chunk_record(session: &Session, chunk: &Chunk, content: String, score: f64) -> Record {
    let mut metadata = base_metadata(
        session,
        RecordKind::Actions,
        &format!("chunk:{}", chunk.seq),
        chunk.first_ts,
        chunk.last_ts,
    );
    metadata.insert("seq".into(), json!(chunk.seq));
    metadata.insert("action_count".into(), json!(chunk.actions.len()));
    Record {
        content,
        score,
        title: format!("User actions at {}", format_utc(chunk.first_ts)),
        metadata,
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Words too common to say anything about relevance.
fn is_stopword(word: &str) -> bool {
    // A `match` on constants of 3–6 bytes compiles to a few inline compares; a slice scan
    // called `memcmp` for each same-length entry, on every `/retrieval` question.
    matches!(
        word,
        "the"
            | "and"
            | "for"
            | "are"
            | "but"
            | "not"
            | "you"
            | "your"
            | "with"
            | "this"
            | "that"
            | "have"
            | "from"
            | "they"
            | "what"
            | "how"
            | "can"
            | "where"
            | "when"
            | "which"
            | "who"
            | "why"
            | "was"
            | "were"
            | "will"
            | "would"
            | "could"
            | "should"
            | "there"
            | "their"
            | "about"
            | "into"
            | "does"
            | "did"
            | "doing"
            | "just"
            | "get"
            | "got"
            | "want"
            | "need"
            | "please"
            | "help"
            | "user"
    )
}

/// Lower-cased word terms of a text (3+ characters, no stopwords), deduplicated, at most
/// [`MAX_TERMS`].
///
/// Runs on every `/retrieval` question: an ASCII text (the common case) is split by bytes and
/// each word is lower-cased in place at the end of the one buffer [`Terms`] keeps, where a
/// stopword or a repeat is cut off again.
pub fn terms_of(text: &str) -> Terms {
    let mut terms = Terms {
        text: String::with_capacity(text.len().min(256)),
        ends: SmallVec::new(),
    };
    if text.is_ascii() {
        // In ASCII, `char::is_alphanumeric` is `u8::is_ascii_alphanumeric`, every byte is a
        // character boundary, and a word has as many characters as bytes. One pass over the
        // bytes, without a splitting iterator's per-byte calls.
        let bytes = text.as_bytes();
        let mut at = 0;
        while terms.len() < MAX_TERMS {
            let Some(skipped) = bytes[at..].iter().position(|b| WORD_BYTES[usize::from(*b)]) else {
                break;
            };
            let start = at + skipped;
            let len = bytes[start..]
                .iter()
                .position(|b| !WORD_BYTES[usize::from(*b)])
                .unwrap_or(bytes.len() - start);
            at = start + len;
            if len >= 3 {
                let kept = terms.text.len();
                terms.text.push_str(&text[start..at]);
                terms.text[kept..].make_ascii_lowercase();
                terms.keep_last(kept);
            }
        }
    } else {
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            if terms.len() == MAX_TERMS {
                break;
            }
            if word.chars().count() >= 3 {
                let kept = terms.text.len();
                terms.text.push_str(&word.to_lowercase());
                terms.keep_last(kept);
            }
        }
    }
    terms
}

/// `u8::is_ascii_alphanumeric` by table: one load per byte where the scan of a question tests
/// every byte.
static WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as u8).is_ascii_alphanumeric();
        byte += 1;
    }
    table
};

/// The terms of a question (see [`terms_of`]), one after the other in one buffer, so reading
/// a question's terms allocates once instead of once per term.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terms {
    text: String,
    /// Where each term ends in `text`; each begins where the one before it ends. A question
    /// rarely has more than eight terms: those are kept on the stack.
    ends: SmallVec<[usize; 8]>,
}

impl Terms {
    /// These words as terms, as they are (not lower-cased, filtered or deduplicated): to score
    /// with terms that did not come from [`terms_of`].
    pub fn from_words<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Self {
        let mut terms = Self::default();
        for word in words {
            terms.text.push_str(word.as_ref());
            terms.ends.push(terms.text.len());
        }
        terms
    }

    /// Keep the lower-cased word just written at `text[start..]` as a term, unless it is a
    /// stopword or already kept (at most 32 terms: a linear check for repeats is cheaper than
    /// hashing them).
    fn keep_last(&mut self, start: usize) {
        let term = &self.text[start..];
        if is_stopword(term) || self.iter().any(|kept| kept == term) {
            self.text.truncate(start);
        } else {
            self.ends.push(self.text.len());
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The terms, in the order they were read.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.ends.iter().enumerate().map(|(i, &end)| {
            let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
            &self.text[start..end]
        })
    }
}

/// Terms read from one question, at most.
const MAX_TERMS: usize = 32;

/// Share of the question's terms that occur in `content` (prefix match, so "project" finds
/// "projects"), in 0..1; 0 for a question without terms.
///
/// Runs for every record of every `/retrieval` answer, so it allocates nothing per word: each
/// word of 3+ bytes is lower-cased into one reused buffer (ASCII, the common case) and checked
/// against the terms not matched yet, stopping once every term has matched.
pub fn relevance(terms: &Terms, content: &str) -> f64 {
    if terms.is_empty() {
        return 0.0;
    }
    // The terms as slices once, not cut from their buffer again for every word.
    let terms: SmallVec<[&str; 8]> = terms.iter().collect();
    let mut matched: SmallVec<[bool; 8]> = smallvec::smallvec![false; terms.len()];
    let mut unmatched = terms.len();
    let mut ascii_lower = String::new();
    let mut other_lower;
    for word in content
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3)
    {
        let word: &str = if word.is_ascii() {
            ascii_lower.clear();
            ascii_lower.push_str(word);
            ascii_lower.make_ascii_lowercase();
            &ascii_lower
        } else {
            other_lower = word.to_lowercase();
            &other_lower
        };
        for (term, hit) in terms.iter().zip(matched.iter_mut()) {
            if !*hit && term_matches(term, word) {
                *hit = true;
                unmatched -= 1;
            }
        }
        if unmatched == 0 {
            break;
        }
    }
    (terms.len() - unmatched) as f64 / terms.len() as f64
}

/// A term matches a (lower-cased) word that starts with it, or a word of 4+ bytes it starts
/// with ("exports" finds "export").
pub(crate) fn term_matches(term: &str, word: &str) -> bool {
    word.starts_with(term) || term.starts_with(word) && word.len() >= 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};
    use crate::session::model::{SessionId, SessionLimits};
    use std::collections::HashSet;

    fn session() -> Session {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        let limits = SessionLimits { max_chunks: 50 };
        s.append(
            batch(
                "s1",
                vec![action("pageview", "Page Load: Billing", "/billing", 100.0)],
            ),
            100.0,
            limits,
        );
        s.append(
            batch(
                "s1",
                vec![action("click", "Click Export CSV", "/reports", 110.0)],
            ),
            110.0,
            limits,
        );
        s
    }

    #[test]
    fn activity_first_then_relevance_and_recency() {
        let records = session_records(&session(), "how do I export a csv?", 120.0, 120.0);
        assert_eq!(records[0].kind(), Some("activity"));
        assert_eq!(records[0].score, 1.0);
        assert!(
            records[1].content.contains("Export CSV"),
            "{:?}",
            records[1]
        );
        assert!(records.iter().all(|r| (0.0..=1.0).contains(&r.score)));
        let ids: HashSet<&str> = records
            .iter()
            .map(|r| r.metadata["document_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), records.len(), "unique document ids");
    }

    #[test]
    fn threshold_never_drops_the_activity_record_and_top_k_cuts() {
        let records = session_records(&session(), "", 120.0, 120.0);
        let selected = select(records.clone(), 0.999, 5);
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].kind(), Some("activity"));
        assert_eq!(select(records, 0.0, 2).len(), 2);
    }

    /// The straightforward form of [`relevance`]: the set of lower-cased words, then a scan.
    fn relevance_reference(terms: &Terms, content: &str) -> f64 {
        if terms.is_empty() {
            return 0.0;
        }
        let words: HashSet<String> = content
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 3)
            .map(str::to_lowercase)
            .collect();
        let hits = terms
            .iter()
            .filter(|t| {
                words
                    .iter()
                    .any(|w| w.starts_with(t) || t.starts_with(w.as_str()) && w.len() >= 4)
            })
            .count();
        hits as f64 / terms.len() as f64
    }

    #[test]
    fn relevance_matches_the_reference_form() {
        let contents = [
            "User actions in this session from 14:00:02 to 14:00:09 UTC (3 actions):\n- click \"Click Export CSV\" (https://app/reports)",
            "Summary: visited Projects, Billing and the Notifications page; exported a report",
            "Ärger mit der Rechnung: ÖFFNEN, Übersicht, ΣΊΣΥΦΟΣ straße ǅemal",
            "",
            "a an the exp exports EXPORTING projector",
        ];
        let questions = [
            "how do I export a csv?",
            "where are my notifications and billing settings",
            "rechnung öffnen übersicht σίσυφος STRASSE",
            "exporting projects",
            "",
            "export exp proj",
        ];
        for question in questions {
            let terms = terms_of(question);
            let extra = Terms::from_words(["exp", "exporting", "ǆemal"]);
            for content in contents {
                for terms in [&terms, &extra] {
                    assert_eq!(
                        relevance(terms, content),
                        relevance_reference(terms, content),
                        "{terms:?} in {content:?}"
                    );
                }
            }
        }
    }

    fn listed(terms: Terms) -> Vec<String> {
        terms.iter().map(str::to_string).collect()
    }

    #[test]
    fn terms_from_words_are_kept_as_they_are() {
        let terms = Terms::from_words(["Ab", "", "ab", "the"]);
        assert_eq!(terms.len(), 4);
        assert_eq!(listed(terms), ["Ab", "", "ab", "the"]);
        assert!(Terms::from_words::<&str>([]).is_empty());
    }

    /// The straightforward form of [`terms_of`]: every word decoded and lower-cased whole.
    fn terms_reference(text: &str) -> Vec<String> {
        let mut terms: Vec<String> = Vec::new();
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
        {
            let word = word.to_lowercase();
            if is_stopword(&word) || terms.contains(&word) {
                continue;
            }
            terms.push(word);
            if terms.len() == MAX_TERMS {
                break;
            }
        }
        terms
    }

    #[test]
    fn terms_match_the_reference_form() {
        let many: String = (0..40).map(|i| format!("word{i} ")).collect();
        for text in [
            "How do I find the Notifications page?",
            "session_id: s-1\nTHE The tHe export EXPORT exports",
            "İstanbul ΣΊΣΥΦΟΣ straße ǅemal Ärger öl ÖL über",
            "ab abc ABCD a1b ёж ёжик 東京都 東京 x\u{301}y\u{301}z",
            "PLEASE Help USER users helper",
            "",
            "   \t\n",
            &many,
        ] {
            assert_eq!(listed(terms_of(text)), terms_reference(text), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn terms_match_the_reference_form_for_any_text(text in "[a-zA-Z0-9 ?!ÄöİΣςß東\u{301}_-]{0,80}") {
            proptest::prop_assert_eq!(listed(terms_of(&text)), terms_reference(&text));
        }

        #[test]
        fn terms_match_the_reference_form_for_any_ascii_text(text in "[ -~\t\n]{0,120}") {
            proptest::prop_assert_eq!(listed(terms_of(&text)), terms_reference(&text));
        }
    }

    #[test]
    fn terms_skip_stopwords_and_short_words() {
        assert_eq!(
            listed(terms_of("How do I find the Notifications page?")),
            ["find", "notifications", "page"]
        );
    }
}
