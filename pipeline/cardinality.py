"""Bounds on the names clients choose: experiments per worker, segments per experiment.

Experiment and segment names come from gateways, and each name opens windows (with their
sketches), judge state, ClickHouse rows and metric series. A client that puts a request id
in `segment`, or a new experiment name in every deployment, would grow all of them without
bound. So windows and the judge take at most `limits.max_experiments` experiments and, per
experiment, `limits.max_segments` segments, in the order they first appear:

- a pair of an experiment beyond the limit is stored (its pair row is written as usual)
  but not windowed or judged. Nothing is decided for that experiment, so routers get no
  heartbeat and fall back to the primary when their lease lapses;
- a pair of a segment beyond its experiment's limit is windowed and judged under
  `OTHER_SEGMENT` (its pair row keeps its own segment), so every request still counts in
  the experiment's evidence;
- both are counted (`Overflowed`), for metrics and the report. Nothing is merged
  silently, and the state keeps only the admitted names: overflowing names are counted,
  never remembered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import replace
from enum import StrEnum

from shadowlens.comparators.pairs import PairScore

OTHER_SEGMENT = "(other)"  # where segments beyond a limit are windowed and judged


class Overflow(StrEnum):
    EXPERIMENT = "experiment"  # stored, not windowed or judged
    SEGMENT = "segment"  # windowed and judged as OTHER_SEGMENT


Overflowed = Counter[tuple[Overflow, str]]  # (kind, experiment; "" beyond the limit) -> pairs


class Cardinality:
    """The experiments and segments admitted so far (`state`: experiment -> its segments, a
    dict in the replay, part of the judging task's changelogged state in the worker)."""

    def __init__(
        self,
        max_experiments: int,
        max_segments: int,
        state: MutableMapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.max_experiments = max_experiments
        self.max_segments = max_segments
        self.state: MutableMapping[str, tuple[str, ...]] = {} if state is None else state
        self.changed = False  # a name was admitted since the caller last reset this

    def place(self, scores: Iterable[PairScore]) -> tuple[list[PairScore], Overflowed]:
        """The scores as the windows take them, admitting names while there is room, and
        what overflowed. An experiment beyond the limit is counted, not named."""
        placed: list[PairScore] = []
        overflowed: Overflowed = Counter()
        for score in scores:
            segments = self.state.get(score.experiment)
            if segments is None:
                if len(self.state) >= self.max_experiments:
                    overflowed[Overflow.EXPERIMENT, ""] += 1
                    continue
                segments = ()
            if score.segment not in segments:
                if len(segments) >= self.max_segments:
                    overflowed[Overflow.SEGMENT, score.experiment] += 1
                    score = replace(score, segment=OTHER_SEGMENT)
                else:
                    self.state[score.experiment] = (*segments, score.segment)
                    self.changed = True
            placed.append(score)
        return placed, overflowed
