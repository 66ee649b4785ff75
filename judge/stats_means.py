"""Anytime-valid bounds on a mean, for the judge to read after every window.

`BoundedMeanCS` for values in a known range (error indicators, similarities),
`GaussianMixtureCS` for unbounded, roughly sub-Gaussian ones (log latency or cost ratios),
and `MsprtState`, the mixture SPRT that is the test dual to `GaussianMixtureCS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike
from shadowlens.judge.stats_common import TestResult, check_alpha, finite_1d

MAX_BET = 0.5  # truncation of the predictable bets (Waudby-Smith & Ramdas use 1/2 or 3/4)


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
        check_alpha(self.alpha_design)
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
        x = finite_1d(xs)
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
        bets = np.minimum(np.sqrt(2.0 * log_term / (var_prev * t * np.log1p(t))), MAX_BET)
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
        check_alpha(alpha)
        if self.n == 0:
            return (self.lower, self.upper)
        center = self.sum_bet_x / self.sum_bet
        margin = (math.log(2.0 / alpha) + self.sum_penalty) / self.sum_bet
        span = self.upper - self.lower
        lo = self.lower + span * max(0.0, center - margin)
        hi = self.lower + span * min(1.0, center + margin)
        return (lo, hi)


def mixture_rho(optimal_n: float, alpha: float) -> float:
    """Mixing scale that makes the normal-mixture boundary tightest near `optimal_n`.

    Closed-form approximate minimiser used by Waudby-Smith et al. (2024) for the boundary
    below (after Howard, Ramdas, McAuliffe & Sekhon 2021, Ann. Stat. 49(2)):
    rho^2 = (2 log(1/alpha) + log(1 + 2 log(1/alpha))) / n*.
    Fix it in advance (e.g. from `required_samples`), never from the data being judged.
    """
    check_alpha(alpha)
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
        x = finite_1d(xs)
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
        check_alpha(alpha)
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho!r}")
        if self.n < max(2, min_n):
            return (-math.inf, math.inf)
        half = math.sqrt(self.variance) * mixture_radius(self.n, rho, alpha)
        return (self.mean - half, self.mean + half)


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
