"""Prototypes of changes to the judge's classifiers, measured here before anyone edits it.

A variant is a `Classifiers` set handed to the judge (`shadowlens.judge.classifiers`):
today's classifiers with one of them wrapped in a prototype rule. Nothing is patched, so
a variant runs in any process and cannot leak into another.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shadowlens.judge.classifiers import CLASSIFIERS, Classifiers, SegmentCase
from shadowlens.judge.classify import increase_lower_bound
from shadowlens.judge.verdicts import Evidence, Verdict


@dataclass(frozen=True, slots=True)
class Variant:
    """A judge to measure: what it changes, and the classifiers that do it."""

    description: str
    classifiers: Classifiers


def _errors_past_the_whole_margin(case: SegmentCase) -> Evidence:
    """Errors FAIL only when the paired increase's bound clears the whole margin (+2 pp),
    not half of it: a rollback then means provably past the policy, at the price of power
    (about four times the pairs at +3 pp)."""
    base = CLASSIFIERS.errors(case)
    if base.verdict != Verdict.FAIL:
        return base
    j = case.policy.judge
    worse = increase_lower_bound(case.evidence.totals.failures, case.alpha.fail, j.optimal_n)
    if worse > case.policy.errors.max_increase:
        return base
    return replace(base, verdict=Verdict.INCONCLUSIVE, example_request_ids=())


VARIANTS: dict[str, Variant] = {
    "current": Variant("the judge as it is", CLASSIFIERS),
    "whole-margin": Variant(
        "errors FAIL only when the bound on the paired increase clears the whole margin",
        replace(CLASSIFIERS, errors=_errors_past_the_whole_margin),
    ),
}


def classifiers_for(name: str) -> Classifiers:
    """The named variant's classifier set; an unknown name lists the known ones."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name].classifiers
