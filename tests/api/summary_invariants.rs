//! Property test over random interleavings of arrivals, summary claims, completions, failures,
//! connector summaries and cap folds: no delivered action is ever lost, chunk order holds, and
//! the newest action is always in the activity view.

use livectx::session::model::{
    Action, ActionBatch, ActionParts, Session, SessionId, SessionLimits, SummaryApplied,
    SummaryDraft, SummaryJob, SummarySource,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A batch of n actions arrives.
    Arrive(usize),
    /// A summarizer claims a job (threshold t).
    Claim(usize),
    /// The oldest in-flight job completes.
    Complete,
    /// The oldest in-flight job fails.
    Fail,
    /// The connector sends its own summary replacing n actions.
    Connector(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..5).prop_map(Op::Arrive),
        2 => (1usize..8).prop_map(Op::Claim),
        2 => Just(Op::Complete),
        1 => Just(Op::Fail),
        1 => (0usize..10).prop_map(Op::Connector),
    ]
}

fn action(n: usize) -> Action {
    Action::new(ActionParts {
        index: Some(n as i64),
        kind: "click".into(),
        title: format!("A{n}"),
        description: "".into(),
        timestamp_start: Some(n as f64),
        timestamp_end: Some(n as f64),
        raw_url: None,
        canonical_url: "/p".into(),
        identity: None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn nothing_delivered_is_ever_lost(ops in prop::collection::vec(op(), 1..120), max_chunks in 1usize..8) {
        let id = SessionId::parse("s").unwrap();
        let mut session = Session::new(id.clone(), 0.0);
        let limits = SessionLimits { max_chunks };
        let mut delivered: Vec<(u64, usize)> = Vec::new();
        let mut next_action = 0usize;
        let mut jobs: Vec<SummaryJob> = Vec::new();
        let mut token = 0u64;
        // While only the LLM has written summaries, its text must name every covered action.
        let mut only_llm = true;
        for (step, op) in ops.into_iter().enumerate() {
            let now = step as f64;
            match op {
                Op::Arrive(n) => {
                    let actions: Vec<Action> = (next_action..next_action + n).map(action).collect();
                    let outcome = session.append(
                        ActionBatch { session_id: id.clone(), product_id: None, user_id: None, email: None, conversation_id: None, actions, forwarded_at: None, source: None },
                        now,
                        limits,
                    );
                    delivered.extend((next_action..next_action + n).map(|a| (outcome.seq, a)));
                    only_llm &= outcome.folded_chunks == 0;
                    next_action += n;
                }
                Op::Claim(threshold) => {
                    token += 1;
                    if let Some(job) = session.claim_summary(threshold, now, now + 1000.0, token) {
                        jobs.push(job);
                    }
                }
                Op::Complete => {
                    if !jobs.is_empty() {
                        let job = jobs.remove(0);
                        // The "LLM" names every action it was shown, after the previous summary.
                        let mut text = job.previous.as_ref().map(|s| s.text.clone()).unwrap_or_default();
                        for chunk in &job.chunks {
                            for a in chunk.actions.iter() {
                                text.push_str(&format!(" <{}>", a.title()));
                            }
                        }
                        let draft = SummaryDraft { text, source: SummarySource::Llm, digest: None };
                        let applied = session.finish_summary(&job, draft, now);
                        // One claim at a time, so the holder is always the one finishing.
                        prop_assert_ne!(applied, SummaryApplied::Gone);
                    }
                }
                Op::Fail => {
                    if !jobs.is_empty() {
                        let job = jobs.remove(0);
                        session.release_claim(job.claim_token);
                    }
                }
                Op::Connector(replaces) => {
                    only_llm = false;
                    session.apply_connector_summary("connector summary", replaces, now);
                }
            }
            // Invariants after every step.
            let covered = session.summary().as_ref().map_or(0, |s| s.covers_through_seq);
            let raw_seqs: Vec<u64> = session.chunks().iter().map(|c| c.seq).collect();
            prop_assert!(raw_seqs.windows(2).all(|w| w[0] < w[1]), "chunks out of order: {:?}", raw_seqs);
            prop_assert!(session.chunks().len() <= max_chunks, "cap exceeded");
            prop_assert_eq!(session.raw_actions(), session.chunks().iter().map(|c| c.actions.len()).sum::<usize>());
            prop_assert!(covered <= session.last_seq(), "a summary claims chunks never delivered");
            let text = session.summary().as_ref().map_or("", |s| s.text.as_str());
            for (seq, a) in &delivered {
                let raw = session.chunks().iter().any(|c| c.seq == *seq && c.actions.iter().any(|x| x.title() == format!("A{a}")));
                prop_assert!(raw || *seq <= covered, "action A{} (chunk {}) lost; covered through {}", a, seq, covered);
                if !raw && only_llm {
                    prop_assert!(text.contains(&format!("<A{a}>")), "A{} is covered but not in the summary: {}", a, text);
                }
            }
            if let Some((_, newest)) = delivered.last() {
                let title = format!("A{newest}");
                prop_assert!(session.recent_action_iter().any(|x| x.title() == title), "newest action {} not in the activity view", title);
            }
        }
    }
}
