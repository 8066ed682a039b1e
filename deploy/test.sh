#!/usr/bin/env bash
# The full test suite, from a fresh clone: install what is missing, build
# once, start a real broker and ClickHouse on 127.0.0.1 (unless
# LEADSTREAM_TEST_KAFKA / LEADSTREAM_TEST_CLICKHOUSE name running ones),
# run every test in one cargo invocation, stop the services.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build first, before anything is installed: command 1 of the README
# (`cargo run --release -- quickstart`) must build on a fresh machine with
# nothing installed by hand, and this proves the build needs nothing that
# install-test-deps.sh adds.
cargo build --workspace --all-targets --locked
bash deploy/scripts/install-test-deps.sh

if [ -z "${LEADSTREAM_TEST_KAFKA:-}" ] || [ -z "${LEADSTREAM_TEST_CLICKHOUSE:-}" ]; then
  trap 'bash deploy/scripts/services.sh stop' EXIT
  exports=$(bash deploy/scripts/services.sh start "${CARGO_TARGET_DIR:-target}/debug/leadstream")
  eval "$exports"
  export LEADSTREAM_TEST_KAFKA LEADSTREAM_TEST_CLICKHOUSE
fi
echo "testing against Kafka at $LEADSTREAM_TEST_KAFKA and ClickHouse at $LEADSTREAM_TEST_CLICKHOUSE"

# --no-fail-fast: one run reports every failing test binary, not just the first.
cargo test --workspace --all-targets --locked --no-fail-fast
