//! The integration tests: one binary, each module a part of the spec, all sharing one copy of
//! the helpers (the real server on a random port over real HTTP, a scriptable connector and
//! LLM, Redis set-up). Run one part with a filter: `cargo test --test api store_suite::`.
//!
//! The Redis tests use `LIVECTX_TEST_REDIS_URL` and the cluster tests
//! `LIVECTX_TEST_REDIS_CLUSTER_URL` (`.ci/redis-cluster.sh start`); without them they print
//! "skipped ..." and return. `tests/security_logs.rs` stays its own binary: it installs the
//! process-global log subscriber.

mod helpers;

mod api_retrieval;
mod autoplay_pull;
mod buffered_store;
mod chaos;
mod config_doc;
mod console;
mod console_browser;
mod demo;
mod doc_links;
mod golden_retrieval;
mod identity_index;
mod ingest_sources;
mod ingest_stream;
mod isolation;
mod layers;
mod mcp;
mod named_actions;
mod operations;
mod readme;
mod redis_cluster;
mod redis_cluster_failover;
mod redis_restart;
mod replica_reads;
mod rest;
mod security;
mod sse_samples;
mod store_suite;
mod summarizer;
mod summary_invariants;
mod webhook;
