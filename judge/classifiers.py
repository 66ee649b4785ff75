"""The per-metric classifier set decide() runs, behind one call so classifiers swap freely.

As in Kayenta's judge, a metric classifier is a stage with one method: here one segment's
`SegmentCase` in, one `Evidence` out. `Classifiers` holds one per rollback metric, today's
by default (`CLASSIFIERS`); `dataclasses.replace(CLASSIFIERS, errors=rule)` judges that
metric another way without touching the judge, which is how bench/decision_quality.py
measures prototypes and how a reworked statistic can be tried beside the current one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from shadowlens.judge.classify import (
    Alphas,
    QualityReference,
    classify_cost,
    classify_errors,
    classify_latency,
    classify_quality,
    classify_refusals,
)
from shadowlens.judge.evidence_state import SegmentEvidence
from shadowlens.judge.policy import Policy
from shadowlens.judge.preference import PreferenceEvidence, classify_preference, defer_quality
from shadowlens.judge.verdicts import Evidence


@dataclass(frozen=True, slots=True)
class SegmentCase:
    """Everything a classifier may read about one segment in one stage."""

    evidence: SegmentEvidence
    segment: str
    policy: Policy
    alpha: Alphas
    reference: QualityReference  # what candidate quality is compared with
    overall: SegmentEvidence | None  # the all-segments evidence; None when judging it
    # the preference judge's evidence since the last rollback (carried across stages)
    preference: PreferenceEvidence = field(default_factory=PreferenceEvidence)


class MetricClassifier(Protocol):
    """The one method a per-metric classifier has: a case in, that metric's evidence out."""

    def __call__(self, case: SegmentCase) -> Evidence: ...


# Today's classifiers keep their explicit signatures (tests call them directly); these
# give them the common one.


def _per_stage(case: SegmentCase) -> tuple[SegmentEvidence, str]:
    """The evidence latency and cost read: this stage's, or for a segment with too few
    pairs in it (traffic in bursts), everything since the last rollback, said so."""
    ev, need = case.evidence, case.policy.judge.min_pairs
    if case.overall is None or ev.totals.n_paired >= need or ev.stages <= 1:
        return ev, ""
    note = (
        f"; carried: {ev.totals.n_paired} pairs in this stage, judged on the "
        f"{ev.carried.n_paired} since the last rollback ({ev.stages} stages)"
    )
    return ev.since_rollback(), note


def _latency(case: SegmentCase) -> Evidence:
    ev, note = _per_stage(case)
    e = classify_latency(ev, case.segment, case.policy, case.alpha, case.overall)
    return replace(e, reason=e.reason + note) if note else e


def _errors(case: SegmentCase) -> Evidence:
    return classify_errors(case.evidence, case.segment, case.policy, case.alpha)


def _quality(case: SegmentCase) -> Evidence:
    """Similarity to the primary; left to the preference judge where it covers the pairs."""
    e = classify_quality(case.evidence, case.segment, case.reference, case.policy, case.alpha)
    return defer_quality(e, case.evidence.carried)


def _cost(case: SegmentCase) -> Evidence:
    ev, note = _per_stage(case)
    e = classify_cost(ev, case.segment, case.policy, case.alpha)
    return replace(e, reason=e.reason + note) if note else e


def _refusals(case: SegmentCase) -> Evidence:
    return classify_refusals(case.evidence, case.segment, case.policy, case.alpha)


def _preference(case: SegmentCase) -> Evidence:
    """The win rate and its guard, which reads the stage's refusal verdict."""
    return classify_preference(
        case.preference, case.segment, case.policy, case.alpha, _refusals(case)
    )


@dataclass(frozen=True, slots=True)
class Classifiers:
    """One classifier per rollback metric; the defaults are the judge's own."""

    latency: MetricClassifier = _latency
    errors: MetricClassifier = _errors
    quality: MetricClassifier = _quality
    cost: MetricClassifier = _cost
    refusals: MetricClassifier = _refusals
    preference: MetricClassifier = _preference

    def classify(self, case: SegmentCase) -> list[Evidence]:
        """Every rollback metric's evidence for the case, in `decide.ROLLBACK_METRICS` order."""
        return [
            self.latency(case),
            self.errors(case),
            self.quality(case),
            self.cost(case),
            self.refusals(case),
            self.preference(case),
        ]


CLASSIFIERS = Classifiers()
