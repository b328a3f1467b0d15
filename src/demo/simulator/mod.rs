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

mod drive;
mod hub;
mod push;
mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::demo::config::{PushFormat, SimulateConfig};
use crate::demo::personas::{self, PageRef, Persona};
use drive::{Sinks, drive_load, drive_personas, wait_until};
pub use hub::{Hub, SubscriberStats};
use push::spawn_pushers;
pub use routes::HEARTBEAT_FRAME;
use routes::router;

/// Sessions listed by `GET /personas` in load mode at most.
const LISTED_SESSIONS: usize = 100;
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
                config.push_format,
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
            posthog: (config.push_format == PushFormat::Posthog).then(Default::default),
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
    match (&config.push_to, config.push_format) {
        (Some(url), PushFormat::Autoplay) => println!(
            "  webhook   every payload is also POSTed to {url}, signed with --secret ({} in flight)",
            config.push_concurrency
        ),
        (Some(url), PushFormat::Posthog) => println!(
            "  webhook   every posthog-js event is POSTed to {url} as PostHog's webhook body, with X-PostHog-Secret: --secret ({} in flight)",
            config.push_concurrency
        ),
        (None, _) => {}
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
