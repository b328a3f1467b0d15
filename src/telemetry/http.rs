//! Per-route handles on the HTTP metrics, so that counting a request costs no allocation and
//! no label hashing on the hot path.
//!
//! `Family::get_or_create` needs an owned label set (`route: String`), so every request used
//! to allocate the route name and hash it twice, under the family's lock. The routes are a
//! small fixed set (the router's patterns and `unmatched`), so each gets its handles once: the
//! duration histogram and one counter per status seen, clones that share the family's
//! series. A status first seen is created in the family then, exactly as before, so
//! `/metrics` shows the same series.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::handles::CounterHandles;
use super::{HttpLabels, RouteLabels};

/// The handles of one route.
#[derive(Debug)]
pub struct RouteHandles {
    route: Box<str>,
    duration: Histogram,
    /// One counter per status answered so far (a handful per route).
    statuses: CounterHandles<u16, HttpLabels>,
}

impl RouteHandles {
    /// The route these count (its label).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Count one answered request and its duration.
    pub fn observe(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        self.statuses.inc(status, || HttpLabels {
            route: self.route.to_string(),
            status,
        });
    }
}

/// The route handles, created on first use.
#[derive(Debug)]
pub struct HttpRoutes {
    requests: Family<HttpLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    routes: RwLock<HashMap<Box<str>, Arc<RouteHandles>>>,
}

impl HttpRoutes {
    /// Handles over these families (clones of the registered ones).
    pub fn new(
        requests: Family<HttpLabels, Counter>,
        durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    ) -> Self {
        Self {
            requests,
            durations,
            routes: RwLock::new(HashMap::new()),
        }
    }

    /// The handles of `route` (a route pattern, or `unmatched`).
    pub fn route(&self, route: &str) -> Arc<RouteHandles> {
        if let Some(handles) = crate::sync::read(&self.routes).get(route) {
            return Arc::clone(handles);
        }
        let mut routes = crate::sync::write(&self.routes);
        let handles = routes.entry(route.into()).or_insert_with(|| {
            Arc::new(RouteHandles {
                route: route.into(),
                duration: self
                    .durations
                    .get_or_create(&RouteLabels {
                        route: route.to_string(),
                    })
                    .clone(),
                statuses: CounterHandles::new(self.requests.clone()),
            })
        });
        Arc::clone(handles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn handles_count_into_the_registered_series() {
        let requests = Family::<HttpLabels, Counter>::default();
        let durations: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new([0.01, 0.1]));
        let mut registry = Registry::default();
        registry.register("http_requests", "", requests.clone());
        registry.register("http_request_duration_seconds", "", durations.clone());
        let routes = HttpRoutes::new(requests, durations);

        let retrieval = routes.route("/retrieval");
        retrieval.observe(200, 0.001);
        retrieval.observe(200, 0.002);
        routes.route("/retrieval").observe(400, 0.05);
        routes.route("unmatched").observe(404, 0.0);
        assert!(Arc::ptr_eq(&retrieval, &routes.route("/retrieval")));

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "http_requests_total{route=\"/retrieval\",status=\"200\"} 2",
            "http_requests_total{route=\"/retrieval\",status=\"400\"} 1",
            "http_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "http_request_duration_seconds_count{route=\"/retrieval\"} 3",
            "http_request_duration_seconds_count{route=\"unmatched\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
