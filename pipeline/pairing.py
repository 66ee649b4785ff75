"""Pair the halves of each request by request id; the watermark comes from the caller.

faust-streaming has no stream-stream join, so pairing is a small state machine over a
mapping (a dict in the replay, a changelogged Faust Table in the worker). Values are
reassigned, never mutated, so a Table persists every change.

Rules:
- a pair is emitted as soon as the primary and another arm of the same request are both in;
- a request still incomplete when the watermark passes `start + max_call_ms` becomes an
  orphan, counted against the arm that is missing (replica halves are sampled, so a missing
  replica is not an orphan). The watermark (`shadowlens.pipeline.progress`) already trails
  the newest completion by lateness and the skew allowance, so a call may take up to
  `max_call_ms` on a gateway whose clock is up to `max_skew_ms` off and still pair;
- a half seen twice never makes a second pair; the request id is remembered as closed until
  the watermark passes `start + max_call_ms + retention`, so late duplicates are recognised;
- a half that arrives after its request was closed as an orphan is counted as late;
- memory is bounded: a paired half keeps no body (only the primary's is kept, for a replica
  still to come), a closed request keeps only which arms it saw, and an experiment with
  more than `max_pending` open requests sheds some early (counted): paired ones first, then
  the oldest, which become orphans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from enum import StrEnum

from shadowlens.schemas.events import Arm, Event


@dataclass(frozen=True, slots=True)
class Pending:
    """The halves seen so far of one request."""

    start_time_ms: int
    events: tuple[Event, ...] = ()  # the primary and the halves not paired yet
    paired_arms: tuple[str, ...] = ()  # non-primary arms already paired with the primary
    closed: bool = False  # orphans were emitted; kept only to recognise stragglers
    seen_arms: tuple[str, ...] = ()  # arms of a closed request (its events are dropped)

    def arm(self, arm: str) -> Event | None:
        return next((e for e in self.events if e.arm == arm), None)

    def has(self, arm: str) -> bool:
        return arm in self.paired_arms or self.arm(arm) is not None

    @property
    def experiment(self) -> str:
        return self.events[0].experiment if self.events else ""

    def close(self) -> Pending:
        """Forget the bodies; remember only what is needed to spot stragglers."""
        arms = (*(str(e.arm) for e in self.events), *self.paired_arms)
        return Pending(self.start_time_ms, (), (), True, arms)


class Drop(StrEnum):
    """Why an event produced no new pair; each is counted, none is silent."""

    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class PairingConfig:
    max_call_ms: int = 600_000  # how long a call may take: the other half is awaited this long
    max_skew_ms: int = 120_000  # how far a gateway's clock (or one event) may run ahead
    lateness_ms: int = 5_000  # how far out of completion order events may arrive
    retention_ms: int = 120_000  # how long a closed request id is remembered
    max_pending: int = 200_000  # open requests per experiment before the oldest are shed


Orphan = tuple[Event, str, int]  # (present half, missing arm, deadline: its event time)


@dataclass(frozen=True, slots=True)
class Matched:
    """What one event or one sweep produced."""

    pairs: tuple[tuple[Event, Event], ...] = ()  # (primary, other)
    orphans: tuple[Orphan, ...] = ()
    singles: tuple[Event, ...] = ()  # split-mode events, scored alone
    dropped: tuple[tuple[Event, Drop], ...] = ()
    shed: int = 0  # open requests closed early because their experiment hit max_pending
    shed_experiment: str = ""  # whose requests were shed (one experiment per shedding)


class Pairer:
    """Joins halves in `state` (request id -> Pending); `sweep` closes them by a watermark."""

    def __init__(
        self, state: MutableMapping[str, Pending], config: PairingConfig | None = None
    ) -> None:
        self.state = state
        self.config = config or PairingConfig()
        self.open_requests: Counter[str] = Counter(
            p.experiment for p in state.values() if not p.closed
        )

    def add(self, event: Event) -> Matched:
        """Take one half; return the pair it completes, if any."""
        if event.mode == "split":
            return Matched(singles=(event,))
        key = event.request_id
        pending = self.state.get(key) or Pending(start_time_ms=event.start_time_ms)
        if pending.closed:
            seen = event.arm in pending.seen_arms
            return Matched(dropped=((event, Drop.DUPLICATE if seen else Drop.LATE),))
        if pending.has(event.arm):
            return Matched(dropped=((event, Drop.DUPLICATE),))
        primary = event if event.arm == Arm.PRIMARY else pending.arm(Arm.PRIMARY)
        partners = (
            [e for e in pending.events if e.arm != Arm.PRIMARY]
            if event.arm == Arm.PRIMARY
            else ([event] if primary is not None else [])
        )
        kept = (*pending.events, event) if primary is None else (primary,)
        self.state[key] = replace(
            pending,
            start_time_ms=min(pending.start_time_ms, event.start_time_ms),
            events=kept,
            paired_arms=(*pending.paired_arms, *(str(e.arm) for e in partners)),
        )
        if not pending.events:  # a new request (an open one always keeps a half)
            self.open_requests[event.experiment] += 1
        pairs = tuple((primary, other) for other in partners) if primary is not None else ()
        if self.open_requests[event.experiment] > self.config.max_pending:
            return self._shed(event.experiment, pairs)
        return Matched(pairs=pairs)

    def _shed(self, experiment: str, pairs: tuple[tuple[Event, Event], ...]) -> Matched:
        """Close a tenth of an experiment's open requests now. Those already paired with
        their candidate go first (they wait only for a replica, and close without an
        orphan), then the oldest: a call still running is orphaned only as a last resort."""
        open_keys = sorted(
            (not p.has(Arm.CANDIDATE), p.start_time_ms, k)
            for k, p in self.state.items()
            if not p.closed and p.experiment == experiment
        )
        oldest = open_keys[: max(1, len(open_keys) // 10)]
        orphans = [o for *_, key in oldest for o in self._close(key)]
        return Matched(
            pairs=pairs, orphans=tuple(orphans), shed=len(oldest), shed_experiment=experiment
        )

    def _close(self, key: str) -> list[Orphan]:
        pending = self.state[key]
        experiment = pending.experiment
        self.open_requests[experiment] -= 1
        if not self.open_requests[experiment]:  # names are client-chosen: keep only live ones
            del self.open_requests[experiment]
        self.state[key] = pending.close()
        return _orphans_of(pending, pending.start_time_ms + self.config.max_call_ms)

    def sweep(self, watermark_ms: int) -> Matched:
        """Close requests whose call could have ended before `watermark_ms`; forget closed
        ones after their retention."""
        cfg, orphans = self.config, []
        for key, pending in list(self.state.items()):
            deadline = pending.start_time_ms + cfg.max_call_ms
            if pending.closed:
                if deadline + cfg.retention_ms <= watermark_ms:
                    del self.state[key]
                continue
            if deadline > watermark_ms:
                continue
            orphans.extend(self._close(key))
        return Matched(orphans=tuple(orphans))

    def flush(self) -> Matched:
        """End of input: every open request is complete or an orphan now."""
        orphans = [
            o for key, p in list(self.state.items()) if not p.closed for o in self._close(key)
        ]
        return Matched(orphans=tuple(orphans))


def _orphans_of(pending: Pending, deadline_ms: int) -> list[Orphan]:
    primary = pending.arm(Arm.PRIMARY)
    if primary is None:
        return [(e, str(Arm.PRIMARY), deadline_ms) for e in pending.events]
    if not pending.has(Arm.CANDIDATE):
        return [(primary, str(Arm.CANDIDATE), deadline_ms)]
    return []
