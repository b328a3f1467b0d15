//! The Redis store: replicas share sessions through one Redis, or a Redis Cluster (or Valkey
//! cluster), with one code path for both.
//!
//! # Layout in Redis (key format 2, all under a configurable prefix, `livectx:` by default)
//!
//! Sessions are spread over [`keys::BUCKETS`] buckets; `{b…}` is a bucket's hash tag, so every
//! key a session write touches lives in its bucket's slot (see [`keys`]):
//!
//! | key                        | type   | holds                                                 |
//! |----------------------------|--------|-------------------------------------------------------|
//! | `{b…}:s:<session id>`      | hash   | `d` the [`Session`] as JSON, `r` its revision, `n` its incarnation, `t` its last activity, `k` its index keys; PX = idle TTL |
//! | `{b…}:recent`              | zset   | the bucket's session ids → last activity (eviction, expiry, listing) |
//! | `{b…}:chunks`, `{b…}:chunks:total` | hash, string | chunk count per session and in the bucket (summed for `/readyz`) |
//! | `{b…}:fences`              | hash   | stream lease → highest acquisition number seen (fencing) |
//! | `i:{[<product>\x1f]email:<e>}` / `i:{…user:<u>}` | string | `<session id>\x1f<incarnation>`: the person's newest session; PX = idle TTL |
//! | `p:{<product>}`            | string | a product has been stored (the knowledge-id check)    |
//! | `d:{<sha256 hex>}`         | string | a webhook body seen within the dedupe window (SET NX PX) |
//! | `format`                   | string | the key format version ([`keys::FORMAT_VERSION`])     |
//! | `writer`, `writer:wanted`, `writers` | string, string, zset | one server only: the writer lease's holder (PX), a refused writer's mark, replica → last write ([`writer_lease`]) |
//!
//! No key receives every write: a bucket's keys get 1/32 of them, the rest are per person,
//! product or delivery. The stream leases' keys are described in [`keys::LeaseKeys`].
//!
//! # Writes
//!
//! Every write is read, change, compare-and-set: the session is read, changed with exactly the
//! methods of [`crate::session::model`] the memory store uses (so both backends share every rule),
//! and committed by one Lua script in the session's slot that checks the revision read is still
//! the stored one (else the write starts over), checks the stream fence when there is one, and
//! updates the session, its bucket's recency and chunk counts together. The revision is a random
//! token rather than the session's `version`, so a session evicted and re-created meanwhile can
//! never pass for the one that was read. A summary claim lives in the session itself, so the
//! compare-and-set also makes it cluster-wide: at most one summary per session is in flight.
//!
//! Beyond the bound, the least recently active session is evicted after a write that created a
//! session: the buckets' sizes are summed and their oldest sessions compared (skipped while
//! this replica's last count plus its creations since stay under the bound).
//!
//! # The identity index
//!
//! Index entries live in other slots than the session, so a write that carries an identity
//! takes two steps: first point the entries at the session (`<id>\x1f<incarnation>`), then
//! commit the session. A lookup reads the entry, then asks the session whether it agrees: the
//! same incarnation (created or started over under the same id since means another session),
//! listing that identity, still active. A crash between the steps leaves an entry the session
//! does not confirm (it was never committed, or lacks the identity), so the lookup finds nobody
//! rather than a wrong session. The incarnation rather than the per-write revision: every later
//! write (a summary, a click without the email) changes the revision and would orphan the entry.
//!
//! # Reads
//!
//! `session` answers from this replica's cache when it holds the session as last read and Redis
//! has said nothing of the key since (`CLIENT TRACKING` on a second connection, checked after a
//! shared `PING`: see [`tracking`]); while this replica holds the writer lease, no other can
//! write, and the `PING` is skipped ([`writer_lease`]). Without tracking (a cluster, `LIVECTX_REDIS_TRACKING=false`,
//! or while the tracked connection is down) it is one `HGET` of the small revision field `r`,
//! and nothing is decoded while it matches (see [`read_cache`]); otherwise (first read, or
//! changed since) an `HMGET` of `d` and `r` together. A person lookup is a
//! `GET` and an `HMGET` in the session's slot; a product found once is remembered (products are never forgotten), so the knowledge-id check
//! of every `/retrieval` does not read one key on one master over and over.
//! Redis errors map to [`StoreError::Unavailable`] (connection, timeout, loading, failover) or
//! [`StoreError::Corrupt`] (what came back cannot be decoded).

pub mod connection;
pub mod keys;
mod read_cache;
mod scripts;
pub mod tracking;
pub mod writer_lease;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::try_join_all;

pub use connection::{ClusterInfo, RedisConnection, RedisTarget, UrlError, connect, store_error};
use keys::{BUCKETS, BucketKeys, FORMAT_VERSION, Keys};
use scripts::{CommitArgs, RemoveBound, WriterKeys, remove_invocation};
use writer_lease::WriterLease;

use crate::session::model::{
    ActionBatch, Gap, PersonKey, Session, SessionId, SummaryApplied, SummaryDraft, SummaryJob,
};
use crate::session::store::Corrupt;
use crate::session::store::{
    BackendHealth, Fence, GAP_LOOKBACK_SECS, SessionInfo, SessionPage, SessionStore, StoreConfig,
    StoreError, StoreStats, StoredBatch, Unavailable, decode_cursor, encode_cursor,
};
use crate::telemetry::LogThrottle;

/// Key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "livectx:";

/// Compare-and-set attempts before a write gives up (only under extreme contention).
const MAX_CAS_ATTEMPTS: u32 = 32;

/// Ids expired per script call, so one call never blocks Redis for long.
const EXPIRY_BATCH: usize = 256;

/// Sessions read per pipelined round trip when marking a stream gap.
const GAP_READ_BATCH: usize = 200;

/// How long a count of all sessions may be reused to skip the bound check after a creation.
const BOUND_VIEW_TTL: Duration = Duration::from_secs(1);

/// Separates a session id from its incarnation in an index entry.
const ENTRY_SEPARATOR: char = '\u{1f}';

/// How a write treats the session, mirroring the memory store's two paths.
#[derive(Debug, Clone, Copy)]
enum Mode<'a> {
    /// Create when missing (start over when expired), refresh recency and TTL, and point the
    /// identities in `point` at the session: a write caused by the user's activity
    /// (`update_session` in the memory store). Only the identities the write itself carried
    /// move the index, as in the memory store.
    Upsert {
        fence: Option<&'a Fence>,
        point: &'a [PersonKey],
    },
    /// Change an existing, unexpired session only (at `expiry_now`), leaving recency, TTL and
    /// index alone: claims, summaries, gap marks (`modify_existing`).
    Existing { expiry_now: f64 },
}

/// What a committed write reports.
struct Committed<R> {
    result: R,
    created: bool,
    evicted: usize,
}

enum CommitStatus {
    Written,
    Conflict,
    Fenced,
    /// Another replica holds the writer lease: nothing was written.
    Refused,
}

/// A session read and changed, ready for the index step and the commit.
///
/// Public (hidden) only so that property tests can run, interleave and crash the two steps of
/// an identified write exactly as [`SessionStore::append_actions`] runs them.
#[doc(hidden)]
pub struct PreparedWrite {
    key: String,
    session: Session,
    /// The revision read (`None`: the session did not exist).
    expected: Option<String>,
    incarnation: String,
    created: bool,
    /// The stored session had expired: the new one starts over.
    fresh: bool,
    /// Index entries to point at this session before the commit.
    point: Vec<String>,
    /// The product to mark as stored before the commit.
    new_product: Option<String>,
    ttl_ms: Option<u64>,
    fence: Option<Fence>,
}

/// This replica's last count of all sessions, to skip the bound check when far below it.
#[derive(Debug, Clone, Copy)]
struct BoundView {
    total: u64,
    at: Instant,
    created_since: u64,
}

/// The Redis [`SessionStore`].
pub struct RedisStore {
    connection: RedisConnection,
    keys: Keys,
    config: StoreConfig,
    bound_view: Mutex<Option<BoundView>>,
    /// Products known to be stored. Products are never forgotten, so a positive answer can be
    /// kept: without it every `/retrieval` would read the same key (one product, one slot).
    known_products: Mutex<HashSet<String>>,
    /// Sessions read lately and the revision each was read at (see [`read_cache`]).
    read_cache: read_cache::ReadCache,
    /// Lines about the tracked connection failing, at most one per [`TRACKING_LOG_INTERVAL`].
    tracking_log: LogThrottle,
    reads: ReadCounters,
    /// One server only: every write honours the writer lease, and this replica may take it.
    writer_lease: Option<Arc<WriterLease>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(lease) = &self.writer_lease {
            lease.close();
        }
    }
}

/// How this replica's session reads were answered, since it started.
#[derive(Debug, Default)]
struct ReadCounters {
    local: AtomicU64,
    sole: AtomicU64,
    revision: AtomicU64,
    whole: AtomicU64,
}

/// How session reads were answered (see [`RedisStore::read_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadStats {
    /// From the cache, with no command: Redis had said nothing of the key since.
    pub local: u64,
    /// Of `local`, those answered without a barrier `PING`, under the writer lease.
    pub sole: u64,
    /// From the cache after one `HGET` of the revision found it unchanged.
    pub revision: u64,
    /// Read whole from Redis (first read, changed since, or gone).
    pub whole: u64,
}

/// The least time between two log lines about the tracked connection failing.
const TRACKING_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Products remembered by [`RedisStore::has_product`] at most (a deployment has a few).
const KNOWN_PRODUCTS_MAX: usize = 1024;

/// Why this build cannot use what a Redis holds.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "Redis holds livectx data in key format {found} under the prefix {prefix:?}, and this build reads format {FORMAT_VERSION}; see docs/scaling.md (Moving from one Redis to a cluster): start on a new LIVECTX_REDIS_PREFIX, or delete the old keys"
    )]
    Mismatch { found: String, prefix: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RedisStore {
    /// A store on `connection` with every key under `prefix` (several deployments, or tests,
    /// can share one Redis with different prefixes; see [`keys::check_prefix`]).
    pub fn new(
        connection: impl Into<RedisConnection>,
        prefix: impl Into<String>,
        config: StoreConfig,
    ) -> Self {
        Self {
            connection: connection.into(),
            keys: Keys::new(prefix),
            config,
            bound_view: Mutex::new(None),
            known_products: Mutex::new(HashSet::new()),
            read_cache: read_cache::ReadCache::default(),
            tracking_log: LogThrottle::new(TRACKING_LOG_INTERVAL),
            reads: ReadCounters::default(),
            writer_lease: None,
        }
        .with_writer_lease(true)
    }

    /// Whether this replica takes the writer lease when it alone writes (it always honours
    /// another's on one server; a cluster has no writer lease). On by default.
    pub fn with_writer_lease(mut self, takes: bool) -> Self {
        let keys = &self.keys;
        self.writer_lease = matches!(self.connection, RedisConnection::Single(..)).then(|| {
            Arc::new(WriterLease::new(
                WriterKeys {
                    lease: keys.writer_lease(),
                    wanted: keys.writer_wanted(),
                    writers: keys.writers(),
                    me: format!("{:016x}", rand::random::<u64>()),
                },
                takes,
            ))
        });
        self
    }

    /// Does this replica hold the writer lease (tests, `/readyz`)?
    pub fn holds_writer_lease(&self) -> bool {
        self.writer_lease
            .as_ref()
            .is_some_and(|lease| lease.is_held())
    }

    fn writer_keys(&self) -> Option<&WriterKeys> {
        self.writer_lease.as_deref().map(WriterLease::keys)
    }

    fn start_writer_lease(&self) {
        if let Some(lease) = &self.writer_lease {
            lease.ensure_running(&self.connection);
        }
    }

    /// Send `read` of `key`: on the tracked connection when there is one (its value then
    /// comes with the stamp it can be trusted by), else, or when that fails, untracked on the
    /// main connection.
    async fn read<T: redis::FromRedisValue>(
        &self,
        key: &str,
        read: &redis::Cmd,
    ) -> Result<(T, Option<tracking::Stamp>), StoreError> {
        if let Some(tracked) = self.connection.tracked() {
            match tracked.read(key, read).await {
                Ok((value, stamp)) => return Ok((value, Some(stamp))),
                Err(error) => self.note_untracked(&error),
            }
        }
        let mut connection = self.connection.clone();
        let value = read
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        Ok((value, None))
    }

    /// The tracked connection failed: say so now and then (reads go on untracked).
    fn note_untracked(&self, error: &redis::RedisError) {
        if let Some(unlogged) = self.tracking_log.note(1) {
            tracing::warn!(%error, also_failed_since_last_line = unlogged, "the tracked Redis connection failed; reads check each session's revision meanwhile (LIVECTX_REDIS_TRACKING=false turns tracking off)");
        }
    }

    /// How this replica's session reads were answered so far (tests and benchmarks read it
    /// to show that unchanged sessions cost no command with tracking on).
    pub fn read_stats(&self) -> ReadStats {
        ReadStats {
            local: self.reads.local.load(Ordering::Relaxed),
            sole: self.reads.sole.load(Ordering::Relaxed),
            revision: self.reads.revision.load(Ordering::Relaxed),
            whole: self.reads.whole.load(Ordering::Relaxed),
        }
    }

    /// The connection (shared with the stream leases).
    pub fn connection(&self) -> &RedisConnection {
        &self.connection
    }

    /// Check, at start, that Redis holds no data of another key format under this prefix, and
    /// record this build's format when it holds none yet.
    pub async fn check_format(&self) -> Result<(), FormatError> {
        let mut connection = self.connection.clone();
        let stored: Option<String> = redis::cmd("GET")
            .arg(self.keys.format())
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let mismatch = |found: String| FormatError::Mismatch {
            found,
            prefix: self.keys.prefix().to_string(),
        };
        match stored {
            Some(found) if found == FORMAT_VERSION.to_string() => Ok(()),
            Some(found) => Err(mismatch(found)),
            None => {
                let legacy: bool = redis::cmd("EXISTS")
                    .arg(self.keys.legacy_recency())
                    .query_async(&mut connection)
                    .await
                    .map_err(store_error)?;
                if legacy {
                    return Err(mismatch("1".to_string()));
                }
                redis::cmd("SET")
                    .arg(self.keys.format())
                    .arg(FORMAT_VERSION)
                    .arg("NX")
                    .query_async::<Option<String>>(&mut connection)
                    .await
                    .map_err(store_error)?;
                Ok(())
            }
        }
    }

    /// The stored session JSON, its revision and its incarnation.
    async fn load(
        &self,
        key: &str,
    ) -> Result<(Option<Vec<u8>>, Option<String>, Option<String>), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("HMGET")
            .arg(key)
            .arg("d")
            .arg("r")
            .arg("n")
            .query_async(&mut connection)
            .await
            .map_err(store_error)
    }

    /// Read the session and apply `change`. `Ok(Err(result))`: nothing to write (the session
    /// is missing or expired in [`Mode::Existing`], `None`; or the change changed nothing).
    async fn prepare<R>(
        &self,
        id: &SessionId,
        now: f64,
        mode: Mode<'_>,
        change: &mut impl FnMut(&mut Session) -> R,
    ) -> Result<Result<(PreparedWrite, R), Option<R>>, StoreError> {
        let ttl = self.config.ttl_secs();
        let key = self.keys.session(id.as_str());
        let (blob, revision, incarnation) = self.load(&key).await?;
        let stored = match (&blob, &revision) {
            (Some(blob), Some(_)) => Some(decode_session(blob)?),
            _ => None,
        };
        let new_incarnation = || format!("{:016x}", rand::random::<u64>());
        let (mut session, created, fresh, incarnation) = match (mode, stored) {
            (Mode::Upsert { .. }, None) => (Session::new(id.clone(), now), true, false, None),
            // An expired session is not resurrected: it starts over.
            (Mode::Upsert { .. }, Some(s)) if s.is_expired(now, ttl) => {
                (Session::new(id.clone(), now), false, true, None)
            }
            (Mode::Upsert { .. }, Some(s)) => (s, false, false, incarnation),
            (Mode::Existing { .. }, None) => return Ok(Err(None)),
            (Mode::Existing { expiry_now }, Some(s)) if s.is_expired(expiry_now, ttl) => {
                return Ok(Err(None));
            }
            (Mode::Existing { .. }, Some(s)) => (s, false, false, incarnation),
        };
        let incarnation = incarnation.unwrap_or_else(new_incarnation);
        let before = session.clone();
        let result = change(&mut session);
        if matches!(mode, Mode::Existing { .. }) && session == before {
            // Nothing changed (a duplicate gap, a claim refused): no write needed.
            return Ok(Err(Some(result)));
        }
        session.advance_version_past(before.version());
        let (point, new_product, ttl_ms, fence) = match mode {
            Mode::Upsert { fence, point } => {
                let remaining = session.last_seen() + ttl - now;
                let ttl_ms = (remaining * 1000.0).ceil().max(1.0) as u64;
                let new_product = session
                    .product_id()
                    .clone()
                    .filter(|_| created || fresh || before.product_id().is_none());
                (
                    self.keys.index_keys_for(&session, point),
                    new_product,
                    Some(ttl_ms),
                    fence.cloned(),
                )
            }
            Mode::Existing { .. } => (Vec::new(), None, None, None),
        };
        let expected = if created { None } else { revision };
        Ok(Ok((
            PreparedWrite {
                key,
                session,
                expected,
                incarnation,
                created,
                fresh,
                point,
                new_product,
                ttl_ms,
                fence,
            },
            result,
        )))
    }

    /// Step one of a write: mark its product as stored and point the identities it carries at
    /// the session, before the session itself is committed (see the module doc).
    #[doc(hidden)]
    pub async fn point_index(&self, write: &PreparedWrite) -> Result<(), StoreError> {
        let entry = format!(
            "{}{ENTRY_SEPARATOR}{}",
            write.session.id().as_str(),
            write.incarnation
        );
        let ttl_ms = write.ttl_ms.unwrap_or(1);
        let product = write.new_product.as_deref().map(|product| {
            let mut connection = self.connection.clone();
            let key = self.keys.product(product);
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .query_async::<()>(&mut connection)
                    .await
            }
        });
        let entries = write.point.iter().map(|index_key| {
            let mut connection = self.connection.clone();
            let entry = entry.clone();
            async move {
                redis::cmd("SET")
                    .arg(index_key)
                    .arg(entry)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut connection)
                    .await
            }
        });
        let writes: Vec<_> = product
            .into_iter()
            .map(futures_util::FutureExt::boxed)
            .chain(entries.map(futures_util::FutureExt::boxed))
            .collect();
        try_join_all(writes).await.map_err(store_error)?;
        Ok(())
    }

    /// Step two: the compare-and-set commit.
    async fn commit(&self, write: &PreparedWrite) -> Result<CommitStatus, StoreError> {
        self.start_writer_lease();
        let session = &write.session;
        let blob = serde_json::to_vec(session).map_err(|source| {
            StoreError::Corrupt(Corrupt::Json {
                what: "cannot encode session",
                source,
            })
        })?;
        let index_json =
            serde_json::to_string(&self.keys.index_keys_of(session)).map_err(|source| {
                StoreError::Corrupt(Corrupt::Json {
                    what: "cannot encode index keys",
                    source,
                })
            })?;
        let new_revision = format!("{:016x}", rand::random::<u64>());
        let bucket = self.keys.bucket_of_session(session.id().as_str());
        let fence = match &write.fence {
            Some(fence) => Some((
                fence.lease_key.as_str(),
                keys::fence_number(&fence.token).ok_or_else(|| {
                    StoreError::Corrupt(Corrupt::UnnumberedFence(fence.token.clone()))
                })?,
            )),
            None => None,
        };
        let last_seen = format_score(session.last_seen());
        let args = CommitArgs {
            session_key: &write.key,
            bucket: &bucket,
            expected_revision: write.expected.as_deref(),
            new_revision: &new_revision,
            incarnation: &write.incarnation,
            session_json: &blob,
            ttl_ms: write.ttl_ms,
            last_seen: &last_seen,
            session_id: session.id().as_str(),
            chunk_count: session.chunks().len(),
            fence,
            index_keys_json: &index_json,
            fresh: write.fresh,
            writer: self.writer_keys(),
        };
        let mut connection = self.connection.clone();
        let reply = args.invocation().invoke_async(&mut connection).await;
        // Whatever the outcome (an error may hide a write that ran), this replica's next read
        // of the session asks Redis instead of trusting its cache, without waiting for
        // Redis's invalidation to arrive.
        if let Some(tracked) = self.connection.tracked() {
            tracked.invalidations().invalidate(write.key.as_bytes());
        }
        let reply: Vec<i64> = reply.map_err(store_error)?;
        match reply.as_slice() {
            [1] => Ok(CommitStatus::Written),
            [0] => Ok(CommitStatus::Conflict),
            [-1] => Ok(CommitStatus::Fenced),
            [-2] => Ok(CommitStatus::Refused),
            other => Err(StoreError::Corrupt(Corrupt::UnexpectedReply {
                script: "commit",
                reply: format!("{other:?}"),
            })),
        }
    }

    /// [`Self::commit`], waiting while another replica holds the writer lease (it steps down
    /// when asked, or its lease expires); `Refused` only after [`writer_lease::WRITE_WAIT`].
    async fn commit_when_allowed(&self, write: &PreparedWrite) -> Result<CommitStatus, StoreError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match self.commit(write).await? {
                CommitStatus::Refused if started.elapsed() < writer_lease::WRITE_WAIT => {
                    refused_pause(&mut attempt).await;
                }
                status => return Ok(status),
            }
        }
    }

    /// Run the remove script, waiting as [`Self::commit_when_allowed`] does; this replica's
    /// next read of each session then asks Redis (as after a commit).
    async fn remove_when_allowed(
        &self,
        bucket: &BucketKeys,
        sessions: &[(String, String)],
        bound: RemoveBound,
    ) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let mut connection = self.connection.clone();
            let reply: Result<i64, _> =
                remove_invocation(bucket, sessions, bound, self.writer_keys())
                    .invoke_async(&mut connection)
                    .await;
            if let Some(tracked) = self.connection.tracked() {
                for (_, key) in sessions {
                    tracked.invalidations().invalidate(key.as_bytes());
                }
            }
            match reply.map_err(store_error)? {
                -1 if started.elapsed() < writer_lease::WRITE_WAIT => {
                    refused_pause(&mut attempt).await;
                }
                -1 => return Err(writer_lease_held()),
                removed => return Ok(usize::try_from(removed).unwrap_or(0)),
            }
        }
    }

    /// Read, change with `change`, compare-and-set; start over when another writer came first.
    /// `None` when `mode` is [`Mode::Existing`] and the session is missing or expired.
    async fn update<R>(
        &self,
        id: &SessionId,
        now: f64,
        mode: Mode<'_>,
        mut change: impl FnMut(&mut Session) -> R,
    ) -> Result<Option<Committed<R>>, StoreError> {
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let (write, result) = match self.prepare(id, now, mode, &mut change).await? {
                Ok(prepared) => prepared,
                Err(None) => return Ok(None),
                Err(Some(result)) => {
                    return Ok(Some(Committed {
                        result,
                        created: false,
                        evicted: 0,
                    }));
                }
            };
            self.point_index(&write).await?;
            match self.commit_when_allowed(&write).await? {
                CommitStatus::Written => {
                    let evicted = if write.created {
                        self.enforce_bound(id.as_str()).await?
                    } else {
                        0
                    };
                    return Ok(Some(Committed {
                        result,
                        created: write.created,
                        evicted,
                    }));
                }
                CommitStatus::Fenced => return Err(StoreError::Fenced),
                CommitStatus::Conflict => conflict_pause(attempt).await,
                CommitStatus::Refused => return Err(writer_lease_held()),
            }
        }
        Err(StoreError::Unavailable(Unavailable::Contended {
            id: id.clone(),
            attempts: MAX_CAS_ATTEMPTS,
        }))
    }

    /// Read and change a session for an append, without writing anything yet (property tests).
    #[doc(hidden)]
    pub async fn prepare_append(
        &self,
        batch: ActionBatch,
        now: f64,
    ) -> Result<PreparedWrite, StoreError> {
        let id = batch.session_id.clone();
        let people = batch.person_keys();
        let limits = self.config.limits;
        let mode = Mode::Upsert {
            fence: None,
            point: &people,
        };
        let mut change = |session: &mut Session| session.append(batch.clone(), now, limits);
        match self.prepare(&id, now, mode, &mut change).await? {
            Ok((write, _)) => Ok(write),
            Err(_) => Err(StoreError::Corrupt(Corrupt::Invariant(
                "an append found nothing to write",
            ))),
        }
    }

    /// Commit a prepared write; `false` when the session changed since it was read.
    #[doc(hidden)]
    pub async fn commit_prepared(&self, write: &PreparedWrite) -> Result<bool, StoreError> {
        match self.commit_when_allowed(write).await? {
            CommitStatus::Written => Ok(true),
            CommitStatus::Conflict => Ok(false),
            CommitStatus::Fenced => Err(StoreError::Fenced),
            CommitStatus::Refused => Err(writer_lease_held()),
        }
    }

    /// Upsert a session on behalf of activity (append, connector summary, tour).
    async fn upsert<R>(
        &self,
        id: &SessionId,
        now: f64,
        fence: Option<&Fence>,
        point: &[PersonKey],
        change: impl FnMut(&mut Session) -> R,
    ) -> Result<Committed<R>, StoreError> {
        self.update(id, now, Mode::Upsert { fence, point }, change)
            .await?
            .ok_or(StoreError::Corrupt(Corrupt::Invariant(
                "upsert found no session",
            )))
    }

    /// The same command on every bucket at once (each in its own slot).
    async fn each_bucket<T, F>(&self, command: F) -> Result<Vec<T>, StoreError>
    where
        T: redis::FromRedisValue,
        F: Fn(usize, &BucketKeys) -> redis::Pipeline,
    {
        let queries = (0..BUCKETS).map(|bucket| {
            let pipe = command(bucket, &self.keys.bucket(bucket));
            let mut connection = self.connection.clone();
            async move { pipe.query_async::<T>(&mut connection).await }
        });
        try_join_all(queries).await.map_err(store_error)
    }

    /// After a creation: evict the least recently active sessions beyond `max_sessions`
    /// (never `keep`, the one just created). Returns how many were evicted.
    async fn enforce_bound(&self, keep: &str) -> Result<usize, StoreError> {
        let max = self.config.max_sessions.max(1) as u64;
        {
            let mut view = crate::sync::lock(&self.bound_view);
            if let Some(view) = view.as_mut() {
                view.created_since += 1;
                if view.at.elapsed() < BOUND_VIEW_TTL && view.total + view.created_since <= max {
                    return Ok(0);
                }
            }
        }
        let mut evicted = 0;
        loop {
            let counts: Vec<(u64,)> = self
                .each_bucket(|_, bucket| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZCARD").arg(&bucket.recency);
                    pipe
                })
                .await?;
            let total: u64 = counts.iter().map(|(count,)| count).sum();
            *crate::sync::lock(&self.bound_view) = Some(BoundView {
                total,
                at: Instant::now(),
                created_since: 0,
            });
            if total <= max {
                return Ok(evicted);
            }
            let excess = usize::try_from(total - max)
                .unwrap_or(usize::MAX)
                .min(EXPIRY_BATCH);
            // The `excess` oldest of each bucket (plus one, `keep` may be among them).
            let oldest: Vec<(Vec<(String, f64)>,)> = self
                .each_bucket(|_, bucket| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZRANGE")
                        .arg(&bucket.recency)
                        .arg(0)
                        .arg(excess)
                        .arg("WITHSCORES");
                    pipe
                })
                .await?;
            let mut candidates: Vec<(f64, String, usize)> = oldest
                .into_iter()
                .enumerate()
                .flat_map(|(bucket, (entries,))| {
                    entries
                        .into_iter()
                        .map(move |(id, score)| (score, id, bucket))
                })
                .filter(|(_, id, _)| id != keep)
                .collect();
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            candidates.truncate(excess);
            if candidates.is_empty() {
                return Ok(evicted);
            }
            let mut removed = 0;
            for (score, id, bucket) in candidates {
                let key = self.keys.session(&id);
                removed += self
                    .remove_when_allowed(
                        &self.keys.bucket(bucket),
                        &[(id, key)],
                        RemoveBound::AtOrBefore(score),
                    )
                    .await?;
            }
            evicted += removed;
            if removed == 0 {
                // Every candidate was touched meanwhile: count again.
                continue;
            }
        }
    }

    /// Several sessions by id, read with one pipeline per bucket (missing ones are `None`).
    async fn sessions_by_id(&self, ids: &[String]) -> Result<Vec<Option<Session>>, StoreError> {
        let mut by_bucket: Vec<Vec<usize>> = vec![Vec::new(); BUCKETS];
        for (i, id) in ids.iter().enumerate() {
            by_bucket[keys::bucket_of(id)].push(i);
        }
        let reads = by_bucket
            .into_iter()
            .filter(|positions| !positions.is_empty())
            .map(|positions| {
                let mut pipe = redis::pipe();
                for &i in &positions {
                    pipe.cmd("HGET").arg(self.keys.session(&ids[i])).arg("d");
                }
                let mut connection = self.connection.clone();
                async move {
                    let blobs: Vec<Option<Vec<u8>>> = pipe.query_async(&mut connection).await?;
                    Ok::<_, redis::RedisError>(positions.into_iter().zip(blobs))
                }
            });
        let mut found: Vec<Option<Session>> = vec![None; ids.len()];
        for group in try_join_all(reads).await.map_err(store_error)? {
            for (i, blob) in group {
                found[i] = blob.as_deref().map(decode_session).transpose()?;
            }
        }
        Ok(found)
    }

    /// The bucket health of a cluster, for `/readyz`.
    pub async fn cluster_info(&self) -> Result<Option<ClusterInfo>, StoreError> {
        self.connection.cluster_info().await.map_err(store_error)
    }
}

/// A plain manager carries no invalidations (its pushes go nowhere): reads check revisions.
impl From<redis::aio::ConnectionManager> for RedisConnection {
    fn from(connection: redis::aio::ConnectionManager) -> Self {
        Self::Single(connection, None)
    }
}

impl From<redis::cluster_async::ClusterConnection> for RedisConnection {
    fn from(connection: redis::cluster_async::ClusterConnection) -> Self {
        Self::Cluster(connection)
    }
}

impl Keys {
    /// Every index key a session is listed under (global and product-scoped).
    fn index_keys_of(&self, session: &Session) -> Vec<String> {
        self.index_keys_for(session, session.person_keys())
    }

    /// The index keys of `people` that `session` may be listed under (global and
    /// product-scoped; identities beyond the session's cap are never indexed).
    fn index_keys_for(&self, session: &Session, people: &[PersonKey]) -> Vec<String> {
        let mut keys = Vec::with_capacity(people.len() * 2);
        for key in people.iter().filter(|k| session.person_keys().contains(k)) {
            keys.push(self.person(None, key));
            if let Some(product) = session.product_id().as_deref() {
                keys.push(self.person(Some(product), key));
            }
        }
        keys
    }
}

/// The invocation that raises `bucket`'s fence mark for the lease `lease_key` to `number`
/// (the stream leases call it on every bucket when a new leader takes over).
pub fn raise_fence_invocation(
    bucket: &BucketKeys,
    lease_key: &str,
    number: u64,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = scripts::RAISE_FENCE.prepare_invoke();
    invocation.key(&bucket.fences).arg(lease_key).arg(number);
    invocation
}

/// Decode a stored session.
fn decode_session(blob: &[u8]) -> Result<Session, StoreError> {
    serde_json::from_slice(blob).map_err(|source| {
        StoreError::Corrupt(Corrupt::Json {
            what: "stored session is not valid",
            source,
        })
    })
}

/// A score as Redis reads it back to the same `f64` (shortest round-trip form, no exponent).
pub(crate) fn format_score(value: f64) -> String {
    format!("{value}")
}

/// Back off a little between compare-and-set attempts so racing writers spread out.
async fn conflict_pause(attempt: u32) {
    if attempt < 2 {
        tokio::task::yield_now().await;
    } else {
        let max_micros = 200u64 << attempt.min(8);
        let micros = rand::random::<u64>() % max_micros;
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }
}

/// Wait a little before trying a write the writer lease refused again: its holder steps
/// down within a round trip or two when it is alive.
async fn refused_pause(attempt: &mut u32) {
    let millis = (1u64 << (*attempt).min(6)).min(50);
    *attempt += 1;
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// A write gave up on the writer lease (its holder neither stepped down nor let it expire).
fn writer_lease_held() -> StoreError {
    StoreError::Unavailable(Unavailable::WriterLeaseHeld {
        waited: writer_lease::WRITE_WAIT,
    })
}

/// One bucket's part of an active-sessions page.
struct BucketSlice {
    entries: Vec<(String, f64)>,
    /// It returned all it was asked for: it may hold more, older ones.
    full: bool,
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn append_actions(
        &self,
        batch: ActionBatch,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<StoredBatch, StoreError> {
        let id = batch.session_id.clone();
        let people = batch.person_keys();
        let limits = self.config.limits;
        let committed = self
            .upsert(&id, now, fence, &people, |session| {
                session.append(batch.clone(), now, limits)
            })
            .await?;
        let mut outcome = committed.result;
        outcome.created = committed.created;
        Ok(StoredBatch {
            outcome,
            evicted: committed.evicted,
        })
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
        self.upsert(session_id, now, fence, &[], |session| {
            session.name_product(product_id);
            session.touch(now);
            session.apply_connector_summary(text, replaces, now)
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
        self.upsert(session_id, now, fence, &[], |session| {
            session.name_product(product_id);
            session.record_tour(flow_id, reason, now, now);
        })
        .await?;
        Ok(())
    }

    async fn record_gap(&self, product_id: &str, gap: Gap, now: f64) -> Result<usize, StoreError> {
        let since = gap.from - GAP_LOOKBACK_SECS;
        let ttl = self.config.ttl_secs();
        let per_bucket: Vec<(Vec<String>,)> = self
            .each_bucket(|_, bucket| {
                let mut pipe = redis::pipe();
                pipe.cmd("ZRANGEBYSCORE")
                    .arg(&bucket.recency)
                    .arg(format_score(since))
                    .arg("+inf");
                pipe
            })
            .await?;
        let candidates: Vec<String> = per_bucket.into_iter().flat_map(|(ids,)| ids).collect();
        let applies = |s: &Session| {
            !s.is_expired(now, ttl)
                && s.last_seen() >= since
                && s.product_id().as_deref().is_none_or(|p| p == product_id)
        };
        let mut marked = 0;
        // Read in batches to find the sessions the gap concerns; mark those through the
        // ordinary compare-and-set update (gaps are rare: one extra read each is fine).
        for ids in candidates.chunks(GAP_READ_BATCH) {
            let sessions = self.sessions_by_id(ids).await?;
            for (raw_id, session) in ids.iter().zip(sessions) {
                let Some(session) = session else { continue };
                if !applies(&session) {
                    continue;
                }
                let Ok(id) = SessionId::parse(raw_id) else {
                    continue;
                };
                let mode = Mode::Existing { expiry_now: now };
                let updated = self
                    .update(&id, now, mode, |s| {
                        if applies(s) {
                            s.note_gap(gap);
                        }
                    })
                    .await?;
                if updated.is_some() {
                    marked += 1;
                }
            }
        }
        Ok(marked)
    }

    async fn session(&self, id: &SessionId, now: f64) -> Result<Option<Arc<Session>>, StoreError> {
        let ttl = self.config.ttl_secs();
        let fresh = |session: Arc<Session>| (!session.is_expired(now, ttl)).then_some(session);
        self.start_writer_lease();
        let cached = self.read_cache.get(id);
        // Tracked, and Redis has said nothing of the key since it was read — counting what it
        // sent up to now (the barrier): it is what Redis holds. An invalidation already
        // handled needs no barrier to be believed, nor does anything while this replica
        // alone writes (the writer lease). (No key is built on this path.)
        if let Some(cached) = &cached
            && let (Some(tracked), Some(stamp)) = (self.connection.tracked(), cached.stamp)
            && tracked.invalidations().holds(stamp)
        {
            if self
                .writer_lease
                .as_ref()
                .is_some_and(|lease| lease.is_sole())
            {
                self.reads.local.fetch_add(1, Ordering::Relaxed);
                self.reads.sole.fetch_add(1, Ordering::Relaxed);
                return Ok(fresh(Arc::clone(&cached.session)));
            }
            match tracked.barrier().await {
                Ok(()) if tracked.invalidations().holds(stamp) => {
                    self.reads.local.fetch_add(1, Ordering::Relaxed);
                    return Ok(fresh(Arc::clone(&cached.session)));
                }
                Ok(()) => {}
                Err(error) => self.note_untracked(&error),
            }
        }
        let key = self.keys.session(id.as_str());
        if let Some(cached) = cached {
            // Is what this replica read still what Redis holds? One small field says.
            let (revision, stamp): (Option<String>, _) = self
                .read(&key, redis::cmd("HGET").arg(&key).arg("r"))
                .await?;
            match revision {
                Some(revision) if *revision == *cached.revision => {
                    self.reads.revision.fetch_add(1, Ordering::Relaxed);
                    // Kept under the new stamp; the revision held is the one just read.
                    self.read_cache.put(
                        id.clone(),
                        cached.revision,
                        Arc::clone(&cached.session),
                        stamp,
                    );
                    return Ok(fresh(cached.session));
                }
                Some(_) => {}
                None => {
                    self.read_cache.remove(id);
                    return Ok(None);
                }
            }
        }
        self.reads.whole.fetch_add(1, Ordering::Relaxed);
        let ((blob, revision), stamp): ((Option<Vec<u8>>, Option<String>), _) = self
            .read(&key, redis::cmd("HMGET").arg(&key).arg("d").arg("r"))
            .await?;
        let Some(blob) = blob else {
            self.read_cache.remove(id);
            return Ok(None);
        };
        let session = Arc::new(decode_session(&blob)?);
        match revision {
            Some(revision) => {
                self.read_cache
                    .put(id.clone(), revision.into(), Arc::clone(&session), stamp);
            }
            None => self.read_cache.remove(id),
        }
        Ok(fresh(session))
    }

    async fn resolve_person(
        &self,
        key: &PersonKey,
        product_id: Option<&str>,
        now: f64,
    ) -> Result<Option<SessionId>, StoreError> {
        let index_key = self.keys.person(product_id, key);
        let mut connection = self.connection.clone();
        let entry: Option<String> = redis::cmd("GET")
            .arg(&index_key)
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let Some((id, incarnation)) = entry.as_deref().and_then(|e| e.split_once(ENTRY_SEPARATOR))
        else {
            return Ok(None);
        };
        // Does the session agree? Same incarnation, lists this identity, still active.
        let (stored_incarnation, last_seen, listed): (Option<String>, Option<f64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.keys.session(id))
                .arg("n")
                .arg("t")
                .arg("k")
                .query_async(&mut connection)
                .await
                .map_err(store_error)?;
        if stored_incarnation.as_deref() != Some(incarnation) {
            return Ok(None);
        }
        let lists_identity = listed
            .as_deref()
            .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
            .is_some_and(|keys| keys.contains(&index_key));
        let active = last_seen.is_some_and(|t| t + self.config.ttl_secs() >= now);
        if !(lists_identity && active) {
            return Ok(None);
        }
        SessionId::parse(id)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(Corrupt::BadId(e)))
    }

    async fn has_product(&self, product_id: &str) -> Result<bool, StoreError> {
        if crate::sync::lock(&self.known_products).contains(product_id) {
            return Ok(true);
        }
        let mut connection = self.connection.clone();
        let known: bool = redis::cmd("EXISTS")
            .arg(self.keys.product(product_id))
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        if known {
            let mut products = crate::sync::lock(&self.known_products);
            if products.len() < KNOWN_PRODUCTS_MAX {
                products.insert(product_id.to_string());
            }
        }
        Ok(known)
    }

    async fn claim_summary(
        &self,
        id: &SessionId,
        threshold: usize,
        now: f64,
        lease: Duration,
    ) -> Result<Option<SummaryJob>, StoreError> {
        // Random rather than a counter: unique across replicas without a round trip.
        let token = rand::random::<u64>().max(1);
        let until = now + lease.as_secs_f64();
        Ok(self
            .update(id, now, Mode::Existing { expiry_now: now }, |s| {
                s.claim_summary(threshold, now, until, token)
            })
            .await?
            .and_then(|c| c.result))
    }

    async fn finish_summary(
        &self,
        job: &SummaryJob,
        draft: SummaryDraft,
        now: f64,
    ) -> Result<SummaryApplied, StoreError> {
        Ok(self
            .update(
                &job.session_id,
                now,
                Mode::Existing { expiry_now: now },
                |s| s.finish_summary(job, draft.clone(), now),
            )
            .await?
            .map_or(SummaryApplied::Gone, |c| c.result))
    }

    async fn release_summary(&self, job: &SummaryJob) -> Result<(), StoreError> {
        // A release must work even when the session just expired.
        self.update(
            &job.session_id,
            f64::MIN,
            Mode::Existing {
                expiry_now: f64::MIN,
            },
            |s| s.release_claim(job.claim_token),
        )
        .await?;
        Ok(())
    }

    async fn active_sessions(
        &self,
        since: f64,
        cursor: Option<&str>,
        limit: usize,
        now: f64,
    ) -> Result<SessionPage, StoreError> {
        let limit = limit.max(1);
        let ttl = self.config.ttl_secs();
        let mut after = cursor.and_then(decode_cursor);
        let mut sessions = Vec::with_capacity(limit);
        let mut next_cursor = None;
        'pages: loop {
            // From each bucket: the sessions at the cursor's time (ties, ordered by id here)
            // plus `limit` older ones.
            let upper = after
                .as_ref()
                .map_or("+inf".to_string(), |(ts, _)| format_score(*ts));
            let ties: Vec<(u64,)> = match &after {
                Some((ts, _)) => {
                    let exact = format_score(*ts);
                    self.each_bucket(|_, bucket| {
                        let mut pipe = redis::pipe();
                        pipe.cmd("ZCOUNT")
                            .arg(&bucket.recency)
                            .arg(&exact)
                            .arg(&exact);
                        pipe
                    })
                    .await?
                }
                None => vec![(0,); BUCKETS],
            };
            let fetched: Vec<(Vec<(String, f64)>,)> = self
                .each_bucket(|b, bucket| {
                    let want = limit as u64 + ties.get(b).map_or(0, |(t,)| *t);
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZREVRANGEBYSCORE")
                        .arg(&bucket.recency)
                        .arg(&upper)
                        .arg(format_score(since))
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(want);
                    pipe
                })
                .await?;
            let slices: Vec<BucketSlice> = fetched
                .into_iter()
                .zip(&ties)
                .map(|((entries,), (tie,))| BucketSlice {
                    full: entries.len() as u64 >= limit as u64 + tie,
                    entries,
                })
                .collect();
            // Entries at or below the highest "last fetched" time of a full bucket may have
            // unseen neighbours in that bucket: only those above it are safe to list now.
            let horizon = slices
                .iter()
                .filter(|s| s.full)
                .filter_map(|s| s.entries.last().map(|(_, score)| *score))
                .fold(f64::NEG_INFINITY, f64::max);
            let mut page: Vec<(String, f64)> = slices
                .into_iter()
                .flat_map(|s| s.entries)
                .filter(|(id, score)| match &after {
                    Some((ts, after_id)) => {
                        *score < *ts || (*score == *ts && id.as_str() > after_id.as_str())
                    }
                    None => true,
                })
                .collect();
            page.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let more = horizon > f64::NEG_INFINITY;
            let safe: Vec<(String, f64)> = page
                .into_iter()
                .filter(|(_, score)| !more || *score > horizon)
                .collect();
            let ids: Vec<String> = safe.iter().map(|(id, _)| id.clone()).collect();
            let found = self.sessions_by_id(&ids).await?;
            for ((id, score), session) in safe.iter().zip(found) {
                if sessions.len() == limit {
                    break 'pages;
                }
                if let Some(session) = session.filter(|s| !s.is_expired(now, ttl)) {
                    sessions.push(SessionInfo::of(&session));
                    next_cursor = Some(encode_cursor(*score, id));
                }
            }
            if !more || sessions.len() == limit {
                break;
            }
            // Continue with the whole group at the horizon (every bucket's ties at that time
            // are fetched next round).
            after = Some((horizon, String::new()));
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
        let cutoff = now - self.config.ttl_secs();
        let buckets = (0..BUCKETS).map(|bucket| self.expire_bucket(bucket, cutoff));
        Ok(try_join_all(buckets).await?.into_iter().sum())
    }

    async fn first_delivery(
        &self,
        body_hash: [u8; 32],
        _now: f64,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut connection = self.connection.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.delivery(&body_hash))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(window_ms)
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        Ok(set.is_some())
    }

    async fn forget_delivery(&self, body_hash: [u8; 32]) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(self.keys.delivery(&body_hash))
            .query_async::<i64>(&mut connection)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let per_bucket: Vec<(u64, Option<i64>)> = self
            .each_bucket(|_, bucket| {
                let mut pipe = redis::pipe();
                pipe.cmd("ZCARD")
                    .arg(&bucket.recency)
                    .cmd("GET")
                    .arg(&bucket.chunk_total);
                pipe
            })
            .await?;
        let sessions = per_bucket.iter().map(|(sessions, _)| sessions).sum();
        let chunks: i64 = per_bucket
            .iter()
            .map(|(_, chunks)| chunks.unwrap_or(0))
            .sum();
        Ok(StoreStats {
            sessions,
            chunks: u64::try_from(chunks).unwrap_or(0),
        })
    }

    async fn health(&self) -> Result<Option<BackendHealth>, StoreError> {
        let Some(info) = self.cluster_info().await? else {
            // One server: whether reads are answered from the tracked cache, and how they
            // were answered so far (an operator's view of what tracking saves).
            let tracking = match self.connection.tracked() {
                None => "off",
                Some(tracked) if tracked.invalidations().is_on() => "on",
                Some(_) => "not connected",
            };
            let reads = self.read_stats();
            let writer_lease = match &self.writer_lease {
                Some(lease) if lease.is_held() => "held",
                _ => "not held",
            };
            return Ok(Some(BackendHealth {
                ok: true,
                details: serde_json::json!({
                    "mode": "single",
                    "tracking": tracking,
                    "writer_lease": writer_lease,
                    "session_reads": {
                        "from_cache": reads.local,
                        "without_barrier": reads.sole,
                        "revision_checked": reads.revision,
                        "read_whole": reads.whole,
                    },
                }),
            }));
        };
        Ok(Some(BackendHealth {
            ok: info.is_ok(),
            details: serde_json::json!({ "mode": "cluster", "cluster": info }),
        }))
    }
}

impl RedisStore {
    /// Expire one bucket's idle sessions, a batch per script call.
    async fn expire_bucket(&self, bucket: usize, cutoff: f64) -> Result<usize, StoreError> {
        let keys = self.keys.bucket(bucket);
        let mut expired = 0;
        loop {
            let mut connection = self.connection.clone();
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&keys.recency)
                .arg("-inf")
                .arg(format!("({}", format_score(cutoff)))
                .arg("LIMIT")
                .arg(0)
                .arg(EXPIRY_BATCH)
                .query_async(&mut connection)
                .await
                .map_err(store_error)?;
            if ids.is_empty() {
                return Ok(expired);
            }
            let sessions: Vec<(String, String)> = ids
                .iter()
                .map(|id| (id.clone(), self.keys.session(id)))
                .collect();
            let removed = self
                .remove_when_allowed(&keys, &sessions, RemoveBound::Before(cutoff))
                .await?;
            expired += removed;
            if ids.len() < EXPIRY_BATCH {
                return Ok(expired);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_trip_without_exponents() {
        for value in [1_700_000_000.123_456_7, 0.1, 1e-7, 42.0] {
            let text = format_score(value);
            assert!(!text.contains('e'), "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), value);
        }
    }
}
