//! What each subcommand does. Errors end here as `anyhow` (this is the binary's edge).

use anyhow::Context;

use crate::api::identity::IdentitySigner;
use crate::app::Application;
use crate::clock;
use crate::config::{Cli, Command, HealthcheckArgs, ServeConfig, SignArgs};
use crate::telemetry;

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
        Command::Simulate(config) => crate::demo::simulator::run_cli(*config).await,
        Command::Demo(config) => crate::demo::runner::run(*config).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::BenchLoadgen(args) => crate::bench::loadgen::run(args).await,
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
