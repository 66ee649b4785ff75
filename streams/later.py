"""Scores that follow their pairs: the worker's costly scorers never hold a pairing batch.

The preference judge (`shadowlens.streams.preference_stage`) and the semantic model
(`shadowlens.streams.semantic_stage`) start their work in a pool and the pairs go out at once
without the score (counted unjudged or unsampled: `comparators.aggregate.Later`). `FollowUps`
keeps, per pairing task, the work in flight and the latest row of each pair it is for. The
task collects what has finished (`finished`) with its next batch or timer run and produces
it as ``judgment`` / ``semantic`` records in its own transaction; the judging side adds only
the score to the pair's window and writes the row over the pair's in ClickHouse. A pair
with both kinds of work gets both on its row, in the order they finish, so the row written
last (the one ClickHouse keeps) holds every score.

Work past its deadline is settled as timed out (the call is cancelled if it has not
started; a running one is left to finish, unread). Work in flight when the task goes to
another worker or the worker stops is lost, counted: its pairs keep what they went out
with, never a guessed score.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from shadowlens.comparators.aggregate import Later
from shadowlens.comparators.pairs import PairScore

PairKey = tuple[str, str]  # request id, comparison
Update = Callable[[PairScore], PairScore]
# a finished call (None: past its deadline) -> one update per pair, or None: nothing follows
Settle = Callable[[Future[Any] | None], Sequence[Update] | None]


def pair_key(score: PairScore) -> PairKey:
    return score.request_id, score.comparison


@dataclass(frozen=True, slots=True)
class Work:
    """One call whose pairs went out before its result."""

    what: Later
    keys: tuple[PairKey, ...]
    call: Future[Any]
    settle: Settle
    deadline: float = math.inf  # time.monotonic() seconds


@dataclass(slots=True)
class _Row:
    score: PairScore | None = None  # the pair as it went out, with what followed since
    awaited: int = 0  # work still in flight for it


@dataclass
class FollowUps:
    """Work in flight per pairing task, and the latest rows of its pairs."""

    counts: Counter[str]
    work: dict[int, list[Work]] = field(default_factory=dict)
    rows: dict[int, dict[PairKey, _Row]] = field(default_factory=dict)

    def start(self, task: int, work: Work) -> None:
        self.work.setdefault(task, []).append(work)
        rows = self.rows.setdefault(task, {})
        for key in work.keys:
            rows.setdefault(key, _Row()).awaited += 1

    def sent(self, task: int, scores: Sequence[PairScore]) -> None:
        """`scores` go out now: the rows that work in flight for `task` will update."""
        rows = self.rows.get(task, {})
        for score in scores:
            row = rows.get(pair_key(score))
            if row is not None:
                row.score = score

    def in_flight(self, what: Later) -> int:
        """Calls of kind `what` in flight over all tasks."""
        return sum(w.what == what for works in self.work.values() for w in works)

    def waiting(self, task: int) -> bool:
        """Whether `task` has work in flight (its input may not be declared over yet)."""
        return bool(self.work.get(task))

    def finished(self, task: int, now: float | None = None) -> list[tuple[Later, list[PairScore]]]:
        """`task`'s rows updated by the work that finished or passed its deadline, in the
        order the work was started, as runs of one kind (so a pair's row with both scores
        comes after its row with one); the task must produce them in this order (in its
        transaction) or they are lost."""
        now = time.monotonic() if now is None else now
        running: list[Work] = []
        out: list[tuple[Later, list[PairScore]]] = []
        rows = self.rows.get(task, {})
        for w in self.work.get(task, []):
            if w.call.done():
                updates = w.settle(w.call)
            elif now >= w.deadline:
                w.call.cancel()
                updates = w.settle(None)
            else:
                running.append(w)
                continue
            for i, key in enumerate(w.keys):
                row = rows[key]
                if updates is not None and row.score is not None:
                    row.score = updates[i](row.score)
                    if not out or out[-1][0] != w.what:
                        out.append((w.what, []))
                    out[-1][1].append(row.score)
                row.awaited -= 1
                if not row.awaited:
                    del rows[key]
        if task in self.work:
            self.work[task] = running
        return out

    def drop(self, task: int) -> None:
        """`task` went to another worker: its work's scores are lost (its pairs keep what
        they went out with); calls not started yet are not made."""
        for w in self.work.pop(task, []):
            w.call.cancel()
            self.counts[f"lost.{w.what}"] += len(w.keys)
        self.rows.pop(task, None)

    def stop(self) -> None:
        """The worker is stopping: everything in flight is lost like at a rebalance."""
        for task in list(self.work):
            self.drop(task)
