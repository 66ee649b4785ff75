"""`shadowlens replay`: run recorded or built traffic through the pipeline into ClickHouse."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from judge.policy import Policy
from pipeline.core import MemorySink, Pipeline, Sink, Tee
from streams.redaction import RedactingSink
from streams.sinks import ClickHouseSink
from streams.store import Store
from streams.traffic import (
    Faults,
    apply_faults,
    build_events,
    load_full,
    load_sample,
    wire_payloads,
)


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """What to build when no JSONL file is given."""

    data_dir: Path | None = None  # None: the shipped sample
    experiment: str = "gpt4-to-llama3-70b"
    primary: str = "gpt4_0613"
    candidate: str = "Meta-Llama-3-70B-Instruct"
    requests: int | None = 3_000
    replica_share: float = 0.0
    seed: int = 0


def built_payloads(spec: TrafficSpec, faults: Faults) -> list[tuple[bytes, str]]:
    """Real outputs with real arrivals, faults applied, as the wire bytes a gateway sends."""
    models = (spec.primary, spec.candidate, faults.weaker_model, "gpt4_0613_concise")
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
    show_progress: bool = True,
    redact: bool = False,
) -> ReplayResult:
    """Feed every payload through the pipeline; write ClickHouse when a store is given.

    With `redact`, ClickHouse gets hashes and lengths instead of bodies (the in-memory
    results used for the console summary keep them: they never leave the process)."""
    memory = MemorySink()
    clickhouse = ClickHouseSink(store) if store is not None else None
    stored: Sink | None = clickhouse
    if clickhouse is not None and redact:
        stored = RedactingSink(clickhouse)
    sink: Sink = Tee([memory, stored]) if stored is not None else memory
    pipeline = Pipeline(policy, sink)
    started = time.perf_counter()
    progress = Progress(
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        disable=not show_progress,
        transient=True,
    )
    with progress:
        task = progress.add_task("replay", total=len(payloads))
        for i, (raw, source) in enumerate(payloads):
            pipeline.feed(raw, source, received_ms=int(time.time() * 1000))
            if i % 500 == 0:
                progress.update(task, completed=i)
        pipeline.finish()
        if clickhouse is not None:
            clickhouse.flush()
        progress.update(task, completed=len(payloads))
    written = dict(clickhouse.written) if clickhouse is not None else {}
    return ReplayResult(memory, pipeline.counts, written, time.perf_counter() - started)
