"""The money: cost per request of each arm, a monthly projection and the payback period.

Kept apart from the loader: it is arithmetic an operator argues about (how long a month is,
when a migration never pays back), tested on its own numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from shadowlens.report.rows import Overview, SegmentRow

DAYS_PER_MONTH = 365.25 / 12
SECONDS_PER_MONTH = DAYS_PER_MONTH * 86_400


@dataclass(frozen=True, slots=True)
class CostProjection:
    primary_per_request_usd: float | None
    candidate_per_request_usd: float | None
    requests_per_second: float | None  # observed, in event time
    monthly_requests: float | None
    monthly_requests_given: bool  # True: --monthly-requests; False: the observed rate
    migration_cost_usd: float

    def monthly(self, per_request: float | None) -> float | None:
        if per_request is None or self.monthly_requests is None:
            return None
        return per_request * self.monthly_requests

    @property
    def primary_monthly_usd(self) -> float | None:
        return self.monthly(self.primary_per_request_usd)

    @property
    def candidate_monthly_usd(self) -> float | None:
        return self.monthly(self.candidate_per_request_usd)

    @property
    def monthly_savings_usd(self) -> float | None:
        p, c = self.primary_monthly_usd, self.candidate_monthly_usd
        return None if p is None or c is None else p - c

    @property
    def payback_months(self) -> float | None:
        """Months of savings that repay the migration; None when it never pays back or
        there is nothing to repay (see `payback_text`)."""
        savings = self.monthly_savings_usd
        if self.migration_cost_usd <= 0 or savings is None or savings <= 0:
            return None
        return self.migration_cost_usd / savings

    @property
    def payback_text(self) -> str:
        savings = self.monthly_savings_usd
        if self.migration_cost_usd <= 0:
            return "n/a"
        if savings is None:
            return "n/a (no cost data)"
        if savings <= 0:
            return "never (the candidate costs more per month)"
        months = self.migration_cost_usd / savings
        days = months * DAYS_PER_MONTH
        return f"{days:.0f} days" if months < 1 else f"{months:.1f} months"


def cost_projection(
    overview: Overview,
    total: SegmentRow | None,
    monthly_requests: float | None,
    migration_cost_usd: float,
) -> CostProjection:
    """Cost per request of each arm, scaled to a month of the observed (or given) rate."""
    span = overview.span_seconds
    rate = overview.requests / span if span and span >= 1.0 and overview.requests > 1 else None
    given = monthly_requests is not None
    monthly = monthly_requests if given else (rate * SECONDS_PER_MONTH if rate else None)
    return CostProjection(
        primary_per_request_usd=total.primary_cost_usd if total else None,
        candidate_per_request_usd=total.candidate_cost_usd if total else None,
        requests_per_second=rate,
        monthly_requests=monthly,
        monthly_requests_given=given,
        migration_cost_usd=migration_cost_usd,
    )
