//! `livectx demo` and `livectx simulate`, end to end.
//!
//! The first two tests run the built binary as child processes on free loopback ports, the way a
//! new user runs it, and check over HTTP that what livectx tells a chatbot matches what the
//! simulated user is doing right now (the simulator's `/personas` says which page that is). The
//! others drive the simulator in-process: the stream's contract (token, product, heartbeats,
//! fan-out), webhook pushes signed like the connector, and load mode.
#![cfg(feature = "tools")]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{TestApp, eventually, metric, test_config};
use futures_util::StreamExt;
use livectx::demo::SimulateConfig;
use livectx::demo::simulator::{HEARTBEAT_FRAME, Simulator};
use livectx::sources::autoplay::payload::{self, Payload};
use livectx::sources::autoplay::sse::{SseItem, SseParser};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A `livectx` child process whose output is collected; killed when dropped.
struct Livectx {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Livectx {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_livectx"));
        command.args(args);
        // Nothing from the developer's environment (an OPENAI_API_KEY, a stream URL) leaks in.
        for (key, _) in std::env::vars() {
            if key.starts_with("LIVECTX_")
                || key.starts_with("AUTOPLAY_")
                || key.starts_with("OPENAI_")
            {
                command.env_remove(key);
            }
        }
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the livectx binary starts");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// What it printed on stdout.
    fn output(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Everything it printed, logs included, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.output(),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Send SIGINT (Ctrl-C) and wait for a clean exit.
    async fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stops within 30 s of Ctrl-C")
            .unwrap();
        // Let the readers drain what was printed last.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status, self.transcript())
    }
}

/// Like `helpers::eventually`, but a timeout shows what the child processes printed.
async fn until<F, Fut>(children: &[&Livectx], what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            let transcripts: Vec<String> = children.iter().map(|c| c.transcript()).collect();
            panic!("timed out waiting for: {what}\n{}", transcripts.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    eventually(WAIT, &format!("{base}/healthz answers"), || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

/// The simulator's view of one persona.
async fn persona(http: &reqwest::Client, simulator: &str, name: &str) -> Value {
    let board: Value = http
        .get(format!("{simulator}/personas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    board["personas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no persona {name}: {board}"))
}

async fn retrieve(http: &reqwest::Client, livectx: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(format!("{livectx}/retrieval"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Does livectx's activity record for `name` name the page the simulator says they are on?
/// (The page is read before and after the query, so a page change in between retries.)
async fn activity_names_current_page(
    http: &reqwest::Client,
    livectx: &str,
    simulator: &str,
    key: &str,
    name: &str,
) -> bool {
    let before = persona(http, simulator, name).await;
    let Some(page) = before["current_page"].as_object().cloned() else {
        return false;
    };
    let session_id = before["session_id"].as_str().unwrap().to_string();
    let (status, body) = retrieve(
        http,
        livectx,
        key,
        &json!({"knowledge_id": session_id, "query": "help", "retrieval_setting": {"top_k": 3, "score_threshold": 0.0}}),
    )
    .await;
    let after = persona(http, simulator, name).await;
    if status != 200 || after["current_page"] != before["current_page"] {
        return false;
    }
    let content = body["records"][0]["content"].as_str().unwrap_or_default();
    let expected = format!(
        "Now on: \"{}\" ({})",
        page["label"].as_str().unwrap(),
        page["url"].as_str().unwrap()
    );
    content.starts_with("Current User Activity\n") && content.contains(&expected)
}

/// Does the printed activity list a click on the element `label` (named from the event's
/// element chain, not the raw event name)?
fn names_a_clicked_element(output: &str, label: &str) -> bool {
    output.lines().any(|line| {
        let item = line.trim_start().strip_prefix("- ").unwrap_or("");
        // The activity view puts the time first when the action has one: "09:28:18 UTC clicked …".
        let item = match item.split_once(" UTC ") {
            Some((time, rest)) if time.len() == 8 && time.as_bytes()[2] == b':' => rest,
            _ => item,
        };
        item.strip_prefix("clicked")
            .and_then(|rest| rest.split(" on ").next())
            .is_some_and(|what| what.contains(label) && !what.contains('$'))
    })
}

/// The `curl` commands the demo printed, each joined into one line.
fn printed_curl_commands(output: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current: Option<String> = None;
    for line in output.lines() {
        if line.starts_with("curl ") {
            current = Some(String::new());
        }
        if let Some(command) = current.as_mut() {
            match line.strip_suffix('\\') {
                Some(part) => command.push_str(part),
                None => {
                    command.push_str(line);
                    commands.push(current.take().unwrap());
                }
            }
        }
    }
    commands
}

#[tokio::test]
async fn demo_answers_for_a_live_persona_as_dify_would_and_stops_on_ctrl_c() {
    let (addr, simulator_addr) = (free_addr(), free_addr());
    let (livectx, simulator) = (format!("http://{addr}"), format!("http://{simulator_addr}"));
    let demo = Livectx::spawn(
        &[
            "demo",
            "--listen",
            &addr.to_string(),
            "--simulator-listen",
            &simulator_addr.to_string(),
            "--speed",
            "10",
            "--every",
            "1s",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    wait_healthy(&http, &livectx).await;

    for name in ["priya", "devon"] {
        until(
            &[&demo],
            &format!("{name}'s activity names their current page"),
            || activity_names_current_page(&http, &livectx, &simulator, "demo-key", name),
        )
        .await;
    }
    let (status, _) = retrieve(
        &http,
        &livectx,
        "wrong-key",
        &json!({"knowledge_id": "x", "query": "q"}),
    )
    .await;
    assert_eq!(status, 403, "a wrong key is refused");

    // The commands it printed work exactly as printed: all three identity routes reach priya.
    let output = demo.output();
    let commands = printed_curl_commands(&output);
    assert_eq!(commands.len(), 3, "{output}");
    let priya = persona(&http, &simulator, "priya").await;
    let session_id = priya["session_id"].as_str().unwrap();
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
        for command in &commands {
            let run = tokio::process::Command::new("sh")
                .args(["-c", command])
                .output()
                .await
                .unwrap();
            let body: Value =
                serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {command}"));
            let record = &body["records"][0];
            assert!(
                record["content"]
                    .as_str()
                    .unwrap()
                    .starts_with("Current User Activity"),
                "{command} → {body}"
            );
            assert_eq!(record["metadata"]["session_id"], session_id, "{command}");
        }
    } else {
        crate::helpers::redis_env::skipped("running the printed commands", "curl is not installed");
    }

    // Every few seconds it shows what priya's chatbot receives, named from PostHog's events.
    until(&[&demo], "the demo shows priya's context", || {
        let output = demo.output();
        async move {
            output.contains("what priya's chatbot receives now")
                && output.contains("  Current User Activity")
                && names_a_clicked_element(&output, "Consultants")
        }
    })
    .await;
    assert!(
        demo.output().contains("PostHog events    POST "),
        "{}",
        demo.output()
    );

    let (status, output) = demo.interrupt().await;
    assert!(status.success(), "{status}\n{output}");
    assert!(output.contains("Demo stopped cleanly"), "{output}");
}

#[tokio::test]
async fn demo_source_autoplay_plays_the_simulated_stream() {
    let (addr, simulator_addr) = (free_addr(), free_addr());
    let (livectx, simulator) = (format!("http://{addr}"), format!("http://{simulator_addr}"));
    let demo = Livectx::spawn(
        &[
            "demo",
            "--source",
            "autoplay",
            "--listen",
            &addr.to_string(),
            "--simulator-listen",
            &simulator_addr.to_string(),
            "--speed",
            "10",
            "--every",
            "0s",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    wait_healthy(&http, &livectx).await;
    until(
        &[&demo],
        "priya's activity names their current page",
        || activity_names_current_page(&http, &livectx, &simulator, "demo-key", "priya"),
    )
    .await;
    let (status, output) = demo.interrupt().await;
    assert!(status.success(), "{status}\n{output}");
    assert!(output.contains("Autoplay stream   http://"), "{output}");
}

#[tokio::test]
async fn simulate_feeds_serve_over_the_stream() {
    let (addr, simulator_addr) = (free_addr(), free_addr());
    let (livectx, simulator) = (format!("http://{addr}"), format!("http://{simulator_addr}"));
    let simulate = Livectx::spawn(
        &[
            "simulate",
            "--listen",
            &simulator_addr.to_string(),
            "--speed",
            "10",
            "--heartbeat",
            "1s",
        ],
        &[("LIVECTX_SIM_TOKEN", "s3cret-stream-token")],
    );
    let http = reqwest::Client::new();
    wait_healthy(&http, &simulator).await;
    let stream_url = format!("{simulator}/stream/acme_prod");
    let serve = Livectx::spawn(
        &["serve"],
        &[
            ("LIVECTX_LISTEN", &addr.to_string()),
            ("AUTOPLAY_STREAM_URL", &stream_url),
            ("AUTOPLAY_API_TOKEN", "s3cret-stream-token"),
            ("LIVECTX_API_KEY", "dify-key"),
        ],
    );
    wait_healthy(&http, &livectx).await;
    until(
        &[&simulate, &serve],
        "livectx is connected to the simulated stream",
        || async {
            http.get(format!("{livectx}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;

    for name in ["priya", "maria", "devon", "sam", "visitor"] {
        until(
            &[&simulate, &serve],
            &format!("{name}'s activity names their current page"),
            || activity_names_current_page(&http, &livectx, &simulator, "dify-key", name),
        )
        .await;
    }
    // Unlinked traffic (null session_id) reached livectx and was refused, never pooled.
    until(
        &[&simulate, &serve],
        "null-session payloads are refused",
        || async {
            let text = http
                .get(format!("{livectx}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metric(
                &text,
                "livectx_payloads_refused_total{source=\"sse\",reason=\"no_session\"}",
            ) >= 1.0
        },
    )
    .await;

    let (status, output) = serve.interrupt().await;
    assert!(status.success(), "serve: {status}\n{output}");
    let (status, output) = simulate.interrupt().await;
    assert!(status.success(), "simulate: {status}\n{output}");
    assert!(output.contains("simulated "), "{output}");
}

fn quick_simulator(overrides: impl FnOnce(&mut SimulateConfig)) -> SimulateConfig {
    let mut config = SimulateConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        speed: 20.0,
        ..SimulateConfig::default()
    };
    overrides(&mut config);
    config
}

/// Read SSE items from `url` until `enough` holds; returns the events.
async fn read_stream(
    response: reqwest::Response,
    enough: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let mut parser = SseParser::new(1024 * 1024);
    let mut events = Vec::new();
    let mut body = response.bytes_stream();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !enough(&events) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("enough events in time")
            .expect("the stream stays open")
            .unwrap();
        parser.feed(&chunk, &mut |item| {
            if let SseItem::Event(e) = item {
                events.push((e.event, e.data));
            }
        });
    }
    events
}

#[tokio::test]
async fn the_stream_checks_the_token_and_product_and_fans_out_with_heartbeats() {
    let config = quick_simulator(|c| c.heartbeat = Duration::from_millis(200));
    let simulator = Simulator::bind(config).await.unwrap();
    let base = format!("http://{}", simulator.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(simulator.run(stop.clone()));
    let http = reqwest::Client::new();
    let stream = format!("{base}/stream/acme_prod");

    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.get(&stream).send().await.unwrap()), 401);
    assert_eq!(
        status(http.get(&stream).bearer_auth("wrong").send().await.unwrap()),
        401
    );
    assert_eq!(
        status(
            http.get(format!("{base}/stream/other_prod"))
                .bearer_auth("sim-token")
                .send()
                .await
                .unwrap()
        ),
        404
    );

    let open = || async {
        let r = http
            .get(&stream)
            .bearer_auth("sim-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        r
    };
    let (first, second) = (open().await, open().await);
    let data_count =
        |events: &[(String, String)]| events.iter().filter(|(e, _)| e == "message").count();
    let heartbeats = |events: &[(String, String)]| {
        events
            .iter()
            .filter(|(e, d)| e == "heartbeat" && d.is_empty())
            .count()
    };
    let enough = |events: &[(String, String)]| data_count(events) >= 24 && heartbeats(events) >= 2;
    let (a, b) = tokio::join!(read_stream(first, enough), read_stream(second, enough));
    assert_eq!(
        a[0],
        ("heartbeat".to_string(), String::new()),
        "a heartbeat on connect"
    );
    let data = |events: &[(String, String)]| -> Vec<String> {
        events
            .iter()
            .filter(|(e, _)| e == "message")
            .map(|(_, d)| d.clone())
            .take(24)
            .collect()
    };
    // The users start with the first subscriber, so the second may join an event or two later:
    // from its first event on, it gets exactly what the first one got.
    let (a_data, b_data) = (data(&a), data(&b));
    let offset = a_data
        .iter()
        .position(|json| *json == b_data[0])
        .expect("the second subscriber's first event reached the first one too");
    assert!(
        offset <= a_data.len() / 2,
        "the second subscriber joined {offset} events late"
    );
    assert_eq!(
        a_data[offset..],
        b_data[..a_data.len() - offset],
        "every subscriber gets every event, in order"
    );
    for json in data(&a) {
        payload::decode(json.as_bytes()).unwrap();
    }
    assert_eq!(
        std::str::from_utf8(HEARTBEAT_FRAME).unwrap(),
        "event: heartbeat\ndata:\n\n"
    );

    stop.cancel();
    let report = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(report.subscribers.len(), 2);
    assert!(
        report
            .subscribers
            .iter()
            .all(|s| s.delivered >= 12 && s.dropped == 0)
    );
}

#[tokio::test]
async fn webhook_pushes_are_signed_like_the_connector() {
    let app = TestApp::spawn(livectx::ServeConfig {
        webhook_secret: Some("hook-secret".into()),
        ..test_config()
    })
    .await;
    let config = quick_simulator(|c| {
        c.push_to = Some(app.url("/webhooks/autoplay"));
        c.secret = Some("hook-secret".into());
        c.duration = Some(Duration::from_millis(1500));
    });
    let simulator = Simulator::bind(config).await.unwrap();
    let cast = simulator.personas();
    let report = simulator.run(CancellationToken::new()).await;
    assert!(report.emitted > 0);
    assert_eq!(report.pushed, report.emitted, "{report:?}");
    assert_eq!(report.push_failed, 0);
    let priya = cast[0].session_id.clone().unwrap();
    let (status, body) = app.retrieve(None, &priya, "help").await;
    assert_eq!(status, 200);
    assert!(
        body["records"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Current User Activity"),
        "{body}"
    );
    let text = app.metrics().await;
    assert_eq!(
        metric(
            &text,
            "livectx_webhook_deliveries_total{outcome=\"bad_signature\"}"
        ),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn refused_webhook_deliveries_are_not_retried() {
    let app = TestApp::spawn(livectx::ServeConfig {
        webhook_secret: Some("the-real-secret".into()),
        ..test_config()
    })
    .await;
    let config = quick_simulator(|c| {
        c.push_to = Some(app.url("/webhooks/autoplay"));
        c.secret = Some("a-wrong-secret".into());
        c.duration = Some(Duration::from_millis(1000));
    });
    let report = Simulator::bind(config)
        .await
        .unwrap()
        .run(CancellationToken::new())
        .await;
    assert!(report.emitted > 0);
    assert_eq!((report.pushed, report.push_failed), (0, report.emitted));
    let refused = metric(
        &app.metrics().await,
        "livectx_webhook_deliveries_total{outcome=\"bad_signature\"}",
    );
    assert_eq!(refused, report.emitted as f64, "one attempt per delivery");
    app.stop().await;
}

#[tokio::test]
async fn posthog_pushes_are_one_stock_webhook_body_per_event_and_retried_on_429() {
    // A stand-in receiver: records every delivery, and answers the very first with 429.
    #[derive(Default)]
    struct Received {
        deliveries: Vec<(Option<String>, Vec<u8>)>,
    }
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/ingest/acme_prod",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    let secret = headers
                        .get("x-posthog-secret")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let mut received = sink.lock().unwrap();
                    received.deliveries.push((secret, body.to_vec()));
                    if received.deliveries.len() == 1 {
                        axum::http::StatusCode::TOO_MANY_REQUESTS
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = quick_simulator(|c| {
        c.push_to = Some(format!("http://{addr}/ingest/acme_prod"));
        c.secret = Some("ingest-secret".into());
        c.push_format = livectx::demo::config::PushFormat::Posthog;
        c.duration = Some(Duration::from_millis(1500));
    });
    let report = Simulator::bind(config)
        .await
        .unwrap()
        .run(CancellationToken::new())
        .await;
    let received = received.lock().unwrap();
    assert_eq!(report.push_failed, 0, "{report:?}");
    assert_eq!(
        report.pushed as usize + 1,
        received.deliveries.len(),
        "every event delivered once, the refused one twice: {report:?}"
    );
    let first = &received.deliveries[0].1;
    assert_eq!(
        received
            .deliveries
            .iter()
            .filter(|(_, b)| b == first)
            .count(),
        2,
        "the delivery refused with 429 was retried, once"
    );
    let privacy = livectx::sources::Privacy::default();
    let mut names = HashSet::new();
    for (secret, body) in &received.deliveries {
        assert_eq!(secret.as_deref(), Some("ingest-secret"));
        let event: Value = serde_json::from_slice(body).unwrap();
        assert!(
            event["event"].is_object() && event["person"].is_object(),
            "{event}"
        );
        names.insert(event["event"]["event"].as_str().unwrap().to_string());
        let decoded = livectx::sources::posthog::decode(body, "acme_prod", &privacy).unwrap();
        assert!(decoded.refused.is_empty(), "{event}");
    }
    for expected in ["$pageview", "$autocapture", "$pageleave"] {
        assert!(names.contains(expected), "{names:?}");
    }
}

#[tokio::test]
async fn load_mode_streams_many_distinct_sessions() {
    let config = quick_simulator(|c| {
        c.sessions = 60;
        c.rate = 400.0;
        c.duration = Some(Duration::from_millis(1500));
    });
    let simulator = Simulator::bind(config).await.unwrap();
    let stream = format!("http://{}/stream/acme_prod", simulator.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(simulator.run(stop));
    let response = reqwest::Client::new()
        .get(stream)
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap();
    // Read until the simulator ends the stream at the end of its duration.
    let mut parser = SseParser::new(1024 * 1024);
    let mut payloads = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.next()).await.unwrap() {
        parser.feed(&chunk.unwrap(), &mut |item| {
            if let SseItem::Event(e) = item
                && e.event == "message"
            {
                payloads.push(e.data);
            }
        });
    }
    let report = task.await.unwrap();
    assert!(report.emitted > 0);
    assert_eq!(report.subscribers.len(), 1);
    assert_eq!(
        payloads.len() as u64,
        report.subscribers[0].delivered,
        "what the hub delivered is what the client read"
    );
    let sessions: HashSet<String> = payloads
        .iter()
        .filter_map(|p| match payload::decode(p.as_bytes()).unwrap() {
            Payload::Actions(a) => a.session_id,
            _ => None,
        })
        .collect();
    assert!(sessions.len() >= 40, "{} distinct sessions", sessions.len());
}
