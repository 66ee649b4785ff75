"""Prototypes of changes to the judge's classifiers, measured here before anyone edits it.

A variant is a `Classifiers` set handed to the judge (`shadowlens.judge.classifiers`):
today's classifiers with one of them wrapped in a prototype rule. Nothing is patched, so
a variant runs in any process and cannot leak into another.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shadowlens.judge.classifiers import CLASSIFIERS, Classifiers, MetricClassifier, SegmentCase
from shadowlens.judge.verdicts import Evidence, Verdict


@dataclass(frozen=True, slots=True)
class Variant:
    """A judge to measure: what it changes, and the classifiers that do it."""

    description: str
    classifiers: Classifiers


def _errors_on_bound(shift: float) -> MetricClassifier:
    """Errors also FAIL when the point rates are past both limits and the always-valid bound
    on the paired increase is above shift x max_increase (0: any increase at all), a route
    beside the judge's sequential McNemar test."""

    def classify(case: SegmentCase) -> Evidence:
        base = CLASSIFIERS.errors(case)
        if base.verdict != Verdict.INCONCLUSIVE:
            return base
        pol, agg = case.policy.errors, case.evidence.totals
        cand = agg.error_rate("candidate") or 0.0
        prim = agg.error_rate("primary") or 0.0
        if not (cand > pol.max_absolute and cand - prim > pol.max_increase):
            return base
        d_lo, _ = case.evidence.error_increase.interval(case.alpha.fail)
        if d_lo > shift * pol.max_increase:
            return replace(base, verdict=Verdict.FAIL, bound=d_lo)
        return base

    return classify


VARIANTS: dict[str, Variant] = {
    "current": Variant("the judge as it is", CLASSIFIERS),
    "vs-zero": Variant(
        "errors also FAIL when the point rates are past both limits and the always-valid "
        "bound on the paired increase excludes no increase",
        replace(CLASSIFIERS, errors=_errors_on_bound(0.0)),
    ),
    "half-margin": Variant(
        "as 'vs-zero', but the bound on the paired increase must clear half the margin (+1 pp)",
        replace(CLASSIFIERS, errors=_errors_on_bound(0.5)),
    ),
}


def classifiers_for(name: str) -> Classifiers:
    """The named variant's classifier set; an unknown name lists the known ones."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name].classifiers
