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


class Verdict(StrEnum):
    PASS = "pass"  # within the policy, with the evidence needed to say so
    FAIL = "fail"  # the regression exceeds the policy margin
    INCONCLUSIVE = "inconclusive"  # enough data, but the bounds do not settle it yet
    NODATA = "nodata"  # too few observations to judge


class Action(StrEnum):
    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"


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

    @property
    def failing(self) -> tuple[Evidence, ...]:
        return tuple(e for e in self.evidence if e.verdict == Verdict.FAIL)
