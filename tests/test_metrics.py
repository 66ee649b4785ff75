"""streams.metrics: the text exposition after real pipeline output (replayed sample traffic)."""

from __future__ import annotations

import math
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from shadowlens.comparators.aggregate import Aggregate, Later
from shadowlens.comparators.pairs import Outcome, score_pair
from shadowlens.job.pipeline import Pipeline
from shadowlens.job.sinks import MemorySink, Tee
from shadowlens.judge.policy import load_policy
from shadowlens.judge.verdicts import Action, Decision
from shadowlens.pipeline.windows import ClosedWindow, WindowKey
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import TrafficSpec, built_payloads
from shadowlens.streams.metrics import NAMES, OTHER, Metrics, MetricsSink

from tests.builders import event

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    """Every sample of the text exposition, keyed by (sample name, labels)."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture(scope="module")
def replayed() -> tuple[Metrics, MemorySink]:
    """600 requests of real sample traffic, with lost candidates, errors and bad input."""
    faults = Faults(
        drop_share=0.05,
        error_rate=0.2,
        error_after_ms=60_000,
        malformed=True,
        latency_factor=1.5,
        latency_after_ms=120_000,
    )
    payloads = built_payloads(TrafficSpec(requests=600), faults)
    metrics, memory = Metrics(), MemorySink()
    pipeline = Pipeline(load_policy(), Tee([memory, MetricsSink(metrics)]))
    for raw, source in payloads:
        pipeline.feed(raw, source)
    pipeline.finish()
    return metrics, memory


def test_pair_and_orphan_counters_match_the_pipeline_output(replayed) -> None:
    metrics, memory = replayed
    samples = scrape(metrics)
    by_key = Counter((s.experiment, s.segment, s.outcome) for s in memory.scores)
    assert by_key, "the replay produced no pairs"
    assert any(o == Outcome.CANDIDATE_MISSING for _, _, o in by_key)
    for (exp, seg, outcome), n in by_key.items():
        if outcome == Outcome.PAIRED:
            got = total(samples, NAMES.pairs, experiment=exp, segment=seg)
        elif outcome == Outcome.CANDIDATE_MISSING:
            got = total(
                samples, NAMES.orphans, experiment=exp, segment=seg, missing_arm="candidate"
            )
        else:
            continue
        assert got == n, (exp, seg, outcome)


def test_failures_match_the_error_rate_the_judge_uses(replayed) -> None:
    metrics, memory = replayed
    samples = scrape(metrics)
    judged = [s for s in memory.scores if s.outcome != Outcome.SPLIT]
    cand = sum(s.candidate_failed for s in judged)
    prim = sum(s.primary_failed for s in judged)
    assert cand > prim  # the error burst and the dropped candidates
    assert total(samples, NAMES.failures, arm="candidate") == cand
    assert total(samples, NAMES.failures, arm="primary") == prim


def test_histograms_count_every_scored_pair(replayed) -> None:
    metrics, memory = replayed
    samples = scrape(metrics)
    with_quality = [s for s in memory.scores if s.quality is not None]
    ratios = [s.latency_ratio for s in memory.scores if s.latency_ratio is not None]
    assert total(samples, NAMES.divergence + "_count") == len(with_quality)
    divergence = sum(1 - s.quality for s in with_quality)
    assert math.isclose(total(samples, NAMES.divergence + "_sum"), divergence, rel_tol=1e-9)
    assert total(samples, NAMES.latency_ratio + "_count") == len(ratios)
    assert math.isclose(total(samples, NAMES.latency_ratio + "_sum"), sum(ratios), rel_tol=1e-9)
    # +Inf bucket == count; buckets are cumulative
    assert total(samples, NAMES.latency_ratio + "_bucket", le="+Inf") == len(ratios)
    slower = sum(r <= 1.0 for r in ratios)
    assert total(samples, NAMES.latency_ratio + "_bucket", le="1.0") == slower
    ok_primary = [
        s.primary_latency_ms / 1000
        for s in memory.scores
        if s.primary_status == "ok" and s.primary_latency_ms is not None
    ]
    assert total(samples, NAMES.latency + "_count", arm="primary") == len(ok_primary)
    assert math.isclose(
        total(samples, NAMES.latency + "_sum", arm="primary"), sum(ok_primary), rel_tol=1e-9
    )


def test_dead_letters_by_reason(replayed) -> None:
    metrics, memory = replayed
    samples = scrape(metrics)
    reasons = Counter(letter.reason for letter in memory.letters)
    assert len(reasons) >= 3
    for reason, n in reasons.items():
        assert samples[(NAMES.dead_letters, frozenset({("reason", reason)}))] == n


def test_last_decision_stage_and_epoch(replayed) -> None:
    metrics, memory = replayed
    samples = scrape(metrics)
    last = memory.made[-1]
    exp = ("experiment", last.experiment)
    for action in Action:
        value = samples[(NAMES.last_decision, frozenset({exp, ("action", str(action))}))]
        assert value == (1.0 if action == last.action else 0.0)
    assert samples[(NAMES.stage, frozenset({exp}))] == last.to_percent
    assert samples[(NAMES.epoch, frozenset({exp}))] == last.epoch
    assert samples[(NAMES.last_decision_time, frozenset({exp}))] == last.decided_at_ms / 1000
    made = Counter(str(d.action) for d in memory.made)
    for action, n in made.items():
        assert total(samples, NAMES.decisions, action=action) == n
    assert total(samples, NAMES.windows) == len(memory.closed)


def test_heartbeat_age_is_computed_at_scrape_time() -> None:
    now = [1_000.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.observe_heartbeat("exp", issued_at_ms=990_000)
    exp = frozenset({("experiment", "exp")})
    assert scrape(metrics)[(NAMES.heartbeat_age, exp)] == 10.0
    now[0] = 1_042.5
    assert scrape(metrics)[(NAMES.heartbeat_age, exp)] == 52.5
    metrics.observe_heartbeat("exp", issued_at_ms=1_042_000)
    assert scrape(metrics)[(NAMES.heartbeat_age, exp)] == 0.5
    assert scrape(metrics)[(NAMES.heartbeat_time, exp)] == 1_042.0


def test_consumer_lag_per_topic_partition() -> None:
    metrics = Metrics()
    metrics.set_consumer_lag("shadow.events", 0, 120)
    metrics.set_consumer_lag("shadow.events", 3, 7)
    metrics.set_consumer_lag("shadow.events", 0, 15)
    samples = scrape(metrics)
    key = (NAMES.consumer_lag, frozenset({("topic", "shadow.events"), ("partition", "0")}))
    assert samples[key] == 15
    assert total(samples, NAMES.consumer_lag) == 22


def test_segment_labels_are_capped_per_experiment() -> None:
    from shadowlens.comparators.pairs import score_pair

    metrics = Metrics(max_segments=2)
    scores = [
        score_pair(
            event(f"r{i}", "primary", segment=f"seg{i}"),
            event(f"r{i}", "candidate", segment=f"seg{i}"),
            {},
        )
        for i in range(5)
    ]
    metrics.observe_pairs(scores)
    samples = scrape(metrics)
    segments = {dict(ls)["segment"] for (n, ls) in samples if n == NAMES.pairs}
    assert segments == {"seg0", "seg1", OTHER}
    assert total(samples, NAMES.pairs, segment=OTHER) == 3


def test_only_shadowlens_families_on_a_private_registry() -> None:
    metrics = Metrics()
    metrics.observe_decision(
        Decision("e", 1, Action.ROLLBACK, 5.0, 1.0, 60_000, "latency_p99 [*] fail")
    )
    names = {family.name for family in metrics.registry.collect()}
    assert names and all(n.startswith("shadowlens_") for n in names)
    samples = scrape(metrics)
    assert samples[(NAMES.stage, frozenset({("experiment", "e")}))] == 1.0


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    metrics = Metrics()
    server, thread = metrics.start_http_server(0)
    try:
        yield metrics, server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_endpoint_serves_the_registry_on_loopback(served) -> None:
    metrics, port = served
    metrics.observe_dead_letter("invalid_json")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert 'shadowlens_dead_letters_total{reason="invalid_json"} 1.0' in body
    assert "python_gc" not in body  # not the global registry


def test_shed_requests_counted_per_experiment() -> None:
    metrics = Metrics(max_experiments=1)
    metrics.observe_shed("exp-a", 20)
    metrics.observe_shed("exp-a", 5)
    metrics.observe_shed("exp-b", 7)  # over the experiment cap
    samples = scrape(metrics)
    assert total(samples, NAMES.pairs_shed, experiment="exp-a") == 25
    assert total(samples, NAMES.pairs_shed, experiment=OTHER) == 7


def test_store_health_is_read_at_scrape_time() -> None:
    class Writer:
        healthy, backpressure, buffered_rows = True, False, 0

    metrics, writer = Metrics(), Writer()
    metrics.watch_store(writer)
    assert total(scrape(metrics), NAMES.store_healthy) == 1
    writer.healthy, writer.backpressure, writer.buffered_rows = False, True, 1234
    metrics.store_retries.inc(3)
    samples = scrape(metrics)
    assert total(samples, NAMES.store_healthy) == 0
    assert total(samples, NAMES.store_backpressure) == 1
    assert total(samples, NAMES.store_buffered) == 1234
    assert total(samples, NAMES.store_retries) == 3


def test_refusal_and_truncation_counters_match_the_pairs(replayed) -> None:
    metrics, memory = replayed
    samples = scrape(metrics)
    paired = [s for s in memory.scores if s.outcome == Outcome.PAIRED]
    for signal, name in (("refusal", NAMES.refusals), ("truncated", NAMES.truncations)):
        for arm in ("primary", "candidate"):
            want = sum(bool(getattr(s, f"{arm}_{signal}")) for s in paired)
            assert total(samples, name, arm=arm) == want, (signal, arm)
    # and per segment and arm, on answers that refuse and are cut off
    metrics = Metrics()
    refusal = "I'm sorry, but I can't assist with that."
    for i, (p_text, c_text, c_finish) in enumerate(
        [("Paris.", refusal, "stop"), (refusal, "Paris.", "stop"), ("Paris.", "Pa", "length")]
    ):
        primary = event(f"r{i}", segment="a", text=p_text)
        candidate = event(f"r{i}", "candidate", segment="a", text=c_text, finish_reason=c_finish)
        metrics.observe_pairs([score_pair(primary, candidate, {})])
    samples = scrape(metrics)
    for name, arm, want in (
        (NAMES.refusals, "candidate", 1),
        (NAMES.refusals, "primary", 1),
        (NAMES.truncations, "candidate", 1),
        (NAMES.truncations, "primary", 0),
    ):
        assert total(samples, name, experiment="exp", segment="a", arm=arm) == want, (name, arm)


def test_sampled_fraction_is_the_last_closed_windows(replayed) -> None:
    samples = scrape(replayed[0])
    gauges = {ls: v for (n, ls), v in samples.items() if n == NAMES.sampled}
    assert gauges and set(gauges.values()) == {1.0}  # no semantic budget in this replay
    metrics = Metrics()
    key = WindowKey("exp", "seg", "candidate", 0)
    for measured, unsampled in ((3, 1), (1, 4)):
        agg = Aggregate(quality_measured=measured, quality_unsampled=unsampled)
        metrics.observe_windows([ClosedWindow(key, 60_000, agg, 0)])
    labels = frozenset({("experiment", "exp"), ("segment", "seg"), ("comparison", "candidate")})
    assert scrape(metrics)[(NAMES.sampled, labels)] == 0.2
    metrics.observe_windows([ClosedWindow(key, 120_000, Aggregate(), 0)])  # no quality: kept
    assert scrape(metrics)[(NAMES.sampled, labels)] == 0.2


def test_preference_judge_win_rate_and_spend() -> None:
    """Judged pairs count their wins (ties half), unjudged ones their reason, and the spend
    adds up: the dashboard's win rate is the ratio of the two counters' rates."""
    base = score_pair(event("a"), event("a", "candidate"), {})
    judged = [
        replace(base, request_id=f"j{i}", preference=w, judge_cost_usd=0.002)
        for i, w in enumerate((1.0, 0.5, 0.0, 0.0))
    ]
    skipped = [replace(base, request_id="u", preference_skip="unknown")]
    metrics = Metrics()
    metrics.observe_pairs([*judged, *skipped])
    samples = scrape(metrics)
    wins = total(samples, NAMES.preference_wins, experiment="exp", comparison="candidate")
    count = total(samples, NAMES.preference_judged, experiment="exp", comparison="candidate")
    assert (wins, count) == (1.5, 4)
    assert total(samples, NAMES.preference_unjudged, reason="unknown") == 1
    assert math.isclose(total(samples, NAMES.judge_spend, experiment="exp"), 0.008)


def test_a_judgment_that_follows_its_pair_counts_its_outcome_not_the_pair() -> None:
    base = score_pair(event("a"), event("a", "candidate"), {})
    ahead = replace(base, preference_skip="late")
    metrics = Metrics()
    MetricsSink(metrics).pairs([ahead, replace(ahead, request_id="b")])
    MetricsSink(metrics).later(
        [
            replace(ahead, preference=1.0, preference_skip=None, judge_cost_usd=0.002),
            replace(ahead, request_id="b", preference_skip="error"),
        ],
        Later.JUDGMENT,
    )
    samples = scrape(metrics)
    assert total(samples, NAMES.pairs, experiment="exp") == 2  # each pair once
    assert total(samples, NAMES.preference_judged, experiment="exp") == 1
    assert total(samples, NAMES.preference_wins, experiment="exp") == 1.0
    assert total(samples, NAMES.preference_unjudged, reason="late") == 2
    assert total(samples, NAMES.preference_unjudged, reason="error") == 1
    assert math.isclose(total(samples, NAMES.judge_spend, experiment="exp"), 0.002)


def test_a_semantic_score_that_follows_its_pair_is_measured_once() -> None:
    base = score_pair(event("a", text="the sky is blue"), event("a", "candidate"), {})
    ahead = replace(base, semantic_similarity=None, weight=0.0)  # sent before its score
    metrics = Metrics()
    MetricsSink(metrics).pairs([ahead])
    assert total(scrape(metrics), NAMES.divergence + "_count") == 0  # no quality yet
    MetricsSink(metrics).later(
        [replace(ahead, semantic_similarity=0.75, weight=2.0)], Later.SEMANTIC
    )
    metrics.observe_semantic_degraded("timeout", 3)
    samples = scrape(metrics)
    assert total(samples, NAMES.pairs, experiment="exp") == 1
    assert total(samples, NAMES.divergence + "_count") == 1
    assert math.isclose(total(samples, NAMES.divergence + "_sum"), 0.25)
    assert total(samples, NAMES.semantic_degraded, reason="timeout") == 3
