//! Autoplay's live-activity answers: arbitrary bytes through the pull source's decoder, into
//! batches, merged twice into a session, and out again as the activity view and Dify records.
//!
//! Invariants: never panics; kept actions and texts are bounded; every batch has a valid
//! session id and the user id asked for; merging the same answer a second time adds nothing;
//! the stale note renders; records are what Dify needs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livectx::render::records::session_records;
use livectx::ingest::pull::new_actions;
use livectx::render::activity::render_activity;
use livectx::session::model::{Session, SessionLimits};
use livectx::sources::autoplay_api::{MAX_ACTIONS, decode};

const NOW: f64 = 1_785_333_700.0;

fuzz_target!(|input: &[u8]| {
    let Ok(activity) = decode(input) else {
        return;
    };
    assert!(activity.actions.len() <= MAX_ACTIONS, "actions not capped");
    for pulled in &activity.actions {
        let action = &pulled.action;
        assert!(action.title().chars().count() <= 501, "title not cut");
        assert!(action.description().chars().count() <= 2001, "description not cut");
        assert!(action.canonical_url().chars().count() <= 2001, "URL not cut");
    }
    let limits = SessionLimits { max_chunks: 3 };
    for batch in activity.into_batches("fuzz_prod", "fuzz_user") {
        assert_eq!(batch.user_id.as_deref(), Some("fuzz_user"));
        assert_eq!(batch.product_id.as_deref(), Some("fuzz_prod"));
        let mut session = Session::new(batch.session_id.clone(), NOW);
        let first = new_actions(None, batch.actions.clone());
        assert!(first.len() <= batch.actions.len());
        let mut stored = batch.clone();
        stored.actions = first;
        session.append(stored, NOW, limits);
        // The same answer again: nothing is new.
        let again = new_actions(Some(&session), batch.actions.clone());
        assert!(again.is_empty(), "merged twice: {again:?}");
        session.mark_stale(NOW - 30.0);
        let view = render_activity(&session, NOW + 5.0, 120.0);
        assert!(view.contains("newer activity could not be fetched"));
        let records = session_records(&session, "where are my notifications?", NOW + 5.0, 120.0);
        for record in &records {
            assert!(!record.content.trim().is_empty(), "empty record content");
            assert!(record.score.is_finite() && (0.0..=1.0).contains(&record.score));
        }
        serde_json::to_string(&records).expect("records serialise");
    }
});
