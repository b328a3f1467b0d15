//! The console's HTML, written with maud: every interpolated value is escaped by the template
//! engine, and no page carries inline script or style (the CSP forbids both).

use maud::{DOCTYPE, Markup, html};

use crate::clock::{format_duration, format_utc};
use crate::console::timeline::Item;
use crate::diagnostics::{LookupEntry, RefusalGroup, RouteHistory};
use crate::ingest::sse::StreamStatusView;
use crate::session::model::Session;

/// The stylesheet and script, embedded in the binary.
pub const CSS: &str = include_str!("assets/console.css");
pub const JS: &str = include_str!("assets/console.js");

/// Percent-encode one URL path segment or query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Where a session's page is.
pub fn session_href(id: &str) -> String {
    format!("/console/sessions/{}", encode(id))
}

/// `m***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => mask_user_id(email),
    }
}

/// `usr***`: enough to tell people apart on screen, not to copy an id.
pub fn mask_user_id(id: &str) -> String {
    let keep = if id.chars().count() > 4 { 3 } else { 1 };
    let head: String = id.chars().take(keep).collect();
    format!("{head}***")
}

/// Every word with an `@` in `text`, masked like [`mask_email`].
pub fn mask_emails_in(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                let core = word.trim_start_matches(['"', '\'', '(', '[', '<']);
                format!("{}{}", &word[..word.len() - core.len()], mask_email(core))
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How one person is shown.
pub fn person(session: &Session, show_identities: bool) -> String {
    match (&session.email(), &session.user_id()) {
        (Some(email), _) if show_identities => email.clone(),
        (Some(email), _) => mask_email(email),
        (None, Some(id)) if show_identities => id.clone(),
        (None, Some(id)) => mask_user_id(id),
        (None, None) => "anonymous".to_string(),
    }
}

/// Actions a session has seen, raw and summarised.
pub fn action_count(session: &Session) -> u64 {
    session.raw_actions() as u64 + session.summary().as_ref().map_or(0, |s| s.covered_actions)
}

/// The activity source of a session, when ingest recorded one.
pub fn source_label(session: &Session) -> &'static str {
    session.source().map_or("—", |source| source.as_str())
}

fn ago(now: f64, at: f64) -> String {
    if at <= 0.0 {
        return "never".to_string();
    }
    format!("{} ago", format_duration(now - at))
}

/// Navigation entries: (path, label).
const NAV: [(&str, &str); 3] = [
    ("/console", "Sessions"),
    ("/console/lookups", "Lookups"),
    ("/console/sources", "Sources"),
];

/// Everything a page around its content needs.
pub struct Frame<'a> {
    pub title: &'a str,
    pub active: &'a str,
    pub csrf: &'a str,
    pub css_href: &'a str,
    pub js_href: &'a str,
}

/// A full page for a logged-in operator.
pub fn page(frame: &Frame<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (frame.title) " · livectx console" }
                link rel="stylesheet" href=(frame.css_href);
                script src=(frame.js_href) defer {}
            }
            body {
                header.top {
                    span.brand { "livectx" }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(frame.active == href).then_some("active")] { (label) }
                        }
                    }
                    form.logout method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(frame.csrf);
                        button type="submit" id="logout" { "Log out" }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// The login form.
pub fn login(css_href: &str, csrf: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · livectx console" }
                link rel="stylesheet" href=(css_href);
            }
            body.login {
                form.card method="post" action="/console/login" {
                    h1 { "livectx console" }
                    p.muted { "Type the console key (LIVECTX_CONSOLE_KEY)." }
                    @if let Some(error) = error {
                        p.error role="alert" { (error) }
                    }
                    input type="hidden" name="csrf" value=(csrf);
                    label for="key" { "Console key" }
                    input type="password" id="key" name="key" autocomplete="current-password" required autofocus;
                    button type="submit" id="login" { "Log in" }
                }
            }
        }
    }
}

/// A short page with a message (not found, refused).
pub fn message(css_href: &str, title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · livectx console" }
                link rel="stylesheet" href=(css_href);
            }
            body.login {
                div.card {
                    h1 { (title) }
                    p { (text) }
                    p { a href="/console" { "Back to the console" } }
                }
            }
        }
    }
}

/// The sessions page around its rows.
pub fn sessions(query: &str, rows: Markup, show_identities: bool) -> Markup {
    let poll = format!("/console/sessions/rows?q={}", encode(query));
    html! {
        h1 { "Live sessions" }
        form.search method="get" action="/console" {
            input type="search" id="search" name="q" value=(query)
                placeholder=(if show_identities { "Session id, email or user id (part of it)" } else { "Session id (part of it), or a full email or user id" })
                data-target="session-rows" autocomplete="off";
            button type="submit" { "Search" }
        }
        table.data {
            thead {
                tr {
                    th { "Session" } th { "Person" } th { "Product" } th { "Source" }
                    th { "Current page" } th { "Last active" } th.num { "Actions" }
                }
            }
            tbody id="session-rows" data-poll=(poll) { (rows) }
        }
        p.muted { "Newest activity first; updates every few seconds." }
    }
}

/// The rows of the sessions table.
pub fn session_rows(
    sessions: &[std::sync::Arc<Session>],
    show_identities: bool,
    now: f64,
) -> Markup {
    html! {
        @if sessions.is_empty() {
            tr { td.muted colspan="7" { "No live session matches." } }
        }
        @for session in sessions {
            tr {
                td { a.session-link href=(session_href(session.id().as_str())) { (session.id().as_str()) } }
                td { (person(session, show_identities)) }
                td { (session.product_id().as_deref().unwrap_or("—")) }
                td { (source_label(session)) }
                td {
                    @if let Some(page) = &session.current_page() {
                        span.page-label { (page.label) }
                        br;
                        span.url { (page.url) }
                    } @else {
                        "—"
                    }
                }
                td title=(format_utc(session.last_activity())) { (ago(now, session.last_activity())) }
                td.num { (action_count(session)) }
            }
        }
    }
}

/// The records the chatbot panel shows, with how the request was resolved.
pub struct ChatbotAnswer<'a> {
    pub question: &'a str,
    pub top_k: usize,
    pub threshold: f64,
    pub request_json: String,
    pub resolved_to: Option<String>,
    pub miss: Option<(&'static str, &'static str)>,
    pub records: Vec<crate::render::records::Record>,
}

/// One session: its facts, the chatbot panel, the summary and the timeline.
pub fn session_view(
    session: &Session,
    items: &[Item],
    show_identities: bool,
    now: f64,
    panel: Option<&ChatbotAnswer<'_>>,
) -> Markup {
    let id = session.id().as_str();
    html! {
        h1 { "Session " code { (id) } }
        dl.facts {
            dt { "Person" } dd { (person(session, show_identities)) }
            dt { "Product" } dd { (session.product_id().as_deref().unwrap_or("—")) }
            dt { "Source" } dd { (source_label(session)) }
            dt { "First seen" } dd { (format_utc(session.created_at())) }
            dt { "Last active" } dd { (format_utc(session.last_activity())) " (" (ago(now, session.last_activity())) ")" }
            dt { "Actions" } dd { (action_count(session)) " (" (session.raw_actions()) " raw)" }
            @if let Some(page) = &session.current_page() {
                dt { "Current page" } dd { (page.label) " " span.url { (page.url) } " since " (format_utc(page.since)) }
            }
        }
        section.panel id="chatbot" {
            h2 { "What the chatbot receives" }
            p.muted { "Exactly the records POST /retrieval returns now for this session (knowledge_id = the session id), scored the way Dify's hit testing shows them." }
            form method="get" action=(session_href(id)) {
                input type="text" id="question" name="question" value=(panel.map_or("", |p| p.question))
                    placeholder="The user's question, e.g. Where are my notifications?";
                label { "top_k " input type="number" name="top_k" min="1" max="50" value=(panel.map_or(5, |p| p.top_k)); }
                label { "score_threshold " input type="number" name="threshold" min="0" max="1" step="0.05" value=(panel.map_or(0.0, |p| p.threshold)); }
                button type="submit" id="ask" { "Ask" }
            }
            @if let Some(answer) = panel {
                details {
                    summary { "The request, as Dify sends it" }
                    pre { (answer.request_json) }
                }
                @if let Some((label, explain)) = answer.miss {
                    p.error { "No records: " (label) ". " (explain) }
                }
                @if let Some(other) = answer.resolved_to.as_deref().filter(|other| *other != id) {
                    p.warn { "This request resolved to another session: " a href=(session_href(other)) { (other) } }
                }
                p id="record-count" { (answer.records.len()) " record(s)" }
                @for record in &answer.records {
                    article.record {
                        header {
                            span.score { (format!("{:.4}", record.score)) }
                            strong { (record.title) }
                            span.kind { (record.kind().unwrap_or("")) }
                        }
                        pre.content { (record.content) }
                        details {
                            summary { "metadata" }
                            pre { (serde_json::to_string_pretty(&record.metadata).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        @if let Some(summary) = &session.summary() {
            section.panel {
                h2 { "Summary" }
                p.muted {
                    "By " (summary.source.as_str()) ", covering " (summary.covered_actions) " action(s) from "
                    (format_utc(summary.first_ts)) " to " (format_utc(summary.last_ts))
                    "; written " (ago(now, summary.updated_at)) "."
                }
                pre.content { (summary.text) }
            }
        }
        section.panel {
            h2 { "Timeline" }
            p.legend {
                span.mark.page { "page" } span.mark.error { "error" } span.mark.rage { "rage click" }
                span.mark.gap { "stream gap" } span.mark.tour { "tour" } span.mark.idle { "idle" }
            }
            ol.timeline {
                @for item in items {
                    (timeline_item(item))
                }
            }
        }
    }
}

fn action_class(page: bool, error: bool, rage: bool, summarized: bool) -> String {
    let mut class = String::from("action");
    for (on, name) in [
        (page, " page"),
        (error, " error"),
        (rage, " rage"),
        (summarized, " summarized"),
    ] {
        if on {
            class.push_str(name);
        }
    }
    class
}

fn timeline_item(item: &Item) -> Markup {
    html! {
        @match item {
            Item::Action { at, kind, title, url, page, error, rage, summarized } => {
                li class=(action_class(*page, *error, *rage, *summarized)) {
                    time { (format_utc(*at)) }
                    span.kind { (kind) }
                    span.title { (title) }
                    @if *rage { span.mark.rage { "rage click" } }
                    @if *error { span.mark.error { "error" } }
                    span.url { (url) }
                }
            }
            Item::Gap { from, to } => {
                li.gap { time { (format_utc(*from)) } "Stream gap until " (format_utc(*to)) ": activity in it may be missing." }
            }
            Item::Idle { from, to } => {
                li.idle { time { (format_utc(*from)) } "Idle for " (format_duration(to - from)) "." }
            }
            Item::Tour { at, flow_id, reason } => {
                li.tour {
                    time { (format_utc(*at)) }
                    "Product tour offered: " (flow_id)
                    @if let Some(reason) = reason { " (" (reason) ")" }
                }
            }
        }
    }
}

/// How a lookup's identifier was sent, one line per field.
fn identifier_cell(entry: &LookupEntry, show_identities: bool) -> Markup {
    let shown = |text: &str| {
        if show_identities {
            text.to_string()
        } else {
            mask_emails_in(text)
        }
    };
    html! {
        @if !entry.knowledge_id.is_empty() {
            div { span.field { @if entry.route == "live-activity" { "product" } @else { "knowledge_id" } } " " code { (shown(&entry.knowledge_id)) } }
        }
        @if !entry.identifier.is_empty() {
            div { span.field { (entry.via.unwrap_or("id")) } " " code { (shown(&entry.identifier)) } }
        }
        @if !entry.query_line.is_empty() {
            div { span.field { "query" } " " code { (shown(&entry.query_line)) } }
        }
        @if !entry.metadata_condition.is_empty() {
            div { span.field { "metadata" } " " code { (shown(&entry.metadata_condition)) } }
        }
    }
}

/// The lookups page around its rows.
pub fn lookups(rows: Markup, capacity: usize) -> Markup {
    html! {
        h1 { "Lookups" }
        p.muted { "The last " (capacity) " requests to /retrieval, /mcp and the REST routes: what was sent, how livectx read it, and the session it matched or why none. Click a row to open its session." }
        table.data {
            thead {
                tr {
                    th { "Time" } th { "Channel" } th { "Identifier as sent" } th { "Read via" }
                    th { "Signed" } th { "Result" } th.num { "Records" } th.num { "Latency" }
                }
            }
            tbody id="lookup-rows" data-poll="/console/lookups/rows" { (rows) }
        }
    }
}

/// The rows of the lookups table.
pub fn lookup_rows(entries: &[LookupEntry], show_identities: bool) -> Markup {
    html! {
        @if entries.is_empty() {
            tr { td.muted colspan="8" { "No lookup yet." } }
        }
        @for entry in entries {
            tr class=(if entry.session.is_some() { "matched" } else { "missed" }) {
                td { a href=(format!("/console/lookups/{}", entry.seq)) { (format_utc(entry.at)) } }
                td { (entry.channel.as_str()) br; span.url { (entry.route) } }
                td { (identifier_cell(entry, show_identities)) }
                td { (entry.via.unwrap_or("—")) }
                td { (if entry.signed { "signed" } else { "no" }) }
                td {
                    @if let Some(session) = &entry.session {
                        a.session-link href=(session_href(session)) { (session) }
                    } @else if let Some(miss) = entry.miss {
                        span.reason title=(miss.explain()) { (miss.as_str()) }
                    }
                }
                td.num { (entry.records) }
                td.num { (format!("{:.2} ms", entry.latency.as_secs_f64() * 1000.0)) }
            }
        }
    }
}

/// One lookup that matched no session, with what would match now.
pub fn lookup_detail(
    entry: &LookupEntry,
    show_identities: bool,
    now_resolves: Option<(&str, f64)>,
) -> Markup {
    html! {
        h1 { "Lookup #" (entry.seq) }
        dl.facts {
            dt { "Time" } dd { (format_utc(entry.at)) }
            dt { "Channel" } dd { (entry.channel.as_str()) " " (entry.route) }
            dt { "Identifier as sent" } dd { (identifier_cell(entry, show_identities)) }
            dt { "Read via" } dd { (entry.via.unwrap_or("—")) }
            dt { "Signed" } dd { (if entry.signed { "yes" } else { "no" }) }
            dt { "Records" } dd { (entry.records) }
        }
        @if let Some(miss) = entry.miss {
            p.error { "No session: " (miss.as_str()) ". " (miss.explain()) }
        }
        @if let Some((session, created_at)) = now_resolves {
            p.warn {
                "This identifier names a live session now: " a href=(session_href(session)) { (session) }
                @if created_at > entry.at {
                    ", whose first activity arrived " (format_duration(created_at - entry.at)) " after this lookup (the chatbot asked too early)."
                } @else { "." }
            }
        }
    }
}

/// Everything the sources page shows.
pub struct SourcesView<'a> {
    pub streams: Vec<StreamStatusView>,
    pub webhook: bool,
    pub routes: Vec<RouteHistory>,
    pub refusals: Vec<RefusalGroup>,
    pub engine: &'a str,
    pub queue: i64,
    pub summaries: Vec<(String, String, u64)>,
    pub llm_calls: u64,
    pub llm_failures: u64,
    pub now: f64,
}

/// A bar chart of events per minute, drawn on the server.
fn sparkline(per_minute: &[u64]) -> Markup {
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1) as f64;
    let total: u64 = per_minute.iter().sum();
    html! {
        svg.spark viewBox="0 0 180 32" width="180" height="32" role="img"
            aria-label=(format!("{total} events in the last {} minutes", per_minute.len())) {
            @for (i, count) in per_minute.iter().enumerate() {
                @let height = ((*count as f64 / max) * 30.0).round().max(if *count > 0 { 1.0 } else { 0.0 });
                rect x=(i * 6) y=(32.0 - height) width="5" height=(height) {}
            }
        }
    }
}

/// The sources health page.
pub fn sources(view: &SourcesView<'_>) -> Markup {
    let now = view.now;
    html! {
        h1 { "Sources" }
        section.panel {
            h2 { "Streams" }
            @if view.streams.is_empty() {
                p.muted { "No AUTOPLAY_STREAM_URL is configured." }
            } @else {
                table.data {
                    thead { tr { th { "Stream" } th { "URL" } th { "State" } th { "Last frame" } th.num { "Reconnects" } th { "Last error" } } }
                    tbody {
                        @for stream in &view.streams {
                            tr {
                                td { (stream.stream) }
                                td.url { (stream.url) }
                                td {
                                    @if !stream.leading { span.reason { "standby (another replica leads)" } }
                                    @else if stream.connected { span.ok { "connected" } }
                                    @else { span.reason { "disconnected" } }
                                }
                                td {
                                    @if let Some(age) = stream.last_frame_age_seconds {
                                        (format_duration(age)) " ago"
                                    } @else {
                                        "never"
                                    }
                                }
                                td.num { (stream.reconnects) }
                                td { (stream.last_error.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
            p.muted { "Webhook receiver (POST /webhooks/autoplay): " (if view.webhook { "on" } else { "off (AUTOPLAY_WEBHOOK_SECRET unset)" }) "." }
        }
        section.panel {
            h2 { "Events per minute, by ingest route" }
            @if view.routes.is_empty() {
                p.muted { "No event accepted yet." }
            } @else {
                table.data {
                    thead { tr { th { "Route" } th { "Last 30 minutes" } th.num { "This minute" } th.num { "Total" } th { "Last event" } } }
                    tbody {
                        @for route in &view.routes {
                            tr {
                                td { (route.route) }
                                td { (sparkline(&route.per_minute)) }
                                td.num { (route.per_minute.last().copied().unwrap_or(0)) }
                                td.num { (route.total) }
                                td title=(format_utc(route.last_at)) { (ago(now, route.last_at)) }
                            }
                        }
                    }
                }
            }
        }
        section.panel id="refusals" {
            h2 { "Refused payloads" }
            @if view.refusals.is_empty() {
                p.muted { "Nothing refused." }
            }
            @for group in &view.refusals {
                article.refusal {
                    h3 { (group.source) ": " (group.reason) " " span.count { "× " (group.count) } }
                    p.muted { "last " (ago(now, group.last_at)) }
                    @for sample in &group.samples {
                        div.sample {
                            p { time { (format_utc(sample.at)) } " " (sample.what) }
                            @if !sample.excerpt.is_empty() { pre { (sample.excerpt) } }
                        }
                    }
                }
            }
        }
        section.panel {
            h2 { "Summarizer" }
            dl.facts {
                dt { "Engine" } dd { (view.engine) }
                dt { "Queued or running" } dd { (view.queue) }
                dt { "LLM calls" } dd { (view.llm_calls) " (" (view.llm_failures) " failed)" }
            }
            @if !view.summaries.is_empty() {
                table.data {
                    thead { tr { th { "Summarizer" } th { "Outcome" } th.num { "Count" } } }
                    tbody {
                        @for (summarizer, outcome, count) in &view.summaries {
                            tr class=[(outcome == "failed").then_some("missed")] { td { (summarizer) } td { (outcome) } td.num { (count) } }
                        }
                    }
                }
            }
            p.muted { "The same figures are Prometheus metrics at /metrics (livectx_payloads_refused_total, livectx_summaries_total, livectx_summary_queue, livectx_stream_up, ...)." }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("ps_1-a.b~"), "ps_1-a.b~");
        assert_eq!(encode("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn identities_are_masked() {
        assert_eq!(mask_email("maria@example.com"), "m***@example.com");
        assert_eq!(mask_user_id("usr_7Qk2"), "usr***");
        assert_eq!(mask_user_id("u1"), "u***");
        assert_eq!(
            mask_emails_in("email is \"maria@x.io\""),
            "email is \"m***@x.io\""
        );
    }

    #[test]
    fn hostile_text_is_escaped() {
        let rows = lookup_rows(
            &[LookupEntry {
                knowledge_id: "<img src=x onerror=alert(1)>".into(),
                ..LookupEntry::new(crate::diagnostics::LookupChannel::Retrieval, "/retrieval")
            }],
            true,
        )
        .into_string();
        assert!(
            rows.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{rows}"
        );
        assert!(!rows.contains("<img"), "{rows}");
    }
}
