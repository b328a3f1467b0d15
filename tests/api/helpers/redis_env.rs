//! Redis helpers: the test Redis from `LIVECTX_TEST_REDIS_URL` with a key prefix per test
//! (deleted afterwards, never FLUSHALL), and private `redis-server` processes for tests that
//! must stop and restart Redis.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use livectx::session::redis::{RedisConnection, RedisTarget, connect};

/// Say that `test` was skipped, and why, in the output of `cargo test` itself: straight to the
/// process's stderr, which the test harness does not capture (it captures only `eprintln!`),
/// so a passing-because-skipped test is visible even when it passes.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
}

/// The shared test Redis, or `None` (after printing why the test is skipped).
pub fn test_redis_url(test: &str) -> Option<String> {
    match std::env::var("LIVECTX_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            skipped(test, "LIVECTX_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// The test Redis Cluster (`LIVECTX_TEST_REDIS_CLUSTER_URL`, a `redis+cluster://` URL; `.ci/run`
/// starts one with `.ci/redis-cluster.sh`), or `None` (after printing why the test is skipped).
pub fn test_redis_cluster_url(test: &str) -> Option<String> {
    match std::env::var("LIVECTX_TEST_REDIS_CLUSTER_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            skipped(
                &format!("{test} on a Redis Cluster"),
                "LIVECTX_TEST_REDIS_CLUSTER_URL is not set (.ci/redis-cluster.sh start)",
            );
            None
        }
    }
}

/// A unique key prefix on the test Redis (one server or a cluster); its keys are deleted when dropped.
pub struct RedisPrefix {
    pub url: String,
    pub prefix: String,
}

impl RedisPrefix {
    pub fn new(url: &str, test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self {
            url: url.to_string(),
            prefix: format!(
                "livectx-test:{test}:{nanos:x}{:04x}:",
                rand::random::<u16>()
            ),
        }
    }

    /// A connection manager to the test Redis.
    pub async fn connect(&self) -> RedisConnection {
        connect(&self.url).await.expect("test Redis reachable")
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // Synchronous on purpose: runs even when the test panicked.
        let pattern = format!("{}*", self.prefix);
        if let Ok(RedisTarget::Cluster(nodes)) = RedisTarget::parse(&self.url) {
            delete_on_cluster(nodes, &pattern);
            return;
        }
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut connection) {
            Ok(keys) => keys,
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: Result<i64, _> = redis::cmd("UNLINK").arg(chunk).query(&mut connection);
        }
    }
}

/// Delete the keys matching `pattern` on every master of a cluster (KEYS goes to each master,
/// UNLINK is split by slot by the cluster client).
fn delete_on_cluster(nodes: Vec<String>, pattern: &str) {
    let Ok(client) = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    let Ok(mut connection) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = match redis::cmd("KEYS").arg(pattern).query(&mut connection) {
        Ok(keys) => keys,
        Err(_) => return,
    };
    for key in keys {
        let _: Result<i64, _> = redis::cmd("UNLINK").arg(&key).query(&mut connection);
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `redis-server` child process, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Start on a free port. `persistent`: append-only file with fsync on every write (in a
    /// private directory), so a killed server comes back with its data; otherwise no
    /// persistence at all (it comes back empty).
    pub fn start(persistent: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "livectx-redis-{port}-{:08x}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--dir".into(),
            dir.display().to_string(),
        ];
        if persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        let mut server = Self {
            port,
            dir,
            args,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start (again) on the same port and wait until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is on PATH");
        self.child = Some(child);
        wait_for_ping(&self.url(), &self.dir);
    }
}

fn wait_for_ping(url: &str, dir: &Path) {
    let client = redis::Client::open(url).unwrap();
    for _ in 0..250 {
        if let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_millis(200))
            && redis::cmd("PING").query::<String>(&mut connection).is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not start (dir {})", dir.display());
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Redis Cluster of 3 masters and 3 replicas on free ports, started with
/// `.ci/redis-cluster.sh` (the script developers and CI use) and stopped when dropped: for
/// tests that kill nodes.
pub struct PrivateCluster {
    pub base: u16,
    dir: PathBuf,
}

impl PrivateCluster {
    pub fn start(node_timeout_ms: u64) -> Self {
        let base = free_port_block();
        let dir = std::env::temp_dir().join(format!(
            "livectx-private-cluster-{base}-{:08x}",
            rand::random::<u32>()
        ));
        let cluster = Self { base, dir };
        let output = cluster
            .script("start")
            .env(
                "LIVECTX_CLUSTER_NODE_TIMEOUT_MS",
                node_timeout_ms.to_string(),
            )
            .output()
            .expect("bash runs .ci/redis-cluster.sh");
        assert!(
            output.status.success(),
            "the private cluster did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        cluster
    }

    fn script(&self, action: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/redis-cluster.sh"))
            .arg(action)
            .env("LIVECTX_CLUSTER_PORT_BASE", self.base.to_string())
            .env("LIVECTX_CLUSTER_DIR", &self.dir);
        command
    }

    pub fn url(&self) -> String {
        let seeds: Vec<String> = (0..3)
            .map(|i| format!("127.0.0.1:{}", self.base + i))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `CLUSTER NODES` as seen by the node on `port`: (port, flags, master id, node id).
    pub fn nodes(&self, port: u16) -> Vec<ClusterNode> {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
            return Vec::new();
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_millis(500))
        else {
            return Vec::new();
        };
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut connection)
            .unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let address = fields.get(1)?.split('@').next()?;
                Some(ClusterNode {
                    id: fields.first()?.to_string(),
                    port: address.rsplit(':').next()?.parse().ok()?,
                    master: fields.get(2)?.contains("master"),
                    master_id: fields.get(3)?.to_string(),
                    slots: fields.get(8..).map(|s| s.join(" ")).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Kill the node on `port` abruptly (SIGKILL), as a crash would.
    pub fn kill(&self, port: u16) {
        let pid = std::fs::read_to_string(self.dir.join(port.to_string()).join("redis.pid"))
            .expect("the node's pid file");
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id for a replica (`-` for a master).
    pub master_id: String,
    pub slots: String,
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.script("stop").output();
    }
}

/// The first of six consecutive free ports whose cluster bus ports (+10000) are free too.
fn free_port_block() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (rand::random::<u16>() % 4_000) * 2;
        let free = (0..6).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + i + 10_000)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no block of free ports for a private cluster");
}
