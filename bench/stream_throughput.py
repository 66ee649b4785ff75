"""Streaming throughput on one real Kafka broker: consumers, Faust, quixstreams and the worker.

    .venv/bin/python bench/stream_throughput.py                  # 20,000 requests = 40,000 events
    .venv/bin/python bench/stream_throughput.py --requests 5000  # a quicker look

Starts its own Apache Kafka broker (scripts/kafka.sh start, as scripts/test.sh does) and
always stops it. M paired events are built from the shipped sample (real AlpacaEval outputs
at Azure trace arrivals, no faults) and produced once, keyed by request_id, to a topic with
`--partitions` partitions. Then, one after the other on that broker and those events:

(a) raw: one aiokafka consumer reads every event from the beginning and decodes it with
    orjson -- the floor any Kafka consumer in Python pays;
(a') Faust alone: a no-op agent in a worker process, on the worker's own app settings
    (`shadowlens.streams.app.new_app`: same consumer, processing guarantee, batches of
    `stream.take_events`, acks, a changelog table as the worker has), that only
    orjson-decodes and counts -- the most a Faust worker can do here, so (a')/(a) is the
    part of the gap that is Faust's and (b)/(a') the part that is ours;
(d) quixstreams (librdkafka) with the worker's processing guarantee, orjson-decoding them;
(d') the same, pairing each request's halves in its State (RocksDB, changelogged): the peer
    of our pairing, without its watermarks, orphans and scores;
(b) pipeline: one `shadowlens worker` (non-semantic comparators, chdb; the worker's default
    processing guarantee and producer batch size unless `--guarantee` or
    `--producer-batch-bytes` say otherwise), measured end to end: an event counts once the
    row of its request is in ClickHouse (the rows' `inserted_at`; a request's row written
    twice counts once, so this counts unique events);
(c) the same with two worker processes in one consumer group;
(e) the ceiling: one worker as in (b) but without content scores (`bench/unscored_worker.py`:
    no label, JSON, lexical or signal comparators; all else as deployed), the most that
    any speed-up of the comparators could give (b).

Every arm is measured by one rule (`steady`): events/s between the moment 15 % and the
moment 90 % of the M events are done (after every worker owns partitions, for the workers),
so start-up, a join and the last batches' tail do not count; and the CPU time of its
process(es) in that window per event (user + system, all threads): on a shared machine CPU
per event moves far less with other load than events/s does, so compare runs on it. The
child arms report (time, events, CPU) after each batch; the workers are sampled from /proc.

Without Kafka, on the same events: the plain-Python `shadowlens.job.pipeline.Pipeline` (what
`shadowlens replay` runs: decode, pair, score, window, judge) and the per-event cost of each
step the worker takes (decode, pair, score -- by the per-pair reference path and by the batch
path side by side --, changelog and pairs encoding, the judging side's decode and window add),
in CPU microseconds per event. Last line:

    RESULT ratio_pipeline_vs_raw=<b/a> ratio_pipeline_vs_faust=<b/a'> ratio_faust_vs_raw=<a'/a>
        ratio_two_workers=<c/b> ratio_pipeline_vs_quix=<b/d'>
        ratio_unscored_vs_faust=<e/a'> ratio_unscored_vs_raw=<e/a>

Before the RESULT line the bench measures how much two CPU-bound processes gain over one on
this machine right now: the ceiling for ratio_two_workers (the broker shares the cores too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shadowlens.job.pipeline import Pipeline  # noqa: E402
from shadowlens.job.scoring import Scorer, pairing_config  # noqa: E402
from shadowlens.job.sinks import MemorySink  # noqa: E402
from shadowlens.judge.policy import load_policy  # noqa: E402
from shadowlens.pipeline.pairing import Pairer  # noqa: E402
from shadowlens.pipeline.windows import TumblingWindows  # noqa: E402
from shadowlens.replay.datasets import load_sample  # noqa: E402
from shadowlens.replay.publish import publish  # noqa: E402
from shadowlens.replay.traffic import build_events  # noqa: E402
from shadowlens.schemas.events import decode_event  # noqa: E402
from shadowlens.store.client import Store  # noqa: E402
from shadowlens.streams.app import STATS_MARK, new_app  # noqa: E402
from shadowlens.streams.codec import encode_pending  # noqa: E402
from shadowlens.streams.config import Settings  # noqa: E402
from shadowlens.streams.topics import Topology  # noqa: E402
from shadowlens.streams.wire import decode_pairs, encode_pairs  # noqa: E402

from bench.kafka_bench import (  # noqa: E402
    SHADOWLENS,
    broker,
    check_alive,
    cpu_seconds,
    create_topic,
    marked,
    spawn,
    stop,
    worker_env,
)

WINDOW = (0.15, 0.90)
PROGRESS_MARK = "bench-progress"
SCORE_BATCH = Settings().batch_size  # pairing steps scored at once: one agent batch of events
ARMS = ("raw", "faust", "quix", "quix-pair")
UNSCORED = (sys.executable, str(ROOT / "bench" / "unscored_worker.py"))


# --------------------------------------------------------------------------- one rule


def progress(n: int) -> None:
    """A child arm's line: wall time, events done, its CPU seconds (all threads)."""
    at, cpu = time.time(), time.process_time()
    print(PROGRESS_MARK, orjson.dumps({"at": at, "n": n, "cpu": cpu}).decode(), flush=True)


def steady(
    done: list[tuple[float, int]], cpu: list[tuple[float, float]], m: int, ready: float = 0.0
) -> dict[str, float]:
    """The one rule every arm is measured by: events/s from the last moment, `ready` or
    later, at which fewer than `WINDOW[0]` of the `m` events were done to the first at
    which `WINDOW[1]` were (start-up and the last batches' tail left out; a step of many
    events at once, as an insert into ClickHouse is, falls inside the window), and the
    CPU time spent in that window per event, from (time, CPU seconds) samples."""
    after = [(t, n) for t, n in done if t >= ready]
    start = max(((t, n) for t, n in after if n < WINDOW[0] * m), default=after[0])
    end = next((t, n) for t, n in after if n >= WINDOW[1] * m)
    times, seconds = zip(*cpu, strict=True)
    used = np.interp(end[0], times, seconds) - np.interp(start[0], times, seconds)
    return {
        "events_per_s": (end[1] - start[1]) / (end[0] - start[0]),
        "cpu_us_per_event": used * 1e6 / (end[1] - start[1]),
    }


def run_arm(arm: str, env: dict[str, str], m: int, partitions: int, workdir: Path) -> dict:
    """Run one consumer arm in a process of its own until it has seen the `m` events."""
    log = workdir / f"{arm}-{uuid.uuid4().hex[:6]}.log"
    cmd = [sys.executable, __file__, "--arm", arm, "--events", str(m)]
    proc = spawn([*cmd, "--partitions", str(partitions)], env, log)
    try:
        deadline = time.monotonic() + 600
        while not (lines := marked(log, PROGRESS_MARK)) or lines[-1]["n"] < m:
            check_alive([proc], [log], deadline)
            time.sleep(0.2)
    finally:
        stop([proc])
    done = [(s["at"], s["n"]) for s in lines]
    return steady(done, [(s["at"], s["cpu"]) for s in lines], m)


# --------------------------------------------------------------------------- (a) raw


async def raw_arm(env: dict[str, str], expected: int) -> None:
    """(a): a plain aiokafka consumer that orjson-decodes every value."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=env["SHADOWLENS_KAFKA_BOOTSTRAP"],
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        topic = env["SHADOWLENS_TOPIC_EVENTS"]
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    if not record.headers:  # end-of-input markers are not events
                        orjson.loads(record.value)
                        seen += 1
            progress(seen)
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- (a') Faust alone


def faust_arm(expected: int, partitions: int) -> None:
    """(a'): a Faust agent on the worker's app settings that orjson-decodes the events.

    It has one changelog table, never written, as the worker has: without one Faust gives
    partitions out with aiokafka's round-robin assignor instead of its own, and then
    exactly_once fails at the first assignment (its transactions need Faust's topic
    groups)."""
    import faust

    settings = Settings.from_env()
    app = new_app(settings, Topology(partitions, 1, 1))
    source = app.topic(settings.topic_events, key_serializer="raw", value_serializer="raw")
    app.Table("bench-noop-unused", default=int)

    async def count(stream: Any) -> None:
        seen = 0
        batches = stream.take_events(settings.batch_size, within=settings.batch_within_s)
        async for events in batches:
            for event in events:
                if not event.message.headers:  # end-of-input markers are not events
                    orjson.loads(event.message.value)
                    seen += 1
                await stream.ack(event)
            progress(seen)

    app.agent(source, name="noop")(count)
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


# --------------------------------------------------------------------------- (d) quixstreams


def quix_arm(expected: int, pair: bool) -> None:
    """(d): quixstreams (librdkafka) with the worker's processing guarantee, orjson-decoding
    the events; with `pair`, also pairing the halves of each request in its State (RocksDB,
    changelogged, keyed by request_id as the events are): the first half is kept, the
    second takes it out. Our pairing does more (watermarks, orphans, scores)."""
    from quixstreams import Application

    settings = Settings.from_env()
    seen = [0]

    def counted(*_: Any) -> None:  # after each record; progress every 500 events
        if seen[0] % 500 == 0 or seen[0] >= expected:
            progress(seen[0])

    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=f"{settings.app_id}-quix",
        auto_offset_reset="earliest",
        state_dir=str(settings.state_dir / settings.app_id / "quix"),
        processing_guarantee=settings.processing_guarantee.replace("_", "-"),
        commit_interval=settings.commit_interval_s,
        loglevel="WARNING",
        on_message_processed=counted,
    )
    topic = app.topic(settings.topic_events, key_deserializer="bytes", value_deserializer="bytes")

    def decode(value: bytes, key: Any, timestamp: int, headers: Any) -> None:
        if not headers:  # end-of-input markers are not events
            orjson.loads(value)
            seen[0] += 1

    def decode_and_pair(value: bytes, key: Any, timestamp: int, headers: Any, state: Any) -> None:
        if headers:
            return
        event = orjson.loads(value)
        seen[0] += 1
        if state.get("half") is None:
            state.set("half", event)  # serialised by the State (JSON), as a pending half
        else:
            state.delete("half")  # paired

    sdf = app.dataframe(topic)
    if pair:
        sdf.update(decode_and_pair, stateful=True, metadata=True)
    else:
        sdf.update(decode, metadata=True)
    app.run()


# --------------------------------------------------------------------------- (b), (c)


def run_workers(
    bootstrap: str,
    events_topic: str,
    requests: int,
    workers: int,
    workdir: Path,
    settings: dict[str, str],
    command: tuple[str, ...] = (SHADOWLENS,),
) -> dict[str, Any]:
    """Run `workers` processes of `command` on the pre-produced events until every pair
    is written, then measure them end to end: events whose rows are in ClickHouse
    (`landed`), by the same rule as every arm, counted from when every worker owns
    partitions."""
    env = worker_env(bootstrap, events_topic, workdir, settings)
    logs = [workdir / f"{env['SHADOWLENS_APP_ID']}-worker{i}.log" for i in range(workers)]
    procs = [spawn([*command, "worker"], env, log) for log in logs]
    cpu: list[tuple[float, float]] = []  # (time, CPU seconds of all workers)
    try:
        deadline = time.monotonic() + 600
        while True:
            cpu.append((time.time(), sum(cpu_seconds(p.pid) for p in procs)))
            stats = [marked(log, STATS_MARK) for log in logs]
            written = sum(s[-1].get("written", {}).get("pairs", 0) for s in stats if s)
            if written >= requests:
                break
            check_alive(procs, logs, deadline)
            time.sleep(0.25)
    finally:
        stop(procs)
    # every worker owns partitions and has processed events from here on
    ready = max(
        next(s["at"] for s in lines if s.get("pairing_tasks") and s.get("events"))
        for lines in stats
    )
    done, rows = landed(env["SHADOWLENS_DSN"])
    first = min(s["first_event_at"] for lines in stats for s in lines if s.get("first_event_at"))
    return {
        **steady(done, cpu, 2 * requests, ready),
        "all_in_clickhouse_s": done[-1][0] - first,
        "rows": rows,
        "unique_events": done[-1][1],
        "events_by_worker": [lines[-1].get("events", 0) for lines in stats],
    }


def landed(dsn: str) -> tuple[list[tuple[float, int]], int]:
    """(time, events in ClickHouse) after each insert, each request's row counted once (at
    its first insert: rows written again after a rebalance do not count), two events for a
    pair and one for an orphan; and how many rows there are, duplicates included."""
    with Store.open(dsn, readonly=True) as store:
        result = store.query(
            "SELECT at, sum(events), sum(copies) FROM ("
            " SELECT toUnixTimestamp64Milli(min(inserted_at)) AS at,"
            " if(any(outcome) = 'paired', 2, 1) AS events, count() AS copies"
            " FROM pairs GROUP BY request_id, comparison"
            ") GROUP BY at ORDER BY at"
        )
    done, n, rows = [], 0, 0
    for at, events, copies in result.result_rows:
        n += events
        rows += copies
        done.append((at / 1000, n))
    return done, rows


# --------------------------------------------------------------------------- no Kafka


def pipeline_rate(payloads: list[bytes]) -> tuple[float, float]:
    """Events/s of the plain-Python Pipeline (`shadowlens replay`'s) on the same events,
    and its CPU microseconds per event."""
    pipeline = Pipeline(load_policy(), MemorySink())
    start, cpu = time.perf_counter(), time.process_time()
    for raw in payloads:
        pipeline.feed(raw)
    pipeline.finish()
    n = len(payloads)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1e6 / n


def stage_costs(payloads: list[bytes]) -> dict[str, float]:
    """CPU microseconds per event of each step the worker takes, run one step at a time
    over the same events (scoring and the judging side run per pair: two events). CPU
    time, not wall time, so that other load on the machine counts less."""
    policy = load_policy()
    n = len(payloads)
    costs: dict[str, float] = {}

    def timed(name: str, step: Any) -> Any:
        start = time.process_time()
        out = step()
        costs[name] = (time.process_time() - start) * 1e6 / n
        return out

    events = timed("decode", lambda: [decode_event(raw) for raw in payloads])
    pairer = Pairer({}, pairing_config(policy))
    matched = timed("pair", lambda: [pairer.add(e) for e in events])
    scorer = Scorer(policy)
    timed("score_per_pair", lambda: [s for m in matched for s in scorer.score(m)])
    batches = [matched[i : i + SCORE_BATCH] for i in range(0, len(matched), SCORE_BATCH)]
    scores = timed("score_batch", lambda: [s for b in batches for s in scorer.score_batch(b)])
    timed("changelog_encode", lambda: [encode_pending(p) for p in pairer.state.values()])
    records = timed("pairs_encode", lambda: encode_pairs(scores))
    decoded = timed("pairs_decode", lambda: [x for r in records for x in decode_pairs(r)])
    windows = TumblingWindows(policy.windows.size_ms, policy.windows.grace_ms)
    timed("window_add", lambda: [windows.add(x, 0) for x in decoded])
    return costs


# --------------------------------------------------------------------------- machine


def _spin(n: int) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - start


def cpu_scaling(n: int = 10_000_000) -> float:
    """Speed-up of two CPU-bound processes over one, measured now: the most two workers can
    gain here (shared or throttled cores give ~1, two free cores ~2)."""
    from concurrent.futures import ProcessPoolExecutor

    one = _spin(n)
    with ProcessPoolExecutor(2) as pool:
        start = time.perf_counter()
        list(pool.map(_spin, [n, n]))
        two = time.perf_counter() - start
    return 2 * one / two


# --------------------------------------------------------------------------- main


def row(label: str, rate: float, cpu_us: float, note: str = "") -> None:
    """One line of the report: events/s and the consumer's CPU per event."""
    print(f"{label:32s} {rate:10,.0f} events/s  cpu {cpu_us:6.1f} us/event{note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests (2 events each)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--guarantee", choices=("exactly_once", "at_least_once"))
    parser.add_argument("--producer-batch-bytes", type=int)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # a child arm's process
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm == "raw":
        asyncio.run(raw_arm(dict(os.environ), args.events))
        return
    if args.arm == "faust":
        faust_arm(args.events, args.partitions)
        return
    if args.arm is not None:
        quix_arm(args.events, pair=args.arm == "quix-pair")
        return
    if args.partitions < 2:
        parser.error("--partitions must be >= 2 for two workers to share the work")
    settings = {
        f"SHADOWLENS_{name}": str(value)
        for name, value in (
            ("PROCESSING_GUARANTEE", args.guarantee),
            ("PRODUCER_BATCH_BYTES", args.producer_batch_bytes),
        )
        if value is not None
    }
    print(f"worker settings: {settings or 'defaults'}", flush=True)

    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=args.requests)
    payloads = [e.to_json() for e in events]
    m = len(payloads)
    print(f"{m} events ({args.requests} requests), {args.partitions} partitions", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    costs = stage_costs(payloads)
    print(
        "per event, no Kafka (us): " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()),
        flush=True,
    )
    row("plain-Python Pipeline, no Kafka", *pipeline_rate(payloads))

    with broker() as bootstrap:
        topic = f"bench-events-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topic(bootstrap, topic, args.partitions))
        produced = asyncio.run(publish(payloads, bootstrap, topic, end_marker=True))
        print(f"produced in {produced.seconds:.1f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="shadowlens-bench-") as tmp:
            work = Path(tmp)
            arm: dict[str, dict[str, float]] = {}
            for name, label in (
                ("raw", "(a) raw aiokafka + orjson"),
                ("faust", "(a') no-op Faust agent + orjson"),
                ("quix", "(d) quixstreams + orjson"),
                ("quix-pair", "(d') quixstreams, paired in State"),
            ):
                env = worker_env(bootstrap, topic, work, settings)
                arm[name] = run_arm(name, env, m, args.partitions, work)
                row(label, arm[name]["events_per_s"], arm[name]["cpu_us_per_event"])
            for name, workers, command, label in (
                ("workers1", 1, (SHADOWLENS,), "(b) pipeline, 1 worker"),
                ("workers2", 2, (SHADOWLENS,), "(c) pipeline, 2 workers"),
                ("unscored", 1, UNSCORED, "(e) 1 worker, no content scores"),
            ):
                run = arm[name] = run_workers(
                    bootstrap, topic, args.requests, workers, work, settings, command
                )
                note = (
                    f"  (end to end: all {run['unique_events']} events in ClickHouse after "
                    f"{run['all_in_clickhouse_s']:.1f} s, {run['rows']} rows for "
                    f"{args.requests} requests; events per worker {run['events_by_worker']})"
                )
                row(label, run["events_per_s"], run["cpu_us_per_event"], note)
    print(
        f"machine: {os.cpu_count()} cpus, two CPU-bound processes run {cpu_scaling():.2f}x "
        f"one (load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    rate = {name: a["events_per_s"] for name, a in arm.items()}
    print(
        f"RESULT ratio_pipeline_vs_raw={rate['workers1'] / rate['raw']:.3f} "
        f"ratio_pipeline_vs_faust={rate['workers1'] / rate['faust']:.3f} "
        f"ratio_faust_vs_raw={rate['faust'] / rate['raw']:.3f} "
        f"ratio_two_workers={rate['workers2'] / rate['workers1']:.3f} "
        f"ratio_pipeline_vs_quix={rate['workers1'] / rate['quix-pair']:.3f} "
        f"ratio_unscored_vs_faust={rate['unscored'] / rate['faust']:.3f} "
        f"ratio_unscored_vs_raw={rate['unscored'] / rate['raw']:.3f}"
    )


if __name__ == "__main__":
    main()
