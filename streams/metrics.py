"""Prometheus metrics of the shadowlens job, on a registry of its own.

What a canary controller (Argo Rollouts, Flagger) or an on-call engineer reads without
ClickHouse: how many pairs and orphans each experiment and segment produce, how far the
candidate diverges from the primary, how much slower it is, which ramp stage and decision
are current, whether the judge is alive (heartbeat age) and whether the worker keeps up
(consumer lag), how often each arm refuses or is cut off by the token limit, which share
of the pairs the semantic budget measured, how often the preference judge prefers the
candidate and what it spends, whether ClickHouse takes the writes (store
health, rows buffered while it fails, retries), whether the pairing table sheds open
requests and how far the gateways' clocks disagree. Names follow the Prometheus
conventions: a ``shadowlens_`` prefix, ``_total`` counters, base units (``_seconds``,
``_ratio``, ``_percent``).

The pipeline feeds it through `MetricsSink` (a `shadowlens.job.sinks.Sink`, so it sits in a
`Tee` next to ClickHouse); the worker also calls `Metrics.set_consumer_lag`,
`Metrics.observe_heartbeat`, `Metrics.observe_shed` and `Metrics.observe_semantic_degraded`,
and `Metrics.watch_store` reads the ClickHouse writer's state at scrape time::

    metrics = Metrics()
    metrics.start_http_server(9464)            # 127.0.0.1 unless addr says otherwise
    pipeline = Pipeline(policy, Tee([clickhouse, MetricsSink(metrics)]))

Segments come from the gateways' events: to keep one misconfigured gateway from creating
a time series per request, each experiment keeps at most `max_segments` segment labels and
the rest count under ``segment="_other"``; experiments and providers are capped the same
way.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Generic, Protocol, TypeVar, cast, overload
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from shadowlens.comparators.aggregate import Later
from shadowlens.comparators.pairs import Outcome, PairScore
from shadowlens.judge.verdicts import Action, Decision, Phase
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.schemas.events import DeadLetter

OTHER = "_other"
ACTIONS = tuple(str(a) for a in Action)

# 1 - quality: 0 is identical, 1 is nothing in common. Finer near 0, where decisions live.
DIVERGENCE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
# candidate / primary latency: symmetric in log space around 1.
LATENCY_RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0)
# LLM calls take 0.1 s to minutes.
LATENCY_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120)
# a half's start minus its primary's: either sign, up to the minutes clocks can drift.
SKEW_SECONDS_BUCKETS = (-300, -120, -60, -30, -10, -3, -1, -0.1, 0.1, 1, 3, 10, 30, 60, 120, 300)

# The label sets the table repeats.
BY_COMPARISON = ("experiment", "segment", "comparison")
BY_ARM = ("experiment", "segment", "arm")
BY_EXPERIMENT = ("experiment",)
BY_ACTION = ("experiment", "action")

MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)


@dataclass(frozen=True, slots=True, eq=False)
class Family(Generic[MetricT]):
    """One row of the metrics table in `Metrics`: a class attribute that names the family and,
    read on an instance, is the metric that instance built on its own registry (a row is
    its own key there: identity, not field equality)."""

    kind: type[MetricT]
    name: str  # as exposed: counters end in `_total`
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    def build(self, registry: CollectorRegistry) -> MetricT:
        """The client library appends `_total` to a counter, so it gets the stem."""
        name = self.name.removesuffix("_total") if self.kind is Counter else self.name
        extra = {} if self.buckets is None else {"buckets": self.buckets}
        return self.kind(name, self.help, self.labels, registry=registry, **extra)

    @overload
    def __get__(self, obj: None, owner: type[Metrics]) -> Family[MetricT]: ...
    @overload
    def __get__(self, obj: Metrics, owner: type[Metrics]) -> MetricT: ...
    def __get__(self, obj: Metrics | None, owner: type[Metrics]) -> Family[MetricT] | MetricT:
        return self if obj is None else cast(MetricT, obj._built[self])


class StoreState(Protocol):
    """What `watch_store` reads (`shadowlens.streams.ch_writer.ClickHouseWriter`)."""

    healthy: bool
    backpressure: bool

    @property
    def buffered_rows(self) -> int: ...


class _LabelCap:
    """At most `limit` distinct values per parent key; later ones become `OTHER`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, parent: str, value: str) -> str:
        with self._lock:
            seen = self._seen.setdefault(parent, set())
            if value in seen:
                return value
            if len(seen) >= self.limit:
                return OTHER
            seen.add(value)
            return value


class Metrics:
    """The job's metrics on a private `CollectorRegistry` (``self.registry``)."""

    # The table: one row per exposed family, in the order of the exposition.
    pairs = Family(
        Counter,
        "shadowlens_pairs_total",
        "Requests whose primary and compared arm both arrived and were scored.",
        BY_COMPARISON,
    )
    orphans = Family(
        Counter,
        "shadowlens_orphans_total",
        "Requests whose other half never arrived within pairing.max_call_ms.",
        ("experiment", "segment", "missing_arm"),
    )
    split = Family(
        Counter,
        "shadowlens_split_requests_total",
        "Split-mode requests served by one arm only (nothing to pair).",
        BY_ARM,
    )
    failures = Family(
        Counter,
        "shadowlens_arm_failures_total",
        "Paired or orphaned requests an arm failed (error, timeout or missing half); "
        "divide by pairs + orphans for the error rate the judge uses.",
        BY_ARM,
    )
    dead_letters = Family(
        Counter,
        "shadowlens_dead_letters_total",
        "Inputs rejected to the dead-letter topic/table, by reason.",
        ("reason",),
    )
    windows = Family(
        Counter,
        "shadowlens_windows_closed_total",
        "Event-time windows closed and handed to the judge.",
        BY_COMPARISON,
    )
    refusals = Family(
        Counter,
        "shadowlens_refusals_total",
        "Answers that declined the task (comparators.signals.is_refusal), per arm, of "
        "pairs where both arms answered; the judge's refusal_rate reads the same.",
        BY_ARM,
    )
    truncations = Family(
        Counter,
        "shadowlens_truncations_total",
        "Answers cut off by the token limit (finish reason length/max_tokens), per arm.",
        BY_ARM,
    )
    preference_judged = Family(
        Counter,
        "shadowlens_preference_judged_total",
        "Pairs the preference judge decided (comparators.preference).",
        BY_COMPARISON,
    )
    preference_wins = Family(
        Counter,
        "shadowlens_preference_wins_total",
        "The candidate's wins against the primary in judged pairs, ties counting half: "
        "its rate over shadowlens_preference_judged_total's is the candidate's win rate.",
        BY_COMPARISON,
    )
    preference_unjudged = Family(
        Counter,
        "shadowlens_preference_unjudged_total",
        "Eligible pairs the judge did not decide, by reason: budget, unknown (no recorded "
        "judgment), self_judge, error, busy (too many calls in flight), late (sent on "
        "before the judgment, whose outcome is counted again when it comes).",
        ("experiment", "reason"),
    )
    judge_spend = Family(
        Counter,
        "shadowlens_judge_spend_usd_total",
        "US dollars the preference judge spent (both orders, retries included).",
        BY_EXPERIMENT,
    )
    sampled = Family(
        Gauge,
        "shadowlens_semantic_sampled_ratio",
        "Share of the last closed window's pairs with a quality that the semantic "
        "budget measured (1 without sampling).",
        BY_COMPARISON,
    )
    semantic_degraded = Family(
        Counter,
        "shadowlens_semantic_degraded_total",
        "Pairs drawn for the semantic model that stayed unsampled because their batch's "
        "encode timed out (SHADOWLENS_SEMANTIC_TIMEOUT_S) or failed, by reason.",
        ("reason",),
    )
    divergence = Family(
        Histogram,
        "shadowlens_pair_divergence_ratio",
        "1 - quality of each scored pair (0 = same answer, 1 = nothing in common).",
        BY_COMPARISON,
        DIVERGENCE_BUCKETS,
    )
    latency_ratio = Family(
        Histogram,
        "shadowlens_pair_latency_ratio",
        "Compared arm latency / primary latency of each pair where both answered.",
        BY_COMPARISON,
        LATENCY_RATIO_BUCKETS,
    )
    latency = Family(
        Histogram,
        "shadowlens_request_latency_seconds",
        "End-to-end latency of successful model calls, per arm.",
        BY_ARM,
        LATENCY_SECONDS_BUCKETS,
    )
    clock_skew = Family(
        Histogram,
        "shadowlens_clock_skew_seconds",
        "Start time of each pair's compared half minus its primary's, per arm and provider: "
        "the gateways' clock offset plus dispatch delay. Pairing does not depend on it; "
        "pairing.max_skew_ms is how much the watermark tolerates.",
        ("experiment", "arm", "provider"),
        SKEW_SECONDS_BUCKETS,
    )
    decisions = Family(
        Counter, "shadowlens_decisions_total", "Judge decisions, by action.", BY_ACTION
    )
    last_decision = Family(
        Gauge,
        "shadowlens_last_decision",
        "1 for the action of the experiment's latest decision, 0 for the others.",
        BY_ACTION,
    )
    last_decision_time = Family(
        Gauge,
        "shadowlens_last_decision_timestamp_seconds",
        "Event time of the latest decision (Unix seconds).",
        BY_EXPERIMENT,
    )
    epoch = Family(
        Gauge, "shadowlens_decision_epoch", "Ramp epoch of the latest decision.", BY_EXPERIMENT
    )
    stage = Family(
        Gauge,
        "shadowlens_ramp_stage_percent",
        "Traffic share the ramp currently gives the candidate, in percent.",
        BY_EXPERIMENT,
    )
    heartbeat_time = Family(
        Gauge,
        "shadowlens_last_heartbeat_timestamp_seconds",
        "Wall-clock time of the latest heartbeat published (Unix seconds).",
        BY_EXPERIMENT,
    )
    heartbeat_age = Family(
        Gauge,
        "shadowlens_heartbeat_age_seconds",
        "Seconds since the latest heartbeat, computed at scrape time; routers fall back to "
        "the primary when it exceeds the policy lease.",
        BY_EXPERIMENT,
    )
    consumer_lag = Family(
        Gauge,
        "shadowlens_consumer_lag_records",
        "Records between the worker's committed offset and the partition end.",
        ("topic", "partition"),
    )
    pairs_shed = Family(
        Counter,
        "shadowlens_pairs_shed_total",
        "Open requests closed early as orphans because their experiment had more than "
        "pairing.max_pending open requests in a pairing task (memory bound).",
        BY_EXPERIMENT,
    )
    limit_overflow = Family(
        Counter,
        "shadowlens_limit_overflow_total",
        "Pairs beyond policy.limits: kind=experiment, stored but not judged (experiment "
        'label empty: such names are not kept); kind=segment, judged as "(other)".',
        ("experiment", "kind"),
    )
    store_healthy = Family(
        Gauge,
        "shadowlens_store_healthy",
        "1 while ClickHouse takes the writes, 0 while they fail and are retried.",
    )
    store_buffered = Family(
        Gauge,
        "shadowlens_store_buffered_rows",
        "Rows handed to the ClickHouse writer and not written yet; their offsets are "
        "not committed.",
    )
    store_backpressure = Family(
        Gauge,
        "shadowlens_store_backpressure",
        "1 while the judging stage waits because the ClickHouse buffer is full.",
    )
    store_retries = Family(
        Counter,
        "shadowlens_store_retries_total",
        "Failed ClickHouse writes retried (with capped exponential backoff).",
    )
    phase = Family(
        Gauge,
        "shadowlens_experiment_phase",
        "1 for the lifecycle phase the experiment's latest decision left it in "
        "(ramping, rolled_back, paused, awaiting_approval, stability, complete, aborted).",
        ("experiment", "phase"),
    )
    control_unsigned = Family(
        Gauge,
        "shadowlens_control_unsigned",
        "1 when the worker publishes control messages unsigned (--allow-unsigned): anyone "
        "who can write to the control topic can move traffic.",
    )
    commands = Family(
        Counter,
        "shadowlens_commands_total",
        "Operator commands read, by outcome: applied, or why they were refused.",
        ("outcome",),
    )

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_experiments: int = 32,
        max_segments: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._experiment = _LabelCap(max_experiments)
        self._segment = _LabelCap(max_segments)
        self._provider = _LabelCap(max_segments)
        self._heartbeats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._built: dict[Family[Any], Counter | Gauge | Histogram] = {
            family: family.build(self.registry) for family in FAMILIES.values()
        }

    # -- labels

    def _labels(self, experiment: str, segment: str) -> tuple[str, str]:
        exp = self._experiment("", experiment)
        return exp, self._segment(exp, segment)

    # -- what the pipeline calls

    def observe_pairs(self, scores: Iterable[PairScore]) -> None:
        """Count and measure scored pairs, orphans and split singles."""
        for s in scores:
            exp, seg = self._labels(s.experiment, s.segment)
            if s.outcome == Outcome.SPLIT:
                arm = "primary" if s.primary_status != "missing" else s.comparison
                self.split.labels(exp, seg, arm).inc()
                self._observe_latency(exp, seg, s)
                continue
            if s.outcome == Outcome.PAIRED:
                self.pairs.labels(exp, seg, s.comparison).inc()
                self._observe_skew(exp, s)
            else:
                missing = s.comparison if s.outcome == Outcome.CANDIDATE_MISSING else "primary"
                self.orphans.labels(exp, seg, missing).inc()
            if s.primary_failed:
                self.failures.labels(exp, seg, "primary").inc()
            if s.candidate_failed:
                self.failures.labels(exp, seg, s.comparison).inc()
            self._observe_signals(exp, seg, s)
            self._observe_preference(exp, seg, s)
            self._observe_quality(exp, seg, s)
            ratio = s.latency_ratio
            if ratio is not None and math.isfinite(ratio):
                self.latency_ratio.labels(exp, seg, s.comparison).observe(ratio)
            self._observe_latency(exp, seg, s)

    def observe_later(self, scores: Iterable[PairScore], what: Later) -> None:
        """Count the scores of kind `what` of pairs that went out before them: the judge's
        outcome (the pair was counted `late`) or the quality (the pair had none)."""
        observe = self._observe_preference if what == Later.JUDGMENT else self._observe_quality
        for s in scores:
            exp, seg = self._labels(s.experiment, s.segment)
            observe(exp, seg, s)

    def observe_semantic_degraded(self, reason: str, pairs: int) -> None:
        """`pairs` drawn for the semantic model stayed unsampled (`reason`: timeout, error)."""
        self.semantic_degraded.labels(reason).inc(pairs)

    def _observe_quality(self, exp: str, seg: str, s: PairScore) -> None:
        quality = s.quality
        if quality is not None and math.isfinite(quality):
            divergence = min(1.0, max(0.0, 1.0 - quality))
            self.divergence.labels(exp, seg, s.comparison).observe(divergence)

    def _observe_signals(self, exp: str, seg: str, s: PairScore) -> None:
        for arm, refused, truncated in (
            ("primary", s.primary_refusal, s.primary_truncated),
            (s.comparison, s.candidate_refusal, s.candidate_truncated),
        ):
            if refused:
                self.refusals.labels(exp, seg, arm).inc()
            if truncated:
                self.truncations.labels(exp, seg, arm).inc()

    def _observe_skew(self, exp: str, s: PairScore) -> None:
        if s.start_skew_ms is not None:
            provider = self._provider(exp, s.candidate_provider)
            self.clock_skew.labels(exp, s.comparison, provider).observe(s.start_skew_ms / 1000)

    def _observe_preference(self, exp: str, seg: str, s: PairScore) -> None:
        if s.preference is not None:
            self.preference_judged.labels(exp, seg, s.comparison).inc()
            self.preference_wins.labels(exp, seg, s.comparison).inc(s.preference)
        elif s.preference_skip is not None:
            self.preference_unjudged.labels(exp, s.preference_skip).inc()
        if s.judge_cost_usd:
            self.judge_spend.labels(exp).inc(s.judge_cost_usd)

    def _observe_latency(self, exp: str, seg: str, s: PairScore) -> None:
        if s.primary_status == "ok" and s.primary_latency_ms is not None:
            self.latency.labels(exp, seg, "primary").observe(s.primary_latency_ms / 1000)
        if s.candidate_status == "ok" and s.candidate_latency_ms is not None:
            self.latency.labels(exp, seg, s.comparison).observe(s.candidate_latency_ms / 1000)

    def observe_windows(self, windows: Iterable[ClosedWindow]) -> None:
        for w in windows:
            exp, seg = self._labels(w.key.experiment, w.key.segment)
            self.windows.labels(exp, seg, w.key.comparison).inc()
            fraction = w.aggregate.quality_sampled_fraction
            if fraction is not None:
                self.sampled.labels(exp, seg, w.key.comparison).set(fraction)

    def observe_dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()

    def observe_decision(self, decision: Decision) -> None:
        """Current stage, action and epoch of the experiment; counts the decision."""
        exp = self._experiment("", decision.experiment)
        action = str(decision.action)
        self.decisions.labels(exp, action).inc()
        for a in ACTIONS:
            self.last_decision.labels(exp, a).set(1.0 if a == action else 0.0)
        self.last_decision_time.labels(exp).set(decision.decided_at_ms / 1000)
        self.epoch.labels(exp).set(decision.epoch)
        self.stage.labels(exp).set(decision.to_percent)
        for p in Phase:
            self.phase.labels(exp, str(p)).set(1.0 if p == decision.phase else 0.0)

    def set_control_unsigned(self, unsigned: bool) -> None:
        self.control_unsigned.set(1.0 if unsigned else 0.0)

    def observe_command(self, outcome: str) -> None:
        """An operator command was applied (`applied`) or refused (the reason's code)."""
        self.commands.labels(outcome).inc()

    def observe_heartbeat(self, experiment: str, issued_at_ms: int) -> None:
        """The worker published a heartbeat (or a decision) for `experiment` at this time."""
        exp = self._experiment("", experiment)
        with self._lock:
            first = exp not in self._heartbeats
            self._heartbeats[exp] = issued_at_ms / 1000
        self.heartbeat_time.labels(exp).set(issued_at_ms / 1000)
        if first:
            self.heartbeat_age.labels(exp).set_function(lambda: self._age(exp))

    def _age(self, experiment: str) -> float:
        with self._lock:
            last = self._heartbeats.get(experiment)
        return math.nan if last is None else max(0.0, self._clock() - last)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(max(0, lag))

    def observe_shed(self, experiment: str, requests: int) -> None:
        """The pairing table closed `requests` open requests of `experiment` early."""
        self.pairs_shed.labels(self._experiment("", experiment)).inc(requests)

    def observe_overflow(self, kind: str, experiment: str, pairs: int) -> None:
        """`pairs` pairs went beyond `policy.limits` (`shadowlens.pipeline.cardinality`)."""
        label = self._experiment("", experiment) if experiment else ""
        self.limit_overflow.labels(label, kind).inc(pairs)

    def watch_store(self, store: StoreState) -> None:
        """Report `store`'s health at scrape time (the writer bumps `store_retries`)."""
        self.store_healthy.set_function(lambda: float(store.healthy))
        self.store_buffered.set_function(lambda: float(store.buffered_rows))
        self.store_backpressure.set_function(lambda: float(store.backpressure))

    # -- serving

    def start_http_server(
        self, port: int, addr: str = "127.0.0.1"
    ) -> tuple[WSGIServer, threading.Thread]:
        """Serve ``/metrics`` from a daemon thread; loopback unless `addr` says otherwise.

        Port 0 picks a free port: ``server.server_port`` tells which. Stop it with
        ``server.shutdown(); server.server_close()``.
        """
        return _start_http_server(port, addr=addr, registry=self.registry)


FAMILIES: dict[str, Family[Any]] = {
    attr: family for attr, family in vars(Metrics).items() if isinstance(family, Family)
}
# ``NAMES.pairs == "shadowlens_pairs_total"``: every exposed family by attribute, so examples
# and dashboards can be checked against it.
NAMES = SimpleNamespace(**{attr: family.name for attr, family in FAMILIES.items()})


@dataclass
class MetricsSink:
    """A `shadowlens.job.sinks.Sink` that only updates metrics; put it in a `Tee`."""

    metrics: Metrics

    def pairs(self, scores: Sequence[PairScore]) -> None:
        self.metrics.observe_pairs(scores)

    def later(self, scores: Sequence[PairScore], what: Later) -> None:
        self.metrics.observe_later(scores, what)

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        self.metrics.observe_windows(windows)

    def decisions(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            self.metrics.observe_decision(decision)

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            self.metrics.observe_dead_letter(letter.reason)
