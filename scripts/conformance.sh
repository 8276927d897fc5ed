#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance, pinned in
# tests/ecosystem/package.json) against `mcpplus serve --http`, serving the fixture
# component guest-tools/dist/fixtures/conformance.wasm, once per requirement set
# (2025-11-25 and 2026-07-28), each with its baseline of known failures
# (tests/conformance/baseline-REV.yml). Exits nonzero if the suite fails with the
# baseline: an unexpected failure, or a baseline entry that now passes (stale).
#
# Usage: scripts/conformance.sh [--summary FILE] [--requirements REV]... [--output DIR]
#   --summary FILE       also write each revision's `=== SUMMARY ===` block and the
#                        baseline verdict to FILE
#   --requirements REV   run only this requirement set (repeatable; default: both)
#   --output DIR         keep the suite's checks.json per scenario, its output and the
#                        server log in DIR/REV/ (default: a temporary folder, removed)
#
# Needs: target/debug/mcpplus (or $MCPPLUS_BIN; not built here: scripts/test.sh or
# `cargo build` builds it), npm on PATH when tests/ecosystem/node_modules is missing or
# stale. The fixture component is built when missing or older than its sources.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "conformance.sh: $*" >&2; exit 2; }

SUMMARY=""
OUTPUT=""
REVISIONS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --summary) SUMMARY="${2:?--summary needs a file}"; shift 2 ;;
        --summary=*) SUMMARY="${1#*=}"; shift ;;
        --requirements) REVISIONS+=("${2:?--requirements needs a revision}"); shift 2 ;;
        --requirements=*) REVISIONS+=("${1#*=}"); shift ;;
        --output) OUTPUT="${2:?--output needs a folder}"; shift 2 ;;
        --output=*) OUTPUT="${1#*=}"; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument \`$1\` (see --help)" ;;
    esac
done
[[ ${#REVISIONS[@]} -gt 0 ]] || REVISIONS=(2025-11-25 2026-07-28)
for rev in "${REVISIONS[@]}"; do
    [[ -f "$ROOT/tests/conformance/baseline-$rev.yml" ]] \
        || die "no baseline for requirement set $rev (tests/conformance/baseline-$rev.yml)"
done

MCPPLUS="${MCPPLUS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/mcpplus}"
[[ -x "$MCPPLUS" ]] || die "$MCPPLUS is not built (run \`cargo build\` or scripts/test.sh first)"

# The suite and Node 22, from tests/ecosystem/package-lock.json. A copy of the lock
# file npm ci last installed from: node_modules is stale when the committed lock file
# differs from it (or a package is missing).
ECO="$ROOT/tests/ecosystem"
NODE="$ECO/node_modules/.bin/node"
SUITE="$ECO/node_modules/.bin/conformance"
"$ROOT/scripts/install-ecosystem.sh"

# The fixture component: rebuilt when missing or older than its sources.
FIXTURE="$ROOT/guest-tools/dist/fixtures/conformance.wasm"
if [[ ! -f "$FIXTURE" ]] || [[ -n "$(find guest-tools/conformance/src guest-tools/conformance/wit/world.wit \
        guest-tools/conformance/Cargo.toml wit -newer "$FIXTURE" 2>/dev/null)" ]]; then
    log "building the conformance fixture component"
    (cd guest-tools && CARGO_TARGET_DIR="$ROOT/guest-tools/target" \
        cargo build --locked --release --target wasm32-wasip2 --quiet -p conformance)
    mkdir -p "$(dirname "$FIXTURE")"
    cp guest-tools/target/wasm32-wasip2/release/conformance.wasm "$FIXTURE.tmp"
    "$MCPPLUS" embed-docs "$FIXTURE.tmp" --wit guest-tools/conformance/wit 2>/dev/null
    mv "$FIXTURE.tmp" "$FIXTURE"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcpplus-conformance.XXXXXX")"
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        # A clean stop gives running calls 2 s; do not wait for ever.
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/tools"
cp "$FIXTURE" "$WORK/tools/conformance.wasm"
# Its grants: the sampling, elicitation and multi-round-trip fixtures ask the client.
cp guest-tools/conformance/conformance.policy.toml "$WORK/tools/conformance.policy.toml"
# The tasks extension's fixtures run as MCP tasks; 16 slots and a 3 s lease (a
# heartbeat every second) so the suite's 60-second slow_compute tasks neither hold
# up the others nor outlive a tasks/cancel by long.
cat > "$WORK/config.toml" <<'EOF'
[queue]
workers = 16
lease_ms = 3000
long_running = ["slow_compute", "protocol_error_job", "confirm_delete", "multi_input"]
task_required = ["failing_job"]

[tools.slow_compute]
timeout_ms = 90000
EOF

# Start a server on a free loopback port (port 0: the server picks one and prints
# its URL) and wait until it listens.
start_server() { # log-file data-dir
    # Create the log first: the server (started in the background) may not have
    # opened it yet when the loop below first reads it.
    : >"$1"
    "$MCPPLUS" serve --http 127.0.0.1:0 --no-auth --tools "$WORK/tools" --data-dir "$2" \
        --conformance-fixtures --no-admin --config "$WORK/config.toml" --log-format json >"$1" 2>&1 &
    SERVER_PID=$!
    URL=""
    local deadline=$((SECONDS + 120))
    while [[ -z "$URL" ]]; do
        URL="$(sed -n 's|^mcpplus: listening on \(http://[^ ]*\).*|\1|p' "$1" | head -n 1)"
        [[ -n "$URL" ]] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$1" >&2
            die "the server exited before listening (log above)"
        fi
        ((SECONDS < deadline)) || { cat "$1" >&2; die "the server did not listen within 120 s"; }
        sleep 0.1
    done
}

strip_ansi() { sed 's/\x1b\[[0-9;]*m//g'; }

STATUS=0
REPORT="$WORK/summary.txt"
: >"$REPORT"
for rev in "${REVISIONS[@]}"; do
    out="$WORK/$rev"
    mkdir -p "$out"
    start_server "$out/server.log" "$out/data"
    log "requirements $rev: running the suite against $URL"
    rc=0
    (cd "$out" && "$NODE" "$SUITE" server --url "$URL" --requirements "$rev" \
        --expected-failures "$ROOT/tests/conformance/baseline-$rev.yml" -o "$out/checks") \
        >"$out/suite.txt" 2>&1 || rc=$?
    stop_server
    strip_ansi <"$out/suite.txt" >"$out/suite.plain.txt"
    if ! grep -q '^=== SUMMARY ===' "$out/suite.plain.txt"; then
        tail -n 30 "$out/suite.plain.txt" >&2
        echo "requirements $rev: the suite did not run (exit $rc; output above)" >&2
        STATUS=1
        continue
    fi
    {
        echo "## requirements $rev (exit $rc)"
        # The summary block, then the baseline verdict (expected, stale, unexpected).
        sed -n '/^=== SUMMARY ===/,$p' "$out/suite.plain.txt" | grep -v '^$' || true
        echo
    } >>"$REPORT"
    # Scenarios passed and failed (scored or not), checks, and baselined failures.
    block="$(sed -n '/^=== SUMMARY ===/,/^Total:/p' "$out/suite.plain.txt")"
    verdict="$(grep -c '^✓ ' <<<"$block" || true) of $(grep -c '^[✓✗] ' <<<"$block" || true) scenarios passed (reported-only ones included)"
    verdict+=" ($(grep '^Total:' <<<"$block" | sed 's/^Total: //') checks);"
    verdict+=" $(sed -n '/^Expected failures (in baseline)/,/^$/p' "$out/suite.plain.txt" | grep -c '^  ~ ' || true) baselined"
    if [[ $rc -eq 0 ]]; then
        echo "requirements $rev: passed with the baseline — $verdict" >&2
    else
        STATUS=1
        echo "requirements $rev: FAILED (exit $rc) — $verdict" >&2
        # The unexpected failures and stale entries, as the suite lists them.
        sed -n '/^Stale baseline entries/,/^$/p; /^Unexpected failures (not in baseline)/,/^$/p' \
            "$out/suite.plain.txt" | grep -v '^$' | sed 's/^/  /' >&2
    fi
done

if [[ -n "$SUMMARY" ]]; then
    mkdir -p "$(dirname "$SUMMARY")"
    cp "$REPORT" "$SUMMARY"
    echo "summary written to $SUMMARY" >&2
fi
if [[ -n "$OUTPUT" ]]; then
    mkdir -p "$OUTPUT"
    for rev in "${REVISIONS[@]}"; do
        [[ -d "$WORK/$rev" ]] || continue
        rm -rf "${OUTPUT:?}/$rev"
        mkdir -p "$OUTPUT/$rev"
        cp -r "$WORK/$rev/." "$OUTPUT/$rev/"
        rm -rf "$OUTPUT/$rev/data"
    done
    echo "suite output, checks and server logs kept in $OUTPUT" >&2
fi
if [[ $STATUS -eq 0 ]]; then
    echo "conformance: every requirement set passed with its baseline" >&2
else
    echo "conformance: FAILED (see above; rerun with --output DIR for checks.json and the server log)" >&2
fi
exit $STATUS
