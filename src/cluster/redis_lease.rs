//! Stream leadership through a Redis lease: exactly one replica consumes each stream.
//!
//! # Keys
//!
//! Each stream's lease keys (the lease, its last holder, an acquisition counter, the holder's
//! progress) share one hash slot; their layout is part of the store's key contract, in
//! [`crate::session::redis::keys::LeaseKeys`].
//!
//! # Fencing
//!
//! The token is `<acquisition number>:<replica id>:<random>`, handed out as the lease guard's
//! [`Fence`]. Acquisition numbers only grow (at least the server clock in milliseconds, so a
//! counter lost with its master's data cannot restart low). A new leader raises the fence mark
//! of every session bucket to its number before it consumes, and the store's write script
//! refuses a fenced write whose number is below its bucket's mark. A paused ex-leader that wakes
//! up after another replica took over therefore cannot write, however late it resumes; and the
//! check needs no key outside the session's slot, so it holds on a Redis Cluster.
//!
//! # Outages
//!
//! When Redis cannot be reached, a leader keeps leading: its writes are buffered (see
//! [`crate::session::buffered`]) and the fence decides, when they are replayed, whether they may
//! still land. A renewal that finds another holder cancels the guard's `lost` token. Replicas
//! waiting for the lease wait one lease period after Redis comes back before competing, so the
//! replica that led through the outage keeps the stream (and its buffered writes stay valid).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::Script;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::product_of;
use super::{Leadership, LeaseGuard};
use crate::session::redis::keys::{BUCKETS, Keys, LeaseKeys, fence_number};
use crate::session::redis::{RedisConnection, raise_fence_invocation, store_error};
use crate::session::store::{Fence, StoreError};

/// Lease TTL when none is configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How long a leader's last progress is remembered for a successor (one day: a gap longer
/// than that is not worth marking, sessions will have moved on).
const PROGRESS_TTL_MS: u64 = 24 * 3600 * 1000;

/// Take the lease if nobody holds it (see the script for its keys and replies).
const ACQUIRE_LUA: &str = include_str!("lua/acquire.lua");

/// Extend the lease if it is still ours, or take it back if it vanished and nobody else took it.
const RENEW_LUA: &str = include_str!("lua/renew.lua");

/// Delete the lease only if it is still ours, recording the final progress.
const RELEASE_LUA: &str = include_str!("lua/release.lua");

/// How long a new leader keeps trying to raise every bucket's fence mark before it consumes
/// anyway (a bucket whose master is failing over; its first write raises the mark too).
const RAISE_FENCES_FOR: Duration = Duration::from_secs(10);

/// A name for this replica in fencing tokens and logs: `$HOSTNAME` (a container's id) or the
/// process id.
pub fn default_replica_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 64 && !h.contains(':'))
        .unwrap_or_else(|| format!("pid{}", std::process::id()))
}

/// Lease timing and identity.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// How long a lease lasts without renewal: the longest a dead leader blocks its stream.
    pub ttl: Duration,
    /// This replica's name in tokens and logs.
    pub replica_id: String,
}

impl LeaseSettings {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Renewal period (and the longest a waiting replica sleeps between attempts).
    fn period(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(50))
    }
}

/// What this replica knows about a lease it holds.
#[derive(Debug)]
struct HeldLease {
    /// Newest event time seen (f64 bits; 0 = none yet).
    progress: AtomicU64,
    /// Stops the renewal task (release).
    stop: CancellationToken,
}

impl HeldLease {
    fn progress_arg(&self) -> String {
        let value = f64::from_bits(self.progress.load(Ordering::Relaxed));
        if value > 0.0 {
            format!("{value}")
        } else {
            String::new()
        }
    }
}

struct Inner {
    connection: RedisConnection,
    keys: Keys,
    settings: LeaseSettings,
    /// Ends renewals (the process is going away).
    lifetime: CancellationToken,
    held: Mutex<HashMap<String, Arc<HeldLease>>>,
    acquire_script: Script,
    renew_script: Script,
    release_script: Script,
}

impl Inner {
    fn held(&self) -> MutexGuard<'_, HashMap<String, Arc<HeldLease>>> {
        crate::sync::lock(&self.held)
    }
}

/// [`Leadership`] through Redis leases.
#[derive(Clone)]
pub struct RedisLeadership {
    inner: Arc<Inner>,
}

enum Attempt {
    Acquired {
        token: String,
        progress: String,
    },
    Held {
        remaining: Duration,
    },
    /// No lease and no trace of a holder: a first start, or Redis lost its data.
    Fresh,
}

impl RedisLeadership {
    /// Leases on `connection`, keys under `prefix` (the store's). Renewals stop when `lifetime`
    /// is cancelled (without giving the lease up: that is [`Leadership::release`]'s job).
    pub fn new(
        connection: impl Into<RedisConnection>,
        prefix: impl Into<String>,
        settings: LeaseSettings,
        lifetime: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connection: connection.into(),
                keys: Keys::new(prefix),
                settings,
                lifetime,
                held: Mutex::new(HashMap::new()),
                acquire_script: Script::new(ACQUIRE_LUA),
                renew_script: Script::new(RENEW_LUA),
                release_script: Script::new(RELEASE_LUA),
            }),
        }
    }

    /// The Redis key of a stream's lease: readable (the product) and free of anything secret
    /// a URL may carry (a hash of the full URL tells streams apart).
    pub fn lease_key(&self, stream_key: &str) -> String {
        self.keys(stream_key).lease
    }

    fn keys(&self, stream_key: &str) -> LeaseKeys {
        let digest = Sha256::digest(stream_key.as_bytes());
        let label = product_of(stream_key).unwrap_or_else(|| "stream".to_string());
        let id = format!("{label}:{}", &hex::encode(digest)[..16]);
        self.inner.keys.lease(&id)
    }

    /// Raise every session bucket's fence mark to this acquisition's number, so that no
    /// bucket accepts the previous leader's writes any more. Retried for a while when some
    /// bucket cannot be reached; `false` if some mark could not be raised.
    async fn raise_fences(
        &self,
        keys: &LeaseKeys,
        token: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(number) = fence_number(token) else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + RAISE_FENCES_FOR;
        let mut pending: Vec<usize> = (0..BUCKETS).collect();
        loop {
            let attempts = pending.iter().map(|&bucket| {
                let mut connection = self.inner.connection.clone();
                let invocation =
                    raise_fence_invocation(&self.inner.keys.bucket(bucket), &keys.lease, number);
                async move {
                    let raised: Result<i64, _> = invocation.invoke_async(&mut connection).await;
                    (bucket, raised)
                }
            });
            pending = join_all(attempts)
                .await
                .into_iter()
                .filter_map(|(bucket, raised)| raised.is_err().then_some(bucket))
                .collect();
            if pending.is_empty() {
                return true;
            }
            if tokio::time::Instant::now() > deadline
                || !self.pause(self.inner.settings.period(), shutdown).await
            {
                tracing::warn!(lease = %keys.lease, buckets = pending.len(), "could not raise every fence mark for the new lease; those buckets refuse the previous leader only from this leader's first write on");
                return false;
            }
        }
    }

    async fn try_acquire(&self, keys: &LeaseKeys, take_fresh: bool) -> Result<Attempt, StoreError> {
        let nonce = format!("{:08x}", rand::random::<u32>());
        let mut connection = self.inner.connection.clone();
        let reply: (String, String, String) = self
            .inner
            .acquire_script
            .key(&keys.lease)
            .key(&keys.last_holder)
            .key(&keys.counter)
            .key(&keys.progress)
            .arg(&self.inner.settings.replica_id)
            .arg(nonce)
            .arg(self.inner.settings.ttl_ms())
            .arg(if take_fresh { "1" } else { "0" })
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        match reply.0.as_str() {
            "acquired" => Ok(Attempt::Acquired {
                token: reply.1,
                progress: reply.2,
            }),
            "fresh" => Ok(Attempt::Fresh),
            _ => {
                // -1: a lease without expiry (set by hand?): look again after a period.
                let ms = reply.1.parse::<i64>().unwrap_or(-1);
                let remaining = u64::try_from(ms)
                    .map(Duration::from_millis)
                    .unwrap_or(self.inner.settings.period());
                Ok(Attempt::Held { remaining })
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.inner.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// Sleep, unless told to stop first (then `false`).
    async fn pause(&self, duration: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = self.inner.lifetime.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }

    fn start_renewing(&self, keys: LeaseKeys, token: String, lost: CancellationToken) {
        let held = Arc::new(HeldLease {
            progress: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        self.inner.held().insert(token.clone(), Arc::clone(&held));
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            renew_until_lost(&inner, &keys, &token, &held, &lost).await;
            inner.held().remove(&token);
        });
    }
}

/// Renew every third of the TTL until the lease is lost, released, or the process ends.
async fn renew_until_lost(
    inner: &Inner,
    keys: &LeaseKeys,
    token: &str,
    held: &HeldLease,
    lost: &CancellationToken,
) {
    let period = inner.settings.period();
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = inner.lifetime.cancelled() => return,
            () = held.stop.cancelled() => return,
            () = lost.cancelled() => return,
            _ = interval.tick() => {}
        }
        let mut connection = inner.connection.clone();
        let renewed: Result<i64, StoreError> = inner
            .renew_script
            .key(&keys.lease)
            .key(&keys.last_holder)
            .key(&keys.progress)
            .arg(token)
            .arg(inner.settings.ttl_ms())
            .arg(held.progress_arg())
            .arg(PROGRESS_TTL_MS)
            .invoke_async(&mut connection)
            .await
            .map_err(store_error);
        match renewed {
            Ok(1) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        lease = %keys.lease,
                        outage_ms = since.elapsed().as_millis() as u64,
                        "stream lease renewed again after Redis was unreachable"
                    );
                }
            }
            Ok(_) => {
                tracing::warn!(lease = %keys.lease, "another replica holds this stream's lease now");
                lost.cancel();
                return;
            }
            Err(error) => {
                // Keep leading: writes are buffered, and the fence decides at replay whether
                // they may still land. Stepping down would lose the stream's events for everyone.
                if failing_since.is_none() {
                    failing_since = Some(tokio::time::Instant::now());
                    tracing::warn!(lease = %keys.lease, %error, "cannot renew the stream lease; still consuming, writes are buffered until Redis is back");
                }
            }
        }
    }
}

#[async_trait]
impl Leadership for RedisLeadership {
    async fn acquire(&self, stream_key: &str, shutdown: &CancellationToken) -> Option<LeaseGuard> {
        let keys = self.keys(stream_key);
        let settings = &self.inner.settings;
        let mut recovering = false;
        // This replica saw the lease held; finding no trace of any holder afterwards means
        // Redis lost its data, and the replica that held it must get the first chance back.
        let mut seen_held = false;
        let mut take_fresh = false;
        loop {
            if shutdown.is_cancelled() || self.inner.lifetime.is_cancelled() {
                return None;
            }
            if recovering {
                if self.ping().await.is_ok() {
                    // The replica that led through the outage renews within a period: give
                    // it a full lease to do so before competing.
                    tracing::info!(lease = %keys.lease, wait_ms = settings.ttl.as_millis() as u64, "Redis is reachable again; waiting one lease period before competing for the stream");
                    recovering = false;
                    if !self.pause(settings.ttl, shutdown).await {
                        return None;
                    }
                } else if !self.pause(settings.period(), shutdown).await {
                    return None;
                }
                continue;
            }
            match self.try_acquire(&keys, take_fresh).await {
                Ok(Attempt::Acquired { token, progress }) => {
                    let lost = CancellationToken::new();
                    tracing::info!(lease = %keys.lease, token = %token, "acquired the stream lease");
                    self.start_renewing(keys.clone(), token.clone(), lost.clone());
                    self.raise_fences(&keys, &token, shutdown).await;
                    return Some(LeaseGuard {
                        fence: Fence {
                            lease_key: keys.lease,
                            token,
                        },
                        lost,
                        previous_holder_seen: progress.parse::<f64>().ok().filter(|t| *t > 0.0),
                    });
                }
                Ok(Attempt::Fresh) => {
                    take_fresh = true;
                    if seen_held {
                        tracing::warn!(lease = %keys.lease, wait_ms = settings.ttl.as_millis() as u64, "the stream lease vanished with every trace of its holder (Redis restarted without persistence?); waiting one lease period so the last holder can take it back");
                        seen_held = false;
                        if !self.pause(settings.ttl, shutdown).await {
                            return None;
                        }
                    }
                }
                Ok(Attempt::Held { remaining }) => {
                    seen_held = true;
                    take_fresh = false;
                    // Wake right when the current lease would lapse, or after a period.
                    let wait = (remaining + Duration::from_millis(5)).min(settings.period());
                    if !self.pause(wait, shutdown).await {
                        return None;
                    }
                }
                Err(error) => {
                    tracing::warn!(lease = %keys.lease, %error, "cannot reach Redis to compete for the stream lease");
                    recovering = true;
                    if !self.pause(settings.period(), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn record_progress(&self, guard: &LeaseGuard, last_event_at: f64) {
        if let Some(held) = self.inner.held().get(&guard.fence.token) {
            let newest = f64::from_bits(held.progress.load(Ordering::Relaxed)).max(last_event_at);
            held.progress.store(newest.to_bits(), Ordering::Relaxed);
        }
    }

    async fn release(&self, guard: &LeaseGuard) {
        let held = self.inner.held().remove(&guard.fence.token);
        let progress = held.as_ref().map(|h| h.progress_arg()).unwrap_or_default();
        if let Some(held) = held {
            held.stop.cancel();
        }
        let lease_key = &guard.fence.lease_key;
        let progress_key = LeaseKeys::of_lease(lease_key.clone()).progress;
        let mut connection = self.inner.connection.clone();
        let released: Result<i64, StoreError> = self
            .inner
            .release_script
            .key(lease_key)
            .key(progress_key)
            .arg(&guard.fence.token)
            .arg(progress)
            .arg(PROGRESS_TTL_MS)
            .invoke_async(&mut connection)
            .await
            .map_err(store_error);
        match released {
            Ok(1) => tracing::info!(lease = %lease_key, "released the stream lease"),
            Ok(_) => {
                tracing::info!(lease = %lease_key, "the stream lease was no longer ours to release")
            }
            Err(error) => {
                tracing::warn!(lease = %lease_key, %error, "could not release the stream lease; it lapses by itself");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_never_contain_the_token_separator() {
        let id = default_replica_id();
        assert!(!id.is_empty() && !id.contains(':'), "{id}");
    }
}
