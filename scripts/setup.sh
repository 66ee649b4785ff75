#!/usr/bin/env bash
# Creates .venv (if missing) and installs shadowlens into it, editable, with extras: first the
# gateway SDK (gateway/, the distribution shadowlens-gateway the service depends on), then
# the service. Re-running is instant unless a pyproject.toml or the extras changed.
#
#   scripts/setup.sh                       # the service (no extras)
#   SHADOWLENS_EXTRAS=dev scripts/setup.sh
#
# Environment:
#   SHADOWLENS_EXTRAS  comma-separated pip extras (default: none)
#   PYTHON             interpreter used to create .venv when it is missing (>= 3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"  # the real repo, also when reached through a symlink
cd "$ROOT"

log() { printf 'setup.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
EXTRAS="${SHADOWLENS_EXTRAS-}"
EXTRAS="${EXTRAS// /}"

# ------------------------------------------------------------------------------------ virtualenv

find_python() {
    local candidates=() c
    [[ -n "${PYTHON:-}" ]] && candidates+=("$PYTHON")
    candidates+=(python3.13 python3.12 python3.11 python3)
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

if [[ ! -x "$VPY" ]]; then
    py="$(find_python)" || die "need Python >= 3.11 to create .venv (set PYTHON=...)"
    log "creating .venv with $py"
    "$py" -m venv "$VENV"
fi

spec="."
[[ -n "$EXTRAS" ]] && spec=".[${EXTRAS}]"
stamp_hash="$({
    cat pyproject.toml gateway/pyproject.toml
    printf '\nextras=%s\n' "$EXTRAS"
    "$VPY" -c 'import sys; print(sys.version)'
} | sha256sum | cut -c1-16)"
STAMP="$VENV/.shadowlens-install-$stamp_hash"
if [[ ! -f "$STAMP" ]]; then
    log "installing ./gateway and $spec into .venv (a pyproject.toml or the extras changed)"
    pip_log="$(mktemp "${TMPDIR:-/tmp}/shadowlens-pip.XXXXXX")"
    # One resolve: the local SDK satisfies the service's shadowlens-gateway pin (it is not
    # on PyPI), and pip installs it before the service that depends on it.
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off \
        "$VPY" -m pip install -q -e ./gateway -e "$spec" </dev/null >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        die "pip install -e ./gateway -e '$spec' failed"
    fi
    rm -f "$pip_log"
    rm -f "$VENV"/.shadowlens-install-*
    touch "$STAMP"
fi

