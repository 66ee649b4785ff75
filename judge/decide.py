"""decide(): closed windows of one experiment in, one Decision and the next state out.

Reads like Kayenta's judge: group windows -> classify each metric per segment -> combine
verdicts -> walk the ramp. Pure: the clock (`now_ms`, event time) is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from comparators.aggregate import Aggregate, Moments, merged
from judge.classify import (
    QualityReference,
    classify_cost,
    classify_errors,
    classify_latency,
    classify_pairing,
    classify_quality,
)
from judge.policy import Policy
from judge.ramp import RampState, transition
from judge.verdicts import Action, Decision, Evidence, Metric, Verdict
from pipeline.windows import ClosedWindow

ALL_SEGMENTS = "*"
ROLLBACK_METRICS = frozenset({Metric.LATENCY_P99, Metric.ERROR_RATE, Metric.QUALITY, Metric.COST})
PROMOTION_NEEDS_PASS = frozenset({Metric.LATENCY_P99, Metric.ERROR_RATE, Metric.PAIRING_RATE})


@dataclass(frozen=True, slots=True)
class ExperimentState:
    """What the judge remembers of one experiment between windows."""

    ramp: RampState = field(default_factory=RampState)
    stage: Aggregate = field(default_factory=Aggregate)  # candidate pairs since the stage began
    baseline: Moments = field(default_factory=Moments)  # early quality, when no replica arm


def _quality_reference(
    replica: Aggregate | None, baseline: Moments, policy: Policy
) -> QualityReference:
    if replica is not None and replica.quality.n >= policy.judge.min_pairs:
        return QualityReference(replica.quality.mean, "replica")
    if baseline.n >= policy.quality.baseline_pairs:
        return QualityReference(baseline.mean, "baseline")
    return QualityReference(None, "none")


def _evidence(
    agg: Aggregate, segment: str, reference: QualityReference, policy: Policy
) -> list[Evidence]:
    return [
        classify_latency(agg, segment, policy),
        classify_errors(agg, segment, policy),
        classify_quality(agg, segment, reference, policy),
        classify_cost(agg, segment, policy),
    ]


def _by_segment(windows: Sequence[ClosedWindow], comparison: str) -> dict[str, Aggregate]:
    groups: dict[str, list[Aggregate]] = {}
    for w in windows:
        if w.key.comparison == comparison:
            groups.setdefault(w.key.segment, []).append(w.aggregate)
    return {seg: merged(aggs) for seg, aggs in sorted(groups.items())}


def decide(
    experiment: str,
    windows: Sequence[ClosedWindow],
    state: ExperimentState,
    policy: Policy,
    now_ms: int,
) -> tuple[Decision, ExperimentState]:
    """Judge the windows that just closed, then promote, hold or roll back."""
    candidate = _by_segment(windows, "candidate")
    replica = _by_segment(windows, "replica")
    overall = merged(list(candidate.values()))
    overall_replica = merged(list(replica.values())) if replica else None
    reference = _quality_reference(overall_replica, state.baseline, policy)

    evidence = _evidence(overall, ALL_SEGMENTS, reference, policy)
    for segment, agg in candidate.items():
        seg_ref = _quality_reference(replica.get(segment), state.baseline, policy)
        evidence += _evidence(agg, segment, seg_ref if seg_ref.value else reference, policy)

    stage = merged([state.stage, overall])
    baseline = state.baseline
    if baseline.n < policy.quality.baseline_pairs:
        baseline = replace(baseline)
        baseline.merge(overall.quality)

    failing = [e for e in evidence if e.verdict == Verdict.FAIL and e.metric in ROLLBACK_METRICS]
    ramp_policy, ramp = policy.ramp, state.ramp
    if failing:
        action = Action.ROLLBACK
        reason = "; ".join(f"{e.metric} [{e.segment}]: {e.reason}" for e in failing)
        stage_evidence: list[Evidence] = []
    else:
        stage_evidence = [
            *_evidence(stage, ALL_SEGMENTS, reference, policy),
            classify_pairing(stage, ALL_SEGMENTS, policy),
        ]
        action, reason = _promotion(stage, stage_evidence, ramp, policy, now_ms)

    critical = any(e.critical for e in failing)
    next_ramp = transition(ramp, action, critical, ramp_policy, now_ms)
    decision = Decision(
        experiment=experiment,
        epoch=next_ramp.epoch,
        action=action,
        from_percent=ramp.percent(ramp_policy),
        to_percent=next_ramp.percent(ramp_policy),
        decided_at_ms=now_ms,
        reason=reason,
        evidence=tuple(evidence + [replace(e, segment="stage") for e in stage_evidence]),
    )
    new_stage = Aggregate() if next_ramp.epoch != ramp.epoch else stage
    return decision, ExperimentState(next_ramp, new_stage, baseline)


def _promotion(
    stage: Aggregate, evidence: list[Evidence], ramp: RampState, policy: Policy, now_ms: int
) -> tuple[Action, str]:
    rp = policy.ramp
    if ramp.stage_index == len(rp.stages_percent) - 1:
        return Action.HOLD, "ramp complete: candidate serves 100 %"
    held = ramp.held_ms(now_ms)
    if held < rp.min_hold_ms:
        return Action.HOLD, f"stage held {held / 1000:.0f} s of {rp.min_hold_ms / 1000:.0f} s"
    if stage.n_paired < rp.min_pairs:
        return Action.HOLD, f"stage has {stage.n_paired} pairs of {rp.min_pairs} needed"
    blocking = [
        e
        for e in evidence
        if e.verdict == Verdict.FAIL
        or (e.metric in PROMOTION_NEEDS_PASS and e.verdict != Verdict.PASS)
    ]
    if blocking:
        return Action.HOLD, "; ".join(f"{e.metric}: {e.reason}" for e in blocking)
    return Action.PROMOTE, f"stage passed after {held / 1000:.0f} s and {stage.n_paired} pairs"
