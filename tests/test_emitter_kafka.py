"""The gateway emitter on the real broker: exactly once, keyed by request id, tail on close."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from shadowlens.gateway.emitter import ShadowEmitter
from shadowlens.gateway.events import Arm, decode_event
from shadowlens.streams.wire import pairing_partition

from tests.builders import event

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

T = TypeVar("T")
PARTITIONS = 4


def run(coro_fn: Callable[[], Awaitable[T]], timeout_s: float = 120) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout_s)

    return asyncio.run(bounded())


async def drain(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning to its end offsets at call time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for batch in (await consumer.getmany(*tps, timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def requests(n: int, prefix: str) -> list[Any]:
    """Both arms of n requests, with texts of varied length."""
    return [
        event(f"{prefix}-{i}", arm, start=1_700_000_000_000 + i, text=f"answer {i} " * (i % 40))
        for i in range(n)
        for arm in (Arm.PRIMARY, Arm.CANDIDATE)
    ]


def test_5000_events_from_concurrent_tasks_arrive_exactly_once_keyed_by_request_id(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=PARTITIONS)
    events = requests(2500, "req")
    tasks = 8  # gateway tasks

    async def scenario() -> None:
        # a small queue: the tasks outrun the producer and wait for room (backpressure)
        async with ShadowEmitter(kafka_bootstrap, topic, max_queue=256, max_batch=200) as em:

            async def gateway(share: list[Any]) -> None:
                for e in share:
                    await em.emit(e)

            # each task serves whole requests: primary then candidate, as a gateway would
            shares = [
                [e for k, e in enumerate(events) if k // 2 % tasks == t] for t in range(tasks)
            ]
            await asyncio.gather(*(gateway(share) for share in shares))
            stats = await em.flush()
        assert (stats.emitted, stats.delivered, stats.failed, stats.dropped) == (5000, 5000, 0, 0)
        assert stats.waited > 0
        records = await drain(kafka_bootstrap, topic)

        assert len(records) == len(events)
        sent = Counter((e.request_id.encode(), e.to_json()) for e in events)
        assert Counter((r.key, r.value) for r in records) == sent  # each exactly once
        for r in records:
            rid = r.key.decode()
            assert decode_event(r.value).request_id == rid
            assert r.partition == pairing_partition(rid, PARTITIONS)
        # both halves share a partition, in the order one task emitted them
        arms: dict[bytes, list[str]] = {}
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            arms.setdefault(r.key, []).append(str(decode_event(r.value).arm))
        assert all(a == ["primary", "candidate"] for a in arms.values())

    run(scenario)


def test_close_delivers_the_tail_without_waiting_out_the_linger(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=PARTITIONS)
    events = requests(150, "tail")

    async def scenario() -> None:
        emitter = ShadowEmitter(kafka_bootstrap, topic, linger_ms=60_000, max_batch=10_000)
        await emitter.start()
        for e in events:
            assert emitter.emit_nowait(e)
        started = time.monotonic()
        stats = await emitter.close()
        assert time.monotonic() - started < 10
        assert (stats.delivered, stats.queued, stats.in_flight) == (300, 0, 0)
        records = await drain(kafka_bootstrap, topic)
        assert sorted(r.value for r in records) == sorted(e.to_json() for e in events)

    run(scenario)
