//! The outage buffer in front of a shared store: writes made while the backend is down are
//! replayed in order, a write whose acknowledgement was lost is not stored twice, and writes
//! beyond the bound are refused and counted.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::faulty_store::FaultyStore;
use crate::helpers::{action, batch, session_titles};
use livectx::session::buffered::BufferedStore;
use livectx::session::model::{SessionId, SessionLimits};
use livectx::session::store::{SessionStore, StoreConfig, StoreError};
use livectx::telemetry::Metrics;

fn config() -> StoreConfig {
    StoreConfig {
        max_sessions: 100,
        session_ttl: Duration::from_secs(3600),
        limits: SessionLimits { max_chunks: 50 },
    }
}

fn click(title: &str, ts: f64) -> livectx::session::model::ActionBatch {
    batch("s1", None, None, vec![action("click", title, "/a", ts)])
}

async fn drained(store: &BufferedStore) {
    for _ in 0..250 {
        if store.buffered() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the buffer did not drain");
}

async fn stored_titles(store: &BufferedStore, now: f64) -> Vec<String> {
    let id = SessionId::parse("s1").unwrap();
    session_titles(&store.session(&id, now).await.unwrap().unwrap())
}

#[tokio::test]
async fn writes_during_an_outage_are_replayed_in_order() {
    let backend = FaultyStore::healthy(config());
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(BufferedStore::new(
        backend.clone(),
        100,
        Arc::clone(&metrics),
    ));
    let replay = store.spawn_replay();
    store
        .append_actions(click("A", 1.0), 1.0, None)
        .await
        .unwrap();
    backend.set_down(true);
    for (i, title) in ["B", "C", "D"].iter().enumerate() {
        let stored = store
            .append_actions(click(title, 2.0 + i as f64), 2.0, None)
            .await
            .unwrap();
        assert_eq!(stored.outcome.seq, 0, "buffered, not stored yet");
    }
    assert_eq!(store.buffered(), 3);
    assert_eq!(metrics.redis_buffered.get(), 3);
    backend.set_down(false);
    // A write arriving while the backlog drains queues behind it.
    store
        .append_actions(click("E", 9.0), 9.0, None)
        .await
        .unwrap();
    drained(&store).await;
    assert_eq!(stored_titles(&store, 9.0).await, ["A", "B", "C", "D", "E"]);
    assert_eq!(metrics.redis_buffered.get(), 0);
    assert!(metrics.redis_replayed.get() >= 3);
    replay.abort();
}

#[tokio::test]
async fn a_write_whose_acknowledgement_was_lost_is_not_stored_twice() {
    let backend = FaultyStore::healthy(config());
    let store = Arc::new(BufferedStore::new(
        backend.clone(),
        100,
        Arc::new(Metrics::new()),
    ));
    let replay = store.spawn_replay();
    backend.lose_next_ack();
    let stored = store
        .append_actions(click("A", 1.0), 5.0, None)
        .await
        .unwrap();
    assert_eq!(
        stored.outcome.seq, 0,
        "seen as an outage: buffered for replay"
    );
    drained(&store).await;
    assert_eq!(
        stored_titles(&store, 5.0).await,
        ["A"],
        "the replay found the write already there"
    );
    replay.abort();
}

#[tokio::test]
async fn writes_beyond_the_bound_are_refused_and_counted() {
    let backend = FaultyStore::healthy(config());
    backend.set_down(true);
    let metrics = Arc::new(Metrics::new());
    let store = BufferedStore::new(backend, 2, Arc::clone(&metrics));
    for title in ["A", "B"] {
        store
            .append_actions(click(title, 1.0), 1.0, None)
            .await
            .unwrap();
    }
    let refused = store.append_actions(click("C", 1.0), 1.0, None).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))));
    assert_eq!(metrics.redis_buffer_dropped.get(), 1);
    assert_eq!(store.buffered(), 2);
}

#[tokio::test]
async fn replayed_appends_are_reported_to_the_replay_listener() {
    let backend = FaultyStore::healthy(config());
    let store = Arc::new(BufferedStore::new(
        backend.clone(),
        100,
        Arc::new(Metrics::new()),
    ));
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&heard);
    assert!(store.on_replay(move |id, stored| {
        sink.lock().unwrap().push((
            id.to_string(),
            stored.outcome.seq,
            stored.outcome.unsummarized_actions,
        ));
    }));
    assert!(!store.on_replay(|_, _| {}), "one listener only");
    let replay = store.spawn_replay();
    store
        .append_actions(click("A", 1.0), 1.0, None)
        .await
        .unwrap();
    backend.set_down(true);
    for title in ["B", "C"] {
        store
            .append_actions(click(title, 2.0), 2.0, None)
            .await
            .unwrap();
    }
    backend.set_down(false);
    drained(&store).await;
    // Only the replayed writes: the live one's caller had its result already.
    assert_eq!(
        *heard.lock().unwrap(),
        [("s1".to_string(), 2, 2), ("s1".to_string(), 3, 3)]
    );
    replay.abort();
}
