#!/usr/bin/env bash
# Tests with clients nobody on this team wrote, against the server scripts/test.sh
# built (run that first; this script builds nothing):
#   - the TypeScript SDK 1.x client and @modelcontextprotocol/client 2.x, over stdio
#     and Streamable HTTP, in both protocol eras (tests/ecosystem/*.test.mjs);
#   - the MCP Inspector CLI: tools/list, tools/call and its `--strict` schema lint;
#   - a real Prometheus scraping /metrics;
# then scripts/conformance.sh and scripts/test-scaffolds.sh when they exist.
# Installs what it needs: tests/ecosystem/node_modules (npm ci, from the committed
# lock file; it brings Node 22) and Debian's prometheus.
source "$(dirname "$0")/common.sh"

# The binary scripts/test.sh built (same rules), unless MCPPLUS_BIN names one.
if [[ -z "${MCPPLUS_BIN:-}" ]]; then
    MCPPLUS_BIN="$ROOT/${CARGO_TARGET_DIR:-target}/debug/mcpplus"
    [[ "${CARGO_TARGET_DIR:-}" = /* ]] && MCPPLUS_BIN="$CARGO_TARGET_DIR/debug/mcpplus"
fi
export MCPPLUS_BIN
export MCPPLUS_TOOLS_DIST="${MCPPLUS_TOOLS_DIST:-$ROOT/guest-tools/dist}"
# The compile cache scripts/test.sh warmed: servers start in about a second.
export MCPPLUS_CACHE_DIR="${MCPPLUS_CACHE_DIR:-$ROOT/target/test-cache}"
if [[ ! -x "$MCPPLUS_BIN" ]]; then
    echo "test-ecosystem.sh: no mcpplus binary at $MCPPLUS_BIN; run scripts/test.sh first (or set MCPPLUS_BIN)" >&2
    exit 1
fi
if [[ ! -f "$MCPPLUS_TOOLS_DIST/showcase.wasm" ]]; then
    echo "test-ecosystem.sh: no bundled tools in $MCPPLUS_TOOLS_DIST; run scripts/test.sh first" >&2
    exit 1
fi

# The clients, the Inspector, the conformance suite and Node 22.
scripts/install-ecosystem.sh
ECO="$ROOT/tests/ecosystem"
NODE="$ECO/node_modules/.bin/node"

ensure_apt_command prometheus prometheus
PROMETHEUS_BIN="$(command -v prometheus)"
export PROMETHEUS_BIN

# Every temp dir the tests make goes in here, removed at the end whatever happens
# (the tests stop their own servers and remove their dirs; this is the backstop).
TMPDIR="$(mktemp -d -t mcpplus-ecosystem.XXXXXX)"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

status=0
log "TypeScript SDK clients 1.x and 2.x, MCP Inspector CLI, Prometheus (tests/ecosystem)"
# Test files run in parallel: they spend most of their time waiting on servers.
(cd "$ECO" && "$NODE" --test --test-reporter=spec --test-concurrency=4 --test-timeout=600000 \
    sdk-v1.test.mjs client-v2.test.mjs inspector.test.mjs prometheus.test.mjs) || status=1

# Written by others; run when present.
for extra in scripts/conformance.sh scripts/test-scaffolds.sh; do
    if [[ -f "$extra" ]]; then
        log "$extra"
        bash "$extra" || status=1
    fi
done
exit "$status"
