"""What the judge knows of one segment: always-valid bounds, folded in window by window.

Windows are folded in as they close; the confidence sequences in
`shadowlens.judge.stats_means` stay valid however often the judge looks, so checking after
every window does not inflate false rollbacks.

Two horizons. Latency and cost depend on the traffic share (under split mode the candidate
serves more, and slows, as the ramp climbs), so they are judged on this stage's pairs only
(`totals`, `tail_log_ratio`). Errors, refusals and quality do not (in shadow mode the
candidate answers every request whatever the share), so their evidence is carried across
promotions (`carried` and the states built from it) and restarts only with a rollback: a
harmless candidate does not have to prove them again at every stage, and the evidence says
how many stages it spans (`stages`). One time-uniform sequence looked at in several stages
spends no more of the error budget than one stage does. A rollback still reads the stage's
own pairs (`totals`, `stage_quality`): a regression that starts late is not diluted by the
healthy stages before it (`shadowlens.judge.classify`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shadowlens.comparators.aggregate import Aggregate, Moments, merged
from shadowlens.judge.stats_means import BoundedMeanCS, GaussianMixtureCS

ALPHA_DESIGN = 0.01  # tunes the bets of the bounded CSs; any alpha can be read afterwards
TAIL_PARTS = 5  # the paired p99 gate reads each window's slowest 1 / TAIL_PARTS of pairs


def _bounded(lower: float = 0.0, upper: float = 1.0) -> BoundedMeanCS:
    return BoundedMeanCS(alpha_design=ALPHA_DESIGN, lower=lower, upper=upper)


def gaussian(moments: Moments) -> GaussianMixtureCS:
    """The mixture CS state of unit-weight moments (n, mean, sum of squared deviations)."""
    if moments.n < 1 or moments.mean is None:
        return GaussianMixtureCS()
    m2 = max(0.0, moments.total_sq - moments.n * moments.mean**2)
    return GaussianMixtureCS(int(moments.n), moments.mean, m2)


def _paired(primary: list[int], candidate: list[int]) -> tuple[list[int], list[int]]:
    """A paired yes/no outcome as the candidate's observations and the per-request
    increase (candidate - primary, in [-1, 1])."""
    return candidate, [c - p for c, p in zip(candidate, primary, strict=True)]


def tail_log_ratios(window: Aggregate) -> list[float]:
    """log(candidate / primary) of the window's slowest fifth of pairs, ranked by the
    geometric mean of their two latencies.

    Why that ranking: picking the requests slow on the primary alone picks those whose
    primary drew slow noise, which biases the ratio in the candidate's favour (regression to
    the mean). The geometric mean is symmetric in the arms: when the candidate is the
    primary up to a factor theta (the two latencies of a request exchangeable once scaled),
    the selection cannot tell the arms apart, so the selected log ratios are symmetric about
    log(theta) whatever the distribution, and the selection needs no look-ahead."""
    pairs = window.latency_seq
    k = -(-len(pairs) // TAIL_PARTS)  # rounded up
    slowest = sorted(pairs, key=lambda pc: pc[0] + pc[1], reverse=True)[:k]
    return [c - p for p, c in slowest]


@dataclass(frozen=True, slots=True)
class SegmentEvidence:
    """One segment's evidence: this stage's (latency, cost, pairs) and what is carried since
    the last rollback (errors, refusals, quality), with the sequential states built from it."""

    totals: Aggregate = field(default_factory=Aggregate)  # this stage
    carried: Aggregate = field(default_factory=Aggregate)  # since the last rollback
    stages: int = 1  # stages `carried` spans (this one included)
    candidate_error: BoundedMeanCS = field(default_factory=_bounded)
    error_increase: BoundedMeanCS = field(default_factory=lambda: _bounded(-1.0, 1.0))
    quality: GaussianMixtureCS = field(default_factory=GaussianMixtureCS)  # measured pairs
    stage_quality: GaussianMixtureCS = field(default_factory=GaussianMixtureCS)  # this stage
    candidate_refusal: BoundedMeanCS = field(default_factory=_bounded)
    refusal_increase: BoundedMeanCS = field(default_factory=lambda: _bounded(-1.0, 1.0))
    tail_log_ratio: GaussianMixtureCS = field(default_factory=GaussianMixtureCS)  # this stage
    carried_tail: GaussianMixtureCS = field(default_factory=GaussianMixtureCS)

    def fold(self, window: Aggregate) -> SegmentEvidence:
        """Add one closed window (its per-request observations in request order)."""
        errors = _paired(window.primary_failed_seq, window.candidate_failed_seq)
        refusals = _paired(window.primary_refused_seq, window.candidate_refused_seq)
        tail = tail_log_ratios(window)
        return SegmentEvidence(
            totals=merged([self.totals, window]).summary(),
            carried=merged([self.carried, window]).summary(),
            stages=self.stages,
            candidate_error=self.candidate_error.update(errors[0]),
            error_increase=self.error_increase.update(errors[1]),
            quality=self.quality.update(window.quality_seq),
            stage_quality=self.stage_quality.update(window.quality_seq),
            candidate_refusal=self.candidate_refusal.update(refusals[0]),
            refusal_increase=self.refusal_increase.update(refusals[1]),
            tail_log_ratio=self.tail_log_ratio.update(tail),
            carried_tail=self.carried_tail.update(tail),
        )

    def promoted(self) -> SegmentEvidence:
        """The evidence a new stage starts from after a promotion: the carried part only."""
        return SegmentEvidence(
            carried=self.carried,
            stages=self.stages + 1,
            candidate_error=self.candidate_error,
            error_increase=self.error_increase,
            quality=self.quality,
            candidate_refusal=self.candidate_refusal,
            refusal_increase=self.refusal_increase,
            carried_tail=self.carried_tail,
        )

    def since_rollback(self) -> SegmentEvidence:
        """This evidence with the stage's part replaced by everything since the last
        rollback: how a segment without enough pairs in this stage is judged on latency
        and cost (the reason says so)."""
        return replace(self, totals=self.carried, tail_log_ratio=self.carried_tail)

    @property
    def carried_pairs(self) -> int:
        """Requests judged since the last rollback that came before this stage."""
        return self.carried.n_requests - self.totals.n_requests

    @property
    def candidate_cost(self) -> GaussianMixtureCS:
        return gaussian(self.totals.candidate_cost_usd)
