use clap::Parser;

/// glibc's allocator spent about a third of the server's CPU in `malloc`/`free` under ingest
/// load (each event allocates its decoded body, names and chunk); mimalloc's thread-local
/// free lists make those cheap. Measured in docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    livectx::cli::run(livectx::cli::Cli::parse()).await
}
