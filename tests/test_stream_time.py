"""Event time on the real broker: long calls, two gateways 90 s apart, a future-dated event.

3,000 requests from the shipped sample in two experiments; 3 % of the calls take 1 to 5
minutes on both arms (the candidate 5 % slower), and the candidate's gateway stamps its
events 90 s ahead of the primary's. Run A publishes them as they are; run B adds two
events dated in the future in the middle of the stream (a day ahead, caught by the
stream's progress; the year 2100, caught by the wall clock). Checked:

* every request pairs: no orphan, no late drop, no dead letter in A, and the candidate's
  p99 in ClickHouse is the true one (the long calls are in it);
* the observed skew is +90 s per provider, on /metrics and in the report;
* B dead-letters exactly its two future events and otherwise makes A's windows and
  decisions, byte for byte: they closed no window and orphaned nothing;
* the worker makes the windows and decisions the in-process replay makes.
"""

from __future__ import annotations

import random
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shadowlens.judge.policy import load_policy
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.run import run_replay
from shadowlens.replay.traffic import build_events, publish_order
from shadowlens.report.model import load as load_report
from shadowlens.schemas.events import Arm, Event
from shadowlens.store.client import Store
from shadowlens.streams.wire import read_dead_letter

from tests.stream_harness import (
    WorkerProcess,
    control_messages,
    decision_key,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    read_topic,
    replay_decisions,
    replay_windows,
    wait_for,
    worker_env,
)
from tests.test_stream_worker import fast_policy, free_port

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

REQUESTS = 1_500  # per experiment
EXPERIMENTS = ("time-a", "time-b")
LONG_SHARE = 0.03
SKEW_MS = 90_000  # the candidate's gateway clock runs this far ahead of the primary's
DAY_MS = 86_400_000
YEAR_2100_MS = 4_102_444_800_000


def long_calls(events: list[Event], seed: int) -> list[Event]:
    """A share of requests take 1-5 minutes on both arms (reasoning models, long answers),
    the candidate 5 % slower."""
    rng = random.Random(seed)
    ids = sorted({e.request_id for e in events})
    slow = {rid: rng.uniform(60_000, 300_000) for rid in ids if rng.random() < LONG_SHARE}

    def stretched(e: Event) -> Event:
        lat = round(slow[e.request_id] * (1.05 if e.arm == Arm.CANDIDATE else 1.0), 3)
        return replace(e, latency_ms=lat, end_time_ms=e.start_time_ms + round(lat))

    return [stretched(e) if e.request_id in slow else e for e in events]


def candidate_gateway(e: Event) -> Event:
    """The candidate's gateway: its own provider name, its clock SKEW_MS ahead."""
    if e.arm != Arm.CANDIDATE:
        return e
    end = (e.end_time_ms or 0) + SKEW_MS
    return replace(e, start_time_ms=e.start_time_ms + SKEW_MS, end_time_ms=end, provider="onprem")


def traffic() -> list[Event]:
    """Both experiments in true completion order (how gateways publish), then stamped."""
    sample = load_sample()
    events: list[Event] = []
    for seed, experiment in enumerate(EXPERIMENTS):
        built = build_events(
            sample.instructions, sample.arrivals, experiment=experiment, requests=REQUESTS
        )
        events += long_calls(built, seed)
    return [candidate_gateway(e) for e in publish_order(events)]


def future(event: Event, request_id: str, start_ms: int) -> bytes:
    """A lone half whose gateway sent a garbage timestamp."""
    end = start_ms + round(event.latency_ms)
    return replace(event, request_id=request_id, start_time_ms=start_ms, end_time_ms=end).to_json()


def run_worker(
    bootstrap: str, topic_factory: TopicFactory, tmp_path: Path, payloads: list[bytes], end: int
) -> dict[str, Any]:
    """One worker over `payloads` to the last decision: what it wrote, sent and measured."""
    tmp_path.mkdir()
    topics = make_topics(topic_factory)
    publish_payloads(bootstrap, topics.events, payloads, end_marker=True, seed=3)
    dsn = f"chdb://{tmp_path / 'ch'}"
    metrics_port = free_port()
    env = worker_env(
        bootstrap,
        topics,
        dsn,
        policy=fast_policy(tmp_path),
        SHADOWLENS_METRICS_PORT=str(metrics_port),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: final_decision_seen(bootstrap, topics.control, end),
            timeout=180,
            what="the decision of the last window",
            workers=[worker],
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            metrics = resp.read().decode()
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    with Store.open(dsn) as store:
        pairs = store.query("SELECT outcome, count() FROM pairs FINAL GROUP BY outcome").result_rows
        latencies = store.query(
            "SELECT candidate_latency_ms FROM pairs FINAL WHERE candidate_status = 'ok'"
        ).result_rows
        windows = store.query(
            "SELECT experiment, segment, comparison, toUnixTimestamp64Milli(window_start), "
            "n_requests, n_paired, late_pairs, round(candidate_latency_p99_ms, 3) "
            "FROM windows FINAL"
        ).result_rows
        report = load_report(store, EXPERIMENTS[0], load_policy())
    letters = [
        read_dead_letter(r.value, r.headers) for r in read_topic(bootstrap, topics.deadletter)
    ]
    decisions = [m for m in control_messages(bootstrap, topics.control) if m["type"] == "decision"]
    return {
        "pairs": dict(pairs),
        "candidate_latencies": sorted(v for (v,) in latencies),
        "windows": sorted(windows),
        "decisions": sorted(decision_key(m) for m in decisions),
        "letters": sorted((x.request_id, x.reason) for x in letters),
        "skew": skew_seconds(metrics),
        "report_skew": report.clock_skew,
    }


def skew_seconds(metrics: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(experiment, provider) -> (pairs observed, the bucket bounds (lo, hi] holding every
    observed skew in s) of the skew histogram (with negative buckets it has no _sum)."""
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name != "shadowlens_clock_skew_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                key = (s.labels["experiment"], s.labels["provider"])
                buckets.setdefault(key, []).append((float(s.labels["le"]), s.value))
    out = {}
    for key, cumulative in buckets.items():
        cumulative.sort()
        n = cumulative[-1][1]
        lo = max((le for le, c in cumulative if c == 0), default=float("-inf"))
        hi = min(le for le, c in cumulative if c == n)
        out[key] = (n, lo, hi)
    return out


def test_long_calls_skewed_clocks_and_a_future_event_on_the_broker(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    events = traffic()
    n = len(EXPERIMENTS) * REQUESTS
    true_latencies = sorted(e.latency_ms for e in events if e.arm == Arm.CANDIDATE)
    true_p99 = float(np.quantile(true_latencies, 0.99))
    assert true_p99 > 120_000, "the long calls make the candidate's p99"
    clean = [e.to_json() for e in events]  # disorder by position would, in the sparse tail of
    # long calls, move an event minutes ahead of its peers: far beyond pairing.lateness_ms
    primary = next(e for e in events if e.arm == Arm.PRIMARY)
    dirty = list(clean)
    dirty.insert(len(clean) // 4, future(primary, "future-day", primary.start_time_ms + DAY_MS))
    dirty.insert(len(clean) // 2, future(primary, "future-2100", YEAR_2100_MS))
    end = last_window_end(events)

    a = run_worker(kafka_bootstrap, topic_factory, tmp_path / "a", clean, end)
    assert a["pairs"] == {"paired": n}, "no orphan, nothing lost"
    assert a["letters"] == []
    assert a["candidate_latencies"] == true_latencies, "every slow call counted, as it was"
    assert float(np.quantile(a["candidate_latencies"], 0.99)) == true_p99
    assert sum(w[4] for w in a["windows"]) == n and sum(w[6] for w in a["windows"]) == 0
    assert a["skew"] == {(x, "onprem"): (REQUESTS, 60.0, 120.0) for x in EXPERIMENTS}
    (row,) = a["report_skew"]
    assert (row.arm, row.provider, row.pairs) == ("candidate", "onprem", REQUESTS)
    assert row.skew_ms == (SKEW_MS, SKEW_MS, SKEW_MS)
    failing = {e[0] for k in a["decisions"] for e in k[4] if e[2] == "fail"}
    assert "error_rate" not in failing, "no invented errors"

    b = run_worker(kafka_bootstrap, topic_factory, tmp_path / "b", dirty, end)
    assert b["letters"] == [("future-2100", "future_timestamp"), ("future-day", "future_timestamp")]
    assert b["pairs"] == a["pairs"]
    assert b["windows"] == a["windows"], "the future events closed no window early"
    assert b["decisions"] == a["decisions"]

    # the same policy as the workers ran (no replica arm here: require_reference off)
    replayed = run_replay([(p, "") for p in clean], load_policy(fast_policy(tmp_path)), None)
    assert replay_windows(replayed.memory) == [w[:7] for w in a["windows"]]
    assert replay_decisions(replayed.memory) == [k[:4] for k in a["decisions"]]
