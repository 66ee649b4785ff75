"""Distribution-free bounds on a latency or cost quantile ratio between the arms.

Order statistics bracket a quantile with binomial (fixed) or beta-binomial mixture
(sequential) ranks; DDSketches return those order statistics within a known relative error,
so the bounds hold on sketches as well as on exact samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from shadowlens.judge.stats_common import check_alpha, finite_1d


@dataclass(frozen=True, slots=True)
class QuantileRatio:
    """Candidate/primary ratio of the q-quantile with a conservative interval."""

    ratio: float
    lo: float
    hi: float
    q: float
    alpha: float
    n_primary: int
    n_candidate: int
    method: str


class QuantileSketch(Protocol):
    """What we need from a `ddsketch.DDSketch`."""

    @property
    def count(self) -> float: ...

    def get_quantile_value(self, quantile: float) -> float | None: ...


def quantile_rank_bounds(n: int, q: float, alpha: float, *, sequential: bool) -> tuple[int, int]:
    """1-based ranks (l, u) with P(X_(l) <= xi_q <= X_(u)) >= 1 - alpha, distribution-free.

    The number B of observations below the true quantile is Binomial(n, q), so order
    statistics bracket it. Fixed horizon: equal binomial tails of alpha/2. Sequential: the
    uniform-prior beta-binomial mixture (Robbins 1970) accepts B = k iff
    pmf(k; n, q) > alpha / (n + 1), which holds for all n at once with prob >= 1 - alpha.
    l = 0 means "no lower bound", u = n + 1 "no upper bound" (too few observations).
    """
    check_alpha(alpha)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if n < 1:
        return (0, n + 1)
    if sequential:
        log_thr = math.log(alpha) - math.log(n + 1.0)
        log_q, log_1mq, lg_n = math.log(q), math.log1p(-q), math.lgamma(n + 1.0)

        def accepted(k: int) -> bool:  # binomial log-pmf, scalar and fast
            log_pmf = lg_n - math.lgamma(k + 1.0) - math.lgamma(n - k + 1.0)
            return log_pmf + k * log_q + (n - k) * log_1mq > log_thr

        mode = min(n, math.floor((n + 1) * q))
        # smallest accepted k in [0, mode] (pmf rises up to the mode)
        lo_k, hi_k = 0, mode
        while lo_k < hi_k:
            mid = (lo_k + hi_k) // 2
            lo_k, hi_k = (lo_k, mid) if accepted(mid) else (mid + 1, hi_k)
        first = lo_k
        lo_k, hi_k = mode, n  # largest accepted k in [mode, n]
        while lo_k < hi_k:
            mid = (lo_k + hi_k + 1) // 2
            lo_k, hi_k = (mid, hi_k) if accepted(mid) else (lo_k, mid - 1)
        return (first, lo_k + 1)
    half = alpha / 2.0
    j = int(stats.binom.ppf(half, n, q))  # largest j with P(B <= j) <= alpha/2
    while j >= 0 and stats.binom.cdf(j, n, q) > half:
        j -= 1
    while j + 1 <= n and stats.binom.cdf(j + 1, n, q) <= half:
        j += 1
    m = int(stats.binom.ppf(1.0 - half, n, q))  # smallest m with P(B > m) <= alpha/2
    while stats.binom.sf(m, n, q) > half:
        m += 1
    while m - 1 >= 0 and stats.binom.sf(m - 1, n, q) <= half:
        m -= 1
    return (j + 1, m + 1)


def _ratio_bounds(cand: tuple[float, float], prim: tuple[float, float]) -> tuple[float, float]:
    lo = 0.0 if math.isinf(prim[1]) or cand[0] <= 0.0 else cand[0] / prim[1]
    hi = math.inf if prim[0] <= 0.0 or math.isinf(cand[1]) else cand[1] / prim[0]
    return (lo, hi)


def _sketch_order_stat(sketch: QuantileSketch, n: int, rank: int) -> float:
    """Sketch value of the rank-th smallest observation (1-based, integer counts)."""
    if rank < 1:
        return 0.0
    if rank > n:
        return math.inf
    q = 1.0 if n == 1 else min(1.0, (rank - 0.5) / (n - 1))  # rank - 1/2 dodges rounding
    value = sketch.get_quantile_value(q)
    assert value is not None
    return float(value)


def _sketch_bounds(
    sketch: QuantileSketch, q: float, alpha: float, eps: float, sequential: bool
) -> tuple[float, float, int]:
    n = round(sketch.count)
    if n < 1 or abs(sketch.count - n) > 1e-9:
        raise ValueError(f"sketch needs a positive integer count, got {sketch.count!r}")
    minimum = sketch.get_quantile_value(0.0)
    if minimum is None or minimum < 0.0:
        raise ValueError("quantile ratios need non-negative values (latency, cost)")
    lo_rank, hi_rank = quantile_rank_bounds(n, q, alpha, sequential=sequential)
    lo = _sketch_order_stat(sketch, n, lo_rank) / (1.0 + eps)
    hi = _sketch_order_stat(sketch, n, hi_rank) / (1.0 - eps)
    return lo, hi, n


def quantile_ratio_ci(
    primary_sketch: QuantileSketch,
    candidate_sketch: QuantileSketch,
    q: float,
    alpha: float,
    *,
    sequential: bool = False,
    relative_accuracy: float | None = None,
) -> QuantileRatio:
    """Ratio of a latency/cost quantile (p95, p99) between arms, from two DDSketches.

    Method: for each arm, the order-statistic ranks from `quantile_rank_bounds` at
    alpha/2 bracket the true quantile; the sketch returns those order statistics within
    relative error eps (Masson, Rim & Lee 2019, VLDB: |x_hat - x| <= eps x), so the arm's
    quantile lies in [x_hat_l / (1 + eps), x_hat_u / (1 - eps)]. Dividing the bounds
    (candidate lo / primary hi, candidate hi / primary lo) and Bonferroni over the two arms
    gives coverage >= 1 - alpha with no assumption on the distributions or on the
    dependence between arms. Conservative by construction. Use `sequential=True` when the
    sketches are cumulative and the judge looks after every window. Sketches must hold
    unit-weight, non-negative values; eps is read from the sketch unless given.
    """
    check_alpha(alpha)
    eps_p = _sketch_eps(primary_sketch, relative_accuracy)
    eps_c = _sketch_eps(candidate_sketch, relative_accuracy)
    p_lo, p_hi, n_p = _sketch_bounds(primary_sketch, q, alpha / 2.0, eps_p, sequential)
    c_lo, c_hi, n_c = _sketch_bounds(candidate_sketch, q, alpha / 2.0, eps_c, sequential)
    p_point = primary_sketch.get_quantile_value(q)
    c_point = candidate_sketch.get_quantile_value(q)
    assert p_point is not None and c_point is not None
    ratio = c_point / p_point if p_point > 0 else math.inf
    lo, hi = _ratio_bounds((c_lo, c_hi), (p_lo, p_hi))
    method = "ddsketch-order-stat-" + ("sequential" if sequential else "fixed")
    return QuantileRatio(float(ratio), lo, hi, q, alpha, n_p, n_c, method)


def _sketch_eps(sketch: QuantileSketch, relative_accuracy: float | None) -> float:
    eps = relative_accuracy
    if eps is None:
        eps = getattr(sketch, "_relative_accuracy", None)  # ddsketch keeps it private
    if eps is None or not 0.0 <= eps < 1.0:
        raise ValueError("pass relative_accuracy: it could not be read from the sketch")
    return float(eps)


def quantile_ratio_from_samples(
    primary: ArrayLike,
    candidate: ArrayLike,
    q: float,
    alpha: float,
    *,
    sequential: bool = False,
) -> QuantileRatio:
    """Same as `quantile_ratio_ci` on exact samples (eps = 0): distribution-free order stats.

    The point ratio uses numpy's default (linear) quantile; the interval uses order
    statistics only, so it holds for any continuous distributions and any dependence.
    """
    check_alpha(alpha)
    bounds: list[tuple[float, float, int]] = []
    points: list[float] = []
    for arm in (primary, candidate):
        x = np.sort(finite_1d(arm))
        if x.size == 0 or x[0] < 0.0:
            raise ValueError("quantile ratios need non-empty, non-negative samples")
        lo_rank, hi_rank = quantile_rank_bounds(int(x.size), q, alpha / 2.0, sequential=sequential)
        lo = float(x[lo_rank - 1]) if lo_rank >= 1 else 0.0
        hi = float(x[hi_rank - 1]) if hi_rank <= x.size else math.inf
        bounds.append((lo, hi, int(x.size)))
        points.append(float(np.quantile(x, q)))
    (p_lo, p_hi, n_p), (c_lo, c_hi, n_c) = bounds
    ratio = points[1] / points[0] if points[0] > 0 else math.inf
    lo, hi = _ratio_bounds((c_lo, c_hi), (p_lo, p_hi))
    method = "order-stat-" + ("sequential" if sequential else "fixed")
    return QuantileRatio(ratio, lo, hi, q, alpha, n_p, n_c, method)
