"""Helpers for the streaming tests: topics, worker processes, reading topics back.

Workers run as real `shadowlens worker` processes (one consumer group per test, a unique
Faust app id so changelog topics never collide). Only processes started here are
stopped, by their pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from shadowlens.gateway.keys import generate
from shadowlens.job.sinks import MemorySink
from shadowlens.judge.policy import Policy, load_policy
from shadowlens.pipeline.windows import window_start
from shadowlens.replay.publish import publish
from shadowlens.schemas.events import Arm, Event
from shadowlens.store.client import Store
from shadowlens.streams.app import STATS_MARK

SHADOWLENS = str(Path(sys.executable).with_name("shadowlens"))
KAFKA_SH = Path(__file__).resolve().parents[1] / "scripts" / "kafka.sh"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
WORKER_KEY = generate("test-worker")  # signs the test workers' control messages


@dataclass(frozen=True)
class StreamTopics:
    events: str
    repartition: str
    pairs: str
    deadletter: str
    control: str
    commands: str


def make_topics(
    topic_factory: Any, events_partitions: int = 4, pairs_partitions: int = 1
) -> StreamTopics:
    """Fresh topics for one test (deleted by the factory afterwards)."""
    big = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}  # room for a `too_large` event
    return StreamTopics(
        events=topic_factory(events_partitions, prefix="events", configs=big),
        repartition=topic_factory(events_partitions, prefix="repart", configs=big),
        pairs=topic_factory(pairs_partitions, prefix="pairs", configs=big),
        deadletter=topic_factory(pairs_partitions, prefix="dlq"),
        control=topic_factory(1, prefix="control"),
        commands=topic_factory(pairs_partitions, prefix="commands"),
    )


def worker_env(
    bootstrap: str,
    topics: StreamTopics,
    dsn: str,
    *,
    app_id: str | None = None,
    guarantee: str = "at_least_once",
    policy: Path | None = None,
    **extra: str,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWLENS_")}
    env.update(
        SHADOWLENS_KAFKA_BOOTSTRAP=bootstrap,
        SHADOWLENS_APP_ID=app_id or f"sl-test-{uuid.uuid4().hex[:10]}",
        SHADOWLENS_DSN=dsn,
        SHADOWLENS_PROCESSING_GUARANTEE=guarantee,
        SHADOWLENS_TOPIC_EVENTS=topics.events,
        SHADOWLENS_TOPIC_REPARTITION=topics.repartition,
        SHADOWLENS_TOPIC_PAIRS=topics.pairs,
        SHADOWLENS_TOPIC_DEADLETTER=topics.deadletter,
        SHADOWLENS_TOPIC_CONTROL=topics.control,
        SHADOWLENS_TOPIC_COMMANDS=topics.commands,
        # short timeouts: a dead member leaves the group in seconds, not a minute
        SHADOWLENS_SESSION_TIMEOUT_S="6",
        SHADOWLENS_HEARTBEAT_INTERVAL_S="0.5",
        SHADOWLENS_REBALANCE_TIMEOUT_S="20",
        SHADOWLENS_COMMIT_INTERVAL_S="0.5",
        SHADOWLENS_STATS_INTERVAL_S="0.5",
        SHADOWLENS_SWEEP_INTERVAL_S="0.5",
        SHADOWLENS_STATE_DIR=str(Path(tempfile.gettempdir()) / "shadowlens-test-state"),
        SHADOWLENS_SIGNING_KEY=WORKER_KEY.private_line(),
    )
    if policy is not None:
        env["SHADOWLENS_POLICY"] = str(policy)
    env.update(extra)
    return env


class WorkerProcess:
    """One `shadowlens worker` subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [SHADOWLENS, "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self) -> dict[str, Any]:
        """The worker's last logged counters (empty before the first report)."""
        last: dict[str, Any] = {}
        with open(self.log_path, "rb") as fh:
            for line in fh:
                mark = line.find(STATS_MARK.encode())
                if mark >= 0:
                    try:
                        last = orjson.loads(line[mark + len(STATS_MARK) :])
                    except orjson.JSONDecodeError:
                        continue  # a line still being written
        return last

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: a clean shutdown commits and flushes ClickHouse."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
            message = f"worker {self.pid} ignored SIGTERM; log {self.log_path}"
            raise AssertionError(message) from None
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL: no commit, no flush, no goodbye."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, workers: Sequence[WorkerProcess] = ()
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for w in workers:
            if not w.alive():
                raise AssertionError(f"worker {w.pid} died while waiting for {what}:\n{w.tail()}")
        time.sleep(0.25)
    logs = "\n---\n".join(w.tail() for w in workers)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def publish_payloads(bootstrap: str, topic: str, payloads: Sequence[bytes], **kw: Any) -> None:
    asyncio.run(publish(payloads, bootstrap, topic, max_request_size=MAX_MESSAGE_BYTES, **kw))


RawRecord = tuple[bytes | None, bytes, list[tuple[str, bytes | None]], int | None]


async def _send_raw(bootstrap: str, topic: str, records: Sequence[RawRecord]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_MESSAGE_BYTES
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value, key=key, headers=headers, partition=partition)
            for key, value, headers, partition in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def send_raw(bootstrap: str, topic: str, records: Sequence[RawRecord]) -> None:
    """Produce (key, value, headers, partition) records exactly as given, in order: any
    key (none, not UTF-8), any headers (null values too), a partition or None."""
    asyncio.run(_send_raw(bootstrap, topic, records))


async def _drain(bootstrap: str, topic: str, isolation_level: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batches = await consumer.getmany(*tps, timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, *, committed: bool = True) -> list[Any]:
    """Every record of `topic` now (read_committed unless `committed=False`)."""
    level = "read_committed" if committed else "read_uncommitted"
    return asyncio.run(_drain(bootstrap, topic, level))


def control_messages(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_topic(bootstrap, topic)]


def final_decision_seen(bootstrap: str, topic: str, decided_at_ms: int) -> bool:
    """Whether a decision of the last window (end of input) is on the control topic."""
    return any(
        m.get("type") == "decision" and m.get("decided_at_ms") == decided_at_ms
        for m in control_messages(bootstrap, topic)
    )


def bounded_shuffle(items: Sequence[Any], horizon: int, seed: int) -> list[Any]:
    """Shuffle so that no item moves more than `horizon` places: out of order, but only as
    far as a real publisher's retries and parallel sends would put it."""
    import random

    rng = random.Random(seed)
    keyed = sorted(range(len(items)), key=lambda i: i + rng.uniform(0, horizon))
    return [items[i] for i in keyed]


# --------------------------------------------------------------------------- ground truth


def expected_outcomes(events: Sequence[Event]) -> dict[str, str]:
    """request id -> the outcome its pairs row must have (a request whose candidate was
    dropped is a `candidate_missing` orphan)."""
    arms: dict[str, set[str]] = {}
    for e in events:
        arms.setdefault(e.request_id, set()).add(str(e.arm))
    return {
        rid: "paired" if str(Arm.CANDIDATE) in a else "candidate_missing" for rid, a in arms.items()
    }


def event_times(events: Sequence[Event], policy: Policy | None = None) -> list[int]:
    """The event time of every pair and orphan the events make (`comparators.pairs`): a
    pair's completion on the primary's clock, an orphan's pairing deadline (under `policy`,
    the shipped one by default)."""
    max_call_ms = (policy or load_policy()).pairing.max_call_ms
    requests: dict[str, dict[str, Event]] = {}
    for e in events:
        requests.setdefault(e.request_id, {}).setdefault(str(e.arm), e)
    out = []
    for halves in requests.values():
        deadline = min(e.start_time_ms for e in halves.values()) + max_call_ms
        primary = halves.get(str(Arm.PRIMARY))
        if primary is None:
            out.append(deadline)
            continue
        others = [e for arm, e in halves.items() if arm != str(Arm.PRIMARY)]
        out += [
            primary.start_time_ms + round(max(primary.latency_ms, e.latency_ms)) for e in others
        ]
        if str(Arm.CANDIDATE) not in halves:
            out.append(deadline)
    return out


def last_window_end(events: Sequence[Event], policy: Policy | None = None) -> int:
    """`decided_at_ms` of the decision on the last window (see `final_decision_seen`)."""
    policy = policy or load_policy()
    size_ms = policy.windows.size_ms
    return window_start(max(event_times(events, policy)), size_ms) + size_ms


def replay_windows(memory: MemorySink) -> list[tuple[Any, ...]]:
    """The in-process replay's closed windows as the worker tests read them from ClickHouse:
    (experiment, segment, comparison, start ms, requests, paired, late pairs), sorted."""
    return sorted(
        (
            w.key.experiment,
            w.key.segment,
            w.key.comparison,
            w.key.start_ms,
            w.aggregate.n_requests,
            w.aggregate.n_paired,
            w.late_pairs,
        )
        for w in memory.closed
    )


def replay_decisions(memory: MemorySink) -> list[tuple[Any, ...]]:
    """The replay's decisions as (experiment, epoch, decided_at_ms, action), sorted: the
    first four fields of `decision_key`."""
    return sorted((d.experiment, d.epoch, d.decided_at_ms, str(d.action)) for d in memory.made)


def decision_key(m: dict[str, Any]) -> tuple[Any, ...]:
    """A decision on the control topic: experiment, epoch, time, action, then its evidence
    (metric, segment, verdict, n)."""
    evidence = tuple((e["metric"], e["segment"], e["verdict"], e["n"]) for e in m["evidence"])
    return (m["experiment"], m["epoch"], m["decided_at_ms"], m["action"], evidence)


def store_counts(dsn: str, expected: dict[str, str]) -> dict[str, int]:
    """What ClickHouse holds against `expected`: pairs lost, pairs stored twice (rows of one
    request under FINAL, or -- merges pending -- distinct keys beyond one per request),
    pairs with the wrong outcome, and requests that windows counted more (or fewer) times
    than once. All zero when nothing was lost or double-counted."""
    with Store.open(dsn) as store:
        final = store.query("SELECT request_id, outcome FROM pairs FINAL").result_rows
        unique = store.query("SELECT uniqExact(request_id, comparison) FROM pairs").result_rows
        windowed = store.query(
            "SELECT sum(n_requests), sum(n_paired), sum(n_candidate_missing) FROM windows FINAL"
        ).result_rows[0]
    stored = dict(final)
    n_paired = sum(1 for o in expected.values() if o == "paired")
    return {
        "pairs_expected": len(expected),
        "lost": len(expected.keys() - stored.keys()),
        "duplicate_pairs": (len(final) - len(stored)) + max(0, unique[0][0] - len(expected)),
        "wrong_outcome": sum(1 for rid, o in stored.items() if expected.get(rid, o) != o),
        "unexpected": len(stored.keys() - expected.keys()),
        "duplicate_window_counts": int(windowed[0] or 0) - len(expected),
        "window_paired_off": int(windowed[1] or 0) - n_paired,
        "window_orphans_off": int(windowed[2] or 0) - (len(expected) - n_paired),
    }


def report(capsys: pytest.CaptureFixture[str], **counts: object) -> None:
    """One `RELIABILITY key=value ...` line on the terminal, even under -q (issue 6)."""
    with capsys.disabled():
        print("\nRELIABILITY " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


# --------------------------------------------------------------------------- own broker


class Broker:
    """A broker of its own (`scripts/kafka.sh`) for tests that stop it: the suite's shared
    broker must stay up. `halt` and `resume` keep its data dir and port."""

    def __init__(self) -> None:
        env = {**os.environ, "KAFKA_OWNER_PID": str(os.getpid())}  # stopped if pytest dies
        out = self._sh("start", env=env)
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.bootstrap = values["KAFKA_BOOTSTRAP"]
        self.datadir = values["KAFKA_DATADIR"]

    @staticmethod
    def _sh(*args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["bash", str(KAFKA_SH), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise AssertionError(f"kafka.sh {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def halt(self) -> None:
        self._sh("halt", self.datadir)

    def resume(self) -> None:
        env = {**os.environ, "KAFKA_OWNER_PID": str(os.getpid())}
        self._sh("resume", self.datadir, env=env)

    def stop(self) -> None:
        self._sh("stop", self.datadir)
