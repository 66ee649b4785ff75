"""The judge and the ramp: rollback, hold and promote, with their evidence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.pairs import score_orphan, score_pair
from shadowlens.judge.classifiers import CLASSIFIERS, SegmentCase
from shadowlens.judge.decide import ExperimentState, decide
from shadowlens.judge.policy import ErrorPolicy, Policy, RampPolicy
from shadowlens.judge.ramp import RampState, move, target
from shadowlens.judge.verdicts import Action, Evidence, Metric, Verdict
from shadowlens.pipeline.windows import ClosedWindow, WindowKey
from shadowlens.schemas.events import Status

from tests.builders import alpaca, event

POLICY = Policy()
GPT4, LLAMA = alpaca("gpt4_0613"), alpaca("Meta-Llama-3-70B-Instruct")
WEAK = alpaca("gpt4_0613_concise")
REFUSAL = "I'm sorry, but I can't assist with that request."


def window(
    n: int = 300,
    *,
    latency_factor: float = 1.0,
    error_share: float = 0.0,
    orphan_share: float = 0.0,
    weak_share: float = 0.0,
    refusal_share: float = 0.0,
    comparison: str = "candidate",
    segment: str = "helpful_base",
    seed: int = 0,
    start_ms: int = 0,
) -> ClosedWindow:
    rng = np.random.default_rng(seed)
    agg = Aggregate()
    for i in range(n):
        rid, lat = f"r{seed}-{i}", float(rng.lognormal(7.5, 0.4))
        primary = event(rid, start=start_ms + i, latency=lat, text=GPT4[i % 100]["output"])
        if rng.random() < orphan_share:
            agg.add(score_orphan(primary, comparison, {}, primary.start_time_ms))
            continue
        text = (WEAK if rng.random() < weak_share else GPT4)[
            (i + 1) % 100 if weak_share else i % 100
        ]
        failed = rng.random() < error_share
        answer = REFUSAL if rng.random() < refusal_share else text["output"]
        other = event(
            rid, comparison, start=start_ms + i,
            latency=float(lat * rng.lognormal(0, 0.05) * latency_factor),
            text=None if failed else answer,
            status=Status.ERROR if failed else Status.OK,
        )  # fmt: skip
        agg.add(score_pair(primary, other, {}))
    key = WindowKey("exp", segment, comparison, start_ms)
    return ClosedWindow(key, start_ms + 60_000, agg, 0)


def test_healthy_window_holds_until_the_stage_has_run_long_enough() -> None:
    state = ExperimentState(RampState(stage_started_ms=0))
    decision, state = decide("exp", [window()], state, POLICY, now_ms=60_000)
    assert decision.action == Action.HOLD and "held 60 s of 120 s" in decision.reason
    assert all(e.verdict != Verdict.FAIL for e in decision.evidence)
    decision, state = decide("exp", [window(seed=1)], state, POLICY, now_ms=120_000)
    assert decision.action == Action.PROMOTE
    assert (decision.from_percent, decision.to_percent, decision.epoch) == (0, 1, 1)
    assert state.ramp.stage_started_ms == 120_000  # a fresh stage: its own latency and cost,
    assert all(e.totals.n_requests == 0 for e in state.segments.values())  # the share-
    assert state.segments["*"].carried.n_requests == 600  # independent evidence carried


def test_latency_regression_rolls_back_one_stage_with_evidence() -> None:
    state = ExperimentState(RampState(stage_index=3, epoch=5))
    decision, state = decide("exp", [window(latency_factor=1.5)], state, POLICY, 60_000)
    assert decision.action == Action.ROLLBACK
    assert (decision.from_percent, decision.to_percent, decision.epoch) == (10, 5, 6)
    (lat,) = [e for e in decision.failing if e.segment == "*"]
    assert lat.metric == Metric.LATENCY_P99 and lat.observed == pytest.approx(1.5, rel=0.1)
    assert lat.threshold == pytest.approx(1.2) and lat.n == 300
    assert len(lat.example_request_ids) == 3
    assert "latency_p99" in decision.reason


def test_error_regression_is_critical_and_rolls_back_to_zero() -> None:
    state = ExperimentState(RampState(stage_index=5))
    decision, _ = decide("exp", [window(1_500, error_share=0.15)], state, POLICY, 60_000)
    assert decision.action == Action.ROLLBACK and decision.to_percent == 0
    (err,) = [e for e in decision.failing if e.segment == "*"]
    assert err.metric == Metric.ERROR_RATE and err.bound > POLICY.errors.max_absolute
    assert err.observed == pytest.approx(0.15, abs=0.03)


def test_a_few_errors_are_inconclusive_not_a_rollback() -> None:
    # a handful of failures on 100 requests: above the 5 % limit, but not provably worse
    decision, _ = decide("exp", [window(100, error_share=0.07)], ExperimentState(), POLICY, 0)
    err = next(e for e in decision.evidence if e.metric == Metric.ERROR_RATE)
    assert err.observed > POLICY.errors.max_absolute
    assert err.verdict == Verdict.INCONCLUSIVE and decision.action == Action.HOLD


def test_missing_candidates_count_as_errors() -> None:
    decision, _ = decide("exp", [window(1_500, orphan_share=0.15)], ExperimentState(), POLICY, 0)
    assert Metric.ERROR_RATE in {e.metric for e in decision.failing}


def test_refusal_increase_rolls_back_one_stage_with_examples() -> None:
    state = ExperimentState(RampState(stage_index=3, epoch=5))
    decision, _ = decide("exp", [window(600, refusal_share=0.1)], state, POLICY, 60_000)
    assert decision.action == Action.ROLLBACK and decision.to_percent == 5  # not critical
    ref = next(e for e in decision.failing if e.segment == "*")
    assert ref.metric == Metric.REFUSAL_RATE and ref.reference == 0.0
    assert ref.observed == pytest.approx(0.1, abs=0.03) and ref.n == 600
    assert ref.threshold == POLICY.refusals.max_absolute
    assert len(ref.example_request_ids) == 3
    assert "refusal_rate [*]: candidate refusal rate" in decision.reason
    assert Metric.ERROR_RATE not in {e.metric for e in decision.failing}


def test_refusals_within_the_allowance_pass_and_a_few_are_inconclusive() -> None:
    ok, _ = decide("exp", [window(1_000, refusal_share=0.005)], ExperimentState(), POLICY, 0)
    ref = next(e for e in ok.evidence if e.metric == Metric.REFUSAL_RATE and e.segment == "*")
    assert ref.verdict == Verdict.PASS and 0 < ref.observed < 0.02
    few, _ = decide("exp", [window(100, refusal_share=0.1)], ExperimentState(), POLICY, 0)
    ref = next(e for e in few.evidence if e.metric == Metric.REFUSAL_RATE and e.segment == "*")
    assert ref.observed > ref.threshold and ref.verdict == Verdict.INCONCLUSIVE


def test_refusals_are_nodata_without_text_answers() -> None:
    decision, _ = decide("exp", [window(600, error_share=1.0)], ExperimentState(), POLICY, 0)
    ref = next(e for e in decision.evidence if e.metric == Metric.REFUSAL_RATE)
    assert ref.verdict == Verdict.NODATA and ref.n == 0


def test_quality_is_judged_against_the_replica_noise_floor() -> None:
    # the candidate diverges from the primary as much as the primary from itself: fine
    floor = window(1_000, weak_share=1.0, comparison="replica", seed=3)
    same = window(1_000, weak_share=1.0, seed=4)
    decision, _ = decide("exp", [same, floor], ExperimentState(), POLICY, 60_000)
    quality = next(e for e in decision.evidence if e.metric == Metric.QUALITY and e.segment == "*")
    assert quality.verdict != Verdict.FAIL and "replica" in quality.reason
    # against a replica that agrees with the primary, the same divergence is a drop
    tight = window(1_000, comparison="replica", seed=5)
    decision, _ = decide("exp", [same, tight], ExperimentState(), POLICY, 60_000)
    assert Metric.QUALITY in {e.metric for e in decision.failing}


def test_the_candidates_first_pairs_are_a_drift_signal_never_a_reference() -> None:
    state = ExperimentState()
    decision, state = decide("exp", [window(1_000, seed=2)], state, POLICY, 60_000)
    assert state.baseline.n == POLICY.quality.baseline_pairs
    decision, _ = decide("exp", [window(1_000, weak_share=1.0, seed=9)], state, POLICY, 120_000)
    q = next(e for e in decision.evidence if e.metric == Metric.QUALITY and e.segment == "*")
    assert q.verdict == Verdict.NODATA and q.reference is None
    assert "not certified" in q.reason and "drift from the first pairs" in q.reason
    assert Metric.QUALITY not in {e.metric for e in decision.failing}


def test_a_replica_with_too_few_pairs_is_named_not_called_missing() -> None:
    """A replica arm samples some requests: until it has `judge.min_pairs` pairs, quality
    has no reference, and the reason says how far the replica is, not that there is none."""
    few = window(20, comparison="replica", seed=3)
    weak = window(1_000, weak_share=1.0, seed=4)  # not certifiable against perfect agreement
    decision, _ = decide("exp", [weak, few], ExperimentState(), POLICY, 60_000)
    q = next(e for e in decision.evidence if e.metric == Metric.QUALITY and e.segment == "*")
    assert q.verdict == Verdict.NODATA
    assert f"the replica arm has 20 pairs of {POLICY.judge.min_pairs} needed" in q.reason
    alone, _ = decide("exp", [weak], ExperimentState(), POLICY, 60_000)
    q = next(e for e in alone.evidence if e.metric == Metric.QUALITY and e.segment == "*")
    assert "no replica arm" in q.reason


def test_low_pairing_rate_blocks_promotion_without_rollback() -> None:
    policy = Policy(errors=ErrorPolicy(max_absolute=0.5))
    state = ExperimentState(RampState(stage_started_ms=-(10**6)))
    decision, _ = decide("exp", [window(1_000, orphan_share=0.2)], state, policy, 60_000)
    assert decision.action == Action.HOLD and "pairing_rate [*] fail" in decision.reason


def test_small_segments_say_nodata() -> None:
    decision, _ = decide("exp", [window(n=10)], ExperimentState(), POLICY, 60_000)
    verdicts = {e.verdict for e in decision.evidence if e.metric != Metric.PAIRING_RATE}
    assert verdicts == {Verdict.NODATA} and decision.action == Action.HOLD


def test_a_regression_in_one_segment_rolls_back() -> None:
    healthy = window(600, segment="a", seed=1)
    slow = window(600, segment="b", seed=2, latency_factor=1.6)
    decision, _ = decide("exp", [healthy, slow], ExperimentState(), POLICY, 60_000)
    assert decision.action == Action.ROLLBACK
    assert "b" in {e.segment for e in decision.failing}
    assert "a" not in {e.segment for e in decision.failing}


def test_state_folds_windows_across_decisions() -> None:
    state = ExperimentState()
    for i in range(3):
        _, state = decide("exp", [window(100, seed=i)], state, POLICY, 60_000 * (i + 1))
    assert state.segments["*"].totals.n_paired == 300
    assert state.segments["*"].candidate_error.n == 300
    assert state.segments["*"].candidate_refusal.n == 300


def test_decide_judges_with_the_classifiers_it_is_given() -> None:
    """The seam the benchmark's prototypes use: a replaced classifier is the one the judge
    reads, the others stay today's."""

    def always_fails(case: SegmentCase) -> Evidence:
        return Evidence(
            Metric.ERROR_RATE, case.segment, Verdict.FAIL, 0.5, 0.0, 0.05, 300, reason="stub"
        )

    strict = replace(CLASSIFIERS, errors=always_fails)
    state = ExperimentState(RampState(stage_index=3))
    today, _ = decide("exp", [window()], state, POLICY, 60_000)
    swapped, _ = decide("exp", [window()], state, POLICY, 60_000, strict)
    assert today.action == Action.HOLD and swapped.action == Action.ROLLBACK
    assert {e.metric for e in swapped.failing} == {Metric.ERROR_RATE}
    assert [e for e in swapped.evidence if e.metric != Metric.ERROR_RATE] == [
        e for e in today.evidence if e.metric != Metric.ERROR_RATE
    ]


def test_ramp_transitions_bump_the_epoch_only_when_the_share_changes() -> None:
    rp = RampPolicy()
    s = RampState()
    for expected in (1, 5, 10, 25, 50, 75, 100, 100):
        s = move(s, target(s, Action.PROMOTE, False, rp), rp, 0)
        assert s.percent(rp) == expected
    assert s.epoch == 7  # the last promote at 100 % changes nothing
    s = move(s, target(s, Action.ROLLBACK, False, rp), rp, 1)
    assert s.percent(rp) == 75 and s.epoch == 8
    s = move(s, target(s, Action.ROLLBACK, True, rp), rp, 2)
    assert s.percent(rp) == 0 and s.epoch == 9
    s = move(s, target(s, Action.ROLLBACK, False, rp), rp, 3)
    assert (s.percent(rp), s.epoch, s.stage_started_ms) == (0, 9, 3)  # 0 % -> 0 %: no epoch
    assert target(s, Action.HOLD, False, rp) == s.stage_index


def test_ramp_complete_holds() -> None:
    state = ExperimentState(RampState(stage_index=7, stage_started_ms=-(10**6)))
    decision, _ = decide("exp", [window()], state, POLICY, 60_000)
    assert decision.action == Action.HOLD and "stability period" in decision.reason


def test_shrink_weighs_segment_against_global() -> None:
    from shadowlens.judge.classify import shrink

    assert shrink(2.0, 100, 1.0, 100) == pytest.approx(1.5)
    assert shrink(2.0, 100, None, 100) == 2.0
    assert shrink(2.0, 10_000, 1.0, 100) == pytest.approx(2.0, abs=0.02)


def test_worst_segment_past_the_limit_holds_promotion() -> None:
    from shadowlens.judge.decide import _worst_segment_blocks

    def latency(verdict: Verdict, observed: float) -> Evidence:
        return Evidence(Metric.LATENCY_P99, "b", verdict, observed, 900.0, 1.2, 120)

    assert _worst_segment_blocks(latency(Verdict.INCONCLUSIVE, 1.25))
    assert not _worst_segment_blocks(latency(Verdict.INCONCLUSIVE, 1.15))
    assert not _worst_segment_blocks(latency(Verdict.PASS, 1.15))
    quality = Evidence(Metric.QUALITY, "b", Verdict.INCONCLUSIVE, 0.5, 0.6, 0.54, 120)
    assert not _worst_segment_blocks(quality)  # quality gates through the global verdict
