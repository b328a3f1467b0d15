//! A synthetic Autoplay connector: `GET /stream/<product>` streams whatever the benchmark feeds
//! it, on loopback, and can cut the connection on demand (the soak's stream drops).
//!
//! One feed, one live connection at a time (livectx opens one per product). When a connection
//! ends — cut by the benchmark or closed by livectx — the feed waits for the next one, so
//! nothing queued is lost between connections unless the benchmark chooses to skip frames while
//! disconnected, as the real connector does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::workload::PRODUCT;

struct Inner {
    feed: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// Cancelled to end the current connection.
    cut: Mutex<CancellationToken>,
    connected: AtomicBool,
    connections: watch::Sender<u64>,
    bytes_streamed: AtomicU64,
}

/// The synthetic connector.
pub struct SyntheticConnector {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    tx: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
}

impl SyntheticConnector {
    /// Listen on 127.0.0.1:<random>; `buffer` chunks may wait between the feed and the socket.
    pub async fn start(buffer: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let inner = Arc::new(Inner {
            feed: Mutex::new(Some(rx)),
            cut: Mutex::new(CancellationToken::new()),
            connected: AtomicBool::new(false),
            connections: watch::Sender::new(0),
            bytes_streamed: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/stream/{product}", get(stream))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Each frame goes out when it is sent: without TCP_NODELAY, Nagle's algorithm holds a
        // small frame back until the previous one is acknowledged, and the reader's delayed
        // ACK makes that tens of milliseconds — a delay of this connector, not of livectx.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            addr,
            inner,
            tx,
            shutdown,
        })
    }

    /// The stream URL to give livectx (`AUTOPLAY_STREAM_URL`).
    pub fn url(&self) -> String {
        format!("http://{}/stream/{PRODUCT}", self.addr)
    }

    /// Queue SSE bytes for the stream (waits while the buffer is full). False once stopped.
    pub async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    /// Is a client connected right now?
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self.inner.connections.borrow()
    }

    /// Bytes handed to connections so far.
    pub fn bytes_streamed(&self) -> u64 {
        self.inner.bytes_streamed.load(Ordering::Relaxed)
    }

    /// Wait until at least `n` connections have been accepted and one is live.
    pub async fn wait_connected(&self, n: u64) {
        let mut rx = self.inner.connections.subscribe();
        let _ = rx.wait_for(|count| *count >= n).await;
        while !self.is_connected() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// End the current connection (its body finishes; the client sees end of stream).
    pub fn cut(&self) {
        self.inner
            .cut
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cancel();
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.cut();
        self.shutdown.cancel();
    }
}

/// The feed while a connection holds it; handed back when the connection ends, however it ends.
struct Lease {
    rx: Option<mpsc::Receiver<Bytes>>,
    inner: Arc<Inner>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.inner.connected.store(false, Ordering::Release);
        *self
            .inner
            .feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.rx.take();
    }
}

async fn stream(State(inner): State<Arc<Inner>>) -> Response {
    let taken = inner
        .feed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(rx) = taken else {
        // Another connection holds the feed: "try again soon" (livectx backs off and retries).
        return (StatusCode::SERVICE_UNAVAILABLE, "feed busy").into_response();
    };
    let cut = CancellationToken::new();
    *inner
        .cut
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = cut.clone();
    inner.connected.store(true, Ordering::Release);
    inner.connections.send_modify(|n| *n += 1);
    let lease = Lease {
        rx: Some(rx),
        inner: Arc::clone(&inner),
    };
    let body = futures_util::stream::unfold((lease, cut), |(mut lease, cut)| async move {
        let rx = lease.rx.as_mut()?;
        let next = tokio::select! {
            biased;
            () = cut.cancelled() => None,
            item = rx.recv() => item,
        };
        let bytes = next?;
        lease
            .inner
            .bytes_streamed
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Some((Ok::<Bytes, Infallible>(bytes), (lease, cut)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
