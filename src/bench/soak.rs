//! `bench soak`: mixed ingest and retrieval for a long time (10 minutes by default), with the
//! stream cut periodically; resident memory and latency over time, first versus last minute.
//!
//! The server is a `livectx serve` child process, so its RSS is its own. 5 000 people browse
//! (1 000 frames/s of 1–3 actions); each person starts a new session after 30 frames, so
//! sessions keep being created, and old ones leave through the idle expiry (`--session-ttl 2m`)
//! and the session cap (`--max-sessions 8000`): a steady state, which is what "no growth"
//! needs. Summaries go to a 50 ms fake LLM. The stream is cut every tenth of the run; frames
//! produced while livectx is reconnecting are lost, as with the real connector. The load
//! generator (its own process) asks for random people by email at 2 000 requests/s over 8
//! connections and reports latency per interval; RSS and the server's counters are sampled
//! every 5 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::connector::SyntheticConnector;
use super::http::{self, metric_sum};
use super::llm::FakeLlm;
use super::loadgen::{self, IdentityKind, LoadgenArgs};
use super::server::ChildServer;
use super::workload::{self, Identity, Rng, Walker};
use super::{Outcome, Table, int, ms, round};
use crate::bench::BenchArgs;
use crate::clock;

const RUN_TAG: u16 = 0x50a1;
/// Frames after which a person starts a new session.
const FRAMES_PER_SESSION: u32 = 30;
const RETRIEVAL_RATE: f64 = 2_000.0;
const RETRIEVAL_CONNECTIONS: usize = 8;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One sample of the server's state.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    secs: f64,
    rss_mib: f64,
    cpu_secs: f64,
    /// CPU time of the whole machine and of this benchmark process (generator, fake LLM).
    machine_busy_secs: f64,
    bench_cpu_secs: f64,
    sessions: f64,
    actions_stored: f64,
    frames_sent: u64,
    frames_lost: u64,
    queue_dropped: f64,
    reconnects: f64,
    llm_calls: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    lost: AtomicU64,
    actions: AtomicU64,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Outcome> {
    let duration = args.duration.unwrap_or(Duration::from_secs(600));
    let rate = args.rate.unwrap_or(1_000.0);
    let persons = args.sessions.first().copied().unwrap_or(5_000).max(1);
    let cut_every = (duration / 10).max(Duration::from_secs(10));
    let interval = if duration >= Duration::from_secs(300) {
        Duration::from_secs(60)
    } else {
        (duration / 10).max(Duration::from_secs(1))
    };
    std::fs::create_dir_all(&args.out_dir)?;
    let log = args.out_dir.join("soak-server.log");

    let connector = Arc::new(SyntheticConnector::start(1024).await?);
    let llm = Arc::new(FakeLlm::start(args.llm_latency).await?);
    let server = ChildServer::start(
        &[
            "--stream-url".into(),
            connector.url(),
            "--openai-base-url".into(),
            llm.base_url(),
            "--session-ttl".into(),
            "2m".into(),
            "--max-sessions".into(),
            "8000".into(),
        ],
        &log,
    )
    .await?;
    connector.wait_connected(1).await;
    eprintln!(
        "soak: {}s, {rate:.0} frames/s from {} people, {RETRIEVAL_RATE:.0} retrievals/s, stream cut every {}s; server pid {} (log: {})",
        duration.as_secs(),
        int(persons),
        cut_every.as_secs(),
        server.pid,
        log.display()
    );

    let stop = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    let generator = tokio::spawn(generate(
        Arc::clone(&connector),
        Arc::clone(&counters),
        persons,
        rate,
        stop.clone(),
    ));
    let cutter = {
        let connector = Arc::clone(&connector);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut cuts = 0u64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return cuts,
                    () = tokio::time::sleep(cut_every) => {
                        connector.cut();
                        cuts += 1;
                    }
                }
            }
        })
    };
    let begin = Instant::now();
    let sampler = {
        let stop = stop.clone();
        let counters = Arc::clone(&counters);
        let llm = Arc::clone(&llm);
        let (addr, pid) = (server.addr, server.pid);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                samples.push(sample(addr, pid, begin, &counters, &llm).await);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
            }
            samples
        })
    };
    let report = loadgen::spawn(&LoadgenArgs {
        addr: server.addr,
        connections: RETRIEVAL_CONNECTIONS,
        warmup: Duration::ZERO,
        duration,
        identities: persons,
        identity: IdentityKind::Email,
        run_tag: RUN_TAG,
        top_k: 5,
        rate: RETRIEVAL_RATE,
        interval,
        seed: 5,
    })
    .await;
    stop.cancel();
    let _ = generator.await;
    let cuts = cutter.await.unwrap_or(0);
    let mut samples = sampler.await.unwrap_or_default();
    samples.push(sample(server.addr, server.pid, begin, &counters, &llm).await);
    server.stop().await;
    connector.stop();
    llm.stop();
    let report = report?;

    // Memory: after warm-up (a fifth of the run, at least a minute, at most half), does RSS grow?
    let total = duration.as_secs_f64();
    let warm = (total * 0.2).max(60.0).min(total / 2.0);
    let after: Vec<&Sample> = samples.iter().filter(|s| s.secs >= warm).collect();
    let rss_at_warm = after.first().map_or(0.0, |s| s.rss_mib);
    let rss_end = samples.last().map_or(0.0, |s| s.rss_mib);
    let rss_max_after = after.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let slope = slope_per_minute(&after);
    // The store fills for several minutes (sessions reach the cap, then their content and the
    // allocator reach a steady mix): the last third shows whether growth has stopped.
    let last_third: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.secs >= total * 2.0 / 3.0)
        .collect();
    let slope_last_third = slope_per_minute(&last_third);
    let rss_at_last_third = last_third.first().map_or(0.0, |s| s.rss_mib);
    let first = report.intervals.first();
    let last = report.intervals.iter().rev().find(|i| i.requests > 0);
    let p99_ratio = match (first, last) {
        (Some(f), Some(l)) if f.latency.p99_us > 0.0 => l.latency.p99_us / f.latency.p99_us,
        _ => f64::NAN,
    };

    let mut over_time = Table::new(
        format!(
            "soak: {} min, {rate:.0} frames/s, {RETRIEVAL_RATE:.0} retrievals/s by email over {RETRIEVAL_CONNECTIONS} connections, stream cut every {} s (server = livectx serve child)",
            round(total / 60.0, 1),
            cut_every.as_secs()
        ),
        &[
            "interval",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "RSS MiB (end)",
            "sessions (end)",
            "server CPU",
            "other processes",
        ],
    );
    let loadgen_share = report.cpu_secs / total.max(1.0);
    for i in &report.intervals {
        let end = i.start_secs + interval.as_secs_f64();
        let at = samples
            .iter()
            .rfind(|s| s.secs <= end + 0.5)
            .or(samples.last());
        let from = samples.iter().rfind(|s| s.secs <= i.start_secs + 0.5);
        let shares = match (from, at) {
            (Some(a), Some(b)) if b.secs > a.secs => {
                let dt = b.secs - a.secs;
                let server = (b.cpu_secs - a.cpu_secs) / dt;
                let bench = (b.bench_cpu_secs - a.bench_cpu_secs) / dt;
                let busy = (b.machine_busy_secs - a.machine_busy_secs) / dt;
                Some((server, (busy - server - bench - loadgen_share).max(0.0)))
            }
            _ => None,
        };
        over_time.row(vec![
            format!("{:.0}–{:.0} s", i.start_secs, end.min(total)),
            int(i.requests_per_sec.round() as u64),
            ms(i.latency.p50_us),
            ms(i.latency.p99_us),
            ms(i.latency.p999_us),
            i.errors.to_string(),
            at.map_or("?".into(), |s| format!("{:.1}", s.rss_mib)),
            at.map_or("?".into(), |s| int(s.sessions as u64)),
            shares.map_or("?".into(), |(s, _)| format!("{:.0} %", s * 100.0)),
            shares.map_or("?".into(), |(_, o)| format!("{:.0} %", o * 100.0)),
        ]);
    }
    let mut verdict = Table::new(
        "soak: first vs last interval, memory after warm-up",
        &["measure", "value"],
    );
    let rows = [
        (
            "p50 first → last interval".to_string(),
            format!(
                "{} → {} ms",
                first.map_or("?".into(), |f| ms(f.latency.p50_us)),
                last.map_or("?".into(), |l| ms(l.latency.p50_us))
            ),
        ),
        (
            "p99 first → last interval".to_string(),
            format!(
                "{} → {} ms (last/first = {:.2})",
                first.map_or("?".into(), |f| ms(f.latency.p99_us)),
                last.map_or("?".into(), |l| ms(l.latency.p99_us)),
                p99_ratio
            ),
        ),
        (
            format!("RSS at warm-up end ({warm:.0} s) → end"),
            format!(
                "{rss_at_warm:.1} → {rss_end:.1} MiB (max after warm-up {rss_max_after:.1} MiB)"
            ),
        ),
        (
            "RSS trend after warm-up (least squares)".to_string(),
            format!("{slope:+.2} MiB/min"),
        ),
        (
            format!(
                "RSS over the last third ({:.0} s → end) and its trend",
                total * 2.0 / 3.0
            ),
            format!("{rss_at_last_third:.1} → {rss_end:.1} MiB, {slope_last_third:+.2} MiB/min"),
        ),
        (
            "stream cuts / reconnects seen by the server".to_string(),
            format!(
                "{cuts} / {}",
                int(samples.last().map_or(0.0, |s| s.reconnects) as u64)
            ),
        ),
        (
            "frames sent / lost while disconnected / queue-dropped".to_string(),
            format!(
                "{} / {} / {}",
                int(counters.sent.load(Ordering::Relaxed)),
                int(counters.lost.load(Ordering::Relaxed)),
                int(samples.last().map_or(0.0, |s| s.queue_dropped) as u64)
            ),
        ),
        (
            "actions sent / stored".to_string(),
            format!(
                "{} / {}",
                int(counters.actions.load(Ordering::Relaxed)),
                int(samples.last().map_or(0.0, |s| s.actions_stored) as u64)
            ),
        ),
        (
            "retrievals answered / empty / errors".to_string(),
            format!(
                "{} / {} / {}",
                int(report.ok),
                int(report.empty),
                report.errors
            ),
        ),
        ("LLM calls".to_string(), int(llm.calls())),
    ];
    for (measure, value) in rows {
        verdict.row(vec![measure, value]);
    }
    Ok(Outcome {
        results: json!({
            "duration_secs": total,
            "rate_frames_per_sec": rate,
            "persons": persons,
            "retrieval_rate": RETRIEVAL_RATE,
            "cut_every_secs": cut_every.as_secs(),
            "cuts": cuts,
            "warm_up_secs": warm,
            "rss_at_warm_up_mib": rss_at_warm,
            "rss_end_mib": rss_end,
            "rss_max_after_warm_up_mib": rss_max_after,
            "rss_slope_mib_per_min": round(slope, 3),
            "rss_at_last_third_mib": rss_at_last_third,
            "rss_slope_last_third_mib_per_min": round(slope_last_third, 3),
            "p99_last_over_first": round(p99_ratio, 3),
            "frames_sent": counters.sent.load(Ordering::Relaxed),
            "frames_lost_while_disconnected": counters.lost.load(Ordering::Relaxed),
            "actions_sent": counters.actions.load(Ordering::Relaxed),
            "llm_calls": llm.calls(),
            "loadgen": report,
            "samples": samples,
        }),
        tables: vec![over_time, verdict],
        notes: vec![
            "empty answers are people whose newest session was evicted or expired, or who had none yet: answered 200 [] (not errors)".to_string(),
            "server CPU and other processes (the rest of the machine: other agents' builds and tests, minus this benchmark and its load generator) are in cores, 100 % = one core".to_string(),
            "latency is measured from the moment each paced request is sent; a request that waits for its connection's previous answer is sent late rather than counted as waiting".to_string(),
        ],
    })
}

/// Least-squares slope of RSS over time, in MiB per minute.
fn slope_per_minute(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = samples.iter().map(|s| s.secs).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.rss_mib).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.secs - mean_x) * (s.rss_mib - mean_y);
        den += (s.secs - mean_x).powi(2);
    }
    if den == 0.0 { 0.0 } else { num / den * 60.0 }
}

async fn sample(
    addr: std::net::SocketAddr,
    pid: u32,
    begin: Instant,
    counters: &Counters,
    llm: &FakeLlm,
) -> Sample {
    let metrics = match http::get(addr, "/metrics").await {
        Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
        _ => String::new(),
    };
    Sample {
        secs: round(begin.elapsed().as_secs_f64(), 1),
        rss_mib: round(
            super::stats::rss_bytes(pid).unwrap_or(0) as f64 / 1024.0 / 1024.0,
            2,
        ),
        cpu_secs: round(
            super::stats::process_cpu_ns(pid).unwrap_or(0) as f64 / 1e9,
            2,
        ),
        machine_busy_secs: round(super::stats::machine_busy_ns().unwrap_or(0) as f64 / 1e9, 2),
        bench_cpu_secs: round(
            super::stats::process_cpu_ns(std::process::id()).unwrap_or(0) as f64 / 1e9,
            2,
        ),
        sessions: metric_sum(&metrics, "livectx_sessions"),
        actions_stored: metric_sum(&metrics, "livectx_actions_stored_total"),
        frames_sent: counters.sent.load(Ordering::Relaxed),
        frames_lost: counters.lost.load(Ordering::Relaxed),
        queue_dropped: metric_sum(&metrics, "livectx_ingest_queue_dropped_total"),
        reconnects: metric_sum(&metrics, "livectx_stream_reconnects_total"),
        llm_calls: llm.calls(),
    }
}

/// Paced frames of people browsing; a person's session changes every [`FRAMES_PER_SESSION`].
async fn generate(
    connector: Arc<SyntheticConnector>,
    counters: Arc<Counters>,
    persons: u64,
    rate: f64,
    stop: CancellationToken,
) {
    struct Person {
        walker: Walker,
        session: u64,
        frames: u32,
    }
    let now = clock::now();
    let mut people: Vec<Person> = (0..persons)
        .map(|p| Person {
            walker: Walker::new(p, now),
            session: p,
            frames: 0,
        })
        .collect();
    let mut next_session = persons;
    let mut rng = Rng::new(99);
    let tick = Duration::from_millis(10);
    let per_tick = rate * tick.as_secs_f64();
    let mut budget = 0.0;
    let mut next = Instant::now();
    let mut last_heartbeat = Instant::now();
    let mut actions = Vec::with_capacity(3);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next.into()) => {}
        }
        next += tick;
        budget += per_tick;
        let n = budget.floor() as u64;
        budget -= n as f64;
        if !connector.is_connected() {
            // The real connector does not keep what a disconnected client misses.
            counters.lost.fetch_add(n, Ordering::Relaxed);
            continue;
        }
        let mut chunk = String::with_capacity(n as usize * 1200 + 64);
        if last_heartbeat.elapsed() >= Duration::from_secs(15) {
            chunk.push_str("event: heartbeat\ndata:\n\n");
            last_heartbeat = Instant::now();
        }
        let now = clock::now();
        let mut sent_actions = 0u64;
        for _ in 0..n {
            let p = rng.below(persons) as usize;
            let person = &mut people[p];
            if person.frames >= FRAMES_PER_SESSION {
                person.session = next_session;
                next_session += 1;
                person.frames = 0;
                person.walker.next_index = 0;
            }
            person.frames += 1;
            person
                .walker
                .set_clock(person.walker.clock().max(now - 2.0));
            let count = 1 + rng.below(3) as usize;
            actions.clear();
            actions.extend((0..count).map(|_| person.walker.next_action(0.5)));
            let first_index = person.walker.next_index;
            person.walker.next_index += count as i64;
            let who = Identity::new(RUN_TAG, person.session, p as u64);
            chunk.push_str("data: ");
            workload::write_payload_from(&mut chunk, &who, &actions, first_index, now);
            chunk.push_str("\n\n");
            sent_actions += count as u64;
        }
        if chunk.is_empty() {
            continue;
        }
        if !connector.send(Bytes::from(chunk)).await {
            return;
        }
        counters.sent.fetch_add(n, Ordering::Relaxed);
        counters.actions.fetch_add(sent_actions, Ordering::Relaxed);
    }
}
