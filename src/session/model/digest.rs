//! The built-in summarizer: deterministic, instant, no network.
//!
//! It is the default when no LLM is configured, and the fallback that folds the oldest chunks
//! when a session reaches its chunk cap while the LLM is failing. It keeps a structured
//! [`Digest`] (pages with visit counts, key clicks and submits, forms started and abandoned,
//! the current page), so successive summaries merge exactly instead of re-reading prose.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::session::model::{Action, Chunk, Summary, SummaryDraft, SummarySource};

/// Distinct pages listed by name; the rest are counted.
const MAX_PAGES: usize = 12;
/// Most recent key actions kept.
const MAX_KEY_ACTIONS: usize = 8;
/// Forms remembered per list.
const MAX_FORMS: usize = 4;
/// How much of a previous non-built-in summary is carried along.
const MAX_EARLIER_CHARS: usize = 1500;

/// Structured state of the built-in summary.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Digest {
    pub pages: Vec<PageVisits>,
    pub other_pages: u32,
    pub key_actions: VecDeque<String>,
    /// A form the user has typed into and not yet submitted: (page label, field).
    pub open_form: Option<(String, String)>,
    pub forms_abandoned: Vec<String>,
    pub forms_submitted: Vec<String>,
    pub total_actions: u64,
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    pub current_page: Option<(String, String)>,
    /// Text of an earlier summary that was not written by this summarizer (LLM or connector).
    pub earlier: Option<String>,
}

/// How often one page was visited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageVisits {
    pub label: String,
    pub url: String,
    pub visits: u32,
}

/// Summarise `previous` plus `chunks` into a new summary draft.
pub fn summarize(previous: Option<&Summary>, chunks: &[Arc<Chunk>]) -> SummaryDraft {
    let mut digest = match previous {
        Some(summary) => match &summary.digest {
            Some(digest) => digest.clone(),
            None => Digest {
                earlier: Some(truncate_chars(&summary.text, MAX_EARLIER_CHARS)),
                ..Digest::default()
            },
        },
        None => Digest::default(),
    };
    for chunk in chunks {
        for action in chunk.actions.iter() {
            digest.add(action, chunk.first_ts);
        }
    }
    SummaryDraft {
        text: digest.render(),
        source: SummarySource::Builtin,
        digest: Some(digest),
    }
}

impl Digest {
    fn add(&mut self, action: &Action, fallback_ts: f64) {
        self.total_actions += 1;
        let ts = action.time().unwrap_or(fallback_ts);
        self.first_ts = Some(self.first_ts.map_or(ts, |t| t.min(ts)));
        self.last_ts = Some(self.last_ts.map_or(ts, |t| t.max(ts)));

        let current = self
            .current_page
            .as_ref()
            .map(|(label, url)| (url.as_str(), label.as_str()));
        if let Some((url, label)) = action.arrives_at(current) {
            // A form typed into and then left for another page without a submit is abandoned.
            if let Some((page, field)) = self.open_form.take() {
                push_capped(&mut self.forms_abandoned, format!("\"{field}\" on {page}"));
            }
            self.count_visit(&label, &url);
            self.current_page = Some((label, url));
        }

        let page = self
            .current_page
            .as_ref()
            .map_or_else(String::new, |(label, _)| label.clone());
        // What an analytics source named reads as its phrase (`clicked the link "Invoices"`).
        let phrase = action.phrase().map(|phrase| format!("{phrase} on {page}"));
        match action.kind() {
            "click" => {
                self.push_key_action(phrase.unwrap_or_else(|| {
                    format!("clicked \"{}\" on {page}", object_of(action.title()))
                }))
            }
            "submit" => {
                self.push_key_action(phrase.unwrap_or_else(|| {
                    format!("submitted \"{}\" on {page}", object_of(action.title()))
                }));
                self.open_form = None;
                push_capped(&mut self.forms_submitted, page);
            }
            "type" | "input" | "change" => {
                let field = object_of(action.title());
                if self.open_form.is_none() {
                    self.push_key_action(
                        phrase.unwrap_or_else(|| format!("typed in \"{field}\" on {page}")),
                    );
                }
                self.open_form = Some((page, field));
            }
            "rageclick" | "dead_click" | "error" | "custom" => {
                if let Some(phrase) = phrase {
                    self.push_key_action(phrase);
                }
            }
            _ => {}
        }
    }

    fn count_visit(&mut self, label: &str, url: &str) {
        if let Some(page) = self
            .pages
            .iter_mut()
            .find(|p| p.url == url && p.label == label)
        {
            page.visits += 1;
        } else if self.pages.len() < MAX_PAGES {
            self.pages.push(PageVisits {
                label: label.to_string(),
                url: url.to_string(),
                visits: 1,
            });
        } else {
            self.other_pages += 1;
        }
    }

    fn push_key_action(&mut self, text: String) {
        self.key_actions.push_back(text);
        while self.key_actions.len() > MAX_KEY_ACTIONS {
            self.key_actions.pop_front();
        }
    }

    /// Render the digest as plain text for the model.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let range = match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) => format!(
                " between {} and {}",
                clock::format_utc(a),
                clock::format_utc(b)
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "Built-in summary of {} actions{range}.\n",
            self.total_actions
        ));
        if let Some(earlier) = &self.earlier {
            out.push_str(&format!("Before that: {}\n", earlier.trim()));
        }
        if !self.pages.is_empty() {
            let pages: Vec<String> = self
                .pages
                .iter()
                .map(|p| {
                    if p.visits > 1 {
                        format!("{} ({} visits)", p.label, p.visits)
                    } else {
                        p.label.clone()
                    }
                })
                .collect();
            out.push_str(&format!(
                "Pages visited (first visit order): {}",
                pages.join(" → ")
            ));
            if self.other_pages > 0 {
                out.push_str(&format!(" and {} more page visits", self.other_pages));
            }
            out.push_str(".\n");
        }
        if !self.key_actions.is_empty() {
            let actions: Vec<&str> = self.key_actions.iter().map(String::as_str).collect();
            out.push_str(&format!(
                "Key actions (latest last): {}.\n",
                actions.join("; ")
            ));
        }
        if !self.forms_abandoned.is_empty() {
            out.push_str(&format!(
                "Forms started but left without submitting: {}.\n",
                self.forms_abandoned.join("; ")
            ));
        }
        if !self.forms_submitted.is_empty() {
            out.push_str(&format!(
                "Forms submitted on: {}.\n",
                self.forms_submitted.join(", ")
            ));
        }
        out.push_str(&format!("Apparent goal: {}.\n", self.apparent_goal()));
        if let Some((label, url)) = &self.current_page {
            out.push_str(&format!("Last seen on: {label} ({url})."));
        }
        out.trim_end().to_string()
    }

    /// A cautious guess from the strongest signal in the digest.
    fn apparent_goal(&self) -> String {
        if let Some((page, field)) = &self.open_form {
            return format!("filling in \"{field}\" on {page} (not submitted yet)");
        }
        if let Some(abandoned) = self.forms_abandoned.last() {
            return format!("possibly still trying to complete the form {abandoned}");
        }
        // Ties go to the page visited first.
        let most_visited = self.pages.iter().rev().max_by_key(|p| p.visits);
        if let Some(page) = most_visited
            && page.visits >= 3
        {
            return format!(
                "keeps coming back to {} ({} visits) — possibly looking for something there",
                page.label, page.visits
            );
        }
        if let Some((label, _)) = &self.current_page {
            let lower = label.to_lowercase();
            if ["error", "failed", "declined", "denied"]
                .iter()
                .any(|w| lower.contains(w))
            {
                return format!("ran into a problem: the last page was \"{label}\"");
            }
        }
        if self.pages.len() >= 5 && self.forms_submitted.is_empty() {
            return "exploring the product without completing a task yet".to_string();
        }
        "not clear yet".to_string()
    }
}

fn push_capped(list: &mut Vec<String>, item: String) {
    list.retain(|existing| *existing != item);
    list.push(item);
    if list.len() > MAX_FORMS {
        list.remove(0);
    }
}

/// `Click Add Project button` → `Add Project button`.
fn object_of(title: &str) -> String {
    let title = title.trim();
    for prefix in [
        "Click ", "Submit ", "Type in ", "Type ", "Focus ", "Blur ", "Change ", "Start ",
    ] {
        if let Some(rest) = title.strip_prefix(prefix) {
            return rest.trim().to_string();
        }
    }
    title.to_string()
}

fn truncate_chars(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::tests::action;

    fn chunk(seq: u64, actions: Vec<Action>) -> Arc<Chunk> {
        Arc::new(Chunk {
            seq,
            first_ts: actions.first().and_then(Action::time).unwrap_or(0.0),
            last_ts: actions.last().and_then(Action::time).unwrap_or(0.0),
            actions: actions.into_boxed_slice(),
            received_at: 0.0,
        })
    }

    #[test]
    fn summarises_pages_actions_and_abandoned_forms() {
        let chunks = vec![chunk(
            1,
            vec![
                action("pageview", "Page Load: Projects", "/projects", 1.0),
                action("click", "Click Add Project button", "/projects", 2.0),
                action("pageview", "Page Load: New project", "/projects/new", 3.0),
                action("type", "Type in Project name field", "/projects/new", 4.0),
                action("pageview", "Page Load: Projects", "/projects", 5.0),
            ],
        )];
        let draft = summarize(None, &chunks);
        assert_eq!(draft.source, SummarySource::Builtin);
        let text = &draft.text;
        assert!(text.contains("Built-in summary of 5 actions"), "{text}");
        assert!(text.contains("Projects (2 visits) → New project"), "{text}");
        assert!(
            text.contains("clicked \"Add Project button\" on Projects"),
            "{text}"
        );
        assert!(
            text.contains("left without submitting: \"Project name field\" on New project"),
            "{text}"
        );
        assert!(
            text.contains("Last seen on: Projects (/projects)"),
            "{text}"
        );
    }

    #[test]
    fn merging_is_exact_across_calls() {
        let all = vec![
            action("pageview", "Page Load: A", "/a", 1.0),
            action("pageview", "Page Load: B", "/b", 2.0),
            action("pageview", "Page Load: A", "/a", 3.0),
            action("click", "Click Go", "/a", 4.0),
        ];
        let at_once = summarize(None, &[chunk(1, all.clone())]);
        let first = summarize(None, &[chunk(1, all[..2].to_vec())]);
        let previous = Summary {
            text: first.text.clone(),
            source: SummarySource::Builtin,
            covers_through_seq: 1,
            covered_actions: 2,
            first_ts: 1.0,
            last_ts: 2.0,
            updated_at: 0.0,
            generation: 1,
            digest: first.digest.clone(),
        };
        let merged = summarize(Some(&previous), &[chunk(2, all[2..].to_vec())]);
        assert_eq!(merged.text, at_once.text);
    }

    #[test]
    fn carries_an_llm_summary_along() {
        let previous = Summary {
            text: "The user compared plans.".into(),
            source: SummarySource::Llm,
            covers_through_seq: 3,
            covered_actions: 30,
            first_ts: 1.0,
            last_ts: 2.0,
            updated_at: 0.0,
            generation: 1,
            digest: None,
        };
        let draft = summarize(
            Some(&previous),
            &[chunk(4, vec![action("click", "Click Buy", "/p", 5.0)])],
        );
        assert!(
            draft.text.contains("Before that: The user compared plans."),
            "{}",
            draft.text
        );
    }

    #[test]
    fn detects_revisits_as_searching() {
        let actions: Vec<Action> = (0..6)
            .map(|i| {
                let (title, url) = if i % 2 == 0 {
                    ("Page Load: Consultants", "/consultants")
                } else {
                    ("Page Load: Home", "/")
                };
                action("pageview", title, url, i as f64)
            })
            .collect();
        let draft = summarize(None, &[chunk(1, actions)]);
        assert!(
            draft
                .text
                .contains("keeps coming back to Consultants (3 visits)"),
            "{}",
            draft.text
        );
    }
}
