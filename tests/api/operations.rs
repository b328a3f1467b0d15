//! Running it in production: readiness, metrics, graceful shutdown, durable state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::redis_env::free_port;
use crate::helpers::{
    Connection, FakeConnector, StreamEnd, TestApp, actions_payload, eventually, metric, sse_frame,
    test_config,
};
use bytes::Bytes;
use livectx::ingest::webhook::sign;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn readiness_flips_when_the_stream_drops_and_recovers() {
    let first = vec![
        Bytes::from_static(b"retry: 100\n\n"),
        sse_frame(&actions_payload(Some("s1"), None, &["a"], 1.0)),
    ];
    let mut script = vec![Connection::Stream {
        chunks: first,
        end: StreamEnd::Close,
    }];
    script.extend(std::iter::repeat_n(Connection::Status(503), 3));
    let connector = FakeConnector::start(script).await;
    let mut config = test_config();
    config.stream_urls = vec![connector.url("acme_prod")];
    let app = TestApp::spawn(config).await;
    let ready = |app: &TestApp| {
        let url = app.url("/readyz");
        let http = app.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    // Down: the stream closed, and the next attempts answer 503.
    eventually(Duration::from_secs(10), "stream marked down", || async {
        connector.connections() >= 2
    })
    .await;
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["streams"][0]["connected"], false);
    assert!(body["streams"][0]["reconnects"].as_u64().unwrap() >= 1);
    // Up again once a frame arrives on a new connection.
    eventually(Duration::from_secs(20), "live connection", || async {
        connector.connections() >= 5
    })
    .await;
    connector.push_json(&actions_payload(Some("s1"), None, &["b"], 2.0));
    eventually(Duration::from_secs(10), "ready again", || async {
        ready(&app).await.0 == StatusCode::OK
    })
    .await;
    let (_, body) = ready(&app).await;
    assert_eq!(body["streams"][0]["connected"], true);
    assert!(
        body["streams"][0]["last_frame_age_seconds"]
            .as_f64()
            .unwrap()
            < 60.0
    );
    assert_eq!(body["store"]["sessions"], 1);
    assert_eq!(body["summarizer"]["engine"], "builtin");
    let (status, health) = app.get_text("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert!(health.contains("\"ok\""));
    app.stop().await;
}

/// A strict reading of the Prometheus text format: every line is a comment, blank, or
/// `name{label="value",...} number`.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty()
            || line.starts_with("# HELP ")
            || line.starts_with("# TYPE ")
            || line == "# EOF"
        {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && name.starts_with("livectx_"),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels: {line}"
            );
        }
        samples.push((series.to_string(), value));
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_count_what_happened() {
    let mut config = test_config();
    config.webhook_secret = Some("s".into());
    let app = TestApp::spawn(config).await;
    for i in 0..3 {
        let body = serde_json::to_vec(&actions_payload(Some(&format!("m{i}")), None, &["x"], 1.0))
            .unwrap();
        let response = app
            .http
            .post(app.url("/webhooks/autoplay"))
            .header("x-connector-signature", sign("s", &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    app.retrieve(None, "m1", "q").await;
    app.retrieve(None, "nobody", "q").await;
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let samples = parse_exposition(&text);
    assert!(samples.len() > 20);
    assert_eq!(
        metric(
            &text,
            "livectx_payloads_total{source=\"webhook\",payload_type=\"actions\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(&text, "livectx_webhook_deliveries_total{outcome=\"ok\"}"),
        3.0
    );
    assert_eq!(metric(&text, "livectx_sessions_created_total"), 3.0);
    assert_eq!(metric(&text, "livectx_sessions"), 3.0);
    assert_eq!(metric(&text, "livectx_chunks"), 3.0);
    assert_eq!(
        metric(
            &text,
            "livectx_http_requests_total{route=\"/retrieval\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "livectx_identity_lookups_total{via=\"knowledge_id\",result=\"found\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "livectx_http_request_duration_seconds_count{route=\"/retrieval\"}"
        ),
        2.0
    );
    app.stop().await;
}

// ---- the real binary: signals and durable state -----------------------------------------

struct Server {
    child: Child,
    port: u16,
}

fn start_server(data_dir: &Path, port: u16, snapshot: &str) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_livectx"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--webhook-secret",
            "s",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--snapshot-interval", snapshot])
        .env("RUST_LOG", "warn")
        .env_remove("AUTOPLAY_STREAM_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("livectx starts");
    Server { child, port }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(15), "server up", || async {
            http.get(self.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    async fn push(&self, session: &str, title: &str) {
        let body = serde_json::to_vec(&actions_payload(
            Some(session),
            None,
            &[title],
            livectx::clock::now(),
        ))
        .unwrap();
        let response = reqwest::Client::new()
            .post(self.url("/webhooks/autoplay"))
            .header("x-connector-signature", sign("s", &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn has(&self, session: &str, title: &str) -> bool {
        let response = reqwest::Client::new()
            .post(self.url("/retrieval"))
            .json(&serde_json::json!({"knowledge_id": session, "query": "q", "retrieval_setting": {"top_k": 50}}))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap().contains(title)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("livectx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn sigterm_exits_zero_and_a_restart_has_the_same_sessions() {
    let dir = temp_dir("sigterm");
    let port = free_port();
    let mut server = start_server(&dir, port, "1h");
    server.wait_ready().await;
    for i in 0..20 {
        server
            .push(&format!("term-{i}"), &format!("Click T{i}"))
            .await;
    }
    let started = Instant::now();
    server.signal("-TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(server);

    let restarted = start_server(&dir, free_port(), "1h");
    restarted.wait_ready().await;
    for i in 0..20 {
        assert!(
            restarted
                .has(&format!("term-{i}"), &format!("Click T{i}"))
                .await,
            "term-{i} lost"
        );
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigkill_loses_at_most_the_last_snapshot_interval() {
    let dir = temp_dir("sigkill");
    let mut server = start_server(&dir, free_port(), "300ms");
    server.wait_ready().await;
    for i in 0..10 {
        server
            .push(&format!("kill-{i}"), &format!("Click K{i}"))
            .await;
    }
    // Two intervals later, everything so far is on disk.
    tokio::time::sleep(Duration::from_millis(900)).await;
    server.push("kill-late", "Click Late").await;
    server.signal("-KILL");
    server.wait_exit(Duration::from_secs(5));
    drop(server);

    let restarted = start_server(&dir, free_port(), "300ms");
    restarted.wait_ready().await;
    for i in 0..10 {
        assert!(
            restarted
                .has(&format!("kill-{i}"), &format!("Click K{i}"))
                .await,
            "kill-{i} lost"
        );
    }
    // The batch stored within the last interval may or may not have made it; nothing else is missing.
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
