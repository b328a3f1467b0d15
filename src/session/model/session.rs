//! One browser session and the rules that change it: append, fold, claim and finish summaries.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::action::{Action, ActionBatch, Chunk, SourceKind};
use super::digest;
use super::ids::{PersonKey, SessionId, normalize_email, normalize_user_id};
use super::summary::{
    Summary, SummaryApplied, SummaryDraft, SummaryJob, SummarySource, cap_summary_text,
};

/// How many recently summarised chunks stay available to the "Current User Activity" view,
/// so that summarising never blurs where the user is right now.
pub const RECENT_COVERED_CHUNKS: usize = 16;

/// How many stream gaps a session remembers.
pub const MAX_GAPS: usize = 4;

/// Identities (emails, user ids) one session is indexed under at most; a session claiming more
/// (a shared kiosk, or forged traffic) is not indexed under the extra ones, so the index stays
/// bounded and every entry is cleaned up with its session.
pub const MAX_PERSON_KEYS: usize = 32;

/// A stretch of time in which the stream was down: activity in it may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub from: f64,
    pub to: f64,
}

/// A product tour the connector offered to this session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TourOffer {
    pub flow_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: f64,
}

/// Where the user is now, kept across summarisation so "on X for N minutes" stays exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentPage {
    pub label: String,
    pub url: String,
    /// When the user arrived on this page (action time).
    pub since: f64,
}

/// The newest `$pageleave` by event time: the user left `url` at `at`. The page is "left"
/// only while it is still the current page (a later page view supersedes it), so the view
/// reads the same whatever order the two arrive in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageLeave {
    pub url: String,
    pub at: f64,
}

/// Kind of the action that carries a page leave through a batch; it ends time on a page and
/// is never stored as an action of its own.
pub const PAGE_LEAVE_KIND: &str = "pageleave";

/// Limits applied to each session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Raw chunks kept before the oldest are folded into the summary.
    pub max_chunks: usize,
}

/// What appending a batch did, for metrics and the summarizer trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendOutcome {
    pub seq: u64,
    /// True when the session did not exist before.
    pub created: bool,
    /// Raw actions not yet covered by any summary.
    pub unsummarized_actions: usize,
    /// Chunks folded into the summary by the built-in summarizer because the cap was reached.
    pub folded_chunks: usize,
}

/// Everything the store keeps about one browser session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    id: SessionId,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    /// Identity-index keys this session has been indexed under (for clean-up on eviction).
    #[serde(default)]
    person_keys: Vec<PersonKey>,
    /// Server clock, Unix seconds.
    created_at: f64,
    last_seen: f64,
    next_seq: u64,
    chunks: VecDeque<Arc<Chunk>>,
    /// Raw actions in `chunks`.
    raw_actions: usize,
    #[serde(default)]
    summary: Option<Arc<Summary>>,
    /// The newest chunks that a summary already covers, kept for the activity view.
    #[serde(default)]
    recent_covered: VecDeque<Arc<Chunk>>,
    #[serde(default)]
    current_page: Option<CurrentPage>,
    /// The newest page leave (see [`Session::left_page`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_leave: Option<PageLeave>,
    #[serde(default)]
    tour: Option<TourOffer>,
    #[serde(default)]
    gaps: Vec<Gap>,
    /// Bumped on every change (optimistic concurrency for shared backends, dirty tracking).
    #[serde(default)]
    version: u64,
    /// A summary job holds the session until this server-clock time.
    #[serde(default)]
    summary_claim_until: f64,
    #[serde(default)]
    summary_claim_token: u64,
    /// The tool that last delivered activity for this session (`None` in data written before
    /// sources were recorded).
    #[serde(default)]
    source: Option<SourceKind>,
    /// Set only on a snapshot answered while the upstream pull API could not be read (see
    /// [`crate::session::pull`]): the activity is as of this time. Never stored.
    #[serde(skip)]
    stale_as_of: Option<f64>,
}

impl Session {
    /// The session's id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The product the session belongs to, once a batch named it.
    pub fn product_id(&self) -> &Option<String> {
        &self.product_id
    }

    /// The person's email (normalised), once known.
    pub fn email(&self) -> &Option<String> {
        &self.email
    }

    /// The product's user id, once known.
    pub fn user_id(&self) -> &Option<String> {
        &self.user_id
    }

    /// The chatbot conversation this session was linked to, if any.
    pub fn conversation_id(&self) -> &Option<String> {
        &self.conversation_id
    }

    /// Identity-index keys this session has been indexed under.
    pub fn person_keys(&self) -> &[PersonKey] {
        &self.person_keys
    }

    /// When the session was created (server clock, Unix seconds).
    pub fn created_at(&self) -> f64 {
        self.created_at
    }

    /// When the session last received activity (server clock, Unix seconds).
    pub fn last_seen(&self) -> f64 {
        self.last_seen
    }

    /// The sequence number the next stored batch gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The chunks not yet covered by a summary, oldest first.
    pub fn chunks(&self) -> &VecDeque<Arc<Chunk>> {
        &self.chunks
    }

    /// Raw actions in [`Session::chunks`].
    pub fn raw_actions(&self) -> usize {
        self.raw_actions
    }

    /// The rolling summary of everything older than the chunks.
    pub fn summary(&self) -> &Option<Arc<Summary>> {
        &self.summary
    }

    /// The newest chunks a summary already covers, kept for the activity view.
    pub fn recent_covered(&self) -> &VecDeque<Arc<Chunk>> {
        &self.recent_covered
    }

    /// The page the person is on, as the last page view said.
    pub fn current_page(&self) -> &Option<CurrentPage> {
        &self.current_page
    }

    /// The last product tour offered.
    pub fn tour(&self) -> &Option<TourOffer> {
        &self.tour
    }

    /// Stretches when events may be missing (a stream gap).
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    /// Bumped on every change (optimistic concurrency, dirty tracking).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Until when a summary job holds the session (server clock).
    pub fn summary_claim_until(&self) -> f64 {
        self.summary_claim_until
    }

    /// The tool that last delivered activity for this session.
    pub fn source(&self) -> Option<SourceKind> {
        self.source
    }

    /// Set on a snapshot answered while the pull API could not be read: as of this time.
    pub fn stale_as_of(&self) -> Option<f64> {
        self.stale_as_of
    }

    /// Name the session's product, unless a batch already did (connector summaries and tours
    /// may arrive first).
    pub fn name_product(&mut self, product_id: Option<&str>) {
        if self.product_id.is_none() {
            self.product_id = product_id.map(str::to_string);
        }
    }

    /// Activity without actions (a connector summary) still counts as seen.
    pub fn touch(&mut self, now: f64) {
        self.last_seen = now;
    }

    /// Forget a summary job's hold: a restarted server runs no job.
    pub fn drop_claim(&mut self) {
        self.summary_claim_until = 0.0;
    }

    /// Make this version newer than `previous` (the compare-and-set of shared backends).
    pub fn advance_version_past(&mut self, previous: u64) {
        if self.version <= previous {
            self.version = previous + 1;
        }
    }

    /// Mark a snapshot as answered from what is held: the activity is as of `as_of`.
    pub fn mark_stale(&mut self, as_of: f64) {
        self.stale_as_of = Some(as_of);
    }

    /// Forget the covered chunks kept for the activity view (tests of what follows many
    /// summaries).
    #[cfg(test)]
    pub(crate) fn forget_recent_covered(&mut self) {
        self.recent_covered.clear();
    }

    /// A new, empty session.
    pub fn new(id: SessionId, now: f64) -> Self {
        Self {
            id,
            product_id: None,
            email: None,
            user_id: None,
            conversation_id: None,
            person_keys: Vec::new(),
            created_at: now,
            last_seen: now,
            next_seq: 1,
            chunks: VecDeque::new(),
            raw_actions: 0,
            summary: None,
            recent_covered: VecDeque::new(),
            current_page: None,
            page_leave: None,
            tour: None,
            gaps: Vec::new(),
            version: 0,
            summary_claim_until: 0.0,
            summary_claim_token: 0,
            source: None,
            stale_as_of: None,
        }
    }

    /// Store one batch as a new chunk; fold the oldest chunks into the summary if the cap is hit.
    ///
    /// Idempotent for retries: a batch identical to one already stored at the same `now` is not
    /// stored again (a shared backend may commit a write whose acknowledgement is then lost, and
    /// the retry carries the original `now`).
    pub fn append(
        &mut self,
        mut batch: ActionBatch,
        now: f64,
        limits: SessionLimits,
    ) -> AppendOutcome {
        let left = self.take_page_leaves(&mut batch.actions);
        if let Some(seq) = self.stored_at(now, &batch.actions) {
            return AppendOutcome {
                seq,
                created: false,
                unsummarized_actions: self.raw_actions,
                folded_chunks: 0,
            };
        }
        let created = self.version == 0;
        self.touch_identity(&batch);
        if batch.source.is_some() {
            self.source = batch.source;
        }
        if batch.actions.is_empty() && (left || batch.source.is_some_and(SourceKind::is_analytics))
        {
            // An identity-only event (Segment `identify`) or a page leave: the person is
            // indexed, no chunk.
            self.last_seen = now;
            self.version += 1;
            return AppendOutcome {
                seq: self.last_seq(),
                created,
                unsummarized_actions: self.raw_actions,
                folded_chunks: 0,
            };
        }
        let fallback_time = batch.forwarded_at.unwrap_or(now);
        let first_ts = batch
            .actions
            .iter()
            .filter_map(Action::time)
            .fold(f64::INFINITY, f64::min);
        let last_ts = batch
            .actions
            .iter()
            .filter_map(Action::end_time)
            .fold(f64::NEG_INFINITY, f64::max);
        let (first_ts, last_ts) = if first_ts.is_finite() && last_ts.is_finite() {
            (first_ts, last_ts)
        } else {
            (fallback_time, fallback_time)
        };
        self.update_current_page(&batch.actions, first_ts);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.raw_actions += batch.actions.len();
        self.chunks.push_back(Arc::new(Chunk {
            seq,
            actions: batch.actions.into_boxed_slice(),
            received_at: now,
            first_ts,
            last_ts,
        }));
        self.last_seen = now;
        let folded_chunks = self.fold_overflow(now, limits.max_chunks.max(1));
        self.version += 1;
        AppendOutcome {
            seq,
            created,
            unsummarized_actions: self.raw_actions,
            folded_chunks,
        }
    }

    /// Remove the page-leave actions from `actions`, keeping the newest by time (ties: the
    /// greater URL, so the choice does not depend on arrival). `true` if there was any.
    fn take_page_leaves(&mut self, actions: &mut Vec<Action>) -> bool {
        if !actions.iter().any(|a| a.kind() == PAGE_LEAVE_KIND) {
            return false;
        }
        actions.retain(|a| {
            if a.kind() != PAGE_LEAVE_KIND {
                return true;
            }
            if let Some(at) = a.time() {
                let newer = self.page_leave.as_ref().is_none_or(|held| {
                    at > held.at || (at == held.at && a.canonical_url() > held.url.as_str())
                });
                if newer {
                    self.page_leave = Some(PageLeave {
                        url: a.canonical_url().to_string(),
                        at,
                    });
                }
            }
            false
        });
        self.version += 1;
        true
    }

    /// When the user left the current page, if they did: a page leave of the current page's
    /// URL no earlier than their arrival on it or anything they did since.
    pub fn left_page(&self) -> Option<f64> {
        let page = self.current_page.as_ref()?;
        let leave = self.page_leave.as_ref()?;
        (leave.url == page.url && leave.at >= page.since && leave.at >= self.last_activity())
            .then_some(leave.at)
    }

    fn touch_identity(&mut self, batch: &ActionBatch) {
        if self.product_id.is_none() {
            self.product_id.clone_from(&batch.product_id);
        }
        if let Some(email) = batch.email.as_deref().and_then(normalize_email) {
            self.email = Some(email);
        }
        if let Some(user_id) = batch.user_id.as_deref().and_then(normalize_user_id) {
            self.user_id = Some(user_id);
        }
        if batch.conversation_id.is_some() {
            self.conversation_id.clone_from(&batch.conversation_id);
        }
        for key in batch.person_keys() {
            if !self.person_keys.contains(&key) && self.person_keys.len() < MAX_PERSON_KEYS {
                self.person_keys.push(key);
            }
        }
    }

    /// Move "now on" by action *time*, not arrival: analytics tools retry and reorder, so a
    /// batch may hold actions older than ones already stored. Actions newer than everything
    /// held are applied in time order; a late one makes the page be recomputed from every
    /// action held, in time order, so the result does not depend on delivery order.
    fn update_current_page(&mut self, actions: &[Action], batch_start: f64) {
        let latest_held = self
            .chunks
            .iter()
            .chain(self.recent_covered.iter())
            .map(|c| c.last_ts)
            .chain(self.current_page.as_ref().map(|p| p.since))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut previous = batch_start;
        let incoming: Vec<(&Action, f64)> = actions
            .iter()
            .map(|a| {
                previous = a.time().unwrap_or(previous);
                (a, previous)
            })
            .collect();
        let late = incoming.iter().any(|(_, t)| *t <= latest_held);
        if !late {
            let mut ordered = incoming;
            sort_by_time(&mut ordered);
            let current = self.current_page.take();
            self.current_page = walk_pages(current, ordered);
            return;
        }
        let mut ordered = timed_actions(self.recent_covered.iter().chain(self.chunks.iter()));
        ordered.extend(incoming);
        sort_by_time(&mut ordered);
        let earliest = ordered.first().map_or(f64::INFINITY, |(_, t)| *t);
        // A page from history that was summarised away still holds where it began.
        let start = self.current_page.take().filter(|p| p.since < earliest);
        let recomputed = walk_pages(start.clone(), ordered);
        self.current_page = recomputed.or(start);
    }

    /// Fold the oldest chunks beyond `max_chunks` into the summary with the built-in
    /// summarizer: the cap bounds memory without ever dropping an action silently.
    fn fold_overflow(&mut self, now: f64, max_chunks: usize) -> usize {
        if self.chunks.len() <= max_chunks {
            return 0;
        }
        let overflow = self.chunks.len() - max_chunks;
        let folded: Vec<Arc<Chunk>> = self.chunks.iter().take(overflow).cloned().collect();
        let through = folded.last().map_or(0, |c| c.seq);
        let draft = digest::summarize(self.summary.as_deref(), &folded);
        self.replace_with_summary(draft, through, now);
        overflow
    }

    /// The sequence number of a chunk holding exactly `actions`, stored at `now`, if any (raw or
    /// recently summarised).
    fn stored_at(&self, now: f64, actions: &[Action]) -> Option<u64> {
        self.chunks
            .iter()
            .chain(self.recent_covered.iter())
            .find(|c| c.received_at == now && *c.actions == *actions)
            .map(|c| c.seq)
    }

    /// Newest chunk sequence number, 0 when none was ever stored.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Try to claim a summary job: at most one in flight per session (the claim expires at
    /// `until`, so a crashed worker cannot block the session forever).
    pub fn claim_summary(
        &mut self,
        threshold: usize,
        now: f64,
        until: f64,
        token: u64,
    ) -> Option<SummaryJob> {
        if self.raw_actions < threshold.max(1)
            || self.chunks.is_empty()
            || self.summary_claim_until > now
        {
            return None;
        }
        self.summary_claim_until = until;
        self.summary_claim_token = token;
        let chunks: Vec<Arc<Chunk>> = self.chunks.iter().cloned().collect();
        let through_seq = chunks.last().map_or(0, |c| c.seq);
        Some(SummaryJob {
            session_id: self.id.clone(),
            previous: self.summary.clone(),
            chunks,
            through_seq,
            claim_token: token,
        })
    }

    /// Give a claim back without a result (the summarizer failed); nothing is removed.
    pub fn release_claim(&mut self, token: u64) -> bool {
        if self.summary_claim_token == token && self.summary_claim_until > 0.0 {
            self.summary_claim_until = 0.0;
            return true;
        }
        false
    }

    /// Store a finished summary job: the new summary replaces the previous one and exactly the
    /// chunks the job covered; chunks that arrived meanwhile stay raw.
    ///
    /// Accepted even if the summary changed meanwhile (a cap fold or a connector summary), as
    /// long as what is stored now covers no more than the job did: everything the newer summary
    /// knew came from the job's inputs. Otherwise the job is stale and discarded.
    pub fn finish_summary(
        &mut self,
        job: &SummaryJob,
        draft: SummaryDraft,
        now: f64,
    ) -> SummaryApplied {
        if self.summary_claim_token != job.claim_token {
            return SummaryApplied::Gone;
        }
        self.summary_claim_until = 0.0;
        let current_cover = self.summary.as_ref().map_or(0, |s| s.covers_through_seq);
        if current_cover > job.through_seq {
            self.version += 1;
            return SummaryApplied::Stale;
        }
        let removed = self.replace_with_summary(draft, job.through_seq, now);
        SummaryApplied::Applied {
            removed_chunks: removed,
        }
    }

    /// Apply the connector's own summary: it condenses the oldest `replaces` raw actions.
    /// Only whole chunks that fit inside `replaces` are removed; a straddling chunk stays raw
    /// (over-keeping is safe, dropping is not).
    pub fn apply_connector_summary(&mut self, text: &str, replaces: usize, now: f64) -> usize {
        let already_applied = self.summary.as_deref().is_some_and(|s| {
            s.source == SummarySource::Connector
                && s.updated_at == now
                && s.text.ends_with(text.trim())
        });
        if already_applied {
            // The same summary retried after a lost acknowledgement (see `append`).
            return 0;
        }
        let mut budget = replaces;
        let mut through = self.summary.as_ref().map_or(0, |s| s.covers_through_seq);
        for chunk in &self.chunks {
            if chunk.actions.len() > budget {
                break;
            }
            budget -= chunk.actions.len();
            through = chunk.seq;
        }
        // Autoplay's summaries cover only their own batch, not the whole session: keep what
        // the previous summary said in front of it, so older history is not forgotten.
        let combined = match self.summary.as_deref() {
            Some(previous) if !previous.text.trim().is_empty() => {
                format!("{}\n{}", previous.text.trim_end(), text.trim())
            }
            _ => text.trim().to_string(),
        };
        let draft = SummaryDraft {
            text: combined,
            source: SummarySource::Connector,
            digest: None,
        };
        self.replace_with_summary(draft, through, now)
    }

    /// The shared replacement rule: remove chunks with `seq <= through`, store the summary.
    fn replace_with_summary(&mut self, draft: SummaryDraft, through: u64, now: f64) -> usize {
        let previous = self.summary.as_deref();
        let mut first_ts = previous.map_or(f64::INFINITY, |s| s.first_ts);
        let mut last_ts = previous.map_or(f64::NEG_INFINITY, |s| s.last_ts);
        let mut covered_actions = previous.map_or(0, |s| s.covered_actions);
        let mut removed = 0;
        while let Some(front) = self.chunks.front() {
            if front.seq > through {
                break;
            }
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            first_ts = first_ts.min(chunk.first_ts);
            last_ts = last_ts.max(chunk.last_ts);
            covered_actions += chunk.actions.len() as u64;
            self.raw_actions = self.raw_actions.saturating_sub(chunk.actions.len());
            self.recent_covered.push_back(chunk);
            removed += 1;
        }
        while self.recent_covered.len() > RECENT_COVERED_CHUNKS {
            self.recent_covered.pop_front();
        }
        if !first_ts.is_finite() {
            first_ts = now;
        }
        if !last_ts.is_finite() {
            last_ts = now;
        }
        let generation = previous.map_or(1, |s| s.generation + 1);
        let covers_through_seq = previous.map_or(0, |s| s.covers_through_seq).max(through);
        self.summary = Some(Arc::new(Summary {
            text: cap_summary_text(draft.text),
            source: draft.source,
            covers_through_seq,
            covered_actions,
            first_ts,
            last_ts,
            updated_at: now,
            generation,
            digest: draft.digest,
        }));
        self.version += 1;
        removed
    }

    /// Record a product tour offer.
    pub fn record_tour(&mut self, flow_id: &str, reason: Option<&str>, at: f64, now: f64) {
        self.tour = Some(TourOffer {
            flow_id: flow_id.to_string(),
            reason: reason.map(str::to_string),
            at,
        });
        self.last_seen = self.last_seen.max(now);
        self.version += 1;
    }

    /// Remember that activity in `gap` may be missing, if the session was plausibly alive then.
    pub fn note_gap(&mut self, gap: Gap) {
        if self.gaps.contains(&gap) {
            return;
        }
        self.gaps.push(gap);
        if self.gaps.len() > MAX_GAPS {
            self.gaps.remove(0);
        }
        self.version += 1;
    }

    /// Every action the session still holds raw, oldest first (chunks in order).
    pub fn raw_action_iter(&self) -> impl Iterator<Item = &Action> {
        self.chunks.iter().flat_map(|c| c.actions.iter())
    }

    /// Actions for the activity view: recently summarised chunks and raw chunks, oldest first
    /// by action time (a late delivery is shown in its place, not at the end).
    pub fn recent_action_iter(&self) -> impl Iterator<Item = &Action> {
        let mut held = timed_actions(self.recent_covered.iter().chain(self.chunks.iter()));
        sort_by_time(&mut held);
        held.into_iter().map(|(a, _)| a)
    }

    /// Latest time of any activity (action time, else receive time).
    pub fn last_activity(&self) -> f64 {
        let latest = self
            .chunks
            .iter()
            .chain(self.recent_covered.iter())
            .map(|c| c.last_ts)
            .fold(f64::NEG_INFINITY, f64::max);
        if latest.is_finite() {
            latest
        } else {
            self.last_seen
        }
    }

    /// Is the session past its idle expiry at `now`?
    pub fn is_expired(&self, now: f64, ttl_secs: f64) -> bool {
        self.last_seen + ttl_secs < now
    }
}

/// Actions of `chunks` with the time each is ordered by: its own, else that of the action
/// before it in its chunk, else its chunk's first time (so an untimed action stays beside its
/// neighbours).
fn timed_actions<'a>(chunks: impl Iterator<Item = &'a Arc<Chunk>>) -> Vec<(&'a Action, f64)> {
    let mut out = Vec::new();
    for chunk in chunks {
        let mut previous = chunk.first_ts;
        for action in chunk.actions.iter() {
            previous = action.time().unwrap_or(previous);
            out.push((action, previous));
        }
    }
    out
}

/// Sort into time order; equal times keep their order (arrival order).
fn sort_by_time(actions: &mut [(&Action, f64)]) {
    actions.sort_by(|a, b| a.1.total_cmp(&b.1));
}

/// Walk actions (in time order, each with the time it is ordered by) from `current`: the
/// page the last move lands on.
fn walk_pages<'a>(
    mut current: Option<CurrentPage>,
    actions: impl IntoIterator<Item = (&'a Action, f64)>,
) -> Option<CurrentPage> {
    for (action, ordered_at) in actions {
        let here = current.as_ref().map(|p| (p.url.as_str(), p.label.as_str()));
        if let Some((url, label)) = action.arrives_at(here) {
            current = Some(CurrentPage {
                label,
                url,
                since: action.time().unwrap_or(ordered_at),
            });
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};

    fn limits(max_chunks: usize) -> SessionLimits {
        SessionLimits { max_chunks }
    }

    #[test]
    fn append_assigns_increasing_sequence_numbers_and_normalises_email() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 10.0);
        let first = s.append(
            batch("s1", vec![action("click", "A", "/a", 1.0)]),
            10.0,
            limits(50),
        );
        let second = s.append(
            batch("s1", vec![action("click", "B", "/a", 2.0)]),
            11.0,
            limits(50),
        );
        assert!(first.created);
        assert!(!second.created);
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(s.email.as_deref(), Some("a@example.com"));
        assert_eq!(s.raw_actions, 2);
    }

    #[test]
    fn a_retried_write_is_stored_once() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        let b = batch("s1", vec![action("click", "A", "/a", 1.0)]);
        let first = s.append(b.clone(), 10.0, limits(50));
        let retry = s.append(b.clone(), 10.0, limits(50));
        assert_eq!(retry.seq, first.seq);
        assert_eq!(s.chunks.len(), 1);
        // The same batch at another time is another delivery.
        s.append(b, 11.0, limits(50));
        assert_eq!(s.chunks.len(), 2);
        s.apply_connector_summary("covered", 2, 12.0);
        let text = s.summary.as_ref().unwrap().text.clone();
        assert_eq!(s.apply_connector_summary("covered", 2, 12.0), 0);
        assert_eq!(s.summary.as_ref().unwrap().text, text, "not appended twice");
    }

    #[test]
    fn cap_folds_oldest_chunks_into_builtin_summary_instead_of_dropping() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        for i in 0..5 {
            s.append(
                batch(
                    "s1",
                    vec![action(
                        "pageview",
                        &format!("Page Load: P{i}"),
                        &format!("/p{i}"),
                        i as f64,
                    )],
                ),
                i as f64,
                limits(3),
            );
        }
        assert_eq!(s.chunks.len(), 3);
        let summary = s.summary.as_ref().expect("folded into a summary");
        assert_eq!(summary.covers_through_seq, 2);
        assert_eq!(summary.covered_actions, 2);
        assert_eq!(summary.source, SummarySource::Builtin);
        assert!(
            summary.text.contains("P0") && summary.text.contains("P1"),
            "{}",
            summary.text
        );
    }

    #[test]
    fn finish_summary_removes_exactly_the_covered_chunks() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        for i in 0..3 {
            s.append(
                batch("s1", vec![action("click", "X", "/x", i as f64)]),
                0.0,
                limits(50),
            );
        }
        let job = s.claim_summary(2, 0.0, 30.0, 7).expect("claimable");
        assert!(
            s.claim_summary(2, 1.0, 30.0, 8).is_none(),
            "one in flight per session"
        );
        // Arrives while the summarizer works.
        s.append(
            batch("s1", vec![action("click", "Y", "/y", 9.0)]),
            1.0,
            limits(50),
        );
        let draft = SummaryDraft {
            text: "did X three times".into(),
            source: SummarySource::Llm,
            digest: None,
        };
        assert_eq!(
            s.finish_summary(&job, draft, 2.0),
            SummaryApplied::Applied { removed_chunks: 3 }
        );
        assert_eq!(s.chunks.len(), 1);
        assert_eq!(s.chunks[0].seq, 4);
        assert_eq!(s.summary.as_ref().unwrap().covers_through_seq, 3);
        assert_eq!(s.raw_actions, 1);
    }

    #[test]
    fn stale_summary_is_discarded_when_newer_summary_covers_more() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        s.append(
            batch("s1", vec![action("click", "X", "/x", 1.0)]),
            0.0,
            limits(50),
        );
        let job = s.claim_summary(1, 0.0, 30.0, 1).unwrap();
        s.append(
            batch("s1", vec![action("click", "Y", "/y", 2.0)]),
            0.0,
            limits(50),
        );
        s.apply_connector_summary("connector saw both", 2, 1.0);
        let draft = SummaryDraft {
            text: "only X".into(),
            source: SummarySource::Llm,
            digest: None,
        };
        assert_eq!(s.finish_summary(&job, draft, 2.0), SummaryApplied::Stale);
        assert!(
            s.summary
                .as_ref()
                .unwrap()
                .text
                .contains("connector saw both")
        );
    }

    #[test]
    fn connector_summary_never_removes_a_straddling_chunk() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        s.append(
            batch(
                "s1",
                vec![
                    action("click", "A", "/a", 1.0),
                    action("click", "B", "/a", 2.0),
                ],
            ),
            0.0,
            limits(50),
        );
        s.append(
            batch(
                "s1",
                vec![
                    action("click", "C", "/a", 3.0),
                    action("click", "D", "/a", 4.0),
                ],
            ),
            0.0,
            limits(50),
        );
        let removed = s.apply_connector_summary("A and B", 3, 5.0);
        assert_eq!(removed, 1);
        assert_eq!(s.raw_actions, 2);
        assert_eq!(s.summary.as_ref().unwrap().covers_through_seq, 1);
    }

    #[test]
    fn a_page_leave_ends_time_on_the_page_whatever_the_delivery_order() {
        let view = action("pageview", "Page Load: Billing", "/billing", 100.0);
        let click = action("click", "Upgrade", "/billing", 130.0);
        let leave = action(PAGE_LEAVE_KIND, "Page Leave", "/billing", 160.0);
        let orders = [
            vec![view.clone(), click.clone(), leave.clone()],
            vec![leave.clone(), click.clone(), view.clone()],
            vec![click.clone(), leave.clone(), view.clone()],
        ];
        for order in orders {
            let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
            for (i, a) in order.into_iter().enumerate() {
                s.append(batch("s1", vec![a]), i as f64, limits(50));
            }
            assert_eq!(s.left_page(), Some(160.0));
            assert_eq!(s.raw_actions, 2, "a page leave is not an action of its own");
            assert!(s.recent_action_iter().all(|a| a.kind() != PAGE_LEAVE_KIND));
        }
    }

    #[test]
    fn a_page_leave_is_superseded_by_a_later_page_or_later_activity() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        s.append(
            batch(
                "s1",
                vec![
                    action("pageview", "Page Load: Billing", "/billing", 100.0),
                    action(PAGE_LEAVE_KIND, "Page Leave", "/billing", 110.0),
                ],
            ),
            0.0,
            limits(50),
        );
        assert_eq!(s.left_page(), Some(110.0));
        // Back on the same page (a restored tab): activity after the leave.
        s.append(
            batch("s1", vec![action("click", "Upgrade", "/billing", 120.0)]),
            1.0,
            limits(50),
        );
        assert_eq!(s.left_page(), None);
        // A later page: the leave of the earlier one does not apply to it.
        s.append(
            batch(
                "s1",
                vec![
                    action(PAGE_LEAVE_KIND, "Page Leave", "/billing", 130.0),
                    action("pageview", "Page Load: Invoices", "/invoices", 131.0),
                ],
            ),
            2.0,
            limits(50),
        );
        assert_eq!(
            s.current_page.as_ref().map(|p| p.url.as_str()),
            Some("/invoices")
        );
        assert_eq!(s.left_page(), None);
    }

    #[test]
    fn current_page_survives_summarisation_and_keeps_arrival_time() {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        s.append(
            batch(
                "s1",
                vec![
                    action("pageview", "Page Load: Billing", "/billing", 100.0),
                    action("click", "Upgrade", "/billing", 130.0),
                ],
            ),
            0.0,
            limits(50),
        );
        let page = s.current_page.clone().unwrap();
        assert_eq!(page.label, "Billing");
        assert_eq!(page.since, 100.0);
    }
}
