"""ClickHouse unreachable for 60 s while the worker runs (issue 6, outages).

First the writer alone (`shadowlens.streams.ch_writer`, over a store that fails on demand): backoff,
retries, health, deferred commits, backpressure. Then the real thing: the worker runs as a
real process (`tests.outage_worker`: `shadowlens worker` whose store fails to open and to
insert while a file exists). Traffic flows before, during and after the outage. While
ClickHouse is down the worker must stay up, say so (``shadowlens_store_healthy`` 0, one
log line), hold at most its configured buffer, stop consuming once the buffer is full
(backpressure), retry with backoff, and commit no offset. Afterwards every pair, window
and decision is in ClickHouse exactly once.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families
from shadowlens.comparators.pairs import Outcome, PairScore
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults
from shadowlens.replay.traffic import build_events
from shadowlens.store.client import Store
from shadowlens.streams import ch_writer
from shadowlens.streams.ch_writer import Backoff, ClickHouseWriter
from shadowlens.streams.metrics import Metrics
from shadowlens.streams.transactions import CommitDeferred

from tests.outage_worker import DOWN_FILE_ENV
from tests.stream_harness import (
    WorkerProcess,
    control_messages,
    expected_outcomes,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    report,
    store_counts,
    wait_for,
    worker_env,
)
from tests.test_stream_worker import free_port

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.reliability

REQUESTS = 3_000
OUTAGE_S = 60.0
MAX_BUFFERED_ROWS = 600  # small, so that the outage fills it and backpressure shows
CH_BATCH = 200
BATCH = 20  # records per agent batch: a pairs record then holds about this many pairs


# ---------------------------------------------------------------------------- the writer


class FakeStore:
    """Keeps what it is given; `down` makes every call fail like an unreachable server."""

    down = threading.Event()
    rows: ClassVar[list[str]] = []

    @classmethod
    def open(cls, dsn: str, database: str) -> FakeStore:
        cls._check()
        return cls()

    @classmethod
    def _check(cls) -> None:
        if cls.down.is_set():
            raise ConnectionError("ClickHouse unreachable")

    def migrate(self) -> list[str]:
        self._check()
        return []

    def write_pairs(self, scores: Sequence[PairScore]) -> int:
        self._check()
        self.rows.extend(s.request_id for s in scores)
        return len(scores)

    def close(self) -> None:
        pass


@pytest.fixture
def writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[ClickHouseWriter]:
    monkeypatch.setattr(ch_writer, "Store", FakeStore)
    FakeStore.down.clear()
    FakeStore.rows = []
    metrics = Metrics()
    w = ClickHouseWriter(
        "chdb:///unused",
        "db",
        batch_size=10,
        max_buffered_rows=50,
        backoff=Backoff(0.01, 0.04),
        metrics=metrics,
        rng=random.Random(0),
    )
    w.open()
    yield w
    FakeStore.down.clear()
    w.shutdown()


def scores(n: int, start: int = 0) -> list[PairScore]:
    return [
        PairScore(f"r{i}", "exp", "seg", "generation", "shadow", "candidate", Outcome.PAIRED, i)
        for i in range(start, start + n)
    ]


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff, rng = Backoff(0.5, 4.0), random.Random(1)
    for attempt, ceiling in enumerate([0.5, 1, 2, 4, 4, 4, 4]):
        delays = [backoff.delay_s(attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4, "jittered"
    assert backoff.delay_s(10_000, rng) <= 4.0


def test_an_outage_defers_commits_buffers_and_loses_nothing(writer: ClickHouseWriter) -> None:
    async def run() -> None:
        writer.pairs(scores(10))
        await writer.drain()
        assert FakeStore.rows == [f"r{i}" for i in range(10)] and writer.healthy
        FakeStore.down.set()
        writer.pairs(scores(30, 10))  # three inserts of 10: all fail and are retried
        await asyncio.sleep(0.2)
        assert not writer.healthy and writer.retries >= 2
        assert writer.buffered_rows == 30
        with pytest.raises(CommitDeferred):
            await writer.drain()
        FakeStore.down.clear()
        while not writer.healthy:  # until the next retry succeeds, commits stay deferred
            await asyncio.sleep(0.01)
        await writer.drain()

    asyncio.run(run())
    assert FakeStore.rows == [f"r{i}" for i in range(40)], "all, once, in order"
    assert writer.healthy and writer.buffered_rows == 0
    assert writer.metrics is not None
    assert writer.metrics.store_retries._value.get() == writer.retries


def test_a_full_buffer_makes_the_stage_wait_until_the_store_is_back(
    writer: ClickHouseWriter,
) -> None:
    async def run() -> tuple[bool, bool]:
        FakeStore.down.set()
        writer.pairs(scores(60))  # over max_buffered_rows=50
        waiting = asyncio.ensure_future(writer.throttle())
        await asyncio.sleep(0.2)
        blocked = not waiting.done() and writer.backpressure
        FakeStore.down.clear()
        await asyncio.wait_for(waiting, 5)
        return blocked, writer.backpressure

    blocked, still = asyncio.run(run())
    assert blocked and not still
    assert len(FakeStore.rows) == 60


def test_shutdown_during_an_outage_gives_up_instead_of_hanging(
    writer: ClickHouseWriter,
) -> None:
    FakeStore.down.set()
    writer.pairs(scores(10))
    time.sleep(0.1)
    started = time.monotonic()
    writer.shutdown()  # the fixture's shutdown is then a no-op
    assert time.monotonic() - started < 2
    assert FakeStore.rows == [] and not writer.healthy


class OutageWorker(WorkerProcess):
    """A `WorkerProcess` running `tests.outage_worker` instead of `shadowlens worker`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.outage_worker"],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )


def scrape(port: int) -> dict[str, float]:
    """The worker's unlabelled ``shadowlens_store_*`` samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("shadowlens_store_")
    }


def health(port: int) -> tuple[int, dict[str, object]]:
    """Faust web's ``/health/``: (HTTP status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on `topic`, per partition."""

    async def read() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}

    return asyncio.run(read())


@pytest.mark.kafka
def test_store_down_60s_buffers_within_bounds_and_loses_nothing(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=REQUESTS, seed=5)
    events = apply_faults(
        events, Faults(drop_share=0.02, duplicate_share=0.01), sample.instructions
    )
    expected = expected_outcomes(events)
    payloads = [e.to_json() for e in events]
    first, rest = payloads[: len(payloads) // 3], payloads[len(payloads) // 3 :]

    topics = make_topics(topic_factory)
    down = tmp_path / "clickhouse-down"
    metrics_port, web_port = free_port(), free_port()
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = worker_env(
        kafka_bootstrap,
        topics,
        dsn,
        SHADOWLENS_METRICS_PORT=str(metrics_port),
        SHADOWLENS_WEB_PORT=str(web_port),
        SHADOWLENS_CH_BATCH=str(CH_BATCH),
        SHADOWLENS_CH_MAX_BUFFERED_ROWS=str(MAX_BUFFERED_ROWS),
        SHADOWLENS_CH_RETRY_INITIAL_S="0.25",
        SHADOWLENS_CH_RETRY_MAX_S="4",
        SHADOWLENS_BATCH_SIZE=str(BATCH),
        **{DOWN_FILE_ENV: str(down)},
    )
    group = env["SHADOWLENS_APP_ID"]
    publish_payloads(kafka_bootstrap, topics.events, first)
    worker = OutageWorker(env, tmp_path / "worker.log")
    samples: list[dict[str, float]] = []
    try:
        wait_for(
            lambda: worker.stats().get("written", {}).get("pairs", 0) > 0,
            timeout=120,
            what="the first pairs in ClickHouse",
            workers=[worker],
        )
        down.touch()  # ClickHouse goes away
        started = time.monotonic()
        publish_payloads(kafka_bootstrap, topics.events, rest, end_marker=True)
        wait_for(
            lambda: scrape(metrics_port)["shadowlens_store_healthy"] == 0,
            timeout=20,
            what="a failed write",
            workers=[worker],
        )
        time.sleep(2 * float(env["SHADOWLENS_COMMIT_INTERVAL_S"]))  # a commit in flight ends
        before = committed(kafka_bootstrap, group, topics.pairs)
        while time.monotonic() - started < OUTAGE_S:  # sampled for the whole outage
            assert worker.alive(), worker.tail()
            samples.append(scrape(metrics_port))
            time.sleep(0.5)
        during = committed(kafka_bootstrap, group, topics.pairs)
        unhealthy, web_down = scrape(metrics_port), health(web_port)
        down.unlink()  # ClickHouse is back
        outage_s = time.monotonic() - started
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, last_window_end(events)),
            timeout=120,
            what="the decision of the last window after the outage",
            workers=[worker],
        )
        wait_for(
            lambda: scrape(metrics_port)["shadowlens_store_buffered_rows"] == 0,
            timeout=30,
            what="the buffer to empty",
            workers=[worker],
        )
        healthy, web_up = scrape(metrics_port), health(web_port)
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()

    buffered_max = max(s["shadowlens_store_buffered_rows"] for s in samples)
    retries = healthy["shadowlens_store_retries_total"]
    assert unhealthy["shadowlens_store_healthy"] == 0 and healthy["shadowlens_store_healthy"] == 1
    assert web_down[0] == 503 and web_down[1]["healthy"] is False
    assert web_up[0] == 200 and web_up[1]["healthy"] is True and web_up[1]["buffered_rows"] == 0
    assert all(s["shadowlens_store_healthy"] == 0 for s in samples), "unhealthy all along"
    assert any(s["shadowlens_store_backpressure"] == 1 for s in samples), "buffer never filled"
    # the bound: the limit plus what one judging batch (BATCH records) adds before the
    # stage waits -- far below the ~2,000 requests published during the outage
    assert MAX_BUFFERED_ROWS <= buffered_max <= MAX_BUFFERED_ROWS + BATCH * BATCH
    # capped backoff: ~60 s at 0.25 s doubling up to 4 s (2-4 s each) is 15-35 retries
    assert 10 <= retries <= 60, retries
    assert during == before, "offsets were committed while ClickHouse was down"
    log = worker.log_path.read_text()
    assert log.count("ClickHouse store failing") == 1, "one line per state change"
    assert log.count("ClickHouse store healthy again") == 1

    counts = store_counts(dsn, expected)
    with Store.open(dsn) as store:
        (pair_rows, window_rows, window_keys, decision_rows, decision_keys) = store.query(
            "SELECT (SELECT count() FROM pairs), (SELECT count() FROM windows), "
            "(SELECT uniqExact(experiment, segment, comparison, window_start) FROM windows), "
            "(SELECT count() FROM decisions), "
            "(SELECT uniqExact(experiment, epoch, decided_at) FROM decisions)"
        ).result_rows[0]
    messages = control_messages(kafka_bootstrap, topics.control)
    decisions = [m for m in messages if m["type"] == "decision"]
    duplicates = (pair_rows - len(expected)) + (window_rows - window_keys)
    duplicates += decision_rows - decision_keys
    report(
        capsys,
        outage_s=f"{outage_s:.0f}",
        buffered_max=int(buffered_max),
        buffer_limit=MAX_BUFFERED_ROWS,
        retries=int(retries),
        pairs=len(expected),
        lost=counts["lost"],
        duplicates=duplicates,
        windows=window_keys,
        decisions=decision_keys,
    )
    assert counts["lost"] == 0 and counts["duplicate_pairs"] == 0 and counts["unexpected"] == 0
    assert counts["wrong_outcome"] == 0
    assert counts["duplicate_window_counts"] == 0 and counts["window_paired_off"] == 0
    assert pair_rows == len(expected), "without FINAL: no pair inserted twice"
    assert window_rows == window_keys, "no window inserted twice"
    assert decision_rows == decision_keys == len(decisions), "each decision once, as published"
