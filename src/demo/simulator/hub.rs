//! The stream's fan-out: every subscriber gets every event through its own bounded queue.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

/// What a subscriber received, for reports and `/personas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberStats {
    pub id: u64,
    pub peer: String,
    pub delivered: u64,
    pub dropped: u64,
    pub connected: bool,
}

struct Subscriber {
    id: u64,
    peer: String,
    tx: mpsc::Sender<Bytes>,
    delivered: u64,
    dropped: u64,
}

impl Subscriber {
    fn stats(&self, connected: bool) -> SubscriberStats {
        SubscriberStats {
            id: self.id,
            peer: self.peer.clone(),
            delivered: self.delivered,
            dropped: self.dropped,
            connected,
        }
    }
}

/// Departed subscribers remembered for the stats (the most recent ones).
const MAX_DEPARTED: usize = 100;

#[derive(Default)]
struct HubState {
    subscribers: Vec<Subscriber>,
    departed: VecDeque<SubscriberStats>,
    next_id: u64,
    closed: bool,
}

impl HubState {
    fn remember_departed(&mut self, stats: SubscriberStats) {
        self.departed.push_back(stats);
        while self.departed.len() > MAX_DEPARTED {
            self.departed.pop_front();
        }
    }
}

/// Fans every event out to every subscriber, each through its own bounded queue.
///
/// Publishing never waits: a full queue drops the event for that subscriber only (and counts
/// it), exactly the trade the real connector makes, so one slow reader cannot hold up the rest.
pub struct Hub {
    state: Mutex<HubState>,
    capacity: usize,
    /// Subscribers connected now, for whoever waits for the first one.
    connected: tokio::sync::watch::Sender<usize>,
}

impl Hub {
    /// A hub whose subscribers may each have `capacity` events waiting.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(HubState::default()),
            capacity: capacity.max(1),
            connected: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Resolves once at least one subscriber is connected.
    pub async fn first_subscriber(&self) {
        let mut connected = self.connected.subscribe();
        // The sender lives as long as the hub, so this only ends when someone connects.
        let _ = connected.wait_for(|n| *n > 0).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        crate::sync::lock(&self.state)
    }

    /// A new subscriber's queue; `None` once the hub is closed.
    pub fn subscribe(&self, peer: &str) -> Option<(u64, mpsc::Receiver<Bytes>)> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        state.next_id += 1;
        let id = state.next_id;
        state.subscribers.push(Subscriber {
            id,
            peer: peer.to_string(),
            tx,
            delivered: 0,
            dropped: 0,
        });
        self.connected.send_replace(state.subscribers.len());
        Some((id, rx))
    }

    /// Offer `frame` to every subscriber; returns how many took it.
    pub fn publish(&self, frame: &Bytes) -> usize {
        let mut state = self.lock();
        let mut taken = 0;
        let mut gone = Vec::new();
        for (i, subscriber) in state.subscribers.iter_mut().enumerate() {
            match subscriber.tx.try_send(frame.clone()) {
                Ok(()) => {
                    subscriber.delivered += 1;
                    taken += 1;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    subscriber.dropped += 1;
                    if subscriber.dropped.is_power_of_two() {
                        tracing::warn!(
                            subscriber = subscriber.id,
                            peer = %subscriber.peer,
                            dropped = subscriber.dropped,
                            "a subscriber is not keeping up: its events are dropped (as the connector does with its 256-event queue)"
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            let subscriber = state.subscribers.swap_remove(i);
            tracing::info!(
                subscriber = subscriber.id,
                peer = %subscriber.peer,
                delivered = subscriber.delivered,
                dropped = subscriber.dropped,
                "a subscriber disconnected"
            );
            state.remember_departed(subscriber.stats(false));
        }
        self.connected.send_replace(state.subscribers.len());
        taken
    }

    /// End every stream and refuse new subscribers.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let closing: Vec<Subscriber> = state.subscribers.drain(..).collect();
        for subscriber in closing {
            state.remember_departed(subscriber.stats(false));
        }
        self.connected.send_replace(0);
    }

    /// Every subscriber so far, connected ones first.
    pub fn stats(&self) -> Vec<SubscriberStats> {
        let state = self.lock();
        state
            .subscribers
            .iter()
            .map(|s| s.stats(!s.tx.is_closed()))
            .chain(state.departed.iter().cloned())
            .collect()
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn frame(n: u32) -> Bytes {
        Bytes::from(format!("data: {{\"n\":{n}}}\n\n"))
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event() {
        let hub = Hub::new(16);
        let (_, mut a) = hub.subscribe("a").unwrap();
        let (_, mut b) = hub.subscribe("b").unwrap();
        for n in 0..10 {
            assert_eq!(hub.publish(&frame(n)), 2);
        }
        for n in 0..10 {
            assert_eq!(a.recv().await.unwrap(), frame(n));
            assert_eq!(b.recv().await.unwrap(), frame(n));
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_events_without_holding_up_the_others() {
        let hub = Hub::new(256);
        let (_, _stalled) = hub.subscribe("slow").unwrap();
        let (_, mut reader) = hub.subscribe("fast").unwrap();
        for n in 0..300 {
            hub.publish(&frame(n));
            assert_eq!(reader.recv().await.unwrap(), frame(n));
        }
        let stats = hub.stats();
        let slow = stats.iter().find(|s| s.peer == "slow").unwrap();
        let fast = stats.iter().find(|s| s.peer == "fast").unwrap();
        assert_eq!((slow.delivered, slow.dropped), (256, 44));
        assert_eq!((fast.delivered, fast.dropped), (300, 0));
    }

    #[tokio::test]
    async fn waits_for_the_first_subscriber() {
        let hub = Arc::new(Hub::new(4));
        let waiting = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.first_subscriber().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let _subscriber = hub.subscribe("first").unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the first subscriber")
            .unwrap();
    }

    #[tokio::test]
    async fn departed_and_closed_subscribers_are_reported() {
        let hub = Hub::new(4);
        let (_, gone) = hub.subscribe("gone").unwrap();
        let (_, mut stays) = hub.subscribe("stays").unwrap();
        drop(gone);
        assert_eq!(hub.publish(&frame(1)), 1);
        assert_eq!(hub.subscribers(), 1);
        hub.close();
        assert!(hub.subscribe("late").is_none());
        assert_eq!(stays.recv().await.unwrap(), frame(1));
        assert_eq!(stays.recv().await, None, "closing ends the stream");
        assert!(hub.stats().iter().all(|s| !s.connected));
    }
}
