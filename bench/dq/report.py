"""Runs into table rows, the table and the diagnosis, and the headline figures."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .runner import Outcome
from .scenarios import Scenario


def _median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if xs else math.nan


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


@dataclass(slots=True)
class Row:
    scenario: Scenario
    method: str
    runs: int
    rate: float  # false-rollback rate (nothing to catch) or detection rate
    ci: tuple[float, float]
    samples: float  # median samples to the decision (a miss counts as never)
    minutes: float  # median event time to the decision
    horizon_samples: float  # median requests within the fixed horizon
    completed: float = 0.0  # share of runs that reached 100 % within the horizon
    reached: float = 0.0  # median highest traffic share reached (percent)
    fired: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    example: str = ""  # the target metric's last reason in a run without a rollback
    leaked: float = 0.0  # share of detections after at least one promotion


def summarize(scenarios: Sequence[Scenario], results: dict[str, list[Outcome]]) -> list[Row]:
    """One row per scenario and method. Without a target the decision is reaching 100 %
    without a rollback; with one, the first rollback. A run without the decision by the
    horizon counts as infinitely late, so a median is finite only if most runs decide."""
    rows = []
    for sc in scenarios:
        per_run = results[sc.key]
        horizon = _median([h for h, _ in per_run])
        for method in per_run[0][1]:
            rs = [r[method] for _, r in per_run]
            hits = [r for r in rs if r.rolled_back]
            if sc.target is None:
                done = [r.complete_ms is not None and not r.rolled_back for r in rs]
                samples = [
                    r.complete_samples if d else math.inf for r, d in zip(rs, done, strict=True)
                ]
                minutes = [
                    r.complete_ms / 60_000 if d else math.inf for r, d in zip(rs, done, strict=True)
                ]
            else:
                samples = [r.samples if r.rolled_back else math.inf for r in rs]
                minutes = [r.t_ms / 60_000 if r.rolled_back else math.inf for r in rs]
            row = Row(
                sc, method, len(rs), len(hits) / len(rs), _wilson(len(hits), len(rs)),
                _median(samples), _median(minutes), horizon,
                completed=sum(r.complete_ms is not None for r in rs) / len(rs),
                reached=_median([r.reached for r in rs]),
            )  # fmt: skip
            for r in hits:
                row.fired.update(r.metrics)
            for r in rs:
                if not r.rolled_back and r.target_verdict:
                    row.verdicts[r.target_verdict] += 1
                    row.example = row.example or r.target_reason
            row.leaked = sum(r.promoted_first > 0 for r in hits) / len(hits) if hits else 0.0
            rows.append(row)
    return rows


def print_table(rows: Sequence[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("scenario", "method", "runs", "false rollback / detection", "95 % CI",
                "median samples", "median time", "reach 100 %", "what fired"):  # fmt: skip
        table.add_column(
            col, justify="left" if col in ("scenario", "method", "what fired") else "right"
        )
    last = None
    for r in rows:
        label = r.scenario.label + (f" ({r.scenario.note})" if r.scenario.note else "")
        kind = (
            "false rb" if r.scenario.target is None
            else "rollback" if r.scenario.within_policy else "detect"
        )  # fmt: skip
        table.add_row(
            label if r.scenario.key != last else "",
            r.method,
            str(r.runs),
            f"{kind} {r.rate:.1%}",
            f"[{r.ci[0]:.1%}, {r.ci[1]:.1%}]",
            f"{r.samples:,.0f}" if math.isfinite(r.samples) else "> horizon",
            f"{r.minutes:.1f} min" if math.isfinite(r.minutes) else "> horizon",
            f"{r.completed:.0%}",
            ", ".join(f"{k} {v}" for k, v in r.fired.most_common(3)),
            end_section=False,
        )
        last = r.scenario.key
    Console(width=220).print(table)


def print_diagnosis(rows: Sequence[Row]) -> None:
    """Per scenario, for shadowlens: what fired, and where it did not, what the judge said."""
    print("\nshadowlens, per metric: what fired (all-segments '*' or a segment), and in runs")
    print("without a rollback, the last all-segments verdicts of latency/errors/quality:")
    for r in rows:
        if r.method != "shadowlens":
            continue
        fired = ", ".join(f"{k}: {v}" for k, v in r.fired.most_common()) or "nothing"
        print(f"  {r.scenario.label:<36} fired: {fired}")
        if r.scenario.target is not None and r.leaked:
            print(f"  {'':<36} {r.leaked:.0%} of detections came after a promotion")
        for verdicts, count in r.verdicts.most_common(3):
            print(f"  {'':<36} no rollback, last verdicts {verdicts}: {count} runs")
        if r.example and not r.scenario.within_policy and r.scenario.target is not None:
            print(f"  {'':<36} e.g. {r.example}")


@dataclass(frozen=True, slots=True)
class Headline:
    aa_false_rollback: float
    aa_reach_full: float
    detection: float  # the lowest over the headline regressions
    wrong_promotion: float  # the highest share reaching 100 % over violating scenarios
    samples_vs_fixed_horizon: float  # the largest median samples / fixed-horizon samples

    def fields(self, prefix: str = "") -> str:
        return " ".join(
            f"{prefix}{name}={getattr(self, name):.3f}"
            for name in ("aa_false_rollback", "aa_reach_full", "detection", "wrong_promotion",
                         "samples_vs_fixed_horizon")
        )  # fmt: skip


def headline(rows: Sequence[Row], method: str) -> Headline:
    """The RESULT figures of one method."""
    mine = [r for r in rows if r.method == method]
    aa = next((r for r in mine if r.scenario.key == "aa"), None)
    detect = [r for r in mine if r.scenario.target is not None and r.scenario.headline]
    violating = [r for r in mine if r.scenario.violates]
    return Headline(
        aa.rate if aa else math.nan,
        aa.completed if aa else math.nan,
        min((r.rate for r in detect), default=math.nan),
        max((r.completed for r in violating), default=math.nan),
        max((r.samples / r.horizon_samples for r in detect), default=math.nan),
    )
