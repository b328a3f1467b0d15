//! Command line and environment: every setting is a flag with an environment variable, read
//! once at start into typed values (durations parse `90s`, `5m`, `24h`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::api::limits::RateLimitConfig;
use crate::clock::parse_duration;
use crate::telemetry::LogFormat;

/// livectx — live, per-session user activity for support chatbots (Dify External Knowledge
/// API), fed by Autoplay's event stream or webhooks.
#[derive(Debug, Parser)]
#[command(name = "livectx", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: ingest Autoplay activity and answer Dify's /retrieval.
    Serve(Box<ServeConfig>),
    /// Print a signed identifier for LIVECTX_IDENTITY_SECRET deployments.
    Sign(SignArgs),
    /// Run a stand-in Autoplay connector: simulated users on an SSE stream (and signed webhook pushes).
    Simulate(Box<SimulateConfig>),
    /// See the whole loop on one machine: livectx fed by simulated users, queried as Dify would.
    Demo(Box<DemoConfig>),
    /// Benchmark a local livectx (retrieval, ingest, freshness, memory, soak, summarize): prints
    /// a table and writes JSON. Build with --release first.
    Bench(BenchArgs),
    /// The benchmarks' /retrieval load generator (run as a child process by `bench`).
    #[command(hide = true)]
    BenchLoadgen(crate::bench::loadgen::LoadgenArgs),
    /// The memory benchmark's measuring child (run by `bench memory`).
    #[command(hide = true)]
    BenchMemory(crate::bench::memory::MemoryArgs),
    /// Exit 0 when a livectx answers /healthz (for container HEALTHCHECKs without curl).
    Healthcheck(HealthcheckArgs),
}

/// Settings of `livectx healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The health URL to probe.
    #[arg(
        long,
        env = "LIVECTX_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8000/healthz"
    )]
    pub url: String,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Logging settings shared by the commands that run a server.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct LogConfig {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "LIVECTX_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Show end-user emails in logs unmasked (masked as m***@example.com by default).
    #[arg(long, env = "LIVECTX_LOG_IDENTITIES")]
    pub log_identities: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_identities: false,
        }
    }
}

/// Settings of `livectx serve`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "LIVECTX_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// API keys Dify must send as "Authorization: Bearer <key>" (comma-separated; none = open).
    #[arg(
        long = "api-key",
        env = "LIVECTX_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Extra keys accepted only by the MCP endpoint /mcp, besides LIVECTX_API_KEY
    /// (comma-separated). With neither set, /mcp is open like /retrieval.
    #[arg(
        long = "mcp-key",
        env = "LIVECTX_MCP_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub mcp_keys: Vec<String>,

    /// Offer the operator tool list_active_sessions on /mcp. Off by default: it lists other
    /// people's sessions, so an end-user chatbot holding an MCP key must never see it.
    #[arg(long, env = "LIVECTX_MCP_OPERATOR_TOOLS")]
    pub mcp_operator_tools: bool,

    /// Host names (or host:port) /mcp accepts in the Host header, comma-separated; empty or
    /// "*" accepts any, which is what works behind a load balancer. A list protects an open
    /// /mcp on a private network against DNS rebinding.
    #[arg(
        long = "mcp-allowed-host",
        env = "LIVECTX_MCP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub mcp_allowed_hosts: Vec<String>,

    /// The base URL clients reach livectx at (https://livectx.example.com), written into
    /// /openapi.json as the server; default: taken from each request's Host and
    /// X-Forwarded-Proto / X-Forwarded-Host headers.
    #[arg(long, env = "LIVECTX_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Raw chunks kept per session; beyond, the oldest are folded into the summary.
    #[arg(long, env = "LIVECTX_MAX_CHUNKS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_chunks: u32,

    /// Sessions kept; beyond, the least recently active is evicted.
    #[arg(long, env = "LIVECTX_MAX_SESSIONS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,

    /// Idle time after which a session expires.
    #[arg(long, env = "LIVECTX_SESSION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// How far back the "Current User Activity" record looks.
    #[arg(long, env = "LIVECTX_ACTIVITY_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub activity_window: Duration,

    /// Autoplay stream URLs, https://<connector>/stream/<product_id> (comma-separated).
    #[arg(
        long = "stream-url",
        env = "AUTOPLAY_STREAM_URL",
        value_delimiter = ','
    )]
    pub stream_urls: Vec<String>,

    /// Token for the stream ("Authorization: Bearer <token>").
    #[arg(long, env = "AUTOPLAY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Fallback for AUTOPLAY_API_TOKEN (the name older Autoplay docs use).
    #[arg(
        long,
        env = "AUTOPLAY_APP_UNKEY_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub app_unkey_token: Option<String>,

    /// Reconnect when the stream sends no byte (heartbeats included) for this long.
    #[arg(long, env = "LIVECTX_STREAM_WATCHDOG", default_value = "90s", value_parser = parse_duration)]
    pub stream_watchdog: Duration,

    /// Wait after a stream configuration error (400/401/403/404) before retrying.
    #[arg(long, env = "LIVECTX_CONFIG_ERROR_RETRY", default_value = "5m", value_parser = parse_duration)]
    pub config_error_retry: Duration,

    /// Frames buffered between the stream reader and processing; beyond, drops are counted.
    #[arg(long, env = "LIVECTX_INGEST_QUEUE", default_value_t = 8192)]
    pub ingest_queue: usize,

    /// Largest SSE frame accepted; larger ones are skipped and counted.
    #[arg(long, env = "LIVECTX_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Shared secret of the connector's webhook push; enables POST /webhooks/autoplay.
    #[arg(long, env = "AUTOPLAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Repeated webhook deliveries of the same body within this window are ignored.
    #[arg(long, env = "LIVECTX_WEBHOOK_DEDUPE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub webhook_dedupe_window: Duration,

    /// Merge a session's batches arriving within this many milliseconds into one chunk (0: off).
    #[arg(long, env = "LIVECTX_DEBOUNCE_MS", default_value_t = 0)]
    pub debounce_ms: u64,

    /// Unsummarised actions that trigger a background summary of a session.
    #[arg(long, env = "LIVECTX_SUMMARY_THRESHOLD", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub summary_threshold: u32,

    /// LLM calls in flight at most.
    #[arg(long, env = "LIVECTX_LLM_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub llm_concurrency: u32,

    /// OpenAI-compatible API base (https://api.openai.com/v1, http://localhost:11434/v1 for Ollama, ...).
    /// Setting it, or OPENAI_API_KEY, switches summaries from the built-in summarizer to the LLM.
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,

    /// API key of the LLM endpoint.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,

    /// Model name.
    #[arg(long, env = "LIVECTX_LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,

    /// Sampling temperature.
    #[arg(long, env = "LIVECTX_LLM_TEMPERATURE", default_value_t = 0.2)]
    pub llm_temperature: f32,

    /// Most tokens an LLM summary may use.
    #[arg(long, env = "LIVECTX_LLM_MAX_TOKENS", default_value_t = 300)]
    pub llm_max_tokens: u32,

    /// Timeout of one LLM call.
    #[arg(long, env = "LIVECTX_LLM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub llm_timeout: Duration,

    /// Summary prompt template with {previous_summary} and {actions}; "@path" reads a file.
    #[arg(long, env = "LIVECTX_SUMMARY_PROMPT")]
    pub summary_prompt: Option<String>,

    /// Require identifiers from end users (query line, metadata, MCP, REST) to be signed with
    /// this secret (see `livectx sign`).
    #[arg(long, env = "LIVECTX_IDENTITY_SECRET", hide_env_values = true)]
    pub identity_secret: Option<String>,

    /// Refuse email lookups (emails are guessable; session ids are not).
    #[arg(long, env = "LIVECTX_NO_EMAIL_LOOKUP")]
    pub no_email_lookup: bool,

    /// Keep sessions across restarts in an embedded database in this directory (memory store only).
    #[arg(long, env = "LIVECTX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// How often changed sessions are written to --data-dir (a crash loses at most this much).
    #[arg(long, env = "LIVECTX_SNAPSHOT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,

    /// Requests per second allowed per client IP (IPv6: per /64) on every route but /healthz,
    /// /readyz and /metrics; beyond, 429. 0 turns the limit off.
    #[arg(long, env = "LIVECTX_RATE_LIMIT", default_value_t = 0.0, value_parser = parse_rate)]
    pub rate_limit: f64,

    /// Requests a client may send at once on top of the rate (default: two seconds' worth).
    #[arg(long, env = "LIVECTX_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,

    /// Count requests against the last X-Forwarded-For address instead of the TCP peer. Only
    /// behind your own reverse proxy, which must append the client's address.
    #[arg(long, env = "LIVECTX_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Longest a request may take to produce its response head; beyond, 503.
    #[arg(long, env = "LIVECTX_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Wait at most this long for in-flight requests and tasks on shutdown.
    #[arg(long, env = "LIVECTX_SHUTDOWN_TIMEOUT", default_value = "8s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Share sessions between replicas through this Redis (or Valkey), e.g.
    /// redis://:password@redis:6379/0. Unset: sessions live in this process's memory.
    #[arg(long, env = "LIVECTX_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "LIVECTX_REDIS_PREFIX", default_value = crate::session::redis::DEFAULT_PREFIX)]
    pub redis_prefix: String,

    /// How long a stream's lease lasts without renewal: the longest a stopped leader blocks
    /// its stream before another replica takes over.
    #[arg(long, env = "LIVECTX_LEASE_TTL", default_value = "10s", value_parser = parse_lease_ttl)]
    pub lease_ttl: Duration,

    /// Ingestion writes kept in memory while Redis is unreachable, replayed in order when it
    /// is back; beyond, writes are refused and counted.
    #[arg(long, env = "LIVECTX_REDIS_BUFFER", default_value_t = crate::session::buffered::DEFAULT_BUFFER_BOUND)]
    pub redis_buffer: usize,

    /// Turn on the operator console at /console: the key an operator types to log in
    /// (unset: /console is 404).
    #[arg(long, env = "LIVECTX_CONSOLE_KEY", hide_env_values = true)]
    pub console_key: Option<String>,

    /// Show end users' emails and user ids in the console unmasked.
    #[arg(long, env = "LIVECTX_CONSOLE_SHOW_IDENTITIES")]
    pub console_show_identities: bool,

    #[command(flatten)]
    pub log: LogConfig,
}

/// A lease TTL: at least 300 ms, so that renewals (every third of it) stay meaningful.
fn parse_lease_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = parse_duration(raw)?;
    if ttl < Duration::from_millis(300) {
        return Err("the lease TTL must be at least 300ms".to_string());
    }
    Ok(ttl)
}

impl Default for ServeConfig {
    /// The same values as the command line's defaults, without reading the environment
    /// (tests and embedded uses must not pick up a developer's OPENAI_API_KEY).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            api_keys: Vec::new(),
            mcp_keys: Vec::new(),
            mcp_operator_tools: false,
            mcp_allowed_hosts: Vec::new(),
            public_url: None,
            max_chunks: 50,
            max_sessions: 100_000,
            session_ttl: Duration::from_secs(24 * 3600),
            activity_window: Duration::from_secs(120),
            stream_urls: Vec::new(),
            api_token: None,
            app_unkey_token: None,
            stream_watchdog: Duration::from_secs(90),
            config_error_retry: Duration::from_secs(300),
            ingest_queue: 8192,
            max_frame_bytes: 1024 * 1024,
            webhook_secret: None,
            webhook_dedupe_window: Duration::from_secs(600),
            debounce_ms: 0,
            summary_threshold: 20,
            llm_concurrency: 8,
            openai_base_url: None,
            openai_api_key: None,
            llm_model: "gpt-4o-mini".to_string(),
            llm_temperature: 0.2,
            llm_max_tokens: 300,
            llm_timeout: Duration::from_secs(30),
            summary_prompt: None,
            identity_secret: None,
            no_email_lookup: false,
            data_dir: None,
            snapshot_interval: Duration::from_secs(5),
            rate_limit: 0.0,
            rate_limit_burst: None,
            trust_forwarded_for: false,
            request_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(8),
            redis_url: None,
            redis_prefix: crate::session::redis::DEFAULT_PREFIX.to_string(),
            lease_ttl: crate::cluster::redis_lease::DEFAULT_LEASE_TTL,
            redis_buffer: crate::session::buffered::DEFAULT_BUFFER_BOUND,
            console_key: None,
            console_show_identities: false,
            log: LogConfig::default(),
        }
    }
}

/// The public OpenAI endpoint, used when only OPENAI_API_KEY is set.
pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";

impl ServeConfig {
    /// The stream token: AUTOPLAY_API_TOKEN, else AUTOPLAY_APP_UNKEY_TOKEN, trimmed.
    pub fn stream_token(&self) -> Option<String> {
        [&self.api_token, &self.app_unkey_token]
            .into_iter()
            .flatten()
            .map(|t| t.trim().to_string())
            .find(|t| !t.is_empty())
    }

    /// Stream URLs, trimmed, blanks dropped.
    pub fn streams(&self) -> Vec<String> {
        self.stream_urls
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The LLM endpoint, when one is configured (a key, or an explicit base URL for local
    /// servers that need no key).
    pub fn llm_base_url(&self) -> Option<String> {
        let key = self
            .openai_api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let base = self
            .openai_base_url
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty());
        match (base, key) {
            (Some(base), _) => Some(base.to_string()),
            (None, Some(_)) => Some(OPENAI_DEFAULT_BASE.to_string()),
            (None, None) => None,
        }
    }

    /// The per-IP rate limit settings (a rate of 0 means off).
    pub fn rate_limit_config(&self) -> RateLimitConfig {
        RateLimitConfig {
            per_second: self.rate_limit,
            burst: self
                .rate_limit_burst
                .unwrap_or_else(|| RateLimitConfig::default_burst(self.rate_limit)),
            trust_forwarded_for: self.trust_forwarded_for,
        }
    }

    /// The summary prompt: inline text, a file (`@path`), or the default.
    pub fn prompt_template(&self) -> Result<String, String> {
        match self.summary_prompt.as_deref() {
            None => Ok(crate::session::summarizer::DEFAULT_PROMPT.to_string()),
            Some(path) if path.starts_with('@') => {
                let path = PathBuf::from(&path[1..]);
                std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "cannot read LIVECTX_SUMMARY_PROMPT file {}: {e}",
                        path.display()
                    )
                })
            }
            Some(text) => Ok(text.to_string()),
        }
    }
}

/// A rate in requests per second: a finite number, 0 or more.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of requests per second"))?;
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(format!(
            "{text:?}: the rate must be 0 (off) or a positive number"
        ))
    }
}

/// Settings of `livectx sign`.
#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// The identifier to sign (a session id, email or user id).
    pub id: String,
    /// The secret the server has as LIVECTX_IDENTITY_SECRET.
    #[arg(long, env = "LIVECTX_IDENTITY_SECRET", hide_env_values = true)]
    pub secret: String,
    /// How long the signed identifier stays valid.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// A positive, finite speed factor (for clap).
fn parse_speed(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{raw}` is not a positive number like 1, 2.5 or 10"
        )),
    }
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

    /// Shared secret of --push-to: signs X-Connector-Signature and is sent as the bearer token.
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
        }
    }
}

/// Settings of `livectx bench`. Scenario-specific defaults are noted per option.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: crate::bench::Scenario,

    /// Directory for the JSON results (`<dir>/<scenario>.json`).
    #[arg(long, default_value = "bench-results")]
    pub out_dir: PathBuf,

    /// Measuring window: per connection level for retrieval (default 10s), the probing window
    /// for freshness (20s), the whole run for soak (10m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Warm-up before each measuring window (retrieval, freshness).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Sessions (comma-separated for memory): retrieval 10000, memory 10000,100000,
    /// freshness 1000, soak 5000 people, summarize 1000.
    #[arg(long, value_delimiter = ',')]
    pub sessions: Vec<u64>,

    /// Load-generator connections for retrieval.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub connections: Vec<usize>,

    /// Runs of each retrieval level; the table shows the run with the median requests/s.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub repeat: u32,

    /// SSE frames the ingest scenario sends.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,

    /// Actions in each ingest frame.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub actions_per_frame: u64,

    /// Frames per second: freshness 1000, soak 1000, summarize 2000.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Answer time of the fake LLM.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub llm_latency: Duration,

    /// Also benchmark retrieval on this Redis (keys under a unique prefix, deleted afterwards).
    #[arg(long, env = "LIVECTX_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_command_line() {
        let relevant = std::env::vars().any(|(k, _)| {
            (k.starts_with("LIVECTX_") && k != "LIVECTX_TEST_REDIS_URL")
                || k.starts_with("AUTOPLAY_")
                || k.starts_with("OPENAI_")
        });
        if relevant {
            eprintln!("skipped: livectx environment variables are set");
            return;
        }
        let cli = Cli::try_parse_from(["livectx", "serve"]).unwrap();
        let Command::Serve(parsed) = cli.command else {
            panic!("serve")
        };
        assert_eq!(*parsed, ServeConfig::default());
        let cli = Cli::try_parse_from(["livectx", "simulate"]).unwrap();
        let Command::Simulate(parsed) = cli.command else {
            panic!("simulate")
        };
        assert_eq!(*parsed, SimulateConfig::default());
        let cli = Cli::try_parse_from(["livectx", "demo"]).unwrap();
        let Command::Demo(parsed) = cli.command else {
            panic!("demo")
        };
        assert_eq!(*parsed, DemoConfig::default());
    }

    #[test]
    fn simulator_flags_are_checked() {
        assert!(Cli::try_parse_from(["livectx", "simulate", "--speed", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["livectx", "simulate", "--push-to", "http://x/"]).is_err(),
            "pushing needs the secret"
        );
        assert!(
            Cli::try_parse_from([
                "livectx",
                "simulate",
                "--push-to",
                "http://x/",
                "--secret",
                "s"
            ])
            .is_ok()
        );
    }

    #[test]
    fn llm_is_used_only_when_configured() {
        let mut c = ServeConfig::default();
        assert_eq!(c.llm_base_url(), None);
        c.openai_api_key = Some("sk".into());
        assert_eq!(c.llm_base_url().as_deref(), Some(OPENAI_DEFAULT_BASE));
        c.openai_api_key = None;
        c.openai_base_url = Some("http://127.0.0.1:11434/v1".into());
        assert_eq!(
            c.llm_base_url().as_deref(),
            Some("http://127.0.0.1:11434/v1")
        );
    }

    #[test]
    fn token_falls_back_and_is_trimmed() {
        let c = ServeConfig {
            api_token: Some("  ".into()),
            app_unkey_token: Some(" tok \n".into()),
            ..ServeConfig::default()
        };
        assert_eq!(c.stream_token().as_deref(), Some("tok"));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
