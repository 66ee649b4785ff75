"""Pair the halves of each request by request id, with an event-time watermark.

faust-streaming has no stream-stream join, so pairing is a small state machine over a
mapping (a dict in the replay, a changelogged Faust Table in the worker). Values are
reassigned, never mutated, so a Table persists every change.

Rules:
- a pair is emitted as soon as the primary and another arm of the same request are both in;
- a request still incomplete when the watermark passes `start + timeout` becomes an orphan,
  counted against the arm that is missing (replica halves are sampled, so a missing replica
  is not an orphan);
- a half seen twice never makes a second pair; the request id is remembered as closed until
  the watermark passes `start + timeout + retention`, so late duplicates are recognised;
- a half that arrives after its request was closed as an orphan is counted as late;
- memory is bounded: a closed request keeps only which arms it saw, and an experiment with
  more than `max_pending` open requests sheds its oldest ones early, as orphans (counted).
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
    events: tuple[Event, ...] = ()
    paired_arms: tuple[str, ...] = ()  # non-primary arms already paired with the primary
    closed: bool = False  # orphans were emitted; kept only to recognise stragglers
    seen_arms: tuple[str, ...] = ()  # arms of a closed request (its events are dropped)

    def arm(self, arm: str) -> Event | None:
        return next((e for e in self.events if e.arm == arm), None)

    @property
    def experiment(self) -> str:
        return self.events[0].experiment if self.events else ""

    def close(self) -> Pending:
        """Forget the bodies; remember only what is needed to spot stragglers."""
        arms = (*self.seen_arms, *(str(e.arm) for e in self.events))
        return Pending(self.start_time_ms, (), self.paired_arms, True, arms)


class Drop(StrEnum):
    """Why an event produced no new pair; each is counted, none is silent."""

    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class PairingConfig:
    timeout_ms: int = 30_000  # how long to wait for the other half, in event time
    lateness_ms: int = 5_000  # how far behind the newest completion the watermark trails
    retention_ms: int = 120_000  # how long a closed request id is remembered
    max_pending: int = 200_000  # open requests per experiment before the oldest are shed


@dataclass(frozen=True, slots=True)
class Matched:
    """What one event or one sweep produced."""

    pairs: tuple[tuple[Event, Event], ...] = ()  # (primary, other)
    orphans: tuple[tuple[Event, str], ...] = ()  # (present half, missing arm)
    singles: tuple[Event, ...] = ()  # split-mode events, scored alone
    dropped: tuple[tuple[Event, Drop], ...] = ()
    shed: int = 0  # open requests closed early because their experiment hit max_pending
    shed_experiment: str = ""  # whose requests were shed (one experiment per shedding)


class Pairer:
    """Joins halves in `state` (request id -> Pending) and tracks the watermark."""

    def __init__(
        self,
        state: MutableMapping[str, Pending],
        config: PairingConfig | None = None,
        watermark_ms: int = 0,
    ) -> None:
        self.state = state
        self.config = config or PairingConfig()
        self.watermark_ms = watermark_ms
        self.open_requests: Counter[str] = Counter(
            p.experiment for p in state.values() if not p.closed
        )

    def add(self, event: Event) -> Matched:
        """Take one half; return the pair it completes, if any."""
        self.watermark_ms = max(self.watermark_ms, event.completed_ms - self.config.lateness_ms)
        if event.mode == "split":
            return Matched(singles=(event,))
        key = event.request_id
        pending = self.state.get(key) or Pending(start_time_ms=event.start_time_ms)
        if pending.closed:
            seen = event.arm in pending.seen_arms
            return Matched(dropped=((event, Drop.DUPLICATE if seen else Drop.LATE),))
        if pending.arm(event.arm) is not None:
            return Matched(dropped=((event, Drop.DUPLICATE),))
        primary = event if event.arm == Arm.PRIMARY else pending.arm(Arm.PRIMARY)
        partners = (
            [e for e in pending.events if e.arm not in pending.paired_arms]
            if event.arm == Arm.PRIMARY
            else ([event] if primary is not None else [])
        )
        self.state[key] = replace(
            pending,
            start_time_ms=min(pending.start_time_ms, event.start_time_ms),
            events=(*pending.events, event),
            paired_arms=(*pending.paired_arms, *(str(e.arm) for e in partners)),
        )
        if not pending.events:
            self.open_requests[event.experiment] += 1
        pairs = tuple((primary, other) for other in partners) if primary is not None else ()
        if self.open_requests[event.experiment] > self.config.max_pending:
            return self._shed(event.experiment, pairs)
        return Matched(pairs=pairs)

    def _shed(self, experiment: str, pairs: tuple[tuple[Event, Event], ...]) -> Matched:
        """Close the oldest tenth of an experiment's open requests now, as orphans."""
        open_keys = sorted(
            (p.start_time_ms, k)
            for k, p in self.state.items()
            if not p.closed and p.experiment == experiment
        )
        oldest = open_keys[: max(1, len(open_keys) // 10)]
        orphans = [o for _, key in oldest for o in self._close(key)]
        return Matched(
            pairs=pairs, orphans=tuple(orphans), shed=len(oldest), shed_experiment=experiment
        )

    def _close(self, key: str) -> list[tuple[Event, str]]:
        pending = self.state[key]
        self.open_requests[pending.experiment] -= 1
        self.state[key] = pending.close()
        return _orphans_of(pending)

    def sweep(self) -> Matched:
        """Close requests whose timeout passed the watermark; forget old closed ones."""
        cfg, orphans = self.config, []
        for key, pending in list(self.state.items()):
            deadline = pending.start_time_ms + cfg.timeout_ms
            if pending.closed:
                if deadline + cfg.retention_ms <= self.watermark_ms:
                    del self.state[key]
                continue
            if deadline > self.watermark_ms:
                continue
            orphans.extend(self._close(key))
        return Matched(orphans=tuple(orphans))

    def flush(self) -> Matched:
        """End of input: every open request is complete or an orphan now."""
        self.watermark_ms = max(
            [self.watermark_ms]
            + [p.start_time_ms + self.config.timeout_ms for p in self.state.values()]
        )
        return self.sweep()


def _orphans_of(pending: Pending) -> list[tuple[Event, str]]:
    primary = pending.arm(Arm.PRIMARY)
    if primary is None:
        return [(e, str(Arm.PRIMARY)) for e in pending.events]
    if pending.arm(Arm.CANDIDATE) is None:
        return [(primary, str(Arm.CANDIDATE))]
    return []
