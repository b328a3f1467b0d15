//! The in-memory store: the default backend, and the one the benchmarks hold to their targets.
//!
//! Sessions live in a sharded map as `Arc<Session>`: a reader takes a snapshot by cloning the
//! `Arc` under a shard read lock (nanoseconds) and renders without holding any lock, and a writer
//! changes its session copy-on-write. So reads of one session never wait on writes to another,
//! and a slow reader never blocks ingestion. A separate recency list (touched by writers only)
//! gives exact least-recently-active eviction and idle expiry in O(1) per session.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use lru::LruCache;

use crate::session::model::{
    ActionBatch, Gap, PersonKey, Session, SessionId, SummaryApplied, SummaryDraft, SummaryJob,
};
use crate::session::store::Fence;
use crate::session::store::{
    GAP_LOOKBACK_SECS, SessionInfo, SessionPage, SessionStore, StoreConfig, StoreError, StoreStats,
    StoredBatch, decode_cursor, encode_cursor,
};
use crate::sync::lock;

/// Webhook body hashes remembered for deduplication.
const MAX_DELIVERY_HASHES: usize = 100_000;

/// The in-memory [`SessionStore`].
pub struct MemoryStore {
    config: StoreConfig,
    sessions: DashMap<SessionId, Arc<Session>>,
    session_count: AtomicUsize,
    chunk_count: AtomicU64,
    /// Session id → last write time, least recently active first.
    recency: Mutex<LruCache<SessionId, f64>>,
    /// Person key (optionally product-scoped) → that person's newest session.
    people: DashMap<String, SessionId>,
    products: DashMap<String, ()>,
    deliveries: Mutex<LruCache<[u8; 32], f64>>,
    claim_tokens: AtomicU64,
    /// Ids changed since the last [`MemoryStore::take_changes`] (for snapshots to disk).
    changed: Mutex<HashSet<SessionId>>,
    track_changes: bool,
}

/// Sessions changed and removed since the previous call, for incremental persistence.
#[derive(Debug, Default)]
pub struct ChangeSet {
    pub upserted: Vec<Arc<Session>>,
    pub removed: Vec<SessionId>,
}

fn scoped_key(product_id: Option<&str>, key: &PersonKey) -> String {
    match product_id {
        Some(product) => format!("{product}\u{1f}{}", key.index_key()),
        None => key.index_key(),
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            sessions: DashMap::new(),
            session_count: AtomicUsize::new(0),
            chunk_count: AtomicU64::new(0),
            recency: Mutex::new(LruCache::unbounded()),
            people: DashMap::new(),
            products: DashMap::new(),
            deliveries: Mutex::new(LruCache::unbounded()),
            claim_tokens: AtomicU64::new(1),
            changed: Mutex::new(HashSet::new()),
            track_changes: false,
        }
    }

    /// An empty store that records which sessions change, for `--data-dir` snapshots.
    pub fn with_change_tracking(config: StoreConfig) -> Self {
        Self {
            track_changes: true,
            ..Self::new(config)
        }
    }

    /// The bounds this store applies.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn mark_changed(&self, id: &SessionId) {
        if self.track_changes {
            lock(&self.changed).insert(id.clone());
        }
    }

    /// Everything changed or removed since the previous call.
    pub fn take_changes(&self) -> ChangeSet {
        let ids: Vec<SessionId> = lock(&self.changed).drain().collect();
        let mut changes = ChangeSet::default();
        for id in ids {
            match self.sessions.get(&id) {
                Some(session) => changes.upserted.push(Arc::clone(session.value())),
                None => changes.removed.push(id),
            }
        }
        changes
    }

    /// Put back changes that could not be written, so the next snapshot retries them.
    pub fn restore_changes(&self, changes: &ChangeSet) {
        if !self.track_changes {
            return;
        }
        let mut changed = lock(&self.changed);
        changed.extend(changes.upserted.iter().map(|s| s.id().clone()));
        changed.extend(changes.removed.iter().cloned());
    }

    /// Load sessions saved earlier (skipping expired ones), oldest activity first so that
    /// recency and the identity index end up as they were.
    pub fn load(&self, mut sessions: Vec<Session>, now: f64) -> usize {
        let ttl = self.config.ttl_secs();
        sessions.retain(|s| !s.is_expired(now, ttl));
        sessions.sort_by(|a, b| a.last_seen().total_cmp(&b.last_seen()));
        let mut loaded = 0;
        for mut session in sessions {
            session.drop_claim();
            let id = session.id().clone();
            let chunks = session.chunks().len() as u64;
            self.index_session(&session);
            lock(&self.recency).put(id.clone(), session.last_seen());
            if self.sessions.insert(id, Arc::new(session)).is_none() {
                self.session_count.fetch_add(1, Ordering::Relaxed);
                self.chunk_count.fetch_add(chunks, Ordering::Relaxed);
                loaded += 1;
            }
        }
        self.evict_over_limit(None);
        loaded
    }

    /// Point every key of `session` at it (loading saved state, oldest first).
    fn index_session(&self, session: &Session) {
        self.index_keys(session, session.person_keys());
    }

    /// Point `keys` at `session`: the session last written *with* a person's identity is that
    /// person's newest (a later batch without the identity does not re-point it).
    fn index_keys(&self, session: &Session, keys: &[PersonKey]) {
        for key in keys.iter().filter(|k| session.person_keys().contains(k)) {
            self.people
                .insert(scoped_key(None, key), session.id().clone());
            if let Some(product) = session.product_id().as_deref() {
                self.people
                    .insert(scoped_key(Some(product), key), session.id().clone());
            }
        }
        self.note_product(session);
    }

    fn note_product(&self, session: &Session) {
        if let Some(product) = session.product_id().as_deref()
            && !self.products.contains_key(product)
        {
            self.products.insert(product.to_string(), ());
        }
    }

    /// Remove a session and every index entry that still points at it.
    fn remove_session(&self, id: &SessionId, only_if: impl FnOnce(&Session) -> bool) -> bool {
        let Some((_, session)) = self.sessions.remove_if(id, |_, s| only_if(s)) else {
            return false;
        };
        self.session_count.fetch_sub(1, Ordering::Relaxed);
        self.chunk_count
            .fetch_sub(session.chunks().len() as u64, Ordering::Relaxed);
        self.unindex(&session);
        self.mark_changed(id);
        true
    }

    /// Remove the index entries that still point at `session`.
    fn unindex(&self, session: &Session) {
        let id = session.id();
        for key in session.person_keys() {
            self.people
                .remove_if(&scoped_key(None, key), |_, v| v == id);
            if let Some(product) = session.product_id().as_deref() {
                self.people
                    .remove_if(&scoped_key(Some(product), key), |_, v| v == id);
            }
        }
    }

    /// Evict least recently active sessions beyond `max_sessions` (never `keep`).
    fn evict_over_limit(&self, keep: Option<&SessionId>) -> usize {
        let max = self.config.max_sessions.max(1);
        let mut evicted = 0;
        while self.session_count.load(Ordering::Relaxed) > max {
            let victim = {
                let mut recency = lock(&self.recency);
                match recency.pop_lru() {
                    // The session being written is never its own victim; it is the most recent
                    // anyway unless it is the only one left.
                    Some((id, last_seen)) if Some(&id) == keep => {
                        recency.put(id, last_seen);
                        if recency.len() <= 1 {
                            None
                        } else {
                            recency.pop_lru().map(|(id, _)| id)
                        }
                    }
                    other => other.map(|(id, _)| id),
                }
            };
            let Some(victim) = victim else { break };
            if self.remove_session(&victim, |_| true) {
                evicted += 1;
            }
        }
        evicted
    }

    fn fresh_session(&self, id: &SessionId, now: f64) -> Arc<Session> {
        Arc::new(Session::new(id.clone(), now))
    }

    /// Apply `change` to a session (created when missing, replaced when expired) and bump recency.
    fn update_session<R>(
        &self,
        id: &SessionId,
        now: f64,
        change: impl FnOnce(&mut Session) -> R,
    ) -> (R, bool, Arc<Session>) {
        let ttl = self.config.ttl_secs();
        let mut created = false;
        let (result, snapshot, chunks_before, chunks_after) = {
            let mut entry = self.sessions.entry(id.clone()).or_insert_with(|| {
                created = true;
                self.fresh_session(id, now)
            });
            if !created && entry.value().is_expired(now, ttl) {
                // An expired session is not resurrected: it starts over, and nobody who used
                // it before can be found through it any more.
                let old = std::mem::replace(entry.value_mut(), self.fresh_session(id, now));
                self.chunk_count
                    .fetch_sub(old.chunks().len() as u64, Ordering::Relaxed);
                self.unindex(&old);
            }
            let session = Arc::make_mut(entry.value_mut());
            let before = session.chunks().len() as u64;
            let result = change(session);
            let after = session.chunks().len() as u64;
            (result, Arc::clone(entry.value()), before, after)
        };
        if created {
            self.session_count.fetch_add(1, Ordering::Relaxed);
        }
        self.count_chunks(chunks_before, chunks_after);
        lock(&self.recency).put(id.clone(), snapshot.last_seen());
        self.mark_changed(id);
        (result, created, snapshot)
    }

    /// Change an existing, unexpired session without touching recency (summaries, claims).
    fn modify_existing<R>(
        &self,
        id: &SessionId,
        now: f64,
        change: impl FnOnce(&mut Session) -> R,
    ) -> Option<R> {
        let ttl = self.config.ttl_secs();
        let (result, before, after) = {
            let mut entry = self.sessions.get_mut(id)?;
            if entry.value().is_expired(now, ttl) {
                return None;
            }
            let session = Arc::make_mut(entry.value_mut());
            let before = session.chunks().len() as u64;
            let result = change(session);
            (result, before, session.chunks().len() as u64)
        };
        self.count_chunks(before, after);
        self.mark_changed(id);
        Some(result)
    }

    /// Keep the chunk gauge in step with a session that went from `before` to `after` chunks.
    fn count_chunks(&self, before: u64, after: u64) {
        if after >= before {
            self.chunk_count
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.chunk_count
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn append_actions(
        &self,
        batch: ActionBatch,
        now: f64,
        _fence: Option<&Fence>,
    ) -> Result<StoredBatch, StoreError> {
        let id = batch.session_id.clone();
        let keys = batch.person_keys();
        let limits = self.config.limits;
        let (mut outcome, created, snapshot) =
            self.update_session(&id, now, |session| session.append(batch, now, limits));
        outcome.created = created;
        self.index_keys(&snapshot, &keys);
        let evicted = if created {
            self.evict_over_limit(Some(&id))
        } else {
            0
        };
        Ok(StoredBatch { outcome, evicted })
    }

    async fn apply_connector_summary(
        &self,
        session_id: &SessionId,
        product_id: Option<&str>,
        text: &str,
        replaces: usize,
        now: f64,
        _fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let (_, created, snapshot) = self.update_session(session_id, now, |session| {
            session.name_product(product_id);
            session.touch(now);
            session.apply_connector_summary(text, replaces, now)
        });
        self.note_product(&snapshot);
        if created {
            self.evict_over_limit(Some(session_id));
        }
        Ok(())
    }

    async fn record_tour(
        &self,
        session_id: &SessionId,
        product_id: Option<&str>,
        flow_id: &str,
        reason: Option<&str>,
        now: f64,
        _fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let (_, created, snapshot) = self.update_session(session_id, now, |session| {
            session.name_product(product_id);
            session.record_tour(flow_id, reason, now, now);
        });
        self.note_product(&snapshot);
        if created {
            self.evict_over_limit(Some(session_id));
        }
        Ok(())
    }

    async fn record_gap(&self, product_id: &str, gap: Gap, now: f64) -> Result<usize, StoreError> {
        let since = gap.from - GAP_LOOKBACK_SECS;
        let affected: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|entry| {
                let s = entry.value();
                s.last_seen() >= since && s.product_id().as_deref().is_none_or(|p| p == product_id)
            })
            .map(|entry| entry.key().clone())
            .collect();
        let mut marked = 0;
        for id in affected {
            if self
                .modify_existing(&id, now, |s| s.note_gap(gap))
                .is_some()
            {
                marked += 1;
            }
        }
        Ok(marked)
    }

    async fn session(&self, id: &SessionId, now: f64) -> Result<Option<Arc<Session>>, StoreError> {
        let ttl = self.config.ttl_secs();
        Ok(self
            .sessions
            .get(id)
            .map(|entry| Arc::clone(entry.value()))
            .filter(|s| !s.is_expired(now, ttl)))
    }

    async fn resolve_person(
        &self,
        key: &PersonKey,
        product_id: Option<&str>,
        now: f64,
    ) -> Result<Option<SessionId>, StoreError> {
        let Some(id) = self
            .people
            .get(&scoped_key(product_id, key))
            .map(|e| e.value().clone())
        else {
            return Ok(None);
        };
        Ok(self.session(&id, now).await?.map(|s| s.id().clone()))
    }

    async fn has_product(&self, product_id: &str) -> Result<bool, StoreError> {
        Ok(self.products.contains_key(product_id))
    }

    async fn claim_summary(
        &self,
        id: &SessionId,
        threshold: usize,
        now: f64,
        lease: Duration,
    ) -> Result<Option<SummaryJob>, StoreError> {
        let token = self.claim_tokens.fetch_add(1, Ordering::Relaxed);
        let until = now + lease.as_secs_f64();
        Ok(self
            .modify_existing(id, now, |s| s.claim_summary(threshold, now, until, token))
            .flatten())
    }

    async fn finish_summary(
        &self,
        job: &SummaryJob,
        draft: SummaryDraft,
        now: f64,
    ) -> Result<SummaryApplied, StoreError> {
        Ok(self
            .modify_existing(&job.session_id, now, |s| s.finish_summary(job, draft, now))
            .unwrap_or(SummaryApplied::Gone))
    }

    async fn release_summary(&self, job: &SummaryJob) -> Result<(), StoreError> {
        // A release must work even when the session just expired: use a far-past `now`.
        self.modify_existing(&job.session_id, f64::MIN, |s| {
            s.release_claim(job.claim_token)
        });
        Ok(())
    }

    async fn active_sessions(
        &self,
        since: f64,
        cursor: Option<&str>,
        limit: usize,
        now: f64,
    ) -> Result<SessionPage, StoreError> {
        let after = cursor.and_then(decode_cursor);
        let mut candidates: Vec<(f64, SessionId)> = {
            let recency = lock(&self.recency);
            recency
                .iter()
                .take_while(|(_, last_seen)| **last_seen >= since)
                .filter(|(id, last_seen)| match &after {
                    Some((ts, after_id)) => {
                        **last_seen < *ts || (**last_seen == *ts && id.as_str() > after_id.as_str())
                    }
                    None => true,
                })
                .map(|(id, last_seen)| (*last_seen, id.clone()))
                .collect()
        };
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let limit = limit.max(1);
        let mut sessions = Vec::with_capacity(limit.min(candidates.len()));
        let mut next_cursor = None;
        for (last_seen, id) in candidates {
            if sessions.len() == limit {
                break;
            }
            if let Some(session) = self.session(&id, now).await? {
                sessions.push(SessionInfo::of(&session));
                next_cursor = Some(encode_cursor(last_seen, id.as_str()));
            }
        }
        if sessions.len() < limit {
            next_cursor = None;
        }
        Ok(SessionPage {
            sessions,
            next_cursor,
        })
    }

    async fn expire_idle(&self, now: f64) -> Result<usize, StoreError> {
        let ttl = self.config.ttl_secs();
        let mut expired = 0;
        loop {
            let victim = {
                let mut recency = lock(&self.recency);
                match recency.peek_lru() {
                    Some((_, last_seen)) if *last_seen + ttl < now => {
                        recency.pop_lru().map(|(id, _)| id)
                    }
                    _ => None,
                }
            };
            let Some(victim) = victim else { break };
            if self.remove_session(&victim, |s| s.is_expired(now, ttl)) {
                expired += 1;
            }
        }
        Ok(expired)
    }

    async fn first_delivery(
        &self,
        body_hash: [u8; 32],
        now: f64,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let mut deliveries = lock(&self.deliveries);
        if let Some(seen_at) = deliveries.get(&body_hash)
            && now - *seen_at < window.as_secs_f64()
        {
            return Ok(false);
        }
        deliveries.put(body_hash, now);
        while deliveries.len() > MAX_DELIVERY_HASHES {
            deliveries.pop_lru();
        }
        Ok(true)
    }

    async fn forget_delivery(&self, body_hash: [u8; 32]) -> Result<(), StoreError> {
        lock(&self.deliveries).pop(&body_hash);
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            sessions: self.session_count.load(Ordering::Relaxed) as u64,
            chunks: self.chunk_count.load(Ordering::Relaxed),
        })
    }
}
