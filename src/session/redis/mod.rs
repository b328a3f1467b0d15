//! The Redis store: replicas share sessions through one Redis (or Valkey).
//!
//! # Layout in Redis (all under a configurable prefix, `livectx:` by default)
//!
//! | key                  | type   | holds                                                         |
//! |----------------------|--------|---------------------------------------------------------------|
//! | `s:<session id>`     | hash   | `d`: the [`Session`] as JSON, `r`: its revision, `k`: its index keys; PX = idle TTL |
//! | `recent`             | zset   | session id → last write time (least-recently-active eviction, expiry, listing) |
//! | `chunks`, `chunks:total` | hash, string | chunk count per session and in total (for `/readyz`) |
//! | `i:[<product>\x1f]email:<e>` / `…user:<u>` | string | the person's newest session; PX = idle TTL |
//! | `products`           | set    | products ever stored (the knowledge-id check)                  |
//! | `d:<sha256 hex>`     | string | a webhook body seen within the dedupe window (SET NX PX)      |
//!
//! # Writes
//!
//! Every write is read, change, compare-and-set: the session is read, changed with exactly the
//! methods of [`crate::session::model`] the memory store uses (so both backends share every rule),
//! and committed by one Lua script that checks the revision read is still the stored one (else
//! the write starts over), checks the stream fence when there is one, and updates the session,
//! its recency, chunk counts, identity index and products together, evicting the least recently
//! active session beyond `max_sessions`. The revision is a random token rather than the
//! session's `version`, so a session evicted and re-created meanwhile can never pass for the one
//! that was read. A summary claim lives in the session itself, so the compare-and-set also makes
//! it cluster-wide: at most one summary per session is in flight across all replicas.
//!
//! # Reads
//!
//! One round trip each: `session` is one `HGET`, a person lookup one script (index, existence and
//! last activity together). Redis errors map to [`StoreError::Unavailable`] (connection, timeout,
//! loading, failover) or [`StoreError::Corrupt`] (what came back cannot be decoded).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

use crate::session::model::{
    ActionBatch, Gap, PersonKey, Session, SessionId, SummaryApplied, SummaryDraft, SummaryJob,
};
use crate::session::store::{
    Fence, GAP_LOOKBACK_SECS, SessionInfo, SessionPage, SessionStore, StoreConfig, StoreError,
    StoreStats, StoredBatch, decode_cursor, encode_cursor,
};

/// Key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "livectx:";

/// How long one Redis command may take. Larger than the client's 500 ms default, which a busy
/// server or a big session can exceed, yet short enough that an outage is noticed quickly.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Reconnection attempts per command. Few, so that during an outage callers fail fast (and
/// ingestion buffers) instead of waiting through a long backoff.
pub const CONNECT_RETRIES: usize = 1;

/// Compare-and-set attempts before a write gives up (only under extreme contention).
const MAX_CAS_ATTEMPTS: u32 = 32;

/// Ids expired per script call, so one call never blocks Redis for long.
const EXPIRY_BATCH: usize = 256;

/// Sessions read per pipelined round trip when marking a stream gap.
const GAP_READ_BATCH: usize = 200;

/// The connection settings livectx uses (see the constants above).
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(CONNECT_RETRIES)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// Parse a Redis URL (`redis://[:password@]host:port[/db]`, `rediss://` for TLS is not built in).
pub fn client(url: &str) -> Result<redis::Client, RedisError> {
    redis::Client::open(url)
}

/// A connection manager that connects on first use and reconnects by itself, so a replica can
/// start (and answer empty) while Redis is down.
pub fn lazy_connection(client: redis::Client) -> Result<ConnectionManager, RedisError> {
    ConnectionManager::new_lazy_with_config(client, manager_config())
}

/// Connect now (tests and tools): fails when Redis cannot be reached.
pub async fn connect(url: &str) -> Result<ConnectionManager, RedisError> {
    client(url)?
        .get_connection_manager_with_config(manager_config())
        .await
}

/// Map a Redis error to the store's two failure kinds: what may pass (connection, timeout,
/// loading after a restart, failover, memory full) is `Unavailable`; what will not (a reply
/// that cannot be decoded, a key of the wrong type, a script error) is `Corrupt`.
pub fn store_error(error: RedisError) -> StoreError {
    let permanent = match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => true,
        ErrorKind::Extension => error.code() == Some("WRONGTYPE"),
        _ => false,
    };
    if permanent {
        StoreError::Corrupt(format!("redis: {error}"))
    } else {
        StoreError::Unavailable(format!("redis: {error}"))
    }
}

/// Removes one session and every index entry that still points at it (eviction and expiry).
const REMOVE_SESSION_LUA: &str = r"
local function remove_session(prefix, recency, counts, total, id)
  local skey = prefix .. 's:' .. id
  local listed = redis.call('HGET', skey, 'k')
  if listed then
    local ok, index_keys = pcall(cjson.decode, listed)
    if ok and type(index_keys) == 'table' then
      for _, index_key in ipairs(index_keys) do
        if redis.call('GET', index_key) == id then redis.call('DEL', index_key) end
      end
    end
  end
  redis.call('DEL', skey)
  redis.call('ZREM', recency, id)
  local chunks = redis.call('HGET', counts, id)
  if chunks then
    redis.call('DECRBY', total, chunks)
    redis.call('HDEL', counts, id)
  end
end
";

/// The compare-and-set commit. Returns `{status, evicted}`: status 1 written, 0 the session
/// changed since it was read (retry), -1 the fence is stale.
///
/// KEYS: 1 session, 2 recency, 3 chunk counts, 4 chunk total, 5 products, 6 lease,
/// 7 lease's last holder, 8.. identity index keys to point at this session.
/// ARGV: 1 revision read ('' = the session did not exist), 2 new revision, 3 session JSON,
/// 4 TTL in ms ('' = keep the key's TTL), 5 last_seen, 6 session id, 7 chunk count,
/// 8 product ('' = none), 9 fence token ('' = none), 10 the session's index keys as JSON,
/// 11 max sessions, 12 key prefix.
const COMMIT_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], 'r')
if ARGV[1] == '' then
  if current then return {0, 0} end
elseif current ~= ARGV[1] then
  return {0, 0}
end
if ARGV[9] ~= '' then
  local holder = redis.call('GET', KEYS[6])
  if holder ~= ARGV[9] then
    -- No lease at all (Redis lost it, or it lapsed): the write may pass only if nobody else
    -- has held the lease since this fence was handed out.
    if holder then return {-1, 0} end
    local last = redis.call('GET', KEYS[7])
    if last and last ~= ARGV[9] then return {-1, 0} end
  end
end
redis.call('HSET', KEYS[1], 'd', ARGV[3], 'r', ARGV[2], 'k', ARGV[10])
if ARGV[4] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
local before = tonumber(redis.call('HGET', KEYS[3], ARGV[6]) or '0')
local after = tonumber(ARGV[7])
if before ~= after or ARGV[1] == '' then
  redis.call('HSET', KEYS[3], ARGV[6], after)
  redis.call('INCRBY', KEYS[4], after - before)
end
if ARGV[8] ~= '' then redis.call('SADD', KEYS[5], ARGV[8]) end
for i = 8, #KEYS do
  redis.call('SET', KEYS[i], ARGV[6], 'PX', ARGV[4])
end
local evicted = 0
local max = tonumber(ARGV[11])
if ARGV[1] == '' and max > 0 then
  while redis.call('ZCARD', KEYS[2]) > max do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 1)
    local victim = oldest[1]
    if victim == ARGV[6] then victim = oldest[2] end
    if not victim then break end
    remove_session(ARGV[12], KEYS[2], KEYS[3], KEYS[4], victim)
    evicted = evicted + 1
  end
end
return {1, evicted}
";

/// A person's newest session, if it still exists: `{id, last_seen}` or nil.
/// KEYS: 1 index key, 2 recency. ARGV: 1 prefix.
const RESOLVE_LUA: &str = r"
local id = redis.call('GET', KEYS[1])
if not id then return false end
if redis.call('EXISTS', ARGV[1] .. 's:' .. id) == 0 then return false end
local seen = redis.call('ZSCORE', KEYS[2], id)
if not seen then return false end
return {id, seen}
";

/// Remove up to ARGV[2] sessions last active before ARGV[1]; returns how many.
/// KEYS: 1 recency, 2 chunk counts, 3 chunk total. ARGV: 1 cutoff, 2 batch, 3 prefix.
const EXPIRE_LUA: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do remove_session(ARGV[3], KEYS[1], KEYS[2], KEYS[3], id) end
return #ids
";

/// Key names under the prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }
    fn recency(&self) -> String {
        format!("{}recent", self.prefix)
    }
    fn chunk_counts(&self) -> String {
        format!("{}chunks", self.prefix)
    }
    fn chunk_total(&self) -> String {
        format!("{}chunks:total", self.prefix)
    }
    fn products(&self) -> String {
        format!("{}products", self.prefix)
    }
    /// Same scoping as the memory store: `<product>\x1f<person key>` or `<person key>`.
    fn person(&self, product_id: Option<&str>, key: &PersonKey) -> String {
        match product_id {
            Some(product) => format!("{}i:{product}\u{1f}{}", self.prefix, key.index_key()),
            None => format!("{}i:{}", self.prefix, key.index_key()),
        }
    }
    fn delivery(&self, body_hash: &[u8; 32]) -> String {
        format!("{}d:{}", self.prefix, hex::encode(body_hash))
    }
    /// Every index key a session is listed under (global and product-scoped).
    fn index_keys_of(&self, session: &Session) -> Vec<String> {
        self.index_keys_for(session, &session.person_keys)
    }

    /// The index keys of `people` that `session` may be listed under (global and
    /// product-scoped; identities beyond the session's cap are never indexed).
    fn index_keys_for(&self, session: &Session, people: &[PersonKey]) -> Vec<String> {
        let mut keys = Vec::with_capacity(people.len() * 2);
        for key in people.iter().filter(|k| session.person_keys.contains(k)) {
            keys.push(self.person(None, key));
            if let Some(product) = session.product_id.as_deref() {
                keys.push(self.person(Some(product), key));
            }
        }
        keys
    }
}

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
    Written { evicted: usize },
    Conflict,
    Fenced,
}

/// The Redis [`SessionStore`].
pub struct RedisStore {
    connection: ConnectionManager,
    keys: Keys,
    config: StoreConfig,
    commit_script: Script,
    resolve_script: Script,
    expire_script: Script,
}

impl RedisStore {
    /// A store on `connection` with every key under `prefix` (several deployments, or tests,
    /// can share one Redis with different prefixes).
    pub fn new(
        connection: ConnectionManager,
        prefix: impl Into<String>,
        config: StoreConfig,
    ) -> Self {
        Self {
            connection,
            keys: Keys {
                prefix: prefix.into(),
            },
            config,
            commit_script: Script::new(&format!("{REMOVE_SESSION_LUA}{COMMIT_LUA}")),
            resolve_script: Script::new(RESOLVE_LUA),
            expire_script: Script::new(&format!("{REMOVE_SESSION_LUA}{EXPIRE_LUA}")),
        }
    }

    /// The stored session JSON and its revision.
    async fn load(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<String>), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("HMGET")
            .arg(key)
            .arg("d")
            .arg("r")
            .query_async(&mut connection)
            .await
            .map_err(store_error)
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
        let ttl = self.config.ttl_secs();
        let key = self.keys.session(id.as_str());
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let (blob, revision) = self.load(&key).await?;
            let stored = match (&blob, &revision) {
                (Some(blob), Some(_)) => Some(decode_session(blob)?),
                _ => None,
            };
            let (mut session, created) = match (mode, stored) {
                (Mode::Upsert { .. }, None) => (Session::new(id.clone(), now), true),
                // An expired session is not resurrected: it starts over.
                (Mode::Upsert { .. }, Some(s)) if s.is_expired(now, ttl) => {
                    (Session::new(id.clone(), now), false)
                }
                (Mode::Upsert { .. }, Some(s)) => (s, false),
                (Mode::Existing { .. }, None) => return Ok(None),
                (Mode::Existing { expiry_now }, Some(s)) if s.is_expired(expiry_now, ttl) => {
                    return Ok(None);
                }
                (Mode::Existing { .. }, Some(s)) => (s, false),
            };
            let before = session.clone();
            let result = change(&mut session);
            if matches!(mode, Mode::Existing { .. }) && session == before {
                // Nothing changed (a duplicate gap, a claim refused): no write needed.
                return Ok(Some(Committed {
                    result,
                    created,
                    evicted: 0,
                }));
            }
            if session.version <= before.version {
                session.version = before.version + 1;
            }
            let expected = if created { None } else { revision.as_deref() };
            match self.commit(&key, &session, expected, mode, now).await? {
                CommitStatus::Written { evicted } => {
                    return Ok(Some(Committed {
                        result,
                        created,
                        evicted,
                    }));
                }
                CommitStatus::Fenced => return Err(StoreError::Fenced),
                CommitStatus::Conflict => conflict_pause(attempt).await,
            }
        }
        Err(StoreError::Unavailable(format!(
            "session {id} kept changing under this write ({MAX_CAS_ATTEMPTS} attempts)"
        )))
    }

    async fn commit(
        &self,
        key: &str,
        session: &Session,
        expected_revision: Option<&str>,
        mode: Mode<'_>,
        now: f64,
    ) -> Result<CommitStatus, StoreError> {
        let blob = serde_json::to_vec(session)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode session: {e}")))?;
        let index_keys = self.keys.index_keys_of(session);
        let index_json = serde_json::to_string(&index_keys)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode index keys: {e}")))?;
        let new_revision = format!("{:016x}", rand::random::<u64>());
        let mut invocation = self.commit_script.prepare_invoke();
        invocation
            .key(key)
            .key(self.keys.recency())
            .key(self.keys.chunk_counts())
            .key(self.keys.chunk_total())
            .key(self.keys.products());
        let (fence_token, ttl_ms) = match mode {
            Mode::Upsert { fence, point } => {
                match fence {
                    Some(fence) => {
                        invocation.key(&fence.lease_key).key(
                            crate::cluster::redis_lease::last_holder_key(&fence.lease_key),
                        );
                    }
                    None => {
                        invocation.key(key).key(key);
                    }
                }
                for index_key in self.keys.index_keys_for(session, point) {
                    invocation.key(index_key);
                }
                let remaining = session.last_seen + self.config.ttl_secs() - now;
                let ttl_ms = (remaining * 1000.0).ceil().max(1.0) as u64;
                (fence.map_or("", |f| f.token.as_str()), ttl_ms.to_string())
            }
            Mode::Existing { .. } => {
                invocation.key(key).key(key);
                ("", String::new())
            }
        };
        invocation
            .arg(expected_revision.unwrap_or(""))
            .arg(new_revision)
            .arg(blob)
            .arg(ttl_ms)
            .arg(format_score(session.last_seen))
            .arg(session.id.as_str())
            .arg(session.chunks.len())
            .arg(session.product_id.as_deref().unwrap_or(""))
            .arg(fence_token)
            .arg(index_json)
            .arg(self.config.max_sessions.max(1))
            .arg(&self.keys.prefix);
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        match reply.as_slice() {
            [1, evicted] => Ok(CommitStatus::Written {
                evicted: usize::try_from(*evicted).unwrap_or(0),
            }),
            [0, _] => Ok(CommitStatus::Conflict),
            [-1, _] => Ok(CommitStatus::Fenced),
            other => Err(StoreError::Corrupt(format!(
                "unexpected reply from the commit script: {other:?}"
            ))),
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
            .ok_or_else(|| StoreError::Corrupt("upsert found no session".into()))
    }

    /// Sessions with `last_seen` in `[min, max]` (max exclusive when `max_open`), newest first,
    /// at most `count`, with their scores.
    async fn recent_ids(
        &self,
        max: f64,
        max_open: bool,
        min: f64,
        count: usize,
    ) -> Result<Vec<(String, f64)>, StoreError> {
        let max_arg = if max.is_infinite() {
            "+inf".to_string()
        } else if max_open {
            format!("({}", format_score(max))
        } else {
            format_score(max)
        };
        let mut connection = self.connection.clone();
        let raw: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.recency())
            .arg(max_arg)
            .arg(format_score(min))
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(count)
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        Ok(raw)
    }

    /// Every session id whose last activity equals `score`.
    async fn ids_at(&self, score: f64) -> Result<Vec<String>, StoreError> {
        let exact = format_score(score);
        let mut connection = self.connection.clone();
        redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.recency())
            .arg(&exact)
            .arg(&exact)
            .query_async(&mut connection)
            .await
            .map_err(store_error)
    }

    /// Several sessions in one round trip (missing ones are `None`).
    async fn sessions_by_id(&self, ids: &[String]) -> Result<Vec<Option<Session>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET").arg(self.keys.session(id)).arg("d");
        }
        let mut connection = self.connection.clone();
        let blobs: Vec<Option<Vec<u8>>> = pipe
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        blobs
            .into_iter()
            .map(|blob| blob.as_deref().map(decode_session).transpose())
            .collect()
    }
}

/// Decode a stored session.
fn decode_session(blob: &[u8]) -> Result<Session, StoreError> {
    serde_json::from_slice(blob)
        .map_err(|e| StoreError::Corrupt(format!("stored session is not valid: {e}")))
}

/// A score as Redis reads it back to the same `f64` (shortest round-trip form, no exponent).
fn format_score(value: f64) -> String {
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
            if session.product_id.is_none() {
                session.product_id = product_id.map(str::to_string);
            }
            session.last_seen = now;
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
            if session.product_id.is_none() {
                session.product_id = product_id.map(str::to_string);
            }
            session.record_tour(flow_id, reason, now, now);
        })
        .await?;
        Ok(())
    }

    async fn record_gap(&self, product_id: &str, gap: Gap, now: f64) -> Result<usize, StoreError> {
        let since = gap.from - GAP_LOOKBACK_SECS;
        let ttl = self.config.ttl_secs();
        let mut connection = self.connection.clone();
        let candidates: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.recency())
            .arg(format_score(since))
            .arg("+inf")
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let applies = |s: &Session| {
            !s.is_expired(now, ttl)
                && s.last_seen >= since
                && s.product_id.as_deref().is_none_or(|p| p == product_id)
        };
        let mut marked = 0;
        // Read in pipelined batches to find the sessions the gap concerns; mark those through
        // the ordinary compare-and-set update (gaps are rare: one extra read each is fine).
        for ids in candidates.chunks(GAP_READ_BATCH) {
            let mut pipe = redis::pipe();
            for id in ids {
                pipe.cmd("HGET").arg(self.keys.session(id)).arg("d");
            }
            let blobs: Vec<Option<Vec<u8>>> = pipe
                .query_async(&mut connection)
                .await
                .map_err(store_error)?;
            for (raw_id, blob) in ids.iter().zip(blobs) {
                let Some(blob) = blob else { continue };
                if !applies(&decode_session(&blob)?) {
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
        let mut connection = self.connection.clone();
        let blob: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.keys.session(id.as_str()))
            .arg("d")
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let Some(blob) = blob else {
            return Ok(None);
        };
        let session = decode_session(&blob)?;
        Ok((!session.is_expired(now, self.config.ttl_secs())).then(|| Arc::new(session)))
    }

    async fn resolve_person(
        &self,
        key: &PersonKey,
        product_id: Option<&str>,
        now: f64,
    ) -> Result<Option<SessionId>, StoreError> {
        let mut connection = self.connection.clone();
        let found: Option<(String, f64)> = self
            .resolve_script
            .key(self.keys.person(product_id, key))
            .key(self.keys.recency())
            .arg(&self.keys.prefix)
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        let Some((id, last_seen)) = found else {
            return Ok(None);
        };
        if last_seen + self.config.ttl_secs() < now {
            return Ok(None);
        }
        SessionId::parse(&id)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("identity index holds a bad id: {e}")))
    }

    async fn has_product(&self, product_id: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("SISMEMBER")
            .arg(self.keys.products())
            .arg(product_id)
            .query_async(&mut connection)
            .await
            .map_err(store_error)
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
        let after = cursor.and_then(decode_cursor);
        let limit = limit.max(1);
        let batch = (limit * 2).max(64);
        let ttl = self.config.ttl_secs();
        let mut sessions = Vec::with_capacity(limit);
        let mut next_cursor = None;
        let mut upper = after.as_ref().map_or(f64::INFINITY, |(ts, _)| *ts);
        let mut upper_open = false;
        'pages: loop {
            let mut page = self.recent_ids(upper, upper_open, since, batch).await?;
            let Some(&(_, lowest)) = page.last() else {
                break;
            };
            let exhausted = page.len() < batch;
            if !exhausted {
                // The page may have cut a group of equal times: take that group whole, so the
                // order inside it (by id) is the same as the memory store's.
                page.retain(|(_, score)| *score != lowest);
                page.extend(
                    self.ids_at(lowest)
                        .await?
                        .into_iter()
                        .map(|id| (id, lowest)),
                );
            }
            page.retain(|(id, score)| match &after {
                Some((ts, after_id)) => {
                    *score < *ts || (*score == *ts && id.as_str() > after_id.as_str())
                }
                None => true,
            });
            page.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let ids: Vec<String> = page.iter().map(|(id, _)| id.clone()).collect();
            let found = self.sessions_by_id(&ids).await?;
            for ((id, score), session) in page.iter().zip(found) {
                if sessions.len() == limit {
                    break 'pages;
                }
                if let Some(session) = session.filter(|s| !s.is_expired(now, ttl)) {
                    sessions.push(SessionInfo::of(&session));
                    next_cursor = Some(encode_cursor(*score, id));
                }
            }
            if exhausted {
                break;
            }
            upper = lowest;
            upper_open = true;
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
        let mut expired = 0;
        loop {
            let mut connection = self.connection.clone();
            let removed: usize = self
                .expire_script
                .key(self.keys.recency())
                .key(self.keys.chunk_counts())
                .key(self.keys.chunk_total())
                .arg(format_score(cutoff))
                .arg(EXPIRY_BATCH)
                .arg(&self.keys.prefix)
                .invoke_async(&mut connection)
                .await
                .map_err(store_error)?;
            expired += removed;
            if removed < EXPIRY_BATCH {
                return Ok(expired);
            }
        }
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
        let mut connection = self.connection.clone();
        let (sessions, chunks): (u64, Option<i64>) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.keys.recency())
            .cmd("GET")
            .arg(self.keys.chunk_total())
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        Ok(StoreStats {
            sessions,
            chunks: u64::try_from(chunks.unwrap_or(0)).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_may_pass_are_unavailable() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(matches!(store_error(io), StoreError::Unavailable(_)));
        let parse = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(matches!(store_error(parse), StoreError::Corrupt(_)));
    }

    #[test]
    fn scores_round_trip_without_exponents() {
        for value in [1_700_000_000.123_456_7, 0.1, 1e-7, 42.0] {
            let text = format_score(value);
            assert!(!text.contains('e'), "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), value);
        }
    }

    #[test]
    fn index_keys_match_the_memory_store_scoping() {
        let keys = Keys {
            prefix: "p:".into(),
        };
        let email = PersonKey::email("A@X.com").unwrap();
        assert_eq!(keys.person(None, &email), "p:i:email:a@x.com");
        assert_eq!(
            keys.person(Some("acme"), &email),
            "p:i:acme\u{1f}email:a@x.com"
        );
    }
}
