//! A session's actions as a timeline for people: pages and actions in order, with stream
//! gaps, idle stretches, product tours, errors and rage clicks marked.

use crate::session::model::{Action, Session};

/// Actions shown at most (the newest).
pub const MAX_ITEMS: usize = 400;
/// Clicks on the same element within this many seconds...
const RAGE_WINDOW_SECS: f64 = 2.0;
/// ...at least this many times are a rage click.
const RAGE_CLICKS: usize = 3;
/// A pause longer than this between two actions is shown as idle time.
const IDLE_SECS: f64 = 120.0;

/// What a timeline row is.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Action {
        at: f64,
        kind: String,
        title: String,
        url: String,
        page: bool,
        error: bool,
        rage: bool,
        /// Already condensed into the summary (kept for the activity view).
        summarized: bool,
    },
    /// The stream was down: activity in this stretch may be missing.
    Gap {
        from: f64,
        to: f64,
    },
    Idle {
        from: f64,
        to: f64,
    },
    Tour {
        at: f64,
        flow_id: String,
        reason: Option<String>,
    },
}

impl Item {
    fn at(&self) -> f64 {
        match self {
            Self::Action { at, .. } | Self::Tour { at, .. } => *at,
            Self::Gap { from, .. } | Self::Idle { from, .. } => *from,
        }
    }
}

/// Does this action report an error the user saw?
pub fn is_error(action: &Action) -> bool {
    let kind = action.kind().to_ascii_lowercase();
    if kind.contains("error") || kind.contains("exception") {
        return true;
    }
    let text = format!("{} {}", action.title(), action.description()).to_ascii_lowercase();
    ["error", "failed", "declined", "exception", "crash"]
        .iter()
        .any(|word| text.contains(word))
}

fn is_click(action: &Action) -> bool {
    action.kind().eq_ignore_ascii_case("click")
}

/// The timeline of `session`, oldest first.
pub fn timeline(session: &Session) -> Vec<Item> {
    let covered_through = session
        .summary()
        .as_ref()
        .map_or(0, |s| s.covers_through_seq);
    let mut actions: Vec<(&Action, f64, bool)> = Vec::new();
    let chunks = session
        .recent_covered()
        .iter()
        .chain(session.chunks().iter());
    let mut seen = std::collections::HashSet::new();
    for chunk in chunks {
        if !seen.insert(chunk.seq) {
            continue;
        }
        for action in chunk.actions.iter() {
            let at = action.time().unwrap_or(chunk.received_at);
            actions.push((action, at, chunk.seq <= covered_through));
        }
    }
    actions.sort_by(|a, b| a.1.total_cmp(&b.1));
    let skip = actions.len().saturating_sub(MAX_ITEMS);
    let actions = &actions[skip..];

    let mut rage = vec![false; actions.len()];
    let mut start = 0;
    while start < actions.len() {
        let (first, first_at, _) = actions[start];
        let mut end = start + 1;
        if is_click(first) {
            while end < actions.len()
                && is_click(actions[end].0)
                && actions[end].0.title() == first.title()
                && actions[end].1 - first_at <= RAGE_WINDOW_SECS
            {
                end += 1;
            }
            if end - start >= RAGE_CLICKS {
                rage[start..end].iter_mut().for_each(|r| *r = true);
            }
        }
        start = end;
    }

    let mut items = Vec::with_capacity(actions.len() + 4);
    let mut previous: Option<f64> = None;
    for (i, (action, at, summarized)) in actions.iter().enumerate() {
        if let Some(before) = previous
            && at - before > IDLE_SECS
        {
            items.push(Item::Idle {
                from: before,
                to: *at,
            });
        }
        previous = Some(*at);
        items.push(Item::Action {
            at: *at,
            kind: action.kind().to_string(),
            title: action.title().to_string(),
            url: action.raw_url().to_string(),
            page: action.is_pageview(),
            error: is_error(action),
            rage: rage[i],
            summarized: *summarized,
        });
    }
    for gap in session.gaps() {
        items.push(Item::Gap {
            from: gap.from,
            to: gap.to,
        });
    }
    if let Some(tour) = &session.tour() {
        items.push(Item::Tour {
            at: tour.at,
            flow_id: tour.flow_id.clone(),
            reason: tour.reason.clone(),
        });
    }
    // Stable: a marker at the same time as an action comes after it.
    items.sort_by(|a, b| a.at().total_cmp(&b.at()));
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};
    use crate::session::model::{Gap, SessionId, SessionLimits};

    fn session(actions: Vec<Action>) -> Session {
        let mut session = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        session.append(
            batch("s1", actions),
            1000.0,
            SessionLimits { max_chunks: 50 },
        );
        session
    }

    fn marks(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Action {
                    title,
                    error,
                    rage,
                    page,
                    ..
                } => format!(
                    "{title}{}{}{}",
                    if *page { " [page]" } else { "" },
                    if *error { " [error]" } else { "" },
                    if *rage { " [rage]" } else { "" }
                ),
                Item::Gap { .. } => "gap".to_string(),
                Item::Idle { .. } => "idle".to_string(),
                Item::Tour { flow_id, .. } => format!("tour {flow_id}"),
            })
            .collect()
    }

    #[test]
    fn marks_pages_errors_rage_clicks_idle_time_gaps_and_tours() {
        let mut s = session(vec![
            action("pageview", "Page Load: Billing", "/billing", 100.0),
            action("click", "Click Pay", "/billing", 101.0),
            action("click", "Click Pay", "/billing", 101.5),
            action("click", "Click Pay", "/billing", 102.0),
            action("click", "Card declined", "/billing", 103.0),
            action("click", "Click Pay", "/billing", 110.0),
            action("click", "Click Help", "/billing", 400.0),
        ]);
        s.note_gap(Gap {
            from: 200.0,
            to: 260.0,
        });
        s.record_tour("billing-tour", Some("stuck"), 300.0, 1000.0);
        let items = timeline(&s);
        assert_eq!(
            marks(&items),
            [
                "Page Load: Billing [page]",
                "Click Pay [rage]",
                "Click Pay [rage]",
                "Click Pay [rage]",
                "Card declined [error]",
                "Click Pay",
                "idle",
                "gap",
                "tour billing-tour",
                "Click Help",
            ]
        );
    }

    #[test]
    fn two_quick_clicks_are_not_rage() {
        let s = session(vec![
            action("click", "Save", "/a", 1.0),
            action("click", "Save", "/a", 1.5),
            action("click", "Other", "/a", 1.7),
        ]);
        assert!(
            timeline(&s)
                .iter()
                .all(|i| matches!(i, Item::Action { rage: false, .. }))
        );
    }
}
