#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests and CI: loopback only, trust auth, in a
# directory of its own that `destroy` removes whole.
#
#   scripts/postgres.sh start   DIR   initdb into DIR/data (first time), start on a
#                                     free random port of 127.0.0.1, create database
#                                     `mcpplus`; prints MCPPLUS_PG_URL=... and writes
#                                     the URL to DIR/url
#   scripts/postgres.sh stop    DIR   fast shutdown (bounded wait)
#   scripts/postgres.sh restart DIR   fast shutdown, then start again on the same port
#                                     and data directory (the URL does not change)
#   scripts/postgres.sh destroy DIR   stop, then remove DIR
#   scripts/postgres.sh status  DIR   exit 0 when the server answers, 1 otherwise
#   scripts/postgres.sh url     DIR   print the URL
#
# DIR should be a fresh directory under /tmp (e.g. "$(mktemp -d /tmp/mcpplus-pg.XXXXXX)"):
# when run as root the server runs as the unprivileged system user `mcpplus-pg`
# (initdb refuses root), DIR is chowned to it, and every parent of DIR must be
# traversable by that user. The unix socket lives in DIR/run, the server log in
# DIR/postgres.log. fsync stays on: tests and benchmarks see real durability.
#
# Server binaries come from PATH (`initdb`), else /usr/lib/postgresql/*/bin (newest),
# else the Debian `postgresql` package is installed (without a system cluster).
#
# Environment: MCPPLUS_PG_OS_USER (default mcpplus-pg; used only as root),
# MCPPLUS_PG_ROLE (database superuser, default mcpplus), MCPPLUS_PG_DB (default
# mcpplus), MCPPLUS_PG_TIMEOUT (seconds to wait for start/stop, default 30).
set -euo pipefail

OS_USER="${MCPPLUS_PG_OS_USER:-mcpplus-pg}"
ROLE="${MCPPLUS_PG_ROLE:-mcpplus}"
DB="${MCPPLUS_PG_DB:-mcpplus}"
TIMEOUT="${MCPPLUS_PG_TIMEOUT:-30}"
MARKER=".mcpplus-postgres"   # written into DIR; destroy refuses a DIR without it

log() { printf '==> postgres.sh: %s\n' "$*" >&2; }
die() { printf 'postgres.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- binaries ----
BINDIR=""
find_bindir() {
    local initdb=""
    if initdb="$(command -v initdb 2>/dev/null)"; then
        BINDIR="$(dirname "$(readlink -f "$initdb")")"
    else
        local f
        initdb=""
        for f in /usr/lib/postgresql/*/bin/initdb; do
            [[ -x "$f" ]] && initdb="$(printf '%s\n%s\n' "$initdb" "$f" | sort -V | tail -n 1)"
        done
        [[ -n "$initdb" ]] && BINDIR="$(dirname "$initdb")"
    fi
    [[ -n "$BINDIR" ]] || return 1
    local b
    for b in initdb pg_ctl postgres pg_isready psql; do
        [[ -x "$BINDIR/$b" ]] || return 1
    done
}

ensure_server_binaries() {
    find_bindir && return 0
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_isready, psql) not found; install the Debian package 'postgresql' (as root: apt-get install -y postgresql)"
    log "PostgreSQL server binaries not found: installing the Debian package 'postgresql'"
    # No system cluster: the package would otherwise create and start 'main' on 5432.
    mkdir -p /etc/postgresql-common/createcluster.d
    [[ -e /etc/postgresql-common/createcluster.d/mcpplus-no-main.conf ]] ||
        printf 'create_main_cluster = false\n' >/etc/postgresql-common/createcluster.d/mcpplus-no-main.conf
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        postgresql >/dev/null
    find_bindir || die "installed 'postgresql' but still found no initdb/pg_ctl/postgres/pg_isready/psql under /usr/lib/postgresql/*/bin"
}

# ------------------------------------------------------------------ users ----
IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1

ensure_os_user() {
    ((IS_ROOT)) || return 0
    id -u "$OS_USER" >/dev/null 2>&1 && return 0
    log "creating the unprivileged system user '$OS_USER'"
    local i
    for ((i = 0; i < 10; i++)); do # a concurrent start may hold the passwd lock
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$OS_USER" 2>/dev/null && return 0
        id -u "$OS_USER" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "could not create the system user '$OS_USER' (useradd failed)"
}

# Run a server-side command as the unprivileged user (as ourselves when not root),
# from inside DIR so that no unreadable working directory gets in the way.
as_pg() {
    if ((IS_ROOT)); then
        if command -v runuser >/dev/null 2>&1; then
            (cd "$DIR" && HOME="$DIR" runuser -u "$OS_USER" -- "$@")
        else
            local cmd q
            cmd="$(printf '%q ' "$@")"
            q="$(printf '%q' "$DIR")"
            (cd "$DIR" && HOME="$DIR" su -s /bin/sh "$OS_USER" -c "cd $q && exec $cmd")
        fi
    else
        (cd "$DIR" && "$@")
    fi
}

# ------------------------------------------------------------------ paths ----
DIR=""
DATA=""
set_dir() { # DIR [create]
    [[ -n "${1:-}" ]] || usage
    local d="$1"
    if [[ "${2:-}" == create ]]; then
        mkdir -p "$d"
    elif [[ ! -d "$d" ]]; then
        die "$d does not exist"
    fi
    DIR="$(cd "$d" && pwd -P)"
    [[ "$DIR" != "/" ]] || die "refusing to use / as the server directory"
    DATA="$DIR/data"
}

prepare_dir() {
    # DIR 0755 so that DIR/url can be read by anyone; data/ and run/ stay 0700.
    if ((IS_ROOT)); then
        chown "$OS_USER:" "$DIR"
        chmod 0755 "$DIR"
        if ! runuser -u "$OS_USER" -- test -w "$DIR" -a -x "$DIR" 2>/dev/null; then
            die "user '$OS_USER' cannot reach $DIR: a parent directory is not traversable (mode o+x); use a fresh directory under /tmp, e.g. \$(mktemp -d /tmp/mcpplus-pg.XXXXXX)"
        fi
    else
        [[ -O "$DIR" ]] || die "$DIR is not owned by $(id -un)"
        chmod 0755 "$DIR"
    fi
    mkdir -p "$DIR/run"
    chmod 0700 "$DIR/run"
    touch "$DIR/$MARKER" "$DIR/postgres.log"
    if ((IS_ROOT)); then chown "$OS_USER:" "$DIR/run" "$DIR/postgres.log"; fi
    # A unix socket path is at most 107 bytes: DIR/run/.s.PGSQL.NNNNN must fit.
    local sock="$DIR/run/.s.PGSQL.65535"
    ((${#sock} <= 107)) || die "$DIR is too long for a unix socket path (${#sock} > 107 bytes); use a shorter directory under /tmp"
}

pg_pid() {
    # The postmaster's pid when its pid file names a live process.
    [[ -f "$DATA/postmaster.pid" ]] || return 1
    local pid
    pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

port_of() { cat "$DIR/port" 2>/dev/null; }

url_of() { printf 'postgres://%s@127.0.0.1:%s/%s\n' "$ROLE" "$1" "$DB"; }

is_ready() { "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$1" -U "$ROLE" -d postgres -t 2 >/dev/null 2>&1; }

log_tail() {
    printf -- '---- last lines of %s ----\n' "$DIR/postgres.log" >&2
    tail -n "${1:-30}" "$DIR/postgres.log" >&2 2>/dev/null || true
    printf -- '----\n' >&2
}

# A random port in 15000..32767 (below Linux's ephemeral range, so that outgoing
# connections do not grab it between restarts) that nothing on 127.0.0.1 listens on
# right now (the server's own bind is the real test: start retries on "address in use").
random_free_port() {
    local i port
    for ((i = 0; i < 50; i++)); do
        port=$((15000 + (RANDOM * 32768 + RANDOM) % 17768))
        if command -v ss >/dev/null 2>&1; then
            ss -Htln "sport = :$port" 2>/dev/null | grep -q . && continue
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
        printf '%s\n' "$port"
        return 0
    done
    die "found no free port on 127.0.0.1 after 50 tries"
}

# ----------------------------------------------------------------- initdb ----
init_cluster() {
    [[ -f "$DATA/PG_VERSION" ]] && return 0
    [[ -e "$DATA" ]] && die "$DATA exists but is not a PostgreSQL data directory; destroy $DIR and start again"
    local who="$OS_USER"
    ((IS_ROOT)) || who="$(id -un)"
    log "initdb into $DATA (as $who)"
    if ! as_pg "$BINDIR/initdb" --pgdata="$DATA" --username="$ROLE" --auth=trust \
        --encoding=UTF8 --locale=C --no-instructions >"$DIR/initdb.log" 2>&1; then
        cat "$DIR/initdb.log" >&2
        die "initdb failed"
    fi
    # Trust only on the unix socket (inside DIR, mode 0700) and on loopback.
    cat >"$DATA/pg_hba.conf" <<'EOF'
# written by scripts/postgres.sh: a throw-away test server, loopback only
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
EOF
    cat >>"$DATA/postgresql.conf" <<EOF

# ---- scripts/postgres.sh (port is passed on the command line) ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/run'
unix_socket_permissions = 0700
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
logging_collector = off
log_line_prefix = '%m [%p] '
EOF
    if ((IS_ROOT)); then chown "$OS_USER:" "$DATA/pg_hba.conf" "$DATA/postgresql.conf"; fi
}

# ------------------------------------------------------------- start/stop ----
# Start on $1; returns 0 when ready, 3 when the port was taken, dies otherwise.
start_on_port() {
    local port="$1" lines_before
    lines_before="$(wc -l <"$DIR/postgres.log")"
    # -w waits for the postmaster to report ready (or to die), at most TIMEOUT s.
    if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t "$TIMEOUT" \
        -o "-p $port -c listen_addresses=127.0.0.1" start >"$DIR/pg_ctl.out" 2>&1; then
        if tail -n "+$((lines_before + 1))" "$DIR/postgres.log" | grep -qiE 'could not (create listen socket|bind)|address already in use'; then
            return 3
        fi
        cat "$DIR/pg_ctl.out" >&2
        log_tail
        # pg_ctl -w can give up while the postmaster is still coming up: stop it.
        if pg_pid >/dev/null; then as_pg "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 || true; fi
        die "the server in $DATA did not start within ${TIMEOUT}s"
    fi
    # pg_ctl says ready; pg_isready over TCP must agree (bounded).
    local deadline=$((SECONDS + TIMEOUT))
    until is_ready "$port"; do
        if ((SECONDS >= deadline)); then
            log_tail
            as_pg "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
            die "pg_isready -h 127.0.0.1 -p $port did not report ready within ${TIMEOUT}s"
        fi
        sleep 0.2
    done
    return 0
}

ensure_database() {
    local port="$1"
    local psql=("$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$ROLE")
    if [[ "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]]; then
        "${psql[@]}" -d postgres -c "CREATE DATABASE \"$DB\"" >/dev/null
    fi
}

cmd_start() {
    ensure_server_binaries
    ensure_os_user
    prepare_dir
    init_cluster
    local port
    port="$(port_of || true)"
    if pg_pid >/dev/null; then
        if [[ -z "$port" ]] || ! is_ready "$port"; then
            die "a server is already running on $DATA but does not answer; run: $0 stop $DIR"
        fi
        log "already running on 127.0.0.1:$port"
    elif [[ -n "$port" ]]; then
        # A restart keeps its port (clients hold the URL); no retry elsewhere.
        local rc=0
        start_on_port "$port" || rc=$?
        if ((rc == 3)); then
            log_tail 10
            die "port $port on 127.0.0.1 is taken by another process; cannot restart on the same URL"
        fi
    else
        local tries rc
        for ((tries = 1; ; tries++)); do
            port="$(random_free_port)"
            rc=0
            start_on_port "$port" || rc=$?
            ((rc == 0)) && break
            ((tries < 10)) || { log_tail 10; die "could not bind a port on 127.0.0.1 after $tries tries"; }
            log "port $port was taken; trying another"
        done
        printf '%s\n' "$port" >"$DIR/port"
    fi
    ensure_database "$port"
    local url
    url="$(url_of "$port")"
    printf '%s\n' "$url" >"$DIR/url"
    printf 'MCPPLUS_PG_URL=%s\n' "$url"
}

cmd_stop() {
    find_bindir || die "no PostgreSQL binaries found"
    [[ -d "$DATA" ]] || { log "nothing to stop in $DIR"; return 0; }
    local pid
    if ! pid="$(pg_pid)"; then
        log "not running ($DATA)"
        return 0
    fi
    if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t "$TIMEOUT" stop >"$DIR/pg_ctl.out" 2>&1; then
        cat "$DIR/pg_ctl.out" >&2
        log "fast shutdown did not finish within ${TIMEOUT}s; immediate shutdown"
        as_pg "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    fi
    # Bounded wait for the postmaster itself to be gone (it removes its pid file
    # slightly before exiting).
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "postmaster $pid still alive; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "postmaster $pid did not exit"
    log "stopped ($DATA)"
}

cmd_destroy() {
    [[ -d "$DIR" ]] || return 0
    if [[ -n "$(ls -A "$DIR")" && ! -e "$DIR/$MARKER" ]]; then
        die "$DIR is not empty and was not made by this script (no $MARKER); not removing it"
    fi
    if [[ -d "$DATA" ]]; then cmd_stop; fi
    rm -rf -- "$DIR"
    log "removed $DIR"
}

cmd_status() {
    local port
    port="$(port_of)" || return 1
    find_bindir || return 1
    pg_pid >/dev/null && is_ready "$port"
}

main() {
    local cmd="${1:-}"
    [[ $# -eq 2 ]] || usage
    case "$cmd" in
    start) set_dir "$2" create; cmd_start ;;
    stop)
        [[ -d "$2" ]] || { log "nothing to stop: $2 does not exist"; exit 0; }
        set_dir "$2"
        cmd_stop
        ;;
    restart) set_dir "$2"; cmd_stop; cmd_start ;;
    destroy)
        [[ -d "$2" ]] || exit 0
        set_dir "$2"
        cmd_destroy
        ;;
    status) set_dir "$2"; cmd_status ;;
    url) set_dir "$2"; cat "$DIR/url" 2>/dev/null || die "no URL in $DIR (not started?)" ;;
    *) usage ;;
    esac
}

main "$@"
