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

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, Self, TypeVar

from shadowlens.comparators.aggregate import Aggregate, merged
from shadowlens.judge.classifiers import CLASSIFIERS, Classifiers, SegmentCase
from shadowlens.judge.classify import (
    Alphas,
    QualityReference,
    ReferenceSource,
    classify_pairing,
)
from shadowlens.judge.evidence_state import SegmentEvidence, _bounded
from shadowlens.judge.lifecycle import Assessment, Lifecycle, Step, judged
from shadowlens.judge.policy import Policy
from shadowlens.judge.preference import PreferenceEvidence
from shadowlens.judge.ramp import RampState
from shadowlens.judge.standing import ALL_SEGMENTS, OTHER, Segments, holds, notes, unresolved
from shadowlens.judge.stats_means import BoundedMeanCS
from shadowlens.judge.verdicts import Action, Blocker, Decision, Evidence, Metric, Verdict
from shadowlens.pipeline.windows import ClosedWindow

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
    # per judged segment: this stage's evidence and what is carried since the last rollback
    segments: Mapping[str, SegmentEvidence] = field(default_factory=dict)
    replicas: Mapping[str, SegmentEvidence] = field(default_factory=dict)  # never restarted
    baseline: BoundedMeanCS = field(default_factory=_bounded)  # early quality, kept
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    # the preference judge's, since the last rollback: it does not depend on the share
    preference: Mapping[str, PreferenceEvidence] = field(default_factory=dict)
    names: Segments = field(default_factory=Segments)  # judged alone, or as `(other)`
    failed: tuple[Blocker, ...] = ()  # failures that have not passed since

    def after(self, step: Step) -> ExperimentState:
        """This state moved by a lifecycle step; a (re)started stage is judged on its own
        evidence, except what does not depend on the share (errors, refusals, quality, the
        preference judge's), which a promotion carries and only a rollback restarts; the
        replica arm's (the primary against itself) never restarts."""
        if step.fresh:
            kept = {} if step.action == Action.ROLLBACK else self.preference
            return replace(
                self,
                ramp=step.ramp,
                lifecycle=step.life,
                segments=_restarted(self.segments, step.action),
                preference=kept,
            )
        return replace(self, ramp=step.ramp, lifecycle=step.life)


def _restarted(
    evidence: Mapping[str, SegmentEvidence], action: Action
) -> dict[str, SegmentEvidence]:
    """A new stage's evidence: a promotion carries the share-independent part, anything
    else starts afresh; every segment seen stays, to be judged (and to hold) in the next."""
    if action == Action.PROMOTE:
        return {s: e.promoted() for s, e in evidence.items()}
    return {s: SegmentEvidence() for s in evidence}


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


def _by_segment(
    windows: Sequence[ClosedWindow], comparison: str, names: Segments
) -> dict[str, Aggregate]:
    """The windows per judged segment and over all, their observations in request order
    (`Aggregate.in_order`): the same evidence however the pairs arrived."""
    groups: dict[str, list[Aggregate]] = {}
    for w in windows:
        if w.key.comparison == comparison:
            groups.setdefault(names.judged(w.key.segment), []).append(w.aggregate)
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
    segment: str,
    segments: Mapping[str, SegmentEvidence],
    replicas: Mapping[str, SegmentEvidence],
    baseline: BoundedMeanCS,
    policy: Policy,
) -> QualityReference:
    """The replica's agreement (the segment's, else all segments'), else the policy's
    reference for the segment's tasks (weighted by their pairs), else none. The
    candidate's first pairs (`baseline`) only ever give a drift signal."""
    drift = baseline.mean if segment == ALL_SEGMENTS and baseline.n else None
    for key in (segment, ALL_SEGMENTS):
        replica = replicas.get(key)
        if replica is not None and replica.quality.n >= policy.judge.min_pairs:
            return QualityReference(ReferenceSource.REPLICA, replica.quality, drift_from=drift)
    tasks = segments[segment].carried.quality_tasks
    refs = [(policy.quality.reference.of(task), n) for task, n in tasks.items()]
    if refs and all(ref is not None for ref, _ in refs):
        value = sum(ref * n for ref, n in refs if ref is not None) / sum(n for _, n in refs)
        return QualityReference(ReferenceSource.POLICY, value=value, drift_from=drift)
    seen = max(
        (int(replicas[k].quality.n) for k in (segment, ALL_SEGMENTS) if k in replicas), default=0
    )
    return QualityReference(ReferenceSource.NONE, drift_from=drift, replica_pairs=seen)


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
        reference=_reference(segment, segments, replicas, baseline, policy),
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
    state = _admitted(state, windows, policy)
    candidate = _by_segment(windows, "candidate", state.names)
    segments = _fold(state.segments, candidate, SegmentEvidence)
    replicas = _fold(state.replicas, _by_segment(windows, "replica", state.names), SegmentEvidence)
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
    held = holds(evidence, state.failed, policy)
    assessment = Assessment(
        failing=tuple(failing),
        failing_reason=_rollback_reason(failing),
        waiting="; ".join(filter(None, [_waiting(evidence), *held])),
        pairs=overall.totals.n_paired if overall is not None else 0,
        evidence=tuple(evidence),
    )
    step = judged(state.ramp, state.lifecycle, assessment, policy.ramp, now_ms)
    decision = step.decision(experiment, state.ramp, policy.ramp, now_ms, tuple(evidence))
    said = notes(evidence, state.names, policy)
    if said:
        decision = replace(decision, reason=f"{decision.reason}; {said}")
    judged_state = replace(
        state,
        segments=segments,
        replicas=replicas,
        baseline=baseline,
        preference=preference,
        failed=unresolved(state.failed, [e for e in evidence if e.metric in ROLLBACK_METRICS]),
    )
    return decision, judged_state.after(step)


def _admitted(
    state: ExperimentState, windows: Sequence[ClosedWindow], policy: Policy
) -> ExperimentState:
    """The state with room made for the windows' new segments: when `(other)` opens, it
    takes over the smallest named segment's evidence (`shadowlens.judge.standing`)."""
    size: Counter[str] = Counter()  # requests seen per segment: the smallest go first
    for s, e in state.segments.items():
        size[s] += e.carried.n_requests
    for w in windows:
        size[w.key.segment] += w.aggregate.n_requests if w.key.comparison == "candidate" else 0
    names = state.names.admit(
        (w.key.segment for w in windows), size.__getitem__, policy.judge.max_segments
    )
    if OTHER in state.names.named or OTHER not in names.named:
        return replace(state, names=names)
    old = names.renamed
    assert old is not None

    def moved(evidence: Mapping[str, FoldsT]) -> dict[str, FoldsT]:
        return {OTHER if s == old else s: e for s, e in evidence.items()}

    return replace(
        state,
        names=names,
        segments=moved(state.segments),
        replicas=moved(state.replicas),
        preference=moved(state.preference),
    )


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
