//! Getting Autoplay's activity into the store: the SSE stream consumer, the webhook receiver,
//! and the payload handling both share ([`Ingestor`]).

pub mod debounce;
pub mod dedupe;
pub mod group_commit;
pub mod idle_sessions;
pub mod pull;
pub mod receivers;
pub mod sse;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::clock;
use crate::diagnostics::Diagnostics;
use crate::session::model::{ActionBatch, Gap, SessionId, SourceKind};
use crate::session::store::{Fence, SessionStore, StoreError};
use crate::session::summarizer::Summarizer;
use crate::sources::autoplay::payload::{self, Payload};
use crate::telemetry::{LogThrottle, Metrics, PayloadLabels};
use debounce::{Debouncer, Flush};
use group_commit::GroupCommit;

/// Where a payload came from (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sse,
    Webhook,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Webhook => "webhook",
        }
    }

    /// What the session records as its source.
    pub fn kind(self) -> SourceKind {
        match self {
            Self::Sse => SourceKind::AutoplayStream,
            Self::Webhook => SourceKind::AutoplayWebhook,
        }
    }
}

/// Facts about the channel a payload arrived on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Channel<'a> {
    /// The product of the stream URL, used when a payload omits `product_id`.
    pub product_id: Option<&'a str>,
    /// The stream lease this write is made under (Redis leadership).
    pub fence: Option<&'a Fence>,
}

/// What became of one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored (for the stream with debounce: queued to be stored with the next flush; a
    /// webhook or analytics delivery waits for that flush).
    Stored,
    /// A payload type this version ignores.
    Ignored { reason: &'static str },
    /// Refused (and counted): e.g. no session id.
    Refused { reason: &'static str },
    /// The backend failed; the payload was not stored.
    Failed,
}

/// Stores decoded payloads: the one path both the stream and the webhook go through.
pub struct Ingestor {
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    summarizer: Option<Summarizer>,
    debouncer: Option<Debouncer>,
    /// Group commit of the analytics receivers: one event per request, merged per session.
    group_commit: GroupCommit,
    /// One throttle per refusal reason (and one for any other), so a flood of one kind does
    /// not hide another.
    refusal_logs: [LogThrottle; REFUSAL_REASONS.len() + 1],
    /// Refusal samples and event rates for the operator console.
    diagnostics: Arc<Diagnostics>,
}

/// Reasons a payload is refused, each with its own log throttle.
const REFUSAL_REASONS: [&str; 9] = [
    "no_session",
    "malformed",
    "missing_type",
    "unknown_type",
    "empty_summary",
    "unknown_shape",
    "invalid_session",
    "unauthorized",
    "too_large",
];

/// At most one log line per reason per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Ingestor {
    /// `debounce` of zero stores every batch as it arrives.
    pub fn new(
        store: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        summarizer: Option<Summarizer>,
        debounce: Duration,
    ) -> Self {
        let debouncer = (!debounce.is_zero()).then(|| Debouncer::new(debounce));
        Self {
            store,
            metrics,
            summarizer,
            debouncer,
            group_commit: GroupCommit::new(Duration::ZERO),
            refusal_logs: std::array::from_fn(|_| LogThrottle::new(REFUSAL_LOG_INTERVAL)),
            diagnostics: Arc::default(),
        }
    }

    /// Record refusals and event rates into `diagnostics` (the application's, which the
    /// console reads) instead of a private one.
    pub fn with_diagnostics(mut self, diagnostics: Arc<Diagnostics>) -> Self {
        self.diagnostics = diagnostics;
        self
    }

    /// Wait `window` before a quiet session's first analytics write, so more of its events
    /// share one chunk (zero: write at once; events that arrive during a write still share
    /// the next one). See [`group_commit`].
    pub fn with_group_commit(mut self, window: Duration) -> Self {
        self.group_commit = GroupCommit::new(window);
        self
    }

    /// The store this ingestor writes to.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Decode and store one payload's JSON bytes.
    pub async fn ingest_json(
        &self,
        source: Source,
        bytes: &[u8],
        channel: Channel<'_>,
    ) -> Ingested {
        match payload::decode(bytes) {
            Ok(payload) => self.ingest_raw(source, payload, channel, Some(bytes)).await,
            Err(error) => self.refuse(source, error.reason(), &error.to_string(), Some(bytes)),
        }
    }

    /// Store one decoded payload.
    pub async fn ingest(&self, source: Source, payload: Payload, channel: Channel<'_>) -> Ingested {
        self.ingest_raw(source, payload, channel, None).await
    }

    /// Store one decoded payload whose bytes (`raw`) illustrate a refusal on the console.
    pub async fn ingest_raw(
        &self,
        source: Source,
        payload: Payload,
        channel: Channel<'_>,
        raw: Option<&[u8]>,
    ) -> Ingested {
        let kind = payload.kind().to_string();
        let result = match payload {
            Payload::Actions(actions) => {
                let skipped = actions.skipped_actions;
                match actions.into_batch(channel.product_id) {
                    Ok(mut batch) => {
                        batch.source = Some(source.kind());
                        if skipped > 0 {
                            self.metrics
                                .refused_actions(source.as_str(), skipped as u64);
                            tracing::warn!(session = %batch.session_id, skipped, "skipped action entries that were not objects");
                        }
                        // A webhook delivery's answer promises its batch is stored; the
                        // stream has no one to answer and must not wait.
                        let wait = source == Source::Webhook;
                        self.store_batch(batch, channel.fence, wait).await
                    }
                    Err(_) => {
                        return self.refuse(
                            source,
                            "no_session",
                            "actions without a session id (never pooled)",
                            raw,
                        );
                    }
                }
            }
            Payload::Summary(summary) => {
                let id = match self
                    .session_of(source, summary.session_id.as_deref(), raw)
                    .await
                {
                    Ok(id) => id,
                    Err(refused) => return refused,
                };
                if summary.summary.trim().is_empty() {
                    return self.refuse(source, "empty_summary", "a summary with no text", raw);
                }
                let product = summary.product_id.as_deref().or(channel.product_id);
                let result = self
                    .store
                    .apply_connector_summary(
                        &id,
                        product,
                        &summary.summary,
                        summary.replaces,
                        clock::now(),
                        channel.fence,
                    )
                    .await;
                if result.is_ok() {
                    self.metrics.summary("connector", "ok");
                }
                self.check(result, "apply_connector_summary")
            }
            Payload::TourTrigger(tour) => {
                let id = match self
                    .session_of(source, tour.session_id.as_deref(), raw)
                    .await
                {
                    Ok(id) => id,
                    Err(refused) => return refused,
                };
                let product = tour.product_id.as_deref().or(channel.product_id);
                let result = self
                    .store
                    .record_tour(
                        &id,
                        product,
                        &tour.flow_id,
                        tour.reason.as_deref(),
                        clock::now(),
                        channel.fence,
                    )
                    .await;
                self.check(result, "record_tour")
            }
            Payload::Unknown { kind } => {
                self.refuse(
                    source,
                    "unknown_type",
                    &format!("a payload of unknown type {kind:?}"),
                    raw,
                );
                return Ingested::Ignored {
                    reason: "unknown_type",
                };
            }
        };
        if result == Ingested::Stored {
            self.metrics
                .payloads
                .get_or_create(&PayloadLabels {
                    source: source.as_str(),
                    payload_type: kind,
                })
                .inc();
            self.diagnostics
                .events
                .record(source.as_str(), 1, clock::now());
        }
        result
    }

    /// Count a refused payload, and log it (one line per interval and reason: anonymous
    /// traffic alone can be most of a stream).
    fn refuse(
        &self,
        source: Source,
        reason: &'static str,
        what: &str,
        raw: Option<&[u8]>,
    ) -> Ingested {
        self.metrics.refuse(source.as_str(), reason);
        self.diagnostics
            .refusals
            .record(source.as_str(), reason, what, raw, clock::now());
        if let Some(held_back) = self.refusal_log(reason).note(1) {
            if reason == "no_session" {
                tracing::info!(
                    source = source.as_str(),
                    reason,
                    also_refused_since_last_line = held_back,
                    "refused {what}"
                );
            } else {
                tracing::warn!(
                    source = source.as_str(),
                    reason,
                    also_refused_since_last_line = held_back,
                    "refused {what}"
                );
            }
        }
        Ingested::Refused { reason }
    }

    fn refusal_log(&self, reason: &'static str) -> &LogThrottle {
        // The last slot is for any reason not listed.
        let slot = REFUSAL_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REFUSAL_REASONS.len());
        &self.refusal_logs[slot]
    }

    /// The session a summary or tour payload is about; pending debounced actions of that
    /// session are stored first, to keep its order.
    async fn session_of(
        &self,
        source: Source,
        session_id: Option<&str>,
        raw: Option<&[u8]>,
    ) -> Result<SessionId, Ingested> {
        let Ok(id) = SessionId::parse(session_id.unwrap_or("")) else {
            return Err(self.refuse(source, "no_session", "a payload without a session id", raw));
        };
        self.flush_session(&id).await;
        Ok(id)
    }

    async fn store_batch(&self, batch: ActionBatch, fence: Option<&Fence>, wait: bool) -> Ingested {
        let Some(debouncer) = &self.debouncer else {
            return self.append(batch, fence).await;
        };
        let (waiter, outcome) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if debouncer.add(batch, fence.cloned(), waiter) {
            self.metrics.debounce_merged.inc();
        }
        match outcome {
            // The sweeper (or a flush before a summary, or shutdown) answers.
            Some(rx) => stored_if(rx.await),
            None => Ingested::Stored,
        }
    }

    /// Store an analytics batch with the group commit: written by its session's writer,
    /// merged with whatever else of the session arrives during the write before it, and
    /// answered once written (so `Stored` means stored).
    pub async fn commit(self: &Arc<Self>, batch: ActionBatch) -> Ingested {
        let id = batch.session_id.clone();
        let (tx, rx) = oneshot::channel();
        if self.group_commit.join(batch, tx) {
            // The session's writer runs in a task of its own, so that a client hanging up
            // cannot strand the others waiting on it.
            let ingestor = Arc::clone(self);
            tokio::spawn(async move {
                let window = ingestor.group_commit.window();
                if !window.is_zero() {
                    tokio::time::sleep(window).await;
                }
                while let Some(flush) = ingestor.group_commit.next(&id) {
                    ingestor.write(flush).await;
                }
            });
        } else {
            self.metrics.debounce_merged.inc();
        }
        stored_if(rx.await)
    }

    /// Write a taken batch and answer its waiters.
    async fn write(&self, flush: Flush) -> Ingested {
        let Flush {
            batch,
            fence,
            waiters,
        } = flush;
        let result = self.append(batch, fence.as_ref()).await;
        debounce::answer(waiters, result == Ingested::Stored);
        result
    }

    /// Store one batch now, past the debounce: a pulled batch must be in the store before the
    /// lookup that fetched it answers.
    pub async fn append_now(&self, batch: ActionBatch) -> Ingested {
        self.append(batch, None).await
    }

    /// Write one batch to the store now.
    async fn append(&self, batch: ActionBatch, fence: Option<&Fence>) -> Ingested {
        let id = batch.session_id.clone();
        let actions = batch.actions.len() as u64;
        match self.store.append_actions(batch, clock::now(), fence).await {
            Ok(stored) => {
                let m = &self.metrics;
                m.chunks_stored.inc();
                m.actions_stored.inc_by(actions);
                if stored.outcome.created {
                    m.sessions_created.inc();
                }
                if stored.evicted > 0 {
                    m.sessions_evicted.inc_by(stored.evicted as u64);
                }
                if stored.outcome.folded_chunks > 0 {
                    m.summary("builtin", "fallback");
                    tracing::info!(
                        session = %id,
                        folded = stored.outcome.folded_chunks,
                        "chunk cap reached: folded the oldest chunks into the summary with the built-in summarizer"
                    );
                }
                if let Some(summarizer) = &self.summarizer {
                    summarizer.notify(&id, stored.outcome.unsummarized_actions);
                }
                Ingested::Stored
            }
            Err(error) => {
                self.metrics.store_error("append_actions");
                tracing::error!(session = %id, %error, "could not store a batch");
                Ingested::Failed
            }
        }
    }

    fn check(&self, result: Result<(), StoreError>, op: &'static str) -> Ingested {
        match result {
            Ok(()) => Ingested::Stored,
            Err(error) => {
                self.metrics.store_error(op);
                tracing::error!(%error, op, "storage write failed");
                Ingested::Failed
            }
        }
    }

    /// Store a pending debounced batch of this session now (to keep order with what follows).
    async fn flush_session(&self, id: &SessionId) {
        if let Some(debouncer) = &self.debouncer
            && let Some(flush) = debouncer.take(id)
        {
            self.write(flush).await;
        }
    }

    /// Store every debounced batch whose window has closed (or all, when `all`: shutdown,
    /// which also writes the group commit's pending batches).
    pub async fn flush_due(&self, all: bool) -> usize {
        let now = std::time::Instant::now();
        let mut due = Vec::new();
        if let Some(debouncer) = &self.debouncer {
            due.extend(debouncer.take_due(now, all));
        }
        if all {
            due.extend(self.group_commit.take_all());
        }
        let n = due.len();
        for flush in due {
            self.write(flush).await;
        }
        n
    }

    /// How often the debounce buffer must be swept; `None` without debounce.
    pub fn debounce_tick(&self) -> Option<Duration> {
        self.debouncer.as_ref().map(Debouncer::tick)
    }

    /// Count a refusal by an analytics receiver, and log it like the others (throttled per
    /// reason).
    pub fn refuse_event(&self, source: SourceKind, reason: &'static str, what: &str) {
        self.metrics.refuse(source.as_str(), reason);
        self.diagnostics
            .refusals
            .record(source.as_str(), reason, what, None, clock::now());
        if let Some(held_back) = self.refusal_log(reason).note(1) {
            tracing::warn!(
                source = source.as_str(),
                reason,
                also_refused_since_last_line = held_back,
                "refused {what}"
            );
        }
    }

    /// The metrics this ingestor counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The refusal samples and event rates the operator console shows.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    /// Mark sessions affected by a stream outage.
    pub async fn record_gap(&self, product_id: &str, gap: Gap) {
        match self.store.record_gap(product_id, gap, clock::now()).await {
            Ok(marked) => tracing::info!(
                product = product_id,
                from = %clock::format_utc(gap.from),
                to = %clock::format_utc(gap.to),
                sessions_marked = marked,
                "marked sessions whose activity in the stream gap may be missing"
            ),
            Err(error) => {
                self.metrics.store_error("record_gap");
                tracing::warn!(%error, "could not record a stream gap");
            }
        }
    }
}

/// A waiter's answer as an outcome; a flush that never answered (cannot happen short of a
/// panic in the writer) counts as a failure, so the sender retries.
fn stored_if(answer: Result<bool, oneshot::error::RecvError>) -> Ingested {
    match answer {
        Ok(true) => Ingested::Stored,
        _ => Ingested::Failed,
    }
}
