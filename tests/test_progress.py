"""A stream's progress: no single event dated ahead (or calling too long) can move it."""

from __future__ import annotations

import pytest
from shadowlens.pipeline.pairing import PairingConfig
from shadowlens.pipeline.progress import Progress

from tests.builders import event

CFG = PairingConfig(max_call_ms=10_000, max_skew_ms=2_000, lateness_ms=1_000)
DAY = 86_400_000


def feed(completions: list[int], now_ms: int | None = None) -> tuple[list[int], list[int], int]:
    """Events completing at these times (100 ms calls), in this order, then end of input:
    (accepted in processing order, rejected as future_timestamp, highest watermark seen)."""
    progress: Progress[int] = Progress(CFG)
    accepted, rejected, high = [], [], 0
    for i, done in enumerate(completions):
        admitted = progress.admit(event(f"r{i}", start=done - 100, latency=100), done, now_ms)
        accepted += [t for _, t in admitted.accepted]
        rejected += [r.payload for r in admitted.rejected if r.reason == "future_timestamp"]
        high = max(high, progress.watermark_ms)
    admitted = progress.end()
    accepted += [t for _, t in admitted.accepted]
    rejected += [r.payload for r in admitted.rejected]
    return accepted, rejected, high


T = 1_000_000  # a stream's time
G = T + DAY  # a garbage timestamp, a day ahead


@pytest.mark.parametrize(
    ("stream", "accepted", "rejected"),
    [
        # the first event waits for a second to confirm it, then the stream flows
        ([T, T + 500, T + 900], [T, T + 500, T + 900], []),
        # one event a day ahead, mid-stream: dead-lettered when the next one lands at home
        ([T, T + 100, G, T + 200, T + 300], [T, T + 100, T + 200, T + 300], [G]),
        # a quiet spell of 5 minutes: the jump is real, the next event confirms it
        ([T, T + 100, T + 300_000, T + 300_100], [T, T + 100, T + 300_000, T + 300_100], []),
        # after the spell, a slow call completes 10 s later: it confirms the jump, and is
        # then itself a jump nothing follows at the end of input
        ([T, T + 100, T + 300_000, T + 310_000], [T, T + 100, T + 300_000], [T + 310_000]),
        # garbage, then a real jump: the later-dated one is the suspect
        ([T, T + 100, G, T + 300_000, T + 300_100], [T, T + 100, T + 300_000, T + 300_100], [G]),
        # a real jump, then garbage
        ([T, T + 100, T + 300_000, G, T + 300_100], [T, T + 100, T + 300_000, T + 300_100], [G]),
        # the very first event is garbage
        ([G, T, T + 100], [T, T + 100], [G]),
        # two events from the same wrong future agree: taken for progress (one event only)
        ([T, T + 100, G, G + 10], [T, T + 100, G, G + 10], []),
        # a stream of one event has nothing to contradict it
        ([T], [T], []),
        # events from the past never move it and are never held
        ([T, T + 100, T - DAY, T + 200], [T, T + 100, T - DAY, T + 200], []),
    ],
)
def test_a_jump_is_held_until_the_next_event_confirms_or_contradicts_it(
    stream: list[int], accepted: list[int], rejected: list[int]
) -> None:
    got_accepted, got_rejected, high = feed(stream)
    assert (got_accepted, got_rejected) == (accepted, rejected)
    assert high <= max(accepted) - CFG.lateness_ms - CFG.max_skew_ms


@pytest.mark.parametrize(
    ("done", "now", "verdict"),
    [
        (T, T, "accepted"),  # the wall clock vouches: no need to wait for a second event
        (T + 2_000, T, "accepted"),  # a clock up to max_skew_ms ahead
        (T + 2_001, T, "future"),  # beyond: dead-lettered at once
        (T + DAY, T, "future"),
        (T - DAY, T, "held"),  # old traffic (a replay through the worker): the stream decides
    ],
)
def test_the_worker_checks_the_wall_clock_first(done: int, now: int, verdict: str) -> None:
    progress: Progress[None] = Progress(CFG)
    admitted = progress.admit(event(start=done - 100, latency=100), None, now)
    got = (
        "accepted"
        if admitted.accepted
        else "future"
        if admitted.rejected and admitted.rejected[0].reason == "future_timestamp"
        else "held"
    )
    assert got == verdict


@pytest.mark.parametrize(
    ("latency", "accepted"),
    [(9_999.0, True), (10_000.0, True), (10_000.5, False), (3_600_000.0, False)],
)
def test_a_call_longer_than_max_call_ms_is_dead_lettered(latency: float, accepted: bool) -> None:
    progress: Progress[None] = Progress(CFG, newest_ms=T)
    admitted = progress.admit(event(start=T - round(latency), latency=latency), None)
    assert bool(admitted.accepted) == accepted
    if not accepted:
        (letter,) = admitted.rejected
        assert letter.reason == "call_too_long" and "max_call_ms 10000" in letter.detail
        assert progress.newest_ms == T, "it moved nothing"


def test_the_watermark_trails_the_newest_completion_by_lateness_and_skew() -> None:
    progress: Progress[None] = Progress(CFG)
    assert progress.watermark_ms == 0
    progress.admit(event("a", start=T - 100, latency=100), None, now_ms=T)
    assert progress.watermark_ms == T - 1_000 - 2_000
