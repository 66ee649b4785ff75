"""The worker's single ClickHouse writer: a `ClickHouseSink` confined to one thread.

Inserts run on a dedicated thread, in submission order, so the event loop keeps consuming
while ClickHouse works (chdb and the HTTP client release the GIL while they do). The commit
path calls `drain()` before offsets go out: everything submitted so far is in ClickHouse,
or the commit fails and the records are processed again. Inserts are idempotent (the
tables are ReplacingMergeTree on deterministic keys), so a replay after a crash re-inserts
rows that collapse under FINAL.

chdb allows one process per data directory; a worker opens the store only while it owns
the sink partitions (see `streams.judging_stage`), and retries while the previous owner
is still closing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from comparators.pairs import PairScore
from judge.verdicts import Decision
from pipeline.windows import ClosedWindow
from schemas.events import DeadLetter
from streams.sinks import ClickHouseSink
from streams.store import Store, StoreBusyError

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16  # submitted operations before `throttle` makes the caller wait


class ClickHouseWriter:
    """`pipeline.core.Sink` whose writes happen on the writer thread."""

    def __init__(
        self,
        dsn: str,
        database: str,
        batch_size: int,
        *,
        open_timeout_s: float = 120.0,
    ) -> None:
        self.dsn = dsn
        self.database = database
        self.batch_size = batch_size
        self.open_timeout_s = open_timeout_s
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "clickhouse")
        self._pending: deque[concurrent.futures.Future[Any]] = deque()
        self._error: BaseException | None = None
        self._sink: ClickHouseSink | None = None
        self.is_open = False

    # -- lifecycle (the calls only queue work; `drain` waits for it)

    def open(self) -> None:
        if not self.is_open:
            self.is_open = True
            self._submit(self._open)

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self._submit(self._close)

    def shutdown(self) -> None:
        """Close the store and stop the thread, waiting for queued writes."""
        self.close()
        self._executor.shutdown(wait=True)

    def _open(self) -> None:
        deadline = time.monotonic() + self.open_timeout_s
        while True:
            try:
                store = Store.open(self.dsn, self.database)
                break
            except StoreBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the previous owner of the sink partitions is closing it
        store.migrate()
        self._sink = ClickHouseSink(store, batch_size=self.batch_size)
        log.info("ClickHouse store open (database %s)", self.database)

    def _close(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.flush()
            sink.store.close()
            log.info("ClickHouse store closed")

    # -- the Sink protocol

    def pairs(self, scores: Sequence[PairScore]) -> None:
        if scores:
            batch = list(scores)  # the caller may reuse its list before the thread runs
            self._submit(lambda: self._live().pairs(batch))

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        if windows:
            batch = list(windows)
            self._submit(lambda: self._live().windows(batch))

    def decisions(self, decisions: Sequence[Decision]) -> None:
        if decisions:
            batch = list(decisions)
            self._submit(lambda: self._live().decisions(batch))

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            batch = list(letters)
            self._submit(lambda: self._live().dead_letters(batch))

    @property
    def written(self) -> dict[str, int]:
        return dict(self._sink.written) if self._sink is not None else {}

    # -- flow

    async def drain(self) -> None:
        """Flush buffered pairs and wait until every queued write is done; raise the first
        error, which fails the commit that called this."""
        if self.is_open:
            self._submit(lambda: self._live().flush())
        for fut in list(self._pending):  # one thread, FIFO: all of them, in order
            await asyncio.wrap_future(fut)
        self._prune()
        self._raise_error()

    async def throttle(self) -> None:
        """Wait while too many writes are queued (backpressure on the stage). Runs outside
        the commit barrier, so it only waits: a future leaves `_pending` once done."""
        while len(self._pending) > MAX_IN_FLIGHT:
            await asyncio.wrap_future(self._pending[0])
            self._prune()
        self._raise_error()

    def _prune(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft()

    def _live(self) -> ClickHouseSink:
        if self._sink is None:
            raise RuntimeError("ClickHouse store is not open")
        return self._sink

    def _submit(self, fn: Callable[[], Any]) -> None:
        self._raise_error()
        fut = self._executor.submit(fn)
        fut.add_done_callback(self._remember_error)
        self._pending.append(fut)
        self._prune()

    def _remember_error(self, fut: concurrent.futures.Future[Any]) -> None:
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"ClickHouse write failed: {self._error!r}") from self._error
