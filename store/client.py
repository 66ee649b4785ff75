"""The ClickHouse store: one code path for embedded chdb and for ClickHouse servers.

Pairs, windows, decisions and dead letters are written here for analysts, each batch as a
single columnar insert through clickhouse-connect, which speaks both to an embedded
engine (``chdb:///abs/dir``, the default for a laptop or a test) and to a server
(``http(s)://user:password@host:8123``)::

    with Store.open("chdb://./.shadowlens/ch") as store:
        store.migrate()
        store.write_pairs(scores)
        rows = store.query(
            "SELECT request_id, quality FROM pairs FINAL WHERE experiment = {exp:String}",
            {"exp": "gpt4-to-llama3"},
        ).result_rows

chdb allows ONE process per data directory: the engine locks ``<dir>/status`` and a second
process cannot open the directory until the first has closed it (`Store.open` then raises
`StoreBusyError`). Within one process every `Store` on the same directory shares the one
engine, and a different directory can only be opened after every store has been closed.
Run the pipeline, an analyst's notebook and the CLI against a ClickHouse server when they
must work at the same time, or close the store between them.

The DDL lives in ``schemas/clickhouse/NNNN_name.sql`` (one statement per file, table names
unqualified: they land in the store's database); `Store.migrate` applies the pending ones
in order and records them in ``schema_migrations``. Applied migrations are immutable: a
change is a new file.

Values only ever reach SQL through server-side parameter binding (``{name:Type}``
placeholders); datetimes travel as timezone-aware UTC `datetime` objects built from the
``*_ms`` integers, and come back timezone-aware.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import clickhouse_connect
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError
from clickhouse_connect.driver.query import QueryResult
from shadowlens.comparators.pairs import PairScore
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.schemas.events import DeadLetter
from shadowlens.store.columns import (
    dead_letter_columns,
    decision_columns,
    pair_columns,
    window_columns,
)
from shadowlens.store.dsn import DEFAULT_DATABASE, DEFAULT_DSN, resolve_dsn

MIGRATIONS_TABLE = "schema_migrations"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_MIGRATIONS_DDL = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


class StoreError(RuntimeError):
    """The store cannot be opened or migrated; the message says what to do."""


class StoreBusyError(StoreError):
    """Another process holds the chdb data directory."""


class MigrationError(StoreError):
    """The migration files and the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # file stem, e.g. 0001_pairs
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The DDL files shipped in ``schemas/clickhouse``, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files("shadowlens.schemas").joinpath("clickhouse").iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations share version {version:04d}: {found[version].name}, {entry.name}"
            )
        sql = entry.read_text(encoding="utf-8").strip().removesuffix(";").rstrip()
        found[version] = Migration(version, entry.name.removesuffix(".sql"), sql)
    return [found[v] for v in sorted(found)]


# ---- the store ------------------------------------------------------------------------------


class Store:
    """Writes and reads the shadowlens tables of one database; a context manager.

    Open with `Store.open`; chdb: one process per data directory (see the module doc).
    """

    def __init__(self, client: Client, database: str, dsn: str, *, readonly: bool = False) -> None:
        self.client = client
        self.database = database
        self.dsn = dsn
        self.readonly = readonly
        self._types: dict[tuple[str, tuple[str, ...]], Sequence[ClickHouseType]] = {}

    @classmethod
    def open(
        cls, dsn: str = DEFAULT_DSN, database: str = DEFAULT_DATABASE, *, readonly: bool = False
    ) -> Store:
        """Connect, and create `database` if it is missing (embedded chdb and servers alike).

        `readonly` is for analysts (``db query``, the report): the database must exist, and
        every query runs with the engine's ``readonly=1`` setting, so no SQL it is given --
        DROP, INSERT, ALTER, SYSTEM, a write hidden after a ``;``, a ``SETTINGS readonly=0``
        -- can change anything; writing methods refuse. On a server, give it a read-only
        user as well (deploy/clickhouse/users.d)."""
        if not _IDENTIFIER.fullmatch(database):
            raise ValueError(
                f"database name {database!r} must match {_IDENTIFIER.pattern} "
                "(letters, digits and _, not starting with a digit)"
            )
        resolved = resolve_dsn(dsn)
        client = _connect(resolved)
        try:
            if readonly:
                _require_database(client, database)
            else:
                client.command(
                    "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": database}
                )
            client.database = database
        except BaseException:
            client.close()
            raise
        return cls(client, database, resolved, readonly=readonly)

    # -- lifecycle

    def close(self) -> None:
        """Release the connection (for chdb: the data directory, once no store holds it)."""
        self._types.clear()
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- schema

    def migrate(self) -> list[str]:
        """Apply the pending migrations in order; the names applied (none the second time)."""
        self._writable("migrate")
        self.client.command(_MIGRATIONS_DDL)
        applied = {
            int(version): checksum
            for version, checksum in self.query(
                f"SELECT version, argMax(checksum, applied_at) FROM {MIGRATIONS_TABLE} "
                "GROUP BY version"
            ).result_rows
        }
        done: list[str] = []
        for migration in migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} changed after it was applied to "
                        f"{self.database}; applied migrations are immutable: revert the file "
                        "and add the change as a new, higher-numbered migration"
                    )
                continue
            self.client.command(migration.sql)
            self.client.insert(
                MIGRATIONS_TABLE,
                [
                    [migration.version],
                    [migration.name],
                    [migration.checksum],
                    [datetime.now(UTC)],
                ],
                column_names=["version", "name", "checksum", "applied_at"],
                column_oriented=True,
            )
            done.append(migration.name)
        return done

    def applied_migrations(self) -> list[str]:
        return [
            name
            for (name,) in self.query(
                f"SELECT argMax(name, applied_at) FROM {MIGRATIONS_TABLE} "
                "GROUP BY version ORDER BY version"
            ).result_rows
        ]

    # -- writes: one columnar insert per batch

    def write_pairs(self, scores: Sequence[PairScore]) -> int:
        return self._insert("pairs", pair_columns(scores), len(scores))

    def write_windows(self, windows: Sequence[ClosedWindow]) -> int:
        return self._insert("windows", window_columns(windows), len(windows))

    def write_decisions(self, decisions: Sequence[Decision]) -> int:
        return self._insert("decisions", decision_columns(decisions), len(decisions))

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        return self._insert("dead_letters", dead_letter_columns(letters), len(letters))

    def _insert(self, table: str, columns: Mapping[str, list[Any]], n: int) -> int:
        self._writable(f"write {table}")
        if not n:
            return 0
        names = tuple(columns)
        key = (table, names)
        types = self._types.get(key)
        context = self.client.create_insert_context(
            table, list(names), column_types=types, column_oriented=True
        )
        if types is None:  # the table's column types are read once per store
            self._types[key] = context.column_types
        context.data = list(columns.values())
        self.client.insert(context=context)
        return n

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise StoreError(f"cannot {what}: this store was opened read-only")

    # -- reads

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        column_formats: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> QueryResult:
        """Run a SELECT; values only through ``{name:Type}`` placeholders in `parameters`.

        ``column_formats={"raw": "bytes"}`` reads a String column as bytes (clickhouse-connect
        otherwise shows a String that is not valid UTF-8 as hex).
        """
        if parameters and not _has_placeholders(sql):
            raise ValueError(
                "parameters given but the SQL has no {name:Type} placeholders; "
                "values are bound server side, never formatted into the SQL"
            )
        if self.readonly:
            _require_read_statement(sql)
        merged = {**(settings or {}), **({"readonly": 1} if self.readonly else {})}
        return self.client.query(
            sql,
            parameters=dict(parameters) if parameters else None,
            column_formats=dict(column_formats) if column_formats else None,
            settings=merged or None,
        )

    def rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """The rows of a query as dicts (column name -> value)."""
        yield from self.query(sql, parameters).named_results()


_READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)


def _require_read_statement(sql: str) -> None:
    """Defence in depth for read-only stores: the engine's ``readonly=1`` refuses writes
    but lets some SYSTEM statements through (``SYSTEM STOP MERGES``), so a read-only store
    runs only statements that start with a reading keyword."""
    body = sql[_LEADING_COMMENTS.match(sql).end() :]
    keyword = re.match(r"[A-Za-z]+", body)
    if keyword is None or keyword.group(0).upper() not in _READ_STATEMENTS:
        raise StoreError(
            "read-only: only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS statements run "
            f"here, not {body[:40]!r}"
        )


def _require_database(client: Client, database: str) -> None:
    found = client.query(
        "SELECT count() FROM system.databases WHERE name = {db:String}",
        parameters={"db": database},
        settings={"readonly": 1},
    ).result_rows[0][0]
    if not found:
        raise StoreError(
            f"database {database!r} does not exist yet: run `shadowlens db migrate` (or a "
            "replay or the worker) first"
        )


_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*:[^}]+\}")


def _has_placeholders(sql: str) -> bool:
    return bool(_PLACEHOLDER.search(sql))


def _connect(dsn: str) -> Client:
    try:
        return clickhouse_connect.get_client(dsn=dsn, tz_mode="aware")
    except ProgrammingError as exc:
        if not dsn.startswith("chdb://"):
            raise
        path = dsn.removeprefix("chdb://")
        if _directory_locked(path):
            raise StoreBusyError(
                f"chdb data directory {path} is in use by another process: chdb allows one "
                "process per data directory. Stop that process, give this one its own "
                "directory, or point both at a ClickHouse server (http://host:8123)"
            ) from exc
        raise StoreError(
            f"cannot open chdb data directory {path}: {exc}. chdb hosts one data directory "
            "per process: close every other Store (or clickhouse-connect chdb client) first"
        ) from exc


def _directory_locked(path: str) -> bool:
    """Whether another process holds the engine lock (ClickHouse flocks ``<dir>/status``)."""
    status = Path(path) / "status"
    if not status.exists():
        return False
    try:
        with status.open("rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return False
    return False
