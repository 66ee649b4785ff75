"""The worker's single ClickHouse writer: a `ClickHouseSink` confined to one thread.

Inserts run on a dedicated thread, in submission order, so the event loop keeps consuming
while ClickHouse works (chdb and the HTTP client release the GIL while they do). The commit
path calls `drain()` before offsets go out: everything submitted so far is in ClickHouse,
or nothing is committed and the records are processed again. Inserts are idempotent (the
tables are ReplacingMergeTree on deterministic keys), so a replay after a crash re-inserts
rows that collapse under FINAL.

When ClickHouse fails (down, unreachable, overloaded) nothing is dropped and the worker
does not stop:

* every write is retried on the writer thread with capped exponential backoff and jitter
  (`Backoff`), until it succeeds or the worker shuts down;
* rows handed over and not yet written stay buffered; once `max_buffered_rows` are, the
  judging stage waits in `throttle` (backpressure: it stops consuming ``shadow.pairs``,
  and the pairs wait in Kafka);
* `drain` raises `CommitDeferred` while the store is failing, or is still writing after
  `COMMIT_WAIT_S` (a slow or stalled store; the stage then waits in `throttle` until it
  has written what it has, so that the next commit finds it done): no offset is
  committed until the rows they cover are in ClickHouse, and a commit holds its task's
  barrier (`shadowlens.streams.transactions`) only that long;
* the state is visible: `healthy`, `buffered_rows`, `retries` (Prometheus
  ``shadowlens_store_*`` through `shadowlens.streams.metrics`), and one log line when the store
  fails, recovers, or the buffer fills or empties -- not one per retry.

chdb allows one process per data directory; a worker opens the store only while it owns
the sink partitions (see `shadowlens.streams.judging_stage`), and retries while the previous owner
is still closing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from shadowlens.comparators.pairs import PairScore
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.schemas.events import DeadLetter
from shadowlens.store.client import Store, StoreBusyError
from shadowlens.store.sink import ClickHouseSink
from shadowlens.streams.config import redact_secrets
from shadowlens.streams.metrics import Metrics
from shadowlens.streams.transactions import CommitDeferred

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16  # submitted operations before `throttle` makes the caller wait
COMMIT_WAIT_S = 0.2  # longest a commit waits for writes, holding its task's barrier
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with "equal jitter": attempt n waits between half and
    all of ``min(max_s, initial_s * 2**n)``, so retries neither hammer a recovering
    server in step nor collapse towards zero."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(attempt, 32))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class _Retrying:
    """The writes `ClickHouseSink` makes to a `Store`, each retried until it succeeds."""

    def __init__(self, store: Store, writer: ClickHouseWriter) -> None:
        self.store = store
        self.writer = writer

    def write_pairs(self, scores: Sequence[PairScore]) -> int:
        return self.writer.retrying(lambda: self._count(self.store.write_pairs(scores)))

    def write_windows(self, windows: Sequence[ClosedWindow]) -> int:
        return self.writer.retrying(lambda: self._count(self.store.write_windows(windows)))

    def write_decisions(self, decisions: Sequence[Decision]) -> int:
        return self.writer.retrying(lambda: self._count(self.store.write_decisions(decisions)))

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        return self.writer.retrying(lambda: self._count(self.store.write_dead_letters(letters)))

    def _count(self, n: int) -> int:
        self.writer.written_rows += n
        return n


class ClickHouseWriter:
    """`shadowlens.job.sinks.Sink` whose writes happen on the writer thread (see the module doc)."""

    def __init__(
        self,
        dsn: str,
        database: str,
        batch_size: int,
        *,
        max_buffered_rows: int = 50_000,
        backoff: Backoff | None = None,
        metrics: Metrics | None = None,
        open_timeout_s: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        self.dsn = dsn
        self.database = database
        self.batch_size = batch_size
        self.max_buffered_rows = max_buffered_rows
        self.backoff = backoff or Backoff()
        self.metrics = metrics
        self.open_timeout_s = open_timeout_s
        self._rng = rng or random.Random()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "clickhouse")
        self._pending: deque[concurrent.futures.Future[Any]] = deque()
        self._error: BaseException | None = None
        self._sink: ClickHouseSink | None = None
        self._stopping = threading.Event()  # set: retries give up, waits end at once
        self.is_open = False
        # health, read by the event loop and the metrics endpoint (plain values: no lock)
        self.healthy = True
        self.failing_since: float | None = None
        self.retries = 0
        self._retries_before = 0  # `retries` when the current failure began
        self.submitted_rows = 0  # rows handed to the writer
        self.written_rows = 0  # rows ClickHouse accepted
        self.backpressure = False
        self.settling = False  # a commit found writes running: the stage waits for them
        self._flush: concurrent.futures.Future[Any] | None = None  # the last flush queued
        if metrics is not None:
            metrics.watch_store(self)

    @property
    def buffered_rows(self) -> int:
        """Rows handed over and not yet in ClickHouse (queued, batched or being retried)."""
        return self.submitted_rows - self.written_rows

    def health(self) -> dict[str, Any]:
        """For the stats log and Faust web's ``/health/``."""
        return {
            "healthy": self.healthy,
            "buffered_rows": self.buffered_rows,
            "retries": self.retries,
            "backpressure": self.backpressure,
        }

    # -- lifecycle (the calls only queue work; `drain` waits for it)

    def open(self) -> None:
        if not self.is_open:
            self.is_open = True
            self._submit(self._open)

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self._submit(self._close, check=False)  # also after a failed write

    def shutdown(self) -> None:
        """Close the store and stop the thread, waiting for queued writes. A write that
        fails now is not retried: the worker's last commit is behind it, so its records
        are read again by the next worker."""
        self.close()
        self._stopping.set()
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
            except ValueError:
                raise  # a DSN or database name that can never work
            except Exception as exc:
                self._failed(exc)
        self.retrying(store.migrate)
        sink = ClickHouseSink(cast(Store, _Retrying(store, self)), batch_size=self.batch_size)
        self._sink = sink
        log.info("ClickHouse store open (database %s)", self.database)

    def _close(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.flush()
            cast(_Retrying, sink.store).store.close()
            log.info("ClickHouse store closed")

    # -- retries (on the writer thread)

    def retrying(self, write: Callable[[], T]) -> T:
        """Run `write` until it succeeds, backing off between attempts; give up only when
        the writer shuts down (see `shutdown`)."""
        while True:
            try:
                result = write()
            except Exception as exc:
                self._failed(exc)
                continue
            if not self.healthy:
                self._recovered()
            return result

    def _failed(self, exc: Exception) -> None:
        if self._stopping.is_set():
            raise exc
        attempt = self.retries - self._retries_before
        if self.healthy:
            self.healthy, self.failing_since = False, time.monotonic()
            self._retries_before = self.retries
            attempt = 0
            log.warning(
                "ClickHouse store failing, buffering and retrying (backoff %g-%g s): %s",
                self.backoff.initial_s,
                self.backoff.max_s,
                redact_secrets(repr(exc), self.dsn),
            )
        self.retries += 1
        if self.metrics is not None:
            self.metrics.store_retries.inc()
        self._stopping.wait(self.backoff.delay_s(attempt, self._rng))
        if self._stopping.is_set():
            raise exc

    def _recovered(self) -> None:
        down_s = time.monotonic() - (self.failing_since or time.monotonic())
        log.warning(
            "ClickHouse store healthy again after %.1f s and %d retries; %d rows buffered",
            down_s,
            self.retries - self._retries_before,
            self.buffered_rows,
        )
        self.healthy, self.failing_since = True, None

    # -- the Sink protocol

    def pairs(self, scores: Sequence[PairScore]) -> None:
        if scores:
            batch = list(scores)  # the caller may reuse its list before the thread runs
            self._submit(lambda: self._live().pairs(batch), len(batch))

    def later(self, scores: Sequence[PairScore]) -> None:
        if scores:
            batch = list(scores)
            self._submit(lambda: self._live().later(batch), len(batch))

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        if windows:
            batch = list(windows)
            self._submit(lambda: self._live().windows(batch), len(batch))

    def decisions(self, decisions: Sequence[Decision]) -> None:
        if decisions:
            batch = list(decisions)
            self._submit(lambda: self._live().decisions(batch), len(batch))

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            batch = list(letters)
            self._submit(lambda: self._live().dead_letters(batch), len(batch))

    @property
    def written(self) -> dict[str, int]:
        return dict(self._sink.written) if self._sink is not None else {}

    # -- flow

    async def drain(self, wait_s: float = COMMIT_WAIT_S) -> None:
        """Flush buffered pairs and wait until every queued write is done. While the store
        is failing, or when writes still run after `wait_s` (a slow or stalled store),
        raise `CommitDeferred`: the commit that called this is skipped (its offsets stay
        uncommitted), the rows stay buffered, and after a slow store the stage waits in
        `throttle` until they are written. Raise the first error of a write that gave up,
        which fails the commit."""
        self._raise_error()
        if (
            self.is_open
            and self.healthy
            and not (self._pending and self._pending[-1] is self._flush)
        ):
            self._flush = self._submit(lambda: self._live().flush())
        deadline = time.monotonic() + wait_s
        while self._pending:
            if not self.healthy:
                raise CommitDeferred(
                    f"ClickHouse is failing; {self.buffered_rows} rows buffered, not committed"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                self.settling = True
                raise CommitDeferred(
                    f"ClickHouse is slow; {self.buffered_rows} rows not written yet, not committed"
                )
            await _wait(self._pending[0], timeout=min(left, 0.5))
            self._prune()
            self._raise_error()
        self.settling = False

    async def throttle(self) -> None:
        """Backpressure on the stage: wait while too many writes are queued,
        `max_buffered_rows` are buffered, or a commit found writes still running
        (`drain`). Runs outside the task's barrier, so commits go on (or are deferred)
        while it waits; a future leaves `_pending` once done."""
        while self._pending and (
            len(self._pending) > MAX_IN_FLIGHT
            or self.buffered_rows >= self.max_buffered_rows
            or self.settling
        ):
            if not self.backpressure and (
                self.settling or self.buffered_rows >= self.max_buffered_rows
            ):
                self.backpressure = True
                if not self.healthy:  # a healthy store catching up is not news
                    log.warning(
                        "ClickHouse buffer full (%d rows >= %d): the judging stage waits",
                        self.buffered_rows,
                        self.max_buffered_rows,
                    )
            await _wait(self._pending[0])
            self._prune()
            self._raise_error()
        self.settling = self.backpressure = False
        self._raise_error()

    def _prune(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft()

    def _live(self) -> ClickHouseSink:
        if self._sink is None:
            raise RuntimeError("ClickHouse store is not open")
        return self._sink

    def _submit(
        self, fn: Callable[[], Any], rows: int = 0, *, check: bool = True
    ) -> concurrent.futures.Future[Any]:
        if check:
            self._raise_error()
        self.submitted_rows += rows
        fut = self._executor.submit(fn)
        fut.add_done_callback(self._remember_error)
        self._pending.append(fut)
        self._prune()
        return fut

    def _remember_error(self, fut: concurrent.futures.Future[Any]) -> None:
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            message = redact_secrets(repr(self._error), self.dsn)
            raise RuntimeError(f"ClickHouse write failed: {message}") from self._error


async def _wait(fut: concurrent.futures.Future[Any], timeout: float | None = None) -> None:
    """Wait for a writer operation without ever cancelling it (`asyncio.wait` cancels
    nothing): a stopping agent must not cancel a queued write."""
    await asyncio.wait([asyncio.wrap_future(fut)], timeout=timeout)
