"""A read-only store (what `db query` and the report use) refuses every write, on the real
engine (chdb): nothing it is given changes a table, a row or a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from shadowlens.comparators.pairs import PairScore, score_pair
from shadowlens.schemas.events import Arm
from shadowlens.store.client import Store, StoreError

from tests.builders import event

WRITES = [
    "DROP TABLE shadowlens.pairs",
    "DROP DATABASE shadowlens",
    "INSERT INTO shadowlens.decisions (experiment) VALUES ('forged')",
    "ALTER TABLE shadowlens.pairs DELETE WHERE 1",
    "ALTER TABLE shadowlens.pairs ADD COLUMN evil UInt8",
    "TRUNCATE TABLE shadowlens.pairs",
    "RENAME TABLE shadowlens.pairs TO shadowlens.gone",
    "CREATE TABLE shadowlens.x (a Int8) ENGINE = Memory",
    "OPTIMIZE TABLE shadowlens.pairs FINAL",
    "SYSTEM DROP MARK CACHE",
    "SYSTEM STOP MERGES",
    "SELECT 1; DROP TABLE shadowlens.pairs",
    "SELECT 1 FROM shadowlens.pairs; INSERT INTO shadowlens.decisions (experiment) VALUES ('x')",
    "/* a comment */ -- and another\nSYSTEM STOP MERGES",
    "KILL QUERY WHERE 1",
    "SET readonly = 0",
    "SELECT count() FROM shadowlens.pairs SETTINGS readonly = 0",
    "INSERT INTO FUNCTION file('{tmp}/out.csv', 'CSV') SELECT 1",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
]


def scores() -> list[PairScore]:
    return [
        score_pair(event(f"r{i}"), event(f"r{i}", Arm.CANDIDATE, latency=900.0 + i), {})
        for i in range(20)
    ]


def fingerprint(store: Store) -> list[tuple]:
    """Every table of the database with its row count and a checksum of its rows."""
    tables = [
        r[0]
        for r in store.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name"
        ).result_rows
    ]
    return [
        (t, *store.query(f"SELECT count(), sum(cityHash64(*)) FROM {t}").result_rows[0])
        for t in tables
    ]


@pytest.fixture
def written(tmp_path: Path) -> str:
    dsn = f"chdb://{tmp_path / 'ch'}"
    with Store.open(dsn) as store:
        store.migrate()
        assert store.write_pairs(scores()) > 0
    return dsn


@pytest.mark.parametrize("sql", WRITES)
def test_every_write_is_refused_and_nothing_changes(sql: str, written: str, tmp_path: Path) -> None:
    with Store.open(written) as store:
        before = fingerprint(store)
    with (
        Store.open(written, readonly=True) as store,
        pytest.raises((DatabaseError, StoreError), match=r"(?i)read-?only"),
    ):
        store.query(sql.format(tmp=tmp_path))
    with Store.open(written) as store:
        assert fingerprint(store) == before
    assert not (tmp_path / "out.csv").exists()


def test_reads_still_work_read_only(written: str) -> None:
    with Store.open(written) as store:
        expected = store.query("SELECT count() FROM pairs FINAL").result_rows
    with Store.open(written, readonly=True) as store:
        assert store.query("SELECT count() FROM pairs FINAL").result_rows == expected
        assert expected[0][0] > 0


def test_writing_methods_refuse_and_a_missing_database_is_an_error(
    written: str, tmp_path: Path
) -> None:
    with Store.open(written, readonly=True) as store:
        with pytest.raises(StoreError, match="read-only"):
            store.migrate()
        with pytest.raises(StoreError, match="read-only"):
            store.write_pairs(scores())
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(f"chdb://{tmp_path / 'empty'}", readonly=True)


def test_db_query_refuses_writes_with_a_clear_error(written: str) -> None:
    """The operator's path: `shadowlens db query` on the same store."""
    from shadowlens.cli.app import app
    from shadowlens.cli.exit_codes import ExitCode
    from typer.testing import CliRunner

    def db_query(sql: str):
        return CliRunner().invoke(app, ["db", "query", sql, "--dsn", written])

    with Store.open(written) as store:
        before = fingerprint(store)
    for sql in ("DROP TABLE shadowlens.pairs", "SELECT 1; DROP TABLE shadowlens.pairs"):
        out = db_query(sql)
        assert out.exit_code == ExitCode.USAGE, out.output
        assert "read" in out.output.lower() and "only" in out.output.lower()
    pairs = {table: n for table, n, _ in before}["pairs"]
    shown = db_query("SELECT count() AS n FROM pairs FINAL")
    assert shown.exit_code == 0 and str(pairs) in shown.output
    shown = db_query("SELECT '[segment] x' AS reason")
    assert shown.exit_code == 0 and "[segment] x" in shown.output  # data, not rich markup
    with Store.open(written) as store:
        assert fingerprint(store) == before
