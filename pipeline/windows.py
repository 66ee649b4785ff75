"""Event-time tumbling windows per (experiment, segment, comparison).

Windows close on our own event-time watermark, never on the wall clock (Faust's windowed
tables expire on the wall clock and do not hand the aggregate to `on_window_close`).
A pair that arrives for a window already closed is not dropped: it goes into the open
window that holds the watermark and is counted in `late_pairs`. A score that comes after
its pair (a judgment or a semantic score: `add_later`) goes the same way.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

from shadowlens.comparators.aggregate import Aggregate, Later
from shadowlens.comparators.pairs import PairScore


@dataclass(frozen=True, slots=True, order=True)
class WindowKey:
    experiment: str
    segment: str
    comparison: str
    start_ms: int


@dataclass(slots=True)
class WindowState:
    aggregate: Aggregate = field(default_factory=Aggregate)
    late_pairs: int = 0


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    key: WindowKey
    end_ms: int
    aggregate: Aggregate
    late_pairs: int


def window_start(t_ms: int, size_ms: int) -> int:
    return t_ms - t_ms % size_ms


class TumblingWindows:
    """Assigns scores to windows and returns the windows the watermark has passed."""

    def __init__(
        self,
        size_ms: int,
        grace_ms: int,
        state: MutableMapping[WindowKey, WindowState] | None = None,
    ) -> None:
        self.size_ms = size_ms
        self.grace_ms = grace_ms
        self.state = {} if state is None else state
        self.closed_before_ms = 0  # windows starting before this have been emitted

    def add(self, score: PairScore, watermark_ms: int) -> None:
        key, late = self._place(score, watermark_ms)
        window = self.state.get(key) or WindowState()
        window.aggregate.add(score)
        window.late_pairs += late
        self.state[key] = window  # reassign: a Table persists on set

    def add_later(self, score: PairScore, watermark_ms: int, what: Later) -> bool:
        """A pair's score of kind `what` that came after the pair (`Aggregate.add_later`),
        into the window of its event time, or the open one when that closed; True when
        late. Not a pair: `late_pairs` does not count it."""
        key, late = self._place(score, watermark_ms)
        window = self.state.get(key) or WindowState()
        window.aggregate.add_later(score, what)
        self.state[key] = window
        return late

    def _place(self, score: PairScore, watermark_ms: int) -> tuple[WindowKey, bool]:
        """The window a score goes to, and whether its own window has closed."""
        start = window_start(score.event_time_ms, self.size_ms)
        late = start < self.closed_before_ms
        if late:
            start = max(window_start(watermark_ms, self.size_ms), self.closed_before_ms)
        return WindowKey(score.experiment, score.segment, score.comparison, start), late

    def advance(self, watermark_ms: int) -> list[ClosedWindow]:
        """Close every window whose end plus grace the watermark has passed, oldest first."""
        horizon = window_start(watermark_ms - self.grace_ms, self.size_ms)
        closed = sorted(k for k in self.state if k.start_ms + self.size_ms <= horizon)
        self.closed_before_ms = max(self.closed_before_ms, horizon)
        return [self._close(k) for k in closed]

    def flush(self) -> list[ClosedWindow]:
        """End of input: close everything."""
        closed = sorted(self.state)
        if closed:
            self.closed_before_ms = max(k.start_ms for k in closed) + self.size_ms
        return [self._close(k) for k in closed]

    def _close(self, key: WindowKey) -> ClosedWindow:
        window = self.state.pop(key)
        return ClosedWindow(key, key.start_ms + self.size_ms, window.aggregate, window.late_pairs)
