//! Logs never contain a secret or an unmasked end-user email.
//!
//! Its own test binary: the log subscriber is process-global and can be installed once, so
//! this file holds exactly one test, which installs it (at `debug`, every crate) into a buffer,
//! drives every part that logs — the stream (token in the header and in the URL), the webhook
//! (good and bad signatures), `/retrieval` (right and wrong keys, signed, forged and unsigned
//! identifiers, emails), and an LLM that answers errors quoting the key — and then searches
//! the captured text.

// The shared helpers of the `api` test binary; this binary uses a few of them.
#[path = "api/helpers/mod.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use helpers::{
    Connection, FakeConnector, TestApp, actions_payload, eventually, metric, test_config,
};
use livectx::api::identity::IdentitySigner;
use livectx::telemetry::{LogFormat, init_tracing_with_writer};
use serde_json::json;

const API_KEY: &str = "dify-key-7f3a9c1e5b";
const STREAM_TOKEN: &str = "stream-token-4d2b8e6f0a";
const URL_TOKEN: &str = "url-token-9c7e5a3b1d";
const URL_PASSWORD: &str = "url-password-2e4f6a8c0b";
const WEBHOOK_SECRET: &str = "webhook-secret-1a3c5e7b9d";
const LLM_KEY: &str = "sk-llm-key-6b8d0f2a4c";
const IDENTITY_SECRET: &str = "identity-secret-8e0a2c4b6d";
const INGEST_SECRET: &str = "ingest-secret-3b5d7f9a1c";
/// A password-reset token in a page URL's query string, as browsers send it to PostHog.
const PAGE_TOKEN: &str = "reset-token-0c2e4a6b8d";
const PRIYA_EMAIL: &str = "priya.shah@example.org";
const MARIA_EMAIL: &str = "maria.lopez@example.com";
const DEVON_EMAIL: &str = "devon.price@northwind.test";
const MARIA: &str = "01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84";
const DEVON: &str = "01983f30-0a9e-7c11-8b6d-2f4e6a8c0b13";

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An OpenAI-compatible endpoint that refuses the first call quoting the key it was sent
/// (as real providers do: "Incorrect API key provided: ..."), then answers.
async fn start_quoting_llm() -> String {
    let calls = Arc::new(Mutex::new(0usize));
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let calls = Arc::clone(&calls);
            async move {
                let n = {
                    let mut calls = calls.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if n == 1 {
                    return (
                        StatusCode::UNAUTHORIZED,
                        format!(
                            r#"{{"error": {{"message": "Incorrect API key provided: {auth}"}}}}"#
                        ),
                    )
                        .into_response();
                }
                axum::Json(json!({"choices": [{"message": {"role": "assistant",
                    "content": "The user looked at the Notifications bell."}}]}))
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

#[test]
fn logs_contain_no_secrets_and_no_unmasked_emails() {
    // SAFETY: the only test of this binary; no other thread reads the environment yet.
    unsafe { std::env::set_var("RUST_LOG", "debug") };
    let captured = Captured::default();
    let writer = captured.clone();
    init_tracing_with_writer(LogFormat::Text, false, move || writer.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(exercise_everything());
    drop(runtime);

    let logs = captured.text();
    assert!(
        logs.lines().count() > 20,
        "too little was logged to prove anything:\n{logs}"
    );
    // The paths that handle secrets and identities really ran.
    for expected in [
        "connected to the event stream",
        "refused a webhook delivery",
        "retrieval refused",
        "refused an identifier",
        "summary failed",
        "identifier resolved",
        "m***@example.com",
        "refused a delivery with a missing or wrong secret",
    ] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{logs}"
        );
    }
    for secret in [
        API_KEY,
        STREAM_TOKEN,
        URL_TOKEN,
        URL_PASSWORD,
        WEBHOOK_SECRET,
        LLM_KEY,
        IDENTITY_SECRET,
        INGEST_SECRET,
        PAGE_TOKEN,
        MARIA_EMAIL,
        DEVON_EMAIL,
        PRIYA_EMAIL,
    ] {
        if let Some(line) = logs.lines().find(|l| l.contains(secret)) {
            panic!("{secret:?} appears in the logs: {line}");
        }
    }
}

async fn exercise_everything() {
    let connector = FakeConnector::start(vec![Connection::Live]).await;
    let llm_base = start_quoting_llm().await;
    let mut config = test_config();
    config.api_keys = vec![API_KEY.into()];
    config.stream_urls = vec![
        format!("{}?token={URL_TOKEN}", connector.url("acme_prod")),
        // Unreachable, with credentials in the URL: the connect error must not quote them.
        format!("http://user:{URL_PASSWORD}@127.0.0.1:9/stream/other?token={URL_TOKEN}"),
    ];
    config.api_token = Some(STREAM_TOKEN.into());
    config.webhook_secret = Some(WEBHOOK_SECRET.into());
    config.openai_base_url = Some(llm_base);
    config.openai_api_key = Some(LLM_KEY.into());
    config.summary_threshold = 1;
    config.identity_secret = Some(IDENTITY_SECRET.into());
    config.ingest_secret = Some(INGEST_SECRET.into());
    let app = TestApp::spawn(config).await;

    // The stream delivers Maria's activity.
    let now = livectx::clock::now();
    eventually(Duration::from_secs(10), "the stream connects", || async {
        connector.connections() > 0
    })
    .await;
    connector.push_json(&actions_payload(
        Some(MARIA),
        Some(MARIA_EMAIL),
        &["Click Notifications bell"],
        now - 5.0,
    ));
    // Malformed and anonymous frames are refused, and logged.
    connector.push("data: {\"type\": \"actions\", \"email\": \"maria.lopez@example.com\"\n\n");
    connector.push_json(&actions_payload(None, Some(MARIA_EMAIL), &["x"], now));

    // The webhook: a good delivery for Devon, a bad signature, a wrong bearer.
    let body = actions_payload(Some(DEVON), Some(DEVON_EMAIL), &["Click Pay"], now).to_string();
    let signature = livectx::ingest::webhook::sign(WEBHOOK_SECRET, body.as_bytes());
    let response = app
        .http
        .post(app.url("/webhooks/autoplay"))
        .header("x-connector-signature", signature)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let forged = livectx::ingest::webhook::sign("not-the-secret", body.as_bytes());
    for (name, value) in [
        ("x-connector-signature", forged.as_str()),
        ("authorization", "Bearer webhook-secret-1a3c5e7b9"),
    ] {
        let response = app
            .http
            .post(app.url("/webhooks/autoplay"))
            .header(name, value)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }

    // PostHog: Priya's page view with a reset token in its URL, a wrong secret, and an
    // event without a session id (refused, and logged).
    let page = |session: Option<&str>| {
        let mut properties = json!({
            "$current_url": format!("https://app.acme.io/reset?token={PAGE_TOKEN}#{PAGE_TOKEN}"),
            "$pathname": "/reset", "title": "Reset password",
        });
        if let Some(session) = session {
            properties["$session_id"] = json!(session);
        }
        json!({
            "event": {"uuid": format!("0193a1f2-0000-7000-8000-{:012}", u8::from(session.is_some())),
                      "event": "$pageview", "distinct_id": PRIYA_EMAIL,
                      "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                      "properties": properties},
            "person": {"properties": {"email": PRIYA_EMAIL}},
        })
    };
    for (secret, body, expected) in [
        (
            INGEST_SECRET,
            page(Some("0193a1f2-9d01-7e2b-8c3d-4f5a6b7c8d9e")),
            200,
        ),
        (
            "ingest-secret-3b5d7f9a1",
            page(Some("0193a1f2-9d01-7e2b-8c3d-4f5a6b7c8d9e")),
            401,
        ),
        (INGEST_SECRET, page(None), 422),
    ] {
        let response = app
            .http
            .post(app.url("/ingest/acme_prod"))
            .header("x-posthog-secret", secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }

    eventually(
        Duration::from_secs(10),
        "the three sessions are stored",
        || async {
            let metrics = app.metrics().await;
            metric(&metrics, "livectx_sessions") >= 3.0
        },
    )
    .await;

    // /retrieval: a wrong key, then signed, forged and unsigned identifiers.
    let ask = |key: &'static str, query: String| {
        let app = &app;
        async move {
            app.post_json(
                "/retrieval",
                Some(key),
                &json!({"knowledge_id": "acme_prod", "query": query,
                        "retrieval_setting": {"top_k": 5, "score_threshold": 0.0}}),
            )
            .await
        }
    };
    let (status, _) = ask("dify-key-wrong", format!("{MARIA_EMAIL}\nhi")).await;
    assert_eq!(status, 403);
    let expires = now as u64 + 600;
    let signed = IdentitySigner::new(IDENTITY_SECRET).sign(MARIA_EMAIL, expires);
    let (status, body) = ask(API_KEY, format!("{signed}\nwhere is the bell?")).await;
    assert_eq!(status, 200);
    assert!(body.to_string().contains("Notifications bell"), "{body}");
    let forged = IdentitySigner::new("guess").sign(DEVON_EMAIL, expires);
    ask(API_KEY, format!("{forged}\nhi")).await;
    ask(API_KEY, format!("email: {DEVON_EMAIL}\nhi")).await;
    ask(API_KEY, format!("{DEVON_EMAIL}\nhi")).await;

    // The LLM refuses once (quoting the key), then summarises.
    eventually(
        Duration::from_secs(20),
        "an LLM summary is stored",
        || async {
            let metrics = app.metrics().await;
            metric(
                &metrics,
                "livectx_summaries_total{summarizer=\"llm\",outcome=\"ok\"}",
            ) >= 1.0
        },
    )
    .await;
    app.stop().await;
}
