"""The preference judge never holds the worker (issue 13), on the real broker.

One worker judges live (LiteLLM over HTTP to tests/judge_stub.py, which answers from the
recorded AlpacaEval judgments) with a judge that takes `SLOW_S` per call, so one judgment
(both orders) takes twice that. Half the traffic goes in first; the second half is
published while the first half's judgments are in flight. Checked:

* pairs go out at once: the second half's pairs are on ``shadow.pairs`` well within one
  judgment's time of their publication, every judged pair went out before its judgment,
  and the heartbeats keep their interval;
* every judgment that came back reaches ClickHouse (the judged row wins under FINAL) and
  the windows: summed over windows, the evidence is what the replay, which waits for its
  judge, computes on the same events with the same judge.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from shadowlens.comparators.aggregate import merged
from shadowlens.judge.policy import load_policy
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import TrafficSpec, built_payloads, run_replay
from shadowlens.schemas.events import decode_event
from shadowlens.store.client import Store
from shadowlens.streams.preference_stage import JudgeSettings, PreferenceStep, load_recorded
from shadowlens.streams.wire import JUDGMENT, LATER, PAIRS, decode_pairs, record_type

from tests.builders import SHARED_DATA
from tests.judge_stub import JudgeStub
from tests.stream_harness import (
    WorkerProcess,
    control_messages,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    read_topic,
    report,
    wait_for,
    worker_env,
)
from tests.test_stream_worker import fast_policy

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        not (SHARED_DATA / "alpaca_eval_judge").is_dir(), reason="../shared/data is not present"
    ),
]

MODEL = "openai/judge-stub"
PRIMARY, CANDIDATE = "gpt4_1106_preview", "gpt-3.5-turbo-1106"
REQUESTS = 160
SLOW_S = 1.5  # per call; a judgment asks both orders: 2 * SLOW_S


@pytest.fixture
def stubs() -> Iterator[list[JudgeStub]]:
    started: list[JudgeStub] = []
    yield started
    for stub in started:
        stub.stop()


def judged_policy(tmp_path: Path) -> Path:
    """The fast test policy with every eligible pair judged (p = 1: the worker and the
    replay then judge the same pairs whatever their batches) and 10 s windows behind a
    watermark 2 s back, so that windows close, and heartbeats go out, while judgments are
    in flight (this traffic spans a minute of event time)."""
    path = fast_policy(tmp_path)
    text = path.read_text()
    for old, new in (
        (r"(?m)^max_pairs_per_s = 20\.0", "max_pairs_per_s = 0.0"),
        (r"(?m)^size_ms = 60000", "size_ms = 10000"),
        (r"(?m)^grace_ms = 10000", "grace_ms = 2000"),
        (r"(?m)^max_skew_ms = 120000", "max_skew_ms = 2000"),  # the watermark trails by it
    ):
        text, n = re.subn(old, new, text)
        assert n == 1, old
    path.write_text(text)
    return path


def split_by_request(payloads: list[bytes], share: float) -> tuple[list[bytes], list[bytes]]:
    """The payloads of the first `share` of the requests (in order of appearance), and the
    rest: both halves of a request stay together."""
    order: dict[str, int] = {}
    for p in payloads:
        order.setdefault(request_id(p), len(order))
    cut = int(len(order) * share)
    first = [p for p in payloads if order[request_id(p)] < cut]
    return first, [p for p in payloads if order[request_id(p)] >= cut]


def request_id(payload: bytes) -> str:
    return str(orjson.loads(payload)["request_id"])


def pairs_records(bootstrap: str, topic: str) -> list[tuple[bytes | None, int, list[Any]]]:
    """(record type, producer timestamp ms, scores) of every pairs/judgment/semantic record."""
    out = []
    for r in read_topic(bootstrap, topic):
        kind = record_type(r.headers)
        if kind == PAIRS or kind in LATER:
            out.append((kind, r.timestamp, decode_pairs(r.value)))
    return out


def test_a_slow_judge_never_holds_the_pairs_and_every_judgment_reaches_the_evidence(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path, stubs: list[JudgeStub],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    recorded = load_recorded(SHARED_DATA / "alpaca_eval_judge")
    policy_path = judged_policy(tmp_path)
    policy = load_policy(policy_path)
    spec = TrafficSpec(SHARED_DATA, "live", PRIMARY, CANDIDATE, requests=REQUESTS)
    payloads = [raw for raw, _ in built_payloads(spec, Faults())]
    first, second = split_by_request(payloads, 0.5)
    end_ms = last_window_end([decode_event(p) for p in payloads], policy)

    slow = JudgeStub(recorded, delay_s=SLOW_S)
    stubs.append(slow)
    topics = make_topics(topic_factory)
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = worker_env(
        kafka_bootstrap,
        topics,
        dsn,
        guarantee="exactly_once",
        policy=policy_path,
        SHADOWLENS_JUDGE=f"litellm:{MODEL}",
        SHADOWLENS_JUDGE_API_BASE=slow.start(),
        SHADOWLENS_JUDGE_API_KEY="stub",
    )
    publish_payloads(kafka_bootstrap, topics.events, first, seed=1)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: slow.requests,
            timeout=120,
            what="the first judge call",
            workers=[worker],
        )
        published_ms = time.time() * 1000
        publish_payloads(kafka_bootstrap, topics.events, second, end_marker=True, seed=2)
        second_ids = {request_id(p) for p in second}
        wait_for(
            lambda: (
                second_ids
                <= {
                    s.request_id
                    for kind, _, scores in pairs_records(kafka_bootstrap, topics.pairs)
                    if kind == PAIRS
                    for s in scores
                }
            ),
            timeout=60,
            what="the second half's pairs",
            workers=[worker],
        )
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, end_ms),
            timeout=300,
            what="every judgment back and the last window judged",
            workers=[worker],
        )
        time.sleep(1.0)  # one more stats line
        stats = worker.stats()
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()

    records = pairs_records(kafka_bootstrap, topics.pairs)
    sent_ms = {s.request_id: ts for kind, ts, scores in records if kind == PAIRS for s in scores}
    came_ms = {s.request_id: ts for kind, ts, scores in records if kind == JUDGMENT for s in scores}
    judgments = [s for kind, _, scores in records if kind == JUDGMENT for s in scores]

    # the pairs did not wait: the second half went out long before a judgment could come back
    second_delay_s = (max(sent_ms[r] for r in second_ids) - published_ms) / 1000
    lags = sorted((came_ms[r] - sent_ms[r]) / 1000 for r in came_ms)
    assert second_delay_s < 2 * SLOW_S, "the second half's pairs waited for the judge"
    assert lags and lags[0] >= 2 * SLOW_S * 0.9, "every judgment came after its pair went out"
    beats = sorted(
        m["issued_at_ms"]
        for m in control_messages(kafka_bootstrap, topics.control)
        if m["type"] == "heartbeat"
    )
    gaps = [(b - a) / 1000 for a, b in pairwise(beats)]
    assert gaps and max(gaps) < 2 * SLOW_S, "heartbeats waited behind the judge"

    # the replay on the same events with the same judge (answering at once)
    fast = JudgeStub(recorded)
    stubs.append(fast)
    settings = JudgeSettings(f"litellm:{MODEL}", api_base=fast.start(), api_key="stub")
    step = PreferenceStep.build(settings, policy)
    assert step is not None
    replayed = run_replay([(p, "") for p in payloads], policy, None, enrich=step)
    expected = {
        s.request_id: (s.preference, s.preference_weight, s.preference_skip)
        for s in replayed.memory.scores
        if s.comparison == "candidate"
    }
    with Store.open(dsn) as store:
        rows = store.query(
            "SELECT request_id, preference, preference_weight, preference_skip FROM pairs FINAL "
            "WHERE comparison = 'candidate'"
        ).result_rows
    stored = {rid: (p, w, skip or None) for rid, p, w, skip in rows}
    assert stored == expected, "every judgment replaced its pair's row in ClickHouse"
    assert sum(p is not None for p, _, _ in expected.values()) > REQUESTS // 2

    totals = merged([w.aggregate for w in replayed.memory.closed])
    windows = store_windows(dsn)
    assert windows["requests"] == REQUESTS
    assert (
        windows["judged"]
        == totals.preference_judged
        == len([s for s in judgments if s.preference is not None])
    )
    assert windows["unjudged"] == totals.preference_unjudged
    assert windows["wins"] == pytest.approx(totals.preference.total, rel=1e-9)
    assert windows["cost"] == pytest.approx(totals.judge_cost_usd, rel=1e-9)
    assert (
        stats["judgments"]
        == len(judgments)
        == stats.get("judgments.judged", 0) + stats.get("judgments.error", 0)
    )
    report(
        capsys,
        judge_call_s=SLOW_S,
        judgments=len(judgments),
        judgments_late=stats.get("judgments_late", 0),
        second_half_pairs_after_s=round(second_delay_s, 2),
        judgment_lag_min_s=round(lags[0], 2),
        judgment_lag_max_s=round(lags[-1], 2),
        heartbeat_gap_max_s=round(max(gaps), 2),
    )


def store_windows(dsn: str) -> dict[str, Any]:
    """The windows' preference evidence, summed."""
    with Store.open(dsn) as store:
        row = store.query(
            "SELECT sum(n_requests), sum(preference_judged), sum(preference_unjudged), "
            "sum(preference_win_rate * preference_judged), sum(judge_cost_usd) FROM windows FINAL"
        ).result_rows[0]
    requests, judged, unjudged, wins, cost = row
    return {
        "requests": int(requests or 0),
        "judged": int(judged or 0),
        "unjudged": int(unjudged or 0),
        "wins": float(wins or 0),
        "cost": float(cost or 0),
    }
