//! `bench freshness`: how long after the connector sends a frame it is visible in `/retrieval`.
//!
//! The generator sends 1 000 frames/s (one action each, debounce off) for random sessions among
//! 1 000. Every tenth frame is a probe: a click with a unique title. The moment the probe's
//! bytes are handed to the connection is `sent`; at once a prober asks `/retrieval` for that
//! session (top_k 5, keep-alive connection), again and again, until an answer contains the
//! title: the moment that answer is fully read is `seen`. So each figure includes the SSE hop
//! over loopback, parsing, the queue, decoding, the store write — and one `/retrieval` round
//! trip, which is also reported on its own so it can be told apart. `sent → seen` is an upper
//! bound of the visibility time; `sent → start of the poll that saw it` is reported beside it
//! (polls run back to back, so the frame became visible within about one round trip of that).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::Mutex;

use super::connector::SyntheticConnector;
use super::http::{HttpConn, retrieval_body};
use super::server::InProcessServer;
use super::stats::{Latency, median};
use super::workload::{self, Identity, Rng, Walker};
use super::{Outcome, Table, int, ms, round, server_config};
use crate::app::Overrides;
use crate::bench::BenchArgs;
use crate::clock;

const RUN_TAG: u16 = 0xf401;
/// One frame in this many is a probe.
const PROBE_EVERY: u64 = 10;
/// A probe not visible after this long counts as missing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

struct Probe {
    session: u64,
    title: String,
    sent: Instant,
    measured: bool,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    visible_after: Duration,
    poll_started: Duration,
    hit_round_trip: Duration,
    polls: u32,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Outcome> {
    let rate = args.rate.unwrap_or(1_000.0);
    let window = args.duration.unwrap_or(Duration::from_secs(20));
    let sessions = args.sessions.first().copied().unwrap_or(1_000).max(1);
    let connector = SyntheticConnector::start(1024).await?;
    let mut config = server_config();
    config.stream_urls = vec![connector.url()];
    config.debounce_ms = 0;
    let server = InProcessServer::start(config, Overrides::default()).await?;
    connector.wait_connected(1).await;
    eprintln!(
        "freshness: {rate:.0} frames/s over {} sessions for {}s (+{}s warm-up), one probe in {PROBE_EVERY}",
        int(sessions),
        window.as_secs(),
        args.warmup.as_secs()
    );

    let pool: Arc<Mutex<Vec<HttpConn>>> = Arc::new(Mutex::new(Vec::new()));
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel::<Probe>();
    let addr = server.addr;
    let prober = tokio::spawn(async move {
        let mut running = Vec::new();
        while let Some(probe) = probe_rx.recv().await {
            let pool = Arc::clone(&pool);
            running.push(tokio::spawn(async move {
                let taken = pool.lock().await.pop();
                let mut conn = match taken {
                    Some(conn) => conn,
                    None => HttpConn::connect(addr).await?,
                };
                let seen = watch_for(&mut conn, &probe).await;
                pool.lock().await.push(conn);
                Ok::<_, anyhow::Error>((probe.measured, seen))
            }));
        }
        let mut seen = Vec::new();
        let mut missing = 0u64;
        for task in running {
            match task.await {
                Ok(Ok((true, Some(s)))) => seen.push(s),
                Ok(Ok((true, None))) => missing += 1,
                Ok(Ok((false, _))) => {}
                Ok(Err(_)) | Err(_) => missing += 1,
            }
        }
        (seen, missing)
    });

    let mut walkers: Vec<Walker> = (0..sessions).map(|s| Walker::new(s, 0.0)).collect();
    let who: Vec<Identity> = (0..sessions)
        .map(|s| Identity::new(RUN_TAG, s, s))
        .collect();
    let mut rng = Rng::new(11);
    let period = Duration::from_secs_f64(1.0 / rate);
    let begin = Instant::now();
    let measure_from = begin + args.warmup;
    let end = measure_from + window;
    let mut next = begin;
    let mut sent = 0u64;
    let mut late = Duration::ZERO;
    let mut frame = String::with_capacity(2048);
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        late = late.max(Instant::now().saturating_duration_since(next));
        next += period;
        let s = rng.below(sessions);
        let now = clock::now();
        let walker = &mut walkers[s as usize];
        walker.set_clock(now - 0.2);
        let probe = sent.is_multiple_of(PROBE_EVERY);
        let title = format!("Click probe {sent}");
        let action = if probe {
            workload::marker_click(&title, now)
        } else {
            walker.next_action(0.1)
        };
        frame.clear();
        workload::write_frame(&mut frame, &who[s as usize], &[action], now);
        let bytes = Bytes::from(frame.clone());
        let handed = Instant::now();
        if !connector.send(bytes).await {
            anyhow::bail!("the synthetic connector stopped");
        }
        if probe {
            let _ = probe_tx.send(Probe {
                session: s,
                title,
                sent: handed,
                measured: handed >= measure_from,
            });
        }
        sent += 1;
    }
    let sending = begin.elapsed();
    drop(probe_tx);
    let (mut seen, missing) = prober.await?;
    server.stop().await;
    connector.stop();

    let achieved = sent as f64 / sending.as_secs_f64();
    let visible = Latency::of_durations(&seen.iter().map(|s| s.visible_after).collect::<Vec<_>>());
    let poll_started =
        Latency::of_durations(&seen.iter().map(|s| s.poll_started).collect::<Vec<_>>());
    let round_trip =
        Latency::of_durations(&seen.iter().map(|s| s.hit_round_trip).collect::<Vec<_>>());
    seen.sort_by_key(|s| s.polls);
    let polls: Vec<f64> = seen.iter().map(|s| f64::from(s.polls)).collect();
    let first_poll_hits = seen.iter().filter(|s| s.polls == 1).count();

    let mut table = Table::new(
        format!(
            "freshness: frame sent → visible in /retrieval, {rate:.0} frames/s (achieved {achieved:.0}), debounce off, {} probes",
            int(seen.len() as u64)
        ),
        &["measure", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    );
    for (name, l) in [
        ("sent → seen in a /retrieval answer (upper bound)", &visible),
        ("sent → start of the poll that saw it", &poll_started),
        (
            "/retrieval round trip of the answer that saw it",
            &round_trip,
        ),
    ] {
        table.row(vec![
            name.to_string(),
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.max_us),
        ]);
    }
    let notes = vec![
        format!(
            "probes missing (not visible within {}s): {missing}; polls per probe: median {:.0}, visible on the first poll: {} of {}",
            PROBE_TIMEOUT.as_secs(),
            median(&polls),
            first_poll_hits,
            seen.len()
        ),
        format!(
            "the generator ran at most {:.2} ms behind its schedule",
            late.as_secs_f64() * 1000.0
        ),
    ];
    Ok(Outcome {
        results: json!({
            "rate_frames_per_sec": rate,
            "achieved_frames_per_sec": round(achieved, 1),
            "sessions": sessions,
            "window_secs": window.as_secs_f64(),
            "probes": seen.len(),
            "missing": missing,
            "visible_after": visible,
            "poll_started": poll_started,
            "hit_round_trip": round_trip,
            "median_polls": median(&polls),
            "first_poll_hits": first_poll_hits,
            "generator_max_lateness_ms": round(late.as_secs_f64() * 1000.0, 3),
        }),
        tables: vec![table],
        notes,
    })
}

/// Ask `/retrieval` for the probe's session until its title shows up.
async fn watch_for(conn: &mut HttpConn, probe: &Probe) -> Option<Seen> {
    let body = retrieval_body(
        &workload::session_id(RUN_TAG, probe.session),
        "what is the user doing right now?",
        5,
    );
    let mut polls = 0u32;
    loop {
        let asked = Instant::now();
        let answer = conn.post_json("/retrieval", body.clone()).await.ok()?;
        let answered = Instant::now();
        polls += 1;
        if answer.0 == 200 && memchr::memmem::find(&answer.1, probe.title.as_bytes()).is_some() {
            return Some(Seen {
                visible_after: answered - probe.sent,
                poll_started: asked.saturating_duration_since(probe.sent),
                hit_round_trip: answered - asked,
                polls,
            });
        }
        if answered - probe.sent > PROBE_TIMEOUT {
            return None;
        }
    }
}
