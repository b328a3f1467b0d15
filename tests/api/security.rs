//! Hostile callers against the real server: the per-IP rate limit, the request timeout and
//! header limits, signed identities, `--no-email-lookup`, and secrets that must not be blank.
//! (That logs carry no secrets is checked in `security_logs.rs`: it needs the process-global
//! log subscriber to itself.)

use std::time::Duration;

use crate::helpers;
use crate::helpers::{TestApp, action, batch, metric, raw_exchange, test_config};
use livectx::api::identity::IdentitySigner;
use livectx::config::ConfigError;
use livectx::{Application, ServeConfig, StartupError};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "security-test-key";
const IDENTITY_SECRET: &str = "identity-secret-for-tests-0123456789";
const MARIA: &str = "01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84";
const MARIA_EMAIL: &str = "maria.lopez@example.com";
const MARIA_USER: &str = "usr_maria";
const PRODUCT: &str = "acme_prod";

fn records(body: &Value) -> &Vec<Value> {
    body["records"].as_array().expect("records array")
}

fn mentions_maria(body: &Value) -> bool {
    records(body).iter().any(|r| {
        r["content"]
            .as_str()
            .unwrap_or("")
            .contains("Notifications bell")
    })
}

async fn app_with_maria(config: ServeConfig) -> TestApp {
    let app = TestApp::spawn(config).await;
    let now = livectx::clock::now();
    app.seed(batch(
        MARIA,
        Some(MARIA_EMAIL),
        Some(MARIA_USER),
        vec![
            action(
                "pageview",
                "Page Load: Consultants",
                "https://app.acme.io/c",
                now - 30.0,
            ),
            action(
                "click",
                "Click Notifications bell",
                "https://app.acme.io/c",
                now - 20.0,
            ),
        ],
    ))
    .await;
    app
}

/// A retrieval the way a Dify chatflow sends it: the product as knowledge id, the identity on
/// the query's first line or in a metadata condition.
async fn ask(app: &TestApp, query: &str, condition: Option<Value>) -> (StatusCode, Value) {
    ask_as(app, PRODUCT, query, condition).await
}

/// A retrieval with any knowledge id.
async fn ask_as(
    app: &TestApp,
    knowledge_id: &str,
    query: &str,
    condition: Option<Value>,
) -> (StatusCode, Value) {
    app.post_json(
        "/retrieval",
        Some(KEY),
        &json!({
            "knowledge_id": knowledge_id,
            "query": query,
            "retrieval_setting": {"top_k": 10, "score_threshold": 0.0},
            "metadata_condition": condition,
        }),
    )
    .await
}

fn session_condition(value: &str) -> Value {
    json!({"logical_operator": "and", "conditions": [
        {"name": "session_id", "comparison_operator": "is", "value": value}]})
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    metric(
        metrics,
        &format!("livectx_identity_rejected_total{{reason=\"{reason}\"}}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Rate limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_answers_429_with_json_and_counts_per_route() {
    let mut config = test_config();
    config.api_keys = vec![KEY.into()];
    // One request per 100 s after a burst of 2: the third request is refused however slow
    // the machine is.
    config.rate_limit = 0.01;
    config.rate_limit_burst = Some(2);
    let app = app_with_maria(config).await;

    for _ in 0..2 {
        let (status, _) = ask_as(&app, MARIA, "hi", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = app
        .http
        .post(app.url("/retrieval"))
        .bearer_auth(KEY)
        .json(&json!({"knowledge_id": MARIA, "query": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], 4290);
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("rate limit exceeded")
    );
    // Every route but the operator ones counts against the same client: unknown routes too.
    let (status, _) = app.get_text("/nope").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Operator routes are never limited.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get_text(path).await.0, StatusCode::OK, "{path}");
    }
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "livectx_rate_limited_total{route=\"/retrieval\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "livectx_rate_limited_total{route=\"unmatched\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "livectx_http_requests_total{route=\"/retrieval\",status=\"429\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_when_trusted() {
    async fn statuses(app: &TestApp, forwarded: &[&str]) -> Vec<u16> {
        let mut out = Vec::new();
        for client in forwarded {
            let response = app
                .http
                .get(app.url("/nope"))
                .header("x-forwarded-for", format!("198.51.100.250, {client}"))
                .send()
                .await
                .unwrap();
            out.push(response.status().as_u16());
        }
        out
    }
    let clients = ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.3"];

    let mut config = test_config();
    config.rate_limit = 0.01;
    config.rate_limit_burst = Some(1);
    let untrusted = TestApp::spawn(config.clone()).await;
    // The header is the client's claim: ignored, everyone is the TCP peer 127.0.0.1.
    assert_eq!(statuses(&untrusted, &clients).await, [404, 429, 429, 429]);
    untrusted.stop().await;

    config.trust_forwarded_for = true;
    let trusted = TestApp::spawn(config).await;
    // Behind the operator's proxy: the last address is the client; the first is ignored.
    assert_eq!(statuses(&trusted, &clients).await, [404, 429, 404, 404]);
    trusted.stop().await;
}

#[tokio::test]
async fn genuine_webhook_deliveries_are_never_rate_limited_forged_ones_are() {
    const SECRET: &str = "webhook-secret-for-rate-tests";
    let mut config = test_config();
    config.webhook_secret = Some(SECRET.into());
    config.rate_limit = 0.01;
    config.rate_limit_burst = Some(1);
    let app = TestApp::spawn(config).await;
    let deliver = |titles: &'static [&'static str], secret: &'static str| {
        let app = &app;
        async move {
            let body = helpers::actions_payload(Some(MARIA), None, titles, livectx::clock::now())
                .to_string();
            let signature = livectx::ingest::webhook::sign(secret, body.as_bytes());
            app.http
                .post(app.url("/webhooks/autoplay"))
                .header("x-connector-signature", signature)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The first forged delivery is within the rate: refused as unauthentic.
    assert_eq!(deliver(&["a"], "guess").await, StatusCode::UNAUTHORIZED);
    // Over the rate, the connector's deliveries still go through (it never retries a 4xx) ...
    for titles in [&["b"][..], &["c"], &["d"]] {
        assert_eq!(deliver(titles, SECRET).await, StatusCode::OK);
    }
    // ... and forged ones are refused as over the rate.
    assert_eq!(
        deliver(&["e"], "guess").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_rate_limited_total{route=\"/webhooks/autoplay\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "livectx_webhook_deliveries_total{outcome=\"rate_limited\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "livectx_webhook_deliveries_total{outcome=\"ok\"}"),
        3.0
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Request timeout and header limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_whose_body_never_arrives_times_out_with_json() {
    let mut config = test_config();
    config.request_timeout = Duration::from_millis(300);
    let app = TestApp::spawn(config).await;
    // Promise 100 bytes of body, send none.
    let reply = raw_exchange(
        app.addr,
        b"POST /retrieval HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("\"error_code\":5031"), "{reply}");
    assert!(reply.contains("LIVECTX_REQUEST_TIMEOUT"), "{reply}");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_request_timeouts_total{route=\"/retrieval\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused() {
    let app = TestApp::spawn(test_config()).await;
    // hyper's limit of 100 header fields: 431.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
    for i in 0..120 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = raw_exchange(app.addr, many.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:.200}");
    // hyper's ~408 KiB request-head buffer: 431, or a reset when the kernel discards the
    // answer because the client was still sending; never served.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(600 * 1024)
    );
    let reply = raw_exchange(app.addr, huge.as_bytes()).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply:.200}"
    );
    // The server is still fine.
    assert_eq!(app.get_text("/healthz").await.0, StatusCode::OK);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Signed identities
// ---------------------------------------------------------------------------------------------

fn signed_config() -> ServeConfig {
    let mut config = test_config();
    config.api_keys = vec![KEY.into()];
    config.identity_secret = Some(IDENTITY_SECRET.into());
    config
}

fn valid(id: &str) -> String {
    let expires = livectx::clock::now() as u64 + 3600;
    IdentitySigner::new(IDENTITY_SECRET).sign(id, expires)
}

#[tokio::test]
async fn unsigned_forged_and_expired_identifiers_get_nothing_and_are_counted() {
    let app = app_with_maria(signed_config()).await;
    let now = livectx::clock::now() as u64;
    let forged = IdentitySigner::new("a-guessed-secret").sign(MARIA, now + 3600);
    let expired = IdentitySigner::new(IDENTITY_SECRET).sign(MARIA, now - 10);
    let tampered = valid(MARIA).replacen("01983f2a", "01983f2b", 1);

    let cases = [
        // (the identifier, the reason it is refused)
        (MARIA.to_string(), "unsigned"),
        (MARIA_EMAIL.to_string(), "unsigned"),
        (forged, "bad_signature"),
        (tampered, "bad_signature"),
        (expired, "expired"),
    ];
    for (identifier, reason) in &cases {
        for (query, condition) in [
            (format!("session_id: {identifier}\nwhere is my bell?"), None),
            (format!("{identifier}\nwhere is my bell?"), None),
            (
                "where is my bell?".to_string(),
                Some(session_condition(identifier)),
            ),
        ] {
            let before = rejected(&app.metrics().await, reason);
            let (status, body) = ask(&app, &query, condition.clone()).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                records(&body).len(),
                0,
                "{identifier} via {query:?} / {condition:?} got records"
            );
            let after = rejected(&app.metrics().await, reason);
            assert!(
                after > before,
                "{identifier} via {query:?} / {condition:?} was not counted as {reason}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn validly_signed_identifiers_get_their_records() {
    let app = app_with_maria(signed_config()).await;
    for id in [MARIA, MARIA_EMAIL, MARIA_USER] {
        let token = valid(id);
        let (_, body) = ask(&app, &format!("{token}\nwhere is my bell?"), None).await;
        assert!(mentions_maria(&body), "query line with signed {id}: {body}");
        let (_, body) = ask(&app, "where is my bell?", None).await;
        assert!(!mentions_maria(&body));
    }
    let (_, body) = ask(&app, &format!("session_id: {}\nhi", valid(MARIA)), None).await;
    assert!(mentions_maria(&body), "{body}");
    let (_, body) = ask(&app, "hi", Some(session_condition(&valid(MARIA)))).await;
    assert!(mentions_maria(&body), "{body}");
    let email_condition = json!({"conditions": [
        {"name": "email", "comparison_operator": "is", "value": valid(MARIA_EMAIL)}]});
    let (_, body) = ask(&app, "hi", Some(email_condition)).await;
    assert!(mentions_maria(&body), "{body}");
    let metrics = app.metrics().await;
    for reason in ["unsigned", "bad_signature", "expired"] {
        assert_eq!(rejected(&metrics, reason), 0.0, "{reason}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_knowledge_id_is_operator_controlled_and_needs_no_signature() {
    let app = app_with_maria(signed_config()).await;
    let (status, body) = ask_as(&app, MARIA, "where is my bell?", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(mentions_maria(&body), "{body}");
    let (_, body) = ask_as(&app, MARIA_EMAIL, "hi", None).await;
    assert!(mentions_maria(&body), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_sign_command_mints_identifiers_the_server_accepts() {
    let app = app_with_maria(signed_config()).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_livectx"))
        .args(["sign", MARIA, "--ttl", "1h", "--secret"])
        .arg(format!("  {IDENTITY_SECRET}\n"))
        .env_remove("LIVECTX_IDENTITY_SECRET")
        .output()
        .expect("livectx sign runs");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(token.starts_with(&format!("{MARIA}.")), "{token}");
    let (_, body) = ask(&app, &format!("{token}\nwhere is my bell?"), None).await;
    assert!(mentions_maria(&body), "{body}");

    let blank = std::process::Command::new(env!("CARGO_BIN_EXE_livectx"))
        .args(["sign", MARIA, "--secret", " "])
        .env_remove("LIVECTX_IDENTITY_SECRET")
        .output()
        .expect("livectx sign runs");
    assert!(!blank.status.success());
    assert!(String::from_utf8_lossy(&blank.stderr).contains("empty"));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// --no-email-lookup
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_email_lookup_refuses_emails_but_not_other_identifiers() {
    let mut config = test_config();
    config.api_keys = vec![KEY.into()];
    config.no_email_lookup = true;
    let app = app_with_maria(config).await;

    let email_condition = json!({"conditions": [
        {"name": "email", "comparison_operator": "is", "value": MARIA_EMAIL}]});
    for (query, condition) in [
        (format!("email: {MARIA_EMAIL}\nwhere is my bell?"), None),
        (format!("{MARIA_EMAIL}\nwhere is my bell?"), None),
        ("where is my bell?".to_string(), Some(email_condition)),
    ] {
        let before = rejected(&app.metrics().await, "email_lookup_disabled");
        let (status, body) = ask(&app, &query, condition.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!mentions_maria(&body), "{query:?} / {condition:?}: {body}");
        let after = rejected(&app.metrics().await, "email_lookup_disabled");
        assert!(after > before, "{query:?} / {condition:?} not counted");
    }
    // Through the operator's knowledge id too: emails are guessable wherever they come from.
    let (_, body) = ask_as(&app, MARIA_EMAIL, "hi", None).await;
    assert!(!mentions_maria(&body), "{body}");
    // Session and user ids still work.
    let (_, body) = ask(&app, &format!("session_id: {MARIA}\nhi"), None).await;
    assert!(mentions_maria(&body), "{body}");
    let (_, body) = ask(&app, &format!("user_id: {MARIA_USER}\nhi"), None).await;
    assert!(mentions_maria(&body), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn no_email_lookup_also_refuses_signed_emails() {
    let mut config = signed_config();
    config.no_email_lookup = true;
    let app = app_with_maria(config).await;
    let (_, body) = ask(&app, &format!("{}\nhi", valid(MARIA_EMAIL)), None).await;
    assert!(!mentions_maria(&body), "{body}");
    assert!(rejected(&app.metrics().await, "email_lookup_disabled") >= 1.0);
    let (_, body) = ask(&app, &format!("{}\nhi", valid(MARIA_USER)), None).await;
    assert!(mentions_maria(&body), "{body}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn blank_secrets_refuse_to_start() {
    for (webhook, identity) in [(Some(""), None), (Some(" \n"), None), (None, Some("  "))] {
        let mut config = test_config();
        config.webhook_secret = webhook.map(str::to_string);
        config.identity_secret = identity.map(str::to_string);
        match Application::build(config).await {
            Err(StartupError::Config(error @ ConfigError::BlankSecret { .. })) => {
                let message = error.to_string();
                assert!(message.contains("set but empty"), "{message}")
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("started with a blank secret: {webhook:?} {identity:?}"),
        }
    }
}

#[tokio::test]
async fn webhook_secret_is_trimmed_like_every_other_secret() {
    let mut config = test_config();
    config.webhook_secret = Some("webhook-secret-0123456789\n".into());
    let app = TestApp::spawn(config).await;
    let body = helpers::actions_payload(Some(MARIA), None, &["Click Save"], livectx::clock::now())
        .to_string();
    let signature = livectx::ingest::webhook::sign("webhook-secret-0123456789", body.as_bytes());
    let response = app
        .http
        .post(app.url("/webhooks/autoplay"))
        .header("x-connector-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn ordinary_first_words_are_not_counted_as_unsigned_identities() {
    let app = app_with_maria(signed_config()).await;
    for query in ["help", "billing?", "where\nis my bell"] {
        let (status, body) = ask(&app, query, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(records(&body).len(), 0);
    }
    assert_eq!(rejected(&app.metrics().await, "unsigned"), 0.0);
    app.stop().await;
}
