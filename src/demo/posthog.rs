//! The simulated users as posthog-js reports them, in the body of PostHog's stock "HTTP
//! Webhook" destination: `{"event": {...}, "person": {...}}`, one request per event.
//!
//! The personas' journeys are the same as on the simulated Autoplay stream; only the wire
//! changes. A page load becomes `$pageview` (with the page's `title`, after a `$pageleave` of
//! the page before), a click, a typed field and a submitted form become `$autocapture` events
//! with the `elements_chain` posthog-js would serialise (target first, then its ancestors), and
//! focusing a field sends nothing, as posthog-js does. Fields posthog-js never captures
//! (passwords, card numbers, expiry, CVC) send nothing either. The first payment failure of a
//! session also throws an `$exception` and provokes a `$rageclick` on "Try again", so the demo
//! shows the signals a support bot needs most.

use serde_json::{Map, Value, json};

use crate::clock;
use crate::demo::personas::{self, Body, Emission, Persona, Timebase, TimedAction};

/// The PostHog app the events' links point into (never called).
const POSTHOG_APP: &str = "https://us.posthog.com/project/1";

/// What posthog-js would send for one persona: it remembers the page the user is on (for
/// `$pageleave`) and whether the one-off error was already thrown.
#[derive(Debug, Clone)]
pub struct PosthogSession {
    distinct_id: String,
    window_id: String,
    /// The current page: absolute URL, path and when it was loaded (Unix seconds).
    page: Option<(String, String, f64)>,
    exception_thrown: bool,
    /// Seeds the event uuids (distinct per persona, stable across runs).
    id_seed: u64,
    sent: u64,
}

impl PosthogSession {
    /// posthog-js in `persona`'s browser tab.
    pub fn new(persona: &Persona) -> Self {
        let id_seed = personas::mix(
            fnv(persona.session_id.as_deref().unwrap_or(&persona.name)),
            fnv(&persona.name),
            persona.index.unwrap_or(u64::MAX),
            3,
        );
        let distinct_id = persona
            .anonymous_id
            .clone()
            .unwrap_or_else(|| uuid_like(clock_ms(1_785_300_000.0), id_seed ^ 0x5EED));
        Self {
            window_id: uuid_like(clock_ms(1_785_300_000.0), id_seed ^ 0xD00D),
            distinct_id,
            page: None,
            exception_thrown: false,
            id_seed,
            sent: 0,
        }
    }

    /// The webhook bodies `emission` turns into, in the order posthog-js would send them
    /// (summaries and tours are the connector's own and have no PostHog equivalent).
    pub fn events(
        &mut self,
        persona: &Persona,
        emission: &Emission,
        time: &Timebase,
    ) -> Vec<Value> {
        let Body::Actions { envelope, actions } = &emission.body else {
            return Vec::new();
        };
        // Identified users are their user id; before that, PostHog's anonymous id.
        let distinct_id = match (&envelope.user_id, &persona.user_id) {
            (Some(id), Some(user)) if id == user => user.clone(),
            _ => self.distinct_id.clone(),
        };
        let email = envelope.email.clone().flatten();
        let context = Context {
            session_id: envelope.session_id.as_deref(),
            distinct_id: &distinct_id,
            email: email.as_deref(),
        };
        let mut events = Vec::new();
        for action in actions {
            self.action_events(&context, action, time, &mut events);
        }
        events
    }

    fn action_events(
        &mut self,
        context: &Context,
        action: &TimedAction,
        time: &Timebase,
        out: &mut Vec<Value>,
    ) {
        let at = time.unix(action.start);
        match action.kind {
            "pageview" => {
                let url = format!("{}{}", personas::APP_ORIGIN, action.raw_path);
                let path = path_of(&action.raw_path).to_string();
                let mut props = Map::new();
                if let Some((previous_url, previous_path, since)) = self.page.take() {
                    let mut leave = Map::new();
                    leave.insert("$current_url".into(), json!(previous_url));
                    leave.insert("$pathname".into(), json!(previous_path));
                    leave.insert(
                        "$prev_pageview_duration".into(),
                        json!(((at - since).max(0.0) * 10.0).round() / 10.0),
                    );
                    out.push(self.event(context, "$pageleave", at, "", leave));
                    props.insert("$prev_pageview_pathname".into(), json!(previous_path));
                    props.insert("$referrer".into(), json!(previous_url));
                }
                props.insert("$current_url".into(), json!(url));
                props.insert("$pathname".into(), json!(path));
                props.insert(
                    "title".into(),
                    json!(action.page_name().unwrap_or_default()),
                );
                out.push(self.event(context, "$pageview", at, "", props.clone()));
                self.page = Some((url.clone(), path.clone(), at));
                if action.page_name() == Some("Payment failed") && !self.exception_thrown {
                    self.exception_thrown = true;
                    self.throw_and_rage(context, time, action.start, &url, &path, out);
                }
            }
            "click" => {
                let target = action.title.strip_prefix("Click ").unwrap_or(&action.title);
                let chain = click_chain(target);
                out.push(self.autocapture(context, at, "click", &chain, Some(target)));
            }
            "type" => {
                let field = field_of(&action.title);
                if !posthog_would_capture(field) {
                    return;
                }
                let chain = field_chain(field);
                out.push(self.autocapture(context, at, "change", &chain, None));
            }
            "submit" => {
                let form = action
                    .title
                    .strip_prefix("Submit ")
                    .and_then(|f| f.strip_suffix(" form"))
                    .unwrap_or(&action.title);
                let chain = form_chain(form);
                out.push(self.autocapture(context, at, "submit", &chain, None));
            }
            // posthog-js autocapture has no focus event; anything else is not posthog-js's.
            _ => {}
        }
    }

    /// The payment page's script fails, and the user hammers "Try again".
    fn throw_and_rage(
        &mut self,
        context: &Context,
        time: &Timebase,
        start: f64,
        url: &str,
        path: &str,
        out: &mut Vec<Value>,
    ) {
        let mut props = self.page_props(url, path);
        props.insert(
            "$exception_list".into(),
            json!([{
                "type": "TypeError",
                "value": "Cannot read properties of undefined (reading 'last4')",
                "mechanism": {"handled": false, "synthetic": false, "type": "onunhandledrejection"},
                "stacktrace": {"type": "raw", "frames": [{
                    "filename": "https://app.acme.io/assets/billing-7f3a1c.js",
                    "function": "renderDeclinedCard", "lineno": 214, "colno": 31, "in_app": true
                }]}
            }]),
        );
        props.insert("$exception_level".into(), json!("error"));
        let thrown = time.unix(start + 0.4);
        out.push(self.event(context, "$exception", thrown, "", props));
        let chain = click_chain("Try again button");
        let mut props = self.page_props(url, path);
        props.insert("$el_text".into(), json!("Try again"));
        let raged = time.unix(start + 1.6);
        out.push(self.event(context, "$rageclick", raged, &chain, props));
    }

    fn page_props(&self, url: &str, path: &str) -> Map<String, Value> {
        let mut props = Map::new();
        props.insert("$current_url".into(), json!(url));
        props.insert("$pathname".into(), json!(path));
        props
    }

    fn autocapture(
        &mut self,
        context: &Context,
        at: f64,
        event_type: &str,
        chain: &str,
        text: Option<&str>,
    ) -> Value {
        let (url, path) = match &self.page {
            Some((url, path, _)) => (url.clone(), path.clone()),
            None => (format!("{}/", personas::APP_ORIGIN), "/".to_string()),
        };
        let mut props = self.page_props(&url, &path);
        props.insert("$event_type".into(), json!(event_type));
        if let Some(text) = text.and_then(visible_text) {
            props.insert("$el_text".into(), json!(text));
        }
        self.event(context, "$autocapture", at, chain, props)
    }

    /// One stock-webhook body.
    fn event(
        &mut self,
        context: &Context,
        name: &str,
        at: f64,
        chain: &str,
        mut props: Map<String, Value>,
    ) -> Value {
        self.sent += 1;
        let uuid = uuid_like(clock_ms(at), personas::mix(self.id_seed, self.sent, 0, 4));
        let timestamp = clock::format_rfc3339(at);
        if let Some(session) = context.session_id {
            props.insert("$session_id".into(), json!(session));
        }
        props.insert("$window_id".into(), json!(self.window_id));
        props.insert("$host".into(), json!("app.acme.io"));
        props.insert("$lib".into(), json!("web"));
        props.insert("$lib_version".into(), json!("1.200.0"));
        props.insert("distinct_id".into(), json!(context.distinct_id));
        let mut person_props = Map::new();
        if let Some(email) = context.email {
            person_props.insert("email".into(), json!(email));
        }
        json!({
            "event": {
                "uuid": uuid,
                "event": name,
                "distinct_id": context.distinct_id,
                "timestamp": timestamp,
                "elements_chain": chain,
                "properties": props,
                "url": format!("{POSTHOG_APP}/events/{uuid}/{timestamp}"),
            },
            "person": {
                "id": uuid_like(clock_ms(1_785_300_000.0), fnv(context.distinct_id)),
                "properties": person_props,
                "name": context.email.unwrap_or(context.distinct_id),
                "url": format!("{POSTHOG_APP}/person/{}", context.distinct_id),
            },
        })
    }
}

struct Context<'a> {
    session_id: Option<&'a str>,
    distinct_id: &'a str,
    email: Option<&'a str>,
}

/// One element of an `elements_chain`, as posthog-js serialises it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub tag: &'static str,
    pub classes: Vec<&'static str>,
    /// `attr__<name>` attributes (without the prefix).
    pub attrs: Vec<(&'static str, String)>,
    pub text: Option<String>,
    pub href: Option<String>,
    pub nth_child: u32,
    pub nth_of_type: u32,
}

impl Element {
    fn new(tag: &'static str, classes: &[&'static str]) -> Self {
        Self {
            tag,
            classes: classes.to_vec(),
            nth_child: 1,
            nth_of_type: 1,
            ..Self::default()
        }
    }

    fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((name, value.into()));
        self
    }

    fn text(mut self, text: &str) -> Self {
        self.text = Some(text.to_string());
        self
    }

    fn href(mut self, href: &str) -> Self {
        self.href = Some(href.to_string());
        self.attrs.push(("href", href.to_string()));
        self
    }

    fn nth(mut self, child: u32, of_type: u32) -> Self {
        self.nth_child = child;
        self.nth_of_type = of_type;
        self
    }

    /// `tag.class:key="value"…`, keys sorted, `"` escaped, as posthog-js writes it.
    pub fn serialise(&self) -> String {
        let mut out = String::from(self.tag);
        let mut classes = self.classes.clone();
        classes.sort_unstable();
        for class in &classes {
            out.push('.');
            out.push_str(class);
        }
        let mut pairs: Vec<(String, String)> = self
            .attrs
            .iter()
            .map(|(k, v)| (format!("attr__{k}"), v.clone()))
            .collect();
        if !classes.is_empty() {
            pairs.push(("attr__class".to_string(), classes.join(" ")));
        }
        if let Some(href) = &self.href {
            pairs.push(("href".to_string(), href.clone()));
        }
        pairs.push(("nth-child".to_string(), self.nth_child.to_string()));
        pairs.push(("nth-of-type".to_string(), self.nth_of_type.to_string()));
        if let Some(text) = &self.text {
            pairs.push(("text".to_string(), text.chars().take(400).collect()));
        }
        pairs.sort();
        out.push(':');
        for (key, value) in pairs {
            out.push_str(&key);
            out.push_str("=\"");
            out.push_str(&value.replace('"', "\\\""));
            out.push('"');
        }
        out
    }
}

/// Elements joined by `;`, the target first.
pub fn chain(elements: &[Element]) -> String {
    elements
        .iter()
        .map(Element::serialise)
        .collect::<Vec<_>>()
        .join(";")
}

fn body() -> Element {
    Element::new("body", &[])
}

fn app_shell() -> Vec<Element> {
    vec![Element::new("div", &["app"]).attr("id", "root"), body()]
}

fn in_main(target: Vec<Element>) -> Vec<Element> {
    let mut elements = target;
    elements.push(Element::new("div", &["actions"]).nth(2, 2));
    elements.push(Element::new("main", &["content"]).nth(2, 1));
    elements.extend(app_shell());
    elements
}

/// The element a persona's click lands on ("Consultants link", "Help icon", "template
/// option: Blank project"), with the ancestors a real page would have.
pub fn click_chain(target: &str) -> String {
    let elements = match target {
        "Help icon" => in_main(vec![
            Element::new("svg", &["icon", "icon-help"]).attr("aria-hidden", "true"),
            Element::new("button", &["icon-button"])
                .attr("aria-label", "Help")
                .attr("type", "button")
                .nth(3, 2),
        ]),
        "Clear search" => in_main(vec![
            Element::new("button", &["icon-button"])
                .attr("aria-label", "Clear search")
                .attr("type", "button")
                .nth(2, 1),
        ]),
        "Help chat button" => vec![
            Element::new("svg", &["icon", "icon-chat"]).attr("aria-hidden", "true"),
            Element::new("button", &["chat-launcher"])
                .attr("aria-label", "Open support chat")
                .attr("type", "button"),
            Element::new("div", &["chat-widget"]).nth(3, 3),
            body(),
        ],
        "Annual toggle" => in_main(vec![
            Element::new("input", &["switch"])
                .attr("aria-label", "Bill annually")
                .attr("role", "switch")
                .attr("type", "checkbox"),
        ]),
        "Template dropdown" => in_main(vec![
            Element::new("button", &["select-trigger"])
                .attr("aria-haspopup", "listbox")
                .attr("aria-label", "Template")
                .attr("type", "button"),
        ]),
        _ => generic_click(target),
    };
    chain(&elements)
}

fn generic_click(target: &str) -> Vec<Element> {
    if let Some(label) = target.strip_suffix(" link") {
        let nav = Element::new("nav", &["sidebar"]).attr("aria-label", "Main");
        let mut elements = vec![
            Element::new("a", &["nav-link"]).text(label).nth(2, 1),
            Element::new("li", &["nav-item"]).nth(3, 3),
            Element::new("ul", &["nav"]),
            nav,
        ];
        if let Some(path) = personas::words().link_path(label) {
            elements[0] = elements[0].clone().href(path);
        }
        elements.extend(app_shell());
        return elements;
    }
    if let Some(label) = target.strip_suffix(" button") {
        return in_main(vec![
            Element::new("button", &["btn", "btn-primary"])
                .attr("type", "button")
                .text(label),
        ]);
    }
    if let Some(label) = target.strip_suffix(" tab") {
        return in_main(vec![
            Element::new("button", &["tab"])
                .attr("aria-selected", "false")
                .attr("role", "tab")
                .text(label)
                .nth(2, 2),
            Element::new("div", &["tabs"]).attr("role", "tablist"),
        ]);
    }
    if let Some(name) = target.strip_prefix("consultant row: ") {
        let id = personas::words()
            .consultants
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.id);
        return in_main(vec![
            Element::new("a", &["row-link"])
                .href(&format!("/consultants/{id}"))
                .text(name),
            Element::new("td", &[]),
            Element::new("tr", &["row"]).nth(4, 4),
            Element::new("tbody", &[]).nth(2, 1),
            Element::new("table", &["table"]),
        ]);
    }
    if let Some(name) = target.strip_prefix("project row: ") {
        return in_main(vec![
            Element::new("td", &[]).text(name),
            Element::new("tr", &["row"]).attr("role", "link").nth(2, 2),
            Element::new("tbody", &[]).nth(2, 1),
            Element::new("table", &["table"]),
        ]);
    }
    if let Some(option) = target.strip_prefix("template option: ") {
        return in_main(vec![
            Element::new("li", &["option"])
                .attr("role", "option")
                .text(option)
                .nth(2, 2),
            Element::new("ul", &["listbox"]).attr("role", "listbox"),
        ]);
    }
    if let Some(title) = target.strip_prefix("article: ") {
        return in_main(vec![
            Element::new("a", &["article-link"])
                .href("/help/articles/12")
                .text(title),
            Element::new("li", &[]),
            Element::new("ul", &["articles"]),
        ]);
    }
    // "Back to Consultants", "Compare plans", "Skip tour", "Next: Members", ...
    in_main(vec![
        Element::new("button", &["btn"])
            .attr("type", "button")
            .text(target),
    ])
}

/// The field of "Type in Project name field".
fn field_of(title: &str) -> &str {
    title
        .strip_prefix("Type in ")
        .and_then(|f| f.strip_suffix(" field"))
        .unwrap_or(title)
}

/// posthog-js never captures passwords and card-like fields (its sensitive-name rule).
fn posthog_would_capture(field: &str) -> bool {
    let name = field.to_ascii_lowercase().replace(' ', "");
    ![
        "password",
        "cardnumber",
        "cardnum",
        "expiry",
        "exp",
        "cvc",
        "cvv",
    ]
    .iter()
    .any(|sensitive| name.starts_with(sensitive))
}

fn field_chain(field: &str) -> String {
    let name = field.to_ascii_lowercase().replace(' ', "_");
    chain(&in_form(vec![
        Element::new("input", &["input"])
            .attr("aria-label", field)
            .attr("name", name)
            .attr("type", "text")
            .nth(2, 1),
        Element::new("div", &["field"]).nth(2, 2),
    ]))
}

fn form_chain(form: &str) -> String {
    let mut elements = vec![Element::new("form", &["form"]).attr("aria-label", form)];
    elements.push(Element::new("main", &["content"]).nth(2, 1));
    elements.extend(app_shell());
    chain(&elements)
}

fn in_form(target: Vec<Element>) -> Vec<Element> {
    let mut elements = target;
    elements.push(Element::new("form", &["form"]));
    elements.push(Element::new("main", &["content"]).nth(2, 1));
    elements.extend(app_shell());
    elements
}

fn visible_text(text: &str) -> Option<&str> {
    let text = text
        .strip_suffix(" link")
        .or_else(|| text.strip_suffix(" button"))
        .or_else(|| text.strip_suffix(" tab"))
        .unwrap_or(text);
    let text = text.split_once(": ").map_or(text, |(_, rest)| rest);
    (!text.is_empty()).then_some(text)
}

fn path_of(raw: &str) -> &str {
    raw.split(['?', '#']).next().unwrap_or(raw)
}

fn clock_ms(at: f64) -> u64 {
    (at * 1000.0).max(0.0) as u64
}

/// A UUIDv7-shaped id: the time in its first 48 bits, the rest from `bits`.
fn uuid_like(unix_ms: u64, bits: u64) -> String {
    let more = personas::mix(bits, 1, 2, 5);
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        (unix_ms >> 16) & 0xFFFF_FFFF,
        unix_ms & 0xFFFF,
        bits & 0xFFF,
        0x8000 | ((bits >> 12) & 0x3FFF),
        more & 0xFFFF_FFFF_FFFF
    )
}

/// FNV-1a: a stable hash of a string (std's hasher is randomised per process).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::personas::{Journey, Role, cast};

    const ORIGIN: f64 = 1_785_333_600.0;

    fn events_of(role: Role, emissions: usize) -> Vec<Value> {
        let persona = cast(7, "acme_prod")
            .into_iter()
            .find(|p| p.role == role)
            .unwrap();
        let mut journey = Journey::new(persona.clone(), 7);
        let mut session = PosthogSession::new(&persona);
        let time = Timebase::new(ORIGIN, 1.0);
        (0..emissions)
            .flat_map(|_| session.events(&persona, &journey.next_emission(), &time))
            .collect()
    }

    fn names(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["event"]["event"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn elements_serialise_the_way_posthog_js_does() {
        let link = Element::new("a", &["nav-link", "active"])
            .href("/consultants")
            .attr("aria-label", "Say \"hi\"; now")
            .text("Consultants")
            .nth(2, 1);
        assert_eq!(
            link.serialise(),
            r#"a.active.nav-link:attr__aria-label="Say \"hi\"; now"attr__class="active nav-link"attr__href="/consultants"href="/consultants"nth-child="2"nth-of-type="1"text="Consultants""#
        );
        let help = click_chain("Help icon");
        let (target, rest) = help.split_once(';').unwrap();
        assert!(target.starts_with("svg.icon.icon-help:"), "{target}");
        assert!(
            rest.starts_with("button.icon-button:attr__aria-label=\"Help\""),
            "{rest}"
        );
        assert!(
            help.ends_with(";body:nth-child=\"1\"nth-of-type=\"1\""),
            "{help}"
        );
    }

    #[test]
    fn the_hunter_sends_pageviews_with_titles_and_clicks_on_real_elements() {
        let events = events_of(Role::NotificationsHunter, 3);
        let first = &events[0]["event"];
        assert_eq!(first["event"], "$pageview");
        assert_eq!(first["properties"]["title"], "Dashboard");
        assert_eq!(
            first["properties"]["$current_url"],
            "https://app.acme.io/dashboard?ref=login"
        );
        assert_eq!(first["properties"]["$pathname"], "/dashboard");
        assert_eq!(first["elements_chain"], "");
        assert_eq!(
            events[0]["person"]["properties"]["email"],
            "priya.shah@example.com"
        );
        let session = first["properties"]["$session_id"].as_str().unwrap();
        assert!(
            events
                .iter()
                .all(|e| e["event"]["properties"]["$session_id"] == session)
        );

        let click = &events[1]["event"];
        assert_eq!(click["event"], "$autocapture");
        assert_eq!(click["properties"]["$event_type"], "click");
        assert!(
            click["elements_chain"]
                .as_str()
                .unwrap()
                .starts_with(r#"a.nav-link:attr__class="nav-link"attr__href="/consultants"href="/consultants"nth-child="2"nth-of-type="1"text="Consultants";li.nav-item"#),
            "{click}"
        );
        // Leaving the dashboard for the consultants list.
        assert_eq!(names(&events)[2..4], ["$pageleave", "$pageview"]);
        assert_eq!(events[2]["event"]["properties"]["$pathname"], "/dashboard");
        assert_eq!(events[3]["event"]["properties"]["title"], "Consultants");
        // Every event is its own delivery: distinct uuids.
        let mut uuids: Vec<&str> = events
            .iter()
            .map(|e| e["event"]["uuid"].as_str().unwrap())
            .collect();
        uuids.sort_unstable();
        uuids.dedup();
        assert_eq!(uuids.len(), events.len());
    }

    #[test]
    fn the_billing_persona_throws_once_rages_once_and_never_sends_card_fields() {
        let events = events_of(Role::BillingStuck, 12);
        let names = names(&events);
        assert_eq!(
            names.iter().filter(|n| **n == "$exception").count(),
            1,
            "{names:?}"
        );
        assert_eq!(
            names.iter().filter(|n| **n == "$rageclick").count(),
            1,
            "{names:?}"
        );
        let exception = events
            .iter()
            .find(|e| e["event"]["event"] == "$exception")
            .unwrap();
        assert_eq!(
            exception["event"]["properties"]["$exception_list"][0]["type"],
            "TypeError"
        );
        let rage = events
            .iter()
            .find(|e| e["event"]["event"] == "$rageclick")
            .unwrap();
        assert!(
            rage["event"]["elements_chain"]
                .as_str()
                .unwrap()
                .contains(r#"text="Try again""#)
        );
        let chains: String = events
            .iter()
            .map(|e| e["event"]["elements_chain"].as_str().unwrap())
            .collect();
        assert!(
            !chains.contains("card_number") && !chains.contains("cvc"),
            "{chains}"
        );
        assert!(
            events
                .iter()
                .any(|e| e["event"]["properties"]["$event_type"] == "submit")
        );
        assert!(
            chains.contains(r#"form.form:attr__aria-label="Payment""#),
            "{chains}"
        );
    }

    #[test]
    fn the_newcomer_is_anonymous_until_sign_up() {
        let events = events_of(Role::Newcomer, 3);
        let first = &events[0];
        assert!(
            first["person"]["properties"].get("email").is_none(),
            "{first}"
        );
        let last = events.last().unwrap();
        assert_eq!(
            last["person"]["properties"]["email"],
            "sam.okafor@example.com"
        );
        assert_ne!(first["event"]["distinct_id"], last["event"]["distinct_id"]);
        assert!(
            last["event"]["distinct_id"]
                .as_str()
                .unwrap()
                .starts_with("usr_")
        );
    }

    #[test]
    fn unlinked_traffic_has_no_session_id() {
        let events = events_of(Role::UnlinkedTraffic, 2);
        assert!(!events.is_empty());
        assert!(
            events
                .iter()
                .all(|e| e["event"]["properties"].get("$session_id").is_none())
        );
    }

    /// What livectx's own PostHog decoder names the events (title and canonical URL).
    fn decoded(events: &[Value]) -> Vec<(String, String, String)> {
        let privacy = crate::sources::Privacy::default();
        events
            .iter()
            .filter_map(|e| {
                let body = serde_json::to_vec(e).unwrap();
                let decoded = crate::sources::posthog::decode(&body, "acme_prod", &privacy)
                    .unwrap_or_else(|error| panic!("{error:?}: {e}"));
                assert!(decoded.refused.is_empty(), "{:?}", decoded.refused);
                let event = decoded.events.into_iter().next().unwrap();
                event.action.map(|a| {
                    (
                        a.kind().to_string(),
                        a.title().to_string(),
                        a.canonical_url().to_string(),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn livectx_names_the_generated_events_the_way_people_would() {
        let has = |named: &[(String, String, String)], title: &str| {
            named.iter().any(|(_, t, _)| t == title)
        };
        let hunter = decoded(&events_of(Role::NotificationsHunter, 3));
        assert!(has(&hunter, "Page Load: Dashboard"), "{hunter:?}");
        assert!(has(&hunter, "Click Consultants link"), "{hunter:?}");
        assert!(
            hunter
                .iter()
                .any(|(_, _, url)| url == "https://app.acme.io/consultants/:id"),
            "{hunter:?}"
        );
        let billing = decoded(&events_of(Role::BillingStuck, 12));
        assert!(
            has(
                &billing,
                "Error: TypeError: Cannot read properties of undefined (reading 'last4')"
            ),
            "{billing:?}"
        );
        assert!(has(&billing, "Rage click Try again button"), "{billing:?}");
        assert!(has(&billing, "Submit Payment form"), "{billing:?}");
        assert!(has(&billing, "Click Bill annually checkbox"), "{billing:?}");
        let abandoner = decoded(&events_of(Role::ProjectAbandoner, 12));
        assert!(
            has(&abandoner, "Change Project name field"),
            "{abandoner:?}"
        );
        assert!(
            has(&abandoner, "Click Blank project option")
                || has(&abandoner, "Click Client onboarding option")
                || has(&abandoner, "Click Software rollout option"),
            "{abandoner:?}"
        );
    }

    #[test]
    fn an_icon_is_named_by_its_labelled_button() {
        let event = json!({"event": {"uuid": "0193a1b2-0000-7000-8000-000000000001", "event": "$autocapture",
            "distinct_id": "d", "timestamp": "2026-07-29T10:00:00.000Z", "elements_chain": click_chain("Help icon"),
            "properties": {"$session_id": "s1", "$current_url": "https://app.acme.io/projects/new", "$event_type": "click"}},
            "person": {"properties": {}}});
        assert_eq!(decoded(&[event])[0].1, "Click Help button");
    }
}
