"""Judging spread over two workers (issue 15 item 5): shadow.pairs has two partitions, keyed
by experiment, and each of two workers in one group owns one. Each judges the experiments
of its partition and writes their rows; together their windows and decisions are exactly
the in-process replay's.

With chdb a data directory belongs to one process, so each worker writes to a store of its
own here; against a ClickHouse server both would share one DSN. The experiments' names are
chosen to fall on both partitions (checked), and the events are published only once each
worker owns its judging partition, so no judging state moves during the run (the hand-over
of a judging partition is tests/test_stream_scaleout.py's).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from shadowlens.judge.policy import load_policy
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.run import run_replay
from shadowlens.replay.traffic import build_events, publish_order
from shadowlens.schemas.events import Event
from shadowlens.store.client import Store
from shadowlens.streams.wire import pairing_partition

from tests.stream_harness import (
    WorkerProcess,
    control_messages,
    decision_key,
    make_topics,
    publish_payloads,
    replay_decisions,
    replay_windows,
    report,
    wait_for,
    worker_env,
)
from tests.test_stream_worker import fast_policy

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

REQUESTS = 1_000  # per experiment
EXPERIMENTS = ("judge-a", "judge-b", "judge-c")
PARTITIONS = 2


def traffic() -> list[Event]:
    sample = load_sample()
    events: list[Event] = []
    for seed, experiment in enumerate(EXPERIMENTS):
        events += build_events(
            sample.instructions,
            sample.arrivals,
            experiment=experiment,
            requests=REQUESTS,
            seed=seed,
        )
    return publish_order(events)


def windows_and_pairs(dsn: str) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    with Store.open(dsn) as store:
        windows = store.query(
            "SELECT experiment, segment, comparison, toUnixTimestamp64Milli(window_start), "
            "n_requests, n_paired, late_pairs FROM windows FINAL"
        ).result_rows
        pairs = store.query(
            "SELECT experiment, count() FROM pairs FINAL GROUP BY experiment"
        ).result_rows
    return sorted(windows), dict(pairs)


def test_two_workers_share_judging_and_match_the_replay(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    by_partition = {x: pairing_partition(x, PARTITIONS) for x in EXPERIMENTS}
    assert set(by_partition.values()) == set(range(PARTITIONS)), by_partition
    events = traffic()
    payloads = [e.to_json() for e in events]
    policy = fast_policy(tmp_path)
    memory = run_replay([(p, "") for p in payloads], load_policy(policy), None).memory
    expected_windows = replay_windows(memory)
    expected_decisions = replay_decisions(memory)
    assert {d[0] for d in expected_decisions} == set(EXPERIMENTS)
    expected_pairs = Counter(score.experiment for score in memory.scores)

    topics = make_topics(topic_factory, pairs_partitions=PARTITIONS)
    dsns = [f"chdb://{tmp_path / f'ch{i}'}" for i in (0, 1)]
    env = worker_env(
        kafka_bootstrap,
        topics,
        dsns[0],
        policy=policy,
        SHADOWLENS_PAIRS_PARTITIONS=str(PARTITIONS),
    )  # one app id: one consumer group
    workers = [
        WorkerProcess({**env, "SHADOWLENS_DSN": dsn}, tmp_path / f"worker{i}.log")
        for i, dsn in enumerate(dsns)
    ]

    def decisions() -> list[dict[str, Any]]:
        messages = control_messages(kafka_bootstrap, topics.control)
        return [m for m in messages if m["type"] == "decision"]

    try:
        owned = wait_for(
            lambda: (
                [w.stats().get("judging_tasks") for w in workers]
                if all(len(w.stats().get("judging_tasks") or ()) == 1 for w in workers)
                else None
            ),
            timeout=90,
            what="each worker to own one judging partition",
            workers=workers,
        )
        publish_payloads(kafka_bootstrap, topics.events, payloads, end_marker=True, seed=4)
        wait_for(
            lambda: len(decisions()) >= len(expected_decisions),
            timeout=240,
            what=f"the replay's {len(expected_decisions)} decisions",
            workers=workers,
        )
        final = [w.stats() for w in workers]
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    assert [s.get("judging_tasks") for s in final] == owned, "no judging state moved"

    stored = [windows_and_pairs(dsn) for dsn in dsns]
    for (windows, pairs), (partition,) in zip(stored, owned, strict=True):
        mine = {x for x, p in by_partition.items() if p == partition}
        assert set(pairs) == mine, "each worker writes the rows of its own experiments"
        assert {w[0] for w in windows} == mine
        assert pairs == {x: expected_pairs[x] for x in mine}
    assert sorted(w for windows, _ in stored for w in windows) == expected_windows
    made = sorted(decision_key(m)[:4] for m in decisions())
    report(
        capsys,
        judging_partitions=owned,
        windows_by_worker=[len(windows) for windows, _ in stored],
        pairs_by_worker=[sum(pairs.values()) for _, pairs in stored],
        decisions=len(made),
    )
    assert made == expected_decisions
