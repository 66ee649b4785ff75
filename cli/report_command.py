"""`shadowlens report`: the HTML migration report of one experiment, and its verdict as a
promotion gate (exit codes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.cli.options import (
    ConfigOption,
    DsnOption,
    PolicyOption,
    ProgressOption,
    open_store,
    policy_from,
)
from shadowlens.cli.output import console, fail
from shadowlens.store.dsn import DEFAULT_DSN
from shadowlens.streams.config import redact_dsn


def report(
    experiment: Annotated[str, typer.Option("--experiment", help="Experiment to report on.")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="HTML file to write.")] = (
        Path("shadowlens.report.html")
    ),
    monthly_requests: Annotated[
        float | None,
        typer.Option(min=0.0, help="Requests per month for the projection (default: observed)."),
    ] = None,
    migration_cost_usd: Annotated[
        float, typer.Option(min=0.0, help="One-off migration cost, for the payback period.")
    ] = 0.0,
    dsn: DsnOption = DEFAULT_DSN,
    policy_path: PolicyOption = None,
    fail_on_rollback: Annotated[
        bool,
        typer.Option(
            help=f"Exit {int(ExitCode.ROLLBACK)} if the verdict is NO-GO (a rollback, or a "
            "failed check that has not passed since)."
        ),
    ] = False,
    require_go: Annotated[
        bool,
        typer.Option(
            help=f"Exit {int(ExitCode.ROLLBACK)} on NO-GO and {int(ExitCode.NOT_READY)} on NOT "
            "YET / NO DATA: only GO passes (a promotion gate)."
        ),
    ] = False,
    progress: ProgressOption = True,
    config: ConfigOption = None,
) -> None:
    """Write a self-contained HTML migration report of one experiment from ClickHouse."""
    from shadowlens.cli.progress import spinner
    from shadowlens.report.model import UnknownExperimentError
    from shadowlens.report.write import write_report

    policy = policy_from(policy_path)
    with (
        spinner(f"report: querying {redact_dsn(dsn)}", enabled=progress),
        open_store(dsn, readonly=True) as store,
    ):
        try:
            data = write_report(
                store,
                experiment,
                policy,
                out,
                monthly_requests=monthly_requests,
                migration_cost_usd=migration_cost_usd,
            )
        except UnknownExperimentError as exc:
            raise fail(str(exc)) from None
    console.print(
        f"{out}: {data.verdict.status} - {data.verdict.headline} "
        f"({data.overview.paired:,} pairs, {len(data.decisions)} decisions)",
        markup=False,
        highlight=False,
    )
    status = data.verdict.status
    if (fail_on_rollback or require_go) and status == "NO-GO":
        raise typer.Exit(ExitCode.ROLLBACK)
    if require_go and status != "GO":
        raise typer.Exit(ExitCode.NOT_READY)
