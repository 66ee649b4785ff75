"""The ClickHouse store on the real embedded engine (chdb), one data directory per test."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.pairs import Outcome, PairScore, score_orphan, score_pair
from shadowlens.judge.verdicts import Action, Decision, Evidence, Metric, Verdict
from shadowlens.pipeline.windows import TumblingWindows
from shadowlens.schemas.events import Arm, DeadLetter, Event, InvalidEvent, Output, Status, Task
from shadowlens.store.client import MigrationError, Store, StoreBusyError, StoreError, migrations
from shadowlens.store.columns import window_columns
from shadowlens.store.dsn import DEFAULT_DSN, resolve_dsn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_eval"
PRIMARY_FILE, CANDIDATE_FILE = "gpt4_0613.json", "Meta-Llama-3-70B-Instruct.json"
TABLES = ("pairs", "windows", "decisions", "dead_letters", "schema_migrations")
EXPERIMENT = "gpt4-to-llama3-70b"
MINUTE = 60_000

# bodies are cleared 30 days after insertion (column TTL, on merges)
T0 = (int(time.time() * 1000) // MINUTE - 30) * MINUTE


@pytest.fixture(scope="module")
def alpaca() -> list[tuple[str, str, str]]:
    """(instruction, primary output, candidate output) of a real cloud -> on-prem migration."""
    if not (DATA / PRIMARY_FILE).exists():
        pytest.skip(f"AlpacaEval outputs not found in {DATA}")
    primary = json.loads((DATA / PRIMARY_FILE).read_text())
    candidate = {
        row["instruction"]: row["output"] for row in json.loads((DATA / CANDIDATE_FILE).read_text())
    }
    return [
        (row["instruction"], row["output"], candidate[row["instruction"]])
        for row in primary
        if row["instruction"] in candidate
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"chdb://{tmp_path}/ch") as s:
        s.migrate()
        yield s


def event(rid: str, arm: Arm, t_ms: int, **kw: object) -> Event:
    base: dict[str, object] = {
        "request_id": rid,
        "experiment": EXPERIMENT,
        "arm": arm,
        "segment": "chat",
        "task": Task.GENERATION,
        "provider": "openai" if arm == Arm.PRIMARY else "onprem-vllm",
        "model": "gpt-4-0613" if arm == Arm.PRIMARY else "Meta-Llama-3-70B-Instruct",
        "start_time_ms": t_ms,
        "latency_ms": 900.0,
        "status": Status.OK,
    }
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def real_pairs(alpaca: list[tuple[str, str, str]], n: int) -> list[PairScore]:
    """n scored requests of the real outputs: pairs, failures and orphans of both kinds."""
    scores = []
    for i in range(n):
        _, p_text, c_text = alpaca[i % len(alpaca)]
        rid, t = f"req-{i:05d}", T0 + i * 1_000
        segment = ("chat", "code", "qa")[i % 3]
        primary = event(
            rid,
            Arm.PRIMARY,
            t,
            segment=segment,
            latency_ms=400.0 + 7 * (i % 50),
            ttft_ms=120.5,
            output=Output(text=p_text),
            input_tokens=50,
            output_tokens=len(p_text) // 4,
            cost_usd=0.002 + i * 1e-6,
            finish_reason="stop",
        )
        candidate = event(
            rid,
            Arm.CANDIDATE,
            t,
            segment=segment,
            latency_ms=300.0 + 11 * (i % 70),
            output=Output(text=c_text),
            output_tokens=len(c_text) // 4,
            finish_reason="stop" if i % 5 else "length",
        )
        if i % 17 == 0:
            scores.append(score_orphan(primary, "candidate", {}, t + 600_000))
        elif i % 29 == 0:
            scores.append(score_orphan(candidate, "primary", {}, t + 600_000))
        elif i % 13 == 0:
            failed = dataclasses.replace(
                candidate, status=Status.TIMEOUT, error_type="ReadTimeout", output=Output()
            )
            scores.append(score_pair(primary, failed, {}))
        else:
            scores.append(score_pair(primary, candidate, {}))
    return scores


def extraction_pair() -> PairScore:
    """A JSON extraction pair: tuples of JSON Pointer paths, with quotes and non-ASCII."""
    p_doc = {"name": "Zoë", "addr": {"city": "Köln", "zip": "50667"}, "tags": ["a", "b"]}
    c_doc = {"name": "Zoe", "addr": {"city": "Köln"}, "tags": ["a"], "it's": True}
    primary = event(
        "req-json", Arm.PRIMARY, T0 + 5, task=Task.EXTRACTION, output=Output(json=p_doc)
    )
    candidate = event(
        "req-json", Arm.CANDIDATE, T0 + 5, task=Task.EXTRACTION, output=Output(json=c_doc)
    )
    return score_pair(primary, candidate, {})


def split_single() -> PairScore:
    return PairScore(
        request_id="req-split",
        experiment=EXPERIMENT,
        segment="chat",
        task="generation",
        mode="split",
        comparison="candidate",
        outcome=Outcome.SPLIT,
        event_time_ms=T0 + 7,
        candidate_model="Meta-Llama-3-70B-Instruct",
        candidate_status="ok",
        candidate_latency_ms=512.25,
        candidate_body="served by the candidate alone",
    )


def read_pairs(store: Store, where: str = "", params: dict | None = None) -> list[PairScore]:
    """Rows of `pairs` back into PairScores (the reader a README would show)."""
    fields = {f.name for f in dataclasses.fields(PairScore)}
    rows = store.query(
        f"SELECT * FROM pairs FINAL {where} ORDER BY event_time, request_id, comparison",
        params,
    ).named_results()
    out = []
    for row in rows:
        kw = {k: v for k, v in row.items() if k in fields}
        kw["event_time_ms"] = _ms(row["event_time"])
        kw["outcome"] = Outcome(row["outcome"])
        for name in ("json_missing", "json_extra", "json_changed"):
            kw[name] = tuple(row[name])
        score = PairScore(**kw)
        assert row["quality"] == score.quality
        assert row["primary_failed"] == score.primary_failed
        assert row["candidate_failed"] == score.candidate_failed
        out.append(score)
    return out


EVIDENCE_FIELDS = [f.name for f in dataclasses.fields(Evidence)]


def evidence_of(row: dict) -> tuple[Evidence, ...]:
    """The Nested evidence.* arrays of a decisions row back into Evidence records."""
    columns = [row[f"evidence.{name}"] for name in EVIDENCE_FIELDS]
    out = []
    for values in zip(*columns, strict=True):
        kw = dict(zip(EVIDENCE_FIELDS, values, strict=True))
        kw["metric"] = Metric(kw["metric"])
        kw["verdict"] = Verdict(kw["verdict"])
        kw["example_request_ids"] = tuple(kw["example_request_ids"])
        out.append(Evidence(**kw))
    return tuple(out)


def _ms(value: datetime) -> int:
    assert value.tzinfo is not None, "datetimes come back timezone-aware"
    return round(value.timestamp() * 1000)


def _sort(scores: list[PairScore]) -> list[PairScore]:
    return sorted(scores, key=lambda s: (s.event_time_ms, s.request_id, s.comparison))


# ---- migrations -----------------------------------------------------------------------------


def test_migrate_creates_every_table_and_is_idempotent(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path}/ch"
    names = [m.name for m in migrations()]
    assert names == [
        "0001_pairs",
        "0002_windows",
        "0003_decisions",
        "0004_dead_letters",
        "0005_pair_signals",
        "0006_window_signals",
        "0007_pair_clock_skew",
        "0008_decision_lifecycle",
        "0009_preference",
        "0010_window_preference",
        "0011_window_unjudged_signed",
        "0012_window_unsampled_signed",
    ]
    with Store.open(dsn) as store:
        assert store.migrate() == names
        assert store.migrate() == []
        tables = {t for (t,) in store.query("SHOW TABLES").result_rows}
        assert set(TABLES) <= tables
        assert store.applied_migrations() == names
        engines = dict(
            store.query(
                "SELECT name, engine FROM system.tables WHERE database = {db:String}",
                {"db": store.database},
            ).result_rows
        )
        assert engines["pairs"] == "ReplacingMergeTree"
        assert engines["dead_letters"] == "MergeTree"
        ddl = store.query("SHOW CREATE TABLE pairs").result_rows[0][0]
        assert "`primary_body` String CODEC(ZSTD(3)) TTL toDateTime(inserted_at)" in ddl
    with Store.open(dsn) as store:  # a restart applies nothing and keeps the bookkeeping
        assert store.migrate() == []
        assert store.applied_migrations() == names


def test_migration_changed_after_apply_is_refused(store: Store) -> None:
    store.client.insert(
        "schema_migrations",
        [[1], ["0001_pairs"], ["edited"], [datetime(2100, 1, 1, tzinfo=UTC)]],
        column_names=["version", "name", "checksum", "applied_at"],
        column_oriented=True,
    )
    with pytest.raises(MigrationError, match="0001_pairs changed"):
        store.migrate()


# ---- round trips ----------------------------------------------------------------------------


def test_pairs_round_trip(store: Store, alpaca: list[tuple[str, str, str]]) -> None:
    scores = [*real_pairs(alpaca, 120), extraction_pair(), split_single()]
    outcomes = {s.outcome for s in scores}
    assert outcomes == set(Outcome)
    assert store.write_pairs(scores) == len(scores)
    assert read_pairs(store) == _sort(scores)

    orphan = next(s for s in read_pairs(store) if s.outcome == Outcome.CANDIDATE_MISSING)
    assert orphan.candidate_status == "missing"
    assert orphan.candidate_latency_ms is None and orphan.quality is None
    extraction = read_pairs(store, "WHERE request_id = {rid:String}", {"rid": "req-json"})[0]
    assert extraction.json_missing == ("/addr/zip", "/tags/1")
    assert extraction.json_extra == ("/it's",)
    assert extraction.json_changed == ("/name",)
    # analysts can unnest the paths
    paths = store.query(
        "SELECT arrayJoin(json_missing) AS path FROM pairs FINAL "
        "WHERE task = {task:String} ORDER BY path",
        {"task": "extraction"},
    ).result_rows
    assert paths == [("/addr/zip",), ("/tags/1",)]


def test_replayed_pairs_are_deduplicated(store: Store, alpaca: list[tuple[str, str, str]]) -> None:
    scores = real_pairs(alpaca, 200)
    store.write_pairs(scores)
    store.write_pairs(scores)  # crash replay: the same pairs again
    assert store.query("SELECT count() FROM pairs FINAL").result_rows == [(200,)]
    assert store.query("SELECT count() FROM pairs").result_rows[0][0] in (200, 400)
    assert read_pairs(store) == _sort(scores)


def test_windows_round_trip(store: Store, alpaca: list[tuple[str, str, str]]) -> None:
    scores = real_pairs(alpaca, 600)  # 10 minutes of traffic
    windows = TumblingWindows(size_ms=5 * MINUTE, grace_ms=0)
    for s in scores:
        windows.add(s, watermark_ms=s.event_time_ms)
    closed = windows.flush()
    assert len(closed) >= 6  # 3 segments x 2+ windows
    assert store.write_windows(closed) == len(closed)

    expected = window_columns(closed)
    result = store.query(
        f"SELECT {', '.join(expected)} FROM windows FINAL "
        "ORDER BY experiment, segment, comparison, window_start"
    )
    got = dict(zip(result.column_names, zip(*result.result_rows, strict=True), strict=True))
    for name, values in expected.items():
        assert list(got[name]) == values, name

    # the stored numbers are the aggregate's: all windows of a segment pooled match
    chat = Aggregate()
    for s in scores:
        if s.segment == "chat":
            chat.add(s)
    row = store.query(
        "SELECT sum(n_paired), sum(n_candidate_missing), sum(n_primary_missing), "
        "sum(candidate_failures), sum(quality_n), "
        "sum(quality_n * quality_mean) / sum(quality_n) FROM windows FINAL "
        "WHERE segment = {segment:String}",
        {"segment": "chat"},
    ).result_rows[0]
    assert row[:5] == (
        chat.n_paired,
        chat.n_candidate_missing,
        chat.n_primary_missing,
        chat.candidate_failures,
        chat.quality.n,
    )
    assert row[5] == pytest.approx(chat.quality.mean)
    first = closed[0]
    p99 = store.query(
        "SELECT candidate_latency_p99_ms FROM windows FINAL "
        "WHERE segment = {s:String} AND window_start = {t:DateTime64(3, 'UTC')}",
        {"s": first.key.segment, "t": expected["window_start"][0]},
    ).result_rows
    assert p99 == [(first.aggregate.latency_quantile("candidate", 0.99),)]


def test_window_signals_pool_like_the_aggregate(
    store: Store, alpaca: list[tuple[str, str, str]]
) -> None:
    scores = real_pairs(alpaca, 600)
    scores[7] = dataclasses.replace(scores[7], candidate_refusal=True, primary_refusal=False)
    windows = TumblingWindows(size_ms=5 * MINUTE, grace_ms=0)
    for s in scores:
        windows.add(s, watermark_ms=s.event_time_ms)
    store.write_windows(windows.flush())
    total = Aggregate()
    for s in scores:
        total.add(s)
    assert total.truncations.only_candidate > 50 and total.number_mismatches > 50
    row = store.query(
        "SELECT sum(refusal_pairs), sum(candidate_refusals), sum(only_candidate_refused), "
        "sum(truncation_pairs), sum(only_candidate_truncated), sum(only_primary_truncated), "
        "sum(number_mismatches), sum(negation_mismatches), sum(quality_measured), "
        "sum(quality_unsampled), min(quality_sampled_fraction) FROM windows FINAL"
    ).result_rows[0]
    assert row == (
        total.refusals.n,
        total.refusals.candidate,
        total.refusals.only_candidate,
        total.truncations.n,
        total.truncations.only_candidate,
        total.truncations.only_primary,
        total.number_mismatches,
        total.negation_mismatches,
        total.quality_measured,
        0,
        1.0,  # no semantic sampling
    )
    refused = store.query(
        "SELECT arrayJoin(signal_example_ids['refusal']) FROM windows FINAL"
    ).result_rows
    assert refused == [(scores[7].request_id,)]
    kinds = store.query(
        "SELECT DISTINCT arrayJoin(mapKeys(signal_example_ids)) AS k FROM windows FINAL ORDER BY k"
    ).result_rows
    assert {"refusal", "truncation", "number_mismatch"} <= {k for (k,) in kinds}


def test_decisions_round_trip(store: Store) -> None:
    decisions = [
        Decision(
            experiment=EXPERIMENT,
            epoch=7,
            action=Action.ROLLBACK,
            from_percent=10.0,
            to_percent=0.0,
            decided_at_ms=T0 + 123,
            reason="candidate p99 latency 1.9x the primary's (limit 1.5x) in code",
            evidence=(
                Evidence(
                    metric=Metric.LATENCY_P99,
                    segment="code",
                    verdict=Verdict.FAIL,
                    observed=1.9,
                    reference=1.0,
                    threshold=1.5,
                    n=412,
                    critical=True,
                    bound=1.71,
                    reason="lower confidence bound 1.71 > 1.5",
                    example_request_ids=("req-00012", "req-00044", "it's-a-quote"),
                ),
                Evidence(
                    metric=Metric.QUALITY,
                    segment="chat",
                    verdict=Verdict.NODATA,
                    observed=None,
                    reference=None,
                    threshold=0.8,
                    n=3,
                ),
            ),
        ),
        Decision(EXPERIMENT, 8, Action.HOLD, 10.0, 10.0, T0 + 60_123, "no evidence yet"),
        Decision("other-exp", 1, Action.PROMOTE, 1.0, 5.0, T0, "all pass", ()),
    ]
    assert store.write_decisions(decisions) == 3
    store.write_decisions(decisions[:1])  # replay

    result = store.query("SELECT * FROM decisions FINAL ORDER BY experiment, epoch")
    back = []
    for row in result.named_results():
        evidence = evidence_of(row)
        back.append(
            Decision(
                experiment=row["experiment"],
                epoch=row["epoch"],
                action=Action(row["action"]),
                from_percent=row["from_percent"],
                to_percent=row["to_percent"],
                decided_at_ms=_ms(row["decided_at"]),
                reason=row["reason"],
                evidence=evidence,
            )
        )
    assert back == sorted(decisions, key=lambda d: (d.experiment, d.epoch))

    failing = store.query(
        "SELECT epoch, evidence.metric, evidence.segment, evidence.example_request_ids "
        "FROM decisions FINAL ARRAY JOIN evidence "
        "WHERE experiment = {exp:String} AND evidence.verdict = 'fail'",
        {"exp": EXPERIMENT},
    ).result_rows
    assert failing == [(7, "latency_p99", "code", ["req-00012", "req-00044", "it's-a-quote"])]


def test_dead_letters_keep_raw_bytes(store: Store) -> None:
    big = os.urandom(10 * 1024 * 1024)
    letters = [
        DeadLetter.of(
            InvalidEvent("invalid_json", "unexpected byte 0xff"),
            b'{"request_id": "r1", \xff\xfe\x00 \'"\\',
            T0,
            "shadow.events/3/1042",
        ),
        DeadLetter("schema_violation", "data.arm must be one of ...", b"", T0 + 1, "r-2", "f:2"),
        DeadLetter("too_large", f"{len(big)} bytes", big, T0 + 2, None, "shadow.events/0/7"),
        DeadLetter("invalid_json", "latin-1", "café".encode("latin-1"), T0 + 3),
    ]
    assert store.write_dead_letters(letters) == 4
    rows = store.query(
        "SELECT reason, detail, raw, received_at, request_id, source FROM dead_letters "
        "ORDER BY received_at",
        column_formats={"raw": "bytes"},
    ).result_rows
    back = [DeadLetter(r, d, raw, _ms(t), rid, src) for r, d, raw, t, rid, src in rows]
    assert back == letters
    sizes = store.query("SELECT raw_bytes FROM dead_letters ORDER BY received_at").result_rows
    assert sizes == [(len(d.raw),) for d in letters]


# ---- safety and configuration ---------------------------------------------------------------


def test_parameters_are_bound_not_formatted(store: Store) -> None:
    rid = "it's \\ \"quoted\" '); DROP TABLE pairs; --"
    store.write_pairs([dataclasses.replace(split_single(), request_id=rid)])
    found = store.query(
        "SELECT request_id FROM pairs WHERE request_id = {rid:String}", {"rid": rid}
    ).result_rows
    assert found == [(rid,)]
    injected = store.query(
        "SELECT count() FROM pairs WHERE request_id = {rid:String}", {"rid": "x' OR 1=1 --"}
    ).result_rows
    assert injected == [(0,)]
    with pytest.raises(ValueError, match="placeholders"):
        store.query("SELECT count() FROM pairs WHERE request_id = %(rid)s", {"rid": rid})
    assert store.query("SELECT count() FROM pairs").result_rows == [(1,)]


def test_bodies_expire_30_days_after_insertion_not_event_time(store: Store) -> None:
    old = dataclasses.replace(split_single(), request_id="old", event_time_ms=T0 - 400 * 86_400_000)
    store.write_pairs([old, split_single()])
    store.client.command(
        "INSERT INTO pairs (experiment, segment, event_time, request_id, comparison, outcome, "
        "candidate_body, inserted_at) VALUES ('e', 's', now64(3), 'stale', 'candidate', "
        "'split', 'gone', now64(3) - INTERVAL 31 DAY)"
    )
    store.client.command("OPTIMIZE TABLE pairs FINAL")
    bodies = dict(store.query("SELECT request_id, candidate_body FROM pairs").result_rows)
    assert bodies["old"] == "served by the candidate alone"  # a replay of old traffic
    assert bodies["stale"] == ""  # stored 31 days ago: cleared


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("chdb://./rel/dir", "chdb://{cwd}/rel/dir"),
        ("chdb://rel", "chdb://{cwd}/rel"),
        ("chdb://rel/sub/", "chdb://{cwd}/rel/sub"),
        ("chdb://{cwd}/abs", "chdb://{cwd}/abs"),
        (DEFAULT_DSN, "chdb://{cwd}/.shadowlens/ch"),
        ("http://localhost:8123", "http://localhost:8123"),
        ("https://user:pw@ch.example.com:8443/db", "https://user:pw@ch.example.com:8443/db"),
    ],
)
def test_resolve_dsn(
    dsn: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cwd = str(tmp_path)
    resolved = resolve_dsn(dsn.format(cwd=cwd))
    assert resolved == expected.format(cwd=cwd)
    if resolved.startswith("chdb://"):
        assert Path(resolved.removeprefix("chdb://")).is_dir()


@pytest.mark.parametrize(
    "dsn",
    [
        "",
        "   ",
        "./data",
        "/abs/dir",
        "chdb:rel",
        "chdb://",
        "chdb://memory",
        "chdb://:memory:",
        "chdb://memory/shadowlens",
        "chdb://./d?x=1",
        "clickhouse://localhost:9000",
        "postgres://db",
        "http://",
    ],
)
def test_resolve_dsn_rejects(dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="DSN"):
        resolve_dsn(dsn)


def test_invalid_database_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="database name"):
        Store.open(f"chdb://{tmp_path}/ch", database="x; DROP DATABASE system")


def test_one_process_per_data_directory(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path}/ch"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom shadowlens.store.client import Store\n"
            f"s = Store.open({dsn!r})\nprint('ready', flush=True)\nsys.stdin.read()\ns.close()",
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreBusyError, match="one process per data directory"):
            Store.open(dsn)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    with Store.open(dsn) as store:  # free again once the other process has closed it
        assert store.migrate()


def test_one_directory_per_process(tmp_path: Path) -> None:
    with Store.open(f"chdb://{tmp_path}/a") as first:
        with Store.open(f"chdb://{tmp_path}/a") as same:  # same directory: shared engine
            same.migrate()
        assert first.query("SELECT count() FROM pairs").result_rows == [(0,)]
        with pytest.raises(StoreError, match="one data directory per process"):
            Store.open(f"chdb://{tmp_path}/b")
    with Store.open(f"chdb://{tmp_path}/b") as other:  # after close, another directory
        assert other.migrate()


def test_every_decision_survives_merges(store: Store) -> None:
    hold = Decision("exp", 3, Action.HOLD, 10, 10, T0, "held", ())
    later = dataclasses.replace(hold, decided_at_ms=T0 + MINUTE)
    promote = dataclasses.replace(hold, epoch=4, to_percent=25, decided_at_ms=T0 + 2 * MINUTE)
    store.write_decisions([hold, later, promote])
    store.write_decisions([later])  # a re-insert after a crash
    store.client.command("OPTIMIZE TABLE decisions FINAL")
    rows = store.query("SELECT epoch, action FROM decisions ORDER BY decided_at").result_rows
    assert rows == [(3, "hold"), (3, "hold"), (4, "hold")]
