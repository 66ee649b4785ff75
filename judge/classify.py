"""Per-metric classifiers: one segment's evidence in, one Evidence out.

Each follows Kayenta's order of guard clauses (no data -> no reference -> bounds) and
reads always-valid confidence bounds, never bare point estimates:

- FAIL when the observed value is past the policy limit and the bound shows the regression
  exceeds half the margin: a candidate whose true regression is within half the margin
  rolls back with probability at most the metric's alpha, however long it runs (a test
  against zero regression would, given time, roll back any real but tolerated change);
- PASS when the bound shows the candidate is within the margin (non-inferiority),
- INCONCLUSIVE otherwise: keep collecting.

Latency and cost read this stage's evidence; errors, refusals and quality read the evidence
carried since the last rollback (`shadowlens.judge.evidence_state`), and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from shadowlens.comparators.aggregate import Aggregate, PairedCounts
from shadowlens.judge.evidence_state import TAIL_PARTS, SegmentEvidence
from shadowlens.judge.policy import Policy
from shadowlens.judge.stats_means import BoundedMeanCS, GaussianMixtureCS, mixture_rho
from shadowlens.judge.stats_paired_rates import mcnemar_sequential
from shadowlens.judge.stats_quantiles import quantile_ratio_ci
from shadowlens.judge.verdicts import Evidence, Metric, Verdict


class ReferenceSource(StrEnum):
    """Where the reference for quality comes from; never the candidate itself."""

    REPLICA = "replica"  # a second sample of the primary, measured now
    POLICY = "policy"  # the policy's per-task agreement of the primary with itself
    NONE = "none"  # nothing: quality is not certified


@dataclass(frozen=True, slots=True)
class QualityReference:
    """What candidate quality is compared with: the primary's agreement with itself, as a
    replica arm measures it (with its own bound), as the policy states it for the task, or
    unknown. Unknown still has an upper bound: no reference exceeds perfect agreement."""

    source: ReferenceSource
    replica: GaussianMixtureCS | None = None
    value: float | None = None  # the policy's reference (POLICY)
    drift_from: float | None = None  # the candidate's first pairs: a drift signal only
    replica_pairs: int = 0  # NONE: replica pairs so far, too few to be the reference yet

    @property
    def mean(self) -> float | None:
        if self.replica is not None:
            return self.replica.mean
        return self.value

    def interval(self, alpha: float, rho: float) -> tuple[float, float]:
        """Bounds on the reference: the replica's confidence sequence (within [0, 1]), the
        policy's value exactly, or [0, 1] without a reference."""
        if self.replica is not None:
            lo, hi = self.replica.interval(alpha, rho)
            return (max(0.0, lo), min(1.0, hi))
        if self.value is not None:
            return (self.value, self.value)
        return (0.0, 1.0)

    def describe(self, lo: float, hi: float) -> str:
        if self.source == ReferenceSource.NONE:
            return "no reference (perfect agreement 1.0 at most)"
        if self.source == ReferenceSource.POLICY:
            return f"policy reference {self.mean:.3f}"
        return f"replica {self.mean:.3f} in [{lo:.3f}, {hi:.3f}]"


def _no_reference(reference: QualityReference, need: int) -> str:
    replica = (
        f"the replica arm has {reference.replica_pairs} pairs of {need} needed"
        if reference.replica_pairs
        else "no replica arm"
    )
    return f"{replica}, no [quality.reference] for the task"


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


def carried_note(ev: SegmentEvidence) -> str:
    """What of the evidence was carried from earlier stages ("" when nothing was)."""
    before = ev.carried_pairs
    if ev.stages <= 1 or before <= 0:
        return ""
    return (
        f"; carried across {ev.stages - 1} promotion(s): {before:,} of "
        f"{ev.carried.n_requests:,} requests are from earlier stages"
    )


def classify_latency(
    ev: SegmentEvidence,
    segment: str,
    policy: Policy,
    alpha: Alphas,
    overall: SegmentEvidence | None = None,
) -> Evidence:
    """The p99 gate, read on the pairing of the two latencies of a request.

    A p99 from a few hundred requests is the maximum or near it, and a distribution-free
    bound on it needs >1,000 requests per arm; the two latencies of a request, though, move
    together (the same prompt, the same answer length). So the gate reads the slow end of
    the pairs: log(candidate / primary) of each window's slowest fifth, ranked by the two
    latencies' geometric mean (`shadowlens.judge.evidence_state.tail_log_ratios`), with an
    always-valid bound (`GaussianMixtureCS`). Its exponential, the paired tail ratio, is
    the observed value: how much slower the candidate is on the requests that make the p99.

    FAIL: the tail ratio past the limit and its bound past half the margin, or the
    distribution-free sequential bound on the p99 ratio itself past the limit (a stall on
    random requests, which the pairing cannot see coming). PASS: the tail ratio's bound
    under the limit and the stage's p99 ratio too. A segment's tail ratio is shrunk toward
    the all-segments one (`overall`), so a small segment's few slow pairs do not hold the
    ramp on their own. Per stage: latency depends on the traffic share.
    """
    pol, need, agg = policy.latency, policy.judge.min_pairs, ev.totals
    q, limit = pol.quantile, 1.0 + pol.max_relative_increase
    n = int(agg.log_latency_ratio.n)
    tail = ev.tail_log_ratio
    if n < need or tail.n < 2:
        return _nodata(Metric.LATENCY_P99, segment, n, need, pol.critical)
    primary, candidate = agg.latency_quantile("primary", q), agg.latency_quantile("candidate", q)
    assert primary is not None and candidate is not None
    whole = overall.tail_log_ratio if overall is not None else None
    prior = whole.mean if whole is not None and whole.n else None
    tail_share = 1.0 / TAIL_PARTS
    log_ratio = shrink(tail.mean, tail.n, prior, policy.judge.shrinkage_pairs * tail_share)
    rho_n = policy.judge.optimal_n * tail_share
    lo, _ = tail.interval(alpha.fail, mixture_rho(rho_n, alpha.fail))
    _, hi = tail.interval(alpha.pass_, mixture_rho(rho_n, alpha.pass_))
    bound = quantile_ratio_ci(
        agg.primary_latency_ms, agg.candidate_latency_ms, q, alpha.fail, sequential=True
    )
    p99 = candidate / primary
    fail = (log_ratio > math.log(limit) and lo > math.log1p(pol.max_relative_increase / 2)) or (
        bound.lo > limit
    )
    ok = hi < math.log(limit) and p99 <= limit
    return Evidence(
        Metric.LATENCY_P99,
        segment,
        _verdict(fail, ok),
        observed=math.exp(log_ratio),
        reference=primary,
        threshold=limit,
        n=n,
        critical=pol.critical,
        bound=(bound.lo if bound.lo > limit else math.exp(lo)) if fail else math.exp(hi),
        reason=f"candidate p{q * 100:g} {candidate:.0f} ms = {p99:.2f}x primary {primary:.0f} "
        f"ms; on the slowest fifth of pairs ({tail.n}) the candidate takes "
        f"{math.exp(tail.mean):.2f}x the primary's time, paired bound [{math.exp(lo):.2f}, "
        f"{math.exp(hi):.2f}]x"
        + ("" if prior is None else f", {math.exp(log_ratio):.2f}x shrunk toward all segments'")
        + f" (limit {limit:.2f}x)",
        example_request_ids=tuple(agg.examples("latency")) if fail else (),
    )


@dataclass(frozen=True, slots=True)
class PairedRate:
    """A yes/no outcome of both arms on the same requests (failed, refused), as the judge
    reads it: this stage's paired table (a rollback reads it), the table since the last
    rollback and the sequential bounds of the candidate's rate and of the per-request
    increase over the primary built from it (a pass reads those)."""

    metric: Metric
    noun: str  # "error", "refusal": for the reason
    stage: PairedCounts
    carried: PairedCounts
    candidate: BoundedMeanCS
    increase: BoundedMeanCS
    examples: tuple[str, ...]
    note: str = ""  # appended to the reason's limits


def increase_lower_bound(counts: PairedCounts, alpha: float, optimal_n: float) -> float:
    """Always-valid lower bound on the paired increase candidate - primary per request, from
    the paired table alone: the normal-mixture confidence sequence (`GaussianMixtureCS`) on
    values in {-1, 0, 1} with mean (b - c) / n. Far tighter than the betting CS at the
    rollback's tiny alpha (at 600 pairs with 9 % discordant: +/-6 pp against +/-10 pp)."""
    n, b, c = counts.n, counts.only_candidate, counts.only_primary
    if n < 2:
        return -1.0
    mean = (b - c) / n
    lo, _ = GaussianMixtureCS(n, mean, (b + c) - n * mean * mean).interval(
        alpha, mixture_rho(optimal_n, alpha)
    )
    return lo


def classify_paired_rate(
    x: PairedRate,
    segment: str,
    max_absolute: float,
    max_increase: float,
    critical: bool,
    need: int,
    alpha: Alphas,
    rho_n: float,
) -> Evidence:
    """Candidate rate above the absolute limit and above the primary's plus margin.

    A rollback needs, in this stage, the point rate past the limit and the always-valid
    lower bound on the paired increase (candidate minus primary on the same requests:
    `increase_lower_bound`) above half the margin, with the exact sequential McNemar test
    (discordant pairs only) as a guard while discordant pairs are few. McNemar alone tests
    "no increase", and so rolls back, given enough pairs, any real increase inside the
    margin as soon as noise lifts the point rate past the limit: that is how a sibling of
    the primary that refuses 1.8 pp more often in one small segment rolled back A/A runs.
    Requiring the bound to clear the whole margin needs ~30,000 pairs at +3 pp.

    A pass reads everything since the last rollback: the candidate's bound under
    `max_absolute` or the increase's under `max_increase` (`BoundedMeanCS`: valid at every
    n, however rare the outcome). Why the two horizons: carried evidence lets a harmless
    candidate pass every later stage at once, but a regression that starts in a later
    stage would be diluted by the healthy stages before it; a stage's own pairs show it,
    and while their rate is past the limit (not yet provably) the stage does not pass.
    """
    n = x.carried.n
    if n < need:
        return _nodata(x.metric, segment, n, need, critical)
    _, c_hi = x.candidate.interval(alpha.pass_ / 2)
    _, d_hi = x.increase.interval(alpha.pass_ / 2)
    stage = x.stage
    cand, prim = stage.rate("candidate") or 0.0, stage.rate("primary") or 0.0
    limit = max(max_absolute, prim + max_increase)
    worse = increase_lower_bound(stage, alpha.fail, rho_n)
    sure = mcnemar_sequential(stage.only_candidate, stage.only_primary, alternative="greater")
    leaning = stage.n >= need and cand > limit
    fail = leaning and worse > max_increase / 2 and sure.p_value < alpha.fail
    ok = (c_hi <= max_absolute or d_hi <= max_increase) and not leaning
    c_all, p_all = x.carried.rate("candidate") or 0.0, x.carried.rate("primary") or 0.0
    passing = (
        f"a pass reads all {n:,} ({c_all:.1%} against {p_all:.1%}): the candidate's bound "
        f"{c_hi:.1%} under {max_absolute:.0%} or the increase's {d_hi:+.1%} under "
        f"+{max_increase:.0%}"
    )
    if fail:
        observed, reference, threshold, n_seen = cand, prim, limit, stage.n
    else:
        observed, reference, n_seen = c_all, p_all, n
        threshold = max(max_absolute, p_all + max_increase)
    return Evidence(
        x.metric,
        segment,
        _verdict(fail, ok),
        observed=observed,
        reference=reference,
        threshold=threshold,
        n=n_seen,
        critical=critical,
        bound=prim + worse if fail else c_hi,
        reason=f"candidate {x.noun} rate {cand:.1%} in this stage, primary {prim:.1%} "
        f"({stage.n:,} pairs), paired increase {cand - prim:+.1%}, at least {worse:+.1%} "
        f"(a rollback needs more than +{max_increase / 2:.1%}); {passing}{x.note}",
        example_request_ids=x.examples if fail else (),
    )


def classify_errors(ev: SegmentEvidence, segment: str, policy: Policy, alpha: Alphas) -> Evidence:
    """Candidate error rate above max(5 %, primary + 2 pp), a missing candidate counting as
    its error: `classify_paired_rate` over the failures of every judged request."""
    pol = policy.errors
    errors = PairedRate(
        Metric.ERROR_RATE,
        "error",
        ev.totals.failures,
        ev.carried.failures,
        ev.candidate_error,
        ev.error_increase,
        tuple(ev.totals.examples("errors")),
        note="; a missing candidate counts as an error" + carried_note(ev),
    )
    return classify_paired_rate(
        errors, segment, pol.max_absolute, pol.max_increase, pol.critical,
        policy.judge.min_pairs, alpha, policy.judge.optimal_n,
    )  # fmt: skip


def classify_refusals(ev: SegmentEvidence, segment: str, policy: Policy, alpha: Alphas) -> Evidence:
    """Candidate refusal rate above max(5 %, primary + 2 pp), over the pairs where both
    arms answered with text: `classify_paired_rate`, as for errors. The absolute allowance
    lets a stage pass once the candidate's refusals are shown rare: proving a +2 pp bound
    on the increase alone takes ~1,650 pairs even when neither arm ever refuses."""
    pol = policy.refusals
    refusals = PairedRate(
        Metric.REFUSAL_RATE,
        "refusal",
        ev.totals.refusals,
        ev.carried.refusals,
        ev.candidate_refusal,
        ev.refusal_increase,
        tuple(ev.totals.examples("refusal")),
        note="; pairs where both arms answered" + carried_note(ev),
    )
    return classify_paired_rate(
        refusals, segment, pol.max_absolute, pol.max_increase, pol.critical,
        policy.judge.min_pairs, alpha, policy.judge.optimal_n,
    )  # fmt: skip


def is_uncertified(e: Evidence, need: int) -> bool:
    """Quality with enough pairs but nothing to compare them with (`classify_quality`)."""
    return e.metric == Metric.QUALITY and e.verdict == Verdict.NODATA and e.n >= need


def classify_quality(
    ev: SegmentEvidence,
    segment: str,
    reference: QualityReference,
    policy: Policy,
    alpha: Alphas,
) -> Evidence:
    """Agreement with the primary more than the margin below the reference's.

    FAIL, on this stage's pairs: the mean below (1 - margin) x the reference, and the upper
    bound below (1 - margin / 2) x the reference's lower bound. PASS, on every pair since the
    last rollback: the lower bound at least (1 - margin) x the reference's upper bound;
    without a reference that upper bound is perfect agreement (1.0), so a candidate that
    agrees that well is certified anyway. Otherwise, without a reference, quality is not
    certified (NODATA, and the reason says so). Two horizons, as for errors
    (`classify_paired_rate`): carried pairs pass a harmless candidate at once, a stage's
    own pairs show a drop that starts late, and while this stage's mean is below the floor
    (not yet provably) it does not pass.

    The bounds are normal-mixture confidence sequences (`GaussianMixtureCS`): agreement is
    bounded, so its variance is finite, and at the few hundred pairs a replica arm gives in
    a stage they are a third of the betting CS's width at the rollback's alpha.

    Under the semantic budget the bound reads the measured pairs only, unweighted: they are
    a uniform sample (`shadowlens.comparators.cascade`), so n is the measured pairs, never the
    weighted count; the reason says which share was measured."""
    pol, need = policy.quality, policy.judge.min_pairs
    n = ev.quality.n
    if n < need:
        return _nodata(Metric.QUALITY, segment, n, need, pol.critical)
    keep, stage = 1.0 - pol.max_relative_drop, ev.stage_quality
    rho_f = mixture_rho(policy.judge.optimal_n, alpha.fail / 2)
    rho_p = mixture_rho(policy.judge.optimal_n, alpha.pass_ / 2)
    _, s_hi = stage.interval(alpha.fail / 2, rho_f)
    c_lo, _ = ev.quality.interval(alpha.pass_ / 2, rho_p)
    r_lo, _ = reference.interval(alpha.fail / 2, rho_f)
    _, r_hi = reference.interval(alpha.pass_ / 2, rho_p)
    ref = reference.mean
    leaning = ref is not None and stage.n >= need and stage.mean < keep * ref
    fail = leaning and s_hi < (1.0 - pol.max_relative_drop / 2) * r_lo
    ok = c_lo >= keep * r_hi and not leaning
    drift = ""
    if reference.drift_from:
        drift = f"; drift from the first pairs {ev.quality.mean / reference.drift_from - 1:+.1%}"
    compared = (
        f"agreement with primary {ev.quality.mean:.3f}, at least {c_lo:.3f} (this stage "
        f"{stage.mean:.3f}, at most {s_hi:.3f}) vs {reference.describe(r_lo, r_hi)} (floor "
        f"x{keep:.2f})"
    )
    notes = drift + _sampled(ev.carried) + carried_note(ev)
    if ref is None and not ok:
        return Evidence(
            Metric.QUALITY, segment, Verdict.NODATA, ev.quality.mean, None, keep, n,
            pol.critical, c_lo,
            reason=f"not certified: no reference ({_no_reference(reference, need)}); "
            f"{compared}" + notes,
        )  # fmt: skip
    mean = stage.mean if fail else ev.quality.mean
    return Evidence(
        Metric.QUALITY,
        segment,
        _verdict(fail, ok),
        observed=mean,
        reference=ref,
        threshold=keep * (1.0 if ref is None else ref),
        n=stage.n if fail else n,
        critical=pol.critical,
        bound=s_hi if fail else c_lo,
        reason=compared + notes,
        example_request_ids=tuple(ev.totals.examples("quality")) if fail else (),
    )


def _sampled(totals: Aggregate) -> str:
    fraction = totals.quality_sampled_fraction
    if fraction is None or fraction == 1.0:
        return ""
    total = totals.quality_measured + totals.quality_unsampled
    return f"; measured on a uniform sample of {totals.quality_measured} of {total} pairs"


def classify_cost(ev: SegmentEvidence, segment: str, policy: Policy, alpha: Alphas) -> Evidence:
    """Mean candidate cost per request above the forecast plus margin.

    Without a forecast in the policy the forecast is the primary's own cost on the same
    requests, and the test is paired: the per-request difference candidate - theta x
    primary (a linear test of the ratio of means, as for bioequivalence ratios), whose
    variance the pairing removes when the arms cost alike. FAIL: the ratio of means past
    the limit and the bound of that difference above 0 at theta = 1 + margin / 2. PASS:
    its bound below 0 at theta = 1 + margin. With a fixed forecast, the candidate's mean
    cost against it. Per stage."""
    pol, need = policy.cost, policy.judge.min_pairs
    rel = pol.max_relative_increase
    if pol.forecast_usd_per_request is None:
        return _classify_cost_paired(ev, segment, policy, alpha)
    cs = ev.candidate_cost
    if cs.n < need:
        return _nodata(Metric.COST, segment, cs.n, need, pol.critical)
    forecast = pol.forecast_usd_per_request
    limit = forecast * (1.0 + rel)
    lo, _ = cs.interval(alpha.fail, mixture_rho(policy.judge.optimal_n, alpha.fail))
    _, hi = cs.interval(alpha.pass_, mixture_rho(policy.judge.optimal_n, alpha.pass_))
    fail, ok = lo > limit and cs.mean > limit, hi <= limit
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


def _classify_cost_paired(
    ev: SegmentEvidence, segment: str, policy: Policy, alpha: Alphas
) -> Evidence:
    pol, need = policy.cost, policy.judge.min_pairs
    pairs = ev.totals.paired_cost_usd
    if pairs.n < need:
        return _nodata(Metric.COST, segment, pairs.n, need, pol.critical)
    if pairs.sum_x <= 0:
        return Evidence(
            Metric.COST, segment, Verdict.NODATA, None, None, None, pairs.n, pol.critical,
            reason="no cost forecast and no primary cost",
        )  # fmt: skip
    rel, rho_f = pol.max_relative_increase, mixture_rho(policy.judge.optimal_n, alpha.fail)
    rho_p = mixture_rho(policy.judge.optimal_n, alpha.pass_)
    primary, candidate = pairs.sum_x / pairs.n, pairs.sum_y / pairs.n
    ratio, limit = candidate / primary, 1.0 + rel
    lo, _ = GaussianMixtureCS(*pairs.linear(-(1.0 + rel / 2), 1.0)).interval(alpha.fail, rho_f)
    _, hi = GaussianMixtureCS(*pairs.linear(-limit, 1.0)).interval(alpha.pass_, rho_p)
    fail, ok = ratio > limit and lo > 0, hi < 0
    return Evidence(
        Metric.COST,
        segment,
        _verdict(fail, ok),
        observed=candidate,
        reference=primary,
        threshold=primary * limit,
        n=pairs.n,
        critical=pol.critical,
        bound=primary * (1.0 + rel / 2) + lo if fail else primary * limit + hi,
        reason=f"candidate ${candidate:.6f}/request = {ratio:.2f}x the primary's ${primary:.6f} "
        f"on the same requests (limit {limit:.2f}x); paired per-request excess over "
        f"{limit:.2f}x the primary below ${hi:+.6f}",
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
