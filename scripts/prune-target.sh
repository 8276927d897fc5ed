#!/usr/bin/env bash
# Remove this project's own build products from a cargo target folder that is kept
# between runs, keeping the compiled dependencies (wasmtime and the rest, the slow
# part). CI builds each run from a fresh clone, so the workspace's test binaries,
# libraries and incremental state of earlier runs are never used again; left alone
# they grew the kept target folders by ~200 MiB a run (the main one to 17 GiB) until a CI run failed with
# "no space left on device".
#
#   scripts/prune-target.sh DIR...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Every package and target name of the main and the fuzz workspace, as cargo
# writes them into file names (dashes become underscores).
workspace_names() {
    local manifest
    for manifest in "$ROOT/Cargo.toml" "$ROOT/fuzz/Cargo.toml"; do
        cargo metadata --no-deps --offline --format-version 1 --manifest-path "$manifest"
    done | python3 -c '
import json, sys
names = set()
for line in sys.stdin:
    for package in json.loads(line)["packages"]:
        names.add(package["name"])
        names.update(target["name"] for target in package["targets"])
names.discard("build-script-build")
print("\n".join(sorted({n.replace("-", "_") for n in names} | names)))'
}

# deps/<name>-<hash>[.d], deps/lib<name>-<hash>.{rlib,rmeta,so}, and the
# fingerprint and build-script folders <name>-<hash>, for every name at once.
patterns=()
while read -r name; do
    [[ -n "$name" ]] || continue
    patterns+=(-o -name "$name-????????????????" -o -name "$name-????????????????.*"
        -o -name "lib$name-????????????????.*")
done <<<"$(workspace_names)"
patterns=("${patterns[@]:1}") # the leading -o

for dir in "$@"; do
    [[ -d "$dir" ]] || continue
    before="$(du -sm "$dir" | cut -f1)"
    # Incremental state is only ever reused by the same checkout.
    find "$dir" -maxdepth 3 -type d -name incremental -prune -exec rm -rf {} +
    find "$dir" -maxdepth 5 \( -path '*/deps/*' -o -path '*/.fingerprint/*' -o -path '*/build/*' \) \
        \( "${patterns[@]}" \) -prune -exec rm -rf {} +
    after="$(du -sm "$dir" | cut -f1)"
    printf '==> prune-target: %s: %s MiB -> %s MiB\n' "$dir" "$before" "$after" >&2
done
