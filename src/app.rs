//! Start-up and shutdown: build every part from a [`ServeConfig`], bind, run until stopped.
//!
//! Integration tests use exactly this: [`Application::build`] on port 0, then
//! [`Application::run_until_stopped`] in a task, then plain HTTP against [`Application::port`].

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::identity::{IdentityPolicy, IdentitySigner};
use crate::api::mcp::McpSettings;
use crate::api::{self, ApiContext, ApiState};
use crate::clock;
use crate::cluster::Leadership;
use crate::cluster::redis_lease::{LeaseSettings, RedisLeadership, default_replica_id};
use crate::config::{ConfigError, ServeConfig};
use crate::console::{self, ConsoleSettings};
use crate::diagnostics::Diagnostics;
use crate::ingest::Ingestor;
use crate::ingest::dedupe::{DeliveryLog, MemoryDeliveryLog, RedisDeliveryLog};
use crate::ingest::idle_sessions::{IdleSessions, MemoryIdleSessions, RedisIdleSessions};
use crate::ingest::pull::AutoplayPuller;
use crate::ingest::receivers::{self, ReceiverSettings, Receivers};
use crate::ingest::sse::{StreamConfig, StreamConsumer, StreamHandle};
use crate::ingest::webhook::{self, WebhookSettings, WebhookState};
use crate::session::buffered::BufferedStore;
use crate::session::memory::MemoryStore;
use crate::session::model::SessionLimits;
use crate::session::persist::{Snapshots, Snapshotter};
use crate::session::pull::ActivityPuller;
use crate::session::redis::{self as redis_store, RedisStore};
use crate::session::store::{SessionStore, StoreConfig};
use crate::session::summarizer::{LlmConfig, Summarizer, SummarizerConfig};
use crate::telemetry::Metrics;
use crate::web::auth::ApiKeys;
use crate::web::limits::{RateLimiter, RequestLimits};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A setting out of range, contradicting another, or naming an unreadable file.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot use the data directory: {0}")]
    DataDir(#[from] crate::session::persist::PersistError),
    /// An HTTP client for an outside service could not be built (TLS set-up).
    #[error("invalid configuration: cannot build the {what}: {source}")]
    Client {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The summarizer's LLM client could not be built.
    #[error("invalid configuration: {0}")]
    Llm(#[from] crate::session::summarizer::LlmError),
    /// `LIVECTX_REDIS_URL` cannot be parsed.
    #[error("invalid configuration: LIVECTX_REDIS_URL is not a usable Redis URL: {0}")]
    RedisUrl(#[source] redis_store::UrlError),
    /// The Redis client could not be set up for that URL.
    #[error("invalid configuration: cannot set up the Redis connection: {0}")]
    RedisClient(#[source] redis::RedisError),
    /// Redis holds another key format under the prefix.
    #[error("invalid configuration: {0}")]
    KeyFormat(#[source] redis_store::FormatError),
    /// The key format could not be read.
    #[error("invalid configuration: cannot read the key format from Redis at {url}: {source}")]
    KeyFormatUnread {
        url: String,
        #[source]
        source: crate::session::store::StoreError,
    },
    /// Redis answered, and refused (authentication, ACL, ...).
    #[error("invalid configuration: Redis at {url} refused livectx: {source}")]
    RedisRefused {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// Parts a caller may supply instead of the defaults (tests, the demo, Redis mode).
#[derive(Default)]
pub struct Overrides {
    /// Use this store instead of a fresh in-memory one.
    pub store: Option<Arc<dyn SessionStore>>,
    /// Decide stream leadership (Redis mode).
    pub leadership: Option<Arc<dyn Leadership>>,
    /// Use this metrics registry.
    pub metrics: Option<Arc<Metrics>>,
}

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: ApiState,
    /// The receivers of pushed activity, mounted beside the API: the analytics tools' (with
    /// `LIVECTX_INGEST_SECRET`) and the Autoplay webhook (with `AUTOPLAY_WEBHOOK_SECRET`).
    receivers: Option<Arc<Receivers>>,
    webhook: Option<Arc<WebhookState>>,
    /// Where every source's activity enters the store (flushed last at shutdown).
    ingestor: Arc<Ingestor>,
    shutdown: CancellationToken,
    streams: Vec<StreamHandle>,
    background: Vec<JoinHandle<()>>,
    snapshotter: Option<Snapshotter>,
    /// Releases the stream leases at the end of shutdown.
    leadership: Option<Arc<dyn Leadership>>,
    shutdown_timeout: Duration,
    /// The operator console, when `LIVECTX_CONSOLE_KEY` is set.
    console: Option<ConsoleSettings>,
}

impl Application {
    /// Build with the default parts.
    pub async fn build(config: ServeConfig) -> Result<Self, StartupError> {
        Self::build_with(config, Overrides::default()).await
    }

    /// Build, with some parts supplied by the caller.
    pub async fn build_with(
        config: ServeConfig,
        overrides: Overrides,
    ) -> Result<Self, StartupError> {
        let webhook_secret =
            secret_setting("AUTOPLAY_WEBHOOK_SECRET", config.webhook_secret.as_deref())?;
        let identity_secret =
            secret_setting("LIVECTX_IDENTITY_SECRET", config.identity_secret.as_deref())?;
        let console_key = secret_setting("LIVECTX_CONSOLE_KEY", config.console_key.as_deref())?;
        let ingest_secret =
            secret_setting("LIVECTX_INGEST_SECRET", config.ingest_secret.as_deref())?;
        check_ingest_settings(&config)?;
        if config.request_timeout.is_zero() {
            return Err(ConfigError::rule(
                "LIVECTX_REQUEST_TIMEOUT",
                "LIVECTX_REQUEST_TIMEOUT must be longer than 0",
            )
            .into());
        }
        let rate_limiter = RateLimiter::new(config.rate_limit_config());
        let metrics = overrides.metrics.unwrap_or_default();
        let shutdown = CancellationToken::new();
        let mut background = Vec::new();
        let Storage {
            store,
            buffered,
            leadership,
            snapshotter,
            redis,
        } = build_storage(
            &config,
            overrides.store,
            overrides.leadership,
            &metrics,
            &shutdown,
            &mut background,
        )
        .await?;

        let summarizer = Summarizer::new(
            Arc::clone(&store),
            Arc::clone(&metrics),
            summarizer_config(&config)?,
        )
        .map_err(StartupError::Llm)?;
        background.push(summarizer.spawn(shutdown.child_token()));
        if let Some(buffered) = &buffered {
            // Appends replayed after a Redis outage reach the summarizer like live ones.
            let listener = summarizer.clone();
            buffered.on_replay(move |id, stored| {
                listener.notify(id, stored.outcome.unsummarized_actions);
            });
        }
        let engine = summarizer.engine_name();

        // Only the console reads the recent lookups: without it they are not recorded.
        let diagnostics = Arc::new(Diagnostics::new(if console_key.is_some() {
            crate::diagnostics::DEFAULT_LOOKUPS
        } else {
            0
        }));
        let ingestor = Arc::new(
            Ingestor::new(
                Arc::clone(&store),
                Arc::clone(&metrics),
                Some(summarizer),
                Duration::from_millis(config.debounce_ms),
            )
            .with_diagnostics(Arc::clone(&diagnostics))
            .with_group_commit(config.ingest_batch_window),
        );
        let receivers = ingest_secret.map(|secret| {
            let (deliveries, idle_sessions): (Arc<dyn DeliveryLog>, Arc<dyn IdleSessions>) =
                match &redis {
                    Some(connection) => (
                        Arc::new(RedisDeliveryLog::new(
                            connection.clone(),
                            &config.redis_prefix,
                            config.ingest_dedupe_window,
                        )),
                        Arc::new(RedisIdleSessions::new(
                            connection.clone(),
                            &config.redis_prefix,
                        )),
                    ),
                    None => (
                        Arc::new(MemoryDeliveryLog::new(config.ingest_dedupe_window)),
                        Arc::new(MemoryIdleSessions::default()),
                    ),
                };
            Receivers::new(
                ReceiverSettings {
                    secret,
                    privacy: crate::sources::Privacy {
                        keep_query_params: config.keep_query_params(),
                    },
                },
                Arc::clone(&ingestor),
                deliveries,
                idle_sessions,
            )
        });
        if let Some(tick) = ingestor.debounce_tick() {
            background.push(spawn_debounce_sweeper(
                Arc::clone(&ingestor),
                tick,
                shutdown.child_token(),
            ));
        }
        background.push(spawn_expiry_sweeper(
            Arc::clone(&store),
            Arc::clone(&metrics),
            config.session_ttl,
            shutdown.child_token(),
        ));

        let token = config.stream_token();
        let mut streams = Vec::new();
        for url in config.streams() {
            let mut stream_config = StreamConfig::new(url, token.clone());
            stream_config.watchdog = config.stream_watchdog;
            stream_config.config_error_retry = config.config_error_retry;
            stream_config.queue_capacity = config.ingest_queue;
            stream_config.max_frame_bytes = config.max_frame_bytes;
            let consumer = StreamConsumer::new(
                stream_config,
                Arc::clone(&ingestor),
                Arc::clone(&metrics),
                leadership.clone(),
            )
            .map_err(|source| StartupError::Client {
                what: "stream client",
                source,
            })?;
            streams.push(consumer.spawn(shutdown.child_token()));
        }
        let puller = build_puller(&config, &ingestor, &metrics, &shutdown, &mut background)?;
        if streams.is_empty() && webhook_secret.is_none() && receivers.is_none() && puller.is_none()
        {
            tracing::warn!(
                "no LIVECTX_INGEST_SECRET, AUTOPLAY_STREAM_URL or AUTOPLAY_WEBHOOK_SECRET: nothing will feed activity into livectx"
            );
        }

        let api_keys = ApiKeys::new(&config.api_keys);
        if api_keys.is_open() {
            tracing::warn!(
                "LIVECTX_API_KEY is not set: /retrieval and the REST API answer anyone who can reach them"
            );
        }
        let mut mcp = McpSettings::new(&api_keys, &config.mcp_keys, &config.mcp_allowed_hosts);
        mcp.operator_tools = config.mcp_operator_tools;
        if mcp.keys.is_open() {
            tracing::warn!(
                "neither LIVECTX_API_KEY nor LIVECTX_MCP_KEY is set: /mcp answers anyone who can reach it{}",
                if mcp.allowed_hosts.is_empty() {
                    " (and any Host header: set LIVECTX_MCP_ALLOWED_HOSTS if browsers can reach this server)"
                } else {
                    ""
                }
            );
        }
        let state: ApiState = Arc::new(ApiContext {
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
            api_keys,
            mcp,
            public_url: config.public_url.clone(),
            identity: IdentityPolicy {
                signer: identity_secret.as_deref().map(IdentitySigner::new),
                email_lookup: !config.no_email_lookup,
            },
            activity_window: config.activity_window,
            webhook_enabled: webhook_secret.is_some(),
            streams: streams.iter().map(|s| Arc::clone(&s.status)).collect(),
            summarizer_engine: engine,
            started_at: clock::now(),
            limits: Arc::new(RequestLimits {
                exempt_paths: api::OPERATOR_PATHS.to_vec(),
                marked_paths: vec![webhook::PATH],
                ..RequestLimits::new(rate_limiter, config.request_timeout, Arc::clone(&metrics))
            }),
            diagnostics,
            puller,
        });
        let webhook = webhook_secret.map(|secret| {
            Arc::new(WebhookState {
                settings: WebhookSettings {
                    secret,
                    dedupe_window: config.webhook_dedupe_window,
                },
                ingestor: Arc::clone(&ingestor),
                limits: Arc::clone(&state.limits),
            })
        });
        if let Some(limiter) = &state.limits.rate_limiter {
            let limit = limiter.config();
            tracing::info!(
                per_second = limit.per_second,
                burst = limit.burst,
                trust_forwarded_for = limit.trust_forwarded_for,
                "per-IP rate limit on"
            );
        }

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })?;
        tracing::info!(
            %addr,
            store = store.backend(),
            stream_leadership = leadership.is_some(),
            summarizer = %state.summarizer_engine,
            streams = state.streams.len(),
            webhook = state.webhook_enabled,
            analytics_receivers = receivers.is_some(),
            "livectx is listening"
        );
        Ok(Self {
            listener,
            addr,
            state,
            receivers,
            webhook,
            ingestor,
            shutdown,
            streams,
            background,
            snapshotter,
            leadership,
            shutdown_timeout: config.shutdown_timeout,
            console: console_key.map(|key| ConsoleSettings {
                key,
                show_identities: config.console_show_identities,
                public_url: config.public_url.clone(),
            }),
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cancel this token to stop the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The shared state (store, metrics, ...), for tests and embedding.
    pub fn state(&self) -> ApiState {
        Arc::clone(&self.state)
    }

    /// The ingestion path every source feeds, for tests, benchmarks and embedding.
    pub fn ingestor(&self) -> Arc<Ingestor> {
        Arc::clone(&self.ingestor)
    }

    /// Serve until the shutdown token is cancelled, then stop in order: stop accepting and
    /// finish in-flight requests, stop the streams (draining what they read), flush debounced
    /// batches. Bounded by the shutdown timeout.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            listener,
            state,
            receivers,
            webhook,
            ingestor,
            shutdown,
            streams,
            background,
            snapshotter,
            leadership,
            shutdown_timeout,
            console,
            ..
        } = self;
        let mut sources = receivers.map_or_else(axum::Router::new, receivers::routes);
        if let Some(webhook) = webhook {
            sources = sources.merge(webhook::routes(webhook));
        }
        // The console is mounted with the sources, under the API's layers (its guard).
        if let Some(settings) = console {
            sources = sources.merge(console::router(Arc::clone(&state), settings));
        }
        let router = api::router_with(Arc::clone(&state), sources);
        let service = api::ApiService::new(router, Arc::clone(&state));
        let server = axum::serve(listener, service.connections())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        tokio::pin!(server);
        // The server future may finish in the same instant the signal fires; it must not be
        // polled again once done.
        let server_done = tokio::select! {
            result = &mut server => {
                result?;
                true
            }
            () = shutdown.cancelled() => false,
        };
        // One budget for the whole shutdown, counted from the signal.
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        if !server_done {
            match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(result) => result?,
                Err(_) => {
                    tracing::warn!("in-flight requests did not finish within the shutdown timeout")
                }
            }
        }
        let mut leases = Vec::new();
        for stream in streams {
            match tokio::time::timeout_at(deadline, stream.task).await {
                Ok(Ok(Some(lease))) => leases.push(lease),
                Ok(_) => {}
                Err(_) => tracing::warn!("a stream consumer did not stop in time"),
            }
        }
        let flushed = ingestor.flush_due(true).await;
        if flushed > 0 {
            tracing::info!(flushed, "flushed debounced batches");
        }
        // Writes buffered through a Redis outage: give the replay until the deadline.
        while state.metrics.redis_buffered.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let unreplayed = state.metrics.redis_buffered.get();
        if unreplayed > 0 {
            tracing::error!(
                unreplayed,
                "writes buffered during a Redis outage could not be replayed before shutdown and are lost"
            );
        }
        // Only now that what was read is stored may another replica take the streams over.
        if let Some(leadership) = &leadership {
            for lease in &leases {
                leadership.release(lease).await;
            }
        }
        for task in background {
            task.abort();
        }
        if let Some(snapshotter) = snapshotter {
            match tokio::task::spawn_blocking(move || snapshotter.snapshot()).await {
                Ok(Ok(stats)) => tracing::info!(
                    upserted = stats.upserted,
                    removed = stats.removed,
                    "final snapshot written"
                ),
                Ok(Err(error)) => tracing::error!(%error, "final snapshot failed"),
                Err(error) => tracing::error!(%error, "final snapshot task failed"),
            }
        }
        tracing::info!("livectx stopped");
        Ok(())
    }
}

/// The storage parts the configuration asks for: the caller's store, else Redis when
/// `LIVECTX_REDIS_URL` is set (with the outage buffer and Redis leases), else memory (kept on
/// disk with `--data-dir`).
struct Storage {
    store: Arc<dyn SessionStore>,
    /// The outage buffer in front of Redis (its replay results go to the summarizer).
    buffered: Option<Arc<BufferedStore>>,
    leadership: Option<Arc<dyn Leadership>>,
    /// Set with `--data-dir` (in-memory store only).
    snapshotter: Option<Snapshotter>,
    /// The Redis connection, in Redis mode (the analytics receivers keep their dedupe keys
    /// and idle-session state there).
    redis: Option<redis_store::RedisConnection>,
}

async fn build_storage(
    config: &ServeConfig,
    store: Option<Arc<dyn SessionStore>>,
    leadership: Option<Arc<dyn Leadership>>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Storage, StartupError> {
    let url = config
        .redis_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty());
    if config.data_dir.is_some() && (store.is_some() || url.is_some()) {
        return Err(ConfigError::rule(
            "--data-dir",
            "--data-dir keeps the in-memory store on disk; with LIVECTX_REDIS_URL, Redis keeps the state",
        )
        .into());
    }
    if let Some(store) = store {
        return Ok(Storage {
            store,
            buffered: None,
            leadership,
            snapshotter: None,
            redis: None,
        });
    }
    let Some(url) = url else {
        let Some(dir) = &config.data_dir else {
            return Ok(Storage {
                store: Arc::new(MemoryStore::new(store_config(config))),
                buffered: None,
                leadership,
                snapshotter: None,
                redis: None,
            });
        };
        let memory = Arc::new(MemoryStore::with_change_tracking(store_config(config)));
        let snapshotter = Snapshotter::restore(
            Snapshots::open(dir)?,
            Arc::clone(&memory),
            Arc::clone(metrics),
            clock::now(),
        )?;
        background.push(snapshotter.spawn(config.snapshot_interval, shutdown.child_token()));
        return Ok(Storage {
            store: memory,
            buffered: None,
            leadership,
            snapshotter: Some(snapshotter),
            redis: None,
        });
    };
    let shown = crate::telemetry::redact_url(url);
    redis_store::keys::check_prefix(&config.redis_prefix)
        .map_err(|rule| ConfigError::rule("LIVECTX_REDIS_PREFIX", rule))?;
    let target = redis_store::RedisTarget::parse(url).map_err(StartupError::RedisUrl)?;
    let connection = target
        .lazy_connection(config.redis_tracking)
        .map_err(StartupError::RedisClient)?;
    let redis_store = RedisStore::new(
        connection.clone(),
        config.redis_prefix.clone(),
        store_config(config),
    )
    .with_writer_lease(config.redis_writer_lease);
    let mut probe = connection.clone();
    match redis::cmd("PING").query_async::<String>(&mut probe).await {
        Ok(_) => {
            redis_store
                .check_format()
                .await
                .map_err(|error| match error {
                    redis_store::FormatError::Store(source) => StartupError::KeyFormatUnread {
                        url: shown.clone(),
                        source,
                    },
                    mismatch => StartupError::KeyFormat(mismatch),
                })?;
            tracing::info!(redis = %shown, mode = target.mode(), prefix = %config.redis_prefix, "sessions are shared through Redis")
        }
        Err(error) if error.is_io_error() || error.is_timeout() || target.mode() == "cluster" => {
            tracing::error!(
                redis = %shown,
                %error,
                "Redis is unreachable; starting anyway: retrieval answers empty and ingestion buffers until it is back (the key format is checked at the next start)"
            )
        }
        Err(error) => {
            return Err(StartupError::RedisRefused {
                url: shown,
                source: error,
            });
        }
    }
    let buffered = Arc::new(BufferedStore::new(
        Arc::new(redis_store),
        config.redis_buffer,
        Arc::clone(metrics),
    ));
    background.push(buffered.spawn_replay());
    let receivers_connection = connection.clone();
    let leadership = leadership.or_else(|| {
        let leases = RedisLeadership::new(
            connection,
            config.redis_prefix.clone(),
            LeaseSettings {
                ttl: config.lease_ttl,
                replica_id: default_replica_id(),
            },
            shutdown.child_token(),
        );
        Some(Arc::new(leases) as Arc<dyn Leadership>)
    });
    Ok(Storage {
        store: Arc::clone(&buffered) as Arc<dyn SessionStore>,
        buffered: Some(buffered),
        leadership,
        snapshotter: None,
        redis: Some(receivers_connection),
    })
}

/// The Autoplay pull source, when `AUTOPLAY_API_KEY` and `AUTOPLAY_PRODUCT_ID` are set.
fn build_puller(
    config: &ServeConfig,
    ingestor: &Arc<Ingestor>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Option<Arc<dyn ActivityPuller>>, StartupError> {
    let Some(settings) = config
        .autoplay_api
        .settings()
        .map_err(|rule| ConfigError::rule("AUTOPLAY_API_KEY", rule))?
    else {
        return Ok(None);
    };
    if settings.budget >= config.request_timeout {
        return Err(ConfigError::rule(
            "AUTOPLAY_PULL_BUDGET",
            "AUTOPLAY_PULL_BUDGET must be shorter than LIVECTX_REQUEST_TIMEOUT",
        )
        .into());
    }
    let puller = AutoplayPuller::new(settings, Arc::clone(ingestor), Arc::clone(metrics)).map_err(
        |source| StartupError::Client {
            what: "Autoplay API client",
            source,
        },
    )?;
    tracing::info!(
        url = %crate::telemetry::redact_url(&puller.settings().base_url),
        product = %puller.settings().product_id,
        budget = ?puller.settings().budget,
        "user-id lookups read Autoplay's live-activity API first"
    );
    background.extend(puller.spawn_refresh(shutdown.child_token()));
    Ok(Some(Arc::new(puller)))
}

/// Longest group-commit window: PostHog gives up on a request after 3 s.
pub const MAX_INGEST_BATCH_WINDOW: Duration = Duration::from_secs(1);

/// The analytics receivers' settings make sense (clear errors at start, not odd behaviour).
fn check_ingest_settings(config: &ServeConfig) -> Result<(), StartupError> {
    if config.ingest_dedupe_window.is_zero() {
        return Err(ConfigError::rule(
            "LIVECTX_INGEST_DEDUPE_WINDOW",
            "LIVECTX_INGEST_DEDUPE_WINDOW must be longer than 0 (PostHog retries deliver the same event again)",
        )
        .into());
    }
    if config.ingest_dedupe_window > Duration::from_secs(7 * 24 * 3600) {
        return Err(ConfigError::rule(
            "LIVECTX_INGEST_DEDUPE_WINDOW",
            "LIVECTX_INGEST_DEDUPE_WINDOW is longer than 7 days; retries come within minutes",
        )
        .into());
    }
    if config.ingest_batch_window > MAX_INGEST_BATCH_WINDOW {
        return Err(ConfigError::rule(
            "LIVECTX_INGEST_BATCH_WINDOW",
            format!(
                "LIVECTX_INGEST_BATCH_WINDOW is {:?}; at most {:?} (each request waits for it, and PostHog gives up after 3 s)",
                config.ingest_batch_window, MAX_INGEST_BATCH_WINDOW
            ),
        )
        .into());
    }
    if config.ingest_batch_window >= config.request_timeout {
        return Err(ConfigError::rule(
            "LIVECTX_INGEST_BATCH_WINDOW",
            "LIVECTX_INGEST_BATCH_WINDOW must be shorter than LIVECTX_REQUEST_TIMEOUT",
        )
        .into());
    }
    for name in config.keep_query_params() {
        if name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "=&?#".contains(c))
        {
            return Err(ConfigError::rule(
                "LIVECTX_KEEP_QUERY_PARAMS",
                format!(
                    "LIVECTX_KEEP_QUERY_PARAMS holds {name:?}, which is not a query parameter name (list names only, comma-separated: tab,step)"
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Secrets shorter than this get a warning at start.
pub const MIN_SECRET_LEN: usize = 16;

/// A configured secret, trimmed (a trailing newline from a secrets file is not part of it).
/// Set but blank is refused: an empty HMAC key is a key everyone knows, so the webhook would
/// accept anyone's deliveries and anyone could mint signed identities.
pub fn secret_setting(
    name: &'static str,
    value: Option<&str>,
) -> Result<Option<String>, StartupError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::BlankSecret { setting: name }.into());
    }
    if trimmed.chars().count() < MIN_SECRET_LEN {
        tracing::warn!(
            setting = name,
            min_chars = MIN_SECRET_LEN,
            "a secret is short; use a long random value"
        );
    }
    Ok(Some(trimmed.to_string()))
}

/// Store bounds from the configuration.
pub fn store_config(config: &ServeConfig) -> StoreConfig {
    StoreConfig {
        max_sessions: usize::try_from(config.max_sessions).unwrap_or(usize::MAX),
        session_ttl: config.session_ttl,
        limits: SessionLimits {
            max_chunks: config.max_chunks as usize,
        },
    }
}

fn summarizer_config(config: &ServeConfig) -> Result<SummarizerConfig, StartupError> {
    let llm = match config.llm_base_url() {
        Some(base_url) => Some(LlmConfig {
            base_url,
            api_key: config
                .openai_api_key
                .as_deref()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
            model: config.llm_model.clone(),
            temperature: config.llm_temperature,
            max_tokens: config.llm_max_tokens,
            timeout: config.llm_timeout,
            prompt_template: config.prompt_template()?,
        }),
        None => None,
    };
    Ok(SummarizerConfig {
        threshold: config.summary_threshold as usize,
        concurrency: config.llm_concurrency as usize,
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(300),
        llm,
    })
}

fn spawn_debounce_sweeper(
    ingestor: Arc<Ingestor>,
    tick: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => { ingestor.flush_due(false).await; }
            }
        }
    })
}

fn spawn_expiry_sweeper(
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    ttl: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let period = (ttl / 20).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => match store.expire_idle(clock::now()).await {
                    Ok(0) => {}
                    Ok(expired) => {
                        metrics.sessions_expired.inc_by(expired as u64);
                        tracing::debug!(expired, "expired idle sessions");
                    }
                    Err(error) => {
                        metrics.store_error("expire_idle");
                        tracing::warn!(%error, "could not expire idle sessions");
                    }
                },
            }
        }
    })
}
