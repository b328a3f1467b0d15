//! Shared integration-test helpers: the real server on a random port, a scriptable local SSE
//! server (the Autoplay connector), and a scriptable local OpenAI-compatible server.
//!
//! One copy of each, shared by every module of the test binary.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use livectx::api::ApiState;
use livectx::ingest::Ingestor;
use livectx::session::model::{Action, ActionBatch, ActionParts, SessionId};
use livectx::{Application, Overrides, ServeConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A running livectx on 127.0.0.1:<random port>.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: ApiState,
    /// The ingestion path every source feeds (to load activity without HTTP).
    pub ingestor: Arc<Ingestor>,
    pub shutdown: CancellationToken,
    pub http: reqwest::Client,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A config for tests: port 0, no environment.
pub fn test_config() -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::default()
    }
}

impl TestApp {
    /// Start the real application with `config` (its `listen` is forced to port 0).
    pub async fn spawn(config: ServeConfig) -> Self {
        Self::spawn_with(config, Overrides::default()).await
    }

    pub async fn spawn_with(mut config: ServeConfig, overrides: Overrides) -> Self {
        config.listen = "127.0.0.1:0".parse().unwrap();
        let app = Application::build_with(config, overrides)
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let state = app.state();
        let ingestor = app.ingestor();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            addr,
            state,
            ingestor,
            shutdown,
            http: reqwest::Client::new(),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST a JSON body to `path` with an optional bearer key; returns (status, JSON body).
    pub async fn post_json(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("request sent");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Ask `/retrieval` the way Dify does.
    pub async fn retrieve(
        &self,
        key: Option<&str>,
        knowledge_id: &str,
        query: &str,
    ) -> (StatusCode, Value) {
        self.post_json(
            "/retrieval",
            key,
            &json!({
                "knowledge_id": knowledge_id,
                "query": query,
                "retrieval_setting": {"top_k": 10, "score_threshold": 0.0},
            }),
        )
        .await
    }

    /// GET `path`; returns (status, body text).
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.text().await.unwrap_or_default())
    }

    /// The Prometheus text of this server.
    pub async fn metrics(&self) -> String {
        self.get_text("/metrics").await.1
    }

    /// Store a batch directly (bypassing ingestion), at the server clock.
    pub async fn seed(&self, batch: ActionBatch) {
        self.state
            .store
            .append_actions(batch, livectx::clock::now(), None)
            .await
            .expect("seeded");
    }

    /// Stop gracefully and wait.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// The titles of a session's raw actions, oldest first.
pub fn session_titles(session: &livectx::session::model::Session) -> Vec<String> {
    session
        .raw_action_iter()
        .map(|a| a.title().to_string())
        .collect()
}

/// Push `body` to the app's Autoplay webhook, signed with `secret` as the connector signs it;
/// it must be accepted.
pub async fn push_webhook(app: &TestApp, secret: &str, body: &[u8]) {
    let response = app
        .http
        .post(app.url("/webhooks/autoplay"))
        .header("content-type", "application/json")
        .header(
            "x-connector-signature",
            livectx::ingest::webhook::sign(secret, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// The value of a metric line (`name{labels} value`), 0 when absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One action at time `ts`.
pub fn action(kind: &str, title: &str, url: &str, ts: f64) -> Action {
    Action::new(ActionParts {
        index: None,
        kind: kind.into(),
        title: title.into(),
        description: format!("User {kind} {title}"),
        timestamp_start: Some(ts),
        timestamp_end: Some(ts),
        raw_url: None,
        canonical_url: url.into(),
        identity: None,
    })
}

/// A batch for `session` with optional email and user id.
pub fn batch(
    session: &str,
    email: Option<&str>,
    user: Option<&str>,
    actions: Vec<Action>,
) -> ActionBatch {
    ActionBatch {
        session_id: SessionId::parse(session).unwrap(),
        product_id: Some("acme_prod".into()),
        user_id: user.map(str::to_string),
        email: email.map(str::to_string),
        conversation_id: None,
        actions,
        forwarded_at: None,
        source: None,
    }
}

/// An `actions` payload in the connector's wire format.
pub fn actions_payload(
    session: Option<&str>,
    email: Option<&str>,
    titles: &[&str],
    ts: f64,
) -> Value {
    let actions: Vec<Value> = titles
        .iter()
        .enumerate()
        .map(|(i, title)| {
            json!({
                "index": i, "type": "click", "title": title, "description": format!("User clicked {title}"),
                "timestamp_start": ts + i as f64, "timestamp_end": ts + i as f64,
                "raw_url": "https://app.acme.io/x", "canonical_url": "https://app.acme.io/x",
                "session_id": session, "email": email,
            })
        })
        .collect();
    json!({
        "type": "actions", "product_id": "acme_prod", "session_id": session, "user_id": null,
        "email": email, "actions": actions, "count": titles.len(), "forwarded_at": ts + 1.0,
    })
}

/// Wait until `check` holds (polling), or panic with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A scriptable Autoplay connector: GET /stream/<product> serves what the test scripts.
// ---------------------------------------------------------------------------------------------

/// What the fake connector does on the next connection.
#[derive(Debug, Clone)]
pub enum Connection {
    /// Answer with this status and no stream.
    Status(u16),
    /// Stream: send these chunks (already SSE-encoded), then follow `end`.
    Stream { chunks: Vec<Bytes>, end: StreamEnd },
    /// Stream frames pushed by the test through [`FakeConnector::push`] until it closes.
    Live,
}

/// How a scripted stream ends.
#[derive(Debug, Clone, Copy)]
pub enum StreamEnd {
    /// Close the connection.
    Close,
    /// Keep it open without sending anything (a half-open connection).
    Stall,
}

/// What the fake connector saw of one connection attempt.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub authorization: Option<String>,
    pub last_event_id: Option<String>,
    pub at: std::time::Instant,
}

struct ConnectorState {
    script: Mutex<VecDeque<Connection>>,
    seen: Mutex<Vec<SeenRequest>>,
    live: Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>,
    live_tx: mpsc::UnboundedSender<Bytes>,
    connections: AtomicUsize,
}

/// A local SSE server standing in for the Autoplay connector.
pub struct FakeConnector {
    pub addr: SocketAddr,
    state: Arc<ConnectorState>,
}

impl FakeConnector {
    /// Start it; connections beyond the script get [`Connection::Live`].
    pub async fn start(script: Vec<Connection>) -> Self {
        let (live_tx, live_rx) = mpsc::unbounded_channel();
        let state = Arc::new(ConnectorState {
            script: Mutex::new(script.into()),
            seen: Mutex::new(Vec::new()),
            live: Mutex::new(Some(live_rx)),
            live_tx,
            connections: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/stream/{product}", get(serve_stream))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    pub fn url(&self, product: &str) -> String {
        format!("http://{}/stream/{product}", self.addr)
    }

    /// Send SSE bytes on the live connection.
    pub fn push(&self, bytes: impl Into<Bytes>) {
        let _ = self.state.live_tx.send(bytes.into());
    }

    /// Send one `data:` frame with this JSON on the live connection.
    pub fn push_json(&self, value: &Value) {
        self.push(sse_frame(value));
    }

    /// Connection attempts so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// What each connection attempt sent.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }
}

/// `data: <json>\n\n`.
pub fn sse_frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

async fn serve_stream(State(state): State<Arc<ConnectorState>>, headers: HeaderMap) -> Response {
    state.connections.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.seen.lock().unwrap().push(SeenRequest {
        authorization: header("authorization"),
        last_event_id: header("last-event-id"),
        at: std::time::Instant::now(),
    });
    let next = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Connection::Live);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    match next {
        Connection::Status(code) => {
            return (
                StatusCode::from_u16(code).unwrap(),
                Json(json!({"error": "scripted"})),
            )
                .into_response();
        }
        Connection::Stream { chunks, end } => {
            tokio::spawn(async move {
                for chunk in chunks {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if let StreamEnd::Stall = end {
                    tx.closed().await;
                }
            });
        }
        Connection::Live => {
            let live = state.live.lock().unwrap().take();
            tokio::spawn(async move {
                let Some(mut live) = live else {
                    tx.closed().await;
                    return;
                };
                loop {
                    tokio::select! {
                        item = live.recv() => match item {
                            Some(bytes) => if tx.send(Ok(bytes)).await.is_err() { break },
                            None => break,
                        },
                        () = tx.closed() => break,
                    }
                }
                // Hand the live channel back for the next connection.
                *state.live.lock().unwrap() = Some(live);
            });
        }
    }
    let body = Body::from_stream(tokio_stream_from(rx));
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

// ---------------------------------------------------------------------------------------------
// A scriptable OpenAI-compatible server: POST /v1/chat/completions.
// ---------------------------------------------------------------------------------------------

/// How the fake LLM answers a call.
#[derive(Debug, Clone)]
pub enum LlmBehaviour {
    /// 200 with a summary that quotes the prompt's line count and previous summary marker.
    Ok,
    /// Wait, then answer Ok.
    Slow(Duration),
    /// HTTP 500.
    Fail,
    /// Never answer (the client's timeout must fire).
    Hang,
    /// 200 with a body that is not a chat completion.
    Malformed,
}

struct LlmState {
    behaviour: Box<dyn Fn(usize) -> LlmBehaviour + Send + Sync>,
    calls: AtomicUsize,
    prompts: Mutex<Vec<String>>,
}

/// A local OpenAI-compatible endpoint.
pub struct FakeLlm {
    pub addr: SocketAddr,
    state: Arc<LlmState>,
}

impl FakeLlm {
    /// `behaviour(call_number)` decides each answer (calls count from 0).
    pub async fn start(behaviour: impl Fn(usize) -> LlmBehaviour + Send + Sync + 'static) -> Self {
        let state = Arc::new(LlmState {
            behaviour: Box::new(behaviour),
            calls: AtomicUsize::new(0),
            prompts: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    /// The base URL to give livectx (`OPENAI_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn prompts(&self) -> Vec<String> {
        self.state.prompts.lock().unwrap().clone()
    }
}

/// The summary text the fake LLM writes: it names every action title it was shown, so tests
/// can check that summaries cover what they claim to.
pub fn fake_summary(prompt: &str) -> String {
    let titles: Vec<&str> = prompt
        .lines()
        .filter_map(|l| {
            l.split_once(" \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(t, _)| t)
        })
        .collect();
    let previous = prompt
        .split("Summary so far (empty at the start of the session):\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\nNew actions").next())
        .unwrap_or("")
        .trim();
    let previous = if previous == "(none yet)" {
        ""
    } else {
        previous
    };
    format!("{previous} [{}]", titles.join("|"))
        .trim()
        .to_string()
}

async fn chat(
    State(state): State<Arc<LlmState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let call = state.calls.fetch_add(1, Ordering::SeqCst);
    let prompt = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    state.prompts.lock().unwrap().push(prompt.clone());
    let _ = headers;
    match (state.behaviour)(call) {
        LlmBehaviour::Ok => completion(&prompt),
        LlmBehaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            completion(&prompt)
        }
        LlmBehaviour::Fail => {
            (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response()
        }
        LlmBehaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            completion(&prompt)
        }
        LlmBehaviour::Malformed => (StatusCode::OK, "{\"choices\": \"nope\"").into_response(),
    }
}

fn completion(prompt: &str) -> Response {
    Json(json!({
        "id": "chatcmpl-test", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": fake_summary(prompt)}, "finish_reason": "stop"}],
    }))
    .into_response()
}

pub mod redis_env;

pub mod broadcast;

pub mod faulty_store;

/// Send raw bytes and read one HTTP/1.1 response (head and `content-length` body), or what
/// arrived before the server closed the connection. Write errors are ignored: a server that
/// refuses a request may close before reading all of it.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |buffer: &[u8]| {
        let text = String::from_utf8_lossy(buffer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        body.len() >= length
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while !complete(&buffer) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buffer).into_owned()
}
