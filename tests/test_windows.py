"""Event-time tumbling windows and their mergeable aggregates; what time a pair gets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.pairs import score_orphan, score_pair, score_split
from shadowlens.job.pipeline import Pipeline
from shadowlens.job.sinks import MemorySink
from shadowlens.judge.policy import PairingPolicy, Policy
from shadowlens.pipeline.windows import TumblingWindows, WindowKey, window_start
from shadowlens.schemas.events import Status

from tests.builders import added_and_merged, event


def pair(rid: str, start: int, p_lat: float = 1000, c_lat: float = 1000, **kw):
    return score_pair(
        event(rid, start=start, latency=p_lat, **kw),
        event(rid, "candidate", start=start, latency=c_lat, **kw),
        {},
    )


def test_windows_close_on_event_time_watermark_with_grace() -> None:
    w = TumblingWindows(size_ms=1_000, grace_ms=500)
    w.add(pair("a", 100, 300, 400), watermark_ms=100)  # completed at 500
    w.add(pair("b", 1_100, 300, 400), watermark_ms=1_100)
    assert w.advance(1_400) == []  # window [0, 1000) needs watermark >= 1500
    (closed,) = w.advance(1_500)
    assert closed.key == WindowKey("exp", "seg", "candidate", 0) and closed.end_ms == 1_000
    assert closed.aggregate.n_paired == 1
    assert [c.key.start_ms for c in w.flush()] == [1_000]


def test_late_pair_goes_to_the_open_window_and_is_counted() -> None:
    w = TumblingWindows(size_ms=1_000, grace_ms=0)
    w.add(pair("a", 100), watermark_ms=100)
    w.advance(2_500)
    w.add(pair("late", 200), watermark_ms=2_500)
    (closed,) = w.flush()
    assert closed.key.start_ms == 2_000 and closed.late_pairs == 1
    assert closed.aggregate.n_paired == 1


def test_segments_and_experiments_get_their_own_windows() -> None:
    w = TumblingWindows(size_ms=1_000, grace_ms=0)
    w.add(pair("a", 0, segment="s1"), 0)
    w.add(pair("b", 0, segment="s2"), 0)
    w.add(pair("c", 0, experiment="e2"), 0)
    assert len(w.flush()) == 3


def test_aggregate_counts_failures_orphans_and_quantiles() -> None:
    rng = np.random.default_rng(0)
    agg = Aggregate()
    lat_p, lat_c = rng.lognormal(7, 0.5, 2_000), rng.lognormal(7, 0.5, 2_000) * 1.3
    for i, (lp, lc) in enumerate(zip(lat_p, lat_c, strict=True)):
        agg.add(pair(f"r{i}", i, lp, lc))
    agg.add(score_orphan(event("o1"), "candidate", {}, 1_600_000))
    agg.add(score_pair(event("e1"), event("e1", "candidate", status=Status.ERROR, text=None), {}))
    assert agg.n_paired == 2_001 and agg.n_candidate_missing == 1 and agg.n_requests == 2_002
    assert agg.candidate_failures == 2 and agg.only_candidate_failed == 2
    assert agg.error_rate("candidate") == pytest.approx(2 / 2_002)
    for q in (0.5, 0.95, 0.99):
        assert agg.latency_quantile("candidate", q) == pytest.approx(
            np.quantile(np.append(lat_c, []), q), rel=0.03
        )
    assert agg.log_latency_ratio.mean == pytest.approx(np.mean(np.log(lat_c / lat_p)))
    assert agg.quality.mean == pytest.approx(1.0)  # identical texts
    assert sorted(agg.examples("errors")) == ["e1", "o1"]  # chosen by request, not arrival
    assert len(agg.examples("latency")) == 3


def test_merge_equals_adding_everything_to_one() -> None:
    scores = [pair(f"r{i}", i, 1000 + i, 900 + 3 * i) for i in range(300)]
    scores[5] = score_orphan(event("x"), "candidate", {}, 1_000_000)
    one, total = added_and_merged(scores)
    assert total.n_requests == one.n_requests and total.candidate_failures == 1
    assert total.log_latency_ratio.mean == pytest.approx(one.log_latency_ratio.mean)
    assert total.latency_quantile("candidate", 0.99) == pytest.approx(
        one.latency_quantile("candidate", 0.99)
    )
    assert total.examples("latency") == one.examples("latency")
    assert (total.first_event_ms, total.last_event_ms) == (1_000, 1_000_000)  # the orphan


@pytest.mark.parametrize(
    ("p_start", "p_lat", "c_start", "c_lat", "event_time", "window"),
    [
        (100, 200.0, 100, 300.0, 400, 0),  # both quick: the slower arm's end
        (100, 200.0, 100, 1_300.0, 1_400, 1_000),  # a slow candidate: where it completed
        (900, 350.0, 900, 50.0, 1_250, 1_000),  # a slow primary
        (100, 200.0, 50_000, 300.0, 400, 0),  # the candidate's clock says nothing
        (100, 200.0, -50_000, 300.0, 400, 0),
        (0, 1_000.0, 0, 299_000.0, 299_000, 299_000),  # a 5-minute call, in its 5th minute
    ],
)
def test_a_pair_is_timed_when_it_completed_on_the_primary_clock(
    p_start: int, p_lat: float, c_start: int, c_lat: float, event_time: int, window: int
) -> None:
    s = score_pair(
        event(start=p_start, latency=p_lat),
        event(arm="candidate", start=c_start, latency=c_lat),
        {},
    )
    assert s.event_time_ms == event_time and s.start_skew_ms == c_start - p_start
    assert window_start(s.event_time_ms, 1_000) == window


def test_orphans_at_their_deadline_and_split_calls_at_their_end() -> None:
    assert score_orphan(event(start=100), "candidate", {}, 600_100).event_time_ms == 600_100
    assert score_split(event(start=100, latency=250.0, mode="split"), {}).event_time_ms == 350
    assert score_orphan(event(), "candidate", {}, 600_100).start_skew_ms is None


def closing_points(policy: Policy, events: list) -> list[tuple[int, int]]:
    """(window end, index of the input event that closed it) for each decision."""
    sink = MemorySink()
    pipe = Pipeline(policy, sink)
    closed_at: list[tuple[int, int]] = []
    for i, e in enumerate(events):
        pipe.feed(e.to_json())
        closed_at += [(d.decided_at_ms, i) for d in sink.made[len(closed_at) :]]
    return closed_at


def test_windows_close_as_soon_whatever_max_call_ms() -> None:
    """Decision latency must not grow with max_call_ms: a window closes one window size
    plus grace (plus lateness and skew) after its end, in stream progress, with a 1-minute
    or a 30-minute max_call_ms alike."""
    events = []
    for i in range(1_200):  # 20 minutes, one request a second, calls of 1-40 s
        start, lat = 1_700_000_000_000 + i * 1_000, 1_000.0 + (i * 7919) % 39_000
        events += [
            event(f"r{i}", start=start, latency=lat),
            event(f"r{i}", "candidate", start=start, latency=lat * 1.1),
        ]
    events.sort(key=lambda e: e.completed_ms)
    short, long = (
        replace(Policy(), pairing=PairingPolicy(max_call_ms=ms)) for ms in (60_000, 1_800_000)
    )
    assert closing_points(short, events) == closing_points(long, events)
    policy = Policy()
    end, i = closing_points(long, events)[0]
    newest = max(e.completed_ms for e in events[: i + 1])
    lag = policy.windows.grace_ms + policy.pairing.lateness_ms + policy.pairing.max_skew_ms
    assert end + lag <= newest < end + lag + policy.windows.size_ms // 10 + 1_000
