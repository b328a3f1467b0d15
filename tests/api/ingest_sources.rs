//! The analytics receivers end to end over real HTTP: PostHog (both bodies and arrays),
//! Amplitude, Segment (X-Signature, batches, the idle rule), authentication, refusals,
//! deduplication, reordering, identity across a session rotation, a store outage, and both
//! backends.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers;
use crate::helpers::faulty_store::FaultyStore;
use crate::helpers::redis_env::{RedisPrefix, test_redis_url};
use crate::helpers::{TestApp, metric, test_config};
use livectx::Overrides;
use livectx::app::store_config;
use livectx::ingest::receivers::segment_signature;
use livectx::session::model::{PersonKey, SessionId, SourceKind};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "ingest-secret-5c7e9a1b3d";
const PRODUCT: &str = "acme_prod";
const URL_SECRET: &str = "reset-token-8f6d4b2a0c";

fn iso(ts: f64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs_f64(ts);
    humantime::format_rfc3339_millis(time).to_string()
}

fn now() -> f64 {
    livectx::clock::now()
}

/// PostHog's stock HTTP Webhook body for one event.
fn posthog_event(uuid: &str, event: &str, session: Option<&str>, url: &str, ts: f64) -> Value {
    let mut properties = json!({
        "$current_url": url,
        "$pathname": url.split("app.acme.io").nth(1).unwrap_or("/"),
        "$host": "app.acme.io",
    });
    if let Some(session) = session {
        properties["$session_id"] = json!(session);
    }
    if event == "$pageview" {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        let title = path.rsplit('/').next().unwrap_or("Home").to_string();
        properties["title"] = json!(format!("{title} page"));
    }
    json!({
        "event": {
            "uuid": uuid,
            "event": event,
            "distinct_id": "usr_maria",
            "timestamp": iso(ts),
            "elements_chain": "",
            "properties": properties,
        },
        "person": {"id": "p1", "properties": {"email": "Maria.Lopez@example.com"}},
    })
}

/// Autoplay's flat destination body (every value a string).
fn autoplay_flat(event: &str, session: &str, url: &str, ts: f64) -> Value {
    json!({
        "event": event, "timestamp": iso(ts), "session_id": session, "distinct_id": "usr_devon",
        "email": "devon@northwind.test", "current_url": url, "referrer": "", "event_type": "",
        "elements_chain": "", "element_id": "", "input_field_name": "", "link_destination": "",
        "button_or_link_text": "",
    })
}

fn config() -> livectx::ServeConfig {
    let mut config = test_config();
    config.ingest_secret = Some(SECRET.into());
    config.summary_threshold = 10_000;
    config
}

async fn app() -> TestApp {
    TestApp::spawn(config()).await
}

async fn post(
    app: &TestApp,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn posthog(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    post(
        app,
        &format!("/ingest/{PRODUCT}"),
        body,
        &[("x-posthog-secret", SECRET)],
    )
    .await
}

async fn session(app: &TestApp, id: &str) -> Option<Arc<livectx::session::model::Session>> {
    app.state
        .store
        .session(&SessionId::parse(id).unwrap(), now())
        .await
        .unwrap()
}

fn urls(session: &livectx::session::model::Session) -> Vec<String> {
    session
        .recent_action_iter()
        .map(|a| a.canonical_url().to_string())
        .collect()
}

#[tokio::test]
async fn both_posthog_bodies_and_arrays_are_stored_and_read_back() {
    let app = app().await;
    let t = now() - 30.0;
    let (status, reply) = posthog(
        &app,
        &posthog_event(
            "e1",
            "$pageview",
            Some("ph-s1"),
            "https://app.acme.io/projects",
            t,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["stored"], 1);
    let (status, reply) = posthog(
        &app,
        &autoplay_flat("$pageview", "ap-s1", "https://app.acme.io/billing", t),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let array = json!([
        posthog_event("e2", "$pageview", Some("ph-s2"), "https://app.acme.io/a", t),
        posthog_event(
            "e3",
            "$pageview",
            Some("ph-s2"),
            "https://app.acme.io/b",
            t + 1.0
        ),
    ]);
    let (status, reply) = posthog(&app, &array).await;
    assert_eq!(
        (status, &reply["stored"]),
        (StatusCode::OK, &json!(2)),
        "{reply}"
    );

    let s1 = session(&app, "ph-s1").await.expect("stored");
    assert_eq!(s1.source(), Some(SourceKind::PostHog));
    assert_eq!(s1.product_id().as_deref(), Some(PRODUCT));
    assert_eq!(s1.email().as_deref(), Some("maria.lopez@example.com"));
    assert!(session(&app, "ap-s1").await.is_some());
    let s2 = session(&app, "ph-s2").await.unwrap();
    assert_eq!(s2.chunks().len(), 1, "one body, one chunk");
    assert_eq!(
        s2.current_page().as_ref().map(|p| p.url.as_str()),
        Some("https://app.acme.io/b")
    );
    // What Dify reads.
    let (status, answer) = app.retrieve(None, "ph-s2", "where am I").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer.to_string().contains("https://app.acme.io/b"),
        "{answer}"
    );
    app.stop().await;
}

#[tokio::test]
async fn amplitude_and_segment_are_stored() {
    let app = app().await;
    let t = now() - 20.0;
    let amplitude = json!([{
        "event_type": "[Amplitude] Page Viewed", "user_id": "usr_sam", "device_id": "d1",
        "session_id": 1_790_000_000_000_i64, "event_time": "2026-12-01 08:00:00.000000",
        "$insert_id": "amp-1", "event_properties": {"[Amplitude] Page URL": "https://app.acme.io/home",
        "[Amplitude] Page Title": "Home"},
    }]);
    let (status, reply) = post(
        &app,
        &format!("/ingest/amplitude/{PRODUCT}"),
        &amplitude,
        &[("authorization", &format!("Bearer {SECRET}"))],
    )
    .await;
    assert_eq!(
        (status, &reply["stored"]),
        (StatusCode::OK, &json!(1)),
        "{reply}"
    );
    assert!(session(&app, "1790000000000").await.is_some());

    let segment = json!({"batch": [
        {"type": "page", "messageId": "m1", "anonymousId": "anon-1", "name": "Pricing",
         "timestamp": iso(t), "context": {"sessionId": 1_790_000_000_001_i64},
         "properties": {"url": "https://app.acme.io/pricing", "title": "Pricing"}},
        {"type": "track", "messageId": "m2", "anonymousId": "anon-1", "event": "Plan Selected",
         "timestamp": iso(t + 1.0), "context": {"sessionId": 1_790_000_000_001_i64},
         "properties": {"url": "https://app.acme.io/pricing"}},
    ]});
    let raw = serde_json::to_vec(&segment).unwrap();
    let signature = segment_signature(SECRET, &raw);
    let (status, reply) = post(
        &app,
        &format!("/ingest/segment/{PRODUCT}"),
        &segment,
        &[("x-signature", &signature)],
    )
    .await;
    assert_eq!(
        (status, &reply["stored"]),
        (StatusCode::OK, &json!(2)),
        "{reply}"
    );
    let stored = session(&app, "1790000000001").await.expect("stored");
    assert_eq!(stored.source(), Some(SourceKind::Segment));
    assert_eq!(stored.recent_action_iter().count(), 2);

    // A signature over another body is refused.
    let (status, _) = post(
        &app,
        &format!("/ingest/segment/{PRODUCT}"),
        &json!({"type": "track", "messageId": "m3", "anonymousId": "a", "event": "X"}),
        &[("x-signature", &signature)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn segment_without_a_session_id_is_cut_by_the_idle_rule() {
    let app = app().await;
    let t = now() - 3.0 * 3600.0;
    let track = |id: &str, ts: f64| {
        json!({"type": "track", "messageId": id, "userId": "usr_ana", "event": "Report Opened",
               "timestamp": iso(ts), "properties": {"url": "https://app.acme.io/reports"}})
    };
    let bearer = format!("Bearer {SECRET}");
    for (id, ts) in [("m1", t), ("m2", t + 60.0), ("m3", t + 60.0 + 31.0 * 60.0)] {
        let (status, reply) = post(
            &app,
            &format!("/ingest/segment/{PRODUCT}"),
            &track(id, ts),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let listed = app
        .state
        .store
        .active_sessions(0.0, None, 100, now())
        .await
        .unwrap();
    let derived: Vec<&str> = listed
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .filter(|id| id.starts_with("seg_"))
        .collect();
    assert_eq!(
        derived.len(),
        2,
        "31 idle minutes start a new session: {derived:?}"
    );
    assert!(derived.iter().all(|id| !id.contains("usr_ana")));
    app.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_secrets_are_401_and_without_a_secret_the_routes_are_off() {
    let app = app().await;
    let body = posthog_event("e1", "$pageview", Some("s1"), "https://app.acme.io/", now());
    let path = format!("/ingest/{PRODUCT}");
    for headers in [
        vec![],
        vec![("x-posthog-secret", "wrong")],
        vec![("authorization", "Bearer wrong")],
    ] {
        let (status, reply) = post(&app, &path, &body, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(
            reply["error_msg"]
                .as_str()
                .unwrap()
                .contains("X-PostHog-Secret")
        );
    }
    let (status, _) = post(
        &app,
        &path,
        &body,
        &[("authorization", &format!("Bearer {SECRET}"))],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Amplitude takes only the bearer.
    let (status, _) = post(
        &app,
        &format!("/ingest/amplitude/{PRODUCT}"),
        &json!({}),
        &[("x-posthog-secret", SECRET)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_payloads_refused_total{source=\"posthog\",reason=\"unauthorized\"}"
        ),
        3.0
    );
    app.stop().await;

    let off = TestApp::spawn(test_config()).await;
    let (status, reply) = post(&off, &path, &body, &[("x-posthog-secret", SECRET)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        reply["error_msg"]
            .as_str()
            .unwrap()
            .contains("LIVECTX_INGEST_SECRET")
    );
    off.stop().await;
}

#[tokio::test]
async fn a_blank_secret_refuses_to_start() {
    let mut config = config();
    config.ingest_secret = Some("  \n".into());
    let error = livectx::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("LIVECTX_INGEST_SECRET"),
        "{error}"
    );
    let mut config = self::config();
    config.keep_query_params = vec!["tab=1".into()];
    let error = livectx::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("LIVECTX_KEEP_QUERY_PARAMS"),
        "{error}"
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_and_sessionless_events_422_never_pooled() {
    let app = app().await;
    let path = format!("/ingest/{PRODUCT}");
    let response = app
        .http
        .post(app.url(&path))
        .header("x-posthog-secret", SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error_code"], 4000);

    let (status, reply) = posthog(
        &app,
        &posthog_event("e1", "$pageview", None, "https://app.acme.io/a", now()),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert_eq!(reply["refused"][0]["reason"], "no_session");
    let (status, reply) = posthog(
        &app,
        &posthog_event(
            "e2",
            "$pageview",
            Some("  "),
            "https://app.acme.io/a",
            now(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    // In an array, the good events are stored and the refusal is listed.
    let (status, reply) = posthog(
        &app,
        &json!([
            posthog_event("e3", "$pageview", None, "https://app.acme.io/a", now()),
            posthog_event(
                "e4",
                "$pageview",
                Some("s-ok"),
                "https://app.acme.io/a",
                now()
            ),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&reply["stored"], &reply["refused"][0]["index"]),
        (&json!(1), &json!(0))
    );
    let stats = app.state.store.stats().await.unwrap();
    assert_eq!(stats.sessions, 1, "nothing pooled under an anonymous key");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_payloads_refused_total{source=\"posthog\",reason=\"no_session\"}"
        ),
        3.0
    );
    app.stop().await;
}

#[tokio::test]
async fn duplicates_are_stored_once_and_late_events_go_in_their_place() {
    let app = app().await;
    let t = now() - 60.0;
    let b = posthog_event(
        "e-b",
        "$pageview",
        Some("s1"),
        "https://app.acme.io/b",
        t + 10.0,
    );
    let a = posthog_event("e-a", "$pageview", Some("s1"), "https://app.acme.io/a", t);
    let (status, _) = posthog(&app, &b).await;
    assert_eq!(status, StatusCode::OK);
    let (status, reply) = posthog(&app, &b).await;
    assert_eq!((status, &reply["duplicates"]), (StatusCode::OK, &json!(1)));
    // A arrives late: it happened before B.
    let (status, _) = posthog(&app, &a).await;
    assert_eq!(status, StatusCode::OK);
    let s = session(&app, "s1").await.unwrap();
    assert_eq!(urls(&s), ["https://app.acme.io/a", "https://app.acme.io/b"]);
    assert_eq!(
        s.current_page().as_ref().map(|p| p.url.as_str()),
        Some("https://app.acme.io/b"),
        "now on is the newest page by time, not by arrival"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_source_events_total{source=\"posthog\",outcome=\"duplicate\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn email_follows_the_person_across_a_session_rotation_and_sessions_stay_apart() {
    let app = app().await;
    let t = now() - 120.0;
    posthog(
        &app,
        &posthog_event(
            "e1",
            "$pageview",
            Some("old-s"),
            "https://app.acme.io/old",
            t,
        ),
    )
    .await;
    // Another person, another session.
    let mut other = posthog_event(
        "e2",
        "$pageview",
        Some("other-s"),
        "https://app.acme.io/x",
        t,
    );
    other["person"]["properties"]["email"] = json!("someone@else.test");
    other["event"]["distinct_id"] = json!("usr_other");
    posthog(&app, &other).await;
    // PostHog rotates the session id after 30 idle minutes.
    posthog(
        &app,
        &posthog_event(
            "e3",
            "$pageview",
            Some("new-s"),
            "https://app.acme.io/new",
            t + 60.0,
        ),
    )
    .await;
    let resolve = |key: PersonKey| {
        let store = Arc::clone(&app.state.store);
        async move { store.resolve_person(&key, None, now()).await.unwrap() }
    };
    assert_eq!(
        resolve(PersonKey::email("maria.lopez@example.com").unwrap()).await,
        Some(SessionId::parse("new-s").unwrap())
    );
    assert_eq!(
        resolve(PersonKey::user_id("usr_maria").unwrap()).await,
        Some(SessionId::parse("new-s").unwrap())
    );
    let (status, answer) = app
        .retrieve(None, PRODUCT, "email: maria.lopez@example.com\nwhere am I")
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = answer.to_string();
    assert!(text.contains("app.acme.io/new"), "{text}");
    assert!(
        !text.contains("app.acme.io/x"),
        "another person's page leaked: {text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_page_leave_ends_time_on_the_page_even_when_it_arrives_first() {
    let app = app().await;
    let t = now();
    let url = "https://app.acme.io/checkout";
    // PostHog reorders: the leave arrives before the page view it ends.
    for (uuid, event, ts) in [
        ("l1", "$pageleave", t - 30.0),
        ("v1", "$pageview", t - 90.0),
    ] {
        let (status, answer) =
            posthog(&app, &posthog_event(uuid, event, Some("s-l"), url, ts)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (_, answer) = app.retrieve(None, "s-l", "where is the user").await;
    let text = answer.to_string();
    assert!(
        text.contains(
            r#"Left \"checkout page\" (https://app.acme.io/checkout) 30 s ago, after 1 min there."#
        ),
        "{text}"
    );
    assert!(!text.contains("Now on:"), "{text}");
    let s = session(&app, "s-l").await.unwrap();
    assert_eq!(
        s.recent_action_iter().count(),
        1,
        "the leave is not an action"
    );

    // Back on a page: the leave no longer applies.
    let (status, _) = posthog(
        &app,
        &posthog_event(
            "v2",
            "$pageview",
            Some("s-l"),
            "https://app.acme.io/invoices",
            t - 5.0,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, answer) = app.retrieve(None, "s-l", "where is the user").await;
    assert!(
        answer.to_string().contains(r#"Now on: \"invoices page\""#),
        "{answer}"
    );
    app.stop().await;
}

#[tokio::test]
async fn query_string_secrets_never_reach_an_output() {
    let app = app().await;
    let url = format!("https://app.acme.io/reset?token={URL_SECRET}#{URL_SECRET}");
    let (status, _) = posthog(
        &app,
        &posthog_event("e1", "$pageview", Some("s-q"), &url, now() - 5.0),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, answer) = app.retrieve(None, "s-q", "reset").await;
    assert!(answer.to_string().contains("/reset"), "{answer}");
    let (_, rest) = app
        .get_text(&format!("/users/{PRODUCT}/usr_maria/live-activity"))
        .await;
    let stored = format!("{:?}", session(&app, "s-q").await.unwrap());
    for output in [answer.to_string(), rest, stored] {
        assert!(!output.contains(URL_SECRET), "{output}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failing_store_answers_503_and_the_retry_is_stored() {
    let store = FaultyStore::healthy(store_config(&config()));
    let app = TestApp::spawn_with(
        config(),
        Overrides {
            store: Some(store.clone()),
            ..Overrides::default()
        },
    )
    .await;
    let event = posthog_event(
        "e1",
        "$pageview",
        Some("s-f"),
        "https://app.acme.io/a",
        now(),
    );
    store.set_down(true);
    let (status, reply) = posthog(&app, &event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    store.set_down(false);
    let (status, reply) = posthog(&app, &event).await;
    assert_eq!(
        (status, &reply["stored"]),
        (StatusCode::OK, &json!(1)),
        "the retry is no duplicate: {reply}"
    );
    assert_eq!(
        session(&app, "s-f")
            .await
            .unwrap()
            .recent_action_iter()
            .count(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_events_of_a_session_share_one_chunk() {
    let mut config = config();
    config.ingest_batch_window = Duration::from_millis(200);
    let app = TestApp::spawn(config).await;
    let t = now() - 10.0;
    let posts = (0..5).map(|i| {
        let app = &app;
        async move {
            posthog(
                app,
                &posthog_event(
                    &format!("e{i}"),
                    "$pageview",
                    Some("s-g"),
                    &format!("https://app.acme.io/p{i}"),
                    t + f64::from(i),
                ),
            )
            .await
            .0
        }
    });
    let statuses = futures_util::future::join_all(posts).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // Every answer came after its write: the session is complete now.
    let s = session(&app, "s-g").await.unwrap();
    assert_eq!(s.recent_action_iter().count(), 5);
    assert_eq!(s.chunks().len(), 1, "one group commit, one chunk");
    app.stop().await;
}

#[tokio::test]
async fn on_redis_replicas_share_deduplication_and_idle_sessions() {
    let Some(url) = test_redis_url("on_redis_replicas_share_deduplication_and_idle_sessions")
    else {
        return;
    };
    let prefix = RedisPrefix::new(&url, "ingest-sources");
    let replica = || {
        let mut config = config();
        config.redis_url = Some(url.clone());
        config.redis_prefix = prefix.prefix.clone();
        TestApp::spawn(config)
    };
    let (one, two) = (replica().await, replica().await);
    let t = now() - 30.0;
    let b = posthog_event(
        "r-b",
        "$pageview",
        Some("rs1"),
        "https://app.acme.io/b",
        t + 5.0,
    );
    let a = posthog_event("r-a", "$pageview", Some("rs1"), "https://app.acme.io/a", t);
    assert_eq!(posthog(&one, &b).await.0, StatusCode::OK);
    let (status, reply) = posthog(&two, &b).await;
    assert_eq!(
        (status, &reply["duplicates"]),
        (StatusCode::OK, &json!(1)),
        "{reply}"
    );
    assert_eq!(posthog(&two, &a).await.0, StatusCode::OK);
    let s = session(&one, "rs1").await.unwrap();
    assert_eq!(urls(&s), ["https://app.acme.io/a", "https://app.acme.io/b"]);
    assert_eq!(
        s.current_page().as_ref().map(|p| p.url.as_str()),
        Some("https://app.acme.io/b")
    );
    // Segment without a session id: both replicas place the person in one session.
    let track = |id: &str, ts: f64| {
        json!({"type": "track", "messageId": id, "anonymousId": "anon-r", "event": "Opened",
               "timestamp": iso(ts), "properties": {"url": "https://app.acme.io/r"}})
    };
    let bearer = format!("Bearer {SECRET}");
    let path = format!("/ingest/segment/{PRODUCT}");
    post(&one, &path, &track("rm1", t), &[("authorization", &bearer)]).await;
    post(
        &two,
        &path,
        &track("rm2", t + 1.0),
        &[("authorization", &bearer)],
    )
    .await;
    let listed = one
        .state
        .store
        .active_sessions(0.0, None, 100, now())
        .await
        .unwrap();
    let derived: Vec<_> = listed
        .sessions
        .iter()
        .filter(|s| s.session_id.starts_with("seg_"))
        .collect();
    assert_eq!(derived.len(), 1, "{derived:?}");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_debounced_webhook_delivery_answers_after_its_write_and_a_failure_is_retried() {
    use livectx::ingest::webhook::sign;
    const WEBHOOK_SECRET: &str = "webhook-secret-3b5d7f9a1c";
    let mut config = config();
    config.webhook_secret = Some(WEBHOOK_SECRET.into());
    config.debounce_ms = 50;
    let store = FaultyStore::healthy(store_config(&config));
    let app = TestApp::spawn_with(
        config,
        Overrides {
            store: Some(store.clone()),
            ..Overrides::default()
        },
    )
    .await;
    let body = serde_json::to_vec(&helpers::actions_payload(
        Some("wh-s1"),
        None,
        &["Save"],
        now() - 5.0,
    ))
    .unwrap();
    let push = || {
        app.http
            .post(app.url("/webhooks/autoplay"))
            .header("x-connector-signature", sign(WEBHOOK_SECRET, &body))
            .body(body.clone())
            .send()
    };
    // The write fails after the debounce window: the delivery must not have been answered 200.
    store.set_down(true);
    let response = push().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    store.set_down(false);
    let response = push().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "the retry is not a duplicate"
    );
    // Answered only after the debounced write: stored now, no waiting.
    let stored = session(&app, "wh-s1")
        .await
        .expect("stored before the answer");
    assert_eq!(stored.recent_action_iter().count(), 1);
    assert_eq!(stored.source(), Some(SourceKind::AutoplayWebhook));
    app.stop().await;
}

/// What a reader sees of a session: actions in order, the current page, the identity.
fn as_read(s: &livectx::session::model::Session) -> Value {
    let actions: Vec<Value> = s
        .recent_action_iter()
        .map(|a| json!([a.kind(), a.title(), a.canonical_url(), a.time()]))
        .collect();
    let page = s
        .current_page()
        .as_ref()
        .map(|p| json!([p.url, p.label, p.since]));
    json!({"actions": actions, "page": page, "email": s.email(), "user_id": s.user_id(),
           "people": s.person_keys().len(), "source": s.source()})
}

#[test]
fn delivery_order_and_duplicates_do_not_change_the_stored_session() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(app());
    let t = now() - 100.0;
    let plan: Vec<(&str, &str, f64)> = vec![
        ("$pageview", "https://app.acme.io/dashboard", t),
        ("Report Exported", "https://app.acme.io/dashboard", t + 2.0),
        ("$pageview", "https://app.acme.io/projects", t + 4.0),
        ("Project Created", "https://app.acme.io/projects", t + 6.0),
        ("$pageview", "https://app.acme.io/settings/billing", t + 8.0),
        (
            "Plan Changed",
            "https://app.acme.io/settings/billing",
            t + 9.0,
        ),
    ];
    let events_for = |session: &str| -> Vec<Value> {
        plan.iter()
            .enumerate()
            .map(|(i, (event, url, ts))| {
                posthog_event(&format!("{session}-{i}"), event, Some(session), url, *ts)
            })
            .collect()
    };
    let deliver = |events: Vec<Value>| {
        runtime.block_on(async {
            for event in events {
                let (status, reply) = posthog(&app, &event).await;
                assert_eq!(status, StatusCode::OK, "{reply}");
            }
        })
    };
    deliver(events_for("in-order"));
    let expected = as_read(&runtime.block_on(session(&app, "in-order")).unwrap());
    assert_eq!(expected["actions"].as_array().unwrap().len(), plan.len());
    let case = std::sync::atomic::AtomicUsize::new(0);
    let order = Just((0..plan.len()).collect::<Vec<_>>()).prop_shuffle();
    let repeats = proptest::collection::vec(0..plan.len(), 0..4);
    proptest!(ProptestConfig::with_cases(24), |(order in order, repeats in repeats)| {
        let id = format!("case-{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let events = events_for(&id);
        let mut delivery: Vec<Value> = order.iter().map(|i| events[*i].clone()).collect();
        for (n, i) in repeats.iter().enumerate() {
            // A retry of an event, anywhere in the delivery.
            delivery.insert((n * 3) % (delivery.len() + 1), events[*i].clone());
        }
        deliver(delivery);
        let got = as_read(&runtime.block_on(session(&app, &id)).unwrap());
        prop_assert_eq!(&got, &expected);
    });
    runtime.block_on(app.stop());
}
