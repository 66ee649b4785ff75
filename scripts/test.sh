#!/usr/bin/env bash
# The one test command: sets up .venv, starts a throwaway Apache Kafka broker, runs pytest
# against it and always stops the broker again.
#
#   scripts/test.sh                      # pytest -q --durations=20 (the slowest, for the CI budget)
#   scripts/test.sh tests/test_kafka_broker.py -x -vv
#
# Environment:
#   SHADOWLENS_TEST_EXTRAS   pip extras to install (default: dev,litellm,semantic)
#   plus everything scripts/setup.sh reads (PYTHON)
#   plus everything scripts/kafka.sh reads (KAFKA_VERSION, SHADOWLENS_CACHE, KAFKA_PORT, ...)
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"  # the real repo, also when reached through a symlink
cd "$ROOT"

log() { printf 'test.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VPY="$ROOT/.venv/bin/python"
SHADOWLENS_EXTRAS="${SHADOWLENS_TEST_EXTRAS-dev,litellm,semantic}" bash "$ROOT/scripts/setup.sh"

# ---------------------------------------------------------------------------------------- broker

KAFKA_DATADIR=""
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$KAFKA_DATADIR" ]]; then
        bash "$ROOT/scripts/kafka.sh" stop "$KAFKA_DATADIR" </dev/null || rc=1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Headless Chromium for the report's browser test (Debian's package; no browser download).
if ! command -v chromium >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] ||
        die "the browser tests need Debian's chromium: apt-get install chromium (as root)"
    log "installing chromium (apt-get)"
    apt_log="$(mktemp "${TMPDIR:-/tmp}/shadowlens-apt.XXXXXX")"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium fonts-dejavu-core; } </dev/null >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        die "apt-get install chromium failed"
    fi
    rm -f "$apt_log"
fi

bash "$ROOT/scripts/kafka.sh" fetch </dev/null

# kafka.sh start prints KEY=VALUE lines on stdout (progress goes to stderr). If it fails or is
# interrupted it stops its own broker; KAFKA_OWNER_PID makes a watchdog stop the broker should
# this script die without running its trap (e.g. SIGKILL).
start_out="$(KAFKA_OWNER_PID=$$ SHADOWLENS_PYTHON="$VPY" bash "$ROOT/scripts/kafka.sh" start </dev/null)" ||
    die "could not start the Kafka broker"
KAFKA_DATADIR="$(sed -n 's/^KAFKA_DATADIR=//p' <<<"$start_out")"
bootstrap="$(sed -n 's/^KAFKA_BOOTSTRAP=//p' <<<"$start_out")"
[[ -n "$bootstrap" && -n "$KAFKA_DATADIR" ]] || die "unexpected output from kafka.sh start: $start_out"

export SHADOWLENS_KAFKA_BOOTSTRAP="$bootstrap"
export SHADOWLENS_KAFKA_DATADIR="$KAFKA_DATADIR"
log "Kafka broker at $SHADOWLENS_KAFKA_BOOTSTRAP (data dir $KAFKA_DATADIR)"

# ---------------------------------------------------------------------------------------- pytest

[[ $# -eq 0 ]] && set -- -q --durations=20
rc=0
"$VPY" -m pytest "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    log "FAILED: pytest collected no tests (exit code 5) for: $*"
    rc=1
fi
exit "$rc"
