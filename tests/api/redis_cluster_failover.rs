//! A Redis Cluster master dies during ingestion: livectx keeps answering, the master's replica
//! takes over, and no acknowledged event is lost beyond Redis's asynchronous replication
//! window, which the test measures (how many acknowledged events are missing afterwards, and
//! how long before the kill they were acknowledged) and prints.
//!
//! The test starts its own 3 + 3 cluster on free ports with `.ci/redis-cluster.sh` (so the
//! shared test cluster stays healthy for other tests) and stops it at the end. Skipped unless
//! `LIVECTX_TEST_REDIS_CLUSTER_URL` is set (the suite's switch for cluster tests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::redis_env::{PrivateCluster, test_redis_cluster_url};
use crate::helpers::{TestApp, actions_payload, eventually, metric, test_config};
use livectx::app::store_config;
use livectx::session::SessionId;
use livectx::session::redis::{RedisStore, connect};
use livectx::session::store::SessionStore;
use reqwest::StatusCode;

const PREFIX: &str = "livectx-failover:";
const SESSIONS: usize = 24;
const SECRET: &str = "failover-hook-secret";
/// How long before the kill an acknowledged event may be lost: Redis replicates to replicas
/// asynchronously, so the writes a master acknowledged in the last moments before dying can
/// be missing from the replica that replaces it. On loopback the replication lag is well
/// under a millisecond; this bound leaves room for a loaded test machine.
const REPLICATION_WINDOW_BOUND: Duration = Duration::from_secs(1);

struct Acked {
    session: usize,
    title: String,
    at: Instant,
}

async fn deliver(app: &TestApp, session: usize, title: &str) -> StatusCode {
    let body = actions_payload(
        Some(&format!("failover-{session}")),
        None,
        &[title],
        livectx::clock::now(),
    );
    let bytes = serde_json::to_vec(&body).unwrap();
    match app
        .http
        .post(app.url(livectx::ingest::webhook::PATH))
        .header(
            "X-Connector-Signature",
            livectx::ingest::webhook::sign(SECRET, &bytes),
        )
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(bytes)
        .send()
        .await
    {
        Ok(response) => StatusCode::from_u16(response.status().as_u16()).unwrap(),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_ingestion_loses_nothing_beyond_the_replication_window() {
    if test_redis_cluster_url("redis_cluster_failover").is_none() {
        return;
    }
    let cluster = PrivateCluster::start(1000);
    let mut config = test_config();
    config.redis_url = Some(cluster.url());
    config.redis_prefix = PREFIX.to_string();
    config.webhook_secret = Some(SECRET.into());
    config.summary_threshold = 100_000;
    config.max_chunks = 1000;
    let app = Arc::new(TestApp::spawn(config).await);
    let (status, readyz) = app.get_text("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{readyz}");
    let readyz: serde_json::Value = serde_json::from_str(&readyz).unwrap();
    assert_eq!(readyz["store"]["health"]["cluster"]["state"], "ok");

    // Ingest continuously (one delivery at a time, like a connector), recording what was
    // acknowledged and when; meanwhile ask /retrieval over and over.
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (app, acked, refused, stop) = (
            Arc::clone(&app),
            Arc::clone(&acked),
            Arc::clone(&refused),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let session = n % SESSIONS;
                let title = format!("event {n}");
                if deliver(&app, session, &title).await == StatusCode::OK {
                    acked.lock().unwrap().push(Acked {
                        session,
                        title,
                        at: Instant::now(),
                    });
                } else {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let answers = {
        let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut statuses = BTreeMap::<u16, usize>::new();
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = app
                    .retrieve(None, "acme_prod", "session_id: failover-3\nwhat now?")
                    .await;
                *statuses.entry(status.as_u16()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };

    eventually(
        Duration::from_secs(20),
        "some events before the kill",
        || async { acked.lock().unwrap().len() >= 150 },
    )
    .await;

    // Kill the master of the first seed's slots; remember its replica.
    let victim = cluster.base;
    let nodes = cluster.nodes(cluster.base + 1);
    let victim_id = nodes.iter().find(|n| n.port == victim).unwrap().id.clone();
    let replica = nodes
        .iter()
        .find(|n| n.master_id == victim_id)
        .expect("the master has a replica")
        .port;
    cluster.kill(victim);
    let killed_at = Instant::now();

    // The replica takes over: it is a master with slots, and the cluster is whole again.
    let survivor = cluster.base + 1;
    eventually(
        Duration::from_secs(30),
        "the replica to take over",
        || async {
            cluster
                .nodes(survivor)
                .iter()
                .any(|n| n.port == replica && n.master && !n.slots.is_empty())
        },
    )
    .await;
    let took_over = killed_at.elapsed();
    eventually(
        Duration::from_secs(30),
        "readiness to report the cluster whole",
        || async {
            let (status, body) = app.get_text("/readyz").await;
            status == StatusCode::OK && body.contains("\"state\":\"ok\"")
        },
    )
    .await;
    // Keep ingesting a little on the healed cluster.
    let acked_at_heal = acked.lock().unwrap().len();
    eventually(
        Duration::from_secs(20),
        "events after the failover",
        || async { acked.lock().unwrap().len() >= acked_at_heal + 100 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    ingest.await.unwrap();
    let statuses = answers.await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the outage buffer to drain",
        || async { metric(&app.metrics().await, "livectx_redis_buffered_writes") == 0.0 },
    )
    .await;

    // livectx kept answering: /retrieval never failed (empty answers are fine).
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "{statuses:?}"
    );
    // Compare what was acknowledged with what the cluster holds.
    let reader = RedisStore::new(
        connect(&cluster.url()).await.unwrap(),
        PREFIX,
        store_config(&test_config()),
    );
    let mut stored = BTreeSet::new();
    for session in 0..SESSIONS {
        let id = SessionId::parse(&format!("failover-{session}")).unwrap();
        if let Some(found) = reader.session(&id, livectx::clock::now()).await.unwrap() {
            stored.extend(
                found
                    .raw_action_iter()
                    .map(|a| (session, a.title().to_string())),
            );
        }
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let lost: Vec<&Acked> = acked
        .iter()
        .filter(|a| !stored.contains(&(a.session, a.title.clone())))
        .collect();
    let lost_window = lost
        .iter()
        .map(|a| killed_at.saturating_duration_since(a.at))
        .max()
        .unwrap_or_default();
    eprintln!(
        "failover: {} events acknowledged ({} refused), replica took over after {took_over:?}, \
         {} acknowledged events lost, acknowledged at most {lost_window:?} before the kill; \
         /retrieval answers {statuses:?}",
        acked.len(),
        refused.load(Ordering::SeqCst),
        lost.len()
    );
    for event in &lost {
        assert!(
            event.at <= killed_at && killed_at - event.at <= REPLICATION_WINDOW_BOUND,
            "{} was acknowledged {:?} before the kill and lost",
            event.title,
            killed_at.saturating_duration_since(event.at)
        );
    }
    assert!(
        acked.len() > acked_at_heal,
        "ingestion went on after the failover"
    );
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared"),
    }
}
