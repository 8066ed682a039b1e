#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, and nothing
# when it is already there: ClickHouse server/client, ZooKeeper (for the
# local cluster), the real Python clients (Confluent's registry
# client, Segment's SDK) used by the compatibility tests, and chDB (a current
# ClickHouse release in-process) for the migrations and queries beside 18.16.
set -euo pipefail

need_apt=()
# Nothing here is needed to build leadstream: librdkafka is built by its own
# configure script (no cmake, no curl), with the OpenSSL and zlib headers a
# Rust build machine has. deploy/test.sh builds before it calls this script,
# so a build that starts needing a package fails CI.
command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || need_apt+=(clickhouse-server)
command -v clickhouse-client >/dev/null || need_apt+=(clickhouse-client)
# The cluster tests' ZooKeeper (Java is part of the machine image).
[ -f /usr/share/java/zookeeper.jar ] || need_apt+=(zookeeper)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import confluent_kafka.schema_registry.avro, fastavro, segment.analytics' >/dev/null 2>&1; then
  echo "installing confluent-kafka and segment-analytics-python for the client compatibility tests"
  python3 -m pip install -q 'confluent-kafka[avro,schemaregistry]' segment-analytics-python
fi

if ! python3 -c 'import chdb' >/dev/null 2>&1; then
  echo "installing chdb (current ClickHouse, in-process) for the migration and query compatibility test"
  python3 -m pip install -q 'chdb>=4.4,<5'
fi
