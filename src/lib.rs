//! livectx — live, per-session user activity for support chatbots.
//!
//! # Layout
//!
//! Activity flows left to right:
//!
//! ```text
//!  Autoplay SSE ───────► ingest::sse ──────┐   (wire formats decoded by sources::*)
//!  Autoplay push ──────► ingest::webhook ──┤
//!  PostHog, Amplitude,                     ├─► ingest::Ingestor ─► session::store ─┐
//!  Segment ────────────► ingest::receivers ┤                          │            │
//!  Autoplay pull API ◄── ingest::pull ─────┘   session::summarizer ◄──┘            │
//!                                              (background, never blocks)          │
//!      ┌───────────────────────────────────────────────────────────────────────────┘
//!      └─► render::{activity, records} ─► api::retrieval        (Dify /retrieval)
//!                                      ├► api::mcp, api::rest  (/mcp, REST)
//!                                      └► api::admin           (/healthz /readyz /metrics)
//! ```
//!
//! ## Layers
//!
//! Data flows one way, sources → ingest → session → render → api, and imports point toward the
//! session core: the input side (`sources`, `ingest`) and the output side (`render`, `api`) each
//! build on `session` and the support modules, and never on each other; `cluster` (stream
//! leadership) sits between the store and the stream consumers that take leases. The composition
//! roots at the top wire everything. A module may import its own layer and the layers its row
//! names, all of them lower in the table, and the top-level modules (and the submodules of each)
//! import each other without cycles. `cargo test --test api layers::` reads this table and checks
//! every `crate::`/`super::` path in `src/` against it.
//!
//! | layer   | modules                                         | may use                             |
//! |---------|-------------------------------------------------|-------------------------------------|
//! | roots   | `app` `cli` `console` `demo` `bench` `connect`  | every layer below                   |
//! | config  | `config`                                        | every layer below                   |
//! | api     | `api`                                           | render, session, support, base      |
//! | render  | `render`                                        | session, support, base              |
//! | ingest  | `ingest`                                        | cluster, sources, session, support, base |
//! | cluster | `cluster`                                       | session, support, base              |
//! | sources | `sources`                                       | session, support, base              |
//! | session | `session`                                       | support, base                       |
//! | support | `telemetry` `web` `diagnostics` `stream_status` | base                                |
//! | base    | `clock` `sync` `shutdown`                       | —                                   |
//!
//! ## Modules
//!
//! - [`config`]: the command line and environment, parsed once into typed settings.
//! - [`app`]: builds every part from the configuration, binds, runs, shuts down in order.
//! - [`ingest`]: the stream consumer, the webhook and analytics receivers (mounted by the app
//!   with their own narrow states), the Autoplay pull source, and the path they all share into
//!   the store (debounce, deduplication, never pooling anonymous traffic).
//! - [`sources`]: each analytics tool's wire format turned into named actions of the common model.
//! - [`session`]: the per-session model and its rules (chunks, rolling summary, bounds), the
//!   storage trait with its in-memory and Redis backends (the Redis one with a read cache kept
//!   true by `CLIENT TRACKING`, and the buffer that carries ingestion through a Redis outage),
//!   and the background summarizer (built-in or any OpenAI-compatible LLM).
//! - [`render`]: what the APIs answer, rendered from a session: the "Current User Activity"
//!   view and the scored records, and the `/retrieval` answer prepared once per session
//!   snapshot (with a word index to score questions by).
//! - [`api`]: the HTTP surface: Dify's External Knowledge API with identity resolution and
//!   record scoring, the MCP server and the REST context API for other chatbots, the OpenAPI
//!   document, operator routes, and the one API-key check they share (`api::auth`).
//! - [`web`]: HTTP plumbing below both the APIs and the receivers: the JSON error type, body
//!   limits, bearer and HMAC helpers, API keys, and the one route guard (metrics, the per-IP
//!   rate limit, the request timeout).
//! - [`cluster`]: stream leadership when several replicas share a backend (Redis leases with
//!   fencing tokens).
//! - [`telemetry`]: tracing set-up and the Prometheus metrics of one running server (with
//!   kept counter handles, so counting a request allocates and hashes nothing).
//! - [`clock`]: time as Unix seconds, and the human formats records use.
//! - [`demo`]: `livectx demo` and `livectx simulate`: simulated users streamed by a stand-in
//!   Autoplay connector, to see the whole loop on one machine.
//! - [`connect`]: `livectx connect posthog`, which creates the PostHog destination through
//!   PostHog's API.
//! - [`cli`]: what each subcommand does; `main.rs` only calls it.
//! - [`bench`]: `livectx bench <scenario>`, the self-contained benchmarks behind docs/benchmarks.md
//!   (synthetic connector, fake LLM, load generator).
//! - [`shutdown`]: the stop signal (SIGTERM, Ctrl-C) every long-running command waits on.
//! - [`stream_status`]: the live state of each stream, written by ingest, read by `/readyz` and
//!   the console.
//! - [`sync`]: locking that survives a panic elsewhere.
//! - [`diagnostics`]: bounded evidence the operator console reads (recent lookups, refused
//!   payload samples, events per minute), recorded by ingest and the APIs.
//! - [`console`]: the operator console at `/console` (server-rendered HTML), mounted by [`app`].

pub mod api;
pub mod app;
#[cfg(feature = "tools")]
pub mod bench;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod console;
#[cfg(feature = "tools")]
pub mod demo;
pub mod diagnostics;
pub mod ingest;
pub mod render;
pub mod session;
pub mod shutdown;
pub mod sources;
pub mod stream_status;
pub mod sync;
pub mod telemetry;
pub mod web;

pub use app::{Application, Overrides, StartupError};
pub use config::ServeConfig;
