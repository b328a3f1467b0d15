//! A store that injects faults around a real in-memory store: slow writes (to prove the socket
//! never waits on processing) and outages (to prove the APIs answer sensibly when storage is
//! down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use livectx::session::memory::MemoryStore;
use livectx::session::model::{
    ActionBatch, Gap, PersonKey, Session, SessionId, SummaryApplied, SummaryDraft, SummaryJob,
};
use livectx::session::store::{
    Fence, SessionPage, SessionStore, StoreConfig, StoreError, StoreStats, StoredBatch, Unavailable,
};

/// A [`MemoryStore`] with configurable latency on appends, a switchable outage, and a
/// lost acknowledgement (the write lands, the caller sees an outage).
pub struct FaultyStore {
    inner: MemoryStore,
    append_delay: Duration,
    down: AtomicBool,
    lose_next_ack: AtomicBool,
}

impl FaultyStore {
    /// Every append takes `delay` longer.
    pub fn slow_appends(config: StoreConfig, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(config),
            append_delay: delay,
            down: AtomicBool::new(false),
            lose_next_ack: AtomicBool::new(false),
        })
    }

    /// Healthy until switched with [`FaultyStore::set_down`].
    pub fn healthy(config: StoreConfig) -> Arc<Self> {
        Self::slow_appends(config, Duration::ZERO)
    }

    /// Start or end an outage.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next append is stored, but answers as if the backend were unreachable (a response
    /// lost after the commit).
    pub fn lose_next_ack(&self) {
        self.lose_next_ack.store(true, Ordering::SeqCst);
    }

    /// Every operation fails as unavailable.
    pub fn down(config: StoreConfig) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(config),
            append_delay: Duration::ZERO,
            down: AtomicBool::new(true),
            lose_next_ack: AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(Unavailable::Other(
                "test: backend down".into(),
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for FaultyStore {
    fn backend(&self) -> &'static str {
        "faulty"
    }
    async fn append_actions(
        &self,
        batch: ActionBatch,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<StoredBatch, StoreError> {
        self.check()?;
        tokio::time::sleep(self.append_delay).await;
        let stored = self.inner.append_actions(batch, now, fence).await?;
        if self.lose_next_ack.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable(Unavailable::Other(
                "test: response lost".into(),
            )));
        }
        Ok(stored)
    }
    async fn apply_connector_summary(
        &self,
        id: &SessionId,
        product: Option<&str>,
        text: &str,
        replaces: usize,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .apply_connector_summary(id, product, text, replaces, now, fence)
            .await
    }
    async fn record_tour(
        &self,
        id: &SessionId,
        product: Option<&str>,
        flow: &str,
        reason: Option<&str>,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .record_tour(id, product, flow, reason, now, fence)
            .await
    }
    async fn record_gap(&self, product: &str, gap: Gap, now: f64) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.record_gap(product, gap, now).await
    }
    async fn session(&self, id: &SessionId, now: f64) -> Result<Option<Arc<Session>>, StoreError> {
        self.check()?;
        self.inner.session(id, now).await
    }
    async fn resolve_person(
        &self,
        key: &PersonKey,
        product: Option<&str>,
        now: f64,
    ) -> Result<Option<SessionId>, StoreError> {
        self.check()?;
        self.inner.resolve_person(key, product, now).await
    }
    async fn has_product(&self, product: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.has_product(product).await
    }
    async fn claim_summary(
        &self,
        id: &SessionId,
        threshold: usize,
        now: f64,
        lease: Duration,
    ) -> Result<Option<SummaryJob>, StoreError> {
        self.check()?;
        self.inner.claim_summary(id, threshold, now, lease).await
    }
    async fn finish_summary(
        &self,
        job: &SummaryJob,
        draft: SummaryDraft,
        now: f64,
    ) -> Result<SummaryApplied, StoreError> {
        self.check()?;
        self.inner.finish_summary(job, draft, now).await
    }
    async fn release_summary(&self, job: &SummaryJob) -> Result<(), StoreError> {
        self.check()?;
        self.inner.release_summary(job).await
    }
    async fn active_sessions(
        &self,
        since: f64,
        cursor: Option<&str>,
        limit: usize,
        now: f64,
    ) -> Result<SessionPage, StoreError> {
        self.check()?;
        self.inner.active_sessions(since, cursor, limit, now).await
    }
    async fn expire_idle(&self, now: f64) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.expire_idle(now).await
    }
    async fn first_delivery(
        &self,
        hash: [u8; 32],
        now: f64,
        window: Duration,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.first_delivery(hash, now, window).await
    }
    async fn forget_delivery(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.forget_delivery(hash).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.check()?;
        self.inner.stats().await
    }
}
