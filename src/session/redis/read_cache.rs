//! The replica-local read cache of [`super::RedisStore::session`]: the sessions read lately,
//! each with the revision it was read at.
//!
//! Every write of a session installs a new random revision (`r`) in the same script that
//! writes its JSON (`d`), so "the stored revision is the one I read" means "the stored session
//! is the one I hold". A read therefore asks Redis for `r` alone (one small `HGET`) and decodes
//! nothing when it matches; when it does not (another replica wrote, or this one), it reads `d`
//! and `r` together as before. Without tracking the check goes to Redis on every read, so a
//! write by any replica is visible in the next read: the cache saves the transfer and the
//! decoding, never the question. With tracking ([`super::tracking`]) an entry also carries the
//! stamp its read was sent under, and while that holds the question is not asked at all. The
//! cache hands out the same `Arc<Session>` while the session is unchanged, so the prepared
//! answers of [`crate::render::answer`] are reused.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::tracking::Stamp;
use crate::session::model::{Session, SessionId};

/// Sessions kept per replica (the least recently read beyond it are dropped).
pub const READ_CACHE_SESSIONS: usize = 4096;
const SHARDS: usize = 8;

/// A session as read, with the revision it was read at and, when the read was tracked, the
/// stamp taken before it (see [`super::tracking`]).
#[derive(Debug, Clone)]
pub struct Cached {
    /// Shared, so a cache hit copies no string.
    pub revision: Arc<str>,
    pub session: Arc<Session>,
    pub stamp: Option<Stamp>,
}

/// One shard: session id → what was read.
type Shard = Mutex<LruCache<SessionId, Cached>>;

/// See the module docs.
pub struct ReadCache {
    shards: Vec<Shard>,
}

impl Default for ReadCache {
    fn default() -> Self {
        let per_shard = std::num::NonZeroUsize::new(READ_CACHE_SESSIONS.div_ceil(SHARDS))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }
}

impl ReadCache {
    fn shard(&self, id: &SessionId) -> &Shard {
        &self.shards[crate::sync::shard_of(id.as_str().as_bytes(), SHARDS)]
    }

    /// The session last read, with the revision it was read at.
    pub fn get(&self, id: &SessionId) -> Option<Cached> {
        crate::sync::lock(self.shard(id)).get(id).cloned()
    }

    /// Remember a session read at `revision` (under `stamp`, if tracked).
    pub fn put(
        &self,
        id: SessionId,
        revision: Arc<str>,
        session: Arc<Session>,
        stamp: Option<Stamp>,
    ) {
        crate::sync::lock(self.shard(&id)).put(
            id,
            Cached {
                revision,
                session,
                stamp,
            },
        );
    }

    /// Forget a session (it is gone from Redis).
    pub fn remove(&self, id: &SessionId) {
        crate::sync::lock(self.shard(id)).pop(id);
    }
}
