"""A slow ClickHouse and a slow model never hold up the control topic (issue 15, concurrency).

The worker runs as a real process under exactly_once with the real ONNX encoder
(`tests.outage_worker`). Every ClickHouse insert hangs for 60 s, and from halfway through
every semantic encoding hangs for 60 s, while traffic keeps arriving. A router's view of
``shadow.control`` (a read_committed consumer, timing each record as it becomes visible)
must keep getting heartbeats at their interval: no lease lapses. An operator's pause and
resume, sent while both are stalled, are applied and published within seconds.
Afterwards every pair, window and decision is in ClickHouse once, and every decision on
the control topic once. Before issue 15 (one lock for the worker) no heartbeat came for
62 s under either stall alone: the lease lapsed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from shadowlens.gateway.control import sign
from shadowlens.gateway.keys import generate
from shadowlens.judge.policy import load_policy
from shadowlens.judge.verdicts import Command
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.traffic import build_events
from shadowlens.store.client import Store
from shadowlens.streams.control import command_message

from tests.outage_worker import ENCODER_STALL_FILE_ENV, STORE_STALL_FILE_ENV
from tests.stream_harness import (
    control_messages,
    expected_outcomes,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    report,
    send_raw,
    store_counts,
    wait_for,
    worker_env,
)
from tests.test_reliability_store import OutageWorker, scrape
from tests.test_semantic import _ensure_onnx_export
from tests.test_stream_worker import free_port

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.reliability, pytest.mark.semantic]

REQUESTS = 3_000
OPERATOR = generate("operator")
STALL_S = 60.0  # each stall; the encoder's starts halfway through the store's
COMMAND_S = 5.0  # an operator's command is published within this, stalls or not


class ControlWatch:
    """What a router sees: every control record with the wall time (ms) it became
    visible to a read_committed consumer, read live on a thread of its own."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> ControlWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while not self._stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now_ms = int(time.time() * 1000)
                    self.seen += [(now_ms, orjson.loads(r.value)) for r in records]
        finally:
            await consumer.stop()

    def heartbeats(self) -> list[tuple[int, dict[str, Any]]]:
        return [(at, m) for at, m in self.seen if m["type"] == "heartbeat"]


def lease_gaps(
    heartbeats: list[tuple[int, dict[str, Any]]], start_ms: int, end_ms: int
) -> tuple[float, int]:
    """Over the gaps between two heartbeats of an experiment becoming visible that overlap
    [`start_ms`, `end_ms`]: the longest (s), and how many outlasted the earlier one's lease."""
    last: dict[str, tuple[int, dict[str, Any]]] = {}
    longest, lapses = 0.0, 0
    for at, message in heartbeats:
        before = last.get(message["experiment"])
        if before is not None and at >= start_ms and before[0] <= end_ms:
            longest = max(longest, (at - before[0]) / 1000)
            lapses += at > before[1]["lease_expires_at_ms"]
        last[message["experiment"]] = (at, message)
    return longest, lapses


def test_a_stalled_store_and_encoder_hold_up_no_heartbeat_and_no_command(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ramp = load_policy().ramp
    _ensure_onnx_export()
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=REQUESTS, seed=7)
    expected = expected_outcomes(events)
    payloads = [e.to_json() for e in events]
    third = len(payloads) // 3
    parts = payloads[:third], payloads[third : 2 * third], payloads[2 * third :]

    topics = make_topics(topic_factory)
    store_stall, encoder_stall = tmp_path / "store-stall", tmp_path / "encoder-stall"
    metrics_port = free_port()
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = worker_env(
        kafka_bootstrap,
        topics,
        dsn,
        guarantee="exactly_once",
        SHADOWLENS_SEMANTIC="onnx",
        SHADOWLENS_METRICS_PORT=str(metrics_port),
        SHADOWLENS_OPERATOR_KEYS=OPERATOR.public_line(),
        **{STORE_STALL_FILE_ENV: str(store_stall), ENCODER_STALL_FILE_ENV: str(encoder_stall)},
    )
    publish_payloads(kafka_bootstrap, topics.events, parts[0])
    worker = OutageWorker(env, tmp_path / "worker.log")
    backpressure: list[float] = []

    def stalled_until(s: float) -> None:
        while time.time() - started < s:
            assert worker.alive(), worker.tail()
            backpressure.append(scrape(metrics_port)["shadowlens_store_backpressure"])
            time.sleep(0.5)

    def operator(command: Command, epoch: int) -> float:
        """Send `command`; seconds until its decision is visible."""
        sent = time.time()
        message = command_message(experiment, command, epoch, "stall test", int(sent * 1000))
        raw = orjson.dumps(sign(message, OPERATOR))
        send_raw(kafka_bootstrap, topics.commands, [(experiment.encode(), raw, [], None)])
        decided = wait_for(
            lambda: [
                m for _, m in watch.seen if (m.get("operator") or {}).get("command") == command
            ],
            timeout=60,
            what=f"the decision of {command}",
            workers=[worker],
        )
        epochs[command] = decided[-1]["epoch"]
        return time.time() - sent

    epochs: dict[str, int] = {}
    with ControlWatch(kafka_bootstrap, topics.control) as watch:
        try:
            first = wait_for(watch.heartbeats, timeout=120, what="a heartbeat", workers=[worker])
            experiment, epoch = first[0][1]["experiment"], first[0][1]["epoch"]
            store_stall.touch()
            started = time.time()
            publish_payloads(kafka_bootstrap, topics.events, parts[1])
            stalled_until(STALL_S / 2)
            encoder_stall.touch()
            publish_payloads(kafka_bootstrap, topics.events, parts[2], end_marker=True)
            time.sleep(2)  # a pairing batch is at the model
            paused_s = operator(Command.PAUSE, epoch)
            resumed_s = operator(Command.RESUME, epochs[Command.PAUSE])
            stalled_until(STALL_S)
            store_stall.unlink()
            stalled_until(STALL_S * 1.5)
            encoder_stall.unlink()
            released_at = int(time.time() * 1000)
            wait_for(
                lambda: final_decision_seen(
                    kafka_bootstrap, topics.control, last_window_end(events)
                ),
                timeout=120,
                what="the decision of the last window after the stalls",
                workers=[worker],
            )
        finally:
            code = worker.stop()
    assert code == 0, worker.tail()

    longest_s, lapses = lease_gaps(watch.heartbeats(), int(started * 1000), released_at)
    counts = store_counts(dsn, expected)
    with Store.open(dsn) as store:
        # a pair's row is written again when its semantic score follows it (streams/later.py):
        # without FINAL, each pair has at most one row without and one with its score
        (pair_copies, window_rows, window_keys, decision_rows, decision_keys) = store.query(
            "SELECT (SELECT max(c) FROM (SELECT count() AS c FROM pairs "
            "GROUP BY request_id, comparison, isNull(semantic_similarity))), "
            "(SELECT count() FROM windows), "
            "(SELECT uniqExact(experiment, segment, comparison, window_start) FROM windows), "
            "(SELECT count() FROM decisions), "
            "(SELECT uniqExact(experiment, epoch, decided_at, command_id) FROM decisions)"
        ).result_rows[0]
    messages = control_messages(kafka_bootstrap, topics.control)
    decisions = [m for m in messages if m["type"] == "decision"]
    report(
        capsys,
        stall_s=STALL_S,
        heartbeat_s=ramp.heartbeat_ms / 1000,
        lease_s=ramp.lease_ms / 1000,
        longest_heartbeat_gap_s=f"{longest_s:.1f}",
        lease_lapses=lapses,
        pause_published_s=f"{paused_s:.1f}",
        resume_published_s=f"{resumed_s:.1f}",
        store_backpressure=max(backpressure),
        pairs=len(expected),
        lost=counts["lost"],
        duplicate_pairs=counts["duplicate_pairs"],
        windows=window_keys,
        decisions=decision_keys,
    )
    assert max(backpressure) == 1, "no write hung: the store stall tested nothing"
    assert 0 < longest_s <= 1.5 * ramp.heartbeat_ms / 1000 and lapses == 0
    assert paused_s <= COMMAND_S and resumed_s <= COMMAND_S
    assert counts["lost"] == 0 and counts["duplicate_pairs"] == 0 and counts["unexpected"] == 0
    assert counts["duplicate_window_counts"] == 0 and counts["window_paired_off"] == 0
    assert pair_copies == 1, "without FINAL: no pair inserted twice as the same row"
    assert window_rows == window_keys, "no window inserted twice"
    assert decision_rows == decision_keys == len(decisions), "each decision once, as published"
