//! What a benchmark run cost each Redis master: commands executed (`INFO commandstats`), CPU
//! (`INFO cpu`) and the keys the run left under its prefix, per master, for one Redis or a
//! cluster. Measured before and after a run and subtracted, so the figures are the run's own
//! (plus whatever else used those servers meanwhile: the shared test Redis is shared).

use std::time::Duration;

use redis::Value;
use serde::Serialize;
use serde_json::json;

use crate::session::redis::RedisTarget;

/// One master's counters at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCounters {
    pub address: String,
    /// Commands executed since the server started (sum of `calls` over commandstats).
    pub commands: u64,
    /// Server CPU seconds (user + system) since it started.
    pub cpu_secs: f64,
}

/// The masters of one Redis or cluster.
pub struct RedisNodes {
    masters: Vec<String>,
}

impl RedisNodes {
    /// The masters behind `url` (one server, or a cluster's masters from `CLUSTER NODES`).
    pub async fn discover(url: &str) -> anyhow::Result<Self> {
        let target = RedisTarget::parse(url)?;
        let masters = match target {
            RedisTarget::Single(url) => vec![url],
            RedisTarget::Cluster(seeds) => {
                let seed = seeds
                    .first()
                    .ok_or_else(|| anyhow::anyhow!("no seed node"))?;
                let text: String = query(seed, redis::cmd("CLUSTER").arg("NODES")).await?;
                let scheme_and_credentials = seed
                    .rsplit_once('@')
                    .map(|(front, _)| format!("{front}@"))
                    .unwrap_or_else(|| {
                        seed.split_once("://")
                            .map(|(scheme, _)| format!("{scheme}://"))
                            .unwrap_or_default()
                    });
                let mut masters: Vec<String> = text
                    .lines()
                    .filter_map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        let flags = fields.get(2)?;
                        (flags.contains("master") && !flags.contains("fail")).then_some(())?;
                        let address = fields.get(1)?.split('@').next()?;
                        Some(format!("{scheme_and_credentials}{address}"))
                    })
                    .collect();
                masters.sort();
                masters
            }
        };
        Ok(Self { masters })
    }

    pub fn masters(&self) -> usize {
        self.masters.len()
    }

    /// Every master's counters now.
    pub async fn counters(&self) -> anyhow::Result<Vec<NodeCounters>> {
        let mut all = Vec::new();
        for url in &self.masters {
            let stats: String = query(url, redis::cmd("INFO").arg("commandstats")).await?;
            let cpu: String = query(url, redis::cmd("INFO").arg("cpu")).await?;
            all.push(NodeCounters {
                address: shown(url),
                commands: commands_in(&stats),
                cpu_secs: field(&cpu, "used_cpu_user") + field(&cpu, "used_cpu_sys"),
            });
        }
        Ok(all)
    }

    /// Keys under `prefix` on each master (SCAN, never KEYS).
    pub async fn keys_under(&self, prefix: &str) -> anyhow::Result<Vec<u64>> {
        let pattern = format!("{prefix}*");
        let mut counts = Vec::new();
        for url in &self.masters {
            let mut connection = connect(url).await?;
            let mut cursor: u64 = 0;
            let mut count = 0u64;
            loop {
                let (next, keys): (u64, Vec<Value>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await?;
                count += keys.len() as u64;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            counts.push(count);
        }
        Ok(counts)
    }

    /// Delete every key under `prefix` on each master (SCAN + UNLINK). Returns how many.
    pub async fn delete_under(&self, prefix: &str) -> anyhow::Result<u64> {
        let pattern = format!("{prefix}*");
        let mut removed = 0u64;
        for url in &self.masters {
            let mut connection = connect(url).await?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await?;
                // One key per UNLINK: keys of different slots cannot share a command on a
                // cluster node.
                for key in keys {
                    let n: u64 = redis::cmd("UNLINK")
                        .arg(key)
                        .query_async(&mut connection)
                        .await?;
                    removed += n;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }
}

/// The per-master cost of a run: counters before and after, keys left, and `events` (what the
/// run did, to divide by).
pub fn report(
    before: &[NodeCounters],
    after: &[NodeCounters],
    keys: &[u64],
    events: u64,
) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = before
        .iter()
        .zip(after)
        .zip(keys)
        .map(|((b, a), keys)| {
            let commands = a.commands.saturating_sub(b.commands);
            let cpu = (a.cpu_secs - b.cpu_secs).max(0.0);
            json!({
                "node": a.address,
                "commands": commands,
                "commands_per_event": super::round(commands as f64 / events.max(1) as f64, 2),
                "cpu_secs": super::round(cpu, 3),
                "cpu_us_per_event": super::round(cpu * 1e6 / events.max(1) as f64, 2),
                "keys": keys,
            })
        })
        .collect();
    json!(nodes)
}

/// Rows for a per-master table: node, commands, commands/event, Redis CPU µs/event, keys.
pub fn rows(backend: &str, report: &serde_json::Value) -> Vec<Vec<String>> {
    report
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    vec![
                        backend.to_string(),
                        n["node"].as_str().unwrap_or("").to_string(),
                        super::int(n["commands"].as_u64().unwrap_or(0)),
                        format!("{:.2}", n["commands_per_event"].as_f64().unwrap_or(0.0)),
                        format!("{:.1}", n["cpu_us_per_event"].as_f64().unwrap_or(0.0)),
                        super::int(n["keys"].as_u64().unwrap_or(0)),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The headers of [`rows`].
pub const HEADERS: [&str; 6] = [
    "backend",
    "master",
    "commands",
    "commands / event",
    "Redis CPU µs / event",
    "keys",
];

async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    Ok(tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await??)
}

async fn query<T: redis::FromRedisValue>(url: &str, cmd: &mut redis::Cmd) -> anyhow::Result<T> {
    let mut connection = connect(url).await?;
    Ok(cmd.query_async(&mut connection).await?)
}

/// `host:port` of a node URL (no credentials).
fn shown(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.rsplit_once('@')
        .map_or(rest, |(_, host)| host)
        .to_string()
}

fn commands_in(commandstats: &str) -> u64 {
    commandstats
        .lines()
        .filter(|line| line.starts_with("cmdstat_"))
        .filter_map(|line| {
            line.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn field(info: &str, name: &str) -> f64 {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_commands_and_reads_cpu() {
        let stats = "# Commandstats\r\ncmdstat_evalsha:calls=120,usec=900,usec_per_call=7.5\r\ncmdstat_hmget:calls=30,usec=30\r\n";
        assert_eq!(commands_in(stats), 150);
        assert_eq!(
            field("used_cpu_user:1.5\r\nused_cpu_sys:0.25\r\n", "used_cpu_sys"),
            0.25
        );
        assert_eq!(shown("redis://:pw@127.0.0.1:7000"), "127.0.0.1:7000");
    }
}
