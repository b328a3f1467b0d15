//! livectx — live, per-session user activity for support chatbots.
//!
//! # Layout
//!
//! Activity flows left to right:
//!
//! ```text
//!  Autoplay SSE ──► ingest::sse ──┐                       ┌──► api::retrieval  (Dify /retrieval)
//!                                 │                       ├──► api::mcp, api::rest (/mcp, REST)
//!                                 ├─► ingest::Ingestor ─► session::store ──┤
//!  Autoplay push ─► ingest::webhook┘          │            └──► api::admin      (/healthz /readyz /metrics)
//!                                             └─► session::summarizer (background, never blocks)
//! ```
//!
//! - [`config`]: the command line and environment, parsed once into typed settings.
//! - [`app`]: builds every part from the configuration, binds, runs, shuts down in order.
//! - [`ingest`]: the SSE parser and stream consumer, the webhook receiver, and the payload
//!   handling both share (lenient decoding, debounce, never pooling anonymous traffic).
//! - [`sources`]: each analytics tool's wire format turned into named actions of the common model.
//! - [`session`]: the per-session model and its rules (chunks, rolling summary, bounds), the
//!   storage trait with its in-memory and Redis backends (and the buffer that carries ingestion
//!   through a Redis outage), the "Current User Activity" view, and the background summarizer
//!   (built-in or any OpenAI-compatible LLM).
//! - [`api`]: the HTTP surface: Dify's External Knowledge API with identity resolution and
//!   record scoring, the MCP server and the REST context API for other chatbots, the OpenAPI
//!   document, and operator routes.
//! - [`cluster`]: stream leadership when several replicas share a backend (Redis leases with
//!   fencing tokens).
//! - [`telemetry`]: tracing set-up and the Prometheus metrics of one running server.
//! - [`clock`]: time as Unix seconds, and the human formats records use.
//! - [`demo`]: `livectx demo` and `livectx simulate`: simulated users streamed by a stand-in
//!   Autoplay connector, to see the whole loop on one machine.
//! - [`connect`]: `livectx connect posthog`, which creates the PostHog destination through
//!   PostHog's API.
//! - [`cli`]: what each subcommand does; `main.rs` only calls it.
//! - [`bench`]: `livectx bench <scenario>`, the self-contained benchmarks behind docs/benchmarks.md
//!   (synthetic connector, fake LLM, load generator).
//! - [`shutdown`]: the stop signal (SIGTERM, Ctrl-C) every long-running command waits on.
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
pub mod sync;
pub mod telemetry;
pub mod web;

pub use app::{Application, Overrides, StartupError};
pub use config::ServeConfig;
