"""Ramp planning: the judge's own bounds and alpha, turned into hold times per stage."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from shadowlens.cli.app import app
from shadowlens.judge.decide import metric_alpha
from shadowlens.judge.plan import Assumptions, Mode, Rate, metric_needs, plan_ramp
from shadowlens.judge.policy import LatencyPolicy, Policy, QualityPolicy, RampPolicy
from shadowlens.judge.stats_planning import required_samples, required_samples_bounded
from shadowlens.judge.verdicts import Metric
from typer.testing import CliRunner

POLICY = Policy()
ALPHA = metric_alpha(POLICY)


def need(policy: Policy, a: Assumptions, metric: Metric):
    return next(n for n in metric_needs(policy, a) if n.metric == metric)


def test_latency_need_is_the_mixture_bound_at_the_judges_alpha_and_rho() -> None:
    """On the slowest fifth of pairs (the paired p99 gate): five times its n in pairs."""
    a = Assumptions(rate_per_s=5.0, latency_log_sd=0.6)
    tail = required_samples(math.log(1.2), 0.6, ALPHA, optimal_n=POLICY.judge.optimal_n / 5)
    got = need(POLICY, a, Metric.LATENCY_P99)
    assert got.n == max(tail.n, 30) * 5 > POLICY.judge.min_pairs
    assert got.alpha == ALPHA and got.effect == pytest.approx(math.log(1.2))


def _paired_rate_need(p: float) -> int:
    """The faster of the two routes to a pass for a paired rate at base rate p (errors and
    refusals: +2 pp on the increase, or 5 % on the candidate's rate), at least min_pairs."""
    sd = math.sqrt(max(p * (1 - p), 1e-6))
    routes = [
        required_samples_bounded(
            0.02, math.sqrt(max(2 * p * (1 - p), 1e-6)), ALPHA / 2, lower=-1, upper=1
        ).n
    ]
    if p < 0.05:
        routes.append(required_samples_bounded(0.05 - p, sd, ALPHA / 2).n)
    return max(min(routes), POLICY.judge.min_pairs)


def test_error_need_is_the_faster_of_the_two_routes_to_a_pass() -> None:
    for p in (0.0, 0.01, 0.04, 0.2):
        got = need(POLICY, Assumptions(5.0, error_rate=p), Metric.ERROR_RATE)
        assert got.n == _paired_rate_need(p), p
        assert got.alpha == ALPHA / 2


def test_refusal_need_takes_the_error_routes_over_pairs_only() -> None:
    for p in (0.0, 0.01, 0.05):
        got = need(POLICY, Assumptions(5.0, refusal_rate=p), Metric.REFUSAL_RATE)
        assert got.n == _paired_rate_need(p), p
        assert got.rate == Rate.PAIRED and got.alpha == ALPHA / 2, p
    split = plan_ramp(POLICY, Assumptions(5.0, mode=Mode.SPLIT))
    assert Metric.REFUSAL_RATE not in split.stages[2].seconds  # no text pairs in split traffic
    assert Metric.REFUSAL_RATE in split.stages[0].seconds


def test_quality_need_uses_the_relative_drop_times_the_reference() -> None:
    a = Assumptions(5.0, quality_reference=0.5, quality_sd=0.2)
    expected = required_samples(0.1 * 0.5, 0.2, ALPHA / 2, optimal_n=POLICY.judge.optimal_n)
    got = need(POLICY, a, Metric.QUALITY)
    assert got.n == expected.n and got.effect == pytest.approx(0.05)


def test_needs_shrink_as_the_margins_widen() -> None:
    a = Assumptions(5.0, latency_log_sd=1.0, quality_sd=0.3)
    lat = [
        need(Policy(latency=LatencyPolicy(max_relative_increase=m)), a, Metric.LATENCY_P99).n
        for m in (0.05, 0.1, 0.2, 0.5)
    ]
    qual = [
        need(Policy(quality=QualityPolicy(max_relative_drop=d)), a, Metric.QUALITY).n
        for d in (0.05, 0.1, 0.2, 0.4)
    ]
    assert lat == sorted(lat, reverse=True) and lat[0] > lat[-1]
    assert qual == sorted(qual, reverse=True) and qual[0] > qual[-1]


def test_hold_times_fall_with_the_rate_down_to_the_minimum_hold() -> None:
    totals = [plan_ramp(POLICY, Assumptions(r)).total_ms for r in (0.5, 1, 2, 5, 20, 100, 1000)]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]
    fast = plan_ramp(POLICY, Assumptions(1000.0))
    assert all(s.binding == "min_hold" for s in fast.stages[:-1])
    assert fast.total_ms == POLICY.ramp.min_hold_ms * (len(POLICY.ramp.stages_percent) - 1)


def test_a_slow_stage_is_bound_by_a_metric_and_rounded_to_whole_windows() -> None:
    result = plan_ramp(POLICY, Assumptions(1.0, error_rate=0.03))
    stage = result.stages[0]
    worst = max(stage.seconds, key=lambda m: stage.seconds[m])
    assert stage.binding == str(worst)
    size = POLICY.windows.size_ms
    assert stage.hold_ms % size == 0
    assert stage.seconds[worst] * 1000 <= stage.hold_ms < stage.seconds[worst] * 1000 + size


def test_min_pairs_binds_when_the_metrics_settle_early() -> None:
    policy = replace(POLICY, ramp=RampPolicy(min_pairs=5_000, min_hold_ms=60_000))
    result = plan_ramp(policy, Assumptions(10.0))
    assert result.stages[0].binding == "min_pairs"
    assert result.stages[0].hold_ms == 500_000 + 40_000  # 500 s up to whole minutes


def test_shadow_mode_pairs_every_request_at_every_stage() -> None:
    """Errors, refusals and quality are carried across promotions: only the first stage
    waits for them, the later ones for latency (per stage) and the minimums."""
    result = plan_ramp(POLICY, Assumptions(3.0, error_rate=0.03))
    first, *later = (s.hold_ms for s in result.stages[:-1])
    assert len(set(later)) == 1 and first > later[0]
    assert all(Metric.ERROR_RATE not in s.seconds for s in result.stages[1:])
    assert all(s.pairs_per_s == 3.0 for s in result.stages)
    assert result.stages[-1].final and result.stages[-1].hold_ms == 0
    assert result.total_ms == sum(s.hold_ms for s in result.stages)


def test_split_mode_scales_by_the_traffic_share() -> None:
    a = Assumptions(5.0, mode=Mode.SPLIT)
    result = plan_ramp(POLICY, a)
    by_pct = {s.percent: s for s in result.stages}
    assert (
        by_pct[0].shadow
        and by_pct[0].hold_ms == plan_ramp(POLICY, Assumptions(5.0)).stages[0].hold_ms
    )
    assert by_pct[10].pairs_per_s == pytest.approx(5.0 * 0.1 * 0.9)
    ramp_up = [by_pct[p].hold_ms for p in (1, 5, 10, 25, 50)]
    assert ramp_up == sorted(ramp_up, reverse=True) and ramp_up[0] > ramp_up[-1]
    assert Metric.QUALITY not in by_pct[10].seconds  # no text pairs in split traffic
    assert result.total_ms > plan_ramp(POLICY, Assumptions(5.0)).total_ms


def test_assumptions_are_checked() -> None:
    for bad in (
        {"rate_per_s": 0.0},
        {"rate_per_s": 1.0, "error_rate": 1.0},
        {"rate_per_s": 1.0, "refusal_rate": -0.1},
        {"rate_per_s": 1.0, "latency_log_sd": 0.0},
        {"rate_per_s": 1.0, "quality_reference": 0.0},
        {"rate_per_s": 1.0, "cost_cv": -1.0},
    ):
        with pytest.raises(ValueError):
            Assumptions(**bad)


def test_cost_is_planned_only_when_its_spread_is_given() -> None:
    assert Metric.COST not in {n.metric for n in metric_needs(POLICY, Assumptions(5.0))}
    cost = need(POLICY, Assumptions(5.0, cost_cv=0.7), Metric.COST)
    expected = required_samples(0.1, 0.7, ALPHA, optimal_n=POLICY.judge.optimal_n)
    assert cost.n == expected.n


def test_cli_prints_the_stages_the_binding_metric_and_the_total() -> None:
    result = CliRunner().invoke(app, ["plan", "--rate", "2", "--error-rate", "0.03"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ramp plan: 2 requests/s, shadow mode" in out
    for text in ("latency_p99 n", "error_rate n", "quality n", "binding", "75 %", "100 %"):
        assert text in out
    assert plan_ramp(POLICY, Assumptions(2.0, error_rate=0.03)).total_ms == 2_580_000
    assert "total ramp time 43m00s" in out
    split = CliRunner().invoke(app, ["plan", "--rate", "2", "--mode", "split"])
    assert split.exit_code == 0 and "split" in split.output


def test_cli_rejects_an_unknown_mode() -> None:
    result = CliRunner().invoke(app, ["plan", "--rate", "2", "--mode", "canary"])
    assert result.exit_code == 2
