"""decide(): closed windows of one experiment in, one Decision and the next state out.

Reads like Kayenta's judge: fold windows into per-segment stage evidence -> classify each
metric per segment with always-valid bounds -> combine verdicts -> let the lifecycle
(`shadowlens.judge.lifecycle`: the ramp, rollbacks, approvals, stability) take its step. Pure:
the clock (`now_ms`, event time) and the per-metric classifiers (`Classifiers`, today's by
default) are arguments.

Error budget: `judge.alpha` is the chance of one false rollback over a whole ramp. It is
split (Bonferroni) over the stages, the six rollback metrics and the segments (plus the
all-segments view); within a stage the bounds are time-uniform, so judging after every
window spends nothing more. The `preference` judge's evidence is one time-uniform sequence
from the experiment's start (or its last rollback) to now, carried across promotions: in
shadow mode it does not depend on the traffic share; its share of the budget is split over
the stages like the others', so carrying it spends nothing more either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, Self, TypeVar

from shadowlens.comparators.aggregate import Aggregate, merged
from shadowlens.judge.classifiers import CLASSIFIERS, Classifiers, SegmentCase
from shadowlens.judge.classify import Alphas, QualityReference, classify_pairing
from shadowlens.judge.evidence_state import SegmentEvidence, _bounded
from shadowlens.judge.lifecycle import Assessment, Lifecycle, Step, judged
from shadowlens.judge.policy import Policy
from shadowlens.judge.preference import PreferenceEvidence
from shadowlens.judge.ramp import RampState
from shadowlens.judge.stats_means import BoundedMeanCS
from shadowlens.judge.verdicts import Action, Decision, Evidence, Metric, Verdict
from shadowlens.pipeline.windows import ClosedWindow

ALL_SEGMENTS = "*"
ROLLBACK_METRICS = (
    Metric.LATENCY_P99,
    Metric.ERROR_RATE,
    Metric.QUALITY,
    Metric.COST,
    Metric.REFUSAL_RATE,
    Metric.PREFERENCE,
)
MUST_PASS = frozenset({Metric.LATENCY_P99, Metric.ERROR_RATE, Metric.PAIRING_RATE})
GATING = frozenset({Metric.LATENCY_P99, Metric.ERROR_RATE})  # per segment, once it has data


@dataclass(frozen=True, slots=True)
class ExperimentState:
    """What the judge remembers of one experiment between windows."""

    ramp: RampState = field(default_factory=RampState)
    segments: Mapping[str, SegmentEvidence] = field(default_factory=dict)  # this stage
    replicas: Mapping[str, SegmentEvidence] = field(default_factory=dict)  # this stage
    baseline: BoundedMeanCS = field(default_factory=_bounded)  # early quality, kept
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    # the preference judge's, since the last rollback: it does not depend on the share
    preference: Mapping[str, PreferenceEvidence] = field(default_factory=dict)

    def after(self, step: Step) -> ExperimentState:
        """This state moved by a lifecycle step; a (re)started stage is judged on its own
        evidence, except the preference judge's, which only a rollback restarts."""
        if step.fresh:
            kept = {} if step.action == Action.ROLLBACK else self.preference
            return ExperimentState(step.ramp, {}, {}, self.baseline, step.life, kept)
        return replace(self, ramp=step.ramp, lifecycle=step.life)


def metric_alpha(policy: Policy) -> float:
    """The share of the ramp's error budget one metric of one segment gets in one stage."""
    j = policy.judge
    stages = len(policy.ramp.stages_percent)
    return j.alpha / (stages * len(ROLLBACK_METRICS) * (1 + j.max_segments))


def metric_alphas(policy: Policy) -> Alphas:
    """Rollback budget as above; promotion's budget split over stages and metrics."""
    stages = len(policy.ramp.stages_percent)
    pass_ = policy.judge.pass_alpha / (stages * len(ROLLBACK_METRICS))
    return Alphas(fail=metric_alpha(policy), pass_=pass_)


def _by_segment(windows: Sequence[ClosedWindow], comparison: str) -> dict[str, Aggregate]:
    """The windows per segment and over all, their observations in request order
    (`Aggregate.in_order`): the same evidence however the pairs arrived."""
    groups: dict[str, list[Aggregate]] = {}
    for w in windows:
        if w.key.comparison == comparison:
            groups.setdefault(w.key.segment, []).append(w.aggregate)
    out = {seg: merged(aggs) for seg, aggs in groups.items()}
    if out:
        out[ALL_SEGMENTS] = merged(list(out.values()))
    return {seg: agg.in_order() for seg, agg in out.items()}


class _Folds(Protocol):
    def fold(self, window: Aggregate) -> Self: ...


FoldsT = TypeVar("FoldsT", bound=_Folds)


def _fold(
    known: Mapping[str, FoldsT], new: Mapping[str, Aggregate], empty: Callable[[], FoldsT]
) -> dict[str, FoldsT]:
    folded = dict(known)
    for segment, agg in new.items():
        folded[segment] = folded.get(segment, empty()).fold(agg)
    return folded


def _reference(
    segment: str, replicas: Mapping[str, SegmentEvidence], baseline: BoundedMeanCS, policy: Policy
) -> QualityReference:
    for key in (segment, ALL_SEGMENTS):
        replica = replicas.get(key)
        if replica is not None and replica.quality.n >= policy.judge.min_pairs:
            return QualityReference(replica.quality, "replica")
    if baseline.n >= policy.quality.baseline_pairs:
        return QualityReference(baseline, "baseline")
    return QualityReference(None, "none")


def _case(
    segment: str,
    segments: Mapping[str, SegmentEvidence],
    replicas: Mapping[str, SegmentEvidence],
    baseline: BoundedMeanCS,
    policy: Policy,
    preference: Mapping[str, PreferenceEvidence],
) -> SegmentCase:
    """One segment's stage evidence with its reference, budgets and the all-segments view,
    and its preference evidence."""
    return SegmentCase(
        evidence=segments[segment],
        segment=segment,
        policy=policy,
        alpha=metric_alphas(policy),
        reference=_reference(segment, replicas, baseline, policy),
        overall=None if segment == ALL_SEGMENTS else segments.get(ALL_SEGMENTS),
        preference=preference.get(segment, PreferenceEvidence()),
    )


def decide(
    experiment: str,
    windows: Sequence[ClosedWindow],
    state: ExperimentState,
    policy: Policy,
    now_ms: int,
    classifiers: Classifiers = CLASSIFIERS,
) -> tuple[Decision, ExperimentState]:
    """Judge the windows that just closed with `classifiers`, then promote, hold or roll back."""
    candidate = _by_segment(windows, "candidate")
    segments = _fold(state.segments, candidate, SegmentEvidence)
    replicas = _fold(state.replicas, _by_segment(windows, "replica"), SegmentEvidence)
    preference = _fold(state.preference, candidate, PreferenceEvidence)
    baseline = state.baseline
    missing = policy.quality.baseline_pairs - baseline.n
    if missing > 0 and ALL_SEGMENTS in candidate:
        baseline = baseline.update(candidate[ALL_SEGMENTS].quality_seq[:missing])

    ordered = sorted(segments, key=lambda s: (s != ALL_SEGMENTS, s))
    evidence = [
        e
        for seg in ordered
        for e in classifiers.classify(_case(seg, segments, replicas, baseline, policy, preference))
    ]
    if ALL_SEGMENTS in segments:
        evidence.append(classify_pairing(segments[ALL_SEGMENTS], ALL_SEGMENTS, policy))

    failing = [e for e in evidence if e.verdict == Verdict.FAIL and e.metric in ROLLBACK_METRICS]
    overall = segments.get(ALL_SEGMENTS)
    assessment = Assessment(
        failing=tuple(failing),
        failing_reason=_rollback_reason(failing),
        waiting=_waiting(evidence),
        pairs=overall.totals.n_paired if overall is not None else 0,
        evidence=tuple(evidence),
    )
    step = judged(state.ramp, state.lifecycle, assessment, policy.ramp, now_ms)
    decision = step.decision(experiment, state.ramp, policy.ramp, now_ms, tuple(evidence))
    judged_state = ExperimentState(
        state.ramp, segments, replicas, baseline, state.lifecycle, preference
    )
    return decision, judged_state.after(step)


def _rollback_reason(failing: list[Evidence]) -> str:
    """One line per failing metric: the all-segments evidence first, then where else."""
    parts = []
    for metric in ROLLBACK_METRICS:
        hits = [e for e in failing if e.metric == metric]
        if not hits:
            continue
        head, rest = hits[0], [e.segment for e in hits[1:]]
        also = f" (also in {', '.join(rest)})" if rest else ""
        parts.append(f"{metric} [{head.segment}]: {head.reason}{also}")
    return "; ".join(parts)


def _worst_segment_blocks(e: Evidence) -> bool:
    """A segment whose (shrunk) estimate is past the limit, though not yet provably, holds
    the ramp: the worst segment gates promotion, not the average."""
    if e.metric not in GATING or e.verdict != Verdict.INCONCLUSIVE:
        return False
    return e.observed is not None and e.threshold is not None and e.observed > e.threshold


def _waiting(evidence: list[Evidence]) -> str:
    """What keeps the evidence from letting the ramp move on ("" when nothing does)."""
    blocking = [
        e
        for e in evidence
        if e.verdict == Verdict.FAIL
        or (e.segment == ALL_SEGMENTS and e.metric in MUST_PASS and e.verdict != Verdict.PASS)
        or (e.segment == ALL_SEGMENTS and e.verdict == Verdict.INCONCLUSIVE)
        or _worst_segment_blocks(e)
    ]
    if not blocking:
        return ""
    return "waiting for evidence: " + "; ".join(
        f"{e.metric} [{e.segment}] {e.verdict}" for e in blocking
    )
