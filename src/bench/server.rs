//! The server under test: the real [`Application`], either in this process on a runtime of its
//! own (so the benchmark's generators and probers never queue behind its tasks, and its threads'
//! CPU time can be told apart), or as a `livectx serve` child process (so its memory is its own).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::stats;
use crate::api::ApiState;
use crate::app::{Application, Overrides};
use crate::config::ServeConfig;
use crate::ingest::Ingestor;

/// Threads of the server runtime, for CPU accounting.
#[derive(Default)]
struct Threads {
    live: Mutex<Vec<u32>>,
    /// CPU time of threads that already exited (blocking-pool threads come and go).
    exited_ns: AtomicU64,
}

/// The real application on its own multi-threaded runtime inside this process.
pub struct InProcessServer {
    runtime: Option<tokio::runtime::Runtime>,
    pub addr: SocketAddr,
    pub state: ApiState,
    /// The ingestion path, to load sessions without HTTP.
    pub ingestor: Arc<Ingestor>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
    threads: Arc<Threads>,
}

impl InProcessServer {
    /// Build and start the application (`config.listen` should be port 0).
    pub async fn start(config: ServeConfig, overrides: Overrides) -> anyhow::Result<Self> {
        let threads = Arc::new(Threads::default());
        let runtime = tracked_runtime("livectx-server", &threads)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = runtime.spawn(async move {
            match Application::build_with(config, overrides).await {
                Ok(app) => {
                    let _ = tx.send(Ok((
                        app.local_addr(),
                        app.state(),
                        app.ingestor(),
                        app.shutdown_token(),
                    )));
                    app.run_until_stopped().await
                }
                Err(error) => {
                    let _ = tx.send(Err(error));
                    Ok(())
                }
            }
        });
        let (addr, state, ingestor, shutdown) = rx
            .await
            .context("the server task ended before starting")?
            .context("livectx could not start")?;
        Ok(Self {
            runtime: Some(runtime),
            addr,
            state,
            ingestor,
            shutdown,
            task: Some(task),
            threads,
        })
    }

    /// CPU time the server's threads have used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.threads.cpu_ns()
    }

    /// Stop gracefully (bounded), then drop the runtime.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The cheapest server that speaks the same wire: a bare axum router on a runtime of its own
/// (as many worker threads as the livectx server's), that reads each `POST /retrieval` body
/// whole and answers a fixed body with `Content-Type: application/json`. `bench retrieval`
/// gives it a real livectx answer, so both send the same bytes: the ratio of livectx's
/// requests/s to this one's is what livectx's own work costs.
pub struct BaselineServer {
    runtime: Option<tokio::runtime::Runtime>,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    threads: Arc<Threads>,
}

impl BaselineServer {
    /// Bind a free loopback port and answer `body` to every `POST /retrieval`.
    pub async fn start(body: bytes::Bytes) -> anyhow::Result<Self> {
        use axum::http::{HeaderValue, header};
        let threads = Arc::new(Threads::default());
        let runtime = tracked_runtime("bench-baseline", &threads)?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
                Ok(listener) => listener,
                Err(error) => {
                    let _ = tx.send(Err(error));
                    return;
                }
            };
            let _ = tx.send(listener.local_addr());
            let answer = move |request: bytes::Bytes| {
                let body = body.clone();
                async move {
                    // Read, as livectx does, then answer the same bytes.
                    std::hint::black_box(&request);
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        body,
                    )
                }
            };
            let router = axum::Router::new().route("/retrieval", axum::routing::post(answer));
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        let addr = rx
            .await
            .context("the baseline server task ended before starting")?
            .context("the baseline server cannot bind")?;
        Ok(Self {
            runtime: Some(runtime),
            addr,
            shutdown,
            threads,
        })
    }

    /// CPU time the baseline's threads have used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.threads.cpu_ns()
    }
}

impl Drop for BaselineServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A multi-threaded runtime whose threads register in `threads`, for CPU accounting.
fn tracked_runtime(name: &str, threads: &Arc<Threads>) -> anyhow::Result<tokio::runtime::Runtime> {
    let on_start = Arc::clone(threads);
    let on_stop = Arc::clone(threads);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .on_thread_start(move || {
            if let Some(tid) = stats::current_tid() {
                lock(&on_start.live).push(tid);
            }
        })
        .on_thread_stop(move || {
            if let (Some(tid), Some(ns)) = (stats::current_tid(), stats::own_thread_cpu_ns()) {
                lock(&on_stop.live).retain(|t| *t != tid);
                on_stop.exited_ns.fetch_add(ns, Ordering::Relaxed);
            }
        })
        .build()
        .context("cannot build a server runtime")
}

impl Threads {
    fn cpu_ns(&self) -> u64 {
        let live: u64 = lock(&self.live)
            .iter()
            .filter_map(|tid| stats::thread_cpu_ns(*tid))
            .sum();
        live + self.exited_ns.load(Ordering::Relaxed)
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `livectx serve` as a child process of this binary.
pub struct ChildServer {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl ChildServer {
    /// Start `livectx serve <args>` on a free loopback port, logging to `log`; wait for
    /// `/healthz`.
    pub async fn start(args: &[String], log: &Path) -> anyhow::Result<Self> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let exe = std::env::current_exe().context("cannot find the livectx binary")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("AUTOPLAY_STREAM_URL")
            .env_remove("LIVECTX_API_KEY")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let child = command.spawn().context("cannot start livectx serve")?;
        let pid = child.id().context("the server exited at once")?;
        let server = Self { child, addr, pid };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = super::http::get(addr, "/healthz").await {
                return Ok(server);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "livectx serve did not answer /healthz within 20 s (see {})",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        stats::rss_bytes(self.pid)
    }

    /// CPU time the server process has used, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        stats::process_cpu_ns(self.pid)
    }

    /// Kill and reap: the benchmark has read everything it needs from it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
