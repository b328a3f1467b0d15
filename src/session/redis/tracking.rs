//! Server-assisted invalidation for the read cache (`CLIENT TRACKING`, RESP3), so that a
//! session unchanged since this replica last read it is answered with one shared `PING`
//! instead of a read of its own.
//!
//! Without it, every read of a cached session costs one `HGET` of its revision: a round trip
//! whose CPU (the connection task, Redis, the wake-ups) was most of a `/retrieval` answer on
//! Redis (docs/benchmarks.md). With it, a one-server store keeps a second connection, RESP3,
//! with `CLIENT TRACKING ON OPTIN`: each read that fills the cache goes there, right after
//! `CLIENT CACHING YES` in one pipeline, so Redis remembers that this replica holds the key.
//! When anyone writes the key (another replica, or this one), Redis pushes an `invalidate`
//! message on that connection, and its connection task hands it to [`Invalidations::on_push`]
//! before it reads anything after it.
//!
//! Never stale, and why each piece is there:
//! - **Stamps.** An invalidation can be handled between the moment Redis answers a read and
//!   the moment the reader stores what it read (two tasks). So each key maps to one of
//!   [`STRIPES`] counters, bumped by every invalidation of a key in it; a reader takes a
//!   [`Stamp`] *before* it sends its read, and the entry is trusted only while the stamp
//!   holds. A stripe shared with another key only costs a needless read.
//! - **The barrier.** A write acknowledged to anyone was invalidated on this connection
//!   before Redis answered the writer, but this replica may not have read that message off
//!   its socket yet. So a cached entry is trusted only after a `PING` sent *after the read
//!   began* comes back on the tracked connection: Redis answers in order, so every message it
//!   sent before has been handled by then. Reads waiting at the same time share one `PING`
//!   ([`TrackedConnection::barrier`]), which is where the saving is under load. One pinger
//!   task sends them, one at a time, the next as soon as the last is answered if a reader
//!   waits, so no reader's own wake-up stands between two rounds (docs/benchmarks.md measured
//!   the round trip under load at about 270 µs when the first woken reader sent the next
//!   `PING`, and 160–205 µs with the pinger).
//! - **Epochs.** Anything that may have lost messages — the connection dropping, tracking not
//!   confirmed on the current connection, a flush, an unknown message — moves the epoch, which
//!   voids every stamp at once; reads then check revisions as without tracking.
//!
//! A replica's own writes also bump their key's stripe at once. docs/scaling.md says when to
//! turn this off (`LIVECTX_REDIS_TRACKING=false`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisError, Value};
use tokio::sync::{Mutex as AsyncMutex, Notify, watch};

/// Invalidation counters (a key maps to one by hash).
pub const STRIPES: usize = 4096;

/// The bit of [`Invalidations::state`] that says tracking is confirmed on the current
/// connection; the rest counts epochs.
const ON: u64 = 1;

/// What a reader saw before it sent its read: trusted while nothing it depends on moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    state: u64,
    /// The key's stripe, so checking the stamp needs neither the key nor its hash.
    index: u32,
    stripe: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct Invalidations {
    /// `epoch * 2 + ON` while tracking is confirmed on the current connection.
    state: AtomicU64,
    stripes: Box<[AtomicU64]>,
    /// Keys someone must hear of as soon as they change (the writer lease's wanted mark).
    watched: std::sync::RwLock<Vec<Watch>>,
}

/// A watched key and the alarm it rings.
type Watch = (Box<[u8]>, Weak<KeyAlarm>);

impl Default for Invalidations {
    fn default() -> Self {
        Self {
            state: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            watched: std::sync::RwLock::new(Vec::new()),
        }
    }
}

/// Rung when a watched key is invalidated, or when anything may have been missed (see
/// [`Invalidations::watch`]).
#[derive(Debug, Default)]
pub struct KeyAlarm {
    /// How many times it rang: compare before and after, a stored wake-up may be old.
    pub rings: AtomicU64,
    pub wake: Notify,
}

impl KeyAlarm {
    fn ring(&self) {
        self.rings.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

fn stripe_of(key: &[u8]) -> usize {
    crate::sync::shard_of(key, STRIPES)
}

/// An I/O-kind error: what the read path treats as "the tracked connection is unusable".
fn unusable(reason: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, reason))
}

impl Invalidations {
    /// Is tracking confirmed on the current connection (so stamps can be taken)?
    pub fn is_on(&self) -> bool {
        self.state.load(Ordering::Acquire) & ON == ON
    }

    /// The state before enabling tracking; pass it to [`Self::confirm`] once Redis accepted
    /// `CLIENT TRACKING ON`, so a drop in between is not mistaken for success.
    pub fn before_enabling(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }

    /// Tracking was accepted on the connection current at `before` (see
    /// [`Self::before_enabling`]): trust stamps from now on, unless the connection changed.
    pub fn confirm(&self, before: u64) -> bool {
        before & ON == 0
            && self
                .state
                .compare_exchange(before, before | ON, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Void every stamp and wait for tracking to be confirmed again (the connection dropped,
    /// a tracked command failed, Redis was flushed).
    pub fn void_all(&self) {
        // To the next epoch, with tracking off: (epoch + 1) * 2.
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some((s | ON).wrapping_add(1))
            });
        // A watched key's invalidation may have been among what was lost.
        for (_, alarm) in crate::sync::read(&self.watched).iter() {
            if let Some(alarm) = alarm.upgrade() {
                alarm.ring();
            }
        }
    }

    /// Ring `alarm` whenever `key` is invalidated (once this replica has read it tracked),
    /// and whenever invalidations may have been lost. Held weakly: dropping the alarm ends it.
    pub fn watch(&self, key: &str, alarm: &Arc<KeyAlarm>) {
        let mut watched = crate::sync::write(&self.watched);
        watched.retain(|(_, alarm)| alarm.strong_count() > 0);
        watched.push((key.as_bytes().into(), Arc::downgrade(alarm)));
    }

    fn ring_watchers_of(&self, key: &[u8]) {
        let watched = crate::sync::read(&self.watched);
        for (watched_key, alarm) in watched.iter() {
            if **watched_key == *key
                && let Some(alarm) = alarm.upgrade()
            {
                alarm.ring();
            }
        }
    }

    /// A stamp for a read of `key` about to be sent; `None` while tracking is not confirmed.
    pub fn stamp(&self, key: &str) -> Option<Stamp> {
        let state = self.state.load(Ordering::Acquire);
        if state & ON == 0 {
            return None;
        }
        let index = stripe_of(key.as_bytes());
        Some(Stamp {
            state,
            index: u32::try_from(index).unwrap_or(0),
            stripe: self.stripes[index].load(Ordering::Acquire),
        })
    }

    /// Has nothing that the key read under `stamp` depends on moved since?
    pub fn holds(&self, stamp: Stamp) -> bool {
        self.state.load(Ordering::Acquire) == stamp.state
            && self
                .stripes
                .get(stamp.index as usize)
                .is_some_and(|s| s.load(Ordering::Acquire) == stamp.stripe)
    }

    /// `key` changed (this replica wrote it, or Redis said so).
    pub fn invalidate(&self, key: &[u8]) {
        self.stripes[stripe_of(key)].fetch_add(1, Ordering::AcqRel);
    }

    /// A push message from the connection task (runs in it: cheap, never blocks).
    pub fn on_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            Value::BulkString(bytes) => {
                                self.invalidate(bytes);
                                self.ring_watchers_of(bytes);
                            }
                            Value::SimpleString(text) => {
                                self.invalidate(text.as_bytes());
                                self.ring_watchers_of(text.as_bytes());
                            }
                            // Nothing else names a key: be safe, forget everything.
                            _ => self.void_all(),
                        }
                    }
                }
                // FLUSHALL / FLUSHDB (a null), or a shape this build does not know.
                _ => self.void_all(),
            },
            // The connection is gone: its tracking, and any message in flight, with it.
            PushKind::Disconnection => self.void_all(),
            _ => {}
        }
    }
}

/// The tracked connection of a one-server store: reads that fill the cache, and barriers.
pub struct TrackedConnection {
    shared: Arc<Shared>,
}

/// What the readers and the pinger task share.
struct Shared {
    client: redis::Client,
    config: AsyncConnectionConfig,
    invalidations: Arc<Invalidations>,
    /// The current connection; `None` until first use, and after it failed.
    current: AsyncMutex<Option<MultiplexedConnection>>,
    /// Sequence numbers of the barrier `PING`s sent so far.
    barriers_sent: AtomicU64,
    /// The highest sequence number a waiting reader needs answered.
    wanted: AtomicU64,
    /// Wakes the pinger (held apart, so a waiting pinger keeps no state alive).
    wake: Arc<Wake>,
    /// The highest sequence answered, and the highest that failed: waiters wake on either.
    barriers: watch::Sender<(u64, u64)>,
    /// Whether a pinger task is running (it clears this when it ends, however it ends).
    pinger_running: AtomicBool,
    /// Until when a failed connection is not tried again: without it, a Redis that refuses
    /// RESP3 or tracking would be dialled on every read.
    retry_after: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long the tracked connection rests after it could not be opened.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for TrackedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedConnection").finish_non_exhaustive()
    }
}

/// How readers wake the pinger.
#[derive(Default)]
struct Wake {
    /// `wanted` moved past what the pinger sent.
    demand: Notify,
    /// The [`TrackedConnection`] is gone: the pinger ends.
    closed: AtomicBool,
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        self.shared.wake.closed.store(true, Ordering::Release);
        self.shared.wake.demand.notify_one();
    }
}

impl TrackedConnection {
    /// A tracked connection to `client` (RESP3), opened on first use with `config`'s timeouts.
    pub fn new(client: redis::Client, config: AsyncConnectionConfig) -> Self {
        let invalidations = Arc::new(Invalidations::default());
        let handler = Arc::clone(&invalidations);
        let config = config.set_push_sender(move |push: PushInfo| {
            handler.on_push(&push);
            Ok::<(), std::convert::Infallible>(())
        });
        Self {
            shared: Arc::new(Shared {
                client,
                config,
                invalidations,
                current: AsyncMutex::new(None),
                barriers_sent: AtomicU64::new(0),
                wanted: AtomicU64::new(0),
                wake: Arc::default(),
                barriers: watch::Sender::new((0, 0)),
                pinger_running: AtomicBool::new(false),
                retry_after: std::sync::Mutex::new(None),
            }),
        }
    }

    /// What stamps are checked against.
    pub fn invalidations(&self) -> &Invalidations {
        &self.shared.invalidations
    }

    /// Send `read` of `key` tracked; its value and the stamp taken before it was sent.
    pub async fn read<T: redis::FromRedisValue>(
        &self,
        key: &str,
        read: &redis::Cmd,
    ) -> Result<(T, Stamp), RedisError> {
        let shared = &self.shared;
        let mut connection = shared.connection().await?;
        let Some(stamp) = shared.invalidations.stamp(key) else {
            return Err(unusable(
                "tracking is not confirmed on the tracked connection",
            ));
        };
        let reply: Result<(T,), RedisError> = redis::pipe()
            .cmd("CLIENT")
            .arg("CACHING")
            .arg("YES")
            .ignore()
            .add_command(read.clone())
            .query_async(&mut connection)
            .await;
        match reply {
            Ok((value,)) => Ok((value, stamp)),
            Err(error) => {
                shared.failed().await;
                Err(error)
            }
        }
    }

    /// Return once every message Redis sent on the tracked connection before this call has
    /// been handled (see the module docs). The `PING`s are sent by one pinger task, the next
    /// as soon as the last is answered if anyone waits: a `PING` sent after a caller began
    /// serves it.
    pub async fn barrier(&self) -> Result<(), RedisError> {
        let shared = &self.shared;
        shared.ensure_pinger();
        // A `PING` numbered after this load was sent after it.
        let target = shared.barriers_sent.load(Ordering::SeqCst) + 1;
        let mut rounds = shared.barriers.subscribe();
        if shared.wanted.fetch_max(target, Ordering::SeqCst) < target {
            shared.wake.demand.notify_one();
        }
        loop {
            let (answered, failed) = *rounds.borrow_and_update();
            if answered >= target {
                return Ok(());
            }
            if failed >= target {
                return Err(unusable(
                    "the barrier PING on the tracked connection failed",
                ));
            }
            if !shared.pinger_running.load(Ordering::Acquire) {
                return Err(unusable("the tracked connection's pinger stopped"));
            }
            if rounds.changed().await.is_err() {
                return Err(unusable("the tracked connection is gone"));
            }
        }
    }
}

impl Shared {
    /// The connection, opened (and tracking confirmed on it) if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref()
            && self.invalidations.is_on()
        {
            return Ok(connection.clone());
        }
        *current = None;
        if crate::sync::lock(&self.retry_after)
            .is_some_and(|until| std::time::Instant::now() < until)
        {
            return Err(unusable(
                "the tracked connection failed lately; not tried again yet",
            ));
        }
        let before = self.invalidations.before_enabling();
        let opened = async {
            let mut connection = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .arg("OPTIN")
                .query_async::<()>(&mut connection)
                .await?;
            Ok::<_, RedisError>(connection)
        }
        .await;
        let connection = match opened {
            Ok(connection) => connection,
            Err(error) => {
                *crate::sync::lock(&self.retry_after) =
                    Some(std::time::Instant::now() + RETRY_AFTER);
                return Err(error);
            }
        };
        if !self.invalidations.confirm(before) {
            return Err(unusable(
                "the tracked connection dropped while tracking was enabled",
            ));
        }
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// Something failed on the connection: forget it and everything it vouched for.
    async fn failed(&self) {
        self.invalidations.void_all();
        *self.current.lock().await = None;
    }

    /// Start the pinger on the current runtime unless one is running.
    fn ensure_pinger(self: &Arc<Self>) {
        if self.pinger_running.load(Ordering::Acquire)
            || self.pinger_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        tokio::spawn(pinger(Arc::downgrade(self), Arc::clone(&self.wake)));
    }
}

/// Clears [`Shared::pinger_running`] when the pinger ends, also when its runtime drops it,
/// and fails what it was asked for, so no reader waits on a `PING` nobody will send.
struct PingerGuard(std::sync::Weak<Shared>);

impl Drop for PingerGuard {
    fn drop(&mut self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let wanted = shared.wanted.load(Ordering::SeqCst);
        // Later readers number their targets past what is failed here.
        shared.barriers_sent.fetch_max(wanted, Ordering::SeqCst);
        shared.pinger_running.store(false, Ordering::Release);
        shared
            .barriers
            .send_modify(|(_, failed)| *failed = (*failed).max(wanted));
    }
}

/// Sends the barrier `PING`s, one at a time: whenever a reader wants one newer than the last
/// sent. It holds the shared state only weakly, so it ends with its [`TrackedConnection`].
async fn pinger(shared: std::sync::Weak<Shared>, wake: Arc<Wake>) {
    let _guard = PingerGuard(shared.clone());
    loop {
        if wake.closed.load(Ordering::Acquire) {
            return;
        }
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let sent = strong.barriers_sent.load(Ordering::SeqCst);
        if strong.wanted.load(Ordering::SeqCst) <= sent {
            // Wait holding nothing of the state (a stored permit makes a wake-up before
            // this point count).
            drop(strong);
            wake.demand.notified().await;
            continue;
        }
        let sequence = strong.barriers_sent.fetch_add(1, Ordering::SeqCst) + 1;
        let answered = match strong.connection().await {
            Ok(mut connection) => redis::cmd("PING").query_async::<()>(&mut connection).await,
            Err(error) => Err(error),
        };
        if answered.is_err() {
            strong.failed().await;
        }
        strong
            .barriers
            .send_modify(|(done, failed)| match answered {
                Ok(()) => *done = (*done).max(sequence),
                Err(_) => *failed = (*failed).max(sequence),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalidate(keys: &[&str]) -> PushInfo {
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(
                keys.iter()
                    .map(|k| Value::BulkString(k.as_bytes().to_vec()))
                    .collect(),
            )],
        }
    }

    fn tracking() -> Invalidations {
        let t = Invalidations::default();
        assert!(t.confirm(t.before_enabling()));
        t
    }

    fn test_redis() -> Option<TrackedConnection> {
        let url = std::env::var("LIVECTX_TEST_REDIS_URL").ok()?;
        let client = redis::Client::open(format!("{url}?protocol=resp3")).ok()?;
        Some(TrackedConnection::new(client, AsyncConnectionConfig::new()))
    }

    /// Many readers at once are served by a few `PING`s, each sent after they began.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_barriers_share_pings() {
        let Some(tracked) = test_redis() else {
            eprintln!("LIVECTX_TEST_REDIS_URL unset: skipped");
            return;
        };
        let tracked = Arc::new(tracked);
        tracked.barrier().await.expect("first barrier");
        let before = tracked.shared.barriers_sent.load(Ordering::SeqCst);
        let readers: Vec<_> = (0..64)
            .map(|_| {
                let tracked = Arc::clone(&tracked);
                tokio::spawn(async move {
                    let began = tracked.shared.barriers_sent.load(Ordering::SeqCst);
                    tracked.barrier().await.map(|()| began)
                })
            })
            .collect();
        for reader in readers {
            let began = reader.await.expect("reader").expect("barrier");
            // Answered means a PING numbered past what had been sent when it began.
            assert!(tracked.shared.barriers.borrow().0 > began);
        }
        let pings = tracked.shared.barriers_sent.load(Ordering::SeqCst) - before;
        // Seen here: 2–6. Half as many PINGs as readers would already mean little sharing.
        assert!((1..=32).contains(&pings), "{pings} PINGs for 64 readers");
    }

    /// The pinger dies with the runtime that ran it; the next reader starts another, and
    /// no reader waits on a pinger that is gone.
    #[test]
    fn a_new_runtime_gets_a_new_pinger() {
        let Some(tracked) = test_redis() else {
            eprintln!("LIVECTX_TEST_REDIS_URL unset: skipped");
            return;
        };
        for _ in 0..3 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let barrier =
                    || tokio::time::timeout(std::time::Duration::from_secs(10), tracked.barrier());
                // The connection opened under the last runtime died with it: the first
                // barrier may fail on it (the read then checks the revision), never hang.
                let _ = barrier().await.expect("no hang");
                barrier().await.expect("no hang").expect("barrier");
            });
            drop(runtime);
            assert!(!tracked.shared.pinger_running.load(Ordering::SeqCst));
        }
    }

    /// Without Redis the barrier fails (so reads check revisions) instead of waiting.
    #[tokio::test]
    async fn a_barrier_without_redis_fails_fast() {
        let client = redis::Client::open("redis://127.0.0.1:1/?protocol=resp3").expect("url");
        let tracked = TrackedConnection::new(client, AsyncConnectionConfig::new());
        for _ in 0..2 {
            let result =
                tokio::time::timeout(std::time::Duration::from_secs(10), tracked.barrier())
                    .await
                    .expect("no hang");
            assert!(result.is_err());
        }
    }

    #[test]
    fn no_stamp_until_tracking_is_confirmed() {
        let t = Invalidations::default();
        assert!(!t.is_on());
        assert_eq!(t.stamp("k"), None);
        let before = t.before_enabling();
        assert!(t.confirm(before));
        assert!(t.is_on());
        assert!(t.stamp("k").is_some());
        // Confirming twice, or from a stale state, changes nothing.
        assert!(!t.confirm(before));
    }

    #[test]
    fn a_drop_while_enabling_is_not_confirmed() {
        let t = Invalidations::default();
        let before = t.before_enabling();
        t.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert!(
            !t.confirm(before),
            "the connection tracking was sent on is gone"
        );
        assert!(!t.is_on());
        assert!(t.confirm(t.before_enabling()));
    }

    #[test]
    fn an_invalidation_voids_the_stamps_of_its_key_only_in_its_stripe() {
        let t = tracking();
        let a = t.stamp("session:a").unwrap();
        let b = t.stamp("session:b").unwrap();
        t.on_push(&invalidate(&["session:a"]));
        assert!(!t.holds(a));
        let shares_a_stripe = stripe_of(b"session:a") == stripe_of(b"session:b");
        assert_eq!(t.holds(b), !shares_a_stripe);
        // A stamp taken after the invalidation holds.
        let again = t.stamp("session:a").unwrap();
        assert!(t.holds(again));
    }

    /// The race the stamps exist for: the invalidation is handled after Redis answered the
    /// read but before the reader stored it. The stamp was taken before the read was sent.
    #[test]
    fn an_invalidation_between_read_and_store_is_not_missed() {
        let t = tracking();
        let before_read = t.stamp("session:a").unwrap();
        // ... Redis answers the read, then pushes the invalidation of a later write ...
        t.on_push(&invalidate(&["session:a"]));
        // ... and only now the reader stores what it read, with its stamp.
        assert!(!t.holds(before_read));
    }

    #[test]
    fn drops_flushes_and_unknown_shapes_void_everything() {
        for push in [
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            },
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Array(vec![Value::Int(3)])],
            },
        ] {
            let t = tracking();
            let stamp = t.stamp("k").unwrap();
            t.on_push(&push);
            assert!(!t.holds(stamp), "{push:?}");
            assert!(
                !t.is_on(),
                "tracking must be confirmed again after {push:?}"
            );
            assert_eq!(t.stamp("k"), None);
        }
        // Other pushes (pub/sub) change nothing.
        let t = tracking();
        let stamp = t.stamp("k").unwrap();
        t.on_push(&PushInfo {
            kind: PushKind::Message,
            data: vec![],
        });
        assert!(t.holds(stamp));
    }
}
