"""Tests for judge.stats_planning: planned sizes are tight, monotone and match simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shadowlens.judge import stats_planning as st
from shadowlens.judge.stats_means import BoundedMeanCS, mixture_radius, mixture_rho


def test_required_samples_is_tight_and_monotone() -> None:
    effects = [0.01, 0.02, 0.05, 0.1, 0.2]
    plans = [st.required_samples(e, 0.5, 0.05) for e in effects]
    ns = [p.n for p in plans]
    assert ns == sorted(ns, reverse=True) and len(set(ns)) == len(ns)
    for e, plan in zip(effects, plans, strict=True):
        assert plan.half_width <= e
        assert 0.5 * mixture_radius(plan.n - 1, mixture_rho(plan.n - 1, 0.05), 0.05) > e
    # with rho fixed in advance, n is the first crossing of the fixed boundary
    fixed = st.required_samples(0.05, 0.5, 0.05, optimal_n=5000)
    rho = mixture_rho(5000, 0.05)
    assert fixed.rho == rho and fixed.n >= plans[2].n
    assert 0.5 * mixture_radius(fixed.n, rho, 0.05) <= 0.05
    assert 0.5 * mixture_radius(fixed.n - 1, rho, 0.05) > 0.05
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
        cs = BoundedMeanCS(alpha_design=0.05).update(rng.random(plan.n) < 0.05)
        lo, hi = cs.interval(0.05)
        halves.append((hi - lo) / 2)
    assert np.median(halves) == pytest.approx(plan.half_width, rel=0.1)
