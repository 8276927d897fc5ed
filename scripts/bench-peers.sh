#!/usr/bin/env bash
# Optional, not in CI: mcpplus, the native rmcp baseline (native-echo) and Microsoft
# Wassette serving the same echo component (guest-tools/echo-min), side by side in
# one run (`mcpplus-bench peers`, bench/src/peers.rs). Writes the section "Side by
# side with Wassette" of docs/benchmarks.md (between <!-- peers:begin --> and
# <!-- peers:end -->, which scripts/bench.sh keeps) and bench/results/peers.json.
#
# Wassette is built from source, at the pinned tag below, the first time: a clone
# into ~/.cache/mcpplus-bench (or $XDG_CACHE_HOME/mcpplus-bench) and a release build
# with its own target folder there, which compiles its own wasmtime (~20-40 min).
# WASSETTE_SRC=PATH uses a Wassette checkout, or a git dir to check the tag out of,
# instead of cloning. The measurements take about a minute. Extra arguments go to
# `mcpplus-bench peers` (e.g. --reps 1 --scale 0.2 for a quick run).
source "$(dirname "$0")/common.sh"
ensure_toolchain

WASSETTE_TAG=v0.2.0
WASSETTE_COMMIT=7b0053bea3f0e71480b6e1dd9e89801dc9bb2f19 # what the tag pointed at when pinned
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mcpplus-bench"
mkdir -p "$CACHE"

# A checkout of the tag from a local git dir. Examples are left out: the build does
# not need them (and a partial git dir may lack their binaries).
checkout_tag() { # git-dir dest
    git clone --quiet --no-checkout "$1" "$2"
    git -C "$2" sparse-checkout set --no-cone '/*' '!/examples/'
    git -C "$2" -c advice.detachedHead=false checkout --quiet --detach "$WASSETTE_TAG"
}

if [[ -n "${WASSETTE_SRC:-}" && -f "$WASSETTE_SRC/Cargo.toml" ]]; then
    SRC="$WASSETTE_SRC"
else
    SRC="$CACHE/wassette-$WASSETTE_TAG"
    if [[ ! -f "$SRC/Cargo.toml" ]]; then
        rm -rf "$SRC"
        if [[ -n "${WASSETTE_SRC:-}" ]]; then
            log "checking Wassette $WASSETTE_TAG out of $WASSETTE_SRC into $SRC"
            checkout_tag "$WASSETTE_SRC" "$SRC"
        else
            log "cloning Wassette $WASSETTE_TAG into $SRC"
            git -c advice.detachedHead=false clone --quiet --depth 1 --branch "$WASSETTE_TAG" \
                https://github.com/microsoft/wassette "$SRC"
        fi
    fi
fi
COMMIT="$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$COMMIT" != "$WASSETTE_COMMIT" ]]; then
    log "note: Wassette at $COMMIT, not $WASSETTE_TAG ($WASSETTE_COMMIT)"
fi
VERSION="$(sed -n 's/^version = "\(.*\)"/v\1/p' "$SRC/Cargo.toml" | head -1) (${COMMIT:0:7})"

# Wassette's own target folder, in the cache (not this workspace's). Built from here,
# so this repository's rust-toolchain.toml picks the compiler; cargo is run every
# time, so a changed WASSETTE_SRC is rebuilt.
log "building Wassette $VERSION (the first time it compiles its own wasmtime: ~20-40 min)"
CARGO_TARGET_DIR="$CACHE/wassette-$WASSETTE_TAG-target" nice -n 19 \
    cargo build --release --locked --manifest-path "$SRC/Cargo.toml" --bin wassette
WASSETTE="$CACHE/wassette-$WASSETTE_TAG-target/release/wassette"

log "building release binaries"
cargo build --locked --release -p mcpplus -p mcpplus-bench
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
# This run's binaries, linked (or copied) aside at once: a build sharing the target
# folder cannot swap them during the run.
T="$SCRATCH/bin"
mkdir -p "$T"
for b in mcpplus mcpplus-bench native-echo; do
    ln -f "${CARGO_TARGET_DIR:-target}/release/$b" "$T/$b" 2>/dev/null ||
        cp "${CARGO_TARGET_DIR:-target}/release/$b" "$T/$b"
done
ln -f "$WASSETTE" "$T/wassette" 2>/dev/null || cp "$WASSETTE" "$T/wassette"
WASSETTE="$T/wassette"

log "building the echo component (guest-tools/echo-min)"
# Guests have their own workspace and target folder, as in scripts/build-guest-tools.sh.
(cd guest-tools && CARGO_TARGET_DIR="$ROOT/guest-tools/target" \
    cargo build --locked --release --target wasm32-wasip2 --quiet -p echo-min)
COMPONENT="$SCRATCH/echo_min.wasm"
cp guest-tools/target/wasm32-wasip2/release/echo_min.wasm "$COMPONENT"
"$T/mcpplus" embed-docs "$COMPONENT" --wit guest-tools/echo-min/wit 2>/dev/null

log "running the side-by-side benchmark (keep the machine otherwise idle)"
"$T/mcpplus-bench" peers --mcpplus "$T/mcpplus" --native "$T/native-echo" \
    --wassette "$WASSETTE" --wassette-version "$VERSION" --component "$COMPONENT" \
    --markdown "$SCRATCH/section.md" --json bench/results/peers.json "$@"

# Splice the section into docs/benchmarks.md: replace the marked block, or append it.
DOC=docs/benchmarks.md
if grep -qx '<!-- peers:begin -->' "$DOC"; then
    awk -v section="$SCRATCH/section.md" '
        $0 == "<!-- peers:begin -->" { while ((getline line < section) > 0) print line; skip = 1; next }
        $0 == "<!-- peers:end -->" { skip = 0; next }
        !skip { print }' "$DOC" >"$SCRATCH/doc.md"
else
    { cat "$DOC"; echo; cat "$SCRATCH/section.md"; } >"$SCRATCH/doc.md"
fi
cp "$SCRATCH/doc.md" "$DOC"
log "wrote the section of $DOC and bench/results/peers.json"
