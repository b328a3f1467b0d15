//! Debouncing: merge a session's batches that arrive close together into one chunk.
//!
//! Trailing edge: a session's pending batch is stored once no new batch arrived for the window,
//! or at the latest `max_wait` after its first batch, so a busy session still shows up.
//! Everything pending is flushed on shutdown.
//!
//! Group commit: a sender that must learn whether its batch was stored (an HTTP request whose
//! 2xx promises it) adds a [`Waiter`]; whoever flushes the merged batch tells every waiter of
//! it the outcome, so one write answers many requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::session::model::{ActionBatch, SessionId};
use crate::session::store::Fence;

/// How much longer than the window a busy session may wait, at most (stream and webhook).
pub const MAX_WAIT_FACTOR: u32 = 10;

/// Told `true` once the batch it was added with is stored, `false` if the write failed.
pub type Waiter = oneshot::Sender<bool>;

struct Pending {
    batch: ActionBatch,
    fence: Option<Fence>,
    waiters: Vec<Waiter>,
    first: Instant,
    last: Instant,
}

/// A merged batch taken for writing, with everyone waiting on it.
pub struct Flush {
    pub batch: ActionBatch,
    pub fence: Option<Fence>,
    pub waiters: Vec<Waiter>,
}

/// Tell every waiter whether the write succeeded (a waiter that gave up is ignored).
pub fn answer(waiters: Vec<Waiter>, stored: bool) {
    for waiter in waiters {
        let _ = waiter.send(stored);
    }
}

/// The pending batches, one per session.
pub struct Debouncer {
    window: Duration,
    max_wait: Duration,
    pending: Mutex<HashMap<SessionId, Pending>>,
}

impl Debouncer {
    /// Trailing edge of `window`, at most [`MAX_WAIT_FACTOR`] × `window` after the first batch.
    pub fn new(window: Duration) -> Self {
        Self::with_max_wait(window, window * MAX_WAIT_FACTOR)
    }

    /// A debouncer whose batches wait at most `max_wait` after their first.
    fn with_max_wait(window: Duration, max_wait: Duration) -> Self {
        Self {
            window,
            max_wait: max_wait.max(window),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The debounce window.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Pending>> {
        crate::sync::lock(&self.pending)
    }

    /// How often to sweep for due batches.
    pub fn tick(&self) -> Duration {
        (self.window / 4).max(Duration::from_millis(5))
    }

    /// Add a batch; returns `true` when it was merged into a pending one. A `waiter` is
    /// answered when the merged batch is written.
    pub fn add(&self, batch: ActionBatch, fence: Option<Fence>, waiter: Option<Waiter>) -> bool {
        self.add_at(batch, fence, waiter, Instant::now())
    }

    fn add_at(
        &self,
        batch: ActionBatch,
        fence: Option<Fence>,
        waiter: Option<Waiter>,
        now: Instant,
    ) -> bool {
        let mut pending = self.lock();
        match pending.get_mut(&batch.session_id) {
            Some(p) => {
                merge(&mut p.batch, batch);
                if fence.is_some() {
                    p.fence = fence;
                }
                p.waiters.extend(waiter);
                p.last = now;
                true
            }
            None => {
                pending.insert(
                    batch.session_id.clone(),
                    Pending {
                        batch,
                        fence,
                        waiters: waiter.into_iter().collect(),
                        first: now,
                        last: now,
                    },
                );
                false
            }
        }
    }

    /// Take one session's pending batch.
    pub fn take(&self, id: &SessionId) -> Option<Flush> {
        self.lock().remove(id).map(Pending::into_flush)
    }

    /// Take every batch whose window closed by `now` (or everything, when `all`).
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<Flush> {
        let max_wait = self.max_wait;
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
            .map(Pending::into_flush)
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

impl Pending {
    fn into_flush(self) -> Flush {
        Flush {
            batch: self.batch,
            fence: self.fence,
            waiters: self.waiters,
        }
    }
}

/// Later envelope values win; actions are kept in time order (stable: equal or absent times
/// keep arrival order), since analytics tools deliver out of order.
pub(crate) fn merge(into: &mut ActionBatch, next: ActionBatch) {
    into.actions.extend(next.actions);
    if into
        .actions
        .windows(2)
        .any(|w| time_of(&w[1]) < time_of(&w[0]))
    {
        into.actions
            .sort_by(|a, b| time_of(a).total_cmp(&time_of(b)));
    }
    if next.source.is_some() {
        into.source = next.source;
    }
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

/// An action's time for ordering; without one it sorts where it is among untimed neighbours.
fn time_of(action: &crate::session::model::Action) -> f64 {
    action.time().unwrap_or(f64::NEG_INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};

    #[test]
    fn merges_within_the_window_and_flushes_after_it() {
        let d = Debouncer::new(Duration::from_millis(100));
        assert!(!d.add(
            batch("s", vec![action("click", "A", "/a", 1.0)]),
            None,
            None
        ));
        assert!(d.add(
            batch("s", vec![action("click", "B", "/a", 2.0)]),
            None,
            None
        ));
        let start = Instant::now();
        assert!(d.take_due(start, false).is_empty());
        let due = d.take_due(start + Duration::from_millis(150), false);
        assert_eq!(due.len(), 1);
        let titles: Vec<&str> = due[0].batch.actions.iter().map(|a| a.title()).collect();
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
            None,
            last,
        );
        assert!(
            d.take_due(last + Duration::from_millis(4), false)
                .is_empty(),
            "a fresh batch waits for its window"
        );
    }

    #[test]
    fn merged_actions_are_kept_in_time_order_and_every_waiter_is_answered() {
        let d = Debouncer::with_max_wait(Duration::from_millis(10), Duration::from_millis(10));
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        d.add(
            batch("s", vec![action("click", "Late", "/a", 5.0)]),
            None,
            Some(tx1),
        );
        d.add(
            batch("s", vec![action("click", "Early", "/a", 2.0)]),
            None,
            Some(tx2),
        );
        let flush = d.take(&SessionId::parse("s").unwrap()).expect("pending");
        let titles: Vec<&str> = flush.batch.actions.iter().map(|a| a.title()).collect();
        assert_eq!(titles, ["Early", "Late"]);
        assert_eq!(flush.waiters.len(), 2);
        answer(flush.waiters, false);
        assert_eq!(rx1.try_recv(), Ok(false));
        assert_eq!(rx2.try_recv(), Ok(false));
    }
}
