//! `livectx simulate`: a stand-in for Autoplay's connector, for demos, tests and load.
//!
//! It behaves like the real connector where livectx can tell the difference:
//! - `GET /stream/<product_id>` with `Authorization: Bearer <token>` (401 otherwise, 404 for
//!   another product) streams every session of the product as `data: {json}` frames, with an
//!   `event: heartbeat` frame (empty `data:`) on connect and every heartbeat interval.
//! - Every subscriber receives every event (no consumer groups), through its own bounded queue:
//!   a subscriber that does not read fast enough loses events instead of slowing the others,
//!   as with the connector's 256-event queue.
//! - With `--push-to`, every payload is also POSTed as a webhook signed like the connector
//!   (`X-Connector-Signature: sha256=<hex HMAC of the raw body>` and `Authorization: Bearer
//!   <secret>`), retried with backoff on 5xx and network errors, never on 4xx.
//!
//! Where it differs on purpose: the simulated users start when the first subscriber connects
//! (at once when pushing to a webhook), so nothing is lost while livectx starts; and two extras,
//! `GET /personas` (each simulated session and the page it is on, which tests and the demo
//! compare with what livectx says) and `GET /healthz`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::SimulateConfig;
use crate::demo::personas::{self, Emission, Journey, PageRef, Persona, Timebase};
use crate::ingest::webhook;

/// The heartbeat frame, exactly as the connector sends it.
pub const HEARTBEAT_FRAME: &[u8] = b"event: heartbeat\ndata:\n\n";
/// Sessions listed by `GET /personas` in load mode at most.
const LISTED_SESSIONS: usize = 100;
/// Webhook deliveries waiting per push worker; beyond, deliveries are dropped and counted.
const PUSH_QUEUE: usize = 1024;
/// Attempts per webhook delivery (the first and four retries).
const PUSH_ATTEMPTS: u32 = 5;

/// What a subscriber received, for reports and `/personas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberStats {
    pub id: u64,
    pub peer: String,
    pub delivered: u64,
    pub dropped: u64,
    pub connected: bool,
}

struct Subscriber {
    id: u64,
    peer: String,
    tx: mpsc::Sender<Bytes>,
    delivered: u64,
    dropped: u64,
}

impl Subscriber {
    fn stats(&self, connected: bool) -> SubscriberStats {
        SubscriberStats {
            id: self.id,
            peer: self.peer.clone(),
            delivered: self.delivered,
            dropped: self.dropped,
            connected,
        }
    }
}

/// Departed subscribers remembered for the stats (the most recent ones).
const MAX_DEPARTED: usize = 100;

#[derive(Default)]
struct HubState {
    subscribers: Vec<Subscriber>,
    departed: VecDeque<SubscriberStats>,
    next_id: u64,
    closed: bool,
}

impl HubState {
    fn remember_departed(&mut self, stats: SubscriberStats) {
        self.departed.push_back(stats);
        while self.departed.len() > MAX_DEPARTED {
            self.departed.pop_front();
        }
    }
}

/// Fans every event out to every subscriber, each through its own bounded queue.
///
/// Publishing never waits: a full queue drops the event for that subscriber only (and counts
/// it), exactly the trade the real connector makes, so one slow reader cannot hold up the rest.
pub struct Hub {
    state: Mutex<HubState>,
    capacity: usize,
    /// Subscribers connected now, for whoever waits for the first one.
    connected: tokio::sync::watch::Sender<usize>,
}

impl Hub {
    /// A hub whose subscribers may each have `capacity` events waiting.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(HubState::default()),
            capacity: capacity.max(1),
            connected: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Resolves once at least one subscriber is connected.
    pub async fn first_subscriber(&self) {
        let mut connected = self.connected.subscribe();
        // The sender lives as long as the hub, so this only ends when someone connects.
        let _ = connected.wait_for(|n| *n > 0).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        crate::sync::lock(&self.state)
    }

    /// A new subscriber's queue; `None` once the hub is closed.
    pub fn subscribe(&self, peer: &str) -> Option<(u64, mpsc::Receiver<Bytes>)> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        state.next_id += 1;
        let id = state.next_id;
        state.subscribers.push(Subscriber {
            id,
            peer: peer.to_string(),
            tx,
            delivered: 0,
            dropped: 0,
        });
        self.connected.send_replace(state.subscribers.len());
        Some((id, rx))
    }

    /// Offer `frame` to every subscriber; returns how many took it.
    pub fn publish(&self, frame: &Bytes) -> usize {
        let mut state = self.lock();
        let mut taken = 0;
        let mut gone = Vec::new();
        for (i, subscriber) in state.subscribers.iter_mut().enumerate() {
            match subscriber.tx.try_send(frame.clone()) {
                Ok(()) => {
                    subscriber.delivered += 1;
                    taken += 1;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    subscriber.dropped += 1;
                    if subscriber.dropped.is_power_of_two() {
                        tracing::warn!(
                            subscriber = subscriber.id,
                            peer = %subscriber.peer,
                            dropped = subscriber.dropped,
                            "a subscriber is not keeping up: its events are dropped (as the connector does with its 256-event queue)"
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            let subscriber = state.subscribers.swap_remove(i);
            tracing::info!(
                subscriber = subscriber.id,
                peer = %subscriber.peer,
                delivered = subscriber.delivered,
                dropped = subscriber.dropped,
                "a subscriber disconnected"
            );
            state.remember_departed(subscriber.stats(false));
        }
        self.connected.send_replace(state.subscribers.len());
        taken
    }

    /// End every stream and refuse new subscribers.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let closing: Vec<Subscriber> = state.subscribers.drain(..).collect();
        for subscriber in closing {
            state.remember_departed(subscriber.stats(false));
        }
        self.connected.send_replace(0);
    }

    /// Every subscriber so far, connected ones first.
    pub fn stats(&self) -> Vec<SubscriberStats> {
        let state = self.lock();
        state
            .subscribers
            .iter()
            .map(|s| s.stats(!s.tx.is_closed()))
            .chain(state.departed.iter().cloned())
            .collect()
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }
}

/// One line of what a simulated user just did, for the demo's narration.
#[derive(Debug, Clone, PartialEq)]
pub struct Narration {
    /// Wall-clock Unix seconds.
    pub at: f64,
    pub persona: String,
    pub line: String,
}

/// One simulated session as `GET /personas` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PersonaStatus {
    pub name: String,
    pub role: &'static str,
    pub about: &'static str,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub email: Option<String>,
    /// The page the last forwarded payload left the user on.
    pub current_page: Option<PageRef>,
    /// Payloads forwarded for this session.
    pub events: u64,
    pub last_event_at: Option<f64>,
}

impl PersonaStatus {
    fn of(persona: &Persona) -> Self {
        Self {
            name: persona.name.clone(),
            role: persona.role.key(),
            about: persona.role.about(),
            session_id: persona.session_id.clone(),
            user_id: persona.user_id.clone(),
            email: persona.email.clone(),
            current_page: None,
            events: 0,
            last_event_at: None,
        }
    }
}

#[derive(Default)]
struct Counters {
    emitted: AtomicU64,
    actions: AtomicU64,
    pushed: AtomicU64,
    push_failed: AtomicU64,
    push_dropped: AtomicU64,
}

struct Shared {
    product_id: String,
    token: String,
    heartbeat: Duration,
    hub: Hub,
    board: Mutex<Vec<PersonaStatus>>,
    sessions: u64,
    counters: Counters,
}

/// What a finished simulation did.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Payloads generated.
    pub emitted: u64,
    /// UI actions inside them.
    pub actions: u64,
    pub subscribers: Vec<SubscriberStats>,
    pub pushed: u64,
    pub push_failed: u64,
    pub push_dropped: u64,
    pub elapsed_seconds: f64,
}

/// A bound, not yet running simulator.
pub struct Simulator {
    listener: TcpListener,
    addr: SocketAddr,
    config: SimulateConfig,
    shared: Arc<Shared>,
    narration: Option<mpsc::Sender<Narration>>,
}

impl Simulator {
    /// Bind the listener and prepare the cast; nothing is sent until [`Simulator::run`].
    pub async fn bind(config: SimulateConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let board = if config.sessions == 0 {
            personas::cast(config.seed, &config.product_id)
                .iter()
                .map(PersonaStatus::of)
                .collect()
        } else {
            (0..config.sessions.min(LISTED_SESSIONS as u64))
                .map(|i| {
                    PersonaStatus::of(&personas::synthetic(config.seed, i, &config.product_id))
                })
                .collect()
        };
        let shared = Arc::new(Shared {
            product_id: config.product_id.clone(),
            token: config.token.clone(),
            heartbeat: config.heartbeat.max(Duration::from_millis(10)),
            hub: Hub::new(config.queue as usize),
            board: Mutex::new(board),
            sessions: config.sessions,
            counters: Counters::default(),
        });
        Ok(Self {
            listener,
            addr,
            config,
            shared,
            narration: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/stream/<product_id>`: what livectx's AUTOPLAY_STREAM_URL should be.
    pub fn stream_url(&self) -> String {
        format!("http://{}/stream/{}", self.addr, self.shared.product_id)
    }

    /// The simulated people (the six personas; the first synthetic sessions in load mode).
    pub fn personas(&self) -> Vec<Persona> {
        if self.config.sessions == 0 {
            personas::cast(self.config.seed, &self.config.product_id)
        } else {
            (0..self.config.sessions.min(LISTED_SESSIONS as u64))
                .map(|i| personas::synthetic(self.config.seed, i, &self.config.product_id))
                .collect()
        }
    }

    /// Receive a line for each notable thing a persona does (bounded: lines are dropped,
    /// never waited for, when the receiver lags).
    pub fn narrate(&mut self) -> mpsc::Receiver<Narration> {
        let (tx, rx) = mpsc::channel(256);
        self.narration = Some(tx);
        rx
    }

    /// Serve and simulate until `shutdown` is cancelled or the configured duration ends;
    /// then end every stream, let pending webhook deliveries finish, and report.
    pub async fn run(self, shutdown: CancellationToken) -> SimReport {
        let started = Instant::now();
        let Self {
            listener,
            config,
            shared,
            narration,
            ..
        } = self;
        let server_stop = CancellationToken::new();
        let router = router(Arc::clone(&shared));
        let serving = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(server_stop.clone().cancelled_owned());
        let server = tokio::spawn(async move {
            if let Err(error) = serving.await {
                tracing::error!(%error, "the simulator's HTTP server failed");
            }
        });

        let (pushers, push_tasks) = match (&config.push_to, &config.secret) {
            (Some(url), Some(secret)) => spawn_pushers(
                url,
                secret,
                config.push_concurrency as usize,
                Arc::clone(&shared),
                shutdown.clone(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let sinks = Sinks {
            shared: Arc::clone(&shared),
            pushers,
            narration,
        };
        let deadline = config.duration.map(|d| tokio::time::Instant::now() + d);
        // Nothing is lost at start-up: without a webhook to push to, the users' clocks start
        // when the first subscriber connects (the real connector would drop those events).
        let audience_arrived = if sinks.pushers.is_empty() {
            tracing::info!("waiting for the first stream subscriber before starting");
            tokio::select! {
                () = shared.hub.first_subscriber() => true,
                () = wait_until(deadline, &shutdown) => false,
            }
        } else {
            true
        };
        match (audience_arrived, config.sessions) {
            (false, _) => drop(sinks),
            (true, 0) => drive_personas(&config, sinks, deadline, &shutdown).await,
            (true, _) => drive_load(&config, sinks, deadline, &shutdown).await,
        }
        // The driver dropped its senders: the push workers finish what is queued.
        for task in push_tasks {
            if tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .is_err()
            {
                tracing::warn!("webhook deliveries were still pending at shutdown");
            }
        }
        shared.hub.close();
        server_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .is_err()
        {
            tracing::warn!("the simulator's HTTP server did not stop in time");
        }
        let c = &shared.counters;
        SimReport {
            emitted: c.emitted.load(Ordering::Relaxed),
            actions: c.actions.load(Ordering::Relaxed),
            subscribers: shared.hub.stats(),
            pushed: c.pushed.load(Ordering::Relaxed),
            push_failed: c.push_failed.load(Ordering::Relaxed),
            push_dropped: c.push_dropped.load(Ordering::Relaxed),
            elapsed_seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Where each emission goes: the stream hub, the webhook pushers, the narration.
struct Sinks {
    shared: Arc<Shared>,
    pushers: Vec<mpsc::Sender<Bytes>>,
    narration: Option<mpsc::Sender<Narration>>,
}

impl Sinks {
    /// Send one emission of `persona` (number `slot` on the board).
    fn emit(&self, slot: usize, persona: &Persona, emission: &Emission, time: &Timebase) {
        let json = emission.to_json(time);
        let counters = &self.shared.counters;
        counters.emitted.fetch_add(1, Ordering::Relaxed);
        counters
            .actions
            .fetch_add(emission.action_count() as u64, Ordering::Relaxed);
        self.shared
            .hub
            .publish(&Bytes::from(format!("data: {json}\n\n")));
        if !self.pushers.is_empty() {
            let worker = slot % self.pushers.len();
            if self.pushers[worker].try_send(Bytes::from(json)).is_err() {
                let dropped = counters.push_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped,
                        "webhook deliveries are falling behind: deliveries dropped"
                    );
                }
            }
        }
        let at = time.unix(emission.at);
        if slot < LISTED_SESSIONS {
            let mut board = crate::sync::lock(&self.shared.board);
            if let Some(status) = board.get_mut(slot) {
                status.events += 1;
                status.last_event_at = Some(at);
                if let Some(page) = emission.current_page() {
                    status.current_page = Some(page);
                }
            }
        }
        if let Some(narration) = &self.narration {
            for line in &emission.narration {
                let _ = narration.try_send(Narration {
                    at,
                    persona: persona.name.clone(),
                    line: line.clone(),
                });
            }
        }
    }
}

/// Play the six personas in real time (scaled by the speed), each on its own schedule.
async fn drive_personas(
    config: &SimulateConfig,
    sinks: Sinks,
    deadline: Option<tokio::time::Instant>,
    shutdown: &CancellationToken,
) {
    let origin_wall = clock::now();
    let origin = tokio::time::Instant::now();
    let mut journeys: Vec<Journey> = personas::cast(config.seed, &config.product_id)
        .into_iter()
        .map(|p| Journey::new(p, config.seed))
        .collect();
    let mut upcoming: Vec<Emission> = journeys.iter_mut().map(Journey::next_emission).collect();
    loop {
        let Some((slot, at)) = upcoming
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.at))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return;
        };
        let due = origin + Duration::from_secs_f64(at / config.speed);
        if deadline.is_some_and(|d| due > d) {
            wait_until(deadline, shutdown).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = shutdown.cancelled() => return,
        }
        let emission = std::mem::replace(&mut upcoming[slot], journeys[slot].next_emission());
        let time = Timebase {
            not_after: Some(clock::now()),
            ..Timebase::new(origin_wall, config.speed)
        };
        sinks.emit(slot, journeys[slot].persona(), &emission, &time);
    }
}

/// Load mode: `sessions` synthetic sessions take turns, `rate` payloads a second in total.
async fn drive_load(
    config: &SimulateConfig,
    sinks: Sinks,
    deadline: Option<tokio::time::Instant>,
    shutdown: &CancellationToken,
) {
    let sessions = config.sessions.max(1);
    let mut journeys: Vec<Journey> = (0..sessions)
        .map(|i| {
            Journey::new(
                personas::synthetic(config.seed, i, &config.product_id),
                config.seed,
            )
        })
        .collect();
    // Each session gets rate/sessions turns a second and a turn covers a few seconds of its
    // journey, so journey time runs about as fast as real time; stamps never pass "now".
    let speed = (config.rate / sessions as f64 * 6.0).max(0.001);
    let origin_wall = clock::now();
    let start = tokio::time::Instant::now();
    let burst_cap = (config.rate / 10.0).ceil().max(1.0) as u64;
    let mut sent: u64 = 0;
    let mut cursor = 0usize;
    let mut behind_warned = false;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return;
        }
        let due = ((now - start).as_secs_f64() * config.rate) as u64;
        let mut owed = due.saturating_sub(sent);
        if owed > burst_cap * 10 {
            if !behind_warned {
                tracing::warn!(
                    rate = config.rate,
                    "cannot keep up with --rate on this machine; sending as fast as possible"
                );
                behind_warned = true;
            }
            sent = due - burst_cap;
            owed = burst_cap;
        }
        let time = Timebase {
            not_after: Some(clock::now()),
            ..Timebase::new(origin_wall, speed)
        };
        for n in 0..owed.min(burst_cap) {
            let emission = journeys[cursor].next_emission();
            sinks.emit(cursor, journeys[cursor].persona(), &emission, &time);
            cursor = (cursor + 1) % journeys.len();
            sent += 1;
            if n % 256 == 255 {
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn wait_until(deadline: Option<tokio::time::Instant>, shutdown: &CancellationToken) {
    match deadline {
        Some(d) => {
            tokio::select! {
                () = tokio::time::sleep_until(d) => {}
                () = shutdown.cancelled() => {}
            }
        }
        None => shutdown.cancelled().await,
    }
}

fn spawn_pushers(
    url: &str,
    secret: &str,
    concurrency: usize,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> (Vec<mpsc::Sender<Bytes>>, Vec<tokio::task::JoinHandle<()>>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("livectx-simulate/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client; not pushing");
            return (Vec::new(), Vec::new());
        }
    };
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(PUSH_QUEUE);
        senders.push(tx);
        let pusher = Pusher {
            client: client.clone(),
            url: url.to_string(),
            secret: secret.to_string(),
            shared: Arc::clone(&shared),
            shutdown: shutdown.clone(),
        };
        tasks.push(tokio::spawn(async move {
            while let Some(body) = rx.recv().await {
                pusher.deliver(body).await;
            }
        }));
    }
    (senders, tasks)
}

/// Delivers payloads to a webhook the way the connector does.
struct Pusher {
    client: reqwest::Client,
    url: String,
    secret: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Pusher {
    async fn deliver(&self, body: Bytes) {
        let signature = webhook::sign(&self.secret, &body);
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=PUSH_ATTEMPTS {
            let sent = self
                .client
                .post(&self.url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(webhook::SIGNATURE_HEADER, &signature)
                .bearer_auth(&self.secret)
                .body(body.clone())
                .send()
                .await;
            let retryable = match sent {
                Ok(response) if response.status().is_success() => {
                    self.shared.counters.pushed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(response) if response.status().is_client_error() => {
                    self.fail(&format!(
                        "the webhook refused a delivery with HTTP {}; 4xx is never retried (as the connector does)",
                        response.status().as_u16()
                    ));
                    return;
                }
                Ok(response) => format!("HTTP {}", response.status().as_u16()),
                Err(error) => error.without_url().to_string(),
            };
            if attempt == PUSH_ATTEMPTS {
                self.fail(&format!(
                    "a webhook delivery failed after {PUSH_ATTEMPTS} attempts: {retryable}"
                ));
                return;
            }
            tracing::debug!(attempt, error = %retryable, "webhook delivery failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => {
                    self.fail("a webhook delivery was abandoned at shutdown");
                    return;
                }
            }
            delay *= 2;
        }
    }

    fn fail(&self, message: &str) {
        let failed = self
            .shared
            .counters
            .push_failed
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failed.is_power_of_two() {
            tracing::warn!(failed, "{message}");
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/stream/{product_id}", get(stream))
        .route("/personas", get(board))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not found: the stream is GET /stream/<product_id>"})),
            )
        })
        .with_state(shared)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `GET /stream/<product_id>`.
async fn stream(
    State(shared): State<Arc<Shared>>,
    Path(product_id): Path<String>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !webhook::bearer_valid(&shared.token, authorization) {
        tracing::warn!(%peer, "refused a stream subscriber: missing or wrong token");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or invalid token: send Authorization: Bearer <token>",
        );
    }
    if product_id != shared.product_id {
        tracing::warn!(%peer, product = %product_id, "refused a stream subscriber: unknown product");
        return refuse(StatusCode::NOT_FOUND, "unknown product");
    }
    let Some((id, rx)) = shared.hub.subscribe(&peer.to_string()) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the simulator is stopping");
    };
    tracing::info!(subscriber = id, %peer, "a subscriber connected to the stream");
    let mut heartbeat = tokio::time::interval(shared.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let frames =
        futures_util::stream::unfold((rx, heartbeat), |(mut rx, mut heartbeat)| async move {
            let frame = tokio::select! {
                biased;
                frame = rx.recv() => frame?,
                _ = heartbeat.tick() => Bytes::from_static(HEARTBEAT_FRAME),
            };
            Some((Ok::<Bytes, Infallible>(frame), (rx, heartbeat)))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the stream"))
}

/// `GET /personas`: each simulated session and where it is.
async fn board(State(shared): State<Arc<Shared>>) -> Response {
    let personas = crate::sync::lock(&shared.board).clone();
    Json(json!({
        "product_id": shared.product_id,
        "stream": format!("/stream/{}", shared.product_id),
        "load_sessions": shared.sessions,
        "events": shared.counters.emitted.load(Ordering::Relaxed),
        "subscribers": shared.hub.stats(),
        "personas": personas,
    }))
    .into_response()
}

/// `livectx simulate`: print where to connect, run until Ctrl-C or the duration, report.
pub async fn run_cli(config: SimulateConfig) -> anyhow::Result<()> {
    crate::telemetry::init_tracing(config.log.log_format, config.log.log_identities);
    let listen = config.listen;
    let simulator = Simulator::bind(config.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let stream_url = simulator.stream_url();
    let token_shown = if config.token == SimulateConfig::default().token {
        config.token.clone()
    } else {
        "<your --token>".to_string()
    };
    println!("livectx simulate: a stand-in Autoplay connector");
    println!("  stream    {stream_url}   (Authorization: Bearer {token_shown})");
    println!("  personas  http://{}/personas", simulator.local_addr());
    if let Some(url) = &config.push_to {
        println!(
            "  webhook   every payload is also POSTed to {url}, signed with --secret ({} in flight)",
            config.push_concurrency
        );
    }
    if config.sessions == 0 {
        println!(
            "  playing   6 personas at {}x, seed {}:",
            config.speed, config.seed
        );
        for p in simulator.personas() {
            println!(
                "    {:<9} {:<38} {}",
                p.name,
                p.session_id.as_deref().unwrap_or("(session_id: null)"),
                p.role.about()
            );
        }
    } else {
        println!(
            "  load      {} synthetic sessions, {} payloads/s, seed {}",
            config.sessions, config.rate, config.seed
        );
    }
    println!(
        "Feed livectx from it (the users start when the first subscriber connects):\n  AUTOPLAY_STREAM_URL={stream_url} AUTOPLAY_API_TOKEN={token_shown} livectx serve"
    );
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown::wait_for_signal().await;
        stop.cancel();
    });
    let report = simulator.run(shutdown).await;
    println!(
        "simulated {} payloads ({} actions) in {:.1} s ({:.0} payloads/s)",
        report.emitted,
        report.actions,
        report.elapsed_seconds,
        report.emitted as f64 / report.elapsed_seconds.max(0.001)
    );
    for s in &report.subscribers {
        println!(
            "  subscriber {} ({}): {} delivered, {} dropped",
            s.id, s.peer, s.delivered, s.dropped
        );
    }
    if config.push_to.is_some() {
        println!(
            "  webhook: {} delivered, {} failed, {} dropped",
            report.pushed, report.push_failed, report.push_dropped
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u32) -> Bytes {
        Bytes::from(format!("data: {{\"n\":{n}}}\n\n"))
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event() {
        let hub = Hub::new(16);
        let (_, mut a) = hub.subscribe("a").unwrap();
        let (_, mut b) = hub.subscribe("b").unwrap();
        for n in 0..10 {
            assert_eq!(hub.publish(&frame(n)), 2);
        }
        for n in 0..10 {
            assert_eq!(a.recv().await.unwrap(), frame(n));
            assert_eq!(b.recv().await.unwrap(), frame(n));
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_events_without_holding_up_the_others() {
        let hub = Hub::new(256);
        let (_, _stalled) = hub.subscribe("slow").unwrap();
        let (_, mut reader) = hub.subscribe("fast").unwrap();
        for n in 0..300 {
            hub.publish(&frame(n));
            assert_eq!(reader.recv().await.unwrap(), frame(n));
        }
        let stats = hub.stats();
        let slow = stats.iter().find(|s| s.peer == "slow").unwrap();
        let fast = stats.iter().find(|s| s.peer == "fast").unwrap();
        assert_eq!((slow.delivered, slow.dropped), (256, 44));
        assert_eq!((fast.delivered, fast.dropped), (300, 0));
    }

    #[tokio::test]
    async fn waits_for_the_first_subscriber() {
        let hub = Arc::new(Hub::new(4));
        let waiting = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.first_subscriber().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let _subscriber = hub.subscribe("first").unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the first subscriber")
            .unwrap();
    }

    #[tokio::test]
    async fn departed_and_closed_subscribers_are_reported() {
        let hub = Hub::new(4);
        let (_, gone) = hub.subscribe("gone").unwrap();
        let (_, mut stays) = hub.subscribe("stays").unwrap();
        drop(gone);
        assert_eq!(hub.publish(&frame(1)), 1);
        assert_eq!(hub.subscribers(), 1);
        hub.close();
        assert!(hub.subscribe("late").is_none());
        assert_eq!(stays.recv().await.unwrap(), frame(1));
        assert_eq!(stays.recv().await, None, "closing ends the stream");
        assert!(hub.stats().iter().all(|s| !s.connected));
    }
}
