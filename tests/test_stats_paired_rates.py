"""Tests for judge.stats_paired_rates: McNemar against scipy and literal Bayes factors,
Tango's interval against published values, plus seeded coverage and peeking checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from shadowlens.judge import stats_paired_rates as st

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
