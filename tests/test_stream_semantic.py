"""The semantic model never holds the worker (issue 15 item 2), on the real broker with the
real ONNX backend made slow (`tests.slow_encoder_worker`: every encode first sleeps).

* A slow model (`SLOW_S` per encode, within the timeout): half the traffic goes in first,
  the second half while encodes are queued. Its pairs are on ``shadow.pairs`` well within
  one encode's time of their publication, every score follows its pair as a ``semantic``
  record, reaches ClickHouse (the scored row wins under FINAL) and the windows, and the
  windows' quality evidence, summed, is the replay's on the same events (which waits for
  its encoder). ONNX int8 picks its activation scales per batch, so similarities agree to
  0.03 (`test_semantic.test_onnx_int8_matches_torch`'s bound); counts and weights exactly.
* A model slower than ``SHADOWLENS_SEMANTIC_TIMEOUT_S``: every pair drawn in a batch that
  needed it stays unsampled, counted in the stats and in ClickHouse, and the windows count
  no measured quality but what needed no model.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from shadowlens.comparators.aggregate import merged
from shadowlens.judge.policy import load_policy
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import TrafficSpec, built_payloads, run_replay
from shadowlens.schemas.events import decode_event
from shadowlens.store.client import Store
from shadowlens.streams.semantic_stage import make_cascade
from shadowlens.streams.wire import PAIRS, SEMANTIC

from tests.slow_encoder_worker import DELAY_ENV
from tests.stream_harness import (
    WorkerProcess,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    report,
    wait_for,
    worker_env,
)
from tests.test_semantic import _ensure_onnx_export
from tests.test_stream_judge import judged_policy, pairs_records, split_by_request

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.semantic]

REQUESTS = 120  # of the shipped sample: ~24 s of event time, windows of 10 s
SLOW_S = 2.0  # per encode


class SlowEncoderWorker(WorkerProcess):
    """A `WorkerProcess` running `tests.slow_encoder_worker` instead of `shadowlens worker`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.slow_encoder_worker"],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )


def scored_policy(tmp_path: Path) -> Path:
    """10 s windows behind a 2 s watermark (`judged_policy`), every eligible pair drawn
    (p = 1: the worker and the replay then draw the same pairs whatever their batches)."""
    path = judged_policy(tmp_path)
    text, n = re.subn(r"(?m)^max_pairs_per_s = 50\.0", "max_pairs_per_s = 0.0", path.read_text())
    assert n == 1
    path.write_text(text)
    return path


def run_worker(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path, delay_s: float,
    timeout_s: float,
) -> tuple[list[bytes], Any, str, dict[str, Any], float]:  # fmt: skip
    """Publish half the traffic, start the slow worker, publish the rest once it encodes,
    and wait for the last window's decision; (payloads, topics, dsn, stats, how long the
    second half's pairs took to go out)."""
    _ensure_onnx_export()
    policy_path = scored_policy(tmp_path)
    policy = load_policy(policy_path)
    payloads = [raw for raw, _ in built_payloads(TrafficSpec(requests=REQUESTS), Faults())]
    first, second = split_by_request(payloads, 0.5)
    end_ms = last_window_end([decode_event(p) for p in payloads], policy)
    topics = make_topics(topic_factory, events_partitions=2)
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = worker_env(
        kafka_bootstrap,
        topics,
        dsn,
        guarantee="exactly_once",
        policy=policy_path,
        SHADOWLENS_SEMANTIC="onnx",
        SHADOWLENS_SEMANTIC_TIMEOUT_S=str(timeout_s),
        **{DELAY_ENV: str(delay_s)},
    )
    publish_payloads(kafka_bootstrap, topics.events, first, seed=1)
    worker = SlowEncoderWorker(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: worker.stats().get("semantic.deferred"),
            timeout=90,
            what="the first pairs sent ahead of their scores",
            workers=[worker],
        )
        published_ms = time.time() * 1000
        publish_payloads(kafka_bootstrap, topics.events, second, end_marker=True, seed=2)
        second_ids = {str(decode_event(p).request_id) for p in second}
        wait_for(
            lambda: second_ids <= sent_ms(kafka_bootstrap, topics.pairs).keys(),
            timeout=60,
            what="the second half's pairs",
            workers=[worker],
        )
        second_delay_s = (
            max(sent_ms(kafka_bootstrap, topics.pairs)[r] for r in second_ids) - published_ms
        ) / 1000
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, end_ms),
            timeout=120,
            what="every score back and the last window judged",
            workers=[worker],
        )
        time.sleep(1.0)  # one more stats line
        stats = worker.stats()
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    return payloads, topics, dsn, stats, second_delay_s


def sent_ms(bootstrap: str, topic: str, kind: bytes = PAIRS) -> dict[str, int]:
    """When each request's pair (or its later score) went out: its record's timestamp."""
    return {
        s.request_id: ts
        for k, ts, scores in pairs_records(bootstrap, topic)
        if k == kind
        for s in scores
    }


def stored_pairs(dsn: str) -> dict[str, tuple[float | None, float]]:
    with Store.open(dsn) as store:
        rows = store.query(
            "SELECT request_id, semantic_similarity, weight FROM pairs FINAL"
        ).result_rows
    return {rid: (sim, weight) for rid, sim, weight in rows}


def store_windows(dsn: str) -> dict[str, float]:
    """The windows' quality evidence, summed."""
    with Store.open(dsn) as store:
        row = store.query(
            "SELECT sum(n_requests), sum(quality_measured), sum(quality_unsampled), "
            "sum(quality_n), sum(quality_n * ifNull(quality_mean, 0)) FROM windows FINAL"
        ).result_rows[0]
    return dict(
        zip(("requests", "measured", "unsampled", "n", "total"), map(float, row), strict=True)
    )


def test_a_slow_model_never_holds_the_pairs_and_every_score_reaches_the_evidence(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    payloads, topics, dsn, stats, second_delay_s = run_worker(
        kafka_bootstrap, topic_factory, tmp_path, SLOW_S, timeout_s=60
    )
    went = sent_ms(kafka_bootstrap, topics.pairs)
    came = sent_ms(kafka_bootstrap, topics.pairs, SEMANTIC)
    lags = sorted((came[r] - went[r]) / 1000 for r in came)
    assert second_delay_s < SLOW_S, "the second half's pairs waited for the model"
    assert lags and lags[0] >= SLOW_S * 0.9, "every score came after its pair went out"

    # the replay on the same events, scoring in place with the same (fast) backend
    policy = load_policy(tmp_path / "policy.toml")
    replayed = run_replay(
        [(p, "") for p in payloads], policy, None, enrich=make_cascade("onnx", policy)
    )
    expected = {s.request_id: (s.semantic_similarity, s.weight) for s in replayed.memory.scores}
    stored = stored_pairs(dsn)
    assert stored.keys() == expected.keys()
    for rid, (sim, weight) in expected.items():
        assert stored[rid][1] == weight, rid
        assert (stored[rid][0] is None) == (sim is None), rid
        if sim is not None:
            assert stored[rid][0] == pytest.approx(sim, abs=0.03), rid
    scored = [r for r, (sim, _) in expected.items() if sim is not None]
    assert len(came) > REQUESTS // 2 and set(came) <= set(scored)

    totals = merged([w.aggregate for w in replayed.memory.closed])
    windows = store_windows(dsn)
    assert windows["requests"] == REQUESTS
    assert windows["measured"] == totals.quality_measured > len(scored) // 2
    assert windows["unsampled"] == totals.quality_unsampled
    assert windows["n"] == pytest.approx(totals.quality.n, rel=1e-12)
    assert windows["total"] == pytest.approx(totals.quality.total, abs=0.03 * len(scored))
    assert stats["semantic_scores"] == len(came) == stats["semantic.deferred"]
    assert stats["semantic.measured"] == len(scored) and not stats.get("semantic.timeout")
    report(
        capsys,
        encode_s=SLOW_S,
        scores_later=len(came),
        scores_late=stats.get("semantic_scores_late", 0),
        second_half_pairs_after_s=round(second_delay_s, 2),
        score_lag_min_s=round(lags[0], 2),
        score_lag_max_s=round(lags[-1], 2),
    )


def test_a_model_past_its_timeout_leaves_its_batches_unsampled_counted(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, topics, dsn, stats, second_delay_s = run_worker(
        kafka_bootstrap, topic_factory, tmp_path, delay_s=3.0, timeout_s=1.0
    )
    assert not sent_ms(kafka_bootstrap, topics.pairs, SEMANTIC), "no score came"
    deferred = stats["semantic.deferred"]
    assert deferred > 0 and stats["semantic.timeout"] == stats["semantic.unsampled"] == deferred
    stored = stored_pairs(dsn)
    measured = [r for r, (sim, _) in stored.items() if sim is not None]
    unsampled = [r for r, (_, weight) in stored.items() if weight == 0]
    assert len(unsampled) == deferred and len(measured) == stats.get("semantic.measured", 0)
    assert all(stored[r][0] == 1.0 for r in measured)  # exact matches of model-free batches
    windows = store_windows(dsn)
    assert windows["unsampled"] == deferred
    report(
        capsys,
        encode_s=3.0,
        timeout_s=1.0,
        degraded=stats["semantic.timeout"],
        second_half_pairs_after_s=round(second_delay_s, 2),
    )
