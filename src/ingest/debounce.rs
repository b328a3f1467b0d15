//! Debouncing: merge a session's batches that arrive close together into one chunk.
//!
//! Trailing edge: a session's pending batch is stored once no new batch arrived for the window,
//! or at the latest 10 × the window after its first batch, so a busy session still shows up.
//! Everything pending is flushed on shutdown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::session::model::{ActionBatch, SessionId};
use crate::session::store::Fence;

/// How much longer than the window a busy session may wait, at most.
const MAX_WAIT_FACTOR: u32 = 10;

struct Pending {
    batch: ActionBatch,
    fence: Option<Fence>,
    first: Instant,
    last: Instant,
}

/// The pending batches, one per session.
pub struct Debouncer {
    window: Duration,
    pending: Mutex<HashMap<SessionId, Pending>>,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Pending>> {
        crate::sync::lock(&self.pending)
    }

    /// How often to sweep for due batches.
    pub fn tick(&self) -> Duration {
        (self.window / 4).max(Duration::from_millis(5))
    }

    /// Add a batch; returns `true` when it was merged into a pending one.
    pub fn add(&self, batch: ActionBatch, fence: Option<Fence>) -> bool {
        self.add_at(batch, fence, Instant::now())
    }

    fn add_at(&self, batch: ActionBatch, fence: Option<Fence>, now: Instant) -> bool {
        let mut pending = self.lock();
        match pending.get_mut(&batch.session_id) {
            Some(p) => {
                merge(&mut p.batch, batch);
                if fence.is_some() {
                    p.fence = fence;
                }
                p.last = now;
                true
            }
            None => {
                pending.insert(
                    batch.session_id.clone(),
                    Pending {
                        batch,
                        fence,
                        first: now,
                        last: now,
                    },
                );
                false
            }
        }
    }

    /// Take one session's pending batch.
    pub fn take(&self, id: &SessionId) -> Option<(ActionBatch, Option<Fence>)> {
        self.lock().remove(id).map(|p| (p.batch, p.fence))
    }

    /// Take every batch whose window closed by `now` (or everything, when `all`).
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<(ActionBatch, Option<Fence>)> {
        let max_wait = self.window * MAX_WAIT_FACTOR;
        let mut pending = self.lock();
        let due: Vec<SessionId> = pending
            .iter()
            .filter(|(_, p)| {
                all || now.duration_since(p.last) >= self.window
                    || now.duration_since(p.first) >= max_wait
            })
            .map(|(id, _)| id.clone())
            .collect();
        due.into_iter()
            .filter_map(|id| pending.remove(&id))
            .map(|p| (p.batch, p.fence))
            .collect()
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Later envelope values win; actions keep arrival order.
fn merge(into: &mut ActionBatch, next: ActionBatch) {
    into.actions.extend(next.actions);
    if next.product_id.is_some() {
        into.product_id = next.product_id;
    }
    if next.user_id.is_some() {
        into.user_id = next.user_id;
    }
    if next.email.is_some() {
        into.email = next.email;
    }
    if next.conversation_id.is_some() {
        into.conversation_id = next.conversation_id;
    }
    if next.forwarded_at.is_some() {
        into.forwarded_at = next.forwarded_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};

    #[test]
    fn merges_within_the_window_and_flushes_after_it() {
        let d = Debouncer::new(Duration::from_millis(100));
        assert!(!d.add(batch("s", vec![action("click", "A", "/a", 1.0)]), None));
        assert!(d.add(batch("s", vec![action("click", "B", "/a", 2.0)]), None));
        let start = Instant::now();
        assert!(d.take_due(start, false).is_empty());
        let due = d.take_due(start + Duration::from_millis(150), false);
        assert_eq!(due.len(), 1);
        let titles: Vec<&str> = due[0].0.actions.iter().map(|a| a.title()).collect();
        assert_eq!(titles, ["A", "B"]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_busy_session_is_flushed_after_the_maximum_wait() {
        let d = Debouncer::new(Duration::from_millis(10));
        let t0 = Instant::now();
        // A batch every 5 ms keeps the trailing edge from ever closing...
        for i in 0..=20u64 {
            d.add_at(
                batch("s", vec![action("click", "A", "/a", i as f64)]),
                None,
                t0 + Duration::from_millis(5 * i),
            );
        }
        let last = t0 + Duration::from_millis(100);
        assert!(
            d.take_due(last + Duration::from_millis(4), false).len() == 1,
            "10 x window after the first batch"
        );
        d.add_at(
            batch("s", vec![action("click", "B", "/a", 1.0)]),
            None,
            last,
        );
        assert!(
            d.take_due(last + Duration::from_millis(4), false)
                .is_empty(),
            "a fresh batch waits for its window"
        );
    }
}
