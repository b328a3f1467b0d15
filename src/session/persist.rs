//! Durable single-node state: `--data-dir` keeps sessions across restarts.
//!
//! The in-memory store records which sessions changed; every `--snapshot-interval` (default
//! 5 s) and at shutdown, those are written to an embedded redb database in one transaction
//! (upserts and deletions). A crash loses at most the last interval. At start, saved sessions
//! are loaded with their TTLs honoured.
//!
//! Why redb: a maintained, pure-Rust, single-file embedded store with ACID transactions and
//! crash safety (copy-on-write B-trees, checksummed commits), so no C toolchain or separate
//! service is needed and a torn write cannot corrupt what was committed before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::session::memory::{ChangeSet, MemoryStore};
use crate::session::model::Session;
use crate::telemetry::Metrics;

/// Session id → JSON of the session.
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// The database file inside `--data-dir`.
pub const FILE_NAME: &str = "livectx.redb";

/// Why saving or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot create data directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] redb::Error),
    #[error("could not encode a session: {0}")]
    Encode(#[from] serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for PersistError {
            fn from(e: $t) -> Self {
                Self::Database(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The on-disk side of the memory store.
pub struct Snapshots {
    db: Database,
    path: PathBuf,
}

/// What one snapshot wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    pub upserted: usize,
    pub removed: usize,
}

impl Snapshots {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, PersistError> {
        std::fs::create_dir_all(dir).map_err(|source| PersistError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(SESSIONS)?;
        txn.commit()?;
        Ok(Self { db, path })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every saved session; undecodable entries are skipped and counted (second value).
    pub fn load_all(&self) -> Result<(Vec<Session>, usize), PersistError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SESSIONS)?;
        let mut sessions = Vec::new();
        let mut corrupt = 0;
        for entry in table.iter()? {
            let (key, value) = entry?;
            match serde_json::from_slice::<Session>(value.value()) {
                Ok(session) => sessions.push(session),
                Err(error) => {
                    corrupt += 1;
                    tracing::warn!(session = key.value(), %error, "skipped a saved session that could not be decoded");
                }
            }
        }
        Ok((sessions, corrupt))
    }

    /// Write a change set in one transaction.
    pub fn write(&self, changes: &ChangeSet) -> Result<SnapshotStats, PersistError> {
        if changes.upserted.is_empty() && changes.removed.is_empty() {
            return Ok(SnapshotStats::default());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SESSIONS)?;
            for session in &changes.upserted {
                let bytes = serde_json::to_vec(session.as_ref())?;
                table.insert(session.id().as_str(), bytes.as_slice())?;
            }
            for id in &changes.removed {
                table.remove(id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(SnapshotStats {
            upserted: changes.upserted.len(),
            removed: changes.removed.len(),
        })
    }
}

/// Saves a memory store's changes periodically and on demand.
#[derive(Clone)]
pub struct Snapshotter {
    snapshots: Arc<Snapshots>,
    store: Arc<MemoryStore>,
    metrics: Arc<Metrics>,
}

impl Snapshotter {
    /// Load what was saved into `store` (which must track changes), then return the snapshotter.
    pub fn restore(
        snapshots: Snapshots,
        store: Arc<MemoryStore>,
        metrics: Arc<Metrics>,
        now: f64,
    ) -> Result<Self, PersistError> {
        let started = Instant::now();
        let (sessions, corrupt) = snapshots.load_all()?;
        let saved = sessions.len();
        let ttl = store.config().ttl_secs();
        let (live, expired): (Vec<Session>, Vec<Session>) =
            sessions.into_iter().partition(|s| !s.is_expired(now, ttl));
        // Sessions evicted by `load` (over --max-sessions) are recorded as changes and leave the
        // file with the next snapshot; expired ones leave it now.
        let loaded = store.load(live, now);
        snapshots.write(&ChangeSet {
            upserted: Vec::new(),
            removed: expired.into_iter().map(|s| s.id().clone()).collect(),
        })?;
        tracing::info!(
            path = %snapshots.path().display(),
            saved,
            loaded,
            corrupt,
            ms = started.elapsed().as_millis() as u64,
            "restored sessions from the data directory"
        );
        Ok(Self {
            snapshots: Arc::new(snapshots),
            store,
            metrics,
        })
    }

    /// Write everything changed since the last snapshot. On failure the changes are kept for
    /// the next attempt.
    pub fn snapshot(&self) -> Result<SnapshotStats, PersistError> {
        let changes = self.store.take_changes();
        match self.snapshots.write(&changes) {
            Ok(stats) => Ok(stats),
            Err(error) => {
                self.store.restore_changes(&changes);
                self.metrics.store_error("snapshot");
                Err(error)
            }
        }
    }

    /// Snapshot every `interval` until `shutdown` (the final snapshot is the caller's).
    pub fn spawn(&self, interval: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {
                        let this = this.clone();
                        match tokio::task::spawn_blocking(move || this.snapshot()).await {
                            Ok(Ok(stats)) if stats != SnapshotStats::default() => {
                                tracing::debug!(upserted = stats.upserted, removed = stats.removed, "snapshot written");
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(error)) => tracing::error!(%error, "snapshot failed; will retry next interval"),
                            Err(error) => tracing::error!(%error, "snapshot task failed"),
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};
    use crate::session::model::{SessionId, SessionLimits};
    use crate::session::store::{SessionStore, StoreConfig};

    fn config(ttl: u64) -> StoreConfig {
        StoreConfig {
            max_sessions: 100,
            session_ttl: Duration::from_secs(ttl),
            limits: SessionLimits { max_chunks: 50 },
        }
    }

    #[tokio::test]
    async fn sessions_survive_a_reopen_and_expired_ones_are_dropped() {
        let dir = std::env::temp_dir().join(format!("livectx-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = Arc::new(Metrics::new());
        {
            let store = Arc::new(MemoryStore::with_change_tracking(config(100)));
            let snap = Snapshotter::restore(
                Snapshots::open(&dir).unwrap(),
                store.clone(),
                metrics.clone(),
                0.0,
            )
            .unwrap();
            store
                .append_actions(
                    batch("keep", vec![action("click", "A", "/a", 1.0)]),
                    1000.0,
                    None,
                )
                .await
                .unwrap();
            store
                .append_actions(
                    batch("old", vec![action("click", "B", "/b", 1.0)]),
                    10.0,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(
                snap.snapshot().unwrap(),
                SnapshotStats {
                    upserted: 2,
                    removed: 0
                }
            );
            assert_eq!(
                snap.snapshot().unwrap(),
                SnapshotStats::default(),
                "nothing changed since"
            );
        }
        let store = Arc::new(MemoryStore::with_change_tracking(config(100)));
        Snapshotter::restore(
            Snapshots::open(&dir).unwrap(),
            store.clone(),
            metrics,
            1050.0,
        )
        .unwrap();
        let keep = store
            .session(&SessionId::parse("keep").unwrap(), 1050.0)
            .await
            .unwrap()
            .expect("restored");
        assert_eq!(keep.raw_action_iter().next().unwrap().title(), "A");
        assert!(
            store
                .session(&SessionId::parse("old").unwrap(), 1050.0)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        let (left, _) = Snapshots::open(&dir).unwrap().load_all().unwrap();
        assert_eq!(left.len(), 1, "expired sessions are pruned from the file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
