//! Renderers: a session turned into the text and records chatbots read. Pure functions of the
//! model (and the clock), below every API, so `/retrieval`, MCP, REST and the console all show
//! the same words.

pub mod activity;
pub mod answer;
pub mod records;
pub mod word_index;
