"""Tests for judge.stats: literal data against scipy / published values, plus seeded
simulations that check sequential validity under peeking after every batch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import integrate, stats
from shadowlens.judge import stats as st

# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    ("b", "c"), [(0, 1), (1, 0), (3, 9), (10, 2), (5, 5), (0, 7), (25, 40), (120, 95), (0, 30)]
)
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mcnemar_matches_scipy_binomtest(b: int, c: int, alternative: str) -> None:
    res = st.mcnemar(b, c, alternative=alternative)  # type: ignore[arg-type]
    ref = stats.binomtest(b, b + c, 0.5, alternative=alternative).pvalue
    assert res.p_value == pytest.approx(ref, rel=1e-12, abs=1e-300)
    assert (res.statistic, res.n, res.method) == (b, b + c, "mcnemar-exact")


def test_mcnemar_no_discordant_pairs_is_no_evidence() -> None:
    assert st.mcnemar(0, 0).p_value == 1.0
    assert st.mcnemar_sequential(0, 0).p_value == 1.0
    with pytest.raises(ValueError):
        st.mcnemar(-1, 3)


def test_mcnemar_sequential_literal_bayes_factor() -> None:
    # BF = B(1, 8) * 2^7 = 128 / 8 = 16 for b=0, c=7
    assert st.mcnemar_sequential(0, 7).p_value == pytest.approx(1 / 16)
    assert st.mcnemar_sequential(7, 0).p_value == pytest.approx(1 / 16)
    # one-sided prior on (1/2, 1): BF = 2 * 2^7 * integral_{1/2}^1 p^7 dp = 2 * 2^7 * (1 - 2^-8) / 8
    assert st.mcnemar_sequential(7, 0, alternative="greater").p_value == pytest.approx(
        1 / (2 * 2**7 * (1 - 2**-8) / 8)
    )
    # evidence in the wrong direction never rejects the one-sided null
    assert st.mcnemar_sequential(0, 20, alternative="greater").p_value == 1.0


def test_mcnemar_sequential_type_one_error_under_peeking_and_power() -> None:
    rng = np.random.default_rng(7)
    alpha, streams, looks, batch = 0.05, 400, 40, 10
    # discordant pairs only; True = candidate-only failure
    null = rng.random((streams, looks * batch)) < 0.5
    alt = rng.random((streams, looks * batch)) < 0.7
    rejected = {"null": 0, "alt": 0}
    for name, data in (("null", null), ("alt", alt)):
        for row in data:
            cum_b = np.cumsum(row)[batch - 1 :: batch]
            for k, b in enumerate(cum_b, start=1):
                if st.mcnemar_sequential(int(b), k * batch - int(b)).p_value <= alpha:
                    rejected[name] += 1
                    break
    assert rejected["null"] / streams <= alpha + 0.02
    assert rejected["alt"] / streams >= 0.9


# --------------------------------------------------------------------------- Tango


def test_tango_matches_propcis_scoreci_mp() -> None:
    # PropCIs::scoreci.mp(25, 28, 618, 0.90) -> [-0.0148, 0.0247]; it reports (c - b)/n
    res = st.paired_proportion_diff_ci(28, 25, 618, alpha=0.10)
    assert res.estimate == pytest.approx(3 / 618)
    assert round(res.lo, 4) == -0.0148
    assert round(res.hi, 4) == 0.0247


def test_tango_bentur_example() -> None:
    # Fagerland et al. (2014) airway data, table (1, 1, 7, 12): difference -0.2857,
    # Tango 95% CI (-0.517, -0.026)
    res = st.paired_proportion_diff_ci(1, 7, 21, alpha=0.05)
    assert res.estimate == pytest.approx(-6 / 21)
    assert res.lo == pytest.approx(-0.517, abs=5e-4)
    assert res.hi == pytest.approx(-0.026, abs=5e-4)


@pytest.mark.parametrize(
    ("b", "c", "n"),
    [
        (0, 0, 14),
        (3, 2, 14),
        (13, 1, 14),
        (14, 0, 14),
        (2, 9, 20),
        (25, 12, 200),
        (1, 1, 2),
        (0, 5, 500),
    ],
)
def test_tango_structure(b: int, c: int, n: int) -> None:
    alpha = 0.05
    z = stats.norm.ppf(1 - alpha / 2)
    res = st.paired_proportion_diff_ci(b, c, n, alpha)
    mirror = st.paired_proportion_diff_ci(c, b, n, alpha)
    assert -1.0 <= res.lo <= res.estimate <= res.hi <= 1.0
    assert (mirror.lo, mirror.hi) == pytest.approx((-res.hi, -res.lo), abs=1e-9)
    for bound, target in ((res.lo, z), (res.hi, -z)):
        if abs(bound) < 1.0:  # interior endpoints solve the score equation
            assert st._tango_score(b, c, n, bound) == pytest.approx(target, abs=1e-6)
    if b == c == 0:
        assert res.hi == pytest.approx(z * z / (n + z * z), rel=1e-9)


def test_tango_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        st.paired_proportion_diff_ci(5, 6, 10, 0.05)
    with pytest.raises(ValueError):
        st.paired_proportion_diff_ci(0, 0, 0, 0.05)


def test_tango_coverage_simulation() -> None:
    rng = np.random.default_rng(3)
    # cell probabilities: both fail, candidate only, primary only, neither
    probs = np.array([0.05, 0.08, 0.04, 0.83])
    delta = probs[1] - probs[2]
    counts = rng.multinomial(150, probs, size=400)
    covered = sum(
        ci.lo <= delta <= ci.hi
        for ci in (st.paired_proportion_diff_ci(int(r[1]), int(r[2]), 150, 0.05) for r in counts)
    )
    assert covered / len(counts) >= 0.93


# --------------------------------------------------------------------------- BoundedMeanCS


def _prpl_eb_reference(x: list[float], alpha_design: float, alpha: float) -> tuple[float, float]:
    """One observation at a time, straight from Waudby-Smith & Ramdas (2024), PrPl-EB CS."""
    mu_prev, var_prev, s_x, s_sq = 0.5, 0.25, 0.0, 0.0
    s_bet = s_bet_x = s_pen = 0.0
    for t, xt in enumerate(x, start=1):
        bet = min(math.sqrt(2 * math.log(2 / alpha_design) / (var_prev * t * math.log(1 + t))), 0.5)
        s_bet += bet
        s_bet_x += bet * xt
        s_pen += 4 * (xt - mu_prev) ** 2 * (-math.log(1 - bet) - bet) / 4
        s_x += xt
        mu = (0.5 + s_x) / (t + 1)
        s_sq += (xt - mu) ** 2
        var_prev = (0.25 + s_sq) / (t + 1)
        mu_prev = mu
    center, margin = s_bet_x / s_bet, (math.log(2 / alpha) + s_pen) / s_bet
    return max(0.0, center - margin), min(1.0, center + margin)


def test_bounded_cs_matches_reference_loop() -> None:
    x = [0.0, 1.0, 0.0, 0.0, 0.2, 0.9, 0.35, 0.0, 1.0, 0.5, 0.05, 0.0, 0.0, 0.7, 0.1] * 7
    cs = st.BoundedMeanCS(alpha_design=0.05).update(x[:40]).update(x[40:])
    assert cs.interval(0.05) == pytest.approx(_prpl_eb_reference(x, 0.05, 0.05), rel=1e-12)
    assert cs.interval(0.01) == pytest.approx(_prpl_eb_reference(x, 0.05, 0.01), rel=1e-12)
    assert cs.mean == pytest.approx(np.mean(x))
    assert cs.n == len(x)


@settings(max_examples=40, deadline=None)
@given(
    hst.lists(hst.floats(0.0, 1.0), min_size=1, max_size=60),
    hst.integers(0, 60),
)
def test_bounded_cs_batching_does_not_matter(xs: list[float], cut: int) -> None:
    cut = min(cut, len(xs))
    whole = st.BoundedMeanCS(alpha_design=0.1).update(xs)
    split = st.BoundedMeanCS(alpha_design=0.1).update(xs[:cut]).update(xs[cut:])
    assert split.interval(0.1) == pytest.approx(whole.interval(0.1), rel=1e-9, abs=1e-12)


def test_bounded_cs_rescales_and_validates() -> None:
    d = np.array([1, 0, 0, -1, 0, 1, 1, 0, 0, 0, -1, 1, 0, 0, 1], dtype=float)
    raw = st.BoundedMeanCS(alpha_design=0.05, lower=-1.0, upper=1.0).update(d)
    unit = st.BoundedMeanCS(alpha_design=0.05).update((d + 1) / 2)
    lo, hi = unit.interval(0.05)
    assert raw.interval(0.05) == pytest.approx((2 * lo - 1, 2 * hi - 1))
    assert raw.mean == pytest.approx(d.mean())
    assert st.BoundedMeanCS(alpha_design=0.05).interval(0.05) == (0.0, 1.0)
    with pytest.raises(ValueError):
        st.BoundedMeanCS(alpha_design=0.05).update([0.5, 1.5])
    with pytest.raises(ValueError):
        st.BoundedMeanCS(alpha_design=0.05).update([np.nan])


def test_bounded_cs_merge_adds_substreams() -> None:
    a = st.BoundedMeanCS(alpha_design=0.05).update([0, 1, 0, 0, 1, 0])
    b = st.BoundedMeanCS(alpha_design=0.05).update([0, 0, 0, 1])
    merged = a.merge(b)
    assert merged.n == 10
    assert merged.mean == pytest.approx(0.3)
    assert merged.sum_bet == pytest.approx(a.sum_bet + b.sum_bet)
    lo, hi = merged.interval(0.05)
    assert 0.0 <= lo <= 0.3 <= hi <= 1.0
    with pytest.raises(ValueError):
        a.merge(st.BoundedMeanCS(alpha_design=0.1))


def test_bounded_cs_time_uniform_coverage_under_peeking() -> None:
    rng = np.random.default_rng(11)
    alpha, streams, looks, batch = 0.1, 300, 40, 25
    true_mean = 0.1  # Bernoulli error indicators: the rare-event case
    data = (rng.random((streams, looks * batch)) < true_mean).astype(float)
    misses, widths = 0, []
    for row in data:
        cs = st.BoundedMeanCS(alpha_design=alpha)
        missed = False
        for k in range(looks):
            cs = cs.update(row[k * batch : (k + 1) * batch])
            lo, hi = cs.interval(alpha)
            missed |= not lo <= true_mean <= hi
        misses += missed
        widths.append(hi - lo)
    assert misses / streams <= alpha + 0.02
    assert np.median(widths) < 0.08  # and it is informative at n = 1000


# --------------------------------------------------------------------------- Gaussian CS


def test_gaussian_cs_moments_and_merge() -> None:
    x = np.array([0.12, -0.4, 0.33, 0.05, 1.2, -0.7, 0.0, 0.25, 0.61, -0.09])
    cs = st.GaussianMixtureCS().update(x[:3]).update(x[3:7]).update(x[7:])
    assert cs.n == 10
    assert cs.mean == pytest.approx(x.mean())
    assert cs.variance == pytest.approx(x.var(ddof=1))
    merged = st.GaussianMixtureCS().update(x[:6]).merge(st.GaussianMixtureCS().update(x[6:]))
    assert (merged.mean, merged.m2) == pytest.approx((cs.mean, cs.m2))
    assert st.GaussianMixtureCS().update([1.0]).interval(0.05, 0.1) == (-math.inf, math.inf)
    # below min_n the plug-in variance is not trusted
    assert cs.interval(0.05, 0.1) == (-math.inf, math.inf)
    lo, hi = cs.interval(0.05, 0.1, min_n=2)
    assert lo < cs.mean < hi


def test_gaussian_cs_literal_boundary() -> None:
    # the boundary of Waudby-Smith et al. (2024), Sec. 2, written out for n=100, sd=2, rho=0.3
    cs = st.GaussianMixtureCS(n=100, mean=1.0, m2=4.0 * 99)
    lo, hi = cs.interval(0.05, 0.3)
    t, r2 = 100, 0.09
    half = 2.0 * math.sqrt(2 * (t * r2 + 1) / (t * t * r2) * math.log(math.sqrt(t * r2 + 1) / 0.05))
    assert (lo, hi) == pytest.approx((1.0 - half, 1.0 + half))


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.001])
@pytest.mark.parametrize("optimal_n", [50, 2_000, 1_000_000])
def test_mixture_rho_is_near_the_exact_minimiser(alpha: float, optimal_n: int) -> None:
    from scipy.optimize import minimize_scalar

    best = minimize_scalar(
        lambda log_rho: st.mixture_radius(optimal_n, math.exp(log_rho), alpha),
        bounds=(-15, 5),
        method="bounded",
    )
    approx = st.mixture_radius(optimal_n, st.mixture_rho(optimal_n, alpha), alpha)
    assert approx <= best.fun * 1.001


def test_gaussian_cs_time_uniform_coverage_under_peeking() -> None:
    rng = np.random.default_rng(5)
    alpha, streams, looks, batch = 0.1, 300, 50, 20
    true_mean = 0.15
    rho = st.mixture_rho(500, alpha)
    # log latency ratios: normal and a heavier-tailed (t with 5 df) half
    normal = rng.normal(true_mean, 0.6, size=(streams // 2, looks * batch))
    heavy = true_mean + 0.6 * rng.standard_t(5, size=(streams // 2, looks * batch))
    misses = 0
    for row in np.vstack([normal, heavy]):
        cs = st.GaussianMixtureCS()
        for k in range(looks):
            cs = cs.update(row[k * batch : (k + 1) * batch])
            lo, hi = cs.interval(alpha, rho)
            if not lo <= true_mean <= hi:
                misses += 1
                break
    assert misses / streams <= alpha + 0.02


# --------------------------------------------------------------------------- mSPRT


def test_msprt_matches_numerical_mixture() -> None:
    n, mean, var, theta0, tau2 = 50, 0.3, 1.5, 0.0, 0.2

    def integrand(theta: float) -> float:
        log_lr = n * (theta - theta0) * (mean - theta0) / var - n * (theta - theta0) ** 2 / (
            2 * var
        )
        return math.exp(log_lr) * stats.norm.pdf(theta, theta0, math.sqrt(tau2))

    lam, _ = integrate.quad(integrand, -10, 10)
    res = st.msprt_p_value(n, mean, var, theta0, tau2)
    assert res.statistic == pytest.approx(math.log(lam), rel=1e-9)
    assert res.p_value == pytest.approx(min(1.0, 1 / lam), rel=1e-9)


@pytest.mark.parametrize(
    ("n", "mean", "var"), [(30, 0.4, 1.0), (400, -0.1, 0.5), (2000, 0.03, 0.2)]
)
def test_msprt_is_dual_to_the_mixture_cs(n: int, mean: float, var: float) -> None:
    alpha, tau2 = 0.05, 0.01
    cs = st.GaussianMixtureCS(n=n, mean=mean, m2=var * (n - 1))
    lo, hi = cs.interval(alpha, math.sqrt(tau2 / var))
    for theta0 in np.linspace(mean - 2 * (hi - lo), mean + 2 * (hi - lo), 41):
        if min(abs(theta0 - lo), abs(theta0 - hi)) < 1e-9:
            continue  # on the boundary itself p == alpha up to rounding
        rejected = st.msprt_p_value(n, mean, var, float(theta0), tau2).p_value <= alpha
        assert rejected == (not lo <= theta0 <= hi)


def test_msprt_running_minimum_is_non_increasing() -> None:
    rng = np.random.default_rng(2)
    state = st.MsprtState(theta0=0.0, tau2=0.05)
    seen = [state.p_value]
    for _ in range(30):
        state = state.update(rng.normal(0.05, 1.0, size=25))
        seen.append(state.p_value)
    assert all(b <= a for a, b in itertools.pairwise(seen))
    assert state.moments.n == 750
    early = st.MsprtState(theta0=0.0, tau2=0.05).update([5.0, 5.1, 4.9, 5.0])
    assert early.p_value == 1.0 and early.moments.n == 4  # min_n guard
    assert st.MsprtState(theta0=0.0, tau2=0.05, min_n=2).update([5.0, 5.1, 4.9]).p_value < 1e-6
    with pytest.raises(ValueError):
        state.observe(st.GaussianMixtureCS().update([1.0, 2.0]))


def test_msprt_type_one_error_under_peeking_and_power() -> None:
    rng = np.random.default_rng(9)
    alpha, streams, looks, batch = 0.05, 300, 50, 20
    tau2 = 0.04
    outcomes = {}
    for name, shift in (("null", 0.0), ("alt", 0.25)):
        data = rng.normal(shift, 1.0, size=(streams, looks * batch))
        rejected = 0
        for row in data:
            state = st.MsprtState(theta0=0.0, tau2=tau2)
            for k in range(looks):
                state = state.update(row[k * batch : (k + 1) * batch])
                if state.p_value <= alpha:
                    rejected += 1
                    break
        outcomes[name] = rejected / streams
    assert outcomes["null"] <= alpha + 0.02
    assert outcomes["alt"] >= 0.9


# --------------------------------------------------------------------------- quantiles


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


# --------------------------------------------------------------------------- scipy wrappers


def test_wilcoxon_matches_scipy_on_literal_data() -> None:
    # Darwin's cross- vs self-fertilised Zea mays height differences (scipy docs example)
    d = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)
    res = st.wilcoxon_signed_rank(d)
    ref = stats.wilcoxon(d)
    assert (res.statistic, res.p_value) == (ref.statistic, ref.pvalue)
    assert res.statistic == 24.0
    assert res.p_value == pytest.approx(0.041259765625)
    greater = st.wilcoxon_signed_rank(d, alternative="greater")
    assert greater.p_value == pytest.approx(stats.wilcoxon(d, alternative="greater").pvalue)
    assert st.wilcoxon_signed_rank(np.zeros(8)).p_value == 1.0
    assert st.wilcoxon_signed_rank([]).n == 0


def test_mann_whitney_matches_scipy_on_literal_data() -> None:
    males = [19.0, 22.0, 16.0, 29.0, 24.0]
    females = [20.0, 11.0, 17.0, 12.0]
    res = st.mann_whitney(males, females)
    assert res.statistic == 17.0
    assert res.p_value == pytest.approx(0.1111111111111111)
    assert res.n == 9
    assert st.mann_whitney([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert st.mann_whitney([], [1.0]).p_value == 1.0


# --------------------------------------------------------------------------- planning


def test_required_samples_is_tight_and_monotone() -> None:
    effects = [0.01, 0.02, 0.05, 0.1, 0.2]
    plans = [st.required_samples(e, 0.5, 0.05) for e in effects]
    ns = [p.n for p in plans]
    assert ns == sorted(ns, reverse=True) and len(set(ns)) == len(ns)
    for e, plan in zip(effects, plans, strict=True):
        assert plan.half_width <= e
        assert 0.5 * st.mixture_radius(plan.n - 1, st.mixture_rho(plan.n - 1, 0.05), 0.05) > e
    # with rho fixed in advance, n is the first crossing of the fixed boundary
    fixed = st.required_samples(0.05, 0.5, 0.05, optimal_n=5000)
    rho = st.mixture_rho(5000, 0.05)
    assert fixed.rho == rho and fixed.n >= plans[2].n
    assert 0.5 * st.mixture_radius(fixed.n, rho, 0.05) <= 0.05
    assert 0.5 * st.mixture_radius(fixed.n - 1, rho, 0.05) > 0.05
    # more noise or more confidence -> more samples
    assert st.required_samples(0.05, 1.0, 0.05).n > plans[2].n
    assert st.required_samples(0.05, 0.5, 0.01).n > plans[2].n


def test_required_samples_bounded_is_monotone_and_realistic() -> None:
    sd = math.sqrt(0.05 * 0.95)  # 5 % error rate
    ns = [st.required_samples_bounded(e, sd, 0.05).n for e in (0.01, 0.02, 0.04)]
    assert ns == sorted(ns, reverse=True)
    # simulate: at the planned n the realised half-width is close to the plan
    rng = np.random.default_rng(1)
    plan = st.required_samples_bounded(0.02, sd, 0.05)
    halves = []
    for _ in range(20):
        cs = st.BoundedMeanCS(alpha_design=0.05).update(rng.random(plan.n) < 0.05)
        lo, hi = cs.interval(0.05)
        halves.append((hi - lo) / 2)
    assert np.median(halves) == pytest.approx(plan.half_width, rel=0.1)
