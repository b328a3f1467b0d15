//! Golden answers of `/retrieval`: for a fixed store state and a fixed time, the answer body is
//! byte-for-byte what the code rendered when the fixtures were written.
//!
//! Each fixture (`tests/fixtures/golden/retrieval/*.json`) holds one session exactly as a store
//! keeps it (its JSON form, the Redis backend's format) and a list of requests — a question,
//! `top_k`, `score_threshold`, an optional metadata filter, the server time and the activity
//! window — with the answer body each produced. The read path may cache and restructure
//! anything, but it must keep producing these bytes: scores, order, text, metadata and JSON
//! formatting included.
//!
//! The requests of one session run in the fixture's order against one shared renderer state, so
//! whatever is cached from one answer is reused by the next (times move forward and back, the
//! user becomes idle, the question changes), and then each runs again on a cold start.
//!
//! `LIVECTX_BLESS_GOLDEN=1 cargo test --test api golden_retrieval::` rewrites the fixtures from the
//! sessions built below. Only for an intended change of behaviour, never to make a failure go
//! away: the point of the files is that they were written by the code before an optimisation.
#![cfg(feature = "tools")]

use std::path::{Path, PathBuf};

use livectx::api::filter::MetadataCondition;
use livectx::api::retrieval::answer_body;
use livectx::bench::workload::{self, Identity, Walker};
use livectx::demo::personas::{self, Journey, Timebase};
use livectx::ingest::sse::{SseItem, SseParser};
use livectx::session::model::{
    Action, ActionBatch, ActionParts, Gap, Session, SessionId, SessionLimits,
};
use livectx::session::summarizer::builtin;
use livectx::sources::autoplay::payload::{self, Payload};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const LIMITS: SessionLimits = SessionLimits { max_chunks: 50 };
const ORIGIN: f64 = 1_785_333_600.0;

/// One request against the fixture's session, and the answer it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Case {
    question: String,
    top_k: usize,
    score_threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata_condition: Option<Value>,
    now: f64,
    window_secs: f64,
    /// The answer body, exactly (a JSON string holds any bytes of a UTF-8 body losslessly).
    answer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fixture {
    about: String,
    session: Value,
    cases: Vec<Case>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/retrieval")
}

fn answer(session: &std::sync::Arc<Session>, case: &Case) -> String {
    let filter = case
        .metadata_condition
        .as_ref()
        .map(|v| MetadataCondition::parse(v).expect("fixture filters parse"));
    let body = answer_body(
        session,
        &case.question,
        filter.as_ref(),
        case.score_threshold,
        case.top_k,
        case.now,
        case.window_secs,
    );
    String::from_utf8(body.body.to_vec()).expect("answers are UTF-8")
}

#[test]
fn answers_are_byte_identical_to_the_golden_fixtures() {
    if std::env::var_os("LIVECTX_BLESS_GOLDEN").is_some() {
        bless();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("golden fixtures exist")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the full golden set, found {files:?}"
    );
    let mut checked = 0;
    for file in &files {
        let fixture: Fixture =
            serde_json::from_slice(&std::fs::read(file).unwrap()).expect("fixture parses");
        let session: Session =
            serde_json::from_value(fixture.session.clone()).expect("session parses");
        let session = std::sync::Arc::new(session);
        // Warm: every case in order, sharing whatever the read path keeps between answers.
        for (i, case) in fixture.cases.iter().enumerate() {
            let got = answer(&session, case);
            assert_eq!(
                got,
                case.answer,
                "{} case {i} ({:?} at {}, top_k {}, threshold {}, filter {:?})",
                file.display(),
                case.question,
                case.now,
                case.top_k,
                case.score_threshold,
                case.metadata_condition
            );
            checked += 1;
        }
        // Cold: each case from a freshly decoded session (nothing shared with earlier answers).
        for (i, case) in fixture.cases.iter().enumerate().rev() {
            let fresh: Session = serde_json::from_value(fixture.session.clone()).unwrap();
            assert_eq!(
                answer(&std::sync::Arc::new(fresh), case),
                case.answer,
                "{} case {i} from a cold start",
                file.display()
            );
        }
    }
    assert!(checked >= 300, "only {checked} golden answers checked");
}

// ---------------------------------------------------------------------------------------------
// Writing the fixtures (LIVECTX_BLESS_GOLDEN=1).

fn bless() {
    let dir = fixture_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(path).unwrap();
        }
    }
    for (n, (name, about, session, window)) in sessions().into_iter().enumerate() {
        // What is stored is what a store would hand back: the decoded JSON form.
        let stored = serde_json::to_value(&session).unwrap();
        let session: Session = serde_json::from_value(stored.clone()).unwrap();
        let session = std::sync::Arc::new(session);
        let mut cases = Vec::new();
        for (i, (question, top_k, threshold, filter, now)) in
            requests(&session, n as u64).into_iter().enumerate()
        {
            let window_secs = if i % 5 == 4 { 600.0 } else { window };
            let case = Case {
                question,
                top_k,
                score_threshold: threshold,
                metadata_condition: filter,
                now,
                window_secs,
                answer: String::new(),
            };
            cases.push(case);
        }
        // The answers are computed from what the test will read back: serde_json's parser may
        // land an f64 one unit in the last place away from the one written.
        let fixture = Fixture {
            about,
            session: stored,
            cases,
        };
        let mut fixture: Fixture =
            serde_json::from_str(&serde_json::to_string_pretty(&fixture).unwrap()).unwrap();
        let session: Session = serde_json::from_value(fixture.session.clone()).unwrap();
        let session = std::sync::Arc::new(session);
        for case in &mut fixture.cases {
            case.answer = answer(&session, case);
        }
        let mut text = serde_json::to_string_pretty(&fixture).unwrap();
        text.push('\n');
        std::fs::write(dir.join(format!("{n:02}_{name}.json")), text).unwrap();
    }
}

const QUESTIONS: &[&str] = &[
    "",
    "how do I export a csv of my report?",
    "where are my notifications?",
    "Why was my card declined? payment failed again",
    "Rechnung öffnen: Übersicht der Zahlungen",
    "project settings save invite teammate billing consultants availability",
    "x",
];

/// Requests for one session: times around its last activity (inside the window, at its edge,
/// idle for minutes, hours and days, with sub-second parts), questions with and without terms,
/// and the settings and filters Dify sends.
fn requests(session: &Session, seed: u64) -> Vec<(String, usize, f64, Option<Value>, f64)> {
    let last = session.last_activity();
    let base = if last.is_finite() { last } else { ORIGIN };
    let offsets = [
        0.4,
        30.25,
        119.6,
        120.5,
        61.0,
        14.0 * 60.0 + 0.7,
        3.0 * 3600.0,
        5.0 * 86_400.0,
        2.0,
        599.2,
        45.0,
        0.0,
    ];
    let settings: [(usize, f64); 6] = [
        (5, 0.0),
        (1, 0.0),
        (3, 0.5),
        (50, 0.0),
        (5, 0.62),
        (4, 0.99),
    ];
    let filters = [
        None,
        Some(json!({"logical_operator": "and", "conditions": [
            {"name": ["kind"], "comparison_operator": "is", "value": "actions"}]})),
        Some(json!({"logical_operator": "or", "conditions": [
            {"name": ["kind"], "comparison_operator": "is", "value": "summary"},
            {"name": ["seq"], "comparison_operator": ">", "value": 2}]})),
        Some(json!({"conditions": [
            {"name": ["start_ts"], "comparison_operator": "≥", "value": base as i64 - 60}]})),
    ];
    let mut rng = workload::Rng::new(seed * 7919 + 1);
    let mut out = Vec::new();
    for (i, offset) in offsets.iter().enumerate() {
        let question = QUESTIONS[(i + seed as usize) % QUESTIONS.len()];
        let (top_k, threshold) = settings[rng.below(settings.len() as u64) as usize];
        let filter = if i % 4 == 3 {
            filters[1 + rng.below(3) as usize].clone()
        } else {
            None
        };
        out.push((
            question.to_string(),
            top_k,
            threshold,
            filter,
            base + offset,
        ));
    }
    out
}

type Built = (String, String, Session, f64);

fn sessions() -> Vec<Built> {
    let mut all = Vec::new();
    all.extend(walker_sessions());
    all.extend(persona_sessions());
    all.extend(sample_stream_sessions());
    all.extend(edge_sessions());
    all
}

fn summarise(session: &mut Session, now: f64) {
    if let Some(job) = session.claim_summary(1, now, now + 60.0, 7) {
        let draft = builtin::summarize(job.previous.as_deref(), &job.chunks);
        session.finish_summary(&job, draft, now);
    }
}

/// Sessions shaped like the benchmark's: 14–26 actions in 3–5 batches, summarised once they
/// reach 20 actions, some idle.
fn walker_sessions() -> Vec<Built> {
    let mut out = Vec::new();
    for i in 0..7u64 {
        let mut rng = workload::Rng::new(0x601d << 16 | i);
        let actions = 14 + rng.below(13) as usize;
        let batches = 3 + rng.below(3) as usize;
        let who = Identity::new(0x601d, i, i);
        let start = ORIGIN + i as f64 * 17.3;
        let mut walker = Walker::new(i, start);
        let id = SessionId::parse(&who.session_id).unwrap();
        let mut session = Session::new(id, start);
        let mut index = 0i64;
        for b in 0..batches {
            let take = actions / batches + usize::from(b < actions % batches);
            let synth: Vec<_> = (0..take).map(|_| walker.next_action(8.0)).collect();
            let batch = workload::batch(&who, &synth, index).unwrap();
            index += take as i64;
            session.append(batch, walker.clock(), LIMITS);
            if session.raw_actions() >= 20 {
                summarise(&mut session, walker.clock());
            }
        }
        out.push((
            format!("walker_{i}"),
            format!("benchmark-shaped session: {actions} actions in {batches} batches"),
            session,
            120.0,
        ));
    }
    // The criterion benchmark's session: 6 batches of 5, the first four summarised.
    let who = Identity::new(1, 1, 1);
    let mut session = Session::new(SessionId::parse(&who.session_id).unwrap(), ORIGIN);
    let mut walker = Walker::new(1, ORIGIN);
    for b in 0..6 {
        let synth: Vec<_> = (0..5).map(|_| walker.next_action(6.0)).collect();
        session.append(
            workload::batch(&who, &synth, b * 5).unwrap(),
            walker.clock(),
            LIMITS,
        );
        if b == 3 {
            summarise(&mut session, walker.clock());
        }
    }
    out.push((
        "criterion_session".into(),
        "benches/hot_paths.rs session: 30 actions, 20 summarised".into(),
        session,
        120.0,
    ));
    out
}

/// Apply one connector payload the way ingestion does.
fn apply_payload(session: &mut Option<Session>, json: &[u8], now: f64) {
    let Ok(payload) = payload::decode(json) else {
        return;
    };
    match payload {
        Payload::Actions(p) => {
            if let Ok(batch) = p.into_batch(None) {
                let s = session.get_or_insert_with(|| Session::new(batch.session_id.clone(), now));
                s.append(batch, now, LIMITS);
            }
        }
        Payload::Summary(p) => {
            if let Some(s) = session.as_mut() {
                s.apply_connector_summary(&p.summary, p.replaces, now);
            }
        }
        Payload::TourTrigger(p) => {
            if let Some(s) = session.as_mut() {
                s.record_tour(&p.flow_id, p.reason.as_deref(), now, now);
            }
        }
        Payload::Unknown { .. } => {}
    }
}

/// The demo's personas, replayed for a while (the hunter, the form abandoner, the declined
/// card with its tour offer, the newcomer, the visitor).
fn persona_sessions() -> Vec<Built> {
    let mut out = Vec::new();
    for (seed, role, until) in [
        (42u64, 0usize, 90.0),
        (9, 1, 150.0),
        (3, 2, 400.0),
        (2, 3, 200.0),
        (5, 4, 240.0),
        (42, 0, 900.0),
    ] {
        let persona = personas::cast(seed, "acme_prod")[role].clone();
        let time = Timebase::new(ORIGIN, 1.0);
        let mut journey = Journey::new(persona.clone(), seed);
        let mut session = None;
        loop {
            let e = journey.next_emission();
            if e.at > until {
                break;
            }
            apply_payload(&mut session, e.to_json(&time).as_bytes(), time.unix(e.at));
            if let Some(s) = session.as_mut()
                && s.raw_actions() >= 20
            {
                summarise(s, time.unix(e.at));
            }
        }
        if let Some(session) = session {
            out.push((
                format!("persona_{}_{}", persona.role.key(), until as u64),
                format!(
                    "demo persona {:?} (seed {seed}) replayed for {until} s",
                    persona.role
                ),
                session,
                if role == 2 { 600.0 } else { 120.0 },
            ));
        }
    }
    out
}

/// The connector's own sample streams (`tests/fixtures/samples/*.sse`), one session each.
fn sample_stream_sessions() -> Vec<Built> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samples");
    let mut out = Vec::new();
    for name in [
        "01_single_session_actions_and_summary.sse",
        "02_multi_session_interleaved_with_tour_and_link.sse",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let mut frames = Vec::new();
        SseParser::default().feed(&bytes, &mut |item| {
            if let SseItem::Event(e) = item {
                frames.push(e.data);
            }
        });
        let mut by_session: std::collections::BTreeMap<String, Option<Session>> =
            Default::default();
        for (i, data) in frames.iter().enumerate() {
            let Ok(payload) = payload::decode(data.as_bytes()) else {
                continue;
            };
            let Some(id) = payload.session_id().map(str::to_string) else {
                continue;
            };
            let at = match &payload {
                Payload::Actions(p) => p.forwarded_at.unwrap_or(ORIGIN + i as f64),
                _ => ORIGIN + 1000.0 + i as f64,
            };
            let slot = by_session.entry(id).or_default();
            let now = slot.as_ref().map_or(at, |s| s.last_seen().max(at));
            apply_payload(slot, data.as_bytes(), now);
        }
        for (k, (_, session)) in by_session.into_iter().enumerate() {
            if let Some(session) = session {
                out.push((
                    format!("sample_{}_{k}", &name[..2]),
                    format!("session {k} of the connector sample stream {name}"),
                    session,
                    120.0,
                ));
            }
        }
    }
    out
}

fn act(kind: &str, title: &str, url: &str, ts: Option<f64>) -> Action {
    Action::new(ActionParts {
        index: None,
        kind: kind.into(),
        title: title.into(),
        description: format!("User {kind} {title}"),
        timestamp_start: ts,
        timestamp_end: ts,
        raw_url: Some(format!("{url}?ref=x")),
        canonical_url: url.into(),
        identity: None,
    })
}

fn batch_of(id: &str, product: Option<&str>, actions: Vec<Action>) -> ActionBatch {
    ActionBatch {
        session_id: SessionId::parse(id).unwrap(),
        product_id: product.map(str::to_string),
        user_id: Some(format!("u_{id}")),
        email: Some(format!("{id}@example.com")),
        conversation_id: None,
        actions,
        forwarded_at: None,
        source: None,
    }
}

/// Edge cases of the text and the JSON: escapes and non-ASCII, no pages, missing times, gaps,
/// tours, connector summaries, empty batches, long click lists, many chunks, no product.
fn edge_sessions() -> Vec<Built> {
    let t = ORIGIN + 5000.0;
    let mut out = Vec::new();

    let mut s = Session::new(SessionId::parse("edge-escapes").unwrap(), t);
    s.append(
        batch_of(
            "edge-escapes",
            Some("acme_prod"),
            vec![
                act(
                    "pageview",
                    "Page Load: Übersicht \"Zahlungen\" ✓",
                    "https://app/ü/zahlungen",
                    Some(t + 1.25),
                ),
                act(
                    "click",
                    "Click <script>alert('x')</script> \\ back",
                    "https://app/ü/zahlungen",
                    Some(t + 2.5),
                ),
                act(
                    "type",
                    "Type in\tsearch\nfield \u{1}\u{1f} 🚀",
                    "https://app/ü/zahlungen",
                    Some(t + 3.75),
                ),
                act(
                    "submit",
                    "Submit Ärger form ",
                    "https://app/ü/zahlungen",
                    Some(t + 5.0),
                ),
                act(
                    "pageview",
                    "Page Load:   ",
                    "https://app/blank",
                    Some(t + 6.0),
                ),
            ],
        ),
        t + 6.5,
        LIMITS,
    );
    out.push((
        "edge_escapes".into(),
        "escapes, control characters, non-ASCII, blank label".into(),
        s,
        120.0,
    ));

    let mut s = Session::new(SessionId::parse("edge-no-pages").unwrap(), t);
    for i in 0..14 {
        s.append(
            batch_of(
                "edge-no-pages",
                Some("acme_prod"),
                vec![act(
                    "click",
                    &format!("Click button {i}"),
                    "https://app/x",
                    Some(t + i as f64 * 3.0),
                )],
            ),
            t + i as f64 * 3.0,
            LIMITS,
        );
    }
    out.push((
        "edge_no_pages".into(),
        "14 one-click chunks, no page view: more than 10 clicks, no current page".into(),
        s,
        120.0,
    ));

    let mut s = Session::new(SessionId::parse("edge-untimed").unwrap(), t);
    s.append(
        batch_of(
            "edge-untimed",
            None,
            vec![
                act(
                    "pageview",
                    "Page Load: Reports",
                    "https://app/reports",
                    None,
                ),
                act("click", "Click Export CSV", "https://app/reports", None),
            ],
        ),
        t,
        LIMITS,
    );
    let mut b = batch_of("edge-untimed", None, Vec::new());
    b.forwarded_at = Some(t + 10.0);
    s.append(b, t + 10.0, LIMITS);
    s.append(
        batch_of(
            "edge-untimed",
            None,
            vec![act(
                "click",
                "Click far future",
                "https://app/reports",
                Some(1.0e15),
            )],
        ),
        t + 11.0,
        LIMITS,
    );
    out.push((
        "edge_untimed".into(),
        "actions without times, an empty batch, an absurd timestamp, no product".into(),
        s,
        120.0,
    ));

    let mut s = Session::new(SessionId::parse("edge-gaps-tour").unwrap(), t);
    s.append(
        batch_of(
            "edge-gaps-tour",
            Some("acme_prod"),
            vec![
                act(
                    "pageview",
                    "Page Load: Billing",
                    "https://app/billing",
                    Some(t + 1.0),
                ),
                act(
                    "click",
                    "Click Pay now",
                    "https://app/billing",
                    Some(t + 4.0),
                ),
            ],
        ),
        t + 5.0,
        LIMITS,
    );
    s.note_gap(Gap {
        from: t + 10.0,
        to: t + 40.5,
    });
    s.note_gap(Gap {
        from: t + 50.0,
        to: t + 55.0,
    });
    s.record_tour(
        "flow_retry_payment",
        Some("payment failed \"twice\""),
        t + 60.0,
        t + 60.0,
    );
    s.append(
        batch_of(
            "edge-gaps-tour",
            Some("acme_prod"),
            vec![act(
                "pageview",
                "Page Load: Help",
                "https://app/help",
                Some(t + 70.0),
            )],
        ),
        t + 70.0,
        LIMITS,
    );
    s.apply_connector_summary("The user tried to pay twice and opened help.", 1, t + 71.0);
    out.push((
        "edge_gaps_tour_connector".into(),
        "two gaps, a tour with a quoted reason, a connector summary".into(),
        s,
        120.0,
    ));

    let mut s = Session::new(SessionId::parse("edge-tour-only").unwrap(), t);
    s.append(
        batch_of(
            "edge-tour-only",
            Some("acme_prod"),
            vec![act("click", "Click Start", "https://app/start", Some(t))],
        ),
        t,
        LIMITS,
    );
    s.record_tour("flow_welcome", None, t + 2.0, t + 2.0);
    out.push((
        "edge_tour_without_reason".into(),
        "a tour without a reason, no page".into(),
        s,
        120.0,
    ));

    let mut s = Session::new(SessionId::parse("edge-many-chunks").unwrap(), t);
    let pages = [
        "Dashboard",
        "Projects",
        "Project: Apollo",
        "Settings",
        "Billing",
        "Team",
    ];
    for i in 0..30 {
        let page = pages[i % pages.len()];
        let url = format!(
            "https://app/{}",
            page.to_lowercase().replace([' ', ':'], "")
        );
        s.append(
            batch_of(
                "edge-many-chunks",
                Some("acme_prod"),
                vec![
                    act(
                        "pageview",
                        &format!("Page Load: {page}"),
                        &url,
                        Some(t + i as f64 * 4.0),
                    ),
                    act(
                        "click",
                        &format!("Click export {page} csv"),
                        &url,
                        Some(t + i as f64 * 4.0 + 1.5),
                    ),
                ],
            ),
            t + i as f64 * 4.0 + 2.0,
            LIMITS,
        );
    }
    out.push((
        "edge_many_chunks".into(),
        "30 raw chunks, no summary: recency decay, page changes without revisits".into(),
        s,
        120.0,
    ));

    let mut s = Session::new(SessionId::parse("edge-capped").unwrap(), t);
    for i in 0..60 {
        s.append(
            batch_of(
                "edge-capped",
                Some("acme_prod"),
                vec![act(
                    "pageview",
                    &format!("Page Load: Item {}", i % 7),
                    &format!("https://app/items/{}", i % 7),
                    Some(t + i as f64),
                )],
            ),
            t + i as f64,
            LIMITS,
        );
    }
    out.push((
        "edge_chunk_cap".into(),
        "60 chunks over the 50-chunk cap: folded by the built-in summarizer".into(),
        s,
        120.0,
    ));

    let s = Session::new(SessionId::parse("edge-empty").unwrap(), t);
    out.push((
        "edge_empty".into(),
        "a session with nothing in it".into(),
        s,
        120.0,
    ));
    out
}
