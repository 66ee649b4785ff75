"""A judgment that comes after its pair (the worker's judge never holds a batch): the pair
goes into its window unjudged (`late`), the judgment alone follows it
(`Aggregate.add_judgment`, `TumblingWindows.add_later`); merged, the evidence is what
the pairs judged in place make, whichever window the judgment lands in."""

from __future__ import annotations

from typing import Any

from shadowlens.comparators.aggregate import Aggregate, Later, merged
from shadowlens.comparators.pairs import PairScore, score_pair
from shadowlens.comparators.preference import Judged, JudgeOutcome, Skip
from shadowlens.comparators.preference_budget import (
    JudgeBudget,
    Route,
    Spend,
    apply_judgments,
    plan_judging,
    with_outcome,
)
from shadowlens.pipeline.windows import TumblingWindows

from tests.builders import event

SIZE_MS = 60_000
T0 = 1_700_000_040_000  # in the middle of a window
BUDGET = JudgeBudget(max_pairs_per_s=1.0, burst_pairs=8, max_usd_per_day=0)


def pairs(n: int, start: int = T0) -> list[PairScore]:
    """Text pairs of different lengths, ids and times: wins of both signs, both windows."""
    out = []
    for i in range(n):
        rid = f"r{i}"
        primary = event(rid, start=start + i * 3_000, text="the answer is here " * (1 + i % 3))
        candidate = event(rid, "candidate", start=start + i * 3_000, text=f"reply {i} " * (i % 4))
        out.append(score_pair(primary, candidate, {}))
    return out


def outcome(i: int) -> JudgeOutcome:
    return Skip.ERROR if i % 5 == 4 else Judged([0.0, 1.0, 0.5, 0.25][i % 4], 0.001 * i)


def preference_view(agg: Aggregate) -> dict[str, Any]:
    """What the judge reads of the preference, in the judge's own (key) order."""
    a = agg.in_order()
    return {
        "judged": a.preference_judged,
        "unjudged": a.preference_unjudged,
        "cost": round(a.judge_cost_usd, 12),
        "wins": (a.preference.n, round(a.preference.total, 12), round(a.preference.total_sq, 12)),
        "seq": (a.preference_seq, a.preference_keys),
        "by_length": (a.preference_by_length.wins, a.preference_by_length.counts),
        "lost": a.lost_preference,
        "guard": (a.lexical_seq, a.text_keys, a.log_length_ratio.n),
        "requests": (a.n_paired, a.first_event_ms, a.last_event_ms),
    }


def routed(scores: list[PairScore]) -> tuple[list[PairScore], list[PairScore], list[PairScore]]:
    """One batch three ways: judged in place (the replay), sent on unjudged (the worker),
    and the judgments that follow; some pairs are over the budget."""
    plan, _ = plan_judging(scores, Spend.start(BUDGET), BUDGET)
    assert 0 < plan.fraction < 1 and Route.UNSAMPLED in plan.routes  # a weighted sample
    outcomes = [outcome(i) for i in range(len(plan.items))]
    in_place = apply_judgments(plan, outcomes)
    sent = apply_judgments(plan, [Skip.LATE] * len(outcomes))
    ahead = [s for s, r in zip(sent, plan.routes, strict=True) if r == Route.JUDGE]
    later = [with_outcome(s, o, plan.fraction) for s, o in zip(ahead, outcomes, strict=True)]
    return in_place, sent, later


def test_a_judgment_added_after_its_pair_makes_the_pair_judged_in_place() -> None:
    in_place, sent, later = routed(pairs(12))
    direct, split = Aggregate(), Aggregate()
    for score in in_place:
        direct.add(score)
    for score in sent:
        split.add(score)
    assert split.preference_judged == 0 and split.preference_unjudged == 12
    for score in later:
        split.add_judgment(score)
    assert preference_view(split) == preference_view(direct)
    assert split.preference_judged == sum(s.preference is not None for s in later) > 0
    assert split.preference.n > split.preference_judged  # weighted 1 / p


def test_a_failed_call_leaves_its_pair_unjudged_once() -> None:
    (score,) = pairs(1)
    agg = Aggregate()
    agg.add(with_outcome(score, Skip.LATE, 1.0))
    agg.add_judgment(with_outcome(score, Skip.ERROR, 1.0))
    assert (agg.preference_judged, agg.preference_unjudged, agg.preference.n) == (0, 1, 0)


def test_a_judgment_whose_window_closed_goes_to_the_open_one_and_the_sums_stay_exact() -> None:
    in_place, sent, later = routed(pairs(24))
    reference = TumblingWindows(SIZE_MS, 0)
    for score in in_place:
        reference.add(score, 0)
    windows = TumblingWindows(SIZE_MS, 0)
    for score in sent:
        windows.add(score, 0)
    first = windows.advance(T0 + SIZE_MS)  # the first window closes before any judgment
    assert len(first) == 1 and first[0].aggregate.preference_judged == 0
    watermark = T0 + SIZE_MS
    late = [windows.add_later(score, watermark, Later.JUDGMENT) for score in later]
    mine = first + windows.flush()
    theirs = reference.flush()
    assert any(late) and not all(late)  # some landed in their own window, some were late
    assert sum(w.late_pairs for w in mine) == 0  # a judgment is not a late pair
    assert len(mine) == len(theirs) == 2
    assert preference_view(merged([w.aggregate for w in mine])) == preference_view(
        merged([w.aggregate for w in theirs])
    )
    open_window = mine[1].aggregate
    came_late = sum(x and s.preference is not None for x, s in zip(late, later, strict=True))
    assert (
        came_late > 0
        and open_window.preference_judged == theirs[1].aggregate.preference_judged + came_late
    )
    # the open window moved pairs of the closed one from unjudged to judged
    assert open_window.preference_unjudged == theirs[1].aggregate.preference_unjudged - came_late
