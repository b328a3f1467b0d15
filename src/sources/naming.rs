//! Naming: turning raw analytics events into the actions a support chatbot reads.
//!
//! A chatbot cannot use `$autocapture` with an element chain; it can use *clicked the link
//! "Invoices" on Billing settings*. Every source decodes its wire format into a [`Happened`]
//! plus a page URL, and this module names it, the same way for every tool:
//!
//! - **the page**: the tool's page title, else a readable name from the path
//!   (`/settings/billing` → "Billing settings", `/projects/:id` → "Project details"),
//!   never an id;
//! - **the URL**: query string and fragment dropped (except allow-listed parameters), ids
//!   collapsed to `:id` in the canonical URL, emails and tokens masked in the raw one;
//! - **the element**: its own text, then `aria-label`, `title`, `name`, `alt`, `placeholder`,
//!   else the nearest labelled ancestor; masked text (`*****`, `data-amp-mask`) is no label;
//! - **what happened**, phrased as a person would: clicked the link "Invoices"; changed the
//!   field "Project name"; submitted the form "Create project"; clicked "Save" repeatedly;
//!   clicked "Export" and nothing happened; saw an error: "TypeError: …".
//!
//! Actions keep the connector's vocabulary in `title` ("Click Invoices link", "Page Load:
//! Billing settings") so summaries built for the Autoplay stream read them unchanged, and put
//! the person's phrase in `description`. A description that opens with one of the model's
//! [`PHRASE_OPENINGS`](crate::session::model::PHRASE_OPENINGS) is such a phrase
//! ([`is_phrase`]); the activity view prints it as is.

use super::Privacy;
use super::elements_chain::Element;
use crate::session::model::{Action, ActionParts};

/// Longest page name kept.
pub const MAX_PAGE_CHARS: usize = 80;
/// Longest element label kept.
pub const MAX_LABEL_CHARS: usize = 80;
/// Longest error message kept (the start names the error; stack detail does not help a bot).
pub const MAX_ERROR_CHARS: usize = 160;
/// Longest stored URL.
pub const MAX_URL_CHARS: usize = 2000;
/// Input read at most when cleaning a URL or a text.
const MAX_INPUT_BYTES: usize = 16 * 1024;
/// Longest title or description an action gets (every part above is bounded, so this holds).
pub const MAX_ACTION_TEXT_CHARS: usize = 400;

/// Whether a description is a phrase this module wrote (the model owns the rule).
pub use crate::session::model::is_phrase;

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

/// A page URL made fit to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageUrl {
    /// Ids collapsed to `:id`, no query (but allow-listed parameters), no fragment.
    pub canonical: String,
    /// As captured, minus query (but allow-listed parameters), fragment, credentials, emails
    /// and tokens.
    pub raw: String,
}

/// What a path segment (or a query value) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Plain,
    /// A number, UUID, long hex or ULID: an id, kept in the raw URL.
    Id,
    /// An email: masked everywhere.
    Email,
    /// A long random string or a JWT: masked everywhere.
    Token,
}

/// Clean a URL for storage. `None` when it is not an http(s) URL or an absolute path.
pub fn clean_url(raw: &str, privacy: &Privacy) -> Option<PageUrl> {
    let raw = strip_controls(truncate_bytes(raw.trim(), MAX_INPUT_BYTES));
    let raw = raw.trim();
    let without_fragment = raw.split('#').next().unwrap_or("");
    let (before_query, query) = match without_fragment.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (without_fragment, None),
    };
    let (origin, path) = if let Some((scheme, rest)) = before_query.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // Credentials (`user:pass@host`) never reach storage.
        let host = authority
            .rsplit('@')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if host.is_empty() || host.contains(['\\', ' ', '"', '<', '>']) {
            return None;
        }
        (format!("{scheme}://{host}"), path)
    } else if before_query.starts_with('/') && !before_query.starts_with("//") {
        (String::new(), before_query)
    } else {
        return None;
    };

    let mut canonical_path = String::new();
    let mut raw_path = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let (canonical, raw) = match classify(&percent_decode(segment)) {
            Segment::Plain => (segment, segment),
            Segment::Id => (":id", segment),
            Segment::Email => (":id", ":email"),
            Segment::Token => (":id", ":token"),
        };
        canonical_path.push('/');
        canonical_path.push_str(canonical);
        raw_path.push('/');
        raw_path.push_str(raw);
    }
    if canonical_path.is_empty() {
        canonical_path.push('/');
        raw_path.push('/');
    }
    let (canonical_query, raw_query) = kept_query(query, privacy);
    let canonical = bounded_url(format!("{origin}{canonical_path}{canonical_query}"));
    let raw = bounded_url(format!("{origin}{raw_path}{raw_query}"));
    Some(PageUrl { canonical, raw })
}

/// The allow-listed query parameters, for the canonical and the raw URL.
fn kept_query(query: Option<&str>, privacy: &Privacy) -> (String, String) {
    let (mut canonical, mut raw) = (String::new(), String::new());
    let Some(query) = query else {
        return (canonical, raw);
    };
    if privacy.keep_query_params.is_empty() {
        return (canonical, raw);
    }
    for pair in query.split('&').take(64) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(key);
        if name.is_empty() || !privacy.keeps(&name) || !is_safe_url_text(&name) {
            continue;
        }
        let safe_value = if is_safe_url_text(value) { value } else { "" };
        let (canonical_value, raw_value) = match classify(&percent_decode(safe_value)) {
            Segment::Plain => (safe_value, safe_value),
            Segment::Id => (":id", safe_value),
            Segment::Email => (":id", ":email"),
            Segment::Token => (":id", ":token"),
        };
        for (out, value) in [(&mut canonical, canonical_value), (&mut raw, raw_value)] {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(&name);
            out.push('=');
            out.push_str(value);
        }
    }
    (canonical, raw)
}

/// Query text kept verbatim must not smuggle another query or fragment.
fn is_safe_url_text(text: &str) -> bool {
    !text.contains(['?', '#', '&', '=', ' '])
}

fn bounded_url(url: String) -> String {
    if url.len() <= MAX_URL_CHARS {
        return url;
    }
    truncate_bytes(&url, MAX_URL_CHARS).to_string()
}

/// Classify one path segment (already percent-decoded).
fn classify(segment: &str) -> Segment {
    let s = segment.trim();
    if s.is_empty() {
        return Segment::Plain;
    }
    if looks_like_email(s) {
        return Segment::Email;
    }
    if looks_like_jwt(s) {
        return Segment::Token;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) || is_uuid(s) || is_ulid(s) || is_long_hex(s) {
        return Segment::Id;
    }
    if looks_like_token(s) {
        return Segment::Token;
    }
    Segment::Plain
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        }
        None => false,
    }
}

fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(4, '.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts.iter().all(|p| {
            p.len() >= 2
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes().next().is_some_and(|b| (b'0'..=b'7').contains(&b))
        && s.bytes().all(|b| {
            let b = b.to_ascii_uppercase();
            b.is_ascii_digit()
                || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
        })
        && s.bytes().any(|b| b.is_ascii_digit())
}

fn is_long_hex(s: &str) -> bool {
    s.len() >= 8
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b.is_ascii_digit())
}

/// Long random-looking strings: a piece of 12+ characters mixing letters and digits
/// (`sk_live_51H8xK2eZvKYlo2C`), or 24+ mixing cases.
fn looks_like_token(s: &str) -> bool {
    if s.len() < 12
        || !s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'=')
        })
    {
        return false;
    }
    s.split(['-', '_', '.', '~', '+', '=']).any(|piece| {
        let digits = piece.bytes().any(|b| b.is_ascii_digit());
        let letters = piece.bytes().any(|b| b.is_ascii_alphabetic());
        let upper = piece.bytes().any(|b| b.is_ascii_uppercase());
        let lower = piece.bytes().any(|b| b.is_ascii_lowercase());
        (piece.len() >= 12 && digits && letters) || (piece.len() >= 24 && upper && lower)
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

/// The page's name: its title when the tool sent one, else a readable name from the path.
pub fn page_name(title: Option<&str>, url: Option<&PageUrl>) -> String {
    if let Some(title) = title.map(clean_text).filter(|t| has_word(t)) {
        return truncate_chars(without_site_suffix(&title), MAX_PAGE_CHARS);
    }
    match url {
        Some(url) => page_name_from_path(&url.canonical),
        None => "an unknown page".to_string(),
    }
}

/// `Billing settings · Acme` → `Billing settings`: the product's name after the page's adds
/// nothing (every page has it). A short tail (three words at most) after the last separator
/// is dropped.
fn without_site_suffix(title: &str) -> &str {
    for separator in [" | ", " · ", " — ", " – ", " - ", " :: "] {
        if let Some((head, tail)) = title.rsplit_once(separator)
            && has_word(head)
            && tail.split_whitespace().count() <= 3
            && tail.chars().count() <= 30
        {
            return head.trim_end();
        }
    }
    title
}

/// A readable page name from a (canonical) URL's path; never an id.
///
/// `/settings/billing` → "Billing settings", `/projects/:id` → "Project details",
/// `/projects/:id/settings` → "Project settings", `/users/new` → "New user", `/` → "Home".
pub fn page_name_from_path(url: &str) -> String {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    // Segments as words, ids as `None`.
    let segments: Vec<Option<String>> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .take(32)
        .map(|s| {
            let decoded = percent_decode(s);
            if s.starts_with(':') || classify(&decoded) != Segment::Plain {
                None
            } else {
                Some(humanise_segment(&decoded)).filter(|w| has_word(w))
            }
        })
        .collect();
    let words: Vec<(usize, &String)> = segments
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.as_ref().map(|w| (i, w)))
        .filter(|(_, w)| !is_locale(w))
        .collect();
    let name = match words.as_slice() {
        [] if segments.is_empty() => "Home".to_string(),
        [] => "a page".to_string(),
        [.., last] => {
            let (leaf_at, leaf) = *last;
            let parent = words.len().checked_sub(2).map(|i| words[i]);
            let id_after_leaf = segments.len() > leaf_at + 1;
            let leaf_lc = leaf.to_lowercase();
            match (parent, leaf_lc.as_str()) {
                (Some((_, parent)), "new" | "create" | "add") => {
                    format!("new {}", singular(parent))
                }
                (Some((_, parent)), "edit") => format!("edit {}", singular(parent)),
                // `/projects/:id`: one of a collection.
                _ if id_after_leaf && leaf_lc.ends_with('s') => {
                    format!("{} details", singular(leaf))
                }
                _ if id_after_leaf => leaf.to_string(),
                (Some((parent_at, parent)), _) if leaf_at > parent_at + 1 => {
                    format!("{} {leaf_lc}", singular(parent))
                }
                (Some((_, parent)), _) if parent.to_lowercase() != leaf_lc => {
                    format!("{leaf} {}", parent.to_lowercase())
                }
                _ => leaf.to_string(),
            }
        }
    };
    truncate_chars(&capitalise(&name), MAX_PAGE_CHARS)
}

/// `billing-history.html` → "billing history", `userProfile` → "user profile".
fn humanise_segment(segment: &str) -> String {
    let segment = segment
        .rsplit_once('.')
        .filter(|(_, ext)| matches!(*ext, "html" | "htm" | "php" | "aspx" | "jsp"))
        .map_or(segment, |(stem, _)| stem);
    humanise_words(segment)
}

/// Split an identifier-like name into lower-cased words, keeping acronyms (`exportCSV` →
/// "export CSV", `invoice_downloaded` → "invoice downloaded").
fn humanise_words(name: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev: Option<char> = None;
    for c in name.chars().take(MAX_INPUT_BYTES) {
        if !c.is_alphanumeric() && c != '\'' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev = None;
            continue;
        }
        if let Some(p) = prev
            && c.is_uppercase()
            && p.is_lowercase()
        {
            words.push(std::mem::take(&mut current));
        }
        current.push(c);
        prev = Some(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
        .iter()
        .map(|w| {
            let acronym = w.chars().count() >= 2 && w.chars().all(|c| !c.is_lowercase());
            if acronym { w.clone() } else { w.to_lowercase() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `en`, `en-us`, `de_DE`: locale prefixes name no page.
fn is_locale(word: &str) -> bool {
    let w = word.to_lowercase();
    let parts: Vec<&str> = w.split(' ').collect();
    match parts.as_slice() {
        [lang] => {
            lang.len() == 2
                && matches!(
                    *lang,
                    "en" | "de"
                        | "fr"
                        | "es"
                        | "it"
                        | "nl"
                        | "pt"
                        | "ja"
                        | "zh"
                        | "ko"
                        | "sv"
                        | "pl"
                )
        }
        [lang, region] => lang.len() == 2 && region.len() == 2 && is_locale(lang),
        _ => false,
    }
}

/// A rough English singular: `projects` → "project", `categories` → "category".
fn singular(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(stem) = lower.strip_suffix("ies").filter(|s| s.len() >= 2) {
        return format!("{stem}y");
    }
    for suffix in ["sses", "shes", "ches", "xes"] {
        if lower.ends_with(suffix) {
            return lower[..lower.len() - 2].to_string();
        }
    }
    if lower.ends_with('s') && !lower.ends_with("ss") && !lower.ends_with("us") && lower.len() > 3 {
        return lower[..lower.len() - 1].to_string();
    }
    lower
}

// ---------------------------------------------------------------------------------------------
// Elements
// ---------------------------------------------------------------------------------------------

/// The element an event happened on, named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// What a person would call it: "Invoices", "Project name".
    pub label: Option<String>,
    /// What it is: "link", "button", "tab", "menu item", "checkbox", "field", "form", ...
    pub noun: Option<&'static str>,
}

/// How far up from the event target an interactive element or a label is looked for.
const MAX_CLIMB: usize = 6;

/// Name the target of an event from its element chain (target first, then ancestors).
///
/// The element acted on is the nearest interactive one (an icon inside a button is a click on
/// the button); its label is its own, else one of the elements inside it that the chain
/// holds, else an explicit label (`aria-label`, `title`) of an ancestor.
pub fn name_target(elements: &[Element], want_form: bool) -> Target {
    let elements = &elements[..elements.len().min(MAX_CLIMB + 1)];
    // Text at or below a `data-amp-mask` element is masked.
    let masked_through = elements.iter().rposition(is_masking);
    let text_allowed = |i: usize| masked_through.is_none_or(|m| i > m);
    let acted_on = if want_form {
        elements.iter().position(|e| e.tag == "form")
    } else {
        // A click inside a form is not a click on the form.
        elements
            .iter()
            .position(|e| e.tag != "form" && noun_of(e).is_some())
    };
    let Some(at) = acted_on else {
        // Nothing interactive: the target itself, labelled by itself or an ancestor's label.
        let label = elements
            .first()
            .and_then(|e| own_label(e, text_allowed(0)))
            .or_else(|| ancestor_label(elements, 1));
        return Target { label, noun: None };
    };
    let element = &elements[at];
    let label = own_label(element, text_allowed(at))
        .or_else(|| (0..at).find_map(|i| own_label(&elements[i], text_allowed(i))))
        .or_else(|| ancestor_label(elements, at + 1))
        .or_else(|| element_identifier(element));
    Target {
        label,
        noun: noun_of(element),
    }
}

fn is_masking(element: &Element) -> bool {
    element.attr("data-amp-mask").is_some() || element.has_class("amp-mask")
}

/// An element's own name, in the order a person would read it.
fn own_label(element: &Element, text_allowed: bool) -> Option<String> {
    let text = element.text.as_deref().filter(|_| text_allowed);
    text.and_then(readable_label)
        .or_else(|| element.attr("aria-label").and_then(readable_label))
        .or_else(|| element.attr("title").and_then(readable_label))
        .or_else(|| element.attr("name").and_then(identifier_label))
        .or_else(|| element.attr("alt").and_then(readable_label))
        .or_else(|| element.attr("placeholder").and_then(readable_label))
}

/// The explicit label of the nearest ancestor that has one (its text is not used: an
/// ancestor's text belongs to it, not to what was clicked).
fn ancestor_label(elements: &[Element], from: usize) -> Option<String> {
    elements.iter().skip(from).find_map(|e| {
        e.attr("aria-label")
            .and_then(readable_label)
            .or_else(|| e.attr("title").and_then(readable_label))
    })
}

/// Last resort for forms and fields: a readable `id` or `data-attr` (`create-project-form`).
fn element_identifier(element: &Element) -> Option<String> {
    [
        element.attr_id.as_deref(),
        element.attr("id"),
        element.attr("data-attr"),
        element.attr("data-testid"),
    ]
    .into_iter()
    .flatten()
    // Generated ids (`ember123`, `radix-:r1:`) name nothing.
    .filter(|id| !id.bytes().any(|b| b.is_ascii_digit()))
    .find_map(identifier_name)
}

/// A name from an identifier (`create-project-form` → "Create project", `signupForm` →
/// "Signup"): words, without a trailing role word; `None` for ids and tokens.
pub fn identifier_name(raw: &str) -> Option<String> {
    let label = identifier_label(raw)?;
    for suffix in [" form", " btn", " button", " link", " input", " field"] {
        let cut = label.len().saturating_sub(suffix.len());
        if cut > 0
            && label
                .get(cut..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        {
            return Some(label[..cut].to_string());
        }
    }
    Some(label)
}

/// An identifier (`project_name`, `createProject`) as words, unless it is an id itself.
fn identifier_label(raw: &str) -> Option<String> {
    if classify(raw) != Segment::Plain {
        return None;
    }
    readable_label(&capitalise(&humanise_words(raw)))
}

/// A label fit to show: cleaned, not masked, with at least one letter or digit, bounded.
fn readable_label(raw: &str) -> Option<String> {
    let text = clean_text(raw);
    if !has_word(&text) || is_masked(&text) {
        return None;
    }
    Some(truncate_chars(&text.replace('"', "'"), MAX_LABEL_CHARS))
}

/// `*****` is what `data-amp-mask` (and most masking tools) leave of a text.
fn is_masked(text: &str) -> bool {
    text.contains("***")
}

/// What an element is, from its role, else its tag.
fn noun_of(element: &Element) -> Option<&'static str> {
    if let Some(role) = element.attr("role") {
        let noun = match role.trim().to_ascii_lowercase().as_str() {
            "button" => Some("button"),
            "link" => Some("link"),
            "tab" => Some("tab"),
            "menuitem" | "menuitemcheckbox" | "menuitemradio" => Some("menu item"),
            "checkbox" | "switch" => Some("checkbox"),
            "radio" => Some("radio button"),
            "option" => Some("option"),
            "textbox" | "searchbox" | "combobox" | "spinbutton" => Some("field"),
            _ => None,
        };
        if noun.is_some() {
            return noun;
        }
    }
    match element.tag.as_str() {
        "a" => Some("link"),
        "button" => Some("button"),
        "input" => Some(
            match element
                .attr("type")
                .map(|t| t.trim().to_ascii_lowercase())
                .as_deref()
            {
                Some("checkbox") => "checkbox",
                Some("radio") => "radio button",
                Some("submit" | "button" | "reset" | "image") => "button",
                _ => "field",
            },
        ),
        "textarea" | "select" => Some("field"),
        "option" => Some("option"),
        "form" => Some("form"),
        _ => None,
    }
}

/// A target from loose fields, for tools that send no element chain (Amplitude): the
/// element's tag, text, explicit attributes, and its parent's label.
pub fn target_from_fields(
    tag: Option<&str>,
    text: Option<&str>,
    attributes: Vec<(String, String)>,
    parent_label: Option<&str>,
) -> Target {
    let element = Element {
        tag: tag.unwrap_or("").trim().to_ascii_lowercase(),
        text: text.map(str::to_string),
        attributes,
        ..Element::default()
    };
    let mut elements = vec![element];
    if let Some(parent) = parent_label {
        elements.push(Element {
            attributes: vec![("aria-label".to_string(), parent.to_string())],
            ..Element::default()
        });
    }
    name_target(&elements, false)
}

// ---------------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------------

/// Free text made safe to store: control characters and repeated whitespace gone, emails and
/// tokens masked, query strings cut off URLs, `token=...`-style secrets redacted.
pub fn clean_text(raw: &str) -> String {
    let raw = truncate_bytes(raw, MAX_INPUT_BYTES);
    let mut out = String::with_capacity(raw.len().min(512));
    for word in raw.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&clean_word(word));
    }
    out
}

fn clean_word(word: &str) -> String {
    // Keep surrounding punctuation ("(maria@x.com)" → "(an email)").
    let core_start = word
        .find(|c: char| c.is_alphanumeric() || c == '/')
        .unwrap_or(word.len());
    let core_end = word
        .rfind(|c: char| c.is_alphanumeric() || c == '/')
        .map_or(core_start, |i| {
            i + word[i..].chars().next().map_or(1, char::len_utf8)
        });
    let (lead, core, trail) = if core_start < core_end {
        (
            &word[..core_start],
            &word[core_start..core_end],
            &word[core_end..],
        )
    } else {
        return word.to_string();
    };
    if looks_like_email(core) {
        return format!("{lead}[email]{trail}");
    }
    if looks_like_jwt(core) || (looks_like_token(core) && !core.contains('/')) {
        return format!("{lead}[token]{trail}");
    }
    if let Some(q) = core.find(['?', '#']) {
        return format!("{lead}{}{trail}", &core[..q]);
    }
    if let Some((key, value)) = core.split_once('=')
        && !value.is_empty()
        && is_secret_name(key)
    {
        return format!("{lead}{key}=[redacted]{trail}");
    }
    word.to_string()
}

fn is_secret_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "token", "secret", "password", "passwd", "key", "auth", "code", "sig", "session",
    ]
    .iter()
    .any(|s| key.contains(s))
}

fn has_word(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text.to_string(),
    }
}

fn truncate_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn strip_controls(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// An error message fit to show: its first line, cleaned, truncated.
pub fn error_message(kind: Option<&str>, message: Option<&str>) -> Option<String> {
    let first_line = |s: &str| {
        s.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string()
    };
    let kind = kind
        .map(first_line)
        .map(|k| clean_text(&k))
        .filter(|k| has_word(k));
    let message = message
        .map(first_line)
        .map(|m| clean_text(&m))
        .filter(|m| has_word(m));
    let text = match (kind, message) {
        (Some(k), Some(m)) if m.starts_with(&k) => m,
        (Some(k), Some(m)) => format!("{k}: {m}"),
        (Some(k), None) => k,
        (None, Some(m)) => m,
        (None, None) => return None,
    };
    Some(truncate_chars(&text.replace('"', "'"), MAX_ERROR_CHARS))
}

/// A custom event's name as words: `invoice_downloaded` → "Invoice downloaded".
pub fn humanise_event(name: &str) -> String {
    let cleaned = clean_text(name);
    let words = humanise_words(&cleaned);
    let words = if has_word(&words) {
        words
    } else {
        "custom event".to_string()
    };
    truncate_chars(&capitalise(&words), MAX_LABEL_CHARS)
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

/// What a person did, in the tools' shared vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub enum Happened {
    /// Opened a page, named by [`page_name`].
    PageView {
        page: String,
    },
    Click(Target),
    /// Changed a field (never its value).
    Change(Target),
    /// Started filling in a form (Amplitude's "Form Started").
    FormStarted(Target),
    Submit(Target),
    /// Clicked the same spot several times in quick succession.
    RageClick(Target),
    /// Clicked and nothing on the page reacted.
    DeadClick(Target),
    /// An error, message already cleaned by [`error_message`].
    Error(Option<String>),
    /// A product's own event, name already humanised by [`humanise_event`].
    Custom(String),
}

impl Happened {
    /// The action's kind: the stream's `pageview`, `click`, `submit`, plus the kinds only
    /// analytics tools report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PageView { .. } => "pageview",
            Self::Click(_) => "click",
            Self::Change(_) | Self::FormStarted(_) => "change",
            Self::Submit(_) => "submit",
            Self::RageClick(_) => "rageclick",
            Self::DeadClick(_) => "dead_click",
            Self::Error(_) => "error",
            Self::Custom(_) => "custom",
        }
    }

    /// The connector-style title: "Page Load: Billing settings", "Click Invoices link".
    pub fn title(&self) -> String {
        let object = |target: &Target, default_noun: &str| {
            let noun = target.noun.unwrap_or(default_noun);
            match &target.label {
                Some(label) if noun.is_empty() => label.clone(),
                Some(label) => format!("{label} {noun}"),
                None if noun.is_empty() => "element".to_string(),
                None => noun.to_string(),
            }
        };
        match self {
            Self::PageView { page } => format!("Page Load: {page}"),
            Self::Click(t) => format!("Click {}", object(t, "")),
            Self::Change(t) => format!("Change {}", object(t, "field")),
            Self::FormStarted(t) => format!("Start {}", object(t, "form")),
            Self::Submit(t) => format!("Submit {}", object(t, "form")),
            Self::RageClick(t) => format!("Rage click {}", object(t, "")),
            Self::DeadClick(t) => format!("Dead click {}", object(t, "")),
            Self::Error(Some(message)) => format!("Error: {message}"),
            Self::Error(None) => "Error".to_string(),
            Self::Custom(name) => name.clone(),
        }
    }

    /// The person's phrase: `clicked the link "Invoices"`, `saw an error: "TypeError: …"`.
    pub fn phrase(&self) -> String {
        // `the link "Invoices"`, `"Invoices"`, or `a link` when there is no label.
        let object = |target: &Target, default_noun: Option<&str>, with_noun: bool| {
            let noun = target.noun.or(default_noun).filter(|_| with_noun);
            match (&target.label, noun) {
                (Some(label), Some(noun)) => format!("the {noun} \"{label}\""),
                (Some(label), None) => format!("\"{label}\""),
                (None, Some(noun)) => format!("{} {noun}", article(noun)),
                (None, None) => "something".to_string(),
            }
        };
        match self {
            Self::PageView { page } => format!("viewed the page \"{page}\""),
            Self::Click(t) => format!("clicked {}", object(t, None, true)),
            Self::Change(t) => format!("changed {}", object(t, Some("field"), true)),
            Self::FormStarted(t) => format!("started filling in {}", object(t, Some("form"), true)),
            Self::Submit(t) => format!("submitted {}", object(t, Some("form"), true)),
            Self::RageClick(t) => {
                format!("clicked {} repeatedly", object(t, None, t.label.is_none()))
            }
            Self::DeadClick(t) => format!(
                "clicked {} and nothing happened",
                object(t, None, t.label.is_none())
            ),
            Self::Error(Some(message)) => format!("saw an error: \"{message}\""),
            Self::Error(None) => "saw an error".to_string(),
            Self::Custom(name) => format!("did \"{name}\""),
        }
    }

    /// The action, at `url` and `time`.
    pub fn action(&self, url: Option<&PageUrl>, time: Option<f64>) -> Action {
        Action::new(ActionParts {
            kind: self.kind().to_string(),
            title: truncate_chars(&self.title(), MAX_ACTION_TEXT_CHARS),
            description: truncate_chars(&self.phrase(), MAX_ACTION_TEXT_CHARS),
            timestamp_start: time,
            canonical_url: url.map(|u| u.canonical.clone()).unwrap_or_default(),
            raw_url: url.map(|u| u.raw.clone()),
            ..ActionParts::default()
        })
    }
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::elements_chain;

    fn url(raw: &str) -> PageUrl {
        clean_url(raw, &Privacy::default()).unwrap()
    }

    #[test]
    fn urls_lose_queries_fragments_and_credentials() {
        let u = url("https://user:pw@App.Example.com/reset?token=secret&x=1#frag");
        assert_eq!(u.canonical, "https://app.example.com/reset");
        assert_eq!(u.raw, "https://app.example.com/reset");
        assert_eq!(
            url("https://app.example.com").canonical,
            "https://app.example.com/"
        );
        assert_eq!(url("/settings/billing/").canonical, "/settings/billing");
        assert_eq!(clean_url("javascript:void(0)", &Privacy::default()), None);
        assert_eq!(clean_url("//evil.com/x", &Privacy::default()), None);
        assert_eq!(clean_url("", &Privacy::default()), None);
    }

    #[test]
    fn ids_collapse_and_secrets_are_masked() {
        let u = url(
            "https://app.example.com/projects/4812/files/3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b/v/01ARZ3NDEKTSV4RRFFQ69G5FAV/c/5f8d0d55b54764421b7156c3",
        );
        assert_eq!(
            u.canonical,
            "https://app.example.com/projects/:id/files/:id/v/:id/c/:id"
        );
        assert!(u.raw.contains("/projects/4812/"), "{}", u.raw);
        let u = url(
            "https://app.example.com/users/maria%40example.com/tokens/sk_live_51H8xK2eZvKYlo2CabC",
        );
        assert_eq!(u.canonical, "https://app.example.com/users/:id/tokens/:id");
        assert_eq!(u.raw, "https://app.example.com/users/:email/tokens/:token");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123def";
        let u = url(&format!("https://x.io/magic/{jwt}"));
        assert_eq!(u.raw, "https://x.io/magic/:token");
        // Words stay words.
        let u = url("https://x.io/docs/getting-started-with-billing-2024");
        assert_eq!(
            u.canonical,
            "https://x.io/docs/getting-started-with-billing-2024"
        );
    }

    #[test]
    fn allow_listed_params_are_kept_and_their_values_masked() {
        let privacy = Privacy::from_list("tab, Ref");
        let u = clean_url(
            "https://x.io/settings?tab=billing&token=secret&ref=maria@x.com#a",
            &privacy,
        )
        .unwrap();
        assert_eq!(u.canonical, "https://x.io/settings?tab=billing&ref=:id");
        assert_eq!(u.raw, "https://x.io/settings?tab=billing&ref=:email");
    }

    #[test]
    fn page_names_from_paths() {
        for (path, name) in [
            ("https://x.io/settings/billing", "Billing settings"),
            ("https://x.io/", "Home"),
            ("https://x.io/invoices", "Invoices"),
            ("https://x.io/projects/:id", "Project details"),
            ("https://x.io/projects/:id/settings", "Project settings"),
            ("https://x.io/users/new", "New user"),
            ("https://x.io/categories/:id/edit", "Edit category"),
            ("https://x.io/en/pricing", "Pricing"),
            ("https://x.io/billing-history.html", "Billing history"),
            ("https://x.io/:id", "A page"),
            ("/accountSettings", "Account settings"),
            ("https://x.io/4812", "A page"),
        ] {
            assert_eq!(page_name_from_path(path), name, "{path}");
        }
        assert_eq!(page_name(Some("  Checkout \n"), None), "Checkout");
        assert_eq!(
            page_name(Some("Inbox (maria@x.com)"), None),
            "Inbox ([email])"
        );
        assert_eq!(
            page_name(Some("Billing settings · Acme"), None),
            "Billing settings"
        );
        assert_eq!(page_name(Some("Invoices | Acme Cloud"), None), "Invoices");
        assert_eq!(
            page_name(Some("Q3 - the year in review, with notes"), None),
            "Q3 - the year in review, with notes"
        );
        assert_eq!(page_name(Some("| Acme"), None), "| Acme");
        assert_eq!(
            page_name_from_path("https://x.io/reset-password/:id"),
            "Reset password"
        );
        assert_eq!(page_name(Some(" "), Some(&url("https://x.io/a/b"))), "B a");
    }

    fn target(chain: &str) -> Target {
        name_target(&elements_chain::parse(chain), false)
    }

    #[test]
    fn icon_in_a_labelled_button_names_the_button() {
        let t = target(
            r#"svg.icon:nth-child="1"nth-of-type="1";button.btn:attr__aria-label="Notifications"nth-child="2"nth-of-type="1"text="";nav;body"#,
        );
        assert_eq!(t.label.as_deref(), Some("Notifications"));
        assert_eq!(t.noun, Some("button"));
    }

    #[test]
    fn labels_in_order_and_masking() {
        let t = target(r#"a:href="/invoices"text="Invoices";nav"#);
        assert_eq!(
            (t.label.as_deref(), t.noun),
            (Some("Invoices"), Some("link"))
        );
        let t = target(r#"span:text="Save";button:attr__type="submit""#);
        assert_eq!((t.label.as_deref(), t.noun), (Some("Save"), Some("button")));
        let t = target(r#"input:attr__name="project_name"attr__type="text""#);
        assert_eq!(
            (t.label.as_deref(), t.noun),
            (Some("Project name"), Some("field"))
        );
        let t = target(r#"button:text="*****"attr__aria-label="Pay now""#);
        assert_eq!(t.label.as_deref(), Some("Pay now"));
        let t = target(
            r#"span:text="Maria Lopez";div:attr__data-amp-mask="";button:attr__title="Profile""#,
        );
        assert_eq!(t.label.as_deref(), Some("Profile"));
        let t = target(r#"button:text="×"attr__aria-label="Close dialog""#);
        assert_eq!(t.label.as_deref(), Some("Close dialog"));
        let t = target(r#"div:attr__role="tab"text="Members""#);
        assert_eq!((t.label.as_deref(), t.noun), (Some("Members"), Some("tab")));
        let t = target(r#"li:attr__role="menuitem"text="Rename""#);
        assert_eq!(t.noun, Some("menu item"));
        let t = target(r#"input:attr__type="checkbox"attr__aria-label="Remember me""#);
        assert_eq!(t.noun, Some("checkbox"));
        let t = target(r#"div:text="Overview""#);
        assert_eq!((t.label.as_deref(), t.noun), (Some("Overview"), None));
        let t = target(r#"button:text="Email maria@x.com""#);
        assert_eq!(t.label.as_deref(), Some("Email [email]"));
    }

    #[test]
    fn forms_are_named_by_label_or_readable_id() {
        let elements = elements_chain::parse(r#"form:attr__id="create-project-form";div;body"#);
        let t = name_target(&elements, true);
        assert_eq!(
            (t.label.as_deref(), t.noun),
            (Some("Create project"), Some("form"))
        );
        let elements = elements_chain::parse(r#"form:attr__aria-label="Sign up";body"#);
        assert_eq!(
            name_target(&elements, true).label.as_deref(),
            Some("Sign up")
        );
        let elements = elements_chain::parse(r#"form:attr__id="f4c1e2a9b7d3";body"#);
        assert_eq!(name_target(&elements, true).label, None);
    }

    #[test]
    fn phrases_read_like_a_person() {
        let link = Target {
            label: Some("Invoices".into()),
            noun: Some("link"),
        };
        let save = Target {
            label: Some("Save".into()),
            noun: Some("button"),
        };
        let field = Target {
            label: Some("Project name".into()),
            noun: Some("field"),
        };
        let form = Target {
            label: Some("Create project".into()),
            noun: Some("form"),
        };
        assert_eq!(
            Happened::Click(link.clone()).phrase(),
            "clicked the link \"Invoices\""
        );
        assert_eq!(Happened::Click(link).title(), "Click Invoices link");
        assert_eq!(
            Happened::Change(field).phrase(),
            "changed the field \"Project name\""
        );
        assert_eq!(
            Happened::Submit(form.clone()).phrase(),
            "submitted the form \"Create project\""
        );
        assert_eq!(Happened::Submit(form).title(), "Submit Create project form");
        assert_eq!(
            Happened::RageClick(save.clone()).phrase(),
            "clicked \"Save\" repeatedly"
        );
        assert_eq!(
            Happened::DeadClick(Target {
                label: Some("Export".into()),
                noun: Some("button")
            })
            .phrase(),
            "clicked \"Export\" and nothing happened"
        );
        assert_eq!(
            Happened::RageClick(Target::default()).phrase(),
            "clicked something repeatedly"
        );
        assert_eq!(
            Happened::Click(Target {
                label: None,
                noun: Some("button")
            })
            .phrase(),
            "clicked a button"
        );
        assert_eq!(
            Happened::Error(error_message(Some("TypeError"), Some("x is undefined"))).phrase(),
            "saw an error: \"TypeError: x is undefined\""
        );
        assert_eq!(
            Happened::Custom(humanise_event("invoice_downloaded")).phrase(),
            "did \"Invoice downloaded\""
        );
        assert!(is_phrase(&Happened::Click(save).phrase()));
        assert!(!is_phrase("User clicked the Projects link"));
    }

    #[test]
    fn event_names_and_errors_are_humanised_and_bounded() {
        assert_eq!(humanise_event("invoice_downloaded"), "Invoice downloaded");
        assert_eq!(humanise_event("Signed Up"), "Signed up");
        assert_eq!(humanise_event("exportCSV"), "Export CSV");
        assert_eq!(humanise_event("checkout:started"), "Checkout started");
        assert_eq!(humanise_event("!!!"), "Custom event");
        let long = error_message(Some("Error"), Some(&"x".repeat(1000))).unwrap();
        assert_eq!(long.chars().count(), MAX_ERROR_CHARS + 1);
        assert_eq!(
            error_message(
                None,
                Some("Failed to fetch https://api.x.io/v1/me?token=abc\n at y")
            ),
            Some("Failed to fetch https://api.x.io/v1/me".to_string())
        );
        assert_eq!(
            error_message(Some("TypeError"), Some("TypeError: x is undefined")),
            Some("TypeError: x is undefined".to_string())
        );
        assert_eq!(
            clean_text("reset with token=abc123 now"),
            "reset with token=[redacted] now"
        );
    }
}
