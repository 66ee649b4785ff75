"""Faust's consumer hands every fetched message to the streams without a task per message.

Faust's fetch loop (`Consumer._drain_messages`) delivers each message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: a race between the
delivery and a rebalance, so that a delivery stuck on a full stream buffer is abandoned
when the partitions move. `Service.wait_first` runs it as four tasks (the delivery, the
suspend flag, the service's stopped and crashed flags) and an `asyncio.wait`, and cancels
three of them afterwards: profiled on the worker's no-op agent, that was 40-45 % of Faust's
CPU per event (docs/streaming.md, "Faust's cost per event").

A delivery almost never waits: it decodes the record and puts it into a stream buffer that
has room. `EagerDelivery.wait_first` runs the delivery's first step inline; when it
finishes there, no task was needed and nothing could have raced it. When it would wait
(full buffer, flow control, producer back-pressure) the rest of it runs under Faust's own
race, as before, so a rebalance still abandons it. Any other `wait_first` call is Faust's.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any

from mode.services import WaitArgT, WaitResults


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, None, Any]:
    """Go on with a coroutine that was stepped by hand and yielded `pending` (the future
    it waits for): what ``await`` would have done had it run in a task from the start.
    A value or an exception thrown in by the task (cancellation) goes on to the
    coroutine."""
    while True:
        try:
            yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # the task's, e.g. CancelledError: on to the coroutine
            step, arg = coro.throw, exc
        else:
            step, arg = coro.send, None
        try:
            pending = step(arg)
        except StopIteration as done:
            return done.value


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    """`_resume` as a native coroutine, which `Service.wait_first` takes as an awaitable."""
    return await _resume(coro, pending)


class EagerDelivery:
    """Mixin for Faust's `Consumer` (a mode `Service`): see the module doc."""

    _stopped: Any  # mode's Events, set by the Service and the Consumer
    _crashed: Any
    suspend_flow: Any

    async def wait_first(self, *coros: WaitArgT, timeout: float | None = None) -> WaitResults:
        idle = not (self._stopped.is_set() or self._crashed.is_set() or self.suspend_flow.is_set())
        if idle and len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[0]):
            delivery, other = coros
            try:
                pending = delivery.send(None)
            except BaseException as exc:
                if asyncio.iscoroutine(other):
                    other.close()  # never started: closing only spares a warning
                if isinstance(exc, StopIteration):  # delivered without waiting: no race
                    return WaitResults([delivery], [exc.value], False)
                raise  # failed at once: raised here as Faust's wait_first raises it
            coros = (_finish(delivery, pending), other)
        return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc, no-any-return]
