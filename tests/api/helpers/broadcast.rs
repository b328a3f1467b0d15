//! A connector stream with Autoplay's fan-out: every open connection receives every event
//! pushed (there are no consumer groups). [`super::FakeConnector`] hands its live feed to one
//! connection at a time, which cannot show a stale ex-leader and a new leader reading at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;
use tokio::sync::broadcast;

struct Shared {
    events: broadcast::Sender<Bytes>,
    connections: AtomicUsize,
    open: Arc<AtomicUsize>,
}

/// A local SSE server that broadcasts pushed frames to every subscriber.
pub struct BroadcastConnector {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Counts an open subscription while its body stream lives.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BroadcastConnector {
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            events,
            connections: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
        });
        let app = Router::new()
            .route("/stream/{product}", get(subscribe))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    pub fn url(&self, product: &str) -> String {
        format!("http://{}/stream/{product}", self.addr)
    }

    /// Send one `data:` frame to every open connection.
    pub fn push_json(&self, value: &Value) {
        let _ = self
            .shared
            .events
            .send(Bytes::from(format!("data: {value}\n\n")));
    }

    /// Connections ever accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

async fn subscribe(State(shared): State<Arc<Shared>>) -> Response {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    shared.open.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard(Arc::clone(&shared.open));
    let receiver = shared.events.subscribe();
    // A heartbeat first, so the consumer knows at once that it is connected.
    let hello = Bytes::from_static(b"event: heartbeat\ndata: {}\n\n");
    let stream = futures_util::stream::unfold(
        (Some(hello), receiver, guard),
        |(first, mut receiver, guard)| async move {
            if let Some(first) = first {
                return Some((Ok::<Bytes, Infallible>(first), (None, receiver, guard)));
            }
            loop {
                match receiver.recv().await {
                    Ok(bytes) => return Some((Ok(bytes), (None, receiver, guard))),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
