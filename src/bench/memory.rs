//! `bench memory`: resident memory per session, measured in a child process
//! (`livectx bench-memory`) that holds nothing but an in-memory store.
//!
//! The child reads its `VmRSS` with the empty store in place, loads N sessions of 20 actions
//! (four batches of five, an email and a user id each — the shape the connector delivers),
//! reads `VmRSS` again, then summarises every session with the built-in summarizer exactly as
//! the server would at the default threshold of 20 (the summarised chunks stay for the
//! activity view, a summary and its digest are added) and reads it a third time. It also adds
//! up the bytes of every text it stored, so the per-session cost can be split into the text
//! itself and everything around it (structures, indexes, allocator overhead).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::stats;
use super::workload::{self, Identity, Walker};
use super::{Outcome, Table, int, round};
use crate::bench::BenchArgs;
use crate::clock;
use crate::session::memory::MemoryStore;
use crate::session::model::{SessionId, SessionLimits};
use crate::session::store::{SessionStore, StoreConfig};
use crate::session::summarizer::builtin;

const RUN_TAG: u16 = 0x3e01;

/// Settings of the hidden `livectx bench-memory`.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Sessions to load.
    #[arg(long)]
    pub sessions: u64,
    /// Actions per session.
    #[arg(long, default_value_t = 20)]
    pub actions: usize,
    /// Batches (chunks) per session.
    #[arg(long, default_value_t = 4)]
    pub batches: usize,
}

/// What the child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryReport {
    pub sessions: u64,
    pub actions_per_session: usize,
    pub rss_empty: u64,
    pub rss_loaded: u64,
    pub rss_summarized: u64,
    pub peak_rss: u64,
    /// Bytes of every action text, id, email and user id stored.
    pub text_bytes: u64,
    /// Bytes of the summaries' text.
    pub summary_text_bytes: u64,
    pub summaries: u64,
}

/// The child: load, measure, print one JSON line.
pub async fn child(args: MemoryArgs) -> anyhow::Result<()> {
    let store = MemoryStore::new(StoreConfig {
        max_sessions: usize::try_from(args.sessions).unwrap_or(usize::MAX),
        session_ttl: Duration::from_secs(24 * 3600),
        limits: SessionLimits { max_chunks: 50 },
    });
    let pid = std::process::id();
    let rss_empty = stats::rss_bytes(pid).context("cannot read VmRSS")?;
    let now = clock::now();
    let mut text_bytes = 0u64;
    let batches = args.batches.max(1);
    for i in 0..args.sessions {
        let who = Identity::new(RUN_TAG, i, i);
        text_bytes +=
            (who.session_id.len() + who.email.len() + who.user_id.len() + workload::PRODUCT.len())
                as u64;
        let mut walker = Walker::new(i, now - 600.0);
        let mut index = 0i64;
        for b in 0..batches {
            let take = args.actions / batches + usize::from(b < args.actions % batches);
            let actions: Vec<_> = (0..take).map(|_| walker.next_action(10.0)).collect();
            let batch = workload::batch(&who, &actions, index).context("bad session id")?;
            index += take as i64;
            for a in &batch.actions {
                text_bytes += (a.kind().len()
                    + a.title().len()
                    + a.description().len()
                    + a.canonical_url().len()
                    + a.raw_url_if_different().map_or(0, str::len))
                    as u64;
            }
            store.append_actions(batch, now, None).await?;
        }
    }
    let rss_loaded = stats::rss_bytes(pid).context("cannot read VmRSS")?;
    let mut summary_text_bytes = 0u64;
    let mut summaries = 0u64;
    for i in 0..args.sessions {
        let id = SessionId::parse(&workload::session_id(RUN_TAG, i))?;
        if let Some(job) = store
            .claim_summary(&id, args.actions, now, Duration::from_secs(60))
            .await?
        {
            let draft = builtin::summarize(job.previous.as_deref(), &job.chunks);
            summary_text_bytes += draft.text.len() as u64;
            store.finish_summary(&job, draft, now).await?;
            summaries += 1;
        }
    }
    let rss_summarized = stats::rss_bytes(pid).context("cannot read VmRSS")?;
    let report = MemoryReport {
        sessions: args.sessions,
        actions_per_session: args.actions,
        rss_empty,
        rss_loaded,
        rss_summarized,
        peak_rss: stats::peak_rss_bytes(pid).unwrap_or(0),
        text_bytes,
        summary_text_bytes,
        summaries,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn spawn(sessions: u64) -> anyhow::Result<MemoryReport> {
    let exe = std::env::current_exe().context("cannot find the livectx binary")?;
    let output = tokio::process::Command::new(exe)
        .arg("bench-memory")
        .arg("--sessions")
        .arg(sessions.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await?;
    super::child_report(&output, "the memory child")
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Outcome> {
    let counts = if args.sessions.is_empty() {
        vec![10_000, 100_000]
    } else {
        args.sessions.clone()
    };
    let mut table = Table::new(
        "memory: resident memory per session of 20 actions (4 batches), measured in a child process holding only the store",
        &[
            "sessions",
            "state",
            "RSS growth",
            "bytes/session",
            "stored text/session",
            "beyond the text/session",
        ],
    );
    let mut results = Vec::new();
    for n in counts {
        eprintln!("memory: loading {} sessions in a child process…", int(n));
        let report = spawn(n).await?;
        let per = |bytes: u64| bytes as f64 / report.sessions.max(1) as f64;
        let raw_growth = report.rss_loaded.saturating_sub(report.rss_empty);
        let all_growth = report.rss_summarized.saturating_sub(report.rss_empty);
        let raw_text = report.text_bytes;
        let all_text = report.text_bytes + report.summary_text_bytes;
        for (state, growth, text) in [
            ("raw (20 actions, 4 chunks)", raw_growth, raw_text),
            (
                "summarised (built-in, as the server does at 20)",
                all_growth,
                all_text,
            ),
        ] {
            table.row(vec![
                int(n),
                state.to_string(),
                format!("{:.1} MiB", growth as f64 / 1024.0 / 1024.0),
                int(per(growth).round() as u64),
                int(per(text).round() as u64),
                format!(
                    "{} ({:.2} KiB)",
                    int((per(growth) - per(text)).max(0.0).round() as u64),
                    (per(growth) - per(text)) / 1024.0
                ),
            ]);
        }
        results.push(json!({
            "report": report,
            "raw": {
                "bytes_per_session": round(per(raw_growth), 1),
                "text_per_session": round(per(raw_text), 1),
                "beyond_text_per_session": round(per(raw_growth) - per(raw_text), 1),
            },
            "summarized": {
                "bytes_per_session": round(per(all_growth), 1),
                "text_per_session": round(per(all_text), 1),
                "beyond_text_per_session": round(per(all_growth) - per(all_text), 1),
            },
        }));
    }
    Ok(Outcome {
        results: json!({ "runs": results }),
        tables: vec![table],
        notes: vec![
            "stored text = every action's type, title, description and URL(s) plus each session's id, email, user id and product (and, once summarised, the summary text); everything else — session and chunk structures, the identity index, the recency list, allocator overhead — is \"beyond the text\"".to_string(),
            "the glibc allocator is used as the server ships; RSS is read from /proc/<pid>/status (VmRSS)".to_string(),
        ],
    })
}
