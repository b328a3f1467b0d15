//! Synthetic activity for the benchmarks: deterministic users wandering through a small product,
//! written as the connector's `actions` payloads (SSE frames) or as ready-made store batches.
//!
//! Deliberately small and fast (no JSON library on the hot path, a SplitMix64 generator): the
//! generator shares two cores with the server it measures, so every microsecond it spends is
//! one the server does not get. Payloads have the connector's real shape — per-action
//! `session_id`, `user_id` and `email`, raw and canonical URLs — so decoding costs what it
//! costs in production.

use std::fmt::Write;

use crate::session::model::{Action, ActionBatch, ActionParts, SessionId};

/// The product every synthetic payload belongs to (and the `knowledge_id` queries use).
pub const PRODUCT: &str = "bench_prod";

/// Origin of the synthetic product's URLs.
const ORIGIN: &str = "https://app.bench.example";

/// A small, fast, deterministic random generator (SplitMix64): benchmark runs must be
/// repeatable, and the generator must cost next to nothing.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A session id shaped like PostHog's (36 characters, UUID layout), unique per run tag and index.
pub fn session_id(run: u16, index: u64) -> String {
    format!("01983f2a-{run:04x}-7d40-9e2f-{index:012x}")
}

/// The email of synthetic person `index`.
pub fn email(index: u64) -> String {
    format!("user{index}@bench.example")
}

/// The user id of synthetic person `index`.
pub fn user_id(index: u64) -> String {
    format!("usr_{index:08x}")
}

/// Who a payload belongs to.
#[derive(Debug, Clone)]
pub struct Identity {
    pub session_id: String,
    pub user_id: String,
    pub email: String,
}

impl Identity {
    /// Session `session` of person `person` in run `run`.
    pub fn new(run: u16, session: u64, person: u64) -> Self {
        Self {
            session_id: session_id(run, session),
            user_id: user_id(person),
            email: email(person),
        }
    }
}

struct Page {
    name: &'static str,
    path: &'static str,
    buttons: &'static [&'static str],
    fields: &'static [&'static str],
}

const PAGES: &[Page] = &[
    Page {
        name: "Dashboard",
        path: "/dashboard",
        buttons: &["Projects link", "Notifications bell", "Create report"],
        fields: &["Search"],
    },
    Page {
        name: "Projects",
        path: "/projects",
        buttons: &["Add Project", "Filter", "Archive"],
        fields: &["Project search"],
    },
    Page {
        name: "New project",
        path: "/projects/new",
        buttons: &["Create", "Cancel"],
        fields: &["Project name", "Description"],
    },
    Page {
        name: "Project settings",
        path: "/projects/:id/settings",
        buttons: &["Save settings", "Delete project", "Invite member"],
        fields: &["Webhook URL", "Retention days"],
    },
    Page {
        name: "Reports",
        path: "/reports",
        buttons: &["Export CSV", "Schedule report", "Date range"],
        fields: &["Report name"],
    },
    Page {
        name: "Billing",
        path: "/settings/billing",
        buttons: &["Upgrade plan", "Update card", "Download invoice"],
        fields: &["Company VAT id"],
    },
    Page {
        name: "Team",
        path: "/settings/team",
        buttons: &["Invite teammate", "Change role", "Remove member"],
        fields: &["Invite email"],
    },
    Page {
        name: "Notifications",
        path: "/settings/notifications",
        buttons: &["Save preferences", "Mute all", "Slack toggle"],
        fields: &["Digest hour"],
    },
    Page {
        name: "Integrations",
        path: "/integrations",
        buttons: &["Connect Slack", "Connect GitHub", "Disconnect"],
        fields: &["API token"],
    },
    Page {
        name: "Alerts",
        path: "/alerts",
        buttons: &["New alert", "Snooze", "Edit threshold"],
        fields: &["Threshold"],
    },
    Page {
        name: "API keys",
        path: "/settings/api-keys",
        buttons: &["Generate key", "Revoke key", "Copy key"],
        fields: &["Key label"],
    },
    Page {
        name: "Help center",
        path: "/help",
        buttons: &["Contact support", "Open article"],
        fields: &["Help search"],
    },
];

/// One synthetic UI action.
#[derive(Debug, Clone)]
pub struct SynthAction {
    pub kind: &'static str,
    pub title: String,
    pub description: String,
    pub path: &'static str,
    /// Appended to the raw URL (the canonical URL has none).
    pub query: Option<&'static str>,
    pub start: f64,
    pub end: f64,
}

impl SynthAction {
    /// The canonical URL.
    pub fn canonical_url(&self) -> String {
        format!("{ORIGIN}{}", self.path)
    }

    /// The action as the store holds it (what decoding the frame would give).
    pub fn to_action(&self, index: i64) -> Action {
        let canonical = self.canonical_url();
        Action::new(ActionParts {
            index: Some(index),
            kind: self.kind.into(),
            title: self.title.as_str().into(),
            description: self.description.as_str().into(),
            timestamp_start: Some(self.start),
            timestamp_end: Some(self.end),
            raw_url: self.query.map(|q| format!("{canonical}{q}")),
            canonical_url: canonical,
            identity: None,
        })
    }
}

/// One user's walk through the product: page loads, then clicks, typing and submits on that
/// page, then another page — the pattern the activity record and the summarizer expect.
#[derive(Debug, Clone)]
pub struct Walker {
    rng: Rng,
    page: usize,
    on_page: u32,
    clock: f64,
    /// The action index the next action gets (the connector numbers them per session).
    pub next_index: i64,
}

impl Walker {
    /// A walker starting at time `start` (Unix seconds).
    pub fn new(seed: u64, start: f64) -> Self {
        let mut rng = Rng::new(seed);
        let page = rng.below(PAGES.len() as u64) as usize;
        Self {
            rng,
            page,
            on_page: 0,
            clock: start,
            next_index: 0,
        }
    }

    /// Move the walker's clock (actions continue from `ts`).
    pub fn set_clock(&mut self, ts: f64) {
        self.clock = ts;
    }

    /// The walker's clock: the end of its latest action.
    pub fn clock(&self) -> f64 {
        self.clock
    }

    /// The next action, `gap` seconds (± jitter) after the previous one.
    pub fn next_action(&mut self, gap: f64) -> SynthAction {
        let start = self.clock + gap * (0.5 + self.rng.below(1000) as f64 / 1000.0);
        let leave = self.on_page > 0 && self.rng.chance(0.3);
        let action = if self.on_page == 0 || leave {
            if leave {
                self.page = self.rng.below(PAGES.len() as u64) as usize;
            }
            self.on_page = 0;
            let page = &PAGES[self.page];
            SynthAction {
                kind: "pageview",
                title: format!("Page Load: {}", page.name),
                description: format!("User landed on the {} page", page.name),
                path: page.path,
                query: self.rng.chance(0.3).then_some("?ref=nav&utm_source=app"),
                start,
                end: start + 0.4,
            }
        } else {
            let page = &PAGES[self.page];
            let roll = self.rng.below(10);
            if roll < 6 {
                let button = page.buttons[self.rng.below(page.buttons.len() as u64) as usize];
                SynthAction {
                    kind: "click",
                    title: format!("Click {button}"),
                    description: format!("User clicked {button} on the {} page", page.name),
                    path: page.path,
                    query: None,
                    start,
                    end: start + 0.1,
                }
            } else if roll < 9 {
                let field = page.fields[self.rng.below(page.fields.len() as u64) as usize];
                SynthAction {
                    kind: "type",
                    title: format!("Type in {field} field"),
                    description: format!("User typed into the {field} field"),
                    path: page.path,
                    query: None,
                    start,
                    end: start + 3.0,
                }
            } else {
                SynthAction {
                    kind: "submit",
                    title: format!("Submit {} form", page.name),
                    description: format!("User submitted the form on the {} page", page.name),
                    path: page.path,
                    query: None,
                    start,
                    end: start + 0.2,
                }
            }
        };
        self.on_page += 1;
        self.clock = action.end;
        action
    }
}

/// A click with a title no other action has (freshness probes, "newest action" checks).
pub fn marker_click(title: &str, at: f64) -> SynthAction {
    SynthAction {
        kind: "click",
        title: title.to_string(),
        description: format!("User clicked {title}"),
        path: "/dashboard",
        query: None,
        start: at,
        end: at,
    }
}

/// Append one `actions` payload as an SSE frame (`data: {...}\n\n`) to `out`.
///
/// Written by hand for speed; every text here comes from this module and is plain ASCII
/// without quotes or backslashes, which a debug assertion checks.
pub fn write_frame(out: &mut String, who: &Identity, actions: &[SynthAction], forwarded_at: f64) {
    out.push_str("data: ");
    write_payload(out, who, actions, forwarded_at);
    out.push_str("\n\n");
}

/// Append one `actions` payload as JSON to `out`.
pub fn write_payload(out: &mut String, who: &Identity, actions: &[SynthAction], forwarded_at: f64) {
    write_payload_from(out, who, actions, 0, forwarded_at);
}

/// Like [`write_payload`], numbering the actions from `first_index`.
pub fn write_payload_from(
    out: &mut String,
    who: &Identity,
    actions: &[SynthAction],
    first_index: i64,
    forwarded_at: f64,
) {
    debug_assert!(safe(&who.session_id) && safe(&who.user_id) && safe(&who.email));
    let _ = write!(
        out,
        r#"{{"type":"actions","product_id":"{PRODUCT}","session_id":"{}","user_id":"{}","email":"{}","actions":["#,
        who.session_id, who.user_id, who.email
    );
    for (i, a) in actions.iter().enumerate() {
        debug_assert!(safe(&a.title) && safe(&a.description));
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"index":{},"type":"{}","title":"{}","description":"{}","timestamp_start":{:.3},"timestamp_end":{:.3},"raw_url":"{ORIGIN}{}{}","canonical_url":"{ORIGIN}{}","session_id":"{}","user_id":"{}","email":"{}"}}"#,
            first_index + i as i64,
            a.kind,
            a.title,
            a.description,
            a.start,
            a.end,
            a.path,
            a.query.unwrap_or(""),
            a.path,
            who.session_id,
            who.user_id,
            who.email
        );
    }
    let _ = write!(
        out,
        r#"],"count":{},"forwarded_at":{forwarded_at:.6}}}"#,
        actions.len()
    );
}

fn safe(text: &str) -> bool {
    text.chars()
        .all(|c| c != '"' && c != '\\' && !c.is_control())
}

/// The same actions as a ready-to-store batch (for loading the store directly).
pub fn batch(who: &Identity, actions: &[SynthAction], first_index: i64) -> Option<ActionBatch> {
    Some(ActionBatch {
        session_id: SessionId::parse(&who.session_id).ok()?,
        product_id: Some(PRODUCT.to_string()),
        user_id: Some(who.user_id.clone()),
        email: Some(who.email.clone()),
        conversation_id: None,
        actions: actions
            .iter()
            .enumerate()
            .map(|(i, a)| a.to_action(first_index + i as i64))
            .collect(),
        forwarded_at: actions.last().map(|a| a.end),
        source: None,
    })
}

/// Questions a support chatbot user might ask (the relevance scoring has something to match).
pub const QUESTIONS: &[&str] = &[
    "how do I export a csv of my report?",
    "why can't I save my project settings?",
    "where do I invite a teammate?",
    "my invoice is wrong, how do I download it?",
    "how do I connect Slack notifications?",
    "I can't find where to generate an API key",
    "what does this alert threshold mean?",
    "how do I archive old projects?",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::autoplay::payload::{Payload, decode};

    #[test]
    fn frames_decode_to_the_same_actions_as_batches() {
        let who = Identity::new(1, 7, 7);
        let mut walker = Walker::new(7, 1_785_000_000.0);
        let actions: Vec<SynthAction> = (0..6).map(|_| walker.next_action(5.0)).collect();
        let mut frame = String::new();
        write_frame(&mut frame, &who, &actions, 1_785_000_100.0);
        let json = frame
            .strip_prefix("data: ")
            .and_then(|f| f.strip_suffix("\n\n"))
            .unwrap();
        let Payload::Actions(payload) = decode(json.as_bytes()).unwrap() else {
            panic!("not actions")
        };
        let decoded = payload.into_batch(None).unwrap();
        let direct = batch(&who, &actions, 0).unwrap();
        assert_eq!(decoded.session_id, direct.session_id);
        assert_eq!(decoded.email, direct.email);
        assert_eq!(decoded.actions.len(), 6);
        for (d, b) in decoded.actions.iter().zip(&direct.actions) {
            assert_eq!(d.title(), b.title());
            assert_eq!(d.canonical_url(), b.canonical_url());
            assert_eq!(d.raw_url(), b.raw_url());
            // The wire carries milliseconds.
            let (d, b) = (d.timestamp_start().unwrap(), b.timestamp_start().unwrap());
            assert!((d - b).abs() < 0.001, "{d} vs {b}");
        }
    }

    #[test]
    fn walkers_are_deterministic_and_move_forward_in_time() {
        let mut a = Walker::new(3, 100.0);
        let mut b = Walker::new(3, 100.0);
        let mut last = 100.0;
        for _ in 0..50 {
            let (x, y) = (a.next_action(2.0), b.next_action(2.0));
            assert_eq!(x.title, y.title);
            assert!(x.start >= last);
            last = x.end;
        }
    }

    #[test]
    fn session_ids_are_unique_and_uuid_shaped() {
        assert_eq!(session_id(1, 2).len(), 36);
        assert_ne!(session_id(1, 2), session_id(2, 1));
    }
}
