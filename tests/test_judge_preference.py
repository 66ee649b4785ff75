"""judge.preference: the win rate against the floor, the guard that keeps answers answers,
and the evidence that is carried across stages until a rollback."""

from __future__ import annotations

from dataclasses import replace

import pytest
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.pairs import PairScore, score_pair
from shadowlens.judge.decide import ALL_SEGMENTS, ExperimentState, decide, metric_alphas
from shadowlens.judge.lifecycle import Lifecycle, Step
from shadowlens.judge.policy import Policy
from shadowlens.judge.preference import (
    PARITY,
    PreferenceEvidence,
    certifies_quality,
    classify_preference,
    defer_quality,
)
from shadowlens.judge.ramp import RampState
from shadowlens.judge.verdicts import Action, Evidence, Metric, Verdict
from shadowlens.pipeline.windows import ClosedWindow, WindowKey

from tests.builders import event

POLICY = Policy()
ALPHA = metric_alphas(POLICY)
PASSING_REFUSALS = Evidence(Metric.REFUSAL_RATE, "*", Verdict.PASS, 0.0, 0.0, 0.05, 400)
BASE = score_pair(event("r", text="an answer"), event("r", "candidate", text="an answer"), {})


def pairs(n: int, wins: list[float], **fields: object) -> list[PairScore]:
    """`n` judged text pairs whose wins cycle through `wins`, with the given guard values."""
    values = {"lexical_similarity": 0.6, "length_ratio": 1.0, "language_changed": False}
    values.update(fields)
    return [
        replace(
            BASE,
            request_id=f"r{i}",
            preference=wins[i % len(wins)],
            preference_weight=1.0,
            **values,
        )
        for i in range(n)
    ]


def evidence(scores: list[PairScore]) -> PreferenceEvidence:
    window = Aggregate()
    for s in scores:
        window.add(s)
    return PreferenceEvidence().fold(window)


def judge(scores: list[PairScore], refusals: Evidence = PASSING_REFUSALS) -> Evidence:
    return classify_preference(evidence(scores), "*", POLICY, ALPHA, refusals)


def test_too_few_judged_pairs_give_no_verdict() -> None:
    e = judge(pairs(POLICY.judge.min_pairs - 1, [1.0]))
    assert e.verdict == Verdict.NODATA and "judged" in e.reason


def test_an_identical_candidate_is_exactly_at_parity_and_passes() -> None:
    e = judge(pairs(400, [PARITY], lexical_similarity=1.0))
    assert e.verdict == Verdict.PASS and e.observed == PARITY and e.reference == PARITY
    assert e.bound is not None and e.bound >= POLICY.preference.min_win_rate
    assert "length-adjusted 50.0%" in e.reason and "guard held" in e.reason


def test_a_candidate_the_judge_prefers_less_is_rolled_back_with_its_lost_comparisons() -> None:
    scores = pairs(600, [0.0, 0.0, 0.0, 1.0, 0.5])  # wins 30 %, ties half
    e = judge(scores)
    assert e.verdict == Verdict.FAIL and e.observed == pytest.approx(0.3)
    assert e.bound is not None and e.bound < POLICY.preference.min_win_rate
    lost = {s.request_id for s in scores if s.preference == 0.0}
    assert e.example_request_ids and set(e.example_request_ids) <= lost
    assert "judge-fooling" not in e.reason


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"lexical_similarity": 0.3}, "lexical similarity"),  # off-topic, gibberish
        ({"length_ratio": 0.02}, "length"),  # one-word answers
        ({"language_changed": True}, "language switched"),
    ],
)
def test_the_guard_rolls_back_a_candidate_the_judge_was_fooled_by(
    fields: dict[str, object], check: str
) -> None:
    e = judge(pairs(400, [1.0], **fields))  # the judge prefers every answer
    assert e.observed == 1.0 and e.verdict == Verdict.FAIL
    assert "judge-fooling guard: " + check in e.reason


def test_a_refusal_regression_trips_the_guard() -> None:
    refusing = replace(PASSING_REFUSALS, verdict=Verdict.FAIL, example_request_ids=("r7",))
    e = judge(pairs(400, [1.0]), refusing)
    assert e.verdict == Verdict.FAIL and "refusals regressed" in e.reason
    assert e.example_request_ids == ("r7",)


def test_an_unsettled_guard_holds_a_winning_candidate() -> None:
    e = judge(pairs(400, [1.0], lexical_similarity=0.46))  # just above the floor: not shown yet
    assert e.verdict == Verdict.INCONCLUSIVE and "guard not settled" in e.reason


def test_the_judge_budget_is_split_over_six_rollback_metrics() -> None:
    j = POLICY.judge
    stages = len(POLICY.ramp.stages_percent)
    assert ALPHA.fail == pytest.approx(j.alpha / (stages * 6 * (1 + j.max_segments)))


def window(scores: list[PairScore], start_ms: int) -> ClosedWindow:
    agg = Aggregate()
    for s in scores:
        agg.add(s)
    return ClosedWindow(WindowKey("exp", "seg", "candidate", start_ms), start_ms + 60_000, agg, 0)


def test_preference_evidence_is_carried_across_promotions_and_restarts_on_rollback() -> None:
    state = ExperimentState(ramp=RampState(stage_started_ms=0))
    _, state = decide("exp", [window(pairs(120, [1.0, 0.0]), 0)], state, POLICY, 60_000)
    carried = state.preference[ALL_SEGMENTS]
    assert carried.win.n == 120 and set(state.preference) == {ALL_SEGMENTS, "seg"}
    promoted = Step(RampState(1, 1, 60_000), Lifecycle(), Action.PROMOTE, "", fresh=True)
    after = state.after(promoted)
    assert after.preference[ALL_SEGMENTS] is carried
    rolled_back = Step(RampState(0, 2, 60_000), Lifecycle(), Action.ROLLBACK, "", fresh=True)
    assert state.after(rolled_back).preference == {}


def test_similarity_is_left_to_the_judge_where_it_covers_the_pairs() -> None:
    """With the judge on, a similarity shortfall is no quality verdict of its own: the
    judge decides generation quality, similarity guards it."""
    failing = Evidence(Metric.QUALITY, "*", Verdict.FAIL, 0.59, 0.68, 0.61, 400, bound=0.6)
    covered = Aggregate(quality_measured=400, preference_judged=380, preference_unjudged=20)
    deferred = defer_quality(failing, covered)
    assert deferred.verdict == Verdict.NODATA and deferred.observed == 0.59
    assert deferred.reason.startswith("left to the preference judge")
    assert certifies_quality([replace(judge(pairs(400, [PARITY])), segment="*")])
    mixed = Aggregate(quality_measured=400, preference_judged=100)  # labels too: not covered
    assert defer_quality(failing, mixed) is failing
    assert defer_quality(failing, Aggregate(quality_measured=400)) is failing  # judge off
