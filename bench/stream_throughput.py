"""Streaming throughput on one real Kafka broker: raw consumer vs the worker, 1 vs 2 workers.

    .venv/bin/python bench/stream_throughput.py                  # 20,000 requests = 40,000 events
    .venv/bin/python bench/stream_throughput.py --requests 5000  # a quicker look

Starts its own Apache Kafka broker (scripts/kafka.sh start, as scripts/test.sh does) and
always stops it. M paired events are built from the shipped sample (real AlpacaEval outputs
at Azure trace arrivals, no faults) and produced once, keyed by request_id, to a topic with
`--partitions` partitions. Then, side by side on that broker and those events:

(a) raw: one aiokafka consumer reads every event from the beginning and decodes it with
    orjson -- the floor any Kafka consumer in Python pays;
(a') Faust alone: a no-op agent in one worker process, on the worker's own app settings
    (`shadowlens.streams.app.new_app`: same consumer, batches of `stream.take_events`, acks), that
    only orjson-decodes and counts -- no tables, no outputs: the most a Faust worker can do
    here, so (a')/(a) is the part of the gap that is Faust's and (b)/(a') the part that is
    ours;
(b) pipeline: one `shadowlens worker` (non-semantic comparators, at_least_once, chdb);
(c) the same with two worker processes in one consumer group.

Without Kafka, on the same events: the plain-Python `shadowlens.job.pipeline.Pipeline` (what
`shadowlens replay` runs: decode, pair, score, window, judge) and the per-event cost of each
step the worker takes (decode, pair, score, changelog and pairs encoding, the judging
side's decode and window add), in CPU microseconds per event.

Every row also gives the consumer's CPU time per event (the process's user + system time;
for (b) and (c) sampled from /proc over the rate window, summed over workers): on a shared
machine it moves far less with other load than events/s does, so compare runs on it.

Rates: (a) and (a') are M over the time from the first record to the last. For (b) and (c) the
workers' own counters (logged every 0.25 s, merged across workers) are read: the rate is
the events paired between 15 % and 90 % of M, in a window that starts only once every
worker owns partitions and has processed events, so the group's start-up and the second
worker's join do not count, and that ends before the tail of the last batches. The time
from the first event to every pair being in ClickHouse (end to end, start-up included) is
printed too. Last line:

    RESULT ratio_pipeline_vs_raw=<b/a> ratio_two_workers=<c/b> ratio_faust_vs_raw=<a'/a>
        ratio_pipeline_vs_faust=<b/a'>

Before the RESULT line the bench measures how much two CPU-bound processes gain over one on
this machine right now: the ceiling for ratio_two_workers (the broker shares the cores too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shadowlens.gateway.keys import generate  # noqa: E402
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
from shadowlens.streams.app import STATS_MARK, new_app  # noqa: E402
from shadowlens.streams.codec import encode_pending  # noqa: E402
from shadowlens.streams.config import Settings  # noqa: E402
from shadowlens.streams.topics import Topology  # noqa: E402
from shadowlens.streams.wire import decode_pairs, encode_pairs  # noqa: E402

SHADOWLENS = str(Path(sys.executable).with_name("shadowlens"))
WINDOW = (0.15, 0.90)
NOOP_MARK = "bench-noop-done"


# --------------------------------------------------------------------------- broker


def start_broker() -> tuple[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kafka.sh"), "start"],
        check=True,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "KAFKA_OWNER_PID": str(os.getpid())},
    ).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return values["KAFKA_BOOTSTRAP"], values["KAFKA_DATADIR"]


def stop_broker(datadir: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "kafka.sh"), "stop", datadir],
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


# --------------------------------------------------------------------------- (a) raw


async def raw_consume(bootstrap: str, topic: str, expected: int) -> tuple[float, float]:
    """Events/s of a plain aiokafka consumer that orjson-decodes every value, and its CPU
    microseconds per event."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first: float | None = None
        cpu = 0.0
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.headers:  # end-of-input markers are not events
                        continue
                    orjson.loads(record.value)
                    seen += 1
            if first is None and seen:
                first, cpu = time.perf_counter(), time.process_time()
        cpu_us = (time.process_time() - cpu) * 1e6 / expected
        return expected / (time.perf_counter() - (first or time.perf_counter())), cpu_us
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- (a') Faust alone


def noop_worker(expected: int, partitions: int) -> None:
    """Run in a worker process of its own (`--noop-worker`): a Faust agent on the worker's
    app settings that orjson-decodes and counts the events, then logs its timings."""
    import faust

    settings = Settings.from_env()
    app = new_app(settings, Topology(partitions, 1, 1))
    source = app.topic(settings.topic_events, key_serializer="raw", value_serializer="raw")

    async def count(stream: Any) -> None:
        seen = 0
        first: tuple[float, float] | None = None
        batches = stream.take_events(settings.batch_size, within=settings.batch_within_s)
        async for events in batches:
            for event in events:
                if not event.message.headers:  # end-of-input markers are not events
                    orjson.loads(event.message.value)
                    seen += 1
                await stream.ack(event)
            first = first or (time.time(), time.process_time())
            if seen >= expected:
                last = (time.time(), time.process_time())
                print(NOOP_MARK, orjson.dumps({"first": first, "last": last}).decode())
                sys.stdout.flush()

    app.agent(source, name="noop")(count)
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def faust_consume(
    env: dict[str, str], expected: int, partitions: int, workdir: Path
) -> tuple[float, float]:
    """Events/s of `noop_worker`, from its first batch to its last record, and its CPU
    microseconds per event."""
    log = workdir / "noop.log"
    args = ["--noop-worker", str(expected), "--partitions", str(partitions)]
    proc = spawn([sys.executable, __file__, *args], env, log)
    try:
        deadline = time.monotonic() + 300
        while True:
            text = log.read_bytes()
            mark = text.find(NOOP_MARK.encode())
            if mark >= 0 and text.find(b"\n", mark) > 0:
                line = text[mark + len(NOOP_MARK) : text.find(b"\n", mark)]
                (t0, cpu0), (t1, cpu1) = orjson.loads(line).values()
                return expected / (t1 - t0), (cpu1 - cpu0) * 1e6 / expected
            check_alive([proc], [log], deadline)
            time.sleep(0.2)
    finally:
        stop([proc])


# --------------------------------------------------------------------------- (b), (c)


def stats_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            mark = line.find(STATS_MARK.encode())
            if mark >= 0:
                with contextlib.suppress(orjson.JSONDecodeError):  # a line being written
                    out.append(orjson.loads(line[mark + len(STATS_MARK) :]))
    return out


def worker_env(bootstrap: str, events_topic: str, workdir: Path) -> dict[str, str]:
    """The environment of one run's workers: its own app id, topics and ClickHouse."""
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWLENS_")}
    env.update(
        SHADOWLENS_KAFKA_BOOTSTRAP=bootstrap,
        SHADOWLENS_APP_ID=f"bench-{run}",
        SHADOWLENS_DSN=f"chdb://{workdir / run / 'ch'}",
        SHADOWLENS_STATE_DIR=str(workdir),
        SHADOWLENS_TOPIC_EVENTS=events_topic,
        SHADOWLENS_TOPIC_REPARTITION=f"bench-{run}-repartition",
        SHADOWLENS_TOPIC_PAIRS=f"bench-{run}-pairs",
        SHADOWLENS_TOPIC_DEADLETTER=f"bench-{run}-deadletter",
        SHADOWLENS_TOPIC_CONTROL=f"bench-{run}-control",
        SHADOWLENS_TOPIC_COMMANDS=f"bench-{run}-commands",
        SHADOWLENS_SIGNING_KEY=generate("bench-worker").private_line(),  # signed, as deployed
        SHADOWLENS_SESSION_TIMEOUT_S="6",
        SHADOWLENS_HEARTBEAT_INTERVAL_S="0.5",
        SHADOWLENS_COMMIT_INTERVAL_S="1",
        SHADOWLENS_STATS_INTERVAL_S="0.25",
    )
    return env


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_alive(procs: list[subprocess.Popen[bytes]], logs: list[Path], deadline: float) -> None:
    for p, log in zip(procs, logs, strict=True):
        if p.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker died; the end of its log:\n{tail}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"timed out; see {logs}")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a clean Faust shutdown), then kill what is still running after 60 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def run_workers(
    bootstrap: str, events_topic: str, requests: int, workers: int, workdir: Path
) -> dict[str, float]:
    """Run `workers` processes on the pre-produced events; return rates and timings."""
    env = worker_env(bootstrap, events_topic, workdir)
    logs = [workdir / f"{env['SHADOWLENS_APP_ID']}-worker{i}.log" for i in range(workers)]
    procs = [spawn([SHADOWLENS, "worker"], env, log) for log in logs]
    cpu: list[tuple[float, float]] = []  # (time, CPU seconds of all workers)
    try:
        deadline = time.monotonic() + 600
        while True:
            cpu.append((time.time(), sum(cpu_seconds(p.pid) for p in procs)))
            stats = [stats_lines(log) for log in logs]
            written = max((s[-1].get("written", {}).get("pairs", 0) for s in stats if s), default=0)
            if written >= requests:
                break
            check_alive(procs, logs, deadline)
            time.sleep(0.25)
    finally:
        stop(procs)
    return rates(stats, requests, cpu)


def rates(
    stats: list[list[dict[str, Any]]], requests: int, cpu: list[tuple[float, float]]
) -> dict[str, Any]:
    """Steady-state events/s over the window, from the workers' merged counters, and the
    workers' CPU microseconds per event over the same window."""
    m = 2 * requests
    # every worker owns partitions and has processed events from here on
    ready = max(
        next(s["at"] for s in lines if s.get("pairing_tasks") and s.get("events"))
        for lines in stats
    )
    timeline = sorted(
        (s["at"], w, s.get("events", 0)) for w, lines in enumerate(stats) for s in lines
    )
    latest = [0] * len(stats)
    merged = []
    for at, w, n in timeline:
        latest[w] = n
        merged.append((at, sum(latest)))
    start = next((t, n) for t, n in merged if t >= ready and n >= WINDOW[0] * m)
    end = next((t, n) for t, n in merged if n >= WINDOW[1] * m)
    first = min(s["first_event_at"] for lines in stats for s in lines if s.get("first_event_at"))
    judge = next(lines for lines in stats if any(s.get("judging_tasks") for s in lines))
    done = next(s["at"] for s in judge if s.get("written", {}).get("pairs", 0) >= requests)
    times, seconds = zip(*cpu, strict=True)
    used = np.interp(end[0], times, seconds) - np.interp(start[0], times, seconds)
    return {
        "events_per_s": (end[1] - start[1]) / (end[0] - start[0]),
        "cpu_us_per_event": used * 1e6 / (end[1] - start[1]),
        "window_s": end[0] - start[0],
        "all_in_clickhouse_s": done - first,
        "events_by_worker": [lines[-1].get("events", 0) for lines in stats],
    }


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

    scores = timed("score", lambda: [s for m in matched for s in scorer.score(m)])
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
    parser.add_argument("--noop-worker", type=int, metavar="EVENTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_worker:  # (a')'s worker process, started by the bench itself
        noop_worker(args.noop_worker, args.partitions)
        return
    if args.partitions < 2:
        parser.error("--partitions must be >= 2 for two workers to share the work")

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

    bootstrap, datadir = start_broker()
    try:
        topic = f"bench-events-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topic(bootstrap, topic, args.partitions))
        produced = asyncio.run(publish(payloads, bootstrap, topic, end_marker=True))
        print(f"produced in {produced.seconds:.1f} s", flush=True)
        raw, raw_cpu = asyncio.run(raw_consume(bootstrap, topic, m))
        row("(a) raw aiokafka + orjson", raw, raw_cpu)
        with tempfile.TemporaryDirectory(prefix="shadowlens-bench-") as tmp:
            env = worker_env(bootstrap, topic, Path(tmp))
            noop, noop_cpu = faust_consume(env, m, args.partitions, Path(tmp))
            row("(a') no-op Faust agent + orjson", noop, noop_cpu)
            one = run_workers(bootstrap, topic, args.requests, 1, Path(tmp))
            note = f"  (all pairs in ClickHouse after {one['all_in_clickhouse_s']:.1f} s)"
            row("(b) pipeline, 1 worker", one["events_per_s"], one["cpu_us_per_event"], note)
            two = run_workers(bootstrap, topic, args.requests, 2, Path(tmp))
            note = (
                f"  (all pairs in ClickHouse after {two['all_in_clickhouse_s']:.1f} s;"
                f" events per worker {two['events_by_worker']})"
            )
            row("(c) pipeline, 2 workers", two["events_per_s"], two["cpu_us_per_event"], note)
    finally:
        stop_broker(datadir)
    print(
        f"machine: {os.cpu_count()} cpus, two CPU-bound processes run {cpu_scaling():.2f}x "
        f"one (load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    print(
        f"RESULT ratio_pipeline_vs_raw={one['events_per_s'] / raw:.3f} "
        f"ratio_two_workers={two['events_per_s'] / one['events_per_s']:.3f} "
        f"ratio_faust_vs_raw={noop / raw:.3f} "
        f"ratio_pipeline_vs_faust={one['events_per_s'] / noop:.3f}"
    )


if __name__ == "__main__":
    main()
