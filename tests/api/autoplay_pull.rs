//! The Autoplay pull source against a local stand-in of Autoplay's hosted API on a real socket:
//! a fresh fetch through `/retrieval`, MCP and REST; the freshness window; single flight under
//! 50 concurrent lookups; a slow upstream (answered within the budget, marked stale); a down
//! upstream (the breaker opens, no further calls); 401/403; 429 with `Retry-After`; and the
//! background refresh.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{TestApp, eventually, metric, test_config};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use livectx::ServeConfig;
use livectx::ingest::pull::AutoplayApiConfig;
use livectx::session::model::SessionId;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const PRODUCT: &str = "prod_acme";
const KEY: &str = "mcp-key-of-acme";
const USER: &str = "user_42";

/// How the stand-in answers.
#[derive(Debug, Clone)]
enum Mode {
    Ok,
    /// Answer after this delay.
    Slow(Duration),
    /// 503 to everything.
    Down,
    /// 429 with this `Retry-After`, once; then `Ok`.
    RateLimitedOnce(&'static str),
}

#[derive(Default)]
struct Seen {
    calls: usize,
    authorization: Vec<String>,
    queries: Vec<String>,
}

/// A local stand-in of `GET /users/{product_id}/{user_id}/live-activity`.
#[derive(Clone)]
struct StandIn {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    activity: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    seen: Arc<Mutex<Seen>>,
}

impl StandIn {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stand_in = Self {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            activity: Arc::default(),
            seen: Arc::default(),
        };
        let app = Router::new()
            .route("/users/{product}/{user}/live-activity", get(answer))
            .with_state(stand_in.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        stand_in
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().calls
    }

    /// Append actions (in Autoplay's format) to what the API holds for `user`.
    fn record(&self, user: &str, titles: &[(&str, &str)]) {
        let mut activity = self.activity.lock().unwrap();
        let list = activity.entry(user.to_string()).or_default();
        let now = livectx::clock::now();
        for (kind, title) in titles {
            let index = list.len();
            let page = title.strip_prefix("Page Load: ").unwrap_or("Dashboard");
            let url = format!("https://app.acme.io/{}", page.to_lowercase());
            list.push(json!({
                "type": kind, "title": title, "description": format!("User did {title}"),
                "timestamp_start": now - 10.0 + index as f64, "timestamp_end": now - 9.5 + index as f64,
                "raw_url": url, "canonical_url": url, "index": index,
            }));
        }
    }
}

async fn answer(
    State(stand_in): State<StandIn>,
    Path((product, user)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    {
        let mut seen = stand_in.seen.lock().unwrap();
        seen.calls += 1;
        seen.authorization.push(authorization.clone());
        seen.queries.push(query.unwrap_or_default());
    }
    if authorization != format!("Bearer {KEY}") {
        return (StatusCode::UNAUTHORIZED, "Invalid or missing API key").into_response();
    }
    if product != PRODUCT {
        return (StatusCode::FORBIDDEN, "API key does not match product_id").into_response();
    }
    let mode = stand_in.mode.lock().unwrap().clone();
    match mode {
        Mode::Ok => {}
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Down => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::RateLimitedOnce(retry_after) => {
            stand_in.set(Mode::Ok);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after)],
                "slow down",
            )
                .into_response();
        }
    }
    let actions = stand_in
        .activity
        .lock()
        .unwrap()
        .get(&user)
        .cloned()
        .unwrap_or_default();
    axum::Json(json!({
        "product_id": product, "user_id": user, "count": actions.len(),
        "as_of": livectx::clock::now(), "actions": actions,
    }))
    .into_response()
}

fn pull_config(stand_in: &StandIn) -> AutoplayApiConfig {
    AutoplayApiConfig {
        api_key: Some(KEY.into()),
        product_id: Some(PRODUCT.into()),
        url: stand_in.url(),
        ..AutoplayApiConfig::default()
    }
}

/// A server fed by the pull source alone.
fn config(autoplay_api: AutoplayApiConfig) -> ServeConfig {
    ServeConfig {
        autoplay_api,
        ..test_config()
    }
}

/// `/retrieval` with `user_id:` on the query's first line: the records' contents, joined.
async fn ask(app: &TestApp, user: &str) -> String {
    let (status, body) = app
        .retrieve(
            None,
            PRODUCT,
            &format!("user_id: {user}\nwhere are my notifications?"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["content"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let (status, text) = app.get_text("/readyz").await;
    (status, serde_json::from_str(&text).unwrap())
}

/// Titles of the actions REST returns for `user`.
async fn rest_titles(app: &TestApp, user: &str) -> Vec<String> {
    let (status, text) = app
        .get_text(&format!("/users/{PRODUCT}/{user}/live-activity"))
        .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["title"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_fresh_fetch_answers_retrieval_mcp_and_rest() {
    let stand_in = StandIn::start().await;
    stand_in.record(
        USER,
        &[
            ("pageview", "Page Load: Dashboard"),
            ("click", "Click Consultants link"),
            ("pageview", "Page Load: Consultants"),
        ],
    );
    let app = TestApp::spawn(config(pull_config(&stand_in))).await;

    let records = ask(&app, USER).await;
    assert!(records.starts_with("Current User Activity"), "{records}");
    assert!(records.contains("Now on: \"Consultants\""), "{records}");
    assert!(records.contains("Click Consultants link"), "{records}");
    assert!(!records.contains("could not be fetched"), "{records}");
    {
        let seen = stand_in.seen.lock().unwrap();
        assert_eq!(seen.calls, 1);
        assert_eq!(seen.authorization, vec![format!("Bearer {KEY}")]);
        assert_eq!(seen.queries, vec!["limit=50".to_string()]);
    }

    // The MCP tool's user argument, and the REST route, read the same user.
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(app.url("/mcp")),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let arguments = json!({"user_id": USER}).as_object().cloned().unwrap();
    let result = client
        .call_tool(CallToolRequestParams::new("get_live_user_activity").with_arguments(arguments))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    let text = result.content[0].as_text().unwrap().text.clone();
    assert!(text.contains("Now on: \"Consultants\""), "{text}");
    client.cancel().await.unwrap();
    assert_eq!(
        rest_titles(&app, USER).await,
        [
            "Page Load: Dashboard",
            "Click Consultants link",
            "Page Load: Consultants"
        ]
    );
    // All three inside the freshness window: still the one upstream call.
    assert_eq!(stand_in.calls(), 1);

    // The pulled user is indexed: the synthetic session is theirs, in the product.
    let session_id = SessionId::parse(&format!("autoplay-api:{PRODUCT}:{USER}")).unwrap();
    let session = app
        .state
        .store
        .session(&session_id, livectx::clock::now())
        .await
        .unwrap()
        .expect("the pulled session");
    assert_eq!(session.user_id().as_deref(), Some(USER));
    assert_eq!(session.product_id().as_deref(), Some(PRODUCT));

    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_autoplay_pull_fetches_total{outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "livectx_autoplay_pull_cache_hits_total{cache=\"fresh\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&metrics, "livectx_autoplay_pull_actions_merged_total"),
        3.0
    );
    let (status, ready) = readyz(&app).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["autoplay_api"]["breaker"], "closed");
    assert_eq!(ready["autoplay_api"]["config_error"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn lookups_within_the_freshness_window_do_not_refetch_and_each_action_is_merged_once() {
    let stand_in = StandIn::start().await;
    stand_in.record(USER, &[("pageview", "Page Load: Dashboard")]);
    let app = TestApp::spawn(config(AutoplayApiConfig {
        freshness: Duration::from_millis(400),
        ..pull_config(&stand_in)
    }))
    .await;

    ask(&app, USER).await;
    stand_in.record(USER, &[("click", "Click Notifications bell")]);
    let within = ask(&app, USER).await;
    assert_eq!(stand_in.calls(), 1, "no refetch inside the window");
    assert!(!within.contains("Notifications bell"), "{within}");

    tokio::time::sleep(Duration::from_millis(450)).await;
    let after = ask(&app, USER).await;
    assert_eq!(stand_in.calls(), 2);
    assert!(after.contains("Click Notifications bell"), "{after}");
    // The second answer repeated the first action: stored once.
    assert_eq!(
        rest_titles(&app, USER).await,
        ["Page Load: Dashboard", "Click Notifications bell"]
    );
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_lookups_of_one_user_make_one_upstream_call() {
    let stand_in = StandIn::start().await;
    stand_in.record(USER, &[("pageview", "Page Load: Billing")]);
    // Slow enough that the lookups overlap the request.
    stand_in.set(Mode::Slow(Duration::from_millis(300)));
    let app = Arc::new(TestApp::spawn(config(pull_config(&stand_in))).await);
    let lookups: Vec<_> = (0..50)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { ask(&app, USER).await })
        })
        .collect();
    for lookup in lookups {
        let records = lookup.await.unwrap();
        assert!(records.contains("Now on: \"Billing\""), "{records}");
    }
    assert_eq!(stand_in.calls(), 1);
    let metrics = app.metrics().await;
    let joined = metric(
        &metrics,
        "livectx_autoplay_pull_cache_hits_total{cache=\"joined\"}",
    );
    let fresh = metric(
        &metrics,
        "livectx_autoplay_pull_cache_hits_total{cache=\"fresh\"}",
    );
    assert_eq!(joined + fresh, 49.0, "{metrics}");
    assert!(
        joined >= 1.0,
        "lookups joined the request in flight: {metrics}"
    );
    Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test]
async fn a_slow_upstream_is_answered_within_the_budget_from_what_livectx_holds() {
    let stand_in = StandIn::start().await;
    stand_in.record(USER, &[("pageview", "Page Load: Projects")]);
    let budget = Duration::from_millis(300);
    let app = TestApp::spawn(config(AutoplayApiConfig {
        budget,
        freshness: Duration::from_millis(50),
        ..pull_config(&stand_in)
    }))
    .await;
    ask(&app, USER).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let upstream_delay = Duration::from_secs(3);
    stand_in.set(Mode::Slow(upstream_delay));
    let started = Instant::now();
    let records = ask(&app, USER).await;
    let took = started.elapsed();
    assert!(
        took < budget + Duration::from_secs(1),
        "answered in {took:?}, budget {budget:?}"
    );
    assert!(records.contains("Now on: \"Projects\""), "{records}");
    assert!(
        records.contains("newer activity could not be fetched"),
        "{records}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_autoplay_pull_lookups_total{outcome=\"stale\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_down_upstream_opens_the_breaker_and_later_lookups_cost_no_call() {
    let stand_in = StandIn::start().await;
    stand_in.record(USER, &[("pageview", "Page Load: Invoices")]);
    let app = TestApp::spawn(config(AutoplayApiConfig {
        freshness: Duration::from_millis(50),
        ..pull_config(&stand_in)
    }))
    .await;
    ask(&app, USER).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    stand_in.set(Mode::Down);
    // Each failing fetch is retried while the breaker is closed; it opens after five failed
    // requests in a row.
    let mut lookups = 0;
    while readyz(&app).await.1["autoplay_api"]["breaker"] != "open" {
        lookups += 1;
        assert!(lookups <= 5, "the breaker never opened");
        let records = ask(&app, &format!("someone_{lookups}")).await;
        assert!(records.is_empty(), "{records}");
    }
    let calls_when_open = stand_in.calls();
    assert_eq!(calls_when_open, 1 + 5);

    // Open: lookups are answered from what livectx holds, marked stale, asking nobody.
    let records = ask(&app, USER).await;
    assert!(records.contains("Now on: \"Invoices\""), "{records}");
    assert!(
        records.contains("newer activity could not be fetched"),
        "{records}"
    );
    for i in 0..10 {
        assert!(ask(&app, &format!("other_{i}")).await.is_empty());
    }
    assert_eq!(stand_in.calls(), calls_when_open);
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "livectx_autoplay_pull_breaker_state"), 2.0);
    assert_eq!(
        metric(
            &metrics,
            "livectx_autoplay_pull_skipped_total{outcome=\"breaker_open\"}"
        ),
        11.0
    );
    // A transient outage is not a configuration error: still ready.
    assert_eq!(readyz(&app).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_refused_key_is_a_configuration_error_shown_in_readyz() {
    let stand_in = StandIn::start().await;
    stand_in.record(USER, &[("pageview", "Page Load: Dashboard")]);
    for (key, product, status) in [("wrong-key", PRODUCT, 401), (KEY, "prod_other", 403)] {
        let calls_before = stand_in.calls();
        let app = TestApp::spawn(config(AutoplayApiConfig {
            api_key: Some(key.into()),
            product_id: Some(product.into()),
            ..pull_config(&stand_in)
        }))
        .await;
        // Answered, with nothing: the lookup is not an error.
        assert!(ask(&app, USER).await.is_empty());
        let (http_status, ready) = readyz(&app).await;
        assert_eq!(http_status, 503, "{ready}");
        assert_eq!(ready["ready"], false);
        let pull = &ready["autoplay_api"];
        assert_eq!(pull["ok"], false, "{pull}");
        assert_eq!(pull["config_error"]["status"], status, "{pull}");
        assert_eq!(pull["product_id"], product);
        // Not asked again until the retry time.
        assert!(ask(&app, "another_user").await.is_empty());
        assert_eq!(stand_in.calls(), calls_before + 1);
        let metrics = app.metrics().await;
        let outcome = if status == 401 {
            "unauthorized"
        } else {
            "forbidden"
        };
        assert_eq!(
            metric(
                &metrics,
                &format!("livectx_autoplay_pull_fetches_total{{outcome=\"{outcome}\"}}")
            ),
            1.0
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_429_pauses_requests_for_its_retry_after() {
    let stand_in = StandIn::start().await;
    stand_in.record(USER, &[("pageview", "Page Load: Reports")]);
    stand_in.set(Mode::RateLimitedOnce("1"));
    let app = TestApp::spawn(config(pull_config(&stand_in))).await;

    assert!(ask(&app, USER).await.is_empty());
    assert_eq!(stand_in.calls(), 1);
    let ready = readyz(&app).await.1;
    assert_eq!(
        ready["autoplay_api"]["rate_limited_for_seconds"], 1.0,
        "{ready}"
    );
    // Paused: nobody is asked until the second has passed.
    assert!(ask(&app, USER).await.is_empty());
    assert_eq!(stand_in.calls(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let records = ask(&app, USER).await;
    assert!(records.contains("Now on: \"Reports\""), "{records}");
    assert_eq!(stand_in.calls(), 2);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_autoplay_pull_skipped_total{outcome=\"rate_limited\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn recently_asked_about_users_are_refreshed_in_the_background_when_enabled() {
    let stand_in = StandIn::start().await;
    stand_in.record(USER, &[("pageview", "Page Load: Dashboard")]);
    let app = TestApp::spawn(config(AutoplayApiConfig {
        freshness: Duration::from_millis(100),
        refresh_interval: Some(Duration::from_millis(150)),
        ..pull_config(&stand_in)
    }))
    .await;
    ask(&app, USER).await;
    stand_in.record(USER, &[("click", "Click Export CSV")]);
    let session_id = SessionId::parse(&format!("autoplay-api:{PRODUCT}:{USER}")).unwrap();
    let store = Arc::clone(&app.state.store);
    eventually(
        Duration::from_secs(5),
        "the refresh stores the new click",
        || {
            let store = Arc::clone(&store);
            let session_id = session_id.clone();
            async move {
                let session = store.session(&session_id, livectx::clock::now()).await;
                session
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.raw_action_iter().any(|a| a.title() == "Click Export CSV"))
            }
        },
    )
    .await;
    app.stop().await;
}
