"""`shadowlens replay`: run recorded or built traffic through the pipeline into ClickHouse."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shadowlens.job.pipeline import Enricher, Pipeline
from shadowlens.job.redaction import RedactingSink
from shadowlens.job.sinks import MemorySink, Sink, Tee
from shadowlens.judge.policy import Policy
from shadowlens.replay.datasets import DEFAULT_START_MS, load_full, load_sample
from shadowlens.replay.faults import Faults, apply_faults, wire_payloads
from shadowlens.replay.models import REPLICA_OUTPUT_MODEL, profile
from shadowlens.replay.traffic import build_events
from shadowlens.store.client import Store
from shadowlens.store.sink import ClickHouseSink


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """What to build when no JSONL file is given."""

    data_dir: Path | None = None  # None: the shipped sample
    experiment: str = "gpt4-to-llama3-70b"
    primary: str = "gpt4_0613"
    candidate: str = "Meta-Llama-3-70B-Instruct"
    requests: int | None = 3_000
    replica_share: float = 0.0  # the CLI's default is 0.2 (cli/traffic_options.py)
    seed: int = 0
    start_ms: int = DEFAULT_START_MS  # the first request's start; the trace's own by default


_RELATIVE = re.compile(r"now(?:([+-])(\d+)([smhd]))?")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_start_time(text: str, now_ms: int) -> int:
    """``now``, ``now-15m`` (s, m, h, d) or an ISO 8601 time -> epoch ms.

    What ``--rebase-time`` takes: the bundled trace is from November 2023, so a dashboard
    showing "the last hour" needs the replay moved to the present."""
    text = text.strip()
    if match := _RELATIVE.fullmatch(text):
        sign, amount, unit = match.groups()
        shift = 0 if amount is None else int(amount) * _UNIT_MS[unit]
        return now_ms - shift if sign == "-" else now_ms + shift
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use now, now-15m (s, m, h, d) or ISO 8601 "
            "(2026-01-31T12:00:00Z)"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


def built_payloads(spec: TrafficSpec, faults: Faults) -> list[tuple[bytes, str]]:
    """Real outputs with real arrivals, faults applied, as the wire bytes a gateway sends."""
    for model in (spec.primary, spec.candidate):
        profile(model)  # an unknown name fails here, listing the known ones, not as a lost file
    models = (spec.primary, spec.candidate, REPLICA_OUTPUT_MODEL)
    sample = (
        load_sample()
        if spec.data_dir is None
        else load_full(spec.data_dir, models=tuple(dict.fromkeys(models)))
    )
    events = build_events(
        sample.instructions,
        sample.arrivals,
        experiment=spec.experiment,
        primary=spec.primary,
        candidate=spec.candidate,
        requests=spec.requests,
        replica_share=spec.replica_share,
        seed=spec.seed,
        start_ms=spec.start_ms,
    )
    events = apply_faults(events, faults, sample.instructions, spec.seed)
    raw = wire_payloads(events, faults, spec.seed)
    return [(payload, f"built:{i}") for i, payload in enumerate(raw)]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    memory: MemorySink
    counts: Counter[str]
    written: dict[str, int]
    seconds: float


def run_replay(
    payloads: Sequence[tuple[bytes, str]],
    policy: Policy,
    store: Store | None,
    *,
    on_progress: Callable[[int], None] | None = None,
    redact: bool = False,
    enrich: Enricher | None = None,
) -> ReplayResult:
    """Feed every payload through the pipeline; write ClickHouse when a store is given.

    With `redact`, ClickHouse gets hashes and lengths instead of bodies (the in-memory
    results used for the console summary keep them: they never leave the process). `enrich`
    scores each drained batch further (the semantic cascade of `--semantic`). `on_progress`
    hears how many payloads are done, now and then (the CLI draws its bar from it)."""
    memory = MemorySink()
    clickhouse = ClickHouseSink(store) if store is not None else None
    stored: Sink | None = clickhouse
    if clickhouse is not None and redact:
        stored = RedactingSink(clickhouse)
    sink: Sink = Tee([memory, stored]) if stored is not None else memory
    pipeline = Pipeline(policy, sink, enrich)
    started = time.perf_counter()
    report = on_progress or (lambda done: None)
    for i, (raw, source) in enumerate(payloads):
        pipeline.feed(raw, source, received_ms=int(time.time() * 1000))
        if i % 500 == 0:
            report(i)
    pipeline.finish()
    if clickhouse is not None:
        clickhouse.flush()
    report(len(payloads))
    written = dict(clickhouse.written) if clickhouse is not None else {}
    return ReplayResult(memory, pipeline.counts, written, time.perf_counter() - started)
