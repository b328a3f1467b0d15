//! Riding out a storage outage: ingestion writes that fail because the backend is unreachable
//! are kept in memory, in order, and replayed when it is back.
//!
//! [`BufferedStore`] wraps a shared backend (Redis). A write (`append_actions`,
//! `apply_connector_summary`, `record_tour`) that fails with [`StoreError::Unavailable`] joins a
//! FIFO queue and the caller is told it was accepted. While the queue is not empty, new writes
//! queue behind it without trying the backend, so a session's writes land in the order they
//! arrived. A background task ([`BufferedStore::spawn_replay`]) replays the queue front to back,
//! backing off while the backend is still away.
//!
//! The queue is bounded: beyond the bound a write is refused (the caller sees the error, so a
//! webhook answers 503 and the connector retries), counted in `livectx_redis_buffer_dropped`
//! and logged. A replayed write the backend refuses for good (a fence this replica no longer
//! holds: another replica consumes the stream now) is dropped and counted the same way.
//! `livectx_redis_buffered` shows the queue length, `livectx_redis_replayed` what was replayed.
//!
//! Reads are not buffered: they go to the backend and fail fast (retrieval then answers empty).
//!
//! A buffered append's caller only learns "accepted" (nothing to summarise yet), so what the
//! backend reports when the write is finally replayed goes to the replay listener
//! ([`BufferedStore::on_replay`]): the app points it at the summarizer, which would otherwise
//! never hear about sessions whose activity arrived during the outage.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::session::model::{
    ActionBatch, AppendOutcome, Gap, PersonKey, Session, SessionId, SummaryApplied, SummaryDraft,
    SummaryJob,
};
use crate::session::store::{
    BackendHealth, Fence, SessionPage, SessionStore, StoreError, StoreStats, StoredBatch,
    Unavailable,
};
use crate::sync::lock;
use crate::telemetry::{LogThrottle, Metrics};

/// Writes buffered when none is configured.
pub const DEFAULT_BUFFER_BOUND: usize = 10_000;

const REPLAY_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const REPLAY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Drops are logged at most this often (with a count), so an outage does not flood the log.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One ingestion write waiting for the backend.
#[derive(Debug, Clone)]
enum PendingWrite {
    Append {
        batch: ActionBatch,
        now: f64,
        fence: Option<Fence>,
    },
    ConnectorSummary {
        session_id: SessionId,
        product_id: Option<String>,
        text: String,
        replaces: usize,
        now: f64,
        fence: Option<Fence>,
    },
    Tour {
        session_id: SessionId,
        product_id: Option<String>,
        flow_id: String,
        reason: Option<String>,
        now: f64,
        fence: Option<Fence>,
    },
}

impl PendingWrite {
    fn session_id(&self) -> &SessionId {
        match self {
            Self::Append { batch, .. } => &batch.session_id,
            Self::ConnectorSummary { session_id, .. } | Self::Tour { session_id, .. } => session_id,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Append { .. } => "append_actions",
            Self::ConnectorSummary { .. } => "apply_connector_summary",
            Self::Tour { .. } => "record_tour",
        }
    }

    /// Perform the write on `store` (with the time it originally arrived).
    async fn apply(&self, store: &dyn SessionStore) -> Result<Option<StoredBatch>, StoreError> {
        match self {
            Self::Append { batch, now, fence } => store
                .append_actions(batch.clone(), *now, fence.as_ref())
                .await
                .map(Some),
            Self::ConnectorSummary {
                session_id,
                product_id,
                text,
                replaces,
                now,
                fence,
            } => store
                .apply_connector_summary(
                    session_id,
                    product_id.as_deref(),
                    text,
                    *replaces,
                    *now,
                    fence.as_ref(),
                )
                .await
                .map(|()| None),
            Self::Tour {
                session_id,
                product_id,
                flow_id,
                reason,
                now,
                fence,
            } => store
                .record_tour(
                    session_id,
                    product_id.as_deref(),
                    flow_id,
                    reason.as_deref(),
                    *now,
                    fence.as_ref(),
                )
                .await
                .map(|()| None),
        }
    }
}

/// Hears what the backend reported for a buffered append once replay stored it.
pub type ReplayListener = Box<dyn Fn(&SessionId, &StoredBatch) + Send + Sync>;

/// A [`SessionStore`] that buffers ingestion writes through an outage of `inner`.
pub struct BufferedStore {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    bound: usize,
    queue: Mutex<VecDeque<PendingWrite>>,
    wake: Notify,
    drops: LogThrottle,
    on_replay: OnceLock<ReplayListener>,
}

/// What a caller learns from a buffered append: stored later, nothing to summarise yet.
fn buffered_outcome() -> StoredBatch {
    StoredBatch {
        outcome: AppendOutcome {
            seq: 0,
            created: false,
            unsummarized_actions: 0,
            folded_chunks: 0,
        },
        evicted: 0,
    }
}

impl BufferedStore {
    /// Buffer up to `bound` writes for `inner`. Call [`BufferedStore::spawn_replay`] once.
    pub fn new(inner: Arc<dyn SessionStore>, bound: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            bound,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            drops: LogThrottle::new(DROP_LOG_INTERVAL),
            on_replay: OnceLock::new(),
        }
    }

    /// Call `listener` with the result of every append stored by replay (set once; the store is
    /// built before the summarizer that listens, hence not a constructor argument). Returns
    /// `false` when a listener was already set.
    pub fn on_replay(
        &self,
        listener: impl Fn(&SessionId, &StoredBatch) + Send + Sync + 'static,
    ) -> bool {
        self.on_replay.set(Box::new(listener)).is_ok()
    }

    /// Writes waiting for the backend.
    pub fn buffered(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Replay buffered writes in order whenever there are some, until the task is aborted.
    pub fn spawn_replay(self: &Arc<Self>) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.replay().await })
    }

    async fn replay(&self) {
        let mut backoff = REPLAY_BACKOFF_INITIAL;
        let mut replayed_in_run: u64 = 0;
        loop {
            let front = lock(&self.queue).front().cloned();
            let Some(write) = front else {
                if replayed_in_run > 0 {
                    tracing::info!(
                        replayed = replayed_in_run,
                        "the storage backend is back: every buffered write was replayed"
                    );
                    replayed_in_run = 0;
                }
                self.wake.notified().await;
                continue;
            };
            match write.apply(self.inner.as_ref()).await {
                Ok(stored) => {
                    if let (Some(stored), Some(listener)) = (&stored, self.on_replay.get()) {
                        listener(write.session_id(), stored);
                    }
                    self.pop_front();
                    self.metrics.redis_replayed.inc();
                    replayed_in_run += 1;
                    backoff = REPLAY_BACKOFF_INITIAL;
                }
                Err(StoreError::Unavailable(_)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REPLAY_BACKOFF_MAX);
                }
                Err(error) => {
                    self.pop_front();
                    self.metrics.store_error("replay");
                    tracing::error!(
                        session = %write.session_id(),
                        op = write.kind(),
                        %error,
                        "a buffered write was refused on replay and is dropped"
                    );
                    self.count_drop(1);
                }
            }
        }
    }

    fn pop_front(&self) {
        let mut queue = lock(&self.queue);
        queue.pop_front();
        self.metrics
            .redis_buffered
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
    }

    fn count_drop(&self, dropped: u64) {
        self.metrics.redis_buffer_dropped.inc_by(dropped);
        if let Some(held_back) = self.drops.note(dropped) {
            tracing::error!(
                dropped = held_back + dropped,
                bound = self.bound,
                "storage outage: ingestion writes dropped (buffer full or refused on replay; counted in livectx_redis_buffer_dropped_total)"
            );
        }
    }

    /// Queue `write` when writes are already waiting (so it keeps its place); otherwise hand
    /// it back to be tried now.
    fn queue_if_backlogged(&self, write: PendingWrite) -> Result<Option<PendingWrite>, StoreError> {
        let mut queue = lock(&self.queue);
        if queue.is_empty() {
            return Ok(Some(write));
        }
        self.push(&mut queue, write, Unavailable::Backlogged)?;
        Ok(None)
    }

    fn push(
        &self,
        queue: &mut VecDeque<PendingWrite>,
        write: PendingWrite,
        reason: Unavailable,
    ) -> Result<(), StoreError> {
        if queue.len() >= self.bound {
            self.count_drop(1);
            return Err(StoreError::Unavailable(Unavailable::BufferFull {
                cause: Box::new(reason),
                bound: self.bound,
            }));
        }
        if queue.is_empty() {
            tracing::warn!(%reason, "storage backend unavailable: buffering ingestion writes in memory until it is back");
        }
        queue.push_back(write);
        self.metrics
            .redis_buffered
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
        self.wake.notify_one();
        Ok(())
    }

    /// Try `write` now (unless others wait), buffering it when the backend is unavailable.
    /// `Ok(None)` means buffered.
    async fn write(&self, write: PendingWrite) -> Result<Option<StoredBatch>, StoreError> {
        let Some(write) = self.queue_if_backlogged(write)? else {
            return Ok(None);
        };
        match write.apply(self.inner.as_ref()).await {
            Err(StoreError::Unavailable(reason)) => {
                let mut queue = lock(&self.queue);
                self.push(&mut queue, write, reason)?;
                Ok(None)
            }
            other => other,
        }
    }
}

#[async_trait]
impl SessionStore for BufferedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn append_actions(
        &self,
        batch: ActionBatch,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<StoredBatch, StoreError> {
        let write = PendingWrite::Append {
            batch,
            now,
            fence: fence.cloned(),
        };
        Ok(self.write(write).await?.unwrap_or_else(buffered_outcome))
    }

    async fn apply_connector_summary(
        &self,
        session_id: &SessionId,
        product_id: Option<&str>,
        text: &str,
        replaces: usize,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.write(PendingWrite::ConnectorSummary {
            session_id: session_id.clone(),
            product_id: product_id.map(str::to_string),
            text: text.to_string(),
            replaces,
            now,
            fence: fence.cloned(),
        })
        .await?;
        Ok(())
    }

    async fn record_tour(
        &self,
        session_id: &SessionId,
        product_id: Option<&str>,
        flow_id: &str,
        reason: Option<&str>,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.write(PendingWrite::Tour {
            session_id: session_id.clone(),
            product_id: product_id.map(str::to_string),
            flow_id: flow_id.to_string(),
            reason: reason.map(str::to_string),
            now,
            fence: fence.cloned(),
        })
        .await?;
        Ok(())
    }

    async fn record_gap(&self, product_id: &str, gap: Gap, now: f64) -> Result<usize, StoreError> {
        self.inner.record_gap(product_id, gap, now).await
    }

    async fn session(&self, id: &SessionId, now: f64) -> Result<Option<Arc<Session>>, StoreError> {
        self.inner.session(id, now).await
    }

    async fn resolve_person(
        &self,
        key: &PersonKey,
        product_id: Option<&str>,
        now: f64,
    ) -> Result<Option<SessionId>, StoreError> {
        self.inner.resolve_person(key, product_id, now).await
    }

    async fn has_product(&self, product_id: &str) -> Result<bool, StoreError> {
        self.inner.has_product(product_id).await
    }

    async fn claim_summary(
        &self,
        id: &SessionId,
        threshold: usize,
        now: f64,
        lease: Duration,
    ) -> Result<Option<SummaryJob>, StoreError> {
        self.inner.claim_summary(id, threshold, now, lease).await
    }

    async fn finish_summary(
        &self,
        job: &SummaryJob,
        draft: SummaryDraft,
        now: f64,
    ) -> Result<SummaryApplied, StoreError> {
        self.inner.finish_summary(job, draft, now).await
    }

    async fn release_summary(&self, job: &SummaryJob) -> Result<(), StoreError> {
        self.inner.release_summary(job).await
    }

    async fn active_sessions(
        &self,
        since: f64,
        cursor: Option<&str>,
        limit: usize,
        now: f64,
    ) -> Result<SessionPage, StoreError> {
        self.inner.active_sessions(since, cursor, limit, now).await
    }

    async fn expire_idle(&self, now: f64) -> Result<usize, StoreError> {
        self.inner.expire_idle(now).await
    }

    async fn first_delivery(
        &self,
        body_hash: [u8; 32],
        now: f64,
        window: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.first_delivery(body_hash, now, window).await
    }

    async fn forget_delivery(&self, body_hash: [u8; 32]) -> Result<(), StoreError> {
        self.inner.forget_delivery(body_hash).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }

    async fn health(&self) -> Result<Option<BackendHealth>, StoreError> {
        self.inner.health().await
    }
}
