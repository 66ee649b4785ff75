"""An identical candidate (issue 12): the primary's own answers, byte for byte, and its
latency up to 5 % per-request noise. It must never be rolled back and must clear each stage
as soon as the stage's hold and pairs allow, at the shipped sample's traffic rate, through
the whole job with the shipped policy (a 20 % replica arm, as the default replay)."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
from shadowlens.judge.policy import load_policy
from shadowlens.judge.verdicts import Action
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.run import run_replay
from shadowlens.replay.traffic import PRIMARY_MODEL, build_events
from shadowlens.schemas.events import Arm, Event

POLICY = load_policy()
REQUESTS = 9_000  # ~31 minutes at the sample's 4.77 requests per second
NOISE = 0.05


def identical(events: list[Event], seed: int = 0) -> list[Event]:
    """The candidate's events with the primary's answer and latency times e^N(0, 5 %)."""
    rng = np.random.default_rng(seed)
    primary = {e.request_id: e for e in events if e.arm == Arm.PRIMARY}

    def like_primary(e: Event) -> Event:
        if e.arm != Arm.CANDIDATE:
            return e
        p = primary[e.request_id]
        lat = round(p.latency_ms * float(np.exp(rng.normal(0.0, NOISE))), 3)
        return replace(
            p, arm=Arm.CANDIDATE, latency_ms=lat, end_time_ms=p.start_time_ms + round(lat)
        )

    return [like_primary(e) for e in events]


def test_an_identical_candidate_clears_every_stage_as_soon_as_hold_and_pairs_allow() -> None:
    sample = load_sample()
    events = build_events(
        sample.instructions,
        sample.arrivals,
        requests=REQUESTS,
        candidate=PRIMARY_MODEL,
        replica_share=0.2,
    )
    made = run_replay([(e.to_json(), "") for e in identical(events)], POLICY, None).memory.made
    actions = [d.action for d in made]
    assert Action.ROLLBACK not in actions
    promotions = [d for d in made if d.action == Action.PROMOTE]
    assert [d.to_percent for d in promotions] == list(POLICY.ramp.stages_percent[1:])
    ramp, window = POLICY.ramp, POLICY.windows.size_ms
    starts = [min(d.decided_at_ms for d in made) - window] + [d.decided_at_ms for d in promotions]
    stage_ms = [b - a for a, b in pairwise(starts)]
    # a decision comes at each window's end: the hold ends within one window of its own end
    # (and the stage's 200 pairs come within its first minute at 4.77 requests/s)
    assert max(stage_ms) <= ramp.min_hold_ms + window, stage_ms
