//! One store test suite, run against every backend: every behaviour below is a generic async
//! function, instantiated for the memory store, for the outage buffer in front of it (what the
//! app puts in front of Redis must not change any answer), and for the Redis store (on the
//! Redis at `LIVECTX_TEST_REDIS_URL`, and on the Redis Cluster at
//! `LIVECTX_TEST_REDIS_CLUSTER_URL`, each with a key prefix of its own; skipped when unset).

use std::sync::Arc;
use std::time::Duration;

use crate::helpers;
use crate::helpers::redis_env::{RedisPrefix, test_redis_cluster_url, test_redis_url};
use crate::helpers::{action, batch, session_titles};
use livectx::session::buffered::BufferedStore;
use livectx::session::memory::MemoryStore;
use livectx::session::model::{
    Gap, PersonKey, SessionId, SessionLimits, SummaryApplied, SummaryDraft, SummarySource,
};
use livectx::session::redis::RedisStore;
use livectx::session::store::{SessionStore, StoreConfig};
use livectx::telemetry::Metrics;

/// A fixed clock origin: every test passes explicit times, so both backends see the same ones.
const T0: f64 = 1_800_000_000.0;
const LONG_TTL: Duration = Duration::from_secs(24 * 3600);

/// Builds the store under test.
enum Harness {
    Memory,
    /// The outage buffer over a memory store (healthy: every write passes straight through).
    Buffered,
    Redis(RedisPrefix),
}

impl Harness {
    async fn store(&self, config: StoreConfig) -> Arc<dyn SessionStore> {
        match self {
            Self::Memory => Arc::new(MemoryStore::new(config)),
            Self::Buffered => {
                let inner = Arc::new(MemoryStore::new(config));
                let buffered = Arc::new(BufferedStore::new(inner, 100, Arc::new(Metrics::new())));
                // The replay task would only ever run for buffered writes; none happen here.
                drop(buffered.spawn_replay());
                buffered
            }
            Self::Redis(prefix) => Arc::new(RedisStore::new(
                prefix.connect().await,
                prefix.prefix.clone(),
                config,
            )),
        }
    }
}

fn config(max_sessions: usize, ttl: Duration, max_chunks: usize) -> StoreConfig {
    StoreConfig {
        max_sessions,
        session_ttl: ttl,
        limits: SessionLimits { max_chunks },
    }
}

fn sid(raw: &str) -> SessionId {
    SessionId::parse(raw).unwrap()
}

fn click(title: &str, ts: f64) -> livectx::session::Action {
    action("click", title, "https://app.acme.io/x", ts)
}

macro_rules! suite {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(super::Harness::Memory).await;
                }
            )*
        }
        mod buffered {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(super::Harness::Buffered).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(url) = super::test_redis_url(stringify!($behaviour)) else {
                        return;
                    };
                    let prefix = super::RedisPrefix::new(&url, stringify!($behaviour));
                    super::$behaviour(super::Harness::Redis(prefix)).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(url) = super::test_redis_cluster_url(stringify!($behaviour)) else {
                        return;
                    };
                    let prefix = super::RedisPrefix::new(&url, stringify!($behaviour));
                    super::$behaviour(super::Harness::Redis(prefix)).await;
                }
            )*
        }
    };
}

suite!(
    appends_keep_order_and_number_chunks,
    chunk_cap_folds_the_oldest_chunks_into_the_summary,
    the_least_recently_active_session_is_evicted_at_the_bound,
    idle_sessions_expire_after_the_ttl,
    identity_index_points_to_the_newest_session,
    eviction_cleans_only_the_index_entries_of_the_evicted_session,
    summary_claims_finish_release_and_lapse,
    a_stale_summary_is_discarded,
    connector_summaries_replace_whole_chunks_only,
    tours_are_recorded_and_create_sessions,
    gaps_mark_recent_sessions_of_the_product,
    active_sessions_are_paged_newest_first,
    many_sessions_page_in_one_order_skipping_expired_ones,
    webhook_deliveries_are_deduplicated,
    concurrent_appends_to_one_session_all_land,
);

async fn appends_keep_order_and_number_chunks(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let mut seqs = Vec::new();
    for (i, title) in ["A", "B", "C"].iter().enumerate() {
        let t = T0 + i as f64;
        let stored = store
            .append_actions(
                batch("s1", Some("maria@x.io"), None, vec![click(title, t)]),
                t,
                None,
            )
            .await
            .unwrap();
        assert_eq!(stored.outcome.created, i == 0);
        assert_eq!(stored.outcome.unsummarized_actions, i + 1);
        assert_eq!(stored.evicted, 0);
        seqs.push(stored.outcome.seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
    let other = store
        .append_actions(batch("s2", None, None, vec![click("Z", T0)]), T0, None)
        .await
        .unwrap();
    assert_eq!(other.outcome.seq, 1, "sequence numbers are per session");

    let session = store.session(&sid("s1"), T0 + 3.0).await.unwrap().unwrap();
    assert_eq!(session_titles(&session), ["A", "B", "C"]);
    let chunk_seqs: Vec<u64> = session.chunks().iter().map(|c| c.seq).collect();
    assert_eq!(chunk_seqs, [1, 2, 3]);
    assert_eq!(session.raw_actions(), 3);
    assert_eq!(session.email().as_deref(), Some("maria@x.io"));
    assert_eq!(session.product_id().as_deref(), Some("acme_prod"));
    assert_eq!(session.last_seen(), T0 + 2.0);
    assert!(store.has_product("acme_prod").await.unwrap());
    assert!(!store.has_product("other").await.unwrap());
    assert!(store.session(&sid("nope"), T0).await.unwrap().is_none());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.sessions, stats.chunks), (2, 4));
}

async fn chunk_cap_folds_the_oldest_chunks_into_the_summary(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 3)).await;
    let mut folded = Vec::new();
    for i in 0..5 {
        let t = T0 + i as f64;
        let page = action(
            "pageview",
            &format!("Page Load: P{i}"),
            &format!("https://app.acme.io/p{i}"),
            t,
        );
        let stored = store
            .append_actions(batch("s1", None, None, vec![page]), t, None)
            .await
            .unwrap();
        folded.push(stored.outcome.folded_chunks);
    }
    assert_eq!(folded, [0, 0, 0, 1, 1]);
    let session = store.session(&sid("s1"), T0 + 5.0).await.unwrap().unwrap();
    let chunk_seqs: Vec<u64> = session.chunks().iter().map(|c| c.seq).collect();
    assert_eq!(chunk_seqs, [3, 4, 5]);
    let summary = session.summary().as_ref().expect("folded into a summary");
    assert_eq!(summary.covers_through_seq, 2);
    assert_eq!(summary.covered_actions, 2);
    assert_eq!(summary.source, SummarySource::Builtin);
    assert!(summary.text.contains("P0") && summary.text.contains("P1"));
    assert_eq!(session.recent_covered().len(), 2);
    assert_eq!(store.stats().await.unwrap().chunks, 3);
}

async fn the_least_recently_active_session_is_evicted_at_the_bound(harness: Harness) {
    let store = harness.store(config(3, LONG_TTL, 50)).await;
    for (i, id) in ["s1", "s2", "s3"].iter().enumerate() {
        let t = T0 + i as f64;
        let stored = store
            .append_actions(batch(id, None, None, vec![click("A", t)]), t, None)
            .await
            .unwrap();
        assert_eq!(stored.evicted, 0);
    }
    // s1 becomes the most recently active; writing to an existing session never evicts.
    let touched = store
        .append_actions(
            batch("s1", None, None, vec![click("B", T0 + 3.0)]),
            T0 + 3.0,
            None,
        )
        .await
        .unwrap();
    assert_eq!(touched.evicted, 0);
    let newest = store
        .append_actions(
            batch("s4", None, None, vec![click("A", T0 + 4.0)]),
            T0 + 4.0,
            None,
        )
        .await
        .unwrap();
    assert_eq!(newest.evicted, 1);
    let now = T0 + 5.0;
    assert!(
        store.session(&sid("s2"), now).await.unwrap().is_none(),
        "s2 was least recent"
    );
    for id in ["s1", "s3", "s4"] {
        assert!(
            store.session(&sid(id), now).await.unwrap().is_some(),
            "{id} kept"
        );
    }
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.sessions, stats.chunks), (3, 4));
}

async fn idle_sessions_expire_after_the_ttl(harness: Harness) {
    let store = harness
        .store(config(100, Duration::from_secs(60), 50))
        .await;
    store
        .append_actions(
            batch("s1", Some("old@x.io"), None, vec![click("A", T0)]),
            T0,
            None,
        )
        .await
        .unwrap();
    store
        .append_actions(
            batch("s2", Some("new@x.io"), None, vec![click("B", T0 + 50.0)]),
            T0 + 50.0,
            None,
        )
        .await
        .unwrap();
    let later = T0 + 61.0;
    assert!(
        store
            .session(&sid("s1"), T0 + 59.0)
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.session(&sid("s1"), later).await.unwrap().is_none());
    assert!(store.session(&sid("s2"), later).await.unwrap().is_some());
    let old = PersonKey::email("old@x.io").unwrap();
    assert_eq!(store.resolve_person(&old, None, later).await.unwrap(), None);
    // An expired session is not resurrected by new activity: it starts over.
    let restarted = store
        .append_actions(
            batch("s1", None, None, vec![click("C", later)]),
            later,
            None,
        )
        .await
        .unwrap();
    assert_eq!(restarted.outcome.seq, 1);
    let session = store.session(&sid("s1"), later).await.unwrap().unwrap();
    assert_eq!(session_titles(&session), ["C"]);

    let much_later = T0 + 200.0;
    assert_eq!(store.expire_idle(much_later).await.unwrap(), 2);
    assert_eq!(store.expire_idle(much_later).await.unwrap(), 0);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.sessions, stats.chunks), (0, 0));
    let fresh = store
        .append_actions(
            batch("s2", None, None, vec![click("D", much_later)]),
            much_later,
            None,
        )
        .await
        .unwrap();
    assert!(fresh.outcome.created);
    assert_eq!(fresh.outcome.seq, 1);
}

async fn identity_index_points_to_the_newest_session(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let maria = PersonKey::email(" Maria@X.io ").unwrap();
    let user = PersonKey::user_id("usr_1").unwrap();
    let mut first = batch(
        "s1",
        Some("maria@x.io"),
        Some("usr_1"),
        vec![click("A", T0)],
    );
    first.product_id = Some("acme".into());
    store.append_actions(first, T0, None).await.unwrap();
    let mut second = batch("s2", Some("MARIA@x.io"), None, vec![click("B", T0 + 10.0)]);
    second.product_id = Some("acme".into());
    store.append_actions(second, T0 + 10.0, None).await.unwrap();
    let mut third = batch("s3", Some("maria@x.io"), None, vec![click("C", T0 + 20.0)]);
    third.product_id = Some("other".into());
    store.append_actions(third, T0 + 20.0, None).await.unwrap();

    let now = T0 + 25.0;
    let resolve = |key: PersonKey, product: Option<&'static str>| {
        let store = Arc::clone(&store);
        async move {
            store
                .resolve_person(&key, product, now)
                .await
                .unwrap()
                .map(|id| id.to_string())
        }
    };
    assert_eq!(resolve(maria.clone(), None).await.as_deref(), Some("s3"));
    assert_eq!(
        resolve(maria.clone(), Some("acme")).await.as_deref(),
        Some("s2")
    );
    assert_eq!(
        resolve(maria.clone(), Some("other")).await.as_deref(),
        Some("s3")
    );
    assert_eq!(resolve(maria.clone(), Some("third")).await, None);
    assert_eq!(resolve(user.clone(), None).await.as_deref(), Some("s1"));
    assert_eq!(
        resolve(user.clone(), Some("acme")).await.as_deref(),
        Some("s1")
    );

    // A later batch without the identity does not move the index...
    store
        .append_actions(
            batch("s1", None, None, vec![click("D", T0 + 30.0)]),
            T0 + 30.0,
            None,
        )
        .await
        .unwrap();
    let now = T0 + 31.0;
    let global = store.resolve_person(&maria, None, now).await.unwrap();
    assert_eq!(global.as_ref().map(SessionId::as_str), Some("s3"));
    // ...but the last session written *with* it wins, even an older one.
    store
        .append_actions(
            batch("s1", Some("maria@x.io"), None, vec![click("E", T0 + 32.0)]),
            T0 + 32.0,
            None,
        )
        .await
        .unwrap();
    let now = T0 + 33.0;
    let global = store.resolve_person(&maria, None, now).await.unwrap();
    assert_eq!(global.as_ref().map(SessionId::as_str), Some("s1"));
    let scoped = store
        .resolve_person(&maria, Some("acme"), now)
        .await
        .unwrap();
    assert_eq!(scoped.as_ref().map(SessionId::as_str), Some("s1"));
    // Summary work does not move the index.
    let job = store
        .claim_summary(&sid("s2"), 1, now, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("claimable");
    store.release_summary(&job).await.unwrap();
    let global = store.resolve_person(&maria, None, now).await.unwrap();
    assert_eq!(global.as_ref().map(SessionId::as_str), Some("s1"));
}

async fn eviction_cleans_only_the_index_entries_of_the_evicted_session(harness: Harness) {
    let store = harness.store(config(3, LONG_TTL, 50)).await;
    let a = PersonKey::email("a@x.io").unwrap();
    let b = PersonKey::email("b@x.io").unwrap();
    let c = PersonKey::email("c@x.io").unwrap();
    let writes = [
        ("s1", "a@x.io"), // evicted first; "a" moves on to s2 below
        ("s2", "a@x.io"),
        ("s3", "c@x.io"),
        ("s4", "b@x.io"), // evicts s1
        ("s5", "b@x.io"), // evicts s2: "a" now has no session
    ];
    for (i, (id, email)) in writes.iter().enumerate() {
        let t = T0 + i as f64;
        store
            .append_actions(batch(id, Some(email), None, vec![click("A", t)]), t, None)
            .await
            .unwrap();
        if *id == "s4" {
            let now = T0 + 4.0;
            let found = store.resolve_person(&a, None, now).await.unwrap();
            assert_eq!(
                found.as_ref().map(SessionId::as_str),
                Some("s2"),
                "s1's eviction left s2's entry"
            );
        }
    }
    let now = T0 + 10.0;
    for product in [None, Some("acme_prod")] {
        assert_eq!(store.resolve_person(&a, product, now).await.unwrap(), None);
        let found = store.resolve_person(&b, product, now).await.unwrap();
        assert_eq!(found.as_ref().map(SessionId::as_str), Some("s5"));
        let found = store.resolve_person(&c, product, now).await.unwrap();
        assert_eq!(found.as_ref().map(SessionId::as_str), Some("s3"));
    }
    // A session re-created under an evicted id without identity is not found by the old email.
    store
        .append_actions(
            batch("s2", None, None, vec![click("B", T0 + 11.0)]),
            T0 + 11.0,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.resolve_person(&a, None, T0 + 12.0).await.unwrap(),
        None
    );
}

async fn summary_claims_finish_release_and_lapse(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let lease = Duration::from_secs(30);
    for (i, title) in ["A", "B", "C"].iter().enumerate() {
        let t = T0 + i as f64;
        store
            .append_actions(batch("s1", None, None, vec![click(title, t)]), t, None)
            .await
            .unwrap();
    }
    let id = sid("s1");
    let now = T0 + 3.0;
    assert!(
        store
            .claim_summary(&id, 4, now, lease)
            .await
            .unwrap()
            .is_none(),
        "below threshold"
    );
    assert!(
        store
            .claim_summary(&sid("nope"), 1, now, lease)
            .await
            .unwrap()
            .is_none()
    );
    let job = store
        .claim_summary(&id, 3, now, lease)
        .await
        .unwrap()
        .expect("claim");
    assert_eq!(job.through_seq, 3);
    assert_eq!(job.chunks.len(), 3);
    assert!(
        store
            .claim_summary(&id, 1, now + 1.0, lease)
            .await
            .unwrap()
            .is_none(),
        "one job in flight per session"
    );
    // Activity while the summarizer works stays raw.
    store
        .append_actions(
            batch("s1", None, None, vec![click("D", now + 2.0)]),
            now + 2.0,
            None,
        )
        .await
        .unwrap();
    let draft = SummaryDraft {
        text: "clicked A, B and C".into(),
        source: SummarySource::Llm,
        digest: None,
    };
    let applied = store
        .finish_summary(&job, draft.clone(), now + 3.0)
        .await
        .unwrap();
    assert_eq!(applied, SummaryApplied::Applied { removed_chunks: 3 });
    let session = store.session(&id, now + 3.0).await.unwrap().unwrap();
    assert_eq!(session_titles(&session), ["D"]);
    let summary = session.summary().as_ref().unwrap();
    assert_eq!(summary.covers_through_seq, 3);
    assert_eq!(summary.source, SummarySource::Llm);
    assert_eq!(summary.text, "clicked A, B and C");
    assert_eq!(session.raw_actions(), 1);
    assert_eq!(store.stats().await.unwrap().chunks, 1);

    // A released claim can be taken again at once.
    let second = store
        .claim_summary(&id, 1, now + 4.0, lease)
        .await
        .unwrap()
        .expect("claim");
    store.release_summary(&second).await.unwrap();
    let third = store
        .claim_summary(&id, 1, now + 4.0, lease)
        .await
        .unwrap()
        .expect("reclaim");
    // A claim lapses after its lease; the lapsed job can no longer store its result.
    let after_lease = now + 4.0 + lease.as_secs_f64() + 1.0;
    let fourth = store
        .claim_summary(&id, 1, after_lease, lease)
        .await
        .unwrap()
        .expect("lapsed claim is free");
    assert_ne!(third.claim_token, fourth.claim_token);
    assert_eq!(
        store
            .finish_summary(&third, draft.clone(), after_lease)
            .await
            .unwrap(),
        SummaryApplied::Gone
    );
    assert!(matches!(
        store
            .finish_summary(&fourth, draft.clone(), after_lease)
            .await
            .unwrap(),
        SummaryApplied::Applied { removed_chunks: 1 }
    ));
    // A job for a session that is gone.
    let mut orphan = fourth.clone();
    orphan.session_id = sid("never");
    assert_eq!(
        store
            .finish_summary(&orphan, draft, after_lease)
            .await
            .unwrap(),
        SummaryApplied::Gone
    );
    store.release_summary(&orphan).await.unwrap();
}

async fn a_stale_summary_is_discarded(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let id = sid("s1");
    store
        .append_actions(batch("s1", None, None, vec![click("X", T0)]), T0, None)
        .await
        .unwrap();
    let job = store
        .claim_summary(&id, 1, T0, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store
        .append_actions(
            batch("s1", None, None, vec![click("Y", T0 + 1.0)]),
            T0 + 1.0,
            None,
        )
        .await
        .unwrap();
    store
        .apply_connector_summary(&id, None, "connector saw both", 2, T0 + 2.0, None)
        .await
        .unwrap();
    let draft = SummaryDraft {
        text: "only X".into(),
        source: SummarySource::Llm,
        digest: None,
    };
    assert_eq!(
        store.finish_summary(&job, draft, T0 + 3.0).await.unwrap(),
        SummaryApplied::Stale
    );
    let session = store.session(&id, T0 + 3.0).await.unwrap().unwrap();
    let summary = session.summary().as_ref().unwrap();
    assert!(
        summary.text.contains("connector saw both"),
        "{}",
        summary.text
    );
    assert_eq!(summary.covers_through_seq, 2);
    assert!(session.chunks().is_empty());
    // The stale job's claim is cleared: a new one can start.
    store
        .append_actions(
            batch("s1", None, None, vec![click("Z", T0 + 4.0)]),
            T0 + 4.0,
            None,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_summary(&id, 1, T0 + 4.0, Duration::from_secs(30))
            .await
            .unwrap()
            .is_some()
    );
}

async fn connector_summaries_replace_whole_chunks_only(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let id = sid("s1");
    for (i, pair) in [["A", "B"], ["C", "D"]].iter().enumerate() {
        let t = T0 + i as f64;
        store
            .append_actions(
                batch("s1", None, None, vec![click(pair[0], t), click(pair[1], t)]),
                t,
                None,
            )
            .await
            .unwrap();
    }
    store
        .apply_connector_summary(&id, Some("acme_prod"), "A and B", 3, T0 + 5.0, None)
        .await
        .unwrap();
    let session = store.session(&id, T0 + 5.0).await.unwrap().unwrap();
    assert_eq!(
        session_titles(&session),
        ["C", "D"],
        "the straddling chunk stays raw"
    );
    let summary = session.summary().as_ref().unwrap();
    assert_eq!(summary.source, SummarySource::Connector);
    assert_eq!(summary.covers_through_seq, 1);
    assert_eq!(summary.text, "A and B");
    assert_eq!(session.last_seen(), T0 + 5.0);
    // A second one keeps the first in front of it.
    store
        .apply_connector_summary(&id, None, "C and D", 2, T0 + 6.0, None)
        .await
        .unwrap();
    let session = store.session(&id, T0 + 6.0).await.unwrap().unwrap();
    assert!(session.chunks().is_empty());
    assert_eq!(session.summary().as_ref().unwrap().text, "A and B\nC and D");
    // On an unknown session it creates one, with its product.
    let fresh = sid("s9");
    store
        .apply_connector_summary(&fresh, Some("beta"), "did things", 5, T0 + 7.0, None)
        .await
        .unwrap();
    let session = store.session(&fresh, T0 + 7.0).await.unwrap().unwrap();
    assert_eq!(session.product_id().as_deref(), Some("beta"));
    assert!(store.has_product("beta").await.unwrap());
    assert_eq!(store.stats().await.unwrap().sessions, 2);
}

async fn tours_are_recorded_and_create_sessions(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let id = sid("s1");
    store
        .append_actions(batch("s1", None, None, vec![click("A", T0)]), T0, None)
        .await
        .unwrap();
    store
        .record_tour(
            &id,
            Some("acme_prod"),
            "flow_7",
            Some("stuck on billing"),
            T0 + 5.0,
            None,
        )
        .await
        .unwrap();
    let session = store.session(&id, T0 + 5.0).await.unwrap().unwrap();
    let tour = session.tour().as_ref().unwrap();
    assert_eq!(tour.flow_id, "flow_7");
    assert_eq!(tour.reason.as_deref(), Some("stuck on billing"));
    assert_eq!(tour.at, T0 + 5.0);
    assert_eq!(session.last_seen(), T0 + 5.0);
    assert_eq!(session_titles(&session), ["A"]);

    let other = sid("s2");
    store
        .record_tour(&other, Some("gamma"), "flow_1", None, T0 + 6.0, None)
        .await
        .unwrap();
    let session = store.session(&other, T0 + 6.0).await.unwrap().unwrap();
    assert_eq!(session.tour().as_ref().unwrap().flow_id, "flow_1");
    assert_eq!(session.product_id().as_deref(), Some("gamma"));
    assert!(store.has_product("gamma").await.unwrap());
}

async fn gaps_mark_recent_sessions_of_the_product(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let mut writes = vec![
        (batch("same", None, None, vec![click("A", T0)]), T0),
        (batch("old", None, None, vec![click("A", T0)]), T0 - 7200.0),
    ];
    let mut other = batch("other", None, None, vec![click("A", T0)]);
    other.product_id = Some("other_prod".into());
    writes.push((other, T0));
    let mut unknown = batch("unknown", None, None, vec![click("A", T0)]);
    unknown.product_id = None;
    writes.push((unknown, T0));
    for (b, t) in writes {
        store.append_actions(b, t, None).await.unwrap();
    }
    let gap = Gap {
        from: T0 + 10.0,
        to: T0 + 20.0,
    };
    assert_eq!(
        store.record_gap("acme_prod", gap, T0 + 30.0).await.unwrap(),
        2
    );
    assert_eq!(
        store.record_gap("acme_prod", gap, T0 + 31.0).await.unwrap(),
        2,
        "marking again is harmless"
    );
    for (id, expected) in [("same", 1), ("unknown", 1), ("old", 0), ("other", 0)] {
        let session = store.session(&sid(id), T0 + 32.0).await.unwrap().unwrap();
        assert_eq!(session.gaps().len(), expected, "{id}");
        if expected == 1 {
            assert_eq!(session.gaps()[0], gap);
        }
    }
}

async fn active_sessions_are_paged_newest_first(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    // In clock order, as a server writes them (the memory store's recency list relies on it).
    let writes = [
        ("e", T0 - 100.0),
        ("a", T0 + 1.0),
        ("c", T0 + 2.0),
        ("b", T0 + 2.0),
        ("d", T0 + 3.0),
    ];
    for (id, t) in writes {
        store
            .append_actions(
                batch(id, Some(&format!("{id}@x.io")), None, vec![click("A", t)]),
                t,
                None,
            )
            .await
            .unwrap();
    }
    let now = T0 + 4.0;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .active_sessions(T0, cursor.as_deref(), 2, now)
            .await
            .unwrap();
        pages += 1;
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions.iter().map(|s| s.session_id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging must end");
    }
    assert_eq!(seen, ["d", "b", "c", "a"], "newest first, ties by id");
    let first = store.active_sessions(T0, None, 10, now).await.unwrap();
    assert_eq!(first.next_cursor, None);
    let d = &first.sessions[0];
    assert_eq!(d.email.as_deref(), Some("d@x.io"));
    assert_eq!(d.product_id.as_deref(), Some("acme_prod"));
    assert_eq!(d.current_url.as_deref(), Some("https://app.acme.io/x"));
    assert_eq!(d.last_seen, T0 + 3.0);
    let everything = store
        .active_sessions(T0 - 1000.0, None, 10, now)
        .await
        .unwrap();
    assert_eq!(everything.sessions.len(), 5);
}

async fn many_sessions_page_in_one_order_skipping_expired_ones(harness: Harness) {
    let ttl = Duration::from_secs(1000);
    let store = harness.store(config(1000, ttl, 50)).await;
    // 20 sessions idle past the TTL, then 130 in groups of equal times (ties of 1 to 7).
    let mut writes: Vec<(String, f64)> = (0..20)
        .map(|i| (format!("old-{i:02}"), T0 - 2000.0 + f64::from(i)))
        .collect();
    let mut t = T0;
    let mut i = 0;
    for group in (0..).map(|g| g % 7 + 1) {
        for _ in 0..group {
            if i == 130 {
                break;
            }
            writes.push((format!("live-{:03}", (i * 37) % 130), t));
            i += 1;
        }
        if i == 130 {
            break;
        }
        t += 1.0;
    }
    for (id, t) in &writes {
        store
            .append_actions(batch(id, None, None, vec![click("A", *t)]), *t, None)
            .await
            .unwrap();
    }
    let now = t + 1.0;
    let mut expected: Vec<(String, f64)> = writes
        .iter()
        .filter(|(id, _)| id.starts_with("live"))
        .cloned()
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let expected: Vec<String> = expected.into_iter().map(|(id, _)| id).collect();
    for page_size in [5, 13, 200] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let page = store
                .active_sessions(T0 - 5000.0, cursor.as_deref(), page_size, now)
                .await
                .unwrap();
            assert!(page.sessions.len() <= page_size);
            seen.extend(page.sessions.iter().map(|s| s.session_id.clone()));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, expected, "pages of {page_size}");
    }
}

async fn webhook_deliveries_are_deduplicated(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 50)).await;
    let window = Duration::from_secs(600);
    let now = livectx::clock::now();
    let body = [7u8; 32];
    assert!(store.first_delivery(body, now, window).await.unwrap());
    assert!(!store.first_delivery(body, now + 1.0, window).await.unwrap());
    assert!(store.first_delivery([8u8; 32], now, window).await.unwrap());
    store.forget_delivery(body).await.unwrap();
    assert!(store.first_delivery(body, now + 2.0, window).await.unwrap());
    assert!(!store.first_delivery(body, now + 3.0, window).await.unwrap());

    // After the window, the same body counts as new.
    let short = Duration::from_millis(300);
    let quick = [9u8; 32];
    assert!(
        store
            .first_delivery(quick, livectx::clock::now(), short)
            .await
            .unwrap()
    );
    assert!(
        !store
            .first_delivery(quick, livectx::clock::now(), short)
            .await
            .unwrap()
    );
    let store_ref = Arc::clone(&store);
    helpers::eventually(
        Duration::from_secs(5),
        "the dedupe window to pass",
        move || {
            let store = Arc::clone(&store_ref);
            async move {
                store
                    .first_delivery(quick, livectx::clock::now(), short)
                    .await
                    .unwrap()
            }
        },
    )
    .await;
}

async fn concurrent_appends_to_one_session_all_land(harness: Harness) {
    let store = harness.store(config(100, LONG_TTL, 1000)).await;
    let writers = 8;
    let per_writer = 10;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_writer {
                let title = format!("w{w}-{i}");
                let stored = store
                    .append_actions(batch("hot", None, None, vec![click(&title, T0)]), T0, None)
                    .await
                    .unwrap();
                seqs.push(stored.outcome.seq);
            }
            seqs
        }));
    }
    let mut all_seqs = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's order holds"
        );
        all_seqs.extend(seqs);
    }
    all_seqs.sort_unstable();
    let expected: Vec<u64> = (1..=(writers * per_writer) as u64).collect();
    assert_eq!(
        all_seqs, expected,
        "every append got its own sequence number"
    );
    let session = store.session(&sid("hot"), T0).await.unwrap().unwrap();
    assert_eq!(session.chunks().len(), writers * per_writer);
    let mut got = session_titles(&session);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), writers * per_writer);
    assert_eq!(
        store.stats().await.unwrap().chunks,
        (writers * per_writer) as u64
    );
}
