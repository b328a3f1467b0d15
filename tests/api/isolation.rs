//! Isolation: a user never sees another user's activity.
//!
//! Random traffic of many sessions — emails shared across sessions, shared user ids,
//! anonymous batches, identifiers that are prefixes of one another, case variants — goes through
//! the real ingestion path; then every identity is resolved through every `/retrieval` route and
//! must land on its own newest session, with no other session's text in the response.

use crate::helpers;
use crate::helpers::redis_env::{RedisPrefix, test_redis_url};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use livectx::api::identity::IdentityPolicy;
use livectx::api::retrieval::{ParsedRequest, parse_request, records_for, resolve_request};
use livectx::api::{ApiContext, ApiState};
use livectx::ingest::{Channel, Ingestor, Source};
use livectx::session::memory::MemoryStore;
use livectx::session::model::SessionLimits;
use livectx::session::redis::RedisStore;
use livectx::session::store::{SessionStore, StoreConfig};
use livectx::telemetry::Metrics;
use livectx::web::limits::RequestLimits;
use proptest::prelude::*;
use serde_json::{Value, json};

/// One batch of generated traffic.
#[derive(Debug, Clone)]
struct Batch {
    /// `None`: anonymous (no session id).
    session: Option<usize>,
    email: Option<usize>,
    user: Option<usize>,
    /// Emails some actions carry themselves (they feed the index too).
    action_emails: Vec<Option<usize>>,
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        prop::option::weighted(0.92, 0usize..60),
        prop::option::of(0usize..12),
        prop::option::of(0usize..12),
        prop::collection::vec(prop::option::weighted(0.1, 0usize..12), 1..4),
    )
        .prop_map(|(session, email, user, action_emails)| Batch {
            session,
            email,
            user,
            action_emails,
        })
}

/// Distinct session ids that are prefixes of one another (`sess-1`, `sess-10`) and case
/// variants of one another (`SESS-3` next to `sess-3`): session ids are case-sensitive.
fn session_id(n: usize) -> String {
    match n % 3 {
        2 => format!("SESS-{}", n - 2),
        _ => format!("sess-{n}"),
    }
}

/// Emails: one canonical form; traffic and queries use case and whitespace variants.
fn email(n: usize) -> String {
    format!("person{n}@example.com")
}

fn email_variant(n: usize, variant: usize) -> String {
    match variant % 3 {
        0 => email(n),
        1 => format!("  Person{n}@EXAMPLE.com "),
        _ => email(n).to_uppercase(),
    }
}

/// User ids that are prefixes of one another (`u-1`, `u-11`), case-sensitive.
fn user_id(n: usize) -> String {
    format!("u-{n}")
}

/// A marker that cannot be confused with another session's (delimited).
fn marker(session: usize) -> String {
    format!("[[mark:{}]]", session_id(session))
}

fn store_config() -> StoreConfig {
    StoreConfig {
        max_sessions: 1_000_000,
        session_ttl: Duration::from_secs(86_400),
        limits: SessionLimits { max_chunks: 50 },
    }
}

fn state(store: Arc<dyn SessionStore>) -> (ApiState, Arc<Ingestor>) {
    let metrics = Arc::new(Metrics::new());
    let ingestor = Arc::new(Ingestor::new(
        store.clone(),
        metrics.clone(),
        None,
        Duration::ZERO,
    ));
    let state = Arc::new(ApiContext {
        store,
        metrics: metrics.clone(),
        api_keys: Default::default(),
        mcp: livectx::api::mcp::McpSettings::new(&Default::default(), &[], &[]),
        public_url: None,
        identity: IdentityPolicy {
            signer: None,
            email_lookup: true,
        },
        activity_window: Duration::from_secs(120),
        webhook_enabled: false,
        streams: Vec::new(),
        summarizer_engine: "none".into(),
        started_at: 0.0,
        limits: Arc::new(RequestLimits::new(None, Duration::from_secs(10), metrics)),
        diagnostics: Default::default(),
        puller: None,
    });
    (state, ingestor)
}

fn payload(b: &Batch, index: usize) -> Value {
    let sid = b.session.map(session_id);
    let mark = b
        .session
        .map_or_else(|| "[[mark:anonymous]]".to_string(), marker);
    let actions: Vec<Value> = b
        .action_emails
        .iter()
        .enumerate()
        .map(|(i, action_email)| {
            json!({
                "index": i, "type": "click", "title": format!("Click {mark} #{index}.{i}"),
                "description": format!("clicked {mark}"), "timestamp_start": 1000.0 + index as f64,
                "canonical_url": format!("https://app/{mark}"), "session_id": sid,
                "email": action_email.map(email).or_else(|| b.email.map(email)),
            })
        })
        .collect();
    json!({
        "type": "actions", "product_id": "acme", "session_id": sid,
        "email": b.email.map(|e| email_variant(e, index)), "user_id": b.user.map(user_id),
        "actions": actions, "count": actions.len(),
    })
}

async fn retrieval(state: &ApiState, body: Value) -> (Option<String>, String) {
    let body = serde_json::to_vec(&body).unwrap();
    let ParsedRequest::Retrieve(request) = parse_request(&body).unwrap() else {
        panic!("not a probe")
    };
    let now = livectx::clock::now();
    let resolved = resolve_request(state, &request, now).await.unwrap();
    let Some(session) = resolved.session else {
        return (None, String::new());
    };
    let records = records_for(
        state,
        &session,
        resolved.question,
        resolved.filter.as_ref(),
        0.0,
        50,
        now,
    );
    let text = records
        .iter()
        .map(|r| format!("{} {}", r.content, Value::Object(r.metadata.clone())))
        .collect();
    (Some(session.id().to_string()), text)
}

/// Every marker in `text` belongs to `own`.
fn only_own_markers(text: &str, own: &str) -> Result<(), String> {
    for (i, _) in text.match_indices("[[mark:") {
        let rest = &text[i + 7..];
        let end = rest.find("]]").ok_or("unterminated marker")?;
        if &rest[..end] != own {
            return Err(format!("found {} in a response for {own}", &rest[..end]));
        }
    }
    Ok(())
}

/// Load `batches` through the real ingestion path into `store`, then check every identity
/// through every `/retrieval` route against a reference model.
async fn check_isolation(
    store: Arc<dyn SessionStore>,
    batches: &[Batch],
) -> Result<(), TestCaseError> {
    let (state, ingestor) = state(store);
    // The reference model: the session last written for each person key.
    let mut newest_by_email: HashMap<usize, usize> = HashMap::new();
    let mut newest_by_user: HashMap<usize, usize> = HashMap::new();
    let mut sessions: HashSet<usize> = HashSet::new();
    for (index, b) in batches.iter().enumerate() {
        let bytes = serde_json::to_vec(&payload(b, index)).unwrap();
        ingestor
            .ingest_json(Source::Sse, &bytes, Channel::default())
            .await;
        if let Some(s) = b.session {
            sessions.insert(s);
            for e in b.email.iter().chain(b.action_emails.iter().flatten()) {
                newest_by_email.insert(*e, s);
            }
            if let Some(u) = b.user {
                newest_by_user.insert(u, s);
            }
        }
    }
    let ask = |knowledge_id: String, query: String, condition: Value| {
        json!({"knowledge_id": knowledge_id, "query": query, "metadata_condition": condition,
               "retrieval_setting": {"top_k": 50, "score_threshold": 0.0}})
    };
    // Session ids, through the three routes.
    for s in &sessions {
        let id = session_id(*s);
        let routes = [
            ask(id.clone(), "help".into(), Value::Null),
            ask("acme".into(), format!("{id}\nhelp"), Value::Null),
            ask(
                "kb".into(),
                "help".into(),
                json!({"conditions": [{"name": "session_id", "comparison_operator": "is", "value": id}]}),
            ),
        ];
        for body in routes {
            let (found, text) = retrieval(&state, body).await;
            prop_assert_eq!(found.as_deref(), Some(id.as_str()));
            prop_assert!(
                only_own_markers(&text, &id).is_ok(),
                "{:?}",
                only_own_markers(&text, &id)
            );
        }
    }
    // Emails (case variants) and user ids resolve to the newest session of that person.
    for e in 0..12 {
        let expected = newest_by_email.get(&e).map(|s| session_id(*s));
        for variant in 0..3 {
            let (found, text) = retrieval(
                &state,
                ask(email_variant(e, variant), "help".into(), Value::Null),
            )
            .await;
            prop_assert_eq!(&found, &expected, "email {} variant {}", e, variant);
            if let Some(id) = &expected {
                prop_assert!(only_own_markers(&text, id).is_ok());
            }
        }
        let (found, _) = retrieval(
            &state,
            ask(
                "kb".into(),
                format!("email: {}\nq", email_variant(e, 1)),
                Value::Null,
            ),
        )
        .await;
        prop_assert_eq!(&found, &expected);
    }
    for u in 0..12 {
        let expected = newest_by_user.get(&u).map(|s| session_id(*s));
        let (found, text) = retrieval(&state, ask(user_id(u), "help".into(), Value::Null)).await;
        prop_assert_eq!(&found, &expected, "user {}", u);
        if let Some(id) = &expected {
            prop_assert!(only_own_markers(&text, id).is_ok());
        }
        // Case variants of a user id are different users.
        let (found, _) = retrieval(
            &state,
            ask(user_id(u).to_uppercase(), "help".into(), Value::Null),
        )
        .await;
        prop_assert_eq!(found, None);
    }
    // Anonymous traffic is never reachable.
    for probe in ["anonymous", "unknown", "null", ""] {
        let (found, _) = retrieval(
            &state,
            ask(format!("x{probe}"), format!("{probe}\nq"), Value::Null),
        )
        .await;
        prop_assert_eq!(found, None);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn every_identity_sees_only_its_own_newest_session(batches in prop::collection::vec(batch(), 50..400)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check_isolation(Arc::new(MemoryStore::new(store_config())), &batches))?;
    }

    #[test]
    fn the_redis_store_isolates_identities_the_same_way(batches in prop::collection::vec(batch(), 50..200)) {
        let Some(url) = test_redis_url("the_redis_store_isolates_identities_the_same_way") else {
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let prefix = RedisPrefix::new(&url, "isolation");
            let store = Arc::new(RedisStore::new(prefix.connect().await, prefix.prefix.clone(), store_config()));
            check_isolation(store, &batches).await
        })?;
    }
}

/// The same over real HTTP with thousands of sessions: every session id answers with its own
/// data only.
#[tokio::test]
async fn thousands_of_sessions_over_http_stay_isolated() {
    let app = helpers::TestApp::spawn(helpers::test_config()).await;
    let sessions = 3000;
    for s in 0..sessions {
        let b = Batch {
            session: Some(s),
            email: Some(s % 40),
            user: Some(s % 25),
            action_emails: vec![None, None],
        };
        let bytes = serde_json::to_vec(&payload(&b, s)).unwrap();
        app.ingestor
            .ingest_json(Source::Sse, &bytes, Channel::default())
            .await;
    }
    for s in (0..sessions).step_by(7) {
        let id = session_id(s);
        let (status, body) = app.retrieve(None, &id, "what is this user doing").await;
        assert_eq!(status, reqwest::StatusCode::OK);
        let text = body.to_string();
        assert!(text.contains(&marker(s)), "{id}: own activity missing");
        only_own_markers(&text, &id).unwrap();
    }
    // Shared emails resolve to the last session that used them.
    for e in 0..40 {
        let newest = (0..sessions).filter(|s| s % 40 == e).max().unwrap();
        let (_, body) = app.retrieve(None, &email_variant(e, 2), "help").await;
        only_own_markers(&body.to_string(), &session_id(newest)).unwrap();
        assert_eq!(
            body["records"][0]["metadata"]["session_id"],
            session_id(newest)
        );
    }
    app.stop().await;
}

/// A session id reused after expiry starts over: whoever used it before is not found through it.
async fn check_reused_session_id_forgets_its_people(store: Arc<dyn SessionStore>) {
    use livectx::api::identity::{Claim, ClaimKind, ClaimOutcome, IdentityResolver, Via};
    let ttl = store_config().session_ttl.as_secs_f64();
    let t0 = 1_800_000_000.0;
    let alice = helpers::batch(
        "kiosk",
        Some("alice@x.com"),
        Some("u-alice"),
        vec![helpers::action("click", "Alice's", "/a", t0)],
    );
    store.append_actions(alice, t0, None).await.unwrap();
    let later = t0 + ttl + 5.0;
    let bob = helpers::batch(
        "kiosk",
        None,
        None,
        vec![helpers::action("click", "Bob's", "/b", later)],
    );
    store.append_actions(bob, later, None).await.unwrap();
    let (state, _) = state(store);
    let resolver = IdentityResolver {
        store: state.store.as_ref(),
        policy: &state.identity,
        metrics: &state.metrics,
        puller: None,
    };
    for (kind, value) in [
        (ClaimKind::Email, "alice@x.com"),
        (ClaimKind::UserId, "u-alice"),
    ] {
        let claim = Claim {
            kind,
            value,
            via: Via::Rest,
        };
        let outcome = resolver.resolve(&claim, None, later + 1.0).await.unwrap();
        assert!(
            matches!(outcome, ClaimOutcome::Unknown(_)),
            "{value} still finds the reused session: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_reused_session_id_forgets_its_people_in_memory() {
    check_reused_session_id_forgets_its_people(Arc::new(MemoryStore::new(store_config()))).await;
}

#[tokio::test]
async fn a_reused_session_id_forgets_its_people_on_redis() {
    let Some(url) = test_redis_url("a_reused_session_id_forgets_its_people_on_redis") else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "reuse");
    let store = Arc::new(RedisStore::new(
        prefix.connect().await,
        prefix.prefix.clone(),
        store_config(),
    ));
    check_reused_session_id_forgets_its_people(store).await;
}
