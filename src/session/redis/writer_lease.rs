//! The writer lease: while one replica is the only one changing sessions in a one-server
//! Redis, it answers an unchanged session from its cache without the barrier `PING`.
//!
//! Why: with tracking ([`super::tracking`]) a cached session is trusted only after a `PING`
//! on the tracked connection comes back, because another replica's write may have been
//! invalidated on a socket this replica has not read yet. That wait is most of what a
//! `/retrieval` answer costs on Redis (docs/benchmarks.md). When no other replica can write,
//! there is nothing to wait for: this replica's own writes bump their keys' stripes at once.
//!
//! How it stays never stale:
//! - **Every session write checks the lease.** The commit and remove scripts start with
//!   `writer_check.lua`: while another replica holds the lease they change nothing and ask
//!   the holder to step down (they set the *wanted* mark). The writer waits and tries again.
//!   So while a replica holds the lease, only it changes sessions.
//! - **Held means held by the local clock, conservatively.** Redis expires the lease
//!   [`LEASE_TTL`] after it ran the request that granted or renewed it; this replica relies
//!   on it only until [`RELIED_ON_FOR`] after it *sent* that request. It renews every
//!   [`RENEW_EVERY`].
//! - **Stepping down comes before giving up.** The holder stops relying on the lease before
//!   it sends the release, so no write can land while it still answers without a barrier.
//! - **A fresh lease starts with a barrier.** Writes committed before the lease was granted
//!   were invalidated on the tracked connection before the grant was answered; one barrier
//!   after the grant handles them.
//!
//! Handing over fast: the holder reads the wanted mark on its tracked connection before it
//! takes the lease, so a refused writer's mark reaches it as an invalidation push and it steps
//! down within a round trip; its renewal also sees other recent writers. A replica takes the
//! lease only when no other replica wrote within [`QUIET`], so replicas that all take writes
//! (webhooks behind a load balancer) never pass it back and forth: they keep the barrier.
//! A holder that died holds up other replicas' writes until the lease expires ([`LEASE_TTL`]).
//! docs/scaling.md says what this assumes and when to turn it off
//! (`LIVECTX_REDIS_WRITER_LEASE=false`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::connection::RedisConnection;
use super::scripts::{WRITER_LEASE, WriterKeys};
use super::tracking::{KeyAlarm, TrackedConnection};

/// How long Redis keeps the lease after the holder last renewed it: also the longest that a
/// dead holder holds up other replicas' writes.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// How often the holder renews (and a replica without it tries to take it).
pub const RENEW_EVERY: Duration = Duration::from_millis(500);

/// How long after sending the request that granted or renewed the lease the holder relies on
/// it: a quarter of [`LEASE_TTL`] short of it, for clock drift and scheduling.
pub const RELIED_ON_FOR: Duration = Duration::from_millis(1500);

/// The lease is taken only when no other replica wrote a session within this long.
pub const QUIET: Duration = Duration::from_secs(10);

/// How long a write waits for a holder to step down before it gives up: a holder that died
/// has lost the lease by then.
pub const WRITE_WAIT: Duration = Duration::from_millis(2500);

/// One replica's side of the writer lease (see the module docs).
#[derive(Debug)]
pub struct WriterLease {
    keys: WriterKeys,
    /// Whether this replica takes the lease at all (it always honours another's).
    takes: bool,
    origin: Instant,
    /// Nanoseconds after `origin` until which this replica relies on holding the lease; 0
    /// when it does not.
    sole_until: AtomicU64,
    /// Whether Redis granted this replica the lease and it has not given it up (status).
    held: AtomicBool,
    /// Rung when the wanted mark changes (or tracking may have missed it); the task's wake.
    alarm: Arc<KeyAlarm>,
    started: AtomicBool,
    closed: AtomicBool,
}

/// What a renewal found.
enum Renewal {
    Kept,
    StepDown(&'static str),
    Lost,
    Failed,
}

impl WriterLease {
    /// A replica's lease under `keys`; with `takes` false it never takes it.
    pub fn new(keys: WriterKeys, takes: bool) -> Self {
        Self {
            keys,
            takes,
            origin: Instant::now(),
            sole_until: AtomicU64::new(0),
            held: AtomicBool::new(false),
            alarm: Arc::default(),
            started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// What every session write names, so that it honours the lease.
    pub fn keys(&self) -> &WriterKeys {
        &self.keys
    }

    /// May this replica answer from its cache without a barrier now?
    pub fn is_sole(&self) -> bool {
        let until = self.sole_until.load(Ordering::SeqCst);
        until != 0 && self.nanos_since_origin(Instant::now()) < until
    }

    /// Does this replica hold the lease (as far as Redis last said)?
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Start taking the lease on the current runtime, once, when this replica takes it and
    /// `connection` is tracked (without tracking there is no barrier to save).
    pub fn ensure_running(self: &Arc<Self>, connection: &RedisConnection) {
        if !self.takes
            || self.started.load(Ordering::Acquire)
            || self.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Some(tracked) = connection.tracked() else {
            return;
        };
        tokio::spawn(Arc::clone(self).run(connection.clone(), Arc::clone(tracked)));
    }

    /// The store is gone: give the lease up now rather than when it expires.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.alarm.wake.notify_one();
    }

    fn nanos_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn rely_from(&self, sent: Instant) {
        let until = self.nanos_since_origin(sent) + RELIED_ON_FOR.as_nanos() as u64;
        self.sole_until.store(until, Ordering::SeqCst);
    }

    async fn call(&self, connection: &RedisConnection, op: &str) -> Result<String, String> {
        let mut connection = connection.clone();
        WRITER_LEASE
            .key(&self.keys.lease)
            .key(&self.keys.wanted)
            .key(&self.keys.writers)
            .arg(op)
            .arg(&self.keys.me)
            .arg(LEASE_TTL.as_millis() as u64)
            .arg(QUIET.as_millis() as u64)
            .invoke_async::<String>(&mut connection)
            .await
            .map_err(|error| error.to_string())
    }

    /// Take and keep the lease while this replica is the only writer; give it up when another
    /// wants to write, and when the store is dropped.
    async fn run(self: Arc<Self>, connection: RedisConnection, tracked: Arc<TrackedConnection>) {
        tracked
            .invalidations()
            .watch(&self.keys.wanted, &self.alarm);
        // The alarm's rings when the lease was granted; `Some` while it is held.
        let mut granted_at: Option<u64> = None;
        while !self.closed.load(Ordering::SeqCst) {
            match granted_at {
                None => {
                    granted_at = self.acquire(&connection, &tracked).await;
                    if granted_at.is_none() {
                        tokio::time::sleep(RENEW_EVERY).await;
                        continue;
                    }
                }
                Some(rings) if self.alarm.rings.load(Ordering::SeqCst) != rings => {
                    self.step_down(&connection, "another replica wants to write")
                        .await;
                    granted_at = None;
                    continue;
                }
                Some(_) => match self.renew(&connection).await {
                    Renewal::Kept | Renewal::Failed => {}
                    Renewal::StepDown(why) => {
                        self.step_down(&connection, why).await;
                        granted_at = None;
                        continue;
                    }
                    Renewal::Lost => {
                        self.sole_until.store(0, Ordering::SeqCst);
                        self.held.store(false, Ordering::SeqCst);
                        tracing::info!(
                            "the writer lease expired before it was renewed; reads wait for the barrier again"
                        );
                        granted_at = None;
                        continue;
                    }
                },
            }
            tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY) => {}
                () = self.alarm.wake.notified() => {}
            }
        }
        if granted_at.is_some() {
            self.step_down(&connection, "the store is closing").await;
        }
    }

    /// Try to take the lease; the alarm's rings at the grant when it was taken.
    async fn acquire(
        &self,
        connection: &RedisConnection,
        tracked: &TrackedConnection,
    ) -> Option<u64> {
        let rings = self.alarm.rings.load(Ordering::SeqCst);
        // Read the wanted mark tracked first: from here on a refused writer rings the alarm.
        let wanted = redis::cmd("GET").arg(&self.keys.wanted).clone();
        tracked
            .read::<Option<String>>(&self.keys.wanted, &wanted)
            .await
            .ok()?;
        let sent = Instant::now();
        if self.call(connection, "acquire").await.ok()? != "acquired" {
            return None;
        }
        self.held.store(true, Ordering::SeqCst);
        // Whatever Redis said on the tracked connection before the grant is handled first.
        if tracked.barrier().await.is_err() || self.alarm.rings.load(Ordering::SeqCst) != rings {
            self.step_down(
                connection,
                "the tracked connection faltered as the lease was taken",
            )
            .await;
            return None;
        }
        self.rely_from(sent);
        tracing::info!(
            replica = %self.keys.me,
            "this replica is the only one writing sessions: it took the writer lease, and answers unchanged sessions from its cache without a barrier"
        );
        Some(rings)
    }

    async fn renew(&self, connection: &RedisConnection) -> Renewal {
        let sent = Instant::now();
        match self.call(connection, "renew").await.as_deref() {
            Ok("held") => {
                self.rely_from(sent);
                Renewal::Kept
            }
            Ok("contended") => Renewal::StepDown("another replica wrote lately"),
            Ok(_) => Renewal::Lost,
            Err(error) => {
                tracing::debug!(%error, "the writer lease could not be renewed; relied on until it runs out");
                Renewal::Failed
            }
        }
    }

    /// Stop relying on the lease, then give it up.
    async fn step_down(&self, connection: &RedisConnection, why: &'static str) {
        self.sole_until.store(0, Ordering::SeqCst);
        if let Err(error) = self.call(connection, "release").await {
            tracing::debug!(%error, "the writer lease could not be released; it expires by itself");
        }
        self.held.store(false, Ordering::SeqCst);
        tracing::info!(
            replica = %self.keys.me,
            reason = why,
            "this replica gave the writer lease up; reads wait for the barrier again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> WriterLease {
        WriterLease::new(
            WriterKeys {
                lease: "l".into(),
                wanted: "w".into(),
                writers: "r".into(),
                me: "me".into(),
            },
            true,
        )
    }

    #[test]
    fn relied_on_well_inside_what_redis_keeps() {
        assert!(RELIED_ON_FOR + RENEW_EVERY <= LEASE_TTL);
        assert!(RENEW_EVERY * 2 < RELIED_ON_FOR, "one renewal may fail");
        assert!(
            WRITE_WAIT > LEASE_TTL,
            "a dead holder's lease expires first"
        );
    }

    #[test]
    fn relied_on_only_from_the_send_time_on_and_never_after_stepping_down() {
        let mut lease = lease();
        lease.origin = Instant::now() - Duration::from_secs(10);
        assert!(!lease.is_sole());
        lease.rely_from(Instant::now());
        assert!(lease.is_sole());
        // A grant sent longer ago than it is relied on is not relied on now.
        lease.rely_from(Instant::now() - RELIED_ON_FOR - Duration::from_millis(1));
        assert!(!lease.is_sole());
        lease.rely_from(Instant::now());
        lease.sole_until.store(0, Ordering::SeqCst);
        assert!(!lease.is_sole());
    }
}
