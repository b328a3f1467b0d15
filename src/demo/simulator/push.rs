//! Webhook pushes signed like the connector, retried with backoff on 5xx and network errors.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::header;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::demo::config::PushFormat;
use crate::ingest::webhook;

/// Webhook deliveries waiting per push worker; beyond, deliveries are dropped and counted.
const PUSH_QUEUE: usize = 1024;
/// The header PostHog's webhook destination carries the shared secret in (set by `livectx
/// connect posthog`).
const POSTHOG_SECRET_HEADER: &str = "X-PostHog-Secret";
/// Attempts per webhook delivery (the first and four retries).
const PUSH_ATTEMPTS: u32 = 5;

pub(super) fn spawn_pushers(
    url: &str,
    secret: &str,
    format: PushFormat,
    concurrency: usize,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> (Vec<mpsc::Sender<Bytes>>, Vec<tokio::task::JoinHandle<()>>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("livectx-simulate/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client; not pushing");
            return (Vec::new(), Vec::new());
        }
    };
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(PUSH_QUEUE);
        senders.push(tx);
        let pusher = Pusher {
            client: client.clone(),
            url: url.to_string(),
            secret: secret.to_string(),
            format,
            shared: Arc::clone(&shared),
            shutdown: shutdown.clone(),
        };
        tasks.push(tokio::spawn(async move {
            while let Some(body) = rx.recv().await {
                pusher.deliver(body).await;
            }
        }));
    }
    (senders, tasks)
}

/// Delivers payloads to a webhook the way the connector does.
struct Pusher {
    client: reqwest::Client,
    url: String,
    secret: String,
    format: PushFormat,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Pusher {
    async fn deliver(&self, body: Bytes) {
        let signature = match self.format {
            PushFormat::Autoplay => Some(webhook::sign(&self.secret, &body)),
            PushFormat::Posthog => None,
        };
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=PUSH_ATTEMPTS {
            let request = self
                .client
                .post(&self.url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            let request = match &signature {
                Some(signature) => request
                    .header(webhook::SIGNATURE_HEADER, signature)
                    .bearer_auth(&self.secret),
                None => request.header(POSTHOG_SECRET_HEADER, &self.secret),
            };
            let sent = request.send().await;
            let retryable = match sent {
                Ok(response) if response.status().is_success() => {
                    self.shared.counters.pushed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // PostHog retries these two; the connector retries no 4xx.
                Ok(response)
                    if self.format == PushFormat::Posthog
                        && matches!(response.status().as_u16(), 408 | 429) =>
                {
                    format!("HTTP {}", response.status().as_u16())
                }
                Ok(response) if response.status().is_client_error() => {
                    let who = match self.format {
                        PushFormat::Autoplay => "as the connector does",
                        PushFormat::Posthog => "as PostHog does",
                    };
                    self.fail(&format!(
                        "the webhook refused a delivery with HTTP {}; it is not retried ({who})",
                        response.status().as_u16()
                    ));
                    return;
                }
                Ok(response) => format!("HTTP {}", response.status().as_u16()),
                Err(error) => error.without_url().to_string(),
            };
            if attempt == PUSH_ATTEMPTS {
                self.fail(&format!(
                    "a webhook delivery failed after {PUSH_ATTEMPTS} attempts: {retryable}"
                ));
                return;
            }
            tracing::debug!(attempt, error = %retryable, "webhook delivery failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => {
                    self.fail("a webhook delivery was abandoned at shutdown");
                    return;
                }
            }
            delay *= 2;
        }
    }

    fn fail(&self, message: &str) {
        let failed = self
            .shared
            .counters
            .push_failed
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failed.is_power_of_two() {
            tracing::warn!(failed, "{message}");
        }
    }
}
