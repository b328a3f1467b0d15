//! Redis helpers: the test Redis from `LIVECTX_TEST_REDIS_URL` with a key prefix per test
//! (deleted afterwards, never FLUSHALL), and private `redis-server` processes for tests that
//! must stop and restart Redis.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use livectx::session::redis::connect;
use redis::aio::ConnectionManager;

/// The shared test Redis, or `None` (after printing why the test is skipped).
pub fn test_redis_url(test: &str) -> Option<String> {
    match std::env::var("LIVECTX_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            eprintln!("skipped {test}: LIVECTX_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// A unique key prefix on the test Redis; its keys are deleted when dropped.
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
    pub async fn connect(&self) -> ConnectionManager {
        connect(&self.url).await.expect("test Redis reachable")
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // Synchronous on purpose: runs even when the test panicked.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut connection) {
            Ok(keys) => keys,
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: Result<i64, _> = redis::cmd("UNLINK").arg(chunk).query(&mut connection);
        }
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
