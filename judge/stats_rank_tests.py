"""Fixed-horizon rank tests (scipy) for reports and baselines: valid for one look only, so
never for the judge's per-window decisions."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from shadowlens.judge.stats_common import Alternative, TestResult, finite_1d


def wilcoxon_signed_rank(diffs: ArrayLike, *, alternative: Alternative = "two-sided") -> TestResult:
    """Wilcoxon signed-rank test on paired differences (scipy), fixed horizon.

    For the benchmark's fixed-horizon baseline; zero differences are dropped ("wilcox").
    `n` counts the non-zero differences. Empty or all-zero input gives p = 1.
    """
    d = finite_1d(diffs)
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
    x, y = finite_1d(a), finite_1d(b)
    n = int(x.size + y.size)
    if x.size == 0 or y.size == 0:
        return TestResult(math.nan, 1.0, n, "mann-whitney", alternative)
    res = stats.mannwhitneyu(x, y, alternative=alternative, method="auto")
    p = float(res.pvalue)
    return TestResult(
        float(res.statistic), 1.0 if math.isnan(p) else p, n, "mann-whitney", alternative
    )
