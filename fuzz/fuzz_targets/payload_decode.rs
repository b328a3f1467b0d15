//! Autoplay payloads: arbitrary bytes through the lenient decoder, then through everything a
//! decoded payload reaches in the session model (append, cap folding, the built-in and LLM
//! summary paths, the connector summary, tours) and out again as Dify records.
//!
//! Invariants: never panics; a refused payload has a reason; records are what Dify needs
//! (non-empty content, a finite score in 0..=1, serialisable JSON); kept texts are bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livectx::render::records::session_records;
use livectx::sources::autoplay::payload::{Payload, decode};
use livectx::render::activity::render_activity;
use livectx::session::model::{Session, SessionId, SessionLimits};
use livectx::session::summarizer::{DEFAULT_PROMPT, builtin, llm::build_prompt};

const NOW: f64 = 1_785_333_700.0;

fuzz_target!(|input: &[u8]| {
    let payload = match decode(input) {
        Ok(payload) => payload,
        Err(error) => {
            assert!(!error.reason().is_empty());
            return;
        }
    };
    let id = SessionId::parse(payload.session_id().unwrap_or(""))
        .unwrap_or_else(|_| SessionId::parse("fuzz-session").expect("a valid literal id"));
    let mut session = Session::new(id, NOW);
    let limits = SessionLimits { max_chunks: 2 };
    match payload {
        Payload::Actions(actions) => {
            for action in &actions.actions {
                assert!(action.title().chars().count() <= 501, "title not cut");
                assert!(
                    action.description().chars().count() <= 2001,
                    "description not cut"
                );
            }
            let Ok(batch) = actions.into_batch(Some("fuzz_prod")) else {
                return;
            };
            let _ = batch.person_keys();
            // Three appends with a cap of two chunks: the oldest is folded by the built-in
            // summarizer.
            for _ in 0..3 {
                session.append(batch.clone(), NOW, limits);
            }
            if let Some(job) = session.claim_summary(1, NOW, NOW + 60.0, 7) {
                let prompt = build_prompt(DEFAULT_PROMPT, &job);
                assert!(!prompt.is_empty());
                let draft = builtin::summarize(job.previous.as_deref(), &job.chunks);
                session.finish_summary(&job, draft, NOW);
            }
            session.append(batch, NOW + 1.0, limits);
        }
        Payload::Summary(summary) => {
            session.apply_connector_summary(&summary.summary, summary.replaces, NOW);
        }
        Payload::TourTrigger(tour) => {
            session.record_tour(&tour.flow_id, tour.reason.as_deref(), NOW, NOW);
        }
        Payload::Unknown { .. } => {}
    }

    let activity = render_activity(&session, NOW + 5.0, 120.0);
    assert!(!activity.is_empty());
    let records = session_records(&session, "where are my notifications?", NOW + 5.0, 120.0);
    assert!(!records.is_empty(), "the activity record is always there");
    for record in &records {
        assert!(!record.content.trim().is_empty(), "empty record content");
        assert!(
            record.score.is_finite() && (0.0..=1.0).contains(&record.score),
            "score {} out of range",
            record.score
        );
    }
    serde_json::to_string(&records).expect("records serialise");
});
