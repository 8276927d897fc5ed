#!/usr/bin/env bash
# Build the bundled tool components into guest-tools/dist/ (test fixtures into
# guest-tools/dist/fixtures/), and embed their WIT doc comments.
# Needs: the wasm32-wasip2 target, .venv with componentize-py, target/debug/mcpplus.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/guest-tools"
MCPPLUS="${MCPPLUS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/mcpplus}"
DIST="$ROOT/guest-tools/dist"
mkdir -p "$DIST/fixtures"

# Guests have their own workspace and target folder, whatever CARGO_TARGET_DIR says.
CARGO_TARGET_DIR="$ROOT/guest-tools/target" cargo build --locked --release --target wasm32-wasip2 --quiet
OUT="$ROOT/guest-tools/target/wasm32-wasip2/release"

install_rust_tool() { # crate-dir artifact-name dest
    cp "$OUT/$2.wasm" "$3.tmp"
    "$MCPPLUS" embed-docs "$3.tmp" --wit "$1/wit" 2>/dev/null
    mv "$3.tmp" "$3"
}
install_rust_tool showcase showcase "$DIST/showcase.wasm"
install_rust_tool text-utils text_utils "$DIST/text_utils.wasm"
install_rust_tool fetch fetch "$DIST/fetch.wasm"
install_rust_tool task-queue task_queue "$DIST/task_queue.wasm"
cp task-queue/task_queue.policy.toml "$DIST/task_queue.policy.toml"
install_rust_tool fixtures fixtures "$DIST/fixtures/misbehaving.wasm"
install_rust_tool hostile hostile "$DIST/fixtures/hostile.wasm"
install_rust_tool recorder recorder "$DIST/fixtures/recorder.wasm"
# The tools the official MCP conformance suite calls by name (scripts/conformance.sh).
install_rust_tool conformance conformance "$DIST/fixtures/conformance.wasm"
cp conformance/conformance.policy.toml "$DIST/fixtures/conformance.policy.toml"
install_rust_tool peer-tools peer_tools "$DIST/peer_tools.wasm"
cp peer-tools/peer_tools.policy.toml "$DIST/peer_tools.policy.toml"
install_rust_tool workflow workflow_tools "$DIST/workflow_tools.wasm"
cp workflow/workflow_tools.policy.toml "$DIST/workflow_tools.policy.toml"
# The hot-loading fixture, in two versions that answer differently.
for v in 1 2; do
    MCPPLUS_FIXTURE_VERSION=$v CARGO_TARGET_DIR="$ROOT/guest-tools/target" \
        cargo build --locked --release --target wasm32-wasip2 --quiet -p versioned
    install_rust_tool versioned versioned "$DIST/fixtures/versioned-$v.wasm"
done

# The Python tool: componentize-py bundles CPython, so only rebuild when its
# sources change.
PY_OUT="$DIST/py_stats.wasm"
PY_SRC=(py-stats/app.py py-stats/wit/world.wit)
if [[ ! -f "$PY_OUT" ]] || [[ -n "$(find "${PY_SRC[@]}" -newer "$PY_OUT")" ]]; then
    (cd py-stats && "$ROOT/.venv/bin/componentize-py" -d wit -w py-stats componentize app -o "$PY_OUT.tmp" >/dev/null)
    "$MCPPLUS" embed-docs "$PY_OUT.tmp" --wit py-stats/wit 2>/dev/null
    mv "$PY_OUT.tmp" "$PY_OUT"
fi

# The JavaScript tool: ComponentizeJS (npm, pinned in js-text-diff/package-lock.json)
# bundles the SpiderMonkey engine, so only rebuild when its sources change.
JS_DIR="$ROOT/guest-tools/js-text-diff"
JS_OUT="$DIST/js_text_diff.wasm"
JS_SRC=(js-text-diff/app.js js-text-diff/src js-text-diff/build.mjs js-text-diff/wit/world.wit
        js-text-diff/package.json js-text-diff/package-lock.json)
if [[ ! -f "$JS_OUT" ]] || [[ -n "$(find "${JS_SRC[@]}" -newer "$JS_OUT")" ]]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "build-guest-tools.sh: Node.js and npm are needed to build guest-tools/js-text-diff" \
             "(Debian/Ubuntu: apt-get install nodejs npm; tested with Node.js 20)" >&2
        exit 1
    fi
    # A copy of the lock file npm ci last installed from: node_modules is stale when the
    # committed lock file differs from it (or the package is missing).
    JS_STAMP="$JS_DIR/node_modules/.installed-package-lock.json"
    if [[ ! -f "$JS_STAMP" ]] || ! cmp -s "$JS_DIR/package-lock.json" "$JS_STAMP" \
        || [[ ! -f "$JS_DIR/node_modules/@bytecodealliance/componentize-js/package.json" ]] \
        || [[ ! -f "$JS_DIR/node_modules/@bytecodealliance/preview2-shim/package.json" ]]; then
        echo "installing ComponentizeJS into guest-tools/js-text-diff/node_modules (npm ci)" >&2
        (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        cp "$JS_DIR/package-lock.json" "$JS_STAMP"
    fi
    (cd "$JS_DIR" && node build.mjs "$JS_OUT.tmp")
    "$MCPPLUS" embed-docs "$JS_OUT.tmp" --wit js-text-diff/wit 2>/dev/null
    mv "$JS_OUT.tmp" "$JS_OUT"
fi
ls -1 "$DIST"/*.wasm "$DIST"/fixtures/*.wasm >&2
