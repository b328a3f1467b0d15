//! Micro-benchmarks of the hot paths: SSE parsing, payload decoding, the "Current User
//! Activity" rendering, record scoring, reading a `/retrieval` body and a whole answer. `cargo bench` (a few minutes on two cores); the
//! end-to-end figures are `livectx bench <scenario>` (see docs/benchmarks.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use livectx::api::retrieval::{answer_body, chosen_records, parse_request, records_body};
use livectx::bench::workload::{self, Identity, Walker};
use livectx::ingest::sse::SseParser;
use livectx::render::activity::render_activity;
use livectx::render::records::session_records;
use livectx::session::model::{Session, SessionId, SessionLimits};
use livectx::session::summarizer::builtin;
use livectx::sources::autoplay::payload::decode;

const NOW: f64 = 1_785_000_000.0;

/// One `actions` payload of `n` actions, as JSON.
fn payload(n: usize, seed: u64) -> String {
    let who = Identity::new(1, seed, seed);
    let mut walker = Walker::new(seed, NOW - 60.0);
    let actions: Vec<_> = (0..n).map(|_| walker.next_action(3.0)).collect();
    let mut json = String::new();
    workload::write_payload(&mut json, &who, &actions, NOW);
    json
}

/// 64 KiB or so of SSE frames with a heartbeat now and then.
fn stream_bytes() -> Vec<u8> {
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < 64 * 1024 {
        if i.is_multiple_of(20) {
            out.push_str("event: heartbeat\ndata:\n\n");
        }
        out.push_str("data: ");
        out.push_str(&payload(1 + (i % 3) as usize, i));
        out.push_str("\n\n");
        i += 1;
    }
    out.into_bytes()
}

/// A session of 20 actions in 4 batches, the older half summarised by the built-in summarizer:
/// what retrieval renders for a typical user.
fn session() -> Session {
    session_of(1)
}

/// [`session`] for another visitor (`seed`): same shape, other pages and words.
fn session_of(seed: u64) -> Session {
    let who = Identity::new(1, seed, seed);
    let mut session = Session::new(SessionId::parse(&who.session_id).unwrap(), NOW - 200.0);
    let mut walker = Walker::new(seed, NOW - 200.0);
    let limits = SessionLimits { max_chunks: 50 };
    for b in 0..6 {
        let actions: Vec<_> = (0..5).map(|_| walker.next_action(6.0)).collect();
        let batch = workload::batch(&who, &actions, b * 5).unwrap();
        session.append(batch, walker.clock(), limits);
        if b == 3 {
            let job = session.claim_summary(20, NOW, NOW + 60.0, 1).unwrap();
            let draft = builtin::summarize(job.previous.as_deref(), &job.chunks);
            session.finish_summary(&job, draft, NOW);
        }
    }
    session
}

fn sse_parsing(c: &mut Criterion) {
    let bytes = stream_bytes();
    let mut group = c.benchmark_group("sse_parser");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("64KiB_whole", |b| {
        b.iter(|| {
            let mut parser = SseParser::default();
            let mut events = 0usize;
            parser.feed(black_box(&bytes), &mut |_| events += 1);
            events
        })
    });
    group.bench_function("64KiB_in_1500B_reads", |b| {
        b.iter(|| {
            let mut parser = SseParser::default();
            let mut events = 0usize;
            for piece in bytes.chunks(1500) {
                parser.feed(black_box(piece), &mut |_| events += 1);
            }
            events
        })
    });
    group.finish();
}

fn payload_decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload_decode");
    for n in [1usize, 5] {
        let json = payload(n, 9);
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(format!("actions_{n}"), |b| {
            b.iter(|| decode(black_box(json.as_bytes())))
        });
    }
    group.finish();
}

fn activity_rendering(c: &mut Criterion) {
    let session = session();
    c.bench_function("render_activity/20_actions_summarised", |b| {
        b.iter(|| render_activity(black_box(&session), NOW, 120.0))
    });
}

fn relevance_scoring(c: &mut Criterion) {
    let session = session();
    c.bench_function("session_records/20_actions_summarised", |b| {
        b.iter(|| {
            session_records(
                black_box(&session),
                "how do I export a csv of my report?",
                NOW,
                120.0,
            )
        })
    });
}

/// The whole per-request work of a `/retrieval` answer for one session (render, score, select,
/// serialise): `rebuilt` builds every record and serialises them, as every request did before
/// answers were prepared per session snapshot; `prepared` is what a request costs now while
/// the session is unchanged (the preparation cached by the first).
fn retrieval_answer(c: &mut Criterion) {
    let session = Arc::new(session());
    let question = "how do I export a csv of my report?";
    let mut group = c.benchmark_group("retrieval_answer");
    group.bench_function("rebuilt/20_actions_summarised", |b| {
        b.iter(|| {
            let records = chosen_records(black_box(&session), question, None, 0.0, 5, NOW, 120.0);
            records_body(&records)
        })
    });
    group.bench_function("prepared/20_actions_summarised", |b| {
        b.iter(|| answer_body(black_box(&session), question, None, 0.0, 5, NOW, 120.0))
    });
    // Each answer a second after the last: the activity view's head is written every time
    // (in `prepared` it is written once per second and reused, as under load).
    group.bench_function("prepared_each_second/20_actions_summarised", |b| {
        let mut now = NOW;
        b.iter(|| {
            now += 1.0;
            answer_body(black_box(&session), question, None, 0.0, 5, now, 120.0)
        })
    });
    // 500 sessions answered in turn, as `livectx bench retrieval` asks: each answer reads a
    // preparation the CPU's caches mostly no longer hold, which one session in a loop hides.
    // Built once: criterion calls this closure again for the warm-up and for every sample.
    let sessions: Vec<Arc<Session>> = (0..500).map(|i| Arc::new(session_of(i + 1))).collect();
    // A fixed stride through them (coprime with 500), so consecutive answers are apart.
    let mut at = 0usize;
    group.bench_function("prepared/500_sessions_in_turn", |b| {
        b.iter(|| {
            at = (at + 263) % sessions.len();
            answer_body(black_box(&sessions[at]), question, None, 0.0, 5, NOW, 120.0)
        })
    });
    group.finish();
}

/// Reading a typical Dify body (`parse_request`): the four fields, the rest skipped.
fn retrieval_request(c: &mut Criterion) {
    let body = br#"{"knowledge_id": "acme", "query": "session_id: ps_4f1c2a\nhow do I export a csv of my report?", "retrieval_setting": {"top_k": 5, "score_threshold": 0.5}, "metadata_condition": null, "inputs": {"user": "u_1", "lang": "en"}}"#;
    c.bench_function("retrieval_request/parse", |b| {
        b.iter(|| parse_request(black_box(body)))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = sse_parsing, payload_decoding, activity_rendering, relevance_scoring, retrieval_answer, retrieval_request
}
criterion_main!(hot_paths);
