"""Tests for judge.stats_quantiles: exact binomial rank coverage, literal ratios, and
seeded coverage on exact samples and on DDSketches, fixed and sequential."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ddsketch import DDSketch
from scipy import stats
from shadowlens.judge import stats_quantiles as st


@pytest.mark.parametrize(("n", "q"), [(1, 0.5), (10, 0.5), (100, 0.95), (1000, 0.99), (5000, 0.95)])
def test_fixed_rank_bounds_have_exact_binomial_coverage(n: int, q: float) -> None:
    alpha = 0.05
    lo, hi = st.quantile_rank_bounds(n, q, alpha, sequential=False)
    miss_lo = stats.binom.cdf(lo - 1, n, q) if lo >= 1 else 0.0
    miss_hi = stats.binom.sf(hi - 1, n, q) if hi <= n else 0.0
    assert miss_lo <= alpha / 2 and miss_hi <= alpha / 2
    # and they are the tightest such ranks
    if lo + 1 <= n:
        assert stats.binom.cdf(lo, n, q) > alpha / 2
    if hi - 1 >= 1:
        assert stats.binom.sf(hi - 2, n, q) > alpha / 2


def test_sequential_rank_bounds_are_the_beta_binomial_acceptance_set() -> None:
    n, q, alpha = 700, 0.95, 0.05
    lo, hi = st.quantile_rank_bounds(n, q, alpha, sequential=True)
    accepted = np.flatnonzero(stats.binom.pmf(np.arange(n + 1), n, q) > alpha / (n + 1))
    assert (lo, hi) == (accepted[0], accepted[-1] + 1)
    fixed = st.quantile_rank_bounds(n, q, alpha, sequential=False)
    assert lo <= fixed[0] and hi >= fixed[1]  # the price of peeking


def test_quantile_ratio_from_samples_literal() -> None:
    primary = np.arange(1.0, 101.0)  # 1..100
    candidate = 2.0 * primary
    res = st.quantile_ratio_from_samples(primary, candidate, 0.5, 0.1)
    lo_rank, hi_rank = st.quantile_rank_bounds(100, 0.5, 0.05, sequential=False)
    assert res.ratio == pytest.approx(2.0)
    assert res.lo == pytest.approx(2.0 * lo_rank / hi_rank)
    assert res.hi == pytest.approx(2.0 * hi_rank / lo_rank)
    tiny = st.quantile_ratio_from_samples([1.0, 2.0], [1.0, 2.0], 0.99, 0.05)
    assert (tiny.lo, tiny.hi) == (0.0, math.inf)  # too few requests to bound p99


def test_quantile_ratio_covers_lognormal_truth() -> None:
    rng = np.random.default_rng(21)
    q, alpha, runs, n = 0.95, 0.1, 200, 1500
    z = stats.norm.ppf(q)
    true_ratio = math.exp(0.1 + 0.6 * z) / math.exp(0.0 + 0.5 * z)
    covered = 0
    for _ in range(runs):
        common = rng.normal(size=n)  # paired requests: the arms are correlated
        primary = np.exp(0.5 * common)
        candidate = np.exp(0.1 + 0.6 * (0.8 * common + 0.6 * rng.normal(size=n)))
        res = st.quantile_ratio_from_samples(primary, candidate, q, alpha)
        covered += res.lo <= true_ratio <= res.hi
    assert covered / runs >= 1 - alpha


def test_sequential_quantile_ratio_covers_at_every_look() -> None:
    rng = np.random.default_rng(4)
    q, alpha, runs, looks, batch = 0.9, 0.1, 150, 20, 100
    z = stats.norm.ppf(q)
    true_ratio = math.exp(0.2 + 0.4 * z) / math.exp(0.4 * z)
    misses = 0
    for _ in range(runs):
        primary = np.exp(0.4 * rng.normal(size=looks * batch))
        candidate = np.exp(0.2 + 0.4 * rng.normal(size=looks * batch))
        for k in range(1, looks + 1):
            res = st.quantile_ratio_from_samples(
                primary[: k * batch], candidate[: k * batch], q, alpha, sequential=True
            )
            if not res.lo <= true_ratio <= res.hi:
                misses += 1
                break
    assert misses / runs <= alpha


def _sketch(values: np.ndarray, eps: float = 0.01) -> DDSketch:
    sketch = DDSketch(relative_accuracy=eps)
    for v in values:
        sketch.add(float(v))
    return sketch


def test_sketch_order_statistics_are_within_relative_accuracy() -> None:
    values = np.array([120.0, 95.0, 3000.0, 410.0, 87.0, 101.0, 250.0, 1200.0, 99.0, 640.0, 75.0])
    sketch = _sketch(values)
    ordered = np.sort(values)
    for rank in range(1, values.size + 1):
        got = st._sketch_order_stat(sketch, values.size, rank)
        assert abs(got - ordered[rank - 1]) <= 0.01 * ordered[rank - 1] * (1 + 1e-9)


def test_sketch_ratio_interval_contains_the_exact_sample_interval() -> None:
    rng = np.random.default_rng(8)
    primary = rng.lognormal(6.0, 0.5, size=3000)  # ms
    candidate = rng.lognormal(6.2, 0.6, size=3000)
    for sequential in (False, True):
        exact = st.quantile_ratio_from_samples(
            primary, candidate, 0.99, 0.05, sequential=sequential
        )
        sk = st.quantile_ratio_ci(
            _sketch(primary), _sketch(candidate), 0.99, 0.05, sequential=sequential
        )
        assert sk.lo <= exact.lo and sk.hi >= exact.hi
        assert sk.hi / sk.lo <= exact.hi / exact.lo * 1.1  # eps = 1 % costs little width
        assert sk.ratio == pytest.approx(exact.ratio, rel=0.05)
        assert (sk.n_primary, sk.n_candidate) == (3000, 3000)


def test_sketch_ratio_covers_lognormal_truth() -> None:
    rng = np.random.default_rng(13)
    q, alpha, runs, n = 0.99, 0.1, 40, 2000
    z = stats.norm.ppf(q)
    true_ratio = math.exp(0.3 + 0.5 * z) / math.exp(0.5 * z)
    covered = 0
    for _ in range(runs):
        res = st.quantile_ratio_ci(
            _sketch(rng.lognormal(0.0, 0.5, n)), _sketch(rng.lognormal(0.3, 0.5, n)), q, alpha
        )
        covered += res.lo <= true_ratio <= res.hi
    assert covered / runs >= 1 - alpha
