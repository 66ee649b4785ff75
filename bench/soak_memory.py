"""Memory soak: 1M events through the plain Pipeline and 1M through the real worker, RSS
sampled at checkpoints; growth must be bounded.

    .venv/bin/python bench/soak_memory.py                         # 1,000,000 events each
    .venv/bin/python bench/soak_memory.py --events 100000 --worker-events 100000  # quicker
    .venv/bin/python bench/soak_memory.py --events 100000 --worker-events 0  # as tests/test_soak.py

Events are real sample traffic (AlpacaEval outputs at Azure trace arrivals,
`shadowlens.replay.traffic`): three migrations of the same primary, each at every third
arrival, over the sample's five segments, repeated with fresh request ids and event times
shifted forward by the template's span each cycle, so the stream never ends and nothing is
ever seen twice by accident. The template carries 2 % lost candidates (orphans, swept by
the watermark) and 1 % halves sent twice (duplicates, recognised by the closed-request
memory). Both arms get the same events.

Pipeline arm: `shadowlens.job.pipeline.Pipeline` (decode, pair, score, window, judge: what
`shadowlens replay` runs) into a sink that only counts, with the policy's
``pairing.max_pending`` lowered below the number of requests open at once, so shedding
runs all along too. This process's resident set (``/proc/self/statm``) is sampled every
``--every`` events after a warm-up (the first ``--warmup`` share: pairing state,
closed-request memory, windows, caches and the allocator reach their steady state). A leak
shows as a slope: the line fitted to the samples of the second half of the run, in MB per
100k events, must be below ``--max-slope`` (default 2 MB / 100k events = 20 bytes per
event: leaking one event, pair or closed request id per request would be 10-100x that).

Worker arm: a fresh broker (`bench/kafka_bench.py`, as `bench/stream_throughput.py` runs
it); the events are published keyed by request id to a 4-partition topic, then an
end-of-input marker; then one `shadowlens worker` process (shipped policy, exactly_once,
chdb) reads them from the start. Its RSS is sampled every 0.5 s with the events it has read
(its stats line). One sample swings by up to ~150 MB: every few thousand events a burst
(ClickHouse inserts, batches in flight) goes back to the system over seconds. Memory kept
-- a leak -- lifts the floor between bursts, so a checkpoint is the lowest sample in the
tenth of the events around it: start (after the warm-up), middle and end. Start to middle
and middle to end span as many events of the same cycled traffic, so state still filling up
grows the first only, a leak both; middle to end must stay below
``--max-worker-growth``. RSS is sampled once more when every request's row is in
ClickHouse and the worker is idle (drained). Last line, the Pipeline's keys then the
worker's:

    RESULT events=… rss_start_mb=… rss_end_mb=… growth_mb=… slope_mb_per_100k=… shed=… ...
        worker_rss_start_mb=… worker_rss_mid_mb=… worker_rss_end_mb=…
        worker_growth_mid_to_end=… (end / middle) ...

Measured (1M events each, 2 shared cores, 21 min): the Pipeline at 164.9 MB from 200k
events to 1M, slope 0. The worker's floor 788 / 827 / 834 MB at 250k / 600k / 950k events
(x1.050, then x1.009: +7.5 MB over 350k events, ~20 bytes per event), 835 MB drained;
floor by tenth 548, 792, 788, 835, 825, 827, 851, 839, 835, 834 MB: it fills up until
~350k events, then stays. Peaks reach 1.0-1.2 GB. What fills: not Python objects (allocated
blocks ~1.4M and ~285k objects, ~16k open requests, all flat from 60k events on) but glibc's
heap, whose free and retained part grew 66 -> 142 MB while the part in use stayed 150-180
MB (mallinfo2, 200k events). A leak of 2 KB per event injected into the worker (100k
events, debug run): middle to end x1.128 (+107 MB), against x1.007 (+4.9 MB) without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from shadowlens.comparators.pairs import PairScore
from shadowlens.job.pipeline import Pipeline
from shadowlens.judge.policy import Policy, load_policy
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.replay.datasets import DEFAULT_START_MS, load_sample
from shadowlens.replay.faults import Faults, apply_faults
from shadowlens.replay.models import (
    CANDIDATE_MODEL,
    DEFAULT_EXPERIMENT,
    REPLICA_OUTPUT_MODEL,
    WEAKER_MODEL,
)
from shadowlens.replay.publish import publish
from shadowlens.replay.traffic import build_events, publish_order
from shadowlens.schemas.events import DeadLetter
from shadowlens.streams.app import STATS_MARK

from bench.kafka_bench import SHADOWLENS, broker, check_alive, create_topic, spawn, stop, worker_env

TEMPLATE_REQUESTS = 2_000
EXPERIMENTS = (  # (experiment, candidate model): migrations of the same primary
    (DEFAULT_EXPERIMENT, CANDIDATE_MODEL),
    ("gpt4-to-llama3-8b", WEAKER_MODEL),
    ("gpt4-to-gpt4-concise", REPLICA_OUTPUT_MODEL),
)
MAX_PENDING = 200  # open requests per experiment: sheds ~2 % of requests on this traffic
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
PARTITIONS = 4  # of the events topic, as bench/stream_throughput.py runs the worker
PUBLISH_CHUNK = 50_000  # payloads built at once (~120 MB)
CHECKPOINT_SPAN = 0.1  # of the events, around each checkpoint
SETTLE_S = 5.0  # idle time before the drained sample: a last commit, ClickHouse merges


@dataclass
class CountingSink:
    """A `shadowlens.job.sinks.Sink` that keeps nothing but counts."""

    counts: Counter[str] = field(default_factory=Counter)

    def pairs(self, scores: Sequence[PairScore]) -> None:
        for s in scores:
            self.counts[f"pairs.{s.outcome}"] += 1

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        self.counts["windows"] += len(windows)

    def decisions(self, decisions: Sequence[Decision]) -> None:
        self.counts["decisions"] += len(decisions)

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.counts["dead_letters"] += len(letters)


def soak_template(seed: int = 0) -> list[dict[str, Any]]:
    """One cycle of the stream as wire documents: `TEMPLATE_REQUESTS` requests at the
    sample's first arrivals, dealt in turn to the `EXPERIMENTS` (each at its own arrivals'
    times, so they interleave as concurrent migrations do), with 2 % lost candidates and
    1 % halves sent twice."""
    sample = load_sample()
    arrivals = sample.arrivals[:TEMPLATE_REQUESTS]
    events = []
    for k, (experiment, candidate) in enumerate(EXPERIMENTS):
        share = arrivals[k :: len(EXPERIMENTS)]
        start_ms = DEFAULT_START_MS + share[0].offset_ms - arrivals[0].offset_ms
        events += build_events(
            sample.instructions,
            share,
            experiment=experiment,
            candidate=candidate,
            seed=seed + k,
            start_ms=start_ms,
        )
    faults = Faults(drop_share=0.02, duplicate_share=0.01)
    faulted = apply_faults(publish_order(events), faults, sample.instructions, seed)
    return [e.to_dict() for e in faulted]


def soak_payloads(n_events: int, seed: int = 0) -> Iterator[bytes]:
    """`n_events` wire payloads: the template, cycled with new ids and times."""
    docs = soak_template(seed)
    first = min(d["start_time_ms"] for d in docs)
    period = max(d["end_time_ms"] for d in docs) - first + 1_000
    cycle = 0
    while True:
        shift = cycle * period
        for doc in docs:
            if n_events <= 0:
                return
            n_events -= 1
            yield orjson.dumps(
                {
                    **doc,
                    "request_id": f"{doc['request_id']}-c{cycle}",
                    "start_time_ms": doc["start_time_ms"] + shift,
                    "end_time_ms": doc["end_time_ms"] + shift,
                }
            )
        cycle += 1


def rss_mb(pid: int | str = "self") -> float:
    """Resident set of a process, this one by default (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_MB


def result_line(fields_: dict[str, object]) -> str:
    return "RESULT " + " ".join(f"{k}={v}" for k, v in fields_.items())


def soak_policy() -> Policy:
    policy = load_policy()
    return replace(policy, pairing=replace(policy.pairing, max_pending=MAX_PENDING))


@dataclass(frozen=True)
class Soak:
    events: int
    samples: list[tuple[int, float]]  # (events fed, RSS MB) after the warm-up
    counts: Counter[str]
    seconds: float

    @property
    def slope_mb_per_100k(self) -> float:
        """Least-squares slope of RSS over the second half of the samples."""
        half = self.samples[len(self.samples) // 2 :]
        n = len(half)
        mx = sum(x for x, _ in half) / n
        my = sum(y for _, y in half) / n
        sxx = sum((x - mx) ** 2 for x, _ in half)
        sxy = sum((x - mx) * (y - my) for x, y in half)
        return sxy / sxx * 100_000 if sxx else 0.0

    def fields(self) -> dict[str, object]:
        start, end = self.samples[0][1], self.samples[-1][1]
        pairs = sum(v for k, v in self.counts.items() if k.startswith("pairs."))
        return {
            "events": self.events,
            "rss_start_mb": f"{start:.1f}",
            "rss_end_mb": f"{end:.1f}",
            "growth_mb": f"{end - start:.1f}",
            "rss_max_mb": f"{max(y for _, y in self.samples):.1f}",
            "slope_mb_per_100k": f"{self.slope_mb_per_100k:.3f}",
            "pairs": pairs,
            "orphans": self.counts["pairs.candidate_missing"],
            "duplicates": self.counts["dropped.duplicate"],
            "shed": self.counts["pairing.shed"],
            "windows": self.counts["windows"],
            "events_per_s": f"{self.events / self.seconds:.0f}",
        }

    def result(self) -> str:
        return result_line(self.fields())


def run_soak(n_events: int, every: int, warmup: float = 0.2) -> Soak:
    sink = CountingSink()
    pipeline = Pipeline(soak_policy(), sink)
    samples: list[tuple[int, float]] = []
    started = time.perf_counter()
    for i, raw in enumerate(soak_payloads(n_events), 1):
        pipeline.feed(raw)
        if i % every == 0 and i >= warmup * n_events:
            gc.collect()  # garbage waiting for a collection is not a leak
            samples.append((i, rss_mb()))
    seconds = time.perf_counter() - started
    pipeline.finish()
    return Soak(n_events, samples, pipeline.counts + sink.counts, seconds)


# --------------------------------------------------------------------------- the worker


def publish_soak(bootstrap: str, topic: str, n_events: int) -> int:
    """Publish the soak stream keyed by request id, as gateways do, then an end-of-input
    marker on every partition; returns how many requests it holds (rows to wait for).
    In chunks: 1M payloads are ~2.4 GB."""
    payloads = soak_payloads(n_events)
    requests: set[str] = set()
    sent = 0
    while chunk := list(itertools.islice(payloads, PUBLISH_CHUNK)):
        requests.update(orjson.loads(raw)["request_id"] for raw in chunk)
        sent += len(chunk)
        asyncio.run(publish(chunk, bootstrap, topic, end_marker=sent == n_events))
    return len(requests)


def last_stats(log: Path) -> dict[str, Any]:
    """The worker's latest stats line, read from the end of its log (it grows all run)."""
    with open(log, "rb") as fh:
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - 65_536))
        lines = fh.read().splitlines()
    for line in reversed(lines):
        at = line.find(STATS_MARK.encode())
        if at >= 0:
            with contextlib.suppress(orjson.JSONDecodeError):  # a line still being written
                return orjson.loads(line[at + len(STATS_MARK) :])
    return {}


@dataclass(frozen=True)
class WorkerSoak:
    events: int
    samples: list[tuple[int, float]]  # (events the worker has read, its RSS MB) until all
    drained_mb: float  # once every request's row is in ClickHouse, and idle
    stats: dict[str, Any]  # the worker's last stats line
    seconds: float  # from its first event to its last
    warmup: float  # share of the events before the first checkpoint

    def floor(self, share: float) -> float:
        """The lowest RSS in the tenth of the events centred on `share` of them: memory
        kept, without the bursts that go back to the system (see the module doc)."""
        at, half = share * self.events, CHECKPOINT_SPAN / 2 * self.events
        return min(mb for e, mb in self.samples if abs(e - at) <= half)

    @property
    def checkpoints(self) -> dict[str, tuple[float, float]]:
        """(share of the events, RSS MB) just after the warm-up, in the middle and at the
        end: two spans of as many events of the same cycled traffic, so a plateau still
        being reached shows as growth in the first only, a leak in both."""
        start, end = self.warmup + CHECKPOINT_SPAN / 2, 1 - CHECKPOINT_SPAN / 2
        shares = {"start": start, "mid": (start + end) / 2, "end": end}
        return {name: (share, self.floor(share)) for name, share in shares.items()}

    @property
    def growth_mid_to_end(self) -> float:
        points = self.checkpoints
        return points["end"][1] / points["mid"][1]

    def fields(self) -> dict[str, object]:
        start, mid, end = (mb for _, mb in self.checkpoints.values())
        return {
            "worker_events": self.events,
            "worker_rss_start_mb": f"{start:.1f}",
            "worker_rss_mid_mb": f"{mid:.1f}",
            "worker_rss_end_mb": f"{end:.1f}",
            "worker_rss_drained_mb": f"{self.drained_mb:.1f}",
            "worker_rss_max_mb": f"{max(mb for _, mb in self.samples):.1f}",
            "worker_growth_start_to_mid": f"{mid / start:.3f}",
            "worker_growth_mid_to_end": f"{self.growth_mid_to_end:.3f}",
            "worker_growth_mid_to_end_mb": f"{end - mid:.1f}",
            "worker_pairs": self.stats.get("pairs.paired", 0),
            "worker_orphans": self.stats.get("pairs.candidate_missing", 0),
            "worker_windows": self.stats.get("windows", 0),
            "worker_rows": self.stats.get("written", {}).get("pairs", 0),
            "worker_events_per_s": f"{self.events / self.seconds:.0f}",
        }


def run_worker_soak(n_events: int, warmup: float) -> WorkerSoak:
    """The soak stream through a real `shadowlens worker` on a fresh broker (both stopped
    even on failure), its RSS sampled as it reads the events published before it starts."""
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="shadowlens-soak-") as tmp:
        work = Path(tmp)
        topic = f"soak-events-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topic(bootstrap, topic, PARTITIONS))
        published = time.monotonic()
        requests = publish_soak(bootstrap, topic, n_events)
        print(
            f"worker: published {n_events} events ({requests} requests) in "
            f"{time.monotonic() - published:.0f} s",
            flush=True,
        )
        log = work / "worker.log"
        proc = spawn([SHADOWLENS, "worker"], worker_env(bootstrap, topic, work, {}), log)
        samples: list[tuple[int, float]] = []
        read_all_at = 0.0
        deadline = time.monotonic() + 600 + n_events / 200
        try:
            while (stats := last_stats(log)).get("written", {}).get("pairs", 0) < requests:
                check_alive([proc], [log], deadline)
                read = stats.get("events", 0)
                if read >= n_events:  # the end of input then frees what was open: not sampled
                    read_all_at = read_all_at or stats["at"]
                elif read > (samples[-1][0] if samples else 0):
                    samples.append((read, rss_mb(proc.pid)))
                time.sleep(0.5)
            time.sleep(SETTLE_S)
            drained = rss_mb(proc.pid)
        finally:
            stop([proc])
    seconds = (read_all_at or stats["at"]) - stats["first_event_at"]
    return WorkerSoak(n_events, samples, drained, stats, seconds, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=0, help="sample RSS every N events")
    parser.add_argument("--warmup", type=float, default=0.2)
    parser.add_argument("--max-slope", type=float, default=2.0, help="MB per 100k events")
    parser.add_argument(
        "--worker-events", type=int, default=1_000_000, help="through the worker; 0: no worker"
    )
    parser.add_argument(
        "--max-worker-growth", type=float, default=1.05, help="worker RSS, end / middle"
    )
    args = parser.parse_args()
    # a SIGTERM unwinds like an error, so the broker and the worker are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    every = args.every or max(1, args.events // 100)
    soak = run_soak(args.events, every, args.warmup)
    for n, mb in soak.samples[:: max(1, len(soak.samples) // 10)]:
        print(f"pipeline: events={n} rss_mb={mb:.1f}", flush=True)
    fields_ = soak.fields()
    failures = []
    if soak.slope_mb_per_100k > args.max_slope:
        failures.append(f"the pipeline's RSS grows {soak.slope_mb_per_100k:.2f} MB per 100k events")
    if args.worker_events:
        worker = run_worker_soak(args.worker_events, args.warmup)
        for tenth in range(10):
            lo, hi = tenth * worker.events // 10, (tenth + 1) * worker.events // 10
            mbs = [mb for e, mb in worker.samples if lo <= e < hi]
            if mbs:
                print(
                    f"worker: events {lo}-{hi} rss_mb floor {min(mbs):.1f} "
                    f"median {statistics.median(mbs):.1f} max {max(mbs):.1f}"
                )
        for name, (share, mb) in worker.checkpoints.items():
            print(f"worker {name}: events~{share * worker.events:.0f} rss_mb={mb:.1f} (floor)")
        print(f"worker drained (every row in ClickHouse, idle): rss_mb={worker.drained_mb:.1f}")
        fields_ |= worker.fields()
        if worker.growth_mid_to_end > args.max_worker_growth:
            failures.append(
                f"the worker's RSS grows x{worker.growth_mid_to_end:.3f} from middle to end"
            )
    print(result_line(fields_), flush=True)
    if failures:
        sys.exit("; ".join(failures))


if __name__ == "__main__":
    main()
