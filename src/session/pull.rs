//! The contract between the APIs and a source that is read on demand (Autoplay's hosted
//! pull API): before a lookup by user id resolves, the API asks the puller to bring that
//! user's activity up to date, within a time budget.
//!
//! It lives here, below both, because the APIs must not import ingest (a layer above them):
//! the application builds the puller in ingest and hands it to the API state as a trait
//! object.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::session::model::Session;

/// What bringing one user's activity up to date did. Never an error: when the upstream fails,
/// the lookup answers from what the store holds, marked as possibly stale.
#[derive(Debug, Clone, PartialEq)]
pub enum PullOutcome {
    /// Not this puller's user: another product, or not a usable user id.
    NotApplicable,
    /// Fetched now; `new_actions` were merged into the store.
    Fetched { new_actions: usize },
    /// Fetched within the freshness window: nothing asked upstream.
    Fresh,
    /// The upstream knows no recent activity for this id (answered now or remembered).
    Unknown,
    /// The upstream could not be read within the budget (slow, down, circuit open, rate
    /// limited, misconfigured): what the store holds is as of `as_of` (server clock, the last
    /// successful fetch of this user; `None` if there never was one).
    Stale {
        as_of: Option<f64>,
        reason: &'static str,
    },
}

/// Brings a user's activity up to date from an upstream that is read on demand.
#[async_trait]
pub trait ActivityPuller: Send + Sync + 'static {
    /// How long a lookup may wait for the upstream (`AUTOPLAY_PULL_BUDGET`).
    fn budget(&self) -> Duration;

    /// Make sure the store holds `user_id`'s recent activity, waiting at most `budget`.
    /// `product`: the product the lookup is scoped to, if any.
    async fn ensure_fresh(
        &self,
        product: Option<&str>,
        user_id: &str,
        budget: Duration,
    ) -> PullOutcome;

    /// The puller's state for `/readyz`; `ok` is false while it is misconfigured.
    fn status(&self) -> serde_json::Value;
}

impl fmt::Debug for dyn ActivityPuller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ActivityPuller")
    }
}

/// A snapshot of `session` that renders with the note "activity as of …; newer activity
/// could not be fetched" (see [`Session::stale_as_of`]). `as_of` falls back to the session's
/// last activity when the user was never fetched successfully.
pub fn mark_stale(session: Arc<Session>, as_of: Option<f64>) -> Arc<Session> {
    let mut session = Arc::unwrap_or_clone(session);
    let as_of = as_of.unwrap_or_else(|| session.last_activity());
    session.mark_stale(as_of);
    Arc::new(session)
}
