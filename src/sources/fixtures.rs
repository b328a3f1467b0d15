//! The fixtures in `tests/fixtures/sources/`, each read back as one line per event, so the
//! unit tests beside each decoder state exactly what a real body names to.

use std::path::PathBuf;

use super::{BodyError, Decoded, Privacy, SourceEvent};

/// One line per event: `session | kind | title | description | canonical URL [| raw=...]`,
/// `session | left <url>` for a page left, `session | no action [user=..] [email=..]`.
pub(crate) fn describe(event: &SourceEvent) -> String {
    let session = match (&event.session_id, &event.sessionless_person) {
        (Some(id), _) => format!("session={id}"),
        (None, Some(person)) => format!("no session, person={person}"),
        (None, None) => "no session".to_string(),
    };
    if let Some(action) = &event.action {
        let raw = action
            .raw_url_if_different()
            .map(|raw| format!(" | raw={raw}"))
            .unwrap_or_default();
        return format!(
            "{session} | {} | {} | {} | {}{raw}",
            action.kind(),
            action.title(),
            action.description(),
            action.canonical_url()
        );
    }
    if let Some(left) = &event.left_page {
        return format!("{session} | left {left}");
    }
    let mut line = format!("{session} | no action");
    if let Some(user) = &event.user_id {
        line.push_str(&format!(" user={user}"));
    }
    if let Some(email) = &event.email {
        line.push_str(&format!(" email={email}"));
    }
    line
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sources")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

type Decoder = fn(&[u8], &str, &Privacy) -> Result<Decoded, BodyError>;

/// Decode a fixture with the default privacy and describe each event (refusals as
/// `refused #i reason`).
pub(crate) fn lines(name: &str, decode: Decoder) -> Vec<String> {
    let decoded = decode(&fixture(name), "prod-1", &Privacy::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut lines: Vec<String> = decoded.events.iter().map(describe).collect();
    lines.extend(
        decoded
            .refused
            .iter()
            .map(|r| format!("refused #{} {}", r.index, r.reason)),
    );
    lines
}

const PH_FLAT: &str = "session=0193a1f2-7c3e-7d4a-9b1c-2e5f6a7b8c9d";
const PH: &str = "session=0193a1f2-9d01-7e2b-8c3d-4f5a6b7c8d9e";
const AMP: &str = "session=1796121500000";

/// Every fixture and exactly what it names to.
fn expectations() -> Vec<(&'static str, Decoder, Vec<String>)> {
    use super::{amplitude, posthog, segment};
    let line = |session: &str, rest: &str| format!("{session} | {rest}");
    vec![
        (
            "posthog_flat_pageview.json",
            posthog::decode,
            vec![line(PH_FLAT, "pageview | Page Load: Billing settings | viewed the page \"Billing settings\" | https://app.acme.io/settings/billing")],
        ),
        (
            "posthog_flat_click_link.json",
            posthog::decode,
            vec![line(PH_FLAT, "click | Click Invoices link | clicked the link \"Invoices\" | https://app.acme.io/settings/billing")],
        ),
        (
            "posthog_flat_icon_button.json",
            posthog::decode,
            vec![line(PH_FLAT, "click | Click Notifications button | clicked the button \"Notifications\" | https://app.acme.io/dashboard")],
        ),
        (
            "posthog_flat_token_url.json",
            posthog::decode,
            vec![line(PH_FLAT, "pageview | Page Load: Reset password | viewed the page \"Reset password\" | https://app.acme.io/reset-password/:id | raw=https://app.acme.io/reset-password/:token")],
        ),
        (
            "posthog_flat_no_session.json",
            posthog::decode,
            vec!["no session | pageview | Page Load: Pricing | viewed the page \"Pricing\" | https://app.acme.io/pricing".to_string()],
        ),
        (
            "posthog_webhook_pageview.json",
            posthog::decode,
            vec![line(PH, "pageview | Page Load: Checkout | viewed the page \"Checkout\" | https://app.acme.io/checkout")],
        ),
        (
            "posthog_webhook_click_button.json",
            posthog::decode,
            vec![line(PH, "click | Click Save button | clicked the button \"Save\" | https://app.acme.io/projects/:id/settings | raw=https://app.acme.io/projects/4812/settings")],
        ),
        (
            "posthog_webhook_change.json",
            posthog::decode,
            vec![line(PH, "change | Change Project name field | changed the field \"Project name\" | https://app.acme.io/projects/new")],
        ),
        (
            "posthog_webhook_submit.json",
            posthog::decode,
            vec![line(PH, "submit | Submit Create project form | submitted the form \"Create project\" | https://app.acme.io/projects/new")],
        ),
        (
            "posthog_webhook_rageclick.json",
            posthog::decode,
            vec![line(PH, "rageclick | Rage click Save button | clicked \"Save\" repeatedly | https://app.acme.io/projects/:id/settings | raw=https://app.acme.io/projects/4812/settings")],
        ),
        (
            "posthog_webhook_dead_click.json",
            posthog::decode,
            vec![line(PH, "dead_click | Dead click Export button | clicked \"Export\" and nothing happened | https://app.acme.io/reports")],
        ),
        (
            "posthog_webhook_exception.json",
            posthog::decode,
            vec![line(PH, "error | Error: TypeError: x is undefined | saw an error: \"TypeError: x is undefined\" | https://app.acme.io/checkout")],
        ),
        (
            "posthog_webhook_pageleave.json",
            posthog::decode,
            vec![line(PH, "left https://app.acme.io/checkout")],
        ),
        (
            "posthog_webhook_custom.json",
            posthog::decode,
            vec![line(PH, "custom | Invoice downloaded | did \"Invoice downloaded\" | https://app.acme.io/settings/billing/invoices")],
        ),
        (
            "posthog_webhook_masked.json",
            posthog::decode,
            vec![line(PH, "click | Click Account menu button | clicked the button \"Account menu\" | https://app.acme.io/account")],
        ),
        (
            "posthog_webhook_token_url.json",
            posthog::decode,
            vec![line(PH, "pageview | Page Load: Accept invitation | viewed the page \"Accept invitation\" | https://app.acme.io/invite/accept")],
        ),
        (
            "posthog_webhook_identify.json",
            posthog::decode,
            vec![line(PH, "no action user=maria-lopez-4812 email=maria.lopez@acme.io")],
        ),
        (
            "posthog_webhook_no_session.json",
            posthog::decode,
            vec!["no session | pageview | Page Load: Dashboard | viewed the page \"Dashboard\" | https://app.acme.io/dashboard".to_string()],
        ),
        (
            "amplitude_page_viewed.json",
            amplitude::decode,
            vec![line(AMP, "pageview | Page Load: Billing settings | viewed the page \"Billing settings\" | https://app.acme.io/settings/billing")],
        ),
        (
            "amplitude_element_clicked.json",
            amplitude::decode,
            vec![line(AMP, "click | Click Invoices link | clicked the link \"Invoices\" | https://app.acme.io/settings/billing")],
        ),
        (
            "amplitude_icon_button.json",
            amplitude::decode,
            vec![line(AMP, "click | Click Notifications button | clicked the button \"Notifications\" | https://app.acme.io/dashboard")],
        ),
        (
            "amplitude_element_changed.json",
            amplitude::decode,
            vec![line(AMP, "change | Change Project name field | changed the field \"Project name\" | https://app.acme.io/projects/new")],
        ),
        (
            "amplitude_form_submitted.json",
            amplitude::decode,
            vec![line(AMP, "submit | Submit Create project form | submitted the form \"Create project\" | https://app.acme.io/projects/new")],
        ),
        (
            "amplitude_rage_click.json",
            amplitude::decode,
            vec![line(AMP, "rageclick | Rage click Save button | clicked \"Save\" repeatedly | https://app.acme.io/projects/:id/settings | raw=https://app.acme.io/projects/4812/settings")],
        ),
        (
            "amplitude_dead_click.json",
            amplitude::decode,
            vec![line(AMP, "dead_click | Dead click Export button | clicked \"Export\" and nothing happened | https://app.acme.io/reports")],
        ),
        (
            "amplitude_custom.json",
            amplitude::decode,
            vec![line(AMP, "custom | Invoice downloaded | did \"Invoice downloaded\" | ")],
        ),
        (
            "amplitude_masked.json",
            amplitude::decode,
            vec![line(AMP, "click | Click Account menu button | clicked the button \"Account menu\" | https://app.acme.io/account")],
        ),
        (
            "amplitude_no_session.json",
            amplitude::decode,
            vec!["no session | pageview | Page Load: Pricing | viewed the page \"Pricing\" | https://app.acme.io/pricing".to_string()],
        ),
        (
            "amplitude_token_url.json",
            amplitude::decode,
            vec![line(AMP, "pageview | Page Load: Accept invitation | viewed the page \"Accept invitation\" | https://app.acme.io/invite/accept")],
        ),
        (
            "amplitude_batch.json",
            amplitude::decode,
            vec![
                line(AMP, "pageview | Page Load: Billing settings | viewed the page \"Billing settings\" | https://app.acme.io/settings/billing"),
                line(AMP, "click | Click Invoices link | clicked the link \"Invoices\" | https://app.acme.io/settings/billing"),
                line(AMP, "custom | Invoice downloaded | did \"Invoice downloaded\" | "),
                line(AMP, "no action user=maria-lopez-4812 email=maria.lopez@acme.io"),
            ],
        ),
        (
            "segment_page.json",
            segment::decode,
            vec![line(AMP, "pageview | Page Load: Billing settings | viewed the page \"Billing settings\" | https://app.acme.io/settings/billing")],
        ),
        (
            "segment_track.json",
            segment::decode,
            vec![line(AMP, "custom | Invoice downloaded | did \"Invoice downloaded\" | https://app.acme.io/settings/billing/invoices")],
        ),
        (
            "segment_identify.json",
            segment::decode,
            vec![line(AMP, "no action user=maria-lopez-4812 email=maria.lopez@acme.io")],
        ),
        (
            "segment_no_session.json",
            segment::decode,
            vec!["no session, person=a7c1e5d9-0b3f-4d2a-8e6c-1f0a9b8c7d6e | pageview | Page Load: Project settings | viewed the page \"Project settings\" | https://app.acme.io/projects/:id/settings | raw=https://app.acme.io/projects/4812/settings".to_string()],
        ),
        (
            "segment_token_url.json",
            segment::decode,
            vec![line(AMP, "pageview | Page Load: Accept invitation | viewed the page \"Accept invitation\" | https://app.acme.io/invite/accept")],
        ),
        (
            "segment_batch.json",
            segment::decode,
            vec![
                line(AMP, "no action user=maria-lopez-4812 email=maria.lopez@acme.io"),
                line(AMP, "pageview | Page Load: Billing settings | viewed the page \"Billing settings\" | https://app.acme.io/settings/billing"),
                line(AMP, "custom | Invoice downloaded | did \"Invoice downloaded\" | https://app.acme.io/settings/billing/invoices"),
                line(AMP, "pageview | Page Load: Mobile dashboard | viewed the page \"Mobile dashboard\" | https://app.acme.io/settings/billing"),
                "refused #4 unknown_type".to_string(),
            ],
        ),
    ]
}

#[test]
fn every_fixture_names_exactly_as_expected() {
    for (name, decode, expected) in expectations() {
        assert_eq!(lines(name, decode), expected, "{name}");
    }
}

#[test]
fn every_fixture_file_has_expectations() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sources");
    let expected: Vec<&str> = expectations().iter().map(|(name, _, _)| *name).collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            expected.contains(&name.as_str()),
            "{name} has no expectations"
        );
    }
}

/// Secrets in the fixtures' URLs, titles and properties never reach an action.
#[test]
fn no_fixture_secret_reaches_an_action() {
    for (name, decode, _) in expectations() {
        let decoded = decode(&fixture(name), "prod-1", &Privacy::default()).unwrap();
        for action in decoded.events.iter().filter_map(|e| e.action.as_ref()) {
            let stored = format!("{:?}", action.parts());
            for secret in [
                "?",
                "#",
                "secret",
                "sk_live",
                "eyJ",
                "@",
                "WINTER",
                "abc123def",
                "203.0.113",
                "phc_",
                "Maria",
                "INV-2026",
                "utm_",
            ] {
                assert!(!stored.contains(secret), "{name}: {secret:?} in {stored}");
            }
        }
    }
}

/// Allow-listed parameters survive, and nothing else does.
#[test]
fn allow_listed_query_params_are_kept() {
    let privacy = Privacy::from_list("utm_source");
    let decoded = super::posthog::decode(
        &fixture("posthog_webhook_token_url.json"),
        "prod-1",
        &privacy,
    )
    .unwrap();
    let action = decoded.events[0].action.as_ref().unwrap();
    assert_eq!(
        action.canonical_url(),
        "https://app.acme.io/invite/accept?utm_source=email"
    );
    assert!(!action.raw_url().contains("token"), "{}", action.raw_url());
}
