//! What each subcommand does. Errors end here as `anyhow` (this is the binary's edge).

use anyhow::Context;

use crate::api::identity::IdentitySigner;
use crate::app::Application;
use crate::clock;
use crate::config::{Cli, Command, ServeConfig, SignArgs};
use crate::telemetry;

/// Run the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Sign(args) => {
            println!("{}", sign(&args));
            Ok(())
        }
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
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
    app.run_until_stopped().await.context("server error")?;
    Ok(())
}

/// `livectx sign`: a signed identifier valid for `ttl`.
pub fn sign(args: &SignArgs) -> String {
    let expires = (clock::now() + args.ttl.as_secs_f64()).ceil() as u64;
    IdentitySigner::new(&args.secret).sign(args.id.trim(), expires)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
