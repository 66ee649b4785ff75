"""Tests for judge.stats_means: literal data against reference loops and numerical
integrals, plus seeded simulations that check validity under peeking after every batch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import integrate, stats
from shadowlens.judge import stats_means as st

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
