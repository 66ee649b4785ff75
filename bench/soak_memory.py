"""Memory soak: 1M events through the plain pipeline, RSS sampled, growth must be flat.

    .venv/bin/python bench/soak_memory.py                      # 1,000,000 events
    .venv/bin/python bench/soak_memory.py --events 200000      # what CI runs (tests/test_soak.py)

Events are real sample traffic (AlpacaEval outputs at Azure trace arrivals,
`shadowlens.replay.traffic`) repeated with fresh request ids and event times shifted forward by the
template's span each cycle, so the stream never ends and nothing is ever seen twice by
accident. The template carries 2 % lost candidates (orphans, swept by the watermark) and 1 %
halves sent twice (duplicates, recognised by the closed-request memory), and the policy's
``pairing.max_pending`` is lowered below the number of requests open at once, so shedding
runs all along too. They go through `shadowlens.job.pipeline.Pipeline` (decode, pair, score, window,
judge: what `shadowlens replay` runs) into a sink that only counts.

The process's resident set (``/proc/self/statm``) is sampled every ``--every`` events after
a warm-up (the first ``--warmup`` share: pairing state, closed-request memory, windows,
caches and the allocator reach their steady state). A leak shows as a slope: the line
fitted to the samples of the second half of the run, in MB per 100k events, must be below
``--max-slope`` (default 2 MB / 100k events = 20 bytes per event: leaking one event, pair or
closed request id per request would be 10-100x that). Last line:

    RESULT events=… rss_start_mb=… rss_end_mb=… growth_mb=… slope_mb_per_100k=… shed=… ...
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from shadowlens.comparators.pairs import PairScore
from shadowlens.job.pipeline import Pipeline
from shadowlens.judge.policy import Policy, load_policy
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import DeadLetter

TEMPLATE_REQUESTS = 2_000
MAX_PENDING = 200  # open requests per experiment: sheds ~2 % of requests on this traffic
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


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


def soak_payloads(n_events: int, seed: int = 0) -> Iterator[bytes]:
    """`n_events` wire payloads: the faulted template, cycled with new ids and times."""
    sample = load_sample()
    template = build_events(
        sample.instructions, sample.arrivals, requests=TEMPLATE_REQUESTS, seed=seed
    )
    faults = Faults(drop_share=0.02, duplicate_share=0.01)
    docs = [e.to_dict() for e in apply_faults(template, faults, sample.instructions, seed)]
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


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_MB


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

    def result(self) -> str:
        start, end = self.samples[0][1], self.samples[-1][1]
        pairs = sum(v for k, v in self.counts.items() if k.startswith("pairs."))
        fields_ = {
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
        return "RESULT " + " ".join(f"{k}={v}" for k, v in fields_.items())


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=0, help="sample RSS every N events")
    parser.add_argument("--warmup", type=float, default=0.2)
    parser.add_argument("--max-slope", type=float, default=2.0, help="MB per 100k events")
    args = parser.parse_args()
    every = args.every or max(1, args.events // 100)
    soak = run_soak(args.events, every, args.warmup)
    for n, mb in soak.samples[:: max(1, len(soak.samples) // 10)]:
        print(f"events={n} rss_mb={mb:.1f}")
    print(soak.result())
    if soak.slope_mb_per_100k > args.max_slope:
        sys.exit(f"RSS grows {soak.slope_mb_per_100k:.2f} MB per 100k events")


if __name__ == "__main__":
    main()
