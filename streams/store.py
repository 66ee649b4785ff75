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
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError
from clickhouse_connect.driver.query import QueryResult

from comparators.aggregate import SIGNAL_KINDS, PairedCounts
from comparators.pairs import PairScore
from judge.verdicts import Decision
from pipeline.windows import ClosedWindow
from schemas.events import DeadLetter

DEFAULT_DSN = "chdb://./.shadowlens/ch"
DEFAULT_DATABASE = "shadowlens"
MIGRATIONS_TABLE = "schema_migrations"
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_MEMORY = {"memory", ":memory:"}

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


def redact_dsn(dsn: str) -> str:
    """The DSN as it may be shown: ``http://user:secret@host:8123`` ->
    ``http://user:***@host:8123``; whatever precedes an ``@`` that does not parse as
    user:password is masked whole. Errors and logs show DSNs only through this."""
    try:
        parts = urlsplit(dsn)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:  # e.g. a port that is not a number
        pass
    if "@" not in dsn:
        return dsn
    scheme, sep, rest = dsn.partition("://")
    tail = (rest if sep else dsn).rsplit("@", 1)[1]
    return f"{scheme}://***@{tail}" if sep else f"***@{tail}"


def resolve_dsn(dsn: str) -> str:
    """The DSN clickhouse-connect should get: chdb directories made absolute (and created).

    ``chdb://./rel/dir`` and ``chdb://rel/dir`` -> ``chdb:///abs/rel/dir`` (relative to the
    working directory), ``chdb:///abs/dir`` and ``http(s)://...`` unchanged. Anything else,
    including in-memory chdb (its data would vanish with the process), is a ValueError.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise ValueError("empty ClickHouse DSN: expected chdb://<dir> or http(s)://host:port")
    dsn = dsn.strip()
    scheme, sep, rest = dsn.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("http", "https"):
        if not urlsplit(dsn).hostname:
            raise ValueError(f"ClickHouse DSN {redact_dsn(dsn)!r} names no host")
        return dsn
    if not sep or scheme != "chdb":
        raise ValueError(
            f"unsupported ClickHouse DSN {redact_dsn(dsn)!r}: expected chdb://./relative/dir, "
            "chdb:///absolute/dir or http(s)://host:port"
        )
    if not rest or rest in _MEMORY or rest.split("/", 1)[0] in _MEMORY:
        raise ValueError(
            f"ClickHouse DSN {redact_dsn(dsn)!r} names no data directory (in-memory chdb loses "
            "every row at exit): use chdb://./relative/dir or chdb:///absolute/dir"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"chdb DSN {redact_dsn(dsn)!r}: the data directory may not contain '?' or '#'"
        )
    path = Path(rest).expanduser()  # "/abs" stays absolute, "./rel" and "rel" are relative
    path = path if path.is_absolute() else Path.cwd() / path
    path = Path(os.path.normpath(path))
    if path.exists() and not path.is_dir():
        raise ValueError(f"chdb DSN {redact_dsn(dsn)!r}: {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return f"chdb://{path}"


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
    for entry in resources.files("schemas").joinpath("clickhouse").iterdir():
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


def _dt(ms: int) -> datetime:
    """Exact UTC datetime of epoch milliseconds (no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def _dt_or_none(ms: int | None) -> datetime | None:
    return None if ms is None else _dt(ms)


# ---- rows -> columns ------------------------------------------------------------------------

# PairScore fields stored as they are, in table order; enum-ish ones go through str().
_PAIR_PLAIN = (
    "experiment",
    "segment",
    "request_id",
    "comparison",
    "outcome",
    "task",
    "mode",
    "primary_model",
    "primary_provider",
    "candidate_model",
    "candidate_provider",
    "primary_status",
    "candidate_status",
)
_PAIR_VALUES = (
    "primary_error_type",
    "candidate_error_type",
    "primary_latency_ms",
    "candidate_latency_ms",
    "primary_ttft_ms",
    "candidate_ttft_ms",
    "latency_ratio",
    "latency_delta_ms",
    "primary_cost_usd",
    "candidate_cost_usd",
    "cost_delta_usd",
    "primary_output_tokens",
    "candidate_output_tokens",
    "length_ratio",
    "primary_finish_reason",
    "candidate_finish_reason",
    "finish_reason_changed",
    "error_disagreement",
    "exact_match",
    "label_agree",
    "embedding_cosine",
    "lexical_similarity",
    "semantic_similarity",
    "json_field_agreement",
    "primary_refusal",
    "candidate_refusal",
    "primary_truncated",
    "candidate_truncated",
    "number_mismatch",
    "negation_mismatch",
    "primary_json_valid",
    "candidate_json_valid",
    "json_schema_ok",
    "label_flip",
    "weight",
    "primary_body",
    "candidate_body",
)
_PAIR_ARRAYS = ("json_missing", "json_extra", "json_changed")


def pair_columns(scores: Sequence[PairScore]) -> dict[str, list[Any]]:
    """One list per column of ``pairs``."""
    cols: dict[str, list[Any]] = {
        name: [str(getattr(s, name)) for s in scores] for name in _PAIR_PLAIN
    }
    cols["event_time"] = [_dt(s.event_time_ms) for s in scores]
    cols["primary_failed"] = [s.primary_failed for s in scores]
    cols["candidate_failed"] = [s.candidate_failed for s in scores]
    for name in _PAIR_VALUES:
        cols[name] = [getattr(s, name) for s in scores]
    for name in _PAIR_ARRAYS:
        cols[name] = [list(getattr(s, name)) for s in scores]
    cols["quality"] = [s.quality for s in scores]
    return cols


_SIGNAL_COUNTS = (
    "number_mismatches",
    "negation_mismatches",
    "primary_invalid_json",
    "candidate_invalid_json",
    "schema_misfits",
    "label_flips",
)


# Aggregate's paired tables (`PairedCounts`): n, primary, candidate, only_candidate, only_primary
_PAIRED_COLUMNS = {
    "refusals": (
        "refusal_pairs",
        "primary_refusals",
        "candidate_refusals",
        "only_candidate_refused",
        "only_primary_refused",
    ),
    "truncations": (
        "truncation_pairs",
        "primary_truncations",
        "candidate_truncations",
        "only_candidate_truncated",
        "only_primary_truncated",
    ),
}


def window_columns(windows: Sequence[ClosedWindow]) -> dict[str, list[Any]]:
    """One list per column of ``windows``."""
    rows: list[dict[str, Any]] = []
    for w in windows:
        agg = w.aggregate
        row: dict[str, Any] = {
            "experiment": w.key.experiment,
            "segment": w.key.segment,
            "comparison": w.key.comparison,
            "window_start": _dt(w.key.start_ms),
            "window_end": _dt(w.end_ms),
            "first_event_time": _dt_or_none(agg.first_event_ms),
            "last_event_time": _dt_or_none(agg.last_event_ms),
            "n_requests": agg.n_requests,
            "n_paired": agg.n_paired,
            "n_candidate_missing": agg.n_candidate_missing,
            "n_primary_missing": agg.n_primary_missing,
            "n_split": agg.n_split,
            "primary_failures": agg.primary_failures,
            "candidate_failures": agg.candidate_failures,
            "only_candidate_failed": agg.only_candidate_failed,
            "only_primary_failed": agg.only_primary_failed,
            "exact_matches": agg.exact_matches,
            **{name: getattr(agg, name) for name in _SIGNAL_COUNTS},
            "late_pairs": w.late_pairs,
            "pairing_rate": agg.pairing_rate,
            "primary_error_rate": agg.error_rate("primary"),
            "candidate_error_rate": agg.error_rate("candidate"),
            "quality_n": agg.quality.n,
            "quality_mean": agg.quality.mean,
            "quality_var": agg.quality.variance,
            "quality_measured": agg.quality_measured,
            "quality_unsampled": agg.quality_unsampled,
            "quality_sampled_fraction": agg.quality_sampled_fraction,
            "log_latency_ratio_n": agg.log_latency_ratio.n,
            "log_latency_ratio_mean": agg.log_latency_ratio.mean,
            "log_latency_ratio_var": agg.log_latency_ratio.variance,
            "primary_cost_n": agg.primary_cost_usd.n,
            "primary_cost_mean_usd": agg.primary_cost_usd.mean,
            "candidate_cost_n": agg.candidate_cost_usd.n,
            "candidate_cost_mean_usd": agg.candidate_cost_usd.mean,
            "worst_quality_ids": agg.examples("quality"),
            "slowest_ratio_ids": agg.examples("latency"),
            "candidate_failed_ids": agg.examples("errors"),
            "signal_example_ids": {k: agg.examples(k) for k in SIGNAL_KINDS if k in agg.signal_ids},
        }
        for attr, names in _PAIRED_COLUMNS.items():
            c: PairedCounts = getattr(agg, attr)
            values = (c.n, c.primary, c.candidate, c.only_candidate, c.only_primary)
            row.update(zip(names, values, strict=True))
        for arm in ("primary", "candidate"):
            for label, q in QUANTILES:
                row[f"{arm}_latency_{label}_ms"] = agg.latency_quantile(arm, q)
        rows.append(row)
    return _pivot(rows)


def decision_columns(decisions: Sequence[Decision]) -> dict[str, list[Any]]:
    """One list per column of ``decisions``; evidence as the Nested ``evidence.*`` arrays."""
    cols: dict[str, list[Any]] = {
        "experiment": [d.experiment for d in decisions],
        "epoch": [d.epoch for d in decisions],
        "action": [str(d.action) for d in decisions],
        "from_percent": [float(d.from_percent) for d in decisions],
        "to_percent": [float(d.to_percent) for d in decisions],
        "decided_at": [_dt(d.decided_at_ms) for d in decisions],
        "reason": [d.reason for d in decisions],
    }
    evidence: dict[str, Callable[[Any], Any]] = {
        "metric": str,
        "segment": str,
        "verdict": str,
        "observed": _identity,
        "reference": _identity,
        "threshold": _identity,
        "bound": _identity,
        "n": int,
        "critical": bool,
        "reason": str,
        "example_request_ids": list,
    }
    for name, convert in evidence.items():
        cols[f"evidence.{name}"] = [
            [convert(getattr(e, name)) for e in d.evidence] for d in decisions
        ]
    return cols


def dead_letter_columns(letters: Sequence[DeadLetter]) -> dict[str, list[Any]]:
    """One list per column of ``dead_letters``; ``raw`` stays bytes, byte for byte."""
    return {
        "received_at": [_dt(d.received_ms) for d in letters],
        "reason": [d.reason for d in letters],
        "detail": [d.detail for d in letters],
        "request_id": [d.request_id for d in letters],
        "source": [d.source for d in letters],
        "raw": [bytes(d.raw) for d in letters],
    }


def _identity(value: Any) -> Any:
    return value


def _pivot(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    if not rows:
        return {}
    return {name: [row[name] for row in rows] for name in rows[0]}


# ---- the store ------------------------------------------------------------------------------


class Store:
    """Writes and reads the shadowlens tables of one database; a context manager.

    Open with `Store.open`; chdb: one process per data directory (see the module doc).
    """

    def __init__(self, client: Client, database: str, dsn: str) -> None:
        self.client = client
        self.database = database
        self.dsn = dsn
        self._types: dict[tuple[str, tuple[str, ...]], Sequence[ClickHouseType]] = {}

    @classmethod
    def open(cls, dsn: str = DEFAULT_DSN, database: str = DEFAULT_DATABASE) -> Store:
        """Connect, and create `database` if it is missing (embedded chdb and servers alike)."""
        if not _IDENTIFIER.fullmatch(database):
            raise ValueError(
                f"database name {database!r} must match {_IDENTIFIER.pattern} "
                "(letters, digits and _, not starting with a digit)"
            )
        resolved = resolve_dsn(dsn)
        client = _connect(resolved)
        try:
            client.command(
                "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": database}
            )
            client.database = database
        except BaseException:
            client.close()
            raise
        return cls(client, database, resolved)

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
        return self.client.query(
            sql,
            parameters=dict(parameters) if parameters else None,
            column_formats=dict(column_formats) if column_formats else None,
            settings=dict(settings) if settings else None,
        )

    def rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """The rows of a query as dicts (column name -> value)."""
        yield from self.query(sql, parameters).named_results()


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
