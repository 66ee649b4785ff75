"""Memory bounds (issue 6): the pending-pair table sheds and sweeps, RSS stays flat.

The soak is `bench/soak_memory.py` (1M events there). CI runs 100k events: scoring a pair
with every comparator costs ~0.4 ms of CPU here, so 1M events (~500k pairs) would take
minutes. 100k events still cycle the 2,000-request template 25 times: the pairing table,
the closed-request memory (120 s of event time) and the windows reach their steady state
within the first cycles, so the second half of the run measures a plateau.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from shadowlens.judge.policy import load_policy
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import TrafficSpec, built_payloads, run_replay

from tests.stream_harness import report

pytestmark = pytest.mark.reliability

BENCH = Path(__file__).resolve().parents[1] / "bench" / "soak_memory.py"
EVENTS = 100_000
# A leak of one closed-request entry per request (id, Pending, dict slot: ~250 bytes, two
# events per request) grows ~12 MB per 100k events; a leaked event or pair, far more.
# Allocator noise measured here is below 1.5 MB per 100k (see the bench's RESULT lines).
MAX_SLOPE_MB_PER_100K = 5.0


@pytest.fixture(scope="module")
def soak_memory() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_memory", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_memory"] = module
    spec.loader.exec_module(module)
    return module


def test_soak_payloads_are_unique_requests_with_orphans_and_duplicates(
    soak_memory: ModuleType,
) -> None:
    import orjson

    docs = [orjson.loads(p) for p in soak_memory.soak_payloads(9_000)]
    halves = [(d["request_id"], d["arm"]) for d in docs]
    ids = {rid for rid, _ in halves}
    assert len(docs) == 9_000 and any(rid.endswith("-c2") for rid in ids), "cycled"
    assert len(halves) > len(set(halves)), "some halves are sent twice"
    arms: dict[str, set[str]] = {}
    for rid, arm in halves:
        arms.setdefault(rid, set()).add(arm)
    assert any(a == {"primary"} for a in arms.values()), "some candidates are lost"
    starts = [d["start_time_ms"] for d in docs if d["request_id"].endswith("-c1")]
    assert min(starts) > max(d["start_time_ms"] for d in docs if d["request_id"].endswith("-c0"))


def test_100k_events_keep_rss_flat(soak_memory: ModuleType, capsys) -> None:
    soak = soak_memory.run_soak(EVENTS, every=1_000)
    with capsys.disabled():
        print("\n" + soak.result(), flush=True)
    report(capsys, soak_events=EVENTS, slope_mb_per_100k=f"{soak.slope_mb_per_100k:.3f}")
    assert soak.counts["pairing.shed"] > 0, "max_pending was reached and shed"
    assert soak.counts["pairs.candidate_missing"] > 0, "orphans were swept"
    assert soak.counts["dropped.duplicate"] > 0, "duplicates were recognised"
    assert soak.counts["windows"] > 0 and soak.counts["decisions"] > 0
    assert soak.slope_mb_per_100k < MAX_SLOPE_MB_PER_100K


def test_replay_counts_shed_requests() -> None:
    policy = load_policy()
    policy = replace(policy, pairing=replace(policy.pairing, max_pending=20))
    payloads = built_payloads(TrafficSpec(requests=400), Faults(drop_share=0.05))
    result = run_replay(payloads, policy, None)
    shed = result.counts["pairing.shed"]
    assert shed > 0
    unbounded = run_replay(payloads, load_policy(), None)
    assert unbounded.counts["pairing.shed"] == 0
    # a shed request is scored still (an orphan when incomplete): none goes missing
    assert {s.request_id for s in result.memory.scores} == {
        s.request_id for s in unbounded.memory.scores
    }
