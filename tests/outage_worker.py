"""`shadowlens worker` with faults switched on and off by files: the outage and stall
tests' fault injection, kept out of the production code.

    SHADOWLENS_TEST_STORE_DOWN_FILE=/tmp/x/down python -m tests.outage_worker

runs the real worker (`streams.worker.run_worker`, settings from ``SHADOWLENS_*``) with
these changes, each only when its variable is set:

* ``SHADOWLENS_TEST_STORE_DOWN_FILE``: while the file exists, opening the store and every
  insert raise `ConnectionError`, as a ClickHouse server that went away would;
* ``SHADOWLENS_TEST_STORE_STALL_FILE``: while the file exists, every insert hangs (then
  goes through), as an overloaded ClickHouse does;
* ``SHADOWLENS_TEST_ENCODER_STALL_FILE``: while the file exists, every semantic encoding
  hangs before the real encoder (``SHADOWLENS_SEMANTIC``) runs, as a starved model does.

A test creates a file to start the fault and deletes it to end it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shadowlens.judge.policy import load_policy
from shadowlens.store.client import Store
from shadowlens.store.dsn import DEFAULT_DATABASE, DEFAULT_DSN
from shadowlens.streams import ch_writer, semantic_stage
from shadowlens.streams.config import Settings
from shadowlens.streams.worker import run_worker

DOWN_FILE_ENV = "SHADOWLENS_TEST_STORE_DOWN_FILE"
STORE_STALL_FILE_ENV = "SHADOWLENS_TEST_STORE_STALL_FILE"
ENCODER_STALL_FILE_ENV = "SHADOWLENS_TEST_ENCODER_STALL_FILE"


def _fault(path: str | None) -> Path | None:
    return Path(path) if path else None


def _check(down: Path | None) -> None:
    if down is not None and down.exists():
        raise ConnectionError(f"fault injection: ClickHouse unreachable ({down} exists)")


def _stall(stalled: Path | None) -> None:
    while stalled is not None and stalled.exists():
        time.sleep(0.05)


def flaky_store(down: Path | None, stalled: Path | None) -> type[Store]:
    """A `Store` that fails to open and to insert while `down` exists, and whose inserts
    hang while `stalled` exists."""

    class FlakyStore(Store):
        @classmethod
        def open(cls, dsn: str = DEFAULT_DSN, database: str = DEFAULT_DATABASE) -> Store:
            _check(down)
            return super().open(dsn, database)

        def _insert(self, table: str, columns: Mapping[str, list[Any]], n: int) -> int:
            _check(down)
            _stall(stalled)
            return super()._insert(table, columns, n)

    return FlakyStore


def stalling_encoder(stalled: Path | None, similarity: Callable[..., Any]) -> Callable[..., Any]:
    """`similarity` (the real `semantic_similarity`), hanging first while `stalled` exists."""

    def encode(*args: Any) -> Any:
        _stall(stalled)
        return similarity(*args)

    return encode


def main() -> None:
    env = os.environ.get
    ch_writer.Store = flaky_store(  # type: ignore[misc]
        _fault(env(DOWN_FILE_ENV)), _fault(env(STORE_STALL_FILE_ENV))
    )
    semantic_stage.semantic_similarity = stalling_encoder(  # type: ignore[assignment]
        _fault(env(ENCODER_STALL_FILE_ENV)), semantic_stage.semantic_similarity
    )
    settings = Settings.from_env()
    run_worker(settings, load_policy(settings.policy))


if __name__ == "__main__":
    main()
