//! Two replicas on one Redis: each keeps a local read cache (the session as last read, checked
//! against its revision on every read), and a write by one replica is visible in the very next
//! `/retrieval` of the other — no waiting, no retry.
//!
//! Runs on the Redis at `LIVECTX_TEST_REDIS_URL` (skipped without it).

use std::sync::Arc;

use crate::helpers::redis_env::{RedisPrefix, test_redis_url};
use crate::helpers::{TestApp, action, batch, test_config};
use livectx::Overrides;
use livectx::app::store_config;
use livectx::session::model::SessionId;
use livectx::session::redis::RedisStore;
use livectx::session::store::SessionStore;
use serde_json::Value;

/// The `content` of every record `/retrieval` answered, joined.
fn contents(body: &Value) -> String {
    body["records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .filter_map(|r| r["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

async fn replica(prefix: &RedisPrefix) -> TestApp {
    let config = test_config();
    let store = Arc::new(RedisStore::new(
        prefix.connect().await,
        prefix.prefix.clone(),
        store_config(&config),
    ));
    TestApp::spawn_with(
        config,
        Overrides {
            store: Some(store),
            ..Overrides::default()
        },
    )
    .await
}

#[tokio::test]
async fn another_replicas_write_is_visible_in_the_next_read() {
    let Some(url) = test_redis_url("another_replicas_write_is_visible_in_the_next_read") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "replica_reads");
    let (a, b) = (replica(&prefix).await, replica(&prefix).await);
    let query = "session_id: ps_replica\nwhat did I click?";
    let t0 = livectx::clock::now() - 60.0;
    a.seed(batch(
        "ps_replica",
        None,
        None,
        vec![action("click", "Click Step 0", "https://app/x", t0)],
    ))
    .await;

    for step in 1..=12 {
        // Both replicas have read (and cached) the session as it is now.
        for app in [&a, &b] {
            let (status, body) = app.retrieve(None, "acme_prod", query).await;
            assert_eq!(status, 200);
            let text = contents(&body);
            assert!(text.contains(&format!("Step {}", step - 1)), "{text}");
            assert!(!text.contains(&format!("Step {step}\"")), "{text}");
        }
        // One of them writes; the other answers from Redis' current state at once.
        let (writer, reader) = if step % 2 == 0 { (&a, &b) } else { (&b, &a) };
        writer
            .seed(batch(
                "ps_replica",
                None,
                None,
                vec![action(
                    "click",
                    &format!("Click Step {step}"),
                    "https://app/x",
                    t0 + step as f64,
                )],
            ))
            .await;
        let (status, body) = reader.retrieve(None, "acme_prod", query).await;
        assert_eq!(status, 200);
        let text = contents(&body);
        assert!(
            text.contains(&format!("Click Step {step}\"")),
            "step {step}: the other replica's write is missing from the next read:\n{text}"
        );
    }

    // Gone on one replica (expired there) is gone on the other at once.
    let far = livectx::clock::now() + 30.0 * 24.0 * 3600.0;
    assert_eq!(b.state.store.expire_idle(far).await.unwrap(), 1);
    let (status, body) = a.retrieve(None, "acme_prod", query).await;
    assert_eq!(status, 200);
    assert_eq!(body["records"], serde_json::json!([]), "{body}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_unchanged_session_is_not_read_again() {
    let Some(url) = test_redis_url("an_unchanged_session_is_not_read_again") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "replica_reads_same");
    let config = test_config();
    let store = RedisStore::new(
        prefix.connect().await,
        prefix.prefix.clone(),
        store_config(&config),
    );
    let now = livectx::clock::now();
    store
        .append_actions(
            batch(
                "ps_same",
                None,
                None,
                vec![action("click", "Click A", "https://app/x", now)],
            ),
            now,
            None,
        )
        .await
        .unwrap();
    let id = SessionId::parse("ps_same").unwrap();
    let first = store.session(&id, now).await.unwrap().unwrap();
    let second = store.session(&id, now).await.unwrap().unwrap();
    // The same snapshot while nothing changed (so prepared answers are reused) ...
    assert!(Arc::ptr_eq(&first, &second));
    store
        .append_actions(
            batch(
                "ps_same",
                None,
                None,
                vec![action("click", "Click B", "https://app/x", now + 1.0)],
            ),
            now + 1.0,
            None,
        )
        .await
        .unwrap();
    // ... and a new one after a write.
    let third = store.session(&id, now + 1.0).await.unwrap().unwrap();
    assert!(!Arc::ptr_eq(&second, &third));
    assert_eq!(third.chunks().len(), 2);
    // Expiry is still judged on every read.
    let late = now + store_config(&config).ttl_secs() + 10.0;
    assert!(store.session(&id, late).await.unwrap().is_none());
}
