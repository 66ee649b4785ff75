"""Where the CLI writes: results on stdout, one-line errors on stderr, no password in either."""

from __future__ import annotations

import re

import typer
from rich.console import Console
from rich.markup import escape
from shadowlens.cli.exit_codes import ExitCode

WIDTH = None if Console().is_terminal else 160  # no terminal (CI, pipes): do not wrap at 80
console = Console(width=WIDTH)
err = Console(stderr=True, width=WIDTH)

_USERINFO = re.compile(r"(://[^\s:/@'\"]*:)[^\s@'\"]+@")


def scrub(message: str) -> str:
    """Mask the password of any ``scheme://user:password@`` a library put into a message."""
    return _USERINFO.sub(r"\1***@", message)


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    """Print the error line; the caller raises the returned Exit, so the flow stays visible."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)
