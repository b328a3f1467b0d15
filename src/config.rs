//! Command line and environment: every setting is a flag with an environment variable, read
//! once at start into typed values (durations parse `90s`, `5m`, `24h`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::clock::parse_duration;
use crate::telemetry::LogFormat;
use crate::web::limits::RateLimitConfig;

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

    /// Shared secret of the PostHog, Amplitude and Segment receivers; enables POST
    /// /ingest/{product_id}, /ingest/amplitude/{product_id} and /ingest/segment/{product_id}.
    #[arg(long, env = "LIVECTX_INGEST_SECRET", hide_env_values = true)]
    pub ingest_secret: Option<String>,

    /// Query parameters kept in URLs from analytics events (comma-separated, e.g. tab,step);
    /// every other query parameter and fragment is stripped before storing.
    #[arg(
        long = "keep-query-param",
        env = "LIVECTX_KEEP_QUERY_PARAMS",
        value_delimiter = ','
    )]
    pub keep_query_params: Vec<String>,

    /// Repeated analytics events (same PostHog uuid, Amplitude $insert_id, Segment messageId)
    /// within this window are stored once.
    #[arg(long, env = "LIVECTX_INGEST_DEDUPE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub ingest_dedupe_window: Duration,

    /// How long a quiet session's first analytics event waits for others to share its chunk
    /// (0: written at once; events arriving during a write still share the next chunk). Each
    /// request is answered once its chunk is stored. At most 1s.
    #[arg(long, env = "LIVECTX_INGEST_BATCH_WINDOW", default_value = "0ms", value_parser = parse_duration)]
    pub ingest_batch_window: Duration,

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
    /// redis://:password@redis:6379/0, or a Redis Cluster by its seed nodes,
    /// redis+cluster://:password@h1:7000,h2:7001,h3:7002 (rediss… for TLS). Unset: sessions
    /// live in this process's memory.
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

    /// Answer reads of unchanged sessions from this replica's cache, told of every change by
    /// Redis (`CLIENT TRACKING` over RESP3, one server only; needs Redis 6 or Valkey). Set
    /// false for a server without RESP3: each read then checks the session's revision.
    #[arg(long, env = "LIVECTX_REDIS_TRACKING", default_value_t = true, action = clap::ArgAction::Set)]
    pub redis_tracking: bool,

    /// While this replica is the only one writing sessions (none other wrote for 10 s), take
    /// the writer lease and answer unchanged sessions from the cache without waiting for a
    /// barrier round trip (one server with tracking only). Every replica honours another's
    /// lease either way; set false on all replicas while any still runs a build without it.
    #[arg(long, env = "LIVECTX_REDIS_WRITER_LEASE", default_value_t = true, action = clap::ArgAction::Set)]
    pub redis_writer_lease: bool,

    /// Turn on the operator console at /console: the key an operator types to log in
    /// (unset: /console is 404).
    #[arg(long, env = "LIVECTX_CONSOLE_KEY", hide_env_values = true)]
    pub console_key: Option<String>,

    /// Show end users' emails and user ids in the console unmasked.
    #[arg(long, env = "LIVECTX_CONSOLE_SHOW_IDENTITIES")]
    pub console_show_identities: bool,

    #[command(flatten)]
    pub autoplay_api: crate::ingest::pull::AutoplayApiConfig,

    #[command(flatten)]
    pub log: LogConfig,
}

/// Why a configuration cannot run. The setting at fault is a field, so callers and tests
/// tell the cases apart without reading the message; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A secret set but blank: an HMAC key everyone knows.
    #[error("{setting} is set but empty: unset it, or set it to a long random value")]
    BlankSecret { setting: &'static str },
    /// A value out of its range, or two settings that contradict each other.
    #[error("{rule}")]
    Rule { setting: &'static str, rule: String },
    /// A file a setting names cannot be read.
    #[error("cannot read {setting} file {}: {source}", path.display())]
    File {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// `setting` breaks `rule` (which names it, and says what to fix).
    pub fn rule(setting: &'static str, rule: impl Into<String>) -> Self {
        Self::Rule {
            setting,
            rule: rule.into(),
        }
    }
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
            ingest_secret: None,
            keep_query_params: Vec::new(),
            ingest_dedupe_window: Duration::from_secs(600),
            ingest_batch_window: Duration::ZERO,
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
            redis_tracking: true,
            redis_writer_lease: true,
            console_key: None,
            console_show_identities: false,
            autoplay_api: Default::default(),
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

    /// `LIVECTX_KEEP_QUERY_PARAMS`, trimmed, blanks dropped.
    pub fn keep_query_params(&self) -> Vec<String> {
        self.keep_query_params
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
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
    pub fn prompt_template(&self) -> Result<String, ConfigError> {
        match self.summary_prompt.as_deref() {
            None => Ok(crate::session::summarizer::DEFAULT_PROMPT.to_string()),
            Some(path) if path.starts_with('@') => {
                let path = PathBuf::from(&path[1..]);
                std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
                    setting: "LIVECTX_SUMMARY_PROMPT",
                    path,
                    source,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
