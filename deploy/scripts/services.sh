#!/usr/bin/env bash
# Starts (or stops) the services the integration tests use, on 127.0.0.1
# with throw-away data under $LEADSTREAM_SERVICES_DIR (default
# target/test-services):
#   - ClickHouse from Debian's clickhouse-server package
#   - the dev Kafka-protocol broker: `leadstream broker` (Tansu, embedded)
# `start` prints the environment variables the tests read; `stop` kills
# both and removes the data.
#
#   deploy/scripts/services.sh start [path/to/leadstream]
#   deploy/scripts/services.sh stop
#   deploy/scripts/services.sh clickhouse-config DIR HTTP_PORT TCP_PORT INTERSERVER_PORT
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${LEADSTREAM_SERVICES_DIR:-$root/target/test-services}
ch_http=${LEADSTREAM_TEST_CH_PORT:-18123}
ch_tcp=$((ch_http + 1))
kafka_port=${LEADSTREAM_TEST_KAFKA_PORT:-19092}

# shellcheck source=deploy/scripts/common.sh
source "$root/deploy/scripts/common.sh"

# Writes a ClickHouse config under DIR listening on 127.0.0.1 at the given
# ports, every path inside DIR. Also used by tests that stop and restart a
# server of their own.
clickhouse_config() { # dir, http port, tcp port, interserver port
  local d=$1 http=$2 tcp=$3 inter=$4
  mkdir -p "$d/data" "$d/tmp" "$d/log" "$d/user_files" "$d/format_schemas"
  cp /etc/clickhouse-server/users.xml "$d/users.xml"
  sed -e "s#<path>/var/lib/clickhouse/</path>#<path>$d/data/</path>#" \
      -e "s#<tmp_path>.*</tmp_path>#<tmp_path>$d/tmp/</tmp_path>#" \
      -e "s#<user_files_path>.*</user_files_path>#<user_files_path>$d/user_files/</user_files_path>#" \
      -e "s#<format_schema_path>.*</format_schema_path>#<format_schema_path>$d/format_schemas/</format_schema_path>#" \
      -e "s#<log>.*</log>#<log>$d/log/server.log</log>#" \
      -e "s#<errorlog>.*</errorlog>#<errorlog>$d/log/error.log</errorlog>#" \
      -e "s#<http_port>.*</http_port>#<http_port>$http</http_port>#" \
      -e "s#<tcp_port>.*</tcp_port>#<tcp_port>$tcp</tcp_port>#" \
      -e "s#<interserver_http_port>.*</interserver_http_port>#<interserver_http_port>$inter</interserver_http_port>#" \
      -e "s#<users_config>.*</users_config>#<users_config>$d/users.xml</users_config>#" \
      -e "/<listen_host>/d" \
      -e "s#</yandex>#<listen_host>127.0.0.1</listen_host></yandex>#" \
      /etc/clickhouse-server/config.xml > "$d/config.xml"
}

start_clickhouse() {
  local d=$dir/clickhouse
  rm -rf "$d"
  clickhouse_config "$d" "$ch_http" "$ch_tcp" "$((ch_http + 2))"
  start_clickhouse_in "$d" "$dir/clickhouse.pid"
  wait_for ClickHouse 150 curl -sf "http://127.0.0.1:$ch_http/?query=SELECT%201"
}

start_broker() {
  local bin=$1
  "$bin" broker --listen "127.0.0.1:$kafka_port" >"$dir/broker.log" 2>&1 &
  echo $! > "$dir/broker.pid"
  wait_for broker 150 port_open "$kafka_port"
}

stop_all() {
  for svc in broker clickhouse; do
    if [ -f "$dir/$svc.pid" ]; then
      kill "$(cat "$dir/$svc.pid")" 2>/dev/null || true
      rm -f "$dir/$svc.pid"
    fi
  done
  # runuser leaves the server as a child process: make sure it is gone.
  pkill -f "clickhouse-server --config-file=$dir/clickhouse/config.xml" 2>/dev/null || true
}

case "${1:-}" in
  start)
    bin=${2:-$root/target/debug/leadstream}
    [ -x "$bin" ] || { echo "no leadstream binary at $bin; run cargo build first" >&2; exit 1; }
    command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] \
      || { echo "clickhouse-server is not installed; run deploy/scripts/install-test-deps.sh" >&2; exit 1; }
    stop_all
    mkdir -p "$dir"
    port_open "$ch_http" && { echo "port $ch_http is taken; set LEADSTREAM_TEST_CH_PORT" >&2; exit 1; }
    port_open "$kafka_port" && { echo "port $kafka_port is taken; set LEADSTREAM_TEST_KAFKA_PORT" >&2; exit 1; }
    start_clickhouse
    start_broker "$bin"
    echo "export LEADSTREAM_TEST_CLICKHOUSE=http://127.0.0.1:$ch_http"
    echo "export LEADSTREAM_TEST_KAFKA=127.0.0.1:$kafka_port"
    ;;
  stop)
    stop_all
    rm -rf "$dir/clickhouse"
    ;;
  clickhouse-config)
    [ $# -eq 5 ] || { echo "usage: $0 clickhouse-config DIR HTTP_PORT TCP_PORT INTERSERVER_PORT" >&2; exit 2; }
    [ -f /etc/clickhouse-server/config.xml ] \
      || { echo "clickhouse-server is not installed; run deploy/scripts/install-test-deps.sh" >&2; exit 1; }
    clickhouse_config "$2" "$3" "$4" "$5"
    echo "$2/config.xml"
    ;;
  *)
    echo "usage: $0 start [leadstream-binary] | stop | clickhouse-config DIR HTTP_PORT TCP_PORT INTERSERVER_PORT" >&2
    exit 2
    ;;
esac
