//! Background summarisation against a local OpenAI-compatible server that is slow, failing,
//! hanging or malformed — while events keep arriving. After every step: every delivered action
//! is represented in its session (a raw chunk, or a summary whose text and coverage include it).

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::{
    FakeLlm, LlmBehaviour, TestApp, actions_payload, eventually, metric, test_config,
};
use livectx::ingest::{Channel, Ingested, Source};
use livectx::session::model::{Session, SessionId};

struct Harness {
    app: TestApp,
    /// Titles delivered per session, with the sequence number of their chunk.
    delivered: HashMap<String, Vec<(u64, String)>>,
    counter: usize,
}

impl Harness {
    async fn new(
        llm: Option<&FakeLlm>,
        threshold: u32,
        max_chunks: u32,
        timeout: Duration,
    ) -> Self {
        let mut config = test_config();
        config.summary_threshold = threshold;
        config.max_chunks = max_chunks;
        config.llm_timeout = timeout;
        if let Some(llm) = llm {
            config.openai_base_url = Some(llm.base_url());
            config.openai_api_key = Some("sk-test-key".into());
        }
        Self {
            app: TestApp::spawn(config).await,
            delivered: HashMap::new(),
            counter: 0,
        }
    }

    /// Deliver one batch of `n` uniquely titled clicks through the real ingestion path.
    async fn deliver(&mut self, session: &str, n: usize) {
        let titles: Vec<String> = (0..n)
            .map(|_| {
                self.counter += 1;
                format!("Click T{}", self.counter)
            })
            .collect();
        let refs: Vec<&str> = titles.iter().map(String::as_str).collect();
        let body = serde_json::to_vec(&actions_payload(
            Some(session),
            None,
            &refs,
            livectx::clock::now(),
        ))
        .unwrap();
        let result = self
            .app
            .ingestor
            .ingest_json(Source::Webhook, &body, Channel::default())
            .await;
        assert_eq!(result, Ingested::Stored);
        let seq = self.session(session).await.unwrap().last_seq();
        self.delivered
            .entry(session.to_string())
            .or_default()
            .extend(titles.into_iter().map(|t| (seq, t)));
    }

    async fn session(&self, session: &str) -> Option<std::sync::Arc<Session>> {
        let id = SessionId::parse(session).unwrap();
        self.app
            .state
            .store
            .session(&id, livectx::clock::now())
            .await
            .unwrap()
    }

    /// Every delivered action is in a raw chunk, or covered by the summary (by sequence
    /// number) — and, when `text_too`, named by the summary text.
    async fn assert_nothing_lost(&self, text_too: bool) {
        for (session, delivered) in &self.delivered {
            let s = self.session(session).await.expect("session exists");
            let raw: Vec<&str> = s.raw_action_iter().map(|a| a.title()).collect();
            let covered = s.summary().as_ref().map_or(0, |x| x.covers_through_seq);
            let text = s.summary().as_ref().map_or("", |x| x.text.as_str());
            for (seq, title) in delivered {
                let in_raw = raw.contains(&title.as_str());
                let named =
                    text.contains(&format!("{title}|")) || text.contains(&format!("{title}]"));
                let in_summary = *seq <= covered && (!text_too || named);
                assert!(
                    in_raw || in_summary,
                    "{session}: {title} (seq {seq}) lost; covered through {covered}; raw {raw:?}; summary {text}"
                );
            }
            let newest = &delivered.last().unwrap().1;
            assert!(
                s.recent_action_iter().any(|a| a.title() == newest),
                "{session}: newest action {newest} missing from the activity view"
            );
        }
    }
}

#[tokio::test]
async fn a_slow_llm_never_loses_actions_that_arrive_while_it_thinks() {
    let llm = FakeLlm::start(|_| LlmBehaviour::Slow(Duration::from_secs(2))).await;
    let mut h = Harness::new(Some(&llm), 6, 50, Duration::from_secs(30)).await;
    for round in 0..40 {
        h.deliver(["s1", "s2"][round % 2], 2).await;
        h.assert_nothing_lost(true).await;
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    // Both sessions' first summaries, and at least one second (rolling) summary.
    eventually(Duration::from_secs(20), "summaries stored", || async {
        metric(
            &h.app.metrics().await,
            "livectx_summaries_total{summarizer=\"llm\",outcome=\"ok\"}",
        ) >= 3.0
    })
    .await;
    h.assert_nothing_lost(true).await;
    // Rolling: each prompt after a session's first carries its previous summary.
    let prompts = llm.prompts();
    assert!(
        prompts.iter().any(|p| p.contains("[Click T")),
        "a later prompt carries the previous summary: {prompts:?}"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn failing_every_other_call_retries_with_backoff_and_loses_nothing() {
    let llm = FakeLlm::start(|call| {
        if call % 2 == 0 {
            LlmBehaviour::Fail
        } else {
            LlmBehaviour::Ok
        }
    })
    .await;
    let mut h = Harness::new(Some(&llm), 5, 50, Duration::from_secs(5)).await;
    for _ in 0..30 {
        h.deliver("s1", 2).await;
        h.assert_nothing_lost(true).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(
        Duration::from_secs(15),
        "a summary after a failure",
        || async {
            metric(
                &h.app.metrics().await,
                "livectx_summaries_total{summarizer=\"llm\",outcome=\"ok\"}",
            ) >= 1.0
        },
    )
    .await;
    h.assert_nothing_lost(true).await;
    let m = h.app.metrics().await;
    assert!(
        metric(
            &m,
            "livectx_summaries_total{summarizer=\"llm\",outcome=\"failed\"}"
        ) >= 1.0
    );
    // 30 batches would be 30 calls if every event triggered one; backoff keeps it small.
    assert!(llm.calls() <= 8, "{} LLM calls for 30 batches", llm.calls());
    h.app.stop().await;
}

#[tokio::test]
async fn a_hanging_llm_times_out_and_the_chunk_cap_folds_instead_of_dropping() {
    let llm = FakeLlm::start(|_| LlmBehaviour::Hang).await;
    let mut h = Harness::new(Some(&llm), 3, 4, Duration::from_millis(300)).await;
    for _ in 0..12 {
        h.deliver("s1", 1).await;
        h.assert_nothing_lost(false).await;
    }
    let s = h.session("s1").await.unwrap();
    assert_eq!(s.chunks().len(), 4, "cap held");
    let summary = s
        .summary()
        .as_ref()
        .expect("oldest chunks folded into a summary");
    assert_eq!(summary.source.as_str(), "builtin");
    assert_eq!(summary.covers_through_seq, 8);
    eventually(Duration::from_secs(5), "timeout counted", || async {
        metric(
            &h.app.metrics().await,
            "livectx_summaries_total{summarizer=\"llm\",outcome=\"failed\"}",
        ) >= 1.0
    })
    .await;
    let m = h.app.metrics().await;
    assert_eq!(
        metric(
            &m,
            "livectx_summaries_total{summarizer=\"builtin\",outcome=\"fallback\"}"
        ),
        8.0
    );
    h.app.stop().await;
}

#[tokio::test]
async fn malformed_llm_answers_remove_nothing() {
    let llm = FakeLlm::start(|_| LlmBehaviour::Malformed).await;
    let mut h = Harness::new(Some(&llm), 3, 50, Duration::from_secs(5)).await;
    for _ in 0..6 {
        h.deliver("s1", 2).await;
    }
    eventually(
        Duration::from_secs(5),
        "malformed answer counted",
        || async { llm.calls() >= 1 },
    )
    .await;
    eventually(Duration::from_secs(5), "failure counted", || async {
        metric(
            &h.app.metrics().await,
            "livectx_summaries_total{summarizer=\"llm\",outcome=\"failed\"}",
        ) >= 1.0
    })
    .await;
    let s = h.session("s1").await.unwrap();
    assert!(s.summary().is_none());
    assert_eq!(s.raw_actions(), 12);
    h.assert_nothing_lost(true).await;
    h.app.stop().await;
}

#[tokio::test]
async fn without_an_llm_the_builtin_summarizer_runs() {
    let mut h = Harness::new(None, 4, 50, Duration::from_secs(5)).await;
    for _ in 0..5 {
        h.deliver("s1", 2).await;
    }
    eventually(Duration::from_secs(5), "builtin summary", || async {
        h.session("s1").await.unwrap().summary().is_some()
    })
    .await;
    h.assert_nothing_lost(false).await;
    let (_, body) = h.app.retrieve(None, "s1", "what happened").await;
    let summary = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metadata"]["kind"] == "summary")
        .expect("a summary record");
    assert_eq!(summary["metadata"]["summarizer"], "builtin");
    assert!(
        summary["content"]
            .as_str()
            .unwrap()
            .starts_with("Summary of this user's earlier activity")
    );
    h.app.stop().await;
}

#[tokio::test]
async fn llm_errors_never_leak_the_key() {
    let llm = FakeLlm::start(|_| LlmBehaviour::Fail).await;
    let client =
        livectx::session::summarizer::LlmClient::new(livectx::session::summarizer::LlmConfig {
            base_url: llm.base_url(),
            api_key: Some("sk-very-secret".into()),
            model: "m".into(),
            temperature: 0.0,
            max_tokens: 10,
            timeout: Duration::from_secs(2),
            prompt_template: "{previous_summary} {actions}".into(),
        })
        .unwrap();
    let error = client.complete("hello").await.unwrap_err().to_string();
    assert!(
        error.contains("500") && !error.contains("sk-very-secret"),
        "{error}"
    );
}
