"""Paired yes/no outcomes (failed, refused) of both arms on the same requests.

Only discordant pairs carry information about a paired difference, which is why paired
error comparisons need far fewer requests than unpaired ones: McNemar's test, fixed-horizon
and anytime-valid, and Tango's interval for the difference of the two rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize, special, stats
from shadowlens.judge.stats_common import Alternative, TestResult, check_alpha, check_counts


@dataclass(frozen=True, slots=True)
class IntervalEstimate:
    """A point estimate with a two-sided (1 - alpha) interval."""

    estimate: float
    lo: float
    hi: float
    n: int
    alpha: float
    method: str


def mcnemar(b: int, c: int, *, alternative: Alternative = "two-sided") -> TestResult:
    """Exact McNemar test: under H0 the b-vs-c split of discordant pairs is Binomial(b+c, 1/2).

    Only discordant pairs carry information about a paired difference, which is why paired
    error comparisons need far fewer requests than unpaired ones. `statistic` is `b`;
    "greater" means the candidate fails more often. Identical to
    `scipy.stats.binomtest(b, b + c, 0.5)`. Fixed horizon: for per-window decisions use
    `mcnemar_sequential`.
    """
    check_counts(b, c)
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
    check_counts(b, c)
    m = b + c
    log_bf = float(special.betaln(b + 1, c + 1)) + m * math.log(2.0)
    if alternative == "greater":
        log_bf += math.log(2.0) + float(stats.beta.logsf(0.5, b + 1, c + 1))
    elif alternative == "less":
        log_bf += math.log(2.0) + float(stats.beta.logcdf(0.5, b + 1, c + 1))
    p = 1.0 if log_bf <= 0.0 else math.exp(-log_bf)
    return TestResult(log_bf, p, m, "mcnemar-beta-mixture", alternative)


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
    check_counts(b, c, n)
    check_alpha(alpha)
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
