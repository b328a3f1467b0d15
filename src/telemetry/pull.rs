//! Metrics of the Autoplay pull source (`livectx_autoplay_pull_*`): what each lookup cost
//! upstream, how often the caches answered instead, and the circuit breaker's state.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullOutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

/// The pull source's metrics.
#[derive(Debug)]
pub struct PullMetrics {
    /// Upstream requests by outcome (`ok`, `empty`, `not_found`, `unauthorized`,
    /// `forbidden`, `rate_limited`, `server_error`, `network`, `timeout`, `bad_body`, ...).
    pub fetches: Family<PullOutcomeLabels, Counter>,
    /// Latency of each upstream request.
    pub fetch_duration: Histogram,
    /// Lookups by what answered them (`fetched`, `fresh`, `unknown`, `stale`, ...).
    pub lookups: Family<PullOutcomeLabels, Counter>,
    /// Lookups answered without an upstream call, by cache (`fresh`, `negative`, `joined`).
    pub cache_hits: Family<CacheLabels, Counter>,
    /// Lookups answered stale without an upstream call, by reason (`breaker_open`,
    /// `rate_limited`, `config_error`, `busy`).
    pub skipped: Family<PullOutcomeLabels, Counter>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Gauge,
    pub breaker_opened: Counter,
    /// Pulled actions that were new and stored.
    pub actions_merged: Counter,
}

impl Default for PullMetrics {
    fn default() -> Self {
        Self {
            fetches: Family::default(),
            // 5 ms .. ~20 s
            fetch_duration: Histogram::new(exponential_buckets(0.005, 2.0, 13)),
            lookups: Family::default(),
            cache_hits: Family::default(),
            skipped: Family::default(),
            breaker_state: Gauge::default(),
            breaker_opened: Counter::default(),
            actions_merged: Counter::default(),
        }
    }
}

impl PullMetrics {
    /// Register every metric under `autoplay_pull_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("autoplay_pull");
        r.register(
            "fetches",
            "Requests to Autoplay's live-activity API, by outcome",
            self.fetches.clone(),
        );
        r.register(
            "fetch_duration_seconds",
            "Latency of requests to Autoplay's live-activity API",
            self.fetch_duration.clone(),
        );
        r.register(
            "lookups",
            "User-id lookups that consulted the pull source, by outcome (fetched, fresh, unknown, stale, not_applicable)",
            self.lookups.clone(),
        );
        r.register(
            "cache_hits",
            "Lookups answered without a request of their own, by cache (fresh, negative, joined)",
            self.cache_hits.clone(),
        );
        r.register(
            "skipped",
            "Lookups answered from what livectx holds without asking upstream, by reason (breaker_open, rate_limited, config_error, busy)",
            self.skipped.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker in front of Autoplay's API: 0 closed, 1 half-open, 2 open",
            self.breaker_state.clone(),
        );
        r.register(
            "breaker_opened",
            "Times the circuit breaker opened",
            self.breaker_opened.clone(),
        );
        r.register(
            "actions_merged",
            "Pulled actions that were new and stored",
            self.actions_merged.clone(),
        );
    }

    pub fn fetch(&self, outcome: &'static str, seconds: f64) {
        self.fetches
            .get_or_create(&PullOutcomeLabels { outcome })
            .inc();
        self.fetch_duration.observe(seconds);
    }

    pub fn lookup(&self, outcome: &'static str) {
        self.lookups
            .get_or_create(&PullOutcomeLabels { outcome })
            .inc();
    }

    pub fn cache_hit(&self, cache: &'static str) {
        self.cache_hits.get_or_create(&CacheLabels { cache }).inc();
    }

    pub fn skip(&self, reason: &'static str) {
        self.skipped
            .get_or_create(&PullOutcomeLabels { outcome: reason })
            .inc();
    }
}
