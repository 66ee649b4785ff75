"""What each benchmark row replays (the regression, the metric it targets) and how."""

from __future__ import annotations

from dataclasses import dataclass

from shadowlens.judge.verdicts import Metric

KAYENTA_POINTS = 50  # the horizon of every method, in windows: Kayenta's usual minimum


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the table: a change to the candidate and the metric that should catch it."""

    key: str
    label: str
    latency_factor: float = 1.0
    error_increase: float = 0.0
    quality_drop: float = 0.0  # relative drop of the mean similarity to the primary
    target: Metric | None = None  # None: A/A, nothing should fire
    headline: bool = False  # counts in the RESULT line
    note: str = ""
    within_policy: bool = False  # a real change, but inside the policy: no rollback wanted
    base_error: float | None = None  # both arms' base error rate; None: the run's default


SCENARIOS = (
    Scenario("aa", "A/A (sibling, same latency model)", headline=True),
    Scenario(
        "lat10",
        "latency +10 %",
        1.10,
        target=Metric.LATENCY_P99,
        note="within policy",
        within_policy=True,
    ),
    Scenario("lat20", "latency +20 %", 1.20, target=Metric.LATENCY_P99, note="at the limit"),
    Scenario("lat30", "latency +30 %", 1.30, target=Metric.LATENCY_P99, headline=True),
    Scenario("lat50", "latency +50 %", 1.50, target=Metric.LATENCY_P99),
    Scenario(
        "err1",
        "errors 4.5 % -> 5.5 %",
        error_increase=0.01,
        target=Metric.ERROR_RATE,
        note="within policy: +1 pp",
        within_policy=True,
        base_error=0.045,
    ),
    Scenario("err3", "errors +3 pp", error_increase=0.03, target=Metric.ERROR_RATE, headline=True),
    Scenario("err5", "errors +5 pp", error_increase=0.05, target=Metric.ERROR_RATE),
    Scenario(
        "q5",
        "quality -5 %",
        quality_drop=0.05,
        target=Metric.QUALITY,
        note="within policy",
        within_policy=True,
    ),
    Scenario("q10", "quality -10 %", quality_drop=0.10, target=Metric.QUALITY, note="at the limit"),
    Scenario("q15", "quality -15 %", quality_drop=0.15, target=Metric.QUALITY, headline=True),
    Scenario("q25", "quality -25 %", quality_drop=0.25, target=Metric.QUALITY),
)


@dataclass(frozen=True, slots=True)
class Config:
    """How every run of a table is drawn, and which judge (`variant`) decides."""

    runs: int = 200
    horizon_windows: int = KAYENTA_POINTS
    replica_share: float = 0.2
    base_error_rate: float = 0.03
    length_sd: float = 0.2
    seed: int = 0
    variant: str = "current"  # which judge: as it is, or a prototype (dq.variants)
