"""policy.limits on the real broker: the worker windows and judges one experiment and three
segments, stores every pair, and counts the overflow on /metrics to the pair.

Two experiments of the shipped sample (five segments each), the second starting five
minutes after the first; the policy admits one experiment and three segments.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families
from shadowlens.judge.policy import load_policy
from shadowlens.pipeline.cardinality import OTHER_SEGMENT
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.traffic import build_events, publish_order
from shadowlens.store.client import Store

from tests.stream_harness import (
    WorkerProcess,
    control_messages,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    wait_for,
    worker_env,
)
from tests.test_stream_worker import fast_policy, free_port

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

REQUESTS = 600
FIRST, SECOND = "limits-a", "limits-b"
LATER_MS = 300_000
ADMITTED_SEGMENTS = 3


def limited_policy(tmp_path: Path) -> Path:
    path = fast_policy(tmp_path)
    text = path.read_text().replace("max_segments = 8 ", f"max_segments = {ADMITTED_SEGMENTS} ")
    text = text.replace("max_experiments = 64 ", "max_experiments = 1 ")
    text = text.replace("max_segments = 64 ", f"max_segments = {ADMITTED_SEGMENTS} ")
    path.write_text(text)
    limits = load_policy(path).limits
    assert (limits.max_experiments, limits.max_segments) == (1, ADMITTED_SEGMENTS)
    return path


def overflow(metrics: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["experiment"], s.labels["kind"]): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "shadowlens_limit_overflow"
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_the_worker_judges_within_the_limits_and_counts_the_overflow(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    sample = load_sample()
    first = build_events(sample.instructions, sample.arrivals, experiment=FIRST, requests=REQUESTS)
    t0 = min(e.start_time_ms for e in first)
    second = build_events(
        sample.instructions,
        sample.arrivals,
        experiment=SECOND,
        requests=REQUESTS,
        start_ms=t0 + LATER_MS,
        seed=1,
    )
    assert len({e.segment for e in first}) > ADMITTED_SEGMENTS
    topics = make_topics(topic_factory)
    publish_payloads(
        kafka_bootstrap,
        topics.events,
        [e.to_json() for e in publish_order(first + second)],
        end_marker=True,
        seed=3,
    )
    dsn = f"chdb://{tmp_path / 'ch'}"
    metrics_port = free_port()
    env = worker_env(
        kafka_bootstrap,
        topics,
        dsn,
        policy=limited_policy(tmp_path),
        SHADOWLENS_METRICS_PORT=str(metrics_port),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, last_window_end(first)),
            timeout=180,
            what="the decision of the first experiment's last window",
            workers=[worker],
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            metrics = resp.read().decode()
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    with Store.open(dsn, readonly=True) as store:
        pairs = dict(
            store.query(
                "SELECT experiment, count() FROM pairs FINAL GROUP BY experiment"
            ).result_rows
        )
        windows = store.query(
            "SELECT segment, sum(n_requests) FROM windows FINAL "
            "WHERE comparison = 'candidate' GROUP BY experiment, segment"
        ).result_rows
        windowed_experiments = {
            e for (e,) in store.query("SELECT DISTINCT experiment FROM windows").result_rows
        }
        by_segment = dict(
            store.query(
                "SELECT segment, count() FROM pairs FINAL WHERE experiment = {e:String} "
                "GROUP BY segment",
                {"e": FIRST},
            ).result_rows
        )
    assert pairs == {FIRST: REQUESTS, SECOND: REQUESTS}, "every pair stored, judged or not"
    assert windowed_experiments == {FIRST}
    segments = dict(windows)
    assert len(segments) == ADMITTED_SEGMENTS + 1 and OTHER_SEGMENT in segments
    assert sum(segments.values()) == REQUESTS, "every request of the judged one is in a window"
    merged = sum(n for s, n in by_segment.items() if s not in segments)
    assert segments[OTHER_SEGMENT] == merged
    assert overflow(metrics) == {("", "experiment"): REQUESTS, (FIRST, "segment"): merged}
    decided = {m.get("experiment") for m in control_messages(kafka_bootstrap, topics.control)}
    assert decided == {FIRST}, "nothing is decided for an experiment beyond the limit"
