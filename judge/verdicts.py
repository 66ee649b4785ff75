"""Verdicts are data: a closed set of labels and a result that carries its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Metric(StrEnum):
    LATENCY_P99 = "latency_p99"
    ERROR_RATE = "error_rate"
    QUALITY = "quality"
    COST = "cost"
    PAIRING_RATE = "pairing_rate"
    REFUSAL_RATE = "refusal_rate"
    PREFERENCE = "preference"  # the judge's win rate of the candidate, with its guard


class Verdict(StrEnum):
    PASS = "pass"  # within the policy, with the evidence needed to say so
    FAIL = "fail"  # the regression exceeds the policy margin
    INCONCLUSIVE = "inconclusive"  # enough data, but the bounds do not settle it yet
    NODATA = "nodata"  # too few observations to judge


class Action(StrEnum):
    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"


class Phase(StrEnum):
    """Where a migration stands (`shadowlens.judge.lifecycle`; docs/operations.md)."""

    RAMPING = "ramping"  # the judge walks the ramp on its own
    ROLLED_BACK = "rolled_back"  # one rollback happened; holds until resumed (or a retry)
    PAUSED = "paused"  # an operator stopped promotions; regressions still roll back
    AWAITING_APPROVAL = "awaiting_approval"  # a proposed step waits for `approve`
    STABILITY = "stability"  # at 100 %: the old primary is the shadow, drift is watched
    COMPLETE = "complete"  # the stability period passed: the old deployment may go
    ABORTED = "aborted"  # an operator ended the migration: 0 %, final


class Command(StrEnum):
    """What an operator can tell the worker (`shadowlens control ...`)."""

    RESUME = "resume"
    PAUSE = "pause"
    ABORT = "abort"
    APPROVE = "approve"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One metric's verdict for one segment, with the numbers behind it."""

    metric: Metric
    segment: str
    verdict: Verdict
    observed: float | None  # e.g. candidate/primary p99 ratio, candidate error rate
    reference: float | None  # what it is compared with: primary value or noise floor
    threshold: float | None  # the policy limit on `observed`
    n: int
    critical: bool = False
    bound: float | None = None  # the confidence bound that decided, when a test did
    reason: str = ""
    example_request_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Blocker:
    """A metric and segment whose failure rolled the experiment back and holds it."""

    metric: Metric
    segment: str


@dataclass(frozen=True, slots=True)
class Proposal:
    """A step the judge wants but an operator must approve first (policy `ramp.approval`)."""

    action: Action
    stage_index: int
    to_percent: float


@dataclass(frozen=True, slots=True)
class Operator:
    """Who made a decision by command (the key that signed it) and why."""

    key_id: str
    command: Command
    command_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the judge tells the routing layer, and why."""

    experiment: str
    epoch: int  # strictly increasing per experiment; routers drop anything older
    action: Action
    from_percent: float
    to_percent: float
    decided_at_ms: int  # event time (watermark) of the decision
    reason: str
    evidence: tuple[Evidence, ...] = field(default=())
    phase: Phase = Phase.RAMPING  # the lifecycle state after this decision
    blocking: tuple[Blocker, ...] = ()  # rolled back: what failed
    proposal: Proposal | None = None  # awaiting approval: the step wanted
    operator: Operator | None = None  # made by an operator's command
    decommission_after_ms: int | None = None  # at 100 %: when the old deployment may go

    @property
    def failing(self) -> tuple[Evidence, ...]:
        return tuple(e for e in self.evidence if e.verdict == Verdict.FAIL)
