# shellcheck shell=bash
# Shared helpers for the ops scripts. Source this file; do not execute it.
#
#   WELLBEING_ROOT        repository root (derived from this file's location)
#   header TEXT           print a section header
#   log / die             messages on stderr
#   as_root CMD...        run CMD as root (directly, or through sudo -n)
#   apt_install PKG...    non-interactive apt-get install, waits for other apt runs
#   ensure_venv [EXTRAS]  create .venv if needed and pip install -e ".[EXTRAS]"

if [ -n "${_WELLBEING_COMMON_SH:-}" ]; then
    return 0
fi
_WELLBEING_COMMON_SH=1

WELLBEING_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export WELLBEING_ROOT

log() {
    printf '%s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

header() {
    printf '\n========== %s ==========\n' "$*"
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

# Wait (up to WELLBEING_APT_WAIT seconds, default 900) until no apt/dpkg process runs.
# Another install may be going on in the background; we must not fail on its lock.
wait_for_apt() {
    local waited=0 limit="${WELLBEING_APT_WAIT:-900}" busy comm f announced=""
    while :; do
        busy=""
        for f in /proc/[0-9]*/comm; do
            comm="$(cat "$f" 2>/dev/null)" || continue
            case "$comm" in
                apt | apt-get | aptitude | dpkg)
                    busy="$comm"
                    break
                    ;;
            esac
        done
        [ -z "$busy" ] && return 0
        if [ "$waited" -ge "$limit" ]; then
            log "apt/dpkg still busy ($busy) after ${limit}s; trying anyway"
            return 0
        fi
        if [ -z "$announced" ]; then
            log "waiting for a running $busy to finish..."
            announced=1
        fi
        sleep 3
        waited=$((waited + 3))
    done
}

_WELLBEING_APT_UPDATED=""

# apt_install PKG... : install the given Debian packages (callers pass only missing ones).
apt_install() {
    [ "$#" -gt 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages by hand: $*"
    local -a apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q -y)
    wait_for_apt
    if [ -z "$_WELLBEING_APT_UPDATED" ]; then
        log "apt-get update"
        as_root "${apt[@]}" update </dev/null || log "apt-get update failed; trying the install anyway"
        _WELLBEING_APT_UPDATED=1
    fi
    log "apt-get install $*"
    if ! as_root "${apt[@]}" install --no-install-recommends "$@" </dev/null; then
        # An interrupted earlier dpkg run blocks every install until configured.
        wait_for_apt
        as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a </dev/null || true
        as_root "${apt[@]}" install --no-install-recommends "$@" </dev/null ||
            die "apt-get install $* failed"
    fi
}

# Print a python interpreter >= 3.11 (WELLBEING_PYTHON overrides).
find_python() {
    local py
    for py in "${WELLBEING_PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$py" ] || continue
        command -v "$py" >/dev/null 2>&1 || continue
        if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            printf '%s\n' "$py"
            return 0
        fi
    done
    return 1
}

_pyproject_hash() {
    local py="$1"
    "$py" - "$WELLBEING_ROOT/pyproject.toml" <<'EOF'
import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])
EOF
}

# ensure_venv [EXTRAS]: make $WELLBEING_ROOT/.venv usable and the project installed
# (editable) with the given extras. Skips pip when pyproject.toml is unchanged since
# the last install with these extras (WELLBEING_FORCE_INSTALL=1 reinstalls).
ensure_venv() {
    local extras="${1:-}" venv="$WELLBEING_ROOT/.venv" py stamp hash spec
    if [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null &&
        "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        :
    else
        py="$(find_python)" || die "Python >= 3.11 not found (set WELLBEING_PYTHON)"
        if [ -e "$venv" ]; then
            log "recreating broken $venv"
            rm -rf "$venv"
        fi
        log "creating $venv with $py"
        if ! "$py" -m venv "$venv" 2>/dev/null; then
            # Debian's python3 ships venv/ensurepip separately.
            rm -rf "$venv"
            if is_root || command -v sudo >/dev/null 2>&1; then
                local minor
                minor="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
                apt_install "python${minor}-venv" || apt_install python3-venv
            fi
            "$py" -m venv "$venv" || die "could not create $venv (on Debian: apt-get install python3-venv)"
        fi
    fi

    stamp="$venv/.wellbeing-install"
    hash="$(_pyproject_hash "$venv/bin/python")"
    if [ -z "${WELLBEING_FORCE_INSTALL:-}" ] && [ -x "$venv/bin/wellbeing" ] && [ -f "$stamp" ]; then
        if [ -z "$extras" ] && grep -q "^$hash " "$stamp"; then
            return 0
        fi
        if grep -qx "$hash $extras" "$stamp"; then
            return 0
        fi
    fi

    spec="$WELLBEING_ROOT"
    if [ -n "$extras" ]; then
        spec="${WELLBEING_ROOT}[${extras}]"
    fi
    log "pip install -e '$spec'"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" ||
        die "pip install -e '$spec' failed"
    printf '%s %s\n' "$hash" "$extras" >>"$stamp"
}
