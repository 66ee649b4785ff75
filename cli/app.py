"""The `shadowlens` command line: builds the Typer app and registers the commands.

The commands live by concern: replay_commands.py (replay, publish, with the traffic options
they share in traffic_options.py), plan_command.py, report_command.py, worker_command.py,
db_commands.py and control_commands.py (the `control` and `keys` groups). The options
several commands share are in options.py; what the CLI prints and how it fails in output.py;
uncaught errors become exit codes in errors.py (the codes in exit_codes.py); the config file
(``--config``) is read by config_file.py; progress bars are in progress.py.
"""

from __future__ import annotations

from typing import Annotated

import typer
from shadowlens.cli.control_commands import control, keys
from shadowlens.cli.db_commands import db_migrate, db_query
from shadowlens.cli.errors import DEBUG_KEY, ExitCodeGroup
from shadowlens.cli.exit_codes import epilog
from shadowlens.cli.plan_command import plan
from shadowlens.cli.replay_commands import publish, replay
from shadowlens.cli.report_command import report
from shadowlens.cli.worker_command import worker

app = typer.Typer(
    cls=ExitCodeGroup,
    epilog=epilog(),
    no_args_is_help=True,
    add_completion=False,
)
db = typer.Typer(help="The ClickHouse store: migrations and queries.", no_args_is_help=True)
app.add_typer(db, name="db")
app.add_typer(control, name="control")
app.add_typer(keys, name="keys")


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")
    ] = False,
) -> None:
    """Shadow and canary analysis for LLM migrations: pair, compare, judge, ramp."""
    ctx.meta[DEBUG_KEY] = debug


db.command("migrate")(db_migrate)
db.command("query")(db_query)
for command in (replay, plan, report, worker, publish):  # the order of `shadowlens --help`
    app.command()(command)
