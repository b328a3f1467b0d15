//! The store's Lua scripts (in `lua/`, loaded with `include_str!`) and their typed arguments.
//!
//! Every key a script touches is passed in `KEYS` (Redis Cluster routes a script by its keys
//! and refuses one that names keys of several slots); arguments are built from a struct, so
//! their order is written once.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use super::keys::BucketKeys;

/// The writer lease's check, a Lua function that every script changing a session starts with.
const WRITER_CHECK: &str = include_str!("lua/writer_check.lua");

/// The compare-and-set commit of one session write.
pub static COMMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&[WRITER_CHECK, include_str!("lua/commit.lua")].concat()));

/// Removes sessions of one bucket (eviction, expiry).
pub static REMOVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&[WRITER_CHECK, include_str!("lua/remove.lua")].concat()));

/// Takes, renews and releases the writer lease.
pub static WRITER_LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/writer_lease.lua")));

/// The writer lease's keys and this replica's id, which every session write names on one
/// server (see [`super::writer_lease`]).
#[derive(Debug, Clone)]
pub struct WriterKeys {
    pub lease: String,
    pub wanted: String,
    pub writers: String,
    /// This replica's id in the lease.
    pub me: String,
}

impl WriterKeys {
    /// Name the lease's keys and this replica's id in `invocation` (after the script's own
    /// fixed keys), or say that there is no lease (a cluster).
    fn add_to(keys: Option<&Self>, invocation: &mut ScriptInvocation<'static>) {
        match keys {
            Some(keys) => {
                invocation
                    .key(&keys.lease)
                    .key(&keys.wanted)
                    .key(&keys.writers)
                    .arg(&keys.me)
                    .arg(super::writer_lease::LEASE_TTL.as_millis() as u64);
            }
            None => {
                invocation.arg("").arg(0);
            }
        }
    }
}

/// Raises a bucket's fence mark for a stream lease.
pub static RAISE_FENCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/raise_fence.lua")));

/// What the commit script needs besides the keys of the session's bucket.
#[derive(Debug, Clone)]
pub struct CommitArgs<'a> {
    /// The session's hash.
    pub session_key: &'a str,
    pub bucket: &'a BucketKeys,
    /// The revision read; `None` when the session did not exist (it must still not).
    pub expected_revision: Option<&'a str>,
    /// The revision this write installs (random: unique across replicas).
    pub new_revision: &'a str,
    /// The session's incarnation (see the identity index in `mod.rs`).
    pub incarnation: &'a str,
    pub session_json: &'a [u8],
    /// Key TTL to set; `None` keeps the key's TTL (summary work must not extend a session).
    pub ttl_ms: Option<u64>,
    pub last_seen: &'a str,
    pub session_id: &'a str,
    pub chunk_count: usize,
    /// The stream lease this write is fenced by, with its acquisition number.
    pub fence: Option<(&'a str, u64)>,
    /// The identity index keys the session is listed under (JSON array).
    pub index_keys_json: &'a str,
    /// Drop every stored field first: the session starts over (it had expired).
    pub fresh: bool,
    /// The writer lease on one server (`None` on a cluster).
    pub writer: Option<&'a WriterKeys>,
}

impl CommitArgs<'_> {
    /// The invocation of [`COMMIT`] with these arguments.
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = COMMIT.prepare_invoke();
        invocation
            .key(self.session_key)
            .key(&self.bucket.recency)
            .key(&self.bucket.chunk_counts)
            .key(&self.bucket.chunk_total)
            .key(&self.bucket.fences)
            .arg(self.expected_revision.unwrap_or(""))
            .arg(self.new_revision)
            .arg(self.incarnation)
            .arg(self.session_json)
            .arg(self.ttl_ms.map(|ms| ms.to_string()).unwrap_or_default())
            .arg(self.last_seen)
            .arg(self.session_id)
            .arg(self.chunk_count)
            .arg(self.fence.map_or("", |(lease, _)| lease))
            .arg(self.fence.map_or(0, |(_, number)| number))
            .arg(self.index_keys_json)
            .arg(if self.fresh { "1" } else { "0" });
        WriterKeys::add_to(self.writer, &mut invocation);
        invocation
    }
}

/// Which sessions [`REMOVE`] may remove: those last active before (or at) a time.
#[derive(Debug, Clone, Copy)]
pub enum RemoveBound {
    /// Expiry: last active strictly before the cutoff.
    Before(f64),
    /// Eviction: last active no later than when the session was picked.
    AtOrBefore(f64),
}

/// The invocation of [`REMOVE`] for `ids` (with their hash keys) of one bucket.
pub fn remove_invocation(
    bucket: &BucketKeys,
    sessions: &[(String, String)],
    bound: RemoveBound,
    writer: Option<&WriterKeys>,
) -> ScriptInvocation<'static> {
    let (time, strict) = match bound {
        RemoveBound::Before(time) => (time, "lt"),
        RemoveBound::AtOrBefore(time) => (time, "le"),
    };
    let mut invocation = REMOVE.prepare_invoke();
    invocation
        .key(&bucket.recency)
        .key(&bucket.chunk_counts)
        .key(&bucket.chunk_total)
        .arg(super::format_score(time))
        .arg(strict);
    WriterKeys::add_to(writer, &mut invocation);
    for (id, key) in sessions {
        invocation.key(key).arg(id);
    }
    invocation
}
