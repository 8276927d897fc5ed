#!/usr/bin/env bash
# The authoring commands end to end (tests/tests/scaffold.rs): for Rust, Python
# and JavaScript, `mcpplus new` a project, `mcpplus build` it, `inspect` it and
# `call` both of its tools; for Rust also `cargo test` in it and `mcpplus dev`
# against a running server (edit → reload, a failed build, fix → reload).
# Prints the time of each phase. Takes a few minutes; needs the network
# (crates.io for wit-bindgen, npm for componentize-js), Node.js 20+ with npm,
# and the .venv with componentize-py (made here, as scripts/test.sh does).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_toolchain
ensure_venv
build_host
log "building and serving a scaffolded project of each language"
MCPPLUS_SCAFFOLD_TESTS=1 cargo test --locked -p mcpplus-tests --test scaffold -- --nocapture --test-threads 1
