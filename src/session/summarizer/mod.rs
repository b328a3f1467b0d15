//! Background summarisation: compress each busy session before anyone asks, without ever
//! losing an action.
//!
//! Ingestion only *notifies* the summarizer (a set insert and a wake-up); a scheduling task
//! claims jobs from the store (at most one in flight per session, cluster-wide for Redis), runs
//! them under a global concurrency limit, and writes results back with the store's
//! "replace exactly the covered chunks" rule. A failing LLM is retried per session with
//! exponential backoff; meanwhile the store's chunk cap folds the oldest chunks with the
//! built-in summarizer, so nothing is ever dropped.

/// The built-in summarizer lives beside the model (the session folds with it at its cap).
pub use crate::session::model::digest as builtin;
pub mod llm;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::session::model::{SessionId, SummaryApplied, SummaryDraft, SummaryJob};
use crate::session::store::SessionStore;
use crate::telemetry::Metrics;

pub use llm::{DEFAULT_PROMPT, LlmClient, LlmConfig, LlmError};

/// Summarizer settings.
#[derive(Debug, Clone)]
pub struct SummarizerConfig {
    /// Unsummarised actions that make a session due.
    pub threshold: usize,
    /// LLM calls in flight at most, over all sessions.
    pub concurrency: usize,
    /// First retry delay after a failure; doubles per failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// `None`: the built-in summarizer.
    pub llm: Option<LlmConfig>,
}

/// Which engine writes summaries.
enum Engine {
    Builtin,
    Llm(LlmClient),
}

/// What a job ended with, reported back to the scheduling loop.
enum JobEnd {
    /// Nothing to do, or done: look again only when notified.
    Settled,
    /// A summary was stored, or lost a race: the session may be due again right away.
    Recheck,
    /// The summarizer failed: retry after backoff.
    Failed,
}

struct Inner {
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    engine: Engine,
    config: SummarizerConfig,
    pending: Mutex<HashSet<SessionId>>,
    wake: Notify,
    permits: Arc<Semaphore>,
}

/// Handle to the background summarizer; cheap to clone.
#[derive(Clone)]
pub struct Summarizer {
    inner: Arc<Inner>,
}

impl Summarizer {
    /// Build the summarizer (the LLM client when configured, else the built-in one).
    pub fn new(
        store: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        config: SummarizerConfig,
    ) -> Result<Self, LlmError> {
        let engine = match &config.llm {
            Some(llm) => Engine::Llm(LlmClient::new(llm.clone())?),
            None => Engine::Builtin,
        };
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                metrics,
                engine,
                config,
                pending: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                permits,
            }),
        })
    }

    /// `llm (<model>)` or `builtin`, for logs and `/readyz`.
    pub fn engine_name(&self) -> String {
        match &self.inner.engine {
            Engine::Builtin => "builtin".to_string(),
            Engine::Llm(client) => format!("llm ({})", client.model()),
        }
    }

    /// Actions that make a session due.
    pub fn threshold(&self) -> usize {
        self.inner.config.threshold.max(1)
    }

    /// Tell the summarizer a session has `unsummarized` raw actions. Never waits.
    pub fn notify(&self, id: &SessionId, unsummarized: usize) {
        if unsummarized < self.threshold() {
            return;
        }
        let inserted = crate::sync::lock(&self.inner.pending).insert(id.clone());
        if inserted {
            self.inner.wake.notify_one();
        }
    }

    /// Run the scheduling loop until `shutdown`.
    pub fn spawn(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run(shutdown).await })
    }

    async fn run(self, shutdown: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(SessionId, JobEnd)>();
        let mut in_flight: HashSet<SessionId> = HashSet::new();
        // Sessions whose last attempt failed: (failures so far, earliest next attempt).
        let mut backoff: HashMap<SessionId, (u32, Instant)> = HashMap::new();
        let mut deferred: HashSet<SessionId> = HashSet::new();
        loop {
            let next_due = deferred
                .iter()
                .filter_map(|id| backoff.get(id).map(|(_, at)| *at))
                .min();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.inner.wake.notified() => {}
                Some((id, end)) = done_rx.recv() => {
                    in_flight.remove(&id);
                    match end {
                        JobEnd::Settled => { backoff.remove(&id); }
                        JobEnd::Recheck => {
                            backoff.remove(&id);
                            self.requeue(id);
                        }
                        JobEnd::Failed => {
                            let failures = backoff.get(&id).map_or(0, |(n, _)| *n) + 1;
                            let delay = self.retry_delay(failures);
                            backoff.insert(id.clone(), (failures, Instant::now() + delay));
                            deferred.insert(id);
                        }
                    }
                }
                () = sleep_until_opt(next_due) => {}
            }
            let now = Instant::now();
            let mut due: Vec<SessionId> = crate::sync::lock(&self.inner.pending).drain().collect();
            deferred.retain(|id| {
                let ready = backoff.get(id).is_none_or(|(_, at)| *at <= now);
                if ready {
                    due.push(id.clone());
                }
                !ready
            });
            for id in due {
                if in_flight.contains(&id) {
                    // Looked at again when the running job reports back.
                    continue;
                }
                if backoff.get(&id).is_some_and(|(_, at)| *at > now) {
                    // Still backing off: one retry when due, never one call per event.
                    deferred.insert(id);
                    continue;
                }
                in_flight.insert(id.clone());
                let this = self.clone();
                let done = done_tx.clone();
                let attempt = backoff.get(&id).map_or(0, |(n, _)| *n);
                tokio::spawn(async move {
                    let end = this.run_job(&id, attempt).await;
                    let _ = done.send((id, end));
                });
            }
            self.inner
                .metrics
                .summary_queue
                .set((in_flight.len() + deferred.len()) as i64);
        }
    }

    fn requeue(&self, id: SessionId) {
        crate::sync::lock(&self.inner.pending).insert(id);
    }

    fn retry_delay(&self, failures: u32) -> Duration {
        let base = self.inner.config.retry_base.as_secs_f64();
        let max = self.inner.config.retry_max.as_secs_f64().max(base);
        let exp = base * 2f64.powi(failures.saturating_sub(1).min(20) as i32);
        let jitter = rand::rng().random_range(0.8..1.2);
        Duration::from_secs_f64((exp * jitter).min(max))
    }

    fn claim_lease(&self) -> Duration {
        match &self.inner.config.llm {
            Some(llm) => llm.timeout + Duration::from_secs(15),
            None => Duration::from_secs(15),
        }
    }

    async fn run_job(&self, id: &SessionId, attempt: u32) -> JobEnd {
        let inner = &self.inner;
        let Ok(_permit) = inner.permits.clone().acquire_owned().await else {
            return JobEnd::Settled;
        };
        let job = match inner
            .store
            .claim_summary(id, self.threshold(), clock::now(), self.claim_lease())
            .await
        {
            Ok(Some(job)) => job,
            Ok(None) => return JobEnd::Settled,
            Err(error) => {
                inner.metrics.store_error("claim_summary");
                tracing::warn!(session = %id, %error, "could not claim a summary job");
                return JobEnd::Failed;
            }
        };
        let (result, summarizer) = self.summarize(&job).await;
        match result {
            Ok(draft) => self.store_result(&job, draft, summarizer).await,
            Err(error) => {
                inner.metrics.summary(summarizer, "failed");
                tracing::warn!(
                    session = %id,
                    attempt = attempt + 1,
                    %error,
                    "summary failed; nothing was removed, retrying with backoff"
                );
                if let Err(error) = inner.store.release_summary(&job).await {
                    inner.metrics.store_error("release_summary");
                    tracing::warn!(session = %id, %error, "could not release summary claim; it will lapse");
                }
                JobEnd::Failed
            }
        }
    }

    async fn summarize(&self, job: &SummaryJob) -> (Result<SummaryDraft, LlmError>, &'static str) {
        match &self.inner.engine {
            Engine::Builtin => (
                Ok(builtin::summarize(job.previous.as_deref(), &job.chunks)),
                "builtin",
            ),
            Engine::Llm(client) => {
                let started = Instant::now();
                let result = client.summarize(job).await;
                self.inner
                    .metrics
                    .llm_call(result.is_ok(), started.elapsed().as_secs_f64());
                (result, "llm")
            }
        }
    }

    async fn store_result(
        &self,
        job: &SummaryJob,
        draft: SummaryDraft,
        summarizer: &'static str,
    ) -> JobEnd {
        let inner = &self.inner;
        match inner.store.finish_summary(job, draft, clock::now()).await {
            Ok(SummaryApplied::Applied { removed_chunks }) => {
                inner.metrics.summary(summarizer, "ok");
                tracing::debug!(session = %job.session_id, removed_chunks, through_seq = job.through_seq, "summary stored");
                JobEnd::Recheck
            }
            Ok(SummaryApplied::Stale) => {
                inner.metrics.summary(summarizer, "stale");
                JobEnd::Recheck
            }
            Ok(SummaryApplied::Gone) => JobEnd::Settled,
            Err(error) => {
                inner.metrics.store_error("finish_summary");
                tracing::warn!(session = %job.session_id, %error, "could not store summary; will retry");
                if let Err(error) = inner.store.release_summary(job).await {
                    inner.metrics.store_error("release_summary");
                    tracing::warn!(session = %job.session_id, %error, "could not release summary claim; it will lapse");
                }
                JobEnd::Failed
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
