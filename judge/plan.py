"""How long each ramp stage must hold before the judge can settle it: pure planning.

The judge promotes a stage only when its always-valid bounds show non-inferiority, and
rolls back only when they show a regression. `plan_ramp` turns the traffic rate and the
policy margins into the number of observations each metric needs for that, using the
same bounds and the same per-metric alpha as the judge (`shadowlens.judge.decide.metric_alpha`):

- latency: the `GaussianMixtureCS` on the per-request log latency ratio of the slowest
  fifth of pairs (the paired p99 gate), rho tuned at a fifth of `judge.optimal_n`,
  half-width down to log(1 + max_relative_increase): five times that many pairs;
- error rate: the `BoundedMeanCS` at alpha/2, either route that lets the judge pass:
  candidate rate below `max_absolute`, or paired increase below `max_increase`;
- refusal rate: the same two routes, over the pairs where both arms answered;
- quality: the `GaussianMixtureCS` at alpha/2, half-width down to max_relative_drop x
  reference.

At that half-width a candidate with no regression passes, and one whose regression is
twice the margin fails. Errors, refusals and quality are carried across promotions
(`shadowlens.judge.evidence_state`), so only the first stage waits for them; latency is
judged per stage. A stage then holds for the longest of: those observations at the
stage's rate, `ramp.min_pairs` pairs and `ramp.min_hold_ms`, rounded up to whole windows
(the judge decides when a window closes).

Rates: in shadow mode every request is paired, whatever the stage's traffic share. In
split mode each request goes to one arm, so a comparison between arms is unpaired: with
candidate share s its effective sample size grows at rate x s x (1 - s), and the
candidate's own error rate at rate x s. Stage 0 % is the shadow stage in both modes, and
the last stage is the end of the ramp: nothing to hold. Text quality and refusals need both
answers of a request, so split stages have no such evidence (the judge says NODATA there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from shadowlens.judge.decide import metric_alpha
from shadowlens.judge.evidence_state import TAIL_PARTS
from shadowlens.judge.policy import Policy
from shadowlens.judge.stats_planning import required_samples, required_samples_bounded
from shadowlens.judge.verdicts import Metric


class Mode(StrEnum):
    SHADOW = "shadow"  # both arms see every request: paired comparisons at the full rate
    SPLIT = "split"  # each request is served by one arm: unpaired, scaled by the share


PAIRED_ONLY = frozenset({Metric.QUALITY, Metric.REFUSAL_RATE})  # need both answers
CARRIED = frozenset({Metric.ERROR_RATE, Metric.QUALITY, Metric.REFUSAL_RATE})  # across stages


class Rate(StrEnum):
    """Which observations a bound counts, so which share of traffic feeds it."""

    PAIRED = "paired"  # a between-arm comparison (paired in shadow, two-sample in split)
    CANDIDATE = "candidate"  # the candidate's own calls


@dataclass(frozen=True, slots=True)
class Assumptions:
    """What the plan must assume about the traffic; the defaults are the shipped sample's.

    `latency_log_sd`: sd of the per-request log(candidate / primary) latency in shadow
    mode; in split mode pass the sd of the per-request log latency instead (unpaired).
    `error_rate`: the error rate of both arms when nothing is wrong. `quality_reference`
    and `quality_sd`: mean and sd of a healthy candidate's agreement with the primary
    (lexical similarity of gpt4_0613 to its concise sibling on the sample: 0.68, 0.125).
    `cost_cv`: coefficient of variation of the per-request candidate cost; None leaves
    cost out of the plan. `refusal_rate`: the refusal rate of both arms when nothing is
    wrong (the sample's answers: 0.4 % and 1.1 %).
    """

    rate_per_s: float
    mode: Mode = Mode.SHADOW
    latency_log_sd: float = 0.3
    error_rate: float = 0.01
    quality_reference: float = 0.68
    quality_sd: float = 0.125
    cost_cv: float | None = None
    refusal_rate: float = 0.01

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be positive, got {self.rate_per_s}")
        if not self.latency_log_sd > 0 or not self.quality_sd > 0:
            raise ValueError("latency_log_sd and quality_sd must be positive")
        for name in ("error_rate", "refusal_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.quality_reference <= 1.0:
            raise ValueError(f"quality_reference must be in (0, 1], got {self.quality_reference}")
        if self.cost_cv is not None and not self.cost_cv > 0:
            raise ValueError(f"cost_cv must be positive, got {self.cost_cv}")


@dataclass(frozen=True, slots=True)
class MetricNeed:
    """Observations one metric's bound needs before the judge can pass or fail it."""

    metric: Metric
    n: int
    rate: Rate
    effect: float  # the half-width the bound must reach, on the metric's own scale
    sd: float
    alpha: float  # the alpha the judge reads this bound at
    method: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class StagePlan:
    percent: float
    shadow: bool  # paired at the full rate (shadow mode, or the 0 % stage)
    seconds: dict[Metric, float]  # event time each metric needs at this stage's rates
    pairs_per_s: float  # rate of between-arm observations
    binding: str  # the metric, "min_pairs" or "min_hold" that sets the hold
    hold_ms: int  # rounded up to whole windows; 0 for the last stage
    final: bool = False


@dataclass(frozen=True, slots=True)
class RampPlan:
    assumptions: Assumptions
    alpha: float
    needs: tuple[MetricNeed, ...]
    stages: tuple[StagePlan, ...]

    @property
    def total_ms(self) -> int:
        """Event time from the shadow stage to 100 % when every stage passes at first sight."""
        return sum(s.hold_ms for s in self.stages)


def _bernoulli_sd(p: float) -> float:
    return math.sqrt(max(p * (1.0 - p), 1e-6))  # a floor: a rate of 0 still needs a bound


def _paired_rate_need(
    metric: Metric,
    p: float,
    max_absolute: float,
    max_increase: float,
    own: Rate,
    alpha: float,
    floor: int,
) -> MetricNeed:
    """`shadowlens.judge.classify.classify_paired_rate` passes on either route: the candidate's rate
    shown below `max_absolute` (observations at rate `own`), or the paired increase shown
    below `max_increase`; whichever needs fewer observations."""
    routes: list[MetricNeed] = []
    if p < max_absolute:
        plan = required_samples_bounded(max_absolute - p, _bernoulli_sd(p), alpha / 2)
        routes.append(
            MetricNeed(
                metric, max(plan.n, floor), own, max_absolute - p, _bernoulli_sd(p), alpha / 2,
                plan.method, note=f"candidate rate {p:.1%} shown below {max_absolute:.0%}",
            )
        )  # fmt: skip
    diff_sd = math.sqrt(max(2.0 * p * (1.0 - p), 1e-6))  # independent outcomes in both arms
    plan = required_samples_bounded(max_increase, diff_sd, alpha / 2, lower=-1.0, upper=1.0)
    routes.append(
        MetricNeed(
            metric, max(plan.n, floor), Rate.PAIRED, max_increase, diff_sd, alpha / 2,
            plan.method, note=f"increase shown below +{max_increase:.0%}",
        )
    )  # fmt: skip
    return min(routes, key=lambda r: r.n)


def metric_needs(policy: Policy, a: Assumptions) -> tuple[MetricNeed, ...]:
    """Per-metric observations to reach the policy margins, at the judge's own alpha."""
    alpha, floor = metric_alpha(policy), policy.judge.min_pairs
    needs: list[MetricNeed] = []

    limit = 1.0 + policy.latency.max_relative_increase
    lat = required_samples(
        math.log(limit), a.latency_log_sd, alpha, optimal_n=policy.judge.optimal_n / TAIL_PARTS
    )
    needs.append(
        MetricNeed(
            Metric.LATENCY_P99, max(max(lat.n, 30) * TAIL_PARTS, floor), Rate.PAIRED,
            math.log(limit), a.latency_log_sd, alpha, lat.method,
            note=f"{max(lat.n, 30)} pairs of the slowest fifth; also needs the stage's "
            f"p{policy.latency.quantile * 100:g} ratio <= {limit:.2f}x",
        )
    )  # fmt: skip

    pe, pr = policy.errors, policy.refusals
    needs.append(
        _paired_rate_need(
            Metric.ERROR_RATE, a.error_rate, pe.max_absolute, pe.max_increase, Rate.CANDIDATE,
            alpha, floor,
        )
    )  # fmt: skip
    needs.append(
        _paired_rate_need(
            Metric.REFUSAL_RATE, a.refusal_rate, pr.max_absolute, pr.max_increase, Rate.PAIRED,
            alpha, floor,
        )
    )  # fmt: skip

    effect = policy.quality.max_relative_drop * a.quality_reference
    plan = required_samples(effect, a.quality_sd, alpha / 2, optimal_n=policy.judge.optimal_n)
    needs.append(
        MetricNeed(
            Metric.QUALITY, max(plan.n, floor), Rate.PAIRED, effect, a.quality_sd, alpha / 2,
            plan.method,
            note="against the replica arm or the policy's reference for the task; free "
            "text with neither is not certified",
        )
    )  # fmt: skip

    if a.cost_cv is not None:
        rel = policy.cost.max_relative_increase
        plan = required_samples(rel, a.cost_cv, alpha, optimal_n=policy.judge.optimal_n)
        needs.append(
            MetricNeed(
                Metric.COST, max(plan.n, floor), Rate.CANDIDATE, rel, a.cost_cv, alpha,
                plan.method, note="relative to the forecast",
            )
        )  # fmt: skip
    return tuple(needs)


def _rates(a: Assumptions, share: float, shadow: bool) -> dict[Rate, float]:
    if shadow:
        return {Rate.PAIRED: a.rate_per_s, Rate.CANDIDATE: a.rate_per_s}
    return {
        Rate.PAIRED: a.rate_per_s * share * (1.0 - share),
        Rate.CANDIDATE: a.rate_per_s * share,
    }


def plan_ramp(policy: Policy, a: Assumptions) -> RampPlan:
    """Hold time of every ramp stage, and which requirement sets it."""
    needs = metric_needs(policy, a)
    rp, window = policy.ramp, policy.windows.size_ms
    stages: list[StagePlan] = []
    last = len(rp.stages_percent) - 1
    for i, percent in enumerate(rp.stages_percent):
        shadow = a.mode == Mode.SHADOW or i == 0
        rates = _rates(a, percent / 100.0, shadow)
        if i == last:
            stages.append(StagePlan(percent, shadow, {}, rates[Rate.PAIRED], "-", 0, True))
            continue
        seconds: dict[Metric, float] = {}
        for need in needs:
            if need.metric in PAIRED_ONLY and not shadow:
                continue  # no text pairs in split traffic: the judge has NODATA, no block
            if need.metric in CARRIED and i > 0:
                continue  # carried from the stages before: shown once, in the first
            seconds[need.metric] = need.n / rates[need.rate]
        candidates = {
            **{str(m): s for m, s in seconds.items()},
            "min_pairs": rp.min_pairs / rates[Rate.PAIRED],
            "min_hold": rp.min_hold_ms / 1000.0,
        }
        binding = max(candidates, key=lambda k: candidates[k])
        hold = math.ceil(candidates[binding] * 1000.0 / window - 1e-9) * window
        stages.append(StagePlan(percent, shadow, seconds, rates[Rate.PAIRED], binding, hold))
    return RampPlan(a, metric_alpha(policy), needs, tuple(stages))
