//! Per-session activity: the data model, the storage backends and the background summarizer
//! (the views of a session are in `render`).

pub mod buffered;
pub mod memory;
pub mod model;
pub mod persist;
pub mod pull;
pub mod redis;
pub mod store;
pub mod summarizer;

pub use memory::MemoryStore;
pub use model::{Action, ActionBatch, PersonKey, Session, SessionId};
pub use store::{SessionStore, StoreConfig, StoreError};
