"""comparators.preference_budget: which pairs the judge sees, within pairs/s and $/day, with
1/p weights, drawn by request id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from shadowlens.comparators.pairs import PairScore, score_pair
from shadowlens.comparators.preference import Judged, JudgeOutcome, Skip
from shadowlens.comparators.preference_budget import (
    DAY_MS,
    SALT,
    JudgeBudget,
    Route,
    Spend,
    apply_judgments,
    plan_judging,
    tally,
)
from shadowlens.comparators.sampling import drawn
from shadowlens.judge.policy import PolicyError, parse_policy
from shadowlens.schemas.events import Status, Task

from tests.builders import event

T0 = 1_700_000_000_000


def pair(rid: str, text: str = "the candidate's answer", **kwargs: object) -> PairScore:
    primary = event(rid, start=T0, text="the primary's answer")
    return score_pair(primary, event(rid, "candidate", start=T0, text=text, **kwargs), {})


def judged(plan_scores: Sequence[PairScore], outcome: JudgeOutcome) -> list[JudgeOutcome]:
    return [outcome] * len(plan_scores)


def test_under_budget_every_eligible_pair_is_judged_with_weight_one() -> None:
    scores = [
        pair("a"),
        pair("b", text="the primary's answer"),  # identical: a tie without a call
        replace(pair("c"), comparison="replica"),  # the primary's second sample
        pair("d", status=Status.ERROR, text=None),  # the candidate failed: nothing to judge
        replace(pair("e"), task=str(Task.CLASSIFICATION)),
    ]
    plan, spend = plan_judging(scores, Spend.start(JudgeBudget()), JudgeBudget())
    assert plan.routes == (Route.JUDGE, Route.EXACT, Route.SKIP, Route.SKIP, Route.SKIP)
    assert [i.request_id for i in plan.items] == ["a"]
    out = apply_judgments(plan, [Judged(1.0, 0.002)])
    assert [(s.preference, s.preference_weight) for s in out[:2]] == [(1.0, 1.0), (0.5, 1.0)]
    assert out[0].judge_cost_usd == 0.002 and out[1].judge_cost_usd == 0.0
    assert all(s.preference is None and s.preference_skip is None for s in out[2:])
    assert spend.bucket.allowance == JudgeBudget().burst_pairs - 1  # the tie cost nothing


def test_over_budget_a_uniform_sample_by_request_id_carries_1_over_p() -> None:
    budget = JudgeBudget(max_pairs_per_s=1, burst_pairs=50, min_sample_fraction=0.01)
    scores = [pair(f"r{i}") for i in range(1000)]
    plan, _ = plan_judging(scores, Spend.start(budget), budget)
    assert plan.fraction == pytest.approx(0.05)
    chosen = {i.request_id for i in plan.items}
    assert 25 < len(chosen) < 75
    assert chosen == {s.request_id for s in scores if drawn(s.request_id, 0.05, SALT)}
    # the draw never looks at the answers, and is the same after a restart
    other = [pair(f"r{i}", text=f"another answer {i}") for i in range(1000)]
    again, _ = plan_judging(other, Spend.start(budget), budget)
    assert {i.request_id for i in again.items} == chosen
    out = apply_judgments(plan, judged(plan.items, Judged(0.0)))
    weights = [s.preference_weight for s in out if s.preference is not None]
    assert weights == pytest.approx([20.0] * len(chosen))
    assert {s.preference_skip for s in out if s.preference is None} == {"budget"}
    assert tally(out) == {"preference.judged": len(chosen), "preference.budget": 1000 - len(chosen)}


def test_reasons_for_not_judging_are_kept_and_counted() -> None:
    scores = [pair(f"r{i}") for i in range(4)]
    plan, _ = plan_judging(scores, Spend.start(JudgeBudget()), JudgeBudget())
    outcomes = [Judged(0.5), Skip.UNKNOWN, Skip.ERROR, Skip.LATE]
    out = apply_judgments(plan, outcomes)
    assert [s.preference_skip for s in out] == [None, "unknown", "error", "late"]
    assert all(s.preference_weight == 0 for s in out[1:])
    assert tally(out) == {
        "preference.judged": 1,
        "preference.unknown": 1,
        "preference.error": 1,
        "preference.late": 1,
    }
    with pytest.raises(ValueError, match="more judge outcomes"):
        apply_judgments(plan, [*outcomes, Judged(1.0)])


def test_the_daily_dollar_cap_stops_judging_until_the_next_day() -> None:
    budget = JudgeBudget(max_usd_per_day=1.0)
    spend = Spend.start(budget)
    plan, spend = plan_judging([pair("a"), pair("b")], spend, budget)
    spend = spend.charged([Judged(1.0, 0.6), Judged(0.0, 0.6)])
    assert spend.day_usd == pytest.approx(1.2) and spend.mean_cost_usd == pytest.approx(0.6)
    broke, spend = plan_judging([pair("c")], spend, budget)
    assert broke.routes == (Route.UNSAMPLED,) and broke.fraction == 0
    tomorrow = [replace(pair("d"), event_time_ms=pair("d").event_time_ms + DAY_MS)]
    plan, spend = plan_judging(tomorrow, spend, budget)
    assert plan.routes == (Route.JUDGE,) and spend.day_usd == 0


def test_the_pairs_rate_is_lowered_to_spread_the_dollars_over_the_day() -> None:
    budget = JudgeBudget(max_pairs_per_s=20.0, max_usd_per_day=86.4)  # $0.001 a second
    spend = Spend.start(budget).charged([Judged(1.0, 0.01)])  # $0.01 a judgment
    assert spend.rate(budget).max_pairs_per_s == pytest.approx(0.1)
    assert Spend.start(budget).rate(budget) == budget  # free judgments: the pairs budget
    assert (
        spend.rate(JudgeBudget(max_pairs_per_s=0.05, max_usd_per_day=86.4)).max_pairs_per_s == 0.05
    )


def test_the_budget_is_read_from_the_policy() -> None:
    policy = parse_policy({"preference": {"budget": {"max_pairs_per_s": 2, "max_usd_per_day": 5}}})
    assert policy.preference.budget == JudgeBudget(max_pairs_per_s=2, max_usd_per_day=5)
    with pytest.raises(PolicyError, match="min_sample_fraction"):
        parse_policy({"preference": {"budget": {"min_sample_fraction": 0}}})
    with pytest.raises(PolicyError, match="min_win_rate"):
        parse_policy({"preference": {"min_win_rate": 1.5}})
