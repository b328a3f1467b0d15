//! The demo's and the simulator's own command-line settings (`livectx demo`, `livectx
//! simulate`), kept beside the code they configure rather than in the server's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::clock::parse_duration;
use crate::config::LogConfig;

/// A positive, finite speed factor (for clap).
fn parse_speed(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{raw}` is not a positive number like 1, 2.5 or 10"
        )),
    }
}

/// The wire of the simulator's webhook pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PushFormat {
    /// The Autoplay connector's signed webhook.
    Autoplay,
    /// PostHog's HTTP Webhook destination, one posthog-js event per request.
    Posthog,
}

/// Settings of `livectx simulate`: a stand-in Autoplay connector for demos, tests and load.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct SimulateConfig {
    /// Address to listen on; the stream is GET /stream/<product_id>.
    #[arg(long, env = "LIVECTX_SIM_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// Product id of the stream URL and of every payload (another product's URL answers 404).
    #[arg(long, env = "LIVECTX_SIM_PRODUCT", default_value = "acme_prod")]
    pub product_id: String,

    /// Token subscribers must send as "Authorization: Bearer <token>" (401 otherwise).
    #[arg(
        long,
        env = "LIVECTX_SIM_TOKEN",
        default_value = "sim-token",
        hide_env_values = true
    )]
    pub token: String,

    /// Interval of `event: heartbeat` frames on each stream connection.
    #[arg(long, env = "LIVECTX_SIM_HEARTBEAT", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Seed of every random choice: the same seed replays the same sessions and events.
    #[arg(long, env = "LIVECTX_SIM_SEED", default_value_t = 7)]
    pub seed: u64,

    /// Journey seconds per real second (2 plays the personas twice as fast).
    #[arg(long, env = "LIVECTX_SIM_SPEED", default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,

    /// Events queued per subscriber; beyond, a slow subscriber's events are dropped (the
    /// connector keeps 256).
    #[arg(long, env = "LIVECTX_SIM_QUEUE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue: u32,

    /// Also POST every payload to this webhook URL, signed like the connector.
    #[arg(long, env = "LIVECTX_SIM_PUSH_TO", requires = "secret")]
    pub push_to: Option<String>,

    /// What --push-to receives: `autoplay`, the connector's signed webhook (one payload of
    /// actions per request), or `posthog`, PostHog's HTTP Webhook destination (one
    /// `{"event": {...}, "person": {...}}` body per posthog-js event, the secret in
    /// X-PostHog-Secret), for livectx's /ingest/<product_id>.
    #[arg(
        long,
        env = "LIVECTX_SIM_PUSH_FORMAT",
        value_enum,
        default_value = "autoplay"
    )]
    pub push_format: PushFormat,

    /// Shared secret of --push-to: signs X-Connector-Signature and is sent as the bearer token
    /// (autoplay), or is sent as X-PostHog-Secret (posthog).
    #[arg(long, env = "LIVECTX_SIM_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Webhook deliveries in flight at most (each session's deliveries stay in order).
    #[arg(long, env = "LIVECTX_SIM_PUSH_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub push_concurrency: u32,

    /// Load mode: this many concurrent synthetic sessions (the personas' journeys, fresh
    /// identities) instead of the six personas.
    #[arg(long, env = "LIVECTX_SIM_SESSIONS", default_value_t = 0)]
    pub sessions: u64,

    /// Load mode: payloads per second across all sessions.
    #[arg(long, env = "LIVECTX_SIM_RATE", default_value_t = 100.0, value_parser = parse_speed)]
    pub rate: f64,

    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, env = "LIVECTX_SIM_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    #[command(flatten)]
    pub log: LogConfig,
}

impl Default for SimulateConfig {
    /// The command line's defaults, without reading the environment.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            product_id: "acme_prod".to_string(),
            token: "sim-token".to_string(),
            heartbeat: Duration::from_secs(30),
            seed: 7,
            speed: 1.0,
            queue: 256,
            push_to: None,
            secret: None,
            push_format: PushFormat::Autoplay,
            push_concurrency: 4,
            sessions: 0,
            rate: 100.0,
            duration: None,
            log: LogConfig::default(),
        }
    }
}

/// Settings of `livectx demo`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct DemoConfig {
    /// Address livectx listens on (Dify's /retrieval is here).
    #[arg(long, env = "LIVECTX_DEMO_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Address of the in-process simulated connector (port 0: any free port).
    #[arg(
        long,
        env = "LIVECTX_DEMO_SIMULATOR_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub simulator_listen: SocketAddr,

    /// Journey seconds per real second: 5 makes the personas' minutes pass in seconds.
    #[arg(long, env = "LIVECTX_DEMO_SPEED", default_value_t = 5.0, value_parser = parse_speed)]
    pub speed: f64,

    /// Seed of the simulated users (the same seed gives the same session ids).
    #[arg(long, env = "LIVECTX_DEMO_SEED", default_value_t = 7)]
    pub seed: u64,

    /// Persona whose chatbot context is shown: priya, maria, devon, sam or visitor.
    #[arg(long, env = "LIVECTX_DEMO_WATCH", default_value = "priya")]
    pub watch: String,

    /// How often to show that context (0s: never).
    #[arg(long, env = "LIVECTX_DEMO_EVERY", default_value = "5s", value_parser = parse_duration)]
    pub every: Duration,

    /// API key the demo's /retrieval requires ("Authorization: Bearer <key>", as Dify sends it).
    #[arg(
        long,
        env = "LIVECTX_DEMO_API_KEY",
        default_value = "demo-key",
        hide_env_values = true
    )]
    pub api_key: String,

    /// Do not narrate what each persona does; show only the context.
    #[arg(long, env = "LIVECTX_DEMO_QUIET")]
    pub quiet: bool,

    /// Where the activity comes from: `posthog`, the personas as posthog-js events POSTed to
    /// livectx's /ingest/<product_id> (PostHog's HTTP Webhook destination), or `autoplay`, a
    /// simulated Autoplay connector's SSE stream.
    #[arg(
        long,
        env = "LIVECTX_DEMO_SOURCE",
        value_enum,
        default_value = "posthog"
    )]
    pub source: DemoSource,
}

/// The activity source `livectx demo` plays the personas through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoSource {
    /// posthog-js events, PostHog webhook deliveries to /ingest/<product_id>.
    Posthog,
    /// The simulated Autoplay connector's SSE stream.
    Autoplay,
}

impl Default for DemoConfig {
    /// The command line's defaults, without reading the environment.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            simulator_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            speed: 5.0,
            seed: 7,
            watch: "priya".to_string(),
            every: Duration::from_secs(5),
            api_key: "demo-key".to_string(),
            quiet: false,
            source: DemoSource::Posthog,
        }
    }
}
