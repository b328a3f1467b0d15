//! The `/retrieval` load generator: `livectx bench-loadgen`, run by the benchmarks as a child
//! process so that it never shares a runtime (or a heap) with the server it measures.
//!
//! Each connection is one task with one keep-alive HTTP/1.1 socket, sending the next request
//! as soon as the previous answer is read (closed loop), or at a fixed pace when `--rate` is
//! given. Requests that *start* during warm-up are not recorded; a request counts in the window
//! when it starts inside it and finishes before it ends. The report is one JSON object on
//! stdout.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::http::{HttpConn, has_records, retrieval_body};
use super::stats::{Latency, saturating_nanos};
use super::workload::{QUESTIONS, Rng, email, session_id};
use crate::clock::parse_duration;

/// How the load generator names the user in each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum IdentityKind {
    /// The session id (`session_id(run_tag, i)`).
    Session,
    /// The person's email (`email(i)`), resolved to their newest session.
    Email,
}

/// Settings of the hidden `livectx bench-loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// The livectx server.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Identities to pick from, uniformly (`0..identities`).
    #[arg(long)]
    pub identities: u64,
    #[arg(long, value_enum, default_value = "session")]
    pub identity: IdentityKind,
    /// The run tag of the session ids (see `workload::session_id`).
    #[arg(long, default_value_t = 0)]
    pub run_tag: u16,
    #[arg(long, default_value_t = 5)]
    pub top_k: u32,
    /// Requests per second over all connections; 0 sends as fast as answers come back.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Report latency per interval of this length too (0s: only for the whole window).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub interval: Duration,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One interval of a long run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntervalReport {
    /// Seconds from the start of the measuring window.
    pub start_secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_sec: f64,
    pub latency: Latency,
}

/// What the load generator prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadgenReport {
    pub connections: usize,
    pub window_secs: f64,
    /// Answered 200 with at least one record, inside the window.
    pub ok: u64,
    /// Answered 200 with no record (unknown identity): counted, not an error.
    pub empty: u64,
    /// Any other status, or a transport error.
    pub errors: u64,
    pub requests_per_sec: f64,
    pub latency: Latency,
    pub intervals: Vec<IntervalReport>,
    /// CPU time the load generator itself used (it shares the machine with the server).
    pub cpu_secs: f64,
}

#[derive(Default)]
struct TaskResult {
    ok: u64,
    empty: u64,
    errors: u64,
    samples: Vec<u32>,
    /// Per interval: (requests, errors, samples).
    intervals: Vec<(u64, u64, Vec<u32>)>,
}

/// Run the load generator and print its report (the child process's whole job).
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let report = generate(&args).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn generate(args: &LoadgenArgs) -> anyhow::Result<LoadgenReport> {
    anyhow::ensure!(args.identities > 0, "--identities must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    // Bodies are built once: the generator's CPU is the server's loss.
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..args.identities)
            .map(|i| {
                let identifier = match args.identity {
                    IdentityKind::Session => session_id(args.run_tag, i),
                    IdentityKind::Email => email(i),
                };
                retrieval_body(
                    &identifier,
                    QUESTIONS[(i % QUESTIONS.len() as u64) as usize],
                    args.top_k,
                )
            })
            .collect(),
    );
    let cpu_before = super::stats::process_cpu_ns(std::process::id()).unwrap_or(0);
    let begin = Instant::now();
    let window_start = begin + args.warmup;
    let window_end = window_start + args.duration;
    let mut tasks = Vec::with_capacity(args.connections);
    for c in 0..args.connections {
        let bodies = Arc::clone(&bodies);
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            connection_loop(&args, c, &bodies, window_start, window_end).await
        }));
    }
    let mut total = TaskResult {
        intervals: vec![(0, 0, Vec::new()); interval_count(args)],
        ..TaskResult::default()
    };
    for task in tasks {
        let result = task.await.context("a load generator task failed")??;
        total.ok += result.ok;
        total.empty += result.empty;
        total.errors += result.errors;
        total.samples.extend(result.samples);
        for (i, (requests, errors, samples)) in result.intervals.into_iter().enumerate() {
            if let Some(slot) = total.intervals.get_mut(i) {
                slot.0 += requests;
                slot.1 += errors;
                slot.2.extend(samples);
            }
        }
    }
    let window = args.duration.as_secs_f64();
    let intervals = total
        .intervals
        .into_iter()
        .enumerate()
        .map(|(i, (requests, errors, mut samples))| {
            let start = i as f64 * args.interval.as_secs_f64();
            let length = args.interval.as_secs_f64().min(window - start).max(1e-9);
            IntervalReport {
                start_secs: start,
                requests,
                errors,
                requests_per_sec: requests as f64 / length,
                latency: Latency::of_nanos(&mut samples),
            }
        })
        .collect();
    let cpu_after = super::stats::process_cpu_ns(std::process::id()).unwrap_or(0);
    let answered = total.ok + total.empty;
    Ok(LoadgenReport {
        connections: args.connections,
        window_secs: window,
        ok: total.ok,
        empty: total.empty,
        errors: total.errors,
        requests_per_sec: answered as f64 / window,
        latency: Latency::of_nanos(&mut total.samples),
        intervals,
        cpu_secs: cpu_after.saturating_sub(cpu_before) as f64 / 1e9,
    })
}

async fn connection_loop(
    args: &LoadgenArgs,
    index: usize,
    bodies: &[Bytes],
    window_start: Instant,
    window_end: Instant,
) -> anyhow::Result<TaskResult> {
    let mut rng = Rng::new(args.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    let mut result = TaskResult {
        intervals: vec![(0, 0, Vec::new()); interval_count(args)],
        ..TaskResult::default()
    };
    let pace =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    // Paced connections start spread over one period, not all at once.
    let mut next_send = Instant::now()
        + pace.map_or(Duration::ZERO, |p| {
            p.mul_f64(index as f64 / args.connections as f64)
        });
    let mut conn: Option<HttpConn> = None;
    loop {
        if let Some(pace) = pace {
            tokio::time::sleep_until(next_send.into()).await;
            next_send += pace;
        }
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
        let body = bodies[rng.below(bodies.len() as u64) as usize].clone();
        let outcome = connection.post_json("/retrieval", body).await;
        let finished = Instant::now();
        let in_window = started >= window_start && finished <= window_end;
        let failed = match &outcome {
            Ok((200, body)) => {
                if in_window {
                    if has_records(body) {
                        result.ok += 1;
                    } else {
                        result.empty += 1;
                    }
                }
                false
            }
            Ok(_) => true,
            Err(_) => {
                conn = None;
                true
            }
        };
        if !in_window {
            continue;
        }
        if failed {
            result.errors += 1;
        } else {
            let nanos = saturating_nanos(finished - started);
            result.samples.push(nanos);
            if let Some(slot) = interval_slot(args, started - window_start)
                .and_then(|i| result.intervals.get_mut(i))
            {
                slot.0 += 1;
                slot.2.push(nanos);
            }
        }
        if failed
            && let Some(slot) = interval_slot(args, started - window_start)
                .and_then(|i| result.intervals.get_mut(i))
        {
            slot.1 += 1;
        }
    }
    Ok(result)
}

fn interval_count(args: &LoadgenArgs) -> usize {
    if args.interval.is_zero() {
        0
    } else {
        (args.duration.as_secs_f64() / args.interval.as_secs_f64()).ceil() as usize
    }
}

fn interval_slot(args: &LoadgenArgs, since_start: Duration) -> Option<usize> {
    (!args.interval.is_zero())
        .then(|| (since_start.as_secs_f64() / args.interval.as_secs_f64()) as usize)
}

/// Run `livectx bench-loadgen` as a child process of this same binary and read its report.
pub async fn spawn(args: &LoadgenArgs) -> anyhow::Result<LoadgenReport> {
    let exe = std::env::current_exe().context("cannot find the livectx binary")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("bench-loadgen")
        .arg("--addr")
        .arg(args.addr.to_string())
        .arg("--connections")
        .arg(args.connections.to_string())
        .arg("--warmup")
        .arg(format!("{}ms", args.warmup.as_millis()))
        .arg("--duration")
        .arg(format!("{}ms", args.duration.as_millis()))
        .arg("--identities")
        .arg(args.identities.to_string())
        .arg("--identity")
        .arg(match args.identity {
            IdentityKind::Session => "session",
            IdentityKind::Email => "email",
        })
        .arg("--run-tag")
        .arg(args.run_tag.to_string())
        .arg("--top-k")
        .arg(args.top_k.to_string())
        .arg("--rate")
        .arg(args.rate.to_string())
        .arg("--interval")
        .arg(format!("{}ms", args.interval.as_millis()))
        .arg("--seed")
        .arg(args.seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = command
        .spawn()
        .context("cannot start the load generator")?
        .wait_with_output()
        .await?;
    super::child_report(&output, "the load generator")
}
