"""The exit codes of the `shadowlens` command, in one place.

A CI job or an init container branches on these, so each failure class has its own code and
the codes never change meaning. 2 is Click's usage error (a bad flag or argument value).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # unexpected: a bug or an environment problem; one line, --debug for more
    USAGE = 2  # a bad flag, argument or value on the command line (Click's own code)
    CONFIG = 3  # bad configuration: config file, SHADOWLENS_* variable, policy TOML
    UNAVAILABLE = 4  # ClickHouse or Kafka cannot be reached (or the chdb directory is busy)
    ROLLBACK = 5  # --fail-on-rollback: the judge rolled the migration back (NO-GO)
    NOT_READY = 6  # report --require-go: nothing failed, but the verdict is not GO yet
    REFUSED = 7  # control: the worker refused the command (the reason is printed)


MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "unexpected error (one line; rerun with --debug for the traceback)",
    ExitCode.USAGE: "usage error: a bad option, argument or value",
    ExitCode.CONFIG: "bad configuration: config file, SHADOWLENS_* variable or policy TOML",
    ExitCode.UNAVAILABLE: "ClickHouse or Kafka unreachable (or the chdb directory is in use)",
    ExitCode.ROLLBACK: "--fail-on-rollback (or --require-go) and the judge rolled back / NO-GO",
    ExitCode.NOT_READY: "report --require-go and the verdict is NOT YET or NO DATA",
    ExitCode.REFUSED: "control: the worker refused the command (stale epoch, bad key, ...)",
}


def epilog() -> str:
    """The exit-code table shown at the end of `shadowlens --help`."""
    return "Exit codes: " + "; ".join(f"{int(c)} {MEANINGS[c]}" for c in ExitCode) + "."
