"""Mergeable aggregates of pair scores: the sufficient statistics the judge reads.

One `Aggregate` summarises the pairs of a window (or a stage, or a segment); aggregates
merge, so stage totals are sums of windows and the global view is a sum of segments.
Latency quantiles come from DDSketch (1 % relative accuracy) so p99 costs O(log range)
memory, not O(n).

Quality under semantic sampling (`comparators.cascade`): a pair's `weight` is the inverse
of its chance of being measured, 0 when it was not. `quality` moments are weighted, so the
window mean is unbiased; `quality_seq` keeps the measured values, unweighted, for the
judge's sequential bound (a uniform sample: n is what was measured). Every other statistic
counts each pair once.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from ddsketch import DDSketch

from comparators.pairs import Outcome, PairScore

RELATIVE_ACCURACY = 0.01
EXAMPLES = 3  # request ids kept per kind of evidence


def new_sketch() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


@dataclass(slots=True)
class Moments:
    """Weighted count, sum and sum of squares of a stream of numbers."""

    n: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, x: float, weight: float = 1.0) -> None:
        self.n += weight
        self.total += weight * x
        self.total_sq += weight * x * x

    def merge(self, other: Moments) -> None:
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n > 0 else None

    @property
    def variance(self) -> float | None:
        if self.n <= 1:
            return None
        mean = self.total / self.n
        return max(0.0, (self.total_sq - self.n * mean * mean) / (self.n - 1))


@dataclass(slots=True)
class Aggregate:
    """Counts, moments, sketches and example ids of a set of pairs."""

    n_paired: int = 0
    n_candidate_missing: int = 0
    n_primary_missing: int = 0
    n_split: int = 0
    primary_failures: int = 0
    candidate_failures: int = 0
    # paired failure table for McNemar: b = only the candidate failed, c = only the primary
    only_candidate_failed: int = 0
    only_primary_failed: int = 0
    exact_matches: int = 0
    quality_measured: int = 0  # pairs with a quality, counted once whatever their weight
    quality_unsampled: int = 0  # pairs whose quality was not measured (semantic budget)
    quality: Moments = field(default_factory=Moments)
    log_latency_ratio: Moments = field(default_factory=Moments)
    primary_cost_usd: Moments = field(default_factory=Moments)
    candidate_cost_usd: Moments = field(default_factory=Moments)
    primary_latency_ms: DDSketch = field(default_factory=new_sketch)
    candidate_latency_ms: DDSketch = field(default_factory=new_sketch)
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    # (score, request id) heaps: the worst examples, kept small
    worst_quality: list[tuple[float, str]] = field(default_factory=list)
    slowest_ratio: list[tuple[float, str]] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)
    # per-request observations in arrival order, for the judge's sequential bounds; kept
    # for one window only (`summary()` drops them)
    primary_failed_seq: list[int] = field(default_factory=list)
    candidate_failed_seq: list[int] = field(default_factory=list)
    quality_seq: list[float] = field(default_factory=list)

    @property
    def n_requests(self) -> int:
        """Requests the primary saw or should have: paired plus orphans."""
        return self.n_paired + self.n_candidate_missing + self.n_primary_missing

    @property
    def pairing_rate(self) -> float | None:
        return self.n_paired / self.n_requests if self.n_requests else None

    def add(self, score: PairScore) -> None:
        t = score.event_time_ms
        self.first_event_ms = t if self.first_event_ms is None else min(self.first_event_ms, t)
        self.last_event_ms = t if self.last_event_ms is None else max(self.last_event_ms, t)
        if score.outcome == Outcome.SPLIT:
            self.n_split += 1
            return
        if score.outcome == Outcome.CANDIDATE_MISSING:
            self.n_candidate_missing += 1
        elif score.outcome == Outcome.PRIMARY_MISSING:
            self.n_primary_missing += 1
        else:
            self.n_paired += 1
        p_fail, c_fail = score.primary_failed, score.candidate_failed
        self.primary_failures += p_fail
        self.candidate_failures += c_fail
        self.only_candidate_failed += c_fail and not p_fail
        self.only_primary_failed += p_fail and not c_fail
        self.primary_failed_seq.append(int(p_fail))
        self.candidate_failed_seq.append(int(c_fail))
        if c_fail and len(self.failed_ids) < EXAMPLES:
            self.failed_ids.append(score.request_id)
        if score.primary_latency_ms is not None and score.primary_status == "ok":
            self.primary_latency_ms.add(max(score.primary_latency_ms, 1e-3))
        if score.candidate_latency_ms is not None and score.candidate_status == "ok":
            self.candidate_latency_ms.add(max(score.candidate_latency_ms, 1e-3))
        if score.primary_cost_usd is not None:
            self.primary_cost_usd.add(score.primary_cost_usd)
        if score.candidate_cost_usd is not None:
            self.candidate_cost_usd.add(score.candidate_cost_usd)
        if score.exact_match:
            self.exact_matches += 1
        quality = score.quality
        if score.weight == 0:  # not drawn by the semantic budget: no quality evidence
            self.quality_unsampled += 1
        elif quality is not None:
            self.quality_measured += 1
            self.quality.add(quality, score.weight)
            self.quality_seq.append(quality)
            _keep_top(self.worst_quality, (-quality, score.request_id))
        if score.latency_ratio is not None and score.latency_ratio > 0:
            self.log_latency_ratio.add(math.log(score.latency_ratio))
            _keep_top(self.slowest_ratio, (score.latency_ratio, score.request_id))

    def merge(self, other: Aggregate) -> None:
        for name in (
            "n_paired",
            "n_candidate_missing",
            "n_primary_missing",
            "n_split",
            "primary_failures",
            "candidate_failures",
            "only_candidate_failed",
            "only_primary_failed",
            "exact_matches",
            "quality_measured",
            "quality_unsampled",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("quality", "log_latency_ratio", "primary_cost_usd", "candidate_cost_usd"):
            getattr(self, name).merge(getattr(other, name))
        if other.primary_latency_ms.count:
            self.primary_latency_ms.merge(other.primary_latency_ms)
        if other.candidate_latency_ms.count:
            self.candidate_latency_ms.merge(other.candidate_latency_ms)
        firsts = [t for t in (self.first_event_ms, other.first_event_ms) if t is not None]
        lasts = [t for t in (self.last_event_ms, other.last_event_ms) if t is not None]
        self.first_event_ms = min(firsts) if firsts else None
        self.last_event_ms = max(lasts) if lasts else None
        for item in other.worst_quality:
            _keep_top(self.worst_quality, item)
        for item in other.slowest_ratio:
            _keep_top(self.slowest_ratio, item)
        self.failed_ids = (self.failed_ids + other.failed_ids)[:EXAMPLES]
        self.primary_failed_seq += other.primary_failed_seq
        self.candidate_failed_seq += other.candidate_failed_seq
        self.quality_seq += other.quality_seq

    def summary(self) -> Aggregate:
        """A copy without the per-request observations: what a stage keeps for long."""
        total = merged([self])
        total.primary_failed_seq, total.candidate_failed_seq, total.quality_seq = [], [], []
        return total

    @property
    def quality_sampled_fraction(self) -> float | None:
        """Share of the pairs with a quality that were measured; 1.0 without sampling."""
        total = self.quality_measured + self.quality_unsampled
        return self.quality_measured / total if total else None

    def error_rate(self, arm: str) -> float | None:
        """Failure share of an arm, a missing half counting as that arm's failure."""
        if not self.n_requests:
            return None
        failures = self.candidate_failures if arm == "candidate" else self.primary_failures
        return failures / self.n_requests

    def latency_quantile(self, arm: str, q: float) -> float | None:
        sketch = self.candidate_latency_ms if arm == "candidate" else self.primary_latency_ms
        return sketch.get_quantile_value(q) if sketch.count else None

    def examples(self, kind: str) -> list[str]:
        """Request ids that best show a problem of `kind`: quality, latency or errors."""
        if kind == "quality":
            return [rid for _, rid in sorted(self.worst_quality, reverse=True)]
        if kind == "latency":
            return [rid for _, rid in sorted(self.slowest_ratio, reverse=True)]
        return list(self.failed_ids)


def merged(aggregates: list[Aggregate]) -> Aggregate:
    total = Aggregate()
    for agg in aggregates:
        total.merge(agg)
    return total


def _keep_top(heap: list[tuple[float, str]], item: tuple[float, str]) -> None:
    if len(heap) < EXAMPLES:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)
