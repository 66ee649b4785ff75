"""streams/delivery.py: Faust's per-message race without four tasks per message, no broker.

The mixin must give what `Service.wait_first` gives: the delivery's result, its exception,
and a delivery that waits (a full stream buffer) abandoned when the flow is suspended (a
rebalance), while a delivery that does not wait runs inline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mode import Service
from mode.utils.locks import Event
from shadowlens.streams.delivery import EagerDelivery


class Consumer(EagerDelivery, Service):
    """What `_drain_messages` needs of Faust's consumer: the Service and `suspend_flow`."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


async def deliver(consumer: Consumer, delivery: Any) -> Any:
    """The call Faust's fetch loop makes for every message."""
    return await consumer.wait_first(delivery, consumer.suspend_flow.wait())


def test_a_delivery_that_does_not_wait_runs_inline_with_no_task() -> None:
    async def main() -> None:
        consumer = Consumer()
        before = len(asyncio.all_tasks())

        async def delivery() -> str:
            assert len(asyncio.all_tasks()) == before  # no task was made to run it
            return "delivered"

        result = await deliver(consumer, delivery())
        assert result.results == ["delivered"] and not result.stopped

    asyncio.run(main())


def test_a_delivery_that_waits_finishes_under_faust_s_race() -> None:
    async def main() -> None:
        consumer = Consumer()
        room = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def delivery() -> int:
            steps.append("decoded")
            value = await room  # the stream buffer is full until the agent takes one
            steps.append("put")
            return value

        asyncio.get_running_loop().call_later(0.01, room.set_result, 7)
        result = await deliver(consumer, delivery())
        assert result.results == [7] and steps == ["decoded", "put"]

    asyncio.run(main())


def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    async def main() -> None:
        consumer = Consumer()
        cancelled = asyncio.Event()

        async def delivery() -> None:
            try:
                await asyncio.Event().wait()  # never room: only a rebalance ends this
            except asyncio.CancelledError:
                cancelled.set()
                raise

        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
        suspended = consumer.suspend_flow.wait()
        result = await consumer.wait_first(delivery(), suspended)
        assert result.done == [suspended]  # the rebalance won the race
        await asyncio.wait_for(cancelled.wait(), 1)  # and the delivery was cancelled

    asyncio.run(main())


def test_a_failing_delivery_raises_as_faust_s_wait_first_does() -> None:
    async def main() -> None:
        consumer = Consumer()

        async def at_once() -> None:
            raise ValueError("bad record")

        async def after_waiting() -> None:
            await asyncio.sleep(0)
            raise ValueError("bad record")

        for delivery in (at_once, after_waiting):
            with pytest.raises(ValueError, match="bad record"):
                await deliver(consumer, delivery())

    asyncio.run(main())
