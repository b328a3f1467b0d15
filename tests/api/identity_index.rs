//! The Redis identity index under interleaved and crashed writes.
//!
//! An identified write takes two steps in two slots: point the index entry at the session,
//! then commit the session. Property: whatever the interleaving of several writers' steps, and
//! wherever a writer crashes between them, a lookup finds either nobody or the session of the
//! latest index step, and only once that session really carries the identity; and when the
//! latest index step's write committed, the lookup finds its session.
//!
//! Runs on the Redis at `LIVECTX_TEST_REDIS_URL` and on the cluster at
//! `LIVECTX_TEST_REDIS_CLUSTER_URL` (each skipped when unset), a key prefix per case.

use std::time::Duration;

use crate::helpers::redis_env::{RedisPrefix, test_redis_cluster_url, test_redis_url};
use crate::helpers::{action, batch};
use livectx::session::model::{PersonKey, SessionLimits};
use livectx::session::redis::{PreparedWrite, RedisStore};
use livectx::session::store::{SessionStore, StoreConfig};
use proptest::prelude::*;

const T0: f64 = 1_800_000_000.0;
const SESSIONS: [&str; 3] = ["s1", "s2", "s3"];
const EMAIL: &str = "pat@x.io";
const WRITERS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// Writer `w` reads a session and prepares an append (with or without the email).
    Begin {
        w: usize,
        session: usize,
        identified: bool,
    },
    /// Writer `w` runs its index step.
    Index { w: usize },
    /// Writer `w` commits (only after its index step, as the store does).
    Commit { w: usize },
    /// Writer `w` crashes: its remaining steps never run.
    Crash { w: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..WRITERS, 0..SESSIONS.len(), any::<bool>()).prop_map(|(w, session, identified)| {
            Step::Begin {
                w,
                session,
                identified,
            }
        }),
        (0..WRITERS).prop_map(|w| Step::Index { w }),
        (0..WRITERS).prop_map(|w| Step::Commit { w }),
        (0..WRITERS).prop_map(|w| Step::Crash { w }),
    ]
}

struct Pending {
    write: PreparedWrite,
    session: usize,
    identified: bool,
    indexed: bool,
    id: usize,
}

/// What the schedule did, independent of how the store implements it.
#[derive(Default)]
struct Model {
    /// Sessions a committed identified write made carry the email.
    carries: [bool; SESSIONS.len()],
    /// The latest index step: (session, write id).
    last_index: Option<(usize, usize)>,
    committed: Vec<bool>,
}

async fn run(url: String, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let prefix = RedisPrefix::new(&url, "identity_index");
    let store = RedisStore::new(
        prefix.connect().await,
        prefix.prefix.clone(),
        StoreConfig {
            max_sessions: 1000,
            session_ttl: Duration::from_secs(3600),
            limits: SessionLimits { max_chunks: 50 },
        },
    );
    let email = PersonKey::email(EMAIL).unwrap();
    let mut writers: Vec<Option<Pending>> = (0..WRITERS).map(|_| None).collect();
    let mut model = Model::default();
    for (n, step) in steps.into_iter().enumerate() {
        let now = T0 + n as f64;
        match step {
            Step::Begin {
                w,
                session,
                identified,
            } => {
                let batch = batch(
                    SESSIONS[session],
                    identified.then_some(EMAIL),
                    None,
                    vec![action(
                        "click",
                        &format!("step {n}"),
                        "https://app.acme.io/x",
                        now,
                    )],
                );
                let write = store.prepare_append(batch, now).await.unwrap();
                model.committed.push(false);
                writers[w] = Some(Pending {
                    write,
                    session,
                    identified,
                    indexed: false,
                    id: model.committed.len() - 1,
                });
            }
            Step::Index { w } => {
                if let Some(pending) = writers[w].as_mut().filter(|p| !p.indexed) {
                    store.point_index(&pending.write).await.unwrap();
                    pending.indexed = true;
                    if pending.identified {
                        model.last_index = Some((pending.session, pending.id));
                    }
                }
            }
            Step::Commit { w } => {
                if writers[w].as_ref().is_some_and(|p| p.indexed) {
                    let pending = writers[w].take().unwrap();
                    // `false`: another writer committed this session since it was read; the
                    // real store starts over, here the attempt just ends (like a crash).
                    if store.commit_prepared(&pending.write).await.unwrap() {
                        model.committed[pending.id] = true;
                        if pending.identified {
                            model.carries[pending.session] = true;
                        }
                    }
                }
            }
            Step::Crash { w } => writers[w] = None,
        }
        let found = store
            .resolve_person(&email, None, now)
            .await
            .unwrap()
            .map(|id| id.to_string());
        let scoped = store
            .resolve_person(&email, Some("acme_prod"), now)
            .await
            .unwrap()
            .map(|id| id.to_string());
        prop_assert_eq!(&found, &scoped, "global and product-scoped entries agree");
        match (&found, model.last_index) {
            (None, None) => {}
            (Some(id), None) => prop_assert!(false, "found {id} though no write indexed the email"),
            (found, Some((session, write))) => {
                if let Some(id) = found {
                    prop_assert_eq!(
                        id.as_str(),
                        SESSIONS[session],
                        "only the latest index step's session"
                    );
                    prop_assert!(
                        model.carries[session],
                        "{} does not carry the email yet",
                        id
                    );
                }
                if model.committed[write] {
                    prop_assert_eq!(
                        found.as_deref(),
                        Some(SESSIONS[session]),
                        "a completed write is found"
                    );
                }
            }
        }
    }
    Ok(())
}

fn check(url: Option<String>) {
    let Some(url) = url else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    proptest!(ProptestConfig::with_cases(40), |(steps in prop::collection::vec(step(), 1..28))| {
        runtime.block_on(run(url.clone(), steps))?;
    });
}

#[test]
fn lookups_never_find_a_session_the_index_step_did_not_name_on_redis() {
    check(test_redis_url("identity_index"));
}

#[test]
fn lookups_never_find_a_session_the_index_step_did_not_name_on_a_cluster() {
    check(test_redis_cluster_url("identity_index"));
}
