use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    livectx::cli::run(livectx::cli::Cli::parse()).await
}
