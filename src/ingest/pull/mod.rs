//! The Autoplay pull source: reads a user's activity from Autoplay's hosted API,
//! `GET {AUTOPLAY_API_URL}/users/{product_id}/{user_id}/live-activity`, when a lookup asks
//! about that user, and merges it into the store (see `docs/autoplay-api.md`).
//!
//! - **Budget**: a lookup waits at most `AUTOPLAY_PULL_BUDGET`; the request itself carries on
//!   in the background, so the next lookup finds its result.
//! - **Single flight**: one request per user at a time; concurrent lookups join it.
//! - **Freshness window** and **negative cache**: a user fetched within
//!   `AUTOPLAY_PULL_FRESHNESS` is not fetched again; one Autoplay knows nothing about is not
//!   asked about again for `AUTOPLAY_PULL_NEGATIVE_TTL`.
//! - **Failures are answers**: a slow or failing upstream makes the lookup answer from what
//!   livectx holds, marked stale. Network errors, timeouts and 5xx are retried (bounded, with
//!   backoff) and feed a circuit breaker; while it is open no request is made. 429 pauses all
//!   requests for its `Retry-After`. 401/403 is a configuration error: logged once, shown in
//!   `/readyz`, retried only once a minute.
//! - **Merge, never twice**: pulled actions land in the session the API names, else a
//!   per-user synthetic session ([`crate::sources::autoplay_api::synthetic_session_id`]);
//!   actions the session already holds (or summarised) are skipped.

pub mod breaker;
pub mod config;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::stream::{self, StreamExt};
use lru::LruCache;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::ingest::{Ingested, Ingestor};
use crate::session::model::{Action, Session, normalize_user_id};
use crate::session::pull::{ActivityPuller, PullOutcome};
use crate::sources::autoplay_api::{self, LiveActivity};
use crate::sync::lock;
use crate::telemetry::{Metrics, Person, redact_url};
use breaker::Breaker;
pub use config::{AutoplayApiConfig, PullSettings};

/// Actions asked for per request (Autoplay keeps at most 50 per user).
pub const FETCH_LIMIT: usize = 50;
/// Requests per fetch at most (the first and two retries).
const MAX_ATTEMPTS: u32 = 3;
/// First retry delay; doubled per retry, with up to 50 % jitter.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Consecutive failed requests that open the breaker.
const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_COOL_DOWN: Duration = Duration::from_secs(15);
const BREAKER_MAX_COOL_DOWN: Duration = Duration::from_secs(120);
/// After a 401/403, the next request waits this long.
const CONFIG_ERROR_RETRY: Duration = Duration::from_secs(60);
/// 429 without a usable `Retry-After` pauses this long; longer ones are capped.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Users remembered (freshness, negative cache, in-flight request), least recently asked
/// about forgotten first.
const MAX_TRACKED_USERS: usize = 10_000;
/// Upstream requests in flight at most; beyond, lookups answer from the store.
const MAX_IN_FLIGHT: usize = 32;
/// Background refresh covers users asked about within this long.
const REFRESH_RECENT: Duration = Duration::from_secs(30 * 60);
/// Background refreshes in flight at once.
const REFRESH_CONCURRENCY: usize = 4;

/// One request's share of time: at least a second, even with a short budget, so a slow
/// upstream still lands its answer for the next lookup.
fn attempt_timeout(budget: Duration) -> Duration {
    (budget * 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// What one fetch (with its retries) came to; shared by every lookup that joined it.
#[derive(Debug, Clone, PartialEq)]
enum FetchResult {
    Merged(usize),
    /// Autoplay knows no recent activity for this id.
    Empty,
    Failed(&'static str),
}

type Flight = Shared<BoxFuture<'static, FetchResult>>;

#[derive(Debug)]
struct UserState {
    fetched_at: Option<Instant>,
    /// Server clock of the last successful fetch.
    fetched_wall: Option<f64>,
    unknown_until: Option<Instant>,
    flight: Option<Flight>,
    asked_at: Instant,
}

impl UserState {
    fn new(now: Instant) -> Self {
        Self {
            fetched_at: None,
            fetched_wall: None,
            unknown_until: None,
            flight: None,
            asked_at: now,
        }
    }
}

/// A 401/403 from Autoplay.
#[derive(Debug, Clone)]
struct ConfigError {
    status: u16,
    since: f64,
    retry_at: Instant,
}

/// Whether a request may go upstream now.
#[derive(Debug)]
struct Gate {
    breaker: Breaker,
    rate_limited_until: Option<Instant>,
    config_error: Option<ConfigError>,
}

/// One request's verdict.
enum Attempt {
    Activity(LiveActivity),
    Empty,
    RateLimited(Duration),
    ConfigError(u16),
    /// Worth retrying, and a sign of an unhealthy upstream.
    Retryable(&'static str),
    /// Will not get better by retrying (a 400, an unreadable body).
    Permanent(&'static str),
}

/// What a fetch does after one request.
enum Next {
    Merge(LiveActivity),
    Done(FetchResult),
    Retry(Duration),
}

/// Reads Autoplay's hosted live-activity API on demand.
#[derive(Clone)]
pub struct AutoplayPuller {
    inner: Arc<Inner>,
}

struct Inner {
    settings: PullSettings,
    client: reqwest::Client,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    gate: Mutex<Gate>,
    users: Mutex<LruCache<String, UserState>>,
    fetch_slots: Arc<Semaphore>,
}

/// What a lookup found under the locks.
enum Begin {
    Done(PullOutcome),
    Wait { flight: Flight, as_of: Option<f64> },
}

impl AutoplayPuller {
    pub fn new(
        settings: PullSettings,
        ingestor: Arc<Ingestor>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("livectx/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(attempt_timeout(settings.budget))
            .timeout(attempt_timeout(settings.budget))
            .build()?;
        let capacity = std::num::NonZeroUsize::new(MAX_TRACKED_USERS).unwrap_or(
            // MAX_TRACKED_USERS is a non-zero constant.
            std::num::NonZeroUsize::MIN,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                client,
                ingestor,
                metrics,
                gate: Mutex::new(Gate {
                    breaker: Breaker::new(
                        BREAKER_THRESHOLD,
                        BREAKER_COOL_DOWN,
                        BREAKER_MAX_COOL_DOWN,
                    ),
                    rate_limited_until: None,
                    config_error: None,
                }),
                users: Mutex::new(LruCache::new(capacity)),
                fetch_slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            }),
        })
    }

    pub fn settings(&self) -> &PullSettings {
        &self.inner.settings
    }

    /// Start the background refresh, if configured.
    pub fn spawn_refresh(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        let interval = self.inner.settings.refresh_interval?;
        let inner = Arc::clone(&self.inner);
        tracing::info!(
            interval = ?interval,
            cap = inner.settings.refresh_cap,
            "refreshing recently asked-about users from Autoplay's API in the background"
        );
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticks.tick() => inner.refresh_round().await,
                }
            }
        }))
    }
}

#[async_trait]
impl ActivityPuller for AutoplayPuller {
    fn budget(&self) -> Duration {
        self.inner.settings.budget
    }

    async fn ensure_fresh(
        &self,
        product: Option<&str>,
        user_id: &str,
        budget: Duration,
    ) -> PullOutcome {
        let outcome = self.inner.ensure_fresh(product, user_id, budget).await;
        let label = match &outcome {
            PullOutcome::NotApplicable => "not_applicable",
            PullOutcome::Fetched { .. } => "fetched",
            PullOutcome::Fresh => "fresh",
            PullOutcome::Unknown => "unknown",
            PullOutcome::Stale { .. } => "stale",
        };
        self.inner.metrics.autoplay_pull.lookup(label);
        outcome
    }

    fn status(&self) -> serde_json::Value {
        self.inner.status()
    }
}

impl Inner {
    async fn ensure_fresh(
        self: &Arc<Self>,
        product: Option<&str>,
        user_id: &str,
        budget: Duration,
    ) -> PullOutcome {
        if product.is_some_and(|p| p != self.settings.product_id) {
            return PullOutcome::NotApplicable;
        }
        let Some(user) = normalize_user_id(user_id) else {
            return PullOutcome::NotApplicable;
        };
        match self.begin(&user, Instant::now(), true) {
            Begin::Done(outcome) => outcome,
            Begin::Wait { flight, as_of } => match tokio::time::timeout(budget, flight).await {
                Ok(FetchResult::Merged(new_actions)) => PullOutcome::Fetched { new_actions },
                Ok(FetchResult::Empty) => PullOutcome::Unknown,
                Ok(FetchResult::Failed(reason)) => PullOutcome::Stale { as_of, reason },
                Err(_) => {
                    tracing::debug!(user = %Person(&user), ?budget, "Autoplay's API did not answer within the budget; answering from what livectx holds");
                    PullOutcome::Stale {
                        as_of,
                        reason: "slow",
                    }
                }
            },
        }
    }

    /// Decide under the locks: a cached answer, a request to join, or a new request.
    fn begin(self: &Arc<Self>, user: &str, now: Instant, asked: bool) -> Begin {
        let m = &self.metrics.autoplay_pull;
        // The background refresh is not a lookup: it is not counted as one.
        let hit = |cache: &'static str| {
            if asked {
                m.cache_hit(cache);
            }
        };
        let mut users = lock(&self.users);
        let state = users.get_or_insert_mut(user.to_string(), || UserState::new(now));
        if asked {
            state.asked_at = now;
        }
        if state
            .fetched_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.settings.freshness)
        {
            hit("fresh");
            return Begin::Done(PullOutcome::Fresh);
        }
        if state.unknown_until.is_some_and(|until| now < until) {
            hit("negative");
            return Begin::Done(PullOutcome::Unknown);
        }
        let as_of = state.fetched_wall;
        if let Some(flight) = &state.flight {
            hit("joined");
            return Begin::Wait {
                flight: flight.clone(),
                as_of,
            };
        }
        let stale = |reason: &'static str| {
            if asked {
                m.skip(reason);
            }
            Begin::Done(PullOutcome::Stale { as_of, reason })
        };
        let mut gate = lock(&self.gate);
        if gate.config_error.as_ref().is_some_and(|e| now < e.retry_at) {
            return stale("config_error");
        }
        if gate.rate_limited_until.is_some_and(|until| now < until) {
            return stale("rate_limited");
        }
        let Ok(permit) = Arc::clone(&self.fetch_slots).try_acquire_owned() else {
            return stale("busy");
        };
        if !gate.breaker.allow(now) {
            return stale("breaker_open");
        }
        m.breaker_state.set(gate.breaker.code());
        drop(gate);
        let inner = Arc::clone(self);
        let owned = user.to_string();
        let task = tokio::spawn(async move {
            let result = inner.fetch(&owned).await;
            inner.finish(&owned, &result);
            drop(permit);
            result
        });
        let flight = async move { task.await.unwrap_or(FetchResult::Failed("panicked")) }
            .boxed()
            .shared();
        state.flight = Some(flight.clone());
        Begin::Wait { flight, as_of }
    }

    /// Record a fetch's result for the next lookups of this user.
    fn finish(&self, user: &str, result: &FetchResult) {
        let now = Instant::now();
        let mut users = lock(&self.users);
        let Some(state) = users.peek_mut(user) else {
            return;
        };
        state.flight = None;
        match result {
            FetchResult::Merged(_) => {
                state.fetched_at = Some(now);
                state.fetched_wall = Some(clock::now());
                state.unknown_until = None;
            }
            FetchResult::Empty => {
                state.fetched_at = Some(now);
                state.fetched_wall = Some(clock::now());
                state.unknown_until = Some(now + self.settings.negative_ttl);
            }
            FetchResult::Failed(_) => {}
        }
    }

    /// One fetch: up to [`MAX_ATTEMPTS`] requests while the breaker stays closed, then the merge.
    async fn fetch(&self, user: &str) -> FetchResult {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let verdict = self.request(user).await;
            match self.judge(verdict, attempt) {
                Next::Merge(activity) => return self.merge(user, activity).await,
                Next::Done(result) => return result,
                Next::Retry(delay) => tokio::time::sleep(delay).await,
            }
        }
    }

    /// Update the gate with one request's verdict and say what comes next.
    fn judge(&self, verdict: Attempt, attempt: u32) -> Next {
        let m = &self.metrics.autoplay_pull;
        let now = Instant::now();
        let mut gate = lock(&self.gate);
        match verdict {
            Attempt::Activity(activity) => {
                Self::healthy(&mut gate, m);
                Next::Merge(activity)
            }
            Attempt::Empty => {
                Self::healthy(&mut gate, m);
                Next::Done(FetchResult::Empty)
            }
            Attempt::RateLimited(wait) => {
                gate.breaker.neutral();
                gate.rate_limited_until = Some(now + wait);
                tracing::warn!(retry_after = ?wait, "Autoplay's API is rate limiting livectx (429); pausing requests as asked");
                Next::Done(FetchResult::Failed("rate_limited"))
            }
            Attempt::ConfigError(status) => {
                gate.breaker.neutral();
                let known = gate.config_error.as_ref().filter(|e| e.status == status);
                if known.is_none() {
                    tracing::error!(
                        status,
                        product = %self.settings.product_id,
                        "Autoplay's API refused livectx's key ({status}): check AUTOPLAY_API_KEY (your product's mcp_key) and that AUTOPLAY_PRODUCT_ID is the product it was issued for; answering from what livectx holds, retrying once a minute"
                    );
                }
                let since = known.map_or_else(clock::now, |e| e.since);
                gate.config_error = Some(ConfigError {
                    status,
                    since,
                    retry_at: now + CONFIG_ERROR_RETRY,
                });
                Next::Done(FetchResult::Failed("config_error"))
            }
            Attempt::Permanent(reason) => {
                gate.breaker.neutral();
                Next::Done(FetchResult::Failed(reason))
            }
            Attempt::Retryable(reason) => {
                if gate.breaker.failure(now) {
                    m.breaker_opened.inc();
                    tracing::warn!(
                        reason,
                        "Autoplay's API keeps failing: circuit breaker open, lookups answer from what livectx holds until a probe succeeds"
                    );
                }
                m.breaker_state.set(gate.breaker.code());
                if attempt < MAX_ATTEMPTS && gate.breaker.allows_retry() {
                    let backoff = RETRY_BASE * 2u32.pow(attempt - 1);
                    let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
                    Next::Retry(backoff + jitter)
                } else {
                    Next::Done(FetchResult::Failed(reason))
                }
            }
        }
    }

    fn healthy(gate: &mut Gate, m: &crate::telemetry::pull::PullMetrics) {
        gate.breaker.success();
        m.breaker_state.set(gate.breaker.code());
        if let Some(error) = gate.config_error.take() {
            tracing::info!(
                previous_status = error.status,
                "Autoplay's API accepts livectx's key again"
            );
        }
    }

    /// One request and its verdict (counted and timed).
    async fn request(&self, user: &str) -> Attempt {
        let m = &self.metrics.autoplay_pull;
        let url = match self.url(user) {
            Some(url) => url,
            None => return Attempt::Permanent("bad_url"),
        };
        let started = Instant::now();
        let (outcome, attempt) = match self
            .client
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.settings.api_key))
            .send()
            .await
        {
            Err(error) if error.is_timeout() => ("timeout", Attempt::Retryable("timeout")),
            Err(error) => {
                tracing::debug!(%error, "request to Autoplay's API failed");
                ("network", Attempt::Retryable("network"))
            }
            Ok(response) => self.verdict(response).await,
        };
        m.fetch(outcome, started.elapsed().as_secs_f64());
        attempt
    }

    async fn verdict(&self, response: reqwest::Response) -> (&'static str, Attempt) {
        let status = response.status();
        match status {
            StatusCode::UNAUTHORIZED => ("unauthorized", Attempt::ConfigError(401)),
            StatusCode::FORBIDDEN => ("forbidden", Attempt::ConfigError(403)),
            StatusCode::NOT_FOUND => ("not_found", Attempt::Empty),
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(MAX_RETRY_AFTER);
                ("rate_limited", Attempt::RateLimited(wait))
            }
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                ("server_error", Attempt::Retryable("server_error"))
            }
            s if !s.is_success() => {
                tracing::warn!(
                    status = s.as_u16(),
                    "Autoplay's API refused a live-activity request"
                );
                ("client_error", Attempt::Permanent("client_error"))
            }
            _ => match read_capped(response, autoplay_api::MAX_BODY_BYTES).await {
                Err(ReadError::Timeout) => ("timeout", Attempt::Retryable("timeout")),
                Err(ReadError::Network) => ("network", Attempt::Retryable("network")),
                Err(ReadError::TooLarge) => ("bad_body", Attempt::Permanent("bad_body")),
                Ok(bytes) => match autoplay_api::decode(&bytes) {
                    Ok(activity) if activity.actions.is_empty() => ("empty", Attempt::Empty),
                    Ok(activity) => {
                        if activity.skipped > 0 || activity.dropped > 0 {
                            tracing::warn!(
                                skipped = activity.skipped,
                                dropped = activity.dropped,
                                "Autoplay's live-activity answer had entries that were not actions, or more actions than livectx keeps"
                            );
                        }
                        ("ok", Attempt::Activity(activity))
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Autoplay's live-activity answer could not be read");
                        ("bad_body", Attempt::Permanent("bad_body"))
                    }
                },
            },
        }
    }

    fn url(&self, user: &str) -> Option<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.settings.base_url).ok()?;
        url.path_segments_mut().ok()?.pop_if_empty().extend([
            "users",
            self.settings.product_id.as_str(),
            user,
            "live-activity",
        ]);
        url.query_pairs_mut()
            .append_pair("limit", &FETCH_LIMIT.to_string());
        Some(url)
    }

    /// Store what is new in a fetched answer.
    async fn merge(&self, user: &str, activity: LiveActivity) -> FetchResult {
        let store = self.ingestor.store();
        let mut merged = 0;
        for mut batch in activity.into_batches(&self.settings.product_id, user) {
            let held = match store.session(&batch.session_id, clock::now()).await {
                Ok(held) => held,
                Err(error) => {
                    self.metrics.store_error("autoplay_pull");
                    tracing::warn!(%error, "could not read a session to merge pulled actions into");
                    return FetchResult::Failed("store");
                }
            };
            batch.actions = new_actions(held.as_deref(), std::mem::take(&mut batch.actions));
            if batch.actions.is_empty() {
                continue;
            }
            let count = batch.actions.len();
            if self.ingestor.append_now(batch).await != Ingested::Stored {
                return FetchResult::Failed("store");
            }
            merged += count;
        }
        self.metrics
            .autoplay_pull
            .actions_merged
            .inc_by(merged as u64);
        FetchResult::Merged(merged)
    }

    /// Fetch the most recently asked-about users that are not fresh.
    async fn refresh_round(self: &Arc<Self>) {
        let now = Instant::now();
        let due: Vec<String> = {
            let users = lock(&self.users);
            let mut recent: Vec<(&String, &UserState)> = users
                .iter()
                .filter(|(_, s)| now.saturating_duration_since(s.asked_at) < REFRESH_RECENT)
                .collect();
            recent.sort_by_key(|(_, s)| std::cmp::Reverse(s.asked_at));
            recent
                .into_iter()
                .take(self.settings.refresh_cap)
                .map(|(user, _)| user.clone())
                .collect()
        };
        stream::iter(due)
            .for_each_concurrent(REFRESH_CONCURRENCY, |user| {
                let inner = Arc::clone(self);
                async move {
                    if let Begin::Wait { flight, .. } = inner.begin(&user, Instant::now(), false) {
                        flight.await;
                    }
                }
            })
            .await;
    }

    fn status(&self) -> serde_json::Value {
        let now = Instant::now();
        let gate = lock(&self.gate);
        let config_error = gate.config_error.as_ref().map(|e| {
            json!({
                "status": e.status,
                "since": clock::format_rfc3339(e.since),
                "message": if e.status == 401 {
                    "Autoplay refused AUTOPLAY_API_KEY (401): set it to your product's mcp_key"
                } else {
                    "Autoplay refused the key for this product (403): AUTOPLAY_PRODUCT_ID must be the product the key was issued for"
                },
            })
        });
        let rate_limited = gate
            .rate_limited_until
            .filter(|until| now < *until)
            .map(|until| until.saturating_duration_since(now).as_secs_f64().ceil());
        json!({
            "source": "autoplay_api",
            "url": redact_url(&self.settings.base_url),
            "product_id": self.settings.product_id,
            "ok": config_error.is_none(),
            "breaker": gate.breaker.name(),
            "config_error": config_error,
            "rate_limited_for_seconds": rate_limited,
            "budget_ms": self.settings.budget.as_millis() as u64,
            "freshness_ms": self.settings.freshness.as_millis() as u64,
            "background_refresh": self.settings.refresh_interval.map(|i| json!({
                "interval_ms": i.as_millis() as u64,
                "cap": self.settings.refresh_cap,
            })),
            "users_tracked": lock(&self.users).len(),
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

enum ReadError {
    Timeout,
    Network,
    TooLarge,
}

/// The body, refusing more than `max` bytes without reading them all.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(ReadError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) if error.is_timeout() => return Err(ReadError::Timeout),
            Err(_) => return Err(ReadError::Network),
        }
    }
}

/// What identifies an action across fetches: everything Autoplay sends about it.
type ActionKey<'a> = (
    Option<i64>,
    Option<u64>,
    Option<u64>,
    &'a str,
    &'a str,
    &'a str,
);

fn key(action: &Action) -> ActionKey<'_> {
    (
        action.index(),
        action.timestamp_start().map(f64::to_bits),
        action.timestamp_end().map(f64::to_bits),
        action.kind(),
        action.title(),
        action.canonical_url(),
    )
}

/// The fetched actions `held` does not have yet, in order. An action the session holds raw
/// (or recently summarised) is skipped by its key; one no newer than the session's summary
/// was folded into it already and is skipped too; a repeat within the answer is kept once.
pub fn new_actions(held: Option<&Session>, incoming: Vec<Action>) -> Vec<Action> {
    let folded_through = held
        .and_then(|s| s.summary().as_ref())
        .map_or(f64::NEG_INFINITY, |summary| summary.last_ts);
    let mut keep = vec![false; incoming.len()];
    {
        let mut seen: HashSet<ActionKey<'_>> = held
            .map(|s| s.recent_action_iter().map(key).collect())
            .unwrap_or_default();
        for (i, action) in incoming.iter().enumerate() {
            let folded = action.time().is_some_and(|t| t <= folded_through);
            keep[i] = seen.insert(key(action)) && !folded;
        }
    }
    incoming
        .into_iter()
        .zip(keep)
        .filter_map(|(action, keep)| keep.then_some(action))
        .collect()
}

impl std::fmt::Debug for AutoplayPuller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoplayPuller")
            .field("product_id", &self.inner.settings.product_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};
    use crate::session::model::{SessionId, SessionLimits, SummaryDraft, SummarySource};

    fn at(title: &str, ts: f64) -> Action {
        action("click", title, "/x", ts)
    }

    #[test]
    fn merges_each_action_once() {
        let fetched = vec![at("a", 100.0), at("b", 101.0)];
        assert_eq!(new_actions(None, fetched.clone()), fetched);

        let mut session = Session::new(SessionId::parse("s").unwrap(), 0.0);
        let limits = SessionLimits { max_chunks: 50 };
        session.append(batch("s", fetched.clone()), 1.0, limits);
        // The next answer repeats the two and adds one (and repeats it inside the answer).
        let next = vec![
            at("a", 100.0),
            at("b", 101.0),
            at("c", 102.0),
            at("c", 102.0),
        ];
        assert_eq!(new_actions(Some(&session), next), vec![at("c", 102.0)]);
    }

    #[test]
    fn actions_already_folded_into_the_summary_are_not_merged_again() {
        let mut session = Session::new(SessionId::parse("s").unwrap(), 0.0);
        let limits = SessionLimits { max_chunks: 50 };
        session.append(
            batch("s", vec![at("a", 100.0), at("b", 101.0)]),
            1.0,
            limits,
        );
        let job = session.claim_summary(1, 2.0, 10.0, 7).unwrap();
        let draft = SummaryDraft {
            text: "did a and b".into(),
            source: SummarySource::Builtin,
            digest: None,
        };
        session.finish_summary(&job, draft, 3.0);
        // Forget the recently covered chunks, as happens after many summaries.
        session.forget_recent_covered();
        let next = vec![at("a", 100.0), at("b", 101.0), at("c", 105.0)];
        assert_eq!(new_actions(Some(&session), next), vec![at("c", 105.0)]);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn attempts_get_at_least_a_second() {
        assert_eq!(
            attempt_timeout(Duration::from_millis(300)),
            Duration::from_secs(1)
        );
        assert_eq!(
            attempt_timeout(Duration::from_millis(1500)),
            Duration::from_secs(3)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
    }
}
