"""`shadowlens worker` with a ClickHouse that can be switched off: the store-outage test's
fault injection, kept out of the production code.

    SHADOWLENS_TEST_STORE_DOWN_FILE=/tmp/x/down python -m tests.outage_worker

runs the real worker (`streams.worker.run_worker`, settings from ``SHADOWLENS_*``) with one
change: while the file named by ``SHADOWLENS_TEST_STORE_DOWN_FILE`` exists, opening the
store and every insert raise `ConnectionError`, as a ClickHouse server that went away
would. The test creates the file to start the outage and deletes it to end it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shadowlens.judge.policy import load_policy
from shadowlens.store.client import Store
from shadowlens.store.dsn import DEFAULT_DATABASE, DEFAULT_DSN
from shadowlens.streams import ch_writer
from shadowlens.streams.config import Settings
from shadowlens.streams.worker import run_worker

DOWN_FILE_ENV = "SHADOWLENS_TEST_STORE_DOWN_FILE"


def _check(down: Path) -> None:
    if down.exists():
        raise ConnectionError(f"fault injection: ClickHouse unreachable ({down} exists)")


def flaky_store(down: Path) -> type[Store]:
    """A `Store` that fails to open and to insert while `down` exists."""

    class FlakyStore(Store):
        @classmethod
        def open(cls, dsn: str = DEFAULT_DSN, database: str = DEFAULT_DATABASE) -> Store:
            _check(down)
            return super().open(dsn, database)

        def _insert(self, table: str, columns: Mapping[str, list[Any]], n: int) -> int:
            _check(down)
            return super()._insert(table, columns, n)

    return FlakyStore


def main() -> None:
    ch_writer.Store = flaky_store(Path(os.environ[DOWN_FILE_ENV]))  # type: ignore[misc]
    settings = Settings.from_env()
    run_worker(settings, load_policy(settings.policy))


if __name__ == "__main__":
    main()
