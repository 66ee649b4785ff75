"""Scoring: what one pairing step produced (pairs, orphans, split-mode singles) becomes
`PairScore`s. One object, used by the plain-Python pipeline and the worker's pairing stage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

from shadowlens.comparators.pairs import (
    PairScore,
    score_orphan,
    score_pair,
    score_pairs,
    score_split,
)
from shadowlens.judge.policy import Policy
from shadowlens.pipeline.pairing import Matched, PairingConfig

_T = TypeVar("_T")


def pairing_config(policy: Policy) -> PairingConfig:
    """The pairing state machine's settings, read from the policy's `[pairing]` table."""
    pp = policy.pairing
    return PairingConfig(
        pp.max_call_ms, pp.max_skew_ms, pp.lateness_ms, pp.retention_ms, pp.max_pending
    )


class Scorer:
    """Scores matched halves with the policy's prices; counts drops and shed requests."""

    def __init__(self, policy: Policy, counts: Counter[str] | None = None) -> None:
        self.prices = policy.prices
        self.counts: Counter[str] = Counter() if counts is None else counts

    def score(self, matched: Matched) -> list[PairScore]:
        """One pairing step's pairs, orphans and singles, in that order; the reference."""
        prices = self.prices
        scores = self._rest(matched, [score_pair(p, other, prices) for p, other in matched.pairs])
        self._count(matched)
        return scores

    def score_batch(self, batch: Sequence[Matched]) -> list[PairScore]:
        """Several pairing steps at once: what `score` gives for each, concatenated, with
        the pairs of the whole batch scored by `score_pairs` (each answer read once)."""
        paired = iter(score_pairs([pair for m in batch for pair in m.pairs], self.prices))
        scores = [s for m in batch for s in self._rest(m, [next(paired) for _ in m.pairs])]
        for matched in batch:  # once all is scored: a batch that fails counts nothing
            self._count(matched)
        return scores

    def score_each(
        self, steps: Sequence[tuple[Matched, _T]]
    ) -> tuple[list[PairScore], list[tuple[_T, Exception]]]:
        """`score_batch` of the steps; should it raise, `score` step by step, so that one
        step's failure costs only that step. Each step comes with what its caller needs to
        report a failure (the event's bytes); the failed ones are returned with the error."""
        try:
            return self.score_batch([matched for matched, _ in steps]), []
        except Exception:
            # the failing steps are found below, one by one; the count shows a fault of the
            # batch path alone, which no step repeats
            self.counts["scoring.batch_failed"] += 1
        scores: list[PairScore] = []
        failed: list[tuple[_T, Exception]] = []
        for matched, payload in steps:
            try:
                scores += self.score(matched)
            except Exception as exc:
                failed.append((payload, exc))
        return scores, failed

    def _rest(self, matched: Matched, scores: list[PairScore]) -> list[PairScore]:
        """`scores` (the step's pairs) with its orphans and singles."""
        prices = self.prices
        scores += [score_orphan(half, missing, prices, at) for half, missing, at in matched.orphans]
        scores += [score_split(e, prices) for e in matched.singles]
        return scores

    def _count(self, matched: Matched) -> None:
        """The step's drops and shed requests."""
        for _, drop in matched.dropped:
            self.counts[f"dropped.{drop}"] += 1
        if matched.shed:
            self.counts["pairing.shed"] += matched.shed
