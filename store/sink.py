"""Sink adapters between the pure pipeline and the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shadowlens.comparators.pairs import PairScore
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.schemas.events import DeadLetter
from shadowlens.store.client import Store


@dataclass
class ClickHouseSink:
    """Buffers pairs and writes each table in large columnar batches (ClickHouse likes few,
    big inserts). Windows, decisions and dead letters are rare and written at once, after
    the pairs they summarise, so a window row never lands before its pairs."""

    store: Store
    batch_size: int = 5_000
    written: dict[str, int] = field(default_factory=dict)
    _pairs: list[PairScore] = field(default_factory=list)

    def pairs(self, scores: Sequence[PairScore]) -> None:
        self._pairs.extend(scores)
        if len(self._pairs) >= self.batch_size:
            self.flush()

    def later(self, scores: Sequence[PairScore]) -> None:
        """Pairs again, now with a score that followed them (a preference judgment, a
        semantic score): after the rows they replace and in an insert of their own, so the
        pairs table keeps them (a ReplacingMergeTree keeps the later insert's row when
        their `inserted_at` ties)."""
        self.flush()
        self._count("later", self.store.write_pairs(scores))

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        self.flush()
        self._count("windows", self.store.write_windows(windows))

    def decisions(self, decisions: Sequence[Decision]) -> None:
        self.flush()
        self._count("decisions", self.store.write_decisions(decisions))

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self._count("dead_letters", self.store.write_dead_letters(letters))

    def flush(self) -> None:
        if self._pairs:
            batch, self._pairs = self._pairs, []
            self._count("pairs", self.store.write_pairs(batch))

    def _count(self, table: str, n: int) -> None:
        self.written[table] = self.written.get(table, 0) + n
