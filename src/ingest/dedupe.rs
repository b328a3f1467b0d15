//! Deduplication of analytics deliveries: PostHog retries 408, 429 and 5xx and may deliver the
//! same event twice, so each event's key (PostHog `uuid`, Amplitude `$insert_id`, Segment
//! `messageId`, a body hash for Autoplay's flat body) is remembered for a bounded window.
//!
//! Behind a trait so each backend keeps the keys where replicas see them: in this process
//! ([`MemoryDeliveryLog`], bounded), or in Redis ([`RedisDeliveryLog`], `SET NX PX` under
//! `<LIVECTX_REDIS_PREFIX>ingest:d:`, one key per command, so it works on one Redis and on a
//! Redis Cluster alike). Another backend only needs another implementation.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::session::redis::RedisConnection;
use async_trait::async_trait;
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::session::model::SourceKind;
use crate::session::store::{StoreError, Unavailable};

/// Keys the in-memory log holds at most (~100 bytes each: ~10 MiB); beyond, the oldest is
/// forgotten, which can only let a very late retry through as a duplicate.
pub const MAX_MEMORY_KEYS: usize = 100_000;

/// The key of one event: its source, product and the tool's own key, hashed so that an
/// outside key of any length takes 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey([u8; 32]);

impl DeliveryKey {
    pub fn new(source: SourceKind, product_id: &str, dedupe_key: &str) -> Self {
        let mut hasher = Sha256::new();
        for part in [source.as_str(), product_id, dedupe_key] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        Self(hasher.finalize().into())
    }

    fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Which deliveries were seen within the window.
#[async_trait]
pub trait DeliveryLog: Send + Sync + 'static {
    /// Record `key`; `false` when it was already recorded within the window (a duplicate).
    async fn first_seen(&self, key: DeliveryKey) -> Result<bool, StoreError>;

    /// Forget `key`: its write failed, so the retry must be stored.
    async fn forget(&self, key: DeliveryKey) -> Result<(), StoreError>;
}

/// Keys in this process's memory, bounded by [`MAX_MEMORY_KEYS`].
pub struct MemoryDeliveryLog {
    window: Duration,
    seen: Mutex<LruCache<DeliveryKey, Instant>>,
}

impl MemoryDeliveryLog {
    pub fn new(window: Duration) -> Self {
        Self::with_capacity(window, MAX_MEMORY_KEYS)
    }

    pub fn with_capacity(window: Duration, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            window,
            seen: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn first_seen_at(&self, key: DeliveryKey, now: Instant) -> bool {
        let mut seen = crate::sync::lock(&self.seen);
        if let Some(at) = seen.get(&key)
            && now.saturating_duration_since(*at) < self.window
        {
            return false;
        }
        seen.put(key, now);
        true
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn first_seen(&self, key: DeliveryKey) -> Result<bool, StoreError> {
        Ok(self.first_seen_at(key, Instant::now()))
    }

    async fn forget(&self, key: DeliveryKey) -> Result<(), StoreError> {
        crate::sync::lock(&self.seen).pop(&key);
        Ok(())
    }
}

/// Keys in Redis, shared by every replica: `SET <prefix>ingest:d:<hash> 1 NX PX <window>`.
pub struct RedisDeliveryLog {
    connection: RedisConnection,
    prefix: String,
    window_ms: u64,
}

impl RedisDeliveryLog {
    /// `prefix` is `LIVECTX_REDIS_PREFIX`; the keys live under `<prefix>ingest:d:`.
    pub fn new(connection: RedisConnection, prefix: &str, window: Duration) -> Self {
        Self {
            connection,
            prefix: format!("{prefix}ingest:d:"),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }

    fn key(&self, key: DeliveryKey) -> String {
        format!("{}{}", self.prefix, key.hex())
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Unavailable::Redis(error))
}

#[async_trait]
impl DeliveryLog for RedisDeliveryLog {
    async fn first_seen(&self, key: DeliveryKey) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(self.window_ms)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn forget(&self, key: DeliveryKey) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<i64>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_source_product_and_key() {
        let a = DeliveryKey::new(SourceKind::PostHog, "p", "e1");
        assert_eq!(a, DeliveryKey::new(SourceKind::PostHog, "p", "e1"));
        assert_ne!(a, DeliveryKey::new(SourceKind::Segment, "p", "e1"));
        assert_ne!(a, DeliveryKey::new(SourceKind::PostHog, "q", "e1"));
        // Lengths are part of the hash: "p"+"e1" is not "pe"+"1".
        assert_ne!(
            DeliveryKey::new(SourceKind::PostHog, "p", "e1"),
            DeliveryKey::new(SourceKind::PostHog, "pe", "1")
        );
    }

    #[test]
    fn a_key_is_a_duplicate_within_the_window_only() {
        let log = MemoryDeliveryLog::new(Duration::from_secs(10));
        let key = DeliveryKey::new(SourceKind::PostHog, "p", "e1");
        let t0 = Instant::now();
        assert!(log.first_seen_at(key, t0));
        assert!(!log.first_seen_at(key, t0 + Duration::from_secs(9)));
        assert!(log.first_seen_at(key, t0 + Duration::from_secs(20)));
    }

    #[test]
    fn memory_is_bounded() {
        let log = MemoryDeliveryLog::with_capacity(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for k in ["a", "b", "c"] {
            assert!(log.first_seen_at(DeliveryKey::new(SourceKind::PostHog, "p", k), t0));
        }
        assert_eq!(crate::sync::lock(&log.seen).len(), 2);
    }
}
