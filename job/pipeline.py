"""The whole job as plain Python: decode -> pair -> score -> window -> judge.

Used as is by `shadowlens replay`; the Faust worker drives the same pieces (`Scorer`,
`TumblingWindows`, `Judging`) from its agents. Outputs go to a `Sink`; nothing here knows
about ClickHouse or Kafka.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, MutableMapping, Sequence

from shadowlens.comparators.cascade import tally
from shadowlens.comparators.pairs import PairScore
from shadowlens.job.judging import Judging
from shadowlens.job.scoring import Scorer, pairing_config
from shadowlens.job.sinks import Sink
from shadowlens.judge.classifiers import CLASSIFIERS, Classifiers
from shadowlens.judge.decide import ExperimentState
from shadowlens.judge.policy import Policy
from shadowlens.pipeline.cardinality import Cardinality
from shadowlens.pipeline.pairing import Matched, Pairer
from shadowlens.pipeline.progress import Admitted, Progress
from shadowlens.pipeline.windows import ClosedWindow, TumblingWindows
from shadowlens.schemas.events import DeadLetter, InvalidEvent, decode_event

Enricher = Callable[[list[PairScore]], list[PairScore]]
Source = tuple[bytes, str, int]  # an event's bytes, where it came from, when it was received


class Pipeline:
    """Feed raw events in arrival order; results flow to the sink as windows close."""

    def __init__(
        self,
        policy: Policy,
        sink: Sink,
        enrich: Enricher | None = None,
        batch_size: int = 256,
        max_event_bytes: int | None = None,
        classifiers: Classifiers = CLASSIFIERS,
    ) -> None:
        self.policy = policy
        self.sink = sink
        self.enrich = enrich
        self.batch_size = batch_size
        self.max_event_bytes = max_event_bytes
        config = pairing_config(policy)
        self.pairer = Pairer({}, config)
        # a replay has no trustworthy wall clock (traffic may be rebased into the future):
        # events are checked against the stream's own progress only
        self.progress: Progress[Source] = Progress(config)
        self.windows = TumblingWindows(policy.windows.size_ms, policy.windows.grace_ms)
        self.cardinality = Cardinality(policy.limits.max_experiments, policy.limits.max_segments)
        self.counts: Counter[str] = Counter()
        self.scorer = Scorer(policy, self.counts)
        self.judging = Judging(policy, sink, classifiers=classifiers)
        self._scored: list[PairScore] = []
        self.watermark_ms = 0  # where orphans were swept and windows closed

    @property
    def experiments(self) -> MutableMapping[str, ExperimentState]:
        """Each experiment's judge state, as the judging left it."""
        return self.judging.experiments

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
        self._pair(self.progress.admit(event, (raw, source, received_ms)))
        watermark = self.progress.watermark_ms
        if watermark - self.watermark_ms >= self.policy.windows.size_ms // 10:
            self.watermark_ms = watermark
            self.add_scored(self.score(self.pairer.sweep(watermark)))
            self.drain()
            self.judge(self.windows.advance(watermark))

    def _pair(self, admitted: Admitted[Source]) -> None:
        """Pair what the progress check let through; dead-letter what it rejected."""
        for r in admitted.rejected:
            raw, source, received_ms = r.payload
            letter = DeadLetter(r.reason, r.detail, raw, received_ms, r.event.request_id, source)
            self.counts[f"dead_letter.{r.reason}"] += 1
            self.sink.dead_letters([letter])
        for event, _ in admitted.accepted:
            self.add_scored(self.score(self.pairer.add(event)))

    def finish(self) -> None:
        """End of input: close every open request and window, and judge them."""
        self._pair(self.progress.end())
        self.add_scored(self.score(self.pairer.flush()))
        self.drain()
        self.judge(self.windows.flush())

    def score(self, matched: Matched) -> list[PairScore]:
        """Score what one pairing step produced; drops and shed requests are counted."""
        return self.scorer.score(matched)

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
        placed, overflowed = self.cardinality.place(scores)
        for score in placed:
            self.windows.add(score, self.watermark_ms)
        for (kind, _), n in overflowed.items():
            self.counts[f"overflow.{kind}"] += n
        for score in scores:
            self.counts[f"pairs.{score.outcome}"] += 1
        self.counts.update(tally(scores))
        self.sink.pairs(scores)

    def judge(self, closed: list[ClosedWindow]) -> None:
        """Write closed windows and decide each experiment's step at their end."""
        self.judging.judge(closed)
