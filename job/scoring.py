"""Scoring: what one pairing step produced (pairs, orphans, split-mode singles) becomes
`PairScore`s. One object, used by the plain-Python pipeline and the worker's pairing stage."""

from __future__ import annotations

from collections import Counter

from shadowlens.comparators.pairs import PairScore, score_orphan, score_pair, score_split
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
        prices = self.prices
        scores = [score_pair(primary, other, prices) for primary, other in matched.pairs]
        scores += [score_orphan(half, missing, prices, at) for half, missing, at in matched.orphans]
        scores += [score_split(e, prices) for e in matched.singles]
        for _, drop in matched.dropped:
            self.counts[f"dropped.{drop}"] += 1
        if matched.shed:
            self.counts["pairing.shed"] += matched.shed
        return scores
