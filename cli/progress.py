"""Progress bars of the long CLI commands: on stderr, only where a person watches.

A bar is drawn only when both stdout and stderr are terminals, so CI logs, pipes and
redirected output stay free of control codes; `--no-progress` turns it off anywhere.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


def interactive() -> bool:
    """Whether stdout and stderr are both terminals (rich honours FORCE_TERMINAL too)."""
    return Console().is_terminal and Console(stderr=True).is_terminal


def progress_bar(label: str, unit: str, *, enabled: bool = True) -> Progress:
    """``label [bar] done/total unit elapsed``; transient: it vanishes when the work ends."""
    return Progress(
        SpinnerColumn(),
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not (enabled and interactive()),
        transient=True,
    )


def spinner(label: str, *, enabled: bool = True) -> AbstractContextManager[object]:
    """A spinner for work of unknown length (the report's queries)."""
    if not (enabled and interactive()):
        return nullcontext()
    return Console(stderr=True).status(label)
