"""kill -9 a worker mid-stream and start it again (issue 14): no pair lost, none counted
twice, and under exactly_once the judge's evidence equal to a run without the crash.

* exactly_once (the default): one clean run and one killed-and-restarted run of the same
  events, each on its own topics and app id. The events go out in two halves, the end marker
  with the second. The killed run's first worker is killed while the judge closes windows
  and decides on the first half (a judge with a backlog reads pairs late, so a kill that
  waits for its decisions on one whole stream would often come after the end); the second
  worker while it pairs the second half. Every decision with its evidence (control topic),
  the judge's final experiment state (its changelog: pair counts, moments, sketches and
  sequential bounds per stage and segment), every window and every pair (ClickHouse) must
  be equal: counts exactly, floats to 1e-9 (`tests/evidence_diff.py`; only float sums made
  in another order may differ).
* at_least_once, at Faust's 16 KiB producer batches and at 1 MiB: killed right after the
  first task flushed at end of input and before the first commit (30 s apart), so that the
  restart reads everything again over a state that holds it, with a policy that forgets a
  closed request a minute after it started. The restarted worker must skip the input its
  state holds: a half read again opened a request the state had closed and forgotten, as
  an orphan beside the pair (with 1 MiB batches in about half the runs, commit 0e0714d;
  without the fix this test finds 88-245 such rows). Pairs must be exact; windows may count
  a replayed pair twice (docs/streaming.md), so that figure is printed and only checked
  not to fall short.

Pairs are checked with FINAL (the ReplacingMergeTree collapses a row inserted again after a
restart) and with uniqExact over the key without FINAL (merges may be pending).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from shadowlens.judge.policy import load_policy
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import Event
from shadowlens.store.client import Store

from tests.evidence_diff import differences
from tests.kafka_fixtures import TopicFactory
from tests.stream_harness import (
    WorkerProcess,
    expected_outcomes,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    read_topic,
    report,
    store_counts,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.kafka

REQUESTS = 5_000
# what a decision message carries besides the decision: wall-clock times and its signature
NOT_EVIDENCE = {"issued_at_ms", "lease_expires_at_ms", "signature", "signature_alg", "key_id"}


@pytest.fixture(scope="module")
def events() -> list[Event]:
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=REQUESTS, seed=11)
    return apply_faults(events, Faults(drop_share=0.02, duplicate_share=0.01), sample.instructions)


class Run:
    """One worker run of `events` on fresh topics, a fresh app id and its own ClickHouse."""

    def __init__(
        self,
        bootstrap: str,
        topics: TopicFactory,
        events: list[Event],
        workdir: Path,
        guarantee: str,
        policy: Path | None = None,
        **env: str,
    ) -> None:
        workdir.mkdir(parents=True)
        self.bootstrap, self.workdir, self.events = bootstrap, workdir, events
        self.end_ms = last_window_end(events, load_policy(policy))
        self.topics = make_topics(topics)
        self.app_id = f"sl-test-{uuid.uuid4().hex[:10]}"
        self.dsn = f"chdb://{workdir / 'ch'}"
        self.env = worker_env(
            bootstrap,
            self.topics,
            self.dsn,
            app_id=self.app_id,
            guarantee=guarantee,
            policy=policy,
            **env,
        )
        self.workers = 0

    def publish(self, part: int | None = None) -> None:
        """All events, with the end marker, or half `part` of them (the marker with 1)."""
        half = len(self.events) // 2
        events = {None: self.events, 0: self.events[:half], 1: self.events[half:]}[part]
        payloads = [e.to_json() for e in events]
        end = part != 0
        seed = part or 0  # the same 5 % misrouted in every run
        publish_payloads(
            self.bootstrap, self.topics.events, payloads, end_marker=end, misroute_share=0.05,
            seed=seed,
        )  # fmt: skip

    def worker(self) -> WorkerProcess:
        self.workers += 1
        return WorkerProcess(self.env, self.workdir / f"worker-{self.workers}.log")

    def kill_when(self, key: str, at_least: int) -> dict[str, Any]:
        """Start a worker and kill -9 it once its counter `key` reaches `at_least`."""
        worker = self.worker()
        try:
            stats: dict[str, Any] = wait_for(
                lambda: (s := worker.stats()).get(key, 0) >= at_least and s,
                timeout=120,
                what=f"{key} >= {at_least} in the worker to kill",
                workers=[worker],
            )
        finally:
            worker.kill()
        assert not final_decision_seen(self.bootstrap, self.topics.control, self.end_ms), (
            "killed after the last decision: nothing left to restart"
        )
        return stats

    def finish(self) -> dict[str, Any]:
        """Start a worker, let it judge the last window, stop it; its last counters."""
        worker = self.worker()
        try:
            wait_for(
                lambda: final_decision_seen(self.bootstrap, self.topics.control, self.end_ms),
                timeout=180,
                what="the decision of the last window",
                workers=[worker],
            )
            stats = worker.stats()
        finally:
            assert worker.stop() == 0, worker.tail()
        assert not stats.get("input_gaps"), "the consumer skipped records"
        return stats

    def evidence(self) -> dict[str, Any]:
        """What the judge saw and said: decisions with their evidence, its final state,
        windows and pairs, as JSON-like documents."""
        decisions = [
            {k: v for k, v in m.items() if k not in NOT_EVIDENCE}
            for r in read_topic(self.bootstrap, self.topics.control)
            if (m := orjson.loads(r.value))["type"] == "decision"
        ]
        state = {
            r.key.decode(): orjson.loads(r.value) if r.value is not None else None
            for r in read_topic(self.bootstrap, f"{self.app_id}-experiments-changelog")
        }
        with Store.open(self.dsn) as store:
            rows = {
                table: [
                    {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
                    for row in store.query(
                        f"SELECT * EXCEPT inserted_at FROM {table} FINAL ORDER BY {order}"
                    ).named_results()
                ]
                for table, order in (
                    ("windows", "experiment, segment, comparison, window_start"),
                    ("pairs", "request_id, comparison"),
                )
            }
        return {"decisions": decisions, "state": state, **rows}


def short_memory_policy(tmp_path: Path) -> Path:
    """The shipped policy with calls of at most 60 s (the sample's longest takes 31.5 s)
    and a closed request forgotten 1 s after its deadline, so that a restart meets many
    requests its state has closed and forgotten, not just those of the last minutes."""
    text = resources.files("shadowlens.judge").joinpath("default_policy.toml").read_text()
    for old, new in (("max_call_ms = 600000", "max_call_ms = 60000"),
                     ("retention_ms = 120000", "retention_ms = 1000")):  # fmt: skip
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def diff_counts(clean: dict[str, Any], other: dict[str, Any]) -> dict[str, int]:
    """Differences per part of the evidence (0 everywhere: equal)."""
    return {f"{part}_diff": len(differences(clean[part], other[part])) for part in clean}


def window_totals(evidence: dict[str, Any]) -> int:
    return sum(row["n_requests"] for row in evidence["windows"])


@pytest.fixture(scope="module")
def clean(
    kafka_bootstrap: str, events: list[Event], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One run without a crash (exactly_once): what every killed run is compared with."""
    topics = TopicFactory(kafka_bootstrap, "recovery-clean")
    workdir = tmp_path_factory.mktemp("clean") / "run"
    try:
        run = Run(kafka_bootstrap, topics, events, workdir, "exactly_once")
        run.publish(0)
        run.publish(1)
        run.finish()
        yield run.evidence()
    finally:
        topics.cleanup()


def test_kill_9_mid_stream_exactly_once_evidence_equals_a_clean_run(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    events: list[Event],
    clean: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = Run(kafka_bootstrap, topic_factory, events, tmp_path / "run", "exactly_once")
    run.publish(0)
    deciding = run.kill_when("windows", 1)  # the judge closes windows and decides
    run.publish(1)
    pairing = run.kill_when("events", len(events) // 8)  # a quarter into the second half
    assert "end_of_input" not in pairing
    run.finish()
    killed = run.evidence()
    counts = store_counts(run.dsn, expected_outcomes(events))
    figures = diff_counts(clean, killed)
    report(
        capsys,
        test="kill_9_evidence",
        guarantee="exactly_once",
        windows_before_kill_1=deciding["windows"],
        events_before_kill_2=pairing["events"],
        decisions=len(killed["decisions"]),
        **figures,
        **counts,
    )
    for part in clean:
        assert differences(clean[part], killed[part]) == [], part
    assert counts["lost"] == counts["duplicate_pairs"] == counts["wrong_outcome"] == 0, counts
    assert window_totals(killed) == len(expected_outcomes(events))


@pytest.mark.parametrize("batch_bytes", [16 * 1024, 1024 * 1024])
def test_kill_9_at_end_of_input_at_least_once_loses_no_half(
    batch_bytes: int,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    events: list[Event],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "SHADOWLENS_PRODUCER_BATCH_BYTES": str(batch_bytes),
        # no commit before the kill: the restart reads again all the input the state holds
        "SHADOWLENS_COMMIT_INTERVAL_S": "30",
        "SHADOWLENS_COMMIT_EVERY": "1000000",  # nor one after Faust's 10,000 acks
        "SHADOWLENS_STATS_INTERVAL_S": "0.1",  # killed at once, before the judge is done
    }
    policy = short_memory_policy(tmp_path)
    run = Run(
        kafka_bootstrap, topic_factory, events, tmp_path / "run", "at_least_once", policy, **env
    )
    run.publish()
    run.kill_when("end_of_input", 1)
    resumed = run.finish()
    counts = store_counts(run.dsn, expected_outcomes(events))
    report(
        capsys,
        test="kill_9_end_of_input",
        guarantee="at_least_once",
        producer_batch_bytes=batch_bytes,
        redelivered_skipped=resumed.get("redelivered", 0),
        events_read_again=resumed.get("events", 0),
        **counts,
    )
    assert resumed.get("redelivered", 0) > 0, "nothing read again: the kill tested nothing"
    assert counts["lost"] == counts["duplicate_pairs"] == counts["wrong_outcome"] == 0, counts
    assert counts["unexpected"] == 0, counts
    assert counts["duplicate_window_counts"] >= 0, "a window lost a pair"
