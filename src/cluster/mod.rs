//! Who consumes each stream when several replicas run.
//!
//! The Autoplay stream has no consumer groups: every subscriber receives every event. With one
//! replica, it simply consumes. With several sharing Redis, a lease decides: exactly one replica
//! holds each stream's lease and consumes it; its writes carry a fence so that a paused
//! ex-leader cannot write after losing the lease.

pub mod redis_lease;

pub use redis_lease::{LeaseSettings, RedisLeadership};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::session::store::Fence;

/// The product id of a `/stream/<product_id>` URL: the readable part of a stream's lease key,
/// and the product a stream's sessions belong to. Here, below both the stream consumer and the
/// leases, so neither imports the other for it.
pub fn product_of(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
    let last = segments.next()?;
    (segments.next() == Some("stream")).then(|| last.to_string())
}

/// Proof of leadership over one stream, valid until `lost` is cancelled.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    /// Attach to every write made while consuming.
    pub fence: Fence,
    /// Cancelled when the lease is lost (renewal failed or another replica took over).
    pub lost: CancellationToken,
    /// When the previous holder last renewed, if known (to log the takeover gap).
    pub previous_holder_seen: Option<f64>,
}

/// A way to decide which replica consumes a stream.
#[async_trait]
pub trait Leadership: Send + Sync + 'static {
    /// Wait until this replica leads `stream_key`; `None` when `shutdown` fired first.
    async fn acquire(&self, stream_key: &str, shutdown: &CancellationToken) -> Option<LeaseGuard>;

    /// Report the newest event time seen while leading (so a successor can log the gap).
    async fn record_progress(&self, _guard: &LeaseGuard, _last_event_at: f64) {}

    /// Give the lease up (on shutdown) so another replica takes over at once.
    async fn release(&self, guard: &LeaseGuard);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_ids_come_from_stream_urls() {
        assert_eq!(
            product_of("https://c.example/stream/acme_prod"),
            Some("acme_prod".into())
        );
        assert_eq!(
            product_of("https://c.example/stream/acme_prod/?x=1"),
            Some("acme_prod".into())
        );
        assert_eq!(product_of("https://c.example/events"), None);
    }
}
