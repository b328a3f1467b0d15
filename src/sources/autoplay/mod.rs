//! Autoplay's own wire formats: the activity payloads of its stream and webhook, and the
//! Server-Sent Events framing of its stream.

pub mod payload;
pub mod sse;
