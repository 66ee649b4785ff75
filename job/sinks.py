"""Where the job's results go: a `Sink` protocol and the in-memory and fan-out sinks.

Nothing here knows about ClickHouse or Kafka; the shell supplies those sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shadowlens.comparators.pairs import PairScore
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.schemas.events import DeadLetter


class Sink(Protocol):
    """Where results go: ClickHouse, Kafka, or memory in tests."""

    def pairs(self, scores: Sequence[PairScore]) -> None: ...
    def windows(self, windows: Sequence[ClosedWindow]) -> None: ...
    def decisions(self, decisions: Sequence[Decision]) -> None: ...
    def dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...


@dataclass
class MemorySink:
    """Keeps everything; for tests and for the replay summary."""

    scores: list[PairScore] = field(default_factory=list)
    closed: list[ClosedWindow] = field(default_factory=list)
    made: list[Decision] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)

    def pairs(self, scores: Sequence[PairScore]) -> None:
        self.scores.extend(scores)

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        self.closed.extend(windows)

    def decisions(self, decisions: Sequence[Decision]) -> None:
        self.made.extend(decisions)

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


@dataclass
class Tee:
    """Sends every output to several sinks (e.g. ClickHouse and the summary)."""

    sinks: Sequence[Sink]

    def pairs(self, scores: Sequence[PairScore]) -> None:
        for s in self.sinks:
            s.pairs(scores)

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        for s in self.sinks:
            s.windows(windows)

    def decisions(self, decisions: Sequence[Decision]) -> None:
        for s in self.sinks:
            s.decisions(decisions)

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        for s in self.sinks:
            s.dead_letters(letters)
