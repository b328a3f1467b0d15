//! The "Current User Activity" view: one self-describing paragraph that tells a chatbot where
//! this user is right now and what they just did.
//!
//! Dify shows the model only each record's `content`, so this text must stand on its own: it
//! opens with the line `Current User Activity`, names times in UTC, and says plainly when the
//! user is idle, looks lost, was offered a tour, or when activity may be missing.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::clock::{HumanDuration, Utc, format_duration, format_utc, format_utc_time};
use crate::session::model::{Action, Session};

/// First line of the activity record; the system prompt in docs/dify.md refers to it by name.
pub const ACTIVITY_HEADER: &str = "Current User Activity";

/// Key actions (clicks, submits, and what analytics sources name) listed at most.
const MAX_LISTED_ACTIONS: usize = 10;

/// Frustration signals quoted in the pattern line at most (the latest ones).
const MAX_QUOTED_FRUSTRATIONS: usize = 3;

/// Render the activity view of `session` at server time `now`, looking back `window_secs`.
///
/// It is [`activity_head`] (what depends on `now`) followed by [`activity_tail`] (what depends
/// only on the session and on whether the user is idle), trailing whitespace trimmed: the
/// read path caches the tail per session snapshot and renders only the head per request.
pub fn render_activity(session: &Session, now: f64, window_secs: f64) -> String {
    let mut out = activity_head(session, now, window_secs);
    out.push_str(&activity_tail(
        session,
        is_idle(session, now, window_secs),
        window_secs,
    ));
    out.truncate(out.trim_end().len());
    out
}

/// Has the user done nothing for longer than the window at `now`? (The tail reads differently.)
pub fn is_idle(session: &Session, now: f64, window_secs: f64) -> bool {
    idle_since(session.last_activity(), now, window_secs)
}

/// [`is_idle`] given the session's [`Session::last_activity`].
pub fn idle_since(last_activity: f64, now: f64, window_secs: f64) -> bool {
    (now - last_activity).max(0.0) > window_secs.max(1.0)
}

/// The lines of the view that change with `now`: the header, "as of", and where the user is
/// (for how long, or since when idle).
pub fn activity_head(session: &Session, now: f64, window_secs: f64) -> String {
    activity_head_at(session, now, window_secs, session.last_activity())
}

/// [`activity_head`] given the session's [`Session::last_activity`] (a prepared answer holds
/// it, so the chunks are not walked again on every request).
pub fn activity_head_at(
    session: &Session,
    now: f64,
    window_secs: f64,
    last_activity: f64,
) -> String {
    let clock = HeadFacts::of(session).clock(now, window_secs, last_activity);
    write_head(session, clock)
}

/// What of a session the head reads besides its page's label and URL: fixed for a snapshot,
/// so a prepared answer takes it once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadFacts {
    /// Since when the user is on the current page, if there is one.
    page_since: Option<f64>,
    /// When the user left that page ([`Session::left_page`]).
    left: Option<f64>,
}

impl HeadFacts {
    /// The facts of `session`.
    pub fn of(session: &Session) -> Self {
        Self {
            page_since: session.current_page().as_ref().map(|page| page.since),
            left: session.left_page(),
        }
    }

    /// What the head says at `now`, in the whole seconds it is written in: two times with
    /// equal clocks get the same head, so it can be written once and reused (see
    /// [`crate::render::answer`]).
    pub fn clock(&self, now: f64, window_secs: f64, last_activity: f64) -> HeadClock {
        let window_secs = window_secs.max(1.0);
        let idle_for = (now - last_activity).max(0.0);
        let idle = idle_for > window_secs;
        let line = match (self.page_since, self.left) {
            (Some(since), Some(left)) => HeadLine::Left {
                ago: HumanDuration::whole_seconds((now - left).max(0.0)),
                stayed: HumanDuration::whole_seconds((left - since).max(0.0)),
            },
            (Some(_), None) if idle => HeadLine::IdleOnPage {
                idle: HumanDuration::whole_seconds(idle_for),
            },
            (Some(since), None) => HeadLine::OnPage {
                on_for: HumanDuration::whole_seconds(now - since),
            },
            (None, _) if idle => HeadLine::Idle {
                idle: HumanDuration::whole_seconds(idle_for),
            },
            (None, _) => HeadLine::Nothing,
        };
        HeadClock {
            as_of: Utc::whole_second(now),
            line,
        }
    }
}

/// The time-dependent readings of the head (see [`HeadFacts::clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadClock {
    /// The "as of" second (`None`: a time that cannot be written).
    as_of: Option<u64>,
    line: HeadLine,
}

/// Which "where the user is" line the head has, with its durations in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadLine {
    Left { ago: u64, stayed: u64 },
    IdleOnPage { idle: u64 },
    OnPage { on_for: u64 },
    Idle { idle: u64 },
    Nothing,
}

/// The head of `session` for `clock` (which must come from this session's [`HeadFacts`]).
pub fn write_head(session: &Session, clock: HeadClock) -> String {
    // Written straight into one buffer. (Writing to a `String` cannot fail.)
    let mut out = String::with_capacity(256);
    out.push_str(ACTIVITY_HEADER);
    out.push('\n');
    out.push_str(
        "What this user is doing in the product, from their own browser session only (as of ",
    );
    match clock.as_of {
        Some(second) => {
            let _ = write!(out, "{}", Utc(second as f64));
        }
        None => out.push_str(Utc::UNKNOWN),
    }
    out.push_str(").\n");
    let seconds = |whole: u64| HumanDuration(whole as f64);
    let page = session.current_page().as_ref();
    let _ = match (page, clock.line) {
        (Some(page), HeadLine::Left { ago, stayed }) => writeln!(
            out,
            "Left \"{}\" ({}) {} ago, after {} there.",
            page.label,
            page.url,
            seconds(ago),
            seconds(stayed)
        ),
        (Some(page), HeadLine::IdleOnPage { idle }) => writeln!(
            out,
            "Last active {} ago on \"{}\" ({}); nothing since.",
            seconds(idle),
            page.label,
            page.url
        ),
        (Some(page), HeadLine::OnPage { on_for }) => writeln!(
            out,
            "Now on: \"{}\" ({}) for {}.",
            page.label,
            page.url,
            seconds(on_for)
        ),
        (_, HeadLine::Idle { idle }) => writeln!(out, "Last active {} ago.", seconds(idle)),
        _ => Ok(()),
    };
    out
}

/// The lines of the view that depend only on the session and on `idle` (see [`is_idle`]):
/// the pages and key actions of the window before the last activity, the patterns, tours,
/// gaps and staleness. Not trimmed: [`render_activity`] trims the whole.
pub fn activity_tail(session: &Session, idle: bool, window_secs: f64) -> String {
    let window_secs = window_secs.max(1.0);
    let window_start = session.last_activity() - window_secs;
    let mut out = String::with_capacity(1024);

    let recent: Vec<&Action> = session
        .recent_action_iter()
        .filter(|a| a.end_time().is_none_or(|t| t >= window_start))
        .collect();
    let window_name = if idle {
        format!("the {} before that", format_duration(window_secs))
    } else {
        format!("the last {}", format_duration(window_secs))
    };

    let walk = PageWalk::of(&recent);
    if walk.path.len() > 1 {
        out.push_str(&format!(
            "Pages in {window_name}, in order: {}.\n",
            walk.path.join(" → ")
        ));
    }
    if !walk.key_actions.is_empty() {
        let listed = if walk.only_clicks_and_submits {
            "Clicks and submits"
        } else {
            "What they did"
        };
        out.push_str(&format!("{listed} in {window_name} (latest last):\n"));
        let skip = walk.key_actions.len().saturating_sub(MAX_LISTED_ACTIONS);
        for line in walk.key_actions.iter().skip(skip) {
            out.push_str("- ");
            out.push_str(line);
            out.push('\n');
        }
    } else if recent.is_empty() && !idle {
        out.push_str("No clicks or page changes in the recent window.\n");
    }
    if let Some(pattern) = walk.frustration_note() {
        out.push_str(&pattern);
        out.push('\n');
    }
    if let Some(pattern) = walk.searching_note() {
        out.push_str(&pattern);
        out.push('\n');
    }
    if let Some(tour) = &session.tour() {
        out.push_str(&format!(
            "A product tour (\"{}\") was offered to them at {}{}.\n",
            tour.flow_id,
            format_utc(tour.at),
            tour.reason
                .as_deref()
                .map(|r| format!(" because: {r}"))
                .unwrap_or_default()
        ));
    }
    for gap in session.gaps() {
        out.push_str(&format!(
            "Activity between {} and {} may be missing (the live event stream was interrupted).\n",
            format_utc(gap.from),
            format_utc(gap.to)
        ));
    }
    if let Some(as_of) = session.stale_as_of() {
        out.push_str(&format!(
            "Activity as of {}; newer activity could not be fetched.\n",
            format_utc(as_of)
        ));
    }
    out
}

/// The pages and key actions of a run of actions, with the counts the "searching" note needs.
struct PageWalk {
    path: Vec<String>,
    key_actions: Vec<String>,
    /// Arrivals per page (canonical URL, label).
    arrivals: HashMap<(String, String), u32>,
    page_changes: u32,
    submits: u32,
    /// Whether every key action is a click or a submit (the Autoplay stream's vocabulary).
    only_clicks_and_submits: bool,
    /// Rage clicks, dead clicks and errors, as "what, on which page".
    frustrations: Vec<String>,
}

impl PageWalk {
    fn of(actions: &[&Action]) -> Self {
        let mut walk = PageWalk {
            path: Vec::new(),
            key_actions: Vec::new(),
            arrivals: HashMap::new(),
            page_changes: 0,
            submits: 0,
            only_clicks_and_submits: true,
            frustrations: Vec::new(),
        };
        let mut current: Option<(String, String)> = None;
        for action in actions {
            let here = current
                .as_ref()
                .map(|(url, label)| (url.as_str(), label.as_str()));
            if let Some((url, label)) = action.arrives_at(here) {
                if current.is_some() {
                    walk.page_changes += 1;
                }
                walk.path.push(label.clone());
                *walk
                    .arrivals
                    .entry((url.clone(), label.clone()))
                    .or_insert(0) += 1;
                current = Some((url, label));
            }
            let current_label = current.as_ref().map_or("", |(_, label)| label.as_str());
            // A source's named action reads as its phrase (`clicked the link "Invoices"`); the
            // stream's clicks and submits as before.
            let phrase = action.phrase().filter(|_| !action.is_pageview());
            if !action.is_click_or_submit() && phrase.is_none() {
                continue;
            }
            if action.kind() == "submit" {
                walk.submits += 1;
            }
            walk.only_clicks_and_submits &= action.is_click_or_submit();
            let what = match phrase {
                Some(phrase) => phrase.to_string(),
                None if action.kind() == "submit" => {
                    format!("submitted \"{}\"", action.title().trim())
                }
                None => format!("clicked \"{}\"", action.title().trim()),
            };
            let on_page = if current_label.is_empty() {
                String::new()
            } else {
                format!(" on {current_label}")
            };
            if action.is_frustration() {
                walk.frustrations.push(format!("{what}{on_page}"));
            }
            let when = action
                .time()
                .map(format_utc_time)
                .map(|t| format!("{t} UTC "))
                .unwrap_or_default();
            walk.key_actions.push(format!("{when}{what}{on_page}"));
        }
        walk
    }

    /// "Looks like frustration": rage clicks, dead clicks or errors, the latest quoted.
    fn frustration_note(&self) -> Option<String> {
        let count = self.frustrations.len();
        if count == 0 {
            return None;
        }
        let skip = count.saturating_sub(MAX_QUOTED_FRUSTRATIONS);
        let quoted: Vec<&str> = self.frustrations[skip..]
            .iter()
            .map(String::as_str)
            .collect();
        let signs = if count == 1 {
            "a sign".to_string()
        } else {
            format!("{count} signs")
        };
        let latest = if skip > 0 { " (latest)" } else { "" };
        Some(format!(
            "Pattern: this looks like frustration — {signs} of it{latest}: they {}.",
            quoted.join("; ")
        ))
    }

    /// "Looks like searching": pages revisited, or many page changes without a form submit.
    fn searching_note(&self) -> Option<String> {
        if self.submits > 0 {
            return None;
        }
        let mut revisited: Vec<(&String, u32)> = self
            .arrivals
            .iter()
            .filter(|(_, n)| **n >= 2)
            .map(|((_, label), n)| (label, *n))
            .collect();
        revisited.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        if !revisited.is_empty() && self.page_changes >= 3 {
            let pages: Vec<String> = revisited
                .iter()
                .take(3)
                .map(|(l, n)| format!("\"{l}\" {n} times"))
                .collect();
            return Some(format!(
                "Pattern: this looks like searching for something — they visited {} and changed pages {} times without submitting anything.",
                pages.join(", "),
                self.page_changes
            ));
        }
        if self.page_changes >= 6 {
            return Some(format!(
                "Pattern: this looks like searching for something — {} page changes without submitting anything.",
                self.page_changes
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::{action, batch};
    use crate::session::model::{Gap, SessionId, SessionLimits};

    fn session_with(actions: Vec<Action>) -> Session {
        let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        s.append(
            batch("s1", actions),
            1000.0,
            SessionLimits { max_chunks: 50 },
        );
        s
    }

    #[test]
    fn names_current_page_duration_path_and_clicks() {
        let s = session_with(vec![
            action(
                "pageview",
                "Page Load: Dashboard",
                "https://app/dashboard",
                900.0,
            ),
            action(
                "click",
                "Click Projects link",
                "https://app/dashboard",
                910.0,
            ),
            action(
                "pageview",
                "Page Load: Projects",
                "https://app/projects",
                920.0,
            ),
        ]);
        let text = render_activity(&s, 950.0, 120.0);
        assert!(text.starts_with("Current User Activity\n"), "{text}");
        assert!(
            text.contains("Now on: \"Projects\" (https://app/projects) for 30 s."),
            "{text}"
        );
        assert!(
            text.contains("Pages in the last 2 min, in order: Dashboard → Projects."),
            "{text}"
        );
        assert!(
            text.contains("clicked \"Click Projects link\" on Dashboard"),
            "{text}"
        );
        assert!(!text.contains("Pattern:"), "{text}");
    }

    #[test]
    fn a_left_page_says_when_and_after_how_long() {
        let s = session_with(vec![
            action(
                "pageview",
                "Page Load: Billing",
                "https://app/billing",
                900.0,
            ),
            action("click", "Upgrade", "https://app/billing", 910.0),
            action(
                crate::session::model::PAGE_LEAVE_KIND,
                "Page Leave",
                "https://app/billing",
                930.0,
            ),
        ]);
        let text = render_activity(&s, 950.0, 120.0);
        assert!(
            text.contains("Left \"Billing\" (https://app/billing) 20 s ago, after 30 s there."),
            "{text}"
        );
        assert!(!text.contains("Now on:"), "{text}");
        assert!(!text.contains("Page Leave"), "{text}");
    }

    #[test]
    fn pages_sharing_a_canonical_url_are_told_apart_by_title() {
        let s = session_with(vec![
            action(
                "pageview",
                "Page Load: Consultant: Ana",
                "/consultants/:id",
                900.0,
            ),
            action("pageview", "Page Load: Consultants", "/consultants", 905.0),
            action(
                "pageview",
                "Page Load: Consultant: Ana",
                "/consultants/:id",
                910.0,
            ),
            action(
                "pageview",
                "Page Load: Consultant: Ana",
                "/consultants/:id",
                911.0,
            ),
            action(
                "pageview",
                "Page Load: Consultant: Mei",
                "/consultants/:id",
                920.0,
            ),
        ]);
        let text = render_activity(&s, 930.0, 120.0);
        // The reload at 911 is not an arrival; Mei's profile is another page.
        assert!(
            text.contains("Consultant: Ana → Consultants → Consultant: Ana → Consultant: Mei."),
            "{text}"
        );
        assert!(
            text.contains("Now on: \"Consultant: Mei\" (/consultants/:id) for 10 s."),
            "{text}"
        );
        assert!(text.contains("\"Consultant: Ana\" 2 times"), "{text}");
        assert!(!text.contains("\"Consultant: Mei\" 2 times"), "{text}");
    }

    #[test]
    fn says_when_the_user_is_idle() {
        let s = session_with(vec![action(
            "pageview",
            "Page Load: Billing",
            "https://app/billing",
            100.0,
        )]);
        let text = render_activity(&s, 100.0 + 14.0 * 60.0, 120.0);
        assert!(
            text.contains("Last active 14 min ago on \"Billing\""),
            "{text}"
        );
        assert!(!text.contains("Now on"), "{text}");
    }

    #[test]
    fn notes_searching_patterns() {
        let mut actions = Vec::new();
        for i in 0..4 {
            actions.push(action(
                "pageview",
                "Page Load: Consultants",
                "/consultants",
                900.0 + i as f64 * 10.0,
            ));
            actions.push(action(
                "pageview",
                "Page Load: Consultant",
                "/consultants/:id",
                905.0 + i as f64 * 10.0,
            ));
        }
        let text = render_activity(&session_with(actions), 950.0, 120.0);
        assert!(
            text.contains("Pattern: this looks like searching"),
            "{text}"
        );
        assert!(text.contains("\"Consultants\" 4 times"), "{text}");
    }

    #[test]
    fn mentions_gaps_and_tours() {
        let mut s = session_with(vec![action(
            "pageview",
            "Page Load: Billing",
            "/billing",
            900.0,
        )]);
        s.note_gap(Gap {
            from: 910.0,
            to: 940.0,
        });
        s.record_tour("flow_retry", Some("payment failed"), 945.0, 945.0);
        let text = render_activity(&s, 950.0, 120.0);
        assert!(text.contains("may be missing"), "{text}");
        assert!(text.contains("A product tour (\"flow_retry\")"), "{text}");
    }

    /// The head as it was written before it was split into [`HeadFacts::clock`] and
    /// [`write_head`] (straight from the times): the reference the two must agree with at
    /// every time, fractions of a second included.
    fn head_from_the_times(session: &Session, now: f64, window_secs: f64) -> String {
        let last_activity = session.last_activity();
        let window_secs = window_secs.max(1.0);
        let idle_for = (now - last_activity).max(0.0);
        let idle = idle_for > window_secs;
        let mut out = String::new();
        out.push_str(ACTIVITY_HEADER);
        out.push('\n');
        let _ = writeln!(
            out,
            "What this user is doing in the product, from their own browser session only (as of {}).",
            Utc(now)
        );
        let _ = match (session.current_page(), session.left_page()) {
            (Some(page), Some(left)) => writeln!(
                out,
                "Left \"{}\" ({}) {} ago, after {} there.",
                page.label,
                page.url,
                HumanDuration((now - left).max(0.0)),
                HumanDuration((left - page.since).max(0.0))
            ),
            (Some(page), None) if idle => writeln!(
                out,
                "Last active {} ago on \"{}\" ({}); nothing since.",
                HumanDuration(idle_for),
                page.label,
                page.url
            ),
            (Some(page), None) => writeln!(
                out,
                "Now on: \"{}\" ({}) for {}.",
                page.label,
                page.url,
                HumanDuration(now - page.since)
            ),
            (None, _) if idle => writeln!(out, "Last active {} ago.", HumanDuration(idle_for)),
            (None, _) => Ok(()),
        };
        out
    }

    #[test]
    fn heads_with_equal_clocks_read_the_same_and_agree_with_the_times_they_came_from() {
        let on_page = session_with(vec![action(
            "pageview",
            "Page Load: Billing",
            "https://app/billing",
            900.25,
        )]);
        let left = session_with(vec![
            action(
                "pageview",
                "Page Load: Billing",
                "https://app/billing",
                900.7,
            ),
            action(
                crate::session::model::PAGE_LEAVE_KIND,
                "Page Leave",
                "https://app/billing",
                930.2,
            ),
        ]);
        let no_page = session_with(vec![action("click", "Upgrade", "https://app/x", 905.5)]);
        let empty = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        let offsets = [
            -3.0,
            0.0,
            0.2,
            0.49,
            0.5,
            0.51,
            0.99,
            1.0,
            29.5,
            59.49,
            59.5,
            61.2,
            119.4,
            120.6,
            3599.5,
            3600.4,
            86_400.7,
            172_800.2,
            1e12,
            f64::NAN,
        ];
        for session in [&on_page, &left, &no_page, &empty] {
            let facts = HeadFacts::of(session);
            for window in [0.5, 60.0, 120.0] {
                let mut written: Vec<(HeadClock, String)> = Vec::new();
                for offset in offsets {
                    let now = 930.0 + offset;
                    let clock = facts.clock(now, window, session.last_activity());
                    let head = write_head(session, clock);
                    assert_eq!(
                        head,
                        head_from_the_times(session, now, window),
                        "at {now}, window {window}"
                    );
                    assert_eq!(head, activity_head(session, now, window));
                    for (other, text) in &written {
                        if *other == clock {
                            assert_eq!(*text, head, "at {now}");
                        }
                    }
                    written.push((clock, head));
                }
            }
        }
    }
}
