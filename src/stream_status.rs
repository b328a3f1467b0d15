//! The live state of each Autoplay stream: written by the stream consumer (`ingest::sse`),
//! read by `/readyz` and the operator console. It lives below both, so the APIs report on the
//! streams without importing the ingest layer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

use crate::telemetry::redact_url;

/// Live state of one stream, for `/readyz`.
#[derive(Debug)]
pub struct StreamStatus {
    pub label: String,
    pub url: String,
    connected: AtomicBool,
    leading: AtomicBool,
    last_frame_at: AtomicU64,
    reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A serialisable view of [`StreamStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatusView {
    pub stream: String,
    pub url: String,
    pub connected: bool,
    /// False while another replica holds this stream's lease.
    pub leading: bool,
    pub last_frame_age_seconds: Option<f64>,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

impl StreamStatus {
    /// A stream not yet connected; `url` is redacted here, so no secret reaches `/readyz`.
    pub fn new(label: String, url: &str) -> Self {
        Self {
            label,
            url: redact_url(url),
            connected: AtomicBool::new(false),
            leading: AtomicBool::new(false),
            last_frame_at: AtomicU64::new(0f64.to_bits()),
            reconnects: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The last problem, shown until the stream delivers again.
    pub fn set_error(&self, error: Option<String>) {
        *crate::sync::lock(&self.last_error) = error;
    }

    /// Set whether this replica holds the stream's lease.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    /// Set connected or not; whether it was connected before.
    pub fn swap_connected(&self, connected: bool) -> bool {
        self.connected.swap(connected, Ordering::Relaxed)
    }

    /// One more reconnection.
    pub fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame arrived at `now` (Unix seconds).
    pub fn mark_frame(&self, now: f64) {
        self.last_frame_at.store(now.to_bits(), Ordering::Relaxed);
    }

    /// When the last frame arrived (0 before any).
    pub fn last_frame_at(&self) -> f64 {
        f64::from_bits(self.last_frame_at.load(Ordering::Relaxed))
    }

    /// Connected and delivering.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Does this replica consume the stream (always true without leadership)?
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Snapshot for `/readyz`.
    pub fn view(&self, now: f64) -> StreamStatusView {
        let last = f64::from_bits(self.last_frame_at.load(Ordering::Relaxed));
        StreamStatusView {
            stream: self.label.clone(),
            url: self.url.clone(),
            connected: self.is_connected(),
            leading: self.is_leading(),
            last_frame_age_seconds: (last > 0.0).then(|| ((now - last) * 1000.0).round() / 1000.0),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: crate::sync::lock(&self.last_error).clone(),
        }
    }
}
