#!/usr/bin/env bash
# Starts (or stops) a local ClickHouse 18.16 cluster for the cluster tests,
# on 127.0.0.1 with throw-away data under $LEADSTREAM_SERVICES_DIR/cluster
# (default target/test-services/cluster):
#   - ZooKeeper from Debian's zookeeper package (replication and ON CLUSTER
#     DDL need it);
#   - four clickhouse-server processes: cluster `leadstream` of two shards
#     with two replicas each.
# `start` prints the environment variables the cluster tests read.
#
#   deploy/scripts/cluster.sh start
#   deploy/scripts/cluster.sh stop
#   deploy/scripts/cluster.sh kill-replica N      (kill -9 server N, 0-3)
#   deploy/scripts/cluster.sh start-replica N     (start it again on its data)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${LEADSTREAM_SERVICES_DIR:-$root/target/test-services}/cluster
base=${LEADSTREAM_TEST_CLUSTER_PORT:-18200}
zk_port=$((base + 81))
cluster=leadstream
servers=4

services="$root/deploy/scripts/services.sh"

http_port() { echo $((base + 10 * $1)); }
tcp_port() { echo $((base + 10 * $1 + 1)); }
shard_of() { echo $(($1 / 2 + 1)); }
replica_of() { echo "r$(($1 % 2 + 1))"; }

# shellcheck source=deploy/scripts/common.sh
source "$root/deploy/scripts/common.sh"

zk_ok() { [ "$(exec 3<>"/dev/tcp/127.0.0.1/$zk_port"; echo ruok >&3; cat <&3)" = imok ]; }

start_zookeeper() {
  local d=$dir/zookeeper
  mkdir -p "$d/data"
  cat > "$d/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok
CFG
  java -Xmx256m -cp "/usr/share/java/*:/usr/share/zookeeper/lib/*:/etc/zookeeper/conf" \
    -Dzookeeper.log.dir="$d" org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg" \
    >"$dir/zookeeper.log" 2>&1 &
  echo $! > "$dir/zookeeper.pid"
  wait_for ZooKeeper 150 zk_ok
}

# The cluster's sections, replacing the packaged placeholders (which would
# otherwise win: the first element of a name counts).
cluster_sections() { # server index
  local i=$1 shards=""
  for s in 1 2; do
    shards+="<shard><internal_replication>true</internal_replication>"
    for r in 0 1; do
      shards+="<replica><host>127.0.0.1</host><port>$(tcp_port $(( (s - 1) * 2 + r )))</port></replica>"
    done
    shards+="</shard>"
  done
  echo "<remote_servers><$cluster>$shards</$cluster></remote_servers>"
  echo "<zookeeper><node><host>127.0.0.1</host><port>$zk_port</port></node></zookeeper>"
  echo "<macros><shard>$(shard_of "$i")</shard><replica>$(replica_of "$i")</replica></macros>"
  echo "<distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
}

write_config() { # server index
  local i=$1 d=$dir/ch$1
  mkdir -p "$d"
  bash "$services" clickhouse-config "$d" "$(http_port "$i")" "$(tcp_port "$i")" $((base + 10 * i + 2)) >/dev/null
  local sections
  sections=$(cluster_sections "$i" | tr -d '\n')
  # Drop the placeholders (remote_servers spans lines) and the packaged
  # distributed_ddl, then add ours before the end.
  sed -i -e '/<remote_servers incl=/,/<\/remote_servers>/d' \
         -e '/<zookeeper incl=/d' -e '/<macros incl=/d' \
         -e '/<distributed_ddl>/,/<\/distributed_ddl>/d' \
         -e "s#</yandex>#$sections</yandex>#" "$d/config.xml"
}

start_server() { start_clickhouse_in "$dir/ch$1" "$dir/ch$1.pid"; } # server index

wait_server() { wait_for "ClickHouse $1" 300 curl -sf "http://127.0.0.1:$(http_port "$1")/?query=SELECT%201"; }

kill_server() { # index, signal
  pkill "-$2" -f "clickhouse-server --config-file=$dir/ch$1/config.xml" 2>/dev/null || true
  rm -f "$dir/ch$1.pid"
}

stop_all() {
  for i in $(seq 0 $((servers - 1))); do kill_server "$i" TERM; done
  if [ -f "$dir/zookeeper.pid" ]; then
    kill "$(cat "$dir/zookeeper.pid")" 2>/dev/null || true
    rm -f "$dir/zookeeper.pid"
  fi
  pkill -f "QuorumPeerMain $dir/zookeeper/zoo.cfg" 2>/dev/null || true
  # Gone before this returns (ports free, data removable); -9 after 15 s.
  for _ in $(seq 75); do
    pgrep -f "$dir/" >/dev/null || return 0
    sleep 0.2
  done
  pkill -9 -f "$dir/" 2>/dev/null || true
}

case "${1:-}" in
  start)
    command -v java >/dev/null && [ -f /usr/share/java/zookeeper.jar ] \
      || { echo "ZooKeeper is not installed; run deploy/scripts/install-test-deps.sh" >&2; exit 1; }
    [ -x /usr/sbin/clickhouse-server ] \
      || { echo "clickhouse-server is not installed; run deploy/scripts/install-test-deps.sh" >&2; exit 1; }
    stop_all
    rm -rf "$dir"
    mkdir -p "$dir"
    start_zookeeper
    for i in $(seq 0 $((servers - 1))); do write_config "$i"; start_server "$i"; done
    for i in $(seq 0 $((servers - 1))); do wait_server "$i"; done
    urls=""
    for i in $(seq 0 $((servers - 1))); do urls+="${urls:+,}http://127.0.0.1:$(http_port "$i")"; done
    echo "export LEADSTREAM_TEST_CLUSTER=$cluster"
    echo "export LEADSTREAM_TEST_CLUSTER_URLS=$urls"
    ;;
  stop)
    stop_all
    rm -rf "$dir"
    ;;
  kill-replica)
    kill_server "$2" KILL
    ;;
  start-replica)
    start_server "$2"
    wait_server "$2"
    ;;
  *)
    echo "usage: $0 start | stop | kill-replica N | start-replica N" >&2
    exit 2
    ;;
esac
