//! The arguments of `livectx bench`, kept beside the benchmarks rather than in the server's
//! configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::clock::parse_duration;

/// The sources `bench ingest` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngestSource {
    /// Autoplay's SSE stream.
    Autoplay,
    /// PostHog's HTTP Webhook destination, one event per request.
    Posthog,
}

/// Settings of `livectx bench`. Scenario-specific defaults are noted per option.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: crate::bench::Scenario,

    /// Directory for the JSON results (`<dir>/<scenario>.json`).
    #[arg(long, default_value = "bench-results")]
    pub out_dir: PathBuf,

    /// Measuring window: per connection level for retrieval (default 10s), the probing window
    /// for freshness (20s), the whole run for soak (10m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Warm-up before each measuring window (retrieval, freshness).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Sessions (comma-separated for memory): retrieval 10000, memory 10000,100000,
    /// freshness 1000, soak 5000 people, summarize 1000.
    #[arg(long, value_delimiter = ',')]
    pub sessions: Vec<u64>,

    /// Load-generator connections for retrieval.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub connections: Vec<usize>,

    /// Runs of each retrieval level; the table shows the run with the median requests/s.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub repeat: u32,

    /// SSE frames the ingest scenario sends.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,

    /// Where the ingest scenario's events come from: `autoplay`, SSE frames from a local
    /// stream, or `posthog`, single-event HTTP POSTs of PostHog's webhook body to
    /// /ingest/{product_id} (32 connections unless --connections is given).
    #[arg(long, value_enum, default_value = "autoplay")]
    pub source: IngestSource,

    /// `ingest --source posthog`: the group-commit windows (`LIVECTX_INGEST_BATCH_WINDOW`) to
    /// compare, measured alternately in one run (e.g. `0ms,5ms`).
    #[arg(long, value_delimiter = ',', default_value = "0ms", value_parser = parse_duration)]
    pub batch_windows: Vec<Duration>,

    /// Actions in each ingest frame.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub actions_per_frame: u64,

    /// Frames per second: freshness 1000, soak 1000, summarize 2000.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Answer time of the fake LLM.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub llm_latency: Duration,

    /// Also benchmark retrieval and ingest on this Redis (keys under a unique prefix, deleted
    /// afterwards).
    #[arg(long, env = "LIVECTX_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Also benchmark retrieval and ingest on this Redis Cluster (`redis+cluster://h1:7000,…`;
    /// keys under a unique prefix, deleted afterwards), side by side with `--redis-url`, with
    /// the commands, Redis CPU and keys of each master.
    #[arg(long, env = "LIVECTX_BENCH_REDIS_CLUSTER_URL", hide_env_values = true)]
    pub redis_cluster_url: Option<String>,
}
