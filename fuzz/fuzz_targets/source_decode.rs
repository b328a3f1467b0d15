//! Analytics bodies (PostHog, Amplitude, Segment): arbitrary bytes through all three
//! decoders, and the decoded actions through a session and the activity view.
//!
//! The first byte chooses the privacy settings (bit 0: keep `tab` and `utm_source`); the rest
//! is the body. Invariants: never panics; a refused body has a reason; refusals point inside
//! the body; no stored URL holds a fragment, or a query parameter that is not allow-listed;
//! every action has a known kind, a non-empty bounded title and a person's phrase; dedupe keys
//! are non-empty and bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livectx::render::activity::render_activity;
use livectx::session::model::{
    ActionBatch, MAX_ID_LEN, Session, SessionId, SessionLimits, SourceKind,
};
use livectx::sources::naming::{MAX_ACTION_TEXT_CHARS, MAX_URL_CHARS, is_phrase};
use livectx::sources::{MAX_EVENTS_PER_BODY, Privacy, amplitude, posthog, segment};

const NOW: f64 = 1_796_121_600.0;
const KINDS: [&str; 8] = [
    "pageview",
    "click",
    "change",
    "submit",
    "rageclick",
    "dead_click",
    "error",
    "custom",
];

fuzz_target!(|input: &[u8]| {
    let Some((&settings, body)) = input.split_first() else {
        return;
    };
    let privacy = if settings & 1 == 1 {
        Privacy::from_list("tab,utm_source")
    } else {
        Privacy::default()
    };
    for decode in [posthog::decode, amplitude::decode, segment::decode] {
        let decoded = match decode(body, "fuzz_prod", &privacy) {
            Ok(decoded) => decoded,
            Err(error) => {
                assert!(!error.reason().is_empty());
                assert!(!error.to_string().is_empty());
                continue;
            }
        };
        let total = decoded.events.len() + decoded.refused.len();
        assert!(total <= MAX_EVENTS_PER_BODY);
        for refusal in &decoded.refused {
            assert!(refusal.index < total.max(1));
            assert!(!refusal.reason.is_empty() && !refusal.detail.is_empty());
        }
        let mut actions = Vec::new();
        for event in &decoded.events {
            assert!(!event.dedupe_key.is_empty() && event.dedupe_key.len() <= MAX_ID_LEN);
            assert!(event.timestamp.is_none_or(f64::is_finite));
            if let Some(left) = &event.left_page {
                check_url(left, &privacy);
            }
            let Some(action) = &event.action else {
                continue;
            };
            assert!(KINDS.contains(&action.kind()), "kind {}", action.kind());
            for text in [action.title(), action.description()] {
                assert!(!text.trim().is_empty(), "empty text in {action:?}");
                assert!(text.chars().count() <= MAX_ACTION_TEXT_CHARS + 1, "{text}");
            }
            assert!(is_phrase(action.description()), "{}", action.description());
            check_url(action.canonical_url(), &privacy);
            check_url(action.raw_url(), &privacy);
            actions.push(action.clone());
        }
        if actions.is_empty() {
            continue;
        }
        let id = SessionId::parse("fuzz-session").expect("a valid literal id");
        let mut session = Session::new(id.clone(), NOW);
        let batch = ActionBatch {
            session_id: id,
            product_id: Some("fuzz_prod".to_string()),
            user_id: None,
            email: None,
            conversation_id: None,
            actions,
            forwarded_at: None,
            source: Some(SourceKind::PostHog),
        };
        session.append(batch, NOW, SessionLimits { max_chunks: 4 });
        let activity = render_activity(&session, NOW + 5.0, 1e9);
        assert!(!activity.is_empty());
    }
});

/// A stored URL: bounded, no fragment, and a query only of allow-listed parameters.
fn check_url(url: &str, privacy: &Privacy) {
    assert!(url.len() <= MAX_URL_CHARS, "{url}");
    assert!(!url.contains('#'), "fragment kept: {url}");
    assert!(
        !url.chars().any(char::is_control),
        "control character kept: {url:?}"
    );
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            assert!(privacy.keeps(name), "query parameter {name:?} kept: {url}");
        }
    }
}
