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
use livectx::session::redis::{RedisStore, RedisTarget};
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

/// With `CLIENT TRACKING` (the default on one server), an unchanged session is answered with
/// no command at all; a write by another replica is still seen in the very next read, and so
/// is this replica's own write. Without tracking, every cached read checks the revision.
#[tokio::test]
async fn tracked_reads_cost_no_command_until_the_session_changes() {
    let Some(url) = test_redis_url("tracked_reads_cost_no_command_until_the_session_changes")
    else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "replica_reads_tracked");
    let config = test_config();
    let target = RedisTarget::parse(&url).unwrap();
    let tracked = !matches!(target, RedisTarget::Cluster(_));
    let store = |tracking: bool| {
        RedisStore::new(
            target.lazy_connection(tracking).unwrap(),
            prefix.prefix.clone(),
            store_config(&config),
        )
    };
    let (reader, writer, untracked) = (store(true), store(true), store(false));
    let id = SessionId::parse("ps_tracked").unwrap();
    let now = livectx::clock::now();
    let click = |title: &str, t: f64| {
        batch(
            "ps_tracked",
            None,
            None,
            vec![action("click", title, "https://app/x", t)],
        )
    };
    writer
        .append_actions(click("Click A", now), now, None)
        .await
        .unwrap();

    let first = reader.session(&id, now).await.unwrap().unwrap();
    for _ in 0..5 {
        let again = reader.session(&id, now).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
    let stats = reader.read_stats();
    if tracked {
        assert_eq!(
            (stats.whole, stats.revision, stats.local),
            (1, 0, 5),
            "{stats:?}"
        );
        // What /readyz shows under store.health.
        let health = reader.health().await.unwrap().unwrap();
        assert_eq!(health.details["tracking"], "on", "{}", health.details);
        assert_eq!(health.details["session_reads"]["from_cache"], 5);
    } else {
        assert_eq!(
            (stats.whole, stats.revision, stats.local),
            (1, 5, 0),
            "{stats:?}"
        );
    }

    // Another replica writes: the next read sees it.
    for step in 1..=10 {
        let t = now + f64::from(step);
        writer
            .append_actions(click(&format!("Click {step}"), t), t, None)
            .await
            .unwrap();
        let read = reader.session(&id, t).await.unwrap().unwrap();
        assert_eq!(read.chunks().len(), 2 * step as usize, "step {step}");
        // Its own write, too.
        let t = t + 0.5;
        reader
            .append_actions(click(&format!("Own {step}"), t), t, None)
            .await
            .unwrap();
        let read = reader.session(&id, t).await.unwrap().unwrap();
        assert_eq!(
            read.chunks().len(),
            2 * step as usize + 1,
            "own write at step {step}"
        );
        writer.session(&id, t).await.unwrap().unwrap();
    }

    // Tracking off: every cached read asks for the revision.
    untracked.session(&id, now + 20.0).await.unwrap().unwrap();
    untracked.session(&id, now + 20.0).await.unwrap().unwrap();
    assert_eq!(untracked.read_stats().revision, 1);
    assert_eq!(untracked.read_stats().local, 0);
    if tracked {
        let health = untracked.health().await.unwrap().unwrap();
        assert_eq!(health.details["tracking"], "off", "{}", health.details);
    }
}

/// A Redis that cannot give a tracked connection (no RESP3, tracking refused, a proxy in the
/// way) costs nothing but the saving: reads check revisions, and nothing is refused.
#[tokio::test]
async fn reads_go_on_when_the_tracked_connection_cannot_open() {
    let Some(url) = test_redis_url("reads_go_on_when_the_tracked_connection_cannot_open") else {
        return;
    };
    if matches!(RedisTarget::parse(&url), Ok(RedisTarget::Cluster(_))) {
        println!("skipped on a cluster: a cluster has no tracked connection");
        return;
    }
    let prefix = RedisPrefix::new(&url, "replica_reads_no_tracking");
    let config = test_config();
    let manager = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    // Nothing listens on port 1.
    let unreachable = livectx::session::redis::tracking::TrackedConnection::new(
        redis::Client::open("redis://127.0.0.1:1/?protocol=resp3").unwrap(),
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_millis(200))),
    );
    let store = RedisStore::new(
        livectx::session::redis::RedisConnection::Single(manager, Some(Arc::new(unreachable))),
        prefix.prefix.clone(),
        store_config(&config),
    );
    let id = SessionId::parse("ps_untracked").unwrap();
    let now = livectx::clock::now();
    for step in 0..3 {
        let t = now + f64::from(step);
        store
            .append_actions(
                batch(
                    "ps_untracked",
                    None,
                    None,
                    vec![action(
                        "click",
                        &format!("Click {step}"),
                        "https://app/x",
                        t,
                    )],
                ),
                t,
                None,
            )
            .await
            .unwrap();
        let read = store.session(&id, t).await.unwrap().unwrap();
        assert_eq!(read.chunks().len(), step as usize + 1);
        store.session(&id, t).await.unwrap().unwrap();
    }
    let stats = store.read_stats();
    assert_eq!(stats.local, 0, "{stats:?}");
    assert!(stats.revision >= 3, "{stats:?}");
}

/// One store on the test Redis, with its own connection (a replica), or `None` on a cluster
/// (which has no writer lease: the tests below then have nothing to check).
async fn lone_server_store(url: &str, prefix: &RedisPrefix) -> Option<RedisStore> {
    if matches!(RedisTarget::parse(url), Ok(RedisTarget::Cluster(_))) {
        println!("skipped on a cluster: a cluster has no writer lease");
        return None;
    }
    Some(RedisStore::new(
        prefix.connect().await,
        prefix.prefix.clone(),
        store_config(&test_config()),
    ))
}

fn click(session: &str, title: &str, t: f64) -> livectx::session::model::ActionBatch {
    batch(
        session,
        None,
        None,
        vec![action("click", title, "https://app/x", t)],
    )
}

/// Wait until `store` holds the writer lease (it tries every 500 ms once it has been used).
async fn until_it_holds_the_writer_lease(store: &RedisStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !store.holds_writer_lease() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lone writer never took the writer lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A replica that alone writes takes the writer lease and answers unchanged sessions with no
/// barrier; its own writes are still seen in its next read.
#[tokio::test]
async fn a_lone_writer_reads_without_a_barrier() {
    let Some(url) = test_redis_url("a_lone_writer_reads_without_a_barrier") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "writer_lease_lone");
    let Some(store) = lone_server_store(&url, &prefix).await else {
        return;
    };
    let id = SessionId::parse("ps_lone").unwrap();
    let now = livectx::clock::now();
    store
        .append_actions(click("ps_lone", "Click 0", now), now, None)
        .await
        .unwrap();
    until_it_holds_the_writer_lease(&store).await;
    let first = store.session(&id, now).await.unwrap().unwrap();
    for _ in 0..5 {
        let again = store.session(&id, now).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
    let stats = store.read_stats();
    assert_eq!((stats.local, stats.sole), (5, 5), "{stats:?}");
    let health = store.health().await.unwrap().unwrap();
    assert_eq!(health.details["writer_lease"], "held", "{}", health.details);
    assert_eq!(health.details["session_reads"]["without_barrier"], 5);

    for step in 1..=5 {
        let t = now + f64::from(step);
        store
            .append_actions(click("ps_lone", &format!("Click {step}"), t), t, None)
            .await
            .unwrap();
        let read = store.session(&id, t).await.unwrap().unwrap();
        assert_eq!(
            read.chunks().len(),
            step as usize + 1,
            "own write at {step}"
        );
    }
    // Its own expiry too.
    let far = now + store_config(&test_config()).ttl_secs() + 60.0;
    assert_eq!(store.expire_idle(far).await.unwrap(), 1);
    assert!(store.session(&id, now + 6.0).await.unwrap().is_none());

    // Without the setting it never takes the lease.
    let prefix = RedisPrefix::new(&url, "writer_lease_off");
    let store = lone_server_store(&url, &prefix)
        .await
        .unwrap()
        .with_writer_lease(false);
    store
        .append_actions(click("ps_lone", "Click 0", now), now, None)
        .await
        .unwrap();
    tokio::time::sleep(livectx::session::redis::writer_lease::RENEW_EVERY * 2).await;
    store.session(&id, now).await.unwrap().unwrap();
    store.session(&id, now).await.unwrap().unwrap();
    assert!(!store.holds_writer_lease());
    assert_eq!(store.read_stats().sole, 0);
}

/// A second replica that writes while another holds the writer lease is let in as soon as the
/// holder hears of it (not when the lease expires), and the holder's next read sees the write.
/// Both then keep the barrier while both write.
#[tokio::test]
async fn a_second_writer_is_let_in_at_once_and_seen_by_the_holder() {
    use livectx::session::redis::writer_lease::{LEASE_TTL, RENEW_EVERY};
    let Some(url) = test_redis_url("a_second_writer_is_let_in_at_once_and_seen_by_the_holder")
    else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "writer_lease_handover");
    let (Some(holder), Some(other)) = (
        lone_server_store(&url, &prefix).await,
        lone_server_store(&url, &prefix).await,
    ) else {
        return;
    };
    let id = SessionId::parse("ps_handover").unwrap();
    let now = livectx::clock::now();
    holder
        .append_actions(click("ps_handover", "Click 0", now), now, None)
        .await
        .unwrap();
    let untouched = SessionId::parse("ps_untouched").unwrap();
    holder
        .append_actions(click("ps_untouched", "Click 0", now), now, None)
        .await
        .unwrap();
    until_it_holds_the_writer_lease(&holder).await;
    for id in [&id, &untouched] {
        holder.session(id, now).await.unwrap().unwrap();
        holder.session(id, now).await.unwrap().unwrap();
    }
    assert_eq!(holder.read_stats().sole, 2);

    let started = std::time::Instant::now();
    other
        .append_actions(click("ps_handover", "Click 1", now + 1.0), now + 1.0, None)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited < LEASE_TTL,
        "the write waited {waited:?}: the holder did not step down when asked"
    );
    assert!(!holder.holds_writer_lease());
    let read = holder.session(&id, now + 1.0).await.unwrap().unwrap();
    assert_eq!(
        read.chunks().len(),
        2,
        "the holder missed the other's write"
    );
    // Having stepped down, it waits for the barrier again, also for a session nobody wrote.
    holder
        .session(&untouched, now + 1.0)
        .await
        .unwrap()
        .unwrap();
    let stats = holder.read_stats();
    assert_eq!(stats.sole, 2, "{stats:?}");

    // Both write now: each write is seen in the other's next read, and nobody takes the lease.
    for step in 2..=12 {
        let t = now + f64::from(step);
        let (writer, reader) = if step % 2 == 0 {
            (&holder, &other)
        } else {
            (&other, &holder)
        };
        writer
            .append_actions(click("ps_handover", &format!("Click {step}"), t), t, None)
            .await
            .unwrap();
        let read = reader.session(&id, t).await.unwrap().unwrap();
        assert_eq!(read.chunks().len(), step as usize + 1, "step {step}");
    }
    tokio::time::sleep(RENEW_EVERY * 2).await;
    assert!(!holder.holds_writer_lease() && !other.holds_writer_lease());
}

/// A holder that died (here: a lease set by hand for a replica that does not exist) holds up
/// writes only until its lease expires; nothing is written meanwhile, and a write gives up
/// with a clear error when a lease outlives any holder's.
#[tokio::test]
async fn a_dead_holder_holds_writes_up_only_until_its_lease_expires() {
    let Some(url) = test_redis_url("a_dead_holder_holds_writes_up_only_until_its_lease_expires")
    else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "writer_lease_dead");
    let Some(store) = lone_server_store(&url, &prefix).await else {
        return;
    };
    let mut redis = prefix.connect().await;
    let lease_key = format!("{}writer", prefix.prefix);
    let _: () = redis::cmd("SET")
        .arg(&lease_key)
        .arg("a-replica-that-died")
        .arg("PX")
        .arg(800)
        .query_async(&mut redis)
        .await
        .unwrap();
    let store = Arc::new(store);
    let now = livectx::clock::now();
    let write = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let started = std::time::Instant::now();
            store
                .append_actions(click("ps_dead", "Click 0", now), now, None)
                .await
                .map(|_| started.elapsed())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let id = SessionId::parse("ps_dead").unwrap();
    assert!(
        store.session(&id, now).await.unwrap().is_none(),
        "a write landed while another replica held the writer lease"
    );
    let wanted: bool = redis::cmd("EXISTS")
        .arg(format!("{}writer:wanted", prefix.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        wanted,
        "the refused writer did not ask the holder to step down"
    );
    let waited = write.await.unwrap().unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(400),
        "the write went through after {waited:?}, before the lease expired"
    );
    assert_eq!(
        store
            .session(&id, now)
            .await
            .unwrap()
            .unwrap()
            .chunks()
            .len(),
        1
    );

    // A lease nobody lets go of: the write gives up, and says why.
    let _: () = redis::cmd("SET")
        .arg(&lease_key)
        .arg("a-replica-that-died")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    let error = store
        .append_actions(click("ps_dead", "Click 1", now + 1.0), now + 1.0, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            livectx::session::store::StoreError::Unavailable(
                livectx::session::store::Unavailable::WriterLeaseHeld { .. }
            )
        ),
        "{error}"
    );
    assert!(error.to_string().contains("writer lease"), "{error}");
    assert_eq!(
        store
            .session(&id, now + 1.0)
            .await
            .unwrap()
            .unwrap()
            .chunks()
            .len(),
        1
    );
}
