//! Group commit for the analytics receivers: one event per request, many events per write.
//!
//! PostHog, Amplitude and Segment deliver one HTTP request per event, and a `2xx` must mean
//! the event is stored. Waiting a fixed window before every write would make each request pay
//! that window: at 32 connections a 5 ms wait held ingest near 4 000 events/s. So the write
//! of a session starts as soon as its first event arrives (after an optional `window`, for a
//! deployment that prefers fewer, larger chunks), and whatever arrives for that session while
//! the write is in flight is merged and written next, as one chunk. A quiet session pays no
//! wait; a busy one is written in batches whose size grows with the load.
//!
//! One writer per session at a time also keeps the session's writes in arrival order.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::ingest::debounce::{Flush, Waiter, merge};
use crate::session::model::{ActionBatch, SessionId};

/// The batch waiting for a session's next write, with everyone it answers.
struct Pending {
    batch: ActionBatch,
    waiters: Vec<Waiter>,
}

/// The sessions with a writer, each with what its next write will store.
pub struct GroupCommit {
    window: Duration,
    /// A session is present while a writer owns it; `None` means nothing is waiting.
    groups: Mutex<HashMap<SessionId, Option<Pending>>>,
}

impl GroupCommit {
    /// `window`: how long a session's writer waits before its first write (zero: at once).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// How long a writer waits before its first write.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Option<Pending>>> {
        crate::sync::lock(&self.groups)
    }

    /// Queue `batch` for its session's next write; `waiter` is told its outcome. Returns
    /// `true` when the session had no writer: the caller must then start one, which calls
    /// [`GroupCommit::next`] until it returns `None`.
    pub fn join(&self, batch: ActionBatch, waiter: Waiter) -> bool {
        let mut groups = self.lock();
        match groups.get_mut(&batch.session_id) {
            Some(slot) => {
                match slot {
                    Some(pending) => {
                        merge(&mut pending.batch, batch);
                        pending.waiters.push(waiter);
                    }
                    None => {
                        *slot = Some(Pending {
                            batch,
                            waiters: vec![waiter],
                        })
                    }
                }
                false
            }
            None => {
                groups.insert(
                    batch.session_id.clone(),
                    Some(Pending {
                        batch,
                        waiters: vec![waiter],
                    }),
                );
                true
            }
        }
    }

    /// The writer's next batch of `id`; `None` ends the writer (and a later event starts a
    /// new one).
    pub fn next(&self, id: &SessionId) -> Option<Flush> {
        let mut groups = self.lock();
        match groups.get_mut(id) {
            Some(slot @ Some(_)) => slot.take().map(Pending::into_flush),
            Some(None) => {
                groups.remove(id);
                None
            }
            None => None,
        }
    }

    /// Everything waiting, for the final flush at shutdown (writers still running find
    /// nothing more and stop).
    pub fn take_all(&self) -> Vec<Flush> {
        self.lock()
            .values_mut()
            .filter_map(|slot| slot.take().map(Pending::into_flush))
            .collect()
    }

    /// Sessions with a writer (the tests' view of the hand-off).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Pending {
    fn into_flush(self) -> Flush {
        Flush {
            batch: self.batch,
            fence: None,
            waiters: self.waiters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::debounce::answer;
    use crate::session::model::tests::{action, batch};
    use tokio::sync::oneshot;

    fn id(s: &str) -> SessionId {
        SessionId::parse(s).expect("a valid id")
    }

    #[test]
    fn the_first_event_starts_a_writer_and_later_ones_join_its_next_write() {
        let group = GroupCommit::new(Duration::ZERO);
        let (tx1, mut rx1) = oneshot::channel();
        assert!(group.join(batch("s", vec![action("click", "A", "/a", 1.0)]), tx1));

        // The writer takes the first event at once ...
        let first = group.next(&id("s")).expect("the first batch");
        assert_eq!(first.batch.actions.len(), 1);

        // ... and what arrives during its write waits for the next one, merged.
        let (tx2, mut rx2) = oneshot::channel();
        let (tx3, mut rx3) = oneshot::channel();
        assert!(!group.join(batch("s", vec![action("click", "C", "/a", 3.0)]), tx2));
        assert!(!group.join(batch("s", vec![action("click", "B", "/a", 2.0)]), tx3));
        answer(first.waiters, true);
        assert_eq!(rx1.try_recv(), Ok(true));

        let second = group.next(&id("s")).expect("the merged batch");
        let titles: Vec<&str> = second.batch.actions.iter().map(|a| a.title()).collect();
        assert_eq!(titles, ["B", "C"], "merged in time order");
        assert_eq!(second.waiters.len(), 2);
        answer(second.waiters, false);
        assert_eq!(rx2.try_recv(), Ok(false));
        assert_eq!(rx3.try_recv(), Ok(false));

        // Nothing left: the writer stops, and the session's next event starts a new one.
        assert!(group.next(&id("s")).is_none());
        assert!(group.is_empty());
        let (tx4, _rx4) = oneshot::channel();
        assert!(group.join(batch("s", vec![action("click", "D", "/a", 4.0)]), tx4));
    }

    #[test]
    fn sessions_have_writers_of_their_own() {
        let group = GroupCommit::new(Duration::ZERO);
        let (tx1, _rx1) = oneshot::channel();
        let (tx2, _rx2) = oneshot::channel();
        assert!(group.join(batch("a", vec![action("click", "A", "/a", 1.0)]), tx1));
        assert!(group.join(batch("b", vec![action("click", "B", "/b", 1.0)]), tx2));
        assert_eq!(group.len(), 2);
        let a = group.next(&id("a")).expect("a's batch");
        assert_eq!(a.batch.session_id, id("a"));
        assert!(group.next(&id("a")).is_none());
        assert_eq!(group.len(), 1, "b's writer is untouched");
    }

    #[test]
    fn shutdown_takes_every_waiting_batch_and_running_writers_then_stop() {
        let group = GroupCommit::new(Duration::from_millis(50));
        let (tx1, _rx1) = oneshot::channel();
        let (tx2, _rx2) = oneshot::channel();
        group.join(batch("a", vec![action("click", "A", "/a", 1.0)]), tx1);
        group.join(batch("b", vec![action("click", "B", "/b", 1.0)]), tx2);
        let all = group.take_all();
        assert_eq!(all.len(), 2);
        assert!(group.next(&id("a")).is_none());
        assert!(group.next(&id("b")).is_none());
        assert!(group.is_empty());
    }
}
