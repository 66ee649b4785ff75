"""Tests for judge.stats_rank_tests: the scipy wrappers on literal data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from shadowlens.judge import stats_rank_tests as st


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
