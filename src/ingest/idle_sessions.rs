//! Sessions for Segment-spec events that carry no session id: the person's events are cut
//! into sessions by a 30-minute idle rule (the rule Segment's and Amplitude's own session
//! definitions use).
//!
//! An event joins the person's current session when its time is within 30 minutes of that
//! session's span (after its last event, or before its first, for late deliveries); otherwise
//! it starts a new session. The session id is derived, never the person's id itself:
//! `seg_<16 hex of SHA-256(product, person)>_<start, Unix ms>`, so it reveals nothing and is
//! stable for the session's life.
//!
//! State is bounded: in memory, at most [`MAX_MEMORY_PEOPLE`] people (the least recently seen
//! is forgotten: its next event starts a new session); in Redis, one hash per person under
//! `<LIVECTX_REDIS_PREFIX>ingest:seg:`, expiring an hour after its last event, so every
//! replica cuts the same sessions.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use crate::session::redis::RedisConnection;
use async_trait::async_trait;
use lru::LruCache;
use redis::Script;
use sha2::{Digest, Sha256};

use crate::session::store::{Corrupt, StoreError, Unavailable};

/// Idle time that ends a derived session.
pub const IDLE_GAP: Duration = Duration::from_secs(30 * 60);

/// People the in-memory cutter remembers at most (~120 bytes each).
pub const MAX_MEMORY_PEOPLE: usize = 100_000;

/// The person's span: where their current session started and its last event.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    start: f64,
    last: f64,
}

fn person_hash(product_id: &str, person: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [product_id, person] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

fn session_id(hash: &[u8; 32], start: f64) -> String {
    format!(
        "seg_{}_{}",
        hex::encode(&hash[..8]),
        (start * 1000.0).round() as i64
    )
}

/// Cuts sessionless events into sessions.
#[async_trait]
pub trait IdleSessions: Send + Sync + 'static {
    /// The session id of `person`'s event at `timestamp` (Unix seconds).
    async fn session_for(
        &self,
        product_id: &str,
        person: &str,
        timestamp: f64,
    ) -> Result<String, StoreError>;
}

/// Decide with a person's span: `Ok(updated span)` to join it, `Err(new span)` to start anew.
fn place(span: Option<Span>, ts: f64, idle: f64) -> Result<Span, Span> {
    match span {
        Some(span) if ts <= span.last + idle && ts >= span.start - idle => Ok(Span {
            start: span.start.min(ts),
            last: span.last.max(ts),
        }),
        _ => Err(Span {
            start: ts,
            last: ts,
        }),
    }
}

/// The rule in this process's memory (one replica, or the memory backend).
pub struct MemoryIdleSessions {
    /// Per person: the span, and the start the session id was made from.
    people: Mutex<LruCache<[u8; 32], (Span, f64)>>,
}

impl Default for MemoryIdleSessions {
    fn default() -> Self {
        Self::with_capacity(MAX_MEMORY_PEOPLE)
    }
}

impl MemoryIdleSessions {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            people: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }
}

#[async_trait]
impl IdleSessions for MemoryIdleSessions {
    async fn session_for(
        &self,
        product_id: &str,
        person: &str,
        timestamp: f64,
    ) -> Result<String, StoreError> {
        let hash = person_hash(product_id, person);
        let mut people = crate::sync::lock(&self.people);
        let known = people.get(&hash).copied();
        let (span, id_start) = match place(known.map(|(s, _)| s), timestamp, IDLE_GAP.as_secs_f64())
        {
            Ok(span) => (span, known.map_or(span.start, |(_, id)| id)),
            Err(fresh) => (fresh, fresh.start),
        };
        people.put(hash, (span, id_start));
        Ok(session_id(&hash, id_start))
    }
}

/// The same rule, atomically in Redis (one script call per event).
pub struct RedisIdleSessions {
    connection: RedisConnection,
    prefix: String,
    script: Script,
}

/// KEYS[1] the person's hash; ARGV: event time (ms), idle gap (ms), key lifetime (ms).
/// Returns the start (ms) the session id is made from.
const PLACE_SCRIPT: &str = r"
local ts = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'start', 'last', 'id')
local start, last, id = tonumber(v[1]), tonumber(v[2]), v[3]
if start and last and id and ts <= last + idle and ts >= start - idle then
  if ts < start then start = ts end
  if ts > last then last = ts end
else
  start, last, id = ts, ts, ARGV[1]
end
redis.call('HSET', KEYS[1], 'start', start, 'last', last, 'id', id)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return id
";

impl RedisIdleSessions {
    /// `prefix` is `LIVECTX_REDIS_PREFIX`; the state lives under `<prefix>ingest:seg:`.
    pub fn new(connection: RedisConnection, prefix: &str) -> Self {
        Self {
            connection,
            prefix: format!("{prefix}ingest:seg:"),
            script: Script::new(PLACE_SCRIPT),
        }
    }
}

#[async_trait]
impl IdleSessions for RedisIdleSessions {
    async fn session_for(
        &self,
        product_id: &str,
        person: &str,
        timestamp: f64,
    ) -> Result<String, StoreError> {
        let hash = person_hash(product_id, person);
        let idle_ms = IDLE_GAP.as_millis() as i64;
        let ts_ms = (timestamp * 1000.0).round() as i64;
        let mut connection = self.connection.clone();
        let start_ms: String = self
            .script
            .key(format!("{}{}", self.prefix, hex::encode(hash)))
            .arg(ts_ms)
            .arg(idle_ms)
            .arg(idle_ms * 2)
            .invoke_async(&mut connection)
            .await
            .map_err(|e| StoreError::Unavailable(Unavailable::Redis(e)))?;
        let start = start_ms.parse::<f64>().map_err(|source| {
            StoreError::Corrupt(Corrupt::Number {
                what: "idle-session start",
                raw: start_ms.clone(),
                source,
            })
        })?;
        Ok(session_id(&hash, start / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn thirty_idle_minutes_start_a_new_session() {
        let cut = MemoryIdleSessions::default();
        let t0 = 1_800_000_000.0;
        let first = cut.session_for("p", "anon-1", t0).await.unwrap();
        assert_eq!(
            cut.session_for("p", "anon-1", t0 + 60.0).await.unwrap(),
            first
        );
        // 29 minutes after the last event: still the same session.
        assert_eq!(
            cut.session_for("p", "anon-1", t0 + 60.0 + 29.0 * 60.0)
                .await
                .unwrap(),
            first
        );
        // A late event from before the first one joins it too.
        assert_eq!(
            cut.session_for("p", "anon-1", t0 - 30.0).await.unwrap(),
            first
        );
        let later = cut
            .session_for("p", "anon-1", t0 + 60.0 + 29.0 * 60.0 + 31.0 * 60.0)
            .await
            .unwrap();
        assert_ne!(later, first);
        assert!(
            first.starts_with("seg_") && !first.contains("anon"),
            "{first}"
        );
    }

    #[tokio::test]
    async fn people_and_products_never_share_a_session() {
        let cut = MemoryIdleSessions::default();
        let a = cut.session_for("p", "u1", 100.0).await.unwrap();
        let b = cut.session_for("p", "u2", 100.0).await.unwrap();
        let c = cut.session_for("q", "u1", 100.0).await.unwrap();
        assert!(a != b && a != c && b != c);
    }
}
