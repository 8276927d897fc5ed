#!/usr/bin/env bash
# Install what crates/workflow/tests/diagrams.rs checks generated graphs with:
# Graphviz `dot` (Debian `graphviz`) and, in tests/js/node_modules, mermaid 12.3.0 + jsdom
# from tests/js/package-lock.json (parse only, no browser). Idempotent: quiet when
# everything is already there. Needs Node.js and npm on PATH for the Mermaid part.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_apt_command dot graphviz

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-diagram-tools.sh: node and npm are needed (e.g. apt-get install nodejs npm)" >&2
    exit 1
fi

JS="$ROOT/tests/js"
# A copy of the lock file npm ci last installed from: node_modules is stale when the
# committed lock file differs from it (or a package is missing).
STAMP="$JS/node_modules/.installed-package-lock.json"
if [[ ! -f "$STAMP" ]] || ! cmp -s "$JS/package-lock.json" "$STAMP" \
    || [[ ! -f "$JS/node_modules/mermaid/package.json" ]] \
    || [[ ! -f "$JS/node_modules/jsdom/package.json" ]]; then
    log "installing mermaid and jsdom into tests/js/node_modules (npm ci)"
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$JS/package-lock.json" "$STAMP"
fi
