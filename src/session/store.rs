//! The storage contract every backend implements.
//!
//! Callers (ingestion, the summarizer, the APIs) speak only to [`SessionStore`]; the in-memory
//! store is the default, the Redis store lets replicas share sessions. Both change sessions only
//! through the rules in [`crate::session::model`], so they behave the same and share one test suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::session::model::{
    ActionBatch, AppendOutcome, Gap, PersonKey, Session, SessionId, SessionLimits, SummaryApplied,
    SummaryDraft, SummaryJob,
};

/// Failures of a storage backend. Input problems never reach this far: the store only ever
/// receives validated values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached right now (Redis down, connection dropped): worth
    /// retrying, and what the outage buffer absorbs.
    #[error("storage backend unavailable: {0}")]
    Unavailable(#[source] Unavailable),
    /// What the backend returned could not be decoded: retrying will not help.
    #[error("stored data could not be decoded: {0}")]
    Corrupt(#[source] Corrupt),
    /// A write carried a stream-lease fence this replica no longer holds.
    #[error("write refused: this replica no longer holds the stream lease")]
    Fenced,
}

/// Why a backend cannot serve right now.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The Redis client's error (connection refused, timeout, failover in progress).
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// Other writers kept changing the session; this write gave up.
    #[error("session {id} kept changing under this write ({attempts} attempts)")]
    Contended { id: SessionId, attempts: u32 },
    /// Another replica held the writer lease and neither stepped down nor let it expire.
    #[error("another replica held the Redis writer lease for {waited:?} without stepping down")]
    WriterLeaseHeld { waited: std::time::Duration },
    /// Earlier writes still wait for the backend, so this one queues behind them.
    #[error("writes are waiting for the storage backend")]
    Backlogged,
    /// The outage buffer is full: the write is dropped (and counted).
    #[error("{cause}, and the outage buffer is full ({bound} writes)")]
    BufferFull {
        #[source]
        cause: Box<Unavailable>,
        bound: usize,
    },
    /// Any other cause: a Redis URL the client cannot use, test doubles, embedders' stores.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Why stored data could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Corrupt {
    /// Redis answered with something of the wrong shape (a parse error, a key of the wrong
    /// type, a script error).
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// A value that does not encode or decode as JSON.
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// An index names a session id that is not valid.
    #[error("identity index holds a bad id: {0}")]
    BadId(#[source] crate::session::model::InvalidId),
    /// A stored number that does not parse.
    #[error("{what} {raw:?}: {source}")]
    Number {
        what: &'static str,
        raw: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    /// A stream fence token without its number.
    #[error("a stream fence is not numbered: {0}")]
    UnnumberedFence(String),
    /// A script answered what it never answers.
    #[error("unexpected reply from the {script} script: {reply}")]
    UnexpectedReply { script: &'static str, reply: String },
    /// The backend broke one of its own invariants.
    #[error("{0}")]
    Invariant(&'static str),
}

/// Bounds shared by all backends.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Sessions kept before the least recently active is evicted.
    pub max_sessions: usize,
    /// Idle time after which a session expires.
    pub session_ttl: Duration,
    pub limits: SessionLimits,
}

impl StoreConfig {
    pub fn ttl_secs(&self) -> f64 {
        self.session_ttl.as_secs_f64()
    }
}

/// Permission to write on behalf of a stream lease (Redis leadership). A replica that lost its
/// lease while paused holds a stale fence, and the backend refuses its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease_key: String,
    pub token: String,
}

/// What ingestion learns from storing a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBatch {
    pub outcome: AppendOutcome,
    /// Sessions evicted to stay under `max_sessions`.
    pub evicted: usize,
}

/// One line of the active-sessions listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub product_id: Option<String>,
    pub email: Option<String>,
    pub user_id: Option<String>,
    pub current_page: Option<String>,
    pub current_url: Option<String>,
    /// Server clock, Unix seconds.
    pub last_seen: f64,
}

impl SessionInfo {
    pub fn of(session: &Session) -> Self {
        Self {
            session_id: session.id().to_string(),
            product_id: session.product_id().clone(),
            email: session.email().clone(),
            user_id: session.user_id().clone(),
            current_page: session.current_page().as_ref().map(|p| p.label.clone()),
            current_url: session.current_page().as_ref().map(|p| p.url.clone()),
            last_seen: session.last_seen(),
        }
    }
}

/// A page of [`SessionInfo`], newest activity first, with an opaque cursor for the next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionPage {
    pub sessions: Vec<SessionInfo>,
    pub next_cursor: Option<String>,
}

/// Counts for gauges and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StoreStats {
    pub sessions: u64,
    pub chunks: u64,
}

/// What `/readyz` shows about a backend beyond its counts (a cluster's own state).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendHealth {
    /// `false` makes the replica report not ready.
    pub ok: bool,
    pub details: serde_json::Value,
}

/// The storage contract.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Short name for logs and `/readyz` (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Store a batch as a new chunk of its session (creating the session), index its people,
    /// evict the least recently active sessions beyond the bound.
    async fn append_actions(
        &self,
        batch: ActionBatch,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<StoredBatch, StoreError>;

    /// Apply a connector `summary` payload (see [`Session::apply_connector_summary`]).
    async fn apply_connector_summary(
        &self,
        session_id: &SessionId,
        product_id: Option<&str>,
        text: &str,
        replaces: usize,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

    /// Record a product-tour offer on a session.
    async fn record_tour(
        &self,
        session_id: &SessionId,
        product_id: Option<&str>,
        flow_id: &str,
        reason: Option<&str>,
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

    /// Mark sessions of a product that were active shortly before `gap` as possibly missing
    /// activity in it. Returns how many were marked.
    async fn record_gap(&self, product_id: &str, gap: Gap, now: f64) -> Result<usize, StoreError>;

    /// A snapshot of one session, `None` if unknown or expired.
    async fn session(&self, id: &SessionId, now: f64) -> Result<Option<Arc<Session>>, StoreError>;

    /// The newest session of a person, optionally within one product.
    async fn resolve_person(
        &self,
        key: &PersonKey,
        product_id: Option<&str>,
        now: f64,
    ) -> Result<Option<SessionId>, StoreError>;

    /// Has any payload of this product been stored?
    async fn has_product(&self, product_id: &str) -> Result<bool, StoreError>;

    /// Claim a summary job when the session has at least `threshold` raw actions and no job in
    /// flight (cluster-wide for shared backends). The claim lapses after `lease`.
    async fn claim_summary(
        &self,
        id: &SessionId,
        threshold: usize,
        now: f64,
        lease: Duration,
    ) -> Result<Option<SummaryJob>, StoreError>;

    /// Store the result of a claimed job (see [`Session::finish_summary`]).
    async fn finish_summary(
        &self,
        job: &SummaryJob,
        draft: SummaryDraft,
        now: f64,
    ) -> Result<SummaryApplied, StoreError>;

    /// Give back a claim after a failure; nothing is removed.
    async fn release_summary(&self, job: &SummaryJob) -> Result<(), StoreError>;

    /// Sessions active since `since`, newest first.
    async fn active_sessions(
        &self,
        since: f64,
        cursor: Option<&str>,
        limit: usize,
        now: f64,
    ) -> Result<SessionPage, StoreError>;

    /// Drop sessions idle past the TTL. Returns how many expired.
    async fn expire_idle(&self, now: f64) -> Result<usize, StoreError>;

    /// Record a webhook body hash; `false` when it was already seen within `window`.
    async fn first_delivery(
        &self,
        body_hash: [u8; 32],
        now: f64,
        window: Duration,
    ) -> Result<bool, StoreError>;

    /// Forget a body hash recorded by [`SessionStore::first_delivery`] (its delivery failed, so
    /// the connector's retry must be accepted).
    async fn forget_delivery(&self, body_hash: [u8; 32]) -> Result<(), StoreError>;

    /// Counts for metrics.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// The backend's own health, when it has more to say than whether it answers (a Redis
    /// Cluster's state); `None` by default.
    async fn health(&self) -> Result<Option<BackendHealth>, StoreError> {
        Ok(None)
    }
}

/// Cursor format shared by backends: `<last_seen>:<session id>` of the last item returned.
///
/// The time is written in full (Rust prints the shortest text that parses back to the same
/// `f64`): a rounded time would make the next page repeat or skip sessions seen within the
/// rounding step.
pub fn encode_cursor(last_seen: f64, id: &str) -> String {
    format!("{last_seen}:{id}")
}

/// Parse a cursor made by [`encode_cursor`]; `None` for anything else.
pub fn decode_cursor(cursor: &str) -> Option<(f64, String)> {
    let (ts, id) = cursor.split_once(':')?;
    let ts: f64 = ts.parse().ok()?;
    ts.is_finite().then(|| (ts, id.to_string()))
}

/// How long before a gap a session must have been active to be marked by it.
pub const GAP_LOOKBACK_SECS: f64 = 30.0 * 60.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_keep_the_exact_time() {
        for last_seen in [1_795_000_000.123_456_7, 1_795_000_000.0, 0.1 + 0.2] {
            let cursor = encode_cursor(last_seen, "s:1");
            assert_eq!(decode_cursor(&cursor), Some((last_seen, "s:1".to_string())));
        }
        assert_eq!(decode_cursor("garbage"), None);
        assert_eq!(decode_cursor("inf:s1"), None);
    }

    #[test]
    fn errors_keep_their_sources_and_their_messages() {
        use std::error::Error as _;
        let full = StoreError::Unavailable(Unavailable::BufferFull {
            cause: Box::new(Unavailable::Backlogged),
            bound: 3,
        });
        assert_eq!(
            full.to_string(),
            "storage backend unavailable: writes are waiting for the storage backend, and the outage buffer is full (3 writes)"
        );
        let source = full.source().expect("the reason");
        let cause = source.source().expect("the cause behind the full buffer");
        assert_eq!(
            cause.to_string(),
            "writes are waiting for the storage backend"
        );

        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let corrupt = StoreError::Corrupt(Corrupt::Json {
            what: "stored session is not valid",
            source: json,
        });
        assert!(corrupt.to_string().starts_with(
            "stored data could not be decoded: stored session is not valid: expected value"
        ));
        let decoded = corrupt.source().and_then(|s| s.source());
        assert!(decoded.is_some_and(|e| e.is::<serde_json::Error>()));
    }
}
