"""Replay files: one payload per line, as `--export` writes and `--events` reads them.

A recorded or exported replay is re-run, published or shared as a file; the bytes must
round-trip unchanged, bad lines included, so the pipeline can dead-letter them itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from shadowlens.schemas.events import Event


def load_jsonl_events(path: str | Path) -> Iterator[tuple[bytes, str]]:
    """Raw lines of a replay file with a `file:line` source tag; blank lines skipped.

    No decoding here: the pipeline decodes, so a bad line is dead-lettered with its source.
    """
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            raw = line.rstrip(b"\r\n")
            if raw.strip():
                yield raw, f"{path}:{lineno}"


def write_jsonl(path: str | Path, items: Iterable[Event | bytes]) -> int:
    """Write events (wire form) or raw payloads, one per line; returns the count."""
    n = 0
    with open(path, "wb") as fh:
        for item in items:
            raw = item.to_json() if isinstance(item, Event) else item
            if b"\n" in raw:
                raise ValueError("a payload holds a newline and would split across lines")
            fh.write(raw + b"\n")
            n += 1
    return n
