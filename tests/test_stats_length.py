"""judge.stats_length: the win rate at equal answer length, on literal binned data."""

from __future__ import annotations

import pytest
from shadowlens.comparators.aggregate import LENGTH_BINS, LengthBins
from shadowlens.judge.stats_length import MIN_PAIRS, length_adjusted_win_rate

CENTERS = LengthBins.centers()
MIDDLE = LENGTH_BINS // 2


def binned(by_bin: dict[int, tuple[float, int]]) -> tuple[list[float], list[float]]:
    wins, counts = [0.0] * LENGTH_BINS, [0.0] * LENGTH_BINS
    for i, (w, n) in by_bin.items():
        wins[i], counts[i] = w, n
    return wins, counts


def test_equal_lengths_fall_in_the_middle_bin() -> None:
    bins = LengthBins()
    bins.add(1.0, 0.5)
    bins.add(0.0, 1.0)  # an empty answer: the shortest bin
    assert CENTERS[MIDDLE] == 0.0 and bins.counts[MIDDLE] == 1 and bins.counts[0] == 1


def test_an_identical_candidate_is_at_parity() -> None:
    wins, counts = binned({MIDDLE: (100.0, 200)})
    assert length_adjusted_win_rate(CENTERS, wins, counts) == pytest.approx(0.5)


def test_wins_that_come_from_length_are_discounted() -> None:
    # longer answers win 80 %, shorter ones 20 %: at equal length, parity
    wins, counts = binned({MIDDLE + 3: (80.0, 100), MIDDLE - 3: (20.0, 100), MIDDLE: (30, 60)})
    raw = (80 + 20 + 30) / 260
    adjusted = length_adjusted_win_rate(CENTERS, wins, counts)
    assert raw == pytest.approx(0.5) and adjusted == pytest.approx(0.5, abs=0.01)
    # a verbose candidate: mostly longer and winning there; the adjusted rate is lower
    wins, counts = binned({MIDDLE + 3: (160.0, 200), MIDDLE: (10.0, 20)})
    adjusted = length_adjusted_win_rate(CENTERS, wins, counts)
    assert adjusted is not None and adjusted < 170 / 220


def test_too_few_pairs_give_no_estimate_and_extremes_stay_finite() -> None:
    wins, counts = binned({MIDDLE: (5.0, MIN_PAIRS - 1)})
    assert length_adjusted_win_rate(CENTERS, wins, counts) is None
    wins, counts = binned({MIDDLE: (0.0, 100)})  # never wins
    assert length_adjusted_win_rate(CENTERS, wins, counts) == pytest.approx(0.0, abs=1e-6)
