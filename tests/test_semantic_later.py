"""Semantic scores that follow their pairs (issue 15 item 2): the pure parts and the
worker's stage with an encoder that answers when the test says so.

* a pair sent unmeasured (weight 0, counted unsampled) and its score added later
  (`Aggregate.add_semantic`, `TumblingWindows.add_later`) make the quality evidence of the
  pair scored in place, whichever window the score lands in;
* a task's share of the budget (`Share`): however many tasks, together they never send the
  model more than the policy;
* `FollowUps`: a pair's row written last holds every score that followed it; work past its
  deadline sends nothing; a dropped task's work is lost, counted;
* `SemanticStage`: a batch goes out before its encode, and an encode that times out leaves
  every pair drawn in its batch unsampled, exact matches too, counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from shadowlens.comparators.aggregate import Aggregate, Later, merged
from shadowlens.comparators.cascade import (
    DRAWN,
    Budget,
    Route,
    SemanticCascade,
    SemanticPolicy,
    Share,
    ahead,
    apply_plan,
    plan_batch,
    similarities,
    with_similarity,
)
from shadowlens.comparators.pairs import PairScore, score_pair
from shadowlens.comparators.preference import Judged
from shadowlens.comparators.preference_budget import with_outcome
from shadowlens.pipeline.windows import TumblingWindows
from shadowlens.streams.later import FollowUps, Work, pair_key
from shadowlens.streams.semantic_stage import SemanticStage

from tests.builders import event

SIZE_MS = 60_000
T0 = 1_700_000_040_000  # in the middle of a window
TIGHT = SemanticPolicy(max_pairs_per_s=0.5, burst_pairs=8, min_sample_fraction=0.05)


def pairs(
    n: int, start: int = T0, exact_every: int = 4, gap_ms: int = 3_000, prefix: str = "r"
) -> list[PairScore]:
    """Text pairs `gap_ms` apart: every `exact_every`-th (from the first) an exact match."""
    out = []
    for i in range(n):
        rid, at = f"{prefix}{i}", start + i * gap_ms
        text = f"the answer is {i} " * (1 + i % 3)
        other = text if i % exact_every == 0 else f"a reply about {i % 5}"
        primary = event(rid, start=at, text=text)
        out.append(score_pair(primary, event(rid, "candidate", start=at, text=other), {}))
    return out


def fake_encoded(plan_texts: Sequence[tuple[str, str]]) -> list[float]:
    """What a model would say: any deterministic value per pair of texts."""
    return [(len(a) % 7 + len(b) % 5) / 12 for a, b in plan_texts]


def quality_view(agg: Aggregate) -> dict[str, Any]:
    """What the judge reads of quality, in the judge's own (key) order."""
    a = agg.in_order()
    return {
        "counted": (a.quality_measured, a.quality_unsampled),
        "moments": (round(a.quality.n, 9), round(a.quality.total, 9), round(a.quality.total_sq, 9)),
        "seq": (a.quality_seq, a.quality_keys),
        "tasks": a.quality_tasks,
        "worst": a.worst_quality,
        "requests": (a.n_paired, a.exact_matches),
    }


def routed(scores: list[PairScore]) -> tuple[list[PairScore], list[PairScore], list[PairScore]]:
    """One batch three ways: scored in place (the replay), sent ahead unmeasured (the
    worker), and the scores that follow; some pairs are over the budget."""
    plan, _ = plan_batch(scores, Budget.full(TIGHT), TIGHT)
    assert 0 < plan.fraction < 1 and Route.UNSAMPLED in plan.routes and Route.EXACT in plan.routes
    encoded = fake_encoded(plan.texts)
    sent = ahead(plan)
    drawn = [s for s, r in zip(sent, plan.routes, strict=True) if r in DRAWN]
    sims = similarities(plan, encoded)
    later = [with_similarity(s, x, plan.fraction) for s, x in zip(drawn, sims, strict=True)]
    return apply_plan(plan, encoded), sent, later


def test_a_score_added_after_its_pair_makes_the_pair_scored_in_place() -> None:
    in_place, sent, later = routed(pairs(40))
    direct, split = Aggregate(), Aggregate()
    for score in in_place:
        direct.add(score)
    for score in sent:
        split.add(score)
    assert split.quality_measured == 0 and split.quality_unsampled == 40
    for score in later:
        split.add_later(score, Later.SEMANTIC)
    assert quality_view(split) == quality_view(direct)
    assert split.quality_measured == len(later) and split.quality.n > len(later)  # 1 / p


def test_a_score_whose_window_closed_goes_to_the_open_one_and_the_sums_stay_exact() -> None:
    in_place, sent, later = routed(pairs(40))
    reference, windows = TumblingWindows(SIZE_MS, 0), TumblingWindows(SIZE_MS, 0)
    for score in in_place:
        reference.add(score, 0)
    for score in sent:
        windows.add(score, 0)
    first = windows.advance(T0 + SIZE_MS)  # the first window closes before any score
    assert len(first) == 1 and first[0].aggregate.quality_measured == 0
    late = [windows.add_later(score, T0 + SIZE_MS, Later.SEMANTIC) for score in later]
    mine, theirs = first + windows.flush(), reference.flush()
    assert any(late) and not all(late) and sum(w.late_pairs for w in mine) == 0
    assert quality_view(merged([w.aggregate for w in mine])) == quality_view(
        merged([w.aggregate for w in theirs])
    )
    open_window = mine[-1].aggregate
    assert open_window.quality_unsampled < theirs[-1].aggregate.quality_unsampled


def test_the_tasks_shares_never_send_the_model_more_than_the_policy() -> None:
    policy = SemanticPolicy(max_pairs_per_s=2.0, burst_pairs=10, min_sample_fraction=1e-6)
    for parts in (1, 3, 8):
        share = Share.of(policy, parts)
        assert share.max_pairs_per_s * parts == policy.max_pairs_per_s
        assert share.burst_pairs * parts == policy.burst_pairs
        budgets = [Budget.full(share)] * parts
        sent = 0
        for step in range(60):  # 60 batches, one per second, each task 20 pairs a batch
            for task in range(parts):
                batch = pairs(21, T0 + step * 1_000, gap_ms=0, prefix=f"{step}/{task}/")[1:]
                plan, budgets[task] = plan_batch(batch, budgets[task], share)
                sent += sum(r == Route.EMBED for r in plan.routes)
            # the tasks' buckets together never grant more than the policy's one bucket:
            # sent plus what is left (below 0 after a draw overshot, which the next
            # batches pay back) is at most its burst plus its rate over the time passed
            allowed = policy.burst_pairs + policy.max_pairs_per_s * step
            left = sum(b.allowance for b in budgets)
            assert sent + left <= allowed + 1e-9, (parts, step)
        assert policy.burst_pairs < sent <= allowed + 20  # 20: one batch's overshoot


def done(value: Any) -> Future[Any]:
    call: Future[Any] = Future()
    call.set_result(value)
    return call


def test_the_row_written_last_holds_every_score_that_followed_its_pair() -> None:
    (score,) = pairs(1, exact_every=10**9)
    counts: Counter[str] = Counter()
    later = FollowUps(counts)
    key = pair_key(score)
    semantic, judgment = Future(), Future()
    later.start(
        0,
        Work(
            Later.SEMANTIC,
            (key,),
            semantic,
            lambda c: [lambda s: with_similarity(s, c.result(), 0.5)],
        ),
    )
    later.start(
        0,
        Work(
            Later.JUDGMENT, (key,), judgment, lambda c: [lambda s: with_outcome(s, c.result(), 1.0)]
        ),
    )
    later.sent(0, [score])
    assert later.waiting(0) and later.finished(0) == []
    judgment.set_result(Judged(1.0, 0.01))  # the judge answers first ...
    ((what, (judged,)),) = later.finished(0)
    assert (
        what == Later.JUDGMENT and judged.preference == 1.0 and judged.semantic_similarity is None
    )
    semantic.set_result(0.8)  # ... the model later: its row keeps the judgment
    ((what, (both,)),) = later.finished(0)
    assert what == Later.SEMANTIC and (both.preference, both.semantic_similarity, both.weight) == (
        1.0,
        0.8,
        2.0,
    )
    assert not later.waiting(0) and later.rows == {0: {}}
    # both done in one collection: one run per kind, in the order the work started
    later.start(
        1,
        Work(
            Later.SEMANTIC,
            (key,),
            done(0.3),
            lambda c: [lambda s: with_similarity(s, c.result(), 1.0)],
        ),
    )
    later.start(
        1,
        Work(
            Later.JUDGMENT,
            (key,),
            done(Judged(0.0, 0.0)),
            lambda c: [lambda s: with_outcome(s, c.result(), 1.0)],
        ),
    )
    later.sent(1, [score])
    runs = later.finished(1)
    assert [what for what, _ in runs] == [Later.SEMANTIC, Later.JUDGMENT]
    assert runs[-1][1][0].semantic_similarity == 0.3 and runs[-1][1][0].preference == 0.0


def test_work_past_its_deadline_sends_nothing_and_a_dropped_task_loses_its_work() -> None:
    scores = pairs(3, exact_every=10**9)
    counts: Counter[str] = Counter()
    later = FollowUps(counts)
    settled: list[Any] = []
    keys = tuple(pair_key(s) for s in scores)
    slow: Future[Any] = Future()
    later.start(0, Work(Later.SEMANTIC, keys, slow, lambda c: settled.append(c), deadline=10.0))
    later.sent(0, scores)
    assert later.finished(0, now=9.0) == [] and later.waiting(0)
    assert later.finished(0, now=10.0) == [] and settled == [None] and slow.cancelled()
    assert not later.waiting(0) and later.rows[0] == {}
    later.start(2, Work(Later.JUDGMENT, keys[:1], Future(), lambda c: None))
    later.drop(2)
    assert counts == {"lost.judgment": 1} and not later.waiting(2) and 2 not in later.rows


class GatedEncoder:
    """Deterministic unit vectors, returned only once `gate` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.gate.wait(10)
        rows = [np.random.default_rng(len(t)).standard_normal(8) for t in texts]
        return np.asarray([r / np.linalg.norm(r) for r in rows], dtype=np.float32)


def test_the_stage_sends_pairs_before_the_model_and_a_timeout_degrades_the_whole_batch() -> None:
    encoder = GatedEncoder()
    counts: Counter[str] = Counter()
    later = FollowUps(counts)
    stage = SemanticStage(SemanticCascade(encoder, TIGHT), counts, later, 2, timeout_s=5.0)
    assert stage.share == Share(0.25, 4.0, 0.05)
    try:
        batch = pairs(12)
        out, budget = stage.enrich(batch, 0, stage.full_budget())
        plan, _ = plan_batch(batch, stage.full_budget(), stage.share)
        drawn = [s for s, r in zip(out, plan.routes, strict=True) if r in DRAWN]
        assert Route.EXACT in plan.routes and Route.EMBED in plan.routes
        assert budget.allowance < stage.full_budget().allowance
        assert all(s.weight == 0 and s.semantic_similarity is None for s in drawn)  # ahead
        assert counts["semantic.deferred"] == len(drawn) and later.waiting(0)
        # the encode is still running past its deadline: every drawn pair stays unsampled
        assert later.finished(0, now=time.monotonic() + 6) == []
        assert (
            counts["semantic.timeout"]
            == counts["semantic.unsampled"] - plan.routes.count(Route.UNSAMPLED)
            == len(drawn)
        )
        assert counts["semantic.measured"] == 0 and not later.waiting(0)
        # the next batch is scored once the model answers
        encoder.gate.set()
        out, _ = stage.enrich(pairs(12, start=T0 + 600_000), 0, budget)
        runs: list[tuple[Later, list[PairScore]]] = []
        while later.waiting(0):
            runs += later.finished(0)
        ((what, scored),) = runs
        assert what == Later.SEMANTIC and scored and all(s.weight > 1 for s in scored)
        assert counts["semantic.measured"] == len(scored)
    finally:
        encoder.gate.set()
        stage.stop()
