//! Counters of one family kept by a small key, so that counting a known key costs a short scan
//! and no label hashing under the family's lock.
//!
//! `Family::get_or_create` hashes the whole label set with SipHash on every call (about 430
//! instructions per identity lookup, measured by callgrind on the retrieval path). Where the
//! keys are a small set fixed by the code (a handful of statuses per route, the ways an
//! identifier is read times three results), each key's counter is fetched from the family
//! once and its handle kept: a clone that shares the family's series, so `/metrics` shows
//! exactly what it did, and a key first seen creates its series then, as before.

use std::hash::Hash;
use std::sync::RwLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// A family's counters, by key. Only for keys from a small set fixed by the code: the list
/// is scanned, and never shrinks.
#[derive(Debug)]
pub struct CounterHandles<K, L> {
    family: Family<L, Counter>,
    known: RwLock<Vec<(K, Counter)>>,
}

impl<K: Copy + PartialEq, L: Clone + Hash + Eq> CounterHandles<K, L> {
    /// Handles over `family` (a clone of the registered one).
    pub fn new(family: Family<L, Counter>) -> Self {
        Self {
            family,
            known: RwLock::new(Vec::new()),
        }
    }

    /// Count one under `key`; `labels` names its series the first time it is seen.
    pub fn inc(&self, key: K, labels: impl FnOnce() -> L) {
        let known = crate::sync::read(&self.known)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, counter)| counter.inc())
            .is_some();
        if known {
            return;
        }
        let counter = self.family.get_or_create(&labels()).clone();
        counter.inc();
        let mut handles = crate::sync::write(&self.known);
        if !handles.iter().any(|(k, _)| *k == key) {
            handles.push((key, counter));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        via: &'static str,
        result: &'static str,
    }

    #[test]
    fn handles_count_into_the_registered_series_and_only_seen_keys_appear() {
        let family = Family::<Labels, Counter>::default();
        let mut registry = Registry::default();
        registry.register("lookups", "", family.clone());
        let handles = CounterHandles::new(family.clone());
        let count = |via, result| handles.inc((via, result), || Labels { via, result });

        count("query", "found");
        count("query", "found");
        count("query", "unknown");
        count("metadata", "found");
        // A count made through the family directly lands in the same series.
        family
            .get_or_create(&Labels {
                via: "query",
                result: "found",
            })
            .inc();

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "lookups_total{via=\"query\",result=\"found\"} 3",
            "lookups_total{via=\"query\",result=\"unknown\"} 1",
            "lookups_total{via=\"metadata\",result=\"found\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("rejected"), "{text}");
        assert_eq!(crate::sync::read(&handles.known).len(), 3);
    }
}
