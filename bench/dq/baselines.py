"""The rules shadowlens is compared with, on per-window series as a metric store holds them.

- Flagger (fluxcd/flagger) as it analyses a canary: every `interval` (1 minute) each metric
  check compares that interval's value with its threshold; a failed check adds one to the
  canary's failed-checks counter, which is never reset during the analysis, and the canary
  is rolled back when the counter reaches `threshold` (its docs use 5 to 10); an interval
  whose checks all pass advances the traffic weight one step (here the policy's ramp), and
  the last step completes the promotion, after which nothing is checked.
- Kayenta-style: one look after the horizon, Mann-Whitney per metric (NetflixACAJudge).

Both read the policy's limits: p99 ratio, error rate, and quality against the same
reference the judge uses (the replica's window mean, else the policy's per-task value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from shadowlens.judge.policy import Policy
from shadowlens.judge.stats_rank_tests import mann_whitney

from .runs import MethodResult, Run, samples_at

KAYENTA_CONFIDENCE = 0.98
FLAGGER_THRESHOLDS = (5, 10)


@dataclass(slots=True)
class WindowSeries:
    """Per-window figures the metric-store rules read (what Prometheus would hold)."""

    p99_p: np.ndarray
    p99_c: np.ndarray
    err_p: np.ndarray
    err_c: np.ndarray
    qual_c: np.ndarray
    qual_ref: np.ndarray  # the reference: the replica's mean, or the policy's value (NaN: none)
    end_ms: np.ndarray


def window_series(run: Run, policy: Policy, windows: int, reference: float | None) -> WindowSeries:
    """The run cut into windows: per-window p99s, failure rates and mean qualities."""
    size, q = policy.windows.size_ms, policy.latency.quantile
    w = (run.start_ms - run.t0_ms) // size
    ok_p, ok_c = ~run.fail_p, ~run.fail_c
    both = ok_p & ok_c
    rep_ok = run.replica & ~run.fail_r & ok_p
    out = {k: np.full(windows, np.nan) for k in ("p99_p", "p99_c", "ep", "ec", "qc", "qr")}
    for j in range(windows):
        m = w == j
        if not m.any():
            continue
        out["p99_p"][j] = np.quantile(run.lat_p[m & ok_p], q)
        out["p99_c"][j] = np.quantile(run.lat_c[m & ok_c], q)
        out["ep"][j] = run.fail_p[m].mean()
        out["ec"][j] = run.fail_c[m].mean()
        out["qc"][j] = run.qual_c[m & both].mean()
        rq = run.qual_r[m & rep_ok]
        out["qr"][j] = rq.mean() if rq.size else (np.nan if reference is None else reference)
    ends = run.t0_ms + size * (np.arange(windows) + 1)
    return WindowSeries(
        out["p99_p"], out["p99_c"], out["ep"], out["ec"], out["qc"], out["qr"], ends
    )


def _window_checks(s: WindowSeries, policy: Policy) -> dict[str, np.ndarray]:
    """The policy's point thresholds on one window each: True where the check fails."""
    limit = 1.0 + policy.latency.max_relative_increase
    pe, keep = policy.errors, 1.0 - policy.quality.max_relative_drop
    with np.errstate(invalid="ignore"):
        return {
            "latency_p99": s.p99_c / s.p99_p > limit,
            "error_rate": s.err_c > np.maximum(pe.max_absolute, s.err_p + pe.max_increase),
            "quality": s.qual_c < keep * s.qual_ref,
        }


def run_flagger(run: Run, s: WindowSeries, policy: Policy, threshold: int) -> MethodResult:
    """Flagger's analysis: a failed-checks counter that rolls back at `threshold`."""
    checks = _window_checks(s, policy)
    failed = np.zeros(len(s.end_ms), dtype=bool)
    for v in checks.values():
        failed |= v
    stages = policy.ramp.stages_percent
    result, counter, stage = MethodResult(), 0, 0
    for j, bad in enumerate(failed.tolist()):
        end = int(s.end_ms[j])
        if bad:
            counter += 1
            if counter >= threshold:
                result.rolled_back = True
                result.t_ms, result.samples = end - run.t0_ms, samples_at(run, end)
                result.metrics = tuple(k for k, v in checks.items() if v[: j + 1].any())
                return result
            continue
        stage += 1
        result.promoted_first += 1
        result.reached = stages[stage]
        if stage == len(stages) - 1:  # promotion complete: the analysis ends
            result.complete_ms, result.complete_samples = end - run.t0_ms, samples_at(run, end)
            return result
    return result


def _iqr_clean(x: np.ndarray) -> np.ndarray:
    """Kayenta's transform: drop NaNs, then outliers beyond 3 IQR (IQRDetector, factor 3)."""
    x = x[np.isfinite(x)]
    if x.size < 4:
        return x
    q1, q3 = np.quantile(x, [0.25, 0.75])
    iqr = q3 - q1
    return x[(x >= q1 - 3 * iqr) & (x <= q3 + 3 * iqr)]


def run_kayenta(run: Run, s: WindowSeries, policy: Policy) -> MethodResult:
    """Kayenta-style: one Mann-Whitney look at the horizon, with an effect-size floor."""
    alpha = 1.0 - KAYENTA_CONFIDENCE
    limit = 1.0 + policy.latency.max_relative_increase
    pe, keep = policy.errors, 1.0 - policy.quality.max_relative_drop
    fired = []
    lat_p, lat_c = _iqr_clean(s.p99_p), _iqr_clean(s.p99_c)
    if mann_whitney(lat_p, lat_c).p_value < alpha and lat_c.mean() > limit * lat_p.mean():
        fired.append("latency_p99")
    err_p, err_c = _iqr_clean(s.err_p), _iqr_clean(s.err_c)
    e_limit = max(pe.max_absolute, err_p.mean() + pe.max_increase) if err_p.size else math.inf
    if mann_whitney(err_p, err_c).p_value < alpha and err_c.mean() > e_limit:
        fired.append("error_rate")
    q_r, q_c = _iqr_clean(s.qual_ref), _iqr_clean(s.qual_c)
    if q_r.size and mann_whitney(q_r, q_c).p_value < alpha and q_c.mean() < keep * q_r.mean():
        fired.append("quality")
    end = int(s.end_ms[-1])
    result = MethodResult(bool(fired), end - run.t0_ms, samples_at(run, end), tuple(fired))
    if not fired:
        result.complete_ms, result.complete_samples = result.t_ms, result.samples
        result.reached = policy.ramp.stages_percent[-1]
    return result
