//! Actions named by an analytics source (`sources::naming`) read as phrases in the activity
//! view (`render::activity`) and the built-in digest (`session::model::digest`). These cross
//! the input and output sides, which do not import each other, so they live here.

use std::sync::Arc;

use livectx::render::activity::render_activity;
use livectx::session::model::digest::summarize;
use livectx::session::model::{Action, ActionBatch, Chunk, Session, SessionId, SessionLimits};
use livectx::sources::naming;

fn session_with(actions: Vec<Action>) -> Session {
    let mut s = Session::new(SessionId::parse("s1").unwrap(), 0.0);
    let batch = ActionBatch {
        session_id: SessionId::parse("s1").unwrap(),
        product_id: Some("acme".into()),
        user_id: Some("u1".into()),
        email: Some("A@Example.com".into()),
        conversation_id: None,
        actions,
        forwarded_at: None,
        source: None,
    };
    s.append(batch, 1000.0, SessionLimits { max_chunks: 50 });
    s
}

fn chunk(seq: u64, actions: Vec<Action>) -> Arc<Chunk> {
    Arc::new(Chunk {
        seq,
        first_ts: actions.first().and_then(Action::time).unwrap_or(0.0),
        last_ts: actions.last().and_then(Action::time).unwrap_or(0.0),
        actions: actions.into_boxed_slice(),
        received_at: 0.0,
    })
}

/// Actions named by an analytics source (`sources::naming`) at `url`, `secs` after 10:38.
fn named(happened: naming::Happened, url: &str, secs: f64) -> Action {
    let url = naming::clean_url(url, &Default::default()).unwrap();
    happened.action(Some(&url), Some(1_796_121_480.0 + secs))
}

#[test]
fn source_named_actions_read_as_phrases_with_frustration_signals() {
    use naming::{Happened, Target};
    let target = |label: &str, noun: &'static str| Target {
        label: Some(label.to_string()),
        noun: Some(noun),
    };
    let s = session_with(vec![
        named(
            Happened::PageView {
                page: "Billing settings".into(),
            },
            "https://app.acme.io/settings/billing",
            0.0,
        ),
        named(
            Happened::Click(target("Invoices", "link")),
            "https://app.acme.io/settings/billing",
            8.0,
        ),
        named(
            Happened::PageView {
                page: "Checkout".into(),
            },
            "https://app.acme.io/checkout?coupon=WINTER",
            20.0,
        ),
        named(
            Happened::Change(target("Coupon code", "field")),
            "https://app.acme.io/checkout",
            25.0,
        ),
        named(
            Happened::RageClick(target("Apply", "button")),
            "https://app.acme.io/checkout",
            30.0,
        ),
        named(
            Happened::Error(Some("TypeError: x is undefined".into())),
            "https://app.acme.io/checkout",
            31.0,
        ),
        // No page: it happened where the user already was.
        Happened::Custom("Coupon rejected".into()).action(None, Some(1_796_121_480.0 + 32.0)),
    ]);
    let text = render_activity(&s, 1_796_121_480.0 + 40.0, 120.0);
    let expected = "\
Now on: \"Checkout\" (https://app.acme.io/checkout) for 20 s.
Pages in the last 2 min, in order: Billing settings → Checkout.
What they did in the last 2 min (latest last):
- 10:38:08 UTC clicked the link \"Invoices\" on Billing settings
- 10:38:25 UTC changed the field \"Coupon code\" on Checkout
- 10:38:30 UTC clicked \"Apply\" repeatedly on Checkout
- 10:38:31 UTC saw an error: \"TypeError: x is undefined\" on Checkout
- 10:38:32 UTC did \"Coupon rejected\" on Checkout
Pattern: this looks like frustration — 2 signs of it: they clicked \"Apply\" repeatedly on Checkout; saw an error: \"TypeError: x is undefined\" on Checkout.";
    let body = text
        .split_once(").\n")
        .map_or(text.as_str(), |(_, rest)| rest);
    assert_eq!(body, expected, "{text}");
}

#[test]
fn frustration_quotes_the_latest_three() {
    use naming::{Happened, Target};
    let url = "https://app.acme.io/reports";
    let mut actions = vec![named(
        Happened::PageView {
            page: "Reports".into(),
        },
        url,
        0.0,
    )];
    for (i, label) in ["A", "B", "C", "D"].iter().enumerate() {
        let target = Target {
            label: Some(label.to_string()),
            noun: Some("button"),
        };
        actions.push(named(Happened::DeadClick(target), url, 1.0 + i as f64));
    }
    let text = render_activity(&session_with(actions), 1_796_121_480.0 + 10.0, 120.0);
    assert!(
        text.contains("Pattern: this looks like frustration — 4 signs of it (latest): they clicked \"B\" and nothing happened on Reports; clicked \"C\" and nothing happened on Reports; clicked \"D\" and nothing happened on Reports."),
        "{text}"
    );
}
#[test]
fn source_named_actions_are_summarised_by_their_phrases() {
    use naming::{Happened, Target, clean_url};
    let at = |path: &str| clean_url(&format!("https://app.acme.io{path}"), &Default::default());
    let field = Target {
        label: Some("Project name".into()),
        noun: Some("field"),
    };
    let chunks = vec![chunk(
        1,
        vec![
            Happened::PageView {
                page: "New project".into(),
            }
            .action(at("/projects/new").as_ref(), Some(1.0)),
            Happened::Change(field).action(at("/projects/new").as_ref(), Some(2.0)),
            Happened::Error(Some("TypeError: x is undefined".into()))
                .action(at("/projects/new").as_ref(), Some(3.0)),
            Happened::PageView {
                page: "Projects".into(),
            }
            .action(at("/projects").as_ref(), Some(4.0)),
        ],
    )];
    let text = summarize(None, &chunks).text;
    assert!(
        text.contains("Key actions (latest last): changed the field \"Project name\" on New project; saw an error: \"TypeError: x is undefined\" on New project."),
        "{text}"
    );
    assert!(
        text.contains("left without submitting: \"Project name field\" on New project"),
        "{text}"
    );
}
