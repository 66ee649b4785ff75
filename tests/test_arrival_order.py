"""The judge's evidence depends on which pairs a window holds, never on the order they came
in, which a restart or another batching changes (issue 14): the sequential bounds read each
window's observations in request order, and example ids are chosen by request."""

from __future__ import annotations

import random
from typing import Any

import orjson
from shadowlens.comparators.pairs import PairScore
from shadowlens.job.judging import Judging
from shadowlens.job.pipeline import Pipeline
from shadowlens.job.sinks import MemorySink
from shadowlens.judge.policy import load_policy
from shadowlens.pipeline.windows import TumblingWindows
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults, wire_payloads
from shadowlens.replay.traffic import build_events
from shadowlens.streams.codec import encode_state

from tests.evidence_diff import differences


def judged(scores: list[PairScore]) -> dict[str, Any]:
    """Windows, decisions and final judge state of `scores`, added in the order given."""
    policy = load_policy()
    windows = TumblingWindows(policy.windows.size_ms, policy.windows.grace_ms)
    sink = MemorySink()
    judging = Judging(policy, sink)
    for score in scores:
        windows.add(score, 0)
    judging.judge(windows.flush())
    return {
        "windows": [orjson.loads(encode_state(w.aggregate.in_order())) for w in sink.closed],
        "decisions": orjson.loads(orjson.dumps(sink.made)),
        "state": {k: orjson.loads(encode_state(v)) for k, v in judging.experiments.items()},
    }


def test_evidence_and_decisions_do_not_depend_on_arrival_order() -> None:
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=1500, seed=3)
    events = apply_faults(events, Faults(drop_share=0.05), sample.instructions, seed=3)
    replay = Pipeline(load_policy(), sink := MemorySink())
    for raw in wire_payloads(events, Faults()):
        replay.feed(raw)
    replay.finish()
    scores = sink.scores
    assert sum(s.candidate_failed for s in scores) > 10, "failures to order"
    first, second = (judged(random.Random(seed).sample(scores, len(scores))) for seed in (1, 2))
    assert len(first["decisions"]) > 5
    for part in ("windows", "decisions", "state"):
        assert differences(first[part], second[part]) == [], part
