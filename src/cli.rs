//! What each subcommand does. Errors end here as `anyhow` (this is the binary's edge).

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::api::identity::IdentitySigner;
use crate::app::Application;
#[cfg(feature = "tools")]
use crate::bench::BenchArgs;
use crate::clock;
use crate::config::{HealthcheckArgs, ServeConfig, SignArgs};
#[cfg(feature = "tools")]
use crate::demo::{DemoConfig, SimulateConfig};
use crate::telemetry;

/// livectx — live, per-session user activity for support chatbots (Dify External Knowledge
/// API, MCP, REST), fed by PostHog, Amplitude, Segment or an Autoplay connector.
#[derive(Debug, Parser)]
#[command(name = "livectx", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: ingest product activity and answer Dify's /retrieval, MCP and REST.
    Serve(Box<ServeConfig>),
    /// Print a signed identifier for LIVECTX_IDENTITY_SECRET deployments.
    Sign(SignArgs),
    #[cfg(feature = "tools")]
    /// Run simulated users: an Autoplay connector's SSE stream, and optionally webhook or PostHog pushes.
    Simulate(Box<SimulateConfig>),
    #[cfg(feature = "tools")]
    /// See the whole loop on one machine: livectx fed by simulated users, queried as Dify would.
    Demo(Box<DemoConfig>),
    #[cfg(feature = "tools")]
    /// Benchmark a local livectx (retrieval, ingest, freshness, memory, soak, summarize): prints
    /// a table and writes JSON. Build with --release first.
    Bench(BenchArgs),
    #[cfg(feature = "tools")]
    /// The benchmarks' /retrieval load generator (run as a child process by `bench`).
    #[command(hide = true)]
    BenchLoadgen(crate::bench::loadgen::LoadgenArgs),
    /// The PostHog ingest benchmark's load generator (run by `bench ingest --source posthog`).
    #[cfg(feature = "tools")]
    #[command(hide = true)]
    BenchIngestLoadgen(crate::bench::ingest_posthog::IngestLoadgenArgs),
    #[cfg(feature = "tools")]
    /// The memory benchmark's measuring child (run by `bench memory`).
    #[command(hide = true)]
    BenchMemory(crate::bench::memory::MemoryArgs),
    /// Connect an analytics tool to livectx (creates or updates its destination).
    Connect {
        #[command(subcommand)]
        target: crate::connect::ConnectTarget,
    },
    /// Exit 0 when a livectx answers /healthz (for container HEALTHCHECKs without curl).
    Healthcheck(HealthcheckArgs),
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Sign(args) => {
            if args.secret.trim().is_empty() {
                anyhow::bail!(
                    "the signing secret is empty: set LIVECTX_IDENTITY_SECRET or --secret"
                );
            }
            println!("{}", sign(&args));
            Ok(())
        }
        Command::Healthcheck(args) => healthcheck(&args).await,
        Command::Connect { target } => crate::connect::run(target).await,
        #[cfg(feature = "tools")]
        Command::Simulate(config) => crate::demo::simulator::run_cli(*config).await,
        #[cfg(feature = "tools")]
        Command::Demo(config) => crate::demo::runner::run(*config).await,
        #[cfg(feature = "tools")]
        Command::Bench(args) => crate::bench::run(args).await,
        #[cfg(feature = "tools")]
        Command::BenchLoadgen(args) => crate::bench::loadgen::run(args).await,
        #[cfg(feature = "tools")]
        Command::BenchIngestLoadgen(args) => crate::bench::ingest_posthog::loadgen(args).await,
        #[cfg(feature = "tools")]
        Command::BenchMemory(args) => crate::bench::memory::child(args).await,
    }
}

/// `livectx serve`: run until SIGTERM or Ctrl-C.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    telemetry::init_tracing(config.log.log_format, config.log.log_identities);
    let app = Application::build(config)
        .await
        .context("livectx could not start")?;
    let token = app.shutdown_token();
    tokio::spawn(async move {
        crate::shutdown::wait_for_signal().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
    app.run_until_stopped().await.context("server error")?;
    Ok(())
}

/// `livectx sign`: a signed identifier valid for `ttl`. The secret is trimmed, as the server
/// trims `LIVECTX_IDENTITY_SECRET`.
pub fn sign(args: &SignArgs) -> String {
    let expires = (clock::now() + args.ttl.as_secs_f64()).ceil() as u64;
    IdentitySigner::new(args.secret.trim()).sign(args.id.trim(), expires)
}

/// `livectx healthcheck`: succeed when the URL answers 2xx in time.
pub async fn healthcheck(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(args.timeout).build()?;
    let response = client
        .get(&args.url)
        .send()
        .await
        .with_context(|| format!("{} did not answer", args.url))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{} answered {}",
        args.url,
        response.status()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_command_line() {
        let relevant = std::env::vars().any(|(k, _)| {
            (k.starts_with("LIVECTX_") && k != "LIVECTX_TEST_REDIS_URL")
                || k.starts_with("AUTOPLAY_")
                || k.starts_with("OPENAI_")
        });
        if relevant {
            eprintln!("skipped: livectx environment variables are set");
            return;
        }
        let cli = Cli::try_parse_from(["livectx", "serve"]).unwrap();
        let Command::Serve(parsed) = cli.command else {
            panic!("serve")
        };
        assert_eq!(*parsed, ServeConfig::default());
        #[cfg(feature = "tools")]
        tools_defaults_match_the_command_line();
    }

    #[cfg(feature = "tools")]
    fn tools_defaults_match_the_command_line() {
        let cli = Cli::try_parse_from(["livectx", "simulate"]).unwrap();
        let Command::Simulate(parsed) = cli.command else {
            panic!("simulate")
        };
        assert_eq!(*parsed, SimulateConfig::default());
        let cli = Cli::try_parse_from(["livectx", "demo"]).unwrap();
        let Command::Demo(parsed) = cli.command else {
            panic!("demo")
        };
        assert_eq!(*parsed, DemoConfig::default());
    }

    #[cfg(feature = "tools")]
    #[test]
    fn simulator_flags_are_checked() {
        assert!(Cli::try_parse_from(["livectx", "simulate", "--speed", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["livectx", "simulate", "--push-to", "http://x/"]).is_err(),
            "pushing needs the secret"
        );
        assert!(
            Cli::try_parse_from([
                "livectx",
                "simulate",
                "--push-to",
                "http://x/",
                "--secret",
                "s"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from([
                "livectx",
                "simulate",
                "--push-to",
                "http://127.0.0.1:8000/ingest/acme_prod",
                "--push-format",
                "posthog",
                "--secret",
                "s"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from(["livectx", "simulate", "--push-format", "amplitude"]).is_err()
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
