"""Crash safety, broker outage and poison pills on the real broker (issue 6, markers
`reliability` and `kafka`). Each test prints one `RELIABILITY ...` line with its counts.

Ground truth is computed from the events themselves (`expected_outcomes`) and checked in
ClickHouse by `store_counts`: no pair lost, none stored twice, no request counted twice
by the windows.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from faust.types import TP
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import Arm, Event, Output, Task
from shadowlens.schemas.markers import TYPE_HEADER
from shadowlens.store.client import Store
from shadowlens.streams.transactions import after_last_records
from shadowlens.streams.wire import DLQ_KEEP_BYTES, WATERMARK, read_dead_letter

from tests.builders import event
from tests.kafka_fixtures import TopicFactory
from tests.stream_harness import (
    Broker,
    RawRecord,
    WorkerProcess,
    expected_outcomes,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    read_topic,
    report,
    send_raw,
    store_counts,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

# Issue 6 asks for 50k pairs; on 2 shared cores that run takes 4-8 min (10 restarts, each
# rebuilding ever larger tables), too long for every CI run. CI runs 20k; the full size:
#   SHADOWLENS_TEST_CRASH_REQUESTS=50000 bash scripts/test.sh tests/test_reliability_kafka.py
CRASH_REQUESTS = int(os.environ.get("SHADOWLENS_TEST_CRASH_REQUESTS", "20000"))
KILLS = 10
EARLY_KILLS = 2  # of them at a random moment after start: start-up, recovery or processing
ZERO = (
    "lost",
    "duplicate_pairs",
    "wrong_outcome",
    "unexpected",
    "duplicate_window_counts",
    "window_paired_off",
    "window_orphans_off",
)


def test_kill_9_ten_times_mid_stream_loses_and_doubles_nothing(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """exactly_once: docs/streaming.md promises exact pairs *and* windows through a kill -9
    only with Kafka transactions (at_least_once may count a replayed pair in a window twice).

    Every worker is killed with SIGKILL and a new one starts at once. Eight kills fall at
    seeded points spread over the stream (once the workers together have processed a
    seeded share of the events, plus a random fraction of a second: during scoring,
    produce, changelog writes, ClickHouse inserts or a commit); two at a random moment
    after the start (start-up, table recovery or the first batches). The eleventh worker
    runs to the end of the stream."""
    rng = random.Random(6)
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=CRASH_REQUESTS, seed=6)
    faults = Faults(drop_share=0.01, duplicate_share=0.01)
    events = apply_faults(events, faults, sample.instructions, seed=6)
    expected = expected_outcomes(events)
    topics = make_topics(topic_factory)
    payloads = [e.to_json() for e in events]
    publish_payloads(
        kafka_bootstrap, topics.events, payloads, end_marker=True, misroute_share=0.05, seed=6
    )
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = worker_env(kafka_bootstrap, topics, dsn, guarantee="exactly_once")
    end_ms = last_window_end(events)

    shares = sorted(rng.uniform(0.03, 0.9) for _ in range(KILLS - EARLY_KILLS))
    plan: list[float | None] = [*shares]
    for _ in range(EARLY_KILLS):
        plan.insert(rng.randrange(len(plan) + 1), None)
    processed = 0  # events processed by the killed workers, replays included
    killed_at: list[str] = []
    for i, share in enumerate(plan):
        worker = WorkerProcess(env, tmp_path / f"worker-{i}.log")
        try:
            if share is None:
                time.sleep(rng.uniform(1.0, 8.0))
            else:
                target = share * len(payloads) - processed
                wait_for(
                    lambda w=worker, t=target: w.stats().get("events", 0) >= t,
                    timeout=180,
                    what=f"{target:.0f} more events processed before kill {i + 1}",
                    workers=[worker],
                )
                time.sleep(rng.uniform(0.0, 0.5))
            assert worker.alive(), worker.tail()
            stats = worker.stats()
        finally:
            worker.kill()
        assert "end_of_input" not in stats, "killed after the end: too late to test anything"
        processed += stats.get("events", 0)
        killed_at.append(f"{processed}" if share is not None else f"early@{processed}")

    assert not final_decision_seen(kafka_bootstrap, topics.control, end_ms)
    last = WorkerProcess(env, tmp_path / "worker-last.log")
    try:
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, end_ms),
            timeout=300,
            what="the decision of the last window after the last restart",
            workers=[last],
        )
        stats = last.stats()
    finally:
        assert last.stop() == 0, last.tail()
    assert not stats.get("input_gaps"), "the consumer skipped records"

    counts = store_counts(dsn, expected)
    report(
        capsys,
        test="kill_9",
        guarantee="exactly_once",
        kills_survived=len(plan),
        events=len(payloads),
        processed_before_kills=",".join(killed_at),
        **counts,
    )
    assert counts == {**counts, **dict.fromkeys(ZERO, 0)}, counts


OUTAGE_REQUESTS = 6_000
OUTAGE_S = 10.0


def test_broker_restart_mid_stream_worker_reconnects_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The broker (a dedicated one: the suite's shared broker stays up) stops for
    `OUTAGE_S` while the worker is mid-stream and comes back on the same port and data
    dir. The same worker process must reconnect and finish: every pair in ClickHouse
    exactly once. Half of the traffic is published before the outage, half after."""
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=OUTAGE_REQUESTS, seed=8)
    expected = expected_outcomes(events)
    payloads = [e.to_json() for e in events]
    half = len(payloads) // 2
    end_ms = last_window_end(events)
    broker = Broker()
    topics_made = TopicFactory(broker.bootstrap, "broker-restart")
    try:
        topics = make_topics(topics_made)
        publish_payloads(broker.bootstrap, topics.events, payloads[:half], misroute_share=0.05)
        dsn = f"chdb://{tmp_path / 'ch'}"
        env = worker_env(broker.bootstrap, topics, dsn)
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            wait_for(
                lambda: worker.stats().get("events", 0) >= half // 3,
                timeout=120,
                what="the worker to be mid-stream",
                workers=[worker],
            )
            before = worker.stats()
            broker.halt()
            time.sleep(OUTAGE_S)
            assert worker.alive(), f"the worker died while the broker was down:\n{worker.tail()}"
            broker.resume()
            publish_payloads(
                broker.bootstrap, topics.events, payloads[half:], end_marker=True,
                misroute_share=0.05, seed=1,
            )  # fmt: skip
            wait_for(
                lambda: final_decision_seen(broker.bootstrap, topics.control, end_ms),
                timeout=240,
                what="the decision of the last window after the broker came back",
                workers=[worker],
            )
            stats = worker.stats()
        finally:
            code = worker.stop()
        assert code == 0, worker.tail()
        topics_made.cleanup()
    finally:
        broker.stop()
    assert before.get("events", 0) < len(payloads), "the outage came after the stream"
    assert not stats.get("input_gaps"), "the consumer skipped records"
    counts = store_counts(dsn, expected)
    report(
        capsys,
        test="broker_restart",
        guarantee="at_least_once",
        outage_s=OUTAGE_S,
        worker_restarts=0,
        events=len(payloads),
        events_before_outage=before.get("events", 0),
        **counts,
    )
    assert counts == {**counts, **dict.fromkeys(ZERO, 0)}, counts


POISON_REQUESTS = 2_000
BIG_BYTES = 900_000


def poison_records(partitions: int) -> list[tuple[RawRecord, str]]:
    """Bad records, each with the dead-letter reason it must get, on every partition."""
    deep = event("poison-deep", task=Task.EXTRACTION, output=Output(json=[])).to_json()
    deep = deep.replace(b'"json":[]', b'"json":' + b"[" * 300 + b"]" * 300)  # schema-valid
    bad: list[tuple[bytes | None, bytes, list[tuple[str, bytes | None]], str]] = [
        (b"bad-json", b"\x00\x01 not json {", [], "invalid_json"),
        (b"bad-schema", orjson.dumps({"request_id": "x", "arm": "no"}), [], "schema_violation"),
        (b"bad-900k", b"{" + b"x" * BIG_BYTES, [], "invalid_json"),
        (None, b"[1, 2", [], "invalid_json"),  # no key
        (b"\xff\xfe\xfd", b"\xff\xfe not UTF-8", [], "invalid_json"),  # key not UTF-8
        (b"fake-wm", b"no watermark", [(TYPE_HEADER, WATERMARK), ("é", b"\xff")], "invalid_json"),
        (b"null-hdr", b"{}", [(TYPE_HEADER, None), ("x", None)], "schema_violation"),
        (b"poison-deep", deep, [], "processing_error"),  # passes the schema, breaks pairing
    ]  # fmt: skip
    return [((k, v, h, p), reason) for p in range(partitions) for k, v, h, reason in bad]


def odd_but_good(events: list[Event]) -> list[RawRecord]:
    """Valid events sent the way a sloppy client would: unkeyed, under keys that are not
    UTF-8, with garbage headers (a fake watermark type among them), one 900 KB event."""
    out: list[RawRecord] = []
    for i, e in enumerate(events):
        raw = e.to_json()
        if i % 4 == 0:
            out.append((None, raw, [], None))
        elif i % 4 == 1:
            out.append((b"\xc3\x28" + e.request_id.encode(), raw, [], None))
        elif i % 4 == 2:
            headers = [(TYPE_HEADER, WATERMARK), ("x", None), ("bin", b"\x00\xff")]
            out.append((e.request_id.encode(), raw, headers, None))
        else:
            out.append((e.request_id.encode(), raw, [(TYPE_HEADER, b"\xfe\xff")], None))
    return out


def test_poison_pills_never_stall_a_partition(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Eight kinds of bad record on every events partition, between two halves of good
    traffic, plus good events sent oddly. One worker, never restarted: every bad record
    is in shadow.deadletter (and ClickHouse) with its reason, every good event is paired."""
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=POISON_REQUESTS, seed=9)
    odd_ids = {e.request_id for e in events[len(events) // 2 :: 97]}
    big_id = min(odd_ids)
    events = [
        replace(e, output=replace(e.output, text="y" * BIG_BYTES))
        if e.request_id == big_id and e.arm == Arm.PRIMARY
        else e
        for e in events
    ]
    normal = [e for e in events if e.request_id not in odd_ids]
    odd = [e for e in events if e.request_id in odd_ids]
    half = len(normal) // 2
    topics = make_topics(topic_factory)
    bad = poison_records(4)
    publish_payloads(kafka_bootstrap, topics.events, [e.to_json() for e in normal[:half]])
    send_raw(kafka_bootstrap, topics.events, [r for r, _ in bad] + odd_but_good(odd))
    publish_payloads(
        kafka_bootstrap, topics.events, [e.to_json() for e in normal[half:]], end_marker=True
    )
    dsn = f"chdb://{tmp_path / 'ch'}"
    worker = WorkerProcess(worker_env(kafka_bootstrap, topics, dsn), tmp_path / "worker.log")
    try:
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, last_window_end(events)),
            timeout=180,
            what="the decision of the last window",
            workers=[worker],
        )
        stats = worker.stats()
    finally:
        assert worker.stop() == 0, worker.tail()
    assert not stats.get("input_gaps"), "the consumer skipped records"

    letters = [
        (r.key, read_dead_letter(r.value, r.headers))
        for r in read_topic(kafka_bootstrap, topics.deadletter)
    ]
    want = Counter(reason for _, reason in bad)
    assert Counter(x.reason for _, x in letters) == want
    sent = Counter((k, v[:DLQ_KEEP_BYTES], reason) for (k, v, _, _), reason in bad)
    assert Counter((k, x.raw, x.reason) for k, x in letters) == sent, "bytes and keys kept"
    assert {x.source.rsplit("/", 2)[1] for _, x in letters} == {"0", "1", "2", "3"}
    with Store.open(dsn) as store:
        stored = dict(
            store.query("SELECT reason, count() FROM dead_letters GROUP BY reason").result_rows
        )
        big = store.query(
            "SELECT length(primary_body) FROM pairs FINAL WHERE request_id = {rid:String}",
            parameters={"rid": big_id},
        ).result_rows
    assert Counter(stored) == want
    assert big == [(BIG_BYTES,)], "the 900 KB event was paired"
    counts = store_counts(dsn, expected_outcomes(events))
    report(
        capsys,
        test="poison_pills",
        bad_records=len(bad),
        dead_lettered=len(letters),
        odd_good_events=len(odd),
        events=len(events) + len(bad),
        worker_restarts=0,
        **counts,
    )
    assert counts == {**counts, **dict.fromkeys(ZERO, 0)}, counts


def test_recovery_reads_up_to_the_last_committed_record(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """A changelog under transactions ends with markers and, after a kill, aborted
    records: recovery must stop at the last committed record, not wait for the end. One
    whose records were all deleted (first offset above 0) has nothing to read."""
    committed, aborted, empty, deleted = topic_factory.many(4, partitions=1)

    async def run() -> dict[TP, int]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id="t-tail")
        await producer.start()
        try:
            runs = (
                (committed, 3, True),
                (aborted, 3, True),
                (aborted, 2, False),
                (deleted, 2, True),
            )
            for topic, n, commit in runs:
                await producer.begin_transaction()
                for i in range(n):
                    await producer.send_and_wait(topic, b"v", key=b"%d" % i)
                await (producer.commit_transaction() if commit else producer.abort_transaction())
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records({TP(deleted, 0): RecordsToDelete(2)})
        finally:
            await admin.close()
        reader = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, isolation_level="read_committed"
        )
        await reader.start()
        try:
            tps = [TP(t, 0) for t in (committed, aborted, empty, deleted)]
            ends = await reader.end_offsets(tps)
            assert ends == {
                TP(committed, 0): 4,
                TP(aborted, 0): 7,
                TP(empty, 0): 0,
                TP(deleted, 0): 3,
            }
            return await after_last_records(reader, ends)
        finally:
            await reader.stop()

    after = asyncio.run(run())
    assert after == {TP(committed, 0): 3, TP(aborted, 0): 3, TP(empty, 0): 0, TP(deleted, 0): 0}
