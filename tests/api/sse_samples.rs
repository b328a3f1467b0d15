//! The reference transcripts parse to exactly `expected_events.json`, fed whole, byte by byte,
//! and in random splits; the sample webhook bodies verify with their signatures.

use std::path::PathBuf;

use livectx::ingest::sse::{SseItem, SseParser};
use livectx::ingest::webhook::signature_valid;
use livectx::sources::autoplay::payload::{Payload, decode};
use proptest::prelude::*;
use serde_json::{Value, json};

fn sample(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/samples")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected() -> Value {
    serde_json::from_slice(&sample("expected_events.json")).unwrap()
}

const TRANSCRIPTS: [&str; 3] = [
    "01_single_session_actions_and_summary.sse",
    "02_multi_session_interleaved_with_tour_and_link.sse",
    "03_edge_cases_crlf.sse",
];

/// Parse `bytes` split at `cuts` into the shape of `expected_events.json`.
fn parse_split(bytes: &[u8], cuts: &[usize]) -> Vec<Value> {
    let mut parser = SseParser::default();
    let mut items = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|c| c.min(&bytes.len()).to_owned())
        .collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([bytes.len()]) {
        parser.feed(&bytes[start..cut.max(start)], &mut |item| items.push(item));
        start = cut.max(start);
    }
    items.into_iter().map(describe).collect()
}

fn describe(item: SseItem) -> Value {
    let SseItem::Event(event) = item else {
        panic!("unexpected {item:?}");
    };
    if event.event != "message" {
        return json!({"event": event.event, "data": event.data});
    }
    match decode(event.data.as_bytes()).expect("payload decodes") {
        Payload::Actions(p) => json!({
            "event": "message", "type": "actions", "session_id": p.session_id, "count_field": p.count,
            "n_actions": p.actions.len(), "forwarded_at": p.forwarded_at, "conversation_id": p.conversation_id,
            "email_present": p.email_present,
        }),
        Payload::Summary(p) => json!({
            "event": "message", "type": "summary", "session_id": p.session_id, "replaces": p.replaces,
            "forwarded_at": p.forwarded_at,
        }),
        Payload::TourTrigger(p) => json!({
            "event": "message", "type": "usertour_trigger", "session_id": p.session_id, "flow_id": p.flow_id,
        }),
        Payload::Unknown { kind } => json!({"event": "message", "type": kind}),
    }
}

#[test]
fn transcripts_parse_whole_to_the_expected_events() {
    let expected = expected();
    for name in TRANSCRIPTS {
        assert_eq!(
            Value::Array(parse_split(&sample(name), &[])),
            expected[name],
            "{name}"
        );
    }
}

#[test]
fn transcripts_parse_byte_by_byte_to_the_expected_events() {
    let expected = expected();
    for name in TRANSCRIPTS {
        let bytes = sample(name);
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(
            Value::Array(parse_split(&bytes, &cuts)),
            expected[name],
            "{name}"
        );
    }
}

#[test]
fn a_bom_and_lone_cr_line_endings_parse_the_same() {
    let expected = expected();
    let name = "02_multi_session_interleaved_with_tour_and_link.sse";
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(
        sample(name)
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b }),
    );
    assert_eq!(
        Value::Array(parse_split(&bytes, &[1, 2, 3, 4])),
        expected[name]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn transcripts_parse_the_same_in_random_splits(which in 0usize..3, cuts in prop::collection::vec(0usize..6000, 0..40)) {
        let name = TRANSCRIPTS[which];
        prop_assert_eq!(Value::Array(parse_split(&sample(name), &cuts)), expected()[name].clone());
    }
}

#[test]
fn sample_webhook_bodies_verify_with_their_signatures() {
    for (body, sig) in [
        ("webhook_actions_body.json", "webhook_actions_body.sig"),
        ("webhook_summary_body.json", "webhook_summary_body.sig"),
    ] {
        let body_bytes = sample(body);
        let signature = String::from_utf8(sample(sig)).unwrap();
        assert!(
            signature_valid("test-secret", &body_bytes, Some(signature.trim())),
            "{body}"
        );
        assert!(
            !signature_valid("wrong-secret", &body_bytes, Some(signature.trim())),
            "{body}"
        );
        // Re-serialised JSON is not the same bytes, so it must not verify.
        let reserialised =
            serde_json::to_vec(&serde_json::from_slice::<Value>(&body_bytes).unwrap()).unwrap();
        if reserialised != body_bytes {
            assert!(!signature_valid(
                "test-secret",
                &reserialised,
                Some(signature.trim())
            ));
        }
    }
}
