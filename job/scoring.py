"""Scoring: what one pairing step produced (pairs, orphans, split-mode singles) becomes
`PairScore`s. One object, used by the plain-Python pipeline and the worker's pairing stage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from shadowlens.comparators.pairs import (
    PairScore,
    score_orphan,
    score_pair,
    score_pairs,
    score_split,
)
from shadowlens.judge.policy import Policy
from shadowlens.pipeline.pairing import Matched, PairingConfig


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
        scores = [score_pair(primary, other, prices) for primary, other in matched.pairs]
        return self._rest(matched, scores)

    def score_batch(self, batch: Sequence[Matched]) -> list[PairScore]:
        """Several pairing steps at once: what `score` gives for each, concatenated, with
        the pairs of the whole batch scored by `score_pairs` (each answer read once)."""
        paired = iter(score_pairs([pair for m in batch for pair in m.pairs], self.prices))
        return [s for m in batch for s in self._rest(m, [next(paired) for _ in m.pairs])]

    def _rest(self, matched: Matched, scores: list[PairScore]) -> list[PairScore]:
        """`scores` (the step's pairs) with its orphans and singles; drops counted."""
        prices = self.prices
        scores += [score_orphan(half, missing, prices, at) for half, missing, at in matched.orphans]
        scores += [score_split(e, prices) for e in matched.singles]
        for _, drop in matched.dropped:
            self.counts[f"dropped.{drop}"] += 1
        if matched.shed:
            self.counts["pairing.shed"] += matched.shed
        return scores
