"""The length-adjusted win rate: what a judge's preference says once answer length is held
equal.

LLM judges favour longer answers, so a candidate can win by talking more. AlpacaEval's
length-controlled win rate (Dubois et al. 2024, arXiv 2404.04475) fits a logistic model of
each judgment on the length difference (and the instruction's difficulty) and reads the
win rate at a length difference of zero. Here the model has the length term only, on the
candidate's wins binned by ``x = tanh(log(candidate length / primary length))``
(`comparators.aggregate.LengthBins`: sums that merge across windows):

    P(win | x) = sigmoid(a + b x),  length-adjusted win rate = sigmoid(a).

A ridge penalty on ``b`` keeps the fit defined when every judged pair has the same length
ratio (an identical candidate: a = 0, the rate is exactly 0.5). Without the difficulty term
the estimate is cruder than AlpacaEval's; it is reported beside the raw rate, never used to
roll back. Fixed-horizon, point estimate only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RIDGE = 1.0  # L2 penalty on the length slope (in units of judged pairs)
ITERATIONS = 50
MIN_PAIRS = 20  # below this many judged pairs, no estimate


def length_adjusted_win_rate(
    centers: Sequence[float], wins: Sequence[float], counts: Sequence[float]
) -> float | None:
    """sigmoid(a) of the binned logistic fit of win on the length term; None with fewer
    than `MIN_PAIRS` pairs. `wins[i]` is the sum of the wins (in [0, 1], ties 0.5) of the
    `counts[i]` pairs whose length term is near `centers[i]`."""
    x, y, n = (np.asarray(v, dtype=np.float64) for v in (centers, wins, counts))
    if n.sum() < MIN_PAIRS:
        return None
    design = np.column_stack([np.ones_like(x), x])
    penalty = np.diag([0.0, RIDGE])
    theta = np.zeros(2)
    for _ in range(ITERATIONS):  # Newton-Raphson on the penalised binomial log-likelihood
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (y - n * p) - penalty @ theta
        hessian = design.T @ (design * (n * p * (1 - p))[:, None]) + penalty
        hessian += 1e-9 * np.eye(2)  # a rate of exactly 0 or 1 leaves it singular
        step = np.linalg.solve(hessian, gradient)
        theta += step
        if float(np.abs(step).max()) < 1e-10:
            break
    a = float(np.clip(theta[0], -30.0, 30.0))
    return 1.0 / (1.0 + math.exp(-a))
