//! The `/retrieval` answer body, prepared once per session snapshot and finished per request.
//!
//! A session changes far less often than it is read (Dify asks once per chat turn, MCP agents
//! in loops), yet rebuilding an answer means rendering the activity view, formatting every
//! record's text and metadata, and serialising them. Nearly all of that depends only on the
//! session: what depends on the request is each record's relevance to the question (so the
//! scores and the order), and what depends on the time is the activity view's first lines
//! ([`crate::render::activity::activity_head`]) and its `generated_at`. So a [`Prepared`] holds, per snapshot:
//!
//! - the activity view's tail ([`activity_tail`]), already JSON-escaped, and its metadata as
//!   JSON split around `generated_at`;
//! - every other record as JSON bytes split around its score, and the words of all of them in
//!   one [`WordIndex`], so a question is scored by looking up its terms, not by comparing them
//!   with every word.
//!
//! A request then writes one buffer: the head, the tail, the chosen records' bytes and scores.
//! The bytes are exactly those of [`crate::render::records::session_records`] followed by
//! Dify's selection and serialisation (tests below and `tests/golden_retrieval.rs` hold it to
//! that).
//!
//! Preparations are cached per session in a bounded, sharded LRU, keyed by the snapshot's
//! identity: an entry holds a [`Weak`] to the `Arc<Session>` it was built from and is used only
//! for that very allocation. Stores never change a snapshot in place while anyone else refers
//! to it (`Arc::make_mut` moves or copies it to a new allocation when a `Weak` exists), so a
//! changed session is a new allocation and can never be answered from an old preparation. The
//! in-memory store hands out its current snapshot; the Redis store keeps the snapshot of the
//! revision it last read (see `session::redis`), so both hit while a session is unchanged.

use std::sync::{Arc, LazyLock, Mutex, Weak};

use bytes::Bytes;
use lru::LruCache;
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::clock::with_rfc3339;
use crate::render::activity::{
    ACTIVITY_HEADER, HeadClock, HeadFacts, activity_tail, idle_since, write_head,
};
use crate::render::records::{
    ACTIVITY_SCORE, GENERATED_AT, Record, activity_metadata, score, scored_candidates, terms_of,
};
use crate::render::word_index::WordIndex;
use crate::session::model::{Session, SessionId};

/// Bytes of preparations kept over all shards; beyond it the least recently used go.
const CACHE_BUDGET_BYTES: usize = 64 << 20;
/// Shards of the cache (each its own lock), so concurrent requests rarely wait on each other.
const SHARDS: usize = 16;

/// One record other than the activity record, ready to be scored and written.
#[derive(Debug)]
struct Candidate {
    recency: f64,
    /// `{"content":…,"metadata":{…},"score":`
    before_score: Box<[u8]>,
    /// `,"title":…}`
    after_score: Box<[u8]>,
}

/// What an answer for one session snapshot needs beyond the question and the time.
#[derive(Debug)]
pub struct Prepared {
    /// The snapshot this was built from (its identity: see the module docs).
    session: Weak<Session>,
    window_bits: u64,
    idle: bool,
    /// The activity view after its head, trailing whitespace trimmed, JSON-escaped (no quotes).
    tail_json: Box<[u8]>,
    /// Whether that tail is empty (then the head is trimmed instead).
    tail_empty: bool,
    /// `","metadata":{…,"generated_at":` (closing the content string first).
    metadata_before: Box<[u8]>,
    /// The rest of the metadata, the score and the title: `,…},"score":1.0,"title":"…"}`.
    metadata_after: Box<[u8]>,
    candidates: Vec<Candidate>,
    /// The candidates' words, for scoring a question against all of them at once.
    words: WordIndex,
    /// [`Session::last_activity`] of the snapshot (read on every answer).
    last_activity: f64,
    /// What the activity view's head reads of the snapshot.
    head_facts: HeadFacts,
    /// The last head written, JSON-escaped after its opening quote, with the clock it was
    /// written for: within one second (the head's resolution) every answer has the same head.
    head: Mutex<Option<(HeadClock, Box<[u8]>)>>,
    /// Heap bytes held, for the cache's budget.
    bytes: usize,
}

/// Heap bytes a cached head is counted as (a head is about 200 bytes; a long page label more).
const HEAD_BYTES: usize = 512;

impl Prepared {
    /// Prepare the answers for `session` with an activity window of `window_secs`, for times
    /// as idle (or not) as `now` (see [`Self::fits`]).
    pub fn build(session: &Arc<Session>, window_secs: f64, now: f64) -> Self {
        let last_activity = session.last_activity();
        let idle = idle_since(last_activity, now, window_secs);
        let mut tail = activity_tail(session, idle, window_secs);
        tail.truncate(tail.trim_end().len());
        let tail_json = json_string_contents(&tail);

        let mut metadata = activity_metadata(session, window_secs);
        metadata.insert(GENERATED_AT.into(), Value::Null);
        let mut metadata_before = b"\",\"metadata\":".to_vec();
        let mut metadata_after = Vec::new();
        write_map_split(
            &metadata,
            GENERATED_AT,
            &mut metadata_before,
            &mut metadata_after,
        );
        metadata_after.extend_from_slice(b",\"score\":");
        write_json(&mut metadata_after, &ACTIVITY_SCORE);
        metadata_after.extend_from_slice(b",\"title\":");
        write_json(&mut metadata_after, ACTIVITY_HEADER);
        metadata_after.push(b'}');

        let scored = scored_candidates(session);
        let words = WordIndex::build(scored.iter().map(|(record, _)| record.content.as_str()));
        let candidates: Vec<Candidate> = scored
            .iter()
            .map(|(record, recency)| Candidate::of(record, *recency))
            .collect();
        let bytes = std::mem::size_of::<Self>()
            + tail_json.len()
            + metadata_before.len()
            + metadata_after.len()
            + candidates.iter().map(Candidate::bytes).sum::<usize>()
            + words.bytes()
            + HEAD_BYTES;
        Self {
            session: Arc::downgrade(session),
            window_bits: window_secs.to_bits(),
            idle,
            tail_empty: tail.is_empty(),
            tail_json: tail_json.into_boxed_slice(),
            metadata_before: metadata_before.into_boxed_slice(),
            metadata_after: metadata_after.into_boxed_slice(),
            candidates,
            words,
            last_activity,
            head_facts: HeadFacts::of(session),
            head: Mutex::new(None),
            bytes,
        }
    }

    /// Was this prepared from exactly this snapshot and window, for a time as idle (or not)
    /// as `now`?
    fn fits(&self, session: &Arc<Session>, window_secs: f64, now: f64) -> bool {
        std::ptr::eq(self.session.as_ptr(), Arc::as_ptr(session))
            && self.window_bits == window_secs.to_bits()
            && self.idle == idle_since(self.last_activity, now, window_secs)
    }

    /// The answer body `{"records": [...]}` for `question` at server time `now`: the activity
    /// record, then the other records scoring at least `score_threshold`, best first, `top_k`
    /// records in all; and how many records it holds.
    pub fn answer(
        &self,
        session: &Session,
        question: &str,
        score_threshold: f64,
        top_k: usize,
        now: f64,
        window_secs: f64,
    ) -> (Bytes, usize) {
        let terms = terms_of(question);
        let mut scored: SmallVec<[(f64, &Candidate); STACK_CANDIDATES]> =
            SmallVec::with_capacity(self.candidates.len());
        let mut candidates = self.candidates.iter();
        self.words.relevance_each(&terms, |relevance| {
            if let Some(c) = candidates.next() {
                scored.push((score(relevance, c.recency), c));
            }
        });
        // Stable, as `session_records` sorts: equal scores keep the summary-then-newest order.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let chosen = scored
            .iter()
            .filter(|(s, _)| *s >= score_threshold)
            .take(top_k.saturating_sub(1));

        let clock = self.head_facts.clock(now, window_secs, self.last_activity);
        let mut out = Vec::with_capacity(
            64 + HEAD_BYTES
                + self.tail_json.len()
                + self.metadata_before.len()
                + self.metadata_after.len()
                + self
                    .candidates
                    .iter()
                    .take(top_k)
                    .map(|c| c.before_score.len() + c.after_score.len() + 24)
                    .sum::<usize>(),
        );
        out.extend_from_slice(b"{\"records\":[{\"content\":");
        self.push_head(session, clock, &mut out);
        out.extend_from_slice(&self.tail_json);
        out.extend_from_slice(&self.metadata_before);
        with_rfc3339(now, |stamp| write_json_str(&mut out, stamp));
        out.extend_from_slice(&self.metadata_after);
        let mut records = 1;
        for (score, candidate) in chosen {
            out.push(b',');
            out.extend_from_slice(&candidate.before_score);
            write_json(&mut out, score);
            out.extend_from_slice(&candidate.after_score);
            records += 1;
        }
        out.extend_from_slice(b"]}");
        (Bytes::from(out), records)
    }

    /// The head for `clock` as the start of the content string (its closing quote left off:
    /// the tail continues the string), written again only when the clock has moved.
    fn push_head(&self, session: &Session, clock: HeadClock, out: &mut Vec<u8>) {
        if let Some((written_for, bytes)) = crate::sync::lock(&self.head).as_ref()
            && *written_for == clock
        {
            out.extend_from_slice(bytes);
            return;
        }
        let mut head = write_head(session, clock);
        if self.tail_empty {
            head.truncate(head.trim_end().len());
        }
        let start = out.len();
        write_json(out, head.as_str());
        out.pop();
        *crate::sync::lock(&self.head) = Some((clock, out[start..].into()));
    }
}

/// Candidates scored on the stack, so scoring an answer allocates nothing: a session has its
/// summary and up to 50 chunks.
const STACK_CANDIDATES: usize = 64;

impl Candidate {
    fn of(record: &Record, recency: f64) -> Self {
        let mut before = b"{\"content\":".to_vec();
        write_json(&mut before, record.content.as_str());
        before.extend_from_slice(b",\"metadata\":");
        write_json(&mut before, &record.metadata);
        before.extend_from_slice(b",\"score\":");
        let mut after = b",\"title\":".to_vec();
        write_json(&mut after, record.title.as_str());
        after.push(b'}');
        Self {
            recency,
            before_score: before.into_boxed_slice(),
            after_score: after.into_boxed_slice(),
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.before_score.len() + self.after_score.len()
    }
}

/// The answer body for `session` (see [`Prepared::answer`]), from the cached preparation of
/// this snapshot when there is one, else preparing it (and caching it) first.
pub fn answer(
    session: &Arc<Session>,
    question: &str,
    score_threshold: f64,
    top_k: usize,
    now: f64,
    window_secs: f64,
) -> (Bytes, usize) {
    let shard = &CACHE[shard_of(session.id())];
    let cached = crate::sync::lock(shard)
        .map
        .get(session.id())
        .filter(|p| p.fits(session, window_secs, now))
        .map(Arc::clone);
    let prepared = cached.unwrap_or_else(|| {
        let prepared = Arc::new(Prepared::build(session, window_secs, now));
        crate::sync::lock(shard).insert(session.id().clone(), Arc::clone(&prepared));
        prepared
    });
    prepared.answer(session, question, score_threshold, top_k, now, window_secs)
}

/// One shard of the cache: an LRU by session id with its bytes counted.
struct Shard {
    map: LruCache<SessionId, Arc<Prepared>>,
    bytes: usize,
}

impl Shard {
    fn insert(&mut self, id: SessionId, prepared: Arc<Prepared>) {
        self.bytes += prepared.bytes;
        if let Some(old) = self.map.put(id, prepared) {
            self.bytes -= old.bytes;
        }
        while self.bytes > CACHE_BUDGET_BYTES / SHARDS && self.map.len() > 1 {
            match self.map.pop_lru() {
                Some((_, old)) => self.bytes -= old.bytes,
                None => break,
            }
        }
    }
}

static CACHE: LazyLock<Vec<Mutex<Shard>>> = LazyLock::new(|| {
    (0..SHARDS)
        .map(|_| {
            Mutex::new(Shard {
                map: LruCache::unbounded(),
                bytes: 0,
            })
        })
        .collect()
});

fn shard_of(id: &SessionId) -> usize {
    crate::sync::shard_of(id.as_str().as_bytes(), SHARDS)
}

/// Serialise a value as compact JSON onto `out` (writing into a `Vec` cannot fail).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A string as JSON, as [`write_json`] writes it, but without serde_json's escaping pass over a
/// text that needs none (the `generated_at` stamp of every answer: digits and `-:.TZ`).
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // serde_json escapes exactly the control characters, `"` and `\`. Counted over every byte
    // (no early exit), so the check is vectorised.
    let escaped = text
        .bytes()
        .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .count();
    if escaped == 0 {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        write_json(out, text);
    }
}

/// A string's JSON form without its quotes (escaping is per character, so pieces escaped
/// apart join into the escaping of the whole).
fn json_string_contents(text: &str) -> Vec<u8> {
    let mut quoted = Vec::with_capacity(text.len() + 2);
    write_json(&mut quoted, text);
    quoted.pop();
    quoted.remove(0);
    quoted
}

/// Write `map` as compact JSON (what `serde_json` writes: keys in the map's order), split just
/// after `"<split_at>":` — its value is left out, written per answer between the two parts.
fn write_map_split(
    map: &Map<String, Value>,
    split_at: &str,
    before: &mut Vec<u8>,
    after: &mut Vec<u8>,
) {
    let mut out = &mut *before;
    out.push(b'{');
    let mut first = true;
    for (key, value) in map {
        if !first {
            out.push(b',');
        }
        first = false;
        write_json(out, key.as_str());
        out.push(b':');
        if key == split_at {
            out = &mut *after;
        } else {
            write_json(out, value);
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::records::{select, session_records};
    use crate::session::model::tests::{action, batch};
    use crate::session::model::{Gap, SessionLimits};

    fn plain_and_serde(text: &str) -> (Vec<u8>, Vec<u8>) {
        let (mut plain, mut serde) = (Vec::new(), Vec::new());
        write_json_str(&mut plain, text);
        write_json(&mut serde, text);
        (plain, serde)
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for text in [
            "2026-12-07T10:42:31.123Z",
            "",
            "a\"b",
            "back\\slash",
            "tab\tnew\nline\u{1}\u{1f}",
            "del \u{7f} é ✓ 🚀",
        ] {
            let (plain, serde) = plain_and_serde(text);
            assert_eq!(plain, serde, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(text in "\\PC*|[\u{0}-\u{7f}]{0,40}") {
            let (plain, serde) = plain_and_serde(&text);
            proptest::prop_assert_eq!(plain, serde);
        }
    }

    /// The straightforward answer: every record built, selected, serialised.
    fn reference(
        session: &Session,
        question: &str,
        threshold: f64,
        top_k: usize,
        now: f64,
        window: f64,
    ) -> (Bytes, usize) {
        let records = select(
            session_records(session, question, now, window),
            threshold,
            top_k,
        );
        let body = serde_json::to_vec(&serde_json::json!({ "records": records })).unwrap();
        (Bytes::from(body), records.len())
    }

    fn session(chunks: usize, page: bool, extras: bool) -> Session {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        let limits = SessionLimits { max_chunks: 50 };
        let titles = [
            ("pageview", "Page Load: Billing \"settings\" ✓", "/billing"),
            ("click", "Click Export CSV", "/reports?x=1&y=<2>"),
            ("submit", "Submit Coupon 🚀", "/checkout"),
            ("click", "Click Projects link", "/dashboard"),
        ];
        for i in 0..chunks {
            let (kind, title, url) = titles[i % titles.len()];
            let kind = if page || kind != "pageview" {
                kind
            } else {
                "click"
            };
            let t = 100.0 + 10.0 * i as f64;
            s.append(batch("s1", vec![action(kind, title, url, t)]), t, limits);
        }
        if extras {
            s.note_gap(Gap {
                from: 120.0,
                to: 125.0,
            });
            s.record_tour("flow_retry", Some("payment \"failed\""), 130.0, 130.0);
        }
        s
    }

    #[test]
    fn answers_are_the_reference_bytes() {
        let sessions = [
            session(0, false, false),
            session(1, true, false),
            session(3, false, true),
            session(6, true, true),
            session(9, true, false),
        ];
        let questions = [
            "",
            "how do I export a csv?",
            "billing settings coupon projects",
            "Ärger ÖFFNEN straße",
        ];
        for s in sessions {
            let s = Arc::new(s);
            for window in [60.0, 120.0, 0.5] {
                // In and across seconds, forward and back: the head written for one
                // second is reused within it, never beyond.
                for offset in [
                    0.0, 0.3, 0.99, 30.0, 30.49, 30.51, 30.2, 900.0, 900.6, 899.99, 0.1,
                ] {
                    let now = s.last_activity() + offset;
                    for question in questions {
                        for (threshold, top_k) in
                            [(0.0, 5), (0.0, 1), (0.6, 3), (0.999, 50), (0.0, 50)]
                        {
                            let expected = reference(&s, question, threshold, top_k, now, window);
                            let got = answer(&s, question, threshold, top_k, now, window);
                            assert_eq!(
                                String::from_utf8_lossy(&got.0),
                                String::from_utf8_lossy(&expected.0),
                                "{question:?} at {now} window {window} top_k {top_k}"
                            );
                            assert_eq!(got.1, expected.1);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_changed_snapshot_is_never_answered_from_the_old_one() {
        let mut s = Arc::new(session(2, true, false));
        let now = s.last_activity() + 5.0;
        let before = answer(&s, "export", 0.0, 5, now, 120.0);
        let kept = Arc::clone(&s);
        Arc::make_mut(&mut s).append(
            batch(
                "s1",
                vec![action("click", "Click Invoices", "/billing", now)],
            ),
            now,
            SessionLimits { max_chunks: 50 },
        );
        drop(kept);
        let after = answer(&s, "export", 0.0, 5, now, 120.0);
        assert_ne!(before.0, after.0);
        assert_eq!(after, reference(&s, "export", 0.0, 5, now, 120.0));
        // Changed in place by its only owner, too: the cache's Weak forces a new allocation.
        let t = now + 1.0;
        Arc::make_mut(&mut s).append(
            batch("s1", vec![action("click", "Click Refunds", "/billing", t)]),
            t,
            SessionLimits { max_chunks: 50 },
        );
        assert_eq!(
            answer(&s, "export", 0.0, 5, t, 120.0),
            reference(&s, "export", 0.0, 5, t, 120.0)
        );
    }
}
