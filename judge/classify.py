"""Per-metric classifiers: one aggregate in, one Evidence out.

Each follows Kayenta's order of guard clauses: no data -> threshold, and each says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from comparators.aggregate import Aggregate
from judge.policy import Policy
from judge.verdicts import Evidence, Metric, Verdict


@dataclass(frozen=True, slots=True)
class QualityReference:
    """What candidate quality is compared with: the primary's self-agreement or a baseline."""

    value: float | None
    source: str  # "replica" (noise floor measured now) or "baseline" (early pairs) or "none"


def _nodata(metric: Metric, segment: str, n: int, need: int, critical: bool) -> Evidence:
    return Evidence(
        metric, segment, Verdict.NODATA, None, None, None, n, critical,
        reason=f"{n} observations, {need} needed",
    )  # fmt: skip


def classify_latency(agg: Aggregate, segment: str, policy: Policy) -> Evidence:
    pol, need = policy.latency, policy.judge.min_pairs
    q = pol.quantile
    n = min(agg.primary_latency_ms.count, agg.candidate_latency_ms.count)
    if n < need:
        return _nodata(Metric.LATENCY_P99, segment, int(n), need, pol.critical)
    primary, candidate = agg.latency_quantile("primary", q), agg.latency_quantile("candidate", q)
    assert primary is not None and candidate is not None
    ratio = candidate / primary
    limit = 1.0 + pol.max_relative_increase
    failed = ratio > limit
    return Evidence(
        Metric.LATENCY_P99,
        segment,
        Verdict.FAIL if failed else Verdict.PASS,
        observed=ratio,
        reference=primary,
        threshold=limit,
        n=int(n),
        critical=pol.critical,
        reason=f"candidate p{q * 100:g} {candidate:.0f} ms is {ratio:.2f}x primary {primary:.0f} ms"
        f" (limit {limit:.2f}x)",
        example_request_ids=tuple(agg.examples("latency")) if failed else (),
    )


def classify_errors(agg: Aggregate, segment: str, policy: Policy) -> Evidence:
    pol, need = policy.errors, policy.judge.min_pairs
    n = agg.n_requests
    if n < need:
        return _nodata(Metric.ERROR_RATE, segment, n, need, pol.critical)
    cand, prim = agg.error_rate("candidate"), agg.error_rate("primary")
    assert cand is not None and prim is not None
    limit = max(pol.max_absolute, prim + pol.max_increase)
    failed = cand > limit
    return Evidence(
        Metric.ERROR_RATE,
        segment,
        Verdict.FAIL if failed else Verdict.PASS,
        observed=cand,
        reference=prim,
        threshold=limit,
        n=n,
        critical=pol.critical,
        reason=f"candidate error rate {cand:.1%} vs primary {prim:.1%} (limit {limit:.1%}; "
        "a missing candidate counts as an error)",
        example_request_ids=tuple(agg.examples("errors")) if failed else (),
    )


def classify_quality(
    agg: Aggregate, segment: str, reference: QualityReference, policy: Policy
) -> Evidence:
    pol, need = policy.quality, policy.judge.min_pairs
    n = int(agg.quality.n)
    if n < need:
        return _nodata(Metric.QUALITY, segment, n, need, pol.critical)
    if reference.value is None:
        return Evidence(
            Metric.QUALITY, segment, Verdict.NODATA, agg.quality.mean, None, None, n,
            pol.critical, reason="no reference yet: no replica arm and no baseline",
        )  # fmt: skip
    mean = agg.quality.mean
    assert mean is not None
    limit = reference.value * (1.0 - pol.max_relative_drop)
    failed = mean < limit
    return Evidence(
        Metric.QUALITY,
        segment,
        Verdict.FAIL if failed else Verdict.PASS,
        observed=mean,
        reference=reference.value,
        threshold=limit,
        n=n,
        critical=pol.critical,
        reason=f"agreement with primary {mean:.3f} vs {reference.source} {reference.value:.3f}"
        f" (floor {limit:.3f})",
        example_request_ids=tuple(agg.examples("quality")) if failed else (),
    )


def classify_cost(agg: Aggregate, segment: str, policy: Policy) -> Evidence:
    pol, need = policy.cost, policy.judge.min_pairs
    n = int(agg.candidate_cost_usd.n)
    if n < need:
        return _nodata(Metric.COST, segment, n, need, pol.critical)
    forecast = pol.forecast_usd_per_request or agg.primary_cost_usd.mean
    cost = agg.candidate_cost_usd.mean
    assert cost is not None
    if not forecast:
        return Evidence(
            Metric.COST, segment, Verdict.NODATA, cost, None, None, n, pol.critical,
            reason="no cost forecast and no primary cost",
        )  # fmt: skip
    limit = forecast * (1.0 + pol.max_relative_increase)
    failed = cost > limit
    return Evidence(
        Metric.COST,
        segment,
        Verdict.FAIL if failed else Verdict.PASS,
        observed=cost,
        reference=forecast,
        threshold=limit,
        n=n,
        critical=pol.critical,
        reason=f"candidate ${cost:.6f}/request vs forecast ${forecast:.6f} (limit ${limit:.6f})",
    )


def classify_pairing(agg: Aggregate, segment: str, policy: Policy) -> Evidence:
    """Too many lost halves make every other verdict unreliable: it blocks promotion."""
    floor, n = policy.pairing.min_pairing_rate, agg.n_requests
    rate = agg.pairing_rate
    if rate is None:
        return _nodata(Metric.PAIRING_RATE, segment, n, 1, False)
    return Evidence(
        Metric.PAIRING_RATE,
        segment,
        Verdict.PASS if rate >= floor else Verdict.FAIL,
        observed=rate,
        reference=None,
        threshold=floor,
        n=n,
        reason=f"{agg.n_paired} of {n} requests paired ({rate:.1%}; floor {floor:.0%})",
    )
