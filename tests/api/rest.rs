//! The REST context API and `/openapi.json` against the real router: Autoplay's pull API
//! (`/users/{product_id}/{user_id}/live-activity`), `/v1/context`, and the OpenAPI document.

use std::collections::BTreeSet;

use crate::helpers::faulty_store::FaultyStore;
use crate::helpers::{TestApp, action, batch, metric, push_webhook, test_config};
use livectx::{Overrides, ServeConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "rest-key";
const MCP_KEY: &str = "mcp-only-key";
const WEBHOOK_SECRET: &str = "test-secret";
const MARIA: &str = "01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84";
const ACTIONS_BODY: &[u8] = include_bytes!("../fixtures/samples/webhook_actions_body.json");
const SUMMARY_BODY: &[u8] = include_bytes!("../fixtures/samples/webhook_summary_body.json");

/// The fields of an action in Autoplay's wire format (autoplay-wire.md §2 and §5).
const ACTION_FIELDS: [&str; 12] = [
    "index",
    "type",
    "title",
    "description",
    "timestamp_start",
    "timestamp_end",
    "raw_url",
    "canonical_url",
    "session_id",
    "user_id",
    "email",
    "conversation_id",
];

fn config() -> ServeConfig {
    ServeConfig {
        api_keys: vec![KEY.into()],
        mcp_keys: vec![MCP_KEY.into()],
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..test_config()
    }
}

/// Deliver a body through the real webhook receiver, signed like the connector signs it.
/// GET `path` with an optional key: (status, `WWW-Authenticate`, JSON body).
async fn get(app: &TestApp, path: &str, key: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let mut request = app.http.get(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, challenge, body)
}

fn live_path(product: &str, user: &str) -> String {
    format!("/users/{product}/{user}/live-activity")
}

fn titles(body: &Value) -> Vec<&str> {
    body["actions"]
        .as_array()
        .expect("actions array")
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn live_activity_answers_in_autoplays_action_format_oldest_first() {
    let app = TestApp::spawn(config()).await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    let sent: Value = serde_json::from_slice(ACTIONS_BODY).unwrap();

    let (status, _, body) = get(&app, &live_path("acme_prod", MARIA), Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["actions"]
    );
    let actions = body["actions"].as_array().unwrap();
    let expected = sent["actions"].as_array().unwrap();
    assert_eq!(actions.len(), expected.len());
    for (got, sent) in actions.iter().zip(expected) {
        let keys: BTreeSet<&str> = got
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(ACTION_FIELDS), "{got}");
        // Every field the connector sent comes back unchanged, with its JSON type.
        for (field, value) in sent.as_object().unwrap() {
            assert_eq!(&got[field], value, "{field} of {got}");
        }
        assert!(
            got["index"].is_i64() && got["timestamp_start"].is_f64(),
            "{got}"
        );
        assert_eq!(got["conversation_id"], Value::Null, "not sent, so null");
    }

    // The email and the user id name the same session.
    for user in ["maria.lopez@example.com", "usr_7Qk2mN9x"] {
        let (status, _, by_person) = get(&app, &live_path("acme_prod", user), Some(KEY)).await;
        assert_eq!(status, 200);
        assert_eq!(by_person, body, "{user}");
    }

    // Summarised actions stay listed until the store lets go of them.
    push_webhook(&app, WEBHOOK_SECRET, SUMMARY_BODY).await;
    let (_, _, after_summary) = get(&app, &live_path("acme_prod", MARIA), Some(KEY)).await;
    assert_eq!(after_summary, body);
    app.stop().await;
}

#[tokio::test]
async fn live_activity_limit_keeps_the_newest_actions() {
    let app = TestApp::spawn(config()).await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    let path = live_path("acme_prod", MARIA);

    let (status, _, body) = get(&app, &format!("{path}?limit=2"), Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(
        titles(&body),
        ["Click Cancel button", "Page Load: Project 4812"]
    );
    let (status, _, body) = get(&app, &format!("{path}?limit=100000"), Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(titles(&body).len(), 4);

    for bad in ["0", "-3", "ten", ""] {
        let (status, _, body) = get(&app, &format!("{path}?limit={bad}"), Some(KEY)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error_code"], 4000);
        assert!(
            body["error_msg"]
                .as_str()
                .unwrap()
                .contains("limit must be")
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn live_activity_default_limit_is_50_and_the_cap_is_500() {
    let app = TestApp::spawn(ServeConfig {
        max_chunks: 1000,
        ..config()
    })
    .await;
    let now = livectx::clock::now();
    for chunk in 0..6 {
        let actions = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                action(
                    "click",
                    &format!("A{n}"),
                    "https://app.acme.io/x",
                    now - 1000.0 + n as f64,
                )
            })
            .collect();
        app.seed(batch("s-long", None, Some("u-long"), actions))
            .await;
    }
    let path = live_path("acme_prod", "s-long");
    let (_, _, body) = get(&app, &path, Some(KEY)).await;
    let listed = titles(&body);
    assert_eq!(listed.len(), 50);
    assert_eq!((listed[0], listed[49]), ("A550", "A599"));
    let (_, _, body) = get(&app, &format!("{path}?limit=501"), Some(KEY)).await;
    let listed = titles(&body);
    assert_eq!(listed.len(), 500);
    assert_eq!(listed[0], "A100");
    app.stop().await;
}

#[tokio::test]
async fn per_action_identity_is_kept_and_the_rest_comes_from_the_session() {
    let app = TestApp::spawn(config()).await;
    let body = json!({
        "type": "actions", "product_id": "acme_prod", "session_id": "s-shared",
        "user_id": "u-1", "email": "first@example.com", "conversation_id": "conv-1",
        "actions": [
            {"index": 0, "type": "click", "title": "Mine", "description": "d", "canonical_url": "/a"},
            {"index": 1, "type": "click", "title": "Theirs", "description": "d", "canonical_url": "/a",
             "raw_url": "/a?tab=2", "email": "second@example.com", "conversation_id": "conv-2"},
        ],
        "count": 2, "forwarded_at": 1_785_333_663.0,
    });
    push_webhook(&app, WEBHOOK_SECRET, body.to_string().as_bytes()).await;
    let (status, _, body) = get(&app, &live_path("acme_prod", "s-shared"), Some(KEY)).await;
    assert_eq!(status, 200);
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions[0]["email"], "first@example.com");
    assert_eq!(actions[0]["conversation_id"], "conv-1");
    assert_eq!(
        actions[0]["raw_url"], "/a",
        "raw_url falls back to the canonical URL"
    );
    assert_eq!(actions[0]["timestamp_start"], Value::Null);
    assert_eq!(actions[1]["email"], "second@example.com");
    assert_eq!(actions[1]["conversation_id"], "conv-2");
    assert_eq!(actions[1]["user_id"], "u-1");
    assert_eq!(actions[1]["raw_url"], "/a?tab=2");
    app.stop().await;
}

#[tokio::test]
async fn live_activity_statuses() {
    let app = TestApp::spawn(config()).await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    let path = live_path("acme_prod", MARIA);

    // 401: no key, a wrong key, and the MCP-only key; each with a challenge and a JSON body.
    for (key, challenge) in [
        (None, r#"Bearer realm="livectx""#),
        (
            Some("wrong"),
            r#"Bearer realm="livectx", error="invalid_token""#,
        ),
        (
            Some(MCP_KEY),
            r#"Bearer realm="livectx", error="invalid_token""#,
        ),
    ] {
        let (status, www, body) = get(&app, &path, key).await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(www.as_deref(), Some(challenge));
        assert_eq!(body["error_code"], 4011);
        assert!(
            body["error_msg"]
                .as_str()
                .unwrap()
                .contains("LIVECTX_API_KEY")
        );
    }

    // 200 with no actions: unknown person, unknown product.
    for path in [
        live_path("acme_prod", "nobody@example.com"),
        live_path("acme_prod", "01980000-0000-7000-8000-000000000000"),
        live_path("no_such_product", "nobody"),
    ] {
        let (status, _, body) = get(&app, &path, Some(KEY)).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"actions": []})),
            "{path}"
        );
    }

    // 403: the session belongs to another product.
    let (status, _, body) = get(&app, &live_path("other_prod", MARIA), Some(KEY)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_code"], 4030);

    // A person with sessions in two products gets the one in the product asked for.
    let now = livectx::clock::now();
    let mut elsewhere = batch(
        "s-other-product",
        Some("maria.lopez@example.com"),
        None,
        vec![action("click", "Elsewhere", "https://other.io/", now)],
    );
    elsewhere.product_id = Some("other_prod".into());
    app.seed(elsewhere).await;
    let (status, _, body) = get(
        &app,
        &live_path("acme_prod", "maria.lopez@example.com"),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["actions"][0]["session_id"], MARIA);
    let (_, _, body) = get(
        &app,
        &live_path("other_prod", "maria.lopez@example.com"),
        Some(KEY),
    )
    .await;
    assert_eq!(titles(&body), ["Elsewhere"]);

    let metrics = app.metrics().await;
    for (status, at_least) in [(200, 4.0), (401, 3.0), (403, 1.0)] {
        let line = format!(
            "livectx_http_requests_total{{route=\"{}\",status=\"{status}\"}}",
            livectx::api::rest::LIVE_ACTIVITY_PATH
        );
        assert!(metric(&metrics, &line) >= at_least, "{line}: {metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn refused_identifiers_are_403_and_unfilled_variables_400() {
    let app = TestApp::spawn(ServeConfig {
        no_email_lookup: true,
        ..config()
    })
    .await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    let (status, _, body) = get(
        &app,
        &live_path("acme_prod", "maria.lopez@example.com"),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error_code"], 4031);
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("email lookups are disabled")
    );
    let (status, _, body) = get(&app, "/v1/context?email=maria.lopez@example.com", Some(KEY)).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::FORBIDDEN, json!(4031))
    );

    let (status, _, body) = get(&app, &live_path("acme_prod", "{{user_id}}"), Some(KEY)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("unresolved template variable")
    );
    let (status, _, _) = get(&app, "/v1/context?user_id=%7B%7Buser_id%7D%7D", Some(KEY)).await;
    assert_eq!(status, 400);

    // The session id still works.
    let (status, _, body) = get(&app, &live_path("acme_prod", MARIA), Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(titles(&body).len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn context_returns_the_retrieval_records_and_prompt_text() {
    let app = TestApp::spawn(config()).await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    push_webhook(&app, WEBHOOK_SECRET, SUMMARY_BODY).await;

    let (status, _, body) = get(
        &app,
        &format!("/v1/context?session_id={MARIA}&query=teammate&top_k=10"),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().unwrap();
    assert_eq!(records[0]["metadata"]["kind"], "activity");
    assert!(records.iter().any(|r| r["metadata"]["kind"] == "summary"));
    let joined: Vec<&str> = records
        .iter()
        .map(|r| r["content"].as_str().unwrap())
        .collect();
    assert_eq!(body["text"], joined.join("\n"));
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("Current User Activity")
    );

    // The same records /retrieval gives for the same person and question.
    let (status, retrieved) = app
        .retrieve(
            Some(KEY),
            "acme_prod",
            &format!("session_id: {MARIA}\nteammate"),
        )
        .await;
    assert_eq!(status, 200);
    let ids = |records: &Value| -> Vec<(String, f64)> {
        records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metadata"]["document_id"].as_str().unwrap().to_string(),
                    r["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&body["records"]), ids(&retrieved["records"]));

    // By email and user id too; top_k cuts, defaulting to 5 like /retrieval.
    for query in [
        "email=Maria.Lopez%40example.com&top_k=1",
        "user_id=usr_7Qk2mN9x&top_k=1",
    ] {
        let (status, _, body) = get(&app, &format!("/v1/context?{query}"), Some(KEY)).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(body["records"].as_array().unwrap().len(), 1);
        assert_eq!(body["records"][0]["metadata"]["session_id"], MARIA);
    }
    // An empty parameter (a template variable left blank) counts as absent.
    let (status, _, _) = get(
        &app,
        &format!("/v1/context?email=&session_id={MARIA}"),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn context_statuses() {
    let app = TestApp::spawn(config()).await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;

    let (status, www, body) = get(&app, &format!("/v1/context?session_id={MARIA}"), None).await;
    assert_eq!(status, 401);
    assert!(www.is_some());
    assert_eq!(body["error_code"], 4011);
    let (status, _, _) = get(
        &app,
        &format!("/v1/context?session_id={MARIA}"),
        Some(MCP_KEY),
    )
    .await;
    assert_eq!(status, 401);

    for (query, needle) in [
        ("", "exactly one of session_id, email or user_id"),
        ("session_id=&email=", "exactly one"),
        ("query=hello", "exactly one"),
        ("session_id=a&email=b%40c.d", "not session_id and email"),
        ("session_id=a&top_k=many", "top_k must be"),
        ("session_id=a&top_k=0", "top_k must be"),
    ] {
        let (status, _, body) = get(&app, &format!("/v1/context?{query}"), Some(KEY)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error_code"], 4000);
        let message = body["error_msg"].as_str().unwrap();
        assert!(message.contains(needle), "{query}: {message}");
    }

    let (status, _, body) = get(&app, "/v1/context?user_id=nobody", Some(KEY)).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"records": [], "text": ""}))
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A storage backend that is down: the REST API answers 503, never an empty success.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_store_outage_is_a_503_not_an_empty_answer() {
    let app = TestApp::spawn_with(
        config(),
        Overrides {
            store: Some(FaultyStore::down(
                livectx::app::store_config(&test_config()),
            )),
            ..Overrides::default()
        },
    )
    .await;
    for path in [
        live_path("acme_prod", MARIA),
        format!("/v1/context?session_id={MARIA}"),
    ] {
        let (status, _, body) = get(&app, &path, Some(KEY)).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["error_code"], 5030);
    }
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "livectx_store_errors_total{op=\"rest\"}"),
        2.0
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// /openapi.json
// ---------------------------------------------------------------------------------------------

/// Every route the router serves, as OpenAPI paths.
const SERVED: [(&str, &str); 9] = [
    ("post", "/retrieval"),
    ("get", "/users/{product_id}/{user_id}/live-activity"),
    ("get", "/v1/context"),
    ("post", "/mcp"),
    ("post", "/webhooks/autoplay"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

fn operations(document: &Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes_the_router_serves() {
    let app = TestApp::spawn(config()).await;
    let (status, _, document) = get(&app, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(document["info"]["title"], "livectx");
    assert_eq!(
        document["servers"],
        json!([{"url": format!("http://{}", app.addr)}])
    );
    let expected: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&document), expected);

    // Each documented operation is a real route: never the "no route" fallback.
    for (method, path) in &expected {
        let url = app.url(
            &path
                .replace("{product_id}", "acme_prod")
                .replace("{user_id}", "nobody"),
        );
        let response = match method.as_str() {
            "get" => app.http.get(url),
            "post" => app.http.post(url).body("{}"),
            other => panic!("unexpected method {other}"),
        }
        .send()
        .await
        .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status != 404 && status != 405 && body["error_code"] != 4040,
            "{method} {path}: {status} {body}"
        );
    }

    // Near misses get a hint instead of a bare 404.
    for (path, hint) in [
        ("/mcp/", "exactly /mcp"),
        ("/users/acme_prod/u1", "live-activity"),
    ] {
        let (status, _, body) = get(&app, path, Some(KEY)).await;
        assert_eq!(status, 404);
        assert!(body["error_msg"].as_str().unwrap().contains(hint), "{body}");
    }

    // Referenced schemas exist, and the security scheme the operations name is declared.
    let text = document.to_string();
    for schema in [
        "LiveAction",
        "LiveActivityResponse",
        "ContextResponse",
        "Record",
        "ErrorBody",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    assert!(text.contains("#/components/schemas/LiveActivityResponse"));
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let action = &document["components"]["schemas"]["LiveAction"]["properties"];
    let documented: BTreeSet<&str> = action
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented, BTreeSet::from(ACTION_FIELDS));
    app.stop().await;
}

#[tokio::test]
async fn openapi_fits_the_server_it_describes() {
    let app = TestApp::spawn(test_config()).await;
    // No webhook secret: no webhook route, in the router or in the document.
    let (_, _, document) = get(&app, "/openapi.json", None).await;
    assert!(document["paths"].get("/webhooks/autoplay").is_none());
    let (status, _, _) = get(&app, "/webhooks/autoplay", None).await;
    assert_eq!(status, 404);

    // Behind a proxy: the forwarded scheme and host.
    let response = app
        .http
        .get(app.url("/openapi.json?tag=context"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "ctx.example.com")
        .send()
        .await
        .unwrap();
    let document: Value = response.json().await.unwrap();
    assert_eq!(
        document["servers"],
        json!([{"url": "https://ctx.example.com"}])
    );
    assert_eq!(
        operations(&document),
        BTreeSet::from([
            (
                "get".to_string(),
                "/users/{product_id}/{user_id}/live-activity".to_string()
            ),
            ("get".to_string(), "/v1/context".to_string()),
        ])
    );
    app.stop().await;

    let app = TestApp::spawn(ServeConfig {
        public_url: Some("https://livectx.example.com/".into()),
        ..test_config()
    })
    .await;
    let (_, _, document) = get(&app, "/openapi.json", None).await;
    assert_eq!(
        document["servers"],
        json!([{"url": "https://livectx.example.com"}])
    );
    app.stop().await;
}
