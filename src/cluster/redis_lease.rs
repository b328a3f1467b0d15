//! Stream leadership through a Redis lease: exactly one replica consumes each stream.
//!
//! # Keys (under the store's prefix), per stream
//!
//! - `lease:<stream>`: the fencing token of the replica that consumes it now; PX = lease TTL,
//!   renewed every third of the TTL. Taken with SET-if-absent semantics in a script.
//! - `lease:<stream>:holder`: the last token that took the lease (no TTL). It lets a lease that
//!   vanished (Redis restarted without persistence, or the lease lapsed during an outage) be
//!   taken back by the replica that held it — and only by it — while nobody else took it.
//! - `lease-seq:<stream>`: a counter that numbers acquisitions (part of the token, for logs).
//! - `lease-progress:<stream>`: when the holder last saw an event, written with each renewal,
//!   so that a successor knows where the gap it must report starts.
//!
//! # Fencing
//!
//! The token is `<acquisition number>:<replica id>:<random>`, handed out as the lease guard's
//! [`Fence`]. The store's write script refuses a fenced write unless the lease still holds that
//! token (or holds nothing and the token was the last to take it). A paused ex-leader that wakes
//! up after another replica took over therefore cannot write, however late it resumes.
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
use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Leadership, LeaseGuard};
use crate::ingest::sse::client::product_of;
use crate::session::redis::store_error;
use crate::session::store::{Fence, StoreError};

/// Lease TTL when none is configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How long a leader's last progress is remembered for a successor (one day: a gap longer
/// than that is not worth marking, sessions will have moved on).
const PROGRESS_TTL_MS: u64 = 24 * 3600 * 1000;

/// Take the lease if nobody holds it.
/// KEYS: 1 lease, 2 last holder, 3 counter, 4 progress. ARGV: 1 replica id, 2 nonce, 3 TTL ms,
/// 4 '1' to take a lease nobody ever held (else such a lease answers 'fresh').
/// Returns `{'acquired', token, progress}`, `{'held', pttl, ''}` or `{'fresh', '', ''}`.
const ACQUIRE_LUA: &str = r"
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -2 then return {'held', tostring(pttl), ''} end
if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[2]) == 0 then return {'fresh', '', ''} end
local n = redis.call('INCR', KEYS[3])
local token = n .. ':' .. ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
redis.call('SET', KEYS[2], token)
local progress = redis.call('GET', KEYS[4])
return {'acquired', token, progress or ''}
";

/// Extend the lease if it is still ours (take it back if it vanished and nobody else took it
/// since); record progress. Returns 1 when we hold it, 0 when another replica does.
/// KEYS: 1 lease, 2 last holder, 3 progress. ARGV: 1 token, 2 TTL ms, 3 progress ('' none),
/// 4 progress TTL ms.
const RENEW_LUA: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif holder then
  return 0
else
  local last = redis.call('GET', KEYS[2])
  if last and last ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4]) end
return 1
";

/// Delete the lease only if it is still ours, recording the final progress.
/// KEYS: 1 lease, 2 progress. ARGV: 1 token, 2 progress ('' none), 3 progress TTL ms.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
return redis.call('DEL', KEYS[1])
";

/// The key that remembers who last took the lease stored at `lease_key` (the store's write
/// script reads it to decide whether a fence is still good when the lease itself is gone).
pub fn last_holder_key(lease_key: &str) -> String {
    format!("{lease_key}:holder")
}

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

/// Redis keys of one stream's lease.
#[derive(Debug, Clone)]
struct LeaseKeys {
    lease: String,
    last_holder: String,
    counter: String,
    progress: String,
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
    connection: ConnectionManager,
    prefix: String,
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
        connection: ConnectionManager,
        prefix: impl Into<String>,
        settings: LeaseSettings,
        lifetime: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connection,
                prefix: prefix.into(),
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
        let prefix = &self.inner.prefix;
        let lease = format!("{prefix}lease:{id}");
        LeaseKeys {
            last_holder: last_holder_key(&lease),
            lease,
            counter: format!("{prefix}lease-seq:{id}"),
            progress: format!("{prefix}lease-progress:{id}"),
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
        let progress_key = self.progress_key_of(lease_key);
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

impl RedisLeadership {
    /// The progress key that belongs to a lease key.
    fn progress_key_of(&self, lease_key: &str) -> String {
        let prefix = &self.inner.prefix;
        let id = lease_key
            .strip_prefix(&format!("{prefix}lease:"))
            .unwrap_or(lease_key);
        format!("{prefix}lease-progress:{id}")
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
