#!/usr/bin/env bash
# A local Redis Cluster of 3 masters and 3 replicas, for tests and benchmarks.
#
#   .ci/redis-cluster.sh start    start it (ports BASE..BASE+5), wait for cluster_state:ok,
#                                 print the LIVECTX_TEST_REDIS_CLUSTER_URL to export
#   .ci/redis-cluster.sh stop     stop the nodes this script started, delete their files
#   .ci/redis-cluster.sh status   CLUSTER INFO of the first node
#
# BASE is LIVECTX_CLUSTER_PORT_BASE (default 7000); the cluster bus uses BASE+10000.. too.
# Files (AOF, nodes.conf, logs) live in LIVECTX_CLUSTER_DIR (default $TMPDIR/livectx-cluster-BASE).
set -euo pipefail

base="${LIVECTX_CLUSTER_PORT_BASE:-7000}"
dir="${LIVECTX_CLUSTER_DIR:-${TMPDIR:-/tmp}/livectx-cluster-$base}"
ports=()
for i in 0 1 2 3 4 5; do ports+=("$((base + i))"); done

listening() {
  redis-cli -h 127.0.0.1 -p "$1" ping >/dev/null 2>&1
}

stop() {
  for port in "${ports[@]}"; do
    pidfile="$dir/$port/redis.pid"
    if [[ -f "$pidfile" ]]; then
      pid="$(cat "$pidfile")"
      # Only a redis-server this script started (its pid file), never anything else.
      if [[ -n "$pid" ]] && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
      fi
    fi
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 1 50); do
      listening "$port" || break
      sleep 0.1
    done
  done
  rm -rf "$dir"
}

start() {
  for port in "${ports[@]}"; do
    if listening "$port" || listening "$((port + 10000))"; then
      echo "port $port (or its bus port $((port + 10000))) is in use; set LIVECTX_CLUSTER_PORT_BASE" >&2
      exit 1
    fi
  done
  rm -rf "$dir"
  for port in "${ports[@]}"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
      --dir "$dir/$port" --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" \
      --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
      --cluster-node-timeout "${LIVECTX_CLUSTER_NODE_TIMEOUT_MS:-2000}" \
      --appendonly yes --appendfsync everysec --save ""
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do
      listening "$port" && break
      sleep 0.05
    done
  done
  nodes=()
  for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
    cat "$dir/create.log" >&2
    exit 1
  }
  for _ in $(seq 1 200); do
    ok=1
    for port in "${ports[@]}"; do
      redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
    done
    # Every replica has finished its first sync (a replica that never synced refuses to
    # replace its master).
    for port in "${ports[@]}"; do
      role="$(redis-cli -h 127.0.0.1 -p "$port" info replication 2>/dev/null || true)"
      if grep -q 'role:slave' <<<"$role" && ! grep -q 'master_link_status:up' <<<"$role"; then ok=0; fi
    done
    if [[ $ok == 1 ]]; then
      echo "LIVECTX_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
      return 0
    fi
    sleep 0.1
  done
  echo "the cluster did not reach cluster_state:ok (logs in $dir)" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) redis-cli -h 127.0.0.1 -p "${ports[0]}" cluster info ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
