//! `bench ingest`: how fast frames from a local SSE stream reach the store, with the retrieval
//! side idle and summarization on (the built-in summarizer, then a 50 ms fake LLM).
//!
//! The whole stream is rendered before the clock starts and written in 64 KiB pieces, so the
//! generator costs little more than the socket writes. The clock runs from the first byte
//! handed to the connection until the server's own counter of stored actions reaches the total
//! sent. The queue between the socket reader and processing is sized to hold the whole run,
//! so the figure is what processing sustains (with the default 8 192-frame queue a longer burst
//! above that rate would be dropped and counted, never silently lost); drops are reported.
//! CPU time is the server runtime's threads only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::connector::SyntheticConnector;
use super::llm::FakeLlm;
use super::redis_nodes::{self, RedisNodes};
use super::server::InProcessServer;
use super::workload::{self, Identity, Rng, Walker};
use super::{Outcome, Table, int, round, server_config, summary_count, wait_until};
use crate::app::Overrides;
use crate::bench::BenchArgs;
use crate::clock;
use crate::telemetry::StreamLabels;

const RUN_TAG: u16 = 0x1a01;
/// Frames each session receives on average: sessions cross the summary threshold (20 actions)
/// during the run, and most stay under the 50-chunk cap even when the LLM lags behind.
const FRAMES_PER_SESSION: u64 = 40;
/// Size of each write to the stream.
const PIECE: usize = 64 * 1024;

/// The pre-rendered stream.
struct Stream {
    pieces: Arc<Vec<Bytes>>,
    frames: u64,
    actions: u64,
    bytes: u64,
    sessions: u64,
}

fn render(events: u64, actions_per_frame: usize) -> Stream {
    let sessions = (events / FRAMES_PER_SESSION).max(1);
    let base = clock::now() - 3600.0;
    let mut walkers: Vec<Walker> = (0..sessions).map(|s| Walker::new(s, base)).collect();
    let who: Vec<Identity> = (0..sessions)
        .map(|s| Identity::new(RUN_TAG, s, s))
        .collect();
    let mut rng = Rng::new(7);
    let mut pieces = Vec::new();
    let mut piece = String::with_capacity(PIECE + 8192);
    let mut bytes = 0u64;
    let mut actions = Vec::with_capacity(actions_per_frame);
    for _ in 0..events {
        let s = rng.below(sessions) as usize;
        actions.clear();
        actions.extend((0..actions_per_frame).map(|_| walkers[s].next_action(2.0)));
        let first_index = walkers[s].next_index;
        walkers[s].next_index += actions_per_frame as i64;
        piece.push_str("data: ");
        workload::write_payload_from(
            &mut piece,
            &who[s],
            &actions,
            first_index,
            walkers[s].clock(),
        );
        piece.push_str("\n\n");
        if piece.len() >= PIECE {
            bytes += piece.len() as u64;
            pieces.push(Bytes::from(std::mem::replace(
                &mut piece,
                String::with_capacity(PIECE + 8192),
            )));
        }
    }
    if !piece.is_empty() {
        bytes += piece.len() as u64;
        pieces.push(Bytes::from(piece));
    }
    Stream {
        pieces: Arc::new(pieces),
        frames: events,
        actions: events * actions_per_frame as u64,
        bytes,
        sessions,
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Outcome> {
    if args.source == crate::bench::IngestSource::Posthog {
        return super::ingest_posthog::run(args).await;
    }
    let per_frame = args.actions_per_frame as usize;
    eprintln!(
        "ingest: rendering {} frames of {per_frame} action(s)…",
        int(args.events)
    );
    let stream = render(args.events, per_frame);
    let mut table = Table::new(
        format!(
            "ingest: {} SSE frames ({} action(s) each, {:.0} MB, {} sessions) from a local stream into the store, retrieval idle",
            int(stream.frames),
            per_frame,
            stream.bytes as f64 / 1e6,
            int(stream.sessions)
        ),
        &[
            "summarizer",
            "events/s",
            "actions/s",
            "MB/s",
            "elapsed s",
            "server CPU s",
            "CPU µs/event",
            "dropped",
            "summaries in window (built-in / LLM / cap folds)",
        ],
    );
    let mut results = Vec::new();
    for llm in [false, true] {
        let result = run_once(args, &stream, llm, None, &mut table).await?;
        results.push(result);
    }
    // The same stream on one Redis and on a cluster (built-in summarizer), side by side, with
    // what each Redis master did for it.
    let mut nodes_table = Table::new(
        format!(
            "ingest: Redis work per master for the {} frames",
            int(stream.frames)
        ),
        &redis_nodes::HEADERS,
    );
    let mut notes = Vec::new();
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
        let result = run_once(args, &stream, false, Some((backend, url)), &mut table).await?;
        nodes_table
            .rows
            .extend(redis_nodes::rows(backend, &result["redis_masters"]));
        results.push(result);
    }
    let mut tables = vec![table];
    if !nodes_table.rows.is_empty() {
        tables.push(nodes_table);
        notes.push("Redis work = INFO commandstats calls and used_cpu_user+sys of each master, after minus before the run (anything else using that Redis meanwhile is included); keys = keys under the run's prefix when the stream was stored".to_string());
    }
    Ok(Outcome {
        results: json!({
            "frames": stream.frames,
            "actions_per_frame": per_frame,
            "actions": stream.actions,
            "bytes": stream.bytes,
            "sessions": stream.sessions,
            "runs": results,
        }),
        tables,
        notes: [vec![
            "events = SSE frames, each one `actions` payload in the connector's wire format (per-action session_id, user_id, email, raw and canonical URL); elapsed = first byte written → the server's stored-actions counter reaches the total".to_string(),
            "the ingest queue was sized to the whole run so the figure is the processing capacity; `dropped` counts frames the reader had to drop".to_string(),
            "server CPU = CPU time of the server runtime's threads (reader, processing, summarizer); the generator and fake LLM run on other threads".to_string(),
        ], notes].concat(),
    })
}

async fn run_once(
    args: &BenchArgs,
    stream: &Stream,
    with_llm: bool,
    redis: Option<(&str, &str)>,
    table: &mut Table,
) -> anyhow::Result<Value> {
    let connector = SyntheticConnector::start(64).await?;
    let llm = if with_llm {
        Some(FakeLlm::start(args.llm_latency).await?)
    } else {
        None
    };
    let mut config = server_config();
    config.stream_urls = vec![connector.url()];
    config.ingest_queue = usize::try_from(stream.frames)
        .unwrap_or(usize::MAX)
        .saturating_add(16);
    config.openai_base_url = llm.as_ref().map(FakeLlm::base_url);
    let prefix = format!(
        "livectx-bench-ingest-{}-{}:",
        std::process::id(),
        clock::now() as u64
    );
    let nodes = match redis {
        Some((_, url)) => {
            config.redis_url = Some(url.to_string());
            config.redis_prefix = prefix.clone();
            // Room for the whole run if Redis falls behind (nothing is dropped).
            config.redis_buffer = config.ingest_queue;
            let nodes = RedisNodes::discover(url).await?;
            let before = nodes.counters().await?;
            Some((nodes, before))
        }
        None => None,
    };
    let server = InProcessServer::start(config, Overrides::default()).await?;
    connector.wait_connected(1).await;
    let state = server.state.clone();
    let label = match (with_llm, redis) {
        (true, _) => format!("LLM ({} ms)", args.llm_latency.as_millis()),
        (false, None) => "built-in".to_string(),
        (false, Some((backend, _))) => format!("built-in, {backend}"),
    };
    let summaries_before = summaries(&server);
    let cpu_before = server.cpu_ns();
    let started = Instant::now();
    let pieces = Arc::clone(&stream.pieces);
    let connector = Arc::new(connector);
    let feeder = {
        let connector = Arc::clone(&connector);
        tokio::spawn(async move {
            for piece in pieces.iter() {
                if !connector.send(piece.clone()).await {
                    break;
                }
            }
            Instant::now()
        })
    };
    let dropped = || {
        state
            .metrics
            .ingest_queue_dropped
            .get_or_create(&StreamLabels {
                stream: workload::PRODUCT.to_string(),
            })
            .get()
    };
    let total = stream.actions;
    let per_frame = total / stream.frames.max(1);
    let complete = wait_until(Duration::from_secs(300), Duration::from_millis(1), || {
        let stored = state.metrics.actions_stored.get();
        let lost = dropped() * per_frame;
        // Writes waiting in the outage buffer are not in Redis yet.
        let buffered = state.metrics.redis_buffered.get();
        async move { stored + lost >= total && buffered == 0 }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_ns().saturating_sub(cpu_before) as f64 / 1e9;
    let redis_masters = match &nodes {
        Some((nodes, before)) => {
            let after = nodes.counters().await?;
            let keys = nodes.keys_under(&prefix).await?;
            Some(redis_nodes::report(before, &after, &keys, stream.frames))
        }
        None => None,
    };
    let written_at = feeder.await.ok();
    let stored = state.metrics.actions_stored.get();
    let dropped_frames = dropped();
    let after = summaries(&server);
    let summaries: Vec<u64> = after
        .iter()
        .zip(summaries_before)
        .map(|(a, b)| a - b)
        .collect();
    let llm_calls = llm.as_ref().map(FakeLlm::calls);
    server.stop().await;
    connector.stop();
    if let Some(llm) = &llm {
        llm.stop();
    }
    if let Some((nodes, _)) = &nodes {
        nodes.delete_under(&prefix).await?;
    }
    anyhow::ensure!(
        complete,
        "only {stored} of {total} actions were stored ({dropped_frames} frames dropped)"
    );
    let frames_per_sec = stream.frames as f64 / elapsed;
    eprintln!(
        "ingest [{label}]: {:.0} events/s ({elapsed:.2} s), server CPU {cpu:.2} s",
        frames_per_sec
    );
    table.row(vec![
        label.clone(),
        int(frames_per_sec.round() as u64),
        int((stream.actions as f64 / elapsed).round() as u64),
        format!("{:.0}", stream.bytes as f64 / 1e6 / elapsed),
        format!("{elapsed:.2}"),
        format!("{cpu:.2}"),
        format!("{:.1}", cpu * 1e6 / stream.frames as f64),
        int(dropped_frames),
        format!(
            "{} / {} / {}",
            int(summaries[0]),
            int(summaries[1]),
            int(summaries[2])
        ),
    ]);
    Ok(json!({
        "summarizer": label,
        "elapsed_secs": round(elapsed, 3),
        "stream_written_secs": written_at.map(|t| round((t - started).as_secs_f64(), 3)),
        "events_per_sec": round(frames_per_sec, 0),
        "actions_per_sec": round(stream.actions as f64 / elapsed, 0),
        "server_cpu_secs": round(cpu, 3),
        "server_cpu_us_per_event": round(cpu * 1e6 / stream.frames as f64, 2),
        "stored_actions": stored,
        "dropped_frames": dropped_frames,
        "summaries_in_window": {"builtin": summaries[0], "llm": summaries[1], "cap_folds": summaries[2]},
        "llm_calls": llm_calls,
        "backend": redis.map_or("memory", |(backend, _)| backend),
        "redis_masters": redis_masters,
    }))
}

/// Summaries stored so far: built-in, LLM, and built-in folds at the chunk cap.
fn summaries(server: &InProcessServer) -> [u64; 3] {
    [
        summary_count(&server.state, "builtin", "ok"),
        summary_count(&server.state, "llm", "ok"),
        summary_count(&server.state, "builtin", "fallback"),
    ]
}
