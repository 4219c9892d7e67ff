# shellcheck shell=bash
# Throwaway PostgreSQL and Redis servers for tests and benchmarks.
# Source this file, then:
#
#   ensure_service_packages [--browser]   apt-get install what is missing
#   start_postgres      fresh cluster on 127.0.0.1:$WELLBEING_TEST_PG_PORT (default 55432),
#                       trust auth, superuser "postgres"; exports WELLBEING_TEST_PG_URL
#   start_redis         redis-server on 127.0.0.1:$WELLBEING_TEST_REDIS_PORT (default 56379),
#                       no persistence; exports WELLBEING_TEST_REDIS_URL
#   stop_services       stop both (safe to call repeatedly, e.g. from a trap)
#
# State (data, sockets, logs) lives under $WELLBEING_TEST_STATE_DIR (default
# /tmp/wellbeing-test). Every start wipes the previous state and stops a server that
# an earlier run left behind on the same port, so reruns always begin clean. A port
# held by anything else is an error: pick another port with the variables above.

if [ -n "${_WELLBEING_SERVICES_SH:-}" ]; then
    return 0
fi
_WELLBEING_SERVICES_SH=1

# shellcheck source=ops/lib/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

: "${WELLBEING_TEST_PG_PORT:=55432}"
: "${WELLBEING_TEST_REDIS_PORT:=56379}"
: "${WELLBEING_TEST_STATE_DIR:=/tmp/wellbeing-test}"
: "${WELLBEING_CHROMIUM:=/usr/bin/chromium}"
export WELLBEING_TEST_PG_PORT WELLBEING_TEST_REDIS_PORT WELLBEING_TEST_STATE_DIR WELLBEING_CHROMIUM

# ---------------------------------------------------------------- helpers

# True when something accepts TCP connections on 127.0.0.1:PORT.
_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# _wait_port_closed PORT SECONDS
_wait_port_closed() {
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        _port_open "$1" || return 0
        sleep 0.2
    done
    return 1
}

# PIDs of processes whose command name is COMM and whose command line contains TEXT.
_pids_matching() {
    local comm="$1" text="$2" d pid
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        [ "$(cat "$d/comm" 2>/dev/null)" = "$comm" ] || continue
        if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- "$text"; then
            printf '%s\n' "$pid"
        fi
    done
}

# _kill_pids PID... : TERM, wait up to 10 s, then KILL.
_kill_pids() {
    [ "$#" -gt 0 ] || return 0
    local i p alive
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive=""
        for p in "$@"; do
            if kill -0 "$p" 2>/dev/null; then
                alive=1
            fi
        done
        [ -z "$alive" ] && return 0
        sleep 0.2
    done
    kill -KILL "$@" 2>/dev/null || true
}

# Directory holding initdb/pg_ctl (WELLBEING_PG_BINDIR overrides).
pg_bindir() {
    local d initdb
    if [ -n "${WELLBEING_PG_BINDIR:-}" ]; then
        printf '%s\n' "$WELLBEING_PG_BINDIR"
        return 0
    fi
    # Debian keeps the server binaries off PATH, one directory per major version.
    d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
        printf '%s\n' "$d"
        return 0
    fi
    if initdb="$(command -v initdb 2>/dev/null)"; then
        d="$(dirname "$(readlink -f "$initdb")")"
        if [ -x "$d/pg_ctl" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    fi
    return 1
}

# Run a PostgreSQL server binary; PostgreSQL refuses to run as root.
_as_postgres() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# ensure_service_packages [--browser]: install PostgreSQL, Redis (and Chromium) if missing.
ensure_service_packages() {
    local -a missing=()
    local browser=""
    [ "${1:-}" = "--browser" ] && browser=1
    # Another apt run may be installing exactly these right now: let it finish first.
    wait_for_apt
    pg_bindir >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    if [ -n "$browser" ] && [ ! -x "$WELLBEING_CHROMIUM" ]; then
        [ "$WELLBEING_CHROMIUM" = /usr/bin/chromium ] ||
            die "WELLBEING_CHROMIUM=$WELLBEING_CHROMIUM is not executable"
        missing+=(chromium)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    pg_bindir >/dev/null || die "PostgreSQL server binaries (initdb, pg_ctl) not found after install"
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found after install"
    if [ -n "$browser" ] && [ ! -x "$WELLBEING_CHROMIUM" ]; then
        die "$WELLBEING_CHROMIUM not found after install"
    fi
}

# ---------------------------------------------------------------- PostgreSQL

_pg_dir() {
    printf '%s/pg-%s\n' "$WELLBEING_TEST_STATE_DIR" "$WELLBEING_TEST_PG_PORT"
}

# Stop the cluster a previous run of ours left on this port (if any).
stop_postgres() {
    local dir data bindir
    dir="$(_pg_dir)"
    data="$dir/data"
    bindir="$(pg_bindir 2>/dev/null)" || bindir=""
    if [ -n "$bindir" ] && [ -f "$data/postmaster.pid" ]; then
        _as_postgres "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            _as_postgres "$bindir/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
            true
    fi
    # The pid file may be gone (state dir wiped) while the postmaster still runs.
    # shellcheck disable=SC2046
    _kill_pids $(_pids_matching postgres "$data")
    if [ -d "$data" ]; then
        rm -f "$data/postmaster.pid"
    fi
    return 0
}

start_postgres() {
    local port="$WELLBEING_TEST_PG_PORT" bindir dir data
    bindir="$(pg_bindir)" || die "PostgreSQL not found (apt-get install postgresql)"
    dir="$(_pg_dir)"
    data="$dir/data"

    stop_postgres
    if _port_open "$port" && ! _wait_port_closed "$port" 10; then
        die "port $port is in use by a process this script did not start; set WELLBEING_TEST_PG_PORT to a free port"
    fi

    if is_root && ! id -u postgres >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    mkdir -p "$WELLBEING_TEST_STATE_DIR"
    chmod 755 "$WELLBEING_TEST_STATE_DIR"
    rm -rf "$dir"
    mkdir -p "$data" "$dir/sock"
    chmod 700 "$data"
    if is_root; then
        chown -R postgres: "$dir"
    fi

    log "initdb $data ($bindir)"
    if ! _as_postgres "$bindir/initdb" -D "$data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    fi
    cat >>"$data/postgresql.conf" <<EOF

# wellbeing throwaway test cluster
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF

    log "starting PostgreSQL on 127.0.0.1:$port"
    if ! _as_postgres "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start >/dev/null; then
        tail -n 30 "$dir/postgres.log" >&2 || true
        die "PostgreSQL did not start (log: $dir/postgres.log)"
    fi
    _port_open "$port" || die "PostgreSQL started but 127.0.0.1:$port does not answer"

    WELLBEING_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    export WELLBEING_TEST_PG_URL
}

# ---------------------------------------------------------------- Redis

_redis_dir() {
    printf '%s/redis-%s\n' "$WELLBEING_TEST_STATE_DIR" "$WELLBEING_TEST_REDIS_PORT"
}

_redis_cli() {
    redis-cli -h 127.0.0.1 -p "$WELLBEING_TEST_REDIS_PORT" "$@"
}

# PIDs of redis-server processes whose working directory is DIR (also when DIR
# has been deleted since).
_redis_pids_in() {
    local dir="$1" d cwd
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = redis-server ] || continue
        cwd="$(readlink "$d/cwd" 2>/dev/null)" || continue
        if [ "$cwd" = "$dir" ] || [ "$cwd" = "$dir (deleted)" ]; then
            printf '%s\n' "${d#/proc/}"
        fi
    done
}

# Stop the redis-server a previous run of ours left on this port (if any): ours are
# the ones running in our state dir, found by pid file, /proc, or CONFIG GET dir.
stop_redis() {
    local port="$WELLBEING_TEST_REDIS_PORT" dir rdir
    local -a pids=()
    dir="$(_redis_dir)"
    if [ -f "$dir/redis.pid" ]; then
        pids+=("$(cat "$dir/redis.pid" 2>/dev/null || true)")
    fi
    mapfile -t -O "${#pids[@]}" pids < <(_redis_pids_in "$dir")
    if _port_open "$port" && command -v redis-cli >/dev/null 2>&1; then
        rdir="$(_redis_cli config get dir 2>/dev/null | sed -n 2p)" || rdir=""
        if [ -n "$rdir" ] && [ "$rdir" = "$dir" ]; then
            _redis_cli shutdown nosave >/dev/null 2>&1 || true
            _wait_port_closed "$port" 10 || true
        fi
    fi
    local -a alive=()
    local p
    for p in ${pids[@]+"${pids[@]}"}; do
        if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = redis-server ]; then
            alive+=("$p")
        fi
    done
    _kill_pids ${alive[@]+"${alive[@]}"}
    rm -f "$dir/redis.pid"
    return 0
}

start_redis() {
    local port="$WELLBEING_TEST_REDIS_PORT" dir i
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found (apt-get install redis-server)"
    dir="$(_redis_dir)"

    stop_redis
    if _port_open "$port" && ! _wait_port_closed "$port" 10; then
        die "port $port is in use by a process this script did not start; set WELLBEING_TEST_REDIS_PORT to a free port"
    fi

    mkdir -p "$WELLBEING_TEST_STATE_DIR"
    rm -rf "$dir"
    mkdir -p "$dir"

    log "starting Redis on 127.0.0.1:$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
        --save '' --appendonly no --maxmemory-policy noeviction \
        --databases 64 </dev/null ||
        die "redis-server failed to start (log: $dir/redis.log)"
    for ((i = 0; i < 100; i++)); do
        if [ "$(_redis_cli ping 2>/dev/null)" = PONG ]; then
            break
        fi
        sleep 0.2
    done
    [ "$(_redis_cli ping 2>/dev/null)" = PONG ] || {
        tail -n 30 "$dir/redis.log" >&2 || true
        die "Redis did not answer on 127.0.0.1:$port"
    }

    WELLBEING_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
    export WELLBEING_TEST_REDIS_URL
}

# ---------------------------------------------------------------- both

stop_services() {
    stop_postgres || true
    stop_redis || true
}
