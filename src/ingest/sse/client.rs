//! The stream consumer: one long-lived `GET /stream/<product_id>` per configured URL.
//!
//! Unlike Autoplay's own client it: treats 400/401/403/404 as configuration errors (one clear
//! log line, a metric, a slow retry — never a hot loop); backs off exponentially with jitter on
//! 408/429/5xx and network errors, resetting only after a valid frame; reconnects when no byte
//! (heartbeats included) arrives within the watchdog; sends `Last-Event-ID` once the stream has
//! carried ids; never stalls the socket on processing (frames cross a bounded queue, and a full
//! queue drops and counts instead of blocking); and logs and records every reconnect gap.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::cluster::{Leadership, LeaseGuard};
use crate::ingest::{Channel, Ingestor, Source};
use crate::session::model::Gap;
use crate::session::store::Fence;
use crate::sources::autoplay::sse::{DEFAULT_MAX_FRAME_BYTES, SseItem, SseParser};
use crate::telemetry::{
    FrameLabels, LogThrottle, Metrics, ReconnectLabels, StatusLabels, StreamLabels,
};

/// Settings of one stream consumer.
#[derive(Clone)]
pub struct StreamConfig {
    pub url: String,
    pub token: Option<String>,
    /// Reconnect when no byte arrived for this long.
    pub watchdog: Duration,
    /// Wait after a configuration error (400/401/403/404) before trying again.
    pub config_error_retry: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Frames waiting for processing at most; beyond it frames are dropped and counted.
    pub queue_capacity: usize,
    pub max_frame_bytes: usize,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("watchdog", &self.watchdog)
            .finish_non_exhaustive()
    }
}

impl StreamConfig {
    /// Defaults for everything but the URL and token.
    pub fn new(url: impl Into<String>, token: Option<String>) -> Self {
        Self {
            url: url.into(),
            token,
            watchdog: Duration::from_secs(90),
            config_error_retry: Duration::from_secs(300),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            queue_capacity: 8192,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

pub use crate::cluster::product_of;
pub use crate::stream_status::{StreamStatus, StreamStatusView};

pub use crate::telemetry::redact_url;

/// At most one log line per this interval for a repeated problem (metrics count each one).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now (between 50 % and 100 % of the current step); doubles the step.
    fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The server's `retry:` hint sets the first step.
    fn set_initial(&mut self, initial: Duration) {
        self.initial = initial.clamp(Duration::from_millis(100), self.max);
    }
}

/// How a connection attempt ended before streaming.
enum Refusal {
    /// 400/401/403/404 and other permanent answers: fix the configuration.
    Config { status: u16, hint: &'static str },
    /// 408/429/5xx: try again soon.
    Retry { status: u16 },
    /// No answer at all.
    Network(String),
}

fn classify(status: u16) -> Result<(), Refusal> {
    match status {
        200 => Ok(()),
        408 | 429 | 500..=599 => Err(Refusal::Retry { status }),
        401 => Err(Refusal::Config {
            status,
            hint: "the connector rejected the token: check AUTOPLAY_API_TOKEN is this product's current token",
        }),
        403 => Err(Refusal::Config {
            status,
            hint: "the token may not read this product's stream: check the token and the product id",
        }),
        404 => Err(Refusal::Config {
            status,
            hint: "unknown product: AUTOPLAY_STREAM_URL must be https://<connector>/stream/<product_id>",
        }),
        400 => Err(Refusal::Config {
            status,
            hint: "the product is not in event-stream mode (it may be set up for webhook push instead)",
        }),
        _ => Err(Refusal::Config {
            status,
            hint: "the connector refused the request; check AUTOPLAY_STREAM_URL",
        }),
    }
}

/// Why a connection ended (a metrics label).
#[derive(Debug, Clone, Copy)]
enum Cause {
    Eof,
    ReadError,
    Watchdog,
    LeaseLost,
    Shutdown,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Self::Eof => "eof",
            Self::ReadError => "read_error",
            Self::Watchdog => "watchdog",
            Self::LeaseLost => "lease_lost",
            Self::Shutdown => "shutdown",
        }
    }
}

/// One frame handed from the socket reader to the processor.
struct Frame {
    data: String,
}

/// A running stream consumer.
pub struct StreamHandle {
    pub status: Arc<StreamStatus>,
    /// Ends on shutdown with the lease still held (if any): the caller releases it once what
    /// was read is stored, so a successor never races the last writes.
    pub task: JoinHandle<Option<LeaseGuard>>,
}

/// Consumes one Autoplay stream.
pub struct StreamConsumer {
    config: StreamConfig,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    leadership: Option<Arc<dyn Leadership>>,
    http: reqwest::Client,
    status: Arc<StreamStatus>,
    product: Option<String>,
    /// Frames dropped because processing fell behind: one log line per interval.
    drop_log: LogThrottle,
    /// Frames skipped as oversized or not UTF-8: one log line per interval.
    refuse_log: LogThrottle,
}

impl StreamConsumer {
    /// Prepare a consumer; nothing connects until [`StreamConsumer::spawn`].
    pub fn new(
        config: StreamConfig,
        ingestor: Arc<Ingestor>,
        metrics: Arc<Metrics>,
        leadership: Option<Arc<dyn Leadership>>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("livectx/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let product = product_of(&config.url);
        let label = product.clone().unwrap_or_else(|| redact_url(&config.url));
        let status = Arc::new(StreamStatus::new(label, &config.url));
        Ok(Self {
            config,
            ingestor,
            metrics,
            leadership,
            http,
            status,
            product,
            drop_log: LogThrottle::new(LOG_INTERVAL),
            refuse_log: LogThrottle::new(LOG_INTERVAL),
        })
    }

    /// Start consuming until `shutdown`; the handle exposes the live status.
    pub fn spawn(self, shutdown: CancellationToken) -> StreamHandle {
        let status = Arc::clone(&self.status);
        let task = tokio::spawn(self.run(shutdown));
        StreamHandle { status, task }
    }

    fn labels(&self) -> StreamLabels {
        StreamLabels {
            stream: self.status.label.clone(),
        }
    }

    async fn run(self, shutdown: CancellationToken) -> Option<LeaseGuard> {
        let stream_key = self.config.url.clone();
        loop {
            let guard = match &self.leadership {
                Some(leadership) => {
                    tracing::info!(stream = %self.status.label, "waiting for this stream's lease");
                    match leadership.acquire(&stream_key, &shutdown).await {
                        Some(guard) => Some(guard),
                        None => return None,
                    }
                }
                None => None,
            };
            self.status.set_leading(true);
            if let Some(guard) = &guard {
                tracing::info!(stream = %self.status.label, "this replica now consumes the stream");
                if let Some(seen) = guard.previous_holder_seen {
                    tracing::warn!(
                        stream = %self.status.label,
                        from = %clock::format_utc(seen),
                        to = %clock::format_utc(clock::now()),
                        "took over from a replica that stopped: events in between may be missing"
                    );
                    if let Some(product) = self.product.clone() {
                        let gap = Gap {
                            from: seen,
                            to: clock::now(),
                        };
                        // In the background: with a shared store, marking every recently
                        // active session takes a while, and the stream must not wait for it.
                        let ingestor = Arc::clone(&self.ingestor);
                        tokio::spawn(async move { ingestor.record_gap(&product, gap).await });
                    }
                }
            }
            let lost = guard
                .as_ref()
                .map_or_else(CancellationToken::new, |g| g.lost.clone());
            self.consume(&shutdown, &lost, guard.as_ref()).await;
            self.status.set_leading(false);
            if shutdown.is_cancelled() || guard.is_none() {
                return guard;
            }
            tracing::warn!(stream = %self.status.label, "lost this stream's lease; another replica consumes it now");
        }
    }

    /// Connect, read, reconnect — until `stop`. The processor drains the queue before return.
    async fn consume(
        &self,
        shutdown: &CancellationToken,
        lost: &CancellationToken,
        guard: Option<&LeaseGuard>,
    ) {
        let (tx, rx) = mpsc::channel::<Frame>(self.config.queue_capacity.max(1));
        let lease = match (&self.leadership, guard) {
            (Some(leadership), Some(guard)) => Some((Arc::clone(leadership), guard.clone())),
            _ => None,
        };
        let processor = tokio::spawn(process_frames(
            rx,
            Arc::clone(&self.ingestor),
            self.product.clone(),
            lease,
        ));
        let mut parser = SseParser::new(self.config.max_frame_bytes);
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut gap_from: Option<f64> = None;
        while !shutdown.is_cancelled() && !lost.is_cancelled() {
            let response = tokio::select! {
                _ = stopped(shutdown, lost) => break,
                r = self.connect(parser.last_event_id()) => r,
            };
            let response = match response {
                Ok(response) => response,
                Err(refusal) => {
                    let wait = self.report_refusal(refusal, &mut backoff);
                    tokio::select! {
                        _ = stopped(shutdown, lost) => break,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            tracing::info!(stream = %self.status.label, url = %self.status.url, "connected to the event stream");
            let cause = self
                .read(
                    response,
                    shutdown,
                    lost,
                    &mut parser,
                    &mut backoff,
                    &mut gap_from,
                    &tx,
                )
                .await;
            let was_connected = self.status.swap_connected(false);
            self.metrics.stream_up.get_or_create(&self.labels()).set(0);
            parser.reset_frame();
            if matches!(cause, Cause::Shutdown | Cause::LeaseLost) {
                break;
            }
            self.status.count_reconnect();
            self.metrics
                .stream_reconnects
                .get_or_create(&ReconnectLabels {
                    stream: self.status.label.clone(),
                    cause: cause.as_str(),
                })
                .inc();
            let last = self.status.last_frame_at();
            if was_connected && last > 0.0 {
                gap_from = Some(last);
            }
            let wait = backoff.next_delay();
            tracing::warn!(
                stream = %self.status.label,
                cause = cause.as_str(),
                retry_in_ms = wait.as_millis() as u64,
                "event stream ended; reconnecting"
            );
            self.status
                .set_error(Some(format!("disconnected: {}", cause.as_str())));
            tokio::select! {
                _ = stopped(shutdown, lost) => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        drop(tx);
        let _ = processor.await;
    }

    async fn connect(&self, last_event_id: Option<&str>) -> Result<reqwest::Response, Refusal> {
        let mut request = self
            .http
            .get(&self.config.url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-cache");
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
            request = request.header("Last-Event-ID", id);
        }
        let response = tokio::time::timeout(self.config.watchdog, request.send())
            .await
            .map_err(|_| Refusal::Network("no response headers before the watchdog fired".into()))?
            .map_err(|e| Refusal::Network(e.without_url().to_string()))?;
        classify(response.status().as_u16())?;
        let is_event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        if !is_event_stream {
            return Err(Refusal::Config {
                status: 200,
                hint: "the URL answered 200 but not with text/event-stream: is AUTOPLAY_STREAM_URL the connector's /stream/<product_id> URL?",
            });
        }
        Ok(response)
    }

    fn report_refusal(&self, refusal: Refusal, backoff: &mut Backoff) -> Duration {
        match refusal {
            Refusal::Config { status, hint } => {
                self.metrics
                    .stream_config_errors
                    .get_or_create(&StatusLabels {
                        stream: self.status.label.clone(),
                        status,
                    })
                    .inc();
                let wait = self.config.config_error_retry;
                tracing::error!(
                    stream = %self.status.label,
                    url = %self.status.url,
                    status,
                    retry_in_s = wait.as_secs(),
                    "configuration error: {hint}"
                );
                self.status
                    .set_error(Some(format!("HTTP {status}: {hint}")));
                wait
            }
            Refusal::Retry { status } => {
                self.count_reconnect("http_status");
                let wait = backoff.next_delay();
                tracing::warn!(stream = %self.status.label, status, retry_in_ms = wait.as_millis() as u64, "event stream unavailable; backing off");
                self.status.set_error(Some(format!("HTTP {status}")));
                wait
            }
            Refusal::Network(error) => {
                self.count_reconnect("connect_error");
                let wait = backoff.next_delay();
                tracing::warn!(stream = %self.status.label, %error, retry_in_ms = wait.as_millis() as u64, "could not reach the event stream; backing off");
                self.status.set_error(Some(error));
                wait
            }
        }
    }

    fn count_reconnect(&self, cause: &'static str) {
        self.status.count_reconnect();
        self.metrics
            .stream_reconnects
            .get_or_create(&ReconnectLabels {
                stream: self.status.label.clone(),
                cause,
            })
            .inc();
    }

    #[allow(clippy::too_many_arguments)]
    async fn read(
        &self,
        mut response: reqwest::Response,
        shutdown: &CancellationToken,
        lost: &CancellationToken,
        parser: &mut SseParser,
        backoff: &mut Backoff,
        gap_from: &mut Option<f64>,
        tx: &mpsc::Sender<Frame>,
    ) -> Cause {
        let mut items = Vec::new();
        loop {
            let chunk = tokio::select! {
                cause = stopped(shutdown, lost) => return cause,
                chunk = tokio::time::timeout(self.config.watchdog, response.chunk()) => chunk,
            };
            let bytes = match chunk {
                Err(_) => {
                    tracing::warn!(
                        stream = %self.status.label,
                        watchdog_s = self.config.watchdog.as_secs(),
                        "no byte (not even a heartbeat) within the watchdog: the connection is presumed dead"
                    );
                    return Cause::Watchdog;
                }
                Ok(Err(error)) => {
                    tracing::warn!(stream = %self.status.label, error = %error.without_url(), "event stream read failed");
                    return Cause::ReadError;
                }
                Ok(Ok(None)) => return Cause::Eof,
                Ok(Ok(Some(bytes))) => bytes,
            };
            parser.feed(&bytes, &mut |item| items.push(item));
            for item in items.drain(..) {
                match item {
                    SseItem::Event(event) => {
                        let now = clock::now();
                        if !self.status.swap_connected(true) {
                            backoff.reset();
                            self.metrics.stream_up.get_or_create(&self.labels()).set(1);
                            self.status.set_error(None);
                            if let Some(from) = gap_from.take() {
                                let gap = Gap { from, to: now };
                                tracing::warn!(
                                    stream = %self.status.label,
                                    last_before = %clock::format_utc(from),
                                    first_after = %clock::format_utc(now),
                                    "stream resumed after a gap: events sent in between may be missing"
                                );
                                if let Some(product) = self.product.clone() {
                                    let ingestor = Arc::clone(&self.ingestor);
                                    tokio::spawn(async move {
                                        ingestor.record_gap(&product, gap).await
                                    });
                                }
                            }
                        }
                        self.status.mark_frame(now);
                        self.metrics
                            .sse_frames
                            .get_or_create(&FrameLabels {
                                stream: self.status.label.clone(),
                                event: frame_label(&event.event).to_string(),
                            })
                            .inc();
                        if event.event != "message" {
                            continue;
                        }
                        match tx.try_send(Frame { data: event.data }) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                self.metrics
                                    .ingest_queue_dropped
                                    .get_or_create(&self.labels())
                                    .inc();
                                if let Some(held_back) = self.drop_log.note(1) {
                                    tracing::error!(
                                        stream = %self.status.label,
                                        dropped = held_back + 1,
                                        "processing fell behind the stream: frames dropped (counted in livectx_ingest_queue_dropped_total)"
                                    );
                                }
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return Cause::Shutdown,
                        }
                    }
                    SseItem::Retry(ms) => backoff.set_initial(Duration::from_millis(ms)),
                    SseItem::Oversize { bytes } => {
                        self.metrics.refuse("sse", "oversize");
                        if let Some(held_back) = self.refuse_log.note(1) {
                            tracing::warn!(stream = %self.status.label, bytes, limit = self.config.max_frame_bytes, also_skipped_since_last_line = held_back, "skipped an oversized frame");
                        }
                    }
                    SseItem::InvalidUtf8 => {
                        self.metrics.refuse("sse", "invalid_utf8");
                        if let Some(held_back) = self.refuse_log.note(1) {
                            tracing::warn!(stream = %self.status.label, also_skipped_since_last_line = held_back, "skipped a frame that was not valid UTF-8");
                        }
                    }
                }
            }
        }
    }

    /// Status handle (for `/readyz`).
    pub fn status(&self) -> Arc<StreamStatus> {
        Arc::clone(&self.status)
    }
}

/// Resolves when the consumer must stop, saying why.
async fn stopped(shutdown: &CancellationToken, lost: &CancellationToken) -> Cause {
    tokio::select! {
        () = shutdown.cancelled() => Cause::Shutdown,
        () = lost.cancelled() => Cause::LeaseLost,
    }
}

/// Known event names keep their own label; anything else is `other` (bounded cardinality).
fn frame_label(event: &str) -> &str {
    match event {
        "message" | "heartbeat" => event,
        _ => "other",
    }
}

/// Store each frame in order; under a lease, with its fence, reporting progress so that a
/// successor knows where its gap starts.
async fn process_frames(
    mut rx: mpsc::Receiver<Frame>,
    ingestor: Arc<Ingestor>,
    product: Option<String>,
    lease: Option<(Arc<dyn Leadership>, LeaseGuard)>,
) {
    let fence: Option<&Fence> = lease.as_ref().map(|(_, guard)| &guard.fence);
    while let Some(frame) = rx.recv().await {
        let channel = Channel {
            product_id: product.as_deref(),
            fence,
        };
        ingestor
            .ingest_json(Source::Sse, frame.data.as_bytes(), channel)
            .await;
        if let Some((leadership, guard)) = &lease {
            leadership.record_progress(guard, clock::now()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("https://user:pw@c.example/stream/p?token=x"),
            "https://c.example/stream/p"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9/stream/p"),
            "http://127.0.0.1:9/stream/p"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert!(classify(200).is_ok());
        for status in [400, 401, 403, 404, 410] {
            assert!(
                matches!(classify(status), Err(Refusal::Config { .. })),
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(status), Err(Refusal::Retry { .. })),
                "{status}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_secs(1) && delays[0] >= Duration::from_millis(500));
        assert!(delays[6] <= Duration::from_secs(30) && delays[6] >= Duration::from_secs(15));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
