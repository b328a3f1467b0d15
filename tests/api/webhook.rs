//! `POST /webhooks/autoplay` end to end: signatures, deduplication, limits, payload types.

use std::path::PathBuf;

use crate::helpers::{TestApp, actions_payload, metric, test_config};
use livectx::ingest::webhook::sign;
use livectx::session::model::SessionId;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "test-secret";

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/samples")
            .join(name),
    )
    .unwrap()
}

async fn app() -> TestApp {
    let mut config = test_config();
    config.webhook_secret = Some(SECRET.into());
    config.summary_threshold = 10_000;
    TestApp::spawn(config).await
}

async fn push(
    app: &TestApp,
    body: &[u8],
    signature: Option<&str>,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .post(app.url("/webhooks/autoplay"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-connector-signature", signature);
    }
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_sample_delivery_is_stored_and_its_retry_is_deduplicated() {
    let app = app().await;
    let body = sample("webhook_actions_body.json");
    let signature = String::from_utf8(sample("webhook_actions_body.sig")).unwrap();
    let (status, reply) = push(&app, &body, Some(signature.trim()), None).await;
    assert_eq!((status, reply), (StatusCode::OK, json!({"status": "ok"})));
    let (status, reply) = push(&app, &body, Some(signature.trim()), None).await;
    assert_eq!(
        (status, reply),
        (StatusCode::OK, json!({"status": "duplicate"}))
    );
    let id = SessionId::parse("01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84").unwrap();
    let session = app
        .state
        .store
        .session(&id, livectx::clock::now())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(session.chunks().len(), 1, "stored once");
    assert_eq!(session.raw_actions(), 4);
    let m = app.metrics().await;
    assert_eq!(
        metric(&m, "livectx_webhook_deliveries_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "livectx_webhook_deliveries_total{outcome=\"duplicate\"}"
        ),
        1.0
    );
    // The summary sample becomes the session's summary.
    let summary = sample("webhook_summary_body.json");
    let summary_sig = String::from_utf8(sample("webhook_summary_body.sig")).unwrap();
    assert_eq!(
        push(&app, &summary, Some(summary_sig.trim()), None).await.0,
        StatusCode::OK
    );
    let session = app
        .state
        .store
        .session(&id, livectx::clock::now())
        .await
        .unwrap()
        .unwrap();
    assert!(
        session
            .summary()
            .as_ref()
            .unwrap()
            .text
            .contains("add a teammate")
    );
    assert_eq!(
        session.raw_actions(),
        0,
        "its 12 replaced actions cover the 4 raw ones"
    );
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused_with_401() {
    let app = app().await;
    let body = serde_json::to_vec(&actions_payload(Some("s1"), None, &["x"], 1.0)).unwrap();
    for (signature, bearer) in [
        (None, None),
        (Some("sha256=00"), None),
        (Some(sign("another-secret", &body).as_str()), None),
        (None, Some("not-the-secret")),
    ] {
        let (status, error) = push(&app, &body, signature, bearer).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?} {bearer:?}");
        assert_eq!(error["error_code"], 4010);
    }
    assert_eq!(
        metric(
            &app.metrics().await,
            "livectx_webhook_deliveries_total{outcome=\"bad_signature\"}"
        ),
        4.0
    );
    // The connector's Authorization: Bearer <secret> form is accepted on its own.
    assert_eq!(
        push(&app, &body, None, Some(SECRET)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_json_is_400_anonymous_is_202_and_unknown_types_are_202() {
    let app = app().await;
    let garbage = b"{\"type\": ";
    let (status, error) = push(&app, garbage, Some(&sign(SECRET, garbage)), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error_code"], 4000);
    let anonymous = serde_json::to_vec(&actions_payload(None, None, &["x"], 1.0)).unwrap();
    let (status, reply) = push(&app, &anonymous, Some(&sign(SECRET, &anonymous)), None).await;
    assert_eq!(
        (status, reply),
        (
            StatusCode::ACCEPTED,
            json!({"status": "ignored", "reason": "no_session"})
        )
    );
    let unknown = br#"{"type": "brand_new", "session_id": "s1"}"#;
    let (status, reply) = push(&app, unknown, Some(&sign(SECRET, unknown)), None).await;
    assert_eq!(
        (status, reply["reason"].as_str()),
        (StatusCode::ACCEPTED, Some("unknown_type"))
    );
    let m = app.metrics().await;
    assert_eq!(
        metric(
            &m,
            "livectx_payloads_refused_total{source=\"webhook\",reason=\"no_session\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "livectx_payloads_refused_total{source=\"webhook\",reason=\"malformed\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let app = app().await;
    let body = vec![b' '; 1024 * 1024 + 10];
    let (status, error) = push(&app, &body, Some(&sign(SECRET, &body)), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["error_code"], 4130);
}

#[tokio::test]
async fn without_a_secret_the_route_is_off() {
    let app = TestApp::spawn(test_config()).await;
    let body = serde_json::to_vec(&actions_payload(Some("s1"), None, &["x"], 1.0)).unwrap();
    let (status, error) = push(&app, &body, Some(&sign("anything", &body)), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        error["error_msg"]
            .as_str()
            .unwrap()
            .contains("AUTOPLAY_WEBHOOK_SECRET")
    );
}

#[tokio::test]
async fn tour_triggers_are_recorded_for_the_activity_record() {
    let app = app().await;
    let actions = serde_json::to_vec(&actions_payload(
        Some("s-tour"),
        None,
        &["Click Upgrade"],
        livectx::clock::now(),
    ))
    .unwrap();
    assert_eq!(
        push(&app, &actions, Some(&sign(SECRET, &actions)), None)
            .await
            .0,
        StatusCode::OK
    );
    let tour = br#"{"type":"usertour_trigger","product_id":"acme_prod","flow_id":"flow_billing_retry_v2","session_id":"s-tour","reason":"payment failed"}"#;
    assert_eq!(
        push(&app, tour, Some(&sign(SECRET, tour)), None).await.0,
        StatusCode::OK
    );
    let (_, body) = app.retrieve(None, "s-tour", "help").await;
    let activity = body["records"][0]["content"].as_str().unwrap();
    assert!(
        activity.contains("flow_billing_retry_v2") && activity.contains("payment failed"),
        "{activity}"
    );
}
