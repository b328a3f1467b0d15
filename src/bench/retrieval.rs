//! `bench retrieval`: `/retrieval` requests per second and latency with many sessions loaded.
//!
//! The server runs in this process (its own runtime); the sessions are loaded through the real
//! ingestion path (payload decoding, the store, the background built-in summarizer), then the
//! load generator — a separate process — asks for random sessions, identified on the query's
//! first line as a Dify Template node does, with `top_k` 5, at each connection count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::http::{self, HttpConn};
use super::loadgen::{self, IdentityKind, LoadgenArgs};
use super::redis_nodes::{self, RedisNodes};
use super::server::{BaselineServer, InProcessServer};
use super::stats;
use super::workload::{self, Identity, Rng, Walker};
use super::{Outcome, Table, int, ms, round, server_config};
use crate::api::ApiState;
use crate::app::{Overrides, store_config};
use crate::bench::BenchArgs;
use crate::clock;
use crate::config::ServeConfig;
use crate::ingest::{Channel, Ingested, Ingestor, Source};
use crate::session::memory::MemoryStore;
use crate::session::model::SessionId;
use crate::session::store::SessionStore;

/// The operator console key of the "console on" server (it is never logged in to: what is
/// measured is the cost of having the console, its lookup log and its routes, on `/retrieval`).
const CONSOLE_KEY: &str = "livectx-bench-console-key-0123456789";

/// Run tag of the session ids this scenario loads.
const RUN_TAG: u16 = 0x0a01;

/// What was loaded before measuring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub sessions: u64,
    pub frames: u64,
    pub actions: u64,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Outcome> {
    let sessions = args.sessions.first().copied().unwrap_or(10_000);
    let window = args.duration.unwrap_or(Duration::from_secs(10));
    let mut table = Table::new(
        format!(
            "retrieval: POST /retrieval, {} sessions loaded, top_k 5, {}s per level after {}s warm-up",
            int(sessions),
            window.as_secs(),
            args.warmup.as_secs()
        ),
        &[
            "backend",
            "server",
            "connections",
            "req/s",
            "vs baseline",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "server CPU",
            "loadgen CPU",
            "other processes",
        ],
    );
    let mut notes = Vec::new();
    let mut results = Vec::new();
    results.push(run_backend("memory", None, None, args, sessions, window, &mut table).await?);
    let mut nodes_table = Table::new(
        "retrieval: Redis work per master while measuring (warm-ups included), keys after loading",
        &redis_nodes::HEADERS,
    );
    for (backend, url) in [
        ("redis", args.redis_url.as_deref()),
        ("redis cluster", args.redis_cluster_url.as_deref()),
    ] {
        let Some(url) = url else {
            notes.push(format!(
                "no {backend} URL given: {backend} was not measured"
            ));
            continue;
        };
        let prefix = format!(
            "livectx-bench-{}-{}:",
            std::process::id(),
            clock::now() as u64
        );
        let connection = crate::session::redis::connect(url)
            .await
            .with_context(|| format!("cannot connect to the {backend} URL"))?;
        // The plain Redis store (no outage buffer): what is measured is Redis itself.
        let store: Arc<dyn SessionStore> = Arc::new(crate::session::redis::RedisStore::new(
            connection,
            prefix.clone(),
            store_config(&server_config()),
        ));
        let nodes = RedisNodes::discover(url).await?;
        let outcome = run_backend(
            backend,
            Some(store),
            Some((&nodes, &prefix)),
            args,
            sessions,
            window,
            &mut table,
        )
        .await;
        match nodes.delete_under(&prefix).await {
            Ok(n) => notes.push(format!(
                "{backend}: deleted the {n} benchmark keys under {prefix}"
            )),
            Err(e) => notes.push(format!(
                "{backend}: could not delete the benchmark keys under {prefix}: {e}"
            )),
        }
        let outcome = outcome?;
        nodes_table
            .rows
            .extend(redis_nodes::rows(backend, &outcome["redis_masters"]));
        results.push(outcome);
    }
    notes.push(
        "each level ran --repeat times per server, alternating livectx, livectx with the console on, and the baseline; \
         the row is the run with the median req/s (range in brackets); \"vs baseline\" is the ratio of the medians \
         (and the median of the ratios within each alternation); the baseline is a bare axum server in this process \
         that reads each body and answers a fixed typical livectx answer (same bytes); \
         \"other processes\" is the CPU the rest of the machine used meanwhile (other agents' builds and tests)"
            .to_string(),
    );
    notes.push(
        "req/s counts answered requests (200 with records) that started and finished inside the window; \
         latency is measured by the load generator (a separate process) from send to the last body byte; \
         server and load-generator CPU are shares of one core (200 % = both cores)"
            .to_string(),
    );
    let mut tables = vec![table];
    if !nodes_table.rows.is_empty() {
        tables.push(nodes_table);
        notes.push(
            "Redis work per master = INFO commandstats calls and used_cpu_user+sys, after minus before the measuring phase, per answered request (the shared Redis may serve others meanwhile)"
                .to_string(),
        );
    }
    Ok(Outcome {
        results: json!({ "sessions": sessions, "window_secs": window.as_secs_f64(), "backends": results }),
        tables,
        notes,
    })
}

/// One measured run of one connection level.
struct LevelRun {
    report: loadgen::LoadgenReport,
    /// CPU used over the run's wall time, in cores (1.0 = one core busy).
    server_cpu: f64,
    loadgen_cpu: f64,
    /// CPU every other process on the machine used meanwhile.
    other_cpu: f64,
}

/// The servers one backend is measured on, alternately: livectx as configured by default,
/// livectx with the operator console on (`LIVECTX_CONSOLE_KEY` set), and the bare baseline
/// that answers the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Livectx,
    Console,
    Baseline,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Livectx, Variant::Console, Variant::Baseline];

    fn name(self) -> &'static str {
        match self {
            Variant::Livectx => "livectx",
            Variant::Console => "livectx, console on",
            Variant::Baseline => "baseline (bare axum, same bytes)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Variant::Livectx => "livectx",
            Variant::Console => "livectx_console",
            Variant::Baseline => "baseline",
        }
    }
}

/// A server the load generator can be pointed at.
struct Target<'a> {
    addr: SocketAddr,
    cpu_ns: &'a (dyn Fn() -> u64 + Sync),
}

async fn measure_level(
    target: &Target<'_>,
    args: &BenchArgs,
    sessions: u64,
    window: Duration,
    connections: usize,
    repeat: u32,
) -> anyhow::Result<LevelRun> {
    let cpu_before = (target.cpu_ns)();
    let busy_before = stats::machine_busy_ns().unwrap_or(0);
    let own_before = stats::process_cpu_ns(std::process::id()).unwrap_or(0);
    let wall = Instant::now();
    let report = loadgen::spawn(&LoadgenArgs {
        addr: target.addr,
        connections,
        warmup: args.warmup,
        duration: window,
        identities: sessions,
        identity: IdentityKind::Session,
        run_tag: RUN_TAG,
        top_k: 5,
        rate: 0.0,
        interval: Duration::ZERO,
        seed: connections as u64 * 10 + u64::from(repeat),
    })
    .await?;
    let wall = wall.elapsed().as_secs_f64();
    let busy = stats::machine_busy_ns()
        .unwrap_or(0)
        .saturating_sub(busy_before) as f64
        / 1e9;
    let own = stats::process_cpu_ns(std::process::id())
        .unwrap_or(0)
        .saturating_sub(own_before) as f64
        / 1e9;
    let server_cpu = (target.cpu_ns)().saturating_sub(cpu_before) as f64 / 1e9 / wall;
    let loadgen_cpu = report.cpu_secs / wall;
    // The load generator counts its own CPU from its start; it ran for about the whole wall
    // time, so this is a close estimate of everything else.
    let other_cpu = ((busy - own) / wall - loadgen_cpu).max(0.0);
    Ok(LevelRun {
        report,
        server_cpu,
        loadgen_cpu,
        other_cpu,
    })
}

/// A typical livectx answer: the median-sized body of `/retrieval` for the first sessions
/// loaded, as the load generator asks for them. The baseline sends exactly these bytes.
async fn typical_answer(addr: SocketAddr, sessions: u64) -> anyhow::Result<Bytes> {
    let mut conn = HttpConn::connect(addr).await?;
    let mut bodies = Vec::new();
    for i in 0..sessions.min(51) {
        let body = http::retrieval_body(
            &workload::session_id(RUN_TAG, i),
            workload::QUESTIONS[i as usize % workload::QUESTIONS.len()],
            5,
        );
        let (status, answer) = conn.post_json("/retrieval", body).await?;
        anyhow::ensure!(
            status == 200,
            "livectx answered {status} to a sample request"
        );
        if http::has_records(&answer) {
            bodies.push(answer);
        }
    }
    bodies.sort_by_key(Bytes::len);
    bodies
        .get(bodies.len() / 2)
        .cloned()
        .context("no sample request found a session to answer with")
}

/// The median of some values (the upper one of an even count); 0 when there are none.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn run_backend(
    backend: &str,
    store: Option<Arc<dyn SessionStore>>,
    redis: Option<(&RedisNodes, &str)>,
    args: &BenchArgs,
    sessions: u64,
    window: Duration,
    table: &mut Table,
) -> anyhow::Result<Value> {
    // Both livectx servers share one store: what is loaded once is measured on both.
    let store = store.unwrap_or_else(|| {
        Arc::new(MemoryStore::new(store_config(&server_config()))) as Arc<dyn SessionStore>
    });
    let server = InProcessServer::start(
        server_config(),
        Overrides {
            store: Some(Arc::clone(&store)),
            ..Overrides::default()
        },
    )
    .await?;
    let console = InProcessServer::start(
        ServeConfig {
            console_key: Some(CONSOLE_KEY.to_string()),
            ..server_config()
        },
        Overrides {
            store: Some(Arc::clone(&store)),
            ..Overrides::default()
        },
    )
    .await?;
    eprintln!("[{backend}] loading {} sessions…", int(sessions));
    let started = Instant::now();
    let loaded = load_sessions(&server.ingestor, RUN_TAG, sessions, clock::now()).await?;
    let ids: Vec<SessionId> = (0..sessions)
        .filter_map(|i| SessionId::parse(&workload::session_id(RUN_TAG, i)).ok())
        .collect();
    let threshold = server_config().summary_threshold as usize;
    let settled =
        super::summarize::wait_settled(&server.state, &ids, threshold, Duration::from_secs(300))
            .await?;
    let dataset = describe(&server.state, &ids).await?;
    eprintln!(
        "[{backend}] loaded in {:.1}s, summaries settled after {:.1}s: {dataset}",
        started.elapsed().as_secs_f64(),
        settled.as_secs_f64()
    );
    let answer = typical_answer(server.addr, sessions).await?;
    let answer_bytes = answer.len();
    let baseline = BaselineServer::start(answer).await?;
    let redis_before = match redis {
        Some((nodes, prefix)) => Some((nodes.counters().await?, nodes.keys_under(prefix).await?)),
        None => None,
    };
    let server_cpu = || server.cpu_ns();
    let console_cpu = || console.cpu_ns();
    let baseline_cpu = || baseline.cpu_ns();
    let target = |variant: Variant| match variant {
        Variant::Livectx => Target {
            addr: server.addr,
            cpu_ns: &server_cpu,
        },
        Variant::Console => Target {
            addr: console.addr,
            cpu_ns: &console_cpu,
        },
        Variant::Baseline => Target {
            addr: baseline.addr,
            cpu_ns: &baseline_cpu,
        },
    };
    let mut answered = 0u64;
    let mut levels = Vec::new();
    for &connections in &args.connections {
        // Alternate: livectx, livectx with the console, baseline, and again, so that whatever
        // else loads the machine meanwhile weighs on all three alike.
        let mut runs: Vec<(Variant, Vec<LevelRun>)> =
            Variant::ALL.iter().map(|v| (*v, Vec::new())).collect();
        for repeat in 0..args.repeat {
            for (variant, variant_runs) in runs.iter_mut() {
                let run = measure_level(
                    &target(*variant),
                    args,
                    sessions,
                    window,
                    connections,
                    repeat,
                )
                .await?;
                eprintln!(
                    "[{backend}] {connections:>3} connections, {}: {:.0} req/s, p50 {} ms, p99 {} ms (other processes: {:.0} % CPU)",
                    variant.name(),
                    run.report.requests_per_sec,
                    ms(run.report.latency.p50_us),
                    ms(run.report.latency.p99_us),
                    run.other_cpu * 100.0
                );
                if *variant != Variant::Baseline {
                    answered += run.report.ok + run.report.empty;
                }
                variant_runs.push(run);
            }
        }
        let medians: Vec<f64> = runs
            .iter()
            .map(|(_, r)| {
                median(
                    &mut r
                        .iter()
                        .map(|r| r.report.requests_per_sec)
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let baseline_median = medians[2].max(f64::MIN_POSITIVE);
        // The ratio within each alternation, too: the machine's load changes between them.
        let mut paired: Vec<Vec<f64>> = vec![Vec::new(); 2];
        for repeat in 0..args.repeat as usize {
            let base = runs[2].1[repeat]
                .report
                .requests_per_sec
                .max(f64::MIN_POSITIVE);
            for (v, ratios) in paired.iter_mut().enumerate() {
                ratios.push(runs[v].1[repeat].report.requests_per_sec / base);
            }
        }
        let mut variants_json = serde_json::Map::new();
        for (v, (variant, variant_runs)) in runs.iter_mut().enumerate() {
            variant_runs.sort_by(|a, b| {
                a.report
                    .requests_per_sec
                    .total_cmp(&b.report.requests_per_sec)
            });
            let median_run = &variant_runs[variant_runs.len() / 2];
            let l = &median_run.report.latency;
            let range = if variant_runs.len() > 1 {
                format!(
                    " ({}–{})",
                    int(variant_runs[0].report.requests_per_sec.round() as u64),
                    int(variant_runs[variant_runs.len() - 1]
                        .report
                        .requests_per_sec
                        .round() as u64)
                )
            } else {
                String::new()
            };
            let ratio = if *variant == Variant::Baseline {
                "1".to_string()
            } else {
                format!(
                    "{:.0} % (per run {:.0} %)",
                    medians[v] / baseline_median * 100.0,
                    median(&mut paired[v].clone()) * 100.0
                )
            };
            table.row(vec![
                backend.to_string(),
                variant.name().to_string(),
                connections.to_string(),
                format!(
                    "{}{range}",
                    int(median_run.report.requests_per_sec.round() as u64)
                ),
                ratio,
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us),
                format!(
                    "{} + {} empty",
                    median_run.report.errors, median_run.report.empty
                ),
                format!("{:.0} %", median_run.server_cpu * 100.0),
                format!("{:.0} %", median_run.loadgen_cpu * 100.0),
                format!("{:.0} %", median_run.other_cpu * 100.0),
            ]);
            variants_json.insert(
                variant.key().to_string(),
                json!({
                    "median_requests_per_sec": round(medians[v], 1),
                    "ratio_to_baseline": (*variant != Variant::Baseline)
                        .then(|| round(medians[v] / baseline_median, 4)),
                    "median_paired_ratio_to_baseline": (*variant != Variant::Baseline)
                        .then(|| round(median(&mut paired[v].clone()), 4)),
                    "median_run": variant_runs.len() / 2,
                    "runs": variant_runs.iter().map(|r| json!({
                        "report": r.report,
                        "server_cpu_share": round(r.server_cpu, 3),
                        "loadgen_cpu_share": round(r.loadgen_cpu, 3),
                        "other_processes_cpu_share": round(r.other_cpu, 3),
                    })).collect::<Vec<_>>(),
                }),
            );
        }
        levels.push(json!({
            "connections": connections,
            "variants": variants_json,
        }));
    }
    let redis_masters = match (redis, redis_before) {
        (Some((nodes, _)), Some((before, keys))) => {
            let after = nodes.counters().await?;
            Some(redis_nodes::report(&before, &after, &keys, answered))
        }
        _ => None,
    };
    drop(baseline);
    console.stop().await;
    server.stop().await;
    Ok(json!({
        "backend": backend,
        "redis_masters": redis_masters,
        "loaded": {"sessions": loaded.sessions, "frames": loaded.frames, "actions": loaded.actions},
        "dataset": dataset,
        "answer_bytes": answer_bytes,
        "summaries_settled_secs": round(settled.as_secs_f64(), 2),
        "levels": levels,
    }))
}

/// Load `count` realistic sessions through the real ingestion path: 14–26 actions each (20 on
/// average) in 3–5 batches, an email and a user id, last active within the past 30 minutes
/// (a third within the activity window). Sessions reaching the summary threshold get
/// summarised in the background, as in production.
pub async fn load_sessions(
    ingestor: &Ingestor,
    run: u16,
    count: u64,
    now: f64,
) -> anyhow::Result<Loaded> {
    let totals = std::sync::Mutex::new(Loaded::default());
    let failures = std::sync::atomic::AtomicU64::new(0);
    futures_util::stream::iter(0..count)
        .for_each_concurrent(64, |i| {
            let totals = &totals;
            let failures = &failures;
            async move {
                let mut rng = Rng::new(u64::from(run) << 48 | i);
                let actions = 14 + rng.below(13) as usize;
                let batches = 3 + rng.below(3) as usize;
                let idle = if rng.chance(0.33) {
                    rng.below(100) as f64
                } else {
                    rng.below(1800) as f64
                };
                let gap = 8.0;
                let mut walker = Walker::new(i, now - idle - actions as f64 * gap);
                let who = Identity::new(run, i, i);
                let mut index = 0i64;
                let mut json = String::with_capacity(4096);
                for b in 0..batches {
                    let take = actions / batches + usize::from(b < actions % batches);
                    let batch: Vec<_> = (0..take).map(|_| walker.next_action(gap)).collect();
                    json.clear();
                    workload::write_payload_from(&mut json, &who, &batch, index, walker.clock());
                    index += take as i64;
                    let outcome = ingestor
                        .ingest_json(
                            Source::Sse,
                            json.as_bytes(),
                            Channel {
                                product_id: Some(workload::PRODUCT),
                                fence: None,
                            },
                        )
                        .await;
                    if outcome != Ingested::Stored {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let mut t = totals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                t.sessions += 1;
                t.frames += batches as u64;
                t.actions += actions as u64;
            }
        })
        .await;
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} frames were not stored while loading");
    Ok(totals
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// What the loaded sessions look like after summarization (for the record).
async fn describe(state: &ApiState, ids: &[SessionId]) -> anyhow::Result<Value> {
    let now = clock::now();
    let (mut present, mut chunks, mut raw, mut summarized) = (0u64, 0u64, 0u64, 0u64);
    for id in ids {
        if let Some(session) = state.store.session(id, now).await? {
            present += 1;
            chunks += session.chunks().len() as u64;
            raw += session.raw_actions() as u64;
            summarized += u64::from(session.summary().is_some());
        }
    }
    let per = |n: u64| round(n as f64 / present.max(1) as f64, 2);
    Ok(json!({
        "sessions_present": present,
        "raw_chunks_per_session": per(chunks),
        "raw_actions_per_session": per(raw),
        "share_with_summary": per(summarized),
    }))
}
