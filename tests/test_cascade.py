"""Tests of comparators/cascade.py: routes, the event-time budget, weights, and what the
window aggregates and the judge make of a sampled batch. Pure: a fake encoder, no model."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from shadowlens.comparators.aggregate import Aggregate, merged
from shadowlens.comparators.cascade import (
    Budget,
    Route,
    SemanticCascade,
    SemanticPolicy,
    apply_plan,
    plan_batch,
    sample_fraction,
    sampled_fraction,
    tally,
)
from shadowlens.comparators.pairs import PairScore, score_orphan, score_pair
from shadowlens.judge.classify import (
    Alphas,
    QualityReference,
    ReferenceSource,
    classify_quality,
)
from shadowlens.judge.evidence_state import SegmentEvidence
from shadowlens.judge.policy import parse_policy
from shadowlens.judge.stats_means import mixture_rho
from shadowlens.schemas.events import Arm, Output, Status, Task

from tests.builders import alpaca, event
from tests.test_semantic import CountingEncoder

UNLIMITED = SemanticPolicy(max_pairs_per_s=0)


def text_pair(rid: str, primary: str, candidate: str, start: int = 1_000_000) -> PairScore:
    p = event(rid, Arm.PRIMARY, text=primary, start=start)
    return score_pair(p, event(rid, Arm.CANDIDATE, text=candidate, start=start), {})


def real_pairs(n: int) -> list[PairScore]:
    """gpt4_0613 against Meta-Llama-3-70B-Instruct on the first n AlpacaEval instructions."""
    a, b = alpaca("gpt4_0613"), alpaca("Meta-Llama-3-70B-Instruct")
    return [text_pair(f"r{i}", a[i]["output"], b[i]["output"]) for i in range(n)]


def test_routes_of_the_cascade_on_real_pairs():
    gpt4 = alpaca("gpt4_0613")[3]["output"]
    label_p = event("c", task=Task.CLASSIFICATION, text=None, output=Output(label="positive"))
    label_c = replace(label_p, arm=Arm.CANDIDATE, output=Output(label="negative"))
    failed = event("f", Arm.CANDIDATE, text=None, status=Status.ERROR)
    scores = [
        *real_pairs(2),
        text_pair("x", gpt4, "  " + gpt4.upper().replace(" ", "\n ")),  # normalised equal
        score_pair(label_p, label_c, {}),
        score_pair(event("f"), failed, {}),
        score_orphan(event("o"), "candidate", {}, 1_600_000),
    ]
    enc = CountingEncoder()
    out = SemanticCascade(enc, UNLIMITED)(scores)
    assert enc.calls and sorted(enc.calls[0]) == sorted(
        t for s in scores[:2] for t in (s.primary_body, s.candidate_body)
    ), "only the two differing text pairs reach the model, in one call"
    assert [o.semantic_similarity is not None for o in out] == [True] * 3 + [False] * 3
    assert out[2].semantic_similarity == 1.0 and out[2].exact_match
    assert all(o.weight == 1.0 for o in out), "no budget pressure: every weight stays 1"
    assert out[3:] == scores[3:], "label, failed and orphan pairs are left as they are"
    assert out[3].quality == 0.0, "a label flip keeps its label-agreement quality"


def test_plan_routes_and_charges_only_model_calls():
    scores = [*real_pairs(3), text_pair("same", "Yes.", "yes.")]
    plan, budget = plan_batch(scores, Budget(10.0), UNLIMITED)
    assert plan.routes == (Route.EMBED, Route.EMBED, Route.EMBED, Route.EXACT)
    assert plan.fraction == 1.0 and len(plan.texts) == 3
    assert budget.allowance == 7.0, "the exact-match shortcut costs nothing"
    assert budget.clock_ms == max(s.event_time_ms for s in scores)
    with pytest.raises(ValueError, match="more similarities"):
        apply_plan(plan, [0.5] * 4)


def test_budget_refills_in_event_time_up_to_the_burst():
    policy = SemanticPolicy(max_pairs_per_s=20, burst_pairs=100)
    b = Budget.full(policy).refill(5_000, policy)
    assert (b.allowance, b.clock_ms) == (100.0, 5_000), "first batch: full bucket"
    b = Budget(-30.0, 5_000).refill(6_500, policy)
    assert b.allowance == pytest.approx(0.0), "1.5 s at 20 pairs/s repays a 30-pair debt"
    assert Budget(90.0, 5_000).refill(9_000, policy).allowance == 100.0, "capped at the burst"
    assert Budget(10.0, 5_000).refill(4_000, policy) == Budget(10.0, 5_000), "time never runs back"


@pytest.mark.parametrize(
    ("needed", "allowance", "expected"),
    [(0, 0.0, 1.0), (50, 50.0, 1.0), (200, 50.0, 0.25), (1000, 10.0, 0.05), (10, -5.0, 0.05)],
)
def test_sample_fraction_fits_the_allowance_with_a_floor(needed, allowance, expected):
    policy = SemanticPolicy(max_pairs_per_s=10, min_sample_fraction=0.05)
    assert sample_fraction(needed, allowance, policy) == pytest.approx(expected)
    assert sample_fraction(needed, allowance, UNLIMITED) == 1.0


def test_over_budget_a_uniform_sample_carries_inverse_probability_weights():
    base = real_pairs(50)
    exact = [text_pair(f"e{i}", "Paris.", "paris.") for i in range(500)]
    scores = [replace(base[i % 50], request_id=f"r{i}") for i in range(1000)] + exact
    policy = SemanticPolicy(max_pairs_per_s=1, burst_pairs=250, min_sample_fraction=0.01)
    enc = CountingEncoder()
    cascade = SemanticCascade(enc, policy)
    out = cascade(scores)
    routes = Counter(
        "unsampled" if o.weight == 0 else "exact" if o.request_id.startswith("e") else "embed"
        for o in out
    )
    assert routes["embed"] == pytest.approx(250, abs=4 * math.sqrt(250))
    # inclusion is drawn before looking at the content: exact matches at the same rate
    assert routes["exact"] / 500 == pytest.approx(routes["embed"] / 1000, abs=0.06)
    measured = [o for o in out if o.weight > 0]
    assert {o.weight for o in measured} == {4.0}, "p = 250 / 1000 pairs needing the model"
    assert all(o.semantic_similarity is not None for o in measured)
    assert all(o.semantic_similarity is None and o.weight == 0 for o in out if o not in measured)
    assert enc.texts_encoded <= 100, "50 distinct pairs' texts, each encoded once"
    assert cascade.budget.allowance == pytest.approx(250 - routes["embed"])
    counts = tally(out)
    assert counts == {
        "semantic.measured": len(measured),
        "semantic.unsampled": 1500 - len(measured),
    }
    assert sampled_fraction(counts) == pytest.approx(len(measured) / 1500)
    assert sampled_fraction(Counter()) is None and tally(real_pairs(2)) == Counter()


def test_aggregate_counts_unsampled_pairs_out_of_quality_only():
    measured, unsampled = real_pairs(2)
    measured = replace(measured, semantic_similarity=0.8, weight=4.0)
    unsampled = replace(unsampled, weight=0.0)
    assert unsampled.quality is None, "no lexical stand-in for an unmeasured pair"
    agg = Aggregate()
    for s in (measured, unsampled):
        agg.add(s)
    assert (agg.quality.n, agg.quality.mean, agg.quality_seq) == (4.0, 0.8, [0.8])
    assert (agg.quality_measured, agg.quality_unsampled, agg.quality_sampled_fraction) == (
        1,
        1,
        0.5,
    )
    assert agg.n_paired == 2 and agg.primary_latency_ms.count == 2, "latency ignores weights"
    assert merged([agg, agg]).quality_unsampled == 2


def simulate(policy: SemanticPolicy, seed: int) -> tuple[list[Aggregate], float]:
    """Batches of 1 s of event time; heavy batches carry worse answers (and get sampled).

    Returns one window aggregate per batch and the mean quality of all eligible pairs."""
    rng = np.random.default_rng(seed)
    template = real_pairs(1)[0]
    cascade = SemanticCascade(CountingEncoder(), policy)
    windows, truth = [], []
    for b in range(60):
        heavy = b % 3 == 0
        n, mean = (400, 0.55) if heavy else (40, 0.9)
        quality = np.clip(rng.normal(mean, 0.1, n), 0.0, 1.0)
        t = 1_000_000 + b * 1000
        batch = [replace(template, request_id=f"{b}-{i}", event_time_ms=t) for i in range(n)]
        plan = cascade.plan(batch)
        sims = [q for q, r in zip(quality, plan.routes, strict=True) if r == Route.EMBED]
        agg = Aggregate()
        for s in apply_plan(plan, sims):
            agg.add(s)
        windows.append(agg)
        truth += quality.tolist()
    return windows, float(np.mean(truth))


def test_weighted_window_quality_stays_unbiased_under_sampling():
    policy = SemanticPolicy(max_pairs_per_s=60, burst_pairs=60, min_sample_fraction=0.05)
    windows, truth = simulate(policy, seed=3)
    total = merged(windows)
    assert 0.05 < total.quality_sampled_fraction < 0.5, "the budget did bite"
    # effective sample size of the weighted mean (Kish) from the per-window weights
    w_sum = sum(w.quality.n for w in windows)
    w_sq = sum(w.quality.n**2 / w.quality_measured for w in windows if w.quality_measured)
    n_eff = w_sum**2 / w_sq
    sd = math.sqrt(total.quality.variance or 0.0)
    tolerance = 4 * sd / math.sqrt(n_eff)
    assert total.quality.mean == pytest.approx(truth, abs=tolerance)
    unweighted = float(np.mean([q for w in windows for q in w.quality_seq]))
    assert abs(unweighted - truth) > 3 * tolerance, "the measured subset alone is biased here"


def test_judge_bound_reads_the_measured_sample_with_its_true_n():
    policy = SemanticPolicy(max_pairs_per_s=100, burst_pairs=100, min_sample_fraction=0.05)
    rng = np.random.default_rng(11)
    template = real_pairs(1)[0]
    cascade = SemanticCascade(CountingEncoder(), policy)
    ev = SegmentEvidence()
    for b in range(20):  # stationary quality, Beta(8, 2): mean 0.8
        batch = [
            replace(template, request_id=f"{b}-{i}", event_time_ms=1_000_000 + b * 1000)
            for i in range(500)
        ]
        plan = cascade.plan(batch)
        sims = rng.beta(8, 2, len(plan.texts)).tolist()
        window = Aggregate()
        for s in apply_plan(plan, sims):
            window.add(s)
        ev = ev.fold(window)
    assert ev.quality.n == ev.totals.quality_measured < 0.3 * 10_000
    assert ev.totals.quality.n == pytest.approx(10_000, rel=0.05), "weights estimate all pairs"
    lo, hi = ev.quality.interval(0.01, mixture_rho(500, 0.01))
    assert lo < 0.8 < hi and hi - lo < 0.05
    reference = QualityReference(ReferenceSource.REPLICA, ev.quality)
    verdict = classify_quality(ev, "*", reference, parse_policy({}), Alphas(0.01, 0.05))
    assert verdict.n == ev.totals.quality_measured
    assert f"uniform sample of {verdict.n} of 10000 pairs" in verdict.reason


def test_policy_semantic_table_is_parsed_and_checked():
    policy = parse_policy({"semantic": {"max_pairs_per_s": 5, "burst_pairs": 10}})
    assert policy.semantic == SemanticPolicy(5.0, 10, 0.05)
    with pytest.raises(ValueError, match="unknown key"):
        parse_policy({"semantic": {"max_pairs_per_second": 5}})
    with pytest.raises(ValueError, match="min_sample_fraction"):
        parse_policy({"semantic": {"min_sample_fraction": 0}})


def test_the_sample_is_keyed_by_request_id_not_by_arrival_order():
    """A restart, a replay or another worker scoring the same pairs in another order
    measures the same ones: the draw hashes the request id."""
    policy = SemanticPolicy(max_pairs_per_s=1, burst_pairs=100, min_sample_fraction=0.01)
    base = real_pairs(50)
    scores = [replace(base[i % 50], request_id=f"r{i}", exact_match=False) for i in range(1000)]

    def measured(batch: list) -> set[str]:
        plan, _ = plan_batch(batch, Budget(100.0), policy)
        assert plan.fraction == pytest.approx(0.1)
        return {
            s.request_id for s, r in zip(plan.scores, plan.routes, strict=True) if r != "unsampled"
        }

    first = measured(scores)
    assert len(first) == pytest.approx(100, abs=4 * math.sqrt(100))
    assert measured(list(reversed(scores))) == first
