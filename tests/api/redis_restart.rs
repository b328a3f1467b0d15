//! A Redis restart during ingestion: the replica keeps consuming, buffers in memory what it
//! cannot write, answers `/retrieval` with `200 {"records": []}` meanwhile, and replays the
//! buffer in order when Redis is back, so nothing within the buffer's bound is lost.
//!
//! Each test runs its own `redis-server` child on a free port (the shared test Redis is never
//! restarted), and livectx is built from its configuration (`LIVECTX_REDIS_URL` path), with
//! leases on. Skipped unless `LIVECTX_TEST_REDIS_URL` is set (the suite's switch for Redis).

use std::time::Duration;

use crate::helpers::broadcast::BroadcastConnector;
use crate::helpers::redis_env::{RedisServer, test_redis_url};
use crate::helpers::{TestApp, actions_payload, eventually, metric, test_config};
use livectx::app::store_config;
use livectx::session::SessionId;
use livectx::session::redis::{RedisStore, connect};
use livectx::session::store::SessionStore;
use reqwest::StatusCode;

const PREFIX: &str = "livectx-restart:";

fn titles(phase: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{phase} {i}")).collect()
}

fn push(connector: &BroadcastConnector, titles: &[String]) {
    for title in titles {
        connector.push_json(&actions_payload(
            Some("session-r"),
            Some("ri@acme.test"),
            &[title.as_str()],
            livectx::clock::now(),
        ));
    }
}

async fn stored(server: &RedisServer) -> Vec<String> {
    let Ok(connection) = connect(&server.url()).await else {
        return Vec::new();
    };
    let store = RedisStore::new(connection, PREFIX, store_config(&test_config()));
    let id = SessionId::parse("session-r").unwrap();
    match store.session(&id, livectx::clock::now()).await {
        Ok(Some(session)) => session
            .raw_action_iter()
            .map(|a| a.title().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

async fn wait_stored(server: &RedisServer, count: usize, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        stored(server).await.len() >= count
    })
    .await;
}

/// Kill Redis mid-ingestion and bring it back, asserting on the way; returns the events sent
/// before and during the outage, and the server.
async fn restart_during_ingestion(
    persistent: bool,
) -> Option<(Vec<String>, Vec<String>, RedisServer)> {
    test_redis_url("redis_restart")?;
    let mut server = RedisServer::start(persistent);
    let connector = BroadcastConnector::start().await;
    let mut config = test_config();
    config.redis_url = Some(server.url());
    config.redis_prefix = PREFIX.to_string();
    config.lease_ttl = Duration::from_secs(1);
    config.stream_urls = vec![connector.url("acme_prod")];
    config.summary_threshold = 100_000;
    config.max_chunks = 1000;
    let app = TestApp::spawn(config).await;
    assert_eq!(app.state.store.backend(), "redis");
    eventually(
        Duration::from_secs(10),
        "the replica to lead and connect",
        || async { app.state.streams[0].is_leading() && app.state.streams[0].is_connected() },
    )
    .await;

    let before = titles("before", 20);
    push(&connector, &before);
    wait_stored(&server, before.len(), "events before the outage").await;

    server.kill();
    let during = titles("during", 30);
    push(&connector, &during);
    eventually(
        Duration::from_secs(20),
        "the outage writes to be buffered",
        || async {
            metric(&app.metrics().await, "livectx_redis_buffered_writes") >= during.len() as f64
        },
    )
    .await;
    // Meanwhile retrieval answers empty (never a 5xx), and readiness reports the outage.
    let (status, body) = app
        .retrieve(None, "acme_prod", "session_id: session-r\nwhere am I?")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["records"], serde_json::json!([]));
    let (status, readyz) = app.get_text("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let readyz: serde_json::Value = serde_json::from_str(&readyz).unwrap();
    assert_eq!(readyz["store"]["ok"], false);
    assert_eq!(readyz["store"]["buffered_writes"], during.len());

    server.restart();
    let after = titles("after", 20);
    push(&connector, &after);
    let mut survivors = if persistent {
        before.clone()
    } else {
        Vec::new()
    };
    survivors.extend(during.iter().cloned());
    survivors.extend(after.iter().cloned());
    wait_stored(&server, survivors.len(), "every buffered and later event").await;
    assert_eq!(stored(&server).await, survivors, "in order, each once");

    let metrics = app.metrics().await;
    assert!(metric(&metrics, "livectx_redis_replayed_total") >= during.len() as f64);
    assert_eq!(metric(&metrics, "livectx_redis_buffer_dropped_total"), 0.0);
    assert_eq!(metric(&metrics, "livectx_redis_buffered_writes"), 0.0);
    eventually(Duration::from_secs(10), "readiness to recover", || async {
        app.get_text("/readyz").await.0 == StatusCode::OK
    })
    .await;
    // Still the leader: the lease survived the restart (or was taken back).
    assert!(app.state.streams[0].is_leading());
    let (status, body) = app
        .retrieve(None, "acme_prod", "session_id: session-r\nwhere am I?")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body["records"].as_array().unwrap().is_empty(), "{body}");
    app.stop().await;
    Some((before, during, server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_redis_restart_loses_no_event() {
    let Some((before, _, server)) = restart_during_ingestion(true).await else {
        return;
    };
    // Everything, including what Redis had before the crash.
    assert!(stored(&server).await.starts_with(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_gets_every_event_since_the_outage() {
    let Some((_, during, server)) = restart_during_ingestion(false).await else {
        return;
    };
    // Without persistence Redis itself forgot what it had; livectx lost nothing it held.
    assert!(stored(&server).await.starts_with(&during));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_redis_is_down_buffers_and_catches_up() {
    if test_redis_url("redis_down_at_start").is_none() {
        return;
    }
    let mut server = RedisServer::start(false);
    server.kill();
    let connector = BroadcastConnector::start().await;
    let mut config = test_config();
    config.redis_url = Some(server.url());
    config.redis_prefix = PREFIX.to_string();
    config.lease_ttl = Duration::from_millis(600);
    config.stream_urls = vec![connector.url("acme_prod")];
    config.webhook_secret = Some("hook-secret".into());
    config.summary_threshold = 100_000;
    let app = TestApp::spawn(config).await;

    // Webhook pushes are accepted and buffered; nobody can lead the stream yet.
    let body = actions_payload(
        Some("session-r"),
        None,
        &["pushed early"],
        livectx::clock::now(),
    );
    let bytes = serde_json::to_vec(&body).unwrap();
    let response = app
        .http
        .post(app.url(livectx::ingest::webhook::PATH))
        .header(
            "X-Connector-Signature",
            livectx::ingest::webhook::sign("hook-secret", &bytes),
        )
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        metric(&app.metrics().await, "livectx_redis_buffered_writes"),
        1.0
    );
    assert!(!app.state.streams[0].is_leading());
    let (status, _) = app.get_text("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    server.restart();
    wait_stored(&server, 1, "the buffered webhook write").await;
    eventually(
        Duration::from_secs(10),
        "the replica to lead once Redis is up",
        || async { app.state.streams[0].is_leading() && app.state.streams[0].is_connected() },
    )
    .await;
    let streamed = titles("streamed", 3);
    push(&connector, &streamed);
    let mut expected = vec!["pushed early".to_string()];
    expected.extend(streamed);
    wait_stored(&server, expected.len(), "the streamed events").await;
    assert_eq!(stored(&server).await, expected);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_replayed_after_an_outage_is_summarized() {
    if test_redis_url("redis_replay_summarized").is_none() {
        return;
    }
    let mut server = RedisServer::start(false);
    server.kill();
    let mut config = test_config();
    config.redis_url = Some(server.url());
    config.redis_prefix = PREFIX.to_string();
    config.webhook_secret = Some("hook-secret".into());
    config.summary_threshold = 3;
    let app = TestApp::spawn(config).await;
    // Four actions pushed while Redis is down: buffered, so ingestion hears "nothing to
    // summarise yet"; only the replay learns the session is due.
    let body = actions_payload(
        Some("session-r"),
        None,
        &["one", "two", "three", "four"],
        livectx::clock::now(),
    );
    let bytes = serde_json::to_vec(&body).unwrap();
    let response = app
        .http
        .post(app.url(livectx::ingest::webhook::PATH))
        .header(
            "X-Connector-Signature",
            livectx::ingest::webhook::sign("hook-secret", &bytes),
        )
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        metric(&app.metrics().await, "livectx_redis_buffered_writes"),
        1.0
    );

    server.restart();
    // Nothing else arrives: only the replay's result can have told the summarizer.
    let id = SessionId::parse("session-r").unwrap();
    eventually(
        Duration::from_secs(20),
        "the replayed session to be summarized",
        || async {
            app.state
                .store
                .session(&id, livectx::clock::now())
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.summary().is_some() && s.raw_actions() == 0)
        },
    )
    .await;
    assert_eq!(
        metric(&app.metrics().await, "livectx_redis_replayed_total"),
        1.0
    );
    app.stop().await;
}
