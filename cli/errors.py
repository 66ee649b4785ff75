"""What a command raised and did not handle: one line on stderr and the exit code of its
class (cli/exit_codes.py), so a CI job can branch on it; --debug shows the traceback."""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.markup import escape
from shadowlens.cli.config_file import ConfigFile, ConfigFileError
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.cli.options import CONFIG_KEY
from shadowlens.cli.output import err, scrub
from shadowlens.judge.policy import PolicyError
from shadowlens.store.client import MigrationError, StoreError
from shadowlens.streams.config import SettingsError
from typer.core import TyperGroup

DEBUG_KEY = "shadowlens.debug"


def classify(exc: Exception) -> tuple[ExitCode, str]:
    """The exit code and the one-line message of an exception no command handled."""
    from aiokafka.errors import KafkaConnectionError
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, ConfigFileError | SettingsError | PolicyError):
        return ExitCode.CONFIG, str(exc)
    if isinstance(exc, MigrationError):
        return ExitCode.FAILURE, str(exc)
    if isinstance(exc, StoreError):
        return ExitCode.UNAVAILABLE, str(exc)
    if isinstance(exc, OperationalError):
        return ExitCode.UNAVAILABLE, f"ClickHouse unreachable: {exc}"
    if isinstance(exc, KafkaConnectionError):
        return ExitCode.UNAVAILABLE, f"Kafka unreachable: {exc}"
    return ExitCode.FAILURE, f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def _debug(ctx: typer.Context) -> bool:
    config: ConfigFile | None = ctx.meta.get(CONFIG_KEY)
    level = os.environ.get("SHADOWLENS_LOG_LEVEL", "").strip() or (
        config.worker.get("log_level", "") if config else ""
    )
    return bool(ctx.meta.get(DEBUG_KEY)) or str(level).lower() == "debug"


class ExitCodeGroup(TyperGroup):
    """Turns what a command raised into one line on stderr and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            code, message = classify(exc)
            if code == ExitCode.FAILURE and _debug(ctx):
                raise
            err.print(f"[red]error:[/] {escape(scrub(message))}", soft_wrap=True)
            raise typer.Exit(code) from None
