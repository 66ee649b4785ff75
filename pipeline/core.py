"""The whole job as plain Python: decode -> pair -> score -> window -> judge.

Used as is by `shadowlens replay`; the Faust worker drives the same pieces from agents.
Outputs go to a `Sink`; nothing here knows about ClickHouse or Kafka.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Protocol

from comparators.cascade import tally
from comparators.pairs import PairScore, score_orphan, score_pair, score_split
from judge.decide import ExperimentState, decide
from judge.policy import Policy
from judge.ramp import RampState
from judge.verdicts import Decision
from pipeline.pairing import Matched, Pairer, PairingConfig
from pipeline.windows import ClosedWindow, TumblingWindows
from schemas.events import DeadLetter, InvalidEvent, decode_event

Enricher = Callable[[list[PairScore]], list[PairScore]]


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


def pairing_config(policy: Policy) -> PairingConfig:
    pp = policy.pairing
    return PairingConfig(pp.timeout_ms, pp.lateness_ms, pp.retention_ms, pp.max_pending)


class Pipeline:
    """Feed raw events in arrival order; results flow to the sink as windows close."""

    def __init__(
        self,
        policy: Policy,
        sink: Sink,
        enrich: Enricher | None = None,
        batch_size: int = 256,
        max_event_bytes: int | None = None,
    ) -> None:
        self.policy = policy
        self.sink = sink
        self.enrich = enrich
        self.batch_size = batch_size
        self.max_event_bytes = max_event_bytes
        self.pairer = Pairer({}, pairing_config(policy))
        self.windows = TumblingWindows(policy.windows.size_ms, policy.windows.grace_ms)
        self.experiments: dict[str, ExperimentState] = {}
        self.counts: Counter[str] = Counter()
        self._scored: list[PairScore] = []
        self._swept_ms = 0

    def feed(self, raw: bytes, source: str = "", received_ms: int = 0) -> None:
        """One raw event: decoded, paired and scored; bad input is dead-lettered."""
        self.counts["events"] += 1
        try:
            kwargs = {} if self.max_event_bytes is None else {"max_bytes": self.max_event_bytes}
            event = decode_event(raw, **kwargs)
        except InvalidEvent as exc:
            self.counts[f"dead_letter.{exc.reason}"] += 1
            self.sink.dead_letters([DeadLetter.of(exc, raw, received_ms, source)])
            return
        self.add_scored(self.score(self.pairer.add(event)))
        if self.pairer.watermark_ms - self._swept_ms >= self.policy.windows.size_ms // 10:
            self._swept_ms = self.pairer.watermark_ms
            self.add_scored(self.score(self.pairer.sweep()))
            self.drain()
            self.judge(self.windows.advance(self.pairer.watermark_ms))

    def finish(self) -> None:
        """End of input: close every open request and window, and judge them."""
        self.add_scored(self.score(self.pairer.flush()))
        self.drain()
        self.judge(self.windows.flush())

    def score(self, matched: Matched) -> list[PairScore]:
        """Score what one pairing step produced (pairs, orphans, split singles); drops and
        shed requests are counted. The worker's pairing stage calls this directly."""
        prices = self.policy.prices
        scores = [score_pair(primary, other, prices) for primary, other in matched.pairs]
        scores += [score_orphan(present, missing, prices) for present, missing in matched.orphans]
        scores += [score_split(e, prices) for e in matched.singles]
        for _, drop in matched.dropped:
            self.counts[f"dropped.{drop}"] += 1
        if matched.shed:
            self.counts["pairing.shed"] += matched.shed
        return scores

    def add_scored(self, scores: Sequence[PairScore]) -> None:
        """Queue scored pairs for the windows; a full batch is drained at once."""
        self._scored.extend(scores)
        if len(self._scored) >= self.batch_size:
            self.drain()

    def drain(self) -> None:
        """Enrich the queued pairs, add them to their windows and send them to the sink."""
        if not self._scored:
            return
        scores, self._scored = self._scored, []
        if self.enrich is not None:
            scores = self.enrich(scores)
        for score in scores:
            self.windows.add(score, self.pairer.watermark_ms)
            self.counts[f"pairs.{score.outcome}"] += 1
        self.counts.update(tally(scores))
        self.sink.pairs(scores)

    def judge(self, closed: list[ClosedWindow]) -> None:
        """Write closed windows and decide each experiment's step at their end."""
        if not closed:
            return
        self.sink.windows(closed)
        by_time = sorted(closed, key=lambda w: (w.key.experiment, w.end_ms))
        decisions = []
        for (experiment, end_ms), group in groupby(
            by_time, key=lambda w: (w.key.experiment, w.end_ms)
        ):
            windows = list(group)
            state = self.experiments.get(experiment) or ExperimentState(
                ramp=RampState(stage_started_ms=windows[0].key.start_ms)
            )
            decision, self.experiments[experiment] = decide(
                experiment, windows, state, self.policy, end_ms
            )
            decisions.append(decision)
        self.sink.decisions(decisions)
