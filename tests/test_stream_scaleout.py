"""Two workers in one consumer group split the partitions; state moves with a partition.

Traffic is published at 100x real time while two workers run. Both must get pairing
partitions and process events; exactly one owns the pairs partition (the judge and the
single ClickHouse writer). Halfway, one worker stops: the other takes over its partitions,
rebuilding their pairing tables (and, if it moved, the judge's windows) from the
changelogs. The totals in ClickHouse must still be exact.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import Arm
from shadowlens.store.client import Store

from tests.stream_harness import (
    WorkerProcess,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    wait_for,
    worker_env,
)

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

REQUESTS = 5_000
SPEED = 100.0  # 5,000 requests span ~17 minutes of trace time: ~10 s at 100x


def test_two_workers_split_partitions_and_hand_over_state(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=REQUESTS, seed=5)
    events = apply_faults(
        events, Faults(drop_share=0.02, duplicate_share=0.01), sample.instructions
    )
    arms: dict[str, set[str]] = {}
    for e in events:
        arms.setdefault(e.request_id, set()).add(str(e.arm))
    expected = {
        rid: "paired" if str(Arm.CANDIDATE) in a else "candidate_missing" for rid, a in arms.items()
    }
    end_ms = last_window_end(events)

    topics = make_topics(topic_factory)
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = worker_env(kafka_bootstrap, topics, dsn)  # one app id: one consumer group
    workers = [WorkerProcess(env, tmp_path / f"worker{i}.log") for i in (1, 2)]
    publisher = threading.Thread(
        target=publish_payloads,
        args=(kafka_bootstrap, topics.events, [e.to_json() for e in events]),
        kwargs={"speed": SPEED, "end_marker": True, "misroute_share": 0.05},
    )
    try:
        wait_for(
            lambda: all(w.stats().get("pairing_tasks") for w in workers),
            timeout=60,
            what="both workers to own pairing partitions",
            workers=workers,
        )
        publisher.start()

        def both_busy() -> list[dict] | None:
            stats = [w.stats() for w in workers]
            return stats if all(st.get("events", 0) > 300 for st in stats) else None

        both = wait_for(
            both_busy, timeout=60, what="both workers to process events", workers=workers
        )
        owned = [set(s["pairing_tasks"]) for s in both]
        assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == {0, 1, 2, 3}
        assert sorted(len(s["judging_tasks"]) for s in both) == [0, 1], "one judge, one writer"

        leaving, staying = workers[1], workers[0]
        assert leaving.stop() == 0, leaving.tail()
        wait_for(
            lambda: (
                staying.stats().get("pairing_tasks") == [0, 1, 2, 3]
                and staying.stats().get("judging_tasks") == [0]
            ),
            timeout=60,
            what="the remaining worker to take over every partition",
            workers=[staying],
        )
        publisher.join(timeout=60)
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, end_ms),
            timeout=90,
            what="the decision of the last window",
            workers=[staying],
        )
        final = staying.stats()
    finally:
        publisher.join(timeout=60)
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    assert not final.get("input_gaps")

    with Store.open(dsn) as store:
        pairs = dict(store.query("SELECT request_id, outcome FROM pairs FINAL").result_rows)
        unique = store.query("SELECT uniqExact(request_id, comparison) FROM pairs").result_rows
        windowed = store.query("SELECT sum(n_requests) FROM windows FINAL").result_rows[0][0]
    assert pairs == expected
    assert unique[0][0] == len(expected)
    assert windowed == len(expected)
