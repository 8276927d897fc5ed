#!/usr/bin/env bash
# The whole test suite: unit and property tests, Rust integration tests (rmcp
# client), and Python integration tests (the official `mcp` client), all against
# the real binary and real components.
source "$(dirname "$0")/common.sh"
ensure_toolchain
ensure_venv
build_host
build_guests
export MCPPLUS_BIN="$ROOT/${CARGO_TARGET_DIR:-target}/debug/mcpplus"
[[ "${CARGO_TARGET_DIR:-}" = /* ]] && export MCPPLUS_BIN="$CARGO_TARGET_DIR/debug/mcpplus"
export MCPPLUS_TOOLS_DIST="$ROOT/guest-tools/dist"
# A cache private to this run, so tests see cold and warm starts for real.
export MCPPLUS_CACHE_DIR="${MCPPLUS_CACHE_DIR:-$ROOT/target/test-cache}"
# Servers started by tests keep their state (the task queue) in a folder of
# this run, not in ~/.local/share; tests that need a queue pass --data-dir.
XDG_DATA_HOME="$(mktemp -d)"
export XDG_DATA_HOME
# A throw-away PostgreSQL on loopback for the queue's PostgreSQL backend
# (installed if missing; the tests of that backend fail without it, never skip).
MCPPLUS_TEST_PG_DIR="$(mktemp -d /tmp/mcpplus-pg.XXXXXX)"
export MCPPLUS_TEST_PG_DIR
trap 'scripts/postgres.sh destroy "$MCPPLUS_TEST_PG_DIR" >/dev/null 2>&1 || true; rm -rf "$XDG_DATA_HOME"' EXIT
scripts/postgres.sh start "$MCPPLUS_TEST_PG_DIR" >/dev/null
MCPPLUS_TEST_PG_URL="$(cat "$MCPPLUS_TEST_PG_DIR/url")"
export MCPPLUS_TEST_PG_URL
log "PostgreSQL for the tests: $MCPPLUS_TEST_PG_URL"
# Graphviz and Mermaid's parser check the workflow diagrams (crates/workflow/tests/diagrams.rs).
scripts/install-diagram-tools.sh
log "cargo test"
cargo test --locked --workspace
log "cargo test: MCP tasks and the workflow controller with the queue on PostgreSQL"
MCPPLUS_TEST_QUEUE_BACKEND=postgres cargo test --locked -p mcpplus-tests --test mcp_tasks
MCPPLUS_TEST_QUEUE_BACKEND=postgres cargo test --locked -p mcpplus-workflow --test engine
log "pytest (official mcp client)"
.venv/bin/python -m pytest tests/python -q -p no:cacheprovider
