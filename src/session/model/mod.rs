//! The per-session data model and the rules that change it.
//!
//! Both storage backends (memory and Redis) hold exactly these values and change them only
//! through the methods here, so the bounding, folding and "replace exactly what was summarised"
//! rules are written once and behave identically everywhere.
//!
//! One file per concern: [`ids`] (session ids, person keys), [`action`] (actions, batches,
//! chunks), [`summary`] (the rolling summary and summarizer jobs), [`digest`] (the built-in
//! summarizer, which the session uses itself to fold chunks past its cap) and [`session`]
//! (the session and its rules). Everything is re-exported here, so callers name
//! `session::model::X` whatever file `X` lives in.

pub mod action;
pub mod digest;
pub mod ids;
pub mod session;
pub mod summary;

pub use action::*;
pub use ids::*;
pub use session::*;
pub use summary::*;

/// Builders shared by the unit tests of every module that handles sessions.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn action(kind: &str, title: &str, url: &str, ts: f64) -> Action {
        Action::new(ActionParts {
            index: None,
            kind: kind.into(),
            title: title.into(),
            description: format!("User did {kind} {title}"),
            timestamp_start: Some(ts),
            timestamp_end: Some(ts),
            raw_url: None,
            canonical_url: url.into(),
            identity: None,
        })
    }

    pub fn batch(session: &str, actions: Vec<Action>) -> ActionBatch {
        ActionBatch {
            session_id: SessionId::parse(session).unwrap(),
            product_id: Some("acme".into()),
            user_id: Some("u1".into()),
            email: Some("A@Example.com".into()),
            conversation_id: None,
            actions,
            forwarded_at: None,
            source: None,
        }
    }
}
