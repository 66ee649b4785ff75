"""The streaming worker end to end on the real Apache Kafka broker (scripts/test.sh).

20k events built from the shipped AlpacaEval sample and Azure trace, published out of
order (bounded shuffle), some under a wrong key, with 2 % of candidates lost, 1 % of halves
sent twice, malformed payloads, and a 1.5x candidate latency regression 15 minutes in.
One worker, exactly-once. Checked against ground truth computed from the events:
ClickHouse, the dead-letter topic and the control topic.
"""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest
from shadowlens.judge.policy import load_policy
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults, interleave, malformed_payloads
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import Arm, Event
from shadowlens.store.client import Store
from shadowlens.streams.wire import read_dead_letter

from tests.stream_harness import (
    WorkerProcess,
    bounded_shuffle,
    control_messages,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    read_topic,
    wait_for,
    worker_env,
)

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

REQUESTS = 10_000
REGRESSION_AFTER_MS = 900_000
TOO_LARGE_BYTES = 1_200_000  # over the 1 MiB event limit, under the topic's 4 MiB


BIG_REQUEST = "gpt4-to-llama3-70b-0000005"


def with_big_output(event: Event) -> Event:
    """A valid event near the 1 MiB limit: its pair and its pairing state are bigger than
    Kafka's default 1 MiB record, which the worker's own topics must accept."""
    text = "long answer " * 60_000 + (event.output.text or "")  # 720 kB: a pair is 1.4 MB
    return replace(event, output=replace(event.output, text=text))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fast_policy(tmp_path: Path) -> Path:
    """The shipped policy with heartbeats every second, so a short test sees some."""
    from importlib import resources

    text = resources.files("shadowlens.judge").joinpath("default_policy.toml").read_text()
    text = text.replace("heartbeat_ms = 10000", "heartbeat_ms = 1000")
    assert "heartbeat_ms = 1000\n" in text
    # this traffic has no replica arm: let the ramp move on latency/errors alone (quality
    # certification has its own tests), so the test still sees promotions before the regression
    text = text.replace("require_reference = true", "require_reference = false")
    assert "require_reference = false" in text
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_worker_pairs_windows_judges_and_dead_letters_20k_events(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=REQUESTS)
    t0 = min(e.start_time_ms for e in events)
    faults = Faults(
        latency_factor=1.5,
        latency_after_ms=REGRESSION_AFTER_MS,
        drop_share=0.02,
        duplicate_share=0.01,
    )
    events = apply_faults(events, faults, sample.instructions)
    events = [with_big_output(e) if e.request_id == BIG_REQUEST else e for e in events]
    bad = malformed_payloads(7, too_large_bytes=TOO_LARGE_BYTES)
    raw = bounded_shuffle([e.to_json() for e in events], horizon=40, seed=1)
    payloads = interleave(raw, [p for p, _ in bad], seed=7)

    # ground truth from the events themselves
    arms: dict[str, set[str]] = {}
    for e in events:
        arms.setdefault(e.request_id, set()).add(str(e.arm))
    expected = {
        rid: "paired" if str(Arm.CANDIDATE) in a else "candidate_missing" for rid, a in arms.items()
    }
    assert len(expected) == REQUESTS and set().union(*arms.values()) == {"primary", "candidate"}
    end_ms = last_window_end(events)

    topics = make_topics(topic_factory)
    publish_payloads(
        kafka_bootstrap, topics.events, payloads, end_marker=True, misroute_share=0.05, seed=3
    )
    dsn = f"chdb://{tmp_path / 'ch'}"
    metrics_port = free_port()
    env = worker_env(
        kafka_bootstrap,
        topics,
        dsn,
        guarantee="exactly_once",
        policy=fast_policy(tmp_path),
        SHADOWLENS_METRICS_PORT=str(metrics_port),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, end_ms),
            timeout=150,
            what="the decision of the last window",
            workers=[worker],
        )
        stats = worker.stats()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            metrics = resp.read().decode()
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    assert stats["rekeyed"] > 0, "some events were published under a wrong key"
    assert not stats.get("input_gaps"), "the consumer skipped records"
    for family in (
        "shadowlens_pairs_total",
        "shadowlens_dead_letters_total",
        "shadowlens_heartbeat_age_seconds",
        "shadowlens_consumer_lag_records",
    ):
        assert family in metrics, f"{family} missing from /metrics"

    with Store.open(dsn) as store:
        rows = store.query("SELECT request_id, outcome FROM pairs FINAL").result_rows
        windows = store.query(
            "SELECT sum(n_requests), sum(n_paired), sum(n_candidate_missing), sum(late_pairs) "
            "FROM windows FINAL"
        ).result_rows[0]
        stored_letters = store.query(
            "SELECT reason, count() FROM dead_letters GROUP BY reason"
        ).result_rows
    assert len(rows) == len(expected), "one row per request: no pair missing, none twice"
    assert dict(rows) == expected
    assert expected[BIG_REQUEST] == "paired"
    n_paired = sum(1 for o in expected.values() if o == "paired")
    assert windows == (REQUESTS, n_paired, REQUESTS - n_paired, 0)

    # dead letters: every malformed payload, with its reason, bytes kept
    letters = [
        read_dead_letter(r.value, r.headers) for r in read_topic(kafka_bootstrap, topics.deadletter)
    ]
    assert Counter(x.reason for x in letters) == Counter(reason for _, reason in bad)
    by_reason = {p: reason for p, reason in bad}
    for letter in letters:
        if letter.reason != "too_large":
            assert by_reason[letter.raw] == letter.reason
        assert letter.source.startswith(f"{topics.events}/")
    assert Counter(dict(stored_letters)) == Counter(reason for _, reason in bad)

    # control: a rollback after the regression, none before; heartbeats with a lease
    messages = control_messages(kafka_bootstrap, topics.control)
    decisions = [m for m in messages if m["type"] == "decision"]
    rollbacks = [m for m in decisions if m["action"] == "rollback"]
    assert rollbacks, [(m["action"], m["reason"][:80]) for m in decisions]
    assert min(m["decided_at_ms"] for m in rollbacks) >= t0 + REGRESSION_AFTER_MS
    assert any("latency" in m["reason"] for m in rollbacks)
    assert any(m["action"] == "promote" for m in decisions), "the ramp moved before"
    epochs = [m["epoch"] for m in decisions]
    assert epochs == sorted(epochs), "epochs never go back"
    heartbeats = [m for m in messages if m["type"] == "heartbeat"]
    assert heartbeats and all(
        m["lease_expires_at_ms"] - m["issued_at_ms"] == load_policy().ramp.lease_ms
        for m in heartbeats
    )
    assert orjson.loads(orjson.dumps(decisions[-1]))["decided_at_ms"] == end_ms
