//! The stream consumer against a local SSE server: what reached the store after interleaving,
//! drops mid-frame, half-open connections, configuration errors, ids and a slow store.

use std::time::Duration;

use crate::helpers::faulty_store::FaultyStore;
use crate::helpers::{
    Connection, FakeConnector, StreamEnd, TestApp, actions_payload, eventually, metric, sse_frame,
    test_config,
};
use bytes::Bytes;
use livectx::Overrides;
use livectx::session::model::{PersonKey, SessionId};
use serde_json::Value;

/// Every action title of a session, in stored order.
async fn titles(app: &TestApp, session: &str) -> Vec<String> {
    let id = SessionId::parse(session).unwrap();
    match app
        .state
        .store
        .session(&id, livectx::clock::now())
        .await
        .unwrap()
    {
        Some(s) => s.raw_action_iter().map(|a| a.title().to_string()).collect(),
        None => Vec::new(),
    }
}

fn config_for(connector: &FakeConnector) -> livectx::ServeConfig {
    let mut config = test_config();
    config.stream_urls = vec![connector.url("acme_prod")];
    config.api_token = Some("stream-token".into());
    config.summary_threshold = 10_000; // keep raw chunks for these assertions
    config
}

/// Speeds reconnects up: the server's `retry:` sets the first backoff step.
fn fast_retry() -> Bytes {
    Bytes::from_static(b"retry: 100\n\n")
}

fn frame(session: &str, titles: &[&str], ts: f64) -> Bytes {
    sse_frame(&actions_payload(Some(session), None, titles, ts))
}

#[tokio::test]
async fn interleaved_sessions_keep_their_own_order_and_nothing_is_lost() {
    let connector = FakeConnector::start(vec![]).await;
    let app = TestApp::spawn(config_for(&connector)).await;
    eventually(Duration::from_secs(5), "connected", || async {
        connector.connections() == 1
    })
    .await;
    for i in 0..30 {
        let session = ["s-a", "s-b", "s-c"][i % 3];
        connector.push(frame(
            session,
            &[&format!("{session}-{i}")],
            1000.0 + i as f64,
        ));
    }
    connector.push(sse_frame(&actions_payload(
        None,
        Some("anon@example.com"),
        &["anonymous"],
        2000.0,
    )));
    eventually(Duration::from_secs(5), "all stored", || async {
        titles(&app, "s-a").await.len()
            + titles(&app, "s-b").await.len()
            + titles(&app, "s-c").await.len()
            == 30
    })
    .await;
    for (offset, session) in ["s-a", "s-b", "s-c"].iter().enumerate() {
        let expected: Vec<String> = (0..30)
            .filter(|i| i % 3 == offset)
            .map(|i| format!("{session}-{i}"))
            .collect();
        assert_eq!(titles(&app, session).await, expected);
    }
    let m = app.metrics().await;
    assert_eq!(
        metric(
            &m,
            "livectx_payloads_refused_total{source=\"sse\",reason=\"no_session\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "livectx_payloads_total{source=\"sse\",payload_type=\"actions\"}"
        ),
        30.0
    );
    // The anonymous batch was never pooled under any key.
    assert!(
        app.state
            .store
            .resolve_person(
                &PersonKey::email("anon@example.com").unwrap(),
                None,
                livectx::clock::now()
            )
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        connector.seen()[0].authorization.as_deref(),
        Some("Bearer stream-token")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_drop_mid_frame_loses_only_the_torn_frame_and_reconnects() {
    let torn = frame("s-a", &["torn"], 1002.0);
    let script = vec![Connection::Stream {
        chunks: vec![
            fast_retry(),
            frame("s-a", &["one"], 1000.0),
            frame("s-a", &["two"], 1001.0),
            torn.slice(..torn.len() / 2),
        ],
        end: StreamEnd::Close,
    }];
    let connector = FakeConnector::start(script).await;
    let app = TestApp::spawn(config_for(&connector)).await;
    eventually(Duration::from_secs(10), "reconnected", || async {
        connector.connections() >= 2
    })
    .await;
    connector.push(frame("s-a", &["three"], 1003.0));
    eventually(Duration::from_secs(5), "three stored", || async {
        titles(&app, "s-a").await.len() == 3
    })
    .await;
    assert_eq!(titles(&app, "s-a").await, ["one", "two", "three"]);
    let m = app.metrics().await;
    assert_eq!(
        metric(
            &m,
            "livectx_stream_reconnects_total{stream=\"acme_prod\",cause=\"eof\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_reconnected_by_the_watchdog() {
    let script = vec![Connection::Stream {
        chunks: vec![fast_retry(), frame("s-a", &["before"], 1000.0)],
        end: StreamEnd::Stall,
    }];
    let connector = FakeConnector::start(script).await;
    let mut config = config_for(&connector);
    config.stream_watchdog = Duration::from_millis(400);
    let app = TestApp::spawn(config).await;
    eventually(Duration::from_secs(10), "watchdog reconnect", || async {
        connector.connections() >= 2
    })
    .await;
    connector.push(frame("s-a", &["after"], 1001.0));
    eventually(Duration::from_secs(5), "after stored", || async {
        titles(&app, "s-a").await.len() == 2
    })
    .await;
    let m = app.metrics().await;
    assert_eq!(
        metric(
            &m,
            "livectx_stream_reconnects_total{stream=\"acme_prod\",cause=\"watchdog\"}"
        ),
        1.0
    );
    // The session active before the drop is told its activity may have a gap.
    let id = SessionId::parse("s-a").unwrap();
    eventually(Duration::from_secs(5), "gap recorded", || async {
        app.state
            .store
            .session(&id, livectx::clock::now())
            .await
            .unwrap()
            .is_some_and(|s| !s.gaps().is_empty())
    })
    .await;
    let (_, body) = app.retrieve(None, "s-a", "help").await;
    assert!(
        body["records"][0]["content"]
            .as_str()
            .unwrap()
            .contains("may be missing"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_401_is_a_configuration_error_retried_slowly_with_a_clear_status() {
    let connector = FakeConnector::start(vec![Connection::Status(401)]).await;
    let mut config = config_for(&connector);
    config.config_error_retry = Duration::from_millis(800);
    let app = TestApp::spawn(config).await;
    eventually(Duration::from_secs(5), "first attempt", || async {
        connector.connections() == 1
    })
    .await;
    let (status, ready) = app.get_text("/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let error = ready["streams"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("AUTOPLAY_API_TOKEN"),
        "{error}"
    );
    eventually(Duration::from_secs(5), "slow retry", || async {
        connector.connections() == 2
    })
    .await;
    let seen = connector.seen();
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(
        gap >= Duration::from_millis(750),
        "retried after {gap:?}: not the slow path"
    );
    assert_eq!(
        metric(
            &app.metrics().await,
            "livectx_stream_config_errors_total{stream=\"acme_prod\",status=\"401\"}"
        ),
        1.0
    );
    // Second attempt is 200 (live): ready once a frame arrives.
    connector.push(frame("s-a", &["hello"], 1000.0));
    eventually(Duration::from_secs(5), "ready", || async {
        app.get_text("/readyz").await.0 == reqwest::StatusCode::OK
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn ids_are_resumed_with_last_event_id() {
    let script = vec![Connection::Stream {
        chunks: vec![
            fast_retry(),
            Bytes::from(format!(
                "id: 41\ndata: {}\n\n",
                actions_payload(Some("s-a"), None, &["a"], 1.0)
            )),
            Bytes::from(format!(
                "id: 42\ndata: {}\n\n",
                actions_payload(Some("s-a"), None, &["b"], 2.0)
            )),
        ],
        end: StreamEnd::Close,
    }];
    let connector = FakeConnector::start(script).await;
    let app = TestApp::spawn(config_for(&connector)).await;
    eventually(Duration::from_secs(10), "reconnected", || async {
        connector.connections() >= 2
    })
    .await;
    let seen = connector.seen();
    assert_eq!(seen[0].last_event_id, None);
    assert_eq!(seen[1].last_event_id.as_deref(), Some("42"));
    app.stop().await;
}

#[tokio::test]
async fn a_slow_store_drops_and_counts_instead_of_stalling_the_socket() {
    let connector = FakeConnector::start(vec![]).await;
    let mut config = config_for(&connector);
    config.ingest_queue = 4;
    // Slow writes: the socket must never wait on them.
    let store = FaultyStore::slow_appends(
        livectx::app::store_config(&config),
        Duration::from_millis(30),
    );
    let app = TestApp::spawn_with(
        config,
        Overrides {
            store: Some(store),
            ..Overrides::default()
        },
    )
    .await;
    eventually(Duration::from_secs(5), "connected", || async {
        connector.connections() == 1
    })
    .await;
    let delivered = 60;
    let mut burst = Vec::new();
    for i in 0..delivered {
        burst.extend_from_slice(&frame("s-slow", &[&format!("t{i}")], i as f64));
    }
    connector.push(burst);
    let dropped_metric = "livectx_ingest_queue_dropped_total{stream=\"acme_prod\"}";
    eventually(Duration::from_secs(10), "all accounted for", || async {
        let stored = titles(&app, "s-slow").await.len() as f64;
        stored + metric(&app.metrics().await, dropped_metric) == delivered as f64
    })
    .await;
    let dropped = metric(&app.metrics().await, dropped_metric);
    assert!(
        dropped > 0.0,
        "a 4-frame queue and 30 ms writes must overflow on a 60-frame burst"
    );
    // What was stored kept its order.
    let stored = titles(&app, "s-slow").await;
    let numbers: Vec<u32> = stored.iter().map(|t| t[1..].parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    // And the socket kept reading: a frame pushed after the burst still arrives.
    connector.push(frame("s-late", &["late"], 99.0));
    eventually(Duration::from_secs(10), "late frame", || async {
        titles(&app, "s-late").await.len() == 1
    })
    .await;
    app.stop().await;
}
