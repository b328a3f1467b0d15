//! A circuit breaker in front of Autoplay's API: after a run of failures it opens, and
//! lookups answer from what livectx holds without waiting on a dead upstream; after a
//! cool-down one probe request decides whether it closes again.
//!
//! Hand-written (40 lines) rather than a crate: the rule set is tiny, must be driven by an
//! explicit clock in tests, and is shared with the rate-limit and configuration gates.

use std::time::{Duration, Instant};

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// One probe may go through (and is, while `probing`).
    HalfOpen {
        probing: bool,
    },
    Open {
        until: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    /// Consecutive failures while closed.
    failures: u32,
    threshold: u32,
    cool_down: Duration,
    base_cool_down: Duration,
    max_cool_down: Duration,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures for `cool_down`, doubled after each failed
    /// probe up to `max_cool_down`.
    pub fn new(threshold: u32, cool_down: Duration, max_cool_down: Duration) -> Self {
        Self {
            state: BreakerState::Closed,
            failures: 0,
            threshold: threshold.max(1),
            cool_down,
            base_cool_down: cool_down,
            max_cool_down: max_cool_down.max(cool_down),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a request start now? Past the cool-down, the first caller gets the probe.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true } => false,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
        }
    }

    /// May a failed request be retried at once? Only while closed: a probe gets one try.
    pub fn allows_retry(&self) -> bool {
        self.state == BreakerState::Closed
    }

    pub fn success(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.cool_down = self.base_cool_down;
    }

    /// Record a failure; `true` when this opened the breaker.
    pub fn failure(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures < self.threshold {
                    return false;
                }
            }
            BreakerState::HalfOpen { .. } => {
                self.cool_down = (self.cool_down * 2).min(self.max_cool_down);
            }
            BreakerState::Open { .. } => return false,
        }
        self.failures = 0;
        self.state = BreakerState::Open {
            until: now + self.cool_down,
        };
        true
    }

    /// A request that was allowed ended without a verdict on the upstream's health (e.g. it
    /// was rate limited): a probe slot is given back.
    pub fn neutral(&mut self) {
        if let BreakerState::HalfOpen { probing: true } = self.state {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    /// For the gauge: 0 closed, 1 half-open, 2 open.
    pub fn code(&self) -> i64 {
        match self.state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen { .. } => 1,
            BreakerState::Open { .. } => 2,
        }
    }

    pub fn name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen { .. } => "half_open",
            BreakerState::Open { .. } => "open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_a_run_of_failures_and_probes_after_the_cool_down() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(3, COOL, Duration::from_secs(60));
        assert!(!breaker.failure(t0));
        breaker.success();
        assert!(!breaker.failure(t0));
        assert!(!breaker.failure(t0));
        assert!(breaker.allow(t0));
        assert!(breaker.failure(t0), "the third in a row opens it");
        assert_eq!(breaker.name(), "open");
        assert!(!breaker.allow(t0 + Duration::from_secs(9)));
        // One probe, and only one, after the cool-down.
        assert!(breaker.allow(t0 + COOL));
        assert!(!breaker.allow(t0 + COOL));
        assert!(!breaker.allows_retry());
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow(t0 + COOL));
    }

    #[test]
    fn a_failed_probe_doubles_the_cool_down_up_to_the_cap() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(1, COOL, Duration::from_secs(15));
        assert!(breaker.failure(t0));
        assert!(breaker.allow(t0 + COOL));
        assert!(breaker.failure(t0 + COOL));
        // 15 s (the cap), not 20 s.
        assert!(!breaker.allow(t0 + COOL + Duration::from_secs(14)));
        assert!(breaker.allow(t0 + COOL + Duration::from_secs(15)));
        breaker.neutral();
        assert_eq!(breaker.state(), BreakerState::HalfOpen { probing: false });
        assert!(breaker.allow(t0 + COOL + Duration::from_secs(15)));
        assert_eq!(breaker.code(), 1);
    }
}
