"""Event-time tumbling windows and their mergeable aggregates."""

from __future__ import annotations

import numpy as np
import pytest
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.pairs import score_orphan, score_pair
from shadowlens.pipeline.windows import TumblingWindows, WindowKey
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
    w.add(pair("a", 100), watermark_ms=100)
    w.add(pair("b", 1_100), watermark_ms=1_100)
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
    agg.add(score_orphan(event("o1"), "candidate", {}))
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
    assert agg.examples("errors") == ["o1", "e1"]
    assert len(agg.examples("latency")) == 3


def test_merge_equals_adding_everything_to_one() -> None:
    scores = [pair(f"r{i}", i, 1000 + i, 900 + 3 * i) for i in range(300)]
    scores[5] = score_orphan(event("x"), "candidate", {})
    one, total = added_and_merged(scores)
    assert total.n_requests == one.n_requests and total.candidate_failures == 1
    assert total.log_latency_ratio.mean == pytest.approx(one.log_latency_ratio.mean)
    assert total.latency_quantile("candidate", 0.99) == pytest.approx(
        one.latency_quantile("candidate", 0.99)
    )
    assert total.examples("latency") == one.examples("latency")
    assert (total.first_event_ms, total.last_event_ms) == (0, 1_000_000)  # the orphan
