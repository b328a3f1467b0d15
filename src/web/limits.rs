//! Request limits on the HTTP surface: a per-IP rate limit and a per-request timeout.
//!
//! Why our own token bucket instead of `governor`/`tower_governor`: memory must be bounded by
//! construction (governor's keyed store grows with every new address until something calls
//! `retain_recent`), refusals must be livectx's JSON error with a metric and a throttled log
//! line (tower_governor answers plain text and counts nothing), and IPv6 clients must be keyed
//! by their /64 (one host owns 2^64 addresses). That is ~100 lines on the `lru` crate we
//! already use.
//!
//! Body size limits live with each route (`read_body`); header limits are hyper's (see
//! `docs/security.md`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lru::LruCache;

use crate::telemetry::{LogThrottle, Metrics, RouteLabels};
use crate::web::error::{ApiError, codes};

/// Most client addresses tracked at once (~64 bytes each: ~4 MiB). Beyond, the least recently
/// seen address is forgotten, which only ever gives that client a fresh bucket.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

/// At most one "rate limited" log line per this interval (the metric counts every refusal).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Per-IP rate limit settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second allowed per client address.
    pub per_second: f64,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
    /// Take the client address from the last `X-Forwarded-For` entry (the one the operator's
    /// own proxy appended) instead of the TCP peer.
    pub trust_forwarded_for: bool,
}

impl RateLimitConfig {
    /// The default burst: two seconds' worth of requests, at least one.
    pub fn default_burst(per_second: f64) -> u32 {
        (per_second * 2.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What the two limit middlewares need, and nothing else, so that any router (the APIs, the
/// ingest receivers) can mount them without sharing a larger state.
pub struct RequestLimits {
    /// The per-IP rate limit (`None`: off).
    pub rate_limiter: Option<RateLimiter>,
    /// Longest a request may take to produce its response head.
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Never rate limited: probes and scrapers must always get through.
    pub exempt_paths: Vec<&'static str>,
    /// Requests over the rate on these paths are not refused but marked with
    /// [`OverRateLimit`], for receivers whose senders never retry a 4xx (see [`rate_limit`]).
    pub marked_paths: Vec<&'static str>,
}

impl RequestLimits {
    /// Limits with no exempt or marked paths.
    pub fn new(
        rate_limiter: Option<RateLimiter>,
        request_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            rate_limiter,
            request_timeout,
            metrics,
            exempt_paths: Vec::new(),
            marked_paths: Vec::new(),
        }
    }
}

/// Token buckets keyed by client address, with bounded memory.
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<LruCache<IpAddr, Bucket>>,
    log: LogThrottle,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter, or `None` when the configuration turns limiting off (a rate of 0).
    pub fn new(config: RateLimitConfig) -> Option<Self> {
        Self::with_capacity(config, MAX_TRACKED_CLIENTS)
    }

    fn with_capacity(config: RateLimitConfig, capacity: usize) -> Option<Self> {
        if !(config.per_second.is_finite() && config.per_second > 0.0) {
            return None;
        }
        let capacity = std::num::NonZeroUsize::new(capacity.max(1))?;
        Some(Self {
            config: RateLimitConfig {
                burst: config.burst.max(1),
                ..config
            },
            buckets: Mutex::new(LruCache::new(capacity)),
            log: LogThrottle::new(LOG_INTERVAL),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// Take one token for `client` at `now`; on refusal, how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = bucket_key(client);
        let burst = f64::from(self.config.burst);
        let rate = self.config.per_second;
        let mut buckets = crate::sync::lock(&self.buckets);
        let bucket = buckets.get_or_insert_mut(key, || Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Client addresses currently tracked.
    pub fn tracked(&self) -> usize {
        crate::sync::lock(&self.buckets).len()
    }

    /// Which address a request counts against.
    pub fn client_of(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        if self.config.trust_forwarded_for
            && let Some(forwarded) = last_forwarded_for(headers)
        {
            return Some(forwarded);
        }
        peer
    }
}

/// IPv4 addresses are keyed as they are; IPv6 by their /64, the block one host usually owns
/// (IPv4-mapped IPv6 addresses count as IPv4).
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The last address in `X-Forwarded-For` (every header line, in order). Earlier entries are
/// whatever the client claimed; the last one was appended by the proxy in front of livectx.
pub fn last_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())?;
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Marks a request to a receiver that arrived over its sender's rate: the receiver refuses it
/// only if it is not authentic (see [`rate_limit`]).
#[derive(Debug, Clone, Copy)]
pub struct OverRateLimit {
    pub client: IpAddr,
    /// When a token will be available.
    pub wait: Duration,
}

/// The `429` answer to a request over the per-IP rate, `None` to let it through (exempt
/// paths always pass).
///
/// Run by [`crate::web::guard`] for every route; `route` names it in the metric and log, and
/// `peer` is the connection's address (`None` when served without one: nothing to key on,
/// unless a trusted proxy names the client).
///
/// Marked paths are the exception: a sender that never retries a 4xx (the Autoplay connector)
/// would lose a refused genuine delivery. A request over the rate there is marked with
/// [`OverRateLimit`] and refused by the receiver only when its signature fails, so floods of
/// forged deliveries are limited and the sender's own never are.
pub fn refusal(
    state: &RequestLimits,
    request: &mut Request,
    peer: Option<SocketAddr>,
    route: &str,
) -> Option<Response> {
    // No limiter: the rate limit is off.
    let limiter = state.rate_limiter.as_ref()?;
    if state.exempt_paths.contains(&request.uri().path()) {
        return None;
    }
    let client = limiter.client_of(request.headers(), peer.map(|p| p.ip()))?;
    let wait = limiter.check(client, Instant::now()).err()?;
    if state.marked_paths.contains(&request.uri().path()) {
        request
            .extensions_mut()
            .insert(OverRateLimit { client, wait });
        return None;
    }
    Some(refuse(
        state,
        limiter,
        route,
        OverRateLimit { client, wait },
    ))
}

/// The `429` answer to a request over the rate: counted, logged (at most once per 10 s).
pub fn rate_limited(state: &RequestLimits, route: &str, over: OverRateLimit) -> Response {
    match state.rate_limiter.as_ref() {
        Some(limiter) => refuse(state, limiter, route, over),
        None => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            "rate limit exceeded",
        )
        .into_response(),
    }
}

fn refuse(
    state: &RequestLimits,
    limiter: &RateLimiter,
    route: &str,
    over: OverRateLimit,
) -> Response {
    state
        .metrics
        .rate_limited
        .get_or_create(&RouteLabels {
            route: route.to_string(),
        })
        .inc();
    if let Some(unlogged) = limiter.log.note(1) {
        tracing::warn!(
            client = %over.client,
            route,
            also_refused_since_last_line = unlogged,
            "rate limit exceeded; answering 429 (LIVECTX_RATE_LIMIT)"
        );
    }
    let retry_after = over.wait.as_secs_f64().ceil().max(1.0) as u64;
    let config = limiter.config();
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        codes::RATE_LIMITED,
        format!(
            "rate limit exceeded: at most {} requests per second per client (burst {}); retry in {retry_after} s",
            config.per_second, config.burst
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// The `503` (JSON) answer to a request that took longer than `LIVECTX_REQUEST_TIMEOUT` to
/// produce its response head ([`crate::web::guard`] times every request, body reading
/// included, so a client that trickles its body cannot hold a handler forever; a streamed
/// response body, SSE, is not cut): counted and logged.
pub fn timed_out(state: &RequestLimits, route: &str) -> Response {
    let limit = state.request_timeout;
    state
        .metrics
        .request_timeouts
        .get_or_create(&RouteLabels {
            route: route.to_string(),
        })
        .inc();
    tracing::warn!(route, timeout = ?limit, "request timed out; answered 503");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        codes::TIMED_OUT,
        format!(
            "the request did not complete within {} (LIVECTX_REQUEST_TIMEOUT)",
            humantime::format_duration(limit)
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            per_second,
            burst,
            trust_forwarded_for: false,
        })
        .unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn allows_the_burst_then_the_rate() {
        let l = limiter(2.0, 3);
        let t0 = Instant::now();
        let a = ip("203.0.113.7");
        for _ in 0..3 {
            assert_eq!(l.check(a, t0), Ok(()));
        }
        let wait = l.check(a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.check(a, t1), Ok(()));
        assert!(l.check(a, t1).is_err());
        // Another client has its own bucket.
        assert_eq!(l.check(ip("203.0.113.8"), t1), Ok(()));
        // Idle time refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.check(a, t2), Ok(()));
        }
        assert!(l.check(a, t2).is_err());
    }

    #[test]
    fn zero_or_invalid_rate_is_off() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = RateLimitConfig {
                per_second: rate,
                burst: 5,
                trust_forwarded_for: false,
            };
            assert!(RateLimiter::new(config).is_none(), "{rate}");
        }
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_v4_is_v4() {
        let l = limiter(1.0, 1);
        let t = Instant::now();
        assert_eq!(l.check(ip("2001:db8:1:2::1"), t), Ok(()));
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), t).is_err());
        assert_eq!(l.check(ip("2001:db8:1:3::1"), t), Ok(()));
        assert_eq!(l.check(ip("198.51.100.1"), t), Ok(()));
        assert!(l.check(ip("::ffff:198.51.100.1"), t).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let l = RateLimiter::with_capacity(
            RateLimitConfig {
                per_second: 1.0,
                burst: 1,
                trust_forwarded_for: false,
            },
            100,
        )
        .unwrap();
        let t = Instant::now();
        for i in 0..1000u32 {
            let _ = l.check(IpAddr::from(i.to_be_bytes()), t);
        }
        assert_eq!(l.tracked(), 100);
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 10.0.0.1"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("192.0.2.9 , "));
        assert_eq!(last_forwarded_for(&headers), Some(ip("192.0.2.9")));
        let peer = Some(ip("127.0.0.1"));
        let untrusted = limiter(1.0, 1);
        assert_eq!(untrusted.client_of(&headers, peer), peer);
        let trusted = RateLimiter::new(RateLimitConfig {
            per_second: 1.0,
            burst: 1,
            trust_forwarded_for: true,
        })
        .unwrap();
        assert_eq!(trusted.client_of(&headers, peer), Some(ip("192.0.2.9")));
        // Garbage falls back to the peer.
        let mut garbage = HeaderMap::new();
        garbage.insert("x-forwarded-for", HeaderValue::from_static("unknown"));
        assert_eq!(trusted.client_of(&garbage, peer), peer);
        let mut with_port = HeaderMap::new();
        with_port.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(last_forwarded_for(&with_port), Some(ip("2001:db8::1")));
    }

    #[test]
    fn default_burst_is_two_seconds_worth() {
        assert_eq!(RateLimitConfig::default_burst(0.2), 1);
        assert_eq!(RateLimitConfig::default_burst(5.0), 10);
        assert_eq!(RateLimitConfig::default_burst(2.5), 5);
    }
}
