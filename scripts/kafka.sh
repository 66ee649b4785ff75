#!/usr/bin/env bash
# Throwaway single-node Apache Kafka (KRaft, broker+controller in one JVM) for the test suite.
#
#   scripts/kafka.sh fetch            download Kafka + runtime deps into the jar cache (idempotent)
#   scripts/kafka.sh start            format a fresh data dir, start the broker, wait until it answers;
#                                     prints KAFKA_BOOTSTRAP=127.0.0.1:<port> and KAFKA_DATADIR=<dir>
#   scripts/kafka.sh stop <datadir>   stop the broker started in <datadir> (by its pid file) and remove it
#   scripts/kafka.sh halt <datadir>   stop that broker but keep its data dir (an outage, for tests)
#   scripts/kafka.sh resume <datadir> start a halted broker again: same data dir, same ports
#
# Machine-readable KEY=VALUE lines go to stdout; progress and errors go to stderr.
#
# Environment:
#   KAFKA_VERSION            org.apache.kafka:kafka_2.13 version (default below)
#   SHADOWLENS_CACHE         cache root (default ~/.cache/shadowlens); jars go to kafka-<version>/libs
#   KAFKA_PORT               broker port (default: a free port); KAFKA_CONTROLLER_PORT likewise
#   KAFKA_MVN_ARGS           extra mvn arguments for fetch (e.g. -Dmaven.repo.local=...)
#   KAFKA_HEAP_OPTS          JVM heap flags (default -Xms128m -Xmx512m)
#   KAFKA_JVM_PERF_OPTS      JVM GC/JIT flags (default -XX:+UseG1GC -XX:MaxGCPauseMillis=20
#                            -XX:TieredStopAtLevel=1: C1 only starts ~1 s faster and was no
#                            slower for test-sized loads; drop it for long benchmarks)
#   KAFKA_START_TIMEOUT      seconds to wait for the broker to answer (default 90)
#   KAFKA_OWNER_PID          if set, a watchdog stops the broker once this process is gone
#   SHADOWLENS_PYTHON        python with aiokafka for the readiness check (default: repo .venv)
set -euo pipefail

# 4.4.0 is listed in kafka_2.13's maven-metadata.xml but kafka-tools-api:4.4.0 is not on
# Maven Central (404), so the newest complete 4.x release is pinned here.
KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
LOG4J_VERSION="2.25.3"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
DEFAULT_PERF_OPTS="-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1"

REPO_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
CACHE_ROOT="${SHADOWLENS_CACHE:-$HOME/.cache/shadowlens}"
KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
STAMP="$LIBS/.complete"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pick_python() {
    if [[ -n "${SHADOWLENS_PYTHON:-}" ]]; then
        echo "$SHADOWLENS_PYTHON"
    elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    else
        command -v python3 || die "no python3 found"
    fi
}

# ----------------------------------------------------------------------------------------- fetch

pom() {
    # Kafka 4.x logs through slf4j-api 1.7.x (pinned by kafka_2.13's pom) to log4j2; the
    # slf4j 1.x -> log4j2 binding is log4j-slf4j-impl (log4j-slf4j2-impl is for slf4j 2.x and
    # would leave slf4j 1.7 with the NOP logger).
    cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>shadowlens.local</groupId>
  <artifactId>kafka-test-broker</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

cmd_fetch() {
    # Cached when a complete download made from this very pom is there.
    if [[ -f "$STAMP" && -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] &&
        [[ "$(pom)" == "$(cat "$LIBS/.pom.xml" 2>/dev/null)" ]]; then
        [[ "${1:-}" == quiet ]] || log "Kafka $KAFKA_VERSION jars already in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka $KAFKA_VERSION)"
    command -v java >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17+)"
    mkdir -p "$KAFKA_HOME"
    local tmp
    tmp="$(mktemp -d "$KAFKA_HOME/libs.tmp.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    pom >"$tmp/pom.xml"
    log "fetching Kafka $KAFKA_VERSION and its runtime dependencies with mvn into $LIBS ..."
    local -a extra=()
    # shellcheck disable=SC2206
    [[ -n "${KAFKA_MVN_ARGS:-}" ]] && extra=(${KAFKA_MVN_ARGS})
    if ! mvn -B -q "${extra[@]}" -f "$tmp/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$tmp/libs" -Dmdep.useRepositoryLayout=false \
        </dev/null >"$tmp/mvn.log" 2>&1; then
        cat "$tmp/mvn.log" >&2
        die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
    fi
    for j in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar" \
        "log4j-core-$LOG4J_VERSION.jar" "log4j-slf4j-impl-$LOG4J_VERSION.jar"; do
        [[ -f "$tmp/libs/$j" ]] || die "fetched jar set is missing $j"
    done
    cp "$tmp/pom.xml" "$tmp/libs/.pom.xml"
    touch "$tmp/libs/.complete"
    # Publish atomically. Never delete a complete cache that a concurrent run may be using.
    if [[ -f "$STAMP" && "$(pom)" == "$(cat "$LIBS/.pom.xml" 2>/dev/null)" ]]; then
        log "another fetch finished first; keeping its jars"
    else
        rm -rf "$LIBS" # stale (other pom) or incomplete
        mv -T "$tmp/libs" "$LIBS" 2>/dev/null || [[ -f "$STAMP" ]] ||
            die "could not move jars into $LIBS"
    fi
    rm -rf "$tmp"
    trap - EXIT
    log "Kafka $KAFKA_VERSION: $(find "$LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$LIBS" | cut -f1) in $LIBS"
}

# ----------------------------------------------------------------------------------------- start

free_port() {
    "$PY" - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

write_configs() { # datadir port cport
    local d="$1" port="$2" cport="$3"
    cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$d/logs
metadata.log.dir=$d/metadata

auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.leader.rebalance.enable=false

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.dedupe.buffer.size=8388608
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=60000
EOF
    cat >"$d/log4j2.properties" <<EOF
status = warn
name = shadowlens-test-kafka
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $d/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

JAVA_COMMON=()
java_common() { # datadir
    local d="$1"
    # shellcheck disable=SC2206
    JAVA_COMMON=(
        ${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
        -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$d/log4j2.properties"
        -Dlog4j2.disable.jmx=true
        -Dkafka.logs.dir="$d"
        -cp "$LIBS/*"
    )
}

# Real readiness check: a Kafka Metadata request (aiokafka admin client), plus a check that the
# broker is unfenced and lists itself.
wait_ready() { # datadir port pid timeout
    local d="$1" port="$2" pid="$3" timeout="$4"
    KAFKA_WAIT_PID="$pid" KAFKA_WAIT_TIMEOUT="$timeout" KAFKA_WAIT_BOOTSTRAP="127.0.0.1:$port" \
        "$PY" - <<'EOF'
import asyncio, logging, os, socket, sys, time

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # no "Unable connect" spam while waiting
bootstrap = os.environ["KAFKA_WAIT_BOOTSTRAP"]
host, port = bootstrap.rsplit(":", 1)
pid = int(os.environ["KAFKA_WAIT_PID"])
deadline = time.monotonic() + float(os.environ["KAFKA_WAIT_TIMEOUT"])

def alive():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

async def probe():
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                connections_max_idle_ms=10000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        await asyncio.wait_for(admin.list_topics(), 5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
        return bool(cluster.get("brokers"))
    finally:
        try:
            await asyncio.wait_for(admin.close(), 5)
        except Exception:
            pass

last = None
while time.monotonic() < deadline:
    if not alive():
        print(f"broker process {pid} exited", file=sys.stderr)
        sys.exit(2)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        if asyncio.run(probe()):
            sys.exit(0)
    except Exception as exc:  # not up yet
        last = exc
    time.sleep(0.5)
print(f"broker at {bootstrap} did not answer a metadata request in time (last error: {last!r})",
      file=sys.stderr)
sys.exit(1)
EOF
}

kill_pid() { # pid [grace-seconds]
    local pid="$1" grace="${2:-30}" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $pid still alive after ${grace}s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

start_watchdog() { # datadir broker-pid owner-pid
    local d="$1" bpid="$2" owner="$3"
    (
        trap '' INT HUP
        while kill -0 "$owner" 2>/dev/null && kill -0 "$bpid" 2>/dev/null; do sleep 2; done
        if kill -0 "$bpid" 2>/dev/null && [[ -f "$d/kafka.pid" ]]; then
            kill -TERM "$bpid" 2>/dev/null || true
            for _ in $(seq 1 150); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$bpid" 2>/dev/null || true
            rm -rf "$d"
        fi
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$d/watchdog.pid"
}

LAUNCHED_PID=""
launch() { # datadir: run the broker of a formatted data dir in the background
    local d="$1"
    java_common "$d"
    # shellcheck disable=SC2086
    java "${JAVA_COMMON[@]}" ${KAFKA_JVM_PERF_OPTS:-$DEFAULT_PERF_OPTS} \
        -Dshadowlens.test.kafka="$d" kafka.Kafka "$d/server.properties" \
        </dev/null >>"$d/kafka.out" 2>&1 &
    LAUNCHED_PID=$!
    echo "$LAUNCHED_PID" >"$d/kafka.pid"
}

START_DIR=""
START_PID=""
start_cleanup() {
    local rc=$?
    if [[ -n "$START_PID" ]]; then
        kill_pid "$START_PID" 10
    fi
    if [[ -n "$START_DIR" && -d "$START_DIR" ]]; then
        rm -rf "$START_DIR"
    fi
    exit "$rc"
}

cmd_start() {
    cmd_fetch quiet
    command -v java >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17+)"
    PY="$(pick_python)"
    "$PY" -c 'import aiokafka' 2>/dev/null ||
        die "$PY cannot import aiokafka (needed for the readiness check); set SHADOWLENS_PYTHON"
    local timeout="${KAFKA_START_TIMEOUT:-90}" attempts=1
    [[ -z "${KAFKA_PORT:-}" ]] && attempts=3 # free-port races: retry with new ports

    trap start_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local attempt d port cport cluster_id pid t0 rc
    for ((attempt = 1; attempt <= attempts; attempt++)); do
        d="$(mktemp -d "${TMPDIR:-/tmp}/shadowlens-kafka.XXXXXX")"
        START_DIR="$d"
        port="${KAFKA_PORT:-$(free_port)}"
        cport="${KAFKA_CONTROLLER_PORT:-$(free_port)}"
        while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done
        mkdir -p "$d/logs" "$d/metadata"
        write_configs "$d" "$port" "$cport"
        java_common "$d"
        # A cluster id is 16 random bytes in URL-safe base64; one that starts with "-" (1 in
        # 64) is read as an option by the format tool ("--cluster-id: expected one
        # argument"), so draw again, as Kafka's own Uuid.randomUuid() does.
        cluster_id="$("$PY" -c 'import base64, uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
    pass
print(i)')"

        t0=$SECONDS
        # One-shot tool: C1 only + serial GC start noticeably faster (~0.4 s of ~1.5 s).
        if ! java "${JAVA_COMMON[@]}" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
            kafka.tools.StorageTool format \
            -t "$cluster_id" -c "$d/server.properties" </dev/null >"$d/format.log" 2>&1; then
            cat "$d/format.log" >&2
            die "kafka-storage format failed"
        fi

        launch "$d"
        pid="$LAUNCHED_PID"
        START_PID="$pid"
        echo "127.0.0.1:$port" >"$d/bootstrap"
        log "broker pid $pid starting on 127.0.0.1:$port (controller 127.0.0.1:$cport), data dir $d"

        rc=0
        wait_ready "$d" "$port" "$pid" "$timeout" || rc=$?
        if [[ $rc -eq 0 ]]; then
            break
        fi
        log "broker did not become ready; last 50 lines of $d/server.log:"
        tail -n 50 "$d/server.log" >&2 2>/dev/null || true
        if [[ -s "$d/kafka.out" ]]; then
            log "stdout/stderr of the JVM:"
            tail -n 50 "$d/kafka.out" >&2
        fi
        if [[ $rc -eq 2 && $attempt -lt $attempts ]] &&
            grep -qiE 'address already in use|BindException' "$d/server.log" "$d/kafka.out" 2>/dev/null; then
            log "port clash, retrying with other ports"
            kill_pid "$pid" 10
            START_PID=""
            rm -rf "$d"
            START_DIR=""
            continue
        fi
        exit 1
    done

    if [[ -n "${KAFKA_OWNER_PID:-}" ]]; then
        start_watchdog "$d" "$pid" "$KAFKA_OWNER_PID"
    fi
    START_PID=""
    START_DIR=""
    trap - EXIT INT TERM
    log "broker ready in $((SECONDS - t0))s"
    echo "KAFKA_BOOTSTRAP=127.0.0.1:$port"
    echo "KAFKA_DATADIR=$d"
}

# ------------------------------------------------------------------------------------------ stop

broker_dir() { # command datadir: the absolute data dir, checked to be one of ours
    local cmd="$1" d="${2:-}"
    [[ -n "$d" ]] || die "usage: $0 $cmd <datadir>"
    [[ -d "$d" ]] || die "no data dir $d"
    d="$(cd "$d" && pwd)"
    [[ -f "$d/server.properties" || -f "$d/kafka.pid" ]] ||
        die "$d does not look like a shadowlens Kafka data dir; not touching it"
    echo "$d"
}

broker_pid() { # datadir: the pid of the broker running on it, or nothing
    local d="$1" pid
    [[ -f "$d/kafka.pid" ]] || return 0
    pid="$(cat "$d/kafka.pid")"
    # Guard against a recycled pid: the broker's command line names its data dir.
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$d/server.properties"; then
        echo "$pid"
    fi
}

halt_broker() { # datadir
    local d="$1" pid wpid
    if [[ -f "$d/watchdog.pid" ]]; then
        wpid="$(cat "$d/watchdog.pid")"
        if [[ "$wpid" =~ ^[0-9]+$ ]] &&
            tr '\0' ' ' <"/proc/$wpid/cmdline" 2>/dev/null | grep -qF 'kafka.sh'; then
            kill "$wpid" 2>/dev/null || true
        fi
    fi
    pid="$(broker_pid "$d")"
    if [[ -n "$pid" ]]; then
        log "stopping broker pid $pid"
        kill_pid "$pid" "${KAFKA_STOP_TIMEOUT:-30}"
    fi
}

cmd_stop() {
    local d
    if [[ -n "${1:-}" && ! -d "$1" ]]; then
        log "data dir $1 is already gone"
        return 0
    fi
    d="$(broker_dir stop "${1:-}")"
    halt_broker "$d"
    rm -rf "$d"
}

cmd_halt() {
    local d
    d="$(broker_dir halt "${1:-}")"
    halt_broker "$d"
}

cmd_resume() {
    local d port pid rc=0
    d="$(broker_dir resume "${1:-}")"
    [[ -z "$(broker_pid "$d")" ]] || die "the broker of $d is running"
    PY="$(pick_python)"
    port="$(cut -d: -f2 "$d/bootstrap")"
    launch "$d"
    pid="$LAUNCHED_PID"
    log "broker pid $pid resuming on 127.0.0.1:$port, data dir $d"
    wait_ready "$d" "$port" "$pid" "${KAFKA_START_TIMEOUT:-90}" || rc=$?
    if [[ $rc -ne 0 ]]; then
        tail -n 50 "$d/server.log" >&2 2>/dev/null || true
        kill_pid "$pid" 10
        die "broker did not come back on 127.0.0.1:$port"
    fi
    if [[ -n "${KAFKA_OWNER_PID:-}" ]]; then
        start_watchdog "$d" "$pid" "$KAFKA_OWNER_PID"
    fi
    echo "KAFKA_BOOTSTRAP=127.0.0.1:$port"
    echo "KAFKA_DATADIR=$d"
}

case "${1:-}" in
fetch) cmd_fetch ;;
start) cmd_start ;;
stop)
    shift
    cmd_stop "$@"
    ;;
halt)
    shift
    cmd_halt "$@"
    ;;
resume)
    shift
    cmd_resume "$@"
    ;;
*)
    echo "usage: $0 {fetch|start|stop <datadir>|halt <datadir>|resume <datadir>}" >&2
    exit 2
    ;;
esac
