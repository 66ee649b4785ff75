"""Paired and sequential statistics for the shadow judge.

The judge decides after every event-time window, so most of what it reads must stay valid
under continuous peeking. Two families live here:

* Sequential (valid at every window at once, "anytime-valid"): `mcnemar_sequential`,
  `BoundedMeanCS`, `GaussianMixtureCS`, `MsprtState`, and the quantile functions with
  `sequential=True`. Decide on these.
* Fixed-horizon (valid for one look only): `mcnemar`, `paired_proportion_diff_ci`,
  `wilcoxon_signed_rank`, `mann_whitney`, quantile functions with `sequential=False`.
  Use them for reports, baselines and one-off comparisons.

Conventions: `b` counts pairs where only the candidate failed (candidate worse), `c`
pairs where only the primary failed; differences are candidate minus primary; ratios are
candidate over primary; every interval is two-sided at level `alpha`. Everything is pure:
no I/O, no clock, no global RNG, and every state object is a frozen value that `update`
replaces rather than mutates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

Alternative = Literal["two-sided", "greater", "less"]

_MAX_BET = 0.5  # truncation of the predictable bets (Waudby-Smith & Ramdas use 1/2 or 3/4)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class TestResult:
    """Outcome of a test, shaped to travel as a verdict's evidence."""

    __test__ = False  # not a pytest test class

    statistic: float
    p_value: float
    n: int
    method: str
    alternative: Alternative = "two-sided"


@dataclass(frozen=True, slots=True)
class IntervalEstimate:
    """A point estimate with a two-sided (1 - alpha) interval."""

    estimate: float
    lo: float
    hi: float
    n: int
    alpha: float
    method: str


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


@dataclass(frozen=True, slots=True)
class SamplePlan:
    """How many observations a traffic stage must hold before a bound can reach `effect`."""

    n: int
    half_width: float
    rho: float
    method: str


# --------------------------------------------------------------------------- McNemar


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _check_counts(*counts: int) -> None:
    if any(int(k) != k or k < 0 for k in counts):
        raise ValueError(f"counts must be non-negative integers, got {counts!r}")


def mcnemar(b: int, c: int, *, alternative: Alternative = "two-sided") -> TestResult:
    """Exact McNemar test: under H0 the b-vs-c split of discordant pairs is Binomial(b+c, 1/2).

    Only discordant pairs carry information about a paired difference, which is why paired
    error comparisons need far fewer requests than unpaired ones. `statistic` is `b`;
    "greater" means the candidate fails more often. Identical to
    `scipy.stats.binomtest(b, b + c, 0.5)`. Fixed horizon: for per-window decisions use
    `mcnemar_sequential`.
    """
    _check_counts(b, c)
    m = b + c
    if m == 0:
        p = 1.0
    elif alternative == "two-sided":
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), m, 0.5)))
    elif alternative == "greater":
        p = float(stats.binom.sf(b - 1, m, 0.5))
    else:
        p = float(stats.binom.cdf(b, m, 0.5))
    return TestResult(float(b), p, m, "mcnemar-exact", alternative)


def mcnemar_sequential(b: int, c: int, *, alternative: Alternative = "two-sided") -> TestResult:
    """Anytime-valid McNemar: a uniform-prior Bayes factor on the discordant split.

    Robbins' mixture of Bernoulli likelihood ratios against pi = 1/2 (uniform on (0, 1), or
    on (1/2, 1) / (0, 1/2) for one-sided alternatives) is a nonnegative supermartingale
    under H0, so by Ville's inequality p = min(1, 1/BF) may be recomputed from cumulative
    (b, c) after every window without inflating type-I error. `statistic` is log BF.
    """
    _check_counts(b, c)
    m = b + c
    log_bf = float(special.betaln(b + 1, c + 1)) + m * math.log(2.0)
    if alternative == "greater":
        log_bf += math.log(2.0) + float(stats.beta.logsf(0.5, b + 1, c + 1))
    elif alternative == "less":
        log_bf += math.log(2.0) + float(stats.beta.logcdf(0.5, b + 1, c + 1))
    p = 1.0 if log_bf <= 0.0 else math.exp(-log_bf)
    return TestResult(log_bf, p, m, "mcnemar-beta-mixture", alternative)


# --------------------------------------------------------------------------- Tango CI


def _tango_score(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic at a hypothesised difference (constrained MLE of p21)."""
    big_a = 2.0 * n
    big_b = -b - c + (2.0 * n - b + c) * delta
    big_c = -c * delta * (1.0 - delta)
    p21 = (math.sqrt(max(0.0, big_b * big_b - 4.0 * big_a * big_c)) - big_b) / (2.0 * big_a)
    numerator = b - c - n * delta
    variance = n * (2.0 * p21 + delta * (1.0 - delta))
    if variance <= 0.0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def paired_proportion_diff_ci(b: int, c: int, n: int, alpha: float) -> IntervalEstimate:
    """Tango (1998) asymptotic score CI for a paired difference of proportions, (b - c)/n.

    Chosen because it needs only (b, c, n), stays inside [-1, 1], behaves at b = c = 0, and
    is among the intervals recommended by Fagerland, Lydersen & Laake (2014, Stat Med
    33:2850) for paired binomial data, unlike the Wald interval. Tango, T. (1998), Stat Med
    17:891-908. Matches R's PropCIs::scoreci.mp (which reports (c - b)/n). Fixed horizon.
    """
    _check_counts(b, c, n)
    _check_alpha(alpha)
    if n < 1 or b + c > n:
        raise ValueError(f"need n >= 1 and b + c <= n, got b={b}, c={c}, n={n}")
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    estimate = (b - c) / n
    edge = 1.0 - 1e-12

    def score(delta: float) -> float:
        return _tango_score(b, c, n, delta)

    if estimate <= -edge or score(-edge) <= z:
        lo = -1.0
    else:
        lo = optimize.brentq(lambda d: score(d) - z, -edge, estimate, xtol=1e-14)
    if estimate >= edge or score(edge) >= -z:
        hi = 1.0
    else:
        hi = optimize.brentq(lambda d: score(d) + z, estimate, edge, xtol=1e-14)
    return IntervalEstimate(estimate, float(lo), float(hi), n, alpha, "tango-score")


# --------------------------------------------------------------------------- bounded CS


def _finite_1d(xs: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(xs, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("observations must be finite")
    return x


@dataclass(frozen=True, slots=True)
class BoundedMeanCS:
    """Predictable plug-in empirical-Bernstein confidence sequence for a bounded mean.

    Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting",
    JRSSB 86(1), 2024 (arXiv 2010.09686): the PrPl-EB confidence sequence. For values
    in [lower, upper] with a common conditional mean mu, P(exists t: mu not in
    interval_t(alpha)) <= alpha, so the judge may look after every window. It adapts to
    the variance, so rare-event rates (errors, disagreements) get tight bounds.

    The state is the sufficient statistics: `update` is exact in streaming order (batch
    splits do not matter), `interval` works for any alpha (`alpha_design` only tunes the
    bets), and `merge` adds states of disjoint sub-streams (e.g. partitions); the sum is
    still a valid CS because each bet depended only on data earlier in one interleaving.
    Rescale examples: error indicator in [0, 1]; paired error difference in [-1, 1];
    similarity difference candidate - replica in [-1, 1].
    """

    alpha_design: float
    lower: float = 0.0
    upper: float = 1.0
    n: int = 0
    sum_x: float = 0.0  # sums below are on the [0, 1] scale
    sum_sq_dev: float = 0.0
    sum_bet: float = 0.0
    sum_bet_x: float = 0.0
    sum_penalty: float = 0.0

    def __post_init__(self) -> None:
        _check_alpha(self.alpha_design)
        if not self.lower < self.upper:
            raise ValueError(f"need lower < upper, got [{self.lower}, {self.upper}]")

    @property
    def mean(self) -> float:
        """Plain sample mean on the original scale (nan before any data)."""
        if self.n == 0:
            return math.nan
        return self.lower + (self.upper - self.lower) * self.sum_x / self.n

    def update(self, xs: ArrayLike) -> BoundedMeanCS:
        """Fold a window of observations in (vectorised; order within `xs` matters)."""
        x = _finite_1d(xs)
        if x.size == 0:
            return self
        if np.any(x < self.lower) or np.any(x > self.upper):
            raise ValueError(f"observations outside [{self.lower}, {self.upper}]")
        y = (x - self.lower) / (self.upper - self.lower)
        t = self.n + np.arange(1, y.size + 1, dtype=np.float64)
        cum_x = self.sum_x + np.cumsum(y)
        mu = (0.5 + cum_x) / (t + 1.0)  # regularised running mean, includes y_t
        mu_prev = np.concatenate(([(0.5 + self.sum_x) / (self.n + 1.0)], mu[:-1]))
        cum_sq = self.sum_sq_dev + np.cumsum((y - mu) ** 2)
        var = (0.25 + cum_sq) / (t + 1.0)
        var_prev = np.concatenate(([(0.25 + self.sum_sq_dev) / (self.n + 1.0)], var[:-1]))
        log_term = math.log(2.0 / self.alpha_design)
        bets = np.minimum(np.sqrt(2.0 * log_term / (var_prev * t * np.log1p(t))), _MAX_BET)
        # v_t * psi_E(lambda_t) with v_t = 4 (y_t - mu_{t-1})^2, psi_E = (-log(1-l) - l) / 4
        penalty = (y - mu_prev) ** 2 * (-np.log1p(-bets) - bets)
        return replace(
            self,
            n=self.n + int(y.size),
            sum_x=float(cum_x[-1]),
            sum_sq_dev=float(cum_sq[-1]),
            sum_bet=self.sum_bet + float(bets.sum()),
            sum_bet_x=self.sum_bet_x + float(bets @ y),
            sum_penalty=self.sum_penalty + float(penalty.sum()),
        )

    def merge(self, other: BoundedMeanCS) -> BoundedMeanCS:
        """Combine states of two disjoint sub-streams observed in parallel."""
        if (self.alpha_design, self.lower, self.upper) != (
            other.alpha_design,
            other.lower,
            other.upper,
        ):
            raise ValueError("cannot merge BoundedMeanCS with different alpha_design or bounds")
        return replace(
            self,
            n=self.n + other.n,
            sum_x=self.sum_x + other.sum_x,
            sum_sq_dev=self.sum_sq_dev + other.sum_sq_dev,
            sum_bet=self.sum_bet + other.sum_bet,
            sum_bet_x=self.sum_bet_x + other.sum_bet_x,
            sum_penalty=self.sum_penalty + other.sum_penalty,
        )

    def interval(self, alpha: float) -> tuple[float, float]:
        """Two-sided (1 - alpha) bounds, valid simultaneously over all windows."""
        _check_alpha(alpha)
        if self.n == 0:
            return (self.lower, self.upper)
        center = self.sum_bet_x / self.sum_bet
        margin = (math.log(2.0 / alpha) + self.sum_penalty) / self.sum_bet
        span = self.upper - self.lower
        lo = self.lower + span * max(0.0, center - margin)
        hi = self.lower + span * min(1.0, center + margin)
        return (lo, hi)


# --------------------------------------------------------------------------- Gaussian CS


def mixture_rho(optimal_n: float, alpha: float) -> float:
    """Mixing scale that makes the normal-mixture boundary tightest near `optimal_n`.

    Closed-form approximate minimiser used by Waudby-Smith et al. (2024) for the boundary
    below (after Howard, Ramdas, McAuliffe & Sekhon 2021, Ann. Stat. 49(2)):
    rho^2 = (2 log(1/alpha) + log(1 + 2 log(1/alpha))) / n*.
    Fix it in advance (e.g. from `required_samples`), never from the data being judged.
    """
    _check_alpha(alpha)
    if optimal_n <= 0:
        raise ValueError(f"optimal_n must be positive, got {optimal_n!r}")
    log_inv = math.log(1.0 / alpha)
    return math.sqrt((2.0 * log_inv + math.log1p(2.0 * log_inv)) / optimal_n)


def mixture_radius(n: float, rho: float, alpha: float) -> float:
    """Half-width of the two-sided normal-mixture boundary for unit variance, mean scale."""
    if n <= 0:
        return math.inf
    r2n = rho * rho * n
    return math.sqrt(
        2.0 * (r2n + 1.0) / (n * n * rho * rho) * math.log(math.sqrt(r2n + 1.0) / alpha)
    )


@dataclass(frozen=True, slots=True)
class GaussianMixtureCS:
    """Asymptotic confidence sequence for a mean (Robbins' normal mixture, plug-in variance).

    Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit theory
    and asymptotic confidence sequences" (Ann. Stat. 2024; arXiv 2103.06476), Sec. 2:
    mean_t +- sd_t * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha)).
    For unbounded, roughly sub-Gaussian per-request values such as log(candidate/primary)
    latency or cost. Coverage is asymptotic: the plug-in variance must have settled, so
    `interval` stays infinite below `min_n` (peeking from n = 2 on Gaussian data doubles
    the miss rate; from n >= 30 it stays within alpha, also for t(4) tails).

    State is (n, mean, m2) rather than raw sum/sum-of-squares: the same information,
    but Chan's update avoids catastrophic cancellation and merges exactly.
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    @property
    def variance(self) -> float:
        """Unbiased sample variance (nan below two observations)."""
        return self.m2 / (self.n - 1) if self.n >= 2 else math.nan

    def update(self, xs: ArrayLike) -> GaussianMixtureCS:
        """Fold a window of observations in."""
        x = _finite_1d(xs)
        if x.size == 0:
            return self
        mean = float(x.mean())
        return self.merge(GaussianMixtureCS(int(x.size), mean, float(((x - mean) ** 2).sum())))

    def merge(self, other: GaussianMixtureCS) -> GaussianMixtureCS:
        """Combine disjoint sub-streams (Chan, Golub & LeVeque parallel update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return GaussianMixtureCS(n, mean, m2)

    def interval(self, alpha: float, rho: float, *, min_n: int = 30) -> tuple[float, float]:
        """Two-sided (1 - alpha) bounds valid over all windows; rho from `mixture_rho`."""
        _check_alpha(alpha)
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho!r}")
        if self.n < max(2, min_n):
            return (-math.inf, math.inf)
        half = math.sqrt(self.variance) * mixture_radius(self.n, rho, alpha)
        return (self.mean - half, self.mean + half)


# --------------------------------------------------------------------------- mSPRT


def msprt_p_value(n: int, mean: float, var: float, theta0: float, tau2: float) -> TestResult:
    """Mixture SPRT p-value for H0: mean == theta0 with a N(theta0, tau2) mixing prior.

    Johari, Koomen, Pekelis & Walsh (2017, KDD "Peeking at A/B tests"; 2022, Oper. Res.
    "Always valid inference"): Lambda_n = sqrt(var / (var + n tau2)) *
    exp(n^2 tau2 (mean - theta0)^2 / (2 var (var + n tau2))), p_n = min(1, 1/Lambda_n).
    This is the instantaneous value; the always-valid p-value is its running minimum,
    which `MsprtState` keeps. `var` is the per-observation variance (plug-in);
    tau2 is roughly the squared effect size one expects to matter. `statistic` is log Lambda.
    Dual to `GaussianMixtureCS` with rho^2 = tau2 / var.
    """
    if tau2 <= 0:
        raise ValueError(f"tau2 must be positive, got {tau2!r}")
    if n < 2 or not var > 0.0:
        return TestResult(0.0, 1.0, int(n), "msprt-normal")
    shrink = var + n * tau2
    log_lr = 0.5 * math.log(var / shrink) + (n * n * tau2 * (mean - theta0) ** 2) / (
        2.0 * var * shrink
    )
    p = 1.0 if log_lr <= 0.0 else math.exp(-log_lr)
    return TestResult(log_lr, p, int(n), "msprt-normal")


@dataclass(frozen=True, slots=True)
class MsprtState:
    """Running mSPRT: cumulative moments plus the running-minimum (always-valid) p-value.

    The p-value stays 1 below `min_n`: with a plug-in variance from a handful of requests
    the running minimum would lock in spurious early rejections (type-I error 0.24 instead
    of 0.05 when peeking from n = 2; within 0.05 from n >= 10-30).
    """

    theta0: float
    tau2: float
    moments: GaussianMixtureCS = field(default_factory=GaussianMixtureCS)
    p_value: float = 1.0
    min_n: int = 30

    def update(self, xs: ArrayLike) -> MsprtState:
        """Fold a window of observations in and lower the p-value if the evidence grew."""
        return self.observe(self.moments.update(xs))

    def observe(self, moments: GaussianMixtureCS) -> MsprtState:
        """Advance to externally merged cumulative moments (must not shrink)."""
        if moments.n < self.moments.n:
            raise ValueError("moments must be cumulative: n went down")
        if moments.n < self.min_n:
            return replace(self, moments=moments)
        result = msprt_p_value(moments.n, moments.mean, moments.variance, self.theta0, self.tau2)
        return replace(self, moments=moments, p_value=min(self.p_value, result.p_value))


# --------------------------------------------------------------------------- quantiles


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
    _check_alpha(alpha)
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
    _check_alpha(alpha)
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
    _check_alpha(alpha)
    bounds: list[tuple[float, float, int]] = []
    points: list[float] = []
    for arm in (primary, candidate):
        x = np.sort(_finite_1d(arm))
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


# --------------------------------------------------------------------------- fixed tests


def wilcoxon_signed_rank(diffs: ArrayLike, *, alternative: Alternative = "two-sided") -> TestResult:
    """Wilcoxon signed-rank test on paired differences (scipy), fixed horizon.

    For the benchmark's fixed-horizon baseline; zero differences are dropped ("wilcox").
    `n` counts the non-zero differences. Empty or all-zero input gives p = 1.
    """
    d = _finite_1d(diffs)
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return TestResult(0.0, 1.0, 0, "wilcoxon", alternative)
    res = stats.wilcoxon(d, zero_method="wilcox", alternative=alternative)
    return TestResult(float(res.statistic), float(res.pvalue), nonzero, "wilcoxon", alternative)


def mann_whitney(
    a: ArrayLike, b: ArrayLike, *, alternative: Alternative = "two-sided"
) -> TestResult:
    """Mann-Whitney U test of `b` (candidate) against `a` (primary), as Kayenta's judge does.

    Unpaired: it ignores the pairing and so needs more data than the paired tests; kept as
    the Kayenta-style baseline. `statistic` is U of `a`; "greater" means a tends to exceed b
    (scipy's convention). Empty or constant-and-equal input gives p = 1.
    """
    x, y = _finite_1d(a), _finite_1d(b)
    n = int(x.size + y.size)
    if x.size == 0 or y.size == 0:
        return TestResult(math.nan, 1.0, n, "mann-whitney", alternative)
    res = stats.mannwhitneyu(x, y, alternative=alternative, method="auto")
    p = float(res.pvalue)
    return TestResult(
        float(res.statistic), 1.0 if math.isnan(p) else p, n, "mann-whitney", alternative
    )


# --------------------------------------------------------------------------- planning


def _mixture_constant(alpha: float) -> float:
    """n * effect^2 / sd^2 when rho is tuned to the n being planned (exact for this boundary)."""
    log_inv = math.log(1.0 / alpha)
    k = 2.0 * log_inv + math.log1p(2.0 * log_inv)  # n * rho^2 at the tuned point
    return 2.0 * (k + 1.0) / k * (log_inv + 0.5 * math.log1p(k))


def required_samples(
    effect: float,
    sd: float,
    alpha: float,
    *,
    optimal_n: float | None = None,
    max_n: int = 10**12,
) -> SamplePlan:
    """Smallest n at which the `GaussianMixtureCS` half-width is <= `effect`, for planning.

    With `optimal_n=None` rho is tuned to that very n (closed form: n = C(alpha) sd^2 /
    effect^2, C(0.05) ~= 9.2 versus 3.84 for a single fixed-horizon z-test: the price of
    peeking at every window). With `optimal_n` given, rho is fixed from it, as the running
    judge would use, and n is found by bisection (the half-width falls monotonically in n
    for alpha < 0.6). Return the plan's rho to configure the judge.
    """
    _check_alpha(alpha)
    if not (effect > 0 and sd > 0):
        raise ValueError("effect and sd must be positive")
    if optimal_n is None:
        n = max(2, math.ceil(_mixture_constant(alpha) * (sd / effect) ** 2))
        rho = mixture_rho(n, alpha)
    else:
        rho = mixture_rho(optimal_n, alpha)

        def ok(m: int) -> bool:
            return sd * mixture_radius(m, rho, alpha) <= effect

        hi = 2
        while not ok(hi):
            hi *= 2
            if hi > max_n:
                raise ValueError(f"needs more than max_n={max_n} samples")
        lo = max(2, hi // 2)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
        n = max(2, lo)
    if n > max_n:
        raise ValueError(f"needs {n} > max_n={max_n} samples")
    half = sd * mixture_radius(n, rho, alpha)
    return SamplePlan(int(n), half, rho, "normal-mixture-cs")


def required_samples_bounded(
    effect: float,
    sd: float,
    alpha: float,
    *,
    lower: float = 0.0,
    upper: float = 1.0,
    max_n: int = 10**8,
) -> SamplePlan:
    """Smallest n at which a `BoundedMeanCS` half-width is expected to be <= `effect`.

    Deterministic approximation: the bets and penalties are evaluated with the true
    standard deviation `sd` in place of its running estimate (what they converge to), on
    the original [lower, upper] scale; e.g. sd = sqrt(p (1 - p)) for an error rate p.
    Within ~5 % of simulated half-widths for Bernoulli rates; the judge never uses it.
    """
    _check_alpha(alpha)
    span = upper - lower
    if not (effect > 0 and 0 < sd <= span / 2):
        raise ValueError("need effect > 0 and 0 < sd <= (upper - lower) / 2")
    e, s2 = effect / span, (sd / span) ** 2
    log_term = math.log(2.0 / alpha)
    start, chunk, sum_bet, sum_pen = 1, 4096, 0.0, 0.0
    while start <= max_n:
        t = np.arange(start, min(start + chunk, max_n + 1), dtype=np.float64)
        bets = np.minimum(np.sqrt(2.0 * log_term / (s2 * t * np.log1p(t))), _MAX_BET)
        cum_bet = sum_bet + np.cumsum(bets)
        cum_pen = sum_pen + np.cumsum(s2 * (-np.log1p(-bets) - bets))
        margin = (log_term + cum_pen) / cum_bet
        hit = np.flatnonzero(margin <= e)
        if hit.size:
            i = int(hit[0])
            return SamplePlan(int(t[i]), float(margin[i] * span), math.nan, "prpl-eb-cs")
        sum_bet, sum_pen = float(cum_bet[-1]), float(cum_pen[-1])
        start += t.size
        chunk = min(chunk * 2, 1 << 22)
    raise ValueError(f"needs more than max_n={max_n} samples")
