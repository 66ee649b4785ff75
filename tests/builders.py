"""Concise builders of events for unit tests, with real AlpacaEval outputs where text matters."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from shadowlens.comparators.aggregate import Aggregate, merged
from shadowlens.comparators.pairs import PairScore
from shadowlens.schemas.events import Arm, Event, Output, Status, Task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@cache
def alpaca(model: str) -> list[dict[str, Any]]:
    """Real outputs of one model on the 805 AlpacaEval instructions."""
    return orjson.loads((SHARED_DATA / "alpaca_eval" / f"{model}.json").read_bytes())


def event(
    request_id: str = "r1",
    arm: Arm | str = Arm.PRIMARY,
    *,
    start: int = 1_000_000,
    latency: float = 1000.0,
    text: str | None = "hello",
    status: Status = Status.OK,
    experiment: str = "exp",
    segment: str = "seg",
    task: Task = Task.GENERATION,
    **kwargs: Any,
) -> Event:
    base = Event(
        request_id=request_id,
        experiment=experiment,
        arm=Arm(arm),
        segment=segment,
        task=task,
        provider="p",
        model=f"model-{arm}",
        start_time_ms=start,
        latency_ms=latency,
        status=status,
        end_time_ms=start + int(latency),
        output=Output(text=text),
        finish_reason="stop",
    )
    return replace(base, **kwargs)


def added_and_merged(scores: list[PairScore]) -> tuple[Aggregate, Aggregate]:
    """The same scores added to one aggregate, and spread over three merged ones: merging
    must give what adding everything to one gives."""
    one = Aggregate()
    for s in scores:
        one.add(s)
    parts = [Aggregate(), Aggregate(), Aggregate()]
    for i, s in enumerate(scores):
        parts[i % 3].add(s)
    return one, merged(parts)
