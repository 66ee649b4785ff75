"""What each benchmark row replays (the change to the candidate, the metric that should
catch it) and how every run of a table is drawn."""

from __future__ import annotations

from dataclasses import dataclass

from shadowlens.judge.verdicts import Metric

HORIZON_WINDOWS = 50  # the horizon of every method, in windows: Kayenta's usual minimum


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the table: a change to the candidate and the metric that should catch it."""

    key: str
    label: str
    latency_factor: float = 1.0
    error_increase: float = 0.0
    quality_drop: float = 0.0  # relative drop of the mean similarity to the primary
    target: Metric | None = None  # None: nothing should fire
    headline: bool = False  # counts in the RESULT line
    violates: bool = False  # the candidate breaks the policy from its first request
    note: str = ""
    within_policy: bool = False  # a real change, but inside the policy: no rollback wanted
    base_error: float | None = None  # both arms' base error rate; None: the run's default
    task: str = "generation"  # or "classification": label agreement, no text
    label_agreement: float = 1.0  # classification: the share of labels that agree
    replica: bool = True  # a replica arm on the run's replica share of requests
    reference: bool = False  # the policy's [quality.reference] generation is set
    bursty: bool = False  # the change hits one segment only, whose traffic comes in bursts
    identical: bool = False  # the candidate answers as the primary; latency within 5 %


SCENARIOS = (
    Scenario("aa", "A/A (drawn as the replica is)", headline=True),
    Scenario("same", "identical candidate", identical=True, note="time to 100 %"),
    Scenario("lat10", "latency +10 %", 1.10, target=Metric.LATENCY_P99, note="within policy",
             within_policy=True),
    Scenario("lat20", "latency +20 %", 1.20, target=Metric.LATENCY_P99, note="at the limit"),
    Scenario("lat30", "latency +30 %", 1.30, target=Metric.LATENCY_P99, headline=True,
             violates=True),
    Scenario("lat50", "latency +50 %", 1.50, target=Metric.LATENCY_P99, violates=True),
    Scenario("err1", "errors 4.5 % -> 5.5 %", error_increase=0.01, target=Metric.ERROR_RATE,
             note="within policy: +1 pp", within_policy=True, base_error=0.045),
    Scenario("err3", "errors +3 pp", error_increase=0.03, target=Metric.ERROR_RATE,
             headline=True, violates=True),
    Scenario("err5", "errors +5 pp", error_increase=0.05, target=Metric.ERROR_RATE,
             violates=True),
    Scenario("q5", "quality -5 %", quality_drop=0.05, target=Metric.QUALITY,
             note="within policy", within_policy=True),
    Scenario("q10", "quality -10 %", quality_drop=0.10, target=Metric.QUALITY,
             note="at the limit"),
    Scenario("q15", "quality -15 %", quality_drop=0.15, target=Metric.QUALITY, headline=True,
             violates=True),
    Scenario("q25", "quality -25 %", quality_drop=0.25, target=Metric.QUALITY, violates=True),
    Scenario("noref15", "quality -15 %, no replica", quality_drop=0.15, target=Metric.QUALITY,
             headline=True, violates=True, replica=False, reference=True,
             note="policy reference"),
    Scenario("cls5", "classifier: 5 % of labels differ", target=Metric.QUALITY,
             task="classification", label_agreement=0.95, replica=False,
             note="within policy", within_policy=True),
    Scenario("cls20", "classifier: 20 % of labels differ", target=Metric.QUALITY,
             task="classification", label_agreement=0.80, replica=False, headline=True,
             violates=True),
    Scenario("burst", "latency +60 % in a bursty segment", 1.60, target=Metric.LATENCY_P99,
             headline=True, violates=True, bursty=True, note="2 min in 10"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Config:
    """How every run of a table is drawn, and which judge (`variant`) decides."""

    runs: int = 200
    aa_runs: int = 400  # A/A: a false-rollback rate of 0 then bounds the rate at 1 %
    horizon_windows: int = HORIZON_WINDOWS
    replica_share: float = 0.2
    base_error_rate: float = 0.03
    length_sd: float = 0.2
    seed: int = 0
    variant: str = "current"  # which judge: as it is, or a prototype (dq.variants)

    def runs_of(self, scenario: Scenario) -> int:
        return max(self.runs, self.aa_runs) if scenario.key == "aa" else self.runs
