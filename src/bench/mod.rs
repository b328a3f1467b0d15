//! `livectx bench <scenario>`: self-contained benchmarks of the real server on loopback.
//!
//! Each scenario starts what it needs — the real [`crate::Application`] (in this process on a
//! runtime of its own, or as a `livectx serve` child), a synthetic SSE connector
//! ([`connector`]) fed by a fast generator ([`workload`]), a fake OpenAI-compatible LLM with a
//! fixed latency ([`llm`]), and the `/retrieval` load generator as a child process
//! ([`loadgen`]) — prints a Markdown table and writes everything it measured to
//! `<out-dir>/<scenario>.json`. docs/benchmarks.md holds one run of each, with how to read them.

pub mod args;
pub mod connector;
pub mod freshness;
pub mod http;
pub mod ingest;
pub mod ingest_posthog;
pub mod llm;
pub mod loadgen;
pub mod memory;
pub mod redis_nodes;
pub mod retrieval;
pub mod server;
pub mod soak;
pub mod stats;
pub mod summarize;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock;
use crate::config::ServeConfig;
pub use args::{BenchArgs, IngestSource};
use stats::Machine;

/// The benchmark scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// /retrieval requests/s and latency at 1, 8, 32 and 128 connections, 10 000 sessions loaded.
    Retrieval,
    /// Events/s from a local SSE stream into the store, built-in summarizer and a 50 ms LLM.
    Ingest,
    /// Frame arrival to visibility in /retrieval (p50/p99) at 1 000 events/s.
    Freshness,
    /// Resident memory per session for 10 000 and 100 000 sessions of 20 actions.
    Memory,
    /// Mixed ingest and retrieval for 10 minutes with stream drops: RSS and latency over time.
    Soak,
    /// 1 000 sessions × 100 actions with a 50 ms LLM: calls, time to settle, nothing lost.
    Summarize,
}

impl Scenario {
    /// The scenario's name (file names, JSON).
    pub fn name(self) -> &'static str {
        match self {
            Self::Retrieval => "retrieval",
            Self::Ingest => "ingest",
            Self::Freshness => "freshness",
            Self::Memory => "memory",
            Self::Soak => "soak",
            Self::Summarize => "summarize",
        }
    }
}

/// A Markdown table of results.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown, with its title as a bold line above.
    pub fn render(&self) -> String {
        let mut out = format!("**{}**\n\n", self.title);
        out.push_str(&format!("| {} |\n", self.headers.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            self.headers.iter().map(|_| "---|").collect::<String>()
        ));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

/// What a scenario produced.
pub struct Outcome {
    /// Everything measured, for the JSON file.
    pub results: Value,
    pub tables: Vec<Table>,
    /// Plain remarks printed under the tables (skipped runs, caveats seen during the run).
    pub notes: Vec<String>,
}

/// Run one scenario, print its tables and write its JSON.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    init_logging();
    let machine = Machine::describe();
    if machine.build == "debug" {
        eprintln!(
            "warning: this is a debug build: its figures say little (use `cargo run --release -- bench ...`)"
        );
    }
    let load_before = stats::load_average();
    let started_at = clock::now();
    let started = Instant::now();
    eprintln!(
        "livectx bench {}: {} CPUs ({}), load average before: {}",
        args.scenario.name(),
        machine.cpus,
        machine.cpu_model,
        load_text(load_before)
    );
    let outcome = match args.scenario {
        Scenario::Retrieval => retrieval::run(&args).await,
        Scenario::Ingest => ingest::run(&args).await,
        Scenario::Freshness => freshness::run(&args).await,
        Scenario::Memory => memory::run(&args).await,
        Scenario::Soak => soak::run(&args).await,
        Scenario::Summarize => summarize::run(&args).await,
    }
    .with_context(|| format!("the {} benchmark failed", args.scenario.name()))?;
    let load_after = stats::load_average();
    println!();
    for table in &outcome.tables {
        println!("{}", table.render());
    }
    for note in &outcome.notes {
        println!("- {note}");
    }
    println!(
        "\nload average before: {}, after: {}",
        load_text(load_before),
        load_text(load_after)
    );
    let document = json!({
        "scenario": args.scenario,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "started_at": clock::format_rfc3339(started_at),
        "elapsed_secs": round(started.elapsed().as_secs_f64(), 1),
        "machine": machine,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "results": outcome.results,
        "tables": outcome.tables.iter().map(Table::render).collect::<Vec<_>>(),
        "notes": outcome.notes,
    });
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let path: PathBuf = args.out_dir.join(format!("{}.json", args.scenario.name()));
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn init_logging() {
    // The in-process server's warnings matter (drops, refusals); its info lines would bury the
    // table. RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn load_text(load: Option<[f64; 3]>) -> String {
    load.map_or_else(
        || "unknown".to_string(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    )
}

/// A server configuration for benchmarks: loopback port 0, defaults otherwise, nothing read
/// from the environment (a developer's OPENAI_API_KEY must not turn a run into a paid one).
pub fn server_config() -> ServeConfig {
    ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServeConfig::default()
    }
}

/// The JSON report a benchmark child process printed last on its stdout (`what` names the
/// child in errors).
pub fn child_report<T: serde::de::DeserializeOwned>(
    output: &std::process::Output,
    what: &str,
) -> anyhow::Result<T> {
    use anyhow::Context;
    anyhow::ensure!(output.status.success(), "{what} failed ({})", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{what} printed no report"))?;
    serde_json::from_str(line).with_context(|| format!("the report of {what} is unreadable"))
}

/// Round to `digits` decimals (for JSON that people read).
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

/// An integer with thin-space thousands separators (`31 250`).
pub fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// How many summaries of one summarizer ended with one outcome (`ok`, `failed`, `stale`,
/// `fallback`), from the server's own counters.
pub fn summary_count(
    state: &crate::api::ApiState,
    summarizer: &'static str,
    outcome: &'static str,
) -> u64 {
    state
        .metrics
        .summaries
        .get_or_create(&crate::telemetry::SummaryLabels {
            summarizer,
            outcome,
        })
        .get()
}

/// Poll `check` every `every` until it returns true or `timeout` passes; false on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(31_250), "31 250");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000_000), "1 000 000");
        assert_eq!(ms(1234.0), "1.23");
        assert_eq!(round(1.2345, 2), 1.23);
    }

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new("T", &["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        assert_eq!(t.render(), "**T**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
