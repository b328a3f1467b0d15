//! Every Redis key livectx uses, in one place: the store's and the stream leases' (so the
//! lease module and the store share the lease-key contract without importing each other).
//!
//! The layout works unchanged on one Redis and on a Redis Cluster: every key one script
//! touches carries the same hash tag (`{…}`), so it lives in one slot.
//!
//! - A session lives in one of [`BUCKETS`] buckets (by a hash of its id). Its hash, the
//!   bucket's recency set, chunk counts and fence marks share the bucket's tag, so one session
//!   write is one script in one slot, and each bucket key receives 1/[`BUCKETS`] of the writes.
//! - The bucket tags are chosen so that bucket `b`'s slot lies in the `b`-th equal share of
//!   the 16384 slots: a cluster whose masters own equal contiguous ranges (what
//!   `redis-cli --cluster create` makes) gets the same number of buckets on each master.
//! - Identity index entries, products, webhook dedupe marks and each stream's lease keys have
//!   tags of their own and spread over the cluster.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

use crate::session::model::PersonKey;

/// Buckets sessions are spread over. Part of the key format: changing it changes
/// [`FORMAT_VERSION`]. It is also the most masters a cluster can usefully spread sessions over.
pub const BUCKETS: usize = 32;

/// The key format this build reads and writes (stored under [`Keys::format`]).
/// 1: one global recency set, chunk counts and products set (single Redis only).
/// 2: bucketed and hash-tagged (one Redis or a cluster).
pub const FORMAT_VERSION: u32 = 2;

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of the whole key).
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

/// The hash tag of each bucket, e.g. `{b7.40}`: the first `b<n>.<k>` whose slot falls in the
/// bucket's share of the slots.
static BUCKET_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let share = usize::from(SLOTS) / BUCKETS;
    (0..BUCKETS)
        .map(|bucket| {
            let range = bucket * share..(bucket + 1) * share;
            (0u32..)
                .map(|k| format!("{{b{bucket}.{k}}}"))
                .find(|tag| range.contains(&usize::from(slot(tag))))
                .unwrap_or_default()
        })
        .collect()
});

/// The bucket a session id belongs to (a cryptographic hash: ids that differ in one digit,
/// as sequential ids do, still land in unrelated buckets).
pub fn bucket_of(session_id: &str) -> usize {
    let digest = Sha256::digest(session_id.as_bytes());
    let head = u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    (head % BUCKETS as u64) as usize
}

/// Key names under the prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The keys of one bucket (one slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketKeys {
    pub recency: String,
    pub chunk_counts: String,
    pub chunk_total: String,
    /// Stream lease key → the highest lease acquisition number seen by this bucket.
    pub fences: String,
}

/// A key prefix must not contain braces: they would become the hash tag of every key and put
/// all of them in one slot (checked at start).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(['{', '}']) {
        return Err(format!(
            "the Redis key prefix {prefix:?} contains a brace; braces are reserved for hash tags"
        ));
    }
    Ok(())
}

impl Keys {
    /// Keys under `prefix` (see [`check_prefix`]).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key-format version marker.
    pub fn format(&self) -> String {
        format!("{}format", self.prefix)
    }

    /// The global recency set of key format 1 (its presence means old data).
    pub fn legacy_recency(&self) -> String {
        format!("{}recent", self.prefix)
    }

    fn tag(bucket: usize) -> &'static str {
        &BUCKET_TAGS[bucket % BUCKETS]
    }

    /// A session's hash: `d` the session JSON, `r` its revision (changes on every write), `n`
    /// its incarnation (changes when the session is created or starts over), `t` its last
    /// activity, `k` the identity index keys it is listed under (JSON).
    pub fn session(&self, id: &str) -> String {
        format!("{}{}:s:{id}", self.prefix, Self::tag(bucket_of(id)))
    }

    pub fn bucket(&self, bucket: usize) -> BucketKeys {
        let tag = Self::tag(bucket);
        let prefix = &self.prefix;
        BucketKeys {
            recency: format!("{prefix}{tag}:recent"),
            chunk_counts: format!("{prefix}{tag}:chunks"),
            chunk_total: format!("{prefix}{tag}:chunks:total"),
            fences: format!("{prefix}{tag}:fences"),
        }
    }

    pub fn bucket_of_session(&self, id: &str) -> BucketKeys {
        self.bucket(bucket_of(id))
    }

    /// Same scoping as the memory store: `<product>\x1f<person key>` or `<person key>`.
    pub fn person(&self, product_id: Option<&str>, key: &PersonKey) -> String {
        match product_id {
            Some(product) => format!("{}i:{{{product}\u{1f}{}}}", self.prefix, key.index_key()),
            None => format!("{}i:{{{}}}", self.prefix, key.index_key()),
        }
    }

    /// Set once a product has been stored (the knowledge-id check).
    pub fn product(&self, product_id: &str) -> String {
        format!("{}p:{{{product_id}}}", self.prefix)
    }

    /// A webhook body seen within the dedupe window.
    pub fn delivery(&self, body_hash: &[u8; 32]) -> String {
        format!("{}d:{{{}}}", self.prefix, hex::encode(body_hash))
    }

    /// The writer lease (one server only): the id of the replica that alone writes sessions.
    pub fn writer_lease(&self) -> String {
        format!("{}writer", self.prefix)
    }

    /// Set by a write the writer lease refused, so its holder steps down.
    pub fn writer_wanted(&self) -> String {
        format!("{}writer:wanted", self.prefix)
    }

    /// Replica id → when it last wrote a session (Redis time, ms): who else writes lately.
    pub fn writers(&self) -> String {
        format!("{}writers", self.prefix)
    }

    /// The keys of one stream's lease (`id` names the stream: readable, free of secrets).
    pub fn lease(&self, id: &str) -> LeaseKeys {
        LeaseKeys::of_lease(format!("{}lease:{{{id}}}", self.prefix))
    }
}

/// The keys of one stream's lease, all in one slot.
///
/// - `lease`: the fencing token of the replica that consumes the stream now; PX = lease TTL.
/// - `last_holder`: the last token that took the lease (no TTL), so a lease that vanished can
///   be taken back by the replica that held it, and only by it, while nobody else took it.
/// - `counter`: numbers acquisitions; a token starts with its number, and the store refuses
///   writes whose number is below the highest its bucket has seen.
/// - `progress`: when the holder last saw an event, so a successor knows where its gap starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKeys {
    pub lease: String,
    pub last_holder: String,
    pub counter: String,
    pub progress: String,
}

impl LeaseKeys {
    /// The keys that belong to the lease key `lease` (a [`crate::session::store::Fence`]
    /// names its lease by this key).
    pub fn of_lease(lease: String) -> Self {
        Self {
            last_holder: format!("{lease}:holder"),
            counter: format!("{lease}:seq"),
            progress: format!("{lease}:progress"),
            lease,
        }
    }
}

/// The acquisition number a fencing token starts with (`<number>:<replica>:<nonce>`).
pub fn fence_number(token: &str) -> Option<u64> {
    token.split(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // Values from the Redis Cluster specification's examples (CLUSTER KEYSLOT).
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    #[test]
    fn buckets_spread_evenly_over_the_slots() {
        let share = usize::from(SLOTS) / BUCKETS;
        for bucket in 0..BUCKETS {
            let keys = Keys::new("p:").bucket(bucket);
            let slot = usize::from(slot(&keys.recency));
            assert_eq!(slot / share, bucket, "{keys:?}");
            for key in [&keys.chunk_counts, &keys.chunk_total, &keys.fences] {
                assert_eq!(usize::from(super::slot(key)), slot);
            }
        }
    }

    #[test]
    fn a_session_shares_its_bucket_slot() {
        let keys = Keys::new("livectx:");
        let mut used = std::collections::HashMap::new();
        for i in 0..2000 {
            let id = format!("session-{i}");
            let bucket = keys.bucket_of_session(&id);
            assert_eq!(slot(&keys.session(&id)), slot(&bucket.recency));
            *used.entry(bucket.recency).or_insert(0usize) += 1;
        }
        assert_eq!(used.len(), BUCKETS, "ids spread over every bucket");
        // 2000 ids, 62.5 a bucket on average: none far off.
        assert!(used.values().all(|&n| (35..=95).contains(&n)), "{used:?}");
    }

    #[test]
    fn lease_keys_share_a_slot_and_index_keys_match_the_memory_store_scoping() {
        let keys = Keys::new("p:");
        let lease = keys.lease("acme:0123");
        for key in [&lease.last_holder, &lease.counter, &lease.progress] {
            assert_eq!(slot(key), slot(&lease.lease));
        }
        let email = PersonKey::email("A@X.com").unwrap();
        assert_eq!(keys.person(None, &email), "p:i:{email:a@x.com}");
        assert_eq!(
            keys.person(Some("acme"), &email),
            "p:i:{acme\u{1f}email:a@x.com}"
        );
        assert!(check_prefix("bad{prefix").is_err());
        assert!(check_prefix("livectx:").is_ok());
        assert_eq!(fence_number("17:host:ab12"), Some(17));
        assert_eq!(fence_number("garbage"), None);
    }
}
