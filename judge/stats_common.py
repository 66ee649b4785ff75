"""What the judge's statistics modules share: conventions, the test result, input checks.

The judge decides after every event-time window, so most of what it reads must stay valid
under continuous peeking. Two families live in the `stats_*` modules:

* Sequential (valid at every window at once, "anytime-valid"): `mcnemar_sequential`
  (`stats_paired_rates`), `BoundedMeanCS`, `GaussianMixtureCS`, `MsprtState`
  (`stats_means`), and the quantile functions with `sequential=True` (`stats_quantiles`).
  Decide on these; `stats_planning` sizes traffic stages for them.
* Fixed-horizon (valid for one look only): `mcnemar`, `paired_proportion_diff_ci`
  (`stats_paired_rates`), `wilcoxon_signed_rank`, `mann_whitney` (`stats_rank_tests`),
  quantile functions with `sequential=False`. Use them for reports, baselines and one-off
  comparisons.

Conventions: `b` counts pairs where only the candidate failed (candidate worse), `c`
pairs where only the primary failed; differences are candidate minus primary; ratios are
candidate over primary; every interval is two-sided at level `alpha`. Everything is pure:
no I/O, no clock, no global RNG, and every state object is a frozen value that `update`
replaces rather than mutates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True, slots=True)
class TestResult:
    """Outcome of a test, shaped to travel as a verdict's evidence."""

    __test__ = False  # not a pytest test class

    statistic: float
    p_value: float
    n: int
    method: str
    alternative: Alternative = "two-sided"


def check_alpha(alpha: float) -> None:
    """Reject a level outside (0, 1) early: log(1 / alpha) and the binomial tails need it."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def check_counts(*counts: int) -> None:
    """Reject counts that are not non-negative integers (a float here is a caller's bug)."""
    if any(int(k) != k or k < 0 for k in counts):
        raise ValueError(f"counts must be non-negative integers, got {counts!r}")


def finite_1d(xs: ArrayLike) -> NDArray[np.float64]:
    """Observations as a flat float array; one NaN or inf would poison every running sum."""
    x = np.asarray(xs, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("observations must be finite")
    return x
