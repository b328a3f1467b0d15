//! Logs and metrics.
//!
//! Metrics live in one [`Metrics`] value per running application (not a process-global
//! registry), so integration tests that start several servers in one process see exactly what
//! their own server counted.

pub mod handles;
pub mod http;
pub mod pull;

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

static LOG_IDENTITIES: AtomicBool = AtomicBool::new(false);

/// One log line per interval for an event that can repeat thousands of times a second (a
/// refused payload, a rate-limited client, a dropped frame): the metric counts every
/// occurrence, the log line says how many it held back, and the log stays readable.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    last_line: Option<Instant>,
    held_back: u64,
}

impl LogThrottle {
    /// A throttle letting one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(ThrottleState {
                last_line: None,
                held_back: 0,
            }),
        }
    }

    /// Note `count` occurrences now; see [`LogThrottle::note_at`].
    pub fn note(&self, count: u64) -> Option<u64> {
        self.note_at(Instant::now(), count)
    }

    /// Note `count` occurrences at `now`. `Some(held_back)` when a line should be written
    /// (`held_back`: earlier occurrences that were not logged), `None` when it should not.
    pub fn note_at(&self, now: Instant, count: u64) -> Option<u64> {
        let mut state = crate::sync::lock(&self.state);
        let due = state
            .last_line
            .is_none_or(|at| now.saturating_duration_since(at) >= self.interval);
        if !due {
            state.held_back += count;
            return None;
        }
        state.last_line = Some(now);
        Some(std::mem::take(&mut state.held_back))
    }
}

/// Install the global tracing subscriber (level from `RUST_LOG`, default `info`).
/// Safe to call more than once: later calls are ignored.
pub fn init_tracing(format: LogFormat, log_identities: bool) {
    init_tracing_with_writer(format, log_identities, std::io::stderr);
}

/// Like [`init_tracing`], writing to `writer` (tests capture logs this way).
pub fn init_tracing_with_writer<W>(format: LogFormat, log_identities: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    LOG_IDENTITIES.store(log_identities, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// An end-user identifier as it may appear in logs: emails are masked (`m***@example.com`)
/// unless `--log-identities` was given. Session and user ids are pseudonymous and shown.
pub struct Person<'a>(pub &'a str);

impl fmt::Display for Person<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if LOG_IDENTITIES.load(Ordering::Relaxed) {
            return f.write_str(self.0);
        }
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                write!(f, "{first}***@{domain}")
            }
            None => f.write_str(self.0),
        }
    }
}

/// A URL as it may appear in logs and `/readyz`: without user, password, query or fragment
/// (stream tokens and Redis passwords live there).
pub fn redact_url(raw: &str) -> String {
    match reqwest::Url::parse(raw.trim()) {
        Ok(mut url) => {
            // Errors here mean the URL cannot carry credentials at all: nothing to remove.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameLabels {
    pub stream: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PayloadLabels {
    pub source: &'static str,
    pub payload_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub source: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceEventLabels {
    pub source: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconnectLabels {
    pub stream: String,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub stream: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SummaryLabels {
    pub summarizer: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub via: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn llm_histogram() -> Histogram {
    // 10 ms .. ~82 s
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Every metric livectx exports. Names follow Prometheus conventions (`_total` for counters is
/// added by the encoder, `_seconds` for durations).
pub struct Metrics {
    registry: Registry,
    pub sse_frames: Family<FrameLabels, Counter>,
    pub payloads: Family<PayloadLabels, Counter>,
    pub refused: Family<RefusedLabels, Counter>,
    pub source_events: Family<SourceEventLabels, Counter>,
    pub ingest_queue_dropped: Family<StreamLabels, Counter>,
    pub stream_reconnects: Family<ReconnectLabels, Counter>,
    pub stream_up: Family<StreamLabels, Gauge>,
    pub stream_config_errors: Family<StatusLabels, Counter>,
    pub sessions: Gauge,
    pub sessions_created: Counter,
    pub sessions_evicted: Counter,
    pub sessions_expired: Counter,
    pub chunks: Gauge,
    pub chunks_stored: Counter,
    pub actions_stored: Counter,
    pub debounce_merged: Counter,
    pub summaries: Family<SummaryLabels, Counter>,
    pub summary_queue: Gauge,
    pub llm_request_duration: Histogram,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub identity_lookups: Family<LookupLabels, Counter>,
    /// Handles on `identity_lookups`, counted on every retrieval (see [`handles`]).
    identity_lookup_handles: handles::CounterHandles<(&'static str, &'static str), LookupLabels>,
    pub identity_rejected: Family<ReasonLabels, Counter>,
    pub rate_limited: Family<RouteLabels, Counter>,
    pub request_timeouts: Family<RouteLabels, Counter>,
    /// Per-route handles on `http_requests` and `http_request_duration` (see [`http`]).
    pub http_routes: http::HttpRoutes,
    pub store_errors: Family<OpLabels, Counter>,
    pub mcp_tool_calls: Family<ToolLabels, Counter>,
    pub redis_buffered: Gauge,
    pub redis_buffer_dropped: Counter,
    pub redis_replayed: Counter,
    pub autoplay_pull: pull::PullMetrics,
    llm_calls: AtomicU64,
    llm_failures: AtomicU64,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("livectx");
        let http_requests = Family::default();
        let identity_lookups = Family::default();
        let http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let m = Self {
            registry: Registry::default(),
            sse_frames: Family::default(),
            payloads: Family::default(),
            refused: Family::default(),
            source_events: Family::default(),
            ingest_queue_dropped: Family::default(),
            stream_reconnects: Family::default(),
            stream_up: Family::default(),
            stream_config_errors: Family::default(),
            sessions: Gauge::default(),
            sessions_created: Counter::default(),
            sessions_evicted: Counter::default(),
            sessions_expired: Counter::default(),
            chunks: Gauge::default(),
            chunks_stored: Counter::default(),
            actions_stored: Counter::default(),
            debounce_merged: Counter::default(),
            summaries: Family::default(),
            summary_queue: Gauge::default(),
            llm_request_duration: llm_histogram(),
            http_routes: http::HttpRoutes::new(
                http_requests.clone(),
                http_request_duration.clone(),
            ),
            http_requests,
            http_request_duration,
            webhook_deliveries: Family::default(),
            identity_lookup_handles: handles::CounterHandles::new(identity_lookups.clone()),
            identity_lookups,
            identity_rejected: Family::default(),
            rate_limited: Family::default(),
            request_timeouts: Family::default(),
            store_errors: Family::default(),
            mcp_tool_calls: Family::default(),
            redis_buffered: Gauge::default(),
            redis_buffer_dropped: Counter::default(),
            redis_replayed: Counter::default(),
            autoplay_pull: pull::PullMetrics::default(),
            llm_calls: AtomicU64::new(0),
            llm_failures: AtomicU64::new(0),
        };
        let r = &mut registry;
        r.register(
            "sse_frames",
            "SSE frames read from Autoplay streams, by event type",
            m.sse_frames.clone(),
        );
        r.register(
            "payloads",
            "Payloads accepted, by source (sse, webhook) and payload type",
            m.payloads.clone(),
        );
        r.register(
            "payloads_refused",
            "Payloads or frames refused, by source and reason (no_session, malformed, oversize, invalid_utf8, unknown_type, ...)",
            m.refused.clone(),
        );
        r.register(
            "source_events",
            "Analytics events received (posthog, amplitude, segment), by outcome (stored, duplicate, refused, failed)",
            m.source_events.clone(),
        );
        r.register(
            "ingest_queue_dropped",
            "Frames dropped because processing fell behind the stream reader",
            m.ingest_queue_dropped.clone(),
        );
        r.register(
            "stream_reconnects",
            "Stream reconnects, by cause",
            m.stream_reconnects.clone(),
        );
        r.register(
            "stream_up",
            "1 while the stream is connected and has delivered a frame",
            m.stream_up.clone(),
        );
        r.register(
            "stream_config_errors",
            "Stream answers that mean a configuration error (400, 401, 403, 404), by status",
            m.stream_config_errors.clone(),
        );
        r.register("sessions", "Sessions currently held", m.sessions.clone());
        r.register(
            "sessions_created",
            "Sessions created",
            m.sessions_created.clone(),
        );
        r.register(
            "sessions_evicted",
            "Sessions evicted to stay under --max-sessions",
            m.sessions_evicted.clone(),
        );
        r.register(
            "sessions_expired",
            "Sessions expired after --session-ttl idle",
            m.sessions_expired.clone(),
        );
        r.register(
            "chunks",
            "Raw action chunks currently held",
            m.chunks.clone(),
        );
        r.register(
            "chunks_stored",
            "Action chunks stored",
            m.chunks_stored.clone(),
        );
        r.register("actions_stored", "Actions stored", m.actions_stored.clone());
        r.register(
            "debounce_merged",
            "Batches merged into a pending chunk by the debounce window",
            m.debounce_merged.clone(),
        );
        r.register(
            "summaries",
            "Summaries by summarizer (llm, builtin, connector) and outcome (ok, failed, stale, fallback)",
            m.summaries.clone(),
        );
        r.register(
            "summary_queue",
            "Sessions whose summary is being written or waits for a retry",
            m.summary_queue.clone(),
        );
        r.register(
            "llm_request_duration_seconds",
            "LLM call latency",
            m.llm_request_duration.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.http_request_duration.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome (ok, bad_signature, rate_limited, duplicate, malformed, ignored, too_large, failed)",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "identity_lookups",
            "Identity resolutions by route (metadata, query, knowledge_id, ...) and result",
            m.identity_lookups.clone(),
        );
        r.register(
            "identity_rejected",
            "Identifiers refused (unresolved_variable, unsigned, bad_signature, expired, email_lookup_disabled)",
            m.identity_rejected.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by the per-IP rate limit (LIVECTX_RATE_LIMIT), by route",
            m.rate_limited.clone(),
        );
        r.register(
            "request_timeouts",
            "Requests answered 503 after LIVECTX_REQUEST_TIMEOUT, by route",
            m.request_timeouts.clone(),
        );
        r.register(
            "store_errors",
            "Storage backend errors by operation",
            m.store_errors.clone(),
        );
        r.register(
            "mcp_tool_calls",
            "MCP tool calls by tool and outcome (found, unknown, rejected, ok, invalid, store_error)",
            m.mcp_tool_calls.clone(),
        );
        r.register(
            "redis_buffered_writes",
            "Writes buffered in memory while Redis is unreachable",
            m.redis_buffered.clone(),
        );
        r.register(
            "redis_buffer_dropped",
            "Ingestion writes dropped during a Redis outage (buffer full, or refused when replayed)",
            m.redis_buffer_dropped.clone(),
        );
        r.register(
            "redis_replayed",
            "Buffered writes replayed after Redis came back",
            m.redis_replayed.clone(),
        );
        m.autoplay_pull.register(r);
        Self { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count a refused payload or frame.
    pub fn refuse(&self, source: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels { source, reason })
            .inc();
    }

    /// Count action entries skipped inside an accepted payload (e.g. not objects).
    pub fn refused_actions(&self, source: &'static str, n: u64) {
        self.refused
            .get_or_create(&RefusedLabels {
                source,
                reason: "action_not_object",
            })
            .inc_by(n);
    }

    /// Count a summary outcome.
    pub fn summary(&self, summarizer: &'static str, outcome: &'static str) {
        self.summaries
            .get_or_create(&SummaryLabels {
                summarizer,
                outcome,
            })
            .inc();
    }

    /// Record one LLM call for the readiness error rate.
    pub fn llm_call(&self, ok: bool, seconds: f64) {
        self.llm_calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.llm_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.llm_request_duration.observe(seconds);
    }

    /// LLM calls and failures so far.
    pub fn llm_totals(&self) -> (u64, u64) {
        (
            self.llm_calls.load(Ordering::Relaxed),
            self.llm_failures.load(Ordering::Relaxed),
        )
    }

    /// Count an identity lookup.
    pub fn lookup(&self, via: &'static str, result: &'static str) {
        self.identity_lookup_handles
            .inc((via, result), || LookupLabels { via, result });
    }

    /// Count a refused identifier.
    pub fn reject_identity(&self, reason: &'static str) {
        self.identity_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Count an MCP tool call.
    pub fn mcp_tool_call(&self, tool: &'static str, outcome: &'static str) {
        self.mcp_tool_calls
            .get_or_create(&ToolLabels { tool, outcome })
            .inc();
    }

    /// Count a storage error.
    pub fn store_error(&self, op: &'static str) {
        self.store_errors.get_or_create(&OpLabels { op }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_queries() {
        assert_eq!(
            redact_url("https://user:pw@c.example/stream/p?token=x#f"),
            "https://c.example/stream/p"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9/stream/p"),
            "http://127.0.0.1:9/stream/p"
        );
        // No path after the host: the case a hand-written split got wrong.
        assert_eq!(
            redact_url("redis://:s3cretpw@127.0.0.1:16390"),
            "redis://127.0.0.1:16390"
        );
        assert_eq!(
            redact_url("redis://default:s3cretpw@redis:6379/0"),
            "redis://redis:6379/0"
        );
        assert_eq!(redact_url("not a url with pw"), "<unparseable URL>");
    }

    #[test]
    fn a_throttle_logs_once_per_interval_and_counts_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.note_at(t0, 1), Some(0));
        assert_eq!(throttle.note_at(t0 + Duration::from_secs(1), 1), None);
        assert_eq!(throttle.note_at(t0 + Duration::from_secs(2), 5), None);
        assert_eq!(throttle.note_at(t0 + Duration::from_secs(10), 1), Some(6));
        assert_eq!(throttle.note_at(t0 + Duration::from_secs(11), 1), None);
    }

    #[test]
    fn masks_emails_unless_asked() {
        assert_eq!(
            Person("maria.lopez@example.com").to_string(),
            "m***@example.com"
        );
        assert_eq!(Person("usr_7Qk2").to_string(), "usr_7Qk2");
    }

    #[test]
    fn encodes_counters_with_prefix_and_total_suffix() {
        let m = Metrics::new();
        m.refuse("sse", "no_session");
        let text = m.encode();
        assert!(
            text.contains("livectx_payloads_refused_total{source=\"sse\",reason=\"no_session\"} 1"),
            "{text}"
        );
    }
}
