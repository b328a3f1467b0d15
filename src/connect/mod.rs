//! `livectx connect <tool>`: wire an analytics tool to livectx's ingest routes from the command
//! line, through the tool's own API, so that setting livectx up is one command.

pub mod posthog;

use clap::Subcommand;

/// The tools `connect` knows.
#[derive(Debug, Clone, Subcommand)]
pub enum ConnectTarget {
    /// Create or update (or, with --check, verify) the PostHog destination that posts every
    /// event to livectx's /ingest/<product_id>.
    Posthog(Box<posthog::PosthogConnectArgs>),
}

/// Run `livectx connect <tool>`.
pub async fn run(target: ConnectTarget) -> anyhow::Result<()> {
    match target {
        ConnectTarget::Posthog(args) => posthog::run(*args).await,
    }
}
