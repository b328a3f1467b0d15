//! A fake OpenAI-compatible chat-completions endpoint with a fixed latency, on loopback.
//!
//! It answers like a real model would for the summary prompt: a bounded paragraph (about 100
//! words) naming how many new actions it saw and the latest one, so stored summaries have a
//! realistic size and never grow with the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct LlmState {
    latency: Duration,
    calls: AtomicU64,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
}

/// The fake LLM.
pub struct FakeLlm {
    pub addr: SocketAddr,
    state: Arc<LlmState>,
    shutdown: CancellationToken,
}

impl FakeLlm {
    /// Listen on 127.0.0.1:<random>, answering every call after `latency`.
    pub async fn start(latency: Duration) -> std::io::Result<Self> {
        let state = Arc::new(LlmState {
            latency,
            calls: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            max_in_flight: AtomicI64::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            addr,
            state,
            shutdown,
        })
    }

    /// `OPENAI_BASE_URL` for livectx.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls being answered right now.
    pub fn in_flight(&self) -> i64 {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Most calls in flight at once so far.
    pub fn max_in_flight(&self) -> i64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

struct InFlight<'a>(&'a LlmState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(State(state): State<Arc<LlmState>>, Json(body): Json<Value>) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&state);
    tokio::time::sleep(state.latency).await;
    let prompt = body["messages"][0]["content"].as_str().unwrap_or_default();
    let action_lines: Vec<&str> = prompt
        .lines()
        .filter(|l| l.starts_with("- "))
        .map(|l| l.trim_start_matches("- "))
        .collect();
    let latest = action_lines.last().copied().unwrap_or("nothing yet");
    let latest: String = latest.chars().take(160).collect();
    let text = format!(
        "The user has been moving between the dashboard, projects, reports and settings pages \
         of the product, mostly clicking through navigation and filling in short forms. In the \
         latest stretch they performed {} actions; the most recent one was: {latest}. They seem \
         to be trying to finish a configuration task and have revisited some pages, which can \
         mean they are looking for a setting they cannot find. Earlier parts of the session are \
         consistent with routine use of the product.",
        action_lines.len()
    );
    Json(json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt.len() / 4, "completion_tokens": 110, "total_tokens": prompt.len() / 4 + 110},
    }))
    .into_response()
}
