"""Per-metric classifiers: one segment's stage evidence in, one Evidence out.

Each follows Kayenta's order of guard clauses (no data -> no reference -> bounds) and
reads always-valid confidence bounds, never bare point estimates:

- FAIL when the bound shows the regression exceeds the policy margin,
- PASS when the bound shows the candidate is within the margin (non-inferiority),
- INCONCLUSIVE otherwise: keep collecting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shadowlens.comparators.aggregate import Aggregate, PairedCounts
from shadowlens.judge.evidence_state import SegmentEvidence
from shadowlens.judge.policy import Policy
from shadowlens.judge.stats_means import BoundedMeanCS, mixture_rho
from shadowlens.judge.stats_paired_rates import mcnemar_sequential
from shadowlens.judge.stats_quantiles import quantile_ratio_ci
from shadowlens.judge.verdicts import Evidence, Metric, Verdict


@dataclass(frozen=True, slots=True)
class QualityReference:
    """What candidate quality is compared with: the primary's agreement with itself
    (a replica arm, measured now) or, without one, the experiment's early baseline."""

    state: BoundedMeanCS | None
    source: str  # "replica" | "baseline" | "none"


@dataclass(frozen=True, slots=True)
class Alphas:
    """Error budgets of one metric: `fail` for rollbacks (false rollbacks are costly, so it
    is tiny), `pass_` for promotion's non-inferiority bounds (a wrong promotion is caught
    by the next stage's rollback bounds, so it can be larger)."""

    fail: float
    pass_: float


def _nodata(metric: Metric, segment: str, n: int, need: int, critical: bool) -> Evidence:
    return Evidence(
        metric, segment, Verdict.NODATA, None, None, None, n, critical,
        reason=f"{n} observations, {need} needed",
    )  # fmt: skip


def _verdict(fail: bool, ok: bool) -> Verdict:
    return Verdict.FAIL if fail else Verdict.PASS if ok else Verdict.INCONCLUSIVE


def shrink(value: float, n: float, prior: float | None, k: float) -> float:
    """Empirical-Bayes style shrinkage of a segment's estimate toward the global one:
    a segment with n observations keeps weight n / (n + k)."""
    if prior is None or k <= 0:
        return value
    return (n * value + k * prior) / (n + k)


def p99_ratio(ev: SegmentEvidence, q: float) -> float | None:
    """Candidate over primary latency quantile, from the stage's sketches."""
    primary = ev.totals.latency_quantile("primary", q)
    candidate = ev.totals.latency_quantile("candidate", q)
    return candidate / primary if primary and candidate is not None else None


def classify_latency(
    ev: SegmentEvidence,
    segment: str,
    policy: Policy,
    alpha: Alphas,
    overall: SegmentEvidence | None = None,
) -> Evidence:
    """p99 ratio above the limit, backed by a significant paired slowdown.

    A p99 from a few hundred requests is too noisy to act on alone, and a distribution-free
    bound on it needs >1,000 requests per arm. So a rollback needs both: the stage's p99
    ratio over the limit, and an always-valid bound showing the per-request latency ratio
    is above 1 + half the margin (the candidate really is slower on the same requests, by
    more than a regression the policy tolerates). The sequential
    order-statistic bound on the p99 ratio alone also suffices once it clears the limit.
    A segment's p99 ratio is shrunk toward the all-segments ratio (`overall`), so a small
    segment's noisy tail does not roll back on its own.
    """
    pol, need, agg = policy.latency, policy.judge.min_pairs, ev.totals
    q, limit = pol.quantile, 1.0 + pol.max_relative_increase
    cs = ev.log_latency_ratio
    if cs.n < need:
        return _nodata(Metric.LATENCY_P99, segment, cs.n, need, pol.critical)
    primary, candidate = agg.latency_quantile("primary", q), agg.latency_quantile("candidate", q)
    assert primary is not None and candidate is not None
    prior = p99_ratio(overall, q) if overall is not None else None
    ratio = shrink(candidate / primary, cs.n, prior, policy.judge.shrinkage_pairs)
    lo, _ = cs.interval(alpha.fail, mixture_rho(policy.judge.optimal_n, alpha.fail))
    _, hi = cs.interval(alpha.pass_, mixture_rho(policy.judge.optimal_n, alpha.pass_))
    tail = quantile_ratio_ci(
        agg.primary_latency_ms, agg.candidate_latency_ms, q, alpha.fail, sequential=True
    )
    shift = math.log1p(pol.max_relative_increase / 2)
    fail = (ratio > limit and lo > shift) or tail.lo > limit
    ok = ratio <= limit and hi < math.log(limit)
    verdict = _verdict(fail, ok)
    return Evidence(
        Metric.LATENCY_P99,
        segment,
        verdict,
        observed=ratio,
        reference=primary,
        threshold=limit,
        n=cs.n,
        critical=pol.critical,
        bound=math.exp(lo if fail else hi),
        reason=f"candidate p{q * 100:g} {candidate:.0f} ms = {ratio:.2f}x primary {primary:.0f}"
        f" ms (limit {limit:.2f}x); paired latency ratio in [{math.exp(lo):.2f}, "
        f"{math.exp(hi):.2f}]x",
        example_request_ids=tuple(agg.examples("latency")) if fail else (),
    )


@dataclass(frozen=True, slots=True)
class PairedRate:
    """A yes/no outcome of both arms on the same requests (failed, refused), as the judge
    reads it: the window totals and the sequential bounds of the candidate's rate and of
    the per-request increase over the primary."""

    metric: Metric
    noun: str  # "error", "refusal": for the reason
    counts: PairedCounts
    candidate: BoundedMeanCS
    increase: BoundedMeanCS
    examples: tuple[str, ...]
    note: str = ""  # appended to the reason's limits


def classify_paired_rate(
    x: PairedRate,
    segment: str,
    max_absolute: float,
    max_increase: float,
    critical: bool,
    need: int,
    alpha: Alphas,
) -> Evidence:
    """Candidate rate above the absolute limit and above the primary's plus margin.

    A rollback needs the point rate past the limit and a sequential McNemar test (paired:
    same requests, discordant pairs only) showing the candidate's outcome more often.
    Requiring the bounds themselves to clear the limits needs ~30,000 pairs at +3 pp.
    Passing needs the candidate's bound under `max_absolute` or the increase's under
    `max_increase`.
    """
    n = x.candidate.n
    if n < need:
        return _nodata(x.metric, segment, n, need, critical)
    c_lo, c_hi = x.candidate.interval(alpha.pass_ / 2)
    d_lo, d_hi = x.increase.interval(alpha.pass_ / 2)
    cand, prim = x.counts.rate("candidate") or 0.0, x.counts.rate("primary") or 0.0
    limit = max(max_absolute, prim + max_increase)
    worse = mcnemar_sequential(
        x.counts.only_candidate, x.counts.only_primary, alternative="greater"
    )
    fail = cand > limit and worse.p_value < alpha.fail
    ok = c_hi <= max_absolute or d_hi <= max_increase
    return Evidence(
        x.metric,
        segment,
        _verdict(fail, ok),
        observed=cand,
        reference=prim,
        threshold=limit,
        n=n,
        critical=critical,
        bound=x.candidate.interval(alpha.fail / 2)[0] if fail else c_hi,
        reason=f"candidate {x.noun} rate {cand:.1%} in [{c_lo:.1%}, {c_hi:.1%}], primary "
        f"{prim:.1%}, increase in [{d_lo:+.1%}, {d_hi:+.1%}], McNemar p={worse.p_value:.2g} "
        f"(limits {max_absolute:.0%} and +{max_increase:.0%}{x.note})",
        example_request_ids=x.examples if fail else (),
    )


def classify_errors(ev: SegmentEvidence, segment: str, policy: Policy, alpha: Alphas) -> Evidence:
    """Candidate error rate above max(5 %, primary + 2 pp), a missing candidate counting as
    its error: `classify_paired_rate` over the failures of every judged request."""
    pol, agg = policy.errors, ev.totals
    errors = PairedRate(
        Metric.ERROR_RATE,
        "error",
        agg.failures,
        ev.candidate_error,
        ev.error_increase,
        tuple(agg.examples("errors")),
        note="; a missing candidate counts as an error",
    )
    return classify_paired_rate(
        errors, segment, pol.max_absolute, pol.max_increase, pol.critical,
        policy.judge.min_pairs, alpha,
    )  # fmt: skip


def classify_refusals(ev: SegmentEvidence, segment: str, policy: Policy, alpha: Alphas) -> Evidence:
    """Candidate refusal rate above max(5 %, primary + 2 pp), over the pairs where both
    arms answered with text: `classify_paired_rate`, as for errors. The absolute allowance
    lets a stage pass once the candidate's refusals are shown rare: proving a +2 pp bound
    on the increase alone takes ~1,650 pairs even when neither arm ever refuses. It is 5 %,
    as for errors, because a rollback reads the point rate: at 3 % the A/A runs of
    bench/decision_quality.py rolled back 12 of 50 times on one segment where the candidate
    refuses 3.6 % against the primary's 1.8 % (inside the +2 pp margin)."""
    pol, agg = policy.refusals, ev.totals
    refusals = PairedRate(
        Metric.REFUSAL_RATE,
        "refusal",
        agg.refusals,
        ev.candidate_refusal,
        ev.refusal_increase,
        tuple(agg.examples("refusal")),
        note="; pairs where both arms answered",
    )
    return classify_paired_rate(
        refusals, segment, pol.max_absolute, pol.max_increase, pol.critical,
        policy.judge.min_pairs, alpha,
    )  # fmt: skip


def classify_quality(
    ev: SegmentEvidence,
    segment: str,
    reference: QualityReference,
    policy: Policy,
    alpha: Alphas,
) -> Evidence:
    """Agreement with the primary more than the margin below the reference's.

    A rollback needs the mean below the floor and the candidate's upper bound below the
    reference's lower bound (surely worse than the noise floor, by a point margin).

    Under the semantic budget the bound reads the measured pairs only, unweighted: they are
    a uniform sample (`shadowlens.comparators.cascade`), so n is the measured pairs, never the
    weighted count; the reason says which share was measured."""
    pol, need = policy.quality, policy.judge.min_pairs
    n = ev.quality.n
    if n < need:
        return _nodata(Metric.QUALITY, segment, n, need, pol.critical)
    mean = ev.quality.mean
    if reference.state is None:
        return Evidence(
            Metric.QUALITY, segment, Verdict.NODATA, mean, None, None, n, pol.critical,
            reason="no reference yet: no replica arm and no baseline",
        )  # fmt: skip
    keep = 1.0 - pol.max_relative_drop
    _, c_hi = ev.quality.interval(alpha.fail / 2)
    r_lo, r_hi = reference.state.interval(alpha.fail / 2)
    c_lo, _ = ev.quality.interval(alpha.pass_)
    ref = reference.state.mean
    fail = mean < ref * keep and c_hi < r_lo
    ok = c_lo >= ref * keep
    return Evidence(
        Metric.QUALITY,
        segment,
        _verdict(fail, ok),
        observed=mean,
        reference=ref,
        threshold=ref * keep,
        n=n,
        critical=pol.critical,
        bound=c_hi if fail else c_lo,
        reason=f"agreement with primary {mean:.3f} in [{c_lo:.3f}, {c_hi:.3f}] vs "
        f"{reference.source} {ref:.3f} in [{r_lo:.3f}, {r_hi:.3f}] (floor x{keep:.2f})"
        + _sampled(ev.totals),
        example_request_ids=tuple(ev.totals.examples("quality")) if fail else (),
    )


def _sampled(totals: Aggregate) -> str:
    fraction = totals.quality_sampled_fraction
    if fraction is None or fraction == 1.0:
        return ""
    total = totals.quality_measured + totals.quality_unsampled
    return f"; measured on a uniform sample of {totals.quality_measured} of {total} pairs"


def classify_cost(ev: SegmentEvidence, segment: str, policy: Policy, alpha: Alphas) -> Evidence:
    """Mean candidate cost per request above the forecast plus margin."""
    pol, need = policy.cost, policy.judge.min_pairs
    cs = ev.candidate_cost
    if cs.n < need:
        return _nodata(Metric.COST, segment, cs.n, need, pol.critical)
    forecast = pol.forecast_usd_per_request or ev.totals.primary_cost_usd.mean
    if not forecast:
        return Evidence(
            Metric.COST, segment, Verdict.NODATA, cs.mean, None, None, cs.n, pol.critical,
            reason="no cost forecast and no primary cost",
        )  # fmt: skip
    limit = forecast * (1.0 + pol.max_relative_increase)
    lo, _ = cs.interval(alpha.fail, mixture_rho(policy.judge.optimal_n, alpha.fail))
    _, hi = cs.interval(alpha.pass_, mixture_rho(policy.judge.optimal_n, alpha.pass_))
    fail, ok = lo > limit, hi <= limit
    return Evidence(
        Metric.COST,
        segment,
        _verdict(fail, ok),
        observed=cs.mean,
        reference=forecast,
        threshold=limit,
        n=cs.n,
        critical=pol.critical,
        bound=lo if fail else hi,
        reason=f"candidate ${cs.mean:.6f}/request in [${lo:.6f}, ${hi:.6f}] vs forecast "
        f"${forecast:.6f} (limit ${limit:.6f})",
    )


def classify_pairing(ev: SegmentEvidence, segment: str, policy: Policy) -> Evidence:
    """Too many lost halves make every other verdict unreliable: it blocks promotion."""
    floor, agg = policy.pairing.min_pairing_rate, ev.totals
    rate, n = agg.pairing_rate, agg.n_requests
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
