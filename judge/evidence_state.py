"""What the judge accumulates per segment during one ramp stage: always-valid bounds.

Windows are folded in as they close; the confidence sequences in
`shadowlens.judge.stats_means` stay valid however often the judge looks, so checking after
every window does not inflate false rollbacks. The state restarts at every stage
transition: latency and errors depend on the traffic share, and each stage is judged on
its own evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shadowlens.comparators.aggregate import Aggregate, Moments, merged
from shadowlens.judge.stats_means import BoundedMeanCS, GaussianMixtureCS

ALPHA_DESIGN = 0.01  # tunes the bets of the bounded CSs; any alpha can be read afterwards


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


@dataclass(frozen=True, slots=True)
class SegmentEvidence:
    """One segment's stage-to-date totals plus the sequential states built from them."""

    totals: Aggregate = field(default_factory=Aggregate)
    candidate_error: BoundedMeanCS = field(default_factory=_bounded)
    error_increase: BoundedMeanCS = field(default_factory=lambda: _bounded(-1.0, 1.0))
    quality: BoundedMeanCS = field(default_factory=_bounded)
    candidate_refusal: BoundedMeanCS = field(default_factory=_bounded)
    refusal_increase: BoundedMeanCS = field(default_factory=lambda: _bounded(-1.0, 1.0))

    def fold(self, window: Aggregate) -> SegmentEvidence:
        """Add one closed window (its per-request observations in arrival order)."""
        errors = _paired(window.primary_failed_seq, window.candidate_failed_seq)
        refusals = _paired(window.primary_refused_seq, window.candidate_refused_seq)
        return SegmentEvidence(
            totals=merged([self.totals, window]).summary(),
            candidate_error=self.candidate_error.update(errors[0]),
            error_increase=self.error_increase.update(errors[1]),
            quality=self.quality.update(window.quality_seq),
            candidate_refusal=self.candidate_refusal.update(refusals[0]),
            refusal_increase=self.refusal_increase.update(refusals[1]),
        )

    @property
    def log_latency_ratio(self) -> GaussianMixtureCS:
        return gaussian(self.totals.log_latency_ratio)

    @property
    def candidate_cost(self) -> GaussianMixtureCS:
        return gaussian(self.totals.candidate_cost_usd)
