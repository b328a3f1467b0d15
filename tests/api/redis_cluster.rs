//! Several replicas on one Redis: exactly one consumes the stream, a new leader takes over
//! within the lease time when the leader dies, a paused ex-leader's writes are fenced off, and
//! every replica answers `/retrieval` the same.
//!
//! Needs the Redis at `LIVECTX_TEST_REDIS_URL` (skipped when unset); keys live under a prefix
//! of their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::broadcast::BroadcastConnector;
use crate::helpers::redis_env::{RedisPrefix, test_redis_url};
use crate::helpers::{TestApp, action, actions_payload, batch, eventually, metric, test_config};
use async_trait::async_trait;
use livectx::Overrides;
use livectx::app::store_config;
use livectx::cluster::{Leadership, LeaseGuard, LeaseSettings, RedisLeadership};
use livectx::session::SessionId;
use livectx::session::buffered::BufferedStore;
use livectx::session::redis::RedisStore;
use livectx::session::store::{SessionStore, StoreError};
use livectx::telemetry::Metrics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const LEASE_TTL: Duration = Duration::from_secs(2);
/// Scheduling slack on top of the lease TTL for "took over within the lease time" (the test
/// machine is shared; the takeover itself happens within the TTL plus a few milliseconds).
const TAKEOVER_SLACK: Duration = Duration::from_millis(1500);

/// Redis leadership that a test can pause (renewals stop, the consumer is not told: a process
/// frozen by the OS) or crash (no lease release on the way down).
struct TestLeadership {
    inner: RedisLeadership,
    lifetime: CancellationToken,
    crashed: AtomicBool,
    guards: Mutex<Vec<LeaseGuard>>,
}

impl TestLeadership {
    fn new(
        connection: livectx::session::redis::RedisConnection,
        prefix: &str,
        name: &str,
    ) -> Arc<Self> {
        let lifetime = CancellationToken::new();
        let inner = RedisLeadership::new(
            connection,
            prefix.to_string(),
            LeaseSettings {
                ttl: LEASE_TTL,
                replica_id: name.to_string(),
            },
            lifetime.clone(),
        );
        Arc::new(Self {
            inner,
            lifetime,
            crashed: AtomicBool::new(false),
            guards: Mutex::new(Vec::new()),
        })
    }

    /// Stop renewing; the consumer keeps reading and writing with its now stale fence.
    fn pause(&self) {
        self.lifetime.cancel();
    }

    /// Die without releasing the lease.
    fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        self.lifetime.cancel();
    }

    fn last_fence(&self) -> Option<livectx::session::store::Fence> {
        self.guards.lock().unwrap().last().map(|g| g.fence.clone())
    }
}

#[async_trait]
impl Leadership for TestLeadership {
    async fn acquire(&self, stream_key: &str, shutdown: &CancellationToken) -> Option<LeaseGuard> {
        let guard = self.inner.acquire(stream_key, shutdown).await?;
        self.guards.lock().unwrap().push(guard.clone());
        Some(guard)
    }

    async fn record_progress(&self, guard: &LeaseGuard, last_event_at: f64) {
        self.inner.record_progress(guard, last_event_at).await;
    }

    async fn release(&self, guard: &LeaseGuard) {
        if !self.crashed.load(Ordering::SeqCst) {
            self.inner.release(guard).await;
        }
    }
}

struct Replica {
    app: TestApp,
    leadership: Arc<TestLeadership>,
}

impl Replica {
    fn leads(&self) -> bool {
        let status = &self.app.state.streams[0];
        status.is_leading() && status.is_connected()
    }
}

async fn spawn_replica(prefix: &RedisPrefix, stream_url: &str, name: &str) -> Replica {
    let mut config = test_config();
    config.stream_urls = vec![stream_url.to_string()];
    config.summary_threshold = 100_000;
    let metrics = Arc::new(Metrics::new());
    let connection = prefix.connect().await;
    let redis_store = RedisStore::new(
        connection.clone(),
        prefix.prefix.clone(),
        store_config(&config),
    );
    let store = Arc::new(BufferedStore::new(
        Arc::new(redis_store),
        1000,
        Arc::clone(&metrics),
    ));
    store.spawn_replay();
    let leadership = TestLeadership::new(connection, &prefix.prefix, name);
    let app = TestApp::spawn_with(
        config,
        Overrides {
            store: Some(store as Arc<dyn SessionStore>),
            leadership: Some(leadership.clone() as Arc<dyn Leadership>),
            metrics: Some(metrics),
        },
    )
    .await;
    Replica { app, leadership }
}

/// Letters for a number, so titles carry no digits (records are compared with digits masked).
fn tag(i: usize) -> String {
    i.to_string()
        .bytes()
        .map(|b| char::from(b'a' + (b - b'0')))
        .collect()
}

/// Titles of every raw action of a session, in stored order.
async fn stored_titles(store: &dyn SessionStore, id: &str) -> Vec<String> {
    let id = SessionId::parse(id).unwrap();
    match store.session(&id, livectx::clock::now()).await.unwrap() {
        Some(session) => session
            .raw_action_iter()
            .map(|a| a.title().to_string())
            .collect(),
        None => Vec::new(),
    }
}

/// Push one payload per title for `session`.
fn push_titles(connector: &BroadcastConnector, session: &str, titles: &[String]) {
    for title in titles {
        let payload = actions_payload(
            Some(session),
            Some("maria@acme.test"),
            &[title.as_str()],
            livectx::clock::now(),
        );
        connector.push_json(&payload);
    }
}

/// Wait until `session` holds exactly `expected` (in this order).
async fn wait_for_titles(store: &Arc<dyn SessionStore>, session: &str, expected: &[String]) {
    let store_ref = Arc::clone(store);
    let want = expected.to_vec();
    let id = session.to_string();
    eventually(
        Duration::from_secs(15),
        &format!("session {session} to hold its events"),
        move || {
            let store = Arc::clone(&store_ref);
            let want = want.clone();
            let id = id.clone();
            async move { stored_titles(store.as_ref(), &id).await.len() >= want.len() }
        },
    )
    .await;
    assert_eq!(
        stored_titles(store.as_ref(), session).await,
        expected,
        "session {session}: every event once, in order"
    );
}

/// The replica that leads now, waiting for one; returns its index and how long that took.
async fn wait_for_leader(replicas: &[Replica], candidates: &[usize]) -> (usize, Duration) {
    let started = Instant::now();
    let deadline = started + LEASE_TTL * 5;
    loop {
        if let Some(&i) = candidates.iter().find(|&&i| replicas[i].leads()) {
            return (i, started.elapsed());
        }
        assert!(Instant::now() < deadline, "no replica took the stream over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `/retrieval` answer with what legitimately differs between two requests masked: the time
/// it was generated, and relative times ("12 s ago").
fn comparable(answer: &Value) -> String {
    let mut answer = answer.clone();
    if let Some(records) = answer["records"].as_array_mut() {
        for record in records {
            if let Some(metadata) = record["metadata"].as_object_mut() {
                metadata.remove("generated_at");
            }
        }
    }
    let text = answer.to_string();
    let mut masked = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                masked.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            masked.push(c);
        }
    }
    masked
}

async fn assert_same_answers(replicas: &[&Replica], session: &str) {
    let query = format!("session_id: {session}\nwhat is the user doing?");
    let mut answers = Vec::new();
    for replica in replicas {
        let (status, body) = replica.app.retrieve(None, "acme_prod", &query).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let records = body["records"].as_array().cloned().unwrap_or_default();
        assert!(
            !records.is_empty(),
            "{session} is known to every replica: {body}"
        );
        answers.push(comparable(&body));
    }
    for answer in &answers[1..] {
        assert_eq!(
            answer, &answers[0],
            "replicas answer /retrieval identically"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_consumes_and_a_new_leader_takes_over_without_duplicates() {
    let Some(url) = test_redis_url("redis_cluster") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "cluster");
    let connector = BroadcastConnector::start().await;
    let stream_url = connector.url("acme_prod");
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b", "replica-c"] {
        replicas.push(spawn_replica(&prefix, &stream_url, name).await);
    }
    let reader: Arc<dyn SessionStore> = Arc::new(RedisStore::new(
        prefix.connect().await,
        prefix.prefix.clone(),
        store_config(&test_config()),
    ));

    // 1. Exactly one replica consumes.
    let (first, _) = wait_for_leader(&replicas, &[0, 1, 2]).await;
    tokio::time::sleep(LEASE_TTL).await;
    assert_eq!(connector.connections(), 1, "only the leader ever connected");
    let leaders = replicas.iter().filter(|r| r.leads()).count();
    assert_eq!(leaders, 1);
    let phase_a: Vec<String> = (0..10).map(|i| format!("Alpha {}", tag(i))).collect();
    push_titles(&connector, "session-one", &phase_a);
    wait_for_titles(&reader, "session-one", &phase_a).await;
    // The leader's progress reaches Redis with its next renewal.
    let raw = prefix.connect().await;
    let progress_pattern = format!("{}lease:*:progress", prefix.prefix);
    eventually(
        Duration::from_secs(5),
        "the leader's progress to be recorded",
        || {
            let mut raw = raw.clone();
            let pattern = progress_pattern.clone();
            async move {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                !keys.is_empty()
            }
        },
    )
    .await;

    // 2. The leader freezes (renewals stop, it keeps reading): another takes over within the
    // lease time, and the frozen one's writes are refused.
    replicas[first].leadership.pause();
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let (second, took) = wait_for_leader(&replicas, &others).await;
    assert!(
        took <= LEASE_TTL + TAKEOVER_SLACK,
        "takeover after a freeze took {took:?} (lease {LEASE_TTL:?})"
    );
    eventually(
        Duration::from_secs(5),
        "both the frozen and the new leader to be connected",
        || async { connector.open() == 2 },
    )
    .await;
    let phase_b: Vec<String> = (0..10).map(|i| format!("Bravo {}", tag(i))).collect();
    push_titles(&connector, "session-one", &phase_b);
    push_titles(&connector, "session-two", &phase_b);
    let mut expected_one = phase_a.clone();
    expected_one.extend(phase_b.iter().cloned());
    wait_for_titles(&reader, "session-one", &expected_one).await;
    wait_for_titles(&reader, "session-two", &phase_b).await;
    // The frozen ex-leader did try every one of those writes, and each was fenced off.
    let frozen = &replicas[first].app;
    eventually(
        Duration::from_secs(10),
        "the frozen leader to have tried its writes",
        || async {
            metric(
                &frozen.metrics().await,
                "livectx_store_errors_total{op=\"append_actions\"}",
            ) >= 20.0
        },
    )
    .await;
    assert_eq!(
        stored_titles(reader.as_ref(), "session-one").await,
        expected_one
    );
    assert_eq!(stored_titles(reader.as_ref(), "session-two").await, phase_b);
    let stale = replicas[first]
        .leadership
        .last_fence()
        .expect("the frozen leader had a fence");
    let refused = reader
        .append_actions(
            batch(
                "session-one",
                None,
                None,
                vec![action("click", "late", "https://app.acme.io/x", 1.0)],
            ),
            livectx::clock::now(),
            Some(&stale),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::Fenced)), "{refused:?}");
    // The new leader learned where its predecessor stopped and marked the gap.
    eventually(
        Duration::from_secs(10),
        "the takeover gap to be recorded",
        || async {
            let id = SessionId::parse("session-one").unwrap();
            let session = reader.session(&id, livectx::clock::now()).await.unwrap();
            session.is_some_and(|s| !s.gaps().is_empty())
        },
    )
    .await;
    let all: Vec<&Replica> = replicas.iter().collect();
    assert_same_answers(&all, "session-one").await;
    assert_same_answers(&all, "session-two").await;

    // 3. The new leader dies mid-stream without releasing its lease: the last replica takes over.
    let third = others.iter().copied().find(|&i| i != second).unwrap();
    replicas[second].leadership.crash();
    let in_gap: Vec<String> = (0..3).map(|i| format!("Gap {}", tag(i))).collect();
    push_titles(&connector, "session-gap", &in_gap);
    replicas[second].app.shutdown.cancel();
    let (now_leading, took) = wait_for_leader(&replicas, &[third]).await;
    assert_eq!(now_leading, third);
    assert!(
        took <= LEASE_TTL + TAKEOVER_SLACK,
        "takeover after a crash took {took:?} (lease {LEASE_TTL:?})"
    );
    let phase_c: Vec<String> = (0..10).map(|i| format!("Charlie {}", tag(i))).collect();
    push_titles(&connector, "session-one", &phase_c);
    push_titles(&connector, "session-three", &phase_c);
    expected_one.extend(phase_c.iter().cloned());
    wait_for_titles(&reader, "session-one", &expected_one).await;
    wait_for_titles(&reader, "session-three", &phase_c).await;
    let frozen = &replicas[first].app;
    eventually(
        Duration::from_secs(10),
        "the frozen leader to have tried the new writes too",
        || async {
            metric(
                &frozen.metrics().await,
                "livectx_store_errors_total{op=\"append_actions\"}",
            ) >= 40.0
        },
    )
    .await;
    assert_eq!(
        stored_titles(reader.as_ref(), "session-one").await,
        expected_one
    );
    // Events sent while nobody led may be missing, but never doubled.
    let gap_titles = stored_titles(reader.as_ref(), "session-gap").await;
    let mut unique = gap_titles.clone();
    unique.dedup();
    assert_eq!(gap_titles, unique);
    let survivors = [&replicas[first], &replicas[third]];
    assert_same_answers(&survivors, "session-one").await;
    assert_same_answers(&survivors, "session-three").await;

    for replica in replicas {
        replica.app.stop().await;
    }
}

#[tokio::test]
async fn fences_refuse_writes_once_another_replica_took_the_lease() {
    let Some(url) = test_redis_url("redis_fences") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "fences");
    let connection = prefix.connect().await;
    let store = RedisStore::new(
        connection.clone(),
        prefix.prefix.clone(),
        store_config(&test_config()),
    );
    let settings = |name: &str| LeaseSettings {
        ttl: Duration::from_millis(600),
        replica_id: name.to_string(),
    };
    let a_life = CancellationToken::new();
    let a = RedisLeadership::new(
        connection.clone(),
        prefix.prefix.clone(),
        settings("a"),
        a_life.clone(),
    );
    let b = RedisLeadership::new(
        connection.clone(),
        prefix.prefix.clone(),
        settings("b"),
        CancellationToken::new(),
    );
    let shutdown = CancellationToken::new();
    let stream = "http://connector.test/stream/acme_prod";
    let write = |fence: Option<livectx::session::store::Fence>, title: &'static str| {
        let store = &store;
        async move {
            store
                .append_actions(
                    batch(
                        "s1",
                        None,
                        None,
                        vec![action("click", title, "https://app.acme.io/x", 1.0)],
                    ),
                    livectx::clock::now(),
                    fence.as_ref(),
                )
                .await
        }
    };

    let guard_a = a.acquire(stream, &shutdown).await.unwrap();
    assert_eq!(guard_a.previous_holder_seen, None);
    assert!(write(Some(guard_a.fence.clone()), "a1").await.is_ok());
    a.record_progress(&guard_a, 1_800_000_123.0).await;
    // a freezes: b waits for the lease to lapse, then takes it.
    a_life.cancel();
    let started = Instant::now();
    let guard_b = b.acquire(stream, &shutdown).await.unwrap();
    assert!(started.elapsed() <= Duration::from_millis(600) + TAKEOVER_SLACK);
    assert_ne!(guard_a.fence.token, guard_b.fence.token);
    assert!(matches!(
        write(Some(guard_a.fence.clone()), "a2").await,
        Err(StoreError::Fenced)
    ));
    assert!(write(Some(guard_b.fence.clone()), "b1").await.is_ok());
    assert!(
        write(None, "unfenced").await.is_ok(),
        "webhook writes carry no fence"
    );
    // Released by b: nobody holds it, but a's fence stays refused (b took it after a).
    b.record_progress(&guard_b, 1_800_000_456.0).await;
    b.release(&guard_b).await;
    assert!(matches!(
        write(Some(guard_a.fence.clone()), "a3").await,
        Err(StoreError::Fenced)
    ));
    assert!(
        write(Some(guard_b.fence.clone()), "b2").await.is_ok(),
        "the last holder may still write"
    );
    // The next holder learns where b stopped.
    let c = RedisLeadership::new(
        connection.clone(),
        prefix.prefix.clone(),
        settings("c"),
        CancellationToken::new(),
    );
    let guard_c = c.acquire(stream, &shutdown).await.unwrap();
    assert_eq!(guard_c.previous_holder_seen, Some(1_800_000_456.0));
    assert!(matches!(
        write(Some(guard_b.fence.clone()), "b3").await,
        Err(StoreError::Fenced)
    ));
    c.release(&guard_c).await;

    let titles = stored_titles(&store, "s1").await;
    assert_eq!(titles, ["a1", "b1", "unfenced", "b2"]);
}

#[tokio::test]
async fn a_lease_lost_to_another_replica_cancels_the_guard() {
    let Some(url) = test_redis_url("redis_lease_lost") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "lease-lost");
    let connection = prefix.connect().await;
    let settings = |name: &str| LeaseSettings {
        ttl: Duration::from_millis(600),
        replica_id: name.to_string(),
    };
    let a = RedisLeadership::new(
        connection.clone(),
        prefix.prefix.clone(),
        settings("a"),
        CancellationToken::new(),
    );
    let shutdown = CancellationToken::new();
    let stream = "http://connector.test/stream/acme_prod";
    let guard = a.acquire(stream, &shutdown).await.unwrap();
    // Someone else overwrites the lease (an operator, or a split brain): a's next renewal sees it.
    let mut raw = connection.clone();
    let _: () = redis::cmd("SET")
        .arg(a.lease_key(stream))
        .arg("someone-else")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), guard.lost.cancelled())
        .await
        .expect("the guard learns the lease is lost");
    // Waiting replicas are released by shutdown.
    shutdown.cancel();
    assert!(a.acquire(stream, &shutdown).await.is_none());
}

#[tokio::test]
async fn after_redis_loses_the_lease_its_last_holder_gets_it_back() {
    let Some(url) = test_redis_url("redis_lease_data_loss") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "lease-data-loss");
    let connection = prefix.connect().await;
    // a renews every 500 ms; b polls every 300 ms, so without the rule b would usually grab
    // the vanished lease before a renews.
    let ttl = Duration::from_millis(1500);
    let leases = |name: &str, ttl: Duration| {
        RedisLeadership::new(
            connection.clone(),
            prefix.prefix.clone(),
            LeaseSettings {
                ttl,
                replica_id: name.to_string(),
            },
            CancellationToken::new(),
        )
    };
    let (a, b) = (leases("a", ttl), leases("b", Duration::from_millis(900)));
    let shutdown = CancellationToken::new();
    let stream = "http://connector.test/stream/acme_prod";
    let guard = a.acquire(stream, &shutdown).await.unwrap();
    let waiter = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { b.acquire(stream, &shutdown).await })
    };
    // b sees the lease held, then Redis loses everything about it (a restart without
    // persistence): every lease key of this prefix is gone.
    tokio::time::sleep(ttl / 2).await;
    let mut raw = connection.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}lease*", prefix.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut raw)
        .await
        .unwrap();
    // a renews within a third of the TTL and keeps the stream; b waits instead of grabbing it.
    tokio::time::sleep(ttl * 2).await;
    assert!(!guard.lost.is_cancelled(), "the last holder kept its lease");
    assert!(
        !waiter.is_finished(),
        "the waiter did not take the stream over"
    );
    let holder: Option<String> = redis::cmd("GET")
        .arg(a.lease_key(stream))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(holder.as_deref(), Some(guard.fence.token.as_str()));
    shutdown.cancel();
    assert!(waiter.await.unwrap().is_none());
}
