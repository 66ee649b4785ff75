"""`shadowlens plan`: how long each ramp stage must hold, before any traffic is sent."""

from __future__ import annotations

from typing import Annotated

import typer
from shadowlens.cli.options import ConfigOption, PolicyOption, policy_from
from shadowlens.cli.output import console, fail


def _duration(ms: float) -> str:
    """1h05m or 4m30s: a hold time people read at a glance."""
    s = round(ms / 1000)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def plan(
    rate: Annotated[float, typer.Option(min=0.001, help="Requests per second (all traffic).")],
    mode: Annotated[
        str, typer.Option(help="shadow: every request is paired; split: one arm per request.")
    ] = "shadow",
    latency_sd: Annotated[
        float,
        typer.Option(min=1e-6, help="sd of per-request log latency ratio (split: log latency)."),
    ] = 0.3,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Error rate of a healthy arm.")
    ] = 0.01,
    quality_reference: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Mean agreement of a healthy candidate.")
    ] = 0.68,
    quality_sd: Annotated[float, typer.Option(min=1e-6, max=0.5, help="Its sd.")] = 0.125,
    cost_cv: Annotated[
        float | None, typer.Option(min=1e-6, help="CV of per-request cost; omit to skip cost.")
    ] = None,
    policy_path: PolicyOption = None,
    config: ConfigOption = None,
) -> None:
    """How long each ramp stage must hold for the judge's bounds to reach the policy margins."""
    from rich.table import Table
    from shadowlens.judge.plan import Assumptions, Mode, plan_ramp

    if mode not in {m.value for m in Mode}:
        raise fail(f"--mode must be shadow or split, got {mode!r}")
    policy = policy_from(policy_path)
    try:
        assumptions = Assumptions(
            rate, Mode(mode), latency_sd, error_rate, quality_reference, quality_sd, cost_cv
        )
        result = plan_ramp(policy, assumptions)
    except ValueError as exc:
        raise fail(str(exc)) from None
    metrics = [n.metric for n in result.needs]
    table = Table(title=f"ramp plan: {rate:g} requests/s, {mode} mode, alpha {result.alpha:.2e}")
    table.add_column("stage", justify="right")
    table.add_column("pairs/s", justify="right")
    for need in result.needs:
        table.add_column(f"{need.metric} n", justify="right")
    table.add_column("binding")
    table.add_column("hold", justify="right")
    table.add_column("cumulative", justify="right")
    elapsed = 0
    for stage in result.stages:
        elapsed += stage.hold_ms
        cells = [
            "-" if stage.final or m not in stage.seconds
            else f"{next(n.n for n in result.needs if n.metric == m)} ({stage.seconds[m]:.0f} s)"
            for m in metrics
        ]  # fmt: skip
        table.add_row(
            f"{stage.percent:g} %" + ("" if stage.shadow or stage.final else " split"),
            f"{stage.pairs_per_s:.2f}",
            *cells,
            "ramp complete" if stage.final else stage.binding,
            "-" if stage.final else _duration(stage.hold_ms),
            _duration(elapsed),
        )
    console.print(table)
    for need in result.needs:
        console.print(
            f"  {need.metric}: n={need.n} to reach +-{need.effect:.4g} (sd {need.sd:.3g}, "
            f"alpha {need.alpha:.2e}, {need.method}); {need.note}",
            highlight=False,
        )
    console.print(
        f"total ramp time {_duration(result.total_ms)} (event time, every stage passing at "
        f"first sight; min hold {_duration(policy.ramp.min_hold_ms)}, min pairs "
        f"{policy.ramp.min_pairs}, windows of {policy.windows.size_ms // 1000} s)",
        highlight=False,
    )
