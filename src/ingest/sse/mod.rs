//! Server-Sent Events: the parser and the stream consumer.

pub mod client;

pub use crate::sources::autoplay::sse::{SseEvent, SseItem, SseParser};
pub use client::{StreamConfig, StreamConsumer, StreamHandle, StreamStatus, StreamStatusView};
