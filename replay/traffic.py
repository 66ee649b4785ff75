"""Replay traffic: the gateway events of a shadow migration, built from real data.

A replay must look like production to exercise pairing, scoring and the judge honestly:
real instructions and real outputs of both models (`datasets`: AlpacaEval), real arrival
times and token counts (the Azure LLM inference trace), latency drawn from each model's
profile (`models`, calibrated on llmperf in `latency`), and events in the order a gateway
publishes them (by completion time). `faults` then injects the incident to replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from shadowlens.replay.datasets import DEFAULT_START_MS, Arrival, Instruction
from shadowlens.replay.models import (
    CANDIDATE_MODEL,
    DEFAULT_EXPERIMENT,
    MODELS,
    PRIMARY_MODEL,
    REPLICA_OUTPUT_MODEL,
    ModelProfile,
    profile,
)
from shadowlens.schemas.events import Arm, Event, Output, Status, Task


def publish_order(events: Iterable[Event]) -> list[Event]:
    """The order a gateway publishes: by completion, ties broken deterministically."""
    arm_rank = {Arm.PRIMARY: 0, Arm.CANDIDATE: 1, Arm.REPLICA: 2}
    return sorted(
        events, key=lambda e: (e.completed_ms, e.start_time_ms, e.request_id, arm_rank[e.arm])
    )


def arm_rng(seed: int, salt: int) -> np.random.Generator:
    """A random stream of its own per (seed, use), so one arm's or fault's draws never
    shift another's."""
    return np.random.default_rng([seed, salt])


def _require_outputs(sample: Sequence[Instruction], text_models: Iterable[str]) -> None:
    """Fail before building if the sample lacks a model's texts (the shipped one has four)."""
    held = set.intersection(*(set(ins.outputs) for ins in sample))
    for model in text_models:
        if model not in held:
            raise ValueError(
                f"the sample holds no outputs of {model!r}, only of "
                f"{', '.join(sorted(held, key=str.lower))}; the full AlpacaEval data "
                "(--data-dir) holds every known model"
            )


def build_events(
    sample: Sequence[Instruction],
    arrivals: Sequence[Arrival],
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    primary: str = PRIMARY_MODEL,
    candidate: str = CANDIDATE_MODEL,
    requests: int | None = None,
    replica_share: float = 0.0,
    replica_output_model: str = REPLICA_OUTPUT_MODEL,
    seed: int = 0,
    start_ms: int = DEFAULT_START_MS,
    models: Mapping[str, ModelProfile] = MODELS,
) -> list[Event]:
    """Shadow traffic of `requests` requests (default: one per arrival), in publish order.

    Request i asks instruction i % len(sample) at arrival row i (the trace repeats, shifted
    by its span plus one mean gap, when there are more requests than rows). Both arms start
    at the arrival and see the row's token counts; each arm draws its own latency noise,
    from a stream that depends only on (seed, arm), so changing the candidate leaves the
    primary's events unchanged. A model without a profile in `models` raises
    UnknownModelError.
    """
    if not sample or not arrivals:
        raise ValueError("need at least one instruction and one arrival")
    if not 0.0 <= replica_share <= 1.0:
        raise ValueError(f"replica_share must be in [0, 1], got {replica_share}")
    profiles = {m: profile(m, models) for m in (primary, candidate)}
    n = len(arrivals) if requests is None else requests
    rows = len(arrivals)
    span = arrivals[-1].offset_ms - arrivals[0].offset_ms
    period = span + (round(span / (rows - 1)) if rows > 1 else 1000)
    idx = np.arange(n)
    row = idx % rows
    offsets = np.array([a.offset_ms for a in arrivals], dtype=np.int64)
    starts = start_ms + (idx // rows) * period + offsets[row] - offsets[0]
    in_tok = np.array([a.input_tokens for a in arrivals], dtype=np.float64)[row]
    out_tok = np.array([a.output_tokens for a in arrivals], dtype=np.float64)[row]
    with_replica = arm_rng(seed, 3).random(n) < replica_share

    arms: list[tuple[Arm, str, str, np.ndarray]] = [
        (Arm.PRIMARY, primary, primary, np.ones(n, dtype=bool)),
        (Arm.CANDIDATE, candidate, candidate, np.ones(n, dtype=bool)),
    ]
    if replica_share > 0:
        arms.append((Arm.REPLICA, primary, replica_output_model, with_replica))
    _require_outputs(sample, (text_model for _, _, text_model, _ in arms))

    events: list[Event] = []
    for salt, (arm, model, text_model, present) in enumerate(arms):
        served = profiles[model]
        latency, ttft = served.latency.draw(in_tok, out_tok, arm_rng(seed, salt))
        for i in np.flatnonzero(present):
            ins = sample[i % len(sample)]
            start = int(starts[i])
            lat = round(float(latency[i]), 3)
            events.append(
                Event(
                    request_id=f"{experiment}-{i:07d}",
                    experiment=experiment,
                    arm=arm,
                    segment=ins.segment,
                    task=Task.GENERATION,
                    provider=served.provider,
                    model=model,
                    start_time_ms=start,
                    latency_ms=lat,
                    status=Status.OK,
                    end_time_ms=start + round(lat),
                    ttft_ms=round(float(ttft[i]), 3),
                    input_tokens=int(in_tok[i]),
                    output_tokens=int(out_tok[i]),
                    output=Output(text=ins.outputs[text_model]),
                    finish_reason="stop",
                    # the request itself, as a gateway may send it: a live judge reads it
                    attributes={"prompt_id": ins.prompt_id, "prompt": ins.instruction},
                )
            )
    return publish_order(events)
