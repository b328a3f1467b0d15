//! `POST /retrieval` against the real router: Dify's contract, rule by rule.

use crate::helpers::{TestApp, action, batch, metric, raw_exchange, test_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "test-key";
const MARIA: &str = "01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84";
const DEVON: &str = "01983f30-0a9e-7c11-8b6d-2f4e6a8c0b13";

async fn app_with_activity() -> TestApp {
    let mut config = test_config();
    config.api_keys = vec![KEY.into(), "second-key".into()];
    let app = TestApp::spawn(config).await;
    let now = livectx::clock::now();
    app.seed(batch(
        MARIA,
        Some("Maria.Lopez@Example.com"),
        Some("usr_maria"),
        vec![
            action(
                "pageview",
                "Page Load: Consultants",
                "https://app.acme.io/consultants",
                now - 50.0,
            ),
            action(
                "click",
                "Click Notifications bell",
                "https://app.acme.io/consultants",
                now - 40.0,
            ),
            action(
                "pageview",
                "Page Load: Consultant",
                "https://app.acme.io/consultants/:id",
                now - 30.0,
            ),
        ],
    ))
    .await;
    app.seed(batch(
        DEVON,
        Some("devon@northwind.test"),
        Some("usr_devon"),
        vec![
            action(
                "pageview",
                "Page Load: Billing",
                "https://app.acme.io/settings/billing",
                now - 20.0,
            ),
            action(
                "submit",
                "Submit Payment form",
                "https://app.acme.io/settings/billing",
                now - 10.0,
            ),
        ],
    ))
    .await;
    app
}

fn records(body: &Value) -> &Vec<Value> {
    body["records"].as_array().expect("records array")
}

fn all_content(body: &Value) -> String {
    records(body)
        .iter()
        .map(|r| r["content"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn registration_probe_variants_get_empty_records() {
    let app = app_with_activity().await;
    // Older Dify: POST with the key, no body, no content type.
    let response = app
        .http
        .post(app.url("/retrieval"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("server")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("livectx/")
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"records": []})
    );
    // Newer Dify: empty ids.
    let probe = json!({"knowledge_id": "", "query": "", "retrieval_setting": {"top_k": 1, "score_threshold": 0.0}});
    assert_eq!(
        app.post_json("/retrieval", Some(KEY), &probe).await,
        (StatusCode::OK, json!({"records": []}))
    );
    // Without a content type but with a body.
    let response = app
        .http
        .post(app.url("/retrieval"))
        .bearer_auth(KEY)
        .body(format!(r#"{{"knowledge_id": "{MARIA}", "query": "hi"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!records(&response.json::<Value>().await.unwrap()).is_empty());
}

#[tokio::test]
async fn keys_are_checked_with_difys_error_codes() {
    let app = app_with_activity().await;
    let body = json!({"knowledge_id": MARIA, "query": "q"});
    let (status, error) = app.post_json("/retrieval", None, &body).await;
    assert_eq!(
        (status, error["error_code"].as_u64()),
        (StatusCode::FORBIDDEN, Some(1001))
    );
    assert!(error["error_msg"].as_str().unwrap().contains("Bearer"));
    let malformed = app
        .http
        .post(app.url("/retrieval"))
        .header("authorization", "Token abc")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::FORBIDDEN);
    assert_eq!(malformed.json::<Value>().await.unwrap()["error_code"], 1001);
    let (status, error) = app.post_json("/retrieval", Some("wrong"), &body).await;
    assert_eq!(
        (status, error["error_code"].as_u64()),
        (StatusCode::FORBIDDEN, Some(1002))
    );
    assert_eq!(
        app.post_json("/retrieval", Some("second-key"), &body)
            .await
            .0,
        StatusCode::OK
    );
    // A probe with a wrong key must fail too, or Dify would register a wrong key.
    let probe = app
        .http
        .post(app.url("/retrieval"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn knowledge_id_route_resolves_session_email_and_user_id() {
    let app = app_with_activity().await;
    for id in [
        MARIA,
        "maria.lopez@example.com",
        "  MARIA.LOPEZ@example.COM ",
        "usr_maria",
    ] {
        let (status, body) = app
            .retrieve(Some(KEY), id, "where are my notifications?")
            .await;
        assert_eq!(status, StatusCode::OK);
        let content = all_content(&body);
        assert!(
            content.starts_with("Current User Activity\n"),
            "{id}: {content}"
        );
        assert!(content.contains("Consultant"), "{id}");
        assert!(!content.contains("Billing"), "{id}: leaked another session");
    }
    let (_, body) = app.retrieve(Some(KEY), "usr_devon", "help").await;
    assert!(all_content(&body).contains("Billing"));
}

#[tokio::test]
async fn query_first_line_route_and_explicit_keys() {
    let app = app_with_activity().await;
    let (_, body) = app
        .retrieve(
            Some(KEY),
            "acme_prod",
            &format!("{DEVON}\nwhy did my payment fail?"),
        )
        .await;
    assert!(all_content(&body).contains("Payment"), "{body}");
    let (_, body) = app
        .retrieve(
            Some(KEY),
            "realtime-events",
            "email: maria.lopez@example.com\nhelp",
        )
        .await;
    assert!(all_content(&body).contains("Consultant"));
    // Explicit but unknown: decisive, nothing (and never falls through to the knowledge id).
    let (_, body) = app
        .retrieve(Some(KEY), DEVON, "session_id: nope\nhelp")
        .await;
    assert_eq!(body, json!({"records": []}));
    // A first line that is just a question is not an identity: knowledge id decides.
    let (_, body) = app.retrieve(Some(KEY), MARIA, "where are my alerts?").await;
    assert!(all_content(&body).contains("Consultant"));
}

#[tokio::test]
async fn metadata_condition_route_comes_first_and_unresolved_variables_are_absent() {
    let app = app_with_activity().await;
    let request = |value: Value, knowledge_id: &str, query: &str| {
        json!({
            "knowledge_id": knowledge_id, "query": query,
            "retrieval_setting": {"top_k": 10, "score_threshold": 0.0},
            "metadata_condition": {"logical_operator": "and", "conditions": [
                {"name": "session_id", "comparison_operator": "is", "value": value}
            ]},
        })
    };
    let (_, body) = app
        .post_json(
            "/retrieval",
            Some(KEY),
            &request(json!(DEVON), MARIA, "help"),
        )
        .await;
    let content = all_content(&body);
    assert!(
        content.contains("Billing") && !content.contains("Consultant"),
        "{content}"
    );
    // Names as a list (older docs) and `in` with a list.
    let list = json!({"knowledge_id": "acme_prod", "query": "q", "metadata_condition": {"conditions": [
        {"name": ["email"], "comparison_operator": "in", "value": ["devon@northwind.test"]}]}});
    assert!(
        all_content(&app.post_json("/retrieval", Some(KEY), &list).await.1).contains("Billing")
    );
    // Unresolved variable: treated as absent, so the knowledge id decides, and it is counted.
    let (_, body) = app
        .post_json(
            "/retrieval",
            Some(KEY),
            &request(json!("{{session_id}}"), MARIA, "help"),
        )
        .await;
    assert!(all_content(&body).contains("Consultant"));
    assert_eq!(
        metric(
            &app.metrics().await,
            "livectx_identity_rejected_total{reason=\"unresolved_variable\"}"
        ),
        1.0
    );
    // A metadata identity that matches nothing returns nothing.
    let (_, body) = app
        .post_json(
            "/retrieval",
            Some(KEY),
            &request(json!("ghost"), MARIA, "help"),
        )
        .await;
    assert_eq!(body, json!({"records": []}));
}

#[tokio::test]
async fn other_metadata_conditions_filter_records_and_can_match_nothing() {
    let app = app_with_activity().await;
    let filtered = |op: &str, value: Value| {
        json!({"knowledge_id": MARIA, "query": "q", "retrieval_setting": {"top_k": 10, "score_threshold": 0.0},
            "metadata_condition": {"conditions": [{"name": "kind", "comparison_operator": op, "value": value}]}})
    };
    let (_, body) = app
        .post_json("/retrieval", Some(KEY), &filtered("is", json!("actions")))
        .await;
    assert!(!records(&body).is_empty());
    assert!(
        records(&body)
            .iter()
            .all(|r| r["metadata"]["kind"] == "actions")
    );
    let (_, body) = app
        .post_json(
            "/retrieval",
            Some(KEY),
            &filtered("is", json!("nothing-like-this")),
        )
        .await;
    assert_eq!(body, json!({"records": []}));
}

#[tokio::test]
async fn unknown_identities_get_empty_records() {
    let app = app_with_activity().await;
    for id in [
        "unknown",
        "nobody@example.com",
        "{{session_id}}",
        "acme_prod",
    ] {
        let (status, body) = app.retrieve(Some(KEY), id, "help").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"records": []})),
            "{id}"
        );
    }
}

#[tokio::test]
async fn threshold_top_k_order_and_metadata_shape() {
    let app = app_with_activity().await;
    let ask = |top_k: Value, threshold: f64| {
        json!({"knowledge_id": MARIA, "query": "notifications bell",
            "retrieval_setting": {"top_k": top_k, "score_threshold": threshold}, "metadata_condition": null})
    };
    let (_, body) = app
        .post_json("/retrieval", Some(KEY), &ask(json!(null), 0.0))
        .await;
    let recs = records(&body);
    assert!(recs.len() >= 2 && recs.len() <= 5);
    let scores: Vec<f64> = recs.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted by score: {scores:?}"
    );
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert_eq!(recs[0]["metadata"]["kind"], "activity");
    assert_eq!(recs[0]["score"], 1.0);
    let mut ids = std::collections::HashSet::new();
    for record in recs {
        let metadata = record["metadata"]
            .as_object()
            .expect("metadata is an object");
        assert!(ids.insert(metadata["document_id"].as_str().unwrap().to_string()));
        assert_eq!(metadata["document_id"], metadata["doc_id"]);
        assert_eq!(metadata["session_id"], MARIA);
        for reserved in ["score", "title", "dataset_id", "dataset_name"] {
            assert!(!metadata.contains_key(reserved), "{reserved}");
        }
        assert!(metadata.contains_key("start_time") && metadata.contains_key("end_time"));
        assert!(!record["content"].as_str().unwrap().is_empty());
        assert!(record["title"].is_string());
    }
    // The threshold drops everything but the activity record.
    let (_, body) = app
        .post_json("/retrieval", Some(KEY), &ask(json!(5), 0.999))
        .await;
    assert_eq!(records(&body).len(), 1);
    assert_eq!(records(&body)[0]["metadata"]["kind"], "activity");
    // top_k 1.
    let (_, body) = app
        .post_json("/retrieval", Some(KEY), &ask(json!(1), 0.0))
        .await;
    assert_eq!(records(&body).len(), 1);
}

#[tokio::test]
async fn double_slash_and_doubled_paths_are_served_without_redirect() {
    let app = app_with_activity().await;
    for path in ["//retrieval", "/retrieval/retrieval"] {
        let (status, body) = app
            .post_json(
                path,
                Some(KEY),
                &json!({"knowledge_id": MARIA, "query": "q"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!records(&body).is_empty(), "{path}");
    }
}

#[tokio::test]
async fn non_ascii_queries_with_surrogate_pairs_work() {
    let app = app_with_activity().await;
    // Python's json.dumps escapes non-ASCII: "où sont mes notifications 🔔".
    let raw = format!(
        r#"{{"knowledge_id": "{MARIA}", "query": "o\u00f9 sont mes notifications \ud83d\udd14", "retrieval_setting": {{"top_k": 4, "score_threshold": 0.0}}}}"#
    );
    let response = app
        .http
        .post(app.url("/retrieval"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!records(&response.json::<Value>().await.unwrap()).is_empty());
    // A lone surrogate is invalid JSON text: a readable 400, not a crash.
    let response = app
        .http
        .post(app.url("/retrieval"))
        .bearer_auth(KEY)
        .body(r#"{"knowledge_id": "x", "query": "\ud83d"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn garbage_and_oversized_bodies_get_clear_errors() {
    let app = app_with_activity().await;
    for garbage in [
        "{",
        "[1,2,3]",
        "\"just a string\"",
        "{\"knowledge_id\": [1]}",
        "\u{0}\u{1}binary",
    ] {
        let response = app
            .http
            .post(app.url("/retrieval"))
            .bearer_auth(KEY)
            .body(garbage)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{garbage:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_code"], 4000);
        assert!(body["error_msg"].as_str().unwrap().len() > 10);
    }
    let big = format!(
        r#"{{"knowledge_id": "{MARIA}", "query": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let response = app
        .http
        .post(app.url("/retrieval"))
        .bearer_auth(KEY)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 4130);
    let text = app.metrics().await;
    assert_eq!(
        metric(
            &text,
            "livectx_http_requests_total{route=\"/retrieval\",status=\"400\"}"
        ),
        5.0
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = app_with_activity().await;
    let (status, body) = app.get_text("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("error_code"));
    let (status, body) = app.get_text("/retrieval").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains("4050"));
}

/// `POST /retrieval` is served without the router (`api::ApiService`, as the application serves
/// it); every answer it gives must be the router's, byte for byte on the wire but for the clock
/// (`Date` and the digits of the answer's times): the probe, a real answer, refused keys, bad
/// bodies, the rate limit, and the other methods and paths (which it hands to the router).
/// On the wire, because the direct path leaves `Content-Length` to hyper where the router puts
/// it in the header map: the bytes must come out the same.
#[tokio::test]
async fn the_direct_retrieval_path_answers_exactly_as_the_router() {
    let mut config = test_config();
    config.api_keys = vec![KEY.into()];
    // One request per client, then 429: each side below uses its own client address, given
    // as `X-Forwarded-For` (both sides are reached from 127.0.0.1).
    config.rate_limit = 0.001;
    config.rate_limit_burst = Some(1);
    config.trust_forwarded_for = true;
    let app = TestApp::spawn(config).await;
    app.seed(batch(
        MARIA,
        None,
        None,
        vec![action(
            "click",
            "Click Notifications bell",
            "https://app.acme.io/consultants",
            livectx::clock::now() - 5.0,
        )],
    ))
    .await;
    // The router alone, on the same state (so the same rate limiter and metrics).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_addr = listener.local_addr().unwrap();
    let router = livectx::api::router(app.state.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let ask =
        r#"{"knowledge_id": "01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84", "query": "notifications"}"#;
    let nobody = r#"{"knowledge_id": "nobody", "query": "q"}"#;
    let cases: [(&str, &str, Option<&str>, &str); 8] = [
        ("POST", "/retrieval", Some(KEY), ask),
        ("POST", "//retrieval", Some(KEY), ""),
        ("POST", "/retrieval/retrieval", Some(KEY), nobody),
        ("POST", "/retrieval", None, ask),
        ("POST", "/retrieval", Some("wrong"), ask),
        ("POST", "/retrieval", Some(KEY), "{not json"),
        ("GET", "/retrieval", Some(KEY), ""),
        ("POST", "/retrieval/", Some(KEY), ask),
    ];
    let mut statuses = Vec::new();
    for (index, (method, path, key, body)) in cases.into_iter().enumerate() {
        let client = index * 2 + 1;
        // Each side from its own address: once allowed, then over the rate.
        for attempt in 0..2 {
            let sent = |client: usize| {
                let key = key.map_or(String::new(), |key| {
                    format!("authorization: Bearer {key}\r\n")
                });
                format!(
                    "{method} {path} HTTP/1.1\r\nhost: livectx\r\nx-forwarded-for: 10.0.0.{client}\r\n{key}content-length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            let direct = raw_exchange(app.addr, sent(client).as_bytes()).await;
            let routed = raw_exchange(router_addr, sent(client + 1).as_bytes()).await;
            let case = format!("{method} {path} key {key:?} body {body:?}, attempt {attempt}");
            let (head, text) = wire_parts(&direct);
            let (router_head, router_text) = wire_parts(&routed);
            assert_eq!(head, router_head, "{case}");
            assert_eq!(without_digits(text), without_digits(router_text), "{case}");
            let status: u16 = head[0]["HTTP/1.1 ".len()..][..3].parse().unwrap();
            assert_eq!(status == 429, attempt == 1, "{case}");
            // Every answer is sized, never chunked.
            assert!(
                head.iter()
                    .any(|l| l == &format!("content-length: {}", text.len())),
                "{case}: {head:?}"
            );
            statuses.push(status);
        }
    }
    assert_eq!(
        statuses,
        [
            200, 429, 200, 429, 200, 429, 403, 429, 403, 429, 400, 429, 405, 429, 404, 429
        ]
    );
    let metrics = app.metrics().await;
    for (route, status, count) in [
        ("/retrieval", "200", 2.0),
        ("//retrieval", "429", 2.0),
        ("/retrieval/retrieval", "200", 2.0),
    ] {
        let line = format!("livectx_http_requests_total{{route=\"{route}\",status=\"{status}\"}}");
        assert_eq!(metric(&metrics, &line), count, "{line}\n{metrics}");
    }
}

/// A raw HTTP/1.1 response as its head's lines in order (the clock's `date` left out) and its
/// body.
fn wire_parts(response: &str) -> (Vec<&str>, &str) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {response:?}"));
    let lines = head
        .split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect();
    (lines, body)
}

/// `text` with every run of digits as `#`: the two sides answered a few milliseconds apart, so
/// the clock readings in an answer (`generated_at`, "as of ...") may differ, never the rest.
fn without_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('#');
            }
            digits = true;
        } else {
            out.push(c);
            digits = false;
        }
    }
    out
}
