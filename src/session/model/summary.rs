//! The rolling summary, and the jobs and drafts summarizers exchange with the store.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::action::Chunk;
use super::digest;
use super::ids::SessionId;

/// Cap on a stored summary's text; a longer one keeps its newest part.
pub const MAX_SUMMARY_CHARS: usize = 6000;

/// Which summarizer wrote a summary; shown in record metadata as `summarizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummarySource {
    /// An OpenAI-compatible LLM.
    Llm,
    /// The deterministic built-in summarizer (the default, and the fallback).
    Builtin,
    /// The connector's own `summary` payload.
    Connector,
}

impl SummarySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Builtin => "builtin",
            Self::Connector => "connector",
        }
    }
}

/// The rolling summary of everything a session did before its remaining raw chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub text: String,
    pub source: SummarySource,
    /// Every chunk with `seq <= covers_through_seq` is represented in this summary.
    pub covers_through_seq: u64,
    /// How many raw actions it condenses, in total over its whole history.
    pub covered_actions: u64,
    /// Time range of the activity it covers.
    pub first_ts: f64,
    pub last_ts: f64,
    /// Server clock when written.
    pub updated_at: f64,
    /// Bumped on every replacement; lets a slow summarizer detect that it lost a race.
    pub generation: u64,
    /// Structured state of the built-in summarizer, so that its summaries merge without
    /// re-reading text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<digest::Digest>,
}

/// A snapshot of the work a summarizer must do: the previous summary plus the raw chunks after it.
#[derive(Debug, Clone)]
pub struct SummaryJob {
    pub session_id: SessionId,
    pub previous: Option<Arc<Summary>>,
    pub chunks: Vec<Arc<Chunk>>,
    /// Highest chunk sequence number in `chunks`.
    pub through_seq: u64,
    /// A token proving the claim; the store only accepts the result from its holder.
    pub claim_token: u64,
}

impl SummaryJob {
    pub fn action_count(&self) -> usize {
        self.chunks.iter().map(|c| c.actions.len()).sum()
    }
}

/// A summary written by a summarizer, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryDraft {
    pub text: String,
    pub source: SummarySource,
    pub digest: Option<digest::Digest>,
}

/// What happened to a finished summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryApplied {
    /// Stored; it replaced the previous summary and exactly the chunks it covered.
    Applied { removed_chunks: usize },
    /// Discarded: while it was being written, a newer summary already covered more.
    Stale,
    /// The session is gone (evicted or expired) or the claim was lost.
    Gone,
}

/// Keep a summary bounded: when too long, keep its newest part (cut at a character boundary).
pub(super) fn cap_summary_text(text: String) -> String {
    if text.chars().count() <= MAX_SUMMARY_CHARS {
        return text;
    }
    let skip = text.chars().count() - MAX_SUMMARY_CHARS + 1;
    let tail: String = text.chars().skip(skip).collect();
    format!("…{tail}")
}
