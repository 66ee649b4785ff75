"""A stream's event-time progress, which no single event can break.

Pairing and windows run on one watermark: the newest completion accepted, minus
`lateness_ms` and `max_skew_ms`. Trailing by the skew allowance makes two things harmless:
a gateway whose clock runs up to `max_skew_ms` ahead of the primary's (pairs are timed on
the primary's clock, `shadowlens.comparators.pairs`), and one event up to `max_skew_ms`
ahead of the others. An event beyond that never moves it:

- `call_too_long`: its `latency_ms` exceeds `max_call_ms`, which a client would not wait;
- `future_timestamp`: it completes more than `max_skew_ms` after the wall clock (the worker
  passes `now_ms`; a replay of recorded traffic has no wall clock), or after the stream's
  newest completion. A jump past the stream can be real, though: traffic after a quiet
  spell, or the first event of a stream. So that event is held, and the next one decides:
  if the next is dated no earlier than the held one minus `max_skew_ms`, the stream did move
  and the held event is accepted; otherwise it is dead-lettered. An event the wall clock
  vouches for (within `max_skew_ms` of it) is never held.

Rejected events are dead-lettered, not clamped: an event whose times are wrong cannot be
put in a window, and its bytes stay on the dead-letter topic, re-publishable once fixed.
Two consecutive events from the same wrong future are taken for real progress: the
guarantee is for a single event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from shadowlens.pipeline.pairing import PairingConfig
from shadowlens.schemas.events import DeadLetterReason, Event

T = TypeVar("T")  # what the caller needs back with an event: its bytes, its source


@dataclass(frozen=True, slots=True)
class Rejected(Generic[T]):
    event: Event
    payload: T
    reason: DeadLetterReason
    detail: str


@dataclass(frozen=True, slots=True)
class Admitted(Generic[T]):
    """What one event let through: events to process now, in order, and dead letters."""

    accepted: tuple[tuple[Event, T], ...] = ()  # a held event comes before its confirmation
    rejected: tuple[Rejected[T], ...] = ()


class Progress(Generic[T]):
    """The newest completion a stream (a replay, or one events partition) has accepted, and
    the one event it holds while a jump past it is unconfirmed."""

    def __init__(
        self, config: PairingConfig, newest_ms: int = 0, held: tuple[Event, T] | None = None
    ) -> None:
        self.config = config
        self.newest_ms = newest_ms
        self.held = held

    @property
    def watermark_ms(self) -> int:
        """No pair or orphan still to come from this stream has an earlier event time."""
        cfg = self.config
        return max(0, self.newest_ms - cfg.lateness_ms - cfg.max_skew_ms)

    def admit(self, event: Event, payload: T, now_ms: int | None = None) -> Admitted[T]:
        """Accept, hold or reject one decoded event; `now_ms` is the wall clock, if trusted."""
        cfg, done = self.config, event.completed_ms
        if event.latency_ms > cfg.max_call_ms:
            detail = (
                f"latency_ms {event.latency_ms:.0f} exceeds pairing.max_call_ms {cfg.max_call_ms}"
            )
            return Admitted(rejected=(Rejected(event, payload, _TOO_LONG, detail),))
        if now_ms is not None and done > now_ms + cfg.max_skew_ms:
            detail = (
                f"completes at {done}, {done - now_ms} ms after the wall clock "
                f"(pairing.max_skew_ms {cfg.max_skew_ms})"
            )
            return Admitted(rejected=(Rejected(event, payload, _FUTURE, detail),))
        accepted: list[tuple[Event, T]] = []
        rejected: list[Rejected[T]] = []
        jump = self._jump(done, now_ms)
        if self.held is not None:
            held, held_payload = self.held
            self.held = None
            if jump and held.completed_ms <= done + cfg.max_skew_ms:  # the stream got there
                accepted.append((held, held_payload))
                self.newest_ms = max(self.newest_ms, held.completed_ms)
                jump = self._jump(done, now_ms)
            else:
                rejected.append(self._unconfirmed(held, held_payload))
        if jump:
            self.held = (event, payload)
        else:
            accepted.append((event, payload))
            self.newest_ms = max(self.newest_ms, done)
        return Admitted(tuple(accepted), tuple(rejected))

    def end(self) -> Admitted[T]:
        """End of input: a held event is accepted if it is the stream's only one, else
        dead-lettered (nothing confirmed the jump)."""
        if self.held is None:
            return Admitted()
        held, payload = self.held
        self.held = None
        if self.newest_ms == 0:
            self.newest_ms = held.completed_ms
            return Admitted(accepted=((held, payload),))
        return Admitted(rejected=(self._unconfirmed(held, payload),))

    def _jump(self, done_ms: int, now_ms: int | None) -> bool:
        """Whether an event would move the stream further than one event may on its own."""
        skew = self.config.max_skew_ms
        if now_ms is not None and done_ms >= now_ms - skew:  # the wall clock vouches for it
            return False
        return self.newest_ms == 0 or done_ms > self.newest_ms + skew

    def _unconfirmed(self, event: Event, payload: T) -> Rejected[T]:
        newest = self.newest_ms or "none yet"
        detail = (
            f"completes at {event.completed_ms}, more than pairing.max_skew_ms "
            f"{self.config.max_skew_ms} after the stream (newest completion: {newest}), and "
            "the next event did not follow it there"
        )
        return Rejected(event, payload, _FUTURE, detail)


_FUTURE = DeadLetterReason.FUTURE_TIMESTAMP
_TOO_LONG = DeadLetterReason.CALL_TOO_LONG
