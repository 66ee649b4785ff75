"""`shadowlens db migrate` and `shadowlens db query`: the ClickHouse store by hand."""

from __future__ import annotations

from typing import Annotated

import typer
from shadowlens.cli.options import ConfigOption, DsnOption, ProgressOption, open_store
from shadowlens.cli.output import console, fail
from shadowlens.store.dsn import DEFAULT_DSN
from shadowlens.streams.config import redact_dsn


def db_migrate(
    dsn: DsnOption = DEFAULT_DSN, progress: ProgressOption = True, config: ConfigOption = None
) -> None:
    """Create the database and apply pending DDL migrations (idempotent)."""
    from shadowlens.cli.progress import spinner

    with spinner(f"migrating {redact_dsn(dsn)}", enabled=progress), open_store(dsn) as store:
        applied = store.migrate()
    console.print(f"applied: {', '.join(applied)}" if applied else "up to date")


def db_query(
    sql: Annotated[str, typer.Argument(help="SQL; tables: pairs, windows, decisions, ...")],
    dsn: DsnOption = DEFAULT_DSN,
    config: ConfigOption = None,
) -> None:
    """Run one read-only query against the store and print the rows as a table."""
    from rich.table import Table
    from rich.text import Text

    with open_store(dsn, readonly=True) as store:
        try:
            result = store.query(sql)
        except Exception as exc:  # the server's own message is the most useful one
            raise fail(f"query failed: {exc}") from None
    table = Table(*result.column_names)
    for row in result.result_rows:
        table.add_row(*(Text(str(v)) for v in row))  # values are data, never markup
    console.print(table)
