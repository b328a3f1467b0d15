//! One connection type for one Redis and for a Redis Cluster (or Valkey cluster), so the store
//! and the leases have a single code path.
//!
//! `redis://` and `rediss://` name one server (a [`ConnectionManager`] that reconnects by
//! itself). `redis+cluster://h1:7000,h2:7001,h3:7002` (and `rediss+cluster://` for TLS, with the
//! password in the URL as for one server) names a cluster by its seed nodes: the async cluster
//! client learns the slot map from them, follows `MOVED` and `ASK` redirects, refreshes the map
//! when a replica takes over a failed master, and retries meanwhile.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, ProtocolVersion,
    RedisError, RedisFuture, ServerErrorKind, Value,
};

use super::tracking::TrackedConnection;

use crate::session::store::{Corrupt, StoreError, Unavailable};

/// How long one Redis command may take. Larger than the client's 500 ms default, which a busy
/// server or a big session can exceed, yet short enough that an outage is noticed quickly.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Reconnection attempts per command on one server. Few, so that during an outage callers fail
/// fast (and ingestion buffers) instead of waiting through a long backoff.
pub const CONNECT_RETRIES: usize = 1;

/// Attempts per command on a cluster. A failover (a replica promoted after a master stops
/// answering) takes the cluster's node timeout plus an election; the client refreshes its slot
/// map and retries with backoff in between. Past these, the write fails as unavailable and the
/// outage buffer carries it.
pub const CLUSTER_RETRIES: u32 = 6;

/// The URL schemes of a cluster.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

/// Where Redis is: one server or the seed nodes of a cluster (each a `redis://` URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

/// Why a Redis URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("a cluster URL names no seed node (expected redis+cluster://host:port,host:port)")]
    NoSeedNodes,
    #[error("seed node {0:?} has no port (expected host:port)")]
    NoPort(String),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

impl RedisTarget {
    /// Parse `LIVECTX_REDIS_URL`. A cluster URL's credentials (and database path, if any) apply
    /// to every seed node.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let Some((rest, scheme)) = CLUSTER_SCHEMES
            .iter()
            .find_map(|(cluster, single)| url.strip_prefix(cluster).map(|rest| (rest, *single)))
        else {
            redis::Client::open(url)?;
            return Ok(Self::Single(url.to_string()));
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, format!("/{path}")),
            None => (rest, String::new()),
        };
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), authority),
        };
        let mut nodes = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let has_port = host
                .rsplit_once(':')
                .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
            if !has_port {
                return Err(UrlError::NoPort(host.to_string()));
            }
            let node = format!("{scheme}{credentials}{host}{path}");
            redis::Client::open(node.as_str())?;
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err(UrlError::NoSeedNodes);
        }
        Ok(Self::Cluster(nodes))
    }

    /// `single` or `cluster`, for logs and `/readyz`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Single(_) => "single",
            Self::Cluster(_) => "cluster",
        }
    }

    /// A connection that connects on first use and reconnects by itself, so a replica can
    /// start (and answer empty) while Redis is down. On one server it also carries a tracked
    /// connection (RESP3, `CLIENT TRACKING`) for the read cache, unless `tracking` is false
    /// (see [`super::tracking`]); a cluster never does.
    pub fn lazy_connection(&self, tracking: bool) -> Result<RedisConnection, RedisError> {
        match self {
            Self::Single(url) => {
                let (client, tracked, config) = single_server(url, tracking)?;
                ConnectionManager::new_lazy_with_config(client, config)
                    .map(|manager| RedisConnection::Single(manager, tracked))
            }
            Self::Cluster(nodes) => Ok(RedisConnection::Cluster(
                cluster_builder(nodes)
                    .build()?
                    .get_pending_async_connection_with_config(cluster_config()),
            )),
        }
    }

    /// Connect now (tests and tools), with tracking on one server: fails when Redis cannot
    /// be reached.
    pub async fn connect(&self) -> Result<RedisConnection, RedisError> {
        match self {
            Self::Single(url) => {
                let (client, tracked, config) = single_server(url, true)?;
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map(|manager| RedisConnection::Single(manager, tracked))
            }
            Self::Cluster(nodes) => cluster_builder(nodes)
                .build()?
                .get_async_connection_with_config(cluster_config())
                .await
                .map(RedisConnection::Cluster),
        }
    }
}

/// The client and settings of one server, and its tracked connection (with `tracking`).
fn single_server(
    url: &str,
    tracking: bool,
) -> Result<
    (
        redis::Client,
        Option<Arc<TrackedConnection>>,
        ConnectionManagerConfig,
    ),
    RedisError,
> {
    let client = redis::Client::open(url)?;
    if !tracking {
        return Ok((client, None, manager_config()));
    }
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let tracked_client = redis::Client::open(info.set_redis_settings(settings))?;
    let tracked = TrackedConnection::new(
        tracked_client,
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT)),
    );
    Ok((client, Some(Arc::new(tracked)), manager_config()))
}

/// The settings of a one-server connection (see the constants above).
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(CONNECT_RETRIES)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

fn cluster_builder(nodes: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(100)
        .max_retry_wait(1000)
}

fn cluster_config() -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

/// Connect now to `url` (one server or a cluster).
pub async fn connect(url: &str) -> Result<RedisConnection, StoreError> {
    RedisTarget::parse(url)
        .map_err(|e| StoreError::Unavailable(Unavailable::Other(Box::new(e))))?
        .connect()
        .await
        .map_err(store_error)
}

/// A connection to one Redis or to a cluster; cheap to clone (both multiplex one set of
/// sockets), and usable wherever the `redis` crate takes an async connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server, with its tracked connection when tracking is on.
    Single(ConnectionManager, Option<Arc<TrackedConnection>>),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// The tracked connection (`CLIENT TRACKING`), on one server with tracking on.
    pub fn tracked(&self) -> Option<&Arc<TrackedConnection>> {
        match self {
            Self::Single(_, tracked) => tracked.as_ref(),
            Self::Cluster(_) => None,
        }
    }

    /// `single` or `cluster`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Single(..) => "single",
            Self::Cluster(_) => "cluster",
        }
    }

    /// The cluster's own view of its health (`CLUSTER INFO` of some node): `None` on one
    /// server.
    pub async fn cluster_info(&self) -> Result<Option<ClusterInfo>, RedisError> {
        let Self::Cluster(connection) = self else {
            return Ok(None);
        };
        let mut connection = connection.clone();
        let reply = connection
            .route_command(
                redis::cmd("CLUSTER").arg("INFO").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let text: String = redis::from_redis_value(reply)?;
        Ok(Some(ClusterInfo::parse(&text)))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection, _) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection, _) => connection.req_packed_commands(cmd, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection, _) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The fields of `CLUSTER INFO` an operator needs first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterInfo {
    /// `ok` when every slot is served; `fail` otherwise (a master down and not yet replaced).
    pub state: String,
    pub slots_ok: u64,
    pub slots_fail: u64,
    pub known_nodes: u64,
    /// Masters serving slots.
    pub size: u64,
}

impl ClusterInfo {
    fn parse(text: &str) -> Self {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let number = |name: &str| field(name).parse::<u64>().unwrap_or(0);
        Self {
            state: field("cluster_state"),
            slots_ok: number("cluster_slots_ok"),
            slots_fail: number("cluster_slots_fail"),
            known_nodes: number("cluster_known_nodes"),
            size: number("cluster_size"),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.state == "ok"
    }
}

/// Map a Redis error to the store's two failure kinds: what may pass (connection, timeout,
/// loading after a restart, failover, memory full, cluster down) is `Unavailable`; what will not
/// (a reply that cannot be decoded, a key of the wrong type, a script error) is `Corrupt`.
pub fn store_error(error: RedisError) -> StoreError {
    let permanent = match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => true,
        ErrorKind::Server(ServerErrorKind::CrossSlot) => true,
        ErrorKind::Extension => error.code() == Some("WRONGTYPE"),
        _ => false,
    };
    if permanent {
        StoreError::Corrupt(Corrupt::Redis(error))
    } else {
        StoreError::Unavailable(Unavailable::Redis(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_name_one_server() {
        assert_eq!(
            RedisTarget::parse("redis://:pw@127.0.0.1:6379/0").unwrap(),
            RedisTarget::Single("redis://:pw@127.0.0.1:6379/0".into())
        );
    }

    #[test]
    fn cluster_urls_name_every_seed_node_with_the_credentials() {
        let target =
            RedisTarget::parse("redis+cluster://:s3cret@h1:7000,h2:7001, h3:7002").unwrap();
        assert_eq!(
            target,
            RedisTarget::Cluster(vec![
                "redis://:s3cret@h1:7000".into(),
                "redis://:s3cret@h2:7001".into(),
                "redis://:s3cret@h3:7002".into(),
            ])
        );
        assert_eq!(target.mode(), "cluster");
        let tls = RedisTarget::parse("rediss+cluster://user:pw@h1:7000").unwrap();
        assert_eq!(
            tls,
            RedisTarget::Cluster(vec!["rediss://user:pw@h1:7000".into()])
        );
    }

    #[test]
    fn bad_cluster_urls_say_what_is_wrong() {
        assert!(matches!(
            RedisTarget::parse("redis+cluster://"),
            Err(UrlError::NoSeedNodes)
        ));
        assert!(matches!(
            RedisTarget::parse("redis+cluster://h1:7000,h2"),
            Err(UrlError::NoPort(host)) if host == "h2"
        ));
        assert!(RedisTarget::parse("http://nope").is_err());
    }

    #[test]
    fn cluster_info_reads_the_state() {
        let info = ClusterInfo::parse(
            "cluster_state:fail\r\ncluster_slots_ok:10923\r\ncluster_slots_fail:5461\r\ncluster_known_nodes:6\r\ncluster_size:3\r\n",
        );
        assert!(!info.is_ok());
        assert_eq!(
            (info.slots_ok, info.slots_fail, info.size),
            (10923, 5461, 3)
        );
    }

    #[test]
    fn errors_that_may_pass_are_unavailable() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(matches!(store_error(io), StoreError::Unavailable(_)));
        let parse = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(matches!(store_error(parse), StoreError::Corrupt(_)));
    }
}
