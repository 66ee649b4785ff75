"""A throwaway Kafka broker and real `shadowlens worker` processes, for the benches.

Shared by `bench/stream_throughput.py` and `bench/soak_memory.py`, so both run the worker
the same way: a fresh Apache Kafka (KRaft, `scripts/kafka.sh start`, as scripts/test.sh
does) that is always stopped, and workers with their own app id, topics and ClickHouse,
stopped by their pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from shadowlens.gateway.keys import generate

ROOT = Path(__file__).resolve().parents[1]
SHADOWLENS = str(Path(sys.executable).with_name("shadowlens"))


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """A fresh broker's bootstrap address for the `with` block; stopped even on failure
    (and by kafka.sh's watchdog should this process die)."""
    kafka_sh = ["bash", str(ROOT / "scripts" / "kafka.sh")]
    out = subprocess.run(
        [*kafka_sh, "start"],
        check=True,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "KAFKA_OWNER_PID": str(os.getpid())},
    ).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    try:
        yield values["KAFKA_BOOTSTRAP"]
    finally:
        # stops the broker by the pid file in its data dir, then removes the dir
        subprocess.run([*kafka_sh, "stop", values["KAFKA_DATADIR"]], stdin=subprocess.DEVNULL)


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def marked(path: Path, mark: str) -> list[dict[str, Any]]:
    """The JSON after `mark` on each line of a log (a line being written is skipped)."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            at = line.find(mark.encode())
            if at >= 0:
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line[at + len(mark) :]))
    return out


def worker_env(
    bootstrap: str, events_topic: str, workdir: Path, settings: dict[str, str]
) -> dict[str, str]:
    """The environment of one run's workers: its own app id, topics and ClickHouse, plus
    `settings` (SHADOWLENS_* variables) under test."""
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWLENS_")}
    env.update(
        SHADOWLENS_KAFKA_BOOTSTRAP=bootstrap,
        SHADOWLENS_APP_ID=f"bench-{run}",
        SHADOWLENS_DSN=f"chdb://{workdir / run / 'ch'}",
        SHADOWLENS_STATE_DIR=str(workdir),
        SHADOWLENS_TOPIC_EVENTS=events_topic,
        SHADOWLENS_TOPIC_REPARTITION=f"bench-{run}-repartition",
        SHADOWLENS_TOPIC_PAIRS=f"bench-{run}-pairs",
        SHADOWLENS_TOPIC_DEADLETTER=f"bench-{run}-deadletter",
        SHADOWLENS_TOPIC_CONTROL=f"bench-{run}-control",
        SHADOWLENS_TOPIC_COMMANDS=f"bench-{run}-commands",
        SHADOWLENS_SIGNING_KEY=generate("bench-worker").private_line(),  # signed, as deployed
        SHADOWLENS_SESSION_TIMEOUT_S="6",
        SHADOWLENS_HEARTBEAT_INTERVAL_S="0.5",
        SHADOWLENS_COMMIT_INTERVAL_S="1",
        SHADOWLENS_STATS_INTERVAL_S="0.25",
    )
    env.update(settings)
    return env


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_alive(procs: list[subprocess.Popen[bytes]], logs: list[Path], deadline: float) -> None:
    for p, log in zip(procs, logs, strict=True):
        if p.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker died; the end of its log:\n{tail}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"timed out; see {logs}")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a clean Faust shutdown), then kill what is still running after 60 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
