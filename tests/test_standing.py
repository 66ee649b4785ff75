"""The judge over a migration's life: quality references, carried evidence, segments that
come and go or multiply, failures that must pass again, and refusals in an A/A.

Each test drives `decide` window by window with scored pairs built here (no texts), at the
shipped sample's rate (~280 pairs a minute)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.pairs import Outcome, PairScore
from shadowlens.judge.decide import ExperimentState, decide
from shadowlens.judge.lifecycle import Lifecycle
from shadowlens.judge.policy import JudgePolicy, Policy, parse_policy
from shadowlens.judge.ramp import RampState
from shadowlens.judge.standing import OTHER
from shadowlens.judge.verdicts import Action, Decision, Metric, Verdict
from shadowlens.pipeline.windows import ClosedWindow, WindowKey

POLICY = Policy()
MINUTE = 60_000


def pairs(
    rng: np.random.Generator,
    n: int,
    *,
    segment: str = "chat",
    task: str = "generation",
    comparison: str = "candidate",
    quality: tuple[float, float] = (0.68, 0.12),  # mean and sd of agreement (generation)
    agree: float = 1.0,  # label agreement (classification)
    latency_factor: float = 1.0,
    refusal: tuple[float, float] = (0.0, 0.0),  # primary's and the other arm's rate
    start_ms: int = 0,
) -> list[PairScore]:
    """Scored pairs of one window: a lognormal primary latency, the other arm's within 5 %."""
    out = []
    for i in range(n):
        lat = float(rng.lognormal(8.5, 0.6))
        other = lat * float(rng.lognormal(0, 0.05)) * latency_factor
        label = task == "classification"
        out.append(
            PairScore(
                request_id=f"{comparison}-{segment}-{start_ms}-{i}",
                experiment="exp", segment=segment, task=task, mode="shadow",
                comparison=comparison, outcome=Outcome.PAIRED, event_time_ms=start_ms + i,
                primary_status="ok", candidate_status="ok", primary_latency_ms=lat,
                candidate_latency_ms=other, latency_ratio=other / lat,
                label_agree=bool(rng.random() < agree) if label else None,
                lexical_similarity=None if label else float(np.clip(rng.normal(*quality), 0, 1)),
                primary_refusal=bool(rng.random() < refusal[0]),
                candidate_refusal=bool(rng.random() < refusal[1]),
            )
        )  # fmt: skip
    return out


def windows(start_ms: int, *groups: list[PairScore]) -> list[ClosedWindow]:
    """One closed window per (segment, comparison) of the given pairs."""
    aggs: dict[tuple[str, str], Aggregate] = {}
    for score in (s for g in groups for s in g):
        aggs.setdefault((score.segment, score.comparison), Aggregate()).add(score)
    return [
        ClosedWindow(WindowKey("exp", seg, comp, start_ms), start_ms + MINUTE, agg, 0)
        for (seg, comp), agg in aggs.items()
    ]


def run(
    minutes: int,
    traffic,  # (rng, minute, start_ms) -> list of pair lists
    policy: Policy = POLICY,
    state: ExperimentState | None = None,
    seed: int = 0,
    first: int = 0,
) -> tuple[list[Decision], ExperimentState]:
    """`minutes` one-minute windows from minute `first`, decided one by one."""
    rng = np.random.default_rng(seed)
    state = state or ExperimentState(RampState(stage_started_ms=0))
    made = []
    for minute in range(first, first + minutes):
        start = minute * MINUTE
        decision, state = decide(
            "exp", windows(start, *traffic(rng, minute, start)), state, policy, start + MINUTE
        )
        made.append(decision)
    return made, state


def of(decision: Decision, metric: Metric, segment: str = "*"):
    return next(e for e in decision.evidence if e.metric == metric and e.segment == segment)


# ---- quality references: never the candidate itself -----------------------------------------


def test_a_classifier_that_disagrees_on_a_fifth_of_labels_rolls_back_without_a_replica() -> None:
    """Labels of a deterministic primary agree with themselves: the policy's reference is
    1.0, so 80 % agreement is 20 % below it from the first request, and rolls back."""
    made, _ = run(
        6, lambda rng, m, t: [pairs(rng, 280, task="classification", agree=0.8, start_ms=t)]
    )
    assert Action.PROMOTE not in {d.action for d in made}
    rollback = next(d for d in made if d.action == Action.ROLLBACK)
    q = of(rollback, Metric.QUALITY)
    assert q.verdict == Verdict.FAIL and q.reference == 1.0
    assert q.observed == pytest.approx(0.8, abs=0.05)
    assert "policy reference 1.000" in q.reason and q.example_request_ids


def test_a_worse_generator_without_a_replica_is_never_certified_or_promoted() -> None:
    """Free text has no policy reference: quality is not certified, every decision says so,
    and `require_reference` keeps the candidate in shadow. The candidate's own first pairs
    are no reference: before, the same candidate walked the whole ramp."""
    worse = lambda rng, m, t: [pairs(rng, 280, quality=(0.5, 0.12), start_ms=t)]  # noqa: E731
    made, _ = run(20, worse)
    assert {d.action for d in made} == {Action.HOLD} and {d.to_percent for d in made} == {0}
    later = made[3:]
    assert all("quality not certified" in d.reason for d in later)
    assert all("quality [*] not certified (no reference)" in d.reason for d in later)
    # with a reference set for generation (the primary's agreement with itself, measured
    # offline), the same candidate is 26 % below it and rolls back
    policy = parse_policy({"quality": {"reference": {"generation": 0.68}}})
    made, _ = run(6, worse, policy)
    rollback = next(d for d in made if d.action == Action.ROLLBACK)
    assert of(rollback, Metric.QUALITY).verdict == Verdict.FAIL
    # and without `require_reference` it is promoted, every decision saying it is uncertified
    lax = parse_policy({"quality": {"require_reference": False}})
    made, _ = run(6, worse, lax)
    assert Action.PROMOTE in {d.action for d in made}
    assert all("quality not certified" in d.reason for d in made[3:])


def test_an_uncertified_candidate_that_agrees_almost_perfectly_is_certified_anyway() -> None:
    """No reference exceeds perfect agreement: 0.97 agreement clears 0.9 x 1.0."""
    made, _ = run(4, lambda rng, m, t: [pairs(rng, 280, quality=(0.97, 0.02), start_ms=t)])
    assert of(made[-1], Metric.QUALITY).verdict == Verdict.PASS
    assert Action.PROMOTE in {d.action for d in made}


def test_quality_against_a_replica_reads_both_bounds() -> None:
    def traffic(rng, m, t, mean=0.68):
        cand = pairs(rng, 280, quality=(mean, 0.12), start_ms=t)
        return [cand, pairs(rng, 56, comparison="replica", quality=(0.68, 0.12), start_ms=t)]

    same, _ = run(6, traffic)
    assert of(same[-1], Metric.QUALITY).verdict == Verdict.PASS
    assert "replica" in of(same[-1], Metric.QUALITY).reason
    worse, _ = run(10, lambda rng, m, t: traffic(rng, m, t, mean=0.55))
    assert Action.ROLLBACK in {d.action for d in worse}


# ---- carried evidence and stages ---------------------------------------------------------------


def test_share_independent_evidence_is_carried_across_promotions_and_says_so() -> None:
    made, state = run(8, lambda rng, m, t: [pairs(rng, 280, quality=(0.97, 0.02), start_ms=t)])
    promoted = [i for i, d in enumerate(made) if d.action == Action.PROMOTE]
    assert len(promoted) >= 2
    after = made[promoted[0] + 1]
    err, lat = of(after, Metric.ERROR_RATE), of(after, Metric.LATENCY_P99)
    assert "carried across 1 promotion(s)" in err.reason and err.n > 280
    assert lat.n == 280  # latency depends on the share: this stage only
    assert state.segments["*"].stages == len(promoted) + 1


def test_a_rollback_restarts_every_metric() -> None:
    def traffic(rng, m, t):
        return [pairs(rng, 280, latency_factor=1.6 if m >= 4 else 1.0, quality=(0.97, 0.02),
                      start_ms=t)]  # fmt: skip

    made, state = run(8, traffic)
    i = next(i for i, d in enumerate(made) if d.action == Action.ROLLBACK)
    assert of(made[i], Metric.LATENCY_P99).verdict == Verdict.FAIL
    assert state.segments["*"].stages == 1
    assert of(made[i + 1], Metric.ERROR_RATE).n <= 280 * (len(made) - i - 1)


# ---- segments --------------------------------------------------------------------------------


def test_a_failing_segment_that_goes_quiet_keeps_holding_promotion() -> None:
    """Segment b regresses and rolls back; an operator resumes; b's traffic stops (a batch
    job). The stage may not pass on a's traffic alone: b failed and has not passed since.
    When b comes back healthy and passes, the ramp moves on."""

    def traffic(rng, m, t, b_factor=1.6, b_on=True):
        out = [pairs(rng, 800, segment="a", quality=(0.97, 0.02), start_ms=t)]
        if b_on:
            out.append(pairs(rng, 200, segment="b", latency_factor=b_factor,
                             quality=(0.97, 0.02), start_ms=t))  # fmt: skip
        return out

    made, state = run(5, traffic)
    assert Action.ROLLBACK in {d.action for d in made}
    assert Verdict.FAIL in {of(d, Metric.LATENCY_P99, "b").verdict for d in made}
    resumed = replace(state, lifecycle=Lifecycle())  # what `shadowlens control resume` does
    quiet = lambda rng, m, t: traffic(rng, m, t, b_on=False)  # noqa: E731
    held, state = run(8, quiet, state=resumed, first=5)
    assert Action.PROMOTE not in {d.action for d in held}
    waiting = [d.reason for d in held if "stage held" not in d.reason]
    assert len(waiting) >= 5
    assert all("latency_p99 [b] failed and has not passed since" in r for r in waiting)
    assert all("segment b has too little evidence" in r for r in waiting)
    back = lambda rng, m, t: traffic(rng, m, t, b_factor=1.0)  # noqa: E731
    made, _ = run(6, back, state=state, seed=1, first=13)
    assert Action.PROMOTE in {d.action for d in made}


def test_a_quiet_segment_is_judged_on_carried_evidence_and_says_so() -> None:
    def traffic(rng, m, t):
        out = [pairs(rng, 220, segment="a", quality=(0.97, 0.02), start_ms=t)]
        if m < 3:
            out.append(pairs(rng, 140, segment="batch", quality=(0.97, 0.02), start_ms=t))
        return out

    made, _ = run(8, traffic)
    late = made[-1]
    assert late.to_percent > 1  # the quiet segment does not stop the ramp ...
    lat = of(late, Metric.LATENCY_P99, "batch")  # ... but is still judged, on carried data
    assert "carried:" in lat.reason and lat.verdict != Verdict.NODATA


def test_segments_beyond_max_segments_are_judged_together_as_other() -> None:
    """Segment names are client-supplied: at most `max_segments` are judged (the error
    budget is split over them), the smallest named one and the newcomers as `(other)`."""
    policy = replace(POLICY, judge=JudgePolicy(max_segments=4))

    def traffic(rng, m, t):
        names = [f"s{k}" for k in range(3 + min(m, 3))]  # s0..s2, then one more a minute
        sizes = {"s0": 200, "s1": 120, "s2": 10}
        return [pairs(rng, sizes.get(s, 40), segment=s, quality=(0.97, 0.02), start_ms=t)
                for s in names]  # fmt: skip

    made, state = run(5, traffic, policy)
    judged = {e.segment for e in made[-1].evidence} - {"*"}
    assert judged == {"s0", "s1", "s3", OTHER}  # s2 was the smallest when s4 came
    assert state.names.merged == ("s2", "s4", "s5")
    assert f"{OTHER} judges 3 segments beyond judge.max_segments = 4: s2, s4, s5" in made[-1].reason
    other = of(made[-1], Metric.ERROR_RATE, OTHER)
    assert other.n > 0


# ---- refusals in an A/A --------------------------------------------------------------------------


def test_refusals_of_a_candidate_that_behaves_like_the_primary_never_roll_back() -> None:
    """Both arms refuse independently at the same rate, in segments of every size."""

    def traffic(rng, m, t):
        return [pairs(rng, n, segment=s, refusal=(0.03, 0.03), quality=(0.97, 0.02), start_ms=t)
                for s, n in (("big", 200), ("mid", 60), ("small", 20))]  # fmt: skip

    for seed in range(3):
        made, _ = run(40, traffic, seed=seed)
        refusals = [e for d in made for e in d.evidence if e.metric == Metric.REFUSAL_RATE]
        assert Verdict.FAIL not in {e.verdict for e in refusals}


def test_a_real_increase_inside_the_margin_that_noise_lifts_past_the_limit_holds() -> None:
    """What rolled back A/A runs before: a sibling of the primary that refuses 1.8 pp more
    often (inside the +2 pp margin) in a small segment, with noise lifting its point rate to
    5.1 %. "No increase at all" (McNemar) is rejected, so the old rule rolled back; the
    increase is not shown above half the margin, so now it holds."""
    agg = Aggregate()
    for i in range(1_000):
        p, c = i < 18, i < 18 or 500 <= i < 533  # 1.8 % and 5.1 %: b = 33, c = 0
        agg.add(replace(pairs(np.random.default_rng(i), 1)[0], request_id=f"r{i}",
                        primary_refusal=p, candidate_refusal=c))  # fmt: skip
    closed = ClosedWindow(WindowKey("exp", "oasst", "candidate", 0), MINUTE, agg, 0)
    decision, _ = decide("exp", [closed], ExperimentState(), POLICY, MINUTE)
    ref = of(decision, Metric.REFUSAL_RATE, "oasst")
    assert ref.observed > ref.threshold and ref.verdict == Verdict.INCONCLUSIVE
    assert "a rollback needs more than +1.0%" in ref.reason
