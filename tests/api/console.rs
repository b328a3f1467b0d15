//! The operator console over real HTTP: access rules (off without a key, login, wrong keys,
//! cookie flags, CSRF, log out), security headers, escaping of hostile values, the lookup log's
//! reasons, the chatbot panel matching `/retrieval`, and refused payload samples.

use std::time::Duration;

use crate::helpers::{TestApp, action, batch, test_config};
use livectx::ServeConfig;
use livectx::console::pages::encode;
use livectx::ingest::{Channel, Source};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

const KEY: &str = "console-test-key-0123456789";
const XSS: &str = "<img src=x onerror=alert(1)>";

fn config() -> ServeConfig {
    ServeConfig {
        console_key: Some(KEY.to_string()),
        ..test_config()
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(set_cookie: &[String], name: &str) -> Option<String> {
    set_cookie
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c[name.len() + 1..].split(';').next().unwrap().to_string())
}

/// The hidden `csrf` field of a page.
fn csrf_field(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

struct Operator {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Operator {
    /// Open the login form; returns (pre-login csrf cookie value, form field value).
    async fn login_form(http: &reqwest::Client, base: &str) -> (String, String) {
        let response = http.get(format!("{base}/console")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let cookies = set_cookies(response.headers());
        let cookie = cookie_value(&cookies, "livectx_console_csrf").expect("csrf cookie");
        let html = response.text().await.unwrap();
        (cookie, csrf_field(&html))
    }

    async fn post_login(
        http: &reqwest::Client,
        base: &str,
        cookie: &str,
        key: &str,
        csrf: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = http
            .post(format!("{base}/console/login"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(COOKIE, format!("livectx_console_csrf={cookie}"))
            .body(format!("key={}&csrf={}", encode(key), encode(csrf)));
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn log_in(app: &TestApp) -> Self {
        let http = no_redirects();
        let base = app.url("");
        let (cookie, csrf) = Self::login_form(&http, &base).await;
        let response = Self::post_login(&http, &base, &cookie, KEY, &csrf, &[]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookies = set_cookies(response.headers());
        let token = cookie_value(&cookies, "livectx_console").expect("session cookie");
        Self {
            http,
            base,
            cookie: format!("livectx_console={token}"),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }
}

#[tokio::test]
async fn without_a_key_the_console_does_not_exist() {
    let app = TestApp::spawn(test_config()).await;
    for path in ["/console", "/console/lookups", "/console/sessions/s1"] {
        let (status, _) = app.get_text(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let login = reqwest::Client::new()
        .post(app.url("/console/login"))
        .body("key=x")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn login_wrong_keys_cookie_flags_csrf_and_logout() {
    let app = TestApp::spawn(config()).await;
    let http = no_redirects();
    let base = app.url("");

    // The login form, with every security header.
    let response = http.get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    let csrf_cookie = set_cookies(&headers).join("\n");
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));
    let html = response.text().await.unwrap();
    assert!(html.contains("type=\"password\""), "{html}");
    assert!(!html.contains("<script>"), "no inline script");
    let cookie = cookie_value(&set_cookies(&headers), "livectx_console_csrf").unwrap();
    let csrf = csrf_field(&html);

    // No CSRF token, or another one: refused before the key is even checked.
    let forged = Operator::post_login(&http, &base, &cookie, KEY, "forged", &[]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        set_cookies(forged.headers())
            .iter()
            .all(|c| !c.starts_with("livectx_console="))
    );

    // A wrong key is a 401 and sets no login cookie.
    let wrong = Operator::post_login(&http, &base, &cookie, "not-the-key", &csrf, &[]).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookies(wrong.headers())
            .iter()
            .all(|c| !c.starts_with("livectx_console="))
    );
    assert!(wrong.text().await.unwrap().contains("Wrong key"));

    // The right key: a redirect without the key, and a random token in an HttpOnly,
    // SameSite=Strict cookie, Secure behind an HTTPS proxy.
    let ok = Operator::post_login(
        &http,
        &base,
        &cookie,
        KEY,
        &csrf,
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()[LOCATION], "/console");
    let cookies = set_cookies(ok.headers());
    let session = cookies
        .iter()
        .find(|c| c.starts_with("livectx_console="))
        .expect("login cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(session.contains(flag), "{flag} in {session}");
    }
    assert!(!session.contains(KEY), "the key is not the cookie");
    let plain = Operator::post_login(&http, &base, &cookie, KEY, &csrf, &[]).await;
    let plain_cookie = set_cookies(plain.headers()).join("\n");
    assert!(
        !plain_cookie.contains("Secure"),
        "plain HTTP: {plain_cookie}"
    );

    let operator = Operator::log_in(&app).await;
    let (status, _, page) = operator.get("/console").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Live sessions"), "{page}");

    // Fragments need a login.
    let rows = http
        .get(format!("{base}/console/sessions/rows"))
        .send()
        .await
        .unwrap();
    assert_eq!(rows.status(), StatusCode::UNAUTHORIZED);

    // Log out needs the page's CSRF token; after it, the cookie opens nothing.
    let logout = |body: String| {
        http.post(format!("{base}/console/logout"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(COOKIE, &operator.cookie)
            .body(body)
            .send()
    };
    assert_eq!(
        logout("csrf=forged".into()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let out = logout(format!("csrf={}", csrf_field(&page))).await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        set_cookies(out.headers())
            .iter()
            .any(|c| c.starts_with("livectx_console=;") && c.contains("Max-Age=0"))
    );
    let (status, _, after) = operator.get("/console").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        after.contains("type=\"password\""),
        "back to the login form"
    );
    app.stop().await;
}

/// The console's routes are under the same guard as the API's: counted by route and status,
/// stamped with the `Server` header, and held to the rate limit.
#[tokio::test]
async fn console_requests_are_counted_stamped_and_rate_limited() {
    let app = TestApp::spawn(ServeConfig {
        rate_limit: 1.0,
        rate_limit_burst: Some(3),
        ..config()
    })
    .await;
    let http = no_redirects();
    let first = http.get(app.url("/console")).send().await.unwrap();
    let status = first.status();
    assert!(status.is_success(), "{status}");
    assert!(
        first
            .headers()
            .get("server")
            .is_some_and(|v| v.to_str().unwrap().starts_with("livectx/")),
        "{:?}",
        first.headers()
    );
    let mut limited = None;
    for _ in 0..10 {
        let response = http.get(app.url("/console")).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the console is held to the rate limit");
    assert!(limited.headers().contains_key("retry-after"));
    let metrics = app.metrics().await;
    let counted = format!(
        "livectx_http_requests_total{{route=\"/console\",status=\"{}\"}}",
        status.as_u16()
    );
    assert!(
        metrics.contains(&counted),
        "{counted} missing in:\n{metrics}"
    );
    assert!(
        metrics.contains("livectx_http_requests_total{route=\"/console\",status=\"429\"}"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_keys_are_rate_limited() {
    let app = TestApp::spawn(config()).await;
    let http = no_redirects();
    let base = app.url("");
    let (cookie, csrf) = Operator::login_form(&http, &base).await;
    for _ in 0..5 {
        let wrong = Operator::post_login(&http, &base, &cookie, "guess", &csrf, &[]).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = Operator::post_login(&http, &base, &cookie, KEY, &csrf, &[]).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn hostile_titles_are_shown_as_text_and_assets_are_cached() {
    let app = TestApp::spawn(config()).await;
    let now = livectx::clock::now();
    app.seed(batch(
        "xss_session",
        Some("eve@example.com"),
        None,
        vec![
            action("pageview", XSS, "https://app.acme.io/<script>", now - 5.0),
            action(
                "click",
                &format!("Click {XSS}"),
                "https://app.acme.io/<script>",
                now - 2.0,
            ),
        ],
    ))
    .await;
    let operator = Operator::log_in(&app).await;
    for path in [
        "/console",
        "/console/sessions/xss_session?question=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    ] {
        let (status, _, html) = operator.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}: {html}"
        );
        assert!(!html.contains("<img"), "{path}");
        assert!(!html.contains("<script>"), "{path}");
    }
    let (_, _, html) = operator.get("/console").await;
    assert!(
        html.contains("e***@example.com"),
        "emails are masked: {html}"
    );
    assert!(!html.contains("eve@example.com"));

    let css = html
        .split("href=\"")
        .find_map(|part| part.split('"').next().filter(|h| h.ends_with(".css")))
        .unwrap()
        .to_string();
    let (status, headers, body) = operator.get(&css).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(body.contains("table.data"));
    let (status, _, _) = operator.get("/console/assets/console-0000.css").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn search_finds_sessions_by_id_email_and_user_id() {
    let app = TestApp::spawn(config()).await;
    let now = livectx::clock::now();
    app.seed(batch(
        "sess_maria",
        Some("maria@example.com"),
        Some("usr_maria"),
        vec![action("click", "Export", "/billing", now - 3.0)],
    ))
    .await;
    app.seed(batch(
        "sess_devon",
        Some("devon@example.com"),
        Some("usr_devon"),
        vec![action("click", "Pay", "/checkout", now - 1.0)],
    ))
    .await;
    let operator = Operator::log_in(&app).await;
    let (_, _, all) = operator.get("/console/sessions/rows").await;
    let devon = all.find("sess_devon").expect("devon listed");
    let maria = all.find("sess_maria").expect("maria listed");
    assert!(devon < maria, "newest first");
    for query in [
        "maria@example.com",
        "MARIA@example.com",
        "usr_maria",
        "sess_ma",
    ] {
        let (status, _, rows) = operator
            .get(&format!("/console/sessions/rows?q={}", encode(query)))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            rows.contains("sess_maria") && !rows.contains("sess_devon"),
            "{query}: {rows}"
        );
    }
    // Masked identities cannot be searched by a part of them.
    let (_, _, rows) = operator.get("/console/sessions/rows?q=maria%40").await;
    assert!(!rows.contains("sess_maria"), "{rows}");
    app.stop().await;
}

#[tokio::test]
async fn lookups_say_how_each_identifier_was_read_and_why_it_missed() {
    let app = TestApp::spawn(config()).await;
    let now = livectx::clock::now();
    app.seed(batch(
        "sess_priya",
        Some("priya@example.com"),
        None,
        vec![action(
            "click",
            "Notifications bell",
            "/consultants",
            now - 1.0,
        )],
    ))
    .await;

    app.retrieve(None, "sess_priya", "where are my alerts?")
        .await;
    app.retrieve(None, "{{session_id}}", "hi").await;
    app.retrieve(None, "sess_nobody", "hi").await;
    app.post_json(
        "/retrieval",
        None,
        &json!({"knowledge_id": "kb", "query": "hi", "metadata_condition": {"conditions": [{"name": "email", "comparison_operator": "is", "value": "late@example.com"}]}}),
    )
    .await;
    let rest = app
        .http
        .get(app.url("/v1/context?user_id=usr_ghost"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::OK);

    let log = app.state.diagnostics.lookups.newest(10);
    let misses: Vec<Option<&str>> = log.iter().map(|e| e.miss.map(|m| m.as_str())).collect();
    assert_eq!(
        misses,
        [
            Some("no activity yet"),
            Some("no activity yet"),
            Some("unknown id"),
            Some("unfilled {{variable}}"),
            None,
        ]
    );
    assert_eq!(log[1].via, Some("metadata"));
    assert!(
        log[1].metadata_condition.contains("late@example.com"),
        "{:?}",
        log[1]
    );
    assert_eq!(log[4].session.as_deref(), Some("sess_priya"));
    assert_eq!(log[4].via, Some("knowledge_id"));
    assert!(log[4].records >= 1);
    assert_eq!(log[0].channel.as_str(), "rest");

    let operator = Operator::log_in(&app).await;
    let (_, _, page) = operator.get("/console/lookups").await;
    assert!(page.contains("unfilled {{variable}}"), "{page}");
    assert!(
        page.contains("l***@example.com"),
        "masked in the log: {page}"
    );
    assert!(page.contains("/console/sessions/sess_priya"));

    // A matched lookup opens its session; a missed one explains itself and, once the
    // person's first event arrives, names the session.
    let matched = log[4].seq;
    let response = operator
        .http
        .get(format!("{}/console/lookups/{matched}", operator.base))
        .header(COOKIE, &operator.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/console/sessions/sess_priya");
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.seed(batch(
        "sess_late",
        Some("late@example.com"),
        None,
        vec![action("click", "Hello", "/", livectx::clock::now())],
    ))
    .await;
    let (status, _, detail) = operator
        .get(&format!("/console/lookups/{}", log[1].seq))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(detail.contains("no activity yet"), "{detail}");
    assert!(detail.contains("/console/sessions/sess_late"), "{detail}");
    assert!(detail.contains("after this lookup"), "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn the_chatbot_panel_shows_what_retrieval_returns() {
    let app = TestApp::spawn(config()).await;
    let now = livectx::clock::now();
    let titles = [
        "Open Consultants",
        "Open Notifications settings",
        "Click Export CSV",
    ];
    for (i, title) in titles.iter().enumerate() {
        app.seed(batch(
            "sess_panel",
            None,
            Some("usr_panel"),
            vec![action(
                "click",
                title,
                "/consultants",
                now - 10.0 + i as f64,
            )],
        ))
        .await;
    }
    let question = "where are my notifications?";
    let (status, body) = app.post_json(
        "/retrieval",
        None,
        &json!({"knowledge_id": "sess_panel", "query": question, "retrieval_setting": {"top_k": 3, "score_threshold": 0.5}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let records = body["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 3);

    let operator = Operator::log_in(&app).await;
    let (status, _, page) = operator
        .get(&format!(
            "/console/sessions/sess_panel?question={}&top_k=3&threshold=0.5",
            encode(question)
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!("{} record(s)", records.len())),
        "{page}"
    );
    let mut position = 0;
    for record in &records {
        let score = format!("{:.4}", record["score"].as_f64().unwrap());
        let at = page[position..]
            .find(&score)
            .unwrap_or_else(|| panic!("score {score} in order"));
        position += at;
        let title = record["title"].as_str().unwrap();
        assert!(page.contains(title), "{title}");
    }
    app.stop().await;
}

#[tokio::test]
async fn refused_payloads_show_redacted_examples() {
    let app = TestApp::spawn(config()).await;
    let payload = json!({"type": "actions", "product_id": "acme_prod", "email": "anon@example.com", "actions": [{"type": "click", "title": "Buy"}]});
    let outcome = app
        .ingestor
        .ingest_json(
            Source::Sse,
            payload.to_string().as_bytes(),
            Channel::default(),
        )
        .await;
    assert!(matches!(
        outcome,
        livectx::ingest::Ingested::Refused {
            reason: "no_session"
        }
    ));
    let operator = Operator::log_in(&app).await;
    let (status, _, page) = operator.get("/console/sources").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("sse: no_session"), "{page}");
    assert!(page.contains("acme_prod"), "{page}");
    assert!(!page.contains("anon@example.com"), "{page}");
    assert!(page.contains("Summarizer"));
    app.stop().await;
}
