//! Simulated users: believable product journeys, in Autoplay's exact wire format.
//!
//! Each [`Persona`] is one browser session with a stable identity (a UUIDv7-looking session id,
//! an email and a user id, all derived from the seed). A [`Journey`] walks that persona through
//! its script round after round with human timing (reading pauses, typing speed, hesitation),
//! and groups the actions into the batches the connector would forward. Everything is drawn
//! from a seeded [`StdRng`], so the same seed always produces the same events; only the mapping
//! from journey time to wall-clock time ([`Timebase`]) depends on when the simulation runs.
//!
//! The cast covers what a support chatbot must cope with: a user hunting for notifications
//! across the consultants pages (and never finding them), one who starts creating a project and
//! abandons the form, one stuck on a declined payment, a newcomer exploring after signing up,
//! an anonymous visitor without an email, and unlinked traffic whose `session_id` is null.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// The product id the simulator streams by default (the one the reference samples use).
pub const DEFAULT_PRODUCT: &str = "acme_prod";
/// The simulated web app every URL points into.
pub const APP_ORIGIN: &str = "https://app.acme.io";

/// A quiet stretch longer than this (journey seconds) closes the batch being collected, the
/// way the connector forwards what a user did once they pause.
const FLUSH_GAP: f64 = 3.0;
/// Actions per batch at most.
const MAX_BATCH: usize = 8;
/// UUIDv7 timestamps of generated ids start here (ids must not depend on the wall clock, or
/// they would change between runs with the same seed).
const ID_EPOCH_MS: u64 = 1_785_300_000_000;

/// The personas' word lists (who they are, the consultants, project names, searches, pages),
/// kept as data so that changing what the simulated users say needs no code; the scripts that
/// branch on them stay below.
const WORDS: &str = include_str!("personas.json");

/// One persona of the default cast.
#[derive(Debug, Clone, Deserialize)]
pub struct CastMember {
    pub name: String,
    /// Empty for the anonymous personas.
    pub email: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Consultant {
    pub id: u32,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProfileTab {
    pub label: String,
    pub slug: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stop {
    pub name: String,
    pub path: String,
    pub description: String,
}

/// The contents of `personas.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Words {
    /// By role key (`notifications-hunter`).
    pub cast: std::collections::HashMap<String, CastMember>,
    pub consultants: Vec<Consultant>,
    pub profile_tabs: Vec<ProfileTab>,
    pub searches: Vec<String>,
    pub project_names: Vec<String>,
    pub templates: Vec<String>,
    pub decline_codes: Vec<String>,
    /// Where the newcomer wanders.
    pub explore: Vec<Stop>,
    /// Navigation links' targets by label, for the element chains of the PostHog mode.
    pub links: std::collections::HashMap<String, String>,
}

impl Words {
    /// The path a navigation link labelled `label` points to.
    pub fn link_path(&self, label: &str) -> Option<&str> {
        self.links.get(label).map(String::as_str)
    }
}

/// The embedded word lists, parsed once (a test checks they parse and fit the scripts).
pub fn words() -> &'static Words {
    static WORDS_PARSED: std::sync::LazyLock<Words> = std::sync::LazyLock::new(|| {
        serde_json::from_str(WORDS).unwrap_or_else(|e| panic!("src/demo/personas.json: {e}"))
    });
    &WORDS_PARSED
}

/// What a persona is trying to do; decides its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Looks for notification settings around the consultants pages; never finds them.
    NotificationsHunter,
    /// Starts creating a project, fills half the form, and leaves it.
    ProjectAbandoner,
    /// Tries to upgrade; the card is declined again and again.
    BillingStuck,
    /// Signs up, then looks around (anonymous until the sign-up identifies them).
    Newcomer,
    /// Browses public pages; PostHog knows only an anonymous distinct id, never an email.
    AnonymousVisitor,
    /// Page views not yet linked to any session (`session_id: null`).
    UnlinkedTraffic,
}

impl Role {
    /// Every role, in cast order.
    pub const ALL: [Role; 6] = [
        Role::NotificationsHunter,
        Role::ProjectAbandoner,
        Role::BillingStuck,
        Role::Newcomer,
        Role::AnonymousVisitor,
        Role::UnlinkedTraffic,
    ];

    /// A stable machine name (`notifications-hunter`).
    pub fn key(self) -> &'static str {
        match self {
            Self::NotificationsHunter => "notifications-hunter",
            Self::ProjectAbandoner => "project-abandoner",
            Self::BillingStuck => "billing-stuck",
            Self::Newcomer => "newcomer",
            Self::AnonymousVisitor => "anonymous-visitor",
            Self::UnlinkedTraffic => "unlinked-traffic",
        }
    }

    /// One line for people: what this persona does.
    pub fn about(self) -> &'static str {
        match self {
            Self::NotificationsHunter => {
                "hunts for notifications across the consultants pages and never finds them"
            }
            Self::ProjectAbandoner => "starts creating a project and abandons the form",
            Self::BillingStuck => "is stuck on billing: the card is declined, retry after retry",
            Self::Newcomer => "signs up and explores the product",
            Self::AnonymousVisitor => "browses the public pages anonymously (no email)",
            Self::UnlinkedTraffic => "page views with a null session_id (never stored)",
        }
    }

    fn index(self) -> u64 {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0) as u64
    }
}

/// One simulated browser session and the person behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    /// Short display name (`priya`; `priya-17` in load mode).
    pub name: String,
    pub role: Role,
    pub product_id: String,
    /// PostHog's session id; `None` for unlinked traffic.
    pub session_id: Option<String>,
    /// The identified user id (the newcomer gets it when signing up).
    pub user_id: Option<String>,
    /// The email once identified; `None` for anonymous personas.
    pub email: Option<String>,
    /// PostHog's anonymous distinct id, sent as `user_id` before identification (and by
    /// synthetic unlinked traffic).
    pub anonymous_id: Option<String>,
    /// The load-test session number; `None` in the default cast.
    pub index: Option<u64>,
}

impl Persona {
    /// The persona with role `role` in the default cast of `seed`.
    fn named(role: Role, seed: u64, product_id: &str, index: Option<u64>) -> Self {
        let mut rng = StdRng::seed_from_u64(mix(seed, role.index(), index.unwrap_or(u64::MAX), 1));
        let cast = &words().cast[role.key()];
        let (first, email_of) = (cast.name.as_str(), cast.email.as_str());
        let name = match index {
            Some(i) => format!("{first}-{i}"),
            None => first.to_string(),
        };
        let email = match (role, index) {
            (Role::AnonymousVisitor | Role::UnlinkedTraffic, _) => None,
            (_, None) => Some(email_of.to_string()),
            (_, Some(i)) => Some(format!("{first}.{i}@load.example.com")),
        };
        let session_id = (role != Role::UnlinkedTraffic).then(|| uuid_v7_like(&mut rng));
        // PostHog's anonymous distinct id. The cast's unlinked traffic has none (all ids null,
        // as in the reference sample); synthetic unlinked visitors get one, so that thousands
        // of them do not send byte-identical payloads (which a webhook receiver deduplicates).
        let anonymous_id = match (role, index) {
            (Role::Newcomer | Role::AnonymousVisitor, _) | (Role::UnlinkedTraffic, Some(_)) => {
                Some(uuid_v7_like(&mut rng))
            }
            _ => None,
        };
        let user_id = (!matches!(role, Role::AnonymousVisitor | Role::UnlinkedTraffic))
            .then(|| format!("usr_{}", alphanumeric(&mut rng, 8)));
        Self {
            name,
            role,
            product_id: product_id.to_string(),
            session_id,
            user_id,
            email,
            anonymous_id,
            index,
        }
    }
}

/// The default cast: one persona per [`Role`], with identities derived from `seed`.
pub fn cast(seed: u64, product_id: &str) -> Vec<Persona> {
    Role::ALL
        .iter()
        .map(|role| Persona::named(*role, seed, product_id, None))
        .collect()
}

/// Synthetic session number `index` for load tests: the roles in turn, fresh identities.
pub fn synthetic(seed: u64, index: u64, product_id: &str) -> Persona {
    let role = Role::ALL[(index % Role::ALL.len() as u64) as usize];
    Persona::named(role, seed, product_id, Some(index))
}

/// Maps journey seconds to wall-clock Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timebase {
    /// Unix seconds of journey time 0.
    pub origin: f64,
    /// Journey seconds per wall-clock second (2.0 plays twice as fast).
    pub speed: f64,
    /// Never stamp a time later than this (a batch cannot describe the future).
    pub not_after: Option<f64>,
}

impl Timebase {
    /// Real time from `origin`, unbounded.
    pub fn new(origin: f64, speed: f64) -> Self {
        Self {
            origin,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
            not_after: None,
        }
    }

    /// The wall-clock time of journey time `t`.
    pub fn unix(&self, t: f64) -> f64 {
        let at = self.origin + t / self.speed;
        self.not_after.map_or(at, |cap| at.min(cap))
    }
}

/// One UI action with its journey times.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedAction {
    pub index: i64,
    pub kind: &'static str,
    pub title: String,
    pub description: String,
    pub start: f64,
    pub end: f64,
    /// Path with query string, as captured.
    pub raw_path: String,
    /// Path with ids collapsed to `:id`.
    pub canonical_path: String,
}

impl TimedAction {
    /// The page name a page load shows ("Page Load: Billing" → "Billing").
    pub fn page_name(&self) -> Option<&str> {
        (self.kind == "pageview")
            .then(|| self.title.strip_prefix("Page Load:").map(str::trim))
            .flatten()
    }
}

/// The identity fields an `actions` envelope carries at one point of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub product_id: String,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    /// `None`: the key is absent (not identified yet); `Some(None)`: sent as null.
    pub email: Option<Option<String>>,
    pub conversation_id: Option<String>,
}

/// What one emission sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Actions {
        envelope: Envelope,
        actions: Vec<TimedAction>,
    },
    /// The connector's own summary of the round that just ended.
    Summary {
        envelope: Envelope,
        text: String,
        replaces: usize,
    },
    /// A product tour offered to the session.
    Tour {
        envelope: Envelope,
        flow_id: String,
        reason: Option<String>,
    },
}

/// One payload the connector forwards, at journey time `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub at: f64,
    pub body: Body,
    /// Lines for people watching the demo ("→ Consultants", "payment declined").
    pub narration: Vec<String>,
}

/// A page as the activity record will name it: label and absolute canonical URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageRef {
    pub label: String,
    pub url: String,
}

impl Emission {
    /// The page the session is on after this emission, if it loaded one.
    pub fn current_page(&self) -> Option<PageRef> {
        let Body::Actions { actions, .. } = &self.body else {
            return None;
        };
        actions.iter().rev().find_map(|a| {
            a.page_name().map(|label| PageRef {
                label: label.to_string(),
                url: absolute(&a.canonical_path),
            })
        })
    }

    /// How many UI actions it carries.
    pub fn action_count(&self) -> usize {
        match &self.body {
            Body::Actions { actions, .. } => actions.len(),
            _ => 0,
        }
    }

    /// The payload's JSON text, exactly as the connector sends it (one `data:` line's worth).
    pub fn to_json(&self, time: &Timebase) -> String {
        let ms = |t: f64| (time.unix(t) * 1000.0).round() / 1000.0;
        let forwarded_at = (time.unix(self.at) * 1e6).round() / 1e6;
        let result = match &self.body {
            Body::Actions { envelope, actions } => {
                let email_value = envelope.email.as_ref().and_then(|e| e.as_deref());
                let wire = ActionsWire {
                    kind: "actions",
                    product_id: &envelope.product_id,
                    session_id: envelope.session_id.as_deref(),
                    user_id: envelope.user_id.as_deref(),
                    email: envelope.email.as_ref().map(|e| e.as_deref()),
                    actions: actions
                        .iter()
                        .map(|a| ActionWire {
                            index: a.index,
                            kind: a.kind,
                            title: &a.title,
                            description: &a.description,
                            timestamp_start: ms(a.start),
                            timestamp_end: ms(a.end),
                            raw_url: absolute(&a.raw_path),
                            canonical_url: absolute(&a.canonical_path),
                            session_id: envelope.session_id.as_deref(),
                            user_id: envelope.user_id.as_deref(),
                            email: email_value,
                            conversation_id: envelope.conversation_id.as_deref(),
                        })
                        .collect(),
                    count: actions.len(),
                    forwarded_at,
                    conversation_id: envelope.conversation_id.as_deref(),
                };
                serde_json::to_string(&wire)
            }
            Body::Summary {
                envelope,
                text,
                replaces,
            } => serde_json::to_string(&SummaryWire {
                kind: "summary",
                product_id: &envelope.product_id,
                session_id: envelope.session_id.as_deref(),
                summary: text,
                replaces: *replaces,
                forwarded_at,
            }),
            Body::Tour {
                envelope,
                flow_id,
                reason,
            } => serde_json::to_string(&TourWire {
                kind: "usertour_trigger",
                product_id: &envelope.product_id,
                flow_id,
                session_id: envelope.session_id.as_deref(),
                reason: reason.as_deref(),
                user_id: envelope.user_id.as_deref(),
            }),
        };
        // Plain structs of strings and finite numbers always serialise.
        result.unwrap_or_else(|_| unreachable!())
    }
}

#[derive(Serialize)]
struct ActionsWire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    product_id: &'a str,
    session_id: Option<&'a str>,
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<Option<&'a str>>,
    actions: Vec<ActionWire<'a>>,
    count: usize,
    forwarded_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ActionWire<'a> {
    index: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    description: &'a str,
    timestamp_start: f64,
    timestamp_end: f64,
    raw_url: String,
    canonical_url: String,
    session_id: Option<&'a str>,
    user_id: Option<&'a str>,
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct SummaryWire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    product_id: &'a str,
    session_id: Option<&'a str>,
    summary: &'a str,
    replaces: usize,
    forwarded_at: f64,
}

#[derive(Serialize)]
struct TourWire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    product_id: &'a str,
    flow_id: &'a str,
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    user_id: Option<&'a str>,
}

fn absolute(path: &str) -> String {
    format!("{APP_ORIGIN}{path}")
}

/// A persona's endless walk through its script, as the connector would forward it.
pub struct Journey {
    persona: Persona,
    rng: StdRng,
    /// Journey time of the next action.
    clock: f64,
    round: u32,
    next_index: i64,
    last_at: f64,
    /// The page (raw, canonical path) the previous round ended on: the next one starts there.
    here: (String, String),
    envelope: Envelope,
    pending: std::collections::VecDeque<Emission>,
}

impl Journey {
    /// Start `persona`'s journey; the same persona and seed always produce the same emissions.
    pub fn new(persona: Persona, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(mix(
            seed,
            persona.role.index(),
            persona.index.unwrap_or(u64::MAX),
            2,
        ));
        // Personas do not all start at the same instant.
        let clock = rng.random_range(0.0..1.5);
        let envelope = Envelope {
            product_id: persona.product_id.clone(),
            session_id: persona.session_id.clone(),
            user_id: match persona.role {
                Role::Newcomer | Role::AnonymousVisitor | Role::UnlinkedTraffic => {
                    persona.anonymous_id.clone()
                }
                _ => persona.user_id.clone(),
            },
            email: match persona.role {
                Role::Newcomer | Role::AnonymousVisitor => None,
                Role::UnlinkedTraffic => Some(None),
                _ => Some(persona.email.clone()),
            },
            conversation_id: None,
        };
        Self {
            persona,
            rng,
            clock,
            round: 0,
            next_index: 0,
            last_at: 0.0,
            here: ("/".to_string(), "/".to_string()),
            envelope,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The persona walking.
    pub fn persona(&self) -> &Persona {
        &self.persona
    }

    /// The next payload, in time order (journeys never end).
    pub fn next_emission(&mut self) -> Emission {
        loop {
            if let Some(emission) = self.pending.pop_front() {
                return emission;
            }
            self.plan_round();
        }
    }

    /// Script one round and turn it into emissions.
    fn plan_round(&mut self) {
        let round = self.round;
        self.round += 1;
        let mut script = Script::new(&mut self.rng, self.here.clone());
        match self.persona.role {
            Role::NotificationsHunter => hunter(&mut script, round),
            Role::ProjectAbandoner => abandoner(&mut script, round),
            Role::BillingStuck => billing(&mut script, round),
            Role::Newcomer => newcomer(&mut script, round),
            Role::AnonymousVisitor => visitor(&mut script, round),
            Role::UnlinkedTraffic => unlinked(&mut script),
        }
        let Script {
            beats,
            summary,
            pause,
            raw_path,
            canonical_path,
            ..
        } = script;
        self.here = (raw_path, canonical_path);
        let mut batch = Batch::default();
        let mut round_actions = 0;
        for beat in beats {
            match beat {
                Beat::Act(step) => {
                    let start = self.clock;
                    if !batch.actions.is_empty()
                        && (start - batch.last_end > FLUSH_GAP || batch.actions.len() >= MAX_BATCH)
                    {
                        self.flush(&mut batch);
                    }
                    let end = start + step.busy;
                    // The previous action of the batch lasted until this one started.
                    if let Some(previous) = batch.actions.last_mut() {
                        previous.end = previous.end.max(start);
                    }
                    batch.actions.push(TimedAction {
                        index: self.next_index,
                        kind: step.kind,
                        title: step.title,
                        description: step.description,
                        start,
                        end,
                        raw_path: step.raw_path,
                        canonical_path: step.canonical_path,
                    });
                    batch.notes.extend(step.note);
                    batch.last_end = end;
                    self.next_index += 1;
                    round_actions += 1;
                    self.clock = end + step.think;
                }
                Beat::Identify => {
                    self.flush(&mut batch);
                    self.envelope.user_id = self.persona.user_id.clone();
                    self.envelope.email = Some(self.persona.email.clone());
                    if let Some(email) = &self.persona.email {
                        batch.notes.push(format!("signed up as {email}"));
                    }
                }
                Beat::LinkChat => {
                    self.flush(&mut batch);
                    let id: u64 = self
                        .rng
                        .random_range(100_000_000_000_000..999_999_999_999_999);
                    self.envelope.conversation_id = Some(id.to_string());
                }
                Beat::Tour { flow_id, reason } => {
                    self.flush(&mut batch);
                    let at = self.schedule(batch.last_end.max(self.clock - 1.0) + 0.8);
                    self.pending.push_back(Emission {
                        at,
                        body: Body::Tour {
                            envelope: self.envelope.clone(),
                            flow_id: flow_id.to_string(),
                            reason: Some(reason.to_string()),
                        },
                        narration: vec![format!("was offered the product tour {flow_id}")],
                    });
                }
            }
        }
        self.flush(&mut batch);
        if let Some(text) = summary
            && self.envelope.session_id.is_some()
        {
            let delay = self.rng.random_range(1.0..3.0);
            let at = self.schedule(self.clock + delay);
            self.pending.push_back(Emission {
                at,
                body: Body::Summary {
                    envelope: self.envelope.clone(),
                    text,
                    replaces: round_actions,
                },
                narration: Vec::new(),
            });
        }
        self.clock += pause;
    }

    /// Forward the collected batch (shortly after its last action).
    fn flush(&mut self, batch: &mut Batch) {
        if batch.actions.is_empty() {
            batch.notes.clear();
            return;
        }
        let delay = self.rng.random_range(0.3..1.2);
        let at = self.schedule(batch.last_end + delay);
        let actions = std::mem::take(&mut batch.actions);
        let mut narration: Vec<String> = actions
            .iter()
            .filter_map(TimedAction::page_name)
            .map(|page| format!("→ {page}"))
            .collect();
        // A reload of the same page (search results) is not news.
        narration.dedup();
        narration.append(&mut batch.notes);
        self.pending.push_back(Emission {
            at,
            body: Body::Actions {
                envelope: self.envelope.clone(),
                actions,
            },
            narration,
        });
    }

    /// Emission times never go backwards.
    fn schedule(&mut self, at: f64) -> f64 {
        let at = at.max(self.last_at + 0.001);
        self.last_at = at;
        at
    }
}

#[derive(Default)]
struct Batch {
    actions: Vec<TimedAction>,
    notes: Vec<String>,
    last_end: f64,
}

/// One scripted step before it gets times.
struct Step {
    kind: &'static str,
    title: String,
    description: String,
    raw_path: String,
    canonical_path: String,
    /// Time the action itself takes (typing), journey seconds.
    busy: f64,
    /// Pause after it before the next action.
    think: f64,
    note: Option<String>,
}

enum Beat {
    Act(Step),
    /// The user signs up or logs in: later batches carry their user id and email.
    Identify,
    /// The user opened the support chat: later batches carry a conversation id.
    LinkChat,
    Tour {
        flow_id: &'static str,
        reason: &'static str,
    },
}

/// A round being scripted: the current page, and helpers that draw human timings.
struct Script<'r> {
    rng: &'r mut StdRng,
    beats: Vec<Beat>,
    raw_path: String,
    canonical_path: String,
    summary: Option<String>,
    /// Pause after the round, journey seconds.
    pause: f64,
}

type Think = (f64, f64);

/// Reading a page.
const READ: Think = (4.0, 9.0);
/// Moving the mouse to the next control.
const REACH: Think = (0.3, 0.9);
/// The page load right after a click.
const LOAD: Think = (0.2, 0.6);

impl<'r> Script<'r> {
    fn new(rng: &'r mut StdRng, (raw_path, canonical_path): (String, String)) -> Self {
        Self {
            rng,
            beats: Vec::new(),
            raw_path,
            canonical_path,
            summary: None,
            pause: 10.0,
        }
    }

    fn draw(&mut self, (low, high): Think) -> f64 {
        if high > low {
            self.rng.random_range(low..high)
        } else {
            low
        }
    }

    fn act(
        &mut self,
        kind: &'static str,
        title: String,
        description: String,
        busy: f64,
        think: Think,
    ) {
        let think = self.draw(think);
        self.beats.push(Beat::Act(Step {
            kind,
            title,
            description,
            raw_path: self.raw_path.clone(),
            canonical_path: self.canonical_path.clone(),
            busy,
            think,
            note: None,
        }));
    }

    /// A page load: the user is now on `name` at `raw` (canonical `canonical`).
    fn page(&mut self, name: &str, raw: &str, canonical: &str, description: &str, think: Think) {
        self.raw_path = raw.to_string();
        self.canonical_path = canonical.to_string();
        self.act(
            "pageview",
            format!("Page Load: {name}"),
            description.to_string(),
            0.0,
            think,
        );
    }

    fn click(&mut self, title: &str, description: &str, think: Think) {
        self.act(
            "click",
            format!("Click {title}"),
            description.to_string(),
            0.0,
            think,
        );
    }

    fn focus(&mut self, field: &str, think: Think) {
        self.act(
            "focus",
            format!("Focus {field} field"),
            format!("User focused the {field} field"),
            0.0,
            think,
        );
    }

    /// Typing `chars` characters takes human time (0.15–0.3 s a key).
    fn typing(&mut self, field: &str, chars: usize, description: Option<String>, think: Think) {
        let per_key = self.draw((0.15, 0.3));
        let description =
            description.unwrap_or_else(|| format!("User typed into the {field} field"));
        self.act(
            "type",
            format!("Type in {field} field"),
            description,
            per_key * chars as f64,
            think,
        );
    }

    fn submit(&mut self, form: &str, description: &str, think: Think) {
        self.act(
            "submit",
            format!("Submit {form} form"),
            description.to_string(),
            0.0,
            think,
        );
    }

    /// Mark the last action as worth telling the demo's audience about.
    fn note(&mut self, text: &str) {
        if let Some(Beat::Act(step)) = self.beats.last_mut() {
            step.note = Some(text.to_string());
        }
    }

    fn beat(&mut self, beat: Beat) {
        self.beats.push(beat);
    }

    fn pause_after(&mut self, range: Think) {
        self.pause = self.draw(range);
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        // The scripts only pick from non-empty constant lists.
        items.choose(self.rng).unwrap_or_else(|| unreachable!())
    }
}

fn dashboard(s: &mut Script, raw: &str) {
    s.page(
        "Dashboard",
        raw,
        "/dashboard",
        "User landed on the Dashboard page",
        (3.0, 7.0),
    );
}

/// Consultants list → a profile → one of its tabs → back; sometimes a search first.
fn hunter(s: &mut Script, round: u32) {
    if round == 0 {
        dashboard(s, "/dashboard?ref=login");
    }
    s.click(
        "Consultants link",
        "User clicked the Consultants link in the left sidebar",
        LOAD,
    );
    s.page(
        "Consultants",
        "/consultants",
        "/consultants",
        "User opened the Consultants list",
        READ,
    );
    let mut visited = Vec::new();
    let visits = if round == 0 {
        2
    } else {
        1 + usize::from(s.chance(0.5))
    };
    for visit in 0..visits {
        let consultant = s.pick(&words().consultants);
        let (id, name) = (consultant.id, consultant.name.as_str());
        visited.push(name);
        s.click(
            &format!("consultant row: {name}"),
            &format!("User clicked {name} in the Consultants list"),
            LOAD,
        );
        s.page(
            &format!("Consultant: {name}"),
            &format!("/consultants/{id}"),
            "/consultants/:id",
            &format!("User opened {name}'s consultant profile"),
            (5.0, 12.0),
        );
        let tab = s.pick(&words().profile_tabs);
        let (tab, slug) = (tab.label.as_str(), tab.slug.as_str());
        s.click(
            &format!("{tab} tab"),
            &format!("User clicked the {tab} tab of {name}'s profile"),
            LOAD,
        );
        s.page(
            &format!("Consultant {}: {name}", tab.to_lowercase()),
            &format!("/consultants/{id}/{slug}"),
            &format!("/consultants/:id/{slug}"),
            &format!("User opened the {tab} tab of {name}'s profile"),
            (4.0, 10.0),
        );
        s.click(
            "Back to Consultants",
            "User clicked Back to Consultants",
            LOAD,
        );
        s.page(
            "Consultants",
            "/consultants",
            "/consultants",
            "User went back to the Consultants list",
            (2.0, 5.0),
        );
        if visit == 0 || s.chance(0.4) {
            let term = s.pick(&words().searches).as_str();
            s.focus("Search consultants", REACH);
            s.typing(
                "Search consultants",
                term.len(),
                Some(format!(
                    "User typed \"{term}\" into the consultants search box"
                )),
                (0.8, 2.0),
            );
            s.page(
                "Consultants",
                &format!("/consultants?q={}", term.replace(' ', "+")),
                "/consultants",
                &format!(
                    "User saw the consultants search results for \"{term}\": no consultants match"
                ),
                (3.0, 6.0),
            );
            s.note(&format!("searched the consultants for \"{term}\""));
            s.click(
                "Clear search",
                "User cleared the consultants search",
                (1.0, 2.5),
            );
        }
    }
    s.summary = Some(format!(
        "The user moved between the Consultants list and consultant profiles ({}), opened their tabs and searched the consultants list for notification-related terms; they never opened the Notifications page.",
        visited.join(", ")
    ));
    s.pause_after((6.0, 15.0));
}

/// Projects → New project → part of the form → leaves without creating anything.
fn abandoner(s: &mut Script, round: u32) {
    if round == 0 {
        dashboard(s, "/dashboard");
        s.click(
            "Projects link",
            "User clicked the Projects link in the left sidebar",
            LOAD,
        );
    } else {
        s.click(
            "Projects link",
            "User clicked the Projects link in the left sidebar",
            LOAD,
        );
    }
    s.page(
        "Projects",
        "/projects",
        "/projects",
        "User opened the Projects list",
        READ,
    );
    s.click(
        "New project button",
        "User clicked the New project button",
        LOAD,
    );
    s.page(
        "New project",
        "/projects/new",
        "/projects/new",
        "User opened the new-project form",
        (2.0, 4.0),
    );
    let name = s.pick(&words().project_names).as_str();
    s.focus("Project name", REACH);
    s.typing("Project name", name.len(), None, (2.0, 5.0));
    // Where they give up differs from round to round.
    let gives_up_at: u32 = s.rng.random_range(if round == 0 { 2..3 } else { 0..3 });
    let mut got_to = "the project name";
    if gives_up_at >= 1 {
        let template = s.pick(&words().templates).as_str();
        s.click(
            "Template dropdown",
            "User opened the Template dropdown",
            (1.0, 3.0),
        );
        s.click(
            &format!("template option: {template}"),
            &format!("User chose the {template} template"),
            (2.0, 4.0),
        );
        s.focus("Description", REACH);
        let chars = s.rng.random_range(40..110);
        s.typing("Description", chars, None, (3.0, 8.0));
        got_to = "the template and description";
    }
    if gives_up_at >= 2 {
        s.click(
            "Next: Members",
            "User clicked Next to the Members step",
            LOAD,
        );
        s.page(
            "New project: Members",
            "/projects/new/members",
            "/projects/new/members",
            "User reached the Members step of the new-project form",
            (3.0, 6.0),
        );
        s.focus("Invite by email", (15.0, 35.0));
        got_to = "the Members step (they focused the invite field but invited no one)";
    } else {
        // Hesitation before leaving.
        s.click(
            "Help icon",
            "User hovered and clicked the help icon next to the form",
            (10.0, 25.0),
        );
    }
    s.click(
        "Cancel button",
        "User clicked Cancel and left the new-project form",
        LOAD,
    );
    s.note("abandoned the new-project form");
    s.page(
        "Projects",
        "/projects",
        "/projects",
        "User is back on the Projects list",
        READ,
    );
    let project: u32 = s.rng.random_range(4000..4999);
    s.click(
        &format!("project row: Project {project}"),
        "User opened an existing project from the list",
        LOAD,
    );
    s.page(
        &format!("Project {project}"),
        &format!("/projects/{project}/overview"),
        "/projects/:id/overview",
        "User opened an existing project's overview",
        (8.0, 16.0),
    );
    s.summary = Some(format!(
        "The user started creating a new project (\"{name}\"), got as far as {got_to}, then clicked Cancel without creating it and went back to an existing project."
    ));
    s.pause_after((15.0, 30.0));
}

/// Upgrade → pay → declined → retry … → support chat.
fn billing(s: &mut Script, round: u32) {
    if round == 0 {
        dashboard(s, "/dashboard");
        s.click(
            "Settings link",
            "User clicked Settings in the left sidebar",
            LOAD,
        );
        s.page(
            "Settings",
            "/settings",
            "/settings",
            "User opened Settings",
            (2.0, 4.0),
        );
        s.click("Billing tab", "User clicked the Billing tab", LOAD);
    } else {
        s.click("Billing link", "User clicked Billing in Settings", LOAD);
    }
    s.page(
        "Billing",
        "/settings/billing",
        "/settings/billing",
        "User opened the Billing page",
        READ,
    );
    let attempts = if round == 0 {
        2
    } else {
        s.rng.random_range(1..3)
    };
    for attempt in 0..attempts {
        if attempt == 0 {
            s.click(
                "Upgrade plan button",
                "User clicked the Upgrade plan button",
                LOAD,
            );
        } else {
            s.click(
                "Try again button",
                "User clicked Try again on the Payment failed page",
                LOAD,
            );
        }
        s.page(
            "Upgrade plan",
            "/settings/billing/upgrade",
            "/settings/billing/upgrade",
            "User opened the Upgrade plan page",
            (3.0, 6.0),
        );
        if attempt == 0 {
            s.click(
                "Annual toggle",
                "User switched the billing period toggle to Annual",
                (1.0, 3.0),
            );
        }
        s.focus("Card number", REACH);
        s.typing("Card number", 19, None, (0.5, 1.5));
        s.typing("Expiry", 5, None, (0.3, 1.0));
        s.typing("CVC", 3, None, (1.0, 2.5));
        s.submit("Payment", "User submitted the payment form", LOAD);
        let code = s.pick(&words().decline_codes).as_str();
        s.page(
            "Payment failed",
            &format!("/settings/billing/upgrade/error?code={code}"),
            "/settings/billing/upgrade/error",
            "User saw the Payment failed page: the card was declined",
            (5.0, 10.0),
        );
        s.note(if attempt == 0 {
            "payment declined"
        } else {
            "payment declined again"
        });
    }
    if round == 0 {
        s.beat(Beat::Tour {
            flow_id: "flow_billing_retry_v2",
            reason: "payment failed twice",
        });
        s.click(
            "Update billing address",
            "User clicked Update billing address",
            LOAD,
        );
        s.page(
            "Billing address",
            "/settings/billing/address",
            "/settings/billing/address",
            "User opened the Billing address form",
            (2.0, 4.0),
        );
        s.typing("Postal code", 5, None, (1.0, 2.0));
        s.submit("Billing address", "User saved the billing address", LOAD);
        s.page(
            "Billing",
            "/settings/billing",
            "/settings/billing",
            "User is back on the Billing page",
            (2.0, 4.0),
        );
        s.click(
            "Upgrade plan button",
            "User clicked the Upgrade plan button",
            LOAD,
        );
        s.page(
            "Upgrade plan",
            "/settings/billing/upgrade",
            "/settings/billing/upgrade",
            "User opened the Upgrade plan page",
            (2.0, 4.0),
        );
        s.submit("Payment", "User submitted the payment form", LOAD);
        s.page(
            "Payment failed",
            "/settings/billing/upgrade/error?code=card_declined",
            "/settings/billing/upgrade/error",
            "User saw the Payment failed page: the card was declined",
            (6.0, 12.0),
        );
        s.note("payment declined a third time");
        s.click(
            "Help chat button",
            "User opened the support chat",
            (2.0, 4.0),
        );
        s.note("opened the support chat");
        s.beat(Beat::LinkChat);
        s.summary = Some(
            "The user tried to upgrade to the annual plan; the card payment was declined twice, they updated the billing address and retried, and it was declined again. They opened the support chat."
                .to_string(),
        );
    } else {
        s.summary = Some(format!(
            "The user retried the plan upgrade {attempts} more time(s) from the Billing page; each card payment was declined."
        ));
    }
    s.pause_after((20.0, 40.0));
}

/// Sign-up (anonymous until it succeeds), then a wander through the product.
fn newcomer(s: &mut Script, round: u32) {
    if round == 0 {
        s.page(
            "Sign up",
            "/signup?utm_source=newsletter",
            "/signup",
            "User landed on the Sign up page",
            (3.0, 6.0),
        );
        s.focus("Work email", REACH);
        s.typing("Work email", 22, None, (0.5, 1.5));
        s.typing("Password", 12, None, (1.0, 2.0));
        s.submit("Sign up", "User submitted the sign-up form", LOAD);
        s.beat(Beat::Identify);
        s.page(
            "Welcome",
            "/onboarding/welcome",
            "/onboarding/welcome",
            "User saw the Welcome screen of the onboarding",
            (4.0, 8.0),
        );
        s.click("Skip tour", "User skipped the welcome tour", LOAD);
    }
    let stops = s.rng.random_range(3..6);
    let mut seen = Vec::new();
    for _ in 0..stops {
        let stop = s.pick(&words().explore);
        let (name, path, description) = (
            stop.name.as_str(),
            stop.path.as_str(),
            stop.description.as_str(),
        );
        if seen.last() == Some(&name) {
            continue;
        }
        seen.push(name);
        s.click(
            &format!("{name} link"),
            &format!("User clicked {name} in the navigation"),
            LOAD,
        );
        s.page(name, path, path, description, READ);
        if name == "Help Center" {
            s.click(
                "article: Getting started with Acme",
                "User opened the Getting started article",
                LOAD,
            );
            s.page(
                "Getting started with Acme",
                "/help/articles/12",
                "/help/articles/:id",
                "User read the Getting started article",
                (15.0, 30.0),
            );
        }
    }
    s.summary = Some(if round == 0 {
        format!(
            "A new user signed up, skipped the welcome tour and looked around: {}.",
            seen.join(", ")
        )
    } else {
        format!("The new user kept exploring: {}.", seen.join(", "))
    });
    s.pause_after((10.0, 25.0));
}

/// Public pages only; signs up never.
fn visitor(s: &mut Script, round: u32) {
    if round == 0 {
        s.page(
            "Pricing",
            "/pricing?utm_source=google",
            "/pricing",
            "User landed on the public Pricing page",
            READ,
        );
    } else {
        s.click("Pricing link", "User clicked Pricing in the header", LOAD);
        s.page(
            "Pricing",
            "/pricing",
            "/pricing",
            "User opened the public Pricing page",
            READ,
        );
    }
    s.click("Compare plans", "User clicked Compare plans", LOAD);
    s.page(
        "Compare plans",
        "/pricing/compare",
        "/pricing/compare",
        "User opened the plan comparison",
        (6.0, 14.0),
    );
    if s.chance(0.6) {
        s.click("Features link", "User clicked Features in the header", LOAD);
        s.page(
            "Features",
            "/features",
            "/features",
            "User opened the Features page",
            READ,
        );
    }
    s.click(
        "Customer stories link",
        "User clicked Customer stories",
        LOAD,
    );
    s.page(
        "Customer stories",
        "/customers",
        "/customers",
        "User opened Customer stories",
        READ,
    );
    s.summary = Some(
        "An anonymous visitor compared the plans on the public Pricing pages and read customer stories."
            .to_string(),
    );
    s.pause_after((20.0, 45.0));
}

/// A login-page view or two that PostHog has not linked to a session yet.
fn unlinked(s: &mut Script) {
    s.page(
        "Login",
        "/login",
        "/login",
        "User landed on the Login page",
        (2.0, 5.0),
    );
    if s.chance(0.4) {
        s.click("Forgot password link", "User clicked Forgot password", LOAD);
        s.page(
            "Reset password",
            "/login/reset",
            "/login/reset",
            "User opened the Reset password page",
            (2.0, 5.0),
        );
    }
    s.pause_after((12.0, 30.0));
}

/// Mix seed parts into one RNG seed (splitmix64 finaliser).
pub(crate) fn mix(seed: u64, a: u64, b: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ stream.wrapping_mul(0x1656_67B1_9E37_79F9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An id shaped like a UUIDv7 (PostHog's session ids), from the RNG only.
fn uuid_v7_like(rng: &mut StdRng) -> String {
    let unix_ms = ID_EPOCH_MS + rng.random_range(0..86_400_000u64);
    let rand_a: u16 = rng.random_range(0..0x1000);
    let rand_b: u64 = (rng.random::<u64>() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        unix_ms >> 16,
        unix_ms & 0xFFFF,
        rand_a,
        rand_b >> 48,
        rand_b & 0xFFFF_FFFF_FFFF
    )
}

fn alphanumeric(rng: &mut StdRng, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_word_lists_parse_and_fit_the_scripts() {
        let words = super::words();
        for role in super::Role::ALL {
            assert!(words.cast.contains_key(role.key()), "{}", role.key());
        }
        assert!(!words.consultants.is_empty() && !words.profile_tabs.is_empty());
        assert!(!words.searches.is_empty() && !words.project_names.is_empty());
        assert!(!words.templates.is_empty() && !words.decline_codes.is_empty());
        assert!(words.explore.iter().any(|s| s.name == "Help Center"));
        assert_eq!(words.link_path("Consultants"), Some("/consultants"));
    }

    use super::*;
    use crate::render::activity::render_activity;
    use crate::session::model::{Session, SessionId, SessionLimits};
    use crate::sources::autoplay::payload::{self, Payload};
    use serde_json::Value;

    const ORIGIN: f64 = 1_785_333_600.0;

    fn emissions(persona: &Persona, seed: u64, n: usize) -> Vec<Emission> {
        let mut journey = Journey::new(persona.clone(), seed);
        (0..n).map(|_| journey.next_emission()).collect()
    }

    fn json_of(emissions: &[Emission]) -> Vec<String> {
        let time = Timebase::new(ORIGIN, 1.0);
        emissions.iter().map(|e| e.to_json(&time)).collect()
    }

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        for role in Role::ALL {
            let persona = cast(7, DEFAULT_PRODUCT)
                .into_iter()
                .find(|p| p.role == role)
                .unwrap();
            let first = json_of(&emissions(&persona, 7, 60));
            let again = json_of(&emissions(
                &cast(7, DEFAULT_PRODUCT)[role.index() as usize],
                7,
                60,
            ));
            assert_eq!(first, again, "{role:?} is not deterministic");
            let other_persona = cast(8, DEFAULT_PRODUCT)[role.index() as usize].clone();
            let other = json_of(&emissions(&other_persona, 8, 60));
            assert_ne!(first, other, "{role:?} ignores the seed");
        }
        assert_eq!(cast(7, DEFAULT_PRODUCT), cast(7, DEFAULT_PRODUCT));
        assert_eq!(synthetic(3, 41, "p"), synthetic(3, 41, "p"));
        assert_ne!(
            synthetic(3, 40, "p").session_id,
            synthetic(3, 46, "p").session_id
        );
    }

    #[test]
    fn identities_look_like_posthog_ones() {
        let personas = cast(1, DEFAULT_PRODUCT);
        for p in &personas {
            if p.role == Role::UnlinkedTraffic {
                assert_eq!(p.session_id, None);
                continue;
            }
            let id = p.session_id.as_deref().unwrap();
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|s| s.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(parts[2].starts_with('7'), "version 7: {id}");
            assert!(
                matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
        let hunter = &personas[0];
        assert_eq!(hunter.email.as_deref(), Some("priya.shah@example.com"));
        assert!(hunter.user_id.as_deref().unwrap().starts_with("usr_"));
        assert_eq!(personas[4].email, None, "the visitor is anonymous");
    }

    /// Every payload decodes with livectx's own decoder and carries the reference fields.
    #[test]
    fn every_payload_is_valid_wire_format() {
        let mut personas = cast(11, DEFAULT_PRODUCT);
        personas.extend((0..12).map(|i| synthetic(11, i, "load_prod")));
        let mut kinds = std::collections::HashSet::new();
        for persona in &personas {
            for json in json_of(&emissions(persona, 11, 40)) {
                let decoded =
                    payload::decode(json.as_bytes()).unwrap_or_else(|e| panic!("{e}: {json}"));
                let value: Value = serde_json::from_str(&json).unwrap();
                kinds.insert(value["type"].as_str().unwrap().to_string());
                assert_eq!(value["product_id"], persona.product_id.as_str());
                assert!(value.get("session_id").is_some(), "{json}");
                match decoded {
                    Payload::Actions(actions) => {
                        assert!(value.get("user_id").is_some(), "{json}");
                        assert!(value["forwarded_at"].is_f64(), "{json}");
                        let list = value["actions"].as_array().unwrap();
                        assert!(!list.is_empty());
                        assert_eq!(value["count"], list.len());
                        assert_eq!(actions.actions.len(), list.len());
                        for action in list {
                            for field in [
                                "index",
                                "type",
                                "title",
                                "description",
                                "timestamp_start",
                                "timestamp_end",
                                "raw_url",
                                "canonical_url",
                            ] {
                                assert!(action.get(field).is_some(), "{field} missing: {json}");
                            }
                            assert!(
                                action["timestamp_end"].as_f64()
                                    >= action["timestamp_start"].as_f64()
                            );
                            assert!(
                                action["canonical_url"]
                                    .as_str()
                                    .unwrap()
                                    .starts_with(APP_ORIGIN)
                            );
                            let kind = action["type"].as_str().unwrap();
                            assert_eq!(kind, kind.to_lowercase());
                        }
                        match persona.role {
                            Role::AnonymousVisitor => {
                                assert!(value.get("email").is_none(), "no email key: {json}")
                            }
                            Role::UnlinkedTraffic => {
                                assert!(value["session_id"].is_null());
                                assert!(value["email"].is_null());
                            }
                            Role::Newcomer => {}
                            _ => assert!(value["email"].is_string(), "{json}"),
                        }
                    }
                    Payload::Summary(summary) => {
                        assert!(!summary.summary.is_empty());
                        assert!(summary.replaces > 0);
                    }
                    Payload::TourTrigger(tour) => assert!(!tour.flow_id.is_empty()),
                    Payload::Unknown { kind } => panic!("unknown type {kind}"),
                }
            }
        }
        for kind in ["actions", "summary", "usertour_trigger"] {
            assert!(kinds.contains(kind), "no {kind} payload generated");
        }
    }

    #[test]
    fn every_action_happens_on_a_page_the_user_loaded() {
        for persona in cast(13, DEFAULT_PRODUCT) {
            let mut loaded = std::collections::HashSet::new();
            for e in emissions(&persona, 13, 120) {
                if let Body::Actions { actions, .. } = &e.body {
                    for a in actions {
                        if a.kind == "pageview" {
                            loaded.insert(a.canonical_path.clone());
                        }
                        assert!(
                            loaded.contains(&a.canonical_path),
                            "{}: {} on {} before any page load there",
                            persona.name,
                            a.title,
                            a.canonical_path
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn synthetic_sessions_never_send_identical_payloads() {
        // Even stamped with one capped clock, as load mode does within a tick.
        let time = Timebase {
            not_after: Some(ORIGIN),
            ..Timebase::new(ORIGIN, 1000.0)
        };
        let mut seen = std::collections::HashSet::new();
        for i in 0..60 {
            let persona = synthetic(4, i, "p");
            for e in emissions(&persona, 4, 5) {
                assert!(
                    seen.insert(e.to_json(&time)),
                    "{} repeats a payload",
                    persona.name
                );
            }
        }
    }

    #[test]
    fn times_move_forward_and_indexes_continue() {
        for persona in cast(5, DEFAULT_PRODUCT) {
            let list = emissions(&persona, 5, 50);
            let mut last_at = 0.0;
            let mut next_index = 0;
            let mut last_start = 0.0;
            for e in &list {
                assert!(e.at > last_at, "{}: emission times go back", persona.name);
                last_at = e.at;
                if let Body::Actions { actions, .. } = &e.body {
                    for a in actions {
                        assert_eq!(a.index, next_index);
                        next_index += 1;
                        assert!(a.start >= last_start);
                        assert!(a.end >= a.start);
                        assert!(a.start <= e.at, "an action after its batch was forwarded");
                        last_start = a.start;
                    }
                }
            }
        }
    }

    /// Replays a persona into livectx's session model, as the server would store it.
    fn replay(persona: &Persona, seed: u64, until: f64) -> (Session, Vec<Emission>, f64) {
        let time = Timebase::new(ORIGIN, 1.0);
        let mut journey = Journey::new(persona.clone(), seed);
        let id = SessionId::parse(persona.session_id.as_deref().unwrap()).unwrap();
        let mut session = Session::new(id, ORIGIN);
        let mut seen = Vec::new();
        loop {
            let e = journey.next_emission();
            if e.at > until {
                break;
            }
            let now = time.unix(e.at);
            if let Payload::Actions(p) = payload::decode(e.to_json(&time).as_bytes()).unwrap() {
                session.append(
                    p.into_batch(None).unwrap(),
                    now,
                    SessionLimits { max_chunks: 50 },
                );
            }
            seen.push(e);
        }
        (session, seen, time.unix(until))
    }

    #[test]
    fn the_hunter_never_finds_notifications_and_looks_like_searching() {
        let hunter = &cast(42, DEFAULT_PRODUCT)[0];
        let (session, seen, now) = replay(hunter, 42, 90.0);
        for e in &seen {
            if let Body::Actions { actions, .. } = &e.body {
                assert!(
                    actions
                        .iter()
                        .all(|a| !a.canonical_path.contains("notification"))
                );
                assert!(actions.iter().all(|a| a.kind != "submit"));
            }
        }
        let text = render_activity(&session, now, 120.0);
        assert!(
            text.contains("Pattern: this looks like searching"),
            "{text}"
        );
        assert!(text.contains("\"Consultants\""), "{text}");
    }

    #[test]
    fn the_billing_user_is_declined_offered_a_tour_and_opens_the_chat() {
        let devon = &cast(3, DEFAULT_PRODUCT)[2];
        let (session, seen, now) = replay(devon, 3, 400.0);
        let text = render_activity(&session, now, 600.0);
        assert!(text.contains("submitted \"Submit Payment form\""), "{text}");
        assert!(text.contains("Payment failed"), "{text}");
        assert!(seen.iter().any(|e| matches!(e.body, Body::Tour { .. })));
        assert!(session.conversation_id().is_some(), "chat linked");
    }

    #[test]
    fn the_project_creator_abandons_the_form() {
        let maria = &cast(9, DEFAULT_PRODUCT)[1];
        let (session, _, now) = replay(maria, 9, 150.0);
        let actions: Vec<_> = session.raw_action_iter().collect();
        assert!(actions.iter().any(|a| a.title() == "Click Cancel button"));
        assert!(actions.iter().all(|a| a.kind() != "submit"));
        assert!(
            actions
                .iter()
                .any(|a| a.canonical_url() == "https://app.acme.io/projects/new")
        );
        let text = render_activity(&session, now, 600.0);
        assert!(
            text.contains("clicked \"Click Cancel button\" on New project"),
            "{text}"
        );
    }

    #[test]
    fn the_newcomer_is_anonymous_until_signing_up() {
        let sam = &cast(2, DEFAULT_PRODUCT)[3];
        let list = emissions(sam, 2, 10);
        let time = Timebase::new(ORIGIN, 1.0);
        let first: Value = serde_json::from_str(&list[0].to_json(&time)).unwrap();
        assert!(first.get("email").is_none(), "{first}");
        assert_eq!(first["user_id"], sam.anonymous_id.as_deref().unwrap());
        let identified = list
            .iter()
            .map(|e| serde_json::from_str::<Value>(&e.to_json(&time)).unwrap())
            .find(|v| v["email"].is_string())
            .expect("identified after signing up");
        assert_eq!(identified["email"], "sam.okafor@example.com");
        assert_eq!(identified["user_id"], sam.user_id.as_deref().unwrap());
    }

    #[test]
    fn timebase_scales_and_caps() {
        let mut t = Timebase::new(1000.0, 4.0);
        assert_eq!(t.unix(8.0), 1002.0);
        t.not_after = Some(1001.0);
        assert_eq!(t.unix(8.0), 1001.0);
        assert_eq!(Timebase::new(0.0, 0.0).speed, 1.0);
    }
}
