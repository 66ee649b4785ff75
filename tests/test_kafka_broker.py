"""Integration tests against the real Apache Kafka broker started by scripts/test.sh."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

# Registers kafka_bootstrap / topic_factory for this module (harmless if conftest.py also does).

pytestmark = pytest.mark.kafka

T = TypeVar("T")
TEST_TIMEOUT_S = 120


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), TEST_TIMEOUT_S)

    return asyncio.run(bounded())


async def drain(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    isolation_level: str = "read_uncommitted",
    **kwargs: Any,
) -> list[Any]:
    """Read every partition of ``topic`` from the beginning to its current end offset.

    Stops when each partition's position reaches the end offset (the last stable offset for
    read_committed), so the result is exact: no guessing with idle timeouts.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        **kwargs,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batches = await consumer.getmany(*tps, timeout_ms=1000)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def test_produce_and_consume_1000_messages_in_per_key_order(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=4)
    n_messages, n_keys = 1000, 37

    async def scenario() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        await producer.start()
        try:
            futures = []
            for seq in range(n_messages):
                key = f"key-{seq % n_keys}"
                futures.append(
                    await producer.send(topic, key=key.encode(), value=f"{key}:{seq}".encode())
                )
            metadata = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        assert len(metadata) == n_messages
        assert {m.partition for m in metadata} == {0, 1, 2, 3}, "keys should spread over all 4"

        # Consume back through a consumer group (exercises the group coordinator and
        # __consumer_offsets) until every message is in, then commit.
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"sl-test-group-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            records = []
            while len(records) < n_messages:
                batches = await consumer.getmany(timeout_ms=1000)
                for batch in batches.values():
                    records.extend(batch)
            # Anything beyond 1000 would be a duplicate: poll once more to catch it.
            extra = await consumer.getmany(timeout_ms=500)
            records.extend(r for batch in extra.values() for r in batch)
            await consumer.commit()
            tps = [TopicPartition(topic, p) for p in range(4)]
            committed = {tp: await consumer.committed(tp) for tp in tps}
        finally:
            await consumer.stop()

        assert len(records) == n_messages
        assert sum(committed.values()) == n_messages

        by_key: dict[str, list[int]] = defaultdict(list)
        partition_of_key: dict[str, set[int]] = defaultdict(set)
        for record in records:
            key = record.key.decode()
            value_key, seq = record.value.decode().split(":")
            assert value_key == key
            by_key[key].append(int(seq))
            partition_of_key[key].add(record.partition)
        assert len(by_key) == n_keys
        for key, seqs in by_key.items():
            expected = list(range(int(key.removeprefix("key-")), n_messages, n_keys))
            assert seqs == expected, f"{key} out of order or incomplete"
            assert len(partition_of_key[key]) == 1, f"{key} landed on several partitions"

        # A plain read of the topic agrees with the group consumer.
        assert len(await drain(kafka_bootstrap, topic, 4)) == n_messages

    run(scenario)


def test_transactional_producer_commit_visible_abort_hidden(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=4)
    per_batch = 40

    def batch(label: str) -> list[tuple[bytes, bytes]]:
        return [(f"k{i % 8}".encode(), f"{label}-{i}".encode()) for i in range(per_batch)]

    async def scenario() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            transactional_id=f"sl-test-tx-{uuid.uuid4().hex[:8]}",
            enable_idempotence=True,
        )
        await producer.start()
        try:
            async with producer.transaction():
                for key, value in batch("committed1"):
                    await producer.send(topic, key=key, value=value)

            await producer.begin_transaction()
            futures = [
                await producer.send(topic, key=key, value=value) for key, value in batch("aborted")
            ]
            await producer.flush()  # make sure the aborted records really reach the log
            assert all(f.done() for f in futures)
            await producer.abort_transaction()

            async with producer.transaction():
                for key, value in batch("committed2"):
                    await producer.send(topic, key=key, value=value)
        finally:
            await producer.stop()

        committed = await drain(kafka_bootstrap, topic, 4, isolation_level="read_committed")
        uncommitted = await drain(kafka_bootstrap, topic, 4, isolation_level="read_uncommitted")

        expected = {v.decode() for _, v in batch("committed1") + batch("committed2")}
        aborted = {v.decode() for _, v in batch("aborted")}
        seen_committed = [r.value.decode() for r in committed]
        assert len(seen_committed) == 2 * per_batch
        assert set(seen_committed) == expected
        assert not aborted & set(seen_committed)
        # The aborted records are in the log (read_uncommitted sees them), just not committed.
        assert {r.value.decode() for r in uncommitted} == expected | aborted

        # Per-key order holds across the two committed transactions.
        order: dict[bytes, list[str]] = defaultdict(list)
        for record in committed:
            order[record.key].append(record.value.decode())
        for key, values in order.items():
            want = [v.decode() for k, v in batch("committed1") + batch("committed2") if k == key]
            assert values == want

    run(scenario)
