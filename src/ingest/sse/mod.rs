//! Server-Sent Events: the parser and the stream consumer.

pub mod client;
pub mod parser;

pub use client::{StreamConfig, StreamConsumer, StreamHandle, StreamStatus, StreamStatusView};
pub use parser::{SseEvent, SseItem, SseParser};
