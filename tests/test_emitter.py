"""The gateway emitter: queue, backpressure, batching and close, with a fake producer.

The Kafka tests of the same emitter (exactly once, keys, tail on close) are in
tests/test_emitter_kafka.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from shadowlens.gateway.emitter import EmitterClosed, ShadowEmitter
from shadowlens.gateway.events import InvalidEvent, decode_event

from tests.builders import event

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]], timeout_s: float = 30) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout_s)

    return asyncio.run(bounded())


class FakeProducer:
    """Records sends. ``gate`` closed: send() waits (a full accumulator); ``auto_ack`` off:
    futures stay pending until `ack`; ``fail`` set: acknowledgements are errors."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.auto_ack = True
        self.fail: Exception | None = None
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        await self.gate.wait()
        self.sent.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        if self.auto_ack:
            self._settle(future)
        return future

    def ack(self) -> None:
        for future in self.futures:
            if not future.done():
                self._settle(future)

    def _settle(self, future: asyncio.Future[Any]) -> None:
        if self.fail is not None:
            future.set_exception(self.fail)
        else:
            future.set_result(None)


def emitter_with(producer: FakeProducer, **kwargs: Any) -> ShadowEmitter:
    kwargs.setdefault("linger_ms", 0)
    return ShadowEmitter("unused:9092", "t", producer_factory=lambda: producer, **kwargs)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout_s)


def test_events_go_out_keyed_by_request_id_as_the_wire_form() -> None:
    producer = FakeProducer()
    events = [event(f"req-{i}", "primary" if i % 2 else "candidate") for i in range(10)]

    async def scenario() -> None:
        async with emitter_with(producer) as emitter:
            for e in events:
                await emitter.emit(e)
            stats = await emitter.flush()
        assert (stats.emitted, stats.delivered, stats.failed, stats.in_flight) == (10, 10, 0, 0)

    run(scenario)
    assert producer.started and producer.stopped
    assert [(t, k) for t, k, _ in producer.sent] == [("t", e.request_id.encode()) for e in events]
    assert [decode_event(v) for _, _, v in producer.sent] == events


def test_emit_waits_for_room_when_the_queue_is_full() -> None:
    producer = FakeProducer()
    producer.gate.clear()  # the producer takes nothing: the sender holds one event

    async def scenario() -> None:
        async with emitter_with(producer, max_queue=3, max_batch=1) as emitter:
            for i in range(4):  # one taken by the blocked sender, three fill the queue
                await emitter.emit(event(f"r{i}"))
            await until(lambda: emitter.stats.queued == 3)
            blocked = asyncio.create_task(emitter.emit(event("r4")))
            await asyncio.sleep(0.1)
            assert not blocked.done(), "emit must wait while the queue is full"
            assert emitter.stats.emitted == 4
            producer.gate.set()
            await asyncio.wait_for(blocked, 5)
            stats = await emitter.flush()
        # r3 waited too: emit does not yield while there is room, so the sender took r0 late
        assert (stats.emitted, stats.delivered, stats.dropped, stats.waited) == (5, 5, 0, 2)

    run(scenario)
    assert [k for _, k, _ in producer.sent] == [f"r{i}".encode() for i in range(5)]


def test_emit_nowait_drops_and_counts_when_the_queue_is_full() -> None:
    producer = FakeProducer()
    producer.gate.clear()

    async def scenario() -> None:
        async with emitter_with(producer, max_queue=2, max_batch=1) as emitter:
            assert emitter.emit_nowait(event("r0"))
            await until(lambda: emitter.stats.queued == 0)  # r0 is stuck in the sender
            results = [emitter.emit_nowait(event(f"r{i}")) for i in range(1, 6)]
            assert results == [True, True, False, False, False]
            assert emitter.stats.dropped == 3
            producer.gate.set()
            stats = await emitter.flush()
        assert (stats.emitted, stats.delivered, stats.dropped) == (3, 3, 3)

    run(scenario)
    assert [k for _, k, _ in producer.sent] == [b"r0", b"r1", b"r2"]


def test_flush_waits_for_the_broker_to_acknowledge() -> None:
    producer = FakeProducer()
    producer.auto_ack = False

    async def scenario() -> None:
        async with emitter_with(producer) as emitter:
            for i in range(5):
                await emitter.emit(event(f"r{i}"))
            flushing = asyncio.create_task(emitter.flush())
            await until(lambda: len(producer.sent) == 5)
            await asyncio.sleep(0.05)
            assert not flushing.done(), "flush returned before the acknowledgements"
            assert emitter.stats.in_flight == 5
            producer.ack()
            stats = await asyncio.wait_for(flushing, 5)
            assert (stats.delivered, stats.in_flight) == (5, 0)

    run(scenario)


def test_broker_failures_are_counted_not_hidden() -> None:
    producer = FakeProducer()
    producer.fail = RuntimeError("NotEnoughReplicas")

    async def scenario() -> None:
        async with emitter_with(producer) as emitter:
            for i in range(3):
                await emitter.emit(event(f"r{i}"))
            stats = await emitter.flush()
        assert (stats.emitted, stats.delivered, stats.failed) == (3, 0, 3)

    run(scenario)


def test_linger_waits_for_a_fuller_batch_but_a_full_batch_or_flush_goes_at_once() -> None:
    producer = FakeProducer()

    async def scenario() -> None:
        async with emitter_with(producer, linger_ms=10_000, max_batch=5) as emitter:
            await emitter.emit(event("r0"))
            await asyncio.sleep(0.1)
            assert producer.sent == [], "one event lingers for more"
            for i in range(1, 5):
                await emitter.emit(event(f"r{i}"))
            await until(lambda: len(producer.sent) == 5)  # a full batch does not wait
            await emitter.emit(event("r5"))
            await asyncio.sleep(0.1)
            assert len(producer.sent) == 5
            loop = asyncio.get_running_loop()
            started = loop.time()
            await emitter.flush()  # cuts the linger short
            assert loop.time() - started < 2
            assert len(producer.sent) == 6

    run(scenario)


def test_close_delivers_everything_queued_and_then_refuses_events() -> None:
    producer = FakeProducer()
    producer.gate.clear()

    async def scenario() -> None:
        emitter = emitter_with(producer, linger_ms=10_000, max_queue=100, max_batch=7)
        await emitter.start()
        for i in range(100):
            await emitter.emit(event(f"r{i}"))
        late = asyncio.create_task(emitter.emit(event("r100")))  # waits for room
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(emitter.close())
        await asyncio.sleep(0.05)
        with pytest.raises(EmitterClosed):
            await emitter.emit(event("too-late"))
        producer.gate.set()
        stats = await asyncio.wait_for(closing, 5)
        await late
        assert (stats.emitted, stats.delivered, stats.queued, stats.in_flight) == (101, 101, 0, 0)
        assert producer.stopped

    run(scenario)
    assert [k for _, k, _ in producer.sent] == [f"r{i}".encode() for i in range(101)]


def test_a_malformed_event_is_refused_at_the_source() -> None:
    producer = FakeProducer()
    bad = [
        event(""),  # empty request id
        event("r", latency=-1.0),
        event("r", segment="x" * 200),
        replace(event("r"), attributes={"nested": {"no": "objects"}}),
    ]

    async def scenario() -> None:
        async with emitter_with(producer) as emitter:
            for e in bad:
                with pytest.raises(InvalidEvent) as err:
                    await emitter.emit(e)
                assert err.value.reason == "schema_violation"
            with pytest.raises(InvalidEvent):
                emitter.emit_nowait(bad[0])
            assert emitter.stats.invalid == 5
        async with emitter_with(producer, validate=False) as unchecked:
            await unchecked.emit(bad[1])  # the gateway opted out: the worker dead-letters it
            assert unchecked.stats.invalid == 0

    run(scenario)
    assert len(producer.sent) == 1


def test_emit_threadsafe_from_a_synchronous_callback_thread() -> None:
    producer = FakeProducer()

    async def scenario() -> None:
        async with emitter_with(producer) as emitter:
            threads = [
                threading.Thread(target=emitter.emit_threadsafe, args=(event(f"t{i}"),))
                for i in range(20)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            await until(lambda: emitter.stats.emitted == 20)
            stats = await emitter.flush()
            assert stats.delivered == 20

    run(scenario)
    assert sorted(k for _, k, _ in producer.sent) == sorted(f"t{i}".encode() for i in range(20))


def test_using_an_emitter_that_is_not_started_is_an_error() -> None:
    emitter = emitter_with(FakeProducer())

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="not started"):
            await emitter.emit(event())
        with pytest.raises(RuntimeError, match="not started"):
            await emitter.flush()

    run(scenario)
    with pytest.raises(ValueError):
        ShadowEmitter("x:1", max_queue=0)
