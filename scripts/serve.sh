#!/usr/bin/env bash
# Run the server with the bundled tools (stdio by default). Extra arguments go to
# `mcpplus serve`, e.g. `scripts/serve.sh --http 127.0.0.1:8080`.
source "$(dirname "$0")/common.sh"
ensure_toolchain
ensure_venv
build_host
build_guests
log "serving the bundled tools (stdio; pass --http 127.0.0.1:8080 for HTTP)"
exec "${CARGO_TARGET_DIR:-target}/debug/mcpplus" serve "$@"
