#!/usr/bin/env bash
# Fuzz the boundaries that parse untrusted input with libFuzzer (cargo-fuzz):
# component policy files, the operator config, the outbound grant matcher,
# a tool call's JSON arguments → component values, and the MCP request path
# (raw JSON-RPC frames into the server) (fuzz/fuzz_targets). Stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# instrumentation flags; no sanitizer (-s none), the targets are safe Rust.
#
#   scripts/fuzz.sh            # 600 s per target (the recorded runs)
#   scripts/fuzz.sh 60         # the smoke run CI does
#   scripts/fuzz.sh 60 destination
#
# The last two link wasmtime: their first instrumented build takes ~25 minutes
# on 2 cores. Builds go to MCPPLUS_FUZZ_TARGET_DIR (default fuzz/target; CI
# keeps one between runs).
#
# New inputs go to a scratch corpus in fuzz/target/corpus (the seeds in
# fuzz/corpus stay as they are); a crash stops the run, leaves its input in
# fuzz/artifacts/<target>/ and exits non-zero: turn it into a regression test.
source "$(dirname "$0")/common.sh"
ensure_toolchain
SECONDS_PER_TARGET="${1:-600}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=(policy_toml operator_config destination json_arguments mcp_request)
if ! command -v cargo-fuzz >/dev/null; then
    log "installing cargo-fuzz 0.13.2"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
# json_arguments and mcp_request read the bundled components.
build_guests
cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
# Instrumented builds stay apart from the main ones, whatever the caller's target folder.
export CARGO_TARGET_DIR="${MCPPLUS_FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
# mcp_request's compiled components (minutes to compile with instrumentation).
export MCPPLUS_FUZZ_WASM_CACHE="$CARGO_TARGET_DIR/wasm-cache"
log "building the fuzz targets"
cargo fuzz build -s none -O --fuzz-dir .
for target in "${TARGETS[@]}"; do
    scratch="target/corpus/$target"
    mkdir -p "$scratch" "corpus/$target"
    log "fuzzing $target for ${SECONDS_PER_TARGET} s"
    log_file="target/fuzz-$target.log"
    status=0
    cargo fuzz run "$target" -s none -O --fuzz-dir . "$scratch" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -timeout=60 -print_final_stats=1 \
        >"$log_file" 2>&1 || status=$?
    # The summary (runs, coverage, corpus); libFuzzer's progress lines stay in the log.
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|panicked|SUMMARY|ERROR' "$log_file" || true
    if [[ $status -ne 0 ]]; then
        log "$target failed (exit $status): the input is in fuzz/artifacts/$target, the log in fuzz/$log_file"
        exit 1
    fi
done
