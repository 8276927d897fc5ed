#!/usr/bin/env bash
# The benchmark suite: builds release binaries, runs bench/src (latency against a
# native rmcp baseline, in-host instantiate-and-call, start-up, memory) and writes
# docs/benchmarks.md and bench/results/latest.json. Takes ~10 min plus the first
# release build. Extra arguments go to mcpplus-bench (e.g. --scale 0.2 for a quick run).
source "$(dirname "$0")/common.sh"
ensure_toolchain
ensure_venv
build_host
build_guests
log "building release binaries"
cargo build --locked --release -p mcpplus -p mcpplus-bench
T="${CARGO_TARGET_DIR:-target}/release"
# A throw-away PostgreSQL on loopback for the queue's PostgreSQL backend.
PG_DIR="$(mktemp -d /tmp/mcpplus-pg.XXXXXX)"
trap 'scripts/postgres.sh destroy "$PG_DIR" >/dev/null 2>&1 || true' EXIT
scripts/postgres.sh start "$PG_DIR" >/dev/null
log "running the benchmarks (keep the machine otherwise idle)"
"$T/mcpplus-bench" --mcpplus "$T/mcpplus" --native "$T/native-echo" --tools guest-tools/dist \
    --report docs/benchmarks.md --json bench/results/latest.json \
    --postgres-url "$(cat "$PG_DIR/url")" "$@"
