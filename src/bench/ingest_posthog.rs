//! `bench ingest --source posthog`: single-event HTTP POSTs of PostHog's webhook body to
//! `/ingest/{product_id}`, the way PostHog's HTTP Webhook destination delivers (one request per
//! event, the secret in `X-PostHog-Secret`), at 32 keep-alive connections by default.
//!
//! The server runs in this process on its own runtime; the load generator is a child process
//! (`livectx bench-ingest-loadgen`), so the two never share a runtime or a heap. Each connection
//! sends the next event as soon as the previous answer is read (closed loop). Every event has a
//! fresh uuid, so none is deduplicated away, and the events of a few thousand sessions
//! interleave as real traffic does. A 2xx means the event is in the store (group commit), so
//! the latency is the receiver's whole promise. A request counts when it starts in the window
//! and finishes before it ends.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::HttpConn;
use super::redis_nodes::RedisNodes;
use super::server::InProcessServer;
use super::stats::{Latency, median, saturating_nanos};
use super::workload::Rng;
use super::{Outcome, Table, int, ms, round, server_config};
use crate::app::Overrides;
use crate::bench::BenchArgs;
use crate::clock::{self, parse_duration};
use crate::config::ServeConfig;
use crate::telemetry::SourceEventLabels;

const SECRET: &str = "bench-ingest-secret";
const PRODUCT: &str = "bench_prod";
/// Connections when `--connections` is left at its default (the issue's figure).
const DEFAULT_CONNECTIONS: usize = 32;
const DEFAULT_SESSIONS: u64 = 2000;

/// Settings of the hidden `livectx bench-ingest-loadgen`.
#[derive(Debug, Clone, Args)]
pub struct IngestLoadgenArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Sessions the events are spread over.
    #[arg(long, default_value_t = DEFAULT_SESSIONS)]
    pub sessions: u64,
    #[arg(long, default_value = SECRET)]
    pub secret: String,
    #[arg(long, default_value = PRODUCT)]
    pub product: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the ingest load generator prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestLoadgenReport {
    pub connections: usize,
    pub window_secs: f64,
    /// Answered 2xx inside the window.
    pub ok: u64,
    /// Any other status, or a transport error.
    pub errors: u64,
    /// The first non-2xx status seen, for the error message.
    pub first_error: Option<String>,
    pub events_per_sec: f64,
    pub latency: Latency,
    pub cpu_secs: f64,
}

/// The child process's whole job: generate, then print the report as one JSON line.
pub async fn loadgen(args: IngestLoadgenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    let cpu_before = super::stats::process_cpu_ns(std::process::id()).unwrap_or(0);
    let begin = Instant::now();
    let window_start = begin + args.warmup;
    let window_end = window_start + args.duration;
    let tasks: Vec<_> = (0..args.connections)
        .map(|c| {
            let args = args.clone();
            tokio::spawn(async move { connection_loop(&args, c, window_start, window_end).await })
        })
        .collect();
    let (mut ok, mut errors, mut first_error, mut samples) = (0, 0, None, Vec::new());
    for task in tasks {
        let result = task.await.context("a load generator task failed")??;
        ok += result.ok;
        errors += result.errors;
        first_error = first_error.or(result.first_error);
        samples.extend(result.samples);
    }
    let window = args.duration.as_secs_f64();
    let cpu_after = super::stats::process_cpu_ns(std::process::id()).unwrap_or(0);
    let report = IngestLoadgenReport {
        connections: args.connections,
        window_secs: window,
        ok,
        errors,
        first_error,
        events_per_sec: ok as f64 / window,
        latency: Latency::of_nanos(&mut samples),
        cpu_secs: cpu_after.saturating_sub(cpu_before) as f64 / 1e9,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[derive(Default)]
struct TaskResult {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    samples: Vec<u32>,
}

async fn connection_loop(
    args: &IngestLoadgenArgs,
    index: usize,
    window_start: Instant,
    window_end: Instant,
) -> anyhow::Result<TaskResult> {
    let mut rng = Rng::new(args.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    let mut result = TaskResult::default();
    let path = format!("/ingest/{}", args.product);
    let mut conn: Option<HttpConn> = None;
    let mut sent: u64 = 0;
    let mut timestamp = clock::format_rfc3339(clock::now());
    let mut body = String::with_capacity(1024);
    loop {
        let started = Instant::now();
        if started >= window_end {
            break;
        }
        let connection = match conn.as_mut() {
            Some(c) => c,
            None => match HttpConn::connect(args.addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    result.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if sent.is_multiple_of(256) {
            timestamp = clock::format_rfc3339(clock::now());
        }
        let session = rng.below(args.sessions);
        event_body(&mut body, index as u64, sent, session, &timestamp);
        sent += 1;
        let outcome = connection
            .post_json_with(
                &path,
                Bytes::from(body.clone()),
                "x-posthog-secret",
                &args.secret,
            )
            .await;
        let finished = Instant::now();
        let in_window = started >= window_start && finished <= window_end;
        let failure = match &outcome {
            Ok((status, _)) if (200..300).contains(status) => None,
            Ok((status, answer)) => Some(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            )),
            Err(error) => {
                conn = None;
                Some(error.to_string())
            }
        };
        if !in_window {
            continue;
        }
        match failure {
            None => {
                result.ok += 1;
                result.samples.push(saturating_nanos(finished - started));
            }
            Some(error) => {
                result.errors += 1;
                result.first_error.get_or_insert(error);
            }
        }
    }
    Ok(result)
}

/// One event in PostHog's stock webhook body: a click (four in five) or a page view, with a
/// uuid no other request repeats.
pub fn event_body(out: &mut String, connection: u64, sent: u64, session: u64, timestamp: &str) {
    out.clear();
    let uuid = format!(
        "0193{:04x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        connection & 0xFFFF,
        (sent >> 48) & 0xFFFF,
        (sent >> 36) & 0xFFF,
        (sent >> 24) & 0xFFF,
        sent & 0xFFFF_FFFF_FFFF
    );
    let session_id = format!("0193b000-0000-7000-8000-{session:012x}");
    let project = 4000 + session % 500;
    let _ = if sent.is_multiple_of(5) {
        write!(
            out,
            r#"{{"event":{{"uuid":"{uuid}","event":"$pageview","distinct_id":"bench-{session}","timestamp":"{timestamp}","elements_chain":"","properties":{{"$session_id":"{session_id}","$current_url":"https://app.bench.io/projects/{project}/settings?tab=general","$pathname":"/projects/{project}/settings","$host":"app.bench.io","title":"Project settings"}}}},"person":{{"properties":{{"email":"user{session}@bench.example.com"}}}}}}"#
        )
    } else {
        write!(
            out,
            r#"{{"event":{{"uuid":"{uuid}","event":"$autocapture","distinct_id":"bench-{session}","timestamp":"{timestamp}","elements_chain":"button.btn.btn-primary:attr__class=\"btn btn-primary\"attr__type=\"button\"nth-child=\"2\"nth-of-type=\"1\"text=\"Save\";div.actions:attr__class=\"actions\"nth-child=\"3\"nth-of-type=\"2\";form.form:attr__aria-label=\"Project settings\"attr__class=\"form\"nth-child=\"1\"nth-of-type=\"1\";main;body","properties":{{"$session_id":"{session_id}","$current_url":"https://app.bench.io/projects/{project}/settings","$pathname":"/projects/{project}/settings","$host":"app.bench.io","$event_type":"click","$el_text":"Save"}}}},"person":{{"properties":{{"email":"user{session}@bench.example.com"}}}}}}"#
        )
    };
}

/// Run `livectx bench-ingest-loadgen` as a child process of this binary.
pub async fn spawn(args: &IngestLoadgenArgs) -> anyhow::Result<IngestLoadgenReport> {
    let exe = std::env::current_exe().context("cannot find the livectx binary")?;
    let output = tokio::process::Command::new(exe)
        .arg("bench-ingest-loadgen")
        .args(["--addr", &args.addr.to_string()])
        .args(["--connections", &args.connections.to_string()])
        .args(["--warmup", &format!("{}ms", args.warmup.as_millis())])
        .args(["--duration", &format!("{}ms", args.duration.as_millis())])
        .args(["--sessions", &args.sessions.to_string()])
        .args(["--secret", &args.secret])
        .args(["--product", &args.product])
        .args(["--seed", &args.seed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the ingest load generator")?
        .wait_with_output()
        .await?;
    super::child_report(&output, "the ingest load generator")
}

/// The server the events go to: the receivers on, with this group-commit window, on memory
/// or on the Redis at `redis` (keys under `prefix`).
fn server(window: Duration, redis: Option<(&str, &str)>) -> ServeConfig {
    let mut config = ServeConfig {
        ingest_secret: Some(SECRET.to_string()),
        ingest_batch_window: window,
        ..server_config()
    };
    if let Some((url, prefix)) = redis {
        config.redis_url = Some(url.to_string());
        config.redis_prefix = prefix.to_string();
    }
    config
}

/// One measured run, as the table and the JSON report it.
struct Run {
    report: IngestLoadgenReport,
    server_cpu: f64,
}

/// `bench ingest --source posthog`.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Outcome> {
    let connections = if args.connections == [1, 8, 32, 128] {
        vec![DEFAULT_CONNECTIONS]
    } else {
        args.connections.clone()
    };
    let sessions = args.sessions.first().copied().unwrap_or(DEFAULT_SESSIONS);
    let window = args.duration.unwrap_or(Duration::from_secs(10));
    let mut table = Table::new(
        format!(
            "ingest --source posthog: single-event POSTs of PostHog's webhook body to /ingest/{{product_id}}, {} sessions, {} s per run, windows measured alternately",
            int(sessions),
            window.as_secs_f64()
        ),
        &[
            "backend",
            "batch window",
            "connections",
            "run",
            "events/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "chunks/event",
            "server CPU s/s",
            "loadgen CPU s/s",
        ],
    );
    let mut backends: Vec<(&str, Option<&str>)> = vec![("memory", None)];
    if let Some(url) = args.redis_url.as_deref() {
        backends.push(("redis", Some(url)));
    }
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for (backend, url) in backends {
        for &connections in &connections {
            // runs[w] holds the repeats of window w, measured alternately.
            let mut runs: Vec<Vec<Run>> = args.batch_windows.iter().map(|_| Vec::new()).collect();
            for repeat in 0..args.repeat {
                for (w, &batch_window) in args.batch_windows.iter().enumerate() {
                    let prefix = format!(
                        "livectx-bench-ingest-posthog-{}-{}-{repeat}-{w}:",
                        std::process::id(),
                        clock::now() as u64
                    );
                    let nodes = match url {
                        Some(url) => Some(RedisNodes::discover(url).await?),
                        None => None,
                    };
                    let config = server(batch_window, url.map(|u| (u, prefix.as_str())));
                    let server = InProcessServer::start(config, Overrides::default()).await?;
                    let chunks_before = server.state.metrics.chunks_stored.get();
                    let cpu_before = server.cpu_ns();
                    let wall = Instant::now();
                    let report = spawn(&IngestLoadgenArgs {
                        addr: server.addr,
                        connections,
                        warmup: args.warmup,
                        duration: window,
                        sessions,
                        secret: SECRET.to_string(),
                        product: PRODUCT.to_string(),
                        seed: connections as u64 * 10 + u64::from(repeat),
                    })
                    .await?;
                    let wall = wall.elapsed().as_secs_f64();
                    let server_cpu = server.cpu_ns().saturating_sub(cpu_before) as f64 / 1e9 / wall;
                    let chunks = server
                        .state
                        .metrics
                        .chunks_stored
                        .get()
                        .saturating_sub(chunks_before);
                    let events = server
                        .state
                        .metrics
                        .source_events
                        .get_or_create(&SourceEventLabels {
                            source: "posthog",
                            outcome: "stored",
                        })
                        .get();
                    server.stop().await;
                    if let Some(nodes) = &nodes {
                        nodes.delete_under(&prefix).await?;
                    }
                    if let Some(error) = &report.first_error {
                        notes.push(format!(
                            "{backend}, window {}, {connections} connections, run {}: {} errors, the first: {error}",
                            humantime::format_duration(batch_window),
                            repeat + 1,
                            report.errors
                        ));
                    }
                    table.row(vec![
                        backend.to_string(),
                        humantime::format_duration(batch_window).to_string(),
                        connections.to_string(),
                        (repeat + 1).to_string(),
                        int(report.events_per_sec.round() as u64),
                        ms(report.latency.p50_us),
                        ms(report.latency.p99_us),
                        ms(report.latency.p999_us),
                        int(report.errors),
                        format!("{:.2}", chunks as f64 / events.max(1) as f64),
                        format!("{server_cpu:.2}"),
                        format!("{:.2}", report.cpu_secs / wall),
                    ]);
                    runs[w].push(Run { report, server_cpu });
                }
            }
            for (w, runs) in runs.iter().enumerate() {
                let batch_window = args.batch_windows[w];
                let rates: Vec<f64> = runs.iter().map(|r| r.report.events_per_sec).collect();
                let p99s: Vec<f64> = runs.iter().map(|r| r.report.latency.p99_us).collect();
                let median_rate = median(&rates);
                let median_p99 = median(&p99s);
                if runs.len() > 1 {
                    let mut row = vec![
                        backend.to_string(),
                        humantime::format_duration(batch_window).to_string(),
                        connections.to_string(),
                        "median".to_string(),
                        int(median_rate.round() as u64),
                        "".to_string(),
                        ms(median_p99),
                    ];
                    row.resize(12, String::new());
                    table.row(row);
                }
                results.push(json!({
                    "backend": backend,
                    "batch_window_ms": batch_window.as_secs_f64() * 1e3,
                    "connections": connections,
                    "median_events_per_sec": round(median_rate, 0),
                    "median_p99_us": round(median_p99, 1),
                    "runs": runs.iter().map(|r| json!({"report": r.report, "server_cpu_per_sec": round(r.server_cpu, 3)})).collect::<Vec<_>>(),
                }));
            }
        }
    }
    notes.push("each request is one PostHog event (4 clicks in 5, else a page view) with a fresh uuid, over keep-alive HTTP/1.1; a 2xx means the event is stored (group commit); goal ≥ 20 000 events/s with p99 < 10 ms at 32 connections".to_string());
    notes.push("chunks/event: chunks written per stored event, warm-up included (below 1: events of a session that arrived during its write shared the next chunk)".to_string());
    notes.push("server CPU = the server runtime's threads; the load generator is a child process on the same machine, its CPU shown beside".to_string());
    Ok(Outcome {
        results: json!({ "source": "posthog", "sessions": sessions, "window_secs": window.as_secs_f64(), "levels": results }),
        tables: vec![table],
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_decode_as_posthog_and_never_repeat_a_uuid() {
        let privacy = crate::sources::Privacy::default();
        let mut body = String::new();
        let mut uuids = std::collections::HashSet::new();
        for sent in 0..10 {
            event_body(&mut body, 3, sent, 42, "2026-07-29T10:00:00.000Z");
            let decoded = crate::sources::posthog::decode(body.as_bytes(), PRODUCT, &privacy)
                .unwrap_or_else(|e| panic!("{e:?}: {body}"));
            assert!(decoded.refused.is_empty(), "{body}");
            let event = &decoded.events[0];
            assert_eq!(
                event.session_id.as_deref(),
                Some("0193b000-0000-7000-8000-00000000002a")
            );
            assert!(event.action.is_some(), "{body}");
            assert!(uuids.insert(event.dedupe_key.clone()));
        }
    }
}
