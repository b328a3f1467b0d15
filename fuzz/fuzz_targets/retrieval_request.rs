//! Dify's `/retrieval` body: arbitrary bytes through the request parser, the query's identity
//! line, signed-identifier checks, and the metadata filter evaluated against real record
//! metadata.
//!
//! Invariants: never panics; a refusal is a 400 with a message; `top_k` and the threshold are
//! clamped; the question is a suffix of the query; a filter's verdict does not depend on the
//! order its conditions were listed in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livectx::web::error::codes;
use livectx::api::filter::{Condition, MetadataCondition};
use livectx::api::identity::IdentitySigner;
use livectx::render::records::session_records;
use livectx::api::retrieval::{
    MAX_TOP_K, ParsedRequest, QueryIdentity, parse_request, split_query,
};
use livectx::session::model::{Action, ActionParts, ActionBatch, Session, SessionId, SessionLimits};
use serde_json::{Map, Value, json};

const NOW: f64 = 1_785_333_700.0;

fuzz_target!(|input: &[u8]| {
    let request = match parse_request(input) {
        Ok(ParsedRequest::Probe) => return,
        Ok(ParsedRequest::Retrieve(request)) => request,
        Err(error) => {
            assert_eq!(error.status.as_u16(), 400);
            assert_eq!(error.code, codes::INVALID_REQUEST);
            assert!(!error.message.is_empty());
            return;
        }
    };
    assert!((1..=MAX_TOP_K).contains(&request.top_k));
    assert!((0.0..=1.0).contains(&request.score_threshold));

    let (identity, question) = split_query(&request.query);
    assert!(
        request.query.ends_with(question),
        "question is not a suffix of the query"
    );
    let signer = IdentitySigner::new("fuzz-secret");
    let claimed = match &identity {
        QueryIdentity::Explicit(_, value) | QueryIdentity::Candidate(value) => Some(*value),
        QueryIdentity::None => None,
    };
    if let Some(value) = claimed {
        // Nothing an attacker types verifies without the secret (the fuzzer cannot compute
        // HMACs), and what does verify is exactly what was signed.
        if signer.verify(&value, NOW).is_ok() {
            panic!("an unsigned identifier verified: {value:?}");
        }
        let signed = signer.sign(value.trim(), 1_785_400_000);
        if !value.trim().is_empty() {
            assert_eq!(signer.verify(&signed, NOW).as_deref(), Ok(value.trim()));
        }
    }

    let Some(condition) = request.metadata_condition else {
        return;
    };
    for c in &condition.conditions {
        let _ = c.values();
        let _ = c.is_equality();
    }
    let metadata = sample_metadata();
    for map in &metadata {
        let _ = condition.matches(map);
    }
    // Each operator and its negation disagree on every record: a negated filter never
    // silently matches the same records (or everything).
    for c in &condition.conditions {
        let Some(negated) = negation(&c.operator) else {
            continue;
        };
        let single = |operator: &str| MetadataCondition {
            any: false,
            conditions: vec![Condition {
                names: c.names.clone(),
                operator: operator.to_string(),
                value: c.value.clone(),
            }],
        };
        let (positive, negative) = (single(&c.operator), single(negated));
        for map in &metadata {
            if c.names.len() == 1 {
                assert_ne!(
                    positive.matches(map),
                    negative.matches(map),
                    "{} and {negated} agree on {map:?}",
                    c.operator
                );
            }
        }
    }
});

fn negation(operator: &str) -> Option<&'static str> {
    Some(match operator {
        "is" => "is not",
        "is not" => "is",
        "=" => "≠",
        "≠" | "!=" => "=",
        "in" => "not in",
        "not in" => "in",
        "contains" => "not contains",
        "not contains" => "contains",
        "empty" => "not empty",
        "not empty" => "empty",
        _ => return None,
    })
}

/// The metadata of real records (activity, summary, chunks), plus odd shapes.
fn sample_metadata() -> Vec<Map<String, Value>> {
    let id = SessionId::parse("01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84").expect("valid id");
    let mut session = Session::new(id.clone(), NOW - 100.0);
    let action = |title: &str, ts: f64| Action::new(ActionParts {
        index: None,
        kind: "click".into(),
        title: title.into(),
        description: format!("User clicked {title}").into(),
        timestamp_start: Some(ts),
        timestamp_end: Some(ts),
        raw_url: None,
        canonical_url: "https://app.acme.io/projects/:id".into(),
        identity: None,
    });
    for i in 0..3 {
        let batch = ActionBatch {
            session_id: id.clone(),
            product_id: Some("acme_prod".into()),
            user_id: Some("usr_7Qk2mN9x".into()),
            email: Some("maria.lopez@example.com".into()),
            conversation_id: None,
            actions: vec![action("Settings tab", NOW - 60.0 + f64::from(i))],
            forwarded_at: Some(NOW - 50.0),
            source: None,
        };
        session.append(batch, NOW - 50.0, SessionLimits { max_chunks: 2 });
    }
    let mut out: Vec<Map<String, Value>> = session_records(&session, "settings", NOW, 120.0)
        .into_iter()
        .map(|r| r.metadata)
        .collect();
    for odd in [
        json!({}),
        json!({"kind": null, "n": 1e300, "t": "2026-07-29T14:00:00Z", "list": [1, "a"], "o": {"a": 1}}),
        json!({"kind": "", "n": -0.0, "t": "not a time", "b": true}),
    ] {
        if let Value::Object(map) = odd {
            out.push(map);
        }
    }
    out
}
