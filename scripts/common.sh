# Shared set-up for scripts/serve.sh and scripts/test.sh: installs what the project
# needs on a fresh machine (the wasm target, the Python venv), then builds the host
# and the bundled guest tools. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_toolchain() {
    # rust-toolchain.toml pins the version; this makes sure the wasm target is there.
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        log "installing the wasm32-wasip2 target"
        rustup target add wasm32-wasip2
    fi
}

ensure_venv() {
    local stamp=".venv/.requirements-installed"
    if [[ ! -x .venv/bin/python ]]; then
        log "creating the Python venv (.venv)"
        python3 -m venv .venv
    fi
    if [[ ! -f "$stamp" ]] || ! cmp -s tests/python/requirements.txt "$stamp"; then
        log "installing Python test client and componentize-py into .venv"
        .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
        cp tests/python/requirements.txt "$stamp"
    fi
}

# Install Debian package $2 when command $1 is missing (quiet when it is there).
ensure_apt_command() {
    command -v "$1" >/dev/null 2>&1 && return
    log "installing $2 ($1)"
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

build_host() {
    log "building mcpplus"
    # All targets, so dependency features match `cargo test --workspace` and nothing
    # is compiled twice.
    cargo build --locked --workspace --all-targets
}

build_guests() {
    log "building the bundled guest tools"
    scripts/build-guest-tools.sh
}
