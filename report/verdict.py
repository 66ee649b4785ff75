"""Go/no-go: where the migration stands against the policy over its whole life.

Kept apart from the loader because it is the report's one judgement: it reads decisions
already made by the judge and turns them into a status and a checklist, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shadowlens.judge.policy import Policy
from shadowlens.judge.verdicts import Action, Metric, Phase, Verdict
from shadowlens.report.rows import OVERALL, DecisionRow, EvidenceRow

SEVERITY = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.NODATA: 2, Verdict.PASS: 3}


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the go/no-go table: a verdict of the last decision next to its limit."""

    metric: str
    segment: str
    verdict: str
    limit: str
    detail: str


@dataclass(frozen=True, slots=True)
class GoNoGo:
    status: str  # GO | NO-GO | NOT YET | NO DATA
    headline: str
    last: DecisionRow | None
    checks: tuple[Check, ...]


def limit_text(metric: str, policy: Policy) -> str:
    """The policy limit a metric is judged against, in words."""
    if metric == Metric.LATENCY_P99:
        q = policy.latency.quantile * 100
        return f"p{q:g} <= {1 + policy.latency.max_relative_increase:.2f}x primary"
    if metric in (Metric.ERROR_RATE, Metric.REFUSAL_RATE):
        e = policy.errors if metric == Metric.ERROR_RATE else policy.refusals
        return f"<= max({e.max_absolute:.0%}, primary + {e.max_increase * 100:g} pp)"
    if metric == Metric.QUALITY:
        return f"<= {policy.quality.max_relative_drop:.0%} below reference"
    if metric == Metric.COST:
        forecast = policy.cost.forecast_usd_per_request
        ref = "primary cost" if forecast is None else f"${forecast:g}/request"
        return f"<= {policy.cost.max_relative_increase:.0%} over {ref}"
    if metric == Metric.PAIRING_RATE:
        return f">= {policy.pairing.min_pairing_rate:.0%}"
    return ""


def segments_worst_first(evidence: Sequence[EvidenceRow]) -> list[str]:
    """The segments of `evidence` (not the all-segments view), the worst verdict first."""
    worst: dict[str, int] = {}
    for e in evidence:
        if e.segment != OVERALL:
            rank = SEVERITY.get(Verdict(e.verdict), 2)
            worst[e.segment] = min(worst.get(e.segment, rank), rank)
    return sorted(worst, key=lambda seg: (worst[seg], seg))


def persisting(decisions: Sequence[DecisionRow]) -> list[tuple[DecisionRow, EvidenceRow]]:
    """Failures that have not passed since, with the decision that saw them fail last: a
    rollback whose cause persists (or has gone quiet) is no better for the minutes since."""
    open_: dict[tuple[str, str], tuple[DecisionRow, EvidenceRow]] = {}
    for d in decisions:
        for e in d.evidence:
            if e.verdict == Verdict.FAIL:
                open_[(e.metric, e.segment)] = (d, e)
            elif e.verdict == Verdict.PASS:
                open_.pop((e.metric, e.segment), None)
    return list(open_.values())


def go_no_go(decisions: Sequence[DecisionRow], policy: Policy) -> GoNoGo:
    """Where the migration stands against the policy over its whole life.

    NO-GO: the last decision rolled back, one of its verdicts fails, the experiment is
    rolled back or aborted, or a failure seen earlier has not passed since (a regression
    that went quiet is not gone): the headline gives that failure's evidence. GO: the ramp
    has reached its last stage (then the headline says when the old deployment may be
    decommissioned, or why not yet), or every overall verdict passes (ready for the next
    stage). NOT YET: paused, waiting for an approval, or nothing fails but the evidence is
    still inconclusive or missing. The checks are the last decision's, the all-segments
    view first, then the segments worst first.
    """
    if not decisions:
        return GoNoGo("NO DATA", "no decision yet: the judge has not closed a window", None, ())
    last = decisions[-1]
    order = {m: i for i, m in enumerate(Metric)}
    place = {seg: i for i, seg in enumerate(segments_worst_first(last.evidence))}
    ev = sorted(
        last.evidence,
        key=lambda e: (e.segment != OVERALL, place.get(e.segment, -1), order.get(e.metric, 99)),
    )
    checks = tuple(
        Check(e.metric, e.segment, e.verdict, limit_text(e.metric, policy), e.reason) for e in ev
    )
    final_stage = policy.ramp.stages_percent[-1]
    stage = f"{last.to_percent:g} % of traffic"
    if last.action == Action.ROLLBACK or last.failing:
        failing = ", ".join(f"{e.metric} [{e.segment}]" for e in last.failing) or last.reason
        return GoNoGo("NO-GO", f"{last.action} to {stage}: {failing} failed", last, checks)
    if last.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        causes = "".join(
            f"; {e.metric} [{e.segment}] failed at {d.decided_at:%H:%M}: {e.reason}"
            for d, e in persisting(decisions)
        )
        return GoNoGo(
            "NO-GO",
            f"{last.phase.replace('_', ' ')} at {stage}: {last.reason}{causes}",
            last,
            checks,
        )
    unresolved = persisting(decisions)
    if unresolved:
        causes = "; ".join(
            f"{e.metric} [{e.segment}] failed at {d.decided_at:%H:%M} and has not passed "
            f"since: {e.reason}"
            for d, e in unresolved
        )
        return GoNoGo("NO-GO", f"at {stage}: {causes}", last, checks)
    if last.phase in (Phase.PAUSED, Phase.AWAITING_APPROVAL):
        return GoNoGo("NOT YET", f"{last.reason} ({stage})", last, checks)
    if last.phase == Phase.COMPLETE:
        return GoNoGo(
            "GO",
            "decommission-ready: the stability period at 100 % passed; the "
            "old deployment may be decommissioned",
            last,
            checks,
        )
    if last.to_percent >= final_stage:
        return GoNoGo(
            "GO", f"ramp complete: the candidate serves {stage}; {last.reason}", last, checks
        )
    overall = [e for e in last.evidence if e.segment == OVERALL]
    if overall and all(e.verdict == Verdict.PASS for e in overall):
        return GoNoGo("GO", f"every check passes at {stage}: ready to promote", last, checks)
    waiting = [f"{e.metric} {e.verdict}" for e in overall if e.verdict != Verdict.PASS] or [
        "no overall evidence"
    ]
    return GoNoGo("NOT YET", f"{last.action} at {stage}: {', '.join(waiting)}", last, checks)
